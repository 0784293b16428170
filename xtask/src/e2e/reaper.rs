//! Cleanup that survives Ctrl-C and crashes: a guardian process per run, and a sweep of what
//! dead runs left behind.
//!
//! xtask has no signal handling (it forbids unsafe code and keeps its dependencies few), so it
//! does not try to catch Ctrl-C. Instead every run starts a guardian, `xtask e2e --reap <pid>`,
//! in a process group of its own (a Ctrl-C at the terminal does not reach it) with its stdin a
//! pipe from the run. When the run ends, however it ends, the pipe closes; the guardian then
//! kills every process in the run's namespaces (`ip netns pids`), deletes the namespaces and
//! removes the run's directory. A run that finished cleanly has left nothing, so the guardian
//! finds nothing and says nothing.
//!
//! Every process a run starts lives in one of its namespaces (they are all started with
//! `ip netns exec`), and every name carries the run's pid (`wfe-<pid>-...`), so the sweep needs
//! no record of what was made. [`sweep_stale`] applies the same sweep, at the start of each run,
//! to runs whose process is gone and whose guardian was killed too.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};

use super::NS_PREFIX;
use super::lab::pids;
use crate::cmd::cmd;

/// The guardian of this run: dropping it closes its pipe and waits for its sweep.
pub(crate) struct Reaper {
    stdin: Option<ChildStdin>,
    child: Child,
}

// === impl Reaper ===

impl Reaper {
    /// Starts `xtask e2e --reap <our pid>`.
    pub(crate) fn start(root: &Path) -> anyhow::Result<Reaper> {
        let exe = std::env::current_exe()?;
        let mut child = cmd(root, exe)
            .args(["e2e", "--reap", &std::process::id().to_string()])
            .spawn_detached(Stdio::piped(), Stdio::inherit(), Stdio::inherit())?;
        Ok(Reaper {
            stdin: child.stdin.take(),
            child,
        })
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The guardian's body: waits until run `pid` closes our stdin (it exited, or dropped its
/// [`Reaper`]), then removes what it left.
pub(crate) fn reap(pid: u32) {
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let removed = sweep(pid);
    if removed > 0 {
        eprintln!(
            "e2e: run {pid} stopped before cleaning up; removed its {removed} network namespace(s), \
             their processes and {}",
            run_dir(pid).display()
        );
    }
}

/// Sweeps every run whose process no longer exists.
pub(crate) fn sweep_stale() {
    let mut pids: Vec<u32> = namespaces()
        .iter()
        .filter_map(|name| run_pid(name))
        .collect();
    if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
        pids.extend(entries.flatten().filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix(NS_PREFIX)?
                .parse::<u32>()
                .ok()
        }));
    }
    pids.sort_unstable();
    pids.dedup();
    for pid in pids {
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let removed = sweep(pid);
            if removed > 0 {
                println!("e2e: removed {removed} namespace(s) left by run {pid}");
            }
        }
    }
}

/// The directory of run `pid`: `<tmp>/wfe-<pid>`.
pub(crate) fn run_dir(pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("{NS_PREFIX}{pid}"))
}

/// Kills the processes in run `pid`'s namespaces, deletes the namespaces and the run's
/// directory; returns how many namespaces there were.
fn sweep(pid: u32) -> usize {
    let mine: Vec<String> = namespaces()
        .into_iter()
        .filter(|name| run_pid(name) == Some(pid))
        .collect();
    // Everything first, so no process of the run is left to start another while we work.
    for _ in 0..50 {
        let running: Vec<String> = mine.iter().flat_map(|ns| pids(ns)).collect();
        if running.is_empty() {
            break;
        }
        let _ = cmd(Path::new("/"), "kill")
            .arg("-KILL")
            .args(&running)
            .output(None);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for ns in &mine {
        let _ = cmd(Path::new("/"), "ip")
            .args(["netns", "del", ns])
            .output(None);
    }
    let _ = fs::remove_dir_all(run_dir(pid));
    mine.len()
}

/// The namespaces under `/run/netns` that an e2e run made.
fn namespaces() -> Vec<String> {
    fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| name.starts_with(NS_PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

/// The run pid in a namespace name `wfe-<pid>-<n>-<tag>`.
pub(crate) fn run_pid(name: &str) -> Option<u32> {
    name.strip_prefix(NS_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}
