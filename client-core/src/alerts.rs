//! Schedule-change alerts: incoming agenda changes turned into typed events.
//!
//! When changes from the server touch the agenda, the client compares the
//! sessions and announcements before and after and tells every
//! [`AlertListener`] what happened, one [`Alert`] each:
//!
//! * [`AlertKind::Added`]: a session that was not in the agenda;
//! * [`AlertKind::Moved`]: a new room and/or time;
//! * [`AlertKind::Cancelled`] / [`AlertKind::Reinstated`];
//! * [`AlertKind::Announcement`]: a new organizer announcement;
//! * [`AlertKind::Link`]: a new link on a session the attendee bookmarked,
//!   e.g. its recording after the talk. The message says `The recording of
//!   "…" is online` when the link looks like a video (see
//!   [`Link::looks_like_recording`]), else `New link for "…"`. Only
//!   bookmarked sessions raise it: after a conference hundreds of
//!   recordings go online, and each attendee wants the ones they chose.
//!
//! Edits to a title, abstract, track or speakers alone raise no alert, nor do
//! the sessions of an agenda's first download (into an agenda that had none). Alerts
//! about a session the attendee bookmarked have `bookmarked` set and a
//! message that says so; times in messages are in the event's time zone.
//! A bookmark on a cancelled session is kept (the attendee decides).
//!
//! Only changes that arrive from the server raise alerts; this device's own
//! edits do not. Nothing is computed while no listener is registered.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{Announcement, Link, Session, SessionStatus};
use crate::time;
use crate::view::ViewChange;

/// What kind of change an [`Alert`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A session was added to the agenda.
    Added,
    /// A session moved to another room and/or time.
    Moved,
    /// A session was cancelled.
    Cancelled,
    /// A cancelled session is back on.
    Reinstated,
    /// The organizers posted an announcement.
    Announcement,
    /// A bookmarked session got a new link (e.g. its recording).
    Link,
    /// A reservation was confirmed.
    SeatConfirmed,
    /// A reservation went on the waitlist (see the position).
    SeatWaitlisted,
    /// A seat opened up and the first person waiting got it.
    SeatPromoted,
    /// A seat opened up and is held for the attendee until a deadline.
    SeatOffered,
    /// An offered seat was not accepted in time and moved on.
    SeatOfferExpired,
    /// A seat or waitlist place was released: the session was cancelled.
    SeatReleased,
    /// A reservation was refused (see the reason).
    SeatRefused,
}

/// One schedule change, ready to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// What happened.
    pub kind: AlertKind,
    /// The session as it is now (`None` for announcements).
    pub session: Option<Session>,
    /// For a move: the room before, when the room changed.
    pub previous_room: Option<String>,
    /// For a move: the start before (Unix seconds), when the time changed.
    pub previous_start_unix: Option<i64>,
    /// The announcement (for [`AlertKind::Announcement`]).
    pub announcement: Option<Announcement>,
    /// The new link (for [`AlertKind::Link`]).
    pub link: Option<Link>,
    /// The reservation, for the `Seat…` kinds.
    pub reservation: Option<crate::seats::Reservation>,
    /// True when the session is one the attendee bookmarked.
    pub bookmarked: bool,
    /// A one-line message in the event's time zone, e.g. `Your bookmarked
    /// session "Rust at scale" moved to Hall B at 14:00 (was Hall A at 13:00)`.
    pub message: String,
}

/// Receives alerts. Called on the sync task's thread, outside the client's
/// locks (calling back into the client is fine); keep it short.
pub trait AlertListener: Send + Sync {
    /// One alert.
    fn on_alert(&self, alert: Alert);
}

/// Listeners of alerts.
#[derive(Default)]
pub(crate) struct AlertHub {
    listeners: Vec<(u64, Arc<dyn AlertListener>)>,
    next_id: u64,
}

impl AlertHub {
    pub(crate) fn active(&self) -> bool {
        !self.listeners.is_empty()
    }

    pub(crate) fn add(&mut self, listener: Arc<dyn AlertListener>) -> u64 {
        self.next_id += 1;
        self.listeners.push((self.next_id, listener));
        self.next_id
    }

    /// Every listener.
    pub(crate) fn listeners(&self) -> Vec<Arc<dyn AlertListener>> {
        self.listeners.iter().map(|(_, l)| Arc::clone(l)).collect()
    }

    pub(crate) fn remove(&mut self, id: u64) -> bool {
        let before = self.listeners.len();
        self.listeners.retain(|(i, _)| *i != id);
        self.listeners.len() != before
    }

    /// The alerts a change of the agenda raises (read from the agenda's view,
    /// which saw what the change touched), with the listeners to give them to.
    pub(crate) fn changed(
        &self,
        change: &ViewChange,
        bookmarks: &HashSet<String>,
        tz: &str,
    ) -> (Vec<Alert>, Vec<Arc<dyn AlertListener>>) {
        if !self.active() {
            return (Vec::new(), Vec::new());
        }
        let mut alerts = compare(change, bookmarks, tz);
        alerts.extend(change.announcements.iter().map(|a| Alert {
            reservation: None,
            kind: AlertKind::Announcement,
            session: None,
            previous_room: None,
            previous_start_unix: None,
            message: format!("Announcement: {}", a.text),
            announcement: Some(a.clone()),
            link: None,
            bookmarked: false,
        }));
        let listeners = self.listeners.iter().map(|(_, l)| Arc::clone(l)).collect();
        (alerts, listeners)
    }
}

/// `14:00`, or `2026-03-10 14:00` when `with_day`.
fn when(unix: i64, tz: &str, with_day: bool) -> String {
    let clock = time::format_clock(unix, tz).unwrap_or_else(|_| unix.to_string());
    if with_day {
        let day = time::day_of(unix, tz).unwrap_or_default();
        format!("{day} {clock}")
    } else {
        clock
    }
}

fn compare(change: &ViewChange, bookmarks: &HashSet<String>, tz: &str) -> Vec<Alert> {
    let mut sessions: Vec<&(Option<Session>, Session)> = change.sessions.iter().collect();
    sessions.sort_by(|(_, a), (_, b)| (a.start_unix, &a.id).cmp(&(b.start_unix, &b.id)));
    let mut out = Vec::new();
    for (was, s) in sessions {
        let bookmarked = bookmarks.contains(&s.id);
        let whose = if bookmarked {
            format!("Your bookmarked session \"{}\"", s.title)
        } else {
            format!("Session \"{}\"", s.title)
        };
        let cancelled = s.status == SessionStatus::Cancelled;
        let alert = |kind, message| Alert {
            reservation: None,
            kind,
            session: Some(s.clone()),
            previous_room: None,
            previous_start_unix: None,
            announcement: None,
            link: None,
            bookmarked,
            message,
        };
        let Some(was) = was else {
            // Sessions arriving in an agenda that had none are its first
            // download, not news.
            if !cancelled && !change.was_empty {
                out.push(alert(
                    AlertKind::Added,
                    format!(
                        "New session \"{}\" in {} at {}",
                        s.title,
                        s.room,
                        when(s.start_unix, tz, true)
                    ),
                ));
            }
            continue;
        };
        let was_cancelled = was.status == SessionStatus::Cancelled;
        if cancelled && !was_cancelled {
            out.push(alert(
                AlertKind::Cancelled,
                format!(
                    "{whose} ({}, {}) was cancelled",
                    was.room,
                    when(was.start_unix, tz, true)
                ),
            ));
        } else if !cancelled && was_cancelled {
            out.push(alert(
                AlertKind::Reinstated,
                format!(
                    "{whose} is back on: {} at {}",
                    s.room,
                    when(s.start_unix, tz, true)
                ),
            ));
        } else if !cancelled
            && (was.room != s.room || was.start_unix != s.start_unix || was.end_unix != s.end_unix)
        {
            let other_day =
                time::day_of(was.start_unix, tz).ok() != time::day_of(s.start_unix, tz).ok();
            let mut a = alert(
                AlertKind::Moved,
                format!(
                    "{whose} moved to {} at {} (was {} at {})",
                    s.room,
                    when(s.start_unix, tz, other_day),
                    was.room,
                    when(was.start_unix, tz, other_day)
                ),
            );
            a.previous_room = (was.room != s.room).then(|| was.room.clone());
            a.previous_start_unix = (was.start_unix != s.start_unix).then_some(was.start_unix);
            out.push(a);
        }
        if bookmarked && !cancelled {
            for link in s
                .links
                .iter()
                .filter(|l| !was.links.iter().any(|w| w.url == l.url))
            {
                let message = if link.looks_like_recording() {
                    format!("The recording of \"{}\" is online: {}", s.title, link.url)
                } else if link.title.is_empty() {
                    format!("New link for \"{}\": {}", s.title, link.url)
                } else {
                    format!("New link for \"{}\": {} {}", s.title, link.title, link.url)
                };
                let mut a = alert(AlertKind::Link, message);
                a.link = Some(link.clone());
                out.push(a);
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::docs::AgendaDoc;
    use crate::model::NewSession;
    use crate::view::AgendaView;
    use automerge::Automerge;
    use std::sync::Mutex;

    /// The alerts of everything that changed in `d` since the view last saw it.
    fn changed(
        hub: &AlertHub,
        view: &mut AgendaView,
        d: &Automerge,
        seen: &mut Vec<automerge::ChangeHash>,
        bookmarks: &HashSet<String>,
    ) -> (Vec<Alert>, Vec<Arc<dyn AlertListener>>) {
        let change = view.update(d);
        *seen = d.get_heads();
        hub.changed(&change, bookmarks, "America/New_York")
    }

    const ID: &str = "agenda/conf";

    fn agenda() -> Automerge {
        let mut d = Automerge::new();
        AgendaDoc::set_event(&mut d, ID, "Conf", "America/New_York", 0).unwrap();
        for (id, room, start) in [
            ("a", "Hall A", 1_773_147_600),
            ("b", "Hall A", 1_773_151_200),
        ] {
            let s = NewSession {
                id: id.into(),
                title: format!("Talk {id}"),
                room: room.into(),
                start_unix: start,
                end_unix: start + 3600,
                ..Default::default()
            };
            AgendaDoc::add_session(&mut d, ID, &s, 0).unwrap();
        }
        d
    }

    #[derive(Default)]
    struct Collect(Mutex<Vec<Alert>>);
    impl AlertListener for Collect {
        fn on_alert(&self, alert: Alert) {
            self.0.lock().unwrap().push(alert);
        }
    }

    #[test]
    fn each_kind_of_change_gives_its_alert_in_event_time() {
        let mut d = agenda();
        let mut hub = AlertHub::default();
        let seen = Arc::new(Collect::default());
        hub.add(seen.clone());
        let mut view = AgendaView::build(&d);
        let mut heads = d.get_heads();
        // 2026-03-10 13:00 UTC is 09:00 in New York (EDT since 2026-03-08).
        AgendaDoc::move_session(
            &mut d,
            "a",
            Some("Hall B"),
            Some((1_773_154_800, 1_773_158_400)),
            0,
        )
        .unwrap();
        AgendaDoc::cancel_session(&mut d, "b", 0).unwrap();
        let c = NewSession {
            id: "c".into(),
            title: "Talk c".into(),
            room: "Hall C".into(),
            start_unix: 1_773_162_000,
            end_unix: 1_773_165_600,
            ..Default::default()
        };
        AgendaDoc::add_session(&mut d, ID, &c, 0).unwrap();
        AgendaDoc::announce(&mut d, ID, "Lunch is served", 0).unwrap();
        AgendaDoc::update_session(
            &mut d,
            "c",
            &crate::model::SessionUpdate {
                title: Some("Talk c!".into()),
                ..Default::default()
            },
            0,
        )
        .unwrap();
        let bookmarks: HashSet<String> = ["a".to_owned(), "b".to_owned()].into();
        let (alerts, listeners) = changed(&hub, &mut view, &d, &mut heads, &bookmarks);
        assert_eq!(listeners.len(), 1);
        let kinds: Vec<(AlertKind, bool)> = alerts.iter().map(|a| (a.kind, a.bookmarked)).collect();
        assert_eq!(
            kinds,
            [
                (AlertKind::Cancelled, true),
                (AlertKind::Moved, true),
                (AlertKind::Added, false),
                (AlertKind::Announcement, false)
            ]
        );
        assert_eq!(
            alerts[0].message,
            "Your bookmarked session \"Talk b\" (Hall A, 2026-03-10 10:00) was cancelled"
        );
        assert_eq!(
            alerts[1].message,
            "Your bookmarked session \"Talk a\" moved to Hall B at 11:00 (was Hall A at 09:00)"
        );
        assert_eq!(alerts[1].previous_room.as_deref(), Some("Hall A"));
        assert_eq!(alerts[1].previous_start_unix, Some(1_773_147_600));
        assert_eq!(
            alerts[2].message,
            "New session \"Talk c!\" in Hall C at 2026-03-10 13:00"
        );
        assert_eq!(
            alerts[3].announcement.as_ref().unwrap().text,
            "Lunch is served"
        );
        // Nothing new: nothing to say.
        assert!(changed(&hub, &mut view, &d, &mut heads, &bookmarks)
            .0
            .is_empty());
        // Reinstated, and a title-only change says nothing.
        AgendaDoc::move_session(&mut d, "b", None, None, 0).unwrap();
        let (alerts, _) = changed(&hub, &mut view, &d, &mut heads, &bookmarks);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, AlertKind::Reinstated);
    }

    #[test]
    fn a_new_link_on_a_bookmarked_session_says_its_recording_is_online() {
        let mut d = agenda();
        let mut hub = AlertHub::default();
        hub.add(Arc::new(Collect::default()));
        let mut view = AgendaView::build(&d);
        let mut heads = d.get_heads();
        let bookmarks: HashSet<String> = ["a".to_owned()].into();
        let recording = Link::new("https://video.fosdem.org/2025/k3201/talk-a.webm", "");
        let slides = Link::new("https://example.org/slides.pdf", "Slides");
        AgendaDoc::add_link(&mut d, "a", &recording, 0).unwrap();
        AgendaDoc::add_link(&mut d, "a", &slides, 0).unwrap();
        // Not bookmarked: no alert for b's link.
        AgendaDoc::add_link(&mut d, "b", &recording, 0).unwrap();
        let (alerts, _) = changed(&hub, &mut view, &d, &mut heads, &bookmarks);
        let got: Vec<(AlertKind, &str, Option<&Link>)> = alerts
            .iter()
            .map(|a| (a.kind, a.message.as_str(), a.link.as_ref()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    AlertKind::Link,
                    "The recording of \"Talk a\" is online: \
                     https://video.fosdem.org/2025/k3201/talk-a.webm",
                    Some(&recording)
                ),
                (
                    AlertKind::Link,
                    "New link for \"Talk a\": Slides https://example.org/slides.pdf",
                    Some(&slides)
                ),
            ]
        );
        assert!(alerts.iter().all(|a| a.bookmarked));
        // The same link again (a new title) is not news.
        AgendaDoc::add_link(&mut d, "a", &Link::new(&slides.url, "Slides (PDF)"), 0).unwrap();
        assert!(changed(&hub, &mut view, &d, &mut heads, &bookmarks)
            .0
            .is_empty());
        assert_eq!(
            AgendaDoc::session(&d, "a").unwrap().links,
            [recording, Link::new(&slides.url, "Slides (PDF)")]
        );
    }

    #[test]
    fn what_looks_like_a_recording() {
        for url in [
            "https://video.fosdem.org/2025/janson/x.av1.webm",
            "https://media.ccc.de/v/38c3-12345-opening",
            "https://www.youtube.com/watch?v=abc",
            "https://youtu.be/abc",
            "https://cdn.example.org/talks/t1.MP4",
            "https://peertube.example.org/w/abc",
        ] {
            assert!(Link::new(url, "").looks_like_recording(), "{url}");
        }
        assert!(Link::new("https://example.org/x", "Video (1080p)").looks_like_recording());
        assert!(Link::new("https://example.org/x", "Recording").looks_like_recording());
        for url in [
            "https://example.org/slides.pdf",
            "https://github.com/llvm/llvm-project/",
            "https://notyoutube.com/watch",
        ] {
            assert!(!Link::new(url, "Slides").looks_like_recording(), "{url}");
        }
    }

    #[test]
    fn the_first_download_is_not_news() {
        let mut hub = AlertHub::default();
        hub.add(Arc::new(Collect::default()));
        let mut view = AgendaView::build(&Automerge::new());
        let mut d = agenda();
        AgendaDoc::announce(&mut d, ID, "Welcome", 0).unwrap();
        let (alerts, _) = changed(&hub, &mut view, &d, &mut Vec::new(), &HashSet::new());
        let kinds: Vec<AlertKind> = alerts.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [AlertKind::Announcement]);
    }

    #[test]
    fn local_edits_and_no_listener_raise_nothing() {
        let mut d = agenda();
        let mut hub = AlertHub::default();
        let mut view = AgendaView::build(&d);
        let mut heads = d.get_heads();
        AgendaDoc::cancel_session(&mut d, "a", 0).unwrap();
        let none = HashSet::new();
        assert!(
            changed(&hub, &mut view, &d, &mut heads, &none).0.is_empty(),
            "no listener"
        );
        let id = hub.add(Arc::new(Collect::default()));
        assert!(hub.remove(id));
        assert!(!hub.remove(id));
        assert!(!hub.active());
    }
}
