//! K3s-compatible network configuration for weft: the settings of `weft-server` and
//! `weft-agent`, read from config files, flags and environment, merged with K3s's precedence,
//! checked all at once, and the values that follow from them.
//!
//! Users come from K3s, so the names, files, environment variables and defaults are K3s's
//! (`cluster-cidr`, `/etc/weft/config.yaml` with `.d` drop-ins and `key+:`, `K3S_TOKEN`, ...).
//! weft is stricter where K3s silently misbehaves or fails late on each node: a named config
//! file that is missing, an unknown key, a flannel option given to an agent, CIDRs of mismatched
//! families and a cluster DNS outside the service CIDR are errors here, each naming the setting,
//! the bad value and the fix, and every one is reported in the same run.
//!
//! What it deliberately does not do: it is pure, with no tokio, netlink or nix. The host
//! (environment, files, hostname, routes and interface addresses for picking node IPs) is read
//! only through the [`Env`], [`Files`] and [`Host`] traits, whose real implementations only
//! read; tests feed them from maps (`fake`, behind the `test-util` feature). It never writes,
//! never logs (warnings are returned as [`Warning`] data) and never talks to other servers: the
//! control plane compares critical settings with [`ClusterNetwork::compare_critical`].
//!
//! Read first: [`load_server`] and [`load_agent`], which return a [`Loaded`] holding a
//! [`ServerConfig`] or [`AgentConfig`] (or every [`ConfigError`]) and the warnings; then
//! [`Key`] and its settings table, the one home of every setting; then [`ClusterNetwork`], which
//! servers persist and hand to agents as JSON ([`ClusterNetwork::to_json`] and
//! [`ClusterNetwork::from_json`]) and agents check themselves against
//! ([`NodeConfig::check_cluster`]); and [`NetConf`], flannel's `net-conf.json` as
//! `flannel-conf` gives it.

#![forbid(unsafe_code)]

mod cli;
mod datastore;
mod error;
mod file;
mod load;
mod model;
mod net_conf;
mod network;
mod node;
mod resolve;
mod setting;
mod source;

#[cfg(any(test, feature = "test-util"))]
pub mod fake;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
#[cfg(test)]
mod test_support;

pub use cli::{AgentFlags, ServerFlags, args, flag_values};
pub use datastore::{DatastoreClientCert, DatastoreTls};
pub use error::{ConfigError, NameSource, NetConfProblem, RecordProblem, Warning};
pub use load::{AgentConfig, Loaded, Report, ServerConfig, load_agent, load_data_dir, load_server};
pub use model::{
    ClusterDomain, DatastoreEndpoint, EgressSelectorMode, FlannelBackend, InterfaceName, LogFormat,
    MasqMode, NodeId, NodeName, ServerUrl, Token, WireguardImplementation, is_dns1123_subdomain,
};
pub use net_conf::{
    MAX_VNI, NetConf, NetConfBackend, Psk, REDACTED, Secrets, VxlanOptions, WireguardMode,
    WireguardOptions,
};
pub use network::{ClusterNetwork, Derived};
pub use node::{
    NodeConfig, NodeIdState, NodeIpSource, NodeIps, default_cni_conf_dir, node_id_file,
};
pub use resolve::FlagValues;
pub use setting::{
    DEFAULT_CLUSTER_DOMAIN, DEFAULT_CONFIG_FILE, DEFAULT_DATA_DIR, DEFAULT_KUBELET_PORT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, DEFAULT_METRICS_ADDRESS,
    DEFAULT_METRICS_PORT, DEFAULT_RECONCILE_INTERVAL_SECS, DEFAULT_SUBNET_FILE,
    DEFAULT_SUPERVISOR_PORT, Key, Kind, Origin, Role, Scope, Setting,
};
pub use source::{Env, Files, Host, Interface, OsEnv, OsFiles, OsHost, System};

/// What a secret shows as.
pub const SECRET_MASK: &str = "********";
