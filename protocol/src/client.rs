//! The sans-IO client: a [`Replica`] of the documents a device holds and a
//! [`ClientSession`] that speaks the protocol for one connection.
//!
//! The replica carries, per document, the Automerge document and its
//! [`DocSyncState`]: the *base* (the last heads the server confirmed holding)
//! and the changes the server refused. Everything a device made that is not
//! under its base is *pending* and is pushed on the next connection.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use automerge::{ActorId, Automerge, Change, ChangeHash, ReadDoc as _};
use serde::{Deserialize, Serialize};

use crate::ids::{DocId, EventId};
use crate::wire::{
    ClientMsg, DocDigest, DocUpdate, ErrorCode, Hash, InstallationId, Limits, RefusalReason,
    ServerMsg,
};

/// Most changes in one push (the server accepts up to `Limits::max_changes_per_push`).
pub const MAX_PUSH_CHANGES: usize = 1000;

/// A change the server refused, kept on the device and shown in its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The refused change.
    pub change: Hash,
    /// Why.
    pub reason: RefusalReason,
    /// The server's explanation (names the document).
    pub message: String,
}

/// Sync bookkeeping for one document, persisted beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocSyncState {
    /// The last heads the server confirmed holding.
    pub base: Vec<Hash>,
    /// Changes the server refused for good.
    pub refused: Vec<Refusal>,
}

/// One document on a device.
#[derive(Debug, Clone)]
pub struct ReplicaDoc {
    /// The Automerge document.
    pub doc: Automerge,
    /// Its sync bookkeeping.
    pub sync: DocSyncState,
}

/// Every document a device holds.
#[derive(Debug)]
pub struct Replica {
    actor: ActorId,
    installation: InstallationId,
    docs: BTreeMap<DocId, ReplicaDoc>,
}

fn hashes(h: &[Hash]) -> Vec<ChangeHash> {
    h.iter().map(|h| ChangeHash(*h)).collect()
}

impl Replica {
    /// An empty replica whose local changes are made by `actor`.
    pub fn new(actor: ActorId) -> Self {
        Replica {
            actor,
            installation: [0; 16],
            docs: BTreeMap::new(),
        }
    }

    /// The actor id of this device.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// This installation's id, sent in every `Hello` (zeros until set).
    pub fn installation(&self) -> InstallationId {
        self.installation
    }

    /// Sets the installation id: random per install, kept by the device,
    /// so a reconnect replaces the session its lost goodbye left open.
    pub fn set_installation(&mut self, id: InstallationId) {
        self.installation = id;
    }

    /// Makes `actor` this device's actor for every document from now on (a
    /// device that set aside changes the server refused starts a new actor,
    /// so its new changes never share a sequence number with those).
    pub fn set_actor(&mut self, actor: ActorId) {
        for rd in self.docs.values_mut() {
            rd.doc.set_actor(actor.clone());
        }
        self.actor = actor;
    }

    /// Inserts a loaded document (its actor is set to this device's).
    pub fn insert(&mut self, id: DocId, mut doc: Automerge, sync: DocSyncState) {
        doc.set_actor(self.actor.clone());
        self.docs.insert(id, ReplicaDoc { doc, sync });
    }

    /// A document, if held.
    pub fn get(&self, id: &DocId) -> Option<&ReplicaDoc> {
        self.docs.get(id)
    }

    /// A document, created empty if absent.
    pub fn get_or_create(&mut self, id: &DocId) -> &mut ReplicaDoc {
        let actor = self.actor.clone();
        self.docs.entry(id.clone()).or_insert_with(|| ReplicaDoc {
            doc: Automerge::new().with_actor(actor),
            sync: DocSyncState::default(),
        })
    }

    /// Ids of all held documents.
    pub fn doc_ids(&self) -> Vec<DocId> {
        self.docs.keys().cloned().collect()
    }

    /// Splits the unconfirmed changes of `id` into those to push and those built
    /// on a refused change (reported with the refusal they depend on).
    fn classify(&self, id: &DocId) -> (Vec<Change>, Vec<Refusal>) {
        let Some(rd) = self.docs.get(id) else {
            return (Vec::new(), Vec::new());
        };
        let unconfirmed = rd.doc.get_changes(&hashes(&rd.sync.base));
        if rd.sync.refused.is_empty() {
            return (unconfirmed, Vec::new());
        }
        // Which refusal each tainted change goes back to.
        let mut root: HashMap<ChangeHash, usize> = rd
            .sync
            .refused
            .iter()
            .enumerate()
            .map(|(i, r)| (ChangeHash(r.change), i))
            .collect();
        loop {
            let before = root.len();
            for c in &unconfirmed {
                if root.contains_key(&c.hash()) {
                    continue;
                }
                if let Some(i) = c.deps().iter().find_map(|d| root.get(d).copied()) {
                    root.insert(c.hash(), i);
                }
            }
            if root.len() == before {
                break;
            }
        }
        let mut pending = Vec::new();
        let mut blocked = Vec::new();
        for c in unconfirmed {
            match root.get(&c.hash()) {
                None => pending.push(c),
                Some(&i) => {
                    let r = &rd.sync.refused[i];
                    if r.change != c.hash().0 {
                        blocked.push(Refusal {
                            change: c.hash().0,
                            reason: r.reason,
                            message: format!("built on a refused change: {}", r.message),
                        });
                    }
                }
            }
        }
        (pending, blocked)
    }

    /// Local changes of `id` not yet confirmed by the server, excluding refused
    /// changes and everything built on them, in causal order.
    pub fn pending(&self, id: &DocId) -> Vec<Change> {
        self.classify(id).0
    }

    /// Number of pending local changes over all documents.
    pub fn pending_count(&self) -> usize {
        self.docs.keys().map(|id| self.pending(id).len()).sum()
    }

    /// Every change the server refused, and every local change built on one
    /// (those cannot be sent either), over all documents.
    pub fn refusals(&self) -> Vec<(DocId, Refusal)> {
        let mut out = Vec::new();
        for (id, d) in &self.docs {
            out.extend(d.sync.refused.iter().map(|r| (id.clone(), r.clone())));
            out.extend(self.classify(id).1.into_iter().map(|r| (id.clone(), r)));
        }
        out
    }

    fn has_all(&self, id: &DocId, heads: &[Hash]) -> bool {
        match self.docs.get(id) {
            Some(rd) => heads
                .iter()
                .all(|h| rd.doc.get_change_by_hash(&ChangeHash(*h)).is_some()),
            None => heads.is_empty(),
        }
    }
}

/// What happened, for the application and the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The server accepted the credentials and announced its limits (keep
    /// them: local changes are checked against them before they are made).
    Welcomed {
        /// The server's limits.
        limits: Limits,
    },
    /// Changes from the server were applied to a document.
    Updated {
        /// The document.
        doc: DocId,
        /// How many changes arrived.
        changes: usize,
    },
    /// The server confirmed holding local changes.
    Acked {
        /// The document.
        doc: DocId,
    },
    /// The server refused changes or access.
    Refused {
        /// The document.
        doc: DocId,
        /// Why.
        reason: RefusalReason,
        /// The server's message.
        message: String,
    },
}

/// What the driver must do after a call.
#[derive(Debug, Default)]
pub struct ClientOutput {
    /// Messages to send, in order.
    pub send: Vec<ClientMsg>,
    /// Documents whose content changed (persist before their sync state).
    pub docs_changed: BTreeSet<DocId>,
    /// Documents whose sync state changed.
    pub sync_changed: BTreeSet<DocId>,
    /// Events for the application.
    pub events: Vec<ClientEvent>,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The server sent an error and closes the stream.
    #[error("{code}: {message}")]
    Server {
        /// The code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The server sent something that is not valid.
    #[error("server sent an invalid message: {0}")]
    BadServerMessage(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingWelcome,
    Ready,
}

/// The protocol state of one connection, on the device side.
#[derive(Debug)]
pub struct ClientSession {
    event: EventId,
    token: String,
    phase: Phase,
    in_flight: HashMap<DocId, HashSet<ChangeHash>>,
    resyncing: HashSet<DocId>,
    /// Catch-ups announced in the Welcome and still arriving: the heads they end at.
    awaiting: HashMap<DocId, Vec<Hash>>,
    /// Heads the server announced that this device lacks, seen while a
    /// catch-up was on its way (checked again once it has arrived, instead
    /// of asking for a second catch-up of the same changes).
    lacking: HashMap<DocId, Vec<Hash>>,
    /// The server's limits: the defaults until the Welcome announces them.
    limits: Limits,
}

impl ClientSession {
    /// Starts a session: returns it and the first messages (Hello, then the
    /// pending changes pipelined behind it, so a sync takes one round trip).
    pub fn start(event: EventId, token: String, replica: &Replica) -> (Self, Vec<ClientMsg>) {
        let mut s = ClientSession {
            event,
            token,
            phase: Phase::AwaitingWelcome,
            in_flight: HashMap::new(),
            resyncing: HashSet::new(),
            awaiting: HashMap::new(),
            lacking: HashMap::new(),
            limits: Limits::default(),
        };
        let docs = replica
            .docs
            .iter()
            .map(|(id, rd)| DocDigest {
                doc: id.clone(),
                heads: rd.doc.get_heads().iter().map(|h| h.0).collect(),
                base: rd.sync.base.clone(),
            })
            .collect();
        let mut msgs = vec![ClientMsg::Hello {
            event: s.event.clone(),
            token: s.token.clone(),
            docs,
            installation: replica.installation,
        }];
        for id in replica.doc_ids() {
            msgs.extend(s.push_pending(replica, &id));
        }
        (s, msgs)
    }

    /// Whether the server has welcomed this session.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Whether everything is settled: welcomed, nothing in flight, no resync
    /// outstanding, and no pending local change.
    pub fn is_settled(&self, replica: &Replica) -> bool {
        self.phase == Phase::Ready
            && self.in_flight.values().all(HashSet::is_empty)
            && self.resyncing.is_empty()
            && self.awaiting.is_empty()
            && replica.pending_count() == 0
    }

    /// Call after a local edit of `doc`: returns the pushes to send, if any.
    pub fn local_change(&mut self, replica: &Replica, doc: &DocId) -> Vec<ClientMsg> {
        self.push_pending(replica, doc)
    }

    /// Pushes of the pending changes not in flight yet, split to stay within the
    /// server's limits. Nothing while a resync of `doc` is outstanding: the base
    /// is about to move, and what is pending may be the server's own changes.
    fn push_pending(&mut self, replica: &Replica, doc: &DocId) -> Vec<ClientMsg> {
        if self.resyncing.contains(doc) {
            return Vec::new();
        }
        let max_changes = MAX_PUSH_CHANGES.min(self.limits.max_changes_per_push.max(1));
        let max_bytes = self.limits.max_push_bytes();
        let flight = self.in_flight.entry(doc.clone()).or_default();
        let mut pushes = Vec::new();
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut batch_bytes = 0;
        for c in replica.pending(doc) {
            if !flight.insert(c.hash()) {
                continue;
            }
            let bytes = c.raw_bytes().to_vec();
            if !batch.is_empty()
                && (batch.len() >= max_changes || batch_bytes + bytes.len() > max_bytes)
            {
                pushes.push(ClientMsg::Push {
                    doc: doc.clone(),
                    changes: std::mem::take(&mut batch),
                });
                batch_bytes = 0;
            }
            batch_bytes += bytes.len();
            batch.push(bytes);
        }
        if !batch.is_empty() {
            pushes.push(ClientMsg::Push {
                doc: doc.clone(),
                changes: batch,
            });
        }
        pushes
    }

    /// Handles one message from the server.
    pub fn handle(
        &mut self,
        replica: &mut Replica,
        msg: ServerMsg,
    ) -> Result<ClientOutput, SessionError> {
        let mut out = ClientOutput::default();
        match msg {
            ServerMsg::Welcome { docs, limits } => {
                self.phase = Phase::Ready;
                self.limits = limits;
                out.events.push(ClientEvent::Welcomed { limits });
                for u in docs {
                    if u.is_empty() && !replica.has_all(&u.doc, &u.heads) {
                        // The server sends this catch-up in updates that follow.
                        self.awaiting.insert(u.doc, u.heads);
                        continue;
                    }
                    self.update(replica, u, &mut out)?;
                }
                // Updates that overtook the Welcome were waiting for it.
                let early: Vec<DocId> = self.lacking.keys().cloned().collect();
                for doc in early {
                    self.recheck(replica, &doc, &mut out);
                }
            }
            ServerMsg::Update(u) => self.update(replica, u, &mut out)?,
            ServerMsg::Heads { doc, heads } => {
                // A beacon: lacking any of these, ask (or wait for what is
                // on its way); holding them all, they are confirmed.
                if replica.get(&doc).is_some() || !heads.is_empty() {
                    self.confirm(replica, &doc, &heads, &mut out);
                }
            }
            ServerMsg::Ack { doc, heads } => {
                self.confirm(replica, &doc, &heads, &mut out);
                out.events.push(ClientEvent::Acked { doc });
            }
            ServerMsg::Refused {
                doc,
                changes,
                reason,
                message,
                heads,
            } => {
                let flight = self.in_flight.entry(doc.clone()).or_default();
                for h in &changes {
                    flight.remove(&ChangeHash(*h));
                }
                if reason.is_permanent() {
                    if let Some(rd) = replica.docs.get_mut(&doc) {
                        for h in &changes {
                            let known = rd.doc.get_change_by_hash(&ChangeHash(*h)).is_some();
                            if known && !rd.sync.refused.iter().any(|r| r.change == *h) {
                                rd.sync.refused.push(Refusal {
                                    change: *h,
                                    reason,
                                    message: message.clone(),
                                });
                            }
                        }
                        out.sync_changed.insert(doc.clone());
                    }
                } else {
                    // Transient: move the base to what the server holds and resend from there.
                    self.confirm(replica, &doc, &heads, &mut out);
                    self.in_flight.remove(&doc);
                    out.send.extend(self.push_pending(replica, &doc));
                }
                out.events.push(ClientEvent::Refused {
                    doc,
                    reason,
                    message,
                });
            }
            ServerMsg::Error { code, message } => {
                return Err(SessionError::Server { code, message });
            }
        }
        Ok(out)
    }

    /// Whether changes of `doc` from the server are on their way: the
    /// Welcome, a catch-up it announced, or the answer to a resync.
    fn catching_up(&self, doc: &DocId) -> bool {
        self.phase == Phase::AwaitingWelcome
            || self.resyncing.contains(doc)
            || self.awaiting.contains_key(doc)
    }

    /// Once a catch-up has arrived: heads seen meanwhile are confirmed if
    /// held now (they came from the server), and still lacking need one
    /// (small) resync.
    fn recheck(&mut self, replica: &mut Replica, doc: &DocId, out: &mut ClientOutput) {
        if self.catching_up(doc) {
            return;
        }
        if let Some(heads) = self.lacking.remove(doc) {
            self.confirm(replica, doc, &heads, out);
        }
    }

    /// Records that the server holds `heads` of `doc`.
    fn confirm(
        &mut self,
        replica: &mut Replica,
        doc: &DocId,
        heads: &[Hash],
        out: &mut ClientOutput,
    ) {
        if !replica.has_all(doc, heads) {
            if self.catching_up(doc) {
                // What is on its way probably brings them.
                self.lacking.insert(doc.clone(), heads.to_vec());
            } else {
                self.request_resync(replica, doc, out);
            }
            return;
        }
        let Some(rd) = replica.docs.get_mut(doc) else {
            return;
        };
        // The base never moves backwards: a late or duplicated message may carry
        // older heads. When neither covers the other, the union is still a set the
        // server holds everything under.
        // Hashes only: metadata, not whole changes (which Automerge rebuilds from its ops).
        let since = |base: &[Hash]| -> HashSet<ChangeHash> {
            rd.doc
                .get_changes_meta(&hashes(base))
                .iter()
                .map(|m| m.hash)
                .collect()
        };
        let covered_by = |older: &[Hash], newer_since: &HashSet<ChangeHash>| {
            older.iter().all(|h| !newer_since.contains(&ChangeHash(*h)))
        };
        let since_new = since(heads);
        let (mut new_base, unconfirmed) = if covered_by(&rd.sync.base, &since_new) {
            (heads.to_vec(), since_new)
        } else {
            let since_old = since(&rd.sync.base);
            if covered_by(heads, &since_old) {
                (rd.sync.base.clone(), since_old)
            } else {
                let mut union = heads.to_vec();
                union.extend(rd.sync.base.iter().copied());
                let since_union = since(&union);
                (union, since_union)
            }
        };
        new_base.sort_unstable();
        new_base.dedup();
        let mut old = rd.sync.base.clone();
        old.sort_unstable();
        if new_base != old {
            rd.sync.base = new_base;
            out.sync_changed.insert(doc.clone());
        }
        if let Some(f) = self.in_flight.get_mut(doc) {
            f.retain(|h| unconfirmed.contains(h));
        }
    }

    fn request_resync(&mut self, replica: &Replica, doc: &DocId, out: &mut ClientOutput) {
        if !self.resyncing.insert(doc.clone()) {
            return;
        }
        let mut have: Vec<Hash> = Vec::new();
        if let Some(rd) = replica.docs.get(doc) {
            have.extend(rd.doc.get_heads().iter().map(|h| h.0));
            have.extend(rd.sync.base.iter().copied());
        }
        out.send.push(ClientMsg::Resync {
            doc: doc.clone(),
            have,
        });
    }

    fn update(
        &mut self,
        replica: &mut Replica,
        u: DocUpdate,
        out: &mut ClientOutput,
    ) -> Result<(), SessionError> {
        if u.is_empty() && u.heads.is_empty() && replica.get(&u.doc).is_none() {
            self.resyncing.remove(&u.doc);
            return Ok(());
        }
        let doc_id = u.doc.clone();
        let bad = move |e: &dyn std::fmt::Display| {
            SessionError::BadServerMessage(format!("{doc_id}: {e}"))
        };
        let mut decoded = Vec::with_capacity(u.changes.len());
        for bytes in &u.changes {
            decoded.push(Change::try_from(bytes.as_slice()).map_err(|e| bad(&e))?);
        }
        let rd = replica.get_or_create(&u.doc);
        let before = rd.doc.get_heads();
        if !decoded.is_empty() {
            rd.doc.apply_changes(decoded).map_err(|e| bad(&e))?;
        }
        if !u.snapshot.is_empty() {
            // Loaded strictly on its own first (`load_incremental` would skip a
            // corrupt chunk silently): a bad snapshot leaves the document as it was.
            let mut loaded = Automerge::load(&u.snapshot).map_err(|e| bad(&e))?;
            if rd.doc.is_empty() {
                loaded.set_actor(rd.doc.get_actor().clone());
                rd.doc = loaded;
            } else {
                rd.doc.merge(&mut loaded).map_err(|e| bad(&e))?;
            }
        }
        // Only changes now in the document count: Automerge queues a change
        // whose dependencies are missing, and it is not received until it
        // applies.
        let n = if rd.doc.get_heads() == before {
            0
        } else {
            rd.doc.get_changes_meta(&before).len()
        };
        if n > 0 {
            out.docs_changed.insert(u.doc.clone());
            out.events.push(ClientEvent::Updated {
                doc: u.doc.clone(),
                changes: n,
            });
        }
        if let Some(end) = self.awaiting.get(&u.doc) {
            if replica.has_all(&u.doc, end) {
                self.awaiting.remove(&u.doc);
            }
        }
        // A resync is answered once the device holds the heads an update
        // announces (an update that overtook the answer does not end it).
        if replica.has_all(&u.doc, &u.heads) {
            self.resyncing.remove(&u.doc);
        }
        self.confirm(replica, &u.doc, &u.heads, out);
        self.recheck(replica, &u.doc, out);
        out.send.extend(self.push_pending(replica, &u.doc));
        Ok(())
    }
}
