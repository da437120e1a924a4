//! # lanyard-protocol
//!
//! The wire protocol of Lanyard, kept sans-IO: no sockets, no clock, no OS
//! randomness. Time is an argument and I/O is returned as data, so the same
//! code runs under the real QUIC drivers and under the deterministic
//! simulation in this crate's tests.
//!
//! * [`ids`]: validated identifiers and [`DocId`].
//! * [`link`]: join links and certificate pins.
//! * [`token`]: Ed25519-signed access tokens with [`TokenClaims`].
//! * [`wire`]: messages, framing and limits.
//! * [`client`]: the device side: a [`Replica`] and a [`ClientSession`].
//! * [`server`]: the server side: [`ServerCore`] with authorization and fan-out.
//! * [`time`]: [`Millis`], the time the drivers pass in, and the reconnect
//!   [`Backoff`] both the device driver and the simulation run.
//! * `testing` (feature `testing`): the harness shared by the tests, the
//!   fuzz targets and the cross-crate tests.
//!
//! ## The sync model
//!
//! On connect a device sends `Hello` with, per document, its heads and its
//! *base* (the last heads the server confirmed). The server answers with one
//! `Welcome` holding, per readable document, exactly the changes the device
//! misses and the server's heads; the device pipelines its own pending changes
//! behind the `Hello`. A device with nothing new costs one exchange. While
//! connected, new changes are pushed; a change made by one device is encoded
//! once and the same bytes go to every device that was up to date.
//!
//! ## A full round trip
//!
//! ```
//! use automerge::{transaction::Transactable as _, ActorId, ReadDoc as _, ROOT};
//! use lanyard_protocol::{
//!     token, wire, ClientSession, DeviceId, DocId, EventId, Millis, Replica, Role, ServerAction,
//!     ServerConfig, ServerCore, ServerMsg, TokenClaims, UserId,
//! };
//! use ring::signature::{Ed25519KeyPair, KeyPair as _};
//!
//! let key = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
//! let event = EventId::new("conf").unwrap();
//! let claims = TokenClaims {
//!     event: event.clone(),
//!     user: UserId::new("org").unwrap(),
//!     role: Role::Organizer,
//!     device: DeviceId::new("laptop").unwrap(),
//!     expires_at: 2_000_000_000,
//! };
//! let token = token::sign(&claims, &key);
//! let mut server = ServerCore::new(ServerConfig {
//!     token_key: key.public_key().as_ref().to_vec(),
//!     limits: Default::default(),
//!     pass_signer: None,
//! });
//!
//! // The organizer edits the agenda offline.
//! let agenda = DocId::Agenda(event.clone());
//! let mut replica = Replica::new(ActorId::from(&[1u8; 16][..]));
//! let mut tx = replica.get_or_create(&agenda).doc.transaction();
//! tx.put(ROOT, "name", "RustConf").unwrap();
//! tx.commit();
//! assert_eq!(replica.pending_count(), 1);
//!
//! // Connect: Hello and the pending push go out together.
//! let (mut session, msgs) = ClientSession::start(event, token, &replica);
//! server.connect(1);
//! let mut replies = Vec::new();
//! for m in msgs {
//!     for action in server.handle(Millis::from_secs(1_700_000_000), 1, m) {
//!         for (_, frame) in action.sends() {
//!             replies.push(wire::decode::<ServerMsg>(&frame[wire::HEADER_LEN..]).unwrap());
//!         }
//!     }
//! }
//! for r in replies {
//!     session.handle(&mut replica, r).unwrap();
//! }
//! assert!(session.is_settled(&replica));
//! let held = server.doc(&agenda).unwrap();
//! assert_eq!(held.get(ROOT, "name").unwrap().unwrap().0.as_str(), Some("RustConf"));
//! ```

pub mod client;
pub mod ids;
pub mod link;
pub mod seats;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod token;
pub mod wire;

pub use client::{
    ClientEvent, ClientOutput, ClientSession, DocSyncState, Refusal, Replica, ReplicaDoc,
    SessionError,
};
pub use ids::{DeviceId, DocId, EventId, IdError, RequestId, SessionId, UserId};
pub use link::{cert_pin, JoinLink, LinkError};
pub use server::{
    ConnId, DocPush, DocRef, HelloGate, HelloGateConfig, Lane, LoadError, Pushed, Revocation,
    ServerAction, ServerConfig, ServerCore, ServerSession, ServerStats, Sink,
};
pub use time::{Backoff, BackoffPolicy, Millis};
pub use token::{Role, TokenClaims, TokenError};
pub use wire::{
    ClientMsg, DocDigest, DocUpdate, ErrorCode, FrameError, InstallationId, Limits, RefusalReason,
    ServerMsg, ALPN,
};
