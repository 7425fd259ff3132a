//! The payment side of serving: is a request's escrow open for this run, and settling it
//! once delivered. [`ChainEscrows`] reads the inference pallet's storage through the
//! trainer's chain view and submits `inference.settle` signed by the stage holder's key;
//! tests put their own [`Escrows`] in its place.

use crate::chain::{ChainView, NodeState};
use std::sync::Arc;
use std::time::Duration;
use weft_pallet_inference::RequestStatus;
use weft_primitives::{Hash, Keypair};
use weft_rpc_client::{Client, SubmitOptions, WaitFor};
use weft_runtime::RuntimeCall;
use weft_stage_net::inference::RequestId;
use weft_stage_net::wire::RunId;

/// What a stage needs to know of an open escrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escrow {
    /// The hash of the request body paid for.
    pub request_hash: [u8; 32],
    /// Prompt plus completion tokens covered.
    pub max_tokens: u32,
}

/// Why a request is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscrowError {
    /// No such request on chain.
    #[error("inference request {0} does not exist")]
    Unknown(RequestId),
    /// The escrow pays for another run.
    #[error("inference request {id} pays for run {run}")]
    OtherRun {
        /// The request.
        id: RequestId,
        /// Its run.
        run: RunId,
    },
    /// Settled, refunded or expired.
    #[error("inference request {0} is no longer open")]
    NotOpen(RequestId),
    /// The chain could not be read.
    #[error("cannot read the chain: {0}")]
    Chain(String),
}

/// Escrow checks and settlement.
pub trait Escrows: Send + Sync {
    /// The escrow of `id` if it is open for `run`.
    fn open_escrow(&self, id: RequestId, run: RunId) -> Result<Escrow, EscrowError>;
    /// Settles `id` for `tokens` with `output_hash` (asynchronously; failures are logged).
    fn settle(&self, id: RequestId, tokens: u32, output_hash: [u8; 32]);
}

/// [`Escrows`] on a live chain.
pub struct ChainEscrows {
    client: Arc<Client>,
    key: Keypair,
    runtime: tokio::runtime::Handle,
}

impl ChainEscrows {
    /// Reads through `client` and settles signed by `key`, on `runtime`.
    pub fn new(client: Arc<Client>, key: Keypair, runtime: tokio::runtime::Handle) -> Self {
        ChainEscrows {
            client,
            key,
            runtime,
        }
    }
}

impl Escrows for ChainEscrows {
    fn open_escrow(&self, id: RequestId, run: RunId) -> Result<Escrow, EscrowError> {
        let client = self.client.clone();
        // Called on a blocking thread of the link's dispatcher, never on the reactor.
        self.runtime.block_on(async move {
            let view = ChainView::new(NodeState {
                client: &client,
                at: None,
            });
            let best = client
                .best_header()
                .await
                .map_err(|e| EscrowError::Chain(e.to_string()))?
                .number;
            let r = view
                .inference_request(id)
                .await
                .map_err(|e| EscrowError::Chain(e.to_string()))?
                .ok_or(EscrowError::Unknown(id))?;
            if r.run != run {
                return Err(EscrowError::OtherRun { id, run: r.run });
            }
            if r.status != RequestStatus::Open || r.expires_at <= best {
                return Err(EscrowError::NotOpen(id));
            }
            Ok(Escrow {
                request_hash: r.request_hash.0,
                max_tokens: r.max_tokens,
            })
        })
    }

    fn settle(&self, id: RequestId, tokens: u32, output_hash: [u8; 32]) {
        let (client, key) = (self.client.clone(), self.key.clone());
        self.runtime.spawn(async move {
            let call = RuntimeCall::Inference(weft_pallet_inference::Call::Settle {
                id,
                tokens_delivered: tokens,
                output_hash: Hash(output_hash),
            });
            let opts = SubmitOptions {
                wait: WaitFor::InBlock,
                ..SubmitOptions::default()
            };
            for attempt in 0..3 {
                match client.submit(&key, call.clone(), &opts).await {
                    Ok(r) if !r.failed() => {
                        tracing::info!(id, tokens, "inference request settled");
                        return;
                    }
                    Ok(r) => {
                        tracing::warn!(id, ?r, "settlement refused by the chain");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(id, attempt, error = %e, "settlement failed; retrying");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
        });
    }
}
