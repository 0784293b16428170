//! Entry points for the fuzz targets in `fuzz/` (`tunnel_frame`, `tunnel_session`,
//! `tunnel_websocket`), also replayed over their seed corpora by unit tests.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::proto::{Config, Event, Frame, Role, Session, StreamError};

/// Fuzzes the frame decoder: it never panics, and whatever it accepts encodes back to exactly the
/// same bytes, which decode to the same frame.
pub fn frame(data: &[u8]) {
    let message = Bytes::copy_from_slice(data);
    if let Ok(frame) = Frame::decode(&message) {
        let mut encoded = Vec::new();
        frame.encode(&mut encoded);
        assert_eq!(
            encoded, data,
            "a decoded frame must encode to the same bytes"
        );
        assert_eq!(Frame::decode(&Bytes::from(encoded)), Ok(frame));
    }
}

/// Fuzzes a session with a sequence of messages from a peer. The first byte picks the role (its
/// low bit) and the application's habits (bit 1: accept dials, else refuse them; bit 2: read
/// everything, else read nothing); the rest is messages, each a big-endian u16 length and that
/// many bytes, with the clock moving one second every message. The session never panics, its
/// byte counts always match its streams and stay within their bounds, and once closed it
/// stays closed and silent.
pub fn session(data: &[u8]) {
    let Some((&habits, mut rest)) = data.split_first() else {
        return;
    };
    let role = if habits & 1 == 0 {
        Role::Server
    } else {
        Role::Agent
    };
    let config = Config {
        stream_window: 4096,
        max_session_buffer: 16 * 1024,
        max_streams: 8,
        ..Config::default()
    };
    let epoch = Instant::now();
    let Ok(mut session) = Session::new(role, config, epoch) else {
        unreachable!("the fuzz config is valid");
    };
    let mut now = epoch;
    let mut buf = Vec::new();
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let message = Bytes::copy_from_slice(&rest[2..2 + len]);
        rest = &rest[2 + len..];
        now += Duration::from_secs(1);
        session.handle_frame(now, message);
        if session.poll_timeout().is_some_and(|t| t <= now) {
            session.handle_timeout(now);
        }
        while let Some(event) = session.poll_event() {
            act(&mut session, event, habits);
        }
        buf.clear();
        while session.poll_transmit(now, &mut buf).is_some() {
            assert!(buf.len() <= crate::proto::MAX_FRAME_LEN);
            buf.clear();
        }
        if let Err(broken) = session.check_invariants() {
            panic!("session invariant broken: {broken}");
        }
    }
    if session.is_closed() {
        assert!(session.poll_transmit(now, &mut buf).is_none());
        assert_eq!(session.poll_timeout(), None);
    }
}

/// Fuzzes the WebSocket framing the transport reads. The first byte picks the receiving side
/// (its low bit) and where the rest is cut in two (the next byte, as a share of the rest), as if
/// it arrived in two reads. Decoding never panics and consumes only whole frames; every binary
/// message it accepts, framed again by the sending side, decodes to the same message.
pub fn websocket(data: &[u8]) {
    use bytes::BytesMut;

    use crate::transport::websocket::{Message, Side, begin_frame, decode, end_frame};

    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let (side, sender) = if first & 1 == 0 {
        (Side::Server, Side::Client)
    } else {
        (Side::Client, Side::Server)
    };
    let Some((&cut, rest)) = rest.split_first() else {
        return;
    };
    let at = rest.len() * usize::from(cut) / 255;
    let mut buf = BytesMut::from(&rest[..at]);
    let mut messages = Vec::new();
    for more in [&rest[at..], &[][..]] {
        while let Ok(Some(message)) = decode(&mut buf, side) {
            messages.push(message);
        }
        buf.extend_from_slice(more);
    }
    for message in messages {
        if let Message::Binary(payload) = message {
            let mut out = Vec::new();
            let start = begin_frame(&mut out, sender);
            out.extend_from_slice(&payload);
            end_frame(&mut out, start, sender);
            let mut again = BytesMut::from(&out[..]);
            assert_eq!(
                decode(&mut again, side),
                Ok(Some(Message::Binary(payload))),
                "a frame framed again decodes to the same message"
            );
            assert!(again.is_empty());
        }
    }
}

/// What a fuzzed session's application does with an event.
fn act(session: &mut Session, event: Event, habits: u8) {
    match event {
        Event::DialRequested { stream, .. } => {
            let answer = if habits & 2 != 0 {
                session.accept_dial(stream)
            } else {
                session.refuse_dial(stream, crate::proto::DialError::NotAllowed)
            };
            assert_eq!(answer, Ok(()), "a fresh dial can be answered");
            if habits & 2 != 0 {
                // Echo something back so the send side is exercised too.
                let _ = session.write(stream, b"hello");
            }
        }
        Event::Readable { stream } | Event::Finished { stream } if habits & 4 != 0 => loop {
            match session.read(stream, 1000) {
                Ok(Some(_)) => {}
                Ok(None) | Err(StreamError::Blocked | StreamError::UnknownStream { .. }) => {
                    break;
                }
                Err(error) => panic!("read failed: {error}"),
            }
        },
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    //! Replays the fuzz corpora so the targets keep compiling and their inputs keep passing.

    use std::path::Path;

    fn replay(target: &str, run: fn(&[u8])) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(target);
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).expect("the seed corpus exists") {
            let path = entry.expect("a corpus entry").path();
            run(&std::fs::read(&path).expect("a readable corpus file"));
            replayed += 1;
        }
        replayed
    }

    #[test]
    fn replay_tunnel_frame_corpus() {
        assert!(replay("tunnel_frame", super::frame) >= 5);
    }

    #[test]
    fn replay_tunnel_session_corpus() {
        assert!(replay("tunnel_session", super::session) >= 3);
    }

    #[test]
    fn replay_tunnel_websocket_corpus() {
        assert!(replay("tunnel_websocket", super::websocket) >= 5);
    }
}
