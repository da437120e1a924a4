//! # lanyard-tests
//!
//! Helpers for cross-crate tests over real QUIC on loopback: a [`TestServer`]
//! (a real `lanyard-server` on a temporary sled directory), devices (real
//! client cores on their own sled directories), a [`RawClient`] that speaks
//! the wire protocol directly (to play a forged or broken client), and
//! [`wait_for`], which polls a condition under a generous deadline instead of
//! sleeping a fixed time.

pub mod backend;
pub mod cluster_bench;
pub mod crashloop;
pub mod light;
pub mod netem;
pub mod plot;
pub mod progress;

pub mod venue;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use lanyard_client_core::Client;
use lanyard_protocol::wire::{self, FrameDecoder};
use lanyard_protocol::{ClientMsg, EventId, JoinLink, Role, ServerMsg, TokenClaims};
use lanyard_server::{Identity, Server, ServerOptions};
use tempfile::TempDir;

/// Deadline for conditions in tests: generous, for a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The event every test uses unless it says otherwise.
pub const EVENT: &str = "conf";

/// A real server on loopback with its own data directory.
pub struct TestServer {
    dir: TempDir,
    server: Option<Server>,
    addr: SocketAddr,
}

impl TestServer {
    /// Starts a server on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let server = Server::start(Self::options(&dir)?).await?;
        Self::finish_start(dir, server)
    }

    /// Starts a server on a free loopback port with options changed by `tune`.
    pub async fn start_with(tune: impl FnOnce(&mut ServerOptions)) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut opts = Self::options(&dir)?;
        tune(&mut opts);
        let server = Server::start(opts).await?;
        Self::finish_start(dir, server)
    }

    /// Starts a server on a free loopback port over `store`.
    pub async fn start_with_store(
        store: std::sync::Arc<dyn lanyard_store::Store>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let server = Server::start_with_store(Self::options(&dir)?, store).await?;
        Self::finish_start(dir, server)
    }

    fn options(dir: &TempDir) -> anyhow::Result<ServerOptions> {
        let mut opts = ServerOptions::new(dir.path(), "127.0.0.1:0".parse()?);
        // The server shares the test process with other tests' devices and
        // servers: the process's resident memory is not this server's, so the
        // memory limit of admission control must not turn devices away here.
        opts.admission.max_memory_bytes = u64::MAX;
        Ok(opts)
    }

    fn finish_start(dir: TempDir, server: Server) -> anyhow::Result<Self> {
        let addr = server.local_addr()?;
        Ok(TestServer {
            dir,
            server: Some(server),
            addr,
        })
    }

    /// The server's data directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server is running")
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server (graceful shutdown).
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// Starts the server again on the same data directory and port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let deadline = Instant::now() + DEADLINE;
        loop {
            match Server::start(ServerOptions::new(self.dir.path(), self.addr)).await {
                Ok(s) => {
                    self.server = Some(s);
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The server's identity (certificate and token key) from its data directory.
    pub fn identity(&self) -> anyhow::Result<Identity> {
        Ok(Identity::load_or_create(self.dir.path())?)
    }

    /// Claims for `user` valid for an hour.
    pub fn claims(role: Role, user: &str, device: &str) -> TokenClaims {
        let event = EventId::new(EVENT).expect("valid event");
        lanyard_protocol::testing::claims(&event, user, role, device, unix_now() + 3600)
    }

    /// A join link for arbitrary claims, signed by this server.
    pub fn link_for(&self, claims: &TokenClaims) -> anyhow::Result<String> {
        let id = self.identity()?;
        Ok(JoinLink {
            servers: vec![self.addr.to_string()],
            event: claims.event.clone(),
            token: id.sign(claims),
            pin: id.pin(),
        }
        .to_string())
    }

    /// A join link for `user` on `device`.
    pub fn link(&self, role: Role, user: &str, device: &str) -> anyhow::Result<String> {
        self.link_for(&Self::claims(role, user, device))
    }

    /// A device: a client core on its own sled directory, joined as `user`.
    pub fn device(&self, role: Role, user: &str, device: &str) -> anyhow::Result<Device> {
        self.device_via(role, user, device, self.addr)
    }

    /// Joins an existing client (e.g. one over a fault-injecting store) as `user`.
    pub fn join(
        &self,
        client: &Client,
        role: Role,
        user: &str,
        device: &str,
    ) -> anyhow::Result<()> {
        client.join(&self.link(role, user, device)?)?;
        Ok(())
    }

    /// A device whose join link points at `addr` (e.g. an impairment proxy).
    pub fn device_via(
        &self,
        role: Role,
        user: &str,
        device: &str,
        addr: SocketAddr,
    ) -> anyhow::Result<Device> {
        let dir = tempfile::tempdir()?;
        let client = Client::open(dir.path().join("db"))?;
        let id = self.identity()?;
        let claims = Self::claims(role, user, device);
        let link = JoinLink {
            servers: vec![addr.to_string()],
            event: claims.event.clone(),
            token: id.sign(&claims),
            pin: id.pin(),
        };
        client.join(&link.to_string())?;
        Ok(Device { client, dir })
    }
}

/// A device under test: its client and its data directory.
pub struct Device {
    /// The client core.
    pub client: Client,
    /// Where its sled database lives.
    pub dir: TempDir,
}

impl Device {
    /// Syncs once with a generous timeout.
    pub async fn sync(&self) -> anyhow::Result<lanyard_client_core::SyncReport> {
        Ok(self.client.sync(DEADLINE).await?)
    }

    /// Closes the client and opens it again from disk (a device restart).
    pub fn reopen(&mut self) -> anyhow::Result<()> {
        let path = self.dir.path().join("db");
        // Drop the old handle first: sled holds a lock on the directory.
        self.client = Client::in_memory()?;
        let deadline = Instant::now() + DEADLINE;
        loop {
            match Client::open(&path) {
                Ok(c) => {
                    self.client = c;
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("reopen: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The `lanyard-server` binary of this build, for a test that runs it as a
/// process: built first, since cargo does not rebuild another package's
/// binary for a test on its own. Panics (failing the test) if it cannot be built.
pub fn server_bin_for_tests() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> -> target/<profile>/lanyard-server
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("a test runs from target/<profile>/deps");
    let bin = dir.join(format!("lanyard-server{}", std::env::consts::EXE_SUFFIX));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "-p", "lanyard-server", "--bin", "lanyard-server"]);
    if dir.file_name().is_some_and(|p| p == "release") {
        build.arg("--release");
    }
    assert!(
        build.status().is_ok_and(|s| s.success()),
        "cannot build lanyard-server"
    );
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Polls `cond` until it holds or [`DEADLINE`] passes.
pub async fn wait_for(what: &str, cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    wait_for_within(what, DEADLINE, cond).await
}

/// Polls `cond` until it holds or `limit` passes.
pub async fn wait_for_within(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A client that speaks the wire protocol directly over real QUIC.
pub struct RawClient {
    /// The connection (for stats).
    pub conn: quinn::Connection,
    /// The endpoint.
    pub endpoint: quinn::Endpoint,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
    /// Frame bodies from the server's push streams (schedule changes).
    pushes: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
}

/// Forwards every frame body read from `recv` to `tx`, in a task of its own,
/// until the stream ends or `tx` is dropped.
pub fn forward_frames(
    mut recv: quinn::RecvStream,
    tx: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
) {
    tokio::spawn(async move {
        let mut decoder = FrameDecoder::new(64 << 20);
        while let Ok(Some(chunk)) = recv.read_chunk(1 << 16, true).await {
            decoder.push(&chunk.bytes);
            while let Ok(Some(body)) = decoder.next_frame() {
                if tx.send(body).is_err() {
                    return;
                }
            }
        }
    });
}

/// Reads every push stream the server opens on `conn`, forwarding frame bodies.
fn forward_pushes(conn: quinn::Connection) -> tokio::sync::mpsc::UnboundedReceiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(recv) = conn.accept_uni().await {
            forward_frames(recv, tx.clone());
        }
    });
    rx
}

impl RawClient {
    /// Connects to the test server and opens one stream.
    pub async fn connect(server: &TestServer) -> anyhow::Result<Self> {
        Self::connect_alpn(server, wire::ALPN).await
    }

    /// Connects offering ALPN `alpn`.
    pub async fn connect_alpn(server: &TestServer, alpn: &[u8]) -> anyhow::Result<Self> {
        let pin = server.identity()?.pin();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        endpoint.set_default_client_config(
            lanyard_client_core::tls::pinned_client_config_with_alpn(&pin, alpn)?,
        );
        let conn = endpoint.connect(server.addr(), "localhost")?.await?;
        let (send, recv) = conn.open_bi().await?;
        Ok(RawClient {
            pushes: forward_pushes(conn.clone()),
            conn,
            endpoint,
            send,
            recv,
            decoder: FrameDecoder::new(64 << 20),
        })
    }

    /// Opens a second stream on the same connection (a second session).
    pub async fn another_stream(&self) -> anyhow::Result<RawClient> {
        let (send, recv) = self.conn.open_bi().await?;
        Ok(RawClient {
            pushes: tokio::sync::mpsc::unbounded_channel().1,
            conn: self.conn.clone(),
            endpoint: self.endpoint.clone(),
            send,
            recv,
            decoder: FrameDecoder::new(64 << 20),
        })
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &ClientMsg) -> anyhow::Result<()> {
        self.send.write_all(&wire::encode(msg)).await?;
        Ok(())
    }

    /// Sends `Hello` for the event [`EVENT`] with a token for `claims` signed by `server`.
    pub async fn hello(
        &mut self,
        server: &TestServer,
        claims: &TokenClaims,
        docs: Vec<lanyard_protocol::DocDigest>,
    ) -> anyhow::Result<()> {
        let token = server.identity()?.sign(claims);
        self.send(&ClientMsg::Hello {
            event: EventId::new(EVENT)?,
            token,
            docs,
            installation: [0; 16],
        })
        .await
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.send.write_all(bytes).await?;
        Ok(())
    }

    /// Ends the sending side.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        self.send.finish()?;
        Ok(())
    }

    /// Receives the next message, from the session's stream or a push stream;
    /// `None` when the server ended the session's stream.
    pub async fn recv(&mut self) -> anyhow::Result<Option<ServerMsg>> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(body) = self.decoder.next_frame()? {
                return Ok(Some(wire::decode(&body)?));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let next = async {
                tokio::select! {
                    chunk = self.recv.read_chunk(1 << 16, true) => Ok::<_, anyhow::Error>(Err(chunk?)),
                    Some(body) = self.pushes.recv() => Ok(Ok(body)),
                }
            };
            match tokio::time::timeout(left, next)
                .await
                .context("timed out waiting for the server")??
            {
                Ok(push) => return Ok(Some(wire::decode(&push)?)),
                Err(Some(c)) => self.decoder.push(&c.bytes),
                Err(None) => return Ok(None),
            }
        }
    }

    /// Receives messages until `pick` returns something.
    pub async fn recv_until<T>(
        &mut self,
        mut pick: impl FnMut(&ServerMsg) -> Option<T>,
    ) -> anyhow::Result<T> {
        loop {
            match self.recv().await? {
                Some(m) => {
                    if let Some(t) = pick(&m) {
                        return Ok(t);
                    }
                }
                None => bail!("stream ended before the expected message"),
            }
        }
    }
}
