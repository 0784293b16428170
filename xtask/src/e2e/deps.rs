//! The Debian packages the end-to-end tests and the demo need, found by the files they install.
//!
//! As root, whatever is missing is installed with `apt-get`; otherwise the error names every
//! missing package and the command that installs them.

use std::env;
use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::cmd::cmd;

/// A Debian package and the files that show it is installed (a bare name is looked up in
/// `PATH` and the sbin directories).
pub(crate) struct Package {
    pub(crate) name: &'static str,
    pub(crate) files: &'static [&'static str],
    pub(crate) why: &'static str,
}

/// What the clusters need at run time.
pub(crate) const RUNTIME: &[Package] = &[
    Package {
        name: "iproute2",
        files: &["ip", "bridge"],
        why: "namespaces, links, routes, FDB",
    },
    Package {
        name: "nftables",
        files: &["nft"],
        why: "weft's masquerade rules and the tests' filters",
    },
    Package {
        name: "iptables",
        files: &["iptables"],
        why: "the portmap CNI plugin",
    },
    Package {
        name: "iputils-ping",
        files: &["ping"],
        why: "ping between pods",
    },
    Package {
        name: "iperf3",
        files: &["iperf3"],
        why: "throughput between pods",
    },
    Package {
        name: "curl",
        files: &["curl"],
        why: "etcd health and HTTP through the cluster",
    },
    Package {
        name: "socat",
        files: &["socat"],
        why: "TCP transfers that show the peer's address",
    },
    Package {
        name: "jq",
        files: &["jq"],
        why: "reading JSON in hand-run commands",
    },
    Package {
        name: "etcd-server",
        files: &["etcd"],
        why: "the HA datastore",
    },
    Package {
        name: "containernetworking-plugins",
        files: &[
            "/usr/lib/cni/bridge",
            "/usr/lib/cni/host-local",
            "/usr/lib/cni/portmap",
            "/usr/lib/cni/bandwidth",
        ],
        why: "the CNI plugins that make pods",
    },
    Package {
        name: "wireguard-tools",
        files: &["wg"],
        why: "reading the peers of kernel WireGuard devices",
    },
    Package {
        name: "procps",
        files: &["kill", "sysctl"],
        why: "signals and namespace sysctls",
    },
];

/// What building weft-server needs besides the Rust toolchain (etcd-client's build script).
pub(crate) const BUILD: &[Package] = &[
    Package {
        name: "protobuf-compiler",
        files: &["protoc"],
        why: "etcd-client's build script",
    },
    Package {
        name: "libprotobuf-dev",
        files: &["/usr/include/google/protobuf/descriptor.proto"],
        why: "the protos etcd-client's protos import",
    },
];

/// The packages of `wanted` that are missing.
pub(crate) fn missing<'p>(wanted: &[&'p Package]) -> Vec<&'p Package> {
    wanted
        .iter()
        .copied()
        .filter(|p| !p.files.iter().all(|f| find(f).is_some()))
        .collect()
}

/// Installs what is missing when `root`; otherwise fails naming it.
pub(crate) fn ensure(wanted: &[&Package], root: bool) -> anyhow::Result<()> {
    let missing = missing(wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    for p in &missing {
        println!("missing Debian package {}: {}", p.name, p.why);
    }
    if !root {
        bail!(
            "missing Debian packages: {}; install them as root with `apt-get install {}`",
            names.join(" "),
            names.join(" ")
        );
    }
    apt_install(&names)?;
    let still = missing_names(wanted);
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(" "));
    }
    Ok(())
}

/// How long apt-get waits for the dpkg lock another apt-get holds before it gives up.
const DPKG_LOCK_TIMEOUT: &str = "DPkg::Lock::Timeout=600";

/// `apt-get update`, then `apt-get install` of `packages`, waiting for the dpkg lock rather
/// than failing when another apt-get runs.
pub(crate) fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if find("apt-get").is_none() {
        bail!(
            "missing packages {} and no apt-get to install them with",
            packages.join(" ")
        );
    }
    println!("installing {}", packages.join(" "));
    let apt = |args: &[&str]| {
        cmd(Path::new("/"), "apt-get")
            .args(["-o", DPKG_LOCK_TIMEOUT])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()
    };
    apt(&["update", "-q"])?;
    apt(&["install", "-y", "-q", "--no-install-recommends"]
        .into_iter()
        .chain(packages.iter().copied())
        .collect::<Vec<_>>())
}

fn missing_names(wanted: &[&Package]) -> Vec<&'static str> {
    missing(wanted).iter().map(|p| p.name).collect()
}

/// An absolute path as it is, or a program name looked up in `PATH` and the sbin directories
/// (which a non-root `PATH` often lacks).
pub(crate) fn find(file: &str) -> Option<PathBuf> {
    if file.starts_with('/') {
        let path = PathBuf::from(file);
        return path.exists().then_some(path);
    }
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(file))
        .find(|candidate| candidate.is_file())
}
