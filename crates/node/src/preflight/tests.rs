//! Tests of what `weft-agent check` says about wireguard-native's implementation.

use weft_fabric::WgImplementation;

use super::implementation;

#[test]
fn implementation_line() {
    let check = |wanted, kernel, ok, detail: &str| {
        let c = implementation(wanted, kernel);
        assert_eq!(
            (c.ok, c.detail.as_str()),
            (ok, detail),
            "{wanted:?} {kernel}"
        );
    };
    check(
        None,
        true,
        true,
        "wireguard-native runs on the kernel's WireGuard",
    );
    check(
        None,
        false,
        true,
        "wireguard-native runs on the userspace implementation inside the agent (auto: this kernel has no WireGuard)",
    );
    check(
        Some(WgImplementation::Kernel),
        false,
        false,
        "wireguard-implementation is kernel, but this kernel has no WireGuard",
    );
    check(
        Some(WgImplementation::Userspace),
        true,
        true,
        "wireguard-native runs on the userspace implementation inside the agent (wireguard-implementation userspace)",
    );
}
