//! `weft-trainer bench-infer`: tokens/s and time to first token of generation through S
//! stage holders on loopback (each on its own libp2p peer, driven by the router, KV caches
//! per session), against single-process generation with the same weights and KV caching,
//! at 1 and N concurrent sessions. Both run in this process, alternately, so that load from
//! elsewhere on the machine hits both alike; the ratio is what to read.

use super::model_args::ModelArgs;
use std::time::{Duration, Instant};
use tch::Device;
use weft_trainer::ml::infer::{generate_local, SamplingParams};
use weft_trainer::ml::model::{Stage, StageSpec};
use weft_trainer::net::inference::{RequestBody, Sampling};
use weft_trainer::serve::loopback::LoopbackPipeline;
use weft_trainer::serve::ServeLimits;

/// What one configuration measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    tokens_per_s: f64,
    ttft: Duration,
}

fn prompt(len: usize, vocab: i64, salt: usize) -> Vec<u32> {
    (0..len)
        .map(|i| ((i * 7 + salt * 13 + 1) as i64 % vocab) as u32)
        .collect()
}

/// `sessions` generations at once in one process, each on its own copy of the whole model.
fn single_process(
    model: &weft_trainer::ml::config::ModelConfig,
    sessions: usize,
    prompt_len: usize,
    new_tokens: usize,
) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let handles: Vec<_> = (0..sessions)
        .map(|s| {
            let model = model.clone();
            std::thread::spawn(move || -> anyhow::Result<(usize, Duration)> {
                let stage = Stage::new(&model, StageSpec::whole(), Device::Cpu)?;
                let p = prompt(prompt_len, model.vocab_size, s);
                let t0 = Instant::now();
                // Time to first token: the prefill and one draw.
                generate_local(&[&stage], &p, 1, &SamplingParams::greedy(), &[], true)?;
                let ttft = t0.elapsed();
                let g = generate_local(
                    &[&stage],
                    &p,
                    new_tokens,
                    &SamplingParams::greedy(),
                    &[],
                    true,
                )?;
                Ok((g.tokens.len(), ttft))
            })
        })
        .collect();
    let mut tokens = 0;
    let mut ttft = Duration::ZERO;
    for h in handles {
        let (n, t) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a generation thread panicked"))??;
        tokens += n;
        ttft += t;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Measured {
        tokens_per_s: tokens as f64 / secs,
        ttft: ttft / sessions as u32,
    })
}

/// `sessions` generations at once through the loopback pipeline.
async fn pipelined(
    pipe: &LoopbackPipeline,
    next_id: &mut u64,
    sessions: usize,
    prompt_len: usize,
    new_tokens: usize,
    vocab: i64,
) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let runs = (0..sessions).map(|s| {
        *next_id += 1;
        let body = RequestBody {
            run: 0,
            prompt: prompt(prompt_len, vocab, s),
            max_new_tokens: new_tokens as u32,
            sampling: Sampling::default(),
            stop: vec![],
        };
        let plan = pipe.plan(*next_id, body);
        async move {
            let t0 = Instant::now();
            let mut first = None;
            let c = pipe
                .router
                .generate(&plan, |_| {
                    first.get_or_insert_with(|| t0.elapsed());
                    true
                })
                .await?;
            Ok::<_, anyhow::Error>((c.tokens.len(), first.unwrap_or_default()))
        }
    });
    let results = futures::future::join_all(runs).await;
    let secs = started.elapsed().as_secs_f64();
    let mut tokens = 0;
    let mut ttft = Duration::ZERO;
    for r in results {
        let (n, t) = r?;
        tokens += n;
        ttft += t;
    }
    Ok(Measured {
        tokens_per_s: tokens as f64 / secs,
        ttft: ttft / sessions as u32,
    })
}

/// Runs the benchmark (see the module docs).
pub fn bench_infer(
    stages: usize,
    concurrency: &[usize],
    prompt_len: usize,
    new_tokens: usize,
    rounds: usize,
    args: &ModelArgs,
) -> anyhow::Result<()> {
    let (model, _, _) = args.load(1)?;
    model.validate_stages(stages)?;
    if prompt_len + new_tokens > model.seq_len as usize {
        anyhow::bail!(
            "prompt {prompt_len} + {new_tokens} new tokens exceed the context of {}",
            model.seq_len
        );
    }
    println!(
        "model d_model {} layers {} heads {} seq {} vocab {}; {stages} stages on loopback, \
         prompt {prompt_len}, {new_tokens} new tokens, greedy, CPU",
        model.d_model, model.n_layers, model.n_heads, model.seq_len, model.vocab_size
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let max = concurrency.iter().copied().max().unwrap_or(1);
        let limits = ServeLimits {
            max_sessions: max.max(1) * 2,
            ..ServeLimits::default()
        };
        let pipe = LoopbackPipeline::start(&model, &vec![1; stages], limits).await?;
        let mut next_id = 0;
        // Warm-up: load the served weights on every holder.
        pipelined(&pipe, &mut next_id, 1, prompt_len, 2, model.vocab_size).await?;
        println!(
            "{:>8} {:>14} {:>14} {:>8} {:>12} {:>12}",
            "sessions", "1-proc tok/s", "piped tok/s", "ratio", "1-proc TTFT", "piped TTFT"
        );
        for &n in concurrency {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for _ in 0..rounds.max(1) {
                let whole = model.clone();
                let one = tokio::task::spawn_blocking(move || {
                    single_process(&whole, n, prompt_len, new_tokens)
                })
                .await??;
                a.push(one);
                b.push(
                    pipelined(
                        &pipe,
                        &mut next_id,
                        n,
                        prompt_len,
                        new_tokens,
                        model.vocab_size,
                    )
                    .await?,
                );
            }
            let mean = |v: &[Measured]| {
                let k = v.len() as f64;
                (
                    v.iter().map(|m| m.tokens_per_s).sum::<f64>() / k,
                    v.iter().map(|m| m.ttft.as_secs_f64()).sum::<f64>() / k,
                )
            };
            let ((ta, fa), (tb, fb)) = (mean(&a), mean(&b));
            println!(
                "{n:>8} {ta:>14.1} {tb:>14.1} {:>8.2} {:>10.1}ms {:>10.1}ms",
                tb / ta,
                fa * 1e3,
                fb * 1e3
            );
        }
        Ok::<_, anyhow::Error>(())
    })
}
