//! What only the embedded store has: its file, its bounded history, handles shared in one
//! process, and group commit under many concurrent writers.

use std::time::Duration;

use futures::StreamExt;
use weft_store::{
    Compare, EmbeddedOptions, EmbeddedStore, Kv, Revision, StoreError, Txn, WatchEvent,
};

use crate::harness::embedded_path;
use crate::kv::{collect_until, put};

async fn open(path: &std::path::Path, max_events: u64) -> EmbeddedStore {
    EmbeddedStore::open_file(path, EmbeddedOptions { max_events })
        .await
        .expect("open the embedded store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_data_revision_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    assert_eq!(
        store.path(),
        embedded_path(&dir.path().canonicalize().unwrap())
    );
    let first = put(&store, "/weft/k/a", "1").await;
    let last = put(&store, "/weft/k/b", "2").await;
    store.txn(Txn::new().delete("/weft/k/a")).await.unwrap();
    let revision = store.revision().await.unwrap();
    drop(store);

    // A copy of the closed file is a fresh open from disk, whatever this process remembers.
    let copy = tempfile::tempdir().unwrap();
    let copied = copy.path().join("state.redb");
    std::fs::copy(embedded_path(dir.path()), &copied).unwrap();
    for path in [copied, embedded_path(dir.path())] {
        let store = open(&path, 100).await;
        assert_eq!(store.revision().await.unwrap(), revision);
        let b = store.get("/weft/k/b").await.unwrap().unwrap();
        assert_eq!((b.value.as_slice(), b.mod_revision), (&b"2"[..], last));
        assert_eq!(store.get("/weft/k/a").await.unwrap(), None);
        let mut watch = store.watch("/weft/k/", Revision::ZERO);
        let batches = collect_until(&mut watch, revision).await;
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[0].revision, first);
        assert!(matches!(batches[2].events[0], WatchEvent::Delete { .. }));
        // The revision goes on from where it was.
        assert_eq!(put(&store, "/weft/k/c", "3").await, revision.next());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&embedded_path(dir.path()), 10).await;
    let mut revisions = Vec::new();
    for i in 0..30 {
        revisions.push(put(&store, "/weft/h/key", &i.to_string()).await);
    }
    // Ten events are kept: the last ten revisions.
    let oldest = revisions[20];
    let mut old = store.watch("/weft/h/", Revision::ZERO);
    match old.next().await {
        Some(Err(StoreError::Compacted { oldest: o })) => assert_eq!(o, oldest),
        other => panic!("expected a compaction error, got {other:?}"),
    }
    let mut kept = store.watch("/weft/h/", Revision(oldest.get() - 1));
    let batches = collect_until(&mut kept, revisions[29]).await;
    assert_eq!(batches.len(), 10);
    // The data itself is all there.
    assert_eq!(
        store.get("/weft/h/key").await.unwrap().unwrap().value,
        b"29"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_opens_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = embedded_path(dir.path());
    let a = open(&path, 100).await;
    // Another spelling of the same path.
    let b = open(&dir.path().join("server/../server/state.redb"), 100).await;
    let mut watch = b.watch("/weft/s/", Revision::ZERO);
    let revision = put(&a, "/weft/s/x", "from a").await;
    assert_eq!(b.get("/weft/s/x").await.unwrap().unwrap().value, b"from a");
    let batches = collect_until(&mut watch, revision).await;
    assert_eq!(batches[0].events[0].key(), "/weft/s/x");
    let swap = Txn::new()
        .when(Compare::mod_revision("/weft/s/x", revision))
        .put("/weft/s/x", "from b");
    assert!(b.txn(swap.clone()).await.unwrap().succeeded);
    assert!(!a.txn(swap).await.unwrap().succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_catches_up_from_the_file() {
    // 6,000 writes, more than the broadcast channel holds, while a watcher does not read:
    // it falls behind the channel and reads the rest from the file, missing nothing.
    const WRITES: usize = 6_000;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&embedded_path(dir.path()), 100_000).await;
    let mut watch = store.watch("/weft/slow/", Revision::ZERO);
    // Start the watch and leave it waiting for live changes.
    let first = put(&store, "/weft/slow/first", "x").await;
    let head = collect_until(&mut watch, first).await;
    assert_eq!(head.len(), 1);

    // Many concurrent writers: the writer thread commits them in groups.
    let started = std::time::Instant::now();
    let revisions: Vec<Revision> = futures::stream::iter(0..WRITES)
        .map(|i| {
            let store = store.clone();
            async move { put(&store, &format!("/weft/slow/{}", i % 50), "v").await }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "{WRITES} writes took {took:?}"
    );

    let last = *revisions.iter().max().unwrap();
    let batches = collect_until(&mut watch, last).await;
    let got: Vec<u64> = batches.iter().map(|b| b.revision.get()).collect();
    let expected: Vec<u64> = (first.get() + 1..=last.get()).collect();
    assert_eq!(got, expected, "every revision once, in order");
}

/// The store file holds secrets (flannel-conf's pre-shared key among them): it is its owner's
/// alone, whatever the umask made it.
#[tokio::test]
async fn the_file_is_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let path = dir.path().join(weft_store::EMBEDDED_FILE);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    drop(store);
    assert_eq!(mode, 0o600);
}
