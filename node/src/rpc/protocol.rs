//! The protocol methods ([`ProtocolApiServer`]): the `weft_*` reads over the pallets'
//! typed storage (staking ledgers, validators, trainers, runs, stage assignments,
//! commitments, audits, ownership, credentials, proposals, slashes, the epoch, loss curves),
//! answered with the decoded types of [`weft_rpc_api::protocol`].
//!
//! The chain's storage has no iteration, so lists are built from what the pallets index
//! (active runs, candidates, slots, the validator set, each slot's commitment per step) or by
//! scanning the most recent [`SCAN_LIMIT`] ids downwards from the pallet's next id
//! (commitments of an account, audits, proposals, slashes); each read is one state lookup,
//! so a request costs at most a few thousand lookups. A loss curve reads two lookups per
//! point through the step index (`work::step_commitment`), at most [`SCAN_LIMIT`] steps per
//! replica.

use super::protocol_json::{
    applied_slash_json, audit_json, commitment_json, ledger_json, run_json, step_record_json,
    trainer_json, validator_json,
};
use super::{internal, RpcImpl};
use jsonrpsee::core::{async_trait, RpcResult};
use jsonrpsee::types::ErrorObjectOwned;
use std::collections::BTreeSet;
use weft_primitives::storage::StateReader;
use weft_primitives::{AccountId, Hash};
use weft_rpc_api::protocol::{
    bytes_to_text, peer_id_to_string, AppliedSlashJson, AuditJson, CandidateJson, CommitmentJson,
    CredentialsJson, EpochJson, LedgerJson, LossCurveJson, OwnerJson, OwnershipJson, ProposalJson,
    RunCredentialsJson, RunJson, SlashJson, SlotJson, StageAssignmentsJson, StageJson,
    StepRecordJson, TrainerJson, ValidatorsJson, VoteJson, SCAN_LIMIT,
};
use weft_rpc_api::{ProtocolApiServer, UNKNOWN_AUDIT, UNKNOWN_RUN};
use weft_runtime::support::{CommitmentId, Replica, RunId, StageIndex, Step};
use weft_runtime::{governance, ownership, runs, stages, staking, work};

#[async_trait]
impl ProtocolApiServer for RpcImpl {
    async fn staking_ledger(
        &self,
        account: AccountId,
        at: Option<Hash>,
    ) -> RpcResult<Option<LedgerJson>> {
        self.metrics.rpc("weft_stakingLedger");
        let (s, _) = self.view(at)?;
        ledger_json(&s, &account)
    }

    async fn validators(&self, at: Option<Hash>) -> RpcResult<ValidatorsJson> {
        self.metrics.rpc("weft_validators");
        let (s, _) = self.view(at)?;
        let set = staking::active_set(&s).map_err(internal)?;
        let active_stake: u128 = set.iter().fold(0u128, |t, v| t.saturating_add(v.stake));
        let mut candidates = Vec::new();
        for who in staking::CANDIDATES
            .get(&s)
            .map_err(internal)?
            .unwrap_or_default()
        {
            candidates.push(CandidateJson {
                account: who,
                stake: staking::active_stake(&s, &who)
                    .map_err(internal)?
                    .to_string(),
                bls_key: staking::VALIDATORS
                    .get(&s, &who)
                    .map_err(internal)?
                    .map(|v| v.bls_key),
                in_active_set: set.iter().any(|v| v.account == who),
            });
        }
        Ok(ValidatorsJson {
            epoch: staking::current_epoch(&s).map_err(internal)?,
            active: set.iter().map(validator_json).collect(),
            active_stake: active_stake.to_string(),
            candidates,
        })
    }

    async fn trainers(&self, at: Option<Hash>) -> RpcResult<Vec<TrainerJson>> {
        self.metrics.rpc("weft_trainers");
        let (s, _) = self.view(at)?;
        let mut who = BTreeSet::new();
        for run in runs::active_runs(&s).map_err(internal)? {
            who.extend(stages::candidates(&s, run).map_err(internal)?);
            if let Some(r) = runs::run(&s, run).map_err(internal)? {
                for st in 0..r.stages {
                    for rep in 0..r.replicas {
                        who.extend(stages::slot(&s, run, st, rep).map_err(internal)?);
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(who.len());
        for a in who {
            out.extend(trainer_json(&s, &a)?);
        }
        Ok(out)
    }

    async fn trainer(
        &self,
        account: AccountId,
        at: Option<Hash>,
    ) -> RpcResult<Option<TrainerJson>> {
        self.metrics.rpc("weft_trainer");
        let (s, _) = self.view(at)?;
        trainer_json(&s, &account)
    }

    async fn run(&self, run_id: RunId, at: Option<Hash>) -> RpcResult<RunJson> {
        self.metrics.rpc("weft_run");
        let (s, _) = self.view(at)?;
        Ok(run_json(run_id, load_run(&s, run_id)?))
    }

    async fn runs(&self, at: Option<Hash>) -> RpcResult<Vec<RunJson>> {
        self.metrics.rpc("weft_runs");
        let (s, _) = self.view(at)?;
        let next = runs::NEXT_RUN_ID.get(&s).map_err(internal)?.unwrap_or(0);
        let first = next.saturating_sub(SCAN_LIMIT.min(RunId::MAX as u64) as RunId);
        let mut out = Vec::new();
        for id in first..next {
            if let Some(r) = runs::run(&s, id).map_err(internal)? {
                out.push(run_json(id, r));
            }
        }
        Ok(out)
    }

    async fn stage_assignments(
        &self,
        run_id: RunId,
        at: Option<Hash>,
    ) -> RpcResult<StageAssignmentsJson> {
        self.metrics.rpc("weft_stageAssignments");
        let (s, _) = self.view(at)?;
        let r = load_run(&s, run_id)?;
        let mut stage_list = Vec::with_capacity(r.stages as usize);
        for st in 0..r.stages {
            let mut replicas = Vec::with_capacity(r.replicas as usize);
            for rep in 0..r.replicas {
                let trainer = stages::slot(&s, run_id, st, rep).map_err(internal)?;
                let info = match &trainer {
                    Some(t) => staking::trainer(&s, t).map_err(internal)?,
                    None => None,
                };
                replicas.push(SlotJson {
                    replica: rep,
                    trainer,
                    peer_id: info.as_ref().map(|i| peer_id_to_string(&i.peer_id)),
                    addrs: info
                        .map(|i| i.addrs.iter().map(|a| bytes_to_text(a)).collect())
                        .unwrap_or_default(),
                    next_step: work::next_step(&s, run_id, st, rep).map_err(internal)?,
                });
            }
            stage_list.push(StageJson {
                stage: st,
                replicas,
                auditors: stages::auditors(&s, run_id, st).map_err(internal)?,
            });
        }
        Ok(StageAssignmentsJson {
            run_id,
            status: r.status,
            paused: r.paused,
            epoch: staking::current_epoch(&s).map_err(internal)?,
            stages: stage_list,
            candidates: stages::candidates(&s, run_id).map_err(internal)?,
        })
    }

    async fn commitment(
        &self,
        run_id: RunId,
        stage: StageIndex,
        replica: Replica,
        step: Step,
        at: Option<Hash>,
    ) -> RpcResult<Option<CommitmentJson>> {
        self.metrics.rpc("weft_commitment");
        let (s, _) = self.view(at)?;
        load_run(&s, run_id)?;
        let Some(id) = work::step_commitment(&s, run_id, stage, replica, step).map_err(internal)?
        else {
            return Ok(None);
        };
        Ok(work::commitment(&s, id)
            .map_err(internal)?
            .map(|c| commitment_json(id, c)))
    }

    async fn audits(&self, run_id: RunId, at: Option<Hash>) -> RpcResult<Vec<AuditJson>> {
        self.metrics.rpc("weft_audits");
        let (s, _) = self.view(at)?;
        load_run(&s, run_id)?;
        let mut out = Vec::new();
        for id in recent_ids(work::NEXT_ID.get(&s).map_err(internal)?.unwrap_or(0)) {
            let Some(c) = work::commitment(&s, id).map_err(internal)? else {
                continue;
            };
            if c.run != run_id || c.status == work::CommitStatus::Committed {
                continue;
            }
            if let Some(a) = work::audit(&s, id).map_err(internal)? {
                out.push(audit_json(id, c, a));
            }
        }
        Ok(out)
    }

    async fn audit(&self, audit_id: CommitmentId, at: Option<Hash>) -> RpcResult<AuditJson> {
        self.metrics.rpc("weft_audit");
        let (s, _) = self.view(at)?;
        let unknown = || {
            ErrorObjectOwned::owned(
                UNKNOWN_AUDIT,
                format!("unknown audit {audit_id}"),
                None::<()>,
            )
        };
        let a = work::audit(&s, audit_id)
            .map_err(internal)?
            .ok_or_else(unknown)?;
        let c = work::commitment(&s, audit_id)
            .map_err(internal)?
            .ok_or_else(unknown)?;
        Ok(audit_json(audit_id, c, a))
    }

    async fn ownership(&self, run_id: RunId, at: Option<Hash>) -> RpcResult<OwnershipJson> {
        self.metrics.rpc("weft_ownership");
        let (s, _) = self.view(at)?;
        load_run(&s, run_id)?;
        let mut owners = Vec::new();
        for (who, share) in ownership::shares_of(&s, run_id).map_err(internal)? {
            owners.push(OwnerJson {
                account: who,
                units: ownership::units(&s, run_id, &who)
                    .map_err(internal)?
                    .to_string(),
                share: share.parts().to_string(),
                credentials: ownership::credentials(&s, run_id, &who)
                    .map_err(internal)?
                    .to_string(),
            });
        }
        Ok(OwnershipJson {
            run_id,
            total_units: ownership::total_units(&s, run_id)
                .map_err(internal)?
                .to_string(),
            owners,
            credential_issuance: ownership::credential_issuance(&s, run_id)
                .map_err(internal)?
                .to_string(),
            reissue_pool: ownership::reissue_pool(&s, run_id)
                .map_err(internal)?
                .to_string(),
        })
    }

    async fn credentials(
        &self,
        account: AccountId,
        run_id: Option<RunId>,
        at: Option<Hash>,
    ) -> RpcResult<CredentialsJson> {
        self.metrics.rpc("weft_credentials");
        let (s, _) = self.view(at)?;
        let ids: Vec<RunId> = match run_id {
            Some(id) => {
                load_run(&s, id)?;
                vec![id]
            }
            None => {
                let next = runs::NEXT_RUN_ID.get(&s).map_err(internal)?.unwrap_or(0);
                (next.saturating_sub(SCAN_LIMIT.min(RunId::MAX as u64) as RunId)..next).collect()
            }
        };
        let mut out = Vec::new();
        for id in ids {
            let credentials = ownership::credentials(&s, id, &account).map_err(internal)?;
            let units = ownership::units(&s, id, &account).map_err(internal)?;
            let escrowed = ownership::escrowed(&s, id, &account).map_err(internal)?;
            if run_id.is_some() || credentials > 0 || units > 0 || escrowed > 0 {
                out.push(RunCredentialsJson {
                    run_id: id,
                    credentials: credentials.to_string(),
                    escrowed: escrowed.to_string(),
                    units: units.to_string(),
                });
            }
        }
        Ok(CredentialsJson { account, runs: out })
    }

    async fn proposals(&self, at: Option<Hash>) -> RpcResult<Vec<ProposalJson>> {
        self.metrics.rpc("weft_proposals");
        let (s, _) = self.view(at)?;
        let next = governance::NEXT_ID.get(&s).map_err(internal)?.unwrap_or(0);
        let total = staking::total_active(&s).map_err(internal)?;
        let mut out = Vec::new();
        for id in recent_ids(u64::from(next)) {
            let Ok(id) = u32::try_from(id) else { continue };
            let Some(p) = governance::proposal(&s, id).map_err(internal)? else {
                continue;
            };
            let mut votes = Vec::with_capacity(p.votes.len());
            let mut ayes: u128 = 0;
            for (voter, aye) in &p.votes {
                let stake = staking::active_stake(&s, voter).map_err(internal)?;
                if *aye {
                    ayes = ayes.saturating_add(stake);
                }
                votes.push(VoteJson {
                    voter: *voter,
                    aye: *aye,
                    stake: stake.to_string(),
                });
            }
            let threshold = match &p.action {
                governance::Action::HaltRun { run } => runs::run(&s, *run)
                    .map_err(internal)?
                    .map(|r| r.params.halt_threshold.parts()),
                governance::Action::ResumeRun { run }
                | governance::Action::SetRunParams { run, .. } => runs::run(&s, *run)
                    .map_err(internal)?
                    .map(|r| r.params.resume_threshold.parts()),
                governance::Action::CancelSlash { .. } => Some(
                    governance::config(&s)
                        .map_err(internal)?
                        .cancel_slash_threshold
                        .parts(),
                ),
            };
            out.push(ProposalJson {
                id,
                proposer: p.proposer,
                action: p.action,
                deposit: p.deposit.to_string(),
                end: p.end,
                status: p.status,
                votes,
                ayes: ayes.to_string(),
                total_stake: total.to_string(),
                threshold,
            });
        }
        Ok(out)
    }

    async fn slashes(&self, at: Option<Hash>) -> RpcResult<Vec<SlashJson>> {
        self.metrics.rpc("weft_slashes");
        let (s, _) = self.view(at)?;
        let mut out = Vec::new();
        for id in recent_slash_ids(&s)? {
            if let Some(p) = staking::pending_slash(&s, id).map_err(internal)? {
                out.push(SlashJson {
                    id,
                    offender: p.offender,
                    amount: p.amount.to_string(),
                    reporter: p.reporter,
                    epoch: p.epoch,
                    apply_at: p.apply_at,
                    kind: p.kind,
                });
            }
        }
        out.sort_by_key(|x| (x.apply_at, x.id));
        Ok(out)
    }

    async fn epoch(&self, at: Option<Hash>) -> RpcResult<EpochJson> {
        self.metrics.rpc("weft_epoch");
        let (s, number) = self.view(at)?;
        let cfg = staking::config(&s).map_err(internal)?;
        let len = cfg.epoch_length.max(1);
        let epoch_start = number - number % len;
        Ok(EpochJson {
            epoch: staking::current_epoch(&s).map_err(internal)?,
            block_number: number,
            epoch_length: len,
            epoch_start,
            next_epoch_at: epoch_start.saturating_add(len),
            bonding_period: cfg.bonding_period,
            slash_defer: cfg.slash_defer,
            validators: staking::active_set(&s).map_err(internal)?.len() as u32,
            total_active_stake: staking::total_active(&s).map_err(internal)?.to_string(),
            total_bonded: staking::total_bonded(&s).map_err(internal)?.to_string(),
        })
    }

    async fn applied_slashes(&self, at: Option<Hash>) -> RpcResult<Vec<AppliedSlashJson>> {
        self.metrics.rpc("weft_appliedSlashes");
        let (s, _) = self.view(at)?;
        let mut out = Vec::new();
        for id in recent_slash_ids(&s)? {
            if let Some(a) = staking::applied_slash(&s, id).map_err(internal)? {
                out.push(applied_slash_json(id, a));
            }
        }
        Ok(out)
    }

    async fn loss_curve(
        &self,
        run_id: RunId,
        from: Option<Step>,
        at: Option<Hash>,
    ) -> RpcResult<LossCurveJson> {
        self.metrics.rpc("weft_lossCurve");
        let (s, _) = self.view(at)?;
        let r = load_run(&s, run_id)?;
        let stage = r.stages.saturating_sub(1);
        let mut next = 0;
        for rep in 0..r.replicas {
            next = next.max(work::next_step(&s, run_id, stage, rep).map_err(internal)?);
        }
        let from = from.unwrap_or(0).max(next.saturating_sub(SCAN_LIMIT));
        let mut points = Vec::new();
        for step in from..next {
            for rep in 0..r.replicas {
                let Some(id) =
                    work::step_commitment(&s, run_id, stage, rep, step).map_err(internal)?
                else {
                    continue;
                };
                if let Some(c) = work::commitment(&s, id).map_err(internal)? {
                    points.push(step_record_json(&s, id, c)?);
                }
            }
        }
        let h = &r.hyper_params;
        Ok(LossCurveJson {
            run_id,
            stage,
            tokens_per_step: u64::from(h.micro_batch_size)
                * u64::from(h.micro_batches)
                * u64::from(r.model_config.seq_len),
            from,
            points,
        })
    }

    async fn commitments_of(
        &self,
        account: AccountId,
        at: Option<Hash>,
    ) -> RpcResult<Vec<StepRecordJson>> {
        self.metrics.rpc("weft_commitmentsOf");
        let (s, _) = self.view(at)?;
        let mut out = Vec::new();
        for id in recent_ids(work::NEXT_ID.get(&s).map_err(internal)?.unwrap_or(0)) {
            if let Some(c) = work::commitment(&s, id).map_err(internal)? {
                if c.trainer == account {
                    out.push(step_record_json(&s, id, c)?);
                }
            }
        }
        Ok(out)
    }
}

/// The ids `next − 1, next − 2, …` down to `next − SCAN_LIMIT` (or 0).
fn recent_ids(next: u64) -> impl Iterator<Item = u64> {
    (next.saturating_sub(SCAN_LIMIT)..next).rev()
}

/// The most recent [`SCAN_LIMIT`] slash ids, newest first.
fn recent_slash_ids(s: &impl StateReader) -> RpcResult<impl Iterator<Item = u64>> {
    let next = staking::NEXT_SLASH_ID
        .get(s)
        .map_err(internal)?
        .unwrap_or(0);
    Ok(recent_ids(next))
}

fn unknown_run(id: RunId) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(UNKNOWN_RUN, format!("unknown run {id}"), None::<()>)
}

fn load_run(s: &impl StateReader, id: RunId) -> RpcResult<runs::RunInfo> {
    runs::run(s, id)
        .map_err(internal)?
        .ok_or_else(|| unknown_run(id))
}
