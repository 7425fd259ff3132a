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
        KeyCommand::GenerateNodeKey { file } => {
            let peer = weft_node_net::key::generate_to_file(&file)
                .with_context(|| format!("writing the node key to {}", file.display()))?;
            println!("{peer}");
            return Ok(());
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
        crate::service::verifier(spec, None),
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
    match cmd {
        BenchmarkCommand::Block {
            transfers,
            blocks,
            json,
        } => benchmark_block(transfers, blocks, json),
        BenchmarkCommand::Commitments {
            trainers,
            blocks,
            json,
        } => benchmark_commitments(trainers, blocks, json),
    }
}

/// `benchmark block`: signed transfers.
fn benchmark_block(transfers: usize, blocks: usize, json: bool) -> anyhow::Result<()> {
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
    let (_dir, chain, verifier, ctx) = bench_chains(&genesis, &alice)?;
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

/// A signed candidate for `build_block`.
fn candidate(call: RuntimeCall, signer: &Keypair, nonce: u64, ctx: SigningContext) -> Candidate {
    let xt = Extrinsic::new_signed(call, signer, nonce, 0, Era::Immortal, ctx);
    let encoded = xt.encode();
    Candidate {
        hash: weft_primitives::blake3_256(&encoded),
        extrinsic: xt,
        encoded,
    }
}

/// Builds the next block of `chain` from `candidates` and imports it into `verifier`;
/// returns the block, the build + write seconds and the import seconds.
fn build_and_import(
    chain: &Chain,
    verifier: &Chain,
    candidates: &[Candidate],
    author: weft_primitives::AccountId,
) -> anyhow::Result<(crate::chain::BuiltBlock, f64, f64)> {
    let number = chain.heads().best.number + 1;
    let t = Instant::now();
    let built = chain.build_block(candidates, author, 1_000 * number)?;
    let build_secs = t.elapsed().as_secs_f64();
    let (header, body, justification) = chain.block(&built.hash)?.context("built block missing")?;
    let extrinsics = body
        .iter()
        .map(|x| Extrinsic::decode(&mut &x[..]))
        .collect::<Result<Vec<_>, _>>()?;
    let block = Block { header, extrinsics };
    let t = Instant::now();
    verifier.import_block(&block, justification.as_ref())?;
    Ok((built, build_secs, t.elapsed().as_secs_f64()))
}

/// `benchmark commitments`: `trainers` trainers bonded at genesis join runs (setup block),
/// are assigned one slot each at the first epoch boundary (timed separately), then each
/// commits one step per block for `blocks` blocks.
fn benchmark_commitments(trainers: usize, blocks: usize, json: bool) -> anyhow::Result<()> {
    use weft_runtime::support::{Perbill, Replica, RunId, StageIndex};
    use weft_runtime::{runs, stages, staking, work, ProtocolGenesis};

    /// Slots per run: 64 stages × 4 replicas.
    const SLOTS_PER_RUN: usize = 256;
    if trainers == 0 {
        bail!("need at least one trainer");
    }
    let n_runs = trainers.div_ceil(SLOTS_PER_RUN);
    // Trainer i joins run i % n_runs: each run gets `per_run_min` or `per_run_min + 1`.
    let per_run_min = trainers / n_runs;
    let per_run_max = trainers.div_ceil(n_runs);
    // Enough stages that every one is filled (else the run pauses), enough replicas that
    // every candidate gets a slot (max_stages_per_account is 1).
    let n_stages = per_run_min.min(64);
    let n_replicas = per_run_max.div_ceil(n_stages);
    if n_runs > 64 || n_replicas > 8 {
        bail!("{trainers} trainers do not fit in 64 runs of 64 stages × 8 replicas");
    }
    let keys: Vec<Keypair> = (0..trainers)
        .map(|i| Keypair::from_suri(&format!("//bench-trainer//{i}")))
        .collect::<Result<_, _>>()?;
    let alice = Keypair::from_suri("//Alice")?;
    let mut balances_cfg: Vec<GenesisBalance> = keys
        .iter()
        .map(|k| GenesisBalance {
            account: k.account_id(),
            free: 1_000 * UNIT,
        })
        .collect();
    balances_cfg.push(GenesisBalance {
        account: alice.account_id(),
        free: 1_000_000 * UNIT,
    });
    let stakers: Vec<staking::GenesisStaker> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| staking::GenesisStaker {
            account: k.account_id(),
            bond: 200 * UNIT,
            validator: None,
            trainer: Some(staking::TrainerInfo {
                peer_id: format!("bench-trainer-{i}").into_bytes(),
                addrs: vec![],
                capacity: 1,
            }),
        })
        .collect();
    let genesis_runs: Vec<runs::GenesisRun> = (0..n_runs)
        .map(|_| runs::GenesisRun {
            designer: alice.account_id(),
            spec: runs::RunSpec {
                model_config: runs::ModelSpec {
                    n_layers: 64,
                    ..runs::ModelSpec::tiny()
                },
                stages: n_stages as StageIndex,
                replicas: n_replicas as u16,
                dataset_hash: weft_primitives::Hash::ZERO,
                hyper_params: runs::HyperParams::with_defaults(4, 1_000_000_000, 1_000_000),
                max_steps: 0,
                bond: 100 * UNIT,
                params: runs::RunParams {
                    // No audits: nobody reveals or attests in this benchmark.
                    audit_probability: Perbill::ZERO,
                    max_stages_per_account: 1,
                    ..runs::RunParams::default()
                },
            },
        })
        .collect();
    let staking_cfg = staking::Config::default();
    let epoch_length = staking_cfg.epoch_length;
    let genesis = GenesisConfig {
        existential_deposit: UNIT / 100,
        balances: balances_cfg,
        validators: vec![GenesisValidator {
            account: alice.account_id(),
            stake: UNIT,
        }],
        protocol: ProtocolGenesis {
            staking: staking_cfg,
            stakers,
            genesis_runs,
            stages: stages::Config {
                max_candidates_per_run: (per_run_max as u32).max(256),
                ..stages::Config::default()
            },
            ..ProtocolGenesis::default()
        },
    };
    let (_dir, chain, verifier, ctx) = bench_chains(&genesis, &alice)?;
    let author = alice.account_id();

    // Setup (untimed): block 1, every trainer joins its run; empty blocks up to the boundary.
    let joins: Vec<Candidate> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let run = (i % n_runs) as RunId;
            candidate(
                RuntimeCall::Stages(stages::Call::JoinRun { run }),
                k,
                0,
                ctx,
            )
        })
        .collect();
    let (built, _, _) = build_and_import(&chain, &verifier, &joins, author)?;
    if built.included.len() != trainers {
        bail!(
            "only {} of {trainers} join_run calls were included (rejected: {:?})",
            built.included.len(),
            built.rejected.first()
        );
    }
    while chain.heads().best.number + 1 < epoch_length {
        build_and_import(&chain, &verifier, &[], author)?;
    }
    // The epoch boundary: assigns every trainer a slot (timed on its own).
    let (_, boundary_build, boundary_import) = build_and_import(&chain, &verifier, &[], author)?;

    // Each trainer's slot, from the best state.
    let mut slots: Vec<Option<(RunId, StageIndex, Replica)>> = vec![None; trainers];
    {
        let state = chain.best_state();
        let index: std::collections::HashMap<weft_primitives::AccountId, usize> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.account_id(), i))
            .collect();
        for run in 0..n_runs as RunId {
            let info = runs::get(&state, run)?;
            if !info.is_training() {
                bail!("run {run} is not training after the epoch boundary");
            }
            for stage in 0..n_stages as StageIndex {
                for replica in 0..n_replicas as Replica {
                    if let Some(who) = stages::slot(&state, run, stage, replica)? {
                        if let Some(&i) = index.get(&who) {
                            slots[i] = Some((run, stage, replica));
                        }
                    }
                }
            }
        }
    }
    let assigned = slots.iter().filter(|s| s.is_some()).count();
    if assigned != trainers {
        bail!("only {assigned} of {trainers} trainers were assigned a slot");
    }

    // Timed: every trainer commits its slot's next step in each block.
    let (mut build_ms, mut import_ms) = (Vec::new(), Vec::new());
    let mut total = 0usize;
    for b in 0..blocks {
        let state = chain.best_state();
        let mut candidates = Vec::with_capacity(trainers);
        for (i, k) in keys.iter().enumerate() {
            let (run, stage, replica) = slots[i].context("unassigned trainer")?;
            let step = work::next_step(&state, run, stage, replica)?;
            // Trainer `i`'s state before step `s` (each step continues the last, as the
            // chain requires).
            let state =
                |s: u64, part: u8| weft_primitives::blake3_256(&(i as u64, s, part).encode());
            let seed = state(step, 2);
            let roots = work::StepRoots {
                weights_before: state(step, 0),
                inputs: seed,
                outputs: seed,
                output_grads: seed,
                input_grads: seed,
                weights_after: state(step + 1, 0),
                optimizer_before: state(step, 1),
                optimizer_after: state(step + 1, 1),
                // The benchmark's replicas train apart: no update is sent.
                update: weft_primitives::Hash::ZERO,
            };
            let loss = (stage as usize + 1 == n_stages).then_some(2_000_000);
            let call = RuntimeCall::Work(work::Call::CommitStep {
                run,
                stage,
                replica,
                step,
                roots,
                loss,
                compute: weft_primitives::compute::ComputeClass::UNDECLARED,
                seals: Default::default(),
                round: None,
            });
            candidates.push(candidate(call, k, 1 + b as u64, ctx));
        }
        let (built, build_secs, import_secs) =
            build_and_import(&chain, &verifier, &candidates, author)?;
        if built.included.len() != trainers {
            bail!(
                "only {} of {trainers} commitments were included in block {} (rejected: {:?})",
                built.included.len(),
                built.header.number,
                built.rejected.first()
            );
        }
        total += built.included.len();
        build_ms.push(build_secs * 1e3);
        import_ms.push(import_secs * 1e3);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (build_mean, import_mean) = (mean(&build_ms), mean(&import_ms));
    let build_cps = total as f64 / (build_ms.iter().sum::<f64>() / 1e3);
    let import_cps = total as f64 / (import_ms.iter().sum::<f64>() / 1e3);
    let per_block = total.checked_div(blocks).unwrap_or(0);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "trainers": trainers, "blocks": blocks, "runs": n_runs,
                "stagesPerRun": n_stages, "replicasPerStage": n_replicas,
                "commitmentsPerBlock": per_block,
                "buildMsPerBlock": build_mean, "importMsPerBlock": import_mean,
                "buildMs": build_ms, "importMs": import_ms,
                "buildCommitmentsPerSecond": build_cps,
                "importCommitmentsPerSecond": import_cps,
                "epochBoundaryBuildMs": boundary_build * 1e3,
                "epochBoundaryImportMs": boundary_import * 1e3,
            })
        );
    } else {
        println!(
            "{trainers} trainers in {n_runs} runs of {n_stages} stages × {n_replicas} replicas; \
             {blocks} blocks × {per_block} commit_step (one core, sr25519, blake3 JMT, rocksdb)"
        );
        println!("build + write:  {build_mean:>8.1} ms/block  {build_cps:>10.0} commitments/s");
        println!("verify import:  {import_mean:>8.1} ms/block  {import_cps:>10.0} commitments/s");
        let each: Vec<String> = build_ms
            .iter()
            .zip(&import_ms)
            .map(|(b, i)| format!("{b:.0}/{i:.0}"))
            .collect();
        println!("per block, build/import ms: {}", each.join(", "));
        println!(
            "epoch boundary assigning {trainers} trainers: build + write {:.1} ms, import {:.1} ms",
            boundary_build * 1e3,
            boundary_import * 1e3
        );
    }
    Ok(())
}

/// Two fresh chains on a temporary directory for a benchmark: one that authors (as `author`)
/// and one that only verifies imports, plus the signing context of their genesis.
fn bench_chains(
    genesis: &GenesisConfig,
    author: &Keypair,
) -> anyhow::Result<(tempfile::TempDir, Chain, Chain, SigningContext)> {
    let dir = tempfile::tempdir()?;
    let engine = Arc::new(DevEngine::new(Some(author.clone())));
    let chain = Chain::open(&dir.path().join("a"), "bench", genesis, engine)?;
    let verifier = Chain::open(
        &dir.path().join("b"),
        "bench",
        genesis,
        Arc::new(DevEngine::new(None)),
    )?;
    let ctx = SigningContext {
        genesis_hash: chain.genesis_hash(),
        birth_hash: chain.genesis_hash(),
    };
    Ok((dir, chain, verifier, ctx))
}
