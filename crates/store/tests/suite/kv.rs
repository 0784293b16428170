//! The key-value contract both back ends share: revisions, compare-and-swap, watch resume and
//! compaction.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use weft_store::{Compare, Kv, Revision, StoreError, Txn, WatchBatch, WatchEvent, WatchStream};

use crate::both_backends;
use crate::harness::Backend;

both_backends!(
    revisions_and_listing,
    compare_and_swap,
    concurrent_compare_and_swap_is_atomic,
    watch_replays_and_follows_without_gaps,
    watch_resumes_after_restart,
    compaction_is_reported,
);

/// Puts `value` at `key` unconditionally; returns the new revision.
pub(crate) async fn put(kv: &dyn Kv, key: &str, value: &str) -> Revision {
    let outcome = kv
        .txn(Txn::new().put(key, value))
        .await
        .expect("put succeeds");
    assert!(outcome.succeeded);
    outcome.revision
}

/// Deletes `key` unconditionally; returns the revision after it.
pub(crate) async fn delete(kv: &dyn Kv, key: &str) -> Revision {
    kv.txn(Txn::new().delete(key))
        .await
        .expect("delete succeeds")
        .revision
}

/// Reads batches until one at `until` or later arrives.
pub(crate) async fn collect_until(stream: &mut WatchStream, until: Revision) -> Vec<WatchBatch> {
    let mut batches: Vec<WatchBatch> = Vec::new();
    while batches.last().is_none_or(|b| b.revision < until) {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("no batch up to revision {until} within 10 s: {batches:?}"))
            .expect("the watch does not end");
        batches.push(item.expect("the watch yields no error"));
    }
    batches
}

/// The (key, revision, is-delete) of every event, for comparing sequences.
fn shape(batches: &[WatchBatch]) -> Vec<(String, u64, bool)> {
    batches
        .iter()
        .flat_map(|b| {
            assert!(!b.events.is_empty(), "a batch is never empty");
            b.events.iter().map(move |e| {
                assert_eq!(
                    e.revision(),
                    b.revision,
                    "every event has its batch's revision"
                );
                (
                    e.key().to_owned(),
                    e.revision().get(),
                    matches!(e, WatchEvent::Delete { .. }),
                )
            })
        })
        .collect()
}

async fn revisions_and_listing(backend: Backend) {
    let kv = backend.kv().await;
    let start = kv.revision().await.unwrap();

    let r1 = put(&*kv, "/weft/t/a", "1").await;
    assert_eq!(r1, start.next());
    let r2 = put(&*kv, "/weft/t/b", "2").await;
    assert_eq!(r2, r1.next());
    let r3 = put(&*kv, "/weft/t/a", "3").await;
    put(&*kv, "/weft/u/c", "other prefix").await;

    let a = kv.get("/weft/t/a").await.unwrap().expect("a exists");
    assert_eq!(a.value, b"3");
    assert_eq!(a.create_revision, r1, "an update keeps the create revision");
    assert_eq!(a.mod_revision, r3);
    assert_eq!(kv.get("/weft/t/missing").await.unwrap(), None);

    let listing = kv.list("/weft/t/").await.unwrap();
    let keys: Vec<&str> = listing.items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["/weft/t/a", "/weft/t/b"]);
    assert_eq!(listing.revision, kv.revision().await.unwrap());

    // Several operations share one revision.
    let multi = kv
        .txn(
            Txn::new()
                .put("/weft/t/x", "x")
                .put("/weft/t/y", "y")
                .delete("/weft/t/b"),
        )
        .await
        .unwrap();
    assert!(multi.succeeded);
    assert_eq!(multi.revision, listing.revision.next());
    let x = kv.get("/weft/t/x").await.unwrap().unwrap();
    assert_eq!(
        (x.create_revision, x.mod_revision),
        (multi.revision, multi.revision)
    );
    assert_eq!(kv.get("/weft/t/b").await.unwrap(), None);

    // A transaction that changes nothing does not advance the revision.
    assert_eq!(delete(&*kv, "/weft/t/missing").await, multi.revision);
    assert_eq!(kv.revision().await.unwrap(), multi.revision);

    // Many keys list in order, across etcd's pages.
    let mut txn = Txn::new();
    for i in 0..1200 {
        txn = txn.put(format!("/weft/many/{i:05}"), "v");
    }
    // etcd refuses more than 128 operations per transaction: write in chunks.
    for chunk in txn.ops.chunks(100) {
        let chunk = Txn {
            compares: Vec::new(),
            ops: chunk.to_vec(),
        };
        assert!(kv.txn(chunk).await.unwrap().succeeded);
    }
    let many = kv.list("/weft/many/").await.unwrap();
    assert_eq!(many.items.len(), 1200);
    assert!(many.items.windows(2).all(|w| w[0].key < w[1].key));
}

async fn compare_and_swap(backend: Backend) {
    let kv = backend.kv().await;

    // Absent: only the first create wins.
    let create = || {
        Txn::new()
            .when(Compare::absent("/weft/t/k"))
            .put("/weft/t/k", "first")
    };
    let first = kv.txn(create()).await.unwrap();
    assert!(first.succeeded);
    let second = kv.txn(create()).await.unwrap();
    assert!(!second.succeeded);
    assert_eq!(
        second.revision, first.revision,
        "a failed txn reports the current revision"
    );
    assert_eq!(kv.get("/weft/t/k").await.unwrap().unwrap().value, b"first");

    // Mod revision: a stale revision loses, the current one wins.
    let stale = Txn::new()
        .when(Compare::mod_revision(
            "/weft/t/k",
            Revision(first.revision.get() - 1),
        ))
        .put("/weft/t/k", "stale");
    assert!(!kv.txn(stale).await.unwrap().succeeded);
    let current = Txn::new()
        .when(Compare::mod_revision("/weft/t/k", first.revision))
        .put("/weft/t/k", "second");
    let updated = kv.txn(current.clone()).await.unwrap();
    assert!(updated.succeeded);
    assert!(
        !kv.txn(current).await.unwrap().succeeded,
        "the same swap twice wins once"
    );

    // Mod revision 0 means absent, as in etcd.
    let zero = Txn::new()
        .when(Compare::mod_revision("/weft/t/new", Revision::ZERO))
        .put("/weft/t/new", "v");
    assert!(kv.txn(zero.clone()).await.unwrap().succeeded);
    assert!(!kv.txn(zero).await.unwrap().succeeded);

    // All comparisons must hold; a failed txn writes nothing.
    let mixed = Txn::new()
        .when(Compare::absent("/weft/t/other"))
        .when(Compare::absent("/weft/t/k"))
        .put("/weft/t/other", "v")
        .put("/weft/t/k", "mixed");
    assert!(!kv.txn(mixed).await.unwrap().succeeded);
    assert_eq!(kv.get("/weft/t/other").await.unwrap(), None);
    assert_eq!(kv.get("/weft/t/k").await.unwrap().unwrap().value, b"second");

    // One key twice in a transaction is refused by both back ends.
    let twice = Txn::new().put("/weft/t/k", "a").delete("/weft/t/k");
    assert!(matches!(
        kv.txn(twice).await,
        Err(StoreError::DuplicateKey { key }) if key == "/weft/t/k"
    ));
}

async fn concurrent_compare_and_swap_is_atomic(backend: Backend) {
    // Two handles, 40 increments racing through read-compare-swap loops.
    let handles = [backend.kv().await, backend.kv().await];
    put(&*handles[0], "/weft/t/counter", "0").await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let kv: Arc<dyn Kv> = handles[i % 2].clone();
            tokio::spawn(async move {
                loop {
                    let current = kv.get("/weft/t/counter").await.unwrap().unwrap();
                    let n: u64 = String::from_utf8(current.value).unwrap().parse().unwrap();
                    let txn = Txn::new()
                        .when(Compare::mod_revision(
                            "/weft/t/counter",
                            current.mod_revision,
                        ))
                        .put("/weft/t/counter", (n + 1).to_string());
                    if kv.txn(txn).await.unwrap().succeeded {
                        return;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let value = handles[1]
        .get("/weft/t/counter")
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(value, b"40");
}

async fn watch_replays_and_follows_without_gaps(backend: Backend) {
    let kv = backend.kv().await;
    let start = kv.revision().await.unwrap();
    put(&*kv, "/weft/w/a", "1").await;
    put(&*kv, "/weft/other/z", "not watched").await;
    let both = kv
        .txn(Txn::new().put("/weft/w/b", "2").put("/weft/w/c", "3"))
        .await
        .unwrap()
        .revision;
    let mid = delete(&*kv, "/weft/w/a").await;
    put(&*kv, "/weft/w/b", "4").await;

    // Replay from the start, then follow live writes.
    let mut all = kv.watch("/weft/w/", start);
    let live_writer = {
        let kv = backend.kv().await;
        tokio::spawn(async move {
            let mut last = Revision::ZERO;
            for i in 0..20 {
                last = put(&*kv, &format!("/weft/w/live{}", i % 3), &i.to_string()).await;
                put(&*kv, "/weft/other/z", "noise").await;
            }
            last
        })
    };
    let last = live_writer.await.unwrap();
    let batches = collect_until(&mut all, last).await;
    let events = shape(&batches);
    assert_eq!(events.len(), 5 + 20, "{events:?}");
    assert_eq!(
        events[..5],
        [
            ("/weft/w/a".to_owned(), start.get() + 1, false),
            ("/weft/w/b".to_owned(), both.get(), false),
            ("/weft/w/c".to_owned(), both.get(), false),
            ("/weft/w/a".to_owned(), mid.get(), true),
            ("/weft/w/b".to_owned(), mid.get() + 1, false),
        ]
    );
    assert!(batches.windows(2).all(|w| w[0].revision < w[1].revision));
    assert!(events.iter().all(|(k, ..)| k.starts_with("/weft/w/")));
    assert_eq!(batches[1].events.len(), 2, "one batch per revision");

    // From any revision: exactly the events after it.
    let mut from_mid = kv.watch("/weft/w/", mid);
    let tail = shape(&collect_until(&mut from_mid, last).await);
    let expected: Vec<_> = events.iter().filter(|e| e.1 > mid.get()).cloned().collect();
    assert_eq!(tail, expected);

    // Resume: stop after a few batches, write while nobody watches, resume from the last
    // batch seen. Together they are the whole sequence, with no gap and no repeat.
    let mut first_part = kv.watch("/weft/w/", start);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(first_part.next().await.unwrap().unwrap());
    }
    drop(first_part);
    let mut last = last;
    for i in 0..5 {
        last = put(&*kv, "/weft/w/offline", &i.to_string()).await;
    }
    let mut resumed = kv.watch("/weft/w/", seen.last().unwrap().revision);
    seen.extend(collect_until(&mut resumed, last).await);
    let mut full = kv.watch("/weft/w/", start);
    assert_eq!(shape(&seen), shape(&collect_until(&mut full, last).await));
}

async fn watch_resumes_after_restart(mut backend: Backend) {
    let kv = backend.kv().await;
    let start = kv.revision().await.unwrap();
    let mut revision = start;
    for i in 0..5 {
        revision = put(&*kv, &format!("/weft/r/{i}"), "before").await;
    }
    let mut watch = kv.watch("/weft/r/", start);
    let mut seen = collect_until(&mut watch, revision).await;
    let resume_from = seen.last().unwrap().revision;

    // Writes the watcher misses, then a restart: etcd is killed and started again; the
    // embedded file is closed (every handle and stream dropped) and opened again.
    for i in 0..3 {
        put(&*kv, &format!("/weft/r/missed{i}"), "while away").await;
    }
    drop(watch);
    drop(kv);
    backend.restart().await;

    let kv = backend.kv().await;
    let mut last = Revision::ZERO;
    for i in 0..3 {
        last = put(&*kv, &format!("/weft/r/after{i}"), "after").await;
    }
    let mut resumed = kv.watch("/weft/r/", resume_from);
    seen.extend(collect_until(&mut resumed, last).await);

    let keys: Vec<String> = shape(&seen).into_iter().map(|e| e.0).collect();
    let expected: Vec<String> = (0..5)
        .map(|i| format!("/weft/r/{i}"))
        .chain((0..3).map(|i| format!("/weft/r/missed{i}")))
        .chain((0..3).map(|i| format!("/weft/r/after{i}")))
        .collect();
    assert_eq!(keys, expected, "{} resumes exactly", backend.name());
    assert_eq!(
        kv.get("/weft/r/0").await.unwrap().unwrap().value,
        b"before",
        "data survives the restart"
    );
}

async fn compaction_is_reported(backend: Backend) {
    let kv = backend.kv().await;
    let start = kv.revision().await.unwrap();
    let mut revisions = Vec::new();
    for i in 0..10 {
        revisions.push(put(&*kv, "/weft/c/key", &i.to_string()).await);
    }
    let compact_at = revisions[5];
    kv.compact(compact_at).await.unwrap();
    kv.compact(compact_at)
        .await
        .expect("compacting again does nothing");
    kv.compact(revisions[2])
        .await
        .expect("compacting below does nothing");

    // Too old: the history after `start` is gone.
    let mut too_old = kv.watch("/weft/c/", start);
    match too_old.next().await {
        Some(Err(StoreError::Compacted { oldest })) => assert_eq!(oldest, compact_at),
        other => panic!("expected a compaction error, got {other:?}"),
    }
    assert!(
        too_old.next().await.is_none(),
        "the stream ends after an error"
    );

    // The oldest resumable revision is one before the compaction point.
    let mut fine = kv.watch("/weft/c/", Revision(compact_at.get() - 1));
    let batches = collect_until(&mut fine, *revisions.last().unwrap()).await;
    let got: Vec<u64> = batches.iter().map(|b| b.revision.get()).collect();
    let expected: Vec<u64> = revisions[5..].iter().map(|r| r.get()).collect();
    assert_eq!(got, expected);

    // The future can't be compacted.
    let future = Revision(revisions.last().unwrap().get() + 100);
    assert!(matches!(
        kv.compact(future).await,
        Err(StoreError::FutureRevision { revision, .. }) if revision == future
    ));
}
