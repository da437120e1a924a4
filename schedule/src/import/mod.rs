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
//!
//! **Time zones.** Times with a UTC offset are taken as they are. Local
//! times without one (an older frab/pentabarf `<start>` without `<date>`,
//! an iCalendar floating `DTSTART`, a JSON date without offset) are read in
//! the event's zone: the file's own zone name when it has a known one, else
//! the fallback given to [`parse_schedule`] (for an import into an agenda,
//! [`read_schedule`] gives the organizer's zone, else the agenda's).
//! A file with floating times and no zone anywhere is refused with
//! [`ImportError::NoTimeZone`], never read as UTC. The schedule records
//! where its zone came from ([`ImportedSchedule::zone_source`]) and whether
//! it had floating times ([`ImportedSchedule::floating_times`]).

pub mod ics;
pub mod schedule_json;
pub mod schedule_xml;
mod zone;

pub use ics::parse_ics;
pub use schedule_json::{parse_schedule_json, ImportError, ImportedSchedule, ImportedSession};
pub use schedule_xml::parse_schedule_xml;
pub use zone::ZoneSource;

use lanyard_client_core::model::web_url;
use lanyard_client_core::{Client, ClientError, Link};

/// The schedule file formats the readers understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleFormat {
    /// c3voc `schedule.json` (frab, pretalx) or schedule2: [`schedule_json`].
    Json,
    /// frab/pentabarf `schedule.xml`: [`schedule_xml`].
    Xml,
    /// iCalendar: [`ics`].
    Ics,
}

/// Reads a schedule file of `format`. Floating local times are read in the
/// file's own zone, else in `fallback_zone` (an IANA name; an unknown one is
/// [`ImportError::UnknownTimeZone`]); with neither, a floating time is
/// [`ImportError::NoTimeZone`].
///
/// ```
/// use lanyard_schedule::import::{parse_schedule, ImportError, ScheduleFormat, ZoneSource};
/// let xml = br#"<schedule><day date="2025-02-01"><room name="K.1.105">
///     <event id="1"><start>09:30</start><duration>00:50</duration><title>Keynote</title></event>
///   </room></day></schedule>"#;
/// // No zone in the file, none given: refused, never read as UTC.
/// let err = parse_schedule(ScheduleFormat::Xml, xml, None).unwrap_err();
/// assert!(matches!(err, ImportError::NoTimeZone { .. }));
/// let s = parse_schedule(ScheduleFormat::Xml, xml, Some("Europe/Brussels"))?;
/// assert_eq!(s.sessions[0].start_unix, 1_738_398_600); // 08:30 UTC
/// assert_eq!((s.time_zone.as_str(), s.zone_source), ("Europe/Brussels", ZoneSource::Fallback));
/// assert!(s.floating_times);
/// # Ok::<(), ImportError>(())
/// ```
pub fn parse_schedule(
    format: ScheduleFormat,
    bytes: &[u8],
    fallback_zone: Option<&str>,
) -> Result<ImportedSchedule, ImportError> {
    match format {
        ScheduleFormat::Json => schedule_json::read(bytes, fallback_zone),
        ScheduleFormat::Xml => schedule_xml::read(bytes, fallback_zone),
        ScheduleFormat::Ics => ics::read(bytes, fallback_zone),
    }
}

/// The base a file's relative URLs are resolved against (schedule.json
/// `base_url`, schedule.xml `<base_url>`), when it is a web URL.
pub(crate) fn base_url(text: Option<&str>) -> Option<url::Url> {
    let base = url::Url::parse(text?.trim()).ok()?;
    matches!(base.scheme(), "http" | "https").then_some(base)
}

/// A URL from a file as an absolute web URL in the stored form
/// ([`web_url`]); a relative one (frab writes attachments as `/system/...`)
/// is resolved against the file's base. `None` when there is nothing an
/// attendee could open.
fn absolute_web_url(url: &str, base: Option<&url::Url>) -> Option<String> {
    let url = url.trim();
    if let Some(web) = web_url(url) {
        return Some(web);
    }
    let relative = matches!(
        url::Url::parse(url),
        Err(url::ParseError::RelativeUrlWithoutBase)
    );
    if url.is_empty() || !relative {
        return None;
    }
    web_url(base?.join(url).ok()?.as_str())
}

/// A session's page (see [`absolute_web_url`]), else `""` (Lanyard's own
/// exports write `urn:uuid:…` for a session without a page, as
/// schedule.json requires a URI: that reads back as no page).
pub(crate) fn page_url(url: Option<&str>, base: Option<&url::Url>) -> String {
    url.and_then(|u| absolute_web_url(u, base))
        .unwrap_or_default()
}

/// A link from a file (see [`absolute_web_url`]); `None` when its URL is
/// not one an attendee could open.
pub(crate) fn file_link(url: &str, title: &str, base: Option<&url::Url>) -> Option<Link> {
    Some(Link {
        url: absolute_web_url(url, base)?,
        title: title.trim().to_owned(),
    })
}

/// Reads a schedule file for [`import_schedule`](crate::import_schedule)
/// into `client`'s agenda: floating local times are read in the file's own
/// zone, else in `time_zone` (the organizer's choice), else in the agenda's
/// zone (set by [`Client::set_event`] or an earlier import). With none of
/// them, a file with floating times is refused with
/// [`ImportError::NoTimeZone`] and nothing changes.
pub fn read_schedule(
    client: &Client,
    format: ScheduleFormat,
    bytes: &[u8],
    time_zone: Option<&str>,
) -> Result<ImportedSchedule, ReadScheduleError> {
    let fallback = match time_zone {
        Some(tz) => Some(tz.to_owned()),
        None => client.agenda_time_zone()?,
    };
    Ok(parse_schedule(format, bytes, fallback.as_deref())?)
}

/// Why [`read_schedule`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadScheduleError {
    /// The device cannot tell the agenda's zone (e.g. not joined).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The file cannot be read.
    #[error(transparent)]
    Import(#[from] ImportError),
}

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
