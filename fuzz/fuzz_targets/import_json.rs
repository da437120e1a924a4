//! Arbitrary bytes through `parse_schedule_json`: a schedule or a clear error, never a
//! panic; an imported schedule keeps its documented invariants.
#![no_main]

use lanyard_schedule::import::parse_schedule_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lanyard_fuzz::check_import(parse_schedule_json(data));
});
