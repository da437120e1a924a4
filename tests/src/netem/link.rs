//! One client's link: its upstream socket, the models of both directions,
//! and the task that delays, shapes, drops and delivers its packets.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use super::counters::{bump, DirectionCells};
use super::model::{rng_for, secs, Delay, GilbertElliott, Outages, PoissonTimer, Shaper, Stream};
use super::{Profile, Shared};

/// What the listener and the controls tell a link.
pub(crate) enum LinkMsg {
    /// A datagram from the client, received at the given time.
    Packet(Vec<u8>, Instant),
    /// Take this new upstream socket now (bound by [`Netem::rebind_all`](super::Netem::rebind_all)).
    Rebind(std::net::UdpSocket),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Upstream,
    Downstream,
}

/// A packet waiting for its delivery time.
struct Pending {
    at: Instant,
    seq: u64,
    dir: Dir,
    data: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    // Reversed, so the max-heap pops the earliest delivery (then the first offered).
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other
            .at
            .cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// The models of one direction of a link.
struct DirectionModel {
    loss: GilbertElliott,
    delay: Delay,
    shaper: Shaper,
}

impl DirectionModel {
    fn new(profile: &Profile, seed: u64, index: u64, loss: Stream, delay: Stream) -> Self {
        DirectionModel {
            loss: GilbertElliott::new(profile.loss, profile.loss_burst, rng_for(seed, index, loss)),
            delay: Delay::new(
                profile.rtt_ms,
                profile.jitter_ms,
                rng_for(seed, index, delay),
            ),
            shaper: Shaper::new(profile.rate_kbit, profile.queue_ms),
        }
    }
}

/// Binds a non-blocking socket toward `upstream`: loopback for a loopback
/// server, the unspecified address otherwise, of the same family, on a fresh
/// port. (A std socket, so it can be bound outside the runtime's context.)
pub(crate) fn bind_upstream(upstream: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let ip: IpAddr = match (upstream.ip(), upstream.ip().is_loopback()) {
        (IpAddr::V4(_), true) => Ipv4Addr::LOCALHOST.into(),
        (IpAddr::V4(_), false) => Ipv4Addr::UNSPECIFIED.into(),
        (IpAddr::V6(_), true) => Ipv6Addr::LOCALHOST.into(),
        (IpAddr::V6(_), false) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// One client's link, owned by its task.
pub(crate) struct Link {
    pub(crate) client: SocketAddr,
    pub(crate) upstream_addr: SocketAddr,
    pub(crate) listen: Arc<UdpSocket>,
    pub(crate) upstream: Arc<UdpSocket>,
    pub(crate) shared: Arc<Shared>,
    up: DirectionModel,
    down: DirectionModel,
    outages: Outages,
    rebinds: PoissonTimer,
    pending: BinaryHeap<Pending>,
    seq: u64,
}

impl Link {
    /// A new link whose models start at `now`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        index: u64,
        client: SocketAddr,
        upstream_addr: SocketAddr,
        listen: Arc<UdpSocket>,
        upstream: UdpSocket,
        shared: Arc<Shared>,
        now: Instant,
    ) -> Self {
        let profile = &shared.profile;
        let seed = shared.seed;
        let scale = shared.time_scale;
        let up = DirectionModel::new(
            profile,
            seed,
            index,
            Stream::UpstreamLoss,
            Stream::UpstreamDelay,
        );
        let down = DirectionModel::new(
            profile,
            seed,
            index,
            Stream::DownstreamLoss,
            Stream::DownstreamDelay,
        );
        let outages = Outages::new(
            now,
            secs(profile.outage_every_s * scale),
            secs(profile.outage_s[0] * scale),
            secs(profile.outage_s[1] * scale),
            rng_for(seed, index, Stream::Outage),
        );
        let rebinds = PoissonTimer::new(
            now,
            secs(profile.rebind_every_s * scale),
            rng_for(seed, index, Stream::Rebind),
        );
        Link {
            client,
            upstream_addr,
            listen,
            upstream: Arc::new(upstream),
            up,
            down,
            outages,
            rebinds,
            pending: BinaryHeap::new(),
            seq: 0,
            shared,
        }
    }

    /// Runs the link until its channel closes (the proxy stops).
    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<LinkMsg>) {
        let mut buf = vec![0u8; 65_536];
        loop {
            let now = Instant::now();
            self.on_timers(now);
            self.deliver_due(now).await;
            let deadline = self.next_deadline();
            let upstream = Arc::clone(&self.upstream);
            tokio::select! {
                msg = rx.recv() => match msg {
                    None => return,
                    Some(LinkMsg::Packet(data, at)) => self.ingress(Dir::Upstream, data, at),
                    Some(LinkMsg::Rebind(socket)) => self.install(socket),
                },
                received = upstream.recv_from(&mut buf) => {
                    // Only the server's replies; errors (e.g. an ICMP
                    // unreachable reported on the socket) are ignored.
                    if let Ok((n, from)) = received {
                        if from == self.upstream_addr {
                            let data = buf[..n].to_vec();
                            self.ingress(Dir::Downstream, data, Instant::now());
                        }
                    }
                }
                _ = sleep_until(deadline.unwrap_or(now + Duration::from_secs(3600))), if deadline.is_some() => {}
            }
        }
    }

    fn cells(&self, dir: Dir) -> &DirectionCells {
        match dir {
            Dir::Upstream => &self.shared.counters.upstream,
            Dir::Downstream => &self.shared.counters.downstream,
        }
    }

    /// Whether an outage of this link, or one requested for every link, covers `t`.
    fn in_outage(&self, t: Instant) -> bool {
        self.outages.covers(t) || self.shared.global_outage_covers(t)
    }

    fn on_timers(&mut self, now: Instant) {
        let started = self.outages.advance(now);
        if started > 0 {
            bump(&self.shared.counters.outages, started);
        }
        if self.rebinds.poll(now) > 0 {
            self.rebind();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.pending.peek().map(|p| p.at),
            self.outages.next_start(),
            self.rebinds.next(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A packet enters the link in `dir` at `now`: loss, outage, queue, delay.
    fn ingress(&mut self, dir: Dir, data: Vec<u8>, now: Instant) {
        self.cells(dir).received(data.len());
        // Step the loss chain for every packet, so its decisions depend only
        // on the seed and the packet's position, not on timing.
        let model = match dir {
            Dir::Upstream => &mut self.up,
            Dir::Downstream => &mut self.down,
        };
        let lost = model.loss.is_lost();
        let outage_started = self.outages.advance(now);
        if outage_started > 0 {
            bump(&self.shared.counters.outages, outage_started);
        }
        if self.in_outage(now) {
            bump(&self.cells(dir).dropped_outage, 1);
            return;
        }
        if lost {
            bump(&self.cells(dir).dropped_loss, 1);
            return;
        }
        let model = match dir {
            Dir::Upstream => &mut self.up,
            Dir::Downstream => &mut self.down,
        };
        let Some(departure) = model.shaper.offer(now, data.len()) else {
            bump(&self.cells(dir).dropped_queue, 1);
            return;
        };
        let at = departure + model.delay.sample();
        self.seq += 1;
        self.pending.push(Pending {
            at,
            seq: self.seq,
            dir,
            data,
        });
    }

    /// Sends every packet due by `now`, dropping those whose delivery time
    /// falls within an outage.
    async fn deliver_due(&mut self, now: Instant) {
        while let Some(packet) = self.pending.peek() {
            if packet.at > now {
                break;
            }
            let Some(packet) = self.pending.pop() else {
                break;
            };
            let cells = self.cells(packet.dir);
            // Due during an outage, or (on a late wake-up) sent during one.
            if self.in_outage(packet.at) || self.in_outage(now) {
                bump(&cells.dropped_outage, 1);
                continue;
            }
            let sent = match packet.dir {
                Dir::Upstream => {
                    self.upstream
                        .send_to(&packet.data, self.upstream_addr)
                        .await
                }
                Dir::Downstream => self.listen.send_to(&packet.data, self.client).await,
            };
            let cells = self.cells(packet.dir);
            match sent {
                Ok(_) => cells.sent(packet.data.len()),
                Err(_) => bump(&cells.send_errors, 1),
            }
        }
    }

    /// A NAT rebind: a new upstream socket (a new source port toward the
    /// server); replies to the old one are lost, as behind a real NAT.
    fn rebind(&mut self) {
        match bind_upstream(self.upstream_addr) {
            Ok(socket) => {
                if let Ok(local) = socket.local_addr() {
                    self.shared.set_upstream_local(self.client, local);
                }
                self.install(socket);
            }
            Err(_) => bump(&self.shared.counters.upstream.send_errors, 1),
        }
    }

    /// Makes `socket` the link's upstream socket (the old one is closed).
    fn install(&mut self, socket: std::net::UdpSocket) {
        match UdpSocket::from_std(socket) {
            Ok(socket) => {
                self.upstream = Arc::new(socket);
                bump(&self.shared.counters.rebinds, 1);
            }
            Err(_) => bump(&self.shared.counters.upstream.send_errors, 1),
        }
    }
}
