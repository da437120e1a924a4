//! `lanyard-netem`: a user-space UDP impairment proxy between devices and a
//! Lanyard server, following a link profile of `venue-profiles.toml`.
//!
//! ```text
//! lanyard-netem --listen 127.0.0.1:5433 --upstream 127.0.0.1:4433 --profile overloaded \
//!     [--seed N] [--time-scale X] [--profiles FILE] [--loss P] [--rtt-ms MS] ...
//! ```
//!
//! It prints one line when it listens and the counters when it stops
//! (Ctrl-C or SIGTERM).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use lanyard_tests::netem::{Netem, NetemConfig, Profile, Profiles, REPO_PROFILES_PATH};

/// A user-space UDP impairment proxy: clients talk to --listen, the proxy
/// forwards to --upstream through one impaired link per client address.
#[derive(Debug, Parser)]
#[command(name = "lanyard-netem", version)]
struct Args {
    /// Address the clients send to, e.g. 127.0.0.1:5433.
    #[arg(long)]
    listen: SocketAddr,
    /// The server's address, e.g. 127.0.0.1:4433.
    #[arg(long)]
    upstream: SocketAddr,
    /// Name of the link profile (a table of the profiles file).
    #[arg(long)]
    profile: String,
    /// Profiles file [default: the repository's tests/data/venue-profiles.toml,
    /// or the copy built into the binary when that file is gone].
    #[arg(long, value_name = "FILE")]
    profiles: Option<PathBuf>,
    /// Seed of every random decision [default: a random one, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Multiplies outage intervals and lengths and rebind intervals (0.01 = 100x sooner and shorter).
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    time_scale: f64,
    /// Override: long-run loss probability, each direction, in [0, 1).
    #[arg(long, value_name = "P")]
    loss: Option<f64>,
    /// Override: mean loss burst length in packets (>= 1).
    #[arg(long, value_name = "PACKETS")]
    loss_burst: Option<f64>,
    /// Override: base round-trip time in ms (half each way).
    #[arg(long, value_name = "MS")]
    rtt_ms: Option<f64>,
    /// Override: extra delay per packet, uniform 0..jitter_ms ms.
    #[arg(long, value_name = "MS")]
    jitter_ms: Option<f64>,
    /// Override: per-client bottleneck rate in kbit/s, each direction (0 = unlimited).
    #[arg(long, value_name = "KBIT")]
    rate_kbit: Option<f64>,
    /// Override: bottleneck queue depth in ms before tail drop.
    #[arg(long, value_name = "MS")]
    queue_ms: Option<f64>,
    /// Override: mean seconds between outages of a link (0 = none).
    #[arg(long, value_name = "S")]
    outage_every_s: Option<f64>,
    /// Override: shortest outage in seconds.
    #[arg(long, value_name = "S")]
    outage_min_s: Option<f64>,
    /// Override: longest outage in seconds.
    #[arg(long, value_name = "S")]
    outage_max_s: Option<f64>,
    /// Override: mean seconds between NAT rebinds of a link (0 = none).
    #[arg(long, value_name = "S")]
    rebind_every_s: Option<f64>,
}

impl Args {
    /// The named profile with every override applied, validated.
    fn profile(&self, profiles: &Profiles) -> anyhow::Result<Profile> {
        let mut profile = profiles.get(&self.profile)?.clone();
        let [outage_min, outage_max] = &mut profile.outage_s;
        let overrides = [
            (self.loss, &mut profile.loss),
            (self.loss_burst, &mut profile.loss_burst),
            (self.rtt_ms, &mut profile.rtt_ms),
            (self.jitter_ms, &mut profile.jitter_ms),
            (self.rate_kbit, &mut profile.rate_kbit),
            (self.queue_ms, &mut profile.queue_ms),
            (self.outage_every_s, &mut profile.outage_every_s),
            (self.outage_min_s, outage_min),
            (self.outage_max_s, outage_max),
            (self.rebind_every_s, &mut profile.rebind_every_s),
        ];
        for (value, field) in overrides {
            if let Some(value) = value {
                *field = value;
            }
        }
        profile
            .validate()
            .with_context(|| format!("profile {:?} with the overrides given", self.profile))?;
        Ok(profile)
    }
}

/// The profiles to use and a description of where they came from.
fn load_profiles(path: Option<&Path>) -> anyhow::Result<(Profiles, String)> {
    if let Some(path) = path {
        return Ok((Profiles::load(path)?, path.display().to_string()));
    }
    let repo = Path::new(REPO_PROFILES_PATH);
    if repo.exists() {
        return Ok((Profiles::load(repo)?, repo.display().to_string()));
    }
    Ok((Profiles::builtin()?, "built-in copy".to_string()))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (profiles, source) = load_profiles(args.profiles.as_deref())?;
    let profile = args.profile(&profiles)?;
    if !args.time_scale.is_finite() || args.time_scale <= 0.0 {
        anyhow::bail!(
            "--time-scale must be a finite number > 0, got {}",
            args.time_scale
        );
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let netem = Netem::start(NetemConfig {
        listen: args.listen,
        upstream: args.upstream,
        profile: profile.clone(),
        seed,
        time_scale: args.time_scale,
    })
    .await?;
    // Handlers first, then the line scripts wait for: a signal right after it is caught.
    let signal = lanyard_server::shutdown_signal().context("installing the signal handlers")?;
    println!(
        "lanyard-netem listening on {} → upstream {} (profile {} from {source}: {profile}; seed {seed}; time scale {})",
        netem.local_addr(),
        args.upstream,
        args.profile,
        args.time_scale
    );
    signal.await;
    let counters = netem.stop().await;
    println!("{counters}");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("lanyard-netem: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lanyard-netem: {err:#}");
            ExitCode::FAILURE
        }
    }
}
