//! Seats: what a CRDT cannot decide alone ("at most 100 people"), decided
//! once by the server, and learned by every device through ordinary sync.
//!
//! * A device writes a **request** (reserve, cancel, accept an offer) into
//!   the attendee's own document, with a random [`RequestId`]: it is durable
//!   on the device at once and travels with the next sync like a note.
//! * The server's [`Arbiter`] decides requests in the order they reach it
//!   (never by device clocks), idempotently by request id, and the server
//!   writes each [`Outcome`] into `seats/<event>/<user>`, a document only it
//!   writes and only that user reads, before it acknowledges the request.
//! * How full each session is goes into `seats/<event>`, read by everyone,
//!   folded into at most one small change a second.
//!
//! [`doc`] holds the documents' layout: the readers and writers the server
//! and the devices share.

mod arbiter;
pub mod doc;
pub mod pass;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use arbiter::Arbiter;

use crate::ids::{RequestId, SessionId, UserId};
use crate::time::Millis;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestKind {
    /// A seat (or a waitlist place when the session is full).
    Reserve,
    /// Give back a seat, an offer or a waitlist place.
    Cancel,
    /// Take a seat offered from the waitlist.
    Accept,
}

impl RequestKind {
    /// `reserve`, `cancel` or `accept`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Reserve => "reserve",
            RequestKind::Cancel => "cancel",
            RequestKind::Accept => "accept",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<RequestKind> {
        match s {
            "reserve" => Some(RequestKind::Reserve),
            "cancel" => Some(RequestKind::Cancel),
            "accept" => Some(RequestKind::Accept),
            _ => None,
        }
    }
}

/// A request as the device wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatRequest {
    /// Random per request.
    pub id: RequestId,
    /// The session.
    pub session: SessionId,
    /// What it asks.
    pub kind: RequestKind,
    /// The device's clock when it was made (shown, never used to order).
    pub at_ms: i64,
}

/// Where a user stands for one session, as the server decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SeatState {
    /// Holds a seat.
    Confirmed,
    /// Waits for a seat (with a place).
    Waitlisted,
    /// A seat is held for the user until a deadline: accept it to keep it.
    Offered,
    /// The request could not be granted (with a reason).
    Refused,
    /// Gave back the seat or place, or lost it (session cancelled, offer expired).
    Cancelled,
}

impl SeatState {
    /// `confirmed`, `waitlisted`, `offered`, `refused` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            SeatState::Confirmed => "confirmed",
            SeatState::Waitlisted => "waitlisted",
            SeatState::Offered => "offered",
            SeatState::Refused => "refused",
            SeatState::Cancelled => "cancelled",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<SeatState> {
        match s {
            "confirmed" => Some(SeatState::Confirmed),
            "waitlisted" => Some(SeatState::Waitlisted),
            "offered" => Some(SeatState::Offered),
            "refused" => Some(SeatState::Refused),
            "cancelled" => Some(SeatState::Cancelled),
            _ => None,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeatRefusal {
    /// The session takes no reservations (no capacity set, or unknown).
    #[error("this session takes no reservations (no capacity set)")]
    NoCapacity,
    /// The session was cancelled.
    #[error("the session was cancelled")]
    SessionCancelled,
    /// The session is over.
    #[error("the session is over")]
    SessionOver,
    /// The user holds a seat in a session at the same time.
    #[error("overlaps session {0}, where you hold a seat")]
    Overlaps(SessionId),
    /// Accept without an open offer.
    #[error("no seat is offered to you for this session")]
    NoOffer,
    /// The request could not be read.
    #[error("the request could not be read: {0}")]
    Malformed(String),
}

/// A decision or a change of standing, for one user and session: what the
/// server writes into the user's seats document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The user.
    pub user: UserId,
    /// The session.
    pub session: SessionId,
    /// Where the user now stands.
    pub state: SeatState,
    /// Waitlist place, counting from 1 (waitlisted only).
    pub position: Option<u32>,
    /// Why (refused, or lost a seat), or a note ("a seat opened up").
    pub reason: Option<String>,
    /// The request that holds the seat or place (or was refused).
    pub request: RequestId,
    /// The request this outcome answers, if it answers one (promotions and
    /// new waitlist places answer none).
    pub decides: Option<RequestId>,
    /// Arrival order of the seat or place (0 for refusals and releases).
    pub seq: u64,
    /// When the server decided.
    pub updated: Millis,
    /// Until when an offered seat is held.
    pub offer_until: Option<Millis>,
    /// A confirmed seat's pass, signed by the server (set when the outcome
    /// is recorded).
    pub pass: Option<String>,
}

/// What a user holds in a session, as the arbiter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// A seat, from this request.
    Confirmed(RequestId),
    /// An offer, from this request, until this instant.
    Offered(RequestId, Millis),
    /// A waitlist place (from 1), from this request.
    Waitlisted(RequestId, u32),
}

/// What the organizers set for one session (read from the agenda).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionRules {
    /// Seats; 0 means no reservations.
    pub capacity: u32,
    /// Start: waitlist promotion stops here.
    pub start: Millis,
    /// End: no reservations from here.
    pub end: Millis,
    /// Cancelled: every seat and place released.
    pub cancelled: bool,
}

/// The organizers' seat settings for the event (read from the agenda).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeatPolicy {
    /// Whether a user may hold seats in sessions that overlap in time
    /// (refused by default).
    pub overlap_allowed: bool,
    /// `None`: a freed seat goes to the first person waiting at once.
    /// `Some(hold)`: it is offered to them and held this long.
    pub offer_hold: Option<Duration>,
}
