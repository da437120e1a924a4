//! Arbitrary bytes, in arbitrary chunkings, through `wire::FrameDecoder` with
//! a small limit; every frame decoded as `ClientMsg` and as `ServerMsg`.
//! Checks: bodies respect the limit, the chunking changes nothing, decoded
//! messages round-trip.
#![no_main]

use lanyard_protocol::testing::{frames, round_trip};
use lanyard_protocol::wire::FrameError;
use lanyard_protocol::{ClientMsg, ServerMsg};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    limit: u8,
    cuts: Vec<u8>,
    data: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let limit = usize::from(input.limit);
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut rest = input.data.as_slice();
    for cut in &input.cuts {
        let n = usize::from(*cut).min(rest.len());
        let (a, b) = rest.split_at(n);
        chunks.push(a);
        rest = b;
    }
    chunks.push(rest);
    let (bodies, end) = frames(limit, &chunks);
    let whole = frames(limit, &[input.data.as_slice()]);
    assert_eq!(
        (&bodies, &end),
        (&whole.0, &whole.1),
        "chunking changed the frames"
    );
    if let Err(FrameError::TooLarge { len, limit: l }) = &end {
        assert!(len > l);
    }
    for body in &bodies {
        let _ = round_trip::<ClientMsg>(body);
        let _ = round_trip::<ServerMsg>(body);
    }
});
