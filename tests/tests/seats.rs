//! Seats end to end over real QUIC on loopback: real server on sled, real
//! client cores. Requests made offline are decided in the order they reach
//! the server; outcomes, promotions and counts reach every device.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanyard_client_core::{
    Alert, AlertKind, AlertListener, BackgroundOptions, NewSession, ReservationState,
};
use lanyard_protocol::Role;
use lanyard_tests::{unix_now, wait_for, Device, TestServer};

/// A workshop starting in a day.
fn workshop(id: &str) -> NewSession {
    let start = i64::try_from(unix_now()).unwrap() + 86_400;
    NewSession {
        id: id.into(),
        title: format!("Workshop {id}"),
        abstract_text: String::new(),
        room: "Room 1".into(),
        start_unix: start,
        end_unix: start + 3600,
        track: String::new(),
        speakers: Vec::new(),
    }
}

fn state(d: &Device, session: &str) -> Option<(ReservationState, Option<u32>)> {
    d.client
        .reservations()
        .unwrap()
        .into_iter()
        .find(|r| r.session == session)
        .map(|r| (r.state, r.position))
}

#[derive(Default)]
struct Alerts(Mutex<Vec<Alert>>);

impl AlertListener for Alerts {
    fn on_alert(&self, alert: Alert) {
        self.0.lock().unwrap().push(alert);
    }
}

impl Alerts {
    fn kinds(&self) -> Vec<AlertKind> {
        self.0.lock().unwrap().iter().map(|a| a.kind).collect()
    }
}

async fn organizer_with_workshop(srv: &TestServer, capacity: u32) -> Device {
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    org.client.set_event("Conf", "Europe/Brussels").unwrap();
    org.client.add_session(workshop("w1")).unwrap();
    org.client.set_capacity("w1", capacity).unwrap();
    org.sync().await.unwrap();
    org
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_reservations_are_decided_in_arrival_order_and_a_cancel_promotes_the_next() {
    let srv = TestServer::start().await.unwrap();
    let _org = organizer_with_workshop(&srv, 2).await;
    let mut devices = Vec::new();
    for user in ["ann", "bob", "cat"] {
        let d = srv.device(Role::Attendee, user, "phone").unwrap();
        d.sync().await.unwrap();
        devices.push(d);
    }
    // Offline: each request is on the device at once, pending.
    for d in &devices {
        d.client.reserve("w1").unwrap();
        assert_eq!(state(d, "w1"), Some((ReservationState::Pending, None)));
    }
    // They reach the server in this order.
    for d in &devices {
        d.sync().await.unwrap();
    }
    assert_eq!(
        state(&devices[0], "w1"),
        Some((ReservationState::Confirmed, None))
    );
    assert_eq!(
        state(&devices[1], "w1"),
        Some((ReservationState::Confirmed, None))
    );
    assert_eq!(
        state(&devices[2], "w1"),
        Some((ReservationState::Waitlisted, Some(1)))
    );

    // Cat stays connected, listening for alerts.
    let alerts = Arc::new(Alerts::default());
    devices[2]
        .client
        .add_alert_listener(alerts.clone())
        .unwrap();
    let bg = devices[2]
        .client
        .start_background(BackgroundOptions::default());
    wait_for("cat to be connected", || {
        devices[2].client.status().connected
    })
    .await
    .unwrap();

    // Ann gives her seat back: cat gets it and is told.
    devices[0].client.cancel_reservation("w1").unwrap();
    devices[0].sync().await.unwrap();
    assert_eq!(
        state(&devices[0], "w1"),
        Some((ReservationState::Cancelled, None))
    );
    wait_for("cat to be promoted", || {
        state(&devices[2], "w1") == Some((ReservationState::Confirmed, None))
    })
    .await
    .unwrap();
    wait_for("the promotion alert", || {
        alerts.kinds().contains(&AlertKind::SeatPromoted)
    })
    .await
    .unwrap();
    // Everyone sees how full the session is: the counts follow within a second.
    wait_for("the counts to reach cat", || {
        let c = devices[2].client.seat_counts().unwrap();
        c.get("w1")
            .is_some_and(|c| c.confirmed == 2 && c.waitlist == 0 && c.capacity == 2 && c.full())
    })
    .await
    .unwrap();
    bg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_survive_a_restart_and_reach_every_device_of_the_user() {
    let mut srv = TestServer::start().await.unwrap();
    let org = organizer_with_workshop(&srv, 1).await;
    let ann = srv.device(Role::Attendee, "ann", "phone").unwrap();
    let bob = srv.device(Role::Attendee, "bob", "phone").unwrap();
    ann.sync().await.unwrap();
    bob.sync().await.unwrap();
    ann.client.reserve("w1").unwrap();
    ann.sync().await.unwrap();
    bob.client.reserve("w1").unwrap();
    bob.sync().await.unwrap();
    assert_eq!(
        state(&bob, "w1"),
        Some((ReservationState::Waitlisted, Some(1)))
    );

    srv.restart().await.unwrap();
    // Bob's tablet, new after the restart, learns the same outcome.
    let tablet = srv.device(Role::Attendee, "bob", "tablet").unwrap();
    tablet.sync().await.unwrap();
    assert_eq!(
        state(&tablet, "w1"),
        Some((ReservationState::Waitlisted, Some(1)))
    );
    // Raising the capacity after the restart promotes bob.
    org.client.set_capacity("w1", 2).unwrap();
    org.sync().await.unwrap();
    bob.sync().await.unwrap();
    assert_eq!(state(&bob, "w1"), Some((ReservationState::Confirmed, None)));
    // Cancelling the session releases every seat.
    org.client.cancel_session("w1").unwrap();
    org.sync().await.unwrap();
    for d in [&ann, &bob] {
        d.sync().await.unwrap();
        let r = d
            .client
            .reservations()
            .unwrap()
            .into_iter()
            .find(|r| r.session == "w1")
            .unwrap();
        assert_eq!(r.state, ReservationState::Cancelled);
        assert!(r.reason.unwrap_or_default().contains("cancelled"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offered_seat_moves_on_when_it_lapses_and_is_kept_when_accepted() {
    let srv = TestServer::start().await.unwrap();
    let org = organizer_with_workshop(&srv, 1).await;
    // Offers held for one second.
    org.client.set_seat_policy(None, Some(1)).unwrap();
    org.sync().await.unwrap();
    let users: Vec<Device> = ["ann", "bob", "cat", "dan"]
        .into_iter()
        .map(|u| srv.device(Role::Attendee, u, "phone").unwrap())
        .collect();
    for d in &users[..2] {
        d.sync().await.unwrap();
        d.client.reserve("w1").unwrap();
        d.sync().await.unwrap();
    }
    users[0].client.cancel_reservation("w1").unwrap();
    users[0].sync().await.unwrap();
    users[1].sync().await.unwrap();
    assert_eq!(
        state(&users[1], "w1").map(|s| s.0),
        Some(ReservationState::Offered)
    );
    // Bob lets the offer lapse: the server's timer takes it back.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        users[1].sync().await.unwrap();
        if state(&users[1], "w1").map(|s| s.0) == Some(ReservationState::Cancelled) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the offer never lapsed: {:?}",
            state(&users[1], "w1")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bob = users[1].client.reservations().unwrap();
    assert!(bob[0]
        .reason
        .clone()
        .unwrap_or_default()
        .contains("expired"));

    // Offers held for an hour: cat takes the free seat, dan waits, cat
    // gives it back, dan is offered it and accepts.
    org.client.set_seat_policy(None, Some(3600)).unwrap();
    org.sync().await.unwrap();
    for d in &users[2..] {
        d.sync().await.unwrap();
        d.client.reserve("w1").unwrap();
        d.sync().await.unwrap();
    }
    assert_eq!(
        state(&users[2], "w1"),
        Some((ReservationState::Confirmed, None))
    );
    assert_eq!(
        state(&users[3], "w1"),
        Some((ReservationState::Waitlisted, Some(1)))
    );
    users[2].client.cancel_reservation("w1").unwrap();
    users[2].sync().await.unwrap();
    users[3].sync().await.unwrap();
    let offered = users[3].client.reservations().unwrap();
    assert_eq!(offered[0].state, ReservationState::Offered);
    assert!(offered[0].offer_until_unix_ms.is_some());
    users[3].client.accept_offer("w1").unwrap();
    users[3].sync().await.unwrap();
    assert_eq!(
        state(&users[3], "w1"),
        Some((ReservationState::Confirmed, None))
    );
}

/// Syncs `d` until `cond` holds (the server folds counts and the pass key
/// into its counts document on a timer), with a generous deadline.
async fn sync_until(d: &Device, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        d.sync().await.unwrap();
        if cond() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_are_checked_in_offline_once_and_double_use_is_reported() {
    use lanyard_client_core::ClientError;
    let srv = TestServer::start().await.unwrap();
    let _org = organizer_with_workshop(&srv, 2).await;
    let ann = srv.device(Role::Attendee, "ann", "phone").unwrap();
    let bob = srv.device(Role::Attendee, "bob", "phone").unwrap();
    for d in [&ann, &bob] {
        d.sync().await.unwrap();
        d.client.reserve("w1").unwrap();
        d.sync().await.unwrap();
    }
    let pass = ann.client.pass("w1").unwrap();
    let bob_pass = bob.client.pass("w1").unwrap();
    // An attendee's device is no door.
    assert!(matches!(
        ann.client.check_in(&pass),
        Err(ClientError::OrganizersOnly)
    ));
    // Bob gives his seat back: his pass is revoked.
    bob.client.cancel_reservation("w1").unwrap();
    bob.sync().await.unwrap();
    assert!(bob.client.pass("w1").is_err());

    // Two doors sync once (the server's pass key and revocations), then
    // work offline.
    let door1 = srv.device(Role::Organizer, "staff1", "door-1").unwrap();
    let door2 = srv.device(Role::Organizer, "staff2", "door-2").unwrap();
    for d in [&door1, &door2] {
        // The counts after bob's cancellation come in the same change as
        // his revocation (and, before them, the server's pass key).
        sync_until(d, "the door holds the counts after bob gave back", || {
            d.client
                .seat_counts()
                .unwrap()
                .get("w1")
                .is_some_and(|c| c.confirmed == 1)
        })
        .await;
        let err = d.client.check_in(&bob_pass).unwrap_err();
        assert!(err.to_string().contains("revoked"), "{err}");
    }
    let ok = door1.client.check_in(&pass).unwrap();
    assert_eq!((ok.user.as_str(), ok.session.as_str()), ("ann", "w1"));
    assert_eq!((ok.checked_in, ok.capacity), (1, 2));
    let again = door1.client.check_in(&pass).unwrap_err();
    assert!(again.to_string().contains("already checked in"), "{again}");
    // A forged pass: the same claims signed by another key.
    let key = lanyard_protocol::testing::TestKey::new(9);
    let claims = lanyard_protocol::seats::pass::PassClaims {
        event: lanyard_protocol::EventId::new(lanyard_tests::EVENT).unwrap(),
        session: lanyard_protocol::SessionId::new("w1").unwrap(),
        user: lanyard_protocol::UserId::new("mallory").unwrap(),
        request: lanyard_protocol::RequestId::new("r-forged").unwrap(),
        valid_until: u64::MAX,
    };
    let forged = key.sign_pass(&claims);
    let err = door1.client.check_in(&forged).unwrap_err();
    assert!(err.to_string().contains("forged"), "{err}");
    let err = door1.client.check_in("hello").unwrap_err();
    assert!(err.to_string().contains("not a Lanyard pass"), "{err}");
    // The second door, offline, admits the same pass: both are kept.
    door2.client.check_in(&pass).unwrap();
    assert_eq!(door2.client.walk_in("w1").unwrap(), 2);

    // After both sync: one check-in for the pass, the double use reported,
    // and everyone sees how many are in the room.
    door1.sync().await.unwrap();
    door2.sync().await.unwrap();
    door1.sync().await.unwrap();
    let report = door1.client.checkins().unwrap();
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!((report[0].passes, report[0].walk_ins), (1, 1));
    assert_eq!(report[0].double_uses.len(), 1);
    assert_eq!(report[0].double_uses[0].user, "ann");
    assert_eq!(report[0].double_uses[0].doors.len(), 2);
    sync_until(&ann, "the room's count reaches the attendee", || {
        ann.client
            .seat_counts()
            .unwrap()
            .get("w1")
            .is_some_and(|c| c.checked_in == 2)
    })
    .await;
}

/// A full disk while a request is decided: the device's sync fails and its
/// request stays pending; the server keeps no decision it could not store
/// (its seats are rebuilt from the disk); once the disk recovers the
/// request is decided, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_the_server_cannot_store_is_rolled_back_and_made_again() {
    use lanyard_protocol::seats::doc as seatdoc;
    use lanyard_protocol::{DocId, EventId, UserId};
    use lanyard_store::testing::{Fault, FaultyStore};
    let store = Arc::new(FaultyStore::new(lanyard_store::MemoryStore::default()));
    let srv = TestServer::start_with_store(store.clone()).await.unwrap();
    let _org = organizer_with_workshop(&srv, 1).await;
    let ann = srv.device(Role::Attendee, "ann", "phone").unwrap();
    ann.client.set_note("w1", "bring a laptop").unwrap();
    ann.sync().await.unwrap();
    ann.client.reserve("w1").unwrap();
    store.arm(Fault::Writes);
    assert!(ann.sync().await.is_err(), "a sync whose writes failed");
    assert_eq!(state(&ann, "w1"), Some((ReservationState::Pending, None)));
    let seats = DocId::Seats(
        EventId::new(lanyard_tests::EVENT).unwrap(),
        UserId::new("ann").unwrap(),
    );
    let decided = |srv: &TestServer| {
        srv.server()
            .with_doc(&seats, |d| d.map_or(0, |d| seatdoc::read_decided(d).len()))
    };
    assert_eq!(decided(&srv), 0, "a decision the disk never got was kept");

    store.disarm(Fault::Writes);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ann.sync().await.is_err()
        || state(&ann, "w1").map(|s| s.0) == Some(ReservationState::Pending)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "never decided after recovery"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state(&ann, "w1"), Some((ReservationState::Confirmed, None)));
    assert_eq!(decided(&srv), 1, "decided exactly once");
}
