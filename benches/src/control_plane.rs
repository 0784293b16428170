//! The control-plane workload: a swarm of simulated agents in one process against one server,
//! through the real HTTPS API (weft-api's client), with no kernel.
//!
//! Each agent registers (its own node password, node IP and VTEP MAC, and a TLS connection of
//! its own), then holds a lease watch with its node certificate. Then one more node, which
//! watches nothing (registering again revokes a node's earlier certificate, and its watch),
//! changes its lease a few times, and the swarm times how long each change takes to reach
//! every watcher.
//! `cargo xtask bench control-plane` runs it with 5,000 agents against a `weft-server` process
//! (`examples/control_plane.rs`); the unit tests run a small swarm against a server in-process.
//!
//! Beside the swarm, [`SlowClients`] hold connections the way a slowloris attack does: each
//! finishes its TLS handshake, sends half a request line and goes silent, and connects again as
//! soon as the server's header deadline closes it, so the server carries them throughout.
//!
//! It measures; it does not judge: the example compares the figures with the targets.

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use weft_api::client::{self, NodeClient, TrustedCa};
use weft_api::pki::CertifiedKey;
use weft_api::protocol::{LeaseEvent, RegisterRequest};
use weft_api::{ApiError, JoinToken};
use weft_fabric::{BackendData, MacAddr};

/// How long the swarm waits for one phase (every watch open, one change everywhere).
pub const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

/// A swarm of simulated agents.
#[derive(Debug, Clone)]
pub struct Swarm {
    /// The server's URL (`https://127.0.0.1:9345`).
    pub server: String,
    /// The join token (`K10...`).
    pub token: JoinToken,
    /// How many agents.
    pub agents: usize,
    /// How many lease changes to time.
    pub rounds: usize,
    /// How many registrations or watch set-ups are in flight at once (the server's listen
    /// backlog is 1,024).
    pub concurrency: usize,
}

/// What a swarm measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// How many agents registered and watched.
    pub agents: usize,
    /// From the first registration to the last one's answer.
    pub registered: Duration,
    /// From the first watch request until every watch had its first bookmark.
    pub watching: Duration,
    /// One entry per lease change.
    pub rounds: Vec<Round>,
}

/// One lease change and its propagation.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// How long the changing registration took to answer.
    pub request: Duration,
    /// For each watcher, from sending the change until the watcher read it; sorted.
    pub latencies: Vec<Duration>,
}

/// What stops a swarm.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SwarmError {
    /// The server refused or failed a request.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A phase did not finish in time.
    #[error("{what} did not finish within {} s", PHASE_TIMEOUT.as_secs())]
    Timeout {
        /// The phase.
        what: String,
    },
    /// A watch ended before the swarm was done.
    #[error("the lease watch of agent {agent} ended: {reason}")]
    WatchEnded {
        /// The agent's index.
        agent: usize,
        /// Why.
        reason: String,
    },
}

/// Clients that each hold a connection with half a request line, as a slowloris attack does:
/// TLS handshake done, `GET /cacerts HTTP/1.1\r\nHost: x\r\n` sent, then silence. A client
/// the server closes connects again at once, so about `count` are held throughout. Dropping
/// them closes every one.
#[derive(Debug)]
pub struct SlowClients {
    counts: Arc<SlowCounts>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct SlowCounts {
    /// Connections with their half request sent and not yet closed.
    held: AtomicUsize,
    /// Connections the server closed after their half request.
    closed: AtomicUsize,
}

/// What each slow client sends: a request line and one header, and never the blank line.
const HALF_REQUEST: &[u8] = b"GET /cacerts HTTP/1.1\r\nHost: x\r\n";

/// One registered agent.
struct Agent {
    name: String,
    password: String,
    ip: IpAddr,
    identity: CertifiedKey,
}

/// What watcher tasks tell the swarm.
enum Heard {
    /// The first bookmark: the watch is open.
    Open,
    /// A lease change arrived at this instant.
    Put(Instant),
    /// The watch ended.
    Ended(usize, String),
}

// === impl Swarm ===

impl Swarm {
    /// Registers every agent, opens every watch, then times `rounds` lease changes.
    pub async fn run(&self) -> Result<Report, SwarmError> {
        let ca = client::fetch_ca(&self.server, &self.token).await?;

        let started = Instant::now();
        let agents = self.register_all(&ca).await?;
        let registered = started.elapsed();
        // The lease that changes is one more node's, which watches nothing: a node that
        // registers again is issued a new certificate, which ends its own watch.
        let mover = self.register_one(&ca, self.agents).await?;

        let first = NodeClient::new(&ca.ca_pem, &agents[0].identity)?;
        let revision = first.list_leases(&self.server).await?.revision;
        let (tx, mut heard) = mpsc::unbounded_channel();
        let started = Instant::now();
        let watchers = self.watch_all(&ca, &agents, revision, tx)?;
        let mut open = 0;
        while open < agents.len() {
            match next(&mut heard, "opening every lease watch").await? {
                Heard::Open => open += 1,
                Heard::Put(_) => {}
                Heard::Ended(agent, reason) => {
                    return Err(SwarmError::WatchEnded { agent, reason });
                }
            }
        }
        let watching = started.elapsed();

        let mut rounds = Vec::with_capacity(self.rounds);
        for round in 0..self.rounds {
            rounds.push(self.change(&ca, &mover, round, &mut heard).await?);
        }
        for watcher in watchers {
            watcher.abort();
        }
        Ok(Report {
            agents: agents.len(),
            registered,
            watching,
            rounds,
        })
    }

    /// Registers every agent, `concurrency` at a time.
    async fn register_all(&self, ca: &TrustedCa) -> Result<Vec<Agent>, SwarmError> {
        let registrations = (0..self.agents).map(|i| self.register_one(ca, i));
        let mut agents: Vec<Agent> = futures::stream::iter(registrations)
            .buffer_unordered(self.concurrency.max(1))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(agents)
    }

    /// Registers agent number `i` (its name, address and VTEP MAC follow from `i`).
    async fn register_one(&self, ca: &TrustedCa, i: usize) -> Result<Agent, SwarmError> {
        let agent = Agent {
            name: format!("agent-{i:05}"),
            password: weft_api::token::random_secret(),
            ip: agent_ip(i),
            identity: CertifiedKey {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
        };
        let request = agent.request(vtep_mac(i, 0));
        let answer =
            client::register(&self.server, ca, &self.token, &agent.password, &request).await?;
        Ok(Agent {
            identity: CertifiedKey {
                cert_pem: answer.node_cert_pem,
                key_pem: answer.node_key_pem,
            },
            ..agent
        })
    }

    /// Starts one watch task per agent, `concurrency` connecting at a time.
    fn watch_all(
        &self,
        ca: &TrustedCa,
        agents: &[Agent],
        revision: u64,
        tx: mpsc::UnboundedSender<Heard>,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, SwarmError> {
        let connecting = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut tasks = Vec::with_capacity(agents.len());
        for (index, agent) in agents.iter().enumerate() {
            let client = NodeClient::new(&ca.ca_pem, &agent.identity)?;
            let (server, tx, connecting) = (self.server.clone(), tx.clone(), connecting.clone());
            tasks.push(tokio::spawn(async move {
                let permit = connecting.acquire_owned().await;
                let mut watch = match client.watch_leases(&server, revision).await {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = tx.send(Heard::Ended(index, e.to_string()));
                        return;
                    }
                };
                let mut permit = Some(permit);
                loop {
                    let heard = match watch.next().await {
                        Ok(Some(LeaseEvent::Put { .. })) => Heard::Put(Instant::now()),
                        Ok(Some(LeaseEvent::Bookmark { .. })) if permit.take().is_some() => {
                            Heard::Open
                        }
                        Ok(Some(LeaseEvent::Compacted { oldest })) => {
                            Heard::Ended(index, format!("compacted (oldest {oldest})"))
                        }
                        Ok(Some(_)) => continue,
                        Ok(None) => Heard::Ended(index, "the server ended it".to_owned()),
                        Err(e) => Heard::Ended(index, e.to_string()),
                    };
                    let ended = matches!(heard, Heard::Ended(..));
                    if tx.send(heard).is_err() || ended {
                        return;
                    }
                }
            }));
        }
        Ok(tasks)
    }

    /// Changes `agent`'s VTEP MAC and waits until every watcher has read the change.
    async fn change(
        &self,
        ca: &TrustedCa,
        agent: &Agent,
        round: usize,
        heard: &mut mpsc::UnboundedReceiver<Heard>,
    ) -> Result<Round, SwarmError> {
        // Let the previous round's stragglers (none expected) drain first.
        while heard.try_recv().is_ok() {}
        let sent = Instant::now();
        let request = agent.request(vtep_mac(self.agents, round + 1));
        client::register(&self.server, ca, &self.token, &agent.password, &request).await?;
        let request = sent.elapsed();
        let mut latencies = Vec::with_capacity(self.agents);
        while latencies.len() < self.agents {
            match next(heard, "one lease change reaching every watcher").await? {
                Heard::Put(at) => latencies.push(at.saturating_duration_since(sent)),
                Heard::Open => {}
                Heard::Ended(agent, reason) => {
                    return Err(SwarmError::WatchEnded { agent, reason });
                }
            }
        }
        latencies.sort();
        Ok(Round { request, latencies })
    }
}

// === impl Agent ===

impl Agent {
    fn request(&self, mac: MacAddr) -> RegisterRequest {
        RegisterRequest {
            node_name: self.name.clone(),
            node_ips: vec![self.ip],
            external_ips: Vec::new(),
            backend: BackendData::Vxlan {
                vtep_mac_ipv4: Some(mac),
                vtep_mac_ipv6: None,
            },
        }
    }
}

// === impl SlowClients ===

impl SlowClients {
    /// Starts `count` slow clients against `server`, trusting the cluster CA `ca_pem` (the
    /// server's certificate must name `server`'s IP). Call it inside a tokio runtime.
    pub fn start(
        server: SocketAddr,
        ca_pem: &str,
        count: usize,
    ) -> Result<SlowClients, SwarmError> {
        let tls = weft_api::tls::client_config(ca_pem, None)?;
        let counts = Arc::new(SlowCounts::default());
        let tasks = (0..count)
            .map(|_| tokio::spawn(slow_client(server, tls.clone(), counts.clone())))
            .collect();
        Ok(SlowClients { counts, tasks })
    }

    /// How many hold a connection with their half request now.
    pub fn held(&self) -> usize {
        self.counts.held.load(Ordering::Relaxed)
    }

    /// How many connections the server has closed after their half request so far.
    pub fn closed(&self) -> usize {
        self.counts.closed.load(Ordering::Relaxed)
    }

    /// Waits until every client holds a connection.
    pub async fn all_held(&self) -> Result<(), SwarmError> {
        let all = async {
            while self.held() < self.tasks.len() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(PHASE_TIMEOUT, all)
            .await
            .map_err(|_| SwarmError::Timeout {
                what: format!("connecting {} slow clients", self.tasks.len()),
            })
    }
}

impl Drop for SlowClients {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One slow client, connecting again whenever its connection ends.
async fn slow_client(server: SocketAddr, tls: Arc<ClientConfig>, counts: Arc<SlowCounts>) {
    loop {
        if hold_once(server, tls.clone(), &counts).await.is_err() {
            // Refused or reset before the half request went out: try again shortly.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Connects, sends [`HALF_REQUEST`] and holds the connection until the server ends it.
async fn hold_once(
    server: SocketAddr,
    tls: Arc<ClientConfig>,
    counts: &SlowCounts,
) -> std::io::Result<()> {
    let tcp = TcpStream::connect(server).await?;
    let name = ServerName::from(server.ip());
    let mut stream = TlsConnector::from(tls).connect(name, tcp).await?;
    stream.write_all(HALF_REQUEST).await?;
    counts.held.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 256];
    // Ends at the server's close, with or without a TLS close_notify.
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    counts.held.fetch_sub(1, Ordering::Relaxed);
    counts.closed.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

// === impl Round ===

impl Round {
    /// The latency below which `percent` of the watchers read the change (nearest rank).
    pub fn percentile(&self, percent: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (percent / 100.0 * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

/// Agent `i`'s node IP: `100.64.0.0/10` counted up.
fn agent_ip(i: usize) -> IpAddr {
    let [_, b, c, d] = (i as u32).to_be_bytes();
    IpAddr::from([100, 64 + (b & 0x3f), c, d])
}

/// A MAC per agent and round.
fn vtep_mac(agent: usize, round: usize) -> MacAddr {
    let [_, _, a, b] = (agent as u32).to_be_bytes();
    let [_, _, c, d] = (round as u32).to_be_bytes();
    MacAddr::local_from([0, a, b, c, d, 1])
}

async fn next(heard: &mut mpsc::UnboundedReceiver<Heard>, what: &str) -> Result<Heard, SwarmError> {
    match tokio::time::timeout(PHASE_TIMEOUT, heard.recv()).await {
        Ok(Some(heard)) => Ok(heard),
        Ok(None) => Err(SwarmError::WatchEnded {
            agent: 0,
            reason: "every watch task ended".to_owned(),
        }),
        Err(_) => Err(SwarmError::Timeout {
            what: what.to_owned(),
        }),
    }
}
