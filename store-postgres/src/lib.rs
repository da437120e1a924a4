//! # lanyard-store-postgres
//!
//! The [`Store`] on PostgreSQL, for several `lanyard-server` nodes sharing
//! one database (DESIGN.md, "Scale-out"):
//!
//! - every chunk a node writes is a row of `lanyard_chunks`, numbered by a
//!   sequence that grows in commit order (writers take a transaction-scoped
//!   advisory lock before they take numbers), so "every row after N" never
//!   skips a row that commits later with a smaller number;
//! - deferred appends ([`Store::append_chunks_deferred`]) are held in memory,
//!   visible to this node at once, and written by the next [`Store::flush`]
//!   in one transaction: a change is durable (and may be acknowledged) once
//!   that transaction commits. A flush that fails keeps them for the next
//!   one; a flush whose commit went through but whose answer was lost is not
//!   written twice (each batch is recorded under its own id);
//! - each commit sends `NOTIFY lanyard_changes` with a tiny payload (the
//!   document id and the last sequence number); the [`ChangeFeed`] of every
//!   other node wakes, reads the new rows of the table, and hands them to the
//!   server. It also reads them every second and after every reconnection,
//!   so a lost notification delays a change, never loses it.
//!
//! - decisions that must be taken once (seats) are taken by one node, the
//!   authority, elected with a session-level advisory lock
//!   ([`PgStore::elect`]); each election bumps an epoch row, and a flush
//!   that writes a guarded document commits only while its node's epoch is
//!   the current one (it reads the row `FOR SHARE` in the same
//!   transaction), so a node that lost its lock without knowing it yet can
//!   never commit a decision after its successor started deciding.
//!
//! The [`Store`] trait is synchronous (sled is); this backend runs its own
//! small tokio runtime with a connection pool (deadpool-postgres over
//! tokio-postgres) and waits for it, so it can be called from any thread,
//! inside or outside another runtime.

pub mod testing;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use lanyard_store::{Store, StoreError};
use tokio::sync::mpsc;
use tokio_postgres::NoTls;
use tracing::{debug, warn};

/// The channel of change notifications.
pub const CHANNEL: &str = "lanyard_changes";

/// The key of the advisory lock that orders writers' sequence numbers.
const ORDER_LOCK: i64 = 0x4c61_6e79_6172_6401;

/// The key of the session-level advisory lock held by the authority.
const AUTHORITY_LOCK: i64 = 0x4c61_6e79_6172_6402;

/// How often a node tries to become the authority, and the authority
/// checks its lock's connection.
const ELECT_EVERY: Duration = Duration::from_millis(500);

/// How long one database operation may take before it fails.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the feed reads new rows even without a notification.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Rows the feed reads per query.
const FEED_BATCH: i64 = 2_000;

/// The schema, by version: each entry is applied once, in order, in one
/// transaction with the version's row in `lanyard_schema`.
const MIGRATIONS: &[&str] = &[
    // 1: chunks in commit order, metadata, and the batches already written.
    "CREATE TABLE lanyard_chunks (
         seq bigserial PRIMARY KEY,
         doc text NOT NULL,
         node text NOT NULL,
         data bytea NOT NULL
     );
     CREATE INDEX lanyard_chunks_doc ON lanyard_chunks (doc, seq);
     CREATE TABLE lanyard_meta (key text PRIMARY KEY, value bytea NOT NULL);
     CREATE TABLE lanyard_batches (
         id text PRIMARY KEY,
         at timestamptz NOT NULL DEFAULT now()
     );",
    // 2: the authority's epoch, bumped by each election.
    "CREATE TABLE lanyard_authority (
         id int PRIMARY KEY CHECK (id = 1),
         epoch bigint NOT NULL,
         node text NOT NULL,
         at timestamptz NOT NULL DEFAULT now()
     );
     INSERT INTO lanyard_authority (id, epoch, node) VALUES (1, 0, '');",
];

/// Writes held until the next flush, in the order they were made.
#[derive(Debug, Default)]
struct Pending {
    /// The id this batch is written under (kept across failed flushes).
    batch: Option<String>,
    chunks: Vec<PendingChunk>,
}

/// A chunk waiting for the next flush.
#[derive(Debug, Clone)]
struct PendingChunk {
    doc: String,
    data: Vec<u8>,
    /// The node's epoch when it was made: a guarded chunk is written only
    /// under that epoch.
    epoch: i64,
}

/// Many server nodes' [`Store`]: see the crate documentation.
pub struct PgStore {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    url: String,
    node: String,
    pending: Mutex<Pending>,
    /// Serializes flushes of this node (a batch is written once, in order).
    flushing: Mutex<()>,
    /// Whether this node is the authority, and which documents only it writes.
    authority: Arc<AuthorityState>,
}

/// This node's standing as the authority, shared by its election task and
/// its flushes.
#[derive(Debug)]
struct AuthorityState {
    /// Documents whose id starts with this are written by the authority
    /// only (empty until [`PgStore::elect`]: nothing is guarded).
    guarded: std::sync::OnceLock<String>,
    /// The epoch this node won, 0 when it is not the authority.
    epoch: std::sync::atomic::AtomicI64,
    tx: tokio::sync::watch::Sender<Option<Elected>>,
}

impl AuthorityState {
    fn epoch(&self) -> i64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set(&self, elected: Option<Elected>) {
        self.epoch.store(
            elected.map_or(0, |e| e.epoch),
            std::sync::atomic::Ordering::SeqCst,
        );
        self.tx.send_replace(elected);
    }

    fn guards(&self, doc: &str) -> bool {
        self.guarded
            .get()
            .is_some_and(|p| doc.starts_with(p.as_str()))
    }
}

/// This node won an election: see [`PgStore::elect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elected {
    /// The epoch it won (grows with every election).
    pub epoch: i64,
    /// The last sequence number other nodes had committed when it won: it
    /// decides only once its feed has applied every row up to this one.
    pub seen_to: i64,
}

/// Whether this node is the authority, as it changes: see [`PgStore::elect`].
#[derive(Debug, Clone)]
pub struct Authority {
    rx: tokio::sync::watch::Receiver<Option<Elected>>,
}

impl Authority {
    /// The current standing: `Some` while this node is the authority.
    pub fn current(&self) -> Option<Elected> {
        *self.rx.borrow()
    }

    /// Waits for the standing to change; `None` once the store is gone.
    pub async fn changed(&mut self) -> Option<Option<Elected>> {
        self.rx.changed().await.ok()?;
        Some(*self.rx.borrow_and_update())
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn db_err(e: impl Into<Failure>) -> StoreError {
    StoreError::Database(e.into().0)
}

/// An error's whole story (tokio-postgres's own display is only "db error").
struct Failure(String);

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        if let Some(db) = e.as_db_error() {
            return Failure(format!("{}: {}", db.severity(), db.message()));
        }
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        Failure(text)
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Failure {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            e => Failure(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::BuildError> for Failure {
    fn from(e: deadpool_postgres::BuildError) -> Failure {
        Failure(e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure(e.to_string())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A random id (nodes, batches).
fn random_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The URL with its password hidden, for messages and logs.
pub fn redact(url: &str) -> String {
    let Ok(c) = url.parse::<tokio_postgres::Config>() else {
        return "postgres://…".into();
    };
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{}:{}/{}",
        c.get_user().unwrap_or(""),
        hosts.join(","),
        port,
        c.get_dbname().unwrap_or("")
    )
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:pw@host:port/db`),
    /// applies the schema migrations it lacks, and checks it answers.
    pub fn connect(url: &str) -> Result<PgStore, StoreError> {
        Self::connect_as(url, "node")
    }

    /// [`PgStore::connect`] for a node called `name` (a server gives its
    /// listening address): its rows and its election carry
    /// `name/<random id>`, so `SELECT node FROM lanyard_authority` tells an
    /// operator which node decides.
    pub fn connect_as(url: &str, name: &str) -> Result<PgStore, StoreError> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Database(format!("{} is not a PostgreSQL URL: {e}", redact(url)))
        })?;
        let mut config = config;
        config.connect_timeout(Duration::from_secs(10));
        config.application_name("lanyard-server");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lanyard-pg")
            .enable_all()
            .build()
            .map_err(db_err)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = {
            let _guard = runtime.enter();
            Pool::builder(manager)
                .max_size(8)
                .wait_timeout(Some(OP_TIMEOUT))
                .create_timeout(Some(Duration::from_secs(10)))
                .recycle_timeout(Some(Duration::from_secs(5)))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(db_err)?
        };
        let store = PgStore {
            runtime: Some(runtime),
            pool,
            url: url.to_owned(),
            node: format!("{name}/{}", random_id()),
            pending: Mutex::new(Pending::default()),
            flushing: Mutex::new(()),
            authority: Arc::new(AuthorityState {
                guarded: std::sync::OnceLock::new(),
                epoch: std::sync::atomic::AtomicI64::new(0),
                tx: tokio::sync::watch::Sender::new(None),
            }),
        };
        let pool = store.pool.clone();
        let shown = redact(url);
        store.call(async move {
            let mut client = pool.get().await.map_err(|e| {
                StoreError::Database(format!("cannot connect to {shown}: {}", Failure::from(e).0))
            })?;
            migrate(&mut client).await
        })?;
        Ok(store)
    }

    /// This node's id (rows it wrote carry it; its feed skips them).
    pub fn node(&self) -> &str {
        &self.node
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        // Present until drop.
        self.runtime
            .as_ref()
            .unwrap_or_else(|| unreachable!("the runtime lives until drop"))
    }

    /// Runs `f` on the store's runtime and waits for it (from any thread).
    fn call<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime().spawn(async move {
            let r = match tokio::time::timeout(OP_TIMEOUT, f).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Database(format!(
                    "no answer from the database within {} s",
                    OP_TIMEOUT.as_secs()
                ))),
            };
            let _ = tx.send(r);
        });
        rx.recv()
            .map_err(|_| StoreError::Database("the database task ended".into()))?
    }

    /// The pending chunks of `doc` that may still be written (not the
    /// decisions of an epoch that ended).
    fn pending_of(&self, doc: &str) -> Vec<Vec<u8>> {
        let epoch = self.authority.epoch();
        lock(&self.pending)
            .chunks
            .iter()
            .filter(|c| c.doc == doc && !self.stale(c, epoch))
            .map(|c| c.data.clone())
            .collect()
    }

    /// A guarded chunk made under another epoch than `epoch` (or while the
    /// node was not the authority): it is never written.
    fn stale(&self, c: &PendingChunk, epoch: i64) -> bool {
        self.authority.guards(&c.doc) && (epoch == 0 || c.epoch != epoch)
    }

    /// Follows the changes other nodes commit from now on: the feed reads
    /// every row committed after this call (take it before loading the
    /// documents, so nothing falls between the two).
    pub fn follow(&self) -> Result<ChangeFeed, StoreError> {
        let pool = self.pool.clone();
        let after: i64 = self.call(async move {
            let client = pool.get().await.map_err(db_err)?;
            let row = client
                .query_one("SELECT coalesce(max(seq), 0) FROM lanyard_chunks", &[])
                .await
                .map_err(db_err)?;
            Ok(row.get(0))
        })?;
        let (tx, rx) = mpsc::channel(64);
        let status = Arc::new(FeedStatus::default());
        // Everything up to here is read with the documents.
        status
            .last_seq
            .store(after, std::sync::atomic::Ordering::Relaxed);
        let state = FeedTask {
            url: self.url.clone(),
            node: self.node.clone(),
            after,
            tx,
            status: status.clone(),
        };
        self.runtime().spawn(state.run());
        Ok(ChangeFeed { rx, status })
    }
}

impl PgStore {
    /// Takes part in electing the cluster's authority: from now on,
    /// documents whose id starts with `guarded` are written only while
    /// this node is the authority (a flush holding one fails otherwise,
    /// and drops them: see [`StoreError::Fenced`]). The node that holds
    /// the authority lock is the authority; the others try again every
    /// half second, so one takes over within a second of the authority's
    /// database connection ending (its process died, or the database
    /// dropped it). Called again, it follows the same election (the first `guarded`
    /// stays).
    pub fn elect(&self, guarded: &str) -> Authority {
        let rx = self.authority.tx.subscribe();
        if self.authority.guarded.set(guarded.to_owned()).is_err() {
            return Authority { rx };
        }
        let task = Election {
            url: self.url.clone(),
            node: self.node.clone(),
            state: self.authority.clone(),
        };
        self.runtime().spawn(task.run());
        Authority { rx }
    }
}

/// One node's part in the elections.
struct Election {
    url: String,
    node: String,
    state: Arc<AuthorityState>,
}

impl Election {
    async fn run(self) {
        let mut failing = false;
        loop {
            if self.state.tx.is_closed() {
                return;
            }
            if let Err(e) = self.hold().await {
                if !failing {
                    warn!(error = %e, "the authority election lost its database connection: retrying");
                }
                failing = true;
            }
            if self.state.epoch() != 0 {
                warn!("this node is no longer the authority");
            }
            self.state.set(None);
            tokio::time::sleep(ELECT_EVERY).await;
        }
    }

    /// On one connection: tries for the lock until it gets it, then holds
    /// it while the connection lives. Returns when the connection fails.
    async fn hold(&self) -> Result<(), StoreError> {
        let mut config: tokio_postgres::Config = self.url.parse().map_err(db_err)?;
        config.connect_timeout(Duration::from_secs(10));
        config.keepalives_idle(Duration::from_secs(5));
        config.application_name("lanyard-server authority");
        let (client, connection) = config.connect(NoTls).await.map_err(db_err)?;
        let driver = tokio::spawn(connection);
        let r = self.hold_on(&client).await;
        driver.abort();
        r
    }

    async fn hold_on(&self, client: &tokio_postgres::Client) -> Result<(), StoreError> {
        let mut holding = false;
        loop {
            if self.state.tx.is_closed() {
                return Ok(());
            }
            if holding && self.state.epoch() == 0 {
                // A flush found a newer epoch: someone else decides now.
                client
                    .execute("SELECT pg_advisory_unlock($1)", &[&AUTHORITY_LOCK])
                    .await
                    .map_err(db_err)?;
                holding = false;
            }
            if holding {
                // The lock lives as long as this connection.
                client.execute("SELECT 1", &[]).await.map_err(db_err)?;
            } else {
                let row = client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&AUTHORITY_LOCK])
                    .await
                    .map_err(db_err)?;
                if row.get::<_, bool>(0) {
                    holding = true;
                    let row = client
                        .query_one(
                            "UPDATE lanyard_authority SET epoch = epoch + 1, node = $1, at = now()
                             WHERE id = 1 RETURNING epoch",
                            &[&self.node],
                        )
                        .await
                        .map_err(db_err)?;
                    let epoch: i64 = row.get(0);
                    // Read after the bump committed: every flush that
                    // passed the old epoch's fence is in here.
                    let row = client
                        .query_one(
                            "SELECT coalesce(max(seq), 0) FROM lanyard_chunks WHERE node <> $1",
                            &[&self.node],
                        )
                        .await
                        .map_err(db_err)?;
                    let seen_to: i64 = row.get(0);
                    debug!(epoch, seen_to, "this node is the authority");
                    self.state.set(Some(Elected { epoch, seen_to }));
                }
            }
            tokio::time::sleep(ELECT_EVERY).await;
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropping a runtime waits for its tasks, which may not happen
        // inside another runtime: let them go instead.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn migrate(client: &mut deadpool_postgres::Client) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS lanyard_schema (version int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(|e| {
            StoreError::Database(format!("cannot create the schema table: {}", Failure::from(e).0))
        })?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        let tx = client.transaction().await.map_err(db_err)?;
        // One node migrates at a time; the others find it done.
        tx.execute("LOCK TABLE lanyard_schema IN EXCLUSIVE MODE", &[])
            .await
            .map_err(db_err)?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM lanyard_schema WHERE version = $1",
                &[&version],
            )
            .await
            .map_err(db_err)?
            .is_some();
        if done {
            tx.rollback().await.map_err(db_err)?;
            continue;
        }
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Database(format!(
                "schema migration {version} failed: {}",
                Failure::from(e).0
            ))
        })?;
        tx.execute(
            "INSERT INTO lanyard_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        debug!(version, "applied schema migration");
    }
    Ok(())
}

/// Writes one batch of chunks in one transaction, in commit order, and
/// notifies the other nodes. A batch already written (its commit went
/// through, its answer was lost) is not written again.
async fn write_batch(
    pool: Pool,
    node: String,
    batch: String,
    chunks: Vec<(String, Vec<u8>)>,
    fence: Option<i64>,
) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(db_err)?;
    let tx = client.transaction().await.map_err(db_err)?;
    let fresh = tx
        .execute(
            "INSERT INTO lanyard_batches (id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&batch],
        )
        .await
        .map_err(db_err)?;
    if fresh == 0 {
        tx.rollback().await.map_err(db_err)?;
        return Ok(());
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ORDER_LOCK])
        .await
        .map_err(db_err)?;
    if let Some(ours) = fence {
        // Held until commit: an election waits for this write, or this
        // write sees its epoch.
        let row = tx
            .query_one(
                "SELECT epoch FROM lanyard_authority WHERE id = 1 FOR SHARE",
                &[],
            )
            .await
            .map_err(db_err)?;
        let current: i64 = row.get(0);
        if current != ours {
            tx.rollback().await.map_err(db_err)?;
            return Err(StoreError::Fenced(format!(
                "this node's authority (epoch {ours}) ended: epoch {current} decides now"
            )));
        }
    }
    let (docs, data): (Vec<String>, Vec<Vec<u8>>) = chunks.into_iter().unzip();
    let rows = tx
        .query(
            "INSERT INTO lanyard_chunks (doc, node, data)
             SELECT d, $3, c FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS t(d, c, n)
             ORDER BY n
             RETURNING seq, doc",
            &[&docs, &data, &node],
        )
        .await
        .map_err(db_err)?;
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for row in rows {
        let seq: i64 = row.get(0);
        let doc: String = row.get(1);
        let e = last.entry(doc).or_insert(seq);
        *e = (*e).max(seq);
    }
    let (docs, seqs): (Vec<String>, Vec<i64>) = last.into_iter().unzip();
    tx.execute(
        "SELECT pg_notify($3, d || ' ' || s) FROM unnest($1::text[], $2::bigint[]) AS t(d, s)",
        &[&docs, &seqs, &CHANNEL],
    )
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(())
}

impl Store for PgStore {
    fn load_doc(&self, doc: &str) -> Result<Option<Vec<u8>>, StoreError> {
        // Pending first: a flush that commits meanwhile leaves a chunk in
        // both (Automerge loads a repeated change once), never in neither.
        let pending = self.pending_of(doc);
        let pool = self.pool.clone();
        let id = doc.to_owned();
        let rows: Vec<Vec<u8>> = self.call(async move {
            let client = pool.get().await.map_err(db_err)?;
            let rows = client
                .query(
                    "SELECT data FROM lanyard_chunks WHERE doc = $1 ORDER BY seq",
                    &[&id],
                )
                .await
                .map_err(db_err)?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })?;
        if rows.is_empty() && pending.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows.into_iter().chain(pending).flatten().collect()))
    }

    fn append_chunks(&self, doc: &str, chunks: &[Vec<u8>]) -> Result<(), StoreError> {
        self.append_chunks_deferred(doc, chunks)?;
        self.flush()
    }

    fn append_chunks_deferred(&self, doc: &str, chunks: &[Vec<u8>]) -> Result<(), StoreError> {
        let epoch = self.authority.epoch();
        let mut p = lock(&self.pending);
        p.chunks.extend(chunks.iter().map(|c| PendingChunk {
            doc: doc.to_owned(),
            data: c.clone(),
            epoch,
        }));
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let _one = lock(&self.flushing);
        let epoch = self.authority.epoch();
        let (batch, chunks) = {
            let mut p = lock(&self.pending);
            // Decisions of an epoch that ended are never written; the flush
            // that finds them fails, so nothing held behind them (their
            // fan-out, the acknowledgements of the same batch) goes out.
            let before = p.chunks.len();
            p.chunks.retain(|c| !self.stale(c, epoch));
            let dropped = before - p.chunks.len();
            if dropped > 0 {
                p.batch = None;
                warn!(dropped, "dropped decisions made while this node was the authority: the next authority decides again");
                return Err(StoreError::Fenced(format!(
                    "{dropped} decisions were made under an authority that ended"
                )));
            }
            if p.chunks.is_empty() {
                return Ok(());
            }
            let batch = p.batch.get_or_insert_with(random_id).clone();
            let chunks: Vec<(String, Vec<u8>)> = p
                .chunks
                .iter()
                .map(|c| (c.doc.clone(), c.data.clone()))
                .collect();
            (batch, chunks)
        };
        let n = chunks.len();
        let guarded = chunks.iter().any(|(d, _)| self.authority.guards(d));
        let r = self.call(write_batch(
            self.pool.clone(),
            self.node.clone(),
            batch,
            chunks,
            guarded.then_some(epoch),
        ));
        match r {
            Ok(()) => {
                // Only this flush takes from the front; appends made meanwhile stay.
                let mut p = lock(&self.pending);
                p.chunks.drain(..n);
                p.batch = None;
                Ok(())
            }
            Err(e @ StoreError::Fenced(_)) => {
                // Another node won an election this node has not noticed
                // yet: its guarded writes are stale now (dropped by the
                // next flush), the rest is written then.
                warn!(error = %e, "this node is no longer the authority");
                self.authority.set(None);
                Err(e)
            }
            Err(e) => {
                warn!(error = %e, chunks = n, "could not write to the database; kept for the next flush");
                Err(e)
            }
        }
    }

    fn replace_doc(&self, doc: &str, whole: &[u8]) -> Result<(), StoreError> {
        self.flush()?;
        let pool = self.pool.clone();
        let node = self.node.clone();
        let (id, whole) = (doc.to_owned(), whole.to_vec());
        self.call(async move {
            let mut client = pool.get().await.map_err(db_err)?;
            let tx = client.transaction().await.map_err(db_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ORDER_LOCK])
                .await
                .map_err(db_err)?;
            tx.execute("DELETE FROM lanyard_chunks WHERE doc = $1", &[&id])
                .await
                .map_err(db_err)?;
            let row = tx
                .query_one(
                    "INSERT INTO lanyard_chunks (doc, node, data) VALUES ($1, $2, $3) RETURNING seq",
                    &[&id, &node, &whole],
                )
                .await
                .map_err(db_err)?;
            let seq: i64 = row.get(0);
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANNEL, &format!("{id} {seq}")],
            )
            .await
            .map_err(db_err)?;
            tx.commit().await.map_err(db_err)
        })
    }

    fn chunk_count(&self, doc: &str) -> Result<usize, StoreError> {
        let pool = self.pool.clone();
        let id = doc.to_owned();
        let stored: i64 = self.call(async move {
            let client = pool.get().await.map_err(db_err)?;
            let row = client
                .query_one("SELECT count(*) FROM lanyard_chunks WHERE doc = $1", &[&id])
                .await
                .map_err(db_err)?;
            Ok(row.get(0))
        })?;
        Ok(stored as usize + self.pending_of(doc).len())
    }

    fn doc_ids(&self) -> Result<Vec<String>, StoreError> {
        let pending: Vec<String> = lock(&self.pending)
            .chunks
            .iter()
            .map(|c| c.doc.clone())
            .collect();
        let pool = self.pool.clone();
        let mut ids: Vec<String> = self.call(async move {
            let client = pool.get().await.map_err(db_err)?;
            let rows = client
                .query("SELECT DISTINCT doc FROM lanyard_chunks", &[])
                .await
                .map_err(db_err)?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })?;
        ids.extend(pending);
        // Byte order, as sled's keys (the database's collation may differ).
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let pool = self.pool.clone();
        let key = key.to_owned();
        self.call(async move {
            let client = pool.get().await.map_err(db_err)?;
            let row = client
                .query_opt("SELECT value FROM lanyard_meta WHERE key = $1", &[&key])
                .await
                .map_err(db_err)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        let (key, value) = (key.to_owned(), value.to_vec());
        self.call(async move {
            let client = pool.get().await.map_err(db_err)?;
            client
                .execute(
                    "INSERT INTO lanyard_meta (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&key, &value],
                )
                .await
                .map_err(db_err)?;
            Ok(())
        })
    }

    fn size_bytes(&self) -> Result<u64, StoreError> {
        let pool = self.pool.clone();
        self.call(async move {
            let client = pool.get().await.map_err(db_err)?;
            let row = client
                .query_one(
                    "SELECT pg_total_relation_size('lanyard_chunks') + pg_total_relation_size('lanyard_meta')",
                    &[],
                )
                .await
                .map_err(db_err)?;
            let n: i64 = row.get(0);
            Ok(n.max(0) as u64)
        })
    }
}

/// A chunk another node committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteChunk {
    /// Its place in commit order.
    pub seq: i64,
    /// The document.
    pub doc: String,
    /// The chunk (an Automerge change or save).
    pub data: Vec<u8>,
}

/// How the feed is doing (for readiness and metrics).
#[derive(Debug, Default)]
pub struct FeedStatus {
    connected: std::sync::atomic::AtomicBool,
    last_seq: std::sync::atomic::AtomicI64,
    reconnects: std::sync::atomic::AtomicU64,
    notifications: std::sync::atomic::AtomicU64,
}

impl FeedStatus {
    /// The feed's listening connection is up.
    pub fn connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// The last sequence number read (from the start: the last one
    /// committed when [`PgStore::follow`] was called).
    pub fn last_seq(&self) -> i64 {
        self.last_seq.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Times the listening connection was made again after it dropped.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Notifications received.
    pub fn notifications(&self) -> u64 {
        self.notifications
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The changes other nodes commit, in commit order, in batches: see
/// [`PgStore::follow`]. Ends when the store is dropped.
#[derive(Debug)]
pub struct ChangeFeed {
    rx: mpsc::Receiver<Vec<RemoteChunk>>,
    status: Arc<FeedStatus>,
}

impl ChangeFeed {
    /// The next batch of chunks, or `None` once the store is gone.
    pub async fn next(&mut self) -> Option<Vec<RemoteChunk>> {
        self.rx.recv().await
    }

    /// The feed's status, shared.
    pub fn status(&self) -> Arc<FeedStatus> {
        self.status.clone()
    }
}

struct FeedTask {
    url: String,
    node: String,
    after: i64,
    tx: mpsc::Sender<Vec<RemoteChunk>>,
    status: Arc<FeedStatus>,
}

impl FeedTask {
    async fn run(mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        loop {
            match self.listen().await {
                Ok(Stop::Receiver) => return,
                Ok(Stop::Dropped) => {
                    warn!("the change feed lost its database connection: reconnecting");
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    if first {
                        warn!(error = %e, "the change feed cannot reach the database: retrying");
                    } else {
                        debug!(error = %e, "the change feed cannot reach the database");
                    }
                }
            }
            first = false;
            self.status.connected.store(false, Relaxed);
            if self.tx.is_closed() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            self.status.reconnects.fetch_add(1, Relaxed);
        }
    }

    /// Listens on one connection until it drops or nobody reads the feed.
    async fn listen(&mut self) -> Result<Stop, StoreError> {
        use futures_util::StreamExt;
        use std::sync::atomic::Ordering::Relaxed;
        let (client, mut connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .map_err(db_err)?;
        let (wake_tx, mut wake) = mpsc::unbounded_channel::<()>();
        let status = self.status.clone();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                        status.notifications.fetch_add(1, Relaxed);
                        let _ = wake_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        let r = async {
            client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .await
                .map_err(db_err)?;
            self.status.connected.store(true, Relaxed);
            loop {
                // Catch up (after connecting, on a notification, every second).
                if !self.read(&client).await? {
                    return Ok(Stop::Receiver);
                }
                tokio::select! {
                    w = wake.recv() => {
                        if w.is_none() {
                            return Ok(Stop::Dropped);
                        }
                        while wake.try_recv().is_ok() {}
                    }
                    _ = tokio::time::sleep(POLL_EVERY) => {}
                    _ = self.tx.closed() => return Ok(Stop::Receiver),
                }
                if client.is_closed() {
                    return Ok(Stop::Dropped);
                }
            }
        }
        .await;
        driver.abort();
        r
    }

    /// Reads every row after the last one seen, in batches. `false` when
    /// nobody reads the feed any more.
    async fn read(&mut self, client: &tokio_postgres::Client) -> Result<bool, StoreError> {
        loop {
            let rows = client
                .query(
                    "SELECT seq, doc, data FROM lanyard_chunks
                     WHERE seq > $1 AND node <> $2 ORDER BY seq LIMIT $3",
                    &[&self.after, &self.node, &FEED_BATCH],
                )
                .await
                .map_err(db_err)?;
            let full = rows.len() as i64 == FEED_BATCH;
            if rows.is_empty() {
                return Ok(true);
            }
            let batch: Vec<RemoteChunk> = rows
                .into_iter()
                .map(|r| RemoteChunk {
                    seq: r.get(0),
                    doc: r.get(1),
                    data: r.get(2),
                })
                .collect();
            if let Some(last) = batch.last() {
                self.after = last.seq;
                self.status
                    .last_seq
                    .store(last.seq, std::sync::atomic::Ordering::Relaxed);
            }
            if self.tx.send(batch).await.is_err() {
                return Ok(false);
            }
            if !full {
                return Ok(true);
            }
        }
    }
}

enum Stop {
    /// Nobody reads the feed.
    Receiver,
    /// The connection dropped.
    Dropped,
}
