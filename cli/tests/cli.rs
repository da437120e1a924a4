//! End-to-end tests of the `lanyard` binary that need no server: join links
//! are signed here with a throwaway key, and `sync` is pointed at an address
//! nothing listens on.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use lanyard_protocol::{DeviceId, EventId, JoinLink, Role, TokenClaims, UserId};
use ring::signature::Ed25519KeyPair;
use serde_json::{json, Value};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_lanyard");

/// Nothing listens on the discard port of localhost.
const DEAD_SERVER: &str = "127.0.0.1:9";

fn link_with(role: Role, user: &str, event: &str, expires_at: u64) -> String {
    let key = Ed25519KeyPair::from_seed_unchecked(&[1; 32]).unwrap();
    let event = EventId::new(event).unwrap();
    let claims = TokenClaims {
        event: event.clone(),
        user: UserId::new(user).unwrap(),
        role,
        device: DeviceId::new("laptop").unwrap(),
        expires_at,
    };
    JoinLink {
        servers: vec![DEAD_SERVER.into()],
        event,
        token: lanyard_protocol::token::sign(&claims, &key),
        pin: lanyard_protocol::cert_pin(b"x"),
    }
    .to_string()
}

fn link(role: Role, user: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    link_with(role, user, "conf", now + 30 * 24 * 3600)
}

/// A device: a temporary home directory.
struct Device {
    dir: TempDir,
    /// The device's own time zone (the TZ environment variable), if set.
    tz: Option<&'static str>,
}

impl Device {
    fn new() -> Self {
        Device {
            dir: tempfile::tempdir().unwrap(),
            tz: None,
        }
    }

    /// A device whose clock is set to the zone `tz`.
    fn in_zone(tz: &'static str) -> Self {
        Device {
            tz: Some(tz),
            ..Device::new()
        }
    }

    fn home(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("--home")
            .arg(self.home())
            .args(args)
            .env_remove("LANYARD_HOME")
            .env_remove("RUST_LOG");
        match self.tz {
            Some(tz) => cmd.env("TZ", tz),
            None => cmd.env_remove("TZ"),
        };
        cmd.output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            out.status.success(),
            "lanyard {args:?} failed ({:?}): {stderr}",
            out.status.code()
        );
        stdout
    }

    /// Runs a command that must fail with exit code 1 and a one-line reason;
    /// returns that line.
    fn fail(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "lanyard {args:?} should fail with code 1; stdout: {}; stderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_one_line_error(&stderr);
        stderr.trim_end().to_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("lanyard {args:?}: {e}: {out}"))
    }

    fn join(&self, role: Role, user: &str) -> String {
        self.ok(&["join", &link(role, user)])
    }

    fn agenda_json(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["agenda", "--json"];
        args.extend_from_slice(extra);
        match self.json(&args) {
            Value::Array(items) => items,
            other => panic!("agenda --json is not an array: {other}"),
        }
    }

    fn pending(&self) -> u64 {
        self.json(&["status", "--json"])["pending_changes"]
            .as_u64()
            .unwrap()
    }
}

fn assert_one_line_error(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got {stderr:?}"
    );
    assert!(lines[0].starts_with("lanyard: "), "{stderr:?}");
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn set(keys: &[&'static str]) -> BTreeSet<&'static str> {
    keys.iter().copied().collect()
}

/// An organizer device with an event in New York and three sessions.
fn organizer_with_agenda() -> Device {
    let d = Device::new();
    d.join(Role::Organizer, "ann");
    d.ok(&[
        "event",
        "--name",
        "RustConf",
        "--timezone",
        "America/New_York",
    ]);
    d.ok(&["room", "add", "Hall A", "--capacity", "300"]);
    d.ok(&[
        "session",
        "add",
        "--id",
        "keynote",
        "--title",
        "Opening keynote",
        "--room",
        "Hall A",
        "--start",
        "2026-06-10T09:00",
        "--end",
        "2026-06-10T10:00",
        "--track",
        "Core",
        "--speaker",
        "Ada Lovelace",
        "--speaker",
        "Grace Hopper",
    ]);
    // RFC 3339 in UTC: 18:00Z is 14:00 in New York in June.
    d.ok(&[
        "session",
        "add",
        "--id",
        "rust",
        "--title",
        "Rust at scale",
        "--room",
        "Room 2",
        "--start",
        "2026-06-10T18:00:00Z",
        "--end",
        "2026-06-10T19:00:00Z",
    ]);
    // 02:00Z on the 11th is still the evening of the 10th in New York.
    d.ok(&[
        "session",
        "add",
        "--id",
        "party",
        "--title",
        "Evening party",
        "--room",
        "Hall A",
        "--start",
        "2026-06-11T02:00:00Z",
        "--end",
        "2026-06-11T04:00:00Z",
    ]);
    d.ok(&[
        "session",
        "add",
        "--id",
        "closing",
        "--title",
        "Closing",
        "--room",
        "Hall A",
        "--start",
        "2026-06-11 17:00",
        "--end",
        "2026-06-11 18:00",
    ]);
    d
}

#[test]
fn capacities_are_set_and_reservations_made_offline_show_as_pending() {
    let d = organizer_with_agenda();
    d.ok(&["session", "capacity", "rust", "40"]);
    let out = d.ok(&[
        "session",
        "add",
        "--id",
        "lab",
        "--title",
        "Lab",
        "--room",
        "Room 2",
        "--start",
        "2026-06-11T09:00",
        "--end",
        "2026-06-11T10:00",
        "--capacity",
        "12",
    ]);
    assert!(out.contains("added session lab"), "{out}");
    let items = d.agenda_json(&[]);
    let cap = |id: &str| {
        items
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["capacity"].clone())
    };
    assert_eq!(cap("rust"), Some(json!(40)));
    assert_eq!(cap("lab"), Some(json!(12)));
    assert_eq!(cap("keynote"), Some(json!(0)));
    // The text view shows how full it is.
    let text = d.ok(&["agenda"]);
    assert!(text.contains("(0/40)"), "{text}");
    let out = d.ok(&["event", "--seat-overlap", "allowed", "--offer-hold", "10m"]);
    assert!(out.contains("overlapping seats allowed"), "{out}");
    assert!(out.contains("10m"), "{out}");

    // Offline: the request is stored and pending.
    let out = d.ok(&["reserve", "rust"]);
    assert!(out.contains("pending"), "{out}");
    let list = d.json(&["reservations", "--json"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        keys(&list[0]),
        set(&[
            "session",
            "state",
            "position",
            "reason",
            "updated",
            "offer_until"
        ])
    );
    assert_eq!(list[0]["session"], json!("rust"));
    assert_eq!(list[0]["state"], json!("pending"));
    assert_eq!(list[0]["position"], Value::Null);
    assert!(d.pending() > 0);
    // An unknown session is refused at once, with a way forward.
    let err = d.fail(&["reserve", "nope"]);
    assert!(err.contains("no session nope"), "{err}");
    let err = d.fail(&["session", "capacity", "nope", "3"]);
    assert!(err.contains("nope"), "{err}");
}

fn ids(items: &[Value]) -> Vec<&str> {
    items.iter().map(|s| s["id"].as_str().unwrap()).collect()
}

#[test]
fn join_prints_who_joined_and_keeps_the_credentials() {
    let d = Device::new();
    let out = d.join(Role::Organizer, "ann");
    for word in ["conf", "ann", "organizer", DEAD_SERVER] {
        assert!(out.contains(word), "{word:?} missing from {out:?}");
    }
    // A later process sees the credentials.
    let status = d.json(&["status", "--json"]);
    assert_eq!(status["pending_changes"], json!(0));
    assert_eq!(status["last_sync"], Value::Null);
    let event = d.ok(&["event"]);
    assert!(event.contains("conf"), "{event}");
}

#[test]
fn agenda_json_has_the_contract_keys_and_event_zone_offsets() {
    let d = organizer_with_agenda();
    let items = d.agenda_json(&[]);
    assert_eq!(
        ids(&items),
        ["keynote", "rust", "party", "closing"],
        "sorted by start"
    );
    let want = set(&[
        "id",
        "title",
        "room",
        "start",
        "end",
        "status",
        "track",
        "speakers",
        "url",
        "links",
        "language",
        "type",
        "capacity",
        "confirmed",
        "offered",
        "waitlist",
        "checked_in",
    ]);
    for item in &items {
        assert_eq!(keys(item), want);
        assert_eq!(item["status"], json!("scheduled"));
    }
    assert_eq!(
        items[0],
        json!({
            "id": "keynote",
            "title": "Opening keynote",
            "room": "Hall A",
            "start": "2026-06-10T09:00:00-04:00",
            "end": "2026-06-10T10:00:00-04:00",
            "status": "scheduled",
            "track": "Core",
            "speakers": ["Ada Lovelace", "Grace Hopper"],
            "url": "",
            "links": [],
            "language": "",
            "type": "",
            "capacity": 0,
            "confirmed": 0,
            "offered": 0,
            "waitlist": 0,
            "checked_in": 0,
        })
    );
    assert_eq!(items[1]["start"], json!("2026-06-10T14:00:00-04:00"));
    assert_eq!(items[1]["speakers"], json!([]));
    assert_eq!(items[1]["track"], json!(""));
    assert_eq!(items[2]["start"], json!("2026-06-10T22:00:00-04:00"));
    assert_eq!(items[3]["end"], json!("2026-06-11T18:00:00-04:00"));

    // Winter time in the same zone.
    d.ok(&[
        "session",
        "add",
        "--id",
        "winter",
        "--title",
        "Winter meetup",
        "--room",
        "Hall A",
        "--start",
        "2027-01-15T09:00",
        "--end",
        "2027-01-15T10:00",
    ]);
    let winter = d.agenda_json(&["--day", "2027-01-15"]);
    assert_eq!(winter.len(), 1);
    assert_eq!(winter[0]["start"], json!("2027-01-15T09:00:00-05:00"));
}

#[test]
fn agenda_day_filters_by_the_event_day() {
    let d = organizer_with_agenda();
    // The party starts on the 11th in UTC but on the 10th in New York.
    assert_eq!(
        ids(&d.agenda_json(&["--day", "2026-06-10"])),
        ["keynote", "rust", "party"]
    );
    assert_eq!(ids(&d.agenda_json(&["--day", "2026-06-11"])), ["closing"]);
    assert!(d.agenda_json(&["--day", "2026-06-12"]).is_empty());

    let err = d.fail(&["agenda", "--day", "2026-13-01"]);
    assert!(err.contains("YYYY-MM-DD"), "{err}");

    let table = d.ok(&["agenda"]);
    assert!(table.contains("America/New_York"), "{table}");
    let day1 = table
        .find("Wednesday 2026-06-10")
        .expect("first day heading");
    let day2 = table
        .find("Thursday 2026-06-11")
        .expect("second day heading");
    assert!(day1 < day2, "{table}");
    let keynote = table.find("09:00-10:00").expect("keynote in event time");
    let party = table.find("22:00-00:00").expect("party in event time");
    let closing = table.find("17:00-18:00").expect("closing in event time");
    assert!(
        day1 < keynote && keynote < party && party < day2 && day2 < closing,
        "{table}"
    );
    assert!(
        table.contains("Opening keynote") && table.contains("Ada Lovelace"),
        "{table}"
    );

    let one_day = d.ok(&["agenda", "--day", "2026-06-11"]);
    assert!(
        one_day.contains("Closing") && !one_day.contains("Opening keynote"),
        "{one_day}"
    );
}

#[test]
fn organizers_move_and_cancel_sessions() {
    let d = organizer_with_agenda();
    d.ok(&["session", "move", "rust", "--room", "Hall A"]);
    d.ok(&[
        "session",
        "move",
        "keynote",
        "--start",
        "2026-06-10T09:30",
        "--end",
        "2026-06-10T10:30",
    ]);
    d.ok(&["session", "cancel", "closing"]);
    let items = d.agenda_json(&[]);
    let by_id = |id: &str| items.iter().find(|s| s["id"] == json!(id)).unwrap().clone();
    assert_eq!(by_id("rust")["room"], json!("Hall A"));
    assert_eq!(by_id("rust")["status"], json!("moved"));
    assert_eq!(
        by_id("keynote")["start"],
        json!("2026-06-10T09:30:00-04:00")
    );
    assert_eq!(by_id("keynote")["end"], json!("2026-06-10T10:30:00-04:00"));
    assert_eq!(by_id("keynote")["status"], json!("moved"));
    assert_eq!(by_id("closing")["status"], json!("cancelled"));
    assert_eq!(by_id("party")["status"], json!("scheduled"));
    let table = d.ok(&["agenda"]);
    assert!(
        table.contains("CANCELLED") && table.contains("MOVED"),
        "{table}"
    );

    let err = d.fail(&["session", "cancel", "nope"]);
    assert!(err.contains("nope"), "{err}");
    let err = d.fail(&["session", "move", "rust"]);
    assert!(err.contains("nothing to move"), "{err}");
    // --start without --end is a usage error.
    let out = d.run(&["session", "move", "rust", "--start", "2026-06-10T09:00"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn organizer_input_is_checked() {
    let d = organizer_with_agenda();
    let before = d.agenda_json(&[]);
    let add = |id: &'static str, start: &'static str, end: &'static str| {
        vec![
            "session", "add", "--id", id, "--title", "T", "--room", "R", "--start", start, "--end",
            end,
        ]
    };
    let err = d.fail(&add("x", "tomorrow", "2026-06-10T10:00"));
    assert!(err.contains("not a time"), "{err}");
    let err = d.fail(&add("x", "2026-06-10T10:00", "2026-06-10T09:00"));
    assert!(err.contains("ends before it starts"), "{err}");
    let err = d.fail(&add("keynote", "2026-06-10T10:00", "2026-06-10T11:00"));
    assert!(err.contains("exists already"), "{err}");
    let err = d.fail(&["event", "--timezone", "Mars/Olympus"]);
    assert!(err.contains("Mars/Olympus"), "{err}");
    let err = d.fail(&["announce", "   "]);
    assert!(err.contains("empty"), "{err}");
    assert_eq!(d.agenda_json(&[]), before);
    let event = d.ok(&["event"]);
    assert!(event.contains("America/New_York"), "{event}");
}

#[test]
fn attendees_cannot_change_the_agenda() {
    // The organizer's device is re-joined with an attendee token for the same
    // user, so the attendee has a real agenda that must stay as it is.
    let d = organizer_with_agenda();
    d.ok(&["announce", "Lunch is served in Hall B"]);
    let out = d.join(Role::Attendee, "ann");
    assert!(out.contains("attendee"), "{out}");
    let agenda = d.agenda_json(&[]);
    let announcements = d.json(&["announcements", "--json"]);
    let rooms = d.json(&["room", "list", "--json"]);
    let pending = d.pending();

    let attempts: [&[&str]; 6] = [
        &[
            "session",
            "add",
            "--id",
            "mine",
            "--title",
            "Mine",
            "--room",
            "Hall A",
            "--start",
            "2026-06-10T11:00",
            "--end",
            "2026-06-10T12:00",
        ],
        &["session", "move", "rust", "--room", "Hall A"],
        &["session", "cancel", "keynote"],
        &["announce", "Free beer"],
        &["event", "--name", "BobConf", "--timezone", "UTC"],
        &["room", "add", "Bob's room"],
    ];
    for args in attempts {
        let err = d.fail(args);
        assert!(err.contains("organizers only"), "{args:?}: {err}");
    }
    assert_eq!(d.agenda_json(&[]), agenda);
    assert_eq!(d.json(&["announcements", "--json"]), announcements);
    assert_eq!(d.json(&["room", "list", "--json"]), rooms);
    assert_eq!(d.pending(), pending);
    let event = d.ok(&["event"]);
    assert!(
        event.contains("RustConf") && event.contains("America/New_York"),
        "{event}"
    );

    // An attendee's fresh device likewise.
    let fresh = Device::new();
    fresh.join(Role::Attendee, "carol");
    let err = fresh.fail(attempts[0]);
    assert!(err.contains("organizers only"), "{err}");
    assert!(fresh.agenda_json(&[]).is_empty());
}

#[test]
fn announcements_are_listed_in_event_time() {
    let d = organizer_with_agenda();
    d.ok(&["announce", "Doors open at 8"]);
    d.ok(&["announce", "Lunch is served"]);
    let list = d.json(&["announcements", "--json"]);
    let texts: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["Doors open at 8", "Lunch is served"]);
    let at = list[0]["at"].as_str().unwrap();
    assert!(at.ends_with("-04:00") || at.ends_with("-05:00"), "{at}");
    let text = d.ok(&["announcements"]);
    assert!(text.contains("Doors open at 8"), "{text}");
}

#[test]
fn notes_are_printed_replaced_and_appended() {
    let d = Device::new();
    d.join(Role::Attendee, "bob");
    assert_eq!(d.ok(&["note", "keynote"]), "");
    d.ok(&["note", "keynote", "Great talk"]);
    assert_eq!(d.ok(&["note", "keynote"]), "Great talk\n");
    d.ok(&["note", "keynote", "--append", ", ask about CRDTs"]);
    assert_eq!(d.ok(&["note", "keynote"]), "Great talk, ask about CRDTs\n");
    d.ok(&["note", "keynote", "Rewritten"]);
    assert_eq!(d.ok(&["note", "keynote"]), "Rewritten\n");
    d.ok(&["note", "rust", "--append", "first words"]);
    assert_eq!(d.ok(&["note", "rust"]), "first words\n");
    assert_eq!(d.ok(&["note", "other"]), "");
    assert_eq!(
        d.json(&["notes", "--json"]),
        json!([{"id": "keynote", "note": "Rewritten"}, {"id": "rust", "note": "first words"}])
    );
    // Text and --append together make no sense.
    let out = d.run(&["note", "keynote", "x", "--append", "y"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(d.ok(&["note", "keynote"]), "Rewritten\n");
}

#[test]
fn bookmarks_are_set_cleared_and_listed() {
    let d = organizer_with_agenda();
    assert_eq!(d.json(&["bookmarks", "--json"]), json!([]));
    d.ok(&["bookmark", "keynote"]);
    d.ok(&["bookmark", "unknown-session"]);
    let list = d.json(&["bookmarks", "--json"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let keynote = list.iter().find(|b| b["id"] == json!("keynote")).unwrap();
    assert_eq!(
        *keynote,
        json!({
            "id": "keynote",
            "title": "Opening keynote",
            "start": "2026-06-10T09:00:00-04:00",
            "end": "2026-06-10T10:00:00-04:00",
            "room": "Hall A",
            "status": "scheduled",
        })
    );
    let unknown = list
        .iter()
        .find(|b| b["id"] == json!("unknown-session"))
        .unwrap();
    assert_eq!(*unknown, json!({"id": "unknown-session"}));
    let text = d.ok(&["bookmarks"]);
    assert!(
        text.contains("Opening keynote") && text.contains("unknown-session"),
        "{text}"
    );

    // A bookmark on a cancelled session is kept, and flagged.
    d.ok(&["session", "cancel", "keynote"]);
    let list = d.json(&["bookmarks", "--json"]);
    let keynote = list
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == json!("keynote"))
        .unwrap();
    assert_eq!(keynote["status"], "cancelled");
    assert!(d.ok(&["bookmarks"]).contains("[CANCELLED] Opening keynote"));

    d.ok(&["bookmark", "keynote", "--off"]);
    assert_eq!(
        d.json(&["bookmarks", "--json"]),
        json!([{"id": "unknown-session"}])
    );
}

#[test]
fn status_shows_offline_edits_as_pending() {
    let d = Device::new();
    d.join(Role::Attendee, "bob");
    assert_eq!(d.pending(), 0);
    d.ok(&["note", "keynote", "offline thoughts"]);
    let status = d.json(&["status", "--json"]);
    assert_eq!(
        keys(&status),
        set(&[
            "pending_changes",
            "last_sync",
            "refused",
            "kept_edits",
            "last_error"
        ])
    );
    assert_eq!(status["kept_edits"], 0);
    assert!(status["pending_changes"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["last_sync"], Value::Null);
    assert_eq!(status["refused"], json!([]));
    assert_eq!(status["last_error"], Value::Null);
    let text = d.ok(&["status"]);
    assert!(text.contains("never"), "{text}");
}

#[test]
fn sync_with_an_unreachable_server_fails_in_one_line_and_keeps_edits() {
    let d = Device::new();
    d.join(Role::Attendee, "bob");
    d.ok(&["note", "keynote", "kept while offline"]);
    let pending = d.pending();
    assert!(pending > 0);

    let out = d.run(&["sync", "--timeout", "2"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
    assert_one_line_error(&stderr);
    assert!(stderr.contains(DEAD_SERVER), "{stderr}");

    let status = d.json(&["status", "--json"]);
    assert_eq!(status["pending_changes"].as_u64(), Some(pending));
    assert_eq!(status["last_sync"], Value::Null);
    let last_error = status["last_error"]
        .as_str()
        .expect("the failure is remembered");
    assert!(last_error.contains(DEAD_SERVER), "{last_error}");
    assert_eq!(d.ok(&["note", "keynote"]), "kept while offline\n");

    let out = d.run(&["sync", "--timeout", "0"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a zero timeout is a usage error"
    );
}

#[test]
fn bad_links_are_refused_clearly() {
    let d = Device::new();
    let err = d.fail(&["join", "https://example.com/conf"]);
    assert!(err.contains("invalid join link"), "{err}");
    let good = link(Role::Attendee, "bob");
    let bad_pin = good.replace(&lanyard_protocol::cert_pin(b"x"), "abc");
    let err = d.fail(&["join", &bad_pin]);
    assert!(err.contains("pin"), "{err}");
    let bad_token = format!(
        "lanyard://{DEAD_SERVER}/conf?token=garbage&pin={}",
        lanyard_protocol::cert_pin(b"x")
    );
    let err = d.fail(&["join", &bad_token]);
    assert!(err.contains("token"), "{err}");
    // A token for another event than the link's.
    let other = link_with(Role::Attendee, "bob", "other", u64::MAX / 2);
    let mismatched = other.replace("/other?", "/conf?");
    let err = d.fail(&["join", &mismatched]);
    assert!(err.contains("other"), "{err}");

    let err = d.fail(&["status"]);
    assert!(err.contains("not joined"), "{err}");
}

#[test]
fn a_device_holds_one_user() {
    let d = Device::new();
    d.join(Role::Attendee, "bob");
    d.ok(&["note", "keynote", "bob's note"]);
    let err = d.fail(&["join", &link(Role::Attendee, "carol")]);
    assert!(err.contains("another home directory"), "{err}");
    let status = d.ok(&["status"]);
    assert!(
        status.contains("bob") && !status.contains("carol"),
        "{status}"
    );
    assert_eq!(d.ok(&["note", "keynote"]), "bob's note\n");
}

#[test]
fn commands_before_join_say_not_joined() {
    let d = Device::new();
    let commands: [&[&str]; 12] = [
        &["agenda"],
        &["agenda", "--json"],
        &["sync", "--timeout", "2"],
        &["status", "--json"],
        &["note", "keynote"],
        &["note", "keynote", "text"],
        &["bookmark", "keynote"],
        &["bookmarks"],
        &["announcements"],
        &["event"],
        &["session", "cancel", "keynote"],
        &["room", "list"],
    ];
    for args in commands {
        let err = d.fail(args);
        assert!(err.contains("not joined"), "{args:?}: {err}");
    }
    assert!(!d.home().join("db").exists(), "no database before join");

    // Also once the database exists but holds no credentials (a failed join).
    d.fail(&["join", "lanyard://nope"]);
    let err = d.fail(&["agenda"]);
    assert!(err.contains("not joined"), "{err}");
}

#[test]
fn home_can_come_from_the_environment() {
    let d = Device::new();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("LANYARD_HOME", d.home())
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    assert!(run(&["join", &link(Role::Attendee, "bob")])
        .status
        .success());
    assert!(run(&["note", "keynote", "via env"]).status.success());
    assert_eq!(d.ok(&["note", "keynote"]), "via env\n");
}

#[test]
fn help_describes_every_command() {
    let d = Device::new();
    let help = d.ok(&["--help"]);
    for cmd in [
        "join",
        "sync",
        "agenda",
        "session",
        "event",
        "room",
        "announce",
        "announcements",
        "note",
        "bookmark",
        "bookmarks",
        "status",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
        let sub = d.ok(&[cmd, "--help"]);
        assert!(sub.lines().count() > 2, "{cmd} --help: {sub}");
    }
    let bookmarks = d.ok(&["bookmarks", "--help"]);
    assert!(
        bookmarks.contains("{id}"),
        "bookmarks --help documents its JSON: {bookmarks}"
    );
}

fn fixture(name: &str) -> String {
    format!(
        "{}/../tests/data/schedules/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn import_prints_the_counts_of_each_real_schedule_and_reimports_as_a_no_op() {
    // (file, sessions, rooms, days): counted independently, see SOURCES.md.
    for (file, sessions, rooms, days) in [
        ("frab-camp2019.json", 79, 2, 5),
        ("frab-camp2019.xml", 79, 2, 5),
        ("frab-camp2019-noroom.xml", 79, 2, 5),
        ("pretalx-rc3.json", 48, 5, 4),
        ("pretalx-democon.json", 36, 2, 3),
        ("hub-schedule2.json", 2, 2, 2),
        ("invalid-example.json", 1, 1, 1),
        ("pyconuk2015-schedule.ics", 162, 11, 4),
    ] {
        let d = Device::new();
        d.join(Role::Organizer, "ann");
        let path = fixture(file);
        let first = d.json(&["import", &path, "--json"]);
        let counts = |v: &Value| {
            ["sessions", "rooms", "days", "added", "removed", "changed"].map(|k| {
                v[k].as_u64()
                    .unwrap_or_else(|| panic!("{file}: no {k} in {v}"))
            })
        };
        assert_eq!(
            counts(&first),
            [sessions, rooms, days, sessions, 0, 0],
            "{file}"
        );
        assert!(first["change_bytes"].as_u64().unwrap() > 0, "{file}");
        assert!(first["changes"].as_u64().unwrap() >= 1, "{file}");
        assert_eq!(d.agenda_json(&[]).len() as u64, sessions, "{file}");
        let again = d.json(&["import", &path, "--json"]);
        assert_eq!(counts(&again), [sessions, rooms, days, 0, 0, 0], "{file}");
        assert_eq!(again["change_bytes"], 0, "{file}");
        assert_eq!(again["changes"], 0, "{file}");
        let text = d.ok(&["import", &path]);
        assert!(text.contains("nothing to change"), "{file}: {text}");
    }
}

#[test]
fn a_malformed_schedule_names_the_line_and_leaves_the_agenda_untouched() {
    let d = organizer_with_agenda();
    let before = d.agenda_json(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "broken.json",
            "{\"schedule\": {\"conference\":\n  {\"days\": [}}}",
            "line 2",
        ),
        (
            "broken.ics",
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY:x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
            "line 2",
        ),
        (
            "broken.xml",
            "<schedule>\n<day date=\"2026-01-01\">\n<room name=\"A\"></day>",
            "line 3",
        ),
        ("noformat.txt", "hello", "--format"),
    ];
    for (name, content, expect) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let err = d.fail(&["import", path.to_str().unwrap()]);
        assert!(err.contains(expect), "{name}: {err}");
        assert_eq!(d.agenda_json(&[]), before, "{name}");
    }
    let err = d.fail(&["import", "/nonexistent/schedule.json"]);
    assert!(
        err.contains("cannot read /nonexistent/schedule.json"),
        "{err}"
    );
    // A wrong --format is an error too, not a guess.
    let err = d.fail(&[
        "import",
        &fixture("pyconuk2015-schedule.ics"),
        "--format",
        "json",
    ]);
    assert!(err.contains("as json") && err.contains("line 1"), "{err}");
    assert_eq!(d.agenda_json(&[]), before);
}

#[test]
fn a_dry_run_changes_nothing_and_attendees_cannot_import() {
    let d = Device::new();
    d.join(Role::Organizer, "ann");
    let dry = d.json(&[
        "import",
        &fixture("pretalx-rc3.json"),
        "--dry-run",
        "--json",
    ]);
    assert_eq!(dry["added"], 48);
    assert_eq!(dry["dry_run"], true);
    assert!(dry["change_bytes"].as_u64().unwrap() > 0);
    assert!(d.agenda_json(&[]).is_empty());
    assert_eq!(d.pending(), 0);

    let a = Device::new();
    a.join(Role::Attendee, "bob");
    let err = a.fail(&["import", &fixture("pretalx-rc3.json")]);
    assert!(err.contains("organizers only"), "{err}");
}

#[test]
fn exports_reimport_to_the_same_agenda_and_mine_is_the_bookmarks() {
    let d = Device::new();
    d.join(Role::Organizer, "ann");
    d.ok(&["import", &fixture("pyconuk2015-schedule.ics")]);
    let agenda = d.agenda_json(&[]);
    let dir = tempfile::tempdir().unwrap();
    for format in ["ics", "json", "xml"] {
        let path = dir.path().join(format!("export.{format}"));
        d.ok(&[
            "export",
            "--format",
            format,
            "--output",
            path.to_str().unwrap(),
        ]);
        let other = Device::new();
        other.join(Role::Organizer, "ann");
        let s = other.json(&["import", path.to_str().unwrap(), "--json"]);
        assert_eq!(s["sessions"], 162, "{format}");
        // schedule.json and schedule.xml want UUID guids: ids that are not
        // UUIDs travel as name-based UUIDs (and map back on a re-import).
        let mut want = agenda.clone();
        if format != "ics" {
            for item in &mut want {
                let id = item["id"].as_str().unwrap();
                item["id"] = json!(lanyard_schedule::export::guid_for(id));
            }
            let key =
                |v: &Value| ["start", "room", "id"].map(|k| v[k].as_str().unwrap().to_owned());
            want.sort_by_key(key);
        }
        assert_eq!(other.agenda_json(&[]), want, "{format}");
        let again = d.json(&["import", path.to_str().unwrap(), "--json"]);
        assert_eq!(again["change_bytes"], 0, "{format}");
    }
    let first = agenda[0]["id"].as_str().unwrap();
    let tenth = agenda[9]["id"].as_str().unwrap();
    d.ok(&["bookmark", first]);
    d.ok(&["bookmark", tenth]);
    let mine = d.ok(&["export", "--mine"]);
    assert!(mine.starts_with("BEGIN:VCALENDAR\r\n"), "{mine}");
    assert_eq!(mine.matches("BEGIN:VEVENT").count(), 2, "{mine}");
    let unfolded = mine.replace("\r\n ", "");
    assert!(unfolded.contains(&format!("UID:{first}\r\n")), "{unfolded}");
    assert!(unfolded.contains(&format!("UID:{tenth}\r\n")), "{unfolded}");
}

/// Times are stored as UTC instants and shown in the event's zone, whatever
/// zone the device is set to: an America/New_York event seen from a device
/// in Asia/Tokyo, across the 2026-03-08 DST change.
#[test]
fn event_times_ignore_the_device_zone_across_dst() {
    let d = Device::in_zone("Asia/Tokyo");
    d.join(Role::Organizer, "ann");
    d.ok(&["event", "--name", "NYC", "--timezone", "America/New_York"]);
    for (id, day) in [("before", "2026-03-07"), ("after", "2026-03-09")] {
        d.ok(&[
            "session",
            "add",
            "--id",
            id,
            "--title",
            id,
            "--room",
            "Hall",
            "--start",
            &format!("{day}T09:00"),
            "--end",
            &format!("{day}T10:00"),
        ]);
    }
    let agenda = d.agenda_json(&[]);
    let starts: Vec<&str> = agenda
        .iter()
        .map(|s| s["start"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        ["2026-03-07T09:00:00-05:00", "2026-03-09T09:00:00-04:00"]
    );
    // The same instants, 23 hours apart plus one day: DST took an hour.
    let text = d.ok(&["agenda"]);
    assert!(text.contains("times in America/New_York"), "{text}");
    assert_eq!(text.matches("09:00").count(), 2, "{text}");
    // Seen from a device in UTC, nothing changes.
    let utc = Device::in_zone("UTC");
    utc.join(Role::Organizer, "ann");
    let exported = dir_file(&d, "ics");
    utc.ok(&[
        "import",
        exported.path().join("export.ics").to_str().unwrap(),
    ]);
    assert_eq!(utc.agenda_json(&[]), agenda);
    let ics = std::fs::read_to_string(exported.path().join("export.ics")).unwrap();
    assert!(ics.contains("DTSTART:20260307T140000Z"), "{ics}");
    assert!(ics.contains("DTSTART:20260309T130000Z"), "{ics}");
}

/// Exports `d`'s agenda into a temporary directory as `export.FORMAT`.
fn dir_file(d: &Device, format: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("export.{format}"));
    d.ok(&[
        "export",
        "--format",
        format,
        "--output",
        path.to_str().unwrap(),
    ]);
    dir
}

/// An older frab/pentabarf export: local `<start>` times only, no `<date>`,
/// no `<time_zone_name>` unless `zone` is given. FOSDEM's keynote at 09:30
/// and a talk at 14:00, Brussels time, on 2025-02-01.
fn older_export(zone: Option<&str>) -> String {
    let conference = match zone {
        Some(z) => format!(
            "<conference><title>FOSDEM</title><time_zone_name>{z}</time_zone_name></conference>"
        ),
        None => "<conference><title>FOSDEM</title></conference>".to_owned(),
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<schedule>
  {conference}
  <day index="1" date="2025-02-01">
    <room name="Janson">
      <event guid="1b8c3ee3-9d35-5c4e-8b05-0a9bb2d0d4a1" id="1">
        <start>09:30</start><duration>00:25</duration><title>Welcome to FOSDEM</title>
      </event>
      <event guid="2b8c3ee3-9d35-5c4e-8b05-0a9bb2d0d4a2" id="2">
        <start>14:00</start><duration>00:50</duration><title>Afternoon keynote</title>
      </event>
    </room>
  </day>
</schedule>
"#
    )
}

/// Imports `xml` (written to a temporary file) with `extra` arguments.
fn import_xml(d: &Device, xml: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedule.xml");
    std::fs::write(&path, xml).unwrap();
    let mut args = vec!["import", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    d.run(&args)
}

fn starts(d: &Device) -> Vec<String> {
    d.agenda_json(&[])
        .iter()
        .map(|s| s["start"].as_str().unwrap().to_owned())
        .collect()
}

/// The bug of issue 13: with the agenda in Europe/Brussels, an older export's
/// 09:30 was read as 09:30 UTC and shown as 10:30+01:00.
#[test]
fn local_times_of_an_older_export_are_read_in_the_agendas_zone() {
    let d = Device::in_zone("Asia/Tokyo");
    d.join(Role::Organizer, "ann");
    d.ok(&["event", "--timezone", "Europe/Brussels"]);
    let out = import_xml(&d, &older_export(None), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        starts(&d),
        ["2025-02-01T09:30:00+01:00", "2025-02-01T14:00:00+01:00"]
    );
    let text = d.ok(&["agenda"]);
    assert!(text.contains("09:30-09:55"), "{text}");
    // Re-importing the same file changes nothing.
    let out = import_xml(&d, &older_export(None), &["--json"]);
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["change_bytes"], 0);
}

#[test]
fn the_files_own_zone_wins_over_timezone_and_the_agendas() {
    let d = Device::new();
    d.join(Role::Organizer, "ann");
    d.ok(&["event", "--timezone", "Asia/Tokyo"]);
    let out = import_xml(
        &d,
        &older_export(Some("Europe/Brussels")),
        &["--timezone", "America/New_York"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        starts(&d),
        ["2025-02-01T09:30:00+01:00", "2025-02-01T14:00:00+01:00"]
    );
    // The file's zone became the agenda's.
    assert!(d.ok(&["event"]).contains("time zone: Europe/Brussels"));
}

#[test]
fn timezone_is_used_for_a_file_without_a_zone_and_becomes_the_agendas() {
    // Over the agenda's own zone, too.
    for agenda_zone in [None, Some("Asia/Tokyo")] {
        let d = Device::new();
        d.join(Role::Organizer, "ann");
        if let Some(z) = agenda_zone {
            d.ok(&["event", "--timezone", z]);
        }
        let out = import_xml(
            &d,
            &older_export(None),
            &["--timezone", "Europe/Brussels", "--json"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["time_zone"], "Europe/Brussels", "{agenda_zone:?}");
        assert_eq!(
            starts(&d),
            ["2025-02-01T09:30:00+01:00", "2025-02-01T14:00:00+01:00"],
            "{agenda_zone:?}"
        );
        assert!(d.ok(&["event"]).contains("time zone: Europe/Brussels"));
    }
}

#[test]
fn local_times_with_no_zone_anywhere_are_refused_and_the_agenda_is_untouched() {
    let d = Device::new();
    d.join(Role::Organizer, "ann");
    let out = import_xml(&d, &older_export(None), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_one_line_error(&err);
    assert!(err.contains("--timezone"), "{err}");
    assert!(err.contains("the agenda is unchanged"), "{err}");
    assert!(err.contains("XML line 7: event 1"), "{err}");
    assert!(d.agenda_json(&[]).is_empty());
    assert_eq!(d.pending(), 0);
    assert!(d.ok(&["event"]).contains("time zone: UTC"));
    // A zone that does not exist is refused clearly, too.
    let out = import_xml(&d, &older_export(None), &["--timezone", "Europe/Brusels"]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("unknown time zone \"Europe/Brusels\""),
        "{err}"
    );
    assert!(d.agenda_json(&[]).is_empty());
    assert_eq!(d.pending(), 0);
}

/// Links, language and type from a real file are shown and exported; an
/// organizer adds a recording; attendees cannot; a bad URL is refused.
#[test]
fn sessions_keep_their_links_and_organizers_add_recordings() {
    let d = Device::new();
    d.join(Role::Organizer, "ann");
    d.ok(&["import", &fixture("fosdem-2025.xml")]);
    let agenda = d.agenda_json(&[]);
    let with_links: Vec<&Value> = agenda
        .iter()
        .filter(|s| !s["links"].as_array().unwrap().is_empty())
        .collect();
    assert!(with_links.len() > 300, "{}", with_links.len());
    let first = agenda[0].clone();
    assert_eq!(first["language"], "en");
    assert_eq!(first["type"], "devroom");
    assert!(first["url"]
        .as_str()
        .unwrap()
        .starts_with("https://fosdem.org/2025/schedule/event/"));
    let session = first["id"].as_str().unwrap().to_owned();

    let url = "https://video.fosdem.org/2025/k3201/recording.webm";
    let out = d.ok(&[
        "session",
        "link",
        &session,
        url,
        "--title",
        "Video recording",
    ]);
    assert!(out.contains("added a link"), "{out}");
    let shown = d.json(&["session", "show", &session, "--json"]);
    let links = shown["links"].as_array().unwrap();
    assert_eq!(
        links.last().unwrap(),
        &json!({ "url": url, "title": "Video recording" })
    );
    let text = d.ok(&["session", "show", &session]);
    assert!(
        text.contains(&format!("    {url} Video recording")),
        "{text}"
    );
    assert!(text.contains("  language: en"), "{text}");
    assert!(text.contains("  type:     devroom"), "{text}");

    for bad in ["not a url", "ftp://example.org/x", "javascript:alert(1)"] {
        let err = d.fail(&["session", "link", &session, bad]);
        assert!(err.contains("is not a web link"), "{bad}: {err}");
    }
    let err = d.fail(&["session", "link", "no-such-session", url]);
    assert!(err.contains("no session with id no-such-session"), "{err}");

    // Every export carries the link back.
    for format in ["ics", "json", "xml"] {
        let dir = dir_file(&d, format);
        let exported =
            std::fs::read_to_string(dir.path().join(format!("export.{format}"))).unwrap();
        assert!(exported.contains(url), "{format}");
        let again = d.json(&[
            "import",
            dir.path()
                .join(format!("export.{format}"))
                .to_str()
                .unwrap(),
            "--json",
        ]);
        assert_eq!(again["change_bytes"], 0, "{format}");
    }

    let a = Device::new();
    a.join(Role::Attendee, "bob");
    let err = a.fail(&["session", "link", &session, url]);
    assert!(err.contains("organizers only"), "{err}");
    assert_eq!(a.pending(), 0);
}

/// A file whose times all have offsets but that names no zone (pretalx-rc3)
/// sets no zone on a fresh agenda: a later file with local times is still
/// refused rather than read as UTC.
#[test]
fn a_file_without_a_zone_does_not_make_the_agenda_utc_for_later_local_times() {
    let d = Device::new();
    d.join(Role::Organizer, "ann");
    d.ok(&["import", &fixture("pretalx-rc3.json")]);
    let out = import_xml(&d, &older_export(None), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--timezone"), "{err}");
    assert_eq!(d.agenda_json(&[]).len(), 48);
}
