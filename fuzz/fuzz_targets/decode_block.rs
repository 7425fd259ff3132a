//! Decoding arbitrary bytes as a block (as `import-blocks` and block sync do) never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use parity_scale_codec::{Decode, Encode};

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    if let Ok(block) = weft_runtime::Block::decode(&mut input) {
        let consumed = data.len() - input.len();
        assert_eq!(block.encode(), &data[..consumed]);
        let _ = block.header.hash();
    }
});
