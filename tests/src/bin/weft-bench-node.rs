//! Benchmark: a real `weft-node --dev` under steady transfer load for many blocks, reporting
//! its resident memory over time (it should stay flat) and the transfers it included.
//!
//! ```sh
//! weft-bench-node --blocks 10000 --block-time 20ms --per-block 10
//! ```
//!
//! Load: the six dev accounts send each other transfers with explicit nonces through
//! `author_submitExtrinsic`, `--per-block` of them for every new head, so the pool never
//! grows without bound.

use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};
use weft_cli::{SubmitOptions, WaitFor};
use weft_primitives::units::UNIT;
use weft_rpc_api::ChainApiClient;
use weft_runtime::{balances, RuntimeCall};
use weft_tests::Node;

struct Args {
    blocks: u64,
    block_time: String,
    per_block: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        blocks: 10_000,
        block_time: "20ms".into(),
        per_block: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--blocks" => args.blocks = value.parse().context("--blocks")?,
            "--block-time" => args.block_time = value,
            "--per-block" => args.per_block = value.parse().context("--per-block")?,
            other => bail!("unknown flag {other} (--blocks N, --block-time 20ms, --per-block N)"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let node = Node::start(dir.path(), &["--block-time", &args.block_time]).await?;
    let client = node.cli_client().await?;
    let rpc = node.client().await?;
    let senders = weft_tests::dev_keypairs()?;
    let mut nonces = Vec::new();
    for k in &senders {
        nonces.push(client.account(k.account_id(), None).await?.nonce);
    }
    let mut heads = rpc.subscribe_new_heads().await?;
    let checkpoints: Vec<u64> = std::iter::once(100)
        .chain((1..=20).map(|i| i * 1_000))
        .collect();
    let started = Instant::now();
    let mut round = 0usize;
    let mut submitted = 0u64;
    let mut samples = Vec::new();
    let opts = SubmitOptions {
        mortality: None,
        wait: WaitFor::None,
        ..SubmitOptions::default()
    };
    let first = client.best_header().await?.number;
    while let Some(head) = heads.next().await {
        let head = head?;
        let n = head.number - first;
        if checkpoints.contains(&n) || n == args.blocks {
            let rss = node.rss_kib().context("reading the node's RSS")?;
            println!(
                "block {:>6}  rss {:>7.1} MiB  submitted {:>8}  elapsed {:>6.1}s",
                n,
                rss as f64 / 1024.0,
                submitted,
                started.elapsed().as_secs_f64()
            );
            samples.push((n, rss));
        }
        if n >= args.blocks {
            break;
        }
        for _ in 0..args.per_block {
            let i = round % senders.len();
            let dest = senders[(i + 1) % senders.len()].account_id();
            let call = RuntimeCall::Balances(balances::Call::TransferKeepAlive {
                dest,
                value: UNIT / 1000,
            });
            let mut o = opts;
            o.nonce = Some(nonces[i]);
            let xt = client.sign(&senders[i], call, &o).await?;
            match client
                .submit_extrinsic(&xt, WaitFor::None, Duration::from_secs(10))
                .await
            {
                Ok(_) => {
                    nonces[i] += 1;
                    submitted += 1;
                }
                // Pool pressure or a nonce race: resynchronise from the chain.
                Err(_) => nonces[i] = client.account(senders[i].account_id(), None).await?.nonce,
            }
            round += 1;
        }
    }
    let included: u64 = {
        let mut total = 0;
        for k in &senders {
            total += client.account(k.account_id(), None).await?.nonce;
        }
        total
    };
    let (first_n, first_rss) = samples.first().copied().unwrap_or((0, 0));
    let (last_n, last_rss) = samples.last().copied().unwrap_or((0, 0));
    println!(
        "transfers included: {included}; rss at block {first_n}: {:.1} MiB, at block {last_n}: {:.1} MiB (ratio {:.2})",
        first_rss as f64 / 1024.0,
        last_rss as f64 / 1024.0,
        last_rss as f64 / first_rss.max(1) as f64
    );
    Ok(())
}
