//! The agent's side: [`AgentDialer`] performs only the dials its [`Authorizer`] allows, and
//! [`AgentTunnels`] keeps one tunnel to every server, reconnecting with jittered backoff and
//! following servers as they join and leave.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rand::Rng;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::policy::Authorizer;
use crate::proto::{Config, DialError, Role, Target};
use crate::server::CONNECT_PATH;
use crate::transport::{Connection, Dialer, websocket};

/// How long a dial for the tunnel may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(20);

/// Dials for the servers what the authorizer allows, and nothing else.
#[derive(Debug)]
pub struct AgentDialer {
    authorizer: RwLock<Authorizer>,
}

/// The wait between reconnects: doubling from `initial` to `max`, each wait jittered by up to
/// half, and back to `initial` after a connection that lasted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

/// One tunnel per server, kept up.
pub struct AgentTunnels {
    /// The TLS configuration the next connection uses; every tunnel's task reads it anew.
    tls: Arc<RwLock<Arc<ClientConfig>>>,
    dialer: Arc<AgentDialer>,
    config: Config,
    backoff: Backoff,
    servers: Mutex<HashMap<String, Server>>,
}

struct Server {
    task: JoinHandle<()>,
    current: Arc<Mutex<Option<Connection>>>,
}

// === impl AgentDialer ===

impl AgentDialer {
    /// A dialer checking every dial against `authorizer`.
    pub fn new(authorizer: Authorizer) -> AgentDialer {
        AgentDialer {
            authorizer: RwLock::new(authorizer),
        }
    }

    /// Replaces the rules (the node's IPs, pod CIDRs or pods changed).
    pub fn set_authorizer(&self, authorizer: Authorizer) {
        *self
            .authorizer
            .write()
            .unwrap_or_else(PoisonError::into_inner) = authorizer;
    }

    /// Whether the rules allow `target`; a refusal is logged, with the floor class it falls in.
    fn allows(&self, target: &Target) -> bool {
        let authorizer = self
            .authorizer
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if authorizer.allows(target) {
            return true;
        }
        match authorizer.below_floor(target) {
            Some(class) => {
                tracing::warn!(%target, "refused a tunnel dial to {class}, which no agent dials")
            }
            None => tracing::warn!(%target, "refused a tunnel dial the authorizer does not allow"),
        }
        false
    }
}

impl Dialer for AgentDialer {
    fn dial(
        &self,
        target: Target,
    ) -> Pin<Box<dyn Future<Output = Result<TcpStream, DialError>> + Send + '_>> {
        Box::pin(async move {
            if !self.allows(&target) {
                return Err(DialError::NotAllowed);
            }
            let connect = TcpStream::connect((target.host(), target.port()));
            let tcp = tokio::time::timeout(DIAL_TIMEOUT, connect)
                .await
                .map_err(|_| DialError::TimedOut)?
                .map_err(dial_error)?;
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        })
    }
}

/// The dial error a failed connect reports to the server.
fn dial_error(error: io::Error) -> DialError {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => DialError::ConnectionRefused,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            DialError::Unreachable
        }
        io::ErrorKind::TimedOut => DialError::TimedOut,
        _ => DialError::failed(error),
    }
}

// === impl Backoff ===

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait after `failures` failures in a row: between half and all of
    /// `initial * 2^failures`, capped at `max`.
    pub fn wait(&self, failures: u32) -> Duration {
        let full = self
            .initial
            .saturating_mul(1 << failures.min(16))
            .min(self.max);
        let half = full / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

// === impl AgentTunnels ===

impl AgentTunnels {
    /// Tunnels that authenticate with `tls` (the cluster CA and the node's certificate) and
    /// dial through `dialer`.
    pub fn new(
        tls: Arc<ClientConfig>,
        dialer: Arc<AgentDialer>,
        config: Config,
        backoff: Backoff,
    ) -> AgentTunnels {
        AgentTunnels {
            tls: Arc::new(RwLock::new(tls)),
            dialer,
            config,
            backoff,
            servers: Mutex::new(HashMap::new()),
        }
    }

    /// Authenticates every connection from now on with `tls` (the node's certificate was
    /// renewed). Live tunnels go on as they are; each one that ends reconnects with `tls`.
    pub fn set_tls(&self, tls: Arc<ClientConfig>) {
        *self.tls.write().unwrap_or_else(PoisonError::into_inner) = tls;
    }

    /// Keeps a tunnel to each of `servers` (`host:port` of their supervisor port) and drops
    /// the tunnels to servers not listed.
    pub fn set_servers(&self, servers: &[String]) {
        let mut current = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        current.retain(|address, server| {
            let keep = servers.contains(address);
            if !keep {
                server.task.abort();
                if let Some(connection) = server.connection() {
                    connection.close("the server left the cluster");
                }
            }
            keep
        });
        for address in servers {
            if current.contains_key(address) {
                continue;
            }
            let slot = Arc::new(Mutex::new(None));
            let task = tokio::spawn(keep_connected(
                format!("wss://{address}{CONNECT_PATH}"),
                self.tls.clone(),
                self.dialer.clone(),
                self.config.clone(),
                self.backoff,
                slot.clone(),
            ));
            current.insert(
                address.clone(),
                Server {
                    task,
                    current: slot,
                },
            );
        }
    }

    /// How many tunnels are live, and how many streams they carry, for metrics.
    pub fn stats(&self) -> crate::server::TunnelStats {
        let servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut stats = crate::server::TunnelStats::default();
        for connection in servers.values().filter_map(Server::connection) {
            if !connection.is_closed() {
                stats.sessions += 1;
                stats.streams += connection.stats().streams;
            }
        }
        stats
    }

    /// The servers with a live tunnel, sorted.
    pub fn connected(&self) -> Vec<String> {
        let servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut connected: Vec<String> = servers
            .iter()
            .filter(|(_, server)| server.connection().is_some_and(|c| !c.is_closed()))
            .map(|(address, _)| address.clone())
            .collect();
        connected.sort();
        connected
    }
}

impl Drop for AgentTunnels {
    fn drop(&mut self) {
        self.set_servers(&[]);
    }
}

impl std::fmt::Debug for AgentTunnels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTunnels")
            .field("connected", &self.connected())
            .finish()
    }
}

// === impl Server ===

impl Server {
    fn connection(&self) -> Option<Connection> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Connects to `url` with the TLS configuration `tls` holds at that moment, drives the tunnel
/// until it ends, waits, and again, forever.
async fn keep_connected(
    url: String,
    tls: Arc<RwLock<Arc<ClientConfig>>>,
    dialer: Arc<AgentDialer>,
    config: Config,
    backoff: Backoff,
    slot: Arc<Mutex<Option<Connection>>>,
) {
    let mut failures = 0;
    loop {
        let current = tls.read().unwrap_or_else(PoisonError::into_inner).clone();
        match websocket::connect(&url, current).await {
            Ok(socket) => {
                let dialer: Arc<dyn Dialer> = dialer.clone();
                match Connection::new(socket, Role::Agent, config.clone(), Some(dialer)) {
                    Ok((connection, driver)) => {
                        tracing::info!(%url, "tunnel connected");
                        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(connection);
                        let started = tokio::time::Instant::now();
                        let reason = driver.await;
                        tracing::warn!(%url, %reason, "tunnel closed, reconnecting");
                        *slot.lock().unwrap_or_else(PoisonError::into_inner) = None;
                        if started.elapsed() > backoff.max {
                            failures = 0;
                        }
                    }
                    Err(error) => tracing::error!(%url, %error, "invalid tunnel config"),
                }
            }
            Err(error) => tracing::warn!(%url, %error, "tunnel connect failed"),
        }
        tokio::time::sleep(backoff.wait(failures)).await;
        failures = failures.saturating_add(1);
    }
}
