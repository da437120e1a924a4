//! # lanyard-netem: a user-space UDP impairment proxy
//!
//! [`Netem`] sits between devices and the server: clients send their UDP
//! datagrams to [`Netem::local_addr`], and the proxy forwards them to the
//! upstream (the server) through a separate **link per client source
//! address**. Each link owns its own upstream socket (so the server sees one
//! address per device); the server's replies on that socket go back to that
//! client. The `lanyard-netem` binary wraps the same proxy.
//!
//! Every field of `venue-profiles.toml` ([`Profile`]) is implemented, on each
//! direction of each link separately (upstream = toward the server,
//! downstream = toward the client). A datagram entering a direction goes
//! through, in order:
//!
//! 1. **Loss** — a two-state Gilbert–Elliott chain ([`model::GilbertElliott`])
//!    stepped once per packet: no loss in Good, every packet lost in Bad,
//!    `P(Bad→Good) = 1 / loss_burst`, `P(Good→Bad) = P(Bad→Good) * loss / (1 - loss)`,
//!    so the long-run loss is `loss` in bursts of mean length `loss_burst`.
//!    The chain steps for every packet, even one an outage drops, so the
//!    loss decisions depend only on the seed and the packet's position.
//! 2. **Outage** — the link's outages start at exponential intervals of mean
//!    `outage_every_s` (counted from the end of the previous one) and last
//!    uniform `outage_s = [min, max]` seconds, both multiplied by
//!    `time_scale`. A packet arriving during an outage of its link (or one
//!    requested with [`Netem::outage`]), or due or about to be sent during
//!    one, is dropped: nothing crosses the link while it is out.
//! 3. **Bottleneck** — a serialization queue at `rate_kbit` ([`model::Shaper`]):
//!    departure = `max(now, last departure) + size * 8 / rate`, tail drop when
//!    that is more than `queue_ms` away (a packet finding the queue empty is
//!    always taken). `rate_kbit = 0` means no limit.
//! 4. **Delay** — the packet is delivered at departure + `rtt_ms / 2` +
//!    uniform(`0..jitter_ms`); packets may overtake each other (reordering).
//!
//! **NAT rebinds** come at exponential intervals of mean `rebind_every_s`
//! (× `time_scale`; 0 = none), or on request ([`Netem::rebind_all`]): the
//! link takes a new upstream socket, so the server sees the device's packets
//! from a new source port; replies sent to the old port are lost.
//!
//! One seed drives everything: each model of each link has its own ChaCha8
//! stream derived from the seed and the link's index ([`model::rng_for`]).
//! Nothing blocks the runtime: each link is one tokio task holding a heap of
//! pending deliveries and sleeping until the next one.

pub mod counters;
mod link;
pub mod model;
pub mod profile;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use counters::{Counters, DirectionCounters};
pub use profile::{Profile, Profiles, BUILTIN_PROFILES_TOML, REPO_PROFILES_PATH};

use counters::{bump, CounterCells};
use link::{bind_upstream, Link, LinkMsg};

/// How to start a [`Netem`].
#[derive(Debug, Clone, PartialEq)]
pub struct NetemConfig {
    /// Where clients send their datagrams (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The server the datagrams go to.
    pub upstream: SocketAddr,
    /// The impairments of every link.
    pub profile: Profile,
    /// The seed of every random decision.
    pub seed: u64,
    /// Multiplies outage intervals and lengths and rebind intervals
    /// (e.g. 0.01 makes a 300 s mean interval 3 s); must be > 0.
    pub time_scale: f64,
}

impl NetemConfig {
    /// A proxy on a free loopback port toward `upstream`, seed 0, time scale 1.
    pub fn new(upstream: SocketAddr, profile: Profile) -> Self {
        NetemConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            upstream,
            profile,
            seed: 0,
            time_scale: 1.0,
        }
    }
}

/// One client's link as the proxy sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    /// The link's index: links are numbered from 0 in the order their first
    /// packet arrived (it selects the link's random streams).
    pub index: u64,
    /// The client's source address.
    pub client: SocketAddr,
    /// The proxy's current source address toward the server for this client
    /// (it changes on every rebind).
    pub upstream_local: SocketAddr,
}

struct LinkEntry {
    tx: mpsc::UnboundedSender<LinkMsg>,
    info: LinkInfo,
    task: JoinHandle<()>,
}

/// State shared by the proxy's handle, its listener and its links.
pub(crate) struct Shared {
    pub(crate) profile: Profile,
    pub(crate) seed: u64,
    pub(crate) time_scale: f64,
    pub(crate) counters: CounterCells,
    global_outage: Mutex<Option<(Instant, Instant)>>,
    links: Mutex<HashMap<SocketAddr, LinkEntry>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn global_outage_covers(&self, t: Instant) -> bool {
        lock(&self.global_outage).is_some_and(|(start, end)| start <= t && t < end)
    }

    pub(crate) fn set_upstream_local(&self, client: SocketAddr, local: SocketAddr) {
        if let Some(entry) = lock(&self.links).get_mut(&client) {
            entry.info.upstream_local = local;
        }
    }

    fn stop_links(&self) -> Vec<JoinHandle<()>> {
        let entries: Vec<LinkEntry> = lock(&self.links).drain().map(|(_, e)| e).collect();
        entries
            .into_iter()
            .map(|entry| {
                entry.task.abort();
                entry.task
            })
            .collect()
    }
}

/// A running impairment proxy; dropping it stops it.
pub struct Netem {
    local_addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
}

impl Netem {
    /// Validates the configuration, binds `config.listen` and starts forwarding.
    pub async fn start(config: NetemConfig) -> anyhow::Result<Netem> {
        config.profile.validate().context("invalid profile")?;
        if !config.time_scale.is_finite() || config.time_scale <= 0.0 {
            bail!(
                "time_scale must be a finite number > 0, got {}",
                config.time_scale
            );
        }
        let listen = UdpSocket::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listen.local_addr()?;
        let shared = Arc::new(Shared {
            profile: config.profile,
            seed: config.seed,
            time_scale: config.time_scale,
            counters: CounterCells::default(),
            global_outage: Mutex::new(None),
            links: Mutex::new(HashMap::new()),
        });
        let listener = tokio::spawn(listen_loop(
            Arc::clone(&shared),
            Arc::new(listen),
            config.upstream,
        ));
        Ok(Netem {
            local_addr,
            upstream: config.upstream,
            shared,
            listener: Some(listener),
        })
    }

    /// Where clients send their datagrams.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server the datagrams go to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The profile every link follows.
    pub fn profile(&self) -> &Profile {
        &self.shared.profile
    }

    /// The seed of every random decision.
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.shared.counters.snapshot()
    }

    /// The links so far, by index.
    pub fn links(&self) -> Vec<LinkInfo> {
        let mut links: Vec<LinkInfo> = lock(&self.shared.links).values().map(|e| e.info).collect();
        links.sort_by_key(|info| info.index);
        links
    }

    /// Starts an outage on every link (existing and new) now, for `duration`:
    /// every packet arriving, or due for delivery, before it ends is dropped.
    /// An outage requested while one is running extends it.
    pub fn outage(&self, duration: Duration) {
        let now = Instant::now();
        let end = now.checked_add(duration).unwrap_or(now);
        let mut outage = lock(&self.shared.global_outage);
        *outage = match *outage {
            Some((start, old_end)) if old_end > now => Some((start, old_end.max(end))),
            _ => Some((now, end)),
        };
        bump(&self.shared.counters.outages, 1);
    }

    /// Rebinds every link now: each gets a new upstream socket, so the
    /// server sees a new source port. When this returns, [`Netem::links`]
    /// shows the new addresses, and every datagram a client sends from then
    /// on leaves from its link's new address (the switch goes through the
    /// link's queue, behind the datagrams it already holds). Returns how
    /// many links were rebound.
    pub fn rebind_all(&self) -> usize {
        let mut links = lock(&self.shared.links);
        let mut rebound = 0;
        for entry in links.values_mut() {
            let Ok(socket) = bind_upstream(self.upstream) else {
                bump(&self.shared.counters.upstream.send_errors, 1);
                continue;
            };
            let Ok(local) = socket.local_addr() else {
                continue;
            };
            if entry.tx.send(LinkMsg::Rebind(socket)).is_ok() {
                entry.info.upstream_local = local;
                rebound += 1;
            }
        }
        rebound
    }

    /// Stops the proxy (its sockets are closed when this returns) and
    /// returns the final counters.
    pub async fn stop(mut self) -> Counters {
        if let Some(listener) = self.listener.take() {
            listener.abort();
            let _ = listener.await;
        }
        for task in self.shared.stop_links() {
            let _ = task.await;
        }
        self.counters()
    }
}

impl Drop for Netem {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.take() {
            listener.abort();
        }
        self.shared.stop_links();
    }
}

/// Receives the clients' datagrams and hands each to its link, creating the
/// link (and its upstream socket) on a client's first datagram.
async fn listen_loop(shared: Arc<Shared>, listen: Arc<UdpSocket>, upstream: SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client) = match listen.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(_) => {
                // E.g. an ICMP error reported on the socket: keep serving.
                tokio::task::yield_now().await;
                continue;
            }
        };
        let now = Instant::now();
        let packet = LinkMsg::Packet(buf[..n].to_vec(), now);
        let mut links = lock(&shared.links);
        if let Some(entry) = links.get(&client) {
            let _ = entry.tx.send(packet);
            continue;
        }
        let socket = match bind_upstream(upstream).and_then(UdpSocket::from_std) {
            Ok(socket) => socket,
            Err(_) => {
                shared.counters.upstream.received(n);
                bump(&shared.counters.upstream.send_errors, 1);
                continue;
            }
        };
        let Ok(upstream_local) = socket.local_addr() else {
            continue;
        };
        let index = links.len() as u64;
        bump(&shared.counters.links, 1);
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Link::new(
            index,
            client,
            upstream,
            Arc::clone(&listen),
            socket,
            Arc::clone(&shared),
            now,
        );
        let _ = tx.send(packet);
        let task = tokio::spawn(link.run(rx));
        links.insert(
            client,
            LinkEntry {
                tx,
                info: LinkInfo {
                    index,
                    client,
                    upstream_local,
                },
                task,
            },
        );
    }
}
