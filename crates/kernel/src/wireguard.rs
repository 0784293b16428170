//! WireGuard devices and peers: the kernel module through defguard_wireguard_rs's
//! `WGApi<Kernel>` (generic netlink), or the userspace implementation inside this process
//! (weft's own batched data path around boringtun's protocol core, on a TUN: see `userspace`
//! and `datapath`).
//!
//! [`Wireguard`] is what an agent keeps for its whole life: the private keys it owns
//! ([`WgPrivateKey`]) and the userspace devices it runs. Plans name devices by public key only,
//! so a printed plan holds no secret; applying a [`weft_fabric::LinkKind::Wireguard`] looks the
//! private key up here. A userspace device lives as long as the [`Wireguard`] that made it:
//! when the agent stops, its devices stop and their TUNs go, and the agent that starts next
//! makes them again with the same key (kept in its data dir), so peers re-handshake at once.
//!
//! Observing: a `wireguard` link in scope is read with generic netlink (`wg show`); a `tun`
//! link in scope is a WireGuard device only when this process runs it (same name, interface
//! index and network namespace), and is then read in-process (the UAPI's `get=1` text). Any
//! other TUN under weft's name (a persistent one, or one a hung agent still holds) is observed
//! as [`LinkKind::Other`], so the plan deletes it and creates weft's.
//!
//! Another process of the same agent (`weft-agent plan` beside the daemon) can't reach those
//! devices. With [`Wireguard::set_socket_dir`] (the agent's data dir) each userspace
//! device also answers `get=1`, and nothing else, on `<dir>/<ifname>.sock`: a path per agent,
//! so agents still never collide, and observing falls back to it for a TUN this process does
//! not run.
//!
//! Routes are not defguard's job here (its peer routing only warns when a route fails): the
//! plan's cluster route goes through rtnetlink like every other route.
//!
//! Everything in defguard and in the userspace device's configuration blocks, so it runs on
//! tokio's blocking pool, in the network namespace of the runtime's threads.

mod datapath;
#[cfg(any(test, feature = "test-util"))]
pub mod hotpath;
mod socket;
mod userspace;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use defguard_wireguard_rs::host::Host;
use defguard_wireguard_rs::key::Key;
use defguard_wireguard_rs::net::IpAddrMask;
use defguard_wireguard_rs::peer::Peer;
use defguard_wireguard_rs::{InterfaceConfiguration, WGApi, WireguardInterfaceApi as _};
use rtnetlink::LinkWireguard;
use weft_cause::Cause;
use weft_fabric::{KernelState, Link, LinkKind, Op, WgImplementation, WgPeer, WgPublicKey};

use crate::cmd::run_blocking;
use crate::{Kernel, KernelError};

use self::userspace::UserspaceDevice;

/// A WireGuard private key. It prints nowhere: `Debug` hides it, and the only way to its text
/// is [`WgPrivateKey::to_base64`], for the key file.
#[derive(Clone)]
pub struct WgPrivateKey(Key);

/// The WireGuard state an agent keeps: its private keys and the userspace devices it runs.
///
/// Cloning shares it. Every [`Kernel`] has one; give the same one to every `Kernel` of an
/// agent ([`Kernel::with_wireguard`]), since dropping the last clone stops its devices.
#[derive(Debug, Clone, Default)]
pub struct Wireguard {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
pub(crate) struct Inner {
    keys: Vec<WgPrivateKey>,
    /// The cluster's pre-shared key, for peers whose [`WgPeer::preshared_key`] is set.
    psk: Option<Key>,
    devices: HashMap<String, UserspaceDevice>,
    socket_dir: Option<std::path::PathBuf>,
    sockets: HashMap<String, socket::ReadOnlySocket>,
}

/// A peer's public key and when its latest handshake completed (`None`: never).
pub type Handshake = (WgPublicKey, Option<std::time::SystemTime>);

/// A WireGuard link found by observing, before its device is read.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    /// The link's name.
    pub(crate) name: String,
    /// Its interface index.
    pub(crate) ifindex: u32,
    /// `wireguard` (the kernel's) or `tun` (maybe this process's).
    pub(crate) implementation: WgImplementation,
}

/// What a read of WireGuard devices found: each candidate with its device's answer (`None`:
/// a TUN this process does not run).
pub(crate) type WireguardAnswer = Vec<(Candidate, Result<Option<Host>, KernelError>)>;

/// A read of WireGuard devices running on the blocking pool.
pub(crate) type WireguardRead = tokio::task::JoinHandle<WireguardAnswer>;

// === impl WgPrivateKey ===

impl WgPrivateKey {
    /// A new random key.
    pub fn generate() -> WgPrivateKey {
        WgPrivateKey(Key::generate())
    }

    /// The key from its base64 text (as `wg genkey` prints it), or `None`.
    pub fn from_base64(text: &str) -> Option<WgPrivateKey> {
        Key::try_from(text.trim()).ok().map(WgPrivateKey)
    }

    /// The base64 text of the key, for the key file.
    pub fn to_base64(&self) -> String {
        self.0.to_string()
    }

    /// The public key.
    pub fn public_key(&self) -> WgPublicKey {
        WgPublicKey(self.0.public_key().as_array())
    }
}

impl fmt::Debug for WgPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgPrivateKey(public {})", self.public_key())
    }
}

impl PartialEq for WgPrivateKey {
    fn eq(&self, other: &WgPrivateKey) -> bool {
        self.0.as_array() == other.0.as_array()
    }
}

impl Eq for WgPrivateKey {}

// === impl Wireguard ===

impl Wireguard {
    /// Nothing yet: no keys, no devices.
    pub fn new() -> Wireguard {
        Wireguard::default()
    }

    /// Lets devices with `key`'s public key be created.
    pub fn add_key(&self, key: WgPrivateKey) {
        let mut inner = self.lock();
        if !inner.keys.contains(&key) {
            inner.keys.push(key);
        }
    }

    /// Sets the pre-shared key every peer with [`WgPeer::preshared_key`] gets (flannel-conf's
    /// `PSK`); like the private keys, it never leaves this type but to the devices.
    pub fn set_preshared_key(&self, key: Option<[u8; 32]>) {
        self.lock().psk = key.map(Key::new);
    }

    fn psk(&self) -> Option<Key> {
        self.lock().psk.clone()
    }

    /// The names of the userspace devices this process runs.
    pub fn userspace_devices(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().devices.keys().cloned().collect();
        names.sort();
        names
    }

    /// When each peer of userspace device `dev` last completed a handshake (`wg show DEV
    /// latest-handshakes`). Blocking; `None` when this process runs no such device.
    pub fn latest_handshakes(&self, dev: &str) -> Option<Result<Vec<Handshake>, KernelError>> {
        let mut inner = self.lock();
        let device = inner.devices.get_mut(dev)?;
        Some(device.get().map(|host| {
            let mut out: Vec<_> = host
                .peers
                .iter()
                .map(|(key, peer)| (WgPublicKey(key.as_array()), peer.last_handshake))
                .collect();
            out.sort();
            out
        }))
    }

    /// Serves `get=1` of every userspace device made from now on at `<dir>/<ifname>.sock`,
    /// and reads devices this process does not run from there (see the module docs). `dir`
    /// should be the agent's own (its data dir); it is made with mode 0700.
    pub fn set_socket_dir(&self, dir: std::path::PathBuf) {
        self.lock().socket_dir = Some(dir);
    }

    /// Stops every userspace device (what the agent's exit does); their TUNs go with them.
    pub fn stop(&self) {
        let (devices, sockets): (Vec<UserspaceDevice>, Vec<socket::ReadOnlySocket>) = {
            let mut inner = self.lock();
            (
                inner.devices.drain().map(|(_, d)| d).collect(),
                inner.sockets.drain().map(|(_, s)| s).collect(),
            )
        };
        // The sockets' threads take the lock to answer: stop them without holding it.
        drop(sockets);
        drop(devices);
    }

    /// Stops the userspace device `name`, if this process runs it.
    pub(crate) fn stop_device(&self, name: &str) {
        let (device, socket) = {
            let mut inner = self.lock();
            (inner.devices.remove(name), inner.sockets.remove(name))
        };
        drop(socket);
        drop(device);
    }

    fn key_for(&self, public: &WgPublicKey) -> Option<Key> {
        self.lock()
            .keys
            .iter()
            .find(|k| k.public_key() == *public)
            .map(|k| k.0.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner")
            .field("keys", &self.keys)
            .field("devices", &self.devices)
            .field("socket_dir", &self.socket_dir)
            .finish_non_exhaustive()
    }
}

// === impl Kernel (WireGuard) ===

impl Kernel {
    /// This agent's WireGuard keys and userspace devices.
    pub fn wireguard(&self) -> &Wireguard {
        &self.wireguard
    }

    /// The same kernel connection with `wireguard` as its WireGuard state (an agent's, kept
    /// across the connections it opens).
    pub fn with_wireguard(mut self, wireguard: Wireguard) -> Kernel {
        self.wireguard = wireguard;
        self
    }

    /// Whether this kernel can make WireGuard links (`ip link add weftprobeN type wireguard`,
    /// then deleted).
    pub async fn kernel_wireguard(&self) -> Result<(), KernelError> {
        let probe = format!("weftwg{}", std::process::id() % 100_000);
        self.probe_link(LinkWireguard::new(&probe).build(), &probe)
            .await
    }

    /// The implementation to run WireGuard devices with: `wanted`, or with `None` (auto) the
    /// kernel's when this kernel has WireGuard, else the userspace one; then the reason the
    /// kernel's is missing comes along, for the caller's one log line. A kernel implementation
    /// that is wanted but missing is [`KernelError::NoKernelWireguard`].
    pub async fn wireguard_implementation(
        &self,
        wanted: Option<WgImplementation>,
    ) -> Result<(WgImplementation, Option<KernelError>), KernelError> {
        match wanted {
            Some(WgImplementation::Userspace) => Ok((WgImplementation::Userspace, None)),
            Some(WgImplementation::Kernel) => match self.kernel_wireguard().await {
                Ok(()) => Ok((WgImplementation::Kernel, None)),
                Err(e) => Err(KernelError::NoKernelWireguard {
                    reason: e.to_string(),
                }),
            },
            None => match self.kernel_wireguard().await {
                Ok(()) => Ok((WgImplementation::Kernel, None)),
                Err(e) => Ok((WgImplementation::Userspace, Some(e))),
            },
        }
    }

    /// Reads the WireGuard links found by observing: sets their kinds and adds their peers to
    /// `state`. A TUN this process does not run stays [`LinkKind::Other`].
    pub(crate) async fn observe_wireguard(
        &self,
        candidates: Vec<Candidate>,
        state: &mut KernelState,
    ) -> Result<(), KernelError> {
        if candidates.is_empty() {
            return Ok(());
        }
        let read = match self.read_wireguard(candidates).await {
            Ok(read) => read,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        self.merge_wireguard(read, state)
    }

    /// Starts reading `candidates` on the blocking pool (a thread in the caller's network
    /// namespace); the handle owns the read, so a caller that stops waiting for it can wait
    /// again later ([`Kernel::merge_wireguard`] takes the answer).
    pub(crate) fn read_wireguard(&self, candidates: Vec<Candidate>) -> WireguardRead {
        let wireguard = self.wireguard.clone();
        let netns = current_netns();
        tokio::task::spawn_blocking(move || {
            candidates
                .into_iter()
                .map(|c| {
                    let host = match c.implementation {
                        WgImplementation::Kernel => kernel_api(&c.name)
                            .and_then(|api| {
                                api.read_interface_data()
                                    .map_err(|e| KernelError::Wireguard {
                                        object: format!("WireGuard device {}", c.name),
                                        what: "could not be read".to_owned(),
                                        source: Cause::new(e),
                                    })
                            })
                            .map(Some),
                        WgImplementation::Userspace => {
                            Ok(read_userspace(&wireguard, &c.name, c.ifindex, netns))
                        }
                    };
                    (c, host)
                })
                .collect()
        })
    }

    /// Sets the kinds of the links `read` (a [`Kernel::read_wireguard`]) found and adds their
    /// peers to `state`.
    pub(crate) fn merge_wireguard(
        &self,
        read: WireguardAnswer,
        state: &mut KernelState,
    ) -> Result<(), KernelError> {
        let psk = self.wireguard.psk();
        for (candidate, host) in read {
            let Some(host) = host? else { continue };
            let Some(link) = state.links.get_mut(&candidate.name) else {
                continue;
            };
            let Some(private) = &host.private_key else {
                // A device without a key is not one weft configured.
                link.kind = LinkKind::Other {
                    kind: "wireguard (no private key)".to_owned(),
                };
                continue;
            };
            link.kind = LinkKind::Wireguard {
                implementation: candidate.implementation,
                listen_port: host.listen_port,
                public_key: WgPublicKey(private.public_key().as_array()),
            };
            for (key, peer) in &host.peers {
                state.wg_peers.insert(
                    (candidate.name.clone(), WgPublicKey(key.as_array())),
                    observed_peer(peer, psk.as_ref()),
                );
            }
        }
        Ok(())
    }

    /// Creates the WireGuard links of `links` that the userspace implementation runs, each
    /// with its key and port, then sets their MTU and state (the TUN starts down at 1500).
    /// Returns the failures.
    pub(crate) async fn add_userspace_links(&self, links: Vec<Link>) -> Vec<KernelError> {
        let wireguard = self.wireguard.clone();
        let started = run_blocking(move || {
            links
                .into_iter()
                .map(|link| {
                    let LinkKind::Wireguard {
                        listen_port,
                        public_key,
                        ..
                    } = &link.kind
                    else {
                        return Err(KernelError::Misrouted {
                            op: Op::AddLink(link.clone()).to_string(),
                        });
                    };
                    let key =
                        wireguard
                            .key_for(public_key)
                            .ok_or_else(|| KernelError::NoPrivateKey {
                                device: link.name.clone(),
                                public_key: *public_key,
                            })?;
                    // A device of ours under the name (its TUN deleted behind our back) goes
                    // first, or the new TUN could not take the name.
                    wireguard.stop_device(&link.name);
                    let device = start_retrying(&link.name, &key, *listen_port)?;
                    let dir = {
                        let mut inner = wireguard.lock();
                        inner.devices.insert(link.name.clone(), device);
                        inner.socket_dir.clone()
                    };
                    if let Some(dir) = dir {
                        let served = socket::ReadOnlySocket::serve(
                            dir.join(format!("{}.sock", link.name)),
                            link.name.clone(),
                            Arc::downgrade(&wireguard.inner),
                        )
                        .map_err(|e| KernelError::Wireguard {
                            object: format!("userspace WireGuard device {}", link.name),
                            what: format!("could not serve its socket in {}", dir.display()),
                            source: Cause::new(e),
                        })?;
                        wireguard.lock().sockets.insert(link.name.clone(), served);
                    }
                    Ok(link)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let mut failed = Vec::new();
        let mut settle = Vec::new();
        for result in started {
            match result {
                Ok(link) => settle.push(link),
                Err(e) => failed.push(e),
            }
        }
        let index = match self.resolve(settle.iter().map(|l| l.name.clone())).await {
            Ok(index) => index,
            Err(e) => {
                failed.push(e);
                return failed;
            }
        };
        {
            let mut inner = self.wireguard.lock();
            for (name, ifindex) in &index {
                if let Some(device) = inner.devices.get_mut(name) {
                    device.ifindex = Some(*ifindex);
                }
            }
        }
        let set: Vec<Op> = settle
            .iter()
            .map(|l| Op::SetLink {
                name: l.name.clone(),
                mtu: l.mtu,
                up: l.up,
            })
            .collect();
        match self.apply_netlink(&set, &index).await {
            Ok(more) => failed.extend(more),
            Err(e) => failed.push(e),
        }
        failed
    }

    /// Gives the kernel WireGuard links of `links` (just created by netlink) their private key
    /// and listen port (`wg set NAME listen-port PORT private-key KEY`). Returns the failures.
    pub(crate) async fn configure_kernel_links(&self, links: Vec<Link>) -> Vec<KernelError> {
        let wireguard = self.wireguard.clone();
        run_blocking(move || {
            let mut failed = Vec::new();
            for link in links {
                let LinkKind::Wireguard {
                    listen_port,
                    public_key,
                    ..
                } = &link.kind
                else {
                    continue;
                };
                let Some(key) = wireguard.key_for(public_key) else {
                    failed.push(KernelError::NoPrivateKey {
                        device: link.name.clone(),
                        public_key: *public_key,
                    });
                    continue;
                };
                let config = InterfaceConfiguration {
                    name: link.name.clone(),
                    prvkey: key.to_string(),
                    addresses: Vec::new(),
                    port: *listen_port,
                    peers: Vec::new(),
                    mtu: None,
                    fwmark: None,
                };
                let result = kernel_api(&link.name).and_then(|api| {
                    api.configure_interface(&config)
                        .map_err(|e| KernelError::Wireguard {
                            object: format!("WireGuard device {}", link.name),
                            what: "could not be configured".to_owned(),
                            source: Cause::new(e),
                        })
                });
                if let Err(e) = result {
                    failed.push(e);
                }
            }
            failed
        })
        .await
    }

    /// Applies a phase of peer operations (all [`Op::ReplaceWgPeer`] or all
    /// [`Op::DeleteWgPeer`]), device by device. Returns the failures.
    pub(crate) async fn apply_wg_peers(&self, phase: &[Op]) -> Vec<KernelError> {
        let ops = phase.to_vec();
        let wireguard = self.wireguard.clone();
        let psk = wireguard.psk();
        run_blocking(move || {
            let mut by_dev: Vec<(String, Vec<Op>)> = Vec::new();
            for op in ops {
                let dev = match &op {
                    Op::ReplaceWgPeer { dev, .. } | Op::DeleteWgPeer { dev, .. } => dev.clone(),
                    _ => continue,
                };
                match by_dev.iter_mut().find(|(d, _)| *d == dev) {
                    Some((_, list)) => list.push(op),
                    None => by_dev.push((dev, vec![op])),
                }
            }
            let mut failed = Vec::new();
            for (dev, ops) in by_dev {
                let mut inner = wireguard.lock();
                if let Some(device) = inner.devices.get_mut(&dev) {
                    if let Err(e) = userspace_peers(device, &ops, psk.as_ref()) {
                        failed.push(e);
                    }
                } else {
                    drop(inner);
                    failed.extend(kernel_peers(&dev, &ops, psk.as_ref()));
                }
            }
            failed
        })
        .await
    }
}

/// Locks the state, also after a panic elsewhere (it holds no invariant a panic breaks).
pub(crate) fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The text of `get=1` of this process's userspace device `name`.
pub(crate) fn device_text(inner: &Mutex<Inner>, name: &str) -> Option<Result<String, KernelError>> {
    lock(inner)
        .devices
        .get_mut(name)
        .map(UserspaceDevice::get_text)
}

/// Starts a userspace device, trying again for up to a second: the kernel unregisters the TUN
/// of a device that just stopped a few milliseconds after its last descriptor closes, and the
/// name is taken until then.
fn start_retrying(name: &str, key: &Key, port: u16) -> Result<UserspaceDevice, KernelError> {
    let mut tries = 0;
    loop {
        match UserspaceDevice::start(name, key, port) {
            Ok(device) => return Ok(device),
            Err(e) if tries >= 10 => return Err(e),
            Err(_) => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// The inode of the calling thread's network namespace.
pub(crate) fn current_netns() -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| m.ino())
}

/// The userspace device `name` of this process, read, when it is the TUN at `ifindex` in the
/// calling thread's namespace. A device whose UAPI fails is stopped (and `None` returned), so
/// the plan makes it again.
fn read_userspace(
    wireguard: &Wireguard,
    name: &str,
    ifindex: u32,
    netns: Option<u64>,
) -> Option<Host> {
    let mut inner = wireguard.lock();
    let Some(device) = inner.devices.get_mut(name) else {
        // Another process of this agent may run it.
        let dir = inner.socket_dir.clone()?;
        drop(inner);
        return socket::read(&dir.join(format!("{name}.sock")));
    };
    if device.ifindex != Some(ifindex) || device.netns != netns {
        return None;
    }
    match device.get() {
        Ok(host) => Some(host),
        Err(_) => {
            let dead = inner.devices.remove(name);
            drop(inner);
            drop(dead);
            None
        }
    }
}

/// `defguard`'s kernel API for device `name`.
fn kernel_api(name: &str) -> Result<WGApi, KernelError> {
    WGApi::new(name).map_err(|e| KernelError::Wireguard {
        object: format!("WireGuard device {name}"),
        what: "could not be opened through generic netlink".to_owned(),
        source: Cause::new(e),
    })
}

/// A peer as a device reports it. An allowed IP with host bits set is left out (weft never
/// sets one), so the plan puts the peer right; its pre-shared key counts only when it is the
/// one this agent holds, so a peer with another is put right too.
fn observed_peer(peer: &Peer, psk: Option<&Key>) -> WgPeer {
    WgPeer {
        endpoint: peer.endpoint.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
        allowed_ips: peer
            .allowed_ips
            .iter()
            .filter_map(|m| crate::observe::cidr(m.address, m.cidr))
            .collect::<BTreeSet<_>>(),
        keepalive: peer.persistent_keepalive_interval.unwrap_or(0),
        preshared_key: psk.is_some() && peer.preshared_key.as_ref() == psk,
    }
}

/// The `allowed_ip=` lines and the rest of a peer's UAPI section.
fn uapi_peer(public_key: &WgPublicKey, peer: &WgPeer, psk: Option<&Key>) -> String {
    let mut out = format!(
        "public_key={}\nendpoint={}\npersistent_keepalive_interval={}\nreplace_allowed_ips=true\n",
        Key::new(public_key.0).to_lower_hex(),
        peer.endpoint,
        peer.keepalive
    );
    if let (true, Some(psk)) = (peer.preshared_key, psk) {
        out.push_str(&format!("preshared_key={}\n", psk.to_lower_hex()));
    }
    for cidr in &peer.allowed_ips {
        out.push_str(&format!("allowed_ip={cidr}\n"));
    }
    out
}

/// Peer operations on a userspace device, in two UAPI requests at most: one that removes every
/// peer that goes or changes, one that adds every peer that comes or changes.
///
/// A changed peer is removed and added again (a fresh session, as with boringtun's device,
/// which refused an existing key), and removals and additions never share a request.
fn userspace_peers(
    device: &mut UserspaceDevice,
    ops: &[Op],
    psk: Option<&Key>,
) -> Result<(), KernelError> {
    let mut remove = String::new();
    let mut add = String::new();
    for op in ops {
        match op {
            Op::DeleteWgPeer { public_key, .. } => {
                remove.push_str(&format!(
                    "public_key={}\nremove=true\n",
                    Key::new(public_key.0).to_lower_hex()
                ));
            }
            Op::ReplaceWgPeer {
                public_key, peer, ..
            } => {
                remove.push_str(&format!(
                    "public_key={}\nremove=true\n",
                    Key::new(public_key.0).to_lower_hex()
                ));
                add.push_str(&uapi_peer(public_key, peer, psk));
            }
            _ => {}
        }
    }
    if !remove.is_empty() {
        device.set(&remove)?;
    }
    if !add.is_empty() {
        device.set(&add)?;
    }
    Ok(())
}

/// Peer operations on a kernel device, one generic netlink request each (`wg set`); a change
/// happens in place.
fn kernel_peers(dev: &str, ops: &[Op], psk: Option<&Key>) -> Vec<KernelError> {
    let api = match kernel_api(dev) {
        Ok(api) => api,
        Err(e) => return vec![e],
    };
    let mut failed = Vec::new();
    for op in ops {
        let result = match op {
            Op::DeleteWgPeer { public_key, .. } => api.remove_peer(&Key::new(public_key.0)),
            Op::ReplaceWgPeer {
                public_key, peer, ..
            } => {
                let mut p = Peer::new(Key::new(public_key.0));
                p.endpoint = Some(peer.endpoint);
                p.persistent_keepalive_interval = (peer.keepalive != 0).then_some(peer.keepalive);
                p.preshared_key = psk.filter(|_| peer.preshared_key).cloned();
                p.allowed_ips = peer
                    .allowed_ips
                    .iter()
                    .map(|c| IpAddrMask::new(c.network(), c.prefix_len()))
                    .collect();
                api.configure_peer(&p)
            }
            _ => continue,
        };
        if let Err(e) = result {
            failed.push(KernelError::Wireguard {
                object: crate::apply::describe(op),
                what: "could not be applied".to_owned(),
                source: Cause::new(e),
            });
        }
    }
    failed
}
