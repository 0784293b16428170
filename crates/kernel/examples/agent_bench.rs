//! The agent's path with N vxlan peers: one lease change from event to kernel, the resident
//! set, and a steady stream of changes, each beside the full observe-plan-apply. Needs root,
//! iproute2 and the `test-util` feature:
//!
//! `cargo run --release -p weft-kernel --features test-util --example agent_bench [PEERS [CHANGES [RATE [SECONDS]]]]`

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut next = |default: u64| args.next().and_then(|a| a.parse().ok()).unwrap_or(default);
    let (peers, changes, rate, seconds) = (next(5000), next(50), next(100), next(10));
    let report = weft_kernel::bench::agent::run(
        usize::try_from(peers).unwrap_or(5000),
        usize::try_from(changes).unwrap_or(50),
        u32::try_from(rate).unwrap_or(100),
        seconds,
    );
    match report {
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
                eprintln!("agent_bench: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
