//! `weft-agent check`: the host's capabilities, and whether the configured backend has what it
//! needs.

use std::fmt;

use weft_config::{FlannelBackend, MasqMode};
use weft_kernel::{Capability, Kernel};

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
/// fallback when the kernel has no WireGuard.
pub async fn check(
    kernel: &Kernel,
    masq_mode: MasqMode,
    backend: Option<FlannelBackend>,
) -> Report {
    let capabilities = kernel.preflight().await;
    let firewall = match masq_mode {
        MasqMode::Iptables => "iptables",
        _ => "nftables",
    };
    let kernel_wireguard = capabilities
        .iter()
        .any(|c| c.name == "wireguard-kernel" && c.ok);
    let required = match backend.unwrap_or_default() {
        FlannelBackend::None => vec![],
        FlannelBackend::HostGw => vec![firewall, "ipv6-accept-ra"],
        FlannelBackend::WireguardNative if kernel_wireguard => vec![firewall, "ipv6-accept-ra"],
        FlannelBackend::WireguardNative => vec!["tun", firewall, "ipv6-accept-ra"],
        _ => vec!["vxlan", firewall, "ipv6-accept-ra"],
    };
    Report {
        capabilities,
        required,
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
