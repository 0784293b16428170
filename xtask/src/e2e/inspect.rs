//! Reading back what an agent programmed, with the same commands a person would type:
//! `ip`, `bridge` and `nft` inside the node's namespace.

use std::net::IpAddr;

use super::cluster::Node;
use super::lab::Ns;

/// weft's route protocol number (`ip route show proto 87`).
pub(crate) const ROUTE_PROTO: &str = "87";

/// The vxlan device of a family.
pub(crate) fn vxlan_dev(v6: bool) -> &'static str {
    if v6 { "flannel-v6.1" } else { "flannel.1" }
}

/// The WireGuard device of a family.
pub(crate) fn wireguard_dev(v6: bool) -> &'static str {
    if v6 { "flannel-wg-v6" } else { "flannel-wg" }
}

/// A WireGuard peer as the device reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WgPeer {
    pub(crate) endpoint: Option<IpAddr>,
    /// Allowed IPs as `ADDR/LEN` text.
    pub(crate) allowed_ips: Vec<String>,
}

/// The peers of WireGuard device `dev` on `node`: from the read-only UAPI socket the agent
/// serves for a userspace device (`<data-dir>/agent/wireguard/DEV.sock`, `get=1`), else, for
/// a kernel device, from `wg show DEV dump`.
pub(crate) fn wireguard_peers(node: &Node, dev: &str) -> anyhow::Result<Vec<WgPeer>> {
    if uapi_socket(node, dev).exists() {
        return Ok(parse_uapi_peers(&uapi_get(node, dev)?));
    }
    let dump = node.host.ns.run("wg", &["show", dev, "dump"])?;
    Ok(parse_wg_dump(&dump))
}

/// The read-only UAPI socket the agent serves for its userspace device `dev`.
fn uapi_socket(node: &Node, dev: &str) -> std::path::PathBuf {
    node.dir.join("agent/wireguard").join(format!("{dev}.sock"))
}

/// A userspace device's whole `get=1` answer, from the agent's read-only UAPI socket.
pub(crate) fn uapi_get(node: &Node, dev: &str) -> anyhow::Result<String> {
    let socket = uapi_socket(node, dev);
    let out = node
        .host
        .ns
        .exec(&node.dir, "socat")
        .args([
            "-t",
            "2",
            "-",
            &format!("UNIX-CONNECT:{}", socket.display()),
        ])
        .output(Some(b"get=1\n\n"))?;
    if !out.status.success() {
        anyhow::bail!(
            "asking {} for its configuration failed: {}",
            socket.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The peers of a UAPI `get=1` answer: each starts at a `public_key=` line, with
/// `endpoint=192.0.2.2:51820` (or `[2001:db8:1::2]:51821`) and `allowed_ip=` lines.
pub(crate) fn parse_uapi_peers(text: &str) -> Vec<WgPeer> {
    let mut peers: Vec<WgPeer> = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match (key, peers.last_mut()) {
            ("public_key", _) => peers.push(WgPeer {
                endpoint: None,
                allowed_ips: Vec::new(),
            }),
            ("endpoint", Some(peer)) => peer.endpoint = endpoint_host(value),
            ("allowed_ip", Some(peer)) => peer.allowed_ips.push(value.to_owned()),
            _ => {}
        }
    }
    peers
}

/// The peers of `wg show DEV dump`: after the interface's line, one tab-separated line per peer
/// (public key, preshared key, endpoint, allowed IPs, ...).
pub(crate) fn parse_wg_dump(text: &str) -> Vec<WgPeer> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let (endpoint, allowed) = (fields.get(2)?, fields.get(3)?);
            Some(WgPeer {
                endpoint: endpoint_host(endpoint),
                allowed_ips: allowed
                    .split(',')
                    .filter(|a| !a.is_empty() && *a != "(none)")
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

/// The address of `192.0.2.2:51820` or `[2001:db8:1::2]:51821`.
fn endpoint_host(endpoint: &str) -> Option<IpAddr> {
    let host = match endpoint.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => endpoint.rsplit_once(':')?.0,
    };
    host.parse().ok()
}

/// The destinations of `dev`'s FDB entries (`bridge fdb show dev DEV`).
pub(crate) fn fdb_dsts(ns: &Ns, dev: &str) -> anyhow::Result<Vec<IpAddr>> {
    let out = ns.run("bridge", &["fdb", "show", "dev", dev])?;
    Ok(parse_fdb_dsts(&out))
}

/// The `dst` addresses in `bridge fdb show` output.
pub(crate) fn parse_fdb_dsts(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "dst")?;
            words.next()?.parse().ok()
        })
        .collect()
}

/// The permanent neighbours of `dev` (`ip neigh show dev DEV nud permanent`).
pub(crate) fn permanent_neighbours(ns: &Ns, v6: bool, dev: &str) -> anyhow::Result<Vec<IpAddr>> {
    let family = if v6 { "-6" } else { "-4" };
    let out = ns.ip(&[family, "neigh", "show", "dev", dev, "nud", "permanent"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect())
}

/// `ip route show exact CIDR` (empty when there is no such route).
pub(crate) fn route(ns: &Ns, cidr: &str) -> anyhow::Result<String> {
    let family = if cidr.contains(':') { "-6" } else { "-4" };
    Ok(ns
        .ip(&[family, "route", "show", "exact", cidr])?
        .trim()
        .to_owned())
}

/// The route the kernel picks for the first address of `cidr` (`ip route get`).
pub(crate) fn route_to(ns: &Ns, cidr: &str) -> anyhow::Result<String> {
    let addr = cidr.split('/').next().unwrap_or(cidr);
    Ok(ns.ip(&["route", "get", addr])?.trim().to_owned())
}

/// The gateway of a route line (`... via GW ...`).
pub(crate) fn route_via(line: &str) -> Option<IpAddr> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "via")?;
    let via = words.next()?;
    // `via inet6 ADDR` is how ip prints a gateway of the other family.
    let via = if via == "inet" || via == "inet6" {
        words.next()?
    } else {
        via
    };
    via.parse().ok()
}

/// Every kernel object of weft's in a namespace, one line each: its links (`flannel*`,
/// `cni0`), routes of proto 87, and nftables tables named `weft`. Empty when weft programmed
/// nothing.
pub(crate) fn weft_objects(ns: &Ns) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    for line in ns.ip(&["-o", "link", "show"])?.lines() {
        let name = line.split(':').nth(1).unwrap_or("").trim();
        let name = name.split('@').next().unwrap_or(name);
        if name.starts_with("flannel") || name == "cni0" {
            found.push(format!("link {name}"));
        }
    }
    for family in ["-4", "-6"] {
        for line in ns
            .ip(&[family, "route", "show", "proto", ROUTE_PROTO])?
            .lines()
        {
            found.push(format!("route {}", line.trim()));
        }
    }
    for line in ns.run("nft", &["list", "tables"])?.lines() {
        if line.trim().ends_with(" weft") {
            found.push(line.trim().to_owned());
        }
    }
    Ok(found)
}

/// What weft programmed in a namespace, in a form where any change shows: the vxlan devices
/// with their ifindex and attributes, their addresses, permanent neighbours and FDB, weft's
/// routes, and weft's nftables tables with rule handles (a rewritten rule gets a new handle).
pub(crate) fn snapshot(ns: &Ns) -> anyhow::Result<String> {
    let mut out = String::new();
    for v6 in [false, true] {
        let dev = vxlan_dev(v6);
        if ns.ip(&["link", "show", dev]).is_err() {
            continue;
        }
        out += &ns.ip(&["-d", "-o", "link", "show", dev])?;
        out += &ns.ip(&["-o", "addr", "show", "dev", dev])?;
        out += &ns.ip(&["neigh", "show", "dev", dev, "nud", "permanent"])?;
        out += &ns.run("bridge", &["fdb", "show", "dev", dev])?;
    }
    for family in ["-4", "-6"] {
        out += &ns.ip(&[family, "route", "show", "proto", ROUTE_PROTO])?;
    }
    for table in ["ip weft", "ip6 weft"] {
        let mut args = vec!["-a", "list", "table"];
        args.extend(table.split(' '));
        if let Ok(rules) = ns.run("nft", &args) {
            out += &rules;
        }
    }
    Ok(out)
}

/// The ifindex of `dev` (`ip -o link show DEV` starts with it).
pub(crate) fn ifindex(ns: &Ns, dev: &str) -> anyhow::Result<u32> {
    let out = ns.ip(&["-o", "link", "show", dev])?;
    out.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no ifindex in `{}`", out.trim()))
}

/// The kind of link `dev` is (`wireguard`, `tun`, `vxlan`, ...), as the kernel reports it over
/// netlink (`ip -details -json link show`); `None` for a link without one (loopback, ...).
pub(crate) fn link_kind(ns: &Ns, dev: &str) -> anyhow::Result<Option<String>> {
    let out = ns.ip(&["-details", "-json", "link", "show", "dev", dev])?;
    Ok(parse_link_kind(&out))
}

/// The `linkinfo.info_kind` of the first link in `ip -details -json link show` output.
pub(crate) fn parse_link_kind(json: &str) -> Option<String> {
    let links: serde_json::Value = serde_json::from_str(json).ok()?;
    links[0]["linkinfo"]["info_kind"]
        .as_str()
        .map(str::to_owned)
}
