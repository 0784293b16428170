//! [`Connection`]: a [`Session`] driven over a WebSocket by one driver future, and
//! [`TunnelStream`], one stream of it as `AsyncRead + AsyncWrite`.
//!
//! The session sits behind a mutex that the driver, the WebSocket reader and the stream handles
//! share (quinn's shape). The reader task feeds every message to the session and wakes the
//! driver. The driver owns the WebSocket's write half and the one timer: it drains
//! `poll_transmit`, re-arms the timer from `poll_timeout`, and turns `poll_event` into wakeups
//! of stream handles, answers to pending opens, and dials. Reading and writing the WebSocket run
//! in separate tasks, so a peer that stops reading cannot stop this side from reading.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::error::{ConnectionError, OpenError};
use crate::proto::{
    Config, ConfigError, DialError, Event, ResetCode, Role, Session, StreamError, StreamId, Target,
};

/// The most frames the driver takes from the session before it writes them out.
const FRAMES_PER_ROUND: usize = 64;

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
    /// Why the connection ended, once it has.
    ended: Option<ConnectionError>,
}

// === impl Connection ===

impl Connection {
    /// Wraps a WebSocket in a session for `role`. Returns the handle and the driver future,
    /// which the caller spawns; it resolves once the connection ended, with why. Dials the
    /// peer asks for go to `dialer`, or are refused without one.
    pub fn new<S>(
        ws: WebSocketStream<S>,
        role: Role,
        config: Config,
        dialer: Option<Arc<dyn Dialer>>,
    ) -> Result<(Connection, impl Future<Output = ConnectionError> + Send), ConfigError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let session = Session::new(role, config, Instant::now())?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                session,
                readers: HashMap::new(),
                writers: HashMap::new(),
                opening: HashMap::new(),
                resets: HashMap::new(),
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
    /// Ends the connection: wakes every handle and fails every pending open.
    fn end(&mut self, error: ConnectionError) {
        if self.ended.is_some() {
            return;
        }
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
        self.ended = Some(error);
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
async fn drive<S>(
    ws: WebSocketStream<S>,
    shared: Arc<Shared>,
    dialer: Option<Arc<dyn Dialer>>,
) -> ConnectionError
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let reader_shared = shared.clone();
    let reader = tokio::spawn(async move {
        let shared = reader_shared;
        let error = loop {
            match source.next().await {
                Some(Ok(Message::Binary(message))) => {
                    shared.lock().session.handle_frame(Instant::now(), message);
                    shared.wake_driver.notify_one();
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => break ConnectionError::TextMessage,
                Some(Ok(Message::Close(_))) | None => break ConnectionError::Lost,
                Some(Err(error)) => break ConnectionError::WebSocket(Arc::new(error)),
            }
        };
        shared.lock().end(error);
        shared.wake_driver.notify_one();
    });

    let mut buf = Vec::new();
    let error = loop {
        let mut frames = Vec::new();
        let mut dials = Vec::new();
        let (deadline, ended) = {
            let mut state = shared.lock();
            let now = Instant::now();
            if state.session.poll_timeout().is_some_and(|t| t <= now) {
                state.session.handle_timeout(now);
            }
            while frames.len() < FRAMES_PER_ROUND
                && state.session.poll_transmit(now, &mut buf).is_some()
            {
                frames.push(Bytes::from(std::mem::take(&mut buf)));
            }
            while let Some(event) = state.session.poll_event() {
                dials.extend(state.dispatch(event));
            }
            if dialer.is_none() {
                for (stream, _) in dials.drain(..) {
                    let _ = state.session.refuse_dial(stream, DialError::NotAllowed);
                }
            }
            (state.session.poll_timeout(), state.ended.clone())
        };
        if let Some(dialer) = &dialer {
            for (stream, target) in dials {
                tokio::spawn(dial(shared.clone(), dialer.clone(), stream, target));
            }
        }
        let more = frames.len() == FRAMES_PER_ROUND;
        let mut sent = Ok(());
        for frame in frames {
            sent = sink.feed(Message::Binary(frame)).await;
            if sent.is_err() {
                break;
            }
        }
        if let Err(error) = sent.and(sink.flush().await) {
            let error = ConnectionError::WebSocket(Arc::new(error));
            shared.lock().end(error.clone());
            break error;
        }
        if let Some(ended) = ended {
            break ended;
        }
        if more {
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
    let _ = sink.close().await;
    reader.abort();
    shared.closed.send_replace(Some(error.clone()));
    error
}

/// Dials `target` for the peer's `stream`, then answers the dial and splices the two.
async fn dial(shared: Arc<Shared>, dialer: Arc<dyn Dialer>, stream: StreamId, target: Target) {
    let result = dialer.dial(target.clone()).await;
    let tcp = {
        let mut state = shared.lock();
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

/// The buffer size of each direction of a splice: large enough that one read fills most of a
/// data frame, so the session is not locked once per 8 KiB.
const SPLICE_BUFFER: usize = 64 * 1024;

/// Copies both ways between `a` and `b` until both directions ended, half-closing each side as
/// its source ends.
pub async fn splice<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, SPLICE_BUFFER, SPLICE_BUFFER).await
}

// === impl TunnelStream ===

impl TunnelStream {
    /// The stream's id within its session.
    pub fn id(&self) -> StreamId {
        self.id
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
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut state = self.shared.lock();
        match state.session.read(self.id, buf.remaining()) {
            Ok(Some(chunk)) => {
                buf.put_slice(&chunk);
                drop(state);
                self.shared.wake_driver.notify_one();
                Poll::Ready(Ok(()))
            }
            Ok(None) => Poll::Ready(Ok(())),
            Err(StreamError::Blocked) => {
                state.readers.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
            // Gone after both directions finished: the end of the stream.
            Err(StreamError::UnknownStream { .. })
                if !state.resets.contains_key(&self.id) && state.ended.is_none() =>
            {
                Poll::Ready(Ok(()))
            }
            Err(error) => Poll::Ready(Err(self.io_error(&state, error))),
        }
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

impl std::fmt::Debug for TunnelStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelStream")
            .field("id", &self.id)
            .finish()
    }
}
