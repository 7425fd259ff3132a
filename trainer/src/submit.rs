//! Exactly-once submission of step commitments to the chain.
//!
//! The tensor store and its journal ([`weft_stage_net::store`]) are the source of truth for what a
//! stage computed: steps `0..local_next` are committed locally, each with its
//! [`StepCommitment`]. The work pallet keeps the slot's next expected step, `chain_next`,
//! and accepts only that step (earlier ones are `AlreadyCommitted`, later ones
//! `OutOfOrder`). The submitter closes the gap `chain_next..local_next` one step at a time.
//!
//! # No commit sent twice, none skipped
//!
//! Before an extrinsic leaves the process its signed bytes, nonce and validity window are
//! written atomically to `<data-dir>/submit-journal.json` ([`SubmitJournal`]). After a crash
//! the journal's pending extrinsic is **re-broadcast byte for byte** instead of signing a
//! new one: the same extrinsic can be included at most once (one nonce), so a restart can
//! never put two commitments for a step on chain, nor pay for a duplicate. A pending
//! extrinsic is forgotten only when the chain proves it is settled: its step is below
//! `chain_next` (it landed), the account's nonce moved past it (it was included and
//! failed, or the nonce went to something else), or its mortal era ended (it can never be
//! included). [`plan`] is that decision, a pure function of the chain's and the journal's
//! numbers, tested on its own.
//!
//! Submission failures are retried with exponential backoff; dispatch errors that mean
//! "not now" (`RunNotTraining`, `StepLimit`) wait for later blocks; `NotAssigned` stops
//! training (the trainer lost its slot).

use crate::error::{Error, Result};
use parity_scale_codec::{Decode, Encode};
use std::path::{Path, PathBuf};
use std::time::Duration;
use weft_ml::commit::StepCommitment;
use weft_pallet_support::{Replica, RunId, StageIndex};
use weft_pallet_work::Error as WorkError;
use weft_primitives::compute::ComputeClass;
use weft_primitives::replicas::Round;
use weft_primitives::seal::StepSeals;
use weft_primitives::{Era, Keypair};
use weft_rpc_client::{Client, ClientError, SubmitOptions, WaitFor};
use weft_runtime::{Extrinsic, RuntimeCall};
use weft_stage_net::files::write_atomic;
use weft_stage_net::store::TensorStore;

/// The slot a trainer commits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlotId {
    /// The run.
    pub run: RunId,
    /// The stage.
    pub stage: StageIndex,
    /// The replica.
    pub replica: Replica,
}

/// A signed extrinsic that may be in flight.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingCommit {
    /// The step it commits.
    pub step: u64,
    /// The signer's nonce it uses.
    pub nonce: u64,
    /// Valid in blocks `birth + 1 ..= birth + period`.
    pub birth: u64,
    /// See `birth`.
    pub period: u64,
    /// Hex of the SCALE-encoded signed extrinsic.
    pub extrinsic: String,
}

/// The submission journal of a stage's data directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubmitJournal {
    /// The slot.
    pub slot: SlotId,
    /// The signed extrinsic not yet known to be settled.
    pub pending: Option<PendingCommit>,
}

impl SubmitJournal {
    /// The journal file in `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("submit-journal.json")
    }

    /// Reads the journal of `slot`, empty when there is none; a journal of another slot is
    /// an error (the data directory belongs to another assignment).
    pub fn load(data_dir: &Path, slot: SlotId) -> Result<Self> {
        let p = Self::path(data_dir);
        match std::fs::read(&p) {
            Ok(b) => {
                let j: SubmitJournal = serde_json::from_slice(&b)
                    .map_err(|e| Error::Chain(format!("{}: {e}", p.display())))?;
                if j.slot != slot {
                    return Err(Error::Chain(format!(
                        "{} is for {:?}, not {slot:?}: use another --data-dir",
                        p.display(),
                        j.slot
                    )));
                }
                Ok(j)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SubmitJournal {
                slot,
                pending: None,
            }),
            Err(e) => Err(weft_stage_net::Error::io(p, e).into()),
        }
    }

    /// Writes the journal atomically.
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Chain(format!("cannot serialise the submit journal: {e}")))?;
        Ok(write_atomic(&Self::path(data_dir), &json)?)
    }
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The chain has every locally committed step.
    UpToDate,
    /// Forget the pending extrinsic (settled: landed, nonce used, or expired), then plan
    /// again.
    ClearPending,
    /// Send the pending extrinsic again, unchanged.
    Rebroadcast,
    /// Sign and send a commitment for this step.
    Submit(u64),
    /// The chain is ahead of the local store: this data directory is not the one that
    /// trained the slot's steps.
    ChainAhead {
        /// The chain's next step.
        chain_next: u64,
        /// The local next step.
        local_next: u64,
    },
}

/// The decision (see the module docs). `best` is the best block number and `nonce` the
/// signer's current account nonce.
pub fn plan(
    chain_next: u64,
    local_next: u64,
    pending: Option<&PendingCommit>,
    best: u64,
    nonce: u64,
) -> Action {
    if let Some(p) = pending {
        let landed = p.step < chain_next;
        let nonce_used = nonce > p.nonce;
        let expired = best >= p.birth.saturating_add(p.period);
        return if landed || nonce_used || expired {
            Action::ClearPending
        } else {
            Action::Rebroadcast
        };
    }
    if chain_next > local_next {
        Action::ChainAhead {
            chain_next,
            local_next,
        }
    } else if chain_next < local_next {
        Action::Submit(chain_next)
    } else {
        Action::UpToDate
    }
}

/// The `commit_step` call of `c` for `slot`, computed under `compute`, with the seals its
/// neighbours gave for what it received and, where the replicas average, its round: the
/// replicas whose updates it aggregated and their sealed roots.
pub fn commit_call(
    slot: SlotId,
    c: &StepCommitment,
    compute: ComputeClass,
    seals: StepSeals,
    round: Option<Round>,
) -> RuntimeCall {
    RuntimeCall::Work(weft_pallet_work::Call::CommitStep {
        run: slot.run,
        stage: slot.stage,
        replica: slot.replica,
        step: c.step,
        roots: c.roots,
        loss: c.loss,
        compute,
        seals,
        round,
    })
}

/// Where the submitter stands after [`Submitter::sync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    /// Every local step is on chain.
    UpToDate,
    /// The chain refuses work for now (halted, paused, step limit); try after new blocks.
    Waiting(String),
}

/// Submits a slot's locally committed steps.
pub struct Submitter<'a> {
    client: &'a Client,
    key: Keypair,
    slot: SlotId,
    data_dir: PathBuf,
    store: TensorStore,
    journal: SubmitJournal,
    /// Blocks an extrinsic stays valid.
    pub mortality: u64,
    /// Attempts per RPC failure before giving up this round.
    pub attempts: u32,
    /// Where the latency of each landed commitment is recorded.
    pub metrics: Option<std::sync::Arc<crate::metrics::TrainerMetrics>>,
    /// The compute class declared with each commitment (what the steps were computed
    /// under).
    pub compute: ComputeClass,
}

impl std::fmt::Debug for Submitter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitter")
            .field("slot", &self.slot)
            .field("pending", &self.journal.pending)
            .finish()
    }
}

fn chain_err(e: ClientError) -> Error {
    Error::Chain(e.to_string())
}

impl<'a> Submitter<'a> {
    /// A submitter for `slot` signing with `key`, reading `store` in `data_dir`.
    pub fn new(
        client: &'a Client,
        key: Keypair,
        slot: SlotId,
        data_dir: &Path,
        store: TensorStore,
    ) -> Result<Self> {
        let journal = SubmitJournal::load(data_dir, slot)?;
        Ok(Submitter {
            client,
            key,
            slot,
            data_dir: data_dir.to_owned(),
            store,
            journal,
            mortality: 64,
            attempts: 8,
            metrics: None,
            compute: ComputeClass::UNDECLARED,
        })
    }

    async fn with_retry<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut delay = Duration::from_millis(250);
        let mut last = None;
        for attempt in 1..=self.attempts.max(1) {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "{what} failed; retrying");
                    last = Some(e);
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        Err(last.unwrap_or_else(|| Error::Chain(format!("{what} failed"))))
    }

    async fn chain_numbers(&self) -> Result<(u64, u64, u64)> {
        let s = self.slot;
        self.with_retry("reading the chain", || async {
            let best = self.client.best_header().await.map_err(chain_err)?;
            let view = crate::chain::ChainView::new(crate::chain::NodeState {
                client: self.client,
                at: Some(best.hash()),
            });
            let next = view.next_step(s.run, s.stage, s.replica).await?;
            let nonce = self
                .client
                .account(self.key.account_id(), Some(best.hash()))
                .await
                .map_err(chain_err)?
                .nonce;
            Ok((next, best.number, nonce))
        })
        .await
    }

    /// Brings the chain up to `local_next` (exclusive) as far as it accepts now.
    pub async fn sync(&mut self, local_next: u64) -> Result<SyncState> {
        loop {
            let (chain_next, best, nonce) = self.chain_numbers().await?;
            match plan(
                chain_next,
                local_next,
                self.journal.pending.as_ref(),
                best,
                nonce,
            ) {
                Action::UpToDate => return Ok(SyncState::UpToDate),
                Action::ChainAhead {
                    chain_next,
                    local_next,
                } => {
                    return Err(Error::Chain(format!(
                        "the chain already has {chain_next} steps of {:?} but this data \
                         directory only {local_next}: it is not the directory that trained them",
                        self.slot
                    )))
                }
                Action::ClearPending => {
                    self.journal.pending = None;
                    self.journal.save(&self.data_dir)?;
                }
                Action::Rebroadcast => {
                    let Some(p) = self.journal.pending.clone() else {
                        continue;
                    };
                    let bytes = hex::decode(&p.extrinsic)
                        .map_err(|e| Error::Chain(format!("corrupt submit journal: {e}")))?;
                    let xt = Extrinsic::decode(&mut &bytes[..])
                        .map_err(|e| Error::Chain(format!("corrupt submit journal: {e}")))?;
                    tracing::info!(step = p.step, "re-broadcasting the journaled commitment");
                    if let Some(w) = self.send(&xt, p.step).await? {
                        return Ok(w);
                    }
                }
                Action::Submit(step) => {
                    let c = self.store.commitment(step).map_err(|e| {
                        Error::Chain(format!(
                            "step {step} is not in the tensor store ({e}); it was pruned before \
                             reaching the chain"
                        ))
                    })?;
                    let opts = SubmitOptions {
                        mortality: Some(self.mortality),
                        wait: WaitFor::InBlock,
                        ..SubmitOptions::default()
                    };
                    let aux = self
                        .store
                        .aux(step)
                        .map_err(|e| Error::Chain(format!("step {step}: {e}")))?;
                    let call = commit_call(
                        self.slot,
                        &c,
                        self.compute,
                        aux.seals_received,
                        crate::stage::replicas::committed_round(&aux),
                    );
                    let xt = self
                        .with_retry("signing", || async {
                            self.client
                                .sign(&self.key, call.clone(), &opts)
                                .await
                                .map_err(chain_err)
                        })
                        .await?;
                    let (birth, period) = match xt.era {
                        Era::Mortal { birth, period } => (birth, period),
                        Era::Immortal => (0, u64::MAX),
                    };
                    self.journal.pending = Some(PendingCommit {
                        step,
                        nonce: xt.nonce,
                        birth,
                        period,
                        extrinsic: hex::encode(xt.encode()),
                    });
                    self.journal.save(&self.data_dir)?;
                    if let Some(w) = self.send(&xt, step).await? {
                        return Ok(w);
                    }
                }
            }
        }
    }

    /// Sends `xt` (journaled) and interprets the outcome; `Some` to stop this round.
    async fn send(&mut self, xt: &Extrinsic, step: u64) -> Result<Option<SyncState>> {
        let t0 = std::time::Instant::now();
        match self
            .client
            .submit_extrinsic(xt, WaitFor::InBlock, Duration::from_secs(120))
            .await
        {
            Ok(r) if !r.failed() => {
                if let Some(m) = &self.metrics {
                    m.observe_commit(t0.elapsed());
                }
                tracing::info!(
                    step,
                    block = ?r.block_number,
                    ms = t0.elapsed().as_millis() as u64,
                    "commitment on chain"
                );
                self.journal.pending = None;
                self.journal.save(&self.data_dir)?;
                Ok(None)
            }
            Ok(r) => {
                self.journal.pending = None;
                self.journal.save(&self.data_dir)?;
                let msg = r
                    .error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_default();
                let typed = r
                    .error
                    .as_ref()
                    .and_then(|e| e.pallet_error::<WorkError>(weft_pallet_work::INDEX));
                if let Some(WorkError::NotAssigned | WorkError::BadSlot) = typed {
                    Err(Error::Stopped(format!(
                        "the chain no longer assigns {:?} to this account ({msg})",
                        self.slot
                    )))
                } else if let Some(WorkError::Discontinuous) = typed {
                    Err(Error::Stopped(format!(
                        "the chain refuses step {step} of {:?}: it does not start from the slot's last committed state ({msg})",
                        self.slot
                    )))
                } else if let Some(WorkError::AlreadyCommitted | WorkError::OutOfOrder) = typed {
                    Ok(None)
                } else {
                    Ok(Some(SyncState::Waiting(format!(
                        "commit of step {step} refused: {msg}"
                    ))))
                }
            }
            Err(ClientError::Rejected { message, .. }) => {
                // Stale nonce, duplicate in the pool, expired era: [`plan`] sorts it out
                // from the chain's numbers after the next block.
                tracing::debug!(step, %message, "the node refused the extrinsic");
                Ok(Some(SyncState::Waiting(format!(
                    "node refused step {step}: {message}"
                ))))
            }
            Err(e) => {
                tracing::warn!(step, error = %e, "submission failed; will retry");
                Ok(Some(SyncState::Waiting(format!(
                    "submission of step {step} failed: {e}"
                ))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(step: u64, nonce: u64, birth: u64) -> PendingCommit {
        PendingCommit {
            step,
            nonce,
            birth,
            period: 64,
            extrinsic: String::new(),
        }
    }

    #[test]
    fn plan_covers_every_case() {
        assert_eq!(plan(5, 5, None, 10, 3), Action::UpToDate);
        assert_eq!(plan(3, 5, None, 10, 3), Action::Submit(3));
        assert_eq!(
            plan(6, 5, None, 10, 3),
            Action::ChainAhead {
                chain_next: 6,
                local_next: 5
            }
        );
        // In flight and still valid: send the very same bytes again, never a new one.
        assert_eq!(
            plan(3, 5, Some(&pending(3, 7, 10)), 20, 7),
            Action::Rebroadcast
        );
        // It landed.
        assert_eq!(
            plan(4, 5, Some(&pending(3, 7, 10)), 20, 8),
            Action::ClearPending
        );
        // Included and failed (nonce used), or the nonce went elsewhere.
        assert_eq!(
            plan(3, 5, Some(&pending(3, 7, 10)), 20, 8),
            Action::ClearPending
        );
        // Expired: it can never be included any more.
        assert_eq!(
            plan(3, 5, Some(&pending(3, 7, 10)), 74, 7),
            Action::ClearPending
        );
        assert_eq!(
            plan(3, 5, Some(&pending(3, 7, 10)), 73, 7),
            Action::Rebroadcast
        );
    }
}
