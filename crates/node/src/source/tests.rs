//! Tests of the static lease source, on the example file that README points embedders at.

use std::path::Path;

use weft_api::protocol::RegisterRequest;

use super::{LeaseSource, LeaseUpdate, StaticSource};

fn example() -> StaticSource {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/static-leases.json");
    StaticSource::read(&path).unwrap()
}

fn request(node: &str) -> RegisterRequest {
    RegisterRequest {
        node_name: node.into(),
        node_ips: vec![],
        external_ips: vec![],
        backend: Default::default(),
    }
}

#[tokio::test]
async fn example_file_gives_cluster_lease_and_snapshot() {
    let mut source = example();
    let cluster = source.cluster().await.unwrap();
    assert_eq!(cluster.cluster_cidr.to_string(), "10.42.0.0/16");
    let lease = source.register(&request("node-b")).await.unwrap();
    assert_eq!(lease.ipv4_cidr.unwrap().to_string(), "10.42.1.0/24");
    match source.next().await.unwrap() {
        LeaseUpdate::Snapshot(leases) => assert_eq!(leases.len(), 2),
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_node_is_a_clear_error() {
    let mut source = example();
    let err = source
        .register(&request("node-z"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("has no lease for node node-z; add one, or check --node-name"),
        "{err}"
    );
}
