//! The embedded store against a model of etcd's semantics, on random transactions: every
//! outcome, the final contents and the whole watch history must match the model.

use std::collections::BTreeMap;

use futures::StreamExt;
use proptest::prelude::*;
use weft_store::{Compare, EmbeddedOptions, EmbeddedStore, Kv, Revision, Txn, WatchEvent};

use crate::kv::collect_until;

const KEYS: &[&str] = &[
    "/weft/m/a",
    "/weft/m/b",
    "/weft/m/c",
    "/weft/m/d",
    "/weft/n/x",
];

/// A transaction in terms of key indices, made concrete against the model's state.
#[derive(Debug, Clone)]
struct Step {
    /// (key, kind): 0 absent, 1 current mod revision, 2 a stale one.
    compares: Vec<(usize, u8)>,
    /// (key, value): `None` deletes.
    ops: Vec<(usize, Option<u8>)>,
}

#[derive(Debug, Default)]
struct Model {
    revision: u64,
    /// key → (value, create revision, mod revision)
    keys: BTreeMap<String, (Vec<u8>, u64, u64)>,
    /// (revision, key, value or delete)
    events: Vec<(u64, String, Option<Vec<u8>>)>,
}

impl Model {
    fn txn(&self, step: &Step) -> Txn {
        let mut txn = Txn::new();
        for &(key, kind) in &step.compares {
            let key = KEYS[key];
            let current = self.keys.get(key).map_or(0, |e| e.2);
            txn = txn.when(match kind {
                0 => Compare::absent(key),
                1 => Compare::mod_revision(key, Revision(current)),
                _ => Compare::mod_revision(key, Revision(current + 1)),
            });
        }
        let mut seen = Vec::new();
        for &(key, value) in &step.ops {
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            txn = match value {
                Some(v) => txn.put(KEYS[key], vec![v]),
                None => txn.delete(KEYS[key]),
            };
        }
        txn
    }

    /// Applies `txn` as etcd would; returns (succeeded, revision).
    fn apply(&mut self, txn: &Txn) -> (bool, u64) {
        let holds = txn.compares.iter().all(|c| {
            let current = self.keys.get(c.key()).map(|e| Revision(e.2));
            c.holds(current)
        });
        if !holds {
            return (false, self.revision);
        }
        let next = self.revision + 1;
        let mut changed = false;
        for op in &txn.ops {
            match op {
                weft_store::Op::Put { key, value } => {
                    let create = self.keys.get(key).map_or(next, |e| e.1);
                    self.keys.insert(key.clone(), (value.clone(), create, next));
                    self.events.push((next, key.clone(), Some(value.clone())));
                    changed = true;
                }
                weft_store::Op::Delete { key } => {
                    if self.keys.remove(key).is_some() {
                        self.events.push((next, key.clone(), None));
                        changed = true;
                    }
                }
            }
        }
        if changed {
            self.revision = next;
        }
        (true, self.revision)
    }
}

fn step() -> impl Strategy<Value = Step> {
    let compare = (0..KEYS.len(), 0u8..3);
    let op = (0..KEYS.len(), proptest::option::weighted(0.7, any::<u8>()));
    (
        proptest::collection::vec(compare, 0..3),
        proptest::collection::vec(op, 1..4),
    )
        .prop_map(|(compares, ops)| Step { compares, ops })
}

fn events_of(batches: &[weft_store::WatchBatch]) -> Vec<(u64, String, Option<Vec<u8>>)> {
    batches
        .iter()
        .flat_map(|b| &b.events)
        .map(|e| match e {
            WatchEvent::Put(kv) => (
                kv.mod_revision.get(),
                kv.key.clone(),
                Some(kv.value.clone()),
            ),
            WatchEvent::Delete { key, revision } => (revision.get(), key.clone(), None),
        })
        .collect()
}

async fn check(steps: Vec<Step>, watch_from: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_file(dir.path().join("state.redb"), EmbeddedOptions::default())
        .await
        .unwrap();
    let mut model = Model::default();
    for step in &steps {
        let txn = model.txn(step);
        let expected = model.apply(&txn);
        let outcome = store.txn(txn.clone()).await.unwrap();
        assert_eq!(
            (outcome.succeeded, outcome.revision.get()),
            expected,
            "{txn:?}"
        );
    }

    let listing = store.list("/weft/m/").await.unwrap();
    let stored: Vec<_> = listing
        .items
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                (
                    kv.value.clone(),
                    kv.create_revision.get(),
                    kv.mod_revision.get(),
                ),
            )
        })
        .collect();
    let modelled: Vec<_> = model
        .keys
        .iter()
        .filter(|(k, _)| k.starts_with("/weft/m/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(stored, modelled);
    assert_eq!(listing.revision.get(), model.revision);

    // The watch history from any revision is the model's, under the prefix.
    let from = (watch_from as u64) % (model.revision + 1);
    let expected: Vec<_> = model
        .events
        .iter()
        .filter(|e| e.0 > from && e.1.starts_with("/weft/m/"))
        .cloned()
        .collect();
    let Some(last) = expected.last().map(|e| e.0) else {
        return;
    };
    let mut watch = store.watch("/weft/m/", Revision(from));
    let batches = collect_until(&mut watch, Revision(last)).await;
    assert_eq!(events_of(&batches), expected);
    assert!(batches.windows(2).all(|w| w[0].revision < w[1].revision));
    drop(watch);
    // Nothing more arrives for this prefix.
    let mut again = store.watch("/weft/m/", Revision(last));
    let more = tokio::time::timeout(std::time::Duration::from_millis(20), again.next()).await;
    assert!(more.is_err(), "no event after the last one: {more:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn embedded_matches_the_model(steps in proptest::collection::vec(step(), 1..25), watch_from in 0usize..30) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(check(steps, watch_from));
    }
}
