//! Tests of the driver against peers that misbehave at the byte level: one that goes silent
//! with its socket full, one that keeps pinging but reads nothing, one that breaks the
//! WebSocket framing, and one that dials and resets in a loop; and of its batching: a small
//! write leaves at once.

use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::error::WebSocketError;
use crate::proto::Frame;

/// `frames` as WebSocket messages from `side`.
fn messages(side: Side, frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        let start = websocket::begin_frame(&mut out, side);
        frame.encode(&mut out);
        websocket::end_frame(&mut out, start, side);
    }
    out
}

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

#[tokio::test]
async fn a_peer_that_pings_but_never_reads_is_closed_after_the_write_stall() {
    let (near, far) = tokio::io::duplex(1024);
    let config = Config {
        write_stall_timeout: Duration::from_millis(500),
        ..quick()
    };
    let (connection, driver) = Connection::new(
        WebSocket::new(near, Side::Server),
        Role::Server,
        config,
        None,
    )
    .expect("a valid config");
    let driver = tokio::spawn(driver);
    // The agent keeps the session alive with pings and never reads a byte.
    let (_far_read, mut far_write) = tokio::io::split(far);
    let pinging = tokio::spawn(async move {
        for seq in 0u64.. {
            let ping = messages(Side::Client, &[Frame::Ping { payload: seq }]);
            if far_write.write_all(&ping).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // The server has data for it: more dials than the pipe holds.
    let _opens: Vec<_> = (0..200)
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
        .expect("the driver ended although the peer kept pinging")
        .expect("the driver did not panic");
    assert_eq!(
        ended.to_string(),
        "the peer read nothing for 500ms while this side had data for it"
    );
    assert!(connection.is_closed());
    pinging.abort();
}

/// Dials that never connect, counting how many are in flight.
#[derive(Default)]
struct Hanging {
    in_flight: Arc<AtomicUsize>,
}

/// Counts one dial in flight until dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Dialer for Hanging {
    fn dial(
        &self,
        _target: Target,
    ) -> Pin<Box<dyn Future<Output = Result<TcpStream, DialError>> + Send + '_>> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self.in_flight.clone());
        Box::pin(async move {
            let _guard = guard;
            std::future::pending().await
        })
    }
}

#[tokio::test]
async fn a_dial_whose_stream_is_reset_is_cancelled() {
    let (near, far) = tokio::io::duplex(64 * 1024);
    let dialer = Arc::new(Hanging::default());
    let in_flight = dialer.in_flight.clone();
    let (_connection, driver) = Connection::new(
        WebSocket::new(near, Side::Client),
        Role::Agent,
        Config::default(),
        Some(dialer),
    )
    .expect("a valid config");
    let _driver = tokio::spawn(driver);
    let (mut far_read, mut far_write) = tokio::io::split(far);
    let _draining = tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut far_read, &mut sink).await;
    });
    // The server dials and resets, round after round.
    for round in 0..200u32 {
        let stream = StreamId(2 * round + 2);
        let frames = messages(
            Side::Server,
            &[
                Frame::Dial {
                    stream,
                    window: 256 * 1024,
                    target: Target::new("10.0.0.1", 10250).expect("a target"),
                },
                Frame::Reset {
                    stream,
                    code: ResetCode::Cancelled,
                },
            ],
        );
        far_write.write_all(&frames).await.expect("send");
    }
    let settled = tokio::time::timeout(Duration::from_secs(5), async {
        while in_flight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "{} dials of reset streams still running",
        in_flight.load(Ordering::SeqCst)
    );
}

/// Reads `far` until a tunnel frame from the server arrives; `None` once it ended.
async fn next_frame<R>(far: &mut R, buf: &mut BytesMut) -> Option<Frame>
where
    R: AsyncRead + Unpin,
{
    loop {
        match websocket::decode(buf, Side::Client).expect("well-formed WebSocket messages") {
            Some(Message::Binary(frame)) => return Some(Frame::decode(&frame).expect("a frame")),
            Some(_) => continue,
            None => {}
        }
        if far.read_buf(buf).await.expect("read") == 0 {
            return None;
        }
    }
}

#[tokio::test]
async fn a_small_write_is_sent_without_waiting_for_more() {
    let (near, far) = tokio::io::duplex(1024 * 1024);
    let (connection, driver) = Connection::new(
        WebSocket::new(near, Side::Server),
        Role::Server,
        Config::default(),
        None,
    )
    .expect("a valid config");
    let _driver = tokio::spawn(driver);
    let (mut far_read, mut far_write) = tokio::io::split(far);
    let target = Target::new("10.0.0.1", 10250).expect("a target");
    let opening = tokio::spawn(async move { connection.open(target).await });
    // The test is the agent: it answers the dial.
    let mut buf = BytesMut::new();
    let stream = match next_frame(&mut far_read, &mut buf).await {
        Some(Frame::Dial { stream, .. }) => stream,
        other => panic!("a dial first, got {other:?}"),
    };
    let accepted = messages(
        Side::Client,
        &[Frame::DialOk {
            stream,
            window: 256 * 1024,
        }],
    );
    far_write.write_all(&accepted).await.expect("send");
    let mut tunnel = opening.await.expect("no panic").expect("the stream opened");
    // One 64-byte request, and nothing after it: it must reach the socket well before any
    // timer of the session (the first ping is seconds away).
    tunnel.write_all(&[0x42; 64]).await.expect("write");
    let sent = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match next_frame(&mut far_read, &mut buf).await {
                Some(Frame::Data {
                    stream: on,
                    payload,
                }) if on == stream => break payload,
                Some(_) => continue,
                None => panic!("the connection ended"),
            }
        }
    })
    .await
    .expect("the 64 bytes left without waiting for more data or a timer");
    assert_eq!(sent.as_ref(), &[0x42; 64]);
}
