//! Tests of the pure parts of applying: phases, requests and what the kernel's answers mean.

use std::collections::HashMap;
use std::num::NonZeroI32;

use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::route::{RouteFlags, RouteProtocol};
use weft_fabric::{Address, MacAddr, Op, Route};

use super::{outcome, phases, request};
use crate::KernelError;

fn route() -> Route {
    Route {
        dst: "10.42.2.0/24".parse().unwrap(),
        gateway: Some("10.42.2.0".parse().unwrap()),
        dev: "flannel.1".to_owned(),
        onlink: true,
    }
}

fn neighbour(n: u8) -> Op {
    Op::ReplaceNeighbour {
        dev: "flannel.1".to_owned(),
        ip: format!("10.42.{n}.0").parse().unwrap(),
        mac: MacAddr([2, 0, 0, 0, n, 4]),
    }
}

fn code(errno: i32) -> Option<NonZeroI32> {
    NonZeroI32::new(-errno)
}

#[test]
fn phases_are_runs_of_one_kind() {
    let ops = vec![
        neighbour(2),
        neighbour(3),
        Op::ReplaceRoute(route()),
        neighbour(4),
    ];
    let lens: Vec<usize> = phases(&ops).iter().map(|p| p.len()).collect();
    assert_eq!(lens, [2, 1, 1]);
    assert!(phases(&[]).is_empty());
}

#[test]
fn a_route_replace_carries_protocol_87_onlink_and_replace_flags() {
    let index = HashMap::from([("flannel.1".to_owned(), 7)]);
    let (msg, flags) = request(&Op::ReplaceRoute(route()), &index)
        .unwrap()
        .unwrap();
    assert_eq!(flags, NLM_F_CREATE | NLM_F_REPLACE);
    let RouteNetlinkMessage::NewRoute(msg) = msg else {
        panic!("not a new route: {msg:?}");
    };
    assert_eq!(msg.header.protocol, RouteProtocol::Other(87));
    assert!(msg.header.flags.contains(RouteFlags::Onlink));
    assert_eq!(msg.header.destination_prefix_length, 24);
}

#[test]
fn deletes_on_a_missing_device_send_nothing_and_adds_fail() {
    let index = HashMap::new();
    assert_eq!(request(&Op::DeleteRoute(route()), &index).unwrap(), None);
    assert_eq!(
        request(
            &Op::DeleteLink {
                name: "flannel.1".to_owned()
            },
            &index
        )
        .unwrap(),
        None
    );
    let err = request(&Op::ReplaceRoute(route()), &index).unwrap_err();
    assert_eq!(
        err.to_string(),
        "route 10.42.2.0/24 via 10.42.2.0 dev flannel.1 onlink: device flannel.1 does not exist; check flannel-iface and that weft's links were created"
    );
}

#[test]
fn address_adds_are_exclusive() {
    let index = HashMap::from([("flannel.1".to_owned(), 7)]);
    let add = Op::AddAddress(Address {
        link: "flannel.1".to_owned(),
        addr: "10.42.1.0".parse().unwrap(),
        prefix_len: 32,
    });
    let (_, flags) = request(&add, &index).unwrap().unwrap();
    assert_eq!(flags, NLM_F_CREATE | NLM_F_EXCL);
}

#[test]
fn answers_that_mean_done() {
    let delete = Op::DeleteRoute(route());
    assert_eq!(outcome(&delete, None), Ok(()));
    assert_eq!(outcome(&delete, code(2)), Ok(()));
    assert_eq!(outcome(&delete, code(3)), Ok(()));
    let address = Address {
        link: "flannel.1".to_owned(),
        addr: "10.42.1.0".parse().unwrap(),
        prefix_len: 32,
    };
    assert_eq!(
        outcome(&Op::DeleteAddress(address.clone()), code(99)),
        Ok(())
    );
    assert_eq!(outcome(&Op::AddAddress(address), code(17)), Ok(()));
}

#[test]
fn answers_that_are_failures() {
    assert_eq!(
        outcome(&Op::ReplaceRoute(route()), code(2)),
        Err(KernelError::NotFound {
            object: "route 10.42.2.0/24 via 10.42.2.0 dev flannel.1 onlink".to_owned()
        })
    );
    assert!(matches!(
        outcome(&neighbour(2), code(22)),
        Err(KernelError::Refused { errno: 22, .. })
    ));
    assert!(matches!(
        outcome(&Op::DeleteRoute(route()), code(1)),
        Err(KernelError::Refused { errno: 1, .. })
    ));
}
