//! A watch on the embedded store: the history read from the file, then the live changes from
//! the writer's broadcast channel, falling back to the file when the channel lags, so a
//! watcher neither misses nor repeats a change.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::EmbeddedStore;
use crate::{Revision, StoreError, WatchBatch, WatchEvent};

#[cfg(test)]
mod tests;

pub(super) struct EmbeddedWatch {
    pub(super) store: EmbeddedStore,
    pub(super) changes: broadcast::Receiver<Arc<WatchBatch>>,
    pub(super) prefix: String,
    /// Every matching change up to this revision has been yielded or queued in `pending`.
    pub(super) last: Revision,
    pub(super) pending: VecDeque<WatchBatch>,
    /// Following the broadcast channel (else reading the history).
    pub(super) live: bool,
    pub(super) done: bool,
}

// === impl EmbeddedWatch ===

impl EmbeddedWatch {
    pub(super) async fn next(&mut self) -> Option<Result<WatchBatch, StoreError>> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Some(Ok(batch));
            }
            if self.done {
                return None;
            }
            if !self.live {
                // The channel was subscribed before this read, so every revision after what
                // the read sees is in the channel (or the channel reports a lag).
                match self.store.history(self.prefix.clone(), self.last).await {
                    Ok(history) => {
                        self.pending.extend(history.batches);
                        self.last = self.last.max(history.through);
                        self.live = history.complete;
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                continue;
            }
            match self.changes.recv().await {
                Ok(batch) if batch.revision <= self.last => {}
                Ok(batch) if batch.revision != self.last.next() => {
                    // Never expected: read the gap from the file rather than skip it.
                    self.live = false;
                }
                Ok(batch) => {
                    self.last = batch.revision;
                    if let Some(batch) = filter(&batch, &self.prefix) {
                        self.pending.push_back(batch);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.live = false,
                Err(broadcast::error::RecvError::Closed) => self.done = true,
            }
        }
    }
}

/// The events of `batch` under `prefix`, if any.
pub(super) fn filter(batch: &WatchBatch, prefix: &str) -> Option<WatchBatch> {
    let events: Vec<WatchEvent> = batch
        .events
        .iter()
        .filter(|e| e.key().starts_with(prefix))
        .cloned()
        .collect();
    (!events.is_empty()).then_some(WatchBatch {
        revision: batch.revision,
        events,
    })
}
