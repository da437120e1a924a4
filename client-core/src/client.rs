//! The [`Client`]: the device's documents, on disk, behind an FFI-friendly API.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use automerge::{ActorId, Automerge, ChangeHash, ReadDoc as _};
use lanyard_protocol::token::decode_unverified;
use lanyard_protocol::{
    DocId, DocSyncState, JoinLink, Limits, Replica, Role, SessionId, TokenClaims,
};
use lanyard_store::{MemoryStore, SledStore, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::alerts::{Alert, AlertHub, AlertListener};
use crate::docs::{AgendaDoc, AgendaEditor, NotesDoc};
use crate::error::{ClientError, LimitKind};
use crate::model::{
    Announcement, EventInfo, Identity, NewSession, RefusedChange, Room, Session, SessionUpdate,
    SyncStatus,
};
use crate::time;
use crate::view::{stamp_of, AgendaView, ViewChange};

/// Compact a document's chunks into one save after this many appends.
const COMPACT_AFTER_CHUNKS: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredCredentials {
    link: String,
}

/// Join credentials held in memory.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub(crate) link: JoinLink,
    pub(crate) claims: TokenClaims,
}

impl Credentials {
    pub(crate) fn agenda(&self) -> DocId {
        DocId::Agenda(self.claims.event.clone())
    }
    fn own(&self) -> DocId {
        self.claims.own_doc()
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) replica: Replica,
    pub(crate) creds: Option<Credentials>,
    pub(crate) saved_heads: HashMap<DocId, Vec<ChangeHash>>,
    pub(crate) last_sync: Option<i64>,
    pub(crate) connected: bool,
    pub(crate) last_error: Option<String>,
    /// The server's limits as last announced (the defaults before the first
    /// connection): every local change is checked against them.
    pub(crate) limits: Limits,
    /// Bytes of all changes of a document, at the heads it was counted at.
    pub(crate) doc_bytes: HashMap<DocId, (Vec<ChangeHash>, usize)>,
    /// The agenda's read model (see [`crate::view`]).
    pub(crate) views: HashMap<DocId, AgendaView>,
    /// Views changed since they were last stored.
    pub(crate) views_dirty: HashSet<DocId>,
    /// Documents read from disk but not loaded yet (their view is current),
    /// with their sync state.
    unloaded: HashMap<DocId, (Vec<u8>, DocSyncState)>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) state: Mutex<State>,
    /// Wakes the background sync after a local edit.
    pub(crate) local_edit: Notify,
    /// Counts changes received from the server (for UIs and tests to wait on).
    pub(crate) remote: watch::Sender<u64>,
    /// Reconnection attempts of the background sync.
    pub(crate) retries: std::sync::atomic::AtomicU64,
    /// Told of every change that arrives, before it is applied (benchmarks).
    pub(crate) arrivals: std::sync::Mutex<Option<ArrivalProbe>>,
    /// A client endpoint shared with other clients, if one was given.
    pub(crate) endpoint: std::sync::Mutex<Option<quinn::Endpoint>>,
    /// Alert listeners (locked after `state` when both are needed).
    pub(crate) alerts: Mutex<AlertHub>,
    /// Bumped whenever something [`Client::status`] reports may have changed.
    pub(crate) status: watch::Sender<u64>,
    /// Wakes a background sync waiting to reconnect (see `network_changed`).
    pub(crate) network: Notify,
    /// The endpoint of the live background connection, when it owns one.
    pub(crate) active_endpoint: Mutex<Option<quinn::Endpoint>>,
    /// The TLS configuration for the server's pin, kept so reconnects
    /// resume the TLS session.
    pub(crate) tls: Mutex<Option<(String, Arc<quinn::crypto::rustls::QuicClientConfig>)>>,
    /// The keep-alive interval of the next connection, adapted to the link.
    pub(crate) keep_alive: Mutex<crate::sync::KeepAlive>,
    /// The join link's server nodes in the order they are tried.
    pub(crate) servers: Mutex<Vec<String>>,
}

impl Drop for Inner {
    /// The last handle is gone: the agenda's view is stored so the next
    /// open lists the agenda without loading the document.
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.store_views(&self.store);
    }
}

/// Called with a document and the hashes of the changes that just arrived
/// for it (decoded, hashes computed), before they are applied.
pub type ArrivalProbe = Box<dyn Fn(&DocId, &[[u8; 32]]) + Send + Sync>;

/// The device's Lanyard client: agenda, notes and bookmarks, offline-first.
///
/// Cheap to clone (a handle). Every local edit is on disk when the call returns.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> i64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn sync_key(doc: &DocId) -> String {
    format!("sync/{doc}")
}

fn view_key(doc: &DocId) -> String {
    // "view2": sessions gained their capacity; views stored before are
    // rebuilt rather than decoded in the old layout.
    format!("view2/{doc}")
}

/// Loads a stored document; drops refusals of changes it does not hold (a
/// resolution stopped between replacing the document and its sync state).
fn load_doc(id: &str, bytes: &[u8], sync: &mut DocSyncState) -> Result<Automerge, ClientError> {
    let doc = Automerge::load(bytes).map_err(|e| corrupt(id, e))?;
    prune_refusals(&doc, sync);
    Ok(doc)
}

fn prune_refusals(doc: &Automerge, sync: &mut DocSyncState) {
    sync.refused
        .retain(|r| doc.get_change_by_hash(&ChangeHash(r.change)).is_some());
}

fn corrupt(doc: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Corrupt {
        doc: doc.to_owned(),
        message: e.to_string(),
    }
}

impl Client {
    /// Opens (or creates) the sled database in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        Self::with_store(Arc::new(SledStore::open(path)?))
    }

    /// A client whose documents live only in memory.
    pub fn in_memory() -> Result<Client, ClientError> {
        Self::with_store(Arc::new(MemoryStore::default()))
    }

    /// A client over any [`Store`].
    pub fn with_store(store: Arc<dyn Store>) -> Result<Client, ClientError> {
        let actor = match store.get_meta("actor")? {
            Some(a) if !a.is_empty() => ActorId::from(a.as_slice()),
            _ => {
                let bytes: [u8; 16] = rand::random();
                store.put_meta("actor", &bytes)?;
                ActorId::from(&bytes[..])
            }
        };
        let creds = match store.get_meta("credentials")? {
            Some(bytes) => {
                let stored: StoredCredentials =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt("credentials", e))?;
                Some(parse_credentials(&stored.link)?)
            }
            None => None,
        };
        let last_sync = match store.get_meta("last_sync")? {
            Some(b) => Some(serde_json::from_slice(&b).map_err(|e| corrupt("last_sync", e))?),
            None => None,
        };
        let last_error: Option<String> = match store.get_meta("last_error")? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| corrupt("last_error", e))?,
            None => None,
        };
        let limits = match store.get_meta("limits")? {
            Some(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "stored server limits unreadable: using the defaults");
                Limits::default()
            }),
            None => Limits::default(),
        };
        // Random per install and kept: a reconnect replaces the session a
        // lost goodbye left open on the server.
        let installation: [u8; 16] = match store.get_meta("installation")? {
            Some(b) if b.len() == 16 => b.as_slice().try_into().unwrap_or_default(),
            _ => {
                let bytes: [u8; 16] = rand::random();
                store.put_meta("installation", &bytes)?;
                bytes
            }
        };
        let mut replica = Replica::new(actor);
        replica.set_installation(installation);
        let mut saved_heads = HashMap::new();
        let mut views = HashMap::new();
        let mut unloaded = HashMap::new();
        for id in store.doc_ids()? {
            let doc_id = DocId::parse(&id)?;
            let bytes = store.load_doc(&id)?.unwrap_or_default();
            let sync: DocSyncState = match store.get_meta(&sync_key(&doc_id))? {
                Some(b) => serde_json::from_slice(&b).map_err(|e| corrupt(&id, e))?,
                None => DocSyncState::default(),
            };
            // The agenda is listed from its view while the view is current:
            // the document loads when something needs it (see `view`).
            if matches!(doc_id, DocId::Agenda(_)) {
                let stamp = stamp_of(&bytes);
                let stored = store.get_meta(&view_key(&doc_id))?;
                if let Some(view) = stored.and_then(|v| AgendaView::decode_if_current(&v, &stamp)) {
                    views.insert(doc_id.clone(), view);
                    unloaded.insert(doc_id, (bytes, sync));
                    continue;
                }
            }
            let mut sync = sync;
            let doc = load_doc(&id, &bytes, &mut sync)?;
            saved_heads.insert(doc_id.clone(), doc.get_heads());
            if matches!(doc_id, DocId::Agenda(_)) {
                let mut view = AgendaView::build(&doc);
                view.stamp = stamp_of(&bytes);
                // Stored now, so the next open is fast; a failure only costs speed.
                if let Err(e) = store.put_meta(&view_key(&doc_id), &view.encode()) {
                    tracing::warn!(doc = %id, error = %e, "cannot store the agenda's view");
                }
                views.insert(doc_id.clone(), view);
            }
            replica.insert(doc_id, doc, sync);
        }
        let (remote, _) = watch::channel(0);
        let (status, _) = watch::channel(0);
        Ok(Client {
            inner: Arc::new(Inner {
                store,
                state: Mutex::new(State {
                    replica,
                    creds,
                    saved_heads,
                    last_sync,
                    connected: false,
                    last_error,
                    limits,
                    doc_bytes: HashMap::new(),
                    views,
                    views_dirty: HashSet::new(),
                    unloaded,
                }),
                local_edit: Notify::new(),
                remote,
                retries: std::sync::atomic::AtomicU64::new(0),
                endpoint: std::sync::Mutex::new(None),
                arrivals: std::sync::Mutex::new(None),
                alerts: Mutex::new(AlertHub::default()),
                status,
                network: Notify::new(),
                active_endpoint: Mutex::new(None),
                tls: Mutex::new(None),
                keep_alive: Mutex::new(crate::sync::KeepAlive::default()),
                servers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The state, with documents not loaded yet left so: for reads served
    /// by views and for bookkeeping that does not touch the documents.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state with every document loaded: for edits, sync and anything
    /// that reads or writes the replica.
    pub(crate) fn state(&self) -> Result<MutexGuard<'_, State>, ClientError> {
        let mut st = self.lock();
        st.load_all()?;
        Ok(st)
    }

    /// Stores the credentials of a join link (no network).
    ///
    /// A device holds one user's documents: joining again (e.g. with a fresh
    /// token) must be for the same event and user.
    pub fn join(&self, link: &str) -> Result<Identity, ClientError> {
        let creds = parse_credentials(link)?;
        if let Some(old) = &self.lock().creds {
            let (o, n) = (&old.claims, &creds.claims);
            if o.event != n.event || o.user != n.user {
                return Err(ClientError::Invalid(format!(
                    "this device already holds {} of event {}; use another home directory for {} of event {}",
                    o.user, o.event, n.user, n.event
                )));
            }
        }
        let stored = StoredCredentials {
            link: creds.link.to_string(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| corrupt("credentials", e))?;
        self.inner.store.put_meta("credentials", &bytes)?;
        let id = identity_of(&creds);
        self.lock().creds = Some(creds);
        Ok(id)
    }

    /// Who this device is, once joined.
    pub fn identity(&self) -> Option<Identity> {
        self.lock().creds.as_ref().map(identity_of)
    }

    pub(crate) fn creds(&self) -> Result<Credentials, ClientError> {
        self.lock().creds.clone().ok_or(ClientError::NotJoined)
    }

    /// Reads a document (an empty one if not held yet), loading it if needed.
    pub(crate) fn read<R>(
        &self,
        doc: &DocId,
        f: impl FnOnce(&Automerge) -> R,
    ) -> Result<R, ClientError> {
        let mut st = self.lock();
        st.load(doc)?;
        Ok(match st.replica.get(doc) {
            Some(rd) => f(&rd.doc),
            None => f(&Automerge::new()),
        })
    }

    /// Reads one thing of the agenda: from its view when there is one, else
    /// straight from the document (a single lookup is not worth building the
    /// view: a device that never lists the agenda never pays for one).
    fn peek<R>(
        &self,
        from_view: impl FnOnce(&AgendaView) -> R,
        from_doc: impl FnOnce(&Automerge) -> R,
    ) -> Result<R, ClientError> {
        let agenda = self.creds()?.agenda();
        let st = self.lock();
        if let Some(v) = st.views.get(&agenda) {
            return Ok(from_view(v));
        }
        Ok(match st.replica.get(&agenda) {
            Some(rd) => from_doc(&rd.doc),
            // Unloaded documents always have a view; this is an agenda not held yet.
            None => from_view(&AgendaView::default()),
        })
    }

    /// Reads the agenda's view, built on first use (an empty one if no
    /// agenda is held yet).
    pub(crate) fn view<R>(&self, f: impl FnOnce(&AgendaView) -> R) -> Result<R, ClientError> {
        let agenda = self.creds()?.agenda();
        let mut st = self.lock();
        if !st.views.contains_key(&agenda) {
            let built = match st.replica.get(&agenda) {
                Some(rd) => AgendaView::build(&rd.doc),
                None => AgendaView::default(),
            };
            st.views.insert(agenda.clone(), built);
            st.views_dirty.insert(agenda.clone());
        }
        Ok(f(st.views.entry(agenda).or_default()))
    }

    /// Applies a local edit, checks the changes it made against the server's
    /// limits, and makes it durable before returning. When the edit fails,
    /// breaks a limit or cannot be stored, the in-memory document goes back
    /// to what it was before (nothing is read from disk for that, so a
    /// failing disk cannot empty it) and nothing changes.
    pub(crate) fn edit(
        &self,
        doc: &DocId,
        f: impl FnOnce(&mut Automerge, &str) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        {
            // Only the edited document is loaded: a note never waits for the agenda.
            let mut st = self.lock();
            st.load(doc)?;
            let id = doc.to_string();
            let before = st
                .replica
                .get(doc)
                .map(|rd| rd.doc.get_heads())
                .unwrap_or_default();
            let result = f(&mut st.replica.get_or_create(doc).doc, &id)
                .and_then(|()| check_limits(&mut st, doc, &before))
                .and_then(|()| persist_doc(&self.inner.store, &mut st, doc));
            if let Err(e) = result {
                roll_back(&mut st, doc, &before);
                return Err(e);
            }
            st.update_view(doc);
        }
        self.inner.local_edit.notify_one();
        self.status_changed();
        Ok(())
    }

    /// The server's limits this device checks its changes against: the last
    /// ones announced, or the defaults before the first connection.
    pub fn limits(&self) -> Limits {
        self.lock().limits
    }

    pub(crate) fn organizer_edit(
        &self,
        f: impl FnOnce(&mut Automerge, &str) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let creds = self.creds()?;
        if creds.claims.role != Role::Organizer {
            return Err(ClientError::OrganizersOnly);
        }
        self.edit(&creds.agenda(), f)
    }

    // ----- agenda: reading -----

    /// The event's name and time zone.
    pub fn event_info(&self) -> Result<EventInfo, ClientError> {
        let creds = self.creds()?;
        let (name, tz) = self.peek(|v| (v.name.clone(), v.time_zone.clone()), AgendaDoc::event)?;
        Ok(EventInfo {
            id: creds.claims.event.to_string(),
            name: name.unwrap_or_else(|| creds.claims.event.to_string()),
            time_zone: tz.unwrap_or_else(|| "UTC".into()),
        })
    }

    /// The agenda's own IANA time zone, `None` while it has none (a fresh
    /// agenda, which [`event_info`](Client::event_info) shows in UTC).
    pub fn agenda_time_zone(&self) -> Result<Option<String>, ClientError> {
        self.peek(|v| v.time_zone.clone(), |d| AgendaDoc::event(d).1)
    }

    /// Every session, by start time.
    pub fn sessions(&self) -> Result<Vec<Session>, ClientError> {
        self.view(AgendaView::sessions)
    }

    /// Sessions starting on `day` (`YYYY-MM-DD`) in the event's time zone.
    pub fn sessions_on(&self, day: &str) -> Result<Vec<Session>, ClientError> {
        let tz = self.event_info()?.time_zone;
        let (from, to) = time::day_bounds(day, &tz)?;
        self.view(|v| v.sessions_where(|s| s.start_unix >= from && s.start_unix < to))
    }

    /// Sessions in one room, by start time.
    pub fn sessions_in_room(&self, room: &str) -> Result<Vec<Session>, ClientError> {
        self.view(|v| v.sessions_where(|s| s.room == room))
    }

    /// The days (`YYYY-MM-DD`, event time zone) that have sessions.
    pub fn days(&self) -> Result<Vec<String>, ClientError> {
        let tz = self.event_info()?.time_zone;
        let mut days: Vec<String> = self
            .sessions()?
            .iter()
            .map(|s| time::day_of(s.start_unix, &tz))
            .collect::<Result<_, _>>()?;
        days.dedup();
        Ok(days)
    }

    /// One session.
    pub fn session(&self, id: &str) -> Result<Option<Session>, ClientError> {
        self.peek(|v| v.session(id), |d| AgendaDoc::session(d, id))
    }

    /// Rooms.
    pub fn rooms(&self) -> Result<Vec<Room>, ClientError> {
        self.peek(|v| v.rooms.clone(), AgendaDoc::rooms)
    }

    /// Announcements, oldest first.
    pub fn announcements(&self) -> Result<Vec<Announcement>, ClientError> {
        self.peek(|v| v.announcements.clone(), AgendaDoc::announcements)
    }

    // ----- agenda: organizer edits -----

    /// Sets the event's display name and IANA time zone (organizers only).
    pub fn set_event(&self, name: &str, time_zone: &str) -> Result<(), ClientError> {
        time::check_zone(time_zone)?;
        self.organizer_edit(|d, id| AgendaDoc::set_event(d, id, name, time_zone, now_ms()))
    }

    /// Adds a room or changes its capacity (organizers only).
    pub fn put_room(&self, room: Room) -> Result<(), ClientError> {
        if room.name.trim().is_empty() || room.name.len() > lanyard_protocol::ids::MAX_ID_LEN {
            return Err(ClientError::Invalid("a room name is 1 to 128 bytes".into()));
        }
        self.organizer_edit(|d, id| AgendaDoc::put_room(d, id, &room, now_ms()))
    }

    /// Adds a session (organizers only).
    pub fn add_session(&self, session: NewSession) -> Result<(), ClientError> {
        SessionId::new(session.id.as_str())?;
        self.organizer_edit(|d, id| AgendaDoc::add_session(d, id, &session, now_ms()))
    }

    /// Changes a session's title, abstract, track or speakers (organizers only).
    pub fn update_session(&self, id: &str, update: SessionUpdate) -> Result<(), ClientError> {
        self.organizer_edit(|d, _| AgendaDoc::update_session(d, id, &update, now_ms()))
    }

    /// Moves a session to another room and/or time (organizers only).
    pub fn move_session(
        &self,
        id: &str,
        room: Option<String>,
        start_unix: Option<i64>,
        end_unix: Option<i64>,
    ) -> Result<(), ClientError> {
        let times = match (start_unix, end_unix) {
            (Some(s), Some(e)) => Some((s, e)),
            (None, None) => None,
            _ => {
                return Err(ClientError::Invalid(
                    "give both start and end, or neither".into(),
                ))
            }
        };
        if room.is_none() && times.is_none() {
            return Err(ClientError::Invalid(
                "nothing to move: give a room or times".into(),
            ));
        }
        self.organizer_edit(|d, _| AgendaDoc::move_session(d, id, room.as_deref(), times, now_ms()))
    }

    /// Cancels a session (organizers only).
    pub fn cancel_session(&self, id: &str) -> Result<(), ClientError> {
        self.organizer_edit(|d, _| AgendaDoc::cancel_session(d, id, now_ms()))
    }

    /// Adds a link to a session, e.g. its recording once it is online
    /// (organizers only). The URL must be an absolute `http`/`https` URL; a
    /// link with the same URL is replaced. Attendees who bookmarked the
    /// session get an [`AlertKind::Link`](crate::AlertKind::Link) alert.
    pub fn add_session_link(&self, id: &str, url: &str, title: &str) -> Result<(), ClientError> {
        let link = crate::model::Link::checked(url, title)?;
        self.organizer_edit(|d, _| AgendaDoc::add_link(d, id, &link, now_ms()))
    }

    /// Makes a large edit of the agenda (organizers only), such as a
    /// schedule import (`lanyard_schedule::import_schedule`): `attempt` is
    /// given an [`AgendaEditor`] to read the agenda, plan [`AgendaEdit`](crate::AgendaEdit)s
    /// from it and [`apply`](AgendaEditor::apply) them, and its result is
    /// returned. Changes are closed at half the server's change limit by an
    /// estimate of the bytes written; should one still come out over the
    /// limit, everything the attempt wrote is undone and `attempt` runs
    /// again on the agenda as it was, with changes half as large. When
    /// `attempt` fails, nothing changes. With `dry_run` the attempt works on
    /// a copy of the agenda and nothing is written.
    pub fn edit_agenda<T>(
        &self,
        dry_run: bool,
        mut attempt: impl FnMut(&mut AgendaEditor<'_>) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let creds = self.creds()?;
        if creds.claims.role != Role::Organizer {
            return Err(ClientError::OrganizersOnly);
        }
        let agenda = creds.agenda();
        let mut apply = |d: &mut Automerge, id: &str, budget: usize| {
            AgendaDoc::ensure(d, id)?;
            attempt(&mut AgendaEditor::new(d, budget, now_ms()))
        };
        let mut budget = self.limits().max_change / 2;
        loop {
            let result = if dry_run {
                let mut copy = {
                    let st = self.state()?;
                    st.replica
                        .get(&agenda)
                        .map_or_else(Automerge::new, |rd| rd.doc.fork())
                };
                apply(&mut copy, &agenda.to_string(), budget)
            } else {
                let mut out = None;
                self.edit(&agenda, |d, id| {
                    out = Some(apply(d, id, budget)?);
                    Ok(())
                })
                .and_then(|()| {
                    out.ok_or_else(|| ClientError::Invalid("agenda edit made no result".into()))
                })
            };
            match result {
                Err(ClientError::OverLimit {
                    limit: LimitKind::Change,
                    ..
                }) if budget > self.limits().max_change / 64 => budget /= 2,
                other => return other,
            }
        }
    }

    /// Posts an announcement (organizers only).
    pub fn announce(&self, text: &str) -> Result<(), ClientError> {
        if text.trim().is_empty() {
            return Err(ClientError::Invalid("empty announcement".into()));
        }
        self.organizer_edit(|d, id| AgendaDoc::announce(d, id, text, now_ms()))
    }

    // ----- notes and bookmarks -----

    /// Bytes of note text written per change: a long note becomes several
    /// changes that each fit the server's change limit.
    fn note_piece(&self) -> usize {
        self.limits().max_change / 4
    }

    /// The note of a session ("" if none).
    pub fn note(&self, session: &str) -> Result<String, ClientError> {
        let creds = self.creds()?;
        self.read(&creds.own(), |d| NotesDoc::note(d, session))
    }

    /// Every non-empty note, as (session id, text).
    pub fn notes(&self) -> Result<Vec<(String, String)>, ClientError> {
        let creds = self.creds()?;
        self.read(&creds.own(), NotesDoc::notes)
    }

    /// Replaces a note (stored as the minimal splice from the old text).
    pub fn set_note(&self, session: &str, text: &str) -> Result<(), ClientError> {
        SessionId::new(session)?;
        let own = self.creds()?.own();
        let piece = self.note_piece();
        self.edit(&own, |d, id| {
            NotesDoc::set(d, id, session, text, piece, now_ms())
        })
    }

    /// Appends to a note.
    pub fn append_note(&self, session: &str, text: &str) -> Result<(), ClientError> {
        SessionId::new(session)?;
        let own = self.creds()?.own();
        let piece = self.note_piece();
        self.edit(&own, |d, id| {
            NotesDoc::append(d, id, session, text, piece, now_ms())
        })
    }

    /// Splices a note at a character position.
    pub fn splice_note(
        &self,
        session: &str,
        pos: u64,
        delete: u64,
        insert: &str,
    ) -> Result<(), ClientError> {
        SessionId::new(session)?;
        let to_usize = |v: u64| {
            usize::try_from(v).map_err(|_| ClientError::Invalid("position too large".into()))
        };
        let (pos, delete) = (to_usize(pos)?, to_usize(delete)?);
        let own = self.creds()?.own();
        let piece = self.note_piece();
        self.edit(&own, |d, id| {
            NotesDoc::splice_in_pieces(d, id, session, pos, delete, insert, piece, now_ms())
        })
    }

    /// Sets or clears a bookmark.
    pub fn set_bookmark(&self, session: &str, on: bool) -> Result<(), ClientError> {
        SessionId::new(session)?;
        let own = self.creds()?.own();
        self.edit(&own, |d, id| {
            NotesDoc::set_bookmark(d, id, session, on, now_ms())
        })
    }

    /// Bookmarked session ids.
    pub fn bookmarks(&self) -> Result<Vec<String>, ClientError> {
        let creds = self.creds()?;
        self.read(&creds.own(), NotesDoc::bookmarks)
    }

    // ----- status -----

    /// Whether the device holds (applied, not merely queued) the change
    /// with this hash in `doc`.
    pub fn has_change(&self, doc: &DocId, hash: &[u8; 32]) -> Result<bool, ClientError> {
        let mut st = self.state()?;
        st.load(doc)?;
        Ok(st
            .replica
            .get(doc)
            .is_some_and(|rd| rd.doc.get_change_by_hash(&ChangeHash(*hash)).is_some()))
    }

    /// The heads of `doc` on this device (empty if it holds none of it).
    pub fn heads(&self, doc: &DocId) -> Result<Vec<[u8; 32]>, ClientError> {
        let mut st = self.state()?;
        st.load(doc)?;
        Ok(st
            .replica
            .get(doc)
            .map(|rd| rd.doc.get_heads().iter().map(|h| h.0).collect())
            .unwrap_or_default())
    }

    /// Registers a probe told of every change that arrives from the server,
    /// before it is applied (benchmarks measure arrival apart from apply).
    #[doc(hidden)]
    pub fn set_arrival_probe(&self, probe: Option<ArrivalProbe>) {
        *self
            .inner
            .arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = probe;
    }

    /// Pending changes, last successful sync, refused changes.
    pub fn status(&self) -> SyncStatus {
        let mut st = self.lock();
        // An attendee never has agenda changes of its own: a document left
        // unloaded (its view is current) has none pending, so only an
        // organizer's device loads it to count.
        let attendee = st
            .creds
            .as_ref()
            .is_some_and(|c| c.claims.role == Role::Attendee);
        if !attendee {
            if let Err(e) = st.load_all() {
                // Reported, and what is loaded is counted.
                st.last_error = Some(e.to_string());
            }
        }
        SyncStatus {
            pending_changes: st.replica.pending_count() as u64,
            last_sync_unix: st.last_sync,
            refused: refused_of(&st.replica),
            kept_edits: self.kept_edits().map_or(0, |k| k.len() as u64),
            connected: st.connected,
            last_error: st.last_error.clone(),
            retries: self
                .inner
                .retries
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Sizes in bytes of the local changes waiting to be pushed (refused
    /// ones and those built on them excluded), in causal order per document.
    pub fn pending_change_sizes(&self) -> Result<Vec<usize>, ClientError> {
        let st = self.state()?;
        Ok(st
            .replica
            .doc_ids()
            .iter()
            .flat_map(|d| st.replica.pending(d))
            .map(|c| c.raw_bytes().len())
            .collect())
    }

    /// Records the outcome of a sync attempt for [`Client::status`], across restarts.
    pub(crate) fn record_outcome(&self, error: Option<String>) {
        let mut st = self.lock();
        if st.last_error == error {
            return;
        }
        let bytes = serde_json::to_vec(&error).unwrap_or_default();
        if let Err(e) = self.inner.store.put_meta("last_error", &bytes) {
            tracing::warn!(error = %e, "cannot store the last sync error");
        }
        st.last_error = error;
        drop(st);
        self.status_changed();
    }

    pub(crate) fn status_changed(&self) {
        self.inner.status.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes whenever what [`status`](Self::status)
    /// reports may have changed: a local edit (pending changes), a
    /// connection made or lost, changes acknowledged or received, a sync
    /// error. Compare `status()` with what you showed last.
    pub fn status_changes(&self) -> watch::Receiver<u64> {
        self.inner.status.subscribe()
    }

    // ----- alerts -----

    pub(crate) fn alert_hub(&self) -> MutexGuard<'_, AlertHub> {
        self.inner.alerts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a listener for schedule-change [`Alert`]s raised by agenda
    /// changes that arrive from the server from now on (see
    /// [`alerts`](crate::alerts)). Returns an id for
    /// [`remove_alert_listener`](Self::remove_alert_listener).
    pub fn add_alert_listener(&self, listener: Arc<dyn AlertListener>) -> Result<u64, ClientError> {
        // Alerts compare the agenda's view before and after each change.
        self.view(|_| ())?;
        Ok(self.alert_hub().add(listener))
    }

    /// Unregisters a listener; false if `id` was not registered.
    pub fn remove_alert_listener(&self, id: u64) -> bool {
        self.alert_hub().remove(id)
    }

    /// After changes from the server were applied (with `state` locked):
    /// the alerts they raise, and who to give them to.
    pub(crate) fn alerts_after_remote(
        &self,
        st: &State,
        change: &ViewChange,
    ) -> Vec<(Alert, Arc<dyn AlertListener>)> {
        let hub = self.alert_hub();
        let Some(creds) = st.creds.as_ref().filter(|_| hub.active()) else {
            return Vec::new();
        };
        let bookmarks: HashSet<String> = st
            .replica
            .get(&creds.own())
            .map(|rd| NotesDoc::bookmarks(&rd.doc).into_iter().collect())
            .unwrap_or_default();
        let tz = st
            .views
            .get(&creds.agenda())
            .and_then(|v| v.time_zone.clone())
            .unwrap_or_else(|| "UTC".into());
        let (alerts, listeners) = hub.changed(change, &bookmarks, &tz);
        to_each(alerts, &listeners)
    }

    /// After the user's seats document changed from the server (with
    /// `state` locked): the alerts its new outcomes raise, and who to give
    /// them to.
    pub(crate) fn seat_alerts_after_remote(
        &self,
        st: &State,
        doc: &DocId,
        user: &lanyard_protocol::UserId,
        before: &[lanyard_protocol::seats::Outcome],
    ) -> Vec<(Alert, Arc<dyn AlertListener>)> {
        let after = crate::seats::outcomes_of(st.replica.get(doc).map(|rd| &rd.doc), user);
        let Some(creds) = st.creds.as_ref() else {
            return Vec::new();
        };
        let agenda = creds.agenda();
        let view = st.views.get(&agenda);
        let tz = view
            .and_then(|v| v.time_zone.clone())
            .unwrap_or_else(|| "UTC".into());
        let session = |id: &str| match view {
            Some(v) => v.session(id),
            None => st
                .replica
                .get(&agenda)
                .and_then(|rd| AgendaDoc::session(&rd.doc, id)),
        };
        let alerts = crate::seats::seat_alerts(before, &after, session, &tz);
        to_each(alerts, &self.alert_hub().listeners())
    }

    /// A receiver that changes whenever changes from the server were applied.
    pub fn remote_changes(&self) -> watch::Receiver<u64> {
        self.inner.remote.subscribe()
    }
}

impl State {
    /// Loads `doc` if it was left unloaded at open.
    pub(crate) fn load(&mut self, doc: &DocId) -> Result<(), ClientError> {
        let Some((bytes, mut sync)) = self.unloaded.remove(doc) else {
            return Ok(());
        };
        let id = doc.to_string();
        let loaded = load_doc(&id, &bytes, &mut sync);
        match loaded {
            Ok(d) => {
                self.saved_heads.insert(doc.clone(), d.get_heads());
                self.replica.insert(doc.clone(), d, sync);
                Ok(())
            }
            Err(e) => {
                // Kept unloaded: nothing may replace the stored document.
                self.unloaded.insert(doc.clone(), (bytes, sync));
                Err(e)
            }
        }
    }

    /// Loads every document left unloaded at open.
    pub(crate) fn load_all(&mut self) -> Result<(), ClientError> {
        let docs: Vec<DocId> = self.unloaded.keys().cloned().collect();
        for doc in docs {
            self.load(&doc)?;
        }
        Ok(())
    }

    /// Brings the view of `doc` (when it is the agenda) up to date with the
    /// document; returns what changed, for alerts.
    pub(crate) fn update_view(&mut self, doc: &DocId) -> ViewChange {
        if !matches!(doc, DocId::Agenda(_)) {
            return ViewChange::default();
        }
        let Some(rd) = self.replica.get(doc) else {
            return ViewChange::default();
        };
        // No view yet: nothing listed the agenda and no alert listener
        // waits (registering one builds it), so there is nothing to update.
        let Some(view) = self.views.get_mut(doc) else {
            return ViewChange::default();
        };
        if view.heads == rd.doc.get_heads() {
            return ViewChange::default();
        }
        self.views_dirty.insert(doc.clone());
        view.update(&rd.doc)
    }

    /// Stores the views changed since they were last stored, each with the
    /// stamp of the stored document it shows: only a view that shows the
    /// document as it is on disk (else it stays to be stored later). Runs
    /// outside any hot path (at the end of a sync, when the client closes);
    /// a failure only means the next open loads the document.
    pub(crate) fn store_views(&mut self, store: &Arc<dyn Store>) {
        for doc in std::mem::take(&mut self.views_dirty) {
            let heads = self.replica.get(&doc).map(|rd| rd.doc.get_heads());
            let shown = self.views.get(&doc).map(|v| v.heads.clone());
            if heads.is_none() || heads != shown || heads.as_ref() != self.saved_heads.get(&doc) {
                self.views_dirty.insert(doc);
                continue;
            }
            let written = store.load_doc(&doc.to_string()).and_then(|bytes| {
                let Some(view) = self.views.get_mut(&doc) else {
                    return Ok(());
                };
                view.stamp = stamp_of(&bytes.unwrap_or_default());
                store.put_meta(&view_key(&doc), &view.encode())
            });
            if let Err(e) = written {
                tracing::warn!(doc = %doc, error = %e, "cannot store the agenda's view");
                self.views_dirty.insert(doc);
            }
        }
    }

    /// Keeps the limits a server announced (across restarts).
    pub(crate) fn keep_limits(
        &mut self,
        store: &Arc<dyn Store>,
        limits: Limits,
    ) -> Result<(), ClientError> {
        if self.limits == limits {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&limits).map_err(|e| corrupt("limits", e))?;
        store.put_meta("limits", &bytes)?;
        self.limits = limits;
        Ok(())
    }
}

/// Every alert, for every listener.
fn to_each(
    alerts: Vec<Alert>,
    listeners: &[Arc<dyn AlertListener>],
) -> Vec<(Alert, Arc<dyn AlertListener>)> {
    alerts
        .into_iter()
        .flat_map(|a| listeners.iter().map(move |l| (a.clone(), Arc::clone(l))))
        .collect()
}

pub(crate) fn refused_of(replica: &Replica) -> Vec<RefusedChange> {
    replica
        .refusals()
        .into_iter()
        .map(|(doc, r)| RefusedChange {
            doc: doc.to_string(),
            change: r.change.iter().map(|b| format!("{b:02x}")).collect(),
            message: r.message,
        })
        .collect()
}

fn parse_credentials(link: &str) -> Result<Credentials, ClientError> {
    let link = JoinLink::parse(link)?;
    let claims = decode_unverified(&link.token)
        .map_err(|e| ClientError::Invalid(format!("the join link's token: {e}")))?;
    if claims.event != link.event {
        return Err(ClientError::Invalid(format!(
            "the join link is for event {} but its token for {}",
            link.event, claims.event
        )));
    }
    Ok(Credentials { link, claims })
}

fn identity_of(c: &Credentials) -> Identity {
    Identity {
        server: c.link.servers.join(","),
        event: c.claims.event.to_string(),
        user: c.claims.user.to_string(),
        role: c.claims.role.to_string(),
        device: c.claims.device.to_string(),
        expires_at_unix: c.claims.expires_at,
    }
}

/// Appends what changed in `doc` since the last save, durably; compacts now and then.
pub(crate) fn persist_doc(
    store: &Arc<dyn Store>,
    st: &mut State,
    doc: &DocId,
) -> Result<(), ClientError> {
    let Some(rd) = st.replica.get(doc) else {
        return Ok(());
    };
    let id = doc.to_string();
    let heads = rd.doc.get_heads();
    let saved = st.saved_heads.get(doc).cloned().unwrap_or_default();
    if saved == heads {
        return Ok(());
    }
    // A write that fails may still have landed (a failed flush): the next
    // save then replaces the stored document whole, so it can never hold a
    // change this device undid beside a new one of the same sequence number.
    let written = if saved.is_empty() {
        store.replace_doc(&id, &rd.doc.save())
    } else {
        store.append_chunks(&id, &[rd.doc.save_after(&saved)])
    };
    if let Err(e) = written {
        st.saved_heads.insert(doc.clone(), Vec::new());
        return Err(e.into());
    }
    if !saved.is_empty() {
        // The append is durable: a failed compaction only leaves more chunks.
        let compact = store.chunk_count(&id).map(|n| n > COMPACT_AFTER_CHUNKS);
        if let Err(e) = compact.and_then(|yes| match yes {
            true => store.replace_doc(&id, &rd.doc.save()),
            false => Ok(()),
        }) {
            tracing::warn!(doc = %id, error = %e, "cannot compact the stored document");
        }
    }
    st.saved_heads.insert(doc.clone(), heads);
    Ok(())
}

/// Checks the changes an edit made to `doc` since `before` against the
/// server's limits: each change, and the document they make.
fn check_limits(st: &mut State, doc: &DocId, before: &[ChangeHash]) -> Result<(), ClientError> {
    let Some(rd) = st.replica.get(doc) else {
        return Ok(());
    };
    let limits = st.limits;
    let over = |limit, size, max| ClientError::OverLimit {
        doc: doc.to_string(),
        limit,
        size,
        max,
    };
    let new = rd.doc.get_changes(before);
    if let Some(c) = new.iter().find(|c| c.raw_bytes().len() > limits.max_change) {
        return Err(over(
            LimitKind::Change,
            c.raw_bytes().len(),
            limits.max_change,
        ));
    }
    let bytes_of = |changes: &[automerge::Change]| -> usize {
        changes.iter().map(|c| c.raw_bytes().len()).sum()
    };
    let heads = rd.doc.get_heads();
    // Counted from the last count on: only the changes since then (this
    // edit's, and what arrived from the server) are read.
    let total = match st.doc_bytes.get(doc) {
        Some((at, bytes)) if at.iter().all(|h| rd.doc.get_change_by_hash(h).is_some()) => {
            bytes + bytes_of(&rd.doc.get_changes(at))
        }
        _ => bytes_of(&rd.doc.get_changes(&[])),
    };
    let max = limits.max_doc_for(doc);
    if total > max {
        let kind = match doc {
            DocId::Attendee(..) => LimitKind::AttendeeDoc,
            _ => LimitKind::Doc,
        };
        return Err(over(kind, total, max));
    }
    st.doc_bytes.insert(doc.clone(), (heads, total));
    Ok(())
}

/// Puts the in-memory `doc` back to `before` (its heads before a failed
/// edit), from memory alone.
fn roll_back(st: &mut State, doc: &DocId, before: &[ChangeHash]) {
    st.doc_bytes.remove(doc);
    let actor = st.replica.actor().clone();
    let rd = st.replica.get_or_create(doc);
    if rd.doc.get_heads() == before {
        return;
    }
    match rd.doc.fork_at(before) {
        Ok(mut d) => {
            d.set_actor(actor);
            rd.doc = d;
        }
        // Keeping the edit in memory loses nothing: it is written with the next one.
        Err(e) => tracing::warn!(doc = %doc, error = %e, "cannot undo a failed edit in memory"),
    }
}

/// Saves every document with changes not yet on disk (after a failed
/// write), and its sync state (the failure may have kept that from disk too).
pub(crate) fn persist_unsaved(store: &Arc<dyn Store>, st: &mut State) -> Result<(), ClientError> {
    for doc in st.replica.doc_ids() {
        let heads = st.replica.get(&doc).map(|rd| rd.doc.get_heads());
        if heads.as_ref() != st.saved_heads.get(&doc) {
            persist_doc(store, st, &doc)?;
            persist_sync(store, st, &doc)?;
        }
    }
    Ok(())
}

/// Stores the sync bookkeeping of `doc`.
pub(crate) fn persist_sync(
    store: &Arc<dyn Store>,
    st: &State,
    doc: &DocId,
) -> Result<(), ClientError> {
    if let Some(rd) = st.replica.get(doc) {
        let bytes = serde_json::to_vec(&rd.sync).map_err(|e| corrupt(&doc.to_string(), e))?;
        store.put_meta(&sync_key(doc), &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lanyard_protocol::cert_pin;
    use lanyard_protocol::testing::{event, TestKey};

    fn link(role: Role, user: &str) -> String {
        let event = event();
        JoinLink {
            servers: vec!["127.0.0.1:9".into()],
            token: TestKey::new(3).token(&event, user, role, "d", 4_000_000_000),
            event,
            pin: cert_pin(b"c"),
        }
        .to_string()
    }

    #[test]
    fn everything_needs_a_join_first() {
        let c = Client::in_memory().unwrap();
        assert!(matches!(c.sessions(), Err(ClientError::NotJoined)));
        assert!(matches!(c.set_note("s", "x"), Err(ClientError::NotJoined)));
        assert!(matches!(
            c.join("lanyard://nope"),
            Err(ClientError::Link(_))
        ));
    }

    #[test]
    fn attendees_cannot_edit_the_agenda_and_nothing_changes() {
        let c = Client::in_memory().unwrap();
        c.join(&link(Role::Attendee, "ann")).unwrap();
        let s = NewSession {
            id: "t1".into(),
            start_unix: 0,
            end_unix: 1,
            ..Default::default()
        };
        assert!(matches!(c.add_session(s), Err(ClientError::OrganizersOnly)));
        assert!(matches!(c.announce("hi"), Err(ClientError::OrganizersOnly)));
        assert!(c.sessions().unwrap().is_empty());
        assert_eq!(c.status().pending_changes, 0);
    }

    #[test]
    fn edit_agenda_writes_planned_edits_and_a_failed_or_dry_attempt_changes_nothing() {
        use crate::docs::AgendaEdit;
        use crate::model::{SessionDetails, SessionStatus};
        let c = Client::in_memory().unwrap();
        c.join(&link(Role::Organizer, "org")).unwrap();
        let talk = |id: &str| NewSession {
            id: id.into(),
            title: "Talk".into(),
            room: "Hall".into(),
            start_unix: 100,
            end_unix: 200,
            ..Default::default()
        };
        let add = |id: &str| AgendaEdit::Add(talk(id), SessionDetails::default());
        let run = |dry_run: bool, edits: Vec<AgendaEdit>| {
            c.edit_agenda(dry_run, |agenda| {
                let before = agenda.sessions().len();
                let mut wrote = 0;
                let applied =
                    agenda.apply(&edits, &mut |_, changed| wrote += usize::from(changed))?;
                Ok((before, wrote, applied))
            })
        };
        let (before, wrote, applied) = run(true, vec![add("t1")]).unwrap();
        assert_eq!((before, wrote, applied.changes), (0, 1, 1));
        assert!(applied.change_bytes > 0);
        assert!(c.sessions().unwrap().is_empty(), "a dry run writes nothing");
        assert_eq!(c.status().pending_changes, 0);

        run(false, vec![AgendaEdit::NewRoom("Hall".into()), add("t1")]).unwrap();
        let was = c.session("t1").unwrap().unwrap();
        let moved = NewSession {
            room: "Hall B".into(),
            ..talk("t1")
        };
        let rewrite = AgendaEdit::Rewrite(was, moved, SessionDetails::default());
        let (before, wrote, _) = run(false, vec![rewrite]).unwrap();
        assert_eq!((before, wrote), (1, 1));
        let now = c.session("t1").unwrap().unwrap();
        assert_eq!(
            (now.room.as_str(), now.status),
            ("Hall B", SessionStatus::Moved)
        );

        let pending = c.status().pending_changes;
        assert!(matches!(
            run(false, vec![add("t2"), add("bad/id")]),
            Err(ClientError::Id(_))
        ));
        assert!(c.session("t2").unwrap().is_none());
        assert_eq!(c.status().pending_changes, pending);

        let a = Client::in_memory().unwrap();
        a.join(&link(Role::Attendee, "ann")).unwrap();
        assert!(matches!(
            a.edit_agenda(false, |_| Ok(())),
            Err(ClientError::OrganizersOnly)
        ));
    }

    #[test]
    fn a_device_holds_one_user() {
        let c = Client::in_memory().unwrap();
        c.join(&link(Role::Attendee, "ann")).unwrap();
        c.join(&link(Role::Attendee, "ann")).unwrap();
        let err = c.join(&link(Role::Attendee, "bob")).unwrap_err();
        assert!(err.to_string().contains("already holds ann"), "{err}");
        assert_eq!(c.identity().unwrap().user, "ann");
    }

    #[test]
    fn edits_are_on_disk_when_the_call_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let c = Client::open(&path).unwrap();
            c.join(&link(Role::Organizer, "org")).unwrap();
            c.set_event("Conf", "Europe/Paris").unwrap();
            for i in 0..(COMPACT_AFTER_CHUNKS + 10) {
                c.append_note("t1", &format!("{i},")).unwrap();
            }
            c.set_bookmark("t1", true).unwrap();
        }
        let c = Client::open(&path).unwrap();
        assert_eq!(c.event_info().unwrap().time_zone, "Europe/Paris");
        assert!(c.note("t1").unwrap().ends_with("73,"));
        assert_eq!(c.bookmarks().unwrap(), vec!["t1"]);
        assert!(c.status().pending_changes > 0);
    }

    fn talk(id: &str) -> NewSession {
        NewSession {
            id: id.into(),
            title: format!("Talk {id}"),
            room: "Hall A".into(),
            start_unix: 1_781_000_000,
            end_unix: 1_781_001_800,
            ..Default::default()
        }
    }

    #[test]
    fn an_agenda_opens_from_its_view_and_loads_only_when_needed() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let agenda = DocId::parse("agenda/conf").unwrap();
        {
            let c = Client::with_store(store.clone()).unwrap();
            c.join(&link(Role::Organizer, "org")).unwrap();
            c.set_event("Conf", "Europe/Brussels").unwrap();
            c.add_session(talk("t1")).unwrap();
            c.add_session(talk("t2")).unwrap();
            // Listing builds the view; closing stores it.
            assert_eq!(c.sessions().unwrap().len(), 2);
        }
        let c = Client::with_store(store.clone()).unwrap();
        assert!(
            c.lock().unloaded.contains_key(&agenda),
            "listed from the view"
        );
        assert_eq!(c.sessions().unwrap().len(), 2);
        assert_eq!(c.event_info().unwrap().time_zone, "Europe/Brussels");
        assert!(c.lock().unloaded.contains_key(&agenda), "still not loaded");
        // An edit loads the document, and the view follows it.
        c.cancel_session("t1").unwrap();
        assert!(c.lock().unloaded.is_empty());
        assert_eq!(
            c.session("t1").unwrap().unwrap().status,
            crate::model::SessionStatus::Cancelled
        );
    }

    #[test]
    fn a_device_that_never_lists_builds_no_view_and_reads_the_document() {
        let c = Client::in_memory().unwrap();
        c.join(&link(Role::Organizer, "org")).unwrap();
        c.add_session(talk("t1")).unwrap();
        assert_eq!(c.session("t1").unwrap().unwrap().title, "Talk t1");
        assert!(c.lock().views.is_empty(), "a lookup builds no view");
        assert_eq!(c.sessions().unwrap().len(), 1);
        assert_eq!(c.lock().views.len(), 1, "a listing does");
    }

    #[test]
    fn a_view_left_behind_by_a_crash_is_not_used() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let agenda = DocId::parse("agenda/conf").unwrap();
        {
            let c = Client::with_store(store.clone()).unwrap();
            c.join(&link(Role::Organizer, "org")).unwrap();
            c.add_session(talk("t1")).unwrap();
        }
        // The process dies after an edit, before the view is stored.
        let c = Client::with_store(store.clone()).unwrap();
        c.add_session(talk("t2")).unwrap();
        std::mem::forget(c);
        let c = Client::with_store(store.clone()).unwrap();
        assert!(
            !c.lock().unloaded.contains_key(&agenda),
            "loaded: stale view"
        );
        let ids: Vec<String> = c.sessions().unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["t1", "t2"]);
        drop(c);
        // Rebuilt and stored at that open: the next one uses it again.
        let c = Client::with_store(store).unwrap();
        assert!(c.lock().unloaded.contains_key(&agenda));
        assert_eq!(c.sessions().unwrap().len(), 2);
    }

    #[test]
    fn a_corrupt_document_is_a_clear_error() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        store
            .append_chunks("agenda/conf", &[b"not automerge".to_vec()])
            .unwrap();
        let err = Client::with_store(store).unwrap_err();
        assert!(err.to_string().contains("agenda/conf is corrupt"), "{err}");
    }
}
