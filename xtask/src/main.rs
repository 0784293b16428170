//! weft's task runner, reached through the `cargo xtask` alias in `.cargo/config.toml`.
//!
//! Every task a contributor or CI runs is a subcommand here, so there is no Makefile, justfile or
//! shell script to keep in step with the code (`.ci/run` only installs system packages and calls
//! `cargo xtask ci`). Read `flags.rs` for the subcommands, then `ci.rs` for the one test command
//! and `tidy.rs` for the repository-wide invariants that run as ordinary `#[test]`s.
//!
//! It deliberately has few dependencies (anyhow, and serde_json to read `cargo metadata`), hand-rolls
//! its argument parsing, and spawns every process through the one wrapper in `cmd.rs`.

// Printing is this crate's job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod ci;
mod cmd;
mod e2e;
mod flags;
mod fuzz;
mod metadata;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use flags::Task;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = match flags::parse(&args) {
        Ok(task) => task,
        Err(err) => {
            eprintln!("error: {err}");
            eprintln!();
            eprintln!("{}", flags::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(task) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> anyhow::Result<ExitCode> {
    let root = project_root();
    match task {
        Task::Help => println!("{}", flags::USAGE),
        // ci prints its own verdict as its last line, so it reports failure through the code.
        Task::Ci => return Ok(ci::run(&root)),
        Task::Tidy => tidy::run(&root)?,
        Task::Fuzz(fuzz) => fuzz::run(&root, fuzz)?,
        Task::Bench(bench) => bench::run(&root, bench)?,
        // Both print their own verdict and report failure through the code.
        Task::E2e(e2e) => return e2e::run(&root, e2e),
        Task::Demo(demo) => return e2e::demo::run(&root, demo),
    }
    Ok(ExitCode::SUCCESS)
}

/// The workspace root: the parent of this crate's directory.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent directory")
        .to_path_buf()
}
