//! How the protocol methods turn pallet records into the JSON types of
//! [`weft_rpc_api::protocol`]: runs, validators, staking ledgers, trainers, commitments and
//! audits (the last two with the status an audit is in), step records and applied slashes.

use super::internal;
use jsonrpsee::core::RpcResult;
use weft_primitives::storage::StateReader;
use weft_primitives::AccountId;
use weft_rpc_api::protocol::{
    bytes_to_text, peer_id_to_string, AppliedSlashJson, AuditJson, AuditStatus, CommitmentJson,
    LedgerJson, ReceivedUpdateJson, RunJson, StepRecordJson, TrainerJson, UnlockChunkJson,
    ValidatorJson,
};
use weft_runtime::support::{CommitmentId, RunId, SlashId};
use weft_runtime::{runs, stages, staking, work};

pub(super) fn run_json(id: RunId, r: runs::RunInfo) -> RunJson {
    RunJson {
        id,
        designer: r.designer,
        bond: r.bond.to_string(),
        status: r.status,
        paused: r.paused,
        accepting_work: r.is_training(),
        model_config: r.model_config,
        config_hash: r.config_hash,
        stages: r.stages,
        replicas: r.replicas,
        dataset_hash: r.dataset_hash,
        hyper_params: r.hyper_params,
        max_steps: r.max_steps,
        final_steps: r.final_steps(),
        seed: r.seed,
        registered_at: r.registered_at,
        epochs_trained: r.epochs_trained,
        params: r.params,
    }
}

pub(super) fn validator_json(v: &staking::ActiveValidator) -> ValidatorJson {
    ValidatorJson {
        account: v.account,
        stake: v.stake.to_string(),
        bls_key: v.bls_key,
    }
}

pub(super) fn ledger_json(s: &impl StateReader, who: &AccountId) -> RpcResult<Option<LedgerJson>> {
    let Some(l) = staking::ledger(s, who).map_err(internal)? else {
        return Ok(None);
    };
    let validator = staking::VALIDATORS.get(s, who).map_err(internal)?;
    Ok(Some(LedgerJson {
        account: *who,
        active: l.active.to_string(),
        unlocking: l
            .unlocking
            .iter()
            .map(|c| UnlockChunkJson {
                value: c.value.to_string(),
                unlock_at: c.unlock_at,
            })
            .collect(),
        total: l.total().to_string(),
        validator: validator.is_some(),
        trainer: staking::trainer(s, who).map_err(internal)?.is_some(),
        bls_key: validator.map(|v| v.bls_key),
        pending_slashes: staking::PENDING_SLASHES
            .get(s, who)
            .map_err(internal)?
            .unwrap_or(0),
    }))
}

pub(super) fn trainer_json(
    s: &impl StateReader,
    who: &AccountId,
) -> RpcResult<Option<TrainerJson>> {
    let Some(t) = staking::trainer(s, who).map_err(internal)? else {
        return Ok(None);
    };
    Ok(Some(TrainerJson {
        account: *who,
        peer_id: peer_id_to_string(&t.peer_id),
        addrs: t.addrs.iter().map(|a| bytes_to_text(a)).collect(),
        capacity: t.capacity,
        load: stages::LOAD.get(s, who).map_err(internal)?.unwrap_or(0),
        stake: staking::active_stake(s, who).map_err(internal)?.to_string(),
        runs: stages::TRAINER_RUNS
            .get(s, who)
            .map_err(internal)?
            .unwrap_or_default(),
    }))
}

pub(super) fn commitment_json(id: CommitmentId, c: work::Commitment) -> CommitmentJson {
    CommitmentJson {
        id,
        run_id: c.run,
        stage: c.stage,
        replica: c.replica,
        step: c.step,
        trainer: c.trainer,
        roots: c.roots,
        loss: c.loss,
        compute: c.compute,
        input_seal: c.input_seal,
        output_grad_seal: c.output_grad_seal,
        included: c
            .round
            .as_ref()
            .map(|round| round.included.iter().collect()),
        received: c
            .round
            .iter()
            .flat_map(|round| &round.received)
            .map(|e| ReceivedUpdateJson {
                replica: e.replica,
                root: e.root,
                signature: e.signature,
                by: e.by,
            })
            .collect(),
        block: c.block,
        status: c.status,
    }
}

pub(super) fn audit_json(id: CommitmentId, c: work::Commitment, a: work::Audit) -> AuditJson {
    let status = match (&a.certificate, a.closed) {
        (Some(_), _) => AuditStatus::Settled,
        (None, true) => AuditStatus::Inconclusive,
        (None, false) => AuditStatus::Open,
    };
    AuditJson {
        id,
        run_id: c.run,
        stage: c.stage,
        replica: c.replica,
        step: c.step,
        trainer: c.trainer,
        status,
        verdict: a.certificate.as_ref().map(|x| x.verdict),
        opened_at: a.opened_at,
        reveal_deadline: a.reveal_deadline,
        attest_deadline: a.attest_deadline,
        threshold: a.threshold.parts(),
        auditors: a
            .seats
            .iter()
            .map(|x| ValidatorJson {
                account: x.account,
                stake: x.stake.to_string(),
                bls_key: x.bls_key,
            })
            .collect(),
        attestations: a.attestations,
        certificate: a.certificate,
        closed: a.closed,
    }
}

/// A commitment as a line of a list, with its audit's settled verdict.
pub(super) fn step_record_json(
    s: &impl StateReader,
    id: CommitmentId,
    c: work::Commitment,
) -> RpcResult<StepRecordJson> {
    let verdict = match c.status {
        work::CommitStatus::Committed => None,
        _ => work::audit(s, id)
            .map_err(internal)?
            .and_then(|a| a.certificate.map(|x| x.verdict)),
    };
    Ok(StepRecordJson {
        id,
        run_id: c.run,
        stage: c.stage,
        replica: c.replica,
        step: c.step,
        trainer: c.trainer,
        loss: c.loss,
        block: c.block,
        status: c.status,
        verdict,
    })
}

/// An applied slash's JSON.
pub(super) fn applied_slash_json(id: SlashId, a: staking::AppliedSlash) -> AppliedSlashJson {
    AppliedSlashJson {
        id,
        offender: a.slash.offender,
        amount: a.slash.amount.to_string(),
        burnt: a.burnt.to_string(),
        reporter: a.slash.reporter,
        reporter_reward: a.reporter_reward.to_string(),
        epoch: a.slash.epoch,
        applied_at: a.applied_at,
        kind: a.slash.kind,
    }
}
