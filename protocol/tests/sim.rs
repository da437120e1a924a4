//! Deterministic simulation of the sans-IO sync protocol (testing tier 2 in
//! `DESIGN.md`).
//!
//! One event, one [`ServerCore`] and a handful of devices (one or two organizer
//! devices editing the agenda, attendees with one or two devices each editing
//! their own notes and bookmarks, and one attendee who also forges agenda and
//! foreign-document pushes) run against a simulated clock and network. Every
//! random choice comes from one `ChaCha8Rng` seeded from the seed, so every run
//! is replayable:
//!
//! ```text
//! LANYARD_SIM_SEED=17 cargo test -p lanyard-protocol --test sim -- --nocapture
//! LANYARD_SIM_SEED=17 LANYARD_SIM_TRACE=1 cargo test -p lanyard-protocol --test sim stream -- --nocapture
//! LANYARD_SIM_SEEDS=2000 cargo test -p lanyard-protocol --test sim   # more seeds
//! ```
//!
//! Faults: seeded message loss, random delay, partitions (everything to or from
//! a device dropped for a while), server crashes (also in the middle of the
//! action list of one batch; the server is rebuilt from its simulated disk,
//! which only `ServerAction::Persist` fills) and device restarts (the session is
//! dropped, the documents and their `DocSyncState` survive via save/load).
//! Two transports are simulated, each over the same seeds:
//!
//! * `Stream`: what a QUIC stream gives the protocol: in order, no duplicates,
//!   and a lost message kills the connection (both ends learn it after a
//!   timeout). Under this transport a session must never get stuck.
//! * `Datagram`: individual messages go straight into the sessions, so loss,
//!   reordering (through random delays) and duplication are all visible to the
//!   protocol. Devices reconnect when they have not settled for a while.
//!
//! After the chaos phase the network heals, devices reconnect, the run goes on
//! until it is quiescent, and the checks in [`Sim::final_checks`] run: heads
//! converge, nothing acknowledged or made is lost, nobody reads another
//! attendee's document, forged changes are refused and never stored. Invariants
//! are also checked on every action the server takes (see [`Sim::execute`]).
//!
//! Seats: the agenda has a few sessions with a capacity; the first organizer
//! device raises capacities and cancels or reinstates those sessions, and
//! attendees write seat requests (reserve, cancel, accept) offline into their
//! own documents. At every step no session holds more seats (confirmed or
//! offered) than its capacity; at the end every request the server holds has
//! exactly one outcome, and every device of a user holds the same outcomes
//! as the server.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use automerge::transaction::Transactable as _;
use automerge::{ActorId, Automerge, Change, ChangeHash, ObjType, ReadDoc as _, Value, ROOT};
use bytes::Bytes;
use lanyard_protocol::seats::doc as seatdoc;
use lanyard_protocol::seats::{RequestKind, SeatState};
use lanyard_protocol::testing::{claims, decode_frame, Fixture, TestKey, NOW};
use lanyard_protocol::{
    wire, Backoff, BackoffPolicy, ClientEvent, ClientMsg, ClientSession, ConnId, DocId, EventId,
    Millis, RefusalReason, Replica, RequestId, Role, ServerAction, ServerConfig, ServerCore,
    ServerMsg, SessionError, SessionId, TokenClaims, UserId,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Unix time of simulated millisecond 0.
const BASE_UNIX: u64 = 1_700_000_000;

/// The devices' reconnect policy in the simulation (the shipped [`Backoff`]
/// with short delays: simulated networks heal in seconds).
const SIM_BACKOFF: BackoffPolicy = BackoffPolicy {
    base: std::time::Duration::from_millis(200),
    cap: std::time::Duration::from_secs(5),
    stable_after: std::time::Duration::from_secs(10),
    jitter: true,
};
/// Token expiry, far after any simulated time.
const EXPIRES: u64 = 2_000_000_000;
/// Granularity of random actions and timers.
const TICK_MS: u64 = 20;
/// How often devices look at whether they are settled.
const CHECK_EVERY_MS: u64 = 200;
/// A device that has not settled for this long reconnects.
const STUCK_MS: u64 = 8_000;
/// The healed network must be quiescent within this much simulated time.
const HEAL_LIMIT_MS: u64 = 120_000;
/// Seeds per transport in a plain `cargo test`.
const DEFAULT_SEEDS: u64 = 256;
/// How often the seats held are checked against the capacities.
const SEAT_CHECK_EVERY_MS: u64 = 1_000;
/// Sessions with a capacity in the simulated agenda.
const SEAT_SESSIONS: usize = 3;

const WORDS: &[&str] = &[
    "rust ", "quic ", "crdt ", "café ", "offline ", "sync ", "talk ", "!",
];

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    /// In order, no duplicates; a lost message kills the connection.
    Stream,
    /// Every message on its own: loss, reordering and duplication reach the sessions.
    Datagram,
}

/// Fault rates of one run, drawn from the seed.
#[derive(Clone, Debug)]
struct Faults {
    loss: f64,
    dup: f64,
    delay_ms: (u64, u64),
    partition_per_s: f64,
    device_restart_per_s: f64,
    server_crash_per_s: f64,
    /// Probability that the server crashes somewhere inside one batch of actions.
    batch_crash: f64,
    edit_per_s: f64,
    forge_per_s: f64,
}

impl Faults {
    fn random(rng: &mut ChaCha8Rng) -> Self {
        let lo = rng.random_range(1..40);
        Faults {
            loss: rng.random_range(0.0..0.12),
            dup: rng.random_range(0.0..0.08),
            delay_ms: (lo, lo + rng.random_range(10..400)),
            partition_per_s: rng.random_range(0.0..0.05),
            device_restart_per_s: rng.random_range(0.0..0.03),
            server_crash_per_s: rng.random_range(0.0..0.04),
            batch_crash: rng.random_range(0.0..0.015),
            edit_per_s: rng.random_range(0.2..0.8),
            forge_per_s: rng.random_range(0.05..0.3),
        }
    }
}

/// Counters of one run (summed over seeds for the coverage report).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SimStats {
    messages: u64,
    lost: u64,
    duplicated: u64,
    broken_connections: u64,
    partitions: u64,
    device_restarts: u64,
    server_crashes: u64,
    batch_crashes: u64,
    persist_without_ack: u64,
    sessions: u64,
    session_errors: u64,
    stuck_reconnects: u64,
    resyncs: u64,
    missing_deps: u64,
    local_changes: u64,
    forged_local: u64,
    forged_raw: u64,
    forged_refused_explicitly: u64,
    forged_refused_by_ancestry: u64,
    acks: u64,
    /// Acks to a device that may not write the document: it re-sent changes it
    /// had received (its base lagged behind what it held).
    reader_acks: u64,
    empty_welcomes: u64,
    /// Seat requests written by attendees.
    seat_requests: u64,
    /// Seat requests the server decided (each exactly once).
    seat_decided: u64,
    /// Capacity raises and cancellations by the organizer.
    seat_rule_edits: u64,
    /// Seats held at the end (confirmed or offered), summed over sessions.
    seats_held: u64,
    /// Checks that no session held more seats than its capacity.
    seat_checks: u64,
}

impl SimStats {
    fn add(&mut self, o: &SimStats) {
        macro_rules! sum {
            ($($f:ident),*) => { $(self.$f += o.$f;)* };
        }
        sum!(
            messages,
            lost,
            duplicated,
            broken_connections,
            partitions,
            device_restarts,
            server_crashes,
            batch_crashes,
            persist_without_ack,
            sessions,
            session_errors,
            stuck_reconnects,
            resyncs,
            missing_deps,
            local_changes,
            forged_local,
            forged_raw,
            forged_refused_explicitly,
            forged_refused_by_ancestry,
            acks,
            reader_acks,
            empty_welcomes,
            seat_requests,
            seat_decided,
            seat_rule_edits,
            seats_held,
            seat_checks
        );
    }
}

/// What a finished run produced (for the determinism test).
#[derive(Debug, PartialEq, Eq)]
struct SimReport {
    stats: SimStats,
    end_ms: u64,
    server_heads: BTreeMap<String, Vec<ChangeHash>>,
}

// ---------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerSide {
    /// No message of this connection reached the server yet.
    Unseen,
    /// The server has a session for it.
    Open,
    /// The server closed it, crashed, or learned the device closed it.
    Closed,
}

#[derive(Debug)]
struct Conn {
    dev: usize,
    /// Stream transport only: a message was lost, so the connection is dead.
    broken: bool,
    server: ServerSide,
    /// Latest scheduled delivery per direction (keeps in-order links in order).
    last_up: u64,
    last_down: u64,
}

#[derive(Clone, Debug)]
enum Payload {
    /// A frame from a device to the server.
    Up { conn: ConnId, frame: Vec<u8> },
    /// A frame from the server to a device.
    Down { conn: ConnId, frame: Bytes },
    /// The device learns that its connection is gone.
    CloseDown { conn: ConnId },
    /// The server learns that the device's connection is gone.
    CloseUp { conn: ConnId },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Up,
    Down,
}

// ---------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------

struct Sess {
    conn: ConnId,
    cs: ClientSession,
    started_at: u64,
    unsettled_since: Option<u64>,
}

struct Device {
    name: String,
    claims: TokenClaims,
    token: String,
    actor: ActorId,
    forger: bool,
    replica: Replica,
    sess: Option<Sess>,
    next_connect_at: u64,
    /// The reconnect policy the device driver ships.
    backoff: Backoff,
    partitioned_until: u64,
    /// Every legitimate local change (doc, hash).
    local: Vec<(DocId, ChangeHash)>,
    /// Agenda changes an attendee made through the normal API (must be refused).
    forged_local: Vec<ChangeHash>,
    /// Every head the device ever held as its confirmed base, per document.
    confirmed: BTreeMap<DocId, BTreeSet<ChangeHash>>,
}

impl Device {
    fn role(&self) -> Role {
        self.claims.role
    }

    fn writable_doc(&self) -> DocId {
        match self.role() {
            Role::Organizer => DocId::Agenda(self.claims.event.clone()),
            Role::Attendee => self.claims.own_doc(),
        }
    }
}

/// Models the device's disk across a restart: documents are saved and loaded
/// again (which also drops Automerge's queue of changes with missing deps).
fn reload(replica: &Replica, actor: &ActorId) -> Replica {
    let mut fresh = Replica::new(actor.clone());
    for id in replica.doc_ids() {
        let rd = replica.get(&id).unwrap();
        let doc = Automerge::load(&rd.doc.save()).unwrap();
        fresh.insert(id, doc, rd.sync.clone());
    }
    fresh
}

// ---------------------------------------------------------------------------
// Edits
// ---------------------------------------------------------------------------

/// Repeats `attempt` until it makes a change: Automerge makes none for a put
/// of the value already there.
fn until_changed(
    rng: &mut ChaCha8Rng,
    doc: &mut Automerge,
    attempt: fn(&mut ChaCha8Rng, &mut Automerge) -> Option<ChangeHash>,
) -> ChangeHash {
    loop {
        if let Some(h) = attempt(rng, doc) {
            return h;
        }
    }
}

/// An organizer edit: plain scalars, as the design asks for agenda fields.
fn edit_agenda(rng: &mut ChaCha8Rng, doc: &mut Automerge) -> ChangeHash {
    until_changed(rng, doc, try_edit_agenda)
}

fn try_edit_agenda(rng: &mut ChaCha8Rng, doc: &mut Automerge) -> Option<ChangeHash> {
    let mut tx = doc.transaction();
    let s = rng.random_range(0..8);
    match rng.random_range(0..4) {
        0 => tx.put(
            ROOT,
            format!("session-{s}.room"),
            format!("room-{}", rng.random_range(0..5)),
        ),
        1 => {
            let status = ["scheduled", "moved", "cancelled"][rng.random_range(0..3)];
            tx.put(ROOT, format!("session-{s}.status"), status)
        }
        2 => tx.put(
            ROOT,
            format!("session-{s}.start"),
            (BASE_UNIX + rng.random_range(0..96u64) * 900) as i64,
        ),
        _ => tx.put(
            ROOT,
            "announcement",
            format!("notice {}", rng.random::<u32>()),
        ),
    }
    .unwrap();
    tx.commit().0
}

/// The id of a session with a capacity.
fn seat_session(k: usize) -> SessionId {
    SessionId::new(format!("seat-{k}")).unwrap()
}

/// The agenda's sessions with a capacity, made once by the first organizer
/// device: far in the future, 1 to 3 seats each.
fn seat_genesis(rng: &mut ChaCha8Rng, doc: &mut Automerge) -> ChangeHash {
    let start = (BASE_UNIX + 30 * 86_400) as i64;
    let mut tx = doc.transaction();
    let sessions = tx.put_object(ROOT, "sessions", ObjType::Map).unwrap();
    for k in 0..SEAT_SESSIONS {
        let s = tx
            .put_object(&sessions, seat_session(k).as_str(), ObjType::Map)
            .unwrap();
        tx.put(&s, "start", start).unwrap();
        tx.put(&s, "end", start + 3600).unwrap();
        tx.put(&s, "status", "scheduled").unwrap();
        tx.put(&s, seatdoc::CAPACITY, rng.random_range(1..=3i64))
            .unwrap();
    }
    tx.commit().0.unwrap()
}

/// The organizer raises a capacity (never lowers it: with one writer the
/// capacity only grows, so "never more seats than the capacity" holds at
/// every moment) or cancels or reinstates a session.
fn edit_seats(rng: &mut ChaCha8Rng, doc: &mut Automerge) -> Option<ChangeHash> {
    let sessions = match doc.get(ROOT, "sessions").unwrap() {
        Some((Value::Object(ObjType::Map), id)) => id,
        _ => return None,
    };
    let k = rng.random_range(0..SEAT_SESSIONS);
    let s = match doc.get(&sessions, seat_session(k).as_str()).unwrap() {
        Some((Value::Object(ObjType::Map), id)) => id,
        _ => return None,
    };
    let mut tx = doc.transaction();
    if rng.random_bool(0.6) {
        let cap = match tx.get(&s, seatdoc::CAPACITY).unwrap() {
            Some((Value::Scalar(v), _)) => v.as_i64().unwrap_or(0),
            _ => 0,
        };
        tx.put(&s, seatdoc::CAPACITY, (cap + 1).min(6)).unwrap();
    } else {
        let status = if rng.random_bool(0.3) {
            "cancelled"
        } else {
            "scheduled"
        };
        tx.put(&s, "status", status).unwrap();
    }
    tx.commit().0
}

/// An attendee's seat request: mostly reservations, some cancellations and
/// acceptances, with a random id.
fn seat_request(rng: &mut ChaCha8Rng, doc: &mut Automerge, doc_id: &DocId) -> ChangeHash {
    let kind = match rng.random_range(0..10) {
        0..=6 => RequestKind::Reserve,
        7..=8 => RequestKind::Cancel,
        _ => RequestKind::Accept,
    };
    let id = RequestId::new(format!("req-{:016x}", rng.random::<u64>())).unwrap();
    let session = seat_session(rng.random_range(0..SEAT_SESSIONS));
    seatdoc::write_request(doc, &doc_id.to_string(), &id, &session, kind, 0).unwrap();
    doc.get_heads()[0]
}

/// An attendee edit: a bookmark scalar, or a splice in a note's text.
fn edit_notes(rng: &mut ChaCha8Rng, doc: &mut Automerge) -> ChangeHash {
    until_changed(rng, doc, try_edit_notes)
}

fn try_edit_notes(rng: &mut ChaCha8Rng, doc: &mut Automerge) -> Option<ChangeHash> {
    let mut tx = doc.transaction();
    let s = rng.random_range(0..4);
    if rng.random_bool(0.35) {
        tx.put(ROOT, format!("bookmark.session-{s}"), rng.random_bool(0.5))
            .unwrap();
    } else {
        let key = format!("note.session-{s}");
        let text = match tx.get(ROOT, key.as_str()).unwrap() {
            Some((Value::Object(ObjType::Text), id)) => id,
            _ => tx.put_object(ROOT, key.as_str(), ObjType::Text).unwrap(),
        };
        let len = tx.length(&text);
        let pos = rng.random_range(0..=len);
        let del = if pos < len && rng.random_bool(0.3) {
            rng.random_range(1..=(len - pos).min(4))
        } else {
            0
        };
        let word = WORDS[rng.random_range(0..WORDS.len())];
        tx.splice_text(&text, pos, del as isize, word).unwrap();
    }
    tx.commit().0
}

fn random_actor(rng: &mut ChaCha8Rng) -> ActorId {
    let mut b = [0u8; 16];
    rng.fill(&mut b);
    ActorId::from(&b[..])
}

/// Hashes of `changes` that are `refused` or depend (transitively) on one.
fn tainted(changes: &[Change], refused: &HashSet<ChangeHash>) -> HashSet<ChangeHash> {
    let mut t = refused.clone();
    loop {
        let before = t.len();
        for c in changes {
            if c.deps().iter().any(|d| t.contains(d)) {
                t.insert(c.hash());
            }
        }
        if t.len() == before {
            return t;
        }
    }
}

fn all_hashes(doc: &Automerge) -> HashSet<ChangeHash> {
    doc.get_changes(&[]).iter().map(Change::hash).collect()
}

fn short(h: &[u8; 32]) -> String {
    h[..3].iter().map(|b| format!("{b:02x}")).collect()
}

fn short_all(hs: &[[u8; 32]]) -> String {
    hs.iter().map(short).collect::<Vec<_>>().join(",")
}

fn short_raw(changes: &[Vec<u8>]) -> String {
    changes
        .iter()
        .map(|c| Change::try_from(c.as_slice()).map_or("?".into(), |c| short(&c.hash().0)))
        .collect::<Vec<_>>()
        .join(",")
}

fn snapshot_note(snapshot: &[u8]) -> String {
    if snapshot.is_empty() {
        String::new()
    } else {
        format!(" snapshot({} B)", snapshot.len())
    }
}

/// A one-line description of a server message, for traces.
fn describe_server(m: &ServerMsg) -> String {
    match m {
        ServerMsg::Welcome { docs, .. } => {
            let d: Vec<String> = docs
                .iter()
                .map(|u| {
                    format!(
                        "{} +[{}]{} heads=[{}]",
                        u.doc,
                        short_raw(&u.changes),
                        snapshot_note(&u.snapshot),
                        short_all(&u.heads)
                    )
                })
                .collect();
            format!("Welcome {}", d.join("; "))
        }
        ServerMsg::Update(u) => format!(
            "Update {} +[{}]{} heads=[{}]",
            u.doc,
            short_raw(&u.changes),
            snapshot_note(&u.snapshot),
            short_all(&u.heads)
        ),
        ServerMsg::Ack { doc, heads } => format!("Ack {doc} heads=[{}]", short_all(heads)),
        ServerMsg::Heads { doc, heads } => format!("Heads {doc} [{}]", short_all(heads)),
        ServerMsg::Refused {
            doc,
            changes,
            reason,
            heads,
            ..
        } => {
            format!(
                "Refused {doc} {reason:?} [{}] heads=[{}]",
                short_all(changes),
                short_all(heads)
            )
        }
        ServerMsg::Error { code, message } => format!("Error {code}: {message}"),
    }
}

/// A one-line description of a client message, for traces.
fn describe_client(m: &ClientMsg) -> String {
    match m {
        ClientMsg::Hello { docs, .. } => {
            let d: Vec<String> = docs
                .iter()
                .map(|d| {
                    format!(
                        "{} heads=[{}] base=[{}]",
                        d.doc,
                        short_all(&d.heads),
                        short_all(&d.base)
                    )
                })
                .collect();
            format!("Hello {}", d.join("; "))
        }
        ClientMsg::Push { doc, changes } => format!("Push {doc} [{}]", short_raw(changes)),
        ClientMsg::Resync { doc, have } => format!("Resync {doc} have=[{}]", short_all(have)),
    }
}

// ---------------------------------------------------------------------------
// The simulation
// ---------------------------------------------------------------------------

struct Sim {
    seed: u64,
    transport: Transport,
    rng: ChaCha8Rng,
    faults: Faults,
    trace: bool,
    now: u64,
    healing: bool,
    heal_started: u64,
    queue: BTreeMap<(u64, u64), Payload>,
    next_seq: u64,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    event: EventId,
    config: ServerConfig,
    server: ServerCore,
    /// The server's durable disk: only `Persist` writes it.
    disk: BTreeMap<DocId, Vec<Vec<u8>>>,
    disk_hashes: HashMap<DocId, HashSet<ChangeHash>>,
    devices: Vec<Device>,
    /// Actor bytes -> device index.
    actors: HashMap<Vec<u8>, usize>,
    /// Every forged change (made through the API or injected raw).
    forged: HashSet<ChangeHash>,
    stats: SimStats,
}

impl Sim {
    fn new(seed: u64, transport: Transport) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let faults = Faults::random(&mut rng);
        let mut key_seed = [0u8; 32];
        rng.fill(&mut key_seed);
        let key = TestKey::from_seed(&key_seed);
        let config = key.config(Default::default());
        let event = EventId::new("venue-conf").unwrap();

        // Who is here: (user, role, device name, forger).
        let mut people: Vec<(String, Role, String, bool)> = Vec::new();
        let two_organizers = rng.random_bool(0.5);
        for i in 0..rng.random_range(1..=2) {
            let user = if two_organizers {
                format!("org-{i}")
            } else {
                "org-0".into()
            };
            people.push((user, Role::Organizer, format!("org-dev-{i}"), false));
        }
        for u in 0..rng.random_range(2..=4) {
            let n = if rng.random_bool(0.5) { 2 } else { 1 };
            for k in 0..n {
                people.push((
                    format!("att-{u}"),
                    Role::Attendee,
                    format!("att-{u}-dev-{k}"),
                    u == 0 && k == 0,
                ));
            }
        }

        let mut devices: Vec<Device> = Vec::new();
        let mut actors = HashMap::new();
        for (user, role, name, forger) in people {
            let claims = claims(&event, &user, role, &name, EXPIRES);
            let token = key.sign(&claims);
            let actor = random_actor(&mut rng);
            actors.insert(actor.to_bytes().to_vec(), devices.len());
            devices.push(Device {
                name,
                claims,
                token,
                replica: Replica::new(actor.clone()),
                actor,
                forger,
                sess: None,
                next_connect_at: rng.random_range(0..2_000),
                backoff: Backoff::new(SIM_BACKOFF),
                partitioned_until: 0,
                local: Vec::new(),
                forged_local: Vec::new(),
                confirmed: BTreeMap::new(),
            });
        }
        // The first organizer device made the sessions with a capacity
        // before anything else.
        {
            let d = &mut devices[0];
            let agenda = DocId::Agenda(event.clone());
            let rd = d.replica.get_or_create(&agenda);
            let h = seat_genesis(&mut rng, &mut rd.doc);
            d.local.push((agenda, h));
        }

        Sim {
            seed,
            transport,
            rng,
            faults,
            trace: std::env::var_os("LANYARD_SIM_TRACE").is_some(),
            now: 0,
            healing: false,
            heal_started: u64::MAX,
            queue: BTreeMap::new(),
            next_seq: 0,
            conns: BTreeMap::new(),
            next_conn: 1,
            server: ServerCore::new(config.clone()),
            config,
            event,
            disk: BTreeMap::new(),
            disk_hashes: HashMap::new(),
            devices,
            actors,
            forged: HashSet::new(),
            stats: SimStats::default(),
        }
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:>7}ms] {}", self.now, what());
        }
    }

    fn ctx(&self) -> String {
        format!(
            "seed={} transport={:?} t={}ms",
            self.seed, self.transport, self.now
        )
    }

    /// The server's clock: the simulated time after [`BASE_UNIX`].
    fn unix(&self) -> Millis {
        Millis::from_secs(BASE_UNIX) + std::time::Duration::from_millis(self.now)
    }

    fn per_tick(rate_per_s: f64) -> f64 {
        (rate_per_s * TICK_MS as f64 / 1000.0).min(1.0)
    }

    fn partitioned(&self, dev: usize) -> bool {
        !self.healing && self.devices[dev].partitioned_until > self.now
    }

    // ----- running -------------------------------------------------------

    fn run(mut self) -> SimReport {
        self.log(|| format!("faults {:?}", self.faults));
        let chaos_ms = self.rng.random_range(15_000..=30_000);
        while self.now < chaos_ms {
            self.step();
        }
        self.heal();
        let limit = self.now + HEAL_LIMIT_MS;
        while !self.quiescent() {
            if self.now > limit {
                let status: Vec<String> = self
                    .devices
                    .iter()
                    .map(|d| {
                        format!(
                            "{}: session={:?} pending={} refusals={}",
                            d.name,
                            d.sess.as_ref().map(|s| &s.cs),
                            d.replica.pending_count(),
                            d.replica.refusals().len()
                        )
                    })
                    .collect();
                panic!(
                    "{}: not quiescent {HEAL_LIMIT_MS}ms after healing ({} events queued)\n{}",
                    self.ctx(),
                    self.queue.len(),
                    status.join("\n")
                );
            }
            self.step();
        }
        self.final_checks();
        let server_heads = self
            .server
            .doc_ids()
            .map(|d| (d.to_string(), self.server.doc(d).unwrap().get_heads()))
            .collect();
        SimReport {
            stats: self.stats.clone(),
            end_ms: self.now,
            server_heads,
        }
    }

    fn step(&mut self) {
        let tick_end = self.now + TICK_MS;
        while let Some((&(at, _), _)) = self.queue.first_key_value() {
            if at > tick_end {
                break;
            }
            let (_, p) = self.queue.pop_first().unwrap();
            self.now = self.now.max(at);
            self.deliver(p);
        }
        self.now = tick_end;
        if !self.healing {
            self.random_actions();
        }
        self.device_timers();
        self.server_timers();
    }

    /// The server's timers (heads beacons, seat counts, offers), when due.
    fn server_timers(&mut self) {
        let now = self.unix();
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            let actions = self.server.handle_timeout(now);
            self.execute(actions);
        }
        if self.now.is_multiple_of(SEAT_CHECK_EVERY_MS) {
            self.check_seats();
        }
    }

    /// Seats held (confirmed or offered) per session, over every user's
    /// seats document the server holds.
    fn seats_held(&self) -> BTreeMap<SessionId, u64> {
        let mut held = BTreeMap::new();
        for id in self.server.doc_ids() {
            let DocId::Seats(_, user) = id else {
                continue;
            };
            let doc = self.server.doc(id).unwrap();
            for o in seatdoc::read_outcomes(&doc, user) {
                if matches!(o.state, SeatState::Confirmed | SeatState::Offered) {
                    *held.entry(o.session).or_default() += 1;
                }
            }
        }
        held
    }

    /// No session holds more seats than its capacity (which only grows),
    /// and a cancelled one holds none.
    fn check_seats(&mut self) {
        let agenda = DocId::Agenda(self.event.clone());
        let rules = match self.server.doc(&agenda) {
            Some(d) => seatdoc::read_rules(&d).1,
            None => BTreeMap::new(),
        };
        for (session, n) in self.seats_held() {
            let r = rules.get(&session).copied().unwrap_or_default();
            let cap = if r.cancelled {
                0
            } else {
                u64::from(r.capacity)
            };
            assert!(
                n <= cap,
                "{}: session {session} holds {n} seats, capacity {cap}{}",
                self.ctx(),
                if r.cancelled { " (cancelled)" } else { "" }
            );
        }
        self.stats.seat_checks += 1;
    }

    fn heal(&mut self) {
        self.log(|| "=== heal: no more loss, partitions, crashes or edits".into());
        self.healing = true;
        self.heal_started = self.now;
        for dev in 0..self.devices.len() {
            self.devices[dev].partitioned_until = 0;
            // Datagram sessions may have silently missed a push; the stream
            // transport would have noticed, so its live sessions stay.
            if self.transport == Transport::Datagram && self.devices[dev].sess.is_some() {
                self.drop_session(dev, true);
            }
            let soon = self.now + self.rng.random_range(0..1_000);
            let d = &mut self.devices[dev];
            d.backoff.reset();
            d.next_connect_at = d.next_connect_at.min(soon);
        }
    }

    fn quiescent(&self) -> bool {
        self.queue.is_empty()
            && self.devices.iter().all(|d| {
                d.next_connect_at <= self.now
                    && d.sess.as_ref().is_some_and(|s| s.cs.is_settled(&d.replica))
            })
    }

    fn random_actions(&mut self) {
        let p_edit = Self::per_tick(self.faults.edit_per_s);
        let p_forge = Self::per_tick(self.faults.forge_per_s);
        let p_part = Self::per_tick(self.faults.partition_per_s);
        let p_restart = Self::per_tick(self.faults.device_restart_per_s);
        for dev in 0..self.devices.len() {
            if self.rng.random_bool(p_edit) {
                self.local_edit(dev);
            }
            if self.devices[dev].forger && self.rng.random_bool(p_forge) {
                self.forge(dev);
            }
            if self.rng.random_bool(p_part) {
                let until = self.now + self.rng.random_range(500..6_000);
                self.devices[dev].partitioned_until = until;
                self.stats.partitions += 1;
                self.log(|| format!("partition {} until {until}", self.devices[dev].name));
            }
            if self.rng.random_bool(p_restart) {
                self.restart_device(dev);
            }
        }
        if self
            .rng
            .random_bool(Self::per_tick(self.faults.server_crash_per_s))
        {
            self.restart_server(true);
        }
    }

    fn device_timers(&mut self) {
        let check = self.now.is_multiple_of(CHECK_EVERY_MS);
        for dev in 0..self.devices.len() {
            let now = self.now;
            let d = &mut self.devices[dev];
            match d.sess.as_mut() {
                None => {
                    if now >= d.next_connect_at {
                        self.connect(dev);
                    }
                }
                Some(s) if check => {
                    if s.cs.is_settled(&d.replica) {
                        s.unsettled_since = None;
                    } else {
                        let since = *s.unsettled_since.get_or_insert(now);
                        if now - since >= STUCK_MS {
                            self.stuck(dev);
                        }
                    }
                }
                Some(_) => {}
            }
        }
    }

    fn stuck(&mut self, dev: usize) {
        let d = &self.devices[dev];
        let s = d.sess.as_ref().unwrap();
        let c = &self.conns[&s.conn];
        let what = format!(
            "{}: {} has not settled for {STUCK_MS}ms on connection {} (broken={}, server={:?}, \
             started at {}ms, pending={}): {:?}",
            self.ctx(),
            d.name,
            s.conn,
            c.broken,
            c.server,
            s.started_at,
            d.replica.pending_count(),
            s.cs
        );
        if self.transport == Transport::Stream && !c.broken && c.server != ServerSide::Closed {
            panic!("liveness: {what}; an in-order, lossless connection must settle");
        }
        if s.started_at >= self.heal_started {
            panic!("liveness: {what}; a session on the healed network must settle");
        }
        self.log(|| format!("stuck: {what}"));
        self.stats.stuck_reconnects += 1;
        self.drop_session(dev, true);
    }

    // ----- devices -------------------------------------------------------

    fn connect(&mut self, dev: usize) {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            conn,
            Conn {
                dev,
                broken: false,
                server: ServerSide::Unseen,
                last_up: self.now,
                last_down: self.now,
            },
        );
        let d = &mut self.devices[dev];
        let (cs, msgs) = ClientSession::start(self.event.clone(), d.token.clone(), &d.replica);
        d.sess = Some(Sess {
            conn,
            cs,
            started_at: self.now,
            unsettled_since: None,
        });
        self.stats.sessions += 1;
        self.log(|| {
            let m: Vec<String> = msgs.iter().map(describe_client).collect();
            format!(
                "{} connects on {conn}: {}",
                self.devices[dev].name,
                m.join(" | ")
            )
        });
        for m in msgs {
            self.send_up(conn, &m);
        }
    }

    /// Ends the device's session; `notify` when the device itself closes it.
    fn drop_session(&mut self, dev: usize, notify: bool) {
        let Some(s) = self.devices[dev].sess.take() else {
            return;
        };
        if notify {
            let c = &self.conns[&s.conn];
            if !c.broken && c.server != ServerSide::Closed {
                let at = self.now
                    + self
                        .rng
                        .random_range(self.faults.delay_ms.0..=self.faults.delay_ms.1);
                let at = if self.transport == Transport::Stream {
                    at.max(c.last_up)
                } else {
                    at
                };
                self.schedule(at, Payload::CloseUp { conn: s.conn });
            }
        }
        let d = &mut self.devices[dev];
        let delay = d.backoff.next_delay(
            Millis(s.started_at),
            Millis(self.now),
            self.rng.random::<f64>(),
        );
        d.next_connect_at = self.now + delay.as_millis() as u64;
        self.log(|| format!("{} drops session {}", self.devices[dev].name, s.conn));
    }

    fn restart_device(&mut self, dev: usize) {
        self.stats.device_restarts += 1;
        self.drop_session(dev, true);
        let d = &mut self.devices[dev];
        d.replica = reload(&d.replica, &d.actor);
        d.next_connect_at = self.now + self.rng.random_range(100..2_000);
        self.log(|| format!("{} restarts", self.devices[dev].name));
    }

    fn local_edit(&mut self, dev: usize) {
        let d = &mut self.devices[dev];
        let doc = d.writable_doc();
        let rd = d.replica.get_or_create(&doc);
        let seats = self.rng.random_bool(0.35);
        let h = match d.claims.role {
            Role::Organizer if seats && dev == 0 => match edit_seats(&mut self.rng, &mut rd.doc) {
                Some(h) => {
                    self.stats.seat_rule_edits += 1;
                    h
                }
                None => edit_agenda(&mut self.rng, &mut rd.doc),
            },
            Role::Organizer => edit_agenda(&mut self.rng, &mut rd.doc),
            Role::Attendee if seats => {
                self.stats.seat_requests += 1;
                seat_request(&mut self.rng, &mut rd.doc, &doc)
            }
            Role::Attendee => edit_notes(&mut self.rng, &mut rd.doc),
        };
        d.local.push((doc.clone(), h));
        self.stats.local_changes += 1;
        self.push_local(dev, &doc);
    }

    fn push_local(&mut self, dev: usize, doc: &DocId) {
        let d = &mut self.devices[dev];
        if let Some(s) = d.sess.as_mut() {
            let conn = s.conn;
            for m in s.cs.local_change(&d.replica, doc) {
                self.send_up(conn, &m);
            }
        }
    }

    /// The forging attendee: agenda edits through the normal API, raw pushes
    /// of changes to the agenda and to another attendee's document, and an
    /// attempt to read another attendee's document.
    fn forge(&mut self, dev: usize) {
        let agenda = DocId::Agenda(self.event.clone());
        let kind = self.rng.random_range(0..4);
        if kind < 2 {
            let d = &mut self.devices[dev];
            let rd = d.replica.get_or_create(&agenda);
            let h = edit_agenda(&mut self.rng, &mut rd.doc);
            d.forged_local.push(h);
            self.forged.insert(h);
            self.stats.forged_local += 1;
            self.log(|| format!("{} forges agenda change {h}", self.devices[dev].name));
            self.push_local(dev, &agenda);
            return;
        }
        let Some(conn) = self.devices[dev].sess.as_ref().map(|s| s.conn) else {
            return;
        };
        let victims: Vec<UserId> = self
            .devices
            .iter()
            .filter(|v| {
                v.claims.role == Role::Attendee && v.claims.user != self.devices[dev].claims.user
            })
            .map(|v| v.claims.user.clone())
            .collect();
        let victim = DocId::Attendee(
            self.event.clone(),
            victims[self.rng.random_range(0..victims.len())].clone(),
        );
        let msg = if kind == 2 {
            // A change by a foreign actor on top of what the forger holds.
            let mut doc = match self.devices[dev].replica.get(&agenda) {
                Some(rd) => rd.doc.fork(),
                None => Automerge::new(),
            };
            doc.set_actor(random_actor(&mut self.rng));
            let h = edit_agenda(&mut self.rng, &mut doc);
            self.forged.insert(h);
            self.stats.forged_raw += 1;
            let raw = doc.get_change_by_hash(&h).unwrap().raw_bytes().to_vec();
            ClientMsg::Push {
                doc: agenda,
                changes: vec![raw],
            }
        } else if self.rng.random_bool(0.5) {
            let mut doc = Automerge::new().with_actor(random_actor(&mut self.rng));
            let h = edit_notes(&mut self.rng, &mut doc);
            self.forged.insert(h);
            self.stats.forged_raw += 1;
            let raw = doc.get_change_by_hash(&h).unwrap().raw_bytes().to_vec();
            ClientMsg::Push {
                doc: victim,
                changes: vec![raw],
            }
        } else {
            ClientMsg::Resync {
                doc: victim,
                have: Vec::new(),
            }
        };
        self.log(|| {
            format!(
                "{} injects {}",
                self.devices[dev].name,
                describe_client(&msg)
            )
        });
        self.send_up(conn, &msg);
    }

    fn device_receive(&mut self, conn: ConnId, frame: &[u8]) {
        let dev = self.conns[&conn].dev;
        let d = &mut self.devices[dev];
        let Some(s) = d.sess.as_mut() else {
            return;
        };
        if s.conn != conn {
            return;
        }
        let msg = decode_frame(frame);
        if let ServerMsg::Welcome { docs, .. } = &msg {
            if docs.iter().all(|u| u.is_empty()) {
                self.stats.empty_welcomes += 1;
            }
        }
        if let ServerMsg::Ack { doc, .. } = &msg {
            self.stats.acks += 1;
            if !d.claims.may_write(doc) {
                self.stats.reader_acks += 1;
            }
        }
        if matches!(
            msg,
            ServerMsg::Refused {
                reason: RefusalReason::MissingDeps,
                ..
            }
        ) {
            self.stats.missing_deps += 1;
        }
        if let (ServerMsg::Welcome { docs, .. }, Transport::Stream) = (&msg, self.transport) {
            // The Hello told the server the base: nothing under it comes back.
            for u in docs {
                let Some(rd) = d.replica.get(&u.doc) else {
                    continue;
                };
                let base: Vec<ChangeHash> = rd.sync.base.iter().map(|h| ChangeHash(*h)).collect();
                let above: HashSet<ChangeHash> =
                    rd.doc.get_changes(&base).iter().map(Change::hash).collect();
                for raw in &u.changes {
                    let h = Change::try_from(raw.as_slice()).unwrap().hash();
                    assert!(
                        above.contains(&h) || rd.doc.get_change_by_hash(&h).is_none(),
                        "seed={} t={}ms: Welcome re-sends {h} of {} to {}, under the base it sent",
                        self.seed,
                        self.now,
                        u.doc,
                        d.name
                    );
                }
            }
        }
        let summary = if self.trace {
            describe_server(&msg)
        } else {
            String::new()
        };
        match s.cs.handle(&mut d.replica, msg) {
            Ok(out) => {
                if out
                    .events
                    .iter()
                    .any(|e| matches!(e, ClientEvent::Welcomed { .. }))
                {
                    d.backoff.reset();
                }
                for id in d.replica.doc_ids() {
                    let base = &d.replica.get(&id).unwrap().sync.base;
                    let set = d.confirmed.entry(id).or_default();
                    set.extend(base.iter().map(|h| ChangeHash(*h)));
                }
                let resyncs = out
                    .send
                    .iter()
                    .filter(|m| matches!(m, ClientMsg::Resync { .. }))
                    .count();
                // In order, the server always sends exactly what the device lacks.
                assert!(
                    resyncs == 0 || self.transport == Transport::Datagram,
                    "{}: {} needs a resync on an in-order connection after {summary}",
                    self.ctx(),
                    self.devices[dev].name
                );
                self.stats.resyncs += resyncs as u64;
                self.log(|| {
                    format!(
                        "{} <- {summary} => sends {}",
                        self.devices[dev].name,
                        out.send
                            .iter()
                            .map(describe_client)
                            .collect::<Vec<_>>()
                            .join(" | ")
                    )
                });
                for m in out.send {
                    self.send_up(conn, &m);
                }
            }
            Err(e) => {
                let ctx = self.ctx();
                let name = &self.devices[dev].name;
                match &e {
                    SessionError::Server { .. } if self.transport == Transport::Datagram => {}
                    _ => panic!("{ctx}: session of {name} failed: {e} (last message {summary})"),
                }
                self.log(|| format!("{name} session error: {e}"));
                self.stats.session_errors += 1;
                self.drop_session(dev, true);
            }
        }
    }

    // ----- network -------------------------------------------------------

    fn schedule(&mut self, at: u64, p: Payload) {
        self.queue.insert((at, self.next_seq), p);
        self.next_seq += 1;
    }

    fn send_up(&mut self, conn: ConnId, msg: &ClientMsg) {
        let frame = wire::encode(msg);
        self.transmit(conn, Dir::Up, Payload::Up { conn, frame });
    }

    fn transmit(&mut self, conn: ConnId, dir: Dir, payload: Payload) {
        let c = &self.conns[&conn];
        if c.broken {
            return;
        }
        let dev = c.dev;
        self.stats.messages += 1;
        let faulty = !self.healing;
        if faulty && (self.partitioned(dev) || self.rng.random_bool(self.faults.loss)) {
            self.lose(conn);
            return;
        }
        let (lo, hi) = self.faults.delay_ms;
        let mut at = self.now + self.rng.random_range(lo..=hi);
        let in_order = self.transport == Transport::Stream || self.healing;
        let c = self.conns.get_mut(&conn).unwrap();
        let last = match dir {
            Dir::Up => &mut c.last_up,
            Dir::Down => &mut c.last_down,
        };
        if in_order {
            at = at.max(*last);
        }
        *last = (*last).max(at);
        if self.transport == Transport::Datagram && faulty && self.rng.random_bool(self.faults.dup)
        {
            self.stats.duplicated += 1;
            let again = self.now + self.rng.random_range(lo..=hi * 2);
            self.schedule(again, payload.clone());
        }
        self.schedule(at, payload);
    }

    /// A message was lost: under the stream transport the connection dies.
    fn lose(&mut self, conn: ConnId) {
        self.stats.lost += 1;
        if self.transport == Transport::Stream {
            let c = self.conns.get_mut(&conn).unwrap();
            if !c.broken {
                c.broken = true;
                self.stats.broken_connections += 1;
                let at = self.now + self.rng.random_range(1_000..3_000);
                self.schedule(at, Payload::CloseDown { conn });
                self.schedule(at, Payload::CloseUp { conn });
                self.log(|| format!("connection {conn} breaks"));
            }
        }
    }

    fn deliver(&mut self, p: Payload) {
        match p {
            Payload::Up { conn, frame } => {
                let c = &self.conns[&conn];
                if c.broken || c.server == ServerSide::Closed {
                    return;
                }
                if self.partitioned(c.dev) {
                    self.lose(conn);
                    return;
                }
                let header: [u8; wire::HEADER_LEN] = frame[..wire::HEADER_LEN].try_into().unwrap();
                let len = wire::body_len(header, self.config.limits.max_frame).unwrap();
                assert_eq!(len, frame.len() - wire::HEADER_LEN);
                if c.server == ServerSide::Unseen {
                    self.server.connect(conn);
                    self.conns.get_mut(&conn).unwrap().server = ServerSide::Open;
                }
                self.log(|| {
                    let m = wire::decode::<ClientMsg>(&frame[wire::HEADER_LEN..]).unwrap();
                    let dev = self.conns[&conn].dev;
                    format!(
                        "server <- {conn} ({}): {}",
                        self.devices[dev].name,
                        describe_client(&m)
                    )
                });
                let actions =
                    self.server
                        .handle_frame(self.unix(), conn, &frame[wire::HEADER_LEN..]);
                self.execute(actions);
            }
            Payload::Down { conn, frame } => {
                let c = &self.conns[&conn];
                if c.broken {
                    return;
                }
                if self.partitioned(c.dev) {
                    self.lose(conn);
                    return;
                }
                self.device_receive(conn, &frame);
            }
            Payload::CloseDown { conn } => {
                let dev = self.conns[&conn].dev;
                if self.devices[dev]
                    .sess
                    .as_ref()
                    .is_some_and(|s| s.conn == conn)
                {
                    self.drop_session(dev, false);
                }
            }
            Payload::CloseUp { conn } => {
                let c = self.conns.get_mut(&conn).unwrap();
                if c.server == ServerSide::Open {
                    self.server.disconnect(conn);
                }
                c.server = ServerSide::Closed;
            }
        }
    }

    // ----- server --------------------------------------------------------

    /// Executes one batch of server actions in order, checking invariants on
    /// each; the server may crash after any prefix of the batch.
    fn execute(&mut self, actions: Vec<ServerAction>) {
        let crash_at =
            (!self.healing && !actions.is_empty() && self.rng.random_bool(self.faults.batch_crash))
                .then(|| self.rng.random_range(0..=actions.len()));
        let mut persisted = false;
        for (i, a) in actions.into_iter().enumerate() {
            if crash_at == Some(i) {
                self.stats.batch_crashes += 1;
                self.log(|| format!("server crashes after {i} actions of a batch"));
                self.restart_server(false);
                return;
            }
            match a {
                ServerAction::Persist { doc, changes } => {
                    self.persist(doc, changes);
                    persisted = true;
                }
                ServerAction::Send { conn, frame, .. } => {
                    self.check_outgoing(conn, &frame);
                    if persisted && crash_at == Some(i + 1) {
                        self.stats.persist_without_ack += 1;
                    }
                    self.transmit(conn, Dir::Down, Payload::Down { conn, frame });
                }
                ServerAction::Broadcast { conns, frame, .. } => {
                    for conn in conns {
                        self.check_outgoing(conn, &frame);
                        self.transmit(
                            conn,
                            Dir::Down,
                            Payload::Down {
                                conn,
                                frame: frame.clone(),
                            },
                        );
                    }
                }
                ServerAction::Close { conn, code } => {
                    self.log(|| format!("server closes {conn}: {code}"));
                    let c = self.conns.get_mut(&conn).unwrap();
                    c.server = ServerSide::Closed;
                    let last = c.last_down;
                    let at = (self.now
                        + self
                            .rng
                            .random_range(self.faults.delay_ms.0..=self.faults.delay_ms.1))
                    .max(last);
                    self.schedule(at, Payload::CloseDown { conn });
                }
            }
        }
        if crash_at.is_some() {
            self.stats.batch_crashes += 1;
            self.restart_server(false);
        }
    }

    fn persist(&mut self, doc: DocId, changes: Vec<Vec<u8>>) {
        let ctx = self.ctx();
        let on_disk = self.disk_hashes.entry(doc.clone()).or_default();
        for raw in &changes {
            let c = Change::try_from(raw.as_slice()).unwrap();
            let h = c.hash();
            assert!(
                !self.forged.contains(&h),
                "{ctx}: forged change {h} persisted to {doc}"
            );
            let author = self
                .actors
                .get(c.actor_id().to_bytes())
                .map(|&i| &self.devices[i]);
            if doc.server_written() {
                // Seat outcomes and counts: the server's own changes only.
                assert_eq!(
                    *c.actor_id(),
                    seatdoc::server_actor(&doc),
                    "{ctx}: change {h} to {doc} not made by the server"
                );
            } else {
                // The shared genesis of the attendee document's requests is
                // made by every device alike.
                let genesis = seatdoc::requests_genesis(&doc.to_string()).unwrap();
                let Some(author) = author.filter(|_| h != genesis.hash()) else {
                    assert!(
                        h == genesis.hash() && matches!(doc, DocId::Attendee(..)),
                        "{ctx}: change {h} by unknown actor {} persisted to {doc}",
                        c.actor_id()
                    );
                    on_disk.insert(h);
                    continue;
                };
                assert!(
                    author.claims.may_write(&doc),
                    "{ctx}: change {h} by {} persisted to {doc}, which it may not write",
                    author.name
                );
            }
            assert!(
                !on_disk.contains(&h),
                "{ctx}: change {h} persisted twice to {doc}"
            );
            for dep in c.deps() {
                assert!(
                    on_disk.contains(dep),
                    "{ctx}: change {h} persisted to {doc} before its dependency {dep}"
                );
            }
            on_disk.insert(h);
        }
        self.log(|| format!("persist {} changes to {doc}", changes.len()));
        self.disk.entry(doc).or_default().extend(changes);
    }

    /// What the server sends must be durable, and readable by the receiver.
    fn check_outgoing(&self, conn: ConnId, frame: &[u8]) {
        let dev = &self.devices[self.conns[&conn].dev];
        let durable = |doc: &DocId, heads: &[[u8; 32]], what: &str| {
            let on_disk = self.disk_hashes.get(doc);
            for h in heads {
                assert!(
                    on_disk.is_some_and(|d| d.contains(&ChangeHash(*h))),
                    "{}: {what} for {doc} to {} names head {} that is not on disk",
                    self.ctx(),
                    dev.name,
                    ChangeHash(*h)
                );
            }
        };
        let readable = |doc: &DocId, what: &str| {
            assert!(
                dev.claims.may_read(doc),
                "{}: {what} for {doc} sent to {}, who may not read it",
                self.ctx(),
                dev.name
            );
        };
        match decode_frame(frame) {
            ServerMsg::Welcome { docs, .. } => {
                let mut ids: Vec<DocId> = docs.iter().map(|u| u.doc.clone()).collect();
                ids.sort();
                let mut want = dev.claims.readable_docs().to_vec();
                want.sort();
                assert_eq!(
                    ids,
                    want,
                    "{}: Welcome to {} lists the wrong documents",
                    self.ctx(),
                    dev.name
                );
                for u in docs {
                    readable(&u.doc, "Welcome");
                    durable(&u.doc, &u.heads, "Welcome");
                }
            }
            ServerMsg::Update(u) => {
                readable(&u.doc, "Update");
                durable(&u.doc, &u.heads, "Update");
                assert!(
                    !u.is_empty(),
                    "{}: empty Update to {}",
                    self.ctx(),
                    dev.name
                );
            }
            ServerMsg::Ack { doc, heads } => {
                readable(&doc, "Ack");
                durable(&doc, &heads, "Ack");
            }
            ServerMsg::Heads { doc, heads } => {
                readable(&doc, "Heads");
                durable(&doc, &heads, "Heads");
            }
            ServerMsg::Refused {
                doc,
                heads,
                reason,
                message,
                ..
            } => {
                assert!(
                    message.contains(&doc.to_string()),
                    "{}: refusal message {message:?} does not name {doc}",
                    self.ctx()
                );
                if dev.claims.may_read(&doc) {
                    durable(&doc, &heads, "Refused");
                } else {
                    assert!(
                        heads.is_empty(),
                        "{}: refusal leaks heads of {doc} to {}",
                        self.ctx(),
                        dev.name
                    );
                }
                assert!(
                    reason != RefusalReason::MissingDeps || self.transport == Transport::Datagram,
                    "{}: {} pushed changes out of causal order on an in-order connection: {message}",
                    self.ctx(),
                    dev.name
                );
                if !dev.forger {
                    // Legitimate devices only ever push what they may write.
                    assert_eq!(
                        reason,
                        RefusalReason::MissingDeps,
                        "{}: {} got a permanent refusal for {doc}: {message}",
                        self.ctx(),
                        dev.name
                    );
                }
            }
            ServerMsg::Error { code, message } => {
                assert!(
                    self.transport == Transport::Datagram,
                    "{}: server error to {} on an in-order connection: {code}: {message}",
                    self.ctx(),
                    dev.name
                );
            }
        }
    }

    /// Rebuilds the server from its disk. Every session ends.
    fn restart_server(&mut self, between_batches: bool) {
        let mut core = ServerCore::new(self.config.clone());
        for (doc, changes) in &self.disk {
            let bytes = changes.concat();
            if let Err(e) = core.load_doc(doc.clone(), &bytes) {
                panic!("{}: disk copy of {doc} does not load: {e}", self.ctx());
            }
        }
        if between_batches {
            self.stats.server_crashes += 1;
            // Between batches everything the server holds in memory is durable.
            let heads = |s: &ServerCore| -> BTreeMap<DocId, Vec<ChangeHash>> {
                s.doc_ids()
                    .map(|d| (d.clone(), s.doc(d).unwrap().get_heads()))
                    .filter(|(_, h)| !h.is_empty())
                    .collect()
            };
            assert_eq!(
                heads(&self.server),
                heads(&core),
                "{}: server memory and disk differ",
                self.ctx()
            );
        }
        self.log(|| "server restarts from disk".into());
        self.server = core;
        let open: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.server == ServerSide::Open)
            .map(|(&id, _)| id)
            .collect();
        for conn in open {
            let c = self.conns.get_mut(&conn).unwrap();
            c.server = ServerSide::Closed;
            let last = c.last_down;
            let at = self.now + self.rng.random_range(200..3_000);
            let at = if self.transport == Transport::Stream {
                at.max(last)
            } else {
                at
            };
            self.schedule(at, Payload::CloseDown { conn });
        }
    }

    // ----- final checks --------------------------------------------------

    fn final_checks(&mut self) {
        let ctx = self.ctx();
        self.restart_server(true);
        let agenda = DocId::Agenda(self.event.clone());
        let server_all: HashMap<DocId, HashSet<ChangeHash>> = self
            .server
            .doc_ids()
            .map(|d| (d.clone(), all_hashes(&self.server.doc(d).unwrap())))
            .collect();
        let on_server =
            |doc: &DocId, h: &ChangeHash| server_all.get(doc).is_some_and(|s| s.contains(h));
        let server_heads = |doc: &DocId| {
            self.server
                .doc(doc)
                .map(|d| d.get_heads())
                .unwrap_or_default()
        };

        for d in &self.devices {
            let name = &d.name;
            // (4) attendee documents never reach another user's device.
            for id in d.replica.doc_ids() {
                assert!(
                    d.claims.may_read(&id),
                    "{ctx}: {name} holds {id}, which it may not read"
                );
            }
            // Only forged changes are ever refused, and only on the forger.
            let forged: HashSet<ChangeHash> = d.forged_local.iter().copied().collect();
            for (doc, r) in d.replica.refusals() {
                let h = ChangeHash(r.change);
                assert!(
                    forged.contains(&h),
                    "{ctx}: {name} holds a refusal of {h} on {doc} ({:?}: {}), which it did not forge",
                    r.reason,
                    r.message
                );
                assert_eq!(r.reason, RefusalReason::Forbidden, "{ctx}: {name}: {h}");
                assert!(
                    r.message.contains(&doc.to_string()),
                    "{ctx}: {name}: {}",
                    r.message
                );
            }
            // (1) every readable document has converged with the server.
            for id in d.claims.readable_docs() {
                let server = server_heads(&id);
                let Some(rd) = d.replica.get(&id) else {
                    assert!(
                        server.is_empty(),
                        "{ctx}: {name} lacks {id}, which the server has"
                    );
                    continue;
                };
                let refused: HashSet<ChangeHash> = rd
                    .sync
                    .refused
                    .iter()
                    .map(|r| ChangeHash(r.change))
                    .collect();
                if refused.is_empty() {
                    assert_eq!(
                        rd.doc.get_heads(),
                        server,
                        "{ctx}: {name} has other heads than the server for {id}"
                    );
                } else {
                    let mine = rd.doc.get_changes(&[]);
                    let have: HashSet<ChangeHash> = mine.iter().map(Change::hash).collect();
                    let theirs = server_all.get(&id).cloned().unwrap_or_default();
                    assert!(
                        theirs.is_subset(&have),
                        "{ctx}: {name} misses server changes of {id}"
                    );
                    let t = tainted(&mine, &refused);
                    // Status lists every change that cannot reach the server.
                    let listed: HashSet<ChangeHash> = d
                        .replica
                        .refusals()
                        .into_iter()
                        .filter(|(doc, _)| *doc == id)
                        .map(|(_, r)| ChangeHash(r.change))
                        .collect();
                    for h in have.difference(&theirs) {
                        assert!(
                            t.contains(h),
                            "{ctx}: {name} holds {h} on {id}, neither on the server nor refused"
                        );
                        assert!(
                            listed.contains(h),
                            "{ctx}: {name} does not report {h} on {id} as refused"
                        );
                    }
                }
                assert!(
                    rd.doc.get_missing_deps(&[]).is_empty(),
                    "{ctx}: {name} has queued changes in {id}"
                );
            }
            // (2) nothing the server confirmed is lost.
            for (id, hs) in &d.confirmed {
                for h in hs {
                    assert!(
                        on_server(id, h),
                        "{ctx}: {name} saw {h} of {id} confirmed, but the server lost it"
                    );
                }
            }
            // (3) every legitimate local change reached the server.
            for (id, h) in &d.local {
                assert!(
                    on_server(id, h),
                    "{ctx}: local change {h} of {id} by {name} never reached the server"
                );
            }
            // (5) forged agenda changes were refused, are kept, and not pending.
            if let Some(rd) = d.replica.get(&agenda) {
                let refused: HashSet<ChangeHash> = rd
                    .sync
                    .refused
                    .iter()
                    .map(|r| ChangeHash(r.change))
                    .collect();
                let t = tainted(&rd.doc.get_changes(&[]), &refused);
                for h in &d.forged_local {
                    assert!(
                        rd.doc.get_change_by_hash(h).is_some(),
                        "{ctx}: {name} lost its forged change {h}"
                    );
                    assert!(
                        t.contains(h),
                        "{ctx}: forged change {h} of {name} is not marked refused"
                    );
                    if refused.contains(h) {
                        self.stats.forged_refused_explicitly += 1;
                    } else {
                        self.stats.forged_refused_by_ancestry += 1;
                    }
                }
            }
            assert_eq!(
                d.replica.pending_count(),
                0,
                "{ctx}: {name} still has pending changes"
            );
        }
        for h in &self.forged {
            for (doc, all) in &server_all {
                assert!(
                    !all.contains(h),
                    "{ctx}: forged change {h} is in the server's {doc}"
                );
            }
        }
        // (6) seats: every request the server holds has exactly one outcome
        // (decided once, by request id) in its user's seats document, and
        // no session holds more seats than its capacity.
        self.check_seats();
        let users: BTreeSet<UserId> = self.devices.iter().map(|d| d.claims.user.clone()).collect();
        for user in users {
            let own = DocId::Attendee(self.event.clone(), user.clone());
            let Some(attendee) = self.server.doc(&own) else {
                continue;
            };
            let requests: Vec<String> = seatdoc::read_requests(&attendee)
                .into_iter()
                .map(|r| match r {
                    Ok(r) => r.id.to_string(),
                    Err((id, _)) => id.to_string(),
                })
                .collect();
            drop(attendee);
            let seats = DocId::Seats(self.event.clone(), user.clone());
            let decided = self
                .server
                .doc(&seats)
                .map(|d| seatdoc::read_decided(&d))
                .unwrap_or_default();
            for r in &requests {
                assert!(
                    decided.contains_key(r),
                    "{ctx}: request {r} of {user} was acknowledged but never decided"
                );
            }
            assert_eq!(
                decided.len(),
                requests.len(),
                "{ctx}: {user} has outcomes of requests the server does not hold"
            );
            self.stats.seat_decided += requests.len() as u64;
        }
        self.stats.seats_held += self.seats_held().values().sum::<u64>();
        self.log(|| format!("done: {:?}", self.stats));
    }
}

// ---------------------------------------------------------------------------
// Seed runner
// ---------------------------------------------------------------------------

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(non-string panic)".into())
}

fn run_seeds(transport: Transport, test_name: &str) {
    let seeds: Vec<u64> = match std::env::var("LANYARD_SIM_SEED") {
        Ok(s) => vec![s
            .trim()
            .parse()
            .expect("LANYARD_SIM_SEED must be an integer")],
        Err(_) => {
            let n = std::env::var("LANYARD_SIM_SEEDS")
                .ok()
                .map(|s| {
                    s.trim()
                        .parse()
                        .expect("LANYARD_SIM_SEEDS must be an integer")
                })
                .unwrap_or(DEFAULT_SEEDS);
            (0..n).collect()
        }
    };
    let started = Instant::now();
    let mut total = SimStats::default();
    for &seed in &seeds {
        match std::panic::catch_unwind(|| Sim::new(seed, transport).run()) {
            Ok(report) => total.add(&report.stats),
            Err(e) => panic!(
                "simulation failed: seed={seed} transport={transport:?}: {}\n\
                 replay: LANYARD_SIM_SEED={seed} LANYARD_SIM_TRACE=1 cargo test -p lanyard-protocol \
                 --test sim {test_name} -- --nocapture",
                panic_text(&*e)
            ),
        }
    }
    eprintln!(
        "{test_name}: {} seeds in {:.1?}\n{total:#?}",
        seeds.len(),
        started.elapsed()
    );
    if seeds.len() >= 50 {
        // The harness must actually exercise what it claims to.
        assert!(total.lost > 0 && total.partitions > 0, "{total:?}");
        assert!(
            total.server_crashes > 0 && total.batch_crashes > 0 && total.persist_without_ack > 0,
            "{total:?}"
        );
        assert!(total.device_restarts > 0, "{total:?}");
        assert!(
            total.forged_local > 0 && total.forged_raw > 0 && total.forged_refused_explicitly > 0,
            "{total:?}"
        );
        assert!(total.empty_welcomes > 0 && total.acks > 0, "{total:?}");
        if transport == Transport::Datagram {
            assert!(
                total.duplicated > 0 && total.resyncs > 0 && total.stuck_reconnects > 0,
                "{total:?}"
            );
        } else {
            assert!(total.broken_connections > 0, "{total:?}");
        }
    }
}

#[test]
fn stream_transport_converges_for_every_seed() {
    run_seeds(
        Transport::Stream,
        "stream_transport_converges_for_every_seed",
    );
}

#[test]
fn datagram_transport_converges_for_every_seed() {
    run_seeds(
        Transport::Datagram,
        "datagram_transport_converges_for_every_seed",
    );
}

#[test]
fn a_seed_replays_identically() {
    for transport in [Transport::Stream, Transport::Datagram] {
        let a = Sim::new(7, transport).run();
        let b = Sim::new(7, transport).run();
        assert_eq!(a, b, "{transport:?}");
        assert!(a.stats.local_changes > 0);
    }
}

// ---------------------------------------------------------------------------
// Focused deterministic tests
// ---------------------------------------------------------------------------

fn replica(n: u8) -> Replica {
    Replica::new(ActorId::from(&[n; 16][..]))
}

#[test]
fn a_device_with_nothing_new_gets_an_empty_welcome_in_one_exchange() {
    let mut f = Fixture::new(9);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let agenda = f.agenda();
    let mut org = replica(1);
    for _ in 0..3 {
        edit_agenda(&mut rng, &mut org.get_or_create(&agenda).doc);
    }
    f.sync(
        1,
        f.token("org", Role::Organizer, "laptop", EXPIRES),
        &mut org,
    );

    let mut att = replica(2);
    let token = f.token("ann", Role::Attendee, "phone", EXPIRES);
    f.sync(2, token.clone(), &mut att);
    assert_eq!(
        att.get(&agenda).unwrap().doc.get_heads(),
        org.get(&agenda).unwrap().doc.get_heads()
    );
    f.server.disconnect(2);

    // Reconnect with nothing new: only a Hello goes out ...
    let (mut s, msgs) = ClientSession::start(f.event.clone(), token, &att);
    assert_eq!(msgs.len(), 1);
    assert!(matches!(msgs[0], ClientMsg::Hello { .. }));
    f.server.connect(3);
    let actions = f.server.handle(NOW, 3, msgs[0].clone());
    // ... and exactly one Welcome comes back, with no changes in it.
    assert_eq!(actions.len(), 1, "{actions:?}");
    let ServerAction::Send { conn: 3, frame, .. } = &actions[0] else {
        panic!("expected a Send, got {actions:?}");
    };
    let ServerMsg::Welcome { docs, .. } = decode_frame(frame) else {
        panic!("expected a Welcome");
    };
    // The agenda, the attendee's own document, the seat counts and the
    // attendee's seat outcomes.
    assert_eq!(docs.len(), 4);
    assert!(docs.iter().all(|u| u.is_empty()), "{docs:?}");
    let out = s
        .handle(
            &mut att,
            ServerMsg::Welcome {
                docs,
                limits: Default::default(),
            },
        )
        .unwrap();
    assert!(out.send.is_empty() && out.docs_changed.is_empty());
    assert!(s.is_settled(&att));
}

#[test]
fn a_push_is_acknowledged_only_after_its_persist_action() {
    let mut f = Fixture::new(9);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let agenda = f.agenda();
    let org_token = f.token("org", Role::Organizer, "laptop", EXPIRES);
    let mut org = replica(1);
    let mut org_s = f.sync(1, org_token.clone(), &mut org);
    let mut att = replica(2);
    let mut att_s = f.sync(
        2,
        f.token("ann", Role::Attendee, "phone", EXPIRES),
        &mut att,
    );

    let h = edit_agenda(&mut rng, &mut org.get_or_create(&agenda).doc);
    let raw = org
        .get(&agenda)
        .unwrap()
        .doc
        .get_change_by_hash(&h)
        .unwrap()
        .raw_bytes()
        .to_vec();
    let msgs = org_s.local_change(&org, &agenda);
    assert_eq!(msgs.len(), 1);
    let actions = f.server.handle(NOW, 1, msgs[0].clone());
    // The driver executes the Persist, then crashes before anything is sent.
    for a in &actions {
        if let ServerAction::Persist { doc, changes } = a {
            f.disk
                .entry(doc.clone())
                .or_default()
                .extend(changes.iter().cloned());
        }
    }

    let persist = actions
        .iter()
        .position(|a| matches!(a, ServerAction::Persist { doc, changes } if *doc == agenda && *changes == vec![raw.clone()]))
        .expect("the change is persisted");
    let sent = |conn: ConnId| {
        actions
            .iter()
            .enumerate()
            .flat_map(|(i, a)| {
                a.sends()
                    .into_iter()
                    .filter(|(c, _)| *c == conn)
                    .map(move |(_, frame)| (i, decode_frame(frame)))
            })
            .collect::<Vec<_>>()
    };
    let to_org = sent(1);
    let to_att = sent(2);
    let (ack_at, ack) = to_org
        .iter()
        .find(|(_, m)| matches!(m, ServerMsg::Ack { .. }))
        .expect("an Ack");
    assert!(
        persist < *ack_at,
        "Ack at {ack_at} before Persist at {persist}"
    );
    let (upd_at, upd) = to_att.first().expect("fan-out to the attendee");
    assert!(
        persist < *upd_at,
        "fan-out at {upd_at} before Persist at {persist}"
    );
    assert!(matches!(upd, ServerMsg::Update(u) if u.changes == vec![raw.clone()]));
    att_s.handle(&mut att, upd.clone()).unwrap();
    assert!(att_s.is_settled(&att));
    assert_eq!(att.get(&agenda).unwrap().doc.get_heads(), vec![h]);

    // The server crashes after the Persist, before the Ack left: the
    // organizer still has the change pending, and pushing it again after the
    // restart is acknowledged without storing it twice.
    assert_eq!(org.pending_count(), 1);
    f.restart();
    let disk_len = f.disk[&agenda].len();
    let mut org_s = f.sync(4, org_token, &mut org);
    assert_eq!(f.disk[&agenda].len(), disk_len);
    assert_eq!(org.pending_count(), 0);
    assert!(org_s.is_settled(&org));
    assert_eq!(org.get(&agenda).unwrap().sync.base, vec![h.0]);
    // The Ack that arrives after the fact is harmless.
    org_s.handle(&mut org, ack.clone()).unwrap();
    assert_eq!(org.get(&agenda).unwrap().sync.base, vec![h.0]);
}

#[test]
fn an_attendee_push_to_the_agenda_is_refused_and_kept_marked() {
    let mut f = Fixture::new(9);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let agenda = f.agenda();
    let mut org = replica(1);
    edit_agenda(&mut rng, &mut org.get_or_create(&agenda).doc);
    f.sync(
        1,
        f.token("org", Role::Organizer, "laptop", EXPIRES),
        &mut org,
    );
    let before = f.disk.clone();

    let mut att = replica(2);
    let forged = edit_agenda(&mut rng, &mut att.get_or_create(&agenda).doc);
    let token = f.token("mallory", Role::Attendee, "phone", EXPIRES);
    f.server.connect(2);
    let (mut s, msgs) = ClientSession::start(f.event.clone(), token, &att);
    assert_eq!(msgs.len(), 2, "Hello and the pipelined push");
    let replies = f.exchange(NOW, 2, msgs);
    assert_eq!(f.disk, before, "nothing was stored");
    let mut refused = false;
    for (_, m) in replies {
        if let ServerMsg::Refused {
            doc,
            reason,
            message,
            changes,
            ..
        } = &m
        {
            assert_eq!(*doc, agenda);
            assert_eq!(*reason, RefusalReason::Forbidden);
            assert!(message.contains(&agenda.to_string()), "{message}");
            assert_eq!(*changes, vec![forged.0]);
            refused = true;
        }
        assert!(s.handle(&mut att, m).unwrap().send.is_empty());
    }
    assert!(refused);
    assert!(s.is_settled(&att));
    assert_eq!(att.pending_count(), 0);
    let r = att.refusals();
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].0.clone(), r[0].1.change), (agenda.clone(), forged.0));
    // The device keeps its change, merged with the organizer's.
    let doc = &att.get(&agenda).unwrap().doc;
    assert!(doc.get_change_by_hash(&forged).is_some());
    let server = f.server.doc(&agenda).unwrap();
    assert!(server.get_change_by_hash(&forged).is_none());
    assert_eq!(all_hashes(&server).len() + 1, all_hashes(doc).len());
}

#[test]
fn an_update_that_overtakes_another_is_resynced() {
    let mut f = Fixture::new(9);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let agenda = f.agenda();
    let mut org = replica(1);
    let mut org_s = f.sync(
        1,
        f.token("org", Role::Organizer, "laptop", EXPIRES),
        &mut org,
    );
    let mut att = replica(2);
    let mut att_s = f.sync(
        2,
        f.token("ann", Role::Attendee, "phone", EXPIRES),
        &mut att,
    );

    // Two pushes, two fan-out updates to the attendee.
    let mut updates = Vec::new();
    for _ in 0..2 {
        edit_agenda(&mut rng, &mut org.get_or_create(&agenda).doc);
        let msgs = org_s.local_change(&org, &agenda);
        for (to, m) in f.exchange(NOW, 1, msgs) {
            if to == 2 {
                updates.push(m);
            } else {
                org_s.handle(&mut org, m).unwrap();
            }
        }
    }
    assert_eq!(updates.len(), 2);
    // The second arrives first: the attendee cannot reach its heads and asks.
    let out = att_s.handle(&mut att, updates[1].clone()).unwrap();
    assert!(
        matches!(out.send.as_slice(), [ClientMsg::Resync { .. }]),
        "{:?}",
        out.send
    );
    assert!(!att_s.is_settled(&att));
    let resync = out.send;
    // The first arrives: the attendee now holds both, but its base only covers
    // the first, so it re-sends the organizer's second change. That is not an
    // attendee writing the agenda: the server must not refuse it (it used to,
    // and the attendee then listed the organizer's change as its own refusal).
    let out = att_s.handle(&mut att, updates[0].clone()).unwrap();
    let mut msgs: Vec<ClientMsg> = resync.into_iter().chain(out.send).collect();
    while !msgs.is_empty() {
        let mut next = Vec::new();
        for (to, m) in f.exchange(NOW, 2, std::mem::take(&mut msgs)) {
            assert_eq!(to, 2);
            next.extend(att_s.handle(&mut att, m).unwrap().send);
        }
        msgs = next;
    }
    assert!(att_s.is_settled(&att));
    assert_eq!(
        att.get(&agenda).unwrap().doc.get_heads(),
        f.server.doc(&agenda).unwrap().get_heads()
    );
    assert!(att.refusals().is_empty(), "{:?}", att.refusals());
}
