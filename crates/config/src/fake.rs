//! Map-backed [`Env`], [`Files`] and [`Host`] for tests: no process environment, no disk, no
//! interfaces. Enabled by `cfg(test)` and the `test-util` feature.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use weft_ipam::Family;

use crate::{Env, Files, Host, Interface, System};

/// Environment variables from a map.
#[derive(Debug, Clone, Default)]
pub struct MapEnv(pub BTreeMap<String, String>);

/// Files from a map of path to content; a directory exists when a file lies below it.
#[derive(Debug, Clone, Default)]
pub struct MapFiles(pub BTreeMap<PathBuf, String>);

/// A host with a fixed hostname, default routes and interfaces.
#[derive(Debug, Clone)]
pub struct FakeHost {
    /// The hostname, or `None` to fail reading it.
    pub hostname: Option<String>,
    /// The IPv4 default-route interface.
    pub default_ipv4: Option<String>,
    /// The IPv6 default-route interface.
    pub default_ipv6: Option<String>,
    /// Interfaces by name.
    pub interfaces: BTreeMap<String, Interface>,
}

/// The three fakes together, to lend out as a [`System`].
#[derive(Debug, Clone, Default)]
pub struct FakeSystem {
    /// Environment variables.
    pub env: MapEnv,
    /// Files.
    pub files: MapFiles,
    /// The host.
    pub host: FakeHost,
}

// === impl MapEnv ===

impl MapEnv {
    /// An environment holding `vars`.
    pub fn new<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> MapEnv {
        MapEnv(
            vars.into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

// === impl MapFiles ===

impl MapFiles {
    /// A file system holding `files`.
    pub fn new<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> MapFiles {
        MapFiles(
            files
                .into_iter()
                .map(|(p, c)| (PathBuf::from(p), c.to_owned()))
                .collect(),
        )
    }
}

impl Files for MapFiles {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        let names: Vec<String> = self
            .0
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        if names.is_empty() && !self.0.keys().any(|p| p.starts_with(dir)) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.0.keys().any(|p| p.starts_with(path)))
    }
}

// === impl FakeHost ===

impl FakeHost {
    /// A host named `hostname` with one up interface `eth0` holding `addrs`, the default route
    /// of each family present going through it.
    pub fn with_eth0(hostname: &str, addrs: &[IpAddr]) -> FakeHost {
        let has = |f: Family| addrs.iter().any(|a| Family::of(*a) == f);
        FakeHost {
            hostname: Some(hostname.to_owned()),
            default_ipv4: has(Family::Ipv4).then(|| "eth0".to_owned()),
            default_ipv6: has(Family::Ipv6).then(|| "eth0".to_owned()),
            interfaces: [(
                "eth0".to_owned(),
                Interface {
                    up: true,
                    addrs: addrs.to_vec(),
                },
            )]
            .into(),
        }
    }
}

impl Default for FakeHost {
    /// `node1` with `eth0` at 192.168.1.10.
    fn default() -> FakeHost {
        FakeHost::with_eth0("node1", &[IpAddr::from([192, 168, 1, 10])])
    }
}

impl Host for FakeHost {
    fn hostname(&self) -> io::Result<String> {
        self.hostname
            .clone()
            .ok_or_else(|| io::Error::from(io::ErrorKind::PermissionDenied))
    }

    fn default_route_interface(&self, family: Family) -> io::Result<Option<String>> {
        Ok(match family {
            Family::Ipv4 => self.default_ipv4.clone(),
            Family::Ipv6 => self.default_ipv6.clone(),
        })
    }

    fn interface(&self, name: &str) -> io::Result<Option<Interface>> {
        Ok(self.interfaces.get(name).cloned())
    }
}

// === impl FakeSystem ===

impl FakeSystem {
    /// Lends the fakes out as a [`System`].
    pub fn system(&self) -> System<'_> {
        System {
            env: &self.env,
            files: &self.files,
            host: &self.host,
        }
    }
}
