//! `weft-agent check`: the host's capabilities, and whether the configured backend has what it
//! needs.

use std::fmt;

use weft_config::MasqMode;
use weft_kernel::{Capability, Kernel};

/// The preflight result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Every capability checked.
    pub capabilities: Vec<Capability>,
    /// The names of the capabilities a failure of which makes the check fail.
    pub required: Vec<&'static str>,
}

/// Checks the host. The backend is the servers' setting, which the agent does not know before
/// it joins, so what vxlan (the default) and every backend need is required: vxlan devices,
/// nftables (or iptables with `--masq-mode iptables`), and, where a router advertisement
/// provides the IPv6 default route, `accept_ra=2`.
pub async fn check(kernel: &Kernel, masq_mode: MasqMode) -> Report {
    let firewall = match masq_mode {
        MasqMode::Iptables => "iptables",
        _ => "nftables",
    };
    Report {
        capabilities: kernel.preflight().await,
        required: vec!["vxlan", firewall, "ipv6-accept-ra"],
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
    /// One line per capability.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.capabilities {
            writeln!(f, "{c}")?;
        }
        Ok(())
    }
}
