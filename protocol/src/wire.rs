//! Wire messages and framing.
//!
//! Every message travels as one frame: a 4-byte big-endian length, then the
//! message in postcard encoding. The length is checked against the limit
//! *before* any buffer is allocated for the body.

use serde::{Deserialize, Serialize};

use crate::ids::{DocId, EventId};

/// ALPN protocol name; the version lives here, so a client speaking another
/// version fails the TLS handshake with `no_application_protocol`.
pub const ALPN: &[u8] = b"lanyard/3";

/// Protocol version number carried in [`ALPN`]. Version 2 announces the
/// server's [`Limits`] in the `Welcome`; version 3 adds the installation id
/// to `Hello` and the server's heads beacon ([`ServerMsg::Heads`]).
pub const PROTOCOL_VERSION: u32 = 3;

/// An installation id: random per install of the app, kept on the device.
/// All zeros means none was given.
pub type InstallationId = [u8; 16];

/// Size limits, all checked before allocation.
///
/// They are a protocol fact: the server announces its own in every
/// `Welcome`, and a device checks each local change against the last limits
/// it was told (or the defaults, before its first connection) *before*
/// committing it, so a change the server would refuse is never created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest frame body accepted, in bytes.
    pub max_frame: usize,
    /// Largest single Automerge change accepted, in bytes.
    pub max_change: usize,
    /// Most changes in one push.
    pub max_changes_per_push: usize,
    /// Largest agenda document the server keeps, in bytes of changes.
    pub max_doc: usize,
    /// Largest attendee document (notes and bookmarks) the server keeps.
    pub max_attendee_doc: usize,
    /// Most sessions (streams) one device may hold open at once.
    pub max_sessions_per_device: usize,
    /// Most sessions one user may hold open at once, over all devices.
    pub max_sessions_per_user: usize,
    /// Requests (frames) a session may send in a burst...
    pub request_burst: u32,
    /// ...and per second after it.
    pub requests_per_sec: u32,
}

impl Limits {
    /// The document-size limit that applies to `doc`.
    pub fn max_doc_for(&self, doc: &DocId) -> usize {
        match doc {
            DocId::Attendee(..) => self.max_attendee_doc,
            _ => self.max_doc,
        }
    }

    /// Most bytes of changes a device puts in one push: well under the frame
    /// limit (room for the framing and postcard's length prefixes).
    pub fn max_push_bytes(&self) -> usize {
        (self.max_frame / 2).max(1)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: 8 * 1024 * 1024,
            max_change: 1024 * 1024,
            max_changes_per_push: 10_000,
            max_doc: 64 * 1024 * 1024,
            max_attendee_doc: 8 * 1024 * 1024,
            max_sessions_per_device: 4,
            max_sessions_per_user: 16,
            request_burst: 200,
            requests_per_sec: 50,
        }
    }
}

/// A change hash (SHA-256 of an Automerge change).
pub type Hash = [u8; 32];

/// What a device holds of one document, sent on connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocDigest {
    /// The document.
    pub doc: DocId,
    /// The device's current heads.
    pub heads: Vec<Hash>,
    /// The last heads the server confirmed (everything under them is on the server).
    pub base: Vec<Hash>,
}

/// Changes for one document, and heads the server holds everything under.
///
/// A large catch-up comes as several updates in causal order; the `heads` of
/// each cover everything sent so far, so a device that loses the connection
/// in the middle resumes from the last update it applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocUpdate {
    /// The document.
    pub doc: DocId,
    /// Raw Automerge changes, in causal order.
    pub changes: Vec<Vec<u8>>,
    /// A whole compressed Automerge document (`save` format), sent instead of
    /// `changes` to a device that lacks most of the document; empty otherwise.
    pub snapshot: Vec<u8>,
    /// Heads the server holds everything under, covering these changes: the
    /// device's new base.
    pub heads: Vec<Hash>,
}

impl DocUpdate {
    /// Whether the update carries no change and no snapshot.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.snapshot.is_empty()
    }

    /// Bytes of document data carried (changes and snapshot).
    pub fn payload_len(&self) -> usize {
        self.changes.iter().map(Vec::len).sum::<usize>() + self.snapshot.len()
    }
}

/// Messages from a device to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// First message: credentials and a digest of every document held.
    Hello {
        /// The event the device wants (from its join link).
        event: EventId,
        /// The signed access token.
        token: String,
        /// What the device holds.
        docs: Vec<DocDigest>,
        /// This installation: a new session replaces one the same
        /// installation left open (its goodbye was lost).
        installation: InstallationId,
    },
    /// New local changes to one document.
    Push {
        /// The document.
        doc: DocId,
        /// Raw Automerge changes, in causal order.
        changes: Vec<Vec<u8>>,
    },
    /// The device misses changes (it saw heads it cannot reach): send all after `have`.
    Resync {
        /// The document.
        doc: DocId,
        /// Hashes the device holds (its heads and its base).
        have: Vec<Hash>,
    },
}

/// Why the server refused changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalReason {
    /// The token's role or user may not write (or read) this document.
    Forbidden,
    /// A change did not decode or could not be applied.
    Malformed,
    /// A change depends on changes the server does not have.
    MissingDeps,
    /// Too many or too large changes.
    TooLarge,
}

impl RefusalReason {
    /// Whether the device should keep retrying (only missing dependencies are transient).
    pub fn is_permanent(self) -> bool {
        !matches!(self, RefusalReason::MissingDeps)
    }
}

/// Messages from the server to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// Answer to `Hello`: for every readable document, what the device misses and the server's heads.
    Welcome {
        /// One entry per document the device may read.
        docs: Vec<DocUpdate>,
        /// The limits this server enforces: devices check their changes against them.
        limits: Limits,
    },
    /// New changes (pushed, or the answer to `Resync`).
    Update(DocUpdate),
    /// The server holds, flushed to disk, everything under `heads`.
    Ack {
        /// The document.
        doc: DocId,
        /// The server's heads after applying the push.
        heads: Vec<Hash>,
    },
    /// Changes refused; the server's copy is unchanged by them.
    Refused {
        /// The document the refusal is about.
        doc: DocId,
        /// The refused changes (empty when a whole request was refused).
        changes: Vec<Hash>,
        /// Why.
        reason: RefusalReason,
        /// A human-readable explanation naming the document.
        message: String,
        /// The server's heads for the document, when the device may read it.
        heads: Vec<Hash>,
    },
    /// A fatal error: the server closes the stream after this.
    Error {
        /// One of the [`ErrorCode`] values.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
    /// The server's heads of a document, sent a while after its last change
    /// (a beacon): a device lacking any of them asks with `Resync`.
    Heads {
        /// The document.
        doc: DocId,
        /// The server's heads.
        heads: Vec<Hash>,
    },
}

/// Error codes used in `Error` messages and as QUIC stream/connection codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A frame or message could not be decoded, or came out of order.
    Protocol,
    /// A frame was larger than the limit.
    FrameTooLarge,
    /// The stream ended in the middle of a frame.
    Truncated,
    /// The token was malformed or not signed by this server.
    Unauthorized,
    /// The token has expired.
    TokenExpired,
    /// The token is for another event.
    WrongEvent,
    /// The server is shutting down.
    Shutdown,
    /// The server failed internally (e.g. its disk).
    Internal,
    /// The server is over its limits; come back later.
    Overloaded,
    /// This device or user already holds as many sessions as allowed.
    TooManySessions,
    /// The session sent requests faster than allowed.
    RateLimited,
    /// A newer session of the same installation replaced this one.
    Replaced,
    /// The operator revoked this device's (or user's) access: retrying
    /// cannot help until they lift it.
    Revoked,
}

impl ErrorCode {
    /// The numeric code used on the QUIC wire.
    pub fn to_u32(self) -> u32 {
        match self {
            ErrorCode::Protocol => 1,
            ErrorCode::FrameTooLarge => 2,
            ErrorCode::Truncated => 3,
            ErrorCode::Unauthorized => 4,
            ErrorCode::TokenExpired => 5,
            ErrorCode::WrongEvent => 6,
            ErrorCode::Shutdown => 7,
            ErrorCode::Internal => 8,
            ErrorCode::Overloaded => 9,
            ErrorCode::TooManySessions => 10,
            ErrorCode::RateLimited => 11,
            ErrorCode::Replaced => 12,
            ErrorCode::Revoked => 13,
        }
    }

    /// The code for a numeric value, if known.
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => ErrorCode::Protocol,
            2 => ErrorCode::FrameTooLarge,
            3 => ErrorCode::Truncated,
            4 => ErrorCode::Unauthorized,
            5 => ErrorCode::TokenExpired,
            6 => ErrorCode::WrongEvent,
            7 => ErrorCode::Shutdown,
            8 => ErrorCode::Internal,
            9 => ErrorCode::Overloaded,
            10 => ErrorCode::TooManySessions,
            11 => ErrorCode::RateLimited,
            12 => ErrorCode::Replaced,
            13 => ErrorCode::Revoked,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ErrorCode::Protocol => "protocol error",
            ErrorCode::FrameTooLarge => "frame too large",
            ErrorCode::Truncated => "truncated frame",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token expired",
            ErrorCode::WrongEvent => "token for another event",
            ErrorCode::Shutdown => "server shutting down",
            ErrorCode::Internal => "internal server error",
            ErrorCode::Overloaded => "server overloaded",
            ErrorCode::TooManySessions => "too many sessions",
            ErrorCode::RateLimited => "too many requests",
            ErrorCode::Replaced => "replaced by a newer session of this installation",
            ErrorCode::Revoked => "access revoked by the operator",
        };
        f.write_str(s)
    }
}

/// The reason text of a connection closed with [`ErrorCode::Overloaded`]:
/// `retry-after-ms=N`, when the device may come back.
pub fn retry_after_reason(after: std::time::Duration) -> String {
    format!("retry-after-ms={}", after.as_millis())
}

/// Reads the hint of [`retry_after_reason`].
pub fn parse_retry_after(reason: &[u8]) -> Option<std::time::Duration> {
    let text = std::str::from_utf8(reason).ok()?;
    let ms = text
        .strip_prefix("retry-after-ms=")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(std::time::Duration::from_millis(ms))
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The announced length is over the limit.
    #[error("frame of {len} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The input ended in the middle of a frame.
    #[error("input ended inside a frame")]
    Truncated,
    /// The body is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl FrameError {
    /// The error code to close the stream with.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::Truncated => ErrorCode::Truncated,
            FrameError::Malformed(_) => ErrorCode::Protocol,
        }
    }
}

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// Reads a frame header and checks the length against `limit`.
pub fn body_len(header: [u8; HEADER_LEN], limit: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    Ok(len)
}

/// Encodes a message as one frame (header + body).
pub fn encode<M: Serialize>(msg: &M) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    // Serializing into a Vec only fails for types serde cannot express; ours can.
    let mut out = postcard::to_extend(msg, std::mem::take(&mut out)).unwrap_or_default();
    let len = (out.len() - HEADER_LEN) as u32;
    out[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    out
}

/// Decodes one message body (without header).
pub fn decode<'a, M: Deserialize<'a>>(body: &'a [u8]) -> Result<M, FrameError> {
    postcard::from_bytes(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Incremental frame splitter for byte streams (sans-IO).
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    limit: usize,
}

impl FrameDecoder {
    /// A decoder accepting bodies up to `limit` bytes.
    pub fn new(limit: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            limit,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next complete frame body, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&self.buf[..HEADER_LEN]);
        let len = body_len(h, self.limit)?;
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let body = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some(body))
    }

    /// Call at end of input: an error if a partial frame is buffered.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> ClientMsg {
        ClientMsg::Push {
            doc: DocId::Agenda(EventId::new("e").unwrap()),
            changes: vec![vec![1, 2, 3], vec![]],
        }
    }

    #[test]
    fn frames_round_trip() {
        let f = encode(&sample());
        let mut d = FrameDecoder::new(1024);
        d.push(&f[..3]);
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.finish(), Err(FrameError::Truncated));
        d.push(&f[3..]);
        let body = d.next_frame().unwrap().unwrap();
        assert_eq!(decode::<ClientMsg>(&body).unwrap(), sample());
        d.finish().unwrap();
    }

    #[test]
    fn oversized_header_is_refused_before_reading_the_body() {
        let mut d = FrameDecoder::new(16);
        d.push(&u32::MAX.to_be_bytes());
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                limit: 16
            })
        );
        assert_eq!(
            body_len(17u32.to_be_bytes(), 16).unwrap_err().code(),
            ErrorCode::FrameTooLarge
        );
    }

    #[test]
    fn retry_after_hints_round_trip() {
        let d = std::time::Duration::from_millis(2345);
        assert_eq!(parse_retry_after(retry_after_reason(d).as_bytes()), Some(d));
        assert_eq!(parse_retry_after(b"busy"), None);
        assert_eq!(parse_retry_after(&[0xff]), None);
    }

    #[test]
    fn error_codes_round_trip() {
        for v in 0..20 {
            if let Some(c) = ErrorCode::from_u32(v) {
                assert_eq!(c.to_u32(), v);
            }
        }
        assert_eq!(ErrorCode::from_u32(4), Some(ErrorCode::Unauthorized));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<ClientMsg>(&bytes);
            let _ = decode::<ServerMsg>(&bytes);
            let mut d = FrameDecoder::new(256);
            d.push(&bytes);
            while let Ok(Some(body)) = d.next_frame() {
                let _ = decode::<ClientMsg>(&body);
            }
        }
    }
}
