//! [`Config`]: the bounds and timers of one session.

use std::time::Duration;

use super::error::ConfigError;
use super::frame::MAX_DATA_PAYLOAD;

/// The bounds and timers of one session. Each side has its own; they need not match, because
/// each stream's initial windows travel in the dial and its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The most bytes one stream buffers in each direction: the receive window it grants the
    /// peer, and the most it queues for sending. Default 256 KiB.
    pub stream_window: u32,
    /// The most bytes the whole session holds in each direction: received data plus the credit
    /// granted for more, and queued data to send. Default 64 MiB. When it binds, new credit
    /// waits until the application reads or a stream ends, so a stream can wait for credit while
    /// others hold theirs; set it to `stream_window * max_streams` to never bind.
    pub max_session_buffer: u64,
    /// The most streams open at once, both directions and pending dials counted. A dial beyond
    /// it is refused with [`DialError::TooManyStreams`](super::DialError) and only that stream
    /// fails. Default 1024.
    pub max_streams: usize,
    /// The largest data payload this side sends in one frame. Default 32 KiB.
    pub max_data_payload: usize,
    /// A ping goes out when nothing arrived for this long. Default 5 s.
    pub ping_interval: Duration,
    /// The session closes when nothing arrived for this long: the peer is dead, so the agent
    /// reconnects. Default 15 s.
    pub idle_timeout: Duration,
    /// A stream this side opened fails with [`DialError::TimedOut`](super::DialError) when the
    /// dial reply takes longer than this. Default 30 s.
    pub dial_timeout: Duration,
    /// The transport closes the connection when what it has to send makes no progress for this
    /// long: a peer that reads nothing is dead, whatever it still sends. Default 30 s.
    pub write_stall_timeout: Duration,
}

// === impl Config ===

impl Default for Config {
    fn default() -> Self {
        Config {
            stream_window: 256 * 1024,
            max_session_buffer: 64 * 1024 * 1024,
            max_streams: 1024,
            max_data_payload: 32 * 1024,
            ping_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            dial_timeout: Duration::from_secs(30),
            write_stall_timeout: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Checks that the bounds and timers make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.stream_window == 0 || self.stream_window > 1 << 31 {
            return Err(ConfigError::Window {
                window: self.stream_window,
            });
        }
        if self.max_session_buffer < u64::from(self.stream_window) {
            return Err(ConfigError::SessionBuffer {
                buffer: self.max_session_buffer,
                window: self.stream_window,
            });
        }
        if self.max_streams == 0 {
            return Err(ConfigError::MaxStreams);
        }
        if self.max_data_payload == 0 || self.max_data_payload > MAX_DATA_PAYLOAD {
            return Err(ConfigError::DataPayload {
                payload: self.max_data_payload,
            });
        }
        if self.ping_interval.is_zero() || self.ping_interval >= self.idle_timeout {
            return Err(ConfigError::Keepalive);
        }
        if self.dial_timeout.is_zero() {
            return Err(ConfigError::DialTimeout);
        }
        if self.write_stall_timeout.is_zero() {
            return Err(ConfigError::WriteStallTimeout);
        }
        Ok(())
    }
}
