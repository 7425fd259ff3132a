//! Inference payment extrinsics: the calls of the inference pallet and the signed `open`
//! extrinsic that `weft infer` submits.
//!
//! Signing goes through [`Client::sign`], the path every `weft` command uses: the node's
//! genesis hash, a mortal era born at the best block (or immortal, per
//! [`SubmitOptions::mortality`]) and the signer's nonce read from the node unless given.

use crate::{Client, ClientError, SubmitOptions};
use parity_scale_codec::Encode;
use weft_primitives::{Hash, Keypair, Nonce};
use weft_runtime::inference::{Call, RequestId};
use weft_runtime::support::RunId;
use weft_runtime::RuntimeCall;

/// The `open` call: escrow `credentials_per_token × max_tokens` credentials of `run` for the
/// request with hash `request_hash`.
pub fn open_call(run: RunId, request_hash: Hash, max_tokens: u32) -> RuntimeCall {
    RuntimeCall::Inference(Call::Open {
        run,
        request_hash,
        max_tokens,
    })
}

/// The `settle` call: request `id` served with `tokens_delivered` tokens whose output hashes
/// to `output_hash` (signed by a trainer of the request's run).
pub fn settle_call(id: RequestId, tokens_delivered: u32, output_hash: Hash) -> RuntimeCall {
    RuntimeCall::Inference(Call::Settle {
        id,
        tokens_delivered,
        output_hash,
    })
}

/// The SCALE bytes of the signed `open` extrinsic, ready for `author_submitExtrinsic`.
/// `nonce` overrides `opts.nonce` when given; with neither, the signer's nonce is read from
/// the node's best block. Tip and mortality come from `opts`.
pub async fn signed_open(
    client: &Client,
    signer: &Keypair,
    run: RunId,
    request_hash: Hash,
    max_tokens: u32,
    nonce: Option<Nonce>,
    opts: &SubmitOptions,
) -> Result<Vec<u8>, ClientError> {
    let opts = SubmitOptions {
        nonce: nonce.or(opts.nonce),
        ..*opts
    };
    let xt = client
        .sign(signer, open_call(run, request_hash, max_tokens), &opts)
        .await?;
    Ok(xt.encode())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use parity_scale_codec::Decode;

    #[test]
    fn calls_encode_under_pallet_8() {
        let call = open_call(3, Hash([5; 32]), 64);
        let bytes = call.encode();
        assert_eq!(&bytes[..6], &[8, 0, 3, 0, 0, 0]);
        assert_eq!(RuntimeCall::decode(&mut &bytes[..]).unwrap(), call);
        assert_eq!(&settle_call(1, 2, Hash::ZERO).encode()[..2], &[8, 1]);
    }
}
