//! Passes: a confirmed seat, signed with the server's Ed25519 key (the key
//! that signs tokens), so a door device checks it with no network.
//!
//! A pass is `LYP1.<claims>.<signature>` (both base64url, no padding; the
//! claims in postcard): short enough for a QR code.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use crate::ids::{EventId, RequestId, SessionId, UserId};

/// What a pass says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassClaims {
    /// The event.
    pub event: EventId,
    /// The session the seat is in.
    pub session: SessionId,
    /// Whose seat.
    pub user: UserId,
    /// The request that got the seat (one check-in per request).
    pub request: RequestId,
    /// Valid until (the session's end), Unix seconds.
    pub valid_until: u64,
}

/// Why a pass was refused at the door.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PassError {
    /// Not a pass at all.
    #[error("not a Lanyard pass: {0}")]
    Malformed(String),
    /// The signature is not the server's: forged or altered.
    #[error("forged pass: the signature is not this event's server's")]
    Forged,
    /// A pass of another event.
    #[error("pass for event {pass_event}, not {event}")]
    WrongEvent {
        /// The pass's event.
        pass_event: String,
        /// The door's event.
        event: String,
    },
    /// The session is over.
    #[error("expired pass: valid until {valid_until} (Unix time)")]
    Expired {
        /// Its end.
        valid_until: u64,
    },
}

const PREFIX: &str = "LYP1.";

/// Longest pass accepted, checked before decoding.
pub const MAX_PASS_LEN: usize = 1024;

/// Signs `claims` with the server's key.
pub fn sign_pass(claims: &PassClaims, key: &Ed25519KeyPair) -> String {
    // Plain structs of ids and integers always serialize.
    let payload = postcard::to_allocvec(claims).unwrap_or_default();
    let sig = key.sign(&payload);
    format!(
        "{PREFIX}{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(sig.as_ref())
    )
}

/// Checks a pass against the server's public key, the door's event and the
/// time: its claims when it is good.
pub fn verify_pass(
    pass: &str,
    public_key: &[u8],
    event: &EventId,
    now_unix: u64,
) -> Result<PassClaims, PassError> {
    let pass = pass.trim();
    if pass.len() > MAX_PASS_LEN {
        return Err(PassError::Malformed(format!(
            "longer than {MAX_PASS_LEN} characters"
        )));
    }
    let body = pass
        .strip_prefix(PREFIX)
        .ok_or_else(|| PassError::Malformed(format!("does not start with {PREFIX}")))?;
    let (payload, sig) = body
        .split_once('.')
        .ok_or_else(|| PassError::Malformed("no signature".into()))?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| PassError::Malformed(format!("claims: {e}")))?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|e| PassError::Malformed(format!("signature: {e}")))?;
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&payload, &sig)
        .map_err(|_| PassError::Forged)?;
    let claims: PassClaims =
        postcard::from_bytes(&payload).map_err(|e| PassError::Malformed(e.to_string()))?;
    if claims.event != *event {
        return Err(PassError::WrongEvent {
            pass_event: claims.event.to_string(),
            event: event.to_string(),
        });
    }
    if now_unix > claims.valid_until {
        return Err(PassError::Expired {
            valid_until: claims.valid_until,
        });
    }
    Ok(claims)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use ring::signature::KeyPair as _;

    use super::*;

    fn claims() -> PassClaims {
        PassClaims {
            event: EventId::new("conf").unwrap(),
            session: SessionId::new("w1").unwrap(),
            user: UserId::new("ann").unwrap(),
            request: RequestId::new("r1").unwrap(),
            valid_until: 1000,
        }
    }

    #[test]
    fn a_pass_verifies_and_every_kind_of_bad_pass_is_named() {
        let key = Ed25519KeyPair::from_seed_unchecked(&[3; 32]).unwrap();
        let public = key.public_key().as_ref().to_vec();
        let event = EventId::new("conf").unwrap();
        let pass = sign_pass(&claims(), &key);
        assert!(pass.len() < 200, "{}", pass.len());
        assert_eq!(verify_pass(&pass, &public, &event, 999).unwrap(), claims());
        // Another key signed it.
        let other = Ed25519KeyPair::from_seed_unchecked(&[4; 32]).unwrap();
        let forged = sign_pass(&claims(), &other);
        assert_eq!(
            verify_pass(&forged, &public, &event, 1),
            Err(PassError::Forged)
        );
        // Altered claims: another user on the same signature.
        let mut altered = claims();
        altered.user = UserId::new("mallory").unwrap();
        let tail = pass.rsplit_once('.').unwrap().1;
        let payload = URL_SAFE_NO_PAD.encode(postcard::to_allocvec(&altered).unwrap());
        let altered = format!("{PREFIX}{payload}.{tail}");
        assert_eq!(
            verify_pass(&altered, &public, &event, 1),
            Err(PassError::Forged)
        );
        assert!(matches!(
            verify_pass(&pass, &public, &EventId::new("other").unwrap(), 1),
            Err(PassError::WrongEvent { .. })
        ));
        assert!(matches!(
            verify_pass(&pass, &public, &event, 1001),
            Err(PassError::Expired { valid_until: 1000 })
        ));
        for bad in ["", "hello", "LYP1.", "LYP1.!!.??", &"x".repeat(5000)] {
            assert!(
                matches!(
                    verify_pass(bad, &public, &event, 1),
                    Err(PassError::Malformed(_))
                ),
                "{bad:.20}"
            );
        }
    }
}
