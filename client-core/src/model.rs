//! Owned, FFI-friendly domain types.

use serde::{Deserialize, Serialize};

use crate::error::ClientError;

/// Status of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// As planned.
    #[default]
    Scheduled,
    /// Moved to another room or time.
    Moved,
    /// Cancelled.
    Cancelled,
}

impl SessionStatus {
    /// `scheduled`, `moved` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Scheduled => "scheduled",
            SessionStatus::Moved => "moved",
            SessionStatus::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "moved" => SessionStatus::Moved,
            "cancelled" => SessionStatus::Cancelled,
            _ => SessionStatus::Scheduled,
        }
    }
}

/// Whether a URL is an absolute `http(s)://` URL with a host: the only kind
/// an attendee can open.
pub fn is_web_url(url: &str) -> bool {
    web_url(url).is_some()
}

/// An absolute `http(s)://` URL with a host, written as a strict RFC 3986
/// URI (what the c3voc schemas' `uri` format wants): the `url` crate's
/// serialization (lower-case scheme and host, IDNA, spaces and quotes
/// escaped), then every character RFC 3986 does not allow after the host
/// percent-encoded too (`[`, `]`, `{`, `|`, a second `#`, a `%` not
/// followed by two hex digits, ...). `None` for anything else. Links are
/// stored in this form, so an export re-imports unchanged.
pub fn web_url(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url.trim()).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return None;
    }
    let text = parsed.as_str();
    let after_scheme = text.find("://")? + 3;
    let path_at = text[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |i| after_scheme + i);
    let (head, rest) = text.split_at(path_at);
    let mut out = head.to_owned();
    let mut in_fragment = false;
    let bytes = rest.as_bytes();
    for (i, c) in rest.char_indices() {
        let allowed = match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '.' | '_' | '~' => true,
            ':' | '/' | '?' | '@' | '!' | '$' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | ';'
            | '=' => true,
            '%' => {
                bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
            }
            '#' if !in_fragment => {
                in_fragment = true;
                true
            }
            _ => false,
        };
        if allowed {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    Some(out)
}

/// A link attendees use: slides, a video recording, a project page.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Link {
    /// The URL.
    pub url: String,
    /// What it is, `""` when the file gives no title.
    pub title: String,
}

impl Link {
    /// A link, with surrounding blanks removed from both parts.
    pub fn new(url: &str, title: &str) -> Link {
        Link {
            url: url.trim().to_owned(),
            title: title.trim().to_owned(),
        }
    }

    /// A link an organizer typed: the URL must be an absolute `http` or
    /// `https` URL with a host.
    pub fn checked(url: &str, title: &str) -> Result<Link, ClientError> {
        let link = Link::new(url, title);
        let bad =
            |why: String| ClientError::Invalid(format!("{:?} is not a web link: {why}", link.url));
        let parsed = url::Url::parse(&link.url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad(format!(
                "the scheme is {:?}; give an http:// or https:// URL",
                parsed.scheme()
            )));
        }
        let url = web_url(&link.url).ok_or_else(|| bad("it has no host".into()))?;
        Ok(Link { url, ..link })
    }

    /// Whether the link looks like a video recording of the session: its
    /// title says `recording`, `video` or `vod`, its path ends in a video
    /// file extension (`.mp4`, `.webm`, `.mkv`, `.mov`, `.m4v`, `.ogv`,
    /// `.avi`, `.m3u8`), or its host is a video site (`video.fosdem.org`,
    /// `media.ccc.de`, YouTube, Vimeo, PeerTube instances named
    /// `peertube…`/`tube…`). Everything else is "a new link".
    pub fn looks_like_recording(&self) -> bool {
        let title = self.title.to_lowercase();
        if ["recording", "video", "vod"]
            .iter()
            .any(|word| title.contains(word))
        {
            return true;
        }
        let Ok(url) = url::Url::parse(&self.url) else {
            return false;
        };
        let path = url.path().to_ascii_lowercase();
        if [
            ".mp4", ".webm", ".mkv", ".mov", ".m4v", ".ogv", ".avi", ".m3u8",
        ]
        .iter()
        .any(|ext| path.ends_with(ext))
        {
            return true;
        }
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        let host = host.strip_prefix("www.").unwrap_or(&host);
        [
            "video.fosdem.org",
            "media.ccc.de",
            "youtube.com",
            "m.youtube.com",
            "youtu.be",
            "vimeo.com",
        ]
        .contains(&host)
            || host.starts_with("peertube.")
            || host.starts_with("tube.")
    }
}

/// One session of the agenda.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Session {
    /// Stable id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Abstract.
    pub abstract_text: String,
    /// Room name.
    pub room: String,
    /// Start, seconds since the Unix epoch (UTC).
    pub start_unix: i64,
    /// End, seconds since the Unix epoch (UTC).
    pub end_unix: i64,
    /// Track, empty if none.
    pub track: String,
    /// Speaker names.
    pub speakers: Vec<String>,
    /// Status.
    pub status: SessionStatus,
    /// The session's own page, `""` if none.
    pub url: String,
    /// Links: slides, recordings, projects (oldest first).
    pub links: Vec<Link>,
    /// Language (e.g. `en`), `""` if unknown.
    pub language: String,
    /// Type from the schedule (e.g. `lecture`, `workshop`), `""` if none.
    pub kind: String,
    /// Seats that can be reserved; 0 when the session takes no reservations.
    pub capacity: u32,
}

/// A new session (organizer).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewSession {
    /// Stable id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Abstract.
    pub abstract_text: String,
    /// Room name.
    pub room: String,
    /// Start, Unix seconds.
    pub start_unix: i64,
    /// End, Unix seconds.
    pub end_unix: i64,
    /// Track, empty if none.
    pub track: String,
    /// Speakers.
    pub speakers: Vec<String>,
}

/// What a session carries besides its place in the schedule, as schedule
/// files give it: its page, links, language and type. (Kept out of
/// [`NewSession`], which is what an organizer types; links are added with
/// `Client::add_session_link`.)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionDetails {
    /// The session's own page, `""` if none.
    pub url: String,
    /// Links: slides, recordings, projects.
    pub links: Vec<Link>,
    /// Language (e.g. `en`), `""` if unknown.
    pub language: String,
    /// Type (e.g. `lecture`, `workshop`), `""` if none.
    pub kind: String,
}

/// Fields to change on a session; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionUpdate {
    /// New title.
    pub title: Option<String>,
    /// New abstract.
    pub abstract_text: Option<String>,
    /// New track.
    pub track: Option<String>,
    /// New speakers.
    pub speakers: Option<Vec<String>>,
}

/// A room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// Name (also its id).
    pub name: String,
    /// Seats, 0 if unknown.
    pub capacity: u32,
}

/// An organizer's announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// Text.
    pub text: String,
    /// When it was posted, Unix seconds.
    pub at_unix: i64,
}

/// The event's own facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInfo {
    /// Event id.
    pub id: String,
    /// Display name (the id until an organizer sets one).
    pub name: String,
    /// IANA time zone all times are shown in.
    pub time_zone: String,
}

/// Who this device is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Server `HOST:PORT` (a cluster's nodes separated by commas).
    pub server: String,
    /// Event id.
    pub event: String,
    /// User id.
    pub user: String,
    /// `organizer` or `attendee`.
    pub role: String,
    /// Device name.
    pub device: String,
    /// Token expiry, Unix seconds.
    pub expires_at_unix: u64,
}

/// A change the server refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedChange {
    /// The document.
    pub doc: String,
    /// The change hash, hex.
    pub change: String,
    /// The server's explanation.
    pub message: String,
}

/// Sync status for the UI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// Local changes the server has not confirmed yet.
    pub pending_changes: u64,
    /// Last time every document was in sync, Unix seconds.
    pub last_sync_unix: Option<i64>,
    /// Changes the server refused (kept on the device).
    pub refused: Vec<RefusedChange>,
    /// Edits set aside that could not be redone (`Client::kept_edits`).
    pub kept_edits: u64,
    /// Whether a background connection is up.
    pub connected: bool,
    /// The last sync error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Reconnection attempts of the background sync since the client was opened.
    pub retries: u64,
}

/// What a one-shot sync did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncReport {
    /// Changes received from the server.
    pub received_changes: u64,
    /// Local changes the server confirmed in this sync.
    pub acknowledged_changes: u64,
    /// Changes refused by the server (all of them, including earlier ones).
    pub refused: Vec<RefusedChange>,
}
