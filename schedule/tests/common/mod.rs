//! Helpers shared by lanyard-schedule's integration tests.
#![allow(clippy::unwrap_used, dead_code)]

use lanyard_client_core::Client;
use lanyard_protocol::testing::TestKey;
use lanyard_protocol::{cert_pin, EventId, JoinLink, Role};

/// An in-memory device of user `org` joined to `event` with `role`, offline
/// (its link points at a closed port).
pub fn joined(event: &str, role: Role) -> Client {
    let event = EventId::new(event).unwrap();
    let link = JoinLink {
        servers: vec!["127.0.0.1:9".into()],
        token: TestKey::new(5).token(&event, "org", role, "laptop", 4_000_000_000),
        event,
        pin: cert_pin(b"cert"),
    };
    let c = Client::in_memory().unwrap();
    c.join(&link.to_string()).unwrap();
    c
}
