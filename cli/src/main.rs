//! `weft`, the command-line client of a Weft node.
//!
//! ```text
//! weft key generate                       a new key pair and its secret phrase
//! weft key inspect <SURI-or-address>      what a key or address is
//! weft transfer --from //Alice --to <ADDRESS-or-SURI> --amount 1.5
//! weft remark --from //Alice "some text"
//! weft account <ADDRESS-or-SURI> [--at 0xBLOCKHASH]
//! weft block [best|finalized|<number>|<0xhash>]
//! weft key bls <SURI> [--bls-seed 0xHEX]  a validator's BLS key (derived from the SURI)
//!
//! weft stake bond|bond-extra|unbond|rebond --from SURI --amount WEFT
//! weft stake withdraw|chill --from SURI
//! weft stake validate --from SURI [--bls-seed 0xHEX]
//! weft stake train --from SURI --peer-id 12D3KooW… --addr /ip4/…/tcp/4001 --capacity 1
//! weft stake show <ACCOUNT> | validators | trainers
//! weft run register --from SURI --config model.json --stages 4 --dataset-hash 0x… [params]
//! weft run show N | list | assignments N | join N --from SURI | leave N --from SURI
//! weft work commit --from SURI --run N [--stage S --replica R --step K] --roots-from TEXT [--loss 2.5]
//! weft work attest --from SURI --audit ID --verdict pass|fail [--reason mismatch|no-reveal|late]
//! weft work audits N | audit ID | commitment --run N --stage S --replica R --step K
//! weft ownership show N | transfer --from SURI --run N --to ACCOUNT --units U
//! weft credentials show ACCOUNT [--run N] | transfer … | redeem --from SURI --run N --amount 1
//! weft gov propose halt|resume N | set-params N [params] | cancel-slash ID  --from SURI
//! weft gov vote ID aye|nay --from SURI | emergency-halt N --from SURI | proposals | slashes
//! weft epoch
//! weft infer --run N --from SURI (--prompt TEXT | --prompt-tokens 1,2,3) --max-tokens M
//!            [--temperature T] [--top-p P] [--top-k K] [--stop S]... [--seed N] [--no-stream]
//! weft gateway --key SURI --run N [--listen 127.0.0.1:8080] [--model-name NAME]
//! ```
//!
//! Global flags: `--url` (default `ws://127.0.0.1:9944`, or `$WEFT_URL`) and `--json` for
//! machine-readable output. Errors go to stderr and make the exit status non-zero; a node's
//! refusal of an extrinsic is printed with the node's own message.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;
mod gateway_command;
mod infer_command;
mod protocol;

use weft_cli::args::{
    bls_secret, parse_account, parse_key_input, parse_signer_suri, parse_weft, BlockSelector,
    KeyInput, Signer,
};
use weft_cli::render::{self, field, weft, weft_str};
use weft_cli::{Client, Receipt, Stage, SubmitOptions, WaitFor, DEFAULT_MORTALITY};
use weft_primitives::crypto::KeyInfo;
use weft_primitives::{AccountId, Balance, BlockNumber, Digest, Hash, Keypair, Moment};
use weft_runtime::{balances, system, EventRecord, RuntimeCall};

/// The Weft command-line client.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about, propagate_version = true)]
struct Cli {
    /// WebSocket URL of the node's JSON-RPC server.
    #[arg(
        long,
        global = true,
        env = "WEFT_URL",
        default_value = "ws://127.0.0.1:9944"
    )]
    url: String,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Key management (no node needed).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Transfer WEFT to another account.
    Transfer(TransferArgs),
    /// Record a remark on chain (its hash goes into an event).
    Remark(RemarkArgs),
    /// Show an account's balances and nonce.
    Account(AccountArgs),
    /// Show a block's header, extrinsic count and events.
    Block(BlockArgs),
    /// Staking: bond and unbond, become a validator or a trainer, show ledgers.
    Stake {
        #[command(subcommand)]
        command: protocol::StakeCommand,
    },
    /// Training runs: register, show, list, join, leave, stage assignments.
    Run {
        #[command(subcommand)]
        command: protocol::RunCommand,
    },
    /// Step commitments and audits (attestations by validators).
    Work {
        #[command(subcommand)]
        command: protocol::WorkCommand,
    },
    /// Ownership of a run's model: units and shares.
    Ownership {
        #[command(subcommand)]
        command: protocol::OwnershipCommand,
    },
    /// Credentials of a run: show, transfer, redeem for inference.
    Credentials {
        #[command(subcommand)]
        command: protocol::CredentialsCommand,
    },
    /// Governance: proposals, votes, emergency halts, deferred slashes.
    Gov {
        #[command(subcommand)]
        command: protocol::GovCommand,
    },
    /// The current epoch, its boundaries and the staking timing.
    Epoch(protocol::AtArgs),
    /// One completion from a run's model, paid with the signer's credentials.
    Infer(infer_command::InferArgs),
    /// Serve a run's model over an OpenAI-compatible HTTP API, paying with --key.
    Gateway(gateway_command::GatewayArgs),
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Generate a new key pair; prints its secret phrase.
    Generate,
    /// Show the public key and address of a secret URI (//Alice, a mnemonic) or an address.
    Inspect {
        /// A secret URI, an SS58 address or a 0x public key.
        #[arg(value_name = "SURI-or-ADDRESS")]
        input: String,
    },
    /// Show the BN254 BLS public key and proof of possession a validator registers
    /// (`weft stake validate` derives the same key from the same inputs).
    Bls {
        /// The validator's secret URI.
        #[arg(value_name = "SURI")]
        suri: String,
        /// A BLS seed (0x hex or text) instead of deriving the key from the SURI.
        #[arg(long, value_name = "SEED")]
        bls_seed: Option<String>,
    },
}

/// When to stop following a submitted extrinsic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WaitArg {
    /// Once the node accepted it into its pool.
    None,
    /// Once it is in a block.
    InBlock,
    /// Once its block is final.
    Finalized,
}

impl From<WaitArg> for WaitFor {
    fn from(w: WaitArg) -> Self {
        match w {
            WaitArg::None => WaitFor::None,
            WaitArg::InBlock => WaitFor::InBlock,
            WaitArg::Finalized => WaitFor::Finalized,
        }
    }
}

/// Options of every command that submits an extrinsic.
#[derive(Debug, Args)]
struct TxArgs {
    /// The signer and fee payer: a secret URI such as //Alice or a mnemonic.
    #[arg(long, value_name = "SURI", value_parser = parse_signer_suri)]
    from: Signer,
    /// Tip for the block author, in WEFT (raises priority).
    #[arg(long, value_name = "WEFT", default_value = "0", value_parser = parse_weft)]
    tip: Balance,
    /// Make the extrinsic valid forever instead of for --mortality blocks.
    #[arg(long, conflicts_with = "mortality")]
    immortal: bool,
    /// How many blocks after the current best block the extrinsic stays valid.
    #[arg(long, value_name = "BLOCKS", default_value_t = DEFAULT_MORTALITY)]
    mortality: u64,
    /// How far to follow the extrinsic before printing the result.
    #[arg(long, value_enum, default_value_t = WaitArg::Finalized)]
    wait: WaitArg,
    /// Give up following after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    timeout: u64,
}

impl TxArgs {
    fn options(&self) -> SubmitOptions {
        SubmitOptions {
            tip: self.tip,
            mortality: (!self.immortal).then_some(self.mortality),
            wait: self.wait.into(),
            nonce: None,
            timeout: Duration::from_secs(self.timeout),
        }
    }
}

#[derive(Debug, Args)]
struct TransferArgs {
    #[command(flatten)]
    tx: TxArgs,
    /// The recipient: an SS58 address, a 0x public key or a secret URI.
    #[arg(long, value_name = "ADDRESS-or-SURI", value_parser = parse_account)]
    to: AccountId,
    /// The amount in WEFT, e.g. 1.5.
    #[arg(long, value_name = "WEFT", value_parser = parse_weft)]
    amount: Balance,
    /// Fail instead of reaping the sender if it would drop below the existential deposit.
    #[arg(long)]
    keep_alive: bool,
}

#[derive(Debug, Args)]
struct RemarkArgs {
    #[command(flatten)]
    tx: TxArgs,
    /// The text to record (at most 1024 bytes).
    text: String,
}

#[derive(Debug, Args)]
struct AccountArgs {
    /// The account: an SS58 address, a 0x public key or a secret URI.
    #[arg(value_name = "ADDRESS-or-SURI", value_parser = parse_account)]
    account: AccountId,
    /// Read the state at this block instead of the best block.
    #[arg(long, value_name = "BLOCKHASH")]
    at: Option<Hash>,
}

#[derive(Debug, Args)]
struct BlockArgs {
    /// best, finalized, a block number or a 0x block hash.
    #[arg(value_name = "BLOCK", default_value = "best")]
    block: BlockSelector,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Key { command } => key(command, json),
        Command::Transfer(args) => {
            let call = if args.keep_alive {
                balances::Call::TransferKeepAlive {
                    dest: args.to,
                    value: args.amount,
                }
            } else {
                balances::Call::Transfer {
                    dest: args.to,
                    value: args.amount,
                }
            };
            let what = format!(
                "balances.{} {} to {}",
                if args.keep_alive {
                    "transferKeepAlive"
                } else {
                    "transfer"
                },
                weft(args.amount),
                args.to
            );
            submit(&cli.url, json, &args.tx, RuntimeCall::Balances(call), &what).await
        }
        Command::Remark(args) => {
            let remark = args.text.into_bytes();
            if remark.len() > system::MAX_REMARK_LEN {
                bail!(
                    "a remark is at most {} bytes, this one has {}",
                    system::MAX_REMARK_LEN,
                    remark.len()
                );
            }
            let what = format!("system.remark ({} bytes)", remark.len());
            let call = RuntimeCall::System(system::Call::Remark { remark });
            submit(&cli.url, json, &args.tx, call, &what).await
        }
        Command::Account(args) => account(&cli.url, json, args).await,
        Command::Block(args) => block(&cli.url, json, args.block).await,
        Command::Stake { command } => protocol::stake(&cli.url, json, command).await,
        Command::Run { command } => protocol::run(&cli.url, json, command).await,
        Command::Work { command } => protocol::work(&cli.url, json, command).await,
        Command::Ownership { command } => protocol::ownership(&cli.url, json, command).await,
        Command::Credentials { command } => protocol::credentials(&cli.url, json, command).await,
        Command::Gov { command } => protocol::gov(&cli.url, json, command).await,
        Command::Epoch(args) => protocol::epoch(&cli.url, json, args).await,
        Command::Infer(args) => infer_command::infer(&cli.url, json, args).await,
        Command::Gateway(args) => gateway_command::gateway(&cli.url, args).await,
    }
}

fn print_json(value: &impl Serialize) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("serialising the output")?
    );
    Ok(())
}

/// `key inspect` output: the key info plus the secret URI it came from.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InspectJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_uri: Option<String>,
    #[serde(flatten)]
    key: KeyInfo,
}

fn key(command: KeyCommand, json: bool) -> Result<()> {
    match command {
        KeyCommand::Generate => {
            let (pair, phrase) = Keypair::generate();
            let info = KeyInfo::of(&pair, Some(phrase));
            if json {
                print_json(&info)
            } else {
                println!("{info}");
                Ok(())
            }
        }
        KeyCommand::Bls { suri, bls_seed } => {
            let signer = parse_signer_suri(&suri)?;
            let sk = bls_secret(&signer.suri, bls_seed.as_deref())?;
            let out = protocol::BlsKeyOut::of(&sk, signer.pair.account_id())?;
            if json {
                return print_json(&out);
            }
            println!("{}", field("Account", out.account));
            println!("{}", field("BLS public key", out.bls_key));
            println!("{}", field("Proof (PoP)", out.proof_of_possession));
            Ok(())
        }
        KeyCommand::Inspect { input } => {
            let out = match parse_key_input(&input)? {
                KeyInput::Secret { pair, suri } => InspectJson {
                    secret_uri: Some(suri),
                    key: KeyInfo::of(&pair, None),
                },
                KeyInput::Public(account) => {
                    let hex = format!("0x{}", hex::encode(account.0));
                    InspectJson {
                        secret_uri: None,
                        key: KeyInfo {
                            secret_phrase: None,
                            public_key: hex.clone(),
                            ss58_address: account.to_ss58(),
                            account_id: hex,
                        },
                    }
                }
            };
            if json {
                return print_json(&out);
            }
            if let Some(suri) = &out.secret_uri {
                println!("Secret URI:     {suri}");
            }
            println!("{}", out.key);
            Ok(())
        }
    }
}

async fn connect(url: &str) -> Result<Client> {
    Ok(Client::connect(url).await?)
}

async fn submit(url: &str, json: bool, tx: &TxArgs, call: RuntimeCall, what: &str) -> Result<()> {
    submit_then(url, json, tx, call, what, |_| Vec::new()).await?;
    Ok(())
}

/// Submits `call` signed by `tx.from`, prints the receipt with the `extra` facts taken from
/// it (e.g. the id of a registered run: extra JSON keys, extra lines), and fails with the
/// dispatch error's message when the call failed.
async fn submit_then(
    url: &str,
    json: bool,
    tx: &TxArgs,
    call: RuntimeCall,
    what: &str,
    extra: impl FnOnce(&Receipt) -> Vec<(&'static str, serde_json::Value)>,
) -> Result<Receipt> {
    let client = connect(url).await?;
    let receipt = client.submit(&tx.from.pair, call, &tx.options()).await?;
    let facts = if receipt.failed() {
        Vec::new()
    } else {
        extra(&receipt)
    };
    if json {
        let mut v = serde_json::to_value(&receipt).context("serialising the receipt")?;
        if let Some(map) = v.as_object_mut() {
            for (k, x) in &facts {
                map.insert((*k).to_string(), x.clone());
            }
        }
        print_json(&v)?;
    } else {
        print_receipt(&receipt, what);
        for (k, x) in &facts {
            let text = match x {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{}", field(&protocol::label(k), text));
        }
    }
    Ok(receipt.ensure_success()?)
}

fn print_receipt(r: &Receipt, what: &str) {
    println!("{}", field("Extrinsic", r.hash));
    println!("{}", field("Call", what));
    println!(
        "{}",
        field("Signer", format!("{} (nonce {})", r.signer, r.nonce))
    );
    println!("{}", field("Status", r.stage));
    if r.stage == Stage::Submitted {
        return;
    }
    if let (Some(n), Some(h)) = (r.block_number, r.block_hash) {
        let index = r
            .index
            .map(|i| format!(", extrinsic {i}"))
            .unwrap_or_default();
        println!("{}", field("Block", format!("#{n} {h}{index}")));
    }
    let result = match (&r.success, &r.error) {
        (Some(true), _) => "success".to_string(),
        (_, Some(e)) => format!("FAILED: {}", e.message),
        _ => "FAILED".to_string(),
    };
    println!("{}", field("Result", result));
    match (r.fee, r.tip) {
        (Some(fee), Some(tip)) => println!(
            "{}",
            field("Fee", format!("{} (+ tip {})", weft(fee), weft(tip)))
        ),
        _ => println!("{}", field("Fee", "unknown (no FeePaid event)")),
    }
    if !r.events.is_empty() {
        println!("Events:");
        for e in &r.events {
            println!("  {}", render::event(e));
        }
    }
}

async fn account(url: &str, json: bool, args: AccountArgs) -> Result<()> {
    let client = connect(url).await?;
    let info = client.account(args.account, args.at).await?;
    if json {
        return print_json(&info);
    }
    println!("{}", field("Account", info.account));
    println!("{}", field("Free", weft_str(&info.free)));
    println!("{}", field("Reserved", weft_str(&info.reserved)));
    println!("{}", field("Nonce", info.nonce));
    if let Some(at) = args.at {
        println!("{}", field("At block", at));
    }
    Ok(())
}

/// `weft block --json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BlockOut {
    number: BlockNumber,
    hash: Hash,
    parent_hash: Hash,
    state_root: Hash,
    extrinsics_root: Hash,
    timestamp: Moment,
    author: AccountId,
    digest: Digest,
    extrinsic_count: usize,
    events: Vec<EventRecord>,
}

async fn block(url: &str, json: bool, selector: BlockSelector) -> Result<()> {
    let client = connect(url).await?;
    let hash = match selector {
        BlockSelector::Best => Some(client.best_header().await?.hash()),
        BlockSelector::Finalized => Some(client.finalized_head().await?),
        BlockSelector::Number(n) => client.block_hash(n).await?,
        BlockSelector::Hash(h) => Some(h),
    };
    let Some(hash) = hash else {
        bail!("the node has no block {selector}");
    };
    let Some(signed) = client.block(hash).await? else {
        bail!("the node has no block {selector}");
    };
    let events = client.events(Some(hash)).await?;
    let header = signed.block.header;
    let out = BlockOut {
        number: header.number,
        hash: header.hash(),
        parent_hash: header.parent_hash,
        state_root: header.state_root,
        extrinsics_root: header.extrinsics_root,
        timestamp: header.timestamp,
        author: header.author,
        digest: header.digest,
        extrinsic_count: signed.block.extrinsics.len(),
        events,
    };
    if json {
        return print_json(&out);
    }
    println!("{}", field("Number", out.number));
    println!("{}", field("Hash", out.hash));
    println!("{}", field("Parent", out.parent_hash));
    println!("{}", field("State root", out.state_root));
    println!("{}", field("Extrinsics root", out.extrinsics_root));
    println!(
        "{}",
        field(
            "Timestamp",
            format!(
                "{} ({} ms)",
                render::timestamp(out.timestamp),
                out.timestamp
            )
        )
    );
    println!("{}", field("Author", out.author));
    println!("{}", field("Digest items", out.digest.logs.len()));
    println!("{}", field("Extrinsics", out.extrinsic_count));
    println!("{}", field("Events", out.events.len()));
    for e in &out.events {
        println!("  {}", render::event(e));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn transfer_arguments() {
        let cli = Cli::try_parse_from([
            "weft", "--json", "transfer", "--from", "//Alice", "--to", "//Bob", "--amount", "1.5",
            "--tip", "0.1", "--wait", "in-block",
        ])
        .unwrap();
        assert!(cli.json);
        let Command::Transfer(t) = cli.command else {
            panic!("not a transfer")
        };
        assert_eq!(t.amount, 1_500_000_000_000);
        assert_eq!(t.tx.tip, 100_000_000_000);
        assert_eq!(t.to, parse_account("//Bob").unwrap());
        let opts = t.tx.options();
        assert_eq!(opts.wait, WaitFor::InBlock);
        assert_eq!(opts.mortality, Some(DEFAULT_MORTALITY));

        let cli = Cli::try_parse_from([
            "weft",
            "transfer",
            "--from",
            "//Alice",
            "--to",
            "//Bob",
            "--amount",
            "1",
            "--immortal",
        ])
        .unwrap();
        let Command::Transfer(t) = cli.command else {
            panic!("not a transfer")
        };
        assert_eq!(t.tx.options().mortality, None);
        assert_eq!(t.tx.options().wait, WaitFor::Finalized);

        for bad in [
            // An address cannot sign.
            vec![
                "weft",
                "transfer",
                "--from",
                "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY",
                "--to",
                "//Bob",
                "--amount",
                "1",
            ],
            vec![
                "weft", "transfer", "--from", "//A", "--to", "??", "--amount", "1",
            ],
            vec![
                "weft", "transfer", "--from", "//A", "--to", "//B", "--amount", "-1",
            ],
            vec![
                "weft",
                "transfer",
                "--from",
                "//A",
                "--to",
                "//B",
                "--amount",
                "1",
                "--immortal",
                "--mortality",
                "5",
            ],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn other_commands() {
        let cli = Cli::try_parse_from(["weft", "block", "12", "--url", "ws://x:1"]).unwrap();
        assert_eq!(cli.url, "ws://x:1");
        assert!(matches!(
            cli.command,
            Command::Block(BlockArgs {
                block: BlockSelector::Number(12)
            })
        ));
        let cli = Cli::try_parse_from(["weft", "block"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Block(BlockArgs {
                block: BlockSelector::Best
            })
        ));
        assert!(Cli::try_parse_from(["weft", "block", "nope"]).is_err());
        let cli = Cli::try_parse_from(["weft", "account", "//Bob", "--json"]).unwrap();
        assert!(cli.json);
        let cli =
            Cli::try_parse_from(["weft", "remark", "--from", "//Alice", "hello world"]).unwrap();
        assert!(
            matches!(cli.command, Command::Remark(RemarkArgs { ref text, .. }) if text == "hello world")
        );
    }

    #[test]
    fn infer_and_gateway_arguments() {
        let cli = Cli::try_parse_from([
            "weft",
            "infer",
            "--run",
            "2",
            "--from",
            "//Alice",
            "--prompt-tokens",
            "1,2,3",
            "--max-tokens",
            "8",
            "--stop",
            "a",
            "--stop",
            "b",
            "--seed",
            "5",
            "--no-stream",
        ])
        .unwrap();
        let Command::Infer(a) = cli.command else {
            panic!("not infer")
        };
        let p = a.params();
        assert_eq!(p.prompt_tokens, Some(vec![1, 2, 3]));
        assert_eq!(p.prompt, None);
        assert_eq!(p.stop, vec!["a".to_string(), "b".to_string()]);
        assert_eq!((p.run, p.max_tokens, p.seed), (2, 8, Some(5)));
        let base = [
            "weft",
            "infer",
            "--run",
            "1",
            "--from",
            "//Alice",
            "--max-tokens",
            "4",
        ];
        assert!(Cli::try_parse_from(base).is_err(), "a prompt is required");
        let both = [&base[..], &["--prompt", "x", "--prompt-tokens", "1"]].concat();
        assert!(Cli::try_parse_from(both).is_err(), "one prompt only");
        let cli = Cli::try_parse_from(["weft", "gateway", "--key", "//Bob", "--run", "3"]).unwrap();
        let Command::Gateway(g) = cli.command else {
            panic!("not gateway")
        };
        assert_eq!(g.listen.to_string(), "127.0.0.1:8080");
        assert_eq!((g.run, g.model_name), (3, None));
    }
}
