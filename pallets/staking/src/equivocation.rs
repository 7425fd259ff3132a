//! Equivocation reports: Tendermint validators that sign two conflicting votes (or proposals)
//! at one height and round are slashed like every other offence.
//!
//! `report_equivocation(evidence)` may be sent by anyone. The evidence is two signed messages
//! (`weft_finality::Equivocation`); the runtime checks it on its own, with no trust in the
//! reporter:
//!
//! 1. the validator set that voted at height `h` is the snapshot of the epoch of block
//!    `h − 1` (the set is read from the parent state), `epoch = (h − 1) / epoch_length`; a
//!    height whose snapshot is no longer kept (`history_depth` epochs) or that is not yet
//!    reached is refused (`EvidenceOutOfRange`);
//! 2. the offender must be in that snapshot, and both signatures must verify under its BLS
//!    key over messages that bind this chain's genesis hash (`InvalidEvidence` otherwise);
//! 3. each (offender, height, round, kind) is reported once (`AlreadyReported`).
//!
//! The offence is then [`slashing::report_offence`] with `equivocation_slash` (10% of the
//! whole ledger in the development config): chilled now, slashed after `slash_defer`, max
//! (not sum) within a span, `reporter_share` to the reporter.

use crate::{config, slashing, Error, Sink, PALLET, SNAPSHOTS};
use weft_finality::Equivocation;
use weft_pallet_support::{blocks, Failure, SlashId};
use weft_primitives::storage::{Storage, StorageMap};
use weft_primitives::{AccountId, BlockNumber};

/// Equivocations already reported, by (offender, height, round, kind).
pub const REPORTED: StorageMap<(AccountId, u64, u32, u8), BlockNumber> =
    StorageMap::new(PALLET, "ReportedEquivocations");

/// Checks `evidence` and reports the offence; returns the slash id (none when the offender
/// has nothing bonded).
pub fn report(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    reporter: &AccountId,
    evidence: &Equivocation,
) -> Result<Option<SlashId>, Failure> {
    let cfg = config(s)?;
    let height = evidence.height();
    if height == 0 || height > now {
        return Err(Error::EvidenceOutOfRange.into());
    }
    let epoch = (height - 1) / cfg.epoch_length.max(1);
    let set = SNAPSHOTS.get(s, &epoch)?.ok_or(Error::EvidenceOutOfRange)?;
    let offender = evidence.offender();
    let member = set
        .iter()
        .find(|v| v.account == offender)
        .ok_or(Error::InvalidEvidence)?;
    let genesis = blocks::genesis_hash(s)?;
    evidence
        .verify(&genesis, &member.bls_key)
        .map_err(|_| Error::InvalidEvidence)?;
    let key = evidence.key();
    if REPORTED.get(s, &key)?.is_some() {
        return Err(Error::AlreadyReported.into());
    }
    REPORTED.insert(s, &key, &now);
    slashing::report_offence(
        s,
        ev,
        now,
        &offender,
        cfg.equivocation_slash,
        Some(*reporter),
        slashing::OffenceKind::Equivocation,
    )
}
