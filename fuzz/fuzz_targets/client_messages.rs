//! Arbitrary bytes decoded as `ClientMsg`: never a panic, and a decoded
//! message re-encodes to a frame that decodes to the same message.
#![no_main]

use lanyard_protocol::wire;
use lanyard_protocol::ClientMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = wire::decode::<ClientMsg>(data) {
        let frame = wire::encode(&msg);
        let mut header = [0u8; wire::HEADER_LEN];
        header.copy_from_slice(&frame[..wire::HEADER_LEN]);
        assert_eq!(
            u32::from_be_bytes(header) as usize,
            frame.len() - wire::HEADER_LEN
        );
        let again: ClientMsg = wire::decode(&frame[wire::HEADER_LEN..])
            .unwrap_or_else(|e| panic!("re-encoded {msg:?} does not decode: {e}"));
        assert_eq!(again, msg);
    }
});
