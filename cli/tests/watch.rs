//! `lanyard watch` against a real server over QUIC: an attendee's terminal
//! prints the schedule changes an organizer makes, flagged when they touch
//! the attendee's bookmarks, in event time.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lanyard_protocol::Role;
use lanyard_schedule::import::parse_schedule_json;
use lanyard_schedule::import_schedule;
use lanyard_tests::{TestServer, DEADLINE};
use serde_json::Value;

mod common;
use common::BIN;

fn lanyard(home: &std::path::Path, args: &[&str]) -> String {
    common::lanyard_in(home, "Asia/Tokyo", args)
}

/// Kills the watcher if the test fails half way.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Collects alert lines until `done` holds for them, failing with what was
/// seen if that takes longer than the deadline.
fn collect_until(rx: &mpsc::Receiver<String>, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while !done(&seen) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            panic!("alerts missing after {DEADLINE:?}; saw {seen:#?}");
        };
        if let Ok(line) = rx.recv_timeout(left) {
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("watch printed a non-JSON line {line:?}: {e}"));
            seen.push(v);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_alerts_for_bookmarked_sessions_in_event_time() {
    let server = TestServer::start().await.unwrap();
    let org = server.device(Role::Organizer, "org", "laptop").unwrap();
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/schedules/frab-camp2019.json"
    ))
    .unwrap();
    let schedule = parse_schedule_json(&bytes).unwrap();
    import_schedule(&org.client, &schedule, false, &mut |_| {}).unwrap();
    org.sync().await.unwrap();

    // The attendee's terminal: join, fetch the agenda, bookmark two sessions.
    let home = tempfile::tempdir().unwrap();
    let link = server.link(Role::Attendee, "ann", "phone").unwrap();
    lanyard(home.path(), &["join", &link]);
    lanyard(home.path(), &["sync"]);
    let agenda: Vec<Value> =
        serde_json::from_str(&lanyard(home.path(), &["agenda", "--json"])).unwrap();
    assert_eq!(agenda.len(), 79);
    let (moved, cancelled, other) = (
        agenda[3]["id"].as_str().unwrap().to_owned(),
        agenda[4]["id"].as_str().unwrap().to_owned(),
        agenda[5]["id"].as_str().unwrap().to_owned(),
    );
    lanyard(home.path(), &["bookmark", &moved]);
    lanyard(home.path(), &["bookmark", &cancelled]);
    lanyard(home.path(), &["sync"]);

    let mut child = Command::new(BIN)
        .arg("--home")
        .arg(home.path())
        .args(["watch", "--json"])
        .env_remove("LANYARD_HOME")
        .env("TZ", "Asia/Tokyo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let watcher = Watcher(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (etx, erx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("watch: {line}");
            let _ = etx.send(line);
        }
    });
    // Wait until the watcher is connected, so the edits below are pushed.
    let deadline = Instant::now() + DEADLINE;
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.ends_with("connected")) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("watch never connected; stderr: {log:#?}"));
        if let Ok(l) = erx.recv_timeout(left) {
            log.push(l);
        }
    }

    // 2019-08-22 16:00 in Europe/Berlin (the event's zone) is 14:00Z.
    let start = jiff::Timestamp::from_second(1_566_482_400)
        .unwrap()
        .as_second();
    org.client
        .move_session(
            &moved,
            Some("Hall B".into()),
            Some(start),
            Some(start + 3600),
        )
        .unwrap();
    org.client.cancel_session(&cancelled).unwrap();
    org.client.cancel_session(&other).unwrap();
    org.client.announce("Lunch is in the big tent").unwrap();
    org.sync().await.unwrap();

    let alerts = collect_until(&rx, |seen| seen.len() >= 4);
    let find = |kind: &str, id: Option<&str>| {
        alerts
            .iter()
            .find(|v| v["kind"] == kind && id.is_none_or(|id| v["session"]["id"] == id))
            .unwrap_or_else(|| panic!("no {kind} alert for {id:?} in {alerts:#?}"))
    };
    let m = find("moved", Some(&moved));
    assert_eq!(m["bookmarked"], true, "{m}");
    assert_eq!(m["session"]["room"], "Hall B");
    assert_eq!(
        m["session"]["start"], "2019-08-22T16:00:00+02:00",
        "event time, not the device's Tokyo time"
    );
    let msg = m["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Your bookmarked session")
            && msg.contains("moved to Hall B at 2019-08-22 16:00"),
        "{msg}"
    );
    assert_eq!(find("cancelled", Some(&cancelled))["bookmarked"], true);
    assert_eq!(find("cancelled", Some(&other))["bookmarked"], false);
    let a = find("announcement", None);
    assert_eq!(a["announcement"]["text"], "Lunch is in the big tent");
    assert_eq!(alerts.len(), 4, "one alert per change: {alerts:#?}");

    // SIGTERM ends the watch cleanly.
    let pid = watcher.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let mut watcher = watcher;
    let deadline = Instant::now() + DEADLINE;
    let code = loop {
        if let Some(s) = watcher.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "watch did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "watch exited with {code:?}");
    // The bookmark on the cancelled session is kept.
    let marks = lanyard(home.path(), &["bookmarks", "--json"]);
    assert!(
        marks.contains(&cancelled) && marks.contains("\"cancelled\""),
        "{marks}"
    );
}
