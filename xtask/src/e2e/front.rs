//! A server's HTTP CONNECT front door as a kube-apiserver sees it: read from the server's
//! EgressSelectorConfiguration, and used with curl as an egress client.

use std::fs;

use anyhow::{Context, bail};

use super::cluster::Node;
use super::lab::{Lab, Ns, read};

/// A server's HTTP CONNECT front door, as its EgressSelectorConfiguration names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Front {
    /// `proxyProtocol`: `HTTPConnect`, or `Direct` when the mode is `disabled`.
    pub(crate) protocol: String,
    /// `https://host:port`, when `HTTPConnect`.
    pub(crate) url: Option<String>,
    /// `caBundle`, `clientCert`, `clientKey`.
    pub(crate) tls: Option<[String; 3]>,
}

impl Node {
    /// The front door from `<data-dir>/server/etc/egress-selector-config.yaml`.
    pub(crate) fn front(&self) -> anyhow::Result<Front> {
        let path = self.dir.join("server/etc/egress-selector-config.yaml");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        parse_egress_config(&text).with_context(|| format!("reading {}", path.display()))
    }
}

/// The `cluster` selection of an EgressSelectorConfiguration (JSON, which is YAML too).
pub(crate) fn parse_egress_config(text: &str) -> anyhow::Result<Front> {
    let config: serde_json::Value = serde_json::from_str(text)?;
    let selection = config["egressSelections"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == "cluster"))
        .context("no `cluster` egress selection")?;
    let connection = &selection["connection"];
    let protocol = connection["proxyProtocol"]
        .as_str()
        .context("no proxyProtocol")?
        .to_owned();
    let tcp = &connection["transport"]["tcp"];
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let tls = &tcp["tlsConfig"];
    let tls = match (
        text(&tls["caBundle"]),
        text(&tls["clientCert"]),
        text(&tls["clientKey"]),
    ) {
        (Some(ca), Some(cert), Some(key)) => Some([ca, cert, key]),
        _ => None,
    };
    Ok(Front {
        protocol,
        url: text(&tcp["url"]),
        tls,
    })
}

// === impl Front ===

impl Front {
    /// `GET http://TARGET/` through the front door from `ns` (HTTP CONNECT, as a kube-apiserver
    /// with this configuration does), with curl; returns the body, or an error with curl's.
    pub(crate) fn get(&self, lab: &Lab<'_>, ns: &Ns, target: &str) -> anyhow::Result<String> {
        let (Some(url), Some([ca, cert, key])) = (&self.url, &self.tls) else {
            bail!("the egress selection is {}, not HTTPConnect", self.protocol);
        };
        read(
            ns.exec(&lab.dir, "curl")
                .args([
                    "--silent",
                    "--show-error",
                    "--max-time",
                    "5",
                    "--proxytunnel",
                ])
                .args(["--proxy", url, "--proxy-cacert", ca])
                .args(["--proxy-cert", cert, "--proxy-key", key])
                .arg(format!("http://{target}/")),
        )
        .with_context(|| format!("GET http://{target}/ through {url}"))
    }
}
