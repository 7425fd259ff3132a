//! Roles: validator and trainer registration.
//!
//! An account takes a role only with a ledger whose `active` bond reaches the role's minimum;
//! it can hold both roles.
//!
//! * `validate(bls_key, proof_of_possession)`: needs `active ≥ min_validator_bond`; the BN254
//!   key must come with a valid proof of possession (`weft_bls::check_registration`), which
//!   makes rogue-key attacks on aggregated audit verdicts impossible. One key per account and
//!   one account per key: [`BLS_OWNER`] maps each registered key to its account, a key
//!   another account registered is refused (`BlsKeyInUse`), and registering again with a new
//!   key releases the old one. The account joins [`CANDIDATES`], kept sorted by account id
//!   (binary search, so membership and order are deterministic) and bounded by
//!   `max_candidates`; the epoch election picks the active set from it.
//! * `train(peer_id, addrs, capacity)`: needs `active ≥ min_trainer_bond`; `capacity` is how
//!   many stage slots (over all runs) the trainer can serve at once and must be at least 1.
//!   The peer id is 1 to [`MAX_PEER_ID_LEN`] = 128 bytes, with at most [`MAX_ADDRS`] = 8
//!   addresses of at most [`MAX_ADDR_LEN`] = 256 bytes each. Registering again replaces the
//!   registration.
//! * `chill` drops both roles (validator registration, BLS key and candidacy; trainer
//!   registration). It is also how an offender is removed at report time.
//!
//! While an account holds roles, unbonding must leave `active` at or above the largest
//! minimum among them (`required_bond`). With the development [`Config`] the minimums are
//! 1,000 UNIT for a validator and 100 UNIT for a trainer, and `max_candidates` is 1,000.

use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_bls::{PublicKeyBytes, SignatureBytes};
use weft_pallet_support::{emit, Failure};
use weft_primitives::storage::{StateReader, Storage, StorageError, StorageMap, StorageValue};
use weft_primitives::{AccountId, Balance};

use crate::{config, Config, Error, Event, Sink, LEDGER, PALLET};

/// Longest trainer peer id, in bytes.
pub const MAX_PEER_ID_LEN: usize = 128;
/// Most trainer addresses.
pub const MAX_ADDRS: usize = 8;
/// Longest trainer address, in bytes.
pub const MAX_ADDR_LEN: usize = 256;

/// A validator's registration.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidatorInfo {
    /// Its BN254 BLS public key (proof of possession checked).
    pub bls_key: PublicKeyBytes,
}

/// A trainer's registration.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainerInfo {
    /// Its libp2p peer id (bytes).
    pub peer_id: Vec<u8>,
    /// Its multiaddrs (bytes).
    pub addrs: Vec<Vec<u8>>,
    /// Stage slots it can serve at once, over all runs.
    pub capacity: u32,
}

/// Validator registrations.
pub const VALIDATORS: StorageMap<AccountId, ValidatorInfo> = StorageMap::new(PALLET, "Validators");
/// Which account registered a BLS key.
pub const BLS_OWNER: StorageMap<PublicKeyBytes, AccountId> = StorageMap::new(PALLET, "BlsOwner");
/// Trainer registrations.
pub const TRAINERS: StorageMap<AccountId, TrainerInfo> = StorageMap::new(PALLET, "Trainers");
/// Validator candidates, sorted by account.
pub const CANDIDATES: StorageValue<Vec<AccountId>> = StorageValue::new(PALLET, "Candidates");

/// The trainer registration of `who`, if any.
pub fn trainer(
    s: &(impl StateReader + ?Sized),
    who: &AccountId,
) -> Result<Option<TrainerInfo>, StorageError> {
    TRAINERS.get(s, who)
}

/// The smallest active bond the roles of `who` require.
pub(crate) fn required_bond(
    s: &(impl StateReader + ?Sized),
    cfg: &Config,
    who: &AccountId,
) -> Result<Balance, StorageError> {
    let mut req = 0;
    if VALIDATORS.get(s, who)?.is_some() {
        req = req.max(cfg.min_validator_bond);
    }
    if TRAINERS.get(s, who)?.is_some() {
        req = req.max(cfg.min_trainer_bond);
    }
    Ok(req)
}

/// Drops both roles of `who` (no error if it holds none). Returns whether it held any.
pub fn chill(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    who: &AccountId,
) -> Result<bool, Failure> {
    let mut had = false;
    if let Some(v) = VALIDATORS.get(s, who)? {
        VALIDATORS.remove(s, who);
        BLS_OWNER.remove(s, &v.bls_key);
        let mut c = CANDIDATES.get(s)?.unwrap_or_default();
        if let Ok(i) = c.binary_search(who) {
            c.remove(i);
            CANDIDATES.put(s, &c);
        }
        had = true;
    }
    if TRAINERS.get(s, who)?.is_some() {
        TRAINERS.remove(s, who);
        had = true;
    }
    if had {
        emit(ev, Event::Chilled { who: *who });
    }
    Ok(had)
}

/// `validate`.
pub fn validate(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    who: &AccountId,
    bls_key: PublicKeyBytes,
    pop: SignatureBytes,
) -> Result<(), Failure> {
    let cfg = config(s)?;
    let l = LEDGER.get(s, who)?.ok_or(Error::NotBonded)?;
    if l.active < cfg.min_validator_bond {
        return Err(Error::InsufficientBond.into());
    }
    if let Some(owner) = BLS_OWNER.get(s, &bls_key)? {
        if owner != *who {
            return Err(Error::BlsKeyInUse.into());
        }
    }
    weft_bls::check_registration(&bls_key, &pop).map_err(|_| Error::InvalidBlsKey)?;
    if let Some(old) = VALIDATORS.get(s, who)? {
        BLS_OWNER.remove(s, &old.bls_key);
    }
    let mut c = CANDIDATES.get(s)?.unwrap_or_default();
    if let Err(i) = c.binary_search(who) {
        if c.len() >= cfg.max_candidates as usize {
            return Err(Error::TooManyCandidates.into());
        }
        c.insert(i, *who);
        CANDIDATES.put(s, &c);
    }
    VALIDATORS.insert(s, who, &ValidatorInfo { bls_key });
    BLS_OWNER.insert(s, &bls_key, who);
    emit(ev, Event::ValidatorRegistered { who: *who, bls_key });
    Ok(())
}

/// `train`.
pub fn train(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    who: &AccountId,
    info: TrainerInfo,
) -> Result<(), Failure> {
    let cfg = config(s)?;
    let l = LEDGER.get(s, who)?.ok_or(Error::NotBonded)?;
    if l.active < cfg.min_trainer_bond {
        return Err(Error::InsufficientBond.into());
    }
    if info.peer_id.is_empty()
        || info.peer_id.len() > MAX_PEER_ID_LEN
        || info.addrs.len() > MAX_ADDRS
        || info.addrs.iter().any(|a| a.len() > MAX_ADDR_LEN)
        || info.capacity == 0
    {
        return Err(Error::BadTrainerInfo.into());
    }
    let capacity = info.capacity;
    TRAINERS.insert(s, who, &info);
    emit(
        ev,
        Event::TrainerRegistered {
            who: *who,
            capacity,
        },
    );
    Ok(())
}
