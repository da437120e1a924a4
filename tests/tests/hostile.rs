//! Hostile and broken clients over real QUIC: each attack is refused with the
//! right error, the server keeps running, and honest devices keep being
//! served while it goes on (their latency is measured and printed).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use automerge::transaction::Transactable as _;
use lanyard_protocol::testing::deflate_bomb;
use lanyard_protocol::wire::ErrorCode;
use lanyard_protocol::{ClientMsg, DocId, EventId, RefusalReason, Role, ServerMsg, UserId};
use lanyard_tests::{wait_for, RawClient, TestServer, EVENT};
use rand::{Rng as _, SeedableRng as _};

const SEED: u64 = 11;

/// What the deflate bombs inflate to: 512 MiB of zeros (about 0.5 MB on the wire).
const BOMB_INFLATED: usize = 512 << 20;

fn attendee_doc(user: &str) -> DocId {
    DocId::Attendee(EventId::new(EVENT).unwrap(), UserId::new(user).unwrap())
}

/// The error the server sent before closing, if any.
async fn error_from(raw: &mut RawClient) -> Option<(ErrorCode, String)> {
    loop {
        match raw.recv().await {
            Ok(Some(ServerMsg::Error { code, message })) => return Some((code, message)),
            Ok(Some(_)) => {}
            _ => return None,
        }
    }
}

/// A change of `user`'s attendee document, as a device would push it.
fn note_change(text: &str) -> Vec<u8> {
    let mut d = automerge::Automerge::new();
    let mut tx = d.transaction();
    tx.put(automerge::ROOT, "note", text).unwrap();
    tx.commit();
    d.get_last_local_change().unwrap().raw_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_handshake_gets_a_protocol_error() {
    let srv = TestServer::start().await.unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
    for len in [1usize, 7, 100, 5000] {
        let mut raw = RawClient::connect(&srv).await.unwrap();
        // A plausible length header, then noise.
        let mut bytes = (len as u32).to_be_bytes().to_vec();
        bytes.extend((0..len).map(|_| rng.random::<u8>()));
        raw.send_raw(&bytes).await.unwrap();
        let (code, message) = error_from(&mut raw).await.expect("an error frame");
        assert_eq!(
            code,
            ErrorCode::Protocol,
            "seed {SEED}, {len} bytes: {message}"
        );
    }
    // The server still serves an honest device.
    let phone = srv.device(Role::Attendee, "ann", "phone").unwrap();
    phone.client.set_note("t1", "still here").unwrap();
    phone.sync().await.unwrap();
    assert_eq!(phone.client.status().pending_changes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_is_closed_after_the_hello_timeout() {
    let srv = TestServer::start_with(|o| o.hello_timeout = Duration::from_secs(2))
        .await
        .unwrap();
    // Connections that never send a byte (their stream is never seen)...
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(RawClient::connect(&srv).await.unwrap());
    }
    // ...and streams that send half a frame header and stop.
    let mut trickle = Vec::new();
    for _ in 0..10 {
        let mut raw = RawClient::connect(&srv).await.unwrap();
        raw.send_raw(&[0, 0]).await.unwrap();
        trickle.push(raw);
    }
    for raw in &mut trickle {
        let (code, message) = error_from(raw).await.expect("an error frame");
        assert_eq!(code, ErrorCode::Protocol);
        assert!(message.contains("no Hello within 2 s"), "{message}");
    }
    for raw in &silent {
        let reason = tokio::time::timeout(Duration::from_secs(60), raw.conn.closed())
            .await
            .expect("the server closes a silent connection");
        assert!(
            matches!(reason, quinn::ConnectionError::ApplicationClosed(_)),
            "{reason:?}"
        );
    }
    let server = srv.server();
    wait_for("the slow connections are gone", || {
        server.open_connections() <= 10
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_document_can_be_neither_read_nor_written() {
    let srv = TestServer::start().await.unwrap();
    let bob = srv.device(Role::Attendee, "bob", "phone").unwrap();
    bob.client.set_note("t1", "bob's secret").unwrap();
    bob.sync().await.unwrap();

    let mut raw = RawClient::connect(&srv).await.unwrap();
    let ann = TestServer::claims(Role::Attendee, "ann", "phone");
    raw.hello(&srv, &ann, Vec::new()).await.unwrap();
    // Asking for bob's document.
    raw.send(&ClientMsg::Resync {
        doc: attendee_doc("bob"),
        have: Vec::new(),
    })
    .await
    .unwrap();
    // Writing into it: changes for a user (and device) the token does not name.
    raw.send(&ClientMsg::Push {
        doc: attendee_doc("bob"),
        changes: vec![note_change("written by ann")],
    })
    .await
    .unwrap();
    let mut refusals = Vec::new();
    while refusals.len() < 2 {
        match raw.recv().await.unwrap() {
            Some(ServerMsg::Refused {
                doc,
                reason,
                message,
                ..
            }) => refusals.push((doc, reason, message)),
            Some(ServerMsg::Update(u)) => {
                assert_ne!(u.doc, attendee_doc("bob"), "bob's document was sent to ann")
            }
            Some(_) => {}
            None => panic!("stream ended; refusals so far {refusals:?}"),
        }
    }
    assert!(
        refusals
            .iter()
            .all(|(doc, reason, _)| *doc == attendee_doc("bob")
                && *reason == RefusalReason::Forbidden),
        "{refusals:?}"
    );
    let held = srv
        .server()
        .with_doc(&attendee_doc("bob"), |d| {
            d.map(|d| lanyard_client_core::docs::NotesDoc::note(d, "t1"))
        })
        .unwrap();
    assert_eq!(held, "bob's secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_token_cannot_open_more_sessions_than_one_device() {
    let srv = TestServer::start().await.unwrap();
    let claims = TestServer::claims(Role::Attendee, "ann", "phone");
    let max = lanyard_protocol::Limits::default().max_sessions_per_device;
    let mut held = Vec::new();
    for _ in 0..max {
        let mut raw = RawClient::connect(&srv).await.unwrap();
        raw.hello(&srv, &claims, Vec::new()).await.unwrap();
        raw.recv_until(|m| matches!(m, ServerMsg::Welcome { .. }).then_some(()))
            .await
            .unwrap();
        held.push(raw);
    }
    let mut replay = RawClient::connect(&srv).await.unwrap();
    replay.hello(&srv, &claims, Vec::new()).await.unwrap();
    let (code, message) = error_from(&mut replay).await.expect("refused");
    assert_eq!(code, ErrorCode::TooManySessions);
    assert!(message.contains("device phone of ann"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_is_cut_off_and_a_deflate_bomb_refused() {
    let srv = TestServer::start().await.unwrap();
    let mut raw = RawClient::connect(&srv).await.unwrap();
    raw.hello(
        &srv,
        &TestServer::claims(Role::Attendee, "ann", "phone"),
        Vec::new(),
    )
    .await
    .unwrap();
    let mut flood = Vec::new();
    let resync = ClientMsg::Resync {
        doc: attendee_doc("ann"),
        have: Vec::new(),
    };
    for _ in 0..2000 {
        flood.extend(lanyard_protocol::wire::encode(&resync));
    }
    raw.send_raw(&flood).await.unwrap();
    let (code, message) = error_from(&mut raw).await.expect("cut off");
    assert_eq!(code, ErrorCode::RateLimited, "{message}");

    let mut raw = RawClient::connect(&srv).await.unwrap();
    raw.hello(
        &srv,
        &TestServer::claims(Role::Attendee, "ann", "laptop"),
        Vec::new(),
    )
    .await
    .unwrap();
    raw.send(&ClientMsg::Push {
        doc: attendee_doc("ann"),
        changes: vec![deflate_bomb(BOMB_INFLATED)],
    })
    .await
    .unwrap();
    let reason = raw
        .recv_until(|m| match m {
            ServerMsg::Refused { reason, .. } => Some(*reason),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(reason, RefusalReason::TooLarge);
}

/// Milliseconds from a local edit to its acknowledgement, for `n` edits.
async fn honest_round_trips(device: &lanyard_tests::Device, n: usize, tag: &str) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        device
            .client
            .append_note("t1", &format!("{tag}{i};"))
            .unwrap();
        let c = device.client.clone();
        wait_for("the edit is acknowledged", || {
            c.status().pending_changes == 0
        })
        .await
        .unwrap();
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    out
}

fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        at(0.5),
        at(0.95),
        at(1.0)
    )
}

/// Honest devices keep being served while attackers flood, trickle, send
/// garbage and bombs. Prints the honest round trip with and without the
/// attack (figures for the record, not assertions: the machine is shared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_devices_are_served_during_an_attack() {
    let srv = std::sync::Arc::new(
        TestServer::start_with(|o| o.hello_timeout = Duration::from_secs(2))
            .await
            .unwrap(),
    );
    let honest = srv.device(Role::Attendee, "ann", "phone").unwrap();
    let bg = honest
        .client
        .start_background(lanyard_client_core::BackgroundOptions::default());
    let c = honest.client.clone();
    wait_for("the honest phone connects", || c.status().connected)
        .await
        .unwrap();
    let quiet = honest_round_trips(&honest, 30, "q").await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for kind in 0..4u8 {
        let srv = std::sync::Arc::clone(&srv);
        let stop = std::sync::Arc::clone(&stop);
        attackers.push(tokio::spawn(async move {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED + u64::from(kind));
            let mut attacks = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut raw) = RawClient::connect(&srv).await else {
                    continue;
                };
                let user = format!("mallory{kind}");
                let claims = TestServer::claims(Role::Attendee, &user, "x");
                match kind {
                    0 => {
                        let noise: Vec<u8> = (0..2000).map(|_| rng.random()).collect();
                        let _ = raw.send_raw(&noise).await;
                    }
                    1 => {
                        let _ = raw.send_raw(&[0, 0, 0]).await; // and never more
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        attacks += 1;
                        std::mem::forget(raw); // keep the connection open
                        continue;
                    }
                    2 => {
                        let _ = raw.hello(&srv, &claims, Vec::new()).await;
                        let resync = ClientMsg::Resync {
                            doc: attendee_doc(&user),
                            have: Vec::new(),
                        };
                        let mut flood = Vec::new();
                        for _ in 0..1000 {
                            flood.extend(lanyard_protocol::wire::encode(&resync));
                        }
                        let _ = raw.send_raw(&flood).await;
                    }
                    _ => {
                        let _ = raw.hello(&srv, &claims, Vec::new()).await;
                        let _ = raw
                            .send(&ClientMsg::Push {
                                doc: attendee_doc(&user),
                                changes: vec![deflate_bomb(BOMB_INFLATED)],
                            })
                            .await;
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), error_from(&mut raw)).await;
                attacks += 1;
            }
            attacks
        }));
    }
    let attacked = honest_round_trips(&honest, 30, "a").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut attacks = 0;
    for a in attackers {
        attacks += a.await.unwrap();
    }
    println!(
        "honest edit round trip (30 edits each): quiet {}; under attack ({attacks} attacks) {}",
        summary(quiet),
        summary(attacked)
    );
    assert!(attacks > 0);
    assert_eq!(honest.client.status().pending_changes, 0);
    let note = honest.client.note("t1").unwrap();
    assert!(note.contains("a29;"), "every edit made it: {note}");
    bg.stop().await;
}

/// 0-RTT is off: a client that asks for it on a resumed connection gets a
/// full handshake, so no request (every one may write) can be replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_rtt_is_refused() {
    let srv = TestServer::start().await.unwrap();
    let pin = srv.identity().unwrap().pin();
    let mut tls =
        lanyard_client_core::tls::pinned_tls_config(&pin, lanyard_protocol::wire::ALPN).unwrap();
    tls.enable_early_data = true;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    // A first, full connection (it receives a resumption ticket)...
    let first = endpoint
        .connect(srv.addr(), "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = first.open_bi().await.unwrap();
    let claims = TestServer::claims(Role::Attendee, "ann", "phone");
    let hello = ClientMsg::Hello {
        event: EventId::new(EVENT).unwrap(),
        token: srv.identity().unwrap().sign(&claims),
        docs: Vec::new(),
        installation: [0; 16],
    };
    send.write_all(&lanyard_protocol::wire::encode(&hello))
        .await
        .unwrap();
    let mut header = [0u8; 4];
    recv.read_exact(&mut header).await.unwrap();
    first.close(0u32.into(), b"done");
    // ...then a resumed one that asks for 0-RTT.
    let connecting = endpoint.connect(srv.addr(), "localhost").unwrap();
    match connecting.into_0rtt() {
        Ok(_) => panic!("the server accepted 0-RTT"),
        Err(connecting) => {
            let conn = connecting.await.expect("a full handshake works");
            conn.close(0u32.into(), b"done");
        }
    }
}

/// Raw Automerge changes of an attendee document holding seat requests.
fn request_changes(doc_id: &DocId, n: usize) -> Vec<Vec<u8>> {
    use lanyard_protocol::seats::{doc as seatdoc, RequestKind};
    let mut d = automerge::Automerge::new();
    for k in 0..n {
        let kind = if k % 2 == 0 {
            RequestKind::Reserve
        } else {
            RequestKind::Cancel
        };
        seatdoc::write_request(
            &mut d,
            &doc_id.to_string(),
            &lanyard_protocol::RequestId::new(format!("flood-{k}")).unwrap(),
            &lanyard_protocol::SessionId::new("w1").unwrap(),
            kind,
            0,
        )
        .unwrap();
    }
    d.get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_outcomes_counts_check_ins_and_other_users_requests_cannot_be_forged() {
    let srv = TestServer::start().await.unwrap();
    let event = EventId::new(EVENT).unwrap();
    let mut raw = RawClient::connect(&srv).await.unwrap();
    let mallory = TestServer::claims(Role::Attendee, "mallory", "phone");
    raw.hello(&srv, &mallory, Vec::new()).await.unwrap();
    // An outcome "confirmed" written by the attendee into their own seats
    // document, the public counts, the doors' check-ins, and a request in
    // another attendee's document.
    let outcome = || {
        let mut d = automerge::Automerge::new();
        let mut tx = d.transaction();
        let seats = tx
            .put_object(automerge::ROOT, "seats", automerge::ObjType::Map)
            .unwrap();
        tx.put(&seats, "w1", "confirmed").unwrap();
        tx.commit();
        d.get_changes(&[])
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect::<Vec<_>>()
    };
    let targets = [
        DocId::Seats(event.clone(), UserId::new("mallory").unwrap()),
        DocId::SeatCounts(event.clone()),
        DocId::Checkins(event.clone()),
        attendee_doc("ann"),
    ];
    for doc in &targets {
        let changes = match doc {
            DocId::Attendee(..) => request_changes(doc, 1),
            _ => outcome(),
        };
        raw.send(&ClientMsg::Push {
            doc: doc.clone(),
            changes,
        })
        .await
        .unwrap();
    }
    // And reading the doors' check-ins.
    raw.send(&ClientMsg::Resync {
        doc: DocId::Checkins(event.clone()),
        have: Vec::new(),
    })
    .await
    .unwrap();
    let mut refused = Vec::new();
    while refused.len() < targets.len() + 1 {
        match raw.recv().await.unwrap() {
            Some(ServerMsg::Refused { doc, reason, .. }) => refused.push((doc, reason)),
            Some(ServerMsg::Update(u)) => assert!(
                !matches!(u.doc, DocId::Checkins(_)) || u.is_empty(),
                "the check-ins reached an attendee"
            ),
            Some(_) => {}
            None => panic!("stream ended; refusals so far {refused:?}"),
        }
    }
    assert!(
        refused
            .iter()
            .all(|(_, reason)| *reason == RefusalReason::Forbidden),
        "{refused:?}"
    );
    for doc in &targets {
        assert!(refused.iter().any(|(d, _)| d == doc), "{doc} not refused");
        let held = srv
            .server()
            .with_doc(doc, |d| d.map(|d| d.get_heads().len()));
        assert!(
            held.unwrap_or(0) == 0 || matches!(doc, DocId::SeatCounts(_)),
            "{doc}: {held:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_reserve_and_cancel_toggles_is_cut_off_while_honest_devices_get_seats() {
    let srv = TestServer::start().await.unwrap();
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    let start = i64::try_from(lanyard_tests::unix_now()).unwrap() + 86_400;
    org.client
        .add_session(lanyard_client_core::NewSession {
            id: "w1".into(),
            title: "Workshop".into(),
            room: "Room 1".into(),
            start_unix: start,
            end_unix: start + 3600,
            ..Default::default()
        })
        .unwrap();
    org.client.set_capacity("w1", 5).unwrap();
    org.sync().await.unwrap();

    let mut raw = RawClient::connect(&srv).await.unwrap();
    raw.hello(
        &srv,
        &TestServer::claims(Role::Attendee, "mallory", "phone"),
        Vec::new(),
    )
    .await
    .unwrap();
    // Every toggle its own push, as fast as the link takes them.
    let mut flood = Vec::new();
    for change in request_changes(&attendee_doc("mallory"), 600) {
        flood.extend(lanyard_protocol::wire::encode(&ClientMsg::Push {
            doc: attendee_doc("mallory"),
            changes: vec![change],
        }));
    }
    raw.send_raw(&flood).await.unwrap();
    // Meanwhile an honest attendee reserves and gets a seat.
    let ann = srv.device(Role::Attendee, "ann", "phone").unwrap();
    ann.sync().await.unwrap();
    ann.client.reserve("w1").unwrap();
    ann.sync().await.unwrap();
    let mine = ann.client.reservations().unwrap();
    assert_eq!(
        mine[0].state,
        lanyard_client_core::ReservationState::Confirmed
    );
    let (code, message) = error_from(&mut raw).await.expect("cut off");
    assert_eq!(code, ErrorCode::RateLimited, "{message}");
    // What the flood got decided never holds more seats than there are.
    let held = srv.server().with_doc(
        &DocId::Seats(
            EventId::new(EVENT).unwrap(),
            UserId::new("mallory").unwrap(),
        ),
        |d| {
            d.map(|d| {
                lanyard_protocol::seats::doc::read_outcomes(d, &UserId::new("mallory").unwrap())
                    .len()
            })
        },
    );
    assert!(held.unwrap_or(0) <= 1, "{held:?}");
}
