//! Runs the Python test of the generated bindings (`tests/python/`) against a
//! real `lanyard-server` over QUIC: generates the Python module from the
//! built library in library mode with this workspace's `uniffi-bindgen`,
//! then runs `python3` on the test script.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use lanyard_protocol::Role;
use lanyard_tests::TestServer;

/// The cdylib cargo built beside this test (`target/<profile>/` or its `deps/`).
fn cdylib() -> PathBuf {
    let name = format!(
        "{}lanyard_ffi{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let candidates = [deps.join(&name), deps.parent().unwrap().join(&name)];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| panic!("no {name} built beside the test in {candidates:?}"))
}

async fn run(cmd: &mut tokio::process::Command, what: &str) -> String {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in 300 s"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_bindings_work_against_a_real_server() {
    let lib = cdylib();
    let out = tempfile::tempdir().unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    run(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_uniffi-bindgen"))
            .current_dir(manifest)
            .args(["generate", "--library"])
            .arg(&lib)
            .args(["--language", "python", "--out-dir"])
            .arg(out.path()),
        "uniffi-bindgen",
    )
    .await;
    let module = out.path().join("lanyard_ffi.py");
    assert!(module.exists(), "no {} generated", module.display());
    std::fs::copy(&lib, out.path().join(lib.file_name().unwrap())).unwrap();

    let server = TestServer::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let stdout = run(
        tokio::process::Command::new("python3")
            .arg(manifest.join("tests/python/test_lanyard.py"))
            .env("PYTHONPATH", out.path())
            .env("LANYARD_WORK", work.path())
            .env(
                "LANYARD_ORG_LINK",
                server.link(Role::Organizer, "org", "laptop").unwrap(),
            )
            .env(
                "LANYARD_ANN_LINK",
                server.link(Role::Attendee, "ann", "phone").unwrap(),
            )
            .env(
                "LANYARD_ANN2_LINK",
                server.link(Role::Attendee, "ann", "laptop").unwrap(),
            )
            .env(
                "LANYARD_BOB_LINK",
                server.link(Role::Attendee, "bob", "phone").unwrap(),
            ),
        "python3 tests/python/test_lanyard.py",
    )
    .await;
    print!("{stdout}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
