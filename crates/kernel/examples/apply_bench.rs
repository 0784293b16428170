//! Applies N vxlan peers (3N kernel objects) with weft-kernel and with `bridge -batch` +
//! `ip -batch` in fresh network namespaces, and prints both times, their ratio and the time to
//! add one more peer. Needs root, iproute2 and the `test-util` feature:
//!
//! `cargo run --release -p weft-kernel --features test-util --example apply_bench [PEERS [REPS]]`

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let peers = args.next().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let reps = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    match weft_kernel::bench::run(peers, reps) {
        Ok(report) => {
            #[allow(clippy::print_stdout, reason = "the report is the example's output")]
            {
                println!("{report}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            #[allow(clippy::print_stderr, reason = "the error is the example's output")]
            {
                eprintln!("apply_bench: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
