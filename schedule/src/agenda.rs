//! Applying an imported schedule to a device's agenda: [`import_schedule`].

use std::collections::{HashMap, HashSet};

use lanyard_client_core::{
    time, AgendaEdit, AgendaEditor, Client, ClientError, NewSession, Session, SessionDetails,
    SessionStatus,
};
use serde::{Deserialize, Serialize};

use crate::import::{ImportedSchedule, ImportedSession};
use crate::reimport;

/// What applying an imported schedule changed in the agenda.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImportCounts {
    /// Sessions new to the agenda.
    pub added: u64,
    /// Agenda sessions missing from the file, now cancelled.
    pub removed: u64,
    /// Sessions that exist and had at least one field rewritten.
    pub changed: u64,
    /// Sessions that exist and were already as in the file.
    pub unchanged: u64,
    /// Bytes of the Automerge changes made (0 when nothing changed).
    pub change_bytes: u64,
    /// How many changes the import was written as: a large import is split
    /// so that each fits the server's limits (0 when nothing changed).
    pub changes: u64,
}

/// The outcome of [`import_schedule`]: what the file holds and what
/// importing it changed (or, for a dry run, would change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    /// Distinct dates, in the event's time zone, on which a session starts.
    pub days: u64,
    /// Distinct rooms holding at least one session.
    pub rooms: u64,
    /// Sessions in the file.
    pub sessions: u64,
    /// The event's time zone the days are counted in.
    pub time_zone: String,
    /// What changed in the agenda.
    #[serde(flatten)]
    pub counts: ImportCounts,
    /// True when nothing was written (dry run).
    pub dry_run: bool,
}

/// The session an imported one becomes under `id`.
fn new_session(id: &str, s: &ImportedSession) -> NewSession {
    NewSession {
        id: id.to_owned(),
        title: s.title.clone(),
        abstract_text: s.abstract_text.clone(),
        room: s.room.clone(),
        start_unix: s.start_unix,
        end_unix: s.end_unix,
        track: s.track.clone(),
        speakers: s.speakers.clone(),
    }
}

/// The page, links, language and type of an imported session.
fn details_of(s: &ImportedSession) -> SessionDetails {
    SessionDetails {
        url: s.url.clone(),
        links: s.links.clone(),
        language: s.language.clone(),
        kind: s.kind.clone(),
    }
}

/// An imported session as the agenda stores it: names without surrounding
/// blanks, text with `\n` line ends and no trailing blanks. Files carry
/// CRLF and stray spaces that no format round-trips (iCalendar has no
/// escape for a carriage return), so storing them tidy is what lets an
/// export re-import as a no-op.
fn tidy(s: &ImportedSession) -> ImportedSession {
    let text = |t: &str| {
        t.replace("\r\n", "\n")
            .replace('\r', "\n")
            .trim_end()
            .to_owned()
    };
    ImportedSession {
        title: s.title.trim().to_owned(),
        room: s.room.trim().to_owned(),
        track: s.track.trim().to_owned(),
        speakers: s
            .speakers
            .iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
        abstract_text: text(&s.abstract_text),
        ..s.clone()
    }
}

/// The edits that bring the agenda to `schedule` (whose sessions, tidied,
/// are `imported`): the event's name and zone, new rooms, then rewritten,
/// added and cancelled sessions.
fn edits_for(
    agenda: &AgendaEditor<'_>,
    schedule: &ImportedSchedule,
    imported: &[ImportedSession],
) -> Vec<AgendaEdit> {
    let existing = agenda.sessions();
    let plan = reimport::plan(&existing, imported);
    let old: HashMap<&str, &Session> = existing.iter().map(|s| (s.id.as_str(), s)).collect();
    let known_rooms: HashSet<String> = agenda.rooms().into_iter().map(|r| r.name).collect();
    let (name, tz) = agenda.event();
    let mut edits = Vec::new();
    let new_name = (!schedule.name.trim().is_empty()
        && name.as_deref() != Some(schedule.name.as_str()))
    .then(|| schedule.name.clone());
    // "UTC" is never written: a file that names no zone says "UTC" only
    // to count days (and an agenda without a zone shows UTC anyway), and
    // it must not make later files' floating times read as UTC.
    let new_tz = (schedule.time_zone != "UTC"
        && tz.as_deref() != Some(schedule.time_zone.as_str()))
    .then(|| schedule.time_zone.clone());
    if new_name.is_some() || new_tz.is_some() {
        edits.push(AgendaEdit::Event {
            name: new_name,
            time_zone: new_tz,
        });
    }
    for room in schedule.rooms() {
        if !known_rooms.contains(&room) {
            edits.push(AgendaEdit::NewRoom(room));
        }
    }
    for (id, new) in &plan.update {
        if let Some(was) = old.get(id.as_str()) {
            edits.push(AgendaEdit::Rewrite(
                (*was).clone(),
                new_session(id, new),
                details_of(new),
            ));
        }
    }
    for (id, new) in &plan.add {
        edits.push(AgendaEdit::Add(new_session(id, new), details_of(new)));
    }
    for id in &plan.unmatched {
        if old
            .get(id.as_str())
            .is_some_and(|s| s.status != SessionStatus::Cancelled)
        {
            edits.push(AgendaEdit::Cancel(id.clone()));
        }
    }
    edits
}

/// Imports a schedule read by one of the [`import`](crate::import) readers
/// into `client`'s agenda (organizers only), as changes holding only what
/// differs (see [`reimport`](crate::reimport) for how sessions are
/// matched): new sessions are added, changed fields rewritten (a new room
/// or time marks the session moved; a cancelled session that is back is
/// reinstated), and every session of the agenda that is not in the file is
/// cancelled, including ones added by hand. New rooms are added. The
/// event's name is set from the file when it has one; its time zone when
/// the file names one other than UTC (or one was given for its floating
/// times, see [`ImportedSchedule::zone_source`]).
///
/// A large import becomes several changes that each fit the server's
/// change limit (see [`Client::edit_agenda`]); a re-import of a few edits
/// stays one small change. With `dry_run` nothing is written and the
/// summary tells what an import would do. `progress` is called with the
/// number of sessions handled so far (out of `schedule.sessions.len()`).
pub fn import_schedule(
    client: &Client,
    schedule: &ImportedSchedule,
    dry_run: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<ImportSummary, ClientError> {
    let imported: Vec<ImportedSession> = schedule.sessions.iter().map(tidy).collect();
    let (counts, time_zone) = client.edit_agenda(dry_run, |agenda| {
        let edits = edits_for(agenda, schedule, &imported);
        let mut counts = ImportCounts::default();
        let mut done = 0u64;
        let applied = agenda.apply(&edits, &mut |edit, changed| {
            match edit {
                AgendaEdit::Rewrite(..) if changed => counts.changed += 1,
                AgendaEdit::Rewrite(..) => counts.unchanged += 1,
                AgendaEdit::Add(..) => counts.added += 1,
                AgendaEdit::Cancel(_) => counts.removed += 1,
                _ => return,
            }
            if !matches!(edit, AgendaEdit::Cancel(_)) {
                done += 1;
                progress(done);
            }
        })?;
        counts.changes = applied.changes;
        counts.change_bytes = applied.change_bytes;
        let tz = agenda.event().1.unwrap_or_else(|| "UTC".into());
        Ok((counts, tz))
    })?;
    let days: HashSet<String> = schedule
        .sessions
        .iter()
        .map(|s| time::day_of(s.start_unix, &time_zone))
        .collect::<Result<_, _>>()?;
    Ok(ImportSummary {
        days: days.len() as u64,
        rooms: schedule.rooms().len() as u64,
        sessions: schedule.sessions.len() as u64,
        time_zone,
        counts,
        dry_run,
    })
}
