//! The tunnel protocol: many TCP streams multiplexed over one WebSocket, as a pure state machine.
//!
//! [`Session`] is one end of a tunnel. It performs no I/O and never reads the clock (a tidy test
//! checks this module never mentions the runtime or the system clock): the transport feeds it
//! messages and the time, and sends what it produces. Read [`Session`] first (its doc gives the
//! call order), then [`Frame`].
//!
//! # Call order
//!
//! ```text
//! loop {
//!     input:    session.handle_frame(now, message)   for each WebSocket binary message
//!               session.handle_timeout(now)          when the timer fired
//!               session.open / accept_dial / refuse_dial / write / read / finish / close / reset
//!     output:   while let Some(_) = session.poll_transmit(now, &mut buf) { send buf as one message }
//!               timer = session.poll_timeout()
//!               while let Some(event) = session.poll_event() { act on it }
//! }
//! ```
//!
//! # Streams
//!
//! The server opens even-numbered streams (2, 4, …), the agent odd-numbered ones (1, 3, …); ids
//! only go up (by two, unless a dial was dropped before it went out) and are never reused. A stream starts with a dial: the opener
//! sends `DIAL` with the target, the other side dials it and answers `DIAL_OK` or `DIAL_ERR`.
//! Only `DIAL_OK` lets data flow, so the front door answers `200` only after the agent's dial
//! succeeded; a refused or failed dial fails only that stream. Each direction ends with `FIN`
//! (half-close) and a stream ends when both did; `RESET` ends both at once.
//!
//! # Flow control
//!
//! Each side grants the other credit per stream: the window in `DIAL` or `DIAL_OK` to start,
//! then `CREDIT` as its application reads. A sender never sends beyond its credit (a peer that
//! does breaks the protocol), so a stream holds at most one window of received data (default
//! 256 KiB), and a reader that stops reading stalls only its own stream. The session also caps
//! the sum over its streams ([`Config::max_session_buffer`]), and its number of streams.
//!
//! # Keepalive
//!
//! A side that heard nothing for [`Config::ping_interval`] sends `PING`; the peer answers `PONG`
//! ahead of any data. A side that heard nothing for [`Config::idle_timeout`] (default 15 s)
//! closes the session as dead, so the agent reconnects.
//!
//! # Frame format, version 1
//!
//! One frame is one WebSocket binary message of at most [`MAX_FRAME_LEN`] (64 KiB) bytes.
//! Integers are big-endian. Every frame starts with a 6-byte header:
//!
//! ```text
//! +---------+--------+---------------------+------------------------+
//! | version | type   | stream id           | body (type-specific)   |
//! | u8 = 1  | u8     | u32, 0 = session    |                        |
//! +---------+--------+---------------------+------------------------+
//! ```
//!
//! | type | name     | stream | body                                                            |
//! |------|----------|--------|-----------------------------------------------------------------|
//! | 0x01 | DIAL     | new id | window u32, port u16 (not 0), host: 1–255 bytes of `[A-Za-z0-9.-_:%]` (the rest) |
//! | 0x02 | DIAL_OK  | opener's id | window u32                                                 |
//! | 0x03 | DIAL_ERR | opener's id | code u8 (1 not allowed, 2 connection refused, 3 unreachable, 4 timed out, 5 too many streams, 6 failed), then for code 6 only a UTF-8 detail of at most 255 bytes |
//! | 0x04 | DATA     | any    | payload: 1 to 65,530 bytes (the rest)                            |
//! | 0x05 | FIN      | any    | empty                                                            |
//! | 0x06 | CREDIT   | any    | increment u32, not 0; outstanding credit stays below 2^32        |
//! | 0x07 | RESET    | any    | code u8 (0 cancelled, 1 I/O error, 2 dial timeout)               |
//! | 0x08 | PING     | 0      | opaque u64                                                       |
//! | 0x09 | PONG     | 0      | the ping's u64                                                   |
//! | 0x0a | GO_AWAY  | 0      | code u8 (0 normal, 1 protocol error, 2 timed out), then a UTF-8 reason of at most 255 bytes |
//!
//! The decoder checks the message length, then the version, type and stream id, then each
//! field's length, before copying anything; unknown versions, types and codes are errors. The
//! session then checks each frame against its state: a dial must use the peer's parity and an id
//! above every earlier one; data, fin and credit need the dial reply first; data must fit the credit; nothing
//! may name a stream that was never opened. Frames for a stream that this side already closed
//! are dropped, since they may have crossed its reset. Any violation closes the session with a
//! typed [`ProtocolError`] (and a `GO_AWAY` naming it); nothing panics.

mod config;
mod error;
mod frame;
mod session;
mod stream;

pub use config::Config;
pub use error::{ConfigError, FrameError, ProtocolError, SessionError, StreamError};
pub use frame::{
    CloseCode, DialError, Frame, HEADER_LEN, MAX_DATA_PAYLOAD, MAX_FRAME_LEN, MAX_HOST_LEN,
    MAX_REASON_LEN, ResetCode, Role, StreamId, Target, VERSION,
};
pub use session::{Event, Session, Stats};
