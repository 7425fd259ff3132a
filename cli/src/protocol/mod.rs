//! The protocol commands of `weft`: staking, runs, work, ownership, credentials, governance
//! and the epoch. Each submitting command signs with `--from <SURI>` and prints the receipt
//! (and the id of what it created); each reading command asks one `weft_*` JSON-RPC method and
//! prints its answer as aligned text, or as the method's own JSON with `--json`.

// The command enums are parsed once per process; the size of their variants (a key pair in
// every signed one) does not matter.
#![allow(clippy::large_enum_variant)]

use crate::{connect, print_json, submit, submit_then, TxArgs};
use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use serde::Serialize;
use std::path::Path;
use weft_cli::args::{
    bls_secret, parse_account, parse_loss, parse_multiaddr, parse_peer_id, parse_perbill,
    parse_weft,
};
use weft_cli::render::{field, weft, weft_str};
use weft_cli::{Client, Receipt};
use weft_primitives::{blake3_256, AccountId, Balance, Hash};
use weft_rpc_api::protocol::{
    ppb_to_percent, AuditJson, AuditStatus, RunJson, StageAssignmentsJson,
};
use weft_runtime::bls::{PublicKeyBytes, SecretKey, SignatureBytes};
use weft_runtime::support::{
    CommitmentId, Perbill, ProposalId, Replica, RunId, SlashId, StageIndex, Step,
};
use weft_runtime::{governance, ownership, runs, stages, staking, work, RuntimeCall, RuntimeEvent};

/// `--at BLOCKHASH` of the reading commands.
#[derive(Debug, Args)]
pub struct AtArgs {
    /// Read the state at this block instead of the best block.
    #[arg(long, value_name = "BLOCKHASH")]
    pub at: Option<Hash>,
}

/// A libp2p peer id's bytes (a newtype so that clap takes it as one value).
#[derive(Debug, Clone)]
pub struct PeerIdArg(pub Vec<u8>);

/// A multiaddr's bytes.
#[derive(Debug, Clone)]
pub struct AddrArg(pub Vec<u8>);

fn peer_id_arg(s: &str) -> Result<PeerIdArg, weft_cli::args::ArgError> {
    parse_peer_id(s).map(PeerIdArg)
}

fn addr_arg(s: &str) -> Result<AddrArg, weft_cli::args::ArgError> {
    parse_multiaddr(s).map(AddrArg)
}

/// A signed command with an amount of WEFT.
#[derive(Debug, Args)]
pub struct AmountTx {
    #[command(flatten)]
    tx: TxArgs,
    /// The amount in WEFT, e.g. 1000.
    #[arg(long, value_name = "WEFT", value_parser = parse_weft)]
    amount: Balance,
}

/// A signed command without arguments.
#[derive(Debug, Args)]
pub struct PlainTx {
    #[command(flatten)]
    tx: TxArgs,
}

mod gov_commands;
mod ownership_commands;
mod runs_commands;
mod stake_commands;
mod work_commands;

pub use gov_commands::{epoch, gov, GovCommand};
pub use ownership_commands::{credentials, ownership, CredentialsCommand, OwnershipCommand};
pub use runs_commands::{run, ParamArgs, RunCommand};
pub use stake_commands::{stake, StakeCommand};
pub use work_commands::{work, WorkCommand};

/// `weft key bls --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlsKeyOut {
    /// The account of the secret URI.
    pub account: AccountId,
    /// The BLS public key.
    pub bls_key: PublicKeyBytes,
    /// Its proof of possession.
    pub proof_of_possession: SignatureBytes,
}

impl BlsKeyOut {
    /// The public key and proof of possession of `sk`.
    pub fn of(sk: &SecretKey, account: AccountId) -> Result<Self> {
        Ok(BlsKeyOut {
            account,
            bls_key: sk.public_key().to_bytes(),
            proof_of_possession: sk
                .proof_of_possession()
                .context("making the proof of possession")?
                .to_bytes(),
        })
    }
}

/// `runId` → `Run id` (labels of the extra receipt facts).
pub fn label(key: &str) -> String {
    let mut out = String::new();
    for (i, c) in key.chars().enumerate() {
        if c.is_ascii_uppercase() {
            out.push(' ');
            out.push(c.to_ascii_lowercase());
        } else if i == 0 {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A file's bytes, or the argument itself when it looks like inline JSON.
fn read_bytes(src: &str) -> Result<Vec<u8>> {
    let t = src.trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        return Ok(src.as_bytes().to_vec());
    }
    std::fs::read(Path::new(src)).with_context(|| format!("reading {src}"))
}

/// The first event of `receipt` that `pick` recognises.
fn find_event<T>(receipt: &Receipt, pick: impl Fn(&RuntimeEvent) -> Option<T>) -> Option<T> {
    receipt.events.iter().find_map(|r| pick(&r.event))
}

fn id_fact<T: Into<serde_json::Value>>(
    key: &'static str,
    v: Option<T>,
) -> Vec<(&'static str, serde_json::Value)> {
    v.map(|v| vec![(key, v.into())]).unwrap_or_default()
}

/// Prints `value` as JSON, or runs `human`.
fn show<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T)) -> Result<()> {
    if json {
        print_json(value)
    } else {
        human(value);
        Ok(())
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "-".to_string())
}

fn perbill(p: Perbill) -> String {
    ppb_to_percent(u128::from(p.parts()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(label("runId"), "Run id");
        assert_eq!(label("passedEnactAt"), "Passed enact at");
        assert_eq!(label("halted"), "Halted");
    }
}
