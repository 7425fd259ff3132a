//! Block production for a validator running the dev engine: every `block_time`, take the
//! pool's ready transactions, build a block on the best block, write it, and tell the pool.
//! Blocks are built even when the pool is empty, so the chain's clock advances steadily.

use crate::chain::Chain;
use crate::metrics::Metrics;
use crate::pool::Pool;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weft_primitives::AccountId;
use weft_runtime::limits::MAX_EXTRINSICS_PER_BLOCK;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Produces one block now. Returns its number.
pub fn produce_block(
    chain: &Chain,
    pool: &Pool,
    metrics: &Metrics,
    author: AccountId,
) -> Result<u64, crate::chain::ChainError> {
    let candidates = pool.candidates(&chain.best_state(), MAX_EXTRINSICS_PER_BLOCK);
    let built = chain.build_block(&candidates, author, now_ms())?;
    let rejected: Vec<_> = built.rejected.iter().map(|(h, _)| *h).collect();
    for (hash, reason) in &built.rejected {
        tracing::debug!(%hash, %reason, "dropped invalid transaction while building");
    }
    pool.on_block(
        built.hash,
        built.header.number,
        true,
        &built.included,
        &rejected,
        &chain.best_state(),
    );
    metrics
        .block_import_seconds
        .observe(built.elapsed.as_secs_f64());
    metrics
        .block_extrinsics
        .observe(built.included.len() as f64);
    metrics.set_height("best", built.header.number);
    metrics.set_height("finalized", built.header.number);
    metrics.txpool_size.set(pool.len() as i64);
    tracing::info!(
        "🧱 block #{} {} ({} extrinsics, {:.1} ms)",
        built.header.number,
        built.hash,
        built.included.len(),
        built.elapsed.as_secs_f64() * 1000.0
    );
    Ok(built.header.number)
}

/// Runs block production until the task is cancelled.
pub async fn run(
    chain: Arc<Chain>,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    author: AccountId,
    block_time: Duration,
) {
    let mut ticker = tokio::time::interval(block_time);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let (c, p, m) = (chain.clone(), pool.clone(), metrics.clone());
        let result = tokio::task::spawn_blocking(move || produce_block(&c, &p, &m, author)).await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "block production failed"),
            Err(e) => tracing::error!(error = %e, "block production task panicked"),
        }
    }
}
