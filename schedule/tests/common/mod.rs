//! Helpers shared by lanyard-schedule's integration tests.
#![allow(clippy::unwrap_used, dead_code)]

use lanyard_client_core::Client;
use lanyard_protocol::{cert_pin, token, DeviceId, EventId, JoinLink, Role, TokenClaims, UserId};
use ring::signature::Ed25519KeyPair;

/// An in-memory device of user `org` joined to `event` with `role`, offline
/// (its link points at a closed port).
pub fn joined(event: &str, role: Role) -> Client {
    let key = Ed25519KeyPair::from_seed_unchecked(&[5; 32]).unwrap();
    let claims = TokenClaims {
        event: EventId::new(event).unwrap(),
        user: UserId::new("org").unwrap(),
        role,
        device: DeviceId::new("laptop").unwrap(),
        expires_at: 4_000_000_000,
    };
    let link = JoinLink {
        server: "127.0.0.1:9".into(),
        event: claims.event.clone(),
        token: token::sign(&claims, &key),
        pin: cert_pin(b"cert"),
    };
    let c = Client::in_memory().unwrap();
    c.join(&link.to_string()).unwrap();
    c
}
