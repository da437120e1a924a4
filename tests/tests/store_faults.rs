//! Storage faults on the device never lose data (issue 13): a failing read,
//! a failing write and a failing flush, each followed by more edits and a
//! restart, over the real sled store wrapped in the fault-injecting
//! `FaultyStore`, and a sync whose local writes fail.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use lanyard_client_core::{Client, ClientError, NewSession};
use lanyard_protocol::Role;
use lanyard_store::testing::{Fault, FaultyStore};
use lanyard_store::SledStore;
use lanyard_tests::TestServer;

type Faulty = Arc<FaultyStore<SledStore>>;

fn open(path: &Path) -> (Client, Faulty) {
    let store = Arc::new(FaultyStore::new(SledStore::open(path).unwrap()));
    let client = Client::with_store(store.clone()).unwrap();
    (client, store)
}

/// A device over a faulty sled store, joined as attendee ann.
fn device(srv: &TestServer, path: &Path) -> (Client, Faulty) {
    let (client, store) = open(path);
    srv.join(&client, Role::Attendee, "ann", "phone").unwrap();
    (client, store)
}

/// Restarts the device: everything it holds comes back from disk.
fn restart(client: Client, store: Faulty, path: &Path) -> (Client, Faulty) {
    drop(client);
    drop(store);
    open(path)
}

/// An organizer device that published session t1, "Keynote" in Hall A.
async fn publish_keynote(srv: &TestServer) -> lanyard_tests::Device {
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    org.client
        .add_session(NewSession {
            id: "t1".into(),
            title: "Keynote".into(),
            room: "Hall A".into(),
            start_unix: 1_781_000_000,
            end_unix: 1_781_003_600,
            ..Default::default()
        })
        .unwrap();
    org.sync().await.unwrap();
    org
}

fn is_storage_error(r: Result<(), ClientError>) {
    match r {
        Err(ClientError::Store(e)) => assert!(!e.to_string().is_empty()),
        other => panic!("expected a storage error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_reports_the_error_and_later_edits_and_a_restart_lose_nothing() {
    let srv = TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (client, store) = device(&srv, &path);
    client
        .set_note("t1", "typed before the disk filled")
        .unwrap();
    store.arm(Fault::Writes);
    is_storage_error(client.set_note("t2", "lost to a full disk"));
    is_storage_error(client.set_bookmark("t1", true));
    // What the failed calls did is not shown as if it were saved.
    assert_eq!(client.note("t2").unwrap(), "");
    assert!(client.bookmarks().unwrap().is_empty());
    assert_eq!(client.note("t1").unwrap(), "typed before the disk filled");
    store.disarm(Fault::Writes);
    client.append_note("t1", ", and after").unwrap();
    let (client, _store) = restart(client, store, &path);
    assert_eq!(
        client.note("t1").unwrap(),
        "typed before the disk filled, and after"
    );
    assert_eq!(client.note("t2").unwrap(), "");
}

/// The bug of `reload_doc`: a write failed, the document was re-read from
/// disk to undo it, the read failed too, and the device carried on with an
/// empty document that the next edit wrote over the stored one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_read_after_a_failing_write_never_empties_the_notes() {
    let srv = TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (client, store) = device(&srv, &path);
    for i in 0..5 {
        client
            .set_note(&format!("t{i}"), &format!("offline note {i}"))
            .unwrap();
    }
    store.arm(Fault::Writes);
    store.arm(Fault::Reads);
    is_storage_error(client.set_note("t9", "while the disk fails"));
    store.disarm(Fault::Reads);
    store.disarm(Fault::Writes);
    client.set_note("t5", "after the disk came back").unwrap();
    assert_eq!(client.notes().unwrap().len(), 6);
    let (client, _store) = restart(client, store, &path);
    let notes = client.notes().unwrap();
    assert_eq!(notes.len(), 6, "{notes:?}");
    for i in 0..5 {
        assert_eq!(
            client.note(&format!("t{i}")).unwrap(),
            format!("offline note {i}")
        );
    }
    assert_eq!(client.note("t5").unwrap(), "after the disk came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_read_at_open_is_a_clear_error_and_changes_nothing() {
    let srv = TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (client, store) = device(&srv, &path);
    client.set_note("t1", "kept").unwrap();
    drop(client);
    store.arm(Fault::Reads);
    let err = Client::with_store(store.clone()).unwrap_err();
    assert!(err.to_string().contains("injected read failure"), "{err}");
    store.disarm(Fault::Reads);
    let client = Client::with_store(store.clone()).unwrap();
    assert_eq!(client.note("t1").unwrap(), "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_flush_reports_the_error_and_keeps_every_edit_after_a_restart() {
    let srv = TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (client, store) = device(&srv, &path);
    client.set_note("t1", "first").unwrap();
    store.arm(Fault::Flushes);
    // The bytes reached sled but their flush failed: the call reports it.
    is_storage_error(client.set_note("t2", "written, flush failed"));
    store.disarm(Fault::Flushes);
    client.set_note("t3", "after").unwrap();
    client.set_bookmark("t3", true).unwrap();
    let (client, _store) = restart(client, store, &path);
    assert_eq!(client.note("t1").unwrap(), "first");
    assert_eq!(client.note("t3").unwrap(), "after");
    assert_eq!(client.bookmarks().unwrap(), vec!["t3"]);
    // The edit whose flush failed may come back (its bytes were written);
    // it never corrupts the document.
    let t2 = client.note("t2").unwrap();
    assert!(t2.is_empty() || t2 == "written, flush failed", "{t2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_whose_local_writes_fail_reports_it_and_the_next_one_completes() {
    let srv = TestServer::start().await.unwrap();
    publish_keynote(&srv).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (client, store) = device(&srv, &path);
    client.set_note("t1", "my note").unwrap();
    store.arm(Fault::Writes);
    let err = client
        .sync(std::time::Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no space left"), "{err}");
    store.disarm(Fault::Writes);
    client
        .sync(std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(client.status().pending_changes, 0);
    let (client, _store) = restart(client, store, &path);
    assert_eq!(client.session("t1").unwrap().unwrap().title, "Keynote");
    assert_eq!(client.note("t1").unwrap(), "my note");
    assert_eq!(client.status().pending_changes, 0);
}

/// A change that arrives while the device's disk fails is shown at once and
/// never lost from the agenda's read model: after the disk recovers, a
/// restart lists the agenda as the document has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_received_while_writes_fail_is_listed_after_a_restart() {
    let srv = TestServer::start().await.unwrap();
    let org = publish_keynote(&srv).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (client, store) = device(&srv, &path);
    let timeout = std::time::Duration::from_secs(60);
    client.sync(timeout).await.unwrap();
    assert_eq!(client.session("t1").unwrap().unwrap().room, "Hall A");

    org.client
        .move_session("t1", Some("Hall B".into()), None, None)
        .unwrap();
    org.sync().await.unwrap();
    store.arm(Fault::Writes);
    assert!(client.sync(timeout).await.is_err());
    assert_eq!(
        client.session("t1").unwrap().unwrap().room,
        "Hall B",
        "shown as soon as it arrived"
    );
    store.disarm(Fault::Writes);
    client.sync(timeout).await.unwrap();
    let (client, _store) = restart(client, store, &path);
    assert_eq!(client.session("t1").unwrap().unwrap().room, "Hall B");
}
