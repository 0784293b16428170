//! The buffers a splice reads its connection into before the bytes go into a tunnel stream:
//! shared by every stream of the process, taken when the connection has data and given back as
//! soon as it has none, so ten thousand idle streams hold no buffer at all and a busy one reuses
//! the same few. A chunk read into one is handed to the session as a slice of it, without a
//! copy; the buffer is reused once the session has framed every chunk of it.
//!
//! Splices between two plain connections use weft-api's pool of fixed buffers
//! ([`weft_api::io::pool`]) instead: nothing holds their bytes after a write.

use std::sync::{Mutex, PoisonError};

use bytes::BytesMut;

/// The capacity of one buffer: a read this large fills two data frames.
pub(crate) const CAPACITY: usize = 64 * 1024;

/// The most buffers kept for reuse (4 MiB).
const KEPT: usize = 64;

static POOL: Mutex<Vec<BytesMut>> = Mutex::new(Vec::new());

/// A buffer with room for at least a quarter of [`CAPACITY`].
pub(crate) fn take() -> BytesMut {
    let kept = POOL.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let mut buf = kept.unwrap_or_default();
    if buf.capacity() - buf.len() < CAPACITY / 4 {
        // Reuses the allocation when no chunk of it is still queued, else allocates anew.
        buf.reserve(CAPACITY);
    }
    buf
}

/// Returns an empty buffer for reuse.
pub(crate) fn give_back(buf: BytesMut) {
    if !buf.is_empty() || buf.capacity() < CAPACITY / 4 {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if pool.len() < KEPT {
        pool.push(buf);
    }
}
