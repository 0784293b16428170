//! `weft-agent check`: the host's capabilities, and whether the configured backend has what it
//! needs.

use std::fmt;

use weft_config::{FlannelBackend, MasqMode};
use weft_fabric::WgImplementation;
use weft_kernel::{Capability, Kernel};

#[cfg(test)]
mod tests;

/// The preflight result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Every capability checked.
    pub capabilities: Vec<Capability>,
    /// The names of the capabilities a failure of which makes the check fail.
    pub required: Vec<&'static str>,
}

/// Checks the host for `backend`, the servers' `flannel-backend` when the agent could ask a
/// server for it, else vxlan (the default). Every backend but `none` needs the firewall tool of
/// `masq_mode` and, where a router advertisement provides the IPv6 default route,
/// `accept_ra=2`; vxlan needs vxlan devices; wireguard-native needs TUN for its userspace
/// fallback when the kernel has no WireGuard, and the kernel's WireGuard when `wireguard`
/// (`wireguard-implementation`, `None` for auto) forces it. The `wireguard-implementation`
/// line says which implementation wireguard-native would run on.
pub async fn check(
    kernel: &Kernel,
    masq_mode: MasqMode,
    backend: Option<FlannelBackend>,
    wireguard: Option<WgImplementation>,
) -> Report {
    let mut capabilities = kernel.preflight().await;
    let firewall = match masq_mode {
        MasqMode::Iptables => "iptables",
        MasqMode::Nftables => "nftables",
    };
    let kernel_wireguard = capabilities
        .iter()
        .any(|c| c.name == "wireguard-kernel" && c.ok);
    capabilities.push(implementation(wireguard, kernel_wireguard));
    let required = match backend.unwrap_or_default() {
        FlannelBackend::None => vec![],
        FlannelBackend::HostGw => vec![firewall, "ipv6-accept-ra"],
        FlannelBackend::WireguardNative if kernel_wireguard => {
            vec!["wireguard-implementation", firewall, "ipv6-accept-ra"]
        }
        FlannelBackend::WireguardNative => vec![
            "wireguard-implementation",
            "tun",
            firewall,
            "ipv6-accept-ra",
        ],
        FlannelBackend::Vxlan => vec!["vxlan", firewall, "ipv6-accept-ra"],
    };
    Report {
        capabilities,
        required,
    }
}

/// Which implementation wireguard-native runs on, given `wireguard-implementation` and whether
/// this kernel has WireGuard.
fn implementation(wanted: Option<WgImplementation>, kernel_wireguard: bool) -> Capability {
    let (ok, detail, fix) = match (wanted, kernel_wireguard) {
        (Some(WgImplementation::Kernel) | None, true) => (
            true,
            "wireguard-native runs on the kernel's WireGuard",
            None,
        ),
        (Some(WgImplementation::Kernel), false) => (
            false,
            "wireguard-implementation is kernel, but this kernel has no WireGuard",
            Some("`modprobe wireguard`, or set wireguard-implementation to auto or userspace"),
        ),
        (None, false) => (
            true,
            "wireguard-native runs on the userspace implementation inside the agent (auto: this kernel has no WireGuard)",
            None,
        ),
        (Some(_), _) => (
            true,
            "wireguard-native runs on the userspace implementation inside the agent (wireguard-implementation userspace)",
            None,
        ),
    };
    Capability {
        name: "wireguard-implementation",
        ok,
        detail: detail.to_owned(),
        fix: fix.map(str::to_owned),
    }
}

impl Report {
    /// Whether every required capability is there.
    pub fn ok(&self) -> bool {
        self.capabilities
            .iter()
            .all(|c| c.ok || !self.required.contains(&c.name))
    }
}

impl fmt::Display for Report {
    /// One line per capability; a failure the backend does not need reads `skip`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.capabilities {
            if c.ok || self.required.contains(&c.name) {
                writeln!(f, "{c}")?;
            } else {
                writeln!(f, "skip {}", c.to_string().trim_start_matches("FAIL "))?;
            }
        }
        Ok(())
    }
}
