//! `cargo xtask bench control-plane`: 5,000 simulated agents against one `weft-server`.
//!
//! The swarm and its report are weft-benches' (`benches/src/control_plane.rs` and
//! `benches/examples/control_plane.rs`); this builds the release `weft-server` the example
//! starts, then runs the example, which prints each figure beside its target and fails when
//! one is missed.

use std::path::Path;

use crate::cmd::cargo;

/// Simulated agents.
const AGENTS: &str = "5000";
/// Lease changes timed.
const ROUNDS: &str = "5";

pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    cargo(root)
        .args(["build", "--release", "--package", "weft-server"])
        .run()?;
    cargo(root)
        .args(["run", "--release", "--package", "weft-benches"])
        .args(["--example", "control_plane", "--", AGENTS, ROUNDS])
        .run()
}
