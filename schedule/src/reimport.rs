//! Matching an imported schedule against the agenda it updates.
//!
//! A re-import must change only what changed, so every imported session is
//! first paired with the agenda session it is a new version of. The rules, in
//! order:
//!
//! 1. **Key.** An imported session's key is its `guid` (schedule.json,
//!    schedule.xml) or `UID` (iCalendar); without one, `id-` plus the file's
//!    own `id`; without either, `t-` plus a digest of its title and start.
//!    A key that is not a valid session id (over 128 bytes, or holding `/`,
//!    whitespace or control characters) is replaced by `k-` plus a digest of
//!    it. A key seen twice in one file gets `-2`, `-3`, … on its later
//!    copies. An agenda session whose id equals the key is the match, or
//!    whose id the key was derived from by Lanyard's own export (an id that
//!    is not a UUID is exported under a name-based UUID, see
//!    [`guid_for`](crate::export::guid_for)).
//! 2. **Title.** An imported session whose key matches nothing is paired with
//!    an agenda session that no key matched and that has the same title
//!    (ignoring case and surrounding whitespace): the only such session, or
//!    else the one that also has the same start, or else the same room. This
//!    keeps bookmarks and notes when a tool regenerates its GUIDs, or when a
//!    keyless session moves.
//! 3. Anything still unpaired is **added** under its key.
//! 4. Agenda sessions no imported session was paired with are **cancelled**
//!    (kept, marked cancelled), never deleted, so bookmarks on them survive
//!    and attendees are told.
//!
//! [`import_schedule`](crate::import_schedule) writes the outcome as agenda
//! edits holding only the fields that differ.

use std::collections::{HashMap, HashSet};

use lanyard_client_core::Session;
use lanyard_protocol::SessionId;
use ring::digest::{digest, SHA256};

use crate::import::ImportedSession;

/// What a re-import does to the agenda.
#[derive(Debug, Default)]
pub(crate) struct Plan<'a> {
    /// `(agenda id, imported version)`: sessions that exist (matched by key
    /// or title) and are rewritten where they differ.
    pub(crate) update: Vec<(String, &'a ImportedSession)>,
    /// `(new id, imported session)`: sessions to add.
    pub(crate) add: Vec<(String, &'a ImportedSession)>,
    /// Agenda ids no imported session matched (to cancel unless already cancelled).
    pub(crate) unmatched: Vec<String>,
}

fn short_digest(parts: &[&str]) -> String {
    let d = digest(&SHA256, parts.join("\u{0}").as_bytes());
    d.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The key of an imported session (rule 1, without the duplicate suffix):
/// the id it gets when it is new to the agenda.
pub fn key_of(s: &ImportedSession) -> String {
    let raw = match (&s.guid, &s.id) {
        (Some(g), _) if !g.trim().is_empty() => g.trim().to_owned(),
        (_, Some(id)) if !id.trim().is_empty() => format!("id-{}", id.trim()),
        _ => format!("t-{}", short_digest(&[&s.title, &s.start_unix.to_string()])),
    };
    if SessionId::new(raw.as_str()).is_ok() {
        raw
    } else {
        format!("k-{}", short_digest(&[&raw]))
    }
}

fn norm(title: &str) -> String {
    title.trim().to_lowercase()
}

/// Pairs `imported` with `existing` (see the module docs).
pub(crate) fn plan<'a>(existing: &[Session], imported: &'a [ImportedSession]) -> Plan<'a> {
    // Rule 1: keys, made unique within the file.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let keys: Vec<String> = imported
        .iter()
        .map(|s| {
            let base = key_of(s);
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                base
            } else {
                format!("{base}-{n}")
            }
        })
        .collect();
    let mut by_id: HashMap<&str, &Session> = existing.iter().map(|s| (s.id.as_str(), s)).collect();
    // Lanyard's own exports write an id that is not a UUID as a name-based
    // UUID (see `export::guid_for`): map those back to their session.
    let derived: Vec<(String, &Session)> = existing
        .iter()
        .map(|s| (crate::export::derived_guid(&s.id), s))
        .collect();
    for (guid, s) in &derived {
        by_id.entry(guid.as_str()).or_insert(s);
    }
    let mut taken: HashSet<&str> = HashSet::new();
    let mut paired: Vec<Option<String>> = vec![None; imported.len()];
    for (i, key) in keys.iter().enumerate() {
        if let Some(s) = by_id.get(key.as_str()) {
            taken.insert(s.id.as_str());
            paired[i] = Some(s.id.clone());
        }
    }
    // Rule 2: titles, among what no key claimed.
    let mut by_title: HashMap<String, Vec<&Session>> = HashMap::new();
    for s in existing.iter().filter(|s| !taken.contains(s.id.as_str())) {
        by_title.entry(norm(&s.title)).or_default().push(s);
    }
    for (i, s) in imported.iter().enumerate() {
        if paired[i].is_some() {
            continue;
        }
        let Some(candidates) = by_title.get_mut(&norm(&s.title)) else {
            continue;
        };
        let pick = if candidates.len() == 1 {
            Some(0)
        } else {
            candidates
                .iter()
                .position(|c| c.start_unix == s.start_unix)
                .or_else(|| candidates.iter().position(|c| c.room == s.room))
        };
        if let Some(p) = pick {
            let chosen = candidates.swap_remove(p);
            taken.insert(chosen.id.as_str());
            paired[i] = Some(chosen.id.clone());
        }
    }
    let mut out = Plan::default();
    for ((s, key), pair) in imported.iter().zip(keys).zip(paired) {
        match pair {
            Some(id) => out.update.push((id, s)),
            None => out.add.push((key, s)),
        }
    }
    out.unmatched = existing
        .iter()
        .filter(|s| !taken.contains(s.id.as_str()))
        .map(|s| s.id.clone())
        .collect();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use lanyard_client_core::SessionStatus;

    use super::*;

    fn imported(guid: Option<&str>, id: Option<&str>, title: &str, start: i64) -> ImportedSession {
        ImportedSession {
            guid: guid.map(str::to_owned),
            id: id.map(str::to_owned),
            title: title.into(),
            room: "Hall".into(),
            start_unix: start,
            end_unix: start + 60,
            track: String::new(),
            speakers: Vec::new(),
            abstract_text: String::new(),
            ..ImportedSession::default()
        }
    }

    fn session(id: &str, title: &str, start: i64, room: &str) -> Session {
        Session {
            id: id.into(),
            title: title.into(),
            abstract_text: String::new(),
            room: room.into(),
            start_unix: start,
            end_unix: start + 60,
            track: String::new(),
            speakers: Vec::new(),
            status: SessionStatus::Scheduled,
            ..Session::default()
        }
    }

    #[test]
    fn keys_follow_guid_then_id_then_title_and_start() {
        assert_eq!(key_of(&imported(Some(" g-1 "), Some("7"), "T", 0)), "g-1");
        assert_eq!(key_of(&imported(Some(""), Some("7"), "T", 0)), "id-7");
        let t = key_of(&imported(None, None, "T", 0));
        assert!(t.starts_with("t-") && t.len() == 26, "{t}");
        assert_ne!(t, key_of(&imported(None, None, "T", 1)));
        // Not a valid session id: replaced by a digest, deterministically.
        let bad = key_of(&imported(Some("has space/slash"), None, "T", 0));
        assert!(bad.starts_with("k-"), "{bad}");
        assert_eq!(
            bad,
            key_of(&imported(Some("has space/slash"), None, "U", 9))
        );
        assert!(SessionId::new(bad).is_ok());
    }

    #[test]
    fn sessions_match_by_key_then_title_and_the_rest_is_cancelled() {
        let existing = vec![
            session("g-1", "Keynote", 0, "Hall"),
            session("old-guid", "Rust at scale", 100, "Hall"),
            session("gone", "Dropped talk", 200, "Hall"),
            session("twin-a", "Lightning talks", 300, "Hall"),
            session("twin-b", "Lightning talks", 400, "Hall"),
        ];
        let new = vec![
            imported(Some("g-1"), None, "Keynote (updated)", 0),
            // Regenerated GUID: found again by its title.
            imported(Some("new-guid"), None, "  rust AT scale ", 150),
            // Two sessions with one title: the one with the same start.
            imported(Some("lt-x"), None, "Lightning talks", 400),
            imported(Some("fresh"), None, "Brand new", 500),
        ];
        let p = plan(&existing, &new);
        let update: Vec<(&str, &str)> = p
            .update
            .iter()
            .map(|(id, s)| (id.as_str(), s.title.as_str()))
            .collect();
        assert_eq!(
            update,
            [
                ("g-1", "Keynote (updated)"),
                ("old-guid", "  rust AT scale "),
                ("twin-b", "Lightning talks")
            ]
        );
        assert_eq!(p.add.len(), 1);
        assert_eq!(p.add[0].0, "fresh");
        assert_eq!(p.unmatched, ["gone", "twin-a"]);
    }

    #[test]
    fn a_key_twice_in_one_file_gets_a_suffix() {
        let new = vec![
            imported(Some("dup"), None, "A", 0),
            imported(Some("dup"), None, "B", 10),
            imported(Some("dup"), None, "C", 20),
        ];
        let p = plan(&[], &new);
        let ids: Vec<&str> = p.add.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["dup", "dup-2", "dup-3"]);
        // Importing the same file again matches every copy by key.
        let existing: Vec<Session> = p
            .add
            .iter()
            .map(|(id, s)| session(id, &s.title, s.start_unix, &s.room))
            .collect();
        let again = plan(&existing, &new);
        assert_eq!(again.update.len(), 3);
        assert!(again.add.is_empty() && again.unmatched.is_empty());
    }
}
