//! The Hello gate: how long a connection may stay without a `Hello`.
//!
//! A device on a busy phone or a collapsing link can take long to send its
//! first frame, and closing it sends it into a reconnect loop (each attempt
//! costs a handshake and starts the wait over). A client that connects and
//! then says nothing (a slowloris) must still cost bounded resources. So a
//! connection without a `Hello` is closed after [`HelloGateConfig::timeout`]
//! (generous), and sooner, after [`HelloGateConfig::crowded_timeout`], only
//! while more than [`HelloGateConfig::max_waiting`] connections wait: the
//! oldest go first. Admission control bounds the connections themselves.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::time::Millis;

/// Limits of the [`HelloGate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloGateConfig {
    /// Longest wait for a `Hello`.
    pub timeout: Duration,
    /// The wait while the gate is crowded.
    pub crowded_timeout: Duration,
    /// More connections than this waiting at once is crowded.
    pub max_waiting: usize,
}

impl Default for HelloGateConfig {
    fn default() -> Self {
        HelloGateConfig {
            timeout: Duration::from_secs(60),
            crowded_timeout: Duration::from_secs(10),
            max_waiting: 4096,
        }
    }
}

/// Why a waiting connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// The connection (the driver's key).
    pub key: u64,
    /// How long it waited.
    pub waited: Duration,
    /// The wait it was allowed.
    pub limit: Duration,
    /// Closed early because the gate was crowded.
    pub crowded: bool,
}

impl Expired {
    /// The message the device gets.
    pub fn message(&self) -> String {
        let secs = self.limit.as_secs();
        if self.crowded {
            format!("no Hello within {secs} s, while the server is crowded")
        } else {
            format!("no Hello within {secs} s of opening the stream")
        }
    }
}

/// Connections waiting for their `Hello`, with when each began.
#[derive(Debug, Default)]
pub struct HelloGate {
    config: HelloGateConfig,
    since: HashMap<u64, Millis>,
    order: BTreeSet<(Millis, u64)>,
}

impl HelloGate {
    /// An empty gate.
    pub fn new(config: HelloGateConfig) -> HelloGate {
        HelloGate {
            config,
            since: HashMap::new(),
            order: BTreeSet::new(),
        }
    }

    /// The limits.
    pub fn config(&self) -> &HelloGateConfig {
        &self.config
    }

    /// A connection opened at `now` and waits for its `Hello`.
    pub fn opened(&mut self, key: u64, now: Millis) {
        if let Some(old) = self.since.insert(key, now) {
            self.order.remove(&(old, key));
        }
        self.order.insert((now, key));
    }

    /// The connection sent its `Hello`, or ended: it no longer waits.
    pub fn passed(&mut self, key: u64) {
        if let Some(t) = self.since.remove(&key) {
            self.order.remove(&(t, key));
        }
    }

    /// Connections waiting now.
    pub fn waiting(&self) -> usize {
        self.since.len()
    }

    /// When [`HelloGate::expire`] next has something to close, at the latest.
    pub fn next_deadline(&self) -> Option<Millis> {
        let &(oldest, _) = self.order.first()?;
        let t = if self.since.len() > self.config.max_waiting {
            self.config.crowded_timeout
        } else {
            self.config.timeout
        };
        Some(oldest + t)
    }

    /// Removes and returns the connections to close at `now`, oldest first.
    pub fn expire(&mut self, now: Millis) -> Vec<Expired> {
        let mut out = Vec::new();
        while let Some(&(t, key)) = self.order.first() {
            let waited = now.since(t);
            let over = waited >= self.config.timeout;
            let crowded = self.since.len() > self.config.max_waiting;
            let early = crowded && waited >= self.config.crowded_timeout;
            if !over && !early {
                break;
            }
            self.passed(key);
            let crowded = early && !over;
            out.push(Expired {
                key,
                waited,
                limit: if crowded {
                    self.config.crowded_timeout
                } else {
                    self.config.timeout
                },
                crowded,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_waiting: usize) -> HelloGate {
        HelloGate::new(HelloGateConfig {
            timeout: Duration::from_secs(60),
            crowded_timeout: Duration::from_secs(10),
            max_waiting,
        })
    }

    #[test]
    fn a_slow_device_may_wait_until_the_timeout_when_the_gate_is_quiet() {
        let mut g = gate(100);
        let t = Millis::from_secs(1000);
        g.opened(1, t);
        g.opened(2, t + Duration::from_secs(5));
        assert!(g.expire(t + Duration::from_secs(59)).is_empty());
        assert_eq!(g.next_deadline(), Some(t + Duration::from_secs(60)));
        g.passed(2);
        let gone = g.expire(t + Duration::from_secs(60));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].key, 1);
        assert!(!gone[0].crowded);
        assert!(
            gone[0].message().contains("no Hello within 60 s"),
            "{}",
            gone[0].message()
        );
        assert_eq!(g.waiting(), 0);
        assert_eq!(g.next_deadline(), None);
    }

    #[test]
    fn a_crowded_gate_closes_the_oldest_early_until_it_is_not_crowded() {
        let mut g = gate(3);
        let t = Millis::from_secs(1000);
        for k in 0..6u64 {
            g.opened(k, t + Duration::from_secs(k));
        }
        assert_eq!(g.next_deadline(), Some(t + Duration::from_secs(10)));
        // At t+12 s, connections 0, 1 and 2 waited 10 s or more; closing
        // them, oldest first, brings the gate down to 3: no longer crowded.
        let gone = g.expire(t + Duration::from_secs(12));
        let keys: Vec<u64> = gone.iter().map(|e| e.key).collect();
        assert_eq!(keys, [0, 1, 2]);
        assert!(gone.iter().all(|e| e.crowded));
        assert!(gone[0].message().contains("crowded"));
        assert_eq!(g.waiting(), 3);
        // Not crowded any more: the rest wait for the full timeout.
        assert!(g.expire(t + Duration::from_secs(30)).is_empty());
        assert_eq!(g.next_deadline(), Some(t + Duration::from_secs(63)));
    }
}
