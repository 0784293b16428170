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
        // against `ip -batch` + `bridge -batch` for the same objects.
        Some(name) if name == "fabric" => cargo(root)
            .args([
                "run",
                "--release",
                "--package",
                "weft-kernel",
                "--features",
                "test-util",
            ])
            .args(["--example", "apply_bench", "--", "5000", "5"])
            .run(),
        // Pod-to-pod TCP throughput (iperf3) over vxlan and over userspace WireGuard, in the
        // same network namespaces (root).
        Some(name) if name == "wireguard" => cargo(root)
            .args([
                "run",
                "--release",
                "--package",
                "weft-kernel",
                "--features",
                "test-util",
            ])
            .args(["--example", "wireguard_bench", "--", "5"])
            .run(),
        // 5,000 simulated agents registering with and watching one weft-server process.
        Some(name) if name == "control-plane" => control_plane::run(root),
        // The tunnel on loopback (server and agent processes, CONNECT over TLS) beside direct
        // TCP, then the protocol's criterion bench (frames, the in-memory pair).
        Some(name) if name == "tunnel" => {
            cargo(root)
                .args(["run", "--release", "--package", "weft-tunnel"])
                .args(["--features", "test-util", "--example", "tunnel_bench"])
                .run()?;
            cargo_bench.args(["--bench", "tunnel"]).run()
        }
        None => cargo_bench.run(),
        Some(name) if criterion.contains(&name) => cargo_bench.args(["--bench", &name]).run(),
        Some(name) => bail!(
            "unknown bench `{name}`; the benches are: fabric, control-plane, {}",
            criterion.join(", ")
        ),
    }
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
