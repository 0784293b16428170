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

    /// Bytes waiting in a pooled buffer: read ahead and not yet handed on, or queued and not
    /// yet written. The buffer is taken from the pool when room is asked for, and goes back
    /// with [`Window::release_if_empty`], so an owner that calls it when idle holds none.
    #[derive(Debug, Default)]
    pub struct Window {
        buf: Option<Buffer>,
        /// The waiting bytes are `buf[start..end]`.
        start: usize,
        end: usize,
    }

    impl Window {
        /// Whether no bytes wait.
        pub fn is_empty(&self) -> bool {
            self.start == self.end
        }

        /// Whether it holds a buffer of the pool.
        pub fn holds_buffer(&self) -> bool {
            self.buf.is_some()
        }

        /// The waiting bytes.
        pub fn bytes(&self) -> &[u8] {
            match &self.buf {
                Some(buf) => &buf.as_ref()[self.start..self.end],
                None => &[],
            }
        }

        /// The waiting bytes, to change in place (rustls decrypts where the record lies).
        pub fn bytes_mut(&mut self) -> &mut [u8] {
            match &mut self.buf {
                Some(buf) => &mut buf.as_mut()[self.start..self.end],
                None => &mut [],
            }
        }

        /// Marks the first `n` waiting bytes used.
        pub fn consume(&mut self, n: usize) {
            self.start = (self.start + n).min(self.end);
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
        }

        /// The room after the waiting bytes, taking a buffer from the pool if none is held;
        /// waiting bytes that reach the buffer's end move to its front first. Empty when the
        /// waiting bytes fill the whole buffer.
        pub fn room(&mut self) -> &mut [u8] {
            let buf = self.buf.get_or_insert_with(take);
            if self.end == buf.as_ref().len() && self.start > 0 {
                buf.as_mut().copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            &mut buf.as_mut()[self.end..]
        }

        /// Marks the first `n` bytes of the [`Window::room`] filled: they wait now.
        pub fn filled(&mut self, n: usize) {
            self.end += n;
        }

        /// Gives the buffer back to the pool if no bytes wait.
        pub fn release_if_empty(&mut self) {
            if self.is_empty()
                && let Some(buf) = self.buf.take()
            {
                give_back(buf);
            }
        }
    }
}

/// Reads `T` in chunks of [`pool::BUFFER_SIZE`] however little its reader asks for, holding a
/// pooled buffer only while some of a chunk is unread. Writes pass straight through.
#[derive(Debug)]
pub struct ReadAhead<T> {
    inner: T,
    ahead: pool::Window,
}

// === impl ReadAhead ===

impl<T> ReadAhead<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> ReadAhead<T> {
        ReadAhead {
            inner,
            ahead: pool::Window::default(),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.ahead.is_empty() {
            // A reader asking for a whole chunk or more gains nothing from the copy.
            if out.remaining() >= pool::BUFFER_SIZE {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            let mut read = ReadBuf::new(this.ahead.room());
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
            let n = read.filled().len();
            if !matches!(polled, Poll::Ready(Ok(()))) || n == 0 {
                // Waiting, failed or ended: hold no buffer meanwhile.
                this.ahead.release_if_empty();
                return polled;
            }
            this.ahead.filled(n);
        }
        let len = out.remaining().min(this.ahead.bytes().len());
        out.put_slice(&this.ahead.bytes()[..len]);
        this.ahead.consume(len);
        this.ahead.release_if_empty();
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
