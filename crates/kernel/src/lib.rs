//! weft's kernel shell: observes the Linux networking state weft owns and applies the plans
//! weft-fabric computes, through rtnetlink (links, addresses, routes, neighbours, FDB entries),
//! `/proc/sys` (sysctls), `nft`/`iptables-restore` (masquerade and forward rules), and
//! WireGuard (devices and peers: the kernel module through defguard_wireguard_rs, or the
//! userspace implementation inside this process; see [`Wireguard`]).
//!
//! The loop an agent runs is: [`Kernel::observe`] the [`Scope`] weft owns into a
//! [`weft_fabric::KernelState`], let [`weft_fabric::plan`] diff it against the desired state, and
//! [`Kernel::apply`] the [`weft_fabric::Plan`]. Each operation is one netlink request (or one
//! firewall transaction); requests of one phase are pipelined on one socket, so thousands of
//! peers apply in a few netlink round trips' worth of waiting. Applying is idempotent: EEXIST
//! and ENOENT are classified into [`KernelError::AlreadyExists`] and [`KernelError::NotFound`]
//! and handled on purpose, and neighbours, FDB entries and routes are sent as replaces.
//! An agent does not observe the whole kernel on every change: a [`Mirror`] keeps the observed
//! scope current from its own applies and the kernel's rtnetlink notifications, and plans only
//! the objects a lease change or a notification touched (see [`Mirror`] for when it observes in
//! full). [`Kernel::cleanup`] removes everything weft made; [`Kernel::external_interface`] and
//! [`Kernel::default_interface`] describe the interface fabric traffic leaves by.
//!
//! What this crate deliberately does not do: decide anything. Which objects should exist is
//! weft-fabric's job, and this crate never looks at objects outside its [`Scope`] (routes of
//! other protocols, links it does not name, other nftables tables), so it never removes what
//! it did not make. It also does not pick a network namespace: everything runs in the
//! namespace of the thread that builds the tokio runtime ([`netns`] does that for tests).
//!
//! Read [`Kernel`], [`Scope`], [`Mirror`] and [`KernelError`] first.
//!
//! The privileged tests in `tests/` run behind the `netns-tests` feature, as root:
//! `cargo test -p weft-kernel --features netns-tests`.

mod apply;
mod batch;
#[cfg(feature = "test-util")]
pub mod bench;
mod cmd;
mod error;
mod firewall;
mod interface;
mod mirror;
#[cfg(feature = "test-util")]
pub mod netns;
mod observe;
mod probe;
mod sysctl;
#[cfg(feature = "test-util")]
pub mod throughput;
mod wireguard;

pub use error::KernelError;
pub use interface::DefaultInterface;
pub use mirror::{Converged, Mirror, Notice, RECEIVE_BUFFER, Resync, WIREGUARD_POLL};
pub use observe::Scope;
pub use probe::Capability;
#[cfg(any(test, feature = "test-util"))]
pub use wireguard::hotpath;
pub use wireguard::{Handshake, WgPrivateKey, Wireguard};

use std::sync::{Arc, Mutex};

use weft_fabric::{KernelState, Plan};

/// A netlink connection to the kernel of the calling thread's network namespace.
///
/// Cloning is cheap and shares the connection.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Dumps and single requests.
    handle: rtnetlink::Handle,
    /// Pipelined requests of [`Kernel::apply`], used from the blocking pool.
    batcher: Arc<Mutex<batch::Batcher>>,
    /// The agent's WireGuard keys and userspace devices.
    wireguard: Wireguard,
}

// === impl Kernel ===

impl Kernel {
    /// Opens route netlink sockets in the calling thread's network namespace and spawns the
    /// driver of the asynchronous one on the current tokio runtime (so call it inside one).
    /// It starts with no WireGuard keys or devices; see [`Kernel::with_wireguard`].
    pub fn connect() -> Result<Kernel, KernelError> {
        let connect = |e: std::io::Error| KernelError::Connect { kind: e.kind() };
        let (connection, handle, _) = rtnetlink::new_connection().map_err(connect)?;
        let batcher = batch::Batcher::open().map_err(connect)?;
        tokio::spawn(connection);
        Ok(Kernel {
            handle,
            batcher: Arc::new(Mutex::new(batcher)),
            wireguard: Wireguard::new(),
        })
    }

    /// Removes everything of weft's in `scope`: observes it and applies the plan to an empty
    /// state. Links go with their addresses, neighbours and FDB entries; weft's routes (on any
    /// device) and firewall rules are deleted; sysctls are left as they are. Returns what was
    /// done (`weft-agent cleanup` prints it).
    pub async fn cleanup(&self, scope: &Scope) -> Result<Plan, KernelError> {
        let observed = self.observe(scope).await?;
        let plan = weft_fabric::plan(&observed, &KernelState::default());
        self.apply(&plan).await?;
        Ok(plan)
    }
}
