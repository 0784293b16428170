//! Issue 8, scenario 4: the egress selector, each mode.
//!
//! Server `n1` and agents `n2` and `n3` (vxlan, IPv4). Each agent node runs a kubelet stand-in
//! on the kubelet port (10250) and another server on port 8081, both on every address, and
//! `n2` has a pod `p2` with a server on port 8080 (all [`responder`]s, which answer with their
//! name and the client's address). `n3` runs its agent with `--kubelet-port 10251`, so it must
//! refuse a dial of port 10250 that the servers, which route the cluster's kubelet port, send
//! it. Requests go through the server's HTTP CONNECT front door with curl and the credentials
//! the server's EgressSelectorConfiguration names, as a kube-apiserver would send them.
//!
//! In `agent`, `pod` and `cluster` mode `n2` rejects (TCP reset) every new connection to those
//! ports that arrives from the network, so a request to it that succeeds went through its
//! tunnel: its agent dialed from the node itself. `n3` has no such rule, so a direct dial to it
//! would succeed: a refusal there can only come from its agent's authorizer. `pod` and `cluster`
//! run on a server without an agent (`--disable-agent`), as issue 8 asks. What each mode must
//! do:
//!
//! | request | agent | pod | cluster |
//! |---|---|---|---|
//! | `n2-ip:10250` | tunnel | tunnel | tunnel |
//! | `n2:10250` (node name) | tunnel to n2's loopback | same | same |
//! | `n2-ip:8081` | refused (direct) | refused (direct) | tunnel |
//! | `p2-ip:8080` | refused (direct) | tunnel | tunnel (p2 reported by n2) |
//! | `n3-ip:10250` | refused by n3 | refused by n3 | tunnel (node IPs, any port) |
//!
//! In `disabled` mode the configuration says `Direct`, no agent opens a tunnel, and no firewall
//! is set: the front door dials `n2-ip:10250` itself, so the kubelet sees the server's address.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, bail, ensure};

use crate::e2e::cluster::{self, Node, Settings};
use crate::e2e::cni::Pod;
use crate::e2e::front::Front;
use crate::e2e::lab::{Daemon, Families, Lab, wait_for};
use crate::e2e::metrics;
use crate::e2e::responder;

use super::Scenario;

/// The egress-selector scenarios.
pub(crate) const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "egress-agent",
        about: "egress-selector-mode agent: kubelets through the tunnels, nothing else",
        run: |lab| run(lab, "agent"),
    },
    Scenario {
        name: "egress-pod",
        about: "egress-selector-mode pod on an agentless server: kubelets and pod CIDRs",
        run: |lab| run(lab, "pod"),
    },
    Scenario {
        name: "egress-cluster",
        about: "egress-selector-mode cluster on an agentless server: node IPs and reported pods",
        run: |lab| run(lab, "cluster"),
    },
    Scenario {
        name: "egress-disabled",
        about: "egress-selector-mode disabled: Direct, no tunnels, the server dials itself",
        run: |lab| run(lab, "disabled"),
    },
];

/// The kubelet port of the cluster.
const KUBELET: u16 = 10250;
/// Another server on the agent nodes' addresses.
const NODE_PORT: u16 = 8081;
/// The server in pod `p2`.
const POD_PORT: u16 = 8080;

/// What a request must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect<'a> {
    /// Answered by this responder, through a tunnel (not from the server's address).
    Tunnel(&'a str),
    /// Refused: curl fails.
    Refused,
}

fn run(lab: &Lab<'_>, mode: &'static str) -> anyhow::Result<()> {
    let families = Families::V4;
    let segment = lab.segment(0, families)?;
    let mut settings = Settings::new("vxlan", families);
    settings
        .extra
        .extend(["--egress-selector-mode".to_owned(), mode.to_owned()]);
    let agentless = matches!(mode, "pod" | "cluster");
    let server_flags: &[&str] = if agentless { &["--disable-agent"] } else { &[] };
    let mut server = Node::server(
        lab,
        "n1",
        lab.host("n1", &[(&segment, 1)])?,
        &settings,
        server_flags,
    );
    server.start(lab)?;
    let token = server.token()?;
    let mut agents = Vec::new();
    for (n, extra) in [(2u8, &[][..]), (3, &["--kubelet-port", "10251"][..])] {
        let name = format!("n{n}");
        let host = lab.host(&name, &[(&segment, n)])?;
        let mut agent = Node::agent(lab, &name, host, &server.url(), &token).with_args(extra);
        agent.start(lab)?;
        agents.push(agent);
    }
    let refs: Vec<&Node> = agents.iter().collect();
    cluster::wait_converged(lab, &server, &refs)?;
    lab.step(format!(
        "{mode} mode: server n1{}, agents n2 and n3 (n3 with --kubelet-port 10251)",
        if agentless { " without an agent" } else { "" }
    ));

    let p2 = Pod::add(lab, &agents[0], "p2")?;
    let mut servers: Vec<Daemon> = Vec::new();
    for agent in &agents {
        let ns = &agent.host.ns;
        servers.push(responder::start(
            lab,
            ns,
            KUBELET,
            &format!("kubelet-{}", agent.name),
        )?);
        servers.push(responder::start(
            lab,
            ns,
            NODE_PORT,
            &format!("node-{}", agent.name),
        )?);
    }
    servers.push(responder::start(lab, &p2.ns, POD_PORT, "pod-p2")?);
    let server_ip = server.host.ip(false)?;
    let (n2, n3, pod) = (
        agents[0].host.ip(false)?,
        agents[1].host.ip(false)?,
        p2.ip(false)?,
    );

    if mode == "disabled" {
        return disabled(lab, &mut server, &agents, n2, server_ip);
    }
    reject_from_network(&agents[0])?;
    lab.step("n2 resets new connections from the network to ports 10250, 8081 and its pods' 8080");
    let front = server.front()?;
    ensure!(
        front.protocol == "HTTPConnect",
        "the egress configuration is {}, not HTTPConnect",
        front.protocol
    );
    let kubelet_n2 = Expect::Tunnel("kubelet-n2");
    let cases = [
        (format!("{n2}:{KUBELET}"), [kubelet_n2; 3]),
        (format!("n2:{KUBELET}"), [kubelet_n2; 3]),
        (
            format!("{n2}:{NODE_PORT}"),
            [Expect::Refused, Expect::Refused, Expect::Tunnel("node-n2")],
        ),
        (
            format!("{pod}:{POD_PORT}"),
            [
                Expect::Refused,
                Expect::Tunnel("pod-p2"),
                Expect::Tunnel("pod-p2"),
            ],
        ),
        (
            format!("{n3}:{KUBELET}"),
            [
                Expect::Refused,
                Expect::Refused,
                Expect::Tunnel("kubelet-n3"),
            ],
        ),
    ];
    let column = match mode {
        "agent" => 0,
        "pod" => 1,
        _ => 2,
    };
    for (target, expect) in &cases {
        check(lab, &server, &front, target, expect[column], server_ip)?;
    }
    drop(servers);
    p2.delete()?;
    for node in agents.iter_mut().rev() {
        node.stop()?;
    }
    server.stop()
}

/// One request through the front door, against what `mode` must do with it.
fn check(
    lab: &Lab<'_>,
    server: &Node,
    front: &Front,
    target: &str,
    expect: Expect<'_>,
    server_ip: IpAddr,
) -> anyhow::Result<()> {
    match expect {
        Expect::Tunnel(name) => {
            // A pod reported in cluster mode reaches the servers' routes a little later.
            let body = wait_for(
                &format!("GET {target} through the front door"),
                Duration::from_secs(15),
                || front.get(lab, &server.host.ns, target).map(Some),
            )?;
            let (who, from) = parse_body(&body)?;
            ensure!(
                who == name,
                "GET {target} was answered by {who}, not {name}"
            );
            ensure!(
                from != server_ip,
                "GET {target} reached {who} from the server's own address {from}: not through a tunnel"
            );
            lab.step(format!(
                "GET {target} via {}: {who}, dialed from {from} (tunnel)",
                server.name
            ));
        }
        Expect::Refused => match front.get(lab, &server.host.ns, target) {
            Ok(body) => bail!(
                "GET {target} should have been refused, but got `{}`",
                body.trim()
            ),
            Err(err) => lab.step(format!(
                "GET {target} via {}: refused ({})",
                server.name,
                curl_error(&err)
            )),
        },
    }
    Ok(())
}

/// `disabled`: a Direct configuration, no tunnel, and the front door dials by itself.
fn disabled(
    lab: &Lab<'_>,
    server: &mut Node,
    agents: &[Node],
    n2: IpAddr,
    server_ip: IpAddr,
) -> anyhow::Result<()> {
    let front = server.front()?;
    ensure!(
        front.protocol == "Direct" && front.url.is_none(),
        "the egress configuration of disabled mode is {front:?}, not Direct"
    );
    lab.step("the EgressSelectorConfiguration says Direct");
    for agent in agents {
        let sessions = metrics::scrape(&agent.host.ns)?.sum("weft_agent_tunnel_sessions", &[]);
        ensure!(
            sessions == 0.0,
            "{} holds {sessions} tunnel sessions in disabled mode",
            agent.name
        );
    }
    let sessions = metrics::scrape(&server.host.ns)?.sum("weft_server_tunnel_sessions", &[]);
    ensure!(
        sessions == 0.0,
        "{} holds {sessions} tunnel sessions in disabled mode",
        server.name
    );
    // The front door as an apiserver given HTTPConnect would use it (with its own client
    // certificate, the only one CONNECT takes): it dials directly.
    let tls = server.dir.join("server/tls");
    let file = |name: &str| tls.join(name).display().to_string();
    let front = Front {
        protocol: "HTTPConnect".to_owned(),
        url: Some("https://127.0.0.1:9345".to_owned()),
        tls: Some([
            file("server-ca.crt"),
            file("client-kube-apiserver.crt"),
            file("client-kube-apiserver.key"),
        ]),
    };
    let target = format!("{n2}:{KUBELET}");
    let body = front.get(lab, &server.host.ns, &target)?;
    let (who, from) = parse_body(&body)?;
    ensure!(
        who == "kubelet-n2" && from == server_ip,
        "GET {target} in disabled mode was answered by {who} from {from}, not by kubelet-n2 from the server's {server_ip}"
    );
    lab.step(format!(
        "no agent opened a tunnel; GET {target}: {who}, dialed from the server's {from} (direct)"
    ));
    server.stop()
}

/// Rejects new TCP connections that reach `node` from the network on the test ports: on its
/// own addresses (input from `eth0`) and to its pods (forwarded, not from `cni0`).
fn reject_from_network(node: &Node) -> anyhow::Result<()> {
    node.host.ns.run(
        "nft",
        &[&format!(
            "add table inet e2e {{ \
             chain to_node {{ type filter hook input priority 0; \
             iifname \"eth0\" ct state new tcp dport {{ 10250, 10251, {NODE_PORT} }} reject with tcp reset; }}; \
             chain to_pods {{ type filter hook forward priority 0; \
             iifname != \"cni0\" ct state new tcp dport {POD_PORT} reject with tcp reset; }}; }}"
        )],
    )?;
    Ok(())
}

/// `(name, client IP)` of a responder's body.
fn parse_body(body: &str) -> anyhow::Result<(&str, IpAddr)> {
    let (who, from) = body
        .trim()
        .split_once(' ')
        .with_context(|| format!("unexpected answer `{}`", body.trim()))?;
    Ok((
        who,
        from.parse().with_context(|| format!("client `{from}`"))?,
    ))
}

/// curl's own message in an error, e.g. `curl: (56) CONNECT tunnel failed, response 502`.
fn curl_error(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    match text.find("curl: (") {
        Some(at) => text[at..].trim().to_owned(),
        None => text,
    }
}

/// Proves that `server`'s front door reaches `agent`'s kubelet through the agent's tunnel:
/// a kubelet stand-in on the agent node, new connections to it from the network reset, and a
/// `GET` of the node IP's kubelet port through the front door answered from the node itself.
pub(crate) fn kubelet_through_tunnel(
    lab: &Lab<'_>,
    server: &Node,
    agent: &Node,
    kubelet: &mut Option<Daemon>,
) -> anyhow::Result<()> {
    if kubelet.is_none() {
        *kubelet = Some(responder::start(
            lab,
            &agent.host.ns,
            KUBELET,
            &format!("kubelet-{}", agent.name),
        )?);
        reject_from_network(agent)?;
    }
    let name = format!("kubelet-{}", agent.name);
    let target = format!("{}:{KUBELET}", agent.host.ip(false)?);
    check(
        lab,
        server,
        &server.front()?,
        &target,
        Expect::Tunnel(&name),
        server.host.ip(false)?,
    )
}
