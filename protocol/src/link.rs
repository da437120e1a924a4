//! Join links and certificate pins.
//!
//! A join link is `lanyard://HOST:PORT/EVENT?token=TOKEN&pin=PIN`: everything a
//! device needs, so a badge QR code is enough. The pin is the SHA-256 of the
//! server's certificate (DER), in lowercase hex. A cluster of nodes (sharing
//! one certificate and token key) is named by several addresses separated by
//! commas, `lanyard://h1:4433,h2:4433/EVENT?…`: the device may use any.

use std::fmt;

use ring::digest::{digest, SHA256};

use crate::ids::{EventId, IdError};

/// URL scheme of join links.
pub const SCHEME: &str = "lanyard://";

/// The pin of a DER certificate: lowercase hex of its SHA-256.
pub fn cert_pin(der: &[u8]) -> String {
    digest(&SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A parsed join link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinLink {
    /// `HOST:PORT` of each server node (at least one), in the link's order.
    pub servers: Vec<String>,
    /// The event.
    pub event: EventId,
    /// The signed token.
    pub token: String,
    /// The certificate pin.
    pub pin: String,
}

/// Why a join link was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Not starting with `lanyard://`.
    #[error("a join link starts with {SCHEME}")]
    Scheme,
    /// No `HOST:PORT`.
    #[error("the join link has no HOST:PORT")]
    Server,
    /// Missing or bad event.
    #[error("the join link's event is invalid: {0}")]
    Event(#[from] IdError),
    /// Missing `token=` or `pin=`.
    #[error("the join link has no {0}= parameter")]
    Missing(&'static str),
    /// A pin that is not 64 hex digits.
    #[error("the join link's pin is not a SHA-256 in hex")]
    Pin,
}

/// Whether `server` is one node's `HOST:PORT` (no list).
pub fn is_host_port(server: &str) -> bool {
    server
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && !h.contains(',') && p.parse::<u16>().is_ok())
}

impl JoinLink {
    /// Parses a link.
    pub fn parse(s: &str) -> Result<Self, LinkError> {
        let rest = s.trim().strip_prefix(SCHEME).ok_or(LinkError::Scheme)?;
        let (authority, rest) = rest.split_once('/').ok_or(LinkError::Server)?;
        let servers: Vec<String> = authority.split(',').map(str::to_owned).collect();
        if !servers.iter().all(|s| is_host_port(s)) {
            return Err(LinkError::Server);
        }
        let (event, query) = rest.split_once('?').unwrap_or((rest, ""));
        let event = EventId::new(event)?;
        let mut token = None;
        let mut pin = None;
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("token", v)) if !v.is_empty() => token = Some(v.to_owned()),
                Some(("pin", v)) => pin = Some(v.to_ascii_lowercase()),
                _ => {}
            }
        }
        let token = token.ok_or(LinkError::Missing("token"))?;
        let pin = pin.ok_or(LinkError::Missing("pin"))?;
        if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(LinkError::Pin);
        }
        Ok(JoinLink {
            servers,
            event,
            token,
            pin,
        })
    }
}

impl fmt::Display for JoinLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/{}?token={}&pin={}",
            self.servers.join(","),
            self.event,
            self.token,
            self.pin
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip() {
        let l = JoinLink {
            servers: vec!["127.0.0.1:4433".into()],
            event: EventId::new("conf").unwrap(),
            token: "abc.def".into(),
            pin: cert_pin(b"cert"),
        };
        assert_eq!(JoinLink::parse(&l.to_string()).unwrap(), l);
        let v6 = JoinLink {
            servers: vec!["[::1]:4433".into()],
            ..l.clone()
        };
        assert_eq!(JoinLink::parse(&v6.to_string()).unwrap(), v6);
        let cluster = JoinLink {
            servers: vec![
                "h1:4433".into(),
                "[::1]:4434".into(),
                "h3.example:4433".into(),
            ],
            ..l
        };
        let text = cluster.to_string();
        assert!(
            text.starts_with("lanyard://h1:4433,[::1]:4434,h3.example:4433/conf?"),
            "{text}"
        );
        assert_eq!(JoinLink::parse(&text).unwrap(), cluster);
    }

    #[test]
    fn bad_links_say_what_is_wrong() {
        let pin = cert_pin(b"x");
        assert_eq!(
            JoinLink::parse("http://x:1/e?token=a&pin=b"),
            Err(LinkError::Scheme)
        );
        assert_eq!(
            JoinLink::parse("lanyard://x/e?token=a"),
            Err(LinkError::Server)
        );
        assert_eq!(
            JoinLink::parse(&format!("lanyard://x:1,,y:2/e?token=a&pin={pin}")),
            Err(LinkError::Server),
            "an empty node in the list"
        );
        assert_eq!(
            JoinLink::parse(&format!("lanyard://x:1/e?pin={pin}")),
            Err(LinkError::Missing("token"))
        );
        assert_eq!(
            JoinLink::parse("lanyard://x:1/e?token=a&pin=zz"),
            Err(LinkError::Pin)
        );
        assert!(matches!(
            JoinLink::parse(&format!("lanyard://x:1/?token=a&pin={pin}")),
            Err(LinkError::Event(_))
        ));
    }
}
