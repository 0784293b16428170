//! Issue 8, scenario 7: three servers on a real etcd, one of them killed.
//!
//! etcd (Debian's `etcd-server`) runs in a namespace of its own on the underlay. Servers `s1`,
//! `s2`, `s3` share it (`--datastore-endpoint`, the join token of `s1`); agent `a1` joins
//! through `s1` and `a2` through `s2`. Every node gets a pod, and every pod reaches every other.
//! Then `s1` is killed (SIGKILL): every pod still reaches every other; a new agent `a3` joins
//! through `s3`, and its pod reaches the pods of every node whose agent still runs, which
//! proves that `a1`, whose server died, moved to a surviving server and learned of `a3`.
//! HTTP CONNECT through the front door of each surviving server still reaches the kubelets of
//! `a1` and `a2` through their tunnels.

use anyhow::Context;

use crate::e2e::cluster::{self, Node};
use crate::e2e::cni::Pod;
use crate::e2e::etcd;
use crate::e2e::lab::{Families, Lab};
use crate::e2e::probe::ping;

use super::egress;

pub(crate) fn run(lab: &Lab<'_>) -> anyhow::Result<()> {
    let families = Families::V4;
    let segment = lab.segment(0, families)?;
    let (_etcd, settings) = etcd::cluster(lab, &segment, 200, "vxlan", families)?;
    let mut servers: Vec<Node> = Vec::new();
    for n in 1..=3u8 {
        let name = format!("s{n}");
        let host = lab.host(&name, &[(&segment, n)])?;
        let extra: Vec<String> = match servers.first() {
            None => Vec::new(),
            Some(first) => vec!["--token".to_owned(), first.token()?],
        };
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let mut server = Node::server(lab, &name, host, &settings, &extra);
        server.start(lab)?;
        servers.push(server);
    }
    let token = servers[0].token()?;
    let mut agents = Vec::new();
    for (n, via) in [(11u8, 0usize), (12, 1)] {
        let name = format!("a{}", n - 10);
        let host = lab.host(&name, &[(&segment, n)])?;
        let mut agent = Node::agent(lab, &name, host, &servers[via].url(), &token);
        agent.start(lab)?;
        agents.push(agent);
    }
    let all: Vec<&Node> = servers.iter().chain(&agents).collect();
    cluster::wait_converged(lab, &servers[1], &all)?;
    lab.step("s1, s2, s3 share etcd; a1 joined through s1, a2 through s2");

    let mut pods = Vec::new();
    for node in &all {
        pods.push(Pod::add(lab, node, &format!("p-{}", node.name))?);
    }
    mesh(&pods)?;
    lab.step(format!("{} pods reach each other", pods.len()));

    let mut kubelets = [None, None];
    for (agent, kubelet) in agents.iter().zip(&mut kubelets) {
        egress::kubelet_through_tunnel(lab, &servers[0], agent, kubelet)?;
    }
    servers[0].kill();
    lab.step("s1 killed (SIGKILL)");
    mesh(&pods)?;
    lab.step("every pod still reaches every other");
    for server in &servers[1..] {
        for (agent, kubelet) in agents.iter().zip(&mut kubelets) {
            egress::kubelet_through_tunnel(lab, server, agent, kubelet)?;
        }
    }

    let host = lab.host("a3", &[(&segment, 13)])?;
    let mut a3 = Node::agent(lab, "a3", host, &servers[2].url(), &token);
    a3.start(lab)?;
    let live: Vec<&Node> = servers[1..].iter().chain(&agents).chain([&a3]).collect();
    cluster::wait_converged(lab, &servers[2], &live)
        .context("a node whose server died did not learn of the new node")?;
    let p3 = Pod::add(lab, &a3, "p-a3")?;
    for pod in pods.iter().filter(|p| p.node != "s1") {
        ping(&p3.ns, pod.ip(false)?, 1)?;
        ping(&pod.ns, p3.ip(false)?, 1)?;
    }
    lab.step("a3 joined through s3; its pod reaches the pods of s2, s3, a1 and a2");

    p3.delete()?;
    for pod in pods {
        pod.delete()?;
    }
    a3.stop()?;
    for node in agents.iter_mut().chain(servers[1..].iter_mut()).rev() {
        node.stop()?;
    }
    Ok(())
}

/// Every pod pings every other once.
fn mesh(pods: &[Pod]) -> anyhow::Result<()> {
    for from in pods {
        for to in pods.iter().filter(|p| p.name != from.name) {
            ping(&from.ns, to.ip(false)?, 1)
                .with_context(|| format!("{} -> {}", from.name, to.name))?;
        }
    }
    Ok(())
}
