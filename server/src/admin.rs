//! The admin HTTP listener: health and readiness probes, Prometheus
//! metrics, and the admin API behind a bearer token.
//!
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 when the store answers, the QUIC endpoint listens
//!   and admission is not refusing every new device; else 503 and why.
//! - `GET /metrics`: the OpenMetrics text format (names `lanyard_…`).
//! - `/admin/…`: only with `Authorization: Bearer TOKEN`, the token being
//!   the data directory's `admin-token` file, created on first start.
//!
//! The bound address is written to the data directory's `admin.addr` while
//! the listener runs, so commands run on the same directory find it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path as UrlPath;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use axum::Router;
use lanyard_protocol::{DeviceId, EventId, Revocation, UserId};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::driver::AdminHandle;

/// The data directory's file holding the admin API's bearer token.
pub const TOKEN_FILE: &str = "admin-token";

/// The data directory's file holding the running admin listener's address.
pub const ADDR_FILE: &str = "admin.addr";

/// The histograms the server records as it works.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    /// Change accepted → its frame queued for one device.
    fanout: Histogram,
    /// One grouped flush of the store.
    flush: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            // 0.5 ms … ~16 s.
            fanout: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            // 0.1 ms … ~3 s.
            flush: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        }
    }
}

impl Metrics {
    /// A change's frame was queued for `devices` devices `after` it was
    /// accepted.
    pub(crate) fn fanned_out(&self, after: Duration, devices: u64) {
        let secs = after.as_secs_f64();
        for _ in 0..devices {
            self.fanout.observe(secs);
        }
    }

    /// A flush took `took`.
    pub(crate) fn flushed(&self, took: Duration) {
        self.flush.observe(took.as_secs_f64());
    }
}

/// A running admin listener.
pub(crate) struct AdminListener {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
    addr_file: PathBuf,
}

impl AdminListener {
    /// Stops serving and removes the address file.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.addr_file);
    }
}

#[derive(Clone)]
struct AdminState {
    server: AdminHandle,
    registry: Arc<Registry>,
    token: Arc<str>,
}

/// Reads the admin token of `data_dir`, creating it (readable by its owner
/// only) on first start.
pub fn load_or_create_token(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    use base64::Engine as _;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let tmp = data_dir.join(format!("{TOKEN_FILE}.tmp"));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        std::io::Write::write_all(&mut f, token.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(token)
}

/// Binds `addr` and serves the admin routes for `server`.
pub(crate) async fn start(
    addr: SocketAddr,
    data_dir: &Path,
    server: AdminHandle,
) -> std::io::Result<AdminListener> {
    let token: Arc<str> = load_or_create_token(data_dir)?.into();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let addr_file = data_dir.join(ADDR_FILE);
    std::fs::write(&addr_file, bound.to_string())?;
    let mut registry = Registry::default();
    let m = server.metrics().clone();
    registry.register_with_unit(
        "lanyard_fanout",
        "Time from a change accepted to its frame queued for each device",
        Unit::Seconds,
        m.fanout,
    );
    registry.register_with_unit(
        "lanyard_flush",
        "Time of one grouped flush of the store",
        Unit::Seconds,
        m.flush,
    );
    registry.register_collector(Box::new(Sampled(server.clone())));
    let state = AdminState {
        server,
        registry: Arc::new(registry),
        token,
    };
    let admin_routes = Router::new()
        .route("/admin/ping", get(|| async { "ok\n" }))
        .route("/admin/revocations", get(revocations))
        .route("/admin/backup", get(backup))
        .route("/admin/events/{event}/devices", get(devices))
        .route("/admin/events/{event}/revoke", post(revoke))
        .route("/admin/events/{event}/lift", post(lift))
        .route_layer(middleware::from_fn_with_state(state.clone(), bearer));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(admin_routes)
        .with_state(state);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            warn!(error = %e, "the admin listener stopped");
        }
    });
    info!(addr = %bound, "admin listener (health, metrics, admin API)");
    Ok(AdminListener {
        addr: bound,
        task,
        stop,
        addr_file,
    })
}

/// Lets a request through only with the admin token.
async fn bearer(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.trim().as_bytes(), state.token.as_bytes()) => {
            next.run(req).await
        }
        Some(_) => (
            StatusCode::FORBIDDEN,
            "wrong admin token: use the one in the data directory's admin-token file\n",
        )
            .into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "admin API: send Authorization: Bearer TOKEN (the data directory's admin-token file)\n",
        )
            .into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

async fn readyz(State(state): State<AdminState>) -> Response {
    match state.server.not_ready() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let registry = state.registry.clone();
    let text = tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).map(|()| out)
    })
    .await;
    match text {
        Ok(Ok(body)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics\n",
        )
            .into_response(),
    }
}

/// The figures read from the server at each scrape.
struct Sampled(AdminHandle);

impl std::fmt::Debug for Sampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sampled")
    }
}

/// Encodes one constant metric (a [`ConstGauge`] or a [`ConstCounter`]).
fn constant(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    constant(encoder, name, help, ConstGauge::new(value))
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    constant(encoder, name, help, ConstCounter::new(value))
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let server = &self.0;
        let snap = server.snapshot();
        let e = &mut encoder;
        gauge(
            e,
            "lanyard_connections",
            "Connections admitted and not yet ended",
            snap.open_connections as f64,
        )?;
        gauge(
            e,
            "lanyard_sessions",
            "Device sessions open",
            snap.sessions as f64,
        )?;
        {
            let a = &snap.admission;
            let c = ConstCounter::new(0u64);
            let mut family = e.encode_descriptor(
                "lanyard_handshakes",
                "Connections admitted or refused by admission control",
                None,
                c.metric_type(),
            )?;
            for (outcome, n) in [
                ("accepted", a.accepted),
                ("refused_rate", a.refused_rate),
                ("refused_connections", a.refused_connections),
                ("refused_memory", a.refused_memory),
            ] {
                ConstCounter::new(n).encode(family.encode_family(&[("outcome", outcome)])?)?;
            }
        }
        {
            let c = ConstCounter::new(0u64);
            let mut family = e.encode_descriptor(
                "lanyard_changes",
                "Changes devices pushed, by document kind and outcome",
                None,
                c.metric_type(),
            )?;
            for (kind, accepted, refused) in server.changes_by_kind() {
                for (outcome, n) in [("accepted", accepted), ("refused", refused)] {
                    ConstCounter::new(n).encode(
                        family.encode_family(&[("doc_kind", kind), ("outcome", outcome)])?,
                    )?;
                }
            }
        }
        counter(
            e,
            "lanyard_bytes_sent",
            "UDP payload bytes sent to devices",
            snap.bytes_sent as f64,
        )?;
        counter(
            e,
            "lanyard_bytes_received",
            "UDP payload bytes received from devices",
            snap.bytes_received as f64,
        )?;
        gauge(
            e,
            "lanyard_documents",
            "Documents the server holds",
            server.documents() as f64,
        )?;
        let store = server.store_bytes().unwrap_or(0);
        gauge(
            e,
            "lanyard_store_bytes",
            "Bytes the store takes on disk",
            store as f64,
        )?;
        counter(
            e,
            "lanyard_flushed_writes",
            "Writes made durable by grouped flushes",
            snap.flushed_writes as f64,
        )?;
        if let Some((connected, applied, reconnects)) = server.feed() {
            gauge(
                e,
                "lanyard_seat_authority",
                "1 while this node is the one of its cluster that decides seats",
                if server.deciding() { 1.0 } else { 0.0 },
            )?;
            gauge(
                e,
                "lanyard_feed_connected",
                "1 while the feed of other nodes' changes is connected to the database",
                if connected { 1.0 } else { 0.0 },
            )?;
            counter(
                e,
                "lanyard_feed_chunks",
                "Chunks other nodes stored, applied and fanned out here",
                applied as f64,
            )?;
            counter(
                e,
                "lanyard_feed_reconnects",
                "Times the change feed connected again after losing the database",
                reconnects as f64,
            )?;
        }
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory of the server process",
            snap.rss_bytes as f64,
        )?;
        counter(
            e,
            "process_cpu_seconds",
            "CPU time of the server process, user and system",
            snap.cpu_seconds,
        )?;
        Ok(())
    }
}

/// The body of a revoke or lift request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeRequest {
    /// The user.
    pub user: String,
    /// One device of the user; every device when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// The answer to a revoke request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeAnswer {
    /// Open sessions closed by it.
    pub closed: usize,
}

/// The answer to a lift request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiftAnswer {
    /// Whether there was such a revocation.
    pub lifted: bool,
}

fn bad_request(message: String) -> Box<Response> {
    Box::new((StatusCode::BAD_REQUEST, format!("{message}\n")).into_response())
}

fn revocation(event: &str, req: &RevokeRequest) -> Result<Revocation, Box<Response>> {
    let event = EventId::new(event).map_err(|e| bad_request(format!("event: {e}")))?;
    let user = UserId::new(req.user.as_str()).map_err(|e| bad_request(format!("user: {e}")))?;
    let device = match &req.device {
        Some(d) => {
            Some(DeviceId::new(d.as_str()).map_err(|e| bad_request(format!("device: {e}")))?)
        }
        None => None,
    };
    Ok(Revocation {
        event,
        user,
        device,
    })
}

fn store_failed(e: lanyard_store::StoreError) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the server could not store it: {e}\n"),
    )
        .into_response()
}

async fn revoke(
    State(state): State<AdminState>,
    UrlPath(event): UrlPath<String>,
    Json(req): Json<RevokeRequest>,
) -> Response {
    change_access(&state, &event, &req, false)
}

async fn lift(
    State(state): State<AdminState>,
    UrlPath(event): UrlPath<String>,
    Json(req): Json<RevokeRequest>,
) -> Response {
    change_access(&state, &event, &req, true)
}

/// Revokes, or lifts a revocation of, what `req` names in `event`.
fn change_access(state: &AdminState, event: &str, req: &RevokeRequest, lift: bool) -> Response {
    let r = match revocation(event, req) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let device = r.device.as_ref().map(ToString::to_string);
    let done = if lift {
        state.server.lift(&r).map(|lifted| {
            info!(event = %r.event, user = %r.user, ?device, lifted, "revocation lifted");
            Json(LiftAnswer { lifted }).into_response()
        })
    } else {
        state.server.revoke(r.clone()).map(|closed| {
            info!(event = %r.event, user = %r.user, ?device, closed, "revoked");
            Json(RevokeAnswer { closed }).into_response()
        })
    };
    done.unwrap_or_else(store_failed)
}

async fn revocations(State(state): State<AdminState>) -> Response {
    Json(state.server.revocations()).into_response()
}

async fn devices(State(state): State<AdminState>, UrlPath(event): UrlPath<String>) -> Response {
    match EventId::new(event.as_str()) {
        Ok(e) => Json(state.server.devices(&e)).into_response(),
        Err(e) => *bad_request(format!("event: {e}")),
    }
}

/// A client of a running server's admin API, found through its data
/// directory (the `admin.addr` and `admin-token` files).
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// Why an admin API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminClientError {
    /// The server answered with an error.
    #[error("the server answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// What it said.
        body: String,
    },
    /// The server could not be reached or its answer read.
    #[error("the admin API at {base}: {message}")]
    Transport {
        /// The API's address.
        base: String,
        /// What went wrong.
        message: String,
    },
}

impl AdminClient {
    /// The admin API of the server running on `data_dir`, if one runs with
    /// an admin listener (its address file exists and it answers).
    pub fn find(data_dir: &Path) -> Option<AdminClient> {
        let addr = std::fs::read_to_string(data_dir.join(ADDR_FILE)).ok()?;
        let token = std::fs::read_to_string(data_dir.join(TOKEN_FILE)).ok()?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(2)))
            .build()
            .into();
        let client = AdminClient {
            base: format!("http://{}", addr.trim()),
            token: token.trim().to_string(),
            agent,
        };
        client.get_text("/healthz").ok()?;
        Some(client)
    }

    fn transport(&self, e: impl std::fmt::Display) -> AdminClientError {
        AdminClientError::Transport {
            base: self.base.clone(),
            message: e.to_string(),
        }
    }

    fn check(
        &self,
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> Result<ureq::http::Response<ureq::Body>, AdminClientError> {
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        Err(AdminClientError::Status {
            status,
            body: body.trim().to_string(),
        })
    }

    /// `GET path` as text.
    pub fn get_text(&self, path: &str) -> Result<String, AdminClientError> {
        let resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| self.transport(e))?;
        let mut resp = self.check(resp)?;
        resp.body_mut()
            .read_to_string()
            .map_err(|e| self.transport(e))
    }

    /// `GET path`, its body streamed into `out`; the bytes written.
    pub fn get_to(
        &self,
        path: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<u64, AdminClientError> {
        let resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .config()
            .timeout_global(None)
            .build()
            .call()
            .map_err(|e| self.transport(e))?;
        let mut resp = self.check(resp)?;
        let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
        std::io::copy(&mut reader, out).map_err(|e| self.transport(e))
    }

    /// `POST path` with a JSON body, the answer read as JSON.
    pub fn post_json<B: Serialize, A: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<A, AdminClientError> {
        let resp = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .send_json(body)
            .map_err(|e| self.transport(e))?;
        let mut resp = self.check(resp)?;
        resp.body_mut().read_json().map_err(|e| self.transport(e))
    }
}

async fn backup(State(state): State<AdminState>) -> Response {
    let server = state.server.clone();
    let made = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        server.backup(&mut out).map(|m| (m, out))
    })
    .await;
    match made {
        Ok(Ok((manifest, bytes))) => {
            info!(
                documents = manifest.documents,
                bytes = bytes.len(),
                "backup taken"
            );
            ([(header::CONTENT_TYPE, "application/gzip")], bytes).into_response()
        }
        Ok(Err(e)) => {
            warn!(error = %e, "backup failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("backup failed: {e}\n"),
            )
                .into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("backup failed: {e}\n"),
        )
            .into_response(),
    }
}
