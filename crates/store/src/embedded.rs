//! The embedded back end: one redb file, `<data-dir>/server/state.redb`, with etcd's semantics.
//!
//! Why redb rather than SQLite: redb is pure Rust (no C library to build or link, nothing
//! `unsafe` of ours around a C API, one toolchain for every target), it is an ACID store with
//! copy-on-write B-trees, one file and crash safety by default, and a typed key-value table is
//! all this store needs: the queries are "get a key", "range over a prefix" and "read the event
//! log after a revision". SQL would add a query language, a schema and a C build for none of it.
//!
//! Layout inside the file: table `kv` maps each key to its create revision, mod revision and
//! value; table `events` maps each revision to the changes made at it (the watch history,
//! bounded by [`EmbeddedOptions::max_events`]); table `meta` holds the current revision, the
//! oldest revision still in the history and the number of events kept.
//!
//! Threads: one dedicated writer thread owns every write. It takes all queued transactions at
//! once and commits them in one redb write transaction (group commit: one fsync for many
//! transactions, each still at its own revision), then publishes each revision's changes on a
//! tokio broadcast channel for live watchers. Reads run on tokio's blocking pool, in redb read
//! transactions that never wait for the writer. A watcher reads the history from the file,
//! then follows the broadcast channel; when it falls behind the channel it reads the file
//! again, so it neither misses nor repeats a change.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak, mpsc};
use std::thread;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, oneshot};

use crate::{
    KeyValue, Kv, Listing, Revision, StoreError, Txn, TxnOutcome, WatchBatch, WatchStream,
};
use codec::{Entry, decode_events};
use watch::{EmbeddedWatch, filter};
use writer::run_writer;

mod codec;
mod watch;
mod writer;

/// The embedded store file, relative to `--data-dir`.
pub const EMBEDDED_FILE: &str = "server/state.redb";

/// The default number of watch history events the embedded store keeps.
pub const DEFAULT_MAX_EVENTS: u64 = 100_000;

/// Cluster state in one redb file: the default back end, with nothing to set up.
///
/// redb rather than SQLite: pure Rust (no C library to build, one toolchain for every target),
/// ACID with crash safety by default, one file, and a typed key-value table is all this store
/// needs. Needs a tokio runtime: reads run on its blocking pool, writes on one writer thread
/// that commits queued writes together (one fsync for many).
///
/// Handles are cheap to clone and share one database. Opening a file that is already open in
/// this process returns another handle to the same database, so two "servers" in one process
/// share it safely. A second process is refused ([`StoreError::InUse`]) by redb's file lock. The
/// file closes when the last handle and the last watch stream are dropped; dropping the last
/// one waits for the writer thread to finish the writes already queued.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

/// Settings of the embedded store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// How many events of watch history to keep. Older revisions are compacted away as new
    /// ones are written; a watch from before them gets [`StoreError::Compacted`].
    pub max_events: u64,
}

// === impl EmbeddedOptions ===

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            max_events: DEFAULT_MAX_EVENTS,
        }
    }
}

// === impl EmbeddedStore ===

impl EmbeddedStore {
    /// Opens (creating if needed) `<data_dir>/server/state.redb` with default options.
    pub async fn open(data_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        EmbeddedStore::open_file(data_dir.join(EMBEDDED_FILE), EmbeddedOptions::default()).await
    }

    /// Opens (creating if needed) the store file at `path`, and its directory.
    ///
    /// When the file is already open in this process, returns a handle to that database and
    /// ignores `options`.
    pub async fn open_file(
        path: impl Into<PathBuf>,
        options: EmbeddedOptions,
    ) -> Result<EmbeddedStore, StoreError> {
        let path = path.into();
        blocking(move || open_blocking(path, options)).await?
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` in a read transaction on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, Failure> + Send + 'static,
    {
        let db = self.inner.db.clone();
        let path = self.inner.path.clone();
        blocking(move || {
            let rtx = db.begin_read().map_err(Failure::from)?;
            f(&rtx)
        })
        .await?
        .map_err(|f| f.into_store_error(&path))
    }

    /// Queues a write for the writer thread and waits for its commit.
    async fn write(&self, body: Body) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .as_ref()
            .ok_or(StoreError::Stopped)?
            .send(Request { body, reply })
            .map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// Watch history after `after`: at most [`HISTORY_PAGE`] revisions.
    async fn history(&self, prefix: String, after: Revision) -> Result<History, StoreError> {
        self.read(move |rtx| read_history(rtx, &prefix, after))
            .await
    }
}

impl Kv for EmbeddedStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        let key = key.to_owned();
        Box::pin(self.read(move |rtx| {
            let table = rtx.open_table(KV)?;
            Ok(read_entry(&table, &key)?.map(|e| e.into_key_value(key)))
        }))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing, StoreError>> {
        let prefix = prefix.to_owned();
        Box::pin(self.read(move |rtx| {
            let table = rtx.open_table(KV)?;
            let meta = read_meta(&rtx.open_table(META)?)?;
            let mut items = Vec::new();
            for row in table.range(prefix.as_str()..)? {
                let (key, value) = row?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                items.push(Entry::decode(key, value.value())?.into_key_value(key.to_owned()));
            }
            Ok(Listing {
                items,
                revision: meta.revision,
            })
        }))
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome, StoreError>> {
        Box::pin(async move {
            txn.check()?;
            match self.write(Body::Txn(txn)).await? {
                Answer::Txn(outcome) => Ok(outcome),
                Answer::Compacted => unreachable!("the writer answers a txn with a txn outcome"),
            }
        })
    }

    fn watch(&self, prefix: &str, from: Revision) -> WatchStream {
        let watch = EmbeddedWatch {
            changes: self.inner.changes.subscribe(),
            store: self.clone(),
            prefix: prefix.to_owned(),
            last: from,
            pending: VecDeque::new(),
            live: false,
            done: false,
        };
        futures::stream::unfold(watch, |mut watch| async move {
            let item = watch.next().await?;
            Some((item, watch))
        })
        .boxed()
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(Body::Compact(revision)).await?;
            Ok(())
        })
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(self.read(|rtx| Ok(read_meta(&rtx.open_table(META)?)?.revision)))
    }
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

// --- Internals ---

/// The key-value table: key → create revision, mod revision, value.
const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv");
/// The watch history: revision → the changes made at it.
const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");
/// Counters: `revision`, `oldest`, `events`.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

const META_REVISION: &str = "revision";
const META_OLDEST: &str = "oldest";
const META_EVENTS: &str = "events";

/// How many revisions a watcher reads from the history at a time.
const HISTORY_PAGE: usize = 1024;
/// How many revisions the broadcast channel holds for slow watchers before they fall back to
/// reading the history from the file.
const BROADCAST_CAPACITY: usize = 4096;
/// redb's page cache (its default, 1 GiB, is far more than cluster state needs). Every cached
/// page is the server's own memory, while a page read from the file again comes from the
/// kernel's page cache, which is not: 5,000 nodes' state fills about 12 MiB of pages, all of
/// it resident with a 64 MiB cache, and with 8 MiB `cargo xtask bench control-plane` registers
/// its 5,000 agents as fast (the pages each registration reads stay cached) while the server's
/// peak RSS drops by 8 MiB.
const CACHE_BYTES: usize = 8 << 20;
/// How long an open waits for a handle of this process that is still closing the file.
const OPEN_RETRIES: u32 = 40;

/// Every database open in this process, by canonical path, so a second open shares it.
static OPEN: Mutex<BTreeMap<PathBuf, Weak<Inner>>> = Mutex::new(BTreeMap::new());

struct Inner {
    path: PathBuf,
    db: Arc<Database>,
    /// Writes for the writer thread; taken (closing the channel) on drop.
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<thread::JoinHandle<()>>,
    /// Each committed revision's changes, for live watchers.
    changes: broadcast::Sender<Arc<WatchBatch>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel stops the writer after the writes already queued.
        drop(self.requests.take());
        if let Some(writer) = self.writer.take() {
            // A panic in the writer was already reported to every waiting caller.
            let _ = writer.join();
        }
    }
}

struct Request {
    body: Body,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

enum Body {
    Txn(Txn),
    Compact(Revision),
}

enum Answer {
    Txn(TxnOutcome),
    Compacted,
}

/// Why a step inside a redb transaction failed: redb itself, or this one request.
#[derive(Debug)]
enum Failure {
    /// redb failed: the whole commit is abandoned.
    Storage(redb::Error),
    /// The request is refused; nothing of it was written.
    Refused(StoreError),
}

/// The store's counters, as kept in the `meta` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    /// The current revision.
    revision: Revision,
    /// The oldest revision still in the history.
    oldest: Revision,
    /// How many events the history holds.
    events: u64,
}

/// A page of watch history.
#[derive(Debug)]
struct History {
    /// The matching changes, one batch per revision.
    batches: Vec<WatchBatch>,
    /// Every revision up to here was read.
    through: Revision,
    /// Whether `through` is the store's current revision (else read another page).
    complete: bool,
}

// === impl Failure ===

impl Failure {
    fn into_store_error(self, path: &Path) -> StoreError {
        match self {
            Failure::Storage(e) => embedded_error(path, e),
            Failure::Refused(e) => e,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Refused(e)
    }
}

impl From<redb::Error> for Failure {
    fn from(e: redb::Error) -> Self {
        Failure::Storage(e)
    }
}

impl From<redb::StorageError> for Failure {
    fn from(e: redb::StorageError) -> Self {
        Failure::Storage(e.into())
    }
}

impl From<redb::TableError> for Failure {
    fn from(e: redb::TableError) -> Self {
        Failure::Storage(e.into())
    }
}

impl From<redb::TransactionError> for Failure {
    fn from(e: redb::TransactionError) -> Self {
        Failure::Storage(e.into())
    }
}

impl From<redb::CommitError> for Failure {
    fn from(e: redb::CommitError) -> Self {
        Failure::Storage(e.into())
    }
}

fn embedded_error(path: &Path, e: redb::Error) -> StoreError {
    match e {
        redb::Error::DatabaseAlreadyOpen => StoreError::InUse {
            path: path.to_owned(),
        },
        e => StoreError::Embedded {
            path: path.to_owned(),
            source: Arc::new(e),
        },
    }
}

// --- Blocking parts ---

/// Runs `f` on tokio's blocking pool. A panic in `f` is resumed here.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => Ok(value),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StoreError::Stopped),
    }
}

fn open_blocking(path: PathBuf, options: EmbeddedOptions) -> Result<EmbeddedStore, StoreError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let create_dir = |source| StoreError::CreateDir {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(create_dir)?;
    let file_name = path.file_name().unwrap_or(path.as_os_str());
    let path = dir.canonicalize().map_err(create_dir)?.join(file_name);

    let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    open.retain(|_, inner| inner.strong_count() > 0);
    if let Some(inner) = open.get(&path).and_then(Weak::upgrade) {
        return Ok(EmbeddedStore { inner });
    }
    let db = open_database(&path)?;
    // The store holds secrets (the sealed bootstrap data, flannel-conf's pre-shared key): the
    // file is its owner's alone, whatever the umask.
    let owner_only = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    std::fs::set_permissions(&path, owner_only).map_err(|e| embedded_error(&path, e.into()))?;
    init_tables(&db).map_err(|f| f.into_store_error(&path))?;

    let db = Arc::new(db);
    let (requests, queue) = mpsc::channel();
    let (changes, _) = broadcast::channel(BROADCAST_CAPACITY);
    let writer = {
        let db = db.clone();
        let changes = changes.clone();
        let writer_path = path.clone();
        thread::Builder::new()
            .name("weft-store-writer".to_owned())
            .spawn(move || run_writer(&db, &queue, &changes, options, &writer_path))
            .map_err(|e| embedded_error(&path, e.into()))?
    };
    let inner = Arc::new(Inner {
        path: path.clone(),
        db,
        requests: Some(requests),
        writer: Some(writer),
        changes,
    });
    open.insert(path, Arc::downgrade(&inner));
    Ok(EmbeddedStore { inner })
}

/// Opens the file, waiting briefly for a handle of this process that is still closing it.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    let mut attempt = 0;
    loop {
        let opened = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(path);
        match opened {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if attempt < OPEN_RETRIES => {
                attempt += 1;
                thread::sleep(Duration::from_millis(25));
            }
            Err(e) => return Err(embedded_error(path, e.into())),
        }
    }
}

fn init_tables(db: &Database) -> Result<(), Failure> {
    let wtx = db.begin_write()?;
    wtx.open_table(KV)?;
    wtx.open_table(EVENTS)?;
    wtx.open_table(META)?;
    wtx.commit()?;
    Ok(())
}

fn read_meta(table: &impl ReadableTable<&'static str, u64>) -> Result<Meta, Failure> {
    let get =
        |name: &str| -> Result<Option<u64>, Failure> { Ok(table.get(name)?.map(|v| v.value())) };
    Ok(Meta {
        revision: Revision(get(META_REVISION)?.unwrap_or(0)),
        oldest: Revision(get(META_OLDEST)?.unwrap_or(1)),
        events: get(META_EVENTS)?.unwrap_or(0),
    })
}

fn write_meta(table: &mut redb::Table<'_, &'static str, u64>, meta: Meta) -> Result<(), Failure> {
    table.insert(META_REVISION, meta.revision.get())?;
    table.insert(META_OLDEST, meta.oldest.get())?;
    table.insert(META_EVENTS, meta.events)?;
    Ok(())
}

fn read_entry(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Entry>, Failure> {
    match table.get(key)? {
        Some(value) => Ok(Some(Entry::decode(key, value.value())?)),
        None => Ok(None),
    }
}

fn read_history(rtx: &ReadTransaction, prefix: &str, after: Revision) -> Result<History, Failure> {
    let meta = read_meta(&rtx.open_table(META)?)?;
    if after.next() < meta.oldest {
        return Err(StoreError::Compacted {
            oldest: meta.oldest,
        }
        .into());
    }
    let table = rtx.open_table(EVENTS)?;
    let mut batches = Vec::new();
    let mut through = after;
    for (rows, row) in table.range(after.next().get()..)?.enumerate() {
        if rows == HISTORY_PAGE {
            return Ok(History {
                batches,
                through,
                complete: false,
            });
        }
        let (revision, value) = row?;
        let revision = Revision(revision.value());
        let events = decode_events(revision, value.value())?;
        let batch = WatchBatch { revision, events };
        if let Some(batch) = filter(&batch, prefix) {
            batches.push(batch);
        }
        through = revision;
    }
    Ok(History {
        batches,
        through: through.max(meta.revision),
        complete: true,
    })
}
