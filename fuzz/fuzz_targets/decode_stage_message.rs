//! Decoding arbitrary bytes as a trainer-to-trainer request or response never panics; what
//! decodes re-encodes to exactly the same bytes (decoding is exact: no trailing bytes), and
//! every tensor in an accepted request passed validation. The stage network's decoders link
//! no libtorch, so this runs on its own.
#![no_main]
use libfuzzer_sys::fuzz_target;
use parity_scale_codec::Encode;
use weft_stage_net::wire::{decode_request, decode_response, Limits, Request};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_bytes: 1 << 20,
        ..Limits::default()
    };
    if let Ok(req) = decode_request(data, &limits) {
        assert_eq!(req.encode(), data);
        if let Request::Forward { tensor, .. }
        | Request::Backward { tensor, .. }
        | Request::SharedGrad { tensor, .. } = &req
        {
            assert!(tensor.validate(&limits, true).is_ok());
            let _ = tensor.expect(None, &[1, 2, 3]);
        }
    }
    if let Ok(resp) = decode_response(data) {
        assert_eq!(resp.encode(), data);
    }
});
