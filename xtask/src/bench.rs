//! `cargo xtask bench [NAME]`: runs the benches in `benches/`.
//!
//! Today every bench is a criterion bench of the `weft-benches` package. A bench that is not
//! criterion's (a whole fabric at scale, the control plane under load) gets its own arm in
//! [`run`], ahead of the criterion lookup.

mod control_plane;

use std::path::Path;

use anyhow::bail;

use crate::cmd::cargo;
use crate::flags::Bench;
use crate::metadata::Metadata;

const BENCH_PACKAGE: &str = "weft-benches";

pub(crate) fn run(root: &Path, bench: Bench) -> anyhow::Result<()> {
    let criterion = criterion_benches(root)?;
    let cargo_bench = cargo(root).args(["bench", "--package", BENCH_PACKAGE]);
    match bench.name {
        // Applying 5,000 vxlan peers to a real kernel (in fresh network namespaces, as root)
        // against `ip -batch` + `bridge -batch` for the same objects; then the agent's path with
        // them (one lease change to the kernel, memory, 100 changes a second for 10 s) against
        // the full observe-plan-apply.
        Some(name) if name == "fabric" => {
            release_example(root, "weft-kernel", "apply_bench", &["5000", "5"])?;
            release_example(
                root,
                "weft-kernel",
                "agent_bench",
                &["5000", "50", "100", "10"],
            )
        }
        // Pod-to-pod TCP throughput (iperf3) over vxlan, weft's userspace WireGuard and
        // wireguard-go, in the same network namespaces (root); then the userspace data path's
        // hot path alone (criterion).
        Some(name) if name == "wireguard" => {
            release_example(root, "weft-kernel", "wireguard_bench", &["5"])?;
            cargo_bench.args(["--bench", "wireguard_hot_path"]).run()
        }
        // 5,000 simulated agents registering with and watching one weft-server process.
        Some(name) if name == "control-plane" => control_plane::run(root),
        // The tunnel on loopback (server and agent processes, CONNECT over TLS) beside direct
        // TCP, then the protocol's criterion bench (frames, the in-memory pair).
        Some(name) if name == "tunnel" => {
            release_example(root, "weft-tunnel", "tunnel_bench", &[])?;
            cargo_bench.args(["--bench", "tunnel"]).run()
        }
        None => cargo_bench.run(),
        Some(name) if criterion.contains(&name) => cargo_bench.args(["--bench", &name]).run(),
        Some(name) => bail!(
            "unknown bench `{name}`; the benches are: fabric, wireguard, control-plane, {}",
            criterion.join(", ")
        ),
    }
}

/// Runs `package`'s `example` in release with its `test-util` feature (the harnesses the
/// examples share with the tests), passing `args`.
fn release_example(root: &Path, package: &str, example: &str, args: &[&str]) -> anyhow::Result<()> {
    cargo(root)
        .args(["run", "--release", "--package", package])
        .args(["--features", "test-util", "--example", example, "--"])
        .args(args)
        .run()
}

/// The `[[bench]]` targets of the bench package.
fn criterion_benches(root: &Path) -> anyhow::Result<Vec<String>> {
    let metadata = Metadata::load(root)?;
    Ok(metadata
        .targets(BENCH_PACKAGE)
        .into_iter()
        .filter(|target| target.kinds.iter().any(|kind| kind == "bench"))
        .map(|target| target.name)
        .collect())
}
