//! The sans-IO server: documents in memory, one [`ServerSession`] per device
//! stream, authorization, and fan-out.
//!
//! The driver feeds it `(now, connection, frame)` and executes the returned
//! [`ServerAction`]s **in order**. A `Send` that follows a `Persist` must not be
//! transmitted before that `Persist` is durable: that is how "acknowledged only
//! after it is flushed" is kept. Timers are the driver's too: it calls
//! [`ServerCore::handle_timeout`] at [`ServerCore::poll_timeout`].
//!
//! Each document has its own lock, so work on one document never waits for
//! another. A driver with several threads routes a frame with
//! [`ServerCore::route`] (sessions, credentials, catch-ups: brief) and runs a
//! push, the expensive part, with [`DocPush::run`] holding only that
//! document's lock; the core hands actions to a [`Sink`] while the documents
//! they depend on are still locked, so frames reach each device in the order
//! the state changed. [`ServerCore::handle`] does both at once and returns
//! the actions (the simulation and tests use it).
//!
//! One job per part:
//! * [`ServerCore`] (this module): sessions, dispatch of each message, and
//!   the documents by id;
//! * `session`: one device stream's credentials and request budget
//!   ([`ServerSession`]);
//! * `ingest`: a push checked (limits, rights, decoding) and applied with
//!   panic rollback, returning what was accepted and refused;
//! * `fanout`: per document, its subscribers and what each holds, catch-ups,
//!   the snapshot cache, shared broadcast frames and heads beacons;
//! * `gate`: how long a connection may wait before its `Hello`
//!   ([`HelloGate`]).

mod fanout;
mod gate;
mod ingest;
mod revocation;
mod seating;
mod session;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use automerge::{Automerge, ChangeHash};
use bytes::Bytes;

pub use fanout::{BEACON_AFTER, CATCH_UP_CHUNK_BYTES, SNAPSHOT_MIN_BYTES};
pub use gate::{Expired, HelloGate, HelloGateConfig};
pub use ingest::decompressed_size;
pub use revocation::Revocation;
pub use seating::{counts_interval, COUNTS_EVERY, COUNT_SENDS_PER_SEC};
pub use session::ServerSession;

use fanout::{empty_update, DocState, NewChanges};
use ingest::Screened;
use seating::{lock_seats, EventSeats, Recorded, SeatsCell};

use crate::ids::{DocId, EventId};
use crate::time::Millis;
use crate::token::{self, TokenClaims, TokenError};
use crate::wire::{
    self, ClientMsg, DocDigest, ErrorCode, FrameError, Hash, InstallationId, Limits, RefusalReason,
    ServerMsg,
};

/// Identifies one device session (one QUIC stream) inside the driver.
pub type ConnId = u64;

/// Which lane a frame travels in: schedule pushes go before bulk traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Welcome, acknowledgements, refusals, and every update of a device's
    /// own documents.
    Bulk,
    /// Every update of the agenda: catch-ups, fan-out and beacons (sent with
    /// priority, in the order made).
    Schedule,
}

impl Lane {
    /// The lane a document's updates travel in.
    pub fn of(doc: &DocId) -> Lane {
        match doc {
            DocId::Agenda(_) | DocId::SeatCounts(_) => Lane::Schedule,
            // A user's seat outcomes travel with the acknowledgement of the
            // request they answer: a device has its outcome when its push is
            // acknowledged.
            DocId::Attendee(..) | DocId::Seats(..) | DocId::Checkins(_) => Lane::Bulk,
        }
    }
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAction {
    /// Send one encoded frame to a session.
    Send {
        /// The session.
        conn: ConnId,
        /// The whole frame (header and body); shared between sessions on fan-out.
        frame: Bytes,
        /// The lane (the driver may use a higher-priority stream for `Schedule`).
        lane: Lane,
    },
    /// Send one frame, encoded once, to many sessions (fan-out and beacons
    /// of `doc`). The driver may drop it for a session whose outbox is over
    /// its bound, and must then call [`ServerCore::fell_behind`] with `base`
    /// (and [`ServerCore::drained`] once that outbox is empty).
    Broadcast {
        /// The document.
        doc: DocId,
        /// The heads every recipient held before this frame.
        base: Vec<ChangeHash>,
        /// The sessions, in ascending order.
        conns: Vec<ConnId>,
        /// The whole frame.
        frame: Bytes,
        /// The lane.
        lane: Lane,
    },
    /// Store these raw changes durably before executing any later action.
    Persist {
        /// The document.
        doc: DocId,
        /// Raw Automerge changes, in causal order.
        changes: Vec<Vec<u8>>,
    },
    /// Close the session's stream with this code (after sending what precedes).
    Close {
        /// The session.
        conn: ConnId,
        /// Why.
        code: ErrorCode,
    },
}

impl ServerAction {
    /// Every (session, frame) this action sends, a broadcast expanded.
    pub fn sends(&self) -> Vec<(ConnId, &Bytes)> {
        match self {
            ServerAction::Send { conn, frame, .. } => vec![(*conn, frame)],
            ServerAction::Broadcast { conns, frame, .. } => {
                conns.iter().map(|c| (*c, frame)).collect()
            }
            ServerAction::Persist { .. } | ServerAction::Close { .. } => Vec::new(),
        }
    }
}

/// Server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The Ed25519 public key tokens must be signed with.
    pub token_key: Vec<u8>,
    /// Size limits.
    pub limits: Limits,
    /// The key seat passes are signed with (the token key's pair); `None`
    /// gives confirmed seats no pass.
    pub pass_signer: Option<Arc<ring::signature::Ed25519KeyPair>>,
}

/// Why a stored document could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The bytes are not an Automerge document or change chunks.
    #[error("document {doc} is corrupt: {message}")]
    Corrupt {
        /// The document.
        doc: DocId,
        /// Automerge's error.
        message: String,
    },
}

/// Counters a driver can export.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServerStats {
    /// Frames encoded once and sent to several devices.
    pub broadcast_frames: u64,
    /// Per-device sends of a shared broadcast frame.
    pub broadcast_sends: u64,
    /// Changes accepted from devices.
    pub changes_accepted: u64,
    /// Changes refused.
    pub changes_refused: u64,
}

/// Where the core puts its actions. The core hands them over while the
/// documents they depend on are still locked: a driver that queues each
/// device's frames in `take` keeps them in the order the state changed, even
/// while pushes to other documents run at the same time.
pub trait Sink {
    /// Takes actions, to be carried out in order. Returns `false` when a
    /// `Persist` among them could not be stored: the core then puts the
    /// document back as stored ([`Sink::stored`]), and the sink must not
    /// acknowledge or fan out anything after the failed write.
    fn take(&mut self, actions: Vec<ServerAction>) -> bool;

    /// The document as durably stored, to roll back to after a failed
    /// `Persist` (`None`: keep the memory copy).
    fn stored(&mut self, _doc: &DocId) -> Option<Vec<u8>> {
        None
    }
}

/// Collects the actions (nothing fails).
impl Sink for Vec<ServerAction> {
    fn take(&mut self, actions: Vec<ServerAction>) -> bool {
        self.extend(actions);
        true
    }
}

/// One document's state, behind its own lock.
type DocCell = Arc<Mutex<DocState>>;

fn lock_doc(cell: &DocCell) -> MutexGuard<'_, DocState> {
    // A panic while applying a change is rolled back inside `ingest::apply`;
    // the state behind a poisoned lock is still whole.
    cell.lock().unwrap_or_else(|e| e.into_inner())
}

/// A document as the server holds it, read under its lock (see
/// [`ServerCore::doc`]).
pub struct DocRef<'a>(MutexGuard<'a, DocState>);

impl std::ops::Deref for DocRef<'_> {
    type Target = Automerge;
    fn deref(&self) -> &Automerge {
        self.0
            .am
            .as_ref()
            .expect("a DocRef is made only for a document that exists")
    }
}

impl std::fmt::Debug for DocRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocRef")
            .field("heads", &self.get_heads())
            .finish()
    }
}

/// A push routed to its document by [`ServerCore::route`]: run it with
/// [`DocPush::run`], which locks only that document, then report it with
/// [`ServerCore::pushed`].
#[derive(Debug)]
pub struct DocPush {
    now: Millis,
    conn: ConnId,
    doc: DocId,
    claims: TokenClaims,
    limits: Limits,
    raw: Vec<Vec<u8>>,
    cell: DocCell,
    /// The event's seats: requests in an attendee document are decided,
    /// and the agenda's capacities taken, before the push is acknowledged.
    seats: Option<SeatsCell>,
}

/// What a [`DocPush`] did, for [`ServerCore::pushed`].
#[derive(Debug)]
#[must_use = "report it with ServerCore::pushed"]
pub struct Pushed {
    doc: DocId,
    changed: bool,
    stats: ServerStats,
}

/// A `Hello`'s fields.
struct Hello {
    event: crate::ids::EventId,
    token: String,
    docs: Vec<DocDigest>,
    installation: InstallationId,
}

/// The server state machine.
#[derive(Debug)]
pub struct ServerCore {
    config: ServerConfig,
    docs: BTreeMap<DocId, DocCell>,
    /// Revoked users and devices (see [`ServerCore::revoke`]).
    revoked: std::collections::BTreeSet<Revocation>,
    sessions: HashMap<ConnId, ServerSession>,
    /// Authenticated sessions by user, so a `Hello` counts a user's
    /// sessions without scanning every session (10,000 devices reconnecting
    /// at once would make that quadratic).
    by_user: HashMap<crate::ids::UserId, Vec<ConnId>>,
    /// Documents with a heads beacon due, and when.
    beacons: BTreeMap<DocId, Millis>,
    /// Each event's seats (made when first needed).
    seats: HashMap<EventId, SeatsCell>,
    /// Documents were loaded: requests a crash left undecided are decided,
    /// and seats it left free filled, at the next timer.
    settle_seats: bool,
    /// This server decides seats (see [`ServerCore::set_seat_authority`]).
    seat_authority: bool,
    stats: ServerStats,
    /// Changes accepted and refused, per document kind ([`DocId::kind`]).
    changes_by_kind: std::collections::BTreeMap<&'static str, (u64, u64)>,
}

pub(crate) fn to_wire(h: &[ChangeHash]) -> Vec<Hash> {
    h.iter().map(|h| h.0).collect()
}

fn from_wire(h: &[Hash]) -> Vec<ChangeHash> {
    h.iter().map(|h| ChangeHash(*h)).collect()
}

pub(crate) fn frame(msg: &ServerMsg) -> Bytes {
    Bytes::from(wire::encode(msg))
}

fn send(conn: ConnId, msg: &ServerMsg, lane: Lane) -> ServerAction {
    ServerAction::Send {
        conn,
        frame: frame(msg),
        lane,
    }
}

impl ServerCore {
    /// An empty server.
    pub fn new(config: ServerConfig) -> Self {
        ServerCore {
            config,
            docs: BTreeMap::new(),
            sessions: HashMap::new(),
            revoked: Default::default(),
            by_user: HashMap::new(),
            beacons: BTreeMap::new(),
            seats: HashMap::new(),
            settle_seats: false,
            seat_authority: true,
            stats: ServerStats::default(),
            changes_by_kind: Default::default(),
        }
    }

    /// Loads a stored document (Automerge save or concatenated change chunks).
    pub fn load_doc(&mut self, doc: DocId, bytes: &[u8]) -> Result<(), LoadError> {
        let am = Automerge::load(bytes).map_err(|e| LoadError::Corrupt {
            doc: doc.clone(),
            message: e.to_string(),
        })?;
        let cell = self.docs.entry(doc).or_default().clone();
        lock_doc(&cell).reload(am, bytes.len());
        self.settle_seats = true;
        Ok(())
    }

    /// Whether this server decides seats. One server alone always does (the
    /// default); of several servers sharing a store, one does at a time
    /// (DESIGN.md, "Scale-out"), and the others only store and pass on the
    /// requests pushed to them and the outcomes it writes.
    ///
    /// Becoming the authority rebuilds every event's seats from the
    /// documents held (they must hold everything the previous authority
    /// wrote), then decides at the next timer every request still
    /// undecided and fills the seats left free. Ceasing to be one stops
    /// every decision at once; seats documents holding decisions that were
    /// not stored must then be loaded again ([`ServerCore::load_doc`]).
    pub fn set_seat_authority(&mut self, yes: bool) {
        if yes == self.seat_authority {
            return;
        }
        self.seat_authority = yes;
        // Rebuilt from the documents on first use.
        self.seats.clear();
        self.settle_seats = yes;
    }

    /// Whether this server decides seats.
    pub fn is_seat_authority(&self) -> bool {
        self.seat_authority
    }

    /// The seats of `doc`'s event when a change of `doc` may need a seat
    /// decision from this server.
    fn deciding_seats(&mut self, doc: &DocId) -> Option<SeatsCell> {
        if !self.seat_authority {
            return None;
        }
        match doc {
            DocId::Agenda(e) | DocId::Attendee(e, _) | DocId::Checkins(e) => {
                Some(self.event_seats(e))
            }
            DocId::Seats(..) | DocId::SeatCounts(_) => None,
        }
    }

    /// The state of `doc`, created empty if new. A seats document is
    /// shared with its event's seats, which write it.
    fn cell(&mut self, doc: &DocId) -> DocCell {
        if let Some(cell) = self.docs.get(doc) {
            return cell.clone();
        }
        let cell = match doc {
            DocId::Seats(e, u) => lock_seats(&self.event_seats(e)).doc_cell(u),
            DocId::SeatCounts(e) => lock_seats(&self.event_seats(e)).counts_cell(),
            DocId::Agenda(_) | DocId::Attendee(..) | DocId::Checkins(_) => DocCell::default(),
        };
        self.docs.insert(doc.clone(), cell.clone());
        cell
    }

    /// The seats of `event`, made on first use from the documents held:
    /// the agenda's rules and what every user's seats document records.
    fn event_seats(&mut self, event: &EventId) -> SeatsCell {
        if let Some(s) = self.seats.get(event) {
            return s.clone();
        }
        let counts = self
            .docs
            .entry(DocId::SeatCounts(event.clone()))
            .or_default()
            .clone();
        let mut seats = EventSeats::new(event.clone(), counts, self.config.pass_signer.clone());
        for (id, cell) in &self.docs {
            if let DocId::Seats(e, u) = id {
                if e == event {
                    seats.register(u, cell.clone());
                }
            }
        }
        if let Some(agenda) = self.docs.get(&DocId::Agenda(event.clone())) {
            if let Some(am) = lock_doc(agenda).am.as_ref() {
                seats.take_rules(crate::seats::doc::read_rules(am));
            }
        }
        seats.rebuild();
        let cell = Arc::new(Mutex::new(seats));
        self.seats.insert(event.clone(), cell.clone());
        cell
    }

    /// After loading: decides requests a crash left undecided (in each
    /// attendee document's own order), and fills seats it left free.
    fn settle_seats(&mut self, now: Millis, sink: &mut dyn Sink) {
        let events: std::collections::BTreeSet<EventId> =
            self.docs.keys().map(|d| d.event().clone()).collect();
        let limits = self.config.limits;
        for event in events {
            let cell = self.event_seats(&event);
            let attendees: Vec<(crate::ids::UserId, DocCell)> = self
                .docs
                .iter()
                .filter_map(|(id, c)| match id {
                    DocId::Attendee(e, u) if *e == event => Some((u.clone(), c.clone())),
                    _ => None,
                })
                .collect();
            let mut seats = lock_seats(&cell);
            let mut stats = ServerStats::default();
            for (user, doc) in attendees {
                let state = lock_doc(&doc);
                let Some(am) = state.am.as_ref() else {
                    continue;
                };
                let d = seats.decide_new(now, &user, crate::seats::doc::read_requests(am));
                let rec = seats.record(
                    now,
                    &limits,
                    d.outcomes,
                    Some((&user, d.malformed)),
                    &mut stats,
                );
                drop(state);
                seats.commit(rec, sink);
            }
            let settled = seats.settle(now);
            let rec = seats.record(now, &limits, settled, None, &mut stats);
            seats.commit(rec, sink);
            drop(seats);
            self.add_stats(stats);
        }
    }

    fn add_stats(&mut self, stats: ServerStats) {
        self.stats.broadcast_frames += stats.broadcast_frames;
        self.stats.broadcast_sends += stats.broadcast_sends;
        self.stats.changes_accepted += stats.changes_accepted;
        self.stats.changes_refused += stats.changes_refused;
    }

    /// A document, if the server holds it (read under its lock: drop it
    /// before the core handles anything else).
    pub fn doc(&self, doc: &DocId) -> Option<DocRef<'_>> {
        let state = lock_doc(self.docs.get(doc)?);
        state.am.is_some().then(|| DocRef(state))
    }

    /// All documents held.
    pub fn doc_ids(&self) -> impl Iterator<Item = &DocId> {
        self.docs
            .iter()
            .filter(|(_, d)| lock_doc(d).am.is_some())
            .map(|(id, _)| id)
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// A new device stream opened.
    pub fn connect(&mut self, conn: ConnId) {
        self.sessions
            .insert(conn, ServerSession::new(&self.config.limits));
    }

    /// A device stream closed.
    pub fn disconnect(&mut self, conn: ConnId) {
        if let Some(s) = self.sessions.remove(&conn) {
            for doc in &s.docs {
                if let Some(d) = self.docs.get(doc) {
                    lock_doc(d).unsubscribe(conn);
                }
            }
            if let Some(c) = &s.claims {
                if let Some(list) = self.by_user.get_mut(&c.user) {
                    list.retain(|x| *x != conn);
                    if list.is_empty() {
                        self.by_user.remove(&c.user);
                    }
                }
            }
        }
    }

    /// The session state of a connection.
    pub fn session(&self, conn: ConnId) -> Option<&ServerSession> {
        self.sessions.get(&conn)
    }

    /// When [`ServerCore::handle_timeout`] next has work (heads beacons,
    /// seat counts, offers expiring, seats to settle after loading).
    pub fn poll_timeout(&self) -> Option<Millis> {
        let seats = self
            .seats
            .values()
            .filter_map(|s| lock_seats(s).poll_timeout());
        let settle = (self.settle_seats && self.seat_authority).then_some(Millis(0));
        let seats = seats.filter(|_| self.seat_authority);
        self.beacons
            .values()
            .copied()
            .chain(seats)
            .chain(settle)
            .min()
    }

    /// Runs the timers due at `now`: each document whose last change is
    /// [`BEACON_AFTER`] old tells its subscribers its heads, so a device that
    /// lacks a change (a frame the driver dropped, a bug) asks for it.
    pub fn handle_timeout(&mut self, now: Millis) -> Vec<ServerAction> {
        let mut out = Vec::new();
        self.handle_timeout_into(now, &mut out);
        out
    }

    /// [`ServerCore::handle_timeout`] into `sink`; a failed write of a
    /// seats document is rolled back there.
    pub fn handle_timeout_into(&mut self, now: Millis, sink: &mut dyn Sink) {
        if self.seat_authority && std::mem::take(&mut self.settle_seats) {
            self.settle_seats(now, sink);
        }
        let limits = self.config.limits;
        let mut stats = ServerStats::default();
        let deciding = if self.seat_authority {
            self.seats.values()
        } else {
            // Nothing to decide here: the authority expires offers and
            // writes the counts.
            Default::default()
        };
        for cell in deciding {
            let mut seats = lock_seats(cell);
            if seats.poll_timeout().is_none_or(|t| t > now) {
                continue;
            }
            let expired = seats.handle_timeout(now);
            let rec = seats.record(now, &limits, expired, None, &mut stats);
            seats.commit(rec, sink);
            let rec = seats.flush_counts(now, &limits, &mut stats);
            seats.commit(rec, sink);
        }
        self.add_stats(stats);
        let mut out = Vec::new();
        let due: Vec<DocId> = self
            .beacons
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.beacons.remove(&id);
            if let Some(d) = self.docs.get(&id) {
                out.extend(lock_doc(d).beacon(&id));
            }
        }
        if !out.is_empty() {
            sink.take(out);
        }
    }

    /// The driver dropped a [`ServerAction::Broadcast`] of `doc` for `conn`
    /// (its outbox was over the bound): `conn` holds `base` at most and gets
    /// nothing of `doc` until [`ServerCore::drained`].
    pub fn fell_behind(&mut self, conn: ConnId, doc: &DocId, base: Vec<ChangeHash>) {
        if let Some(d) = self.docs.get(doc) {
            lock_doc(d).fell_behind(conn, base);
        }
    }

    /// `conn`'s outbox is empty again: one catch-up per document it fell
    /// behind on.
    pub fn drained(&mut self, conn: ConnId) -> Vec<ServerAction> {
        let mut out = Vec::new();
        self.drained_into(conn, &mut out);
        out
    }

    /// [`ServerCore::drained`], each catch-up handed to `sink` under its
    /// document's lock.
    pub fn drained_into(&mut self, conn: ConnId, sink: &mut dyn Sink) {
        let Some(s) = self.sessions.get(&conn) else {
            return;
        };
        for id in &s.docs {
            if let Some(d) = self.docs.get(id) {
                let mut state = lock_doc(d);
                let mut out = Vec::new();
                state.drained(id, &self.config.limits, conn, &mut out);
                if !out.is_empty() {
                    sink.take(out);
                }
            }
        }
    }

    /// Handles one received frame body. Malformed input closes the session, never panics.
    pub fn handle_frame(&mut self, now: Millis, conn: ConnId, body: &[u8]) -> Vec<ServerAction> {
        let mut out = Vec::new();
        let push = self.route_frame(now, conn, body, &mut out);
        self.run_here(now, push, &mut out);
        out
    }

    /// Runs a routed push at once, for callers with one thread.
    fn run_here(&mut self, now: Millis, push: Option<DocPush>, out: &mut Vec<ServerAction>) {
        if let Some(push) = push {
            let done = push.run(out);
            self.pushed(now, done);
        }
    }

    /// Routes one received frame body: see [`ServerCore::route`].
    pub fn route_frame(
        &mut self,
        now: Millis,
        conn: ConnId,
        body: &[u8],
        sink: &mut dyn Sink,
    ) -> Option<DocPush> {
        match wire::decode::<ClientMsg>(body) {
            Ok(msg) => self.route(now, conn, msg, sink),
            Err(e) => {
                sink.take(self.fatal(conn, &e));
                None
            }
        }
    }

    /// Reports a push run outside the core: its counters, and the heads
    /// beacon of its document.
    pub fn pushed(&mut self, now: Millis, done: Pushed) {
        let Pushed {
            doc,
            changed,
            stats,
        } = done;
        self.add_stats(stats);
        if stats.changes_accepted + stats.changes_refused > 0 {
            let e = self.changes_by_kind.entry(doc.kind()).or_default();
            e.0 += stats.changes_accepted;
            e.1 += stats.changes_refused;
        }
        if changed {
            self.beacons.insert(doc, now + BEACON_AFTER);
        }
    }

    /// Chunks another server node stored in the shared store (see the
    /// PostgreSQL store's change feed): applied to the document, and the
    /// changes new to this node fanned out to its devices. They are not
    /// persisted again (they are stored already). On the seat authority
    /// ([`ServerCore::set_seat_authority`]) they are decided like a push:
    /// seat requests another node accepted, capacities it took, check-ins.
    /// Returns how many changes were new here; a chunk that does not load
    /// is skipped and counted in the error.
    pub fn apply_stored(
        &mut self,
        now: Millis,
        doc: DocId,
        chunks: &[Vec<u8>],
        sink: &mut dyn Sink,
    ) -> Result<usize, LoadError> {
        let cell = self.cell(&doc);
        let seats = self.deciding_seats(&doc);
        let limits = self.config.limits;
        let mut state = lock_doc(&cell);
        let am = state.am.get_or_insert_with(Automerge::new);
        let heads_before = am.get_heads();
        let mut bad = None;
        for chunk in chunks {
            if let Err(e) = am.load_incremental(chunk) {
                bad = Some(e.to_string());
            }
        }
        let raw: Vec<Vec<u8>> = am
            .get_changes(&heads_before)
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        let new = raw.len();
        let mut out = Vec::new();
        let mut stats = ServerStats::default();
        if new > 0 {
            state.bytes += raw.iter().map(Vec::len).sum::<usize>();
            let changes = NewChanges {
                origin: None,
                heads_before,
                raw,
            };
            state.fan_out(&doc, &limits, changes, &mut out, &mut stats);
        }
        let mut decided = None;
        if let (Some(seats), Some(am)) = (seats.as_ref(), state.am.as_ref()) {
            if let Some((guard, rec)) =
                seat_decisions(seats, now, &doc, new > 0, am, &limits, &mut stats)
            {
                out.extend(rec.actions);
                decided = Some((guard, rec.touched));
            }
        }
        let mut undecided = false;
        if !out.is_empty() && !sink.take(out) {
            if let Some((mut seats, touched)) = decided {
                seats.roll_back(touched, sink);
                undecided = true;
            }
        }
        drop(state);
        // Nobody pushes these requests again: decided at the next timer.
        self.settle_seats |= undecided;
        self.add_stats(stats);
        if new > 0 {
            self.beacons.insert(doc.clone(), now + BEACON_AFTER);
        }
        match bad {
            Some(message) => Err(LoadError::Corrupt { doc, message }),
            None => Ok(new),
        }
    }

    /// Changes accepted and refused per document kind, as `(kind,
    /// accepted, refused)`.
    pub fn changes_by_kind(&self) -> Vec<(&'static str, u64, u64)> {
        self.changes_by_kind
            .iter()
            .map(|(k, (a, r))| (*k, *a, *r))
            .collect()
    }

    /// Closes a session because of a framing error seen by the driver.
    pub fn fatal(&mut self, conn: ConnId, err: &FrameError) -> Vec<ServerAction> {
        self.fail(conn, err.code(), err.to_string())
    }

    /// Closes a session for a reason the driver found (e.g. no `Hello` in
    /// time): an error message, then the close.
    pub fn close_session(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        message: String,
    ) -> Vec<ServerAction> {
        self.fail(conn, code, message)
    }

    fn fail(&mut self, conn: ConnId, code: ErrorCode, message: String) -> Vec<ServerAction> {
        self.disconnect(conn);
        vec![
            send(conn, &ServerMsg::Error { code, message }, Lane::Bulk),
            ServerAction::Close { conn, code },
        ]
    }

    /// Revokes access: the open sessions it covers are closed with
    /// [`ErrorCode::Revoked`] and later Hellos refused, until
    /// [`ServerCore::lift`]. The driver persists the list.
    pub fn revoke(&mut self, revocation: Revocation) -> Vec<ServerAction> {
        let mut covered: Vec<ConnId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.claims.as_ref().is_some_and(|c| revocation.covers(c)))
            .map(|(c, _)| *c)
            .collect();
        covered.sort_unstable();
        let mut out = Vec::new();
        for conn in covered {
            out.extend(self.fail(conn, ErrorCode::Revoked, revocation.message()));
        }
        self.revoked.insert(revocation);
        out
    }

    /// Lifts a revocation; whether there was one.
    pub fn lift(&mut self, revocation: &Revocation) -> bool {
        self.revoked.remove(revocation)
    }

    /// The revocations in force.
    pub fn revocations(&self) -> Vec<Revocation> {
        self.revoked.iter().cloned().collect()
    }

    /// Handles one decoded message.
    pub fn handle(&mut self, now: Millis, conn: ConnId, msg: ClientMsg) -> Vec<ServerAction> {
        let mut out = Vec::new();
        let push = self.route(now, conn, msg, &mut out);
        self.run_here(now, push, &mut out);
        out
    }

    /// Handles one decoded message into `sink`, except a push: that is
    /// returned, to run with only its document locked.
    pub fn route(
        &mut self,
        now: Millis,
        conn: ConnId,
        msg: ClientMsg,
        sink: &mut dyn Sink,
    ) -> Option<DocPush> {
        let limits = self.config.limits;
        let session = self.sessions.get_mut(&conn)?;
        let authed = session.claims.is_some();
        let refusal = if !session.take_request(&limits, now) {
            (
                ErrorCode::RateLimited,
                format!(
                    "more than {} requests in a burst, or {} per second after it",
                    limits.request_burst, limits.requests_per_sec
                ),
            )
        } else {
            match msg {
                ClientMsg::Hello { .. } if authed => (ErrorCode::Protocol, "second Hello".into()),
                ClientMsg::Hello {
                    event,
                    token,
                    docs,
                    installation,
                } => {
                    let hello = Hello {
                        event,
                        token,
                        docs,
                        installation,
                    };
                    self.hello(now, conn, hello, sink);
                    return None;
                }
                _ if !authed => (ErrorCode::Protocol, "Hello must come first".into()),
                ClientMsg::Push { doc, changes } => {
                    return self.push(now, conn, doc, changes, sink)
                }
                ClientMsg::Resync { doc, have } => {
                    self.resync(conn, doc, &have, sink);
                    return None;
                }
            }
        };
        sink.take(self.fail(conn, refusal.0, refusal.1));
        None
    }

    /// The authenticated sessions of `user`.
    fn user_sessions<'a>(
        &'a self,
        user: &crate::ids::UserId,
    ) -> impl Iterator<Item = (ConnId, &'a ServerSession)> + 'a {
        self.by_user
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|c| self.sessions.get(c).map(|s| (*c, s)))
    }

    /// Sessions of the same installation, user and device as `claims`, but
    /// `conn`: left open when a goodbye was lost.
    fn lingering(
        &self,
        conn: ConnId,
        claims: &TokenClaims,
        installation: &InstallationId,
    ) -> Vec<ConnId> {
        if *installation == [0; 16] {
            return Vec::new();
        }
        let mut old: Vec<ConnId> = self
            .user_sessions(&claims.user)
            .filter(|(c, s)| {
                *c != conn
                    && s.installation == *installation
                    && s.claims.as_ref().is_some_and(|o| o.device == claims.device)
            })
            .map(|(c, _)| c)
            .collect();
        old.sort_unstable();
        old
    }

    /// Checks the token: signed by this server, not expired, for `event`.
    fn credentials(
        &self,
        now: Millis,
        event: &crate::ids::EventId,
        token: &str,
    ) -> Result<TokenClaims, (ErrorCode, String)> {
        let claims = match token::verify(token, &self.config.token_key, now.as_secs()) {
            Ok(c) if c.event != *event => Err(TokenError::WrongEvent {
                token_event: c.event.to_string(),
                wanted: event.to_string(),
            }),
            other => other,
        };
        if let Ok(c) = &claims {
            if let Some(r) = self.revoked.iter().find(|r| r.covers(c)) {
                return Err((ErrorCode::Revoked, r.message()));
            }
        }
        claims.map_err(|e| {
            let code = match e {
                TokenError::Expired { .. } => ErrorCode::TokenExpired,
                TokenError::WrongEvent { .. } => ErrorCode::WrongEvent,
                _ => ErrorCode::Unauthorized,
            };
            (code, e.to_string())
        })
    }

    /// Checks the session limits of the device and the user of `claims`.
    fn session_limits(
        &self,
        conn: ConnId,
        claims: &TokenClaims,
    ) -> Result<(), (ErrorCode, String)> {
        let limits = self.config.limits;
        let open = |same: &dyn Fn(&TokenClaims) -> bool| {
            self.user_sessions(&claims.user)
                .filter(|(c, s)| *c != conn && s.claims.as_ref().is_some_and(same))
                .count()
        };
        let device_sessions = open(&|c| c.user == claims.user && c.device == claims.device);
        if device_sessions >= limits.max_sessions_per_device {
            return Err((
                ErrorCode::TooManySessions,
                format!(
                    "device {} of {} already has {device_sessions} sessions open (at most {})",
                    claims.device, claims.user, limits.max_sessions_per_device
                ),
            ));
        }
        let user_sessions = open(&|c| c.user == claims.user);
        if user_sessions >= limits.max_sessions_per_user {
            return Err((
                ErrorCode::TooManySessions,
                format!(
                    "{} already has {user_sessions} sessions open (at most {})",
                    claims.user, limits.max_sessions_per_user
                ),
            ));
        }
        Ok(())
    }

    fn hello(&mut self, now: Millis, conn: ConnId, hello: Hello, sink: &mut dyn Sink) {
        let Hello {
            event,
            token,
            docs: digests,
            installation,
        } = hello;
        let claims = match self.credentials(now, &event, &token) {
            Ok(c) => c,
            Err((code, message)) => {
                sink.take(self.fail(conn, code, message));
                return;
            }
        };
        // The same installation reconnecting replaces what it left open,
        // before the session limits are counted (the lost-goodbye problem).
        let mut out = Vec::new();
        for old in self.lingering(conn, &claims, &installation) {
            out.extend(self.fail(
                old,
                ErrorCode::Replaced,
                "a newer connection of this installation replaced this session".into(),
            ));
        }
        if let Err((code, message)) = self.session_limits(conn, &claims) {
            out.extend(self.fail(conn, code, message));
            sink.take(out);
            return;
        }
        let limits = self.config.limits;
        let mut digest_of: HashMap<DocId, DocDigest> = HashMap::new();
        for d in digests {
            if claims.may_read(&d.doc) {
                digest_of.insert(d.doc.clone(), d);
            } else {
                out.push(refusal(
                    conn,
                    d.doc,
                    Vec::new(),
                    RefusalReason::Forbidden,
                    Vec::new(),
                ));
            }
        }
        let cells: Vec<(DocId, DocCell)> = claims
            .readable_docs()
            .into_iter()
            .map(|doc| {
                let cell = self.cell(&doc);
                (doc, cell)
            })
            .collect();
        // Every document stays locked until the Welcome and its catch-ups
        // are in the sink: a push to one of them cannot reach this device
        // before its Welcome does.
        let mut states: Vec<MutexGuard<'_, DocState>> =
            cells.iter().map(|(_, cell)| lock_doc(cell)).collect();
        let mut welcome = Vec::new();
        let mut later = Vec::new();
        let mut subscribed = Vec::new();
        for ((doc, _), state) in cells.iter().zip(states.iter_mut()) {
            let heads = state.heads();
            let mut have = Vec::new();
            if let Some(d) = digest_of.get(doc) {
                have.extend(from_wire(&d.heads));
                have.extend(from_wire(&d.base));
            }
            let mut updates = state.catch_up(doc, &limits, &have);
            // The Welcome stays small: a large catch-up follows it in updates
            // the device applies (and keeps) one by one, in the document's lane.
            let small = updates.len() == 1
                && updates[0].snapshot.is_empty()
                && updates[0].payload_len() <= CATCH_UP_CHUNK_BYTES;
            if small {
                welcome.extend(updates.pop());
            } else {
                // An empty entry with heads the device lacks: the catch-up follows.
                welcome.push(empty_update(doc, &heads));
                let lane = Lane::of(doc);
                for u in updates {
                    later.push(ServerAction::Send {
                        conn,
                        frame: state.update_frame(u),
                        lane,
                    });
                }
            }
            state.subscribe(conn, heads);
            subscribed.push(doc.clone());
        }
        if let Some(s) = self.sessions.get_mut(&conn) {
            self.by_user
                .entry(claims.user.clone())
                .or_default()
                .push(conn);
            s.claims = Some(claims);
            s.docs = subscribed;
            s.installation = installation;
        }
        out.push(send(
            conn,
            &ServerMsg::Welcome {
                docs: welcome,
                limits,
            },
            Lane::Bulk,
        ));
        out.extend(later);
        sink.take(out);
        drop(states);
    }

    fn resync(&mut self, conn: ConnId, doc: DocId, have: &[Hash], sink: &mut dyn Sink) {
        let readable = self
            .sessions
            .get(&conn)
            .and_then(|s| s.claims.as_ref())
            .is_some_and(|c| c.may_read(&doc));
        if !readable {
            sink.take(vec![refusal(
                conn,
                doc,
                Vec::new(),
                RefusalReason::Forbidden,
                Vec::new(),
            )]);
            return;
        }
        let limits = self.config.limits;
        let lane = Lane::of(&doc);
        let Some(cell) = self.docs.get(&doc) else {
            sink.take(vec![send(
                conn,
                &ServerMsg::Update(empty_update(&doc, &[])),
                lane,
            )]);
            return;
        };
        // The catch-up goes into the sink under the document's lock: no
        // push to it can be queued to this device in between.
        let mut state = lock_doc(cell);
        let updates = state.catch_up(&doc, &limits, &from_wire(have));
        let heads = state.heads();
        state.set_known(conn, heads);
        let sends = updates
            .into_iter()
            .map(|u| ServerAction::Send {
                conn,
                frame: state.update_frame(u),
                lane,
            })
            .collect();
        sink.take(sends);
    }

    /// Routes a push to its document. A document's first push runs here,
    /// under the core (the document is kept only if a change is accepted,
    /// so refused pushes to made-up ids leave nothing behind); every later
    /// one is returned, to run with only its document locked.
    fn push(
        &mut self,
        now: Millis,
        conn: ConnId,
        doc: DocId,
        raw: Vec<Vec<u8>>,
        sink: &mut dyn Sink,
    ) -> Option<DocPush> {
        let claims = self.sessions.get(&conn).and_then(|s| s.claims.clone())?;
        let existing = self.docs.get(&doc).cloned();
        let is_new = existing.is_none();
        let seats = if claims.may_write(&doc) {
            self.deciding_seats(&doc)
        } else {
            None
        };
        let push = DocPush {
            now,
            conn,
            doc,
            claims,
            limits: self.config.limits,
            raw,
            cell: existing.unwrap_or_default(),
            seats,
        };
        if !is_new {
            return Some(push);
        }
        let (doc, cell) = (push.doc.clone(), push.cell.clone());
        let done = push.run(sink);
        if lock_doc(&cell).am.is_some() {
            self.docs.insert(doc, cell);
        }
        self.pushed(now, done);
        None
    }
}

impl DocPush {
    /// The document pushed to.
    pub fn doc(&self) -> &DocId {
        &self.doc
    }

    /// Checks and applies the push holding only its document's lock, and
    /// hands the actions (persist, acknowledgement, refusals, fan-out) to
    /// `sink` before releasing it.
    pub fn run(self, sink: &mut dyn Sink) -> Pushed {
        let DocPush {
            now,
            conn,
            doc,
            claims,
            limits,
            raw,
            cell,
            seats,
        } = self;
        let mut state = lock_doc(&cell);
        let mut stats = ServerStats::default();
        let (mut out, changed) = push_to(&mut state, conn, &doc, &claims, &limits, raw, &mut stats);
        // The event's seats stay locked until the decisions are in the
        // sink (a seats document's changes reach it in order), and only
        // when the push brought a decision.
        let mut decided = None;
        if let (Some(seats), Some(am)) = (seats.as_ref(), state.am.as_ref()) {
            if let Some((guard, rec)) =
                seat_decisions(seats, now, &doc, changed, am, &limits, &mut stats)
            {
                // Decided and written before the push is acknowledged: after
                // the push's own Persist, before its Ack.
                let at = out
                    .iter()
                    .position(|a| matches!(a, ServerAction::Persist { .. }))
                    .map_or(0, |i| i + 1);
                out.splice(at..at, rec.actions);
                decided = Some((guard, rec.touched));
            }
        }
        let stored = sink.take(out);
        if !stored {
            if let Some((mut seats, touched)) = decided {
                seats.roll_back(touched, sink);
            }
            // The write failed: back to what is on disk (the sink told the
            // device, which keeps its changes pending).
            if let Some(am) = sink.stored(&doc).and_then(|b| {
                let len = b.len();
                Automerge::load(&b).ok().map(|am| (am, len))
            }) {
                state.reload(am.0, am.1);
            }
        }
        Pushed {
            doc,
            changed: changed && stored,
            stats,
        }
    }
}

/// Seat work a push brings: requests in an attendee document decided, the
/// agenda's capacities and settings taken. The event's seats come back
/// locked with what was recorded, or not at all when nothing was.
fn seat_decisions<'a>(
    seats: &'a SeatsCell,
    now: Millis,
    doc: &DocId,
    changed: bool,
    am: &Automerge,
    limits: &Limits,
    stats: &mut ServerStats,
) -> Option<(MutexGuard<'a, EventSeats>, Recorded)> {
    match doc {
        // Checked on every push, changed or not: a request whose decision
        // could not be stored is decided when the device pushes it again.
        DocId::Attendee(_, user) => {
            let requests = crate::seats::doc::read_requests(am);
            if requests.is_empty() {
                return None;
            }
            let mut guard = lock_seats(seats);
            let d = guard.decide_new(now, user, requests);
            if d.outcomes.is_empty() && d.malformed.is_empty() {
                return None;
            }
            let rec = guard.record(now, limits, d.outcomes, Some((user, d.malformed)), stats);
            Some((guard, rec))
        }
        DocId::Checkins(_) if changed => {
            let counts = crate::seats::doc::checked_in(am);
            lock_seats(seats).set_checked_in(now, counts);
            None
        }
        DocId::Agenda(_) if changed => {
            let rules = crate::seats::doc::read_rules(am);
            let mut guard = lock_seats(seats);
            let outcomes = guard.set_rules(now, rules);
            if outcomes.is_empty() {
                return None;
            }
            let rec = guard.record(now, limits, outcomes, None, stats);
            Some((guard, rec))
        }
        _ => None,
    }
}

/// The heads of `doc` a device with `claims` may see.
fn heads_for(state: &DocState, claims: &TokenClaims, doc: &DocId) -> Vec<Hash> {
    if !claims.may_read(doc) {
        return Vec::new();
    }
    to_wire(&state.heads())
}

/// A push applied to its locked document: the actions, and whether the
/// document changed.
fn push_to(
    state: &mut DocState,
    conn: ConnId,
    doc: &DocId,
    claims: &TokenClaims,
    limits: &Limits,
    raw: Vec<Vec<u8>>,
    stats: &mut ServerStats,
) -> (Vec<ServerAction>, bool) {
    let doc = doc.clone();
    let screened = ingest::screen(claims, limits, &doc, state.am.as_ref(), state.bytes, &raw);
    let (changes, malformed) = match screened {
        Screened::Refuse { reason, changes } => {
            stats.changes_refused += raw.len() as u64;
            let heads = heads_for(state, claims, &doc);
            return (vec![refusal(conn, doc, changes, reason, heads)], false);
        }
        Screened::AlreadyHeld => {
            let heads = heads_for(state, claims, &doc);
            return (
                vec![send(conn, &ServerMsg::Ack { doc, heads }, Lane::Bulk)],
                false,
            );
        }
        Screened::Apply { changes, malformed } => (changes, malformed),
    };
    let mut out = Vec::new();
    if malformed {
        stats.changes_refused += 1;
        out.push(refusal(
            conn,
            doc.clone(),
            Vec::new(),
            RefusalReason::Malformed,
            Vec::new(),
        ));
    }
    let am = state.am.get_or_insert_with(Automerge::new);
    let heads_before = am.get_heads();
    let applied = ingest::apply(am, changes, limits.max_change);
    let heads_after = am.get_heads();
    stats.changes_accepted += applied.accepted.len() as u64;
    stats.changes_refused +=
        (applied.missing.len() + applied.bad.len() + applied.oversized.len()) as u64;
    let new_raw: Vec<Vec<u8>> = applied
        .accepted
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    state.bytes += new_raw.iter().map(Vec::len).sum::<usize>();
    if !new_raw.is_empty() {
        out.push(ServerAction::Persist {
            doc: doc.clone(),
            changes: new_raw.clone(),
        });
    }
    let wire_heads = to_wire(&heads_after);
    out.push(send(
        conn,
        &ServerMsg::Ack {
            doc: doc.clone(),
            heads: wire_heads.clone(),
        },
        Lane::Bulk,
    ));
    state.set_known(conn, heads_after);
    // Permanent refusals go first: the device then knows that the changes
    // refused below for missing dependencies are built on them.
    for (reason, changes) in [
        (RefusalReason::TooLarge, applied.oversized),
        (RefusalReason::Malformed, applied.bad),
        (RefusalReason::MissingDeps, applied.missing),
    ] {
        if !changes.is_empty() {
            out.push(refusal(
                conn,
                doc.clone(),
                changes,
                reason,
                wire_heads.clone(),
            ));
        }
    }
    let changed = !new_raw.is_empty();
    if changed {
        let new = NewChanges {
            origin: Some(conn),
            heads_before,
            raw: new_raw,
        };
        state.fan_out(&doc, limits, new, &mut out, stats);
    }
    (out, changed)
}

fn refusal(
    conn: ConnId,
    doc: DocId,
    changes: Vec<Hash>,
    reason: RefusalReason,
    heads: Vec<Hash>,
) -> ServerAction {
    let message = match reason {
        RefusalReason::Forbidden => match &doc {
            DocId::Agenda(_) => format!("{doc}: only organizers may change the agenda"),
            DocId::Attendee(..) => format!("{doc}: not your document"),
            DocId::SeatCounts(_) | DocId::Seats(..) => {
                format!("{doc}: only the server decides seats (write a request instead)")
            }
            DocId::Checkins(_) => format!("{doc}: only organizers' door devices check in"),
        },
        RefusalReason::Malformed => format!("{doc}: change could not be decoded or applied"),
        RefusalReason::MissingDeps => format!("{doc}: change depends on changes the server lacks"),
        RefusalReason::TooLarge => format!("{doc}: change or document over the size limits"),
    };
    send(
        conn,
        &ServerMsg::Refused {
            doc,
            changes,
            reason,
            message,
            heads,
        },
        Lane::Bulk,
    )
}
