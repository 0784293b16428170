//! The embedded store's on-disk encoding, pure bytes in and out: a stored key's revisions and
//! value ([`Entry`]), and a revision's changes as the watch history keeps them
//! ([`encode_events`], [`decode_events`]). Anything that does not decode is a
//! [`StoreError::Corrupt`] naming what was read, never a panic.

use crate::{KeyValue, Revision, StoreError, WatchEvent};

#[cfg(test)]
mod tests;

/// One stored key: its revisions and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) create_revision: Revision,
    pub(super) mod_revision: Revision,
    pub(super) value: Vec<u8>,
}

// === impl Entry ===

impl Entry {
    const HEADER: usize = 16;

    pub(super) fn encode(
        create_revision: Revision,
        mod_revision: Revision,
        value: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::HEADER + value.len());
        out.extend_from_slice(&create_revision.get().to_le_bytes());
        out.extend_from_slice(&mod_revision.get().to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    pub(super) fn decode(key: &str, bytes: &[u8]) -> Result<Entry, StoreError> {
        let mut r = Reader::new(bytes);
        let decoded = (|| {
            let create_revision = Revision(r.u64()?);
            let mod_revision = Revision(r.u64()?);
            Some(Entry {
                create_revision,
                mod_revision,
                value: r.rest().to_vec(),
            })
        })();
        decoded.ok_or_else(|| StoreError::Corrupt {
            key: key.to_owned(),
            what: "embedded store entry",
            reason: format!("{} bytes is shorter than its 16-byte header", bytes.len()),
        })
    }

    pub(super) fn into_key_value(self, key: String) -> KeyValue {
        KeyValue {
            key,
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

// --- Event log encoding ---
//
// One row per revision: u32 count, then per event a tag (0 put, 1 delete), u32 key length, the
// key, and for a put the u64 create revision, u32 value length and the value. Little-endian.

const TAG_PUT: u8 = 0;
const TAG_DELETE: u8 = 1;

pub(super) fn encode_events(events: &[WatchEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for event in events {
        let key = event.key().as_bytes();
        match event {
            WatchEvent::Put(_) => out.push(TAG_PUT),
            WatchEvent::Delete { .. } => out.push(TAG_DELETE),
        }
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        if let WatchEvent::Put(kv) = event {
            out.extend_from_slice(&kv.create_revision.get().to_le_bytes());
            out.extend_from_slice(&(kv.value.len() as u32).to_le_bytes());
            out.extend_from_slice(&kv.value);
        }
    }
    out
}

pub(super) fn decode_events(
    revision: Revision,
    bytes: &[u8],
) -> Result<Vec<WatchEvent>, StoreError> {
    let mut r = Reader::new(bytes);
    let decoded = (|| {
        let count = r.u32()?;
        let mut events = Vec::with_capacity(count.min(1024) as usize);
        for _ in 0..count {
            let tag = r.u8()?;
            let len = r.u32()? as usize;
            let key = String::from_utf8(r.bytes(len)?.to_vec()).ok()?;
            events.push(match tag {
                TAG_PUT => {
                    let create_revision = Revision(r.u64()?);
                    let len = r.u32()? as usize;
                    WatchEvent::Put(KeyValue {
                        key,
                        value: r.bytes(len)?.to_vec(),
                        create_revision,
                        mod_revision: revision,
                    })
                }
                TAG_DELETE => WatchEvent::Delete { key, revision },
                _ => return None,
            });
        }
        r.rest().is_empty().then_some(events)
    })();
    decoded.ok_or_else(|| StoreError::Corrupt {
        key: format!("event log revision {revision}"),
        what: "embedded watch history entry",
        reason: format!("{} bytes do not decode as a list of changes", bytes.len()),
    })
}

/// How many events a history row holds, from its first four bytes (0 when it is too short to
/// say: the count only bounds the history's size).
pub(super) fn event_count(bytes: &[u8]) -> u64 {
    Reader::new(bytes).u32().map_or(0, u64::from)
}

/// A cursor over bytes that returns `None` past the end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}
