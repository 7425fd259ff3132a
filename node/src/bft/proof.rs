//! `chain_getFinalityProof`: a stored justification, verified again and explained.

use super::verify::validator_set;
use crate::chain::{Chain, ChainError};
use crate::consensus::{Justification, DEV_ENGINE};
use parity_scale_codec::{Decode, Encode};
use weft_finality::{Certificate, BFT_ENGINE};
use weft_primitives::{Bytes, Header};
use weft_rpc_api::FinalityProof;

/// Verifies `justification` of `header` against the set of its parent state and describes it.
pub fn describe(
    chain: &Chain,
    header: &Header,
    justification: &Justification,
) -> Result<FinalityProof, ChainError> {
    if header.number == 0 {
        return Err(ChainError::Missing("a finality proof of genesis".into()));
    }
    let parent_state = chain.state_at(header.number - 1);
    chain
        .engine()
        .verify(&chain.genesis_hash(), header, justification, &parent_state)?;
    let engine = String::from_utf8_lossy(&justification.engine).into_owned();
    let encoded = Bytes(justification.encode());
    if justification.engine == BFT_ENGINE {
        let cert = Certificate::decode(&mut &justification.data[..])
            .map_err(|_| ChainError::Consensus(crate::consensus::ConsensusError::Malformed))?;
        let set = validator_set(&parent_state)?;
        let signers = cert.signer_accounts(&set);
        let signed: u64 = signers
            .iter()
            .filter_map(|a| set.get(a))
            .map(|v| v.power)
            .sum();
        let ppb =
            (u128::from(signed) * 1_000_000_000 / u128::from(set.total_power().max(1))) as u64;
        return Ok(FinalityProof {
            block: header.hash(),
            number: header.number,
            engine,
            round: Some(cert.round),
            signers,
            signed_power_ppb: ppb,
            signature: Bytes(cert.signature.0.to_vec()),
            encoded,
        });
    }
    debug_assert_eq!(justification.engine, DEV_ENGINE);
    Ok(FinalityProof {
        block: header.hash(),
        number: header.number,
        engine,
        round: None,
        signers: vec![header.author],
        signed_power_ppb: 1_000_000_000,
        signature: Bytes(justification.data.get(32..).unwrap_or_default().to_vec()),
        encoded,
    })
}
