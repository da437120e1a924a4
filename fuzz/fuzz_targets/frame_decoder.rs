//! Arbitrary bytes, in arbitrary chunkings, through `wire::FrameDecoder` with
//! a small limit; every frame decoded as `ClientMsg` and as `ServerMsg`.
//! Checks: bodies respect the limit, the chunking changes nothing, decoded
//! messages round-trip.
#![no_main]

use lanyard_protocol::wire::{self, FrameDecoder, FrameError};
use lanyard_protocol::{ClientMsg, ServerMsg};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    limit: u8,
    cuts: Vec<u8>,
    data: Vec<u8>,
}

/// What a decoder yields: the frame bodies, then how it stopped.
fn frames(limit: usize, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Result<(), FrameError>) {
    let mut d = FrameDecoder::new(limit);
    let mut out = Vec::new();
    for chunk in chunks {
        d.push(chunk);
        loop {
            match d.next_frame() {
                Ok(Some(body)) => {
                    assert!(body.len() <= limit, "body over the limit");
                    out.push(body);
                }
                Ok(None) => break,
                Err(e) => return (out, Err(e)),
            }
        }
    }
    let end = d.finish();
    (out, end)
}

fn round_trip<M>(body: &[u8])
where
    M: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(m) = wire::decode::<M>(body) {
        let frame = wire::encode(&m);
        let again: M = wire::decode(&frame[wire::HEADER_LEN..])
            .unwrap_or_else(|e| panic!("re-encoded {m:?} does not decode: {e}"));
        assert_eq!(again, m);
    }
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
        round_trip::<ClientMsg>(body);
        round_trip::<ServerMsg>(body);
    }
});
