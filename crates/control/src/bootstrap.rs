//! The cluster's trust, made once and shared by every server: the cluster CA lives in the
//! store, sealed with a key derived from the server token's secret alone (as K3s seals its
//! bootstrap data), so a server given another token can't join. The agent token's secret is
//! sealed beside it the same way: every server knows it, and it opens nothing (agents holding
//! it register, and that is all). Each server then writes its own files: the CA, a serving
//! certificate for its addresses, the admin's and the kube-apiserver's client certificates and
//! the token files.
//!
//! On the cluster's first start the token file is written and fsynced before the sealed CA is
//! committed, so a crash in between leaves a server that starts again with the same secret
//! (rather than a CA sealed with a secret nobody kept).
//!
//! Files under `<data-dir>/server/`:
//!
//! | file | mode | what |
//! |---|---|---|
//! | `token` | 0600 | `K10<ca-hash>::server:<secret>`, for joining servers (and agents of clusters made before the agent token) |
//! | `agent-token` | 0600 | `K10<ca-hash>::node:<secret>`, for agents only |
//! | `tls/server-ca.crt` | 0644 | the cluster CA |
//! | `tls/server-ca.key` | 0600 | its key |
//! | `tls/serving.crt`, `tls/serving.key` | 0644/0600 | this server's TLS certificate |
//! | `tls/client-admin.crt`, `tls/client-admin.key` | 0644/0600 | the admin (`CN=system:admin`): `node list/delete` |
//! | `tls/client-kube-apiserver.crt`, `tls/client-kube-apiserver.key` | 0644/0600 | the kube-apiserver (`CN=system:apiserver`): HTTP CONNECT, nothing else |
//!
//! A server keeps the certificates it finds at start while they are still good, so files handed
//! to a kube-apiserver or an admin stay valid: the cluster CA issued them, at least
//! [`RENEW_BEFORE`](weft_api::pki::RENEW_BEFORE) is left, and the subject (or, for the serving
//! certificate, every name and address) is still the one wanted. Otherwise it issues new ones,
//! valid for [`LEAF_VALIDITY`](weft_api::pki::LEAF_VALIDITY).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use weft_api::pki::{
    CertificateCheck, CertificateInfo, CertifiedKey, ClientIdentity, ClusterCa, ServingNames,
    certificates_info,
};
use weft_api::token::{random_secret, secrets_equal};
use weft_api::{ApiError, JoinToken};
use weft_store::{Compare, Store, Txn};

use crate::ControlError;
use crate::files::{read_optional, write_file};

#[cfg(test)]
mod tests;

/// The store key of the sealed bootstrap record.
pub const BOOTSTRAP_KEY: &str = "/weft/bootstrap/ca";
/// The store key of the sealed agent token secret.
pub const AGENT_TOKEN_KEY: &str = "/weft/bootstrap/agent-token";
/// PBKDF2 rounds for the sealing key (the secret is usually 32 random bytes; the rounds are
/// for a weak `--token` a user chose).
const PBKDF2_ROUNDS: u32 = 20_000;

/// What a server has after bootstrap.
pub struct Bootstrap {
    /// The cluster CA.
    pub ca: ClusterCa,
    /// The server token (`K10<ca-hash>::server:<secret>`).
    pub token: JoinToken,
    /// The agent token (`K10<ca-hash>::node:<secret>`).
    pub agent_token: JoinToken,
    /// This server's serving certificate.
    pub serving: CertifiedKey,
    /// The admin's client certificate (`CN=system:admin`): node management.
    pub admin: CertifiedKey,
    /// The kube-apiserver's client certificate (`CN=system:apiserver`): HTTP CONNECT.
    pub kube_apiserver: CertifiedKey,
    /// Paths of the files written.
    pub paths: BootstrapPaths,
}

/// Where the bootstrap files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapPaths {
    /// The token file.
    pub token: PathBuf,
    /// The agent token file.
    pub agent_token: PathBuf,
    /// The CA certificate.
    pub ca_cert: PathBuf,
    /// The admin's client certificate.
    pub admin_cert: PathBuf,
    /// Its key.
    pub admin_key: PathBuf,
    /// The kube-apiserver's client certificate, which the EgressSelectorConfiguration names.
    pub kube_apiserver_cert: PathBuf,
    /// Its key.
    pub kube_apiserver_key: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    v: u32,
    salt: String,
    nonce: String,
    data: String,
}

#[derive(Serialize, Deserialize)]
struct CaRecord {
    cert_pem: String,
    key_pem: String,
}

#[derive(Serialize, Deserialize)]
struct AgentTokenRecord {
    secret: String,
}

/// The tokens a server was given (`--token`, `--agent-token`, or their files).
#[derive(Debug, Clone, Copy, Default)]
pub struct GivenTokens<'a> {
    /// The server token.
    pub server: Option<&'a JoinToken>,
    /// The agent token.
    pub agent: Option<&'a JoinToken>,
}

/// Bootstraps a server whose state dir is `dir` (`<data-dir>/server`): reads the cluster CA
/// from the store (or creates it on the very first start of the cluster), checks the tokens,
/// and writes this server's files. `names` and `ips` go into the serving certificate.
pub async fn bootstrap(
    store: &Store,
    dir: &Path,
    given: GivenTokens<'_>,
    names: &[String],
    ips: &[IpAddr],
) -> Result<Bootstrap, ControlError> {
    let paths = BootstrapPaths {
        token: dir.join("token"),
        agent_token: dir.join("agent-token"),
        ca_cert: dir.join("tls").join("server-ca.crt"),
        admin_cert: dir.join("tls").join("client-admin.crt"),
        admin_key: dir.join("tls").join("client-admin.key"),
        kube_apiserver_cert: dir.join("tls").join("client-kube-apiserver.crt"),
        kube_apiserver_key: dir.join("tls").join("client-kube-apiserver.key"),
    };
    if given.server.is_some_and(JoinToken::is_agent) {
        return Err(ControlError::AgentTokenForServer);
    }
    let saved = read_token(&paths.token)?;
    let secret = match (given.server, &saved) {
        (Some(t), _) => t.secret.clone(),
        (None, Some(t)) => t.secret.clone(),
        (None, None) => random_secret(),
    };
    let ca = load_or_create_ca(store, &secret, &paths.token).await?;
    let hash = ca.hash();
    if let Some(pinned) = given.server.and_then(|t| t.ca_hash.as_ref())
        && *pinned != hash
    {
        return Err(ControlError::TokenCaMismatch {
            pinned: pinned.clone(),
            actual: hash,
        });
    }
    if let Some(pinned) = given.agent.and_then(|t| t.ca_hash.as_ref())
        && *pinned != hash
    {
        return Err(ControlError::AgentTokenCaMismatch {
            pinned: pinned.clone(),
            actual: hash,
        });
    }
    let token = JoinToken::server(&hash, &secret);
    write_token(&paths.token, &token)?;
    let agent_secret =
        load_or_create_agent_secret(store, &secret, &hash, given.agent, &paths.agent_token).await?;
    let agent_token = JoinToken::agent(&hash, &agent_secret);
    write_token(&paths.agent_token, &agent_token)?;
    write_file(&paths.ca_cert, ca.cert_pem().as_bytes(), 0o644)?;
    write_file(
        &dir.join("tls").join("server-ca.key"),
        ca.key_pem().as_bytes(),
        0o600,
    )?;
    let now = SystemTime::now();
    let wanted = ServingNames::new(names, ips);
    let serving = keep_or_issue(
        &ca,
        (
            &dir.join("tls").join("serving.crt"),
            &dir.join("tls").join("serving.key"),
        ),
        now,
        |info| info.names == wanted,
        || ca.issue_server(names, ips),
    )?;
    let admin = keep_or_issue(
        &ca,
        (&paths.admin_cert, &paths.admin_key),
        now,
        |info| info.identity() == ClientIdentity::Admin,
        || ca.issue_admin(),
    )?;
    let kube_apiserver = keep_or_issue(
        &ca,
        (&paths.kube_apiserver_cert, &paths.kube_apiserver_key),
        now,
        |info| info.identity() == ClientIdentity::KubeApiserver,
        || ca.issue_kube_apiserver(),
    )?;
    Ok(Bootstrap {
        ca,
        token,
        agent_token,
        serving,
        admin,
        kube_apiserver,
        paths,
    })
}

/// The certificate and key at `(cert, key)` if `ca` may keep them at `now`
/// ([`ClusterCa::reusable`]) and they `fit`; else a new pair from `issue`, written there.
fn keep_or_issue(
    ca: &ClusterCa,
    (cert, key): (&Path, &Path),
    now: SystemTime,
    fit: impl FnOnce(&CertificateInfo) -> bool,
    issue: impl FnOnce() -> Result<CertifiedKey, ApiError>,
) -> Result<CertifiedKey, ControlError> {
    if let (Some(cert_pem), Some(key_pem)) = (read_optional(cert)?, read_optional(key)?) {
        let pair = CertifiedKey { cert_pem, key_pem };
        if ca.reusable(&pair, now).is_some_and(|info| fit(&info)) {
            return Ok(pair);
        }
    }
    let pair = issue()?;
    write_file(key, pair.key_pem.as_bytes(), 0o600)?;
    write_file(cert, pair.cert_pem.as_bytes(), 0o644)?;
    tracing::info!(file = %cert.display(), "issued a certificate");
    Ok(pair)
}

/// Every certificate in the `*.crt` files under `<dir>/tls/` (`dir` is `<data-dir>/server`), by
/// file name, as `weft-server certificate check` lists them at `now`: each named
/// `server/tls/<file>`. None when the directory does not exist (an agent-only host).
pub fn certificate_checks(
    dir: &Path,
    now: SystemTime,
) -> Result<Vec<CertificateCheck>, ControlError> {
    let tls = dir.join("tls");
    let unreadable = |path: &Path, reason: String| ControlError::File {
        path: path.to_owned(),
        reason,
    };
    let entries = match std::fs::read_dir(&tls) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(unreadable(&tls, e.to_string())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| unreadable(&tls, e.to_string()))?.path();
        if path.extension().is_some_and(|ext| ext == "crt") {
            files.push(path);
        }
    }
    files.sort();
    let mut checks = Vec::new();
    for path in files {
        let pem = read_optional(&path)?.unwrap_or_default();
        let infos = certificates_info(&pem).map_err(|e| unreadable(&path, e.to_string()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for info in infos {
            checks.push(CertificateCheck::new(
                format!("server/tls/{name}"),
                info,
                now,
            ));
        }
    }
    Ok(checks)
}

/// Reads the sealed CA from the store, or creates and stores it when there is none.
///
/// A new CA's token (its hash and `secret`) is written to `token_file` and fsynced before the
/// CA is committed: once the sealed CA is in the store, the secret that opens it is on disk.
async fn load_or_create_ca(
    store: &Store,
    secret: &str,
    token_file: &Path,
) -> Result<ClusterCa, ControlError> {
    loop {
        if let Some(kv) = store.kv().get(BOOTSTRAP_KEY).await? {
            let record: CaRecord = unseal(BOOTSTRAP_KEY, &kv.value, secret)?;
            return Ok(ClusterCa::from_pem(&record.cert_pem, &record.key_pem)?);
        }
        let ca = ClusterCa::generate()?;
        write_token(token_file, &JoinToken::server(&ca.hash(), secret))?;
        let record = CaRecord {
            cert_pem: ca.cert_pem().to_owned(),
            key_pem: ca.key_pem(),
        };
        let sealed = seal(&record, secret)?;
        let txn = Txn::new()
            .when(Compare::absent(BOOTSTRAP_KEY))
            .put(BOOTSTRAP_KEY, sealed);
        if store.kv().txn(txn).await?.succeeded {
            tracing::info!("created the cluster CA");
            return Ok(ca);
        }
        // Another server created it first: read theirs.
    }
}

/// Reads the agent token's secret from the store (sealed with the server token's secret), or
/// stores one: the given `--agent-token`, else the one in `file` (a crash after it was written
/// but before it was stored), else a new one. Like the CA, a new one is on disk before it is
/// committed.
async fn load_or_create_agent_secret(
    store: &Store,
    server_secret: &str,
    ca_hash: &str,
    given: Option<&JoinToken>,
    file: &Path,
) -> Result<String, ControlError> {
    loop {
        if let Some(kv) = store.kv().get(AGENT_TOKEN_KEY).await? {
            let record: AgentTokenRecord = unseal(AGENT_TOKEN_KEY, &kv.value, server_secret)?;
            if given.is_some_and(|t| !secrets_equal(&t.secret, &record.secret)) {
                return Err(ControlError::AgentTokenMismatch);
            }
            return Ok(record.secret);
        }
        let secret = match (given, read_token(file)?) {
            (Some(t), _) => t.secret.clone(),
            (None, Some(saved)) => saved.secret,
            (None, None) => random_secret(),
        };
        write_token(file, &JoinToken::agent(ca_hash, &secret))?;
        let sealed = seal(
            &AgentTokenRecord {
                secret: secret.clone(),
            },
            server_secret,
        )?;
        let txn = Txn::new()
            .when(Compare::absent(AGENT_TOKEN_KEY))
            .put(AGENT_TOKEN_KEY, sealed);
        if store.kv().txn(txn).await?.succeeded {
            tracing::info!("created the agent token");
            return Ok(secret);
        }
    }
}

/// Reads a token file, `None` when there is none.
fn read_token(path: &Path) -> Result<Option<JoinToken>, ControlError> {
    read_optional(path)?
        .map(|text| JoinToken::parse(&text).map_err(ControlError::Api))
        .transpose()
}

/// Writes a token file (mode 0600), durably.
fn write_token(path: &Path, token: &JoinToken) -> Result<(), ControlError> {
    write_file(path, format!("{token}\n").as_bytes(), 0o600)
}

fn key_for(secret: &str, salt: &[u8]) -> Key {
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(secret.as_bytes(), salt, PBKDF2_ROUNDS, &mut key);
    Key::from(key)
}

fn seal<T: Serialize>(value: &T, secret: &str) -> Result<Vec<u8>, ControlError> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut salt);
    rand::rng().fill_bytes(&mut nonce);
    let plain = serde_json::to_vec(value).map_err(ControlError::BootstrapEncoding)?;
    let data = ChaCha20Poly1305::new(&key_for(secret, &salt))
        .encrypt(Nonce::from_slice(&nonce), plain.as_slice())
        .map_err(|_| ControlError::BootstrapSeal)?;
    serde_json::to_vec(&Sealed {
        v: 1,
        salt: hex::encode(salt),
        nonce: hex::encode(nonce),
        data: hex::encode(data),
    })
    .map_err(ControlError::BootstrapEncoding)
}

fn unseal<T: for<'de> Deserialize<'de>>(
    key: &str,
    bytes: &[u8],
    secret: &str,
) -> Result<T, ControlError> {
    let corrupt = |what: &str, source: Option<serde_json::Error>| ControlError::BootstrapDamaged {
        key: key.to_owned(),
        what: what.to_owned(),
        source,
    };
    let sealed: Sealed =
        serde_json::from_slice(bytes).map_err(|e| corrupt("the envelope", Some(e)))?;
    if sealed.v != 1 {
        return Err(corrupt(&format!("unknown version {}", sealed.v), None));
    }
    let salt = hex::decode(&sealed.salt).map_err(|_| corrupt("salt", None))?;
    let nonce = hex::decode(&sealed.nonce).map_err(|_| corrupt("nonce", None))?;
    let data = hex::decode(&sealed.data).map_err(|_| corrupt("data", None))?;
    if nonce.len() != 12 {
        return Err(corrupt("nonce length", None));
    }
    let plain = ChaCha20Poly1305::new(&key_for(secret, &salt))
        .decrypt(Nonce::from_slice(&nonce), data.as_slice())
        .map_err(|_| ControlError::WrongToken)?;
    serde_json::from_slice(&plain).map_err(|e| corrupt("the sealed record", Some(e)))
}
