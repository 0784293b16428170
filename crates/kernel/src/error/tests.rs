//! Tests of netlink error classification and error messages.

use std::num::NonZeroI32;

use rtnetlink::packet_core::ErrorMessage;

use crate::KernelError;

fn netlink(code: i32) -> rtnetlink::Error {
    let mut msg = ErrorMessage::default();
    msg.code = NonZeroI32::new(code);
    rtnetlink::Error::NetlinkError(msg)
}

fn check(code: i32, expect: &str) {
    let err = KernelError::from_netlink(
        "route 10.42.2.0/24 via 10.42.2.0 dev flannel.1",
        netlink(code),
    );
    assert_eq!(err.to_string(), expect);
}

#[test]
fn eexist_is_already_exists() {
    let err = KernelError::from_netlink("link flannel.1", netlink(-17));
    assert!(err.is_already_exists());
    assert_eq!(
        err,
        KernelError::AlreadyExists {
            object: "link flannel.1".to_owned()
        }
    );
}

#[test]
fn enoent_and_esrch_are_not_found() {
    for code in [-2, -3] {
        let err = KernelError::from_netlink("neighbour 10.42.2.0 dev flannel.1", netlink(code));
        assert!(err.is_not_found(), "{code}: {err}");
    }
}

#[test]
fn messages_name_the_object() {
    check(
        -17,
        "route 10.42.2.0/24 via 10.42.2.0 dev flannel.1: already exists",
    );
    check(
        -2,
        "route 10.42.2.0/24 via 10.42.2.0 dev flannel.1: not found",
    );
    check(
        -95,
        "route 10.42.2.0/24 via 10.42.2.0 dev flannel.1: the kernel refused it: operation not supported (errno 95)",
    );
}

#[test]
fn other_rtnetlink_errors_keep_their_source() {
    let err = KernelError::from_netlink("link flannel.1", rtnetlink::Error::RequestFailed);
    assert!(matches!(err, KernelError::Netlink { .. }));
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn apply_names_the_first_failure() {
    let err = KernelError::Apply {
        total: 3,
        failed: vec![KernelError::NotFound {
            object: "link flannel.1".to_owned(),
        }],
    };
    assert_eq!(
        err.to_string(),
        "1 of 3 operations failed; the first: link flannel.1: not found"
    );
}

#[test]
fn a_wireguard_failure_keeps_its_cause_through_an_apply_error() {
    use std::error::Error as _;

    let failed = KernelError::Wireguard {
        object: "WireGuard device flannel-wg".to_owned(),
        what: "could not be configured".to_owned(),
        source: weft_cause::Cause::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
    };
    assert_eq!(
        failed.to_string(),
        "WireGuard device flannel-wg: could not be configured"
    );
    assert_eq!(
        failed.source().map(ToString::to_string).as_deref(),
        Some("permission denied")
    );
    // The apply error names its first failure with that failure's whole chain.
    let apply = KernelError::Apply {
        total: 3,
        failed: vec![failed.clone()],
    };
    assert_eq!(
        apply.to_string(),
        "1 of 3 operations failed; the first: WireGuard device flannel-wg: could not be \
         configured: permission denied"
    );
    assert_eq!(apply.clone(), apply);
}
