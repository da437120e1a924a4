//! `lanyard-venue`: the venue simulator. Runs a real server, one organizer and
//! N attendee devices (client cores on memory stores, real QUIC), optionally
//! through the impairment proxy, drives the workload of `WORKLOAD.md` and
//! prints convergence, fan-out latency, bytes, retries, refusals, lost writes
//! and its own memory per simulated device. The agenda is the FOSDEM 2025
//! schedule by default (`--agenda FILE` for another, `--agenda synthetic` for
//! the seeded v1 agenda).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use lanyard_server::AdmissionConfig;
use lanyard_tests::backend::ServerMode;
use lanyard_tests::netem::Profiles;
use lanyard_tests::venue::{
    agenda_json, default_agenda_file, read_schedule, run, AgendaSource, RushConfig, VenueConfig,
};

#[derive(Parser)]
#[command(
    name = "lanyard-venue",
    version,
    about = "Simulate a conference venue against a real Lanyard server"
)]
struct Args {
    /// Attendee devices.
    #[arg(long, default_value_t = 200)]
    attendees: usize,
    /// Link profile from the profiles file (busy, overloaded, collapsing); loopback if absent.
    #[arg(long)]
    profile: Option<String>,
    /// Profiles file (default: the copy of shared/venue-profiles.toml in the repository).
    #[arg(long)]
    profiles: Option<PathBuf>,
    /// Seed of the agenda, the changes and the link impairments.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the latency distribution of each phase to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// The agenda: a schedule file read by the project's importer by its
    /// extension (.xml frab/pentabarf, .json c3voc, .ics iCalendar), or
    /// `synthetic` for the seeded v1 agenda (see --sessions). Default: the
    /// repository's FOSDEM 2025 schedule (workload v2).
    #[arg(long, value_name = "FILE|synthetic")]
    agenda: Option<String>,
    /// Sessions in the synthetic agenda (only with --agenda synthetic; default 300).
    #[arg(long)]
    sessions: Option<usize>,
    /// Write the agenda (as imported) and the seed's schedule changes as plain
    /// JSON to this file for a peer system's runner
    /// (tests/peers/automerge-repo/bench.mjs --agenda-json), then exit
    /// without running the workload.
    #[arg(long, value_name = "FILE")]
    write_agenda_json: Option<PathBuf>,
    /// Schedule changes in the changes phase (one per --change-interval).
    #[arg(long, default_value_t = 10)]
    changes: usize,
    /// Time between schedule changes.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    change_interval: Duration,
    /// Scale of the profile's outage and rebind intervals (e.g. 0.1 for ten times as often).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Skip the storm phase.
    #[arg(long)]
    no_storm: bool,
    /// Reconnect without jitter in the backoff (to measure what jitter buys).
    #[arg(long)]
    no_jitter: bool,
    /// Server admission: most open connections.
    #[arg(long, default_value_t = AdmissionConfig::default().max_connections)]
    max_connections: usize,
    /// Server admission: most handshakes per second.
    #[arg(long, default_value_t = AdmissionConfig::default().handshakes_per_sec)]
    handshakes_per_sec: f64,
    /// Server admission: longest a handshake over the rate waits its turn
    /// before it is refused (0s: refuse at once, as before the admission queue).
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    max_handshake_wait: Duration,
    /// Give up a phase after this many seconds.
    #[arg(long, default_value_t = 600)]
    phase_timeout: u64,
    /// Run the server inside this process instead of as a `lanyard-server`
    /// child process (its memory and CPU figures then include the devices').
    #[arg(long)]
    in_process: bool,
    /// The `lanyard-server` binary to start (default: the one beside this binary).
    #[arg(long, conflicts_with = "in_process")]
    server_bin: Option<PathBuf>,
    /// Devices sharing one UDP socket (default: 1 through a profile, where the
    /// proxy impairs each client address separately; 100 on loopback).
    #[arg(long)]
    devices_per_endpoint: Option<usize>,
    /// Devices that keep a full copy of the agenda and apply every change
    /// (the first ones; the rest are light devices that decode each change
    /// and check its hash, so the figures measure the server, not the
    /// simulator). Default: every device up to 1,000, 1,000 above.
    #[arg(long)]
    full_devices: Option<usize>,
    /// Add the rush phase (after the changes, before the storm): the
    /// organizer publishes breakout sessions with a capacity, then every
    /// device reserves a seat in one of them within the same second; the
    /// phase ends when every device knows its outcome. Fails (exit 2) when
    /// a session is overbooked or an outcome is out of arrival order.
    #[arg(long)]
    rush: bool,
    /// Breakout sessions in the rush.
    #[arg(long, default_value_t = RushConfig::default().sessions, requires = "rush")]
    rush_sessions: usize,
    /// Seats in each breakout session of the rush.
    #[arg(long, default_value_t = RushConfig::default().capacity, requires = "rush")]
    rush_capacity: u32,
    /// Server nodes sharing one PostgreSQL database (`--store`); devices are
    /// spread over them, the organizer writes on the first.
    #[arg(long, default_value_t = 1, conflicts_with = "in_process")]
    nodes: usize,
    /// The nodes' PostgreSQL database (`postgres://user:pw@host:port/db`).
    /// Without it, one node keeps its documents in sled, and several nodes
    /// get a throwaway PostgreSQL server started for the run (its server
    /// binaries must be installed: see the README).
    #[arg(long, value_name = "URL", conflicts_with = "in_process")]
    store: Option<String>,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("lanyard-venue: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<bool> {
    let args = Args::parse();
    let agenda = match (args.agenda.as_deref(), args.sessions) {
        (Some("synthetic"), sessions) => AgendaSource::Synthetic {
            sessions: sessions.unwrap_or(300),
        },
        (file, None) => AgendaSource::File(file.map_or_else(default_agenda_file, PathBuf::from)),
        (file, Some(n)) => {
            anyhow::bail!(
            "--sessions {n} sets the size of the synthetic agenda; the agenda here is the file {} \
             (add --agenda synthetic)",
            file.map_or_else(|| default_agenda_file().display().to_string(), str::to_owned)
        )
        }
    };
    // A bad file is reported before a server starts.
    if let AgendaSource::File(path) = &agenda {
        read_schedule(path)?;
    }
    if let Some(path) = &args.write_agenda_json {
        let json = agenda_json(&agenda, args.seed, args.changes)?;
        std::fs::write(path, serde_json::to_vec(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!(
            "lanyard-venue: agenda {} ({} sessions) and {} changes of seed {} written to {}",
            agenda.label(),
            json["sessions"].as_array().map_or(0, Vec::len),
            args.changes,
            args.seed,
            path.display()
        );
        return Ok(true);
    }
    let profile = match &args.profile {
        None => None,
        Some(name) => {
            let profiles = match &args.profiles {
                Some(p) => Profiles::load(p)?,
                None => Profiles::builtin()?,
            };
            Some((name.clone(), profiles.get(name)?.clone()))
        }
    };
    // Checked before the run, not after minutes of it.
    if let Some(plot) = &args.plot {
        if !plot
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
        {
            anyhow::bail!(
                "--plot {}: plots are written as SVG; name the file *.svg",
                plot.display()
            );
        }
    }
    let server = if args.in_process {
        ServerMode::InProcess
    } else if let Some(bin) = &args.server_bin {
        ServerMode::Process(bin.clone())
    } else {
        ServerMode::beside_current_exe()?
    };
    let devices_per_endpoint = args
        .devices_per_endpoint
        .unwrap_or(if profile.is_some() { 1 } else { 100 })
        .max(1);
    // Kept alive for the run (stopped on drop).
    let mut temp = None;
    let store = match (&args.store, args.nodes) {
        (Some(url), _) => Some(url.clone()),
        (None, n) if n > 1 => {
            eprintln!("lanyard-venue: starting a throwaway PostgreSQL server for {n} nodes");
            let (t, url) = lanyard_tests::cluster_bench::database_url(None)?;
            temp = t;
            Some(url)
        }
        (None, _) => None,
    };
    let cfg = VenueConfig {
        nodes: args.nodes.max(1),
        store,
        attendees: args.attendees,
        agenda,
        changes: args.changes,
        change_interval: args.change_interval,
        seed: args.seed,
        profile,
        time_scale: args.time_scale,
        storm: !args.no_storm,
        jitter: !args.no_jitter,
        admission: AdmissionConfig {
            max_connections: args.max_connections,
            handshakes_per_sec: args.handshakes_per_sec,
            max_wait: args.max_handshake_wait,
            ..AdmissionConfig::default()
        },
        phase_deadline: Duration::from_secs(args.phase_timeout),
        progress: true,
        server,
        devices_per_endpoint,
        full_devices: args.full_devices,
        rush: args.rush.then_some(RushConfig {
            sessions: args.rush_sessions,
            capacity: args.rush_capacity,
        }),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = rt.block_on(run(cfg))?;
    drop(temp);
    println!("{report}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("lanyard-venue: figures written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "Lanyard venue run: {} attendees, {}, seed {}",
            report.attendees, report.profile, report.seed
        );
        lanyard_tests::plot::latency_svg(
            path,
            &title,
            &[
                ("join", &report.samples.join),
                ("changes (fan-out)", &report.samples.changes),
                ("storm", &report.samples.storm),
            ],
        )?;
        eprintln!("lanyard-venue: latency plot written to {}", path.display());
    }
    let rush_ok = report
        .rush
        .as_ref()
        .is_none_or(|r| r.overbooked == 0 && r.out_of_order == 0);
    Ok(report.converged == report.attendees && report.lost_writes == 0 && rush_ok)
}
