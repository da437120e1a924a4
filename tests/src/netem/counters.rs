//! What the proxy saw and did: packets and bytes in and out per direction,
//! drops by cause, links, rebinds and outages.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counters of one direction (summed over every link).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionCounters {
    /// Packets received by the proxy in this direction.
    pub packets_in: u64,
    /// Payload bytes received by the proxy in this direction.
    pub bytes_in: u64,
    /// Packets the proxy sent on.
    pub packets_out: u64,
    /// Payload bytes the proxy sent on.
    pub bytes_out: u64,
    /// Packets dropped by the Gilbert–Elliott loss model.
    pub dropped_loss: u64,
    /// Packets dropped because the bottleneck queue was full (tail drop).
    pub dropped_queue: u64,
    /// Packets dropped because their link was in an outage.
    pub dropped_outage: u64,
    /// Packets the proxy failed to send (socket errors).
    pub send_errors: u64,
}

impl DirectionCounters {
    /// Packets dropped on purpose, every cause together.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_queue + self.dropped_outage
    }

    /// Packets received but neither sent nor dropped yet (still delayed or queued).
    pub fn in_flight(&self) -> u64 {
        self.packets_in
            .saturating_sub(self.packets_out + self.dropped() + self.send_errors)
    }
}

/// A snapshot of every counter of a proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Toward the server.
    pub upstream: DirectionCounters,
    /// Toward the clients.
    pub downstream: DirectionCounters,
    /// Links created (one per client source address).
    pub links: u64,
    /// NAT rebinds done (random and requested).
    pub rebinds: u64,
    /// Outages started (random per-link ones, and each requested one).
    pub outages: u64,
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<11}{:>12}{:>14}{:>12}{:>14}{:>11}{:>11}{:>12}{:>12}",
            "direction",
            "packets in",
            "bytes in",
            "packets out",
            "bytes out",
            "drop loss",
            "drop queue",
            "drop outage",
            "send errors"
        )?;
        for (name, d) in [
            ("upstream", &self.upstream),
            ("downstream", &self.downstream),
        ] {
            writeln!(
                f,
                "{:<11}{:>12}{:>14}{:>12}{:>14}{:>11}{:>11}{:>12}{:>12}",
                name,
                d.packets_in,
                d.bytes_in,
                d.packets_out,
                d.bytes_out,
                d.dropped_loss,
                d.dropped_queue,
                d.dropped_outage,
                d.send_errors
            )?;
        }
        write!(
            f,
            "links {}  rebinds {}  outages {}",
            self.links, self.rebinds, self.outages
        )
    }
}

/// The live counters of one direction.
#[derive(Debug, Default)]
pub(crate) struct DirectionCells {
    packets_in: AtomicU64,
    bytes_in: AtomicU64,
    packets_out: AtomicU64,
    bytes_out: AtomicU64,
    pub(crate) dropped_loss: AtomicU64,
    pub(crate) dropped_queue: AtomicU64,
    pub(crate) dropped_outage: AtomicU64,
    pub(crate) send_errors: AtomicU64,
}

impl DirectionCells {
    pub(crate) fn received(&self, bytes: usize) {
        self.packets_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.packets_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> DirectionCounters {
        DirectionCounters {
            packets_in: self.packets_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            packets_out: self.packets_out.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            dropped_loss: self.dropped_loss.load(Ordering::Relaxed),
            dropped_queue: self.dropped_queue.load(Ordering::Relaxed),
            dropped_outage: self.dropped_outage.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
        }
    }
}

/// Every live counter of a proxy.
#[derive(Debug, Default)]
pub(crate) struct CounterCells {
    pub(crate) upstream: DirectionCells,
    pub(crate) downstream: DirectionCells,
    pub(crate) links: AtomicU64,
    pub(crate) rebinds: AtomicU64,
    pub(crate) outages: AtomicU64,
}

impl CounterCells {
    pub(crate) fn snapshot(&self) -> Counters {
        Counters {
            upstream: self.upstream.snapshot(),
            downstream: self.downstream.snapshot(),
            links: self.links.load(Ordering::Relaxed),
            rebinds: self.rebinds.load(Ordering::Relaxed),
            outages: self.outages.load(Ordering::Relaxed),
        }
    }
}

/// Adds one to a counter.
pub(crate) fn bump(cell: &AtomicU64, n: u64) {
    cell.fetch_add(n, Ordering::Relaxed);
}
