//! The agenda's read model: what the agenda shows (event, rooms, sessions,
//! announcements) as plain values beside the Automerge document.
//!
//! Reading 943 sessions out of an Automerge document takes tens of
//! milliseconds, and loading the document as many again; a phone is several
//! times slower. So the device keeps an [`AgendaView`]: built once from the
//! document, kept up to date from the patches of each change (only the
//! sessions a change touches are read again), and stored beside the document
//! with a *stamp* (a digest of the stored document's bytes). When the
//! device opens and the stamp matches, the agenda is listed from the view
//! and the document is loaded only when something needs it (an edit, a
//! sync). When it does not match (the device stopped before the view was
//! written), the document is loaded and the view rebuilt: the view is a
//! cache, never the source of truth.

use std::collections::{BTreeSet, HashMap};

use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::{ActorId, Automerge, ChangeHash, ObjId, ReadDoc as _, ROOT};
use ring::digest::SHA256;
use serde::{Deserialize, Serialize};

use crate::docs::AgendaDoc;
use crate::model::{Announcement, Room, Session};

/// The agenda as plain values.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AgendaView {
    /// Digest of the stored document this view was made from (see [`stamp_of`]).
    pub(crate) stamp: Vec<u8>,
    /// The document's heads this view shows.
    pub(crate) heads: Vec<ChangeHash>,
    pub(crate) name: Option<String>,
    pub(crate) time_zone: Option<String>,
    pub(crate) rooms: Vec<Room>,
    sessions: HashMap<String, Session>,
    pub(crate) announcements: Vec<Announcement>,
    /// Built at the first update (not stored).
    #[serde(skip)]
    index: Option<ObjIndex>,
}

impl PartialEq for AgendaView {
    /// Equal when they show the same agenda (stamps and indexes aside).
    fn eq(&self, other: &Self) -> bool {
        (
            &self.name,
            &self.time_zone,
            &self.rooms,
            &self.sessions,
            &self.announcements,
        ) == (
            &other.name,
            &other.time_zone,
            &other.rooms,
            &other.sessions,
            &other.announcements,
        )
    }
}

/// What a change did to the agenda, for alerts: each session it touched
/// (before, after), the announcements it added, and whether the agenda had
/// no session before (a first download).
#[derive(Debug, Default)]
pub(crate) struct ViewChange {
    pub(crate) sessions: Vec<(Option<Session>, Session)>,
    pub(crate) announcements: Vec<Announcement>,
    pub(crate) was_empty: bool,
    /// Whether the whole view was read again (the change touched something
    /// the index did not know); else only what the change touched was.
    pub(crate) rebuilt: bool,
}

/// The layout of a stored view and how sessions are read: a new version
/// makes every stored view stale once (rebuilt at the next open).
const VIEW_FORMAT: &[u8] = b"lanyard-agenda-view/1";

/// The stamp of stored document bytes (and of the view format).
pub(crate) fn stamp_of(bytes: &[u8]) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&SHA256);
    ctx.update(VIEW_FORMAT);
    ctx.update(bytes);
    ctx.finish().as_ref().to_vec()
}

/// The part of the agenda an Automerge object belongs to.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Sessions,
    Session(String),
    Rooms,
    Event,
    Announcements,
}

/// Which part each object of the agenda belongs to, by object id (the id of
/// the operation that made it), so that a change's operations say what they
/// touch without walking the document.
#[derive(Debug, Clone, Default)]
struct ObjIndex(HashMap<(u64, ActorId), Part>);

fn key_of(id: &ObjId) -> Option<(u64, ActorId)> {
    match id {
        ObjId::Id(counter, actor, _) => Some((*counter, actor.clone())),
        ObjId::Root => None,
    }
}

fn obj_at(doc: &Automerge, parent: &ObjId, key: &str) -> Option<ObjId> {
    match doc.get(parent, key) {
        Ok(Some((automerge::Value::Object(_), id))) => Some(id),
        _ => None,
    }
}

impl ObjIndex {
    fn build(doc: &Automerge) -> ObjIndex {
        let mut index = ObjIndex::default();
        for (key, part) in [
            ("sessions", Part::Sessions),
            ("rooms", Part::Rooms),
            ("event", Part::Event),
            ("announcements", Part::Announcements),
        ] {
            let Some(obj) = obj_at(doc, &ROOT, key) else {
                continue;
            };
            match part {
                Part::Sessions => {
                    for id in doc.keys(&obj) {
                        index.add_session(doc, &obj, &id);
                    }
                }
                Part::Rooms => {
                    for name in doc.keys(&obj) {
                        index.add(obj_at(doc, &obj, &name), Part::Rooms);
                    }
                }
                Part::Announcements => {
                    for i in 0..doc.length(&obj) {
                        if let Ok(Some((automerge::Value::Object(_), a))) = doc.get(&obj, i) {
                            index.add(Some(a), Part::Announcements);
                        }
                    }
                }
                _ => {}
            }
            index.add(Some(obj), part);
        }
        index
    }

    fn add(&mut self, obj: Option<ObjId>, part: Part) {
        if let Some(k) = obj.as_ref().and_then(key_of) {
            self.0.insert(k, part);
        }
    }

    /// Indexes a session's map, its speakers list, its links list and links.
    fn add_session(&mut self, doc: &Automerge, sessions: &ObjId, id: &str) {
        let part = || Part::Session(id.to_owned());
        if let Some(s) = obj_at(doc, sessions, id) {
            self.add(obj_at(doc, &s, "speakers"), part());
            if let Some(links) = obj_at(doc, &s, "links") {
                for i in 0..doc.length(&links) {
                    if let Ok(Some((automerge::Value::Object(_), l))) = doc.get(&links, i) {
                        self.add(Some(l), part());
                    }
                }
                self.add(Some(links), part());
            }
            self.add(Some(s), part());
        }
    }
}

/// Which parts of the agenda some changes touch.
#[derive(Default)]
struct Touched {
    all: bool,
    event: bool,
    rooms: bool,
    announcements: bool,
    sessions: BTreeSet<String>,
}

impl Touched {
    fn mark(&mut self, part: &Part) {
        match part {
            Part::Sessions => self.all = true,
            Part::Session(id) => {
                self.sessions.insert(id.clone());
            }
            Part::Rooms => self.rooms = true,
            Part::Event => self.event = true,
            Part::Announcements => self.announcements = true,
        }
    }
}

/// What the changes after `before` touch, from their operations. An
/// operation on an object the index does not know (or on the root) makes
/// the view be read again whole: never wrong, only slower.
fn touched(doc: &Automerge, before: &[ChangeHash], index: &mut ObjIndex) -> Touched {
    let mut t = Touched::default();
    if before.is_empty() {
        t.all = true;
        return t;
    }
    for change in doc.get_changes(before) {
        let expanded = change.decode();
        let start = expanded.start_op.get();
        for (i, op) in expanded.operations.iter().enumerate() {
            let part = match &op.obj {
                ObjectId::Root => None,
                ObjectId::Id(OpId(counter, actor)) => index.0.get(&(*counter, actor.clone())),
            };
            let part = match (part, &op.key) {
                (Some(Part::Sessions), Key::Map(id)) => Part::Session(id.to_string()),
                (Some(p), _) => p.clone(),
                (None, _) => {
                    t.all = true;
                    return t;
                }
            };
            t.mark(&part);
            if matches!(op.action, OpType::Make(_)) {
                index
                    .0
                    .insert((start + i as u64, expanded.actor_id.clone()), part);
            }
        }
    }
    t
}

/// The announcements in `now` that `shown` did not have (as a multiset:
/// a concurrent post may land before one already shown).
fn new_announcements(shown: &[Announcement], now: &[Announcement]) -> Vec<Announcement> {
    let mut seen: HashMap<(&str, i64), usize> = HashMap::new();
    for a in shown {
        *seen.entry((a.text.as_str(), a.at_unix)).or_default() += 1;
    }
    now.iter()
        .filter(|a| match seen.get_mut(&(a.text.as_str(), a.at_unix)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .cloned()
        .collect()
}

impl AgendaView {
    /// The view of `doc`.
    pub(crate) fn build(doc: &Automerge) -> AgendaView {
        let (name, time_zone) = AgendaDoc::event(doc);
        AgendaView {
            stamp: Vec::new(),
            heads: doc.get_heads(),
            name,
            time_zone,
            rooms: AgendaDoc::rooms(doc),
            sessions: AgendaDoc::sessions(doc)
                .into_iter()
                .map(|s| (s.id.clone(), s))
                .collect(),
            announcements: AgendaDoc::announcements(doc),
            index: None,
        }
    }

    /// Brings the view from the heads it shows to the document now, reading
    /// again only what the changes in between touched. A view whose heads
    /// the document does not hold (it cannot be) is read again whole.
    pub(crate) fn update(&mut self, doc: &Automerge) -> ViewChange {
        let before = std::mem::take(&mut self.heads);
        let known = before.iter().all(|h| doc.get_change_by_hash(h).is_some());
        let mut index = match self.index.take() {
            // Built from the document after the changes: a superset of the
            // objects they can touch (those they made are there too).
            Some(i) if known => i,
            _ => ObjIndex::build(doc),
        };
        let before = if known { before } else { Vec::new() };
        let t = touched(doc, &before, &mut index);
        let mut change = ViewChange {
            was_empty: self.sessions.is_empty(),
            ..ViewChange::default()
        };
        self.stamp.clear();
        self.heads = doc.get_heads();
        if t.all {
            change.rebuilt = true;
            let old = std::mem::take(&mut self.sessions);
            let shown = std::mem::take(&mut self.announcements);
            *self = AgendaView::build(doc);
            for s in self.sessions.values() {
                let was = old.get(&s.id);
                if was != Some(s) {
                    change.sessions.push((was.cloned(), s.clone()));
                }
            }
            change.announcements = new_announcements(&shown, &self.announcements);
            self.index = Some(ObjIndex::build(doc));
            return change;
        }
        if t.event {
            (self.name, self.time_zone) = AgendaDoc::event(doc);
        }
        if t.rooms {
            self.rooms = AgendaDoc::rooms(doc);
        }
        if t.announcements {
            let now = AgendaDoc::announcements(doc);
            change.announcements = new_announcements(&self.announcements, &now);
            self.announcements = now;
        }
        let sessions_obj = obj_at(doc, &ROOT, "sessions");
        for id in t.sessions {
            if let Some(obj) = &sessions_obj {
                index.add_session(doc, obj, &id);
            }
            match AgendaDoc::session(doc, &id) {
                Some(s) => {
                    let was = self.sessions.insert(id, s.clone());
                    if was.as_ref() != Some(&s) {
                        change.sessions.push((was, s));
                    }
                }
                None => {
                    self.sessions.remove(&id);
                }
            }
        }
        self.index = Some(index);
        change
    }

    /// Every session, by start, room and id.
    pub(crate) fn sessions(&self) -> Vec<Session> {
        self.sessions_where(|_| true)
    }

    /// The sessions `keep` accepts, by start, room and id.
    pub(crate) fn sessions_where(&self, keep: impl Fn(&Session) -> bool) -> Vec<Session> {
        let mut out: Vec<Session> = self
            .sessions
            .values()
            .filter(|s| keep(s))
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.start_unix, &a.room, &a.id).cmp(&(b.start_unix, &b.room, &b.id)));
        out
    }

    /// One session.
    pub(crate) fn session(&self, id: &str) -> Option<Session> {
        self.sessions.get(id).cloned()
    }

    /// The stored form.
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// The view stored as `bytes`, when it was made from the document whose
    /// stamp is `stamp`.
    pub(crate) fn decode_if_current(bytes: &[u8], stamp: &[u8]) -> Option<AgendaView> {
        let view: AgendaView = postcard::from_bytes(bytes).ok()?;
        (view.stamp == stamp).then_some(view)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::NewSession;

    const ID: &str = "agenda/conf";

    fn talk(id: &str, start: i64) -> NewSession {
        NewSession {
            id: id.into(),
            title: format!("Talk {id}"),
            room: "Hall A".into(),
            start_unix: start,
            end_unix: start + 1800,
            speakers: vec!["Ann".into()],
            ..Default::default()
        }
    }

    /// After any sequence of edits, the updated view equals one built anew.
    #[test]
    fn updated_view_equals_a_view_built_from_the_document() {
        let mut d = Automerge::new();
        let mut v = AgendaView::build(&d);
        let mut step = |d: &mut Automerge, edit: &dyn Fn(&mut Automerge)| {
            edit(d);
            let ch = v.update(d);
            assert_eq!(v, AgendaView::build(d));
            ch
        };
        let first = step(&mut d, &|d| {
            AgendaDoc::set_event(d, ID, "Conf", "Europe/Brussels", 0).unwrap();
            AgendaDoc::add_session(d, ID, &talk("a", 100), 0).unwrap();
        });
        assert!(first.was_empty);
        let added = step(&mut d, &|d| {
            AgendaDoc::add_session(d, ID, &talk("b", 200), 0).unwrap();
        });
        assert_eq!(added.sessions.len(), 1);
        assert!(added.sessions[0].0.is_none() && !added.was_empty);
        assert!(!added.rebuilt, "only the new session is read");
        let moved = step(&mut d, &|d| {
            AgendaDoc::move_session(d, "a", Some("Hall B"), Some((300, 400)), 0).unwrap();
        });
        assert_eq!(moved.sessions.len(), 1);
        assert_eq!(moved.sessions[0].0.as_ref().unwrap().room, "Hall A");
        assert_eq!(moved.sessions[0].1.room, "Hall B");
        assert!(!moved.rebuilt);
        step(&mut d, &|d| {
            AgendaDoc::update_session(
                d,
                "b",
                &crate::model::SessionUpdate {
                    speakers: Some(vec!["Bo".into(), "Cy".into()]),
                    ..Default::default()
                },
                0,
            )
            .unwrap();
        });
        let posted = step(&mut d, &|d| {
            AgendaDoc::announce(d, ID, "Lunch", 1000).unwrap();
            AgendaDoc::put_room(
                d,
                ID,
                &Room {
                    name: "Hall C".into(),
                    capacity: 10,
                },
                0,
            )
            .unwrap();
        });
        assert_eq!(posted.announcements.len(), 1);
        assert!(!posted.rebuilt);
        // A concurrent edit merged in from another device.
        let mut other = d.fork();
        AgendaDoc::cancel_session(&mut other, "b", 0).unwrap();
        for title in ["Slides", "Recording"] {
            let linked = step(&mut d, &|d| {
                let link = crate::model::Link::new(&format!("https://example.org/{title}"), title);
                AgendaDoc::add_link(d, "a", &link, 0).unwrap();
            });
            assert!(!linked.rebuilt, "a link is read with its session");
        }
        let merged = step(&mut d, &|d| {
            d.merge(&mut other.clone()).unwrap();
        });
        assert!(!merged.rebuilt);
        assert_eq!(
            v.session("b").unwrap().status,
            crate::model::SessionStatus::Cancelled
        );
    }

    #[test]
    fn a_stored_view_is_used_only_with_its_own_document() {
        let mut d = Automerge::new();
        AgendaDoc::add_session(&mut d, ID, &talk("a", 100), 0).unwrap();
        let bytes = d.save();
        let mut v = AgendaView::build(&d);
        v.stamp = stamp_of(&bytes);
        let stored = v.encode();
        assert_eq!(
            AgendaView::decode_if_current(&stored, &stamp_of(&bytes)),
            Some(v)
        );
        AgendaDoc::add_session(&mut d, ID, &talk("b", 100), 0).unwrap();
        assert_eq!(
            AgendaView::decode_if_current(&stored, &stamp_of(&d.save())),
            None
        );
        assert_eq!(
            AgendaView::decode_if_current(b"junk", &stamp_of(&bytes)),
            None
        );
    }
}
