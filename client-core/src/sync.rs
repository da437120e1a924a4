//! The tokio + quinn driver around the protocol's [`ClientSession`]: a one-shot
//! [`Client::sync`] and a background mode that stays connected, receives
//! pushes and reconnects with exponential backoff and full jitter.

use std::net::SocketAddr;
use std::time::Duration;

use lanyard_protocol::wire::{self, FrameDecoder, ALPN};
use lanyard_protocol::{
    Backoff, BackoffPolicy, ClientEvent, ClientMsg, ClientSession, DocId, ErrorCode, Limits,
    Millis, ServerMsg, SessionError,
};
use rand::Rng as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::client::{
    now_ms, persist_doc, persist_sync, persist_unsaved, refused_of, Client, Credentials,
};
use crate::error::{ClientError, SyncError};
use crate::model::SyncReport;
use crate::tls::{client_config, pinned_crypto};

/// How often a long connection stores the agenda's view.
const VIEW_STORE_EVERY: Duration = Duration::from_secs(5);

/// Longest wait for a QUIC handshake before starting a new attempt.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Reconnection settings of the background sync.
#[derive(Debug, Clone)]
pub struct BackgroundOptions {
    /// First retry delay (before jitter).
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
    /// A connection that lasted this long resets the backoff.
    pub stable_after: Duration,
    /// Full jitter on the backoff (turn off only to measure what it buys).
    pub jitter: bool,
}

impl Default for BackgroundOptions {
    fn default() -> Self {
        BackgroundOptions {
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            jitter: true,
        }
    }
}

/// What one message from the server asks of the driver ([`Client::receive`]).
#[doc(hidden)]
#[derive(Debug)]
pub struct Received {
    /// Messages to send back, in order.
    pub send: Vec<ClientMsg>,
    /// Whether everything is in sync now.
    pub settled: bool,
    /// Changes from the server applied.
    pub received: u64,
}

/// A running background sync; stop it with [`BackgroundSync::stop`].
#[derive(Debug)]
pub struct BackgroundSync {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl BackgroundSync {
    /// Stops syncing and waits for the connection to close.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl From<ClientError> for SyncError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::NotJoined => SyncError::NotJoined,
            ClientError::Store(s) => SyncError::Store(s),
            other => SyncError::Protocol(other.to_string()),
        }
    }
}

fn conn_error(server: &str, e: &quinn::ConnectionError) -> SyncError {
    use quinn::ConnectionError as C;
    /// TLS alert `no_application_protocol`: the server speaks another ALPN version.
    const NO_APPLICATION_PROTOCOL: u8 = 120;
    /// TLS alert `bad_certificate`.
    const BAD_CERTIFICATE: u8 = 42;
    let tls_alert = |close: &quinn::ConnectionClose, alert: u8| {
        close.error_code == quinn::TransportErrorCode::crypto(alert)
    };
    match e {
        C::TimedOut => SyncError::Unreachable(format!("no answer from {server}")),
        C::Reset => SyncError::ConnectionLost(format!(
            "{server} restarted and no longer knows this connection (stateless reset)"
        )),
        C::ApplicationClosed(c) if c.error_code == ErrorCode::Shutdown.to_u32().into() => {
            SyncError::ConnectionLost("the server is shutting down".into())
        }
        C::ApplicationClosed(c) if c.error_code == ErrorCode::Overloaded.to_u32().into() => {
            SyncError::Overloaded {
                retry_after: wire::parse_retry_after(&c.reason),
            }
        }
        C::ConnectionClosed(c) if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED => {
            SyncError::Overloaded { retry_after: None }
        }
        C::ConnectionClosed(c) if tls_alert(c, NO_APPLICATION_PROTOCOL) => {
            SyncError::UnsupportedVersion(String::from_utf8_lossy(ALPN).into_owned())
        }
        C::TransportError(t) if t.code == quinn::TransportErrorCode::crypto(BAD_CERTIFICATE) => {
            SyncError::PinMismatch
        }
        other => {
            let text = other.to_string();
            if text.contains("invalid peer certificate") {
                SyncError::PinMismatch
            } else {
                SyncError::ConnectionLost(text)
            }
        }
    }
}

fn session_error(e: SessionError) -> SyncError {
    match e {
        SessionError::Server { code, message } => match code {
            ErrorCode::TokenExpired => SyncError::TokenExpired(message),
            ErrorCode::Unauthorized | ErrorCode::WrongEvent => SyncError::Unauthorized(message),
            ErrorCode::Revoked => SyncError::Revoked(message),
            ErrorCode::Shutdown => SyncError::ConnectionLost(message),
            code => SyncError::Server { code, message },
        },
        SessionError::BadServerMessage(m) => SyncError::Protocol(m),
        other => SyncError::Protocol(other.to_string()),
    }
}

/// A connection and, when the client opened its own, the endpoint to close
/// after it.
struct Link {
    conn: quinn::Connection,
    owned: Option<quinn::Endpoint>,
}

impl Link {
    /// Closes the connection and lets an owned endpoint tell the server.
    async fn close(self, reason: &[u8]) {
        self.conn.close(0u32.into(), reason);
        if let Some(endpoint) = self.owned {
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }
}

/// Socket buffer asked for each way on a shared endpoint: one socket carries
/// many devices' traffic, and bursts overflow the kernel's default.
const SHARED_SOCKET_BUFFER: usize = 8 << 20;

/// A client endpoint (one UDP socket bound to `bind`) for
/// [`Client::share_endpoint`], with buffers sized for many devices' traffic
/// (the kernel caps them at `net.core.rmem_max` / `wmem_max`). Needs a tokio
/// runtime.
pub fn shared_endpoint(bind: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer still works, it only drops bursts sooner.
    let _ = socket.set_recv_buffer_size(SHARED_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SHARED_SOCKET_BUFFER);
    socket.bind(&bind.into())?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime: call from within tokio"))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket.into(),
        runtime,
    )
}

/// The keep-alive interval of a device's connections, adapted to its link.
/// Keep-alives keep NAT bindings and, on WiFi that loses packets in bursts,
/// a steady trickle gets both directions through a burst within the idle
/// timeout (measured on the collapsing profile: 1 s instead of 3 s halved
/// reconnects). On a clean link they only cost bytes and the server's CPU
/// (10,000 devices at 1 s are 10,000 packets a second). So: 1 s after a
/// connection that lost packets or timed out; doubled, up to 8 s, after one
/// that stayed clean for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    interval: Duration,
}

impl KeepAlive {
    /// Shortest interval (lossy links).
    pub const MIN: Duration = Duration::from_secs(1);
    /// Longest interval (clean links; well under NAT timeouts and the 30 s idle timeout).
    pub const MAX: Duration = Duration::from_secs(8);
    /// A connection this long without loss counts as clean.
    pub const CLEAN_AFTER: Duration = Duration::from_secs(20);

    /// The interval for the next connection.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Learns from a connection that ended: `lost` of `sent` packets lost,
    /// `timed_out` if it ended by the idle timeout, `lasted` its life.
    pub fn learn(&mut self, lost: u64, sent: u64, timed_out: bool, lasted: Duration) {
        let lossy = timed_out || lost.saturating_mul(100) > sent.max(1);
        if lossy {
            self.interval = Self::MIN;
        } else if lasted >= Self::CLEAN_AFTER {
            self.interval = (self.interval * 2).min(Self::MAX);
        }
    }
}

impl Default for KeepAlive {
    /// Starts at 2 s: a first connection on an unknown link.
    fn default() -> Self {
        KeepAlive {
            interval: Duration::from_secs(2),
        }
    }
}

/// Connects to the server named in the credentials, on the shared endpoint
/// when one was given, else on a UDP socket of its own.
async fn connect(
    server: &str,
    shared: Option<quinn::Endpoint>,
    config: quinn::ClientConfig,
) -> Result<Link, SyncError> {
    let addr: SocketAddr = tokio::net::lookup_host(server)
        .await
        .map_err(|e| SyncError::Unreachable(format!("cannot resolve {server}: {e}")))?
        .next()
        .ok_or_else(|| SyncError::Unreachable(format!("{server} has no address")))?;
    let (endpoint, owned) = match shared {
        Some(endpoint) => (endpoint, false),
        None => {
            let bind: SocketAddr = if addr.is_ipv6() {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            };
            let endpoint = quinn::Endpoint::client(bind)
                .map_err(|e| SyncError::Unreachable(format!("cannot open a UDP socket: {e}")))?;
            (endpoint, true)
        }
    };
    let host = server
        .rsplit_once(':')
        .map_or(server, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let connecting = endpoint
        .connect_with(config, addr, host)
        .map_err(|e| SyncError::Unreachable(e.to_string()))?;
    // A handshake that has not finished in HANDSHAKE_TIMEOUT is abandoned and
    // retried afresh: on a lossy link QUIC's probe timer doubles with every
    // lost flight, and a new attempt probes sooner than an old one would.
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(r) => r.map_err(|e| conn_error(server, &e))?,
        Err(_) => {
            if owned {
                endpoint.close(0u32.into(), b"handshake timeout");
            }
            return Err(SyncError::Unreachable(format!(
                "no answer from {server} within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            )));
        }
    };
    Ok(Link {
        conn,
        owned: owned.then_some(endpoint),
    })
}

async fn write_msgs(
    server: &str,
    send: &mut quinn::SendStream,
    msgs: &[ClientMsg],
) -> Result<(), SyncError> {
    for m in msgs {
        send.write_all(&wire::encode(m))
            .await
            .map_err(|e| match &e {
                quinn::WriteError::ConnectionLost(c) => conn_error(server, c),
                other => SyncError::ConnectionLost(other.to_string()),
            })?;
    }
    Ok(())
}

/// Reads frames from one server stream into `tx`. The end of the main stream
/// ends the session; the end of a push stream does not.
async fn read_loop(
    mut recv: quinn::RecvStream,
    tx: mpsc::Sender<Result<Vec<u8>, SyncError>>,
    main: bool,
    server: String,
) {
    // Frames from the (pinned, authenticated) server may carry whole documents
    // in a Welcome: allow up to two documents of the server's size limit.
    let mut decoder = FrameDecoder::new(Limits::default().max_doc.saturating_mul(2));
    loop {
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => {
                decoder.push(&chunk.bytes);
                loop {
                    match decoder.next_frame() {
                        Ok(Some(body)) => {
                            if tx.send(Ok(body)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = tx.send(Err(SyncError::Protocol(e.to_string()))).await;
                            return;
                        }
                    }
                }
            }
            Ok(None) => {
                let err = match decoder.finish() {
                    Ok(()) if !main => return,
                    Ok(()) => SyncError::ConnectionLost("the server ended the stream".into()),
                    Err(e) => SyncError::Protocol(e.to_string()),
                };
                let _ = tx.send(Err(err)).await;
                return;
            }
            Err(e) => {
                if main {
                    let err = match &e {
                        quinn::ReadError::ConnectionLost(c) => conn_error(&server, c),
                        other => SyncError::ConnectionLost(other.to_string()),
                    };
                    let _ = tx.send(Err(err)).await;
                }
                return;
            }
        }
    }
}

/// Accepts the server's push streams (schedule changes, sent with priority).
async fn accept_push_streams(
    conn: quinn::Connection,
    tx: mpsc::Sender<Result<Vec<u8>, SyncError>>,
) {
    let mut readers = tokio::task::JoinSet::new();
    while let Ok(recv) = conn.accept_uni().await {
        readers.spawn(read_loop(recv, tx.clone(), false, String::new()));
    }
    readers.abort_all();
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Return once everything is in sync.
    OneShot,
    /// Stay connected until stopped or the connection drops.
    Stay,
}

impl Client {
    /// Makes every later connection of this client use `endpoint`, a quinn
    /// client endpoint (one UDP socket) that other clients may share, instead
    /// of opening a socket of its own per connection. For processes that run
    /// many cores (simulators, benchmarks, a back-office app serving several
    /// events); the endpoint stays open when this client disconnects.
    pub fn share_endpoint(&self, endpoint: quinn::Endpoint) {
        if let Ok(mut e) = self.inner.endpoint.lock() {
            *e = Some(endpoint);
        }
    }

    fn shared_endpoint(&self) -> Option<quinn::Endpoint> {
        self.inner.endpoint.lock().ok().and_then(|e| e.clone())
    }

    /// The link's nodes in the order this device tries them: shuffled once
    /// (devices spread over a cluster), the one in use first; a node that
    /// failed goes to the back ([`Client::server_failed`]).
    fn server_order(&self, servers: &[String]) -> Vec<String> {
        use rand::seq::SliceRandom as _;
        let mut order = self.inner.servers.lock().unwrap_or_else(|e| e.into_inner());
        let same = order.len() == servers.len() && servers.iter().all(|s| order.contains(s));
        if !same {
            *order = servers.to_vec();
            order.shuffle(&mut rand::rng());
        }
        order.clone()
    }

    /// The node of the join link this device uses now, or tries next
    /// (`HOST:PORT`); `None` before it joined.
    pub fn current_node(&self) -> Option<String> {
        let servers = self.lock().creds.as_ref()?.link.servers.clone();
        Some(self.current_server(&servers))
    }

    /// The node to connect to now.
    fn current_server(&self, servers: &[String]) -> String {
        self.server_order(servers)
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// `server` failed: the next attempt goes to the next node.
    fn server_failed(&self, server: &str) {
        let mut order = self.inner.servers.lock().unwrap_or_else(|e| e.into_inner());
        if order.len() > 1 && order.first().is_some_and(|s| s == server) {
            order.rotate_left(1);
        }
    }

    /// Connects, exchanges everything, and returns once every document is in
    /// sync and every local change is acknowledged (or refused), or fails.
    pub async fn sync(&self, timeout: Duration) -> Result<SyncReport, SyncError> {
        let creds = self.lock().creds.clone().ok_or(SyncError::NotJoined)?;
        let (_stop_tx, stop_rx) = watch::channel(false);
        let deadline = tokio::time::Instant::now() + timeout;
        let shared = self.shared_endpoint();
        let config = self.client_config(&creds.link.pin)?;
        // Each node of the link in turn (the one that worked last first),
        // until one answers or the time is up.
        let order = self.server_order(&creds.link.servers);
        let mut connected = Err(SyncError::Unreachable(
            "the join link names no server".into(),
        ));
        let mut server = order.first().cloned().unwrap_or_default();
        for (i, node) in order.iter().enumerate() {
            server = node.clone();
            // Each node left gets an equal share of the time left, so a dead
            // node (no answer at all) cannot take all of it.
            let left = order.len() - i;
            let now = tokio::time::Instant::now();
            let until = now + deadline.saturating_duration_since(now) / left as u32;
            let attempt = connect(node, shared.clone(), config.clone());
            connected = match tokio::time::timeout_at(until, attempt).await {
                Err(_) => Err(SyncError::Unreachable(format!(
                    "no answer from {node} within {} s",
                    until.saturating_duration_since(now).as_secs()
                ))),
                Ok(r) => r,
            };
            match &connected {
                Err(e) if e.is_retryable() => {
                    // The next sync starts with the next node.
                    self.server_failed(node);
                    if left == 1 || tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    debug!(server = %node, error = %e, "trying the next node of the link");
                }
                _ => break,
            }
        }
        let result = match connected {
            Err(e) => Err(e),
            Ok(link) => {
                let run = self.run_session(&server, &creds, &link.conn, Mode::OneShot, stop_rx);
                let r = match tokio::time::timeout_at(deadline, run).await {
                    Ok(r) => r,
                    Err(_) => Err(SyncError::Timeout {
                        server: server.clone(),
                        secs: timeout.as_secs(),
                    }),
                };
                link.close(b"done").await;
                r
            }
        };
        self.record_outcome(result.as_ref().err().map(ToString::to_string));
        result
    }

    /// Tells the core the device's network changed (WiFi came back, or the
    /// phone moved between WiFi and cellular). A background sync waiting to
    /// reconnect tries at once; a live connection moves to a fresh UDP
    /// socket on the new network (QUIC connection migration) instead of
    /// waiting for the old path to time out. Cheap; call it on every change
    /// the platform reports. Needs a tokio runtime when a connection is up.
    pub fn network_changed(&self) {
        let endpoint = self
            .inner
            .active_endpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(endpoint) = endpoint {
            let v6 = endpoint.local_addr().is_ok_and(|a| a.is_ipv6());
            let bind: SocketAddr = if v6 {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            };
            match std::net::UdpSocket::bind(bind).and_then(|s| endpoint.rebind(s)) {
                Ok(()) => debug!("network changed: connection moved to a new socket"),
                Err(e) => debug!(error = %e, "network changed: cannot rebind"),
            }
        }
        self.inner.network.notify_waiters();
    }

    /// The configuration of the next connection: the TLS half kept for the
    /// pin (so the TLS session resumes) and the keep-alive the link earned.
    fn client_config(&self, pin: &str) -> Result<quinn::ClientConfig, SyncError> {
        let crypto = {
            let mut tls = self.inner.tls.lock().unwrap_or_else(|e| e.into_inner());
            match tls.as_ref() {
                Some((p, c)) if p == pin => c.clone(),
                _ => {
                    let c = pinned_crypto(pin).map_err(|e| SyncError::Protocol(e.to_string()))?;
                    *tls = Some((pin.to_owned(), c.clone()));
                    c
                }
            }
        };
        let keep_alive = self
            .inner
            .keep_alive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .interval();
        Ok(client_config(crypto, keep_alive))
    }

    /// Adapts the next keep-alive interval to how this connection went.
    fn learn_link(&self, conn: &quinn::Connection, started: Millis) {
        let stats = conn.stats();
        let timed_out = matches!(conn.close_reason(), Some(quinn::ConnectionError::TimedOut));
        let lasted = Millis::from_system(std::time::SystemTime::now()).since(started);
        self.inner
            .keep_alive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .learn(
                stats.path.lost_packets,
                stats.path.sent_packets,
                timed_out,
                lasted,
            );
    }

    fn set_active_endpoint(&self, endpoint: Option<quinn::Endpoint>) {
        *self
            .inner
            .active_endpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = endpoint;
    }

    /// Starts syncing in the background: stays connected, applies pushed
    /// changes, sends local edits as they happen, reconnects with backoff.
    /// Needs a tokio runtime.
    pub fn start_background(&self, opts: BackgroundOptions) -> BackgroundSync {
        let (stop, mut stop_rx) = watch::channel(false);
        let client = self.clone();
        let task = tokio::spawn(async move {
            let mut backoff = Backoff::new(opts.policy());
            loop {
                if *stop_rx.borrow() {
                    break;
                }
                let Some(creds) = client.lock().creds.clone() else {
                    client.record_outcome(Some(SyncError::NotJoined.to_string()));
                    break;
                };
                let started = Millis::from_system(std::time::SystemTime::now());
                let config = match client.client_config(&creds.link.pin) {
                    Ok(c) => c,
                    Err(e) => {
                        client.record_outcome(Some(e.to_string()));
                        break;
                    }
                };
                // The node that worked last, else the next of the link's
                // (shuffled once per device, so devices spread over them).
                let server = client.current_server(&creds.link.servers);
                let result = match connect(&server, client.shared_endpoint(), config).await {
                    Ok(link) => {
                        client.lock().connected = true;
                        client.set_active_endpoint(link.owned.clone());
                        client.status_changed();
                        let r = client
                            .run_session(&server, &creds, &link.conn, Mode::Stay, stop_rx.clone())
                            .await;
                        client.set_active_endpoint(None);
                        client.lock().connected = false;
                        client.status_changed();
                        client.learn_link(&link.conn, started);
                        // Tell the server at once, so it frees the connection
                        // instead of waiting for the idle timeout.
                        link.close(b"bye").await;
                        r
                    }
                    Err(e) => Err(e),
                };
                let mut hint = None;
                match result {
                    Ok(_) => break,
                    Err(e) => {
                        if let SyncError::Overloaded { retry_after } = &e {
                            hint = *retry_after;
                        }
                        debug!(error = %e, "background sync interrupted");
                        let fatal = !e.is_retryable();
                        client.record_outcome(Some(e.to_string()));
                        if fatal {
                            break;
                        }
                        // Next time, the link's next node (any node serves
                        // any device).
                        client.server_failed(&server);
                    }
                }
                // The server's hint is already jittered; otherwise back off
                // with full jitter (the policy the simulation runs too).
                let ended = Millis::from_system(std::time::SystemTime::now());
                let backed_off = backoff.next_delay(started, ended, rand::rng().random::<f64>());
                let delay = hint.unwrap_or(backed_off);
                // A network change (the app calls `network_changed` when WiFi
                // returns) ends the wait at once, unless the server asked
                // for this delay. Registered before the retry is counted, so
                // a change seen by whoever watches the count is not missed.
                let network = client.inner.network.notified();
                client
                    .inner
                    .retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                client.status_changed();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = network, if hint.is_none() => {
                        debug!("network changed: reconnecting now");
                        backoff.reset();
                    }
                    _ = stop_rx.changed() => break,
                }
            }
        });
        BackgroundSync { stop, task }
    }

    /// Handles one message from the server on a device's connection: applies
    /// and stores what it carries, raises alerts, and says what to send back.
    /// This is what the QUIC driver calls for every frame; it is public so
    /// benchmarks and simulations can drive a device without a socket.
    #[doc(hidden)]
    pub fn receive(
        &self,
        session: &mut ClientSession,
        msg: ServerMsg,
    ) -> Result<Received, SyncError> {
        self.probe_arrival(&msg);
        let (stored, alerts, received) = {
            let mut st = self.state()?;
            // The user's seats document: its outcomes before, for alerts.
            let seats = st
                .creds
                .as_ref()
                .map(|c| {
                    (
                        DocId::Seats(c.claims.event.clone(), c.claims.user.clone()),
                        c.claims.user.clone(),
                    )
                })
                .filter(|(doc, _)| carries(&msg, doc) && self.alert_hub().active());
            let seats_before = seats.as_ref().map(|(doc, user)| {
                crate::seats::outcomes_of(st.replica.get(doc).map(|rd| &rd.doc), user)
            });
            let handled = session.handle(&mut st.replica, msg);
            // Whatever happens next, the view follows the document (a
            // message that fails may have applied changes first), and what
            // arrived is announced: alerts and counters never wait on disk.
            let agenda = st.creds.as_ref().map(|c| c.agenda());
            let change = agenda.map(|a| st.update_view(&a)).unwrap_or_default();
            let mut received = 0;
            if let Ok(out) = &handled {
                for ev in &out.events {
                    if let ClientEvent::Updated { changes, .. } = ev {
                        received += *changes as u64;
                    }
                }
            }
            if received > 0 {
                self.inner.remote.send_modify(|n| *n += received);
            }
            let mut alerts = if change.sessions.is_empty() && change.announcements.is_empty() {
                Vec::new()
            } else {
                self.alerts_after_remote(&st, &change)
            };
            if let (Some((doc, user)), Some(before)) = (&seats, &seats_before) {
                alerts.extend(self.seat_alerts_after_remote(&st, doc, user, before));
            }
            let stored = handled
                .map_err(session_error)
                .and_then(|out| self.store_received(&mut st, session, out));
            (stored, alerts, received)
        };
        self.status_changed();
        for (alert, listener) in alerts {
            listener.on_alert(alert);
        }
        let (send, settled) = stored?;
        if settled {
            self.record_outcome(None);
        }
        Ok(Received {
            send,
            settled,
            received,
        })
    }

    /// Tells the arrival probe, if any, of the changes `msg` carries.
    fn probe_arrival(&self, msg: &ServerMsg) {
        let probe = self
            .inner
            .arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(probe) = probe.as_ref() else {
            return;
        };
        let updates: Vec<&lanyard_protocol::DocUpdate> = match msg {
            ServerMsg::Update(u) => vec![u],
            ServerMsg::Welcome { docs, .. } => docs.iter().collect(),
            _ => return,
        };
        for u in updates {
            let hashes: Vec<[u8; 32]> = u
                .changes
                .iter()
                .filter_map(|b| automerge::Change::try_from(b.as_slice()).ok())
                .map(|c| c.hash().0)
                .collect();
            if !hashes.is_empty() {
                probe(&u.doc, &hashes);
            }
        }
    }

    /// Makes what one server message brought durable: the documents it
    /// changed, then (only over documents on disk) their sync state, the
    /// limits it announced, the time of a completed sync. Returns what to
    /// send back and whether everything is in sync.
    fn store_received(
        &self,
        st: &mut crate::client::State,
        session: &ClientSession,
        out: lanyard_protocol::ClientOutput,
    ) -> Result<(Vec<ClientMsg>, bool), SyncError> {
        let store = &self.inner.store;
        for doc in &out.docs_changed {
            persist_doc(store, st, doc)?;
        }
        // A base is stored only over changes that are on disk: a document
        // a failed write left unsaved is saved first.
        if !out.sync_changed.is_empty() {
            persist_unsaved(store, st)?;
        }
        for doc in &out.sync_changed {
            persist_sync(store, st, doc)?;
        }
        for ev in &out.events {
            if let ClientEvent::Welcomed { limits } = ev {
                st.keep_limits(store, *limits)?;
            }
        }
        let settled = session.is_settled(&st.replica);
        if settled {
            let now = now_ms() / 1000;
            st.last_sync = Some(now);
            let bytes = serde_json::to_vec(&now).unwrap_or_default();
            store.put_meta("last_sync", &bytes)?;
        }
        Ok((out.send, settled))
    }

    async fn run_session(
        &self,
        server: &str,
        creds: &Credentials,
        conn: &quinn::Connection,
        mode: Mode,
        mut stop: watch::Receiver<bool>,
    ) -> Result<SyncReport, SyncError> {
        let (mut send, recv) = conn.open_bi().await.map_err(|e| conn_error(server, &e))?;
        let pending_before = self.state()?.replica.pending_count() as u64;
        let (mut session, first) = {
            let mut st = self.state()?;
            persist_unsaved(&self.inner.store, &mut st)?;
            ClientSession::start(
                creds.link.event.clone(),
                creds.link.token.clone(),
                &st.replica,
            )
        };
        write_msgs(server, &mut send, &first).await?;
        let (tx, mut rx) = mpsc::channel(64);
        let reader = tokio::spawn(read_loop(recv, tx.clone(), true, server.to_owned()));
        let pushes = tokio::spawn(accept_push_streams(conn.clone(), tx));
        let mut report = SyncReport::default();
        let mut views_stored = std::time::Instant::now();
        let result = loop {
            let frame = tokio::select! {
                f = rx.recv() => f,
                _ = self.inner.local_edit.notified() => {
                    let msgs = {
                        let st = self.lock();
                        st.replica
                            .doc_ids()
                            .iter()
                            .flat_map(|d| session.local_change(&st.replica, d))
                            .collect::<Vec<_>>()
                    };
                    write_msgs(server, &mut send, &msgs).await?;
                    continue;
                }
                _ = stop.changed() => break Ok(()),
            };
            let body = match frame {
                Some(Ok(body)) => body,
                Some(Err(e)) => break Err(e),
                None => break Err(SyncError::ConnectionLost("reader stopped".into())),
            };
            let msg: ServerMsg = match wire::decode(&body) {
                Ok(m) => m,
                Err(e) => break Err(SyncError::Protocol(e.to_string())),
            };
            let got = match self.receive(&mut session, msg) {
                Ok(got) => got,
                Err(e) => break Err(e),
            };
            report.received_changes += got.received;
            let (send_now, settled) = (got.send, got.settled);
            // A long connection stores the agenda's view now and then, off
            // the path that applies changes.
            if views_stored.elapsed() >= VIEW_STORE_EVERY {
                self.lock().store_views(&self.inner.store);
                views_stored = std::time::Instant::now();
            }
            write_msgs(server, &mut send, &send_now).await?;
            if settled && mode == Mode::OneShot {
                break Ok(());
            }
        };
        reader.abort();
        pushes.abort();
        let _ = send.finish();
        self.lock().store_views(&self.inner.store);
        result?;
        let st = self.lock();
        let pending_after = st.replica.pending_count() as u64;
        report.acknowledged_changes = pending_before.saturating_sub(pending_after);
        report.refused = refused_of(&st.replica);
        Ok(report)
    }
}

impl BackgroundOptions {
    /// The reconnect policy these options make.
    pub fn policy(&self) -> BackoffPolicy {
        BackoffPolicy {
            base: self.backoff_base,
            cap: self.backoff_cap,
            stable_after: self.stable_after,
            jitter: self.jitter,
        }
    }
}

/// Whether `msg` carries changes of `doc` (an update, or a Welcome entry).
fn carries(msg: &ServerMsg, doc: &DocId) -> bool {
    match msg {
        ServerMsg::Update(u) => u.doc == *doc,
        ServerMsg::Welcome { docs, .. } => docs.iter().any(|u| u.doc == *doc && !u.is_empty()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_become_clear_sync_errors() {
        let closed = |alert: u8| {
            quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
                error_code: quinn::TransportErrorCode::crypto(alert),
                frame_type: None,
                reason: Default::default(),
            })
        };
        assert!(matches!(
            conn_error("s:1", &closed(120)),
            SyncError::UnsupportedVersion(_)
        ));
        assert!(matches!(
            conn_error("s:1", &quinn::ConnectionError::TimedOut),
            SyncError::Unreachable(_)
        ));
        assert!(matches!(
            conn_error("s:1", &closed(40)),
            SyncError::ConnectionLost(_)
        ));
        // Refused at the handshake rate: busy, no hint; told to come back: the hint.
        let refused = quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: quinn::TransportErrorCode::CONNECTION_REFUSED,
            frame_type: None,
            reason: Default::default(),
        });
        assert!(matches!(
            conn_error("s:1", &refused),
            SyncError::Overloaded { retry_after: None }
        ));
        let overloaded = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: ErrorCode::Overloaded.to_u32().into(),
            reason: wire::retry_after_reason(Duration::from_millis(1500)).into(),
        });
        assert!(matches!(
            conn_error("s:1", &overloaded),
            SyncError::Overloaded { retry_after: Some(d) } if d == Duration::from_millis(1500)
        ));
    }

    #[test]
    fn the_keep_alive_shortens_on_a_lossy_link_and_grows_on_a_clean_one() {
        let mut k = KeepAlive::default();
        assert_eq!(k.interval(), Duration::from_secs(2));
        let long = KeepAlive::CLEAN_AFTER;
        k.learn(0, 1000, false, long);
        assert_eq!(k.interval(), Duration::from_secs(4));
        k.learn(0, 1000, false, long);
        k.learn(0, 1000, false, long);
        assert_eq!(k.interval(), KeepAlive::MAX);
        // A short clean connection teaches nothing.
        k.learn(0, 10, false, Duration::from_secs(1));
        assert_eq!(k.interval(), KeepAlive::MAX);
        // Loss over 1 %, or an idle timeout: back to 1 s.
        k.learn(30, 1000, false, long);
        assert_eq!(k.interval(), KeepAlive::MIN);
        k.learn(0, 1000, false, long);
        assert_eq!(k.interval(), Duration::from_secs(2));
        k.learn(0, 5, true, long);
        assert_eq!(k.interval(), KeepAlive::MIN);
    }

    #[test]
    fn backoff_grows_to_the_cap_with_full_jitter() {
        let opts = BackgroundOptions {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(2),
            stable_after: Duration::from_secs(1),
            jitter: true,
        };
        // Failed attempts in a row (each session ends as it starts).
        let mut backoff = Backoff::new(opts.policy());
        let t = Millis(0);
        for attempt in 0..30 {
            let d = backoff.next_delay(t, t, rand::rng().random::<f64>());
            let bound = (100u64 << attempt.min(20)).min(2000);
            assert!(
                d <= Duration::from_millis(bound),
                "attempt {attempt}: {d:?} > {bound} ms"
            );
        }
        // Jitter: many draws at the cap are not all equal.
        let draws: std::collections::HashSet<_> = (0..50)
            .map(|_| backoff.next_delay(t, t, rand::rng().random::<f64>()))
            .collect();
        assert!(draws.len() > 10);
    }
}
