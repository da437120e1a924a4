//! Where seats live in the documents, read and written by the server and
//! the devices alike.
//!
//! * `attendee/<event>/<user>`: `requests` (a map created by a genesis
//!   change, [`requests_genesis`]) of request id → a [`RequestRecord`].
//! * `seats/<event>/<user>` (server only): `seats` of session → a
//!   [`SeatRecord`], and `decided` of request id → a [`DecidedRecord`].
//! * `seats/<event>` (server only): `counts` of session → [`Counts`].
//!
//! Records are written whole, as one bytes value each (postcard): nothing
//! in them is merged field by field (a request is written once by one
//! device; the rest only by the server), and one value costs an Automerge
//! transaction a fifth of what a map of seven fields does (measured: 103 µs
//! for an outcome as a map, the server's main cost in a rush).
//! * `agenda/<event>`: each session's `capacity`; the event's
//!   `seat_overlap` (`"allowed"` lets a user hold overlapping seats) and
//!   `seat_offer_hold_s` (seconds a freed seat is offered; 0 confirms the
//!   first person waiting at once).

use std::collections::BTreeMap;
use std::time::Duration;

use automerge::transaction::{CommitOptions, Transactable as _};
use automerge::{ActorId, AutomergeError, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use automerge::{Automerge, ChangeHash};

use serde::{Deserialize, Serialize};

use super::{Outcome, RequestKind, SeatPolicy, SeatRequest, SeatState, SessionRules};
use crate::ids::{DocId, RequestId, SessionId, UserId};
use crate::time::Millis;

/// The attendee document's map of requests.
pub const REQUESTS: &str = "requests";
/// The seats document's map of session → standing.
pub const SEATS: &str = "seats";
/// The seats document's map of request id → decision.
pub const DECIDED: &str = "decided";
/// The counts document's map of session → counts.
pub const COUNTS: &str = "counts";
/// A session's capacity in the agenda (0 or absent: no reservations).
pub const CAPACITY: &str = "capacity";
/// The agenda event's overlap setting (`"allowed"` or absent).
pub const OVERLAP: &str = "seat_overlap";
/// The agenda event's offer hold in seconds (0 or absent: confirm at once).
pub const OFFER_HOLD: &str = "seat_offer_hold_s";

fn map_of(doc: &Automerge, parent: &ObjId, key: &str) -> Option<ObjId> {
    match doc.get(parent, key) {
        Ok(Some((Value::Object(_), id))) => Some(id),
        _ => None,
    }
}

fn str_of(doc: &Automerge, obj: &ObjId, key: &str) -> Option<String> {
    match doc.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    }
}

fn int_of(doc: &Automerge, obj: &ObjId, key: &str) -> Option<i64> {
    match doc.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
            ScalarValue::Int(i) => Some(*i),
            ScalarValue::Uint(u) => i64::try_from(*u).ok(),
            ScalarValue::Timestamp(t) => Some(*t),
            _ => None,
        },
        _ => None,
    }
}

fn bytes_of(doc: &Automerge, obj: &ObjId, key: &str) -> Option<Vec<u8>> {
    match doc.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
            ScalarValue::Bytes(b) => Some(b.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn record<T: for<'de> Deserialize<'de>>(doc: &Automerge, obj: &ObjId, key: &str) -> Option<T> {
    postcard::from_bytes(&bytes_of(doc, obj, key)?).ok()
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings and integers always serialize.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// A request, as the device writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The session.
    pub session: String,
    /// `reserve`, `cancel` or `accept`.
    pub kind: String,
    /// The device's clock, Unix ms (shown, never used to order).
    pub at: i64,
}

/// Where a user stands in one session, as the server writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatRecord {
    /// A [`SeatState`] name.
    pub state: String,
    /// Waitlist place from 1, 0 if none.
    pub position: u32,
    /// Why, or "".
    pub reason: String,
    /// The request holding the seat or place (or refused).
    pub request: String,
    /// Arrival order.
    pub seq: u64,
    /// When decided, Unix ms.
    pub updated: u64,
    /// Until when an offer is held, Unix ms; 0 if none.
    pub offer_until: u64,
    /// A confirmed seat's signed pass, or "".
    pub pass: String,
}

/// A decided request, as the server writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecidedRecord {
    /// The session it was for ("" when unreadable).
    pub session: String,
    /// A [`SeatState`] name.
    pub state: String,
    /// Why, or "".
    pub reason: String,
}

fn millis(ms: i64) -> Millis {
    Millis(u64::try_from(ms).unwrap_or(0))
}

fn ms_of(m: Millis) -> i64 {
    i64::try_from(m.0).unwrap_or(i64::MAX)
}

/// The deterministic change that creates the attendee document's map of
/// requests (`doc_id` is the attendee document's id): every device makes
/// the byte-identical change, so requests written offline on two devices
/// land in one map instead of two conflicting ones.
pub fn requests_genesis(doc_id: &str) -> Result<automerge::Change, AutomergeError> {
    genesis("lanyard-requests", doc_id, &[REQUESTS])
}

/// A change creating the maps `maps` under the root, made by an actor
/// derived from `what` and `doc_id` at time 0: byte-identical wherever it
/// is made.
fn genesis(what: &str, doc_id: &str, maps: &[&str]) -> Result<automerge::Change, AutomergeError> {
    let actor = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{what}\u{0}{doc_id}").as_bytes(),
    );
    let mut d = Automerge::new().with_actor(ActorId::from(&actor.as_ref()[..16]));
    let mut tx = d.transaction();
    for m in maps {
        tx.put_object(ROOT, *m, ObjType::Map)?;
    }
    tx.commit_with(CommitOptions::default().with_time(0));
    d.get_last_local_change().ok_or(AutomergeError::Fail)
}

/// Writes a request with the id `id` into the attendee document `doc_id`
/// (creating its map of requests first if needed), as one change.
pub fn write_request(
    doc: &mut Automerge,
    doc_id: &str,
    id: &RequestId,
    session: &SessionId,
    kind: RequestKind,
    at_ms: i64,
) -> Result<(), AutomergeError> {
    let genesis = requests_genesis(doc_id)?;
    if doc.get_change_by_hash(&genesis.hash()).is_none() {
        doc.apply_changes([genesis])?;
    }
    let requests = map_of(doc, &ROOT, REQUESTS).ok_or(AutomergeError::Fail)?;
    let record = RequestRecord {
        session: session.to_string(),
        kind: kind.as_str().to_owned(),
        at: at_ms,
    };
    let mut tx = doc.transaction();
    tx.put(&requests, id.as_str(), ScalarValue::Bytes(encode(&record)))?;
    tx.commit_with(CommitOptions::default().with_time(at_ms));
    Ok(())
}

/// A request as read: readable, or its id and why it is not.
pub type ReadRequest = Result<SeatRequest, (RequestId, String)>;

/// Every request in an attendee document, in the order the device made
/// them (its clock, then id: only one user's own requests are ordered by
/// it). A request that cannot be read comes back as its id and why.
pub fn read_requests(doc: &Automerge) -> Vec<ReadRequest> {
    let Some(requests) = map_of(doc, &ROOT, REQUESTS) else {
        return Vec::new();
    };
    let mut out: Vec<(i64, ReadRequest)> = Vec::new();
    for key in doc.keys(&requests) {
        // A key that is no request id cannot be answered: it is skipped.
        let Ok(id) = RequestId::new(key.as_str()) else {
            continue;
        };
        let Some(r) = record::<RequestRecord>(doc, &requests, &key) else {
            out.push((0, Err((id, "not a request record".into()))));
            continue;
        };
        let at = r.at;
        let req = match (SessionId::new(r.session), RequestKind::parse(&r.kind)) {
            (Ok(session), Some(kind)) => Ok(SeatRequest {
                id,
                session,
                kind,
                at_ms: at,
            }),
            (Err(e), _) => Err((id, e.to_string())),
            (_, None) => Err((id, format!("unknown kind {:?}", r.kind))),
        };
        out.push((at, req));
    }
    out.sort_by_key(|(at, r)| {
        let id = match r {
            Ok(r) => r.id.clone(),
            Err((id, _)) => id.clone(),
        };
        (*at, id)
    });
    out.into_iter().map(|(_, r)| r).collect()
}

/// The organizers' seat settings and every session's rules, from the agenda.
pub fn read_rules(agenda: &Automerge) -> (SeatPolicy, BTreeMap<SessionId, SessionRules>) {
    let mut policy = SeatPolicy::default();
    if let Some(ev) = map_of(agenda, &ROOT, "event") {
        policy.overlap_allowed = str_of(agenda, &ev, OVERLAP).as_deref() == Some("allowed");
        let hold = int_of(agenda, &ev, OFFER_HOLD).unwrap_or(0);
        if hold > 0 {
            policy.offer_hold = Some(Duration::from_secs(hold.unsigned_abs()));
        }
    }
    let mut rules = BTreeMap::new();
    if let Some(sessions) = map_of(agenda, &ROOT, "sessions") {
        for key in agenda.keys(&sessions) {
            let (Ok(id), Some(s)) = (
                SessionId::new(key.as_str()),
                map_of(agenda, &sessions, &key),
            ) else {
                continue;
            };
            let secs = |k: &str| millis(int_of(agenda, &s, k).unwrap_or(0).saturating_mul(1000));
            let capacity = int_of(agenda, &s, CAPACITY).unwrap_or(0);
            rules.insert(
                id,
                SessionRules {
                    capacity: u32::try_from(capacity.max(0)).unwrap_or(u32::MAX),
                    start: secs("start"),
                    end: secs("end"),
                    cancelled: str_of(agenda, &s, "status").as_deref() == Some("cancelled"),
                },
            );
        }
    }
    (policy, rules)
}

/// A decided request, as its user's seats document records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The session it was for (as written, possibly unreadable).
    pub session: String,
    /// The state it got.
    pub state: SeatState,
    /// Why, when refused.
    pub reason: Option<String>,
}

/// The standing of `user` in every session their seats document records.
pub fn read_outcomes(doc: &Automerge, user: &UserId) -> Vec<Outcome> {
    let Some(seats) = map_of(doc, &ROOT, SEATS) else {
        return Vec::new();
    };
    doc.keys(&seats)
        .filter_map(|key| {
            let session = SessionId::new(key.as_str()).ok()?;
            let r = record::<SeatRecord>(doc, &seats, &key)?;
            Some(Outcome {
                user: user.clone(),
                session,
                state: SeatState::parse(&r.state)?,
                position: (r.position > 0).then_some(r.position),
                reason: (!r.reason.is_empty()).then_some(r.reason),
                request: RequestId::new(r.request).ok()?,
                decides: None,
                seq: r.seq,
                updated: Millis(r.updated),
                offer_until: (r.offer_until > 0).then_some(Millis(r.offer_until)),
                pass: (!r.pass.is_empty()).then_some(r.pass),
            })
        })
        .collect()
}

/// Every decided request in a seats document.
pub fn read_decided(doc: &Automerge) -> BTreeMap<String, Decided> {
    let Some(decided) = map_of(doc, &ROOT, DECIDED) else {
        return BTreeMap::new();
    };
    doc.keys(&decided)
        .filter_map(|key| {
            let r = record::<DecidedRecord>(doc, &decided, &key)?;
            let d = Decided {
                session: r.session,
                state: SeatState::parse(&r.state)?,
                reason: (!r.reason.is_empty()).then_some(r.reason),
            };
            Some((key, d))
        })
        .collect()
}

/// The actor the server writes a document with.
pub fn server_actor(doc: &DocId) -> ActorId {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("lanyard-server\u{0}{doc}").as_bytes(),
    );
    ActorId::from(&d.as_ref()[..16])
}

/// The map `key` under the root, created if absent.
fn root_map(
    tx: &mut automerge::transaction::Transaction<'_>,
    key: &str,
) -> Result<ObjId, AutomergeError> {
    match tx.get(ROOT, key)? {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        _ => tx.put_object(ROOT, key, ObjType::Map),
    }
}

/// Writes `outcomes` (all of one user) into their seats document as one
/// change, made by the server's actor. Returns the new change's hash.
pub fn write_outcomes(
    doc: &mut Automerge,
    id: &DocId,
    outcomes: &[&Outcome],
    now: Millis,
) -> Result<Option<ChangeHash>, AutomergeError> {
    if outcomes.is_empty() {
        return Ok(None);
    }
    doc.set_actor(server_actor(id));
    let mut tx = doc.transaction();
    let seats = root_map(&mut tx, SEATS)?;
    let decided = root_map(&mut tx, DECIDED)?;
    for o in outcomes {
        let seat = SeatRecord {
            state: o.state.as_str().to_owned(),
            position: o.position.unwrap_or(0),
            reason: o.reason.clone().unwrap_or_default(),
            request: o.request.to_string(),
            seq: o.seq,
            updated: o.updated.0,
            offer_until: o.offer_until.map_or(0, |t| t.0),
            pass: o.pass.clone().unwrap_or_default(),
        };
        tx.put(
            &seats,
            o.session.as_str(),
            ScalarValue::Bytes(encode(&seat)),
        )?;
        if let Some(r) = &o.decides {
            let d = DecidedRecord {
                session: o.session.to_string(),
                state: o.state.as_str().to_owned(),
                reason: o.reason.clone().unwrap_or_default(),
            };
            tx.put(&decided, r.as_str(), ScalarValue::Bytes(encode(&d)))?;
        }
    }
    let (hash, _) = tx.commit_with(CommitOptions::default().with_time(ms_of(now)));
    Ok(hash)
}

/// Records requests that could not be read as refused, in their user's
/// seats document.
pub fn write_malformed(
    doc: &mut Automerge,
    id: &DocId,
    refused: &[(RequestId, String)],
    now: Millis,
) -> Result<Option<ChangeHash>, AutomergeError> {
    if refused.is_empty() {
        return Ok(None);
    }
    doc.set_actor(server_actor(id));
    let mut tx = doc.transaction();
    let decided = root_map(&mut tx, DECIDED)?;
    for (r, why) in refused {
        let d = DecidedRecord {
            session: String::new(),
            state: SeatState::Refused.as_str().to_owned(),
            reason: super::SeatRefusal::Malformed(why.clone()).to_string(),
        };
        tx.put(&decided, r.as_str(), ScalarValue::Bytes(encode(&d)))?;
    }
    let (hash, _) = tx.commit_with(CommitOptions::default().with_time(ms_of(now)));
    Ok(hash)
}

/// How full one session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Seats confirmed.
    pub confirmed: u32,
    /// Seats offered and not yet accepted.
    pub offered: u32,
    /// People waiting.
    pub waitlist: u32,
    /// People checked in at the doors (each pass once, and walk-ins).
    pub checked_in: u32,
}

/// What the server writes into the event's counts document.
#[derive(Debug, Default)]
pub struct PublicUpdate<'a> {
    /// Counts of sessions (only those that differ are written).
    pub counts: &'a [(SessionId, Counts)],
    /// Requests whose seats were given back (their passes revoked).
    pub revoked: &'a [RequestId],
    /// The server's public key for passes (written when absent).
    pub pass_key: Option<&'a [u8]>,
}

/// Writes counts, revocations and the pass key into the event's counts
/// document as one change; only what differs is written.
pub fn write_counts(
    doc: &mut Automerge,
    id: &DocId,
    update: &PublicUpdate<'_>,
    now: Millis,
) -> Result<Option<ChangeHash>, AutomergeError> {
    let current = read_counts(doc);
    let changed: Vec<&(SessionId, Counts)> = update
        .counts
        .iter()
        .filter(|(s, c)| current.get(s.as_str()) != Some(c))
        .collect();
    let key = update
        .pass_key
        .filter(|k| read_pass_key(doc).as_deref() != Some(*k));
    let revoked: Vec<&RequestId> = update
        .revoked
        .iter()
        .filter(|r| !is_revoked(doc, r.as_str()))
        .collect();
    if changed.is_empty() && key.is_none() && revoked.is_empty() {
        return Ok(None);
    }
    doc.set_actor(server_actor(id));
    let mut tx = doc.transaction();
    if let Some(k) = key {
        tx.put(ROOT, PASS_KEY, ScalarValue::Bytes(k.to_vec()))?;
    }
    if !revoked.is_empty() {
        let map = root_map(&mut tx, REVOKED)?;
        for r in revoked {
            tx.put(&map, r.as_str(), true)?;
        }
    }
    let all = root_map(&mut tx, COUNTS)?;
    for (session, c) in changed {
        tx.put(&all, session.as_str(), ScalarValue::Bytes(encode(c)))?;
    }
    let (hash, _) = tx.commit_with(CommitOptions::default().with_time(ms_of(now)));
    Ok(hash)
}

/// Every session's counts.
pub fn read_counts(doc: &Automerge) -> BTreeMap<String, Counts> {
    let Some(all) = map_of(doc, &ROOT, COUNTS) else {
        return BTreeMap::new();
    };
    doc.keys(&all)
        .filter_map(|key| {
            let c = record::<Counts>(doc, &all, &key)?;
            Some((key, c))
        })
        .collect()
}

/// The check-ins document's map of `<request>/<door device>` → a
/// [`CheckinRecord`]: flat keys, so two doors admitting the same pass
/// offline write two entries of one map instead of two conflicting maps.
pub const CHECKINS: &str = "checkins";
/// The check-ins document's map of walk-in id → a [`WalkInRecord`].
pub const WALK_INS: &str = "walk_ins";
/// The counts document's key holding the server's public key (hex), which
/// door devices check passes with.
pub const PASS_KEY: &str = "pass_key";
/// The counts document's map of request ids whose seats were given back
/// (their passes are revoked).
pub const REVOKED: &str = "revoked";

/// One pass admitted at one door.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckinRecord {
    /// The session.
    pub session: String,
    /// Whose pass.
    pub user: String,
    /// The door device.
    pub door: String,
    /// When, Unix ms (the door's clock).
    pub at: i64,
}

/// Someone let in without a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkInRecord {
    /// The session.
    pub session: String,
    /// The door device.
    pub door: String,
    /// When, Unix ms (the door's clock).
    pub at: i64,
}

/// The deterministic change that creates the check-ins document's maps
/// (`doc_id` is its id): every door makes the byte-identical change.
pub fn checkins_genesis(doc_id: &str) -> Result<automerge::Change, AutomergeError> {
    genesis("lanyard-checkins", doc_id, &[CHECKINS, WALK_INS])
}

fn checkins_map(doc: &mut Automerge, doc_id: &str, key: &str) -> Result<ObjId, AutomergeError> {
    let genesis = checkins_genesis(doc_id)?;
    if doc.get_change_by_hash(&genesis.hash()).is_none() {
        doc.apply_changes([genesis])?;
    }
    map_of(doc, &ROOT, key).ok_or(AutomergeError::Fail)
}

/// Records that `request`'s pass was admitted at `door`.
pub fn write_checkin(
    doc: &mut Automerge,
    doc_id: &str,
    request: &RequestId,
    record: &CheckinRecord,
) -> Result<(), AutomergeError> {
    let map = checkins_map(doc, doc_id, CHECKINS)?;
    let key = format!("{request}/{}", record.door);
    let mut tx = doc.transaction();
    tx.put(&map, key.as_str(), ScalarValue::Bytes(encode(record)))?;
    tx.commit_with(CommitOptions::default().with_time(record.at));
    Ok(())
}

/// Records a walk-in under the random id `id`.
pub fn write_walk_in(
    doc: &mut Automerge,
    doc_id: &str,
    id: &str,
    record: &WalkInRecord,
) -> Result<(), AutomergeError> {
    let map = checkins_map(doc, doc_id, WALK_INS)?;
    let mut tx = doc.transaction();
    tx.put(&map, id, ScalarValue::Bytes(encode(record)))?;
    tx.commit_with(CommitOptions::default().with_time(record.at));
    Ok(())
}

/// Every check-in: the request, and one record per door that admitted it.
pub fn read_checkins(doc: &Automerge) -> BTreeMap<String, Vec<CheckinRecord>> {
    let mut out: BTreeMap<String, Vec<CheckinRecord>> = BTreeMap::new();
    let Some(map) = map_of(doc, &ROOT, CHECKINS) else {
        return out;
    };
    for key in doc.keys(&map) {
        let Some((request, _door)) = key.split_once('/') else {
            continue;
        };
        if let Some(r) = record::<CheckinRecord>(doc, &map, &key) {
            out.entry(request.to_owned()).or_default().push(r);
        }
    }
    out
}

/// Every walk-in.
pub fn read_walk_ins(doc: &Automerge) -> Vec<WalkInRecord> {
    let Some(map) = map_of(doc, &ROOT, WALK_INS) else {
        return Vec::new();
    };
    doc.keys(&map)
        .filter_map(|k| record::<WalkInRecord>(doc, &map, &k))
        .collect()
}

/// People checked in per session: each pass once, however many doors
/// admitted it, plus walk-ins.
pub fn checked_in(doc: &Automerge) -> BTreeMap<String, u32> {
    let mut out: BTreeMap<String, u32> = BTreeMap::new();
    for records in read_checkins(doc).into_values() {
        if let Some(r) = records.first() {
            *out.entry(r.session.clone()).or_default() += 1;
        }
    }
    for w in read_walk_ins(doc) {
        *out.entry(w.session).or_default() += 1;
    }
    out
}

/// The server's public key for passes, as the counts document holds it.
pub fn read_pass_key(doc: &Automerge) -> Option<Vec<u8>> {
    bytes_of(doc, &ROOT, PASS_KEY)
}

/// Whether the seat of `request` was given back (its pass revoked).
pub fn is_revoked(doc: &Automerge, request: &str) -> bool {
    map_of(doc, &ROOT, REVOKED).is_some_and(|m| matches!(doc.get(&m, request), Ok(Some(_))))
}
