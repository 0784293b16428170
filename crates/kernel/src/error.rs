//! The one error type of weft-kernel, and the classification of netlink errors into it.

use std::io;

use weft_cause::{Cause, Chain};

#[cfg(test)]
mod tests;

/// What can go wrong while observing or changing the kernel.
///
/// Every message names the object it is about, in the words of the `ip`/`bridge`/`nft` command
/// that would touch it (`route 10.42.2.0/24 via 10.42.2.0 dev flannel.1: ...`).
///
/// [`KernelError::AlreadyExists`] and [`KernelError::NotFound`] are the kernel's EEXIST and
/// ENOENT/ESRCH in weft's own words. Applying a plan handles them on purpose where they mean the
/// kernel is already where the plan wants it (an address that is there, a route that is gone);
/// elsewhere they are real failures and reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A preflight probe device could not be created.
    #[error("probe device {what}: {reason}")]
    Probe {
        /// The probe device.
        what: String,
        /// The kernel's answer.
        reason: String,
    },
    /// The kernel already holds the object (netlink EEXIST).
    #[error("{object}: already exists")]
    AlreadyExists {
        /// The object, e.g. `link flannel.1`.
        object: String,
    },
    /// The kernel does not hold the object (netlink ENOENT or ESRCH).
    #[error("{object}: not found")]
    NotFound {
        /// The object.
        object: String,
    },
    /// The kernel refused a request with another error code.
    #[error("{object}: the kernel refused it: {} (errno {errno})", describe_errno(*errno))]
    Refused {
        /// The object.
        object: String,
        /// The positive errno, e.g. 95 for EOPNOTSUPP.
        errno: i32,
    },
    /// A netlink request failed without a kernel error code (the connection closed, or a reply
    /// did not decode).
    #[error("{object}: the netlink request failed")]
    Netlink {
        /// The object.
        object: String,
        /// What rtnetlink reported.
        #[source]
        source: rtnetlink::Error,
    },
    /// The socket of the kernel's netlink notifications could not be opened or read.
    #[error(
        "kernel netlink notifications: {kind}; weft-kernel needs Linux and a route netlink socket subscribed to links, addresses, routes and neighbours"
    )]
    Notifications {
        /// What the socket reported.
        kind: io::ErrorKind,
    },
    /// The netlink socket could not be opened.
    #[error("could not open a netlink socket: {kind}; weft-kernel needs Linux and CAP_NET_ADMIN")]
    Connect {
        /// The socket error.
        kind: io::ErrorKind,
    },
    /// The netlink socket failed while a plan was being applied.
    #[error("the netlink socket failed while applying: {kind}; the next reconcile retries")]
    Socket {
        /// The socket error.
        kind: io::ErrorKind,
    },
    /// A device an operation needs does not exist.
    #[error(
        "{object}: device {device} does not exist; check flannel-iface and that weft's links were created"
    )]
    NoSuchDevice {
        /// The object the operation was about.
        object: String,
        /// The missing device.
        device: String,
    },
    /// The fabric could not make the desired state (the benches' own clusters).
    #[error("planning the fabric failed: {0}")]
    Fabric(#[from] weft_fabric::FabricError),
    /// An operation reached an executor that does not handle it: the dispatch in `apply` sends
    /// each kind of operation to its own, so this is a bug.
    #[error(
        "{op}: this operation reached a part of weft-kernel that does not execute it; this is a bug in weft, please report it"
    )]
    Misrouted {
        /// The operation, as `weft-agent plan` prints it.
        op: String,
    },
    /// A sysctl could not be read or written under `/proc/sys`.
    #[error("sysctl {key}: {kind}; is /proc mounted and is this process root?")]
    Sysctl {
        /// The key, slash form (`net/ipv4/ip_forward`).
        key: String,
        /// The I/O error.
        kind: io::ErrorKind,
    },
    /// An external command (`nft`, `iptables`, `ip`) could not be started.
    #[error("could not run {program}: {kind}; install it (Debian: nftables, iptables, iproute2)")]
    Spawn {
        /// The program.
        program: String,
        /// The I/O error.
        kind: io::ErrorKind,
    },
    /// An external command exited with a failure.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// The exit status, as the OS describes it.
        status: String,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
    /// `nft -j` printed something that is not the JSON weft-kernel expects.
    #[error("could not read the output of `{command}`: {reason}; is nft 1.0 or newer installed?")]
    NftOutput {
        /// The command line.
        command: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The named interface does not exist.
    #[error("interface {name} does not exist; check flannel-iface")]
    NoSuchInterface {
        /// The interface name.
        name: String,
    },
    /// The interface reports no MTU.
    #[error("interface {name} reports no MTU; check that it is a real network device")]
    NoMtu {
        /// The interface name.
        name: String,
    },
    /// There is no default route of the family to pick the external interface from.
    #[error(
        "there is no {family} default route to pick the fabric interface from; set flannel-iface"
    )]
    NoDefaultRoute {
        /// The family.
        family: weft_ipam::Family,
    },
    /// A network namespace could not be entered.
    #[error(
        "could not enter network namespace {name}: {kind}; does /run/netns/{name} exist and is this process root?"
    )]
    Namespace {
        /// The namespace name (under `/run/netns`).
        name: String,
        /// The error.
        kind: io::ErrorKind,
    },
    /// A WireGuard device or peer could not be created, configured or read.
    #[error("{object}: {what}")]
    Wireguard {
        /// The device or peer, e.g. `WireGuard device flannel-wg`.
        object: String,
        /// What could not be done, with the fix where there is one.
        what: String,
        /// defguard's, the device's or the socket's error.
        #[source]
        source: Cause,
    },
    /// The plan wants a WireGuard device whose private key this agent was not given.
    #[error(
        "WireGuard device {device}: no private key for public key {public_key}; the agent must load its key (the wireguard-key file in its data dir) before applying"
    )]
    NoPrivateKey {
        /// The device.
        device: String,
        /// The public key the plan names.
        public_key: weft_fabric::WgPublicKey,
    },
    /// Kernel WireGuard was asked for, and this kernel has none.
    #[error(
        "wireguard-implementation is kernel, but this kernel can't make WireGuard links ({reason}); `modprobe wireguard`, or set wireguard-implementation to auto or userspace"
    )]
    NoKernelWireguard {
        /// The kernel's answer to a probe link.
        reason: String,
    },
    /// Some operations of a plan failed; the others were applied.
    #[error("{} of {total} operations failed; the first: {}", failed.len(), first_of(failed))]
    Apply {
        /// How many operations the plan had.
        total: usize,
        /// Each failure, in plan order.
        failed: Vec<KernelError>,
    },
}

// === impl KernelError ===

impl KernelError {
    /// Turns an rtnetlink error about `object` into weft's words: EEXIST becomes
    /// [`KernelError::AlreadyExists`], ENOENT and ESRCH become [`KernelError::NotFound`], other
    /// kernel codes [`KernelError::Refused`].
    pub(crate) fn from_netlink(object: impl Into<String>, err: rtnetlink::Error) -> KernelError {
        let object = object.into();
        match &err {
            rtnetlink::Error::NetlinkError(msg) => match msg.code.map(|c| -c.get()) {
                Some(EEXIST) => KernelError::AlreadyExists { object },
                Some(ENOENT | ESRCH) => KernelError::NotFound { object },
                Some(errno) => KernelError::Refused { object, errno },
                None => KernelError::Netlink {
                    object,
                    source: err,
                },
            },
            _ => KernelError::Netlink {
                object,
                source: err,
            },
        }
    }

    /// Whether this is [`KernelError::AlreadyExists`].
    pub fn is_already_exists(&self) -> bool {
        matches!(self, KernelError::AlreadyExists { .. })
    }

    /// Whether this is [`KernelError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, KernelError::NotFound { .. })
    }
}

/// `ENOENT`: no such file or directory (a missing route, address or FDB entry).
pub(crate) const ENOENT: i32 = 2;
/// `ESRCH`: no such process (IPv4 route deletion of a missing route).
pub(crate) const ESRCH: i32 = 3;
/// `EEXIST`: the object exists.
pub(crate) const EEXIST: i32 = 17;
/// `ENODEV`: no such device.
pub(crate) const ENODEV: i32 = 19;

/// The OS's description of an errno, lowercased, without the `(os error N)` suffix.
fn describe_errno(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn first_of(failed: &[KernelError]) -> String {
    failed
        .first()
        .map(|e| Chain(e).to_string())
        .unwrap_or_default()
}
