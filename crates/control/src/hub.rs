//! The lease fan-out: one store watch per server, shared by every agent's lease watch.
//!
//! The hub keeps every lease in memory with the store revision it is current at, and a ring of
//! the latest events. An agent watching from revision `r` gets the ring's events after `r`,
//! then every new one as it happens, then a bookmark whenever nothing happened for a while.
//! If `r` is older than the ring, the agent is told to list again ([`LeaseEvent::Compacted`]).
//! 5,000 agents cost 5,000 channel receivers, not 5,000 store watches, and each event is
//! encoded once ([`HubEvent::line`]), not once per agent.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::broadcast;
use weft_api::protocol::{LeaseEvent, LeaseSnapshot};
use weft_fabric::Lease;
use weft_store::{Event, Revision, Store, StoreError};

use crate::metrics::{ControlMetrics, count};

/// How many recent events the hub keeps for agents that reconnect.
pub const RING_EVENTS: usize = 16_384;

/// The shared lease cache and event feed of one server.
#[derive(Clone)]
pub struct LeaseHub {
    state: Arc<Mutex<HubState>>,
    feed: broadcast::Sender<Arc<HubEvent>>,
    metrics: ControlMetrics,
}

struct HubState {
    leases: BTreeMap<String, Lease>,
    revision: u64,
    ring: VecDeque<Arc<HubEvent>>,
    /// Agents may watch from any revision at or after this one.
    oldest: u64,
}

/// A lease event as the hub publishes it.
#[derive(Debug)]
pub struct HubEvent {
    /// The event.
    pub event: LeaseEvent,
    /// The event as one JSON line of a watch, encoded once for every watcher.
    pub line: Bytes,
    /// When the hub received it from the store.
    pub published: Instant,
}

/// What a new watcher starts with.
pub struct Subscription {
    /// Events after the watcher's revision that happened already.
    pub backlog: Vec<Arc<HubEvent>>,
    /// Every later event.
    pub feed: broadcast::Receiver<Arc<HubEvent>>,
    /// The revision the backlog ends at.
    pub revision: u64,
}

// === impl LeaseHub ===

impl LeaseHub {
    /// Lists every lease and starts following the store, keeping `metrics`' lease gauges.
    pub async fn start(store: Store, metrics: ControlMetrics) -> Result<LeaseHub, StoreError> {
        let listed = store.list_leases().await?;
        let leases = listed
            .items
            .into_iter()
            .map(|v| (v.value.node_name.clone(), v.value))
            .collect();
        let revision = listed.revision.get();
        let (feed, _) = broadcast::channel(RING_EVENTS);
        let hub = LeaseHub {
            state: Arc::new(Mutex::new(HubState {
                leases,
                revision,
                ring: VecDeque::new(),
                oldest: revision,
            })),
            feed,
            metrics,
        };
        hub.update_gauges(&hub.lock());
        tokio::spawn(hub.clone().follow(store));
        Ok(hub)
    }

    /// Every lease now.
    pub fn snapshot(&self) -> LeaseSnapshot {
        let state = self.lock();
        LeaseSnapshot {
            revision: state.revision,
            leases: state.leases.values().cloned().collect(),
        }
    }

    /// The metrics the hub and the API keep.
    pub fn metrics(&self) -> &ControlMetrics {
        &self.metrics
    }

    /// How many leases there are.
    pub fn len(&self) -> usize {
        self.lock().leases.len()
    }

    /// Whether there are no leases.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The revision the hub is current at.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// Subscribes from after `from`, or returns the oldest revision one can watch from.
    pub fn subscribe(&self, from: u64) -> Result<Subscription, u64> {
        self.subscribe_within(from, 0)
    }

    /// As [`LeaseHub::subscribe`], but also accepts a `from` ahead of the hub, up to
    /// `store_revision`, a revision the store is known to have reached.
    ///
    /// Such a `from` comes from another server (an agent failing over): that server had seen
    /// every lease change up to it, and this hub, following the same store, will deliver those
    /// changes again, so the watch skips everything up to `from`.
    pub fn subscribe_within(&self, from: u64, store_revision: u64) -> Result<Subscription, u64> {
        let state = self.lock();
        if from < state.oldest || from > state.revision.max(store_revision) {
            return Err(state.oldest);
        }
        // Subscribing under the lock: no event can slip between the backlog and the feed.
        let feed = self.feed.subscribe();
        let backlog = state
            .ring
            .iter()
            .filter(|e| e.event.revision() > from)
            .cloned()
            .collect();
        Ok(Subscription {
            backlog,
            feed,
            revision: state.revision.max(from),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follows the store forever, re-listing after compaction and retrying after errors.
    async fn follow(self, store: Store) {
        loop {
            let from = self.revision();
            let mut watch = store.watch_leases(Revision(from));
            while let Some(batch) = watch.next().await {
                match batch {
                    Ok(batch) => {
                        for event in batch.events {
                            self.apply(event);
                        }
                        self.advance(batch.revision.get());
                    }
                    Err(StoreError::Compacted { .. }) => {
                        if let Err(e) = self.relist(&store).await {
                            tracing::warn!(error = %e, "re-listing leases failed");
                        }
                        break;
                    }
                    Err(StoreError::Corrupt { .. }) => {
                        // Reported by the store with the key; the other events still count.
                        tracing::warn!("a lease in the store is damaged and was skipped");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "lease watch failed; resuming");
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn apply(&self, event: Event<Lease>) {
        let mut state = self.lock();
        let event = match event {
            Event::Put {
                value, revision, ..
            } => {
                state.leases.insert(value.node_name.clone(), value.clone());
                LeaseEvent::Put {
                    revision: revision.get(),
                    lease: value,
                }
            }
            Event::Delete { name, revision } => {
                if state.leases.remove(&name).is_none() {
                    return;
                }
                LeaseEvent::Delete {
                    revision: revision.get(),
                    node_name: name,
                }
            }
        };
        state.revision = state.revision.max(event.revision());
        self.publish(&mut state, event);
    }

    fn advance(&self, revision: u64) {
        let mut state = self.lock();
        state.revision = state.revision.max(revision);
        self.update_gauges(&state);
    }

    fn publish(&self, state: &mut HubState, event: LeaseEvent) {
        let event = Arc::new(HubEvent {
            line: event_line(&event),
            event,
            published: Instant::now(),
        });
        if state.ring.len() == RING_EVENTS
            && let Some(old) = state.ring.pop_front()
        {
            state.oldest = old.event.revision();
        }
        state.ring.push_back(event.clone());
        self.update_gauges(state);
        // No receivers is fine: nobody watches yet.
        let _ = self.feed.send(event);
    }

    fn update_gauges(&self, state: &HubState) {
        self.metrics.leases.set(count(state.leases.len()));
        self.metrics
            .hub_revision
            .set(i64::try_from(state.revision).unwrap_or(i64::MAX));
    }

    /// After compaction: lists again and turns the difference into events.
    async fn relist(&self, store: &Store) -> Result<(), StoreError> {
        let listed = store.list_leases().await?;
        let revision = listed.revision.get();
        let fresh: BTreeMap<String, Lease> = listed
            .items
            .into_iter()
            .map(|v| (v.value.node_name.clone(), v.value))
            .collect();
        let mut state = self.lock();
        let gone: Vec<String> = state
            .leases
            .keys()
            .filter(|k| !fresh.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            state.leases.remove(&name);
            self.publish(
                &mut state,
                LeaseEvent::Delete {
                    revision,
                    node_name: name,
                },
            );
        }
        for (name, lease) in fresh {
            if state.leases.get(&name) != Some(&lease) {
                state.leases.insert(name, lease.clone());
                self.publish(&mut state, LeaseEvent::Put { revision, lease });
            }
        }
        state.revision = state.revision.max(revision);
        self.update_gauges(&state);
        Ok(())
    }
}

/// One JSON line of a lease watch.
pub(crate) fn event_line(event: &LeaseEvent) -> Bytes {
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}
