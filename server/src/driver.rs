//! The tokio + quinn driver around [`ServerCore`].
//!
//! Each bidirectional stream a device opens is one protocol session. A reader
//! task per stream feeds frames to the core; the core's actions are executed in
//! order under its lock. `Persist` appends to sled without waiting for the
//! disk; from then on every `Send` (to any device) is held back until a flush
//! covering that append has returned, so a device is acknowledged, and sees
//! another device's change, only once it is durable. One flusher task makes
//! all writes that arrived while the previous flush ran durable with one
//! flush (grouped flushes), outside the core's lock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lanyard_protocol::wire::{self, ErrorCode, FrameError, HEADER_LEN};
use lanyard_protocol::{
    ConnId, DocId, DocPush, EventId, HelloGate, HelloGateConfig, Lane, Limits, Millis, Revocation,
    ServerAction, ServerConfig, ServerCore, ServerMsg, ServerStats, Sink,
};
use lanyard_store::{SledStore, Store, StoreError};
use lanyard_store_postgres::{Authority, ChangeFeed, Elected, FeedStatus, PgStore};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::admission::{Admission, AdmissionConfig, AdmissionStats, Decision};
use crate::identity::{Identity, IdentityError};
use crate::stats::{ProcessFigures, StatsSnapshot};

/// Options for [`Server::start`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Data directory (sled database, certificate, keys).
    pub data_dir: PathBuf,
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Size limits.
    pub limits: Limits,
    /// Admission control limits.
    pub admission: AdmissionConfig,
    /// A connection must open its stream, and send a complete `Hello` on it,
    /// within this time; a client that connects and then says nothing (a
    /// slowloris) is closed instead of holding a connection slot. While more
    /// than [`HelloGateConfig::max_waiting`] connections wait, the oldest
    /// go after [`HelloGateConfig::crowded_timeout`] (see [`HelloGate`]).
    pub hello_timeout: Duration,
    /// Bytes of frames queued for one device above which fan-out to it stops
    /// and it is switched to a catch-up once it has read what is queued.
    pub outbox_bytes: usize,
    /// TCP address of the admin HTTP listener (health, metrics, admin
    /// API); none by default.
    pub admin: Option<SocketAddr>,
    /// Where documents live (sled in the data directory by default).
    pub store: StoreLocation,
}

/// The file of a data directory naming the PostgreSQL store its server
/// uses (without the password); absent for sled.
pub const STORE_MARKER: &str = "store";

/// Where a server keeps its documents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreLocation {
    /// The embedded sled database in `DATA/db` (one node).
    #[default]
    Sled,
    /// A PostgreSQL database several nodes share (the URL may hold a
    /// password: it is shown only through [`StoreLocation`]'s `Display`,
    /// which hides it).
    Postgres(String),
}

impl StoreLocation {
    /// `sled`, or a `postgres://` / `postgresql://` URL.
    pub fn parse(s: &str) -> Result<StoreLocation, String> {
        let s = s.trim();
        if s == "sled" {
            Ok(StoreLocation::Sled)
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(StoreLocation::Postgres(s.to_owned()))
        } else {
            Err(format!(
                "expected `sled` or a PostgreSQL URL (postgres://user:password@host:5432/db), not {:?}",
                s.split('@').next_back().unwrap_or("")
            ))
        }
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sled => f.write_str("sled"),
            StoreLocation::Postgres(url) => f.write_str(&lanyard_store_postgres::redact(url)),
        }
    }
}

/// Default of [`ServerOptions::hello_timeout`]: generous for a phone on a
/// busy CPU or a collapsing link, so it gets in without a reconnect loop.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(60);

/// Default of [`ServerOptions::outbox_bytes`].
pub const OUTBOX_BYTES: usize = 256 * 1024;

impl ServerOptions {
    /// Defaults for a data directory and listen address.
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        ServerOptions {
            data_dir: data_dir.into(),
            listen,
            limits: Limits::default(),
            admission: AdmissionConfig::default(),
            hello_timeout: HELLO_TIMEOUT,
            outbox_bytes: OUTBOX_BYTES,
            admin: None,
            store: StoreLocation::Sled,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Certificate or keys.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored document is corrupt.
    #[error(transparent)]
    Load(#[from] lanyard_protocol::LoadError),
    /// A stored document id is not valid.
    #[error("the database holds an unknown document id: {0}")]
    BadDocId(String),
    /// TLS configuration.
    #[error("TLS configuration failed: {0}")]
    Tls(String),
    /// Binding the UDP socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The admin HTTP listener could not start (its address, its token).
    #[error("admin listener on {addr}: {source}")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

enum Outbound {
    Frame(Bytes, Lane),
    Close,
}

/// One device's outbox: the writer's queue, and the bytes in it.
struct Outbox {
    tx: mpsc::UnboundedSender<Outbound>,
    queued: Arc<AtomicUsize>,
    /// The most bytes any outbox held (shared by all).
    peak: Arc<AtomicUsize>,
    /// A broadcast was dropped: nothing more is fanned out to it until the
    /// writer has emptied the queue and the core sent its catch-up.
    behind: Arc<std::sync::atomic::AtomicBool>,
}

impl Outbox {
    /// Called under the core's lock once the core knows this device fell
    /// behind: whether its catch-up must be made now, because its writer
    /// will not ask for it. The core's lock orders this with the writer's
    /// drain: a cleared mark means the drain ran first (before the core
    /// knew); a mark on an empty outbox, that the writer emptied it before
    /// the mark was made and will not look again (the mark is cleared
    /// here, so the catch-up is made once).
    fn drained_already(&self) -> bool {
        !self.behind.load(Ordering::SeqCst)
            || (self.queued.load(Ordering::SeqCst) == 0
                && self.behind.swap(false, Ordering::SeqCst))
    }

    fn send(&self, msg: Outbound) {
        if let Outbound::Frame(f, _) = &msg {
            let now = self.queued.fetch_add(f.len(), Ordering::Relaxed) + f.len();
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        let _ = self.tx.send(msg);
    }
}

/// What a held send is: to one device, or one frame to many.
enum Held {
    One(ConnId, Outbound),
    Many {
        doc: DocId,
        base: Vec<automerge::ChangeHash>,
        conns: Vec<ConnId>,
        frame: Bytes,
        lane: Lane,
        /// When the core accepted the change (for `lanyard_fanout_seconds`).
        accepted: Instant,
    },
}

/// A broadcast dropped for a device over its outbox bound.
type Dropped = (ConnId, DocId, Vec<automerge::ChangeHash>);

/// Queues a broadcast frame for every device, dropping it for those over
/// `bound` (returned: the core must hear of them).
fn broadcast(
    outboxes: &HashMap<ConnId, Outbox>,
    bound: usize,
    doc: &DocId,
    base: &[automerge::ChangeHash],
    conns: &[ConnId],
    frame: &Bytes,
    lane: Lane,
) -> (Vec<Dropped>, u64) {
    let mut dropped = Vec::new();
    let mut queued_to = 0;
    for conn in conns {
        let Some(out) = outboxes.get(conn) else {
            continue;
        };
        if out.behind.load(Ordering::Acquire) {
            continue;
        }
        // An empty outbox always takes the frame: one larger than the bound
        // (a large import) would otherwise be dropped with nothing queued to
        // drain, and the device would never get its catch-up.
        let queued = out.queued.load(Ordering::SeqCst);
        if queued > 0 && queued + frame.len() > bound {
            out.behind.store(true, Ordering::SeqCst);
            dropped.push((*conn, doc.clone(), base.to_vec()));
            continue;
        }
        out.send(Outbound::Frame(frame.clone(), lane));
        queued_to += 1;
    }
    (dropped, queued_to)
}

/// Sends waiting for a flush, in the order they were made.
#[derive(Default)]
struct FlushQueue {
    held: Vec<Held>,
    /// Writes appended since the last flush began.
    dirty: u64,
    /// A flush is running and its sends are not all out yet.
    busy: bool,
}

pub(crate) struct Shared {
    /// Histograms for `/metrics`.
    pub(crate) metrics: crate::admin::Metrics,
    /// The admission limits (for `/readyz`).
    admission_config: AdmissionConfig,
    /// The UDP socket's inode, to read its drops in `/proc/net/udp`.
    udp_inode: Option<String>,
    core: Mutex<ServerCore>,
    store: Arc<dyn Store>,
    outboxes: Mutex<HashMap<ConnId, Outbox>>,
    /// See [`ServerOptions::outbox_bytes`].
    outbox_bytes: usize,
    /// The most bytes one device's outbox held.
    outbox_peak: Arc<AtomicUsize>,
    /// Connections waiting for their `Hello`.
    gate: Mutex<HelloGate>,
    /// Per waiting connection: its handle, and its stream's session once opened.
    waiting: Mutex<HashMap<usize, Waiting>>,
    /// Devices seen since start (the admin API's list).
    devices: crate::devices::Devices,
    next_conn: AtomicU64,
    limits: Limits,
    admission: Mutex<Admission>,
    /// Connections admitted and not yet ended (handshaking or open).
    open: AtomicUsize,
    /// Connections admitted whose handshake has not finished.
    handshaking: AtomicUsize,
    /// A handshake finished: the admission queue may move.
    handshake_done: tokio::sync::Notify,
    /// Open connections, for traffic counters.
    live: Mutex<HashMap<usize, quinn::Connection>>,
    /// UDP bytes sent on connections that have ended.
    closed_tx_bytes: AtomicU64,
    /// Traffic of connections that have ended (handshakes counted as they end).
    closed_traffic: Mutex<crate::stats::TrafficStats>,
    /// Bytes of protocol frames written to devices.
    frame_bytes: AtomicU64,
    /// UDP bytes received on connections that have ended.
    closed_rx_bytes: AtomicU64,
    /// Sends held until the writes before them are durable.
    flushq: Mutex<FlushQueue>,
    /// Wakes the flusher.
    flush_wake: tokio::sync::Notify,
    /// Flushes done, and the writes they made durable.
    flushes: AtomicU64,
    flushed_writes: AtomicU64,
    /// The feed of other nodes' changes (a shared PostgreSQL store).
    feed: Option<Arc<FeedStatus>>,
    /// Chunks read from other nodes.
    feed_applied: AtomicU64,
}

/// A connection the Hello gate watches.
struct Waiting {
    conn: quinn::Connection,
    /// Once its first stream is open: tells that stream's reader to give up.
    stream: Option<tokio::sync::oneshot::Sender<String>>,
}

fn now() -> Millis {
    Millis::from_system(SystemTime::now())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Runs `f` on the core, its actions going to the driver's [`Queue`]; a
    /// push it routes then runs holding only its document's lock (work on
    /// one document never waits for another), and is reported to the core.
    fn run(&self, f: impl FnOnce(&mut ServerCore, &mut dyn Sink) -> Option<DocPush>) {
        let mut queue = Queue {
            shared: self,
            wake: false,
        };
        let push = f(&mut lock(&self.core), &mut queue);
        if let Some(push) = push {
            let done = push.run(&mut queue);
            lock(&self.core).pushed(now(), done);
        }
        if queue.wake {
            self.flush_wake.notify_one();
        }
    }

    /// Runs `f` on the core and queues the actions it returns.
    fn run_actions(&self, f: impl FnOnce(&mut ServerCore) -> Vec<ServerAction>) {
        self.run(|core, sink| {
            let actions = f(core);
            if !actions.is_empty() {
                sink.take(actions);
            }
            None
        });
    }
}

/// The driver's [`Sink`]: persists writes (appended now, made durable by
/// the flusher), queues sends to the devices' outboxes, holding them behind
/// any write not yet durable, and hands every broadcast to the flusher,
/// which queues it outside the core's and the documents' locks.
struct Queue<'a> {
    shared: &'a Shared,
    /// The flusher has work.
    wake: bool,
}

impl Sink for Queue<'_> {
    fn take(&mut self, actions: Vec<ServerAction>) -> bool {
        let shared = self.shared;
        let outboxes = lock(&shared.outboxes);
        let mut q = lock(&shared.flushq);
        let mut failed: Option<String> = None;
        let mut told_originator = false;
        let holding = |q: &FlushQueue| q.busy || q.dirty > 0 || !q.held.is_empty();
        let out = |q: &mut FlushQueue, conn: ConnId, msg: Outbound| {
            if holding(q) {
                q.held.push(Held::One(conn, msg));
            } else if let Some(tx) = outboxes.get(&conn) {
                tx.send(msg);
            }
        };
        for action in actions {
            match action {
                ServerAction::Persist { doc, changes } if failed.is_none() => {
                    match shared
                        .store
                        .append_chunks_deferred(&doc.to_string(), &changes)
                    {
                        Ok(()) => q.dirty += 1,
                        Err(e) => {
                            warn!(%doc, error = %e, "could not persist changes: rolling back");
                            failed =
                                Some(format!("{doc}: the server could not store the change: {e}"));
                        }
                    }
                }
                ServerAction::Persist { .. } => {}
                // Nothing after a failed write may be acknowledged or fanned out. The
                // first send after it is the pusher's Ack: that device gets an error
                // and keeps its changes pending.
                ServerAction::Send { conn, .. } if failed.is_some() => {
                    if !told_originator {
                        told_originator = true;
                        let frame = internal_error(failed.clone().unwrap_or_default());
                        out(&mut q, conn, Outbound::Frame(frame, Lane::Bulk));
                        out(&mut q, conn, Outbound::Close);
                    }
                }
                ServerAction::Broadcast { .. } if failed.is_some() => {}
                ServerAction::Send { conn, frame, lane } => {
                    out(&mut q, conn, Outbound::Frame(frame, lane));
                }
                // A broadcast reaches many devices: the flusher queues it,
                // outside every lock but its own, in batches that yield.
                ServerAction::Broadcast {
                    doc,
                    base,
                    conns,
                    frame,
                    lane,
                } => q.held.push(Held::Many {
                    doc,
                    base,
                    conns,
                    frame,
                    lane,
                    accepted: Instant::now(),
                }),
                ServerAction::Close { conn, .. } => out(&mut q, conn, Outbound::Close),
            }
        }
        if q.dirty > 0 || !q.held.is_empty() {
            self.wake = true;
        }
        failed.is_none()
    }

    fn stored(&mut self, doc: &DocId) -> Option<Vec<u8>> {
        match self.shared.store.load_doc(&doc.to_string()) {
            Ok(b) => Some(b.unwrap_or_default()),
            Err(e) => {
                warn!(%doc, error = %e, "cannot reload the document from disk");
                None
            }
        }
    }
}

/// An `Internal` error frame: the server could not store what a device sent.
fn internal_error(message: String) -> Bytes {
    Bytes::from(wire::encode(&ServerMsg::Error {
        code: ErrorCode::Internal,
        message,
    }))
}

/// Makes appended writes durable in groups and then releases the sends held
/// behind them, in order. On a failed flush, every device whose messages were
/// held gets an error and is disconnected (nothing is acknowledged); the
/// writes stay in memory and the next flush retries them.
async fn flusher(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shared.flush_wake.notified() => {}
            _ = stop.changed() => return,
        }
        loop {
            let (items, writes) = {
                let mut q = lock(&shared.flushq);
                if q.held.is_empty() && q.dirty == 0 {
                    q.busy = false;
                    break;
                }
                q.busy = true;
                (std::mem::take(&mut q.held), std::mem::take(&mut q.dirty))
            };
            let result = if writes > 0 {
                let store = shared.store.clone();
                let started = Instant::now();
                let r = tokio::task::spawn_blocking(move || store.flush()).await;
                shared.metrics.flushed(started.elapsed());
                match r {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(format!("the flush task failed: {e}")),
                }
            } else {
                Ok(())
            };
            let mut dropped = Vec::new();
            let failed = match result {
                Ok(()) => {
                    if writes > 0 {
                        shared.flushes.fetch_add(1, Ordering::Relaxed);
                        shared.flushed_writes.fetch_add(writes, Ordering::Relaxed);
                    }
                    dropped = release(&shared, items).await;
                    false
                }
                Err(e) => {
                    let outboxes = lock(&shared.outboxes);
                    warn!(error = %e, "flush failed: disconnecting the devices waiting on it");
                    let frame = internal_error(format!("the server could not store changes: {e}"));
                    let mut told = HashSet::new();
                    for item in items {
                        let conns = match item {
                            Held::One(conn, _) => vec![conn],
                            Held::Many { conns, .. } => conns,
                        };
                        for conn in conns {
                            if told.insert(conn) {
                                if let Some(tx) = outboxes.get(&conn) {
                                    tx.send(Outbound::Frame(frame.clone(), Lane::Bulk));
                                    tx.send(Outbound::Close);
                                }
                            }
                        }
                    }
                    true
                }
            };
            if !dropped.is_empty() {
                shared.run(|core, sink| {
                    fell_behind(&shared, core, sink, dropped);
                    None
                });
            }
            if failed {
                // Writes that failed to flush are retried after a pause (sends
                // stay held meanwhile).
                lock(&shared.flushq).dirty += writes;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Documents only the seat authority writes (their ids start with this):
/// `seats/<event>` and `seats/<event>/<user>`.
pub(crate) const DECIDED_DOCS: &str = "seats/";

/// What the shared store gives a node of a cluster.
pub(crate) struct ClusterLink {
    feed: ChangeFeed,
    authority: Authority,
}

/// This node's part in deciding seats, driven by the store's elections.
struct Standing {
    /// What the last election said.
    elected: Option<Elected>,
    /// The epoch this node decides under, while it does.
    deciding: Option<i64>,
    /// The last sequence number of other nodes' rows applied here.
    applied_to: i64,
    /// Seats documents must be read again from the store (this node
    /// stopped deciding; what it decided last may not be stored).
    reload: bool,
}

impl Standing {
    /// Makes the core decide, or stop deciding, as elected. A node that
    /// stops deciding reads its seats documents again from the store (what
    /// it decided last may not be stored); one elected again under a new
    /// epoch stops first (another node may have decided in between, and
    /// its decisions of the old epoch are dropped). It decides only once
    /// every row committed before its election is applied here (all that
    /// earlier authorities decided).
    async fn apply(&mut self, shared: &Arc<Shared>) {
        let current = self.elected.map(|e| e.epoch);
        if self.deciding.is_some() && self.deciding != current {
            lock(&shared.core).set_seat_authority(false);
            self.deciding = None;
            self.reload = true;
            info!("this node no longer decides seats");
        }
        if self.reload {
            self.reload = !reload_decided_docs(shared).await;
        }
        if let Some(e) = self.elected {
            if self.deciding.is_none() && !self.reload && self.applied_to >= e.seen_to {
                lock(&shared.core).set_seat_authority(true);
                self.deciding = Some(e.epoch);
                info!(epoch = e.epoch, "this node decides seats now");
            }
        }
    }
}

/// Reads every seats document again from the store, replacing what the
/// core holds (decisions it made that were not stored are gone). `false`
/// when the store could not be read (tried again later).
async fn reload_decided_docs(shared: &Arc<Shared>) -> bool {
    let ids: Vec<DocId> = lock(&shared.core)
        .doc_ids()
        .filter(|d| matches!(d, DocId::Seats(..) | DocId::SeatCounts(_)))
        .cloned()
        .collect();
    let store = shared.store.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        ids.into_iter()
            .map(|id| {
                let bytes = store.load_doc(&id.to_string())?;
                Ok((id, bytes.unwrap_or_default()))
            })
            .collect::<Result<Vec<_>, StoreError>>()
    })
    .await;
    let docs = match loaded {
        Ok(Ok(docs)) => docs,
        Ok(Err(e)) => {
            warn!(error = %e, "cannot read the seats documents again: retrying");
            return false;
        }
        Err(e) => {
            warn!(error = %e, "the task reading the seats documents failed: retrying");
            return false;
        }
    };
    let mut core = lock(&shared.core);
    for (id, bytes) in docs {
        if let Err(e) = core.load_doc(id, &bytes) {
            warn!(error = %e, "a stored seats document does not load");
        }
    }
    true
}

/// Tells the core of the broadcasts dropped for devices over their outbox
/// bound. A device's writer may have emptied its outbox in between (the
/// drop marked it behind outside the core's lock): it then cleared the mark
/// and asked for a catch-up before the core knew the device was behind, so
/// the catch-up is made here. Without it the device would get nothing of
/// the document again (no fan-out, no heads beacon) and nothing queued
/// would ever drain to ask for it (found by `lanyard-venue --nodes 3` at
/// 5,000 devices: 14 devices on one endpoint lacked every change).
fn fell_behind(shared: &Shared, core: &mut ServerCore, sink: &mut dyn Sink, dropped: Vec<Dropped>) {
    let mut conns = Vec::with_capacity(dropped.len());
    for (conn, doc, base) in dropped {
        core.fell_behind(conn, &doc, base);
        conns.push(conn);
    }
    conns.sort_unstable();
    conns.dedup();
    let drained: Vec<ConnId> = {
        let outboxes = lock(&shared.outboxes);
        conns
            .into_iter()
            .filter(|c| outboxes.get(c).is_some_and(Outbox::drained_already))
            .collect()
    };
    for conn in drained {
        core.drained_into(conn, sink);
    }
}

/// Applies the changes other nodes commit to the shared store, and fans
/// them out to this node's devices (each change once per node: the
/// broadcast path encodes one frame per change for all its devices). The
/// same task follows the seat authority's elections, so that the seats
/// documents are read again with no change of the feed in between.
async fn follow(shared: Arc<Shared>, link: ClusterLink, mut stop: watch::Receiver<bool>) {
    let ClusterLink {
        mut feed,
        mut authority,
    } = link;
    let mut standing = Standing {
        elected: authority.current(),
        deciding: None,
        applied_to: feed.status().last_seq(),
        reload: false,
    };
    let mut revocations = tokio::time::interval(REVOCATIONS_EVERY);
    revocations.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        standing.apply(&shared).await;
        let batch = tokio::select! {
            b = feed.next() => b,
            e = authority.changed() => {
                match e {
                    Some(e) => standing.elected = e,
                    None => return,
                }
                continue;
            }
            _ = revocations.tick() => {
                sync_revocations(&shared).await;
                continue;
            }
            _ = stop.changed() => return,
        };
        let Some(batch) = batch else { return };
        let read = batch.len() as u64;
        if let Some(last) = batch.last() {
            standing.applied_to = standing.applied_to.max(last.seq);
        }
        // Consecutive chunks of one document go in together (moved, not copied).
        let mut chunks = batch.into_iter().peekable();
        while let Some(first) = chunks.next() {
            let mut group = vec![first.data];
            while let Some(next) = chunks.next_if(|c| c.doc == first.doc) {
                group.push(next.data);
            }
            let doc = first.doc;
            match DocId::parse(&doc) {
                Ok(id) => shared.run(|core, sink| {
                    if let Err(e) = core.apply_stored(now(), id, &group, sink) {
                        warn!(error = %e, "a change from another node does not load");
                    }
                    None
                }),
                Err(_) => warn!(doc, "another node stored a document with a bad id: skipped"),
            }
        }
        shared.feed_applied.fetch_add(read, Ordering::Relaxed);
    }
}

/// Per-device sends the flusher makes before it lets other tasks run.
const SENDS_PER_BATCH: usize = 512;

/// Queues held sends in order, in batches of [`SENDS_PER_BATCH`] that
/// yield, so a broadcast to 10,000 devices never holds a lock or a runtime
/// worker for long. Returns the broadcasts dropped for devices over their
/// outbox bound. Sends made meanwhile stay held behind these (the queue is
/// busy), so each device still gets its frames in the order made.
async fn release(shared: &Shared, items: Vec<Held>) -> Vec<Dropped> {
    let mut dropped = Vec::new();
    let mut made = 0;
    for item in items {
        match item {
            Held::One(conn, msg) => {
                if let Some(tx) = lock(&shared.outboxes).get(&conn) {
                    tx.send(msg);
                }
                made += 1;
            }
            Held::Many {
                doc,
                base,
                conns,
                frame,
                lane,
                accepted,
            } => {
                for batch in conns.chunks(SENDS_PER_BATCH) {
                    let (d, queued_to) = broadcast(
                        &lock(&shared.outboxes),
                        shared.outbox_bytes,
                        &doc,
                        &base,
                        batch,
                        &frame,
                        lane,
                    );
                    dropped.extend(d);
                    shared.metrics.fanned_out(accepted.elapsed(), queued_to);
                    made += batch.len();
                    if made >= SENDS_PER_BATCH {
                        made = 0;
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
        if made >= SENDS_PER_BATCH {
            made = 0;
            tokio::task::yield_now().await;
        }
    }
    dropped
}

/// A running server.
pub struct Server {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    accept: JoinHandle<()>,
    pin: String,
    admin: Option<crate::admin::AdminListener>,
}

/// What the admin listener reads of a running server.
#[derive(Clone)]
pub(crate) struct AdminHandle {
    shared: Arc<Shared>,
    data_dir: PathBuf,
    endpoint: quinn::Endpoint,
    stopping: watch::Receiver<bool>,
}

/// See [`Server::backup`].
fn backup(
    shared: &Shared,
    data_dir: &std::path::Path,
    out: impl std::io::Write,
) -> Result<crate::backup::Manifest, crate::backup::BackupError> {
    let meta = crate::backup::backup_meta(shared.store.as_ref())?;
    let mut ids: Vec<DocId> = lock(&shared.core).doc_ids().cloned().collect();
    ids.sort_by_key(ToString::to_string);
    let docs = ids.into_iter().filter_map(|id| {
        let saved = lock(&shared.core).doc(&id).map(|d| d.save());
        saved.map(|bytes| Ok((id, bytes)))
    });
    crate::backup::write_backup(out, data_dir, &meta, docs)
}

/// See [`Server::revoke`].
fn revoke(shared: &Shared, revocation: Revocation) -> Result<usize, StoreError> {
    // The stored list, not this node's: other nodes of a cluster revoke too.
    let mut list = crate::devices::load_revocations(shared.store.as_ref())?;
    if !list.contains(&revocation) {
        list.push(revocation.clone());
        crate::devices::save_revocations(shared.store.as_ref(), &list)?;
    }
    let mut closed = 0;
    shared.run_actions(|core| {
        let actions = core.revoke(revocation);
        closed = actions
            .iter()
            .filter(|a| matches!(a, ServerAction::Close { .. }))
            .count();
        actions
    });
    Ok(closed)
}

/// See [`Server::lift`].
fn lift(shared: &Shared, revocation: &Revocation) -> Result<bool, StoreError> {
    let mut list = crate::devices::load_revocations(shared.store.as_ref())?;
    let before = list.len();
    list.retain(|r| r != revocation);
    let stored = list.len() != before;
    if stored {
        crate::devices::save_revocations(shared.store.as_ref(), &list)?;
    }
    let here = lock(&shared.core).lift(revocation);
    Ok(stored || here)
}

/// How often a node of a cluster reads the revocations other nodes stored.
const REVOCATIONS_EVERY: Duration = Duration::from_secs(2);

/// Takes the revocations stored by other nodes: new ones close their
/// sessions here, lifted ones are lifted here.
async fn sync_revocations(shared: &Arc<Shared>) {
    let store = shared.store.clone();
    let stored =
        tokio::task::spawn_blocking(move || crate::devices::load_revocations(store.as_ref())).await;
    let stored = match stored {
        Ok(Ok(list)) => list,
        Ok(Err(e)) => {
            debug!(error = %e, "cannot read the stored revocations");
            return;
        }
        Err(_) => return,
    };
    let here = lock(&shared.core).revocations();
    for r in stored.iter().filter(|r| !here.contains(r)) {
        info!(event = %r.event, user = %r.user, "revoked on another node");
        shared.run_actions(|core| core.revoke(r.clone()));
    }
    for r in here.iter().filter(|r| !stored.contains(r)) {
        lock(&shared.core).lift(r);
    }
}

impl AdminHandle {
    /// See [`Server::backup`].
    pub(crate) fn backup(
        &self,
        out: impl std::io::Write,
    ) -> Result<crate::backup::Manifest, crate::backup::BackupError> {
        backup(&self.shared, &self.data_dir, out)
    }

    /// See [`Server::revoke`].
    pub(crate) fn revoke(&self, revocation: Revocation) -> Result<usize, StoreError> {
        revoke(&self.shared, revocation)
    }

    /// See [`Server::lift`].
    pub(crate) fn lift(&self, revocation: &Revocation) -> Result<bool, StoreError> {
        lift(&self.shared, revocation)
    }

    /// The revocations in force.
    pub(crate) fn revocations(&self) -> Vec<Revocation> {
        lock(&self.shared.core).revocations()
    }

    /// See [`Server::devices`].
    pub(crate) fn devices(&self, event: &EventId) -> Vec<crate::devices::DeviceEntry> {
        self.shared.devices.of_event(event)
    }

    /// Every counter at once.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        snapshot_of(&self.shared)
    }

    /// Changes accepted and refused per document kind.
    pub(crate) fn changes_by_kind(&self) -> Vec<(&'static str, u64, u64)> {
        lock(&self.shared.core).changes_by_kind()
    }

    /// Documents the server holds.
    pub(crate) fn documents(&self) -> usize {
        lock(&self.shared.core).doc_ids().count()
    }

    /// Bytes the store takes.
    pub(crate) fn store_bytes(&self) -> Result<u64, StoreError> {
        self.shared.store.size_bytes()
    }

    /// The histograms.
    pub(crate) fn metrics(&self) -> &crate::admin::Metrics {
        &self.shared.metrics
    }

    /// Whether this node decides seats (always alone; one node of a cluster).
    pub(crate) fn deciding(&self) -> bool {
        lock(&self.shared.core).is_seat_authority()
    }

    /// The change feed: connected, chunks applied, reconnections (a shared
    /// PostgreSQL store only).
    pub(crate) fn feed(&self) -> Option<(bool, u64, u64)> {
        let f = self.shared.feed.as_ref()?;
        Some((
            f.connected(),
            self.shared.feed_applied.load(Ordering::Relaxed),
            f.reconnects(),
        ))
    }

    /// Why the server should not be sent devices now, if it should not.
    pub(crate) fn not_ready(&self) -> Option<String> {
        if *self.stopping.borrow() {
            return Some("the server is shutting down".into());
        }
        if let Err(e) = self.endpoint.local_addr() {
            return Some(format!("the QUIC endpoint does not listen: {e}"));
        }
        if let Err(e) = self.shared.store.size_bytes() {
            return Some(format!("the store cannot be read: {e}"));
        }
        if let Some(feed) = &self.shared.feed {
            if !feed.connected() {
                return Some(
                    "the feed of other nodes' changes has no database connection (reconnecting)"
                        .into(),
                );
            }
        }
        let cfg = &self.shared.admission_config;
        let open = self.shared.open.load(Ordering::SeqCst);
        if open >= cfg.max_connections {
            return Some(format!(
                "admission refuses every new device: {open} connections open, at most {}",
                cfg.max_connections
            ));
        }
        let rss = ProcessFigures::own().rss_bytes;
        if rss > cfg.max_memory_bytes {
            return Some(format!(
                "admission refuses every new device: {} MiB resident, at most {} MiB",
                rss >> 20,
                cfg.max_memory_bytes >> 20
            ));
        }
        None
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.endpoint.local_addr().ok())
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

/// The RTT assumed before the first sample (see [`transport_config`]).
pub const INITIAL_RTT: Duration = Duration::from_secs(1);

/// QUIC transport settings for thousands of slow clients on WiFi, not one fast
/// one: modest flow-control windows (quinn's defaults allow ~10 MB of send
/// buffer per connection), few streams, keep-alives that keep NAT bindings, and
/// an idle timeout that frees a dead device's state in half a minute.
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(4u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .keep_alive_interval(Some(Duration::from_secs(5)))
        .stream_receive_window((256u32 << 10).into())
        .receive_window((512u32 << 10).into())
        .send_window(1 << 20)
        // Until a first RTT sample, a handshake flight is resent after
        // three times this. Venue WiFi at its worst has RTTs of 1.5-2.5 s
        // (the collapsing profile): from 300 ms every handshake flight went
        // out two or three times (7.9 CRYPTO frames per handshake).
        .initial_rtt(INITIAL_RTT)
        // No path MTU discovery: its probes (up to 1452 B, several per
        // connection) cost ~6 KB per connection, a fifth of a second of a
        // collapsing 32 kbit/s link each time a device reconnects, to
        // enlarge packets this protocol's small frames rarely fill.
        .mtu_discovery_config(None);
    if let Ok(idle) = Duration::from_secs(30).try_into() {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// How long a stateless Retry's token stays valid.
pub const RETRY_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Receive buffer the server asks the kernel for. A whole hall reconnecting
/// at once sends tens of thousands of datagrams within a second (every
/// device's Initial, and its retransmissions while the server is busy); when
/// the buffer overflows the kernel drops them, and a device whose Initial is
/// dropped a few times in a row waits out QUIC's doubling probe timer (at
/// 10,000 devices: 48,644 datagrams dropped in one run with 8 MiB, and a
/// storm tail of handshakes with no answer for 20 s). A full buffer is only
/// memory while it is full. Linux caps the request at `net.core.rmem_max`
/// unless the server may force it (root or `CAP_NET_ADMIN`); the size
/// granted is logged, with a warning when it is short.
pub const UDP_RECV_BUFFER_BYTES: usize = 64 << 20;

/// Send buffer the server asks the kernel for (same caps, `wmem_max`):
/// goodbyes and handshake flights to a whole hall at once.
pub const UDP_SEND_BUFFER_BYTES: usize = 8 << 20;

/// Sets a socket buffer to `want`: forced past the kernel's cap where the
/// process may (`force`), else asked for up to the cap. Best effort: a
/// smaller buffer is still a working server, it only drops bursts sooner.
fn size_buffer(
    socket: &socket2::Socket,
    want: usize,
    force: impl FnOnce(&socket2::Socket, usize) -> nix::Result<()>,
    ask: impl FnOnce(&socket2::Socket, usize) -> std::io::Result<()>,
) {
    if force(socket, want).is_err() {
        let _ = ask(socket, want);
    }
}

/// Binds the server's UDP socket with [`UDP_RECV_BUFFER_BYTES`] /
/// [`UDP_SEND_BUFFER_BYTES`] buffers.
fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Accept IPv4 too when listening on [::].
        let _ = socket.set_only_v6(false);
    }
    size_buffer(
        &socket,
        UDP_RECV_BUFFER_BYTES,
        |s, n| setsockopt(s, sockopt::RcvBufForce, &n),
        Socket::set_recv_buffer_size,
    );
    size_buffer(
        &socket,
        UDP_SEND_BUFFER_BYTES,
        |s, n| setsockopt(s, sockopt::SndBufForce, &n),
        Socket::set_send_buffer_size,
    );
    socket.bind(&addr.into())?;
    let recv = socket.recv_buffer_size().unwrap_or(0);
    let send = socket.send_buffer_size().unwrap_or(0);
    // Linux reports twice the size set (its bookkeeping).
    if recv < UDP_RECV_BUFFER_BYTES {
        warn!(
            granted = recv,
            wanted = UDP_RECV_BUFFER_BYTES,
            "the UDP receive buffer is smaller than asked for: a reconnect storm may \
             lose datagrams; raise it with `sysctl -w net.core.rmem_max={UDP_RECV_BUFFER_BYTES}` \
             or run with CAP_NET_ADMIN"
        );
    }
    info!(recv, send, "UDP socket buffers");
    Ok(socket.into())
}

/// The inode of a socket, which names it in `/proc/net/udp` (Linux).
fn socket_inode(socket: &impl std::os::fd::AsRawFd) -> Option<String> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok()?;
    let link = link.to_string_lossy();
    Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
}

/// Datagrams the kernel dropped on the socket with `inode` because its
/// receive buffer was full (the `drops` column of `/proc/net/udp`), if found.
fn udp_drops(inode: &str) -> Option<u64> {
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            drops_of(&text, inode)
        })
}

/// The `drops` of the socket with `inode` in a `/proc/net/udp` table.
fn drops_of(table: &str, inode: &str) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
        (fields.get(9) == Some(&inode))
            .then(|| fields.last().and_then(|d| d.parse().ok()))
            .flatten()
    })
}

impl Server {
    /// Opens the data directory, loads every document and starts listening.
    pub async fn start(opts: ServerOptions) -> Result<Server, StartError> {
        let marker = opts.data_dir.join(STORE_MARKER);
        match &opts.store {
            StoreLocation::Sled => {
                let _ = std::fs::remove_file(&marker);
                let store = SledStore::open(opts.data_dir.join("db"))?;
                Self::start_inner(opts, Arc::new(store), None).await
            }
            StoreLocation::Postgres(url) => {
                let url = url.clone();
                let name = opts.listen.to_string();
                // Connecting blocks (its own runtime answers).
                let (store, link) = tokio::task::spawn_blocking(move || {
                    let store = PgStore::connect_as(&url, &name)?;
                    // Followed before the documents are loaded: nothing
                    // committed meanwhile falls between the two.
                    let feed = store.follow()?;
                    let authority = store.elect(DECIDED_DOCS);
                    Ok::<_, StoreError>((store, ClusterLink { feed, authority }))
                })
                .await
                .map_err(|e| StoreError::Database(format!("the connecting task failed: {e}")))??;
                info!(store = %opts.store, node = store.node(), "documents in PostgreSQL");
                // Tells the offline commands (backup, export, revoke) that
                // the sled directory here is not where the documents are.
                let _ = std::fs::create_dir_all(&opts.data_dir);
                if let Err(e) = std::fs::write(&marker, format!("{}\n", opts.store)) {
                    warn!(path = %marker.display(), error = %e, "cannot note the store in the data directory");
                }
                Self::start_inner(opts, Arc::new(store), Some(link)).await
            }
        }
    }

    /// Like [`Server::start`] but on any [`Store`] (the data directory still
    /// holds the certificate and keys).
    pub async fn start_with_store(
        opts: ServerOptions,
        store: Arc<dyn Store>,
    ) -> Result<Server, StartError> {
        Self::start_inner(opts, store, None).await
    }

    async fn start_inner(
        opts: ServerOptions,
        store: Arc<dyn Store>,
        cluster: Option<ClusterLink>,
    ) -> Result<Server, StartError> {
        let identity = Identity::load_or_create(&opts.data_dir)?;
        let mut core = ServerCore::new(ServerConfig {
            token_key: identity.token_public_key(),
            limits: opts.limits,
            pass_signer: Some(identity.signer()),
        });
        // In a cluster, seats are decided once elected.
        core.set_seat_authority(cluster.is_none());
        for id in store.doc_ids()? {
            let doc = DocId::parse(&id).map_err(|_| StartError::BadDocId(id.clone()))?;
            let bytes = store.load_doc(&id)?.unwrap_or_default();
            core.load_doc(doc, &bytes)?;
        }
        for r in crate::devices::load_revocations(store.as_ref())? {
            core.revoke(r);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| StartError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(identity.cert_chain(), identity.private_key())
            .map_err(|e| StartError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![wire::ALPN.to_vec()];
        // Reconnecting devices resume their TLS session: stateless tickets
        // (no memory per device), one per handshake; the resumed handshake
        // skips the certificate and its signature.
        tls.ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| StartError::Tls(e.to_string()))?;
        tls.send_tls13_tickets = 1;
        // No 0-RTT: early data can be replayed by anyone who captured it,
        // and every request of this protocol may write (a Push), so none is
        // safe to accept before the handshake completes.
        tls.max_early_data_size = 0;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| StartError::Tls(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(transport_config()));
        // A Retry's token must outlive the queues of a storm: with thousands
        // of Initials waiting in the socket buffer (and in busy devices), the
        // reply to a Retry reached the server more than quinn's default 15 s
        // later, was refused as an invalid token, and the device started over.
        config.retry_token_lifetime(RETRY_TOKEN_LIFETIME);
        let bind_error = |source| StartError::Bind {
            addr: opts.listen,
            source,
        };
        let socket = bind_udp(opts.listen).map_err(bind_error)?;
        let udp_inode = socket_inode(&socket);
        let runtime = quinn::default_runtime()
            .ok_or_else(|| bind_error(std::io::Error::other("no async runtime found")))?;
        // Reset key and connection-id key from the data directory: after a
        // crash, devices on the lost connections get a stateless reset.
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(identity.reset_key()));
        let cid_key = identity.cid_key();
        endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        let endpoint = quinn::Endpoint::new(endpoint_config, Some(config), socket, runtime)
            .map_err(bind_error)?;
        let shared = Arc::new(Shared {
            metrics: crate::admin::Metrics::default(),
            admission_config: opts.admission,
            udp_inode,
            core: Mutex::new(core),
            store,
            outboxes: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            limits: opts.limits,
            admission: Mutex::new(Admission::new(opts.admission)),
            open: AtomicUsize::new(0),
            handshaking: AtomicUsize::new(0),
            handshake_done: tokio::sync::Notify::new(),
            live: Mutex::new(HashMap::new()),
            closed_tx_bytes: AtomicU64::new(0),
            closed_traffic: Mutex::new(crate::stats::TrafficStats::default()),
            frame_bytes: AtomicU64::new(0),
            closed_rx_bytes: AtomicU64::new(0),
            flushq: Mutex::new(FlushQueue::default()),
            flush_wake: tokio::sync::Notify::new(),
            flushes: AtomicU64::new(0),
            flushed_writes: AtomicU64::new(0),
            outbox_bytes: opts.outbox_bytes,
            outbox_peak: Arc::new(AtomicUsize::new(0)),
            gate: Mutex::new(HelloGate::new(HelloGateConfig {
                timeout: opts.hello_timeout,
                crowded_timeout: HelloGateConfig::default()
                    .crowded_timeout
                    .min(opts.hello_timeout),
                ..HelloGateConfig::default()
            })),
            waiting: Mutex::new(HashMap::new()),
            devices: crate::devices::Devices::default(),
            feed: cluster.as_ref().map(|c| c.feed.status()),
            feed_applied: AtomicU64::new(0),
        });
        let (shutdown, rx) = watch::channel(false);
        tokio::spawn(flusher(shared.clone(), rx.clone()));
        if let Some(link) = cluster {
            tokio::spawn(follow(shared.clone(), link, rx.clone()));
        }
        tokio::spawn(timers(shared.clone(), rx.clone()));
        let admin = match opts.admin {
            Some(addr) => Some(
                crate::admin::start(
                    addr,
                    &opts.data_dir,
                    AdminHandle {
                        shared: shared.clone(),
                        data_dir: opts.data_dir.clone(),
                        endpoint: endpoint.clone(),
                        stopping: rx.clone(),
                    },
                )
                .await
                .map_err(|source| StartError::Admin { addr, source })?,
            ),
            None => None,
        };
        let accept = tokio::spawn(accept_loop(endpoint.clone(), shared.clone(), rx));
        Ok(Server {
            endpoint,
            shared,
            shutdown,
            accept,
            pin: identity.pin(),
            admin,
        })
    }

    /// Revokes access (see [`ServerCore::revoke`]): stored durably first,
    /// then the sessions it covers are closed. Returns how many were.
    pub fn revoke(&self, revocation: Revocation) -> Result<usize, StoreError> {
        revoke(&self.shared, revocation)
    }

    /// Lifts a revocation; whether there was one.
    pub fn lift(&self, revocation: &Revocation) -> Result<bool, StoreError> {
        lift(&self.shared, revocation)
    }

    /// The devices of `event` seen since the server started.
    pub fn devices(&self, event: &EventId) -> Vec<crate::devices::DeviceEntry> {
        self.shared.devices.of_event(event)
    }

    /// Writes an online backup to `out` (see [`crate::backup`]): each
    /// document as it is in memory, under its lock, while devices keep
    /// writing. Blocking: call it off the async runtime.
    pub fn backup(
        &self,
        data_dir: &std::path::Path,
        out: impl std::io::Write,
    ) -> Result<crate::backup::Manifest, crate::backup::BackupError> {
        backup(&self.shared, data_dir, out)
    }

    /// The admin listener's address, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The certificate pin.
    pub fn pin(&self) -> &str {
        &self.pin
    }

    /// Core counters.
    pub fn stats(&self) -> ServerStats {
        lock(&self.shared.core).stats()
    }

    /// Admission counters.
    pub fn admission_stats(&self) -> AdmissionStats {
        lock(&self.shared.admission).stats()
    }

    /// Every counter at once, with this process's memory and CPU figures.
    pub fn snapshot(&self) -> StatsSnapshot {
        snapshot_of(&self.shared)
    }

    /// Datagrams the kernel dropped because the server's UDP receive buffer
    /// was full (Linux; 0 elsewhere). Rising during a storm: raise the
    /// buffer (see [`UDP_RECV_BUFFER_BYTES`]).
    pub fn udp_receive_drops(&self) -> u64 {
        self.shared
            .udp_inode
            .as_deref()
            .and_then(udp_drops)
            .unwrap_or(0)
    }

    /// The most bytes of frames one device's outbox has held (see
    /// [`ServerOptions::outbox_bytes`]).
    pub fn outbox_peak_bytes(&self) -> usize {
        self.shared.outbox_peak.load(Ordering::Relaxed)
    }

    /// Connections admitted and not yet ended.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Reads a document as the server holds it.
    pub fn with_doc<R>(
        &self,
        doc: &DocId,
        f: impl FnOnce(Option<&automerge::Automerge>) -> R,
    ) -> R {
        f(lock(&self.shared.core).doc(doc).as_deref())
    }

    /// Stops accepting, closes every connection, waits briefly for them to go, flushes.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.endpoint
            .close(ErrorCode::Shutdown.to_u32().into(), b"server shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(3), self.endpoint.wait_idle()).await;
        let _ = self.accept.await;
        if let Some(admin) = self.admin {
            admin.stop().await;
        }
        info!("server stopped");
    }
}

/// Every counter of `shared` at once, with this process's memory and CPU figures.
fn snapshot_of(shared: &Shared) -> StatsSnapshot {
    let (mut tx, mut rx) = (0, 0);
    let mut traffic = *lock(&shared.closed_traffic);
    for c in lock(&shared.live).values() {
        let s = c.stats();
        tx += s.udp_tx.bytes;
        rx += s.udp_rx.bytes;
        traffic.add_connection(&s);
        traffic.handshakes += 1;
    }
    traffic.frame_bytes = shared.frame_bytes.load(Ordering::Relaxed);
    let (core, sessions) = {
        let core = lock(&shared.core);
        (core.stats(), core.session_count())
    };
    let process = ProcessFigures::own();
    StatsSnapshot {
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        open_connections: shared.open.load(Ordering::SeqCst),
        sessions,
        bytes_sent: tx + shared.closed_tx_bytes.load(Ordering::Relaxed),
        bytes_received: rx + shared.closed_rx_bytes.load(Ordering::Relaxed),
        admission: lock(&shared.admission).stats(),
        changes_accepted: core.changes_accepted,
        changes_refused: core.changes_refused,
        broadcast_frames: core.broadcast_frames,
        broadcast_sends: core.broadcast_sends,
        flushes: shared.flushes.load(Ordering::Relaxed),
        flushed_writes: shared.flushed_writes.load(Ordering::Relaxed),
        rss_bytes: process.rss_bytes,
        peak_rss_bytes: process.peak_rss_bytes,
        cpu_seconds: process.cpu_seconds,
        traffic,
        outbox_peak_bytes: shared.outbox_peak.load(Ordering::Relaxed) as u64,
        udp_receive_drops: shared.udp_inode.as_deref().and_then(udp_drops).unwrap_or(0),
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut memory = (Instant::now(), ProcessFigures::own().rss_bytes);
    // Handshakes over the rate, first come first served (see `Admission`).
    let mut waiting: VecDeque<quinn::Incoming> = VecDeque::new();
    loop {
        let now = Instant::now();
        if now.duration_since(memory.0) > Duration::from_millis(100) {
            memory = (now, ProcessFigures::own().rss_bytes);
        }
        while !waiting.is_empty() {
            let open = shared.open.load(Ordering::SeqCst);
            let handshaking = shared.handshaking.load(Ordering::SeqCst);
            let admitted = lock(&shared.admission).admit_waiting(
                now,
                open,
                handshaking,
                memory.1,
                rand::random::<f64>(),
            );
            match (admitted, waiting.pop_front()) {
                (Some(decision), Some(incoming)) => admit(incoming, decision, &shared),
                (None, Some(incoming)) => {
                    waiting.push_front(incoming);
                    break;
                }
                (_, None) => break,
            }
        }
        // Waiting for a token, or (with tokens to spare) for a handshake in
        // progress to finish, which `handshake_done` signals.
        let wake = (!waiting.is_empty()).then(|| {
            let d = lock(&shared.admission).until_token(now);
            if d.is_zero() {
                Duration::from_millis(50)
            } else {
                d
            }
        });
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = tokio::time::sleep(wake.unwrap_or_default()), if wake.is_some() => continue,
            _ = shared.handshake_done.notified(), if wake.is_some() => continue,
            _ = stop.changed() => break,
        };
        let Some(incoming) = incoming else { break };
        let now = Instant::now();
        let open = shared.open.load(Ordering::SeqCst);
        let decision = lock(&shared.admission).decide(
            now,
            open,
            memory.1,
            incoming.remote_address_validated(),
            waiting.len(),
            shared.handshaking.load(Ordering::SeqCst),
            rand::random::<f64>(),
        );
        match decision {
            Decision::Wait => waiting.push_back(incoming),
            other => admit(incoming, other, &shared),
        }
    }
    for incoming in waiting {
        incoming.refuse();
    }
}

/// Carries out an admission decision on an incoming connection.
fn admit(incoming: quinn::Incoming, decision: Decision, shared: &Arc<Shared>) {
    let peer = incoming.remote_address();
    match decision {
        Decision::Refuse | Decision::Wait => {
            info!(%peer, reason = "admission: the handshake queue is full", "refused");
            incoming.refuse();
        }
        Decision::Retry => {
            if incoming.may_retry() {
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
            } else {
                incoming.refuse();
            }
        }
        Decision::Overloaded(after) => {
            info!(
                %peer,
                reason = "admission: over the connection or memory limit",
                retry_after_ms = after.as_millis() as u64,
                "refused"
            );
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await {
                    conn.close(
                        ErrorCode::Overloaded.to_u32().into(),
                        wire::retry_after_reason(after).as_bytes(),
                    );
                }
            });
        }
        Decision::Accept => {
            let shared = shared.clone();
            shared.open.fetch_add(1, Ordering::SeqCst);
            shared.handshaking.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                let handshake = incoming.await;
                shared.handshaking.fetch_sub(1, Ordering::SeqCst);
                shared.handshake_done.notify_one();
                match handshake {
                    Ok(conn) => serve_connection(conn, shared.clone()).await,
                    Err(e) => debug!(%remote, error = %e, "handshake failed"),
                }
                shared.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
}

/// The timers: heads beacons of the core, and the Hello gate, checked a
/// few times a second.
async fn timers(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    const TICK: Duration = Duration::from_millis(200);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => return,
        }
        let t = now();
        let due = lock(&shared.core).poll_timeout().is_some_and(|d| d <= t);
        if due {
            shared.run_actions(|core| core.handle_timeout(t));
        }
        let expired = lock(&shared.gate).expire(t);
        for e in expired {
            let Some(w) = lock(&shared.waiting).remove(&(e.key as usize)) else {
                continue;
            };
            let message = e.message();
            info!(peer = %w.conn.remote_address(), reason = %message, "refused");
            match w.stream {
                // The stream's reader sends the error and closes it.
                Some(tx) => {
                    let _ = tx.send(message);
                }
                None => w
                    .conn
                    .close(ErrorCode::Protocol.to_u32().into(), message.as_bytes()),
            }
        }
    }
}

/// The connection no longer waits for a Hello (it sent one, or ended).
fn passed_gate(shared: &Shared, key: usize) {
    lock(&shared.gate).passed(key as u64);
    lock(&shared.waiting).remove(&key);
}

async fn serve_connection(conn: quinn::Connection, shared: Arc<Shared>) {
    let remote = conn.remote_address();
    debug!(%remote, "connection");
    let key = conn.stable_id();
    lock(&shared.live).insert(key, conn.clone());
    lock(&shared.admission).observe_open(shared.open.load(Ordering::SeqCst));
    lock(&shared.waiting).insert(
        key,
        Waiting {
            conn: conn.clone(),
            stream: None,
        },
    );
    lock(&shared.gate).opened(key as u64, now());
    let mut first = true;
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                // The first stream carries the Hello the gate waits for.
                let expiry = if first {
                    first = false;
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    if let Some(w) = lock(&shared.waiting).get_mut(&key) {
                        w.stream = Some(tx);
                    }
                    Some((key, rx))
                } else {
                    None
                };
                tokio::spawn(serve_stream(
                    id,
                    conn.clone(),
                    send,
                    recv,
                    shared.clone(),
                    expiry,
                ));
            }
            Err(e) => {
                debug!(%remote, error = %e, "connection ended");
                break;
            }
        }
    }
    passed_gate(&shared, key);
    lock(&shared.live).remove(&key);
    let stats = conn.stats();
    {
        let mut t = lock(&shared.closed_traffic);
        t.add_connection(&stats);
        t.handshakes += 1;
    }
    shared
        .closed_tx_bytes
        .fetch_add(stats.udp_tx.bytes, Ordering::Relaxed);
    shared
        .closed_rx_bytes
        .fetch_add(stats.udp_rx.bytes, Ordering::Relaxed);
}

async fn serve_stream(
    id: ConnId,
    conn: quinn::Connection,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    shared: Arc<Shared>,
    expiry: Option<(usize, tokio::sync::oneshot::Receiver<String>)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let behind = Arc::new(std::sync::atomic::AtomicBool::new(false));
    lock(&shared.outboxes).insert(
        id,
        Outbox {
            tx,
            queued: queued.clone(),
            peak: shared.outbox_peak.clone(),
            behind: behind.clone(),
        },
    );
    lock(&shared.core).connect(id);
    let writer = tokio::spawn(write_loop(
        conn.clone(),
        send,
        rx,
        Drain {
            id,
            queued,
            behind,
            shared: shared.clone(),
        },
    ));
    let limit = shared.limits.max_frame;
    let (gate_key, mut expired) = match expiry {
        Some((key, rx)) => (Some(key), Some(rx)),
        None => (None, None),
    };
    let peer = conn.remote_address();
    let mut who: Option<lanyard_protocol::TokenClaims> = None;
    let mut last_seen = Instant::now();
    let code = loop {
        let read = match expired.as_mut() {
            // Until the Hello is accepted, the gate may give up on it.
            Some(rx) => tokio::select! {
                r = read_frame(&mut recv, limit) => r,
                message = rx => {
                    let message = message.unwrap_or_else(|_| "no Hello in time".into());
                    shared.run_actions(|core| core.close_session(id, ErrorCode::Protocol, message));
                    break Some(ErrorCode::Protocol);
                }
            },
            None => read_frame(&mut recv, limit).await,
        };
        match read {
            Ok(Some(body)) => {
                shared.run(|core, sink| core.route_frame(now(), id, &body, sink));
                if let Some(c) = &who {
                    if last_seen.elapsed() >= Duration::from_secs(1) {
                        last_seen = Instant::now();
                        shared.devices.seen(c, unix_ms());
                    }
                }
                if who.is_none() {
                    who = lock(&shared.core)
                        .session(id)
                        .and_then(|s| s.claims().cloned());
                    if let Some(c) = &who {
                        shared.devices.connected(c, peer.to_string(), unix_ms());
                        last_seen = Instant::now();
                        info!(
                            event = %c.event,
                            user = %c.user,
                            device = %c.device,
                            role = ?c.role,
                            %peer,
                            "connected"
                        );
                    }
                }
                if expired.is_some()
                    && lock(&shared.core)
                        .session(id)
                        .is_some_and(|s| s.claims().is_some())
                {
                    expired = None;
                    if let Some(key) = gate_key {
                        passed_gate(&shared, key);
                    }
                }
            }
            Ok(None) => break None,
            Err(ReadFailure::Frame(e)) => {
                debug!(conn = id, error = %e, "bad frame");
                let code = e.code();
                shared.run_actions(|core| core.fatal(id, &e));
                break Some(code);
            }
            Err(ReadFailure::Gone) => break None,
        }
    };
    if let Some(code) = code {
        let _ = recv.stop(code.to_u32().into());
    }
    lock(&shared.core).disconnect(id);
    lock(&shared.outboxes).remove(&id);
    let by_server = writer.await.ok().flatten();
    let reason = by_server.unwrap_or_else(|| match code {
        Some(c) => format!("{c:?}: a frame the server cannot read"),
        None => match conn.close_reason() {
            Some(r) => format!("connection: {r}"),
            None => "the device ended its stream".into(),
        },
    });
    if let Some(c) = &who {
        shared.devices.closed(c, unix_ms());
    }
    match &who {
        Some(c) => info!(
            event = %c.event,
            user = %c.user,
            device = %c.device,
            %peer,
            %reason,
            "closed"
        ),
        None => info!(%peer, %reason, "refused"),
    }
}

/// What the writer needs to report an emptied queue: a device that fell
/// behind then gets its catch-up.
struct Drain {
    id: ConnId,
    queued: Arc<AtomicUsize>,
    behind: Arc<std::sync::atomic::AtomicBool>,
    shared: Arc<Shared>,
}

impl Drain {
    /// `len` bytes were written.
    fn written(&self, len: usize) {
        self.shared
            .frame_bytes
            .fetch_add(len as u64, Ordering::Relaxed);
        let left = self.queued.fetch_sub(len, Ordering::SeqCst) - len;
        if left == 0 && self.behind.load(Ordering::SeqCst) {
            // Cleared under the core's lock, before the catch-up is queued:
            // broadcasts made after it reach the device again, behind it.
            let (id, behind) = (self.id, &self.behind);
            self.shared.run(|core, sink| {
                // Once: the flusher may have seen the empty outbox first.
                if behind.swap(false, Ordering::AcqRel) {
                    core.drained_into(id, sink);
                }
                None
            });
        }
    }
}

/// Writes a session's frames: bulk frames on its own stream, schedule pushes
/// on a server-opened unidirectional stream with a higher priority, so a room
/// change overtakes a note upload or a first download queued before it.
async fn write_loop(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    drain: Drain,
) -> Option<String> {
    /// Priority of the schedule stream (bulk streams have quinn's default, 0).
    const SCHEDULE_PRIORITY: i32 = 10;
    let mut schedule: Option<quinn::SendStream> = None;
    // The last bulk frame: when the server closes the session, the error
    // frame it sent first says why (for the log).
    let mut last: Option<Bytes> = None;
    let mut closed_by_server = None;
    while let Some(out) = rx.recv().await {
        match out {
            Outbound::Frame(f, Lane::Bulk) => {
                last = Some(f.clone());
                let len = f.len();
                if send.write_chunk(f).await.is_err() {
                    break;
                }
                drain.written(len);
            }
            Outbound::Frame(f, Lane::Schedule) => {
                if schedule.is_none() {
                    match conn.open_uni().await {
                        Ok(s) => {
                            let _ = s.set_priority(SCHEDULE_PRIORITY);
                            schedule = Some(s);
                        }
                        Err(_) => break,
                    }
                }
                if let Some(s) = schedule.as_mut() {
                    let len = f.len();
                    if s.write_chunk(f).await.is_err() {
                        break;
                    }
                    drain.written(len);
                }
            }
            Outbound::Close => {
                closed_by_server = Some(close_reason(last.as_ref()));
                break;
            }
        }
    }
    // Deliver what was written (the error frame, if any), then end the streams.
    if let Some(mut s) = schedule {
        let _ = s.finish();
    }
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
    closed_by_server
}

/// Why the server closed a session: the error frame it sent before closing.
fn close_reason(last: Option<&Bytes>) -> String {
    let msg = last
        .filter(|f| f.len() >= HEADER_LEN)
        .and_then(|f| wire::decode::<ServerMsg>(&f[HEADER_LEN..]).ok());
    match msg {
        Some(ServerMsg::Error { code, message }) => format!("{code:?}: {message}"),
        _ => "closed by the server".into(),
    }
}

enum ReadFailure {
    Frame(FrameError),
    Gone,
}

/// Reads one frame: `Ok(None)` at a clean end of stream.
async fn read_frame(
    recv: &mut quinn::RecvStream,
    limit: usize,
) -> Result<Option<Vec<u8>>, ReadFailure> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match recv.read(&mut header[got..]).await {
            Ok(Some(n)) => got += n,
            Ok(None) if got == 0 => return Ok(None),
            Ok(None) => return Err(ReadFailure::Frame(FrameError::Truncated)),
            Err(_) => return Err(ReadFailure::Gone),
        }
    }
    let len = wire::body_len(header, limit).map_err(ReadFailure::Frame)?;
    // Memory grows with the bytes that actually arrive, not with the length
    // a header announces: a client announcing 8 MiB frames and trickling
    // them costs what it sent.
    let mut body = Vec::with_capacity(len.min(READ_CHUNK));
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(ReadFailure::Frame(FrameError::Truncated)),
            Err(_) => return Err(ReadFailure::Gone),
        }
    }
    Ok(Some(body))
}

/// First allocation for a frame body; it grows as bytes arrive.
const READ_CHUNK: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox() -> (Outbox, mpsc::UnboundedReceiver<Outbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let out = Outbox {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            peak: Arc::new(AtomicUsize::new(0)),
            behind: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        (out, rx)
    }

    /// The catch-up of a device that fell behind is made by whoever comes
    /// second, its writer's drain or the core hearing of the drop, once.
    #[test]
    fn a_device_behind_gets_its_catch_up_once_whoever_comes_second() {
        let (out, _rx) = outbox();
        // The writer drained first and cleared the mark: now.
        assert!(out.drained_already());
        // Still queued: the writer's drain will ask.
        out.behind.store(true, Ordering::SeqCst);
        out.queued.store(10, Ordering::SeqCst);
        assert!(!out.drained_already());
        assert!(out.behind.load(Ordering::SeqCst));
        // Emptied before the mark was made: now, and the mark is cleared so
        // the writer does not ask again.
        out.queued.store(0, Ordering::SeqCst);
        assert!(out.drained_already());
        assert!(!out.behind.load(Ordering::SeqCst));
    }

    /// The seats documents are the ones the store guards for the authority.
    #[test]
    fn the_guarded_prefix_covers_exactly_the_seats_documents() {
        let e = EventId::new("conf").unwrap();
        let u = lanyard_protocol::UserId::new("ann").unwrap();
        for d in [
            DocId::Seats(e.clone(), u.clone()),
            DocId::SeatCounts(e.clone()),
        ] {
            assert!(d.to_string().starts_with(DECIDED_DOCS), "{d}");
        }
        for d in [
            DocId::Agenda(e.clone()),
            DocId::Attendee(e.clone(), u),
            DocId::Checkins(e),
        ] {
            assert!(!d.to_string().starts_with(DECIDED_DOCS), "{d}");
        }
    }

    /// Over the bound a broadcast is dropped and reported, and later ones
    /// too until the device drains; a frame larger than the bound still goes
    /// to an empty outbox (nothing would drain to send its catch-up).
    #[test]
    fn a_broadcast_is_dropped_only_behind_queued_bytes_over_the_bound() {
        let doc = DocId::parse("agenda/venue").unwrap_or_else(|e| panic!("{e}"));
        let (out, mut rx) = outbox();
        let outboxes = HashMap::from([(7, out)]);
        let big = Bytes::from(vec![0u8; 300]);
        let (dropped, queued) = broadcast(&outboxes, 100, &doc, &[], &[7], &big, Lane::Schedule);
        assert!(
            dropped.is_empty() && queued == 1,
            "an empty outbox takes a frame over the bound"
        );
        assert!(matches!(rx.try_recv(), Ok(Outbound::Frame(f, _)) if f.len() == 300));
        let small = Bytes::from(vec![0u8; 10]);
        let (dropped, queued) = broadcast(&outboxes, 100, &doc, &[], &[7], &small, Lane::Schedule);
        assert_eq!(
            (dropped.len(), queued),
            (1, 0),
            "300 B queued: over the bound"
        );
        assert!(outboxes[&7].behind.load(Ordering::Acquire));
        // Behind: nothing more is queued, and nothing more reported.
        let (dropped, queued) = broadcast(&outboxes, 100, &doc, &[], &[7], &small, Lane::Schedule);
        assert!(dropped.is_empty() && queued == 0);
        assert!(rx.try_recv().is_err());
        assert_eq!(outboxes[&7].queued.load(Ordering::Relaxed), 300);
    }

    /// The server's socket gets the buffers it asks for, up to the kernel's cap.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_udp_socket_gets_large_buffers_up_to_the_kernel_cap() {
        let cap = |name: &str| -> usize {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        let Ok(socket) = bind_udp("127.0.0.1:0".parse().expect("address")) else {
            panic!("cannot bind a UDP socket on loopback");
        };
        let socket = socket2::Socket::from(socket);
        let recv = socket.recv_buffer_size().expect("SO_RCVBUF");
        let send = socket.send_buffer_size().expect("SO_SNDBUF");
        // Linux grants min(asked, cap) and reports twice that (bookkeeping).
        // Forced past the cap as root, else capped.
        let want_recv = UDP_RECV_BUFFER_BYTES.min(cap("rmem_max"));
        let want_send = UDP_SEND_BUFFER_BYTES.min(cap("wmem_max"));
        assert!(recv >= want_recv, "receive buffer {recv} < {want_recv}");
        assert!(send >= want_send, "send buffer {send} < {want_send}");
        assert!(recv > cap("rmem_default") || want_recv <= cap("rmem_default"));
    }

    #[test]
    fn datagrams_dropped_on_a_full_receive_buffer_are_counted() {
        use std::net::UdpSocket;
        // A tiny buffer nobody reads: the kernel drops what does not fit.
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .expect("a UDP socket");
        socket.set_recv_buffer_size(1).expect("SO_RCVBUF");
        socket
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("address").into())
            .expect("bind");
        let socket: UdpSocket = socket.into();
        let inode = socket_inode(&socket).expect("the socket's inode");
        assert_eq!(udp_drops(&inode), Some(0), "nothing dropped yet");
        let to = socket.local_addr().expect("address");
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        for _ in 0..200 {
            sender.send_to(&[7u8; 1200], to).expect("send");
        }
        let drops = udp_drops(&inode).expect("the socket is listed");
        assert!(
            drops > 0,
            "200 datagrams into a minimal buffer, {drops} dropped"
        );
        assert!(drops < 200, "some fit: {drops}");
    }

    #[test]
    fn drops_are_read_from_the_socket_row_of_the_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
             1: 0100007F:ACDE 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3156765 2 0000000000000000 48644\n\
             2: 0100007F:ACDF 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3156766 2 0000000000000000 0\n";
        assert_eq!(drops_of(table, "3156765"), Some(48644));
        assert_eq!(drops_of(table, "3156766"), Some(0));
        assert_eq!(drops_of(table, "99"), None);
    }
}
