//! A real etcd for the scenarios that need one (the datastore of the HA, abuse and bad-input
//! scenarios): one member in a host of its own on a segment, started and checked healthy.

use super::cluster::{START_TIMEOUT, Settings};
use super::lab::{Daemon, Families, Lab, Segment, wait_for};

/// Starts etcd as host `n` of `segment` (see [`start`]), and the settings of a `backend`
/// cluster whose servers share it (`--datastore-endpoint`).
pub(crate) fn cluster(
    lab: &Lab<'_>,
    segment: &Segment,
    n: u8,
    backend: &'static str,
    families: Families,
) -> anyhow::Result<(Daemon, Settings)> {
    let (etcd, endpoint) = start(lab, segment, n)?;
    let mut settings = Settings::new(backend, families);
    settings
        .extra
        .extend(["--datastore-endpoint".to_owned(), endpoint]);
    Ok((etcd, settings))
}

/// Starts a one-member etcd as host `n` of `segment` and waits until it is healthy; returns the
/// process and its client URL.
pub(crate) fn start(lab: &Lab<'_>, segment: &Segment, n: u8) -> anyhow::Result<(Daemon, String)> {
    let host = lab.host("etcd", &[(segment, n)])?;
    let endpoint = format!("http://{}:2379", segment.v4(n));
    let peer = "http://127.0.0.1:2380";
    let dir = lab.dir.join("etcd").display().to_string();
    let mut etcd = lab.spawn(
        &host.ns,
        "etcd",
        "etcd",
        [
            "--name",
            "e2e",
            "--data-dir",
            &dir,
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            &format!("e2e={peer}"),
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ],
    )?;
    let health = format!("{endpoint}/health");
    wait_for("etcd to be healthy", START_TIMEOUT, || {
        etcd.check_running()?;
        let out = host.ns.run("curl", &["-fsS", "--max-time", "1", &health]);
        Ok(out.ok().filter(|o| o.contains("true")).map(drop))
    })?;
    lab.step(format!("etcd healthy at {endpoint}"));
    Ok((etcd, endpoint))
}
