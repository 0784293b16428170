//! A network-namespace harness for privileged tests and benches (feature `test-util`).
//!
//! [`Namespace`] makes a uniquely named namespace (`wk-<pid>-<n>-<tag>`) and deletes it on
//! drop, taking every link inside it along, also when a test panics. Links are created straight
//! into namespaces (`ip -n A link add ... netns B`), so their names only have to be unique per
//! namespace and stay under Linux's 15-character limit. [`Namespace::run`] runs async code with
//! a [`Kernel`] inside the namespace: it enters the namespace on a fresh thread (`setns` affects
//! only the calling thread) before building a tokio runtime there. [`Background`] is a process
//! killed on drop. [`vxlan_peer`] is the peer lease the privileged tests of the agent's path
//! share.
//!
//! This module shells out to `ip` (iproute2); weft-kernel itself never does.

use std::future::Future;
use std::process::{Child, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::net::Ipv4Addr;

use weft_fabric::{BackendData, Lease, MacAddr};

use crate::cmd::Cmd;
use crate::{Kernel, KernelError};

/// The prefix of every namespace this harness makes.
pub const PREFIX: &str = "wk-";

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static SWEEP: std::sync::Once = std::sync::Once::new();

/// A network namespace under `/run/netns`, deleted on drop.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

/// A background process (`ip netns exec NS CMD`), killed on drop.
#[derive(Debug)]
pub struct Background {
    child: Option<Child>,
    line: String,
}

// === impl Namespace ===

impl Namespace {
    /// Makes a namespace named `wk-<pid>-<n>-<tag>`, with loopback up and IPv6 duplicate
    /// address detection off (so addresses work at once). The first call also deletes
    /// namespaces left by test processes that no longer run.
    pub fn new(tag: &str) -> Result<Namespace, KernelError> {
        SWEEP.call_once(sweep_stale);
        let name = format!(
            "{PREFIX}{}-{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        Cmd::new("ip").args(["netns", "add", &name]).run()?;
        let ns = Namespace { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        for key in ["all", "default"] {
            ns.sysctl(&format!("net/ipv6/conf/{key}/accept_dad"), "0")?;
        }
        Ok(ns)
    }

    /// Writes a sysctl of this namespace (`ip netns exec NAME sysctl -w KEY=VALUE`, without
    /// needing procps): from a thread that entered the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), KernelError> {
        let (name, key, value) = (self.name.clone(), key.to_owned(), value.to_owned());
        let thread = std::thread::spawn(move || {
            enter(&name)?;
            crate::sysctl::write(&key, &value)
        });
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, for `CNI_NETNS` and `setns`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n NAME ARGS...`; returns stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String, KernelError> {
        Cmd::new("ip")
            .args(["-n", &self.name])
            .args(args.iter().copied())
            .run()
    }

    /// `ip netns exec NAME ARGS...`; returns stdout, or an error for a failed exit.
    pub fn exec(&self, args: &[&str]) -> Result<String, KernelError> {
        self.command(args).run()
    }

    /// `ip netns exec NAME ARGS...`, whatever its exit status.
    pub fn exec_output(&self, args: &[&str]) -> Result<Output, KernelError> {
        self.command(args).output()
    }

    /// `ip netns exec NAME ARGS...` with extra environment and `stdin`; returns stdout.
    pub fn exec_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: &str,
    ) -> Result<String, KernelError> {
        let mut cmd = self.command(args).stdin(stdin);
        for (k, v) in env {
            cmd = cmd.env(*k, *v);
        }
        cmd.run()
    }

    /// Starts `ip netns exec NAME ARGS...` in the background.
    pub fn spawn(&self, args: &[&str]) -> Result<Background, KernelError> {
        let cmd = self.command(args);
        Ok(Background {
            child: Some(cmd.spawn()?),
            line: cmd.line(),
        })
    }

    /// Runs `f` with a [`Kernel`] of this namespace on a fresh thread that entered the
    /// namespace before building its (current-thread) tokio runtime. A panic in `f` is
    /// re-raised here.
    pub fn run<F, Fut, T>(&self, f: F) -> Result<T, KernelError>
    where
        F: FnOnce(Kernel) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let name = self.name.clone();
        let thread = std::thread::spawn(move || -> Result<T, KernelError> {
            enter(&name)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| KernelError::Namespace {
                    name: name.clone(),
                    kind: e.kind(),
                })?;
            runtime.block_on(async move {
                let kernel = Kernel::connect()?;
                Ok(f(kernel).await)
            })
        });
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    fn command(&self, args: &[&str]) -> Cmd {
        Cmd::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args.iter().copied())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes every link in it, and the veth peers of those in
        // other namespaces.
        let _ = Cmd::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Moves the calling thread into network namespace `name` (`setns(2)`; other threads stay).
fn enter(name: &str) -> Result<(), KernelError> {
    let ns_err = |kind| KernelError::Namespace {
        name: name.to_owned(),
        kind,
    };
    let file = std::fs::File::open(format!("/run/netns/{name}")).map_err(|e| ns_err(e.kind()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| ns_err(std::io::Error::from(e).kind()))
}

/// Creates a veth pair, `a_name` in `a` and `b_name` in `b`, both up.
pub fn veth(a: &Namespace, a_name: &str, b: &Namespace, b_name: &str) -> Result<(), KernelError> {
    a.ip(&[
        "link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", &b.name,
    ])?;
    a.ip(&["link", "set", a_name, "up"])?;
    b.ip(&["link", "set", b_name, "up"])?;
    Ok(())
}

/// Deletes `wk-<pid>-...` namespaces whose process is gone (a test run that was killed).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Cmd::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

// === impl Background ===

impl Background {
    /// Waits up to `timeout` for the process to exit by itself, then kills it; returns what it
    /// printed and its status.
    pub fn finish(mut self, timeout: Duration) -> Result<Output, KernelError> {
        let mut child = self.child.take().ok_or_else(|| self.spawn_error())?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    break;
                }
            }
        }
        child.wait_with_output().map_err(|e| KernelError::Spawn {
            program: self.line.clone(),
            kind: e.kind(),
        })
    }

    fn spawn_error(&self) -> KernelError {
        KernelError::Spawn {
            program: self.line.clone(),
            kind: std::io::ErrorKind::NotFound,
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Peer `i` of a vxlan test cluster: pod CIDR 10.42.i.0/24, underlay address 100.64.0.i, VTEP
/// MAC 02:00:00:00:00:ii, created at revision `i` (so lower numbers claimed first).
pub fn vxlan_peer(i: u8) -> Lease {
    Lease {
        node_name: format!("peer-{i}"),
        ipv4_cidr: format!("10.42.{i}.0/24").parse().ok(),
        ipv6_cidr: None,
        public_ipv4: Some(Ipv4Addr::new(100, 64, 0, i)),
        public_ipv6: None,
        backend: BackendData::Vxlan {
            vtep_mac_ipv4: Some(MacAddr([2, 0, 0, 0, 0, i])),
            vtep_mac_ipv6: None,
        },
        created_revision: u64::from(i),
    }
}
