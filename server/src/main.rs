//! `lanyard-server`: serve an event's documents over QUIC, and issue invites.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lanyard_protocol::{DeviceId, EventId, Role, UserId};
use lanyard_server::{AdmissionConfig, Identity, Invite, Server, ServerOptions};

#[derive(Parser)]
#[command(
    name = "lanyard-server",
    version,
    about = "Lanyard sync server for conference apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve over QUIC until SIGINT or SIGTERM.
    Serve {
        /// Data directory (created on first start).
        #[arg(long, default_value = "./lanyard-data")]
        data: PathBuf,
        /// UDP address to listen on.
        #[arg(long, default_value = "0.0.0.0:4433")]
        listen: SocketAddr,
        /// Most open connections; devices over it are told when to come back.
        #[arg(long, default_value_t = AdmissionConfig::default().max_connections)]
        max_connections: usize,
        /// Most new handshakes per second; devices over it wait their turn
        /// (see --max-handshake-wait), then are refused.
        #[arg(long, default_value_t = AdmissionConfig::default().handshakes_per_sec)]
        handshakes_per_sec: f64,
        /// Longest a handshake over the rate waits its turn, first come first
        /// served, before devices are refused (0s: refuse at once).
        #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
        max_handshake_wait: Duration,
        /// Most handshakes in progress at once (each costs memory until it
        /// completes); more wait their turn.
        #[arg(long, default_value_t = AdmissionConfig::default().max_handshaking)]
        max_handshaking: usize,
        /// Turn new devices away while resident memory is above this many MiB.
        #[arg(long, default_value_t = AdmissionConfig::default().max_memory_bytes >> 20)]
        max_memory_mib: u64,
        /// Base of the retry-after hint given to devices turned away (jittered ±50%).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        retry_after: Duration,
        /// Keep a JSON file of the server's counters (connections, bytes,
        /// admission, memory, CPU), rewritten every half second and on exit.
        #[arg(long)]
        stats_file: Option<PathBuf>,
    },
    /// Print a join link for one user and device.
    Invite {
        /// Data directory of the server (holds the signing key).
        #[arg(long)]
        data: PathBuf,
        /// Event id.
        #[arg(long)]
        event: String,
        /// organizer or attendee.
        #[arg(long)]
        role: Role,
        /// User id.
        #[arg(long)]
        user: String,
        /// Device name.
        #[arg(long, default_value = "default")]
        device: String,
        /// HOST:PORT devices will connect to.
        #[arg(long, default_value = "localhost:4433")]
        server: String,
        /// How long the token is valid (e.g. 30d, 12h).
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

/// mimalloc instead of the system allocator: with thousands of connections
/// glibc's malloc spent about a tenth of the server's CPU (profiled at 10,000
/// devices) and fragmented its memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "lanyard_server=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lanyard-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            data,
            listen,
            max_connections,
            handshakes_per_sec,
            max_handshake_wait,
            max_handshaking,
            max_memory_mib,
            retry_after,
            stats_file,
        } => {
            let mut opts = ServerOptions::new(data, listen);
            opts.admission = AdmissionConfig {
                max_connections,
                handshakes_per_sec,
                max_memory_bytes: max_memory_mib << 20,
                retry_after,
                max_wait: max_handshake_wait,
                max_handshaking,
            };
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            rt.block_on(serve(opts, stats_file))
        }
        Command::Invite {
            data,
            event,
            role,
            user,
            device,
            server,
            ttl,
        } => {
            let identity = Identity::load_or_create(&data)?;
            let link = identity.invite(&Invite {
                event: EventId::new(event)?,
                role,
                user: UserId::new(user)?,
                device: DeviceId::new(device)?,
                server,
                ttl,
            });
            println!("{link}");
            Ok(())
        }
    }
}

async fn serve(opts: ServerOptions, stats_file: Option<PathBuf>) -> anyhow::Result<()> {
    let data = opts.data_dir.clone();
    let server = std::sync::Arc::new(Server::start(opts).await?);
    let signal = lanyard_server::shutdown_signal().context("cannot install the signal handlers")?;
    let stats_task = stats_file.clone().map(|path| {
        let server = server.clone();
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                if let Err(e) = server.snapshot().write(&path) {
                    if !warned {
                        eprintln!("lanyard-server: {e}");
                        warned = true;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    });
    println!(
        "lanyard-server listening on {} (udp/quic)",
        server.local_addr()?
    );
    println!("data directory: {}", data.display());
    println!("certificate pin (sha-256): {}", server.pin());
    println!(
        "invite a device: lanyard-server invite --data {} --event EVENT --role attendee --user USER",
        data.display()
    );
    signal.await;
    println!("shutting down");
    let a = server.admission_stats();
    println!(
        "admission: {} accepted, {} waited their turn, {} retries, {} refused (rate {}, connections {}, memory {}), peak {} connections",
        a.accepted,
        a.queued,
        a.retries,
        a.refused(),
        a.refused_rate,
        a.refused_connections,
        a.refused_memory,
        a.peak_connections
    );
    if let Some(task) = stats_task {
        task.abort();
        let _ = task.await;
    }
    let final_stats = server.snapshot();
    let server =
        std::sync::Arc::into_inner(server).context("the stats writer still holds the server")?;
    server.shutdown().await;
    if let Some(path) = stats_file {
        final_stats.write(&path)?;
    }
    Ok(())
}
