//! The pods agents report for the egress selector's `cluster` mode (`PUT /v1-weft/pods`): each
//! report replaces the reporting node's pods in the store, so the servers route a CONNECT to a
//! pod IP through the tunnel of the node running it.
//!
//! A node's pods are stored under its own name as the namespace (`/weft/pods/<node>/<id>`, the
//! id being the container id its CNI plugins were given), so one node can never write or delete
//! another's. Every reported IP must lie in the node's lease (its pod CIDRs), or the whole report
//! is refused with `422` and nothing of it is stored: a node cannot claim another node's pods,
//! the server's node IP, or any other address, to draw the servers' CONNECTs to itself. Who may
//! call this is decided in [`service`](crate::service): a node certificate.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hyper::StatusCode;
use hyper::body::Incoming;
use weft_api::http::{Body, error_response, json_response, read_body};
use weft_api::protocol::{MAX_REPORTED_PODS, PodReport};
use weft_fabric::Lease;
use weft_store::{PodRecord, Store, StoreError};

/// The largest report body: [`MAX_REPORTED_PODS`] pods with ids of 64 hex digits and two IPs
/// each fit well within it.
const MAX_REPORT_BYTES: usize = 1 << 20;

/// The most IPs one pod may report (one per family is what CNI plugins give; a few spare).
const MAX_POD_IPS: usize = 8;

/// Reads `node`'s report from `body` and makes the store hold exactly its pods.
pub(crate) async fn report(store: &Store, node: &str, body: Incoming) -> hyper::Response<Body> {
    let body = match read_body(body, MAX_REPORT_BYTES).await {
        Ok(body) => body,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let report: PodReport = match serde_json::from_slice(&body) {
        Ok(report) => report,
        Err(e) => {
            return error_response(StatusCode::BAD_REQUEST, format!("bad pod report: {e}"));
        }
    };
    let wanted = match check(&report) {
        Ok(wanted) => wanted,
        Err(reason) => return error_response(StatusCode::BAD_REQUEST, reason),
    };
    let lease = match store.get_lease(node).await {
        Ok(lease) => lease.map(|versioned| versioned.value),
        Err(e) => {
            tracing::warn!(%node, error = %e, "reading the lease of a node that reports pods failed");
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
    };
    if let Err(reason) = check_lease(node, lease.as_ref(), &wanted) {
        tracing::warn!(%node, %reason, "refused a pod report");
        return error_response(StatusCode::UNPROCESSABLE_ENTITY, reason);
    }
    match replace(store, node, &wanted).await {
        Ok(changed) => {
            if changed > 0 {
                tracing::debug!(%node, pods = wanted.len(), changed, "pods reported");
            }
            json_response(StatusCode::OK, &serde_json::json!({ "pods": wanted.len() }))
        }
        Err(e) => {
            tracing::warn!(%node, error = %e, "storing reported pods failed");
            let status = match e {
                StoreError::InvalidName { .. } => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error_response(status, e.to_string())
        }
    }
}

/// The report's pods by id, or why it is refused.
fn check(report: &PodReport) -> Result<BTreeMap<String, Vec<IpAddr>>, String> {
    if report.pods.len() > MAX_REPORTED_PODS {
        return Err(format!(
            "a pod report holds at most {MAX_REPORTED_PODS} pods, not {}",
            report.pods.len()
        ));
    }
    let mut wanted = BTreeMap::new();
    for pod in &report.pods {
        let id = &pod.id;
        let valid_id = !id.is_empty()
            && id.len() <= 253
            && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
            && id != "."
            && id != "..";
        if !valid_id {
            return Err(format!(
                "pod id {id:?} must be 1 to 253 printable ASCII characters without '/'"
            ));
        }
        if pod.ips.is_empty() || pod.ips.len() > MAX_POD_IPS {
            return Err(format!(
                "pod {id} must have 1 to {MAX_POD_IPS} IPs, not {}",
                pod.ips.len()
            ));
        }
        let mut ips = pod.ips.clone();
        ips.sort();
        ips.dedup();
        if wanted.insert(id.clone(), ips).is_some() {
            return Err(format!("pod {id} is reported twice"));
        }
    }
    Ok(wanted)
}

/// Whether every IP of `wanted` lies in `node`'s lease, or why the report is refused: a node
/// reports only pods of its own lease, and a node without one (or whose lease has no pod CIDR)
/// reports none.
fn check_lease(
    node: &str,
    lease: Option<&Lease>,
    wanted: &BTreeMap<String, Vec<IpAddr>>,
) -> Result<(), String> {
    if wanted.is_empty() {
        return Ok(());
    }
    let cidrs = lease.map(Lease::pod_cidrs).unwrap_or_default();
    if cidrs.is_empty() {
        return Err(format!(
            "node {node} has no lease with a pod CIDR, so it can report no pods; a node reports only pods of its own lease (register it again)"
        ));
    }
    for (id, ips) in wanted {
        if let Some(ip) = ips
            .iter()
            .find(|ip| !cidrs.iter().any(|c| c.contains(**ip)))
        {
            let cidrs: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
            return Err(format!(
                "pod ip {ip} of pod {id} is outside node {node}'s pod CIDRs {}; a node reports only pods of its own lease",
                cidrs.join(", ")
            ));
        }
    }
    Ok(())
}

/// Puts every pod of `wanted` that the store lacks or holds differently, and deletes the node's
/// pods it does not name; returns how many records changed.
async fn replace(
    store: &Store,
    node: &str,
    wanted: &BTreeMap<String, Vec<IpAddr>>,
) -> Result<usize, StoreError> {
    let stored = store.list_pods_in(node).await?;
    let mut have: BTreeMap<String, PodRecord> = stored
        .items
        .into_iter()
        .map(|pod| (pod.value.name.clone(), pod.value))
        .collect();
    let mut changed = 0;
    for (id, ips) in wanted {
        let record = PodRecord {
            namespace: node.to_owned(),
            name: id.clone(),
            node: node.to_owned(),
            ips: ips.clone(),
        };
        if have.remove(id).as_ref() != Some(&record) {
            store.put_pod(&record).await?;
            changed += 1;
        }
    }
    for gone in have.keys() {
        store.delete_pod(node, gone).await?;
        changed += 1;
    }
    // Records that no longer parse are this node's too: drop them, the report replaces them.
    for corrupt in &stored.corrupt {
        if let Some(name) = corrupt.key.rsplit('/').next() {
            store.delete_pod(node, name).await?;
            changed += 1;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests;
