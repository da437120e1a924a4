//! Error enums, one per failure domain.

use lanyard_protocol::{ErrorCode, IdError, LinkError};
use lanyard_store::StoreError;

/// Errors of the local API (no network involved).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The device has not joined an event yet.
    #[error("not joined to an event yet: run `join` with an invite link first")]
    NotJoined,
    /// An organizer-only operation was attempted with an attendee token.
    #[error("organizers only: this device joined as an attendee")]
    OrganizersOnly,
    /// The join link is invalid.
    #[error("invalid join link: {0}")]
    Link(#[from] LinkError),
    /// An id is invalid.
    #[error(transparent)]
    Id(#[from] IdError),
    /// The session does not exist.
    #[error("no session with id {0}")]
    NoSuchSession(String),
    /// The session exists already.
    #[error("a session with id {0} exists already")]
    SessionExists(String),
    /// A time or time zone is invalid.
    #[error("invalid time: {0}")]
    Time(String),
    /// A value is out of range (e.g. end before start).
    #[error("invalid value: {0}")]
    Invalid(String),
    /// A pass refused at the door: forged, of another event, expired,
    /// revoked or already checked in (the message says which).
    #[error("refused: {0}")]
    PassRefused(String),
    /// The local store failed; the edit was not made.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored document is corrupt.
    #[error("stored document {doc} is corrupt: {message}")]
    Corrupt {
        /// The document.
        doc: String,
        /// What failed.
        message: String,
    },
    /// Automerge refused an operation.
    #[error("document error: {0}")]
    Document(#[from] automerge::AutomergeError),
    /// The edit would make a change or a document the server refuses
    /// (its announced limits); nothing was changed.
    #[error("{doc}: {limit} would be {size} bytes, over the server's limit of {max} bytes ({}); nothing was changed", limit.name())]
    OverLimit {
        /// The document.
        doc: String,
        /// Which limit.
        limit: LimitKind,
        /// The size the edit would make.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Which of the server's limits an edit would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitKind {
    /// The size of one change (`max_change`).
    Change,
    /// The size of the agenda document (`max_doc`).
    Doc,
    /// The size of an attendee's document (`max_attendee_doc`).
    AttendeeDoc,
}

impl LimitKind {
    /// The limit's name in the server's configuration.
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::Change => "max_change",
            LimitKind::Doc => "max_doc",
            LimitKind::AttendeeDoc => "max_attendee_doc",
        }
    }
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitKind::Change => "one change",
            LimitKind::Doc => "the agenda",
            LimitKind::AttendeeDoc => "your notes and bookmarks",
        })
    }
}

/// Errors of a sync with the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The device has not joined an event yet.
    #[error("not joined to an event yet: run `join` with an invite link first")]
    NotJoined,
    /// No connection could be made.
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// The server answered but the sync did not finish in time.
    #[error("the sync with {server} did not finish within {secs} s")]
    Timeout {
        /// `HOST:PORT`.
        server: String,
        /// The time allowed.
        secs: u64,
    },
    /// The token has expired.
    #[error("token expired: {0}")]
    TokenExpired(String),
    /// The token was refused.
    #[error("token refused: {0}")]
    Unauthorized(String),
    /// The operator revoked this device's access: no retry helps until
    /// they lift it (or give a new invite).
    #[error("access revoked: {0}; not retrying (ask the organizers to restore access)")]
    Revoked(String),
    /// The server does not speak this protocol version.
    #[error("the server does not speak protocol {0}")]
    UnsupportedVersion(String),
    /// The server's certificate does not match the pin of the join link.
    #[error("the server's certificate does not match the pin in the join link")]
    PinMismatch,
    /// The server ended the session with an error.
    #[error("server error ({code}): {message}")]
    Server {
        /// The code.
        code: ErrorCode,
        /// The message.
        message: String,
    },
    /// The server is over its limits: come back after `retry_after` (when given).
    #[error("server busy{}", match retry_after { Some(d) => format!(": retry in {:.1} s", d.as_secs_f64()), None => String::new() })]
    Overloaded {
        /// The server's hint.
        retry_after: Option<std::time::Duration>,
    },
    /// The connection was lost mid-sync.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The server sent something invalid.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SyncError {
    /// Whether retrying later can help (false for bad or expired tokens).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            SyncError::NotJoined
                | SyncError::TokenExpired(_)
                | SyncError::Unauthorized(_)
                | SyncError::Revoked(_)
                | SyncError::UnsupportedVersion(_)
                | SyncError::PinMismatch
        )
    }
}
