//! Audits and verdicts: the selection of a commitment for audit (and the auditor seats it
//! gets), `attest`, settlement once one verdict has enough stake (the aggregate BLS
//! certificate, credit or slash), and the deadline processing of an audit (inconclusive
//! audits, slashes of absent and contradicting auditors). See the crate docs, "Audit
//! selection" and "Audits".
//!
//! A commitment marked in [`FORCED_AUDITS`] (replicas that diverged, see the `replicas`
//! module) is selected whatever the draw; the mark is removed when its selection runs. A
//! forced commitment of a stage that nobody can audit is credited, as any selected one.

use crate::commitments::{credit, push_queue, set_status, void};
use crate::{
    attestation_message, finish, is_selected, Attestation, Audit, Certificate, CommitStatus, Error,
    Event, FailReason, Seat, Sink, Verdict, AUDITS, COMMITMENTS, DEADLINES, FORCED_AUDITS,
};
use weft_bls::SignatureBytes;
use weft_pallet_runs as runs;
use weft_pallet_stages as stages;
use weft_pallet_staking as staking;
use weft_pallet_support::{emit, randomness, CommitmentId, Failure};
use weft_primitives::storage::Storage;
use weft_primitives::{AccountId, Balance, BlockNumber};

/// Selection of one commitment in its selection block; a settled last step may finish the
/// run (see [`finish`]).
pub(crate) fn select(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    id: CommitmentId,
) -> Result<(), Failure> {
    select_one(s, ev, now, id)?;
    finish::after_settlement(s, ev, id)
}

fn select_one(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    id: CommitmentId,
) -> Result<(), Failure> {
    // A commitment's selection runs once: its forced-audit mark is used now or never.
    let forced = FORCED_AUDITS.get(s, &id)?.is_some();
    if forced {
        FORCED_AUDITS.remove(s, &id);
    }
    let Some(mut c) = COMMITMENTS.get(s, &id)? else {
        return Ok(());
    };
    if c.status != CommitStatus::Committed {
        return Ok(());
    }
    let r = runs::get(s, c.run)?;
    let rand = randomness::at(s, now)?;
    if !forced && !is_selected(&rand, id, r.params.audit_probability) {
        if staking::PENDING_SLASHES.get(s, &c.trainer)?.unwrap_or(0) > 0 {
            void(s, ev, id, &mut c, CommitStatus::Voided);
            return Ok(());
        }
        return credit(s, ev, id, &mut c);
    }
    let set = staking::active_set(s)?;
    let mut seats = Vec::new();
    for a in stages::auditors(s, c.run, c.stage)? {
        if let Some(v) = set.iter().find(|v| v.account == a) {
            if a != c.trainer {
                seats.push(Seat {
                    account: a,
                    stake: v.stake,
                    bls_key: v.bls_key,
                });
            }
        }
    }
    if seats.is_empty() {
        // Nobody can audit this stage: treated as not selected.
        return credit(s, ev, id, &mut c);
    }
    let p = &r.params;
    let reveal_deadline = now.saturating_add(p.reveal_window as BlockNumber);
    let attest_deadline = now.saturating_add(p.attest_window as BlockNumber);
    let auditors = seats.iter().map(|x| x.account).collect();
    AUDITS.insert(
        s,
        &id,
        &Audit {
            opened_at: now,
            reveal_deadline,
            attest_deadline,
            threshold: p.settle_threshold,
            seats,
            attestations: Vec::new(),
            certificate: None,
            closed: false,
        },
    );
    push_queue(s, &DEADLINES, attest_deadline, id)?;
    set_status(s, id, &mut c, CommitStatus::Audited);
    emit(
        ev,
        Event::AuditOpened {
            audit: id,
            trainer: c.trainer,
            auditors,
            reveal_deadline,
            attest_deadline,
        },
    );
    Ok(())
}

/// `attest`.
#[allow(clippy::too_many_arguments)]
pub fn attest(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    who: &AccountId,
    id: CommitmentId,
    verdict: Verdict,
    reason: Option<FailReason>,
    signature: SignatureBytes,
) -> Result<(), Failure> {
    let mut a = AUDITS.get(s, &id)?.ok_or(Error::UnknownAudit)?;
    if a.closed || now > a.attest_deadline {
        return Err(Error::AuditClosed.into());
    }
    let seat = a
        .seats
        .iter()
        .find(|x| x.account == *who)
        .ok_or(Error::NotAuditor)?
        .clone();
    if a.attestations.iter().any(|x| x.auditor == *who) {
        return Err(Error::AlreadyAttested.into());
    }
    match (verdict, reason) {
        (Verdict::Pass, None) | (Verdict::Fail, Some(_)) => {}
        _ => return Err(Error::BadReason.into()),
    }
    if reason == Some(FailReason::NoReveal) && now <= a.reveal_deadline {
        return Err(Error::TooEarly.into());
    }
    if !weft_bls::verify_bytes(&seat.bls_key, &attestation_message(id, verdict), &signature) {
        return Err(Error::BadSignature.into());
    }
    a.attestations.push(Attestation {
        auditor: *who,
        verdict,
        reason,
        signature,
    });
    staking::add_points(s, who, 1)?;
    emit(
        ev,
        Event::Attested {
            audit: id,
            auditor: *who,
            verdict,
            reason,
        },
    );
    if a.certificate.is_none() {
        let total: Balance = a.seats.iter().fold(0u128, |t, x| t.saturating_add(x.stake));
        let on_side: Balance = a
            .attestations
            .iter()
            .filter(|x| x.verdict == verdict)
            .filter_map(|x| a.seats.iter().find(|st| st.account == x.auditor))
            .fold(0u128, |t, x| t.saturating_add(x.stake));
        if a.threshold.is_exceeded_by(on_side, total) {
            settle(s, ev, now, id, &mut a, verdict, on_side)?;
        }
    }
    AUDITS.insert(s, &id, &a);
    Ok(())
}

fn settle(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    id: CommitmentId,
    a: &mut Audit,
    verdict: Verdict,
    stake: Balance,
) -> Result<(), Failure> {
    let side: Vec<&Attestation> = a
        .attestations
        .iter()
        .filter(|x| x.verdict == verdict)
        .collect();
    let mut sigs = Vec::with_capacity(side.len());
    let mut keys = Vec::with_capacity(side.len());
    for att in &side {
        let seat = a
            .seats
            .iter()
            .find(|x| x.account == att.auditor)
            .ok_or(Error::NotAuditor)?;
        sigs.push(
            weft_bls::Signature::from_bytes(&att.signature).map_err(|_| Error::BadSignature)?,
        );
        keys.push(weft_bls::PublicKey::from_bytes(&seat.bls_key).map_err(|_| Error::BadSignature)?);
    }
    let agg = weft_bls::Signature::aggregate(&sigs).map_err(|_| Error::BadSignature)?;
    // Each signature was checked on arrival; this one pairing check certifies the aggregate.
    if !weft_bls::verify_aggregate(&keys, &attestation_message(id, verdict), &agg) {
        return Err(Error::BadSignature.into());
    }
    a.certificate = Some(Certificate {
        verdict,
        signers: side.iter().map(|x| x.auditor).collect(),
        aggregate: agg.to_bytes(),
    });
    let reporter = side.first().map(|x| x.auditor);
    let mut c = COMMITMENTS.get(s, &id)?.ok_or(Error::UnknownAudit)?;
    emit(
        ev,
        Event::AuditSettled {
            audit: id,
            verdict,
            stake,
        },
    );
    match verdict {
        Verdict::Pass => credit(s, ev, id, &mut c)?,
        Verdict::Fail => {
            let fraction = runs::get(s, c.run)?.params.trainer_slash;
            crate::commitments::punish(
                s,
                ev,
                now,
                &c.trainer,
                c.run,
                fraction,
                reporter,
                staking::OffenceKind::AuditFailed,
            )?;
            void(s, ev, id, &mut c, CommitStatus::Voided);
        }
    }
    Ok(())
}

/// Deadline processing of one audit (see the module docs); a settled last step may finish
/// the run (see [`finish`]).
pub(crate) fn close(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    id: CommitmentId,
) -> Result<(), Failure> {
    close_one(s, ev, now, id)?;
    finish::after_settlement(s, ev, id)
}

fn close_one(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    id: CommitmentId,
) -> Result<(), Failure> {
    let Some(mut a) = AUDITS.get(s, &id)? else {
        return Ok(());
    };
    if a.closed {
        return Ok(());
    }
    a.closed = true;
    let Some(mut c) = COMMITMENTS.get(s, &id)? else {
        return Ok(());
    };
    let p = runs::get(s, c.run)?.params;
    let outcome = a.certificate.as_ref().map(|x| x.verdict);
    if outcome.is_none() {
        void(s, ev, id, &mut c, CommitStatus::Inconclusive);
        emit(ev, Event::AuditInconclusive { audit: id });
    }
    // A trainer the chain no longer knows (chilled or removed, e.g. after a failed audit of
    // another step) cannot be reached for its reveal: a seat that could not attest is not at
    // fault then.
    let unreachable = staking::trainer(s, &c.trainer)?.is_none();
    for seat in &a.seats {
        let att = a.attestations.iter().find(|x| x.auditor == seat.account);
        let offence = match (att, outcome) {
            (None, _) if unreachable => None,
            (None, _) => Some((
                p.missed_attestation_slash,
                staking::OffenceKind::MissedAttestation,
            )),
            (Some(x), Some(o)) if x.verdict != o => {
                Some((p.auditor_slash, staking::OffenceKind::FalseVerdict))
            }
            _ => None,
        };
        if let Some((fraction, kind)) = offence {
            staking::report_offence(s, ev, now, &seat.account, fraction, None, kind)?;
            stages::remove_account(s, ev, &seat.account)?;
        }
    }
    AUDITS.insert(s, &id, &a);
    Ok(())
}
