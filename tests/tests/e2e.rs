//! End-to-end tests over real QUIC on loopback: real server, real sled, real
//! client cores.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use automerge::transaction::Transactable as _;
use automerge::ReadDoc as _;
use lanyard_client_core::{BackgroundOptions, ClientError, NewSession, SessionStatus, SyncError};
use lanyard_protocol::wire::{self, ErrorCode};
use lanyard_protocol::{ClientMsg, DocId, EventId, RefusalReason, Role, ServerMsg, UserId};
use lanyard_store::testing::{Fault, FaultyStore};
use lanyard_store::MemoryStore;
use lanyard_tests::{unix_now, wait_for, Device, RawClient, TestServer, EVENT};

fn talk(id: &str, room: &str, start: i64) -> NewSession {
    NewSession {
        id: id.into(),
        title: format!("Talk {id}"),
        abstract_text: "About things".into(),
        room: room.into(),
        start_unix: start,
        end_unix: start + 1800,
        track: "Systems".into(),
        speakers: vec!["Ann".into()],
    }
}

const T0: i64 = 1_781_000_000;

fn agenda() -> DocId {
    DocId::Agenda(EventId::new(EVENT).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizer_change_reaches_a_connected_attendee_without_a_sync_call() {
    let srv = TestServer::start().await.unwrap();
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    let ann = srv.device(Role::Attendee, "ann", "phone").unwrap();
    org.client.set_event("Conf", "America/New_York").unwrap();
    org.client.add_session(talk("t1", "Hall A", T0)).unwrap();
    org.sync().await.unwrap();

    let bg = ann.client.start_background(BackgroundOptions::default());
    wait_for("the attendee to get the agenda", || {
        ann.client.session("t1").unwrap().is_some()
    })
    .await
    .unwrap();
    wait_for("the attendee to be connected and settled", || {
        let s = ann.client.status();
        s.connected && s.last_sync_unix.is_some()
    })
    .await
    .unwrap();

    org.client
        .move_session("t1", Some("Hall B".into()), None, None)
        .unwrap();
    org.sync().await.unwrap();
    wait_for("the move to be pushed", || {
        ann.client
            .session("t1")
            .unwrap()
            .is_some_and(|s| s.room == "Hall B" && s.status == SessionStatus::Moved)
    })
    .await
    .unwrap();
    // The push used the broadcast path (one encode for the up-to-date attendee).
    assert!(srv.server().stats().broadcast_frames >= 1);
    bg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_written_offline_reach_the_second_device_after_reconnect() {
    let mut srv = TestServer::start().await.unwrap();
    let phone = srv.device(Role::Attendee, "ann", "phone").unwrap();
    let tablet = srv.device(Role::Attendee, "ann", "tablet").unwrap();
    srv.stop().await;
    // Offline: the server is gone; edits still land on disk.
    phone
        .client
        .set_note("t1", "Bring questions about sled")
        .unwrap();
    phone.client.set_bookmark("t1", true).unwrap();
    let err = phone.client.sync(Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(err, SyncError::Unreachable(_)), "{err}");
    assert!(phone.client.status().pending_changes > 0);

    srv.restart().await.unwrap();
    phone.sync().await.unwrap();
    assert_eq!(phone.client.status().pending_changes, 0);
    tablet.sync().await.unwrap();
    assert_eq!(
        tablet.client.note("t1").unwrap(),
        "Bring questions about sled"
    );
    assert_eq!(tablet.client.bookmarks().unwrap(), vec!["t1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_offline_edits_of_one_note_merge_keeping_both() {
    let srv = TestServer::start().await.unwrap();
    let a = srv.device(Role::Attendee, "ann", "phone").unwrap();
    let b = srv.device(Role::Attendee, "ann", "tablet").unwrap();
    // Both devices start the same note offline, before any sync.
    a.client.set_note("t1", "from the phone.").unwrap();
    b.client.set_note("t1", "from the tablet.").unwrap();
    a.sync().await.unwrap();
    b.sync().await.unwrap();
    a.sync().await.unwrap();
    let text = a.client.note("t1").unwrap();
    assert!(
        text.contains("from the phone.") && text.contains("from the tablet."),
        "{text}"
    );
    assert_eq!(text, b.client.note("t1").unwrap());

    // Then both edit different ends of the shared text offline.
    let base = text.clone();
    a.client.set_note("t1", &format!("PHONE {base}")).unwrap();
    b.client.append_note("t1", " TABLET").unwrap();
    a.sync().await.unwrap();
    b.sync().await.unwrap();
    a.sync().await.unwrap();
    let merged = a.client.note("t1").unwrap();
    assert_eq!(merged, format!("PHONE {base} TABLET"));
    assert_eq!(merged, b.client.note("t1").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_attendee_agenda_change_is_refused_and_the_server_copy_is_unchanged() {
    let srv = TestServer::start().await.unwrap();
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    org.client.add_session(talk("t1", "Hall A", T0)).unwrap();
    org.sync().await.unwrap();
    let heads_before = srv.server().with_doc(&agenda(), |d| d.unwrap().get_heads());

    // The attendee API refuses locally.
    let ann = srv.device(Role::Attendee, "ann", "phone").unwrap();
    ann.sync().await.unwrap();
    let err = ann.client.cancel_session("t1").unwrap_err();
    assert!(matches!(err, ClientError::OrganizersOnly), "{err}");

    // A forged client skips that check and sends an agenda change itself.
    let mut raw = RawClient::connect(&srv).await.unwrap();
    raw.hello(
        &srv,
        &TestServer::claims(Role::Attendee, "ann", "forged"),
        vec![],
    )
    .await
    .unwrap();
    let (server_changes, _heads) = raw
        .recv_until(|m| match m {
            ServerMsg::Welcome { docs, .. } => docs
                .iter()
                .find(|d| d.doc == agenda())
                .map(|d| (d.changes.clone(), d.heads.clone())),
            _ => None,
        })
        .await
        .unwrap();
    let mut doc = automerge::Automerge::new();
    for c in &server_changes {
        doc.apply_changes([automerge::Change::try_from(c.as_slice()).unwrap()])
            .unwrap();
    }
    let mut tx = doc.transaction();
    let sessions = match tx.get(automerge::ROOT, "sessions").unwrap() {
        Some((_, id)) => id,
        None => panic!("agenda has sessions"),
    };
    tx.delete(&sessions, "t1").unwrap();
    tx.commit();
    let forged = doc.get_last_local_change().unwrap();
    raw.send(&ClientMsg::Push {
        doc: agenda(),
        changes: vec![forged.raw_bytes().to_vec()],
    })
    .await
    .unwrap();
    let (reason, message, refused) = raw
        .recv_until(|m| match m {
            ServerMsg::Refused {
                reason,
                message,
                changes,
                ..
            } => Some((*reason, message.clone(), changes.clone())),
            ServerMsg::Ack { doc, .. } if *doc == agenda() => panic!("forged change acknowledged"),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(reason, RefusalReason::Forbidden);
    assert!(
        message.contains("agenda/conf"),
        "refusal names the document: {message}"
    );
    assert_eq!(refused, vec![forged.hash().0]);
    let heads_after = srv.server().with_doc(&agenda(), |d| d.unwrap().get_heads());
    assert_eq!(heads_before, heads_after);
    // And every device still sees the session.
    ann.sync().await.unwrap();
    assert!(ann.client.session("t1").unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attendee_b_never_receives_attendee_a_document() {
    let srv = TestServer::start().await.unwrap();
    let a = srv.device(Role::Attendee, "ann", "phone").unwrap();
    a.client.set_note("t1", "ann's secret note").unwrap();
    a.sync().await.unwrap();
    let a_doc = DocId::Attendee(EventId::new(EVENT).unwrap(), UserId::new("ann").unwrap());
    assert!(srv.server().with_doc(&a_doc, |d| d.is_some()));

    // Through the client core: B sees only its own notes.
    let b = srv.device(Role::Attendee, "bob", "phone").unwrap();
    b.sync().await.unwrap();
    assert!(b.client.notes().unwrap().is_empty());

    // A hostile B asks for A's document in every way the protocol allows.
    let mut raw = RawClient::connect(&srv).await.unwrap();
    raw.hello(
        &srv,
        &TestServer::claims(Role::Attendee, "bob", "x"),
        vec![lanyard_protocol::DocDigest {
            doc: a_doc.clone(),
            heads: vec![],
            base: vec![],
        }],
    )
    .await
    .unwrap();
    raw.send(&ClientMsg::Resync {
        doc: a_doc.clone(),
        have: vec![],
    })
    .await
    .unwrap();
    let mut refusals = 0;
    while refusals < 2 {
        match raw.recv().await.unwrap().expect("stream open") {
            ServerMsg::Welcome { docs, .. } => {
                assert!(docs.iter().all(|d| d.doc != a_doc), "welcome holds A's doc");
            }
            ServerMsg::Update(u) => assert_ne!(u.doc, a_doc, "B received A's doc"),
            ServerMsg::Refused { doc, reason, .. } => {
                assert_eq!(doc, a_doc);
                assert_eq!(reason, RefusalReason::Forbidden);
                refusals += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // A's later edits are not pushed to B either.
    a.client.append_note("t1", " more").unwrap();
    a.sync().await.unwrap();
    raw.send(&ClientMsg::Resync {
        doc: agenda(),
        have: vec![],
    })
    .await
    .unwrap();
    let got = raw
        .recv_until(|m| match m {
            ServerMsg::Update(u) => Some(u.doc.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(
        got,
        agenda(),
        "the next update B gets is the agenda, not A's notes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_wrongly_signed_and_other_event_tokens_are_refused_clearly() {
    let srv = TestServer::start().await.unwrap();

    // Expired.
    let mut claims = TestServer::claims(Role::Attendee, "ann", "phone");
    claims.expires_at = unix_now() - 10;
    let dir = tempfile::tempdir().unwrap();
    let c = lanyard_client_core::Client::open(dir.path().join("db")).unwrap();
    c.join(&srv.link_for(&claims).unwrap()).unwrap();
    let err = c.sync(Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(err, SyncError::TokenExpired(_)), "{err}");
    assert!(err.to_string().contains("token expired"), "{err}");

    // Signed by another server's key.
    let other = tempfile::tempdir().unwrap();
    let other_id = lanyard_server::Identity::load_or_create(other.path()).unwrap();
    let good = TestServer::claims(Role::Organizer, "mallory", "laptop");
    let link = lanyard_protocol::JoinLink {
        servers: vec![srv.addr().to_string()],
        event: good.event.clone(),
        token: other_id.sign(&good),
        pin: srv.identity().unwrap().pin(),
    };
    let dir2 = tempfile::tempdir().unwrap();
    let c2 = lanyard_client_core::Client::open(dir2.path().join("db")).unwrap();
    c2.join(&link.to_string()).unwrap();
    let err = c2.sync(Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(err, SyncError::Unauthorized(_)), "{err}");
    assert!(err.to_string().contains("signature"), "{err}");

    // A valid token of another event, presented for this one.
    let mut raw = RawClient::connect(&srv).await.unwrap();
    let mut other_event = TestServer::claims(Role::Organizer, "org", "laptop");
    other_event.event = EventId::new("other-conf").unwrap();
    raw.hello(&srv, &other_event, vec![]).await.unwrap();
    match raw.recv().await.unwrap() {
        Some(ServerMsg::Error { code, message }) => {
            assert_eq!(code, ErrorCode::WrongEvent);
            assert!(message.contains("other-conf"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(
        raw.recv().await.unwrap().is_none(),
        "the stream is closed after the error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_or_oversized_frames_close_that_stream_and_the_server_keeps_serving() {
    let srv = TestServer::start().await.unwrap();
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();

    // Oversized: a header announcing 1 GiB.
    let mut big = RawClient::connect(&srv).await.unwrap();
    big.send_raw(&(1u32 << 30).to_be_bytes()).await.unwrap();
    match big.recv().await.unwrap() {
        Some(ServerMsg::Error { code, .. }) => assert_eq!(code, ErrorCode::FrameTooLarge),
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    assert!(big.recv().await.unwrap().is_none());

    // Truncated: a header for 100 bytes, 10 bytes, then the end of the stream,
    // on a second stream of the same connection.
    let mut cut = big.another_stream().await.unwrap();
    let mut bytes = 100u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 10]);
    cut.send_raw(&bytes).await.unwrap();
    cut.finish().unwrap();
    match cut.recv().await.unwrap() {
        Some(ServerMsg::Error { code, .. }) => assert_eq!(code, ErrorCode::Truncated),
        other => panic!("expected Truncated, got {other:?}"),
    }

    // Garbage that frames correctly but is no message.
    let mut junk = big.another_stream().await.unwrap();
    junk.send_raw(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    match junk.recv().await.unwrap() {
        Some(ServerMsg::Error { code, .. }) => assert_eq!(code, ErrorCode::Protocol),
        other => panic!("expected a protocol error, got {other:?}"),
    }

    // Meanwhile everyone else is served.
    org.client.add_session(talk("t1", "Hall A", T0)).unwrap();
    org.sync().await.unwrap();
    assert_eq!(org.client.status().pending_changes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_loses_no_acknowledged_change() {
    let mut srv = TestServer::start().await.unwrap();
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    let ann = srv.device(Role::Attendee, "ann", "phone").unwrap();
    for i in 0..20 {
        org.client
            .add_session(talk(&format!("t{i}"), "Hall A", T0 + i * 3600))
            .unwrap();
    }
    org.client.announce("Welcome!").unwrap();
    ann.client.set_note("t3", "great talk").unwrap();
    org.sync().await.unwrap();
    ann.sync().await.unwrap();
    assert_eq!(org.client.status().pending_changes, 0);
    let agenda_heads = srv.server().with_doc(&agenda(), |d| d.unwrap().get_heads());

    srv.restart().await.unwrap();
    let after = srv
        .server()
        .with_doc(&agenda(), |d| d.map(|d| d.get_heads()));
    assert_eq!(after, Some(agenda_heads));
    let fresh = srv.device(Role::Attendee, "ann", "tablet").unwrap();
    fresh.sync().await.unwrap();
    assert_eq!(fresh.client.sessions().unwrap().len(), 20);
    assert_eq!(fresh.client.note("t3").unwrap(), "great talk");
    assert_eq!(fresh.client.announcements().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_another_protocol_version_gets_a_clear_error() {
    let srv = TestServer::start().await.unwrap();
    let err = match RawClient::connect_alpn(&srv, b"lanyard/999").await {
        Ok(_) => panic!("connected with an unknown protocol version"),
        Err(e) => format!("{e:#}"),
    };
    // TLS alert 120, no_application_protocol: the client core maps it to
    // SyncError::UnsupportedVersion (unit-tested in client-core's sync module).
    assert!(
        err.contains("error 120") && err.contains("known protocol"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_restart_keeps_unsynced_edits() {
    let srv = TestServer::start().await.unwrap();
    let mut phone = srv.device(Role::Attendee, "ann", "phone").unwrap();
    phone.client.set_note("t1", "typed in a breakout").unwrap();
    phone.reopen().unwrap();
    assert_eq!(phone.client.note("t1").unwrap(), "typed in a breakout");
    assert!(phone.client.status().pending_changes > 0);
    phone.sync().await.unwrap();
    assert_eq!(phone.client.status().pending_changes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_on_the_wire_for_one_room_change_pushed_to_one_attendee() {
    let srv = TestServer::start().await.unwrap();
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    org.client.set_event("Conf", "America/New_York").unwrap();
    for i in 0..30 {
        org.client
            .add_session(talk(&format!("t{i}"), "Hall A", T0 + i * 3600))
            .unwrap();
    }
    org.sync().await.unwrap();

    let mut raw = RawClient::connect(&srv).await.unwrap();
    raw.hello(
        &srv,
        &TestServer::claims(Role::Attendee, "ann", "phone"),
        vec![],
    )
    .await
    .unwrap();
    raw.recv_until(|m| matches!(m, ServerMsg::Welcome { .. }).then_some(()))
        .await
        .unwrap();
    // Let the handshake's trailing packets and ACKs settle before measuring.
    let settled = raw.conn.stats().udp_rx.bytes;
    wait_for("quiet link", || raw.conn.stats().udp_rx.bytes == settled)
        .await
        .unwrap();
    let before = raw.conn.stats();

    org.client
        .move_session("t7", Some("Hall B".into()), None, None)
        .unwrap();
    org.sync().await.unwrap();
    let update = raw
        .recv_until(|m| match m {
            ServerMsg::Update(u) => Some(u.clone()),
            _ => None,
        })
        .await
        .unwrap();
    let after = raw.conn.stats();
    let change_bytes: usize = update.changes.iter().map(Vec::len).sum();
    let frame_bytes = wire::encode(&ServerMsg::Update(update.clone())).len();
    let udp_bytes = after.udp_rx.bytes - before.udp_rx.bytes;
    println!(
        "room change pushed to one attendee: automerge change {change_bytes} B, \
         frame {frame_bytes} B, UDP payload received {udp_bytes} B in {} datagrams",
        after.udp_rx.datagrams - before.udp_rx.datagrams
    );
    assert_eq!(
        update.changes.len(),
        1,
        "one change, not the whole document"
    );
    assert!(
        frame_bytes < change_bytes + 120,
        "framing overhead stays small"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_certificate_does_not_match_the_pin_is_refused() {
    let srv = TestServer::start().await.unwrap();
    let claims = TestServer::claims(Role::Attendee, "ann", "phone");
    let link = lanyard_protocol::JoinLink {
        servers: vec![srv.addr().to_string()],
        event: claims.event.clone(),
        token: srv.identity().unwrap().sign(&claims),
        pin: lanyard_protocol::cert_pin(b"some other certificate"),
    };
    let dir = tempfile::tempdir().unwrap();
    let c = lanyard_client_core::Client::open(dir.path().join("db")).unwrap();
    c.join(&link.to_string()).unwrap();
    c.set_note("t1", "kept").unwrap();
    let err = c.sync(Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(err, SyncError::PinMismatch), "{err:?}");
    assert_eq!(c.note("t1").unwrap(), "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_sync_reconnects_after_a_server_restart_and_keeps_receiving_pushes() {
    let mut srv = TestServer::start().await.unwrap();
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    let ann = srv.device(Role::Attendee, "ann", "phone").unwrap();
    org.client.add_session(talk("t1", "Hall A", T0)).unwrap();
    org.sync().await.unwrap();
    let bg = ann.client.start_background(BackgroundOptions {
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_secs(1),
        stable_after: Duration::from_secs(5),
        jitter: true,
    });
    wait_for("first sync", || ann.client.session("t1").unwrap().is_some())
        .await
        .unwrap();

    srv.restart().await.unwrap();
    // A note typed while the connection was down is uploaded after reconnecting.
    ann.client
        .set_note("t1", "typed during the outage")
        .unwrap();
    org.client.cancel_session("t1").unwrap();
    org.sync().await.unwrap();
    wait_for("the cancellation to be pushed after the reconnect", || {
        ann.client
            .session("t1")
            .unwrap()
            .is_some_and(|s| s.status == SessionStatus::Cancelled)
    })
    .await
    .unwrap();
    wait_for("the note to be acknowledged", || {
        ann.client.status().pending_changes == 0
    })
    .await
    .unwrap();
    let tablet = srv.device(Role::Attendee, "ann", "tablet").unwrap();
    tablet.sync().await.unwrap();
    assert_eq!(tablet.client.note("t1").unwrap(), "typed during the outage");
    bg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_up_to_date_device_costs_one_exchange() {
    let srv = TestServer::start().await.unwrap();
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    for i in 0..10 {
        org.client
            .add_session(talk(&format!("t{i}"), "Hall A", T0 + i * 3600))
            .unwrap();
    }
    org.sync().await.unwrap();
    let ann = srv.device(Role::Attendee, "ann", "phone").unwrap();
    let first = ann.sync().await.unwrap();
    assert!(first.received_changes > 0);

    // Replay what the device would send on its next connect, over a raw stream,
    // and count what comes back: one Welcome with no changes.
    let agenda_heads = srv.server().with_doc(&agenda(), |d| d.unwrap().get_heads());
    let mut raw = RawClient::connect(&srv).await.unwrap();
    let heads: Vec<[u8; 32]> = agenda_heads.iter().map(|h| h.0).collect();
    raw.hello(
        &srv,
        &TestServer::claims(Role::Attendee, "ann", "phone"),
        vec![lanyard_protocol::DocDigest {
            doc: agenda(),
            heads: heads.clone(),
            base: heads,
        }],
    )
    .await
    .unwrap();
    match raw.recv().await.unwrap() {
        Some(ServerMsg::Welcome { docs, .. }) => {
            assert!(
                docs.iter().all(|d| d.changes.is_empty()),
                "nothing to send: {docs:?}"
            );
        }
        other => panic!("expected one Welcome, got {other:?}"),
    }
    let second = ann.sync().await.unwrap();
    assert_eq!(second.received_changes, 0);
}

/// The phone's sync fails with the server's `Internal` error naming `cause`,
/// and its note stays pending.
async fn sync_fails_to_store(phone: &Device, cause: &str) {
    let err = phone
        .client
        .sync(Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SyncError::Server { code: ErrorCode::Internal, message } if message.contains(cause)),
        "{err:?}"
    );
    assert!(
        phone.client.status().pending_changes > 0,
        "the note stays pending"
    );
}

/// Once the disk works again, the phone's note is acknowledged and reaches
/// another device of the same user.
async fn note_lands_after_recovery(srv: &TestServer, phone: &Device, note: &str) {
    phone.sync().await.unwrap();
    assert_eq!(phone.client.status().pending_changes, 0);
    let tablet = srv.device(Role::Attendee, "ann", "tablet").unwrap();
    tablet.sync().await.unwrap();
    assert_eq!(tablet.client.note("t1").unwrap(), note);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_on_the_server_is_a_clear_error_and_loses_nothing() {
    let store = std::sync::Arc::new(FaultyStore::new(MemoryStore::default()));
    let srv = TestServer::start_with_store(store.clone()).await.unwrap();
    let phone = srv.device(Role::Attendee, "ann", "phone").unwrap();
    phone
        .client
        .set_note("t1", "written while the server's disk is full")
        .unwrap();
    store.arm(Fault::Writes);
    sync_fails_to_store(&phone, "no space left").await;
    let own = DocId::Attendee(EventId::new(EVENT).unwrap(), UserId::new("ann").unwrap());
    assert!(
        srv.server()
            .with_doc(&own, |d| d.is_none_or(|d| d.get_heads().is_empty())),
        "the server rolled back what it could not store"
    );

    store.disarm(Fault::Writes);
    note_lands_after_recovery(&srv, &phone, "written while the server's disk is full").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_acknowledges_nothing_and_the_next_one_delivers() {
    let store = std::sync::Arc::new(FaultyStore::new(MemoryStore::default()));
    let srv = TestServer::start_with_store(store.clone()).await.unwrap();
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    org.client.add_session(talk("t1", "Hall A", T0)).unwrap();
    org.sync().await.unwrap();
    let phone = srv.device(Role::Attendee, "ann", "phone").unwrap();
    phone.sync().await.unwrap();
    // The append succeeds, the flush behind it fails: no acknowledgement.
    store.arm(Fault::Flushes);
    phone
        .client
        .set_note("t1", "typed while the disk filled up")
        .unwrap();
    sync_fails_to_store(&phone, "disk full").await;
    // The disk recovers: the retried flush makes the note durable and the
    // device's next sync is acknowledged; another device of ann gets it.
    store.disarm(Fault::Flushes);
    note_lands_after_recovery(&srv, &phone, "typed while the disk filled up").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_sharing_one_endpoint_each_keep_their_own_session() {
    let srv = TestServer::start().await.unwrap();
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    org.client.add_session(talk("t1", "Hall A", T0)).unwrap();
    org.sync().await.unwrap();

    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let ann = srv.device(Role::Attendee, "ann", "phone").unwrap();
    let bob = srv.device(Role::Attendee, "bob", "phone").unwrap();
    for d in [&ann, &bob] {
        d.client.share_endpoint(endpoint.clone());
    }
    ann.client.set_note("t1", "ann's secret").unwrap();
    bob.client.set_note("t1", "bob's secret").unwrap();
    let bg_ann = ann.client.start_background(BackgroundOptions::default());
    let bg_bob = bob.client.start_background(BackgroundOptions::default());
    wait_for("both to be connected and settled", || {
        [&ann, &bob].iter().all(|d| {
            let s = d.client.status();
            s.connected && s.pending_changes == 0 && d.client.session("t1").unwrap().is_some()
        })
    })
    .await
    .unwrap();
    assert_eq!(
        endpoint.open_connections(),
        2,
        "two connections on one socket"
    );

    // A one-shot sync on the shared endpoint closes its connection, not the socket.
    ann.sync().await.unwrap();
    org.client
        .move_session("t1", Some("Hall B".into()), None, None)
        .unwrap();
    org.sync().await.unwrap();
    wait_for("the move to reach both", || {
        [&ann, &bob].iter().all(|d| {
            d.client
                .session("t1")
                .unwrap()
                .is_some_and(|s| s.room == "Hall B")
        })
    })
    .await
    .unwrap();
    // Each kept its own document: no note crossed over.
    assert_eq!(ann.client.note("t1").unwrap(), "ann's secret");
    assert_eq!(bob.client.note("t1").unwrap(), "bob's secret");
    bg_ann.stop().await;
    bg_bob.stop().await;
}

/// The app tells the core the network changed: a device waiting out a long
/// backoff reconnects at once, and a live connection moves to a new socket
/// (QUIC migration) and keeps receiving pushes without reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_change_reconnects_at_once_and_migrates_a_live_connection() {
    let mut srv = TestServer::start().await.unwrap();
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    let ann = srv.device(Role::Attendee, "ann", "phone").unwrap();
    org.client.add_session(talk("t1", "Hall A", T0)).unwrap();
    org.sync().await.unwrap();
    // A backoff far longer than the test's deadline: only the network
    // change can bring the device back in time.
    let bg = ann.client.start_background(BackgroundOptions {
        backoff_base: Duration::from_secs(3600),
        backoff_cap: Duration::from_secs(3600),
        jitter: false,
        ..BackgroundOptions::default()
    });
    let c = ann.client.clone();
    wait_for("the phone connects", || c.status().connected)
        .await
        .unwrap();

    // A live connection moves to a fresh socket and stays up.
    let status_rx = ann.client.status_changes();
    let retries = ann.client.status().retries;
    ann.client.network_changed();
    org.client
        .move_session("t1", Some("Hall B".into()), None, None)
        .unwrap();
    org.sync().await.unwrap();
    wait_for("the move reaches the migrated connection", || {
        c.session("t1").unwrap().is_some_and(|s| s.room == "Hall B")
    })
    .await
    .unwrap();
    assert_eq!(
        ann.client.status().retries,
        retries,
        "no reconnect was needed"
    );
    assert!(
        status_rx.has_changed().unwrap(),
        "status listeners were told"
    );

    // The server goes away: the phone backs off for an hour...
    srv.stop().await;
    wait_for("the phone notices", || {
        let s = c.status();
        !s.connected && s.retries > retries
    })
    .await
    .unwrap();
    srv.restart().await.unwrap();
    // ...until the network changes.
    ann.client.network_changed();
    wait_for("the phone reconnects at once", || c.status().connected)
        .await
        .unwrap();
    bg.stop().await;
}
