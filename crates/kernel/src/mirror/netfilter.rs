//! nftables change notifications: which of weft's firewall tables someone touched.
//!
//! The kernel multicasts every nftables change (`nft monitor`: the `NFNLGRP_NFTABLES` group
//! of a `NETLINK_NETFILTER` socket), iptables-nft's included. A notification carries the
//! object's table (and chain, for chains and rules) but not its whole content, so it only
//! says *which* table to read again: [`touched`] maps one datagram to the (family, mode)
//! pairs of weft's rules it may have changed. Legacy iptables sends nothing; its rules are
//! repaired by the periodic reconcile.
//!
//! The message layout (`linux/netfilter/nfnetlink.h`, `nf_tables.h`): a netlink header whose
//! type is `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_*`, a 4-byte `nfgenmsg` whose first byte is
//! the family, then attributes; attribute 1 is the table's name in every table, chain, rule
//! and set message, and the chain's name is attribute 3 of a chain message and 2 of a rule's.

use std::collections::BTreeSet;
use std::io;

use rtnetlink::sys::protocols::NETLINK_NETFILTER;
use rtnetlink::sys::{AsyncSocket as _, SocketAddr, TokioSocket};
use weft_fabric::MasqMode;
use weft_fabric::firewall::{IPT_FORWARD_CHAIN, IPT_MASQ_CHAIN, NFT_TABLE};
use weft_ipam::Family;

#[cfg(test)]
mod tests;

/// `NFNLGRP_NFTABLES`: the multicast group of nftables changes.
const NFNLGRP_NFTABLES: u32 = 7;
/// `NFNL_SUBSYS_NFTABLES`: the high byte of every nftables message type.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFPROTO_IPV4` and `NFPROTO_IPV6`: the families weft's rules live in.
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
/// Netlink's header and the `nfgenmsg` after it.
const NLMSG_HEADER: usize = 16;
const NFGENMSG: usize = 4;
/// Attribute types: the table's name (every object), a chain message's name, a rule's chain.
const ATTR_TABLE: u16 = 1;
const ATTR_CHAIN_NAME: u16 = 3;
const ATTR_RULE_CHAIN: u16 = 2;
/// The chains iptables mode owns, or jumps to weft's from.
const IPTABLES_CHAINS: [&str; 4] = [IPT_MASQ_CHAIN, IPT_FORWARD_CHAIN, "POSTROUTING", "FORWARD"];

/// What kind of object an nftables message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Object {
    Table,
    Chain,
    Rule,
    Set,
}

/// A `NETLINK_NETFILTER` socket subscribed to nftables changes in the calling thread's network
/// namespace, with a receive buffer of `bytes`.
pub(super) fn subscribe(bytes: usize) -> io::Result<TokioSocket> {
    let mut socket = TokioSocket::new(NETLINK_NETFILTER)?;
    socket.socket_mut().bind(&SocketAddr::new(0, 0))?;
    socket.socket_ref().add_membership(NFNLGRP_NFTABLES)?;
    socket.socket_ref().set_rx_buf_sz(bytes)?;
    Ok(socket)
}

/// The (family, mode) pairs of weft's rules that the notifications in `datagram` may have
/// changed: nftables mode's `weft` tables, and iptables mode's chains (and the built-in chains
/// that jump to them) in the `nat` and `filter` tables. Anything else is left out, and so is
/// whatever can't be parsed.
pub(super) fn touched(datagram: &[u8]) -> BTreeSet<(Family, MasqMode)> {
    let mut out = BTreeSet::new();
    let mut at = 0;
    while at + NLMSG_HEADER <= datagram.len() {
        let len = u32::from_ne_bytes([
            datagram[at],
            datagram[at + 1],
            datagram[at + 2],
            datagram[at + 3],
        ]) as usize;
        if len < NLMSG_HEADER || at + len > datagram.len() {
            break;
        }
        let kind = u16::from_ne_bytes([datagram[at + 4], datagram[at + 5]]);
        if let Some(touched) = message(kind, &datagram[at + NLMSG_HEADER..at + len]) {
            out.insert(touched);
        }
        at += (len + 3) & !3;
    }
    out
}

/// The pair one message (`kind`, and its body after the netlink header) touches.
fn message(kind: u16, body: &[u8]) -> Option<(Family, MasqMode)> {
    if kind >> 8 != NFNL_SUBSYS_NFTABLES || body.len() < NFGENMSG {
        return None;
    }
    let object = object(kind & 0xff)?;
    let family = match body[0] {
        NFPROTO_IPV4 => Family::Ipv4,
        NFPROTO_IPV6 => Family::Ipv6,
        _ => return None,
    };
    let attributes = &body[NFGENMSG..];
    let table = attribute(attributes, ATTR_TABLE)?;
    if table == NFT_TABLE.as_bytes() {
        return Some((family, MasqMode::Nftables));
    }
    if table != b"nat" && table != b"filter" {
        return None;
    }
    let chain = match object {
        Object::Table => return Some((family, MasqMode::Iptables)),
        Object::Chain => attribute(attributes, ATTR_CHAIN_NAME)?,
        Object::Rule => attribute(attributes, ATTR_RULE_CHAIN)?,
        Object::Set => return None,
    };
    IPTABLES_CHAINS
        .iter()
        .any(|name| name.as_bytes() == chain)
        .then_some((family, MasqMode::Iptables))
}

/// The object an `NFT_MSG_*` type is about; `None` for the rest (generations, objects,
/// flowtables, and the `GET` requests).
fn object(msg: u16) -> Option<Object> {
    match msg {
        // NEWTABLE, DELTABLE, DESTROYTABLE
        0 | 2 | 26 => Some(Object::Table),
        // NEWCHAIN, DELCHAIN, DESTROYCHAIN
        3 | 5 | 27 => Some(Object::Chain),
        // NEWRULE, DELRULE, DESTROYRULE
        6 | 8 | 28 => Some(Object::Rule),
        // NEWSET, DELSET, NEWSETELEM, DELSETELEM, DESTROYSET, DESTROYSETELEM
        9 | 11 | 12 | 14 | 29 | 30 => Some(Object::Set),
        _ => None,
    }
}

/// The value of the first attribute of type `wanted` in `attributes`, without the NUL that
/// ends a string.
fn attribute(attributes: &[u8], wanted: u16) -> Option<&[u8]> {
    let mut at = 0;
    while at + 4 <= attributes.len() {
        let len = usize::from(u16::from_ne_bytes([attributes[at], attributes[at + 1]]));
        // The top two bits are the nested and byte-order flags.
        let kind = u16::from_ne_bytes([attributes[at + 2], attributes[at + 3]]) & 0x3fff;
        if len < 4 || at + len > attributes.len() {
            return None;
        }
        if kind == wanted {
            let value = &attributes[at + 4..at + len];
            return Some(value.strip_suffix(&[0]).unwrap_or(value));
        }
        at += (len + 3) & !3;
    }
    None
}
