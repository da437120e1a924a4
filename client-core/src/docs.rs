//! The two document kinds: [`AgendaDoc`] and [`NotesDoc`], as functions over an
//! Automerge document.
//!
//! Containers that several devices could create concurrently (the root maps,
//! and the text of each note) are created by *genesis changes*: changes built
//! deterministically (fixed actor derived from the ids, time 0, fixed deps), so
//! every device makes the byte-identical change and Automerge sees one object
//! instead of two conflicting ones. That is what lets two devices that start
//! the same note offline merge character by character.
//!
//! Agenda fields only organizers write (title, room, times) are plain scalars:
//! last writer wins per field, and the agenda stays a few thousand operations.

use automerge::transaction::{CommitOptions, Transactable as _, Transaction};
use automerge::{ActorId, Automerge, Change, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use lanyard_protocol::SessionId;
use ring::digest::{digest, SHA256};

use crate::error::ClientError;
use crate::model::{
    Announcement, Link, NewSession, Room, Session, SessionDetails, SessionStatus, SessionUpdate,
};

fn derived_actor(parts: &[&str]) -> ActorId {
    let d = digest(&SHA256, parts.join("\u{0}").as_bytes());
    ActorId::from(&d.as_ref()[..16])
}

fn genesis_change(doc_id: &str, maps: &[&str], lists: &[&str]) -> Result<Change, ClientError> {
    genesis_with(&["lanyard-genesis", doc_id], maps, lists)
}

/// A genesis change creating `maps` and `lists` under the root, made by the
/// actor derived from `actor`: byte-identical on every device.
pub(crate) fn genesis_with(
    actor: &[&str],
    maps: &[&str],
    lists: &[&str],
) -> Result<Change, ClientError> {
    let mut d = Automerge::new().with_actor(derived_actor(actor));
    let mut tx = d.transaction();
    for m in maps {
        tx.put_object(ROOT, *m, ObjType::Map)?;
    }
    for l in lists {
        tx.put_object(ROOT, *l, ObjType::List)?;
    }
    tx.commit_with(CommitOptions::default().with_time(0));
    d.get_last_local_change()
        .ok_or_else(|| ClientError::Invalid("empty genesis".into()))
}

pub(crate) fn ensure_applied(doc: &mut Automerge, change: Change) -> Result<(), ClientError> {
    if doc.get_change_by_hash(&change.hash()).is_none() {
        doc.apply_changes([change])?;
    }
    Ok(())
}

pub(crate) fn map_of(doc: &Automerge, parent: &ObjId, key: &str) -> Option<ObjId> {
    match doc.get(parent, key) {
        Ok(Some((Value::Object(_), id))) => Some(id),
        _ => None,
    }
}

fn str_of(doc: &Automerge, obj: &ObjId, key: &str) -> String {
    match doc.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
            ScalarValue::Str(s) => s.to_string(),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

fn int_of(doc: &Automerge, obj: &ObjId, key: &str) -> i64 {
    match doc.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
            ScalarValue::Int(i) => *i,
            ScalarValue::Uint(u) => i64::try_from(*u).unwrap_or(i64::MAX),
            ScalarValue::Timestamp(t) => *t,
            _ => 0,
        },
        _ => 0,
    }
}

fn commit(tx: automerge::transaction::Transaction<'_>, now_ms: i64) {
    tx.commit_with(CommitOptions::default().with_time(now_ms));
}

/// The fields of a session of the agenda, status left out, as a new one.
fn new_session_of(s: &Session) -> NewSession {
    NewSession {
        id: s.id.clone(),
        title: s.title.clone(),
        abstract_text: s.abstract_text.clone(),
        room: s.room.clone(),
        start_unix: s.start_unix,
        end_unix: s.end_unix,
        track: s.track.clone(),
        speakers: s.speakers.clone(),
    }
}

/// The page, links, language and type of a session of the agenda.
fn details_of(s: &Session) -> SessionDetails {
    SessionDetails {
        url: s.url.clone(),
        links: s.links.clone(),
        language: s.language.clone(),
        kind: s.kind.clone(),
    }
}

/// Keys of the optional text fields of a session, with their values: only
/// written when not empty, so agendas without them stay as small as before.
fn optional_fields<'a>(
    url: &'a str,
    language: &'a str,
    kind: &'a str,
) -> [(&'static str, &'a str); 3] {
    [("url", url), ("language", language), ("type", kind)]
}

/// Writes `links` as a new list of `{url, title}` maps (plain scalars; an
/// empty list removes the key).
fn write_links(tx: &mut Transaction<'_>, obj: &ObjId, links: &[Link]) -> Result<(), ClientError> {
    if links.is_empty() {
        tx.delete(obj, "links")?;
        return Ok(());
    }
    let list = tx.put_object(obj, "links", ObjType::List)?;
    for (i, link) in links.iter().enumerate() {
        insert_link(tx, &list, i, link)?;
    }
    Ok(())
}

fn insert_link(
    tx: &mut Transaction<'_>,
    list: &ObjId,
    index: usize,
    link: &Link,
) -> Result<(), ClientError> {
    let map = tx.insert_object(list, index, ObjType::Map)?;
    tx.put(&map, "url", link.url.as_str())?;
    if !link.title.is_empty() {
        tx.put(&map, "title", link.title.as_str())?;
    }
    Ok(())
}

fn read_links(doc: &Automerge, session: &ObjId) -> Vec<Link> {
    let Some(list) = map_of(doc, session, "links") else {
        return Vec::new();
    };
    (0..doc.length(&list))
        .filter_map(|i| match doc.get(&list, i) {
            Ok(Some((Value::Object(_), map))) => Some(Link {
                url: str_of(doc, &map, "url"),
                title: str_of(doc, &map, "title"),
            }),
            _ => None,
        })
        .filter(|link| !link.url.is_empty())
        .collect()
}

fn write_new_session(
    tx: &mut Transaction<'_>,
    sessions: &ObjId,
    s: &NewSession,
    details: &SessionDetails,
) -> Result<(), ClientError> {
    let obj = tx.put_object(sessions, s.id.as_str(), ObjType::Map)?;
    tx.put(&obj, "title", s.title.as_str())?;
    tx.put(&obj, "abstract", s.abstract_text.as_str())?;
    tx.put(&obj, "room", s.room.as_str())?;
    tx.put(&obj, "start", s.start_unix)?;
    tx.put(&obj, "end", s.end_unix)?;
    tx.put(&obj, "track", s.track.as_str())?;
    tx.put(&obj, "status", SessionStatus::Scheduled.as_str())?;
    let list = tx.put_object(&obj, "speakers", ObjType::List)?;
    for (i, sp) in s.speakers.iter().enumerate() {
        tx.insert(&list, i, sp.as_str())?;
    }
    for (key, value) in optional_fields(&details.url, &details.language, &details.kind) {
        if !value.is_empty() {
            tx.put(&obj, key, value)?;
        }
    }
    if !details.links.is_empty() {
        write_links(tx, &obj, &details.links)?;
    }
    Ok(())
}

fn map_of_tx(tx: &Transaction<'_>, parent: &ObjId, key: &str) -> Option<ObjId> {
    match tx.get(parent, key) {
        Ok(Some((Value::Object(_), id))) => Some(id),
        _ => None,
    }
}

/// Writes the fields of `new` and `details` that differ from `was`; true if
/// any did.
fn rewrite_session(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    was: &Session,
    new: &NewSession,
    details: &SessionDetails,
) -> Result<bool, ClientError> {
    let mut any = false;
    for (key, old, value) in [
        ("title", &was.title, &new.title),
        ("abstract", &was.abstract_text, &new.abstract_text),
        ("room", &was.room, &new.room),
        ("track", &was.track, &new.track),
    ] {
        if old != value {
            tx.put(obj, key, value.as_str())?;
            any = true;
        }
    }
    for (key, old, value) in [
        ("start", was.start_unix, new.start_unix),
        ("end", was.end_unix, new.end_unix),
    ] {
        if old != value {
            tx.put(obj, key, value)?;
            any = true;
        }
    }
    if was.speakers != new.speakers {
        let list = tx.put_object(obj, "speakers", ObjType::List)?;
        for (i, sp) in new.speakers.iter().enumerate() {
            tx.insert(&list, i, sp.as_str())?;
        }
        any = true;
    }
    let old = optional_fields(&was.url, &was.language, &was.kind);
    let now = optional_fields(&details.url, &details.language, &details.kind);
    for ((key, old), (_, value)) in old.into_iter().zip(now) {
        if old != value {
            if value.is_empty() {
                tx.delete(obj, key)?;
            } else {
                tx.put(obj, key, value)?;
            }
            any = true;
        }
    }
    if was.links != details.links {
        write_links(tx, obj, &details.links)?;
        any = true;
    }
    let moved =
        was.room != new.room || was.start_unix != new.start_unix || was.end_unix != new.end_unix;
    let status = match (was.status, moved) {
        (_, true) => SessionStatus::Moved,
        (SessionStatus::Cancelled, false) => SessionStatus::Scheduled,
        (s, false) => s,
    };
    if status != was.status {
        tx.put(obj, "status", status.as_str())?;
        any = true;
    }
    Ok(any)
}

/// One edit of the agenda, as large edits (imports, redoing set-aside
/// changes) are written: several edits to a change, several changes to an
/// edit that is too large for one (see [`AgendaDoc::apply_edits`] and, on a
/// device, [`Client::edit_agenda`](crate::Client::edit_agenda)).
#[derive(Debug, Clone)]
pub enum AgendaEdit {
    /// Sets the event's name and/or time zone.
    Event {
        /// The new name, if it changes.
        name: Option<String>,
        /// The new IANA time zone, if it changes.
        time_zone: Option<String>,
    },
    /// Adds a room of unknown capacity.
    NewRoom(String),
    /// Adds a room or sets its capacity.
    Room(Room),
    /// Rewrites the fields of an existing session (as it was read, first)
    /// that differ from its new version (same id) and details: a new room
    /// or time marks it moved, a cancelled session comes back scheduled.
    Rewrite(Session, NewSession, SessionDetails),
    /// Puts an existing session back to exactly the wanted fields and status.
    Restore(Session, Session),
    /// Adds a session.
    Add(NewSession, SessionDetails),
    /// Cancels a session.
    Cancel(String),
    /// Sets a session's seat capacity (0: no reservations).
    Capacity(String, u32),
    /// Posts an announcement.
    Announce(Announcement),
}

/// Bytes an edit adds to a change at most, roughly: its values plus a fixed
/// cost per operation (Automerge's columns compress far below this).
const OP_WEIGHT: usize = 48;

impl AgendaEdit {
    pub(crate) fn weight(&self) -> usize {
        let details = |d: &SessionDetails| {
            d.url.len()
                + d.language.len()
                + d.kind.len()
                + d.links
                    .iter()
                    .map(|l| l.url.len() + l.title.len() + 3 * OP_WEIGHT)
                    .sum::<usize>()
                + 4 * OP_WEIGHT
        };
        // The id is only written when the session is added.
        let fields = |s: &NewSession| {
            s.title.len()
                + s.abstract_text.len()
                + s.room.len()
                + s.track.len()
                + s.speakers
                    .iter()
                    .map(|p| p.len() + OP_WEIGHT)
                    .sum::<usize>()
                + 10 * OP_WEIGHT
        };
        match self {
            AgendaEdit::Event { name, time_zone } => {
                name.as_ref().map_or(0, String::len)
                    + time_zone.as_ref().map_or(0, String::len)
                    + 2 * OP_WEIGHT
            }
            AgendaEdit::NewRoom(r) => r.len() + 2 * OP_WEIGHT,
            AgendaEdit::Room(r) => r.name.len() + 2 * OP_WEIGHT,
            AgendaEdit::Rewrite(_, s, d) => fields(s) + details(d),
            AgendaEdit::Restore(_, s) => fields(&new_session_of(s)) + details(&details_of(s)),
            AgendaEdit::Add(s, d) => s.id.len() + fields(s) + details(d),
            AgendaEdit::Cancel(id) => id.len() + OP_WEIGHT,
            AgendaEdit::Capacity(id, _) => id.len() + OP_WEIGHT,
            AgendaEdit::Announce(a) => a.text.len() + 3 * OP_WEIGHT,
        }
    }
}

/// The edit that adds a session of the agenda (as it is) to another agenda.
pub(crate) fn addition_of(s: &Session) -> AgendaEdit {
    AgendaEdit::Add(new_session_of(s), details_of(s))
}

/// Writes the fields of `wanted` that differ from `was`, status included; true if any did.
fn restore_session(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    was: &Session,
    wanted: &Session,
) -> Result<bool, ClientError> {
    let mut any = rewrite_session(tx, obj, was, &new_session_of(wanted), &details_of(wanted))?;
    if was.capacity != wanted.capacity {
        tx.put(obj, "capacity", i64::from(wanted.capacity))?;
        any = true;
    }
    // rewrite_session derives the status from the move; the wanted one wins.
    if any || was.status != wanted.status {
        tx.put(obj, "status", wanted.status.as_str())?;
        any = true;
    }
    Ok(any)
}

/// The agenda of one event.
pub struct AgendaDoc;

impl AgendaDoc {
    /// The genesis change of the agenda `doc_id`.
    pub fn genesis(doc_id: &str) -> Result<Change, ClientError> {
        genesis_change(doc_id, &["event", "rooms", "sessions"], &["announcements"])
    }

    pub(crate) fn ensure(doc: &mut Automerge, doc_id: &str) -> Result<(), ClientError> {
        ensure_applied(doc, Self::genesis(doc_id)?)
    }

    fn root_obj(doc: &Automerge, key: &str) -> Result<ObjId, ClientError> {
        map_of(doc, &ROOT, key).ok_or_else(|| ClientError::Invalid(format!("agenda has no {key}")))
    }

    /// Event name and time zone (`None` where never set).
    pub fn event(doc: &Automerge) -> (Option<String>, Option<String>) {
        let Some(ev) = map_of(doc, &ROOT, "event") else {
            return (None, None);
        };
        let name = str_of(doc, &ev, "name");
        let tz = str_of(doc, &ev, "time_zone");
        (
            (!name.is_empty()).then_some(name),
            (!tz.is_empty()).then_some(tz),
        )
    }

    /// Sets the event's name and time zone.
    pub fn set_event(
        doc: &mut Automerge,
        doc_id: &str,
        name: &str,
        tz: &str,
        now_ms: i64,
    ) -> Result<(), ClientError> {
        Self::ensure(doc, doc_id)?;
        let ev = Self::root_obj(doc, "event")?;
        let mut tx = doc.transaction();
        tx.put(&ev, "name", name)?;
        tx.put(&ev, "time_zone", tz)?;
        commit(tx, now_ms);
        Ok(())
    }

    /// All sessions, sorted by start, room and id.
    pub fn sessions(doc: &Automerge) -> Vec<Session> {
        let Some(sessions) = map_of(doc, &ROOT, "sessions") else {
            return Vec::new();
        };
        let mut out: Vec<Session> = doc
            .keys(&sessions)
            .filter_map(|id| Self::read_session(doc, &sessions, &id))
            .collect();
        out.sort_by(|a, b| (a.start_unix, &a.room, &a.id).cmp(&(b.start_unix, &b.room, &b.id)));
        out
    }

    /// One session.
    pub fn session(doc: &Automerge, id: &str) -> Option<Session> {
        let sessions = map_of(doc, &ROOT, "sessions")?;
        Self::read_session(doc, &sessions, id)
    }

    fn read_session(doc: &Automerge, sessions: &ObjId, id: &str) -> Option<Session> {
        let s = map_of(doc, sessions, id)?;
        let speakers = match map_of(doc, &s, "speakers") {
            Some(list) => (0..doc.length(&list))
                .filter_map(|i| match doc.get(&list, i) {
                    Ok(Some((v, _))) => v.as_str().map(str::to_owned),
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
        };
        Some(Session {
            id: id.to_owned(),
            title: str_of(doc, &s, "title"),
            abstract_text: str_of(doc, &s, "abstract"),
            room: str_of(doc, &s, "room"),
            start_unix: int_of(doc, &s, "start"),
            end_unix: int_of(doc, &s, "end"),
            track: str_of(doc, &s, "track"),
            speakers,
            status: SessionStatus::parse(&str_of(doc, &s, "status")),
            url: str_of(doc, &s, "url"),
            links: read_links(doc, &s),
            language: str_of(doc, &s, "language"),
            kind: str_of(doc, &s, "type"),
            capacity: u32::try_from(int_of(doc, &s, "capacity")).unwrap_or(0),
        })
    }

    /// Adds a session.
    pub fn add_session(
        doc: &mut Automerge,
        doc_id: &str,
        s: &NewSession,
        now_ms: i64,
    ) -> Result<(), ClientError> {
        if s.end_unix < s.start_unix {
            return Err(ClientError::Invalid(format!(
                "session {} ends before it starts",
                s.id
            )));
        }
        Self::ensure(doc, doc_id)?;
        if Self::session(doc, &s.id).is_some() {
            return Err(ClientError::SessionExists(s.id.clone()));
        }
        let sessions = Self::root_obj(doc, "sessions")?;
        let mut tx = doc.transaction();
        write_new_session(&mut tx, &sessions, s, &SessionDetails::default())?;
        commit(tx, now_ms);
        Ok(())
    }

    /// Writes `edits` as changes, each closed once the values it writes reach
    /// about `budget` bytes (so a few edits stay one small change); `done`
    /// is told of each edit and whether it wrote anything. Returns the
    /// changes made, in order (none when nothing differed). The agenda must
    /// exist in `doc` (its genesis applied). The caller checks the real
    /// sizes against the server's limits.
    pub fn apply_edits(
        doc: &mut Automerge,
        edits: &[AgendaEdit],
        budget: usize,
        now_ms: i64,
        done: &mut dyn FnMut(&AgendaEdit, bool),
    ) -> Result<Vec<automerge::ChangeHash>, ClientError> {
        let sessions = Self::root_obj(doc, "sessions")?;
        let rooms = Self::root_obj(doc, "rooms")?;
        let ev = Self::root_obj(doc, "event")?;
        let announcements = Self::root_obj(doc, "announcements")?;
        let mut hashes = Vec::new();
        let mut rest = edits;
        while !rest.is_empty() {
            let mut tx = doc.transaction();
            let mut written = 0usize;
            while let Some((edit, tail)) = rest.split_first() {
                if written > 0 && written + edit.weight() > budget {
                    break;
                }
                rest = tail;
                let changed = match edit {
                    AgendaEdit::Event { name, time_zone } => {
                        if let Some(n) = name {
                            tx.put(&ev, "name", n.as_str())?;
                        }
                        if let Some(z) = time_zone {
                            tx.put(&ev, "time_zone", z.as_str())?;
                        }
                        true
                    }
                    AgendaEdit::NewRoom(room) => {
                        let r = tx.put_object(&rooms, room.as_str(), ObjType::Map)?;
                        tx.put(&r, "capacity", 0i64)?;
                        true
                    }
                    AgendaEdit::Room(room) => {
                        let r = match map_of_tx(&tx, &rooms, &room.name) {
                            Some(r) => r,
                            None => tx.put_object(&rooms, room.name.as_str(), ObjType::Map)?,
                        };
                        tx.put(&r, "capacity", i64::from(room.capacity))?;
                        true
                    }
                    AgendaEdit::Rewrite(was, new, details) => {
                        match map_of_tx(&tx, &sessions, &was.id) {
                            Some(obj) => rewrite_session(&mut tx, &obj, was, new, details)?,
                            None => false,
                        }
                    }
                    AgendaEdit::Restore(was, wanted) => match map_of_tx(&tx, &sessions, &was.id) {
                        Some(obj) => restore_session(&mut tx, &obj, was, wanted)?,
                        None => false,
                    },
                    AgendaEdit::Add(s, d) => {
                        write_new_session(&mut tx, &sessions, s, d)?;
                        true
                    }
                    AgendaEdit::Cancel(id) => match map_of_tx(&tx, &sessions, id) {
                        Some(obj) => {
                            tx.put(&obj, "status", SessionStatus::Cancelled.as_str())?;
                            true
                        }
                        None => false,
                    },
                    AgendaEdit::Capacity(id, n) => match map_of_tx(&tx, &sessions, id) {
                        Some(obj) => {
                            let was = match tx.get(&obj, "capacity")? {
                                Some((Value::Scalar(v), _)) => v.as_i64(),
                                _ => None,
                            };
                            let n = i64::from(*n);
                            if was != Some(n) {
                                tx.put(&obj, "capacity", n)?;
                            }
                            was != Some(n)
                        }
                        None => false,
                    },
                    AgendaEdit::Announce(a) => {
                        let len = tx.length(&announcements);
                        let o = tx.insert_object(&announcements, len, ObjType::Map)?;
                        tx.put(&o, "text", a.text.as_str())?;
                        tx.put(&o, "at", a.at_unix)?;
                        true
                    }
                };
                if changed {
                    written += edit.weight();
                }
                done(edit, changed);
            }
            let (hash, _) = tx.commit_with(CommitOptions::default().with_time(now_ms));
            hashes.extend(hash);
        }
        Ok(hashes)
    }

    fn session_obj(doc: &Automerge, id: &str) -> Result<ObjId, ClientError> {
        map_of(doc, &ROOT, "sessions")
            .and_then(|s| map_of(doc, &s, id))
            .ok_or_else(|| ClientError::NoSuchSession(id.to_owned()))
    }

    /// Changes title, abstract, track or speakers.
    pub fn update_session(
        doc: &mut Automerge,
        id: &str,
        u: &SessionUpdate,
        now_ms: i64,
    ) -> Result<(), ClientError> {
        let obj = Self::session_obj(doc, id)?;
        let mut tx = doc.transaction();
        if let Some(t) = &u.title {
            tx.put(&obj, "title", t.as_str())?;
        }
        if let Some(a) = &u.abstract_text {
            tx.put(&obj, "abstract", a.as_str())?;
        }
        if let Some(t) = &u.track {
            tx.put(&obj, "track", t.as_str())?;
        }
        if let Some(sp) = &u.speakers {
            let list = tx.put_object(&obj, "speakers", ObjType::List)?;
            for (i, s) in sp.iter().enumerate() {
                tx.insert(&list, i, s.as_str())?;
            }
        }
        commit(tx, now_ms);
        Ok(())
    }

    /// Moves a session to another room and/or time; marks it moved.
    pub fn move_session(
        doc: &mut Automerge,
        id: &str,
        room: Option<&str>,
        times: Option<(i64, i64)>,
        now_ms: i64,
    ) -> Result<(), ClientError> {
        let obj = Self::session_obj(doc, id)?;
        if let Some((s, e)) = times {
            if e < s {
                return Err(ClientError::Invalid(format!(
                    "session {id} would end before it starts"
                )));
            }
        }
        let mut tx = doc.transaction();
        if let Some(r) = room {
            tx.put(&obj, "room", r)?;
        }
        if let Some((s, e)) = times {
            tx.put(&obj, "start", s)?;
            tx.put(&obj, "end", e)?;
        }
        tx.put(&obj, "status", SessionStatus::Moved.as_str())?;
        commit(tx, now_ms);
        Ok(())
    }

    /// Adds a link at the end of a session's links (a link with the same URL
    /// is replaced, so adding one twice keeps one).
    pub fn add_link(
        doc: &mut Automerge,
        id: &str,
        link: &Link,
        now_ms: i64,
    ) -> Result<(), ClientError> {
        let obj = Self::session_obj(doc, id)?;
        let mut links = read_links(doc, &obj);
        let mut tx = doc.transaction();
        match links.iter().position(|l| l.url == link.url) {
            Some(i) => {
                links[i] = link.clone();
                write_links(&mut tx, &obj, &links)?;
            }
            None => match map_of_tx(&tx, &obj, "links") {
                Some(list) => {
                    let end = tx.length(&list);
                    insert_link(&mut tx, &list, end, link)?;
                }
                None => write_links(&mut tx, &obj, std::slice::from_ref(link))?,
            },
        }
        commit(tx, now_ms);
        Ok(())
    }

    /// Cancels a session.
    pub fn cancel_session(doc: &mut Automerge, id: &str, now_ms: i64) -> Result<(), ClientError> {
        let obj = Self::session_obj(doc, id)?;
        let mut tx = doc.transaction();
        tx.put(&obj, "status", SessionStatus::Cancelled.as_str())?;
        commit(tx, now_ms);
        Ok(())
    }

    /// Rooms, by name.
    pub fn rooms(doc: &Automerge) -> Vec<Room> {
        let Some(rooms) = map_of(doc, &ROOT, "rooms") else {
            return Vec::new();
        };
        doc.keys(&rooms)
            .filter_map(|name| {
                let r = map_of(doc, &rooms, &name)?;
                Some(Room {
                    capacity: u32::try_from(int_of(doc, &r, "capacity")).unwrap_or(0),
                    name,
                })
            })
            .collect()
    }

    /// Adds or updates a room.
    pub fn put_room(
        doc: &mut Automerge,
        doc_id: &str,
        room: &Room,
        now_ms: i64,
    ) -> Result<(), ClientError> {
        Self::ensure(doc, doc_id)?;
        let rooms = Self::root_obj(doc, "rooms")?;
        let existing = map_of(doc, &rooms, &room.name);
        let mut tx = doc.transaction();
        let r = match existing {
            Some(r) => r,
            None => tx.put_object(&rooms, room.name.as_str(), ObjType::Map)?,
        };
        tx.put(&r, "capacity", i64::from(room.capacity))?;
        commit(tx, now_ms);
        Ok(())
    }

    /// Announcements, oldest first.
    pub fn announcements(doc: &Automerge) -> Vec<Announcement> {
        let Some(list) = map_of(doc, &ROOT, "announcements") else {
            return Vec::new();
        };
        let items: Vec<ObjId> = (0..doc.length(&list))
            .filter_map(|i| match doc.get(&list, i) {
                Ok(Some((Value::Object(_), id))) => Some(id),
                _ => None,
            })
            .collect();
        items
            .iter()
            .map(|a| Announcement {
                text: str_of(doc, a, "text"),
                at_unix: int_of(doc, a, "at"),
            })
            .collect()
    }

    /// Posts an announcement.
    pub fn announce(
        doc: &mut Automerge,
        doc_id: &str,
        text: &str,
        now_ms: i64,
    ) -> Result<(), ClientError> {
        Self::ensure(doc, doc_id)?;
        let list = Self::root_obj(doc, "announcements")?;
        let len = doc.length(&list);
        let mut tx = doc.transaction();
        let a = tx.insert_object(&list, len, ObjType::Map)?;
        tx.put(&a, "text", text)?;
        tx.put(&a, "at", now_ms / 1000)?;
        commit(tx, now_ms);
        Ok(())
    }
}

/// The agenda while a large organizer edit (such as a schedule import) is
/// planned and written: what [`Client::edit_agenda`](crate::Client::edit_agenda)
/// hands to each attempt. It reads the agenda as it is, and writes
/// [`AgendaEdit`]s in changes closed at the attempt's budget.
pub struct AgendaEditor<'a> {
    doc: &'a mut Automerge,
    budget: usize,
    now_ms: i64,
}

/// What [`AgendaEditor::apply`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppliedEdits {
    /// How many changes the edits were written as (0 when nothing differed).
    pub changes: u64,
    /// Bytes of those Automerge changes (0 when nothing differed).
    pub change_bytes: u64,
}

impl<'a> AgendaEditor<'a> {
    /// An editor of the agenda in `doc`, which must exist (genesis applied).
    pub(crate) fn new(doc: &'a mut Automerge, budget: usize, now_ms: i64) -> Self {
        AgendaEditor {
            doc,
            budget,
            now_ms,
        }
    }

    /// All sessions, sorted by start, room and id.
    pub fn sessions(&self) -> Vec<Session> {
        AgendaDoc::sessions(self.doc)
    }

    /// Rooms, by name.
    pub fn rooms(&self) -> Vec<Room> {
        AgendaDoc::rooms(self.doc)
    }

    /// Event name and time zone (`None` where never set).
    pub fn event(&self) -> (Option<String>, Option<String>) {
        AgendaDoc::event(self.doc)
    }

    /// Writes `edits` as changes each closed once the values written reach
    /// this attempt's budget (see [`AgendaDoc::apply_edits`]); `done` is
    /// told of each edit and whether it wrote anything. A session added
    /// under an invalid id, or ending before it starts, is an error and
    /// nothing is written.
    pub fn apply(
        &mut self,
        edits: &[AgendaEdit],
        done: &mut dyn FnMut(&AgendaEdit, bool),
    ) -> Result<AppliedEdits, ClientError> {
        for edit in edits {
            if let AgendaEdit::Add(s, _) = edit {
                SessionId::new(s.id.as_str())?;
                if s.end_unix < s.start_unix {
                    return Err(ClientError::Invalid(format!(
                        "session {} ends before it starts",
                        s.id
                    )));
                }
            }
        }
        let hashes = AgendaDoc::apply_edits(self.doc, edits, self.budget, self.now_ms, done)?;
        Ok(AppliedEdits {
            changes: hashes.len() as u64,
            change_bytes: hashes
                .iter()
                .filter_map(|h| self.doc.get_change_by_hash(h))
                .map(|c| c.raw_bytes().len() as u64)
                .sum(),
        })
    }
}

/// An attendee's private document: notes and bookmarks.
pub struct NotesDoc;

impl NotesDoc {
    /// The genesis change of the attendee document `doc_id`.
    pub fn genesis(doc_id: &str) -> Result<Change, ClientError> {
        genesis_change(doc_id, &["notes", "bookmarks"], &[])
    }

    fn root_obj(doc: &mut Automerge, doc_id: &str, key: &str) -> Result<ObjId, ClientError> {
        ensure_applied(doc, Self::genesis(doc_id)?)?;
        map_of(doc, &ROOT, key)
            .ok_or_else(|| ClientError::Invalid(format!("attendee document has no {key}")))
    }

    /// The text object of a note, created by its own genesis change if absent.
    fn note_obj(doc: &mut Automerge, doc_id: &str, session: &str) -> Result<ObjId, ClientError> {
        let genesis = Self::genesis(doc_id)?;
        let notes = Self::root_obj(doc, doc_id, "notes")?;
        if let Some(obj) = map_of(doc, &notes, session) {
            return Ok(obj);
        }
        let mut d = Automerge::new();
        d.apply_changes([genesis])?;
        d.set_actor(derived_actor(&["lanyard-note", doc_id, session]));
        let notes_in_d = map_of(&d, &ROOT, "notes")
            .ok_or_else(|| ClientError::Invalid("genesis without notes".into()))?;
        let mut tx = d.transaction();
        tx.put_object(&notes_in_d, session, ObjType::Text)?;
        tx.commit_with(CommitOptions::default().with_time(0));
        let change = d
            .get_last_local_change()
            .ok_or_else(|| ClientError::Invalid("empty note genesis".into()))?;
        ensure_applied(doc, change)?;
        map_of(doc, &notes, session).ok_or_else(|| ClientError::Invalid("note not created".into()))
    }

    /// The note of a session ("" if none).
    pub fn note(doc: &Automerge, session: &str) -> String {
        map_of(doc, &ROOT, "notes")
            .and_then(|n| map_of(doc, &n, session))
            .and_then(|t| doc.text(&t).ok())
            .unwrap_or_default()
    }

    /// Ids of the sessions that have a note (possibly empty).
    pub fn note_ids(doc: &Automerge) -> Vec<String> {
        map_of(doc, &ROOT, "notes").map_or_else(Vec::new, |n| doc.keys(&n).collect())
    }

    /// All non-empty notes, by session id.
    pub fn notes(doc: &Automerge) -> Vec<(String, String)> {
        let Some(notes) = map_of(doc, &ROOT, "notes") else {
            return Vec::new();
        };
        doc.keys(&notes)
            .map(|k| {
                let text = Self::note(doc, &k);
                (k, text)
            })
            .filter(|(_, t)| !t.is_empty())
            .collect()
    }

    /// Splices a note: delete `delete` characters at `pos`, insert `insert`.
    pub fn splice(
        doc: &mut Automerge,
        doc_id: &str,
        session: &str,
        pos: usize,
        delete: usize,
        insert: &str,
        now_ms: i64,
    ) -> Result<(), ClientError> {
        let obj = Self::note_obj(doc, doc_id, session)?;
        let len = doc.length(&obj);
        if pos > len || pos + delete > len {
            return Err(ClientError::Invalid(format!(
                "splice {pos}+{delete} is outside the note of {len} characters"
            )));
        }
        let del =
            isize::try_from(delete).map_err(|_| ClientError::Invalid("delete too large".into()))?;
        let mut tx = doc.transaction();
        tx.splice_text(&obj, pos, del, insert)?;
        commit(tx, now_ms);
        Ok(())
    }

    /// Replaces the whole note, as the minimal splice between old and new text
    /// (common prefix and suffix are kept, so concurrent edits elsewhere
    /// survive). The inserted text goes in changes of at most `piece` bytes
    /// of text each, so a long note fits the server's change limit.
    pub fn set(
        doc: &mut Automerge,
        doc_id: &str,
        session: &str,
        text: &str,
        piece: usize,
        now_ms: i64,
    ) -> Result<(), ClientError> {
        let old: Vec<char> = Self::note(doc, session).chars().collect();
        let new: Vec<char> = text.chars().collect();
        let prefix = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
        let max_suffix = old.len().min(new.len()) - prefix;
        let suffix = old
            .iter()
            .rev()
            .zip(new.iter().rev())
            .take(max_suffix)
            .take_while(|(a, b)| a == b)
            .count();
        let delete = old.len() - prefix - suffix;
        let insert: String = new[prefix..new.len() - suffix].iter().collect();
        if delete == 0 && insert.is_empty() && map_of(doc, &ROOT, "notes").is_some() {
            return Ok(());
        }
        Self::splice_in_pieces(doc, doc_id, session, prefix, delete, &insert, piece, now_ms)
    }

    /// [`NotesDoc::splice`], with the inserted text split into changes of at
    /// most `piece` bytes of text (the deletion goes with the first).
    #[allow(clippy::too_many_arguments)]
    pub fn splice_in_pieces(
        doc: &mut Automerge,
        doc_id: &str,
        session: &str,
        pos: usize,
        delete: usize,
        insert: &str,
        piece: usize,
        now_ms: i64,
    ) -> Result<(), ClientError> {
        let mut at = pos;
        let mut delete = delete;
        let mut rest = insert;
        loop {
            let mut cut = rest.len().min(piece.max(4));
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (head, tail) = rest.split_at(cut);
            Self::splice(doc, doc_id, session, at, delete, head, now_ms)?;
            at += head.chars().count();
            delete = 0;
            rest = tail;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Appends to a note, in changes of at most `piece` bytes of text.
    pub fn append(
        doc: &mut Automerge,
        doc_id: &str,
        session: &str,
        text: &str,
        piece: usize,
        now_ms: i64,
    ) -> Result<(), ClientError> {
        let len = Self::note(doc, session).chars().count();
        Self::splice_in_pieces(doc, doc_id, session, len, 0, text, piece, now_ms)
    }

    /// Bookmarked session ids, sorted.
    pub fn bookmarks(doc: &Automerge) -> Vec<String> {
        let Some(b) = map_of(doc, &ROOT, "bookmarks") else {
            return Vec::new();
        };
        doc.keys(&b)
            .filter(|k| matches!(doc.get(&b, k.as_str()), Ok(Some((Value::Scalar(v), _))) if matches!(v.as_ref(), ScalarValue::Boolean(true))))
            .collect()
    }

    /// Sets or clears a bookmark.
    pub fn set_bookmark(
        doc: &mut Automerge,
        doc_id: &str,
        session: &str,
        on: bool,
        now_ms: i64,
    ) -> Result<(), ClientError> {
        let b = Self::root_obj(doc, doc_id, "bookmarks")?;
        let mut tx = doc.transaction();
        tx.put(&b, session, on)?;
        commit(tx, now_ms);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DOC: &str = "attendee/conf/ann";

    fn device(n: u8) -> Automerge {
        Automerge::new().with_actor(ActorId::from(&[n; 16][..]))
    }

    fn sync(a: &mut Automerge, b: &mut Automerge) {
        a.merge(b).unwrap();
        b.merge(a).unwrap();
    }

    #[test]
    fn two_devices_starting_the_same_note_offline_keep_both_texts() {
        let mut a = device(1);
        let mut b = device(2);
        NotesDoc::set(&mut a, DOC, "s1", "alpha", 1024, 1).unwrap();
        NotesDoc::set(&mut b, DOC, "s1", "beta", 1024, 2).unwrap();
        sync(&mut a, &mut b);
        let text = NotesDoc::note(&a, "s1");
        assert!(text.contains("alpha") && text.contains("beta"), "{text}");
        assert_eq!(text, NotesDoc::note(&b, "s1"));
    }

    #[test]
    fn replacing_a_note_is_a_minimal_splice() {
        let mut a = device(1);
        NotesDoc::set(&mut a, DOC, "s", "hello world", 1024, 1).unwrap();
        let mut b = a.fork().with_actor(ActorId::from(&[2u8; 16][..]));
        // a rewrites the end, b edits the start concurrently: both survive.
        NotesDoc::set(&mut a, DOC, "s", "hello there world!", 1024, 2).unwrap();
        NotesDoc::set(&mut b, DOC, "s", "Hello world", 1024, 3).unwrap();
        sync(&mut a, &mut b);
        assert_eq!(NotesDoc::note(&a, "s"), "Hello there world!");
        // Setting the same text makes no change.
        let heads = a.get_heads();
        NotesDoc::set(&mut a, DOC, "s", "Hello there world!", 1024, 4).unwrap();
        assert_eq!(a.get_heads(), heads);
    }

    #[test]
    fn splice_outside_the_note_is_an_error() {
        let mut a = device(1);
        NotesDoc::append(&mut a, DOC, "s", "abc", 1024, 1).unwrap();
        NotesDoc::append(&mut a, DOC, "s", "def", 1024, 1).unwrap();
        assert_eq!(NotesDoc::note(&a, "s"), "abcdef");
        assert!(NotesDoc::splice(&mut a, DOC, "s", 5, 3, "", 1).is_err());
        NotesDoc::splice(&mut a, DOC, "s", 1, 2, "XY", 1).unwrap();
        assert_eq!(NotesDoc::note(&a, "s"), "aXYdef");
    }

    #[test]
    fn bookmarks_merge() {
        let mut a = device(1);
        let mut b = device(2);
        NotesDoc::set_bookmark(&mut a, DOC, "s1", true, 1).unwrap();
        NotesDoc::set_bookmark(&mut b, DOC, "s2", true, 1).unwrap();
        NotesDoc::set_bookmark(&mut b, DOC, "s3", true, 1).unwrap();
        NotesDoc::set_bookmark(&mut b, DOC, "s3", false, 2).unwrap();
        sync(&mut a, &mut b);
        assert_eq!(NotesDoc::bookmarks(&a), vec!["s1", "s2"]);
    }

    #[test]
    fn agenda_edits() {
        let id = "agenda/conf";
        let mut a = device(1);
        AgendaDoc::set_event(&mut a, id, "Conf", "Europe/Berlin", 1).unwrap();
        AgendaDoc::put_room(
            &mut a,
            id,
            &Room {
                name: "Hall A".into(),
                capacity: 300,
            },
            1,
        )
        .unwrap();
        let s = NewSession {
            id: "t1".into(),
            title: "Talk".into(),
            room: "Hall A".into(),
            start_unix: 100,
            end_unix: 200,
            speakers: vec!["Ann".into(), "Bob".into()],
            ..Default::default()
        };
        AgendaDoc::add_session(&mut a, id, &s, 1).unwrap();
        assert!(matches!(
            AgendaDoc::add_session(&mut a, id, &s, 1),
            Err(ClientError::SessionExists(_))
        ));
        AgendaDoc::move_session(&mut a, "t1", Some("Hall B"), Some((300, 400)), 2).unwrap();
        let got = AgendaDoc::session(&a, "t1").unwrap();
        assert_eq!(
            (got.room.as_str(), got.start_unix, got.end_unix, got.status),
            ("Hall B", 300, 400, SessionStatus::Moved)
        );
        assert_eq!(got.speakers, vec!["Ann", "Bob"]);
        AgendaDoc::cancel_session(&mut a, "t1", 3).unwrap();
        assert_eq!(
            AgendaDoc::session(&a, "t1").unwrap().status,
            SessionStatus::Cancelled
        );
        assert!(matches!(
            AgendaDoc::cancel_session(&mut a, "nope", 3),
            Err(ClientError::NoSuchSession(_))
        ));
        AgendaDoc::announce(&mut a, id, "Lunch moved", 5000).unwrap();
        assert_eq!(
            AgendaDoc::announcements(&a),
            vec![Announcement {
                text: "Lunch moved".into(),
                at_unix: 5
            }]
        );
        assert_eq!(
            AgendaDoc::rooms(&a),
            vec![Room {
                name: "Hall A".into(),
                capacity: 300
            }]
        );
        assert_eq!(
            AgendaDoc::event(&a),
            (Some("Conf".into()), Some("Europe/Berlin".into()))
        );
        // Two organizers creating the agenda concurrently share the containers.
        let mut b = device(2);
        AgendaDoc::add_session(
            &mut b,
            id,
            &NewSession {
                id: "t2".into(),
                ..s.clone()
            },
            1,
        )
        .unwrap();
        sync(&mut a, &mut b);
        assert_eq!(AgendaDoc::sessions(&a).len(), 2);
    }
}
