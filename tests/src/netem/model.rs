//! The impairment models, sans-IO: each takes the time (and draws from its
//! own seeded generator) and returns a decision, so they can be tested and
//! replayed without sockets or timers.
//!
//! Every random decision of a link comes from its own [`ChaCha8Rng`] stream,
//! derived by [`rng_for`] from the proxy's seed, the link's index (links are
//! numbered in the order their first packet arrives) and the purpose, so one
//! model's draws never shift another's: the loss decisions of a direction
//! depend only on the seed and the packet's position in that direction.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

/// Which model of which link a random stream feeds (see [`rng_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Loss decisions toward the server.
    UpstreamLoss = 0,
    /// Loss decisions toward the client.
    DownstreamLoss = 1,
    /// Jitter toward the server.
    UpstreamDelay = 2,
    /// Jitter toward the client.
    DownstreamDelay = 3,
    /// Outage times and lengths.
    Outage = 4,
    /// NAT rebind times.
    Rebind = 5,
}

/// The random generator of one model of one link: ChaCha8 seeded with
/// `seed`, on stream `link_index * 16 + stream`.
pub fn rng_for(seed: u64, link_index: u64, stream: Stream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(link_index.wrapping_mul(16).wrapping_add(stream as u64));
    rng
}

/// A duration of `secs` seconds (negative, NaN or huge values saturate).
pub fn secs(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
}

/// `t + d`, or `None` when that is beyond what an [`Instant`] can hold.
fn later(t: Instant, d: Duration) -> Option<Instant> {
    t.checked_add(d)
}

/// An exponential draw with the given mean.
fn exponential(rng: &mut ChaCha8Rng, mean: Duration) -> Duration {
    let u: f64 = rng.random(); // [0, 1)
    secs(-mean.as_secs_f64() * (1.0 - u).ln())
}

/// Gilbert–Elliott bursty loss, in its simple two-state form.
///
/// The chain has a Good state (no packet lost) and a Bad state (every packet
/// lost). It steps once per packet: from Good it moves to Bad with
/// probability `p`, from Bad back to Good with probability `r`; then the
/// packet is lost if and only if the chain is in Bad. Bad runs are therefore
/// geometric with mean `1 / r` packets, and the long-run fraction of packets
/// lost is `p / (p + r)`. Given the configured `loss` and mean burst length
/// `loss_burst` we take `r = 1 / loss_burst` and
/// `p = r * loss / (1 - loss)`. The initial state is drawn from the
/// stationary distribution, so there is no warm-up bias.
#[derive(Debug, Clone)]
pub struct GilbertElliott {
    p: f64,
    r: f64,
    bad: bool,
    rng: ChaCha8Rng,
}

impl GilbertElliott {
    /// The transition probabilities `(p, r)` (Good→Bad, Bad→Good) giving a
    /// long-run loss `loss` in bursts of mean length `loss_burst` packets.
    pub fn transition_probabilities(loss: f64, loss_burst: f64) -> (f64, f64) {
        if loss <= 0.0 {
            return (0.0, 1.0);
        }
        let r = 1.0 / loss_burst.max(1.0);
        let p = (r * loss / (1.0 - loss)).min(1.0);
        (p, r)
    }

    /// A chain for `loss` and `loss_burst` (see [`Profile`](super::Profile)).
    pub fn new(loss: f64, loss_burst: f64, mut rng: ChaCha8Rng) -> Self {
        let (p, r) = Self::transition_probabilities(loss, loss_burst);
        let bad = p > 0.0 && rng.random::<f64>() < p / (p + r);
        GilbertElliott { p, r, bad, rng }
    }

    /// Steps the chain for one packet and tells whether that packet is lost.
    pub fn is_lost(&mut self) -> bool {
        if self.p <= 0.0 {
            return false;
        }
        let u: f64 = self.rng.random();
        self.bad = if self.bad { u >= self.r } else { u < self.p };
        self.bad
    }
}

/// Base delay plus uniform jitter: `base + uniform(0..jitter)` per packet.
#[derive(Debug, Clone)]
pub struct Delay {
    base: Duration,
    jitter: Duration,
    rng: ChaCha8Rng,
}

impl Delay {
    /// One direction's delay: `rtt_ms / 2` plus up to `jitter_ms`.
    pub fn new(rtt_ms: f64, jitter_ms: f64, rng: ChaCha8Rng) -> Self {
        Delay {
            base: secs(rtt_ms / 2000.0),
            jitter: secs(jitter_ms / 1000.0),
            rng,
        }
    }

    /// The delay of the next packet.
    pub fn sample(&mut self) -> Duration {
        if self.jitter.is_zero() {
            return self.base;
        }
        let u: f64 = self.rng.random();
        self.base + self.jitter.mul_f64(u)
    }
}

/// The bottleneck: a serialization queue drained at `rate_kbit` with room
/// for `queue_ms` worth of bytes, and tail drop.
///
/// A packet of `size` bytes offered at `now` leaves at
/// `max(now, last departure) + size * 8 / rate`; it is dropped (tail drop)
/// when that is more than `queue_ms` after `now`, except that a packet
/// finding the queue empty is always taken (so a packet larger than the
/// queue does not make the link unusable). The rate counts UDP payload bytes.
#[derive(Debug, Clone)]
pub struct Shaper {
    bits_per_sec: f64,
    queue: Duration,
    last_departure: Option<Instant>,
}

impl Shaper {
    /// A bottleneck of `rate_kbit` kbit/s (0 = unlimited) and `queue_ms`.
    pub fn new(rate_kbit: f64, queue_ms: f64) -> Self {
        Shaper {
            bits_per_sec: rate_kbit * 1000.0,
            queue: secs(queue_ms / 1000.0),
            last_departure: None,
        }
    }

    /// Offers a packet at `now`: its departure time, or `None` for a tail drop.
    pub fn offer(&mut self, now: Instant, size: usize) -> Option<Instant> {
        if self.bits_per_sec <= 0.0 {
            return Some(now);
        }
        let serialization = secs(size as f64 * 8.0 / self.bits_per_sec);
        let start = match self.last_departure {
            Some(last) if last > now => last,
            _ => now,
        };
        let departure = later(start, serialization)?;
        if start > now && departure - now > self.queue {
            return None;
        }
        self.last_departure = Some(departure);
        Some(departure)
    }
}

/// Events at exponential intervals (a Poisson process), e.g. NAT rebinds.
#[derive(Debug, Clone)]
pub struct PoissonTimer {
    mean: Duration,
    next: Option<Instant>,
    rng: ChaCha8Rng,
}

impl PoissonTimer {
    /// Events every `mean` on average from `now` on; a zero mean means never.
    pub fn new(now: Instant, mean: Duration, mut rng: ChaCha8Rng) -> Self {
        let next = if mean.is_zero() {
            None
        } else {
            later(now, exponential(&mut rng, mean))
        };
        PoissonTimer { mean, next, rng }
    }

    /// When the next event is due, if ever.
    pub fn next(&self) -> Option<Instant> {
        self.next
    }

    /// How many events fell due up to `now` (advancing past them).
    pub fn poll(&mut self, now: Instant) -> u64 {
        let mut due = 0;
        while let Some(next) = self.next.filter(|next| *next <= now) {
            due += 1;
            self.next = later(next, exponential(&mut self.rng, self.mean));
        }
        due
    }
}

/// A link's outages: the gap from the end of one outage to the start of the
/// next is exponential with mean `every`; each lasts uniform `[min, max]`.
#[derive(Debug, Clone)]
pub struct Outages {
    every: Duration,
    min: Duration,
    max: Duration,
    next_start: Option<Instant>,
    current: Option<(Instant, Instant)>,
    rng: ChaCha8Rng,
}

impl Outages {
    /// The schedule from `now` on; a zero `every` means no outages.
    pub fn new(
        now: Instant,
        every: Duration,
        min: Duration,
        max: Duration,
        mut rng: ChaCha8Rng,
    ) -> Self {
        let next_start = if every.is_zero() {
            None
        } else {
            later(now, exponential(&mut rng, every))
        };
        Outages {
            every,
            min,
            max: max.max(min),
            next_start,
            current: None,
            rng,
        }
    }

    /// When the next outage starts, if ever.
    pub fn next_start(&self) -> Option<Instant> {
        self.next_start
    }

    /// The latest outage that has started, as `(start, end)`.
    pub fn current(&self) -> Option<(Instant, Instant)> {
        self.current
    }

    /// Starts the outages due up to `now`; returns how many started.
    pub fn advance(&mut self, now: Instant) -> u64 {
        let mut started = 0;
        while let Some(start) = self.next_start.filter(|start| *start <= now) {
            started += 1;
            let u: f64 = self.rng.random();
            let length = self.min + (self.max - self.min).mul_f64(u);
            let end = later(start, length);
            self.current = Some((start, end.unwrap_or(start)));
            self.next_start =
                end.and_then(|end| later(end, exponential(&mut self.rng, self.every)));
            if end.is_none() {
                break;
            }
        }
        started
    }

    /// Whether `t` falls within the latest started outage.
    pub fn covers(&self, t: Instant) -> bool {
        self.current
            .is_some_and(|(start, end)| start <= t && t < end)
    }
}
