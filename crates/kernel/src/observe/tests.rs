//! Tests of turning netlink dump messages into weft's kernel objects.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol,
};
use weft_fabric::{Address, LinkKind, MacAddr, Route};

use super::{Entry, neighbour_entry, observed_address, observed_link, observed_route};

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

fn names() -> HashMap<u32, String> {
    HashMap::from([(2, "eth0".to_owned()), (7, "flannel.1".to_owned())])
}

fn vxlan_message(learning: bool) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = 7;
    msg.header.flags = LinkFlags::Up;
    msg.attributes = vec![
        LinkAttribute::IfName("flannel.1".to_owned()),
        LinkAttribute::Mtu(1450),
        LinkAttribute::Address(MAC.to_vec()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(vec![
                InfoVxlan::Id(1),
                InfoVxlan::Link(2),
                InfoVxlan::Local(Ipv4Addr::new(192, 0, 2, 1)),
                InfoVxlan::Learning(learning),
                InfoVxlan::Port(8472),
            ])),
        ]),
    ];
    msg
}

#[test]
fn a_vxlan_link_reads_back_with_its_creation_attributes() {
    let link = observed_link("flannel.1".to_owned(), &vxlan_message(false), &names());
    assert_eq!(link.mtu, 1450);
    assert!(link.up);
    assert_eq!(
        link.kind,
        LinkKind::Vxlan {
            vni: 1,
            port: 8472,
            gbp: false,
            local: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            underlay: "eth0".to_owned(),
            mac: MacAddr(MAC),
        }
    );
}

#[test]
fn a_learning_vxlan_or_another_type_is_not_weft_s() {
    let link = observed_link("flannel.1".to_owned(), &vxlan_message(true), &names());
    assert!(matches!(link.kind, LinkKind::Other { .. }));

    let mut bridge = vxlan_message(false);
    bridge.attributes[3] = LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]);
    let link = observed_link("flannel.1".to_owned(), &bridge, &names());
    assert_eq!(
        link.kind,
        LinkKind::Other {
            kind: "bridge".to_owned()
        }
    );
}

fn route_message(protocol: u8, table: u8) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = 24;
    msg.header.table = table;
    msg.header.protocol = RouteProtocol::from(protocol);
    msg.header.flags = RouteFlags::Onlink;
    msg.attributes = vec![
        RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(10, 42, 2, 0))),
        RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 42, 2, 0))),
        RouteAttribute::Oif(7),
    ];
    msg
}

#[test]
fn only_main_table_protocol_87_routes_are_weft_s() {
    let route = observed_route(&route_message(87, 254), &names()).unwrap();
    assert_eq!(
        route,
        Route {
            dst: "10.42.2.0/24".parse().unwrap(),
            gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 42, 2, 0))),
            dev: "flannel.1".to_owned(),
            onlink: true,
        }
    );
    assert_eq!(observed_route(&route_message(4, 254), &names()), None);
    assert_eq!(observed_route(&route_message(87, 255), &names()), None);
}

#[test]
fn link_local_ipv6_addresses_are_the_kernel_s() {
    let weft = HashMap::from([(7, "flannel-v6.1".to_owned())]);
    let mut msg = AddressMessage::default();
    msg.header.index = 7;
    msg.header.prefix_len = 64;
    msg.attributes = vec![AddressAttribute::Address("fe80::1".parse().unwrap())];
    assert_eq!(observed_address(&msg, &weft), None);

    msg.header.prefix_len = 128;
    msg.attributes = vec![AddressAttribute::Address("fd00:42:0:1::".parse().unwrap())];
    assert_eq!(
        observed_address(&msg, &weft),
        Some(Address {
            link: "flannel-v6.1".to_owned(),
            addr: "fd00:42:0:1::".parse().unwrap(),
            prefix_len: 128,
        })
    );
}

fn neighbour(family: AddressFamily, state: NeighbourState, mac: [u8; 6]) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = family;
    msg.header.ifindex = 7;
    msg.header.state = state;
    if family == AddressFamily::Bridge {
        msg.header.flags = NeighbourFlags::Own;
    }
    // The kernel's FDB entries decode with the underlay address as raw bytes.
    let dst = if family == AddressFamily::Bridge {
        NeighbourAddress::Other(vec![192, 0, 2, 2])
    } else {
        NeighbourAddress::Inet(Ipv4Addr::new(192, 0, 2, 2))
    };
    msg.attributes = vec![
        NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
        NeighbourAttribute::Destination(dst),
    ];
    msg
}

#[test]
fn neighbours_and_fdb_entries_on_weft_links_are_read() {
    let weft = HashMap::from([(7, "flannel.1".to_owned())]);
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    let dev = || "flannel.1".to_owned();
    // Cases: (the message, the entry read from it).
    let cases = [
        (
            neighbour(AddressFamily::Inet, NeighbourState::Permanent, MAC),
            Some(Entry::Neighbour {
                dev: dev(),
                ip,
                mac: MacAddr(MAC),
                permanent: true,
            }),
        ),
        (
            neighbour(AddressFamily::Inet, NeighbourState::Reachable, MAC),
            Some(Entry::Neighbour {
                dev: dev(),
                ip,
                mac: MacAddr(MAC),
                permanent: false,
            }),
        ),
        (
            neighbour(AddressFamily::Bridge, NeighbourState::Permanent, MAC),
            Some(Entry::Fdb {
                dev: dev(),
                mac: MacAddr(MAC),
                dst: ip,
                permanent: true,
            }),
        ),
        // The all-zero default destination is not weft's.
        (
            neighbour(AddressFamily::Bridge, NeighbourState::Permanent, [0; 6]),
            None,
        ),
    ];
    for (msg, want) in cases {
        assert_eq!(neighbour_entry(&msg, &weft), want, "{msg:?}");
    }
    // Nothing on a link outside the scope is read.
    let mut elsewhere = neighbour(AddressFamily::Inet, NeighbourState::Permanent, MAC);
    elsewhere.header.ifindex = 8;
    assert_eq!(neighbour_entry(&elsewhere, &weft), None);
}
