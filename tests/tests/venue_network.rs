//! Real QUIC through the impairment proxy (`lanyard-netem`), time-scaled:
//! the busy, overloaded and collapsing venue profiles converge with no lost
//! writes (collapsing with its loss, delay, rate and queue but its outages and
//! rebinds unscaled: scaled down, they leave windows shorter than a handshake
//! on that link; the outage and rebind tests below and the full-length
//! `lanyard-venue` run cover them); a
//! NAT rebind in the
//! middle of a sync migrates the connection; a long outage recovers with no
//! user action; a reconnect storm of 500 devices against low admission limits
//! converges while the server stays within its limits.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use lanyard_client_core::{BackgroundOptions, BackgroundSync, NewSession, SessionStatus};
use lanyard_protocol::Role;
use lanyard_server::AdmissionConfig;
use lanyard_tests::netem::{Netem, NetemConfig, Profile, Profiles};
use lanyard_tests::venue::{run, AgendaSource, VenueConfig};
use lanyard_tests::{wait_for, wait_for_within, Device, TestServer};

fn profile(name: &str) -> Profile {
    Profiles::builtin()
        .and_then(|p| p.get(name).cloned())
        .unwrap_or_else(|e| panic!("profile {name}: {e:#}"))
}

async fn venue_through(name: &str, seed: u64) {
    // Outages and rebinds 20 times as often (and outages 20 times shorter).
    venue_with(name, profile(name), 6, seed, 0.05, Duration::from_secs(240)).await;
}

async fn venue_with(
    name: &str,
    profile: Profile,
    attendees: usize,
    seed: u64,
    time_scale: f64,
    deadline: Duration,
) {
    let cfg = VenueConfig {
        attendees,
        agenda: AgendaSource::Synthetic { sessions: 12 },
        changes: 3,
        change_interval: Duration::from_millis(500),
        seed,
        profile: Some((name.to_owned(), profile)),
        time_scale,
        storm: false,
        phase_deadline: deadline,
        progress: true,
        ..VenueConfig::default()
    };
    let report = run(cfg)
        .await
        .unwrap_or_else(|e| panic!("profile {name} seed {seed}: {e:#}"));
    println!("{report}");
    assert_eq!(
        report.converged, report.attendees,
        "profile {name} seed {seed}"
    );
    assert_eq!(report.lost_writes, 0, "profile {name} seed {seed}");
    assert_eq!(
        report.fanout_ms.count,
        3 * attendees,
        "every device saw every change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_busy_profile_converges_with_no_lost_writes() {
    venue_through("busy", 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overloaded_profile_converges_with_no_lost_writes() {
    venue_through("overloaded", 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collapsing_profile_converges_with_no_lost_writes() {
    // 30 % loss in bursts of 8 packets, 1.5 s RTT + 1 s jitter, 32 kbit/s and a
    // 4 s queue: a join takes 20-140 s here (measured), hence the long deadline.
    let mut p = profile("collapsing");
    p.outage_every_s = 0.0;
    venue_with("collapsing", p, 4, 13, 1.0, Duration::from_secs(420)).await;
}

fn talk(id: &str) -> NewSession {
    NewSession {
        id: id.into(),
        title: format!("Talk {id}"),
        room: "Hall A".into(),
        start_unix: 1_781_000_000,
        end_unix: 1_781_001_800,
        ..Default::default()
    }
}

/// A proxy with `profile` in front of `srv`, an organizer (direct) who published
/// session t1, and an attendee phone behind the proxy, synced in the background.
async fn organizer_and_phone_behind_proxy(
    srv: &TestServer,
    profile: Profile,
    seed: u64,
) -> (Netem, Device, Device, BackgroundSync) {
    let netem = Netem::start(NetemConfig {
        seed,
        ..NetemConfig::new(srv.addr(), profile)
    })
    .await
    .unwrap();
    let org = srv.device(Role::Organizer, "org", "laptop").unwrap();
    org.client.add_session(talk("t1")).unwrap();
    org.sync().await.unwrap();
    let phone = srv
        .device_via(Role::Attendee, "ann", "phone", netem.local_addr())
        .unwrap();
    let bg = phone.client.start_background(quick_backoff());
    wait_for("the first sync through the proxy", || {
        phone.client.session("t1").unwrap().is_some() && phone.client.status().connected
    })
    .await
    .unwrap();
    (netem, org, phone, bg)
}

fn quick_backoff() -> BackgroundOptions {
    BackgroundOptions {
        backoff_base: Duration::from_millis(200),
        backoff_cap: Duration::from_secs(2),
        stable_after: Duration::from_secs(5),
        jitter: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nat_rebind_in_the_middle_of_a_sync_migrates_the_connection() {
    let srv = TestServer::start().await.unwrap();
    // A clean link that is slow enough for a sync to take a while.
    let mut p = Profile::clean();
    p.rate_kbit = 400.0;
    p.rtt_ms = 40.0;
    let (netem, org, phone, bg) = organizer_and_phone_behind_proxy(&srv, p, 5).await;
    // A large note takes seconds at 400 kbit/s: rebind while it uploads.
    let big = "offline notes ".repeat(20_000);
    phone.client.set_note("t1", &big).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<_> = netem.links().iter().map(|l| l.upstream_local).collect();
    assert!(netem.rebind_all() >= 1);
    let after: Vec<_> = netem.links().iter().map(|l| l.upstream_local).collect();
    assert_ne!(before, after, "the server sees a new source address");
    wait_for("the note to be acknowledged after the rebind", || {
        phone.client.status().pending_changes == 0
    })
    .await
    .unwrap();
    // Pushes still arrive on the migrated connection.
    org.client
        .move_session("t1", Some("Hall C".into()), None, None)
        .unwrap();
    org.sync().await.unwrap();
    wait_for("the push after the rebind", || {
        phone
            .client
            .session("t1")
            .unwrap()
            .is_some_and(|s| s.room == "Hall C")
    })
    .await
    .unwrap();
    let status = phone.client.status();
    assert_eq!(status.retries, 0, "migrated, not reconnected: {status:?}");
    assert!(status.connected);
    bg.stop().await;
    let tablet = srv.device(Role::Attendee, "ann", "tablet").unwrap();
    tablet.sync().await.unwrap();
    assert_eq!(tablet.client.note("t1").unwrap(), big);
    println!("{}", netem.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_recovers_with_no_user_action() {
    let srv = TestServer::start().await.unwrap();
    let (netem, org, phone, bg) = organizer_and_phone_behind_proxy(&srv, profile("busy"), 6).await;
    // The hall's access point goes down for 35 s: longer than the 30 s idle
    // timeout, so the device must notice and reconnect by itself.
    netem.outage(Duration::from_secs(35));
    phone
        .client
        .set_note("t1", "typed while the WiFi was down")
        .unwrap();
    org.client.cancel_session("t1").unwrap();
    org.sync().await.unwrap();
    // Generous: 35 s of outage, then the idle timeout, a new handshake and a sync.
    let after_outage = Duration::from_secs(180);
    let why = || {
        format!(
            "phone {:?}; server admission {:?}",
            phone.client.status(),
            srv.server().admission_stats()
        )
    };
    wait_for_within("the cancellation after the outage", after_outage, || {
        phone
            .client
            .session("t1")
            .unwrap()
            .is_some_and(|s| s.status == SessionStatus::Cancelled)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}; {}", why()));
    wait_for_within("the note uploaded after the outage", after_outage, || {
        phone.client.status().pending_changes == 0
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}; {}", why()));
    let counters = netem.stop().await;
    println!("{counters}");
    assert!(counters.outages >= 1);
    assert!(counters.upstream.dropped() + counters.downstream.dropped() > 0);
    bg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_of_500_devices_converges_within_the_admission_limits() {
    // Room for every device once they are in, but few handshakes per second
    // and a queue of one second's worth: the storm must be spread out by the
    // admission queue, then by refusals and the devices' jittered backoff.
    let admission = AdmissionConfig {
        max_connections: 520,
        handshakes_per_sec: 100.0,
        retry_after: Duration::from_secs(1),
        max_wait: Duration::from_secs(1),
        ..AdmissionConfig::default()
    };
    let cfg = VenueConfig {
        attendees: 500,
        agenda: AgendaSource::Synthetic { sessions: 10 },
        changes: 1,
        change_interval: Duration::from_millis(200),
        seed: 21,
        profile: None,
        storm: true,
        admission,
        phase_deadline: Duration::from_secs(240),
        progress: true,
        ..VenueConfig::default()
    };
    let report = run(cfg).await.unwrap();
    println!("{report}");
    assert_eq!(report.converged, 500);
    assert_eq!(report.lost_writes, 0);
    assert!(
        report.admission.peak_connections <= 520,
        "the server exceeded its connection limit: {:?}",
        report.admission
    );
    let storm_refused = report.storm_refused.unwrap();
    assert!(
        storm_refused > 0 && report.admission.queued > 0,
        "the limits were exercised (queue and refusals): {:?}",
        report.admission
    );
    assert!(
        report.admission.peak_waiting <= 100,
        "the queue holds one second of the rate: {:?}",
        report.admission
    );
    assert!(
        report.refused <= 10 * 500,
        "refused attempts stay bounded: {} for 500 devices",
        report.refused
    );
}
