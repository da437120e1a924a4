//! The test harness shared by this crate's tests, the fuzz targets (`fuzz/`)
//! and the cross-crate tests (`tests/`): a signing key and a server built on
//! it ([`TestKey`], [`Fixture`]), tokens for a user, role and device, feeding
//! messages to a [`ServerCore`] and decoding every frame its actions send
//! ([`exchange`], [`sent`], [`decode_frame`]), wire round trips
//! ([`frames`], [`round_trip`]), and hand-made Automerge chunks: the checksum
//! fix-up after a mutation ([`fix_checksum`]) and a deflate bomb
//! ([`deflate_bomb`]). Behind the `testing` feature.
//!
//! Everything here panics on what a test must not see (an id that does not
//! validate, a frame that does not decode): a panic is the test's failure.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use automerge::transaction::Transactable as _;
use automerge::{ActorId, Automerge, ROOT};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wire::{self, FrameDecoder, FrameError, Hash, HEADER_LEN};
use crate::{
    token, ClientEvent, ClientMsg, ClientSession, ConnId, DeviceId, DocId, EventId, Limits, Millis,
    Replica, Role, ServerAction, ServerConfig, ServerCore, ServerMsg, TokenClaims, UserId,
};

/// The server's clock in the tests: a fixed instant (November 2023).
pub const NOW: Millis = Millis::from_secs(1_700_000_000);

/// A token expiry one hour after [`NOW`] (seconds since the epoch).
pub const IN_AN_HOUR: u64 = NOW.as_secs() + 3600;

/// The event the tests use: `conf`.
pub fn event() -> EventId {
    EventId::new("conf").expect("`conf` is a valid event id")
}

/// Claims for `user` with `role` on `device`, for `event`, expiring at
/// `expires_at` (seconds since the epoch).
pub fn claims(
    event: &EventId,
    user: &str,
    role: Role,
    device: &str,
    expires_at: u64,
) -> TokenClaims {
    TokenClaims {
        event: event.clone(),
        user: UserId::new(user).expect("a valid user id"),
        role,
        device: DeviceId::new(device).expect("a valid device id"),
        expires_at,
    }
}

/// A `Hello` for `event` with `token`, no document digests and no
/// installation id: what a fresh device sends first.
pub fn hello(event: &EventId, token: &str) -> ClientMsg {
    ClientMsg::Hello {
        event: event.clone(),
        token: token.to_owned(),
        docs: Vec::new(),
        installation: [0; 16],
    }
}

/// A server's Ed25519 token key, made from a fixed seed.
#[derive(Debug)]
pub struct TestKey {
    pair: std::sync::Arc<Ed25519KeyPair>,
}

impl TestKey {
    /// The key of the seed `[seed; 32]`.
    pub fn new(seed: u8) -> TestKey {
        TestKey::from_seed(&[seed; 32])
    }

    /// The key of a whole 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> TestKey {
        TestKey {
            pair: std::sync::Arc::new(
                Ed25519KeyPair::from_seed_unchecked(seed).expect("any 32 bytes are a seed"),
            ),
        }
    }

    /// The public key, as [`ServerConfig::token_key`] takes it.
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// A server configuration checking tokens against this key.
    pub fn config(&self, limits: Limits) -> ServerConfig {
        ServerConfig {
            token_key: self.public_key(),
            limits,
            pass_signer: Some(self.pair.clone()),
        }
    }

    /// A seat pass with `claims`, signed with this key.
    pub fn sign_pass(&self, claims: &crate::seats::pass::PassClaims) -> String {
        crate::seats::pass::sign_pass(claims, &self.pair)
    }

    /// A fresh server holding nothing, checking tokens against this key.
    pub fn server(&self, limits: Limits) -> ServerCore {
        ServerCore::new(self.config(limits))
    }

    /// `claims`, signed.
    pub fn sign(&self, claims: &TokenClaims) -> String {
        token::sign(claims, &self.pair)
    }

    /// A token for `user` with `role` on `device`, for `event`, expiring at
    /// `expires_at` (seconds since the epoch).
    pub fn token(
        &self,
        event: &EventId,
        user: &str,
        role: Role,
        device: &str,
        expires_at: u64,
    ) -> String {
        self.sign(&claims(event, user, role, device, expires_at))
    }
}

/// A server for the event [`event`] with a [`TestKey`], and the disk a
/// driver would keep for it: [`Fixture::handle`] writes every `Persist` there
/// and [`Fixture::restart`] loads a new server from it.
#[derive(Debug)]
pub struct Fixture {
    /// The token key.
    pub key: TestKey,
    /// The limits the server was made with (and is made with again on a restart).
    pub limits: Limits,
    /// The event.
    pub event: EventId,
    /// The server.
    pub server: ServerCore,
    /// What the server asked to persist through [`Fixture::handle`], per
    /// document, in order.
    pub disk: BTreeMap<DocId, Vec<Vec<u8>>>,
}

impl Fixture {
    /// A server with default limits and the key [`TestKey::new`]`(seed)`.
    pub fn new(seed: u8) -> Fixture {
        Fixture::with_limits(seed, Limits::default())
    }

    /// A server with `limits` and the key [`TestKey::new`]`(seed)`.
    pub fn with_limits(seed: u8, limits: Limits) -> Fixture {
        let key = TestKey::new(seed);
        Fixture {
            server: key.server(limits),
            key,
            limits,
            event: event(),
            disk: BTreeMap::new(),
        }
    }

    /// The event's agenda.
    pub fn agenda(&self) -> DocId {
        DocId::Agenda(self.event.clone())
    }

    /// A token for `user` with `role` on `device`, for the event, expiring at
    /// `expires_at` (seconds since the epoch).
    pub fn token(&self, user: &str, role: Role, device: &str, expires_at: u64) -> String {
        self.key.token(&self.event, user, role, device, expires_at)
    }

    /// Feeds `msgs` from `conn` to the server at `now`, writes what it asks
    /// to persist to [`Fixture::disk`] and returns all its actions, in order.
    pub fn handle(&mut self, now: Millis, conn: ConnId, msgs: Vec<ClientMsg>) -> Vec<ServerAction> {
        let actions = handle_all(&mut self.server, now, conn, msgs);
        for (doc, change) in persisted(&actions) {
            self.disk.entry(doc).or_default().push(change);
        }
        actions
    }

    /// [`Fixture::handle`], then every message its actions send, decoded,
    /// with the connection it goes to.
    pub fn exchange(
        &mut self,
        now: Millis,
        conn: ConnId,
        msgs: Vec<ClientMsg>,
    ) -> Vec<(ConnId, ServerMsg)> {
        sent(&self.handle(now, conn, msgs))
    }

    /// Hands `msgs` of the device on `conn` to the server at [`NOW`] and
    /// what the server sends to `conn` back to the device's session, round
    /// after round, until the device has nothing more to send; panics if it
    /// still has after 20 rounds. Returns the events the session reported.
    pub fn settle(
        &mut self,
        conn: ConnId,
        session: &mut ClientSession,
        replica: &mut Replica,
        mut msgs: Vec<ClientMsg>,
    ) -> Vec<ClientEvent> {
        let mut events = Vec::new();
        for _ in 0..20 {
            if msgs.is_empty() {
                return events;
            }
            let mut next = Vec::new();
            for m in sent_to(conn, &self.handle(NOW, conn, msgs)) {
                let out = session
                    .handle(replica, m)
                    .unwrap_or_else(|e| panic!("the device refused what the server sent: {e}"));
                next.extend(out.send);
                events.extend(out.events);
            }
            msgs = next;
        }
        panic!("the device on {conn} did not settle");
    }

    /// Connects a device on `conn` with `token` and [`Fixture::settle`]s its
    /// session (its `Hello`, and what it has to push); the session, which
    /// must then be settled (panics otherwise).
    pub fn sync(&mut self, conn: ConnId, token: String, replica: &mut Replica) -> ClientSession {
        self.server.connect(conn);
        let (mut session, msgs) = ClientSession::start(self.event.clone(), token, replica);
        self.settle(conn, &mut session, replica, msgs);
        assert!(
            session.is_settled(replica),
            "the device on {conn} is not settled"
        );
        session
    }

    /// Replaces the server by a new one (same key and limits) loaded from
    /// [`Fixture::disk`], as after a crash. Every session ends.
    pub fn restart(&mut self) {
        let mut server = self.key.server(self.limits);
        for (doc, changes) in &self.disk {
            if let Err(e) = server.load_doc(doc.clone(), &changes.concat()) {
                panic!("the disk copy of {doc} does not load: {e}");
            }
        }
        self.server = server;
    }
}

/// Feeds `msgs` from `conn` to `server` at `now`; all its actions, in order.
pub fn handle_all(
    server: &mut ServerCore,
    now: Millis,
    conn: ConnId,
    msgs: Vec<ClientMsg>,
) -> Vec<ServerAction> {
    msgs.into_iter()
        .flat_map(|m| server.handle(now, conn, m))
        .collect()
}

/// Feeds `msgs` from `conn` to `server` at `now`; every message its actions
/// send, decoded, with the connection it goes to (see [`sent`]).
pub fn exchange(
    server: &mut ServerCore,
    now: Millis,
    conn: ConnId,
    msgs: Vec<ClientMsg>,
) -> Vec<(ConnId, ServerMsg)> {
    sent(&handle_all(server, now, conn, msgs))
}

/// Decodes a whole frame (header and body) a server sent. Panics if the
/// header disagrees with the body's length or the body does not decode.
pub fn decode_frame(frame: &[u8]) -> ServerMsg {
    assert!(frame.len() >= HEADER_LEN, "frame without header");
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&frame[..HEADER_LEN]);
    assert_eq!(
        u32::from_be_bytes(header) as usize,
        frame.len() - HEADER_LEN,
        "frame header disagrees with its body"
    );
    wire::decode(&frame[HEADER_LEN..])
        .unwrap_or_else(|e| panic!("server sent an undecodable frame: {e}"))
}

/// Every message `actions` send, in order, decoded ([`decode_frame`]) with
/// the connection it goes to; a broadcast counts once per recipient.
pub fn sent(actions: &[ServerAction]) -> Vec<(ConnId, ServerMsg)> {
    actions
        .iter()
        .flat_map(ServerAction::sends)
        .map(|(conn, frame)| (conn, decode_frame(frame)))
        .collect()
}

/// The messages `actions` send to `conn`, in order, decoded.
pub fn sent_to(conn: ConnId, actions: &[ServerAction]) -> Vec<ServerMsg> {
    sent(actions)
        .into_iter()
        .filter(|(c, _)| *c == conn)
        .map(|(_, m)| m)
        .collect()
}

/// Every change `actions` ask to persist, in order, with its document.
pub fn persisted(actions: &[ServerAction]) -> Vec<(DocId, Vec<u8>)> {
    actions
        .iter()
        .flat_map(|a| match a {
            ServerAction::Persist { doc, changes } => {
                changes.iter().map(|c| (doc.clone(), c.clone())).collect()
            }
            _ => Vec::new(),
        })
        .collect()
}

/// Everything a [`FrameDecoder`] with `limit` yields when fed `chunks` in
/// turn: the bodies, then how it stopped. Panics on a body over the limit.
pub fn frames(limit: usize, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Result<(), FrameError>) {
    let mut d = FrameDecoder::new(limit);
    let mut out = Vec::new();
    for chunk in chunks {
        d.push(chunk);
        loop {
            match d.next_frame() {
                Ok(Some(body)) => {
                    assert!(body.len() <= limit, "a body over the limit");
                    out.push(body);
                }
                Ok(None) => break,
                Err(e) => return (out, Err(e)),
            }
        }
    }
    let end = d.finish();
    (out, end)
}

/// Decodes `body` as an `M`. A decoded message must encode to a frame whose
/// header gives its body's length and whose body decodes to the same
/// message (panics otherwise).
pub fn round_trip<M>(body: &[u8]) -> Result<M, FrameError>
where
    M: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let m = wire::decode::<M>(body)?;
    let frame = wire::encode(&m);
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&frame[..HEADER_LEN]);
    assert_eq!(
        u32::from_be_bytes(header) as usize,
        frame.len() - HEADER_LEN
    );
    let again: M = wire::decode(&frame[HEADER_LEN..])
        .unwrap_or_else(|e| panic!("re-encoded {m:?} does not decode: {e}"));
    assert_eq!(again, m);
    Ok(m)
}

/// The first bytes of every Automerge chunk.
pub const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Offset of a chunk's type byte: magic (4) and checksum (4) come first.
const TYPE_AT: usize = 8;

/// Chunk type of a deflate-compressed change.
const COMPRESSED: u8 = 2;

/// Appends `v` as unsigned LEB128.
fn write_uleb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Where the body of an Automerge chunk starts (after magic, checksum, type
/// and the LEB128 length), when its header is readable.
pub fn body_start(chunk: &[u8]) -> Option<usize> {
    if chunk.len() <= TYPE_AT || chunk[..4] != CHUNK_MAGIC {
        return None;
    }
    let len = chunk[TYPE_AT + 1..]
        .iter()
        .take(10)
        .position(|b| b & 0x80 == 0)?;
    Some(TYPE_AT + 1 + len + 1)
}

/// Rebuilds the header of an Automerge chunk around its (possibly mutated)
/// body: the length becomes the body's real length and the checksum the first
/// 4 bytes of SHA-256 over `chunk type || LEB128 length || body`, as
/// Automerge computes it. Everything after the header counts as the body.
/// Bytes without a readable header come back as they are.
pub fn fix_checksum(chunk: &[u8]) -> Vec<u8> {
    let Some(start) = body_start(chunk) else {
        return chunk.to_vec();
    };
    let body = &chunk[start..];
    let mut typed = vec![chunk[TYPE_AT]];
    write_uleb(&mut typed, body.len() as u64);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&typed);
    ctx.update(body);
    let mut out = Vec::with_capacity(8 + typed.len() + body.len());
    out.extend_from_slice(&CHUNK_MAGIC);
    out.extend_from_slice(&ctx.finish().as_ref()[..4]);
    out.extend_from_slice(&typed);
    out.extend_from_slice(body);
    out
}

/// Whether a chunk's stored checksum matches its contents (what
/// `Automerge::load` insists on).
pub fn checksum_ok(chunk: &[u8]) -> bool {
    body_start(chunk).is_some() && fix_checksum(chunk) == chunk
}

/// A compressed change chunk of `inflated` bytes of zeros (rounded down to
/// whole MiB), deflated at the best compression: about a thousandth of that
/// on the wire. Its checksum is left zero (a server must refuse it before
/// it looks).
pub fn deflate_bomb(inflated: usize) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..inflated / zeros.len() {
        enc.write_all(&zeros).expect("writing to a Vec");
    }
    let body = enc.finish().expect("writing to a Vec");
    let mut chunk = CHUNK_MAGIC.to_vec();
    chunk.extend_from_slice(&[0; 4]);
    chunk.push(COMPRESSED);
    write_uleb(&mut chunk, body.len() as u64);
    chunk.extend(body);
    chunk
}

/// The actor of the honest organizer whose push must be acknowledged after
/// whatever a hostile session did.
pub const HONEST_ACTOR: [u8; 16] = *b"honest-organizer";

/// A change of [`HONEST_ACTOR`] with no dependencies (`honest = "still
/// answered"`), and its hash: any server must accept it on the agenda.
pub fn honest_change() -> &'static (Vec<u8>, Hash) {
    static HONEST: OnceLock<(Vec<u8>, Hash)> = OnceLock::new();
    HONEST.get_or_init(|| {
        let mut am = Automerge::new().with_actor(ActorId::from(&HONEST_ACTOR[..]));
        let mut tx = am.transaction();
        tx.put(ROOT, "honest", "still answered")
            .expect("a put on the root");
        tx.commit();
        let c = am
            .get_changes(&[])
            .into_iter()
            .next()
            .expect("the change just made");
        (c.raw_bytes().to_vec(), c.hash().0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deflate_bomb_is_a_compressed_chunk_of_that_size() {
        let bomb = deflate_bomb(4 << 20);
        assert_eq!(bomb[..4], CHUNK_MAGIC);
        assert_eq!(
            crate::server::decompressed_size(&bomb, usize::MAX - 1),
            Some((4 << 20) + body_start(&bomb).expect("a readable header"))
        );
    }

    #[test]
    fn the_checksum_fix_up_keeps_a_real_change() {
        let (change, _) = honest_change();
        assert!(checksum_ok(change));
        let mut bad = change.clone();
        bad[4] ^= 0xff;
        assert!(!checksum_ok(&bad));
        assert_eq!(&fix_checksum(&bad), change);
    }
}
