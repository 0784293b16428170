//! Issue 13: hostile and broken peers. Every connection to a server has a deadline and every
//! source address a cap, and an agent leaves a server that accepts and never answers.
//!
//! A vxlan IPv4 cluster on etcd: servers `s1` (`--max-connections-per-address 50`) and `s2`
//! (the defaults), and hosts `slow` and `flood` that hold nothing but a TCP stack. Checked:
//!
//! | case | outcome |
//! |---|---|
//! | 60 TLS clients from `slow` send half a request line to `s2` and wait | each is closed 10 s after its handshake (the header deadline), and `s2`'s `/metrics` counts them, while agent `a1` joins through `s2` and its pod pings `s2`'s |
//! | 200 TCP connections from `flood` to `s1` | 50 are held and 150 closed at once; `a1`'s address is still served, and `s1`'s `/metrics` counts the 150 |
//! | `s1` frozen (SIGSTOP: the kernel still accepts its TCP connections, nothing answers), `s2` killed and started again | `a1`, which knows both servers, moves on from `s1` within 15 s each time it tries it, and learns of a new node `a3` once `s2` is back |

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::cmd::cmd;
use crate::e2e::cluster::{self, Node};
use crate::e2e::cni::Pod;
use crate::e2e::etcd;
use crate::e2e::lab::{Families, Lab, Ns, patience, run as run_cmd, wait_for};
use crate::e2e::metrics;
use crate::e2e::probe::ping;

/// The slow clients.
const SLOW_CLIENTS: usize = 60;
/// `s1`'s `--max-connections-per-address`.
const PER_ADDRESS: usize = 50;
/// The connections of the flood.
const FLOOD: usize = 200;
/// The servers' header deadline (weft-api's `ServeLimits` default).
const HEADER_DEADLINE: Duration = Duration::from_secs(10);
/// How soon an agent leaves a server that accepts and never answers.
const FAILOVER: Duration = Duration::from_secs(15);
/// The agent's count of the times it left a server, labelled with the server.
const LEFT_SERVER: &str = "weft_agent_lease_watch_reconnects_total";

pub(crate) fn run(lab: &Lab<'_>) -> anyhow::Result<()> {
    let families = Families::V4;
    let segment = lab.segment(0, families)?;
    let (_etcd, settings) = etcd::cluster(lab, &segment, 200, "vxlan", families)?;
    let per_address = PER_ADDRESS.to_string();
    let mut s1 = Node::server(
        lab,
        "s1",
        lab.host("s1", &[(&segment, 1)])?,
        &settings,
        &["--max-connections-per-address", &per_address],
    );
    s1.start(lab)?;
    let token = s1.token()?;
    let mut s2 = Node::server(
        lab,
        "s2",
        lab.host("s2", &[(&segment, 2)])?,
        &settings,
        &["--token", &token],
    );
    s2.start(lab)?;
    lab.step("s1 (--max-connections-per-address 50) and s2 share etcd");

    // 1. Slow clients at s2 while a1 joins through it.
    let slow_host = lab.host("slow", &[(&segment, 20)])?;
    let mut slow = SlowClients::start(lab, &slow_host.ns, s2.host.ip(false)?)?;
    let mut a1 = Node::agent(
        lab,
        "a1",
        lab.host("a1", &[(&segment, 11)])?,
        &s2.url(),
        &token,
    );
    a1.start(lab)?;
    cluster::wait_converged(lab, &s2, &[&s1, &s2, &a1])?;
    let p_a1 = Pod::add(lab, &a1, "p-a1")?;
    let p_s2 = Pod::add(lab, &s2, "p-s2")?;
    ping(&p_a1.ns, p_s2.ip(false)?, 3)?;
    ping(&p_s2.ns, p_a1.ip(false)?, 3)?;
    let joined = slow.launched.elapsed();
    let open = slow.open();
    ensure!(
        open == SLOW_CLIENTS,
        "slow clients were closed before the header deadline: {open} of {SLOW_CLIENTS} open"
    );
    lab.step(format!(
        "{SLOW_CLIENTS} slow clients held half requests at s2 while a1 joined through it and \
         its pod pinged s2's ({:.1}s)",
        joined.as_secs_f64()
    ));
    let held = slow.wait_closed()?;
    let timed_out = metrics::scrape(&s2.host.ns)?.sum(
        "weft_server_connections_timed_out_total",
        &[("deadline", "header")],
    ) as u64;
    ensure!(
        timed_out >= SLOW_CLIENTS as u64,
        "s2's /metrics counts {timed_out} header timeouts, not {SLOW_CLIENTS}"
    );
    lab.step(format!(
        "every slow client closed {:.1}s to {:.1}s after it started (header deadline {}s); \
         s2 counted {timed_out} header timeouts",
        held.0.as_secs_f64(),
        held.1.as_secs_f64(),
        HEADER_DEADLINE.as_secs()
    ));

    // 2. A flood from one address at s1.
    let flood_host = lab.host("flood", &[(&segment, 21)])?;
    let s1_ip = s1.host.ip(false)?;
    let flood = lab.spawn(
        &flood_host.ns,
        "flood",
        "bash",
        ["-c", &flood_script(s1_ip)],
    )?;
    let verdict = wait_for("the flood's count", Duration::from_secs(20), || {
        Ok(flood
            .output()
            .lines()
            .find(|l| l.starts_with("held "))
            .map(str::to_owned))
    })?;
    let want = format!("held {PER_ADDRESS} refused {}", FLOOD - PER_ADDRESS);
    ensure!(
        verdict == want,
        "{FLOOD} connections from one address to s1: `{verdict}`, not `{want}`"
    );
    let status = cacerts_status(&a1.host.ns, &s1.url())?;
    ensure!(
        status == "200",
        "a1's address got {status} from s1 during the flood, not 200"
    );
    let refused = metrics::scrape(&s1.host.ns)?.sum(
        "weft_server_connections_refused_total",
        &[("reason", "max_connections_per_address")],
    ) as u64;
    ensure!(
        refused >= (FLOOD - PER_ADDRESS) as u64,
        "s1's /metrics counts {refused} refused connections, not {}",
        FLOOD - PER_ADDRESS
    );
    drop(flood);
    lab.step(format!(
        "a flood of {FLOOD} from one address: {want}; a1's address still served; s1 counted \
         {refused} refusals"
    ));

    // 3. s1 accepts and never answers.
    let frozen = s1.daemon()?.pid().context("s1 has no process")?.to_string();
    run_cmd(cmd(Path::new("/"), "kill").args(["-STOP", &frozen]))?;
    let left = |scrape: &metrics::Scrape, url: &str| scrape.sum(LEFT_SERVER, &[("server", url)]);
    let before = metrics::scrape(&a1.host.ns)?;
    s2.kill();
    s2.start(lab)?;
    lab.step("s1 frozen (SIGSTOP), s2 killed and started again");
    let (s1_url, s2_url) = (s1.url(), s2.url());
    let (left_s1, left_s2) = (left(&before, &s1_url), left(&before, &s2_url));
    // a1 fails over from s2 to s1 when s2 dies, then must give s1 up in time.
    let mut tried_s1: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(60) * patience();
    let took = loop {
        ensure!(
            Instant::now() < deadline,
            "a1 never tried and left the frozen s1 within 60 s"
        );
        let now = metrics::scrape(&a1.host.ns)?;
        if left(&now, &s2_url) > left_s2 {
            let tried = *tried_s1.get_or_insert_with(Instant::now);
            if left(&now, &s1_url) > left_s1 {
                break tried.elapsed();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(
        took <= FAILOVER,
        "a1 left the frozen s1 {:.1}s after it moved to it, not within {}s",
        took.as_secs_f64(),
        FAILOVER.as_secs()
    );
    let mut a3 = Node::agent(
        lab,
        "a3",
        lab.host("a3", &[(&segment, 13)])?,
        &s2.url(),
        &token,
    );
    a3.start(lab)?;
    cluster::wait_converged(lab, &s2, &[&s2, &a1, &a3])?;
    lab.step(format!(
        "a1 left the frozen s1 {:.1}s after moving to it and learned of a3 through s2",
        took.as_secs_f64()
    ));
    p_a1.delete()?;
    p_s2.delete()?;
    Ok(())
}

/// TLS clients that each sent half a request line and wait, all from one namespace.
struct SlowClients {
    clients: Vec<Child>,
    launched: Instant,
}

impl SlowClients {
    /// Starts [`SLOW_CLIENTS`] `openssl s_client`s in `ns` to port 9345 of `server`, each
    /// writing `GET /cacerts HTTP/1.1\r\nHost: x\r\n` once connected and holding its input open.
    fn start(lab: &Lab<'_>, ns: &Ns, server: IpAddr) -> anyhow::Result<SlowClients> {
        let launched = Instant::now();
        let mut clients = Vec::new();
        for _ in 0..SLOW_CLIENTS {
            let mut client = ns
                .exec(&lab.dir, "openssl")
                .args(["s_client", "-quiet", "-verify_quiet", "-connect"])
                .arg(format!("{server}:9345"))
                .spawn_detached(Stdio::piped(), Stdio::null(), Stdio::null())?;
            client
                .stdin
                .as_mut()
                .context("openssl's input")?
                .write_all(b"GET /cacerts HTTP/1.1\r\nHost: x\r\n")
                .context("writing half a request to openssl")?;
            clients.push(client);
        }
        Ok(SlowClients { clients, launched })
    }

    /// How many are still connected.
    fn open(&mut self) -> usize {
        self.clients
            .iter_mut()
            .map(Child::try_wait)
            .filter(|status| matches!(status, Ok(None)))
            .count()
    }

    /// Waits until the server closed every client; returns the shortest and longest time a
    /// client was held, an error unless each was held about the header deadline.
    fn wait_closed(mut self) -> anyhow::Result<(Duration, Duration)> {
        let limit = HEADER_DEADLINE + Duration::from_secs(6) * patience();
        let mut held: Vec<Option<Duration>> = vec![None; self.clients.len()];
        while held.iter().any(Option::is_none) {
            if self.launched.elapsed() > limit {
                let open = held.iter().filter(|h| h.is_none()).count();
                bail!(
                    "{open} of {SLOW_CLIENTS} slow clients were still connected {:.1}s after they \
                     started (header deadline {}s)",
                    self.launched.elapsed().as_secs_f64(),
                    HEADER_DEADLINE.as_secs()
                );
            }
            for (client, held) in self.clients.iter_mut().zip(&mut held) {
                if held.is_none() && matches!(client.try_wait(), Ok(Some(_))) {
                    *held = Some(self.launched.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let held: Vec<Duration> = held.into_iter().flatten().collect();
        let shortest = held.iter().min().copied().unwrap_or_default();
        let longest = held.iter().max().copied().unwrap_or_default();
        // Started before its handshake, so held at least the deadline less a little.
        ensure!(
            shortest >= HEADER_DEADLINE - Duration::from_secs(1),
            "a slow client was closed after {:.1}s, before the header deadline ({}s): not by it",
            shortest.as_secs_f64(),
            HEADER_DEADLINE.as_secs()
        );
        Ok((shortest, longest))
    }
}

impl Drop for SlowClients {
    fn drop(&mut self) {
        for client in &mut self.clients {
            let _ = client.kill();
            let _ = client.wait();
        }
    }
}

/// A bash script that opens [`FLOOD`] TCP connections to port 9345 of `server`, counts after a
/// second which the server still holds and which it closed (`held N refused M`), and keeps
/// them open for 30 s.
fn flood_script(server: IpAddr) -> String {
    format!(
        r#"set -u
fds=()
for i in $(seq {FLOOD}); do
  exec {{fd}}<>/dev/tcp/{server}/9345 || {{ echo "connection $i failed"; exit 1; }}
  fds+=("$fd")
done
sleep 1
held=0
refused=0
for fd in "${{fds[@]}}"; do
  if read -r -t 0.05 -N 1 -u "$fd" _; then
    echo "the server sent bytes before a ClientHello"
    exit 1
  elif [ $? -gt 128 ]; then
    held=$((held + 1))
  else
    refused=$((refused + 1))
  fi
done
echo "held $held refused $refused"
sleep 30
"#
    )
}

/// The HTTP status of `GET /cacerts` on `server` from `ns`.
fn cacerts_status(ns: &Ns, server: &str) -> anyhow::Result<String> {
    ns.run(
        "curl",
        &[
            "--silent",
            "--insecure",
            "--max-time",
            "5",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code}",
            &format!("{server}/cacerts"),
        ],
    )
}
