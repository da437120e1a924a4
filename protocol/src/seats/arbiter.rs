//! The [`Arbiter`]: who gets a seat, decided once, in the order requests
//! reach it. Pure logic: time is passed in, nothing is stored here (the
//! server writes each outcome into the user's seats document, and rebuilds
//! an arbiter from those documents with [`Arbiter::restore`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::{
    Outcome, RequestKind, SeatPolicy, SeatRefusal, SeatRequest, SeatState, SessionRules, Standing,
};
use crate::ids::{RequestId, SessionId, UserId};
use crate::time::Millis;

/// A seat, waitlist place or offer held by a user: the request that got it,
/// and its place in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holding {
    request: RequestId,
    seq: u64,
}

/// One session's seats.
#[derive(Debug, Default)]
struct SessionSeats {
    rules: SessionRules,
    confirmed: BTreeMap<UserId, Holding>,
    /// Users waiting, by arrival.
    waitlist: BTreeMap<u64, (UserId, RequestId)>,
    /// Seats offered and held until the given instant.
    offers: BTreeMap<UserId, (Holding, Millis)>,
}

impl SessionSeats {
    /// Seats taken: confirmed or offered.
    fn held(&self) -> usize {
        self.confirmed.len() + self.offers.len()
    }

    fn waiting_place(&self, user: &UserId) -> Option<(u64, u32)> {
        self.waitlist
            .iter()
            .enumerate()
            .find(|(_, (_, (u, _)))| u == user)
            .map(|(i, (seq, _))| (*seq, u32::try_from(i + 1).unwrap_or(u32::MAX)))
    }

    fn leave_waitlist(&mut self, user: &UserId) -> Option<(u64, RequestId)> {
        let seq = self.waiting_place(user)?.0;
        self.waitlist.remove(&seq).map(|(_, r)| (seq, r))
    }
}

/// The seats of one event: capacity, confirmed seats, waitlists and offers
/// per session, and the requests already decided.
#[derive(Debug, Default)]
pub struct Arbiter {
    policy: SeatPolicy,
    sessions: BTreeMap<SessionId, SessionSeats>,
    decided: HashSet<RequestId>,
    next_seq: u64,
    /// Sessions whose counts changed since [`Arbiter::take_dirty`].
    dirty: BTreeSet<SessionId>,
}

impl Arbiter {
    /// An arbiter with no sessions.
    pub fn new(policy: SeatPolicy) -> Arbiter {
        Arbiter {
            policy,
            ..Arbiter::default()
        }
    }

    /// The organizer's settings.
    pub fn policy(&self) -> &SeatPolicy {
        &self.policy
    }

    /// Whether `request` was decided already.
    pub fn is_decided(&self, request: &RequestId) -> bool {
        self.decided.contains(request)
    }

    /// Confirmed seats, offered seats and waitlist length of `session`.
    pub fn counts(&self, session: &SessionId) -> Option<(u32, u32, u32)> {
        let s = self.sessions.get(session)?;
        let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
        Some((n(s.confirmed.len()), n(s.offers.len()), n(s.waitlist.len())))
    }

    /// The sessions with rules or holders.
    pub fn session_ids(&self) -> impl Iterator<Item = &SessionId> {
        self.sessions.keys()
    }

    /// Marks `session`'s counts as changed (people checked in).
    pub fn mark_dirty(&mut self, session: SessionId) {
        self.dirty.insert(session);
    }

    /// Sessions whose counts changed since the last call.
    pub fn take_dirty(&mut self) -> BTreeSet<SessionId> {
        std::mem::take(&mut self.dirty)
    }

    /// What `user` holds in `session`, if anything.
    pub fn standing(&self, user: &UserId, session: &SessionId) -> Option<Standing> {
        let s = self.sessions.get(session)?;
        if let Some(h) = s.confirmed.get(user) {
            return Some(Standing::Confirmed(h.request.clone()));
        }
        if let Some((h, until)) = s.offers.get(user) {
            return Some(Standing::Offered(h.request.clone(), *until));
        }
        s.waiting_place(user).map(|(seq, pos)| {
            let request = s.waitlist[&seq].1.clone();
            Standing::Waitlisted(request, pos)
        })
    }

    /// Decides one request (idempotent by its id: a request decided before
    /// yields nothing). Returns every outcome it causes, the requester's
    /// first; a cancellation can promote others.
    pub fn decide(&mut self, now: Millis, user: &UserId, req: &SeatRequest) -> Vec<Outcome> {
        if !self.decided.insert(req.id.clone()) {
            return Vec::new();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut out = Vec::new();
        match req.kind {
            RequestKind::Reserve => self.reserve(now, user, req, seq, &mut out),
            RequestKind::Cancel => self.cancel(now, user, req, &mut out),
            RequestKind::Accept => self.accept(now, user, req, &mut out),
        }
        out
    }

    fn refuse(user: &UserId, req: &SeatRequest, now: Millis, why: SeatRefusal) -> Outcome {
        Outcome {
            user: user.clone(),
            session: req.session.clone(),
            state: SeatState::Refused,
            position: None,
            reason: Some(why.to_string()),
            request: req.id.clone(),
            decides: Some(req.id.clone()),
            seq: 0,
            updated: now,
            offer_until: None,
            pass: None,
        }
    }

    /// The session `user` holds a seat in (confirmed or offered) that
    /// overlaps `session`, if any.
    fn overlapping(&self, user: &UserId, session: &SessionId) -> Option<SessionId> {
        let rules = self.sessions.get(session)?.rules;
        self.sessions
            .iter()
            .filter(|(id, _)| *id != session)
            .find(|(_, s)| {
                (s.confirmed.contains_key(user) || s.offers.contains_key(user))
                    && s.rules.start < rules.end
                    && rules.start < s.rules.end
            })
            .map(|(id, _)| id.clone())
    }

    fn reserve(
        &mut self,
        now: Millis,
        user: &UserId,
        req: &SeatRequest,
        seq: u64,
        out: &mut Vec<Outcome>,
    ) {
        // Asking again for what one holds changes nothing.
        if let Some(standing) = self.standing(user, &req.session) {
            let mut o = self.outcome_of(now, user, &req.session, standing);
            o.decides = Some(req.id.clone());
            out.push(o);
            return;
        }
        let refusal = match self.sessions.get(&req.session) {
            None => Some(SeatRefusal::NoCapacity),
            Some(s) if s.rules.cancelled => Some(SeatRefusal::SessionCancelled),
            Some(s) if s.rules.capacity == 0 => Some(SeatRefusal::NoCapacity),
            Some(s) if now >= s.rules.end => Some(SeatRefusal::SessionOver),
            Some(_) => None,
        };
        if let Some(why) = refusal {
            out.push(Self::refuse(user, req, now, why));
            return;
        }
        if !self.policy.overlap_allowed {
            if let Some(other) = self.overlapping(user, &req.session) {
                out.push(Self::refuse(user, req, now, SeatRefusal::Overlaps(other)));
                return;
            }
        }
        let Some(s) = self.sessions.get_mut(&req.session) else {
            return;
        };
        let holding = Holding {
            request: req.id.clone(),
            seq,
        };
        let free = s.held() < s.rules.capacity as usize && s.waitlist.is_empty();
        let standing = if free {
            s.confirmed.insert(user.clone(), holding);
            Standing::Confirmed(req.id.clone())
        } else {
            s.waitlist.insert(seq, (user.clone(), req.id.clone()));
            let pos = u32::try_from(s.waitlist.len()).unwrap_or(u32::MAX);
            Standing::Waitlisted(req.id.clone(), pos)
        };
        self.dirty.insert(req.session.clone());
        let mut o = self.outcome_of(now, user, &req.session, standing);
        o.decides = Some(req.id.clone());
        o.seq = seq;
        out.push(o);
    }

    fn cancel(&mut self, now: Millis, user: &UserId, req: &SeatRequest, out: &mut Vec<Outcome>) {
        let mut released = false;
        let mut left_waitlist = false;
        if let Some(s) = self.sessions.get_mut(&req.session) {
            released = s.confirmed.remove(user).is_some() || s.offers.remove(user).is_some();
            left_waitlist = !released && s.leave_waitlist(user).is_some();
        }
        out.push(Outcome {
            user: user.clone(),
            session: req.session.clone(),
            state: SeatState::Cancelled,
            position: None,
            reason: None,
            request: req.id.clone(),
            decides: Some(req.id.clone()),
            seq: 0,
            updated: now,
            offer_until: None,
            pass: None,
        });
        if released || left_waitlist {
            self.dirty.insert(req.session.clone());
        }
        if released {
            self.promote(now, &req.session, out);
        } else if left_waitlist {
            self.positions(now, &req.session, out);
        }
    }

    fn accept(&mut self, now: Millis, user: &UserId, req: &SeatRequest, out: &mut Vec<Outcome>) {
        let offer = self
            .sessions
            .get_mut(&req.session)
            .and_then(|s| match s.offers.get(user) {
                Some((_, until)) if *until > now => s.offers.remove(user).map(|(h, _)| (s, h)),
                _ => None,
            });
        match offer {
            Some((s, holding)) => {
                let standing = Standing::Confirmed(holding.request.clone());
                s.confirmed.insert(user.clone(), holding);
                self.dirty.insert(req.session.clone());
                let mut o = self.outcome_of(now, user, &req.session, standing);
                o.decides = Some(req.id.clone());
                out.push(o);
            }
            None => match self.standing(user, &req.session) {
                // Accepting with no offer open (it expired, or the seat is
                // already confirmed) answers with what the user holds.
                Some(standing) => {
                    let mut o = self.outcome_of(now, user, &req.session, standing);
                    o.decides = Some(req.id.clone());
                    out.push(o);
                }
                None => out.push(Self::refuse(user, req, now, SeatRefusal::NoOffer)),
            },
        }
    }

    /// The outcome that describes `standing`.
    fn outcome_of(
        &self,
        now: Millis,
        user: &UserId,
        session: &SessionId,
        standing: Standing,
    ) -> Outcome {
        let (state, request, position, offer_until) = match standing {
            Standing::Confirmed(r) => (SeatState::Confirmed, r, None, None),
            Standing::Offered(r, until) => (SeatState::Offered, r, None, Some(until)),
            Standing::Waitlisted(r, pos) => (SeatState::Waitlisted, r, Some(pos), None),
        };
        let seq = self
            .sessions
            .get(session)
            .and_then(|s| {
                s.confirmed
                    .get(user)
                    .or_else(|| s.offers.get(user).map(|(h, _)| h))
                    .map(|h| h.seq)
                    .or_else(|| s.waiting_place(user).map(|(seq, _)| seq))
            })
            .unwrap_or(0);
        Outcome {
            user: user.clone(),
            session: session.clone(),
            state,
            position,
            reason: None,
            request,
            decides: None,
            seq,
            updated: now,
            offer_until,
            pass: None,
        }
    }

    /// Fills free seats from the waitlist, first come first served, until
    /// the session starts; then tells everyone still waiting their place.
    fn promote(&mut self, now: Millis, session: &SessionId, out: &mut Vec<Outcome>) {
        let hold = self.policy.offer_hold;
        let mut moved = false;
        loop {
            let Some(s) = self.sessions.get(session) else {
                return;
            };
            let open = !s.rules.cancelled && now < s.rules.start;
            if !open || s.held() >= s.rules.capacity as usize {
                break;
            }
            let Some((&seq, (user, request))) = s.waitlist.iter().next() else {
                break;
            };
            let (user, request) = (user.clone(), request.clone());
            let overlap = if self.policy.overlap_allowed {
                None
            } else {
                self.overlapping(&user, session)
            };
            let Some(s) = self.sessions.get_mut(session) else {
                return;
            };
            s.waitlist.remove(&seq);
            moved = true;
            self.dirty.insert(session.clone());
            if let Some(other) = overlap {
                let req = SeatRequest {
                    id: request,
                    session: session.clone(),
                    kind: RequestKind::Reserve,
                    at_ms: 0,
                };
                out.push(Self::refuse(&user, &req, now, SeatRefusal::Overlaps(other)));
                continue;
            }
            let holding = Holding {
                request: request.clone(),
                seq,
            };
            let standing = match hold {
                Some(hold) => {
                    let until = now + hold;
                    s.offers.insert(user.clone(), (holding, until));
                    Standing::Offered(request, until)
                }
                None => {
                    s.confirmed.insert(user.clone(), holding);
                    Standing::Confirmed(request)
                }
            };
            let mut o = self.outcome_of(now, &user, session, standing);
            o.reason = Some("a seat opened up".into());
            out.push(o);
        }
        if moved {
            self.positions(now, session, out);
        }
    }

    /// Everyone waiting for `session`, told their (new) place.
    fn positions(&self, now: Millis, session: &SessionId, out: &mut Vec<Outcome>) {
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        for (i, (seq, (user, request))) in s.waitlist.iter().enumerate() {
            out.push(Outcome {
                user: user.clone(),
                session: session.clone(),
                state: SeatState::Waitlisted,
                position: Some(u32::try_from(i + 1).unwrap_or(u32::MAX)),
                reason: None,
                request: request.clone(),
                decides: None,
                seq: *seq,
                updated: now,
                offer_until: None,
                pass: None,
            });
        }
    }

    /// Takes the organizer's rules for every session (from the agenda) and
    /// their settings: a raised capacity promotes from the waitlist; a
    /// lowered one bumps nobody; a cancelled (or removed) session releases
    /// every seat and place, and tells their holders.
    pub fn set_rules(
        &mut self,
        now: Millis,
        policy: SeatPolicy,
        rules: &BTreeMap<SessionId, SessionRules>,
    ) -> Vec<Outcome> {
        self.policy = policy;
        let mut out = Vec::new();
        let known: Vec<SessionId> = self.sessions.keys().cloned().collect();
        for id in known {
            if !rules.contains_key(&id) {
                let gone = SessionRules {
                    cancelled: true,
                    ..self.sessions[&id].rules
                };
                self.apply_rules(now, &id, gone, &mut out);
            }
        }
        for (id, r) in rules {
            self.apply_rules(now, id, *r, &mut out);
        }
        out
    }

    fn apply_rules(
        &mut self,
        now: Millis,
        id: &SessionId,
        rules: SessionRules,
        out: &mut Vec<Outcome>,
    ) {
        let s = self.sessions.entry(id.clone()).or_default();
        let before = s.rules;
        s.rules = rules;
        if rules.cancelled && !before.cancelled {
            let mut users: Vec<(UserId, RequestId)> = Vec::new();
            users.extend(
                std::mem::take(&mut s.confirmed)
                    .into_iter()
                    .map(|(u, h)| (u, h.request)),
            );
            users.extend(
                std::mem::take(&mut s.offers)
                    .into_iter()
                    .map(|(u, (h, _))| (u, h.request)),
            );
            users.extend(std::mem::take(&mut s.waitlist).into_values());
            if !users.is_empty() {
                self.dirty.insert(id.clone());
            }
            for (user, request) in users {
                out.push(Outcome {
                    user,
                    session: id.clone(),
                    state: SeatState::Cancelled,
                    position: None,
                    reason: Some(SeatRefusal::SessionCancelled.to_string()),
                    request,
                    decides: None,
                    seq: 0,
                    updated: now,
                    offer_until: None,
                    pass: None,
                });
            }
        } else if rules.capacity > before.capacity || (before.cancelled && !rules.cancelled) {
            self.promote(now, id, out);
        }
    }

    /// Offers not accepted in time move on to the next person waiting.
    pub fn handle_timeout(&mut self, now: Millis) -> Vec<Outcome> {
        let mut out = Vec::new();
        let expired: Vec<(SessionId, UserId, RequestId)> = self
            .sessions
            .iter()
            .flat_map(|(id, s)| {
                s.offers
                    .iter()
                    .filter(|(_, (_, until))| *until <= now)
                    .map(move |(u, (h, _))| (id.clone(), u.clone(), h.request.clone()))
            })
            .collect();
        let mut sessions = BTreeSet::new();
        for (id, user, request) in expired {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.offers.remove(&user);
            }
            self.dirty.insert(id.clone());
            out.push(Outcome {
                user,
                session: id.clone(),
                state: SeatState::Cancelled,
                position: None,
                reason: Some("the offer expired".into()),
                request,
                decides: None,
                seq: 0,
                updated: now,
                offer_until: None,
                pass: None,
            });
            sessions.insert(id);
        }
        for id in sessions {
            self.promote(now, &id, &mut out);
        }
        out
    }

    /// When [`Arbiter::handle_timeout`] next has work (an offer expiring).
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.sessions
            .values()
            .flat_map(|s| s.offers.values().map(|(_, until)| *until))
            .min()
    }

    /// Puts back what a user's seats document records (the server starting
    /// up): a seat, place or offer, and the requests decided.
    pub fn restore(&mut self, user: &UserId, session: &SessionId, record: &Outcome) {
        self.next_seq = self.next_seq.max(record.seq + 1);
        let s = self.sessions.entry(session.clone()).or_default();
        let holding = Holding {
            request: record.request.clone(),
            seq: record.seq,
        };
        match record.state {
            SeatState::Confirmed => {
                s.confirmed.insert(user.clone(), holding);
            }
            SeatState::Offered => {
                let until = record.offer_until.unwrap_or(Millis(0));
                s.offers.insert(user.clone(), (holding, until));
            }
            SeatState::Waitlisted => {
                s.waitlist
                    .insert(record.seq, (user.clone(), record.request.clone()));
            }
            SeatState::Refused | SeatState::Cancelled => {}
        }
        self.dirty.insert(session.clone());
    }

    /// Records `request` as decided (the server starting up).
    pub fn restore_decided(&mut self, request: RequestId) {
        self.decided.insert(request);
    }

    /// After a restore: fills seats freed by a decision whose promotions a
    /// crash cut short, and corrects waitlist places.
    pub fn settle(&mut self, now: Millis) -> Vec<Outcome> {
        let mut out = Vec::new();
        let ids: Vec<SessionId> = self.sessions.keys().cloned().collect();
        for id in ids {
            self.promote(now, &id, &mut out);
            self.positions(now, &id, &mut out);
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn user(n: usize) -> UserId {
        UserId::new(format!("u{n}")).unwrap()
    }

    fn session(n: usize) -> SessionId {
        SessionId::new(format!("s{n}")).unwrap()
    }

    fn request(n: usize, s: usize, kind: RequestKind) -> SeatRequest {
        SeatRequest {
            id: RequestId::new(format!("r{n}")).unwrap(),
            session: session(s),
            kind,
            at_ms: 0,
        }
    }

    const START: Millis = Millis(10_000_000);

    /// An arbiter with `n` sessions of `capacity` seats, each an hour long,
    /// one after the other.
    fn arbiter(policy: SeatPolicy, n: usize, capacity: u32) -> Arbiter {
        let mut a = Arbiter::new(policy);
        let rules = (0..n)
            .map(|i| {
                let start = START + Duration::from_secs(3600 * i as u64);
                let end = start + Duration::from_secs(3600);
                (
                    session(i),
                    SessionRules {
                        capacity,
                        start,
                        end,
                        cancelled: false,
                    },
                )
            })
            .collect();
        assert!(a.set_rules(Millis(0), policy, &rules).is_empty());
        a
    }

    fn decide(a: &mut Arbiter, u: usize, r: usize, s: usize, kind: RequestKind) -> Vec<Outcome> {
        a.decide(Millis(1000), &user(u), &request(r, s, kind))
    }

    #[test]
    fn the_first_come_get_seats_and_the_rest_wait_in_order() {
        let mut a = arbiter(SeatPolicy::default(), 1, 2);
        let states: Vec<(SeatState, Option<u32>)> = (0..4)
            .map(|i| {
                let o = decide(&mut a, i, i, 0, RequestKind::Reserve);
                assert_eq!(o.len(), 1);
                (o[0].state, o[0].position)
            })
            .collect();
        assert_eq!(
            states,
            [
                (SeatState::Confirmed, None),
                (SeatState::Confirmed, None),
                (SeatState::Waitlisted, Some(1)),
                (SeatState::Waitlisted, Some(2)),
            ]
        );
        assert_eq!(a.counts(&session(0)), Some((2, 0, 2)));
    }

    #[test]
    fn a_cancelled_seat_goes_to_the_first_waiting_and_places_move_up() {
        let mut a = arbiter(SeatPolicy::default(), 1, 1);
        for i in 0..3 {
            decide(&mut a, i, i, 0, RequestKind::Reserve);
        }
        let out = decide(&mut a, 0, 10, 0, RequestKind::Cancel);
        let by_user: Vec<(UserId, SeatState, Option<u32>)> = out
            .iter()
            .map(|o| (o.user.clone(), o.state, o.position))
            .collect();
        assert_eq!(
            by_user,
            [
                (user(0), SeatState::Cancelled, None),
                (user(1), SeatState::Confirmed, None),
                (user(2), SeatState::Waitlisted, Some(1)),
            ]
        );
        assert_eq!(out[1].reason.as_deref(), Some("a seat opened up"));
    }

    #[test]
    fn deciding_is_idempotent_by_request_id() {
        let mut a = arbiter(SeatPolicy::default(), 1, 1);
        assert_eq!(decide(&mut a, 0, 0, 0, RequestKind::Reserve).len(), 1);
        assert!(decide(&mut a, 0, 0, 0, RequestKind::Reserve).is_empty());
        // Asking again with a new request repeats the standing.
        let again = decide(&mut a, 0, 1, 0, RequestKind::Reserve);
        assert_eq!(again[0].state, SeatState::Confirmed);
        assert_eq!(a.counts(&session(0)), Some((1, 0, 0)));
    }

    #[test]
    fn refusals_name_their_reason() {
        let mut rules = BTreeMap::new();
        rules.insert(
            session(0),
            SessionRules {
                capacity: 0,
                start: START,
                end: START + Duration::from_secs(60),
                cancelled: false,
            },
        );
        rules.insert(
            session(1),
            SessionRules {
                capacity: 5,
                start: Millis(100),
                end: Millis(500),
                cancelled: false,
            },
        );
        let mut a = Arbiter::new(SeatPolicy::default());
        a.set_rules(Millis(0), SeatPolicy::default(), &rules);
        let reason = |o: Vec<Outcome>| (o[0].state, o[0].reason.clone().unwrap_or_default());
        let no_cap = reason(decide(&mut a, 0, 0, 0, RequestKind::Reserve));
        assert_eq!(no_cap.0, SeatState::Refused);
        assert!(no_cap.1.contains("no capacity"), "{}", no_cap.1);
        let over = reason(decide(&mut a, 0, 1, 1, RequestKind::Reserve));
        assert!(over.1.contains("over"), "{}", over.1);
        let unknown = reason(decide(&mut a, 0, 2, 9, RequestKind::Reserve));
        assert_eq!(unknown.0, SeatState::Refused);
        let no_offer = reason(decide(&mut a, 0, 3, 0, RequestKind::Accept));
        assert!(no_offer.1.contains("no seat is offered"), "{}", no_offer.1);
    }

    #[test]
    fn overlapping_seats_are_refused_unless_the_organizers_allow_them() {
        let mut a = arbiter(SeatPolicy::default(), 1, 5);
        let mut rules = BTreeMap::new();
        for i in 0..2 {
            rules.insert(
                session(i),
                SessionRules {
                    capacity: 5,
                    start: START,
                    end: START + Duration::from_secs(3600),
                    cancelled: false,
                },
            );
        }
        a.set_rules(Millis(0), SeatPolicy::default(), &rules);
        decide(&mut a, 0, 0, 0, RequestKind::Reserve);
        let o = decide(&mut a, 0, 1, 1, RequestKind::Reserve);
        assert_eq!(o[0].state, SeatState::Refused);
        assert!(o[0]
            .reason
            .as_ref()
            .unwrap()
            .contains("overlaps session s0"));
        let allowed = SeatPolicy {
            overlap_allowed: true,
            ..SeatPolicy::default()
        };
        a.set_rules(Millis(0), allowed, &rules);
        let o = decide(&mut a, 0, 2, 1, RequestKind::Reserve);
        assert_eq!(o[0].state, SeatState::Confirmed);
    }

    #[test]
    fn offers_are_held_then_move_on_when_not_accepted() {
        let hold = Duration::from_secs(600);
        let policy = SeatPolicy {
            overlap_allowed: false,
            offer_hold: Some(hold),
        };
        let mut a = arbiter(policy, 1, 1);
        for i in 0..3 {
            decide(&mut a, i, i, 0, RequestKind::Reserve);
        }
        let out = decide(&mut a, 0, 10, 0, RequestKind::Cancel);
        assert_eq!(out[1].state, SeatState::Offered);
        assert_eq!(out[1].offer_until, Some(Millis(1000) + hold));
        assert_eq!(a.poll_timeout(), Some(Millis(1000) + hold));
        // Not accepted in time: offered to the next.
        let out = a.handle_timeout(Millis(1000) + hold);
        let states: Vec<(UserId, SeatState)> =
            out.iter().map(|o| (o.user.clone(), o.state)).collect();
        assert_eq!(
            states,
            [
                (user(1), SeatState::Cancelled),
                (user(2), SeatState::Offered)
            ]
        );
        // Accepted in time: confirmed.
        let out = a.decide(
            Millis(2000) + hold,
            &user(2),
            &request(11, 0, RequestKind::Accept),
        );
        assert_eq!(out[0].state, SeatState::Confirmed);
        assert_eq!(a.counts(&session(0)), Some((1, 0, 0)));
    }

    #[test]
    fn raising_capacity_promotes_lowering_it_bumps_nobody_and_cancelling_releases_all() {
        let mut a = arbiter(SeatPolicy::default(), 1, 2);
        for i in 0..4 {
            decide(&mut a, i, i, 0, RequestKind::Reserve);
        }
        let mut rules = BTreeMap::new();
        let mut r = SessionRules {
            capacity: 3,
            start: START,
            end: START + Duration::from_secs(3600),
            cancelled: false,
        };
        rules.insert(session(0), r);
        let out = a.set_rules(Millis(1), SeatPolicy::default(), &rules);
        assert_eq!(out[0].user, user(2));
        assert_eq!(out[0].state, SeatState::Confirmed);
        r.capacity = 1;
        rules.insert(session(0), r);
        assert!(a
            .set_rules(Millis(2), SeatPolicy::default(), &rules)
            .is_empty());
        assert_eq!(a.counts(&session(0)), Some((3, 0, 1)));
        r.cancelled = true;
        rules.insert(session(0), r);
        let out = a.set_rules(Millis(3), SeatPolicy::default(), &rules);
        assert_eq!(out.len(), 4);
        assert!(out
            .iter()
            .all(|o| o.state == SeatState::Cancelled && o.reason.is_some()));
        assert_eq!(a.counts(&session(0)), Some((0, 0, 0)));
    }

    #[test]
    fn promotion_stops_at_the_start_of_the_session() {
        let mut a = arbiter(SeatPolicy::default(), 1, 1);
        decide(&mut a, 0, 0, 0, RequestKind::Reserve);
        decide(&mut a, 1, 1, 0, RequestKind::Reserve);
        let out = a.decide(START, &user(0), &request(2, 0, RequestKind::Cancel));
        assert_eq!(out.len(), 1);
        assert_eq!(a.counts(&session(0)), Some((0, 0, 1)));
    }

    /// Rebuilding from the records the server wrote gives the same seats.
    #[test]
    fn a_restored_arbiter_holds_the_same_seats() {
        let mut a = arbiter(SeatPolicy::default(), 2, 1);
        let mut records: BTreeMap<(UserId, SessionId), Outcome> = BTreeMap::new();
        for i in 0..4 {
            for o in decide(&mut a, i, i, i % 2, RequestKind::Reserve) {
                records.insert((o.user.clone(), o.session.clone()), o);
            }
        }
        let mut b = arbiter(SeatPolicy::default(), 2, 1);
        for ((u, s), o) in &records {
            b.restore(u, s, o);
        }
        for i in 0..2 {
            assert_eq!(a.counts(&session(i)), b.counts(&session(i)));
        }
        assert!(b
            .settle(Millis(1000))
            .iter()
            .all(|o| o.state == SeatState::Waitlisted));
        // New arrivals queue behind the restored ones.
        let o = decide(&mut b, 9, 9, 0, RequestKind::Reserve);
        assert_eq!(o[0].position, Some(2));
    }

    proptest! {
        /// Whatever the requests, no session ever holds more seats than its
        /// capacity, every request is decided exactly once, and the waitlist
        /// is in arrival order.
        #[test]
        fn never_overbooked_and_every_request_decided_once(
            ops in proptest::collection::vec((0usize..12, 0usize..3, 0u8..3, 0u64..4000), 1..200),
            hold in proptest::option::of(1u64..3),
            capacity in 1u32..4,
        ) {
            let policy = SeatPolicy {
                overlap_allowed: true,
                offer_hold: hold.map(Duration::from_secs),
            };
            let mut a = arbiter(policy, 3, capacity);
            let mut decided = 0;
            let mut now = Millis(0);
            for (i, (u, s, k, dt)) in ops.iter().enumerate() {
                now = now + Duration::from_millis(*dt);
                let kind = [RequestKind::Reserve, RequestKind::Cancel, RequestKind::Accept][*k as usize];
                let mut out = a.handle_timeout(now);
                out.extend(a.decide(now, &user(*u), &request(i, *s, kind)));
                // The same request again is a no-op.
                prop_assert!(a.decide(now, &user(*u), &request(i, *s, kind)).is_empty());
                decided += out.iter().filter(|o| o.decides.is_some()).count();
                prop_assert_eq!(decided, i + 1);
                for s in 0..3 {
                    let (c, o, _) = a.counts(&session(s)).unwrap();
                    prop_assert!(c + o <= capacity, "session {} holds {}+{} > {}", s, c, o, capacity);
                }
                for o in &out {
                    if o.state == SeatState::Waitlisted {
                        let seqs: Vec<u64> = a.sessions[&o.session].waitlist.keys().copied().collect();
                        prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]));
                    }
                }
            }
        }
    }
}
