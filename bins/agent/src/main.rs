//! `weft-agent`: the weft agent binary. For now it has one subcommand, `validate`; the daemon
//! itself slots in as another subcommand later.
//!
//! This file holds the flags and exit codes only; [`run`] does the wiring. The flags come from
//! weft-config's settings table ([`weft_config::AgentFlags`]), so `--help` lists every setting
//! with its default and environment variables.

#![forbid(unsafe_code)]

mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weft_config::AgentFlags;

/// The weft agent: K3s-compatible cluster networking.
#[derive(Debug, Parser)]
#[command(name = "weft-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Resolve the configuration exactly as the agent will (files, flags, environment, defaults,
    /// node name and node IPs), check it, and print it as JSON on stdout.
    ///
    /// Changes nothing on the host and needs neither root nor a network. Exit 0 when valid;
    /// exit 1 with every error on stderr, one per line starting `error: `, when not. Warnings
    /// go to stderr as lines starting `warning: ` in both cases.
    Validate(AgentFlags),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Cmd::Validate(flags) => run::validate(&flags),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            run::write_stderr(&[format!("error: {e:#}")]);
            ExitCode::FAILURE
        }
    }
}
