//! The tensor store: what a stage committed, kept on disk for the challenge window, and the
//! reveal server that hands it to the stage's auditors chunk by chunk.
//!
//! # Layout
//!
//! ```text
//! <data-dir>/store/<step>/weights_before.bin    canonical bytes (see weft_ml::commit), one
//!                         inputs.bin            file per committed item, exactly the byte
//!                         outputs.bin           stream whose 64 KiB chunks the commitment's
//!                         output_grads.bin      Merkle root covers (micro-batch order as
//!                         input_grads.bin       produced: inputs/outputs 0..M, gradients
//!                         weights_after.bin     M-1..0, the order of the backward pass)
//!                         optimizer_before.bin
//!                         optimizer_after.bin
//!                         commitment.scale      the SCALE-encoded StepCommitment
//!                         aux.scale             values exchanged outside the commitment
//!                                               (tied-embedding gradient, global clip
//!                                               norm) so a restart can replay the step
//! ```
//!
//! A step is written into `store/.tmp-<step>/`, every file synced, then the directory is
//! renamed to `store/<step>/` (a crash leaves either nothing or the whole step; leftover
//! temporary directories are removed on open). `weights_before` / `optimizer_before` are
//! hard links to the previous step's `*_after` files when those exist and their roots match,
//! so a step costs one copy of the weights, not two. Steps older than the retention window
//! are deleted after each write.
//!
//! # Reveals
//!
//! [`TensorStore::answer_reveal`] answers a [`RevealRequest`] only for peers in the
//! allow-list (the auditors assigned to the stage; others get [`ErrorCode::Forbidden`]),
//! with the chunk and its Merkle proof computed from the stored bytes: the auditor checks it
//! against the on-chain root with `weft_primitives::tensor::verify_chunk`.

use crate::error::{Error, Result};
use crate::files::{sync_dir, write_synced};
use crate::wire::{ErrorCode, Response, RevealRequest, WireTensor};
use parity_scale_codec::{Decode, Encode};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use weft_p2p::PeerId;
use weft_primitives::merkle;
use weft_primitives::seal::{Direction, StepSeals};
use weft_primitives::step::{Replica, RunId, StageIndex, Step, StepCommitment, StepItem};
use weft_primitives::tensor::CHUNK_SIZE;

/// The file name of a committed item in a step's store directory.
pub fn file_name(item: StepItem) -> &'static str {
    match item {
        StepItem::WeightsBefore => "weights_before.bin",
        StepItem::Inputs => "inputs.bin",
        StepItem::Outputs => "outputs.bin",
        StepItem::OutputGrads => "output_grads.bin",
        StepItem::InputGrads => "input_grads.bin",
        StepItem::WeightsAfter => "weights_after.bin",
        StepItem::OptimizerBefore => "optimizer_before.bin",
        StepItem::OptimizerAfter => "optimizer_after.bin",
        StepItem::Update => "update.bin",
    }
}

/// Values a stage exchanged in a step that are not committed tensors but that a replay
/// needs (what it received) or a restart must send again (what it sent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct StepAux {
    /// Tied embeddings: the other holder's gradient of `wte.weight`.
    pub shared_grad_other: Option<WireTensor>,
    /// Global clipping: the Σ‖g‖² over all stages (f64 bits).
    pub global_sq_sum_bits: Option<u64>,
    /// Tied embeddings: this stage's own gradient of `wte.weight`, as sent.
    pub shared_grad_own: Option<WireTensor>,
    /// Global clipping: this stage's own Σ‖g‖² (f64 bits), as sent.
    pub own_sq_sum_bits: Option<u64>,
    /// The neighbours' seals over what this stage received (committed with the step).
    pub seals_received: StepSeals,
    /// This stage's seals over what it sent, as sent: `(direction, root, signature)`.
    pub seals_sent: Vec<(Direction, [u8; 32], [u8; 64])>,
    /// Replicas that average: the replicas whose updates the step aggregated.
    pub replica_included: Option<weft_primitives::replicas::Included>,
    /// Replicas that average: the other included replicas' updates, as received, sealed.
    pub replica_updates: Vec<ReceivedUpdateBytes>,
}

/// Another replica's update as a replica received it (kept in its [`StepAux`]): what a replay
/// aggregates, and what its commitment says it received.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ReceivedUpdateBytes {
    /// The sending replica.
    pub replica: weft_primitives::step::Replica,
    /// The update's canonical bytes (f32 little-endian, parameter-name order), decoded from
    /// what crossed.
    pub bytes: Vec<u8>,
    /// The Merkle root of its canonical bytes.
    pub root: [u8; 32],
    /// The sender's seal over `root`.
    pub signature: [u8; 64],
}

/// The bytes of one step, ready to store. `None` for a `*_before` item means "the previous
/// step's `*_after`" (hard-linked).
#[derive(Debug, Clone, Default)]
pub struct StepBytes {
    /// Canonical bytes per item, in [`StepItem::ALL`] order; `None` only for the two
    /// `*_before` items.
    pub items: Vec<(StepItem, Option<Vec<u8>>)>,
}

/// The on-disk store of committed tensors of one stage.
#[derive(Debug, Clone)]
pub struct TensorStore {
    dir: PathBuf,
    retention: u64,
}

impl TensorStore {
    /// Opens (creating) the store under `<data_dir>/store`, keeping the last `retention`
    /// steps. Removes temporary directories left by a crash.
    pub fn open(data_dir: &Path, retention: u64) -> Result<Self> {
        if retention == 0 {
            return Err(Error::Store("the store must retain at least 1 step".into()));
        }
        let dir = data_dir.join("store");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in rd.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let p = entry.path();
                std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
        Ok(TensorStore { dir, retention })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn step_dir(&self, step: Step) -> PathBuf {
        self.dir.join(step.to_string())
    }

    /// The steps held, ascending.
    pub fn steps(&self) -> Result<Vec<Step>> {
        let rd = std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let mut steps: Vec<Step> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect();
        steps.sort_unstable();
        Ok(steps)
    }

    /// Whether step `step` is stored.
    pub fn has(&self, step: Step) -> bool {
        self.step_dir(step).join("commitment.scale").exists()
    }

    /// Stores step `commitment.step` atomically, then prunes steps older than the window.
    pub fn write_step(
        &self,
        commitment: &StepCommitment,
        bytes: &StepBytes,
        aux: &StepAux,
    ) -> Result<()> {
        let step = commitment.step;
        let tmp = self.dir.join(format!(".tmp-{step}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let prev = step.checked_sub(1).map(|p| self.step_dir(p));
        let prev_commitment = match step.checked_sub(1) {
            Some(p) if self.has(p) => self.commitment(p).ok(),
            _ => None,
        };
        for (item, data) in &bytes.items {
            let path = tmp.join(file_name(*item));
            match data {
                Some(d) => write_synced(&path, d)?,
                None => {
                    let (after, ok) = match (item, &prev_commitment) {
                        (StepItem::WeightsBefore, Some(pc)) => (
                            StepItem::WeightsAfter,
                            pc.roots.weights_after == commitment.roots.weights_before,
                        ),
                        (StepItem::OptimizerBefore, Some(pc)) => (
                            StepItem::OptimizerAfter,
                            pc.roots.optimizer_after == commitment.roots.optimizer_before,
                        ),
                        _ => (*item, false),
                    };
                    let src = prev
                        .as_ref()
                        .map(|p| p.join(file_name(after)))
                        .filter(|_| ok)
                        .ok_or_else(|| {
                            Error::Store(format!(
                                "step {step}: {item:?} not given and the previous step does not \
                                 hold it"
                            ))
                        })?;
                    if std::fs::hard_link(&src, &path).is_err() {
                        std::fs::copy(&src, &path).map_err(|e| Error::io(&src, e))?;
                    }
                }
            }
        }
        write_synced(&tmp.join("commitment.scale"), &commitment.encode())?;
        write_synced(&tmp.join("aux.scale"), &aux.encode())?;
        sync_dir(&tmp);
        let dest = self.step_dir(step);
        if dest.exists() {
            // A step recomputed after a crash that happened before its journal entry.
            std::fs::remove_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
        }
        std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
        sync_dir(&self.dir);
        self.prune(step)?;
        Ok(())
    }

    /// Deletes steps `≤ latest − retention`.
    pub fn prune(&self, latest: Step) -> Result<()> {
        let Some(keep_from) = (latest + 1).checked_sub(self.retention) else {
            return Ok(());
        };
        for s in self.steps()? {
            if s < keep_from {
                let d = self.step_dir(s);
                std::fs::remove_dir_all(&d).map_err(|e| Error::io(&d, e))?;
                tracing::debug!(step = s, "pruned from the tensor store");
            }
        }
        Ok(())
    }

    /// The stored commitment of `step`.
    pub fn commitment(&self, step: Step) -> Result<StepCommitment> {
        let p = self.step_dir(step).join("commitment.scale");
        let b = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        StepCommitment::decode(&mut &b[..])
            .map_err(|e| Error::Store(format!("{}: {e}", p.display())))
    }

    /// The stored replay values of `step`.
    pub fn aux(&self, step: Step) -> Result<StepAux> {
        let p = self.step_dir(step).join("aux.scale");
        let b = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        StepAux::decode(&mut &b[..]).map_err(|e| Error::Store(format!("{}: {e}", p.display())))
    }

    /// The stored canonical bytes of one item.
    pub fn item(&self, step: Step, item: StepItem) -> Result<Vec<u8>> {
        let p = self.step_dir(step).join(file_name(item));
        std::fs::read(&p).map_err(|e| Error::io(&p, e))
    }

    /// Chunk `index` of an item with its proof and the number of chunks; `None` when the
    /// step or the chunk is not there.
    pub fn chunk(
        &self,
        step: Step,
        item: StepItem,
        index: usize,
    ) -> Result<Option<(Vec<u8>, merkle::MerkleProof, usize)>> {
        if !self.has(step) {
            return Ok(None);
        }
        Ok(chunk_of(&self.item(step, item)?, index))
    }

    /// Answers a reveal request from `peer` for this store's stage (`run`, `stage`,
    /// `replica`): [`ErrorCode::Forbidden`] unless `peer` is in `auditors`.
    pub fn answer_reveal(
        &self,
        auditors: &HashSet<PeerId>,
        (run, stage, replica): (RunId, StageIndex, Replica),
        peer: &PeerId,
        req: &RevealRequest,
    ) -> Response {
        if !auditors.contains(peer) {
            tracing::warn!(%peer, "reveal refused: not an auditor of this stage");
            return Response::error(
                ErrorCode::Forbidden,
                format!("{peer} is not an auditor of stage {stage}"),
            );
        }
        if req.run != run {
            return Response::error(ErrorCode::WrongRun, format!("this is run {run}"));
        }
        if req.stage == stage && req.replica != replica && req.item == StepItem::Update {
            // Replicas that average: another replica's update as this one received it (the
            // auditor checks it against the root sealed in this replica's commitment).
            return match self.has(req.step).then(|| self.aux(req.step)) {
                Some(Ok(aux)) => match aux
                    .replica_updates
                    .iter()
                    .find(|u| u.replica == req.replica)
                {
                    Some(u) => chunk_answer(&u.bytes, req),
                    None => Response::error(
                        ErrorCode::NotFound,
                        format!(
                            "step {} aggregated no update of replica {}",
                            req.step, req.replica
                        ),
                    ),
                },
                Some(Err(e)) => Response::error(ErrorCode::Internal, e.to_string()),
                None => Response::error(
                    ErrorCode::NotFound,
                    format!("step {} is not in the store", req.step),
                ),
            };
        }
        if req.stage != stage || req.replica != replica {
            return Response::error(
                ErrorCode::WrongStage,
                format!("this is stage {stage} replica {replica}"),
            );
        }
        match self.chunk(req.step, req.item, req.chunk as usize) {
            Ok(Some((data, proof, total))) => Response::RevealChunk {
                data,
                proof,
                total_chunks: total as u32,
            },
            Ok(None) => Response::error(
                ErrorCode::NotFound,
                format!(
                    "step {} {:?} chunk {} is not in the store",
                    req.step, req.item, req.chunk
                ),
            ),
            Err(e) => {
                tracing::error!(error = %e, "reveal failed");
                Response::error(ErrorCode::Internal, e.to_string())
            }
        }
    }
}

/// Chunk `index` of `bytes` with its Merkle proof and the number of chunks; `None` when out
/// of range.
fn chunk_of(bytes: &[u8], index: usize) -> Option<(Vec<u8>, merkle::MerkleProof, usize)> {
    let leaves: Vec<weft_primitives::Hash> =
        bytes.chunks(CHUNK_SIZE).map(merkle::leaf_hash).collect();
    let proof = merkle::prove(&leaves, index)?;
    let start = index * CHUNK_SIZE;
    let end = (start + CHUNK_SIZE).min(bytes.len());
    Some((bytes[start..end].to_vec(), proof, leaves.len()))
}

fn chunk_answer(bytes: &[u8], req: &RevealRequest) -> Response {
    match chunk_of(bytes, req.chunk as usize) {
        Some((data, proof, total)) => Response::RevealChunk {
            data,
            proof,
            total_chunks: total as u32,
        },
        None => Response::error(
            ErrorCode::NotFound,
            format!("chunk {} of replica {}'s update", req.chunk, req.replica),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::journal::Journal;
    use weft_primitives::step::StepRoots;
    use weft_primitives::Hash;

    fn commitment(step: Step, before: u8, after: u8) -> StepCommitment {
        StepCommitment {
            step,
            roots: StepRoots {
                weights_before: Hash([before; 32]),
                weights_after: Hash([after; 32]),
                optimizer_before: Hash([before; 32]),
                optimizer_after: Hash([after; 32]),
                ..StepRoots::default()
            },
            loss: None,
        }
    }

    fn bytes(fill: u8, before: bool) -> StepBytes {
        StepBytes {
            items: StepItem::ALL
                .iter()
                .map(|&i| {
                    let is_before =
                        matches!(i, StepItem::WeightsBefore | StepItem::OptimizerBefore);
                    (i, (before || !is_before).then(|| vec![fill; 10]))
                })
                .collect(),
        }
    }

    #[test]
    fn write_link_prune_and_journal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("store/.tmp-9")).unwrap();
        let store = TensorStore::open(dir.path(), 2).unwrap();
        assert!(!dir.path().join("store/.tmp-9").exists());
        store
            .write_step(&commitment(0, 0, 1), &bytes(1, true), &StepAux::default())
            .unwrap();
        // Step 1's before-items come from step 0's after-items.
        store
            .write_step(&commitment(1, 1, 2), &bytes(2, false), &StepAux::default())
            .unwrap();
        assert_eq!(store.item(1, StepItem::WeightsBefore).unwrap(), vec![1; 10]);
        assert_eq!(store.item(1, StepItem::WeightsAfter).unwrap(), vec![2; 10]);
        // Roots that do not chain are refused rather than linked.
        assert!(store
            .write_step(&commitment(2, 9, 3), &bytes(3, false), &StepAux::default())
            .is_err());
        store
            .write_step(&commitment(2, 2, 3), &bytes(3, false), &StepAux::default())
            .unwrap();
        assert_eq!(store.steps().unwrap(), vec![1, 2]);
        // Pruning step 0 did not break step 1's link.
        assert_eq!(store.item(1, StepItem::WeightsBefore).unwrap(), vec![1; 10]);
        assert_eq!(store.commitment(2).unwrap(), commitment(2, 2, 3));

        assert_eq!(Journal::read(dir.path()).unwrap(), None);
        let j = Journal::for_commitment(5, 1, 3, &commitment(2, 2, 3));
        j.write(dir.path()).unwrap();
        assert_eq!(Journal::read(dir.path()).unwrap(), Some(j));
    }

    #[test]
    fn a_replica_reveals_the_updates_it_aggregated() {
        let dir = tempfile::tempdir().unwrap();
        let store = TensorStore::open(dir.path(), 4).unwrap();
        let received = vec![9u8; CHUNK_SIZE + 8];
        let aux = StepAux {
            replica_updates: vec![ReceivedUpdateBytes {
                replica: 2,
                bytes: received.clone(),
                root: [0; 32],
                signature: [0; 64],
            }],
            ..StepAux::default()
        };
        store
            .write_step(&commitment(0, 0, 1), &bytes(1, true), &aux)
            .unwrap();
        let peer = weft_p2p::keypair_from_seed([3; 32])
            .unwrap()
            .public()
            .to_peer_id();
        let allowed = HashSet::from([peer]);
        let ask = |replica, chunk| RevealRequest {
            run: 1,
            step: 0,
            stage: 0,
            replica,
            item: StepItem::Update,
            chunk,
        };
        let slot = (1, 0, 0);
        let root = merkle::root(&received.chunks(CHUNK_SIZE).collect::<Vec<_>>());
        for chunk in 0..2u32 {
            match store.answer_reveal(&allowed, slot, &peer, &ask(2, chunk)) {
                Response::RevealChunk {
                    data,
                    proof,
                    total_chunks,
                } => {
                    assert_eq!(total_chunks, 2);
                    let at = chunk as usize * CHUNK_SIZE;
                    assert_eq!(data, received[at..(at + CHUNK_SIZE).min(received.len())]);
                    assert!(merkle::verify(&root, merkle::leaf_hash(&data), &proof));
                }
                other => panic!("{other:?}"),
            }
        }
        // A replica it did not aggregate, another item of another replica, a stranger.
        let code = |r: Response| match r {
            Response::Error { code, .. } => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code(store.answer_reveal(&allowed, slot, &peer, &ask(1, 0))),
            ErrorCode::NotFound
        );
        let other_item = RevealRequest {
            item: StepItem::Inputs,
            ..ask(2, 0)
        };
        assert_eq!(
            code(store.answer_reveal(&allowed, slot, &peer, &other_item)),
            ErrorCode::WrongStage
        );
        assert_eq!(
            code(store.answer_reveal(&HashSet::new(), slot, &peer, &ask(2, 0))),
            ErrorCode::Forbidden
        );
    }
}
