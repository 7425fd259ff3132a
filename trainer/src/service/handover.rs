//! Taking over a slot that already has steps on chain: the stage state is handed over by
//! Merkle root, never invented.
//!
//! The chain refuses a step whose `weights_before` / `optimizer_before` roots are not the
//! slot's last committed `weights_after` / `optimizer_after` (`Discontinuous`), so a trainer
//! new to a slot at step `n > 0` must start from exactly that state. [`take_over`]:
//!
//! 1. reads the slot's commitment of step `n − 1` and its committer's declared peer;
//! 2. proves to that peer (the previous holder, which keeps serving its store after it is
//!    released, see [`super::leave`]) that this libp2p peer speaks for the chain's new holder
//!    (`SuccessorHello`, signed by the account);
//! 3. fetches `weights_after` and `optimizer_after` of step `n − 1` chunk by chunk, each chunk
//!    checked against the committed root with its Merkle proof before it is kept;
//! 4. loads them into the stage as after `n` completed steps, writes a checkpoint and a
//!    journal marked `handed_over` (step `n − 1` is the previous holder's; nothing of it is in
//!    this store), so training resumes at step `n` — also after a crash right now.
//!
//! Nothing else is trusted: a previous holder that serves other bytes fails the proofs.
//! Where the run's replicas average, every replica of the stage whose commitment of step
//! `n − 1` ends with the same roots holds the very same state, and serves it too (it admits
//! the chain's holder of another replica slot of its stage, `RevealAccess::set_siblings`):
//! a previous holder that vanished (SIGKILL, a dead machine) is replaced by a spare that
//! fetches the state from a live replica. Then the spare catches up: its rounds for the steps
//! the others trained without it adopt the sets they decided (answered from their stores),
//! so it applies the same aggregates and is bit-identical to them when it reaches them.
//! Where nobody holds the state (no replica, the holder gone), the stage waits (the trainer
//! keeps asking, and says so), since no other state would be accepted on chain.

use crate::chain::{self, ChainView, NodeState};
use crate::stage::checkpoint_path;
use std::path::Path;
use std::time::{Duration, Instant};
use weft_ml::commit::{StepCommitment, StepItem};
use weft_ml::worker::StageWorker;
use weft_primitives::AccountId;
use weft_primitives::Keypair;
use weft_rpc_client::Client;
use weft_stage_net::journal::Journal;
use weft_stage_net::reveal_fetch::{fetch_reveal, send_successor_hello, RevealFailure};
use weft_stage_net::topology::StagePeer;

/// The next step this data directory can train for its slot: after its journal's last
/// step, or at its checkpoint when it has no journal.
fn local_next(data_dir: &Path, worker: &mut StageWorker) -> anyhow::Result<u64> {
    if let Some(j) = Journal::read(data_dir)? {
        return Ok(j.last_committed + 1);
    }
    let ck = checkpoint_path(data_dir);
    Ok(if ck.exists() {
        weft_ml::checkpoint::load(worker, &ck)?
    } else {
        0
    })
}

/// Brings `data_dir` to the slot's state on chain when the chain is ahead of it (see the
/// module docs); returns the step training resumes at after a hand-over, `None` when there
/// was nothing to take over. Keeps trying while the previous holder cannot be reached.
#[allow(clippy::too_many_arguments)]
pub(super) async fn take_over(
    client: &Client,
    key: &Keypair,
    net: &weft_p2p::Network,
    (run, stage, replica): (u32, u16, u16),
    n_stages: usize,
    worker: &mut StageWorker,
    data_dir: &Path,
) -> anyhow::Result<Option<u64>> {
    let view = ChainView::new(NodeState { client, at: None });
    let chain_next = view.next_step(run, stage, replica).await?;
    let local = local_next(data_dir, worker)?;
    if chain_next == 0 || local >= chain_next {
        return Ok(None);
    }
    let last = chain_next - 1;
    let prev = view
        .commitment_of(run, stage, replica, last)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the chain has no commitment of step {last}"))?;
    let committed = StepCommitment {
        step: prev.step,
        roots: prev.roots,
        loss: prev.loss,
    };
    let (mut said, mut announced) = (false, false);
    let (weights, optimizer) = 'fetched: loop {
        let sources = state_sources(&view, (run, stage, replica), &prev, key).await?;
        if sources.is_empty() {
            // Slashed or gone, and no replica holds the state: nobody can hand it over now
            // (governance may still cancel the slash); the chain accepts no other state, so
            // the slot waits.
            if !said {
                println!(
                    "waiting: the previous holder {} of stage {stage} replica {replica} has no \
                     trainer record and no replica of the stage holds the state of step {last}, \
                     so nobody can hand it over",
                    prev.trainer
                );
                said = true;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            still_assigned(&view, (run, stage, replica), key).await?;
            continue;
        }
        for (who, from_replica, peer) in sources {
            if !announced {
                println!(
                    "taking over stage {stage} replica {replica} of run {run} at step {chain_next}: \
                     fetching the state of step {last} from {who} (replica {from_replica}, {})",
                    peer.peer_id
                );
                announced = true;
            }
            let slot = (run, stage, replica);
            let deadline = Instant::now() + Duration::from_secs(60);
            let fetched = match send_successor_hello(net, &peer, slot, key).await {
                Ok(()) => fetch_reveal(
                    net,
                    &peer,
                    (run, stage, from_replica),
                    &[StepItem::WeightsAfter, StepItem::OptimizerAfter],
                    &committed,
                    deadline,
                )
                .await
                .map_err(|e| match e {
                    RevealFailure::Mismatch(why) | RevealFailure::Missing(why) => why,
                }),
                Err(e) => Err(e.to_string()),
            };
            match fetched {
                Ok(mut items) => {
                    let w = items.remove(&StepItem::WeightsAfter).unwrap_or_default();
                    let o = items.remove(&StepItem::OptimizerAfter).unwrap_or_default();
                    println!(
                        "fetched the state of step {last} from {who} (replica {from_replica})"
                    );
                    break 'fetched (w, o);
                }
                Err(why) => println!(
                    "waiting for the state of step {last} from {} (replica {from_replica}): {why}",
                    peer.peer_id
                ),
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        still_assigned(&view, (run, stage, replica), key).await?;
    };
    weft_ml::checkpoint::load_canonical(worker, &weights, &optimizer, chain_next)?;
    weft_ml::checkpoint::save(worker, &checkpoint_path(data_dir))?;
    let journal = Journal {
        handed_over: true,
        ..Journal::for_commitment(run, usize::from(stage), n_stages, &committed)
    };
    journal.write(data_dir)?;
    println!(
        "took over stage {stage} replica {replica} of run {run} at step {chain_next}: \
         {} + {} bytes of state verified against the roots of step {last}",
        weights.len(),
        optimizer.len()
    );
    Ok(Some(chain_next))
}

/// Fails unless `key` still holds `slot` (the hand-over is for nothing otherwise).
async fn still_assigned(
    view: &ChainView<NodeState<'_>>,
    (run, stage, replica): (u32, u16, u16),
    key: &Keypair,
) -> anyhow::Result<()> {
    if view.slot(run, stage, replica).await? != Some(key.account_id()) {
        anyhow::bail!("no longer assigned stage {stage} replica {replica}");
    }
    Ok(())
}

/// Who can hand over the state that `prev` (the slot's last commitment) ends with, in the
/// order to ask them: its committer, then — where the run's replicas average — the holder
/// of every other replica of the stage whose commitment of the same step ends with the same
/// weights and optimiser roots (the same state, bit for bit). Each with the replica whose
/// store to read and its declared peer.
async fn state_sources(
    view: &ChainView<NodeState<'_>>,
    (run, stage, replica): (u32, u16, u16),
    prev: &chain::work::Commitment,
    key: &Keypair,
) -> anyhow::Result<Vec<(AccountId, u16, StagePeer)>> {
    let peer_of = |who: AccountId| async move {
        Ok::<_, anyhow::Error>(
            view.trainer(&who)
                .await?
                .and_then(|rec| chain::trainer_peer(&rec).ok()),
        )
    };
    let mut out = Vec::new();
    if let Some(p) = peer_of(prev.trainer).await? {
        out.push((prev.trainer, replica, p));
    }
    let info = view.run(run).await?;
    if !info.hyper_params.replica_sync.averages() {
        return Ok(out);
    }
    let me = key.account_id();
    for (r, who) in view
        .replica_holders(run, stage, replica, info.replicas)
        .await?
    {
        if who == me || who == prev.trainer {
            continue;
        }
        let same = view
            .commitment_of(run, stage, r, prev.step)
            .await?
            .is_some_and(|c| {
                c.roots.weights_after == prev.roots.weights_after
                    && c.roots.optimizer_after == prev.roots.optimizer_after
            });
        if let (true, Some(p)) = (same, peer_of(who).await?) {
            out.push((who, r, p));
        }
    }
    Ok(out)
}
