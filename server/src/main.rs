//! `lanyard-server`: serve an event's documents over QUIC, and issue invites.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lanyard_protocol::{DeviceId, EventId, Revocation, Role, UserId};
use lanyard_server::admin::{AdminClient, LiftAnswer, RevokeAnswer, RevokeRequest};
use lanyard_server::config::{ConfigError, LogFormat, ServeConfig, ServeSettings};
use lanyard_server::{Identity, Invite, Server, ServerOptions};

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

/// The configuration's file and flags (see `lanyard_server::config`).
#[derive(clap::Args)]
struct ConfigArgs {
    /// TOML configuration file; every key can also be set by a LANYARD_…
    /// environment variable (flag > environment > file > default).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: ServeSettings,
    /// TCP address of the admin HTTP listener (/healthz, /readyz, /metrics,
    /// /admin/…); off by default. Key: `[admin] listen`.
    #[arg(long)]
    admin: Option<SocketAddr>,
}

impl ConfigArgs {
    fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let mut flags = self.settings;
        flags.admin.listen = self.admin;
        ServeConfig::load(self.config.as_deref(), flags)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve over QUIC until SIGINT or SIGTERM.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the effective configuration (file, environment and flags
    /// merged) as TOML, without starting anything.
    Config {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Cut off a user (every device) or one device: a running server closes
    /// its connections at once and refuses new ones; the devices stop
    /// retrying and say why. Works whether or not a server runs on DIR (a
    /// running one is asked through its admin listener).
    Revoke {
        /// Data directory of the server.
        #[arg(long)]
        data: PathBuf,
        /// Event id.
        #[arg(long)]
        event: String,
        /// User id.
        #[arg(long)]
        user: String,
        /// Only this device of the user (default: every device).
        #[arg(long)]
        device: Option<String>,
        /// Lift the revocation instead.
        #[arg(long)]
        lift: bool,
    },
    /// List the devices of an event a running server has seen (JSON: user,
    /// device, role, connected since, last seen, address), through its
    /// admin listener.
    Devices {
        /// Data directory of the running server.
        #[arg(long)]
        data: PathBuf,
        /// Event id.
        #[arg(long)]
        event: String,
    },
    /// Take a consistent backup of a data directory: through the running
    /// server's admin listener while devices keep writing, or from the store
    /// when no server runs on DIR. The file holds the keys: keep it secret.
    Backup {
        /// Data directory of the server.
        #[arg(long)]
        data: PathBuf,
        /// The backup file to write (tar.gz).
        #[arg(long)]
        output: PathBuf,
    },
    /// Restore a backup into a data directory, then `serve` on it. Refuses a
    /// directory that holds anything unless --force.
    Restore {
        /// The backup file.
        #[arg(long)]
        input: PathBuf,
        /// The data directory to restore into.
        #[arg(long)]
        data: PathBuf,
        /// Replace the database and keys of a non-empty directory.
        #[arg(long)]
        force: bool,
    },
    /// Write every document of an event as an Automerge binary (for
    /// migration), with an export.json listing them; through the running
    /// server (a consistent backup) or from the store when none runs.
    Export {
        /// Data directory of the server.
        #[arg(long)]
        data: PathBuf,
        /// Event id.
        #[arg(long)]
        event: String,
        /// The directory to write (must be empty or absent).
        #[arg(long)]
        output: PathBuf,
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
        /// HOST:PORT devices will connect to; repeat it for each node of a
        /// cluster (devices fail over between them).
        #[arg(long = "server", default_value = "localhost:4433", num_args = 1)]
        servers: Vec<String>,
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
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lanyard-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr as text or JSON lines; RUST_LOG picks what is logged.
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "lanyard_server=info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let config = config.resolve()?;
            init_logs(config.log_format);
            let mut opts = ServerOptions::new(config.data.clone(), config.listen);
            opts.admission = config.admission();
            opts.admin = config.admin.listen;
            opts.store = config.store.clone();
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            rt.block_on(serve(opts, config.stats_file))
        }
        Command::Config { config } => {
            print!("{}", config.resolve()?.to_toml());
            Ok(())
        }
        Command::Revoke {
            data,
            event,
            user,
            device,
            lift,
        } => revoke(&data, event, user, device, lift),
        Command::Backup { data, output } => backup(&data, &output),
        Command::Export {
            data,
            event,
            output,
        } => export(&data, &EventId::new(event)?, &output),
        Command::Restore { input, data, force } => {
            let r = lanyard_server::backup::restore(&input, &data, force)?;
            println!(
                "restored {} documents into {} (backup of {} by lanyard-server {}); start it with: lanyard-server serve --data {}",
                r.documents,
                data.display(),
                jiff::Timestamp::from_millisecond(r.manifest.created_unix_ms as i64)
                    .map_or_else(|_| "an unknown time".to_string(), |t| t.to_string()),
                r.manifest.server_version,
                data.display()
            );
            Ok(())
        }
        Command::Devices { data, event } => {
            let admin = AdminClient::find(&data).with_context(|| {
                format!(
                    "no server with an admin listener runs on {} (start it with --admin ADDR)",
                    data.display()
                )
            })?;
            let event = EventId::new(event)?;
            print!(
                "{}",
                admin.get_text(&format!("/admin/events/{event}/devices"))?
            );
            println!();
            Ok(())
        }
        Command::Invite {
            data,
            event,
            role,
            user,
            device,
            servers,
            ttl,
        } => {
            for s in &servers {
                anyhow::ensure!(
                    lanyard_protocol::link::is_host_port(s),
                    "--server {s:?}: expected HOST:PORT, e.g. lanyard.example.org:4433"
                );
            }
            let identity = Identity::load_or_create(&data)?;
            let link = identity.invite(&Invite {
                event: EventId::new(event)?,
                role,
                user: UserId::new(user)?,
                device: DeviceId::new(device)?,
                servers,
                ttl,
            });
            println!("{link}");
            Ok(())
        }
    }
}

/// Refuses to work on the sled directory of a data directory whose server
/// keeps its documents in PostgreSQL (it would find nothing there).
fn offline_sled(data: &std::path::Path, what: &str) -> anyhow::Result<()> {
    if let Ok(store) = std::fs::read_to_string(data.join(lanyard_server::STORE_MARKER)) {
        anyhow::bail!(
            "the server of {} keeps its documents in {}: {what} needs a node of it running \
             with its admin listener (serve --admin ADDR), or the database's own tools (pg_dump)",
            data.display(),
            store.trim()
        );
    }
    Ok(())
}

/// `backup`: through the running server's admin API, or from the store.
/// Written to a temporary file beside `output`, renamed once complete.
fn backup(data: &std::path::Path, output: &std::path::Path) -> anyhow::Result<()> {
    let tmp = output.with_extension("partial");
    let r = write_backup(data, output, &tmp);
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

fn write_backup(
    data: &std::path::Path,
    output: &std::path::Path,
    tmp: &std::path::Path,
) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let how = match AdminClient::find(data) {
        Some(admin) => {
            admin.get_to("/admin/backup", &mut out)?;
            "online, from the running server"
        }
        None => {
            offline_sled(data, "a backup")?;
            lanyard_server::backup::backup_offline(data, &mut out).with_context(|| {
                format!(
                    "a server may be running on {} without an admin listener: restart it with --admin ADDR, or stop it, to back up",
                    data.display()
                )
            })?;
            "from the store (no server running)"
        }
    };
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(tmp, output).with_context(|| format!("cannot write {}", output.display()))?;
    let bytes = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    println!(
        "backup written to {} ({bytes} bytes, {how})",
        output.display()
    );
    Ok(())
}

/// `export`: from a backup taken by the running server, or from the store.
fn export(data: &std::path::Path, event: &EventId, output: &std::path::Path) -> anyhow::Result<()> {
    use lanyard_server::backup;
    let exported = match AdminClient::find(data) {
        Some(admin) => {
            let tmp = tempfile::NamedTempFile::new().context("cannot make a temporary file")?;
            let mut out = std::io::BufWriter::new(tmp.reopen()?);
            admin.get_to("/admin/backup", &mut out)?;
            std::io::Write::flush(&mut out)?;
            let docs = backup::docs_in_backup(tmp.path())?;
            backup::export_docs(event, output, docs.into_iter().map(Ok))?
        }
        None => {
            offline_sled(data, "an export")?;
            let store = lanyard_store::SledStore::open(data.join("db")).with_context(|| {
                format!(
                    "a server may be running on {} without an admin listener: restart it with --admin ADDR, or stop it, to export",
                    data.display()
                )
            })?;
            let docs = backup::stored_docs(&store)?;
            backup::export_docs(event, output, docs)?
        }
    };
    if exported.documents.is_empty() {
        anyhow::bail!("event {event} has no documents on this server (nothing exported)");
    }
    let bytes: u64 = exported.documents.iter().map(|d| d.bytes).sum();
    println!(
        "exported {} documents of event {event} ({bytes} bytes) into {}; the list is in export.json",
        exported.documents.len(),
        output.display()
    );
    Ok(())
}

/// `revoke`: through the running server's admin API, or in the store when
/// no server runs on `data`.
fn revoke(
    data: &std::path::Path,
    event: String,
    user: String,
    device: Option<String>,
    lift: bool,
) -> anyhow::Result<()> {
    let r = Revocation {
        event: EventId::new(event)?,
        user: UserId::new(user)?,
        device: device.map(DeviceId::new).transpose()?,
    };
    let who = match &r.device {
        Some(d) => format!("device {d} of user {} in event {}", r.user, r.event),
        None => format!("every device of user {} in event {}", r.user, r.event),
    };
    if let Some(admin) = AdminClient::find(data) {
        let body = RevokeRequest {
            user: r.user.to_string(),
            device: r.device.as_ref().map(ToString::to_string),
        };
        let path = format!(
            "/admin/events/{}/{}",
            r.event,
            if lift { "lift" } else { "revoke" }
        );
        if lift {
            let a: LiftAnswer = admin.post_json(&path, &body)?;
            println!(
                "{}: {who}",
                if a.lifted {
                    "lifted"
                } else {
                    "was not revoked"
                }
            );
        } else {
            let a: RevokeAnswer = admin.post_json(&path, &body)?;
            println!("revoked {who}: {} open connection(s) closed", a.closed);
        }
        return Ok(());
    }
    offline_sled(data, "a revocation")?;
    let store = lanyard_store::SledStore::open(data.join("db")).with_context(|| {
        format!(
            "a server may be running on {} without an admin listener: restart it with --admin ADDR, or stop it, to revoke",
            data.display()
        )
    })?;
    let mut list = lanyard_server::devices::load_revocations(&store)?;
    let had = list.contains(&r);
    if lift {
        list.retain(|x| x != &r);
    } else if !had {
        list.push(r.clone());
    }
    lanyard_server::devices::save_revocations(&store, &list)?;
    match (lift, had) {
        (true, true) => println!("lifted: {who}"),
        (true, false) => println!("was not revoked: {who}"),
        (false, _) => println!(
            "revoked {who} (no server runs on {}: in force when it starts)",
            data.display()
        ),
    }
    Ok(())
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
