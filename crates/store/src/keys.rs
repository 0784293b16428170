//! The key layout of cluster state: every key weft writes, under `/weft/`.
//!
//! | key | value |
//! |---|---|
//! | `/weft/cluster/config` | the cluster network config, JSON (weft-config's record) |
//! | `/weft/nodes/<node>` | a [`NodeRecord`](crate::NodeRecord), JSON |
//! | `/weft/leases/<node>` | a [`weft_fabric::Lease`], JSON (kebab-case) |
//! | `/weft/subnets/ipv4/<a.b.c.d>-<prefix>` | the node holding that IPv4 pod CIDR, plain text |
//! | `/weft/subnets/ipv6/<address>-<prefix>` | the node holding that IPv6 pod CIDR, plain text |
//! | `/weft/pods/<namespace>/<pod>` | a [`PodRecord`](crate::PodRecord), JSON |
//! | `/weft/claims/ip/<address>` | the node whose internal or external IP that is, plain text |
//! | `/weft/claims/vtep-mac/<mac>` | the node whose VTEP has that MAC, plain text |
//! | `/weft/claims/wireguard-key/<key>` | the node with that WireGuard public key (base64url), plain text |
//!
//! The `subnets` keys are the uniqueness index of pod CIDRs: a lease is written in the same
//! transaction as its subnet keys, on the condition that none of them exists, so two servers
//! can never hand out one CIDR (flannel's etcd layout keys leases by subnet, `10.5.34.0-24`, for
//! the same reason).
//!
//! The `claims` keys are the uniqueness index of what identifies a node to its peers and to
//! the egress selector: a node's record is written in the same transaction as its claim keys,
//! on the condition that none of them belongs to another node, so no node can take another's
//! address, VTEP MAC or WireGuard key, however many servers race (see
//! [`Store::claim_node`](crate::Store::claim_node)).

use std::net::{Ipv4Addr, Ipv6Addr};

use weft_ipam::{Cidr, Ipv4Cidr, Ipv6Cidr};

use crate::StoreError;

#[cfg(test)]
mod tests;

/// The prefix of every key weft writes.
pub const ROOT: &str = "/weft/";
/// The cluster network config.
pub const CLUSTER_CONFIG: &str = "/weft/cluster/config";
/// The prefix of node records.
pub const NODES: &str = "/weft/nodes/";
/// The prefix of leases.
pub const LEASES: &str = "/weft/leases/";
/// The prefix of the pod CIDR uniqueness index.
pub const SUBNETS: &str = "/weft/subnets/";
/// The prefix of pod records.
pub const PODS: &str = "/weft/pods/";
/// The prefix of the node identity uniqueness index.
pub const CLAIMS: &str = "/weft/claims/";

/// The key of a node's record.
pub fn node(name: &str) -> String {
    format!("{NODES}{name}")
}

/// The key of a node's lease.
pub fn lease(node: &str) -> String {
    format!("{LEASES}{node}")
}

/// The key of a pod's record.
pub fn pod(namespace: &str, name: &str) -> String {
    format!("{PODS}{namespace}/{name}")
}

/// The index key of a pod CIDR, e.g. `/weft/subnets/ipv4/10.42.3.0-24`.
pub fn subnet(cidr: Cidr) -> String {
    match cidr {
        Cidr::V4(c) => format!("{SUBNETS}ipv4/{}-{}", c.network(), cidr.prefix_len()),
        Cidr::V6(c) => format!("{SUBNETS}ipv6/{}-{}", c.network(), cidr.prefix_len()),
    }
}

/// The pod CIDR an index key names.
pub fn parse_subnet(key: &str) -> Result<Cidr, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: key.to_owned(),
        what: "subnet index key",
        reason: reason.to_owned(),
    };
    let rest = key
        .strip_prefix(SUBNETS)
        .ok_or_else(|| corrupt("it is not under /weft/subnets/"))?;
    let (family, cidr) = rest
        .split_once('/')
        .ok_or_else(|| corrupt("expected <family>/<address>-<prefix>"))?;
    let (addr, prefix) = cidr
        .rsplit_once('-')
        .ok_or_else(|| corrupt("expected <address>-<prefix>"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| corrupt("the prefix length is not a number"))?;
    let bad_network = || corrupt("not a network address with that prefix length");
    match family {
        "ipv4" => {
            let addr: Ipv4Addr = addr.parse().map_err(|_| corrupt("not an IPv4 address"))?;
            Ipv4Cidr::new(addr, prefix)
                .map(Cidr::V4)
                .ok_or_else(bad_network)
        }
        "ipv6" => {
            let addr: Ipv6Addr = addr.parse().map_err(|_| corrupt("not an IPv6 address"))?;
            Ipv6Cidr::new(addr, prefix)
                .map(Cidr::V6)
                .ok_or_else(bad_network)
        }
        _ => Err(corrupt("the family is neither ipv4 nor ipv6")),
    }
}

/// Checks that `name` can be one segment of a key: not empty, at most 253 bytes (a DNS
/// subdomain, as Kubernetes names are), no `/`, no control characters, not `.` or `..`.
pub fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 253 {
        Some("it is longer than 253 bytes")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if name == "." || name == ".." {
        Some("it is '.' or '..'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::InvalidName {
            what,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
///
/// Returns `\0`, etcd's "to the end", when no such key exists (an empty prefix, or one of only
/// `0xff` bytes).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
