//! `cargo xtask e2e`: whole weft clusters on one machine, every node a network namespace and
//! every part real: the release `weft-server` and `weft-agent`, the reference CNI plugins from
//! `containernetworking-plugins`, etcd, and the kernel's vxlan, routes and nftables.
//!
//! Read [`lab`] first (one scenario's world: namespaces, segments, hosts, processes and their
//! cleanup), then [`cluster`] (servers and agents), [`cni`] (pods, made the way a container
//! runtime makes them), [`probe`] (traffic checks), [`inspect`] (reading back kernel objects)
//! and [`scenarios`] (what is proved, and where the scenarios still to come will go). [`demo`]
//! is `cargo xtask demo`, built from the same parts.
//!
//! A run checks it is root, installs missing Debian packages ([`deps`]), builds the release
//! binaries, then runs each scenario in a fresh [`lab::Lab`] and prints `N passed, N failed`.
//! A failed scenario prints its daemons' logs. Cleanup does not depend on the run ending well:
//! see [`reaper`] for how a Ctrl-C or a crash is cleaned up after.
//!
//! Deliberately not here: wiring a pod by hand (pods only ever come from the CNI plugins),
//! traffic to any address outside the namespaces a run made, and stub scenarios for features
//! that do not exist yet (a scenario is listed once it can pass).

pub(crate) mod cluster;
pub(crate) mod cni;
pub(crate) mod demo;
pub(crate) mod deps;
pub(crate) mod etcd;
pub(crate) mod front;
pub(crate) mod inspect;
pub(crate) mod lab;
pub(crate) mod log;
pub(crate) mod metrics;
pub(crate) mod probe;
pub(crate) mod reaper;
pub(crate) mod responder;
pub(crate) mod scenarios;
pub(crate) mod vm;

#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};

use crate::cmd::cargo;
use crate::flags::{E2e, WireguardImplementation};
use lab::Lab;
use reaper::Reaper;
use scenarios::Scenario;

/// The prefix of every namespace and directory a run makes: `wfe-<pid>-<n>-<tag>` and
/// `<tmp>/wfe-<pid>`.
pub(crate) const NS_PREFIX: &str = "wfe-";

/// What every scenario of a run shares: the binaries, the run's directory and its names.
pub(crate) struct Env {
    pub(crate) server: PathBuf,
    pub(crate) agent: PathBuf,
    /// `--wireguard-implementation`: every node runs with it, and the wireguard-native
    /// scenarios check their devices run on it.
    pub(crate) wireguard: Option<WireguardImplementation>,
    /// `<tmp>/wfe-<pid>`, removed at the end.
    pub(crate) dir: PathBuf,
    counter: Cell<u32>,
    _reaper: Reaper,
}

/// `cargo xtask e2e`.
pub(crate) fn run(root: &Path, flags: E2e) -> anyhow::Result<ExitCode> {
    if let Some(pid) = flags.reap {
        reaper::reap(pid);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some((address, name)) = &flags.serve {
        responder::serve(address, name)?;
        return Ok(ExitCode::SUCCESS);
    }
    if flags.in_vm && !flags.test_binaries.is_empty() {
        return vm::run_tests_in_guest(&flags.test_binaries);
    }
    let all = scenarios::all();
    if flags.list {
        let width = all.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for scenario in &all {
            println!("{:<width$}  {}", scenario.name, scenario.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let selected = select(&all, &flags.only, flags.vm || flags.in_vm)?;
    if flags.vm && !flags.in_vm {
        return vm::run(root, &flags);
    }
    if let Some(factor) = flags.patience {
        lab::set_patience(factor);
    }
    if flags.in_vm {
        vm::prepare_guest()?;
    }
    let started = Instant::now();
    let env = Env::prepare(root, flags.bin_dir.as_deref(), flags.wireguard)?;
    println!();
    println!("e2e: {} scenario(s)", selected.len());
    let (mut passed, mut failed) = (0, 0);
    let mut failures = Vec::new();
    for scenario in selected {
        if run_one(&env, scenario) {
            passed += 1;
        } else {
            failed += 1;
            failures.push(scenario.name);
        }
    }
    drop(env);
    println!();
    if !failures.is_empty() {
        println!("failed: {}", failures.join(" "));
    }
    println!("e2e took {:.0}s", started.elapsed().as_secs_f64());
    // The last line, alone: `cargo xtask ci` and people read the verdict here.
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The scenarios `--only` names (all when it names none), in the order of `all`.
/// The scenarios `only` names, or without names every scenario, less those that need the
/// kernel's WireGuard outside a VM run (`in_vm`).
fn select(
    all: &[&'static Scenario],
    only: &[String],
    in_vm: bool,
) -> anyhow::Result<Vec<&'static Scenario>> {
    if let Some(unknown) = only.iter().find(|n| !all.iter().any(|s| s.name == *n)) {
        bail!(
            "no scenario `{unknown}`; `cargo xtask e2e --list` lists them: {}",
            all.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        );
    }
    let (selected, vm_only): (Vec<_>, Vec<_>) = all
        .iter()
        .copied()
        .filter(|s| only.is_empty() || only.iter().any(|n| n == s.name))
        .partition(|s| in_vm || !only.is_empty() || !scenarios::needs_kernel_wireguard(s));
    for scenario in vm_only {
        println!(
            "e2e: {} runs in the VM lane (cargo xtask e2e --vm), where the kernel has WireGuard",
            scenario.name
        );
    }
    Ok(selected)
}

/// Runs one scenario in a fresh lab; prints its verdict (and its logs when it failed).
fn run_one(env: &Env, scenario: &Scenario) -> bool {
    println!();
    println!("=== {}: {}", scenario.name, scenario.about);
    let started = Instant::now();
    let outcome = Lab::new(env, scenario.name).and_then(|lab| {
        let outcome = catch_unwind(AssertUnwindSafe(|| (scenario.run)(&lab)))
            .unwrap_or_else(|panic| Err(anyhow!("panicked: {}", panic_message(&*panic))));
        if let Err(err) = &outcome {
            println!("    error: {err:#}");
            lab.print_logs();
        }
        outcome
    });
    let took = started.elapsed().as_secs_f64();
    match outcome {
        Ok(()) => {
            println!("--- {}: ok ({took:.1}s)", scenario.name);
            true
        }
        Err(err) => {
            println!("--- {}: FAILED ({took:.1}s): {err:#}", scenario.name);
            false
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

// === impl Env ===

impl Env {
    /// Checks for root, installs missing packages, builds (or finds) the binaries, sweeps what
    /// dead runs left and starts this run's guardian.
    pub(crate) fn prepare(
        root: &Path,
        bin_dir: Option<&Path>,
        wireguard: Option<WireguardImplementation>,
    ) -> anyhow::Result<Env> {
        let is_root = crate::ci::is_root();
        let mut wanted: Vec<&deps::Package> = deps::RUNTIME.iter().collect();
        if bin_dir.is_none() {
            wanted.extend(deps::BUILD);
        }
        if !is_root {
            let missing: Vec<&str> = deps::missing(&wanted).iter().map(|p| p.name).collect();
            let packages = if missing.is_empty() {
                "every Debian package it needs is installed".to_owned()
            } else {
                format!(
                    "it also needs these Debian packages, which root can install with \
                     `apt-get install {}` (or it installs them itself when run as root)",
                    missing.join(" ")
                )
            };
            bail!(
                "this needs root: it makes network namespaces, links and firewall rules; {packages}"
            );
        }
        deps::ensure(&wanted, true)?;
        let (server, agent) = match bin_dir {
            Some(dir) => (dir.join("weft-server"), dir.join("weft-agent")),
            None => build(root)?,
        };
        for bin in [&server, &agent] {
            if !bin.is_file() {
                bail!("{} does not exist", bin.display());
            }
        }
        reaper::sweep_stale();
        let dir = reaper::run_dir(std::process::id());
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let reaper = Reaper::start(root)?;
        Ok(Env {
            server,
            agent,
            wireguard,
            dir,
            counter: Cell::new(0),
            _reaper: reaper,
        })
    }

    /// A namespace name unique to this run: `wfe-<pid>-<n>-<tag>`.
    pub(crate) fn ns_name(&self, tag: &str) -> String {
        let n = self.counter.get();
        self.counter.set(n + 1);
        format!("{NS_PREFIX}{}-{n}-{tag}", std::process::id())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `cargo build --release -p weft-server -p weft-agent`; returns the two executables.
fn build(root: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    println!("building weft-server and weft-agent (release)");
    let out = cargo(root)
        .args([
            "build",
            "--release",
            "-p",
            "weft-server",
            "-p",
            "weft-agent",
        ])
        .arg("--message-format=json-render-diagnostics")
        .read()?;
    let executable = |name: &str| {
        executables(&out)
            .into_iter()
            .find(|(target, _)| target == name)
            .map(|(_, path)| path)
            .with_context(|| format!("cargo built no `{name}` executable"))
    };
    Ok((executable("weft-server")?, executable("weft-agent")?))
}

/// `(target name, executable)` of the artifacts in cargo's JSON messages.
fn executables(messages: &str) -> Vec<(String, PathBuf)> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| {
            Some((
                m["target"]["name"].as_str()?.to_owned(),
                PathBuf::from(m["executable"].as_str()?),
            ))
        })
        .collect()
}
