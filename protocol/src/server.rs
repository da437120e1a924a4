//! The sans-IO server: documents in memory, one [`ServerSession`] per device
//! stream, authorization, and fan-out.
//!
//! The driver feeds it `(now, connection, frame)` and executes the returned
//! [`ServerAction`]s **in order**. A `Send` that follows a `Persist` must not be
//! transmitted before that `Persist` is durable: that is how "acknowledged only
//! after it is flushed" is kept.

use std::collections::{BTreeMap, HashMap, HashSet};

use automerge::{Automerge, Change, ChangeHash, ReadDoc as _};
use bytes::Bytes;

use crate::ids::DocId;
use crate::token::{self, TokenClaims, TokenError};
use crate::wire::{
    self, ClientMsg, DocDigest, DocUpdate, ErrorCode, FrameError, Hash, Limits, RefusalReason,
    ServerMsg,
};

/// Identifies one device session (one QUIC stream) inside the driver.
pub type ConnId = u64;

/// Which lane a frame travels in: schedule pushes go before bulk traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Welcome, acknowledgements, refusals, note updates, catch-ups.
    Bulk,
    /// Agenda changes fanned out to connected devices (sent with priority).
    Schedule,
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

/// Server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The Ed25519 public key tokens must be signed with.
    pub token_key: Vec<u8>,
    /// Size limits.
    pub limits: Limits,
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

/// Per-device state the server keeps while the device is connected.
#[derive(Debug, Default)]
pub struct ServerSession {
    claims: Option<TokenClaims>,
    /// The heads this device is known to hold, per subscribed document.
    known: HashMap<DocId, Vec<ChangeHash>>,
    /// Requests the session may still send now (a token bucket).
    tokens: f64,
    /// When the bucket was last refilled, Unix seconds.
    refilled_at: Option<u64>,
}

/// First bytes of every Automerge chunk.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk type of a deflate-compressed change.
const CHUNK_COMPRESSED: u8 = 2;

/// For a compressed Automerge change chunk, the size it has once
/// decompressed, counting at most `max + 1` bytes: the chunk is inflated
/// into a sink that stops there, so a small "deflate bomb" is found without
/// allocating what it expands to (Automerge itself would inflate it whole).
/// `None` for anything else (an uncompressed change is its own size; bytes
/// that are not a change are refused by Automerge's decoder).
pub fn decompressed_size(bytes: &[u8], max: usize) -> Option<usize> {
    if bytes.len() < 10 || bytes[..4] != CHUNK_MAGIC || bytes[8] != CHUNK_COMPRESSED {
        return None;
    }
    let mut len: u64 = 0;
    let mut at = 9;
    for shift in (0..64).step_by(7) {
        let &b = bytes.get(at)?;
        at += 1;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
    }
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| at.checked_add(l))
        .map_or(bytes.len(), |e| e.min(bytes.len()));
    let body = &bytes[at..end];
    let mut inflated = std::io::Read::take(flate2::read::DeflateDecoder::new(body), max as u64 + 1);
    match std::io::copy(&mut inflated, &mut std::io::sink()) {
        Ok(n) => Some(at.saturating_add(usize::try_from(n).unwrap_or(usize::MAX))),
        Err(_) => None,
    }
}

/// Whether a decoded change carries the checksum its bytes announce. The
/// checksum is the first four bytes of the change's hash; Automerge's
/// `Change::try_from` does not check it, but loading a saved document
/// does, so a change with a wrong checksum accepted once would make the
/// stored document unloadable.
fn checksum_matches(bytes: &[u8], change: &Change) -> bool {
    bytes.len() >= 8 && change.hash().0[..4] == bytes[4..8]
}

/// Runs `f`, turning a panic inside Automerge into `None`.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// Whether a change is in Automerge's canonical encoding. A non-canonical
/// one (found by fuzzing: a duplicated column, no action column) decodes and
/// applies, but Automerge rebuilds it from its ops under another hash, so the
/// heads advertised and the changes sent would no longer match (and a debug
/// build panics). Re-encoding must give back the same hash.
fn is_canonical(change: &Change) -> bool {
    Change::from(change.decode()).hash() == change.hash()
}

impl ServerSession {
    /// The authenticated claims, once `Hello` was accepted.
    pub fn claims(&self) -> Option<&TokenClaims> {
        self.claims.as_ref()
    }
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

/// The server state machine.
#[derive(Debug)]
pub struct ServerCore {
    config: ServerConfig,
    docs: BTreeMap<DocId, Automerge>,
    sessions: HashMap<ConnId, ServerSession>,
    subscribers: HashMap<DocId, HashSet<ConnId>>,
    /// Bytes of changes held per document, for the document size limit.
    sizes: HashMap<DocId, usize>,
    /// The last snapshot sent of each document, reused while its heads hold.
    snapshots: HashMap<DocId, Snapshot>,
    stats: ServerStats,
}

/// Largest batch of raw changes in one catch-up update: a device on a slow
/// link that loses the connection keeps every batch it received.
pub const CATCH_UP_CHUNK_BYTES: usize = 64 * 1024;

/// A catch-up of at least this many bytes of changes is sent as a snapshot
/// (a compressed whole document) when that is at most half the size.
pub const SNAPSHOT_MIN_BYTES: usize = 16 * 1024;

/// A saved document and the heads it was saved at.
#[derive(Debug)]
struct Snapshot {
    heads: Vec<ChangeHash>,
    bytes: Vec<u8>,
}

fn to_wire(h: &[ChangeHash]) -> Vec<Hash> {
    h.iter().map(|h| h.0).collect()
}

fn from_wire(h: &[Hash]) -> Vec<ChangeHash> {
    h.iter().map(|h| ChangeHash(*h)).collect()
}

fn frame(msg: &ServerMsg) -> Bytes {
    Bytes::from(wire::encode(msg))
}

impl ServerCore {
    /// An empty server.
    pub fn new(config: ServerConfig) -> Self {
        ServerCore {
            config,
            docs: BTreeMap::new(),
            sessions: HashMap::new(),
            subscribers: HashMap::new(),
            sizes: HashMap::new(),
            snapshots: HashMap::new(),
            stats: ServerStats::default(),
        }
    }

    /// Loads a stored document (Automerge save or concatenated change chunks).
    pub fn load_doc(&mut self, doc: DocId, bytes: &[u8]) -> Result<(), LoadError> {
        let am = Automerge::load(bytes).map_err(|e| LoadError::Corrupt {
            doc: doc.clone(),
            message: e.to_string(),
        })?;
        self.sizes.insert(doc.clone(), bytes.len());
        self.docs.insert(doc, am);
        Ok(())
    }

    /// A document, if the server holds it.
    pub fn doc(&self, doc: &DocId) -> Option<&Automerge> {
        self.docs.get(doc)
    }

    /// All documents held.
    pub fn doc_ids(&self) -> impl Iterator<Item = &DocId> {
        self.docs.keys()
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
        let session = ServerSession {
            tokens: f64::from(self.config.limits.request_burst),
            ..ServerSession::default()
        };
        self.sessions.insert(conn, session);
    }

    /// Takes one request from the session's bucket; false when it is empty.
    fn take_request(&mut self, now_unix: u64, conn: ConnId) -> bool {
        let limits = self.config.limits;
        let Some(s) = self.sessions.get_mut(&conn) else {
            return true;
        };
        // Full from `connect`; refilled for the seconds since the last request.
        let elapsed = s.refilled_at.map_or(0, |t| now_unix.saturating_sub(t));
        let refill = elapsed as f64 * f64::from(limits.requests_per_sec);
        s.tokens = (s.tokens + refill).min(f64::from(limits.request_burst));
        s.refilled_at = Some(s.refilled_at.map_or(now_unix, |t| t.max(now_unix)));
        if s.tokens < 1.0 {
            return false;
        }
        s.tokens -= 1.0;
        true
    }

    /// A device stream closed.
    pub fn disconnect(&mut self, conn: ConnId) {
        if let Some(s) = self.sessions.remove(&conn) {
            for doc in s.known.keys() {
                if let Some(subs) = self.subscribers.get_mut(doc) {
                    subs.remove(&conn);
                }
            }
        }
    }

    /// The session state of a connection.
    pub fn session(&self, conn: ConnId) -> Option<&ServerSession> {
        self.sessions.get(&conn)
    }

    /// Handles one received frame body. Malformed input closes the session, never panics.
    pub fn handle_frame(&mut self, now_unix: u64, conn: ConnId, body: &[u8]) -> Vec<ServerAction> {
        match wire::decode::<ClientMsg>(body) {
            Ok(msg) => self.handle(now_unix, conn, msg),
            Err(e) => self.fatal(conn, &e),
        }
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
            ServerAction::Send {
                conn,
                lane: Lane::Bulk,
                frame: frame(&ServerMsg::Error { code, message }),
            },
            ServerAction::Close { conn, code },
        ]
    }

    /// Handles one decoded message.
    pub fn handle(&mut self, now_unix: u64, conn: ConnId, msg: ClientMsg) -> Vec<ServerAction> {
        let Some(session) = self.sessions.get(&conn) else {
            return Vec::new();
        };
        let authed = session.claims.is_some();
        if !self.take_request(now_unix, conn) {
            let l = self.config.limits;
            return self.fail(
                conn,
                ErrorCode::RateLimited,
                format!(
                    "more than {} requests in a burst, or {} per second after it",
                    l.request_burst, l.requests_per_sec
                ),
            );
        }
        match msg {
            ClientMsg::Hello { event, token, docs } => {
                if authed {
                    return self.fail(conn, ErrorCode::Protocol, "second Hello".into());
                }
                self.hello(now_unix, conn, event, &token, docs)
            }
            _ if !authed => self.fail(conn, ErrorCode::Protocol, "Hello must come first".into()),
            ClientMsg::Push { doc, changes } => self.push(conn, doc, changes),
            ClientMsg::Resync { doc, have } => self.resync(conn, doc, &have),
        }
    }

    fn hello(
        &mut self,
        now_unix: u64,
        conn: ConnId,
        event: crate::ids::EventId,
        token: &str,
        digests: Vec<DocDigest>,
    ) -> Vec<ServerAction> {
        let claims = match token::verify(token, &self.config.token_key, now_unix) {
            Ok(c) if c.event != event => Err(TokenError::WrongEvent {
                token_event: c.event.to_string(),
                wanted: event.to_string(),
            }),
            other => other,
        };
        let claims = match claims {
            Ok(c) => c,
            Err(e) => {
                let code = match e {
                    TokenError::Expired { .. } => ErrorCode::TokenExpired,
                    TokenError::WrongEvent { .. } => ErrorCode::WrongEvent,
                    _ => ErrorCode::Unauthorized,
                };
                return self.fail(conn, code, e.to_string());
            }
        };
        let limits = self.config.limits;
        let open = |same: &dyn Fn(&TokenClaims) -> bool| {
            self.sessions
                .iter()
                .filter(|(c, s)| **c != conn && s.claims.as_ref().is_some_and(same))
                .count()
        };
        let device_sessions = open(&|c| c.user == claims.user && c.device == claims.device);
        let user_sessions = open(&|c| c.user == claims.user);
        if device_sessions >= limits.max_sessions_per_device {
            return self.fail(
                conn,
                ErrorCode::TooManySessions,
                format!(
                    "device {} of {} already has {device_sessions} sessions open (at most {})",
                    claims.device, claims.user, limits.max_sessions_per_device
                ),
            );
        }
        if user_sessions >= limits.max_sessions_per_user {
            return self.fail(
                conn,
                ErrorCode::TooManySessions,
                format!(
                    "{} already has {user_sessions} sessions open (at most {})",
                    claims.user, limits.max_sessions_per_user
                ),
            );
        }
        let mut out = Vec::new();
        let mut digest_of: HashMap<DocId, DocDigest> = HashMap::new();
        for d in digests {
            if claims.may_read(&d.doc) {
                digest_of.insert(d.doc.clone(), d);
            } else {
                out.push(ServerAction::Send {
                    conn,
                    lane: Lane::Bulk,
                    frame: frame(&ServerMsg::Refused {
                        message: format!("{}: not readable with this token", d.doc),
                        doc: d.doc,
                        changes: Vec::new(),
                        reason: RefusalReason::Forbidden,
                        heads: Vec::new(),
                    }),
                });
            }
        }
        let mut welcome = Vec::new();
        let mut later = Vec::new();
        let mut known = HashMap::new();
        for doc in claims.readable_docs() {
            let (mut updates, heads) = match self.docs.get(&doc) {
                Some(am) => {
                    let mut have = Vec::new();
                    if let Some(d) = digest_of.get(&doc) {
                        have.extend(from_wire(&d.heads));
                        have.extend(from_wire(&d.base));
                    }
                    let held = self.sizes.get(&doc).copied().unwrap_or(0);
                    let updates = catch_up(
                        am,
                        &mut self.snapshots,
                        &self.config.limits,
                        &doc,
                        &have,
                        held,
                    );
                    (updates, am.get_heads())
                }
                None => (Vec::new(), Vec::new()),
            };
            // The Welcome stays small: a large catch-up follows it in updates the
            // device applies (and keeps) one by one.
            let small = updates.len() == 1
                && updates[0].snapshot.is_empty()
                && updates[0].payload_len() <= CATCH_UP_CHUNK_BYTES;
            if small {
                welcome.extend(updates.pop());
            } else {
                // An empty entry with heads the device lacks: the catch-up follows.
                welcome.push(doc_update(&doc, Vec::new(), Vec::new(), &heads));
                later.extend(updates);
            }
            self.subscribers
                .entry(doc.clone())
                .or_default()
                .insert(conn);
            known.insert(doc, heads);
        }
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.claims = Some(claims);
            s.known = known;
        }
        out.push(ServerAction::Send {
            conn,
            lane: Lane::Bulk,
            frame: frame(&ServerMsg::Welcome {
                docs: welcome,
                limits: self.config.limits,
            }),
        });
        out.extend(later.into_iter().map(|u| ServerAction::Send {
            conn,
            lane: Lane::Bulk,
            frame: frame(&ServerMsg::Update(u)),
        }));
        out
    }

    fn resync(&mut self, conn: ConnId, doc: DocId, have: &[Hash]) -> Vec<ServerAction> {
        let readable = self
            .sessions
            .get(&conn)
            .and_then(|s| s.claims.as_ref())
            .is_some_and(|c| c.may_read(&doc));
        if !readable {
            return vec![refusal(
                conn,
                doc,
                Vec::new(),
                RefusalReason::Forbidden,
                Vec::new(),
            )];
        }
        let (updates, heads) = match self.docs.get(&doc) {
            Some(am) => (
                catch_up(
                    am,
                    &mut self.snapshots,
                    &self.config.limits,
                    &doc,
                    &from_wire(have),
                    self.sizes.get(&doc).copied().unwrap_or(0),
                ),
                am.get_heads(),
            ),
            None => (
                vec![doc_update(&doc, Vec::new(), Vec::new(), &[])],
                Vec::new(),
            ),
        };
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.known.insert(doc, heads);
        }
        updates
            .into_iter()
            .map(|u| ServerAction::Send {
                conn,
                lane: Lane::Bulk,
                frame: frame(&ServerMsg::Update(u)),
            })
            .collect()
    }

    fn push(&mut self, conn: ConnId, doc: DocId, raw: Vec<Vec<u8>>) -> Vec<ServerAction> {
        let Some(claims) = self.sessions.get(&conn).and_then(|s| s.claims.clone()) else {
            return Vec::new();
        };
        let limits = self.config.limits;
        let heads_now = |core: &Self| {
            if claims.may_read(&doc) {
                core.docs
                    .get(&doc)
                    .map(|d| to_wire(&d.get_heads()))
                    .unwrap_or_default()
            } else {
                Vec::new()
            }
        };
        // Decode everything first: hashes for the refusal message.
        let mut decoded = Vec::with_capacity(raw.len().min(limits.max_changes_per_push));
        let mut malformed = false;
        if raw.len() > limits.max_changes_per_push {
            self.stats.changes_refused += raw.len() as u64;
            let heads = heads_now(self);
            return vec![refusal(
                conn,
                doc,
                Vec::new(),
                RefusalReason::TooLarge,
                heads,
            )];
        }
        // Before any decoding: a compressed change may expand far beyond its
        // size on the wire.
        if raw
            .iter()
            .any(|b| decompressed_size(b, limits.max_change).is_some_and(|n| n > limits.max_change))
        {
            self.stats.changes_refused += raw.len() as u64;
            let heads = heads_now(self);
            return vec![refusal(
                conn,
                doc,
                Vec::new(),
                RefusalReason::TooLarge,
                heads,
            )];
        }
        for bytes in &raw {
            match Change::try_from(bytes.as_slice()) {
                Ok(c) if checksum_matches(bytes, &c) => decoded.push(c),
                _ => malformed = true,
            }
        }
        if !claims.may_write(&doc) {
            // Only *new* changes are refused: a reader whose base lags (e.g. after
            // reordered updates) re-sends changes it received from this server, and
            // must not mark them as its own refused changes.
            let held = |c: &Change| {
                claims.may_read(&doc)
                    && self
                        .docs
                        .get(&doc)
                        .is_some_and(|am| am.get_change_by_hash(&c.hash()).is_some())
            };
            let hashes: Vec<Hash> = decoded
                .iter()
                .filter(|c| !held(c))
                .map(|c| c.hash().0)
                .collect();
            let heads = heads_now(self);
            if hashes.is_empty() && !malformed {
                return vec![ServerAction::Send {
                    conn,
                    lane: Lane::Bulk,
                    frame: frame(&ServerMsg::Ack { doc, heads }),
                }];
            }
            self.stats.changes_refused += raw.len() as u64;
            return vec![refusal(conn, doc, hashes, RefusalReason::Forbidden, heads)];
        }
        let mut out = Vec::new();
        // Only changes new to the server count, and only they are refused: a
        // device whose base lags re-sends changes it received from here.
        let is_new = |c: &&Change| {
            self.docs
                .get(&doc)
                .is_none_or(|am| am.get_change_by_hash(&c.hash()).is_none())
        };
        let incoming: usize = decoded
            .iter()
            .filter(is_new)
            .map(|c| c.raw_bytes().len())
            .sum();
        let held = self.sizes.get(&doc).copied().unwrap_or(0);
        let max_doc = limits.max_doc_for(&doc);
        if held + incoming > max_doc {
            self.stats.changes_refused += raw.len() as u64;
            let hashes = decoded.iter().filter(is_new).map(|c| c.hash().0).collect();
            let heads = heads_now(self);
            return vec![refusal(conn, doc, hashes, RefusalReason::TooLarge, heads)];
        }
        if malformed {
            self.stats.changes_refused += 1;
            out.push(refusal(
                conn,
                doc.clone(),
                Vec::new(),
                RefusalReason::Malformed,
                Vec::new(),
            ));
        }
        let mut bad = Vec::new();
        // Only from a device that may write: decoding can panic inside
        // Automerge on hostile input (found by fuzzing), so it is guarded.
        let decoded: Vec<Change> = decoded
            .into_iter()
            .filter(|c| {
                let ok = guarded(|| is_canonical(c)).unwrap_or(false);
                if !ok {
                    bad.push(c.hash().0);
                }
                ok
            })
            .collect();
        let am = self.docs.entry(doc.clone()).or_default();
        let heads_before = am.get_heads();
        // Automerge 0.12 trusts the changes it applies: some that decode,
        // carry a valid checksum and are canonical still make it panic half
        // way (found by fuzzing). Each apply is guarded, and a panic puts the
        // document back as it was before this push, plus what was accepted.
        // The copy is taken before the first change this push applies (a
        // push of changes the server already holds costs none).
        let mut backup: Option<Automerge> = None;
        let mut accepted: Vec<Change> = Vec::new();
        let mut accepted_set: HashSet<ChangeHash> = HashSet::new();
        let mut missing = Vec::new();
        let mut oversized = Vec::new();
        for c in decoded {
            let h = c.hash();
            if am.get_change_by_hash(&h).is_some() || accepted_set.contains(&h) {
                continue;
            }
            if c.raw_bytes().len() > limits.max_change {
                oversized.push(h.0);
                continue;
            }
            let deps_ok = c
                .deps()
                .iter()
                .all(|d| accepted_set.contains(d) || am.get_change_by_hash(d).is_some());
            if !deps_ok {
                missing.push(h.0);
                continue;
            }
            let before = backup.get_or_insert_with(|| am.clone());
            // Apply one by one so a change automerge rejects leaves the rest intact.
            let applied = guarded(|| {
                am.apply_changes([c.clone()]).is_ok() && am.get_change_by_hash(&h).is_some()
            });
            match applied {
                Some(true) => {
                    accepted_set.insert(h);
                    accepted.push(c);
                }
                Some(false) => bad.push(h.0),
                None => {
                    bad.push(h.0);
                    *am = before.clone();
                    // These applied cleanly a moment ago.
                    if am.apply_changes(accepted.iter().cloned()).is_err() {
                        *am = before.clone();
                        bad.extend(accepted.drain(..).map(|c| c.hash().0));
                        accepted_set.clear();
                    }
                }
            }
        }
        let heads_after = am.get_heads();
        self.stats.changes_accepted += accepted.len() as u64;
        self.stats.changes_refused += (missing.len() + bad.len() + oversized.len()) as u64;
        let new_raw: Vec<Vec<u8>> = accepted.iter().map(|c| c.raw_bytes().to_vec()).collect();
        *self.sizes.entry(doc.clone()).or_default() += new_raw.iter().map(Vec::len).sum::<usize>();
        if !new_raw.is_empty() {
            out.push(ServerAction::Persist {
                doc: doc.clone(),
                changes: new_raw.clone(),
            });
        }
        let wire_heads = to_wire(&heads_after);
        out.push(ServerAction::Send {
            conn,
            lane: Lane::Bulk,
            frame: frame(&ServerMsg::Ack {
                doc: doc.clone(),
                heads: wire_heads.clone(),
            }),
        });
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.known.insert(doc.clone(), heads_after.clone());
        }
        // Permanent refusals go first: the device then knows that the changes
        // refused below for missing dependencies are built on them.
        if !oversized.is_empty() {
            out.push(refusal(
                conn,
                doc.clone(),
                oversized,
                RefusalReason::TooLarge,
                wire_heads.clone(),
            ));
        }
        if !bad.is_empty() {
            out.push(refusal(
                conn,
                doc.clone(),
                bad,
                RefusalReason::Malformed,
                wire_heads.clone(),
            ));
        }
        if !missing.is_empty() {
            out.push(refusal(
                conn,
                doc.clone(),
                missing,
                RefusalReason::MissingDeps,
                wire_heads.clone(),
            ));
        }
        if !new_raw.is_empty() {
            self.fan_out(conn, &doc, &heads_before, new_raw, &mut out);
        }
        out
    }

    /// Sends new changes to every other subscriber: one shared frame for devices
    /// that were up to date, a computed catch-up for the rest.
    fn fan_out(
        &mut self,
        origin: ConnId,
        doc: &DocId,
        heads_before: &[ChangeHash],
        new_raw: Vec<Vec<u8>>,
        out: &mut Vec<ServerAction>,
    ) {
        let Some(subs) = self.subscribers.get(doc) else {
            return;
        };
        let Some(am) = self.docs.get(doc) else {
            return;
        };
        let heads = am.get_heads();
        let wire_heads = to_wire(&heads);
        let lane = match doc {
            DocId::Agenda(_) => Lane::Schedule,
            DocId::Attendee(..) => Lane::Bulk,
        };
        let mut shared: Option<Bytes> = None;
        let mut shared_uses = 0u64;
        let mut targets: Vec<ConnId> = subs.iter().copied().filter(|c| *c != origin).collect();
        targets.sort_unstable();
        for conn in targets {
            let Some(s) = self.sessions.get_mut(&conn) else {
                continue;
            };
            let known = s
                .known
                .insert(doc.clone(), heads.clone())
                .unwrap_or_default();
            if known.as_slice() == heads_before {
                shared_uses += 1;
                let f = shared
                    .get_or_insert_with(|| {
                        frame(&ServerMsg::Update(DocUpdate {
                            doc: doc.clone(),
                            changes: new_raw.clone(),
                            snapshot: Vec::new(),
                            heads: wire_heads.clone(),
                        }))
                    })
                    .clone();
                out.push(ServerAction::Send {
                    conn,
                    frame: f,
                    lane,
                });
            } else {
                let limits = &self.config.limits;
                let held = self.sizes.get(doc).copied().unwrap_or(0);
                for u in catch_up(am, &mut self.snapshots, limits, doc, &known, held) {
                    out.push(ServerAction::Send {
                        conn,
                        frame: frame(&ServerMsg::Update(u)),
                        lane,
                    });
                }
            }
        }
        if shared.is_some() {
            self.stats.broadcast_frames += 1;
            self.stats.broadcast_sends += shared_uses;
        }
    }
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
        },
        RefusalReason::Malformed => format!("{doc}: change could not be decoded or applied"),
        RefusalReason::MissingDeps => format!("{doc}: change depends on changes the server lacks"),
        RefusalReason::TooLarge => format!("{doc}: change or document over the size limits"),
    };
    ServerAction::Send {
        conn,
        lane: Lane::Bulk,
        frame: frame(&ServerMsg::Refused {
            doc,
            changes,
            reason,
            message,
            heads,
        }),
    }
}

fn doc_update(
    doc: &DocId,
    changes: Vec<Vec<u8>>,
    snapshot: Vec<u8>,
    heads: &[ChangeHash],
) -> DocUpdate {
    DocUpdate {
        doc: doc.clone(),
        changes,
        snapshot,
        heads: to_wire(heads),
    }
}

/// What a holder of `have` lacks of `am`, as updates to send in order: nothing
/// (one empty update), one snapshot, or batches of at most
/// [`CATCH_UP_CHUNK_BYTES`] whose heads each cover every batch before them.
/// Unknown hashes in `have` are ignored. `held_bytes` is the size of every
/// change of the document (an estimate is enough: it only picks the form).
fn catch_up(
    am: &Automerge,
    snapshots: &mut HashMap<DocId, Snapshot>,
    limits: &Limits,
    doc: &DocId,
    have: &[ChangeHash],
    held_bytes: usize,
) -> Vec<DocUpdate> {
    let heads = am.get_heads();
    let update =
        |changes, snapshot, heads: &[ChangeHash]| doc_update(doc, changes, snapshot, heads);
    let known: Vec<ChangeHash> = have
        .iter()
        .filter(|h| am.get_change_by_hash(h).is_some())
        .copied()
        .collect();
    if known.len() == have.len() && !have.is_empty() {
        let mut a = known.clone();
        let mut b = heads.clone();
        a.sort();
        b.sort();
        a.dedup();
        if a == b {
            return vec![update(Vec::new(), Vec::new(), &heads)];
        }
    }
    let mut snapshot = |missing_bytes: usize| {
        let snap = match snapshots.get(doc) {
            Some(s) if s.heads == heads => s,
            _ => {
                let fresh = Snapshot {
                    heads: heads.clone(),
                    bytes: am.save(),
                };
                snapshots.insert(doc.clone(), fresh);
                &snapshots[doc]
            }
        };
        let fits = snap.bytes.len() + CATCH_UP_CHUNK_BYTES <= limits.max_frame;
        (fits && snap.bytes.len() * 2 <= missing_bytes).then(|| snap.bytes.clone())
    };
    // A device that holds nothing needs every change: their size is known
    // without rebuilding them (Automerge rebuilds changes from its ops, the
    // costliest step of a first download).
    if known.is_empty() && held_bytes >= SNAPSHOT_MIN_BYTES {
        if let Some(bytes) = snapshot(held_bytes) {
            return vec![update(Vec::new(), bytes, &heads)];
        }
    }
    let missing = am.get_changes(&known);
    let missing_bytes: usize = missing.iter().map(|c| c.raw_bytes().len()).sum();
    if missing_bytes >= SNAPSHOT_MIN_BYTES {
        if let Some(bytes) = snapshot(missing_bytes) {
            return vec![update(Vec::new(), bytes, &heads)];
        }
    }
    // Batches; `front` is the heads of `known` plus everything batched so far.
    let mut front: HashSet<ChangeHash> = known.iter().copied().collect();
    let mut out = Vec::new();
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut batch_bytes = 0;
    let n = missing.len();
    for (i, c) in missing.into_iter().enumerate() {
        let raw = c.raw_bytes();
        if !batch.is_empty() && batch_bytes + raw.len() > CATCH_UP_CHUNK_BYTES {
            let mut prefix: Vec<ChangeHash> = front.iter().copied().collect();
            prefix.sort();
            out.push(update(std::mem::take(&mut batch), Vec::new(), &prefix));
            batch_bytes = 0;
        }
        for d in c.deps() {
            front.remove(d);
        }
        front.insert(c.hash());
        batch_bytes += raw.len();
        batch.push(raw.to_vec());
        if i + 1 == n {
            out.push(update(std::mem::take(&mut batch), Vec::new(), &heads));
        }
    }
    if out.is_empty() {
        out.push(update(Vec::new(), Vec::new(), &heads));
    }
    out
}
