//! Shared helpers of Lanyard's fuzz targets: a pool of real Automerge changes
//! (mutated with their checksum fixed up by `lanyard_protocol::testing`),
//! tokens pre-signed with the harness's key, and the structured scenario the
//! `server_core` target runs.

use std::sync::OnceLock;

use automerge::marks::{ExpandMark, Mark};
use automerge::transaction::{CommitOptions, Transactable as _};
use automerge::{ActorId, Automerge, Change, ObjType, ReadDoc as _, ScalarValue, ROOT};
use lanyard_protocol::testing::{
    self, body_start, checksum_ok, event, fix_checksum, hello, honest_change, TestKey, IN_AN_HOUR,
    NOW,
};
use lanyard_protocol::wire::{self, Hash};
use lanyard_protocol::{DocId, EventId, Role, ServerAction, ServerCore, ServerMsg, UserId};

/// Real Automerge changes (raw chunks) covering many op kinds: scalars of
/// every type, nested maps and lists, text with marks, counters and their
/// increments, deletes, two concurrent actors and a merge, a commit message
/// and time, and a change large enough for Automerge to compress (the last
/// entry is its compressed form). Causally ordered.
pub fn pool() -> &'static [Vec<u8>] {
    static POOL: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    POOL.get_or_init(build_pool)
}

/// Hashes of [`pool`], same order.
pub fn pool_hashes() -> &'static [Hash] {
    static HASHES: OnceLock<Vec<Hash>> = OnceLock::new();
    HASHES.get_or_init(|| {
        pool()
            .iter()
            .filter_map(|b| Change::try_from(b.as_slice()).ok())
            .map(|c| c.hash().0)
            .collect()
    })
}

fn build_pool() -> Vec<Vec<u8>> {
    fn go() -> Result<Vec<Vec<u8>>, automerge::AutomergeError> {
        let mut a = Automerge::new().with_actor(ActorId::from(&[1u8; 16][..]));
        let mut tx = a.transaction();
        tx.put(ROOT, "title", "RustConf")?;
        tx.put(ROOT, "year", 2026i64)?;
        tx.put(ROOT, "ratio", 0.5f64)?;
        tx.put(ROOT, "open", true)?;
        tx.put(ROOT, "nothing", ScalarValue::Null)?;
        tx.put(ROOT, "blob", ScalarValue::Bytes(vec![0, 1, 2, 255]))?;
        tx.put(ROOT, "when", ScalarValue::Timestamp(1_700_000_000_000))?;
        tx.put(ROOT, "uint", ScalarValue::Uint(u64::MAX))?;
        tx.put(ROOT, "likes", ScalarValue::counter(1))?;
        let sessions = tx.put_object(ROOT, "sessions", ObjType::Map)?;
        let s = tx.put_object(&sessions, "s1", ObjType::Map)?;
        tx.put(&s, "room", "Hall A")?;
        tx.put(&s, "start", 1_700_000_000i64)?;
        let speakers = tx.put_object(&s, "speakers", ObjType::List)?;
        tx.insert(&speakers, 0, "Ada")?;
        tx.insert(&speakers, 1, "Grace")?;
        let text = tx.put_object(&s, "abstract", ObjType::Text)?;
        tx.splice_text(&text, 0, 0, "Hello, wörld! 👋")?;
        tx.commit_with(
            CommitOptions::default()
                .with_message("first")
                .with_time(1_700_000_000),
        );

        let mut tx = a.transaction();
        tx.increment(ROOT, "likes", 5)?;
        tx.mark(
            &text,
            Mark::new("bold".into(), true, 0, 5),
            ExpandMark::After,
        )?;
        tx.splice_text(&text, 7, 5, "world")?;
        tx.delete(&speakers, 0)?;
        tx.delete(ROOT, "nothing")?;
        let table = tx.put_object(ROOT, "tags", ObjType::Map)?;
        tx.put(&table, "t", "rust")?;
        tx.commit();

        let mut b = a.fork().with_actor(ActorId::from(&[2u8; 16][..]));
        let mut tx = a.transaction();
        tx.put(&s, "room", "Hall B")?;
        tx.commit();
        let mut tx = b.transaction();
        tx.put(&s, "room", "Hall C")?;
        tx.increment(ROOT, "likes", -2)?;
        tx.insert(&speakers, 0, "Barbara")?;
        tx.commit();
        a.merge(&mut b)?;

        let mut tx = a.transaction();
        tx.put(ROOT, "merged", "yes")?;
        let long = tx.put_object(ROOT, "long", ObjType::Text)?;
        let words: String = (0..40).map(|i| format!("word{i} ")).collect();
        tx.splice_text(&long, 0, 0, &words)?;
        let list = tx.put_object(ROOT, "numbers", ObjType::List)?;
        for i in 0..16i64 {
            tx.insert(&list, i as usize, i * 1000)?;
        }
        tx.commit();

        let mut changes = a.get_changes(&[]);
        let mut out: Vec<Vec<u8>> = changes.iter().map(|c| c.raw_bytes().to_vec()).collect();
        if let Some(last) = changes.last_mut() {
            out.push(last.bytes().into_owned());
        }
        Ok(out)
    }
    let pool = go().unwrap_or_else(|e| panic!("building the change pool: {e}"));
    // `fix_checksum` must agree with Automerge on unmutated changes (all but
    // the last, compressed, entry: its checksum covers the uncompressed bytes).
    assert!(pool.len() >= 6, "pool too small");
    for c in &pool[..pool.len() - 1] {
        assert_eq!(&fix_checksum(c), c, "fix_checksum disagrees with Automerge");
    }
    assert_eq!(
        pool[pool.len() - 1][8],
        2,
        "last pool entry is not compressed"
    );
    pool
}

/// The signing key of every target's server (seed 9).
fn key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| TestKey::new(9))
}

fn id<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("fixed id is valid: {e:?}"))
}

/// Pre-signed tokens, all on device `dev` (signing per execution would
/// dominate the run time).
pub fn tokens() -> &'static [String; 5] {
    static TOKENS: OnceLock<[String; 5]> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let e = event();
        let k = key();
        [
            k.token(&e, "org", Role::Organizer, "dev", IN_AN_HOUR),
            k.token(&e, "ann", Role::Attendee, "dev", IN_AN_HOUR),
            k.token(&e, "bob", Role::Attendee, "dev", IN_AN_HOUR),
            k.token(&e, "ann", Role::Attendee, "dev", NOW.as_secs() - 1),
            k.token(
                &id(EventId::new("other")),
                "org",
                Role::Organizer,
                "dev",
                IN_AN_HOUR,
            ),
        ]
    })
}

/// A fresh server with the fixed key and default limits.
pub fn server() -> ServerCore {
    key().server(Default::default())
}

/// Which document a message names.
#[derive(Debug, Clone, Copy)]
pub enum DocPick {
    /// `agenda/conf`.
    Agenda,
    /// `attendee/conf/ann`.
    Ann,
    /// `attendee/conf/org`.
    Org,
    /// `attendee/conf/bob`.
    Bob,
    /// `agenda/other` (another event).
    OtherAgenda,
}

impl DocPick {
    /// The document.
    pub fn doc(self) -> DocId {
        let e = event();
        match self {
            DocPick::Agenda => DocId::Agenda(e),
            DocPick::Ann => DocId::Attendee(e, id(UserId::new("ann"))),
            DocPick::Org => DocId::Attendee(e, id(UserId::new("org"))),
            DocPick::Bob => DocId::Attendee(e, id(UserId::new("bob"))),
            DocPick::OtherAgenda => DocId::Agenda(id(EventId::new("other"))),
        }
    }
}

/// A hash sent to the server.
#[derive(Debug, Clone, Copy)]
pub enum HashPick {
    /// The hash of a pool change.
    Pool(u8),
    /// Any 32 bytes.
    Raw(Hash),
}

impl HashPick {
    /// The hash.
    pub fn hash(self) -> Hash {
        match self {
            HashPick::Pool(i) => {
                let h = pool_hashes();
                if h.is_empty() {
                    [0; 32]
                } else {
                    h[usize::from(i) % h.len()]
                }
            }
            HashPick::Raw(h) => h,
        }
    }
}

/// One mutation of a change chunk's body.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Overwrite a byte.
    Set {
        /// Position (modulo the body length).
        at: u16,
        /// New value.
        value: u8,
    },
    /// Flip bits of a byte.
    Xor {
        /// Position (modulo the body length).
        at: u16,
        /// Bits to flip.
        mask: u8,
    },
    /// Insert bytes.
    Insert {
        /// Position (modulo the body length + 1).
        at: u16,
        /// Inserted bytes.
        bytes: Vec<u8>,
    },
    /// Remove up to `len` bytes.
    Remove {
        /// Position (modulo the body length).
        at: u16,
        /// How many.
        len: u8,
    },
    /// Keep only the first bytes.
    Truncate {
        /// New length (modulo the body length + 1).
        len: u16,
    },
}

fn apply_edit(body: &mut Vec<u8>, edit: &Edit) {
    let n = body.len();
    match edit {
        Edit::Set { at, value } if n > 0 => body[usize::from(*at) % n] = *value,
        Edit::Xor { at, mask } if n > 0 => body[usize::from(*at) % n] ^= *mask,
        Edit::Insert { at, bytes } => {
            let at = usize::from(*at) % (n + 1);
            body.splice(at..at, bytes.iter().copied());
        }
        Edit::Remove { at, len } if n > 0 => {
            let at = usize::from(*at) % n;
            let end = (at + usize::from(*len)).min(n);
            body.drain(at..end);
        }
        Edit::Truncate { len } => body.truncate(usize::from(*len) % (n + 1)),
        _ => {}
    }
}

/// One change in a push.
#[derive(Debug, Clone)]
pub enum ChangeInput {
    /// A pool change as it is.
    Real(u8),
    /// A pool change with its body mutated, and its header (length and
    /// checksum) fixed up when `fix` is set.
    Mutated {
        /// Which pool change.
        base: u8,
        /// Mutations of the body, in order.
        edits: Vec<Edit>,
        /// Whether to recompute length and checksum afterwards.
        fix: bool,
    },
    /// Any bytes.
    Raw(Vec<u8>),
}

impl ChangeInput {
    /// The bytes pushed.
    pub fn bytes(&self) -> Vec<u8> {
        let pool = pool();
        let pick = |i: u8| -> Vec<u8> {
            if pool.is_empty() {
                Vec::new()
            } else {
                pool[usize::from(i) % pool.len()].clone()
            }
        };
        match self {
            ChangeInput::Real(i) => pick(*i),
            ChangeInput::Mutated { base, edits, fix } => {
                let chunk = pick(*base);
                let start = body_start(&chunk).unwrap_or(chunk.len());
                let mut body = chunk[start..].to_vec();
                for e in edits {
                    apply_edit(&mut body, e);
                }
                let mut out = chunk[..start].to_vec();
                out.extend_from_slice(&body);
                if *fix {
                    fix_checksum(&out)
                } else {
                    out
                }
            }
            ChangeInput::Raw(b) => b.clone(),
        }
    }
}

/// Which token a `Hello` carries.
#[derive(Debug, Clone, Copy)]
pub enum TokenPick {
    /// Organizer `org`.
    Organizer,
    /// Attendee `ann`.
    Ann,
    /// Attendee `bob`.
    Bob,
    /// Expired.
    Expired,
    /// Signed for another event.
    OtherEvent,
}

impl TokenPick {
    /// The token.
    pub fn token(self) -> String {
        let t = tokens();
        t[match self {
            TokenPick::Organizer => 0,
            TokenPick::Ann => 1,
            TokenPick::Bob => 2,
            TokenPick::Expired => 3,
            TokenPick::OtherEvent => 4,
        }]
        .clone()
    }
}

/// A document digest in a `Hello`.
#[derive(Debug, Clone)]
pub struct DigestInput {
    /// The document.
    pub doc: DocPick,
    /// Claimed heads.
    pub heads: Vec<HashPick>,
    /// Claimed base.
    pub base: Vec<HashPick>,
}

impl DigestInput {
    /// As sent on the wire.
    pub fn digest(&self) -> wire::DocDigest {
        wire::DocDigest {
            doc: self.doc.doc(),
            heads: self.heads.iter().map(|h| h.hash()).collect(),
            base: self.base.iter().map(|h| h.hash()).collect(),
        }
    }
}

/// One step of a server scenario. `conn` is taken modulo 3 (sessions 1..=3).
#[derive(Debug, Clone)]
pub enum Step {
    /// A `Push`.
    Push {
        /// The session.
        conn: u8,
        /// The document.
        doc: DocPick,
        /// The changes.
        changes: Vec<ChangeInput>,
    },
    /// A `Resync`.
    Resync {
        /// The session.
        conn: u8,
        /// The document.
        doc: DocPick,
        /// Hashes claimed held.
        have: Vec<HashPick>,
    },
    /// A `Hello` (a second one on a session is a protocol error).
    Hello {
        /// The session.
        conn: u8,
        /// The token.
        token: TokenPick,
        /// Whether the event named matches the token's.
        right_event: bool,
        /// Digests.
        docs: Vec<DigestInput>,
    },
    /// A raw frame body through `handle_frame`.
    Frame {
        /// The session.
        conn: u8,
        /// The body.
        body: Vec<u8>,
    },
    /// Opens the session (again).
    Connect {
        /// The session.
        conn: u8,
    },
    /// Closes the session.
    Disconnect {
        /// The session.
        conn: u8,
    },
}

/// A whole `server_core` run: session 1 says `Hello` first, then the steps.
/// Built from the fuzzer's bytes by [`Scenario::parse`].
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Session 1's token.
    pub token: TokenPick,
    /// Session 1's digests.
    pub docs: Vec<DigestInput>,
    /// The steps, at most 32 are run.
    pub steps: Vec<Step>,
}

/// Reads the fuzzer's bytes; zeros once they run out.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }

    /// Up to `max` items, the count taken from one byte.
    fn count(&mut self, max: u8) -> usize {
        usize::from(self.byte() % (max + 1))
    }

    fn conn(&mut self) -> u8 {
        self.byte()
    }

    fn doc(&mut self) -> DocPick {
        match self.byte() % 8 {
            0..=2 => DocPick::Agenda,
            3 => DocPick::Ann,
            4 => DocPick::Org,
            5 => DocPick::Bob,
            _ => DocPick::OtherAgenda,
        }
    }

    fn token(&mut self) -> TokenPick {
        match self.byte() % 8 {
            0..=3 => TokenPick::Organizer,
            4 => TokenPick::Ann,
            5 => TokenPick::Bob,
            6 => TokenPick::Expired,
            _ => TokenPick::OtherEvent,
        }
    }

    fn hash(&mut self) -> HashPick {
        let b = self.byte();
        if b < 0xf0 {
            HashPick::Pool(b)
        } else {
            let mut h = [0u8; 32];
            h.copy_from_slice(&{
                let mut v = self.bytes(32);
                v.resize(32, 0);
                v
            });
            HashPick::Raw(h)
        }
    }

    fn hashes(&mut self) -> Vec<HashPick> {
        (0..self.count(3)).map(|_| self.hash()).collect()
    }

    fn digests(&mut self) -> Vec<DigestInput> {
        (0..self.count(2))
            .map(|_| DigestInput {
                doc: self.doc(),
                heads: self.hashes(),
                base: self.hashes(),
            })
            .collect()
    }

    fn edit(&mut self) -> Edit {
        match self.byte() % 8 {
            0..=2 => Edit::Set {
                at: self.u16(),
                value: self.byte(),
            },
            3 | 4 => Edit::Xor {
                at: self.u16(),
                mask: self.byte(),
            },
            5 => Edit::Insert {
                at: self.u16(),
                bytes: {
                    let n = self.count(8);
                    self.bytes(n)
                },
            },
            6 => Edit::Remove {
                at: self.u16(),
                len: self.byte() % 16,
            },
            _ => Edit::Truncate { len: self.u16() },
        }
    }

    fn change(&mut self) -> ChangeInput {
        match self.byte() % 8 {
            0 | 1 => ChangeInput::Real(self.byte()),
            2..=4 => ChangeInput::Mutated {
                base: self.byte(),
                edits: (0..self.count(3)).map(|_| self.edit()).collect(),
                fix: true,
            },
            5 | 6 => ChangeInput::Mutated {
                base: self.byte(),
                edits: (0..self.count(3)).map(|_| self.edit()).collect(),
                fix: false,
            },
            _ => {
                let n = usize::from(self.byte());
                ChangeInput::Raw(self.bytes(n))
            }
        }
    }
}

impl Scenario {
    /// Builds a scenario from bytes: a token byte, the first Hello's digests,
    /// then steps (an op byte and its operands each) until the bytes run out.
    /// Small operands (one byte picks a document, a pool change, ...) keep the
    /// interesting cases close together for the fuzzer.
    pub fn parse(data: &[u8]) -> Scenario {
        let mut r = Reader(data);
        let token = r.token();
        let docs = r.digests();
        let mut steps = Vec::new();
        while !r.0.is_empty() && steps.len() < 32 {
            let step = match r.byte() % 16 {
                0..=6 => Step::Push {
                    conn: r.conn(),
                    doc: r.doc(),
                    changes: (0..=r.count(3)).map(|_| r.change()).collect(),
                },
                7 | 8 => Step::Resync {
                    conn: r.conn(),
                    doc: r.doc(),
                    have: r.hashes(),
                },
                9 | 10 => Step::Hello {
                    conn: r.conn(),
                    token: r.token(),
                    right_event: r.byte() % 8 != 0,
                    docs: r.digests(),
                },
                11 | 12 => Step::Frame {
                    conn: r.conn(),
                    body: {
                        let n = usize::from(r.byte());
                        r.bytes(n)
                    },
                },
                13 | 14 => Step::Connect { conn: r.conn() },
                _ => Step::Disconnect { conn: r.conn() },
            };
            steps.push(step);
        }
        Scenario { token, docs, steps }
    }
}

/// Checks what the server asked for and returns the decoded messages sent.
/// Panics if a frame's header disagrees with its body or does not decode.
pub fn check_actions(
    server: &ServerCore,
    actions: &[ServerAction],
    persisted: &mut Vec<(DocId, Vec<u8>)>,
) -> Vec<(u64, ServerMsg)> {
    let sent = testing::sent(actions);
    persisted.extend(testing::persisted(actions));
    for a in actions {
        if let ServerAction::Close { conn, .. } = a {
            assert!(
                server.session(*conn).is_none(),
                "a closed session is still open"
            );
        }
    }
    sent
}

/// Whether to leave out of pushes the changes that hit the known Automerge
/// panics recorded in `protocol/tests/fuzz_regressions.rs` (see
/// [`hits_known_bug`]), so a run can look for other bugs.
fn skip_known() -> bool {
    static SKIP: OnceLock<bool> = OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("LANYARD_FUZZ_SKIP_KNOWN").is_some())
}

/// Runs `f` with panics caught and not reported (libfuzzer-sys's panic hook
/// would abort the process). The fuzzer is single-threaded.
fn quietly<T>(f: impl FnOnce() -> T) -> Option<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    std::panic::set_hook(hook);
    r
}

/// Whether pushing `changes` onto `doc` (a copy) makes Automerge panic:
/// `Change::decode` on an actor index out of range (`change.rs:322/331/346`,
/// called by the server's canonical-encoding check), `apply_changes` on a
/// change naming an actor the document cannot place (`batch.rs:1121`) or
/// writing into a missing object (`batch.rs:920`), or, with debug
/// assertions, `get_change_by_hash` on a non-canonical change
/// (`collector.rs:753`). Returns, per change, whether it does (then it is
/// left out, and later changes are tried without it).
fn hits_known_bug(doc: Option<&Automerge>, changes: &[Vec<u8>]) -> Vec<bool> {
    let mut scratch = doc.map(Automerge::fork).unwrap_or_default();
    changes
        .iter()
        .map(|bytes| {
            let Ok(c) = Change::try_from(bytes.as_slice()) else {
                return false;
            };
            let mut trial = scratch.fork();
            let ok = quietly(|| {
                let h = c.hash();
                let _ = Change::from(c.decode());
                if trial.apply_changes([c]).is_ok() {
                    let _ = trial.get_change_by_hash(&h);
                    let _ = trial.get_changes(&[]);
                }
                trial
            });
            match ok {
                Some(t) => {
                    scratch = t;
                    false
                }
                None => true,
            }
        })
        .collect()
}

/// Whether `LANYARD_FUZZ_DEBUG` is set: then each run prints its pushes and
/// the server's counters (to check that inputs reach deep).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("LANYARD_FUZZ_DEBUG").is_some())
}

/// Runs a scenario against a fresh [`ServerCore`] and checks, besides "never
/// panics": every frame sent decodes; closed sessions are gone; what the
/// server asked to persist reloads (as after a restart) to the same heads;
/// and afterwards an honest organizer still gets its push acknowledged.
pub fn run_scenario(s: &Scenario) {
    use lanyard_protocol::ClientMsg;
    let mut server = server();
    let mut persisted = Vec::new();
    server.connect(1);
    let hello = ClientMsg::Hello {
        event: event(),
        token: s.token.token(),
        docs: s.docs.iter().take(8).map(DigestInput::digest).collect(),
        installation: [0; 16],
    };
    let actions = server.handle(NOW, 1, hello);
    check_actions(&server, &actions, &mut persisted);
    for step in s.steps.iter().take(32) {
        let conn = |c: &u8| u64::from(*c % 3) + 1;
        let actions = match step {
            Step::Push {
                conn: c,
                doc,
                changes,
            } => {
                let mut changes: Vec<Vec<u8>> =
                    changes.iter().take(16).map(ChangeInput::bytes).collect();
                if skip_known() {
                    let bad = hits_known_bug(server.doc(&doc.doc()), &changes);
                    let mut i = 0;
                    changes.retain(|_| {
                        i += 1;
                        !bad[i - 1]
                    });
                }
                let msg = ClientMsg::Push {
                    doc: doc.doc(),
                    changes,
                };
                if debug() {
                    if let ClientMsg::Push { changes, .. } = &msg {
                        for c in changes {
                            let hex: String = c.iter().map(|b| format!("{b:02x}")).collect();
                            let decoded = Change::try_from(c.as_slice()).map(|c| c.hash());
                            eprintln!("push {hex}: {decoded:?}");
                        }
                    }
                }
                server.handle(NOW, conn(c), msg)
            }
            Step::Resync { conn: c, doc, have } => {
                let msg = ClientMsg::Resync {
                    doc: doc.doc(),
                    have: have.iter().map(|h| h.hash()).collect(),
                };
                server.handle(NOW, conn(c), msg)
            }
            Step::Hello {
                conn: c,
                token,
                right_event,
                docs,
            } => {
                // A driver opens the session when the stream opens, before Hello.
                if server.session(conn(c)).is_none() {
                    server.connect(conn(c));
                }
                let event = if *right_event {
                    event()
                } else {
                    id(EventId::new("other"))
                };
                let msg = ClientMsg::Hello {
                    event,
                    token: token.token(),
                    docs: docs.iter().take(8).map(DigestInput::digest).collect(),
                    installation: [0; 16],
                };
                server.handle(NOW, conn(c), msg)
            }
            Step::Frame { conn: c, body } => server.handle_frame(NOW, conn(c), body),
            Step::Connect { conn: c } => {
                server.connect(conn(c));
                Vec::new()
            }
            Step::Disconnect { conn: c } => {
                server.disconnect(conn(c));
                Vec::new()
            }
        };
        check_actions(&server, &actions, &mut persisted);
    }
    if debug() {
        eprintln!(
            "stats {:?} persisted {} bad-checksum {}",
            server.stats(),
            persisted.len(),
            persisted.iter().filter(|(_, c)| !checksum_ok(c)).count()
        );
    }
    check_reload(&server, &persisted);
    check_honest_push(&mut server, &mut persisted);
}

/// What was persisted for each document reloads to the live heads.
fn check_reload(server: &ServerCore, persisted: &[(DocId, Vec<u8>)]) {
    for doc in server.doc_ids() {
        let chunks: Vec<&Vec<u8>> = persisted
            .iter()
            .filter(|(d, _)| d == doc)
            .map(|(_, c)| c)
            .collect();
        let bytes: Vec<u8> = chunks.into_iter().flatten().copied().collect();
        let mut fresh = self::server();
        if let Err(e) = fresh.load_doc(doc.clone(), &bytes) {
            panic!("persisted changes of {doc} do not reload: {e}");
        }
        let mut live = server.doc(doc).map(|d| d.get_heads()).unwrap_or_default();
        let mut back = fresh.doc(doc).map(|d| d.get_heads()).unwrap_or_default();
        live.sort();
        back.sort();
        assert_eq!(live, back, "{doc} reloads to other heads");
        // What a device gets as a snapshot loads, to the same heads.
        if let Some(am) = server.doc(doc) {
            let mut saved = Automerge::load(&am.save())
                .unwrap_or_else(|e| panic!("the snapshot of {doc} does not load: {e}"))
                .get_heads();
            saved.sort();
            assert_eq!(live, saved, "the snapshot of {doc} has other heads");
        }
    }
}

/// The honest organizer's token (its own device, so per-device session
/// limits reached by the fuzzed sessions do not apply).
fn honest_token() -> &'static String {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| key().token(&event(), "org", Role::Organizer, "honest", IN_AN_HOUR))
}

/// An honest organizer connecting now still gets a Welcome and its push acked.
fn check_honest_push(server: &mut ServerCore, persisted: &mut Vec<(DocId, Vec<u8>)>) {
    use lanyard_protocol::ClientMsg;
    const HONEST: u64 = 100;
    server.connect(HONEST);
    let actions = server.handle(NOW, HONEST, hello(&event(), honest_token()));
    let sent = check_actions(server, &actions, persisted);
    assert!(
        sent.iter()
            .any(|(c, m)| *c == HONEST && matches!(m, ServerMsg::Welcome { .. })),
        "no Welcome for an honest Hello: {sent:?}"
    );
    let (change, hash) = honest_change();
    let agenda = DocPick::Agenda.doc();
    let actions = server.handle(
        NOW,
        HONEST,
        ClientMsg::Push {
            doc: agenda.clone(),
            changes: vec![change.clone()],
        },
    );
    let sent = check_actions(server, &actions, persisted);
    let acked = sent.iter().any(|(c, m)| {
        *c == HONEST
            && matches!(m, ServerMsg::Ack { doc, heads } if *doc == agenda && heads.contains(hash))
    });
    assert!(acked, "an honest push was not acknowledged: {sent:?}");
}

/// Checks an importer's result: an error has a message; a schedule keeps the
/// documented invariants (no session ends before it starts; sessions sorted
/// by start, then room) and its days and rooms can be listed.
pub fn check_import(
    result: Result<
        lanyard_schedule::import::ImportedSchedule,
        lanyard_schedule::import::ImportError,
    >,
) {
    match result {
        Ok(s) => {
            for x in &s.sessions {
                assert!(
                    x.end_unix >= x.start_unix,
                    "session ends before it starts: {x:?}"
                );
            }
            for w in s.sessions.windows(2) {
                assert!(
                    (w[0].start_unix, &w[0].room) <= (w[1].start_unix, &w[1].room),
                    "sessions out of order"
                );
            }
            let _ = s.days();
            let _ = s.rooms();
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
