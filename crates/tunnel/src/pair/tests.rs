//! Tests of the pair harness, and a proptest that drives the protocol through it with random
//! sequences of application commands, latency, stalls and time.

use std::time::Duration;

use proptest::prelude::*;

use crate::pair::{Endpoint, Pair};
use crate::proto::{
    CloseCode, Config, DialError, Event, ResetCode, SessionError, StreamError, StreamId, Target,
};

#[test]
fn a_default_pair_is_idle() {
    let mut pair = Pair::default();
    assert!(pair.drive_bounded(10));
    assert_eq!(pair.server.in_flight() + pair.agent.in_flight(), 0);
}

#[test]
fn latency_delays_arrival_and_stalls_hold_frames() {
    let mut pair = Pair {
        latency: Duration::from_millis(20),
        ..Pair::default()
    };
    let stream = pair
        .server
        .session
        .open(Target::new("10.0.0.1", 10250).expect("valid"))
        .expect("open");
    pair.agent.stalled = true;
    pair.drive();
    assert_eq!(
        pair.agent.in_flight(),
        1,
        "the dial waits for the stalled agent"
    );
    assert_eq!(pair.elapsed(), Duration::ZERO);
    pair.agent.stalled = false;
    pair.drive();
    assert_eq!(pair.elapsed(), Duration::from_millis(20));
    assert!(matches!(
        pair.agent.take_events().as_slice(),
        [Event::DialRequested { stream: s, .. }] if *s == stream
    ));
}

#[test]
fn transfer_moves_every_byte() {
    let mut pair = Pair::default();
    let stream = pair.open("10.0.0.1", 10250);
    assert_eq!(
        pair.transfer(stream, 3 * 1024 * 1024 + 17),
        3 * 1024 * 1024 + 17
    );
    assert_eq!(pair.agent.session.stats().recv_buffered, 0);
    assert_eq!(pair.server.session.stats().send_buffered, 0);
}

/// One application command or harness action.
#[derive(Debug, Clone)]
enum Op {
    Open {
        server: bool,
    },
    Answer {
        pick: usize,
        accept: bool,
    },
    Write {
        pick: usize,
        server: bool,
        len: usize,
    },
    Read {
        pick: usize,
        server: bool,
        max: usize,
    },
    Finish {
        pick: usize,
        server: bool,
    },
    Close {
        pick: usize,
        server: bool,
    },
    Reset {
        pick: usize,
        server: bool,
    },
    Drive,
    Advance {
        millis: u16,
    },
    Stall {
        agent: bool,
        on: bool,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    let pick = any::<usize>();
    prop_oneof![
        2 => any::<bool>().prop_map(|server| Op::Open { server }),
        2 => (pick, prop::bool::weighted(0.8)).prop_map(|(pick, accept)| Op::Answer { pick, accept }),
        6 => (pick, any::<bool>(), 1usize..6000).prop_map(|(pick, server, len)| Op::Write { pick, server, len }),
        5 => (pick, any::<bool>(), 1usize..6000).prop_map(|(pick, server, max)| Op::Read { pick, server, max }),
        1 => (pick, any::<bool>()).prop_map(|(pick, server)| Op::Finish { pick, server }),
        1 => (pick, any::<bool>()).prop_map(|(pick, server)| Op::Close { pick, server }),
        1 => (pick, any::<bool>()).prop_map(|(pick, server)| Op::Reset { pick, server }),
        4 => Just(Op::Drive),
        1 => (0u16..20_000).prop_map(|millis| Op::Advance { millis }),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(agent, on)| Op::Stall { agent, on }),
    ]
}

/// What the test knows of one stream.
#[derive(Debug)]
struct Model {
    id: StreamId,
    /// Bytes written by the server and by the agent.
    written: [u64; 2],
    /// Bytes read by the server and by the agent.
    read: [u64; 2],
    /// Nothing abrupt happened to it: every written byte must arrive.
    clean: bool,
}

/// The byte at `offset` of what `writer` (0 server, 1 agent) sends on `stream`.
fn byte(stream: StreamId, writer: usize, offset: u64) -> u8 {
    (offset as u8)
        .wrapping_mul(13)
        .wrapping_add(stream.0 as u8)
        .wrapping_add(writer as u8 * 101)
}

struct Harness {
    pair: Pair,
    streams: Vec<Model>,
    /// Dials waiting for an answer: the stream, and whether the server must answer it.
    pending: Vec<(StreamId, bool)>,
    /// A session closed (only a timeout may close one).
    closed: bool,
}

impl Harness {
    fn endpoint(&mut self, server: bool) -> &mut Endpoint {
        if server {
            &mut self.pair.server
        } else {
            &mut self.pair.agent
        }
    }

    fn model(&mut self, id: StreamId) -> Option<&mut Model> {
        self.streams.iter_mut().find(|model| model.id == id)
    }

    fn pick(&self, pick: usize) -> Option<StreamId> {
        (!self.streams.is_empty()).then(|| self.streams[pick % self.streams.len()].id)
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Open { server } => {
                let target = Target::new("10.0.0.1", 10250).expect("valid");
                match self.endpoint(server).session.open(target) {
                    Ok(id) => self.streams.push(Model {
                        id,
                        written: [0; 2],
                        read: [0; 2],
                        clean: true,
                    }),
                    Err(StreamError::TooManyStreams { .. } | StreamError::SessionClosed) => {}
                    Err(error) => panic!("open failed: {error}"),
                }
            }
            Op::Answer { pick, accept } => {
                if self.pending.is_empty() {
                    return;
                }
                let (id, server) = self.pending.remove(pick % self.pending.len());
                let session = &mut self.endpoint(server).session;
                let answer = if accept {
                    session.accept_dial(id)
                } else {
                    session.refuse_dial(id, DialError::NotAllowed)
                };
                match answer {
                    Ok(()) => {}
                    Err(StreamError::UnknownStream { .. } | StreamError::SessionClosed) => {}
                    Err(error) => panic!("answer failed: {error}"),
                }
                if !accept && let Some(model) = self.model(id) {
                    model.clean = false;
                }
            }
            Op::Write { pick, server, len } => {
                let Some(id) = self.pick(pick) else { return };
                let writer = usize::from(!server);
                let offset = self.model(id).map_or(0, |model| model.written[writer]);
                let data: Vec<u8> = (0..len as u64)
                    .map(|i| byte(id, writer, offset + i))
                    .collect();
                match self.endpoint(server).session.write(id, &data) {
                    Ok(written) => {
                        if let Some(model) = self.model(id) {
                            model.written[writer] += written as u64;
                        }
                    }
                    Err(
                        StreamError::Blocked
                        | StreamError::UnknownStream { .. }
                        | StreamError::NotConnected { .. }
                        | StreamError::Finished { .. }
                        | StreamError::SessionClosed,
                    ) => {}
                    Err(error) => panic!("write failed: {error}"),
                }
            }
            Op::Read { pick, server, max } => {
                let Some(id) = self.pick(pick) else { return };
                self.read(id, server, max);
            }
            Op::Finish { pick, server } => {
                let Some(id) = self.pick(pick) else { return };
                let _ = self.endpoint(server).session.finish(id);
            }
            Op::Close { pick, server } => {
                let Some(id) = self.pick(pick) else { return };
                if self.endpoint(server).session.close(id).is_ok()
                    && let Some(model) = self.model(id)
                {
                    model.clean = false;
                }
            }
            Op::Reset { pick, server } => {
                let Some(id) = self.pick(pick) else { return };
                if self
                    .endpoint(server)
                    .session
                    .reset(id, ResetCode::Cancelled)
                    .is_ok()
                    && let Some(model) = self.model(id)
                {
                    model.clean = false;
                }
            }
            Op::Drive => self.pair.drive(),
            Op::Advance { millis } => self.pair.advance(Duration::from_millis(u64::from(millis))),
            Op::Stall { agent, on } => self.endpoint(!agent).stalled = on,
        }
        self.events();
        self.check();
    }

    /// Reads up to `max` bytes, checking each is the next one the writer sent.
    fn read(&mut self, id: StreamId, server: bool, max: usize) -> bool {
        let reader = usize::from(!server);
        let writer = 1 - reader;
        match self.endpoint(server).session.read(id, max) {
            Ok(Some(chunk)) => {
                let model = self.model(id).expect("a stream the test opened");
                for (i, &b) in chunk.iter().enumerate() {
                    let offset = model.read[reader] + i as u64;
                    assert_eq!(
                        b,
                        byte(id, writer, offset),
                        "{id} byte {offset} out of order"
                    );
                }
                model.read[reader] += chunk.len() as u64;
                assert!(
                    model.read[reader] <= model.written[writer],
                    "{id} read more than written"
                );
                true
            }
            Ok(None)
            | Err(
                StreamError::Blocked
                | StreamError::UnknownStream { .. }
                | StreamError::SessionClosed,
            ) => false,
            Err(error) => panic!("read failed: {error}"),
        }
    }

    fn events(&mut self) {
        for server in [true, false] {
            for event in self.endpoint(server).take_events() {
                match event {
                    Event::DialRequested { stream, .. } => self.pending.push((stream, server)),
                    Event::DialFailed { stream, .. } | Event::Reset { stream, .. } => {
                        if let Some(model) = self.model(stream) {
                            model.clean = false;
                        }
                    }
                    Event::SessionClosed { reason } => {
                        let timed_out = matches!(
                            reason,
                            SessionError::TimedOut { .. }
                                | SessionError::PeerClosed {
                                    code: CloseCode::TimedOut,
                                    ..
                                }
                        );
                        assert!(timed_out, "only a timeout may close the session: {reason}");
                        self.closed = true;
                    }
                    _ => {}
                }
            }
        }
    }

    fn check(&self) {
        for session in [&self.pair.server.session, &self.pair.agent.session] {
            if let Err(broken) = session.check_invariants() {
                panic!("{:?}: {broken}", session.role());
            }
        }
    }

    /// Unstalls both ends, answers every dial, and reads until nothing moves; then every clean
    /// stream must have delivered every byte written on it.
    fn finish(&mut self) {
        self.pair.server.stalled = false;
        self.pair.agent.stalled = false;
        for (id, server) in std::mem::take(&mut self.pending) {
            let _ = self.endpoint(server).session.accept_dial(id);
        }
        let ids: Vec<StreamId> = self.streams.iter().map(|model| model.id).collect();
        for _ in 0..100_000 {
            self.pair.drive();
            self.events();
            let mut moved = false;
            for &id in &ids {
                for server in [true, false] {
                    while self.read(id, server, usize::MAX) {
                        moved = true;
                    }
                }
            }
            self.check();
            if !moved {
                break;
            }
        }
        if self.closed {
            return;
        }
        for model in &self.streams {
            if model.clean {
                assert_eq!(
                    model.read[1], model.written[0],
                    "{}: server to agent",
                    model.id
                );
                assert_eq!(
                    model.read[0], model.written[1],
                    "{}: agent to server",
                    model.id
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_commands_keep_bytes_in_order_and_within_bounds(
        ops in prop::collection::vec(arb_op(), 1..120),
        window in 1024u32..8192,
        latency in 0u64..30,
    ) {
        let config = Config {
            stream_window: window,
            max_session_buffer: u64::from(window) * 3,
            max_streams: 4,
            max_data_payload: 700,
            ..Config::default()
        };
        let mut pair = Pair::new(config.clone(), config).expect("valid");
        pair.latency = Duration::from_millis(latency);
        let mut harness = Harness { pair, streams: Vec::new(), pending: Vec::new(), closed: false };
        for op in ops {
            harness.apply(op);
        }
        harness.finish();
    }
}

#[test]
fn streams_beyond_the_session_buffer_wait_for_credit_and_all_finish() {
    // Room for four streams' windows on each side; forty streams each send a window's worth,
    // and the agent answers each fin with a small reply, as a sink does.
    let config = Config {
        max_session_buffer: 4 * 256 * 1024,
        ..Config::default()
    };
    let mut pair = Pair::new(config.clone(), config).expect("valid configs");
    let data = vec![7u8; 256 * 1024];
    let mut streams = Vec::new();
    for _ in 0..40 {
        let target = Target::new("10.0.0.1", 10250).expect("valid");
        streams.push(pair.server.session.open(target).expect("open"));
    }
    let mut sent = vec![0usize; streams.len()];
    let mut agent_done = vec![false; streams.len()];
    let mut replied = vec![false; streams.len()];
    let mut server_done = vec![false; streams.len()];
    for _round in 0..10_000 {
        pair.drive();
        for event in pair.agent.take_events() {
            if let Event::DialRequested { stream, .. } = event {
                pair.agent.session.accept_dial(stream).expect("accept");
            }
        }
        pair.server.take_events();
        for (i, &stream) in streams.iter().enumerate() {
            if sent[i] < data.len() {
                match pair.server.session.write(stream, &data[sent[i]..]) {
                    Ok(n) => sent[i] += n,
                    Err(StreamError::Blocked | StreamError::NotConnected { .. }) => {}
                    Err(e) => panic!("write {stream}: {e}"),
                }
                if sent[i] == data.len() {
                    pair.server.session.finish(stream).expect("finish");
                }
            }
            if !agent_done[i] {
                match pair.agent.session.read(stream, usize::MAX) {
                    Ok(Some(_)) | Err(StreamError::Blocked | StreamError::UnknownStream { .. }) => {
                    }
                    Ok(None) => agent_done[i] = true,
                    Err(e) => panic!("agent read {stream}: {e}"),
                }
            }
            if agent_done[i] && !replied[i] {
                // The reply waits for credit like any write.
                match pair.agent.session.write(stream, b"done") {
                    Ok(4) => {
                        replied[i] = true;
                        pair.agent.session.finish(stream).expect("finish");
                    }
                    Ok(n) => panic!("a partial reply of {n} bytes"),
                    Err(StreamError::Blocked) => {}
                    Err(e) => panic!("reply on {stream}: {e}"),
                }
            }
            if !server_done[i] {
                match pair.server.session.read(stream, usize::MAX) {
                    Ok(Some(_)) | Err(StreamError::Blocked) => {}
                    Ok(None) => server_done[i] = true,
                    Err(e) => panic!("server read {stream}: {e}"),
                }
            }
        }
        if server_done.iter().all(|done| *done) {
            return;
        }
    }
    let stuck: Vec<_> = streams
        .iter()
        .zip(&server_done)
        .filter(|(_, done)| !**done)
        .map(|(s, _)| s)
        .collect();
    panic!(
        "streams never finished: {stuck:?}; server {:?}, agent {:?}",
        pair.server.session.stats(),
        pair.agent.session.stats()
    );
}
