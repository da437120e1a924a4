//! # lanyard-client-core
//!
//! The core that attendee and organizer apps embed. It keeps the agenda and
//! the user's notes and bookmarks on the device as Automerge documents in a
//! [`Store`] (sled by default), works fully offline, and syncs with a
//! `lanyard-server` over QUIC whenever the network allows.
//!
//! The API is FFI-friendly: a cloneable [`Client`] handle, owned types, no
//! lifetimes, error enums ([`ClientError`], [`SyncError`]).
//!
//! ```
//! use lanyard_client_core::Client;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::in_memory()?;
//! // Without joining an event there is nothing to show.
//! assert!(client.sessions().is_err());
//! assert_eq!(client.status().pending_changes, 0);
//! # Ok(()) }
//! ```
//!
//! After `join(link)` with an invite link, `sessions()`, `set_note()`,
//! `set_bookmark()` and (for organizers) `move_session()` work offline;
//! `sync()` or `start_background()` exchange changes with the server.
//!
//! Reading and writing schedule files (organizer tools; phones never need
//! them) is the `lanyard-schedule` crate's job: it imports through
//! [`Client::edit_agenda`] and exports what [`Client::sessions`] lists.

pub mod alerts;
mod client;
pub mod docs;
mod error;
pub mod model;
pub mod resolve;
pub mod seats;
mod sync;
pub mod time;
pub mod tls;
mod view;

pub use alerts::{Alert, AlertKind, AlertListener};
pub use client::Client;
pub use docs::{AgendaEdit, AgendaEditor, AppliedEdits};
pub use error::{ClientError, LimitKind, SyncError};
pub use lanyard_store::{MemoryStore, SledStore, Store, StoreError};
pub use model::{
    Announcement, EventInfo, Identity, Link, NewSession, RefusedChange, Room, Session,
    SessionDetails, SessionStatus, SessionUpdate, SyncReport, SyncStatus,
};
pub use resolve::{KeptEdit, ResolveReport};
pub use seats::{CheckIn, DoubleUse, Reservation, ReservationState, SeatCount, SessionCheckins};
pub use sync::{shared_endpoint, BackgroundOptions, BackgroundSync, Received, HANDSHAKE_TIMEOUT};
