//! The crash loops, scaled down for CI: a real `lanyard-server` process
//! SIGKILLed and restarted under write load, and a device process SIGKILLed
//! right after an edit returned; nothing acknowledged may be lost. The full
//! runs (200 cycles each) are `lanyard-crashloop`'s defaults.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use lanyard_tests::crashloop::{client_loop, server_loop, ClientLoop, ServerLoop};

const SEED: u64 = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_at_random_moments_loses_no_acknowledged_write() {
    let cfg = ServerLoop {
        server_bin: lanyard_tests::server_bin_for_tests(),
        cycles: 6,
        writers: 4,
        min_up: Duration::from_millis(100),
        max_up: Duration::from_millis(800),
        seed: SEED,
    };
    let out = server_loop(&cfg, |_| {}).await.unwrap();
    println!("server crash loop (seed {SEED}): {out}");
    assert_eq!(out.cycles, 6);
    assert!(
        out.acknowledged > 0,
        "the writers got nothing acknowledged: {out}"
    );
    assert_eq!(out.lost, 0, "seed {SEED}: {out}");
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
