//! A lenient reader for iCalendar (RFC 5545) conference schedules.
//!
//! Every `VEVENT` of the file becomes one [`ImportedSession`]:
//!
//! | session field | iCalendar property |
//! |---|---|
//! | `guid` | `UID` (`None` when absent or blank) |
//! | `id` | always `None` (iCalendar has no numeric id) |
//! | `title` | `SUMMARY` (an empty `SUMMARY:` or none gives `""`) |
//! | `room` | `LOCATION` (`""` when absent) |
//! | `start_unix` | `DTSTART` (required) |
//! | `end_unix` | `DTEND`, else `DTSTART` + `DURATION`, else `DTSTART` (one day later for an all-day `VALUE=DATE` start, as RFC 5545 says) |
//! | `track` | the first value of the first `CATEGORIES`, else `""` |
//! | `abstract_text` | `DESCRIPTION`, else `""` |
//! | `speakers` | the comma-separated list `X-LANYARD-SPEAKERS` (written by Lanyard's own export), else empty (`ATTENDEE`/`ORGANIZER` are not speakers) |
//! | `url` | `URL` when it is a web URL, else `""` |
//! | `links`, `language`, `kind` | `X-LANYARD-LINKS` (`URL TITLE`, comma-separated), `X-LANYARD-LANGUAGE`, `X-LANYARD-TYPE` (written by Lanyard's own export), else empty |
//!
//! A `VEVENT` with `STATUS:CANCELLED` is left out: importing the file into an
//! agenda then cancels that session there, as for any session missing from a
//! re-import.
//!
//! What is understood:
//!
//! * CRLF or bare LF line endings, and folded lines (a line break followed by
//!   a space or tab continues the previous line; unfolding happens on bytes,
//!   so a fold inside a multi-byte UTF-8 character is fine too).
//! * TEXT escapes `\,` `\;` `\\` `\n` `\N` (any other `\x` gives `x`).
//! * Parameters, quoted or not: `DTSTART;TZID=Europe/London:20150918T090000`,
//!   `DTSTART;VALUE=DATE:20150918`.
//! * UTC times (`20150918T070000Z`), times in a `TZID` zone (looked up in the
//!   bundled IANA tz database; a DST gap or overlap resolves as RFC 5545
//!   says: a time in a gap uses the offset before the gap, a repeated time
//!   means its first occurrence) and floating local times, which are read
//!   in the calendar's zone ([`ImportedSchedule::time_zone`]).
//!
//! Lenient means: a missing `DTSTAMP` (required by RFC 5545), a missing
//! `UID`, `LOCATION` or `DTEND`, unknown properties and components
//! (`VTIMEZONE`, `VTODO`, `VALARM`, ...), lines that are not `NAME:value`
//! inside a component, blank lines, a UTF-8 BOM and anything after the last
//! `END:VCALENDAR` are all accepted. Several `VCALENDAR`s in one file are
//! read as one schedule. Not supported: `VTIMEZONE` definitions are not read
//! (a `TZID` must be an IANA name such as `Europe/London`), and recurrence
//! (`RRULE`, `RDATE`, `RECURRENCE-ID`) is not expanded: each `VEVENT` gives
//! exactly one session, at its `DTSTART`.
//!
//! Errors are [`ImportError::Ics`] and name the physical line (1-based) of
//! the problem: a file that does not start with `BEGIN:VCALENDAR`, a
//! `VEVENT` without `END:VEVENT` (its `BEGIN` line), an event without
//! `DTSTART` (its `BEGIN` line), an unreadable `DTSTART`/`DTEND`/`DURATION`
//! or an unknown `TZID` (the property's line), or bytes that are not UTF-8.
//!
//! ```
//! use lanyard_schedule::import::parse_ics;
//! let ics = b"BEGIN:VCALENDAR\r\n\
//!     X-WR-CALNAME:Tiny\r\n\
//!     BEGIN:VEVENT\r\n\
//!     UID:talk-1@example.org\r\n\
//!     DTSTART;TZID=Europe/Berlin:20190821T233000\r\n\
//!     DURATION:PT45M\r\n\
//!     SUMMARY:Welcome\\, everyone\r\n\
//!     LOCATION:Hall\r\n\
//!     END:VEVENT\r\n\
//!     END:VCALENDAR\r\n";
//! let schedule = parse_ics(ics)?;
//! assert_eq!(schedule.name, "Tiny");
//! assert_eq!(schedule.time_zone, "Europe/Berlin"); // from the first DTSTART's TZID
//! assert_eq!(schedule.sessions[0].title, "Welcome, everyone");
//! assert_eq!(schedule.sessions[0].end_unix - schedule.sessions[0].start_unix, 45 * 60);
//! assert_eq!(schedule.days(), ["2019-08-21"]); // in Europe/Berlin, not UTC
//! # Ok::<(), lanyard_schedule::import::ImportError>(())
//! ```

use std::collections::BTreeMap;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Span, Zoned};
use lanyard_client_core::Link;

use super::schedule_json::{ImportError, ImportedSchedule, ImportedSession};
use super::zone::{self, EventZone};
use super::{file_link, page_url};

/// Parses an iCalendar (RFC 5545) file into a schedule.
///
/// See the [module docs](self) for the mapping of properties to session
/// fields and for what is tolerated. Sessions are sorted by start, then room
/// (then end), like [`parse_schedule_json`](super::parse_schedule_json).
///
/// The schedule's `name` is `X-WR-CALNAME` (else `""`). Its `time_zone` is
/// `X-WR-TIMEZONE` when that is a known IANA zone, else the `TZID` of the
/// first `DTSTART` (in file order) that has one, else `"UTC"`; floating
/// times are read in that zone. A floating time in a file that names no
/// zone is refused ([`ImportError::NoTimeZone`]): give a fallback zone with
/// [`parse_schedule`](super::parse_schedule).
pub fn parse_ics(bytes: &[u8]) -> Result<ImportedSchedule, ImportError> {
    read(bytes, None)
}

/// [`parse_ics`] with a zone for floating times when the file names none
/// (see [`parse_schedule`](super::parse_schedule)).
pub(crate) fn read(bytes: &[u8], fallback: Option<&str>) -> Result<ImportedSchedule, ImportError> {
    let calendar = read_structure(bytes)?;

    let file_zone = calendar
        .property("X-WR-TIMEZONE")
        .and_then(|p| known_zone(&p.value))
        .or_else(|| {
            calendar
                .events
                .iter()
                .filter_map(|e| e.property("DTSTART")?.param("TZID"))
                .next()
                .and_then(known_zone)
        });
    let zone = EventZone::new(file_zone.as_deref(), fallback)?;
    let name = calendar
        .property("X-WR-CALNAME")
        .map(|p| unescape_text(&p.value))
        .unwrap_or_default();

    let sessions = calendar
        .events
        .iter()
        .filter(|event| {
            !event
                .property("STATUS")
                .is_some_and(|p| p.value.trim().eq_ignore_ascii_case("CANCELLED"))
        })
        .map(|event| read_event(event, &zone))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ImportedSchedule::sorted(name, &zone, sessions))
}

/// One content line (`NAME;PARAM=value:value`) after unfolding.
#[derive(Debug)]
struct Property {
    /// The physical line on which the content line starts.
    line: usize,
    /// Parameters in file order, names upper-cased, quotes removed.
    params: Vec<(String, String)>,
    /// The raw (still escaped) value.
    value: String,
}

impl Property {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The properties of one component; the first occurrence of a name wins.
#[derive(Debug, Default)]
struct Properties(BTreeMap<String, Property>);

impl Properties {
    fn insert(&mut self, name: String, property: Property) {
        self.0.entry(name).or_insert(property);
    }
}

/// A `VEVENT` before its values are interpreted.
#[derive(Debug)]
struct RawEvent {
    begin_line: usize,
    properties: Properties,
}

impl RawEvent {
    fn property(&self, name: &str) -> Option<&Property> {
        self.properties.0.get(name)
    }
}

/// The calendar-level properties and all events of the file.
#[derive(Debug, Default)]
struct RawCalendar {
    properties: Properties,
    events: Vec<RawEvent>,
}

impl RawCalendar {
    fn property(&self, name: &str) -> Option<&Property> {
        self.properties.0.get(name)
    }
}

fn ics_error(line: usize, message: impl Into<String>) -> ImportError {
    ImportError::Ics {
        line,
        message: message.into(),
    }
}

/// Splits the bytes into unfolded logical lines, each with the number of
/// its first physical line. Line breaks are LF or CRLF.
fn logical_lines(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut lines: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, physical) in bytes.split(|&b| b == b'\n').enumerate() {
        let physical = physical.strip_suffix(b"\r").unwrap_or(physical);
        match (physical.first(), lines.last_mut()) {
            (Some(b' ' | b'\t'), Some((_, previous))) => {
                previous.extend_from_slice(&physical[1..]);
            }
            _ => lines.push((i + 1, physical.to_vec())),
        }
    }
    lines
}

/// Splits a content line into its upper-cased name and a [`Property`];
/// `None` when it is not of the form `NAME[;PARAM=VALUE...]:VALUE`.
fn parse_content_line(line: usize, text: &str) -> Option<(String, Property)> {
    let name_end = text.find([';', ':'])?;
    let name = text[..name_end].trim().to_ascii_uppercase();
    if name.is_empty() {
        return None;
    }
    let mut rest = &text[name_end..];
    let mut params = Vec::new();
    loop {
        if let Some(value) = rest.strip_prefix(':') {
            return Some((
                name,
                Property {
                    line,
                    params,
                    value: value.to_owned(),
                },
            ));
        }
        // `rest` starts with ';' (or with junk after a quoted value: skip it).
        rest = &rest[rest.find([';', ':'])?..];
        let Some(after) = rest.strip_prefix(';') else {
            continue;
        };
        rest = after;
        let end = rest.find(['=', ';', ':'])?;
        let param = rest[..end].trim().to_ascii_uppercase();
        rest = &rest[end..];
        let Some(after) = rest.strip_prefix('=') else {
            params.push((param, String::new()));
            continue;
        };
        rest = after;
        // One or more values, separated by commas, each possibly quoted.
        let mut value = String::new();
        loop {
            if let Some(quoted) = rest.strip_prefix('"') {
                let close = quoted.find('"')?;
                value.push_str(&quoted[..close]);
                rest = &quoted[close + 1..];
            } else {
                let end = rest.find([',', ';', ':'])?;
                value.push_str(&rest[..end]);
                rest = &rest[end..];
            }
            match rest.strip_prefix(',') {
                Some(after) => {
                    value.push(',');
                    rest = after;
                }
                None => break,
            }
        }
        params.push((param, value));
    }
}

/// A line shortened for error messages.
fn shorten(text: &str) -> String {
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut:?}...")
    } else {
        format!("{text:?}")
    }
}

/// Reads the component structure: calendar properties and raw events.
fn read_structure(bytes: &[u8]) -> Result<RawCalendar, ImportError> {
    let mut calendar = RawCalendar::default();
    // Open components: upper-cased name and BEGIN line.
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut open_event: Option<RawEvent> = None;
    let mut calendars_seen = 0_usize;
    let mut last_line = 1;

    for (line, raw) in logical_lines(bytes) {
        last_line = line;
        let text = std::str::from_utf8(&raw)
            .map_err(|e| ics_error(line, format!("not UTF-8 (byte {})", e.valid_up_to())))?;
        if text.trim().is_empty() {
            continue;
        }
        let parsed = parse_content_line(line, text);
        if stack.is_empty() {
            let is_begin_calendar = parsed.as_ref().is_some_and(|(name, p)| {
                name == "BEGIN" && p.value.trim().eq_ignore_ascii_case("VCALENDAR")
            });
            if is_begin_calendar {
                stack.push(("VCALENDAR".to_owned(), line));
                calendars_seen += 1;
                continue;
            }
            if calendars_seen > 0 {
                // Trailing content after the last END:VCALENDAR.
                continue;
            }
            return Err(ics_error(
                line,
                format!("expected BEGIN:VCALENDAR, found {}", shorten(text)),
            ));
        }
        let Some((name, property)) = parsed else {
            continue; // not NAME:value; tolerated inside a component
        };
        match name.as_str() {
            "BEGIN" => {
                let component = property.value.trim().to_ascii_uppercase();
                if let Some(event) = &open_event {
                    if component == "VEVENT" || component == "VCALENDAR" {
                        return Err(unterminated_event(
                            event.begin_line,
                            &format!("BEGIN:{component} at line {line}"),
                        ));
                    }
                }
                if component == "VCALENDAR" {
                    return Err(ics_error(
                        line,
                        format!(
                            "BEGIN:VCALENDAR inside the VCALENDAR begun at line {}",
                            stack[0].1
                        ),
                    ));
                }
                if component == "VEVENT" {
                    open_event = Some(RawEvent {
                        begin_line: line,
                        properties: Properties::default(),
                    });
                }
                stack.push((component, line));
            }
            "END" => {
                let component = property.value.trim().to_ascii_uppercase();
                let Some(depth) = stack.iter().rposition(|(n, _)| *n == component) else {
                    return Err(ics_error(
                        line,
                        format!("END:{component} without BEGIN:{component}"),
                    ));
                };
                // Components left open inside the one being closed are
                // forgiven (a VALARM missing its END), unless one is a VEVENT.
                if let Some((_, begin)) = stack[depth + 1..].iter().find(|(n, _)| n == "VEVENT") {
                    return Err(unterminated_event(
                        *begin,
                        &format!("END:{component} at line {line}"),
                    ));
                }
                stack.truncate(depth);
                if component == "VEVENT" {
                    if let Some(event) = open_event.take() {
                        calendar.events.push(event);
                    }
                }
            }
            _ => match (stack.last().map(|(n, _)| n.as_str()), &mut open_event) {
                (Some("VEVENT"), Some(event)) => event.properties.insert(name, property),
                (Some("VCALENDAR"), _) => calendar.properties.insert(name, property),
                _ => {} // a property of VTIMEZONE, VALARM, ...
            },
        }
    }
    if let Some(event) = open_event {
        return Err(unterminated_event(
            event.begin_line,
            &format!("the end of the file (line {last_line})"),
        ));
    }
    if let Some((_, begin)) = stack.first() {
        return Err(ics_error(
            *begin,
            format!(
                "BEGIN:VCALENDAR has no END:VCALENDAR before the end of the file \
                 (line {last_line}); is the file truncated?"
            ),
        ));
    }
    if calendars_seen == 0 {
        return Err(ics_error(
            last_line,
            "expected BEGIN:VCALENDAR, found an empty file",
        ));
    }
    Ok(calendar)
}

fn unterminated_event(begin_line: usize, found: &str) -> ImportError {
    ics_error(
        begin_line,
        format!("BEGIN:VEVENT without END:VEVENT (reached {found} first)"),
    )
}

/// The canonical name of an IANA zone known to the bundled tz database.
fn known_zone(name: &str) -> Option<String> {
    zone::known_zone(normalize_tzid(name))
}

/// A `TZID` without surrounding blanks and without the `/` that marks a
/// globally unique zone id (RFC 5545 §3.2.19).
fn normalize_tzid(tzid: &str) -> &str {
    let tzid = tzid.trim();
    tzid.strip_prefix('/').unwrap_or(tzid)
}

/// Undoes TEXT escaping: `\,` `\;` `\\` `\n` `\N`; any other `\x` gives `x`.
fn unescape_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The first value of a comma-separated TEXT list, unescaped and trimmed.
fn first_list_value(value: &str) -> String {
    list_values(value).into_iter().next().unwrap_or_default()
}

/// The values of a comma-separated TEXT list, unescaped and trimmed, empty
/// ones dropped (an escaped `\,` stays inside its value).
fn list_values(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = 0;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                out.push(unescape_text(&value[from..i]).trim().to_owned());
                from = i + 1;
            }
            _ => {}
        }
    }
    out.push(unescape_text(&value[from..]).trim().to_owned());
    out.retain(|v| !v.is_empty());
    out
}

/// A DATE or DATE-TIME property as a zoned instant; `true` when it is a
/// DATE (an all-day value, taken as midnight in its zone).
fn read_time(
    property: &Property,
    name: &str,
    event_zone: &EventZone,
) -> Result<(Zoned, bool), ImportError> {
    let value = property.value.trim();
    let bad = || {
        ics_error(
            property.line,
            format!(
                "{name}: expected a date-time such as 20150918T090000Z or a date \
                 such as 20150918, got {}",
                shorten(value)
            ),
        )
    };
    let utc = value.ends_with(['Z', 'z']);
    let zone = match property.param("TZID") {
        Some(tzid) if !utc => Some(TimeZone::get(normalize_tzid(tzid)).map_err(|_| {
            ics_error(
                property.line,
                format!(
                    "{name}: unknown time zone TZID={} (only IANA names such as \
                     Europe/London are understood; VTIMEZONE definitions are not read)",
                    shorten(tzid)
                ),
            )
        })?),
        _ if utc => Some(TimeZone::UTC),
        // Floating: in the event's zone.
        _ => None,
    };
    let is_date = property
        .param("VALUE")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("DATE"))
        || (value.len() == 8 && value.bytes().all(|b| b.is_ascii_digit()));
    let digits = |range: std::ops::Range<usize>| -> Option<i16> {
        let part = value.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let date = (|| {
        let month = i8::try_from(digits(4..6)?).ok()?;
        let day = i8::try_from(digits(6..8)?).ok()?;
        Date::new(digits(0..4)?, month, day).ok()
    })()
    .ok_or_else(bad)?;
    let civil = if is_date {
        if value.len() != 8 {
            return Err(bad());
        }
        date.to_datetime(jiff::civil::Time::midnight())
    } else {
        let time = value
            .get(8..)
            .and_then(|t| t.strip_prefix(['T', 't']))
            .map(|t| t.trim_end_matches(['Z', 'z']))
            .filter(|t| t.len() == 6)
            .ok_or_else(bad)?;
        let part = |i: usize| {
            time.get(i..i + 2)
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<i8>().ok())
        };
        let (Some(hour), Some(minute), Some(second)) = (part(0), part(2), part(4)) else {
            return Err(bad());
        };
        // A leap second (60) is read as 59.
        DateTime::new(
            date.year(),
            date.month(),
            date.day(),
            hour,
            minute,
            second.min(59),
            0,
        )
        .map_err(|_| bad())?
    };
    let zoned = match zone {
        Some(zone) => civil.to_zoned(zone).map_err(|_| bad())?,
        None => {
            let at = event_zone
                .local(civil)
                .map_err(|no_zone| no_zone.at(format!("iCalendar line {}: {name}", property.line)))?
                .ok_or_else(bad)?;
            at.to_zoned(event_zone.tz().clone())
        }
    };
    Ok((zoned, is_date))
}

/// An RFC 5545 DURATION (`PT1H30M`, `P1D`, `P2W`, `+PT15M`) added to `start`;
/// days and weeks are calendar days in the start's zone.
fn add_duration(start: &Zoned, property: &Property) -> Result<Zoned, ImportError> {
    let value = property.value.trim();
    let bad = |why: &str| {
        ics_error(
            property.line,
            format!("DURATION: {why}, got {}", shorten(value)),
        )
    };
    let unsigned = value.strip_prefix('+').unwrap_or(value);
    if !unsigned.starts_with(['P', 'p', '-']) {
        return Err(bad("expected an ISO 8601 duration such as PT1H30M"));
    }
    let span: Span = unsigned
        .parse()
        .map_err(|_| bad("expected an ISO 8601 duration such as PT1H30M"))?;
    if span.is_negative() {
        return Err(bad("expected a duration that is not negative"));
    }
    start
        .checked_add(span)
        .map_err(|_| bad("the end is out of range"))
}

fn read_event(event: &RawEvent, zone: &EventZone) -> Result<ImportedSession, ImportError> {
    let text = |name: &str| {
        event
            .property(name)
            .map(|p| unescape_text(&p.value))
            .unwrap_or_default()
    };
    let Some(dtstart) = event.property("DTSTART") else {
        return Err(ics_error(
            event.begin_line,
            "VEVENT has no DTSTART (required for a session)",
        ));
    };
    let (start, start_is_date) = read_time(dtstart, "DTSTART", zone)?;
    let end = if let Some(dtend) = event.property("DTEND") {
        let (end, _) = read_time(dtend, "DTEND", zone)?;
        if end.timestamp() < start.timestamp() {
            return Err(ics_error(
                dtend.line,
                format!(
                    "DTEND {} is before DTSTART {}",
                    shorten(dtend.value.trim()),
                    shorten(dtstart.value.trim())
                ),
            ));
        }
        end
    } else if let Some(duration) = event.property("DURATION") {
        add_duration(&start, duration)?
    } else if start_is_date {
        // RFC 5545 §3.6.1: an all-day event without DTEND lasts one day.
        start
            .checked_add(Span::new().days(1))
            .map_err(|_| ics_error(dtstart.line, "DTSTART: date out of range"))?
    } else {
        start.clone()
    };
    let uid = text("UID");
    Ok(ImportedSession {
        guid: (!uid.trim().is_empty()).then_some(uid),
        id: None,
        title: text("SUMMARY"),
        room: text("LOCATION"),
        start_unix: start.timestamp().as_second(),
        end_unix: end.timestamp().as_second(),
        track: event
            .property("CATEGORIES")
            .map(|p| first_list_value(&p.value))
            .unwrap_or_default(),
        speakers: event
            .property(SPEAKERS_PROPERTY)
            .map(|p| list_values(&p.value))
            .unwrap_or_default(),
        abstract_text: text("DESCRIPTION"),
        url: page_url(event.property("URL").map(|p| p.value.as_str()), None),
        links: event
            .property(LINKS_PROPERTY)
            .map(|p| read_links(&p.value))
            .unwrap_or_default(),
        language: text(LANGUAGE_PROPERTY).trim().to_owned(),
        kind: text(TYPE_PROPERTY).trim().to_owned(),
    })
}

/// Links written by Lanyard's export: a comma-separated TEXT list whose
/// values are `URL` or `URL TITLE` (the first space separates them; a URL
/// has no spaces).
fn read_links(value: &str) -> Vec<Link> {
    list_values(value)
        .iter()
        .filter_map(|entry| match entry.split_once(' ') {
            Some((url, title)) => file_link(url, title, None),
            None => file_link(entry, "", None),
        })
        .collect()
}

/// The non-standard property Lanyard's own export writes a session's links
/// to: a comma-separated TEXT list of `URL` or `URL TITLE`; other calendar
/// programs ignore it.
pub const LINKS_PROPERTY: &str = "X-LANYARD-LINKS";
/// The non-standard property for a session's language.
pub const LANGUAGE_PROPERTY: &str = "X-LANYARD-LANGUAGE";
/// The non-standard property for a session's type.
pub const TYPE_PROPERTY: &str = "X-LANYARD-TYPE";

/// The non-standard property Lanyard's own export writes speakers to (a
/// comma-separated TEXT list); other calendar programs ignore it.
pub const SPEAKERS_PROPERTY: &str = "X-LANYARD-SPEAKERS";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;

    use super::*;
    use crate::import::test_util::{by_guid, ts};

    const PYCONUK: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/schedules/pyconuk2015-schedule.ics"
    ));

    /// A one-calendar file of the given lines, joined with CRLF.
    fn ics(lines: &[&str]) -> Vec<u8> {
        let mut text = lines.join("\r\n");
        text.push_str("\r\n");
        text.into_bytes()
    }

    fn ics_err(bytes: &[u8]) -> (usize, String) {
        match parse_ics(bytes).unwrap_err() {
            err @ ImportError::Ics { line, .. } => (line, err.to_string()),
            other => panic!("expected an Ics error, got {other:?}"),
        }
    }

    #[test]
    fn import_pyconuk2015() {
        let s = parse_ics(PYCONUK).unwrap();
        assert_eq!(s.name, "PyCon UK 2015 Schedule");
        assert_eq!(s.time_zone, "UTC"); // no X-WR-TIMEZONE, no TZID: all times are ...Z
        assert_eq!(s.sessions.len(), 162);
        assert_eq!(
            s.days(),
            ["2015-09-18", "2015-09-19", "2015-09-20", "2015-09-21"]
        );
        // 11 distinct LOCATIONs (sponsor names change between days).
        assert_eq!(
            s.rooms(),
            [
                "Bank of America Education Track (Simulation Centre)",
                "Bistro",
                "Cafeteria",
                "LaterPay Learning Space (Bistro)",
                "LaterPay Room (CC2.1)",
                "Osper Room (CC1.4)",
                "PythonAnywhere Room (CC1.3)",
                "Sprint Rooms",
                "The Software Sustainability Institute Room (CC2.1)",
                "Training and Hackathon (Simulation Centre)",
                "YPlan Room (CC1.8)",
            ]
        );
        let count_in = |room: &str| s.sessions.iter().filter(|x| x.room == room).count();
        assert_eq!(count_in("PythonAnywhere Room (CC1.3)"), 49);
        assert_eq!(count_in("Cafeteria"), 3);

        // Every UID is folded after "...-linux"; unfolded it ends in "-7".
        let guids: BTreeSet<&str> = s
            .sessions
            .iter()
            .map(|x| x.guid.as_deref().unwrap())
            .collect();
        assert_eq!(guids.len(), 162);
        assert!(guids.iter().all(|g| g.ends_with("-linux-7")));
        let first = by_guid(
            &s,
            "20150919T102825Z-31048@testing-worker-linux-docker-88763661-3190-linux-7",
        );
        assert_eq!(first.title, "Registration / Breakfast");
        assert_eq!(first.room, "Cafeteria");
        assert_eq!(first.start_unix, ts("2015-09-18T07:00:00Z"));
        assert_eq!(first.end_unix, ts("2015-09-18T08:30:00Z"));
        assert_eq!(first.id, None);
        assert_eq!(first.track, "");
        assert!(first.speakers.is_empty());
        assert_eq!(first.abstract_text, "");

        let keynote = by_guid(
            &s,
            "20150919T102825Z-77619@testing-worker-linux-docker-88763661-3190-linux-7",
        );
        assert_eq!(keynote.title, "Keynote: Van Lindberg, PSF Chair");
        assert_eq!(keynote.room, "PythonAnywhere Room (CC1.3)");
        assert_eq!(keynote.start_unix, ts("2015-09-18T09:30:00Z"));
        assert_eq!(keynote.end_unix, ts("2015-09-18T10:30:00Z"));

        let django = by_guid(
            &s,
            "20150919T102825Z-98863@testing-worker-linux-docker-88763661-3190-linux-7",
        );
        assert_eq!(django.title, "DjangoGirls");
        assert_eq!(django.abstract_text, "http://www.pyconuk.org/djangogirls/");

        // Escapes: 13 titles have `\,`, one has `\;`; none keeps a backslash.
        assert_eq!(
            s.sessions.iter().filter(|x| x.title.contains(',')).count(),
            13
        );
        assert_eq!(
            s.sessions.iter().filter(|x| x.title.contains(';')).count(),
            1
        );
        assert!(s.sessions.iter().all(|x| !x.title.contains('\\')));

        // 5 events have no DTEND: they end when they start (no other
        // event has DTEND == DTSTART).
        let open_ended: BTreeSet<&str> = s
            .sessions
            .iter()
            .filter(|x| x.end_unix == x.start_unix)
            .map(|x| x.title.as_str())
            .collect();
        assert_eq!(
            open_ended,
            BTreeSet::from([
                "The Friday Night Charity Social in memory of John Pinner",
                "The PyCon UK Dinner (Ticket required)",
                "Alt Party (TBA)",
                "The Mellow Night",
                "End of Conference, pack up, see you in 2016!",
            ])
        );
        let end = s
            .sessions
            .iter()
            .find(|x| x.title.starts_with("End of Conference"))
            .unwrap();
        assert_eq!(end.start_unix, ts("2015-09-21T16:00:00Z"));
        assert_eq!(end.room, "Sprint Rooms");

        // 4 events have an empty SUMMARY, all on 19 Sept.
        let untitled: Vec<i64> = s
            .sessions
            .iter()
            .filter(|x| x.title.is_empty())
            .map(|x| x.start_unix)
            .collect();
        assert_eq!(
            untitled,
            [
                ts("2015-09-19T11:30:00Z"),
                ts("2015-09-19T12:00:00Z"),
                ts("2015-09-19T14:00:00Z"),
                ts("2015-09-19T16:30:00Z"),
            ]
        );
        // 90 events have a DESCRIPTION.
        assert_eq!(
            s.sessions
                .iter()
                .filter(|x| !x.abstract_text.is_empty())
                .count(),
            90
        );
        assert!(s
            .sessions
            .windows(2)
            .all(|w| w[0].start_unix <= w[1].start_unix));
        assert_eq!(s.sessions[0].start_unix, ts("2015-09-18T07:00:00Z"));
        assert_eq!(
            s.sessions.last().unwrap().start_unix,
            ts("2015-09-21T16:00:00Z")
        );
    }

    #[test]
    fn pyconuk_with_lf_line_endings_reads_the_same() {
        let lf: Vec<u8> = PYCONUK.iter().copied().filter(|&b| b != b'\r').collect();
        assert_eq!(parse_ics(&lf).unwrap(), parse_ics(PYCONUK).unwrap());
    }

    #[test]
    fn tzid_across_a_dst_change() {
        // America/New_York springs forward at 02:00 on 2026-03-08.
        let bytes = ics(&[
            "BEGIN:VCALENDAR",
            "BEGIN:VEVENT",
            "UID:dst",
            "DTSTART;TZID=America/New_York:20260308T013000",
            "DTEND;TZID=\"America/New_York\":20260308T033000",
            "SUMMARY:Across the gap",
            "END:VEVENT",
            "BEGIN:VEVENT",
            "UID:in-gap",
            "DTSTART;TZID=America/New_York:20260308T023000",
            "END:VEVENT",
            "END:VCALENDAR",
        ]);
        let s = parse_ics(&bytes).unwrap();
        assert_eq!(s.time_zone, "America/New_York");
        let dst = by_guid(&s, "dst");
        assert_eq!(dst.start_unix, ts("2026-03-08T06:30:00Z")); // 01:30 EST
        assert_eq!(dst.end_unix, ts("2026-03-08T07:30:00Z")); // 03:30 EDT
        assert_eq!(dst.end_unix - dst.start_unix, 3600); // one hour, not two
                                                         // 02:30 does not exist: RFC 5545 reads it with the offset before the gap.
        let gap = by_guid(&s, "in-gap");
        assert_eq!(gap.start_unix, ts("2026-03-08T07:30:00Z"));
        assert_eq!(s.days(), ["2026-03-08"]);
    }

    #[test]
    fn floating_times_use_the_calendar_zone() {
        let bytes = ics(&[
            "BEGIN:VCALENDAR",
            "BEGIN:VEVENT",
            "DTSTART:20150918T233000",
            "DTEND:20150919T003000Z",
            "END:VEVENT",
            "X-WR-TIMEZONE:Europe/London",
            "END:VCALENDAR",
        ]);
        let s = parse_ics(&bytes).unwrap();
        assert_eq!(s.time_zone, "Europe/London");
        assert_eq!(s.sessions[0].start_unix, ts("2015-09-18T22:30:00Z")); // BST
        assert_eq!(s.sessions[0].end_unix, ts("2015-09-19T00:30:00Z"));
        assert_eq!(s.sessions[0].guid, None);
        assert_eq!(s.days(), ["2015-09-18"]);
        // An unknown X-WR-TIMEZONE is ignored; then the first TZID decides.
        let bytes = ics(&[
            "BEGIN:VCALENDAR",
            "X-WR-TIMEZONE:Mars/Olympus_Mons",
            "BEGIN:VEVENT",
            "DTSTART:20150918T090000Z",
            "END:VEVENT",
            "BEGIN:VEVENT",
            "DTSTART;TZID=/Europe/Berlin:20150918T090000",
            "END:VEVENT",
            "END:VCALENDAR",
        ]);
        let s = parse_ics(&bytes).unwrap();
        assert_eq!(s.time_zone, "Europe/Berlin");
        assert_eq!(s.sessions[0].start_unix, ts("2015-09-18T07:00:00Z"));
    }

    #[test]
    fn durations_and_all_day_events() {
        let bytes = ics(&[
            "BEGIN:VCALENDAR",
            "BEGIN:VEVENT",
            "UID:short",
            "DTSTART:20150918T090000Z",
            "DURATION:PT1H30M",
            "END:VEVENT",
            "BEGIN:VEVENT",
            "UID:week",
            "DTSTART:20150918T090000Z",
            "DURATION:+P1W2DT15M",
            "END:VEVENT",
            "BEGIN:VEVENT",
            "UID:day-over-dst",
            "DTSTART;TZID=Europe/London:20151024T120000",
            "DURATION:P1D",
            "END:VEVENT",
            "BEGIN:VEVENT",
            "UID:all-day",
            "DTSTART;VALUE=DATE:20150921",
            "END:VEVENT",
            "END:VCALENDAR",
        ]);
        let s = parse_ics(&bytes).unwrap();
        assert_eq!(s.time_zone, "Europe/London");
        let short = by_guid(&s, "short");
        assert_eq!(short.end_unix - short.start_unix, 90 * 60);
        let week = by_guid(&s, "week");
        assert_eq!(week.end_unix - week.start_unix, 9 * 86_400 + 15 * 60);
        // A nominal day: 25 hours when the clocks go back (2015-10-25).
        let day = by_guid(&s, "day-over-dst");
        assert_eq!(day.end_unix - day.start_unix, 25 * 3600);
        // A DATE start without DTEND lasts one day, from local midnight.
        let all_day = by_guid(&s, "all-day");
        assert_eq!(all_day.start_unix, ts("2015-09-20T23:00:00Z"));
        assert_eq!(all_day.end_unix, ts("2015-09-21T23:00:00Z"));

        let negative = ics(&[
            "BEGIN:VCALENDAR",
            "BEGIN:VEVENT",
            "DTSTART:20150918T090000Z",
            "DURATION:-PT1H",
            "END:VEVENT",
            "END:VCALENDAR",
        ]);
        let (line, message) = ics_err(&negative);
        assert_eq!(line, 4);
        assert!(message.contains("not negative"), "{message}");
    }

    #[test]
    fn escapes_folds_and_categories() {
        let bytes = ics(&[
            "BEGIN:VCALENDAR",
            "X-WR-CALNAME:Py\\, Con",
            "BEGIN:VEVENT",
            "UID:a-very-long-uid-that-",
            " is-folded@example.org",
            "DTSTART:20150918T090000Z",
            "SUMMARY:Commas\\, semicolons\\; backslash \\\\ and\\nnew\\Nlines",
            "DESCRIPTION:Folded across",
            "\t a tab and",
            "  a space",
            "LOCATION:Room\\, 1",
            "CATEGORIES:Science\\, Data,Web",
            "CATEGORIES:Ignored",
            "X-UNKNOWN;FOO=\"a;b:c\":whatever",
            "not a content line",
            "BEGIN:VALARM",
            "DESCRIPTION:not the event's",
            "END:VALARM",
            "END:VEVENT",
            "END:VCALENDAR",
        ]);
        let s = parse_ics(&bytes).unwrap();
        assert_eq!(s.name, "Py, Con");
        let e = &s.sessions[0];
        assert_eq!(
            e.guid.as_deref(),
            Some("a-very-long-uid-that-is-folded@example.org")
        );
        assert_eq!(e.title, "Commas, semicolons; backslash \\ and\nnew\nlines");
        assert_eq!(e.abstract_text, "Folded across a tab and a space");
        assert_eq!(e.room, "Room, 1");
        assert_eq!(e.track, "Science, Data");
        assert_eq!(e.end_unix, e.start_unix);
    }

    #[test]
    fn fold_inside_a_multibyte_character() {
        let mut bytes =
            b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:20150918T090000Z\r\nSUMMARY:Jos\xC3"
                .to_vec();
        bytes.extend_from_slice(b"\r\n \xA9 Mar\xC3\xADa\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n");
        let s = parse_ics(&bytes).unwrap();
        assert_eq!(s.sessions[0].title, "José María");
    }

    #[test]
    fn missing_begin_vcalendar_names_the_line() {
        let (line, message) = ics_err(b"\r\nBEGIN:VEVENT\r\nEND:VEVENT\r\n");
        assert_eq!(line, 2);
        assert_eq!(
            message,
            "iCalendar line 2: expected BEGIN:VCALENDAR, found \"BEGIN:VEVENT\""
        );
        let (line, message) = ics_err(b"");
        assert_eq!(line, 1);
        assert!(message.contains("empty file"), "{message}");
        let (line, _) = ics_err(b"{\"schedule\": {}}");
        assert_eq!(line, 1);
    }

    #[test]
    fn unterminated_vevent_names_its_begin_line() {
        // The next event starts before the first one ends.
        let bytes = ics(&[
            "BEGIN:VCALENDAR",
            "BEGIN:VEVENT",
            "DTSTART:20150918T090000Z",
            "END:VEVENT",
            "BEGIN:VEVENT",
            "DTSTART:20150918T100000Z",
            "BEGIN:VEVENT",
            "DTSTART:20150918T110000Z",
            "END:VEVENT",
            "END:VCALENDAR",
        ]);
        let (line, message) = ics_err(&bytes);
        assert_eq!(line, 5);
        assert!(message.contains("at line 7"), "{message}");
        // END:VCALENDAR while the event is open.
        let bytes = ics(&[
            "BEGIN:VCALENDAR",
            "BEGIN:VEVENT",
            "DTSTART:20150918T090000Z",
            "END:VCALENDAR",
        ]);
        assert_eq!(ics_err(&bytes).0, 2);
        // A truncated pyconuk file: cut in the middle of its last event.
        let text = std::str::from_utf8(PYCONUK).unwrap();
        let last_begin = text.rfind("BEGIN:VEVENT").unwrap();
        let begin_line = text[..last_begin].matches('\n').count() + 1;
        let cut = &PYCONUK[..last_begin + 40];
        let (line, message) = ics_err(cut);
        assert_eq!(line, begin_line);
        assert_eq!(begin_line, 1582); // grep -n BEGIN:VEVENT | tail -1
        assert!(
            message.starts_with("iCalendar line 1582: BEGIN:VEVENT without END:VEVENT"),
            "{message}"
        );
        // Truncated between events: the calendar is unterminated.
        let cut = &PYCONUK[..last_begin];
        let (line, message) = ics_err(cut);
        assert_eq!(line, 1);
        assert!(message.contains("truncated"), "{message}");
    }

    #[test]
    fn bad_dtstart_names_its_line() {
        let bytes = ics(&[
            "BEGIN:VCALENDAR",
            "BEGIN:VEVENT",
            "UID:x",
            "DTSTART:2015-09-18 nine o'clock",
            "END:VEVENT",
            "END:VCALENDAR",
        ]);
        let (line, message) = ics_err(&bytes);
        assert_eq!(line, 4);
        assert!(
            message.starts_with("iCalendar line 4: DTSTART: expected a date-time"),
            "{message}"
        );
        for bad in ["20150931T090000Z", "20150918T250000", "20150918T0900"] {
            let text = format!(
                "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:{bad}\nEND:VEVENT\nEND:VCALENDAR\n"
            );
            assert_eq!(ics_err(text.as_bytes()).0, 3, "{bad}");
        }
        // Missing DTSTART: the event's BEGIN line.
        let bytes = ics(&[
            "BEGIN:VCALENDAR",
            "BEGIN:VEVENT",
            "SUMMARY:No start",
            "END:VEVENT",
            "END:VCALENDAR",
        ]);
        assert_eq!(
            ics_err(&bytes),
            (
                2,
                "iCalendar line 2: VEVENT has no DTSTART (required for a session)".to_owned()
            )
        );
        // An unknown TZID.
        let bytes = ics(&[
            "BEGIN:VCALENDAR",
            "BEGIN:VEVENT",
            "DTSTART;TZID=W. Europe Standard Time:20150918T090000",
            "END:VEVENT",
            "END:VCALENDAR",
        ]);
        let (line, message) = ics_err(&bytes);
        assert_eq!(line, 3);
        assert!(
            message.contains("unknown time zone TZID=\"W. Europe Standard Time\""),
            "{message}"
        );
        // DTEND before DTSTART.
        let bytes = ics(&[
            "BEGIN:VCALENDAR",
            "BEGIN:VEVENT",
            "DTSTART:20150918T090000Z",
            "DTEND:20150918T080000Z",
            "END:VEVENT",
            "END:VCALENDAR",
        ]);
        assert_eq!(ics_err(&bytes).0, 4);
    }

    #[test]
    fn not_utf8_names_the_line() {
        let (line, message) =
            ics_err(b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY:caf\xE9\r\nEND:VEVENT\r\n");
        assert_eq!(line, 3);
        assert!(message.contains("not UTF-8"), "{message}");
    }

    #[test]
    fn content_lines() {
        let (name, p) =
            parse_content_line(9, "dtstart;tzid=\"Europe/London\";X-A=1,\"b,c\":20150918").unwrap();
        assert_eq!(name, "DTSTART");
        assert_eq!(p.line, 9);
        assert_eq!(p.param("TZID"), Some("Europe/London"));
        assert_eq!(p.param("X-A"), Some("1,b,c"));
        assert_eq!(p.value, "20150918");
        let (_, p) = parse_content_line(1, "URL:http://example.org/a:b").unwrap();
        assert_eq!(p.value, "http://example.org/a:b");
        assert!(parse_content_line(1, "no colon here").is_none());
        assert!(parse_content_line(1, ":no name").is_none());
        assert!(parse_content_line(1, "X;P=\"unterminated:value").is_none());
    }
}
