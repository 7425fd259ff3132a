//! Block sync: catching up from a peer, and answering peers that catch up.
//!
//! A node that sees consensus traffic for a height beyond the next, or a peer whose
//! finalized head is above its own, asks that peer for finalized blocks from its own
//! finalized height + 1, [`MAX_BLOCKS_PER_RESPONSE`] at a time, until the peer has no more.
//! Every block is imported with [`Chain::import_block`]: its certificate is checked against
//! the validator set in its parent's state (so sets that change at epoch boundaries are
//! followed block by block), it is re-executed, and its state root must match. A peer that
//! serves a block that fails is punished and the sync stops; what was imported stays.
//!
//! Serving is bounded: at most [`MAX_BLOCKS_PER_RESPONSE`] blocks and [`MAX_RESPONSE_BYTES`]
//! per response (the network also rate-limits requests per peer).

use super::wire::{SyncRequest, SyncResponse, MAX_BLOCKS_PER_RESPONSE, MAX_RESPONSE_BYTES};
use crate::chain::{Chain, ChainError};
use crate::pool::Pool;
use parity_scale_codec::{Decode, Encode};
use weft_node_net::{NetworkHandle, PeerId};
use weft_runtime::{Block, Extrinsic};

/// How a catch-up ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// This many blocks were imported (maybe none: the peer had nothing new).
    Imported(u64),
    /// The peer served something invalid.
    BadPeer,
    /// The peer did not answer.
    Unreachable,
}

/// The response to a sync request, or `None` when the request does not decode.
pub fn answer(chain: &Chain, data: &[u8]) -> Option<Vec<u8>> {
    let request = SyncRequest::decode(&mut &data[..]).ok()?;
    let response = match request {
        SyncRequest::Status => {
            let heads = chain.heads();
            SyncResponse::Status {
                finalized: heads.finalized.number,
                hash: heads.finalized_hash,
            }
        }
        SyncRequest::Blocks { from, max } => {
            SyncResponse::Blocks(blocks_from(chain, from, max).unwrap_or_default())
        }
    };
    Some(response.encode())
}

fn blocks_from(
    chain: &Chain,
    from: u64,
    max: u32,
) -> Result<Vec<(Block, crate::consensus::Justification)>, ChainError> {
    let last = chain.heads().finalized.number;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let count = u64::from(max.min(MAX_BLOCKS_PER_RESPONSE));
    for n in from.max(1)..from.max(1).saturating_add(count) {
        if n > last {
            break;
        }
        let Some(hash) = chain.hash_of(n)? else { break };
        let Some((header, bodies, Some(justification))) = chain.block(&hash)? else {
            break;
        };
        let extrinsics = bodies
            .iter()
            .map(|b| Extrinsic::decode(&mut &b[..]))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ChainError::Missing(format!("stored extrinsic: {e}")))?;
        let size = header.encoded_size()
            + bodies.iter().map(Vec::len).sum::<usize>()
            + justification.data.len();
        if bytes + size > MAX_RESPONSE_BYTES && !out.is_empty() {
            break;
        }
        bytes += size;
        out.push((Block { header, extrinsics }, justification));
    }
    Ok(out)
}

/// The peer's finalized height, if it answers.
pub async fn status_of(net: &NetworkHandle, peer: PeerId) -> Option<u64> {
    let bytes = net.request(peer, SyncRequest::Status.encode()).await.ok()?;
    match SyncResponse::decode(&mut &bytes[..]).ok()? {
        SyncResponse::Status { finalized, .. } => Some(finalized),
        SyncResponse::Blocks(_) => None,
    }
}

/// Imports finalized blocks from `peer` until it has no more.
pub async fn catch_up(
    chain: &Chain,
    pool: &Pool,
    net: &NetworkHandle,
    peer: PeerId,
) -> SyncOutcome {
    let mut imported = 0u64;
    loop {
        let from = chain.heads().finalized.number + 1;
        let request = SyncRequest::Blocks {
            from,
            max: MAX_BLOCKS_PER_RESPONSE,
        };
        let Ok(bytes) = net.request(peer, request.encode()).await else {
            return if imported > 0 {
                SyncOutcome::Imported(imported)
            } else {
                SyncOutcome::Unreachable
            };
        };
        let blocks = match SyncResponse::decode(&mut &bytes[..]) {
            Ok(SyncResponse::Blocks(b)) => b,
            _ => return SyncOutcome::BadPeer,
        };
        if blocks.is_empty() {
            return SyncOutcome::Imported(imported);
        }
        for (block, justification) in blocks {
            let result =
                tokio::task::block_in_place(|| chain.import_block(&block, Some(&justification)));
            match result {
                Ok(hash) => {
                    imported += 1;
                    let included: Vec<_> = block.extrinsics.iter().map(|x| x.hash()).collect();
                    pool.on_block(
                        hash,
                        block.header.number,
                        true,
                        &included,
                        &[],
                        &chain.best_state(),
                    );
                }
                Err(ChainError::AlreadyKnown(_)) => {}
                Err(e) => {
                    tracing::warn!(%peer, number = block.header.number, error = %e, "peer served a block that does not import");
                    return SyncOutcome::BadPeer;
                }
            }
        }
    }
}
