//! A point-in-time view of a running server's counters, and the process
//! figures (memory, CPU) an operator or a benchmark wants beside them.
//! `lanyard-server serve --stats-file FILE` keeps one up to date on disk.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::admission::AdmissionStats;

/// The server's counters at one moment. Fields missing from a file (written
/// by another version) read as zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsSnapshot {
    /// When it was taken, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Connections admitted and not yet ended.
    pub open_connections: usize,
    /// Device sessions open in the core.
    pub sessions: usize,
    /// UDP payload bytes sent to devices, all connections ever.
    pub bytes_sent: u64,
    /// UDP payload bytes received from devices, all connections ever.
    pub bytes_received: u64,
    /// Admission control counters.
    pub admission: AdmissionStats,
    /// Changes accepted from devices.
    pub changes_accepted: u64,
    /// Changes refused.
    pub changes_refused: u64,
    /// Fan-out frames encoded once for several devices.
    pub broadcast_frames: u64,
    /// Per-device sends of those shared frames.
    pub broadcast_sends: u64,
    /// Grouped flushes of the store.
    pub flushes: u64,
    /// Writes those flushes made durable (writes per flush = this / `flushes`).
    pub flushed_writes: u64,
    /// Resident memory now, bytes (Linux; 0 elsewhere).
    pub rss_bytes: u64,
    /// Peak resident memory of the process, bytes (Linux; 0 elsewhere).
    pub peak_rss_bytes: u64,
    /// CPU time the process has used, user plus system, seconds (Linux; 0 elsewhere).
    pub cpu_seconds: f64,
    /// Where the bytes sent went, all connections ever.
    pub traffic: TrafficStats,
    /// The most bytes of frames one device's outbox held.
    pub outbox_peak_bytes: u64,
    /// Datagrams the kernel dropped on the server's full UDP receive buffer.
    #[serde(default)]
    pub udp_receive_drops: u64,
}

/// Where the server's bytes go: what QUIC sent besides the protocol's frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrafficStats {
    /// Connections that completed their handshake.
    pub handshakes: u64,
    /// Bytes of the protocol's frames written to devices (the rest of
    /// `bytes_sent` is QUIC and TLS: handshakes, acknowledgements,
    /// keep-alives, headers and retransmissions).
    pub frame_bytes: u64,
    /// Bytes of packets declared lost (their data is sent again).
    pub lost_bytes: u64,
    /// UDP datagrams sent.
    pub datagrams: u64,
    /// PING frames sent (keep-alives).
    pub ping_frames: u64,
    /// ACK frames sent.
    pub ack_frames: u64,
    /// CRYPTO frames sent (TLS handshakes).
    pub crypto_frames: u64,
    /// STREAM frames sent.
    pub stream_frames: u64,
}

impl TrafficStats {
    /// What was sent since `earlier` (counters that went down, as when a
    /// live connection's figures move to the closed ones, count as zero).
    pub fn since(&self, earlier: &TrafficStats) -> TrafficStats {
        TrafficStats {
            handshakes: self.handshakes.saturating_sub(earlier.handshakes),
            frame_bytes: self.frame_bytes.saturating_sub(earlier.frame_bytes),
            lost_bytes: self.lost_bytes.saturating_sub(earlier.lost_bytes),
            datagrams: self.datagrams.saturating_sub(earlier.datagrams),
            ping_frames: self.ping_frames.saturating_sub(earlier.ping_frames),
            ack_frames: self.ack_frames.saturating_sub(earlier.ack_frames),
            crypto_frames: self.crypto_frames.saturating_sub(earlier.crypto_frames),
            stream_frames: self.stream_frames.saturating_sub(earlier.stream_frames),
        }
    }

    /// Adds another server's figures.
    pub fn add(&mut self, o: &TrafficStats) {
        self.handshakes += o.handshakes;
        self.frame_bytes += o.frame_bytes;
        self.lost_bytes += o.lost_bytes;
        self.datagrams += o.datagrams;
        self.ping_frames += o.ping_frames;
        self.ack_frames += o.ack_frames;
        self.crypto_frames += o.crypto_frames;
        self.stream_frames += o.stream_frames;
    }

    /// Adds one connection's figures.
    pub fn add_connection(&mut self, s: &quinn::ConnectionStats) {
        self.lost_bytes += s.path.lost_bytes;
        self.datagrams += s.udp_tx.datagrams;
        self.ping_frames += s.frame_tx.ping;
        self.ack_frames += s.frame_tx.acks;
        self.crypto_frames += s.frame_tx.crypto;
        self.stream_frames += s.frame_tx.stream;
    }
}

/// Why a stats file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// The file system.
    #[error("stats file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a stats snapshot.
    #[error("stats file {path} is not a stats snapshot: {source}")]
    Format {
        /// The file.
        path: String,
        /// The error.
        source: serde_json::Error,
    },
}

impl StatsSnapshot {
    /// The figures of several servers as one (a cluster's nodes): counters,
    /// memory and CPU added, peaks of one device's outbox the highest, the
    /// time the oldest.
    pub fn merge(&mut self, o: &StatsSnapshot) {
        self.unix_ms = self.unix_ms.min(o.unix_ms);
        self.open_connections += o.open_connections;
        self.sessions += o.sessions;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.admission.add(&o.admission);
        self.changes_accepted += o.changes_accepted;
        self.changes_refused += o.changes_refused;
        self.broadcast_frames += o.broadcast_frames;
        self.broadcast_sends += o.broadcast_sends;
        self.flushes += o.flushes;
        self.flushed_writes += o.flushed_writes;
        self.rss_bytes += o.rss_bytes;
        self.peak_rss_bytes += o.peak_rss_bytes;
        self.cpu_seconds += o.cpu_seconds;
        self.traffic.add(&o.traffic);
        self.outbox_peak_bytes = self.outbox_peak_bytes.max(o.outbox_peak_bytes);
        self.udp_receive_drops += o.udp_receive_drops;
    }

    /// Writes the snapshot as JSON, atomically (a reader never sees half a file).
    pub fn write(&self, path: &Path) -> Result<(), StatsError> {
        let io = |source| StatsError::Io {
            path: path.display().to_string(),
            source,
        };
        let body = serde_json::to_vec_pretty(self).map_err(|source| StatsError::Format {
            path: path.display().to_string(),
            source,
        })?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, body).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a snapshot written by [`StatsSnapshot::write`].
    pub fn read(path: &Path) -> Result<StatsSnapshot, StatsError> {
        let body = std::fs::read(path).map_err(|source| StatsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_slice(&body).map_err(|source| StatsError::Format {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Memory and CPU of a process, read from `/proc` (zeros where unavailable).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFigures {
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Peak resident memory, bytes.
    pub peak_rss_bytes: u64,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
}

/// `/proc` reports CPU times in clock ticks of `USER_HZ`, 100 on Linux.
const USER_HZ: f64 = 100.0;

impl ProcessFigures {
    /// Figures of this process.
    pub fn own() -> ProcessFigures {
        Self::of("self")
    }

    /// Figures of another process by pid.
    pub fn of_pid(pid: u32) -> ProcessFigures {
        Self::of(&pid.to_string())
    }

    fn of(which: &str) -> ProcessFigures {
        let status = std::fs::read_to_string(format!("/proc/{which}/status")).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .map_or(0, |n| n * 1024)
        };
        // Fields 14 and 15 (utime, stime) come after the command name, which
        // is in parentheses and may itself hold spaces.
        let stat = std::fs::read_to_string(format!("/proc/{which}/stat")).unwrap_or_default();
        let ticks: u64 = stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        ProcessFigures {
            rss_bytes: kib("VmRSS:"),
            peak_rss_bytes: kib("VmHWM:"),
            cpu_seconds: ticks as f64 / USER_HZ,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_since_is_the_difference_and_never_underflows() {
        let earlier = TrafficStats {
            handshakes: 3,
            frame_bytes: 1000,
            lost_bytes: 50,
            ..TrafficStats::default()
        };
        let now = TrafficStats {
            handshakes: 5,
            frame_bytes: 1700,
            lost_bytes: 20,
            ack_frames: 9,
            ..TrafficStats::default()
        };
        let d = now.since(&earlier);
        assert_eq!((d.handshakes, d.frame_bytes, d.ack_frames), (2, 700, 9));
        assert_eq!(d.lost_bytes, 0);
    }

    #[test]
    fn a_snapshot_survives_the_file_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stats.json");
        let s = StatsSnapshot {
            unix_ms: 7,
            open_connections: 3,
            bytes_sent: 1234,
            cpu_seconds: 1.5,
            ..StatsSnapshot::default()
        };
        s.write(&path).expect("write");
        assert_eq!(StatsSnapshot::read(&path).expect("read"), s);
        std::fs::write(&path, b"{not json").expect("write");
        let e = StatsSnapshot::read(&path).expect_err("garbage is an error");
        assert!(e.to_string().contains("not a stats snapshot"), "{e}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_memory_and_cpu_figures() {
        // Burn CPU until a clock tick is counted (generous deadline: loaded machines).
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let mut f = ProcessFigures::own();
        while f.cpu_seconds == 0.0 && start.elapsed() < std::time::Duration::from_secs(20) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            f = ProcessFigures::own();
        }
        assert!(f.rss_bytes > 0 && f.peak_rss_bytes >= f.rss_bytes, "{f:?}");
        assert!(f.cpu_seconds > 0.0, "{f:?}");
    }
}
