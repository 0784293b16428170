//! Traffic checks between namespaces: ping, a TCP transfer that reports the source address the
//! receiver saw, and a continuous ping that runs while something else happens.
//!
//! Every destination is an address inside namespaces the lab made.

use std::fmt;
use std::fs;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use super::lab::{Daemon, Lab, Ns, read, wait_for};

/// Bytes each TCP transfer moves.
pub(crate) const TRANSFER_BYTES: usize = 1 << 20;

/// Ports for transfers, so no two listeners of a run share one.
static NEXT_PORT: AtomicU16 = AtomicU16::new(5001);

/// `ping -c COUNT` from `from` to `to`: an error unless every reply came back.
pub(crate) fn ping(from: &Ns, to: IpAddr, count: u32) -> anyhow::Result<()> {
    let out = from
        .exec(std::path::Path::new("/"), "ping")
        .args(["-n", "-q", "-c", &count.to_string(), "-i", "0.2", "-W", "2"])
        .arg(to.to_string())
        .output(None)?;
    let text = String::from_utf8_lossy(&out.stdout);
    match ping_counts(&text) {
        Some((sent, received)) if sent == received && sent > 0 => Ok(()),
        Some((sent, received)) => bail!("ping {from} -> {to}: {received} of {sent} replies"),
        None => bail!(
            "ping {from} -> {to} failed: {} {}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// One ping, true when it was answered within a second (for tables and matrices).
pub(crate) fn reachable(from: &Ns, to: IpAddr) -> bool {
    from.exec(std::path::Path::new("/"), "ping")
        .args(["-n", "-q", "-c", "1", "-W", "1"])
        .arg(to.to_string())
        .succeeds()
}

/// `(transmitted, received)` from ping's summary line.
pub(crate) fn ping_counts(text: &str) -> Option<(u32, u32)> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut numbers = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
    Some((numbers.next()?, numbers.next()?))
}

/// What a transfer saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transfer {
    /// The source address the receiver saw.
    pub(crate) peer: IpAddr,
}

/// Sends [`TRANSFER_BYTES`] over TCP from `from` to `to_ip` in `to` with socat; checks that
/// every byte arrived and returns the source address the receiver saw.
pub(crate) fn transfer(
    lab: &Lab<'_>,
    from: &Ns,
    to: &Ns,
    to_ip: IpAddr,
) -> anyhow::Result<Transfer> {
    let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
    let payload = lab.dir.join(format!("payload-{port}"));
    let received = lab.dir.join(format!("received-{port}"));
    let data = pseudo_random(TRANSFER_BYTES, u64::from(port));
    fs::write(&payload, &data)?;
    let (listen, connect) = match to_ip {
        IpAddr::V4(ip) => (
            format!("TCP4-LISTEN:{port},reuseaddr"),
            format!("TCP4:{ip}:{port}"),
        ),
        IpAddr::V6(ip) => (
            format!("TCP6-LISTEN:{port},reuseaddr"),
            format!("TCP6:[{ip}]:{port}"),
        ),
    };
    let mut listener = lab.spawn_helper(
        to,
        &format!("socat-{port}"),
        "socat",
        [
            "-d".to_owned(),
            "-d".to_owned(),
            "-u".to_owned(),
            listen,
            format!("CREATE:{}", received.display()),
        ],
    )?;
    wait_for(
        &format!("socat listening in {to}"),
        Duration::from_secs(5),
        || {
            listener.check_running()?;
            Ok(listener.output().contains("listening on").then_some(()))
        },
    )?;
    let patience = super::lab::patience();
    read(
        from.exec(&lab.dir, "timeout")
            .arg((20 * patience).to_string())
            .args(["socat", "-u"])
            .arg(format!("OPEN:{}", payload.display()))
            .arg(format!("{connect},connect-timeout={}", 5 * patience)),
    )
    .with_context(|| format!("TCP {from} -> {to_ip}:{port}"))?;
    let status = listener.wait(Duration::from_secs(u64::from(20 * patience)))?;
    if !status.success() {
        bail!(
            "the receiving socat exited with {status}: {}",
            listener.output()
        );
    }
    let got = fs::read(&received).with_context(|| format!("reading {}", received.display()))?;
    if got != data {
        bail!(
            "TCP {from} -> {to_ip}: {} of {} bytes arrived, or they differ",
            got.len(),
            data.len()
        );
    }
    let peer = accepted_peer(&listener.output())
        .with_context(|| format!("socat did not say whom it accepted: {}", listener.output()))?;
    let _ = fs::remove_file(payload);
    let _ = fs::remove_file(received);
    Ok(Transfer { peer })
}

/// The peer of socat's `accepting connection from AF=2 192.0.2.1:3430 on ...` or
/// `... from AF=10 [2001:db8:1::1]:4000 on ...` line.
pub(crate) fn accepted_peer(log: &str) -> Option<IpAddr> {
    let rest = log.split("accepting connection from AF=").nth(1)?;
    let addr = rest.split_whitespace().nth(1)?;
    let host = match addr.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => addr.rsplit_once(':')?.0,
    };
    host.parse().ok()
}

/// Deterministic bytes that do not compress (xorshift64*).
pub(crate) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// TCP throughput from `from` to `to_ip` in `to` over one second with iperf3, in bits per
/// second as the receiver counted them.
pub(crate) fn throughput(lab: &Lab<'_>, from: &Ns, to: &Ns, to_ip: IpAddr) -> anyhow::Result<f64> {
    let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed).to_string();
    let mut server = lab.spawn_helper(
        to,
        &format!("iperf3-{port}"),
        "iperf3",
        ["--server", "--one-off", "--port", &port],
    )?;
    // iperf3 buffers what it prints to a file: ask the kernel whether it listens yet.
    let filter = format!("sport = :{port}");
    wait_for(
        &format!("iperf3 listening in {to}"),
        Duration::from_secs(5),
        || {
            server.check_running()?;
            let listening = to.run("ss", &["-Hltn", &filter])?;
            Ok((!listening.trim().is_empty()).then_some(()))
        },
    )?;
    let report = read(
        from.exec(&lab.dir, "timeout")
            .args(["20", "iperf3", "--json", "--time", "1", "--port", &port])
            .args(["--client", &to_ip.to_string()]),
    )
    .with_context(|| format!("iperf3 {from} -> {to_ip}"))?;
    server.wait(Duration::from_secs(10))?;
    received_bits_per_second(&report)
        .with_context(|| format!("iperf3 reported no received rate: {report}"))
}

/// `end.sum_received.bits_per_second` of an iperf3 `--json` report.
pub(crate) fn received_bits_per_second(report: &str) -> Option<f64> {
    let report: serde_json::Value = serde_json::from_str(report).ok()?;
    report["end"]["sum_received"]["bits_per_second"].as_f64()
}

/// A ping that runs in the background (`ping -i 0.1 -c COUNT`), for "no packet lost while...".
pub(crate) struct Pinger {
    daemon: Daemon,
    what: String,
}

// === impl Pinger ===

impl Pinger {
    /// Starts `count` pings, ten a second, from `from` to `to`.
    pub(crate) fn start(
        lab: &Lab<'_>,
        from: &Ns,
        to: IpAddr,
        count: u32,
    ) -> anyhow::Result<Pinger> {
        let what = format!("ping {from} -> {to}");
        let daemon = lab.spawn(
            from,
            &format!("ping-{to}"),
            "ping",
            [
                "-n".to_owned(),
                "-c".to_owned(),
                count.to_string(),
                "-i".to_owned(),
                "0.1".to_owned(),
                "-W".to_owned(),
                "2".to_owned(),
                to.to_string(),
            ],
        )?;
        Ok(Pinger { daemon, what })
    }

    /// Waits for the last ping; an error unless every one was answered.
    pub(crate) fn finish(mut self) -> anyhow::Result<u32> {
        self.daemon.wait(Duration::from_secs(120))?;
        let out = self.daemon.output();
        match ping_counts(&out) {
            Some((sent, received)) if sent == received && sent > 0 => Ok(sent),
            Some((sent, received)) => {
                bail!("{}: {} of {sent} pings lost", self.what, sent - received)
            }
            None => bail!("{} printed no summary: {out}", self.what),
        }
    }
}

impl fmt::Debug for Pinger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}
