//! The server's control plane: what `weft-server` runs besides its embedded agent.
//!
//! [`start`] opens the store, stores the cluster network on the first start (and refuses a
//! later start or a joining server whose critical settings differ, naming each one),
//! bootstraps the cluster's trust ([`bootstrap`]: the CA sealed in the store with the token),
//! starts the lease fan-out ([`hub::LeaseHub`]) and, on etcd, the [`compactor`] that keeps
//! etcd's history bounded, binds the API port, and records the server in the store so agents
//! learn it, and its API's local URL in `<data-dir>/server/api-address` ([`api_address`]) so
//! node management on this host needs only the data dir. [`service::ControlPlane`] answers the API; [`metrics`] holds
//! what it counts for `/metrics`.
//!
//! [`egress`] adds the egress selector: weft-tunnel's tunnel endpoint and CONNECT front door,
//! routed by the store's nodes, leases and the pods agents report, behind one handler with the
//! API, and the kube-apiserver's EgressSelectorConfiguration.
//!
//! It deliberately runs no agent: `weft-server` composes the embedded one around it.
//!
//! Read [`start`], then [`service`] and [`egress`].

#![forbid(unsafe_code)]

pub mod api_address;
pub mod bootstrap;
pub mod compactor;
pub mod credentials;
pub mod egress;
mod error;
mod files;
pub mod hub;
pub mod metrics;
mod pods;
pub mod servers;
pub mod service;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use weft_api::JoinToken;
use weft_config::{ClusterNetwork, Key};
use weft_store::{Claim, Created, Datastore, Store, StoreError};

pub use error::ControlError;

use crate::bootstrap::{Bootstrap, GivenTokens};
use crate::credentials::NodeCredentials;
use crate::hub::LeaseHub;
use crate::metrics::ControlMetrics;
use crate::service::{ControlPlane, JoinSecrets};

/// What a server needs to start.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The server's state dir (`<data-dir>/server`).
    pub dir: PathBuf,
    /// Where cluster state lives.
    pub datastore: Datastore,
    /// This server's cluster network settings.
    pub network: ClusterNetwork,
    /// `--token`, when given.
    pub token: Option<JoinToken>,
    /// `--agent-token`, when given.
    pub agent_token: Option<JoinToken>,
    /// Where the API listens (`bind-address:supervisor-port`).
    pub bind: SocketAddr,
    /// The URL agents reach this server at (`https://advertise-address:supervisor-port`).
    pub url: String,
    /// Names and addresses for the serving certificate.
    pub names: Vec<String>,
    /// Addresses for the serving certificate.
    pub ips: Vec<IpAddr>,
    /// How often an idle lease watch gets a bookmark: weft-api's
    /// [`BOOKMARK_INTERVAL`](weft_api::protocol::BOOKMARK_INTERVAL), which agents expect; tests
    /// shorten it.
    pub bookmark_interval: Duration,
}

/// A started control plane: bound, bootstrapped, following the store; not yet serving.
pub struct Started {
    /// The store.
    pub store: Store,
    /// The cluster's trust and this server's certificates.
    pub bootstrap: Bootstrap,
    /// The API handler.
    pub plane: Arc<ControlPlane>,
    /// The bound API listener.
    pub listener: TcpListener,
    /// The URL agents reach this server at.
    pub url: String,
    /// The control plane's metrics; the daemon registers them for `/metrics`.
    pub metrics: ControlMetrics,
}

/// Starts the control plane (see the crate docs). Nothing is served until the caller serves
/// [`Started::listener`].
pub async fn start(settings: ServerSettings) -> Result<Started, ControlError> {
    let store = settings.datastore.open().await?;
    check_network(&store, &settings.network).await?;
    claim_earlier_nodes(&store).await?;
    let bootstrap = bootstrap::bootstrap(
        &store,
        &settings.dir,
        GivenTokens {
            server: settings.token.as_ref(),
            agent: settings.agent_token.as_ref(),
        },
        &settings.names,
        &settings.ips,
    )
    .await?;
    let metrics = ControlMetrics::new();
    let hub = LeaseHub::start(store.clone(), metrics.clone()).await?;
    let credentials = NodeCredentials::start(store.clone()).await?;
    let listener = listen(settings.bind).map_err(|e| ControlError::Listen {
        addr: settings.bind,
        reason: e.to_string(),
    })?;
    let plane = Arc::new(
        ControlPlane::new(
            store.clone(),
            hub,
            Arc::new(weft_api::pki::ClusterCa::from_pem(
                bootstrap.ca.cert_pem(),
                &bootstrap.ca.key_pem(),
            )?),
            JoinSecrets {
                server: bootstrap.token.secret.clone(),
                agent: bootstrap.agent_token.secret.clone(),
            },
            credentials,
            settings.network.clone(),
        )
        .with_bookmark_interval(settings.bookmark_interval),
    );
    servers::register_server(&store, &settings.url).await?;
    let bound = listener.local_addr().map_err(|e| ControlError::Listen {
        addr: settings.bind,
        reason: e.to_string(),
    })?;
    api_address::record(&settings.dir, &api_address::local_api_url(bound))?;
    metrics.refresh(&store).await;
    tokio::spawn(metrics.clone().refresh_forever(store.clone()));
    if matches!(settings.datastore, Datastore::Etcd { .. }) {
        tokio::spawn(compactor::run(store.kv().clone(), compactor::INTERVAL));
    }
    Ok(Started {
        store,
        bootstrap,
        plane,
        listener,
        url: settings.url,
        metrics,
    })
}

/// Claims the identities of nodes registered before servers kept claims (see
/// [`Store::claim_node`]), oldest lease first, so a node that registers after the upgrade can't
/// take an address, VTEP MAC or WireGuard key a node from before holds. Where two such nodes
/// already share a value, the older keeps it and the other is named in a warning (its agents'
/// peers already drop it, by the same rule).
async fn claim_earlier_nodes(store: &Store) -> Result<(), ControlError> {
    let nodes = store.list_nodes().await?;
    let mut unclaimed = Vec::new();
    for node in nodes
        .items
        .into_iter()
        .filter(|n| n.value.claims.is_empty())
    {
        let lease = store.get_lease(&node.value.name).await?;
        unclaimed.push((node, lease.map(|l| l.value)));
    }
    unclaimed.sort_by_key(|(node, lease)| {
        (
            lease.as_ref().map_or(u64::MAX, |l| l.created_revision),
            node.value.name.clone(),
        )
    });
    for (node, lease) in unclaimed {
        let backend = lease.map(|l| l.backend).unwrap_or_default();
        let claims = Claim::of_node(&node.value.node_ips, &node.value.external_ips, &backend);
        match store
            .claim_node(&node.value, &claims, Some(node.revision))
            .await
        {
            Ok(_) => {}
            Err(StoreError::Claimed { claim, owner }) => tracing::warn!(
                node = %node.value.name,
                "{}; its peers skip it until it registers with its own",
                claim.conflict(&owner)
            ),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The accept queue of the API port: Go's servers (K3s's) take the kernel's `somaxconn`,
/// usually 4096; tokio's default of 128 overflows when thousands of agents reconnect after a
/// restart, or a kube-apiserver opens many CONNECTs at once, and each overflow costs the
/// client a SYN retransmit of a second or more.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (with `SO_REUSEADDR`, as tokio does) and listens with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The critical settings a restart may change, as K3s's migration to wireguard-native does:
/// "update the config on every server, then restart the nodes, servers first".
pub const MIGRATABLE_SETTINGS: [Key; 3] = [
    Key::FlannelBackend,
    Key::FlannelIpv6Masq,
    Key::EgressSelectorMode,
];

/// Stores the cluster network on the cluster's first start; later, compares this server's
/// critical settings with the stored ones.
///
/// Any difference in the CIDRs, DNS, domain, masks, `flannel-external-ip` or
/// `disable-network-policy` is refused, naming every differing setting. A difference only in
/// [`MIGRATABLE_SETTINGS`] is the first step of a migration: the stored settings are updated
/// (with a warning that says what to do next), and the other servers and then the agents take
/// the new settings when they restart.
pub async fn check_network(store: &Store, network: &ClusterNetwork) -> Result<(), ControlError> {
    loop {
        let stored = match store
            .create_cluster_config_if_absent(&network.to_json())
            .await?
        {
            Created::Created(_) => {
                tracing::info!("stored the cluster network settings");
                return Ok(());
            }
            Created::Existing(stored) => stored,
        };
        let cluster: ClusterNetwork = ClusterNetwork::from_json(&stored.value)
            .map_err(|source| ControlError::StoredNetwork { source })?;
        let errors = network.compare_critical(&cluster);
        if errors.is_empty() {
            return Ok(());
        }
        let migratable = errors.iter().all(|e| {
            matches!(e, weft_config::ConfigError::CriticalMismatch { setting, .. }
                if MIGRATABLE_SETTINGS.contains(setting))
        });
        if !migratable {
            return Err(ControlError::CriticalMismatch { errors });
        }
        if store
            .update_cluster_config(&network.to_json(), stored.revision)
            .await?
            .is_some()
        {
            for e in &errors {
                if let weft_config::ConfigError::CriticalMismatch {
                    setting,
                    this,
                    cluster,
                } = e
                {
                    tracing::warn!(
                        "changed the cluster's {setting} from {cluster} to {this}; restart every other server with {setting}: {this}, then every agent"
                    );
                }
            }
            return Ok(());
        }
        // Another server changed the record meanwhile: compare again.
    }
}
