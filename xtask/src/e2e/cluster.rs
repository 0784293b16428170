//! weft servers and agents in host namespaces, and what the tests read back from them: node
//! lists, logs and the kernel objects their agents program.
//!
//! A [`Node`] is one `weft-server` (with its embedded agent unless `--disable-agent`) or one
//! `weft-agent`, with its own data dir, `subnet.env` and CNI config dir under the lab's
//! directory, `--log-format json` so its log can be read back, and an empty `--config`. The
//! cluster's settings ([`Settings`]) are given to every server; flannel settings never go to
//! agents, which take them from the servers.

use std::fmt;
use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use super::lab::{Daemon, Families, Host, Lab, wait_for};
use super::metrics;

/// How long a daemon may take to come up.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The pod network of every test cluster: only test and documentation ranges.
pub(crate) const CLUSTER_V4: &str = "198.18.0.0/16";
pub(crate) const SERVICE_V4: &str = "198.19.0.0/16";
pub(crate) const CLUSTER_V6: &str = "2001:db8:42::/56";
pub(crate) const SERVICE_V6: &str = "2001:db8:43::/112";

/// The cluster-wide settings every server of a test cluster gets.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) backend: &'static str,
    pub(crate) families: Families,
    /// `--cluster-cidr`: the test ranges of the families unless changed.
    pub(crate) cluster_cidr: String,
    /// `--service-cidr`: the test ranges of the families unless changed.
    pub(crate) service_cidr: String,
    /// More server flags (e.g. `--flannel-external-ip`).
    pub(crate) extra: Vec<String>,
}

/// A server or an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Server,
    Agent,
}

/// One weft daemon on a host.
pub(crate) struct Node {
    /// The node name.
    pub(crate) name: String,
    pub(crate) host: Host,
    pub(crate) role: Role,
    /// `--data-dir`.
    pub(crate) dir: PathBuf,
    bin: PathBuf,
    args: Vec<String>,
    /// Whether it runs an agent (servers do unless `--disable-agent`).
    pub(crate) agent: bool,
    daemon: Option<Daemon>,
}

/// One row of `weft-server node list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeRow {
    pub(crate) name: String,
    pub(crate) node_ips: Vec<IpAddr>,
    pub(crate) ipv4_cidr: Option<String>,
    pub(crate) ipv6_cidr: Option<String>,
}

// === impl Settings ===

impl Settings {
    pub(crate) fn new(backend: &'static str, families: Families) -> Settings {
        let pick = |v4: &str, v6: &str| match families {
            Families::V4 => v4.to_owned(),
            Families::V6 => v6.to_owned(),
            Families::Dual => format!("{v4},{v6}"),
        };
        Settings {
            backend,
            families,
            cluster_cidr: pick(CLUSTER_V4, CLUSTER_V6),
            service_cidr: pick(SERVICE_V4, SERVICE_V6),
            extra: Vec::new(),
        }
    }

    /// The server flags: the CIDRs, the backend, IPv6 masquerade when there is IPv6 (except
    /// with backend `none`, where it means nothing), and the extras.
    pub(crate) fn flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--cluster-cidr".to_owned(),
            self.cluster_cidr.clone(),
            "--service-cidr".to_owned(),
            self.service_cidr.clone(),
            "--flannel-backend".to_owned(),
            self.backend.to_owned(),
        ];
        if self.families.v6() && self.backend != "none" {
            flags.push("--flannel-ipv6-masq".to_owned());
        }
        flags.extend(self.extra.iter().cloned());
        flags
    }
}

// === impl Node ===

impl Node {
    /// A server on `host` (not started) with the cluster `settings` and more flags.
    pub(crate) fn server(
        lab: &Lab<'_>,
        name: &str,
        host: Host,
        settings: &Settings,
        extra: &[&str],
    ) -> Node {
        let mut node = Node::common(lab, name, host, Role::Server);
        node.args.extend(settings.flags());
        node.args.extend(extra.iter().map(|s| (*s).to_owned()));
        node.agent = !extra.contains(&"--disable-agent");
        node
    }

    /// An agent on `host` (not started) that joins through `server` with `token`.
    pub(crate) fn agent(lab: &Lab<'_>, name: &str, host: Host, server: &str, token: &str) -> Node {
        let mut node = Node::common(lab, name, host, Role::Agent);
        node.args
            .extend(["--server", server, "--token", token].map(str::to_owned));
        node
    }

    fn common(lab: &Lab<'_>, name: &str, host: Host, role: Role) -> Node {
        let dir = lab.dir.join(name);
        let ips: Vec<String> = host.ips.iter().map(ToString::to_string).collect();
        let args = vec![
            "--config".to_owned(),
            lab.config_file().display().to_string(),
            "--data-dir".to_owned(),
            dir.display().to_string(),
            "--node-name".to_owned(),
            name.to_owned(),
            "--node-ip".to_owned(),
            ips.join(","),
            "--flannel-iface".to_owned(),
            "eth0".to_owned(),
            "--subnet-file".to_owned(),
            dir.join("subnet.env").display().to_string(),
            "--log-format".to_owned(),
            "json".to_owned(),
        ];
        let args = match lab.env.wireguard {
            Some(implementation) => {
                let mut args = args;
                args.extend([
                    "--wireguard-implementation".to_owned(),
                    implementation.as_str().to_owned(),
                ]);
                args
            }
            None => args,
        };
        let bin = match role {
            Role::Server => lab.env.server.clone(),
            Role::Agent => lab.env.agent.clone(),
        };
        Node {
            name: name.to_owned(),
            host,
            role,
            dir,
            bin,
            args,
            agent: true,
            daemon: None,
        }
    }

    /// Sets `flag`'s value in the daemon's arguments for its next start (adding the flag when
    /// it is not there).
    pub(crate) fn set_arg(&mut self, flag: &str, value: &str) {
        match self.args.iter().position(|a| a == flag) {
            Some(i) if i + 1 < self.args.len() => self.args[i + 1] = value.to_owned(),
            _ => self.args.extend([flag.to_owned(), value.to_owned()]),
        }
    }

    /// Adds flags before the node starts (or for its next start).
    pub(crate) fn with_args(mut self, args: &[&str]) -> Node {
        self.args.extend(args.iter().map(|s| (*s).to_owned()));
        self
    }

    /// Starts the daemon and waits until it is up: its `/readyz` answers 200 (a server: the
    /// store open and the API serving; an agent, embedded or not: joined and the kernel
    /// reconciled since it started).
    pub(crate) fn start(&mut self, lab: &Lab<'_>) -> anyhow::Result<()> {
        self.spawn(lab)?;
        let daemon = self.daemon.as_mut().context("not started")?;
        let ns = &self.host.ns;
        wait_for(
            &format!("{} to be ready (/readyz)", daemon.title),
            START_TIMEOUT,
            || {
                daemon.check_running()?;
                Ok(metrics::ready(ns).then_some(()))
            },
        )
    }

    /// Starts the daemon without waiting for anything.
    pub(crate) fn spawn(&mut self, lab: &Lab<'_>) -> anyhow::Result<()> {
        if self.daemon.is_some() {
            bail!("{} is already running", self.title());
        }
        let daemon = lab.spawn(&self.host.ns, &self.title(), &self.bin, &self.args)?;
        self.daemon = Some(daemon);
        Ok(())
    }

    /// Stops the daemon with SIGTERM; an error unless it exits with success.
    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut daemon) = self.daemon.take() else {
            return Ok(());
        };
        let status = daemon.stop()?;
        if !status.success() {
            bail!("{} exited with {status} on SIGTERM", daemon.title);
        }
        Ok(())
    }

    /// Kills the daemon (SIGKILL): a crash.
    pub(crate) fn kill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill();
        }
    }

    /// The running daemon.
    pub(crate) fn daemon(&mut self) -> anyhow::Result<&mut Daemon> {
        self.daemon
            .as_mut()
            .with_context(|| format!("{} is not running", self.name))
    }

    /// `weft-server on n1`, the log's title.
    pub(crate) fn title(&self) -> String {
        let bin = match self.role {
            Role::Server => "weft-server",
            Role::Agent => "weft-agent",
        };
        format!("{bin} on {}", self.name)
    }

    /// `https://<first node IP>:9345`.
    pub(crate) fn url(&self) -> String {
        match self.host.ips.first() {
            Some(IpAddr::V6(ip)) => format!("https://[{ip}]:9345"),
            Some(ip) => format!("https://{ip}:9345"),
            None => "https://missing-address:9345".to_owned(),
        }
    }

    /// The join token a server wrote.
    pub(crate) fn token(&self) -> anyhow::Result<String> {
        let path = self.dir.join("server").join("token");
        Ok(fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_owned())
    }

    /// Where the agent writes its CNI conflist.
    pub(crate) fn conflist(&self) -> PathBuf {
        self.dir
            .join("agent/etc/cni/net.d")
            .join("10-weft.conflist")
    }

    /// Where the agent writes `subnet.env`.
    pub(crate) fn subnet_file(&self) -> PathBuf {
        self.dir.join("subnet.env")
    }

    /// `weft-server node list` on this server, parsed.
    pub(crate) fn node_list(&self, lab: &Lab<'_>) -> anyhow::Result<Vec<NodeRow>> {
        let out = self.server_command(lab, &["node", "list"], &[])?;
        parse_node_list(&out)
    }

    /// `weft-server SUBCOMMAND... <this server's flags> EXTRA...` in this server's namespace;
    /// returns stdout.
    pub(crate) fn server_command(
        &self,
        lab: &Lab<'_>,
        subcommand: &[&str],
        extra: &[&str],
    ) -> anyhow::Result<String> {
        if self.role != Role::Server {
            bail!("{} is not a server", self.name);
        }
        super::lab::read(
            self.host
                .ns
                .exec(&lab.dir, &self.bin)
                .args(subcommand)
                .args(&self.args)
                .args(extra),
        )
    }
}

impl Node {
    /// `weft-agent SUBCOMMAND... <this agent's flags>` in this agent's namespace; returns
    /// stdout and stderr.
    pub(crate) fn agent_command(
        &self,
        lab: &Lab<'_>,
        subcommand: &[&str],
    ) -> anyhow::Result<std::process::Output> {
        if self.role != Role::Agent {
            bail!("{} is not an agent", self.name);
        }
        self.host
            .ns
            .exec(&lab.dir, &self.bin)
            .args(subcommand)
            .args(&self.args)
            .output(None)
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.title())
    }
}

/// Parses `weft-server node list`: a header, then `NAME NODE-IPS IPV4-CIDR IPV6-CIDR` rows with
/// `-` for none.
pub(crate) fn parse_node_list(text: &str) -> anyhow::Result<Vec<NodeRow>> {
    let mut lines = text.lines();
    match lines.next() {
        Some(header) if header.starts_with("NAME") => {}
        other => bail!("`node list` printed no header but {other:?}"),
    }
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let [name, ips, v4, v6] = cols[..] else {
                bail!("`node list` row `{line}` does not have 4 columns");
            };
            let cidr = |s: &str| (s != "-").then(|| s.to_owned());
            Ok(NodeRow {
                name: name.to_owned(),
                node_ips: ips
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|ip| ip.parse().with_context(|| format!("node IP `{ip}`")))
                    .collect::<anyhow::Result<_>>()?,
                ipv4_cidr: cidr(v4),
                ipv6_cidr: cidr(v6),
            })
        })
        .collect()
}

// === impl NodeRow ===

impl NodeRow {
    /// The pod CIDRs of the row.
    pub(crate) fn cidrs(&self) -> Vec<&str> {
        self.ipv4_cidr
            .iter()
            .chain(self.ipv6_cidr.iter())
            .map(String::as_str)
            .collect()
    }
}

/// Waits until every node in `nodes` that runs an agent has a path to every other listed
/// node's pod CIDRs ([`has_path`]), as `node list` on `server` shows them, and until every node is listed.
pub(crate) fn wait_converged(
    lab: &Lab<'_>,
    server: &Node,
    nodes: &[&Node],
) -> anyhow::Result<Vec<NodeRow>> {
    let rows = wait_listed(lab, server, nodes)?;
    for node in nodes.iter().filter(|n| n.agent) {
        for peer in rows.iter().filter(|r| r.name != node.name) {
            if !nodes.iter().any(|n| n.name == peer.name) {
                continue;
            }
            for cidr in peer.cidrs() {
                wait_for(
                    &format!("a path to {} ({cidr}) on {}", peer.name, node.name),
                    START_TIMEOUT,
                    || Ok(has_path(node, cidr)?.then_some(())),
                )?;
            }
        }
    }
    Ok(rows)
}

/// Waits until `node list` on `server` shows every node in `nodes`; returns every row.
pub(crate) fn wait_listed(
    lab: &Lab<'_>,
    server: &Node,
    nodes: &[&Node],
) -> anyhow::Result<Vec<NodeRow>> {
    wait_for("every node in `node list`", START_TIMEOUT, || {
        let rows = server.node_list(lab)?;
        let all = nodes.iter().all(|n| rows.iter().any(|r| r.name == n.name));
        Ok(all.then_some(rows))
    })
}

/// Whether `node` has programmed a path to a peer's pod CIDR: a route to exactly it (vxlan,
/// host-gw), or a WireGuard peer whose allowed IPs hold it (wireguard-native, whose one route
/// covers the whole cluster).
pub(crate) fn has_path(node: &Node, cidr: &str) -> anyhow::Result<bool> {
    let v6 = cidr.contains(':');
    // The family's device, or with one device for both (wireguard Mode auto, ipv4, ipv6)
    // flannel-wg.
    for dev in [
        super::inspect::wireguard_dev(v6),
        super::inspect::wireguard_dev(false),
    ] {
        if node.host.ns.ip(&["link", "show", dev]).is_ok() {
            let peers = super::inspect::wireguard_peers(node, dev)?;
            return Ok(peers
                .iter()
                .any(|p| p.allowed_ips.iter().any(|a| a == cidr)));
        }
    }
    let family = if v6 { "-6" } else { "-4" };
    let out = node.host.ns.ip(&[family, "route", "show", "exact", cidr])?;
    Ok(!out.trim().is_empty())
}

/// The row of `name`.
pub(crate) fn row<'r>(rows: &'r [NodeRow], name: &str) -> anyhow::Result<&'r NodeRow> {
    rows.iter()
        .find(|r| r.name == name)
        .with_context(|| format!("{name} is not in `node list`"))
}

/// Starts a cluster on `segment`: server `n1` (host 1) and agents `n2`, `n3`, ... (hosts 2, 3,
/// ...), each with `extra` flags, and waits until every agent routes to every other node.
pub(crate) fn start(
    lab: &Lab<'_>,
    segment: &super::lab::Segment,
    settings: &Settings,
    agents: u8,
    extra: &[&str],
) -> anyhow::Result<(Vec<Node>, Vec<NodeRow>)> {
    let host = lab.host("n1", &[(segment, 1)])?;
    let mut server = Node::server(lab, "n1", host, settings, extra);
    server.start(lab)?;
    let token = server.token()?;
    let mut nodes = vec![server];
    for n in 2..agents + 2 {
        let name = format!("n{n}");
        let host = lab.host(&name, &[(segment, n)])?;
        let mut agent = Node::agent(lab, &name, host, &nodes[0].url(), &token).with_args(extra);
        agent.start(lab)?;
        nodes.push(agent);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    let rows = if settings.backend == "none" {
        wait_listed(lab, &nodes[0], &refs)?
    } else {
        wait_converged(lab, &nodes[0], &refs)?
    };
    for row in &rows {
        lab.step(format!(
            "node {}: {} pod CIDRs {}",
            row.name,
            row.node_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            row.cidrs().join(",")
        ));
    }
    Ok((nodes, rows))
}
