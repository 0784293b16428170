//! The kernel state weft last saw, kept current without reading the whole kernel again:
//! [`Mirror`].
//!
//! A mirror observes its [`Scope`] in full at its first converge, then follows the kernel
//! through two sources: the plans it applies itself, and the kernel's rtnetlink notifications (`ip monitor link address route
//! neigh`: the multicast groups of links, addresses, routes and neighbours, FDB entries
//! included) on a socket of its own, subscribed before the first observation so that nothing in
//! between is missed. A notification about an object in the scope is recorded and handed out as
//! its key, so the caller plans only that object ([`weft_fabric::plan_objects`]); a
//! notification about anything else only keeps the link names current.
//!
//! The mirror observes the whole scope again ([`Mirror::converge`] with [`Notice::Resync`])
//! when it can't trust what it holds: at start-up, when the caller asks (the periodic
//! reconcile), when a link in the scope is deleted or differs from the one the mirror holds
//! (its objects may have gone with it, without a notification each), when an apply failed, and when the kernel dropped notifications because
//! the socket's receive buffer was full (ENOBUFS).
//!
//! Firewall tables and WireGuard peers are followed by their own means:
//! - nftables multicasts every change (`nft monitor`), iptables-nft's included: a second socket
//!   hears which of weft's tables or chains someone touched ([`netfilter`]), and the mirror
//!   reads that table again and hands out its key when it differs from what it holds (its own
//!   applies' echoes read the same and are dropped). Legacy iptables sends nothing.
//! - The kernel's WireGuard has no notifications: the mirror reads the peers of its kernel
//!   devices every [`WIREGUARD_POLL`] and hands out the keys of those that differ. The read
//!   runs on the blocking pool and outlives a cancelled [`Mirror::changed`], so lease events
//!   arriving faster than a read takes can't starve it. A read that applies overtook reports
//!   peers as they were, and the converge sets them again, which changes nothing. A failed
//!   re-read (a table deleted between `nft`'s two listings, a device that went) asks for a
//!   full observation rather than losing the notification. The
//!   userspace devices are configured only through this agent's private channel, so nobody
//!   else can change their peers; deleting such a device is a link notification.
//!
//! Sysctls have no notifications: the periodic resync catches anyone else's change to them.
//!
//! What this module deliberately does not do: decide. The desired state comes from the caller;
//! the mirror only plans against it with weft-fabric's planner and applies the result.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::time::Duration;

use rtnetlink::constants::{
    RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE, RTMGRP_LINK,
    RTMGRP_NEIGH,
};
use rtnetlink::packet_core::{NLM_F_REPLACE, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket as _, AsyncSocketExt as _, SocketAddr, TokioSocket};
use weft_fabric::{
    Change, KernelState, LinkKind, MasqMode, ObjectKeys, Plan, WgImplementation, plan, plan_objects,
};
use weft_ipam::Family;

use crate::cmd::run_blocking;
use crate::observe::{
    Entry, link_name, main_route, neighbour_entry, observed_address, observed_link, observed_route,
};
use crate::wireguard::{Candidate, WireguardAnswer, WireguardRead};
use crate::{Kernel, KernelError, Scope, firewall};

mod netfilter;
#[cfg(test)]
mod tests;

/// The receive buffer a mirror asks for: room for a few thousand notifications, so only a
/// burst as large as a whole fabric's first apply overflows it (and costs one observation).
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// How often the mirror reads the peers of its kernel WireGuard devices, which send no
/// notifications: someone else's change to them is repaired within this much.
pub const WIREGUARD_POLL: Duration = Duration::from_secs(1);

/// The receive buffer of the nftables notification socket: one of weft's table replacements
/// is a few dozen messages.
const NETFILTER_RECEIVE_BUFFER: usize = 1 << 20;

/// `ENOBUFS`: the kernel dropped notifications because the receive buffer was full.
const ENOBUFS: i32 = 105;

/// The kernel state in a [`Scope`], kept current from applies and notifications.
pub struct Mirror {
    kernel: Kernel,
    scope: Scope,
    socket: TokioSocket,
    buffer: Vec<u8>,
    /// nftables' notifications; `None` where the kernel has no nftables (the firewall is then
    /// repaired by the periodic resync only).
    netfilter: Option<TokioSocket>,
    netfilter_buffer: Vec<u8>,
    /// Firewall tables a notification touched, to be read again.
    firewall_touched: BTreeSet<(Family, MasqMode)>,
    /// When to read the kernel WireGuard devices' peers next.
    wireguard_poll: tokio::time::Interval,
    /// A poll's read under way, with the links it reads; kept across a cancelled
    /// [`Mirror::changed`], so the next one waits for the same read.
    wireguard_read: Option<(KernelState, WireguardRead)>,
    state: KernelState,
    /// Every link's name by index.
    names: HashMap<u32, String>,
    /// The names of the links in scope by index.
    weft_links: HashMap<u32, String>,
    /// Why the state can't be trusted until the next full observation, if it can't.
    stale: Option<Resync>,
    /// How many times the whole scope was observed.
    observations: u64,
}

/// What changed in the kernel, as [`Mirror::changed`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// These objects in the scope changed; the mirror has recorded their new state.
    Objects(ObjectKeys),
    /// The mirror must observe the whole scope again.
    Resync(Resync),
}

/// Why a [`Mirror`] observes the whole scope again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resync {
    /// The caller asked (the start, the periodic reconcile).
    Requested,
    /// A link in the scope was added, changed or deleted.
    Link {
        /// The link's name.
        name: String,
    },
    /// The kernel dropped notifications: the receive buffer overflowed (ENOBUFS).
    Overflow,
    /// Applying a plan failed, so what the kernel holds is unknown.
    ApplyFailed,
    /// Reading a firewall table or WireGuard device again after a notification failed.
    ReadFailed {
        /// What the read said.
        reason: String,
    },
}

/// What one [`Mirror::converge`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converged {
    /// The operations applied.
    pub plan: Plan,
    /// Whether the whole scope was observed first.
    pub observed: bool,
}

// === impl Mirror ===

impl Mirror {
    /// Subscribes to the kernel's notifications in the calling thread's network namespace;
    /// the receive buffer is [`RECEIVE_BUFFER`]. The mirror holds nothing until the first
    /// [`Mirror::converge`], which observes `scope` in full.
    pub fn new(kernel: Kernel, scope: Scope) -> Result<Mirror, KernelError> {
        Mirror::with_receive_buffer(kernel, scope, RECEIVE_BUFFER)
    }

    /// [`Mirror::new`] with a receive buffer of `bytes` (the kernel doubles it, and caps it at
    /// `net.core.rmem_max`): a small one makes bursts of notifications overflow it. Call it
    /// inside a tokio runtime, which drives the socket.
    pub fn with_receive_buffer(
        kernel: Kernel,
        scope: Scope,
        bytes: usize,
    ) -> Result<Mirror, KernelError> {
        let socket = subscribe(bytes).map_err(|e| KernelError::Notifications { kind: e.kind() })?;
        let netfilter = netfilter::subscribe(NETFILTER_RECEIVE_BUFFER).ok();
        let mut wireguard_poll = tokio::time::interval(WIREGUARD_POLL);
        wireguard_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Mirror {
            kernel,
            scope,
            socket,
            buffer: Vec::with_capacity(1 << 16),
            netfilter,
            netfilter_buffer: Vec::with_capacity(1 << 16),
            firewall_touched: BTreeSet::new(),
            wireguard_poll,
            wireguard_read: None,
            state: KernelState::default(),
            names: HashMap::new(),
            weft_links: HashMap::new(),
            stale: Some(Resync::Requested),
            observations: 0,
        })
    }

    /// The kernel state in the scope, as the mirror knows it.
    pub fn state(&self) -> &KernelState {
        &self.state
    }

    /// How many times the whole scope was observed.
    pub fn observations(&self) -> u64 {
        self.observations
    }

    /// Waits for the next notification about the scope and records it. Notifications about
    /// anything else are read and dropped without returning. A [`Notice::Resync`] is handed
    /// out once; until a converge observes, every converge does. Firewall tables and kernel
    /// WireGuard peers are read again here, when touched or polled (see the module's docs).
    ///
    /// Cancel-safe: a notification is read and recorded in one step, and a touched firewall
    /// table stays marked until it has been read again, so dropping the future loses nothing
    /// (use it in `tokio::select!`); a WireGuard poll under way is waited for again by the
    /// next call.
    pub async fn changed(&mut self) -> Result<Notice, KernelError> {
        loop {
            if let Some((fresh, read)) = &mut self.wireguard_read {
                let answer = read.await;
                let fresh = std::mem::take(fresh);
                self.wireguard_read = None;
                let answer = match answer {
                    Ok(answer) => answer,
                    Err(join) => std::panic::resume_unwind(join.into_panic()),
                };
                match self.finish_wireguard_poll(fresh, answer) {
                    Ok(Some(notice)) => return Ok(notice),
                    Ok(None) => {}
                    Err(e) => return Ok(self.read_failed(e)),
                }
                continue;
            }
            if !self.firewall_touched.is_empty() {
                match self.read_firewall().await {
                    Ok(Some(notice)) => return Ok(notice),
                    Ok(None) => {}
                    Err(e) => return Ok(self.read_failed(e)),
                }
                continue;
            }
            let polls = self.stale.is_none() && self.has_kernel_wireguard();
            self.buffer.clear();
            self.netfilter_buffer.clear();
            tokio::select! {
                received = self.socket.recv(&mut self.buffer) => {
                    match received {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                            self.stale = Some(Resync::Overflow);
                            return Ok(Notice::Resync(Resync::Overflow));
                        }
                        Err(e) => return Err(KernelError::Notifications { kind: e.kind() }),
                    }
                    if let Some(notice) = self.read_datagram() {
                        return Ok(notice);
                    }
                }
                received = netfilter_recv(&mut self.netfilter, &mut self.netfilter_buffer) => {
                    match received {
                        Ok(()) => {
                            let touched = netfilter::touched(&self.netfilter_buffer);
                            self.firewall_touched.extend(
                                touched.into_iter().filter(|(_, mode)| self.scope.masq_modes.contains(mode)),
                            );
                        }
                        // Some were lost: any table may have changed.
                        Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                            for &mode in &self.scope.masq_modes {
                                for family in [Family::Ipv4, Family::Ipv6] {
                                    self.firewall_touched.insert((family, mode));
                                }
                            }
                        }
                        Err(e) => return Err(KernelError::Notifications { kind: e.kind() }),
                    }
                }
                _ = self.wireguard_poll.tick(), if polls => {
                    self.wireguard_read = self.start_wireguard_poll();
                }
            }
        }
    }

    /// Brings the objects `notice` names to `desired` (for [`Notice::Resync`], or when the
    /// mirror is stale: the whole scope, observed again first), and returns what it applied.
    pub async fn converge(
        &mut self,
        desired: &KernelState,
        notice: &Notice,
    ) -> Result<Converged, KernelError> {
        let (plan, observed) = match notice {
            Notice::Objects(keys) if self.stale.is_none() => {
                (plan_objects(&self.state, desired, keys), false)
            }
            _ => {
                self.resync().await?;
                (plan(&self.state, desired), true)
            }
        };
        self.apply(&plan).await?;
        Ok(Converged { plan, observed })
    }

    /// Applies `plan` and records it; after a failure the next [`Mirror::converge`] observes
    /// the whole scope.
    async fn apply(&mut self, plan: &Plan) -> Result<(), KernelError> {
        if plan.is_empty() {
            return Ok(());
        }
        match self.kernel.apply(plan).await {
            Ok(()) => {
                self.state.apply_plan(plan);
                Ok(())
            }
            Err(e) => {
                self.stale = Some(Resync::ApplyFailed);
                Err(e)
            }
        }
    }

    /// Observes the whole scope.
    async fn resync(&mut self) -> Result<(), KernelError> {
        let observed = self.kernel.observe_indexed(&self.scope).await?;
        self.state = observed.state;
        self.names = observed.names;
        self.weft_links = observed.weft_links;
        self.stale = None;
        self.observations += 1;
        Ok(())
    }

    /// Records the notifications of the datagram in the buffer; `None` when none was about
    /// the scope.
    fn read_datagram(&mut self) -> Option<Notice> {
        let mut keys = ObjectKeys::default();
        let mut resync = None;
        let mut at = 0;
        while at + 16 <= self.buffer.len() {
            let len = u32::from_ne_bytes([
                self.buffer[at],
                self.buffer[at + 1],
                self.buffer[at + 2],
                self.buffer[at + 3],
            ]) as usize;
            if len < 16 || at + len > self.buffer.len() {
                break;
            }
            // A message the library can't decode is not one weft makes: skip it.
            if let Ok(msg) =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buffer[at..at + len])
            {
                let replace = msg.header.flags & NLM_F_REPLACE != 0;
                if let NetlinkPayload::InnerMessage(msg) = msg.payload {
                    match self.read_message(msg, replace) {
                        Some(Notice::Objects(more)) => keys.append(more),
                        Some(Notice::Resync(reason)) => resync = Some(reason),
                        None => {}
                    }
                }
            }
            at += (len + 3) & !3;
        }
        match resync {
            Some(reason) => {
                self.stale = Some(reason.clone());
                Some(Notice::Resync(reason))
            }
            None if keys.is_empty() => None,
            None => Some(Notice::Objects(keys)),
        }
    }

    /// Records one notification; `replace` is its `NLM_F_REPLACE` flag.
    fn read_message(&mut self, msg: RouteNetlinkMessage, replace: bool) -> Option<Notice> {
        let change = match msg {
            RouteNetlinkMessage::NewLink(link) => return self.read_link(&link, true),
            RouteNetlinkMessage::DelLink(link) => return self.read_link(&link, false),
            RouteNetlinkMessage::NewAddress(msg) => Change::Address {
                address: observed_address(&msg, &self.weft_links)?,
                present: true,
            },
            RouteNetlinkMessage::DelAddress(msg) => Change::Address {
                address: observed_address(&msg, &self.weft_links)?,
                present: false,
            },
            RouteNetlinkMessage::NewRoute(msg) => self.route_change(&msg, true, replace)?,
            RouteNetlinkMessage::DelRoute(msg) => self.route_change(&msg, false, replace)?,
            RouteNetlinkMessage::NewNeighbour(msg) => {
                entry_change(neighbour_entry(&msg, &self.weft_links)?, true)
            }
            RouteNetlinkMessage::DelNeighbour(msg) => {
                entry_change(neighbour_entry(&msg, &self.weft_links)?, false)
            }
            _ => return None,
        };
        self.state.record(&change);
        let mut keys = ObjectKeys::default();
        keys.insert_change(&change);
        Some(Notice::Objects(keys))
    }
}

// === impl Mirror (firewall and WireGuard) ===

impl Mirror {
    /// Reads the touched firewall tables again; the keys of those that differ from what the
    /// mirror holds, which it then holds.
    async fn read_firewall(&mut self) -> Result<Option<Notice>, KernelError> {
        let mut keys = ObjectKeys::default();
        while let Some(&(family, mode)) = self.firewall_touched.first() {
            let table = run_blocking(move || firewall::observe(family, mode)).await?;
            self.firewall_touched.remove(&(family, mode));
            if self.state.firewall.get(&(family, mode)) != table.as_ref() {
                match table {
                    Some(table) => self.state.firewall.insert((family, mode), table),
                    None => self.state.firewall.remove(&(family, mode)),
                };
                keys.firewall.insert((family, mode));
            }
        }
        Ok((!keys.is_empty()).then_some(Notice::Objects(keys)))
    }

    /// A table or a device read again after its notification (or poll) could not be read: it
    /// may have changed under the read (a table deleted between `nft`'s two listings), or the
    /// tool failed. Either way the mirror no longer knows what the kernel holds, so the next
    /// converge observes the whole scope; the socket is fine and stays subscribed.
    fn read_failed(&mut self, error: KernelError) -> Notice {
        self.firewall_touched.clear();
        let reason = Resync::ReadFailed {
            reason: weft_cause::Chain(&error).to_string(),
        };
        self.stale = Some(reason.clone());
        Notice::Resync(reason)
    }

    /// Whether the scope holds a device of the kernel's WireGuard.
    fn has_kernel_wireguard(&self) -> bool {
        self.state.links.values().any(|link| {
            matches!(
                link.kind,
                LinkKind::Wireguard {
                    implementation: WgImplementation::Kernel,
                    ..
                }
            )
        })
    }

    /// Starts reading the peers of the kernel WireGuard devices, if there are any.
    fn start_wireguard_poll(&self) -> Option<(KernelState, WireguardRead)> {
        let mut fresh = KernelState::default();
        let mut candidates = Vec::new();
        for (&ifindex, name) in &self.weft_links {
            let Some(link) = self.state.links.get(name) else {
                continue;
            };
            if let LinkKind::Wireguard {
                implementation: WgImplementation::Kernel,
                ..
            } = link.kind
            {
                fresh.links.insert(name.clone(), link.clone());
                candidates.push(Candidate {
                    name: name.clone(),
                    ifindex,
                    implementation: WgImplementation::Kernel,
                });
            }
        }
        (!candidates.is_empty()).then(|| (fresh, self.kernel.read_wireguard(candidates)))
    }

    /// Takes a poll's `answer` about the links in `fresh`: the keys of the peers that differ
    /// from what the mirror holds, which it then holds. A device whose own settings changed
    /// asks for a resync. A read that started before an apply of the mirror's may report a
    /// peer as it was; the converge then sets it again, which changes nothing.
    fn finish_wireguard_poll(
        &mut self,
        mut fresh: KernelState,
        answer: WireguardAnswer,
    ) -> Result<Option<Notice>, KernelError> {
        self.kernel.merge_wireguard(answer, &mut fresh)?;
        if let Some(name) = fresh
            .links
            .iter()
            .find(|(name, link)| self.state.links.get(*name) != Some(*link))
            .map(|(name, _)| name.clone())
        {
            self.stale = Some(Resync::Link { name: name.clone() });
            return Ok(Some(Notice::Resync(Resync::Link { name })));
        }
        let mut keys = ObjectKeys::default();
        let held = self
            .state
            .wg_peers
            .keys()
            .filter(|(device, _)| fresh.links.contains_key(device));
        for key in held.chain(fresh.wg_peers.keys()) {
            if self.state.wg_peers.get(key) != fresh.wg_peers.get(key) {
                keys.wg_peers.insert(key.clone());
            }
        }
        for key in &keys.wg_peers {
            match fresh.wg_peers.remove(key) {
                Some(peer) => self.state.wg_peers.insert(key.clone(), peer),
                None => self.state.wg_peers.remove(key),
            };
        }
        Ok((!keys.is_empty()).then_some(Notice::Objects(keys)))
    }
}

// === impl Mirror (notifications) ===

impl Mirror {
    /// Keeps the link names current. A link in the scope asks for a resync unless it is the
    /// link the mirror holds, unchanged (the echo of its own apply, or a carrier change).
    fn read_link(&mut self, link: &LinkMessage, present: bool) -> Option<Notice> {
        let index = link.header.index;
        let name = link_name(link).or_else(|| self.names.get(&index).cloned())?;
        if present {
            self.names.insert(index, name.clone());
        } else {
            self.names.remove(&index);
        }
        if !self.scope.links.contains(&name) {
            return None;
        }
        let known = self.weft_links.get(&index) == Some(&name)
            || !self.weft_links.values().any(|weft| *weft == name);
        if present
            && known
            && self.state.links.get(&name) == Some(&observed_link(name.clone(), link, &self.names))
        {
            self.weft_links.insert(index, name);
            return None;
        }
        self.stale = Some(Resync::Link { name: name.clone() });
        Some(Notice::Resync(Resync::Link { name }))
    }

    /// The change a route notification makes to weft's routes: one of weft's added, changed
    /// or deleted, or replaced (`NLM_F_REPLACE`) by a route that is not weft's.
    fn route_change(&self, msg: &RouteMessage, present: bool, replace: bool) -> Option<Change> {
        if let Some(route) = observed_route(msg, &self.names) {
            return Some(Change::Route {
                dst: route.dst,
                route: present.then_some(route),
            });
        }
        let theirs = main_route(msg, &self.names)?;
        (present && replace && self.state.routes.contains_key(&theirs.dst)).then_some(
            Change::Route {
                dst: theirs.dst,
                route: None,
            },
        )
    }
}

/// The change a neighbour notification makes: weft's entries are the permanent ones, so an
/// entry that is no longer permanent is gone.
fn entry_change(entry: Entry, present: bool) -> Change {
    match entry {
        Entry::Neighbour {
            dev,
            ip,
            mac,
            permanent,
        } => Change::Neighbour {
            dev,
            ip,
            mac: (present && permanent).then_some(mac),
        },
        Entry::Fdb {
            dev,
            mac,
            dst,
            permanent,
        } => Change::Fdb {
            dev,
            mac,
            dst,
            present: present && permanent,
        },
    }
}

/// A route netlink socket subscribed to the groups of links, addresses, routes and
/// neighbours (FDB entries are neighbours of family AF_BRIDGE), with a receive buffer of
/// `bytes`.
fn subscribe(bytes: usize) -> io::Result<TokioSocket> {
    let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
    let groups = RTMGRP_LINK
        | RTMGRP_NEIGH
        | RTMGRP_IPV4_IFADDR
        | RTMGRP_IPV6_IFADDR
        | RTMGRP_IPV4_ROUTE
        | RTMGRP_IPV6_ROUTE;
    socket.socket_mut().bind(&SocketAddr::new(0, groups))?;
    socket.socket_ref().set_rx_buf_sz(bytes)?;
    Ok(socket)
}

/// The next datagram of the nftables socket into `buffer`; never, without a socket.
async fn netfilter_recv(socket: &mut Option<TokioSocket>, buffer: &mut Vec<u8>) -> io::Result<()> {
    match socket {
        Some(socket) => socket.recv(buffer).await,
        None => std::future::pending().await,
    }
}

// === impl Resync ===

impl fmt::Display for Resync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resync::Requested => f.write_str("requested"),
            Resync::Link { name } => write!(f, "link {name} changed"),
            Resync::Overflow => f.write_str("kernel notifications were lost (ENOBUFS)"),
            Resync::ApplyFailed => f.write_str("applying a plan failed"),
            Resync::ReadFailed { reason } => write!(f, "reading a changed object failed: {reason}"),
        }
    }
}
