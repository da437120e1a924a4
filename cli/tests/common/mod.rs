//! Helpers shared by the CLI's integration tests.

use std::process::Command;

/// The `lanyard` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_lanyard");

/// Runs `lanyard --home HOME ARGS…` in the time zone `tz` (never the
/// caller's LANYARD_HOME), failing the test if it fails; its stdout.
pub fn lanyard_in(home: &std::path::Path, tz: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("LANYARD_HOME")
        .env("TZ", tz)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lanyard {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
