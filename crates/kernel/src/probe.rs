//! Host preflight: what this kernel and host can do for the pod network, one [`Capability`]
//! at a time, each with the fix for a failure (`weft-agent check` prints them).

use std::fmt;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use rtnetlink::packet_route::route::{RouteAttribute, RouteHeader, RouteProtocol};
use rtnetlink::{LinkVxlan, LinkWireguard};

use crate::cmd::Cmd;
use crate::{Kernel, KernelError, sysctl};

/// One checked capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    /// What was checked (`vxlan`, `wireguard-kernel`, `tun`, `nftables`, ...).
    pub name: &'static str,
    /// Whether it is there.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do when it is missing.
    pub fix: Option<String>,
}

impl Kernel {
    /// Checks every capability weft may need: vxlan and kernel WireGuard links (by creating and
    /// deleting a probe device), `/dev/net/tun`, `nft` and `iptables`, IP forwarding,
    /// `br_netfilter`, and `accept_ra` on interfaces whose IPv6 default route came from a router
    /// advertisement.
    pub async fn preflight(&self) -> Vec<Capability> {
        let mut out = Vec::new();
        let probe = format!("weftprobe{}", std::process::id() % 100_000);
        let vxlan = self
            .probe_link(
                LinkVxlan::new(&probe, 4242)
                    .local(Ipv4Addr::LOCALHOST)
                    .port(4789)
                    .build(),
                &probe,
            )
            .await;
        out.push(Capability {
            name: "vxlan",
            ok: vxlan.is_ok(),
            detail: result_detail(&vxlan, "vxlan devices can be created"),
            fix: vxlan.is_err().then(|| "load the vxlan module (`modprobe vxlan`); on Raspberry Pi OS/Ubuntu install linux-modules-extra-raspi".into()),
        });
        let wg = self
            .probe_link(LinkWireguard::new(&probe).build(), &probe)
            .await;
        out.push(Capability {
            name: "wireguard-kernel",
            ok: wg.is_ok(),
            detail: match &wg {
                Ok(()) => "kernel WireGuard is available".into(),
                Err(e) => format!("no kernel WireGuard ({e}); wireguard-native will use the userspace implementation inside the agent"),
            },
            fix: wg.is_err().then(|| "optional: `modprobe wireguard` for the faster kernel implementation".into()),
        });
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun");
        out.push(Capability {
            name: "tun",
            ok: tun.is_ok(),
            detail: match &tun {
                Ok(_) => "/dev/net/tun opens".into(),
                Err(e) => format!("/dev/net/tun: {e}"),
            },
            fix: tun
                .is_err()
                .then(|| "`modprobe tun` (needed by userspace WireGuard)".into()),
        });
        for (name, program, args, fix) in [
            (
                "nftables",
                "nft",
                vec!["list", "tables"],
                "install nftables (`apt-get install nftables`)",
            ),
            (
                "iptables",
                "iptables",
                vec!["-S", "FORWARD"],
                "install iptables, or keep --masq-mode nftables",
            ),
        ] {
            let result = Cmd::new(program).args(args).run();
            out.push(Capability {
                name,
                ok: result.is_ok(),
                detail: match &result {
                    Ok(_) => format!("`{program}` works"),
                    Err(e) => e.to_string(),
                },
                fix: result.is_err().then(|| fix.into()),
            });
        }
        let forward = sysctl::read("net/ipv4/ip_forward").ok().flatten();
        out.push(Capability {
            name: "ip_forward",
            ok: true,
            detail: match forward.as_deref() {
                Some("1") => "net.ipv4.ip_forward is 1".into(),
                Some(v) => format!("net.ipv4.ip_forward is {v}; the agent sets it to 1"),
                None => "net.ipv4.ip_forward is unreadable; the agent sets it to 1".into(),
            },
            fix: None,
        });
        let bridge_nf =
            std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists();
        out.push(Capability {
            name: "br_netfilter",
            ok: bridge_nf,
            detail: if bridge_nf {
                "br_netfilter is loaded".into()
            } else {
                "br_netfilter is not loaded: bridged pod traffic skips the firewall (network policy and kube-proxy need it)".into()
            },
            fix: (!bridge_nf).then(|| "`modprobe br_netfilter`".into()),
        });
        match self.ra_default_route_interfaces().await {
            Ok(ifaces) => {
                for iface in ifaces {
                    let key = format!("net/ipv6/conf/{iface}/accept_ra");
                    let all = sysctl::read("net/ipv6/conf/all/accept_ra").ok().flatten();
                    let own = sysctl::read(&key).ok().flatten();
                    let ok = own.as_deref() == Some("2") || all.as_deref() == Some("2");
                    out.push(Capability {
                        name: "ipv6-accept-ra",
                        ok,
                        detail: format!(
                            "the IPv6 default route on {iface} comes from a router advertisement; accept_ra is {}",
                            own.as_deref().unwrap_or("unknown")
                        ),
                        fix: (!ok).then(|| "`sysctl -w net.ipv6.conf.all.accept_ra=2`, or the node drops its default route when forwarding is on".into()),
                    });
                }
            }
            Err(e) => out.push(Capability {
                name: "ipv6-accept-ra",
                ok: false,
                detail: format!("routes could not be read: {e}"),
                fix: None,
            }),
        }
        out
    }

    /// Creates the link of `message` and deletes it again (`ip link add`, `ip link del`).
    pub(crate) async fn probe_link(
        &self,
        message: rtnetlink::packet_route::link::LinkMessage,
        name: &str,
    ) -> Result<(), KernelError> {
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(|e| KernelError::Probe {
                what: name.to_owned(),
                reason: e.to_string(),
            })?;
        let link = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_next()
            .await
            .map_err(|e| KernelError::Probe {
                what: name.to_owned(),
                reason: e.to_string(),
            })?;
        if let Some(link) = link {
            let _ = self.handle.link().del(link.header.index).execute().await;
        }
        Ok(())
    }

    /// Interfaces whose IPv6 default route has protocol `ra`.
    async fn ra_default_route_interfaces(&self) -> Result<Vec<String>, KernelError> {
        let routes = self.dump_routes().await?;
        let links = self.dump_links().await?;
        let mut out = Vec::new();
        for r in &routes {
            let h = &r.header;
            if h.table != RouteHeader::RT_TABLE_MAIN
                || h.destination_prefix_length != 0
                || h.protocol != RouteProtocol::Ra
            {
                continue;
            }
            let oif = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            if let Some(name) = oif
                .and_then(|i| links.iter().find(|l| l.header.index == i))
                .and_then(crate::observe::link_name)
            {
                out.push(name);
            }
        }
        Ok(out)
    }
}

fn result_detail(result: &Result<(), KernelError>, ok: &str) -> String {
    match result {
        Ok(()) => ok.to_owned(),
        Err(e) => e.to_string(),
    }
}

impl fmt::Display for Capability {
    /// `ok   name: detail` or `FAIL name: detail (fix: ...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{status} {}: {}", self.name, self.detail)?;
        if let (false, Some(fix)) = (self.ok, &self.fix) {
            write!(f, " (fix: {fix})")?;
        }
        Ok(())
    }
}
