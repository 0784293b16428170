//! [`TlsServerStream`]: the server's side of a TLS connection on rustls's unbuffered API, so a
//! connection holds no buffer while nothing is in flight.
//!
//! rustls's buffered connection keeps a 4 KiB receive buffer for its whole life (it is resized,
//! never freed), which was the largest part of what an idle CONNECT stream cost the server.
//! Here the TLS bytes are read into a buffer borrowed from the shared [`pool`] only while a
//! record is incomplete, and encrypted into another only until the socket took them: an idle
//! connection holds rustls's keys and state and nothing else.
//!
//! Everything rustls wants to send (handshake flights, tickets, alerts, application data, the
//! close_notify) goes through one outgoing buffer in order, so a flight encoded while the
//! socket was full simply waits its turn. Decrypted data the caller had no room for is kept in
//! [`TlsServerStream::pending`] (at most a record or two).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::pool;

/// Room left per TLS record beyond its payload: its header, content type and AEAD tag (22
/// bytes in TLS 1.3), TLS 1.2's explicit nonce, and a key update rustls may queue first.
const RECORD_OVERHEAD: usize = 64;

/// The largest payload of one TLS record.
const MAX_FRAGMENT: usize = 16 * 1024;

/// Accepts a TLS connection on `io` with `config`: resolves once the handshake is done (the
/// client's certificate, if any, verified), or with why it failed. A failed handshake sends the
/// client rustls's alert, as far as the socket takes it.
pub async fn accept<IO>(config: Arc<ServerConfig>, io: IO) -> io::Result<TlsServerStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut stream = TlsServerStream {
        conn,
        io,
        incoming: pool::Window::default(),
        pending: Vec::new(),
        pending_at: 0,
        outgoing: pool::Window::default(),
        read_closed: false,
        close_notify_sent: false,
    };
    if let Err(error) = std::future::poll_fn(|cx| stream.poll_handshake(cx)).await {
        // Tell the client why (rustls's alert), as far as the socket takes it at once.
        let _ = std::future::poll_fn(|cx| Poll::Ready(stream.poll_write_out(cx))).await;
        return Err(error);
    }
    Ok(stream)
}

/// A TLS server connection over `IO` whose buffers come from the shared pool while in use.
pub struct TlsServerStream<IO> {
    conn: UnbufferedServerConnection,
    io: IO,
    /// TLS bytes read and not yet consumed by rustls.
    incoming: pool::Window,
    /// Decrypted bytes the caller has not read yet: `pending[pending_at..]`.
    pending: Vec<u8>,
    pending_at: usize,
    /// TLS bytes for the socket.
    outgoing: pool::Window,
    /// The peer sent its close_notify (or closed the socket): reads return the end.
    read_closed: bool,
    close_notify_sent: bool,
}

/// Where one pass over the incoming records stopped.
enum Step {
    /// Bytes were decrypted into the caller's buffer.
    Read,
    /// This many bytes of the caller's data were encrypted.
    Wrote(usize),
    /// rustls needs more bytes from the peer (the handshake or the next record).
    NeedBytes,
    /// The handshake is done and nothing more came in: application data may be sent.
    Established,
    /// The peer finished sending (close_notify).
    PeerClosed,
    /// Both sides sent close_notify: nothing more can be written.
    Closed,
    /// The close_notify was queued.
    CloseQueued,
}

/// What [`TlsServerStream::process`] is to do once rustls lets it.
enum Job<'a, 'b> {
    /// Finish the handshake.
    Handshake,
    /// Decrypt into the caller's buffer.
    Read(&'a mut ReadBuf<'b>),
    /// Encrypt the caller's data.
    Write(&'a [u8]),
    /// Queue the close_notify.
    CloseNotify,
}

// === impl TlsServerStream ===

impl<IO> TlsServerStream<IO> {
    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The certificates the client presented, its own first, once verified.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// Whether the stream holds any buffer (it does only while data is in flight).
    pub fn holds_buffers(&self) -> bool {
        self.incoming.holds_buffer() || self.outgoing.holds_buffer() || self.pending.capacity() > 0
    }
}

impl<IO> TlsServerStream<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            // rustls's flight goes out before anything more is awaited from the client.
            ready!(self.poll_write_out(cx))?;
            match self.process(Job::Handshake)? {
                Step::Established if self.outgoing.is_empty() => return Poll::Ready(Ok(())),
                Step::Established | Step::Read | Step::Wrote(_) | Step::CloseQueued => {}
                Step::NeedBytes => {
                    if !self.outgoing.is_empty() {
                        continue;
                    }
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the client closed the connection during the TLS handshake",
                        )));
                    }
                }
                Step::PeerClosed | Step::Closed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the TLS session during the handshake",
                    )));
                }
            }
        }
    }

    /// Runs rustls over the incoming bytes until it stops, doing `job` once it can: decrypting
    /// into the caller's buffer (the rest of a record into `pending`; records the job has no
    /// room for go there too), encrypting the caller's data, or queueing the close_notify.
    /// Whatever rustls wants to send is queued on the way. A TLS error queues rustls's alert
    /// and is returned.
    fn process(&mut self, mut job: Job<'_, '_>) -> io::Result<Step> {
        loop {
            let incoming = self.incoming.bytes_mut();
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(incoming);
            let step = match state {
                Err(error) => {
                    self.consume(discard);
                    self.queue_alert();
                    return Err(tls_error(error));
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    let mut read = false;
                    loop {
                        // A record larger than the room left waits for the next read, unless
                        // nothing was read yet (then its rest goes to `pending`).
                        let room = match &job {
                            Job::Read(buf) => buf.remaining(),
                            _ => 0,
                        };
                        let Some(len) = records.peek_len() else { break };
                        if read && len.get() > room {
                            break;
                        }
                        let Some(record) = records.next_record() else {
                            break;
                        };
                        let payload = record.map_err(tls_error)?.payload;
                        let taken = payload.len().min(room);
                        if let Job::Read(buf) = &mut job {
                            buf.put_slice(&payload[..taken]);
                        }
                        if self.pending_at == self.pending.len() {
                            self.pending.clear();
                            self.pending_at = 0;
                        }
                        self.pending.extend_from_slice(&payload[taken..]);
                        read |= taken > 0;
                    }
                    read.then_some(Step::Read)
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    let out = self.outgoing.room();
                    let room = out.len();
                    match encode.encode(out) {
                        Ok(written) => self.outgoing.filled(written),
                        Err(EncodeError::InsufficientSize(size)) => {
                            return Err(io::Error::other(format!(
                                "a TLS handshake message of {} bytes does not fit the {room} \
                                 bytes left to send",
                                size.required_size
                            )));
                        }
                        Err(error) => return Err(io::Error::other(error.to_string())),
                    }
                    None
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    // What was encoded is in `outgoing`, ahead of anything queued after it.
                    transmit.done();
                    None
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Step::NeedBytes),
                Ok(ConnectionState::PeerClosed) => {
                    self.read_closed = true;
                    Some(Step::PeerClosed)
                }
                Ok(ConnectionState::Closed) => {
                    self.read_closed = true;
                    Some(Step::Closed)
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => match &job {
                    Job::Write(data) if !data.is_empty() => {
                        let out = self.outgoing.room();
                        let room = out.len();
                        let records = room / (MAX_FRAGMENT + RECORD_OVERHEAD) + 1;
                        let mut take = data
                            .len()
                            .min(room.saturating_sub(records * RECORD_OVERHEAD));
                        loop {
                            if take == 0 {
                                break Some(Step::Wrote(0));
                            }
                            match traffic.encrypt(&data[..take], out) {
                                Ok(written) => {
                                    self.outgoing.filled(written);
                                    break Some(Step::Wrote(take));
                                }
                                // Something rustls queued first (a key update) took the room.
                                Err(EncryptError::InsufficientSize(size)) => {
                                    take = take.saturating_sub(size.required_size - room);
                                }
                                Err(error) => return Err(io::Error::other(error.to_string())),
                            }
                        }
                    }
                    Job::CloseNotify => {
                        let out = self.outgoing.room();
                        let written = traffic
                            .queue_close_notify(out)
                            .map_err(|error| io::Error::other(error.to_string()))?;
                        self.outgoing.filled(written);
                        Some(Step::CloseQueued)
                    }
                    _ => Some(Step::Established),
                },
                Ok(ConnectionState::ReadEarlyData(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the client sent TLS early data, which this server does not accept",
                    ));
                }
                Ok(_) => {
                    return Err(io::Error::other(
                        "rustls reached a TLS state weft does not know",
                    ));
                }
            };
            self.consume(discard);
            if let Some(step) = step {
                return Ok(step);
            }
        }
    }

    /// Drops `discard` consumed bytes from the front of the incoming bytes; gives the buffer
    /// back once none are left.
    fn consume(&mut self, discard: usize) {
        self.incoming.consume(discard);
        self.incoming.release_if_empty();
    }

    /// Queues the alert rustls prepared for the error it just returned, if any.
    fn queue_alert(&mut self) {
        // Only when rustls has one: with nothing to send, it would deframe again.
        if !self.conn.wants_write() {
            return;
        }
        // The same bytes as before: rustls remembers how far into them it got.
        let incoming = self.incoming.bytes_mut();
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(incoming);
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) = state {
            let out = self.outgoing.room();
            if let Ok(written) = encode.encode(out) {
                self.outgoing.filled(written);
            }
        }
    }

    /// Reads more TLS bytes from the socket: how many (0 at its end).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // Room behind the incomplete record (moved to the front when it reaches the end).
        let room = self.incoming.room();
        if room.is_empty() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a TLS message larger than {} bytes; the client's certificate chain may \
                     be too long",
                    pool::BUFFER_SIZE
                ),
            )));
        }
        let mut read = ReadBuf::new(room);
        let polled = Pin::new(&mut self.io).poll_read(cx, &mut read);
        let n = read.filled().len();
        self.incoming.filled(n);
        if !matches!(polled, Poll::Ready(Ok(()))) || n == 0 {
            // Waiting, failed or ended: hold no buffer meanwhile.
            self.consume(0);
        }
        ready!(polled)?;
        Poll::Ready(Ok(n))
    }

    /// Writes the queued TLS bytes to the socket; gives the buffer back once all are out.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.outgoing.bytes()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.consume(n);
        }
        self.outgoing.release_if_empty();
        Poll::Ready(Ok(()))
    }

    /// Copies pending decrypted bytes into `buf`; frees them once all were read.
    fn read_pending(&mut self, buf: &mut ReadBuf<'_>) {
        let len = buf.remaining().min(self.pending.len() - self.pending_at);
        buf.put_slice(&self.pending[self.pending_at..self.pending_at + len]);
        self.pending_at += len;
        if self.pending_at == self.pending.len() {
            self.pending = Vec::new();
            self.pending_at = 0;
        }
    }
}

impl<IO> AsyncRead for TlsServerStream<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pending_at < this.pending.len() {
            this.read_pending(buf);
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            match this.process(Job::Read(buf))? {
                Step::Read => return Poll::Ready(Ok(())),
                Step::PeerClosed | Step::Closed => return Poll::Ready(Ok(())),
                Step::NeedBytes | Step::Established | Step::Wrote(_) | Step::CloseQueued => {}
            }
            // Whatever rustls queued meanwhile (a key update's answer, say) leaves with the
            // next write or flush, not from here: reading must not take the socket's write
            // wakeup from a task waiting to write (`tokio::io::split` halves share it).
            if ready!(this.poll_fill(cx))? == 0 {
                // The socket ended without a close_notify: the end of the stream all the same.
                this.read_closed = true;
            }
        }
    }
}

impl<IO> AsyncWrite for TlsServerStream<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.close_notify_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        loop {
            // The last batch must be out before the next is encrypted: one buffer in flight.
            ready!(this.poll_write_out(cx))?;
            if data.is_empty() {
                return Poll::Ready(Ok(0));
            }
            match this.process(Job::Write(data))? {
                Step::Wrote(0) => continue,
                Step::Wrote(n) => {
                    // Start sending now; the rest goes with the next write or flush.
                    if let Poll::Ready(Err(error)) = this.poll_write_out(cx) {
                        return Poll::Ready(Err(error));
                    }
                    return Poll::Ready(Ok(n));
                }
                Step::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                // The peer finished sending: this side may still write.
                Step::PeerClosed => continue,
                Step::Read | Step::NeedBytes | Step::Established | Step::CloseQueued => {
                    return Poll::Ready(Err(io::Error::other(
                        "the TLS session cannot send application data",
                    )));
                }
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.close_notify_sent {
            ready!(this.poll_write_out(cx))?;
            this.close_notify_sent = true;
            // Once application data may be sent; a session that already closed needs none.
            loop {
                match this.process(Job::CloseNotify)? {
                    Step::CloseQueued | Step::Closed => break,
                    Step::PeerClosed | Step::Read | Step::Wrote(_) => {}
                    Step::NeedBytes | Step::Established => {
                        return Poll::Ready(Err(io::Error::other(
                            "the TLS session cannot send its close_notify",
                        )));
                    }
                }
            }
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<IO> std::fmt::Debug for TlsServerStream<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServerStream")
            .field("holds_buffers", &self.holds_buffers())
            .field("read_closed", &self.read_closed)
            .finish()
    }
}

fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

#[cfg(test)]
mod tests;
