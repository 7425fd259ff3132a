//! The reveal server of a stage that has finished training: it keeps answering reveal
//! requests (and auditor hellos) from the tensor store until its audit windows close, so
//! steps committed near the end can still be audited. Pipeline traffic is refused.

use crate::access::RevealAccess;
use crate::store::TensorStore;
use crate::wire::{decode_request, ErrorCode, Limits, Request, Response};
use parity_scale_codec::Encode;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::mpsc;
use weft_p2p::{InboundRequest, PeerId};
use weft_primitives::step::{Replica, RunId, StageIndex};

/// After the last step: keeps answering reveal requests (and auditor hellos) of this stage
/// from the tensor store until `until` resolves, so steps committed near the end can still be
/// audited; pipeline traffic is refused. A trainer that stopped serving before its audit
/// windows closed would fail those audits with `NoReveal`.
pub async fn serve_reveals(
    mut inbound: mpsc::Receiver<InboundRequest>,
    store: Arc<TensorStore>,
    auditors: Arc<RevealAccess>,
    (run, stage, replica): (RunId, StageIndex, Replica),
    limits: Limits,
    until: impl std::future::Future<Output = ()>,
) {
    let handle = move |peer: PeerId, bytes: &[u8]| -> Response {
        match decode_request(bytes, &limits) {
            Err(e) => Response::error(ErrorCode::Malformed, e.to_string()),
            Ok(Request::Reveal(r)) => {
                let allowed: HashSet<PeerId> = if auditors.allows(&peer) {
                    HashSet::from([peer])
                } else {
                    HashSet::new()
                };
                store.answer_reveal(&allowed, (run, stage, replica), &peer, &r)
            }
            Ok(Request::AuditorHello {
                run: r,
                stage: s,
                account,
                signature,
            }) => {
                if r != run || s != stage {
                    return Response::error(
                        ErrorCode::WrongStage,
                        format!("this is run {run} stage {stage}"),
                    );
                }
                match auditors.hello((r, s), &peer, account, signature) {
                    Ok(()) => Response::Ack,
                    Err(why) => Response::error(ErrorCode::Forbidden, why.to_string()),
                }
            }
            Ok(_) => Response::error(
                ErrorCode::StaleStep,
                "training has finished; only reveals are served",
            ),
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
