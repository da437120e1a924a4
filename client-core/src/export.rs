//! Exporting the agenda (or an attendee's bookmarked sessions) in the formats
//! the importers read: iCalendar for calendar apps, c3voc `schedule.json`
//! for schedule tools.
//!
//! Both exports re-import to the same sessions (id, title, room, times,
//! track, speakers, abstract): the id becomes the iCalendar `UID` or the
//! schedule.json `guid`, which is what a re-import matches on.
//!
//! ```
//! use lanyard_client_core::export::to_ics;
//! use lanyard_client_core::import::parse_ics;
//! use lanyard_client_core::{EventInfo, Session, SessionStatus};
//! let event = EventInfo { id: "conf".into(), name: "Conf".into(), time_zone: "Europe/Berlin".into() };
//! let talk = Session {
//!     id: "t1".into(), title: "Hello, world".into(), abstract_text: String::new(),
//!     room: "Hall".into(), start_unix: 1_700_000_000, end_unix: 1_700_003_600,
//!     track: String::new(), speakers: vec!["Ada".into()], status: SessionStatus::Scheduled,
//! };
//! let ics = to_ics(&event, &[talk], 1_700_000_000)?;
//! let back = parse_ics(ics.as_bytes())?;
//! assert_eq!(back.sessions[0].title, "Hello, world");
//! assert_eq!(back.sessions[0].speakers, ["Ada"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde_json::{json, Value};

use crate::error::ClientError;
use crate::import::ics::SPEAKERS_PROPERTY;
use crate::model::{EventInfo, Session, SessionStatus};

fn instant(unix: i64) -> Result<Timestamp, ClientError> {
    Timestamp::from_second(unix).map_err(|e| ClientError::Time(e.to_string()))
}

fn zone(tz: &str) -> Result<TimeZone, ClientError> {
    TimeZone::get(tz).map_err(|e| ClientError::Time(format!("unknown time zone {tz:?}: {e}")))
}

/// `20150918T070000Z`.
fn ics_utc(unix: i64) -> Result<String, ClientError> {
    Ok(instant(unix)?.strftime("%Y%m%dT%H%M%SZ").to_string())
}

/// TEXT escaping (RFC 5545 §3.3.11).
fn escape_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Appends `NAME:value` folded at 75 octets (RFC 5545 §3.1), never inside a
/// UTF-8 character, with CRLF line ends.
fn push_line(out: &mut String, line: &str) {
    let mut width = 0;
    for c in line.chars() {
        let len = c.len_utf8();
        if width + len > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += len;
    }
    out.push_str("\r\n");
}

/// The sessions as an iCalendar file (UTC times; the event's zone as
/// `X-WR-TIMEZONE`). Cancelled sessions are included with
/// `STATUS:CANCELLED`, so calendar apps show them as cancelled; `now_unix`
/// is the `DTSTAMP`.
pub fn to_ics(
    event: &EventInfo,
    sessions: &[Session],
    now_unix: i64,
) -> Result<String, ClientError> {
    let mut out = String::new();
    let stamp = ics_utc(now_unix)?;
    for line in [
        "BEGIN:VCALENDAR".to_owned(),
        "VERSION:2.0".to_owned(),
        format!(
            "PRODID:-//Lanyard//lanyard {}//EN",
            env!("CARGO_PKG_VERSION")
        ),
        "CALSCALE:GREGORIAN".to_owned(),
        format!("X-WR-CALNAME:{}", escape_text(&event.name)),
        format!("X-WR-TIMEZONE:{}", event.time_zone),
    ] {
        push_line(&mut out, &line);
    }
    for s in sessions {
        push_line(&mut out, "BEGIN:VEVENT");
        push_line(&mut out, &format!("UID:{}", escape_text(&s.id)));
        push_line(&mut out, &format!("DTSTAMP:{stamp}"));
        push_line(&mut out, &format!("DTSTART:{}", ics_utc(s.start_unix)?));
        push_line(&mut out, &format!("DTEND:{}", ics_utc(s.end_unix)?));
        push_line(&mut out, &format!("SUMMARY:{}", escape_text(&s.title)));
        if !s.room.is_empty() {
            push_line(&mut out, &format!("LOCATION:{}", escape_text(&s.room)));
        }
        if !s.abstract_text.is_empty() {
            push_line(
                &mut out,
                &format!("DESCRIPTION:{}", escape_text(&s.abstract_text)),
            );
        }
        if !s.track.is_empty() {
            push_line(&mut out, &format!("CATEGORIES:{}", escape_text(&s.track)));
        }
        if !s.speakers.is_empty() {
            let list: Vec<String> = s.speakers.iter().map(|p| escape_text(p)).collect();
            push_line(&mut out, &format!("{SPEAKERS_PROPERTY}:{}", list.join(",")));
        }
        let status = match s.status {
            SessionStatus::Cancelled => "CANCELLED",
            SessionStatus::Scheduled | SessionStatus::Moved => "CONFIRMED",
        };
        push_line(&mut out, &format!("STATUS:{status}"));
        push_line(&mut out, "END:VEVENT");
    }
    push_line(&mut out, "END:VCALENDAR");
    Ok(out)
}

/// `HH:MM`, or `HH:MM:SS` when the seconds are not zero.
fn duration_text(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    let mut out = format!("{h:02}:{m:02}");
    if s != 0 {
        let _ = write!(out, ":{s:02}");
    }
    out
}

/// The sessions as a c3voc `schedule.json` (the layout frab and pretalx
/// export: `schedule.conference.days[].rooms{ROOM: [event]}`), days and
/// local times in the event's zone. Cancelled sessions are left out (the
/// format has no status), so importing the file elsewhere cancels them there
/// too.
pub fn to_schedule_json(event: &EventInfo, sessions: &[Session]) -> Result<Value, ClientError> {
    let tz = zone(&event.time_zone)?;
    let mut days: BTreeMap<String, BTreeMap<String, Vec<Value>>> = BTreeMap::new();
    let mut rooms: Vec<&str> = Vec::new();
    for (n, s) in sessions
        .iter()
        .filter(|s| s.status != SessionStatus::Cancelled)
        .enumerate()
    {
        let start = instant(s.start_unix)?.to_zoned(tz.clone());
        if !rooms.contains(&s.room.as_str()) {
            rooms.push(&s.room);
        }
        let persons: Vec<Value> = s
            .speakers
            .iter()
            .map(|p| json!({ "public_name": p }))
            .collect();
        days.entry(start.date().to_string())
            .or_default()
            .entry(s.room.clone())
            .or_default()
            .push(json!({
                "guid": s.id,
                "id": n + 1,
                "date": start.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
                "start": start.strftime("%H:%M").to_string(),
                "duration": duration_text((s.end_unix - s.start_unix).max(0)),
                "room": s.room,
                "slug": s.id,
                "title": s.title,
                "subtitle": "",
                "track": if s.track.is_empty() { Value::Null } else { json!(s.track) },
                "type": "",
                "language": "",
                "abstract": s.abstract_text,
                "description": "",
                "persons": persons,
                "links": [],
                "attachments": [],
            }));
    }
    let day_list: Vec<Value> = days
        .into_iter()
        .enumerate()
        .map(|(i, (date, rooms))| json!({ "index": i + 1, "date": date, "rooms": rooms }))
        .collect();
    let first = day_list
        .first()
        .and_then(|d| d["date"].as_str())
        .unwrap_or("");
    let last = day_list
        .last()
        .and_then(|d| d["date"].as_str())
        .unwrap_or("");
    Ok(json!({
        "$schema": "https://c3voc.de/schedule/schema.json",
        "generator": { "name": "lanyard", "version": env!("CARGO_PKG_VERSION") },
        "schedule": {
            "version": "lanyard export",
            "base_url": "",
            "conference": {
                "acronym": event.id,
                "title": event.name,
                "start": first,
                "end": last,
                "daysCount": day_list.len(),
                "timeslot_duration": "00:05",
                "time_zone_name": event.time_zone,
                "rooms": rooms.iter().map(|r| json!({ "name": r })).collect::<Vec<_>>(),
                "days": day_list,
            }
        }
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::import::{parse_ics, parse_schedule_json, ImportedSchedule, ImportedSession};

    fn session(id: &str, title: &str, start: i64, status: SessionStatus) -> Session {
        Session {
            id: id.into(),
            title: title.into(),
            abstract_text: "Line one\nline two; with, punctuation \\ and ünïcödé".repeat(3),
            room: "Hall A, left".into(),
            start_unix: start,
            end_unix: start + 2700,
            track: "Rust; systems".into(),
            speakers: vec!["Ada Lovelace".into(), "Grace, Hopper".into()],
            status,
        }
    }

    fn event() -> EventInfo {
        EventInfo {
            id: "conf".into(),
            name: "Conf, 2026".into(),
            time_zone: "America/New_York".into(),
        }
    }

    /// What a re-import of `s` gives, for comparing.
    fn as_imported(s: &Session) -> ImportedSession {
        ImportedSession {
            guid: Some(s.id.clone()),
            id: None,
            title: s.title.clone(),
            room: s.room.clone(),
            start_unix: s.start_unix,
            end_unix: s.end_unix,
            track: s.track.clone(),
            speakers: s.speakers.clone(),
            abstract_text: s.abstract_text.clone(),
        }
    }

    fn sample() -> Vec<Session> {
        vec![
            session("t1", "Opening", 1_772_900_000, SessionStatus::Scheduled),
            session(
                "t2",
                "A title long enough to be folded at seventy-five octets, with ünïcödé in it",
                1_773_000_000,
                SessionStatus::Moved,
            ),
            session(
                "t3",
                "Cancelled talk",
                1_773_100_000,
                SessionStatus::Cancelled,
            ),
        ]
    }

    #[test]
    fn ics_export_reimports_to_the_same_sessions() {
        let ics = to_ics(&event(), &sample(), 1_772_000_000).unwrap();
        assert!(ics.lines().all(|l| l.len() <= 76), "lines are folded");
        assert!(ics.contains("STATUS:CANCELLED"));
        let back: ImportedSchedule = parse_ics(ics.as_bytes()).unwrap();
        assert_eq!(back.name, "Conf, 2026");
        assert_eq!(back.time_zone, "America/New_York");
        let want: Vec<ImportedSession> = sample()[..2].iter().map(as_imported).collect();
        assert_eq!(back.sessions, want, "the cancelled one is left out");
    }

    #[test]
    fn json_export_reimports_to_the_same_sessions() {
        let mut sessions = sample();
        sessions[0].end_unix += 7; // seconds survive as HH:MM:SS
        let value = to_schedule_json(&event(), &sessions).unwrap();
        let back = parse_schedule_json(value.to_string().as_bytes()).unwrap();
        assert_eq!(back.time_zone, "America/New_York");
        let want: Vec<ImportedSession> = sessions[..2]
            .iter()
            .enumerate()
            .map(|(i, s)| ImportedSession {
                id: Some((i + 1).to_string()),
                ..as_imported(s)
            })
            .collect();
        assert_eq!(back.sessions, want);
        assert_eq!(duration_text(3600 + 5 * 60), "01:05");
        assert_eq!(duration_text(45 * 60 + 7), "00:45:07");
    }

    #[test]
    fn an_unknown_zone_is_an_error_not_a_panic() {
        let mut e = event();
        e.time_zone = "Mars/Olympus".into();
        assert!(matches!(
            to_schedule_json(&e, &sample()),
            Err(ClientError::Time(_))
        ));
    }
}
