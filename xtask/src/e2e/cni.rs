//! Pods, made exactly as a container runtime makes them: a network namespace, then the plugins
//! of the conflist the agent wrote, run from `/usr/lib/cni` with the CNI environment and
//! chained the way libcni chains them.
//!
//! For `ADD`, each plugin gets the network configuration built by libcni's `buildOneConfig`: the
//! plugin's object plus the list's `name` and `cniVersion`, and `prevResult` (the previous
//! plugin's result) from the second plugin on. `DEL` runs the plugins in reverse order, each
//! with the result of the whole `ADD` as `prevResult`, as libcni does with its cached result.
//! The plugins run inside the node's namespace (`ip netns exec <node>`), because that is where
//! the node's `cni0` bridge and the pod's veth peer belong.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

use super::cluster::Node;
use super::lab::{Lab, Ns};

/// Where the reference plugins live (Debian's `containernetworking-plugins`).
pub(crate) const CNI_PATH: &str = "/usr/lib/cni";

/// A pod: its namespace and what the plugins gave it. Dropping a pod that was not deleted
/// runs `DEL` anyway, ignoring errors.
pub(crate) struct Pod {
    /// The pod's name (also its container id's suffix).
    pub(crate) name: String,
    pub(crate) ns: Ns,
    /// The node it runs on.
    pub(crate) node: String,
    node_ns: Ns,
    conflist: Value,
    /// The `ADD` result.
    pub(crate) result: Value,
    /// The pod's addresses, from the result.
    pub(crate) ips: Vec<IpAddr>,
    dir: std::path::PathBuf,
    deleted: bool,
}

/// One CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    Add,
    Del,
}

// === impl Pod ===

impl Pod {
    /// Makes pod `name` on `node` with the conflist its agent wrote.
    pub(crate) fn add(lab: &Lab<'_>, node: &Node, name: &str) -> anyhow::Result<Pod> {
        let path = node.conflist();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}'s CNI config {}", node.name, path.display()))?;
        let conflist: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let ns = lab.ns(name)?;
        let mut pod = Pod {
            name: name.to_owned(),
            ns,
            node: node.name.clone(),
            node_ns: node.host.ns.clone(),
            conflist,
            result: Value::Null,
            ips: Vec::new(),
            dir: lab.dir.clone(),
            deleted: false,
        };
        let mut prev: Option<Value> = None;
        for plugin in plugins(&pod.conflist)? {
            let config = plugin_config(&pod.conflist, plugin, prev.as_ref())?;
            let out = pod.exec(Command::Add, plugin, &config)?;
            prev = Some(serde_json::from_slice(&out).with_context(|| {
                format!(
                    "the {} plugin printed no JSON result: {}",
                    plugin_type(plugin).unwrap_or("?"),
                    String::from_utf8_lossy(&out)
                )
            })?);
        }
        pod.result = prev.context("the conflist has no plugins")?;
        pod.ips = result_ips(&pod.result)?;
        Ok(pod)
    }

    /// The pod's address of a family (`v6` false for IPv4).
    pub(crate) fn ip(&self, v6: bool) -> anyhow::Result<IpAddr> {
        self.ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv6() == v6)
            .with_context(|| {
                format!(
                    "pod {} has no {} address",
                    self.name,
                    super::lab::family_name(v6)
                )
            })
    }

    /// Runs `DEL` through the plugins in reverse order.
    pub(crate) fn delete(mut self) -> anyhow::Result<()> {
        self.deleted = true;
        self.del()
    }

    fn del(&self) -> anyhow::Result<()> {
        let plugins = plugins(&self.conflist)?;
        for plugin in plugins.iter().rev() {
            let config = plugin_config(&self.conflist, plugin, Some(&self.result))?;
            self.exec(Command::Del, plugin, &config)?;
        }
        Ok(())
    }

    /// Runs one plugin binary in the node's namespace with the CNI environment; returns its
    /// stdout, or an error with the CNI error it printed.
    fn exec(&self, command: Command, plugin: &Value, config: &Value) -> anyhow::Result<Vec<u8>> {
        let kind = plugin_type(plugin)?;
        let program = Path::new(CNI_PATH).join(kind);
        let out = self
            .node_ns
            .exec(&self.dir, &program)
            .env("CNI_COMMAND", command.as_str())
            .env("CNI_CONTAINERID", self.container_id())
            .env("CNI_NETNS", self.ns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_PATH)
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={}",
                    self.name
                ),
            )
            .output(Some(serde_json::to_string(config)?.as_bytes()))?;
        if !out.status.success() {
            bail!(
                "CNI {} of pod {} on {}: the {kind} plugin failed ({}): {} {}",
                command.as_str(),
                self.name,
                self.node,
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    /// The container id the runtime would pass: unique per pod and run.
    fn container_id(&self) -> String {
        self.ns.name.clone()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if !self.deleted {
            let _ = self.del();
        }
    }
}

// === impl Command ===

impl Command {
    fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
        }
    }
}

/// The plugins of a conflist.
fn plugins(conflist: &Value) -> anyhow::Result<&Vec<Value>> {
    conflist
        .get("plugins")
        .and_then(Value::as_array)
        .context("the conflist has no `plugins` list")
}

fn plugin_type(plugin: &Value) -> anyhow::Result<&str> {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .context("a plugin has no `type`")
}

/// libcni's `buildOneConfig`: the plugin's object with the list's `name` and `cniVersion`, and
/// `prevResult` when there is one. (No runtime capabilities are passed: the tests map no ports.)
pub(crate) fn plugin_config(
    conflist: &Value,
    plugin: &Value,
    prev: Option<&Value>,
) -> anyhow::Result<Value> {
    let Value::Object(mut config) = plugin.clone() else {
        bail!("a plugin is not a JSON object");
    };
    for key in ["name", "cniVersion"] {
        let value = conflist
            .get(key)
            .with_context(|| format!("the conflist has no `{key}`"))?;
        config.insert(key.to_owned(), value.clone());
    }
    if let Some(prev) = prev {
        config.insert("prevResult".to_owned(), prev.clone());
    }
    Ok(Value::Object(config))
}

/// The addresses of a CNI result (`ips[].address`, without the prefix length).
pub(crate) fn result_ips(result: &Value) -> anyhow::Result<Vec<IpAddr>> {
    let ips = result
        .get("ips")
        .and_then(Value::as_array)
        .with_context(|| format!("the CNI result has no `ips`: {result}"))?;
    ips.iter()
        .map(|ip| {
            let address = ip
                .get("address")
                .and_then(Value::as_str)
                .with_context(|| format!("an `ips` entry has no address: {ip}"))?;
            let bare = address.split('/').next().unwrap_or(address);
            bare.parse()
                .with_context(|| format!("the CNI result's address `{address}`"))
        })
        .collect()
}

/// An empty result, for tests.
#[cfg(test)]
pub(crate) fn empty_result() -> Value {
    serde_json::json!({ "cniVersion": "1.0.0", "ips": [] })
}
