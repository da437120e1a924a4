//! Seats through the sans-IO server: requests written into attendee
//! documents, decided by the server in arrival order, outcomes written into
//! each user's seats document before the request is acknowledged, counts
//! folded into one change, and all of it durable across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::transaction::Transactable as _;
use automerge::{ActorId, ObjType, ReadDoc as _, ROOT};
use lanyard_protocol::seats::doc::{self as seatdoc, read_counts, read_decided, read_outcomes};
use lanyard_protocol::seats::{RequestKind, SeatState};
use lanyard_protocol::testing::{persisted, sent, Fixture, IN_AN_HOUR, NOW};
use lanyard_protocol::{
    ClientMsg, DocId, RefusalReason, Replica, RequestId, Role, ServerAction, ServerMsg, SessionId,
    UserId,
};

fn replica(n: u8) -> Replica {
    Replica::new(ActorId::from(&[n; 16][..]))
}

/// An agenda with session `s1` of `capacity` seats, starting in a day.
fn agenda(f: &Fixture, org: &mut Replica, capacity: i64) {
    let doc = &mut org.get_or_create(&f.agenda()).doc;
    let mut tx = doc.transaction();
    let sessions = match tx.get(ROOT, "sessions").unwrap() {
        Some((_, id)) => id,
        None => tx.put_object(ROOT, "sessions", ObjType::Map).unwrap(),
    };
    let s = tx.put_object(&sessions, "s1", ObjType::Map).unwrap();
    let start = NOW.as_secs() as i64 + 86_400;
    tx.put(&s, "title", "Workshop").unwrap();
    tx.put(&s, "start", start).unwrap();
    tx.put(&s, "end", start + 3600).unwrap();
    tx.put(&s, seatdoc::CAPACITY, capacity).unwrap();
    tx.commit();
}

/// Writes a request into `user`'s attendee document.
fn request(f: &Fixture, r: &mut Replica, user: &str, id: &str, kind: &str) -> DocId {
    let own = DocId::Attendee(f.event.clone(), UserId::new(user).unwrap());
    let doc = &mut r.get_or_create(&own).doc;
    seatdoc::write_request(
        doc,
        &own.to_string(),
        &RequestId::new(id).unwrap(),
        &SessionId::new("s1").unwrap(),
        RequestKind::parse(kind).unwrap(),
        0,
    )
    .unwrap();
    own
}

fn standing(f: &Fixture, r: &Replica, user: &str) -> (SeatState, Option<u32>) {
    let user = UserId::new(user).unwrap();
    let doc = DocId::Seats(f.event.clone(), user.clone());
    let seats = &r.get(&doc).expect("the seats document arrived").doc;
    let o = read_outcomes(seats, &user);
    assert_eq!(o.len(), 1, "{o:?}");
    (o[0].state, o[0].position)
}

#[test]
fn the_server_decides_in_arrival_order_and_promotes_on_cancel() {
    let mut f = Fixture::new(1);
    let mut org = replica(1);
    agenda(&f, &mut org, 1);
    let token = f.token("org", Role::Organizer, "laptop", IN_AN_HOUR);
    f.sync(1, token, &mut org);

    let mut devices = Vec::new();
    for (i, user) in ["ann", "bob", "cat"].into_iter().enumerate() {
        let mut r = replica(10 + i as u8);
        request(&f, &mut r, user, &format!("req-{user}"), "reserve");
        let token = f.token(user, Role::Attendee, "phone", IN_AN_HOUR);
        let conn = 10 + i as u64;
        f.sync(conn, token, &mut r);
        devices.push((user, conn, r));
    }
    assert_eq!(
        standing(&f, &devices[0].2, "ann"),
        (SeatState::Confirmed, None)
    );
    assert_eq!(
        standing(&f, &devices[1].2, "bob"),
        (SeatState::Waitlisted, Some(1))
    );
    assert_eq!(
        standing(&f, &devices[2].2, "cat"),
        (SeatState::Waitlisted, Some(2))
    );

    // The request's outcome was persisted before the Ack went out.
    let (_, conn, ann) = &mut devices[0];
    let own = request(&f, ann, "ann", "req-ann-2", "cancel");
    let token = f.token("ann", Role::Attendee, "phone", IN_AN_HOUR);
    f.server.disconnect(*conn);
    f.server.connect(*conn);
    let (_, msgs) = lanyard_protocol::ClientSession::start(f.event.clone(), token, ann);
    let actions = f.handle(NOW, *conn, msgs);
    let ack = actions
        .iter()
        .position(|a| {
            sent(std::slice::from_ref(a))
                .iter()
                .any(|(_, m)| matches!(m, ServerMsg::Ack { doc, .. } if *doc == own))
        })
        .expect("the push is acknowledged");
    let bob_seats = DocId::Seats(f.event.clone(), UserId::new("bob").unwrap());
    let persisted_bob = actions
        .iter()
        .position(|a| matches!(a, ServerAction::Persist { doc, .. } if *doc == bob_seats))
        .expect("bob's promotion is persisted");
    assert!(persisted_bob < ack, "promotion stored before the Ack");

    // Bob and cat reconnect and learn: bob got the seat, cat moved up.
    for (user, conn, r) in devices.iter_mut().skip(1) {
        f.server.disconnect(*conn);
        let token = f.token(user, Role::Attendee, "phone", IN_AN_HOUR);
        f.sync(*conn, token, r);
    }
    assert_eq!(
        standing(&f, &devices[1].2, "bob"),
        (SeatState::Confirmed, None)
    );
    assert_eq!(
        standing(&f, &devices[2].2, "cat"),
        (SeatState::Waitlisted, Some(1))
    );

    // The counts are folded into one change when due.
    let due = f.server.poll_timeout().expect("counts are due");
    let actions = f.server.handle_timeout(due);
    let counts_doc = DocId::SeatCounts(f.event.clone());
    assert!(actions
        .iter()
        .any(|a| matches!(a, ServerAction::Persist { doc, .. } if *doc == counts_doc)));
    let counts = read_counts(&f.server.doc(&counts_doc).unwrap());
    assert_eq!(counts["s1"].confirmed, 1);
    assert_eq!(counts["s1"].waitlist, 1);
}

#[test]
fn decisions_survive_a_restart_and_new_requests_queue_behind_them() {
    let mut f = Fixture::new(2);
    let mut org = replica(1);
    agenda(&f, &mut org, 1);
    let token = f.token("org", Role::Organizer, "laptop", IN_AN_HOUR);
    f.sync(1, token, &mut org);
    for (i, user) in ["ann", "bob"].into_iter().enumerate() {
        let mut r = replica(10 + i as u8);
        request(&f, &mut r, user, &format!("req-{user}"), "reserve");
        let token = f.token(user, Role::Attendee, "phone", IN_AN_HOUR);
        f.sync(10 + i as u64, token, &mut r);
    }
    // The server's disk holds every decision: a new server decides nothing
    // twice, and the next request waits behind bob.
    f.restart();
    let settled = f.server.handle_timeout(NOW);
    assert!(
        !settled
            .iter()
            .any(|a| matches!(a, ServerAction::Persist { doc, .. } if doc.server_written() && !matches!(doc, DocId::SeatCounts(_)))),
        "nothing re-decided: {settled:?}"
    );
    let mut r = replica(30);
    request(&f, &mut r, "cat", "req-cat", "reserve");
    let token = f.token("cat", Role::Attendee, "phone", IN_AN_HOUR);
    f.sync(30, token, &mut r);
    assert_eq!(standing(&f, &r, "cat"), (SeatState::Waitlisted, Some(2)));
}

#[test]
fn a_request_acknowledged_before_a_crash_is_decided_after_it() {
    let mut f = Fixture::new(3);
    let mut org = replica(1);
    agenda(&f, &mut org, 5);
    let token = f.token("org", Role::Organizer, "laptop", IN_AN_HOUR);
    f.sync(1, token, &mut org);
    let mut r = replica(10);
    request(&f, &mut r, "ann", "req-ann", "reserve");
    let token = f.token("ann", Role::Attendee, "phone", IN_AN_HOUR);
    f.sync(10, token.clone(), &mut r);
    // The crash lost the seats document but not the request (as if the
    // disk kept the attendee document's write and not the decision).
    let seats = DocId::Seats(f.event.clone(), UserId::new("ann").unwrap());
    f.disk.remove(&seats);
    f.restart();
    let actions = f.server.handle_timeout(NOW);
    assert!(actions
        .iter()
        .any(|a| matches!(a, ServerAction::Persist { doc, .. } if *doc == seats)));
    let mut fresh = replica(11);
    f.sync(11, token, &mut fresh);
    assert_eq!(standing(&f, &fresh, "ann"), (SeatState::Confirmed, None));
    let decided = read_decided(&fresh.get(&seats).unwrap().doc);
    assert_eq!(decided.len(), 1, "exactly one outcome: {decided:?}");
}

#[test]
fn an_attendee_cannot_write_an_outcome_or_read_another_users_seats() {
    let mut f = Fixture::new(4);
    let mut mallory = replica(66);
    let ann_seats = DocId::Seats(f.event.clone(), UserId::new("ann").unwrap());
    let own_seats = DocId::Seats(f.event.clone(), UserId::new("mallory").unwrap());
    for doc in [&own_seats, &ann_seats] {
        let d = &mut mallory.get_or_create(doc).doc;
        let mut tx = d.transaction();
        let seats = tx.put_object(ROOT, seatdoc::SEATS, ObjType::Map).unwrap();
        let s = tx.put_object(&seats, "s1", ObjType::Map).unwrap();
        tx.put(&s, "state", "confirmed").unwrap();
        tx.commit();
    }
    let token = f.token("mallory", Role::Attendee, "phone", IN_AN_HOUR);
    f.server.connect(5);
    let (_, msgs) = lanyard_protocol::ClientSession::start(f.event.clone(), token, &mallory);
    let mut pushes: Vec<ClientMsg> = msgs;
    for doc in [&own_seats, &ann_seats] {
        let rd = mallory.get(doc).unwrap();
        pushes.push(ClientMsg::Push {
            doc: doc.clone(),
            changes: rd
                .doc
                .get_changes(&[])
                .iter()
                .map(|c| c.raw_bytes().to_vec())
                .collect(),
        });
    }
    let replies = f.exchange(NOW, 5, pushes);
    let refused: Vec<(DocId, RefusalReason)> = replies
        .iter()
        .filter_map(|(_, m)| match m {
            ServerMsg::Refused { doc, reason, .. } => Some((doc.clone(), *reason)),
            _ => None,
        })
        .collect();
    assert!(refused.contains(&(own_seats.clone(), RefusalReason::Forbidden)));
    assert!(refused.contains(&(ann_seats.clone(), RefusalReason::Forbidden)));
    assert!(f.server.doc(&ann_seats).is_none());
    assert!(f.server.doc(&own_seats).is_none_or(|d| read_outcomes(
        &d,
        &UserId::new("mallory").unwrap()
    )
    .is_empty()));
}

#[test]
fn a_request_that_cannot_be_read_is_refused_with_its_reason() {
    let mut f = Fixture::new(5);
    let mut org = replica(1);
    agenda(&f, &mut org, 2);
    let token = f.token("org", Role::Organizer, "laptop", IN_AN_HOUR);
    f.sync(1, token, &mut org);
    let mut r = replica(10);
    let own = DocId::Attendee(f.event.clone(), UserId::new("ann").unwrap());
    // A valid request, then a record that is no request (bytes the device
    // did not encode) under a valid id.
    request(&f, &mut r, "ann", "good", "reserve");
    {
        let doc = &mut r.get_or_create(&own).doc;
        let requests = match doc.get(ROOT, seatdoc::REQUESTS).unwrap() {
            Some((_, id)) => id,
            None => panic!("the requests map exists"),
        };
        let mut tx = doc.transaction();
        tx.put(
            &requests,
            "garbage",
            automerge::ScalarValue::Bytes(vec![0xff; 3]),
        )
        .unwrap();
        tx.commit();
    }
    let token = f.token("ann", Role::Attendee, "phone", IN_AN_HOUR);
    f.sync(10, token, &mut r);
    assert_eq!(standing(&f, &r, "ann"), (SeatState::Confirmed, None));
    let seats = DocId::Seats(f.event.clone(), UserId::new("ann").unwrap());
    let decided = read_decided(&r.get(&seats).unwrap().doc);
    assert_eq!(decided.len(), 2, "{decided:?}");
    let bad = &decided["garbage"];
    assert_eq!(bad.state, SeatState::Refused);
    assert!(
        bad.reason
            .as_deref()
            .unwrap_or_default()
            .contains("could not be read"),
        "{bad:?}"
    );
}

/// What one node persisted and another has read, per document.
type Shipped = std::collections::BTreeMap<DocId, usize>;

/// Hands what node `from` persisted since the last call to node `to`, as
/// the shared store's change feed would; returns what `to` did with them
/// (the decisions it persists go to its own disk, for the way back).
fn ship(from: &Fixture, to: &mut Fixture, seen: &mut Shipped) -> Vec<ServerAction> {
    let mut out = Vec::new();
    for (doc, chunks) in &from.disk {
        let done = seen.entry(doc.clone()).or_default();
        let new = &chunks[*done..];
        *done = chunks.len();
        if !new.is_empty() {
            to.server
                .apply_stored(NOW, doc.clone(), new, &mut out)
                .unwrap();
        }
    }
    for (doc, change) in persisted(&out) {
        to.disk.entry(doc).or_default().push(change);
    }
    out
}

/// The seat documents `actions` persist.
fn seat_writes(actions: &[ServerAction]) -> usize {
    persisted(actions)
        .iter()
        .filter(|(d, _)| matches!(d, DocId::Seats(..) | DocId::SeatCounts(_)))
        .count()
}

#[test]
fn of_two_nodes_only_the_authority_decides_and_a_follower_takes_over() {
    // One cluster: the same key; node a decides seats, node b does not.
    let mut a = Fixture::new(1);
    let mut b = Fixture::new(1);
    b.server.set_seat_authority(false);
    assert!(a.server.is_seat_authority() && !b.server.is_seat_authority());
    let (mut a_to_b, mut b_to_a) = (Shipped::new(), Shipped::new());

    let mut org = replica(1);
    agenda(&a, &mut org, 1);
    a.sync(
        1,
        a.token("org", Role::Organizer, "laptop", IN_AN_HOUR),
        &mut org,
    );
    ship(&a, &mut b, &mut a_to_b);

    // Ann reserves the last seat on b, bob on a, at the same moment: b
    // acknowledges ann's request without deciding it; a decides bob's.
    let mut ann = replica(10);
    request(&a, &mut ann, "ann", "req-ann", "reserve");
    let mut on_b = b.sync(
        10,
        b.token("ann", Role::Attendee, "phone", IN_AN_HOUR),
        &mut ann,
    );
    assert!(
        b.disk.keys().all(|d| matches!(d, DocId::Attendee(..))),
        "a follower writes no decision"
    );
    let mut bob = replica(11);
    request(&a, &mut bob, "bob", "req-bob", "reserve");
    a.sync(
        11,
        a.token("bob", Role::Attendee, "phone", IN_AN_HOUR),
        &mut bob,
    );
    assert_eq!(standing(&a, &bob, "bob"), (SeatState::Confirmed, None));

    // Ann's request reaches a through the store: the seat is taken.
    let decided = ship(&b, &mut a, &mut b_to_a);
    assert_eq!(
        seat_writes(&decided),
        1,
        "a decides ann's request: {decided:?}"
    );
    // Its decisions reach ann's phone on b the same way.
    let told = ship(&a, &mut b, &mut a_to_b);
    assert_eq!(seat_writes(&told), 0, "stored already: {told:?}");
    for m in lanyard_protocol::testing::sent_to(10, &told) {
        on_b.handle(&mut ann, m).unwrap();
    }
    assert_eq!(standing(&a, &ann, "ann"), (SeatState::Waitlisted, Some(1)));

    // Timers on the follower decide nothing (no counts, no offers).
    assert!(b.server.poll_timeout().is_none_or(|t| t > NOW));
    let idle = b
        .server
        .handle_timeout(NOW + std::time::Duration::from_secs(60));
    assert_eq!(seat_writes(&idle), 0, "{idle:?}");

    // Node a dies; b becomes the authority: it decides nothing again.
    b.server.set_seat_authority(true);
    let settled = b.server.handle_timeout(NOW);
    assert!(
        persisted(&settled)
            .iter()
            .all(|(d, _)| !matches!(d, DocId::Seats(..))),
        "everything was decided already: {settled:?}"
    );
    // Bob gives his seat back on b: b decides, and ann, first in line,
    // gets the seat.
    let mut bob_on_b = replica(11);
    let token = b.token("bob", Role::Attendee, "phone", IN_AN_HOUR);
    b.sync(12, token, &mut bob_on_b);
    request(&b, &mut bob_on_b, "bob", "req-bob-2", "cancel");
    b.server.disconnect(12);
    let token = b.token("bob", Role::Attendee, "phone", IN_AN_HOUR);
    b.sync(12, token, &mut bob_on_b);
    assert_eq!(standing(&b, &bob_on_b, "bob").0, SeatState::Cancelled);
    let ann_seats = DocId::Seats(b.event.clone(), UserId::new("ann").unwrap());
    let outcomes = read_outcomes(
        &b.server.doc(&ann_seats).unwrap(),
        &UserId::new("ann").unwrap(),
    );
    assert_eq!(outcomes[0].state, SeatState::Confirmed, "{outcomes:?}");
}
