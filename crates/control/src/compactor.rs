//! Keeps etcd's history bounded. etcd keeps every revision until it is compacted, so a cluster
//! whose agents report pods (cluster mode) or whose leases change grows etcd's database until it
//! hits its quota and refuses writes. Every [`INTERVAL`] each server compacts etcd to the
//! revision it saw one interval earlier (kube-apiserver's scheme): a watcher at most one interval
//! behind still resumes without a relist, and anything older is relisted (the lease hub and the
//! egress router already do that on [`StoreError::Compacted`]). Several servers compacting is
//! harmless: compacting to a revision already compacted does nothing.
//!
//! The embedded store bounds its own history (`weft_store::DEFAULT_MAX_EVENTS`) and needs none
//! of this.

use std::sync::Arc;
use std::time::Duration;

use weft_store::{Kv, Revision, StoreError};

/// How often history is compacted, and how much of it is kept: kube-apiserver's default.
pub const INTERVAL: Duration = Duration::from_secs(300);

/// Compacts `kv` every `interval` to the revision it had one interval earlier, forever. A
/// failed round is logged and the next one tries again.
pub async fn run(kv: Arc<dyn Kv>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous = None;
    loop {
        ticker.tick().await;
        match compact_to(&*kv, previous).await {
            Ok(current) => previous = Some(current),
            Err(error) => {
                tracing::warn!(%error, "compacting the datastore's history failed; trying again next round");
            }
        }
    }
}

/// One round: compacts `kv` to `previous` (the revision the last round saw), if any, and returns
/// the current revision for the next round.
pub async fn compact_to(kv: &dyn Kv, previous: Option<Revision>) -> Result<Revision, StoreError> {
    let current = kv.revision().await?;
    if let Some(previous) = previous
        && previous.0 > 1
    {
        kv.compact(previous).await?;
        tracing::debug!(revision = previous.0, "compacted the datastore's history");
    }
    Ok(current)
}
