//! `ServerCore` after a valid `Hello`, fed fuzzer-chosen steps: pushes of real
//! Automerge changes mutated with their checksum fixed up (so mutations reach
//! change and op decoding and application), resyncs with arbitrary hashes,
//! malformed frames, more sessions. See `lanyard_fuzz::Scenario::parse` for
//! how bytes become steps and `lanyard_fuzz::run_scenario` for the
//! invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The server catches panics inside Automerge (catch_unwind around decode
    // and apply) and refuses the change; libFuzzer's hook would abort on
    // those caught panics too. A quiet hook leaves detection to
    // libfuzzer-sys's own catch_unwind around this closure, which still
    // aborts on any panic that escapes the server.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    lanyard_fuzz::run_scenario(&lanyard_fuzz::Scenario::parse(data));
});
