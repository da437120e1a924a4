//! No dead ends: getting a device whose changes were refused back to a state
//! that syncs, without dropping anything a person typed.
//!
//! A change the server refused blocks every later local change of the same
//! document (they are built on it). [`Client::resolve_refused`] sets the
//! refused changes and everything built on them aside and rebuilds each such
//! document from the rest (what the server holds, what it sent, and local
//! changes that do not depend on a refused one). Then it *redoes* what it
//! can on that version, as new changes that fit the server's limits:
//!
//! * everything set aside behind a refusal for size (`TooLarge`): the
//!   oversized change itself too, now split into changes that fit (an
//!   import made before the device knew the server's limits publishes);
//! * behind any other refusal (`Forbidden`, `Malformed`), the later edits
//!   built on the refused change (an organizer's later room move still
//!   lands), but not the refused change itself, which the server would
//!   refuse again.
//!
//! What cannot be redone is *kept* ([`KeptEdit`]): the text of each note
//! and a description of each agenda edit, shown by [`Client::kept_edits`]
//! and in the status until the person dismisses them with
//! [`Client::clear_kept_edits`].
//!
//! Redone edits are compared by value, document state against document
//! state: agenda fields are last-writer-wins scalars and notes are set to
//! the text the device showed, so concurrent edits from other devices that
//! the server already merged are kept.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use automerge::{ActorId, Automerge, Change, ChangeHash};
use lanyard_protocol::{DocId, Limits, RefusalReason};
use serde::{Deserialize, Serialize};

use crate::client::{now_ms, persist_sync, Client, State};
use crate::docs::{AgendaDoc, AgendaEdit, NotesDoc};
use crate::error::ClientError;
use crate::model::Session;
use crate::time;

/// An edit set aside that could not be redone, kept for the person to see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptEdit {
    /// The document (`agenda/EVENT` or `attendee/EVENT/USER`).
    pub doc: String,
    /// The session it was about, when it was about one.
    pub session: Option<String>,
    /// What the person wrote: the whole note text, or a description of the
    /// agenda edit.
    pub text: String,
    /// Why it could not be redone.
    pub reason: String,
}

/// What [`Client::resolve_refused`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveReport {
    /// Local changes set aside (the refused ones and those built on them).
    pub set_aside: u64,
    /// The edits redone on the server's version, described.
    pub redone: Vec<String>,
    /// New changes the redone edits were written as (pushed at the next sync).
    pub new_changes: u64,
    /// Edits that could not be redone (also kept in [`Client::kept_edits`]).
    pub kept: Vec<KeptEdit>,
}

const KEPT_KEY: &str = "kept_edits";

/// One document's way out, computed before anything is written.
struct Resolution {
    doc: DocId,
    rebuilt: Automerge,
    set_aside: u64,
    redone: Vec<String>,
    new_changes: u64,
    kept: Vec<KeptEdit>,
}

impl Client {
    /// Sets aside every refused change and the changes built on them,
    /// redoes what can be redone on the server's version, keeps the rest
    /// (see [`crate::resolve`]). Afterwards the device syncs again. Nothing
    /// changes when nothing was refused.
    pub fn resolve_refused(&self) -> Result<ResolveReport, ClientError> {
        let mut report = ResolveReport::default();
        {
            let mut st = self.state()?;
            let refusals = st.replica.refusals();
            if refusals.is_empty() {
                return Ok(report);
            }
            let mut by_doc: BTreeMap<DocId, Vec<(ChangeHash, RefusalReason, String)>> =
                BTreeMap::new();
            for (doc, r) in refusals {
                by_doc
                    .entry(doc)
                    .or_default()
                    .push((ChangeHash(r.change), r.reason, r.message));
            }
            let actor = ActorId::from(&rand::random::<[u8; 16]>()[..]);
            let limits = st.limits;
            let mut plans = Vec::new();
            for (doc, aside) in by_doc {
                let Some(rd) = st.replica.get(&doc) else {
                    continue;
                };
                let roots: HashSet<ChangeHash> = rd
                    .sync
                    .refused
                    .iter()
                    .map(|r| ChangeHash(r.change))
                    .collect();
                plans.push(resolve_doc(&doc, &rd.doc, &aside, &roots, limits, &actor)?);
            }
            self.write_resolutions(&mut st, plans, actor, &mut report)?;
        }
        self.inner.local_edit.notify_one();
        self.status_changed();
        Ok(report)
    }

    /// Edits set aside that could not be redone, oldest first.
    pub fn kept_edits(&self) -> Result<Vec<KeptEdit>, ClientError> {
        read_kept(&self.inner.store)
    }

    /// Forgets the kept edits (once the person has seen or copied them).
    pub fn clear_kept_edits(&self) -> Result<(), ClientError> {
        self.inner.store.put_meta(KEPT_KEY, b"[]")?;
        self.status_changed();
        Ok(())
    }

    /// Writes the kept edits first (nothing typed is lost if what follows
    /// fails), then the new actor, then each rebuilt document and its sync
    /// state (a document is either the old or the new one on disk).
    fn write_resolutions(
        &self,
        st: &mut State,
        plans: Vec<Resolution>,
        actor: ActorId,
        report: &mut ResolveReport,
    ) -> Result<(), ClientError> {
        let store = &self.inner.store;
        let mut kept = read_kept(store)?;
        kept.extend(plans.iter().flat_map(|p| p.kept.iter().cloned()));
        let bytes = serde_json::to_vec(&kept).map_err(|e| ClientError::Corrupt {
            doc: KEPT_KEY.into(),
            message: e.to_string(),
        })?;
        store.put_meta(KEPT_KEY, &bytes)?;
        store.put_meta("actor", actor.to_bytes())?;
        st.replica.set_actor(actor);
        for plan in plans {
            let id = plan.doc.to_string();
            if let Err(e) = store.replace_doc(&id, &plan.rebuilt.save()) {
                // It may have landed (a failed flush): the next save of this
                // document replaces it whole, whichever version is on disk.
                st.saved_heads.insert(plan.doc.clone(), Vec::new());
                return Err(e.into());
            }
            let heads = plan.rebuilt.get_heads();
            let rd = st.replica.get_or_create(&plan.doc);
            rd.doc = plan.rebuilt;
            rd.sync.refused.clear();
            st.saved_heads.insert(plan.doc.clone(), heads);
            st.doc_bytes.remove(&plan.doc);
            persist_sync(store, st, &plan.doc)?;
            if matches!(plan.doc, DocId::Agenda(_)) {
                if let Some(rd) = st.replica.get(&plan.doc) {
                    let view = crate::view::AgendaView::build(&rd.doc);
                    st.views.insert(plan.doc.clone(), view);
                    st.views_dirty.insert(plan.doc.clone());
                }
            }
            report.set_aside += plan.set_aside;
            report.new_changes += plan.new_changes;
            report.redone.extend(plan.redone);
            report.kept.extend(plan.kept);
        }
        Ok(())
    }
}

fn read_kept(store: &std::sync::Arc<dyn crate::Store>) -> Result<Vec<KeptEdit>, ClientError> {
    match store.get_meta(KEPT_KEY)? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| ClientError::Corrupt {
            doc: KEPT_KEY.into(),
            message: e.to_string(),
        }),
        None => Ok(Vec::new()),
    }
}

fn doc_of(changes: impl IntoIterator<Item = Change>) -> Result<Automerge, ClientError> {
    let mut d = Automerge::new();
    d.apply_changes(changes.into_iter().collect::<Vec<_>>())?;
    Ok(d)
}

/// Rebuilds `doc` without the changes in `aside` and redoes what it can.
fn resolve_doc(
    doc: &DocId,
    full: &Automerge,
    aside: &[(ChangeHash, RefusalReason, String)],
    roots: &HashSet<ChangeHash>,
    limits: Limits,
    actor: &ActorId,
) -> Result<Resolution, ClientError> {
    let aside_set: HashSet<ChangeHash> = aside.iter().map(|(h, ..)| *h).collect();
    // Refused changes that must not be redone: the server would refuse them again.
    let not_redone: HashSet<ChangeHash> = aside
        .iter()
        .filter(|(h, reason, _)| roots.contains(h) && *reason != RefusalReason::TooLarge)
        .map(|(h, ..)| *h)
        .collect();
    let all = full.get_changes(&[]);
    let base: Vec<Change> = all
        .iter()
        .filter(|c| !aside_set.contains(&c.hash()))
        .cloned()
        .collect();
    let mut rebuilt = doc_of(base.iter().cloned())?;
    rebuilt.set_actor(actor.clone());
    // The state the redone edits are measured from: the rebuilt document
    // plus the refused changes that are not redone.
    let from = if not_redone.is_empty() {
        None
    } else {
        let extra = all
            .iter()
            .filter(|c| not_redone.contains(&c.hash()))
            .cloned();
        Some(doc_of(base.iter().cloned().chain(extra))?)
    };
    let why = aside
        .iter()
        .find(|(h, ..)| roots.contains(h))
        .map_or_else(String::new, |(_, _, m)| m.clone());
    let doc_str = doc.to_string();
    let mut plan = Resolution {
        doc: doc.clone(),
        rebuilt,
        set_aside: aside.len() as u64,
        redone: Vec::new(),
        new_changes: 0,
        kept: Vec::new(),
    };
    if let Some(from) = &from {
        keep_not_redone(&mut plan, from, &doc_str, &why);
    }
    let from_ref = from.unwrap_or_else(|| plan.rebuilt.clone());
    match doc {
        DocId::Agenda(_) => redo_agenda(&mut plan, &from_ref, full, &doc_str, limits, &why)?,
        DocId::Attendee(..) => redo_notes(&mut plan, &from_ref, full, &doc_str, limits, &why)?,
        // Only the server writes seats: a device has nothing there to redo.
        DocId::SeatCounts(_) | DocId::Seats(..) | DocId::Checkins(_) => {}
    }
    Ok(plan)
}

/// The agenda edits that make `from` into `wanted`, written on `have`.
fn agenda_edits(have: &Automerge, from: &Automerge, wanted: &Automerge) -> Vec<AgendaEdit> {
    let mut edits = Vec::new();
    let (name, tz) = AgendaDoc::event(wanted);
    let (name0, tz0) = AgendaDoc::event(from);
    let name = name.filter(|n| Some(n) != name0.as_ref());
    let time_zone = tz.filter(|z| Some(z) != tz0.as_ref());
    if name.is_some() || time_zone.is_some() {
        edits.push(AgendaEdit::Event { name, time_zone });
    }
    let rooms0: Vec<_> = AgendaDoc::rooms(from);
    for room in AgendaDoc::rooms(wanted) {
        if !rooms0.contains(&room) {
            edits.push(AgendaEdit::Room(room));
        }
    }
    let by_id = |d: &Automerge| -> HashMap<String, Session> {
        AgendaDoc::sessions(d)
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect()
    };
    let (was, now) = (by_id(from), by_id(have));
    for s in AgendaDoc::sessions(wanted) {
        if was.get(&s.id) == Some(&s) {
            continue;
        }
        // Only the fields the set-aside edits changed: a refused change that
        // is not redone may have written others.
        let s = match was.get(&s.id) {
            Some(w) => match now.get(&s.id) {
                Some(h) => changed_fields(h, w, &s),
                None => s,
            },
            None => s,
        };
        match now.get(&s.id) {
            Some(h) if *h == s => {}
            Some(h) => edits.push(AgendaEdit::Restore(h.clone(), s)),
            None => {
                // What adding writes: scheduled, no capacity.
                let added = Session {
                    status: crate::model::SessionStatus::Scheduled,
                    capacity: 0,
                    ..s.clone()
                };
                edits.push(crate::docs::addition_of(&s));
                if added != s {
                    edits.push(AgendaEdit::Restore(added, s));
                }
            }
        }
    }
    let mut posted: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for a in AgendaDoc::announcements(from) {
        *posted.entry((a.text, a.at_unix)).or_default() += 1;
    }
    for a in AgendaDoc::announcements(wanted) {
        match posted.get_mut(&(a.text.clone(), a.at_unix)) {
            Some(n) if *n > 0 => *n -= 1,
            _ => edits.push(AgendaEdit::Announce(a)),
        }
    }
    edits
}

/// `have` with the fields that differ between `from` and `wanted` taken from `wanted`.
fn changed_fields(have: &Session, from: &Session, wanted: &Session) -> Session {
    fn pick<T: PartialEq + Clone>(have: &T, from: &T, wanted: &T) -> T {
        if from == wanted {
            have.clone()
        } else {
            wanted.clone()
        }
    }
    Session {
        id: wanted.id.clone(),
        title: pick(&have.title, &from.title, &wanted.title),
        abstract_text: pick(
            &have.abstract_text,
            &from.abstract_text,
            &wanted.abstract_text,
        ),
        room: pick(&have.room, &from.room, &wanted.room),
        start_unix: pick(&have.start_unix, &from.start_unix, &wanted.start_unix),
        end_unix: pick(&have.end_unix, &from.end_unix, &wanted.end_unix),
        track: pick(&have.track, &from.track, &wanted.track),
        speakers: pick(&have.speakers, &from.speakers, &wanted.speakers),
        status: pick(&have.status, &from.status, &wanted.status),
        url: pick(&have.url, &from.url, &wanted.url),
        links: pick(&have.links, &from.links, &wanted.links),
        language: pick(&have.language, &from.language, &wanted.language),
        kind: pick(&have.kind, &from.kind, &wanted.kind),
        capacity: pick(&have.capacity, &from.capacity, &wanted.capacity),
    }
}

fn describe(edit: &AgendaEdit, tz: &str) -> String {
    let when = |unix: i64| time::format_rfc3339(unix, tz).unwrap_or_else(|_| unix.to_string());
    match edit {
        AgendaEdit::Event { name, time_zone } => format!(
            "event: {}{}",
            name.as_deref()
                .map_or(String::new(), |n| format!("name {n:?} ")),
            time_zone
                .as_deref()
                .map_or(String::new(), |z| format!("time zone {z}"))
        )
        .trim_end()
        .to_owned(),
        AgendaEdit::NewRoom(r) => format!("room {r}"),
        AgendaEdit::Room(r) => format!("room {} (capacity {})", r.name, r.capacity),
        AgendaEdit::Capacity(id, n) => format!("session {id}: capacity {n}"),
        AgendaEdit::Rewrite(_, s, _) => format!("session {:?}", s.title),
        AgendaEdit::Restore(_, s) => format!(
            "session {} {:?}: {}, {} ({})",
            s.id,
            s.title,
            s.room,
            when(s.start_unix),
            s.status.as_str()
        ),
        AgendaEdit::Add(s, _) => format!(
            "new session {} {:?}: {}, {}",
            s.id,
            s.title,
            s.room,
            when(s.start_unix)
        ),
        AgendaEdit::Cancel(id) => format!("session {id} cancelled"),
        AgendaEdit::Announce(a) => format!("announcement {:?}", a.text),
    }
}

fn session_of(edit: &AgendaEdit) -> Option<String> {
    match edit {
        AgendaEdit::Restore(_, s) => Some(s.id.clone()),
        AgendaEdit::Add(s, _) => Some(s.id.clone()),
        AgendaEdit::Cancel(id) | AgendaEdit::Capacity(id, _) => Some(id.clone()),
        _ => None,
    }
}

/// Whether the changes made on `doc` since `before` fit `limits`.
fn fits(doc: &Automerge, doc_id: &DocId, before: &[ChangeHash], limits: Limits) -> bool {
    let new = doc.get_changes(before);
    let each = new.iter().all(|c| c.raw_bytes().len() <= limits.max_change);
    let total: usize = doc
        .get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().len())
        .sum();
    each && total <= limits.max_doc_for(doc_id)
}

fn redo_agenda(
    plan: &mut Resolution,
    from: &Automerge,
    wanted: &Automerge,
    doc_str: &str,
    limits: Limits,
    why: &str,
) -> Result<(), ClientError> {
    let edits = agenda_edits(&plan.rebuilt, from, wanted);
    if edits.is_empty() {
        return Ok(());
    }
    let tz = AgendaDoc::event(wanted)
        .1
        .unwrap_or_else(|| "UTC".to_owned());
    let mut budget = limits.max_change / 2;
    loop {
        let mut attempt = plan.rebuilt.clone();
        AgendaDoc::ensure(&mut attempt, doc_str)?;
        let before = plan.rebuilt.get_heads();
        AgendaDoc::apply_edits(&mut attempt, &edits, budget, now_ms(), &mut |_, _| {})?;
        if fits(&attempt, &plan.doc, &before, limits) {
            plan.new_changes += attempt.get_changes(&before).len() as u64;
            plan.rebuilt = attempt;
            plan.redone.extend(edits.iter().map(|e| describe(e, &tz)));
            return Ok(());
        }
        if budget <= 1024 {
            break;
        }
        budget /= 2;
    }
    let reason = format!(
        "does not fit the server's limits ({} bytes per change, {} per document); first refused: {why}",
        limits.max_change,
        limits.max_doc_for(&plan.doc)
    );
    plan.kept.extend(edits.iter().map(|e| KeptEdit {
        doc: doc_str.to_owned(),
        session: session_of(e),
        text: describe(e, &tz),
        reason: reason.clone(),
    }));
    Ok(())
}

fn note_ids(docs: &[&Automerge]) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for d in docs {
        ids.extend(NotesDoc::note_ids(d));
    }
    ids
}

fn redo_notes(
    plan: &mut Resolution,
    from: &Automerge,
    wanted: &Automerge,
    doc_str: &str,
    limits: Limits,
    why: &str,
) -> Result<(), ClientError> {
    let piece = (limits.max_change / 4).max(16);
    for session in note_ids(&[from, wanted]) {
        let text = NotesDoc::note(wanted, &session);
        let before = NotesDoc::note(from, &session);
        if before == text || NotesDoc::note(&plan.rebuilt, &session) == text {
            continue;
        }
        if before != NotesDoc::note(&plan.rebuilt, &session) {
            // A refused change that is not redone wrote this note too: the
            // later edits cannot be told apart from it, so the text is kept.
            plan.kept.push(KeptEdit {
                doc: doc_str.to_owned(),
                session: Some(session.clone()),
                text,
                reason: format!("built on a change the server refused: {why}"),
            });
            continue;
        }
        let before = plan.rebuilt.get_heads();
        let mut attempt = plan.rebuilt.clone();
        let done = NotesDoc::set(&mut attempt, doc_str, &session, &text, piece, now_ms());
        if done.is_ok() && fits(&attempt, &plan.doc, &before, limits) {
            plan.new_changes += attempt.get_changes(&before).len() as u64;
            plan.rebuilt = attempt;
            plan.redone.push(format!("note of session {session}"));
        } else {
            plan.kept.push(KeptEdit {
                doc: doc_str.to_owned(),
                session: Some(session.clone()),
                text,
                reason: format!(
                    "the note does not fit the server's limits ({} bytes per document); first refused: {why}",
                    limits.max_doc_for(&plan.doc)
                ),
            });
        }
    }
    let marks =
        |d: &Automerge| -> BTreeSet<String> { NotesDoc::bookmarks(d).into_iter().collect() };
    let (was, want) = (marks(from), marks(wanted));
    for (session, on) in want
        .difference(&was)
        .map(|s| (s, true))
        .chain(was.difference(&want).map(|s| (s, false)))
    {
        let before = plan.rebuilt.get_heads();
        let mut attempt = plan.rebuilt.clone();
        if NotesDoc::set_bookmark(&mut attempt, doc_str, session, on, now_ms()).is_ok()
            && fits(&attempt, &plan.doc, &before, limits)
        {
            plan.new_changes += attempt.get_changes(&before).len() as u64;
            plan.rebuilt = attempt;
            plan.redone.push(format!(
                "bookmark on session {session} {}",
                if on { "set" } else { "cleared" }
            ));
        }
    }
    Ok(())
}

/// Keeps what the refused changes that are not redone held, for the person
/// (called before anything is redone: `plan.rebuilt` is still the base).
fn keep_not_redone(plan: &mut Resolution, from: &Automerge, doc_str: &str, why: &str) {
    match plan.doc {
        DocId::Agenda(_) => {
            let tz = AgendaDoc::event(from).1.unwrap_or_else(|| "UTC".to_owned());
            let base = &plan.rebuilt;
            for e in agenda_edits(base, base, from) {
                plan.kept.push(KeptEdit {
                    doc: doc_str.to_owned(),
                    session: session_of(&e),
                    text: describe(&e, &tz),
                    reason: format!("refused by the server: {why}"),
                });
            }
        }
        DocId::Attendee(..) => {
            for session in note_ids(&[from]) {
                let text = NotesDoc::note(from, &session);
                if NotesDoc::note(&plan.rebuilt, &session) != text {
                    plan.kept.push(KeptEdit {
                        doc: doc_str.to_owned(),
                        session: Some(session),
                        text,
                        reason: format!("refused by the server: {why}"),
                    });
                }
            }
        }
        DocId::SeatCounts(_) | DocId::Seats(..) | DocId::Checkins(_) => {}
    }
}
