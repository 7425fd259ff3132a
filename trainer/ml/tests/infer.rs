//! Inference: the cached forward against the training forward and against recomputation,
//! generation with and without the cache, one stage against a cut, deterministic sampling,
//! loading serving weights, and the typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use tch::{Device, Kind, Tensor};
use weft_ml::config::ModelConfig;
use weft_ml::infer::{
    generate_local, sample_from_logits, sample_next, sample_uniform, FinishReason, SamplingParams,
};
use weft_ml::model::{Stage, StageSpec};
use weft_ml::Error;

fn cfg(tied: bool) -> ModelConfig {
    ModelConfig {
        vocab_size: 64,
        d_model: 32,
        n_layers: 4,
        n_heads: 4,
        seq_len: 32,
        mlp_ratio: 4,
        dropout: 0.1,
        tied_embeddings: tied,
        seed: 7,
    }
}

fn cut(cfg: &ModelConfig, n: usize) -> Vec<Stage> {
    (0..n)
        .map(|s| Stage::new(cfg, StageSpec::new(s, n).unwrap(), Device::Cpu).unwrap())
        .collect()
}

fn refs(stages: &[Stage]) -> Vec<&Stage> {
    stages.iter().collect()
}

fn ids(tokens: &[i64]) -> Tensor {
    Tensor::from_slice(tokens).view([1, tokens.len() as i64])
}

/// The training forward in evaluation mode over `input` (`[B, T]` ids), through all stages.
fn training_logits(stages: &mut [Stage], input: &Tensor) -> Tensor {
    let mut x = input.shallow_clone();
    for s in stages.iter_mut() {
        s.train = false;
        x = s.forward(&x, None).unwrap();
        s.train = true;
    }
    x
}

/// The cached forward of `input` in chunks of `chunks` positions through all stages, with
/// fresh caches; returns the logits of all positions.
fn cached_logits(stages: &[Stage], input: &Tensor, chunks: &[i64]) -> Tensor {
    let batch = input.size()[0] as usize;
    let mut caches: Vec<_> = stages.iter().map(|s| s.new_cache(batch).unwrap()).collect();
    let mut outs = Vec::new();
    let mut at = 0;
    for &n in chunks {
        let mut x = input.narrow(1, at, n);
        for (s, c) in stages.iter().zip(caches.iter_mut()) {
            x = s.forward_cached(&x, c).unwrap();
        }
        at += n;
        assert_eq!(caches[0].len() as i64, at);
        outs.push(x);
    }
    assert_eq!(at, input.size()[1]);
    Tensor::cat(&outs, 1)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn random_tokens(batch: i64, t: i64, vocab: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randint(vocab, [batch, t], (Kind::Int64, Device::Cpu))
}

#[test]
fn cached_forward_equals_training_forward() {
    for tied in [false, true] {
        let cfg = cfg(tied);
        for n in [1, 2, 4] {
            let mut stages = cut(&cfg, n);
            let input = random_tokens(2, 32, 64, 1);
            let reference = training_logits(&mut stages, &input);
            assert_eq!(reference.size(), [2, 32, 64]);
            let whole = cached_logits(&stages, &input, &[32]);
            let d = max_diff(&whole, &reference);
            assert!(d < 1e-5, "tied {tied}, {n} stages: {d}");
            // In pieces: prefill, one by one, then a block of several over a non-empty cache
            // (the masked path).
            let mut chunks = vec![5];
            chunks.extend([1; 6]);
            chunks.extend([7, 3, 1, 10]);
            let pieces = cached_logits(&stages, &input, &chunks);
            let d = max_diff(&pieces, &reference);
            assert!(d < 1e-5, "tied {tied}, {n} stages, chunked: {d}");
        }
    }
}

#[test]
fn decoding_with_cache_matches_recomputation_at_every_position() {
    let cfg = cfg(false);
    let stages = cut(&cfg, 4);
    let tokens: Vec<i64> = (0..32).map(|i| (i * 37 + 11) % 64).collect();
    let mut caches: Vec<_> = stages.iter().map(|s| s.new_cache(1).unwrap()).collect();
    for pos in 0..32usize {
        let mut x = ids(&tokens[pos..=pos]);
        for (s, c) in stages.iter().zip(caches.iter_mut()) {
            x = s.forward_cached(&x, c).unwrap();
        }
        let full = cached_logits(&stages, &ids(&tokens[..=pos]), &[pos as i64 + 1]);
        let d = max_diff(&x.select(1, 0), &full.select(1, pos as i64));
        assert!(d < 1e-5, "position {pos}: {d}");
    }
    assert!(caches.iter().all(|c| c.len() == 32 && c.remaining() == 0));
    let (k, v) = caches[1].block(0).unwrap();
    assert_eq!(k.size(), [1, 4, 32, 8]);
    assert_eq!(v.size(), [1, 4, 32, 8]);
}

#[test]
fn truncated_cache_resumes_like_a_fresh_one() {
    let cfg = cfg(true);
    let stages = cut(&cfg, 2);
    let tokens: Vec<i64> = (0..12).map(|i| (i * 5 + 3) % 64).collect();
    let mut caches: Vec<_> = stages.iter().map(|s| s.new_cache(1).unwrap()).collect();
    let run = |caches: &mut Vec<weft_ml::infer::KvCache>, t: &[i64]| {
        let mut x = ids(t);
        for (s, c) in stages.iter().zip(caches.iter_mut()) {
            x = s.forward_cached(&x, c).unwrap();
        }
        x
    };
    let _ = run(&mut caches, &tokens[..10]);
    caches.iter_mut().for_each(|c| c.truncate(6).unwrap());
    assert_eq!(caches[0].len(), 6);
    let resumed = run(&mut caches, &tokens[6..12]);
    let full = cached_logits(&stages, &ids(&tokens), &[12]);
    assert!(max_diff(&resumed, &full.narrow(1, 6, 6)) < 1e-5);
    caches.iter_mut().for_each(|c| c.clear());
    assert!(caches[1].is_empty() && caches[1].block(0).is_none());
}

#[test]
fn greedy_generation_cache_equals_recompute_and_cut_equals_whole() {
    for tied in [false, true] {
        let cfg = cfg(tied);
        let whole = cut(&cfg, 1);
        let four = cut(&cfg, 4);
        let prompt = [1u32, 2, 3, 4, 5];
        let greedy = SamplingParams::greedy();
        let mut results = Vec::new();
        for stages in [&whole, &four] {
            for use_cache in [true, false] {
                let g =
                    generate_local(&refs(stages), &prompt, 20, &greedy, &[], use_cache).unwrap();
                assert_eq!(g.tokens.len(), 20);
                assert_eq!(g.finish, FinishReason::Length);
                assert!(g.tokens.iter().all(|&t| t < 64));
                results.push(g.tokens);
            }
        }
        assert!(results.iter().all(|r| r == &results[0]), "tied {tied}");
        // Until the context is full: 32 - 5 new tokens.
        let a = generate_local(&refs(&four), &prompt, 100, &greedy, &[], true).unwrap();
        let b = generate_local(&refs(&whole), &prompt, 100, &greedy, &[], false).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.finish, FinishReason::ContextFull);
        assert_eq!(a.tokens.len(), 27);
        assert_eq!(a.tokens[..20], results[0][..]);
    }
}

#[test]
fn stop_sequences_end_generation_and_stay_out() {
    let cfg = cfg(false);
    let stages = cut(&cfg, 2);
    let prompt = [9u32, 8, 7];
    let greedy = SamplingParams::greedy();
    let full = generate_local(&refs(&stages), &prompt, 12, &greedy, &[], true).unwrap();
    let t = &full.tokens;
    // Stop at the first occurrence of t[3..5] (which may occur earlier than at 3).
    let stop = vec![t[3..5].to_vec(), vec![63, 63, 63, 63, 63, 63, 63]];
    let g = generate_local(&refs(&stages), &prompt, 12, &greedy, &stop, true).unwrap();
    assert_eq!(g.finish, FinishReason::Stop);
    let first = (1..t.len()).find(|&e| t[..=e].ends_with(&t[3..5])).unwrap();
    assert_eq!(g.tokens, t[..first - 1]);
    assert!(g.tokens.len() <= 3);
    // Zero tokens asked: nothing, Length.
    let g = generate_local(&refs(&stages), &prompt, 0, &greedy, &stop, true).unwrap();
    assert_eq!((g.tokens.len(), g.finish), (0, FinishReason::Length));
    // A prompt that fills the context: nothing, ContextFull.
    let g = generate_local(&refs(&stages), &[1; 32], 5, &greedy, &[], true).unwrap();
    assert_eq!((g.tokens.len(), g.finish), (0, FinishReason::ContextFull));
}

#[test]
fn sampling_is_reproducible_and_filters_work() {
    let cfg = cfg(false);
    let stages = cut(&cfg, 4);
    let s = refs(&stages);
    let prompt = [3u32, 1, 4, 1, 5];
    let hot = |seed| SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        seed,
    };
    let a = generate_local(&s, &prompt, 16, &hot(42), &[], true).unwrap();
    let b = generate_local(&s, &prompt, 16, &hot(42), &[], false).unwrap();
    assert_eq!(a, b);
    let whole = cut(&cfg, 1);
    assert_eq!(
        a,
        generate_local(&refs(&whole), &prompt, 16, &hot(42), &[], true).unwrap()
    );
    let others: Vec<_> = (0..4)
        .map(|seed| generate_local(&s, &prompt, 16, &hot(seed), &[], true).unwrap())
        .collect();
    assert!(others.iter().any(|o| o.tokens != a.tokens));
    let greedy = generate_local(&s, &prompt, 16, &SamplingParams::greedy(), &[], true).unwrap();
    // Near-uniform logits: sampling at temperature 1 is not greedy.
    assert_ne!(a.tokens, greedy.tokens);
    let top1 = SamplingParams {
        top_k: 1,
        ..hot(42)
    };
    assert_eq!(
        generate_local(&s, &prompt, 16, &top1, &[], true).unwrap(),
        greedy
    );
    let tiny_p = SamplingParams {
        top_p: 1e-6,
        ..hot(42)
    };
    assert_eq!(
        generate_local(&s, &prompt, 16, &tiny_p, &[], true).unwrap(),
        greedy
    );
    let topk = SamplingParams {
        top_k: 3,
        temperature: 2.0,
        ..hot(5)
    };
    let g = generate_local(&s, &prompt, 16, &topk, &[], true).unwrap();
    assert_eq!(
        g,
        generate_local(&s, &prompt, 16, &topk, &[], false).unwrap()
    );
}

#[test]
fn sample_next_greedy_ties_distribution_and_filters() {
    let p = SamplingParams::greedy();
    let row = Tensor::from_slice(&[0.5f32, 2.0, 2.0, -1.0]);
    assert_eq!(sample_next(&row, &p, 0).unwrap(), 1);
    assert_eq!(sample_from_logits(&[-0.0, 0.0], &p, 0).unwrap(), 0);
    // The draw is a pure function of (seed, position).
    assert_eq!(sample_uniform(1, 2), sample_uniform(1, 2));
    assert_ne!(sample_uniform(1, 2), sample_uniform(1, 3));
    assert!((0..1000).all(|i| (0.0..1.0).contains(&sample_uniform(9, i))));
    let json = r#"{"temperature": 0.7, "top_p": 0.9, "seed": 5}"#;
    let parsed: SamplingParams = serde_json::from_str(json).unwrap();
    assert_eq!((parsed.top_k, parsed.top_p, parsed.seed), (0, 0.9, 5));
    // bf16 rows are accepted (converted to f32).
    assert_eq!(sample_next(&row.to_kind(Kind::BFloat16), &p, 0).unwrap(), 1);
    // -inf logits are never drawn.
    let masked = [f32::NEG_INFINITY, 0.0, 0.0];
    let hot = SamplingParams {
        temperature: 1.0,
        ..SamplingParams::greedy()
    };
    for pos in 0..200 {
        assert_ne!(sample_from_logits(&masked, &hot, pos).unwrap(), 0);
    }
    // P(1) = 3/4 for logits [0, ln 3].
    let logits = [0.0f32, 3f32.ln()];
    let ones = (0..4000)
        .filter(|&pos| sample_from_logits(&logits, &hot, pos).unwrap() == 1)
        .count();
    assert!((2850..3150).contains(&ones), "{ones}");
    // top_p 0.5 over [0.1, 0.6, 0.3] keeps only index 1; 0.7 keeps 1 and 2.
    let logits: Vec<f32> = [0.1f32, 0.6, 0.3].iter().map(|p| p.ln()).collect();
    let half = SamplingParams { top_p: 0.5, ..hot };
    assert!((0..300).all(|pos| sample_from_logits(&logits, &half, pos).unwrap() == 1));
    let most = SamplingParams { top_p: 0.7, ..hot };
    let drawn: std::collections::BTreeSet<u32> = (0..300)
        .map(|pos| sample_from_logits(&logits, &most, pos).unwrap())
        .collect();
    assert_eq!(drawn, [1, 2].into());
    let k2 = SamplingParams { top_k: 2, ..hot };
    let drawn: std::collections::BTreeSet<u32> = (0..300)
        .map(|pos| sample_from_logits(&logits, &k2, pos).unwrap())
        .collect();
    assert_eq!(drawn, [1, 2].into());
}

#[test]
fn errors_are_typed() {
    let cfg = cfg(false);
    let stages = cut(&cfg, 2);
    let s = refs(&stages);
    let greedy = SamplingParams::greedy();
    // Context overflow.
    let mut c0 = stages[0].new_cache(1).unwrap();
    let _ = stages[0].forward_cached(&ids(&[1; 30]), &mut c0).unwrap();
    let e = stages[0]
        .forward_cached(&ids(&[1; 3]), &mut c0)
        .unwrap_err();
    assert!(
        matches!(e, Error::ContextFull { len: 33, limit: 32 }),
        "{e}"
    );
    assert_eq!(c0.len(), 30);
    let _ = stages[0].forward_cached(&ids(&[1; 2]), &mut c0).unwrap();
    assert!(matches!(
        stages[0].forward_cached(&ids(&[1]), &mut c0),
        Err(Error::ContextFull { .. })
    ));
    // Bad token ids.
    let mut c0 = stages[0].new_cache(1).unwrap();
    let e = stages[0]
        .forward_cached(&ids(&[1, 64]), &mut c0)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::TokenOutOfRange {
                token: 64,
                vocab: 64
            }
        ),
        "{e}"
    );
    let e = stages[0].forward_cached(&ids(&[-1]), &mut c0).unwrap_err();
    assert!(matches!(e, Error::TokenOutOfRange { token: -1, .. }), "{e}");
    assert!(c0.is_empty());
    let e = generate_local(&s, &[1, 64], 4, &greedy, &[], true).unwrap_err();
    assert!(matches!(e, Error::TokenOutOfRange { token: 64, .. }), "{e}");
    // Shapes, kinds, batch, wrong stage.
    let f = |t: &[i64]| Tensor::zeros(t, (Kind::Float, Device::Cpu));
    assert!(matches!(
        stages[0].forward_cached(&f(&[1, 2, 32]), &mut c0),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        stages[0].forward_cached(&Tensor::zeros([1, 0], (Kind::Int64, Device::Cpu)), &mut c0),
        Err(Error::Shape(_))
    ));
    let mut c1 = stages[1].new_cache(1).unwrap();
    assert!(matches!(
        stages[1].forward_cached(&f(&[1, 2, 31]), &mut c1),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        stages[1].forward_cached(&f(&[1, 2]), &mut c1),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        stages[1].forward_cached(&f(&[2, 2, 32]), &mut c1),
        Err(Error::Cache(_))
    ));
    assert!(matches!(
        stages[1].forward_cached(&ids(&[1, 2]), &mut c0),
        Err(Error::Cache(_))
    ));
    assert!(matches!(stages[0].new_cache(0), Err(Error::Cache(_))));
    // Prompts.
    assert!(matches!(
        generate_local(&s, &[], 4, &greedy, &[], true),
        Err(Error::EmptyPrompt)
    ));
    assert!(matches!(
        generate_local(&s, &[1; 33], 4, &greedy, &[], true),
        Err(Error::PromptTooLong { len: 33, limit: 32 })
    ));
    assert!(matches!(
        generate_local(&s, &[1], 4, &greedy, &[vec![]], true),
        Err(Error::Sampling(_))
    ));
    // Stages that are not a whole cut.
    assert!(matches!(
        generate_local(&s[..1], &[1], 4, &greedy, &[], true),
        Err(Error::Pipeline(_))
    ));
    assert!(matches!(
        generate_local(&[s[1], s[0]], &[1], 4, &greedy, &[], true),
        Err(Error::Pipeline(_))
    ));
    // Sampling parameters.
    for (temperature, top_p) in [
        (f32::NAN, 1.0),
        (-1.0, 1.0),
        (f32::INFINITY, 1.0),
        (1.0, 0.0),
        (1.0, 1.5),
        (1.0, f32::NAN),
        (1.0, -0.1),
    ] {
        let p = SamplingParams {
            temperature,
            top_p,
            ..greedy
        };
        assert!(matches!(p.validate(), Err(Error::Sampling(_))), "{p:?}");
        assert!(matches!(
            generate_local(&s, &[1], 4, &p, &[], true),
            Err(Error::Sampling(_))
        ));
        assert!(matches!(
            sample_from_logits(&[0.0, 1.0], &p, 0),
            Err(Error::Sampling(_))
        ));
    }
    assert!(SamplingParams::default().validate().is_ok());
    // Bad logits.
    for bad in [
        vec![0.0, f32::NAN],
        vec![f32::INFINITY, 0.0],
        vec![f32::NEG_INFINITY; 3],
        vec![],
    ] {
        assert!(matches!(
            sample_from_logits(&bad, &greedy, 0),
            Err(Error::Sampling(_))
        ));
    }
    assert!(matches!(
        sample_next(
            &Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)),
            &greedy,
            0
        ),
        Err(Error::Sampling(_))
    ));
    assert!(matches!(
        sample_next(&Tensor::zeros([3], (Kind::Int64, Device::Cpu)), &greedy, 0),
        Err(Error::Sampling(_))
    ));
}

#[test]
fn serving_weights_load_by_name() {
    let trained = cfg(true);
    let other = ModelConfig {
        seed: 99,
        ..trained.clone()
    };
    let spec = StageSpec::new(3, 4).unwrap();
    let src = Stage::new(&trained, spec, Device::Cpu).unwrap();
    let named: Vec<(String, Tensor)> = src
        .params()
        .iter()
        .map(|(n, t)| (n.clone(), t.detach().copy()))
        .collect();
    assert!(named.iter().any(|(n, _)| n == "wte.weight"));
    // Built from another seed, then loaded (in reverse order): identical parameters.
    let mut dst = Stage::new(&other, spec, Device::Cpu).unwrap();
    let reversed: Vec<_> = named
        .iter()
        .rev()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    dst.load_params(&reversed).unwrap();
    for ((n, a), (m, b)) in src.params().iter().zip(dst.params()) {
        assert_eq!(n, m);
        assert!(a.equal(b), "{n}");
    }
    let built = Stage::from_params(&other, spec, Device::Cpu, &named).unwrap();
    assert!(built.params()[0].1.equal(&src.params()[0].1));
    // Missing, extra, duplicate, wrong shape, wrong kind: typed errors, nothing copied.
    let bad_sets: Vec<Vec<(String, Tensor)>> = vec![
        named[1..]
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect(),
        named
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .chain([(
                "wpe.weight".to_string(),
                Tensor::zeros([32, 32], (Kind::Float, Device::Cpu)),
            )])
            .collect(),
        named
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .chain([(named[0].0.clone(), named[0].1.shallow_clone())])
            .collect(),
        named
            .iter()
            .enumerate()
            .map(|(i, (n, t))| {
                let t = if i == 0 {
                    Tensor::zeros([1], (Kind::Float, Device::Cpu))
                } else {
                    t.shallow_clone()
                };
                (n.clone(), t)
            })
            .collect(),
        named
            .iter()
            .enumerate()
            .map(|(i, (n, t))| {
                let t = if i == 1 {
                    t.to_kind(Kind::Double)
                } else {
                    t.shallow_clone()
                };
                (n.clone(), t)
            })
            .collect(),
    ];
    let mut fresh = Stage::new(&other, spec, Device::Cpu).unwrap();
    let untouched = fresh.params()[0].1.copy();
    for bad in &bad_sets {
        assert!(matches!(fresh.load_params(bad), Err(Error::Checkpoint(_))));
    }
    assert!(fresh.params()[0].1.equal(&untouched));
}

#[test]
fn serving_stage_loads_trained_checkpoint_weights() {
    use std::sync::Arc;
    use weft_ml::checkpoint;
    use weft_ml::config::TrainConfig;
    use weft_ml::data::{Batcher, TokenFile, TokenSource};
    use weft_ml::schedule::{build_workers, run_step_in_process};
    use weft_ml::worker::WorkerOptions;

    let cfg = ModelConfig {
        tied_embeddings: true,
        ..ModelConfig::tiny()
    };
    let train = TrainConfig::tiny();
    let text = "the quick brown fox jumps over the lazy dog. ".repeat(20);
    let src: Arc<dyn TokenSource> = Arc::new(TokenFile::from_bytes(text.as_bytes()));
    let data = Batcher::new(src, train.micro_batch_size, cfg.seq_len, cfg.vocab_size).unwrap();
    let mut workers = build_workers(
        &cfg,
        &train,
        2,
        &data,
        Device::Cpu,
        WorkerOptions::default(),
    )
    .unwrap();
    for step in 0..2 {
        run_step_in_process(&mut workers, step).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = (0..2)
        .map(|i| dir.path().join(format!("stage{i}.safetensors")))
        .collect();
    for (w, p) in workers.iter().zip(&paths) {
        checkpoint::save(w, p).unwrap();
    }
    let mut served = cut(&cfg, 2);
    for (s, p) in served.iter_mut().zip(&paths) {
        assert_eq!(checkpoint::load_weights(s, p).unwrap(), 2);
    }
    for (w, s) in workers.iter().zip(&served) {
        for ((n, a), (_, b)) in w.stage().params().iter().zip(s.params()) {
            assert!(a.equal(b), "{n}");
        }
    }
    let trained: Vec<&Stage> = workers.iter().map(|w| w.stage()).collect();
    let prompt: Vec<u32> = b"the qu".iter().map(|&b| u32::from(b)).collect();
    let greedy = SamplingParams::greedy();
    let a = generate_local(&trained, &prompt, 8, &greedy, &[], false).unwrap();
    let b = generate_local(&refs(&served), &prompt, 8, &greedy, &[], true).unwrap();
    assert_eq!(a, b);
    // The wrong stage or another model is refused.
    assert!(checkpoint::load_weights(&mut served[1], &paths[0]).is_err());
    let other = ModelConfig { seed: 3, ..cfg };
    let mut s0 = Stage::new(&other, StageSpec::new(0, 2).unwrap(), Device::Cpu).unwrap();
    assert!(matches!(
        checkpoint::load_weights(&mut s0, &paths[0]),
        Err(Error::Checkpoint(_))
    ));
}

#[test]
fn cuda_cached_forward_matches_cpu_when_available() {
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: skipped");
        return;
    }
    let cfg = cfg(false);
    let cpu = cut(&cfg, 2);
    let gpu: Vec<Stage> = (0..2)
        .map(|s| Stage::new(&cfg, StageSpec::new(s, 2).unwrap(), Device::Cuda(0)).unwrap())
        .collect();
    let input = random_tokens(2, 32, 64, 3);
    let chunks = [5, 1, 1, 7, 18];
    let a = cached_logits(&cpu, &input, &chunks);
    let b = cached_logits(&gpu, &input, &chunks).to_device(Device::Cpu);
    let d = max_diff(&a, &b);
    assert!(d < 1e-4, "{d}");
    let greedy = SamplingParams::greedy();
    let g = generate_local(&refs(&gpu), &[1, 2, 3], 10, &greedy, &[], true).unwrap();
    assert_eq!(
        g,
        generate_local(&refs(&gpu), &[1, 2, 3], 10, &greedy, &[], false).unwrap()
    );
    // bf16 autocast: runs, keeps float activations between stages.
    let mut bf = gpu;
    bf.iter_mut().for_each(|s| s.autocast_bf16 = true);
    let mut c0 = bf[0].new_cache(1).unwrap();
    let h = bf[0].forward_cached(&ids(&[1, 2, 3]), &mut c0).unwrap();
    assert_eq!(h.kind(), Kind::Float);
    let g = generate_local(&refs(&bf), &[1, 2, 3], 10, &greedy, &[], true).unwrap();
    assert_eq!(g.tokens.len(), 10);
}
