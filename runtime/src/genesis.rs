//! Genesis state from a chain spec's `genesis` section.

use crate::executive::PalletEvents;
use crate::{balances, governance, inference, ownership, runs, stages, staking, system, Phase};
use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_pallet_support::{randomness, Failure};
use weft_primitives::storage::{Changes, MemoryState, Overlay, StorageValue};
use weft_primitives::{blake3_256, AccountId, Balance};

/// The secret URIs of the six accounts the dev and local chain specs endow.
pub const DEV_ACCOUNTS: [&str; 6] = [
    "//Alice",
    "//Bob",
    "//Charlie",
    "//Dave",
    "//Eve",
    "//Ferdie",
];

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenesisConfig {
    /// The existential deposit in plancks.
    #[serde(with = "balance_string")]
    pub existential_deposit: Balance,
    /// Endowed accounts and their free balances in plancks.
    pub balances: Vec<GenesisBalance>,
    /// The initial validator set.
    pub validators: Vec<GenesisValidator>,
    /// The protocol pallets' parameters, stakers and runs. Omitted from JSON when it is the
    /// default (development parameters, nobody bonded, no runs), so older specs still parse.
    #[serde(default, skip_serializing_if = "ProtocolGenesis::is_default")]
    pub protocol: ProtocolGenesis,
}

/// Genesis of the protocol pallets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ProtocolGenesis {
    /// Staking parameters (epoch length, bonding period, slashing, minimum bonds).
    pub staking: staking::Config,
    /// Accounts bonded at genesis, with their roles.
    pub stakers: Vec<staking::GenesisStaker>,
    /// Runs pallet parameters.
    pub runs: runs::Config,
    /// Runs registered at genesis.
    pub genesis_runs: Vec<runs::GenesisRun>,
    /// Stages pallet parameters.
    pub stages: stages::Config,
    /// Ownership pallet parameters.
    pub ownership: ownership::Config,
    /// Governance parameters.
    pub governance: governance::Config,
    /// Inference payment parameters (price per token, token cap, timeout).
    pub inference: inference::Config,
}

impl ProtocolGenesis {
    /// Whether this is the default (then it is left out of JSON).
    pub fn is_default(&self) -> bool {
        *self == ProtocolGenesis::default()
    }
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
pub use weft_primitives::units::balance_string;

/// The genesis validator set.
pub const VALIDATORS: StorageValue<Vec<GenesisValidator>> =
    StorageValue::new(system::PALLET, "Validators");

/// Why genesis could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    /// The balances are inconsistent.
    #[error("genesis balances: {0}")]
    Balances(#[from] balances::Failure),
    /// No validators.
    #[error("genesis needs at least one validator")]
    NoValidators,
    /// The protocol section is inconsistent.
    #[error("genesis protocol: {0}")]
    Protocol(#[from] Failure),
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
    let endowed: Vec<(AccountId, Balance)> = config
        .balances
        .iter()
        .map(|b| (b.account, b.free))
        .collect();
    balances::build_genesis(&mut o, config.existential_deposit, &endowed)?;
    VALIDATORS.put(&mut o, &config.validators);
    let mut seed = b"weft-genesis/".to_vec();
    seed.extend_from_slice(chain_name.as_bytes());
    randomness::RANDOMNESS.insert(&mut o, &0, &blake3_256(&seed));
    let p = &config.protocol;
    let mut discarded = Vec::new();
    let mut ev = PalletEvents {
        phase: Phase::Block,
        out: &mut discarded,
    };
    staking::build_genesis(&mut o, &mut ev, &p.staking, &p.stakers)?;
    runs::build_genesis(&mut o, &mut ev, &p.runs, &p.genesis_runs)?;
    stages::build_genesis(&mut o, &p.stages);
    ownership::build_genesis(&mut o, &p.ownership);
    governance::build_genesis(&mut o, &p.governance);
    inference::build_genesis(&mut o, &p.inference)?;
    Ok(o.into_changes())
}
