//! Tests of the WebSocket framing: frames round-trip from either side at every length class,
//! masking follows the side, and every way a peer can break the framing is refused with its
//! own error before the payload is waited for; opening a tunnel to a server that accepts and
//! never answers gives up in time.

use proptest::prelude::*;

use super::*;

/// Encodes `payload` as a binary frame from `side`.
fn frame(side: Side, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let start = begin_frame(&mut out, side);
    out.extend_from_slice(payload);
    end_frame(&mut out, start, side);
    out
}

fn other(side: Side) -> Side {
    match side {
        Side::Server => Side::Client,
        Side::Client => Side::Server,
    }
}

/// Decodes everything in `bytes` at the end opposite `from`.
fn decode_all(bytes: &[u8], from: Side) -> Result<Vec<Message>, WebSocketError> {
    let mut buf = BytesMut::from(bytes);
    let mut messages = Vec::new();
    while let Some(message) = decode(&mut buf, other(from))? {
        messages.push(message);
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    Ok(messages)
}

#[test]
fn frames_round_trip_at_every_length_class() {
    for side in [Side::Server, Side::Client] {
        for len in [0, 1, 125, 126, 127, 4096, ZERO_COPY_MIN, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let bytes = frame(side, &payload);
            let header = match (len, side) {
                (..=125, _) => 2,
                (126..=65_535, _) => 4,
                _ => 10,
            } + if side == Side::Client { 4 } else { 0 };
            assert_eq!(bytes.len(), header + len, "{side:?} {len}");
            assert_eq!(bytes[0], 0x82, "fin and binary");
            assert_eq!(
                bytes[1] & 0x80 != 0,
                side == Side::Client,
                "masked from clients"
            );
            assert_eq!(
                decode_all(&bytes, side),
                Ok(vec![Message::Binary(Bytes::from(payload))]),
                "{side:?} {len}"
            );
        }
    }
}

#[test]
fn several_frames_in_one_buffer_and_a_frame_in_pieces() {
    let mut bytes = frame(Side::Client, b"one");
    bytes.extend(frame(Side::Client, &[9u8; 40_000]));
    bytes.extend(frame(Side::Client, b"three"));
    // Fed a byte at a time, nothing comes out early.
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    for &byte in &bytes {
        buf.extend_from_slice(&[byte]);
        while let Some(message) = decode(&mut buf, Side::Server).expect("valid frames") {
            messages.push(message);
        }
    }
    assert_eq!(
        messages,
        vec![
            Message::Binary(Bytes::from_static(b"one")),
            Message::Binary(Bytes::from(vec![9u8; 40_000])),
            Message::Binary(Bytes::from_static(b"three")),
        ]
    );
}

#[test]
fn control_frames_ping_pong_close() {
    let mut out = Vec::new();
    control_frame(&mut out, Side::Server, Some(b"are you there"));
    control_frame(&mut out, Side::Server, None);
    let mut buf = BytesMut::from(&out[..]);
    assert_eq!(out[0], 0x8a, "a pong");
    assert_eq!(decode(&mut buf, Side::Client), Ok(Some(Message::Pong)));
    assert_eq!(decode(&mut buf, Side::Client), Ok(Some(Message::Close)));
    // A ping from the client, as the peer would send it.
    let mut ping = vec![0x89, 0x80 | 4, 1, 2, 3, 4];
    ping.extend(b"ping".iter().zip([1u8, 2, 3, 4]).map(|(b, k)| b ^ k));
    assert_eq!(
        decode(&mut BytesMut::from(&ping[..]), Side::Server),
        Ok(Some(Message::Ping(Bytes::from_static(b"ping"))))
    );
}

/// Checks that `bytes`, received by `side`, is refused with `expect`.
fn refused(bytes: &[u8], side: Side, expect: WebSocketError) {
    let mut buf = BytesMut::from(bytes);
    assert_eq!(decode(&mut buf, side), Err(expect), "{bytes:02x?}");
}

#[test]
fn broken_framing_is_refused_from_the_header() {
    use WebSocketError::*;
    // Headers only: nothing waits for a payload that will never be accepted.
    refused(&[0x81, 0x80], Side::Server, Text);
    refused(&[0x02, 0x80], Side::Server, Fragmented);
    refused(&[0x80, 0x80], Side::Server, Fragmented);
    refused(&[0xc2, 0x80], Side::Server, ReservedBits);
    refused(&[0x83, 0x80], Side::Server, UnknownOpcode { opcode: 3 });
    refused(
        &[0x82, 0x05],
        Side::Server,
        Masking {
            masked: false,
            side: "server",
        },
    );
    refused(
        &[0x82, 0x85],
        Side::Client,
        Masking {
            masked: true,
            side: "client",
        },
    );
    refused(
        &[0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 1],
        Side::Server,
        TooLong {
            len: 65_537,
            max: MAX_FRAME_LEN,
        },
    );
    refused(
        &[0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        Side::Server,
        TooLong {
            len: usize::MAX,
            max: MAX_FRAME_LEN,
        },
    );
    refused(&[0x89, 0x80 | 126, 0, 200], Side::Server, BadControlFrame);
    refused(&[0x09, 0x80], Side::Server, BadControlFrame);
}

#[test]
fn masking_is_an_involution_at_any_offset() {
    let key = [0xde, 0xad, 0xbe, 0xef];
    for len in 0..40 {
        let data: Vec<u8> = (0..len as u8).collect();
        let mut masked = data.clone();
        apply_mask(&mut masked, key);
        for (i, (m, d)) in masked.iter().zip(&data).enumerate() {
            assert_eq!(*m, d ^ key[i % 4]);
        }
        apply_mask(&mut masked, key);
        assert_eq!(masked, data);
    }
}

proptest! {
    #[test]
    fn any_payloads_round_trip_in_any_split(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..70_000), 1..4),
        client in any::<bool>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let side = if client { Side::Client } else { Side::Server };
        let payloads: Vec<Vec<u8>> = payloads.into_iter().map(|mut p| { p.truncate(MAX_FRAME_LEN); p }).collect();
        let mut bytes = Vec::new();
        for payload in &payloads {
            bytes.extend(frame(side, payload));
        }
        let at = cut.index(bytes.len() + 1);
        let mut buf = BytesMut::from(&bytes[..at]);
        let mut got = Vec::new();
        while let Some(m) = decode(&mut buf, other(side)).expect("valid") { got.push(m); }
        buf.extend_from_slice(&bytes[at..]);
        while let Some(m) = decode(&mut buf, other(side)).expect("valid") { got.push(m); }
        let want: Vec<Message> = payloads.into_iter().map(|p| Message::Binary(Bytes::from(p))).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn any_bytes_decode_or_fail_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..300), server in any::<bool>()) {
        let side = if server { Side::Server } else { Side::Client };
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode(&mut buf, side) {}
    }
}

#[tokio::test]
async fn opening_a_tunnel_to_a_server_that_never_answers_gives_up_in_time() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("an address");
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let ca = weft_api::pki::ClusterCa::generate().expect("a CA");
    let tls = weft_api::tls::client_config(ca.cert_pem(), None).expect("client TLS");
    let url = format!("wss://{addr}/v1-weft/connect");
    let short = Duration::from_millis(300);
    let opened = tokio::time::timeout(
        Duration::from_secs(3),
        connect_within(&url, tls, [Duration::from_secs(5), short, short]),
    )
    .await
    .expect("opening gave up on its own");
    assert_eq!(
        opened.err().map(|e| e.to_string()),
        Some(format!(
            "connecting to {url} timed out: no TLS handshake within 300ms; the server may be overloaded or unreachable"
        ))
    );
    holding.abort();
}
