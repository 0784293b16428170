//! [`Session`]: one end of a tunnel, as a state machine that performs no I/O, and the [`Event`]s
//! it reports. The call order is documented on [`Session`].

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use super::config::Config;
use super::error::{ConfigError, ProtocolError, SessionError, StreamError};
use super::frame::{
    CloseCode, DialError, Frame, ResetCode, Role, StreamId, Target, encode_data_header,
};
use super::stream::{Fin, Phase, Stream};

/// The most refusals of dials past `max_streams` that wait to be sent. A peer may legitimately
/// open more streams than this side allows (its own limit can be higher), and each refusal costs
/// 4 bytes; only a peer that keeps dialing without reading the answers reaches this.
const MAX_QUEUED_REFUSALS: usize = 65_536;

/// Events a peer may leave waiting per allowed stream (plus [`SPARE_EVENTS`]) before the
/// session is closed. The application takes events after every input, so only a peer that
/// keeps sending while this side can't write (it does not read) queues many: a loop of dials
/// and resets adds two per round and holds no stream, so no other bound stops it.
const EVENTS_PER_STREAM: usize = 16;

/// Events allowed beyond [`EVENTS_PER_STREAM`] times `max_streams`.
const SPARE_EVENTS: usize = 1024;

/// One end of a tunnel: many streams multiplexed over one message-oriented connection (one
/// frame per WebSocket binary message), with per-stream credit flow control and keepalive.
///
/// It performs no I/O and never reads the clock: frames come in through
/// [`handle_frame`](Self::handle_frame), time through the `now` arguments, and frames go out
/// through [`poll_transmit`](Self::poll_transmit). The methods come in four kinds:
///
/// - getters: [`role`](Self::role), [`stats`](Self::stats), [`close_reason`](Self::close_reason);
/// - input: [`handle_frame`](Self::handle_frame) for each message from the peer, and
///   [`handle_timeout`](Self::handle_timeout) when the deadline from
///   [`poll_timeout`](Self::poll_timeout) passes;
/// - application commands: [`open`](Self::open), [`accept_dial`](Self::accept_dial),
///   [`refuse_dial`](Self::refuse_dial), [`write`](Self::write), [`read`](Self::read),
///   [`finish`](Self::finish), [`close`](Self::close), [`reset`](Self::reset),
///   [`close_session`](Self::close_session);
/// - output, polled after any input or command, in this order, each until it returns `None`:
///   1. [`poll_transmit`](Self::poll_transmit): frames to send, one WebSocket message each;
///   2. [`poll_timeout`](Self::poll_timeout): when to call `handle_timeout` next (replaces any
///      earlier deadline);
///   3. [`poll_event`](Self::poll_event): what the application must act on.
///
/// A driver loop therefore reads: feed what arrived (frames, a fired timer, application
/// commands), then drain `poll_transmit`, re-arm the one timer from `poll_timeout`, and handle
/// every `poll_event`; repeat while any of them did something. Once
/// [`Event::SessionClosed`] comes out, `poll_transmit` yields at most one go-away frame, then
/// nothing; the transport sends it and closes the connection.
#[derive(Debug)]
pub struct Session {
    role: Role,
    config: Config,
    streams: BTreeMap<StreamId, Stream>,
    /// The next id this side opens; past `u32::MAX` the ids are exhausted.
    next_local: u64,
    /// The next id the peer must open.
    next_remote: u64,

    /// Frames other than data, in order; sent before any data.
    control: VecDeque<Control>,
    /// Round-robin of streams with data or a fin to send.
    ready: VecDeque<StreamId>,
    /// Streams owed credit that the session buffer could not cover yet.
    starving: Vec<StreamId>,
    /// Streams whose writes the session send buffer refused, in the order they were refused.
    send_blocked: VecDeque<StreamId>,
    events: VecDeque<Event>,
    /// Dial deadlines of streams this side opened, in the order their dials went out.
    dial_deadlines: VecDeque<(Instant, StreamId)>,

    /// Sum of every stream's `recv_buffered + recv_credit`.
    recv_committed: u64,
    /// Sum of every stream's `recv_buffered`.
    recv_buffered: u64,
    /// Sum of every stream's `send_queued`.
    send_buffered: u64,
    /// Resets and refusals queued for streams already removed; they count against
    /// `max_streams` until they are sent.
    closing: usize,
    /// Dials past `max_streams`, waiting for their refusal to go out (after the control
    /// frames, before data).
    over_limit: VecDeque<StreamId>,

    last_recv: Instant,
    next_ping: Instant,
    ping_out: Option<u64>,
    pong_out: Option<u64>,
    ping_seq: u64,

    closed: Option<SessionError>,
    go_away: Option<Frame>,
}

/// What the application must act on, from [`Session::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer opened `stream` and asks this side to dial `target`. Answer with
    /// [`Session::accept_dial`] once the connection is up, or [`Session::refuse_dial`].
    DialRequested {
        /// The new stream.
        stream: StreamId,
        /// What to dial.
        target: Target,
    },
    /// The peer dialed the target of a stream this side opened: data may flow (the front door
    /// answers `200` now).
    DialSucceeded {
        /// The stream.
        stream: StreamId,
    },
    /// The dial of a stream this side opened failed (the front door answers `502` with the
    /// error); the stream is gone. Only this stream fails.
    DialFailed {
        /// The stream.
        stream: StreamId,
        /// Why.
        error: DialError,
    },
    /// Data arrived on a stream whose receive buffer was empty: call [`Session::read`] until it
    /// reports [`StreamError::Blocked`].
    Readable {
        /// The stream.
        stream: StreamId,
    },
    /// A stream whose write was refused has room again.
    Writable {
        /// The stream.
        stream: StreamId,
    },
    /// The peer half-closed the stream: it sends nothing more. Buffered data is still readable;
    /// then [`Session::read`] returns `Ok(None)`.
    Finished {
        /// The stream.
        stream: StreamId,
    },
    /// The peer reset the stream (also while its dial was pending); it is gone, and its
    /// unread data with it.
    Reset {
        /// The stream.
        stream: StreamId,
        /// Why.
        code: ResetCode,
    },
    /// The session ended; every stream with it. The last event.
    SessionClosed {
        /// Why.
        reason: SessionError,
    },
}

/// Byte and stream counts of a session, for metrics and for tests of the bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Streams open, dialing or waiting for an answer.
    pub streams: usize,
    /// Received bytes the application has not read.
    pub recv_buffered: u64,
    /// Received bytes plus credit granted: the most the peer can make this side hold.
    pub recv_committed: u64,
    /// Written bytes not yet framed.
    pub send_buffered: u64,
}

/// A frame other than data, waiting for [`Session::poll_transmit`].
#[derive(Debug)]
enum Control {
    Dial(StreamId),
    DialOk(StreamId),
    /// A refusal by the application; counts in `closing`.
    Refuse(StreamId, DialError),
    Credit(StreamId),
    /// A reset of a removed stream; counts in `closing`.
    Reset(StreamId, ResetCode),
}

// === impl Session ===

impl Session {
    /// A session for `role`, started at `now` (the keepalive counts from here).
    pub fn new(role: Role, config: Config, now: Instant) -> Result<Session, ConfigError> {
        config.validate()?;
        Ok(Session {
            role,
            next_local: role.first_stream(),
            next_remote: role.peer().first_stream(),
            streams: BTreeMap::new(),
            control: VecDeque::new(),
            ready: VecDeque::new(),
            starving: Vec::new(),
            send_blocked: VecDeque::new(),
            events: VecDeque::new(),
            dial_deadlines: VecDeque::new(),
            recv_committed: 0,
            recv_buffered: 0,
            send_buffered: 0,
            closing: 0,
            over_limit: VecDeque::new(),
            last_recv: now,
            next_ping: now + config.ping_interval,
            ping_out: None,
            pong_out: None,
            ping_seq: 0,
            closed: None,
            go_away: None,
            config,
        })
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The session's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Current byte and stream counts.
    pub fn stats(&self) -> Stats {
        Stats {
            streams: self.streams.len(),
            recv_buffered: self.recv_buffered,
            recv_committed: self.recv_committed,
            send_buffered: self.send_buffered,
        }
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<&SessionError> {
        self.closed.as_ref()
    }

    /// Whether the session ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    // --- input ---

    /// Handles one message from the peer. A message that is not a valid frame, or a frame that
    /// breaks the protocol, closes the session with [`SessionError::Protocol`]; it never panics.
    pub fn handle_frame(&mut self, now: Instant, message: Bytes) {
        if self.closed.is_some() {
            return;
        }
        self.last_recv = now;
        self.next_ping = now + self.config.ping_interval;
        let max_events = self
            .config
            .max_streams
            .saturating_mul(EVENTS_PER_STREAM)
            .saturating_add(SPARE_EVENTS);
        let mut result = Frame::decode(&message)
            .map_err(ProtocolError::from)
            .and_then(|frame| self.on_frame(frame));
        if result.is_ok() && self.events.len() > max_events {
            result = Err(ProtocolError::TooManyEvents { max: max_events });
        }
        if let Err(error) = result {
            let reason = error.to_string();
            self.close_with(
                SessionError::Protocol(error),
                Some((CloseCode::ProtocolError, reason)),
            );
        }
    }

    /// Handles the passing of time: keepalive pings, the idle timeout and dial timeouts. Call it
    /// when the deadline from [`poll_timeout`](Self::poll_timeout) has passed; calling it early
    /// does no harm.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        if now >= self.last_recv + self.config.idle_timeout {
            let secs = self.config.idle_timeout.as_secs();
            let reason = format!("no frame from the peer for {secs}s");
            self.close_with(
                SessionError::TimedOut { secs },
                Some((CloseCode::TimedOut, reason)),
            );
            return;
        }
        if now >= self.next_ping {
            self.ping_out = Some(self.ping_seq);
            self.ping_seq = self.ping_seq.wrapping_add(1);
            self.next_ping = now + self.config.ping_interval;
        }
        while let Some(&(deadline, stream)) = self.dial_deadlines.front() {
            if deadline > now {
                break;
            }
            self.dial_deadlines.pop_front();
            if self.dialing(stream) {
                self.remove(stream);
                self.closing += 1;
                self.control
                    .push_back(Control::Reset(stream, ResetCode::DialTimeout));
                self.events.push_back(Event::DialFailed {
                    stream,
                    error: DialError::TimedOut,
                });
            }
        }
    }

    // --- application commands ---

    /// Opens a stream that asks the peer to dial `target`. Its outcome arrives as
    /// [`Event::DialSucceeded`] or [`Event::DialFailed`] (or [`Event::Reset`]).
    pub fn open(&mut self, target: Target) -> Result<StreamId, StreamError> {
        self.check_open()?;
        self.check_stream_limit()?;
        let id = u32::try_from(self.next_local).map_err(|_| StreamError::IdsExhausted)?;
        self.next_local += 2;
        let stream = StreamId(id);
        let mut state = Stream::new(Phase::Dialing { sent: false }, Some(target));
        state.recv_credit = self.initial_window();
        self.recv_committed += state.recv_credit;
        self.streams.insert(stream, state);
        self.control.push_back(Control::Dial(stream));
        Ok(stream)
    }

    /// Accepts the peer's dial of `stream`: the connection to the target is up. The peer's
    /// [`Event::DialSucceeded`] follows, and data may be written at once.
    pub fn accept_dial(&mut self, stream: StreamId) -> Result<(), StreamError> {
        self.check_open()?;
        let initial = self.initial_window();
        let state = self.stream_mut(stream)?;
        if state.phase != Phase::Accepting {
            return Err(StreamError::NotDialing { stream });
        }
        state.phase = Phase::Accepted;
        state.recv_credit = initial;
        self.recv_committed += initial;
        self.control.push_back(Control::DialOk(stream));
        Ok(())
    }

    /// Refuses the peer's dial of `stream` with `error`; only that stream fails.
    pub fn refuse_dial(&mut self, stream: StreamId, error: DialError) -> Result<(), StreamError> {
        self.check_open()?;
        if self.stream_mut(stream)?.phase != Phase::Accepting {
            return Err(StreamError::NotDialing { stream });
        }
        self.remove(stream);
        self.closing += 1;
        self.control.push_back(Control::Refuse(stream, error));
        Ok(())
    }

    /// Queues bytes from the front of `data` for `stream`; returns how many, which may be fewer
    /// than `data.len()`. Never queues beyond the peer's credit, the stream window or the
    /// session buffer. [`StreamError::Blocked`] when nothing fits: wait for [`Event::Writable`].
    pub fn write(&mut self, stream: StreamId, data: &[u8]) -> Result<usize, StreamError> {
        let len = self.writable(stream, data.len())?;
        self.queue(stream, Bytes::copy_from_slice(&data[..len]));
        Ok(len)
    }

    /// [`write`](Self::write) without a copy: queues a slice of `data` itself.
    pub fn write_bytes(&mut self, stream: StreamId, data: &Bytes) -> Result<usize, StreamError> {
        let len = self.writable(stream, data.len())?;
        self.queue(stream, data.slice(..len));
        Ok(len)
    }

    /// How much of `wanted` bytes `stream` may queue now; [`StreamError::Blocked`] (and a
    /// `Writable` event owed) when nothing.
    fn writable(&mut self, stream: StreamId, wanted: usize) -> Result<usize, StreamError> {
        self.check_open()?;
        let window = u64::from(self.config.stream_window);
        let session_room = self.config.max_session_buffer - self.send_buffered;
        let state = self.stream_mut(stream)?;
        if !state.connected() {
            return Err(StreamError::NotConnected { stream });
        }
        if state.fin != Fin::Open {
            return Err(StreamError::Finished { stream });
        }
        if wanted == 0 {
            return Ok(0);
        }
        let stream_room = state
            .send_credit
            .min(window.saturating_sub(state.send_queued));
        let room = stream_room.min(session_room);
        let len = usize::try_from(room).unwrap_or(usize::MAX).min(wanted);
        if len == 0 {
            let newly = !state.want_writable;
            state.want_writable = true;
            if newly && stream_room > 0 {
                self.send_blocked.push_back(stream);
            }
            return Err(StreamError::Blocked);
        }
        Ok(len)
    }

    /// Queues `chunk` (which [`writable`](Self::writable) allowed) on `stream`.
    fn queue(&mut self, stream: StreamId, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        let len = chunk.len() as u64;
        let state = self.expect_stream(stream);
        state.send_queue.push_back(chunk);
        state.send_queued += len;
        state.send_credit -= len;
        self.send_buffered += len;
        self.mark_ready(stream);
    }

    /// Reads up to `max` bytes (at least one) of `stream`, without copying. `Ok(None)` once the
    /// peer finished and everything was read; [`StreamError::Blocked`] when nothing is buffered
    /// yet. Reading returns credit to the peer.
    pub fn read(&mut self, stream: StreamId, max: usize) -> Result<Option<Bytes>, StreamError> {
        self.check_open()?;
        let state = self.stream_mut(stream)?;
        if let Some(chunk) = state.take_recv(max.max(1)) {
            let len = chunk.len() as u64;
            self.recv_buffered -= len;
            self.recv_committed -= len;
            self.queue_credit(stream);
            self.feed_starving();
            return Ok(Some(chunk));
        }
        if state.fin_received {
            state.fin_read = true;
            self.remove_if_done(stream);
            return Ok(None);
        }
        Err(StreamError::Blocked)
    }

    /// Half-closes `stream`: a fin follows the data already written; reading goes on.
    /// Finishing twice is no error.
    pub fn finish(&mut self, stream: StreamId) -> Result<(), StreamError> {
        self.check_open()?;
        let state = self.stream_mut(stream)?;
        if state.phase == Phase::Accepting {
            return Err(StreamError::NotConnected { stream });
        }
        if state.fin == Fin::Open {
            state.fin = Fin::Pending;
            // A stream still dialing sends its fin once the dial succeeds.
            if !matches!(state.phase, Phase::Dialing { .. }) {
                self.mark_ready(stream);
            }
        }
        Ok(())
    }

    /// Closes `stream` gracefully: [`finish`](Self::finish)es it and stops reading. Unread data
    /// is dropped, and what the peer still sends is dropped and credited back at once, so the
    /// peer never blocks. The stream goes away once the peer finishes too.
    pub fn close(&mut self, stream: StreamId) -> Result<(), StreamError> {
        self.finish(stream)?;
        let state = self.stream_mut(stream)?;
        state.discard = true;
        let dropped = state.drop_recv();
        self.recv_buffered -= dropped;
        self.recv_committed -= dropped;
        self.queue_credit(stream);
        self.feed_starving();
        self.remove_if_done(stream);
        Ok(())
    }

    /// Resets `stream`: both directions end now, unsent and unread data is dropped, and the peer
    /// gets [`Event::Reset`] with `code`.
    pub fn reset(&mut self, stream: StreamId, code: ResetCode) -> Result<(), StreamError> {
        self.check_open()?;
        let phase = self.stream_mut(stream)?.phase;
        self.remove(stream);
        // A dial that never went out needs no reset: the peer never heard of the stream.
        if phase != (Phase::Dialing { sent: false }) {
            self.closing += 1;
            self.control.push_back(Control::Reset(stream, code));
        }
        Ok(())
    }

    /// Closes the whole session: every stream ends, the peer gets a go-away with `reason`, and
    /// [`Event::SessionClosed`] follows with [`SessionError::Local`].
    pub fn close_session(&mut self, reason: &str) {
        if self.closed.is_none() {
            self.close_with(
                SessionError::Local,
                Some((CloseCode::Normal, reason.to_owned())),
            );
        }
    }

    // --- output ---

    /// Appends the next frame to send to `buf` and returns its length; `None` when there is
    /// nothing to send. Each frame is one WebSocket binary message. Control frames (go-away,
    /// pong, ping, dials and their replies, credit, resets) go before data; streams with data
    /// take turns, one frame each, so one busy stream cannot starve the others.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<usize> {
        let start = buf.len();
        if let Some(frame) = self.go_away.take() {
            frame.encode(buf);
            return Some(buf.len() - start);
        }
        if self.closed.is_some() {
            return None;
        }
        if let Some(payload) = self.pong_out.take() {
            Frame::Pong { payload }.encode(buf);
            return Some(buf.len() - start);
        }
        if let Some(payload) = self.ping_out.take() {
            Frame::Ping { payload }.encode(buf);
            return Some(buf.len() - start);
        }
        while let Some(control) = self.control.pop_front() {
            if let Some(frame) = self.control_frame(now, control) {
                frame.encode(buf);
                return Some(buf.len() - start);
            }
        }
        if let Some(stream) = self.over_limit.pop_front() {
            let error = DialError::TooManyStreams;
            Frame::DialErr { stream, error }.encode(buf);
            return Some(buf.len() - start);
        }
        while let Some(stream) = self.ready.pop_front() {
            if self.data_frame(stream, buf) {
                return Some(buf.len() - start);
            }
        }
        None
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let idle = self.last_recv + self.config.idle_timeout;
        let mut next = idle.min(self.next_ping);
        if let Some(&(deadline, _)) = self.dial_deadlines.front() {
            next = next.min(deadline);
        }
        Some(next)
    }

    /// The next thing the application must act on.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // --- internals ---

    fn on_frame(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        match frame {
            Frame::Dial {
                stream,
                window,
                target,
            } => self.on_dial(stream, window, target),
            Frame::DialOk { stream, window } => {
                if !self.dial_reply_for_us(stream)? {
                    return Ok(());
                }
                let state = self.expect_stream(stream);
                state.phase = Phase::Open;
                state.send_credit = u64::from(window);
                let has_fin = state.fin == Fin::Pending;
                if has_fin {
                    self.mark_ready(stream);
                }
                self.queue_credit(stream);
                self.prune_dial_deadlines();
                self.events.push_back(Event::DialSucceeded { stream });
                Ok(())
            }
            Frame::DialErr { stream, error } => {
                if !self.dial_reply_for_us(stream)? {
                    return Ok(());
                }
                self.remove(stream);
                self.prune_dial_deadlines();
                self.events.push_back(Event::DialFailed { stream, error });
                Ok(())
            }
            Frame::Data { stream, payload } => {
                let Some(state) = self.open_stream_for_frame(stream)? else {
                    return Ok(());
                };
                if state.fin_received {
                    return Err(ProtocolError::AfterFin { stream });
                }
                let len = payload.len();
                if len as u64 > state.recv_credit {
                    return Err(ProtocolError::FlowControl {
                        stream,
                        len,
                        credit: state.recv_credit,
                    });
                }
                state.recv_credit -= len as u64;
                if state.discard {
                    self.recv_committed -= len as u64;
                    self.queue_credit(stream);
                    self.feed_starving();
                } else {
                    let was_empty = state.recv_queue.is_empty();
                    state.recv_queue.push_back(payload);
                    state.recv_buffered += len as u64;
                    self.recv_buffered += len as u64;
                    if was_empty {
                        self.events.push_back(Event::Readable { stream });
                    }
                }
                Ok(())
            }
            Frame::Fin { stream } => {
                let Some(state) = self.open_stream_for_frame(stream)? else {
                    return Ok(());
                };
                if state.fin_received {
                    return Err(ProtocolError::AfterFin { stream });
                }
                state.fin_received = true;
                // No more data comes: the credit granted for it is free again.
                let credit = std::mem::take(&mut state.recv_credit);
                let discard = state.discard;
                self.recv_committed -= credit;
                self.feed_starving();
                if discard {
                    self.remove_if_done(stream);
                } else {
                    self.events.push_back(Event::Finished { stream });
                }
                Ok(())
            }
            Frame::Credit { stream, increment } => {
                let Some(state) = self.open_stream_for_frame(stream)? else {
                    return Ok(());
                };
                let credit = state.send_credit + u64::from(increment);
                if credit > u64::from(u32::MAX) {
                    return Err(ProtocolError::CreditOverflow { stream });
                }
                state.send_credit = credit;
                self.wake_writer(stream);
                Ok(())
            }
            Frame::Reset { stream, code } => {
                self.check_known(stream)?;
                if self.streams.contains_key(&stream) {
                    self.remove(stream);
                    self.prune_dial_deadlines();
                    self.events.push_back(Event::Reset { stream, code });
                }
                Ok(())
            }
            Frame::Ping { payload } => {
                self.pong_out = Some(payload);
                Ok(())
            }
            Frame::Pong { .. } => Ok(()),
            Frame::GoAway { code, reason } => {
                self.close_with(SessionError::PeerClosed { code, reason }, None);
                Ok(())
            }
        }
    }

    fn on_dial(
        &mut self,
        stream: StreamId,
        window: u32,
        target: Target,
    ) -> Result<(), ProtocolError> {
        if stream.opener() == self.role {
            return Err(ProtocolError::WrongParity { stream });
        }
        // Ids only go up; an id skipped is one whose dial the peer dropped before sending it.
        if u64::from(stream.0) < self.next_remote {
            return Err(ProtocolError::StreamIdReused {
                stream,
                next: StreamId(u32::try_from(self.next_remote).unwrap_or(u32::MAX)),
            });
        }
        self.next_remote = u64::from(stream.0) + 2;
        if self.check_stream_limit().is_err() {
            if self.over_limit.len() >= MAX_QUEUED_REFUSALS {
                return Err(ProtocolError::TooManyRefusals {
                    max: MAX_QUEUED_REFUSALS,
                });
            }
            self.over_limit.push_back(stream);
            return Ok(());
        }
        let mut state = Stream::new(Phase::Accepting, None);
        state.send_credit = u64::from(window);
        self.streams.insert(stream, state);
        self.events
            .push_back(Event::DialRequested { stream, target });
        Ok(())
    }

    /// Checks a dial reply: `Ok(false)` if the stream is already gone (reset by this side or
    /// timed out), so the reply is stale.
    fn dial_reply_for_us(&mut self, stream: StreamId) -> Result<bool, ProtocolError> {
        if stream.opener() != self.role {
            return Err(ProtocolError::WrongParity { stream });
        }
        self.check_known(stream)?;
        match self.streams.get(&stream).map(|state| state.phase) {
            None => Ok(false),
            Some(Phase::Dialing { sent: true }) => Ok(true),
            Some(_) => Err(ProtocolError::DuplicateDialReply { stream }),
        }
    }

    /// The stream a data, fin or credit frame names, if it is still open; an error if the frame
    /// could not have been sent legally.
    fn open_stream_for_frame(
        &mut self,
        stream: StreamId,
    ) -> Result<Option<&mut Stream>, ProtocolError> {
        self.check_known(stream)?;
        match self.streams.get_mut(&stream) {
            // Closed by this side: the peer's frames cross our reset, so they are dropped.
            None => Ok(None),
            Some(state) if state.phase == Phase::Open => Ok(Some(state)),
            Some(_) => Err(ProtocolError::BeforeDialReply { stream }),
        }
    }

    /// An error if `stream` was never opened by either side.
    fn check_known(&self, stream: StreamId) -> Result<(), ProtocolError> {
        let next = if stream.opener() == self.role {
            self.next_local
        } else {
            self.next_remote
        };
        if u64::from(stream.0) >= next {
            return Err(ProtocolError::UnknownStream { stream });
        }
        Ok(())
    }

    fn control_frame(&mut self, now: Instant, control: Control) -> Option<Frame> {
        match control {
            Control::Dial(stream) => {
                let window = self.config.dial_timeout;
                let state = self.streams.get_mut(&stream)?;
                let target = state.target.take()?;
                state.phase = Phase::Dialing { sent: true };
                self.dial_deadlines.push_back((now + window, stream));
                Some(Frame::Dial {
                    stream,
                    window: window_u32(state.recv_credit),
                    target,
                })
            }
            Control::DialOk(stream) => {
                let state = self.streams.get_mut(&stream)?;
                state.phase = Phase::Open;
                let window = window_u32(state.recv_credit);
                self.queue_credit(stream);
                Some(Frame::DialOk { stream, window })
            }
            Control::Refuse(stream, error) => {
                self.closing -= 1;
                Some(Frame::DialErr { stream, error })
            }
            Control::Reset(stream, code) => {
                self.closing -= 1;
                Some(Frame::Reset { stream, code })
            }
            Control::Credit(stream) => {
                let increment = self.grant(stream)?;
                Some(Frame::Credit { stream, increment })
            }
        }
    }

    /// Writes one data frame (or the fin) of `stream`; `false` if it had nothing to send.
    fn data_frame(&mut self, stream: StreamId, buf: &mut Vec<u8>) -> bool {
        let max_payload = self.config.max_data_payload as u64;
        let Some(state) = self.streams.get_mut(&stream) else {
            return false;
        };
        state.in_ready = false;
        if state.send_queued > 0 {
            let len = state.send_queued.min(max_payload);
            encode_data_header(buf, stream);
            state.take_send(len as usize, buf);
            self.send_buffered -= len;
            if state.send_queued > 0 || state.fin == Fin::Pending {
                state.in_ready = true;
                self.ready.push_back(stream);
            }
            self.wake_writer(stream);
            self.wake_blocked_writers();
            return true;
        }
        if state.fin == Fin::Pending {
            state.fin = Fin::Sent;
            Frame::Fin { stream }.encode(buf);
            self.remove_if_done(stream);
            return true;
        }
        false
    }

    /// Wakes the writers the session send buffer refused, oldest first, as many as the room it
    /// has now takes (one frame's worth each, at least one), or all once nothing is queued: a
    /// thousand streams waiting for room are not all woken for every frame that leaves, only
    /// for one of them to take the room and the rest to block again.
    fn wake_blocked_writers(&mut self) {
        if self.send_blocked.is_empty() {
            return;
        }
        let session_room = self.config.max_session_buffer - self.send_buffered;
        if session_room == 0 {
            return;
        }
        let wake = if self.send_buffered == 0 {
            self.send_blocked.len()
        } else {
            let frames = session_room.div_ceil(self.config.max_data_payload as u64);
            usize::try_from(frames).unwrap_or(usize::MAX)
        };
        let mut woken = 0;
        while woken < wake {
            let Some(blocked) = self.send_blocked.pop_front() else {
                break;
            };
            if self.wake_writer(blocked) {
                woken += 1;
            }
        }
    }

    /// Emits [`Event::Writable`] if `stream` was refused a write and now has room; whether it
    /// did.
    fn wake_writer(&mut self, stream: StreamId) -> bool {
        let window = u64::from(self.config.stream_window);
        let session_room = self.config.max_session_buffer - self.send_buffered;
        let Some(state) = self.streams.get_mut(&stream) else {
            return false;
        };
        let room = state
            .send_credit
            .min(window.saturating_sub(state.send_queued))
            .min(session_room);
        if state.want_writable && room > 0 && state.fin == Fin::Open {
            state.want_writable = false;
            self.events.push_back(Event::Writable { stream });
            return true;
        }
        false
    }

    fn mark_ready(&mut self, stream: StreamId) {
        if let Some(state) = self.streams.get_mut(&stream)
            && !state.in_ready
        {
            state.in_ready = true;
            self.ready.push_back(stream);
        }
    }

    /// The receive window a new stream starts with: the stream window, or less if the session
    /// buffer is nearly committed.
    fn initial_window(&self) -> u64 {
        let room = self.config.max_session_buffer - self.recv_committed;
        u64::from(self.config.stream_window).min(room)
    }

    /// How much credit `stream` may get now, committing it; `None` if none.
    fn grant(&mut self, stream: StreamId) -> Option<u32> {
        let window = u64::from(self.config.stream_window);
        let room = self.config.max_session_buffer - self.recv_committed;
        let state = self.streams.get_mut(&stream)?;
        state.credit_queued = false;
        if state.phase != Phase::Open || state.fin_received {
            return None;
        }
        let deficit = window.saturating_sub(state.recv_committed());
        let grant = deficit.min(room);
        if grant == 0 {
            if deficit > 0 {
                self.starving.push(stream);
            }
            return None;
        }
        state.recv_credit += grant;
        self.recv_committed += grant;
        Some(window_u32(grant))
    }

    /// Queues a credit frame for `stream` once it is owed at least a quarter of the window, so
    /// small reads do not each cost a frame.
    fn queue_credit(&mut self, stream: StreamId) {
        let window = u64::from(self.config.stream_window);
        let Some(state) = self.streams.get_mut(&stream) else {
            return;
        };
        if state.credit_queued || state.phase != Phase::Open || state.fin_received {
            return;
        }
        let deficit = window.saturating_sub(state.recv_committed());
        if deficit >= (window / 4).max(1) {
            state.credit_queued = true;
            self.control.push_back(Control::Credit(stream));
        }
    }

    /// Retries the credit of starving streams once the session buffer has room.
    fn feed_starving(&mut self) {
        if self.starving.is_empty() || self.recv_committed >= self.config.max_session_buffer {
            return;
        }
        for stream in std::mem::take(&mut self.starving) {
            self.queue_credit(stream);
        }
    }

    fn dialing(&self, stream: StreamId) -> bool {
        matches!(
            self.streams.get(&stream).map(|state| state.phase),
            Some(Phase::Dialing { .. })
        )
    }

    /// Drops deadlines at the front of the queue whose dials were answered.
    fn prune_dial_deadlines(&mut self) {
        while let Some(&(_, stream)) = self.dial_deadlines.front() {
            if self.dialing(stream) {
                break;
            }
            self.dial_deadlines.pop_front();
        }
    }

    /// Removes `stream` once both directions are done: its fin went out, and the application
    /// read the peer's fin (or closed the stream and the peer's fin arrived).
    fn remove_if_done(&mut self, stream: StreamId) {
        let Some(state) = self.streams.get(&stream) else {
            return;
        };
        let read_done = state.fin_read || (state.discard && state.fin_received);
        if state.fin == Fin::Sent && read_done {
            self.remove(stream);
        }
    }

    /// Forgets `stream` and releases its share of the session buffers.
    fn remove(&mut self, stream: StreamId) {
        if let Some(state) = self.streams.remove(&stream) {
            self.recv_buffered -= state.recv_buffered;
            self.recv_committed -= state.recv_committed();
            self.send_buffered -= state.send_queued;
            self.feed_starving();
            if !self.send_blocked.is_empty() && state.send_queued > 0 {
                for blocked in std::mem::take(&mut self.send_blocked) {
                    self.wake_writer(blocked);
                }
            }
        }
    }

    fn close_with(&mut self, reason: SessionError, go_away: Option<(CloseCode, String)>) {
        self.streams.clear();
        self.control.clear();
        self.ready.clear();
        self.starving.clear();
        self.send_blocked.clear();
        self.dial_deadlines.clear();
        self.recv_committed = 0;
        self.recv_buffered = 0;
        self.send_buffered = 0;
        self.closing = 0;
        self.over_limit.clear();
        self.ping_out = None;
        self.pong_out = None;
        self.go_away = go_away.map(|(code, reason)| Frame::GoAway { code, reason });
        self.events.push_back(Event::SessionClosed {
            reason: reason.clone(),
        });
        self.closed = Some(reason);
    }

    fn check_open(&self) -> Result<(), StreamError> {
        if self.closed.is_some() {
            return Err(StreamError::SessionClosed);
        }
        Ok(())
    }

    fn check_stream_limit(&self) -> Result<(), StreamError> {
        let max = self.config.max_streams;
        if self.streams.len() + self.closing >= max {
            return Err(StreamError::TooManyStreams { max });
        }
        Ok(())
    }

    fn stream_mut(&mut self, stream: StreamId) -> Result<&mut Stream, StreamError> {
        self.streams
            .get_mut(&stream)
            .ok_or(StreamError::UnknownStream { stream })
    }

    /// A stream the caller just checked exists.
    fn expect_stream(&mut self, stream: StreamId) -> &mut Stream {
        self.streams
            .get_mut(&stream)
            .unwrap_or_else(|| unreachable!("{stream} was checked to exist"))
    }

    /// Checks every byte count against the streams it sums and against its bound.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let window = u64::from(self.config.stream_window);
        let cap = self.config.max_session_buffer;
        let (mut recv_buffered, mut recv_committed, mut send_buffered) = (0, 0, 0);
        for (id, state) in &self.streams {
            let queued: u64 = state.recv_queue.iter().map(|b| b.len() as u64).sum();
            let sending: u64 = state.send_queue.iter().map(|b| b.len() as u64).sum();
            if queued != state.recv_buffered || sending != state.send_queued {
                return Err(format!("{id}: queue lengths disagree with their counts"));
            }
            if state.recv_committed() > window {
                return Err(format!(
                    "{id}: {} received plus credit exceeds the window",
                    state.recv_committed()
                ));
            }
            if state.send_queued > window {
                return Err(format!(
                    "{id}: {} queued exceeds the window",
                    state.send_queued
                ));
            }
            recv_buffered += state.recv_buffered;
            recv_committed += state.recv_committed();
            send_buffered += state.send_queued;
        }
        let sums = (recv_buffered, recv_committed, send_buffered);
        let counts = (self.recv_buffered, self.recv_committed, self.send_buffered);
        if sums != counts {
            return Err(format!(
                "stream sums {sums:?} disagree with session counts {counts:?}"
            ));
        }
        if recv_committed > cap || send_buffered > cap {
            return Err(format!("session buffers {sums:?} exceed the cap of {cap}"));
        }
        if self.streams.len() > self.config.max_streams {
            return Err(format!("{} streams exceed the limit", self.streams.len()));
        }
        Ok(())
    }
}

/// A window or credit for the wire; every caller holds at most one stream window, which
/// [`Config::validate`] keeps below 2^31.
fn window_u32(bytes: u64) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}
