//! Who is connected (the admin API's device list), and the revocations
//! kept in the store.

use std::collections::HashMap;
use std::sync::Mutex;

use lanyard_protocol::{DeviceId, EventId, Revocation, Role, TokenClaims, UserId};
use lanyard_store::{Store, StoreError};
use serde::{Deserialize, Serialize};

/// The store's metadata key holding the revocations (JSON).
pub const REVOCATIONS_KEY: &str = "revocations";

/// The revocations stored in `store` (none when the key is absent).
pub fn load_revocations(store: &dyn Store) -> Result<Vec<Revocation>, StoreError> {
    match store.get_meta(REVOCATIONS_KEY)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Corrupt(format!("the stored revocations cannot be read: {e}"))
        }),
        None => Ok(Vec::new()),
    }
}

/// Stores `list` as the revocations, durably.
pub fn save_revocations(store: &dyn Store, list: &[Revocation]) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(list)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode the revocations: {e}")))?;
    store.put_meta(REVOCATIONS_KEY, &bytes)
}

/// One device as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// The user.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
    /// Organizer or attendee.
    pub role: Role,
    /// Since when it has been connected (Unix ms), `None` when it is not.
    pub connected_since: Option<u64>,
    /// When the server last heard from it (Unix ms).
    pub last_seen: u64,
    /// Its last address (`IP:PORT`).
    pub address: String,
}

/// A device: event, user, device.
type DeviceKey = (EventId, UserId, DeviceId);

/// Each device seen, and its open sessions.
type Seen = HashMap<DeviceKey, (DeviceEntry, usize)>;

/// The devices the server has seen since it started, per event.
#[derive(Debug, Default)]
pub(crate) struct Devices {
    seen: Mutex<Seen>,
}

impl Devices {
    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A session of `claims` opened from `address` at `now_ms`.
    pub(crate) fn connected(&self, claims: &TokenClaims, address: String, now_ms: u64) {
        let key = (
            claims.event.clone(),
            claims.user.clone(),
            claims.device.clone(),
        );
        let mut seen = self.lock();
        let (entry, open) = seen.entry(key).or_insert_with(|| {
            (
                DeviceEntry {
                    user: claims.user.clone(),
                    device: claims.device.clone(),
                    role: claims.role,
                    connected_since: None,
                    last_seen: now_ms,
                    address: address.clone(),
                },
                0,
            )
        });
        *open += 1;
        entry.connected_since.get_or_insert(now_ms);
        entry.last_seen = now_ms;
        entry.address = address;
        entry.role = claims.role;
    }

    /// The device of `claims` was heard from.
    pub(crate) fn seen(&self, claims: &TokenClaims, now_ms: u64) {
        let key = (
            claims.event.clone(),
            claims.user.clone(),
            claims.device.clone(),
        );
        if let Some((entry, _)) = self.lock().get_mut(&key) {
            entry.last_seen = now_ms;
        }
    }

    /// A session of `claims` ended.
    pub(crate) fn closed(&self, claims: &TokenClaims, now_ms: u64) {
        let key = (
            claims.event.clone(),
            claims.user.clone(),
            claims.device.clone(),
        );
        if let Some((entry, open)) = self.lock().get_mut(&key) {
            *open = open.saturating_sub(1);
            entry.last_seen = now_ms;
            if *open == 0 {
                entry.connected_since = None;
            }
        }
    }

    /// The devices of `event`, by user and device.
    pub(crate) fn of_event(&self, event: &EventId) -> Vec<DeviceEntry> {
        let mut list: Vec<DeviceEntry> = self
            .lock()
            .iter()
            .filter(|((e, ..), _)| e == event)
            .map(|(_, (entry, _))| entry.clone())
            .collect();
        list.sort_by(|a, b| (&a.user, &a.device).cmp(&(&b.user, &b.device)));
        list
    }
}
