//! Issue 17: kernel and userspace WireGuard in one cluster (`--vm` only: it needs a kernel with
//! WireGuard).
//!
//! A dual-stack wireguard-native cluster of two nodes: server `n1` on the kernel module
//! (`--wireguard-implementation kernel`), agent `n2` on the userspace device inside its agent
//! (`--wireguard-implementation userspace`). Each node's devices are checked to be of the kind
//! it asked for, and pods on the two exchange TCP both ways over each family: the two
//! implementations are configured alike and speak the same protocol.

use crate::e2e::cluster::{self, Node, Settings};
use crate::e2e::cni::Pod;
use crate::e2e::lab::{Families, Lab, family_name, wait_for};
use crate::e2e::probe::{ping, transfer};
use crate::flags::WireguardImplementation;

use anyhow::ensure;

use super::fabric::check_implementation;

/// How long the two devices may take to complete their first handshake.
const HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(20);

pub(crate) fn run(lab: &Lab<'_>) -> anyhow::Result<()> {
    let families = Families::Dual;
    let segment = lab.segment(0, families)?;
    let settings = Settings::new("wireguard-native", families);
    let mut server = Node::server(lab, "n1", lab.host("n1", &[(&segment, 1)])?, &settings, &[]);
    server.set_arg("--wireguard-implementation", "kernel");
    server.start(lab)?;
    let token = server.token()?;
    let mut agent = Node::agent(
        lab,
        "n2",
        lab.host("n2", &[(&segment, 2)])?,
        &server.url(),
        &token,
    );
    agent.set_arg("--wireguard-implementation", "userspace");
    agent.start(lab)?;
    cluster::wait_converged(lab, &server, &[&agent])?;
    check_implementation(lab, &server, families, WireguardImplementation::Kernel)?;
    check_implementation(lab, &agent, families, WireguardImplementation::Userspace)?;
    lab.step("n1 runs kernel WireGuard, n2 the userspace device");

    let p1 = Pod::add(lab, &server, "p1")?;
    let p2 = Pod::add(lab, &agent, "p2")?;
    for v6 in families.each() {
        let family = family_name(v6);
        let (a, b) = (p1.ip(v6)?, p2.ip(v6)?);
        // The first packets wait for the two devices' handshake (slow where the VM emulates
        // its CPU); from the first answer on, nothing may be lost.
        wait_for(
            &format!("{family}: a first answer from p2"),
            HANDSHAKE,
            || {
                Ok(p1
                    .ns
                    .run("ping", &["-c", "1", "-W", "2", &b.to_string()])
                    .ok()
                    .map(drop))
            },
        )?;
        ping(&p1.ns, b, 3)?;
        ping(&p2.ns, a, 3)?;
        let seen = transfer(lab, &p1.ns, &p2.ns, b)?.peer;
        ensure!(seen == a, "{family}: p2 saw p1's transfer come from {seen}");
        let seen = transfer(lab, &p2.ns, &p1.ns, a)?.peer;
        ensure!(seen == b, "{family}: p1 saw p2's transfer come from {seen}");
        lab.step(format!(
            "{family}: p1 (kernel) <-> p2 (userspace) ping and TCP both ways"
        ));
    }
    p1.delete()?;
    p2.delete()?;
    agent.stop()?;
    server.stop()?;
    Ok(())
}
