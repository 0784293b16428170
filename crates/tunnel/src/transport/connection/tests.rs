//! Tests of the driver against peers that misbehave at the byte level: one that goes silent
//! with its socket full, one that breaks the WebSocket framing.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::*;
use crate::error::WebSocketError;

/// A config whose keepalive notices a silent peer within a fraction of a second.
fn quick() -> Config {
    Config {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(300),
        ..Config::default()
    }
}

#[tokio::test]
async fn a_silent_peer_with_a_full_socket_is_noticed() {
    // The peer's end of a small pipe: never read, never written.
    let (near, _far) = tokio::io::duplex(1024);
    let (connection, driver) = Connection::new(
        WebSocket::new(near, Side::Client),
        Role::Agent,
        quick(),
        None,
    )
    .expect("a valid config");
    let driver = tokio::spawn(driver);
    // Far more dials than the pipe holds: the driver's write blocks.
    let opens: Vec<_> = (0..200)
        .map(|_| {
            let connection = connection.clone();
            tokio::spawn(async move {
                let target = Target::new("10.0.0.1", 10250).expect("a target");
                connection.open(target).await
            })
        })
        .collect();
    let ended = tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the driver ended despite the blocked write")
        .expect("the driver did not panic");
    assert!(
        matches!(
            ended,
            ConnectionError::Session(crate::proto::SessionError::TimedOut { .. })
        ),
        "{ended:?}"
    );
    assert!(connection.is_closed());
    for open in opens {
        let opened = open.await.expect("no panic");
        assert!(matches!(opened, Err(OpenError::Closed(_))), "{opened:?}");
    }
}

#[tokio::test]
async fn broken_framing_ends_the_connection_with_why() {
    let (near, mut far) = tokio::io::duplex(64 * 1024);
    let (connection, driver) = Connection::new(
        WebSocket::new(near, Side::Server),
        Role::Server,
        quick(),
        None,
    )
    .expect("a valid config");
    let driver = tokio::spawn(driver);
    // A text message from the agent (masked, as a client's must be).
    far.write_all(&[0x81, 0x80, 0, 0, 0, 0])
        .await
        .expect("write");
    let ended = tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the driver ended")
        .expect("the driver did not panic");
    assert_eq!(
        ended.to_string(),
        ConnectionError::WebSocket(WebSocketError::Text).to_string()
    );
    assert!(connection.is_closed());
}
