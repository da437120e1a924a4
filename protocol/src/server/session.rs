//! One device stream as the server sees it: its credentials once `Hello` was
//! accepted, the documents it subscribes to, and its request budget.

use std::time::Duration;

use crate::ids::DocId;
use crate::time::Millis;
use crate::token::TokenClaims;
use crate::wire::{InstallationId, Limits};

/// Per-device state the server keeps while the device is connected.
#[derive(Debug, Default)]
pub struct ServerSession {
    pub(super) claims: Option<TokenClaims>,
    /// Documents it subscribes to (their fan-out keeps what it holds).
    pub(super) docs: Vec<DocId>,
    /// The installation its `Hello` named (zeros: none).
    pub(super) installation: InstallationId,
    bucket: RequestBucket,
}

impl ServerSession {
    pub(super) fn new(limits: &Limits) -> ServerSession {
        ServerSession {
            claims: None,
            docs: Vec::new(),
            installation: [0; 16],
            bucket: RequestBucket {
                tokens: f64::from(limits.request_burst),
                refilled_at: None,
            },
        }
    }

    /// The authenticated claims, once `Hello` was accepted.
    pub fn claims(&self) -> Option<&TokenClaims> {
        self.claims.as_ref()
    }

    /// Takes one request from the budget; false when it is spent.
    pub(super) fn take_request(&mut self, limits: &Limits, now: Millis) -> bool {
        self.bucket.take(limits, now)
    }
}

/// Requests a session may still send now: a token bucket, full at connect,
/// refilled at `requests_per_sec`.
#[derive(Debug, Default)]
struct RequestBucket {
    tokens: f64,
    refilled_at: Option<Millis>,
}

impl RequestBucket {
    fn take(&mut self, limits: &Limits, now: Millis) -> bool {
        let elapsed = self
            .refilled_at
            .map_or(Duration::ZERO, |t| now.since(t))
            .as_secs_f64();
        let refill = elapsed * f64::from(limits.requests_per_sec);
        self.tokens = (self.tokens + refill).min(f64::from(limits.request_burst));
        self.refilled_at = Some(self.refilled_at.map_or(now, |t| t.max(now)));
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}
