//! Pod-to-pod TCP throughput (iperf3) over vxlan and over wireguard-native on the userspace
//! implementation, in the same namespaces, and their ratio. Needs root, iproute2, iperf3 and the
//! `test-util` feature:
//!
//! `cargo run --release -p weft-kernel --features test-util --example wireguard_bench [SECONDS]`

use std::process::ExitCode;

fn main() -> ExitCode {
    let seconds = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    match weft_kernel::throughput::run(seconds) {
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
                eprintln!("wireguard_bench: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
