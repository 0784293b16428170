//! The wire format: [`Frame`], its encoder and its decoder, and the small types frames carry
//! ([`StreamId`], [`Target`], [`DialError`], [`ResetCode`], [`CloseCode`]).
//!
//! The layout of every frame is in the [module doc of `proto`](super). The decoder checks the
//! length of the whole message against [`MAX_FRAME_LEN`] first, then each field against its own
//! bound, and only then copies anything (the host of a dial and the text of a reason, each at most
//! 255 bytes); the payload of a data frame is a zero-copy slice of the message.

#[cfg(test)]
mod tests;

use std::fmt;

use bytes::{BufMut, Bytes};

use super::error::FrameError;

/// The protocol version this crate speaks; the first byte of every frame.
pub const VERSION: u8 = 1;

/// The largest frame, header included: one WebSocket message never exceeds it.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// The fixed header: version, type, stream id.
pub const HEADER_LEN: usize = 6;

/// The largest payload of a data frame.
pub const MAX_DATA_PAYLOAD: usize = MAX_FRAME_LEN - HEADER_LEN;

/// The longest host a dial may name (a DNS name is at most 253 bytes).
pub const MAX_HOST_LEN: usize = 255;

/// The longest reason text of a dial error or a go-away.
pub const MAX_REASON_LEN: usize = 255;

/// One message of the protocol; one frame is one WebSocket binary message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens `stream` and asks the peer to dial `target`.
    Dial {
        /// The new stream; its parity says which side opened it.
        stream: StreamId,
        /// The opener's initial receive window: how much the peer may send before more credit.
        window: u32,
        /// What to dial.
        target: Target,
    },
    /// The dial of `stream` succeeded; data may flow both ways.
    DialOk {
        /// The stream the peer opened.
        stream: StreamId,
        /// The acceptor's initial receive window.
        window: u32,
    },
    /// The dial of `stream` failed; the stream is gone.
    DialErr {
        /// The stream the peer opened.
        stream: StreamId,
        /// Why.
        error: DialError,
    },
    /// Bytes of `stream`, in order, within the credit the receiver granted.
    Data {
        /// The stream.
        stream: StreamId,
        /// At least one byte and at most [`MAX_DATA_PAYLOAD`].
        payload: Bytes,
    },
    /// The sender will send no more data on `stream` (half-close).
    Fin {
        /// The stream.
        stream: StreamId,
    },
    /// The receiver consumed data: the sender may send `increment` more bytes on `stream`.
    Credit {
        /// The stream.
        stream: StreamId,
        /// Never zero.
        increment: u32,
    },
    /// `stream` ends abruptly in both directions; buffered data is discarded.
    Reset {
        /// The stream.
        stream: StreamId,
        /// Why.
        code: ResetCode,
    },
    /// Asks the peer for a [`Frame::Pong`] with the same payload.
    Ping {
        /// Opaque; echoed back.
        payload: u64,
    },
    /// Answers a [`Frame::Ping`].
    Pong {
        /// The ping's payload.
        payload: u64,
    },
    /// The sender closes the session; it sends nothing after this.
    GoAway {
        /// Why.
        code: CloseCode,
        /// A human-readable reason, at most [`MAX_REASON_LEN`] bytes.
        reason: String,
    },
}

/// A stream's number within one session: odd if the agent opened it, even (and never zero) if
/// the server did. Numbers are never reused within a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u32);

/// Which end of the session a [`Session`](super::Session) is; it fixes the parity of the stream
/// ids it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The server end: it accepted the WebSocket and opens even-numbered streams.
    Server,
    /// The agent end: it dialed the WebSocket and opens odd-numbered streams.
    Agent,
}

/// What a dial asks the peer to connect to: a host (an IP address or a name) and a TCP port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    host: String,
    port: u16,
}

/// Why a dial failed; the front door answers `502` naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The dialing side's authorizer does not allow this target.
    #[error("the node does not allow dials to this address")]
    NotAllowed,
    /// The target answered with a TCP reset: nothing listens on that port.
    #[error("connection refused")]
    ConnectionRefused,
    /// No route to the target's host or network.
    #[error("host unreachable")]
    Unreachable,
    /// The dial did not complete in time (the dialer's timeout, or the opener's dial timeout).
    #[error("dial timed out")]
    TimedOut,
    /// The dialing side already carries its maximum number of streams; retry later.
    #[error("too many streams on this tunnel")]
    TooManyStreams,
    /// Any other failure of the dialer, with its text (at most [`MAX_REASON_LEN`] bytes).
    #[error("dial failed: {detail}")]
    Failed {
        /// The dialer's error text.
        detail: String,
    },
}

/// Why a stream was reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ResetCode {
    /// The application on the resetting side gave the stream up.
    #[error("stream cancelled by the peer")]
    Cancelled,
    /// The TCP connection behind the stream failed on the resetting side.
    #[error("the connection behind the stream failed")]
    Io,
    /// The opener gave up waiting for the dial reply.
    #[error("the dial reply did not arrive in time")]
    DialTimeout,
}

/// Why a session was closed, as carried by [`Frame::GoAway`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// An orderly close by the application (shutdown, node removed).
    Normal,
    /// The sender received a frame that breaks the protocol.
    ProtocolError,
    /// The sender heard nothing from the peer for its idle timeout.
    TimedOut,
}

/// Frame type bytes, the second byte of every frame.
mod kind {
    pub(super) const DIAL: u8 = 0x01;
    pub(super) const DIAL_OK: u8 = 0x02;
    pub(super) const DIAL_ERR: u8 = 0x03;
    pub(super) const DATA: u8 = 0x04;
    pub(super) const FIN: u8 = 0x05;
    pub(super) const CREDIT: u8 = 0x06;
    pub(super) const RESET: u8 = 0x07;
    pub(super) const PING: u8 = 0x08;
    pub(super) const PONG: u8 = 0x09;
    pub(super) const GO_AWAY: u8 = 0x0a;
}

// === impl Frame ===

impl Frame {
    /// Decodes one whole message. Checks every bound before copying anything; the payload of a
    /// data frame is a slice of `message`, not a copy.
    pub fn decode(message: &Bytes) -> Result<Frame, FrameError> {
        let len = message.len();
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLong {
                len,
                max: MAX_FRAME_LEN,
            });
        }
        if len < HEADER_LEN {
            return Err(FrameError::Truncated { len });
        }
        let version = message[0];
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion { version });
        }
        let kind = message[1];
        let stream = StreamId(u32::from_be_bytes([
            message[2], message[3], message[4], message[5],
        ]));
        let body = &message[HEADER_LEN..];
        let session_frame = matches!(kind, kind::PING | kind::PONG | kind::GO_AWAY);
        if session_frame && stream.0 != 0 {
            return Err(FrameError::SessionFrameOnStream { kind, stream });
        }
        if !session_frame && (kind::DIAL..=kind::RESET).contains(&kind) && stream.0 == 0 {
            return Err(FrameError::StreamFrameOnSession { kind });
        }
        let frame = match kind {
            kind::DIAL => {
                if body.len() < 7 {
                    return Err(FrameError::BadLength { kind, len });
                }
                let window = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let port = u16::from_be_bytes([body[4], body[5]]);
                let target = Target::from_wire(&body[6..], port)?;
                Frame::Dial {
                    stream,
                    window,
                    target,
                }
            }
            kind::DIAL_OK => Frame::DialOk {
                stream,
                window: u32::from_be_bytes(fixed(kind, body)?),
            },
            kind::DIAL_ERR => {
                let Some((&code, detail)) = body.split_first() else {
                    return Err(FrameError::BadLength { kind, len });
                };
                Frame::DialErr {
                    stream,
                    error: DialError::from_wire(code, detail)?,
                }
            }
            kind::DATA => {
                if body.is_empty() {
                    return Err(FrameError::EmptyData { stream });
                }
                Frame::Data {
                    stream,
                    payload: message.slice(HEADER_LEN..),
                }
            }
            kind::FIN => {
                fixed::<0>(kind, body)?;
                Frame::Fin { stream }
            }
            kind::CREDIT => {
                let increment = u32::from_be_bytes(fixed(kind, body)?);
                if increment == 0 {
                    return Err(FrameError::ZeroCredit { stream });
                }
                Frame::Credit { stream, increment }
            }
            kind::RESET => {
                let [code] = fixed(kind, body)?;
                Frame::Reset {
                    stream,
                    code: ResetCode::from_wire(code)?,
                }
            }
            kind::PING => Frame::Ping {
                payload: u64::from_be_bytes(fixed(kind, body)?),
            },
            kind::PONG => Frame::Pong {
                payload: u64::from_be_bytes(fixed(kind, body)?),
            },
            kind::GO_AWAY => {
                let Some((&code, reason)) = body.split_first() else {
                    return Err(FrameError::BadLength { kind, len });
                };
                Frame::GoAway {
                    code: CloseCode::from_wire(code)?,
                    reason: reason_from_wire(reason)?,
                }
            }
            _ => return Err(FrameError::UnknownType { kind }),
        };
        Ok(frame)
    }

    /// Appends the encoded frame to `buf`. A reason longer than [`MAX_REASON_LEN`] is cut at a
    /// character boundary; every other field is bounded by its type.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            Frame::Dial {
                stream,
                window,
                target,
            } => {
                header(buf, kind::DIAL, *stream);
                buf.put_u32(*window);
                buf.put_u16(target.port);
                buf.put_slice(target.host.as_bytes());
            }
            Frame::DialOk { stream, window } => {
                header(buf, kind::DIAL_OK, *stream);
                buf.put_u32(*window);
            }
            Frame::DialErr { stream, error } => {
                header(buf, kind::DIAL_ERR, *stream);
                buf.put_u8(error.code());
                if let DialError::Failed { detail } = error {
                    buf.put_slice(truncate(detail).as_bytes());
                }
            }
            Frame::Data { stream, payload } => {
                encode_data_header(buf, *stream);
                buf.put_slice(payload);
            }
            Frame::Fin { stream } => header(buf, kind::FIN, *stream),
            Frame::Credit { stream, increment } => {
                header(buf, kind::CREDIT, *stream);
                buf.put_u32(*increment);
            }
            Frame::Reset { stream, code } => {
                header(buf, kind::RESET, *stream);
                buf.put_u8(code.to_wire());
            }
            Frame::Ping { payload } => {
                header(buf, kind::PING, StreamId(0));
                buf.put_u64(*payload);
            }
            Frame::Pong { payload } => {
                header(buf, kind::PONG, StreamId(0));
                buf.put_u64(*payload);
            }
            Frame::GoAway { code, reason } => {
                header(buf, kind::GO_AWAY, StreamId(0));
                buf.put_u8(code.to_wire());
                buf.put_slice(truncate(reason).as_bytes());
            }
        }
    }
}

/// Appends the header of a data frame; the caller appends the payload right after it. This is
/// how the session writes data frames without building a [`Frame`].
pub(crate) fn encode_data_header(buf: &mut Vec<u8>, stream: StreamId) {
    header(buf, kind::DATA, stream);
}

fn header(buf: &mut Vec<u8>, kind: u8, stream: StreamId) {
    buf.put_u8(VERSION);
    buf.put_u8(kind);
    buf.put_u32(stream.0);
}

/// The body of a fixed-size frame, or an error naming the wrong length.
fn fixed<const N: usize>(kind: u8, body: &[u8]) -> Result<[u8; N], FrameError> {
    body.try_into().map_err(|_| FrameError::BadLength {
        kind,
        len: HEADER_LEN + body.len(),
    })
}

fn reason_from_wire(bytes: &[u8]) -> Result<String, FrameError> {
    if bytes.len() > MAX_REASON_LEN {
        return Err(FrameError::ReasonTooLong { len: bytes.len() });
    }
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| FrameError::ReasonNotUtf8)
}

/// Cuts `text` to at most [`MAX_REASON_LEN`] bytes at a character boundary.
pub(crate) fn truncate(text: &str) -> &str {
    if text.len() <= MAX_REASON_LEN {
        return text;
    }
    let mut end = MAX_REASON_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

// === impl StreamId ===

impl StreamId {
    /// The side that opened this stream.
    pub fn opener(self) -> Role {
        if self.0 % 2 == 1 {
            Role::Agent
        } else {
            Role::Server
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream {}", self.0)
    }
}

// === impl Role ===

impl Role {
    /// The first stream id this side opens.
    pub(crate) fn first_stream(self) -> u64 {
        match self {
            Role::Agent => 1,
            Role::Server => 2,
        }
    }

    /// The other end.
    pub fn peer(self) -> Role {
        match self {
            Role::Agent => Role::Server,
            Role::Server => Role::Agent,
        }
    }
}

// === impl Target ===

impl Target {
    /// A target; the host is an IP address (IPv6 without brackets) or a name: 1 to
    /// [`MAX_HOST_LEN`] bytes of ASCII letters, digits and `.-_:%`, and the port is not zero.
    pub fn new(host: impl Into<String>, port: u16) -> Result<Target, FrameError> {
        let host = host.into();
        check_host(host.as_bytes(), port)?;
        Ok(Target { host, port })
    }

    /// The host, as the opener wrote it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn from_wire(host: &[u8], port: u16) -> Result<Target, FrameError> {
        check_host(host, port)?;
        // check_host allows only ASCII, so this is valid UTF-8 of at most MAX_HOST_LEN bytes.
        let host = String::from_utf8_lossy(host).into_owned();
        Ok(Target { host, port })
    }
}

fn check_host(host: &[u8], port: u16) -> Result<(), FrameError> {
    if host.is_empty() {
        return Err(FrameError::EmptyHost);
    }
    if host.len() > MAX_HOST_LEN {
        return Err(FrameError::HostTooLong { len: host.len() });
    }
    if let Some(&byte) = host
        .iter()
        .find(|b| !(b.is_ascii_alphanumeric() || b".-_:%".contains(b)))
    {
        return Err(FrameError::InvalidHost { byte });
    }
    if port == 0 {
        return Err(FrameError::ZeroPort);
    }
    Ok(())
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

// === impl DialError ===

impl DialError {
    /// A [`DialError::Failed`] with `detail` cut to [`MAX_REASON_LEN`] bytes.
    pub fn failed(detail: impl fmt::Display) -> DialError {
        DialError::Failed {
            detail: truncate(&detail.to_string()).to_owned(),
        }
    }

    fn code(&self) -> u8 {
        match self {
            DialError::NotAllowed => 1,
            DialError::ConnectionRefused => 2,
            DialError::Unreachable => 3,
            DialError::TimedOut => 4,
            DialError::TooManyStreams => 5,
            DialError::Failed { .. } => 6,
        }
    }

    fn from_wire(code: u8, detail: &[u8]) -> Result<DialError, FrameError> {
        let error = match code {
            1 => DialError::NotAllowed,
            2 => DialError::ConnectionRefused,
            3 => DialError::Unreachable,
            4 => DialError::TimedOut,
            5 => DialError::TooManyStreams,
            6 => {
                return Ok(DialError::Failed {
                    detail: reason_from_wire(detail)?,
                });
            }
            _ => return Err(FrameError::UnknownDialError { code }),
        };
        if !detail.is_empty() {
            return Err(FrameError::UnexpectedDetail { code });
        }
        Ok(error)
    }
}

// === impl ResetCode ===

impl ResetCode {
    fn to_wire(self) -> u8 {
        match self {
            ResetCode::Cancelled => 0,
            ResetCode::Io => 1,
            ResetCode::DialTimeout => 2,
        }
    }

    fn from_wire(code: u8) -> Result<ResetCode, FrameError> {
        match code {
            0 => Ok(ResetCode::Cancelled),
            1 => Ok(ResetCode::Io),
            2 => Ok(ResetCode::DialTimeout),
            _ => Err(FrameError::UnknownResetCode { code }),
        }
    }
}

// === impl CloseCode ===

impl CloseCode {
    fn to_wire(self) -> u8 {
        match self {
            CloseCode::Normal => 0,
            CloseCode::ProtocolError => 1,
            CloseCode::TimedOut => 2,
        }
    }

    fn from_wire(code: u8) -> Result<CloseCode, FrameError> {
        match code {
            0 => Ok(CloseCode::Normal),
            1 => Ok(CloseCode::ProtocolError),
            2 => Ok(CloseCode::TimedOut),
            _ => Err(FrameError::UnknownCloseCode { code }),
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseCode::Normal => "normal close",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::TimedOut => "timed out",
        })
    }
}
