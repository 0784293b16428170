//! `weft-server`: the control plane of a weft cluster network, with an embedded agent.
//!
//! `weft-server [FLAGS]` (or `weft-server run [FLAGS]`) runs the server; `validate` checks the
//! configuration, `node list` / `node delete NAME` manage nodes through the running server, and
//! `certificate check` lists the certificates in the data dir with their expiry. This file
//! holds the flags and exit codes only; [`run`] does the wiring. The flags come from
//! weft-config's settings table ([`weft_config::ServerFlags`]), so `--help` lists every setting
//! with its default and environment variables.

#![forbid(unsafe_code)]

mod run;

/// jemalloc, whose background threads give freed pages back to the kernel within about 10 s
/// even while every worker sleeps; glibc's malloc keeps a heap that many connections
/// fragmented resident after they closed.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weft_config::ServerFlags;

/// The weft server: K3s-compatible cluster networking.
#[derive(Debug, Parser)]
#[command(
    name = "weft-server",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    flags: ServerFlags,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the server (the same as giving no subcommand): serve the API agents join through,
    /// hand out leases, and run an embedded agent unless --disable-agent, until SIGTERM or
    /// Ctrl-C.
    Run(ServerFlags),
    /// Resolve the configuration exactly as the server will (files, flags, environment, defaults,
    /// node name and node IPs), check it, and print it as JSON on stdout.
    ///
    /// Changes nothing on the host and needs neither root nor a network. Exit 0 when valid;
    /// exit 1 with every error on stderr, one per line starting `error: `, when not. Warnings
    /// go to stderr as lines starting `warning: ` in both cases.
    Validate(ServerFlags),
    /// Manage the cluster's nodes through the server running on this host.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Look at this server's certificates.
    #[command(subcommand)]
    Certificate(CertificateCmd),
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// List every node with its addresses and pod CIDRs.
    List(ServerFlags),
    /// Delete a node: its lease is released and every agent removes its routes.
    Delete {
        /// The node name.
        name: String,
        #[command(flatten)]
        flags: ServerFlags,
    },
}

#[derive(Debug, Subcommand)]
enum CertificateCmd {
    /// List every certificate under <data-dir>/server/tls/ and the agent's node certificate
    /// (<data-dir>/agent/credentials.json), each with its subject, usages and expiry, as `k3s
    /// certificate check` does.
    ///
    /// Reads files only: it needs no running server, and resolves nothing but --data-dir (flag,
    /// config file, environment). A certificate with less than 90 days left is renewed at the
    /// next start (the agent's while it runs). Exit 0 when every certificate is valid now; exit
    /// 1 when one has expired or is not valid yet, or none was found.
    Check(ServerFlags),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        None => run::server(&cli.flags),
        Some(Cmd::Run(flags)) => run::server(&flags),
        Some(Cmd::Validate(flags)) => run::validate(&flags),
        Some(Cmd::Node(NodeCmd::List(flags))) => run::node_list(&flags),
        Some(Cmd::Node(NodeCmd::Delete { name, flags })) => run::node_delete(&flags, &name),
        Some(Cmd::Certificate(CertificateCmd::Check(flags))) => run::certificate_check(&flags),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            weft_node::daemon::write_errors(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}
