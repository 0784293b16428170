//! Tests of readiness and of `/healthz` and `/readyz` on the metrics listener.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Condition, Readiness, reasons};
use crate::metrics::{self, Registry};

#[test]
fn ready_once_every_condition_is_met_first_unmet_reason_otherwise() {
    let readiness = Readiness::default();
    assert_eq!(readiness.check(), Ok(()), "nothing to wait for");
    let joined = readiness.condition(reasons::NOT_JOINED);
    let reconciled = readiness.condition(reasons::NOT_RECONCILED);
    assert_eq!(readiness.check(), Err(reasons::NOT_JOINED));
    reconciled.set();
    assert_eq!(readiness.check(), Err(reasons::NOT_JOINED));
    joined.clone().set();
    assert!(joined.is_met());
    assert_eq!(readiness.check(), Ok(()));
    // A condition of no readiness changes nothing.
    Condition::default().set();
    assert_eq!(readiness.check(), Ok(()));
}

/// `GET path` on `addr`: the status code and the body.
async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("sent");
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn readyz_is_503_until_joined_and_reconciled_healthz_is_200() {
    let listener = metrics::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("bound");
    let addr = listener.local_addr().expect("an address");
    let readiness = Readiness::default();
    let joined = readiness.condition(reasons::NOT_JOINED);
    let reconciled = readiness.condition(reasons::NOT_RECONCILED);
    let serving = tokio::spawn(metrics::serve(
        listener,
        Arc::new(Registry::default()),
        readiness,
    ));

    assert_eq!(get(addr, "GET", "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(
        get(addr, "GET", "/readyz").await,
        (
            503,
            "not ready: the agent has not joined the cluster yet\n".to_owned()
        )
    );
    joined.set();
    assert_eq!(
        get(addr, "GET", "/readyz").await,
        (
            503,
            "not ready: the agent has not reconciled the kernel since it started\n".to_owned()
        )
    );
    reconciled.set();
    assert_eq!(get(addr, "GET", "/readyz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(addr, "GET", "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(addr, "POST", "/readyz").await.0, 405);
    assert_eq!(get(addr, "GET", "/metrics").await.0, 200);
    assert_eq!(get(addr, "GET", "/other").await.0, 404);
    serving.abort();
}
