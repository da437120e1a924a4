//! The venue simulator: one organizer and N attendee devices (real client
//! cores on memory stores, real QUIC) against a real server, optionally
//! through [`crate::netem`], driving the workload of `WORKLOAD.md`.
//!
//! The agenda (workload v2) is a real schedule file read by the project's own
//! importer and published by the organizer's `lanyard_schedule::import_schedule`
//! (default: the FOSDEM 2025 schedule in `tests/data/schedules`), or (v1) the
//! seeded synthetic agenda of [`generate_agenda`]; see [`AgendaSource`].
//!
//! Phases: **publish** (the organizer creates the agenda and waits until
//! the server holds it), **join** (every device fetches it; each also types a
//! note), **changes** (M schedule changes, one per second, pushed to connected
//! devices) and **storm** (every device disconnects, one more change, every
//! device reconnects within one second).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use lanyard_client_core::{
    BackgroundOptions, BackgroundSync, Client, NewSession, ReservationState, Room, Session,
};
use lanyard_protocol::seats::SeatState;
use lanyard_protocol::{
    DeviceId, DocId, EventId, JoinLink, RequestId, Role, SessionId, TokenClaims, UserId,
};
use lanyard_schedule::import::{
    parse_ics, parse_schedule_json, parse_schedule_xml, ImportedSchedule,
};
use lanyard_schedule::import_schedule;
use lanyard_server::{AdmissionConfig, AdmissionStats, StatsSnapshot};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::backend::{Backend, ServerMode};
use crate::light::{Light, LightLink, LightSync};
use crate::netem::{Netem, NetemConfig, Profile};

/// The event of the workload.
pub const VENUE_EVENT: &str = "venue";

/// Where the agenda of a run comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgendaSource {
    /// Workload v1: generated from the seed by [`generate_agenda`] (20 rooms,
    /// this many sessions over 3 days, `America/New_York`).
    Synthetic {
        /// Sessions in the agenda.
        sessions: usize,
    },
    /// Workload v2: a schedule file read by the project's importer, chosen by
    /// extension (`.xml` frab/pentabarf, `.json` c3voc, `.ics` iCalendar) and
    /// published with `lanyard_schedule::import_schedule`.
    File(PathBuf),
}

impl AgendaSource {
    /// A short name for reports: `synthetic-300` or the file's name.
    pub fn label(&self) -> String {
        match self {
            AgendaSource::Synthetic { sessions } => format!("synthetic-{sessions}"),
            AgendaSource::File(p) => p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
        }
    }
}

/// The workload's default agenda: FOSDEM 2025 (943 sessions, 29 rooms,
/// 2 days, Europe/Brussels), the copy in this crate's `data/schedules`.
pub fn default_agenda_file() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/schedules/fosdem-2025.xml"
    ))
}

/// Reads a schedule file with the importer its extension names. Errors name
/// the file and what is wrong with it.
pub fn read_schedule(path: &Path) -> anyhow::Result<ImportedSchedule> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    type Reader = fn(&[u8]) -> Result<ImportedSchedule, lanyard_schedule::import::ImportError>;
    let parse: Reader = match ext.as_str() {
        "xml" => parse_schedule_xml,
        "json" => parse_schedule_json,
        "ics" | "ical" | "ifb" | "icalendar" => parse_ics,
        _ => bail!(
            "agenda {}: unknown kind of schedule file; name it *.xml (frab/pentabarf), \
             *.json (c3voc schedule.json) or *.ics (iCalendar), or use --agenda synthetic",
            path.display()
        ),
    };
    let bytes = std::fs::read(path)
        .with_context(|| format!("agenda {}: cannot read the file", path.display()))?;
    let schedule = parse(&bytes).with_context(|| format!("agenda {}", path.display()))?;
    if schedule.sessions.len() < 2 {
        bail!(
            "agenda {}: {} session(s); the workload needs at least 2",
            path.display(),
            schedule.sessions.len()
        );
    }
    Ok(schedule)
}

/// An agenda as the organizer published it, read back from its device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublishedAgenda {
    /// What it was made from ([`AgendaSource::label`]).
    pub source: String,
    /// The event's name.
    pub name: String,
    /// The event's IANA time zone.
    pub time_zone: String,
    /// Rooms that hold at least one session, sorted.
    pub rooms: Vec<String>,
    /// Every session, by start, room and id.
    pub sessions: Vec<Session>,
    /// The session the organizer wrote last, when known: the agenda's
    /// changes are applied in causal order and each depends on the one
    /// before, so a device holding this session holds the whole agenda.
    pub written_last: Option<String>,
}

/// Writes the agenda into the organizer's device (nothing is sent: the
/// device syncs later) and reads it back. A schedule file is imported with
/// `lanyard_schedule::import_schedule` (several changes that each fit the change limit).
pub fn write_agenda(
    organizer: &Client,
    source: &AgendaSource,
    seed: u64,
) -> anyhow::Result<PublishedAgenda> {
    let written_last = match source {
        AgendaSource::Synthetic { sessions } => {
            if *sessions < 2 {
                bail!("--sessions {sessions}: the workload needs at least 2 sessions");
            }
            let (rooms, sessions) = generate_agenda(seed, *sessions);
            organizer.set_event("Venue Conference", "America/New_York")?;
            for r in &rooms {
                organizer.put_room(r.clone())?;
            }
            for s in &sessions {
                organizer.add_session(s.clone())?;
            }
            sessions.last().map(|s| s.id.clone())
        }
        AgendaSource::File(path) => {
            let schedule = read_schedule(path)?;
            import_schedule(organizer, &schedule, false, &mut |_| {})
                .with_context(|| format!("agenda {}: import", path.display()))?;
            // An import into an empty agenda adds the file's sessions in the
            // file's order; the last one's id is the importer's, so it is
            // found by its values (when exactly one session has them).
            schedule.sessions.last().and_then(|last| {
                let same = |s: &&Session| {
                    s.title == last.title.trim()
                        && s.room == last.room.trim()
                        && (s.start_unix, s.end_unix) == (last.start_unix, last.end_unix)
                };
                let found: Vec<Session> = organizer
                    .sessions()
                    .ok()?
                    .iter()
                    .filter(same)
                    .cloned()
                    .collect();
                (found.len() == 1).then(|| found[0].id.clone())
            })
        }
    };
    let info = organizer.event_info()?;
    let mut sessions = organizer.sessions()?;
    sessions.sort_by(|a, b| (a.start_unix, &a.room, &a.id).cmp(&(b.start_unix, &b.room, &b.id)));
    let mut rooms: Vec<String> = sessions.iter().map(|s| s.room.clone()).collect();
    rooms.sort();
    rooms.dedup();
    Ok(PublishedAgenda {
        source: source.label(),
        name: info.name,
        time_zone: info.time_zone,
        rooms,
        sessions,
        written_last,
    })
}

/// The agenda and the schedule changes of a run with this source, seed and
/// number of changes, as plain values, for a peer system's runner
/// (`tests/peers/automerge-repo/bench.mjs --agenda-json`): made through the
/// same importer on an offline organizer device.
pub fn agenda_json(
    source: &AgendaSource,
    seed: u64,
    changes: usize,
) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let identity = lanyard_server::Identity::load_or_create(dir.path())?;
    let organizer = Client::in_memory()?;
    organizer.join(&link(
        &identity,
        "127.0.0.1:9".parse()?,
        &claims(Role::Organizer, "organizer")?,
    )?)?;
    let agenda = write_agenda(&organizer, source, seed)?;
    let plan = plan_changes(seed, &agenda, changes)?;
    let storm = storm_change(seed, &agenda)?;
    let session = |s: &Session| {
        serde_json::json!({
            "id": s.id,
            "title": s.title,
            "abstract": s.abstract_text,
            "room": s.room,
            "start": s.start_unix,
            "end": s.end_unix,
            "track": s.track,
            "speakers": s.speakers,
            "status": s.status.as_str(),
        })
    };
    let change = |c: &Change| {
        serde_json::json!({
            "session": c.session,
            "room": c.room,
            "times": c.times.map(|(s, e)| [s, e]),
        })
    };
    Ok(serde_json::json!({
        "workload": "venue v2",
        "source": agenda.source,
        "seed": seed,
        "event": { "name": agenda.name, "time_zone": agenda.time_zone },
        "rooms": agenda.rooms,
        "sessions": agenda.sessions.iter().map(session).collect::<Vec<_>>(),
        "changes": plan.iter().map(change).collect::<Vec<_>>(),
        "storm": change(&storm),
    }))
}

/// What to run.
#[derive(Debug, Clone)]
pub struct VenueConfig {
    /// Attendee devices.
    pub attendees: usize,
    /// The agenda: a schedule file (v2) or the seeded synthetic one (v1).
    pub agenda: AgendaSource,
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
    /// Where the server runs.
    pub server: ServerMode,
    /// Devices per client UDP endpoint (socket); 1 gives each device its own.
    pub devices_per_endpoint: usize,
    /// Devices that keep a full copy of the agenda (the first ones); the rest
    /// are light devices (see [`crate::light`]). `None`: all of them up to
    /// 1,000 devices, 1,000 above.
    pub full_devices: Option<usize>,
    /// Run the rush phase (every device reserves a seat in the same second).
    pub rush: Option<RushConfig>,
    /// Server nodes (processes); more than one share [`VenueConfig::store`].
    pub nodes: usize,
    /// The nodes' PostgreSQL store (`postgres://…`); sled when `None`.
    pub store: Option<String>,
}

/// The rush: a keynote ends and every device reserves one of `sessions`
/// breakout sessions of `capacity` seats within the same second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RushConfig {
    /// Breakout sessions.
    pub sessions: usize,
    /// Seats in each.
    pub capacity: u32,
}

impl Default for RushConfig {
    fn default() -> Self {
        RushConfig {
            sessions: 40,
            capacity: 100,
        }
    }
}

/// Figures of the rush phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RushFigures {
    /// Seat requests made (one per device).
    pub requests: usize,
    /// Breakout sessions.
    pub sessions: usize,
    /// Seats per session.
    pub capacity: u32,
    /// Requests confirmed.
    pub confirmed: usize,
    /// Requests waitlisted.
    pub waitlisted: usize,
    /// Requests refused.
    pub refused: usize,
    /// Sessions with more confirmed seats than their capacity (must be 0).
    pub overbooked: usize,
    /// Outcomes not in arrival order: a seat given after someone who came
    /// earlier was waitlisted, or a waitlist place out of arrival order
    /// (must be 0).
    pub out_of_order: usize,
    /// Most seats confirmed in one session.
    pub max_confirmed: usize,
    /// Time from the rush's start until each device knew its outcome.
    pub outcome_ms: Percentiles,
    /// Time to make every request (the devices' side), ms.
    pub requests_made_ms: f64,
    /// Bytes the server sent per device in the rush (requests' Acks, the
    /// outcomes and the count updates).
    pub bytes_per_device: f64,
    /// Server CPU in the rush, s.
    pub server_cpu_s: f64,
}

impl Default for VenueConfig {
    fn default() -> Self {
        VenueConfig {
            attendees: 200,
            agenda: AgendaSource::File(default_agenda_file()),
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
            server: ServerMode::InProcess,
            devices_per_endpoint: 1,
            full_devices: None,
            rush: None,
            nodes: 1,
            store: None,
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
    /// Server nodes, and their store ("sled", or the PostgreSQL URL without
    /// its password).
    pub nodes: usize,
    /// Where the nodes keep the documents.
    pub store: String,
    /// Each node's CPU seconds and peak resident bytes over the run.
    pub node_cost: Vec<(f64, u64)>,
    /// Fan-out arrival to devices on the organizer's node, and on the
    /// others (several nodes only), ms.
    pub fanout_same_node_ms: Option<Percentiles>,
    /// See [`VenueReport::fanout_same_node_ms`].
    pub fanout_cross_node_ms: Option<Percentiles>,
    /// The database's commits per second during the changes phase, and the
    /// highest NOTIFY queue usage seen at a phase's end (PostgreSQL only).
    pub database: Option<(f64, f64)>,
    /// Link profile name, or "loopback".
    pub profile: String,
    /// Seed.
    pub seed: u64,
    /// The agenda ([`AgendaSource::label`]).
    pub agenda: String,
    /// Sessions in the agenda.
    pub sessions: usize,
    /// Rooms holding sessions in the agenda.
    pub rooms: usize,
    /// Resident memory of this simulator process (organizer and devices; the
    /// server too when it runs in-process) before any device existed, bytes.
    pub sim_rss_before_devices_bytes: u64,
    /// Resident memory of this simulator process once every device held the
    /// agenda and had uploaded its note, bytes.
    pub sim_rss_after_join_bytes: u64,
    /// Peak resident memory of this simulator process over the run, bytes.
    pub sim_peak_rss_bytes: u64,
    /// What each device adds to the simulator's resident memory:
    /// (after join - before devices) / devices, bytes.
    pub sim_rss_per_device_bytes: f64,
    /// Devices with nothing pending whose copy of every session the workload
    /// touched (of every session, up to 1,000 devices) equals the organizer's.
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
    /// Latency from an organizer's change to a device's copy holding it
    /// (applied, found by the change's hash), over all devices and changes.
    pub fanout_ms: Percentiles,
    /// Latency from an organizer's change to its arrival at a device (the
    /// frame decoded and the change's hash computed, before it is applied):
    /// the server's part of the fan-out.
    pub fanout_arrival_ms: Percentiles,
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
    /// The rush (None if not run).
    pub rush: Option<RushFigures>,
    /// Server admission counters at the end.
    pub admission: AdmissionStats,
    /// Packets dropped by the impairment proxy (0 on loopback).
    pub proxy_drops: u64,
    /// Whether the server ran as its own process (else its memory and CPU
    /// figures include the simulated devices').
    pub server_process: bool,
    /// Peak resident memory of the server process, bytes.
    pub server_peak_rss_bytes: u64,
    /// CPU time of the server process over the whole run, s.
    pub server_cpu_s: f64,
    /// Grouped store flushes of the server, and the writes they made durable.
    pub server_flushes: u64,
    /// Writes made durable by those flushes.
    pub server_flushed_writes: u64,
    /// Where the server's bytes went (handshakes, frames, losses, keep-alives).
    pub server_traffic: lanyard_server::TrafficStats,
    /// The most bytes one device's outbox held on the server.
    pub server_outbox_peak_bytes: u64,
    /// Per phase: wall time, server CPU, server memory, bytes sent.
    pub phases: Vec<PhaseFigures>,
    /// Mean size of the organizer's Automerge change in the changes phase, bytes.
    pub change_size_bytes: f64,
    /// Devices that never converged (must be 0).
    pub never_converged: usize,
    /// The last error each device saw, counted by message.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Versions of what was measured.
    pub versions: std::collections::BTreeMap<String, String>,
    /// Per-device latencies of each phase, ms (for plots; not in the JSON).
    #[serde(skip)]
    pub samples: PhaseSamples,
    /// Wall time of the whole run, s.
    pub wall_s: f64,
}

/// Figures of one phase of the workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PhaseFigures {
    /// publish, join, changes or storm.
    pub phase: String,
    /// Wall time of the phase, ms.
    pub wall_ms: f64,
    /// CPU time the server used in the phase, s.
    pub server_cpu_s: f64,
    /// Peak resident memory of the server by the end of the phase, bytes.
    pub server_peak_rss_bytes: u64,
    /// Bytes the server sent in the phase.
    pub bytes_sent: u64,
    /// Where they went: handshakes completed, frame bytes, bytes lost and
    /// resent, datagrams, keep-alive and acknowledgement frames (the
    /// server's counters over the phase).
    pub traffic: lanyard_server::TrafficStats,
    /// Datagrams the kernel dropped on the server's full UDP receive buffer.
    pub udp_receive_drops: u64,
}

/// Per-device latencies of each phase, ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PhaseSamples {
    /// Join: time for each device to hold the agenda.
    pub join: Vec<f64>,
    /// Changes: time from each change to each device holding it.
    pub changes: Vec<f64>,
    /// Changes: time from each change to its arrival at each device.
    pub arrivals: Vec<f64>,
    /// Storm: time for each device to hold the storm change.
    pub storm: Vec<f64>,
}

fn ms(d: &[Duration]) -> Vec<f64> {
    d.iter().map(|d| d.as_secs_f64() * 1000.0).collect()
}

/// Tracks phase boundaries against the server's counters.
struct PhaseClock {
    started: Instant,
    at: StatsSnapshot,
    done: Vec<PhaseFigures>,
}

impl PhaseClock {
    async fn start(backend: &Backend) -> anyhow::Result<PhaseClock> {
        Ok(PhaseClock {
            started: Instant::now(),
            at: backend.fresh_stats().await?,
            done: Vec::new(),
        })
    }

    /// Ends the running phase and starts the next one.
    async fn end(&mut self, backend: &Backend, phase: &str) -> anyhow::Result<()> {
        let wall_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let now = backend.fresh_stats().await?;
        self.done.push(PhaseFigures {
            phase: phase.to_owned(),
            wall_ms,
            server_cpu_s: now.cpu_seconds - self.at.cpu_seconds,
            server_peak_rss_bytes: now.peak_rss_bytes,
            bytes_sent: now.bytes_sent.saturating_sub(self.at.bytes_sent),
            traffic: now.traffic.since(&self.at.traffic),
            udp_receive_drops: now
                .udp_receive_drops
                .saturating_sub(self.at.udp_receive_drops),
        });
        self.at = now;
        self.started = Instant::now();
        Ok(())
    }

    fn bytes(&self, phase: &str) -> u64 {
        self.done
            .iter()
            .find(|p| p.phase == phase)
            .map_or(0, |p| p.bytes_sent)
    }
}

/// Resident and peak resident memory of this process, bytes (0 where
/// `/proc/self/status` cannot be read).
pub fn own_memory() -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (0, 0);
    };
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |k| k * 1024)
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// Versions of what a run measures.
pub fn versions() -> std::collections::BTreeMap<String, String> {
    let mut v = std::collections::BTreeMap::new();
    v.insert("lanyard".into(), env!("CARGO_PKG_VERSION").into());
    for (name, version) in [
        ("automerge", option_env!("LANYARD_DEP_AUTOMERGE")),
        ("quinn", option_env!("LANYARD_DEP_QUINN")),
        ("sled", option_env!("LANYARD_DEP_SLED")),
        ("tokio", option_env!("LANYARD_DEP_TOKIO")),
        ("rustls", option_env!("LANYARD_DEP_RUSTLS")),
    ] {
        v.insert(name.into(), version.unwrap_or("unknown").into());
    }
    v
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
            "lanyard-venue: {} attendees, profile {}, seed {}, {} node(s) on {}",
            self.attendees, self.profile, self.seed, self.nodes, self.store
        )?;
        writeln!(
            f,
            "  converged            {}/{}",
            self.converged, self.attendees
        )?;
        writeln!(f, "  lost writes          {}", self.lost_writes)?;
        writeln!(
            f,
            "  agenda               {} ({} sessions, {} rooms)",
            self.agenda, self.sessions, self.rooms
        )?;
        writeln!(f, "  publish              {:.0} ms", self.publish_ms)?;
        writeln!(
            f,
            "  join (ms)            {}  total {:.0}",
            p(&self.join_ms),
            self.join_total_ms
        )?;
        writeln!(f, "  change fan-out (ms)  {}", p(&self.fanout_ms))?;
        writeln!(f, "    arrival (ms)       {}", p(&self.fanout_arrival_ms))?;
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
        if let Some(r) = &self.rush {
            writeln!(
                f,
                "  rush                 {} requests for {} sessions of {} seats: {} confirmed, {} waitlisted, {} refused; \
                 overbooked {}, out of order {}, most confirmed in a session {}",
                r.requests,
                r.sessions,
                r.capacity,
                r.confirmed,
                r.waitlisted,
                r.refused,
                r.overbooked,
                r.out_of_order,
                r.max_confirmed
            )?;
            writeln!(
                f,
                "    outcome known (ms) {}  (requests made in {:.0} ms); {:.0} B per device, {:.2} s server CPU",
                p(&r.outcome_ms),
                r.requests_made_ms,
                r.bytes_per_device,
                r.server_cpu_s
            )?;
        }
        writeln!(f, "  proxy drops          {}", self.proxy_drops)?;
        writeln!(
            f,
            "  change size          {:.0} B (Automerge change of one schedule edit)",
            self.change_size_bytes
        )?;
        let whose = if self.server_process {
            "server process"
        } else {
            "whole process, server in-process"
        };
        writeln!(
            f,
            "  server               peak {:.0} MiB resident, {:.1} s CPU ({whose}); {} writes in {} flushes",
            self.server_peak_rss_bytes as f64 / 1048576.0,
            self.server_cpu_s,
            self.server_flushed_writes,
            self.server_flushes
        )?;
        if self.nodes > 1 {
            for (i, (cpu, rss)) in self.node_cost.iter().enumerate() {
                writeln!(
                    f,
                    "  node {i}               peak {:.0} MiB resident, {cpu:.1} s CPU",
                    *rss as f64 / 1048576.0
                )?;
            }
        }
        if let (Some(same), Some(cross)) = (&self.fanout_same_node_ms, &self.fanout_cross_node_ms) {
            writeln!(f, "  fan-out, same node   {} (arrival, ms)", p(same))?;
            writeln!(f, "  fan-out, cross-node  {} (arrival, ms)", p(cross))?;
        }
        if let Some((commits, queue)) = self.database {
            writeln!(
                f,
                "  database             {commits:.0} commits/s during the changes; NOTIFY queue at most {:.4} % full",
                queue * 100.0
            )?;
        }
        let t = &self.server_traffic;
        writeln!(
            f,
            "  server traffic       {} handshakes, {} B of frames in {} B sent ({} datagrams), \
             {} B lost and resent, {} pings, {} acks, {} crypto frames; outbox peak {} B",
            t.handshakes,
            t.frame_bytes,
            self.bytes_per_device as u64 * self.attendees as u64,
            t.datagrams,
            t.lost_bytes,
            t.ping_frames,
            t.ack_frames,
            t.crypto_frames,
            self.server_outbox_peak_bytes
        )?;
        writeln!(
            f,
            "  {:<12} {:>8} {:>8} {:>8} {:>12} {:>12} {:>10} {:>10} {:>9} {:>9} {:>9}",
            "phase",
            "wall s",
            "CPU s",
            "peak MiB",
            "bytes sent",
            "of frames",
            "lost",
            "datagrams",
            "handshakes",
            "acks",
            "rx drops"
        )?;
        for p in &self.phases {
            writeln!(
                f,
                "  {:<12} {:>8.1} {:>8.2} {:>8.0} {:>12} {:>12} {:>10} {:>10} {:>9} {:>9} {:>9}",
                p.phase,
                p.wall_ms / 1000.0,
                p.server_cpu_s,
                p.server_peak_rss_bytes as f64 / 1048576.0,
                p.bytes_sent,
                p.traffic.frame_bytes,
                p.traffic.lost_bytes,
                p.traffic.datagrams,
                p.traffic.handshakes,
                p.traffic.ack_frames,
                p.udp_receive_drops
            )?;
        }
        writeln!(
            f,
            "  simulator memory     {:.0} MiB before devices, {:.0} MiB after join, peak {:.0} MiB: {:.2} MiB per device",
            self.sim_rss_before_devices_bytes as f64 / 1048576.0,
            self.sim_rss_after_join_bytes as f64 / 1048576.0,
            self.sim_peak_rss_bytes as f64 / 1048576.0,
            self.sim_rss_per_device_bytes / 1048576.0
        )?;
        for (e, n) in &self.errors {
            writeln!(f, "  last error of {n} device(s): {e}")?;
        }
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
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    session: String,
    room: String,
    times: Option<(i64, i64)>,
}

impl Change {
    /// Whether a copy of the session shows this change.
    #[cfg(test)]
    fn shown_by(&self, s: &Session) -> bool {
        s.room == self.room && self.times.is_none_or(|(start, _)| s.start_unix == start)
    }
}

/// The session the storm moves; the changes phase never moves it.
fn storm_index(agenda: &PublishedAgenda) -> usize {
    agenda.sessions.len() / 2
}

/// A room of the agenda other than `current`, chosen by `rng`.
fn other_room(rng: &mut ChaCha8Rng, rooms: &[String], current: &str) -> String {
    let others: Vec<&String> = rooms.iter().filter(|r| *r != current).collect();
    others[rng.random_range(0..others.len())].clone()
}

/// The `n` changes of the changes phase, on `n` distinct sessions (never the
/// storm's): even-numbered ones move a session to another of the agenda's
/// rooms, odd-numbered ones to another room and 30 minutes later. Distinct
/// sessions make "the device shows change k" unambiguous: a session picked
/// twice would show only its last move, and a device receiving both at once
/// would never be counted for the first (issue 14).
fn plan_changes(seed: u64, agenda: &PublishedAgenda, n: usize) -> anyhow::Result<Vec<Change>> {
    if agenda.rooms.len() < 2 {
        bail!(
            "agenda {}: the changes move sessions between rooms, and it has {} room(s)",
            agenda.source,
            agenda.rooms.len()
        );
    }
    if n >= agenda.sessions.len() {
        bail!(
            "--changes {n}: the agenda {} has {} sessions; each change moves a different \
             session and one is kept for the storm",
            agenda.source,
            agenda.sessions.len()
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let storm = storm_index(agenda);
    let mut pool: Vec<usize> = (0..agenda.sessions.len()).filter(|i| *i != storm).collect();
    Ok((0..n)
        .map(|k| {
            let j = rng.random_range(k..pool.len());
            pool.swap(k, j);
            let s = &agenda.sessions[pool[k]];
            Change {
                session: s.id.clone(),
                room: other_room(&mut rng, &agenda.rooms, &s.room),
                times: (k % 2 == 1).then(|| (s.start_unix + 1800, s.end_unix + 1800)),
            }
        })
        .collect())
}

/// The storm's change: the middle session moves to another room.
fn storm_change(seed: u64, agenda: &PublishedAgenda) -> anyhow::Result<Change> {
    if agenda.rooms.len() < 2 {
        bail!(
            "agenda {}: the storm moves a session to another room, and it has one",
            agenda.source
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5707_0000);
    let s = &agenda.sessions[storm_index(agenda)];
    Ok(Change {
        session: s.id.clone(),
        room: other_room(&mut rng, &agenda.rooms, &s.room),
        times: None,
    })
}

/// A simulated device: a full client (a copy of the agenda, the shipped
/// background sync) or a light one (see [`crate::light`]).
#[derive(Clone)]
enum Kind {
    Full(Client),
    Light(Arc<Light>, quinn::Endpoint, LightLink),
}

struct Device {
    kind: Kind,
    sync: Option<DevSync>,
}

enum DevSync {
    Full(BackgroundSync),
    Light(LightSync),
}

impl DevSync {
    async fn stop(self) {
        match self {
            DevSync::Full(s) => s.stop().await,
            DevSync::Light(s) => s.stop().await,
        }
    }
}

/// What the benchmark reads of a device.
struct DevStatus {
    connected: bool,
    pending: usize,
    last_error: Option<String>,
    retries: u64,
}

impl Kind {
    /// Whether the device holds the agenda change `hash` (applied to its
    /// copy; for a light device: arrived).
    fn holds(&self, agenda: &DocId, hash: &Hash) -> bool {
        match self {
            Kind::Full(c) => c.has_change(agenda, hash).unwrap_or(false),
            Kind::Light(l, ..) => l.holds(hash),
        }
    }

    fn heads(&self, agenda: &DocId) -> anyhow::Result<Vec<Hash>> {
        Ok(match self {
            Kind::Full(c) => c.heads(agenda)?,
            Kind::Light(l, ..) => l.heads(),
        })
    }

    fn updates(&self) -> tokio::sync::watch::Receiver<u64> {
        match self {
            Kind::Full(c) => c.remote_changes(),
            Kind::Light(l, ..) => l.updates(),
        }
    }

    fn status(&self) -> DevStatus {
        match self {
            Kind::Full(c) => {
                let s = c.status();
                DevStatus {
                    connected: s.connected,
                    pending: s.pending_changes as usize,
                    last_error: s.last_error,
                    retries: s.retries,
                }
            }
            Kind::Light(l, ..) => DevStatus {
                connected: l.connected(),
                pending: l.pending(),
                last_error: l.last_error(),
                retries: l.retries(),
            },
        }
    }

    /// Sets (or clears) the probe told of every agenda change that arrives.
    fn set_probe(&self, probe: Option<crate::light::Probe>) {
        match self {
            Kind::Full(c) => {
                c.set_arrival_probe(probe.map(|p| Box::new(move |_: &DocId, h: &[Hash]| p(h)) as _))
            }
            Kind::Light(l, ..) => l.set_probe(probe),
        }
    }

    fn start(&self, cfg: &VenueConfig) -> anyhow::Result<DevSync> {
        Ok(match self {
            Kind::Full(c) => DevSync::Full(c.start_background(background(cfg))),
            Kind::Light(l, endpoint, link) => DevSync::Light(LightSync::start(
                l.clone(),
                endpoint.clone(),
                link.clone(),
                background(cfg).policy(),
            )?),
        })
    }

    fn full(&self) -> Option<&Client> {
        match self {
            Kind::Full(c) => Some(c),
            Kind::Light(..) => None,
        }
    }

    /// Reserves a seat in `session` (on the device, pushed by its live
    /// connection).
    fn reserve(&self, session: &SessionId) -> anyhow::Result<RequestId> {
        Ok(match self {
            Kind::Full(c) => RequestId::new(c.reserve(session.as_str())?)?,
            Kind::Light(l, ..) => l.reserve(session)?,
        })
    }

    /// The server's answer to `request`, once the device holds it: state,
    /// waitlist place and arrival order.
    fn seat_outcome(
        &self,
        request: &RequestId,
        session: &SessionId,
    ) -> Option<(SeatState, Option<u32>, u64)> {
        match self {
            Kind::Full(c) => {
                let r = c
                    .reservations()
                    .ok()?
                    .into_iter()
                    .find(|r| r.session == session.as_str())?;
                let state = match r.state {
                    ReservationState::Pending => return None,
                    ReservationState::Confirmed => SeatState::Confirmed,
                    ReservationState::Waitlisted => SeatState::Waitlisted,
                    ReservationState::Offered => SeatState::Offered,
                    ReservationState::Refused => SeatState::Refused,
                    ReservationState::Cancelled => SeatState::Cancelled,
                };
                Some((state, r.position, r.arrival))
            }
            Kind::Light(l, ..) => l
                .outcome(request, session)
                .map(|o| (o.state, o.position, o.seq)),
        }
    }
}

/// Checks the rush's outcomes: how many of each, sessions over capacity,
/// and outcomes out of arrival order (in each session the first `capacity`
/// arrivals hold the seats and the rest wait in arrival order).
fn rush_figures(
    rush: RushConfig,
    outcomes: &[(SessionId, SeatState, Option<u32>, u64)],
) -> RushFigures {
    let mut fig = RushFigures {
        requests: outcomes.len(),
        sessions: rush.sessions,
        capacity: rush.capacity,
        ..RushFigures::default()
    };
    /// Arrival order, state and waitlist place of each outcome.
    type Seen = (u64, SeatState, Option<u32>);
    let mut by_session: HashMap<&SessionId, Vec<Seen>> = HashMap::new();
    for (s, state, pos, seq) in outcomes {
        match state {
            SeatState::Confirmed | SeatState::Offered => fig.confirmed += 1,
            SeatState::Waitlisted => fig.waitlisted += 1,
            SeatState::Refused | SeatState::Cancelled => fig.refused += 1,
        }
        by_session.entry(s).or_default().push((*seq, *state, *pos));
    }
    for list in by_session.values_mut() {
        list.sort_by_key(|(seq, ..)| *seq);
        let held = list
            .iter()
            .filter(|(_, s, _)| matches!(s, SeatState::Confirmed | SeatState::Offered))
            .count();
        fig.max_confirmed = fig.max_confirmed.max(held);
        if held > rush.capacity as usize {
            fig.overbooked += 1;
        }
        let mut place = 0;
        for (k, (_, state, pos)) in list.iter().enumerate() {
            let ok = if k < rush.capacity as usize {
                matches!(state, SeatState::Confirmed | SeatState::Offered)
            } else {
                place += 1;
                *state == SeatState::Waitlisted && *pos == Some(place)
            };
            if !ok {
                fig.out_of_order += 1;
            }
        }
    }
    fig
}

fn link(
    id: &lanyard_server::Identity,
    addr: SocketAddr,
    claims: &TokenClaims,
) -> anyhow::Result<String> {
    Ok(JoinLink {
        servers: vec![addr.to_string()],
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

/// How often a device re-checks a condition without being woken by an
/// update (for conditions such as "nothing pending" that no update signals):
/// seldom with many devices, so the check itself never loads the machine.
fn recheck_interval(devices: usize) -> Duration {
    Duration::from_millis((devices as u64 / 2).clamp(500, 5000))
}

/// Per-device completion times of a phase, filled in by one watcher task per device.
#[derive(Clone)]
struct Tally {
    done: Arc<std::sync::Mutex<Vec<Option<Duration>>>>,
    count: Arc<std::sync::atomic::AtomicUsize>,
}

impl Tally {
    fn new(n: usize) -> Tally {
        Tally {
            done: Arc::new(std::sync::Mutex::new(vec![None; n])),
            count: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    fn record(&self, i: usize, t: Duration) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        if done[i].is_none() {
            done[i] = Some(t);
            self.count
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// How many completions are expected.
    fn len(&self) -> usize {
        self.done.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn pending(&self) -> Vec<usize> {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        (0..done.len()).filter(|i| done[*i].is_none()).collect()
    }

    /// The times of the completions whose index satisfies `keep`.
    fn times_where(&self, keep: impl Fn(usize) -> bool) -> Vec<Duration> {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .filter_map(|(_, t)| *t)
            .collect()
    }

    fn times(&self) -> Vec<Duration> {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.iter().flatten().copied().collect()
    }
}

/// Waits for a tally to reach `expected`, printing progress and the server's
/// counters; fails after the phase deadline.
async fn watch_progress(
    cfg: &VenueConfig,
    server: &Backend,
    what: &str,
    devices: &[Device],
    tally: &Tally,
    t0: Instant,
    missing: &(dyn Fn(&Tally) -> String + Sync),
) -> anyhow::Result<()> {
    let expected = tally.len();
    let deadline = t0 + cfg.phase_deadline;
    let bar = crate::progress::bar(cfg.progress, what, expected as u64);
    let mut last_report = Instant::now();
    loop {
        let n = tally.count();
        bar.set_position(n as u64);
        if n >= expected {
            bar.finish_and_clear();
            return Ok(());
        }
        if Instant::now() > deadline {
            bar.abandon();
            bail!(
                "{what}: only {n}/{expected} after {:?}; what is missing:\n{}",
                cfg.phase_deadline,
                missing(tally)
            );
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            // Say why a waiting device is waiting, from its own status.
            let why = tally
                .pending()
                .into_iter()
                .filter_map(|i| devices.get(i))
                .find_map(|dev| dev.kind.status().last_error)
                .map(|e| format!(" (a waiting device's last error: {e})"))
                .unwrap_or_default();
            let st = server.stats();
            let line = format!(
                "server: {} open ({} sessions), {} accepted, {} refused, {} MiB{why}",
                st.open_connections,
                st.sessions,
                st.admission.accepted,
                st.admission.refused(),
                st.rss_bytes >> 20,
            );
            if bar.is_hidden() {
                say(cfg, format!("{what}: {n}/{expected}; {line}"));
            } else {
                bar.set_message(line);
            }
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Describes the first waiting devices: connection, last error, the
/// agenda's heads, and `extra` (what it lacks).
fn describe_devices(
    devices: &[Device],
    waiting: &[usize],
    extra: &dyn Fn(usize) -> String,
) -> String {
    let agenda = DocId::Agenda(EventId::new(VENUE_EVENT).expect("a valid event id"));
    let mut lines = Vec::new();
    for &i in waiting.iter().take(20) {
        let Some(d) = devices.get(i) else { continue };
        let st = d.kind.status();
        let heads = d
            .kind
            .heads(&agenda)
            .map(|h| h.iter().map(hex_prefix).collect::<Vec<_>>().join(","))
            .unwrap_or_else(|e| format!("unreadable: {e}"));
        lines.push(format!(
            "  device {i}{}: connected={} pending={} retries={} last_error={:?} agenda heads=[{heads}]{}",
            if d.kind.full().is_some() {
                ""
            } else {
                " (light)"
            },
            st.connected,
            st.pending,
            st.retries,
            st.last_error,
            extra(i)
        ));
    }
    if waiting.len() > 20 {
        lines.push(format!("  ... and {} more devices", waiting.len() - 20));
    }
    lines.join("\n")
}

/// A change hash.
type Hash = [u8; 32];

/// A change the organizer made, and when.
type Made = (Hash, Instant);

/// The first 8 hex digits of a hash.
fn hex_prefix(h: &[u8; 32]) -> String {
    h[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until `cond` holds for every device; returns per-device times since
/// `t0`. Each device is checked when an update from the server reaches it,
/// and now and then regardless.
async fn wait_all(
    cfg: &VenueConfig,
    server: &Backend,
    what: &str,
    devices: &[Device],
    t0: Instant,
    cond: impl Fn(usize, &Kind) -> bool + Send + Sync + 'static,
) -> anyhow::Result<Vec<Duration>> {
    let cond = Arc::new(cond);
    let tally = Tally::new(devices.len());
    let recheck = recheck_interval(devices.len());
    let mut watchers = JoinSet::new();
    for (i, d) in devices.iter().enumerate() {
        let (kind, cond, tally) = (d.kind.clone(), cond.clone(), tally.clone());
        watchers.spawn(async move {
            let mut updates = kind.updates();
            loop {
                if cond(i, &kind) {
                    tally.record(i, t0.elapsed());
                    return;
                }
                tokio::select! {
                    r = updates.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(recheck) => {}
                }
            }
        });
    }
    let missing = |t: &Tally| describe_devices(devices, &t.pending(), &|_| String::new());
    watch_progress(cfg, server, what, devices, &tally, t0, &missing).await?;
    Ok(tally.times())
}

/// The rush: the organizer publishes the breakout sessions with their
/// capacity; once every device holds them, every device reserves one (in
/// the same second) and the phase ends when every device knows its outcome.
async fn run_rush(
    cfg: &VenueConfig,
    rush: RushConfig,
    server: &Backend,
    devices: &[Device],
    organizer: &Client,
    agenda_id: &DocId,
    clock: &mut PhaseClock,
) -> anyhow::Result<RushFigures> {
    if rush.sessions == 0 {
        bail!("--rush-sessions must be at least 1");
    }
    let start = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )? + 86_400;
    let ids: Vec<String> = (0..rush.sessions)
        .map(|k| format!("breakout-{k:02}"))
        .collect();
    let mut edits = Vec::new();
    for (k, id) in ids.iter().enumerate() {
        edits.push(lanyard_client_core::AgendaEdit::Add(
            NewSession {
                id: id.clone(),
                title: format!("Breakout {k}"),
                room: format!("Breakout room {k}"),
                start_unix: start,
                end_unix: start + 3600,
                ..NewSession::default()
            },
            lanyard_client_core::SessionDetails::default(),
        ));
        edits.push(lanyard_client_core::AgendaEdit::Capacity(
            id.clone(),
            rush.capacity,
        ));
    }
    organizer.edit_agenda(false, |e| e.apply(&edits, &mut |_, _| {}))?;
    let heads = organizer.heads(agenda_id)?;
    let (id, t) = (agenda_id.clone(), Instant::now());
    wait_all(
        cfg,
        server,
        "rush: breakouts published",
        devices,
        t,
        move |_, k| heads.iter().all(|h| k.holds(&id, h)),
    )
    .await?;
    say(
        cfg,
        format!(
            "rush: {} breakouts of {} seats published; every device reserves one",
            rush.sessions, rush.capacity
        ),
    );
    clock.end(server, "breakouts").await?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x7275_7368);
    let t0 = Instant::now();
    let mut requests = Vec::with_capacity(devices.len());
    for d in devices {
        let session = SessionId::new(ids[rng.random_range(0..ids.len())].as_str())?;
        let request = d.kind.reserve(&session)?;
        requests.push((request, session));
    }
    let requests_made = t0.elapsed();
    let requests = Arc::new(requests);
    let per = {
        let requests = requests.clone();
        wait_all(cfg, server, "rush", devices, t0, move |i, k| {
            let (r, s) = &requests[i];
            k.seat_outcome(r, s).is_some()
        })
        .await?
    };
    clock.end(server, "rush").await?;
    let mut outcomes = Vec::with_capacity(devices.len());
    for (d, (r, s)) in devices.iter().zip(requests.iter()) {
        let Some((state, pos, seq)) = d.kind.seat_outcome(r, s) else {
            bail!("rush: a device lost its outcome of request {r}");
        };
        outcomes.push((s.clone(), state, pos, seq));
    }
    let mut fig = rush_figures(rush, &outcomes);
    fig.outcome_ms = Percentiles::of(&per);
    fig.requests_made_ms = requests_made.as_secs_f64() * 1000.0;
    if let Some(p) = clock.done.last() {
        fig.bytes_per_device = p.bytes_sent as f64 / devices.len().max(1) as f64;
        fig.server_cpu_s = p.server_cpu_s;
    }
    say(
        cfg,
        format!(
            "rush: every device knows its outcome after {:.0} ms ({} confirmed, {} waitlisted, {} overbooked, {} out of order)",
            fig.outcome_ms.max, fig.confirmed, fig.waitlisted, fig.overbooked, fig.out_of_order
        ),
    );
    Ok(fig)
}

/// Runs the whole workload.
pub async fn run(cfg: VenueConfig) -> anyhow::Result<VenueReport> {
    let wall = Instant::now();
    let dir = tempfile::tempdir()?;
    let identity = lanyard_server::Identity::load_or_create(dir.path())?;
    let (server, node_addrs) = Backend::start_nodes(
        &cfg.server,
        dir.path(),
        cfg.admission,
        cfg.nodes,
        cfg.store.as_deref(),
    )
    .await?;
    let server_addr = node_addrs[0];
    // Devices are spread over the nodes (device i on node i mod n), each
    // node behind its own impairment proxy when a profile is given.
    let mut netems = Vec::new();
    let mut connect_addrs = Vec::with_capacity(node_addrs.len());
    for (k, addr) in node_addrs.iter().enumerate() {
        match &cfg.profile {
            Some((_, profile)) => {
                let n = Netem::start(NetemConfig {
                    listen: "127.0.0.1:0".parse()?,
                    upstream: *addr,
                    profile: profile.clone(),
                    seed: cfg.seed.wrapping_add(k as u64),
                    time_scale: cfg.time_scale,
                })
                .await?;
                connect_addrs.push(n.local_addr());
                netems.push(n);
            }
            None => connect_addrs.push(*addr),
        }
    }
    let connect_addr = connect_addrs[0];
    let store_label = cfg
        .store
        .as_deref()
        .map_or_else(|| "sled".to_owned(), lanyard_store_postgres::redact);
    let database = |sql: &str| -> Option<f64> {
        let url = cfg.store.as_deref()?;
        lanyard_store_postgres::testing::psql_url(url, sql)
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let commits =
        || database("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()");
    let mut notify_peak: f64 = 0.0;
    let sample_queue = |peak: &mut f64| {
        if let Some(q) = database("SELECT pg_notification_queue_usage()") {
            *peak = peak.max(q);
        }
    };
    let profile_name = cfg
        .profile
        .as_ref()
        .map_or("loopback".to_owned(), |p| p.0.clone());
    say(
        &cfg,
        if node_addrs.len() > 1 {
            format!(
                "{} nodes on {store_label} ({}), devices spread over them ({profile_name})",
                node_addrs.len(),
                node_addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!("server on {server_addr}, devices connect to {connect_addr} ({profile_name})")
        },
    );

    // Publish.
    let mut clock = PhaseClock::start(&server).await?;
    // The organizer's store shows the size of each change it makes.
    let organizer_store: Arc<dyn lanyard_store::Store> =
        Arc::new(lanyard_store::MemoryStore::default());
    let organizer = Client::with_store(organizer_store.clone())?;
    // The organizer works from the back office, straight to the server; the
    // attendees' devices go through the venue link.
    organizer.join(&link(
        &identity,
        server_addr,
        &claims(Role::Organizer, "organizer")?,
    )?)?;
    let agenda = write_agenda(&organizer, &cfg.agenda, cfg.seed)?;
    let sessions = &agenda.sessions;
    // Checked before any device exists.
    let plan = plan_changes(cfg.seed, &agenda, cfg.changes)?;
    let storm_move = storm_change(cfg.seed, &agenda)?;
    say(
        &cfg,
        format!(
            "agenda {}: {} sessions in {} rooms, {}; seed {}",
            agenda.source,
            sessions.len(),
            agenda.rooms.len(),
            agenda.time_zone,
            cfg.seed
        ),
    );
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
    clock.end(&server, "publish").await?;

    // Join: every device starts syncing at once and types a note offline first.
    let sim_rss_before_devices = own_memory().0;
    let mut devices = Vec::with_capacity(cfg.attendees);
    let mut endpoint: Option<quinn::Endpoint> = None;
    let full_devices = cfg
        .full_devices
        .unwrap_or(cfg.attendees.min(1000))
        .min(cfg.attendees);
    let event = EventId::new(VENUE_EVENT)?;
    for i in 0..cfg.attendees {
        if cfg.devices_per_endpoint > 1 && i % cfg.devices_per_endpoint == 0 {
            endpoint = Some(
                lanyard_client_core::shared_endpoint("127.0.0.1:0".parse()?)
                    .context("cannot open a client endpoint")?,
            );
        }
        let user = format!("a{i:05}");
        let session = &sessions[i % sessions.len()].id;
        let note = format!("note of attendee {i}");
        if i >= full_devices {
            let claims = claims(Role::Attendee, &user)?;
            let mut actor = [0u8; 16];
            actor[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            actor[8..].copy_from_slice(&cfg.seed.to_be_bytes());
            let own = DocId::Attendee(event.clone(), UserId::new(&user)?);
            let light = Light::new(&event, own, actor, session, &note)?;
            let link = LightLink {
                addr: connect_addrs[i % connect_addrs.len()],
                pin: identity.pin(),
                event: event.clone(),
                token: identity.sign(&claims),
            };
            let endpoint = match &endpoint {
                Some(e) => e.clone(),
                None => lanyard_client_core::shared_endpoint("127.0.0.1:0".parse()?)?,
            };
            devices.push(Device {
                kind: Kind::Light(light, endpoint, link),
                sync: None,
            });
            continue;
        }
        let client = Client::in_memory()?;
        if cfg.devices_per_endpoint > 1 {
            if let Some(e) = &endpoint {
                client.share_endpoint(e.clone());
            }
        }
        client.join(&link(
            &identity,
            connect_addrs[i % connect_addrs.len()],
            &claims(Role::Attendee, &user)?,
        )?)?;
        client.set_note(session, &note)?;
        devices.push(Device {
            kind: Kind::Full(client),
            sync: None,
        });
    }
    if full_devices < cfg.attendees {
        say(
            &cfg,
            format!(
                "{full_devices} devices keep a full copy of the agenda, {} are light",
                cfg.attendees - full_devices
            ),
        );
    }
    clock.end(&server, "setup").await?;
    let t_join = Instant::now();
    for d in &mut devices {
        d.sync = Some(d.kind.start(&cfg)?);
    }
    let n_sessions = sessions.len();
    // A device holds the agenda when it holds every head of the organizer's
    // published agenda (by hash: the changes under them come with them).
    let agenda_id = DocId::Agenda(EventId::new(VENUE_EVENT)?);
    let published = organizer.heads(&agenda_id)?;
    let join = {
        let agenda_id = agenda_id.clone();
        wait_all(&cfg, &server, "join", &devices, t_join, move |_, k| {
            published.iter().all(|h| k.holds(&agenda_id, h))
        })
        .await?
    };
    let join_total_ms = join.iter().max().map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    // On small runs (the tests), the join check is checked: a device that
    // holds the session written last holds every session.
    if devices.len() <= 50 {
        for (i, c) in devices.iter().filter_map(|d| d.kind.full()).enumerate() {
            let held = c.sessions()?.len();
            if held != n_sessions {
                bail!("join: device {i} passed the join check holding {held} of {n_sessions} sessions");
            }
        }
    }
    wait_all(&cfg, &server, "notes uploaded", &devices, t_join, |_, k| {
        k.status().pending == 0
    })
    .await?;
    clock.end(&server, "join").await?;
    let sim_rss_after_join = own_memory().0;
    let join_bytes = clock.bytes("join");
    say(
        &cfg,
        format!(
            "join: all {} devices hold the agenda after {join_total_ms:.0} ms",
            devices.len()
        ),
    );

    // Changes: one per interval; per device, time from the change to seeing it.
    let mut fanout = Vec::new();
    let mut change_sizes = Vec::new();
    let agenda_key = DocId::Agenda(EventId::new(VENUE_EVENT)?).to_string();
    let stored = |s: &Arc<dyn lanyard_store::Store>| -> anyhow::Result<usize> {
        Ok(s.load_doc(&agenda_key)?.map_or(0, |b| b.len()))
    };
    // A change counts for a device when the device holds it: the hash of
    // the organizer's change, applied (not queued). One watcher per device
    // checks the changes made so far whenever an update reaches it; an
    // arrival probe records when each change's frame reached it.
    let agenda_id = DocId::Agenda(EventId::new(VENUE_EVENT)?);
    let made: Arc<std::sync::Mutex<Vec<Made>>> = Arc::default();
    // When each device saw each agenda change arrive, kept as it happens:
    // a change can reach a device before the organizer has recorded its
    // hash as made, so arrival times are matched to the changes afterwards.
    let seen: Arc<std::sync::Mutex<HashMap<(usize, Hash), Instant>>> = Arc::default();
    let (made_tx, made_rx) = tokio::sync::watch::channel(0usize);
    let tally = Tally::new(devices.len() * plan.len());
    let arrivals = Tally::new(devices.len() * plan.len());
    let recheck = recheck_interval(devices.len());
    let mut watchers = JoinSet::new();
    for (i, d) in devices.iter().enumerate() {
        let (kind, made, tally) = (d.kind.clone(), made.clone(), tally.clone());
        let total = plan.len();
        {
            let seen = seen.clone();
            kind.set_probe(Some(Box::new(move |hashes| {
                let now = Instant::now();
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                for h in hashes {
                    seen.entry((i, *h)).or_insert(now);
                }
            })));
        }
        let mut made_rx = made_rx.clone();
        let agenda_id = agenda_id.clone();
        watchers.spawn(async move {
            let mut updates = kind.updates();
            let mut seen = vec![false; total];
            loop {
                let now_made: Vec<(usize, [u8; 32], Instant)> = {
                    let m = made.lock().unwrap_or_else(|e| e.into_inner());
                    m.iter()
                        .enumerate()
                        .filter(|(k, _)| !seen[*k])
                        .map(|(k, (h, t))| (k, *h, *t))
                        .collect()
                };
                for (k, hash, t) in now_made {
                    if kind.holds(&agenda_id, &hash) {
                        seen[k] = true;
                        tally.record(i * total + k, t.elapsed());
                    }
                }
                if seen.iter().all(|s| *s) {
                    return;
                }
                tokio::select! {
                    r = updates.changed() => if r.is_err() { return },
                    _ = made_rx.changed() => {}
                    _ = tokio::time::sleep(recheck) => {}
                }
            }
        });
    }
    sample_queue(&mut notify_peak);
    let commits_before = commits();
    let t_changes = Instant::now();
    let total = plan.len();
    let missing = |t: &Tally| {
        let pending = t.pending();
        let mut by_device: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for p in pending {
            by_device.entry(p / total).or_default().push(p % total);
        }
        let made = made.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let waiting: Vec<usize> = by_device.keys().copied().collect();
        describe_devices(&devices, &waiting, &|i| {
            let lacks: Vec<String> = by_device[&i]
                .iter()
                .map(|k| match made.get(*k) {
                    Some((h, _)) => format!("{k} ({})", hex_prefix(h)),
                    None => format!("{k} (not made yet)"),
                })
                .collect();
            format!(" lacks changes [{}]", lacks.join(", "))
        })
    };
    let progress = watch_progress(
        &cfg, &server, "changes", &devices, &tally, t_changes, &missing,
    );
    let organize = async {
        for (k, ch) in plan.iter().enumerate() {
            let before = stored(&organizer_store)?;
            let t = Instant::now();
            organizer.move_session(
                &ch.session,
                Some(ch.room.clone()),
                ch.times.map(|t| t.0),
                ch.times.map(|t| t.1),
            )?;
            // The organizer is the agenda's only writer: its one head is
            // the change just made.
            let heads = organizer.heads(&agenda_id)?;
            let [hash] = heads.as_slice() else {
                bail!(
                    "change {k}: the organizer's agenda has {} heads",
                    heads.len()
                );
            };
            // One appended chunk per edit (unless the store compacted just then).
            if let Some(size) = stored(&organizer_store)?.checked_sub(before) {
                change_sizes.push(size as f64);
            }
            made.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((*hash, t));
            made_tx.send_modify(|n| *n += 1);
            tokio::time::sleep(cfg.change_interval).await;
        }
        Ok::<_, anyhow::Error>(())
    };
    let (progress, organized) = tokio::join!(progress, organize);
    organized?;
    progress?;
    drop(watchers);
    for d in &devices {
        d.kind.set_probe(None);
    }
    // The applied figure is the full devices' (a light device keeps no copy).
    fanout.extend(tally.times_where(|idx| idx / total.max(1) < full_devices));
    {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let made = made.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..devices.len() {
            for (k, (hash, t)) in made.iter().enumerate() {
                if let Some(at) = seen.get(&(i, *hash)) {
                    arrivals.record(i * total + k, at.saturating_duration_since(*t));
                }
            }
        }
    }
    let fanout_arrival = arrivals.times();
    let changes_s = t_changes.elapsed().as_secs_f64();
    let commits_per_sec = match (commits_before, commits()) {
        (Some(b), Some(a)) => Some((a - b) / changes_s.max(1e-9)),
        _ => None,
    };
    sample_queue(&mut notify_peak);
    let nodes = connect_addrs.len();
    let (fanout_same_node, fanout_cross_node) = if nodes > 1 {
        let node_of = move |idx: usize| (idx / total.max(1)) % nodes;
        (
            Some(Percentiles::of(
                &arrivals.times_where(|idx| node_of(idx) == 0),
            )),
            Some(Percentiles::of(
                &arrivals.times_where(|idx| node_of(idx) != 0),
            )),
        )
    } else {
        (None, None)
    };
    clock.end(&server, "changes").await?;
    let change_bytes = clock.bytes("changes");
    say(
        &cfg,
        format!("changes: {} changes seen by every device", plan.len()),
    );

    // Rush.
    let mut rush_figures_out = None;
    if let Some(rush) = cfg.rush {
        rush_figures_out = Some(
            run_rush(
                &cfg, rush, &server, &devices, &organizer, &agenda_id, &mut clock,
            )
            .await?,
        );
    }

    // Storm.
    let (mut storm_ms, mut storm_device_ms, mut storm_refused) = (None, None, None);
    let mut storm_samples = Vec::new();
    if cfg.storm {
        let mut stops = JoinSet::new();
        for d in &mut devices {
            if let Some(s) = d.sync.take() {
                stops.spawn(s.stop());
            }
        }
        while stops.join_next().await.is_some() {}
        clock.end(&server, "disconnect").await?;
        say(
            &cfg,
            format!(
                "storm: every device stopped; server: {} open ({} sessions)",
                clock.at.open_connections, clock.at.sessions
            ),
        );
        let refused_before = clock.at.admission.refused();
        let t = Instant::now();
        organizer.move_session(
            &storm_move.session,
            Some(storm_move.room.clone()),
            None,
            None,
        )?;
        let storm_heads = organizer.heads(&agenda_id)?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5707);
        let offsets: Vec<Duration> = (0..devices.len())
            .map(|_| Duration::from_millis(rng.random_range(0..1000)))
            .collect();
        let reconnected_at = offsets.clone();
        // Reconnect every device within one second, while measuring.
        let kinds: Vec<Kind> = devices.iter().map(|d| d.kind.clone()).collect();
        let storm_cfg = cfg.clone();
        let reconnect = tokio::spawn(async move {
            let mut order: Vec<usize> = (0..kinds.len()).collect();
            order.sort_by_key(|i| offsets[*i]);
            let mut syncs: Vec<Option<DevSync>> = (0..kinds.len()).map(|_| None).collect();
            for i in order {
                tokio::time::sleep_until((t + offsets[i]).into()).await;
                syncs[i] = Some(kinds[i].start(&storm_cfg)?);
            }
            Ok::<_, anyhow::Error>(syncs)
        });
        let id = agenda_id.clone();
        let per = wait_all(&cfg, &server, "storm", &devices, t, move |_, k| {
            storm_heads.iter().all(|h| k.holds(&id, h))
        })
        .await?;
        for (d, sync) in devices
            .iter_mut()
            .zip(reconnect.await.context("reconnect task")??)
        {
            d.sync = sync;
        }
        let mut slowest: Vec<usize> = (0..per.len()).collect();
        slowest.sort_by_key(|i| std::cmp::Reverse(per[*i]));
        slowest.truncate(5);
        say(
            &cfg,
            format!(
                "storm: the slowest devices\n{}",
                describe_devices(&devices, &slowest, &|i| format!(
                    ", reconnected at {:.1} s, held the change at {:.1} s",
                    reconnected_at[i].as_secs_f64(),
                    per[i].as_secs_f64()
                ))
            ),
        );
        let storm_total = per.iter().max().copied().unwrap_or_default();
        storm_ms = Some(storm_total.as_secs_f64() * 1000.0);
        storm_device_ms = Some(Percentiles::of(&per));
        clock.end(&server, "storm").await?;
        storm_refused = Some(clock.at.admission.refused() - refused_before);
        storm_samples = ms(&per);
        say(
            &cfg,
            format!(
                "storm: every device holds the change after {:.0} ms",
                storm_total.as_secs_f64() * 1000.0
            ),
        );
    }

    // Verdicts: a device converged when its agenda equals the organizer's and it
    // has nothing pending; a write is lost when the server did not store a
    // device's note (read back from its database when it is a process).
    // Every session the workload touched (all of them on small runs), as the
    // organizer has it; reading all 300 from 10,000 devices would take minutes.
    let mut touched: Vec<String> = plan.iter().map(|c| c.session.clone()).collect();
    touched.push(storm_move.session.clone());
    touched.push(sessions[n_sessions - 1].id.clone());
    touched.sort();
    touched.dedup();
    let whole = devices.len() <= 1000;
    let read = |c: &Client| -> anyhow::Result<Vec<Option<Session>>> {
        if whole {
            // One pass over the document rather than one lookup per session.
            return Ok(c.sessions()?.into_iter().map(Some).collect());
        }
        touched
            .iter()
            .map(|id| Ok(c.session(id)?))
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let reference = read(&organizer)?;
    // A light device converged when the agenda heads it holds are the
    // organizer's and its note is acknowledged.
    let mut final_heads = organizer.heads(&agenda_id)?;
    final_heads.sort();
    let mut converged = 0;
    let mut retries = 0;
    let mut errors = std::collections::BTreeMap::new();
    for d in &devices {
        let s = d.kind.status();
        retries += s.retries;
        let same = match &d.kind {
            Kind::Full(c) => read(c)? == reference,
            Kind::Light(l, ..) => {
                let mut h = l.heads();
                h.sort();
                h == final_heads
            }
        };
        if s.pending == 0 && same {
            converged += 1;
        }
        if let Some(e) = s.last_error {
            *errors.entry(e).or_insert(0u64) += 1;
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
    let mut proxy_drops = 0;
    for n in netems {
        let c = n.stop().await;
        proxy_drops += c.upstream.dropped() + c.downstream.dropped();
    }
    sample_queue(&mut notify_peak);
    let event = EventId::new(VENUE_EVENT)?;
    let own_docs = (0..devices.len())
        .map(|i| {
            Ok(DocId::Attendee(
                event.clone(),
                UserId::new(format!("a{i:05}"))?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let server_process = server.is_process();
    let finished = server.finish(&own_docs).await?;
    let (last, held) = (finished.stats, finished.held);
    let node_cost = finished
        .per_node
        .iter()
        .map(|s| (s.cpu_seconds, s.peak_rss_bytes))
        .collect();
    let mut lost_writes = 0;
    for (i, doc) in held.iter().enumerate() {
        let expected = format!("note of attendee {i}");
        let sid = &sessions[i % sessions.len()].id;
        let ok = doc
            .as_ref()
            .is_some_and(|doc| lanyard_client_core::docs::NotesDoc::note(doc, sid) == expected);
        if !ok {
            lost_writes += 1;
        }
    }
    let total_bytes = last.bytes_sent;
    let admission = last.admission;
    let n = cfg.attendees.max(1) as f64;
    let change_size_bytes = if change_sizes.is_empty() {
        0.0
    } else {
        change_sizes.iter().sum::<f64>() / change_sizes.len() as f64
    };
    Ok(VenueReport {
        attendees: cfg.attendees,
        nodes,
        store: store_label,
        node_cost,
        fanout_same_node_ms: fanout_same_node,
        fanout_cross_node_ms: fanout_cross_node,
        database: commits_per_sec.map(|c| (c, notify_peak)),
        profile: profile_name,
        seed: cfg.seed,
        agenda: agenda.source.clone(),
        sessions: n_sessions,
        rooms: agenda.rooms.len(),
        sim_rss_before_devices_bytes: sim_rss_before_devices,
        sim_rss_after_join_bytes: sim_rss_after_join,
        sim_peak_rss_bytes: own_memory().1,
        sim_rss_per_device_bytes: sim_rss_after_join.saturating_sub(sim_rss_before_devices) as f64
            / n,
        converged,
        lost_writes,
        refused: admission.refused(),
        retries,
        publish_ms,
        join_ms: Percentiles::of(&join),
        join_total_ms,
        fanout_ms: Percentiles::of(&fanout),
        fanout_arrival_ms: Percentiles::of(&fanout_arrival),
        bytes_per_device: total_bytes as f64 / n,
        join_bytes,
        bytes_per_device_per_change: change_bytes as f64 / n / cfg.changes.max(1) as f64,
        storm_ms,
        storm_device_ms,
        storm_refused,
        rush: rush_figures_out,
        admission,
        proxy_drops,
        server_process,
        server_peak_rss_bytes: last.peak_rss_bytes,
        server_cpu_s: last.cpu_seconds,
        server_flushes: last.flushes,
        server_flushed_writes: last.flushed_writes,
        server_traffic: last.traffic,
        server_outbox_peak_bytes: last.outbox_peak_bytes,
        phases: clock.done,
        change_size_bytes,
        never_converged: cfg.attendees - converged,
        errors,
        versions: versions(),
        samples: PhaseSamples {
            join: ms(&join),
            changes: ms(&fanout),
            arrivals: ms(&fanout_arrival),
            storm: storm_samples,
        },
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
    }

    fn offline_organizer() -> (tempfile::TempDir, Client) {
        let dir = tempfile::tempdir().unwrap();
        let identity = lanyard_server::Identity::load_or_create(dir.path()).unwrap();
        let organizer = Client::in_memory().unwrap();
        organizer
            .join(
                &link(
                    &identity,
                    "127.0.0.1:9".parse().unwrap(),
                    &claims(Role::Organizer, "organizer").unwrap(),
                )
                .unwrap(),
            )
            .unwrap();
        (dir, organizer)
    }

    fn check_plan(agenda: &PublishedAgenda, seed: u64, n: usize) {
        let plan = plan_changes(seed, agenda, n).unwrap();
        let storm = storm_change(seed, agenda).unwrap();
        assert_eq!(plan.len(), n);
        let mut ids: Vec<&str> = plan.iter().map(|c| c.session.as_str()).collect();
        ids.push(&storm.session);
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n + 1, "distinct sessions, never the storm's");
        for (k, c) in plan.iter().chain([&storm]).enumerate() {
            let s = agenda.sessions.iter().find(|s| s.id == c.session).unwrap();
            assert_ne!(s.room, c.room, "change {k} moves to another room");
            assert!(agenda.rooms.contains(&c.room), "a room of the agenda");
            assert!(!c.shown_by(s), "the unchanged session does not show it");
        }
        for (k, c) in plan.iter().enumerate() {
            let s = agenda.sessions.iter().find(|s| s.id == c.session).unwrap();
            assert_eq!(c.times.is_some(), k % 2 == 1, "odd changes move the time");
            if let Some((start, end)) = c.times {
                assert_eq!((start - s.start_unix, end - s.end_unix), (1800, 1800));
            }
        }
        assert_eq!(plan, plan_changes(seed, agenda, n).unwrap(), "seeded");
    }

    #[test]
    fn the_synthetic_agenda_publishes_and_changes_move_distinct_sessions() {
        let (_dir, org) = offline_organizer();
        let agenda = write_agenda(&org, &AgendaSource::Synthetic { sessions: 300 }, 7).unwrap();
        assert_eq!((agenda.sessions.len(), agenda.rooms.len()), (300, 20));
        assert_eq!(agenda.time_zone, "America/New_York");
        assert_eq!(agenda.written_last.as_deref(), Some("s0299"));
        // Seed 7 picked session s0254 twice before sessions were distinct.
        for seed in [1, 7, 11] {
            check_plan(&agenda, seed, 10);
        }
        check_plan(&agenda, 3, 299);
        let err = plan_changes(3, &agenda, 300).unwrap_err();
        assert!(format!("{err:#}").contains("--changes 300"), "{err:#}");
    }

    #[test]
    fn the_real_agenda_is_imported_and_written_as_plain_json() {
        let json = agenda_json(&AgendaSource::File(default_agenda_file()), 1, 10).unwrap();
        let sessions = json["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 943);
        assert_eq!(json["rooms"].as_array().unwrap().len(), 29);
        assert_eq!(json["event"]["time_zone"], "Europe/Brussels");
        assert_eq!(json["source"], "fosdem-2025.xml");
        for key in [
            "id", "title", "abstract", "room", "start", "end", "track", "speakers", "status",
        ] {
            assert!(sessions.iter().all(|s| s.get(key).is_some()), "{key}");
        }
        assert!(sessions
            .iter()
            .all(|s| s["start"].is_i64() && s["status"].is_string()));
        assert_eq!(json["changes"].as_array().unwrap().len(), 10);
        assert!(json["changes"][1]["times"].is_array() && json["changes"][0]["times"].is_null());
        assert!(json["storm"]["room"].is_string());
        let (_d, org) = offline_organizer();
        let agenda = write_agenda(&org, &AgendaSource::File(default_agenda_file()), 1).unwrap();
        let last = agenda
            .written_last
            .expect("the session imported last is known");
        assert!(agenda.sessions.iter().any(|s| s.id == last));
    }

    #[test]
    fn a_bad_agenda_file_is_a_clear_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.xml");
        let err = format!("{:#}", read_schedule(&missing).unwrap_err());
        assert!(
            err.contains("missing.xml") && err.contains("cannot read"),
            "{err}"
        );
        let odd = dir.path().join("agenda.pdf");
        std::fs::write(&odd, b"%PDF").unwrap();
        let err = format!("{:#}", read_schedule(&odd).unwrap_err());
        assert!(err.contains("agenda.pdf") && err.contains("*.xml"), "{err}");
        let broken = dir.path().join("broken.xml");
        std::fs::write(&broken, b"<schedule><day>").unwrap();
        let err = format!("{:#}", read_schedule(&broken).unwrap_err());
        assert!(err.contains("broken.xml"), "{err}");
        let bad_json = dir.path().join("bad.json");
        std::fs::write(&bad_json, b"{\"schedule\": 3").unwrap();
        let err = format!("{:#}", read_schedule(&bad_json).unwrap_err());
        assert!(err.contains("bad.json"), "{err}");
        let (_d, org) = offline_organizer();
        let err = write_agenda(&org, &AgendaSource::File(broken), 1).unwrap_err();
        assert!(format!("{err:#}").contains("broken.xml"), "{err:#}");
    }
}
