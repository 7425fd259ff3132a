//! Validator sets.
//!
//! A height's set is the staking pallet's active set in the state of the block before it:
//! every node derives it from state, so it changes at epoch boundaries for everyone at once.
//! Validators are kept sorted by account id; that order is the bit order of certificate
//! bitmaps.
//!
//! **Voting power.** Stake is a `u128` in plancks; power is `u64`. Each validator's power is
//! `max(1, stake / scale)` with `scale = max(1, ⌈total / 2^48⌉)`, so the sum of powers stays
//! below `2^49` (no overflow anywhere, with room to multiply by 3) while ratios between stakes
//! are kept to within one part in `2^48 / n`.
//!
//! **Quorum.** A set of signers carries a quorum when `3 · signed > 2 · total`, i.e. strictly
//! more than two thirds of the power; `f + 1` ("honest") is `3 · signed > total`.
//!
//! **Proposer.** The proposer of `(height, round)` is drawn with probability proportional to
//! power: `r = u64(blake3("weft/proposer/v1" ‖ height ‖ round)[..8]) mod total`, then the first
//! validator, in set order, whose cumulative power exceeds `r`. It is stateless (any node can
//! compute it for any height and round without history) and a new round draws afresh, so a
//! crashed proposer costs one round, not the height.

use parity_scale_codec::{Decode, Encode};
use weft_bls::{PublicKey, PublicKeyBytes};
use weft_primitives::{AccountId, Balance};

/// A member of a validator set.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Validator {
    /// Its account.
    pub account: AccountId,
    /// Its BLS key (its proof of possession was checked when it registered).
    pub bls_key: PublicKeyBytes,
    /// Its voting power.
    pub power: u64,
}

/// Why a validator set cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// No validators.
    #[error("empty validator set")]
    Empty,
    /// Two entries for one account.
    #[error("validator {0} listed twice")]
    Duplicate(AccountId),
    /// A key that is not a curve point.
    #[error("validator {0} has an invalid BLS key")]
    BadKey(AccountId),
}

/// A height's validators, sorted by account, with their parsed keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    keys: Vec<PublicKey>,
    total: u64,
}

/// The bound on total power: `2^48` plus one unit per validator of rounding.
const POWER_BOUND: u128 = 1 << 48;

impl ValidatorSet {
    /// Builds a set from `(account, key, stake)`, scaling stake to power (see the module docs).
    pub fn from_stakes(
        members: impl IntoIterator<Item = (AccountId, PublicKeyBytes, Balance)>,
    ) -> Result<Self, SetError> {
        let members: Vec<_> = members.into_iter().collect();
        let total: u128 = members
            .iter()
            .map(|m| m.2)
            .fold(0u128, u128::saturating_add);
        let scale = total.div_ceil(POWER_BOUND).max(1);
        let validators = members
            .into_iter()
            .map(|(account, bls_key, stake)| Validator {
                account,
                bls_key,
                power: u64::try_from(stake / scale).unwrap_or(u64::MAX).max(1),
            })
            .collect();
        Self::new(validators)
    }

    /// Builds a set from validators with their powers.
    pub fn new(mut validators: Vec<Validator>) -> Result<Self, SetError> {
        if validators.is_empty() {
            return Err(SetError::Empty);
        }
        validators.sort_by_key(|v| v.account);
        for w in validators.windows(2) {
            if w[0].account == w[1].account {
                return Err(SetError::Duplicate(w[0].account));
            }
        }
        let keys = validators
            .iter()
            .map(|v| PublicKey::from_bytes(&v.bls_key).map_err(|_| SetError::BadKey(v.account)))
            .collect::<Result<Vec<_>, _>>()?;
        let total = validators
            .iter()
            .map(|v| v.power)
            .fold(0u64, u64::saturating_add);
        Ok(ValidatorSet {
            validators,
            keys,
            total,
        })
    }

    /// The members in set order.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.validators.len()
    }

    /// Never true: a set has at least one member.
    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// The sum of powers.
    pub fn total_power(&self) -> u64 {
        self.total
    }

    /// The position of `account` in set order.
    pub fn index_of(&self, account: &AccountId) -> Option<usize> {
        self.validators
            .binary_search_by(|v| v.account.cmp(account))
            .ok()
    }

    /// The member `account`.
    pub fn get(&self, account: &AccountId) -> Option<&Validator> {
        self.index_of(account).map(|i| &self.validators[i])
    }

    /// The parsed key of the member at `index`.
    pub fn key_at(&self, index: usize) -> Option<&PublicKey> {
        self.keys.get(index)
    }

    /// Whether `power` is strictly more than two thirds of the total.
    pub fn is_quorum(&self, power: u64) -> bool {
        3 * u128::from(power) > 2 * u128::from(self.total)
    }

    /// Whether `power` is strictly more than one third of the total (at least one honest).
    pub fn is_honest_share(&self, power: u64) -> bool {
        3 * u128::from(power) > u128::from(self.total)
    }

    /// The proposer of `(height, round)`, drawn by power (see the module docs).
    pub fn proposer(&self, height: u64, round: u32) -> &Validator {
        let mut seed = b"weft/proposer/v1".to_vec();
        seed.extend_from_slice(&height.to_le_bytes());
        seed.extend_from_slice(&round.to_le_bytes());
        let digest = blake3::hash(&seed);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_bytes()[..8]);
        let r = u64::from_le_bytes(first) % self.total.max(1);
        let mut cumulative = 0u64;
        for v in &self.validators {
            cumulative = cumulative.saturating_add(v.power);
            if r < cumulative {
                return v;
            }
        }
        // Unreachable for a non-empty set: the last cumulative sum is the total.
        &self.validators[self.validators.len() - 1]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn keys(n: u8) -> Vec<(AccountId, weft_bls::SecretKey)> {
        (1..=n)
            .map(|i| {
                (
                    AccountId([i; 32]),
                    weft_bls::SecretKey::from_seed(&[i; 8]).unwrap(),
                )
            })
            .collect()
    }

    pub(crate) fn set_of(
        keys: &[(AccountId, weft_bls::SecretKey)],
        stake: Balance,
    ) -> ValidatorSet {
        ValidatorSet::from_stakes(
            keys.iter()
                .map(|(a, k)| (*a, k.public_key().to_bytes(), stake)),
        )
        .unwrap()
    }

    #[test]
    fn power_scales_huge_stakes_without_overflow() {
        let k = keys(3);
        let set = ValidatorSet::from_stakes(vec![
            (k[0].0, k[0].1.public_key().to_bytes(), u128::MAX / 2),
            (k[1].0, k[1].1.public_key().to_bytes(), u128::MAX / 4),
            (k[2].0, k[2].1.public_key().to_bytes(), 1),
        ])
        .unwrap();
        let p: Vec<u64> = set.validators().iter().map(|v| v.power).collect();
        assert!(set.total_power() <= (1 << 49));
        assert_eq!(p[2], 1, "a tiny stake still votes");
        assert!(p[0] / p[1] == 2, "ratio kept: {p:?}");
    }

    #[test]
    fn quorum_is_strictly_more_than_two_thirds() {
        let set = set_of(&keys(4), 100);
        let per = set.validators()[0].power;
        assert!(!set.is_quorum(2 * per));
        assert!(set.is_quorum(3 * per));
        assert!(!set.is_honest_share(per));
        assert!(set.is_honest_share(2 * per));
    }

    #[test]
    fn duplicates_and_bad_keys_are_refused() {
        let k = keys(1);
        let pk = k[0].1.public_key().to_bytes();
        assert_eq!(
            ValidatorSet::from_stakes(vec![(k[0].0, pk, 1), (k[0].0, pk, 1)]),
            Err(SetError::Duplicate(k[0].0))
        );
        assert_eq!(
            ValidatorSet::from_stakes(vec![(k[0].0, PublicKeyBytes([7; 64]), 1)]),
            Err(SetError::BadKey(k[0].0))
        );
        assert_eq!(ValidatorSet::new(vec![]), Err(SetError::Empty));
    }

    #[test]
    fn proposers_follow_stake() {
        let k = keys(2);
        let set = ValidatorSet::from_stakes(vec![
            (k[0].0, k[0].1.public_key().to_bytes(), 900),
            (k[1].0, k[1].1.public_key().to_bytes(), 100),
        ])
        .unwrap();
        let heavy = (0..2000)
            .filter(|h| set.proposer(*h, 0).account == k[0].0)
            .count();
        assert!((1650..1950).contains(&heavy), "{heavy} of 2000");
        // A new round may pick someone else: over many heights both rounds differ sometimes.
        assert!((0..200).any(|h| set.proposer(h, 0) != set.proposer(h, 1)));
    }
}
