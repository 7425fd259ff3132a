//! The node's subcommands.

use crate::chain::{Candidate, Chain};
use crate::chain_spec::{self, ChainSpec};
use crate::cli::{BenchmarkCommand, ChainArgs, KeyCommand};
use crate::consensus::{DevEngine, Justification};
use crate::service::{database_path, default_base_path};
use anyhow::{bail, Context};
use parity_scale_codec::{Decode, Encode};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use weft_primitives::crypto::KeyInfo;
use weft_primitives::extrinsic::SigningContext;
use weft_primitives::units::UNIT;
use weft_primitives::{Era, Keypair};
use weft_runtime::genesis::GenesisBalance;
use weft_runtime::{balances, Block, Extrinsic, GenesisConfig, GenesisValidator, RuntimeCall};

/// `key generate` / `key inspect`.
pub fn key(cmd: KeyCommand) -> anyhow::Result<()> {
    let (info, json) = match cmd {
        KeyCommand::Generate { json } => {
            let (pair, phrase) = Keypair::generate();
            (KeyInfo::of(&pair, Some(phrase)), json)
        }
        KeyCommand::Inspect { suri, json } => {
            let pair = Keypair::from_suri(&suri)?;
            (KeyInfo::of(&pair, None), json)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!("{info}");
    }
    Ok(())
}

/// `build-spec`.
pub fn build_spec(chain: &str) -> anyhow::Result<()> {
    println!("{}", chain_spec::load(chain)?.to_json()?);
    Ok(())
}

fn resolve(args: &ChainArgs) -> anyhow::Result<(ChainSpec, PathBuf)> {
    let spec = chain_spec::load(&args.chain)?;
    let base = args.base_path.clone().unwrap_or_else(default_base_path);
    let db = database_path(&base, &spec);
    Ok((spec, db))
}

fn open(spec: &ChainSpec, db: &Path) -> anyhow::Result<Chain> {
    Chain::open(
        db,
        &spec.name,
        &spec.genesis,
        Arc::new(DevEngine::new(None)),
    )
    .with_context(|| format!("opening {}", db.display()))
}

/// `purge-chain`.
pub fn purge_chain(args: &ChainArgs, yes: bool) -> anyhow::Result<()> {
    let (_, db) = resolve(args)?;
    if !db.exists() {
        println!("{} does not exist", db.display());
        return Ok(());
    }
    if !yes {
        print!("Delete {}? [y/N]: ", db.display());
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("Aborted");
            return Ok(());
        }
    }
    std::fs::remove_dir_all(&db).with_context(|| format!("removing {}", db.display()))?;
    println!("{} removed", db.display());
    Ok(())
}

/// One record of an export file.
#[derive(Encode, Decode)]
struct ExportRecord {
    block: Block,
    justification: Option<Justification>,
}

/// Largest record accepted by `import-blocks`.
const MAX_RECORD: usize = weft_primitives::MAX_BLOCK_SIZE + 64 * 1024;

/// `export-blocks`.
pub fn export_blocks(
    args: &ChainArgs,
    from: u64,
    to: Option<u64>,
    output: &Path,
) -> anyhow::Result<()> {
    let (spec, db) = resolve(args)?;
    let chain = open(&spec, &db)?;
    let best = chain.heads().best.number;
    let to = to.unwrap_or(best).min(best);
    let mut out = BufWriter::new(
        std::fs::File::create(output).with_context(|| format!("creating {}", output.display()))?,
    );
    let mut count = 0u64;
    for n in from.max(1)..=to {
        let hash = chain
            .hash_of(n)?
            .with_context(|| format!("block {n} missing"))?;
        let (header, body, justification) = chain
            .block(&hash)?
            .with_context(|| format!("block {hash} missing"))?;
        let extrinsics = body
            .iter()
            .map(|b| Extrinsic::decode(&mut &b[..]))
            .collect::<Result<Vec<_>, _>>()
            .context("stored extrinsic does not decode")?;
        let record = ExportRecord {
            block: Block { header, extrinsics },
            justification,
        }
        .encode();
        out.write_all(&(record.len() as u32).to_le_bytes())?;
        out.write_all(&record)?;
        count += 1;
    }
    out.flush()?;
    eprintln!(
        "exported {count} blocks ({}..={to}) to {}",
        from.max(1),
        output.display()
    );
    Ok(())
}

/// `import-blocks`.
pub fn import_blocks(args: &ChainArgs, input: &Path) -> anyhow::Result<()> {
    let (spec, db) = resolve(args)?;
    let chain = open(&spec, &db)?;
    let mut file = BufReader::new(
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?,
    );
    let (mut imported, mut skipped) = (0u64, 0u64);
    loop {
        let mut len = [0u8; 4];
        match file.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_RECORD {
            bail!("record of {len} bytes exceeds the limit of {MAX_RECORD}: not an export file?");
        }
        let mut buf = vec![0u8; len];
        file.read_exact(&mut buf).context("truncated export file")?;
        let mut input = &buf[..];
        let record = ExportRecord::decode(&mut input).context("malformed block record")?;
        if !input.is_empty() {
            bail!("malformed block record: {} trailing bytes", input.len());
        }
        let number = record.block.header.number;
        match chain.import_block(&record.block, record.justification.as_ref()) {
            Ok(_) => imported += 1,
            Err(crate::chain::ChainError::AlreadyKnown(_)) => skipped += 1,
            Err(e) => bail!("block #{number}: {e}"),
        }
    }
    chain.flush()?;
    eprintln!(
        "imported {imported} blocks, {skipped} already known; best is #{}",
        chain.heads().best.number
    );
    Ok(())
}

/// `benchmark block`: builds blocks of signed transfers from distinct senders on a fresh
/// temporary database, then imports the same blocks into a second one (the path a validator
/// takes for a block it did not build). Both include signature checks, execution, the state
/// root and the write.
pub fn benchmark(cmd: BenchmarkCommand) -> anyhow::Result<()> {
    let BenchmarkCommand::Block {
        transfers,
        blocks,
        json,
    } = cmd;
    let senders: Vec<Keypair> = (0..transfers)
        .map(|i| Keypair::from_suri(&format!("//bench//{i}")))
        .collect::<Result<_, _>>()?;
    let alice = Keypair::from_suri("//Alice")?;
    let mut balances_cfg: Vec<GenesisBalance> = senders
        .iter()
        .map(|k| GenesisBalance {
            account: k.account_id(),
            free: 1_000 * UNIT,
        })
        .collect();
    balances_cfg.push(GenesisBalance {
        account: alice.account_id(),
        free: 1_000 * UNIT,
    });
    let genesis = GenesisConfig {
        existential_deposit: UNIT / 100,
        balances: balances_cfg,
        validators: vec![GenesisValidator {
            account: alice.account_id(),
            stake: UNIT,
        }],
        ..Default::default()
    };
    let dir = tempfile::tempdir()?;
    let engine = Arc::new(DevEngine::new(Some(alice.clone())));
    let chain = Chain::open(&dir.path().join("a"), "bench", &genesis, engine)?;
    let verifier = Chain::open(
        &dir.path().join("b"),
        "bench",
        &genesis,
        Arc::new(DevEngine::new(None)),
    )?;
    let ctx = SigningContext {
        genesis_hash: chain.genesis_hash(),
        birth_hash: chain.genesis_hash(),
    };
    let (mut build_secs, mut import_secs, mut total) = (0.0f64, 0.0f64, 0usize);
    for b in 0..blocks {
        let candidates: Vec<Candidate> = senders
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let dest = senders[(i + 1) % senders.len()].account_id();
                let call =
                    RuntimeCall::Balances(balances::Call::TransferKeepAlive { dest, value: UNIT });
                let xt = Extrinsic::new_signed(call, k, b as u64, 0, Era::Immortal, ctx);
                let encoded = xt.encode();
                Candidate {
                    hash: weft_primitives::blake3_256(&encoded),
                    extrinsic: xt,
                    encoded,
                }
            })
            .collect();
        let t = Instant::now();
        let built = chain.build_block(&candidates, alice.account_id(), 1_000 * (b as u64 + 1))?;
        build_secs += t.elapsed().as_secs_f64();
        if built.included.len() != transfers {
            bail!(
                "only {} of {transfers} transfers were included",
                built.included.len()
            );
        }
        total += built.included.len();
        let (header, body, justification) =
            chain.block(&built.hash)?.context("built block missing")?;
        let extrinsics = body
            .iter()
            .map(|x| Extrinsic::decode(&mut &x[..]))
            .collect::<Result<Vec<_>, _>>()?;
        let block = Block { header, extrinsics };
        let t = Instant::now();
        verifier.import_block(&block, justification.as_ref())?;
        import_secs += t.elapsed().as_secs_f64();
    }
    let build_tps = total as f64 / build_secs;
    let import_tps = total as f64 / import_secs;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "transfersPerBlock": transfers, "blocks": blocks,
                "buildTransfersPerSecond": build_tps, "importTransfersPerSecond": import_tps,
            })
        );
    } else {
        println!("blocks: {blocks} × {transfers} signed transfers (one core, sr25519, blake3 JMT, rocksdb)");
        println!("build + write:  {build_tps:>10.0} transfers/s");
        println!("verify import:  {import_tps:>10.0} transfers/s");
    }
    Ok(())
}
