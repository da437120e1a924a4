//! The venue simulator: one organizer and N attendee devices (real client
//! cores on memory stores, real QUIC) against a real server, optionally
//! through [`crate::netem`], driving the workload of `WORKLOAD.md`.
//!
//! Phases: **publish** (the organizer creates a seeded agenda and waits until
//! the server holds it), **join** (every device fetches it; each also types a
//! note), **changes** (M schedule changes, one per second, pushed to connected
//! devices) and **storm** (every device disconnects, one more change, every
//! device reconnects within one second).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use lanyard_client_core::{BackgroundOptions, BackgroundSync, Client, NewSession, Room};
use lanyard_protocol::{DeviceId, DocId, EventId, JoinLink, Role, TokenClaims, UserId};
use lanyard_server::{AdmissionConfig, AdmissionStats, Server, ServerOptions};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::netem::{Netem, NetemConfig, Profile};

/// The event of the workload.
pub const VENUE_EVENT: &str = "venue";

/// What to run.
#[derive(Debug, Clone)]
pub struct VenueConfig {
    /// Attendee devices.
    pub attendees: usize,
    /// Sessions in the agenda.
    pub sessions: usize,
    /// Schedule changes in the changes phase.
    pub changes: usize,
    /// Time between changes.
    pub change_interval: Duration,
    /// Seed of the agenda, the changes and the link impairments.
    pub seed: u64,
    /// Link profile (through the impairment proxy), or loopback when `None`.
    pub profile: Option<(String, Profile)>,
    /// Scale of outage and rebind intervals of the profile.
    pub time_scale: f64,
    /// Run the storm phase.
    pub storm: bool,
    /// Full jitter in the devices' reconnect backoff.
    pub jitter: bool,
    /// Server admission limits.
    pub admission: AdmissionConfig,
    /// Longest wait for any phase to converge.
    pub phase_deadline: Duration,
    /// Print progress to stderr.
    pub progress: bool,
}

impl Default for VenueConfig {
    fn default() -> Self {
        VenueConfig {
            attendees: 200,
            sessions: 300,
            changes: 10,
            change_interval: Duration::from_secs(1),
            seed: 1,
            profile: None,
            time_scale: 1.0,
            storm: true,
            jitter: true,
            admission: AdmissionConfig::default(),
            phase_deadline: Duration::from_secs(600),
            progress: true,
        }
    }
}

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// How many samples.
    pub count: usize,
}

impl Percentiles {
    /// Percentiles of `samples` (nearest rank).
    pub fn of(samples: &[Duration]) -> Self {
        if samples.is_empty() {
            return Percentiles::default();
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p / 100.0) * ms.len() as f64).ceil() as usize;
            ms[i.clamp(1, ms.len()) - 1]
        };
        Percentiles {
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: ms[ms.len() - 1],
            count: ms.len(),
        }
    }
}

/// Figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct VenueReport {
    /// Attendee devices.
    pub attendees: usize,
    /// Link profile name, or "loopback".
    pub profile: String,
    /// Seed.
    pub seed: u64,
    /// Sessions in the agenda.
    pub sessions: usize,
    /// Devices whose agenda equals the server's at the end.
    pub converged: usize,
    /// Notes typed offline that the server does not hold at the end (must be 0).
    pub lost_writes: usize,
    /// Connection attempts the server turned away (refused or told to come back).
    pub refused: u64,
    /// Reconnection attempts by devices.
    pub retries: u64,
    /// Time for the server to hold the organizer's agenda, ms.
    pub publish_ms: f64,
    /// Per-device time to load the agenda in the join phase.
    pub join_ms: Percentiles,
    /// Time until every device had the agenda, ms.
    pub join_total_ms: f64,
    /// Latency from an organizer's change to a device showing it, over all devices and changes.
    pub fanout_ms: Percentiles,
    /// Bytes the server sent per device over the whole run.
    pub bytes_per_device: f64,
    /// Bytes the server sent in the join phase.
    pub join_bytes: u64,
    /// Bytes the server sent per device per change in the changes phase.
    pub bytes_per_device_per_change: f64,
    /// Storm: time until every device held the new change, ms (None if not run).
    pub storm_ms: Option<f64>,
    /// Storm: per-device time to hold the change.
    pub storm_device_ms: Option<Percentiles>,
    /// Storm: connection attempts turned away during the storm.
    pub storm_refused: Option<u64>,
    /// Server admission counters at the end.
    pub admission: AdmissionStats,
    /// Packets dropped by the impairment proxy (0 on loopback).
    pub proxy_drops: u64,
    /// Wall time of the whole run, s.
    pub wall_s: f64,
}

impl std::fmt::Display for VenueReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = |x: &Percentiles| {
            format!(
                "p50 {:.0}  p95 {:.0}  p99 {:.0}  max {:.0}",
                x.p50, x.p95, x.p99, x.max
            )
        };
        writeln!(
            f,
            "lanyard-venue: {} attendees, profile {}, seed {}",
            self.attendees, self.profile, self.seed
        )?;
        writeln!(
            f,
            "  converged            {}/{}",
            self.converged, self.attendees
        )?;
        writeln!(f, "  lost writes          {}", self.lost_writes)?;
        writeln!(
            f,
            "  publish              {:.0} ms ({} sessions)",
            self.publish_ms, self.sessions
        )?;
        writeln!(
            f,
            "  join (ms)            {}  total {:.0}",
            p(&self.join_ms),
            self.join_total_ms
        )?;
        writeln!(f, "  change fan-out (ms)  {}", p(&self.fanout_ms))?;
        writeln!(
            f,
            "  bytes per device     {:.0} (join {:.0}, {:.0} per change)",
            self.bytes_per_device,
            self.join_bytes as f64 / self.attendees.max(1) as f64,
            self.bytes_per_device_per_change
        )?;
        writeln!(f, "  retries              {}", self.retries)?;
        writeln!(f, "  refused              {}", self.refused)?;
        if let (Some(ms), Some(dev), Some(r)) =
            (self.storm_ms, self.storm_device_ms, self.storm_refused)
        {
            writeln!(
                f,
                "  storm                all hold the change after {ms:.0} ms ({}), {r} refused",
                p(&dev)
            )?;
        }
        writeln!(f, "  proxy drops          {}", self.proxy_drops)?;
        write!(f, "  wall time            {:.1} s", self.wall_s)
    }
}

fn say(cfg: &VenueConfig, msg: impl std::fmt::Display) {
    if cfg.progress {
        eprintln!("lanyard-venue: {msg}");
    }
}

const WORDS: &[&str] = &[
    "async", "rust", "systems", "offline", "sync", "crdt", "quic", "latency", "venue", "wifi",
    "storage", "schedule", "mobile", "design", "memory", "safety", "network", "protocol",
    "testing", "tracing", "scaling", "edge", "cloud", "kernel", "compiler", "types", "data",
];
const NAMES: &[&str] = &[
    "Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Radia", "Guido", "Frances",
];
const TRACKS: &[&str] = &["Systems", "Web", "Mobile", "Data", "Security", "Community"];

fn words(rng: &mut ChaCha8Rng, len: usize) -> String {
    let mut s = String::new();
    while s.len() < len {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    s
}

/// The seeded agenda of the workload: 20 rooms, `sessions` sessions over 3 days.
pub fn generate_agenda(seed: u64, sessions: usize) -> (Vec<Room>, Vec<NewSession>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rooms: Vec<Room> = (1..=20)
        .map(|i| Room {
            name: format!("Room {i:02}"),
            capacity: rng.random_range(50..=500),
        })
        .collect();
    // Day one starts 2026-06-10 09:00 America/New_York (13:00 UTC).
    let day0: i64 = 1_781_096_400;
    let per_day = sessions.div_ceil(3).max(1);
    let list = (0..sessions)
        .map(|i| {
            let day = (i / per_day) as i64;
            let slot = ((i % per_day) / rooms.len()) as i64;
            let start = day0 + day * 86_400 + slot * 3600;
            NewSession {
                id: format!("s{i:04}"),
                title: words(&mut rng, 60),
                abstract_text: words(&mut rng, 400),
                room: rooms[i % rooms.len()].name.clone(),
                start_unix: start,
                end_unix: start + 50 * 60,
                track: TRACKS[rng.random_range(0..TRACKS.len())].to_owned(),
                speakers: (0..rng.random_range(1..=3))
                    .map(|_| NAMES[rng.random_range(0..NAMES.len())].to_owned())
                    .collect(),
            }
        })
        .collect();
    (rooms, list)
}

/// One schedule change: the session, its new room and (odd changes) new times.
#[derive(Debug, Clone)]
struct Change {
    session: String,
    room: String,
    times: Option<(i64, i64)>,
}

fn plan_changes(seed: u64, sessions: &[NewSession], n: usize) -> Vec<Change> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    (0..n)
        .map(|k| {
            let s = &sessions[rng.random_range(0..sessions.len())];
            // A room name no session uses, unique per change: visible without doubt.
            let room = format!("Moved {k}");
            let times = (k % 2 == 1).then(|| (s.start_unix + 1800, s.end_unix + 1800));
            Change {
                session: s.id.clone(),
                room,
                times,
            }
        })
        .collect()
}

struct Device {
    client: Client,
    sync: Option<BackgroundSync>,
}

fn link(
    id: &lanyard_server::Identity,
    addr: SocketAddr,
    claims: &TokenClaims,
) -> anyhow::Result<String> {
    Ok(JoinLink {
        server: addr.to_string(),
        event: claims.event.clone(),
        token: id.sign(claims),
        pin: id.pin(),
    }
    .to_string())
}

fn claims(role: Role, user: &str) -> anyhow::Result<TokenClaims> {
    Ok(TokenClaims {
        event: EventId::new(VENUE_EVENT)?,
        user: UserId::new(user)?,
        role,
        device: DeviceId::new("venue")?,
        expires_at: crate::unix_now() + 86_400,
    })
}

fn background(cfg: &VenueConfig) -> BackgroundOptions {
    BackgroundOptions {
        backoff_base: Duration::from_millis(250),
        backoff_cap: Duration::from_secs(8),
        stable_after: Duration::from_secs(5),
        jitter: cfg.jitter,
    }
}

/// Waits until `cond` holds for every device, polling; returns per-device times since `t0`.
async fn wait_all(
    cfg: &VenueConfig,
    server: &Server,
    what: &str,
    devices: &[Device],
    t0: Instant,
    cond: impl Fn(&Client) -> bool,
) -> anyhow::Result<Vec<Duration>> {
    let mut done: Vec<Option<Duration>> = vec![None; devices.len()];
    let deadline = t0 + cfg.phase_deadline;
    let mut last_report = Instant::now();
    loop {
        let now = Instant::now();
        for (i, d) in devices.iter().enumerate() {
            if done[i].is_none() && cond(&d.client) {
                done[i] = Some(now.duration_since(t0));
            }
        }
        let n = done.iter().filter(|d| d.is_some()).count();
        if n == devices.len() {
            return Ok(done.into_iter().flatten().collect());
        }
        if now > deadline {
            bail!(
                "{what}: only {n}/{} devices after {:?}",
                devices.len(),
                cfg.phase_deadline
            );
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            // Say why a waiting device is waiting, from its own status.
            let why = devices
                .iter()
                .zip(&done)
                .filter(|(_, d)| d.is_none())
                .find_map(|(dev, _)| dev.client.status().last_error)
                .map(|e| format!(" (a waiting device's last error: {e})"))
                .unwrap_or_default();
            let a = server.admission_stats();
            say(
                cfg,
                format!(
                    "{what}: {n}/{} devices; server: {} open ({} sessions), {} accepted, {} refused{why}",
                    devices.len(),
                    server.open_connections(),
                    server.open_sessions(),
                    a.accepted,
                    a.refused()
                ),
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the whole workload.
pub async fn run(cfg: VenueConfig) -> anyhow::Result<VenueReport> {
    let wall = Instant::now();
    let dir = tempfile::tempdir()?;
    let mut opts = ServerOptions::new(dir.path(), "127.0.0.1:0".parse()?);
    opts.admission = cfg.admission;
    // The server shares this process with every simulated device: its resident
    // memory is not the server's, so the memory limit cannot apply here.
    opts.admission.max_memory_bytes = u64::MAX;
    let server = Server::start(opts).await?;
    let server_addr = server.local_addr()?;
    let identity = lanyard_server::Identity::load_or_create(dir.path())?;
    let (netem, connect_addr) = match &cfg.profile {
        Some((_, profile)) => {
            let n = Netem::start(NetemConfig {
                listen: "127.0.0.1:0".parse()?,
                upstream: server_addr,
                profile: profile.clone(),
                seed: cfg.seed,
                time_scale: cfg.time_scale,
            })
            .await?;
            let a = n.local_addr();
            (Some(n), a)
        }
        None => (None, server_addr),
    };
    let profile_name = cfg
        .profile
        .as_ref()
        .map_or("loopback".to_owned(), |p| p.0.clone());
    say(
        &cfg,
        format!("server on {server_addr}, devices connect to {connect_addr} ({profile_name})"),
    );

    // Publish.
    let (rooms, sessions) = generate_agenda(cfg.seed, cfg.sessions);
    let organizer = Client::in_memory()?;
    // The organizer works from the back office, straight to the server; the
    // attendees' devices go through the venue link.
    organizer.join(&link(
        &identity,
        server_addr,
        &claims(Role::Organizer, "organizer")?,
    )?)?;
    organizer.set_event("Venue Conference", "America/New_York")?;
    for r in &rooms {
        organizer.put_room(r.clone())?;
    }
    for s in &sessions {
        organizer.add_session(s.clone())?;
    }
    let t_publish = Instant::now();
    let publish_deadline = Instant::now() + cfg.phase_deadline;
    loop {
        match organizer.sync(Duration::from_secs(60)).await {
            Ok(_) if organizer.status().pending_changes == 0 => break,
            Ok(_) => {}
            Err(e) if Instant::now() < publish_deadline => {
                say(&cfg, format!("publish: {e}; retrying"))
            }
            Err(e) => return Err(e).context("publishing the agenda"),
        }
    }
    let publish_ms = t_publish.elapsed().as_secs_f64() * 1000.0;
    say(
        &cfg,
        format!(
            "publish: the server holds {} sessions after {publish_ms:.0} ms",
            sessions.len()
        ),
    );
    let org_sync = organizer.start_background(background(&cfg));

    // Join: every device starts syncing at once and types a note offline first.
    let mut devices = Vec::with_capacity(cfg.attendees);
    for i in 0..cfg.attendees {
        let client = Client::in_memory()?;
        client.join(&link(
            &identity,
            connect_addr,
            &claims(Role::Attendee, &format!("a{i:05}"))?,
        )?)?;
        client.set_note(
            &sessions[i % sessions.len()].id,
            &format!("note of attendee {i}"),
        )?;
        devices.push(Device { client, sync: None });
    }
    let bytes0 = server.bytes_sent();
    let t_join = Instant::now();
    for d in &mut devices {
        d.sync = Some(d.client.start_background(background(&cfg)));
    }
    let n_sessions = sessions.len();
    // The agenda arrives in one Welcome and is applied at once: its last session
    // being there means the whole agenda is (a cheap check for frequent polling).
    let last_id = sessions[n_sessions - 1].id.clone();
    let join = wait_all(&cfg, &server, "join", &devices, t_join, |c| {
        c.session(&last_id).ok().flatten().is_some()
    })
    .await?;
    let join_total_ms = t_join.elapsed().as_secs_f64() * 1000.0;
    wait_all(&cfg, &server, "notes uploaded", &devices, t_join, |c| {
        c.status().pending_changes == 0
    })
    .await?;
    let join_bytes = server.bytes_sent() - bytes0;
    say(
        &cfg,
        format!(
            "join: all {} devices hold the agenda after {join_total_ms:.0} ms",
            devices.len()
        ),
    );

    // Changes: one per interval; per device, time from the change to seeing it.
    let plan = plan_changes(cfg.seed, &sessions, cfg.changes);
    let bytes1 = server.bytes_sent();
    let mut fanout = Vec::new();
    let mut waits: JoinSet<anyhow::Result<Vec<Duration>>> = JoinSet::new();
    let clients: Arc<Vec<Client>> = Arc::new(devices.iter().map(|d| d.client.clone()).collect());
    for (k, ch) in plan.iter().enumerate() {
        let t = Instant::now();
        organizer.move_session(
            &ch.session,
            Some(ch.room.clone()),
            ch.times.map(|t| t.0),
            ch.times.map(|t| t.1),
        )?;
        let clients = clients.clone();
        let ch = ch.clone();
        let deadline = cfg.phase_deadline;
        waits.spawn(async move {
            let mut seen: Vec<Option<Duration>> = vec![None; clients.len()];
            loop {
                for (i, c) in clients.iter().enumerate() {
                    if seen[i].is_none()
                        && c.session(&ch.session)
                            .ok()
                            .flatten()
                            .is_some_and(|s| s.room == ch.room)
                    {
                        seen[i] = Some(t.elapsed());
                    }
                }
                if seen.iter().all(Option::is_some) {
                    return Ok(seen.into_iter().flatten().collect());
                }
                if t.elapsed() > deadline {
                    bail!("change {k}: not every device saw it within {deadline:?}");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        tokio::time::sleep(cfg.change_interval).await;
    }
    while let Some(r) = waits.join_next().await {
        fanout.extend(r.context("change watcher")??);
    }
    let change_bytes = server.bytes_sent() - bytes1;
    say(
        &cfg,
        format!("changes: {} changes seen by every device", plan.len()),
    );

    // Storm.
    let (mut storm_ms, mut storm_device_ms, mut storm_refused) = (None, None, None);
    if cfg.storm {
        let refused_before = server.admission_stats().refused();
        let mut stops = JoinSet::new();
        for d in &mut devices {
            if let Some(s) = d.sync.take() {
                stops.spawn(s.stop());
            }
        }
        while stops.join_next().await.is_some() {}
        say(
            &cfg,
            format!(
                "storm: every device stopped; server: {} open ({} sessions)",
                server.open_connections(),
                server.open_sessions()
            ),
        );
        let target = &sessions[sessions.len() / 2];
        let room = "Storm Hall".to_owned();
        let t = Instant::now();
        organizer.move_session(&target.id, Some(room.clone()), None, None)?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5707);
        let offsets: Vec<Duration> = (0..devices.len())
            .map(|_| Duration::from_millis(rng.random_range(0..1000)))
            .collect();
        // Reconnect every device within one second, while measuring.
        let clients: Vec<Client> = devices.iter().map(|d| d.client.clone()).collect();
        let opts = background(&cfg);
        let reconnect = tokio::spawn(async move {
            let mut order: Vec<usize> = (0..clients.len()).collect();
            order.sort_by_key(|i| offsets[*i]);
            let mut syncs: Vec<Option<BackgroundSync>> = (0..clients.len()).map(|_| None).collect();
            for i in order {
                tokio::time::sleep_until((t + offsets[i]).into()).await;
                syncs[i] = Some(clients[i].start_background(opts.clone()));
            }
            syncs
        });
        let id = target.id.clone();
        let per = wait_all(&cfg, &server, "storm", &devices, t, |c| {
            c.session(&id)
                .ok()
                .flatten()
                .is_some_and(|s| s.room == room)
        })
        .await?;
        for (d, sync) in devices
            .iter_mut()
            .zip(reconnect.await.context("reconnect task")?)
        {
            d.sync = sync;
        }
        storm_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
        storm_device_ms = Some(Percentiles::of(&per));
        storm_refused = Some(server.admission_stats().refused() - refused_before);
        say(
            &cfg,
            format!(
                "storm: every device holds the change after {:.0} ms",
                t.elapsed().as_secs_f64() * 1000.0
            ),
        );
    }

    // Verdicts: a device converged when its agenda equals the organizer's and it
    // has nothing pending; a write is lost when the server lacks a device's note.
    let reference = organizer.sessions()?;
    let mut converged = 0;
    let mut lost_writes = 0;
    let mut retries = 0;
    for (i, d) in devices.iter().enumerate() {
        let s = d.client.status();
        retries += s.retries;
        if s.pending_changes == 0 && d.client.sessions()? == reference {
            converged += 1;
        }
        let own = DocId::Attendee(EventId::new(VENUE_EVENT)?, UserId::new(format!("a{i:05}"))?);
        let expected = format!("note of attendee {i}");
        let sid = sessions[i % sessions.len()].id.clone();
        let held = server.with_doc(&own, |doc| {
            doc.is_some_and(|doc| lanyard_client_core::docs::NotesDoc::note(doc, &sid) == expected)
        });
        if !held {
            lost_writes += 1;
        }
    }
    let mut stops = JoinSet::new();
    for d in &mut devices {
        if let Some(s) = d.sync.take() {
            stops.spawn(s.stop());
        }
    }
    while stops.join_next().await.is_some() {}
    org_sync.stop().await;
    let total_bytes = server.bytes_sent();
    let admission = server.admission_stats();
    let proxy_drops = match netem {
        Some(n) => {
            let c = n.stop().await;
            c.upstream.dropped() + c.downstream.dropped()
        }
        None => 0,
    };
    server.shutdown().await;
    let n = cfg.attendees.max(1) as f64;
    Ok(VenueReport {
        attendees: cfg.attendees,
        profile: profile_name,
        seed: cfg.seed,
        sessions: n_sessions,
        converged,
        lost_writes,
        refused: admission.refused(),
        retries,
        publish_ms,
        join_ms: Percentiles::of(&join),
        join_total_ms,
        fanout_ms: Percentiles::of(&fanout),
        bytes_per_device: total_bytes as f64 / n,
        join_bytes,
        bytes_per_device_per_change: change_bytes as f64 / n / cfg.changes.max(1) as f64,
        storm_ms,
        storm_device_ms,
        storm_refused,
        admission,
        proxy_drops,
        wall_s: wall.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&d);
        assert_eq!(
            (p.p50, p.p95, p.p99, p.max, p.count),
            (50.0, 95.0, 99.0, 100.0, 100)
        );
        assert_eq!(Percentiles::of(&[]).count, 0);
    }

    #[test]
    fn the_agenda_is_seeded_and_shaped_like_the_workload() {
        let (rooms, a) = generate_agenda(7, 300);
        let (_, b) = generate_agenda(7, 300);
        assert_eq!(a, b);
        assert_eq!(rooms.len(), 20);
        assert_eq!(a.len(), 300);
        assert!(a
            .iter()
            .all(|s| s.title.len() >= 60 && s.abstract_text.len() >= 400));
        assert!(a.iter().all(|s| (1..=3).contains(&s.speakers.len())));
        let days: std::collections::BTreeSet<i64> = a
            .iter()
            .map(|s| (s.start_unix - a[0].start_unix) / 86_400)
            .collect();
        assert_eq!(days.len(), 3);
        let changes = plan_changes(7, &a, 10);
        assert!(changes
            .iter()
            .enumerate()
            .all(|(k, c)| c.times.is_some() == (k % 2 == 1)));
    }
}
