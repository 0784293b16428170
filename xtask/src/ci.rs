//! `cargo xtask ci`: the one test command, run by developers and by `.ci/run` alike.
//!
//! It runs every step even after one fails, so a single run shows everything that is wrong, and
//! ends with one line, `N passed, N failed`. A test step counts each test from libtest's
//! `test result:` lines; a step that is not a test run (fmt, clippy) counts as one check. A step
//! that fails without reporting a failed test (a build error, a crashed test binary) counts as one
//! failure, so the exit status is non-zero exactly when the last line shows a failure.
//!
//! The privileged network-namespace tests and the end-to-end clusters (`cargo xtask e2e`, each
//! scenario counted) are steps of their own that run only as root (CI runs as root); otherwise
//! each says it was skipped, and every other test still runs.

#[cfg(test)]
mod tests;

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use crate::cmd::{Cmd, cargo};
use crate::tidy::FUZZ_PACKAGE;

/// Runs every step and prints the tally; the exit code is a failure if anything failed.
pub(crate) fn run(root: &Path) -> ExitCode {
    let steps = steps(root);
    let count = steps.len();
    let root_user = is_root();
    let mut results = Vec::new();
    for (i, step) in steps.into_iter().enumerate() {
        println!();
        let name = step.name;
        if step.needs_root && !root_user {
            println!(
                "==> [{}/{count}] {name}: skipped, needs root: {}",
                i + 1,
                step.cmd
            );
            results.push((name, None));
            continue;
        }
        println!("==> [{}/{count}] {name}: {}", i + 1, step.cmd);
        results.push((name, Some(step.run())));
    }

    println!();
    println!("ci summary:");
    let mut total = Tally::default();
    for (name, tally) in &results {
        let Some(tally) = tally else {
            println!("  {:6} {name}: needs root", "skip");
            continue;
        };
        let verdict = if tally.failed == 0 { "ok" } else { "FAILED" };
        println!(
            "  {verdict:6} {name}: {} passed, {} failed",
            tally.passed, tally.failed
        );
        total.passed += tally.passed;
        total.failed += tally.failed;
    }
    // The last line, alone: scripts and people read the verdict here.
    println!("{} passed, {} failed", total.passed, total.failed);
    if total.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The steps, in order.
fn steps(root: &Path) -> Vec<Step> {
    vec![
        Step {
            name: "fmt",
            kind: Kind::Check,
            needs_root: false,
            cmd: cargo(root).args(["fmt", "--all", "--check"]),
        },
        Step {
            name: "clippy",
            kind: Kind::Check,
            needs_root: false,
            // The fuzz package builds only under cargo-fuzz's sanitizer flags.
            cmd: cargo(root)
                .args(["clippy", "--workspace", "--exclude", FUZZ_PACKAGE])
                .args(["--all-targets", "--", "-D", "warnings"]),
        },
        Step {
            // Unit, integration and tidy tests (tidy's are ordinary tests in xtask).
            name: "test",
            kind: Kind::Tests,
            needs_root: false,
            cmd: cargo(root)
                .args(["test", "--workspace", "--exclude", FUZZ_PACKAGE])
                .arg("--no-fail-fast"),
        },
        Step {
            // Real network namespaces, links, routes and firewall rules: root only. Only the
            // integration tests (`--test '*'`), as the unit tests ran in the step before. A crate
            // with privileged tests adds `-p <crate> --features <crate>/netns-tests` here.
            name: "netns",
            kind: Kind::Tests,
            needs_root: true,
            cmd: cargo(root)
                .args([
                    "test",
                    "-p",
                    "weft-kernel",
                    "-p",
                    "weft-node",
                    "--features",
                    "weft-kernel/netns-tests,weft-node/netns-tests",
                ])
                .args(["--test", "*", "--no-fail-fast"]),
        },
        Step {
            // Whole clusters in network namespaces: root only. Each scenario counts, read from
            // the run's last line.
            name: "e2e",
            kind: Kind::Summary,
            needs_root: true,
            cmd: cargo(root).args(["xtask", "e2e"]),
        },
        Step {
            // The kernel paths this machine's kernel may lack, WireGuard's module above all, in
            // a VM that boots Debian's 6.1: root only.
            name: "e2e-vm",
            kind: Kind::Summary,
            needs_root: true,
            cmd: cargo(root)
                .args(["xtask", "e2e", "--vm"])
                .args(VM_SCENARIOS.iter().flat_map(|name| ["--only", name])),
        },
        Step {
            // weft-kernel's privileged tests of the kernel's WireGuard (observe, apply, the
            // mirror's poll), ignored on this machine's kernel, in the same VM: root only.
            name: "netns-vm",
            kind: Kind::Summary,
            needs_root: true,
            cmd: cargo(root).args(["xtask", "e2e", "--vm", "--netns-tests"]),
        },
        Step {
            // One scenario on Debian's newer kernel, 6.12.
            name: "e2e-vm-6.12",
            kind: Kind::Summary,
            needs_root: true,
            cmd: cargo(root)
                .args(["xtask", "e2e", "--vm", "--kernel"])
                .arg(crate::e2e::vm::kernel_path(NEWER_KERNEL))
                .args(["--only", "vxlan-ipv4"]),
        },
    ]
}

/// What the VM lane runs on Debian's 6.1 kernel: kernel WireGuard for each family, across
/// restarts and backend switches.
const VM_SCENARIOS: &[&str] = &[
    "wireguard-mixed",
    "wireguard-ipv4",
    "wireguard-dual",
    "wireguard-ipv6",
    "restart",
    "backend-switch",
];
/// The prefix of the newer Debian kernel's vmlinuz (`linux-image-6.12-amd64`).
const NEWER_KERNEL: &str = "vmlinuz-6.12.";

/// Reads a run's own verdict line, `12 passed, 0 failed`, as `cargo xtask e2e` prints it.
fn parse_summary(line: &str) -> Option<Tally> {
    let (passed, failed) = line.split_once(" passed, ")?;
    Some(Tally {
        passed: passed.parse().ok()?,
        failed: failed.strip_suffix(" failed")?.parse().ok()?,
    })
}

/// Whether this process runs with an effective user id of 0.
pub(crate) fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    effective_uid(&status) == Some(0)
}

/// The effective user id from the `Uid:` line (real, effective, saved, filesystem) of
/// `/proc/<pid>/status`.
fn effective_uid(status: &str) -> Option<u32> {
    let ids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    ids.split_whitespace().nth(1)?.parse().ok()
}

/// One command of the run.
struct Step {
    name: &'static str,
    kind: Kind,
    /// Skipped, and said so, unless we run as root.
    needs_root: bool,
    cmd: Cmd,
}

/// How a step's outcome is counted.
enum Kind {
    /// Passes or fails as a whole: one check.
    Check,
    /// Runs libtest binaries: each test counts, read from the `test result:` lines.
    Tests,
    /// Prints its own `N passed, N failed` line (`cargo xtask e2e`): the last one counts.
    Summary,
}

/// Tests (or checks) that passed and failed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
}

// === impl Step ===

impl Step {
    fn run(self) -> Tally {
        let mut tally = Tally::default();
        let status = match self.kind {
            Kind::Check => self.cmd.status(),
            Kind::Tests => self.cmd.stream_stdout(|line| {
                if let Some(result) = parse_test_result(line) {
                    tally.passed += result.passed;
                    tally.failed += result.failed;
                }
            }),
            Kind::Summary => self.cmd.stream_stdout(|line| {
                if let Some(result) = parse_summary(line) {
                    tally = result;
                }
            }),
        };
        let success = match status {
            Ok(status) => status.success(),
            Err(err) => {
                println!("error: {err:#}");
                false
            }
        };
        match self.kind {
            Kind::Check if success => tally.passed = 1,
            Kind::Check => tally.failed = 1,
            Kind::Tests | Kind::Summary if !success && tally.failed == 0 => tally.failed = 1,
            Kind::Tests | Kind::Summary => {}
        }
        tally
    }
}

/// Reads libtest's summary line, e.g.
/// `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
pub(crate) fn parse_test_result(line: &str) -> Option<Tally> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |what: &str| {
        rest.split(';').find_map(|part| {
            let mut words = part.split_whitespace().rev();
            (words.next()? == what).then_some(())?;
            words.next()?.parse::<u64>().ok()
        })
    };
    Some(Tally {
        passed: count("passed")?,
        failed: count("failed")?,
    })
}
