//! Issue 8, scenario 5: restarts change nothing that is already right.
//!
//! A vxlan dual-stack cluster (server `n1`, agent `n2`) with a pod on each node and a ping each
//! way running ten times a second (IPv4 one way, IPv6 the other). Meanwhile the agent is
//! stopped with SIGTERM and started again, then the server (and its embedded agent). Checked:
//! no ping is lost; each node's weft objects are exactly what they were (the same `flannel.1`
//! and `flannel-v6.1` ifindex, addresses, neighbours, FDB, routes, and nftables rules with the
//! same handles); the restarted daemons' `/metrics` count reconciles and no kernel operation;
//! every lease is kept.

use std::time::Duration;

use anyhow::ensure;

use crate::e2e::cluster::{self, Node, Settings};
use crate::e2e::cni::Pod;
use crate::e2e::inspect;
use crate::e2e::lab::{Families, Lab, wait_for};
use crate::e2e::metrics;
use crate::e2e::probe::Pinger;

/// Pings each way, ten a second: long enough to cover both restarts.
const PINGS: u32 = 100;

/// How long a restarted node may take to reconcile twice (its interval is a second).
const RECONCILED: Duration = Duration::from_secs(10);

pub(crate) fn run(lab: &Lab<'_>) -> anyhow::Result<()> {
    let families = Families::Dual;
    let segment = lab.segment(0, families)?;
    let settings = Settings::new("vxlan", families);
    // A reconcile every second: a restarted agent has checked the kernel well before the
    // comparison.
    let (mut nodes, rows) =
        cluster::start(lab, &segment, &settings, 1, &["--reconcile-interval", "1"])?;
    let p1 = Pod::add(lab, &nodes[0], "p1")?;
    let p2 = Pod::add(lab, &nodes[1], "p2")?;
    let before: Vec<String> = nodes
        .iter()
        .map(|n| inspect::snapshot(&n.host.ns))
        .collect::<anyhow::Result<_>>()?;
    let index_before = inspect::ifindex(&nodes[1].host.ns, "flannel.1")?;

    let pings = [
        Pinger::start(lab, &p1.ns, p2.ip(false)?, PINGS)?,
        Pinger::start(lab, &p2.ns, p1.ip(true)?, PINGS)?,
    ];
    std::thread::sleep(Duration::from_secs(1));
    restart(lab, &mut nodes[1])?;
    lab.step("agent n2 restarted (SIGTERM, start)");
    restart(lab, &mut nodes[0])?;
    lab.step("server n1 restarted (SIGTERM, start)");
    for ping in pings {
        let what = format!("{ping:?}");
        let sent = ping.finish()?;
        lab.step(format!("{what}: {sent} of {sent} answered"));
    }

    for (node, before) in nodes.iter().zip(&before) {
        let after = inspect::snapshot(&node.host.ns)?;
        ensure!(
            after == *before,
            "{}'s weft objects changed across the restarts:\n--- before\n{before}\n--- after\n{after}",
            node.name
        );
    }
    let index_after = inspect::ifindex(&nodes[1].host.ns, "flannel.1")?;
    ensure!(index_after == index_before, "n2's flannel.1 was recreated");
    lab.step(format!(
        "kernel unchanged on both nodes (n2's flannel.1 is still ifindex {index_after})"
    ));
    let after = nodes[0].node_list(lab)?;
    ensure!(
        after == rows,
        "the leases changed across the restarts: {rows:?} became {after:?}"
    );
    lab.step("every lease kept");
    p1.delete()?;
    p2.delete()?;
    for node in nodes.iter_mut().rev() {
        node.stop()?;
    }
    Ok(())
}

/// Stops `node` with SIGTERM, starts it again, and checks the new process reconciled without
/// changing anything: its `/metrics` count full reconciles past the first (one interval has
/// passed) and no kernel operation applied.
fn restart(lab: &Lab<'_>, node: &mut Node) -> anyhow::Result<()> {
    node.stop()?;
    node.start(lab)?;
    let ns = node.host.ns.clone();
    let what = format!("{} to reconcile twice since its restart", node.name);
    let daemon = node.daemon()?;
    let reconciles = wait_for(&what, RECONCILED, || {
        daemon.check_running()?;
        let scrape = metrics::scrape(&ns)?;
        let ok = scrape.sum("weft_agent_reconciles_total", &[("result", "ok")]);
        Ok((ok >= 2.0).then_some(scrape))
    })?;
    let applied = reconciles.sum("weft_agent_reconcile_operations_total", &[]);
    let failed = reconciles.sum("weft_agent_reconciles_total", &[("result", "error")]);
    ensure!(
        applied == 0.0 && failed == 0.0,
        "{} changed the kernel after its restart: {applied} operations applied, {failed} reconciles failed",
        node.name
    );
    Ok(())
}
