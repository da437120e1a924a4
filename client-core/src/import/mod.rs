//! Importing conference schedules from other tools.
//!
//! [`schedule_json`] reads the c3voc `schedule.json` format (exported by frab
//! and pretalx) and its newer flat "schedule2" variant, leniently: real
//! exports routinely break their own JSON Schema, so only what an agenda needs
//! (title, room, start, end) is required.

pub mod schedule_json;

pub use schedule_json::{parse_schedule_json, ImportError, ImportedSchedule, ImportedSession};
