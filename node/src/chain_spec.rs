//! Chain specifications: the JSON that names a chain and fixes its genesis.
//!
//! `chain-spec/dev.json` and `chain-spec/local.json` in the repository are exactly what
//! `weft-node build-spec --chain dev|local` prints (a test checks it). `--chain PATH` loads any
//! file of the same shape.

use serde::{Deserialize, Serialize};
use std::path::Path;
use weft_primitives::units::{TOKEN_DECIMALS, TOKEN_SYMBOL, UNIT};
use weft_primitives::{account::SS58_PREFIX, Keypair};
use weft_runtime::genesis::GenesisBalance;
use weft_runtime::{GenesisConfig, GenesisValidator};

/// A chain spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChainSpec {
    /// Human name, e.g. "Development".
    pub name: String,
    /// Identifier, used for the database directory, e.g. "dev".
    pub id: String,
    /// Development, Local or Live.
    pub chain_type: ChainType,
    /// Multiaddresses of nodes to connect to first.
    pub boot_nodes: Vec<String>,
    /// Token symbol and decimals, SS58 format.
    pub properties: Properties,
    /// How blocks are agreed on: `dev` (one validator, instant finality) or `tendermint`.
    #[serde(default, skip_serializing_if = "Consensus::is_dev")]
    pub consensus: Consensus,
    /// The genesis state.
    pub genesis: GenesisConfig,
}

/// The kind of chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainType {
    /// One node, throwaway.
    Development,
    /// Several nodes on one machine or network.
    Local,
    /// A public network.
    Live,
}

/// The consensus engine of a chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Consensus {
    /// One validator authors and finalizes every block (`DevEngine`).
    #[default]
    Dev,
    /// Tendermint among the staking pallet's active set (`bft`).
    Tendermint,
}

impl Consensus {
    fn is_dev(&self) -> bool {
        *self == Consensus::Dev
    }
}

/// `system_properties`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Properties {
    /// "WEFT".
    pub token_symbol: String,
    /// 12.
    pub token_decimals: u32,
    /// 42.
    pub ss58_format: u16,
}

/// Why a chain spec could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ChainSpecError {
    /// The file could not be read.
    #[error("cannot read chain spec {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The JSON is malformed.
    #[error("invalid chain spec {path}: {source}")]
    Json {
        /// The path.
        path: String,
        /// The error.
        source: serde_json::Error,
    },
    /// A built-in key could not be derived.
    #[error("dev key: {0}")]
    Key(#[from] weft_primitives::KeyError),
    /// A built-in BLS key could not be derived.
    #[error("dev BLS key: {0}")]
    Bls(#[from] weft_runtime::bls::BlsError),
}

fn account(suri: &str) -> Result<weft_primitives::AccountId, ChainSpecError> {
    Ok(Keypair::from_suri(suri)?.account_id())
}

fn properties() -> Properties {
    Properties {
        token_symbol: TOKEN_SYMBOL.into(),
        token_decimals: TOKEN_DECIMALS,
        ss58_format: SS58_PREFIX,
    }
}

fn endowed() -> Result<Vec<GenesisBalance>, ChainSpecError> {
    weft_runtime::genesis::DEV_ACCOUNTS
        .iter()
        .map(|s| {
            Ok(GenesisBalance {
                account: account(s)?,
                free: 1_000_000 * UNIT,
            })
        })
        .collect()
}

/// The development chain: one validator (//Alice), six endowed dev accounts.
pub fn dev() -> Result<ChainSpec, ChainSpecError> {
    Ok(ChainSpec {
        name: "Development".into(),
        id: "dev".into(),
        chain_type: ChainType::Development,
        boot_nodes: vec![],
        properties: properties(),
        consensus: Consensus::Dev,
        genesis: GenesisConfig {
            existential_deposit: UNIT / 100,
            balances: endowed()?,
            validators: vec![GenesisValidator {
                account: account("//Alice")?,
                stake: 100_000 * UNIT,
            }],
            ..Default::default()
        },
    })
}

/// The validators of the local testnet, in the order `scripts/testnet.sh` starts them.
pub const LOCAL_VALIDATORS: [&str; 4] = ["//Alice", "//Bob", "//Charlie", "//Dave"];

/// Stake of each local validator at genesis.
pub const LOCAL_STAKE: weft_primitives::Balance = 100_000 * UNIT;

/// The local testnet: Tendermint among //Alice, //Bob, //Charlie and //Dave, equally staked,
/// each with the BLS key the CLI derives from its secret URI (`weft stake validate` and
/// `weft-node --key` agree on it).
pub fn local() -> Result<ChainSpec, ChainSpecError> {
    let mut validators = Vec::new();
    let mut stakers = Vec::new();
    for suri in LOCAL_VALIDATORS {
        let account = account(suri)?;
        let bls = weft_runtime::bls::secret_from_suri(suri, None)?;
        validators.push(GenesisValidator {
            account,
            stake: LOCAL_STAKE,
        });
        stakers.push(weft_runtime::staking::GenesisStaker {
            account,
            bond: LOCAL_STAKE,
            validator: Some((
                bls.public_key().to_bytes(),
                bls.proof_of_possession()?.to_bytes(),
            )),
            trainer: None,
        });
    }
    Ok(ChainSpec {
        name: "Local Testnet".into(),
        id: "local_testnet".into(),
        chain_type: ChainType::Local,
        boot_nodes: vec![],
        properties: properties(),
        consensus: Consensus::Tendermint,
        genesis: GenesisConfig {
            existential_deposit: UNIT / 100,
            balances: endowed()?,
            validators,
            protocol: weft_runtime::ProtocolGenesis {
                stakers,
                ..Default::default()
            },
        },
    })
}

/// `dev`, `local`, or a path to a JSON file.
pub fn load(chain: &str) -> Result<ChainSpec, ChainSpecError> {
    match chain {
        "dev" | "" => dev(),
        "local" => local(),
        path => {
            let text =
                std::fs::read_to_string(Path::new(path)).map_err(|source| ChainSpecError::Io {
                    path: path.into(),
                    source,
                })?;
            serde_json::from_str(&text).map_err(|source| ChainSpecError::Json {
                path: path.into(),
                source,
            })
        }
    }
}

impl ChainSpec {
    /// Pretty JSON, as `build-spec` prints it.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files in `chain-spec/` are what `build-spec` produces.
    #[test]
    fn checked_in_specs_match_builtins() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../chain-spec");
        for (file, spec) in [
            ("dev.json", dev().unwrap()),
            ("local.json", local().unwrap()),
        ] {
            let loaded = load(root.join(file).to_str().unwrap()).unwrap();
            assert_eq!(
                loaded, spec,
                "chain-spec/{file} differs from build-spec output"
            );
        }
    }

    #[test]
    fn malformed_spec_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.json");
        std::fs::write(&p, "{\"name\": 1}").unwrap();
        let err = load(p.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("invalid chain spec"), "{err}");
        assert!(load("/nonexistent/spec.json")
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
    }
}
