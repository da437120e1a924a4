//! Fan-out: per document, who is subscribed and what each is known to hold,
//! the catch-ups computed for devices that are behind, the snapshot reused
//! while the document's heads hold, and the frame shared by every device that
//! was up to date when a change arrived.
//!
//! Every update of a document travels in the document's [`Lane`], so a
//! device receives a document's catch-up, fan-out and heads beacons in the
//! order they were made: the heads a subscriber is recorded as holding are
//! those of the last update queued to it, never overtaken by a later one.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use automerge::{Automerge, ChangeHash, ReadDoc as _};
use bytes::Bytes;

use super::{frame, to_wire, ConnId, Lane, ServerAction, ServerStats};
use crate::ids::DocId;
use crate::wire::{DocUpdate, Limits, ServerMsg};

/// Largest batch of raw changes in one catch-up update: a device on a slow
/// link that loses the connection keeps every batch it received.
pub const CATCH_UP_CHUNK_BYTES: usize = 64 * 1024;

/// A catch-up of at least this many bytes of changes is sent as a snapshot
/// (a compressed whole document) when that is at most half the size.
pub const SNAPSHOT_MIN_BYTES: usize = 16 * 1024;

/// After a document's last change, how long the server waits before telling
/// every subscriber the document's heads (a *beacon*, [`ServerMsg::Heads`]). A device that lacks a change then finds out within this time
/// and asks for it; while changes keep coming, each update carries the
/// heads and does the same.
pub const BEACON_AFTER: Duration = Duration::from_secs(3);

/// A saved document and the heads it was saved at.
#[derive(Debug)]
struct Snapshot {
    heads: Vec<ChangeHash>,
    bytes: Vec<u8>,
    /// The `Update` frame carrying it, encoded once for every device that
    /// needs it (see [`DocState::update_frame`]).
    frame: Option<Bytes>,
}

/// One subscriber of a document.
#[derive(Debug, Clone, Default)]
struct Subscriber {
    /// The heads of the last update queued to it (what it holds once that
    /// update arrives, plus its own changes).
    known: Vec<ChangeHash>,
    /// Its outbox overflowed: nothing is fanned out to it until the driver
    /// reports it drained, then it gets one catch-up from `known`.
    behind: bool,
}

/// Changes a device just added to a document, for [`DocState::fan_out`].
#[derive(Debug)]
pub(crate) struct NewChanges {
    /// The session that pushed them (it gets an Ack instead); `None` for
    /// changes the server made (seat outcomes and counts).
    pub origin: Option<ConnId>,
    /// The document's heads before them.
    pub heads_before: Vec<ChangeHash>,
    /// The changes, raw, in causal order.
    pub raw: Vec<Vec<u8>>,
}

/// Everything the server keeps for one document.
#[derive(Debug, Default)]
pub(crate) struct DocState {
    /// The document, once it has a change (or was loaded).
    pub am: Option<Automerge>,
    /// Bytes of changes held, for the document size limit.
    pub bytes: usize,
    snapshot: Option<Snapshot>,
    subs: BTreeMap<ConnId, Subscriber>,
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

/// An update that says "nothing": used for documents the server lacks.
pub(crate) fn empty_update(doc: &DocId, heads: &[ChangeHash]) -> DocUpdate {
    doc_update(doc, Vec::new(), Vec::new(), heads)
}

impl DocState {
    /// The frame of an update of this document. A snapshot update is encoded
    /// once and shared by every device that gets it: 10,000 devices joining
    /// at once would otherwise each hold a copy of the agenda in their
    /// outbox (a third of a gigabyte for a 32 KB agenda).
    pub fn update_frame(&mut self, u: DocUpdate) -> Bytes {
        if !u.snapshot.is_empty() {
            if let Some(snap) = self.snapshot.as_mut() {
                if to_wire(&snap.heads) == u.heads && snap.bytes.len() == u.snapshot.len() {
                    return snap
                        .frame
                        .get_or_insert_with(|| frame(&ServerMsg::Update(u)))
                        .clone();
                }
            }
        }
        frame(&ServerMsg::Update(u))
    }

    /// Puts the document back to `am` (`bytes` of changes): loaded from
    /// disk, or rolled back after a failed write. Subscribers stay.
    pub fn reload(&mut self, am: Automerge, bytes: usize) {
        self.am = Some(am);
        self.bytes = bytes;
    }

    /// The document's heads (none while it has no change).
    pub fn heads(&self) -> Vec<ChangeHash> {
        self.am
            .as_ref()
            .map(Automerge::get_heads)
            .unwrap_or_default()
    }

    /// Subscribes `conn`, recorded as holding `known`.
    pub fn subscribe(&mut self, conn: ConnId, known: Vec<ChangeHash>) {
        self.subs.insert(
            conn,
            Subscriber {
                known,
                behind: false,
            },
        );
    }

    /// How many devices are subscribed.
    pub fn subscriber_count(&self) -> usize {
        self.subs.len()
    }

    /// Forgets `conn`.
    pub fn unsubscribe(&mut self, conn: ConnId) {
        self.subs.remove(&conn);
    }

    /// Records that `conn` is now known to hold `known`.
    pub fn set_known(&mut self, conn: ConnId, known: Vec<ChangeHash>) {
        if let Some(s) = self.subs.get_mut(&conn) {
            s.known = known;
        }
    }

    /// What a holder of `have` lacks, as updates to send in order: nothing
    /// (one empty update), one snapshot, or batches of at most
    /// [`CATCH_UP_CHUNK_BYTES`] whose heads each cover every batch before
    /// them. Unknown hashes in `have` are ignored.
    pub fn catch_up(&mut self, id: &DocId, limits: &Limits, have: &[ChangeHash]) -> Vec<DocUpdate> {
        let Some(am) = &self.am else {
            return vec![empty_update(id, &[])];
        };
        let heads = am.get_heads();
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
                return vec![empty_update(id, &heads)];
            }
        }
        let snapshots = &mut self.snapshot;
        let mut snapshot = |missing_bytes: usize| {
            if snapshots.as_ref().is_none_or(|s| s.heads != heads) {
                *snapshots = Some(Snapshot {
                    heads: heads.clone(),
                    bytes: am.save(),
                    frame: None,
                });
            }
            let snap = snapshots.as_ref()?;
            let fits = snap.bytes.len() + CATCH_UP_CHUNK_BYTES <= limits.max_frame;
            (fits && snap.bytes.len() * 2 <= missing_bytes).then(|| snap.bytes.clone())
        };
        // A device that holds nothing needs every change: their size is
        // known without rebuilding them (Automerge rebuilds changes from its
        // ops, the costliest step of a first download).
        if known.is_empty() && self.bytes >= SNAPSHOT_MIN_BYTES {
            if let Some(bytes) = snapshot(self.bytes) {
                return vec![doc_update(id, Vec::new(), bytes, &heads)];
            }
        }
        let missing = am.get_changes(&known);
        let missing_bytes: usize = missing.iter().map(|c| c.raw_bytes().len()).sum();
        if missing_bytes >= SNAPSHOT_MIN_BYTES {
            if let Some(bytes) = snapshot(missing_bytes) {
                return vec![doc_update(id, Vec::new(), bytes, &heads)];
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
                out.push(doc_update(
                    id,
                    std::mem::take(&mut batch),
                    Vec::new(),
                    &prefix,
                ));
                batch_bytes = 0;
            }
            for d in c.deps() {
                front.remove(d);
            }
            front.insert(c.hash());
            batch_bytes += raw.len();
            batch.push(raw.to_vec());
            if i + 1 == n {
                out.push(doc_update(
                    id,
                    std::mem::take(&mut batch),
                    Vec::new(),
                    &heads,
                ));
            }
        }
        if out.is_empty() {
            out.push(empty_update(id, &heads));
        }
        out
    }

    /// Sends changes new since `heads_before` to every subscriber but
    /// `origin`: one [`ServerAction::Broadcast`] of a frame encoded once for
    /// those that held `heads_before`, a computed catch-up for the rest.
    /// Subscribers that are behind get nothing now (their catch-up follows
    /// when their outbox drains).
    pub fn fan_out(
        &mut self,
        id: &DocId,
        limits: &Limits,
        new: NewChanges,
        out: &mut Vec<ServerAction>,
        stats: &mut ServerStats,
    ) {
        let NewChanges {
            origin,
            heads_before,
            raw: new_raw,
        } = new;
        let heads_before = heads_before.as_slice();
        let heads = self.heads();
        let lane = Lane::of(id);
        let mut shared = Vec::new();
        let mut lagging = Vec::new();
        for (conn, s) in self.subs.iter_mut() {
            if Some(*conn) == origin || s.behind {
                continue;
            }
            let known = std::mem::replace(&mut s.known, heads.clone());
            if known.as_slice() == heads_before {
                shared.push(*conn);
            } else {
                lagging.push((*conn, known));
            }
        }
        if !shared.is_empty() {
            stats.broadcast_frames += 1;
            stats.broadcast_sends += shared.len() as u64;
            out.push(ServerAction::Broadcast {
                doc: id.clone(),
                base: heads_before.to_vec(),
                conns: shared,
                frame: frame(&ServerMsg::Update(doc_update(
                    id,
                    new_raw,
                    Vec::new(),
                    &heads,
                ))),
                lane,
            });
        }
        for (conn, known) in lagging {
            for u in self.catch_up(id, limits, &known) {
                out.push(ServerAction::Send {
                    conn,
                    frame: self.update_frame(u),
                    lane,
                });
            }
        }
    }

    /// The heads beacon ([`ServerMsg::Heads`]) to every subscriber that is
    /// not behind.
    pub fn beacon(&self, id: &DocId) -> Option<ServerAction> {
        let heads = self.heads();
        let conns: Vec<ConnId> = self
            .subs
            .iter()
            .filter(|(_, s)| !s.behind)
            .map(|(c, _)| *c)
            .collect();
        if conns.is_empty() {
            return None;
        }
        Some(ServerAction::Broadcast {
            doc: id.clone(),
            base: heads.clone(),
            conns,
            frame: frame(&ServerMsg::Heads {
                doc: id.clone(),
                heads: to_wire(&heads),
            }),
            lane: Lane::of(id),
        })
    }

    /// The driver dropped a broadcast of this document to `conn` (its outbox
    /// was full): it holds `base` at most, and gets nothing more until it
    /// drains.
    pub fn fell_behind(&mut self, conn: ConnId, base: Vec<ChangeHash>) {
        if let Some(s) = self.subs.get_mut(&conn) {
            if !s.behind {
                s.behind = true;
                s.known = base;
            }
        }
    }

    /// `conn`'s outbox drained: if it was behind, its catch-up.
    pub fn drained(
        &mut self,
        id: &DocId,
        limits: &Limits,
        conn: ConnId,
        out: &mut Vec<ServerAction>,
    ) {
        let Some(s) = self.subs.get_mut(&conn) else {
            return;
        };
        if !s.behind {
            return;
        }
        s.behind = false;
        let known = std::mem::take(&mut s.known);
        let heads = self.heads();
        for u in self.catch_up(id, limits, &known) {
            out.push(ServerAction::Send {
                conn,
                frame: self.update_frame(u),
                lane: Lane::of(id),
            });
        }
        self.set_known(conn, heads);
    }
}
