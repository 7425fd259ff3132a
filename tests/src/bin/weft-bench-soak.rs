//! Soak benchmark: honest transfers at a steady rate, first on a quiet node, then while an
//! attacker floods the pool and holds idle connections (issue 10).
//!
//! ```sh
//! weft-bench-soak --seconds 30 --rate 20 --pool-limit 8192
//! ```
//!
//! A real `weft-node --dev` (500 ms blocks, `--pool-limit`, all other limits at their
//! defaults). Honest load: 16 funded accounts send transfers with a small tip at `--rate`
//! per second over WebSocket from 127.0.0.1, each timed from submission to its block.
//! The attack, from other loopback addresses, for the whole second phase:
//!
//! * **unfundable flood**: 300 never-funded keys re-send immortal future-nonce transfers in
//!   HTTP batches of 200, as fast as the node answers;
//! * **low-tip flood**: 128 funded keys keep 64 zero-tip future-nonce transfers each in the
//!   pool (nonces above a gap, so they never become ready), enough to fill `--pool-limit`;
//! * **idle connections**: WebSocket handshakes that then say nothing, from as many
//!   addresses as it takes to reach `--idle`, and as many silent TCP connections to the
//!   Prometheus port.
//!
//! Reported: honest inclusion latency p50 / p99 in each phase and their ratio (the quiet
//! phase is the baseline measured in the same run), honest transactions lost (every sender's
//! final nonce must equal what it sent), the node's RSS after each phase, the pool size and
//! what the node did with the attacker's submissions.

use anyhow::{bail, Context, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use weft_cli::{Client, SubmitOptions, WaitFor};
use weft_primitives::units::UNIT;
use weft_primitives::{AccountId, Balance, Era, Hash, Keypair, SigningContext};
use weft_runtime::{balances, Extrinsic, RuntimeCall};
use weft_tests::percentile;
use weft_tests::raw::{connect_from, loopback, submit_batches, ws_handshake};
use weft_tests::Node;

const HONEST: usize = 16;
const UNFUNDED: usize = 300;
const LOW_TIP: usize = 128;
const FUTURE_PER_KEY: u64 = 64;

struct Args {
    seconds: u64,
    rate: u64,
    pool_limit: usize,
    idle: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        seconds: 30,
        rate: 20,
        pool_limit: 8192,
        idle: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seconds" => args.seconds = value.parse().context("--seconds")?,
            "--rate" => args.rate = value.parse().context("--rate")?,
            "--pool-limit" => args.pool_limit = value.parse().context("--pool-limit")?,
            "--idle" => args.idle = value.parse().context("--idle")?,
            other => {
                bail!("unknown flag {other} (--seconds N, --rate N, --pool-limit N, --idle N)")
            }
        }
    }
    Ok(args)
}

fn transfer(k: &Keypair, dest: AccountId, nonce: u64, tip: Balance, genesis: Hash) -> Extrinsic {
    let call = RuntimeCall::Balances(balances::Call::Transfer {
        dest,
        value: UNIT / 1000,
    });
    let ctx = SigningContext {
        genesis_hash: genesis,
        birth_hash: genesis,
    };
    Extrinsic::new_signed(call, k, nonce, tip, Era::Immortal, ctx)
}

/// Funds `keys` with `amount` each from the dev accounts and waits for the last.
async fn fund(client: &Client, keys: &[Keypair], amount: Balance) -> Result<()> {
    let funders = weft_tests::dev_keypairs()?;
    let mut nonces = Vec::new();
    for f in &funders {
        nonces.push(client.account(f.account_id(), None).await?.nonce);
    }
    for (i, k) in keys.iter().enumerate() {
        let f = i % funders.len();
        let call = RuntimeCall::Balances(balances::Call::Transfer {
            dest: k.account_id(),
            value: amount,
        });
        let opts = SubmitOptions {
            mortality: None,
            wait: WaitFor::None,
            nonce: Some(nonces[f]),
            ..SubmitOptions::default()
        };
        nonces[f] += 1;
        let xt = client.sign(&funders[f], call, &opts).await?;
        client
            .submit_extrinsic(&xt, WaitFor::None, Duration::from_secs(10))
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for k in keys {
        while client.account(k.account_id(), None).await?.free == "0" {
            if Instant::now() > deadline {
                bail!("the accounts were not funded");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// One phase of honest load: `rate` transfers a second for `seconds`, round-robin over the
/// honest keys, each timed to its block. Returns the sorted latencies and how many failed.
async fn honest_phase(
    client: Arc<Client>,
    keys: Arc<Vec<Keypair>>,
    nonces: &mut [u64],
    args: &Args,
    genesis: Hash,
) -> (Vec<f64>, u64) {
    let lat = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..args.rate * args.seconds {
        let due = started + Duration::from_secs_f64(k as f64 / args.rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let i = k as usize % keys.len();
        let to = keys[(i + 1) % keys.len()].account_id();
        let xt = transfer(&keys[i], to, nonces[i], UNIT / 1000, genesis);
        nonces[i] += 1;
        let (client, lat, failed) = (client.clone(), lat.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            match client
                .submit_extrinsic(&xt, WaitFor::InBlock, Duration::from_secs(60))
                .await
            {
                Ok(_) => lat.lock().await.push(t.elapsed().as_secs_f64()),
                Err(e) => {
                    eprintln!("honest transfer failed: {e}");
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut v = lat.lock().await.clone();
    v.sort_by(|a, b| a.total_cmp(b));
    (v, failed.load(Ordering::Relaxed))
}

/// What the attack's submissions got.
#[derive(Default)]
struct AttackCounts {
    admitted: AtomicU64,
    refused: AtomicU64,
}

/// Re-sends `xts` from `src` in batches until `stop`, counting the answers.
fn flood(
    port: u16,
    src: u8,
    xts: Vec<Extrinsic>,
    stop: Arc<AtomicBool>,
    counts: Arc<AttackCounts>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            match submit_batches(loopback(src), port, &xts, 200).await {
                Ok(codes) => {
                    let ok = codes.iter().filter(|c| **c == 0).count() as u64;
                    counts.admitted.fetch_add(ok, Ordering::Relaxed);
                    counts
                        .refused
                        .fetch_add(codes.len() as u64 - ok, Ordering::Relaxed);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let pool_limit = args.pool_limit.to_string();
    let node = Node::start(
        dir.path(),
        &["--block-time", "500ms", "--pool-limit", &pool_limit],
    )
    .await?;
    let client = Arc::new(node.cli_client().await?);
    let genesis = client.genesis_hash().await?;
    let key = |tag: &str, i: usize| Keypair::from_suri(&format!("//soak//{tag}//{i}"));
    let honest: Vec<Keypair> = (0..HONEST)
        .map(|i| key("honest", i))
        .collect::<Result<_, _>>()?;
    let low_tip: Vec<Keypair> = (0..LOW_TIP)
        .map(|i| key("low", i))
        .collect::<Result<_, _>>()?;
    let unfunded: Vec<Keypair> = (0..UNFUNDED)
        .map(|i| key("junk", i))
        .collect::<Result<_, _>>()?;
    let mut funded: Vec<Keypair> = honest.clone();
    funded.extend(low_tip.iter().cloned());
    fund(&client, &funded, 10 * UNIT).await?;
    println!(
        "node: --dev, 500 ms blocks, --pool-limit {}; {HONEST} honest senders at {}/s for {} s per phase",
        args.pool_limit, args.rate, args.seconds
    );
    let honest = Arc::new(honest);
    let mut nonces = vec![0u64; HONEST];

    // Phase 1: quiet.
    let (quiet, quiet_failed) =
        honest_phase(client.clone(), honest.clone(), &mut nonces, &args, genesis).await;
    let rss_quiet = node.rss_kib().context("reading the node's RSS")?;

    // Phase 2: the attack, then the same honest load.
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(AttackCounts::default());
    let me = Keypair::from_suri("//soak//sink")?.account_id();
    let junk: Vec<Extrinsic> = unfunded
        .iter()
        .flat_map(|k| (1..=8).map(move |n| (k, n)))
        .map(|(k, n)| transfer(k, me, n, 0, genesis))
        .collect();
    let future: Vec<Extrinsic> = low_tip
        .iter()
        .flat_map(|k| (2..2 + FUTURE_PER_KEY).map(move |n| (k, n)))
        .map(|(k, n)| transfer(k, me, n, 0, genesis))
        .collect();
    let mut attackers = vec![
        flood(node.rpc_port, 2, junk, stop.clone(), counts.clone()),
        flood(node.rpc_port, 3, future, stop.clone(), counts.clone()),
    ];
    let mut idle = Vec::new();
    let mut last = 10u8;
    while idle.len() < args.idle && last < 250 {
        match ws_handshake(loopback(last), node.rpc_port).await {
            Ok(Some(s)) => idle.push(s),
            _ => last += 1,
        }
    }
    let mut idle_metrics = Vec::new();
    for i in 0..args.idle {
        if let Ok(s) = connect_from(loopback(100 + (i % 100) as u8), node.prometheus_port).await {
            idle_metrics.push(s);
        }
    }
    // Let the flood fill the pool before timing honest transfers against it.
    let fill_deadline = Instant::now() + Duration::from_secs(30);
    let mut pool = 0.0;
    while Instant::now() < fill_deadline {
        // The idle connections hold the metrics server's places until its 5 s timeout.
        pool = node
            .metric("weft_txpool_size")
            .await
            .ok()
            .flatten()
            .unwrap_or(pool);
        if pool as usize >= args.pool_limit * 9 / 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "attack: {} idle WebSockets (from {} addresses), {} idle metrics connections, pool {pool:.0} of {}",
        idle.len(),
        last - 9,
        idle_metrics.len(),
        args.pool_limit
    );
    let (attacked, attacked_failed) =
        honest_phase(client.clone(), honest.clone(), &mut nonces, &args, genesis).await;
    let rss_attack = node.rss_kib().context("reading the node's RSS")?;
    let pool_end = node
        .metric("weft_txpool_size")
        .await
        .ok()
        .flatten()
        .unwrap_or(f64::NAN);
    stop.store(true, Ordering::Relaxed);
    for a in attackers.drain(..) {
        let _ = a.await;
    }
    drop(idle);
    drop(idle_metrics);

    if quiet_failed + attacked_failed > 0 {
        eprintln!("node log:\n{}", node.log_tail());
    }
    // Nothing honest is lost: every sender's nonce counts every transfer it sent (asked on
    // a fresh connection, once the attack has stopped).
    let client = node.cli_client().await?;
    let mut lost = 0u64;
    for (k, sent) in honest.iter().zip(&nonces) {
        let nonce = client.account(k.account_id(), None).await?.nonce;
        lost += sent.saturating_sub(nonce);
    }
    let (q50, q99) = (percentile(&quiet, 0.5), percentile(&quiet, 0.99));
    let (a50, a99) = (percentile(&attacked, 0.5), percentile(&attacked, 0.99));
    println!(
        "quiet:  {} honest transfers, inclusion p50 {q50:.2} s, p99 {q99:.2} s, {quiet_failed} failed; node RSS {:.1} MiB",
        quiet.len(),
        rss_quiet as f64 / 1024.0
    );
    println!(
        "attack: {} honest transfers, inclusion p50 {a50:.2} s, p99 {a99:.2} s, {attacked_failed} failed; node RSS {:.1} MiB; pool {pool_end:.0}",
        attacked.len(),
        rss_attack as f64 / 1024.0
    );
    println!(
        "ratio attack / quiet: p50 ×{:.2}, p99 ×{:.2}; honest lost: {lost}; attacker submissions admitted {}, refused {} (unfundable or already pooled)",
        a50 / q50,
        a99 / q99,
        counts.admitted.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed)
    );
    if lost > 0 || quiet_failed + attacked_failed > 0 {
        bail!("honest transactions were lost ({lost}) or refused ({quiet_failed} + {attacked_failed})");
    }
    Ok(())
}
