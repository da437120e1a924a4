//! The crash loops, scaled down for CI: a real `lanyard-server` process
//! SIGKILLed and restarted under write load, and a device process SIGKILLed
//! right after an edit returned; nothing acknowledged may be lost. The full
//! runs (200 cycles each) are `lanyard-crashloop`'s defaults.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use lanyard_tests::crashloop::{client_loop, server_loop, ClientLoop, ServerLoop};

const SEED: u64 = 7;

/// Six cycles ran, writes and seat requests were acknowledged, none lost or
/// left undecided, no session overbooked.
fn nothing_lost(out: &lanyard_tests::crashloop::Outcome) {
    assert_eq!(out.cycles, 6);
    assert!(
        out.acknowledged > 0,
        "the writers got nothing acknowledged: {out}"
    );
    assert_eq!(out.lost, 0, "seed {SEED}: {out}");
    assert!(out.requests > 0, "no seat request was acknowledged: {out}");
    assert_eq!(out.undecided, 0, "seed {SEED}: {out}");
    assert_eq!(out.overbooked, 0, "seed {SEED}: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_at_random_moments_loses_no_acknowledged_write() {
    let cfg = ServerLoop {
        server_bin: lanyard_tests::server_bin_for_tests(),
        cycles: 6,
        writers: 4,
        reservers: 4,
        min_up: Duration::from_millis(100),
        max_up: Duration::from_millis(800),
        seed: SEED,
        nodes: 1,
        store: None,
    };
    let out = server_loop(&cfg, |_| {}).await.unwrap();
    println!("server crash loop (seed {SEED}): {out}");
    nothing_lost(&out);
}

/// Three nodes on one throwaway PostgreSQL: one killed at random each cycle
/// (the one deciding seats among them), its devices move to another;
/// nothing acknowledged may be lost, no seat request left undecided, no
/// session overbooked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_nodes_killed_at_random_moments_lose_no_acknowledged_write() {
    let pg = lanyard_store_postgres::testing::TempCluster::start().unwrap();
    let cfg = ServerLoop {
        server_bin: lanyard_tests::server_bin_for_tests(),
        cycles: 6,
        writers: 6,
        reservers: 4,
        min_up: Duration::from_millis(200),
        max_up: Duration::from_millis(1000),
        seed: SEED,
        nodes: 3,
        store: Some(pg.create_database().unwrap()),
    };
    let out = server_loop(&cfg, |_| {}).await;
    let out = out.unwrap_or_else(|e| panic!("seed {SEED}: {e:#}\npostgres log:\n{}", pg.log()));
    println!("cluster crash loop (seed {SEED}, 3 nodes): {out}");
    nothing_lost(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_killed_right_after_an_edit_keeps_the_edit() {
    let cfg = ClientLoop {
        child_bin: PathBuf::from(env!("CARGO_BIN_EXE_lanyard-crashloop")),
        cycles: 25,
        max_edits: 20,
        seed: SEED,
    };
    let out = client_loop(&cfg, |_| {}).await.unwrap();
    println!("client crash loop (seed {SEED}): {out}");
    assert_eq!(out.cycles, 25);
    assert!(out.acknowledged >= 25, "{out}");
    assert_eq!(out.lost, 0, "seed {SEED}: {out}");
}

/// The stateless-reset key lives in the data directory: a server that
/// crashed and came back answers a device still talking on the lost
/// connection with a stateless reset the device can verify, so it learns of
/// the restart at once instead of after its idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_resets_old_connections_at_once() {
    use lanyard_client_core::{BackgroundOptions, Client};
    use lanyard_tests::crashloop::{free_port, link, start_server};

    let bin = lanyard_tests::server_bin_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let identity = lanyard_server::Identity::load_or_create(&data).unwrap();
    let addr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let mut server = start_server(&bin, &data, addr).await.unwrap();
    let phone = Client::in_memory().unwrap();
    phone
        .join(&link(&identity, addr, "ann", "phone").unwrap())
        .unwrap();
    // Retries an hour apart: what the phone learns comes from the reset.
    let bg = phone.start_background(BackgroundOptions {
        backoff_base: Duration::from_secs(3600),
        backoff_cap: Duration::from_secs(3600),
        jitter: false,
        ..BackgroundOptions::default()
    });
    let p = phone.clone();
    lanyard_tests::wait_for("the phone connects", || p.status().connected)
        .await
        .unwrap();
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    let _server = start_server(&bin, &data, addr).await.unwrap();
    phone.append_note("t1", "written after the crash").unwrap();
    lanyard_tests::wait_for("the phone hears of the restart", || {
        p.status()
            .last_error
            .is_some_and(|e| e.contains("stateless reset"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; status {:?}", p.status()));
    assert!(!phone.status().connected);
    // And it reconnects at once when told the network changed.
    phone.network_changed();
    lanyard_tests::wait_for("the phone reconnects", || {
        let s = p.status();
        s.connected && s.pending_changes == 0
    })
    .await
    .unwrap();
    bg.stop().await;
}
