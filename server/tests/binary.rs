//! The `lanyard-server` binary: serve prints address and pin and stops
//! gracefully on SIGTERM and SIGINT; invite prints one join link.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use lanyard_protocol::{token, JoinLink};

const BIN: &str = env!("CARGO_BIN_EXE_lanyard-server");
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `lanyard-server invite --data DIR ARGS…`.
fn invite(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["invite", "--data"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn serve_then_signal(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--data"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("pin")) {
        lines.push(rx.recv_timeout(DEADLINE).expect("serve prints its pin"));
    }
    let text = lines.join("\n");
    assert!(text.contains("listening on 127.0.0.1:"), "{text}");
    let pin = text.split_whitespace().last().unwrap().to_owned();
    assert_eq!(pin.len(), 64, "{text}");
    assert!(dir.path().join("cert.der").exists());

    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let exit = done_rx
        .recv_timeout(DEADLINE)
        .expect("server exits after the signal")
        .unwrap();
    assert!(exit.success(), "graceful exit, got {exit:?}");
    let mut rest = Vec::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
        rest.push(l);
    }
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");

    // The same data directory keeps its certificate: same pin after a restart.
    let out = invite(
        dir.path(),
        &["--event", "conf", "--role", "attendee", "--user", "ann"],
    );
    let link = JoinLink::parse(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(link.pin, pin);
}

#[test]
fn serve_stops_gracefully_on_sigterm() {
    serve_then_signal("-TERM");
}

#[test]
fn serve_stops_gracefully_on_sigint() {
    serve_then_signal("-INT");
}

#[test]
fn invite_prints_one_join_link() {
    let dir = tempfile::tempdir().unwrap();
    let out = invite(
        dir.path(),
        &[
            "--event",
            "rustconf",
            "--role",
            "organizer",
            "--user",
            "org",
            "--device",
            "laptop",
            "--server",
            "example.org:4433",
            "--server",
            "[2001:db8::2]:4433",
            "--ttl",
            "2h",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let link = JoinLink::parse(stdout.trim()).unwrap();
    assert_eq!(link.servers, ["example.org:4433", "[2001:db8::2]:4433"]);
    assert_eq!(link.event.as_str(), "rustconf");
    let claims = token::decode_unverified(&link.token).unwrap();
    assert_eq!(claims.role, lanyard_protocol::Role::Organizer);
    assert_eq!(claims.device.as_str(), "laptop");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(claims.expires_at > now + 7100 && claims.expires_at <= now + 7300);
}

#[test]
fn bad_invite_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = invite(
        dir.path(),
        &[
            "--event",
            "has space",
            "--role",
            "attendee",
            "--user",
            "ann",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("event id"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A node that is not HOST:PORT (or a list crammed into one --server).
    for bad in ["example.org", "a:1,b:2", ":4433"] {
        let out = invite(
            dir.path(),
            &[
                "--event", "conf", "--role", "attendee", "--user", "ann", "--server", bad,
            ],
        );
        assert!(!out.status.success(), "{bad} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("expected HOST:PORT"), "{bad}: {err}");
    }
}
