//! # lanyard-ffi
//!
//! A thin [UniFFI](https://mozilla.github.io/uniffi-rs/) façade over
//! [`lanyard_client_core`], for Kotlin (Android), Swift (iOS) and Python.
//! One object, [`LanyardClient`], owns the device's store and a small tokio
//! runtime of its own; network calls are `async` and run on that runtime,
//! never on the caller's thread. Local reads and edits are synchronous: they
//! touch only the on-device database and are on disk when they return.
//!
//! Errors are one flat enum, [`LanyardError`], whose variants carry the
//! core's message. Apps receive sync-state changes and schedule-change
//! alerts through a [`LanyardListener`] they implement.
//!
//! Bindings are generated in library mode from the built library by
//! `scripts/bindings.sh` (see the README's section for app developers).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lanyard_client_core::{
    Alert, AlertKind, AlertListener, Announcement, BackgroundOptions, BackgroundSync, CheckIn,
    Client, ClientError, EventInfo, Identity, Link, NewSession, RefusedChange, Reservation,
    ReservationState, Room, SeatCount, Session, SessionStatus, SyncError, SyncReport, SyncStatus,
};
use lanyard_client_core::{KeptEdit, ResolveReport};

uniffi::setup_scaffolding!();

// ----- the core's types, exposed as they are -----

#[uniffi::remote(Enum)]
pub enum SessionStatus {
    Scheduled,
    Moved,
    Cancelled,
}

#[uniffi::remote(Record)]
pub struct Session {
    pub id: String,
    pub title: String,
    pub abstract_text: String,
    pub room: String,
    pub start_unix: i64,
    pub end_unix: i64,
    pub track: String,
    pub speakers: Vec<String>,
    pub status: SessionStatus,
    pub url: String,
    pub links: Vec<Link>,
    pub language: String,
    pub kind: String,
    pub capacity: u32,
}

#[uniffi::remote(Record)]
pub struct Link {
    pub url: String,
    pub title: String,
}

#[uniffi::remote(Record)]
pub struct NewSession {
    pub id: String,
    pub title: String,
    pub abstract_text: String,
    pub room: String,
    pub start_unix: i64,
    pub end_unix: i64,
    pub track: String,
    pub speakers: Vec<String>,
}

#[uniffi::remote(Record)]
pub struct Room {
    pub name: String,
    pub capacity: u32,
}

#[uniffi::remote(Record)]
pub struct Announcement {
    pub text: String,
    pub at_unix: i64,
}

#[uniffi::remote(Record)]
pub struct EventInfo {
    pub id: String,
    pub name: String,
    pub time_zone: String,
}

#[uniffi::remote(Record)]
pub struct Identity {
    pub server: String,
    pub event: String,
    pub user: String,
    pub role: String,
    pub device: String,
    pub expires_at_unix: u64,
}

#[uniffi::remote(Record)]
pub struct RefusedChange {
    pub doc: String,
    pub change: String,
    pub message: String,
}

#[uniffi::remote(Record)]
pub struct SyncStatus {
    pub pending_changes: u64,
    pub last_sync_unix: Option<i64>,
    pub refused: Vec<RefusedChange>,
    pub kept_edits: u64,
    pub connected: bool,
    pub last_error: Option<String>,
    pub retries: u64,
}

#[uniffi::remote(Record)]
pub struct KeptEdit {
    pub doc: String,
    pub session: Option<String>,
    pub text: String,
    pub reason: String,
}

#[uniffi::remote(Record)]
pub struct ResolveReport {
    pub set_aside: u64,
    pub redone: Vec<String>,
    pub new_changes: u64,
    pub kept: Vec<KeptEdit>,
}

#[uniffi::remote(Record)]
pub struct SyncReport {
    pub received_changes: u64,
    pub acknowledged_changes: u64,
    pub refused: Vec<RefusedChange>,
}

#[uniffi::remote(Enum)]
pub enum AlertKind {
    Added,
    Moved,
    Cancelled,
    Reinstated,
    Announcement,
    Link,
    SeatConfirmed,
    SeatWaitlisted,
    SeatPromoted,
    SeatOffered,
    SeatOfferExpired,
    SeatReleased,
    SeatRefused,
}

#[uniffi::remote(Enum)]
pub enum ReservationState {
    Pending,
    Confirmed,
    Waitlisted,
    Offered,
    Refused,
    Cancelled,
}

#[uniffi::remote(Record)]
pub struct Reservation {
    pub session: String,
    pub state: ReservationState,
    pub position: Option<u32>,
    pub reason: Option<String>,
    pub updated_unix_ms: i64,
    pub offer_until_unix_ms: Option<i64>,
    pub arrival: u64,
    pub pass: Option<String>,
}

#[uniffi::remote(Record)]
pub struct CheckIn {
    pub user: String,
    pub session: String,
    pub checked_in: u32,
    pub capacity: u32,
}

/// How full one session is, as last synced.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SessionSeats {
    /// The session's id.
    pub session_id: String,
    /// Seats (0: no reservations).
    pub capacity: u32,
    /// Seats confirmed.
    pub confirmed: u32,
    /// Seats offered from the waitlist, not accepted yet.
    pub offered: u32,
    /// People waiting.
    pub waitlist: u32,
    /// People checked in at the doors.
    pub checked_in: u32,
    /// Every seat is taken.
    pub full: bool,
}

#[uniffi::remote(Record)]
pub struct Alert {
    pub kind: AlertKind,
    pub session: Option<Session>,
    pub previous_room: Option<String>,
    pub previous_start_unix: Option<i64>,
    pub announcement: Option<Announcement>,
    pub link: Option<Link>,
    pub reservation: Option<Reservation>,
    pub bookmarked: bool,
    pub message: String,
}

/// A note of the attendee on one session.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Note {
    /// The session's id.
    pub session_id: String,
    /// The note's text.
    pub text: String,
}

// ----- errors -----

/// Every failure, as one flat enum: match on the variant, show the message.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum LanyardError {
    /// Nothing to do before `join` with an invite link.
    #[error("{0}")]
    NotJoined(String),
    /// The invite link is malformed or not a Lanyard link.
    #[error("{0}")]
    InvalidLink(String),
    /// An organizer-only call on an attendee's device.
    #[error("{0}")]
    OrganizersOnly(String),
    /// A bad argument: an id, a time, a time zone, an unknown session.
    #[error("{0}")]
    InvalidInput(String),
    /// The edit would make a change or document larger than the server
    /// accepts (the message names the limit); nothing was changed.
    #[error("{0}")]
    TooLarge(String),
    /// The on-device database failed (full disk, corrupt file); nothing
    /// was changed.
    #[error("{0}")]
    Storage(String),
    /// The server could not be reached; local data is kept for later.
    #[error("{0}")]
    Unreachable(String),
    /// The server is overloaded and asked the device to retry later.
    #[error("{0}")]
    Overloaded(String),
    /// The sync did not finish in time; it goes on at the next sync.
    #[error("{0}")]
    Timeout(String),
    /// The token was refused (expired, wrong event, revoked) or the server's
    /// certificate does not match the link: ask for a new invite link.
    #[error("{0}")]
    Unauthorized(String),
    /// The connection broke, or the server spoke an unexpected protocol.
    #[error("{0}")]
    Connection(String),
}

impl From<ClientError> for LanyardError {
    fn from(e: ClientError) -> Self {
        let message = e.to_string();
        match e {
            ClientError::NotJoined => LanyardError::NotJoined(message),
            ClientError::OrganizersOnly => LanyardError::OrganizersOnly(message),
            ClientError::Link(_) => LanyardError::InvalidLink(message),
            ClientError::Store(_) | ClientError::Corrupt { .. } => LanyardError::Storage(message),
            ClientError::OverLimit { .. } => LanyardError::TooLarge(message),
            _ => LanyardError::InvalidInput(message),
        }
    }
}

impl From<SyncError> for LanyardError {
    fn from(e: SyncError) -> Self {
        let message = e.to_string();
        match e {
            SyncError::NotJoined => LanyardError::NotJoined(message),
            SyncError::Unreachable(_) => LanyardError::Unreachable(message),
            SyncError::Overloaded { .. } => LanyardError::Overloaded(message),
            SyncError::Timeout { .. } => LanyardError::Timeout(message),
            SyncError::TokenExpired(_) | SyncError::Unauthorized(_) | SyncError::PinMismatch => {
                LanyardError::Unauthorized(message)
            }
            SyncError::Store(_) => LanyardError::Storage(message),
            _ => LanyardError::Connection(message),
        }
    }
}

type Result<T> = std::result::Result<T, LanyardError>;

// ----- the listener -----

/// Implemented by the app to hear about sync state and schedule changes.
/// Called on one of the core's threads: hop to the UI thread before
/// touching views. Keep calls short.
#[uniffi::export(with_foreign)]
pub trait LanyardListener: Send + Sync {
    /// The sync status changed (connection, pending changes, last error).
    fn on_status(&self, status: SyncStatus);
    /// A schedule change arrived from the server (see `Alert::message`).
    fn on_alert(&self, alert: Alert);
}

struct AlertsTo(Arc<dyn LanyardListener>);

impl AlertListener for AlertsTo {
    fn on_alert(&self, alert: Alert) {
        self.0.on_alert(alert);
    }
}

/// A registered listener: its alert registration and its status task.
struct Registration {
    alert_id: u64,
    status_task: tokio::task::JoinHandle<()>,
}

// ----- the client -----

/// The device's Lanyard client: agenda, notes and bookmarks, offline-first,
/// synced with the event's server when the network allows.
#[derive(uniffi::Object)]
pub struct LanyardClient {
    client: Client,
    /// `None` only while being dropped.
    runtime: Option<tokio::runtime::Runtime>,
    background: Mutex<Option<BackgroundSync>>,
    listener: Mutex<Option<Registration>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Threads of the core's runtime: sync is I/O-bound, two is plenty.
const RUNTIME_THREADS: usize = 2;

#[uniffi::export]
impl LanyardClient {
    /// Opens (or creates) the device's database in directory `path`, and
    /// starts the core's runtime (two threads named `lanyard-core`).
    #[uniffi::constructor]
    pub fn open(path: String) -> Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("lanyard-core")
            .enable_all()
            .build()
            .map_err(|e| LanyardError::Storage(format!("cannot start the core's runtime: {e}")))?;
        let client = Client::open(&path)?;
        Ok(Arc::new(LanyardClient {
            client,
            runtime: Some(runtime),
            background: Mutex::new(None),
            listener: Mutex::new(None),
        }))
    }

    /// Stores the credentials of an invite link (no network).
    pub fn join(&self, link: String) -> Result<Identity> {
        Ok(self.client.join(&link)?)
    }

    /// Who this device is, once joined.
    pub fn identity(&self) -> Option<Identity> {
        self.client.identity()
    }

    // ----- agenda -----

    /// The event's id, name and IANA time zone.
    pub fn event_info(&self) -> Result<EventInfo> {
        Ok(self.client.event_info()?)
    }

    /// Every session, by start time.
    pub fn sessions(&self) -> Result<Vec<Session>> {
        Ok(self.client.sessions()?)
    }

    /// The days (`YYYY-MM-DD`, event time zone) that have sessions.
    pub fn days(&self) -> Result<Vec<String>> {
        Ok(self.client.days()?)
    }

    /// Sessions starting on `day` (`YYYY-MM-DD`, event time zone).
    pub fn sessions_on(&self, day: String) -> Result<Vec<Session>> {
        Ok(self.client.sessions_on(&day)?)
    }

    /// Sessions in one room, by start time.
    pub fn sessions_in_room(&self, room: String) -> Result<Vec<Session>> {
        Ok(self.client.sessions_in_room(&room)?)
    }

    /// Sessions whose title, abstract, room, track or a speaker contains
    /// every word of `query` (case-insensitive), by start time.
    pub fn search(&self, query: String) -> Result<Vec<Session>> {
        let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        Ok(self
            .client
            .sessions()?
            .into_iter()
            .filter(|s| {
                let text = format!(
                    "{}\n{}\n{}\n{}\n{}",
                    s.title,
                    s.abstract_text,
                    s.room,
                    s.track,
                    s.speakers.join("\n")
                )
                .to_lowercase();
                words.iter().all(|w| text.contains(w.as_str()))
            })
            .collect())
    }

    /// One session, if it exists.
    pub fn session(&self, id: String) -> Result<Option<Session>> {
        Ok(self.client.session(&id)?)
    }

    /// The rooms.
    pub fn rooms(&self) -> Result<Vec<Room>> {
        Ok(self.client.rooms()?)
    }

    /// The organizers' announcements, oldest first.
    pub fn announcements(&self) -> Result<Vec<Announcement>> {
        Ok(self.client.announcements()?)
    }

    /// An instant as RFC 3339 in the event's time zone (what to show,
    /// whatever zone the phone is set to), e.g. `2026-06-10T09:00:00-04:00`.
    pub fn event_time(&self, unix: i64) -> Result<String> {
        let tz = self.client.event_info()?.time_zone;
        Ok(lanyard_client_core::time::format_rfc3339(unix, &tz)?)
    }

    // ----- seats -----

    /// Reserves a seat, offline if need be: on disk when this returns,
    /// pending until the server decides. Returns the request's id.
    pub fn reserve(&self, session_id: String) -> Result<String> {
        Ok(self.client.reserve(&session_id)?)
    }

    /// Gives back a seat, an offered seat or a waitlist place.
    pub fn cancel_reservation(&self, session_id: String) -> Result<String> {
        Ok(self.client.cancel_reservation(&session_id)?)
    }

    /// Accepts a seat offered from the waitlist.
    pub fn accept_offer(&self, session_id: String) -> Result<String> {
        Ok(self.client.accept_offer(&session_id)?)
    }

    /// This user's reservations, one per session.
    pub fn reservations(&self) -> Result<Vec<Reservation>> {
        Ok(self.client.reservations()?)
    }

    /// How full each session with a capacity is.
    pub fn seat_counts(&self) -> Result<Vec<SessionSeats>> {
        Ok(self
            .client
            .seat_counts()?
            .into_iter()
            .map(|(id, c): (String, SeatCount)| SessionSeats {
                session_id: id,
                capacity: c.capacity,
                confirmed: c.confirmed,
                offered: c.offered,
                waitlist: c.waitlist,
                checked_in: c.checked_in,
                full: c.full(),
            })
            .collect())
    }

    /// The pass of your confirmed seat, to show as a QR code at the door.
    pub fn seat_pass(&self, session_id: String) -> Result<String> {
        Ok(self.client.pass(&session_id)?)
    }

    /// Checks a pass in at this door, offline (organizers only).
    pub fn check_in(&self, pass: String) -> Result<CheckIn> {
        Ok(self.client.check_in(&pass)?)
    }

    /// Sets a session's seat capacity (organizers only; 0: no reservations).
    pub fn set_capacity(&self, session_id: String, capacity: u32) -> Result<()> {
        Ok(self.client.set_capacity(&session_id, capacity)?)
    }

    // ----- bookmarks and notes -----

    /// Bookmarked session ids.
    pub fn bookmarks(&self) -> Result<Vec<String>> {
        Ok(self.client.bookmarks()?)
    }

    /// Sets or clears a bookmark.
    pub fn set_bookmark(&self, session_id: String, on: bool) -> Result<()> {
        Ok(self.client.set_bookmark(&session_id, on)?)
    }

    /// The note on a session (`""` if none).
    pub fn note(&self, session_id: String) -> Result<String> {
        Ok(self.client.note(&session_id)?)
    }

    /// Every non-empty note.
    pub fn notes(&self) -> Result<Vec<Note>> {
        Ok(self
            .client
            .notes()?
            .into_iter()
            .map(|(session_id, text)| Note { session_id, text })
            .collect())
    }

    /// Replaces a note (stored as the smallest edit, so concurrent edits
    /// on two devices merge).
    pub fn set_note(&self, session_id: String, text: String) -> Result<()> {
        Ok(self.client.set_note(&session_id, &text)?)
    }

    /// Deletes `delete` characters at character `position` and inserts
    /// `insert` there: what a text field's edit events map to.
    pub fn splice_note(
        &self,
        session_id: String,
        position: u64,
        delete: u64,
        insert: String,
    ) -> Result<()> {
        Ok(self
            .client
            .splice_note(&session_id, position, delete, &insert)?)
    }

    // ----- organizer edits -----

    /// Sets the event's name and IANA time zone (organizers only).
    pub fn set_event(&self, name: String, time_zone: String) -> Result<()> {
        Ok(self.client.set_event(&name, &time_zone)?)
    }

    /// Adds a room or changes its capacity (organizers only).
    pub fn put_room(&self, room: Room) -> Result<()> {
        Ok(self.client.put_room(room)?)
    }

    /// Adds a session (organizers only).
    pub fn add_session(&self, session: NewSession) -> Result<()> {
        Ok(self.client.add_session(session)?)
    }

    /// Moves a session to another room and/or time (organizers only); give
    /// both times or neither.
    pub fn move_session(
        &self,
        session_id: String,
        room: Option<String>,
        start_unix: Option<i64>,
        end_unix: Option<i64>,
    ) -> Result<()> {
        Ok(self
            .client
            .move_session(&session_id, room, start_unix, end_unix)?)
    }

    /// Cancels a session (organizers only); it stays in the agenda.
    pub fn cancel_session(&self, session_id: String) -> Result<()> {
        Ok(self.client.cancel_session(&session_id)?)
    }

    /// Adds a link to a session, e.g. its recording (organizers only); the
    /// URL must be an absolute http(s) URL. Attendees who bookmarked the
    /// session get an `AlertKind::Link` alert.
    pub fn add_session_link(&self, session_id: String, url: String, title: String) -> Result<()> {
        Ok(self.client.add_session_link(&session_id, &url, &title)?)
    }

    /// Posts an announcement (organizers only).
    pub fn announce(&self, text: String) -> Result<()> {
        Ok(self.client.announce(&text)?)
    }

    // ----- sync -----

    /// Pending changes, last sync, refused changes, connection, last error.
    pub fn status(&self) -> SyncStatus {
        self.client.status()
    }

    /// Sets aside changes the server refused and what was built on them,
    /// redoes what can be redone within the server's limits, keeps the rest
    /// (see `kept_edits`). Call when `status().refused` is not empty.
    pub fn resolve_refused(&self) -> Result<ResolveReport> {
        Ok(self.client.resolve_refused()?)
    }

    /// Edits set aside that could not be redone (note texts in full).
    pub fn kept_edits(&self) -> Result<Vec<KeptEdit>> {
        Ok(self.client.kept_edits()?)
    }

    /// Forgets the kept edits, once the person has seen them.
    pub fn clear_kept_edits(&self) -> Result<()> {
        Ok(self.client.clear_kept_edits()?)
    }

    /// Syncs once, on the core's runtime: returns when every document is in
    /// sync, or fails after `timeout_secs`.
    pub async fn sync_now(&self, timeout_secs: u32) -> Result<SyncReport> {
        let client = self.client.clone();
        let timeout = Duration::from_secs(u64::from(timeout_secs.max(1)));
        self.handle()
            .spawn(async move { client.sync(timeout).await })
            .await
            .map_err(|e| LanyardError::Connection(format!("sync task failed: {e}")))?
            .map_err(LanyardError::from)
    }

    /// Starts background sync on the core's runtime: stays connected,
    /// receives pushed changes, sends local edits at once, reconnects with
    /// backoff. Starting it twice keeps the first.
    pub fn start_sync(&self) {
        let mut bg = locked(&self.background);
        if bg.is_none() {
            let _guard = self.handle().enter();
            *bg = Some(self.client.start_background(BackgroundOptions::default()));
        }
    }

    /// Stops background sync and waits for the connection to close.
    pub async fn stop_sync(&self) {
        let bg = locked(&self.background).take();
        if let Some(bg) = bg {
            let _ = self.handle().spawn(bg.stop()).await;
        }
    }

    /// Tells the core the network changed (call it from the platform's
    /// network callback): a waiting background sync reconnects at once and
    /// a live connection moves to the new network.
    pub fn network_changed(&self) {
        let _guard = self.handle().enter();
        self.client.network_changed();
    }

    /// Sets the listener (replacing any previous one): it hears every
    /// status change and every schedule-change alert from now on. Needs a
    /// joined device.
    pub fn set_listener(&self, listener: Arc<dyn LanyardListener>) -> Result<()> {
        self.clear_listener();
        let alert_id = self
            .client
            .add_alert_listener(Arc::new(AlertsTo(Arc::clone(&listener))))?;
        let client = self.client.clone();
        let mut changes = client.status_changes();
        let status_task = self.handle().spawn(async move {
            let mut last = None;
            loop {
                let now = client.status();
                if last.as_ref() != Some(&now) {
                    listener.on_status(now.clone());
                    last = Some(now);
                }
                if changes.changed().await.is_err() {
                    break;
                }
            }
        });
        *locked(&self.listener) = Some(Registration {
            alert_id,
            status_task,
        });
        Ok(())
    }

    /// Removes the listener, if any.
    pub fn clear_listener(&self) {
        if let Some(r) = locked(&self.listener).take() {
            r.status_task.abort();
            self.client.remove_alert_listener(r.alert_id);
        }
    }
}

impl LanyardClient {
    fn handle(&self) -> tokio::runtime::Handle {
        match &self.runtime {
            Some(rt) => rt.handle().clone(),
            // Unreachable: the runtime is taken only in `drop`.
            None => tokio::runtime::Handle::current(),
        }
    }
}

impl Drop for LanyardClient {
    fn drop(&mut self) {
        self.clear_listener();
        let bg = locked(&self.background).take();
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        if let Some(bg) = bg {
            // Close the connection politely (the server frees it at once),
            // but never block the caller for long, and never block inside
            // an async context (that would panic).
            if tokio::runtime::Handle::try_current().is_err() {
                runtime.block_on(async {
                    let _ = tokio::time::timeout(Duration::from_secs(2), bg.stop()).await;
                });
            }
        }
        runtime.shutdown_background();
    }
}
