//! The protocol's errors, split by phase so callers can tell them apart: [`FrameError`] (a
//! message that does not decode), [`ProtocolError`] (a frame that decodes but breaks the rules
//! of the session), [`SessionError`] (why a session ended), [`StreamError`] (an application
//! command the session refused) and [`ConfigError`] (a [`Config`](super::Config) that makes no
//! sense). Why a dial failed is [`DialError`](super::DialError), which travels on the wire.

use super::frame::{CloseCode, StreamId};

/// A message that is not a valid frame. The session that received it closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The message is longer than the protocol allows.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLong {
        /// The message's length.
        len: usize,
        /// [`MAX_FRAME_LEN`](super::MAX_FRAME_LEN).
        max: usize,
    },
    /// The message is shorter than the 6-byte header.
    #[error("frame of {len} bytes is shorter than the 6-byte header")]
    Truncated {
        /// The message's length.
        len: usize,
    },
    /// The first byte is not a version this crate speaks; upgrade the older side.
    #[error("unsupported protocol version {version}, this side speaks 1")]
    UnsupportedVersion {
        /// The version byte.
        version: u8,
    },
    /// The type byte names no frame type.
    #[error("unknown frame type {kind:#04x}")]
    UnknownType {
        /// The type byte.
        kind: u8,
    },
    /// A frame of a fixed size (or with a minimum size) has another length.
    #[error("frame type {kind:#04x} with a wrong length of {len} bytes")]
    BadLength {
        /// The type byte.
        kind: u8,
        /// The message's length.
        len: usize,
    },
    /// A ping, pong or go-away names a stream; they belong to stream 0.
    #[error("session frame type {kind:#04x} on {stream}, expected stream 0")]
    SessionFrameOnStream {
        /// The type byte.
        kind: u8,
        /// The stream it named.
        stream: StreamId,
    },
    /// A stream frame names stream 0, which is the session's.
    #[error("stream frame type {kind:#04x} on stream 0")]
    StreamFrameOnSession {
        /// The type byte.
        kind: u8,
    },
    /// A data frame carries no bytes.
    #[error("empty data frame on {stream}")]
    EmptyData {
        /// The stream.
        stream: StreamId,
    },
    /// A credit frame grants nothing.
    #[error("zero credit on {stream}")]
    ZeroCredit {
        /// The stream.
        stream: StreamId,
    },
    /// A dial names no host.
    #[error("dial target host is empty")]
    EmptyHost,
    /// A dial's host is longer than [`MAX_HOST_LEN`](super::MAX_HOST_LEN).
    #[error("dial target host of {len} bytes exceeds the maximum of 255")]
    HostTooLong {
        /// The host's length.
        len: usize,
    },
    /// A dial's host holds a byte that is in no IP address or host name.
    #[error("dial target host holds byte {byte:#04x}; use letters, digits and .-_:%")]
    InvalidHost {
        /// The first bad byte.
        byte: u8,
    },
    /// A dial names port 0.
    #[error("dial target port is 0")]
    ZeroPort,
    /// A dial error code that this version does not know.
    #[error("unknown dial error code {code}")]
    UnknownDialError {
        /// The code byte.
        code: u8,
    },
    /// A dial error other than `Failed` carries a detail text.
    #[error("dial error code {code} carries a detail, only code 6 may")]
    UnexpectedDetail {
        /// The code byte.
        code: u8,
    },
    /// A reset code that this version does not know.
    #[error("unknown reset code {code}")]
    UnknownResetCode {
        /// The code byte.
        code: u8,
    },
    /// A go-away code that this version does not know.
    #[error("unknown close code {code}")]
    UnknownCloseCode {
        /// The code byte.
        code: u8,
    },
    /// A reason text is longer than [`MAX_REASON_LEN`](super::MAX_REASON_LEN).
    #[error("reason of {len} bytes exceeds the maximum of 255")]
    ReasonTooLong {
        /// The text's length.
        len: usize,
    },
    /// A reason text is not UTF-8.
    #[error("reason is not valid UTF-8")]
    ReasonNotUtf8,
}

/// A valid frame that breaks the rules of the session. The session closes, telling the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The message is not a frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A dial names a stream id of this side's parity, or a dial reply one of the peer's.
    #[error("{stream} has the wrong parity for this frame")]
    WrongParity {
        /// The stream.
        stream: StreamId,
    },
    /// A dial reuses a stream id; ids only go up within a session.
    #[error("dial reuses {stream}, new streams start at {next}")]
    StreamIdReused {
        /// The stream the dial named.
        stream: StreamId,
        /// The lowest id the peer may open next.
        next: StreamId,
    },
    /// A frame names a stream that was never opened.
    #[error("frame for {stream}, which was never opened")]
    UnknownStream {
        /// The stream.
        stream: StreamId,
    },
    /// Data, half-close or credit on a stream whose dial reply has not been exchanged yet.
    #[error("frame on {stream} before its dial reply")]
    BeforeDialReply {
        /// The stream.
        stream: StreamId,
    },
    /// A second dial reply for the same stream.
    #[error("second dial reply on {stream}")]
    DuplicateDialReply {
        /// The stream.
        stream: StreamId,
    },
    /// The peer sent more than the credit this side granted.
    #[error("{stream} received {len} bytes with only {credit} bytes of credit")]
    FlowControl {
        /// The stream.
        stream: StreamId,
        /// The data frame's length.
        len: usize,
        /// The credit left.
        credit: u64,
    },
    /// Data or a second half-close after the peer's half-close.
    #[error("data or fin on {stream} after the peer's fin")]
    AfterFin {
        /// The stream.
        stream: StreamId,
    },
    /// Credit beyond 2^32 - 1 outstanding bytes.
    #[error("credit on {stream} overflows 2^32 - 1 bytes")]
    CreditOverflow {
        /// The stream.
        stream: StreamId,
    },
    /// The peer keeps opening streams past this side's limit without reading the refusals.
    #[error(
        "the peer opened more than {max} streams past the stream limit without reading the refusals"
    )]
    TooManyRefusals {
        /// The most refusals this side keeps queued.
        max: usize,
    },
    /// The peer made this side queue more events than it allows (dials and resets, say) while
    /// this side could not send: a peer that does not read.
    #[error("the peer queued more than {max} events on this side without reading what it sends")]
    TooManyEvents {
        /// The most events this side keeps queued.
        max: usize,
    },
}

/// Why a session ended. The transport closes the WebSocket; an agent reconnects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer broke the protocol; this side sent it a go-away naming the error.
    #[error("peer broke the tunnel protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// Nothing arrived from the peer for the idle timeout, pings included: it is gone.
    #[error("no frame from the peer for {secs}s, the tunnel is dead")]
    TimedOut {
        /// The idle timeout in whole seconds.
        secs: u64,
    },
    /// The peer sent a go-away.
    #[error("peer closed the tunnel ({code}): {reason}")]
    PeerClosed {
        /// The peer's code.
        code: CloseCode,
        /// The peer's reason text.
        reason: String,
    },
    /// This side's application closed the session.
    #[error("tunnel closed by this side")]
    Local,
}

/// An application command that the session refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Nothing to read yet, or no credit to write more; wait for `Readable` or `Writable`.
    #[error("stream blocked")]
    Blocked,
    /// No such stream: never opened, or already closed, reset or refused.
    #[error("no open {stream}")]
    UnknownStream {
        /// The stream.
        stream: StreamId,
    },
    /// The stream's dial has not succeeded (or not been accepted) yet.
    #[error("{stream} is not connected yet")]
    NotConnected {
        /// The stream.
        stream: StreamId,
    },
    /// [`accept_dial`](super::Session::accept_dial) or
    /// [`refuse_dial`](super::Session::refuse_dial) on a stream that is not waiting for an answer.
    #[error("{stream} is not waiting for a dial answer")]
    NotDialing {
        /// The stream.
        stream: StreamId,
    },
    /// A write after [`finish`](super::Session::finish) or [`close`](super::Session::close).
    #[error("{stream} is finished, it takes no more writes")]
    Finished {
        /// The stream.
        stream: StreamId,
    },
    /// The session already carries [`Config::max_streams`](super::Config) streams.
    #[error("too many streams on this tunnel (at most {max})")]
    TooManyStreams {
        /// The limit.
        max: usize,
    },
    /// All 2^31 stream ids of this side are used; open a new session.
    #[error("stream ids of this session are exhausted")]
    IdsExhausted,
    /// The session is closed.
    #[error("the tunnel session is closed")]
    SessionClosed,
}

/// A [`Config`](super::Config) that would not work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The stream window is zero or above 2^31 bytes; the default is 256 KiB.
    #[error("stream window of {window} bytes must be between 1 and 2^31")]
    Window {
        /// The configured window.
        window: u32,
    },
    /// The session buffer is smaller than one stream window, so no stream could use its window.
    #[error("session buffer of {buffer} bytes is smaller than the stream window of {window}")]
    SessionBuffer {
        /// The configured session buffer.
        buffer: u64,
        /// The configured window.
        window: u32,
    },
    /// `max_streams` is zero.
    #[error("max_streams must be at least 1")]
    MaxStreams,
    /// `max_data_payload` is zero or above the frame limit.
    #[error("max_data_payload of {payload} bytes must be between 1 and 65530")]
    DataPayload {
        /// The configured payload.
        payload: usize,
    },
    /// The ping interval is zero or not shorter than the idle timeout, so a live peer would
    /// look dead.
    #[error("ping interval must be above zero and shorter than the idle timeout")]
    Keepalive,
    /// The dial timeout is zero.
    #[error("dial timeout must be above zero")]
    DialTimeout,
    /// The write stall timeout is zero.
    #[error("write stall timeout must be above zero")]
    WriteStallTimeout,
}
