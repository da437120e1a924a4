//! `lanyard-crashloop`: kills a real `lanyard-server` (and, separately, a
//! device's client core) with SIGKILL at random moments, restarts it, and
//! checks that no acknowledged write was lost. Ends with the line
//! `cycles=N acknowledged=A lost=L` (both loops added up); exits non-zero
//! if anything was lost or a store did not open.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use lanyard_tests::backend::ServerMode;
use lanyard_tests::crashloop::{
    client_child, client_loop, server_loop, ClientLoop, Outcome, ServerLoop,
};
use lanyard_tests::progress;

#[derive(Parser)]
#[command(
    name = "lanyard-crashloop",
    version,
    about = "Kill the server and a device at random moments; check nothing acknowledged is lost"
)]
struct Args {
    /// Which loops to run.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    mode: Mode,
    /// Server kill-and-restart cycles.
    #[arg(long, default_value_t = 200)]
    server_cycles: u64,
    /// Client kill-and-restart cycles.
    #[arg(long, default_value_t = 200)]
    client_cycles: u64,
    /// Devices writing to the server.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Devices reserving and giving back seats in 3 sessions of 2 seats
    /// (the server is killed in the middle of deciding who gets a seat).
    #[arg(long, default_value_t = 8)]
    reservers: usize,
    /// Shortest time the server runs before it is killed (ms).
    #[arg(long, default_value_t = 200)]
    min_up_ms: u64,
    /// Longest time the server runs before it is killed (ms).
    #[arg(long, default_value_t = 1200)]
    max_up_ms: u64,
    /// The device is killed right after a random edit among the first N of each run.
    #[arg(long, default_value_t = 40)]
    max_edits: u64,
    /// Seed of every random choice (printed, to replay a run).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Server nodes killed and restarted in turn (more than one needs
    /// --store postgres://…); every device's link names them all.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// The nodes' shared PostgreSQL store (postgres://user@host:port/db);
    /// sled in the data directory by default.
    #[arg(long)]
    store: Option<String>,
    /// The lanyard-server binary (default: the one beside this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Internal: the child process of the client loop.
    #[command(subcommand)]
    child: Option<Child>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Server,
    Client,
    Both,
}

#[derive(Subcommand)]
enum Child {
    /// Appends numbered tokens to a note until killed (used by the client loop).
    #[command(hide = true)]
    ClientChild {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        link: String,
        #[arg(long)]
        start: u64,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Child::ClientChild { db, link, start }) = &args.child {
        return match client_child(db, link, *start) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("client-child: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(&args) {
        Ok(total) if total.lost == 0 && total.undecided == 0 && total.overbooked == 0 => {
            ExitCode::SUCCESS
        }
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lanyard-crashloop: {e:#} (seed {})", args.seed);
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    eprintln!("lanyard-crashloop: seed {}", args.seed);
    let mut total = Outcome::default();
    if args.mode != Mode::Client {
        let server_bin = match &args.server_bin {
            Some(p) => p.clone(),
            None => match ServerMode::beside_current_exe()? {
                ServerMode::Process(p) => p,
                ServerMode::InProcess => unreachable!("beside_current_exe gives a process"),
            },
        };
        let cfg = ServerLoop {
            server_bin,
            cycles: args.server_cycles,
            writers: args.writers,
            reservers: args.reservers,
            min_up: Duration::from_millis(args.min_up_ms),
            max_up: Duration::from_millis(args.max_up_ms.max(args.min_up_ms)),
            seed: args.seed,
            nodes: args.nodes,
            store: args.store.clone(),
        };
        let started = Instant::now();
        let bar = progress::bar(true, "server", cfg.cycles);
        let out = runtime.block_on(server_loop(&cfg, |n| bar.set_position(n)))?;
        bar.finish_and_clear();
        println!(
            "server: {out} ({} writers, {:.0} s)",
            cfg.writers,
            started.elapsed().as_secs_f64()
        );
        total = total.plus(out);
    }
    if args.mode != Mode::Server {
        let cfg = ClientLoop {
            child_bin: std::env::current_exe().context("cannot locate this binary")?,
            cycles: args.client_cycles,
            max_edits: args.max_edits,
            seed: args.seed,
        };
        let started = Instant::now();
        let bar = progress::bar(true, "client", cfg.cycles);
        let out = runtime.block_on(client_loop(&cfg, |n| bar.set_position(n)))?;
        bar.finish_and_clear();
        println!("client: {out} ({:.0} s)", started.elapsed().as_secs_f64());
        total = total.plus(out);
    }
    println!("{total}");
    Ok(total)
}
