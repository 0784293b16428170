//! Byte-stream helpers for long-lived connections that must cost little while idle:
//! [`tls_server`], the server's TLS connections with no buffer held while idle; [`ReadAhead`],
//! which reads a socket in large chunks for a TLS layer that asks in small ones (the clients');
//! and the shared [`pool`] of buffers they (and weft-tunnel's splices) borrow only while data
//! flows.
//!
//! rustls reads its socket 4 KiB at a time, so a busy TLS connection costs one system call per
//! 4 KiB (and, on loopback, the ACK processing each read triggers). A `BufReader` would fix that
//! but holds its buffer for the connection's whole life; ten thousand idle CONNECT connections
//! would hold 640 MiB. [`ReadAhead`] holds a buffer only while it has unread bytes.

#[cfg(test)]
mod tests;
pub mod tls_server;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The shared pool of read buffers.
pub mod pool {
    use std::sync::{Mutex, PoisonError};

    /// The size of one buffer.
    pub const BUFFER_SIZE: usize = 64 * 1024;

    /// The most buffers kept for reuse (4 MiB); more are freed when given back.
    const KEPT: usize = 64;

    static POOL: Mutex<Vec<Buffer>> = Mutex::new(Vec::new());

    /// One buffer of [`BUFFER_SIZE`] bytes, initialized once and reused.
    pub struct Buffer(Box<[u8]>);

    impl AsRef<[u8]> for Buffer {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl AsMut<[u8]> for Buffer {
        fn as_mut(&mut self) -> &mut [u8] {
            &mut self.0
        }
    }

    impl std::fmt::Debug for Buffer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Buffer")
        }
    }

    /// A buffer from the pool, or a new one.
    pub fn take() -> Buffer {
        let kept = POOL.lock().unwrap_or_else(PoisonError::into_inner).pop();
        kept.unwrap_or_else(|| Buffer(vec![0u8; BUFFER_SIZE].into_boxed_slice()))
    }

    /// Returns a buffer for reuse, or frees it when the pool is full.
    pub fn give_back(buffer: Buffer) {
        let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < KEPT {
            pool.push(buffer);
        }
    }
}

/// Reads `T` in chunks of [`pool::BUFFER_SIZE`] however little its reader asks for, holding a
/// pooled buffer only while some of a chunk is unread. Writes pass straight through.
#[derive(Debug)]
pub struct ReadAhead<T> {
    inner: T,
    buf: Option<pool::Buffer>,
    pos: usize,
    filled: usize,
}

// === impl ReadAhead ===

impl<T> ReadAhead<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> ReadAhead<T> {
        ReadAhead {
            inner,
            buf: None,
            pos: 0,
            filled: 0,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Gives the buffer back once everything in it was read.
    fn release_if_drained(&mut self) {
        if self.pos == self.filled
            && let Some(buf) = self.buf.take()
        {
            pool::give_back(buf);
            self.pos = 0;
            self.filled = 0;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos == this.filled {
            // A reader asking for a whole chunk or more gains nothing from the copy.
            if out.remaining() >= pool::BUFFER_SIZE {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            let buf = this.buf.get_or_insert_with(pool::take);
            let mut read = ReadBuf::new(buf.as_mut());
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
            let n = read.filled().len();
            if let Poll::Ready(Err(error)) = polled {
                this.release_if_drained();
                return Poll::Ready(Err(error));
            }
            if polled.is_pending() {
                // Nothing arrived: hold no buffer while waiting.
                this.release_if_drained();
                return Poll::Pending;
            }
            this.pos = 0;
            this.filled = n;
            if n == 0 {
                this.release_if_drained();
                return Poll::Ready(Ok(()));
            }
        }
        let Some(buf) = &this.buf else {
            unreachable!("unread bytes are in the buffer");
        };
        let len = out.remaining().min(this.filled - this.pos);
        out.put_slice(&buf.as_ref()[this.pos..this.pos + len]);
        this.pos += len;
        this.release_if_drained();
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }
}
