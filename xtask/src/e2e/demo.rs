//! `cargo xtask demo`: a small weft cluster to look at.
//!
//! Three nodes on one segment, vxlan and dual-stack: a server `n1` (with its embedded agent)
//! and agents `n2`, `n3`, each a network namespace, with two pods per node made by the CNI
//! plugins from the conflist each agent wrote. It prints the nodes with their leases, the pods
//! with their addresses, a matrix of which pod reaches which over IPv4 and IPv6, and the TCP
//! throughput between pods on the first and last node (iperf3), then keeps
//! the cluster up until Enter (or Ctrl-C) so it can be explored with `ip netns exec`; `--once`
//! stops after the tables. Everything is removed at the end, as after an e2e scenario.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::Env;
use super::cluster::{self, NodeRow, Role, Settings};
use super::cni::Pod;
use super::lab::{Families, Lab};
use super::probe::{reachable, throughput};
use crate::flags::Demo;

/// `cargo xtask demo`.
pub(crate) fn run(root: &Path, flags: Demo) -> anyhow::Result<ExitCode> {
    let env = Env::prepare(root, flags.bin_dir.as_deref(), None)?;
    let lab = Lab::new(&env, "demo")?;
    match show(&lab, flags.once) {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => Ok(ExitCode::FAILURE),
        Err(err) => {
            println!("error: {err:#}");
            lab.print_logs();
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Builds the cluster and prints it; true when every pod reaches every other.
fn show(lab: &Lab<'_>, once: bool) -> anyhow::Result<bool> {
    let families = Families::Dual;
    println!();
    println!(
        "starting a three-node weft cluster (vxlan, dual-stack), each node a network namespace"
    );
    let segment = lab.segment(0, families)?;
    let (mut nodes, rows) =
        cluster::start(lab, &segment, &Settings::new("vxlan", families), 2, &[])?;
    let mut pods = Vec::new();
    for node in &nodes {
        for suffix in ["a", "b"] {
            pods.push(Pod::add(lab, node, &format!("{}-{suffix}", node.name))?);
        }
    }

    println!();
    let roles: Vec<(&str, Role)> = nodes.iter().map(|n| (n.name.as_str(), n.role)).collect();
    print!("{}", node_table(&rows, &roles));
    println!();
    print!("{}", pod_table(&pods));
    println!();
    println!("pod-to-pod connectivity (one ping each: 4 = IPv4, 6 = IPv6):");
    let matrix = connectivity(&pods);
    print!(
        "{}",
        render_matrix(
            &pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            &matrix
        )
    );
    let pairs = pods.len() * (pods.len() - 1);
    let full = matrix
        .iter()
        .flatten()
        .filter(|c| **c == Some((true, true)))
        .count();
    println!("{full} of {pairs} pod pairs reach each other over both families");
    let (from, to) = (&pods[0], &pods[pods.len() - 1]);
    for v6 in [false, true] {
        let rate = throughput(lab, &from.ns, &to.ns, to.ip(v6)?)?;
        println!(
            "TCP {} -> {} over {} (iperf3, 1 s): {:.2} Gbit/s",
            from.name,
            to.name,
            super::lab::family_name(v6),
            rate / 1e9
        );
    }

    if !once {
        println!();
        println!("the cluster keeps running; try, as root in another terminal:");
        let (p, q) = (&pods[0], &pods[pods.len() - 1]);
        println!("  ip netns exec {} ping {}", p.ns, q.ip(true)?);
        println!("  ip netns exec {} ip route", nodes[0].host.ns);
        println!(
            "  ip netns exec {} bridge fdb show dev flannel.1",
            nodes[1].host.ns
        );
        println!(
            "  cat {} | jq .plugins[0].ipam",
            nodes[2].conflist().display()
        );
        println!("press Enter to stop and clean up (Ctrl-C cleans up too)");
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading stdin")?;
    }
    println!("stopping");
    for pod in pods {
        pod.delete()?;
    }
    for node in nodes.iter_mut().rev() {
        node.stop()?;
    }
    Ok(full == pairs)
}

/// `matrix[from][to]`: `None` on the diagonal, else whether IPv4 and IPv6 pings came back.
fn connectivity(pods: &[Pod]) -> Vec<Vec<Option<(bool, bool)>>> {
    pods.iter()
        .map(|from| {
            pods.iter()
                .map(|to| {
                    (from.name != to.name).then(|| {
                        let reach = |v6| to.ip(v6).is_ok_and(|ip| reachable(&from.ns, ip));
                        (reach(false), reach(true))
                    })
                })
                .collect()
        })
        .collect()
}

/// The node table: name, role, node IPs and leases.
pub(crate) fn node_table(rows: &[NodeRow], roles: &[(&str, Role)]) -> String {
    let mut lines = vec![vec![
        "NODE".to_owned(),
        "ROLE".to_owned(),
        "NODE-IPS".to_owned(),
        "IPV4-LEASE".to_owned(),
        "IPV6-LEASE".to_owned(),
    ]];
    for row in rows {
        let role = match roles.iter().find(|(n, _)| *n == row.name) {
            Some((_, Role::Server)) => "server",
            Some((_, Role::Agent)) => "agent",
            None => "?",
        };
        lines.push(vec![
            row.name.clone(),
            role.to_owned(),
            row.node_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            row.ipv4_cidr.clone().unwrap_or_else(|| "-".to_owned()),
            row.ipv6_cidr.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    columns(&lines)
}

fn pod_table(pods: &[Pod]) -> String {
    let mut lines = vec![vec![
        "POD".to_owned(),
        "NODE".to_owned(),
        "IPV4".to_owned(),
        "IPV6".to_owned(),
    ]];
    for pod in pods {
        let ip = |v6| {
            pod.ip(v6)
                .map_or_else(|_| "-".to_owned(), |ip| ip.to_string())
        };
        lines.push(vec![
            pod.name.clone(),
            pod.node.clone(),
            ip(false),
            ip(true),
        ]);
    }
    columns(&lines)
}

/// The matrix with a header row of pod names; a cell is `4 6` for both families, `4 -` or
/// `- 6` for one, `- -` for none and `.` on the diagonal.
pub(crate) fn render_matrix(names: &[&str], matrix: &[Vec<Option<(bool, bool)>>]) -> String {
    let mut lines = vec![
        std::iter::once("FROM \\ TO".to_owned())
            .chain(names.iter().map(|n| (*n).to_owned()))
            .collect::<Vec<_>>(),
    ];
    for (name, row) in names.iter().zip(matrix) {
        let mut line = vec![(*name).to_owned()];
        for cell in row {
            line.push(
                match cell {
                    None => ".",
                    Some((true, true)) => "4 6",
                    Some((true, false)) => "4 -",
                    Some((false, true)) => "- 6",
                    Some((false, false)) => "- -",
                }
                .to_owned(),
            );
        }
        lines.push(line);
    }
    columns(&lines)
}

/// Left-aligned columns, two spaces apart, each line indented by two.
pub(crate) fn columns(lines: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..lines.iter().map(Vec::len).max().unwrap_or(0))
        .map(|i| {
            lines
                .iter()
                .filter_map(|l| l.get(i))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str("  ");
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
