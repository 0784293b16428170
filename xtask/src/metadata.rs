//! A thin reader over `cargo metadata`: packages, their targets, and the resolved dependency graph.
//!
//! It reads the JSON through `serde_json::Value` rather than typed structs, so xtask needs neither
//! serde's derive macros nor the `cargo_metadata` crate.

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

use crate::cmd::cargo;

/// The output of `cargo metadata --format-version 1` for the workspace.
pub(crate) struct Metadata {
    json: Value,
}

/// One target (lib, bin, bench, ...) of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) kinds: Vec<String>,
    pub(crate) src_path: PathBuf,
}

// === impl Metadata ===

impl Metadata {
    /// Runs `cargo metadata` in `root`.
    ///
    /// The graph covers every platform, so a dependency that only some target pulls in still
    /// counts: that is the conservative reading for "does not depend on".
    pub(crate) fn load(root: &Path) -> anyhow::Result<Self> {
        let out = cargo(root)
            .args(["metadata", "--format-version", "1"])
            .read()?;
        Self::from_json(&out)
    }

    /// Parses the JSON that `cargo metadata --format-version 1` prints.
    pub(crate) fn from_json(text: &str) -> anyhow::Result<Self> {
        let json = serde_json::from_str(text).context("`cargo metadata` printed invalid JSON")?;
        Ok(Self { json })
    }

    /// The workspace member called `name`, if there is one.
    fn member(&self, name: &str) -> Option<&Value> {
        let members = self.json["workspace_members"].as_array()?;
        self.packages().find(|package| {
            package["name"] == name && members.iter().any(|id| *id == package["id"])
        })
    }

    /// The names of the workspace members, sorted.
    pub(crate) fn members(&self) -> Vec<String> {
        let Some(members) = self.json["workspace_members"].as_array() else {
            return Vec::new();
        };
        let mut names: Vec<String> = self
            .packages()
            .filter(|package| members.contains(&package["id"]))
            .map(|package| str_of(&package["name"]).to_owned())
            .collect();
        names.sort();
        names
    }

    /// The `Cargo.toml` of the workspace member `name`.
    pub(crate) fn manifest_path(&self, name: &str) -> Option<PathBuf> {
        Some(self.member(name)?["manifest_path"].as_str()?.into())
    }

    /// The targets of the workspace member `name`, in manifest order.
    pub(crate) fn targets(&self, name: &str) -> Vec<Target> {
        let Some(targets) = self.member(name).and_then(|p| p["targets"].as_array()) else {
            return Vec::new();
        };
        targets
            .iter()
            .map(|target| Target {
                name: str_of(&target["name"]).to_owned(),
                kinds: target["kind"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|kind| str_of(kind).to_owned())
                    .collect(),
                src_path: str_of(&target["src_path"]).into(),
            })
            .collect()
    }

    /// For each package in `forbidden` that the workspace member `from` reaches through normal
    /// (not dev, not build) dependency edges, the shortest chain of package names from `from` to
    /// it. Sorted by the forbidden package's name.
    pub(crate) fn normal_dependency_chains(
        &self,
        from: &str,
        forbidden: &[&str],
    ) -> Vec<Vec<String>> {
        let Some(start) = self.member(from).map(|p| str_of(&p["id"])) else {
            return Vec::new();
        };
        let names: HashMap<&str, &str> = self
            .packages()
            .map(|package| (str_of(&package["id"]), str_of(&package["name"])))
            .collect();
        let nodes: HashMap<&str, &Value> = self.json["resolve"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|node| (str_of(&node["id"]), node))
            .collect();

        // Breadth-first, so the first path found to each package is a shortest one.
        let mut parent: HashMap<&str, Option<&str>> = HashMap::from([(start, None)]);
        let mut queue = VecDeque::from([start]);
        let mut chains = Vec::new();
        while let Some(id) = queue.pop_front() {
            if id != start && forbidden.contains(&names.get(id).copied().unwrap_or_default()) {
                chains.push(chain_to(id, &parent, &names));
                // Past a forbidden package, further findings would only repeat this one.
                continue;
            }
            let deps = nodes.get(id).and_then(|node| node["deps"].as_array());
            for dep in deps.into_iter().flatten() {
                let normal = dep["dep_kinds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|kind| kind["kind"].is_null());
                let pkg = str_of(&dep["pkg"]);
                if normal && !parent.contains_key(pkg) {
                    parent.insert(pkg, Some(id));
                    queue.push_back(pkg);
                }
            }
        }
        chains.sort_by(|a, b| a.last().cmp(&b.last()));
        chains
    }

    fn packages(&self) -> impl Iterator<Item = &Value> {
        self.json["packages"].as_array().into_iter().flatten()
    }
}

fn chain_to<'a>(
    mut id: &'a str,
    parent: &HashMap<&'a str, Option<&'a str>>,
    names: &HashMap<&str, &str>,
) -> Vec<String> {
    let name = |id: &str| names.get(id).copied().unwrap_or_default().to_owned();
    let mut chain = vec![name(id)];
    while let Some(Some(up)) = parent.get(id) {
        chain.push(name(up));
        id = up;
    }
    chain.reverse();
    chain
}

fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}
