//! The userspace WireGuard device inside the agent: weft's own data path (`datapath`) on a
//! TUN, configured in-process with WireGuard's cross-platform UAPI text (`set=1` bodies,
//! `get=1` answers).
//!
//! The configuration never leaves the process: no socket path exists (boringtun's device
//! served one on `/var/run/wireguard/<ifname>.sock`, shared by every network namespace, so two
//! agents on one host took each other's), so any number of agents can run per host. Dropping
//! the device stops its threads and closes its TUN, which removes it.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use defguard_boringtun::noise::Tunn;
use defguard_boringtun::x25519::{PublicKey, StaticSecret};
use defguard_wireguard_rs::host::Host;
use defguard_wireguard_rs::key::Key;
use weft_cause::Cause;

use super::datapath::{Datapath, Peer, Prefix, State};
use crate::KernelError;

/// A running userspace device. Dropping it stops the device and removes its TUN.
pub(crate) struct UserspaceDevice {
    name: String,
    datapath: Datapath,
    /// The index of the next peer's sessions.
    next_index: u32,
    /// The TUN's interface index, once known.
    pub(crate) ifindex: Option<u32>,
    /// The network namespace the device was made in (inode of `/proc/thread-self/ns/net`).
    pub(crate) netns: Option<u64>,
}

/// One peer section of a `set=1` body.
#[derive(Default)]
struct PeerChange {
    public_key: [u8; 32],
    remove: bool,
    update_only: bool,
    endpoint: Option<SocketAddr>,
    keepalive: Option<u16>,
    preshared_key: Option<Option<[u8; 32]>>,
    replace_allowed_ips: bool,
    allowed_ips: Vec<Prefix>,
}

// === impl UserspaceDevice ===

impl UserspaceDevice {
    /// Creates the TUN `name` in the calling thread's network namespace, starts the device's
    /// threads, and sets its private key and listen port. Blocking.
    pub(crate) fn start(name: &str, key: &Key, port: u16) -> Result<UserspaceDevice, KernelError> {
        let datapath = Datapath::start(name, port).map_err(|e| KernelError::Wireguard {
            object: format!("userspace WireGuard device {name}"),
            what: format!(
                "could not start; is /dev/net/tun there (`modprobe tun`), is this process root, \
                 and is UDP port {port} free?"
            ),
            source: Cause::new(e),
        })?;
        let mut device = UserspaceDevice {
            name: name.to_owned(),
            datapath,
            next_index: first_index(),
            ifindex: None,
            netns: super::current_netns(),
        };
        device.set(&format!(
            "private_key={}\nlisten_port={port}\n",
            key.to_lower_hex()
        ))?;
        Ok(device)
    }

    /// `get=1`: the device's key, port and peers.
    pub(crate) fn get(&mut self) -> Result<Host, KernelError> {
        let body = self.get_text()?;
        Host::parse_uapi(body.as_bytes()).map_err(|e| self.error("its settings do not parse", e))
    }

    /// `get=1`, the answer's text before its `errno` line.
    pub(crate) fn get_text(&mut self) -> Result<String, KernelError> {
        Ok(uapi_text(&self.datapath.state(), self.datapath.port()))
    }

    /// `set=1` with `body` (lines ending in `\n`): applied whole, or not at all.
    pub(crate) fn set(&mut self, body: &str) -> Result<(), KernelError> {
        let (state, port) = apply_set(&self.datapath.state(), body, &mut self.next_index)
            .map_err(|reason| self.error("refused the settings", reason))?;
        if let Some(port) = port {
            self.datapath.set_port(port).map_err(|e| {
                self.error(
                    format!("could not listen on UDP port {port}; is another process using it?"),
                    e,
                )
            })?;
        }
        self.datapath.set_state(state);
        Ok(())
    }

    fn error(
        &self,
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> KernelError {
        KernelError::Wireguard {
            object: format!("userspace WireGuard device {}", self.name),
            what: what.into(),
            source: Cause::new(source),
        }
    }
}

impl std::fmt::Debug for UserspaceDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserspaceDevice")
            .field("name", &self.name)
            .field("ifindex", &self.ifindex)
            .finish_non_exhaustive()
    }
}

/// The state `body` (a `set=1` request's lines) makes of `current`, and the listen port it
/// asks for. Peers are numbered from `next_index` on. The error names the field, never its
/// value (it may be a key).
fn apply_set(
    current: &State,
    body: &str,
    next_index: &mut u32,
) -> Result<(State, Option<u16>), String> {
    let mut port = None;
    let mut key = current
        .key
        .as_ref()
        .map(|(private, public)| (private.clone(), *public));
    let mut replace_peers = false;
    let mut changes: Vec<PeerChange> = Vec::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        let (field, value) = line
            .split_once('=')
            .ok_or_else(|| "a UAPI line has no `=`".to_owned())?;
        let bad = |what: &str| {
            // Never echo a key: name the field only.
            format!("the UAPI field `{field}` is not {what}")
        };
        match (field, changes.last_mut()) {
            ("public_key", _) => changes.push(PeerChange {
                public_key: hex_key(value).ok_or_else(|| bad("a 64-digit hex key"))?,
                ..PeerChange::default()
            }),
            ("private_key", None) => {
                let secret =
                    StaticSecret::from(hex_key(value).ok_or_else(|| bad("a 64-digit hex key"))?);
                let public = PublicKey::from(&secret);
                key = Some((secret, public));
            }
            ("listen_port", None) => {
                port = Some(value.parse::<u16>().map_err(|_| bad("a port"))?);
            }
            ("replace_peers", None) => replace_peers = value == "true",
            ("fwmark", None) => {}
            ("remove", Some(peer)) => peer.remove = value == "true",
            ("update_only", Some(peer)) => peer.update_only = value == "true",
            ("endpoint", Some(peer)) => {
                peer.endpoint = Some(value.parse().map_err(|_| bad("an address:port"))?);
            }
            ("persistent_keepalive_interval", Some(peer)) => {
                peer.keepalive = Some(value.parse().map_err(|_| bad("a number of seconds"))?);
            }
            ("preshared_key", Some(peer)) => {
                let psk = hex_key(value).ok_or_else(|| bad("a 64-digit hex key"))?;
                peer.preshared_key = Some((psk != [0; 32]).then_some(psk));
            }
            ("replace_allowed_ips", Some(peer)) => peer.replace_allowed_ips = value == "true",
            ("allowed_ip", Some(peer)) => {
                peer.allowed_ips
                    .push(prefix(value).ok_or_else(|| bad("an address/prefix"))?);
            }
            ("protocol_version", Some(_)) if value == "1" => {}
            _ => {
                return Err(format!(
                    "the UAPI field `{field}` is not one this device takes here"
                ));
            }
        }
    }
    let Some((private, public)) = key else {
        return Err("a peer needs the device's private_key first".to_owned());
    };
    let key_changed = current
        .key
        .as_ref()
        .is_none_or(|(_, old)| old.as_bytes() != public.as_bytes());
    let mut peers: Vec<Arc<Peer>> = if replace_peers {
        Vec::new()
    } else {
        current.peers.clone()
    };
    if key_changed {
        for peer in &peers {
            peer.tunnel()
                .set_static_private(private.clone(), public, None);
        }
    }
    for change in changes {
        let existing = peers.iter().position(|p| p.public_key == change.public_key);
        if change.remove {
            if let Some(at) = existing {
                peers.remove(at);
            }
            continue;
        }
        if existing.is_none() && change.update_only {
            continue;
        }
        let old = existing.map(|at| peers.remove(at));
        let keepalive = change
            .keepalive
            .unwrap_or_else(|| old.as_ref().map_or(0, |p| p.keepalive));
        let preshared_key = change
            .preshared_key
            .unwrap_or_else(|| old.as_ref().and_then(|p| p.preshared_key));
        let mut allowed_ips = match (&old, change.replace_allowed_ips) {
            (Some(old), false) => old.allowed_ips.clone(),
            _ => Vec::new(),
        };
        for ip in change.allowed_ips {
            if !allowed_ips.contains(&ip) {
                allowed_ips.push(ip);
            }
        }
        // A peer keeps its session unless what the handshake depends on changed.
        let (index, tunnel, endpoint) = match old {
            Some(old) if old.keepalive == keepalive && old.preshared_key == preshared_key => (
                old.index,
                Arc::clone(&old.tunnel),
                Arc::clone(&old.endpoint),
            ),
            old => {
                let index = *next_index;
                *next_index = (*next_index + 1) & 0x00ff_ffff;
                let tunnel = Tunn::new(
                    private.clone(),
                    PublicKey::from(change.public_key),
                    preshared_key,
                    (keepalive > 0).then_some(keepalive),
                    index,
                    None,
                );
                let endpoint = old.and_then(|p| p.endpoint());
                (
                    index,
                    Arc::new(Mutex::new(tunnel)),
                    Arc::new(Mutex::new(endpoint)),
                )
            }
        };
        if let Some(addr) = change.endpoint {
            *endpoint.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
        }
        peers.push(Arc::new(Peer {
            public_key: change.public_key,
            index,
            allowed_ips,
            keepalive,
            preshared_key,
            tunnel,
            endpoint,
        }));
    }
    Ok((
        State {
            key: Some((private, public)),
            peers,
        },
        port,
    ))
}

/// The `get=1` answer for `state` on `port`, as `wg` and defguard's parser read it.
fn uapi_text(state: &State, port: u16) -> String {
    let mut out = String::new();
    if let Some((private, _)) = &state.key {
        let _ = writeln!(out, "private_key={}", hex(&private.to_bytes()));
    }
    let _ = writeln!(out, "listen_port={port}");
    for peer in &state.peers {
        let _ = writeln!(out, "public_key={}", hex(&peer.public_key));
        if let Some(psk) = &peer.preshared_key {
            let _ = writeln!(out, "preshared_key={}", hex(psk));
        }
        if peer.keepalive > 0 {
            let _ = writeln!(out, "persistent_keepalive_interval={}", peer.keepalive);
        }
        if let Some(endpoint) = peer.endpoint() {
            let _ = writeln!(out, "endpoint={endpoint}");
        }
        for ip in &peer.allowed_ips {
            let _ = writeln!(out, "allowed_ip={}/{}", ip.addr, ip.len);
        }
        let tunnel = peer.tunnel();
        if let Some(time) = tunnel.last_handshake_time() {
            let _ = writeln!(out, "last_handshake_time_sec={}", time.as_secs());
            let _ = writeln!(out, "last_handshake_time_nsec={}", time.subsec_nanos());
        }
        let (_, tx_bytes, rx_bytes, ..) = tunnel.stats();
        let _ = writeln!(out, "rx_bytes={rx_bytes}\ntx_bytes={tx_bytes}");
    }
    out
}

/// A key from its 64 hex digits.
fn hex_key(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (byte, pair) in key.iter_mut().zip(text.chunks(2)) {
        let digits = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// `ADDR/LEN`, with host bits clear, as weft writes allowed IPs.
fn prefix(text: &str) -> Option<Prefix> {
    let (addr, len) = text.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some(Prefix { addr, len })
}

/// A starting session index that differs between devices and runs.
fn first_index() -> u32 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() as u32) & 0x00ff_ffff
}

#[cfg(test)]
mod tests;
