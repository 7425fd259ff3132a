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

/// `weft stake …`.
#[derive(Debug, Subcommand)]
pub enum StakeCommand {
    /// Bond (reserve) WEFT: opens the account's staking ledger.
    Bond(AmountTx),
    /// Add WEFT to an existing bond.
    BondExtra(AmountTx),
    /// Start unbonding WEFT (withdrawable after the bonding period; still slashable).
    Unbond(AmountTx),
    /// Withdraw every unbonded chunk whose bonding period is over.
    Withdraw(PlainTx),
    /// Move unbonding WEFT back into the active bond.
    Rebond(AmountTx),
    /// Drop the validator and trainer roles.
    Chill(PlainTx),
    /// Become a validator candidate with a BN254 BLS key and its proof of possession.
    Validate {
        #[command(flatten)]
        tx: TxArgs,
        /// BLS seed (0x hex or text); default: derived from the --from secret URI.
        #[arg(long, value_name = "SEED")]
        bls_seed: Option<String>,
    },
    /// Become a trainer: declare the libp2p peer id, addresses and stage capacity.
    Train {
        #[command(flatten)]
        tx: TxArgs,
        /// The trainer's libp2p peer id (12D3KooW… or 0x hex of its bytes).
        #[arg(long, value_name = "PEER_ID", value_parser = peer_id_arg)]
        peer_id: PeerIdArg,
        /// A multiaddr where the trainer listens (repeat for several, at most 8).
        #[arg(long = "addr", value_name = "MULTIADDR", value_parser = addr_arg)]
        addrs: Vec<AddrArg>,
        /// How many stage slots (over all runs) it can serve at once.
        #[arg(long, default_value_t = 1)]
        capacity: u32,
    },
    /// Show an account's ledger, roles and pending slashes.
    Show {
        /// An SS58 address, a 0x public key or a secret URI.
        #[arg(value_name = "ADDRESS-or-SURI", value_parser = parse_account)]
        account: AccountId,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Show the epoch's validator set and the candidates.
    Validators(AtArgs),
    /// Show the trainers that joined or serve a run (or one trainer with --account).
    Trainers {
        /// Only this trainer (also when it joined no run).
        #[arg(long, value_name = "ADDRESS-or-SURI", value_parser = parse_account)]
        account: Option<AccountId>,
        #[command(flatten)]
        at: AtArgs,
    },
}

/// Overrides of a run's parameters (defaults: the development values, or `--params`).
#[derive(Debug, Args, Default)]
pub struct ParamArgs {
    /// A JSON file (or inline JSON) with all the run parameters, as `weft run show N --json`
    /// prints them under "params"; the flags below override it.
    #[arg(long, value_name = "FILE-or-JSON")]
    params: Option<String>,
    /// Probability that a commitment is audited (10%, 0.1, 1/10).
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    audit_probability: Option<Perbill>,
    /// Stake fraction slashed for a failed or unrevealed step.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    trainer_slash: Option<Perbill>,
    /// Stake fraction slashed from an auditor whose verdict is contradicted.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    auditor_slash: Option<Perbill>,
    /// Stake fraction slashed from an auditor who does not attest.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    missed_attestation_slash: Option<Perbill>,
    /// Share of the auditors' stake that settles an audit (at least 1/2).
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    settle_threshold: Option<Perbill>,
    /// Blocks after a commitment whose randomness selects it for audit.
    #[arg(long, value_name = "BLOCKS")]
    selection_delay: Option<u32>,
    /// Blocks after selection by which the trainer must reveal.
    #[arg(long, value_name = "BLOCKS")]
    reveal_window: Option<u32>,
    /// Blocks after selection by which auditors must attest.
    #[arg(long, value_name = "BLOCKS")]
    attest_window: Option<u32>,
    /// Steps each stage may advance per epoch (0: no limit).
    #[arg(long, value_name = "STEPS")]
    steps_per_epoch: Option<u32>,
    /// Credentials minted to the owners per epoch.
    #[arg(long, value_name = "N")]
    credentials_per_epoch: Option<u128>,
    /// Share of all active stake whose ayes halt the run.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    halt_threshold: Option<Perbill>,
    /// Share of all active stake whose ayes resume the run or change its parameters.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    resume_threshold: Option<Perbill>,
    /// Most stage slots of the run one account may hold (unextractability cap).
    #[arg(long, value_name = "N")]
    max_stages_per_account: Option<StageIndex>,
    /// Auditors assigned per stage.
    #[arg(long, value_name = "N")]
    auditors_per_stage: Option<u16>,
    /// Most stages of the run one validator audits.
    #[arg(long, value_name = "N")]
    max_stages_per_auditor: Option<StageIndex>,
    /// Largest relative L2 error per tensor in recomputation.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    tolerance_rel_l2: Option<Perbill>,
    /// Largest element error in recomputation, as a fraction of the tensor's largest value.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    tolerance_max_abs_rel: Option<Perbill>,
    /// Largest error of a weight update relative to the update's norm.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    tolerance_update_rel_l2: Option<Perbill>,
    /// Units of a plain credited step.
    #[arg(long, value_name = "UNITS")]
    base_units: Option<u64>,
    /// Extra fraction for the earliest step.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    early_bonus: Option<Perbill>,
    /// Steps over which the early bonus decays to zero.
    #[arg(long, value_name = "STEPS")]
    early_horizon: Option<u64>,
}

impl ParamArgs {
    /// `base` (or the `--params` file), with the flags applied.
    fn apply(&self, base: runs::RunParams) -> Result<runs::RunParams> {
        let mut p = match &self.params {
            Some(src) => serde_json::from_slice(&read_bytes(src)?)
                .with_context(|| format!("{src}: not valid run parameters JSON"))?,
            None => base,
        };
        macro_rules! set {
            ($($field:ident => $($path:ident).+),* $(,)?) => {
                $(if let Some(v) = self.$field { p.$($path).+ = v; })*
            };
        }
        set! {
            audit_probability => audit_probability,
            trainer_slash => trainer_slash,
            auditor_slash => auditor_slash,
            missed_attestation_slash => missed_attestation_slash,
            settle_threshold => settle_threshold,
            selection_delay => selection_delay,
            reveal_window => reveal_window,
            attest_window => attest_window,
            steps_per_epoch => steps_per_epoch,
            credentials_per_epoch => credentials_per_epoch,
            halt_threshold => halt_threshold,
            resume_threshold => resume_threshold,
            max_stages_per_account => max_stages_per_account,
            auditors_per_stage => auditors_per_stage,
            max_stages_per_auditor => max_stages_per_auditor,
            tolerance_rel_l2 => tolerance.rel_l2,
            tolerance_max_abs_rel => tolerance.max_abs_rel,
            tolerance_update_rel_l2 => tolerance.update_rel_l2,
            base_units => risk.base_units,
            early_bonus => risk.early_bonus,
            early_horizon => risk.early_horizon,
        }
        Ok(p)
    }
}

/// `weft run register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    tx: TxArgs,
    /// The model configuration: a JSON file, or inline JSON.
    #[arg(long, value_name = "FILE-or-JSON")]
    config: String,
    /// Pipeline stages.
    #[arg(long)]
    stages: StageIndex,
    /// Replicas per stage.
    #[arg(long, default_value_t = 1)]
    replicas: u16,
    /// The dataset manifest's blake3 hash.
    #[arg(long, value_name = "0xHASH")]
    dataset_hash: Hash,
    /// Hyper-parameters: a JSON file, or inline JSON (`micro_batch_size`, `lr` and
    /// `total_steps` are required).
    #[arg(long, value_name = "FILE-or-JSON")]
    hyper_params: String,
    /// Steps until the run finishes (0: the schedule's `total_steps`).
    #[arg(long, default_value_t = 0)]
    max_steps: u64,
    /// The designer's bond in WEFT (reserved until the run finishes).
    #[arg(long, value_name = "WEFT", default_value = "100", value_parser = parse_weft)]
    bond: Balance,
    #[command(flatten)]
    params: ParamArgs,
}

/// `weft run …`.
#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Register a training run (as its model designer, with a bond).
    Register(Box<RegisterArgs>),
    /// Show a run: specification, parameters and status.
    Show {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        at: AtArgs,
    },
    /// List every run.
    List(AtArgs),
    /// Show who trains and who audits each stage of a run.
    Assignments {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Join a run as a trainer candidate (assigned at the next epoch boundary).
    Join {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        tx: TxArgs,
    },
    /// Leave a run (slots are released at the next epoch boundary).
    Leave {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        tx: TxArgs,
    },
}

/// An auditor's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerdictArg {
    /// Recomputation matched within tolerance.
    Pass,
    /// It did not (or nothing was revealed).
    Fail,
}

/// Why an auditor fails a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReasonArg {
    /// Recomputation outside tolerance, or the reveal does not match the roots.
    Mismatch,
    /// Nothing revealed by the reveal deadline.
    NoReveal,
    /// Revealed after the reveal deadline.
    Late,
}

/// `weft work commit`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("root-source").required(true).args(["roots", "roots_from"])))]
pub struct CommitArgs {
    #[command(flatten)]
    tx: TxArgs,
    /// The run id.
    #[arg(long)]
    run: RunId,
    /// The stage; default: the one slot the signer holds in the run.
    #[arg(long)]
    stage: Option<StageIndex>,
    /// The replica; default: the one slot the signer holds in the run.
    #[arg(long)]
    replica: Option<Replica>,
    /// The step; default: the slot's next step.
    #[arg(long)]
    step: Option<Step>,
    /// The step's Merkle roots: a JSON file or inline JSON with weightsBefore, inputs,
    /// outputs, outputGrads, inputGrads, weightsAfter, optimizerBefore, optimizerAfter.
    #[arg(long, value_name = "FILE-or-JSON")]
    roots: Option<String>,
    /// Derive every root from this text and the slot and step (tests and debugging).
    #[arg(long, value_name = "TEXT")]
    roots_from: Option<String>,
    /// The step's loss (last stage only), e.g. 2.75 (stored × 10⁶).
    #[arg(long, value_parser = parse_loss)]
    loss: Option<u64>,
}

/// `weft work …`.
#[derive(Debug, Subcommand)]
pub enum WorkCommand {
    /// Commit the Merkle roots of one step of a slot (what the trainer does after each step).
    Commit(Box<CommitArgs>),
    /// Attest an audit as one of its auditors, signed with the validator's BLS key.
    Attest {
        #[command(flatten)]
        tx: TxArgs,
        /// The audit id (= the commitment id).
        #[arg(long)]
        audit: CommitmentId,
        /// pass or fail.
        #[arg(long, value_enum)]
        verdict: VerdictArg,
        /// Why it fails (default with fail: mismatch).
        #[arg(long, value_enum)]
        reason: Option<ReasonArg>,
        /// BLS seed (0x hex or text); default: derived from the --from secret URI.
        #[arg(long, value_name = "SEED")]
        bls_seed: Option<String>,
    },
    /// List the audits of a run, newest first.
    Audits {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Show one audit.
    Audit {
        /// The audit id.
        id: CommitmentId,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Show the commitment of one step of one slot.
    Commitment {
        /// The run id.
        #[arg(long)]
        run: RunId,
        /// The stage.
        #[arg(long)]
        stage: StageIndex,
        /// The replica.
        #[arg(long, default_value_t = 0)]
        replica: Replica,
        /// The step.
        #[arg(long)]
        step: Step,
        #[command(flatten)]
        at: AtArgs,
    },
}

/// `weft ownership …`.
#[derive(Debug, Subcommand)]
pub enum OwnershipCommand {
    /// Show a run's owners: units, shares (summing to exactly 100%) and credentials.
    Show {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Transfer ownership units of a run.
    Transfer {
        #[command(flatten)]
        tx: TxArgs,
        /// The run id.
        #[arg(long)]
        run: RunId,
        /// The recipient.
        #[arg(long, value_name = "ADDRESS-or-SURI", value_parser = parse_account)]
        to: AccountId,
        /// Units to transfer.
        #[arg(long)]
        units: u128,
    },
}

/// `weft credentials …`.
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Show an account's credentials (and units) in one run or every run.
    Show {
        /// An SS58 address, a 0x public key or a secret URI.
        #[arg(value_name = "ADDRESS-or-SURI", value_parser = parse_account)]
        account: AccountId,
        /// Only this run.
        #[arg(long)]
        run: Option<RunId>,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Transfer credentials of a run.
    Transfer {
        #[command(flatten)]
        tx: TxArgs,
        /// The run id.
        #[arg(long)]
        run: RunId,
        /// The recipient.
        #[arg(long, value_name = "ADDRESS-or-SURI", value_parser = parse_account)]
        to: AccountId,
        /// How many credentials.
        #[arg(long)]
        amount: u128,
    },
    /// Redeem credentials for an inference request: burnt now, re-issued to the owners at
    /// the next epoch boundary.
    Redeem {
        #[command(flatten)]
        tx: TxArgs,
        /// The run id.
        #[arg(long)]
        run: RunId,
        /// How many credentials.
        #[arg(long, default_value_t = 1)]
        amount: u128,
        /// The inference request this pays for (default: a fresh hash).
        #[arg(long, value_name = "0xHASH")]
        request: Option<Hash>,
    },
}

/// `weft gov propose …`.
#[derive(Debug, Subcommand)]
pub enum ProposeCommand {
    /// Halt a run (training and inference stop).
    Halt {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        tx: TxArgs,
    },
    /// Resume a halted run.
    Resume {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        tx: TxArgs,
    },
    /// Change a run's parameters (unchanged ones keep their current values).
    SetParams {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        tx: TxArgs,
        #[command(flatten)]
        params: Box<ParamArgs>,
    },
    /// Cancel a deferred slash before it applies.
    CancelSlash {
        /// The slash id (see `weft gov slashes`).
        slash: SlashId,
        #[command(flatten)]
        tx: TxArgs,
    },
}

/// A vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VoteArg {
    /// For.
    Aye,
    /// Against.
    Nay,
}

/// `weft gov …`.
#[derive(Debug, Subcommand)]
pub enum GovCommand {
    /// Open a stake-weighted proposal (reserves the proposal deposit).
    Propose {
        #[command(subcommand)]
        action: ProposeCommand,
    },
    /// Vote on a proposal (again, to change the vote).
    Vote {
        /// The proposal id.
        proposal: ProposalId,
        /// aye or nay.
        #[arg(value_enum)]
        vote: VoteArg,
        #[command(flatten)]
        tx: TxArgs,
    },
    /// As a validator of the current set, call for a run's immediate halt.
    EmergencyHalt {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        tx: TxArgs,
    },
    /// List proposals with their votes and tallies, newest first.
    Proposals(AtArgs),
    /// List deferred slashes.
    Slashes(AtArgs),
}

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

/// `weft stake …`.
pub async fn stake(url: &str, json: bool, command: StakeCommand) -> Result<()> {
    use staking::Call;
    let (tx, call, what) = match command {
        StakeCommand::Bond(a) => (
            a.tx,
            Call::Bond { value: a.amount },
            format!("staking.bond {}", weft(a.amount)),
        ),
        StakeCommand::BondExtra(a) => (
            a.tx,
            Call::BondExtra { value: a.amount },
            format!("staking.bondExtra {}", weft(a.amount)),
        ),
        StakeCommand::Unbond(a) => (
            a.tx,
            Call::Unbond { value: a.amount },
            format!("staking.unbond {}", weft(a.amount)),
        ),
        StakeCommand::Rebond(a) => (
            a.tx,
            Call::Rebond { value: a.amount },
            format!("staking.rebond {}", weft(a.amount)),
        ),
        StakeCommand::Withdraw(a) => (
            a.tx,
            Call::WithdrawUnbonded,
            "staking.withdrawUnbonded".to_string(),
        ),
        StakeCommand::Chill(a) => (a.tx, Call::Chill, "staking.chill".to_string()),
        StakeCommand::Validate { tx, bls_seed } => {
            let sk = bls_secret(&tx.from.suri, bls_seed.as_deref())?;
            let key = BlsKeyOut::of(&sk, tx.from.pair.account_id())?;
            let what = format!("staking.validate blsKey={}", key.bls_key);
            let call = Call::Validate {
                bls_key: key.bls_key,
                proof_of_possession: key.proof_of_possession,
            };
            (tx, call, what)
        }
        StakeCommand::Train {
            tx,
            peer_id,
            addrs,
            capacity,
        } => {
            if addrs.len() > staking::MAX_ADDRS {
                bail!(
                    "at most {} addresses, got {}",
                    staking::MAX_ADDRS,
                    addrs.len()
                );
            }
            let what = format!(
                "staking.train peerId={} addrs={} capacity={capacity}",
                weft_rpc_api::protocol::peer_id_to_string(&peer_id.0),
                addrs.len()
            );
            let call = Call::Train {
                peer_id: peer_id.0,
                addrs: addrs.into_iter().map(|a| a.0).collect(),
                capacity,
            };
            (tx, call, what)
        }
        StakeCommand::Show { account, at } => {
            let client = connect(url).await?;
            let ledger = client.staking_ledger(account, at.at).await?;
            let Some(l) = ledger else {
                if json {
                    return print_json(&serde_json::Value::Null);
                }
                println!("{account} has no staking ledger (not bonded)");
                return Ok(());
            };
            return show(json, &l, |l| {
                println!("{}", field("Account", l.account));
                println!("{}", field("Active", weft_str(&l.active)));
                println!("{}", field("Total", weft_str(&l.total)));
                for c in &l.unlocking {
                    println!(
                        "{}",
                        field(
                            "Unlocking",
                            format!("{} at #{}", weft_str(&c.value), c.unlock_at)
                        )
                    );
                }
                let mut roles = Vec::new();
                if l.validator {
                    roles.push("validator");
                }
                if l.trainer {
                    roles.push("trainer");
                }
                println!(
                    "{}",
                    field(
                        "Roles",
                        if roles.is_empty() {
                            "none".into()
                        } else {
                            roles.join(", ")
                        }
                    )
                );
                if let Some(k) = &l.bls_key {
                    println!("{}", field("BLS key", k));
                }
                println!("{}", field("Pending slashes", l.pending_slashes));
            });
        }
        StakeCommand::Validators(at) => {
            let v = connect(url).await?.validators(at.at).await?;
            return show(json, &v, |v| {
                println!("{}", field("Epoch", v.epoch));
                println!("{}", field("Active stake", weft_str(&v.active_stake)));
                println!("Active set ({}):", v.active.len());
                for x in &v.active {
                    println!("  {}  {}  bls {}", x.account, weft_str(&x.stake), x.bls_key);
                }
                println!("Candidates ({}):", v.candidates.len());
                for c in &v.candidates {
                    let mark = if c.in_active_set { "active" } else { "waiting" };
                    println!("  {}  {}  {mark}", c.account, weft_str(&c.stake));
                }
            });
        }
        StakeCommand::Trainers { account, at } => {
            let client = connect(url).await?;
            let list = match account {
                Some(a) => match client.trainer(a, at.at).await? {
                    Some(t) => vec![t],
                    None => bail!("{a} is not a registered trainer"),
                },
                None => client.trainers(at.at).await?,
            };
            return show(json, &list, |list| {
                if list.is_empty() {
                    println!("no trainer has joined a run");
                }
                for t in list {
                    println!("{}", field("Trainer", t.account));
                    println!("{}", field("  Peer id", &t.peer_id));
                    println!("{}", field("  Addresses", t.addrs.join(" ")));
                    println!(
                        "{}",
                        field("  Capacity", format!("{} (serving {})", t.capacity, t.load))
                    );
                    println!("{}", field("  Stake", weft_str(&t.stake)));
                    println!("{}", field("  Runs", format!("{:?}", t.runs)));
                }
            });
        }
    };
    submit(url, json, &tx, RuntimeCall::Staking(call), &what).await
}

fn print_run(r: &RunJson) {
    println!("{}", field("Run", r.id));
    println!(
        "{}",
        field(
            "Status",
            format!(
                "{:?}{}",
                r.status,
                if r.paused {
                    " (paused: a stage has no trainer)"
                } else {
                    ""
                }
            )
        )
    );
    println!("{}", field("Accepting work", r.accepting_work));
    println!("{}", field("Designer", r.designer));
    println!("{}", field("Bond", weft_str(&r.bond)));
    println!(
        "{}",
        field(
            "Stages",
            format!("{} × {} replica(s)", r.stages, r.replicas)
        )
    );
    println!(
        "{}",
        field("Model", weft_cli::render::model_spec(&r.model_config))
    );
    println!("{}", field("Config hash", r.config_hash));
    println!("{}", field("Dataset hash", r.dataset_hash));
    println!(
        "{}",
        field(
            "Hyper-params",
            weft_cli::render::hyper_params(&r.hyper_params)
        )
    );
    println!(
        "{}",
        field(
            "Max steps",
            if r.max_steps == 0 {
                format!("{} (the schedule's total_steps)", r.final_steps)
            } else {
                r.final_steps.to_string()
            }
        )
    );
    println!(
        "{}",
        field("Registered at", format!("#{}", r.registered_at))
    );
    println!("{}", field("Epochs trained", r.epochs_trained));
    let p = &r.params;
    println!("{}", field("Audit prob.", perbill(p.audit_probability)));
    println!("{}", field("Trainer slash", perbill(p.trainer_slash)));
    println!("{}", field("Settle threshold", perbill(p.settle_threshold)));
    println!(
        "{}",
        field(
            "Windows",
            format!(
                "selection +{}, reveal +{}, attest +{} blocks",
                p.selection_delay, p.reveal_window, p.attest_window
            )
        )
    );
    println!("{}", field("Creds per epoch", p.credentials_per_epoch));
    println!(
        "{}",
        field(
            "Halt / resume",
            format!(
                "{} / {} of active stake",
                perbill(p.halt_threshold),
                perbill(p.resume_threshold)
            )
        )
    );
    println!(
        "{}",
        field(
            "Caps",
            format!(
                "{} stage(s) per trainer, {} per auditor, {} auditor(s) per stage",
                p.max_stages_per_account, p.max_stages_per_auditor, p.auditors_per_stage
            )
        )
    );
}

fn print_assignments(a: &StageAssignmentsJson) {
    println!("{}", field("Run", a.run_id));
    println!(
        "{}",
        field(
            "Status",
            format!("{:?}{}", a.status, if a.paused { " (paused)" } else { "" })
        )
    );
    println!("{}", field("Epoch", a.epoch));
    for st in &a.stages {
        for slot in &st.replicas {
            let who = match &slot.trainer {
                Some(t) => format!("{t} peer {} {}", opt(&slot.peer_id), slot.addrs.join(" ")),
                None => "EMPTY".to_string(),
            };
            println!(
                "  stage {} replica {}: {who} (next step {})",
                st.stage, slot.replica, slot.next_step
            );
        }
        let auditors: Vec<String> = st.auditors.iter().map(|a| a.to_string()).collect();
        println!(
            "  stage {} auditors: {}",
            st.stage,
            if auditors.is_empty() {
                "none".into()
            } else {
                auditors.join(", ")
            }
        );
    }
    println!("{}", field("Candidates", a.candidates.len()));
    for c in &a.candidates {
        println!("  {c}");
    }
}

/// `weft run …`.
pub async fn run(url: &str, json: bool, command: RunCommand) -> Result<()> {
    match command {
        RunCommand::Register(a) => {
            // Converted to the typed values and checked against the pallet's rules here,
            // so a run that cannot train is refused before a fee is paid.
            let (model_config, hyper_params) = weft_cli::run_spec::run_from_json(
                &read_bytes(&a.config)?,
                &read_bytes(&a.hyper_params)?,
                a.stages,
                a.max_steps,
            )?;
            let params = a.params.apply(runs::RunParams::default())?;
            runs::check_params(&params, a.stages)?;
            let spec = runs::RunSpec {
                model_config,
                stages: a.stages,
                replicas: a.replicas,
                dataset_hash: a.dataset_hash,
                hyper_params,
                max_steps: a.max_steps,
                bond: a.bond,
                params,
            };
            let what = format!(
                "runs.registerRun {} stages × {} replica(s), bond {}",
                a.stages,
                a.replicas,
                weft(a.bond)
            );
            let call = RuntimeCall::Runs(runs::Call::RegisterRun { spec });
            submit_then(url, json, &a.tx, call, &what, |r| {
                id_fact(
                    "runId",
                    find_event(r, |e| match e {
                        RuntimeEvent::Runs(runs::Event::RunRegistered { run, .. }) => Some(*run),
                        _ => None,
                    }),
                )
            })
            .await?;
            Ok(())
        }
        RunCommand::Show { run, at } => {
            let r = connect(url).await?.run(run, at.at).await?;
            show(json, &r, print_run)
        }
        RunCommand::List(at) => {
            let list = connect(url).await?.runs(at.at).await?;
            show(json, &list, |list| {
                if list.is_empty() {
                    println!("no runs");
                }
                for r in list {
                    println!(
                        "run {}: {:?}{} {} stages × {}, designer {}, audit {}",
                        r.id,
                        r.status,
                        if r.paused { " (paused)" } else { "" },
                        r.stages,
                        r.replicas,
                        r.designer,
                        perbill(r.params.audit_probability)
                    );
                }
            })
        }
        RunCommand::Assignments { run, at } => {
            let a = connect(url).await?.stage_assignments(run, at.at).await?;
            show(json, &a, print_assignments)
        }
        RunCommand::Join { run, tx } => {
            let call = RuntimeCall::Stages(stages::Call::JoinRun { run });
            submit(url, json, &tx, call, &format!("stages.joinRun {run}")).await
        }
        RunCommand::Leave { run, tx } => {
            let call = RuntimeCall::Stages(stages::Call::LeaveRun { run });
            submit(url, json, &tx, call, &format!("stages.leaveRun {run}")).await
        }
    }
}

/// Roots derived from `text` and the slot and step: `blake3("weft-cli/roots/v1" ‖ text ‖
/// run ‖ stage ‖ replica ‖ step ‖ name)` per root.
pub fn derived_roots(
    text: &str,
    run: RunId,
    stage: StageIndex,
    replica: Replica,
    step: Step,
) -> work::StepRoots {
    let root = |name: &str| {
        let mut b = b"weft-cli/roots/v1".to_vec();
        b.extend_from_slice(text.as_bytes());
        b.extend_from_slice(&run.to_le_bytes());
        b.extend_from_slice(&stage.to_le_bytes());
        b.extend_from_slice(&replica.to_le_bytes());
        b.extend_from_slice(&step.to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        blake3_256(&b)
    };
    work::StepRoots {
        weights_before: root("weightsBefore"),
        inputs: root("inputs"),
        outputs: root("outputs"),
        output_grads: root("outputGrads"),
        input_grads: root("inputGrads"),
        weights_after: root("weightsAfter"),
        optimizer_before: root("optimizerBefore"),
        optimizer_after: root("optimizerAfter"),
    }
}

/// The signer's slot and its next step, from `weft_stageAssignments`, filling in what the
/// user did not give.
async fn resolve_slot(client: &Client, a: &CommitArgs) -> Result<(StageIndex, Replica, Step)> {
    let me = a.tx.from.pair.account_id();
    let asg = client.stage_assignments(a.run, None).await?;
    let mine: Vec<(StageIndex, Replica, Step)> = asg
        .stages
        .iter()
        .flat_map(|st| st.replicas.iter().map(move |r| (st.stage, r)))
        .filter(|(st, r)| {
            a.stage.is_none_or(|s| s == *st) && a.replica.is_none_or(|x| x == r.replica)
        })
        .filter(|(_, r)| r.trainer == Some(me) || (a.stage.is_some() && a.replica.is_some()))
        .map(|(st, r)| (st, r.replica, r.next_step))
        .collect();
    match mine.as_slice() {
        [(st, rep, next)] => Ok((*st, *rep, a.step.unwrap_or(*next))),
        [] if a.stage.is_some() && a.replica.is_some() => bail!(
            "run {} has no stage {} replica {}",
            a.run,
            a.stage.unwrap_or_default(),
            a.replica.unwrap_or_default()
        ),
        [] => bail!("{me} holds no slot of run {} (see `weft run assignments {}`); give --stage and --replica", a.run, a.run),
        _ => bail!("{me} holds several slots of run {}: give --stage and --replica", a.run),
    }
}

fn print_audit(a: &AuditJson) {
    let status = match (a.status, a.verdict) {
        (AuditStatus::Settled, Some(v)) => format!("settled: {v:?}"),
        (s, _) => format!("{s:?}"),
    };
    println!("{}", field("Audit", a.id));
    println!(
        "{}",
        field(
            "Step",
            format!(
                "run {} stage {} replica {} step {}",
                a.run_id, a.stage, a.replica, a.step
            )
        )
    );
    println!("{}", field("Trainer", a.trainer));
    println!("{}", field("Status", status));
    println!("{}", field("Opened at", format!("#{}", a.opened_at)));
    println!("{}", field("Reveal by", format!("#{}", a.reveal_deadline)));
    println!("{}", field("Attest by", format!("#{}", a.attest_deadline)));
    println!(
        "{}",
        field("Threshold", ppb_to_percent(u128::from(a.threshold)))
    );
    for s in &a.auditors {
        let att = a.attestations.iter().find(|x| x.auditor == s.account);
        let said = match att {
            Some(x) => match x.reason {
                Some(r) => format!("{:?} ({r:?})", x.verdict),
                None => format!("{:?}", x.verdict),
            },
            None => "not yet".to_string(),
        };
        println!("  auditor {} {}: {said}", s.account, weft_str(&s.stake));
    }
}

/// `weft work …`.
pub async fn work(url: &str, json: bool, command: WorkCommand) -> Result<()> {
    match command {
        WorkCommand::Commit(a) => {
            let client = connect(url).await?;
            let (stage, replica, step) = resolve_slot(&client, &a).await?;
            let roots = match (&a.roots, &a.roots_from) {
                (Some(src), _) => serde_json::from_slice(&read_bytes(src)?)
                    .with_context(|| format!("{src}: not a JSON object of step roots"))?,
                (None, Some(text)) => derived_roots(text, a.run, stage, replica, step),
                (None, None) => bail!("give --roots or --roots-from"),
            };
            let what = format!(
                "work.commitStep run {} stage {stage} replica {replica} step {step}{}",
                a.run,
                a.loss
                    .map(|l| format!(" loss {}.{:06}", l / 1_000_000, l % 1_000_000))
                    .unwrap_or_default()
            );
            let call = RuntimeCall::Work(work::Call::CommitStep {
                run: a.run,
                stage,
                replica,
                step,
                roots,
                loss: a.loss,
            });
            drop(client);
            submit_then(url, json, &a.tx, call, &what, |r| {
                id_fact(
                    "commitmentId",
                    find_event(r, |e| match e {
                        RuntimeEvent::Work(work::Event::StepCommitted { id, .. }) => Some(*id),
                        _ => None,
                    }),
                )
            })
            .await?;
            Ok(())
        }
        WorkCommand::Attest {
            tx,
            audit,
            verdict,
            reason,
            bls_seed,
        } => {
            let (verdict, reason) = match (verdict, reason) {
                (VerdictArg::Pass, None) => (work::Verdict::Pass, None),
                (VerdictArg::Pass, Some(_)) => bail!("--reason goes with --verdict fail only"),
                (VerdictArg::Fail, r) => (
                    work::Verdict::Fail,
                    Some(match r.unwrap_or(ReasonArg::Mismatch) {
                        ReasonArg::Mismatch => work::FailReason::Mismatch,
                        ReasonArg::NoReveal => work::FailReason::NoReveal,
                        ReasonArg::Late => work::FailReason::Late,
                    }),
                ),
            };
            let sk = bls_secret(&tx.from.suri, bls_seed.as_deref())?;
            let signature = sk
                .sign(&work::attestation_message(audit, verdict))
                .context("signing the attestation")?
                .to_bytes();
            let what = format!(
                "work.attest audit {audit} {verdict:?}{}",
                reason.map(|r| format!(" ({r:?})")).unwrap_or_default()
            );
            let call = RuntimeCall::Work(work::Call::Attest {
                audit,
                verdict,
                reason,
                signature,
            });
            submit_then(url, json, &tx, call, &what, |r| {
                id_fact(
                    "settled",
                    find_event(r, |e| match e {
                        RuntimeEvent::Work(work::Event::AuditSettled {
                            audit: id,
                            verdict,
                            ..
                        }) if *id == audit => Some(format!("{verdict:?}")),
                        _ => None,
                    }),
                )
            })
            .await?;
            Ok(())
        }
        WorkCommand::Audits { run, at } => {
            let list = connect(url).await?.audits(run, at.at).await?;
            show(json, &list, |list| {
                if list.is_empty() {
                    println!("run {run} has no audits");
                }
                for a in list {
                    let status = match (a.status, a.verdict) {
                        (AuditStatus::Settled, Some(v)) => format!("settled {v:?}"),
                        (s, _) => format!("{s:?}"),
                    };
                    println!(
                        "audit {}: stage {} replica {} step {} trainer {} — {status}, {}/{} attested, attest by #{}",
                        a.id,
                        a.stage,
                        a.replica,
                        a.step,
                        a.trainer,
                        a.attestations.len(),
                        a.auditors.len(),
                        a.attest_deadline
                    );
                }
            })
        }
        WorkCommand::Audit { id, at } => {
            let a = connect(url).await?.audit(id, at.at).await?;
            show(json, &a, print_audit)
        }
        WorkCommand::Commitment {
            run,
            stage,
            replica,
            step,
            at,
        } => {
            let c = connect(url)
                .await?
                .commitment(run, stage, replica, step, at.at)
                .await?;
            let Some(c) = c else {
                if json {
                    return print_json(&serde_json::Value::Null);
                }
                println!(
                    "run {run} stage {stage} replica {replica} has no commitment of step {step}"
                );
                return Ok(());
            };
            show(json, &c, |c| {
                println!("{}", field("Commitment", c.id));
                println!(
                    "{}",
                    field(
                        "Step",
                        format!(
                            "run {} stage {} replica {} step {}",
                            c.run_id, c.stage, c.replica, c.step
                        )
                    )
                );
                println!("{}", field("Trainer", c.trainer));
                println!("{}", field("Block", format!("#{}", c.block)));
                println!("{}", field("Status", format!("{:?}", c.status)));
                println!(
                    "{}",
                    field(
                        "Loss",
                        c.loss
                            .map(|l| format!("{}.{:06}", l / 1_000_000, l % 1_000_000))
                            .unwrap_or_else(|| "-".into())
                    )
                );
                println!("{}", field("Weights before", c.roots.weights_before));
                println!("{}", field("Weights after", c.roots.weights_after));
            })
        }
    }
}

/// `weft ownership …`.
pub async fn ownership(url: &str, json: bool, command: OwnershipCommand) -> Result<()> {
    match command {
        OwnershipCommand::Show { run, at } => {
            let o = connect(url).await?.ownership(run, at.at).await?;
            show(json, &o, |o| {
                println!("{}", field("Run", o.run_id));
                println!("{}", field("Total units", &o.total_units));
                println!(
                    "{}",
                    field(
                        "Credentials",
                        format!(
                            "{} issued, {} waiting for re-issue",
                            o.credential_issuance, o.reissue_pool
                        )
                    )
                );
                if o.owners.is_empty() {
                    println!("no owners yet (no credited work)");
                }
                for x in &o.owners {
                    let pct = x
                        .share
                        .parse::<u128>()
                        .map(ppb_to_percent)
                        .unwrap_or_else(|_| x.share.clone());
                    println!(
                        "  {}  {pct:>12}  {} units  {} credentials",
                        x.account, x.units, x.credentials
                    );
                }
            })
        }
        OwnershipCommand::Transfer { tx, run, to, units } => {
            let call = RuntimeCall::Ownership(ownership::Call::TransferUnits {
                run,
                dest: to,
                amount: units,
            });
            submit(
                url,
                json,
                &tx,
                call,
                &format!("ownership.transferUnits run {run}: {units} units to {to}"),
            )
            .await
        }
    }
}

/// `weft credentials …`.
pub async fn credentials(url: &str, json: bool, command: CredentialsCommand) -> Result<()> {
    match command {
        CredentialsCommand::Show { account, run, at } => {
            let c = connect(url).await?.credentials(account, run, at.at).await?;
            show(json, &c, |c| {
                println!("{}", field("Account", c.account));
                if c.runs.is_empty() {
                    println!("no credentials or units in any run");
                }
                for r in &c.runs {
                    println!(
                        "  run {}: {} credentials, {} units",
                        r.run_id, r.credentials, r.units
                    );
                }
            })
        }
        CredentialsCommand::Transfer {
            tx,
            run,
            to,
            amount,
        } => {
            let call = RuntimeCall::Ownership(ownership::Call::TransferCredentials {
                run,
                dest: to,
                amount,
            });
            submit(
                url,
                json,
                &tx,
                call,
                &format!("ownership.transferCredentials run {run}: {amount} to {to}"),
            )
            .await
        }
        CredentialsCommand::Redeem {
            tx,
            run,
            amount,
            request,
        } => {
            let request = request.unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                let mut b = b"weft-cli/request/v1".to_vec();
                b.extend_from_slice(&tx.from.pair.account_id().0);
                b.extend_from_slice(&nanos.to_le_bytes());
                blake3_256(&b)
            });
            let call = RuntimeCall::Ownership(ownership::Call::RedeemCredential {
                run,
                amount,
                request,
            });
            submit_then(
                url,
                json,
                &tx,
                call,
                &format!("ownership.redeemCredential run {run}: {amount}"),
                |_| vec![("request", serde_json::Value::String(request.to_hex()))],
            )
            .await?;
            Ok(())
        }
    }
}

/// `weft gov …`.
pub async fn gov(url: &str, json: bool, command: GovCommand) -> Result<()> {
    match command {
        GovCommand::Propose { action } => {
            let (tx, action, what) = match action {
                ProposeCommand::Halt { run, tx } => (
                    tx,
                    governance::Action::HaltRun { run },
                    format!("halt run {run}"),
                ),
                ProposeCommand::Resume { run, tx } => (
                    tx,
                    governance::Action::ResumeRun { run },
                    format!("resume run {run}"),
                ),
                ProposeCommand::SetParams { run, tx, params } => {
                    let current = connect(url).await?.run(run, None).await?.params;
                    let params = params.apply(current)?;
                    (
                        tx,
                        governance::Action::SetRunParams { run, params },
                        format!("set the parameters of run {run}"),
                    )
                }
                ProposeCommand::CancelSlash { slash, tx } => (
                    tx,
                    governance::Action::CancelSlash { slash },
                    format!("cancel slash {slash}"),
                ),
            };
            let call = RuntimeCall::Governance(governance::Call::Propose { action });
            submit_then(
                url,
                json,
                &tx,
                call,
                &format!("governance.propose: {what}"),
                |r| {
                    id_fact(
                        "proposalId",
                        find_event(r, |e| match e {
                            RuntimeEvent::Governance(governance::Event::Proposed {
                                proposal,
                                ..
                            }) => Some(*proposal),
                            _ => None,
                        }),
                    )
                },
            )
            .await?;
            Ok(())
        }
        GovCommand::Vote { proposal, vote, tx } => {
            let aye = vote == VoteArg::Aye;
            let call = RuntimeCall::Governance(governance::Call::Vote { proposal, aye });
            let what = format!(
                "governance.vote {} on proposal {proposal}",
                if aye { "aye" } else { "nay" }
            );
            submit_then(url, json, &tx, call, &what, |r| {
                id_fact(
                    "passedEnactAt",
                    find_event(r, |e| match e {
                        RuntimeEvent::Governance(governance::Event::Passed {
                            proposal: p,
                            enact_at,
                        }) if *p == proposal => Some(*enact_at),
                        _ => None,
                    }),
                )
            })
            .await?;
            Ok(())
        }
        GovCommand::EmergencyHalt { run, tx } => {
            let call = RuntimeCall::Governance(governance::Call::EmergencyHalt { run });
            submit_then(
                url,
                json,
                &tx,
                call,
                &format!("governance.emergencyHalt run {run}"),
                |r| {
                    id_fact(
                        "halted",
                        find_event(r, |e| match e {
                            RuntimeEvent::Governance(governance::Event::EmergencyHalted {
                                run: x,
                            }) if *x == run => Some(true),
                            _ => None,
                        }),
                    )
                },
            )
            .await?;
            Ok(())
        }
        GovCommand::Proposals(at) => {
            let list = connect(url).await?.proposals(at.at).await?;
            show(json, &list, |list| {
                if list.is_empty() {
                    println!("no proposals");
                }
                for p in list {
                    let threshold = p
                        .threshold
                        .map(|t| ppb_to_percent(u128::from(t)))
                        .unwrap_or_else(|| "-".into());
                    println!(
                        "proposal {}: {:?} by {} — {:?}; ayes {} of {} (needs > {threshold}), voting ends #{}",
                        p.id,
                        p.action,
                        p.proposer,
                        p.status,
                        weft_str(&p.ayes),
                        weft_str(&p.total_stake),
                        p.end
                    );
                }
            })
        }
        GovCommand::Slashes(at) => {
            let list = connect(url).await?.slashes(at.at).await?;
            show(json, &list, |list| {
                if list.is_empty() {
                    println!("no deferred slashes");
                }
                for x in list {
                    println!(
                        "slash {}: {} pays {} for {:?} at #{} (reporter {})",
                        x.id,
                        x.offender,
                        weft_str(&x.amount),
                        x.kind,
                        x.apply_at,
                        opt(&x.reporter)
                    );
                }
            })
        }
    }
}

/// `weft epoch`.
pub async fn epoch(url: &str, json: bool, at: AtArgs) -> Result<()> {
    let e = connect(url).await?.epoch(at.at).await?;
    show(json, &e, |e| {
        println!("{}", field("Epoch", e.epoch));
        println!("{}", field("Block", format!("#{}", e.block_number)));
        println!(
            "{}",
            field(
                "Epoch length",
                format!(
                    "{} blocks (#{} – #{})",
                    e.epoch_length,
                    e.epoch_start,
                    e.next_epoch_at.saturating_sub(1)
                )
            )
        );
        println!(
            "{}",
            field("Next epoch at", format!("#{}", e.next_epoch_at))
        );
        println!(
            "{}",
            field("Bonding period", format!("{} blocks", e.bonding_period))
        );
        println!(
            "{}",
            field("Slash deferral", format!("{} blocks", e.slash_defer))
        );
        println!("{}", field("Validators", e.validators));
        println!("{}", field("Active stake", weft_str(&e.total_active_stake)));
        println!("{}", field("Total bonded", weft_str(&e.total_bonded)));
    })
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

    #[test]
    fn param_overrides() {
        let a = ParamArgs {
            audit_probability: Some(Perbill::ONE),
            attest_window: Some(60),
            tolerance_rel_l2: Some(Perbill::from_percent(2)),
            early_horizon: Some(5),
            ..Default::default()
        };
        let p = a.apply(runs::RunParams::default()).unwrap();
        assert_eq!(p.audit_probability, Perbill::ONE);
        assert_eq!(p.attest_window, 60);
        assert_eq!(p.tolerance.rel_l2, Perbill::from_percent(2));
        assert_eq!(p.risk.early_horizon, 5);
        assert_eq!(p.reveal_window, runs::RunParams::default().reveal_window);
        // A full parameter set as JSON, then a flag on top.
        let json = serde_json::to_string(&runs::RunParams::default()).unwrap();
        let a = ParamArgs {
            params: Some(json),
            selection_delay: Some(3),
            ..Default::default()
        };
        assert_eq!(a.apply(p).unwrap().selection_delay, 3);
        let a = ParamArgs {
            params: Some("{\"nope\": 1}".into()),
            ..Default::default()
        };
        assert!(a.apply(runs::RunParams::default()).is_err());
    }

    #[test]
    fn derived_roots_differ_per_step_and_text() {
        let a = derived_roots("honest", 0, 1, 0, 0);
        assert_eq!(a, derived_roots("honest", 0, 1, 0, 0));
        assert_ne!(a, derived_roots("honest", 0, 1, 0, 1));
        assert_ne!(a, derived_roots("cheat", 0, 1, 0, 0));
        assert_ne!(a.inputs, a.outputs);
    }
}
