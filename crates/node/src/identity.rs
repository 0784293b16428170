//! What makes a node the same node across restarts and reboots, kept in the agent's data dir:
//! its node password (the server refuses another machine claiming the name), its VTEP MACs
//! (peers keep their FDB entries), its WireGuard private key (peers keep their peer entries,
//! unlike flannel's key on tmpfs, which changes at every boot), and the credentials
//! registration returned.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use weft_api::pki::{CertificateCheck, CertifiedKey, certificate_info};
use weft_fabric::MacAddr;
use weft_kernel::WgPrivateKey;

use crate::NodeError;
use crate::files::{read_optional, write_atomic};

#[cfg(test)]
mod tests;

/// The node's own secrets and addresses.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node password (64 hex characters), sent at registration.
    pub password: String,
    /// The MAC of `flannel.1`.
    pub vtep_mac_v4: MacAddr,
    /// The MAC of `flannel-v6.1`.
    pub vtep_mac_v6: MacAddr,
    /// The private key of `flannel-wg` and `flannel-wg-v6` (file `wireguard-key`, mode 0600).
    pub wireguard_key: WgPrivateKey,
}

/// What registration gave the node, so a restart can reconnect without the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Credentials {
    /// The cluster CA bundle, PEM (pinned).
    pub ca_pem: String,
    /// The node's client certificate, PEM.
    pub cert_pem: String,
    /// Its key, PEM.
    pub key_pem: String,
    /// Every server's URL.
    pub servers: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct MacFile {
    ipv4: String,
    ipv6: String,
}

// === impl NodeIdentity ===

impl NodeIdentity {
    /// Loads the identity from `dir`, creating what is missing (password file mode 0600).
    pub fn load_or_create(dir: &Path) -> Result<NodeIdentity, NodeError> {
        let password_file = dir.join("node-password");
        let password = match read_optional(&password_file)? {
            Some(p) if is_hex(p.trim(), 64) => p.trim().to_owned(),
            Some(_) => {
                return Err(NodeError::Corrupt {
                    path: password_file,
                    reason: "it must hold 64 hex characters; restore it from a backup, or delete it and `weft-server node delete` this node".into(),
                });
            }
            None => {
                let p = weft_api::token::random_secret();
                write_atomic(&password_file, format!("{p}\n").as_bytes(), 0o600)?;
                p
            }
        };
        let mac_file = dir.join("vtep-macs.json");
        let (vtep_mac_v4, vtep_mac_v6) = match read_optional(&mac_file)? {
            Some(text) => {
                let corrupt = |reason: String| NodeError::Corrupt {
                    path: mac_file.clone(),
                    reason,
                };
                let macs: MacFile =
                    serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
                (
                    macs.ipv4
                        .parse()
                        .map_err(|e: weft_fabric::FabricError| corrupt(e.to_string()))?,
                    macs.ipv6
                        .parse()
                        .map_err(|e: weft_fabric::FabricError| corrupt(e.to_string()))?,
                )
            }
            None => {
                let (v4, v6) = (random_mac(), random_mac());
                let text = serde_json::to_string_pretty(&MacFile {
                    ipv4: v4.to_string(),
                    ipv6: v6.to_string(),
                })
                .unwrap_or_default();
                write_atomic(&mac_file, text.as_bytes(), 0o644)?;
                (v4, v6)
            }
        };
        let key_file = dir.join("wireguard-key");
        let wireguard_key = match read_optional(&key_file)? {
            Some(text) => WgPrivateKey::from_base64(&text).ok_or_else(|| NodeError::Corrupt {
                path: key_file.clone(),
                reason: "it must hold a base64 WireGuard private key (`wg genkey`); delete it and the agent makes a new one (peers learn it from the lease)".into(),
            })?,
            None => {
                let key = WgPrivateKey::generate();
                write_atomic(&key_file, format!("{}\n", key.to_base64()).as_bytes(), 0o600)?;
                key
            }
        };
        Ok(NodeIdentity {
            password,
            vtep_mac_v4,
            vtep_mac_v6,
            wireguard_key,
        })
    }
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("password", &"********")
            .field("vtep_mac_v4", &self.vtep_mac_v4)
            .field("vtep_mac_v6", &self.vtep_mac_v6)
            .field("wireguard_key", &self.wireguard_key)
            .finish()
    }
}

// === impl Credentials ===

impl Credentials {
    fn path(dir: &Path) -> PathBuf {
        dir.join("credentials.json")
    }

    /// The credentials saved in `dir`, if any.
    pub fn load(dir: &Path) -> Result<Option<Credentials>, NodeError> {
        let path = Credentials::path(dir);
        read_optional(&path)?
            .map(|text| {
                serde_json::from_str(&text).map_err(|e| NodeError::Corrupt {
                    path: path.clone(),
                    reason: format!("{e}; delete it and the agent registers again"),
                })
            })
            .transpose()
    }

    /// Saves the credentials in `dir` (mode 0600: it holds the node's private key).
    pub fn save(&self, dir: &Path) -> Result<(), NodeError> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        write_atomic(&Credentials::path(dir), text.as_bytes(), 0o600)?;
        Ok(())
    }

    /// The node certificate as `weft-server certificate check` lists it at `now`, named
    /// `agent/credentials.json` (the file in the agent's data dir, `<data-dir>/agent`).
    pub fn certificate_check(&self, now: SystemTime) -> Result<CertificateCheck, NodeError> {
        let info = certificate_info(&self.cert_pem)?;
        Ok(CertificateCheck::new(
            "agent/credentials.json".to_owned(),
            info,
            now,
        ))
    }

    /// The node's certificate and key.
    pub fn identity(&self) -> CertifiedKey {
        CertifiedKey {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

fn random_mac() -> MacAddr {
    let mut bytes = [0u8; 6];
    rand::rng().fill_bytes(&mut bytes);
    MacAddr::local_from(bytes)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}
