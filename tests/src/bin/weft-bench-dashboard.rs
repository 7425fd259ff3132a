//! Benchmark: how long the dashboard's pages take to load in a real headless Chromium on a
//! long chain with a trained run, against the same pages on the same node while it is still
//! empty (the baseline, measured in the same run), and whether the node's memory grows while
//! pages stay open or come and go (issue 14).
//!
//! ```sh
//! weft-bench-dashboard --blocks 10000 --commitments 1000 --block-time 10ms
//! ```
//!
//! 1. A `weft-node --dev` with `--block-time`; //Alice and //Bob bond and validate, two trainers
//!    are funded and the tiny 2-stage run is registered with no audits.
//! 2. **Baseline**: each page (chain, run, account of a trainer, a block) is loaded
//!    `--samples` times; the time from navigation until the page drew with its data
//!    (`#page[data-since-navigation-ms]`) is recorded.
//! 3. Two real `weft-trainer train` processes train the run until the chain holds
//!    `--commitments` commitments, then stop; the node runs on to `--blocks` blocks.
//! 4. **Loaded**: the same pages again. Reported: median per page, both phases, and the ratio.
//! 5. **Memory**: the node restarted on the same database with 200 ms blocks and left
//!    `--hold` seconds to warm up; then its RSS every 10 s over `--hold` seconds with no
//!    page open (what the chain adds by itself), over twice that with the run page open (it
//!    redraws on new heads), and across `--visits` browsers that open the run page and
//!    close.

use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};
use weft_primitives::Keypair;
use weft_tests::browser::Browser;
use weft_tests::runs::{tiny_run_of, trainer_args};
use weft_tests::{run_cli, wait_for, Node, Spawned};

const TRAINERS: [&str; 2] = ["//BenchDashA", "//BenchDashB"];

struct Args {
    blocks: u64,
    commitments: u64,
    block_time: String,
    samples: usize,
    hold: u64,
    visits: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        blocks: 10_000,
        commitments: 1_000,
        block_time: "10ms".into(),
        samples: 5,
        hold: 60,
        visits: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--blocks" => args.blocks = value.parse().context("--blocks")?,
            "--commitments" => args.commitments = value.parse().context("--commitments")?,
            "--block-time" => args.block_time = value,
            "--samples" => args.samples = value.parse().context("--samples")?,
            "--hold" => args.hold = value.parse().context("--hold")?,
            "--visits" => args.visits = value.parse().context("--visits")?,
            other => bail!(
                "unknown flag {other} (--blocks N, --commitments N, --block-time 10ms, --samples N, --hold SECONDS, --visits N)"
            ),
        }
    }
    Ok(args)
}

/// `weft <args>`, which must succeed.
async fn cli(url: &str, args: &[String]) -> Result<()> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_cli(url, &refs).await?;
    if !out.success() {
        bail!("weft {args:?} failed:\n{out}");
    }
    Ok(())
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The pages measured: name and URL.
fn pages(node: &Node, trainer: &str, block: u64) -> Vec<(&'static str, String)> {
    let base = node.http_url();
    vec![
        ("chain", format!("{base}/#/chain")),
        ("run", format!("{base}/#/run/0")),
        ("account", format!("{base}/#/account/{trainer}")),
        ("block", format!("{base}/#/block/{block}")),
    ]
}

async fn measure(b: &mut Browser, pages: &[(&str, String)], samples: usize) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for (_, url) in pages {
        let mut times = Vec::new();
        for _ in 0..samples {
            times.push(b.load_ms(url, Duration::from_secs(60)).await?);
        }
        out.push(median(times));
    }
    Ok(out)
}

/// Commitments on chain: the slots' next steps summed (one replica per stage).
async fn commitments(c: &weft_cli::Client) -> Result<u64> {
    let a = c.stage_assignments(0, None).await?;
    Ok(a.stages.iter().map(|s| s.replicas[0].next_step).sum())
}

/// A browser showing the run page, drawn with its data.
async fn run_page(node: &Node) -> Result<Browser> {
    let mut b = Browser::open("about:blank", (1280, 1000)).await?;
    b.load_ms(
        &format!("{}/#/run/0", node.http_url()),
        Duration::from_secs(60),
    )
    .await?;
    Ok(b)
}

/// The node's RSS every 10 s for `span`, as `a → b → …`.
async fn rss_series(node: &Node, span: Duration) -> String {
    let mut out = vec![mib(node.rss_kib())];
    for _ in 0..(span.as_secs() / 10).max(1) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        out.push(mib(node.rss_kib()));
    }
    out.join(" → ")
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let mut node = Node::start(
        &dir.path().join("node"),
        &["--block-time", &args.block_time],
    )
    .await?;
    let url = node.ws_url();
    let c = node.cli_client().await?;

    // --- set-up: validators, funded trainers, the run ----------------------------------
    for who in TRAINERS {
        cli(
            &url,
            &strings(&[
                "transfer", "--from", "//Alice", "--to", who, "--amount", "1000",
            ]),
        )
        .await?;
    }
    for v in ["//Alice", "//Bob"] {
        cli(
            &url,
            &strings(&["stake", "bond", "--from", v, "--amount", "10000"]),
        )
        .await?;
        cli(&url, &strings(&["stake", "validate", "--from", v])).await?;
    }
    let steps = args.commitments / 2 + 50;
    let hyper = format!(
        r#"{{"micro_batch_size":2,"micro_batches":1,"lr":0.01,"warmup_steps":2,"total_steps":{steps}}}"#
    );
    cli(
        &url,
        &tiny_run_of(&hyper, 2, "0%", &["--max-steps", &steps.to_string()]),
    )
    .await?;
    let trainer = Keypair::from_suri(TRAINERS[0])?.account_id().to_string();

    // --- baseline: the empty chain -------------------------------------------------------
    let mut b = Browser::open("about:blank", (1280, 1000)).await?;
    let early = pages(&node, &trainer, 1);
    let baseline = measure(&mut b, &early, args.samples).await?;
    let best0 = c.best_header().await?.number;

    // --- train, then run on to the block count -------------------------------------------
    let started = Instant::now();
    let mut procs = Vec::new();
    for who in TRAINERS {
        let mut a = vec!["train".to_string()];
        a.extend(trainer_args(&url, who, 0, dir.path()));
        procs.push(Spawned::start(
            "weft-trainer",
            &a,
            dir.path(),
            who.trim_start_matches("//"),
        )?);
    }
    let target = args.commitments;
    wait_for(Duration::from_secs(3600), "the commitments", || async {
        (commitments(&c).await.ok()? >= target).then_some(())
    })
    .await
    .with_context(|| {
        procs
            .iter()
            .map(Spawned::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let trained = started.elapsed();
    for p in &procs {
        p.terminate()?;
    }
    let made = commitments(&c).await?;
    let blocks = args.blocks;
    wait_for(Duration::from_secs(3600), "the blocks", || async {
        (c.best_header().await.ok()?.number >= blocks).then_some(())
    })
    .await?;
    let best = c.best_header().await?.number;
    println!(
        "chain: {best} blocks (baseline measured at #{best0}), {made} commitments trained in {:.0} s",
        trained.as_secs_f64()
    );

    // --- loaded: the same pages ------------------------------------------------------------
    let late = pages(&node, &trainer, best.saturating_sub(5));
    let loaded = measure(&mut b, &late, args.samples).await?;
    println!(
        "page load, navigation → drawn with data, median of {} (ms):",
        args.samples
    );
    println!("| page | empty chain | {best} blocks, {made} commitments | ratio |");
    println!("|---|---|---|---|");
    for (i, (name, _)) in late.iter().enumerate() {
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} |",
            baseline[i],
            loaded[i],
            loaded[i] / baseline[i].max(1.0)
        );
    }

    // --- memory: no page, a page held open, pages that come and go --------------------------
    // On the same chain at a calmer pace (the node restarted with 200 ms blocks), each phase
    // `--hold` seconds long, so that what the chain adds itself shows in the first phase.
    drop(b);
    node.kill9()?;
    node.restart(&["--block-time", "200ms"]).await?;
    let hold = Duration::from_secs(args.hold);
    // Warm-up after the restart (caches fill), not measured.
    tokio::time::sleep(hold).await;
    let quiet = rss_series(&node, hold).await;
    let b = run_page(&node).await?;
    let open = rss_series(&node, 2 * hold).await;
    drop(b);
    let visits_from = node.rss_kib();
    for _ in 0..args.visits {
        drop(run_page(&node).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let visits_to = node.rss_kib();
    println!("node RSS at 200 ms blocks, sampled every 10 s:");
    println!("| phase | RSS |");
    println!("|---|---|");
    println!("| no page open, {} s | {quiet} |", args.hold);
    println!(
        "| the run page open (redrawn every 3 s), {} s | {open} |",
        2 * args.hold
    );
    println!(
        "| {} browsers open the run page and close | {} → {} |",
        args.visits,
        mib(visits_from),
        mib(visits_to)
    );
    Ok(())
}
