//! What only the etcd back end has: its endpoints and a clear error when it is unreachable.

use std::time::{Duration, Instant};

use weft_store::{Datastore, EtcdStore, PodRecord, Revision};

use weft_store::testing::{EtcdServer, free_ports};

#[tokio::test]
async fn unreachable_etcd_is_a_clear_error() {
    let [port, _] = free_ports();
    let started = Instant::now();
    let err = EtcdStore::connect(&[format!("http://127.0.0.1:{port}")])
        .await
        .expect_err("nothing listens there");
    let message = err.to_string();
    assert!(message.starts_with("etcd connect failed"), "{message}");
    assert!(message.contains("--datastore-endpoint"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(15), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datastore_endpoint_opens_etcd() {
    let etcd = EtcdServer::start().await;
    // Two endpoints, one of them down: the client balances to the live one.
    let [down, _] = free_ports();
    let flag = format!("{}, http://127.0.0.1:{down}", etcd.client_url);
    let datastore = Datastore::from_flags(std::path::Path::new("/unused"), Some(&flag)).unwrap();
    let store = datastore.open().await.unwrap();
    let pod = PodRecord {
        namespace: "default".to_owned(),
        name: "p".to_owned(),
        node: "n1".to_owned(),
        ips: Vec::new(),
    };
    assert!(store.put_pod(&pod).await.unwrap() > Revision::ZERO);
    assert_eq!(store.list_pods().await.unwrap().items.len(), 1);
}
