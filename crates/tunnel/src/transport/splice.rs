//! Splicing: copying both ways between a byte stream and a [`TunnelStream`] ([`splice`]), or
//! between two byte streams ([`splice_io`]), through buffers borrowed from a shared pool only
//! while data is in flight, so an idle splice holds no buffer.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use weft_api::io::pool as buffers;

use super::pool;
use super::stream::TunnelStream;

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
    window: buffers::Window,
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
            if self.window.is_empty() && !self.read_done {
                let mut read = ReadBuf::new(self.window.room());
                match Pin::new(&mut *from).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        if n == 0 {
                            self.read_done = true;
                        }
                        self.window.filled(n);
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {
                        // Nothing to hold on to while waiting.
                        self.window.release_if_empty();
                        if self.unflushed {
                            ready!(Pin::new(&mut *to).poll_flush(cx))?;
                            self.unflushed = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            if !self.window.is_empty() {
                let n = ready!(Pin::new(&mut *to).poll_write(cx, self.window.bytes()))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.window.consume(n);
                self.copied += n as u64;
                self.unflushed = true;
                continue;
            }
            if self.read_done {
                self.window.release_if_empty();
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
