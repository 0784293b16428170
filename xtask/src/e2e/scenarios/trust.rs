//! Issue 12: trust. A node speaks only for itself, and every credential can expire and be
//! revoked.
//!
//! A vxlan IPv4 cluster: server `n1`, agents `n2` and `n3` joined with the agent token, a
//! kubelet stand-in on each agent node (it answers with its name, so the test learns which node
//! a request reached), and a fourth host, `rogue`, that holds only the agent token. What the
//! rogue host tries, and what must happen:
//!
//! | attack | outcome |
//! |---|---|
//! | an agent `a-rogue` with `--node-ip` set to n2's address | refused (exit 1, the 409 line naming n2); the front door still reaches n2's kubelet |
//! | an agent `z-rogue` with a copy of n2's `vtep-macs.json` | refused the same way; n3's FDB entry for n2's VTEP MAC still points at n2 |
//! | `PUT /v1-weft/pods` with n2's certificate, listing n1's node IP | HTTP 422 |
//! | a server started with the agent token | refused |
//!
//! Then n3 is taken out of service and deleted: its certificate gets 401 from
//! `/v1-weft/leases`. Every certificate but the CA's is valid for a year at most, the CA's for
//! ten (`weft-server certificate check`), and the admin certificate opens no CONNECT.

use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};

use crate::e2e::cluster::{self, Node, Settings};
use crate::e2e::front::Front;
use crate::e2e::inspect;
use crate::e2e::lab::{Daemon, Families, Lab, Ns};
use crate::e2e::responder;

use super::bad_input::refused;

/// The kubelet port of the cluster.
const KUBELET: u16 = 10250;

pub(crate) fn run(lab: &Lab<'_>) -> anyhow::Result<()> {
    let families = Families::V4;
    let segment = lab.segment(0, families)?;
    let settings = Settings::new("vxlan", families);
    let mut server = Node::server(lab, "n1", lab.host("n1", &[(&segment, 1)])?, &settings, &[]);
    server.start(lab)?;
    let agent_token = agent_token(&server)?;
    ensure!(
        agent_token.contains("::node:"),
        "the agent token `{agent_token}` is not K10<hash>::node:<secret>"
    );
    let mut agents = Vec::new();
    for n in [2u8, 3] {
        let name = format!("n{n}");
        let host = lab.host(&name, &[(&segment, n)])?;
        let mut agent = Node::agent(lab, &name, host, &server.url(), &agent_token);
        agent.start(lab)?;
        agents.push(agent);
    }
    let refs: Vec<&Node> = agents.iter().collect();
    cluster::wait_converged(lab, &server, &refs)?;
    let mut kubelets: Vec<Daemon> = Vec::new();
    for agent in &agents {
        kubelets.push(responder::start(
            lab,
            &agent.host.ns,
            KUBELET,
            &format!("kubelet-{}", agent.name),
        )?);
    }
    lab.step("server n1, agents n2 and n3 joined with the agent token, kubelet stand-ins");

    let front = server.front()?;
    let n2_ip = agents[0].host.ip(false)?;
    let kubelet_of = |ip: IpAddr| -> anyhow::Result<String> {
        let body = front.get(lab, &server.host.ns, &format!("{ip}:{KUBELET}"))?;
        Ok(body
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned())
    };
    ensure!(
        kubelet_of(n2_ip)? == "kubelet-n2",
        "n2's kubelet is not n2's"
    );
    let n2_mac = vtep_mac(&agents[0].dir)?;
    let fdb_before = fdb_dst(&agents[1].host.ns, &n2_mac)?;
    ensure!(
        fdb_before == Some(n2_ip),
        "n3's FDB entry for n2's MAC {n2_mac} is {fdb_before:?}, not n2's address"
    );

    // The rogue host: the agent token and nothing else.
    let rogue_host = lab.host("rogue", &[(&segment, 9)])?;

    // 1. n2's address.
    let n2_ip_text = n2_ip.to_string();
    let mut rogue = Node::agent(
        lab,
        "a-rogue",
        rogue_host.clone(),
        &server.url(),
        &agent_token,
    );
    rogue.set_arg("--node-ip", &n2_ip_text);
    let out = refused(lab, &mut rogue)?;
    let want = format!(
        "{n2_ip} is already node n2's address; give this node its own --node-ip, or delete n2 first"
    );
    ensure!(out.contains(&want), "a-rogue was not told `{want}`:\n{out}");
    ensure!(
        kubelet_of(n2_ip)? == "kubelet-n2",
        "n2's kubelet is answered by another node"
    );
    lab.step("a-rogue with n2's --node-ip: refused (409 naming n2), n2's kubelet still answers");

    // 2. A copy of n2's vtep-macs.json.
    let mut rogue = Node::agent(
        lab,
        "z-rogue",
        rogue_host.clone(),
        &server.url(),
        &agent_token,
    );
    let copied = rogue.dir.join("agent").join("vtep-macs.json");
    fs::create_dir_all(copied.parent().context("a parent")?)?;
    fs::copy(agents[0].dir.join("agent").join("vtep-macs.json"), &copied)
        .context("copying n2's vtep-macs.json")?;
    let out = refused(lab, &mut rogue)?;
    let want = format!("VTEP MAC {n2_mac} is already node n2's");
    ensure!(out.contains(&want), "z-rogue was not told `{want}`:\n{out}");
    std::thread::sleep(Duration::from_secs(1));
    let fdb_after = fdb_dst(&agents[1].host.ns, &n2_mac)?;
    ensure!(
        fdb_after == Some(n2_ip),
        "n3's FDB entry for n2's MAC now points at {fdb_after:?}"
    );
    let listed = server.node_list(lab)?;
    ensure!(
        listed.iter().all(|r| !r.name.contains("rogue")),
        "a rogue node is listed: {listed:?}"
    );
    lab.step("z-rogue with n2's VTEP MAC: refused, n3's FDB entry for it still points at n2");

    // 3. A pod report outside the lease.
    let n2_creds = Credentials::read(&agents[0].dir, lab, "n2")?;
    let server_ip = server.host.ip(false)?;
    let report = format!(r#"{{"pods":[{{"id":"rogue","ips":["{server_ip}"]}}]}}"#);
    let status = n2_creds.status(
        lab,
        &rogue_host.ns,
        &server.url(),
        "PUT",
        "/v1-weft/pods",
        Some(&report),
    )?;
    ensure!(
        status == 422,
        "n2's pod report of {server_ip} got HTTP {status}, not 422"
    );
    lab.step(format!(
        "PUT /v1-weft/pods with n2's certificate listing {server_ip}: 422"
    ));

    // 4. The agent token starts no server.
    let mut impostor = Node::server(lab, "s-rogue", rogue_host.clone(), &settings, &[])
        .with_args(&["--token", &agent_token]);
    let out = refused(lab, &mut impostor)?;
    ensure!(
        out.contains("is an agent token"),
        "a server started with the agent token was not refused for it:\n{out}"
    );
    lab.step("weft-server --token <agent token>: refused");

    // 5. A deleted node's certificate.
    let n3_creds = Credentials::read(&agents[1].dir, lab, "n3")?;
    let leases = |creds: &Credentials| {
        creds.status(
            lab,
            &rogue_host.ns,
            &server.url(),
            "GET",
            "/v1-weft/leases",
            None,
        )
    };
    ensure!(
        leases(&n3_creds)? == 200,
        "n3's certificate can't read leases"
    );
    agents[1].stop()?;
    server.server_command(lab, &["node", "delete", "n3"], &[])?;
    let status = leases(&n3_creds)?;
    ensure!(
        status == 401,
        "n3's certificate got HTTP {status} after the delete, not 401"
    );
    lab.step("n3 deleted: its certificate gets 401 from /v1-weft/leases");

    // 6. Lifetimes, and one certificate for one job.
    for node in [&server, &agents[0]] {
        let out = server.server_command(
            lab,
            &["certificate", "check"],
            &["--data-dir", &node.dir.display().to_string()],
        )?;
        certificate_lifetimes(&out).with_context(|| format!("certificates of {}", node.name))?;
    }
    let admin = Front {
        tls: front.tls.clone().map(|[ca, _, _]| {
            let tls = server.dir.join("server").join("tls");
            [
                ca,
                tls.join("client-admin.crt").display().to_string(),
                tls.join("client-admin.key").display().to_string(),
            ]
        }),
        ..front.clone()
    };
    ensure!(
        admin
            .get(lab, &server.host.ns, &format!("{n2_ip}:{KUBELET}"))
            .is_err(),
        "the admin certificate opened a CONNECT"
    );
    lab.step("certificates: CA 10 years, the rest at most 365 days; the admin's opens no CONNECT");

    ensure!(
        kubelet_of(n2_ip)? == "kubelet-n2",
        "n2's kubelet is answered by another node"
    );
    for mut kubelet in kubelets {
        kubelet.kill();
    }
    agents[0].stop()?;
    server.stop()?;
    Ok(())
}

/// Checks `weft-server certificate check`'s lines: the CA's valid for about ten years, every
/// other certificate for at most a year, none expired.
fn certificate_lifetimes(out: &str) -> anyhow::Result<()> {
    let mut seen = 0;
    for line in out.lines().filter(|l| l.contains(": certificate ")) {
        let days: i64 = line
            .rsplit_once(" (")
            .and_then(|(_, tail)| tail.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no days left in `{line}`"))?;
        ensure!(line.contains("is ok, expires at"), "not ok: {line}");
        let limit = if line.starts_with("server-ca.crt") || line.contains("/server-ca.crt") {
            3653
        } else {
            365
        };
        ensure!(days <= limit, "{days} days left, more than {limit}: {line}");
        seen += 1;
    }
    ensure!(seen > 0, "no certificate listed:\n{out}");
    Ok(())
}

/// The agent token a server wrote.
fn agent_token(server: &Node) -> anyhow::Result<String> {
    let path = server.dir.join("server").join("agent-token");
    Ok(fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_owned())
}

/// The IPv4 VTEP MAC an agent keeps in its data dir.
fn vtep_mac(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("agent").join("vtep-macs.json");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let macs: serde_json::Value = serde_json::from_str(&text)?;
    macs["ipv4"]
        .as_str()
        .map(str::to_lowercase)
        .with_context(|| format!("no ipv4 MAC in {}", path.display()))
}

/// Where `ns`'s IPv4 VTEP sends frames for `mac`.
fn fdb_dst(ns: &Ns, mac: &str) -> anyhow::Result<Option<IpAddr>> {
    let dev = inspect::vxlan_dev(false);
    let out = ns.run("bridge", &["fdb", "show", "dev", dev])?;
    Ok(out
        .lines()
        .filter(|l| l.to_lowercase().starts_with(mac))
        .find_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "dst")?;
            words.next()?.parse().ok()
        }))
}

/// A node's certificate and key, as PEM files for curl.
struct Credentials {
    ca: String,
    cert: String,
    key: String,
}

impl Credentials {
    /// Writes the credentials an agent saved (`<data-dir>/agent/credentials.json`) as PEM files
    /// in the lab's directory, named after `name`.
    fn read(dir: &Path, lab: &Lab<'_>, name: &str) -> anyhow::Result<Credentials> {
        let path = dir.join("agent").join("credentials.json");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)?;
        let mut files = Vec::new();
        for (field, suffix) in [
            ("ca-pem", "ca.crt"),
            ("cert-pem", "crt"),
            ("key-pem", "key"),
        ] {
            let pem = json[field]
                .as_str()
                .with_context(|| format!("no {field} in {}", path.display()))?;
            let file = lab.dir.join(format!("{name}-stolen.{suffix}"));
            fs::write(&file, pem)?;
            files.push(file.display().to_string());
        }
        let [ca, cert, key] =
            <[String; 3]>::try_from(files).map_err(|_| anyhow::anyhow!("three PEM files"))?;
        Ok(Credentials { ca, cert, key })
    }

    /// The HTTP status of `METHOD URL PATH` with these credentials, sent with curl from `ns`.
    fn status(
        &self,
        lab: &Lab<'_>,
        ns: &Ns,
        url: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<u16> {
        let mut cmd = ns.exec(&lab.dir, "curl");
        cmd = cmd
            .args(["--silent", "--max-time", "5", "--output", "/dev/null"])
            .args(["--write-out", "%{http_code}", "--request", method])
            .args([
                "--cacert", &self.ca, "--cert", &self.cert, "--key", &self.key,
            ]);
        if let Some(body) = body {
            cmd = cmd
                .args(["--header", "content-type: application/json"])
                .args(["--data", body]);
        }
        let out = crate::e2e::lab::read(cmd.arg(format!("{url}{path}")))?;
        out.trim()
            .parse()
            .with_context(|| format!("curl printed `{out}`, not a status"))
    }
}
