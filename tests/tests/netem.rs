//! Tests of `lanyard-netem`, the UDP impairment proxy: its models on their
//! own (sans-IO, exact statistics over many draws), then the real proxy on
//! loopback between client sockets and a UDP echo server, showing that the
//! realized loss, rate and delay match the configuration within the
//! tolerances named in each test.
//!
//! Everything is seeded: set `LANYARD_NETEM_SEED` to replay another seed;
//! each test prints its seed (shown on failure) and names it in its asserts.
//! Timed checks only bound what the machine's speed cannot make better
//! (a timer never fires early), with generous slack for a loaded machine.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lanyard_tests::netem::model::{rng_for, GilbertElliott, Outages, PoissonTimer, Shaper, Stream};
use lanyard_tests::netem::{Counters, Netem, NetemConfig, Profile, Profiles, REPO_PROFILES_PATH};
use tokio::net::UdpSocket;

/// Every deadline for a condition: generous, for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);

fn seed() -> u64 {
    let seed = std::env::var("LANYARD_NETEM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6c61_6e79);
    println!("seed = {seed} (replay with LANYARD_NETEM_SEED={seed})");
    seed
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds since the process's base instant (a clock shared by the
/// client and the echo server, which live in this process).
fn now_nanos() -> u64 {
    base().elapsed().as_nanos() as u64
}

/// A test datagram: sequence number, send time, padding up to `size` bytes.
fn packet(seq: u64, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size.max(16)];
    data[..8].copy_from_slice(&seq.to_le_bytes());
    data[8..16].copy_from_slice(&now_nanos().to_le_bytes());
    data
}

fn parse(data: &[u8]) -> (u64, u64) {
    let seq = u64::from_le_bytes(data[..8].try_into().unwrap());
    let sent = u64::from_le_bytes(data[8..16].try_into().unwrap());
    (seq, sent)
}

/// One datagram as a receiver saw it.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    seq: u64,
    /// Nanoseconds since the base when it was sent by the client.
    sent: u64,
    /// Nanoseconds since the base when it arrived.
    at: u64,
    from: SocketAddr,
}

impl Arrival {
    fn delay_ms(&self) -> f64 {
        (self.at.saturating_sub(self.sent)) as f64 / 1e6
    }
}

/// A receiving socket that records every datagram, and echoes it if asked.
struct Recorder {
    socket: Arc<UdpSocket>,
    log: Arc<Mutex<Vec<Arrival>>>,
    count: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn bind(echo: bool) -> Recorder {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (socket, log, count) = (socket.clone(), log.clone(), count.clone());
            async move {
                let mut buf = vec![0u8; 65_536];
                loop {
                    let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                        continue;
                    };
                    let at = now_nanos();
                    let (seq, sent) = parse(&buf[..n]);
                    log.lock().unwrap().push(Arrival {
                        seq,
                        sent,
                        at,
                        from,
                    });
                    if echo {
                        let _ = socket.send_to(&buf[..n], from).await;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Recorder {
            socket,
            log,
            count,
            task,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.log.lock().unwrap().clone()
    }

    async fn send(&self, to: SocketAddr, seq: u64, size: usize) {
        self.socket.send_to(&packet(seq, size), to).await.unwrap();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `cond` every few milliseconds until it holds; panics (naming the
/// seed) after [`DEADLINE`].
async fn wait_until(seed: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < DEADLINE,
            "seed {seed}: timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn start(upstream: SocketAddr, profile: Profile, seed: u64, time_scale: f64) -> Netem {
    Netem::start(NetemConfig {
        seed,
        time_scale,
        ..NetemConfig::new(upstream, profile)
    })
    .await
    .unwrap()
}

/// Waits until every packet the proxy received has been delivered or dropped.
async fn settle(seed: u64, netem: &Netem) {
    wait_until(seed, "the proxy to empty its queues", || {
        let c = netem.counters();
        c.upstream.in_flight() == 0 && c.downstream.in_flight() == 0
    })
    .await;
}

// ---------------------------------------------------------------- profiles --

#[test]
fn repo_copy_of_profiles_equals_shared_file() {
    let shared = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/venue-profiles.toml"
    );
    let repo = std::fs::read_to_string(REPO_PROFILES_PATH).unwrap();
    match std::fs::read_to_string(shared) {
        Ok(shared_text) => assert_eq!(
            repo, shared_text,
            "tests/data/venue-profiles.toml differs from {shared}: copy it again verbatim"
        ),
        Err(err) => println!("note: {shared} not readable ({err}); comparison skipped"),
    }
    assert_eq!(repo, lanyard_tests::netem::BUILTIN_PROFILES_TOML);
}

#[test]
fn profiles_parse_every_field_and_reject_bad_values() {
    let profiles = Profiles::builtin().unwrap();
    assert_eq!(
        profiles.names().collect::<Vec<_>>(),
        ["busy", "collapsing", "overloaded"]
    );
    let overloaded = profiles.get("overloaded").unwrap();
    assert_eq!(
        *overloaded,
        Profile {
            loss: 0.08,
            loss_burst: 4.0,
            rtt_ms: 300.0,
            jitter_ms: 150.0,
            rate_kbit: 250.0,
            queue_ms: 1000.0,
            outage_every_s: 300.0,
            outage_s: [5.0, 30.0],
            rebind_every_s: 900.0,
        }
    );
    let err = profiles.get("stadium").unwrap_err().to_string();
    assert!(
        err.contains("stadium") && err.contains("busy, collapsing, overloaded"),
        "{err}"
    );

    let bad = [
        Profile {
            loss: 1.0,
            ..Profile::clean()
        },
        Profile {
            loss: -0.1,
            ..Profile::clean()
        },
        Profile {
            loss_burst: 0.5,
            ..Profile::clean()
        },
        // Bursts of mean 1 separated by a good packet cannot lose 60%.
        Profile {
            loss: 0.6,
            loss_burst: 1.0,
            ..Profile::clean()
        },
        Profile {
            rtt_ms: f64::NAN,
            ..Profile::clean()
        },
        Profile {
            jitter_ms: -1.0,
            ..Profile::clean()
        },
        Profile {
            rate_kbit: f64::INFINITY,
            ..Profile::clean()
        },
        Profile {
            outage_s: [5.0, 1.0],
            ..Profile::clean()
        },
        Profile {
            rtt_ms: 1e12,
            ..Profile::clean()
        },
    ];
    for profile in bad {
        assert!(profile.validate().is_err(), "accepted {profile}");
    }
    let unknown_field = "[x]\nloss = 0.1\nloss_burst = 1\nrtt_ms = 0\njitter_ms = 0\nrate_kbit = 0\n\
                         queue_ms = 0\noutage_every_s = 0\noutage_s = [0, 0]\nrebind_every_s = 0\nlos = 1\n";
    assert!(Profiles::parse(unknown_field).is_err());
}

// ------------------------------------------------------ models (sans-IO) --

/// Over 10^6 packets per profile, the realized loss is within 0.01 of `loss`
/// (more than 6 standard deviations of the bursty estimate) and the mean
/// burst length within 5% of `loss_burst` (more than 8 standard deviations).
#[test]
fn gilbert_elliott_matches_loss_and_burst_of_every_profile() {
    let seed = seed();
    for name in ["busy", "overloaded", "collapsing"] {
        let profiles = Profiles::builtin().unwrap();
        let profile = profiles.get(name).unwrap();
        let mut chain = GilbertElliott::new(
            profile.loss,
            profile.loss_burst,
            rng_for(seed, 0, Stream::UpstreamLoss),
        );
        let n = 1_000_000;
        let (mut lost, mut bursts, mut previous) = (0u64, 0u64, false);
        for _ in 0..n {
            let is_lost = chain.is_lost();
            lost += is_lost as u64;
            bursts += (is_lost && !previous) as u64;
            previous = is_lost;
        }
        let loss = lost as f64 / n as f64;
        let burst = lost as f64 / bursts as f64;
        println!(
            "{name}: loss {loss:.4} (want {}), mean burst {burst:.2} (want {})",
            profile.loss, profile.loss_burst
        );
        assert!(
            (loss - profile.loss).abs() < 0.01,
            "seed {seed} {name}: loss {loss}"
        );
        assert!(
            (burst / profile.loss_burst - 1.0).abs() < 0.05,
            "seed {seed} {name}: mean burst {burst}"
        );
    }
    // Same seed, same decisions; another link index, other decisions.
    let decisions = |link: u64| {
        let mut chain = GilbertElliott::new(0.2, 3.0, rng_for(seed, link, Stream::UpstreamLoss));
        (0..2000).map(|_| chain.is_lost()).collect::<Vec<_>>()
    };
    assert_eq!(decisions(0), decisions(0));
    assert_ne!(decisions(0), decisions(1));
}

/// The schedules' means over 20,000 events are within 3% of the
/// configuration (about 4 standard deviations); lengths stay in range.
#[test]
fn outage_and_rebind_schedules_match_their_means() {
    let seed = seed();
    let t0 = tokio::time::Instant::now();
    let mut outages = Outages::new(
        t0,
        Duration::from_secs(300),
        Duration::from_secs(5),
        Duration::from_secs(30),
        rng_for(seed, 0, Stream::Outage),
    );
    let n = 20_000;
    let (mut gaps, mut lengths, mut last_end) = (0.0, 0.0, t0);
    for _ in 0..n {
        let start = outages.next_start().unwrap();
        assert!(!outages.covers(start));
        assert_eq!(outages.advance(start), 1);
        let (s, e) = outages.current().unwrap();
        assert_eq!(s, start);
        assert!(outages.covers(s) && !outages.covers(e));
        let length = (e - s).as_secs_f64();
        assert!((5.0..=30.0).contains(&length), "outage of {length} s");
        gaps += (s - last_end).as_secs_f64();
        lengths += length;
        last_end = e;
    }
    let (gap, length) = (gaps / n as f64, lengths / n as f64);
    println!("outages: mean gap {gap:.1} s (want 300), mean length {length:.2} s (want 17.5)");
    assert!(
        (gap / 300.0 - 1.0).abs() < 0.03,
        "seed {seed}: mean gap {gap}"
    );
    assert!(
        (length / 17.5 - 1.0).abs() < 0.03,
        "seed {seed}: mean length {length}"
    );

    let mut rebinds = PoissonTimer::new(
        t0,
        Duration::from_secs(900),
        rng_for(seed, 0, Stream::Rebind),
    );
    let mut last = rebinds.next().unwrap();
    let horizon = last + Duration::from_secs(900 * n);
    let mut count = 0u64;
    while let Some(next) = rebinds.next().filter(|next| *next < horizon) {
        count += rebinds.poll(next);
        last = next;
    }
    let mean = (last - t0).as_secs_f64() / count as f64;
    println!("rebinds: mean interval {mean:.1} s (want 900)");
    assert!(
        (mean / 900.0 - 1.0).abs() < 0.03,
        "seed {seed}: mean rebind interval {mean}"
    );
    let never = PoissonTimer::new(t0, Duration::ZERO, rng_for(seed, 0, Stream::Rebind));
    assert_eq!(never.next(), None);
}

#[test]
fn shaper_serializes_at_the_rate_and_tail_drops_beyond_the_queue() {
    let t0 = tokio::time::Instant::now();
    // 250 kbit/s: a 1000-byte packet takes 32 ms; a 100 ms queue.
    let mut shaper = Shaper::new(250.0, 100.0);
    let departures: Vec<_> = (0..6).map(|_| shaper.offer(t0, 1000)).collect();
    let ms = |d: Option<tokio::time::Instant>| d.map(|d| (d - t0).as_micros());
    assert_eq!(ms(departures[0]), Some(32_000));
    assert_eq!(ms(departures[1]), Some(64_000));
    assert_eq!(ms(departures[2]), Some(96_000));
    assert_eq!(departures[3], None, "128 ms > 100 ms queue: tail drop");
    assert_eq!(departures[4], None);
    // Once drained, a packet larger than the whole queue is still taken.
    let later = t0 + Duration::from_secs(1);
    assert_eq!(
        shaper.offer(later, 10_000).map(|d| d - later),
        Some(Duration::from_millis(320))
    );
    let mut unlimited = Shaper::new(0.0, 0.0);
    assert_eq!(unlimited.offer(t0, 1_000_000), Some(t0));
}

// ------------------------------------------------------- proxy on loopback --

/// Sends `n` small numbered packets through a proxy with `profile` to an
/// echo server, at most 64 unaccounted for at a time (so no socket buffer
/// overflows: every loss is the proxy's). Returns the sequence numbers the
/// server got, those the client got back, and the counters.
async fn run_loss(profile: Profile, seed: u64, n: u64) -> (Vec<u64>, Vec<u64>, Counters) {
    let server = Recorder::bind(true).await;
    let client = Recorder::bind(false).await;
    let netem = start(server.addr(), profile, seed, 1.0).await;
    let to = netem.local_addr();
    let mut sent = 0;
    while sent < n {
        let batch = 64.min(n - sent);
        for seq in sent..sent + batch {
            client.send(to, seq, 32).await;
        }
        sent += batch;
        wait_until(seed, "a batch to go through", || {
            let c = netem.counters();
            server.count() + c.upstream.dropped() >= sent
                && client.count() + c.downstream.dropped() >= server.count()
        })
        .await;
    }
    settle(seed, &netem).await;
    let counters = netem.stop().await;
    let at_server = server.arrivals().iter().map(|a| a.seq).collect();
    let at_client = client.arrivals().iter().map(|a| a.seq).collect();
    (at_server, at_client, counters)
}

/// Mean length of the runs of missing numbers in `0..n`.
fn mean_burst(received: &[u64], n: u64) -> f64 {
    let got: HashSet<u64> = received.iter().copied().collect();
    let (mut lost, mut bursts, mut previous) = (0u64, 0u64, false);
    for seq in 0..n {
        let is_lost = !got.contains(&seq);
        lost += is_lost as u64;
        bursts += (is_lost && !previous) as u64;
        previous = is_lost;
    }
    lost as f64 / bursts.max(1) as f64
}

/// loss 0.10 in bursts of mean 3, 20,000 packets: realized loss within 0.02
/// of 0.10 each direction (about 4.5 standard deviations of the bursty
/// estimate), mean burst length within 20% of 3 (about 6 standard deviations),
/// and every loss is a counted Gilbert–Elliott drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realized_loss_within_0_02_and_burst_length_within_20_percent() {
    let seed = seed();
    let n = 20_000;
    let profile = Profile {
        loss: 0.10,
        loss_burst: 3.0,
        ..Profile::clean()
    };
    let (at_server, at_client, c) = run_loss(profile, seed, n).await;
    let up = 1.0 - at_server.len() as f64 / n as f64;
    let down = 1.0 - at_client.len() as f64 / at_server.len() as f64;
    let burst = mean_burst(&at_server, n);
    println!(
        "upstream loss {up:.4}, downstream loss {down:.4}, upstream mean burst {burst:.2}\n{c}"
    );
    assert!((up - 0.10).abs() < 0.02, "seed {seed}: upstream loss {up}");
    assert!(
        (down - 0.10).abs() < 0.02,
        "seed {seed}: downstream loss {down}"
    );
    assert!(
        (burst / 3.0 - 1.0).abs() < 0.2,
        "seed {seed}: mean burst {burst}"
    );
    assert_eq!(c.upstream.packets_in, n);
    assert_eq!(c.upstream.dropped_loss, n - at_server.len() as u64);
    assert_eq!(c.upstream.packets_out, at_server.len() as u64);
    assert_eq!(
        c.downstream.dropped_loss,
        (at_server.len() - at_client.len()) as u64
    );
    assert_eq!(c.upstream.dropped_queue + c.upstream.dropped_outage, 0);
    assert_eq!(c.upstream.bytes_in, 32 * n);
    assert_eq!(c.links, 1);
}

/// The same seed drops exactly the same packets in both directions; another
/// seed drops others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_gives_the_same_drop_pattern() {
    let seed = seed();
    let profile = Profile {
        loss: 0.2,
        loss_burst: 2.0,
        ..Profile::clean()
    };
    let sorted = |mut v: Vec<u64>| {
        v.sort_unstable();
        v
    };
    let (s1, c1, _) = run_loss(profile.clone(), seed, 2000).await;
    let (s2, c2, _) = run_loss(profile.clone(), seed, 2000).await;
    let (s3, _, _) = run_loss(profile, seed.wrapping_add(1), 2000).await;
    assert_eq!(
        sorted(s1.clone()),
        sorted(s2),
        "seed {seed}: upstream drops differ"
    );
    assert_eq!(
        sorted(c1),
        sorted(c2),
        "seed {seed}: downstream drops differ"
    );
    assert_ne!(
        sorted(s1),
        sorted(s3),
        "seed {seed}: another seed dropped the same packets"
    );
}

/// 250 kbit/s with a 500 ms queue, offered 800 kbit/s (bursts of ten
/// 1000-byte packets every 100 ms for 3 s): the rate realized at the server
/// is within 10% of 250 kbit/s, the queue overflows into tail drops, and the
/// worst one-way delay shows the full queue (between 400 ms and 500 ms + 150 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realized_rate_within_10_percent_and_queue_overflow_tail_drops() {
    let seed = seed();
    let server = Recorder::bind(true).await;
    let client = Recorder::bind(false).await;
    let profile = Profile {
        rate_kbit: 250.0,
        queue_ms: 500.0,
        ..Profile::clean()
    };
    let netem = start(server.addr(), profile, seed, 1.0).await;
    let mut seq = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..30 {
        tick.tick().await;
        for _ in 0..10 {
            client.send(netem.local_addr(), seq, 1000).await;
            seq += 1;
        }
    }
    settle(seed, &netem).await;
    let c = netem.stop().await;
    let arrivals = server.arrivals();
    let (first, last) = (arrivals[0].at, arrivals[arrivals.len() - 1].at);
    let bits = (arrivals.len() - 1) as f64 * 1000.0 * 8.0;
    let kbit = bits / ((last - first) as f64 / 1e9) / 1000.0;
    let worst = arrivals.iter().map(Arrival::delay_ms).fold(0.0, f64::max);
    println!(
        "{} of {seq} packets in {:.2} s: {kbit:.1} kbit/s (want 250), worst delay {worst:.0} ms\n{c}",
        arrivals.len(),
        (last - first) as f64 / 1e9
    );
    assert!(
        (kbit / 250.0 - 1.0).abs() < 0.10,
        "seed {seed}: realized {kbit} kbit/s"
    );
    assert!(c.upstream.dropped_queue > 0, "seed {seed}: no tail drop");
    assert_eq!(c.upstream.dropped_queue + arrivals.len() as u64, seq);
    assert!(
        (400.0..650.0).contains(&worst),
        "seed {seed}: worst delay {worst} ms"
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Counts the packets that arrive after a packet sent later than them.
fn reordered(arrivals: &[Arrival]) -> usize {
    let mut highest = None;
    let mut count = 0;
    for a in arrivals {
        if highest.is_some_and(|h| a.seq < h) {
            count += 1;
        }
        highest = highest.max(Some(a.seq));
    }
    count
}

/// rtt 200 ms, jitter 100 ms, 300 packets 5 ms apart: the median one-way
/// delay is rtt/2 + jitter/2 = 150 ms within -10/+30 ms, no packet beats
/// rtt/2, the 10th–90th percentile spread is about 80 ms (60 to 110), the
/// median round trip is rtt + jitter = 300 ms within -15/+45 ms, and with
/// jitter far above the spacing at least 20% of the packets are reordered
/// (about 45% expected); without jitter, none is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realized_delay_matches_rtt_and_jitter_and_jitter_reorders() {
    let seed = seed();
    let server = Recorder::bind(true).await;
    let client = Recorder::bind(false).await;
    let profile = Profile {
        rtt_ms: 200.0,
        jitter_ms: 100.0,
        ..Profile::clean()
    };
    let netem = start(server.addr(), profile, seed, 1.0).await;
    let n = 300;
    for seq in 0..n {
        client.send(netem.local_addr(), seq, 100).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_until(seed, "every echo", || client.count() == n).await;
    let arrivals = server.arrivals();
    let mut one_way: Vec<f64> = arrivals.iter().map(Arrival::delay_ms).collect();
    one_way.sort_by(f64::total_cmp);
    let mut rtt: Vec<f64> = client.arrivals().iter().map(Arrival::delay_ms).collect();
    rtt.sort_by(f64::total_cmp);
    let (median, p10, p90) = (
        percentile(&one_way, 0.5),
        percentile(&one_way, 0.1),
        percentile(&one_way, 0.9),
    );
    let rtt_median = percentile(&rtt, 0.5);
    let out_of_order = reordered(&arrivals);
    println!(
        "one-way: min {:.1} p10 {p10:.1} median {median:.1} p90 {p90:.1} max {:.1} ms; \
         rtt median {rtt_median:.1} ms; {out_of_order} of {n} reordered",
        one_way[0],
        one_way[one_way.len() - 1]
    );
    assert!(
        (140.0..180.0).contains(&median),
        "seed {seed}: median one-way {median} ms"
    );
    assert!(
        one_way[0] >= 99.9,
        "seed {seed}: a packet beat rtt/2: {} ms",
        one_way[0]
    );
    assert!(
        (60.0..110.0).contains(&(p90 - p10)),
        "seed {seed}: spread {} ms",
        p90 - p10
    );
    assert!(
        (285.0..345.0).contains(&rtt_median),
        "seed {seed}: median rtt {rtt_median} ms"
    );
    assert!(
        out_of_order >= n as usize / 5,
        "seed {seed}: only {out_of_order} reordered"
    );
    drop(netem);

    // Control: the same spacing without jitter keeps the order.
    let server = Recorder::bind(true).await;
    let profile = Profile {
        rtt_ms: 50.0,
        ..Profile::clean()
    };
    let netem = start(server.addr(), profile, seed, 1.0).await;
    for seq in 0..100 {
        client.send(netem.local_addr(), seq, 100).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_until(seed, "every packet", || server.count() == 100).await;
    assert_eq!(
        reordered(&server.arrivals()),
        0,
        "seed {seed}: reordered without jitter"
    );
}

/// A 700 ms outage requested while a packet goes every 10 ms: nothing reaches
/// the server or the client from 50 ms after it starts until it ends, traffic
/// flows before and after, and the drops are counted as outage drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_drops_everything_for_its_duration() {
    let seed = seed();
    let server = Recorder::bind(true).await;
    let client = Recorder::bind(false).await;
    let profile = Profile {
        rtt_ms: 20.0,
        ..Profile::clean()
    };
    let netem = start(server.addr(), profile, seed, 1.0).await;
    let length = Duration::from_millis(700);
    let mut outage_at = None;
    let started = Instant::now();
    let mut seq = 0;
    while started.elapsed() < Duration::from_millis(2000) {
        if outage_at.is_none() && started.elapsed() >= Duration::from_millis(500) {
            outage_at = Some(now_nanos());
            netem.outage(length);
        }
        client.send(netem.local_addr(), seq, 100).await;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    settle(seed, &netem).await;
    let c = netem.stop().await;
    let outage_at = outage_at.unwrap();
    let window = outage_at + 50_000_000..outage_at + length.as_nanos() as u64;
    for (who, arrivals) in [("server", server.arrivals()), ("client", client.arrivals())] {
        let during = arrivals.iter().filter(|a| window.contains(&a.at)).count();
        let before = arrivals.iter().filter(|a| a.at < window.start).count();
        let after = arrivals.iter().filter(|a| a.at >= window.end).count();
        println!("{who}: {before} before, {during} during, {after} after the outage");
        assert_eq!(
            during, 0,
            "seed {seed}: {who} got packets during the outage"
        );
        assert!(
            before > 0 && after > 0,
            "seed {seed}: {who} got no traffic around the outage"
        );
    }
    println!("{c}");
    // About 70 packets are sent during 700 ms; a stalled sender sends fewer.
    assert!(
        (20..=80).contains(&c.upstream.dropped_outage),
        "seed {seed}:\n{c}"
    );
    assert_eq!(c.upstream.dropped_loss + c.upstream.dropped_queue, 0);
    assert_eq!(c.outages, 1);
}

/// Outages every 10 s of 1–2 s and rebinds every 10 s, at time scale 0.03
/// (so every 0.3 s, for 30–60 ms): over 2 s of traffic, several outages and
/// rebinds happen, the server sees several source ports, and the share of
/// packets lost to outages is plausible (2% to 50%; about 13% expected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_scale_shortens_profile_outages_and_rebinds() {
    let seed = seed();
    let server = Recorder::bind(true).await;
    let client = Recorder::bind(false).await;
    let profile = Profile {
        outage_every_s: 10.0,
        outage_s: [1.0, 2.0],
        rebind_every_s: 10.0,
        ..Profile::clean()
    };
    let netem = start(server.addr(), profile, seed, 0.03).await;
    let started = Instant::now();
    let mut seq = 0;
    while started.elapsed() < Duration::from_secs(2) {
        client.send(netem.local_addr(), seq, 100).await;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    settle(seed, &netem).await;
    let c = netem.stop().await;
    let ports: BTreeSet<u16> = server.arrivals().iter().map(|a| a.from.port()).collect();
    let share = c.upstream.dropped_outage as f64 / c.upstream.packets_in as f64;
    println!(
        "{} source ports, {:.1}% lost to outages\n{c}",
        ports.len(),
        share * 100.0
    );
    assert!(c.outages >= 2, "seed {seed}: {} outages", c.outages);
    assert!(c.rebinds >= 2, "seed {seed}: {} rebinds", c.rebinds);
    assert!(ports.len() >= 2, "seed {seed}: source ports {ports:?}");
    assert!(
        (0.02..0.5).contains(&share),
        "seed {seed}: {share} lost to outages"
    );
}

/// `rebind_all` gives the link a new source port toward the server; the
/// server's replies to the new port still reach the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebind_all_changes_the_source_port_the_server_sees() {
    let seed = seed();
    let server = Recorder::bind(true).await;
    let client = Recorder::bind(false).await;
    let netem = start(server.addr(), Profile::clean(), seed, 1.0).await;
    for seq in 0..5 {
        client.send(netem.local_addr(), seq, 50).await;
    }
    wait_until(seed, "5 echoes", || client.count() == 5).await;
    let before = netem.links();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].client, client.addr());
    assert_eq!(netem.rebind_all(), 1);
    let after = netem.links();
    assert_ne!(
        after[0].upstream_local, before[0].upstream_local,
        "links() not updated at once"
    );
    for seq in 5..10 {
        client.send(netem.local_addr(), seq, 50).await;
    }
    wait_until(seed, "10 echoes", || client.count() == 10).await;
    let arrivals = server.arrivals();
    let old: BTreeSet<SocketAddr> = arrivals
        .iter()
        .filter(|a| a.seq < 5)
        .map(|a| a.from)
        .collect();
    let new: BTreeSet<SocketAddr> = arrivals
        .iter()
        .filter(|a| a.seq >= 5)
        .map(|a| a.from)
        .collect();
    assert_eq!(old.len(), 1);
    assert_eq!(new.len(), 1);
    assert_ne!(old, new, "seed {seed}: same source after rebind");
    assert_eq!(old.first(), Some(&before[0].upstream_local));
    assert_eq!(new.first(), Some(&after[0].upstream_local));
    let c = netem.stop().await;
    assert_eq!((c.rebinds, c.links), (1, 1));
}

/// Two client sockets get two links: the server sees two source addresses
/// and each client gets back only its own packets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_client_sockets_get_separate_links() {
    let seed = seed();
    let server = Recorder::bind(true).await;
    let a = Recorder::bind(false).await;
    let b = Recorder::bind(false).await;
    let netem = start(server.addr(), Profile::clean(), seed, 1.0).await;
    for seq in 0..5 {
        a.send(netem.local_addr(), seq, 50).await;
        b.send(netem.local_addr(), 100 + seq, 50).await;
    }
    wait_until(seed, "5 echoes each", || a.count() == 5 && b.count() == 5).await;
    let sources: BTreeSet<SocketAddr> = server.arrivals().iter().map(|x| x.from).collect();
    assert_eq!(sources.len(), 2, "seed {seed}: {sources:?}");
    assert!(a.arrivals().iter().all(|x| x.seq < 100));
    assert!(b.arrivals().iter().all(|x| x.seq >= 100));
    let links = netem.links();
    let clients: BTreeSet<SocketAddr> = links.iter().map(|l| l.client).collect();
    assert_eq!(clients, BTreeSet::from([a.addr(), b.addr()]));
    let upstream: BTreeSet<SocketAddr> = links.iter().map(|l| l.upstream_local).collect();
    assert_eq!(upstream, sources);
    assert_eq!(netem.counters().links, 2);
}

// ------------------------------------------------------------------ binary --

/// The binary: clear errors for an unknown profile (listing the known ones)
/// and a bad value; a real run forwards packets, and SIGTERM prints the counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_forwards_and_prints_counters_on_sigterm() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_lanyard-netem");
    let base_args = ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"];

    let out = Command::new(bin)
        .args(base_args)
        .args(["--profile", "stadium"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("unknown profile") && stderr.contains("busy, collapsing, overloaded"),
        "{stderr}"
    );

    let out = Command::new(bin)
        .args(base_args)
        .args(["--profile", "busy", "--loss", "1.5"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("loss must be in [0, 1)"), "{stderr}");

    let server = Recorder::bind(true).await;
    let client = Recorder::bind(false).await;
    let upstream = server.addr().to_string();
    let mut child = Command::new(bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream,
            "--profile",
            "busy",
        ])
        .args(["--seed", "7", "--loss", "0", "--outage-every-s", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (stdout, line) = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        (stdout, line)
    })
    .await
    .unwrap();
    println!("{line}");
    let listen: SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        line.contains(&format!("upstream {upstream}")) && line.contains("seed 7"),
        "{line}"
    );
    for seq in 0..10 {
        client.send(listen, seq, 100).await;
    }
    wait_until(7, "10 echoes through the binary", || client.count() == 10).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        let mut stdout = stdout;
        stdout.read_to_string(&mut rest).unwrap();
        rest
    })
    .await
    .unwrap();
    println!("{rest}");
    assert!(child.wait().unwrap().success());
    let upstream_row = rest.lines().find(|l| l.starts_with("upstream")).unwrap();
    let fields: Vec<&str> = upstream_row.split_whitespace().collect();
    assert_eq!(fields[1..5], ["10", "1000", "10", "1000"], "{rest}");
    assert!(rest.contains("links 1"), "{rest}");
}
