//! The server's side of seats: one [`EventSeats`] per event holds the
//! [`Arbiter`] and the documents it writes (each user's outcomes, the
//! public counts), and turns decisions into changes of those documents:
//! persisted, then fanned out like any other change.
//!
//! Locks are taken in one order everywhere, so no two paths can wait for
//! each other: a pushed document (agenda or attendee), then the event's
//! seats, then the counts document, then one user's seats document at a
//! time. A `Hello` locks its documents in [`TokenClaims::readable_docs`]
//! order and never the event's seats.
//!
//! [`TokenClaims::readable_docs`]: crate::token::TokenClaims::readable_docs

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use automerge::{Automerge, ReadDoc as _};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use super::fanout::{DocState, NewChanges};
use super::{lock_doc, DocCell, ServerAction, ServerStats, Sink};
use crate::ids::{DocId, EventId, RequestId, SessionId, UserId};
use crate::seats::doc::{self as seatdoc, Counts};
use crate::seats::pass::{sign_pass, PassClaims};
use crate::seats::{Arbiter, Outcome, SeatPolicy, SeatState, SessionRules};
use crate::time::Millis;
use crate::wire::Limits;

/// Public counts change with every request; they are folded into one change
/// of `seats/<event>` at most this often.
pub const COUNTS_EVERY: Duration = Duration::from_secs(1);

/// Count updates the server sends per second at most, over all devices: an
/// event with more devices gets its counts less often than every second
/// (every 4 s at 10,000 devices). A rush then spends the server's time on
/// deciding seats rather than on telling every device how full each room
/// is (measured at 10,000 devices: count updates were four fifths of the
/// rush's datagrams).
pub const COUNT_SENDS_PER_SEC: usize = 2_500;

/// How long counts are folded for, with `devices` subscribed to them.
pub fn counts_interval(devices: usize) -> Duration {
    let secs = devices.div_ceil(COUNT_SENDS_PER_SEC).max(1);
    COUNTS_EVERY * u32::try_from(secs).unwrap_or(u32::MAX)
}

/// One event's seats, behind its own lock.
pub(crate) type SeatsCell = Arc<Mutex<EventSeats>>;

pub(crate) fn lock_seats(cell: &SeatsCell) -> MutexGuard<'_, EventSeats> {
    cell.lock().unwrap_or_else(|e| e.into_inner())
}

/// The arbiter of one event and the documents it writes.
#[derive(Debug)]
pub(crate) struct EventSeats {
    event: EventId,
    arbiter: Arbiter,
    policy: SeatPolicy,
    rules: BTreeMap<SessionId, SessionRules>,
    /// `seats/<event>/<user>` of every user with one.
    docs: HashMap<UserId, DocCell>,
    counts: DocCell,
    /// When the counts are next written (set by the first change after the
    /// last write).
    counts_due: Option<Millis>,
    /// The key passes are signed with.
    signer: Option<Arc<Ed25519KeyPair>>,
    /// Requests whose seats were given back since the last counts write.
    revoked: Vec<RequestId>,
    /// People checked in per session (from the doors' document).
    checked_in: BTreeMap<String, u32>,
}

/// Actions of seat decisions, and which documents they wrote.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    pub actions: Vec<ServerAction>,
    pub touched: Vec<DocId>,
}

impl EventSeats {
    pub fn new(event: EventId, counts: DocCell, signer: Option<Arc<Ed25519KeyPair>>) -> Self {
        EventSeats {
            event,
            arbiter: Arbiter::default(),
            policy: SeatPolicy::default(),
            rules: BTreeMap::new(),
            docs: HashMap::new(),
            counts,
            // The pass key goes out with the first counts write, which
            // follows the first decision (before any pass exists).
            counts_due: None,
            signer,
            revoked: Vec::new(),
            checked_in: BTreeMap::new(),
        }
    }

    /// Takes the doors' check-ins: how many people are in each session.
    pub fn set_checked_in(&mut self, now: Millis, counts: BTreeMap<String, u32>) {
        for (session, n) in &counts {
            if self.checked_in.get(session) != Some(n) {
                if let Ok(id) = SessionId::new(session.as_str()) {
                    self.arbiter.mark_dirty(id);
                }
            }
        }
        self.checked_in = counts;
        self.counts_soon(now);
    }

    /// Schedules the next counts write, if none is: folded for a while.
    fn counts_soon(&mut self, now: Millis) {
        if self.counts_due.is_none() {
            let devices = lock_doc(&self.counts).subscriber_count();
            self.counts_due = Some(now + counts_interval(devices));
        }
    }

    /// The pass of a confirmed seat of `user` in `session`.
    fn pass(&self, user: &UserId, session: &SessionId, request: &RequestId) -> Option<String> {
        let signer = self.signer.as_ref()?;
        let end = self.rules.get(session).map_or(0, |r| r.end.as_secs());
        let claims = PassClaims {
            event: self.event.clone(),
            session: session.clone(),
            user: user.clone(),
            request: request.clone(),
            // A session not in the agenda has no end to expire with.
            valid_until: if end == 0 { u64::MAX } else { end },
        };
        Some(sign_pass(&claims, signer))
    }

    /// Takes `user`'s seats document as loaded.
    pub fn register(&mut self, user: &UserId, cell: DocCell) {
        self.docs.insert(user.clone(), cell);
    }

    /// The seats document of `user`, created empty if new.
    pub fn doc_cell(&mut self, user: &UserId) -> DocCell {
        self.docs.entry(user.clone()).or_default().clone()
    }

    pub fn counts_cell(&self) -> DocCell {
        self.counts.clone()
    }

    /// Rebuilds the arbiter from the agenda's rules and what every user's
    /// seats document records (the server starting, or a failed write
    /// rolled back).
    pub fn rebuild(&mut self) {
        let mut arbiter = Arbiter::new(self.policy);
        arbiter.set_rules(Millis(0), self.policy, &self.rules);
        for (user, cell) in &self.docs {
            let state = lock_doc(cell);
            let Some(am) = state.am.as_ref() else {
                continue;
            };
            for o in seatdoc::read_outcomes(am, user) {
                arbiter.restore(user, &o.session.clone(), &o);
            }
            for id in seatdoc::read_decided(am).into_keys() {
                if let Ok(id) = RequestId::new(id) {
                    arbiter.restore_decided(id);
                }
            }
        }
        self.arbiter = arbiter;
    }

    /// Takes the agenda's rules as they are, deciding nothing: for the seats
    /// [`EventSeats::rebuild`] restores (what they caused before a crash is
    /// in the documents already).
    pub fn take_rules(&mut self, (policy, rules): (SeatPolicy, BTreeMap<SessionId, SessionRules>)) {
        self.policy = policy;
        self.rules = rules;
    }

    /// Takes the organizers' rules from the agenda; returns the outcomes
    /// they cause (promotions, releases).
    pub fn set_rules(
        &mut self,
        now: Millis,
        (policy, rules): (SeatPolicy, BTreeMap<SessionId, SessionRules>),
    ) -> Vec<Outcome> {
        if policy == self.policy && rules == self.rules {
            return Vec::new();
        }
        self.policy = policy;
        self.rules = rules;
        self.arbiter.set_rules(now, self.policy, &self.rules)
    }

    /// Decides the requests of `user` (read from their attendee document
    /// with [`seatdoc::read_requests`]) that are not decided yet, in order.
    pub fn decide_new(&mut self, now: Millis, user: &UserId, requests: Requests) -> Decisions {
        let mut d = Decisions::default();
        for r in requests {
            match r {
                Ok(req) if !self.arbiter.is_decided(&req.id) => {
                    d.outcomes.extend(self.arbiter.decide(now, user, &req));
                }
                Err((id, why)) if !self.arbiter.is_decided(&id) => {
                    self.arbiter.restore_decided(id.clone());
                    d.malformed.push((id, why));
                }
                _ => {}
            }
        }
        d
    }

    /// Offers that expired move on.
    pub fn handle_timeout(&mut self, now: Millis) -> Vec<Outcome> {
        self.arbiter.handle_timeout(now)
    }

    /// When the next offer expires or the counts are due.
    pub fn poll_timeout(&self) -> Option<Millis> {
        [self.arbiter.poll_timeout(), self.counts_due]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fills seats a crash left free, corrects waitlist places.
    pub fn settle(&mut self, now: Millis) -> Vec<Outcome> {
        self.arbiter.settle(now)
    }

    /// Writes `outcomes` into their users' seats documents (one change per
    /// user), and the malformed requests of `user` as refused: Persist,
    /// then fan-out to that user's devices.
    pub fn record(
        &mut self,
        now: Millis,
        limits: &Limits,
        outcomes: Vec<Outcome>,
        malformed: Option<(&UserId, Vec<(RequestId, String)>)>,
        stats: &mut ServerStats,
    ) -> Recorded {
        let mut by_user: BTreeMap<UserId, Vec<Outcome>> = BTreeMap::new();
        for o in outcomes {
            by_user.entry(o.user.clone()).or_default().push(o);
        }
        let mut rec = Recorded::default();
        if let Some((user, bad)) = malformed {
            if !bad.is_empty() {
                let id = DocId::Seats(self.event.clone(), user.clone());
                let cell = self.doc_cell(user);
                let mut state = lock_doc(&cell);
                write(&mut state, &id, limits, &mut rec, stats, |am| {
                    seatdoc::write_malformed(am, &id, &bad, now)
                });
            }
        }
        for (user, list) in by_user {
            let id = DocId::Seats(self.event.clone(), user.clone());
            let cell = self.doc_cell(&user);
            let mut state = lock_doc(&cell);
            let current = state
                .am
                .as_ref()
                .map(|am| seatdoc::read_outcomes(am, &user))
                .unwrap_or_default();
            // A seat given back revokes its pass.
            for o in &list {
                let held = current
                    .iter()
                    .find(|c| c.session == o.session && c.state == SeatState::Confirmed);
                if let Some(c) = held {
                    if o.state != SeatState::Confirmed || o.request != c.request {
                        self.revoked.push(c.request.clone());
                    }
                }
            }
            let mut list = list;
            for o in &mut list {
                if o.state == SeatState::Confirmed {
                    o.pass = self.pass(&user, &o.session, &o.request);
                }
            }
            // Only what changed is written (waitlist places are told to
            // everyone behind a move, most of them unchanged).
            let fresh: Vec<&Outcome> = list
                .iter()
                .filter(|o| o.decides.is_some() || !current.iter().any(|c| same_standing(c, o)))
                .collect();
            write(&mut state, &id, limits, &mut rec, stats, |am| {
                seatdoc::write_outcomes(am, &id, &fresh, now)
            });
        }
        self.counts_soon(now);
        rec
    }

    /// Writes the counts of every session that changed, if they are due.
    pub fn flush_counts(
        &mut self,
        now: Millis,
        limits: &Limits,
        stats: &mut ServerStats,
    ) -> Recorded {
        let mut rec = Recorded::default();
        if self.counts_due.is_none_or(|t| t > now) {
            return rec;
        }
        self.counts_due = None;
        let dirty = self.arbiter.take_dirty();
        let counts: Vec<(SessionId, Counts)> = dirty
            .into_iter()
            .map(|s| {
                let (confirmed, offered, waitlist) = self.arbiter.counts(&s).unwrap_or_default();
                let c = Counts {
                    confirmed,
                    offered,
                    waitlist,
                    checked_in: self.checked_in.get(s.as_str()).copied().unwrap_or(0),
                };
                (s, c)
            })
            .collect();
        let id = DocId::SeatCounts(self.event.clone());
        let cell = self.counts.clone();
        let mut state = lock_doc(&cell);
        let key = self
            .signer
            .as_ref()
            .map(|k| k.public_key().as_ref().to_vec());
        let revoked = std::mem::take(&mut self.revoked);
        let update = seatdoc::PublicUpdate {
            counts: &counts,
            revoked: &revoked,
            pass_key: key.as_deref(),
        };
        write(&mut state, &id, limits, &mut rec, stats, |am| {
            seatdoc::write_counts(am, &id, &update, now)
        });
        rec
    }

    /// Hands `rec` to `sink`; if a write failed, puts every document it
    /// touched back as stored and rebuilds the arbiter from them.
    pub fn commit(&mut self, mut rec: Recorded, sink: &mut dyn Sink) -> bool {
        if rec.actions.is_empty() {
            return true;
        }
        let touched = std::mem::take(&mut rec.touched);
        if sink.take(std::mem::take(&mut rec.actions)) {
            return true;
        }
        self.roll_back(touched, sink);
        false
    }

    /// Puts every document in `touched` back as stored, and rebuilds the
    /// arbiter from them (a write failed).
    pub fn roll_back(&mut self, touched: Vec<DocId>, sink: &mut dyn Sink) {
        for id in &touched {
            let cell = match id {
                DocId::Seats(_, u) => self.doc_cell(u),
                _ => self.counts.clone(),
            };
            let mut state = lock_doc(&cell);
            match sink.stored(id).map(|b| (Automerge::load(&b), b.len())) {
                Some((Ok(am), len)) => state.reload(am, len),
                _ => state.am = None,
            }
        }
        self.rebuild();
        self.counts_due = Some(Millis(0));
    }
}

/// Whether two records give the same standing (the time aside).
fn same_standing(a: &Outcome, b: &Outcome) -> bool {
    a.session == b.session
        && a.state == b.state
        && a.position == b.position
        && a.request == b.request
        && a.offer_until == b.offer_until
}

/// Requests as read from an attendee document.
pub(crate) type Requests = Vec<seatdoc::ReadRequest>;

/// Requests decided from one push.
#[derive(Debug, Default)]
pub(crate) struct Decisions {
    pub outcomes: Vec<Outcome>,
    pub malformed: Vec<(RequestId, String)>,
}

/// Makes one change with `f` on the server's document `id`: Persist, then
/// fan-out to its subscribers.
fn write(
    state: &mut DocState,
    id: &DocId,
    limits: &Limits,
    rec: &mut Recorded,
    stats: &mut ServerStats,
    f: impl FnOnce(&mut Automerge) -> Result<Option<automerge::ChangeHash>, automerge::AutomergeError>,
) {
    let am = state.am.get_or_insert_with(Automerge::new);
    let heads_before = am.get_heads();
    let hash = match f(am) {
        Ok(Some(h)) => h,
        // Writing plain maps and scalars into a document only the server
        // writes does not fail; if it did, the transaction is dropped and
        // the request stays undecided on disk, decided at the next start.
        Ok(None) | Err(_) => return,
    };
    let Some(raw) = am.get_change_by_hash(&hash).map(|c| c.raw_bytes().to_vec()) else {
        return;
    };
    state.bytes += raw.len();
    rec.actions.push(ServerAction::Persist {
        doc: id.clone(),
        changes: vec![raw.clone()],
    });
    rec.touched.push(id.clone());
    let new = NewChanges {
        origin: None,
        heads_before,
        raw: vec![raw],
    };
    state.fan_out(id, limits, new, &mut rec.actions, stats);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_sent_every_second_up_to_a_budget_of_sends() {
        assert_eq!(counts_interval(0), COUNTS_EVERY);
        assert_eq!(counts_interval(1), COUNTS_EVERY);
        assert_eq!(counts_interval(COUNT_SENDS_PER_SEC), COUNTS_EVERY);
        assert_eq!(counts_interval(COUNT_SENDS_PER_SEC + 1), COUNTS_EVERY * 2);
        assert_eq!(counts_interval(10_000), COUNTS_EVERY * 4);
    }
}
