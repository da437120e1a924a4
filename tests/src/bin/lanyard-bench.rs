//! `lanyard-bench client`: how fast a device opens and shows a large real
//! agenda, applies one incoming change, and how much memory a client holds.
//!
//! A real server (in this process) publishes the agenda from an organizer
//! device; an attendee device on its own sled directory downloads it. Then:
//!
//! - **cold**: a fresh process (this binary, `client-open`) opens the
//!   attendee's database and lists one day; timed from spawn to exit, and
//!   inside the process (open + list);
//! - **warm**: the same in this process, a new `Client` each time;
//! - **apply**: the attendee applies one incoming one-session change (a
//!   move made by the organizer, as the server would push it);
//! - **memory**: resident memory a client adds to its process once it has
//!   listed a day, and once it has applied a change.
//!
//! Figures are medians and maxima over `--runs`; targets in issue 13.
//!
//! `lanyard-bench handshakes`: QUIC + TLS handshakes per second against a
//! real server on loopback, full (a new TLS configuration each time, as
//! before issue 14) and resumed (one configuration kept, so the TLS session
//! resumes from the server's ticket), with the bytes the server sent for
//! each.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use lanyard_client_core::Client;
use lanyard_protocol::{ClientSession, DocId, DocUpdate, EventId, Replica, Role, ServerMsg};
use lanyard_schedule::import::{parse_ics, parse_schedule_json, parse_schedule_xml};
use lanyard_schedule::import_schedule;
use lanyard_tests::{TestServer, EVENT};

#[derive(Parser)]
#[command(
    name = "lanyard-bench",
    version,
    about = "Device-side figures of Lanyard on a real agenda"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open + list a day (cold process and warm), apply one incoming
    /// change, memory held by a client.
    Client {
        /// The agenda (schedule.xml, schedule.json or .ics).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data/schedules/fosdem-2025.xml"))]
        agenda: PathBuf,
        /// Repetitions of each measurement.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Print the figures as JSON too.
        #[arg(long)]
        json: bool,
    },
    /// Handshakes per second, full and resumed, and the server's bytes for each.
    Handshakes {
        /// Handshakes of each kind.
        #[arg(long, default_value_t = 500)]
        count: usize,
    },
    /// One sled node, then N nodes on one PostgreSQL, in the same run:
    /// join, fan-out (same node and across nodes), each node's CPU and
    /// memory, the database's commits per second and NOTIFY queue usage.
    Cluster {
        /// Nodes on PostgreSQL.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Attendee devices (spread over the nodes, each pinned to one).
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// Changes the organizer makes on node 0, each measured to every device.
        #[arg(long, default_value_t = 10)]
        changes: usize,
        /// A PostgreSQL database to use (postgres://…); by default a
        /// throwaway server is started in a temporary directory, fsync on.
        #[arg(long)]
        store: Option<String>,
        /// The lanyard-server binary (default: the one beside this binary).
        #[arg(long)]
        server_bin: Option<PathBuf>,
    },
    /// How far one PostgreSQL database carries: `--writers` nodes flush as
    /// fast as they can for `--seconds` (a flush of 1 chunk, then of 100,
    /// 200 B each: one transaction and its NOTIFY, as a node's), while each
    /// follows the others' rows; commits and chunks per second.
    Database {
        /// A PostgreSQL database to use (postgres://…; bench rows are added
        /// to it); by default a throwaway server is started, fsync on.
        #[arg(long)]
        store: Option<String>,
        /// Nodes writing at once.
        #[arg(long, default_value_t = 3)]
        writers: usize,
        /// Seconds of each measurement.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// (internal) Open a device database, list one day, print timings as JSON.
    #[command(hide = true)]
    ClientOpen {
        /// The device's database directory.
        #[arg(long)]
        db: PathBuf,
        /// The day to list.
        #[arg(long)]
        day: String,
    },
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and maximum.
fn summary(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    let med = xs.get(xs.len() / 2).copied().unwrap_or(0.0);
    (med, xs.last().copied().unwrap_or(0.0))
}

fn read_agenda(path: &Path) -> anyhow::Result<lanyard_schedule::import::ImportedSchedule> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the agenda {}", path.display()))?;
    let name = path.to_string_lossy().to_lowercase();
    let parsed = if name.ends_with(".xml") {
        parse_schedule_xml(&bytes)
    } else if name.ends_with(".ics") {
        parse_ics(&bytes)
    } else {
        parse_schedule_json(&bytes)
    };
    parsed.with_context(|| format!("{} is not a schedule Lanyard reads", path.display()))
}

/// One open + list, inside this process: (open ms, list ms, sessions listed).
fn open_and_list(db: &Path, day: &str) -> anyhow::Result<(f64, f64, usize)> {
    let t0 = Instant::now();
    let client = Client::open(db)?;
    let t1 = Instant::now();
    let sessions = client.sessions_on(day)?;
    let marks = client.bookmarks()?;
    let t2 = Instant::now();
    std::hint::black_box(&marks);
    Ok((ms(t1 - t0), ms(t2 - t1), sessions.len()))
}

fn client_open(db: &Path, day: &str) -> anyhow::Result<()> {
    let before = rss_bytes();
    let (open, list, n) = open_and_list(db, day)?;
    let after = rss_bytes();
    println!(
        "{}",
        serde_json::json!({"open_ms": open, "list_ms": list, "sessions": n,
                           "rss_added": after.saturating_sub(before)})
    );
    Ok(())
}

async fn client_bench(agenda: &Path, runs: usize, json: bool) -> anyhow::Result<()> {
    let runs = runs.max(1);
    let schedule = read_agenda(agenda)?;
    eprintln!(
        "agenda {}: {} sessions; publishing through a real server",
        agenda.display(),
        schedule.sessions.len()
    );
    let srv = TestServer::start().await?;
    let org = srv.device(Role::Organizer, "org", "laptop")?;
    import_schedule(&org.client, &schedule, false, &mut |_| {})?;
    org.sync().await?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("db");
    let day;
    {
        let ann = Client::open(&db)?;
        srv.join(&ann, Role::Attendee, "ann", "phone")?;
        ann.sync(Duration::from_secs(120)).await?;
        let days = ann.days()?;
        day = days.first().cloned().context("the agenda has no days")?;
        let sessions = ann.sessions()?;
        for s in sessions.iter().take(12) {
            ann.set_bookmark(&s.id, true)?;
        }
        ann.set_note(&sessions[0].id, "bring the slides")?;
    }

    // Cold: a new process each run.
    let exe = std::env::current_exe()?;
    let (mut cold_wall, mut cold_inside, mut cold_rss) = (Vec::new(), Vec::new(), Vec::new());
    let mut listed = 0;
    for _ in 0..runs {
        let t0 = Instant::now();
        let out = std::process::Command::new(&exe)
            .args(["client-open", "--day", &day, "--db"])
            .arg(&db)
            .output()?;
        let wall = ms(t0.elapsed());
        if !out.status.success() {
            bail!(
                "client-open failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        cold_wall.push(wall);
        cold_inside.push(f("open_ms") + f("list_ms"));
        cold_rss.push(f("rss_added"));
        listed = v["sessions"].as_u64().unwrap_or(0) as usize;
    }

    // Warm: this process, a new client each time.
    let mut warm = Vec::new();
    let mut warm_open = Vec::new();
    for _ in 0..runs {
        let (open, list, _) = open_and_list(&db, &day)?;
        warm.push(open + list);
        warm_open.push(open);
    }

    // Apply: the organizer moves one session at a time; the attendee applies
    // the change as the server would push it.
    let agenda_id = DocId::Agenda(EventId::new(EVENT)?);
    let ann = Client::open(&db)?;
    let before_first = rss_bytes();
    let link = srv.link(Role::Attendee, "ann", "phone")?;
    let token = lanyard_protocol::JoinLink::parse(&link)?.token;
    let (mut session, _) = ClientSession::start(
        EventId::new(EVENT)?,
        token,
        &Replica::new(automerge::ActorId::random()),
    );
    let sessions = org.client.sessions()?;
    let rooms = org.client.rooms()?;
    let mut apply = Vec::new();
    let mut change_bytes = 0;
    for k in 0..runs {
        let s = &sessions[(k * 37) % sessions.len()];
        let room = &rooms[(k + 1) % rooms.len()].name;
        let heads = srv
            .server()
            .with_doc(&agenda_id, |d| d.map(|d| d.get_heads()))
            .context("the server holds no agenda")?;
        org.client
            .move_session(&s.id, Some(room.clone()), None, None)?;
        org.sync().await?;
        let update = srv
            .server()
            .with_doc(&agenda_id, |d| {
                d.map(|d| DocUpdate {
                    doc: agenda_id.clone(),
                    changes: d
                        .get_changes(&heads)
                        .iter()
                        .map(|c| c.raw_bytes().to_vec())
                        .collect(),
                    snapshot: Vec::new(),
                    heads: d.get_heads().iter().map(|h| h.0).collect(),
                })
            })
            .context("the server holds no agenda")?;
        change_bytes = update.payload_len();
        let t0 = Instant::now();
        let got = ann.receive(&mut session, ServerMsg::Update(update))?;
        apply.push(ms(t0.elapsed()));
        if got.received != 1 {
            bail!("expected one change applied, got {}", got.received);
        }
        if ann.session(&s.id)?.map(|x| x.room) != Some(room.clone()) {
            bail!("the move of {} did not show", s.id);
        }
    }
    let after_apply = rss_bytes();

    let (cw, cw_max) = summary(cold_wall);
    let (ci, ci_max) = summary(cold_inside);
    let (crss, _) = summary(cold_rss);
    let (w, w_max) = summary(warm);
    let (wo, _) = summary(warm_open);
    let (a, a_max) = summary(apply.clone());
    let first_apply = apply.first().copied().unwrap_or(0.0);
    println!(
        "agenda: {} sessions, day {day} lists {listed}; runs: {runs}",
        schedule.sessions.len()
    );
    println!("open + list a day, cold process:  {ci:.1} ms median inside the process (max {ci_max:.1}); {cw:.1} ms spawn to exit (max {cw_max:.1})");
    println!("open + list a day, warm:          {w:.1} ms median (max {w_max:.1}); open alone {wo:.1} ms");
    println!("apply one incoming change:        {a:.2} ms median (max {a_max:.2}; first {first_apply:.2}); change {change_bytes} bytes");
    println!(
        "memory held by a client:          {:.1} MiB after open + list; {:.1} MiB more after applying changes",
        crss / 1048576.0,
        after_apply.saturating_sub(before_first) as f64 / 1048576.0
    );
    println!("targets (this machine): open + list <= 30 ms, apply <= 2 ms");
    if json {
        println!(
            "{}",
            serde_json::json!({
                "sessions": schedule.sessions.len(), "runs": runs,
                "cold_inside_ms": ci, "cold_inside_max_ms": ci_max,
                "cold_process_ms": cw, "cold_process_max_ms": cw_max,
                "warm_ms": w, "warm_max_ms": w_max, "warm_open_ms": wo,
                "apply_ms": a, "apply_max_ms": a_max, "apply_first_ms": first_apply,
                "client_rss_bytes": crss,
                "apply_rss_bytes": after_apply.saturating_sub(before_first),
            })
        );
    }
    Ok(())
}

/// Connects `count` times one after the other; `config` gives each
/// connection's configuration. Returns handshakes per second and the
/// server's bytes per handshake.
async fn handshake_round(
    srv: &TestServer,
    count: usize,
    config: &dyn Fn() -> anyhow::Result<quinn::ClientConfig>,
) -> anyhow::Result<(f64, f64)> {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let mut received = 0u64;
    let mut handshaking = Duration::ZERO;
    for _ in 0..count {
        let t = Instant::now();
        let conn = endpoint
            .connect_with(config()?, srv.addr(), "localhost")?
            .await
            .context("handshake")?;
        handshaking += t.elapsed();
        // A moment for what follows the handshake (the session ticket),
        // counted in the bytes but not in the time.
        tokio::time::sleep(Duration::from_millis(5)).await;
        received += conn.stats().udp_rx.bytes;
        conn.close(0u32.into(), b"bye");
    }
    let rate = count as f64 / handshaking.as_secs_f64();
    endpoint.wait_idle().await;
    Ok((rate, received as f64 / count as f64))
}

async fn handshakes(count: usize) -> anyhow::Result<()> {
    let srv = TestServer::start().await?;
    let pin = srv.identity()?.pin();
    let keep = Duration::from_secs(5);
    let full = || -> anyhow::Result<quinn::ClientConfig> {
        let crypto = lanyard_client_core::tls::pinned_crypto(&pin)?;
        Ok(lanyard_client_core::tls::client_config(crypto, keep))
    };
    let kept = lanyard_client_core::tls::pinned_crypto(&pin)?;
    let resumed = || -> anyhow::Result<quinn::ClientConfig> {
        Ok(lanyard_client_core::tls::client_config(kept.clone(), keep))
    };
    // One resumed connection first, to hold a ticket.
    handshake_round(&srv, 1, &resumed).await?;
    let (full_rate, full_bytes) = handshake_round(&srv, count, &full).await?;
    let (resumed_rate, resumed_bytes) = handshake_round(&srv, count, &resumed).await?;
    println!("handshakes on loopback, {count} of each, one after the other:");
    println!("  full     {full_rate:>8.0} per second, server sent {full_bytes:>6.0} B each");
    println!("  resumed  {resumed_rate:>8.0} per second, server sent {resumed_bytes:>6.0} B each");
    Ok(())
}

async fn cluster(
    nodes: usize,
    devices: usize,
    changes: usize,
    store: Option<String>,
    server_bin: Option<PathBuf>,
) -> anyhow::Result<()> {
    use lanyard_tests::cluster_bench::{run_one, ClusterBench};
    anyhow::ensure!(
        nodes >= 1 && devices >= 1,
        "--nodes and --devices must be at least 1"
    );
    let server_bin = match server_bin {
        Some(b) => b,
        None => std::env::current_exe()?
            .parent()
            .context("no directory beside this binary")?
            .join("lanyard-server"),
    };
    anyhow::ensure!(
        server_bin.exists(),
        "{} not found: build it (cargo build --release -p lanyard-server) or give --server-bin",
        server_bin.display()
    );
    let cfg = ClusterBench {
        server_bin,
        nodes,
        devices,
        changes,
        devices_per_endpoint: 100,
    };
    // Kept alive for the run (stopped on drop).
    let (temp, url) = lanyard_tests::cluster_bench::database_url(store)?;
    let say = |s: &str| eprintln!("… {s}");
    println!(
        "cluster bench: {devices} devices, {changes} changes from node 0, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let sled = run_one(&cfg, 1, None, &say).await?;
    print!("{}", sled.report());
    let pg = run_one(&cfg, nodes, Some(&url), &say).await?;
    print!("{}", pg.report());
    drop(temp);
    Ok(())
}

async fn database(store: Option<String>, writers: usize, seconds: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        writers >= 2 && seconds > 0.0,
        "--writers must be at least 2 (each reads the others) and --seconds above 0"
    );
    let (temp, url) = lanyard_tests::cluster_bench::database_url(store)?;
    println!(
        "database bench: {writers} nodes writing for {seconds} s each, {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        lanyard_store_postgres::redact(&url)
    );
    for batch in [1, 100] {
        let c = lanyard_tests::cluster_bench::database_ceiling(&url, writers, batch, 200, seconds)
            .await?;
        println!(
            "  {batch:>3} chunk(s) per flush: {:>7.0} commits/s, {:>8.0} chunks/s written, {:>8.0} chunks/s read by the feeds",
            c.commits_per_sec, c.chunks_per_sec, c.feed_chunks_per_sec
        );
    }
    drop(temp);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Client { agenda, runs, json } => client_bench(&agenda, runs, json).await,
        Command::ClientOpen { db, day } => client_open(&db, &day),
        Command::Handshakes { count } => handshakes(count).await,
        Command::Cluster {
            nodes,
            devices,
            changes,
            store,
            server_bin,
        } => cluster(nodes, devices, changes, store, server_bin).await,
        Command::Database {
            store,
            writers,
            seconds,
        } => database(store, writers, seconds).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lanyard-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
