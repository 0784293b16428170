//! `weft-agent`: joins a weft cluster and programs this node's pod network.
//!
//! `weft-agent [FLAGS]` (or `weft-agent run [FLAGS]`) runs the daemon; `validate`, `plan`,
//! `check` and `cleanup` are one-shot commands. This file holds the flags and exit codes only;
//! [`run`] does the wiring. The flags come from weft-config's settings table
//! ([`weft_config::AgentFlags`]), so `--help` lists every setting with its default and
//! environment variables.

#![forbid(unsafe_code)]

mod run;

/// jemalloc, whose background threads give freed pages back to the kernel within about 10 s
/// even while every worker sleeps; glibc's malloc keeps a heap that many connections
/// fragmented resident after they closed.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weft_config::AgentFlags;

/// The weft agent: K3s-compatible cluster networking.
#[derive(Debug, Parser)]
#[command(
    name = "weft-agent",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    flags: AgentFlags,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the agent (the same as giving no subcommand): register with a server, watch every
    /// lease, and keep this node's pod network programmed until SIGTERM or Ctrl-C.
    ///
    /// Stopping leaves the network in place, so pods keep working while the agent restarts;
    /// `weft-agent cleanup` removes it.
    Run(AgentFlags),
    /// Resolve the configuration exactly as the agent will (files, flags, environment, defaults,
    /// node name and node IPs), check it, and print it as JSON on stdout.
    ///
    /// Changes nothing on the host and needs neither root nor a network. Exit 0 when valid;
    /// exit 1 with every error on stderr, one per line starting `error: `, when not. Warnings
    /// go to stderr as lines starting `warning: ` in both cases.
    Validate(AgentFlags),
    /// Read every lease with the certificate this node's agent saved (it never registers, so a
    /// running agent keeps its certificate), and print the operations the agent would apply to
    /// this node's kernel, one per line in `ip`/`bridge`/`nft` syntax. Applies nothing.
    Plan(AgentFlags),
    /// Check this host for what the pod network needs, one line per capability with a fix for
    /// each failure. Exit 1 when something the configured backend needs is missing.
    Check(AgentFlags),
    /// Remove everything weft created on this node: its links, routes, neighbours, FDB
    /// entries, firewall rules, subnet.env and CNI config. Prints what it removed.
    Cleanup(AgentFlags),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        None => run::daemon(&cli.flags),
        Some(Cmd::Run(flags)) => run::daemon(&flags),
        Some(Cmd::Validate(flags)) => run::validate(&flags),
        Some(Cmd::Plan(flags)) => run::plan(&flags),
        Some(Cmd::Check(flags)) => run::check(&flags),
        Some(Cmd::Cleanup(flags)) => run::cleanup(&flags),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            weft_node::daemon::write_errors(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}
