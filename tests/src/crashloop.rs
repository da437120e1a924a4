//! Crash loops: kill the server, or a device, with SIGKILL at random moments,
//! again and again, and check that nothing acknowledged was lost.
//!
//! * **Server**: a real `lanyard-server` process on a fixed loopback port
//!   and its own sled directory, under write load from several devices
//!   (client cores in this process). Each device appends numbered tokens to
//!   a note and syncs; a token counts as acknowledged once a sync returned
//!   with nothing pending. The server is SIGKILLed after a random time and
//!   started again on the same directory, every cycle. At the end it is
//!   stopped with SIGTERM and its database is read back from disk: every
//!   acknowledged token must be in it.
//!   Beside them, reserving devices hammer a few sessions of a small
//!   capacity with reservations and cancellations, so the server is killed
//!   in the middle of deciding who gets a seat. At the end every
//!   acknowledged request must have its outcome on disk, and no session may
//!   hold more seats than its capacity.
//! * **Client**: a child process (this binary's `client-child` mode) opens
//!   a device's sled database and appends numbered tokens to a note,
//!   printing each number once the edit call returned. The parent SIGKILLs
//!   it right after a random line, and starts the next child on the same
//!   database. At the end every printed token must be in the note.
//!
//! * **Cluster**: the server loop with `nodes` > 1 server processes on one
//!   PostgreSQL database (`store`), each started with a copy of the first
//!   node's data directory; every device's link names all of them. Each
//!   cycle SIGKILLs one node at random (its devices move to another node)
//!   and starts it again. At the end the database is read back.
//!
//! Each cycle also proves the store opens after a crash: a server that does
//! not come back, or a child that cannot open its database, fails the run.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use automerge::Automerge;
use lanyard_client_core::docs::NotesDoc;
use lanyard_client_core::Client;
use lanyard_protocol::{DeviceId, DocId, EventId, JoinLink, Role, TokenClaims, UserId};
use lanyard_server::Identity;
use lanyard_store::{SledStore, Store};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// The note every writer appends to.
const SESSION: &str = "crash";
/// The event of every run.
const EVENT: &str = "crashloop";

/// What a crash loop found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Kill-and-restart cycles done.
    pub cycles: u64,
    /// Writes acknowledged (server: by a sync; client: by the edit call).
    pub acknowledged: u64,
    /// Acknowledged writes missing at the end.
    pub lost: u64,
    /// Seat requests acknowledged (server loop).
    pub requests: u64,
    /// Acknowledged seat requests with no outcome on disk at the end.
    pub undecided: u64,
    /// Sessions holding more seats than their capacity at the end.
    pub overbooked: u64,
}

impl Outcome {
    /// Both outcomes together.
    pub fn plus(self, other: Outcome) -> Outcome {
        Outcome {
            cycles: self.cycles + other.cycles,
            acknowledged: self.acknowledged + other.acknowledged,
            lost: self.lost + other.lost,
            requests: self.requests + other.requests,
            undecided: self.undecided + other.undecided,
            overbooked: self.overbooked + other.overbooked,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cycles={} acknowledged={} lost={} requests={} undecided={} overbooked={}",
            self.cycles,
            self.acknowledged,
            self.lost,
            self.requests,
            self.undecided,
            self.overbooked
        )
    }
}

/// The tokens `1..=upto` missing from a note written as `1;2;3;…`.
fn missing(note: &str, upto: u64) -> u64 {
    let have: BTreeSet<u64> = note
        .split(';')
        .filter_map(|t| t.trim().parse().ok())
        .collect();
    (1..=upto).filter(|k| !have.contains(k)).count() as u64
}

/// A loopback UDP port free right now.
pub fn free_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

/// Settings of the server crash loop.
#[derive(Debug, Clone)]
pub struct ServerLoop {
    /// The `lanyard-server` binary.
    pub server_bin: PathBuf,
    /// Kill-and-restart cycles.
    pub cycles: u64,
    /// Writing devices.
    pub writers: usize,
    /// Devices reserving and cancelling seats.
    pub reservers: usize,
    /// The server is killed a random time in `[min_up, max_up]` after it listens.
    pub min_up: Duration,
    /// See `min_up`.
    pub max_up: Duration,
    /// Seed of every random choice.
    pub seed: u64,
    /// Server processes (more than one needs a PostgreSQL `store`).
    pub nodes: usize,
    /// The nodes' shared store: a PostgreSQL URL; sled in the data
    /// directory when `None`.
    pub store: Option<String>,
}

/// A `lanyard-server serve` child on `addr`, once it listens (killed on drop).
pub async fn start_server(
    bin: &Path,
    data: &Path,
    addr: SocketAddr,
) -> anyhow::Result<tokio::process::Child> {
    start_node(bin, data, addr, None).await
}

/// A `lanyard-server serve` child on `addr` with its documents in `store`
/// (a PostgreSQL URL) or in sled, once it listens (killed on drop).
pub async fn start_node(
    bin: &Path,
    data: &Path,
    addr: SocketAddr,
    store: Option<&str>,
) -> anyhow::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new(bin);
    if let Some(url) = store {
        command.arg("serve").arg("--store").arg(url);
    } else {
        command.arg("serve");
    }
    let mut child = command
        .arg("--data")
        .arg(data)
        .arg("--listen")
        .arg(addr.to_string())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let out = child.stdout.take().context("no stdout from the server")?;
    let err = child.stderr.take().context("no stderr from the server")?;
    let mut lines = BufReader::new(out).lines();
    let listening = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("lanyard-server listening on ") {
                return Ok::<_, anyhow::Error>(true);
            }
        }
        Ok(false)
    })
    .await;
    if !matches!(listening, Ok(Ok(true))) {
        let _ = child.start_kill();
        let mut text = String::new();
        let mut errs = BufReader::new(err).lines();
        while let Ok(Ok(Some(l))) =
            tokio::time::timeout(Duration::from_secs(5), errs.next_line()).await
        {
            text.push_str(&l);
            text.push('\n');
        }
        bail!("the server did not come back on its data directory: {text}");
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    tokio::spawn(async move {
        let mut errs = BufReader::new(err).lines();
        while let Ok(Some(_)) = errs.next_line().await {}
    });
    Ok(child)
}

/// An attendee's join link for the crash-loop event, signed by `identity`.
pub fn link(
    identity: &Identity,
    addr: SocketAddr,
    user: &str,
    device: &str,
) -> anyhow::Result<String> {
    link_as(identity, &[addr], Role::Attendee, user, device)
}

/// A join link for the crash-loop event with `role`, naming every node of
/// `nodes`, signed by `identity`.
pub fn link_as(
    identity: &Identity,
    nodes: &[SocketAddr],
    role: Role,
    user: &str,
    device: &str,
) -> anyhow::Result<String> {
    let claims = TokenClaims {
        event: EventId::new(EVENT)?,
        user: UserId::new(user)?,
        role,
        device: DeviceId::new(device)?,
        expires_at: crate::unix_now() + 24 * 3600,
    };
    Ok(JoinLink {
        servers: nodes.iter().map(ToString::to_string).collect(),
        event: claims.event.clone(),
        token: identity.sign(&claims),
        pin: identity.pin(),
    }
    .to_string())
}

/// One writing device: appends `k;` and syncs, forever; returns the highest
/// token a sync acknowledged.
async fn writer(client: Client, stop: Arc<AtomicBool>) -> u64 {
    let mut acked = 0;
    let mut k = 0;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        if client.append_note(SESSION, &format!("{k};")).is_err() {
            break;
        }
        match client.sync(Duration::from_secs(5)).await {
            Ok(_) if client.status().pending_changes == 0 => acked = k,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    acked
}

/// Sessions the reservers compete for, and their capacity.
const SEAT_SESSIONS: usize = 3;
const SEAT_CAPACITY: u32 = 2;

/// The organizer publishes the sessions with a capacity (retrying while the
/// server is down).
async fn publish_seats(client: &Client) -> anyhow::Result<()> {
    client.set_event("Crash loop", "UTC")?;
    let start = i64::try_from(crate::unix_now())? + 86_400;
    for k in 0..SEAT_SESSIONS {
        client.add_session(lanyard_client_core::NewSession {
            id: format!("seat-{k}"),
            title: format!("Workshop {k}"),
            room: format!("Room {k}"),
            start_unix: start,
            end_unix: start + 3600,
            ..lanyard_client_core::NewSession::default()
        })?;
        client.set_capacity(&format!("seat-{k}"), SEAT_CAPACITY)?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client.sync(Duration::from_secs(5)).await.is_ok() && client.status().pending_changes == 0
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the organizer could not publish the sessions within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One reserving device: reserves or gives back a seat at random and syncs,
/// forever; returns the ids of the requests a sync acknowledged.
async fn reserver(client: Client, seed: u64, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut acked = Vec::new();
    let mut made: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let session = format!("seat-{}", rng.random_range(0..SEAT_SESSIONS));
        let r = if rng.random_bool(0.7) {
            client.reserve(&session)
        } else {
            client.cancel_reservation(&session)
        };
        match r {
            Ok(id) => made.push(id),
            Err(_) => break,
        }
        match client.sync(Duration::from_secs(5)).await {
            Ok(_) if client.status().pending_changes == 0 => acked.append(&mut made),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    acked
}

/// Reads back what the server stored of the reservers: acknowledged requests
/// without an outcome, and sessions over capacity.
fn check_seats(store: &dyn Store, acked: &[Vec<String>]) -> anyhow::Result<(u64, u64)> {
    use lanyard_protocol::seats::doc as seatdoc;
    use lanyard_protocol::seats::SeatState;
    let event = EventId::new(EVENT)?;
    let mut undecided = 0;
    let mut held: std::collections::BTreeMap<String, u32> = Default::default();
    for (i, ids) in acked.iter().enumerate() {
        let user = UserId::new(format!("r{i}"))?;
        let seats = DocId::Seats(event.clone(), user.clone());
        let doc = match store.load_doc(&seats.to_string())? {
            Some(b) => Automerge::load(&b).with_context(|| format!("{seats} is corrupt"))?,
            None => Automerge::new(),
        };
        let decided = seatdoc::read_decided(&doc);
        undecided += ids.iter().filter(|id| !decided.contains_key(*id)).count() as u64;
        for o in seatdoc::read_outcomes(&doc, &user) {
            if matches!(o.state, SeatState::Confirmed | SeatState::Offered) {
                *held.entry(o.session.to_string()).or_default() += 1;
            }
        }
    }
    let over = held.values().filter(|n| **n > SEAT_CAPACITY).count() as u64;
    Ok((undecided, over))
}

/// Waits until the shared store at `url` holds a decision for every
/// acknowledged request (60 s at most: what is still undecided then is
/// counted by the final check).
async fn wait_decided(url: &str, acked: &[Vec<String>]) -> anyhow::Result<()> {
    let url = url.to_owned();
    let acked = acked.to_vec();
    tokio::task::spawn_blocking(move || {
        let store = lanyard_store_postgres::PgStore::connect(&url)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while check_seats(&store, &acked)?.0 > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })
    .await?
}

/// Runs the server crash loop, calling `progress` after every cycle.
pub async fn server_loop(
    cfg: &ServerLoop,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<Outcome> {
    if cfg.nodes > 1 && cfg.store.is_none() {
        bail!(
            "{} nodes need a shared store: give a PostgreSQL URL",
            cfg.nodes
        );
    }
    let nodes = cfg.nodes.max(1);
    let store = cfg.store.as_deref();
    let cluster = Cluster::start(&cfg.server_bin, nodes, store).await?;
    let Cluster {
        dir: _dir,
        identity,
        data,
        addrs,
        nodes: mut servers,
    } = cluster;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(cfg.writers);
    for i in 0..cfg.writers {
        let client = Client::in_memory()?;
        client.join(&link_as(
            &identity,
            &addrs,
            Role::Attendee,
            &format!("w{i}"),
            "d",
        )?)?;
        tasks.push(tokio::spawn(writer(client, Arc::clone(&stop))));
    }
    let mut seat_tasks = Vec::with_capacity(cfg.reservers);
    if cfg.reservers > 0 {
        let org = Client::in_memory()?;
        org.join(&link_as(
            &identity,
            &addrs,
            Role::Organizer,
            "org",
            "laptop",
        )?)?;
        publish_seats(&org).await?;
        for i in 0..cfg.reservers {
            let client = Client::in_memory()?;
            client.join(&link_as(
                &identity,
                &addrs,
                Role::Attendee,
                &format!("r{i}"),
                "d",
            )?)?;
            // The sessions must be known on the device before it reserves.
            let deadline = Instant::now() + Duration::from_secs(60);
            while client.session("seat-0")?.is_none() {
                let _ = client.sync(Duration::from_secs(5)).await;
                if Instant::now() > deadline {
                    bail!("reserver r{i} never got the agenda");
                }
            }
            let seed = cfg.seed.wrapping_mul(1000).wrapping_add(i as u64);
            seat_tasks.push(tokio::spawn(reserver(client, seed, Arc::clone(&stop))));
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let span = cfg.max_up.saturating_sub(cfg.min_up).as_millis() as u64;
    for cycle in 1..=cfg.cycles {
        let up = cfg.min_up + Duration::from_millis(rng.random_range(0..=span));
        tokio::time::sleep(up).await;
        let k = rng.random_range(0..nodes);
        servers[k]
            .start_kill()
            .context("cannot SIGKILL the server")?;
        servers[k].wait().await?;
        servers[k] = start_node(&cfg.server_bin, &data[k], addrs[k], store)
            .await
            .with_context(|| format!("cycle {cycle}: node {k}"))?;
        progress(cycle);
    }
    // Let every writer see one last acknowledgement, then stop them.
    tokio::time::sleep(cfg.max_up).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::with_capacity(tasks.len());
    for t in tasks {
        acked.push(t.await?);
    }
    let mut seat_acked = Vec::with_capacity(seat_tasks.len());
    for t in seat_tasks {
        seat_acked.push(t.await?);
    }
    if let Some(url) = store {
        // A node that is not the authority acknowledges a request before
        // the authority decides it (through the store's feed): the last
        // ones get their time.
        wait_decided(url, &seat_acked).await?;
    }
    // A clean stop, then what is stored.
    for server in &mut servers {
        let pid = server.id().context("the server exited on its own")?;
        let term = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        if !term.success() {
            bail!("kill -TERM {pid} failed");
        }
        tokio::time::timeout(Duration::from_secs(60), server.wait())
            .await
            .context("the server did not stop within 60 s of SIGTERM")??;
    }
    let stored: Box<dyn Store> = match store {
        Some(url) => {
            let url = url.to_owned();
            Box::new(
                tokio::task::spawn_blocking(move || lanyard_store_postgres::PgStore::connect(&url))
                    .await??,
            )
        }
        None => Box::new(SledStore::open(data[0].join("db"))?),
    };
    let mut outcome = Outcome {
        cycles: cfg.cycles,
        ..Outcome::default()
    };
    for (i, upto) in acked.into_iter().enumerate() {
        let doc_id = DocId::Attendee(EventId::new(EVENT)?, UserId::new(format!("w{i}"))?);
        let note = match stored.load_doc(&doc_id.to_string())? {
            Some(bytes) => NotesDoc::note(
                &Automerge::load(&bytes).with_context(|| format!("{doc_id} is corrupt"))?,
                SESSION,
            ),
            None => String::new(),
        };
        outcome.acknowledged += upto;
        outcome.lost += missing(&note, upto);
    }
    let (undecided, overbooked) = check_seats(stored.as_ref(), &seat_acked)?;
    outcome.requests = seat_acked.iter().map(|a| a.len() as u64).sum();
    outcome.undecided = undecided;
    outcome.overbooked = overbooked;
    Ok(outcome)
}

/// Server nodes on loopback sharing one identity, and their store.
#[derive(Debug)]
pub struct Cluster {
    /// Holds every node's data directory.
    pub dir: tempfile::TempDir,
    /// The cluster's certificate and token key.
    pub identity: Identity,
    /// Each node's data directory.
    pub data: Vec<PathBuf>,
    /// Each node's address.
    pub addrs: Vec<SocketAddr>,
    /// Each node's process.
    pub nodes: Vec<tokio::process::Child>,
}

impl Cluster {
    /// Starts `nodes` nodes of `bin` on `store` (sled when `None`, for one
    /// node): the first makes the identity, the others start from a copy
    /// of its data directory (one certificate and token key).
    pub async fn start(bin: &Path, nodes: usize, store: Option<&str>) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let data: Vec<PathBuf> = (0..nodes.max(1))
            .map(|i| dir.path().join(format!("node{i}")))
            .collect();
        let identity = Identity::load_or_create(&data[0])?;
        for d in &data[1..] {
            copy_identity(&data[0], d)?;
        }
        let mut addrs = Vec::with_capacity(data.len());
        for _ in 0..data.len() {
            addrs.push(format!("127.0.0.1:{}", free_port()?).parse::<SocketAddr>()?);
        }
        let mut children = Vec::with_capacity(data.len());
        for (d, a) in data.iter().zip(&addrs) {
            children.push(start_node(bin, d, *a, store).await?);
        }
        Ok(Cluster {
            dir,
            identity,
            data,
            addrs,
            nodes: children,
        })
    }
}

/// Makes `to` a data directory with `from`'s certificate and keys (the
/// files at its top; not its sled database).
pub fn copy_identity(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Settings of the client crash loop.
#[derive(Debug, Clone)]
pub struct ClientLoop {
    /// This binary (run again as `client-child`).
    pub child_bin: PathBuf,
    /// Kill-and-restart cycles.
    pub cycles: u64,
    /// The child is killed right after a random line in `1..=max_edits`.
    pub max_edits: u64,
    /// Seed of every random choice.
    pub seed: u64,
}

/// A join link for the client loop (no server is contacted).
fn offline_link() -> anyhow::Result<String> {
    let identity = Identity::load_or_create(tempfile::tempdir()?.path())?;
    link(&identity, "127.0.0.1:9".parse()?, "phone-user", "phone")
}

/// Runs the client crash loop, calling `progress` after every cycle.
pub async fn client_loop(
    cfg: &ClientLoop,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("db");
    let link = offline_link()?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut last = 0u64;
    for cycle in 1..=cfg.cycles {
        let kill_after = rng.random_range(1..=cfg.max_edits.max(1));
        let mut child = tokio::process::Command::new(&cfg.child_bin)
            .arg("client-child")
            .arg("--db")
            .arg(&db)
            .arg("--link")
            .arg(&link)
            .arg("--start")
            .arg((last + 1).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", cfg.child_bin.display()))?;
        let out = child.stdout.take().context("no stdout from the child")?;
        let mut lines = BufReader::new(out).lines();
        let mut seen = 0;
        while seen < kill_after {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .with_context(|| format!("cycle {cycle}: the child printed nothing for 60 s"))??;
            let Some(line) = line else {
                let mut err = String::new();
                if let Some(e) = child.stderr.take() {
                    let mut el = BufReader::new(e).lines();
                    while let Ok(Some(l)) = el.next_line().await {
                        err.push_str(&l);
                    }
                }
                bail!("cycle {cycle}: the child exited: {err}");
            };
            last = line
                .trim()
                .parse()
                .with_context(|| format!("cycle {cycle}: the child printed {line:?}"))?;
            seen += 1;
        }
        // Right after an edit returned: no goodbye.
        child.start_kill()?;
        child.wait().await?;
        progress(cycle);
    }
    let client =
        Client::open(&db).context("the device's store did not open after the last crash")?;
    let note = client.note(SESSION)?;
    Ok(Outcome {
        cycles: cfg.cycles,
        acknowledged: last,
        lost: missing(&note, last),
        ..Outcome::default()
    })
}

/// The `client-child` mode: opens `db` (joining with `link` the first time)
/// and appends `k;` for `k = start, start+1, …`, printing `k` after each
/// edit returned, until killed.
pub fn client_child(db: &Path, link: &str, start: u64) -> anyhow::Result<()> {
    use std::io::Write as _;
    let client = Client::open(db).context("cannot open the device's store")?;
    if client.identity().is_none() {
        client.join(link)?;
    }
    let mut out = std::io::stdout().lock();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut k = start;
    while Instant::now() < deadline {
        client.append_note(SESSION, &format!("{k};"))?;
        writeln!(out, "{k}")?;
        out.flush()?;
        k += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tokens_are_counted() {
        assert_eq!(missing("1;2;3;", 3), 0);
        assert_eq!(missing("1;3;", 3), 1);
        assert_eq!(missing("", 2), 2);
        assert_eq!(missing("1;2;3;4;", 2), 0, "more than acknowledged is fine");
        let sum = Outcome {
            cycles: 2,
            acknowledged: 5,
            lost: 0,
            requests: 4,
            ..Outcome::default()
        }
        .plus(Outcome {
            cycles: 3,
            acknowledged: 7,
            lost: 1,
            requests: 1,
            undecided: 1,
            overbooked: 0,
        });
        assert_eq!(
            sum.to_string(),
            "cycles=5 acknowledged=12 lost=1 requests=5 undecided=1 overbooked=0"
        );
    }
}
