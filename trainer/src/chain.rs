//! A typed, read-only view of the chain for trainers and auditors.
//!
//! Everything here is read with raw `state_getStorage` under the pallets' own typed storage
//! keys (`runs::RUNS.key(&run)`, `stages::SLOT.key(&(run, stage, replica))`, …) and decoded
//! with the pallets' own SCALE types, so the trainer depends on nothing but the storage
//! layout the runtime already commits to. The reads go through [`StateSource`]: a live node
//! ([`NodeState`], optionally pinned to one block so a decision sees one consistent state)
//! or a [`MemoryState`] (tests build storage with the pallets' types, no node needed).
//!
//! # What a run registers (the typed model and hyper-parameters)
//!
//! `RunInfo::model_config` is a [`runs::ModelSpec`] and `RunInfo::hyper_params` a
//! [`runs::HyperParams`]: integers and fixed point, checked by the runs pallet at
//! registration (units and rules in `weft_pallet_runs::spec`). [`parse_run`] converts them
//! to [`ModelConfig`] and [`TrainConfig`], each fixed-point value with one correctly rounded
//! division (`lr = lr_pico / 10¹²`, `eps = eps_atto / 10¹⁸`, `grad_clip = grad_clip_nano /
//! 10⁹`, fractions `parts / 10⁹`), so every trainer and auditor derives identical floats.
//! The JSON users write (`weft run register`) is the CLI's surface only
//! (`weft_cli::run_spec`).
//!
//! The run seed is not the designer's to choose: it is the block randomness the runs pallet
//! stored at registration, and the model seed (weight initialisation, data order, dropout
//! masks) is [`run_seed_u64`] = the first 8 bytes of `RunInfo::seed`, little-endian.
//! `RunInfo::config_hash` must be `blake3(SCALE(model_config))`; the trainer checks it and
//! its own validation again (the model must have at least as many layers as the run has
//! stages; with `max_steps > 0`, `total_steps` must not exceed it).
//!
//! # Peers
//!
//! A trainer's p2p identity is its staking trainer record (`Staking::train`): `peer_id` is
//! the binary libp2p peer id (`PeerId::to_bytes`, what `weft` stores for a base58 peer id)
//! and each address a multiaddr as UTF-8 text (`/ip4/1.2.3.4/tcp/30555`, as `weft` stores
//! it and `weft-trainer train --register` submits it); binary multiaddrs and a text peer id
//! are accepted too. Replica `r` of every stage forms pipeline `r`: the [`PeerTable`] of a
//! trainer of replica `r` lists, for each stage, the trainer of `(stage, r)`.
//!
//! Validators declare no peer id. An auditor proves, per connection, that a libp2p peer
//! speaks for a validator account: it sends `AuditorHello` ([`weft_stage_net::access`]) with a
//! BN254 BLS signature by its registered validator key over
//! [`auditor_hello_message`]`(run, stage, peer_id)`; the trainer checks that the account is
//! an auditor of its stage on chain (`Stages::Auditors`), that the signature verifies under
//! that account's key (`Staking::Validators`), and that `peer_id` is the noise-authenticated
//! sender. The message has its own domain tag, so it can never be replayed as an
//! attestation.

use crate::error::{Error, Result};
use parity_scale_codec::{Decode, Encode};
use std::future::Future;
use weft_ml::audit::Tolerance;
use weft_ml::config::{ClipScope, ModelConfig, TrainConfig};
use weft_p2p::PeerId;
use weft_pallet_runs::{RunInfo, RunStatus};
use weft_pallet_staking::TrainerInfo;
use weft_pallet_support::{CommitmentId, Replica, RunId, StageIndex};
use weft_pallet_work::{Audit, Commitment};
use weft_primitives::storage::{MemoryState, StorageMap, StorageValue};
use weft_primitives::{AccountId, Hash};
use weft_stage_net::topology::{PeerTable, StagePeer};

pub use weft_pallet_runs as runs;
pub use weft_pallet_stages as stages;
pub use weft_pallet_staking as staking;
pub use weft_pallet_work as work;

pub use weft_stage_net::access::{auditor_hello_message, AUDITOR_HELLO_DOMAIN};

/// A run's on-chain tolerance (fixed point) as the auditor's floats.
pub fn tolerance_of(t: &weft_pallet_runs::Tolerance) -> Tolerance {
    let ppb = |p: weft_pallet_support::Perbill| f64::from(p.parts()) / 1e9;
    Tolerance {
        rel_l2: ppb(t.rel_l2),
        max_abs_rel: ppb(t.max_abs_rel),
        update_rel_l2: ppb(t.update_rel_l2),
        abs_floor: t.abs_floor_nano as f64 / 1e9,
    }
}

/// Raw key-value reads of chain state.
pub trait StateSource: Sync {
    /// The value under `key`, if any.
    fn get(&self, key: Vec<u8>) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
}

impl StateSource for MemoryState {
    fn get(&self, key: Vec<u8>) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send {
        let v = self.entries.get(&key).cloned();
        async move { Ok(v) }
    }
}

/// State of a live node over JSON-RPC (`state_getStorage`), at `at` (best block if `None`).
#[derive(Debug, Clone, Copy)]
pub struct NodeState<'a> {
    /// The connection.
    pub client: &'a weft_rpc_client::Client,
    /// The block to read at.
    pub at: Option<Hash>,
}

impl StateSource for NodeState<'_> {
    fn get(&self, key: Vec<u8>) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send {
        use weft_rpc_api::ChainApiClient;
        let (client, at) = (self.client, self.at);
        async move {
            client
                .rpc()
                .storage(weft_primitives::Bytes(key), at)
                .await
                .map(|v| v.map(|b| b.0))
                .map_err(|e| Error::Chain(format!("state_getStorage failed: {e}")))
        }
    }
}

/// The first 8 bytes of the run's on-chain seed, little-endian: the model's `seed`.
pub fn run_seed_u64(seed: &Hash) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&seed.0[..8]);
    u64::from_le_bytes(b)
}

/// A run's model and hyper-parameters as the trainer uses them.
#[derive(Debug, Clone)]
pub struct RunSetup {
    /// The run.
    pub run: RunId,
    /// The on-chain record.
    pub info: RunInfo,
    /// The architecture, with `seed` set from the run's seed.
    pub model: ModelConfig,
    /// The hyper-parameters.
    pub train: TrainConfig,
}

impl RunSetup {
    /// Number of stages.
    pub fn stages(&self) -> usize {
        self.info.stages as usize
    }
}

/// A run's typed model specification as the trainer's [`ModelConfig`] (with `seed` 0; see
/// the module docs).
pub fn model_config_of(m: &runs::ModelSpec) -> ModelConfig {
    ModelConfig {
        vocab_size: i64::from(m.vocab_size),
        d_model: i64::from(m.d_model),
        n_layers: i64::from(m.n_layers),
        n_heads: i64::from(m.n_heads),
        seq_len: i64::from(m.seq_len),
        mlp_ratio: i64::from(m.mlp_ratio),
        dropout: ppb(m.dropout),
        tied_embeddings: m.tied_embeddings,
        seed: 0,
    }
}

/// A run's typed hyper-parameters as the trainer's [`TrainConfig`] (see the module docs).
pub fn train_config_of(h: &runs::HyperParams) -> TrainConfig {
    TrainConfig {
        micro_batch_size: i64::from(h.micro_batch_size),
        micro_batches: h.micro_batches as usize,
        lr: h.lr_pico as f64 / 1e12,
        warmup_steps: h.warmup_steps,
        total_steps: h.total_steps,
        min_lr_ratio: ppb(h.min_lr_ratio),
        weight_decay: ppb(h.weight_decay),
        betas: [ppb(h.beta1), ppb(h.beta2)],
        eps: h.eps_atto as f64 / 1e18,
        grad_clip: h.grad_clip_nano as f64 / 1e9,
        clip_scope: match h.clip_scope {
            runs::ClipScope::Stage => ClipScope::Stage,
            runs::ClipScope::Global => ClipScope::Global,
        },
        replica_sync: h.replica_sync,
    }
}

fn ppb(p: weft_pallet_support::Perbill) -> f64 {
    f64::from(p.parts()) / 1e9
}

/// Converts and checks a run's registered model specification and hyper-parameters (see
/// the module docs).
pub fn parse_run(run: RunId, info: &RunInfo) -> Result<RunSetup> {
    let bad = |m: String| Error::Chain(format!("run {run}: {m}"));
    if RunInfo::model_hash(&info.model_config) != info.config_hash {
        return Err(bad(
            "the model specification does not hash to the registered config_hash".into(),
        ));
    }
    let mut model = model_config_of(&info.model_config);
    model.seed = run_seed_u64(&info.seed);
    model
        .validate_stages(info.stages as usize)
        .map_err(|e| bad(format!("{e}")))?;
    let train = train_config_of(&info.hyper_params);
    train.validate().map_err(|e| bad(format!("{e}")))?;
    if info.max_steps > 0 && train.total_steps > info.max_steps {
        return Err(bad(format!(
            "the schedule runs {} steps but the run stops at {}",
            train.total_steps, info.max_steps
        )));
    }
    Ok(RunSetup {
        run,
        info: info.clone(),
        model,
        train,
    })
}

/// The libp2p identity and addresses of a trainer record.
pub fn trainer_peer(info: &TrainerInfo) -> Result<StagePeer> {
    StagePeer::from_declared(&info.peer_id, &info.addrs)
        .ok_or_else(|| Error::Chain("a trainer record holds an invalid peer id or address".into()))
}

/// Where a trainer stands in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrainerState {
    /// The account is not a registered trainer (`Staking::train`).
    NotTrainer,
    /// It is, but with another peer id than this process's.
    WrongPeer {
        /// What the chain holds.
        declared: String,
    },
    /// It has not joined the run (`Stages::join_run`) and holds no slot.
    NotCandidate,
    /// Joined; waiting for an epoch boundary to be assigned a slot.
    Unassigned,
    /// Assigned, but the pipeline cannot start yet (run pending, paused or halted, a stage
    /// of this replica unfilled, a neighbour without a trainer record).
    Waiting {
        /// The slot.
        stage: StageIndex,
        /// The replica.
        replica: Replica,
        /// Why, in words.
        why: String,
    },
    /// Ready: the run is training and every stage of this replica has a trainer.
    Ready {
        /// The slot.
        stage: StageIndex,
        /// The replica.
        replica: Replica,
        /// The pipeline's peers and this stage's auditors' accounts.
        table: PeerTable,
    },
    /// The run is finished.
    Finished,
}

/// Typed reads over a [`StateSource`].
#[derive(Debug, Clone, Copy)]
pub struct ChainView<S> {
    /// Where the bytes come from.
    pub src: S,
}

impl<S: StateSource> ChainView<S> {
    /// A view over `src`.
    pub fn new(src: S) -> Self {
        ChainView { src }
    }

    async fn decode<V: Decode>(&self, key: Vec<u8>, what: &str) -> Result<Option<V>> {
        match self.src.get(key).await? {
            None => Ok(None),
            Some(b) => V::decode(&mut &b[..])
                .map(Some)
                .map_err(|e| Error::Chain(format!("cannot decode {what}: {e}"))),
        }
    }

    async fn map<K: Encode, V: Encode + Decode>(
        &self,
        m: &StorageMap<K, V>,
        k: &K,
        what: &str,
    ) -> Result<Option<V>> {
        self.decode(m.key(k), what).await
    }

    async fn value<V: Encode + Decode>(
        &self,
        v: &StorageValue<V>,
        what: &str,
    ) -> Result<Option<V>> {
        self.decode(v.key(), what).await
    }

    /// The run's record.
    pub async fn run(&self, run: RunId) -> Result<RunInfo> {
        self.map(&runs::RUNS, &run, "Runs::Runs")
            .await?
            .ok_or_else(|| Error::Chain(format!("run {run} does not exist")))
    }

    /// The run's record, parsed and checked.
    pub async fn run_setup(&self, run: RunId) -> Result<RunSetup> {
        parse_run(run, &self.run(run).await?)
    }

    /// The slots `who` holds in `run`.
    pub async fn slots_of(
        &self,
        run: RunId,
        who: &AccountId,
    ) -> Result<Vec<(StageIndex, Replica)>> {
        Ok(self
            .map(&stages::HELD, &(run, *who), "Stages::Held")
            .await?
            .unwrap_or_default())
    }

    /// The trainer of a slot.
    pub async fn slot(
        &self,
        run: RunId,
        stage: StageIndex,
        replica: Replica,
    ) -> Result<Option<AccountId>> {
        self.map(&stages::SLOT, &(run, stage, replica), "Stages::Slot")
            .await
    }

    /// Whether `who` is a candidate of `run`.
    pub async fn is_candidate(&self, run: RunId, who: &AccountId) -> Result<bool> {
        Ok(self
            .map(&stages::CANDIDATES, &run, "Stages::Candidates")
            .await?
            .unwrap_or_default()
            .contains(who))
    }

    /// A trainer's registration.
    pub async fn trainer(&self, who: &AccountId) -> Result<Option<TrainerInfo>> {
        self.map(&staking::TRAINERS, who, "Staking::Trainers").await
    }

    /// An account's active bond (0 when it has none).
    pub async fn active_bond(&self, who: &AccountId) -> Result<u128> {
        Ok(self
            .map(&staking::LEDGER, who, "Staking::Ledger")
            .await?
            .map_or(0, |l| l.active))
    }

    /// The staking parameters.
    pub async fn staking_config(&self) -> Result<staking::Config> {
        Ok(self
            .value(&staking::CONFIG, "Staking::Config")
            .await?
            .unwrap_or_default())
    }

    /// The auditors of a stage.
    pub async fn auditors(&self, run: RunId, stage: StageIndex) -> Result<Vec<AccountId>> {
        Ok(self
            .map(&stages::AUDITORS, &(run, stage), "Stages::Auditors")
            .await?
            .unwrap_or_default())
    }

    /// The stages `who` audits in `run`.
    pub async fn audited_stages(&self, run: RunId, who: &AccountId) -> Result<Vec<StageIndex>> {
        Ok(self
            .map(&stages::AUDITED, &(run, *who), "Stages::Audited")
            .await?
            .unwrap_or_default())
    }

    /// A validator's registered BLS key.
    pub async fn validator_key(&self, who: &AccountId) -> Result<Option<weft_bls::PublicKeyBytes>> {
        Ok(self
            .map(&staking::VALIDATORS, who, "Staking::Validators")
            .await?
            .map(|v| v.bls_key))
    }

    /// The auditors of a stage with their BLS keys (those without a key are left out).
    pub async fn auditor_keys(
        &self,
        run: RunId,
        stage: StageIndex,
    ) -> Result<Vec<(AccountId, weft_bls::PublicKeyBytes)>> {
        let mut out = Vec::new();
        for a in self.auditors(run, stage).await? {
            if let Some(k) = self.validator_key(&a).await? {
                out.push((a, k));
            }
        }
        Ok(out)
    }

    /// The next step the chain expects from a slot.
    pub async fn next_step(&self, run: RunId, stage: StageIndex, replica: Replica) -> Result<u64> {
        Ok(self
            .map(&work::NEXT_STEP, &(run, stage, replica), "Work::NextStep")
            .await?
            .unwrap_or(0))
    }

    /// The next commitment id (= number of commitments ever made).
    pub async fn next_commitment_id(&self) -> Result<CommitmentId> {
        Ok(self
            .value(&work::NEXT_ID, "Work::NextId")
            .await?
            .unwrap_or(0))
    }

    /// A commitment.
    pub async fn commitment(&self, id: CommitmentId) -> Result<Option<Commitment>> {
        self.map(&work::COMMITMENTS, &id, "Work::Commitments").await
    }

    /// The commitment of `step` of a slot, if made.
    pub async fn commitment_of(
        &self,
        run: RunId,
        stage: StageIndex,
        replica: Replica,
        step: u64,
    ) -> Result<Option<Commitment>> {
        let id = self
            .map(
                &work::STEP_COMMITMENT,
                &(run, stage, replica, step),
                "Work::StepCommitment",
            )
            .await?;
        match id {
            Some(id) => self.commitment(id).await,
            None => Ok(None),
        }
    }

    /// An escrowed inference request.
    pub async fn inference_request(
        &self,
        id: weft_pallet_inference::RequestId,
    ) -> Result<Option<weft_pallet_inference::Request>> {
        self.map(&weft_pallet_inference::REQUESTS, &id, "Inference::Requests")
            .await
    }

    /// An audit.
    pub async fn audit(&self, id: CommitmentId) -> Result<Option<Audit>> {
        self.map(&work::AUDITS, &id, "Work::Audits").await
    }

    /// The pipeline of `replica` in `run`: for each stage the trainer of `(stage, replica)`
    /// and its peer record. `Err(why)` in words when some stage cannot be reached yet.
    pub async fn pipeline(
        &self,
        run: RunId,
        stages: StageIndex,
        replica: Replica,
    ) -> Result<std::result::Result<Vec<(AccountId, StagePeer)>, String>> {
        let mut out = Vec::new();
        for s in 0..stages {
            let Some(who) = self.slot(run, s, replica).await? else {
                return Ok(Err(format!(
                    "stage {s} replica {replica} has no trainer yet"
                )));
            };
            let Some(info) = self.trainer(&who).await? else {
                return Ok(Err(format!(
                    "the trainer {who} of stage {s} has no trainer record"
                )));
            };
            match trainer_peer(&info) {
                Ok(p) => out.push((who, p)),
                Err(e) => return Ok(Err(format!("stage {s}: {e}"))),
            }
        }
        Ok(Ok(out))
    }

    /// The trainers of the other replicas of `(run, stage)` that have a usable peer record
    /// (replicas that average exchange their updates with them), ascending.
    pub async fn other_replicas(
        &self,
        run: RunId,
        stage: StageIndex,
        me: Replica,
        replicas: u16,
    ) -> Result<Vec<(Replica, StagePeer)>> {
        let holders = self.replica_holders(run, stage, me, replicas).await?;
        self.peers_of_holders(&holders).await
    }

    /// The declared peers of `holders` (replica, account), those with a usable trainer
    /// record, in order.
    pub async fn peers_of_holders(
        &self,
        holders: &[(Replica, AccountId)],
    ) -> Result<Vec<(Replica, StagePeer)>> {
        let mut out = Vec::new();
        for &(r, who) in holders {
            if let Some(p) = self
                .trainer(&who)
                .await?
                .and_then(|t| trainer_peer(&t).ok())
            {
                out.push((r, p));
            }
        }
        Ok(out)
    }

    /// The holders of the other replica slots of `(run, stage)` (empty slots left out),
    /// ascending.
    pub async fn replica_holders(
        &self,
        run: RunId,
        stage: StageIndex,
        me: Replica,
        replicas: u16,
    ) -> Result<Vec<(Replica, AccountId)>> {
        let mut out = Vec::new();
        for r in (0..replicas).filter(|&r| r != me) {
            if let Some(who) = self.slot(run, stage, r).await? {
                out.push((r, who));
            }
        }
        Ok(out)
    }

    /// Where `who`, running as libp2p peer `me`, stands in `run`. With several slots in the
    /// run, the first (lowest stage) is taken.
    pub async fn trainer_state(
        &self,
        run: RunId,
        who: &AccountId,
        me: &PeerId,
    ) -> Result<TrainerState> {
        let info = self.run(run).await?;
        if info.status == RunStatus::Finished {
            return Ok(TrainerState::Finished);
        }
        let Some(rec) = self.trainer(who).await? else {
            return Ok(TrainerState::NotTrainer);
        };
        match trainer_peer(&rec) {
            Ok(p) if p.peer_id == *me => {}
            Ok(p) => {
                return Ok(TrainerState::WrongPeer {
                    declared: p.peer_id.to_string(),
                })
            }
            Err(_) => {
                return Ok(TrainerState::WrongPeer {
                    declared: format!("0x{}", hex::encode(&rec.peer_id)),
                })
            }
        }
        let slots = self.slots_of(run, who).await?;
        let Some(&(stage, replica)) = slots.iter().min() else {
            return Ok(if self.is_candidate(run, who).await? {
                TrainerState::Unassigned
            } else {
                TrainerState::NotCandidate
            });
        };
        let waiting = |why: String| TrainerState::Waiting {
            stage,
            replica,
            why,
        };
        match info.status {
            RunStatus::Pending => return Ok(waiting("the run is pending (slots unfilled)".into())),
            RunStatus::Halted => return Ok(waiting("the run is halted by governance".into())),
            RunStatus::Training if info.paused => {
                return Ok(waiting(
                    "the run is paused: some stage has no trainer".into(),
                ))
            }
            _ => {}
        }
        let peers = match self.pipeline(run, info.stages, replica).await? {
            Ok(p) => p,
            Err(why) => return Ok(waiting(why)),
        };
        let replicas = if info.hyper_params.replica_sync.averages() {
            self.other_replicas(run, stage, replica, info.replicas)
                .await?
        } else {
            Vec::new()
        };
        Ok(TrainerState::Ready {
            stage,
            replica,
            table: PeerTable {
                run: Some(run),
                stages: peers.into_iter().map(|(_, p)| p).collect(),
                auditors: Vec::new(),
                replicas,
            },
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn hello_message_is_domain_separated() {
        let p = weft_p2p::keypair_from_seed([1; 32])
            .unwrap()
            .public()
            .to_peer_id();
        let m = auditor_hello_message(3, 1, &p);
        assert!(m.starts_with(b"weft/reveal-auth/v1\0"));
        assert_ne!(
            &m[..13],
            &work::attestation_message(0, work::Verdict::Pass)[..13]
        );
    }
}
