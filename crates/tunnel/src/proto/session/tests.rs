//! Tests of [`Session`] through the in-memory [`Pair`](crate::pair::Pair): dials, data both ways,
//! half-close, reset, refused dials, flow control and its bounds, keepalive, stream limits, and
//! every protocol violation.

use std::time::Duration;

use bytes::Bytes;

use crate::pair::Pair;
use crate::proto::{
    CloseCode, Config, DialError, Event, Frame, FrameError, ProtocolError, ResetCode, Role,
    Session, SessionError, StreamError, StreamId, Target,
};

fn config(window: u32, session: u64, streams: usize) -> Config {
    Config {
        stream_window: window,
        max_session_buffer: session,
        max_streams: streams,
        ..Config::default()
    }
}

fn pair_with(server: Config, agent: Config) -> Pair {
    Pair::new(server, agent).expect("valid configs in the test")
}

fn target(host: &str, port: u16) -> Target {
    Target::new(host, port).expect("a valid target in the test")
}

/// `len` bytes that differ per stream and per offset, so misordered data shows.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn assert_invariants(pair: &Pair) {
    for session in [&pair.server.session, &pair.agent.session] {
        if let Err(broken) = session.check_invariants() {
            panic!("{:?}: {broken}", session.role());
        }
    }
}

#[test]
fn data_flows_both_ways_and_half_close_ends_the_stream() {
    let mut pair = Pair::default();
    let stream = pair.open("10.0.0.1", 10250);
    assert_eq!(stream, StreamId(2));

    pair.server.write_available(stream, b"GET /healthz");
    pair.drive();
    assert_eq!(pair.agent.take_events(), [Event::Readable { stream }]);
    assert_eq!(
        pair.agent.read_available(stream),
        (b"GET /healthz".to_vec(), false)
    );

    // The server half-closes; the agent can still answer.
    pair.server.session.finish(stream).expect("finish");
    pair.agent.write_available(stream, b"ok");
    pair.drive();
    assert_eq!(pair.agent.take_events(), [Event::Finished { stream }]);
    assert_eq!(pair.agent.read_available(stream), (Vec::new(), true));
    assert_eq!(pair.server.read_available(stream), (b"ok".to_vec(), false));

    pair.agent.session.finish(stream).expect("finish");
    pair.drive();
    assert_eq!(pair.server.read_available(stream), (Vec::new(), true));
    assert_eq!(pair.server.session.stats().streams, 0);
    assert_eq!(pair.agent.session.stats().streams, 0);
    assert_eq!(
        pair.server.session.write(stream, b"late"),
        Err(StreamError::UnknownStream { stream })
    );
    assert!(!pair.server.session.is_closed() && !pair.agent.session.is_closed());
    assert_invariants(&pair);
}

#[test]
fn the_dial_succeeds_only_after_the_agent_accepts() {
    let mut pair = Pair::default();
    let stream = pair
        .server
        .session
        .open(target("fd00::5", 10250))
        .expect("open");
    assert_eq!(
        pair.server.session.write(stream, b"early"),
        Err(StreamError::NotConnected { stream })
    );
    pair.drive();
    assert_eq!(pair.server.take_events(), []);
    assert_eq!(
        pair.agent.take_events(),
        [Event::DialRequested {
            stream,
            target: target("fd00::5", 10250)
        }]
    );
    // However long the agent's dial takes, the server waits.
    pair.advance(Duration::from_secs(10));
    assert_eq!(pair.server.take_events(), []);
    pair.agent.session.accept_dial(stream).expect("accept");
    assert_eq!(
        pair.agent.session.accept_dial(stream),
        Err(StreamError::NotDialing { stream })
    );
    pair.drive();
    assert_eq!(pair.server.take_events(), [Event::DialSucceeded { stream }]);
}

#[test]
fn a_refused_dial_fails_only_its_stream() {
    let mut pair = Pair::default();
    let good = pair.open("127.0.0.1", 10250);
    let bad = pair
        .server
        .session
        .open(target("10.1.2.3", 22))
        .expect("open");
    pair.drive();
    pair.agent.take_events();
    pair.agent
        .session
        .refuse_dial(bad, DialError::NotAllowed)
        .expect("refuse");
    pair.drive();
    assert_eq!(
        pair.server.take_events(),
        [Event::DialFailed {
            stream: bad,
            error: DialError::NotAllowed
        }]
    );
    // A failed dial says why.
    let failed = pair
        .server
        .session
        .open(target("10.1.2.3", 10250))
        .expect("open");
    pair.drive();
    pair.agent.take_events();
    pair.agent
        .session
        .refuse_dial(failed, DialError::ConnectionRefused)
        .expect("refuse");
    pair.drive();
    assert_eq!(
        pair.server.take_events(),
        [Event::DialFailed {
            stream: failed,
            error: DialError::ConnectionRefused
        }]
    );
    // The other stream and the session carry on.
    pair.server.write_available(good, b"still here");
    pair.drive();
    assert_eq!(pair.agent.read_available(good).0, b"still here");
    assert!(!pair.server.session.is_closed() && !pair.agent.session.is_closed());
    assert_eq!(pair.agent.session.stats().streams, 1);
}

#[test]
fn either_side_opens_streams_with_its_own_parity() {
    let mut pair = Pair::default();
    let from_server: Vec<StreamId> = (0..3)
        .map(|_| pair.server.session.open(target("a", 1)).expect("open"))
        .collect();
    let from_agent: Vec<StreamId> = (0..2)
        .map(|_| pair.agent.session.open(target("b", 2)).expect("open"))
        .collect();
    assert_eq!(from_server, [StreamId(2), StreamId(4), StreamId(6)]);
    assert_eq!(from_agent, [StreamId(1), StreamId(3)]);
    pair.drive();
    let asked = |events: Vec<Event>| -> Vec<StreamId> {
        events
            .into_iter()
            .filter_map(|event| match event {
                Event::DialRequested { stream, .. } => Some(stream),
                _ => None,
            })
            .collect()
    };
    assert_eq!(asked(pair.agent.take_events()), from_server);
    assert_eq!(asked(pair.server.take_events()), from_agent);
    pair.server
        .session
        .accept_dial(StreamId(1))
        .expect("accept");
    pair.drive();
    pair.agent.write_available(StreamId(1), b"up");
    pair.drive();
    assert_eq!(pair.server.read_available(StreamId(1)).0, b"up");
}

#[test]
fn a_stalled_reader_stalls_only_its_own_stream() {
    let mut pair = Pair::default();
    let window = pair.agent.session.config().stream_window as usize;
    let stalled = pair.open("10.0.0.1", 10250);
    let busy = pair.open("10.0.0.1", 10010);
    let big = pattern(1, 4 * 1024 * 1024);
    let mut stalled_sent = 0;
    let (mut busy_sent, mut busy_received) = (0, Vec::new());
    for _ in 0..10_000 {
        stalled_sent += pair.server.write_available(stalled, &big[stalled_sent..]);
        busy_sent += pair.server.write_available(busy, &big[busy_sent..]);
        pair.drive();
        // The agent reads only one of the two streams.
        busy_received.extend(pair.agent.read_available(busy).0);
        assert_invariants(&pair);
        if busy_received.len() == big.len() {
            break;
        }
    }
    assert_eq!(
        busy_received, big,
        "the busy stream got every byte, in order"
    );
    // The stalled stream got exactly one window, which the agent holds, and no more.
    assert_eq!(stalled_sent, window);
    let stats = pair.agent.session.stats();
    assert_eq!(stats.recv_buffered, window as u64);
    assert_eq!(
        pair.server.session.write(stalled, b"x"),
        Err(StreamError::Blocked)
    );
    // Reading it releases credit and the writer is told.
    pair.server.take_events();
    assert_eq!(pair.agent.read_available(stalled).0, big[..window]);
    pair.drive();
    assert!(
        pair.server
            .take_events()
            .contains(&Event::Writable { stream: stalled })
    );
}

#[test]
fn a_window_bounds_each_streams_memory_on_both_sides() {
    let window = 16 * 1024;
    let mut pair = pair_with(config(window, 1 << 20, 16), config(window, 1 << 20, 16));
    let stream = pair.open("10.0.0.1", 10250);
    let data = pattern(7, 1 << 20);
    let written = pair.server.write_available(stream, &data);
    assert_eq!(
        written, window as usize,
        "the writer queues one window at most"
    );
    pair.drive();
    assert_eq!(pair.server.write_available(stream, &data[written..]), 0);
    assert_eq!(pair.agent.session.stats().recv_buffered, u64::from(window));
    assert_eq!(pair.server.session.stats().send_buffered, 0);
    // Reading part of it gives credit back only once a quarter window is owed.
    assert!(pair.agent.session.read(stream, 100).is_ok());
    pair.drive();
    assert_eq!(pair.server.write_available(stream, &data[written..]), 0);
    assert!(pair.agent.session.read(stream, 8 * 1024).is_ok());
    pair.drive();
    let more = pair.server.write_available(stream, &data[written..]);
    assert_eq!(more, 100 + 8 * 1024);
    assert_invariants(&pair);
}

#[test]
fn the_session_cap_bounds_all_streams_and_every_stream_still_completes() {
    let window = 32 * 1024;
    let cap = 64 * 1024;
    let mut pair = pair_with(config(window, cap, 16), config(window, cap, 16));
    let streams: Vec<StreamId> = (0..4).map(|i| pair.open("10.0.0.1", 1000 + i)).collect();
    let data: Vec<Vec<u8>> = (0..4).map(|i| pattern(i as u8, 200_000)).collect();
    let mut sent = [0usize; 4];
    let mut received: Vec<Vec<u8>> = vec![Vec::new(); 4];
    // Nobody reads: the agent never holds more than the cap.
    for (i, &stream) in streams.iter().enumerate() {
        sent[i] += pair.server.write_available(stream, &data[i]);
    }
    pair.drive();
    assert!(pair.agent.session.stats().recv_committed <= cap);
    assert_eq!(sent.iter().sum::<usize>() as u64, cap);
    // Reading one stream at a time, every stream completes.
    for _ in 0..10_000 {
        for (i, &stream) in streams.iter().enumerate() {
            sent[i] += pair.server.write_available(stream, &data[i][sent[i]..]);
        }
        pair.drive();
        assert_invariants(&pair);
        let Some(i) = (0..4).find(|&i| received[i].len() < data[i].len()) else {
            break;
        };
        received[i].extend(pair.agent.read_available(streams[i]).0);
        pair.drive();
    }
    assert_eq!(received, data);
}

#[test]
fn a_dead_peer_is_detected_within_the_idle_timeout() {
    let mut pair = Pair::default();
    let stream = pair.open("10.0.0.1", 10250);
    pair.advance(Duration::from_secs(3));
    pair.sever();
    let cut = pair.elapsed();
    let mut closed_after = None;
    for _ in 0..200 {
        pair.advance(Duration::from_millis(100));
        if pair.agent.session.is_closed() && pair.server.session.is_closed() {
            closed_after = Some(pair.elapsed() - cut);
            break;
        }
    }
    let closed_after = closed_after.expect("both ends notice the dead link");
    assert!(
        closed_after <= Duration::from_secs(15),
        "closed {closed_after:?} after the cut"
    );
    for endpoint in [&mut pair.server, &mut pair.agent] {
        assert_eq!(
            endpoint.take_events().last(),
            Some(&Event::SessionClosed {
                reason: SessionError::TimedOut { secs: 15 }
            })
        );
        assert_eq!(
            endpoint.session.write(stream, b"x"),
            Err(StreamError::SessionClosed)
        );
        assert_eq!(endpoint.session.poll_timeout(), None);
    }
}

#[test]
fn pings_keep_an_idle_session_alive() {
    let mut pair = Pair::default();
    pair.latency = Duration::from_millis(50);
    let stream = pair.open("10.0.0.1", 10250);
    let before = pair.server.sent.0;
    pair.advance(Duration::from_secs(120));
    assert!(!pair.server.session.is_closed() && !pair.agent.session.is_closed());
    let pings = pair.server.sent.0 - before;
    // A ping and a pong per interval at most.
    assert!(
        (10..=50).contains(&pings),
        "{pings} keepalive frames in 2 minutes"
    );
    pair.server.write_available(stream, b"still up");
    pair.drive();
    assert_eq!(pair.agent.read_available(stream).0, b"still up");
}

#[test]
fn a_peer_that_stops_reading_is_dropped_too() {
    let mut pair = Pair::default();
    pair.open("10.0.0.1", 10250);
    // Frames to the agent pile up unread: it hears nothing and gives up.
    pair.agent.stalled = true;
    pair.advance(Duration::from_secs(16));
    assert_eq!(
        pair.agent.session.close_reason(),
        Some(&SessionError::TimedOut { secs: 15 })
    );
    // Its go-away reaches the server, which closes too.
    assert_eq!(
        pair.server.session.close_reason(),
        Some(&SessionError::PeerClosed {
            code: CloseCode::TimedOut,
            reason: "no frame from the peer for 15s".to_owned()
        })
    );
}

#[test]
fn a_malformed_frame_closes_the_session_with_a_typed_error() {
    let mut pair = Pair::default();
    pair.open("10.0.0.1", 10250);
    let now = pair.now();
    pair.agent
        .session
        .handle_frame(now, Bytes::from_static(&[9, 4, 0, 0, 0, 2, 1]));
    pair.drive();
    let expected = SessionError::Protocol(ProtocolError::Frame(FrameError::UnsupportedVersion {
        version: 9,
    }));
    assert_eq!(pair.agent.session.close_reason(), Some(&expected));
    assert_eq!(
        pair.server.session.close_reason(),
        Some(&SessionError::PeerClosed {
            code: CloseCode::ProtocolError,
            reason: "unsupported protocol version 9, this side speaks 1".to_owned()
        })
    );
    // Nothing more is sent, and input is ignored.
    let mut buf = Vec::new();
    assert_eq!(pair.agent.session.poll_transmit(now, &mut buf), None);
    pair.agent.session.handle_frame(
        now,
        Bytes::from_static(&[1, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    );
    assert_eq!(pair.agent.session.poll_transmit(now, &mut buf), None);
}

/// Feeds `frames` to a fresh session of `role` and returns why it closed.
fn violation(role: Role, frames: &[Frame]) -> Option<SessionError> {
    let mut pair = Pair::default();
    let now = pair.now();
    let session = match role {
        Role::Server => &mut pair.server.session,
        Role::Agent => &mut pair.agent.session,
    };
    for frame in frames {
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        session.handle_frame(now, Bytes::from(buf));
    }
    session.close_reason().cloned()
}

fn dial(stream: u32, window: u32) -> Frame {
    Frame::Dial {
        stream: StreamId(stream),
        window,
        target: target("10.0.0.1", 10250),
    }
}

fn data(stream: u32, len: usize) -> Frame {
    Frame::Data {
        stream: StreamId(stream),
        payload: Bytes::from(vec![0; len]),
    }
}

#[test]
fn frames_that_break_the_protocol_close_the_session() {
    let protocol = |error| Some(SessionError::Protocol(error));
    // The agent receives dials from the server: even ids, 2, 4, 6, ...
    assert_eq!(
        violation(Role::Agent, &[dial(1, 0)]),
        protocol(ProtocolError::WrongParity {
            stream: StreamId(1)
        })
    );
    // Ids may skip (a dial dropped before it went out) but never go back.
    assert_eq!(violation(Role::Agent, &[dial(4, 0)]), None);
    assert_eq!(
        violation(Role::Agent, &[dial(4, 0), dial(2, 0)]),
        protocol(ProtocolError::StreamIdReused {
            stream: StreamId(2),
            next: StreamId(6)
        })
    );
    assert_eq!(
        violation(Role::Agent, &[dial(2, 0), dial(2, 0)]),
        protocol(ProtocolError::StreamIdReused {
            stream: StreamId(2),
            next: StreamId(4)
        })
    );
    // A skipped id counts as opened and closed: late frames for it are dropped.
    assert_eq!(violation(Role::Agent, &[dial(4, 0), data(2, 1)]), None);
    assert_eq!(
        violation(Role::Agent, &[data(2, 1)]),
        protocol(ProtocolError::UnknownStream {
            stream: StreamId(2)
        })
    );
    assert_eq!(
        violation(Role::Agent, &[data(7, 1)]),
        protocol(ProtocolError::UnknownStream {
            stream: StreamId(7)
        })
    );
    // Data before the agent's dial-ok went out.
    assert_eq!(
        violation(Role::Agent, &[dial(2, 100), data(2, 1)]),
        protocol(ProtocolError::BeforeDialReply {
            stream: StreamId(2)
        })
    );
    // A dial reply for a stream the agent never opened, or for a server-opened one.
    assert_eq!(
        violation(
            Role::Agent,
            &[Frame::DialOk {
                stream: StreamId(1),
                window: 1
            }]
        ),
        protocol(ProtocolError::UnknownStream {
            stream: StreamId(1)
        })
    );
    assert_eq!(
        violation(
            Role::Agent,
            &[
                dial(2, 0),
                Frame::DialOk {
                    stream: StreamId(2),
                    window: 1
                }
            ]
        ),
        protocol(ProtocolError::WrongParity {
            stream: StreamId(2)
        })
    );
}

#[test]
fn flow_control_and_fin_violations_close_the_session() {
    let window = Config::default().stream_window as usize;
    // The server opens stream 2; the agent accepts and tries to cheat.
    let mut pair = Pair::default();
    let stream = pair.open("10.0.0.1", 10250);
    let now = pair.now();
    let send = |pair: &mut Pair, frame: Frame| {
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        pair.server.session.handle_frame(now, Bytes::from(buf));
    };
    for _ in 0..window / 32768 {
        send(&mut pair, data(2, 32768));
    }
    assert_eq!(pair.server.session.close_reason(), None);
    send(&mut pair, data(2, 1));
    assert_eq!(
        pair.server.session.close_reason(),
        Some(&SessionError::Protocol(ProtocolError::FlowControl {
            stream,
            len: 1,
            credit: 0
        }))
    );

    let mut pair = Pair::default();
    let stream = pair.open("10.0.0.1", 10250);
    send(&mut pair, Frame::Fin { stream });
    send(&mut pair, data(2, 1));
    assert_eq!(
        pair.server.session.close_reason(),
        Some(&SessionError::Protocol(ProtocolError::AfterFin { stream }))
    );

    let mut pair = Pair::default();
    let stream = pair.open("10.0.0.1", 10250);
    send(&mut pair, Frame::DialOk { stream, window: 5 });
    assert_eq!(
        pair.server.session.close_reason(),
        Some(&SessionError::Protocol(ProtocolError::DuplicateDialReply {
            stream
        }))
    );

    let mut pair = Pair::default();
    let stream = pair.open("10.0.0.1", 10250);
    send(
        &mut pair,
        Frame::Credit {
            stream,
            increment: u32::MAX,
        },
    );
    assert_eq!(
        pair.server.session.close_reason(),
        Some(&SessionError::Protocol(ProtocolError::CreditOverflow {
            stream
        }))
    );
}

#[test]
fn frames_crossing_a_reset_are_dropped_quietly() {
    let mut pair = Pair::default();
    pair.latency = Duration::from_millis(5);
    let stream = pair.open("10.0.0.1", 10250);
    // Both ends act before hearing from the other: the agent's data crosses the server's reset.
    pair.agent.write_available(stream, b"in flight");
    pair.agent.session.finish(stream).expect("finish");
    pair.server
        .session
        .reset(stream, ResetCode::Cancelled)
        .expect("reset");
    pair.drive();
    assert_eq!(
        pair.agent.take_events(),
        [Event::Reset {
            stream,
            code: ResetCode::Cancelled
        }]
    );
    assert!(!pair.server.session.is_closed() && !pair.agent.session.is_closed());
    assert_eq!(pair.server.session.stats(), Default::default());
    assert_eq!(pair.agent.session.stats(), Default::default());
}

#[test]
fn a_dial_without_reply_times_out_and_only_that_stream_fails() {
    let mut pair = Pair::default();
    let answered = pair.open("10.0.0.1", 10250);
    let hanging = pair
        .server
        .session
        .open(target("10.0.0.2", 10250))
        .expect("open");
    pair.drive();
    pair.agent.take_events();
    pair.advance(Duration::from_secs(31));
    assert_eq!(
        pair.server.take_events(),
        [Event::DialFailed {
            stream: hanging,
            error: DialError::TimedOut
        }]
    );
    assert_eq!(
        pair.agent.take_events(),
        [Event::Reset {
            stream: hanging,
            code: ResetCode::DialTimeout
        }]
    );
    // The agent's dial finishing late is harmless.
    assert_eq!(
        pair.agent.session.accept_dial(hanging),
        Err(StreamError::UnknownStream { stream: hanging })
    );
    pair.server.write_available(answered, b"fine");
    pair.drive();
    assert_eq!(pair.agent.read_available(answered).0, b"fine");
}

#[test]
fn streams_past_the_limit_are_refused_one_by_one() {
    let mut pair = pair_with(Config::default(), config(256 * 1024, 64 << 20, 2));
    let first = pair.open("10.0.0.1", 1);
    let second = pair.open("10.0.0.1", 2);
    let third = pair
        .server
        .session
        .open(target("10.0.0.1", 3))
        .expect("the server's own limit is higher");
    pair.drive();
    assert_eq!(
        pair.server.take_events(),
        [Event::DialFailed {
            stream: third,
            error: DialError::TooManyStreams
        }]
    );
    assert_eq!(pair.agent.take_events(), []);
    // The agent's own opens count against the same limit.
    assert_eq!(
        pair.agent.session.open(target("10.0.0.9", 9)),
        Err(StreamError::TooManyStreams { max: 2 })
    );
    // Ending a stream makes room.
    pair.server
        .session
        .reset(first, ResetCode::Cancelled)
        .expect("reset");
    pair.drive();
    let fourth = pair.open("10.0.0.1", 4);
    pair.server.write_available(fourth, b"4");
    pair.server.write_available(second, b"2");
    pair.drive();
    assert_eq!(pair.agent.read_available(fourth).0, b"4");
    assert_eq!(pair.agent.read_available(second).0, b"2");
}

#[test]
fn a_peer_that_floods_dials_past_the_limit_is_cut_off() {
    let mut pair = pair_with(Config::default(), config(1024, 1 << 20, 1));
    let now = pair.now();
    let mut dials = (2..).step_by(2).map(|id| {
        let mut buf = Vec::new();
        dial(id, 0).encode(&mut buf);
        Bytes::from(buf)
    });
    // The agent takes one stream and refuses the rest, however many, while it can send the
    // refusals: a peer may allow itself more streams than the agent does.
    for dial in dials.by_ref().take(100_000) {
        pair.agent.session.handle_frame(now, dial);
        let mut buf = Vec::new();
        while pair.agent.session.poll_transmit(now, &mut buf).is_some() {}
    }
    assert_eq!(pair.agent.session.close_reason(), None);
    // A peer that dials on without reading the refusals is cut off.
    for dial in dials.take(70_000) {
        pair.agent.session.handle_frame(now, dial);
    }
    assert_eq!(
        pair.agent.session.close_reason(),
        Some(&SessionError::Protocol(ProtocolError::TooManyRefusals {
            max: 65_536
        }))
    );
}

#[test]
fn a_peer_that_loops_dials_and_resets_without_reading_is_cut_off() {
    let mut pair = pair_with(Config::default(), config(1024, 1 << 20, 4));
    let now = pair.now();
    let encoded = |frame: Frame| {
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        Bytes::from(buf)
    };
    let mut rounds = (2..).step_by(2).map(|id| {
        [
            encoded(dial(id, 0)),
            encoded(Frame::Reset {
                stream: StreamId(id),
                code: ResetCode::Cancelled,
            }),
        ]
    });
    // While the application takes the events, dials and resets may loop as long as they like.
    for round in rounds.by_ref().take(50_000) {
        for frame in round {
            pair.agent.session.handle_frame(now, frame);
        }
        while pair.agent.session.poll_event().is_some() {}
    }
    assert_eq!(pair.agent.session.close_reason(), None);
    // Once they pile up (the driver is stuck writing to a peer that does not read), the
    // session ends: 4 streams allow 16 * 4 + 1024 events.
    for round in rounds.take(1_000) {
        for frame in round {
            pair.agent.session.handle_frame(now, frame);
        }
    }
    assert_eq!(
        pair.agent.session.close_reason(),
        Some(&SessionError::Protocol(ProtocolError::TooManyEvents {
            max: 4 * 16 + 1024
        }))
    );
    assert!(pair.agent.session.stats().streams <= 4);
}

#[test]
fn close_stops_reading_without_blocking_the_writer() {
    let mut pair = pair_with(config(4096, 1 << 20, 8), config(4096, 1 << 20, 8));
    let stream = pair.open("10.0.0.1", 10250);
    pair.server.write_available(stream, &pattern(0, 1000));
    pair.drive();
    pair.agent.session.close(stream).expect("close");
    pair.drive();
    assert_eq!(pair.agent.session.stats().recv_buffered, 0);
    // The server goes on writing well past one window; nothing is held.
    let data = pattern(3, 100_000);
    let mut sent = 0;
    for _ in 0..1000 {
        sent += pair.server.write_available(stream, &data[sent..]);
        pair.drive();
        assert_eq!(pair.agent.session.stats().recv_buffered, 0);
        if sent == data.len() {
            break;
        }
    }
    assert_eq!(sent, data.len());
    // The server reads the agent's fin; once it finishes too, the stream is gone on both sides.
    assert_eq!(pair.server.read_available(stream), (Vec::new(), true));
    pair.server.session.finish(stream).expect("finish");
    pair.drive();
    assert_eq!(pair.server.session.stats().streams, 0);
    assert_eq!(pair.agent.session.stats().streams, 0);
}

#[test]
fn closing_the_session_tells_the_peer_why() {
    let mut pair = Pair::default();
    let stream = pair.open("10.0.0.1", 10250);
    pair.server.session.close_session("server shutting down");
    pair.drive();
    assert_eq!(
        pair.server.take_events(),
        [Event::SessionClosed {
            reason: SessionError::Local
        }]
    );
    assert_eq!(
        pair.agent.take_events(),
        [Event::SessionClosed {
            reason: SessionError::PeerClosed {
                code: CloseCode::Normal,
                reason: "server shutting down".to_owned()
            }
        }]
    );
    assert_eq!(
        pair.agent.session.read(stream, 10),
        Err(StreamError::SessionClosed)
    );
}

#[test]
fn streams_with_data_take_turns() {
    let mut pair = Pair::default();
    let a = pair.open("10.0.0.1", 1);
    let b = pair.open("10.0.0.1", 2);
    let payload = pair.server.session.config().max_data_payload;
    pair.server.write_available(a, &pattern(1, 4 * payload));
    pair.server.write_available(b, &pattern(2, 4 * payload));
    pair.server.captured = Some(Vec::new());
    pair.drive();
    let order: Vec<u32> = pair
        .server
        .captured
        .take()
        .unwrap_or_default()
        .iter()
        .filter(|frame| frame[1] == 4)
        .map(|frame| u32::from_be_bytes([frame[2], frame[3], frame[4], frame[5]]))
        .collect();
    assert_eq!(order, [2, 4, 2, 4, 2, 4, 2, 4]);
}

#[test]
fn a_pong_goes_out_ahead_of_queued_data() {
    let mut pair = Pair::default();
    let stream = pair.open("10.0.0.1", 10250);
    pair.server.write_available(stream, &pattern(1, 100_000));
    let now = pair.now();
    let mut ping = Vec::new();
    Frame::Ping { payload: 77 }.encode(&mut ping);
    pair.server.session.handle_frame(now, Bytes::from(ping));
    let mut buf = Vec::new();
    assert!(pair.server.session.poll_transmit(now, &mut buf).is_some());
    assert_eq!(
        Frame::decode(&Bytes::from(buf)),
        Ok(Frame::Pong { payload: 77 })
    );
}

#[test]
fn latency_limits_throughput_to_a_window_per_round_trip() {
    let mut pair = Pair::default();
    pair.latency = Duration::from_millis(1);
    let stream = pair.open("10.0.0.1", 10250);
    let start = pair.elapsed();
    let total = 8 * 1024 * 1024;
    assert_eq!(pair.transfer(stream, total), total);
    let took = pair.elapsed() - start;
    // 256 KiB per 2 ms round trip is 128 MiB/s: 8 MiB takes about 64 ms of virtual time.
    assert!(
        (Duration::from_millis(40)..Duration::from_millis(200)).contains(&took),
        "8 MiB took {took:?}"
    );
}

#[test]
fn invalid_configs_are_refused() {
    use crate::proto::ConfigError;
    let check = |config: Config, error: ConfigError| {
        assert_eq!(config.validate(), Err(error.clone()));
        assert_eq!(
            Session::new(Role::Agent, config, Pair::default().now()).map(|_| ()),
            Err(error)
        );
    };
    check(config(0, 1 << 20, 1), ConfigError::Window { window: 0 });
    check(
        config(1 << 20, 1 << 19, 1),
        ConfigError::SessionBuffer {
            buffer: 1 << 19,
            window: 1 << 20,
        },
    );
    check(config(1024, 1 << 20, 0), ConfigError::MaxStreams);
    check(
        Config {
            max_data_payload: 70_000,
            ..Config::default()
        },
        ConfigError::DataPayload { payload: 70_000 },
    );
    check(
        Config {
            ping_interval: Duration::from_secs(20),
            ..Config::default()
        },
        ConfigError::Keepalive,
    );
    check(
        Config {
            dial_timeout: Duration::ZERO,
            ..Config::default()
        },
        ConfigError::DialTimeout,
    );
    check(
        Config {
            write_stall_timeout: Duration::ZERO,
            ..Config::default()
        },
        ConfigError::WriteStallTimeout,
    );
}

#[test]
fn an_idle_stream_costs_little_memory() {
    // The target is 8 KiB per idle stream; the state is a few hundred bytes, and its
    // queues allocate only while they hold data.
    let size = std::mem::size_of::<crate::proto::stream::Stream>();
    assert!(size <= 256, "a stream's state is {size} bytes");
    let mut pair = Pair::default();
    let streams: Vec<StreamId> = (0..100).map(|i| pair.open("10.0.0.1", 1 + i)).collect();
    for endpoint in [&pair.server, &pair.agent] {
        let stats = endpoint.session.stats();
        assert_eq!(stats.streams, streams.len());
        assert_eq!((stats.recv_buffered, stats.send_buffered), (0, 0));
    }
}

#[test]
fn a_frame_leaving_wakes_only_the_blocked_writers_its_room_takes() {
    let window = 16 * 1024;
    let payload = 4 * 1024;
    let server = Config {
        max_data_payload: payload,
        ..config(window, u64::from(window) * 2, 32)
    };
    let mut pair = pair_with(server, Config::default());
    let streams: Vec<StreamId> = (0..12).map(|i| pair.open("10.0.0.1", 1 + i)).collect();
    let data = pattern(3, window as usize);
    // Two streams fill the session send buffer; the other ten are refused, oldest first.
    for &stream in &streams[..2] {
        assert_eq!(pair.server.write_available(stream, &data), window as usize);
    }
    for &stream in &streams[2..] {
        assert_eq!(
            pair.server.session.write(stream, &data),
            Err(StreamError::Blocked)
        );
    }
    pair.server.take_events();
    // One frame leaves: its room takes one writer, the oldest, not all ten.
    let now = pair.now();
    let mut out = Vec::new();
    assert!(pair.server.session.poll_transmit(now, &mut out).is_some());
    while let Some(event) = pair.server.session.poll_event() {
        pair.server.events.push_back(event);
    }
    let woken: Vec<Event> = pair
        .server
        .take_events()
        .into_iter()
        .filter(|event| matches!(event, Event::Writable { .. }))
        .collect();
    assert_eq!(woken, vec![Event::Writable { stream: streams[2] }]);
    // Once everything queued left, every writer still waiting hears it has room.
    pair.drive();
    let mut waiting: Vec<StreamId> = streams[3..].to_vec();
    for event in pair.server.take_events() {
        if let Event::Writable { stream } = event {
            waiting.retain(|&w| w != stream);
        }
    }
    assert!(waiting.is_empty(), "never woken: {waiting:?}");
    assert_invariants(&pair);
}

#[test]
fn the_session_send_buffer_bounds_writes_and_wakes_writers() {
    let window = 16 * 1024;
    let mut pair = pair_with(config(window, u64::from(window) * 2, 8), Config::default());
    pair.agent.stalled = true;
    let streams: Vec<StreamId> = (0..3)
        .map(|i| {
            pair.agent.stalled = false;
            let stream = pair.open("10.0.0.1", 1 + i);
            pair.agent.stalled = true;
            stream
        })
        .collect();
    let data = pattern(9, window as usize);
    for &stream in &streams[..2] {
        assert_eq!(pair.server.write_available(stream, &data), window as usize);
    }
    // The session holds two windows to send: the third stream has credit but no room.
    assert_eq!(
        pair.server.session.write(streams[2], &data),
        Err(StreamError::Blocked)
    );
    assert_eq!(
        pair.server.session.stats().send_buffered,
        u64::from(window) * 2
    );
    pair.server.take_events();
    pair.drive();
    // Once frames go out, the blocked writer hears it has room.
    assert!(
        pair.server
            .take_events()
            .contains(&Event::Writable { stream: streams[2] })
    );
    assert_invariants(&pair);
}
