//! Decoding arbitrary bytes as an extrinsic never panics, and what decodes re-encodes to the
//! same bytes (SCALE is canonical for these types), so a node cannot be crashed or confused by
//! a malformed `author_submitExtrinsic`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use parity_scale_codec::{Decode, Encode};

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    if let Ok(xt) = weft_runtime::Extrinsic::decode(&mut input) {
        let consumed = data.len() - input.len();
        assert_eq!(xt.encode(), &data[..consumed]);
        // Signature checking of garbage must not panic either.
        let ctx = weft_primitives::SigningContext {
            genesis_hash: weft_primitives::Hash::ZERO,
            birth_hash: weft_primitives::Hash::ZERO,
        };
        let _ = xt.signature_is_valid(ctx);
    }
});
