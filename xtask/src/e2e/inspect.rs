//! Reading back what an agent programmed, with the same commands a person would type:
//! `ip`, `bridge` and `nft` inside the node's namespace.

use std::net::IpAddr;

use super::lab::Ns;

/// weft's route protocol number (`ip route show proto 87`).
pub(crate) const ROUTE_PROTO: &str = "87";

/// The vxlan device of a family.
pub(crate) fn vxlan_dev(v6: bool) -> &'static str {
    if v6 { "flannel-v6.1" } else { "flannel.1" }
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
