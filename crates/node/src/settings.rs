//! From weft-config's checked node settings to what the agent runtime needs: the agent's
//! settings, the join token, and the node name with its `--with-node-id` suffix.

use std::path::Path;

use rand::RngCore;
use weft_api::JoinToken;
use weft_config::{NodeConfig, NodeId, NodeIdState, Token};

use crate::NodeError;
use crate::agent::AgentSettings;
use crate::files::write_atomic;

/// The node name, creating the `--with-node-id` id file on the first start (4 random bytes,
/// 8 hex digits, as K3s's `/etc/rancher/node/id`).
pub fn node_name(node: &NodeConfig) -> Result<String, NodeError> {
    match &node.node_id {
        NodeIdState::Known(id) => Ok(node.node_name.with_id(id).as_str().to_owned()),
        NodeIdState::Pending { path } => {
            let mut bytes = [0u8; 4];
            rand::rng().fill_bytes(&mut bytes);
            let text = format!("{}\n", weft_api::token::hex_encode(&bytes));
            write_atomic(path, text.as_bytes(), 0o644)?;
            let id = NodeId::parse(&text).ok_or_else(|| NodeError::Corrupt {
                path: path.clone(),
                reason: "the id just written does not read back".into(),
            })?;
            Ok(node.node_name.with_id(&id).as_str().to_owned())
        }
        NodeIdState::Off => Ok(node.node_name.as_str().to_owned()),
    }
}

/// The join token from `token`, else from `token-file`.
pub fn join_token(node: &NodeConfig) -> Result<JoinToken, NodeError> {
    given_token(
        node.token.as_ref(),
        node.token_file.as_deref(),
        "token-file",
    )?
    .ok_or(NodeError::NoToken)
}

/// A token given as text, else in a file (`file_setting` names the file's setting in errors:
/// `token-file`, `agent-token-file`); `None` when neither is given.
pub fn given_token(
    text: Option<&Token>,
    file: Option<&Path>,
    file_setting: &str,
) -> Result<Option<JoinToken>, NodeError> {
    let text = match (text, file) {
        (Some(token), _) => token.expose().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|source| NodeError::File {
            path: path.to_owned(),
            hint: format!(" ({file_setting} must name a readable file holding the token)"),
            source,
        })?,
        (None, None) => return Ok(None),
    };
    JoinToken::parse(&text).map(Some).map_err(NodeError::Api)
}

/// The agent settings of a checked node configuration.
pub fn agent_settings(node: &NodeConfig, node_name: String) -> AgentSettings {
    AgentSettings {
        dir: node.data_dir.join("agent"),
        node_name,
        node_ips: node.node_ips.addrs.clone(),
        external_ips: node.node_external_ips.clone(),
        flannel_iface: node.flannel_iface.as_ref().map(|i| i.as_str().to_owned()),
        subnet_file: node.subnet_file.clone(),
        cni_conf_dir: node.cni_conf_dir.clone(),
        flannel_cni_conf: node.flannel_cni_conf.clone(),
        masq_mode: match node.masq_mode {
            weft_config::MasqMode::Iptables => weft_fabric::MasqMode::Iptables,
            weft_config::MasqMode::Nftables => weft_fabric::MasqMode::Nftables,
        },
        reconcile_interval: node.reconcile_interval,
        wireguard_implementation: wireguard_implementation(node),
    }
}

/// `wireguard-implementation`: the implementation it forces, or `None` for auto.
pub fn wireguard_implementation(node: &NodeConfig) -> Option<weft_fabric::WgImplementation> {
    match node.wireguard_implementation {
        weft_config::WireguardImplementation::Kernel => Some(weft_fabric::WgImplementation::Kernel),
        weft_config::WireguardImplementation::Userspace => {
            Some(weft_fabric::WgImplementation::Userspace)
        }
        weft_config::WireguardImplementation::Auto => None,
    }
}
