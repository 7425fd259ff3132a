//! Genesis state from a chain spec's `genesis` section.

use crate::{balances, system};
use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_primitives::storage::{Changes, MemoryState, Overlay, StorageValue};
use weft_primitives::{AccountId, Balance};

/// A validator of the genesis set.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenesisValidator {
    /// Its account (also its block-authoring key in the dev engine).
    pub account: AccountId,
    /// Its voting power.
    #[serde(with = "balance_string")]
    pub stake: Balance,
}

/// The genesis section of a chain spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenesisConfig {
    /// The existential deposit in plancks.
    #[serde(with = "balance_string")]
    pub existential_deposit: Balance,
    /// Endowed accounts and their free balances in plancks.
    pub balances: Vec<GenesisBalance>,
    /// The initial validator set.
    pub validators: Vec<GenesisValidator>,
}

/// An endowed account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisBalance {
    /// The account.
    pub account: AccountId,
    /// Its free balance in plancks.
    #[serde(with = "balance_string")]
    pub free: Balance,
}

/// Balances are JSON strings: they exceed the 2^53 that JSON numbers carry exactly.
pub mod balance_string {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the balance as a decimal string.
    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    /// Reads a decimal string (or a small JSON number).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            S(String),
            N(u64),
        }
        match Either::deserialize(d)? {
            Either::S(s) => s.parse().map_err(serde::de::Error::custom),
            Either::N(n) => Ok(n as u128),
        }
    }
}

/// The genesis validator set.
pub const VALIDATORS: StorageValue<Vec<GenesisValidator>> = StorageValue::new(system::PALLET, "Validators");

/// Why genesis could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    /// The balances are inconsistent.
    #[error("genesis balances: {0}")]
    Balances(#[from] balances::Failure),
    /// No validators.
    #[error("genesis needs at least one validator")]
    NoValidators,
}

/// Builds the genesis state: the change set that block 0's state root commits to.
pub fn build_genesis(chain_name: &str, config: &GenesisConfig) -> Result<Changes, GenesisError> {
    if config.validators.is_empty() {
        return Err(GenesisError::NoValidators);
    }
    let empty = MemoryState::default();
    let mut o = Overlay::new(&empty);
    system::NUMBER.put(&mut o, &0);
    system::TIMESTAMP.put(&mut o, &0);
    system::CHAIN_NAME.put(&mut o, &chain_name.as_bytes().to_vec());
    let endowed: Vec<(AccountId, Balance)> = config.balances.iter().map(|b| (b.account, b.free)).collect();
    balances::build_genesis(&mut o, config.existential_deposit, &endowed)?;
    VALIDATORS.put(&mut o, &config.validators);
    Ok(o.into_changes())
}
