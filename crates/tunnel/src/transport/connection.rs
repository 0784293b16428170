//! [`Connection`]: a [`Session`] driven over a WebSocket by one driver future, and
//! [`TunnelStream`], one stream of it as `AsyncRead + AsyncWrite`.
//!
//! The session sits behind a mutex that the driver, the WebSocket reader and the stream handles
//! share (quinn's shape). The reader task reads the connection in large chunks, takes every
//! whole message out of them and feeds them all to the session under one lock, handing data
//! payloads over as slices of its buffer, and turns the events they caused into wakeups of
//! stream handles, answers to pending opens, and dials under the same lock (so a received byte
//! reaches its stream with no other task in between); then it wakes the driver. The driver
//! owns the write half and the one timer: it encodes what `poll_transmit` yields straight into
//! one output buffer, WebSocket headers and all, writes that buffer as soon as it holds
//! anything (a small write never waits for more), re-arms the timer from `poll_timeout`, and
//! acts on the events timers and stream handles caused. Reading and writing run in separate tasks, so a peer that stops reading
//! cannot stop this side from reading, and a write that blocks still lets the session's timers
//! run, so a peer that went silent is noticed however full the socket is.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::AbortHandle;

use weft_api::io::pool as buffers;

use super::pool;
use super::websocket::{self, Message, Side, WebSocket};
use crate::error::{ConnectionError, OpenError};
use crate::proto::{
    Config, ConfigError, DialError, Event, ResetCode, Role, Session, StreamError, StreamId, Target,
};

/// How much the driver encodes before it writes: large writes make large TLS records and few
/// system calls, and the lock is not held while writing.
const WRITE_BATCH: usize = 256 * 1024;

/// How much the reader asks the connection for at once.
const READ_CHUNK: usize = 128 * 1024;

/// How long the go-away and the WebSocket close may take to leave when the session ends.
const GOODBYE: std::time::Duration = std::time::Duration::from_secs(1);

/// Dials what the peer asks for; the agent's side of a tunnel. The server has none, so it
/// refuses every dial an agent might ask of it.
pub trait Dialer: Send + Sync + 'static {
    /// Connects to `target`, or says why not. Must check its authorizer first.
    fn dial(
        &self,
        target: Target,
    ) -> Pin<Box<dyn Future<Output = Result<TcpStream, DialError>> + Send + '_>>;
}

/// A handle to one tunnel session; clones share it.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

/// One stream of a [`Connection`], as a byte stream. Shutting down the write side half-closes
/// the stream; dropping the handle before both directions ended resets it.
pub struct TunnelStream {
    id: StreamId,
    shared: Arc<Shared>,
    /// The write side was shut down: dropping the handle then lets queued data and the fin go
    /// out instead of resetting the stream.
    finished: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the driver: something may be ready to transmit.
    wake_driver: Notify,
    /// Set once the connection ended, with why.
    closed: watch::Sender<Option<ConnectionError>>,
}

struct State {
    session: Session,
    readers: HashMap<StreamId, Waker>,
    writers: HashMap<StreamId, Waker>,
    opening: HashMap<StreamId, oneshot::Sender<Result<(), OpenError>>>,
    /// Streams the peer reset, until their handle goes.
    resets: HashMap<StreamId, ResetCode>,
    /// The latest WebSocket ping, to answer (RFC 6455 lets a pong answer only the latest, so a
    /// peer's pings can't pile up while this side can't write).
    pong: Option<Bytes>,
    /// The dials running for the peer, to cancel when it resets their stream.
    dialing: HashMap<StreamId, AbortHandle>,
    /// Why the connection ended, once it has.
    ended: Option<ConnectionError>,
}

// === impl Connection ===

impl Connection {
    /// Wraps a WebSocket in a session for `role`. Returns the handle and the driver future,
    /// which the caller spawns; it resolves once the connection ended, with why. Dials the
    /// peer asks for go to `dialer`, or are refused without one.
    pub fn new(
        ws: WebSocket,
        role: Role,
        config: Config,
        dialer: Option<Arc<dyn Dialer>>,
    ) -> Result<(Connection, impl Future<Output = ConnectionError> + Send), ConfigError> {
        let session = Session::new(role, config, Instant::now())?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                session,
                readers: HashMap::new(),
                writers: HashMap::new(),
                opening: HashMap::new(),
                resets: HashMap::new(),
                pong: None,
                dialing: HashMap::new(),
                ended: None,
            }),
            wake_driver: Notify::new(),
            closed: watch::channel(None).0,
        });
        let connection = Connection {
            shared: shared.clone(),
        };
        Ok((connection, drive(ws, shared, dialer)))
    }

    /// Opens a stream that the peer dials to `target`; resolves once the peer's dial succeeded
    /// (then the front door may answer `200`), or with why it failed.
    pub async fn open(&self, target: Target) -> Result<TunnelStream, OpenError> {
        let (answer, answered) = oneshot::channel();
        let id = {
            let mut state = self.shared.lock();
            if let Some(ended) = &state.ended {
                return Err(OpenError::Closed(ended.clone()));
            }
            let id = state.session.open(target)?;
            state.opening.insert(id, answer);
            id
        };
        self.shared.wake_driver.notify_one();
        let stream = TunnelStream {
            id,
            shared: self.shared.clone(),
            finished: false,
        };
        match answered.await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(OpenError::Closed(self.shared.ended())),
        }
    }

    /// Closes the session: the peer gets a go-away with `reason`, every stream ends.
    pub fn close(&self, reason: &str) {
        self.shared.lock().session.close_session(reason);
        self.shared.wake_driver.notify_one();
    }

    /// Whether the connection ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.borrow().is_some()
    }

    /// Resolves once the connection ended, with why.
    pub async fn closed(&self) -> ConnectionError {
        let mut closed = self.shared.closed.subscribe();
        loop {
            if let Some(error) = closed.borrow_and_update().clone() {
                return error;
            }
            if closed.changed().await.is_err() {
                return ConnectionError::Lost;
            }
        }
    }

    /// Byte and stream counts of the session.
    pub fn stats(&self) -> crate::proto::Stats {
        self.shared.lock().session.stats()
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("closed", &self.is_closed())
            .finish()
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ended(&self) -> ConnectionError {
        self.lock().ended.clone().unwrap_or(ConnectionError::Lost)
    }
}

// === impl State ===

impl State {
    /// Ends the connection: wakes every handle and fails every pending open. A session that
    /// already closed (a go-away came, say) gives the reason, whatever ended the WebSocket.
    fn end(&mut self, error: ConnectionError) {
        if self.ended.is_some() {
            return;
        }
        let error = match self.session.close_reason() {
            Some(reason) => ConnectionError::Session(reason.clone()),
            None => error,
        };
        if !self.session.is_closed() {
            // The WebSocket went away under the session: drop its streams too.
            self.session.close_session("the WebSocket ended");
        }
        for (_, waker) in self.readers.drain().chain(self.writers.drain()) {
            waker.wake();
        }
        for (_, answer) in self.opening.drain() {
            let _ = answer.send(Err(OpenError::Closed(error.clone())));
        }
        for (_, dial) in self.dialing.drain() {
            dial.abort();
        }
        self.ended = Some(error);
    }

    /// Acts on every event the session has: wakes the stream handles, answers pending opens,
    /// and starts the dials the peer asked for (through `dialer`, or refused without one).
    fn dispatch_events(&mut self, shared: &Arc<Shared>, dialer: Option<&Arc<dyn Dialer>>) {
        while let Some(event) = self.session.poll_event() {
            let Some((stream, target)) = self.dispatch(event) else {
                continue;
            };
            match dialer {
                // Started at once and under the lock, so the dial's handle is in `dialing`
                // before the dial can finish or a reset of its stream be dispatched.
                Some(dialer) => {
                    let task = tokio::spawn(dial(shared.clone(), dialer.clone(), stream, target));
                    self.dialing.insert(stream, task.abort_handle());
                }
                None => {
                    let _ = self.session.refuse_dial(stream, DialError::NotAllowed);
                }
            }
        }
    }

    /// Acts on one event; returns a dial to start, if any.
    fn dispatch(&mut self, event: Event) -> Option<(StreamId, Target)> {
        match event {
            Event::DialRequested { stream, target } => return Some((stream, target)),
            Event::DialSucceeded { stream } => {
                let answered = self
                    .opening
                    .remove(&stream)
                    .is_some_and(|answer| answer.send(Ok(())).is_ok());
                if !answered {
                    // Whoever opened it is gone.
                    let _ = self.session.reset(stream, ResetCode::Cancelled);
                }
            }
            Event::DialFailed { stream, error } => {
                if let Some(answer) = self.opening.remove(&stream) {
                    let _ = answer.send(Err(OpenError::Dial(error)));
                }
            }
            Event::Readable { stream } | Event::Finished { stream } => {
                if let Some(waker) = self.readers.remove(&stream) {
                    waker.wake();
                }
            }
            Event::Writable { stream } => {
                if let Some(waker) = self.writers.remove(&stream) {
                    waker.wake();
                }
            }
            Event::Reset { stream, code } => {
                if let Some(dial) = self.dialing.remove(&stream) {
                    // Nobody waits for it: stop connecting at once.
                    dial.abort();
                }
                if let Some(answer) = self.opening.remove(&stream) {
                    let _ = answer.send(Err(OpenError::Reset(code)));
                } else {
                    self.resets.insert(stream, code);
                }
                for waker in [self.readers.remove(&stream), self.writers.remove(&stream)]
                    .into_iter()
                    .flatten()
                {
                    waker.wake();
                }
            }
            Event::SessionClosed { reason } => self.end(ConnectionError::Session(reason)),
        }
        None
    }
}

/// The driver: see the module doc.
async fn drive(
    ws: WebSocket,
    shared: Arc<Shared>,
    dialer: Option<Arc<dyn Dialer>>,
) -> ConnectionError {
    let side = ws.side;
    let stall_timeout = shared.lock().session.config().write_stall_timeout;
    let (read_half, mut write_half) = tokio::io::split(ws.io);
    let reader = tokio::spawn(read_messages(
        read_half,
        side,
        shared.clone(),
        dialer.clone(),
    ));

    let mut out: Vec<u8> = Vec::new();
    let error = loop {
        let (deadline, ended, full) = {
            let mut state = shared.lock();
            let now = Instant::now();
            if state.session.poll_timeout().is_some_and(|t| t <= now) {
                state.session.handle_timeout(now);
            }
            if let Some(ping) = state.pong.take() {
                websocket::control_frame(&mut out, side, Some(&ping));
            }
            while out.len() < WRITE_BATCH {
                let start = websocket::begin_frame(&mut out, side);
                if state.session.poll_transmit(now, &mut out).is_none() {
                    out.truncate(start);
                    break;
                }
                websocket::end_frame(&mut out, start, side);
            }
            state.dispatch_events(&shared, dialer.as_ref());
            let full = out.len() >= WRITE_BATCH;
            (state.session.poll_timeout(), state.ended.clone(), full)
        };
        if let Some(ended) = ended {
            // Say goodbye at the WebSocket level too, after the go-away; a peer that takes
            // nothing more does not hold the end up.
            websocket::control_frame(&mut out, side, None);
            let goodbye = async {
                write_half.write_all(&out).await?;
                write_half.shutdown().await
            };
            let _ = tokio::time::timeout(GOODBYE, goodbye).await;
            break ended;
        }
        if !out.is_empty() {
            if let Err(error) = write_watched(&mut write_half, &out, &shared, stall_timeout).await {
                shared.lock().end(error);
                break shared.ended();
            }
            out.clear();
            if out.capacity() > 2 * WRITE_BATCH {
                out.shrink_to(WRITE_BATCH);
            }
        }
        if full {
            continue;
        }
        match deadline {
            Some(deadline) => {
                let deadline = tokio::time::Instant::from_std(deadline);
                tokio::select! {
                    () = shared.wake_driver.notified() => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
            }
            None => shared.wake_driver.notified().await,
        }
    };
    reader.abort();
    shared.closed.send_replace(Some(error.clone()));
    error
}

/// Writes `out` and flushes, while the session's timers keep running: a peer that stopped
/// reading (its socket full) and went silent must not keep a write pending forever, or the
/// idle timeout that notices it never fires and the agent never reconnects. So the write races
/// the session's deadline, and the timeout is handled meanwhile; once it closed the session,
/// the write is abandoned. A peer that stopped reading but still sends (pings, say) keeps the
/// session alive, so the write also fails once it made no progress for `stall_timeout`.
async fn write_watched<W>(
    write_half: &mut W,
    out: &[u8],
    shared: &Shared,
    stall_timeout: std::time::Duration,
) -> Result<(), ConnectionError>
where
    W: AsyncWrite + Unpin,
{
    let mut written = 0;
    let mut progress = tokio::time::Instant::now();
    loop {
        let deadline = shared.lock().session.poll_timeout();
        let Some(deadline) = deadline else {
            // The session closed while the write was pending.
            return Err(shared.ended());
        };
        let writer = &mut *write_half;
        let rest = &out[written..];
        let step = async move {
            if rest.is_empty() {
                writer.flush().await.map(|()| None)
            } else {
                writer.write(rest).await.map(Some)
            }
        };
        tokio::select! {
            stepped = step => match stepped {
                Ok(None) => return Ok(()),
                Ok(Some(0)) => {
                    return Err(ConnectionError::Io(Arc::new(io::ErrorKind::WriteZero.into())));
                }
                Ok(Some(n)) => {
                    written += n;
                    progress = tokio::time::Instant::now();
                }
                Err(error) => return Err(ConnectionError::Io(Arc::new(error))),
            },
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                let mut state = shared.lock();
                state.session.handle_timeout(Instant::now());
                if let Some(reason) = state.session.close_reason() {
                    return Err(ConnectionError::Session(reason.clone()));
                }
            }
            () = tokio::time::sleep_until(progress + stall_timeout) => {
                return Err(ConnectionError::Stalled {
                    after: stall_timeout,
                });
            }
        }
    }
}

/// Reads the connection until it ends, feeding every message to the session and acting on
/// what they caused at once, under the same lock: the stream a data frame was for is woken from
/// here, not from the driver, so received bytes reach it without another task's turn in
/// between. Ends the connection with why it stopped.
async fn read_messages<R>(
    mut read_half: R,
    side: Side,
    shared: Arc<Shared>,
    dialer: Option<Arc<dyn Dialer>>,
) where
    R: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut messages = Vec::new();
    let error = 'read: loop {
        loop {
            match websocket::decode(&mut buf, side) {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                Err(error) => break 'read ConnectionError::WebSocket(error),
            }
        }
        if !messages.is_empty() {
            let mut closed = false;
            {
                let mut state = shared.lock();
                let now = Instant::now();
                for message in messages.drain(..) {
                    match message {
                        Message::Binary(frame) => state.session.handle_frame(now, frame),
                        Message::Ping(payload) => state.pong = Some(payload),
                        Message::Pong => {}
                        Message::Close => closed = true,
                    }
                }
                state.dispatch_events(&shared, dialer.as_ref());
            }
            shared.wake_driver.notify_one();
            if closed {
                break ConnectionError::Lost;
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        match read_half.read_buf(&mut buf).await {
            Ok(0) => break ConnectionError::Lost,
            Ok(_) => {}
            Err(error) => break ConnectionError::Io(Arc::new(error)),
        }
    };
    shared.lock().end(error);
    shared.wake_driver.notify_one();
}

/// Dials `target` for the peer's `stream`, then answers the dial and splices the two.
async fn dial(shared: Arc<Shared>, dialer: Arc<dyn Dialer>, stream: StreamId, target: Target) {
    let result = dialer.dial(target.clone()).await;
    let tcp = {
        let mut state = shared.lock();
        state.dialing.remove(&stream);
        match result {
            Ok(tcp) => state.session.accept_dial(stream).ok().map(|()| tcp),
            Err(error) => {
                tracing::debug!(%target, %error, "dial for the tunnel failed");
                let _ = state.session.refuse_dial(stream, error);
                None
            }
        }
    };
    shared.wake_driver.notify_one();
    let Some(mut tcp) = tcp else {
        return;
    };
    let mut tunnel = TunnelStream {
        id: stream,
        shared,
        finished: false,
    };
    if let Err(error) = splice(&mut tcp, &mut tunnel).await {
        tracing::debug!(%target, %error, "tunnelled connection ended with an error");
    }
}

// === Splicing ===

/// Copies both ways between `io` and a tunnel stream until both directions ended, half-closing
/// each side as its source ends. Data from the tunnel goes to `io` as the session holds it, and
/// data from `io` goes to the session as it was read (no copy either way); `io` is read into a
/// buffer borrowed from a shared pool only while it has data, so an idle splice holds no buffer
/// at all.
pub async fn splice<A>(io: &mut A, tunnel: &mut TunnelStream) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut up = Feed::default();
    let mut down = Chunks::default();
    std::future::poll_fn(|cx| {
        let up_done = up.poll(cx, &mut *io, &mut *tunnel)?;
        let down_done = down.poll(cx, &mut *tunnel, &mut *io)?;
        match (up_done, down_done) {
            (Poll::Ready(up), Poll::Ready(down)) => Poll::Ready(Ok((up, down))),
            _ => Poll::Pending,
        }
    })
    .await
}

/// Copies both ways between two byte streams (a direct route), with pooled buffers as
/// [`splice`] does.
pub async fn splice_io<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut ab = Pump::default();
    let mut ba = Pump::default();
    std::future::poll_fn(|cx| {
        let ab_done = ab.poll(cx, &mut *a, &mut *b)?;
        let ba_done = ba.poll(cx, &mut *b, &mut *a)?;
        match (ab_done, ba_done) {
            (Poll::Ready(ab), Poll::Ready(ba)) => Poll::Ready(Ok((ab, ba))),
            _ => Poll::Pending,
        }
    })
    .await
}

/// One direction of a splice between two plain connections, through a pooled buffer.
#[derive(Default)]
struct Pump {
    buf: Option<buffers::Buffer>,
    pos: usize,
    filled: usize,
    read_done: bool,
    done: bool,
    unflushed: bool,
    copied: u64,
}

impl Pump {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(self.copied));
        }
        loop {
            if self.pos == self.filled && !self.read_done {
                let buf = self.buf.get_or_insert_with(buffers::take);
                let mut read = ReadBuf::new(buf.as_mut());
                match Pin::new(&mut *from).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        if n == 0 {
                            self.read_done = true;
                        }
                        self.pos = 0;
                        self.filled = n;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {
                        // Nothing to hold on to while waiting.
                        if let Some(buf) = self.buf.take() {
                            buffers::give_back(buf);
                        }
                        if self.unflushed {
                            ready!(Pin::new(&mut *to).poll_flush(cx))?;
                            self.unflushed = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            if self.pos < self.filled {
                let Some(buf) = &self.buf else {
                    unreachable!("a pump with unwritten data holds its buffer");
                };
                let n = ready!(
                    Pin::new(&mut *to).poll_write(cx, &buf.as_ref()[self.pos..self.filled])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.copied += n as u64;
                self.unflushed = true;
                continue;
            }
            if self.read_done {
                if let Some(buf) = self.buf.take() {
                    buffers::give_back(buf);
                }
                ready!(Pin::new(&mut *to).poll_flush(cx))?;
                ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(self.copied));
            }
        }
    }
}

/// The `io`-to-tunnel direction of a splice: reads into a pooled buffer and queues what it read
/// as a slice of it.
#[derive(Default)]
struct Feed {
    buf: Option<BytesMut>,
    chunk: Bytes,
    read_done: bool,
    done: bool,
    copied: u64,
}

impl Feed {
    fn poll<R>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut TunnelStream,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(self.copied));
        }
        loop {
            if self.chunk.is_empty() && !self.read_done {
                let buf = self.buf.get_or_insert_with(pool::take);
                let polled = std::pin::pin!(from.read_buf(buf)).poll(cx);
                match polled {
                    Poll::Ready(Ok(0)) => self.read_done = true,
                    Poll::Ready(Ok(n)) => self.chunk = buf.split_to(n).freeze(),
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {
                        // Nothing to hold on to while waiting.
                        if let Some(buf) = self.buf.take() {
                            pool::give_back(buf);
                        }
                        return Poll::Pending;
                    }
                }
                if self
                    .buf
                    .as_ref()
                    .is_some_and(|buf| buf.capacity() < pool::CAPACITY / 4)
                {
                    // Used up: the next read takes a fresh one.
                    self.buf = None;
                }
            }
            if !self.chunk.is_empty() {
                let n = ready!(to.poll_write_bytes(cx, &self.chunk))?;
                self.chunk.advance(n);
                self.copied += n as u64;
                continue;
            }
            if self.read_done {
                if let Some(buf) = self.buf.take() {
                    pool::give_back(buf);
                }
                ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(self.copied));
            }
        }
    }
}

/// The tunnel-to-`io` direction of a splice: the session's own chunks, written as they are,
/// several in one vectored write when `io` takes those.
#[derive(Default)]
struct Chunks {
    chunks: VecDeque<Bytes>,
    read_done: bool,
    done: bool,
    unflushed: bool,
    copied: u64,
}

/// The most chunks one vectored write takes.
const MAX_IOVECS: usize = 16;

/// How many bytes [`Chunks`] takes from the session before it writes.
const WRITE_AHEAD: usize = 256 * 1024;

impl Chunks {
    fn poll<W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut TunnelStream,
        to: &mut W,
    ) -> Poll<io::Result<u64>>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(self.copied));
        }
        loop {
            if self.chunks.is_empty() && !self.read_done {
                match from.poll_read_chunks(cx, &mut self.chunks, WRITE_AHEAD) {
                    Poll::Ready(Ok(true)) => {}
                    Poll::Ready(Ok(false)) => self.read_done = true,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {
                        if self.unflushed {
                            ready!(Pin::new(&mut *to).poll_flush(cx))?;
                            self.unflushed = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            if !self.chunks.is_empty() {
                let n = if to.is_write_vectored() && self.chunks.len() > 1 {
                    let slices: Vec<io::IoSlice<'_>> = self
                        .chunks
                        .iter()
                        .take(MAX_IOVECS)
                        .map(|chunk| io::IoSlice::new(chunk))
                        .collect();
                    ready!(Pin::new(&mut *to).poll_write_vectored(cx, &slices))?
                } else {
                    let Some(front) = self.chunks.front() else {
                        unreachable!("checked to be non-empty");
                    };
                    ready!(Pin::new(&mut *to).poll_write(cx, front))?
                };
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.copied += n as u64;
                self.unflushed = true;
                let mut left = n;
                while left > 0 {
                    let Some(front) = self.chunks.front_mut() else {
                        break;
                    };
                    let take = left.min(front.len());
                    front.advance(take);
                    left -= take;
                    if front.is_empty() {
                        self.chunks.pop_front();
                    }
                }
                continue;
            }
            if self.read_done {
                ready!(Pin::new(&mut *to).poll_flush(cx))?;
                ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(self.copied));
            }
        }
    }
}

// === impl TunnelStream ===

impl TunnelStream {
    /// The stream's id within its session.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Takes up to `max` received bytes as the session holds them, without copying: `None`
    /// once the peer finished and everything was read.
    pub fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<Option<Bytes>>> {
        let mut state = self.shared.lock();
        match state.session.read(self.id, max) {
            Ok(Some(chunk)) => {
                drop(state);
                self.shared.wake_driver.notify_one();
                Poll::Ready(Ok(Some(chunk)))
            }
            Ok(None) => Poll::Ready(Ok(None)),
            Err(StreamError::Blocked) => {
                state.readers.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
            // Gone after both directions finished: the end of the stream.
            Err(StreamError::UnknownStream { .. })
                if !state.resets.contains_key(&self.id) && state.ended.is_none() =>
            {
                Poll::Ready(Ok(None))
            }
            Err(error) => Poll::Ready(Err(self.io_error(&state, error))),
        }
    }

    /// Queues a slice of `data` for the peer without copying it; how much was taken.
    pub fn poll_write_bytes(
        &mut self,
        cx: &mut Context<'_>,
        data: &Bytes,
    ) -> Poll<io::Result<usize>> {
        let mut state = self.shared.lock();
        match state.session.write_bytes(self.id, data) {
            Ok(len) => {
                drop(state);
                self.shared.wake_driver.notify_one();
                Poll::Ready(Ok(len))
            }
            Err(StreamError::Blocked) => {
                state.writers.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
            Err(error) => Poll::Ready(Err(self.io_error(&state, error))),
        }
    }

    /// Takes received chunks into `into` until about `max` bytes or none are left, under one
    /// lock: `true` when it took some, `false` at the end of the stream.
    fn poll_read_chunks(
        &mut self,
        cx: &mut Context<'_>,
        into: &mut VecDeque<Bytes>,
        max: usize,
    ) -> Poll<io::Result<bool>> {
        let mut state = self.shared.lock();
        let mut taken = 0;
        loop {
            match state.session.read(self.id, max - taken) {
                Ok(Some(chunk)) => {
                    taken += chunk.len();
                    into.push_back(chunk);
                    if taken < max {
                        continue;
                    }
                }
                Ok(None) if taken == 0 => return Poll::Ready(Ok(false)),
                Ok(None) => {}
                Err(StreamError::Blocked) if taken > 0 => {}
                Err(StreamError::Blocked) => {
                    state.readers.insert(self.id, cx.waker().clone());
                    return Poll::Pending;
                }
                // Gone after both directions finished: the end of the stream.
                Err(StreamError::UnknownStream { .. })
                    if !state.resets.contains_key(&self.id) && state.ended.is_none() =>
                {
                    if taken == 0 {
                        return Poll::Ready(Ok(false));
                    }
                }
                Err(error) => return Poll::Ready(Err(self.io_error(&state, error))),
            }
            break;
        }
        drop(state);
        self.shared.wake_driver.notify_one();
        Poll::Ready(Ok(true))
    }

    fn io_error(&self, state: &State, error: StreamError) -> io::Error {
        if let Some(code) = state.resets.get(&self.id) {
            return io::Error::new(io::ErrorKind::ConnectionReset, *code);
        }
        if let Some(ended) = &state.ended {
            return io::Error::new(io::ErrorKind::ConnectionAborted, ended.clone());
        }
        io::Error::new(io::ErrorKind::BrokenPipe, error)
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let max = buf.remaining();
        if let Some(chunk) = ready!(self.poll_read_chunk(cx, max))? {
            buf.put_slice(&chunk);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.shared.lock();
        match state.session.write(self.id, buf) {
            Ok(len) => {
                drop(state);
                self.shared.wake_driver.notify_one();
                Poll::Ready(Ok(len))
            }
            Err(StreamError::Blocked) => {
                state.writers.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
            Err(error) => Poll::Ready(Err(self.io_error(&state, error))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are the session's; the driver sends them as credit allows.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.finished = true;
        let result = self.shared.lock().session.finish(self.id);
        self.shared.wake_driver.notify_one();
        match result {
            Ok(()) | Err(StreamError::UnknownStream { .. }) => Poll::Ready(Ok(())),
            Err(error) => {
                let state = self.shared.lock();
                Poll::Ready(Err(self.io_error(&state, error)))
            }
        }
    }
}

impl Drop for TunnelStream {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.readers.remove(&self.id);
        state.writers.remove(&self.id);
        state.resets.remove(&self.id);
        // A stream whose directions both ended is already gone. One this side finished keeps
        // going until its queued data and fin are out (and whatever the peer still sends is
        // dropped); anything else was abandoned and is reset.
        let ended = if self.finished {
            state.session.close(self.id)
        } else {
            state.session.reset(self.id, ResetCode::Cancelled)
        };
        if ended.is_ok() {
            drop(state);
            self.shared.wake_driver.notify_one();
        }
    }
}

#[cfg(test)]
mod tests;

impl std::fmt::Debug for TunnelStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelStream")
            .field("id", &self.id)
            .finish()
    }
}
