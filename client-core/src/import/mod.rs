//! Importing conference schedules from other tools.
//!
//! [`schedule_json`] reads the c3voc `schedule.json` format (exported by frab
//! and pretalx) and its newer flat "schedule2" variant, leniently: real
//! exports routinely break their own JSON Schema, so only what an agenda needs
//! (title, room, start, end) is required.
//!
//! [`ics`] reads iCalendar (RFC 5545) files, one session per `VEVENT`, just as
//! leniently (no `DTSTAMP`, no `DTEND`, empty `SUMMARY` are all accepted).

pub mod ics;
pub mod schedule_json;

pub use ics::parse_ics;
pub use schedule_json::{parse_schedule_json, ImportError, ImportedSchedule, ImportedSession};
