//! Benchmark: four Tendermint validators on loopback under steady transfer load.
//!
//! ```sh
//! weft-bench-testnet --rate 1500 --seconds 30 --senders 256
//! ```
//!
//! 1. **Baseline**, in the same run: `weft-node benchmark block` (one process, one core, no
//!    network): signed transfers built and imported per second.
//! 2. Starts the four validators of `chain-spec/local.json` (500 ms block time), funds
//!    `--senders` accounts, then submits signed transfers at `--rate` per second for
//!    `--seconds`, round-robin over the four nodes' RPC. One transfer in 20 is submitted with
//!    `author_submitAndWatchExtrinsic` and timed from submission to `finalized`.
//! 3. Reports transfers finalized per second (from the finalized blocks of the load window),
//!    finality latency p50 / p99, the ratio to the baseline, and the bottleneck: the stage
//!    whose measured share of a block interval is largest (execution by the baseline's
//!    per-transfer cost, versus consensus rounds and the block time).

use anyhow::{bail, Context, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use weft_cli::{SubmitOptions, WaitFor};
use weft_primitives::units::UNIT;
use weft_primitives::Keypair;
use weft_rpc_api::ChainApiClient;
use weft_runtime::{balances, Extrinsic, RuntimeCall};
use weft_tests::bin;
use weft_tests::percentile;
use weft_tests::testnet::Testnet;

/// The testnet's `--block-time` (`weft_tests::testnet`).
const BLOCK_TIME_MS: f64 = 500.0;

struct Args {
    rate: u64,
    seconds: u64,
    senders: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        rate: 1_500,
        seconds: 30,
        senders: 256,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rate" => args.rate = value.parse().context("--rate")?,
            "--seconds" => args.seconds = value.parse().context("--seconds")?,
            "--senders" => args.senders = value.parse().context("--senders")?,
            other => bail!("unknown flag {other} (--rate N, --seconds N, --senders N)"),
        }
    }
    Ok(args)
}

/// `weft-node benchmark block`: (build + write, import) transfers per second.
fn baseline() -> Result<(f64, f64)> {
    let out = std::process::Command::new(bin("weft-node"))
        .args([
            "benchmark",
            "block",
            "--transfers",
            "2000",
            "--blocks",
            "3",
            "--json",
        ])
        .output()
        .context("running weft-node benchmark block")?;
    if !out.status.success() {
        bail!(
            "benchmark block failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((
        v["buildTransfersPerSecond"].as_f64().unwrap_or(0.0),
        v["importTransfersPerSecond"].as_f64().unwrap_or(0.0),
    ))
}

fn transfer(
    client_nonce: u64,
    from: &Keypair,
    to: &Keypair,
    genesis: weft_primitives::Hash,
) -> Extrinsic {
    let call = RuntimeCall::Balances(balances::Call::TransferKeepAlive {
        dest: to.account_id(),
        value: UNIT / 1000,
    });
    Extrinsic::new_signed(
        call,
        from,
        client_nonce,
        0,
        weft_primitives::Era::Immortal,
        weft_primitives::SigningContext {
            genesis_hash: genesis,
            birth_hash: genesis,
        },
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let (build_tps, import_tps) = baseline()?;
    println!("baseline (weft-node benchmark block, one process): build {build_tps:.0}/s, import {import_tps:.0}/s");

    let dir = tempfile::tempdir()?;
    let net = Testnet::start(dir.path()).await?;
    net.wait_finalized(0, 2, Duration::from_secs(120)).await?;
    let mut clients = Vec::new();
    for node in &net.nodes {
        clients.push(Arc::new(node.cli_client().await?));
    }
    let genesis = clients[0].genesis_hash().await?;

    // Fund the senders from the six dev accounts, nonces chained per funder.
    let funders = weft_tests::dev_keypairs()?;
    let senders: Vec<Keypair> = (0..args.senders)
        .map(|i| Keypair::from_suri(&format!("//bench//{i}")))
        .collect::<Result<_, _>>()?;
    let mut funder_nonce = Vec::new();
    for f in &funders {
        funder_nonce.push(clients[0].account(f.account_id(), None).await?.nonce);
    }
    let mut last = None;
    for (i, s) in senders.iter().enumerate() {
        let f = i % funders.len();
        let call = RuntimeCall::Balances(balances::Call::Transfer {
            dest: s.account_id(),
            value: 10 * UNIT,
        });
        let opts = SubmitOptions {
            mortality: None,
            wait: WaitFor::None,
            nonce: Some(funder_nonce[f]),
            ..SubmitOptions::default()
        };
        funder_nonce[f] += 1;
        let xt = clients[0].sign(&funders[f], call, &opts).await?;
        clients[0]
            .submit_extrinsic(&xt, WaitFor::None, Duration::from_secs(10))
            .await?;
        last = Some(s.account_id());
    }
    if let Some(last) = last {
        let deadline = Instant::now() + Duration::from_secs(120);
        while clients[0].account(last, None).await?.free == "0" {
            if Instant::now() > deadline {
                bail!("the senders were not funded");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!("funded {} senders", senders.len());

    // Load: WORKERS tasks, each owning every WORKERS-th sender and pacing its share of the
    // rate, over one node's connection each (round-robin over the four).
    const WORKERS: usize = 16;
    let start_height = clients[0].best_header().await?.number;
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let senders = Arc::new(senders);
    let total = args.rate * args.seconds;
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let client = clients[w % clients.len()].clone();
        let (senders, latencies, refused) = (senders.clone(), latencies.clone(), refused.clone());
        let per_worker_rate = args.rate as f64 / WORKERS as f64;
        let count = total / WORKERS as u64;
        workers.push(tokio::spawn(async move {
            let mine: Vec<usize> = (w..senders.len()).step_by(WORKERS).collect();
            let mut nonces = vec![0u64; mine.len()];
            let mut watchers = Vec::new();
            for k in 0..count {
                let due = started + Duration::from_secs_f64(k as f64 / per_worker_rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
                let j = (k as usize) % mine.len();
                let i = mine[j];
                let to = &senders[(i + 1) % senders.len()];
                let xt = transfer(nonces[j], &senders[i], to, genesis);
                nonces[j] += 1;
                if k % 20 == 0 {
                    let (client, lat) = (client.clone(), latencies.clone());
                    watchers.push(tokio::spawn(async move {
                        let t = Instant::now();
                        if client
                            .submit_extrinsic(&xt, WaitFor::Finalized, Duration::from_secs(60))
                            .await
                            .is_ok()
                        {
                            lat.lock().await.push(t.elapsed().as_secs_f64());
                        }
                    }));
                } else if client
                    .submit_extrinsic(&xt, WaitFor::None, Duration::from_secs(10))
                    .await
                    .is_err()
                {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            for h in watchers {
                let _ = h.await;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let load_secs = started.elapsed().as_secs_f64();
    let refused = refused.load(std::sync::atomic::Ordering::Relaxed);
    let total = total / WORKERS as u64 * WORKERS as u64;
    let end_height = clients[0].best_header().await?.number;

    // Finalized transfers in the load window, from the blocks themselves.
    let mut included = 0usize;
    let mut first_ts = None;
    let mut last_ts = 0u64;
    let mut rounds = 0u64;
    let mut blocks = 0u64;
    for n in start_height + 1..=end_height {
        let Some(hash) = clients[0].block_hash(n).await? else {
            continue;
        };
        let Some(block) = clients[0].block(hash).await? else {
            continue;
        };
        if block.block.extrinsics.is_empty() {
            continue;
        }
        included += block.block.extrinsics.len();
        first_ts.get_or_insert(block.block.header.timestamp);
        last_ts = block.block.header.timestamp;
        blocks += 1;
        if let Some(proof) = net.nodes[0]
            .client()
            .await?
            .finality_proof(Some(hash))
            .await?
        {
            rounds += u64::from(proof.round.unwrap_or(0));
        }
    }
    let span = (last_ts.saturating_sub(first_ts.unwrap_or(last_ts))) as f64 / 1000.0;
    // The load window: from the first to the last block that carried transfers.
    let tps = included as f64 / span.max(1.0);
    let mut lat = latencies.lock().await.clone();
    lat.sort_by(|a, b| a.total_cmp(b));
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let per_block = included as f64 / blocks.max(1) as f64;
    let exec_ms = per_block / import_tps.max(1.0) * 1000.0;
    let interval_ms = span * 1000.0 / blocks.max(1) as f64;
    println!(
        "4 validators: {included} transfers finalized in {blocks} blocks over {span:.1} s: {tps:.0} transfers/s \
         ({:.2} of the single-node import baseline); submitted {total} at {}/s in {load_secs:.1} s, {refused} refused",
        tps / import_tps.max(1.0),
        args.rate
    );
    println!(
        "finality latency (submission → finalized, {} samples): p50 {:.2} s, p99 {:.2} s",
        lat.len(),
        p50,
        p99
    );
    println!(
        "per block: {per_block:.0} transfers, execution ≈ {exec_ms:.0} ms (×2: proposer and each validator), \
         interval {interval_ms:.0} ms, extra rounds {rounds}"
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bottleneck = if rounds > blocks / 10 {
        "consensus rounds (timeouts: proposals or votes arrived late)".to_string()
    } else if interval_ms > 1.3 * BLOCK_TIME_MS {
        format!(
            "CPU: the block interval stretched from {BLOCK_TIME_MS:.0} ms to {interval_ms:.0} ms; every \
             transfer is signature-checked by the pool of each of the 4 nodes and executed by the \
             proposer and by each validator, and the 4 nodes share {cores} cores here"
        )
    } else if tps < 0.9 * args.rate as f64 {
        "transaction submission and gossip (the pool admits each transfer on every node)"
            .to_string()
    } else {
        "the offered load (raise --rate)".to_string()
    };
    println!("bottleneck: {bottleneck}");
    Ok(())
}
