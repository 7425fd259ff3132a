//! The auditor's side of a reveal: prove to a trainer that this peer speaks for an auditor
//! ([`send_hello`]; a slot's successor: [`send_successor_hello`]), then fetch every committed item of a step chunk by chunk, checking each
//! chunk's Merkle proof against the root on chain before keeping it ([`fetch_reveal`]). A
//! chunk that does not verify is [`RevealFailure::Mismatch`]; an item not complete by the
//! deadline is [`RevealFailure::Missing`]. What the auditor then does with the bytes
//! (recomputation) is the ML core's (`weft_ml::audit`).

use crate::access::{auditor_hello_message, successor_hello_message};
use crate::error::{Error, Result};
use crate::topology::StagePeer;
use crate::wire::{decode_response, Request, Response, RevealRequest};
use parity_scale_codec::Encode;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use weft_primitives::step::{Replica, RunId, StageIndex, StepCommitment, StepItem};
use weft_primitives::tensor::verify_chunk;
use weft_primitives::Hash;

/// Why a reveal could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevealFailure {
    /// A chunk did not verify against its root, or the item's size is inconsistent.
    Mismatch(String),
    /// Not everything arrived before the deadline.
    Missing(String),
}

/// Sends the auditor's hello to `peer` (see [`crate::access`]).
pub async fn send_hello(
    net: &weft_p2p::Network,
    peer: &StagePeer,
    (run, stage): (RunId, StageIndex),
    account: [u8; 32],
    key: &weft_bls::SecretKey,
) -> Result<()> {
    let msg = auditor_hello_message(run, stage, &net.local_peer_id());
    let sig = key
        .sign(&msg)
        .map_err(|e| Error::Network(format!("cannot sign the hello: {e}")))?
        .to_bytes();
    let req = Request::AuditorHello {
        run,
        stage,
        account,
        signature: sig.0,
    };
    hello(net, peer, req, "the trainer").await
}

/// Sends a hello `req` to `peer` (`who`, for messages) and expects `Ack`.
async fn hello(net: &weft_p2p::Network, peer: &StagePeer, req: Request, who: &str) -> Result<()> {
    let resp = net
        .request(peer.peer_id, peer.addrs.clone(), req.encode())
        .await
        .map_err(|e| Error::Network(format!("hello to {}: {e}", peer.peer_id)))?;
    match decode_response(&resp) {
        Ok(Response::Ack) => Ok(()),
        Ok(other) => Err(Error::Network(format!(
            "{who} refused the hello: {other:?}"
        ))),
        Err(e) => Err(Error::Network(format!("bad hello response: {e}"))),
    }
}

/// Sends the hello of `slot`'s successor to `peer`, the slot's previous holder, signed by
/// the successor's account `key` (see [`crate::access`]).
pub async fn send_successor_hello(
    net: &weft_p2p::Network,
    peer: &StagePeer,
    (run, stage, replica): (RunId, StageIndex, Replica),
    key: &weft_primitives::Keypair,
) -> Result<()> {
    let msg = successor_hello_message(run, stage, replica, &net.local_peer_id());
    let req = Request::SuccessorHello {
        run,
        stage,
        replica,
        account: key.account_id().0,
        signature: key.sign(&msg).0,
    };
    hello(net, peer, req, "the previous holder").await
}

/// Fetches `items` of step `c` from `peer`, chunk by chunk, verifying each chunk against the
/// committed root; retries network failures and refusals with backoff until `deadline`.
/// Returns each item's canonical bytes (an item whose root is zero is empty, not fetched).
pub async fn fetch_reveal(
    net: &weft_p2p::Network,
    peer: &StagePeer,
    (run, stage, replica): (RunId, StageIndex, Replica),
    items: &[StepItem],
    c: &StepCommitment,
    deadline: Instant,
) -> std::result::Result<BTreeMap<StepItem, Vec<u8>>, RevealFailure> {
    let mut out = BTreeMap::new();
    for &item in items {
        let root = c.roots.get(item);
        if root == Hash::ZERO {
            out.insert(item, Vec::new());
            continue;
        }
        let mut bytes = Vec::new();
        let mut total: Option<u32> = None;
        let mut index = 0u32;
        let mut delay = Duration::from_millis(100);
        while total.is_none_or(|t| index < t) {
            if Instant::now() >= deadline {
                return Err(RevealFailure::Missing(format!(
                    "{item:?} chunk {index} not revealed by the deadline"
                )));
            }
            let req = Request::Reveal(RevealRequest {
                run,
                step: c.step,
                stage,
                replica,
                item,
                chunk: index,
            });
            let answer = net
                .request(peer.peer_id, peer.addrs.clone(), req.encode())
                .await;
            match answer.map(|b| decode_response(&b)) {
                Ok(Ok(Response::RevealChunk {
                    data,
                    proof,
                    total_chunks,
                })) => {
                    if total.is_some_and(|t| t != total_chunks)
                        || proof.index != u64::from(index)
                        || proof.leaf_count != u64::from(total_chunks)
                        || !verify_chunk(&root, &data, &proof)
                    {
                        return Err(RevealFailure::Mismatch(format!(
                            "{item:?} chunk {index} does not verify against the committed root"
                        )));
                    }
                    total = Some(total_chunks);
                    bytes.extend_from_slice(&data);
                    index += 1;
                    delay = Duration::from_millis(100);
                    continue;
                }
                Ok(Ok(other)) => {
                    tracing::debug!(?item, index, ?other, "reveal refused; will retry");
                }
                Ok(Err(e)) => {
                    return Err(RevealFailure::Mismatch(format!(
                        "undecodable reveal response: {e}"
                    )));
                }
                Err(e) => {
                    tracing::debug!(?item, index, error = %e, "reveal request failed; will retry")
                }
            }
            tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        out.insert(item, bytes);
    }
    Ok(out)
}
