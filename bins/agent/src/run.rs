//! Wiring for `weft-agent`'s subcommands: load the configuration through the real host, set up
//! logging and the runtime, call weft-node, print, and pick the exit code.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use weft_config::{AgentConfig, AgentFlags, System, load_agent};
use weft_kernel::Kernel;
use weft_node::LeaseSource;
use weft_node::agent;
use weft_node::daemon;
use weft_node::health::{Readiness, reasons};
use weft_node::metrics::{self, AgentMetrics, Registry};
use weft_node::settings::{agent_settings, join_token, node_name};
use weft_node::start::{self, Start};

/// `weft-agent validate`: prints the effective configuration, or every error.
pub(crate) fn validate(flags: &AgentFlags) -> anyhow::Result<ExitCode> {
    let loaded = load_agent(&flags.0, System::os());
    let report = loaded.report(|config| config.to_json());
    Ok(daemon::print_report(&report)?)
}

/// The daemon: join, then reconcile until SIGTERM or Ctrl-C.
pub(crate) fn daemon(flags: &AgentFlags) -> anyhow::Result<ExitCode> {
    let Some(config) = load(flags) else {
        return Ok(ExitCode::FAILURE);
    };
    daemon::init_logging(config.node.log_format);
    daemon::raise_nofile_limit();
    runtime()?.block_on(async {
        let agent_metrics = AgentMetrics::new();
        let mut registry = Registry::default();
        agent_metrics.register(&mut registry);
        metrics::register_process(&mut registry);
        let readiness = Readiness::default();
        let joined = readiness.condition(reasons::NOT_JOINED);
        let reconciled = readiness.condition(reasons::NOT_RECONCILED);
        let metrics_endpoint =
            metrics::spawn(config.node.metrics_address, registry, readiness).await;

        let node = &config.node;
        let start = Start {
            node,
            node_name: node_name(node)?,
            servers: servers(&config)?,
            token: join_token(node)?,
            alias: None,
            metrics: agent_metrics,
            joined,
            reconciled,
        };
        start::run(start, daemon::shutdown_signal()).await?;
        drop(metrics_endpoint);
        tracing::info!("stopping; the pod network stays in place");
        Ok(ExitCode::SUCCESS)
    })
}

/// `weft-agent plan`: what the agent would apply now.
pub(crate) fn plan(flags: &AgentFlags) -> anyhow::Result<ExitCode> {
    let Some(config) = load(flags) else {
        return Ok(ExitCode::FAILURE);
    };
    daemon::init_logging(config.node.log_format);
    runtime()?.block_on(async {
        // Read-only: registering would issue a new certificate and revoke the running agent's.
        let node = &config.node;
        let (source, settings) =
            start::api_source(node, node_name(node)?, servers(&config)?, join_token(node)?)?;
        let mut source = source.read_only();
        let kernel = Kernel::connect()?;
        let (mut fabric, cluster) = agent::join(&mut source, settings, kernel).await?;
        start::check_cluster(node, &cluster)?;
        let snapshot = source.next().await?;
        fabric.update(snapshot);
        let (plan, problems) = fabric.plan().await?;
        if let Some(implementation) = fabric.wireguard_implementation() {
            write_stderr(&[format!(
                "wireguard-native: the {implementation} implementation runs the WireGuard devices"
            )]);
        }
        for problem in problems {
            write_stderr(&[format!("warning: {problem}")]);
        }
        let mut out = std::io::stdout().lock();
        write!(out, "{plan}")?;
        out.flush()?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `weft-agent check`: host preflight.
///
/// It needs no server or token: configuration errors do not stop the check. With a server and
/// a token it asks the server for the cluster's backend (for at most 5 s), so it checks what that
/// backend needs; otherwise it checks for vxlan, the default.
pub(crate) fn check(flags: &AgentFlags) -> anyhow::Result<ExitCode> {
    let config = load_agent(&flags.0, System::os()).result.ok();
    let masq_mode = config
        .as_ref()
        .map(|c| c.node.masq_mode)
        .unwrap_or_default();
    runtime()?.block_on(async {
        let backend = match &config {
            Some(config) => {
                // Only the token's CA check and the config read: nothing is written.
                let asked = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                    let server = config.node.server.as_ref()?.as_str().to_owned();
                    let token = join_token(&config.node).ok()?;
                    let ca = weft_api::client::fetch_ca(&server, &token).await.ok()?;
                    let json = weft_api::client::cluster_config(&server, &ca, &token)
                        .await
                        .ok()?;
                    weft_config::ClusterNetwork::from_json(&json).ok()
                })
                .await;
                match asked {
                    Ok(Some(cluster)) => {
                        Some((cluster.flannel_backend, config.node.masq_mode_in(&cluster)))
                    }
                    _ => None,
                }
            }
            None => None,
        };
        // The cluster's flannel-conf may pick the masquerade mode.
        let masq_mode = backend.map_or(masq_mode, |(_, mode)| mode);
        let backend = backend.map(|(backend, _)| backend);
        let mut out = std::io::stdout().lock();
        match backend {
            Some(b) => writeln!(out, "backend: {b} (from the server)")?,
            None => writeln!(
                out,
                "backend: unknown (no server answered), checking for vxlan"
            )?,
        }
        let kernel = Kernel::connect()?;
        let wireguard = config
            .as_ref()
            .and_then(|c| weft_node::settings::wireguard_implementation(&c.node));
        let report = weft_node::preflight::check(&kernel, masq_mode, backend, wireguard).await;
        write!(out, "{report}")?;
        out.flush()?;
        Ok(if report.ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

/// `weft-agent cleanup`: removes weft's kernel objects and files.
pub(crate) fn cleanup(flags: &AgentFlags) -> anyhow::Result<ExitCode> {
    let Some(config) = load(flags) else {
        return Ok(ExitCode::FAILURE);
    };
    let settings = agent_settings(&config.node, String::new());
    runtime()?.block_on(async {
        let kernel = Kernel::connect()?;
        let plan = kernel
            .cleanup(&weft_node::agent::cleanup_scope(&settings))
            .await?;
        let mut out = std::io::stdout().lock();
        write!(out, "{plan}")?;
        for path in weft_node::agent::written_files(&settings) {
            match std::fs::remove_file(&path) {
                Ok(()) => writeln!(out, "rm {}", path.display())?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            }
        }
        out.flush()?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Loads and checks the configuration; prints warnings, and errors when it is invalid.
fn load(flags: &AgentFlags) -> Option<AgentConfig> {
    let loaded = load_agent(&flags.0, System::os());
    let report = loaded.report(|_| serde_json::Value::Null);
    write_stderr(&report.stderr);
    loaded.result.ok()
}

/// The server `--server` names, the one the agent joins.
fn servers(config: &AgentConfig) -> anyhow::Result<Vec<String>> {
    let server = config
        .node
        .server
        .as_ref()
        .context("no server to join: set --server (K3S_URL) to https://SERVER:9345")?;
    Ok(vec![server.as_str().to_owned()])
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    daemon::runtime().context("starting the tokio runtime")
}

pub(crate) use daemon::write_stderr;
