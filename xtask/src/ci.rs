//! `cargo xtask ci`: the one test command, run by developers and by `.ci/run` alike.
//!
//! It runs every step even after one fails, so a single run shows everything that is wrong, and
//! ends with one line, `N passed, N failed`. A test step counts each test from libtest's
//! `test result:` lines; a step that is not a test run (fmt, clippy) counts as one check. A step
//! that fails without reporting a failed test (a build error, a crashed test binary) counts as one
//! failure, so the exit status is non-zero exactly when the last line shows a failure.

#[cfg(test)]
mod tests;

use std::path::Path;
use std::process::ExitCode;

use crate::cmd::{Cmd, cargo};
use crate::tidy::FUZZ_PACKAGE;

/// Runs every step and prints the tally; the exit code is a failure if anything failed.
pub(crate) fn run(root: &Path) -> ExitCode {
    let steps = steps(root);
    let count = steps.len();
    let mut results = Vec::new();
    for (i, step) in steps.into_iter().enumerate() {
        println!();
        println!("==> [{}/{count}] {}: {}", i + 1, step.name, step.cmd);
        let name = step.name;
        results.push((name, step.run()));
    }

    println!();
    println!("ci summary:");
    let mut total = Tally::default();
    for (name, tally) in &results {
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
///
/// Later steps join this list as their issues land: the privileged network-namespace tests
/// (behind a switch, since they need root and a Linux kernel) and `cargo xtask e2e`.
fn steps(root: &Path) -> Vec<Step> {
    vec![
        Step {
            name: "fmt",
            kind: Kind::Check,
            cmd: cargo(root).args(["fmt", "--all", "--check"]),
        },
        Step {
            name: "clippy",
            kind: Kind::Check,
            // The fuzz package builds only under cargo-fuzz's sanitizer flags.
            cmd: cargo(root)
                .args(["clippy", "--workspace", "--exclude", FUZZ_PACKAGE])
                .args(["--all-targets", "--", "-D", "warnings"]),
        },
        Step {
            // Unit, integration and tidy tests (tidy's are ordinary tests in xtask).
            name: "test",
            kind: Kind::Tests,
            cmd: cargo(root)
                .args(["test", "--workspace", "--exclude", FUZZ_PACKAGE])
                .arg("--no-fail-fast"),
        },
    ]
}

/// One command of the run.
struct Step {
    name: &'static str,
    kind: Kind,
    cmd: Cmd,
}

/// How a step's outcome is counted.
enum Kind {
    /// Passes or fails as a whole: one check.
    Check,
    /// Runs libtest binaries: each test counts, read from the `test result:` lines.
    Tests,
}

/// Tests (or checks) that passed and failed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    passed: u64,
    failed: u64,
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
            Kind::Tests if !success && tally.failed == 0 => tally.failed = 1,
            Kind::Tests => {}
        }
        tally
    }
}

/// Reads libtest's summary line, e.g.
/// `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
fn parse_test_result(line: &str) -> Option<Tally> {
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
