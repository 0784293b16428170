//! The embedded store's writer thread: it owns every write, commits queued transactions in
//! groups (one redb write transaction and one fsync for many, each at its own revision), keeps
//! the watch history bounded by compacting it, and publishes each revision's changes.

use std::path::Path;
use std::sync::{Arc, mpsc};

use redb::{Database, ReadableTable};
use tokio::sync::broadcast;

use super::codec::{Entry, encode_events, event_count};
use super::{
    Answer, Body, EVENTS, EmbeddedOptions, Failure, KV, META, Meta, Request, read_entry, read_meta,
    write_meta,
};
use crate::{KeyValue, Op, Revision, StoreError, Txn, TxnOutcome, WatchBatch, WatchEvent};

/// How many queued writes one commit takes at most.
const MAX_GROUP: usize = 256;
/// What [`apply_txn`] did.
#[derive(Debug)]
struct Applied {
    /// Whether every comparison held.
    succeeded: bool,
    /// The changes made, at the new revision; `None` when nothing changed.
    batch: Option<WatchBatch>,
}

/// The writer thread: commits queued writes in groups until every handle is gone.
pub(super) fn run_writer(
    db: &Database,
    queue: &mpsc::Receiver<Request>,
    changes: &broadcast::Sender<Arc<WatchBatch>>,
    options: EmbeddedOptions,
    path: &Path,
) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        let bodies: Vec<&Body> = group.iter().map(|r| &r.body).collect();
        match commit_group(db, &bodies, options) {
            Ok((answers, batches)) => {
                for batch in batches {
                    // No receiver just means no one watches.
                    let _ = changes.send(batch);
                }
                for (request, answer) in group.into_iter().zip(answers) {
                    let _ = request.reply.send(answer);
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for request in group {
                    let _ = request.reply.send(Err(StoreError::Embedded {
                        path: path.to_owned(),
                        source: e.clone(),
                    }));
                }
            }
        }
    }
}

type GroupResult = (Vec<Result<Answer, StoreError>>, Vec<Arc<WatchBatch>>);

/// Applies every write of a group in one redb transaction, each at its own revision.
fn commit_group(
    db: &Database,
    bodies: &[&Body],
    options: EmbeddedOptions,
) -> Result<GroupResult, redb::Error> {
    let wtx = db.begin_write()?;
    let mut answers = Vec::with_capacity(bodies.len());
    let mut batches = Vec::new();
    {
        let mut kv = wtx.open_table(KV)?;
        let mut log = wtx.open_table(EVENTS)?;
        let mut meta_table = wtx.open_table(META)?;
        let mut meta = read_meta(&meta_table).map_err(storage_only)?;
        for body in bodies {
            let applied = match body {
                Body::Txn(txn) => apply_txn(&mut kv, &mut log, &mut meta, txn).map(|applied| {
                    let outcome = TxnOutcome {
                        succeeded: applied.succeeded,
                        revision: meta.revision,
                    };
                    batches.extend(applied.batch.map(Arc::new));
                    Answer::Txn(outcome)
                }),
                Body::Compact(revision) => {
                    compact(&mut log, &mut meta, *revision).map(|()| Answer::Compacted)
                }
            };
            answers.push(match applied {
                Ok(answer) => Ok(answer),
                Err(Failure::Refused(e)) => Err(e),
                Err(Failure::Storage(e)) => return Err(e),
            });
        }
        trim(&mut log, &mut meta, options.max_events).map_err(storage_only)?;
        write_meta(&mut meta_table, meta).map_err(storage_only)?;
    }
    wtx.commit()?;
    Ok((answers, batches))
}

/// A failure where only a storage error is possible: a refusal there is a corrupt counter.
fn storage_only(f: Failure) -> redb::Error {
    match f {
        Failure::Storage(e) => e,
        Failure::Refused(e) => redb::Error::Corrupted(e.to_string()),
    }
}

/// Applies one transaction at the next revision.
///
/// Everything that can refuse the transaction is checked before the first write, so a refusal
/// leaves nothing of it behind.
fn apply_txn(
    kv: &mut redb::Table<'_, &'static str, &'static [u8]>,
    log: &mut redb::Table<'_, u64, &'static [u8]>,
    meta: &mut Meta,
    txn: &Txn,
) -> Result<Applied, Failure> {
    for compare in &txn.compares {
        let current = read_entry(kv, compare.key())?.map(|e| e.mod_revision);
        if !compare.holds(current) {
            return Ok(Applied {
                succeeded: false,
                batch: None,
            });
        }
    }
    let existing = txn
        .ops
        .iter()
        .map(|op| read_entry(kv, op.key()))
        .collect::<Result<Vec<_>, _>>()?;
    let revision = meta.revision.next();
    let mut events = Vec::with_capacity(txn.ops.len());
    for (op, old) in txn.ops.iter().zip(existing) {
        match op {
            Op::Put { key, value } => {
                let create_revision = old.map_or(revision, |e| e.create_revision);
                let entry = Entry::encode(create_revision, revision, value);
                kv.insert(key.as_str(), entry.as_slice())?;
                events.push(WatchEvent::Put(KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision,
                    mod_revision: revision,
                }));
            }
            Op::Delete { key } => {
                if old.is_some() {
                    kv.remove(key.as_str())?;
                    events.push(WatchEvent::Delete {
                        key: key.clone(),
                        revision,
                    });
                }
            }
        }
    }
    if events.is_empty() {
        return Ok(Applied {
            succeeded: true,
            batch: None,
        });
    }
    log.insert(revision.get(), encode_events(&events).as_slice())?;
    meta.revision = revision;
    meta.events += events.len() as u64;
    Ok(Applied {
        succeeded: true,
        batch: Some(WatchBatch { revision, events }),
    })
}

/// Drops the history before `revision`.
fn compact(
    log: &mut redb::Table<'_, u64, &'static [u8]>,
    meta: &mut Meta,
    revision: Revision,
) -> Result<(), Failure> {
    if revision > meta.revision {
        return Err(StoreError::FutureRevision {
            revision,
            current: meta.revision,
        }
        .into());
    }
    while let Some(first) = first_revision(log)? {
        if first >= revision.get() {
            break;
        }
        drop_revision(log, meta, first)?;
    }
    meta.oldest = meta.oldest.max(revision);
    Ok(())
}

/// Drops the oldest revisions until at most `max_events` events remain, keeping the newest
/// revision whatever its size.
fn trim(
    log: &mut redb::Table<'_, u64, &'static [u8]>,
    meta: &mut Meta,
    max_events: u64,
) -> Result<(), Failure> {
    while meta.events > max_events {
        match first_revision(log)? {
            Some(first) if first < meta.revision.get() => {
                drop_revision(log, meta, first)?;
                meta.oldest = meta.oldest.max(Revision(first + 1));
            }
            _ => break,
        }
    }
    Ok(())
}

fn first_revision(log: &redb::Table<'_, u64, &'static [u8]>) -> Result<Option<u64>, Failure> {
    Ok(log.first()?.map(|(revision, _)| revision.value()))
}

fn drop_revision(
    log: &mut redb::Table<'_, u64, &'static [u8]>,
    meta: &mut Meta,
    revision: u64,
) -> Result<(), Failure> {
    if let Some(row) = log.remove(revision)? {
        meta.events = meta.events.saturating_sub(event_count(row.value()));
    }
    Ok(())
}
