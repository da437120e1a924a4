//! # lanyard-schedule
//!
//! Schedule files, for organizer tools (the `lanyard` command, the venue
//! simulator); phones never need them, so they are not part of
//! `lanyard-client-core`, which keeps the domain and sync.
//!
//! * [`import`] reads what organizers already have: c3voc `schedule.json`
//!   (frab, pretalx) and its flat "schedule2", frab/pentabarf
//!   `schedule.xml`, and iCalendar;
//! * [`import_schedule`] applies a read schedule to a device's agenda as
//!   changes holding only what differs, matching sessions by the rules of
//!   [`reimport`]; it writes through
//!   [`Client::edit_agenda`](lanyard_client_core::Client::edit_agenda), so a
//!   large import becomes changes that each fit the server's limits;
//! * [`export`] writes the agenda (or an attendee's bookmarks) in the same
//!   formats, each of which re-imports as a no-op.
//!
//! ```
//! use lanyard_schedule::import::{parse_schedule, ScheduleFormat};
//! let ics = b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:k1\r\nSUMMARY:Keynote\r\n\
//!     DTSTART:20250201T083000Z\r\nDTEND:20250201T092000Z\r\nLOCATION:Janson\r\n\
//!     END:VEVENT\r\nEND:VCALENDAR\r\n";
//! let schedule = parse_schedule(ScheduleFormat::Ics, ics, None)?;
//! assert_eq!(schedule.rooms(), ["Janson"]);
//! assert_eq!(lanyard_schedule::reimport::key_of(&schedule.sessions[0]), "k1");
//! # Ok::<(), lanyard_schedule::import::ImportError>(())
//! ```

mod agenda;
pub mod export;
pub mod import;
pub mod reimport;

pub use agenda::{import_schedule, ImportCounts, ImportSummary};
pub use import::read_schedule;
