//! Signature and certificate checks.
//!
//! * A **signature** is checked against the validator's key as parsed when the height's set
//!   was built (deserialising a G2 point with its subgroup check costs more than the pairing
//!   check itself), and remembered for the rest of the height.
//! * A **commit certificate** is valid when its signers are distinct members, each signed the
//!   precommit for `(height, round, block)`, and they hold more than 2/3 of the power
//!   (`ThresholdParams::quorum`, 2/3, strict: `3 · signed > 2 · total`, the same rule as
//!   `weft_finality::ValidatorSet::is_quorum`).
//! * A **polka certificate** is the same with prevotes.
//! * A **round certificate** of kind `Skip` needs votes of its round (any kind, any value)
//!   from more than 1/3 of the power (`honest`: `3 · signed > total`); of kind `Precommit`,
//!   precommits only (any value) from more than 2/3.
//!
//! The first bad signature is reported by Malachite's matching `CertificateError` variant,
//! which the engine turns into `EngineError::BadSignature`; the other failures (non-members,
//! duplicates, too little power) into `EngineError::InvalidCertificate`.

use super::{Ctx, Effects};
use crate::context::{Address, BlockHash, Height, WeftValidatorSet, WeftVote};
use arc_malachitebft_core_types::{
    self as mt, CertificateError, CommitCertificate, NilOrVal, PolkaCertificate, RoundCertificate,
    RoundCertificateType, ThresholdParam, ThresholdParams, ValidatorSet as _, VoteType,
};
use std::collections::BTreeSet;
use tracing::warn;
use weft_bls::{PublicKey, PublicKeyBytes, Signature, SignatureBytes};
use weft_primitives::AccountId;

impl Effects {
    /// Verifies one signature, with the set's parsed key when `account` is a member with
    /// that key, and remembers it for the rest of the height.
    pub(super) fn verify(
        &mut self,
        account: &AccountId,
        key: &PublicKeyBytes,
        msg: &[u8],
        sig: &SignatureBytes,
    ) -> bool {
        let entry = (*blake3::hash(msg).as_bytes(), *account, *sig);
        if self.verified.contains(&entry) {
            return true;
        }
        let parsed = self.set.as_ref().and_then(|set| {
            let set = set.inner();
            let i = set.index_of(account)?;
            (set.validators().get(i)?.bls_key == *key)
                .then(|| set.key_at(i).copied())
                .flatten()
        });
        let Some(pk) = parsed.or_else(|| PublicKey::from_bytes(key).ok()) else {
            return false;
        };
        let ok = Signature::from_bytes(sig).is_ok_and(|s| pk.verify(msg, &s));
        if ok {
            self.verified.insert(entry);
        }
        ok
    }

    pub(super) fn note_cert_result(&mut self, result: &Result<(), CertificateError<Ctx>>) {
        match result {
            Ok(()) => {}
            Err(
                CertificateError::InvalidCommitSignature(_)
                | CertificateError::InvalidPolkaSignature(_)
                | CertificateError::InvalidRoundSignature(_),
            ) => self.bad_signature = true,
            Err(e) => {
                warn!(error = %e, "certificate refused");
                self.cert_error = Some(e.to_string());
            }
        }
    }

    /// Checks `(signer, message, signature)` triples: members, no duplicates, valid
    /// signatures (`invalid(i)` names the first bad one), and power meeting `threshold`.
    fn verify_signers(
        &mut self,
        set: &WeftValidatorSet,
        threshold: ThresholdParam,
        signers: &[(Address, Vec<u8>, SignatureBytes)],
        invalid: impl Fn(usize) -> CertificateError<Ctx>,
    ) -> Result<(), CertificateError<Ctx>> {
        let mut seen = BTreeSet::new();
        let mut signed: u64 = 0;
        for (i, (address, msg, sig)) in signers.iter().enumerate() {
            let Some(v) = set.get_by_address(address) else {
                return Err(CertificateError::UnknownValidator(*address));
            };
            if !seen.insert(*address) {
                return Err(CertificateError::DuplicateVote(*address));
            }
            if !self.verify(&address.0, &v.public_key, msg, sig) {
                return Err(invalid(i));
            }
            signed = signed
                .checked_add(v.power)
                .ok_or(CertificateError::VotingPowerOverflow {
                    signed,
                    added: v.power,
                })?;
        }
        let total = set.total_voting_power();
        if !threshold.is_met(signed, total) {
            return Err(CertificateError::NotEnoughVotingPower {
                signed,
                total,
                expected: threshold.min_expected(total),
            });
        }
        Ok(())
    }

    fn vote_bytes(
        &self,
        kind: VoteType,
        cert_height: u64,
        round: mt::Round,
        value: NilOrVal<BlockHash>,
        who: Address,
    ) -> Vec<u8> {
        WeftVote {
            kind,
            height: Height(cert_height),
            round,
            value,
            validator: who,
        }
        .to_finality()
        .signing_bytes(&self.genesis)
    }

    pub(super) fn verify_commit(
        &mut self,
        cert: &CommitCertificate<Ctx>,
        set: &WeftValidatorSet,
        thresholds: ThresholdParams,
    ) -> Result<(), CertificateError<Ctx>> {
        let signers: Vec<_> = cert
            .commit_signatures
            .iter()
            .map(|s| {
                let msg = self.vote_bytes(
                    VoteType::Precommit,
                    cert.height.0,
                    cert.round,
                    NilOrVal::Val(cert.value_id),
                    s.address,
                );
                (s.address, msg, s.signature)
            })
            .collect();
        self.verify_signers(set, thresholds.quorum, &signers, |i| {
            CertificateError::InvalidCommitSignature(cert.commit_signatures[i].clone())
        })
    }

    pub(super) fn verify_polka(
        &mut self,
        cert: &PolkaCertificate<Ctx>,
        set: &WeftValidatorSet,
        thresholds: ThresholdParams,
    ) -> Result<(), CertificateError<Ctx>> {
        let signers: Vec<_> = cert
            .polka_signatures
            .iter()
            .map(|s| {
                let msg = self.vote_bytes(
                    VoteType::Prevote,
                    cert.height.0,
                    cert.round,
                    NilOrVal::Val(cert.value_id),
                    s.address,
                );
                (s.address, msg, s.signature)
            })
            .collect();
        self.verify_signers(set, thresholds.quorum, &signers, |i| {
            CertificateError::InvalidPolkaSignature(cert.polka_signatures[i].clone())
        })
    }

    /// A skip certificate needs votes of its round from more than 1/3 of the power; a
    /// precommit certificate needs precommits (for anything) from more than 2/3.
    pub(super) fn verify_round(
        &mut self,
        cert: &RoundCertificate<Ctx>,
        set: &WeftValidatorSet,
        thresholds: ThresholdParams,
    ) -> Result<(), CertificateError<Ctx>> {
        let threshold = match cert.cert_type {
            RoundCertificateType::Skip => thresholds.honest,
            RoundCertificateType::Precommit => {
                if let Some(s) = cert
                    .round_signatures
                    .iter()
                    .find(|s| s.vote_type == VoteType::Prevote)
                {
                    return Err(CertificateError::InvalidVoteType(s.address));
                }
                thresholds.quorum
            }
        };
        let signers: Vec<_> = cert
            .round_signatures
            .iter()
            .map(|s| {
                let msg = self.vote_bytes(
                    s.vote_type,
                    cert.height.0,
                    cert.round,
                    s.value_id,
                    s.address,
                );
                (s.address, msg, s.signature)
            })
            .collect();
        self.verify_signers(set, threshold, &signers, |i| {
            CertificateError::InvalidRoundSignature(cert.round_signatures[i].clone())
        })
    }
}
