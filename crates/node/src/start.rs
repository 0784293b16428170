//! The agent's start-up, one function for `weft-agent` and the agent embedded in `weft-server`:
//! load the node identity, join through the servers' API, check this node against the cluster
//! network the servers sent, start the egress tunnels, then run the reconcile loop until the
//! stop signal. The binaries only pick the servers and the token and report the outcome.

use std::future::Future;

use weft_api::JoinToken;
use weft_config::{ClusterNetwork, NodeConfig};
use weft_kernel::Kernel;

use crate::agent::{self, AgentSettings};
use crate::daemon::write_stderr;
use crate::egress::{self, EgressSettings};
use crate::health::Condition;
use crate::identity::NodeIdentity;
use crate::metrics::AgentMetrics;
use crate::settings::agent_settings;
use crate::{ApiSource, NodeError};

/// What an agent starts with.
pub struct Start<'a> {
    /// The node's checked configuration.
    pub node: &'a NodeConfig,
    /// The node's name (with its `--with-node-id` suffix).
    pub node_name: String,
    /// The servers to join, the first tried first.
    pub servers: Vec<String>,
    /// The join token.
    pub token: JoinToken,
    /// For the agent embedded in a server: the server's advertise URL, and the loopback URL
    /// that reaches the same server from this host (the advertise URL may be a NAT's address
    /// that does not route back). Registration, leases and the tunnel to that server use it.
    pub alias: Option<(String, String)>,
    /// Where the agent counts what it does.
    pub metrics: AgentMetrics,
    /// Set once the agent has joined and its node passed the cluster check.
    pub joined: Condition,
    /// Handed to the reconcile loop, which sets it after its first reconcile.
    pub reconciled: Condition,
}

/// Runs an agent from `start` until `stop` resolves; the pod network stays in place after.
///
/// A node that does not fit the servers' cluster network (its IPs lack a family of
/// `cluster-cidr`, say) fails with [`NodeError::ClusterMismatch`]; the warnings of that check
/// go to stderr as `warning: ` lines.
pub async fn run(start: Start<'_>, stop: impl Future<Output = ()>) -> Result<(), NodeError> {
    let node = start.node;
    let (mut source, settings) = api_source(node, start.node_name, start.servers, start.token)?;
    source = source.with_metrics(start.metrics.clone());
    let mut egress_settings = EgressSettings::for_agent(&settings, node.kubelet_port);
    if let Some((known, local)) = start.alias {
        source = source.with_alias(known.clone(), local.clone());
        egress_settings = egress_settings.with_alias(known, local);
    }
    let kernel = Kernel::connect()?;
    let (fabric, cluster) = agent::join(&mut source, settings, kernel).await?;
    check_cluster(node, &cluster)?;
    start.joined.set();
    let fabric = fabric
        .with_metrics(start.metrics.clone())
        .with_readiness(start.reconciled);
    // Tunnels to every server, whatever the backend (`none` too).
    let mut egress = egress::start(
        egress_settings,
        &cluster,
        fabric.local(),
        source.credentials(),
    )?;
    egress.export_metrics(start.metrics);
    agent::run(&mut egress.track(&mut source), fabric, stop).await
}

/// The lease source that joins `servers` as `node_name` with `token`, with the node identity
/// from the agent's data dir (made on the first start), and the agent settings.
pub fn api_source(
    node: &NodeConfig,
    node_name: String,
    servers: Vec<String>,
    token: JoinToken,
) -> Result<(ApiSource, AgentSettings), NodeError> {
    let settings = agent_settings(node, node_name);
    let identity = NodeIdentity::load_or_create(&settings.dir)?;
    let source = ApiSource::new(&settings.dir, servers, token, identity);
    Ok((source, settings))
}

/// Checks this node against the cluster network the servers sent: its warnings go to stderr
/// as `warning: ` lines, and its errors make a [`NodeError::ClusterMismatch`].
pub fn check_cluster(node: &NodeConfig, cluster: &ClusterNetwork) -> Result<(), NodeError> {
    let (errors, warnings) = node.check_cluster(cluster);
    write_stderr(
        &warnings
            .iter()
            .map(|w| format!("warning: {w}"))
            .collect::<Vec<_>>(),
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(NodeError::ClusterMismatch {
            errors: errors.iter().map(ToString::to_string).collect(),
        })
    }
}
