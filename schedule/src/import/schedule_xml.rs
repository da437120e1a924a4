//! A lenient reader for frab / pentabarf `schedule.xml` files.
//!
//! The layout is the one of the c3voc XSD (`https://c3voc.de/schedule/schema.xsd`,
//! media type `application/vnd.c3voc.schedule+xml`):
//! `<schedule><conference>…</conference><day><room name="…"><event guid="…" id="…">`.
//! Older exports put the `<event>`s directly under `<day>`, without the
//! `<room name>` wrapper; those are read too. Events map to
//! [`ImportedSession`]s exactly like [`parse_schedule_json`](super::parse_schedule_json)
//! maps its events:
//!
//! | session field | `schedule.xml` |
//! |---|---|
//! | `guid` | the event's `guid` attribute (`None` when absent or blank) |
//! | `id` | the event's `id` attribute (`None` when absent or blank) |
//! | `title` | `<title>` (required; may be empty) |
//! | `room` | the `name` of the enclosing `<room>`, else the event's `<room>` child (required) |
//! | `start_unix` | `<date>` (RFC 3339 with an offset), else `<start>` (`HH:MM`) on the `date` of the enclosing `<day>`, in the conference's zone |
//! | `end_unix` | start + `<duration>` (`HH:MM`, `H:MM`, `HH:MM:SS` or ISO 8601 `PT1H30M`; required) |
//! | `track` | `<track>`, else `""` |
//! | `speakers` | the text of each `<persons>/<person>`, trimmed, blanks dropped |
//! | `abstract_text` | `<abstract>`, else `<description>` when the abstract is absent or blank, else `""` |
//! | `url` | `<url>` when it is a web URL (relative: resolved against the conference `<base_url>`), else `""` |
//! | `links` | each `<links>/<link href>` then `<attachments>/<attachment href>`, the element's text as the title; hrefs resolved like `url`, others dropped |
//! | `language`, `kind` | `<language>`, `<type>` (trimmed), else `""` |
//!
//! The schedule's name is the conference `<title>`, else its `<acronym>`,
//! else `""`; its time zone is `<time_zone_name>` when that is a zone known
//! to the bundled tz database, else `"UTC"`.
//!
//! A `<start>` is a wall-clock time: a time skipped by a DST change is moved
//! forward by the gap, a repeated time means its first occurrence. frab's
//! days run past midnight (e.g. 09:00 to 04:00), so a `<start>` that falls
//! before the `start` attribute of its `<day>` (but before the day's `end`
//! on the next date) is taken to be after midnight, on the next date.
//!
//! Lenient means: unknown elements and attributes (`<slug>`, `<recording>`,
//! a `code` attribute, …), namespaces, empty optional elements,
//! a missing `<conference>`, entities and CDATA sections anywhere in the text
//! are all accepted; the XSD's patterns (slug, acronym, uuid) are not
//! checked. Only what an agenda cannot do without is required: a title, a
//! room, a start and a duration. DTDs are refused (as by the XML parser,
//! `roxmltree`, by default); real exports have none.
//!
//! Errors are [`ImportError::Xml`] and name a 1-based line: where the XML is
//! malformed (for a truncated file: its last line), the root element when it
//! is not `<schedule>`, the `<event>` that lacks a required element, or the
//! element that cannot be read, e.g.
//! `XML line 24: event 123: <duration> expected HH:MM, got "1h"`.
//!
//! ```
//! use lanyard_schedule::import::parse_schedule_xml;
//! let xml = br#"<?xml version="1.0"?>
//! <schedule>
//!   <conference><title>Tiny</title><time_zone_name>Europe/Berlin</time_zone_name></conference>
//!   <day index="1" date="2019-08-21" start="2019-08-21T09:00:00+02:00" end="2019-08-22T04:00:00+02:00">
//!     <room name="Hall">
//!       <event guid="a0a0fcfe-b7fb-46e3-84b6-97a5406016b4" id="7">
//!         <date>2019-08-21T23:30:00+02:00</date>
//!         <duration>0:45</duration>
//!         <title>Welcome &amp; hello</title>
//!         <persons><person id="1">Ada</person></persons>
//!       </event>
//!     </room>
//!   </day>
//! </schedule>"#;
//! let schedule = parse_schedule_xml(xml)?;
//! assert_eq!(schedule.sessions[0].id.as_deref(), Some("7"));
//! assert_eq!(schedule.sessions[0].title, "Welcome & hello");
//! assert_eq!(schedule.sessions[0].end_unix - schedule.sessions[0].start_unix, 45 * 60);
//! assert_eq!(schedule.days(), ["2019-08-21"]); // in Europe/Berlin, not UTC
//! assert_eq!(schedule.rooms(), ["Hall"]);
//! # Ok::<(), lanyard_schedule::import::ImportError>(())
//! ```

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use lanyard_client_core::Link;
use roxmltree::{Document, Node};
use serde_json::Value;

use super::schedule_json::{
    parse_duration, parse_instant, ImportError, ImportedSchedule, ImportedSession,
};
use super::zone::{EventZone, NoZone};
use super::{base_url, file_link, page_url};

/// Parses a frab / pentabarf `schedule.xml` document.
///
/// See the [module docs](self) for the layouts, the mapping of elements to
/// session fields and what is tolerated. Sessions are sorted by start, then
/// room (then end), like [`parse_schedule_json`](super::parse_schedule_json).
/// A `<schedule>` without any `<day>` gives a schedule without sessions.
///
/// A `<start>` without a `<date>` is a local time: it is read in the
/// conference's `time_zone_name`; without one it is refused
/// ([`ImportError::NoTimeZone`]): give a fallback zone with
/// [`parse_schedule`](super::parse_schedule).
pub fn parse_schedule_xml(bytes: &[u8]) -> Result<ImportedSchedule, ImportError> {
    read(bytes, None)
}

/// [`parse_schedule_xml`] with a zone for floating times when the file
/// names none (see [`parse_schedule`](super::parse_schedule)).
pub(crate) fn read(bytes: &[u8], fallback: Option<&str>) -> Result<ImportedSchedule, ImportError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = line_at(bytes, e.valid_up_to());
        xml_error(line, format!("not UTF-8 (byte {})", e.valid_up_to()))
    })?;
    let doc = Document::parse(text).map_err(|e| syntax_error(&e, text))?;
    let root = doc.root_element();
    if root.tag_name().name() != "schedule" {
        return Err(xml_error(
            line_of(root),
            format!(
                "not a schedule: the root element is <{}>, expected <schedule>",
                root.tag_name().name()
            ),
        ));
    }

    let conference = child(root, "conference");
    let file_zone = conference
        .and_then(|c| child(c, "time_zone_name"))
        .map(text_of);
    let zone = EventZone::new(file_zone.as_deref(), fallback)?;
    let base = base_url(
        conference
            .and_then(|c| child(c, "base_url"))
            .map(text_of)
            .as_deref(),
    );
    let name = conference
        .into_iter()
        .flat_map(|c| [child(c, "title"), child(c, "acronym")])
        .flatten()
        .map(text_of)
        .find(|s| !s.trim().is_empty())
        .unwrap_or_default();

    let mut sessions = Vec::new();
    for day in children(root, "day") {
        let day = Day::new(day, &zone);
        for node in day.node.children().filter(Node::is_element) {
            match node.tag_name().name() {
                "room" => {
                    let wrapper = node.attribute("name").filter(|n| !n.trim().is_empty());
                    for event in children(node, "event") {
                        sessions.push(read_event(event, wrapper, &day, &zone, base.as_ref())?);
                    }
                }
                // The older layout: events directly under the day.
                "event" => sessions.push(read_event(node, None, &day, &zone, base.as_ref())?),
                _ => {}
            }
        }
    }
    Ok(ImportedSchedule::sorted(name, &zone, sessions))
}

/// A `<day>` and the attributes a `<start>` is read against.
struct Day<'a, 'input> {
    node: Node<'a, 'input>,
    /// The `start` attribute, when it is a readable instant.
    start: Option<Timestamp>,
    /// The `end` attribute, when it is a readable instant.
    end: Option<Timestamp>,
}

impl<'a, 'input> Day<'a, 'input> {
    fn new(node: Node<'a, 'input>, zone: &EventZone) -> Self {
        let instant = |name: &str| {
            let value = Value::from(node.attribute(name)?);
            parse_instant(&value, name, zone).ok()
        };
        Day {
            node,
            start: instant("start"),
            end: instant("end"),
        }
    }

    /// The `date` attribute, else the date (in `tz`) of the `start`
    /// attribute; `Ok(None)` when the day has neither.
    fn date(&self, tz: &TimeZone) -> Result<Option<Date>, ImportError> {
        match self.node.attribute("date").map(str::trim) {
            Some(date) if !date.is_empty() => date.parse::<Date>().map(Some).map_err(|_| {
                xml_error(
                    line_of(self.node),
                    format!("<day> date expected YYYY-MM-DD, got {}", shorten(date)),
                )
            }),
            _ => Ok(self.start.map(|ts| ts.to_zoned(tz.clone()).date())),
        }
    }
}

fn xml_error(line: usize, message: impl Into<String>) -> ImportError {
    ImportError::Xml {
        line,
        message: message.into(),
    }
}

/// The 1-based line holding byte `offset`.
fn line_at(bytes: &[u8], offset: usize) -> usize {
    let end = offset.min(bytes.len());
    bytes[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The 1-based line on which a node starts.
fn line_of(node: Node<'_, '_>) -> usize {
    let pos = node.document().text_pos_at(node.range().start);
    usize::try_from(pos.row).unwrap_or(usize::MAX)
}

fn syntax_error(e: &roxmltree::Error, text: &str) -> ImportError {
    use roxmltree::Error as E;
    let pos = e.pos();
    // These carry no position (roxmltree says 1:1): a truncated file stops
    // on its last line, and a DTD is found by its `<!DOCTYPE`.
    let line = match e {
        E::UnclosedRootNode | E::UnexpectedEndOfStream | E::NoRootNode => {
            line_at(text.as_bytes(), text.trim_end().len())
        }
        E::DtdDetected => line_at(text.as_bytes(), text.find("<!DOCTYPE").unwrap_or(0)),
        _ => usize::try_from(pos.row).unwrap_or(usize::MAX),
    };
    let full = e.to_string();
    let message = full.replacen(&format!(" at {pos}"), "", 1);
    xml_error(line, format!("malformed XML: {message}"))
}

/// A value shortened and quoted for error messages.
fn shorten(text: &str) -> String {
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut:?}...")
    } else {
        format!("{text:?}")
    }
}

/// Child elements with this (local) name.
fn children<'a, 'input: 'a>(
    node: Node<'a, 'input>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'input>> + 'a {
    node.children()
        .filter(move |n| n.is_element() && n.tag_name().name() == name)
}

/// The first child element with this (local) name.
fn child<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    node.children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
}

/// All text inside an element (entities resolved, CDATA included).
fn text_of(node: Node<'_, '_>) -> String {
    node.descendants()
        .filter(Node::is_text)
        .filter_map(|n| n.text())
        .collect()
}

/// The text of the first child element with this name, when not blank.
fn nonblank_child(node: Node<'_, '_>, name: &str) -> Option<String> {
    child(node, name)
        .map(text_of)
        .filter(|s| !s.trim().is_empty())
}

/// A non-blank attribute.
fn nonblank_attribute(node: Node<'_, '_>, name: &str) -> Option<String> {
    node.attribute(name)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
}

fn read_event(
    event: Node<'_, '_>,
    wrapper_room: Option<&str>,
    day: &Day<'_, '_>,
    zone: &EventZone,
    base: Option<&url::Url>,
) -> Result<ImportedSession, ImportError> {
    let guid = nonblank_attribute(event, "guid");
    let id = nonblank_attribute(event, "id");
    let label = match (&id, &guid) {
        (Some(id), _) => format!("event {id}"),
        (None, Some(guid)) => format!("event {guid}"),
        (None, None) => "event".to_owned(),
    };
    let missing = |name: &str| xml_error(line_of(event), format!("{label}: <{name}> is missing"));

    let title = child(event, "title")
        .map(text_of)
        .ok_or_else(|| missing("title"))?;
    let start = read_start(event, day, zone, &label)?;
    let duration = child(event, "duration").ok_or_else(|| missing("duration"))?;
    let duration_text = text_of(duration);
    let bad_duration = || {
        xml_error(
            line_of(duration),
            format!(
                "{label}: <duration> expected HH:MM, got {}",
                shorten(&duration_text)
            ),
        )
    };
    let seconds = parse_duration(&Value::from(duration_text.as_str()), "duration")
        .map_err(|_| bad_duration())?;
    let end = start.checked_add(seconds).ok_or_else(bad_duration)?;
    let room = match wrapper_room {
        Some(name) => name.to_owned(),
        None => nonblank_child(event, "room").ok_or_else(|| {
            xml_error(
                line_of(event),
                format!(
                    "{label}: <room> is missing or empty (and the event is not inside \
                     a <room name=\"...\">)"
                ),
            )
        })?,
    };

    Ok(ImportedSession {
        guid,
        id,
        title,
        room,
        start_unix: start,
        end_unix: end,
        track: child(event, "track").map(text_of).unwrap_or_default(),
        speakers: child(event, "persons")
            .into_iter()
            .flat_map(|persons| children(persons, "person"))
            .map(|person| text_of(person).trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect(),
        abstract_text: nonblank_child(event, "abstract")
            .or_else(|| nonblank_child(event, "description"))
            .unwrap_or_default(),
        url: page_url(Some(&trimmed_child(event, "url")), base),
        links: read_links(event, base),
        language: trimmed_child(event, "language"),
        kind: trimmed_child(event, "type"),
    })
}

/// The trimmed text of the first child element with this name, else `""`.
fn trimmed_child(node: Node<'_, '_>, name: &str) -> String {
    child(node, name)
        .map(|n| text_of(n).trim().to_owned())
        .unwrap_or_default()
}

/// `<links><link href="…">title</link></links>`, then
/// `<attachments><attachment href="…">title</attachment></attachments>`;
/// entries without an absolute web URL in `href` are dropped.
fn read_links(event: Node<'_, '_>, base: Option<&url::Url>) -> Vec<Link> {
    [("links", "link"), ("attachments", "attachment")]
        .into_iter()
        .flat_map(|(list, item)| {
            child(event, list)
                .into_iter()
                .flat_map(move |l| children(l, item))
        })
        .filter_map(|link| file_link(link.attribute("href")?, &text_of(link), base))
        .collect()
}

/// The start in seconds since the epoch: `<date>` if it has text, else
/// `<start>` on the day's date.
fn read_start(
    event: Node<'_, '_>,
    day: &Day<'_, '_>,
    zone: &EventZone,
    label: &str,
) -> Result<i64, ImportError> {
    if let Some(date) = child(event, "date").filter(|n| !text_of(*n).trim().is_empty()) {
        let text = text_of(date);
        return parse_instant(&Value::from(text.as_str()), "date", zone)
            .map(Timestamp::as_second)
            .map_err(|e| match e {
                ImportError::NoTimeZone { .. } => floating_at(NoZone, date, label),
                _ => xml_error(
                    line_of(date),
                    format!(
                        "{label}: <date> expected an RFC 3339 date-time such as \
                         2019-08-21T11:00:00+02:00, got {}",
                        shorten(&text)
                    ),
                ),
            });
    }
    let Some(start) = child(event, "start").filter(|n| !text_of(*n).trim().is_empty()) else {
        return Err(xml_error(
            line_of(event),
            format!("{label}: <date> or <start> is missing"),
        ));
    };
    let text = text_of(start);
    let time = parse_time_of_day(&text).ok_or_else(|| {
        xml_error(
            line_of(start),
            format!("{label}: <start> expected HH:MM, got {}", shorten(&text)),
        )
    })?;
    let Some(date) = day.date(zone.tz())? else {
        return Err(xml_error(
            line_of(start),
            format!("{label}: <start> without <date> needs the date attribute of its <day>"),
        ));
    };
    let at = |date: Date| {
        zone.local(date.to_datetime(time))
            .map_err(|no_zone| floating_at(no_zone, start, label))?
            .ok_or_else(|| xml_error(line_of(start), format!("{label}: <start>: out of range")))
    };
    let mut instant = at(date)?;
    // After midnight on a day that runs past it (e.g. 09:00 to 04:00)?
    if day.start.is_some_and(|day_start| instant < day_start) {
        if let Ok(next) = date.tomorrow() {
            let later = at(next)?;
            if day.end.is_none_or(|day_end| later < day_end) {
                instant = later;
            }
        }
    }
    Ok(instant.as_second())
}

/// The error for a local time at `node` that no zone can place.
fn floating_at(no_zone: NoZone, node: Node<'_, '_>, label: &str) -> ImportError {
    no_zone.at(format!("XML line {}: {label}", line_of(node)))
}

/// `HH:MM`, `H:MM` or `HH:MM:SS` as a wall-clock time.
fn parse_time_of_day(text: &str) -> Option<Time> {
    let parts: Vec<&str> = text.trim().split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let mut numbers = [0_i8; 3];
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        numbers[i] = part.parse().ok()?;
    }
    let [hour, minute, second] = numbers;
    Time::new(hour, minute, second, 0).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::import::parse_schedule_json;
    use crate::import::test_util::{by_guid, ts};

    const XML: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/schedules/frab-camp2019.xml"
    ));
    const NOROOM: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/schedules/frab-camp2019-noroom.xml"
    ));
    const JSON: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/schedules/frab-camp2019.json"
    ));

    const OPENING: &str = "a0a0fcfe-b7fb-46e3-84b6-97a5406016b4";

    /// The error's line and its whole message (`XML line N: ...`).
    fn xml_err(bytes: &[u8]) -> (usize, String) {
        match parse_schedule_xml(bytes).unwrap_err() {
            err @ ImportError::Xml { line, .. } => (line, err.to_string()),
            other => panic!("expected an Xml error, got {other:?}"),
        }
    }

    /// The 1-based line of the first occurrence of `needle` in `text`.
    fn line_of_text(text: &str, needle: &str) -> usize {
        let at = text.find(needle).unwrap();
        text[..at].matches('\n').count() + 1
    }

    fn fixture() -> &'static str {
        std::str::from_utf8(XML).unwrap()
    }

    /// The fixture with each `from` replaced by its `to`, in the opening
    /// event (the first `from` after that event's guid).
    fn edited(edits: &[(&str, &str)]) -> String {
        let mut text = fixture().to_owned();
        for (from, to) in edits {
            let event = text.find(OPENING).unwrap();
            let at = event + text[event..].find(from).unwrap();
            text.replace_range(at..at + from.len(), to);
        }
        text
    }

    /// The older-layout fixture with the first `from` replaced.
    fn noroom_edited(from: &str, to: &str) -> String {
        std::str::from_utf8(NOROOM).unwrap().replacen(from, to, 1)
    }

    fn assert_same_as_json(xml: &[u8]) {
        let mut from_json = parse_schedule_json(JSON).unwrap();
        let s = parse_schedule_xml(xml).unwrap();
        // The XML fixtures were generated without the JSON's links (see
        // tests/data/schedules/SOURCES.md); the older layout has only
        // local <start> times, read in the file's zone.
        for session in &mut from_json.sessions {
            session.links.clear();
        }
        assert_eq!(s.floating_times, xml == NOROOM);
        from_json.floating_times = s.floating_times;
        assert_eq!(s.name, "Chaos Communication Camp 2019");
        assert_eq!(s.time_zone, "Europe/Berlin");
        assert_eq!(s.sessions.len(), 79);
        assert_eq!(s.rooms(), ["Curie", "Meitner"]);
        assert_eq!(s.days().len(), 5);
        assert_eq!(s.days(), from_json.days());
        // Every field of every session, in order.
        for (x, j) in s.sessions.iter().zip(&from_json.sessions) {
            assert_eq!(x, j);
        }
        assert_eq!(s, from_json);
        let open = by_guid(&s, OPENING);
        assert_eq!(open.id.as_deref(), Some("10386"));
        assert_eq!(open.start_unix, ts("2019-08-21T11:00:00+02:00"));
        assert_eq!(open.end_unix, ts("2019-08-21T09:30:00Z"));
        assert_eq!(open.speakers, ["jinxx", "smtw"]);
    }

    #[test]
    fn xml_fixture_reads_like_the_json() {
        assert_same_as_json(XML);
    }

    #[test]
    fn older_layout_without_room_wrappers_or_dates_reads_like_the_json() {
        assert_same_as_json(NOROOM);
    }

    #[test]
    fn start_without_date_in_a_dst_zone() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<schedule xmlns:x="urn:example" x:extra="ignored">
  <version>1</version>
  <conference>
    <acronym>dst24</acronym>
    <time_zone_name> Europe/London </time_zone_name>
    <unknown>ignored</unknown>
  </conference>
  <day index="1" date="2024-03-30" start="2024-03-30T09:00:00+00:00" end="2024-03-31T04:00:00+01:00">
    <event guid="11111111-1111-1111-1111-111111111111" id="1" code="ABCDEF">
      <room>Hall A</room>
      <start>10:00</start>
      <duration>01:00</duration>
      <title>Tom &amp; Jerry&#x27;s <![CDATA[<b>Show</b>]]></title>
      <track/>
      <abstract> </abstract>
      <description>From the &lt;description&gt;</description>
      <persons><person id="1"> Ada </person><person id="2"/></persons>
      <links><link href="https://example.org">x</link></links>
    </event>
    <event id="2">
      <room>Hall B</room>
      <start>00:30</start>
      <duration>PT30M</duration>
      <title>After midnight, still GMT</title>
    </event>
    <event id="3">
      <room>Hall B</room>
      <start>01:30</start>
      <duration>0:30</duration>
      <title>In the DST gap</title>
    </event>
  </day>
  <day index="2" date="2024-03-31">
    <room>
      <event id="4">
        <room>Hall A</room>
        <date></date>
        <start>10:00</start>
        <duration>1:05:30</duration>
        <title/>
        <track>Main</track>
      </event>
    </room>
  </day>
</schedule>"#;
        let s = parse_schedule_xml(xml).unwrap();
        assert_eq!(s.name, "dst24");
        assert_eq!(s.time_zone, "Europe/London");
        assert_eq!(s.rooms(), ["Hall A", "Hall B"]);
        let ids: Vec<_> = s
            .sessions
            .iter()
            .map(|x| x.id.as_deref().unwrap())
            .collect();
        assert_eq!(ids, ["1", "2", "3", "4"]);

        let show = by_guid(&s, "11111111-1111-1111-1111-111111111111");
        assert_eq!(show.title, "Tom & Jerry's <b>Show</b>");
        assert_eq!(show.room, "Hall A");
        assert_eq!(show.start_unix, ts("2024-03-30T10:00:00Z")); // GMT
        assert_eq!(show.end_unix - show.start_unix, 3600);
        assert_eq!(show.track, "");
        assert_eq!(show.abstract_text, "From the <description>");
        assert_eq!(show.speakers, ["Ada"]);

        let [_, midnight, gap, summer] = &s.sessions[..] else {
            panic!("{:?}", s.sessions);
        };
        // 00:30 is before the day's 09:00 start: the next date, still GMT.
        assert_eq!(midnight.start_unix, ts("2024-03-31T00:30:00Z"));
        assert_eq!(midnight.end_unix, ts("2024-03-31T01:00:00Z"));
        assert_eq!(midnight.guid, None);
        // 01:30 does not exist on 2024-03-31 in London: moved on by the gap.
        assert_eq!(gap.start_unix, ts("2024-03-31T02:30:00+01:00"));
        // The next day is in BST; an empty <date> falls back to <start>;
        // a <room> without a name leaves the event's own <room>.
        assert_eq!(summer.start_unix, ts("2024-03-31T09:00:00Z"));
        assert_eq!(summer.end_unix - summer.start_unix, 3600 + 5 * 60 + 30);
        assert_eq!(summer.room, "Hall A");
        assert_eq!(summer.title, "");
        assert_eq!(summer.track, "Main");
        assert_eq!(s.days(), ["2024-03-30", "2024-03-31"]);
    }

    #[test]
    fn local_times_without_a_known_zone_are_refused_not_read_as_utc() {
        let event = r#"<day index="1" date="2019-08-21"><room name="Hall">
            <event id="1"><start>10:00</start><duration>00:30</duration><title>T</title></event>
            </room></day>"#;
        let unknown = format!(
            "<schedule><conference><title>Mars</title>\
             <time_zone_name>Mars/Olympus_Mons</time_zone_name></conference>\n{event}</schedule>"
        );
        let err = parse_schedule_xml(unknown.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            ImportError::NoTimeZone {
                at: "XML line 3: event 1".into()
            }
        );
        assert!(err.to_string().contains("give the zone"), "{err}");
        // With a fallback zone, the local time is read in it.
        let s = crate::import::parse_schedule(
            crate::import::ScheduleFormat::Xml,
            unknown.as_bytes(),
            Some("Europe/Brussels"),
        )
        .unwrap();
        assert_eq!(s.name, "Mars");
        assert_eq!(s.time_zone, "Europe/Brussels");
        assert_eq!(s.zone_source, crate::import::ZoneSource::Fallback);
        assert!(s.floating_times);
        assert_eq!(s.sessions[0].start_unix, ts("2019-08-21T10:00:00+02:00"));

        let bare = format!("<schedule>{event}</schedule>");
        assert!(matches!(
            parse_schedule_xml(bare.as_bytes()),
            Err(ImportError::NoTimeZone { .. })
        ));

        // Times with offsets need no zone: UTC only counts the days.
        let dated = bare.replace("<start>", "<date>2019-08-21T10:00:00+02:00</date><start>");
        let s = parse_schedule_xml(dated.as_bytes()).unwrap();
        assert_eq!(s.name, "");
        assert_eq!(s.time_zone, "UTC");
        assert_eq!(s.zone_source, crate::import::ZoneSource::Unnamed);
        assert!(!s.floating_times);
        assert_eq!(s.sessions[0].room, "Hall");

        let empty = parse_schedule_xml(b"<schedule/>").unwrap();
        assert!(empty.sessions.is_empty());
    }

    #[test]
    fn malformed_xml_names_its_line() {
        let garbled = edited(&[("</title>", "</titel>")]);
        let line = line_of_text(&garbled, "</titel>");
        let (l, message) = xml_err(garbled.as_bytes());
        assert_eq!(l, line);
        assert!(
            message.starts_with(&format!("XML line {line}: malformed XML: ")),
            "{message}"
        );
        assert!(!message.contains(" at "), "{message}");

        let cut = &XML[..XML.len() / 2];
        let last = cut.iter().filter(|&&b| b == b'\n').count() + 1;
        assert_eq!(xml_err(cut).0, last);

        // JSON is not XML.
        assert_eq!(xml_err(JSON).0, 1);
        let (line, _) = xml_err(b"<?xml version=\"1.0\"?>\n<!DOCTYPE schedule>\n<schedule/>");
        assert_eq!(line, 2);
    }

    #[test]
    fn missing_title_or_duration_names_the_event_and_its_line() {
        let line = line_of_text(fixture(), OPENING);
        for (name, element) in [
            ("title", "<title>Opening Ceremony</title>"),
            ("duration", "<duration>00:30</duration>"),
        ] {
            let broken = edited(&[(element, "<ignored/>")]);
            let (l, message) = xml_err(broken.as_bytes());
            assert_eq!(l, line);
            assert_eq!(
                message,
                format!("XML line {line}: event 10386: <{name}> is missing")
            );
        }

        let no_start = edited(&[
            ("<date>2019-08-21T11:00:00+02:00</date>", ""),
            ("<start>11:00</start>", ""),
        ]);
        let (l, message) = xml_err(no_start.as_bytes());
        assert_eq!(l, line);
        assert!(message.ends_with("event 10386: <date> or <start> is missing"));

        let no_room = "<schedule><conference><time_zone_name>UTC</time_zone_name></conference>\
             <day date=\"2019-08-21\">\
             <event guid=\"g-1\"><start>10:00</start><duration>0:30</duration><title>T</title>\
             <room> </room></event></day></schedule>";
        let (l, message) = xml_err(no_room.as_bytes());
        assert_eq!(l, 1);
        assert!(
            message.contains("event g-1: <room> is missing or empty"),
            "{message}"
        );

        let no_day_date = "<schedule><day>\n<event id=\"5\"><room>R</room>\n\
             <start>10:00</start><duration>0:30</duration><title>T</title></event></day></schedule>";
        let (l, message) = xml_err(no_day_date.as_bytes());
        assert_eq!(l, 3);
        assert!(
            message.contains("needs the date attribute of its <day>"),
            "{message}"
        );
    }

    #[test]
    fn bad_values_name_the_element() {
        let bad = edited(&[("<duration>00:30</duration>", "<duration>1h</duration>")]);
        let line = line_of_text(&bad, "<duration>1h");
        assert_eq!(
            xml_err(bad.as_bytes()),
            (
                line,
                format!("XML line {line}: event 10386: <duration> expected HH:MM, got \"1h\"")
            )
        );

        let bad = edited(&[("2019-08-21T11:00:00+02:00", "yesterday")]);
        let line = line_of_text(&bad, "yesterday");
        let (l, message) = xml_err(bad.as_bytes());
        assert_eq!(l, line);
        assert!(
            message.contains("event 10386: <date> expected an RFC 3339 date-time"),
            "{message}"
        );

        let bad = noroom_edited("<start>11:00</start>", "<start>25:00</start>");
        let line = line_of_text(&bad, "<start>25:00");
        let (l, message) = xml_err(bad.as_bytes());
        assert_eq!(l, line);
        assert!(
            message.ends_with("event 10386: <start> expected HH:MM, got \"25:00\""),
            "{message}"
        );

        let bad = std::str::from_utf8(NOROOM).unwrap().replacen(
            "date=\"2019-08-21\"",
            "date=\"21.08.2019\"",
            1,
        );
        let (l, message) = xml_err(bad.as_bytes());
        assert_eq!(l, line_of_text(&bad, "21.08.2019"));
        assert!(
            message.contains("<day> date expected YYYY-MM-DD"),
            "{message}"
        );
    }

    #[test]
    fn root_must_be_schedule() {
        let (line, message) = xml_err(b"<?xml version=\"1.0\"?>\n\n<html><day/></html>");
        assert_eq!(line, 3);
        assert_eq!(
            message,
            "XML line 3: not a schedule: the root element is <html>, expected <schedule>"
        );
    }

    #[test]
    fn not_utf8_names_the_line() {
        let (line, message) = xml_err(b"<schedule>\n<conference>\n<title>caf\xE9</title>");
        assert_eq!(line, 3);
        assert!(message.contains("not UTF-8"), "{message}");
    }

    #[test]
    fn truncations_never_panic() {
        for i in 0..=400 {
            let cut = &XML[..XML.len() * i / 400];
            match parse_schedule_xml(cut) {
                Ok(_) => assert_eq!(i, 400),
                Err(ImportError::Xml { line, .. }) => assert!(line >= 1),
                Err(other) => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn times_of_day() {
        let t = |s: &str| parse_time_of_day(s).map(|t| t.to_string());
        assert_eq!(t("09:05").as_deref(), Some("09:05:00"));
        assert_eq!(t("9:05").as_deref(), Some("09:05:00"));
        assert_eq!(t(" 23:59:59 ").as_deref(), Some("23:59:59"));
        for bad in [
            "24:00", "12:60", "1200", "", "12:", "-1:00", "1:2:3:4", "123:00",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }
}
