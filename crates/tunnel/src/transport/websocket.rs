//! The WebSocket under a tunnel (RFC 6455): the server's upgrade of an HTTPS request (through
//! hyper, so it shares weft's HTTPS port and client-certificate check), the agent's client
//! handshake (through hyper's client, over tokio-rustls), and the framing itself.
//!
//! The framing is weft's own rather than a WebSocket library's because a tunnel frame is one
//! binary message and the transport wants two things a general library does not give: frames
//! encoded straight into the buffer that goes to TLS (one copy of each payload on the way out),
//! and received payloads handed to the session as slices of the read buffer (no copy on the way
//! in). It speaks exactly what the tunnel needs: unfragmented binary messages of at most
//! [`MAX_FRAME_LEN`] bytes, masked from the agent (the client) and unmasked from the server as
//! the RFC requires, ping answered by pong, and close. A text message, a fragmented message, a
//! reserved bit or opcode, wrong masking or an oversized frame ends the connection with a
//! [`WebSocketError`] before anything of it is buffered beyond its header.

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, HOST, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use weft_api::http::{Body, CONNECT_TIMEOUT, RESPONSE_TIMEOUT, TLS_TIMEOUT, error_response, full};
use weft_api::io::ReadAhead;

use crate::error::{ConnectError, WebSocketError};
use crate::proto::MAX_FRAME_LEN;

/// A byte stream a WebSocket runs over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// An upgraded WebSocket connection, ready for a [`Connection`](super::Connection).
pub struct WebSocket {
    pub(crate) io: Box<dyn Io>,
    pub(crate) side: Side,
}

/// Which end of the WebSocket this is; it fixes which way frames are masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The end that accepted the upgrade (the tunnel server): sends unmasked frames, and
    /// requires masked ones.
    Server,
    /// The end that asked for the upgrade (the agent): sends masked frames, and requires
    /// unmasked ones.
    Client,
}

/// One message received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// A binary message: one tunnel frame.
    Binary(Bytes),
    /// A ping, to be answered by a pong with the same payload.
    Ping(Bytes),
    /// A pong; nothing to do.
    Pong,
    /// The peer closed the WebSocket.
    Close,
}

/// Opcodes.
mod opcode {
    pub(super) const CONTINUATION: u8 = 0x0;
    pub(super) const TEXT: u8 = 0x1;
    pub(super) const BINARY: u8 = 0x2;
    pub(super) const CLOSE: u8 = 0x8;
    pub(super) const PING: u8 = 0x9;
    pub(super) const PONG: u8 = 0xa;
}

/// The longest payload of a control frame (RFC 6455 section 5.5).
const MAX_CONTROL_LEN: usize = 125;

/// The room [`begin_frame`] leaves for a header: two bytes and a 16-bit length, and a mask key
/// from the client. A frame of 126 to 65,535 bytes (every data frame of the default size) fills
/// it exactly, so its payload never moves; a shorter one moves by two bytes.
fn header_room(side: Side) -> usize {
    match side {
        Side::Server => 4,
        Side::Client => 8,
    }
}

/// How much encrypted data rustls may hold before the socket takes it (its default is 64 KiB):
/// more lets one write system call carry a whole batch of frames.
const TLS_BUFFER_LIMIT: usize = 512 * 1024;

/// Received payloads at least this long are handed on as slices of the read buffer; shorter
/// ones are copied, so a few bytes left unread in one stream never hold a whole read buffer.
pub(crate) const ZERO_COPY_MIN: usize = 16 * 1024;

// === impl WebSocket ===

impl WebSocket {
    /// A WebSocket over `io`, whose upgrade handshake already happened elsewhere ([`accept`]
    /// and [`connect`] make the usual ones).
    pub fn new(io: impl Io, side: Side) -> WebSocket {
        WebSocket {
            io: Box::new(io),
            side,
        }
    }

    /// Which end this is.
    pub fn side(&self) -> Side {
        self.side
    }
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

// === Handshakes ===

/// Answers a WebSocket upgrade request: the `101` response to return now, and the future of the
/// WebSocket once hyper hands the connection over. A request that is no WebSocket upgrade gets
/// a `400` response instead.
#[allow(clippy::result_large_err)]
pub fn accept(
    request: &mut Request<Incoming>,
) -> Result<
    (
        Response<Body>,
        impl Future<Output = Option<WebSocket>> + Send + use<>,
    ),
    Response<Body>,
> {
    let headers = request.headers();
    let has = |name, value: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case(value))
            })
        })
    };
    if !(has(UPGRADE, "websocket") && has(CONNECTION, "upgrade")) {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "the tunnel endpoint takes a WebSocket upgrade",
        ));
    }
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "the WebSocket upgrade lacks Sec-WebSocket-Key",
        ));
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(request);
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    let socket = async move {
        match upgrade.await {
            Ok(upgraded) => Some(WebSocket::new(TokioIo::new(upgraded), Side::Server)),
            Err(error) => {
                tracing::debug!(%error, "tunnel upgrade failed");
                None
            }
        }
    };
    Ok((response, socket))
}

/// Connects to a server's tunnel endpoint `url` (`wss://host:port/path`) over TLS with `tls`
/// (the cluster CA and the node's certificate) and completes the WebSocket handshake. A server
/// that answers other than `101` (`401` without a node certificate, `403` for another identity)
/// is a [`ConnectError::Rejected`] with its reason. Each step has weft-api's deadline for it
/// (TCP [`CONNECT_TIMEOUT`], TLS [`TLS_TIMEOUT`], the upgrade's answer [`RESPONSE_TIMEOUT`]), so
/// a server that accepts and never answers is a [`ConnectError::TimedOut`].
pub async fn connect(url: &str, tls: Arc<ClientConfig>) -> Result<WebSocket, ConnectError> {
    connect_within(url, tls, [CONNECT_TIMEOUT, TLS_TIMEOUT, RESPONSE_TIMEOUT]).await
}

/// [`connect`] with the TCP, TLS and answer deadlines given.
async fn connect_within(
    url: &str,
    tls: Arc<ClientConfig>,
    [connect_timeout, tls_timeout, response_timeout]: [Duration; 3],
) -> Result<WebSocket, ConnectError> {
    let invalid = |reason| ConnectError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let rest = url
        .strip_prefix("wss://")
        .ok_or_else(|| invalid("the scheme must be wss"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            let port = port.parse().map_err(|_| invalid("the port is no number"))?;
            (host, port)
        }
        _ => (authority, 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid("the host is empty"));
    }
    let io = |source| ConnectError::Io {
        url: url.to_owned(),
        source,
    };
    let handshake = |reason: String| ConnectError::Handshake {
        url: url.to_owned(),
        reason,
    };
    let timed_out = |step: &'static str, after: Duration| ConnectError::TimedOut {
        url: url.to_owned(),
        step,
        after,
    };
    let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| timed_out("TCP connection", connect_timeout))?
        .map_err(io)?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.to_owned()).map_err(|_| invalid("bad host name"))?;
    // rustls reads 4 KiB at a time; read the socket in large chunks under it.
    let handshake_tls = TlsConnector::from(tls).connect(name, ReadAhead::new(tcp));
    let mut tls = tokio::time::timeout(tls_timeout, handshake_tls)
        .await
        .map_err(|_| timed_out("TLS handshake", tls_timeout))?
        .map_err(io)?;
    tls.get_mut().1.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
    let upgrade = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| handshake(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "the tunnel's HTTP connection ended");
            }
        });
        let key = generate_key();
        let request = Request::get(path)
            .header(HOST, authority)
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "Upgrade")
            .header(SEC_WEBSOCKET_KEY, &key)
            .header(SEC_WEBSOCKET_VERSION, "13")
            .body(Empty::<Bytes>::new())
            .map_err(|e| handshake(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| handshake(e.to_string()))?;
        let status = response.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .unwrap_or_default();
            let message = serde_json::from_slice::<weft_api::protocol::ErrorBody>(&body)
                .map(|error| error.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(ConnectError::Rejected {
                url: url.to_owned(),
                status: status.as_u16(),
                message,
            });
        }
        let accepted = response
            .headers()
            .get(SEC_WEBSOCKET_ACCEPT)
            .is_some_and(|value| value.as_bytes() == derive_accept_key(key.as_bytes()).as_bytes());
        if !accepted {
            return Err(handshake(
                "the server's Sec-WebSocket-Accept does not match the key".to_owned(),
            ));
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| handshake(e.to_string()))?;
        Ok(upgraded)
    };
    let upgraded = tokio::time::timeout(response_timeout, upgrade)
        .await
        .map_err(|_| timed_out("answer to the upgrade", response_timeout))??;
    Ok(WebSocket::new(TokioIo::new(upgraded), Side::Client))
}

// === Framing ===

/// Takes the next whole message from the front of `buf`, if one is there. Checks the header
/// (and the length it announces) before waiting for the payload, so a frame too long or
/// otherwise wrong is refused after at most 14 bytes. `side` is the receiving end.
pub(crate) fn decode(buf: &mut BytesMut, side: Side) -> Result<Option<Message>, WebSocketError> {
    let Some(&[first, second]) = buf.get(..2) else {
        return Ok(None);
    };
    let fin = first & 0x80 != 0;
    if first & 0x70 != 0 {
        return Err(WebSocketError::ReservedBits);
    }
    let code = first & 0x0f;
    let masked = second & 0x80 != 0;
    if masked != (side == Side::Server) {
        return Err(WebSocketError::Masking {
            masked,
            side: side_name(side),
        });
    }
    let (len, header) = match second & 0x7f {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            (usize::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            let len = u64::from_be_bytes(be);
            (usize::try_from(len).unwrap_or(usize::MAX), 10)
        }
        len => (usize::from(len), 2),
    };
    let control = code & 0x08 != 0;
    match code {
        opcode::BINARY if !fin => return Err(WebSocketError::Fragmented),
        opcode::CONTINUATION => return Err(WebSocketError::Fragmented),
        opcode::TEXT => return Err(WebSocketError::Text),
        opcode::BINARY if len > MAX_FRAME_LEN => {
            return Err(WebSocketError::TooLong {
                len,
                max: MAX_FRAME_LEN,
            });
        }
        opcode::CLOSE | opcode::PING | opcode::PONG if !fin || len > MAX_CONTROL_LEN => {
            return Err(WebSocketError::BadControlFrame);
        }
        opcode::BINARY | opcode::CLOSE | opcode::PING | opcode::PONG => {}
        other => return Err(WebSocketError::UnknownOpcode { opcode: other }),
    }
    debug_assert!(!control || len <= MAX_CONTROL_LEN);
    let key_len = if masked { 4 } else { 0 };
    let total = header + key_len + len;
    if buf.len() < total {
        // Room for the rest, so the next read completes this frame in one piece.
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut key = [0u8; 4];
    if masked {
        key.copy_from_slice(&buf[header..header + 4]);
    }
    buf.advance(header + key_len);
    let payload = if len >= ZERO_COPY_MIN {
        let mut payload = buf.split_to(len);
        if masked {
            apply_mask(&mut payload, key);
        }
        payload.freeze()
    } else {
        let mut payload = buf[..len].to_vec();
        buf.advance(len);
        if masked {
            apply_mask(&mut payload, key);
        }
        Bytes::from(payload)
    };
    Ok(Some(match code {
        opcode::BINARY => Message::Binary(payload),
        opcode::PING => Message::Ping(payload),
        opcode::PONG => Message::Pong,
        _ => Message::Close,
    }))
}

/// Starts a frame from `side` at the end of `out`: leaves room for its header. Append the
/// payload, then call [`end_frame`] with the returned position.
pub(crate) fn begin_frame(out: &mut Vec<u8>, side: Side) -> usize {
    let start = out.len();
    out.resize(start + header_room(side), 0);
    start
}

/// Finishes the frame begun at `start` with `opcode`: writes its header where [`begin_frame`]
/// left room (moving the payload when the header is shorter or longer than the room) and masks
/// the payload when `side` is the client.
pub(crate) fn end_frame(out: &mut Vec<u8>, start: usize, side: Side) {
    end_frame_with(out, start, side, opcode::BINARY);
}

/// Appends a control frame (`pong` with `payload`, or an empty `close`).
pub(crate) fn control_frame(out: &mut Vec<u8>, side: Side, pong: Option<&[u8]>) {
    let start = begin_frame(out, side);
    let code = match pong {
        Some(payload) => {
            out.extend_from_slice(&payload[..payload.len().min(MAX_CONTROL_LEN)]);
            opcode::PONG
        }
        None => opcode::CLOSE,
    };
    end_frame_with(out, start, side, code);
}

fn end_frame_with(out: &mut Vec<u8>, start: usize, side: Side, code: u8) {
    let room = header_room(side);
    let payload_at = start + room;
    let len = out.len() - payload_at;
    let masked = side == Side::Client;
    let mut header = [0u8; 14];
    header[0] = 0x80 | code;
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut used = if len < 126 {
        header[1] = mask_bit | len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        header[1] = mask_bit | 126;
        header[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        header[1] = mask_bit | 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    let key: [u8; 4] = if masked { rand::random() } else { [0; 4] };
    if masked {
        header[used..used + 4].copy_from_slice(&key);
        used += 4;
    }
    // Put the header right before the payload, moving the payload if the room differs.
    if used <= room {
        let gap = room - used;
        if gap > 0 {
            out.copy_within(payload_at.., start + used);
            out.truncate(out.len() - gap);
        }
    } else {
        let extra = used - room;
        out.resize(out.len() + extra, 0);
        out.copy_within(payload_at..payload_at + len, payload_at + extra);
    }
    out[start..start + used].copy_from_slice(&header[..used]);
    if masked {
        apply_mask(&mut out[start + used..], key);
    }
}

/// XORs `data` with the repeating 4-byte `key`, eight bytes at a time.
pub(crate) fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Server => "server",
        Side::Client => "client",
    }
}
