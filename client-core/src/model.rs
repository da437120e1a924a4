//! Owned, FFI-friendly domain types.

use serde::{Deserialize, Serialize};

/// Status of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// As planned.
    Scheduled,
    /// Moved to another room or time.
    Moved,
    /// Cancelled.
    Cancelled,
}

impl SessionStatus {
    /// `scheduled`, `moved` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Scheduled => "scheduled",
            SessionStatus::Moved => "moved",
            SessionStatus::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "moved" => SessionStatus::Moved,
            "cancelled" => SessionStatus::Cancelled,
            _ => SessionStatus::Scheduled,
        }
    }
}

/// One session of the agenda.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Stable id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Abstract.
    pub abstract_text: String,
    /// Room name.
    pub room: String,
    /// Start, seconds since the Unix epoch (UTC).
    pub start_unix: i64,
    /// End, seconds since the Unix epoch (UTC).
    pub end_unix: i64,
    /// Track, empty if none.
    pub track: String,
    /// Speaker names.
    pub speakers: Vec<String>,
    /// Status.
    pub status: SessionStatus,
}

/// A new session (organizer).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewSession {
    /// Stable id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Abstract.
    pub abstract_text: String,
    /// Room name.
    pub room: String,
    /// Start, Unix seconds.
    pub start_unix: i64,
    /// End, Unix seconds.
    pub end_unix: i64,
    /// Track, empty if none.
    pub track: String,
    /// Speakers.
    pub speakers: Vec<String>,
}

/// Fields to change on a session; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionUpdate {
    /// New title.
    pub title: Option<String>,
    /// New abstract.
    pub abstract_text: Option<String>,
    /// New track.
    pub track: Option<String>,
    /// New speakers.
    pub speakers: Option<Vec<String>>,
}

/// A room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// Name (also its id).
    pub name: String,
    /// Seats, 0 if unknown.
    pub capacity: u32,
}

/// An organizer's announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// Text.
    pub text: String,
    /// When it was posted, Unix seconds.
    pub at_unix: i64,
}

/// The event's own facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInfo {
    /// Event id.
    pub id: String,
    /// Display name (the id until an organizer sets one).
    pub name: String,
    /// IANA time zone all times are shown in.
    pub time_zone: String,
}

/// Who this device is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Server `HOST:PORT`.
    pub server: String,
    /// Event id.
    pub event: String,
    /// User id.
    pub user: String,
    /// `organizer` or `attendee`.
    pub role: String,
    /// Device name.
    pub device: String,
    /// Token expiry, Unix seconds.
    pub expires_at_unix: u64,
}

/// A change the server refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedChange {
    /// The document.
    pub doc: String,
    /// The change hash, hex.
    pub change: String,
    /// The server's explanation.
    pub message: String,
}

/// Sync status for the UI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// Local changes the server has not confirmed yet.
    pub pending_changes: u64,
    /// Last time every document was in sync, Unix seconds.
    pub last_sync_unix: Option<i64>,
    /// Changes the server refused (kept on the device).
    pub refused: Vec<RefusedChange>,
    /// Edits set aside that could not be redone (`Client::kept_edits`).
    pub kept_edits: u64,
    /// Whether a background connection is up.
    pub connected: bool,
    /// The last sync error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Reconnection attempts of the background sync since the client was opened.
    pub retries: u64,
}

/// What a one-shot sync did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncReport {
    /// Changes received from the server.
    pub received_changes: u64,
    /// Local changes the server confirmed in this sync.
    pub acknowledged_changes: u64,
    /// Changes refused by the server (all of them, including earlier ones).
    pub refused: Vec<RefusedChange>,
}

/// What applying an imported schedule changed in the agenda.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImportCounts {
    /// Sessions new to the agenda.
    pub added: u64,
    /// Agenda sessions missing from the file, now cancelled.
    pub removed: u64,
    /// Sessions that exist and had at least one field rewritten.
    pub changed: u64,
    /// Sessions that exist and were already as in the file.
    pub unchanged: u64,
    /// Bytes of the Automerge changes made (0 when nothing changed).
    pub change_bytes: u64,
    /// How many changes the import was written as: a large import is split
    /// so that each fits the server's limits (0 when nothing changed).
    pub changes: u64,
}

/// The outcome of `Client::import_schedule`: what the file holds and what
/// importing it changed (or, for a dry run, would change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    /// Distinct dates, in the event's time zone, on which a session starts.
    pub days: u64,
    /// Distinct rooms holding at least one session.
    pub rooms: u64,
    /// Sessions in the file.
    pub sessions: u64,
    /// The event's time zone the days are counted in.
    pub time_zone: String,
    /// What changed in the agenda.
    #[serde(flatten)]
    pub counts: ImportCounts,
    /// True when nothing was written (dry run).
    pub dry_run: bool,
}
