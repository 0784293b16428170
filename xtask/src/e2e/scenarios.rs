//! The end-to-end scenarios: what `cargo xtask e2e` proves about weft, one named function each.
//!
//! Issue 8 numbers them; the names here map as follows:
//!
//! | issue | scenario | module |
//! |---|---|---|
//! | 1 | `{vxlan,host-gw,wireguard}-{ipv4,dual,ipv6}` | `fabric` |
//! | 2 | `external-ip` | `external_ip` |
//! | 3 | `backend-none` | `backend_none` |
//! | 4 | `egress-agent`, `egress-pod`, `egress-cluster`, `egress-disabled` | `egress` |
//! | 5 | `restart` | `restart` |
//! | 6 | `node-delete` | `node_delete` |
//! | 7 | `ha-etcd` | `ha` |
//! | 8 | `bad-input` | `bad_input` |
//! | 9 | backend switch vxlan → wireguard-native → vxlan | `backend_switch` |
//! | issue 12 | `trust`: a rogue host holding the agent token is refused each attack | `trust` |
//! | issue 13 | `abuse`: slow clients, a flood from one address, a server that never answers | `abuse` |
//! | issue 15 | `flannel-conf`: net-conf.json's vxlan and wireguard options applied | `flannel_conf` |
//! | issue 17 | `wireguard-mixed` (VM lane only: it needs the kernel's WireGuard) | `wireguard_mixed` |
//!
//! The egress tunnel also appears in `backend-none` (the tunnel works without a pod network)
//! and `ha-etcd` (CONNECT through the surviving servers).
//!
//! A scenario is listed only once it can pass.

mod abuse;
mod backend_none;
mod backend_switch;
mod bad_input;
pub(crate) mod egress;
mod external_ip;
pub(crate) mod fabric;
mod flannel_conf;
mod ha;
mod node_delete;
mod restart;
mod trust;
mod wireguard_mixed;

use super::lab::Lab;

/// One scenario.
#[derive(Debug)]
pub(crate) struct Scenario {
    /// The name `--only` takes.
    pub(crate) name: &'static str,
    /// One line on what it proves.
    pub(crate) about: &'static str,
    pub(crate) run: fn(&Lab<'_>) -> anyhow::Result<()>,
}

/// The scenarios besides the fabric matrix, in the order they run.
const OTHERS: &[Scenario] = &[
    Scenario {
        name: "external-ip",
        about: "flannel-external-ip: vxlan goes to the nodes' NATed external IPs through a router",
        run: external_ip::run,
    },
    Scenario {
        name: "backend-none",
        about: "flannel-backend none: agents register, nothing is programmed, no CNI config",
        run: backend_none::run,
    },
    Scenario {
        name: "backend-switch",
        about: "vxlan -> wireguard-native -> vxlan by restarting the server, then the agent",
        run: backend_switch::run,
    },
    Scenario {
        name: "restart",
        about: "agent and server restarts under ping: no packet lost, no kernel object touched",
        run: restart::run,
    },
    Scenario {
        name: "node-delete",
        about: "weft-server node delete: every agent drops the node's routes, neighbours, FDB",
        run: node_delete::run,
    },
    Scenario {
        name: "ha-etcd",
        about: "three servers on etcd, one killed: pods still talk, a new node joins",
        run: ha::run,
    },
    Scenario {
        name: "trust",
        about: "a rogue host with the agent token can't take a node's address or MAC, report others' IPs, start a server; a deleted node's certificate is refused",
        run: trust::run,
    },
    Scenario {
        name: "flannel-conf",
        about: "flannel-conf: VNI 4096, port 4789, MTU 1400, DirectRouting, SubnetMin/Max; WireGuard PSK, port, keepalive, Mode auto",
        run: flannel_conf::run,
    },
    Scenario {
        name: "abuse",
        about: "60 slow TLS clients closed at the header deadline while an agent joins; a flood stops at the per-address cap; an agent leaves a server that never answers within 15 s",
        run: abuse::run,
    },
    Scenario {
        name: "bad-input",
        about: "invalid config, mismatched joining server, wrong agent token: refused, nothing made",
        run: bad_input::run,
    },
];

/// The scenarios that need the kernel's WireGuard, which this machine's kernel may lack: the VM
/// lane runs them (`cargo xtask e2e --vm`); a run on the host takes them only when `--only`
/// names them.
const KERNEL_WIREGUARD: &[Scenario] = &[Scenario {
    name: "wireguard-mixed",
    about: "(VM lane) dual-stack wireguard-native with n1 on the kernel's WireGuard and n2 on the userspace device: pods talk both ways",
    run: wireguard_mixed::run,
}];

/// Every scenario, in the order `cargo xtask e2e` runs them.
pub(crate) fn all() -> Vec<&'static Scenario> {
    fabric::SCENARIOS
        .iter()
        .chain(OTHERS)
        .chain(egress::SCENARIOS)
        .chain(KERNEL_WIREGUARD)
        .collect()
}

/// Whether `scenario` needs the kernel's WireGuard (see [`KERNEL_WIREGUARD`]).
pub(crate) fn needs_kernel_wireguard(scenario: &Scenario) -> bool {
    KERNEL_WIREGUARD.iter().any(|s| s.name == scenario.name)
}
