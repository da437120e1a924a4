//! Arbitrary bytes decoded as `ClientMsg`: never a panic, and a decoded
//! message re-encodes to a frame that decodes to the same message.
#![no_main]

use lanyard_protocol::testing::round_trip;
use lanyard_protocol::ClientMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = round_trip::<ClientMsg>(data);
});
