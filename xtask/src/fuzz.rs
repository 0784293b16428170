//! `cargo xtask fuzz`: runs a cargo-fuzz target from `fuzz/` for a bounded time.
//!
//! cargo-fuzz passes `-Z` sanitizer flags to rustc, which the stable toolchain accepts only with
//! `RUSTC_BOOTSTRAP=1`; this task sets it for the fuzz build alone. New inputs the fuzzer finds go
//! to a scratch corpus under `target/`, so the seeds in `fuzz/corpus/<target>/` (which the crates'
//! unit tests replay) change only when someone copies an input there on purpose.

use std::fs;
use std::path::Path;

use anyhow::{Context, bail};

use crate::cmd::cargo;
use crate::flags::Fuzz;
use crate::metadata::Metadata;
use crate::tidy::FUZZ_PACKAGE;

pub(crate) fn run(root: &Path, fuzz: Fuzz) -> anyhow::Result<()> {
    let targets = targets(root)?;
    let (target, seconds) = match fuzz {
        Fuzz::List => {
            for target in &targets {
                println!("{target}");
            }
            return Ok(());
        }
        Fuzz::Run { target, seconds } => (target, seconds),
    };
    if !targets.contains(&target) {
        bail!(
            "unknown fuzz target `{target}`; the targets are: {}",
            targets.join(", ")
        );
    }
    ensure_cargo_fuzz(root)?;

    let scratch = root.join("target/fuzz-corpus").join(&target);
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let seeds = root.join("fuzz/corpus").join(&target);
    println!("==> fuzzing {target} for {seconds}s (seeds: fuzz/corpus/{target}/)");
    let result = cargo(root)
        .args(["fuzz", "run", &target])
        // libFuzzer writes new inputs into the first corpus directory and only reads the others.
        .arg(&scratch)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .env("RUSTC_BOOTSTRAP", "1")
        .run();
    if result.is_err() {
        println!(
            "the failing input is in fuzz/artifacts/{target}/; once the bug is fixed, copy it into \
             fuzz/corpus/{target}/ so the unit tests replay it"
        );
    } else {
        println!(
            "new inputs are in {}; copy the interesting ones into fuzz/corpus/{target}/",
            scratch.display()
        );
    }
    result
}

/// The fuzz targets: the `[[bin]]`s of the fuzz package.
fn targets(root: &Path) -> anyhow::Result<Vec<String>> {
    let metadata = Metadata::load(root)?;
    Ok(metadata
        .targets(FUZZ_PACKAGE)
        .into_iter()
        .filter(|target| target.kinds.iter().any(|kind| kind == "bin"))
        .map(|target| target.name)
        .collect())
}

fn ensure_cargo_fuzz(root: &Path) -> anyhow::Result<()> {
    if cargo(root).args(["fuzz", "--version"]).succeeds() {
        return Ok(());
    }
    println!("==> installing cargo-fuzz");
    cargo(root)
        .args(["install", "cargo-fuzz", "--locked"])
        .run()
}
