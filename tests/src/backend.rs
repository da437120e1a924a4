//! The server a venue run talks to: in this process (tests), or real
//! `lanyard-server` child processes (benchmarks) — one on sled, or several
//! nodes on one PostgreSQL database — seen the same way: counters as a
//! [`StatsSnapshot`] (a cluster's added up), and at the end the documents
//! it stored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use automerge::Automerge;
use lanyard_protocol::DocId;
use lanyard_server::{AdmissionConfig, Identity, Server, ServerOptions, StatsSnapshot};
use lanyard_store::SledStore;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Where the server runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMode {
    /// A [`Server`] inside this process (its memory and CPU figures include the devices').
    InProcess,
    /// A `lanyard-server serve` child process started from this binary.
    Process(PathBuf),
}

impl ServerMode {
    /// The `lanyard-server` binary beside the running executable (cargo puts
    /// every binary of a profile in one directory).
    pub fn beside_current_exe() -> anyhow::Result<ServerMode> {
        let exe = std::env::current_exe().context("cannot locate this executable")?;
        let bin = exe.with_file_name(format!("lanyard-server{}", std::env::consts::EXE_SUFFIX));
        if !bin.exists() {
            bail!(
                "{} not found: build it with `cargo build --release -p lanyard-server`, \
                 or pass --server-bin PATH or --in-process",
                bin.display()
            );
        }
        Ok(ServerMode::Process(bin))
    }
}

/// The running server: one node, or the nodes of a cluster.
#[derive(Debug)]
pub struct Backend {
    nodes: Vec<Node>,
    /// The nodes' shared PostgreSQL store.
    store: Option<String>,
}

/// One running server node.
pub enum Node {
    /// In this process.
    InProcess(Server),
    /// A child process.
    Process {
        /// The child.
        child: tokio::process::Child,
        /// Its stats file.
        stats: PathBuf,
        /// Its data directory.
        data: PathBuf,
    },
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::InProcess(s) => f.debug_tuple("InProcess").field(s).finish(),
            Node::Process { child, .. } => {
                f.debug_struct("Process").field("pid", &child.id()).finish()
            }
        }
    }
}

impl Backend {
    /// Starts a server on loopback with data in `data` (whose identity must
    /// already exist, so the caller can sign tokens), returning its address.
    pub async fn start(
        mode: &ServerMode,
        data: &Path,
        admission: AdmissionConfig,
    ) -> anyhow::Result<(Backend, SocketAddr)> {
        let (backend, addrs) = Self::start_nodes(mode, data, admission, 1, None).await?;
        Ok((backend, addrs[0]))
    }

    /// Starts `nodes` server nodes on loopback sharing `store` (sled for one
    /// node without it): the first with data in `data`, whose identity must
    /// already exist, the others in `data/node<i>` with a copy of it (one
    /// certificate and token key). Returns each node's address.
    pub async fn start_nodes(
        mode: &ServerMode,
        data: &Path,
        admission: AdmissionConfig,
        nodes: usize,
        store: Option<&str>,
    ) -> anyhow::Result<(Backend, Vec<SocketAddr>)> {
        let nodes = nodes.max(1);
        if nodes > 1 && (store.is_none() || *mode == ServerMode::InProcess) {
            bail!("{nodes} nodes need server processes sharing a PostgreSQL store");
        }
        let mut started = Vec::with_capacity(nodes);
        let mut addrs = Vec::with_capacity(nodes);
        for i in 0..nodes {
            let dir = if i == 0 {
                data.to_owned()
            } else {
                let d = data.join(format!("node{i}"));
                crate::crashloop::copy_identity(data, &d)?;
                d
            };
            let (node, addr) = Node::start(mode, &dir, admission, store)
                .await
                .with_context(|| format!("node {i}"))?;
            started.push(node);
            addrs.push(addr);
        }
        Ok((
            Backend {
                nodes: started,
                store: store.map(str::to_owned),
            },
            addrs,
        ))
    }

    /// Whether the server runs as separate processes (their memory and CPU
    /// are their own).
    pub fn is_process(&self) -> bool {
        self.nodes.iter().all(Node::is_process)
    }

    /// The latest counters, every node's added up.
    pub fn stats(&self) -> StatsSnapshot {
        merged(self.nodes.iter().map(Node::stats))
    }

    /// Each node's latest counters.
    pub fn node_stats(&self) -> Vec<StatsSnapshot> {
        self.nodes.iter().map(Node::stats).collect()
    }

    /// Counters taken after this call, every node's added up.
    pub async fn fresh_stats(&self) -> anyhow::Result<StatsSnapshot> {
        let mut all = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            all.push(n.fresh_stats().await?);
        }
        Ok(merged(all))
    }

    /// Stops every node (SIGTERM for a child) and returns the counters
    /// (added up, and each node's) and the stored copy of each of `docs`
    /// (read from the shared store for a cluster).
    pub async fn finish(self, docs: &[DocId]) -> anyhow::Result<Finished> {
        let Backend { nodes, store } = self;
        let mut per_node = Vec::with_capacity(nodes.len());
        // A lone node reads its own documents back (on sled, start allows
        // one node only); a cluster's are read from the database once every
        // node stopped.
        let mut held = Vec::new();
        for (i, node) in nodes.into_iter().enumerate() {
            let own = if store.is_none() { docs } else { &[] };
            let (stats, found) = node
                .finish(own)
                .await
                .with_context(|| format!("node {i}"))?;
            per_node.push(stats);
            held = found;
        }
        if let Some(url) = store {
            let docs = docs.to_vec();
            held = tokio::task::spawn_blocking(move || {
                let store = lanyard_store_postgres::PgStore::connect(&url)?;
                load_all(&store, &docs)
            })
            .await??;
        }
        Ok(Finished {
            stats: merged(per_node.iter().cloned()),
            per_node,
            held,
        })
    }
}

/// What [`Backend::finish`] found.
#[derive(Debug)]
pub struct Finished {
    /// The final counters, every node's added up.
    pub stats: StatsSnapshot,
    /// Each node's final counters.
    pub per_node: Vec<StatsSnapshot>,
    /// The stored copy of each document asked for.
    pub held: Vec<Option<Automerge>>,
}

fn merged(all: impl IntoIterator<Item = StatsSnapshot>) -> StatsSnapshot {
    let mut all = all.into_iter();
    let Some(mut sum) = all.next() else {
        return StatsSnapshot::default();
    };
    for s in all {
        sum.merge(&s);
    }
    sum
}

/// Each of `docs` as `store` holds it.
fn load_all(
    store: &dyn lanyard_store::Store,
    docs: &[DocId],
) -> anyhow::Result<Vec<Option<Automerge>>> {
    let mut held = Vec::with_capacity(docs.len());
    for d in docs {
        let doc = match store.load_doc(&d.to_string())? {
            Some(bytes) => Some(
                Automerge::load(&bytes)
                    .with_context(|| format!("the server stored a corrupt copy of {d}"))?,
            ),
            None => None,
        };
        held.push(doc);
    }
    Ok(held)
}

impl Node {
    /// Starts one node on loopback with data in `data` (identity made).
    async fn start(
        mode: &ServerMode,
        data: &Path,
        admission: AdmissionConfig,
        store: Option<&str>,
    ) -> anyhow::Result<(Node, SocketAddr)> {
        Identity::load_or_create(data)?;
        match mode {
            ServerMode::InProcess => {
                let mut opts = ServerOptions::new(data, "127.0.0.1:0".parse()?);
                opts.admission = admission;
                // The server shares this process with every simulated device:
                // its resident memory is not the server's, so no memory limit.
                opts.admission.max_memory_bytes = u64::MAX;
                let server = Server::start(opts).await?;
                let addr = server.local_addr()?;
                Ok((Node::InProcess(server), addr))
            }
            ServerMode::Process(bin) => {
                let stats = data.join("stats.json");
                let mut command = tokio::process::Command::new(bin);
                command.arg("serve");
                if let Some(url) = store {
                    command.arg("--store").arg(url);
                }
                let mut child = command
                    .arg("--data")
                    .arg(data)
                    .args(["--listen", "127.0.0.1:0"])
                    .arg("--stats-file")
                    .arg(&stats)
                    .arg("--max-connections")
                    .arg(admission.max_connections.to_string())
                    .arg("--handshakes-per-sec")
                    .arg(admission.handshakes_per_sec.to_string())
                    .arg("--max-memory-mib")
                    .arg((admission.max_memory_bytes >> 20).to_string())
                    .arg("--retry-after")
                    .arg(format!("{}ms", admission.retry_after.as_millis()))
                    .arg("--max-handshake-wait")
                    .arg(format!("{}ms", admission.max_wait.as_millis()))
                    .arg("--max-handshaking")
                    .arg(admission.max_handshaking.to_string())
                    // One log line per connection is for operators, not for
                    // a benchmark of thousands (RUST_LOG still picks).
                    .env(
                        "RUST_LOG",
                        std::env::var("RUST_LOG").unwrap_or_else(|_| "lanyard_server=warn".into()),
                    )
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("cannot start {}", bin.display()))?;
                let out = child.stdout.take().context("no stdout from the server")?;
                let mut lines = BufReader::new(out).lines();
                let addr = tokio::time::timeout(Duration::from_secs(60), async {
                    while let Some(line) = lines.next_line().await? {
                        if let Some(rest) = line.strip_prefix("lanyard-server listening on ") {
                            let addr = rest.split_whitespace().next().unwrap_or_default();
                            return Ok::<_, anyhow::Error>(Some(addr.parse::<SocketAddr>()?));
                        }
                    }
                    Ok(None)
                })
                .await
                .context("the server did not say where it listens within 60 s")??
                .context("the server exited before listening")?;
                // Keep draining its stdout so it never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                let node = Node::Process {
                    child,
                    stats,
                    data: data.to_owned(),
                };
                node.fresh_stats().await?;
                Ok((node, addr))
            }
        }
    }

    /// Whether the server is a separate process (its memory and CPU are its own).
    pub fn is_process(&self) -> bool {
        matches!(self, Node::Process { .. })
    }

    /// The latest counters (a child's file is at most half a second old).
    pub fn stats(&self) -> StatsSnapshot {
        match self {
            Node::InProcess(s) => s.snapshot(),
            Node::Process { stats, .. } => StatsSnapshot::read(stats).unwrap_or_default(),
        }
    }

    /// Counters taken after this call (waits for the child's next write).
    pub async fn fresh_stats(&self) -> anyhow::Result<StatsSnapshot> {
        let Node::Process { stats, .. } = self else {
            return Ok(self.stats());
        };
        let since = now_ms();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut last_error = String::new();
        loop {
            match StatsSnapshot::read(stats) {
                Ok(s) if s.unix_ms > since => return Ok(s),
                Ok(_) => {}
                Err(e) => last_error = format!(" ({e})"),
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the server has not updated {} for 30 s{last_error}",
                    stats.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server (SIGTERM for a child, then its final counters) and
    /// returns the counters and the stored copy of each of `docs`.
    async fn finish(
        self,
        docs: &[DocId],
    ) -> anyhow::Result<(StatsSnapshot, Vec<Option<Automerge>>)> {
        match self {
            Node::InProcess(server) => {
                let stats = server.snapshot();
                let held = docs
                    .iter()
                    .map(|d| server.with_doc(d, |doc| doc.cloned()))
                    .collect();
                server.shutdown().await;
                Ok((stats, held))
            }
            Node::Process {
                mut child,
                stats,
                data,
            } => {
                let pid = child.id().context("the server has already exited")?;
                let term = tokio::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await
                    .context("cannot run kill")?;
                if !term.success() {
                    bail!("kill -TERM {pid} failed");
                }
                let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
                    .await
                    .context("the server did not stop within 60 s of SIGTERM")??;
                if !status.success() {
                    bail!("the server exited with {status}");
                }
                let final_stats = StatsSnapshot::read(&stats)?;
                if docs.is_empty() {
                    return Ok((final_stats, Vec::new()));
                }
                // What the server stored durably, read back from its database.
                let store = SledStore::open(data.join("db"))?;
                Ok((final_stats, load_all(&store, docs)?))
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
