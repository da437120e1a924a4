//! Revoked access: a user's, or one device's, connections are closed and
//! refused until the operator lifts it.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, EventId, UserId};
use crate::token::TokenClaims;

/// One revocation: every device of `user` in `event`, or only `device`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Revocation {
    /// The event.
    pub event: EventId,
    /// The user.
    pub user: UserId,
    /// One device of the user; every device when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
}

impl Revocation {
    /// Whether a holder of `claims` is cut off by this revocation.
    pub fn covers(&self, claims: &TokenClaims) -> bool {
        self.event == claims.event
            && self.user == claims.user
            && self.device.as_ref().is_none_or(|d| *d == claims.device)
    }

    /// What the device is told.
    pub fn message(&self) -> String {
        match &self.device {
            Some(d) => format!(
                "the operator revoked device {d} of user {} in event {}",
                self.user, self.event
            ),
            None => format!(
                "the operator revoked every device of user {} in event {}",
                self.user, self.event
            ),
        }
    }
}
