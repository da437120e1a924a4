//! Seat reservations on the device.
//!
//! A reservation, a cancellation or the acceptance of an offered seat is a
//! *request* written into the attendee's own document (a random request id
//! → session, kind and the device's time): durable when the call returns,
//! usable with no network, and carried to the server by the next sync like
//! a note. Only the server decides; its outcomes arrive in
//! `seats/<event>/<user>` (see [`lanyard_protocol::seats`]), shared by every
//! device of the user. Until then a request shows as
//! [`ReservationState::Pending`].

use std::collections::BTreeMap;

use automerge::transaction::{CommitOptions, Transactable as _};
use automerge::{Automerge, ROOT};
use lanyard_protocol::seats::doc::{self as seatdoc, Counts};
use lanyard_protocol::seats::{Outcome, RequestKind, SeatState};
use lanyard_protocol::{DocId, RequestId, Role, SessionId, UserId};
use serde::{Deserialize, Serialize};

use crate::client::{now_ms, Client};
use crate::docs::map_of;
use crate::error::ClientError;
use crate::model::SessionStatus;

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReservationState {
    /// Made on this device, not decided by the server yet.
    Pending,
    /// A seat is yours.
    Confirmed,
    /// You are on the waitlist (see the position).
    Waitlisted,
    /// A seat is held for you until a deadline: accept it to keep it.
    Offered,
    /// Not granted (see the reason).
    Refused,
    /// Given back, or lost (session cancelled, offer expired).
    Cancelled,
}

impl ReservationState {
    /// `pending`, `confirmed`, `waitlisted`, `offered`, `refused` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationState::Pending => "pending",
            ReservationState::Confirmed => "confirmed",
            ReservationState::Waitlisted => "waitlisted",
            ReservationState::Offered => "offered",
            ReservationState::Refused => "refused",
            ReservationState::Cancelled => "cancelled",
        }
    }

    fn of(s: SeatState) -> Self {
        match s {
            SeatState::Confirmed => ReservationState::Confirmed,
            SeatState::Waitlisted => ReservationState::Waitlisted,
            SeatState::Offered => ReservationState::Offered,
            SeatState::Refused => ReservationState::Refused,
            SeatState::Cancelled => ReservationState::Cancelled,
        }
    }
}

/// One session's reservation, as this device knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The session's id.
    pub session: String,
    /// Where it stands.
    pub state: ReservationState,
    /// Waitlist place counting from 1 (waitlisted only).
    pub position: Option<u32>,
    /// Why it was refused or lost, or a note from the server.
    pub reason: Option<String>,
    /// When it last changed (the server's decision, or the device's
    /// request while pending), Unix milliseconds.
    pub updated_unix_ms: i64,
    /// Until when an offered seat is held, Unix milliseconds.
    pub offer_until_unix_ms: Option<i64>,
    /// The order in which the server received the request that holds the
    /// seat or place, among all of the event's (0 while pending, refused or
    /// cancelled): the waitlist is served in this order.
    pub arrival: u64,
    /// A confirmed seat's pass, signed by the server: what an app shows as
    /// a QR code at the door.
    pub pass: Option<String>,
}

/// A pass admitted at the door.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckIn {
    /// Whose seat.
    pub user: String,
    /// The session.
    pub session: String,
    /// People checked in to the session as this door knows it (this one
    /// included).
    pub checked_in: u32,
    /// The session's capacity (0 if none).
    pub capacity: u32,
}

/// One session at the doors, as this door device knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCheckins {
    /// The session.
    pub session: String,
    /// Passes checked in (each once, however many doors admitted it).
    pub passes: u32,
    /// People let in without a reservation.
    pub walk_ins: u32,
    /// Passes admitted at more than one door (the same seat used twice).
    pub double_uses: Vec<DoubleUse>,
}

/// A pass admitted at several doors (two doors offline at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoubleUse {
    /// Whose pass.
    pub user: String,
    /// The doors that admitted it.
    pub doors: Vec<String>,
}

/// How full one session is, as last synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SeatCount {
    /// Seats (0: no reservations).
    pub capacity: u32,
    /// Seats confirmed.
    pub confirmed: u32,
    /// Seats offered to people from the waitlist, not accepted yet.
    pub offered: u32,
    /// People waiting.
    pub waitlist: u32,
    /// People checked in at the doors (passes and walk-ins), as the server
    /// last counted them.
    pub checked_in: u32,
}

impl SeatCount {
    /// Whether every seat is taken (confirmed or offered).
    pub fn full(&self) -> bool {
        self.capacity > 0 && self.confirmed + self.offered >= self.capacity
    }
}

/// Writes a request into the attendee document `doc_id` (a random id);
/// its id.
pub fn write_request(
    doc: &mut Automerge,
    doc_id: &str,
    session: &SessionId,
    kind: RequestKind,
    now: i64,
) -> Result<RequestId, ClientError> {
    let bytes: [u8; 16] = rand::random();
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let id = RequestId::new(id)?;
    seatdoc::write_request(doc, doc_id, &id, session, kind, now)?;
    Ok(id)
}

/// Every session's reservation: the server's outcome, or pending while the
/// device's latest request for the session is undecided.
pub(crate) fn reservations(
    attendee: &Automerge,
    seats: &Automerge,
    user: &UserId,
) -> Vec<Reservation> {
    let outcomes: BTreeMap<String, Outcome> = seatdoc::read_outcomes(seats, user)
        .into_iter()
        .map(|o| (o.session.to_string(), o))
        .collect();
    let decided = seatdoc::read_decided(seats);
    let mut latest: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for r in seatdoc::read_requests(attendee).into_iter().flatten() {
        // Requests come in the device's order: the last one per session wins.
        latest.insert(r.session.to_string(), (r.at_ms, r.id.as_str().to_owned()));
    }
    let mut sessions: Vec<String> = outcomes.keys().cloned().collect();
    sessions.extend(latest.keys().cloned());
    sessions.sort();
    sessions.dedup();
    sessions
        .into_iter()
        .filter_map(|session| {
            let pending = latest
                .get(&session)
                .filter(|(_, id)| !decided.contains_key(id));
            if let Some((at, _)) = pending {
                return Some(Reservation {
                    session,
                    state: ReservationState::Pending,
                    position: None,
                    reason: None,
                    updated_unix_ms: *at,
                    offer_until_unix_ms: None,
                    arrival: 0,
                    pass: None,
                });
            }
            outcomes.get(&session).map(Reservation::of)
        })
        .collect()
}

impl Reservation {
    /// The reservation the server's outcome `o` describes.
    fn of(o: &Outcome) -> Reservation {
        Reservation {
            session: o.session.to_string(),
            state: ReservationState::of(o.state),
            position: o.position,
            reason: o.reason.clone(),
            updated_unix_ms: i64::try_from(o.updated.0).unwrap_or(i64::MAX),
            offer_until_unix_ms: o.offer_until.map(|t| i64::try_from(t.0).unwrap_or(0)),
            arrival: o.seq,
            pass: o.pass.clone(),
        }
    }
}

impl Client {
    /// Reserves a seat in a session, offline if need be: the request is on
    /// disk when this returns and shows as pending until the server decides
    /// (confirmed, waitlisted or refused). Returns the request's id.
    pub fn reserve(&self, session: &str) -> Result<String, ClientError> {
        self.seat_request(session, RequestKind::Reserve)
    }

    /// Gives back a seat, an offered seat or a waitlist place.
    pub fn cancel_reservation(&self, session: &str) -> Result<String, ClientError> {
        self.seat_request(session, RequestKind::Cancel)
    }

    /// Accepts a seat offered from the waitlist.
    pub fn accept_offer(&self, session: &str) -> Result<String, ClientError> {
        self.seat_request(session, RequestKind::Accept)
    }

    fn seat_request(&self, session: &str, kind: RequestKind) -> Result<String, ClientError> {
        let id = SessionId::new(session)?;
        let Some(s) = self.session(session)? else {
            return Err(ClientError::Invalid(format!(
                "no session {session} in the agenda (run `lanyard sync` to get the latest)"
            )));
        };
        if kind == RequestKind::Reserve && s.status == SessionStatus::Cancelled {
            return Err(ClientError::Invalid(format!(
                "session {session} is cancelled"
            )));
        }
        let own = self.creds()?.claims.own_doc();
        let mut made = None;
        self.edit(&own, |d, doc_id| {
            made = Some(write_request(d, doc_id, &id, kind, now_ms())?);
            Ok(())
        })?;
        made.map(|r| r.to_string())
            .ok_or_else(|| ClientError::Invalid("the request was not written".into()))
    }

    /// This user's reservations, one per session, by session id.
    pub fn reservations(&self) -> Result<Vec<Reservation>, ClientError> {
        let claims = self.creds()?.claims;
        let own = claims.own_doc();
        let seats = DocId::Seats(claims.event.clone(), claims.user.clone());
        // Both documents read under one lock, neither copied.
        let mut st = self.lock();
        st.load(&own)?;
        st.load(&seats)?;
        let empty = Automerge::new();
        let doc = |id: &DocId| st.replica.get(id).map_or(&empty, |rd| &rd.doc);
        Ok(reservations(doc(&own), doc(&seats), &claims.user))
    }

    /// How full each session with a capacity is, by session id.
    pub fn seat_counts(&self) -> Result<BTreeMap<String, SeatCount>, ClientError> {
        let claims = self.creds()?.claims;
        let counts: BTreeMap<String, Counts> = self.read(
            &DocId::SeatCounts(claims.event.clone()),
            seatdoc::read_counts,
        )?;
        let mut out = BTreeMap::new();
        for s in self.sessions()? {
            let c = counts.get(&s.id).copied().unwrap_or_default();
            if s.capacity == 0 && c == Counts::default() {
                continue;
            }
            out.insert(
                s.id,
                SeatCount {
                    capacity: s.capacity,
                    confirmed: c.confirmed,
                    offered: c.offered,
                    waitlist: c.waitlist,
                    checked_in: c.checked_in,
                },
            );
        }
        Ok(out)
    }

    /// The pass of your confirmed seat in `session`, to show at the door.
    pub fn pass(&self, session: &str) -> Result<String, ClientError> {
        let r = self
            .reservations()?
            .into_iter()
            .find(|r| r.session == session);
        match r {
            Some(Reservation {
                state: ReservationState::Confirmed,
                pass: Some(p),
                ..
            }) => Ok(p),
            Some(r) => Err(ClientError::Invalid(format!(
                "no pass for {session}: your reservation is {}{}",
                r.state.as_str(),
                if r.state == ReservationState::Pending {
                    " (run `lanyard sync`)"
                } else {
                    ""
                }
            ))),
            None => Err(ClientError::Invalid(format!(
                "no pass for {session}: you hold no reservation (lanyard reserve {session})"
            ))),
        }
    }

    /// Checks a pass in at this door (organizers only), with no network:
    /// the signature against the server's key (synced once), the event, the
    /// session's end, revocations and earlier check-ins as this device
    /// knows them. Recorded durably; doors that both admitted a pass offline
    /// are reconciled as one check-in and reported ([`Client::checkins`]).
    pub fn check_in(&self, pass: &str) -> Result<CheckIn, ClientError> {
        let claims = self.creds()?.claims;
        if claims.role != Role::Organizer {
            return Err(ClientError::OrganizersOnly);
        }
        let counts = DocId::SeatCounts(claims.event.clone());
        let (key, revoked_doc) = self.read(&counts, |d| (seatdoc::read_pass_key(d), d.fork()))?;
        let Some(key) = key else {
            return Err(ClientError::Invalid(
                "this door has not got the server's pass key yet: run `lanyard sync` once with a network".into(),
            ));
        };
        let now = u64::try_from(now_ms() / 1000).unwrap_or(0);
        let pc = lanyard_protocol::seats::pass::verify_pass(pass, &key, &claims.event, now)
            .map_err(|e| ClientError::PassRefused(e.to_string()))?;
        if seatdoc::is_revoked(&revoked_doc, pc.request.as_str()) {
            return Err(ClientError::PassRefused(format!(
                "revoked pass: {} gave back the seat in {}",
                pc.user, pc.session
            )));
        }
        let doors = DocId::Checkins(claims.event.clone());
        let earlier = self.read(&doors, |d| {
            seatdoc::read_checkins(d).remove(pc.request.as_str())
        })?;
        if let Some(first) = earlier.and_then(|e| e.into_iter().next()) {
            let tz = self.agenda_time_zone()?.unwrap_or_else(|| "UTC".into());
            let at = crate::time::format_clock(first.at.div_euclid(1000), &tz)
                .unwrap_or_else(|_| first.at.to_string());
            return Err(ClientError::PassRefused(format!(
                "already checked in: {} in {} at {at} (door {})",
                pc.user, pc.session, first.door
            )));
        }
        let record = seatdoc::CheckinRecord {
            session: pc.session.to_string(),
            user: pc.user.to_string(),
            door: claims.device.to_string(),
            at: now_ms(),
        };
        self.edit(&doors, |d, id| {
            seatdoc::write_checkin(d, id, &pc.request, &record)?;
            Ok(())
        })?;
        let checked_in = self.read(&doors, |d| {
            seatdoc::checked_in(d)
                .get(pc.session.as_str())
                .copied()
                .unwrap_or(0)
        })?;
        let capacity = self.session(pc.session.as_str())?.map_or(0, |s| s.capacity);
        Ok(CheckIn {
            user: pc.user.to_string(),
            session: pc.session.to_string(),
            checked_in,
            capacity,
        })
    }

    /// Lets someone in without a reservation (organizers only); they count
    /// toward the session's occupancy. Returns the people checked in now.
    pub fn walk_in(&self, session: &str) -> Result<u32, ClientError> {
        let claims = self.creds()?.claims;
        if claims.role != Role::Organizer {
            return Err(ClientError::OrganizersOnly);
        }
        if self.session(session)?.is_none() {
            return Err(ClientError::NoSuchSession(session.to_owned()));
        }
        let doors = DocId::Checkins(claims.event.clone());
        let bytes: [u8; 8] = rand::random();
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let record = seatdoc::WalkInRecord {
            session: session.to_owned(),
            door: claims.device.to_string(),
            at: now_ms(),
        };
        self.edit(&doors, |d, doc_id| {
            seatdoc::write_walk_in(d, doc_id, &id, &record)?;
            Ok(())
        })?;
        self.read(&doors, |d| {
            seatdoc::checked_in(d).get(session).copied().unwrap_or(0)
        })
    }

    /// Check-ins per session as this door device knows them (its own and
    /// every other door's, as last synced), with passes used at two doors.
    pub fn checkins(&self) -> Result<Vec<SessionCheckins>, ClientError> {
        let claims = self.creds()?.claims;
        if claims.role != Role::Organizer {
            return Err(ClientError::OrganizersOnly);
        }
        let doors = DocId::Checkins(claims.event.clone());
        self.read(&doors, |d| {
            let mut out: BTreeMap<String, SessionCheckins> = BTreeMap::new();
            let entry = |out: &mut BTreeMap<String, SessionCheckins>, s: &str| {
                out.entry(s.to_owned())
                    .or_insert_with(|| SessionCheckins {
                        session: s.to_owned(),
                        passes: 0,
                        walk_ins: 0,
                        double_uses: Vec::new(),
                    })
                    .session
                    .clone()
            };
            for records in seatdoc::read_checkins(d).into_values() {
                let Some(first) = records.first() else {
                    continue;
                };
                let key = entry(&mut out, &first.session);
                if let Some(s) = out.get_mut(&key) {
                    s.passes += 1;
                    if records.len() > 1 {
                        s.double_uses.push(DoubleUse {
                            user: first.user.clone(),
                            doors: records.iter().map(|r| r.door.clone()).collect(),
                        });
                    }
                }
            }
            for w in seatdoc::read_walk_ins(d) {
                let key = entry(&mut out, &w.session);
                if let Some(s) = out.get_mut(&key) {
                    s.walk_ins += 1;
                }
            }
            out.into_values().collect()
        })
    }

    /// Sets how many seats a session has (organizers only); 0 takes no
    /// reservations. Raising it lets the server promote people from the
    /// waitlist; lowering it below the confirmed count bumps nobody.
    pub fn set_capacity(&self, session: &str, capacity: u32) -> Result<(), ClientError> {
        self.set_capacities(&[(session.to_owned(), capacity)])
            .map(|_| ())
    }

    /// Sets many sessions' capacities at once (organizers only), in as few
    /// changes as the server's limits allow; returns how many changed.
    pub fn set_capacities(&self, capacities: &[(String, u32)]) -> Result<usize, ClientError> {
        if self.creds()?.claims.role != Role::Organizer {
            return Err(ClientError::OrganizersOnly);
        }
        for (id, _) in capacities {
            SessionId::new(id.as_str())?;
            if self.session(id)?.is_none() {
                return Err(ClientError::Invalid(format!(
                    "no session {id} in the agenda"
                )));
            }
        }
        let edits: Vec<crate::AgendaEdit> = capacities
            .iter()
            .map(|(id, n)| crate::AgendaEdit::Capacity(id.clone(), *n))
            .collect();
        let mut changed = 0;
        self.edit_agenda(false, |e| {
            changed = 0;
            e.apply(&edits, &mut |_, wrote| changed += usize::from(wrote))
        })?;
        Ok(changed)
    }

    /// Gives every session without a capacity its room's capacity
    /// (organizers only; rooms of unknown capacity are left alone). Returns
    /// how many sessions changed.
    pub fn capacities_from_rooms(&self) -> Result<usize, ClientError> {
        let rooms: BTreeMap<String, u32> = self
            .rooms()?
            .into_iter()
            .map(|r| (r.name, r.capacity))
            .collect();
        let wanted: Vec<(String, u32)> = self
            .sessions()?
            .into_iter()
            .filter(|s| s.capacity == 0)
            .filter_map(|s| {
                let c = *rooms.get(&s.room)?;
                (c > 0).then_some((s.id, c))
            })
            .collect();
        if wanted.is_empty() {
            return Ok(0);
        }
        self.set_capacities(&wanted)
    }

    /// Sets the event's seat settings (organizers only): whether one user
    /// may hold seats in sessions that overlap, and how long a freed seat is
    /// offered to the first person waiting (`None`: confirmed at once).
    pub fn set_seat_policy(
        &self,
        overlap_allowed: Option<bool>,
        offer_hold_secs: Option<u64>,
    ) -> Result<(), ClientError> {
        self.organizer_edit(|d, id| {
            crate::docs::AgendaDoc::ensure(d, id)?;
            let ev = map_of(d, &ROOT, "event")
                .ok_or_else(|| ClientError::Invalid("agenda has no event".into()))?;
            let mut tx = d.transaction();
            if let Some(allowed) = overlap_allowed {
                let v = if allowed { "allowed" } else { "refused" };
                tx.put(&ev, seatdoc::OVERLAP, v)?;
            }
            if let Some(hold) = offer_hold_secs {
                tx.put(
                    &ev,
                    seatdoc::OFFER_HOLD,
                    i64::try_from(hold).unwrap_or(i64::MAX),
                )?;
            }
            tx.commit_with(CommitOptions::default().with_time(now_ms()));
            Ok(())
        })
    }

    /// The event's seat settings: overlapping seats allowed, and the offer
    /// hold in seconds (0: a freed seat is confirmed at once).
    pub fn seat_policy(&self) -> Result<(bool, u64), ClientError> {
        let agenda = self.creds()?.agenda();
        self.read(&agenda, |d| {
            let (policy, _) = seatdoc::read_rules(d);
            (
                policy.overlap_allowed,
                policy.offer_hold.map_or(0, |h| h.as_secs()),
            )
        })
    }
}

/// The alerts a change of the user's seats document raises: one per
/// session whose state changed (a waitlist place moving up alone raises
/// none). `session` finds a session of the agenda, for its title; times
/// are shown in `tz`.
pub(crate) fn seat_alerts(
    before: &[Outcome],
    after: &[Outcome],
    session: impl Fn(&str) -> Option<crate::model::Session>,
    tz: &str,
) -> Vec<crate::alerts::Alert> {
    use crate::alerts::{Alert, AlertKind};
    let mut alerts = Vec::new();
    for o in after {
        let old = before.iter().find(|b| b.session == o.session);
        if old.is_some_and(|b| b.state == o.state && b.request == o.request) {
            continue;
        }
        let s = session(o.session.as_str());
        let title = s
            .as_ref()
            .map_or_else(|| o.session.to_string(), |s| format!("{:?}", s.title));
        let reason = o.reason.clone().unwrap_or_default();
        let was = old.map(|b| b.state);
        let (kind, message) = match o.state {
            SeatState::Confirmed if was == Some(SeatState::Waitlisted) => (
                AlertKind::SeatPromoted,
                format!("A seat opened up: you're in {title}"),
            ),
            SeatState::Confirmed => (
                AlertKind::SeatConfirmed,
                format!("Your seat for {title} is confirmed"),
            ),
            SeatState::Waitlisted => (
                AlertKind::SeatWaitlisted,
                format!(
                    "{title} is full: you're on the waitlist, place {}",
                    o.position.unwrap_or(0)
                ),
            ),
            SeatState::Offered => {
                let until = o
                    .offer_until
                    .map(|t| {
                        let secs = i64::try_from(t.0 / 1000).unwrap_or(0);
                        crate::time::format_rfc3339(secs, tz).unwrap_or_else(|_| secs.to_string())
                    })
                    .unwrap_or_default();
                (
                    AlertKind::SeatOffered,
                    format!(
                        "A seat opened up in {title}: it is yours if you accept it by {until} (lanyard reserve {} --accept)",
                        o.session
                    ),
                )
            }
            SeatState::Cancelled if reason.contains("expired") => (
                AlertKind::SeatOfferExpired,
                format!("The seat offered to you in {title} expired and went to the next person waiting"),
            ),
            SeatState::Cancelled if reason.contains("cancelled") => (
                AlertKind::SeatReleased,
                format!("{title} was cancelled: your seat or waitlist place is released"),
            ),
            // Given back by the user (on this or another device).
            SeatState::Cancelled => continue,
            SeatState::Refused => (
                AlertKind::SeatRefused,
                format!("Your reservation for {title} was refused: {reason}"),
            ),
        };
        let reservation = Reservation::of(o);
        alerts.push(Alert {
            kind,
            session: s,
            previous_room: None,
            previous_start_unix: None,
            announcement: None,
            link: None,
            reservation: Some(reservation),
            bookmarked: false,
            message,
        });
    }
    alerts
}

/// The outcomes recorded in `doc` (the user's seats document) for `user`.
pub(crate) fn outcomes_of(doc: Option<&Automerge>, user: &UserId) -> Vec<Outcome> {
    doc.map(|d| seatdoc::read_outcomes(d, user))
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use lanyard_protocol::cert_pin;
    use lanyard_protocol::testing::{event, TestKey};
    use lanyard_protocol::JoinLink;

    use super::*;
    use crate::model::{NewSession, Room};

    fn client(role: Role, user: &str) -> Client {
        let event = event();
        let link = JoinLink {
            servers: vec!["127.0.0.1:9".into()],
            token: TestKey::new(3).token(&event, user, role, "d", 4_000_000_000),
            event,
            pin: cert_pin(b"c"),
        };
        let c = Client::in_memory().unwrap();
        c.join(&link.to_string()).unwrap();
        c
    }

    fn talk(id: &str, room: &str) -> NewSession {
        NewSession {
            id: id.into(),
            title: id.into(),
            room: room.into(),
            start_unix: 2_000_000_000,
            end_unix: 2_000_003_600,
            ..NewSession::default()
        }
    }

    #[test]
    fn sessions_take_their_rooms_capacity_unless_they_have_one() {
        let org = client(Role::Organizer, "org");
        org.put_room(Room {
            name: "Hall".into(),
            capacity: 300,
        })
        .unwrap();
        org.put_room(Room {
            name: "Unknown".into(),
            capacity: 0,
        })
        .unwrap();
        for (id, room) in [("a", "Hall"), ("b", "Hall"), ("c", "Unknown")] {
            org.add_session(talk(id, room)).unwrap();
        }
        org.set_capacity("b", 12).unwrap();
        assert_eq!(org.capacities_from_rooms().unwrap(), 1);
        let cap = |id: &str| org.session(id).unwrap().unwrap().capacity;
        assert_eq!((cap("a"), cap("b"), cap("c")), (300, 12, 0));
        // Nothing left to give: no change.
        assert_eq!(org.capacities_from_rooms().unwrap(), 0);
        assert!(matches!(
            org.set_capacity("nope", 3),
            Err(ClientError::Invalid(_))
        ));
        let att = client(Role::Attendee, "ann");
        assert!(matches!(
            att.set_capacity("a", 3),
            Err(ClientError::OrganizersOnly)
        ));
    }

    #[test]
    fn a_door_needs_the_servers_key_and_attendees_are_no_door() {
        let org = client(Role::Organizer, "org");
        let err = org.check_in("LYP1.x.y").unwrap_err();
        assert!(err.to_string().contains("pass key"), "{err}");
        let att = client(Role::Attendee, "ann");
        assert!(matches!(
            att.check_in("LYP1.x.y"),
            Err(ClientError::OrganizersOnly)
        ));
        assert!(matches!(att.walk_in("a"), Err(ClientError::OrganizersOnly)));
        // A request for a session the device does not know is refused at once.
        let err = att.reserve("nope").unwrap_err();
        assert!(err.to_string().contains("no session nope"), "{err}");
        assert!(att.pass("nope").is_err());
    }
}
