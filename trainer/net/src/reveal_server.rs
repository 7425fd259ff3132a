//! The reveal server of a stage that has finished training: it keeps answering reveal
//! requests (and auditor hellos) from the tensor store until its audit windows close, so
//! steps committed near the end can still be audited. Pipeline traffic is refused.

use crate::access::RevealAccess;
use crate::desk::{self, Desks, RequestDesk};
use crate::store::TensorStore;
use crate::wire::{decode_request, ErrorCode, Limits, Request, Response};
use parity_scale_codec::Encode;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::mpsc;
use weft_p2p::{InboundRequest, PeerId};
use weft_primitives::step::{Replica, RunId, StageIndex};

/// The stage a reveal server (or a training stage's link) answers for.
#[derive(Debug, Clone)]
pub struct RevealDesk {
    /// The committed tensors.
    pub store: TensorStore,
    /// Who may fetch them.
    pub auditors: Arc<RevealAccess>,
    /// `(run, stage, replica)` of the store.
    pub slot: (RunId, StageIndex, Replica),
}

impl RequestDesk for RevealDesk {
    /// The answer to `request` from `peer` if it is a reveal, an auditor hello or a
    /// successor hello (which the store and the access list answer, whether the stage is
    /// training or not); `None` for pipeline traffic.
    fn answer(&self, peer: &PeerId, request: &Request) -> Option<Response> {
        let (run, stage, replica) = self.slot;
        match request {
            Request::Reveal(r) => {
                let allowed: HashSet<PeerId> = if self.auditors.allows(peer) {
                    HashSet::from([*peer])
                } else {
                    HashSet::new()
                };
                Some(
                    self.store
                        .answer_reveal(&allowed, (run, stage, replica), peer, r),
                )
            }
            Request::AuditorHello {
                run: r,
                stage: s,
                account,
                signature,
            } => Some(if *r != run {
                Response::error(ErrorCode::WrongRun, format!("this is run {run}"))
            } else if *s != stage {
                Response::error(ErrorCode::WrongStage, format!("this is stage {stage}"))
            } else {
                match self
                    .auditors
                    .hello((run, stage), peer, *account, *signature)
                {
                    Ok(()) => {
                        tracing::info!(%peer, account = %hex::encode(account), "auditor admitted");
                        Response::Ack
                    }
                    Err(why) => Response::error(ErrorCode::Forbidden, why.to_string()),
                }
            }),
            Request::SuccessorHello {
                run: r,
                stage: s,
                replica: rep,
                account,
                signature,
            } => Some(if (*r, *s) != (run, stage) {
                Response::error(
                    ErrorCode::WrongStage,
                    format!("this is stage {stage} replica {replica} of run {run}"),
                )
            } else {
                match self.auditors.successor_hello(
                    replica,
                    (*r, *s, *rep),
                    peer,
                    *account,
                    *signature,
                ) {
                    Ok(()) => {
                        tracing::info!(%peer, account = %hex::encode(account), "successor admitted");
                        Response::Ack
                    }
                    Err(why) => Response::error(ErrorCode::Forbidden, why.to_string()),
                }
            }),
            _ => None,
        }
    }
}

/// After the last step: keeps answering reveal requests (and auditor hellos) of this stage
/// from the tensor store, and whatever else `desks` take (inference), until `until`
/// resolves, so steps committed near the end can still be audited; pipeline traffic is
/// refused. A trainer that stopped serving before its audit windows closed would fail those
/// audits with `NoReveal`.
pub async fn serve_reveals(
    mut inbound: mpsc::Receiver<InboundRequest>,
    desks: Desks,
    limits: Limits,
    until: impl std::future::Future<Output = ()>,
) {
    let handle = move |peer: PeerId, bytes: &[u8]| -> Response {
        match decode_request(bytes, &limits) {
            Err(e) => Response::error(ErrorCode::Malformed, e.to_string()),
            Ok(req) => desk::answer(&desks, &peer, &req).unwrap_or_else(|| {
                Response::error(
                    ErrorCode::StaleStep,
                    "training has finished; only reveals are served",
                )
            }),
        }
    };
    let handle = Arc::new(handle);
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = &mut until => break,
            req = inbound.recv() => {
                let Some(InboundRequest { peer, request, reply }) = req else { break };
                let handle = handle.clone();
                tokio::spawn(async move {
                    let resp = tokio::task::spawn_blocking(move || handle(peer, &request))
                        .await
                        .unwrap_or_else(|e| Response::error(ErrorCode::Internal, e.to_string()));
                    let _ = reply.send(resp.encode());
                });
            }
        }
    }
}
