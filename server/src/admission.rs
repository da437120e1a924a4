//! Admission control: how many devices the server lets in, and how fast.
//!
//! A reconnect storm (an access point reboots and a whole hall comes back at
//! once) must slow down instead of tipping the server over. [`Admission`]
//! decides for every incoming connection, before the expensive part of the
//! handshake where quinn allows:
//!
//! * over the handshake rate (a token bucket) or with `max_handshaking`
//!   handshakes in progress: **wait** in a first-come, first-served queue
//!   holding at most `max_wait` of the rate, admitted as tokens come back —
//!   a device in it just sees a slow handshake, instead of a refusal and a
//!   random backoff that can leave it out for tens of seconds after the hall
//!   is back;
//! * the queue half full and the address not validated: **retry** — a
//!   stateless QUIC Retry, so a spoofed flood can fill at most half the
//!   queue. Not sooner: a Retry is a single datagram that quinn drops when
//!   the socket is busy, and the device then waits out its doubling probe
//!   timer (measured at 10,000 devices: with a Retry for every unvalidated
//!   address while devices waited, ~25 devices got no answer for 20 s; with
//!   none, the last device was back after 7.5 s);
//! * over the rate with the queue full: **refuse** at once — a QUIC
//!   `CONNECTION_REFUSED`, no TLS work; the device backs off with full jitter;
//! * over the connection or memory limit: **accept then close** with
//!   [`ErrorCode::Overloaded`](lanyard_protocol::ErrorCode::Overloaded) and a
//!   jittered retry-after hint, so devices come back spread out;
//! * otherwise **accept**.
//!
//! The logic is pure (time and randomness are arguments) and unit-tested; the
//! driver applies it to quinn's `Incoming`.

use std::time::{Duration, Instant};

/// Limits of the admission control.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionConfig {
    /// Most open connections.
    pub max_connections: usize,
    /// Most handshakes started per second (the bucket also allows a burst of this size).
    pub handshakes_per_sec: f64,
    /// Refuse new devices while the server's resident memory is above this (bytes).
    pub max_memory_bytes: u64,
    /// Base of the retry-after hint; the hint is jittered in [base/2, base·3/2).
    pub retry_after: Duration,
    /// Most handshakes in progress at once; more wait in the queue. Each costs
    /// memory until it completes (TLS and QUIC state, its first flights): a
    /// whole hall handshaking at once would add a third to the server's
    /// memory at 10,000 devices.
    pub max_handshaking: usize,
    /// Longest a handshake waits for the rate in the admission queue (the
    /// queue holds `handshakes_per_sec · max_wait` devices); zero refuses
    /// at once. Keep it well under the devices' handshake timeout.
    pub max_wait: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_connections: 25_000,
            // Measured on a 2-core machine with 10,000 simulated devices on
            // the same cores: ~1,600 full handshakes a second while the
            // devices reconnect; 2,000 lets a hall of 10,000 back in about
            // 6 s, and the queue and refusals take over beyond it.
            handshakes_per_sec: 2_000.0,
            max_memory_bytes: 1536 * 1024 * 1024,
            retry_after: Duration::from_secs(5),
            max_wait: Duration::from_secs(8),
            max_handshaking: 1024,
        }
    }
}

/// What to do with an incoming connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go on with the handshake.
    Accept,
    /// Send a stateless Retry (address validation) first.
    Retry,
    /// Over the handshake rate: wait in the queue for
    /// [`Admission::admit_waiting`].
    Wait,
    /// Refuse at once (over the handshake rate, the queue full).
    Refuse,
    /// Complete the handshake, then close with this retry-after hint.
    Overloaded(Duration),
}

/// Why a device was turned away, for the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdmissionStats {
    /// Connections let in.
    pub accepted: u64,
    /// Stateless retries sent.
    pub retries: u64,
    /// Refused for the handshake rate.
    pub refused_rate: u64,
    /// Closed with a hint for the connection limit.
    pub refused_connections: u64,
    /// Closed with a hint for the memory limit.
    pub refused_memory: u64,
    /// Most connections open at once.
    pub peak_connections: u64,
    /// Handshakes that waited in the admission queue.
    #[serde(default)]
    pub queued: u64,
    /// Most handshakes waiting at once.
    #[serde(default)]
    pub peak_waiting: u64,
    /// Most handshakes in progress at once.
    #[serde(default)]
    pub peak_handshaking: u64,
}

impl AdmissionStats {
    /// Adds another server's counters (peaks too: the nodes' sum).
    pub fn add(&mut self, o: &AdmissionStats) {
        self.accepted += o.accepted;
        self.retries += o.retries;
        self.refused_rate += o.refused_rate;
        self.refused_connections += o.refused_connections;
        self.refused_memory += o.refused_memory;
        self.peak_connections += o.peak_connections;
        self.queued += o.queued;
        self.peak_waiting += o.peak_waiting;
        self.peak_handshaking += o.peak_handshaking;
    }

    /// All turned away (refused or closed with a hint).
    pub fn refused(&self) -> u64 {
        self.refused_rate + self.refused_connections + self.refused_memory
    }
}

/// The admission state machine.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    tokens: f64,
    last: Option<Instant>,
    stats: AdmissionStats,
}

impl Admission {
    /// A full bucket.
    pub fn new(config: AdmissionConfig) -> Self {
        Admission {
            config,
            tokens: config.handshakes_per_sec.max(1.0),
            last: None,
            stats: AdmissionStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> AdmissionStats {
        self.stats
    }

    fn refill(&mut self, now: Instant) {
        let cap = self.config.handshakes_per_sec.max(1.0);
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.config.handshakes_per_sec).min(cap);
        }
        self.last = Some(now);
    }

    /// How many handshakes the queue holds.
    pub fn queue_capacity(&self) -> usize {
        (self.config.handshakes_per_sec.max(0.0) * self.config.max_wait.as_secs_f64()) as usize
    }

    /// The connection or memory limit, if one is reached: a jittered hint.
    fn over_limits(&mut self, open: usize, rss: u64, jitter: f64) -> Option<Decision> {
        let base = self.config.retry_after.as_secs_f64();
        let hint = Duration::from_secs_f64(base * (0.5 + jitter.clamp(0.0, 1.0)));
        if open >= self.config.max_connections {
            self.stats.refused_connections += 1;
            return Some(Decision::Overloaded(hint));
        }
        if rss > self.config.max_memory_bytes {
            self.stats.refused_memory += 1;
            return Some(Decision::Overloaded(hint));
        }
        None
    }

    /// Decides for one incoming connection. `open` is the number of open
    /// connections, `rss` the resident memory in bytes, `validated` whether
    /// the address was validated by a Retry, `waiting` the handshakes in the
    /// queue, `handshaking` those in progress, `jitter` a uniform draw in
    /// [0, 1).
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &mut self,
        now: Instant,
        open: usize,
        rss: u64,
        validated: bool,
        waiting: usize,
        handshaking: usize,
        jitter: f64,
    ) -> Decision {
        self.refill(now);
        self.stats.peak_connections = self.stats.peak_connections.max(open as u64);
        self.observe_handshaking(handshaking);
        if let Some(d) = self.over_limits(open, rss, jitter) {
            return d;
        }
        // A Retry is stateless: past half the queue only validated
        // addresses may wait, so a spoofed flood can fill half of it at most.
        if !validated && waiting.saturating_mul(2) >= self.queue_capacity().max(1) {
            self.stats.retries += 1;
            return Decision::Retry;
        }
        // Nobody overtakes the queue.
        if waiting > 0 || self.tokens < 1.0 || handshaking >= self.config.max_handshaking {
            if waiting < self.queue_capacity() {
                self.stats.queued += 1;
                self.stats.peak_waiting = self.stats.peak_waiting.max(waiting as u64 + 1);
                return Decision::Wait;
            }
            self.stats.refused_rate += 1;
            return Decision::Refuse;
        }
        self.tokens -= 1.0;
        self.stats.accepted += 1;
        Decision::Accept
    }

    /// The first waiting handshake, if a token is back: `Accept`, or
    /// `Overloaded` if a limit was reached while it waited. `None`: keep
    /// waiting (see [`Admission::until_token`]).
    pub fn admit_waiting(
        &mut self,
        now: Instant,
        open: usize,
        handshaking: usize,
        rss: u64,
        jitter: f64,
    ) -> Option<Decision> {
        self.refill(now);
        self.observe_handshaking(handshaking);
        if let Some(d) = self.over_limits(open, rss, jitter) {
            return Some(d);
        }
        if self.tokens < 1.0 || handshaking >= self.config.max_handshaking {
            return None;
        }
        self.tokens -= 1.0;
        self.stats.accepted += 1;
        Some(Decision::Accept)
    }

    /// How long until the next token.
    pub fn until_token(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        let rate = self.config.handshakes_per_sec.max(1e-3);
        Duration::from_secs_f64((1.0 - self.tokens) / rate)
    }

    fn observe_handshaking(&mut self, handshaking: usize) {
        self.stats.peak_handshaking = self.stats.peak_handshaking.max(handshaking as u64);
    }

    /// Records the number of open connections (for the peak).
    pub fn observe_open(&mut self, open: usize) {
        self.stats.peak_connections = self.stats.peak_connections.max(open as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AdmissionConfig {
        AdmissionConfig {
            max_connections: 10,
            handshakes_per_sec: 4.0,
            max_memory_bytes: 1000,
            retry_after: Duration::from_secs(2),
            max_wait: Duration::ZERO,
            max_handshaking: 100,
        }
    }

    #[test]
    fn the_handshake_rate_is_a_token_bucket() {
        let mut a = Admission::new(cfg());
        let t = Instant::now();
        // Validated devices: the burst of 4 passes, the 5th is refused.
        let got: Vec<_> = (0..5).map(|_| a.decide(t, 0, 0, true, 0, 0, 0.5)).collect();
        assert_eq!(&got[..4], &[Decision::Accept; 4]);
        assert_eq!(got[4], Decision::Refuse);
        // A quarter second later one token is back.
        let t2 = t + Duration::from_millis(250);
        assert_eq!(a.decide(t2, 0, 0, true, 0, 0, 0.5), Decision::Accept);
        assert_eq!(a.decide(t2, 0, 0, true, 0, 0, 0.5), Decision::Refuse);
        assert_eq!(a.stats().refused_rate, 2);
    }

    #[test]
    fn unvalidated_addresses_get_a_retry_once_the_queue_is_half_full() {
        // 4 per second, a queue of two seconds: 8 places.
        let mut a = Admission::new(AdmissionConfig {
            max_wait: Duration::from_secs(2),
            ..cfg()
        });
        let t = Instant::now();
        for _ in 0..4 {
            assert_eq!(a.decide(t, 0, 0, false, 0, 0, 0.5), Decision::Accept);
        }
        // Over the rate: unvalidated addresses wait too, up to half the queue.
        for w in 0..4 {
            assert_eq!(a.decide(t, 0, 0, false, w, 0, 0.5), Decision::Wait);
        }
        // Half full: unvalidated devices must prove their address; validated
        // ones still wait.
        assert_eq!(a.decide(t, 0, 0, false, 4, 0, 0.5), Decision::Retry);
        assert_eq!(a.decide(t, 0, 0, true, 4, 0, 0.5), Decision::Wait);
        // With no queue (max_wait 0), over the rate is a refusal, never a Retry.
        let mut b = Admission::new(cfg());
        for _ in 0..4 {
            assert_eq!(b.decide(t, 0, 0, false, 0, 0, 0.5), Decision::Accept);
        }
        assert_eq!(b.decide(t, 0, 0, false, 0, 0, 0.5), Decision::Refuse);
        assert_eq!((a.stats().retries, b.stats().retries), (1, 0));
    }

    #[test]
    fn limits_send_devices_away_with_a_jittered_hint() {
        let mut a = Admission::new(cfg());
        let t = Instant::now();
        let lo = a.decide(t, 10, 0, true, 0, 0, 0.0);
        let hi = a.decide(t, 10, 0, true, 0, 0, 0.999);
        assert_eq!(lo, Decision::Overloaded(Duration::from_secs(1)));
        match hi {
            Decision::Overloaded(d) => {
                assert!(d > Duration::from_millis(2990) && d < Duration::from_secs(3))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            a.decide(t, 0, 5000, true, 0, 0, 0.5),
            Decision::Overloaded(_)
        ));
        let s = a.stats();
        assert_eq!((s.refused_connections, s.refused_memory), (2, 1));
        assert_eq!(s.peak_connections, 10);
        assert_eq!(s.refused(), 3);
    }

    #[test]
    fn over_the_rate_devices_wait_in_order_up_to_the_queue_bound() {
        // 4 per second, a queue of one second: 4 places.
        let mut a = Admission::new(AdmissionConfig {
            max_wait: Duration::from_secs(1),
            ..cfg()
        });
        let t = Instant::now();
        for _ in 0..4 {
            assert_eq!(a.decide(t, 0, 0, true, 0, 0, 0.5), Decision::Accept);
        }
        assert_eq!(a.until_token(t), Duration::from_millis(250));
        assert_eq!(a.queue_capacity(), 4);
        let waits: Vec<_> = (0..5).map(|w| a.decide(t, 0, 0, true, w, 0, 0.5)).collect();
        assert_eq!(&waits[..4], &[Decision::Wait; 4]);
        assert_eq!(waits[4], Decision::Refuse, "the queue is full");
        // No token yet: the first waiting keeps waiting.
        assert_eq!(a.admit_waiting(t, 0, 0, 0, 0.5), None);
        // A token is back: the first waiting goes in, and a newcomer does
        // not overtake the three still waiting even with a token free.
        let t2 = t + Duration::from_millis(500);
        assert_eq!(a.admit_waiting(t2, 0, 0, 0, 0.5), Some(Decision::Accept));
        assert_eq!(a.decide(t2, 0, 0, true, 3, 0, 0.5), Decision::Wait);
        // A limit reached while waiting sends the device away with a hint.
        assert!(matches!(
            a.admit_waiting(t2, 10, 0, 0, 0.5),
            Some(Decision::Overloaded(_))
        ));
        // The bucket is full again and nobody waits: straight in.
        let t3 = t + Duration::from_secs(2);
        assert_eq!(a.decide(t3, 0, 0, false, 0, 0, 0.5), Decision::Accept);
        let s = a.stats();
        assert_eq!((s.queued, s.peak_waiting, s.refused_rate), (5, 4, 1));
        assert_eq!(s.retries, 0);
        assert_eq!(s.accepted, 6);
    }

    #[test]
    fn handshakes_in_progress_are_bounded_and_the_rest_wait() {
        let mut a = Admission::new(AdmissionConfig {
            max_wait: Duration::from_secs(1),
            max_handshaking: 2,
            ..cfg()
        });
        let t = Instant::now();
        // Tokens to spare, but two handshakes already in progress.
        assert_eq!(a.decide(t, 0, 0, true, 0, 1, 0.5), Decision::Accept);
        assert_eq!(a.decide(t, 0, 0, true, 0, 2, 0.5), Decision::Wait);
        assert_eq!(a.admit_waiting(t, 0, 2, 0, 0.5), None);
        // One finished: the first waiting goes in.
        assert_eq!(a.admit_waiting(t, 0, 1, 0, 0.5), Some(Decision::Accept));
        assert_eq!(a.stats().peak_handshaking, 2);
    }
}
