//! Time as the sans-IO code sees it: a [`Millis`] instant passed in by the
//! driver (never read from a clock here), and the reconnect policy
//! ([`Backoff`]) that the device driver and the simulation both run.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An instant in milliseconds since the Unix epoch. The drivers pass the wall
/// clock ([`Millis::from_system`]); the simulation passes its own clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    /// `secs` seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Millis {
        Millis(secs.saturating_mul(1000))
    }

    /// The wall clock's instant (the epoch if the clock is before it).
    pub fn from_system(t: SystemTime) -> Millis {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    /// Whole seconds since the epoch (what token expiry is written in).
    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Millis {
    type Output = Millis;

    fn add(self, d: Duration) -> Millis {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Millis(self.0.saturating_add(ms))
    }
}

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

/// How a device waits between connection attempts: exponential from `base`
/// to `cap`, with full jitter (a delay drawn uniformly below the exponential
/// one), reset by a connection that lasted `stable_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// First delay (before jitter).
    pub base: Duration,
    /// Longest delay.
    pub cap: Duration,
    /// A session that lasted this long starts the backoff over.
    pub stable_after: Duration,
    /// Full jitter (turn off only to measure what it buys).
    pub jitter: bool,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            jitter: true,
        }
    }
}

/// The reconnect state of one device under a [`BackoffPolicy`].
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
}

impl Backoff {
    /// A device that has not failed yet.
    pub fn new(policy: BackoffPolicy) -> Backoff {
        Backoff { policy, attempt: 0 }
    }

    /// The policy.
    pub fn policy(&self) -> &BackoffPolicy {
        &self.policy
    }

    /// Failed attempts since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Starts over (the network changed, or the session proved healthy).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// A session that began at `started` ended (or a connect failed) at
    /// `now`: the delay before the next attempt. `unit` is a random draw in
    /// `[0, 1)` (the caller owns the randomness) used for the jitter.
    pub fn next_delay(&mut self, started: Millis, now: Millis, unit: f64) -> Duration {
        if now.since(started) >= self.policy.stable_after {
            self.attempt = 0;
        }
        let exp = self
            .policy
            .base
            .saturating_mul(2u32.saturating_pow(self.attempt.min(20)))
            .min(self.policy.cap);
        self.attempt = self.attempt.saturating_add(1);
        let ms = u64::try_from(exp.as_millis()).unwrap_or(u64::MAX).max(1);
        if !self.policy.jitter {
            return Duration::from_millis(ms);
        }
        // Uniform in [0, ms]: `unit` below 1 maps to every value up to `ms`.
        let unit = unit.clamp(0.0, 1.0);
        Duration::from_millis(((ms + 1) as f64 * unit).floor().min(ms as f64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_convert_and_add() {
        let t = Millis::from_secs(1_700_000_000);
        assert_eq!(t.as_secs(), 1_700_000_000);
        assert_eq!((t + Duration::from_millis(1500)).0, 1_700_000_001_500);
        assert_eq!(
            (t + Duration::from_secs(2)).since(t),
            Duration::from_secs(2)
        );
        assert_eq!(t.since(t + Duration::from_secs(2)), Duration::ZERO);
        let sys = UNIX_EPOCH + Duration::from_millis(42);
        assert_eq!(Millis::from_system(sys), Millis(42));
    }

    fn policy(jitter: bool) -> BackoffPolicy {
        BackoffPolicy {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(8),
            stable_after: Duration::from_secs(5),
            jitter,
        }
    }

    #[test]
    fn the_delay_doubles_to_the_cap_and_a_stable_session_resets_it() {
        let mut b = Backoff::new(policy(false));
        let t = Millis(0);
        let delays: Vec<u64> = (0..8)
            .map(|_| b.next_delay(t, t, 0.5).as_millis() as u64)
            .collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
        // A session of 5 s starts over.
        let d = b.next_delay(t, t + Duration::from_secs(5), 0.5);
        assert_eq!(d, Duration::from_millis(250));
        assert_eq!(b.attempt(), 1);
        b.reset();
        assert_eq!(b.attempt(), 0);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_exponential_delay() {
        let mut b = Backoff::new(policy(true));
        let t = Millis(0);
        assert_eq!(b.next_delay(t, t, 0.0), Duration::ZERO);
        b.reset();
        assert_eq!(b.next_delay(t, t, 0.999_999), Duration::from_millis(250));
        for _ in 0..10 {
            let d = b.next_delay(t, t, 0.5);
            assert!(d <= Duration::from_secs(8), "{d:?}");
        }
    }
}
