//! Turning client-core values into human text and JSON.

use anyhow::Context as _;
use lanyard_client_core::time::{day_of, format_clock, format_rfc3339};
use std::collections::BTreeMap;

use lanyard_client_core::{
    Announcement, Reservation, Room, SeatCount, Session, SessionStatus, SyncStatus,
};
use serde_json::{json, Value};

/// `1 change`, `2 changes`.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A session as the agenda's JSON object (exactly the documented keys),
/// with how full it is when `seats` is given.
pub fn session_json(s: &Session, tz: &str, seats: Option<&SeatCount>) -> anyhow::Result<Value> {
    let mut v = json!({
        "id": s.id,
        "title": s.title,
        "room": s.room,
        "start": format_rfc3339(s.start_unix, tz)?,
        "end": format_rfc3339(s.end_unix, tz)?,
        "status": s.status.as_str(),
        "track": s.track,
        "speakers": s.speakers,
        "url": s.url,
        "links": s.links.iter().map(|l| json!({ "url": l.url, "title": l.title })).collect::<Vec<_>>(),
        "language": s.language,
        "type": s.kind,
    });
    if let (Some(c), Value::Object(m)) = (seats, &mut v) {
        m.insert("capacity".into(), json!(s.capacity));
        m.insert("confirmed".into(), json!(c.confirmed));
        m.insert("offered".into(), json!(c.offered));
        m.insert("waitlist".into(), json!(c.waitlist));
        m.insert("checked_in".into(), json!(c.checked_in));
    }
    Ok(v)
}

/// `182/200`, `200/200 FULL, 12 waiting`: how full a session with a
/// capacity is ("" without one).
pub fn fullness(s: &Session, c: Option<&SeatCount>) -> String {
    let c = c.copied().unwrap_or_default();
    if s.capacity == 0 {
        return String::new();
    }
    let c = SeatCount {
        capacity: s.capacity,
        ..c
    };
    let mut out = format!("{}/{}", c.confirmed + c.offered, c.capacity);
    if c.full() {
        out.push_str(" FULL");
    }
    if c.waitlist > 0 {
        out.push_str(&format!(", {} waiting", c.waitlist));
    }
    out
}

/// A reservation as JSON: `session`, `state`, `position`, `reason`, `updated`
/// (RFC 3339, event zone) and `offer_until` (or null).
pub fn reservation_json(r: &Reservation, tz: &str) -> anyhow::Result<Value> {
    let at = |ms: i64| format_rfc3339(ms.div_euclid(1000), tz);
    Ok(json!({
        "session": r.session,
        "state": r.state.as_str(),
        "position": r.position,
        "reason": r.reason,
        "updated": at(r.updated_unix_ms)?,
        "offer_until": r.offer_until_unix_ms.map(at).transpose()?,
    }))
}

/// Reservations as a table: session, state (with the waitlist place), why.
pub fn reservations_text(
    list: &[Reservation],
    titles: &BTreeMap<String, String>,
    tz: &str,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let id_w = list
        .iter()
        .map(|r| r.session.chars().count())
        .max()
        .unwrap_or(0);
    for r in list {
        let mut state = r.state.as_str().to_owned();
        if let Some(p) = r.position {
            state.push_str(&format!(" #{p}"));
        }
        if let Some(until) = r.offer_until_unix_ms {
            state.push_str(&format!(
                " until {}",
                format_clock(until.div_euclid(1000), tz)?
            ));
        }
        let title = titles.get(&r.session).map_or("", String::as_str);
        let mut line = format!("{:<id_w$}  {state:<16}  {title}", r.session);
        if let Some(why) = &r.reason {
            line.push_str(&format!(" ({why})"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Ok(out)
}

/// `Wednesday 2026-06-10` for a `YYYY-MM-DD` day.
fn day_heading(day: &str) -> String {
    match day.parse::<jiff::civil::Date>() {
        Ok(d) => format!("{} {day}", d.strftime("%A")),
        Err(_) => day.to_owned(),
    }
}

/// `09:00-10:00` in the zone, with `(ends YYYY-MM-DD)` when it ends on a later day.
fn time_range(s: &Session, tz: &str) -> anyhow::Result<String> {
    let mut out = format!(
        "{}-{}",
        format_clock(s.start_unix, tz)?,
        format_clock(s.end_unix, tz)?
    );
    // A session ending at midnight ends on its own day.
    let last_second = s.end_unix.saturating_sub(1).max(s.start_unix);
    let (d0, d1) = (day_of(s.start_unix, tz)?, day_of(last_second, tz)?);
    if d0 != d1 {
        out.push_str(&format!(" (ends {d1})"));
    }
    Ok(out)
}

fn status_marker(status: SessionStatus) -> &'static str {
    match status {
        SessionStatus::Scheduled => "",
        SessionStatus::Moved => "[MOVED] ",
        SessionStatus::Cancelled => "[CANCELLED] ",
    }
}

/// The agenda as a table grouped by day (sessions must be sorted by start).
pub fn agenda_table(
    sessions: &[Session],
    tz: &str,
    seats: &BTreeMap<String, SeatCount>,
) -> anyhow::Result<String> {
    let mut rows = Vec::with_capacity(sessions.len());
    for s in sessions {
        rows.push((day_of(s.start_unix, tz)?, time_range(s, tz)?, s));
    }
    let time_w = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    let id_w = sessions
        .iter()
        .map(|s| s.id.chars().count())
        .max()
        .unwrap_or(0);
    let room_w = sessions
        .iter()
        .map(|s| s.room.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let mut current: Option<&str> = None;
    for (day, time, s) in &rows {
        if current != Some(day.as_str()) {
            if current.is_some() {
                out.push('\n');
            }
            out.push_str(&day_heading(day));
            out.push('\n');
            current = Some(day.as_str());
        }
        let mut line = format!(
            "  {time:<time_w$}  {:<id_w$}  {:<room_w$}  {}{}",
            s.id,
            s.room,
            status_marker(s.status),
            s.title
        );
        if !s.speakers.is_empty() {
            line.push_str(" - ");
            line.push_str(&s.speakers.join(", "));
        }
        if !s.track.is_empty() {
            line.push_str(&format!(" [{}]", s.track));
        }
        let full = fullness(s, seats.get(&s.id));
        if !full.is_empty() {
            line.push_str(&format!(" ({full})"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Ok(out)
}

/// One session in detail.
pub fn session_detail(s: &Session, tz: &str) -> anyhow::Result<String> {
    let mut out = format!("{} ({})\n", s.title, s.id);
    out.push_str(&format!(
        "  when:     {} {} ({tz})\n",
        day_of(s.start_unix, tz)?,
        time_range(s, tz)?
    ));
    out.push_str(&format!("  room:     {}\n", s.room));
    out.push_str(&format!("  status:   {}\n", s.status.as_str()));
    if !s.track.is_empty() {
        out.push_str(&format!("  track:    {}\n", s.track));
    }
    if !s.speakers.is_empty() {
        out.push_str(&format!("  speakers: {}\n", s.speakers.join(", ")));
    }
    for (label, value) in [
        ("type", &s.kind),
        ("language", &s.language),
        ("page", &s.url),
    ] {
        if !value.is_empty() {
            out.push_str(&format!("  {:<10}{value}\n", format!("{label}:")));
        }
    }
    if !s.links.is_empty() {
        out.push_str("  links:\n");
        for l in &s.links {
            let line = format!("    {} {}", l.url, l.title);
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    if !s.abstract_text.is_empty() {
        out.push('\n');
        out.push_str(&s.abstract_text);
        out.push('\n');
    }
    Ok(out)
}

/// A bookmark: the session's summary if known, else just its id.
pub fn bookmark_json(id: &str, session: Option<&Session>, tz: &str) -> anyhow::Result<Value> {
    Ok(match session {
        Some(s) => json!({
            "id": s.id,
            "title": s.title,
            "start": format_rfc3339(s.start_unix, tz)?,
            "end": format_rfc3339(s.end_unix, tz)?,
            "room": s.room,
            "status": s.status.as_str(),
        }),
        None => json!({ "id": id }),
    })
}

/// A bookmark as one line of text.
pub fn bookmark_line(id: &str, session: Option<&Session>, tz: &str) -> anyhow::Result<String> {
    Ok(match session {
        Some(s) => format!(
            "{}  {} {}  {}  {}{}",
            s.id,
            day_of(s.start_unix, tz)?,
            time_range(s, tz)?,
            s.room,
            status_marker(s.status),
            s.title
        ),
        None => format!("{id}  (not in the agenda on this device)"),
    })
}

/// Rooms as text.
pub fn rooms_text(rooms: &[Room]) -> String {
    let mut out = String::new();
    for r in rooms {
        if r.capacity > 0 {
            out.push_str(&format!("{} ({} seats)\n", r.name, r.capacity));
        } else {
            out.push_str(&format!("{}\n", r.name));
        }
    }
    out
}

/// Announcements as JSON.
pub fn announcements_json(list: &[Announcement], tz: &str) -> anyhow::Result<Value> {
    let items = list
        .iter()
        .map(|a| Ok(json!({ "text": a.text, "at": format_rfc3339(a.at_unix, tz)? })))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Value::Array(items))
}

/// Announcements as text.
pub fn announcements_text(list: &[Announcement], tz: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    for a in list {
        out.push_str(&format!(
            "{} {}  {}\n",
            day_of(a.at_unix, tz)?,
            format_clock(a.at_unix, tz)?,
            a.text
        ));
    }
    Ok(out)
}

/// The sync status as JSON (exactly the documented keys).
pub fn status_json(
    status: &SyncStatus,
    last_error: Option<&str>,
    tz: &str,
) -> anyhow::Result<Value> {
    let last_sync = status
        .last_sync_unix
        .map(|t| format_rfc3339(t, tz))
        .transpose()
        .context("the last sync time")?;
    let refused: Vec<Value> = status
        .refused
        .iter()
        .map(|r| json!({ "doc": r.doc, "change": r.change, "message": r.message }))
        .collect();
    Ok(json!({
        "pending_changes": status.pending_changes,
        "last_sync": last_sync,
        "refused": refused,
        "kept_edits": status.kept_edits,
        "last_error": last_error,
    }))
}

/// The sync status as text.
pub fn status_text(
    status: &SyncStatus,
    last_error: Option<&str>,
    tz: &str,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let pending = status.pending_changes;
    if pending > 0 {
        out.push_str(&format!(
            "pending changes: {pending} (not yet acknowledged by the server; run `lanyard sync`)\n"
        ));
    } else {
        out.push_str("pending changes: 0\n");
    }
    let last = match status.last_sync_unix {
        Some(t) => format_rfc3339(t, tz)?,
        None => "never".to_owned(),
    };
    out.push_str(&format!("last sync:       {last}\n"));
    if status.refused.is_empty() {
        out.push_str("refused changes: none\n");
    } else {
        out.push_str(&format!("refused changes: {}\n", status.refused.len()));
        for r in &status.refused {
            out.push_str(&format!(
                "  {} (change {}): {}\n",
                r.doc, r.change, r.message
            ));
        }
        out.push_str(
            "  A refused change blocks later edits of its document. Run `lanyard resolve-refused`:\n  \
             it sets them aside, redoes what can be redone on the server's version, keeps the rest.\n",
        );
    }
    if status.kept_edits > 0 {
        out.push_str(&format!(
            "kept edits:      {} (set aside, could not be redone; see `lanyard kept`)\n",
            status.kept_edits
        ));
    }
    out.push_str(&format!(
        "last error:      {}\n",
        last_error.unwrap_or("none")
    ));
    Ok(out)
}
