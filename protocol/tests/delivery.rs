//! Delivery guarantees of the sans-IO server and client: a device that lacks
//! a change finds out within a bounded time and repairs itself; a device
//! whose outbox overflowed gets one catch-up; a catch-up on its way is not
//! asked for twice; changes queued for missing dependencies are not
//! received; a reconnecting installation replaces its lingering session.

#![allow(clippy::unwrap_used)]

use automerge::transaction::Transactable as _;
use automerge::{ActorId, ReadDoc as _, ROOT};
use lanyard_protocol::testing::{sent_to, Fixture, IN_AN_HOUR, NOW};
use lanyard_protocol::{
    ClientEvent, ClientMsg, ClientSession, ConnId, DocId, ErrorCode, Millis, Replica, Role,
    ServerAction, ServerMsg,
};

/// The server of these tests: key seed 5.
fn fixture() -> Fixture {
    Fixture::new(5)
}

/// One device: its replica and its session.
struct Device {
    conn: ConnId,
    replica: Replica,
    session: ClientSession,
}

/// Delivers to the device what `actions` send it; returns what it sends back.
fn down(dev: &mut Device, actions: &[ServerAction]) -> (Vec<ClientMsg>, Vec<ClientEvent>) {
    let mut send = Vec::new();
    let mut events = Vec::new();
    for m in sent_to(dev.conn, actions) {
        let out = dev.session.handle(&mut dev.replica, m).unwrap();
        send.extend(out.send);
        events.extend(out.events);
    }
    (send, events)
}

/// Connects a fresh device (actor `[actor; 16]`) of `user` with `role` on
/// `device`, and runs its exchanges until nothing more is sent.
fn join(
    f: &mut Fixture,
    conn: ConnId,
    (user, role, device): (&str, Role, &str),
    actor: u8,
) -> Device {
    let token = f.token(user, role, device, IN_AN_HOUR);
    let replica = Replica::new(ActorId::from(&[actor; 16][..]));
    join_with(f, conn, token, replica)
}

fn join_with(f: &mut Fixture, conn: ConnId, token: String, mut replica: Replica) -> Device {
    f.server.connect(conn);
    let (mut session, msgs) = ClientSession::start(f.event.clone(), token, &replica);
    f.settle(conn, &mut session, &mut replica, msgs);
    Device {
        conn,
        replica,
        session,
    }
}

/// The organizer makes one agenda change and pushes it: the actions.
fn organizer_edit(f: &mut Fixture, org: &mut Device, key: &str, now: Millis) -> Vec<ServerAction> {
    let agenda = f.agenda();
    let mut tx = org.replica.get_or_create(&agenda).doc.transaction();
    tx.put(ROOT, key, "v").unwrap();
    tx.commit();
    let push = org.session.local_change(&org.replica, &agenda);
    let actions = f.handle(now, org.conn, push);
    down(org, &actions);
    actions
}

fn holds(dev: &Device, doc: &DocId, key: &str) -> bool {
    dev.replica
        .get(doc)
        .is_some_and(|rd| rd.doc.get(ROOT, key).unwrap().is_some())
}

#[test]
fn a_dropped_push_is_found_by_the_heads_beacon_and_repaired() {
    let mut f = fixture();
    let mut org = join(&mut f, 1, ("org", Role::Organizer, "laptop"), 1);
    let mut att = join(&mut f, 2, ("ann", Role::Attendee, "phone"), 2);
    let agenda = f.agenda();
    let first = organizer_edit(&mut f, &mut org, "first", NOW);
    down(&mut att, &first);
    // The second change's push to the attendee is lost on purpose.
    let actions = organizer_edit(&mut f, &mut org, "second", NOW);
    assert_eq!(sent_to(2, &actions).len(), 1, "one push for the attendee");
    assert!(holds(&att, &agenda, "first"));
    assert!(!holds(&att, &agenda, "second"));
    // Nothing else happens: the server's timer is bounded.
    let due = f.server.poll_timeout().expect("a beacon is scheduled");
    assert!(due.since(NOW) <= lanyard_protocol::server::BEACON_AFTER);
    assert!(f.server.handle_timeout(NOW).is_empty(), "not due yet");
    let beacon = f.server.handle_timeout(due);
    let heads: Vec<ServerMsg> = sent_to(2, &beacon);
    assert!(
        matches!(heads.as_slice(), [ServerMsg::Heads { .. }]),
        "{heads:?}"
    );
    assert_eq!(f.server.poll_timeout(), None, "one beacon per quiet period");
    // The attendee finds it lacks the heads and asks; the catch-up repairs it.
    let (asks, _) = down(&mut att, &beacon);
    assert!(
        matches!(asks.as_slice(), [ClientMsg::Resync { .. }]),
        "{asks:?}"
    );
    f.settle(att.conn, &mut att.session, &mut att.replica, asks);
    assert!(holds(&att, &agenda, "second"));
    assert!(att.session.is_settled(&att.replica));
    // A device that holds everything answers a beacon with nothing.
    let org_msgs = down(&mut org, &beacon).0;
    assert!(org_msgs.is_empty(), "{org_msgs:?}");
}

#[test]
fn a_device_behind_its_outbox_bound_gets_one_catch_up_when_it_drains() {
    let mut f = fixture();
    let mut org = join(&mut f, 1, ("org", Role::Organizer, "laptop"), 1);
    let mut att = join(&mut f, 2, ("ann", Role::Attendee, "phone"), 2);
    let agenda = f.agenda();
    // The driver drops the first broadcast for the attendee (its outbox is
    // full) and reports it.
    let actions = organizer_edit(&mut f, &mut org, "k0", NOW);
    let Some(ServerAction::Broadcast {
        doc, base, conns, ..
    }) = actions
        .iter()
        .find(|a| matches!(a, ServerAction::Broadcast { .. }))
    else {
        panic!("a broadcast: {actions:?}");
    };
    assert_eq!(conns, &vec![2]);
    f.server.fell_behind(2, doc, base.clone());
    // While it is behind, nothing more is queued for it.
    for i in 1..50 {
        let actions = organizer_edit(&mut f, &mut org, &format!("k{i}"), NOW);
        assert!(
            sent_to(2, &actions).is_empty(),
            "change {i} was queued for it"
        );
    }
    // Drained: one catch-up, and the device holds all 50 changes.
    let catch_up = f.server.drained(2);
    let msgs = sent_to(2, &catch_up);
    assert!(!msgs.is_empty() && msgs.len() <= 2, "{msgs:?}");
    let (back, events) = down(&mut att, &catch_up);
    assert!(back.is_empty(), "{back:?}");
    let received: usize = events
        .iter()
        .map(|e| match e {
            ClientEvent::Updated { changes, .. } => *changes,
            _ => 0,
        })
        .sum();
    assert_eq!(received, 50);
    assert!((0..50).all(|i| holds(&att, &agenda, &format!("k{i}"))));
    // From then on it is fanned out to again.
    let actions = organizer_edit(&mut f, &mut org, "after", NOW);
    down(&mut att, &actions);
    assert!(holds(&att, &agenda, "after"));
    assert!(f.server.drained(2).is_empty(), "no second catch-up");
}

#[test]
fn a_change_that_overtakes_the_catch_up_is_not_received_early_nor_asked_for_twice() {
    let mut f = fixture();
    let mut org = join(&mut f, 1, ("org", Role::Organizer, "laptop"), 1);
    let agenda = f.agenda();
    // An agenda large enough for a snapshot catch-up.
    for i in 0..40 {
        let mut tx = org.replica.get_or_create(&agenda).doc.transaction();
        tx.put(ROOT, format!("talk{i}"), "x".repeat(1000)).unwrap();
        tx.commit();
    }
    let push = org.session.local_change(&org.replica, &agenda);
    let actions = f.handle(NOW, 1, push);
    down(&mut org, &actions);
    // An empty device says Hello; the Welcome announces a catch-up that follows.
    f.server.connect(2);
    let replica = Replica::new(ActorId::from(&[2u8; 16][..]));
    let (session, hello) = ClientSession::start(
        f.event.clone(),
        f.token("ann", Role::Attendee, "phone", IN_AN_HOUR),
        &replica,
    );
    let mut att = Device {
        conn: 2,
        replica,
        session,
    };
    let welcome = f.handle(NOW, 2, hello);
    let welcome_msgs = sent_to(2, &welcome);
    assert!(welcome_msgs.len() >= 2, "a Welcome and a catch-up");
    // A new change is pushed to it before the catch-up arrives.
    let fanout = organizer_edit(&mut f, &mut org, "late", NOW);
    let (first, rest) = welcome_msgs.split_first().unwrap();
    let out = att.session.handle(&mut att.replica, first.clone()).unwrap();
    assert!(out.send.is_empty(), "{:?}", out.send);
    for m in sent_to(2, &fanout) {
        let out = att.session.handle(&mut att.replica, m).unwrap();
        assert!(
            out.send.is_empty(),
            "asked again while the catch-up is on its way: {:?}",
            out.send
        );
        assert!(
            !out.events
                .iter()
                .any(|e| matches!(e, ClientEvent::Updated { .. })),
            "a change waiting for its dependencies was counted as received"
        );
    }
    assert!(!holds(&att, &agenda, "late"));
    // The catch-up arrives: the queued change applies with it.
    let mut asked = Vec::new();
    for m in rest {
        asked.extend(
            att.session
                .handle(&mut att.replica, m.clone())
                .unwrap()
                .send,
        );
    }
    assert!(asked.is_empty(), "{asked:?}");
    assert!(holds(&att, &agenda, "talk39"));
    assert!(holds(&att, &agenda, "late"));
    assert!(att.session.is_settled(&att.replica));
}

#[test]
fn a_reconnecting_installation_replaces_its_lingering_session() {
    let mut f = fixture();
    let token = f.token("ann", Role::Attendee, "phone", IN_AN_HOUR);
    let mut replica = Replica::new(ActorId::from(&[3u8; 16][..]));
    replica.set_installation([7; 16]);
    let old = join_with(&mut f, 1, token.clone(), replica);
    // The goodbye of connection 1 was lost; the same installation comes back.
    f.server.connect(2);
    let (_, hello) = ClientSession::start(f.event.clone(), token.clone(), &old.replica);
    let actions = f.handle(NOW, 2, hello);
    let to_old = sent_to(1, &actions);
    assert!(
        matches!(
            to_old.as_slice(),
            [ServerMsg::Error {
                code: ErrorCode::Replaced,
                ..
            }]
        ),
        "{to_old:?}"
    );
    assert!(matches!(sent_to(2, &actions)[0], ServerMsg::Welcome { .. }));
    assert_eq!(f.server.session_count(), 1);
    // Another installation of the same device does not replace it.
    f.server.connect(3);
    let mut other = Replica::new(ActorId::from(&[4u8; 16][..]));
    other.set_installation([8; 16]);
    let (_, hello) = ClientSession::start(f.event.clone(), token, &other);
    let actions = f.handle(NOW, 3, hello);
    assert!(sent_to(2, &actions).is_empty());
    assert_eq!(f.server.session_count(), 2);
}
