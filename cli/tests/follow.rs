//! `lanyard import URL --follow` against a local HTTP server that publishes
//! successive versions of a real schedule (frab-camp2019.xml), with ETags,
//! a server error and a malformed version in between; the organizer's
//! device imports and syncs each good version, and an attendee gets them.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use lanyard_protocol::Role;
use lanyard_tests::{TestServer, DEADLINE};

mod common;
use common::BIN;

/// What the schedule server publishes now.
#[derive(Clone)]
struct Published {
    status: u16,
    body: Vec<u8>,
    etag: String,
    requests: usize,
    not_modified: usize,
}

async fn schedule(State(p): State<Arc<Mutex<Published>>>, headers: HeaderMap) -> Response {
    let slow = {
        let mut p = p.lock().unwrap();
        p.requests += 1;
        p.status == 0
    };
    if slow {
        // Too slow: the follower's fetch times out first.
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        return StatusCode::OK.into_response();
    }
    let mut p = p.lock().unwrap();
    if p.status != 200 {
        return (
            StatusCode::from_u16(p.status).unwrap(),
            "the schedule is being rebuilt",
        )
            .into_response();
    }
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(p.etag.as_str())
    {
        p.not_modified += 1;
        return StatusCode::NOT_MODIFIED.into_response();
    }
    ([(header::ETAG, p.etag.clone())], p.body.clone()).into_response()
}

fn lanyard(home: &std::path::Path, args: &[&str]) -> String {
    common::lanyard_in(home, "UTC", args)
}

struct Follower(Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a line of `rx` holding every one of `words`.
fn wait_line(rx: &mpsc::Receiver<String>, words: &[&str], seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no line with {words:?} in time; saw {seen:#?}"));
        if let Ok(line) = rx.recv_timeout(left) {
            seen.push(line.clone());
            if words.iter().all(|w| line.contains(w)) {
                return line;
            }
        }
    }
}

fn lines_of(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(from).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_imports_each_new_version_once_and_keeps_the_last_good_one() {
    let v1 = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/schedules/frab-camp2019.xml"
    ))
    .unwrap();
    // Version 2: the opening ceremony is renamed. Version 3: the card10
    // talk is dropped from the schedule as well.
    let v2 = v1.replacen(
        "<title>Opening Ceremony</title>",
        "<title>Opening Ceremony (now in Tent A)</title>",
        1,
    );
    assert_ne!(v1, v2);
    let start = v2.find("<event guid=\"c9edea6f").unwrap();
    let end = start + v2[start..].find("</event>").unwrap() + "</event>".len();
    let v3 = format!("{}{}", &v2[..start], &v2[end..]);

    let published = Arc::new(Mutex::new(Published {
        status: 200,
        body: v1.clone().into_bytes(),
        etag: "\"v1\"".into(),
        requests: 0,
        not_modified: 0,
    }));
    let app = axum::Router::new()
        .route("/camp/schedule.xml", axum::routing::get(schedule))
        .with_state(published.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{http}/camp/schedule.xml");

    let mut server = TestServer::start().await.unwrap();
    let home = tempfile::tempdir().unwrap();
    lanyard(
        home.path(),
        &[
            "join",
            &server.link(Role::Organizer, "org", "laptop").unwrap(),
        ],
    );
    let mut child = Command::new(BIN)
        .arg("--home")
        .arg(home.path())
        .args([
            "import",
            &url,
            "--follow",
            "--every",
            "200ms",
            "--fetch-timeout",
            "1s",
        ])
        .env_remove("LANYARD_HOME")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines_of(child.stdout.take().unwrap());
    let err = lines_of(child.stderr.take().unwrap());
    let _follower = Follower(child);
    let (mut seen_out, mut seen_err) = (Vec::new(), Vec::new());

    let first = wait_line(
        &out,
        &["version 1:", "79 sessions", "79 added", "synced"],
        &mut seen_out,
    );
    // Unchanged: answered 304, nothing imported again.
    let deadline = Instant::now() + DEADLINE;
    while published.lock().unwrap().not_modified < 3 {
        assert!(Instant::now() < deadline, "no conditional GET answered 304");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        out.try_recv().is_err(),
        "an unchanged schedule printed a version"
    );

    published.lock().unwrap().status = 500;
    let failed = wait_line(&err, &["HTTP 500", "keeps version 1"], &mut seen_err);
    published.lock().unwrap().status = 0;
    let slow = wait_line(&err, &["in time", "keeps version 1"], &mut seen_err);

    {
        let mut p = published.lock().unwrap();
        (p.status, p.body, p.etag) = (200, v2.clone().into_bytes(), "\"v2\"".into());
    }
    let second = wait_line(&out, &["version 2:", "1 changed", "synced"], &mut seen_out);

    {
        let mut p = published.lock().unwrap();
        (p.body, p.etag) = (
            v2.as_bytes()[..v2.len() / 2].to_vec(),
            "\"v2-broken\"".into(),
        );
    }
    let broken = wait_line(&err, &["not applied", "keeps version 2"], &mut seen_err);

    {
        let mut p = published.lock().unwrap();
        (p.body, p.etag) = (v3.clone().into_bytes(), "\"v3\"".into());
    }
    let third = wait_line(
        &out,
        &["version 3:", "78 sessions", "1 cancelled", "synced"],
        &mut seen_out,
    );
    for l in [&first, &failed, &slow, &second, &broken, &third] {
        eprintln!("follow: {l}");
    }

    // An attendee gets version 3 from the server.
    let ann = server.device(Role::Attendee, "ann", "phone").unwrap();
    ann.sync().await.unwrap();
    let sessions = ann.client.sessions().unwrap();
    assert!(sessions
        .iter()
        .any(|s| s.title == "Opening Ceremony (now in Tent A)"));
    let card10 = sessions.iter().find(|s| s.title == "card10 Badge");
    assert!(
        card10.is_none_or(|s| s.status == lanyard_client_core::SessionStatus::Cancelled),
        "the dropped talk is cancelled: {card10:?}"
    );

    // The operator exports the event for migration (no server running:
    // from the store), and the agenda document becomes a c3voc
    // schedule.json again, with version 3 in it.
    drop(_follower);
    server.stop().await;
    let bin = lanyard_tests::server_bin_for_tests();
    let exported = tempfile::tempdir().unwrap();
    let outdir = exported.path().join("conf");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let o = Command::new(&bin)
            .args(["export", "--event", "conf", "--data"])
            .arg(server.dir())
            .arg("--output")
            .arg(&outdir)
            .output()
            .unwrap();
        if o.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "export failed: {o:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let agenda = outdir.join("agenda/conf.automerge");
    let json: serde_json::Value = serde_json::from_str(&lanyard(
        home.path(),
        &[
            "export",
            "--format",
            "json",
            "--agenda-file",
            agenda.to_str().unwrap(),
        ],
    ))
    .unwrap();
    let mut titles = Vec::new();
    for day in json["schedule"]["conference"]["days"].as_array().unwrap() {
        for talks in day["rooms"].as_object().unwrap().values() {
            for t in talks.as_array().unwrap() {
                titles.push(t["title"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(titles.len(), 78, "the cancelled talk is left out");
    assert!(titles
        .iter()
        .any(|t| t == "Opening Ceremony (now in Tent A)"));
}
