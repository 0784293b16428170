//! Tests of reading nftables notifications, on messages built as the kernel lays them out.

use super::*;

/// One netlink message of `NFT_MSG_*` type `msg` for `family`, with string attributes.
fn message(msg: u16, family: u8, attributes: &[(u16, &str)]) -> Vec<u8> {
    let mut body = vec![family, 0, 0, 0];
    for (kind, value) in attributes {
        let len = 4 + value.len() + 1;
        body.extend_from_slice(&(len as u16).to_ne_bytes());
        body.extend_from_slice(&kind.to_ne_bytes());
        body.extend_from_slice(value.as_bytes());
        body.push(0);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&((NLMSG_HEADER + body.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&(NFNL_SUBSYS_NFTABLES << 8 | msg).to_ne_bytes());
    out.extend_from_slice(&[0; 10]);
    out.extend_from_slice(&body);
    out
}

/// A case: its name, the datagram, and the pairs it touches.
type Case = (&'static str, Vec<u8>, Vec<(Family, MasqMode)>);

#[test]
fn weft_s_tables_and_chains_are_touched_and_others_are_not() {
    let v4 = (Family::Ipv4, MasqMode::Nftables);
    let v6 = (Family::Ipv6, MasqMode::Nftables);
    let ipt4 = (Family::Ipv4, MasqMode::Iptables);
    let cases: Vec<Case> = vec![
        (
            "weft's table deleted",
            message(2, NFPROTO_IPV4, &[(ATTR_TABLE, "weft")]),
            vec![v4],
        ),
        (
            "a rule of ip6 weft deleted",
            message(8, NFPROTO_IPV6, &[(ATTR_TABLE, "weft"), (2, "postrouting")]),
            vec![v6],
        ),
        (
            "another table",
            message(6, NFPROTO_IPV4, &[(ATTR_TABLE, "kube-proxy"), (2, "x")]),
            vec![],
        ),
        (
            "inet weft is not weft's",
            message(0, 1, &[(ATTR_TABLE, "weft")]),
            vec![],
        ),
        (
            "iptables-nft: a rule of FLANNEL-POSTRTG",
            message(
                8,
                NFPROTO_IPV4,
                &[(ATTR_TABLE, "nat"), (2, "FLANNEL-POSTRTG")],
            ),
            vec![ipt4],
        ),
        (
            "iptables-nft: the jump from FORWARD",
            message(8, NFPROTO_IPV4, &[(ATTR_TABLE, "filter"), (2, "FORWARD")]),
            vec![ipt4],
        ),
        (
            "iptables-nft: FLANNEL-FWD deleted",
            message(
                5,
                NFPROTO_IPV4,
                &[(ATTR_TABLE, "filter"), (3, "FLANNEL-FWD")],
            ),
            vec![ipt4],
        ),
        (
            "iptables-nft: the nat table deleted",
            message(2, NFPROTO_IPV4, &[(ATTR_TABLE, "nat")]),
            vec![ipt4],
        ),
        (
            "iptables-nft: kube-proxy's chain",
            message(
                6,
                NFPROTO_IPV4,
                &[(ATTR_TABLE, "nat"), (2, "KUBE-SERVICES")],
            ),
            vec![],
        ),
        (
            "a generation message",
            message(15, NFPROTO_IPV4, &[(ATTR_TABLE, "weft")]),
            vec![],
        ),
        (
            "a truncated message",
            message(2, NFPROTO_IPV4, &[(ATTR_TABLE, "weft")])[..18].to_vec(),
            vec![],
        ),
    ];
    for (name, datagram, want) in cases {
        let got: Vec<_> = touched(&datagram).into_iter().collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn every_message_of_a_datagram_is_read() {
    let mut datagram = message(6, NFPROTO_IPV4, &[(ATTR_TABLE, "kube-proxy"), (2, "x")]);
    datagram.extend(message(2, NFPROTO_IPV6, &[(ATTR_TABLE, "weft")]));
    datagram.extend(message(
        8,
        NFPROTO_IPV4,
        &[(ATTR_TABLE, "nat"), (2, "POSTROUTING")],
    ));
    let got: Vec<_> = touched(&datagram).into_iter().collect();
    assert_eq!(
        got,
        vec![
            (Family::Ipv4, MasqMode::Iptables),
            (Family::Ipv6, MasqMode::Nftables)
        ]
    );
}

#[test]
fn a_bad_attribute_length_stops_the_read_without_panicking() {
    let mut datagram = message(2, NFPROTO_IPV4, &[(ATTR_TABLE, "weft")]);
    // The attribute claims more bytes than the message has.
    datagram[NLMSG_HEADER + NFGENMSG] = 0xff;
    assert!(touched(&datagram).is_empty());
}
