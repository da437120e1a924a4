//! A lenient reader for c3voc `schedule.json` files (frab / pretalx exports).
//!
//! Two layouts are understood:
//!
//! * **schedule.json** (`https://c3voc.de/schedule/schema.json`):
//!   `schedule.conference.days[].rooms{ROOM: [event]}`. An event starts at its
//!   `date` (RFC 3339 with an offset) and lasts `duration` (`HH:MM`, `H:MM` or
//!   `HH:MM:SS`; an ISO 8601 `PT1H30M` is accepted too). The room is the key
//!   the event is filed under.
//! * **schedule2** (`https://c3voc.de/schema/schedule2`): a flat
//!   `schedule.events[]` list with `start` and `end` instants (or `start` plus
//!   `duration`), rooms and tracks given by name or by a reference object
//!   (`{guid, slug, name}`) that is resolved against `conference.rooms` /
//!   `conference.tracks`, and `participants` resolved against
//!   `schedule.persons`.
//!
//! Lenient means: the schema's slug/acronym patterns, unknown keys
//! (`answers`, a stray `schedule.rooms`), string ids, empty or `null` optional
//! text and a missing `time_zone_name` are all accepted. Only the fields an
//! agenda cannot do without are required: a title, a room, a start and an end
//! (or duration). When one of those is missing or unreadable,
//! [`ImportError`] names its JSON path, e.g.
//! `schedule.conference.days[2].rooms.Curie[4].duration: expected HH:MM, got "1h"`;
//! when the bytes are not JSON at all, it names the line and column.
//!
//! ```
//! use lanyard_schedule::import::parse_schedule_json;
//! let json = br#"{"schedule": {"conference": {
//!     "title": "Tiny", "time_zone_name": "Europe/Berlin",
//!     "days": [{"rooms": {"Hall": [{"id": 7, "title": "Welcome",
//!         "date": "2019-08-21T23:30:00+02:00", "duration": "0:45",
//!         "persons": [{"public_name": "Ada"}]}]}}]}}}"#;
//! let schedule = parse_schedule_json(json)?;
//! assert_eq!(schedule.sessions[0].id.as_deref(), Some("7"));
//! assert_eq!(schedule.sessions[0].end_unix - schedule.sessions[0].start_unix, 45 * 60);
//! assert_eq!(schedule.days(), ["2019-08-21"]); // in Europe/Berlin, not UTC
//! assert_eq!(schedule.rooms(), ["Hall"]);
//! # Ok::<(), lanyard_schedule::import::ImportError>(())
//! ```

use std::collections::BTreeSet;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use lanyard_client_core::Link;
use serde_json::{Map, Value};

use super::zone::{EventZone, ZoneSource};
use super::{base_url, file_link, page_url};

/// One session of an imported schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportedSession {
    /// The event's `guid`, if it has a non-empty one.
    pub guid: Option<String>,
    /// The event's `id`. Exports write it as a JSON integer or as a string;
    /// either way it is kept as a string (`10386` becomes `"10386"`).
    /// `None` when absent or `null` (schedule2 events have no `id`).
    pub id: Option<String>,
    /// The title (required; may be empty if the file says `""`).
    pub title: String,
    /// The room's name.
    pub room: String,
    /// Start, in seconds since the Unix epoch (UTC).
    pub start_unix: i64,
    /// End, in seconds since the Unix epoch (UTC); never before `start_unix`.
    pub end_unix: i64,
    /// The track's name, or `""` when the event has none (`null` or absent).
    pub track: String,
    /// Speaker names, in the file's order: `persons[].public_name` (else
    /// `name`), or for schedule2 the `participants` whose role is `SPEAKER`
    /// (the schema's default when no role is given).
    pub speakers: Vec<String>,
    /// The `abstract`, or the `description` when the abstract is absent,
    /// `null` or blank; `""` when neither has text. May contain HTML or
    /// Markdown, exactly as exported.
    pub abstract_text: String,
    /// The session's own page (`url`; iCalendar `URL`) when it is a web
    /// URL (a relative one resolved against the file's `base_url`), `""`
    /// otherwise.
    pub url: String,
    /// Links attendees use (slides, recordings, projects): the file's
    /// `links`, then its `attachments`, in file order (`{url, title}`;
    /// schedule.xml `<link href>title</link>`); URLs resolved like `url`,
    /// entries without one an attendee could open are dropped.
    pub links: Vec<Link>,
    /// The `language` (e.g. `en`), `""` when none.
    pub language: String,
    /// The session's `type` (free text such as `lecture`, `workshop`),
    /// `""` when none.
    pub kind: String,
}

/// A whole imported schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedSchedule {
    /// The conference `title`, else its `acronym`, else `""`.
    pub name: String,
    /// The IANA time zone floating local times were read in and
    /// [`days`](Self::days) are counted in: the file's own zone when it is
    /// known to the bundled tz database (schedule.json and schedule.xml
    /// `time_zone_name`, iCalendar `X-WR-TIMEZONE` or the first `TZID`),
    /// else the fallback zone the caller gave, else `"UTC"` (see
    /// [`zone_source`](Self::zone_source); a file with floating times and
    /// no zone at all is refused with [`ImportError::NoTimeZone`]).
    ///
    /// The zone is never guessed from the offsets in the event times,
    /// because an offset such as `+01:00` belongs to many zones with
    /// different DST rules. Note that files may name a zone that
    /// disagrees with their offsets (pretalx-democon says `UTC` but writes
    /// `+01:00`); the instants are always taken from the offsets, the zone
    /// only decides on which date a session falls.
    pub time_zone: String,
    /// All sessions, sorted by start, then room (stable otherwise).
    pub sessions: Vec<ImportedSession>,
    /// Where [`time_zone`](Self::time_zone) came from: the file, the
    /// caller's fallback, or nowhere (then it is `"UTC"`, and every time in
    /// the file had an offset).
    pub zone_source: ZoneSource,
    /// Whether the file had local times without an offset (read in
    /// [`time_zone`](Self::time_zone)).
    pub floating_times: bool,
}

impl ImportedSchedule {
    /// A schedule with its sessions in the readers' order: by start, then
    /// room, then end (stable otherwise), and the zone its times were read in.
    pub(crate) fn sorted(
        name: String,
        zone: &EventZone,
        mut sessions: Vec<ImportedSession>,
    ) -> Self {
        sessions.sort_by(|a, b| {
            (a.start_unix, &a.room)
                .cmp(&(b.start_unix, &b.room))
                .then(a.end_unix.cmp(&b.end_unix))
        });
        ImportedSchedule {
            name,
            time_zone: zone.name().to_owned(),
            sessions,
            zone_source: zone.source(),
            floating_times: zone.had_floating_times(),
        }
    }

    /// Distinct dates (`YYYY-MM-DD`, in [`time_zone`](Self::time_zone)) on
    /// which a session starts, sorted.
    pub fn days(&self) -> Vec<String> {
        let tz = TimeZone::get(&self.time_zone).unwrap_or(TimeZone::UTC);
        let days: BTreeSet<String> = self
            .sessions
            .iter()
            .filter_map(|s| Timestamp::from_second(s.start_unix).ok())
            .map(|ts| ts.to_zoned(tz.clone()).date().to_string())
            .collect();
        days.into_iter().collect()
    }

    /// Distinct rooms holding at least one session, sorted.
    pub fn rooms(&self) -> Vec<String> {
        let rooms: BTreeSet<&str> = self.sessions.iter().map(|s| s.room.as_str()).collect();
        rooms.into_iter().map(str::to_owned).collect()
    }
}

/// Why a schedule could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The bytes are not well-formed JSON (or not UTF-8).
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line of the problem (for a truncated file: its last line).
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the JSON parser found wrong.
        message: String,
    },
    /// The JSON matches neither layout.
    #[error(
        "not a schedule: expected schedule.conference.days[] (schedule.json) \
         or schedule.events[] (schedule2)"
    )]
    UnknownLayout,
    /// A required field is absent or `null`.
    #[error("{path}: required field is missing or null")]
    Missing {
        /// JSON path of the field, e.g. `schedule.conference.days[0].rooms.Curie[3].title`.
        path: String,
    },
    /// A field is present but its value cannot be used.
    #[error("{path}: expected {expected}, got {got}")]
    Invalid {
        /// JSON path of the field.
        path: String,
        /// What a valid value looks like, e.g. `HH:MM`.
        expected: String,
        /// The value found, as (shortened) JSON, e.g. `"1h"`.
        got: String,
    },
    /// An iCalendar file (see [`parse_ics`](super::parse_ics)) is malformed
    /// or lacks what a session needs.
    #[error("iCalendar line {line}: {message}")]
    Ics {
        /// 1-based physical line of the problem (for a folded property: the
        /// line where it starts; for a whole event: its `BEGIN:VEVENT`).
        line: usize,
        /// What is wrong, e.g. `DTSTART: expected a date-time ...`.
        message: String,
    },
    /// A `schedule.xml` file (see [`parse_schedule_xml`](super::parse_schedule_xml))
    /// is malformed, not a schedule, or has an event that lacks what a
    /// session needs.
    #[error("XML line {line}: {message}")]
    Xml {
        /// 1-based line of the problem: where the XML parser stopped (for a
        /// truncated file: its last line), or the line of the `<event>`
        /// missing a required element, or of the element that is unreadable.
        line: usize,
        /// What is wrong, e.g. `event 123: <duration> expected HH:MM, got "1h"`.
        message: String,
    },
    /// The file has a local time without a UTC offset, names no time zone,
    /// and no fallback zone was given: reading it as UTC would put sessions
    /// at the wrong hour.
    #[error(
        "{at}: a local time without a UTC offset, and neither the file nor the agenda \
         names the event's time zone to read it in; give the zone (an IANA name such \
         as Europe/Brussels)"
    )]
    NoTimeZone {
        /// Where the first such time is: a JSON path, `XML line N: event ID`
        /// or `iCalendar line N`.
        at: String,
    },
    /// The fallback time zone given for a file is not a known IANA zone.
    #[error("unknown time zone {name:?}: give an IANA name such as Europe/Brussels")]
    UnknownTimeZone {
        /// The name as given.
        name: String,
    },
}

/// Parses a c3voc `schedule.json` (or schedule2) document.
///
/// See the [module docs](self) for the layouts and what is tolerated.
/// `invalid-example.json` from voc/schedule (string ids, extra `answers`,
/// `rooms` at the wrong level) is imported, since none of its schema
/// violations affect the agenda.
///
/// Local times without an offset are read in the file's `time_zone_name`;
/// without one they are refused ([`ImportError::NoTimeZone`]): give a
/// fallback zone with [`parse_schedule`](super::parse_schedule).
pub fn parse_schedule_json(bytes: &[u8]) -> Result<ImportedSchedule, ImportError> {
    read(bytes, None)
}

/// [`parse_schedule_json`] with a zone for floating times when the file
/// names none (see [`parse_schedule`](super::parse_schedule)).
pub(crate) fn read(bytes: &[u8], fallback: Option<&str>) -> Result<ImportedSchedule, ImportError> {
    let root: Value = serde_json::from_slice(bytes).map_err(syntax_error)?;
    // The `schedule` wrapper is optional: accept a bare schedule object too.
    let (schedule, base) = match root.get("schedule") {
        Some(s @ Value::Object(_)) => (s, "schedule"),
        _ if root.get("conference").is_some() || root.get("events").is_some() => (&root, ""),
        _ => return Err(ImportError::UnknownLayout),
    };
    let conf_path = join(base, "conference");
    let conference = match schedule.get("conference") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => Some(c),
        Some(other) => return Err(invalid(&conf_path, "an object", other)),
    };
    let empty = Map::new();
    let conference = conference.unwrap_or(&empty);

    let zone = EventZone::new(
        conference.get("time_zone_name").and_then(Value::as_str),
        fallback,
    )?;
    let name = [conference.get("title"), conference.get("acronym")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|s| !s.trim().is_empty())
        .unwrap_or("")
        .to_owned();

    let ctx = Context {
        zone,
        base: base_url(schedule.get("base_url").and_then(Value::as_str)),
        rooms: array_of(conference.get("rooms")),
        tracks: array_of(conference.get("tracks")),
        persons: array_of(schedule.get("persons")),
    };

    let mut sessions = Vec::new();
    if let Some(events) = schedule.get("events").filter(|v| !v.is_null()) {
        // schedule2: a flat list of events.
        let events_path = join(base, "events");
        let events = events
            .as_array()
            .ok_or_else(|| invalid(&events_path, "an array", events))?;
        for (i, event) in events.iter().enumerate() {
            let path = format!("{events_path}[{i}]");
            sessions.push(read_event(event, &path, None, &ctx)?);
        }
    } else {
        let days_path = join(&conf_path, "days");
        let days = match conference.get("days") {
            Some(Value::Array(days)) => days,
            Some(Value::Null) | None => return Err(ImportError::UnknownLayout),
            Some(other) => return Err(invalid(&days_path, "an array", other)),
        };
        for (d, day) in days.iter().enumerate() {
            let day_path = format!("{days_path}[{d}]");
            let rooms_path = join(&day_path, "rooms");
            let rooms = match day.get("rooms") {
                // A day without rooms holds no events.
                None | Some(Value::Null) => continue,
                Some(Value::Object(rooms)) => rooms,
                Some(other) => return Err(invalid(&rooms_path, "an object", other)),
            };
            for (room, events) in rooms {
                let room_path = join(&rooms_path, room);
                let events = match events {
                    Value::Null => continue,
                    Value::Array(events) => events,
                    other => return Err(invalid(&room_path, "an array", other)),
                };
                for (i, event) in events.iter().enumerate() {
                    let path = format!("{room_path}[{i}]");
                    sessions.push(read_event(event, &path, Some(room), &ctx)?);
                }
            }
        }
    }
    Ok(ImportedSchedule::sorted(name, &ctx.zone, sessions))
}

/// The event's zone and the lookup tables shared by all events of one file.
struct Context<'a> {
    zone: EventZone,
    /// `base_url`, for relative links.
    base: Option<url::Url>,
    rooms: &'a [Value],
    tracks: &'a [Value],
    persons: &'a [Value],
}

fn array_of(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn syntax_error(e: serde_json::Error) -> ImportError {
    let (line, column) = (e.line(), e.column());
    let full = e.to_string();
    let suffix = format!(" at line {line} column {column}");
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    ImportError::Syntax {
        line,
        column,
        message,
    }
}

/// `parent.key`, or `parent["key"]` when the key is not a plain identifier.
fn join(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{}]", Value::from(key)),
    }
}

/// A short JSON rendering of a value for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        other => {
            let text = other.to_string();
            if text.chars().count() > 60 {
                let cut: String = text.chars().take(57).collect();
                format!("{cut}...")
            } else {
                text
            }
        }
    }
}

fn invalid(path: &str, expected: &str, got: &Value) -> ImportError {
    ImportError::Invalid {
        path: path.to_owned(),
        expected: expected.to_owned(),
        got: describe(got),
    }
}

/// A field that is present and not `null`.
fn field<'a>(event: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    event.get(key).filter(|v| !v.is_null())
}

/// A non-blank string field.
fn text<'a>(event: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    field(event, key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

fn read_event(
    event: &Value,
    path: &str,
    room_key: Option<&str>,
    ctx: &Context<'_>,
) -> Result<ImportedSession, ImportError> {
    let event = event
        .as_object()
        .ok_or_else(|| invalid(path, "an event object", event))?;

    let title_path = join(path, "title");
    let title = match field(event, "title") {
        None => return Err(ImportError::Missing { path: title_path }),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(invalid(&title_path, "a string", other)),
    };

    // schedule.json: `date` is the instant and `start` is a local "HH:MM";
    // schedule2: `start` is the instant.
    let start_key = if room_key.is_some() || field(event, "start").is_none() {
        "date"
    } else {
        "start"
    };
    let start_path = join(path, start_key);
    let start = match field(event, start_key) {
        Some(v) => parse_instant(v, &start_path, &ctx.zone)?,
        None => return Err(ImportError::Missing { path: start_path }),
    };
    // The end is an instant (`end`, newer) or a duration (`duration`,
    // deprecated but what older schedule.json files give); the instant
    // wins, as it keeps seconds the `HH:MM` duration cannot.
    let keys = ["end", "duration"];
    let Some((key, value)) = keys
        .into_iter()
        .find_map(|key| field(event, key).map(|v| (key, v)))
    else {
        return Err(ImportError::Missing {
            path: join(path, keys[0]),
        });
    };
    let end_path = join(path, key);
    let end = if key == "duration" {
        start
            .as_second()
            .checked_add(parse_duration(value, &end_path)?)
            .ok_or_else(|| invalid(&end_path, "a shorter duration", value))?
    } else {
        let end = parse_instant(value, &end_path, &ctx.zone)?.as_second();
        if end < start.as_second() {
            return Err(invalid(&end_path, "an instant not before the start", value));
        }
        end
    };

    let room = match room_key.filter(|k| !k.trim().is_empty()) {
        Some(key) => key.to_owned(),
        None => read_room(event, path, ctx)?,
    };

    Ok(ImportedSession {
        guid: text(event, "guid").map(str::to_owned),
        id: read_id(event, path)?,
        title,
        room,
        start_unix: start.as_second(),
        end_unix: end,
        track: read_track(event, ctx),
        speakers: read_speakers(event, ctx),
        abstract_text: text(event, "abstract")
            .or_else(|| text(event, "description"))
            .unwrap_or("")
            .to_owned(),
        url: page_url(text(event, "url"), ctx.base.as_ref()),
        links: read_links(event, ctx.base.as_ref()),
        language: text(event, "language").unwrap_or("").trim().to_owned(),
        kind: text(event, "type").unwrap_or("").trim().to_owned(),
    })
}

/// `links` then `attachments`: each `{url, title}` (`href` is accepted for
/// `url`), or a bare URL string; entries without an absolute web URL are
/// dropped (an attendee cannot open a relative path).
fn read_links(event: &Map<String, Value>, base: Option<&url::Url>) -> Vec<Link> {
    ["links", "attachments"]
        .into_iter()
        .flat_map(|key| array_of(field(event, key)))
        .filter_map(|entry| match entry {
            Value::String(url) => file_link(url, "", base),
            Value::Object(link) => {
                let url = text(link, "url").or_else(|| text(link, "href"))?;
                file_link(url, text(link, "title").unwrap_or(""), base)
            }
            _ => None,
        })
        .collect()
}

/// An RFC 3339 instant; without an offset, a local date-time in the
/// event's zone (an error when there is none, see [`EventZone`]).
pub(super) fn parse_instant(
    value: &Value,
    path: &str,
    zone: &EventZone,
) -> Result<Timestamp, ImportError> {
    const EXPECTED: &str = "an RFC 3339 date-time such as 2019-08-21T11:00:00+02:00";
    let s = value
        .as_str()
        .map(str::trim)
        .ok_or_else(|| invalid(path, EXPECTED, value))?;
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(ts);
    }
    let local = s
        .replace(' ', "T")
        .parse::<DateTime>()
        .map_err(|_| invalid(path, EXPECTED, value))?;
    zone.local(local)
        .map_err(|no_zone| no_zone.at(path))?
        .ok_or_else(|| invalid(path, EXPECTED, value))
}

/// `HH:MM`, `H:MM` or `HH:MM:SS` (or ISO 8601 `PT1H30M`), in seconds.
pub(super) fn parse_duration(value: &Value, path: &str) -> Result<i64, ImportError> {
    let bad = || invalid(path, "HH:MM", value);
    let s = value.as_str().map(str::trim).ok_or_else(bad)?;
    if s.starts_with(['P', 'p']) {
        let d: SignedDuration = s.parse().map_err(|_| bad())?;
        return if d.is_negative() {
            Err(bad())
        } else {
            Ok(d.as_secs())
        };
    }
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(bad());
    }
    let mut numbers = [0_i64; 3];
    for (i, part) in parts.iter().enumerate() {
        let max_len = if i == 0 { 4 } else { 2 };
        if part.is_empty() || part.len() > max_len || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        numbers[i] = part.parse().map_err(|_| bad())?;
    }
    let [hours, minutes, seconds] = numbers;
    if minutes >= 60 || seconds >= 60 {
        return Err(bad());
    }
    Ok(hours * 3600 + minutes * 60 + seconds)
}

/// `id` as a string: JSON strings and numbers are accepted.
fn read_id(event: &Map<String, Value>, path: &str) -> Result<Option<String>, ImportError> {
    match field(event, "id") {
        None => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(invalid(&join(path, "id"), "an integer or a string", other)),
    }
}

/// A room given by name, or by a reference object resolved against
/// `conference.rooms` (by guid, then slug).
fn read_room(
    event: &Map<String, Value>,
    path: &str,
    ctx: &Context<'_>,
) -> Result<String, ImportError> {
    let room_path = join(path, "room");
    let value = match field(event, "room") {
        None => return Err(ImportError::Missing { path: room_path }),
        Some(v) => v,
    };
    let found = match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Object(reference) => resolve_reference(reference, ctx.rooms, "name"),
        _ => None,
    };
    found.ok_or_else(|| invalid(&room_path, "a room name or {name|guid|slug}", value))
}

/// A track given by name, or by a reference object resolved against
/// `conference.tracks`; anything unusable gives `""`.
fn read_track(event: &Map<String, Value>, ctx: &Context<'_>) -> String {
    match field(event, "track") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(reference)) => {
            resolve_reference(reference, ctx.tracks, "name").unwrap_or_default()
        }
        _ => String::new(),
    }
}

/// The `name_key` of a reference object: its own, else that of the entry of
/// `table` with the same guid (or slug), else the reference's slug or guid.
fn resolve_reference(
    reference: &Map<String, Value>,
    table: &[Value],
    name_key: &str,
) -> Option<String> {
    if let Some(name) = text(reference, name_key) {
        return Some(name.to_owned());
    }
    for key in ["guid", "slug"] {
        let Some(wanted) = text(reference, key) else {
            continue;
        };
        let hit = table
            .iter()
            .filter_map(Value::as_object)
            .find(|entry| text(entry, key) == Some(wanted))
            .and_then(|entry| text(entry, name_key));
        if let Some(name) = hit {
            return Some(name.to_owned());
        }
    }
    text(reference, "slug")
        .or_else(|| text(reference, "guid"))
        .map(str::to_owned)
}

/// Speaker names from schedule2 `participants` (role `SPEAKER` or no role),
/// else from schedule.json `persons`.
fn read_speakers(event: &Map<String, Value>, ctx: &Context<'_>) -> Vec<String> {
    if let Some(Value::Array(participants)) = field(event, "participants") {
        return participants
            .iter()
            .filter_map(|p| match p {
                Value::String(name) => Some(name.trim().to_owned()),
                Value::Object(p) => {
                    let role = text(p, "role").unwrap_or("SPEAKER");
                    if !role.trim().eq_ignore_ascii_case("SPEAKER") {
                        return None;
                    }
                    person_name(p).or_else(|| {
                        let guid = text(p, "guid")?;
                        ctx.persons
                            .iter()
                            .filter_map(Value::as_object)
                            .find(|person| text(person, "guid") == Some(guid))
                            .and_then(person_name)
                    })
                }
                _ => None,
            })
            .filter(|name| !name.is_empty())
            .collect();
    }
    array_of(field(event, "persons"))
        .iter()
        .filter_map(|p| match p {
            Value::String(name) => Some(name.trim().to_owned()),
            Value::Object(p) => person_name(p),
            _ => None,
        })
        .filter(|name| !name.is_empty())
        .collect()
}

fn person_name(person: &Map<String, Value>) -> Option<String> {
    ["public_name", "name", "full_public_name", "full_name"]
        .into_iter()
        .find_map(|key| text(person, key))
        .map(|name| name.trim().to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::import::test_util::{by_guid, ts};

    const FRAB: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/schedules/frab-camp2019.json"
    ));
    const RC3: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/schedules/pretalx-rc3.json"
    ));
    const DEMOCON: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/schedules/pretalx-democon.json"
    ));
    const HUB: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/schedules/hub-schedule2.json"
    ));
    const INVALID_EXAMPLE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/schedules/invalid-example.json"
    ));

    fn modified(bytes: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut value: Value = serde_json::from_slice(bytes).unwrap();
        edit(&mut value);
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn import_frab_camp2019() {
        let s = parse_schedule_json(FRAB).unwrap();
        assert_eq!(s.name, "Chaos Communication Camp 2019");
        assert_eq!(s.time_zone, "Europe/Berlin");
        assert_eq!(s.sessions.len(), 79);
        assert_eq!(s.rooms(), ["Curie", "Meitner"]);
        assert_eq!(
            s.days(),
            [
                "2019-08-21",
                "2019-08-22",
                "2019-08-23",
                "2019-08-24",
                "2019-08-25"
            ]
        );
        let open = by_guid(&s, "a0a0fcfe-b7fb-46e3-84b6-97a5406016b4");
        assert_eq!(open.id.as_deref(), Some("10386"));
        assert_eq!(open.title, "Opening Ceremony");
        assert_eq!(open.room, "Curie");
        assert_eq!(open.start_unix, ts("2019-08-21T11:00:00+02:00"));
        assert_eq!(open.start_unix, 1_566_378_000);
        assert_eq!(open.end_unix, ts("2019-08-21T09:30:00Z"));
        assert_eq!(open.track, "CCC");
        assert_eq!(open.speakers, ["jinxx", "smtw"]);
        assert_eq!(open.abstract_text, "A hearty welcome me lasses and lads!");
        // Its page, language, type; links and attachments, the relative
        // attachment paths resolved against the schedule's base_url.
        assert_eq!(
            open.url,
            "https://fahrplan.events.ccc.de/camp/2019/Fahrplan/events/10386.html"
        );
        assert_eq!(
            (open.language.as_str(), open.kind.as_str()),
            ("en", "lecture")
        );
        let hacking = by_guid(&s, "24b58c74-2bba-412e-84ac-c206f714f0b7");
        assert_eq!(
            hacking.links,
            [Link::new(
                "https://fahrplan.events.ccc.de/system/event_attachments/attachments/000/003/792/\
                 original/Hacking_Containers_and_Kubernetes.pdf?1566398735",
                "Slides"
            )]
        );
        assert_eq!(s.sessions.iter().map(|x| x.links.len()).sum::<usize>(), 64);
        // One event has an empty persons list.
        assert_eq!(
            s.sessions.iter().filter(|x| x.speakers.is_empty()).count(),
            1
        );
        // Sorted by start.
        assert!(s
            .sessions
            .windows(2)
            .all(|w| w[0].start_unix <= w[1].start_unix));
    }

    #[test]
    fn import_pretalx_rc3_without_time_zone_name() {
        let s = parse_schedule_json(RC3).unwrap();
        assert_eq!(s.name, "rC3 Channels");
        assert_eq!(s.time_zone, "UTC");
        assert_eq!(s.sessions.len(), 48);
        assert_eq!(
            s.rooms(),
            [
                "Chaos-West TV - Ennepetal",
                "ChaosTrawler Stubnitz/Gängeviertel Hamburg",
                "backspace / franconian.net - Bamberg",
                "hacc München / about:future - München",
                "r3s - Monheim/Rhein",
            ]
        );
        assert_eq!(
            s.days(),
            ["2020-12-27", "2020-12-28", "2020-12-29", "2020-12-30"]
        );
        let gluon = by_guid(&s, "c3642671-4c1f-5109-81ba-0535c1cc8428");
        assert_eq!(gluon.id.as_deref(), Some("15"));
        assert_eq!(
            gluon.title,
            "Der faule Admin automatisiert: Gluon auf echter Hardware testen"
        );
        assert_eq!(gluon.room, "r3s - Monheim/Rhein");
        assert_eq!(gluon.start_unix, ts("2020-12-27T10:30:00Z"));
        assert_eq!(gluon.end_unix, ts("2020-12-27T11:10:00Z")); // duration 00:40
        assert_eq!(gluon.track, "MON r3s Rhein VHS");
        assert_eq!(gluon.speakers, ["Chris Fiege", "Kasa"]);
        assert!(gluon.abstract_text.starts_with("Eine wichtige Komponente"));
    }

    #[test]
    fn import_pretalx_democon_utc_zone_with_plus_one_offsets() {
        let s = parse_schedule_json(DEMOCON).unwrap();
        assert_eq!(s.name, "DemoCon");
        assert_eq!(s.time_zone, "UTC");
        assert_eq!(s.sessions.len(), 36);
        assert_eq!(s.rooms(), ["Gray Room", "Tan Room"]);
        // Times are +01:00 but no session is near midnight, so UTC days match.
        assert_eq!(s.days(), ["2020-12-14", "2020-12-15", "2020-12-16"]);
        let first = by_guid(&s, "8079583e-8321-506c-95af-fd2903a5f075");
        assert_eq!(first.title, "Focused 5thgeneration hardware");
        assert_eq!(first.room, "Gray Room");
        assert_eq!(first.start_unix, ts("2020-12-14T08:00:00Z"));
        assert_eq!(first.end_unix, ts("2020-12-14T08:30:00Z"));
        assert_eq!(first.speakers, ["Brian Robinson"]);
        assert_eq!(first.track, "Phased");
    }

    #[test]
    fn import_hub_schedule2() {
        let s = parse_schedule_json(HUB).unwrap();
        assert_eq!(s.name, "38C3");
        assert_eq!(s.time_zone, "Europe/Berlin");
        assert_eq!(s.sessions.len(), 2);
        assert_eq!(s.rooms(), ["Saal 1", "Saal ZIGZAG"]);
        // The second talk starts 00:15 Berlin time, i.e. 2024-12-27 in UTC.
        assert_eq!(s.days(), ["2024-12-27", "2024-12-28"]);

        let open = by_guid(&s, "270fa44c-821a-577f-8ca3-33e8d4a8c2a7");
        assert_eq!(open.id, None);
        assert_eq!(open.title, "38C3: Opening Ceremony");
        assert_eq!(open.room, "Saal 1");
        assert_eq!(open.start_unix, ts("2024-12-27T09:30:00Z"));
        assert_eq!(open.end_unix, ts("2024-12-27T10:00:00Z"));
        assert_eq!(open.track, "CCC"); // {slug: ccc} resolved via conference.tracks
        assert_eq!(open.speakers, ["Gabriela Bogk", "Aline Blankertz"]); // not the CONTRIBUTOR
        assert!(open.abstract_text.starts_with("Glad you could make it!"));

        let ai = by_guid(&s, "b1740c2f-0c44-5f1b-89ed-456a9eecf0b8");
        assert_eq!(ai.title, "A Competitive Time-Trial AI for Need for Speed:");
        assert_eq!(ai.room, "Saal ZIGZAG");
        assert_eq!(ai.start_unix, ts("2024-12-27T23:15:00Z"));
        assert_eq!(ai.end_unix, ts("2024-12-27T23:55:00Z"));
        assert_eq!(ai.track, "Hardware & Making");
        assert_eq!(ai.speakers, ["Sebastian Schwarz"]);
    }

    #[test]
    fn schedule2_room_by_guid_and_duration_fallback() {
        let bytes = modified(HUB, |v| {
            let ev = &mut v["schedule"]["events"][1];
            ev["room"] = serde_json::json!({"guid": "62251a07-13e4-5a72-bb3c-8528416ee0f2"});
            ev.as_object_mut().unwrap().remove("end");
            ev["duration"] = Value::from("PT1H5M");
            ev["participants"] = serde_json::json!([
                {"guid": "51766dc0-326b-554c-993b-0b1ffa9e6a1e", "role": "SPEAKER"}
            ]);
        });
        let s = parse_schedule_json(&bytes).unwrap();
        let ai = by_guid(&s, "b1740c2f-0c44-5f1b-89ed-456a9eecf0b8");
        assert_eq!(ai.room, "Saal ZIGZAG");
        assert_eq!(ai.end_unix - ai.start_unix, 65 * 60);
        assert_eq!(ai.speakers, ["Sebastian Schwarz"]); // name from schedule.persons
    }

    #[test]
    fn invalid_example_is_imported_leniently() {
        // Its schema violations (string ids, `answers`, `schedule.rooms`) do
        // not matter to an agenda, so it imports.
        let s = parse_schedule_json(INVALID_EXAMPLE).unwrap();
        assert_eq!(s.name, "Winterchaos");
        assert_eq!(s.time_zone, "Europe/Zurich");
        assert_eq!(s.sessions.len(), 1);
        assert_eq!(s.rooms(), ["Winterchaos"]);
        assert_eq!(s.days(), ["2022-12-28"]);
        let talk = &s.sessions[0];
        assert_eq!(talk.id.as_deref(), Some("2814"));
        assert_eq!(talk.title, "Internal Penetration Testing Basics");
        assert_eq!(talk.start_unix, ts("2022-12-28T13:00:00Z"));
        assert_eq!(talk.end_unix, ts("2022-12-28T13:45:00Z"));
        assert_eq!(talk.speakers, ["Mänu"]);
    }

    #[test]
    fn truncated_json_names_the_last_line() {
        let cut = &FRAB[..FRAB.len() / 2];
        let lines = cut.iter().filter(|&&b| b == b'\n').count() + 1;
        let err = parse_schedule_json(cut).unwrap_err();
        match &err {
            ImportError::Syntax { line, .. } => assert_eq!(*line, lines),
            other => panic!("expected a syntax error, got {other:?}"),
        }
        assert!(err.to_string().contains(&format!("line {lines}")), "{err}");
    }

    #[test]
    fn garbled_json_names_the_line() {
        let text = std::str::from_utf8(HUB).unwrap();
        let at = text.find("\"subtitle\": null").unwrap();
        let line = text[..at].matches('\n').count() + 1;
        let garbled = text.replacen("\"subtitle\": null", "\"subtitle\": nul", 1);
        let err = parse_schedule_json(garbled.as_bytes()).unwrap_err();
        assert!(
            matches!(err, ImportError::Syntax { line: l, .. } if l == line),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .starts_with(&format!("invalid JSON at line {line}, column ")));
    }

    #[test]
    fn bad_duration_names_the_path() {
        let bytes = modified(FRAB, |v| {
            v["schedule"]["conference"]["days"][2]["rooms"]["Curie"][4]["duration"] =
                Value::from("1h");
        });
        let err = parse_schedule_json(&bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "schedule.conference.days[2].rooms.Curie[4].duration: expected HH:MM, got \"1h\""
        );
    }

    #[test]
    fn null_title_names_the_path() {
        let bytes = modified(DEMOCON, |v| {
            v["schedule"]["conference"]["days"][1]["rooms"]["Tan Room"][0]["title"] = Value::Null;
        });
        let err = parse_schedule_json(&bytes).unwrap_err();
        assert_eq!(
            err,
            ImportError::Missing {
                path: "schedule.conference.days[1].rooms[\"Tan Room\"][0].title".to_owned()
            }
        );
    }

    #[test]
    fn lenient_fields() {
        let bytes = modified(FRAB, |v| {
            v["schedule"]["conference"]["time_zone_name"] = Value::from("Mars/Olympus_Mons");
            let ev = &mut v["schedule"]["conference"]["days"][0]["rooms"]["Curie"][0];
            ev["track"] = Value::Null;
            ev["abstract"] = Value::Null;
            ev["description"] = Value::from("from description");
            ev["id"] = Value::from("abc");
            ev["duration"] = Value::from("1:05:30");
            ev["persons"] = serde_json::json!([{"name": "Only Name"}, {"id": 3}]);
        });
        let s = parse_schedule_json(&bytes).unwrap();
        assert_eq!(s.time_zone, "UTC");
        let open = by_guid(&s, "a0a0fcfe-b7fb-46e3-84b6-97a5406016b4");
        assert_eq!(open.track, "");
        assert_eq!(open.abstract_text, "from description");
        assert_eq!(open.id.as_deref(), Some("abc"));
        assert_eq!(open.end_unix - open.start_unix, 3600 + 5 * 60 + 30);
        assert_eq!(open.speakers, ["Only Name"]);
    }

    #[test]
    fn local_dates_are_read_in_the_files_zone_else_the_fallback_else_refused() {
        let local = |zone: Option<&str>| {
            modified(FRAB, |v| {
                let conference = &mut v["schedule"]["conference"];
                match zone {
                    Some(z) => conference["time_zone_name"] = Value::from(z),
                    None => {
                        conference.as_object_mut().unwrap().remove("time_zone_name");
                    }
                }
                let ev = &mut conference["days"][0]["rooms"]["Curie"][0];
                ev["date"] = Value::from("2019-08-21T11:00:00");
            })
        };
        let opening = "a0a0fcfe-b7fb-46e3-84b6-97a5406016b4";
        let s = parse_schedule_json(&local(Some("Europe/Berlin"))).unwrap();
        assert!(s.floating_times);
        assert_eq!(s.zone_source, ZoneSource::File);
        assert_eq!(
            by_guid(&s, opening).start_unix,
            ts("2019-08-21T11:00:00+02:00")
        );

        let err = parse_schedule_json(&local(None)).unwrap_err();
        assert_eq!(
            err,
            ImportError::NoTimeZone {
                at: "schedule.conference.days[0].rooms.Curie[0].date".into()
            }
        );
        let s = super::read(&local(None), Some("America/New_York")).unwrap();
        assert_eq!(s.zone_source, ZoneSource::Fallback);
        assert_eq!(s.time_zone, "America/New_York");
        assert_eq!(
            by_guid(&s, opening).start_unix,
            ts("2019-08-21T11:00:00-04:00")
        );
        // Every other date has an offset: those are not moved.
        let other = &s
            .sessions
            .iter()
            .find(|x| x.guid.as_deref() != Some(opening))
            .unwrap();
        let original = parse_schedule_json(FRAB).unwrap();
        assert_eq!(
            by_guid(&original, other.guid.as_deref().unwrap()).start_unix,
            other.start_unix
        );
    }

    #[test]
    fn durations() {
        let p = |s: &str| parse_duration(&Value::from(s), "d");
        assert_eq!(p("00:30").unwrap(), 1800);
        assert_eq!(p("1:30").unwrap(), 5400);
        assert_eq!(p("01:30:15").unwrap(), 5415);
        assert_eq!(p("PT1H30M").unwrap(), 5400);
        for bad in ["1h", "", "1", "01:60", "01:-5", "1:2:3:4", "-PT1H"] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn not_a_schedule() {
        assert_eq!(
            parse_schedule_json(b"{\"foo\": 1}").unwrap_err(),
            ImportError::UnknownLayout
        );
        assert_eq!(
            parse_schedule_json(b"[1, 2]").unwrap_err(),
            ImportError::UnknownLayout
        );
    }
}
