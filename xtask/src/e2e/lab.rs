//! One scenario's world: network namespaces, L2 segments, hosts on them, background processes
//! and their logs, all removed when the [`Lab`] drops.
//!
//! Every namespace is named `wfe-<pid>-<n>-<tag>` (see [`super::Env::ns_name`]); links are
//! created straight into their namespaces (`ip -n A link add ... peer ... netns B`), so a link's
//! name only has to be unique inside its namespace and nothing is ever created in the host's
//! own namespace. A [`Segment`] is a bridge `br0` in a namespace of its own; a [`Host`] is a
//! namespace with one veth leg (`eth0`, `eth1`, ...) on each segment it joins, with addresses
//! from the documentation ranges only.
//!
//! Processes run through `ip netns exec` as [`Daemon`]s, each with a log file that
//! [`Lab::print_logs`] shows when the scenario fails. Dropping the lab kills whatever still runs
//! in its namespaces (`ip netns pids`), deletes the namespaces, and removes its directory.

use std::cell::RefCell;
use std::fmt;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::Env;
use super::log::render_log_line;
use crate::cmd::{Cmd, cmd};

/// How long to wait for a stopped process before killing it (times the run's [`patience`]: a
/// daemon's own stop deadline runs on a clock that a loaded VM under TCG slows down too).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One scenario's namespaces, processes' logs and files.
pub(crate) struct Lab<'e> {
    pub(crate) env: &'e Env,
    /// The scenario's directory: data dirs, logs, payloads.
    pub(crate) dir: PathBuf,
    namespaces: RefCell<Vec<Ns>>,
    logs: RefCell<Vec<(String, PathBuf)>>,
}

/// A network namespace (`/run/netns/<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ns {
    pub(crate) name: String,
}

/// Which IP families a cluster, a segment or a host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Families {
    V4,
    Dual,
    V6,
}

/// An L2 segment: bridge `br0` in a namespace of its own, with one subnet per family.
pub(crate) struct Segment {
    pub(crate) ns: Ns,
    /// Picks the subnets: 0 is `192.0.2.0/24` and `2001:db8:1::/64`, 1 is `198.51.100.0/24` and
    /// `2001:db8:2::/64`, 2 is `203.0.113.0/24` and `2001:db8:3::/64`.
    pub(crate) index: u8,
    pub(crate) families: Families,
}

/// A namespace attached to one or more segments.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    pub(crate) ns: Ns,
    /// The addresses of `eth0`, IPv4 first.
    pub(crate) ips: Vec<IpAddr>,
}

/// A background process in a namespace, killed when dropped.
pub(crate) struct Daemon {
    pub(crate) title: String,
    child: Option<Child>,
    pub(crate) log: PathBuf,
    /// The log's length when this process started: its own lines come after it.
    pub(crate) log_start: u64,
}

// === impl Lab ===

impl<'e> Lab<'e> {
    /// A fresh lab in `<run dir>/<scenario>`.
    pub(crate) fn new(env: &'e Env, scenario: &str) -> anyhow::Result<Lab<'e>> {
        let dir = env.dir.join(scenario);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // weft reads /etc/weft/config.yaml unless told otherwise: hand every daemon an empty
        // file, so the host's configuration never leaks into a test.
        fs::write(
            dir.join("config.yaml"),
            "# e2e: every setting comes from flags\n",
        )?;
        Ok(Lab {
            env,
            dir,
            namespaces: RefCell::new(Vec::new()),
            logs: RefCell::new(Vec::new()),
        })
    }

    /// Prints one progress line of the scenario.
    pub(crate) fn step(&self, what: impl fmt::Display) {
        println!("    {what}");
    }

    /// The empty config file every daemon gets as `--config`.
    pub(crate) fn config_file(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// A new namespace with loopback up and IPv6 duplicate address detection off.
    pub(crate) fn ns(&self, tag: &str) -> anyhow::Result<Ns> {
        let ns = Ns {
            name: self.env.ns_name(tag),
        };
        run(cmd(&self.dir, "ip").args(["netns", "add", &ns.name]))?;
        self.namespaces.borrow_mut().push(ns.clone());
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        Ok(ns)
    }

    /// A new L2 segment: a bridge in a namespace of its own.
    pub(crate) fn segment(&self, index: u8, families: Families) -> anyhow::Result<Segment> {
        let ns = self.ns(&format!("seg{index}"))?;
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        Ok(Segment {
            ns,
            index,
            families,
        })
    }

    /// A new host namespace with leg `eth<i>` on the i-th segment of `legs`, addressed as host
    /// number `n` of that segment (`.n` and `::n`).
    pub(crate) fn host(&self, tag: &str, legs: &[(&Segment, u8)]) -> anyhow::Result<Host> {
        let ns = self.ns(tag)?;
        let mut ips = Vec::new();
        for (i, (segment, n)) in legs.iter().enumerate() {
            let leg = format!("eth{i}");
            let port = format!("h{n}");
            segment.ns.ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", &leg, "netns", &ns.name,
            ])?;
            segment
                .ns
                .ip(&["link", "set", &port, "master", "br0", "up"])?;
            ns.ip(&["link", "set", &leg, "up"])?;
            let addrs = segment.addrs(*n);
            for addr in &addrs {
                let cidr = format!("{addr}/{}", if addr.is_ipv4() { 24 } else { 64 });
                ns.ip(&["addr", "add", &cidr, "dev", &leg, "nodad"])?;
            }
            if i == 0 {
                ips = addrs;
            }
        }
        Ok(Host { ns, ips })
    }

    /// Starts `program args...` in `ns`, its output going to `<dir>/<title>.log` (appended,
    /// so a restarted process keeps one log), which a failed scenario prints.
    pub(crate) fn spawn<I, S>(
        &self,
        ns: &Ns,
        title: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: I,
    ) -> anyhow::Result<Daemon>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let log = self.dir.join(format!("{title}.log"));
        if !self.logs.borrow().iter().any(|(_, path)| *path == log) {
            self.logs.borrow_mut().push((title.to_owned(), log.clone()));
        }
        Daemon::start(ns.exec(&self.dir, program).args(args), title, &log)
    }

    /// Like [`Lab::spawn`], for a helper whose log a failure need not show (its caller reports
    /// what matters).
    pub(crate) fn spawn_helper<I, S>(
        &self,
        ns: &Ns,
        title: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: I,
    ) -> anyhow::Result<Daemon>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let log = self.dir.join(format!("{title}.log"));
        Daemon::start(ns.exec(&self.dir, program).args(args), title, &log)
    }

    /// Prints the end of every log of the scenario.
    pub(crate) fn print_logs(&self) {
        for (title, path) in self.logs.borrow().iter() {
            let text = fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let shown = lines.len().min(80);
            println!(
                "    ----- {title} ({} lines{}) -----",
                lines.len(),
                if shown < lines.len() {
                    format!(", the last {shown}")
                } else {
                    String::new()
                }
            );
            for line in &lines[lines.len() - shown..] {
                println!("    | {}", render_log_line(line));
            }
        }
    }
}

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        for ns in self.namespaces.borrow().iter().rev() {
            if let Err(err) = ns.destroy(&self.dir) {
                println!("    warning: {err:#}");
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// === impl Ns ===

impl Ns {
    /// `/run/netns/<name>`, for `CNI_NETNS`.
    pub(crate) fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n <name> ARGS...`; returns stdout.
    pub(crate) fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        read(
            cmd(Path::new("/"), "ip")
                .args(["-n", &self.name])
                .args(args),
        )
    }

    /// `ip netns exec <name> PROGRAM`, to add arguments to.
    pub(crate) fn exec(&self, dir: &Path, program: impl AsRef<std::ffi::OsStr>) -> Cmd {
        cmd(dir, "ip")
            .args(["netns", "exec", &self.name])
            .arg(program)
    }

    /// Runs `PROGRAM ARGS...` in the namespace; returns stdout, or an error with stderr.
    pub(crate) fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        read(self.exec(Path::new("/"), program).args(args))
    }

    /// Sets a sysctl of this namespace (`sysctl -w`).
    pub(crate) fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.run("sysctl", &["-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// Kills every process in the namespace, then deletes it.
    fn destroy(&self, dir: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = pids(&self.name);
            if pids.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "processes {pids:?} in namespace {} did not die; deleting it anyway",
                    self.name
                );
            }
            let _ = cmd(dir, "kill").arg("-KILL").args(&pids).output(None);
            std::thread::sleep(Duration::from_millis(50));
        }
        run(cmd(dir, "ip").args(["netns", "del", &self.name]))
    }
}

impl fmt::Display for Ns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The processes in namespace `name` (`ip netns pids`).
pub(crate) fn pids(name: &str) -> Vec<String> {
    cmd(Path::new("/"), "ip")
        .args(["netns", "pids", name])
        .output(None)
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

// === impl Families ===

impl Families {
    pub(crate) fn v4(self) -> bool {
        matches!(self, Families::V4 | Families::Dual)
    }

    pub(crate) fn v6(self) -> bool {
        matches!(self, Families::V6 | Families::Dual)
    }

    /// The families present, as `false` for IPv4 and `true` for IPv6.
    pub(crate) fn each(self) -> Vec<bool> {
        [(self.v4(), false), (self.v6(), true)]
            .into_iter()
            .filter_map(|(on, v6)| on.then_some(v6))
            .collect()
    }
}

impl fmt::Display for Families {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Families::V4 => "IPv4",
            Families::Dual => "dual-stack",
            Families::V6 => "IPv6",
        })
    }
}

// === impl Segment ===

impl Segment {
    /// Host `n`'s IPv4 address on this segment.
    pub(crate) fn v4(&self, n: u8) -> Ipv4Addr {
        let [a, b, c] = match self.index {
            0 => [192, 0, 2],
            1 => [198, 51, 100],
            _ => [203, 0, 113],
        };
        Ipv4Addr::new(a, b, c, n)
    }

    /// Host `n`'s IPv6 address on this segment.
    pub(crate) fn v6(&self, n: u8) -> Ipv6Addr {
        Ipv6Addr::new(
            0x2001,
            0xdb8,
            u16::from(self.index) + 1,
            0,
            0,
            0,
            0,
            u16::from(n),
        )
    }

    /// Host `n`'s addresses of the segment's families, IPv4 first.
    pub(crate) fn addrs(&self, n: u8) -> Vec<IpAddr> {
        let mut addrs = Vec::new();
        if self.families.v4() {
            addrs.push(IpAddr::V4(self.v4(n)));
        }
        if self.families.v6() {
            addrs.push(IpAddr::V6(self.v6(n)));
        }
        addrs
    }
}

// === impl Host ===

impl Host {
    /// The `eth0` address of a family (`v6` false for IPv4).
    pub(crate) fn ip(&self, v6: bool) -> anyhow::Result<IpAddr> {
        self.ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv6() == v6)
            .with_context(|| format!("{} has no {} address", self.ns, family_name(v6)))
    }
}

/// "IPv4" or "IPv6".
pub(crate) fn family_name(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

// === impl Daemon ===

impl Daemon {
    fn start(cmd: Cmd, title: &str, log: &Path) -> anyhow::Result<Daemon> {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let log_start = file.metadata()?.len();
        let child = cmd.spawn_detached(Stdio::null(), file.try_clone()?.into(), file.into())?;
        Ok(Daemon {
            title: title.to_owned(),
            child: Some(child),
            log: log.to_owned(),
            log_start,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How it exited, if it did.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// An error if the process is no longer running.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        match self.exited() {
            None => Ok(()),
            Some(status) => bail!("{} exited ({status})", self.title),
        }
    }

    /// What this process (not an earlier one with the same log) has written so far.
    pub(crate) fn output(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(&self.log) {
            let _ = file.seek(SeekFrom::Start(self.log_start));
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    }

    /// Waits for the process to exit by itself; an error (and a kill) after `timeout`.
    pub(crate) fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            if self.child.is_none() {
                bail!("{} was already stopped", self.title);
            }
            if Instant::now() > deadline {
                self.kill();
                bail!("{} did not exit within {timeout:?}", self.title);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit (SIGKILL after a while, which is an error).
    pub(crate) fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        let pid = self.pid().context("no process")?.to_string();
        run(cmd(Path::new("/"), "kill").args(["-TERM", &pid]))?;
        self.wait(STOP_TIMEOUT * patience())
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

// === helpers ===

/// Runs a command to the end; an error naming it, with its stderr, unless it succeeds.
pub(crate) fn run(cmd: Cmd) -> anyhow::Result<()> {
    read(cmd).map(drop)
}

/// Runs a command to the end and returns its stdout; an error with its stderr unless it
/// succeeds.
pub(crate) fn read(cmd: Cmd) -> anyhow::Result<String> {
    let shown = cmd.to_string();
    let out = cmd.output(None)?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `probe` every 100 ms until it returns `Some`, for at most `timeout`. The error names
/// `what` and the probe's last error.
pub(crate) fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let timeout = timeout * patience();
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => None,
            Err(err) => Some(err),
        };
        if Instant::now() > deadline {
            return Err(match last {
                Some(err) => err.context(format!("timed out after {timeout:?}: {what}")),
                None => anyhow::anyhow!("timed out after {timeout:?}: {what}"),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many times longer than on this machine [`wait_for`] waits: 1, but more in a VM under
/// software emulation, where everything is several times slower. Set once, at the start of a
/// run ([`set_patience`]).
static PATIENCE: AtomicU32 = AtomicU32::new(1);

/// How many times longer than on this machine this run waits (see [`set_patience`]).
pub(crate) fn patience() -> u32 {
    PATIENCE.load(Ordering::Relaxed)
}

/// Makes every [`wait_for`] of this run wait `factor` times as long.
pub(crate) fn set_patience(factor: u32) {
    PATIENCE.store(factor.max(1), Ordering::Relaxed);
}
