//! Wiring for `weft-server`'s subcommands: load the configuration through the real host, start
//! weft-control and the embedded agent, print, and pick the exit code.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use weft_api::client::AdminClient;
use weft_api::http::ServeLimits;
use weft_api::pki::CertifiedKey;
use weft_config::{Role, ServerConfig, ServerFlags, System, load_data_dir, load_server};
use weft_control::egress as server_egress;
use weft_control::{ServerSettings, bootstrap, servers};
use weft_node::daemon;
use weft_node::health::{Readiness, reasons};
use weft_node::identity::Credentials;
use weft_node::metrics::{self, AgentMetrics, Registry};
use weft_node::settings::{given_token, node_name};
use weft_node::start::{self, Start};
use weft_store::{ClientCertFiles, Datastore, EtcdTlsFiles};

/// How long a stopping server waits for the store to remove its record.
const UNREGISTER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `weft-server validate`: prints the effective configuration, or every error.
pub(crate) fn validate(flags: &ServerFlags) -> anyhow::Result<ExitCode> {
    let loaded = load_server(&flags.0, System::os());
    let report = loaded.report(|config| config.to_json());
    Ok(daemon::print_report(&report)?)
}

/// The server: control plane, then the embedded agent, until SIGTERM or Ctrl-C.
pub(crate) fn server(flags: &ServerFlags) -> anyhow::Result<ExitCode> {
    let Some(config) = load(flags) else {
        return Ok(ExitCode::FAILURE);
    };
    daemon::init_logging(config.node.log_format);
    let open_files = daemon::raise_nofile_limit();
    tracing::debug!(open_files, "open-files limit");
    let rt = daemon::runtime().context("starting the tokio runtime")?;
    rt.block_on(async {
        let started = match weft_control::start(settings(&config)?).await {
            Ok(s) => s,
            Err(e) => {
                // With its causes: `error: the cluster network in the store can't be used: ...`.
                daemon::write_errors(&format!("{:#}", anyhow::Error::from(e)));
                return Ok(ExitCode::FAILURE);
            }
        };
        let url = started.url.clone();
        let store = started.store.clone();
        let token = started.bootstrap.agent_token.clone();
        tracing::info!(%url, token_file = %started.bootstrap.paths.token.display(), "serving");
        let tls = weft_api::tls::server_config(
            started.bootstrap.ca.cert_pem(),
            &started.bootstrap.serving,
        )?;
        // The embedded agent's node name, made once (--with-node-id makes a random id once).
        let local_node = (!config.disable_agent)
            .then(|| node_name(&config.node))
            .transpose()?;
        let egress_settings = server_egress::EgressSettings::for_server(
            &config.node.data_dir.join("server"),
            &started.bootstrap.paths,
            SocketAddr::new(config.node.bind_address, config.supervisor_port),
            &config.network,
            local_node.clone(),
            config.node.kubelet_port,
        );
        let mut egress =
            server_egress::start(store.clone(), started.plane.hub().clone(), egress_settings)
                .await?;
        egress.export_metrics(started.metrics.clone());
        // One /readyz for the control plane and the embedded agent.
        let readiness = Readiness::default();
        let store_open = readiness.condition(reasons::STORE_NOT_OPEN);
        let api_serving = readiness.condition(reasons::API_NOT_SERVING);
        let agent_ready = (!config.disable_agent).then(|| {
            (
                readiness.condition(reasons::NOT_JOINED),
                readiness.condition(reasons::NOT_RECONCILED),
            )
        });
        store_open.set();
        let limits =
            ServeLimits::with_caps(config.max_connections, config.max_connections_per_address);
        let serve = tokio::spawn(weft_api::http::serve_limited(
            started.listener,
            tls,
            egress.front(started.plane.clone()),
            limits,
            Arc::new(started.metrics.clone()),
        ));
        api_serving.set();
        // One /metrics for the control plane and the embedded agent.
        let agent_metrics = AgentMetrics::new();
        let mut registry = Registry::default();
        started.metrics.register(&mut registry);
        if !config.disable_agent {
            agent_metrics.register(&mut registry);
        }
        metrics::register_process(&mut registry);
        let metrics_endpoint =
            metrics::spawn(config.node.metrics_address, registry, readiness).await;

        let outcome = match agent_ready {
            None => {
                daemon::shutdown_signal().await;
                Ok(())
            }
            Some(ready) => {
                // The embedded agent reaches its own server over loopback: the cluster knows
                // the server by its advertise URL, which may not route back to this host.
                let local = local_url(&config);
                let (joined, reconciled) = ready;
                let start = Start {
                    node: &config.node,
                    node_name: local_node.unwrap_or_default(),
                    servers: vec![local.clone()],
                    token,
                    alias: Some((url.clone(), local)),
                    metrics: agent_metrics,
                    joined,
                    reconciled,
                };
                start::run(start, daemon::shutdown_signal())
                    .await
                    .map_err(anyhow::Error::from)
            }
        };
        serve.abort();
        drop(metrics_endpoint);
        egress.stop();
        // Bounded well within the stop deadline: a store that does not answer keeps the record.
        match tokio::time::timeout(UNREGISTER_TIMEOUT, servers::unregister_server(&store, &url))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not remove this server's record"),
            Err(_) => tracing::warn!(
                "the store did not answer within 2 s; this server's record stays, and agents skip it"
            ),
        }
        match outcome {
            Ok(()) => {
                tracing::info!("stopped");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e),
        }
    })
}

/// `weft-server node list`.
pub(crate) fn node_list(flags: &ServerFlags) -> anyhow::Result<ExitCode> {
    let Some((client, url)) = admin(flags)? else {
        return Ok(ExitCode::FAILURE);
    };
    write_stderr(&[format!("node list: asked {url}")]);
    let nodes = daemon::runtime()?.block_on(client.list_nodes(&url))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<30} {:<32} {:<20} IPV6-CIDR",
        "NAME", "NODE-IPS", "IPV4-CIDR"
    )?;
    for node in nodes {
        let ips: Vec<String> = node.node_ips.iter().map(ToString::to_string).collect();
        let cidr = |cidr: Option<String>| cidr.unwrap_or_else(|| "-".to_owned());
        writeln!(
            out,
            "{:<30} {:<32} {:<20} {}",
            node.name,
            ips.join(","),
            cidr(node.ipv4_cidr.map(|c| c.to_string())),
            cidr(node.ipv6_cidr.map(|c| c.to_string())),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `weft-server node delete NAME`.
pub(crate) fn node_delete(flags: &ServerFlags, name: &str) -> anyhow::Result<ExitCode> {
    let Some((client, url)) = admin(flags)? else {
        return Ok(ExitCode::FAILURE);
    };
    write_stderr(&[format!("node delete: asked {url}")]);
    daemon::runtime()?.block_on(client.delete_node(&url, name))?;
    writeln!(std::io::stdout().lock(), "deleted node {name}")?;
    Ok(ExitCode::SUCCESS)
}

/// `weft-server certificate check`: one line per certificate on stdout, K3s's words.
pub(crate) fn certificate_check(flags: &ServerFlags) -> anyhow::Result<ExitCode> {
    let loaded = load_data_dir(Role::Server, &flags.0, System::os());
    write_stderr(&loaded.report(|_| serde_json::Value::Null).stderr);
    let Ok(data_dir) = loaded.result else {
        return Ok(ExitCode::FAILURE);
    };
    let now = SystemTime::now();
    let mut checks = bootstrap::certificate_checks(&data_dir.join("server"), now)?;
    if let Some(credentials) = Credentials::load(&data_dir.join("agent"))? {
        checks.push(credentials.certificate_check(now)?);
    }
    anyhow::ensure!(
        !checks.is_empty(),
        "no certificates under {}: give the server's --data-dir",
        data_dir.display()
    );
    let mut out = std::io::stdout().lock();
    for check in &checks {
        writeln!(out, "{check}")?;
    }
    Ok(if checks.iter().any(|check| check.failed()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The admin client from this server's files, and the URL the running server recorded in
/// `<data-dir>/server/api-address`. Resolves only `data-dir` (flag, config file, environment):
/// no token, node name or node IP. `None` when the configuration is invalid (its errors
/// printed).
fn admin(flags: &ServerFlags) -> anyhow::Result<Option<(AdminClient, String)>> {
    let loaded = load_data_dir(Role::Server, &flags.0, System::os());
    write_stderr(&loaded.report(|_| serde_json::Value::Null).stderr);
    let Ok(data_dir) = loaded.result else {
        return Ok(None);
    };
    let server = data_dir.join("server");
    let url = weft_control::api_address::read(&server)?;
    let tls = server.join("tls");
    let read = |name: &str| {
        std::fs::read_to_string(tls.join(name)).with_context(|| {
            format!(
                "reading {} (is this the server's --data-dir?)",
                tls.join(name).display()
            )
        })
    };
    let identity = CertifiedKey {
        cert_pem: read("client-admin.crt")?,
        key_pem: read("client-admin.key")?,
    };
    let client = AdminClient::new(&read("server-ca.crt")?, &identity)?;
    Ok(Some((client, url)))
}

/// This server's API over loopback (or on its bind address when that is not a wildcard).
fn local_url(config: &ServerConfig) -> String {
    weft_control::api_address::local_api_url(SocketAddr::new(
        config.node.bind_address,
        config.supervisor_port,
    ))
}

/// The control plane's settings from the configuration.
fn settings(config: &ServerConfig) -> anyhow::Result<ServerSettings> {
    let node = &config.node;
    let token = given_token(
        node.token.as_ref(),
        node.token_file.as_deref(),
        "token-file",
    )?;
    let agent_token = given_token(
        config.agent_token.as_ref(),
        config.agent_token_file.as_deref(),
        "agent-token-file",
    )?;
    let datastore = Datastore::from_flags(
        &node.data_dir,
        config.datastore_endpoint.as_ref().map(|e| e.expose()),
        etcd_tls(config),
    )?;
    let mut ips = node.node_ips.addrs.clone();
    ips.extend(node.node_external_ips.iter().copied());
    ips.push(config.advertise_address);
    Ok(ServerSettings {
        dir: node.data_dir.join("server"),
        datastore,
        network: config.network.clone(),
        token,
        agent_token,
        bind: SocketAddr::new(node.bind_address, config.supervisor_port),
        url: url_of(SocketAddr::new(
            config.advertise_address,
            config.supervisor_port,
        )),
        names: vec![node.node_name.as_str().to_owned()],
        ips,
        bookmark_interval: weft_api::protocol::BOOKMARK_INTERVAL,
    })
}

/// The TLS files of an `https://` etcd, from `datastore-cafile`, `datastore-certfile` and
/// `datastore-keyfile`.
fn etcd_tls(config: &ServerConfig) -> EtcdTlsFiles {
    let tls = &config.datastore_tls;
    EtcdTlsFiles {
        ca_file: tls.ca_file.clone(),
        client: tls.client_cert.as_ref().map(|c| ClientCertFiles {
            cert_file: c.cert_file.clone(),
            key_file: c.key_file.clone(),
        }),
    }
}

/// `https://IP:PORT`, with brackets for IPv6.
fn url_of(addr: SocketAddr) -> String {
    format!("https://{addr}")
}

/// Loads and checks the configuration; prints warnings, and errors when it is invalid.
fn load(flags: &ServerFlags) -> Option<ServerConfig> {
    let loaded = load_server(&flags.0, System::os());
    let report = loaded.report(|_| serde_json::Value::Null);
    write_stderr(&report.stderr);
    loaded.result.ok()
}

pub(crate) use daemon::write_stderr;
