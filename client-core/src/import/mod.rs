//! Importing conference schedules from other tools.
//!
//! [`schedule_json`] reads the c3voc `schedule.json` format (exported by frab
//! and pretalx) and its newer flat "schedule2" variant, leniently: real
//! exports routinely break their own JSON Schema, so only what an agenda needs
//! (title, room, start, end) is required.
//!
//! [`ics`] reads iCalendar (RFC 5545) files, one session per `VEVENT`, just as
//! leniently (no `DTSTAMP`, no `DTEND`, empty `SUMMARY` are all accepted).
//!
//! [`schedule_xml`] reads frab/pentabarf `schedule.xml` (the c3voc XSD layout and older exports without `<room>` wrappers), just as leniently.

pub mod ics;
pub mod schedule_json;
pub mod schedule_xml;

pub use ics::parse_ics;
pub use schedule_json::{parse_schedule_json, ImportError, ImportedSchedule, ImportedSession};
pub use schedule_xml::parse_schedule_xml;

/// Helpers shared by the importers' tests.
#[cfg(test)]
pub(crate) mod test_util {
    #![allow(clippy::unwrap_used)]

    use super::{ImportedSchedule, ImportedSession};

    /// Seconds since the epoch of an RFC 3339 instant.
    pub(crate) fn ts(rfc3339: &str) -> i64 {
        rfc3339.parse::<jiff::Timestamp>().unwrap().as_second()
    }

    /// The session with this guid (the test fails if there is none).
    pub(crate) fn by_guid<'a>(schedule: &'a ImportedSchedule, guid: &str) -> &'a ImportedSession {
        schedule
            .sessions
            .iter()
            .find(|s| s.guid.as_deref() == Some(guid))
            .unwrap()
    }
}
