//! [`TunnelStream`]: one stream of a [`Connection`](super::Connection) as `AsyncRead +
//! AsyncWrite`, reading and writing the session under the connection's lock and waking its
//! driver when there is something to send.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::connection::{Shared, State};
use crate::proto::{ResetCode, Session, StreamError, StreamId};

/// One stream of a [`Connection`], as a byte stream. Shutting down the write side half-closes
/// the stream; dropping the handle before both directions ended resets it.
pub struct TunnelStream {
    id: StreamId,
    shared: Arc<Shared>,
    /// The write side was shut down: dropping the handle then lets queued data and the fin go
    /// out instead of resetting the stream.
    finished: bool,
}

// === impl TunnelStream ===

impl TunnelStream {
    /// The handle of stream `id` of the session in `shared`.
    pub(super) fn new(id: StreamId, shared: Arc<Shared>) -> TunnelStream {
        TunnelStream {
            id,
            shared,
            finished: false,
        }
    }

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
        let mut taken = None;
        let more = ready!(self.poll_take(cx, max, |chunk| {
            taken = Some(chunk);
            false
        }))?;
        Poll::Ready(Ok(taken.filter(|_| more)))
    }

    /// Queues a slice of `data` for the peer without copying it; how much was taken.
    pub fn poll_write_bytes(
        &mut self,
        cx: &mut Context<'_>,
        data: &Bytes,
    ) -> Poll<io::Result<usize>> {
        let id = self.id;
        self.poll_queue(cx, |session| session.write_bytes(id, data))
    }

    /// Takes received chunks into `into` until about `max` bytes or none are left, under one
    /// lock: `true` when it took some, `false` at the end of the stream.
    pub(super) fn poll_read_chunks(
        &mut self,
        cx: &mut Context<'_>,
        into: &mut VecDeque<Bytes>,
        max: usize,
    ) -> Poll<io::Result<bool>> {
        self.poll_take(cx, max, |chunk| {
            into.push_back(chunk);
            true
        })
    }

    /// Hands received chunks to `take` under one lock, until about `max` bytes were taken,
    /// none are left, or `take` wants no more: `true` when it took some, `false` at the end of
    /// the stream.
    fn poll_take(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        mut take: impl FnMut(Bytes) -> bool,
    ) -> Poll<io::Result<bool>> {
        let mut state = self.shared.lock();
        let mut taken = 0;
        loop {
            match state.session.read(self.id, max - taken) {
                Ok(Some(chunk)) => {
                    taken += chunk.len();
                    if take(chunk) && taken < max {
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

    /// Queues bytes with `send` (how many it took), or registers for room.
    fn poll_queue(
        &self,
        cx: &mut Context<'_>,
        send: impl FnOnce(&mut Session) -> Result<usize, StreamError>,
    ) -> Poll<io::Result<usize>> {
        let mut state = self.shared.lock();
        match send(&mut state.session) {
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
        let id = self.id;
        self.poll_queue(cx, |session| session.write(id, buf))
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
        state.handles.remove(&self.id);
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
