//! [`Pair`]: a server session and an agent session joined by in-memory queues, with a virtual
//! clock, for deterministic tests and benches of the protocol (quinn-proto's `Pair`).
//!
//! Nothing here touches a socket or sleeps. Frames sent by one end arrive at the other after
//! [`Pair::latency`] of virtual time; [`Pair::drive`] runs both ends until nothing is in flight,
//! jumping the clock to the next arrival; [`Pair::advance`] lets virtual time pass so keepalive
//! and dial timers fire. A WebSocket over TCP never loses single messages, so there is no
//! per-frame loss knob: [`Endpoint::stalled`] holds the frames to one end (a peer that stopped
//! reading its socket) and [`Pair::sever`] drops everything from then on (a cable cut with no
//! FIN or RST: only the keepalive notices).
//!
//! The harness reads the system clock once, for the epoch of its virtual clock; every later
//! instant is that epoch plus virtual time, so runs are deterministic.

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::proto::{Config, ConfigError, Event, Role, Session, StreamError, StreamId, Target};

/// The most steps [`Pair::drive`] takes before it declares the pair never goes idle.
const MAX_STEPS: usize = 1_000_000;

/// Two sessions over in-memory queues with a virtual clock.
#[derive(Debug)]
pub struct Pair {
    /// The server end; it opens streams in most tests.
    pub server: Endpoint,
    /// The agent end.
    pub agent: Endpoint,
    /// How long each frame takes from one end to the other. Default zero.
    pub latency: Duration,
    /// Once set, every frame in flight and every frame sent later is dropped.
    severed: bool,
    time: Instant,
    epoch: Instant,
}

/// One end of a [`Pair`]: a session, the frames on their way to it, and its events.
#[derive(Debug)]
pub struct Endpoint {
    /// The state machine under test.
    pub session: Session,
    /// The events the session reported, oldest first; tests take them out.
    pub events: VecDeque<Event>,
    /// While set, frames to this end stay in flight: a peer that stopped reading its socket.
    pub stalled: bool,
    /// Every frame this end sent, if set to `Some`.
    pub captured: Option<Vec<Bytes>>,
    /// Frames and bytes this end sent.
    pub sent: (u64, u64),
    inbound: VecDeque<(Instant, Bytes)>,
    buf: Vec<u8>,
}

// === impl Pair ===

impl Default for Pair {
    fn default() -> Self {
        Pair::new(Config::default(), Config::default())
            .unwrap_or_else(|error| unreachable!("the default config is valid: {error}"))
    }
}

impl Pair {
    /// A pair of fresh sessions at virtual time zero.
    pub fn new(server: Config, agent: Config) -> Result<Pair, ConfigError> {
        // The one read of the system clock: the epoch of the virtual clock.
        let epoch = Instant::now();
        Ok(Pair {
            server: Endpoint::new(Session::new(Role::Server, server, epoch)?),
            agent: Endpoint::new(Session::new(Role::Agent, agent, epoch)?),
            latency: Duration::ZERO,
            severed: false,
            time: epoch,
            epoch,
        })
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.time
    }

    /// Virtual time since the pair was made.
    pub fn elapsed(&self) -> Duration {
        self.time - self.epoch
    }

    /// Cuts the connection silently: frames in flight and every frame sent from now on are lost.
    pub fn sever(&mut self) {
        self.severed = true;
        self.server.inbound.clear();
        self.agent.inbound.clear();
    }

    /// One round at the current time: due timers fire, both ends transmit, due frames arrive,
    /// events are collected. Returns whether anything happened.
    pub fn step(&mut self) -> bool {
        let now = self.time;
        let mut progress = false;
        for endpoint in [&mut self.server, &mut self.agent] {
            if endpoint.session.poll_timeout().is_some_and(|t| t <= now) {
                endpoint.session.handle_timeout(now);
                progress = true;
            }
        }
        let arrival = now + self.latency;
        progress |= self
            .server
            .transmit(now, arrival, &mut self.agent, self.severed);
        progress |= self
            .agent
            .transmit(now, arrival, &mut self.server, self.severed);
        progress |= self.server.deliver(now);
        progress |= self.agent.deliver(now);
        self.server.collect_events();
        self.agent.collect_events();
        progress
    }

    /// Runs both ends until no frame is in flight (frames to a stalled end excepted), moving the
    /// clock to each arrival; timers fire on the way. Returns `false` if the pair was still busy
    /// after `max_steps` steps.
    pub fn drive_bounded(&mut self, max_steps: usize) -> bool {
        let mut steps = 0;
        loop {
            while self.step() {
                steps += 1;
                if steps >= max_steps {
                    return false;
                }
            }
            let Some(arrival) = self.next_arrival() else {
                return true;
            };
            let next = self
                .next_timer()
                .map_or(arrival, |timer| timer.min(arrival));
            self.time = self.time.max(next);
        }
    }

    /// [`drive_bounded`](Self::drive_bounded) with a generous bound.
    ///
    /// Panics if the pair never goes idle: in a test that is the failure.
    pub fn drive(&mut self) {
        assert!(
            self.drive_bounded(MAX_STEPS),
            "the pair did not go idle within {MAX_STEPS} steps"
        );
    }

    /// Lets `by` of virtual time pass, firing every timer and delivering every frame due on the
    /// way, then drives the pair at the new time.
    pub fn advance(&mut self, by: Duration) {
        let target = self.time + by;
        loop {
            self.settle();
            let next = [self.next_arrival(), self.next_timer()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(next) if next <= target => self.time = self.time.max(next),
                _ => break,
            }
        }
        self.time = target;
        self.settle();
    }

    /// Opens a stream from the server to `host:port`, lets the agent accept it, and returns it
    /// once the server saw the dial succeed.
    ///
    /// Panics if any of that fails.
    pub fn open(&mut self, host: &str, port: u16) -> StreamId {
        let target = Target::new(host, port).expect("a valid target");
        let stream = self.server.session.open(target).expect("the server opens");
        self.drive();
        let asked =
            self.agent.take_events().into_iter().any(
                |event| matches!(event, Event::DialRequested { stream: s, .. } if s == stream),
            );
        assert!(asked, "the agent was asked to dial {stream}");
        self.agent
            .session
            .accept_dial(stream)
            .expect("the agent accepts");
        self.drive();
        let succeeded = self
            .server
            .take_events()
            .into_iter()
            .any(|event| event == Event::DialSucceeded { stream });
        assert!(succeeded, "the server saw {stream} succeed");
        stream
    }

    /// Moves `total` bytes from the server to the agent on `stream`, writing as much as the
    /// credit allows, then driving, then reading everything; returns the bytes read. Events are
    /// discarded. This is the in-memory throughput bench's workload.
    ///
    /// Panics if a write or read fails other than by blocking, or the stream ends early.
    pub fn transfer(&mut self, stream: StreamId, total: u64) -> u64 {
        static CHUNK: [u8; 64 * 1024] = [0x5a; 64 * 1024];
        let (mut sent, mut received) = (0u64, 0u64);
        while received < total {
            while sent < total {
                let len = (total - sent).min(CHUNK.len() as u64) as usize;
                match self.server.session.write(stream, &CHUNK[..len]) {
                    Ok(written) => sent += written as u64,
                    Err(StreamError::Blocked) => break,
                    Err(error) => panic!("write to {stream} failed: {error}"),
                }
            }
            self.drive();
            loop {
                match self.agent.session.read(stream, usize::MAX) {
                    Ok(Some(chunk)) => received += chunk.len() as u64,
                    Err(StreamError::Blocked) => break,
                    Ok(None) => panic!("{stream} finished after {received} of {total} bytes"),
                    Err(error) => panic!("read from {stream} failed: {error}"),
                }
            }
            self.server.events.clear();
            self.agent.events.clear();
        }
        self.drive();
        received
    }

    /// Steps at the current time until nothing happens.
    fn settle(&mut self) {
        let mut steps = 0;
        while self.step() {
            steps += 1;
            assert!(steps < MAX_STEPS, "the pair did not settle");
        }
    }

    /// When the next frame in flight arrives, ignoring frames to a stalled end.
    fn next_arrival(&self) -> Option<Instant> {
        [&self.server, &self.agent]
            .into_iter()
            .filter(|endpoint| !endpoint.stalled)
            .filter_map(|endpoint| endpoint.inbound.front().map(|&(at, _)| at))
            .min()
    }

    /// The earlier of the two sessions' timers.
    fn next_timer(&self) -> Option<Instant> {
        [&self.server, &self.agent]
            .into_iter()
            .filter_map(|endpoint| endpoint.session.poll_timeout())
            .min()
    }
}

// === impl Endpoint ===

impl Endpoint {
    fn new(session: Session) -> Endpoint {
        Endpoint {
            session,
            events: VecDeque::new(),
            stalled: false,
            captured: None,
            sent: (0, 0),
            inbound: VecDeque::new(),
            buf: Vec::new(),
        }
    }

    /// Takes every event collected so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Frames waiting to arrive at this end.
    pub fn in_flight(&self) -> usize {
        self.inbound.len()
    }

    /// Reads everything `stream` has buffered: the bytes, and whether the peer's fin was read.
    ///
    /// Panics if the read fails other than by blocking.
    pub fn read_available(&mut self, stream: StreamId) -> (Vec<u8>, bool) {
        let mut data = Vec::new();
        loop {
            match self.session.read(stream, usize::MAX) {
                Ok(Some(chunk)) => data.extend_from_slice(&chunk),
                Ok(None) => return (data, true),
                Err(StreamError::Blocked) => return (data, false),
                Err(error) => panic!("read from {stream} failed: {error}"),
            }
        }
    }

    /// Writes as much of `data` as the session takes; returns how much.
    ///
    /// Panics if the write fails other than by blocking.
    pub fn write_available(&mut self, stream: StreamId, data: &[u8]) -> usize {
        let mut written = 0;
        while written < data.len() {
            match self.session.write(stream, &data[written..]) {
                Ok(len) => written += len,
                Err(StreamError::Blocked) => break,
                Err(error) => panic!("write to {stream} failed: {error}"),
            }
        }
        written
    }

    /// Sends every frame the session has into `peer`'s inbound queue.
    fn transmit(
        &mut self,
        now: Instant,
        arrival: Instant,
        peer: &mut Endpoint,
        lost: bool,
    ) -> bool {
        let mut progress = false;
        while let Some(len) = self.session.poll_transmit(now, &mut self.buf) {
            progress = true;
            let frame = Bytes::from(std::mem::take(&mut self.buf));
            debug_assert_eq!(frame.len(), len);
            self.sent.0 += 1;
            self.sent.1 += len as u64;
            if let Some(captured) = &mut self.captured {
                captured.push(frame.clone());
            }
            if !lost {
                peer.inbound.push_back((arrival, frame));
            }
        }
        progress
    }

    /// Hands every frame that has arrived by `now` to the session, unless stalled.
    fn deliver(&mut self, now: Instant) -> bool {
        let mut progress = false;
        while !self.stalled {
            match self.inbound.front() {
                Some(&(at, _)) if at <= now => {}
                _ => break,
            }
            let Some((_, frame)) = self.inbound.pop_front() else {
                break;
            };
            self.session.handle_frame(now, frame);
            progress = true;
        }
        progress
    }

    fn collect_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            self.events.push_back(event);
        }
    }
}
