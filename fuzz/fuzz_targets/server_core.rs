//! `ServerCore` after a valid `Hello`, fed fuzzer-chosen steps: pushes of real
//! Automerge changes mutated with their checksum fixed up (so mutations reach
//! change and op decoding and application), resyncs with arbitrary hashes,
//! malformed frames, more sessions. See `lanyard_fuzz::Scenario::parse` for
//! how bytes become steps and `lanyard_fuzz::run_scenario` for the
//! invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lanyard_fuzz::run_scenario(&lanyard_fuzz::Scenario::parse(data));
});
