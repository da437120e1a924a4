//! Ingest: what a device pushed, checked and applied. Limits first (before
//! anything is decoded), then authorization, decoding with checksums,
//! canonical encoding, and an apply that survives Automerge panicking on
//! hostile input. Returns what was accepted and what was refused, and why;
//! persisting and fanning out are the caller's.

use std::collections::HashSet;

use automerge::{Automerge, Change, ChangeHash, ReadDoc as _};

use crate::ids::DocId;
use crate::token::TokenClaims;
use crate::wire::{Hash, Limits, RefusalReason};

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

/// What the checks before any apply decided about a push.
#[derive(Debug)]
pub(crate) enum Screened {
    /// The whole push is refused: nothing of it is applied.
    Refuse {
        /// Why.
        reason: RefusalReason,
        /// The refused changes (those new to the server, when known).
        changes: Vec<Hash>,
    },
    /// A reader re-sent only changes the server holds: acknowledge.
    AlreadyHeld,
    /// Apply these (decoded, checksums right); `malformed` when some of the
    /// push could not be decoded.
    Apply {
        /// The decoded changes.
        changes: Vec<Change>,
        /// Some bytes of the push were not a change.
        malformed: bool,
    },
}

/// The checks that need no write: the push's size, compressed bombs,
/// decoding, the writer's rights and the document's size.
pub(crate) fn screen(
    claims: &TokenClaims,
    limits: &Limits,
    doc: &DocId,
    held: Option<&Automerge>,
    held_bytes: usize,
    raw: &[Vec<u8>],
) -> Screened {
    let too_large = |changes| Screened::Refuse {
        reason: RefusalReason::TooLarge,
        changes,
    };
    if raw.len() > limits.max_changes_per_push {
        return too_large(Vec::new());
    }
    // Before any decoding: a compressed change may expand far beyond its
    // size on the wire.
    if raw
        .iter()
        .any(|b| decompressed_size(b, limits.max_change).is_some_and(|n| n > limits.max_change))
    {
        return too_large(Vec::new());
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let mut malformed = false;
    for bytes in raw {
        match Change::try_from(bytes.as_slice()) {
            Ok(c) if checksum_matches(bytes, &c) => decoded.push(c),
            _ => malformed = true,
        }
    }
    // Only changes new to the server count, and only they are refused: a
    // device whose base lags (e.g. after reordered updates) re-sends
    // changes it received from here, and must not mark them as its own
    // refused changes.
    let is_new = |c: &Change| held.is_none_or(|am| am.get_change_by_hash(&c.hash()).is_none());
    if !claims.may_write(doc) {
        let hashes: Vec<Hash> = decoded
            .iter()
            .filter(|c| !claims.may_read(doc) || is_new(c))
            .map(|c| c.hash().0)
            .collect();
        if hashes.is_empty() && !malformed {
            return Screened::AlreadyHeld;
        }
        return Screened::Refuse {
            reason: RefusalReason::Forbidden,
            changes: hashes,
        };
    }
    let incoming: usize = decoded
        .iter()
        .filter(|c| is_new(c))
        .map(|c| c.raw_bytes().len())
        .sum();
    if held_bytes + incoming > limits.max_doc_for(doc) {
        return too_large(
            decoded
                .iter()
                .filter(|c| is_new(c))
                .map(|c| c.hash().0)
                .collect(),
        );
    }
    Screened::Apply {
        changes: decoded,
        malformed,
    }
}

/// What applying a screened push did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Applied, in order.
    pub accepted: Vec<Change>,
    /// Over the change size limit.
    pub oversized: Vec<Hash>,
    /// Not canonical, or Automerge refused or panicked on them.
    pub bad: Vec<Hash>,
    /// Their dependencies are neither held nor in the push.
    pub missing: Vec<Hash>,
}

/// Applies `changes` one by one to `am`. Changes already held are skipped.
/// Automerge 0.12 trusts the changes it applies: some that decode, carry a
/// valid checksum and are canonical still make it panic half way (found by
/// fuzzing). Each apply is guarded, and a panic puts the document back as it
/// was before this push, plus what was accepted. The copy is taken before
/// the first change this push applies (a push of held changes costs none).
pub(crate) fn apply(am: &mut Automerge, changes: Vec<Change>, max_change: usize) -> Applied {
    let mut out = Applied::default();
    // Decoding can panic inside Automerge on hostile input (found by
    // fuzzing), so the canonical check is guarded too.
    let changes: Vec<Change> = changes
        .into_iter()
        .filter(|c| {
            let ok = guarded(|| is_canonical(c)).unwrap_or(false);
            if !ok {
                out.bad.push(c.hash().0);
            }
            ok
        })
        .collect();
    let mut backup: Option<Automerge> = None;
    let mut accepted_set: HashSet<ChangeHash> = HashSet::new();
    for c in changes {
        let h = c.hash();
        if am.get_change_by_hash(&h).is_some() || accepted_set.contains(&h) {
            continue;
        }
        if c.raw_bytes().len() > max_change {
            out.oversized.push(h.0);
            continue;
        }
        let deps_ok = c
            .deps()
            .iter()
            .all(|d| accepted_set.contains(d) || am.get_change_by_hash(d).is_some());
        if !deps_ok {
            out.missing.push(h.0);
            continue;
        }
        let before = backup.get_or_insert_with(|| am.clone());
        // One by one, so a change Automerge rejects leaves the rest intact.
        let applied = guarded(|| {
            am.apply_changes([c.clone()]).is_ok() && am.get_change_by_hash(&h).is_some()
        });
        match applied {
            Some(true) => {
                accepted_set.insert(h);
                out.accepted.push(c);
            }
            Some(false) => out.bad.push(h.0),
            None => {
                out.bad.push(h.0);
                *am = before.clone();
                // These applied cleanly a moment ago.
                if am.apply_changes(out.accepted.iter().cloned()).is_err() {
                    *am = before.clone();
                    out.bad.extend(out.accepted.drain(..).map(|c| c.hash().0));
                    accepted_set.clear();
                }
            }
        }
    }
    out
}
