//! Issue 8, scenario 8: bad input is refused, clearly, and leaves nothing behind.
//!
//! 1. A server with an invalid configuration (a cluster CIDR with host bits, an unknown
//!    backend, a too-large IPv6 service CIDR) exits 1 with an `error: ` line naming each
//!    problem, creates no data dir and programs nothing.
//! 2. A server restarted with different critical settings than the ones it stored exits 1
//!    naming each differing setting.
//! 3. A server joining an etcd-backed cluster with different critical settings is refused,
//!    naming each one, and the cluster keeps its settings.
//! 4. An agent with a wrong token (a token pinning another CA; the right CA with a wrong
//!    secret) is refused: it never appears in `node list` and programs nothing.
//! 5. Where the kernel has no WireGuard, a server told `--wireguard-implementation kernel` for
//!    wireguard-native exits 1 with an error that names the module and the fix.

use std::time::Duration;

use anyhow::{Context, bail, ensure};

use crate::e2e::cluster::{Node, Settings};
use crate::e2e::etcd;
use crate::e2e::inspect;
use crate::e2e::lab::{Families, Host, Lab, wait_for};

/// How long a refused daemon may take to give up.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) fn run(lab: &Lab<'_>) -> anyhow::Result<()> {
    let families = Families::V4;
    let segment = lab.segment(0, families)?;
    let settings = Settings::new("vxlan", families);

    // 1. Invalid configuration.
    let host = lab.host("bad", &[(&segment, 9)])?;
    let mut invalid = Settings::new("bogus", families);
    invalid.cluster_cidr = "198.18.0.1/16".to_owned();
    invalid.service_cidr = "2001:db8:43::/64".to_owned();
    let mut bad = Node::server(lab, "bad", host.clone(), &invalid, &[]);
    let out = refused(lab, &mut bad)?;
    for name in ["cluster-cidr", "flannel-backend", "service-cidr"] {
        ensure!(
            out.lines()
                .any(|l| l.starts_with("error: ") && l.contains(name)),
            "no `error: ` line names {name}:\n{out}"
        );
    }
    ensure!(
        !bad.dir.exists(),
        "the refused server created {}",
        bad.dir.display()
    );
    nothing_programmed(&host)?;
    lab.step("invalid config: exit 1, an error line for each problem, nothing created");

    // 2. A restart with different critical settings.
    let host = lab.host("n1", &[(&segment, 1)])?;
    let mut n1 = Node::server(lab, "n1", host.clone(), &settings, &[]);
    n1.start(lab)?;
    n1.stop()?;
    let mut changed = Settings::new("host-gw", families);
    changed.cluster_cidr = "198.18.0.0/17".to_owned();
    let mut again = Node::server(lab, "n1", host, &changed, &[]);
    let out = refused(lab, &mut again)?;
    names_each(&out, &["cluster-cidr", "flannel-backend"])?;
    lab.step("restart with another cluster-cidr and backend: exit 1 naming both");

    // 3. A server joining an etcd-backed cluster with different critical settings.
    let (_etcd, endpoint) = etcd::start(lab, &segment, 200)?;
    let datastore = ["--datastore-endpoint".to_owned(), endpoint];
    let mut shared = settings.clone();
    shared.extra.extend(datastore.iter().cloned());
    let mut s1 = Node::server(lab, "s1", lab.host("s1", &[(&segment, 11)])?, &shared, &[]);
    s1.start(lab)?;
    let token = s1.token()?;
    let mut other = Settings::new("host-gw", families);
    other.service_cidr = "198.19.0.0/17".to_owned();
    other.extra.extend(datastore.iter().cloned());
    let host = lab.host("s2", &[(&segment, 12)])?;
    let mut s2 = Node::server(lab, "s2", host.clone(), &other, &["--token", &token]);
    let out = refused(lab, &mut s2)?;
    names_each(&out, &["flannel-backend", "service-cidr"])?;
    nothing_programmed(&host)?;
    s1.daemon()?.check_running()?;
    lab.step("a joining server with another backend and service-cidr: refused naming both");

    // 4. Agents with wrong tokens.
    let (ca_hash, secret) = split_token(&token)?;
    let wrong_ca = format!("K10{}::server:{secret}", "0".repeat(ca_hash.len()));
    let wrong_secret = format!("K10{ca_hash}::server:{}", "f".repeat(secret.len().max(8)));
    for (n, (what, bad_token)) in [
        (21u8, ("another CA", wrong_ca)),
        (22, ("a wrong secret", wrong_secret)),
    ] {
        let name = format!("a{n}");
        let host = lab.host(&name, &[(&segment, n)])?;
        let mut agent = Node::agent(lab, &name, host.clone(), &s1.url(), &bad_token);
        agent.spawn(lab)?;
        // Refused: it either exits with an error or keeps failing; either way it never joins.
        let daemon = agent.daemon()?;
        let exited = wait_for(
            &format!("the agent with {what} to give up"),
            REFUSE_TIMEOUT,
            || Ok(daemon.exited()),
        );
        let log = daemon.output();
        match exited {
            Ok(status) if status.success() => {
                bail!("the agent with {what} exited with success:\n{log}")
            }
            Ok(_) => {}
            Err(_) => {
                bail!("the agent with {what} is still running after {REFUSE_TIMEOUT:?}:\n{log}")
            }
        }
        let listed = s1.node_list(lab)?;
        ensure!(
            listed.iter().all(|r| r.name != name),
            "the agent with {what} registered: {listed:?}"
        );
        nothing_programmed(&host)?;
        lab.step(format!(
            "agent with {what}: refused ({})",
            last_error(&log).unwrap_or("no error line")
        ));
    }
    s1.stop()?;

    // 5. Kernel WireGuard where the kernel has none.
    let host = lab.host("wg", &[(&segment, 30)])?;
    if host
        .ns
        .ip(&["link", "add", "wfe-probe", "type", "wireguard"])
        .is_ok()
    {
        host.ns.ip(&["link", "del", "wfe-probe"])?;
        lab.step(
            "this kernel has WireGuard: nothing to refuse for --wireguard-implementation kernel",
        );
        return Ok(());
    }
    let wireguard = Settings::new("wireguard-native", families);
    let mut kernel_only = Node::server(lab, "wg", host.clone(), &wireguard, &[]);
    kernel_only.set_arg("--wireguard-implementation", "kernel");
    let out = refused(lab, &mut kernel_only)?;
    ensure!(
        out.contains("`modprobe wireguard`") && out.contains("wireguard-implementation"),
        "no error names the module and the fix:\n{out}"
    );
    lab.step(format!(
        "--wireguard-implementation kernel without the module: exit 1 ({})",
        last_error(&out).unwrap_or("no error line")
    ));
    Ok(())
}

/// Starts `node`, waits for it to exit, and returns what it printed; an error unless it exits
/// with status 1.
pub(crate) fn refused(lab: &Lab<'_>, node: &mut Node) -> anyhow::Result<String> {
    node.spawn(lab)?;
    let daemon = node.daemon()?;
    let status = daemon
        .wait(REFUSE_TIMEOUT)
        .with_context(|| format!("{} was not refused", daemon.title))?;
    let out = daemon.output();
    ensure!(
        status.code() == Some(1),
        "{} exited with {status}, not 1:\n{out}",
        daemon.title
    );
    node.kill();
    Ok(out)
}

/// An error unless some `error: ` line of `out` names each setting.
fn names_each(out: &str, settings: &[&str]) -> anyhow::Result<()> {
    for name in settings {
        ensure!(
            out.lines()
                .any(|l| (l.starts_with("error: ") || l.contains("ERROR")) && l.contains(name)),
            "no error names {name}:\n{out}"
        );
    }
    Ok(())
}

/// An error if weft made anything in `host`'s namespace.
fn nothing_programmed(host: &Host) -> anyhow::Result<()> {
    let objects = inspect::weft_objects(&host.ns)?;
    ensure!(objects.is_empty(), "{} holds {objects:?}", host.ns);
    Ok(())
}

/// `(ca hash, secret)` of a `K10<ca-hash>::server:<secret>` token.
pub(crate) fn split_token(token: &str) -> anyhow::Result<(&str, &str)> {
    let rest = token
        .strip_prefix("K10")
        .with_context(|| format!("token `{token}` does not start with K10"))?;
    rest.split_once("::server:")
        .with_context(|| format!("token `{token}` has no `::server:`"))
}

/// The last error a daemon reported: an `error: ` line, or an ERROR/WARN log message.
fn last_error(log: &str) -> Option<&str> {
    log.lines()
        .rev()
        .find(|l| l.starts_with("error: ") || l.contains("\"ERROR\"") || l.contains("\"WARN\""))
}
