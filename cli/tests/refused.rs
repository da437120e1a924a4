//! A device whose changes a real server refused gets unstuck from the
//! command line: `lanyard sync` says what happened and what to do, `lanyard
//! status` explains, `lanyard resolve-refused` sets the refused changes
//! aside and redoes what it can, and the next sync publishes (issue 13).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::{Command, Output};

use lanyard_protocol::{Limits, Role};
use lanyard_tests::TestServer;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_lanyard");
const FOSDEM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/schedules/fosdem-2025.xml"
);

fn run(home: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("LANYARD_HOME")
        .output()
        .unwrap()
}

fn ok(home: &Path, args: &[&str]) -> String {
    let out = run(home, args);
    assert!(
        out.status.success(),
        "lanyard {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(home: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(home, args)).unwrap()
}

/// The server takes changes of at most 64 KiB; devices that never
/// connected only know the default limits.
async fn strict_server() -> TestServer {
    TestServer::start_with(|o| {
        o.limits = Limits {
            max_change: 64 * 1024,
            ..Limits::default()
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organizer_gets_a_refused_import_published_from_the_command_line() {
    let srv = strict_server().await;
    let org = tempfile::tempdir().unwrap();
    let org = org.path();
    ok(
        org,
        &["join", &srv.link(Role::Organizer, "org", "laptop").unwrap()],
    );
    ok(org, &["import", FOSDEM]);
    let out = run(org, &["sync"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("change refused") && err.contains("lanyard resolve-refused"),
        "{err}"
    );
    // A later move builds on the refused import.
    let agenda = json(org, &["agenda", "--json"]);
    let id = agenda[5]["id"].as_str().unwrap().to_owned();
    ok(org, &["session", "move", &id, "--room", "Janson"]);
    let status = ok(org, &["status"]);
    assert!(status.contains("lanyard resolve-refused"), "{status}");
    assert!(!json(org, &["status", "--json"])["refused"]
        .as_array()
        .unwrap()
        .is_empty());

    let report = json(org, &["resolve-refused", "--json"]);
    assert!(report["set_aside"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(report["kept"], serde_json::json!([]));
    let redone: Vec<&str> = report["redone"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        redone
            .iter()
            .any(|r| r.contains(&id) && r.contains("Janson")),
        "{redone:?}"
    );
    ok(org, &["sync"]);
    assert_eq!(
        json(org, &["status", "--json"])["refused"],
        serde_json::json!([])
    );

    let ann = tempfile::tempdir().unwrap();
    let ann = ann.path();
    ok(
        ann,
        &["join", &srv.link(Role::Attendee, "ann", "phone").unwrap()],
    );
    ok(ann, &["sync"]);
    let shown = json(ann, &["session", "show", &id, "--json"]);
    assert_eq!(shown["room"], "Janson");
    assert_eq!(
        json(ann, &["agenda", "--json"]).as_array().unwrap().len(),
        agenda.as_array().unwrap().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attendee_gets_a_refused_note_through_and_sees_what_was_kept() {
    let srv = TestServer::start_with(|o| {
        o.limits = Limits {
            max_attendee_doc: 16 * 1024,
            ..Limits::default()
        }
    })
    .await
    .unwrap();
    let ann = tempfile::tempdir().unwrap();
    let ann = ann.path();
    ok(
        ann,
        &["join", &srv.link(Role::Attendee, "ann", "phone").unwrap()],
    );
    ok(ann, &["note", "t1", "a short note"]);
    let long = "z".repeat(40 * 1024);
    ok(ann, &["note", "t2", &long]);
    let out = run(ann, &["sync"]);
    assert!(!out.status.success(), "the server refuses the 40 KB note");
    let text = ok(ann, &["resolve-refused"]);
    assert!(text.contains("redone: note of session t1"), "{text}");
    assert!(text.contains("kept (session t2)"), "{text}");
    ok(ann, &["sync"]);
    let kept = json(ann, &["kept", "--json"]);
    assert_eq!(kept.as_array().unwrap().len(), 1);
    assert_eq!(kept[0]["session"], "t2");
    assert_eq!(
        kept[0]["text"].as_str().unwrap(),
        long,
        "the text is kept in full"
    );
    assert_eq!(json(ann, &["status", "--json"])["kept_edits"], 1);
    ok(ann, &["kept", "--clear"]);
    assert_eq!(json(ann, &["status", "--json"])["kept_edits"], 0);
    assert_eq!(ok(ann, &["note", "t1"]).trim(), "a short note");
}
