//! Health and readiness, as the daemons answer them on the metrics listener: `GET /healthz` is
//! `200 ok` while the process serves at all, and `GET /readyz` is `200 ok` once every
//! [`Condition`] of the daemon's [`Readiness`] is met, else `503` with the first unmet one's
//! reason on one line.
//!
//! The daemons register their conditions at start and set each once it holds: `weft-agent`
//! waits for joining the cluster and for the first reconcile of the kernel since start;
//! `weft-server` for its store to be open and its API to serve (and, with its embedded agent,
//! for the agent's two too). A condition never unsets: a later failed reconcile shows in the
//! metrics and the logs, not as a node taken out of service.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[cfg(test)]
mod tests;

/// A daemon's readiness: the conditions it waits for. Clones share them.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    conditions: Arc<Mutex<Vec<Condition>>>,
}

/// One thing a daemon waits for before it is ready. Clones share it; the default one belongs
/// to no [`Readiness`], so setting it changes nothing.
#[derive(Debug, Clone, Default)]
pub struct Condition {
    met: Arc<AtomicBool>,
    unmet: &'static str,
}

/// The unmet reasons the daemons use.
pub mod reasons {
    /// The agent has not registered with a server yet.
    pub const NOT_JOINED: &str = "the agent has not joined the cluster yet";
    /// The agent has not brought the kernel to the desired state since it started.
    pub const NOT_RECONCILED: &str = "the agent has not reconciled the kernel since it started";
    /// The server's store is not open yet.
    pub const STORE_NOT_OPEN: &str = "the server's store is not open yet";
    /// The server's API does not serve yet.
    pub const API_NOT_SERVING: &str = "the server's API is not serving yet";
}

// === impl Readiness ===

impl Readiness {
    /// Adds a condition, unmet until [`Condition::set`]; `unmet` is what `/readyz` says while
    /// it is (one line, e.g. [`reasons::NOT_JOINED`]).
    pub fn condition(&self, unmet: &'static str) -> Condition {
        let condition = Condition {
            met: Arc::new(AtomicBool::new(false)),
            unmet,
        };
        self.lock().push(condition.clone());
        condition
    }

    /// `Ok` when every condition is met, else the first unmet one's reason.
    pub fn check(&self) -> Result<(), &'static str> {
        match self.lock().iter().find(|c| !c.is_met()) {
            Some(condition) => Err(condition.unmet),
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Condition>> {
        // The list is only pushed to and read; a panic elsewhere can't leave it half-changed.
        self.conditions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

// === impl Condition ===

impl Condition {
    /// Marks the condition met, for good.
    pub fn set(&self) {
        self.met.store(true, Ordering::Release);
    }

    /// Whether it is met.
    pub fn is_met(&self) -> bool {
        self.met.load(Ordering::Acquire)
    }
}
