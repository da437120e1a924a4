//! `lanyard-bench cluster`: one sled node, then N nodes on one PostgreSQL,
//! measured in the same run on the same machine. Devices (client cores in
//! this process, real QUIC on loopback) are spread over the nodes, each
//! pinned to one; the organizer writes on node 0, so the devices of the
//! other nodes receive every change across nodes. Figures: the join, the
//! fan-out of each change to every device (same node and across nodes),
//! each node's CPU and memory, and the database's commits per second and
//! NOTIFY queue usage.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use lanyard_client_core::{BackgroundOptions, Client, NewSession};
use lanyard_protocol::Role;
use lanyard_server::ProcessFigures;
use lanyard_store_postgres::testing::psql_url;

use crate::crashloop::{link_as, Cluster};

/// What to run.
#[derive(Debug, Clone)]
pub struct ClusterBench {
    /// The `lanyard-server` binary.
    pub server_bin: PathBuf,
    /// Nodes on PostgreSQL.
    pub nodes: usize,
    /// Attendee devices.
    pub devices: usize,
    /// Changes the organizer makes (each measured to every device).
    pub changes: usize,
    /// Devices sharing one UDP socket.
    pub devices_per_endpoint: usize,
}

/// The figures of one configuration.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// "sled ×1" or "postgres ×N".
    pub label: String,
    /// Every device holding the first session, from the first device's start.
    pub join: Duration,
    /// Change made on node 0 → held by a device of node 0.
    pub same_node: Vec<Duration>,
    /// Change made on node 0 → held by a device of another node.
    pub cross_node: Vec<Duration>,
    /// CPU seconds and resident bytes of each node at the end.
    pub node_cost: Vec<(f64, u64)>,
    /// Database commits per second during the changes (PostgreSQL only).
    pub commits_per_sec: Option<f64>,
    /// Highest `pg_notification_queue_usage()` seen (PostgreSQL only).
    pub notify_queue: Option<f64>,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl Figures {
    /// One line per figure, for the terminal.
    pub fn report(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut same = self.same_node.clone();
        same.sort();
        let mut cross = self.cross_node.clone();
        cross.sort();
        let mut out = format!("{}\n", self.label);
        out += &format!(
            "  join (every device holds the agenda): {:.1} s\n",
            self.join.as_secs_f64()
        );
        let line = |name: &str, xs: &[Duration]| {
            format!(
                "  fan-out, {name} p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms  ({} deliveries)\n",
                ms(pct(xs, 0.5)),
                ms(pct(xs, 0.99)),
                ms(pct(xs, 1.0)),
                xs.len()
            )
        };
        out += &line("same node: ", &same);
        if !cross.is_empty() {
            out += &line("cross-node:", &cross);
        }
        for (i, (cpu, rss)) in self.node_cost.iter().enumerate() {
            out += &format!(
                "  node {i}: CPU {cpu:.1} s, resident {:.0} MiB\n",
                *rss as f64 / 1048576.0
            );
        }
        if let Some(c) = self.commits_per_sec {
            out += &format!("  database: {c:.0} commits/s during the changes\n");
        }
        if let Some(q) = self.notify_queue {
            out += &format!("  NOTIFY queue usage, highest: {:.6} %\n", q * 100.0);
        }
        out
    }
}

/// Adds session `id` on the organizer's device and syncs until acknowledged
/// (120 s at most).
pub async fn publish(org: &Client, id: &str) -> anyhow::Result<()> {
    let start = i64::try_from(crate::unix_now())? + 86_400;
    org.add_session(NewSession {
        id: id.into(),
        title: format!("Talk {id}"),
        room: "Main".into(),
        start_unix: start,
        end_unix: start + 1800,
        ..NewSession::default()
    })?;
    acknowledged(org, &format!("session {id}")).await
}

/// Syncs `client` until the server acknowledged every change it holds
/// (120 s at most; `what` names them in the error).
pub async fn acknowledged(client: &Client, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if client.sync(Duration::from_secs(10)).await.is_ok()
            && client.status().pending_changes == 0
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} was not acknowledged within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every device holds session `id`; each device's delay after `since`.
async fn arrivals(
    devices: &[Client],
    id: &str,
    since: Instant,
    within: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let mut got = vec![None; devices.len()];
    let deadline = since + within;
    loop {
        let mut left = 0;
        for (i, d) in devices.iter().enumerate() {
            if got[i].is_none() {
                if matches!(d.session(id), Ok(Some(_))) {
                    got[i] = Some(since.elapsed());
                } else {
                    left += 1;
                }
            }
        }
        if left == 0 {
            return Ok(got.into_iter().flatten().collect());
        }
        if Instant::now() > deadline {
            bail!(
                "{left} devices never got {id} within {} s",
                within.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs one configuration: `nodes` nodes on `store` (sled when `None`).
pub async fn run_one(
    cfg: &ClusterBench,
    nodes: usize,
    store: Option<&str>,
    progress: &dyn Fn(&str),
) -> anyhow::Result<Figures> {
    let label = match store {
        Some(_) => format!("postgres ×{nodes}"),
        None => "sled ×1".to_string(),
    };
    let Cluster {
        dir: _dir,
        identity,
        addrs,
        nodes: children,
        ..
    } = Cluster::start(&cfg.server_bin, nodes, store).await?;
    let org = Client::in_memory()?;
    org.join(&link_as(
        &identity,
        &addrs[..1],
        Role::Organizer,
        "org",
        "laptop",
    )?)?;
    org.set_event("Cluster bench", "UTC")?;
    publish(&org, "s0").await?;

    progress(&format!("{label}: {} devices joining", cfg.devices));
    let started = Instant::now();
    let mut devices = Vec::with_capacity(cfg.devices);
    let mut syncs = Vec::with_capacity(cfg.devices);
    let mut endpoint = None;
    for i in 0..cfg.devices {
        if i % cfg.devices_per_endpoint.max(1) == 0 {
            endpoint = Some(lanyard_client_core::shared_endpoint(
                "127.0.0.1:0".parse()?,
            )?);
        }
        let c = Client::in_memory()?;
        if let Some(e) = &endpoint {
            c.share_endpoint(e.clone());
        }
        let node = addrs[i % nodes];
        c.join(&link_as(
            &identity,
            &[node],
            Role::Attendee,
            &format!("a{i:05}"),
            "phone",
        )?)?;
        syncs.push(c.start_background(BackgroundOptions::default()));
        devices.push(c);
    }
    arrivals(&devices, "s0", started, Duration::from_secs(900)).await?;
    let join = started.elapsed();

    let commits = |url: &str| -> Option<f64> {
        psql_url(
            url,
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .ok()?
        .parse()
        .ok()
    };
    let before = store.and_then(commits);
    let changes_started = Instant::now();
    let mut figures = Figures {
        label: label.clone(),
        join,
        ..Figures::default()
    };
    let mut queue: Option<f64> = None;
    for k in 1..=cfg.changes {
        progress(&format!("{label}: change {k} of {}", cfg.changes));
        let id = format!("s{k}");
        let t = Instant::now();
        publish(&org, &id).await?;
        let got = arrivals(&devices, &id, t, Duration::from_secs(300)).await?;
        for (i, d) in got.into_iter().enumerate() {
            if i % nodes == 0 {
                figures.same_node.push(d);
            } else {
                figures.cross_node.push(d);
            }
        }
        if let Some(url) = store {
            if let Some(q) = psql_url(url, "SELECT pg_notification_queue_usage()")
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
            {
                queue = Some(queue.map_or(q, |m: f64| m.max(q)));
            }
        }
    }
    let elapsed = changes_started.elapsed().as_secs_f64();
    if let (Some(url), Some(b)) = (store, before) {
        if let Some(a) = commits(url) {
            figures.commits_per_sec = Some((a - b) / elapsed.max(1e-9));
        }
    }
    figures.notify_queue = queue;
    for c in &children {
        let pid = c.id().context("a node exited during the run")?;
        let f = ProcessFigures::of_pid(pid);
        figures.node_cost.push((f.cpu_seconds, f.rss_bytes));
    }
    progress(&format!("{label}: stopping"));
    for s in syncs {
        s.stop().await;
    }
    for mut c in children {
        let _ = c.start_kill();
        let _ = c.wait().await;
    }
    Ok(figures)
}

/// What one database took in [`database_ceiling`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Ceiling {
    /// Flush transactions committed per second, all writers together.
    pub commits_per_sec: f64,
    /// Chunks written per second.
    pub chunks_per_sec: f64,
    /// Chunks the writers' feeds read per second (each node reads every
    /// other node's rows).
    pub feed_chunks_per_sec: f64,
}

/// The most one database takes from `writers` nodes, each flushing `batch`
/// chunks of `size` bytes (one transaction with its NOTIFY, as a node's
/// flush) as fast as it can for `secs`, while each also follows the
/// others' rows through its change feed: how far one database carries.
pub async fn database_ceiling(
    url: &str,
    writers: usize,
    batch: usize,
    size: usize,
    secs: f64,
) -> anyhow::Result<Ceiling> {
    use lanyard_store::Store as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let read = Arc::new(AtomicU64::new(0));
    let mut stores = Vec::with_capacity(writers);
    let mut feeds = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let url = url.to_owned();
        let store =
            tokio::task::spawn_blocking(move || lanyard_store_postgres::PgStore::connect(&url))
                .await??;
        let mut feed = store.follow()?;
        let read = read.clone();
        feeds.spawn(async move {
            while let Some(b) = feed.next().await {
                read.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
        });
        stores.push(Arc::new(store));
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for (w, store) in stores.iter().enumerate() {
        let store = store.clone();
        tasks.spawn_blocking(move || {
            let data = vec![w as u8; size];
            let doc = format!("bench/ceiling-{w}");
            let mut flushes = 0u64;
            while Instant::now() < deadline {
                for _ in 0..batch {
                    store.append_chunks_deferred(&doc, std::slice::from_ref(&data))?;
                }
                store.flush()?;
                flushes += 1;
            }
            Ok::<_, lanyard_store::StoreError>(flushes)
        });
    }
    let mut flushes = 0;
    while let Some(r) = tasks.join_next().await {
        flushes += r??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The feeds catch up within a second or two of the last commit.
    let expected = flushes * batch as u64 * (writers as u64 - 1);
    let wait = Instant::now() + Duration::from_secs(30);
    while read.load(Ordering::Relaxed) < expected && Instant::now() < wait {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let feed_s = started.elapsed().as_secs_f64();
    drop(stores);
    feeds.abort_all();
    Ok(Ceiling {
        commits_per_sec: flushes as f64 / elapsed,
        chunks_per_sec: (flushes * batch as u64) as f64 / elapsed,
        feed_chunks_per_sec: read.load(Ordering::Relaxed) as f64 / feed_s,
    })
}

/// A throwaway PostgreSQL server (fsync on) and a database in it, unless
/// `store` names one. The server stops when the first value drops.
pub fn database_url(
    store: Option<String>,
) -> anyhow::Result<(Option<lanyard_store_postgres::testing::TempCluster>, String)> {
    Ok(match store {
        Some(u) => (None, u),
        None => {
            let c = lanyard_store_postgres::testing::TempCluster::start_with_fsync(true)
                .map_err(anyhow::Error::msg)?;
            let u = c.create_database().map_err(anyhow::Error::msg)?;
            (Some(c), u)
        }
    })
}
