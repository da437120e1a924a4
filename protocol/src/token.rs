//! Access tokens: claims signed with the server's Ed25519 key.
//!
//! A token is `BASE64URL(postcard(claims)) "." BASE64URL(signature)`. Signing and
//! verification are pure functions: the caller supplies the key and the time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, DocId, EventId, UserId};

/// Longest token accepted, checked before decoding.
pub const MAX_TOKEN_LEN: usize = 2048;

/// What a token holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Writes the agenda; reads it; has their own notes.
    Organizer,
    /// Reads the agenda; reads and writes only their own notes and bookmarks.
    Attendee,
}

impl Role {
    /// `organizer` or `attendee`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Organizer => "organizer",
            Role::Attendee => "attendee",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "organizer" => Ok(Role::Organizer),
            "attendee" => Ok(Role::Attendee),
            other => Err(format!("unknown role {other:?} (organizer or attendee)")),
        }
    }
}

/// What a token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The event the token is valid for.
    pub event: EventId,
    /// The holder.
    pub user: UserId,
    /// The holder's role.
    pub role: Role,
    /// The device the token was issued for.
    pub device: DeviceId,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

impl TokenClaims {
    /// The documents this holder may read, in the order they are locked: the
    /// event's agenda, their own document, the doors' check-ins (organizers),
    /// the seat counts and their seat outcomes.
    pub fn readable_docs(&self) -> Vec<DocId> {
        let mut docs = vec![DocId::Agenda(self.event.clone()), self.own_doc()];
        if self.role == Role::Organizer {
            docs.push(DocId::Checkins(self.event.clone()));
        }
        docs.push(DocId::SeatCounts(self.event.clone()));
        docs.push(DocId::Seats(self.event.clone(), self.user.clone()));
        docs
    }

    /// The holder's own attendee document.
    pub fn own_doc(&self) -> DocId {
        DocId::Attendee(self.event.clone(), self.user.clone())
    }

    /// Whether the holder may read `doc`.
    pub fn may_read(&self, doc: &DocId) -> bool {
        match doc {
            DocId::Agenda(e) => *e == self.event,
            DocId::Attendee(e, u) | DocId::Seats(e, u) => *e == self.event && *u == self.user,
            DocId::SeatCounts(e) => *e == self.event,
            DocId::Checkins(e) => *e == self.event && self.role == Role::Organizer,
        }
    }

    /// Whether the holder may change `doc`.
    pub fn may_write(&self, doc: &DocId) -> bool {
        match doc {
            DocId::Agenda(e) => *e == self.event && self.role == Role::Organizer,
            DocId::Attendee(e, u) => *e == self.event && *u == self.user,
            // Seat outcomes and counts are decided by the server alone.
            DocId::SeatCounts(_) | DocId::Seats(..) => false,
            DocId::Checkins(e) => *e == self.event && self.role == Role::Organizer,
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not of the form `claims.signature`, bad base64, or bad claims.
    #[error("malformed token")]
    Malformed,
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// The signature does not match this server's key.
    #[error("token signature is not valid for this server")]
    BadSignature,
    /// The token's expiry has passed.
    #[error("token expired at {expired_at} (unix seconds)")]
    Expired {
        /// When it expired, seconds since the Unix epoch.
        expired_at: u64,
    },
    /// The token is for another event.
    #[error("token is for event {token_event}, not {wanted}")]
    WrongEvent {
        /// The event named in the token.
        token_event: String,
        /// The event the client asked for.
        wanted: String,
    },
}

/// Signs `claims` with `key` (deterministic: Ed25519 needs no randomness to sign).
pub fn sign(claims: &TokenClaims, key: &Ed25519KeyPair) -> String {
    // Serializing plain structs to a Vec cannot fail.
    let payload = postcard::to_allocvec(claims).unwrap_or_default();
    let sig = key.sign(&payload);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(sig.as_ref())
    )
}

/// Reads the claims without checking the signature (for a client showing who it is).
pub fn decode_unverified(token: &str) -> Result<TokenClaims, TokenError> {
    split(token).map(|(claims, _, _)| claims)
}

fn split(token: &str) -> Result<(TokenClaims, Vec<u8>, Vec<u8>), TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    let (p, s) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| TokenError::Malformed)?;
    let claims = postcard::from_bytes(&payload).map_err(|_| TokenError::Malformed)?;
    Ok((claims, payload, sig))
}

/// Checks signature and expiry; returns the claims.
pub fn verify(token: &str, public_key: &[u8], now_unix: u64) -> Result<TokenClaims, TokenError> {
    let (claims, payload, sig) = split(token)?;
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&payload, &sig)
        .map_err(|_| TokenError::BadSignature)?;
    if claims.expires_at <= now_unix {
        return Err(TokenError::Expired {
            expired_at: claims.expires_at,
        });
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair as _;

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    fn claims() -> TokenClaims {
        TokenClaims {
            event: EventId::new("conf").unwrap(),
            user: UserId::new("ann").unwrap(),
            role: Role::Attendee,
            device: DeviceId::new("phone").unwrap(),
            expires_at: 1000,
        }
    }

    #[test]
    fn sign_then_verify() {
        let k = key(1);
        let t = sign(&claims(), &k);
        assert_eq!(verify(&t, k.public_key().as_ref(), 999).unwrap(), claims());
        assert_eq!(decode_unverified(&t).unwrap(), claims());
    }

    #[test]
    fn refusals() {
        let k = key(1);
        let t = sign(&claims(), &k);
        assert_eq!(
            verify(&t, key(2).public_key().as_ref(), 10),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&t, k.public_key().as_ref(), 1000),
            Err(TokenError::Expired { expired_at: 1000 })
        );
        assert_eq!(
            verify("nope", k.public_key().as_ref(), 1),
            Err(TokenError::Malformed)
        );
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            verify(&long, k.public_key().as_ref(), 1),
            Err(TokenError::TooLong)
        );
        // A tampered payload fails the signature check.
        let (p, s) = t.split_once('.').unwrap();
        let mut c = claims();
        c.role = Role::Organizer;
        let forged = format!(
            "{}.{s}",
            URL_SAFE_NO_PAD.encode(postcard::to_allocvec(&c).unwrap())
        );
        assert_ne!(forged.split_once('.').unwrap().0, p);
        assert_eq!(
            verify(&forged, k.public_key().as_ref(), 1),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn access_rules() {
        let c = claims();
        let e = c.event.clone();
        assert!(c.may_read(&DocId::Agenda(e.clone())));
        assert!(!c.may_write(&DocId::Agenda(e.clone())));
        assert!(c.may_write(&c.own_doc()));
        let other = DocId::Attendee(e, UserId::new("bob").unwrap());
        assert!(!c.may_read(&other));
        assert!(!c.may_write(&other));
        let other_event = DocId::Agenda(EventId::new("other").unwrap());
        assert!(!c.may_read(&other_event));
    }
}
