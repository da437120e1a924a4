//! A device that stops reading costs the server a bounded amount of memory,
//! and converges when it reads again (issue 14, bounded outboxes), over real
//! QUIC: the device's receive windows are small, so the server's writes to it
//! block and its outbox is what would grow.

use std::sync::Arc;
use std::time::Duration;

use automerge::ReadDoc as _;
use lanyard_protocol::wire;
use lanyard_protocol::{ClientSession, DocId, EventId, Replica, Role, ServerMsg};
use lanyard_tests::{wait_for, TestServer, DEADLINE, EVENT};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

/// The outbox bound of this test's server.
const BOUND: usize = 32 * 1024;

/// Announcements the organizer makes while the device does not read.
const CHANGES: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_stops_reading_costs_bounded_memory_and_converges_when_it_reads_again() {
    let srv = TestServer::start_with(|o| o.outbox_bytes = BOUND)
        .await
        .unwrap();
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    org.client.announce("Doors open at nine").unwrap();
    org.sync().await.unwrap();

    // The device: small receive windows, a Hello, then it reads nothing.
    let pin = srv.identity().unwrap().pin();
    let mut config =
        lanyard_client_core::tls::pinned_client_config_with_alpn(&pin, wire::ALPN).unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(8192u32.into())
        .receive_window(16384u32.into())
        .keep_alive_interval(Some(Duration::from_secs(1)));
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    let conn = endpoint
        .connect(srv.addr(), "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let token = srv
        .identity()
        .unwrap()
        .sign(&TestServer::claims(Role::Attendee, "ann", "phone"));
    let event = EventId::new(EVENT).unwrap();
    let mut replica = Replica::new(automerge::ActorId::from(&[9u8; 16][..]));
    let (mut session, hello) = ClientSession::start(event.clone(), token, &replica);
    for m in &hello {
        send.write_all(&wire::encode(m)).await.unwrap();
    }
    let server = srv.server();
    wait_for("the device is welcomed", || {
        server.snapshot().sessions >= 1 && server.open_connections() >= 1
    })
    .await
    .unwrap();

    // The organizer makes 1,000 changes, each pushed on its own, while the
    // device reads nothing.
    let bg = org
        .client
        .start_background(lanyard_client_core::BackgroundOptions::default());
    let text = "x".repeat(300);
    for i in 0..CHANGES {
        org.client.announce(&format!("{i}: {text}")).unwrap();
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let c = org.client.clone();
    wait_for("the organizer's changes are all acknowledged", || {
        c.status().pending_changes == 0
    })
    .await
    .unwrap();
    bg.stop().await;
    let agenda = DocId::Agenda(event);
    let change_bytes: usize = server.with_doc(&agenda, |d| {
        d.expect("the agenda")
            .get_changes(&[])
            .iter()
            .map(|c| c.raw_bytes().len())
            .sum()
    });
    let peak = server.outbox_peak_bytes();
    println!(
        "outbox peak {peak} B (bound {BOUND} B) for {change_bytes} B of changes made while \
         the device did not read"
    );
    assert!(
        change_bytes > 4 * BOUND,
        "the test makes more than the bound: {change_bytes}"
    );
    // The bound, plus one catch-up batch or frame that is not fan-out.
    assert!(
        peak <= BOUND + lanyard_protocol::server::CATCH_UP_CHUNK_BYTES,
        "an outbox held {peak} B with a bound of {BOUND} B"
    );

    // The device reads again: everything the server holds arrives.
    let (tx, mut rx) = mpsc::unbounded_channel();
    lanyard_tests::forward_frames(recv, tx.clone());
    {
        let conn = conn.clone();
        tokio::spawn(async move {
            while let Ok(uni) = conn.accept_uni().await {
                lanyard_tests::forward_frames(uni, tx.clone());
            }
        });
    }
    let want = server.with_doc(&agenda, |d| d.expect("the agenda").get_heads());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let holds = replica
            .get(&agenda)
            .is_some_and(|rd| want.iter().all(|h| rd.doc.get_change_by_hash(h).is_some()));
        if holds {
            break;
        }
        let body = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("the device converges before the deadline")
            .expect("the connection stays open");
        let msg: ServerMsg = wire::decode(&body).unwrap();
        let out = session.handle(&mut replica, msg).unwrap();
        for m in &out.send {
            send.write_all(&wire::encode(m)).await.unwrap();
        }
    }
    let held = replica.get(&agenda).unwrap().doc.get_changes(&[]).len();
    assert!(held > CHANGES, "the device holds {held} changes");
    let _ = send.shutdown().await;
    conn.close(0u32.into(), b"done");
}
