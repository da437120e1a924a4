//! The venue benchmark harness against a real `lanyard-server` process: the
//! workload's four phases run, devices share client endpoints, the server's
//! counters come from its `--stats-file`, and lost writes are checked against
//! what the server stored in its sled database after a SIGTERM.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use lanyard_tests::backend::ServerMode;
use lanyard_tests::venue::{run, AgendaSource, VenueConfig};

/// The workload scaled down for a test: `attendees` devices, 5 per
/// endpoint, 3 changes, seed 5, a real server process.
fn small_run(attendees: usize) -> VenueConfig {
    VenueConfig {
        attendees,
        agenda: AgendaSource::Synthetic { sessions: 40 },
        changes: 3,
        change_interval: Duration::from_millis(300),
        seed: 5,
        server: ServerMode::Process(lanyard_tests::server_bin_for_tests()),
        devices_per_endpoint: 5,
        phase_deadline: Duration::from_secs(180),
        ..VenueConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workload_runs_against_a_server_process_with_shared_endpoints() {
    let cfg = small_run(12);
    let report = run(cfg).await.unwrap_or_else(|e| panic!("seed 5: {e:#}"));
    println!("{report}");
    assert_eq!(report.converged, 12);
    assert_eq!(report.never_converged, 0);
    assert_eq!(
        report.lost_writes, 0,
        "notes read back from the server's sled"
    );
    assert!(report.server_process);
    assert_eq!(
        report.fanout_ms.count,
        3 * 12,
        "every device saw every change"
    );
    assert_eq!(report.storm_device_ms.map(|p| p.count), Some(12));
    // The server's own figures, from its stats file.
    assert!(report.server_peak_rss_bytes > 0 && report.server_cpu_s > 0.0);
    let phases: Vec<&str> = report.phases.iter().map(|p| p.phase.as_str()).collect();
    assert_eq!(
        phases,
        ["publish", "setup", "join", "changes", "disconnect", "storm"]
    );
    let join = &report.phases[2];
    assert!(
        join.bytes_sent > 12 * 1000,
        "the join sent the agenda to every device: {join:?}"
    );
    // Every note and schedule change was made durable by a (grouped) flush.
    assert!(
        report.server_flushed_writes >= 12 + 3,
        "{} writes flushed",
        report.server_flushed_writes
    );
    assert!((1..=report.server_flushed_writes).contains(&report.server_flushes));
    assert!(report.change_size_bytes > 50.0 && report.change_size_bytes < 1000.0);
    assert_ne!(report.versions["automerge"], "unknown");
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "attendees",
        "converged",
        "lost_writes",
        "refused",
        "fanout_ms",
        "bytes_per_device",
        "server_peak_rss_bytes",
        "phases",
    ] {
        assert!(json.get(key).is_some(), "JSON lacks {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_binary_that_cannot_start_or_exits_is_a_clear_error() {
    use lanyard_tests::backend::Backend;
    let dir = tempfile::tempdir().unwrap();
    let admission = lanyard_server::AdmissionConfig::default();
    let missing = ServerMode::Process(dir.path().join("no-such-server"));
    let err = Backend::start(&missing, dir.path(), admission)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("cannot start"), "{err:#}");
    // A binary that exits without saying where it listens.
    let exits = ServerMode::Process("/bin/false".into());
    let err = Backend::start(&exits, dir.path(), admission)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("exited before listening"),
        "{err:#}"
    );
}

/// Workload v2 scaled down: the real FOSDEM 2025 agenda (943 sessions,
/// imported by the organizer's importer as several changes that fit the
/// change limit) reaches every device, and moves of real sessions to other
/// real rooms (odd ones also 30 minutes later) are seen by every device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_fosdem_agenda_runs_through_every_phase() {
    let cfg = VenueConfig {
        attendees: 4,
        agenda: AgendaSource::File(lanyard_tests::venue::default_agenda_file()),
        changes: 4,
        change_interval: Duration::from_millis(200),
        seed: 7,
        phase_deadline: Duration::from_secs(180),
        ..VenueConfig::default()
    };
    let report = run(cfg).await.unwrap_or_else(|e| panic!("seed 7: {e:#}"));
    println!("{report}");
    assert_eq!(report.agenda, "fosdem-2025.xml");
    assert_eq!((report.sessions, report.rooms), (943, 29));
    assert_eq!(
        report.converged, 4,
        "every device's whole agenda equals the organizer's"
    );
    assert_eq!(report.lost_writes, 0);
    assert_eq!(
        report.fanout_ms.count,
        4 * 4,
        "every device saw every change"
    );
    assert_eq!(report.storm_device_ms.map(|p| p.count), Some(4));
    let join = &report.phases[2];
    assert!(
        join.bytes_sent > 4 * 300_000,
        "the join sent the whole real agenda to every device: {join:?}"
    );
    assert!(report.sim_rss_after_join_bytes > 0 && report.sim_peak_rss_bytes > 0);
}

/// Light devices (no copy of the agenda: each change decoded and its hash
/// checked) run beside full ones: every device of both kinds receives every
/// change and the storm's, every note reaches the server, and the applied
/// figure counts only the full devices while the arrival figure counts all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_devices_run_beside_a_sample_of_full_ones_and_everyone_converges() {
    let cfg = VenueConfig {
        attendees: 16,
        full_devices: Some(4),
        agenda: AgendaSource::Synthetic { sessions: 40 },
        changes: 3,
        change_interval: Duration::from_millis(300),
        seed: 11,
        devices_per_endpoint: 4,
        phase_deadline: Duration::from_secs(180),
        ..VenueConfig::default()
    };
    let report = run(cfg).await.unwrap_or_else(|e| panic!("seed 11: {e:#}"));
    println!("{report}");
    assert_eq!(report.converged, 16, "light and full devices converge");
    assert_eq!(
        report.lost_writes, 0,
        "light devices' notes reached the server"
    );
    assert_eq!(report.fanout_ms.count, 3 * 4, "applied: the full devices");
    assert_eq!(
        report.fanout_arrival_ms.count,
        3 * 16,
        "arrival: every device, every change"
    );
    assert_eq!(report.storm_device_ms.map(|p| p.count), Some(16));
}

/// `lanyard-venue --nodes 3`: the workload on three server processes
/// sharing a throwaway PostgreSQL, devices spread over them, the rush's
/// seats decided by one of them; the notes are read back from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workload_runs_on_three_nodes_sharing_postgresql() {
    let pg = lanyard_store_postgres::testing::TempCluster::start().unwrap();
    let cfg = VenueConfig {
        rush: Some(lanyard_tests::venue::RushConfig {
            sessions: 2,
            capacity: 3,
        }),
        nodes: 3,
        store: Some(pg.create_database().unwrap()),
        ..small_run(15)
    };
    let report = run(cfg)
        .await
        .unwrap_or_else(|e| panic!("seed 5: {e:#}\npostgres log:\n{}", pg.log()));
    println!("{report}");
    assert_eq!(report.nodes, 3);
    assert_eq!(report.converged, 15);
    assert_eq!(report.lost_writes, 0, "notes read back from PostgreSQL");
    assert_eq!(
        report.fanout_ms.count,
        3 * 15,
        "every device saw every change"
    );
    // Devices 0, 3, 6, … are on the organizer's node; the others are not.
    assert_eq!(report.fanout_same_node_ms.map(|p| p.count), Some(3 * 5));
    assert_eq!(report.fanout_cross_node_ms.map(|p| p.count), Some(3 * 10));
    assert_eq!(report.node_cost.len(), 3);
    assert!(report
        .node_cost
        .iter()
        .all(|(cpu, rss)| *cpu > 0.0 && *rss > 0));
    let (commits, _queue) = report.database.expect("the database's figures");
    assert!(commits > 0.0);
    let rush = report.rush.expect("the rush ran");
    assert_eq!(rush.requests, 15);
    assert_eq!(rush.confirmed, 2 * 3, "{rush:?}");
    assert_eq!(rush.waitlisted, 15 - 6, "{rush:?}");
    assert_eq!((rush.overbooked, rush.out_of_order), (0, 0), "{rush:?}");
    assert_eq!(report.storm_device_ms.map(|p| p.count), Some(15));
}
