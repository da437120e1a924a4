//! Identifiers: one newtype per id, validated on construction.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest id accepted anywhere (event, user, device, session, room).
pub const MAX_ID_LEN: usize = 128;

/// Why a string was refused as an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id was empty.
    #[error("{kind} id is empty")]
    Empty {
        /// Which kind of id.
        kind: &'static str,
    },
    /// The id was longer than [`MAX_ID_LEN`] bytes.
    #[error("{kind} id is longer than {MAX_ID_LEN} bytes")]
    TooLong {
        /// Which kind of id.
        kind: &'static str,
    },
    /// The id held a `/`, whitespace or a control character.
    #[error("{kind} id {value:?} may not contain '/', whitespace or control characters")]
    BadChar {
        /// Which kind of id.
        kind: &'static str,
        /// The refused value.
        value: String,
    },
    /// A document id had an unknown shape.
    #[error(
        "unknown document id {0:?} (expected agenda/EVENT, attendee/EVENT/USER, seats/EVENT, seats/EVENT/USER or checkins/EVENT)"
    )]
    BadDocId(String),
}

fn check(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { kind });
    }
    if value
        .chars()
        .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(IdError::BadChar {
            kind,
            value: value.to_owned(),
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check($kind, &value)?;
                Ok(Self(value))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// An event (one conference), e.g. `rustconf-2026`.
    EventId,
    "event"
);
id_type!(
    /// A user (one attendee or organizer, across all of their devices).
    UserId,
    "user"
);
id_type!(
    /// One device of a user.
    DeviceId,
    "device"
);

id_type!(
    /// A session of the agenda (a talk, a workshop), e.g. a schedule's GUID.
    SessionId,
    "session"
);

id_type!(
    /// A seat request (reserve, cancel, accept), random per request and
    /// chosen by the device: deciding is idempotent by this id.
    RequestId,
    "request"
);

/// A synchronized document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DocId {
    /// `agenda/<event>`: written by organizers, read by everyone of the event.
    Agenda(EventId),
    /// `attendee/<event>/<user>`: notes and bookmarks, private to one user.
    Attendee(EventId, UserId),
    /// `seats/<event>`: how full each session is (confirmed, waitlist),
    /// written by the server only, read by everyone of the event.
    SeatCounts(EventId),
    /// `seats/<event>/<user>`: the outcomes of one user's seat requests,
    /// written by the server only, private to that user.
    Seats(EventId, UserId),
    /// `checkins/<event>`: passes checked in at the doors and walk-ins,
    /// written and read by organizers (door devices).
    Checkins(EventId),
}

impl DocId {
    /// The event this document belongs to.
    pub fn event(&self) -> &EventId {
        match self {
            DocId::Agenda(e)
            | DocId::Attendee(e, _)
            | DocId::SeatCounts(e)
            | DocId::Seats(e, _)
            | DocId::Checkins(e) => e,
        }
    }

    /// The kind of document, as a metric label: `agenda`, `attendee`,
    /// `seat_counts`, `seats` or `checkins`.
    pub fn kind(&self) -> &'static str {
        match self {
            DocId::Agenda(_) => "agenda",
            DocId::Attendee(..) => "attendee",
            DocId::SeatCounts(_) => "seat_counts",
            DocId::Seats(..) => "seats",
            DocId::Checkins(_) => "checkins",
        }
    }

    /// Whether only the server writes this document (seat outcomes and counts).
    pub fn server_written(&self) -> bool {
        matches!(self, DocId::SeatCounts(_) | DocId::Seats(..))
    }

    /// Parses `agenda/EVENT`, `attendee/EVENT/USER`, `seats/EVENT` or
    /// `seats/EVENT/USER`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            ["agenda", e] => Ok(DocId::Agenda(EventId::new(*e)?)),
            ["attendee", e, u] => Ok(DocId::Attendee(EventId::new(*e)?, UserId::new(*u)?)),
            ["seats", e] => Ok(DocId::SeatCounts(EventId::new(*e)?)),
            ["seats", e, u] => Ok(DocId::Seats(EventId::new(*e)?, UserId::new(*u)?)),
            ["checkins", e] => Ok(DocId::Checkins(EventId::new(*e)?)),
            _ => Err(IdError::BadDocId(s.to_owned())),
        }
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocId::Agenda(e) => write!(f, "agenda/{e}"),
            DocId::Attendee(e, u) => write!(f, "attendee/{e}/{u}"),
            DocId::SeatCounts(e) => write!(f, "seats/{e}"),
            DocId::Seats(e, u) => write!(f, "seats/{e}/{u}"),
            DocId::Checkins(e) => write!(f, "checkins/{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_ids_round_trip_through_strings() {
        let a = DocId::Agenda(EventId::new("conf").unwrap());
        let b = DocId::Attendee(EventId::new("conf").unwrap(), UserId::new("ann").unwrap());
        let c = DocId::SeatCounts(EventId::new("conf").unwrap());
        let d = DocId::Seats(EventId::new("conf").unwrap(), UserId::new("ann").unwrap());
        let e = DocId::Checkins(EventId::new("conf").unwrap());
        for d in [a, b, c, d, e] {
            assert_eq!(DocId::parse(&d.to_string()).unwrap(), d);
        }
    }

    #[test]
    fn bad_ids_are_refused() {
        assert!(matches!(EventId::new(""), Err(IdError::Empty { .. })));
        assert!(matches!(UserId::new("a/b"), Err(IdError::BadChar { .. })));
        assert!(matches!(
            UserId::new("x".repeat(200)),
            Err(IdError::TooLong { .. })
        ));
        assert!(DocId::parse("notes/x").is_err());
        assert!(DocId::parse("attendee/e").is_err());
    }

    #[test]
    fn deserializing_validates() {
        let bytes = postcard::to_allocvec(&"a/b".to_string()).unwrap();
        assert!(postcard::from_bytes::<UserId>(&bytes).is_err());
    }
}
