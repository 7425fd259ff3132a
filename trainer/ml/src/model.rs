//! The model: a decoder-only GPT-style transformer, cut into pipeline stages.
//!
//! # Architecture
//!
//! Token embedding `wte` plus learned position embedding `wpe`, then `n_layers` pre-norm
//! blocks `x += attn(ln_1(x)); x += mlp(ln_2(x))` with causal multi-head self-attention
//! (one fused `qkv` projection, [`Tensor::scaled_dot_product_attention`] with `is_causal`)
//! and a GELU (tanh) MLP, then a final LayerNorm `ln_f` and the LM head, which is either its
//! own matrix `lm_head.weight` or the token embedding (`tied_embeddings`).
//!
//! # Stages
//!
//! [`StageSpec`] cuts the blocks into `n_stages` contiguous ranges as evenly as possible
//! (the first `n_layers % n_stages` stages get one block more). Stage 0 also holds the
//! embeddings; the last stage holds `ln_f`, the head and the loss. A [`Stage`] owns an
//! `nn::VarStore` with only its own parameters: no participant builds the whole model.
//! With tied embeddings and more than one stage, the first and the last stage each hold a
//! copy of `wte.weight`; the pipeline sums their gradients so the copies stay equal.
//!
//! # Stage-independent deterministic initialisation
//!
//! Every parameter is filled from its own random stream, keyed by the run seed and the
//! parameter's canonical name only: `blake3::derive_key("weft-trainer init v1")` keyed
//! hasher over `seed (u64 LE) ‖ name`, read as an extendable output. So stage k's weights
//! are the same whether it is built alone, inside another cut of the model, or on another
//! replica, device or operating system. Normal variates use the Irwin–Hall sum of four
//! 16-bit uniforms (mean 0, variance 1, support ±2√3), computed with exact integer
//! arithmetic and one correctly rounded multiplication, so no `libm` call can make two
//! platforms disagree. Matrices and embeddings get σ = 0.02; the two residual output
//! projections per block get σ = 0.02/√(2·n_layers) (GPT-2); biases are zero and
//! LayerNorm gains one.
//!
//! Parameter names are canonical (`h.3.attn.qkv.weight`) and always handled in sorted
//! byte order, which is the order commitments and checkpoints use.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use std::ops::Range;
use tch::{nn, Device, Kind, Tensor};

/// Which stage of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageSpec {
    /// Index of this stage, from 0.
    pub stage: usize,
    /// Number of stages of the pipeline.
    pub n_stages: usize,
}

impl StageSpec {
    /// Stage `stage` of `n_stages`; errors if out of range.
    pub fn new(stage: usize, n_stages: usize) -> Result<Self> {
        if n_stages == 0 || stage >= n_stages {
            return Err(Error::Config(format!(
                "stage {stage} of {n_stages} does not exist"
            )));
        }
        Ok(StageSpec { stage, n_stages })
    }

    /// The whole model as one stage.
    pub fn whole() -> Self {
        StageSpec {
            stage: 0,
            n_stages: 1,
        }
    }

    /// Whether this stage holds the embeddings.
    pub fn is_first(&self) -> bool {
        self.stage == 0
    }

    /// Whether this stage holds the final norm, the head and the loss.
    pub fn is_last(&self) -> bool {
        self.stage + 1 == self.n_stages
    }

    /// The blocks of this stage: contiguous, balanced, the first `n_layers % n_stages`
    /// stages one block longer.
    pub fn layer_range(&self, n_layers: i64) -> Range<i64> {
        let s = self.n_stages as i64;
        let k = self.stage as i64;
        let (base, extra) = (n_layers / s, n_layers % s);
        let start = k * base + k.min(extra);
        let len = base + i64::from(k < extra);
        start..start + len
    }
}

/// How a parameter is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Init {
    Zeros,
    Ones,
    Normal(f64),
}

/// The canonical names and shapes of the parameters of one stage, sorted by name.
pub fn param_shapes(cfg: &ModelConfig, spec: StageSpec) -> Vec<(String, Vec<i64>)> {
    let (d, v, t, hidden) = (
        cfg.d_model,
        cfg.vocab_size,
        cfg.seq_len,
        cfg.d_model * cfg.mlp_ratio,
    );
    let mut out: Vec<(String, Vec<i64>)> = Vec::new();
    if spec.is_first() {
        out.push(("wte.weight".into(), vec![v, d]));
        out.push(("wpe.weight".into(), vec![t, d]));
    }
    for i in spec.layer_range(cfg.n_layers) {
        let p = |s: &str| format!("h.{i}.{s}");
        out.push((p("ln_1.weight"), vec![d]));
        out.push((p("ln_1.bias"), vec![d]));
        out.push((p("attn.qkv.weight"), vec![3 * d, d]));
        out.push((p("attn.qkv.bias"), vec![3 * d]));
        out.push((p("attn.proj.weight"), vec![d, d]));
        out.push((p("attn.proj.bias"), vec![d]));
        out.push((p("ln_2.weight"), vec![d]));
        out.push((p("ln_2.bias"), vec![d]));
        out.push((p("mlp.fc.weight"), vec![hidden, d]));
        out.push((p("mlp.fc.bias"), vec![hidden]));
        out.push((p("mlp.proj.weight"), vec![d, hidden]));
        out.push((p("mlp.proj.bias"), vec![d]));
    }
    if spec.is_last() {
        out.push(("ln_f.weight".into(), vec![d]));
        out.push(("ln_f.bias".into(), vec![d]));
        if cfg.tied_embeddings {
            if !spec.is_first() {
                out.push(("wte.weight".into(), vec![v, d]));
            }
        } else {
            out.push(("lm_head.weight".into(), vec![v, d]));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn init_kind(cfg: &ModelConfig, name: &str) -> Init {
    const STD: f64 = 0.02;
    if name.ends_with(".bias") {
        Init::Zeros
    } else if name.starts_with("ln_f.") || name.contains(".ln_1.") || name.contains(".ln_2.") {
        Init::Ones
    } else if name.ends_with("attn.proj.weight") || name.ends_with("mlp.proj.weight") {
        Init::Normal(STD / (2.0 * cfg.n_layers as f64).sqrt())
    } else {
        Init::Normal(STD)
    }
}

/// The initial values of parameter `name` (row-major), from the run seed and the name only.
pub fn init_values(cfg: &ModelConfig, name: &str, numel: usize) -> Vec<f32> {
    match init_kind(cfg, name) {
        Init::Zeros => vec![0.0; numel],
        Init::Ones => vec![1.0; numel],
        Init::Normal(std) => {
            let mut h = blake3::Hasher::new_derive_key("weft-trainer init v1");
            h.update(&cfg.seed.to_le_bytes());
            h.update(name.as_bytes());
            let mut xof = h.finalize_xof();
            let mut buf = [0u8; 8 * 256];
            let mut out = Vec::with_capacity(numel);
            // The sum of four U(0,1) has variance 4/12: sqrt(3)/65536 maps the centred sum of four
            // 16-bit uniforms to unit variance.
            let scale = 3f64.sqrt() / 65536.0;
            while out.len() < numel {
                xof.fill(&mut buf);
                for word in buf.chunks_exact(8) {
                    if out.len() == numel {
                        break;
                    }
                    let sum: i64 = word
                        .chunks_exact(2)
                        .map(|b| i64::from(u16::from_le_bytes([b[0], b[1]])))
                        .sum();
                    // Each 16-bit uniform is (u + 1/2)/65536, so the centred sum is
                    // (sum + 2 - 2·65536)/65536; keep it in integers until the last step.
                    let centred = sum + 2 - 2 * 65536;
                    out.push((centred as f64 * scale * std) as f32);
                }
            }
            out
        }
    }
}

/// One transformer block's parameters.
#[derive(Debug)]
struct Block {
    ln_1: (Tensor, Tensor),
    qkv: (Tensor, Tensor),
    proj: (Tensor, Tensor),
    ln_2: (Tensor, Tensor),
    fc: (Tensor, Tensor),
    mlp_proj: (Tensor, Tensor),
}

/// One pipeline stage of the model, with its own `VarStore` holding only its parameters.
#[derive(Debug)]
pub struct Stage {
    cfg: ModelConfig,
    spec: StageSpec,
    vs: nn::VarStore,
    params: Vec<(String, Tensor)>,
    wte: Option<Tensor>,
    wpe: Option<Tensor>,
    blocks: Vec<Block>,
    ln_f: Option<(Tensor, Tensor)>,
    head: Option<Tensor>,
    /// Whether dropout is active (training) or not (evaluation, inference).
    pub train: bool,
    /// Whether the forward pass runs under bf16 autocast (CUDA only; ignored on CPU).
    pub autocast_bf16: bool,
}

impl Stage {
    /// Builds stage `spec` of the model `cfg` on `device`, initialised deterministically.
    pub fn new(cfg: &ModelConfig, spec: StageSpec, device: Device) -> Result<Self> {
        cfg.validate_stages(spec.n_stages)?;
        let vs = nn::VarStore::new(device);
        let mut params = Vec::new();
        for (name, shape) in param_shapes(cfg, spec) {
            let numel: i64 = shape.iter().product();
            let values = init_values(cfg, &name, numel as usize);
            let init = Tensor::f_from_slice(&values)?.f_reshape(&shape)?;
            let parts: Vec<&str> = name.split('.').collect();
            let (leaf, dirs) = parts
                .split_last()
                .ok_or_else(|| Error::Config(format!("empty parameter name {name:?}")))?;
            let path = dirs.iter().fold(vs.root(), |p, c| p / *c);
            let var = path.f_var_copy(leaf, &init)?;
            params.push((name, var));
        }
        let get = |n: &str| -> Result<Tensor> {
            params
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| Error::Config(format!("missing parameter {n}")))
        };
        let pair = |n: &str| -> Result<(Tensor, Tensor)> {
            Ok((get(&format!("{n}.weight"))?, get(&format!("{n}.bias"))?))
        };
        let mut blocks = Vec::new();
        for i in spec.layer_range(cfg.n_layers) {
            blocks.push(Block {
                ln_1: pair(&format!("h.{i}.ln_1"))?,
                qkv: pair(&format!("h.{i}.attn.qkv"))?,
                proj: pair(&format!("h.{i}.attn.proj"))?,
                ln_2: pair(&format!("h.{i}.ln_2"))?,
                fc: pair(&format!("h.{i}.mlp.fc"))?,
                mlp_proj: pair(&format!("h.{i}.mlp.proj"))?,
            });
        }
        let (wte, wpe) = if spec.is_first() {
            (Some(get("wte.weight")?), Some(get("wpe.weight")?))
        } else {
            (None, None)
        };
        let (ln_f, head) = if spec.is_last() {
            let head = if cfg.tied_embeddings {
                get("wte.weight")?
            } else {
                get("lm_head.weight")?
            };
            (Some(pair("ln_f")?), Some(head))
        } else {
            (None, None)
        };
        Ok(Stage {
            cfg: cfg.clone(),
            spec,
            vs,
            params,
            wte,
            wpe,
            blocks,
            ln_f,
            head,
            train: true,
            autocast_bf16: false,
        })
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Which stage this is.
    pub fn spec(&self) -> StageSpec {
        self.spec
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The underlying variable store (only this stage's parameters).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The parameters, sorted by canonical name. The tensors share storage with the model.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// Number of scalar parameters of this stage.
    pub fn num_params(&self) -> i64 {
        self.params.iter().map(|(_, t)| t.numel() as i64).sum()
    }

    /// Whether parameter `name` is the tied embedding copy that this stage shares with
    /// another stage (the last stage's `wte.weight` when the model is cut).
    pub fn is_shared_copy(&self, name: &str) -> bool {
        self.cfg.tied_embeddings
            && self.spec.n_stages > 1
            && self.spec.is_last()
            && name == "wte.weight"
    }

    /// Shape this stage expects as input for a micro-batch of `batch` sequences of `seq`.
    pub fn input_shape(&self, batch: i64, seq: i64) -> Vec<i64> {
        if self.spec.is_first() {
            vec![batch, seq]
        } else {
            vec![batch, seq, self.cfg.d_model]
        }
    }

    fn check_input(&self, input: &Tensor) -> Result<()> {
        let size = input.size();
        let kind = input.f_kind()?;
        let ok = if self.spec.is_first() {
            size.len() == 2 && kind == Kind::Int64
        } else {
            size.len() == 3 && size[2] == self.cfg.d_model && kind == Kind::Float
        };
        if !ok {
            return Err(Error::Shape(format!(
                "stage {} expects {}, got {kind:?} {size:?}",
                self.spec.stage,
                if self.spec.is_first() {
                    "int64 [B, T]"
                } else {
                    "float [B, T, d_model]"
                }
            )));
        }
        let t = size[1];
        if t < 1 || t > self.cfg.seq_len {
            return Err(Error::Shape(format!(
                "sequence length {t} not in 1..={}",
                self.cfg.seq_len
            )));
        }
        Ok(())
    }

    /// Runs this stage.
    ///
    /// `input` is token ids (int64 `[B, T]`) on stage 0 and activations (float
    /// `[B, T, d_model]`) otherwise. A stage that is not last returns its activations; the
    /// last stage returns the mean cross-entropy (a float scalar) when `targets` (int64
    /// `[B, T]`) are given, and the logits `[B, T, vocab]` otherwise.
    pub fn forward(&self, input: &Tensor, targets: Option<&Tensor>) -> Result<Tensor> {
        self.check_input(input)?;
        let input = input.f_to_device(self.device())?;
        let use_autocast = self.autocast_bf16 && self.device().is_cuda();
        tch::autocast(use_autocast, || self.forward_inner(&input, targets))
    }

    fn forward_inner(&self, input: &Tensor, targets: Option<&Tensor>) -> Result<Tensor> {
        let p = if self.train { self.cfg.dropout } else { 0.0 };
        let mut x = self.embed(input, 0, p, self.train)?;
        for b in &self.blocks {
            x = self.block(b, &x, (p, self.train), Attention::Causal)?.0;
        }
        let Some(logits) = self.head(&x)? else {
            return Ok(x);
        };
        match targets {
            None => Ok(logits),
            Some(targets) => {
                let targets = targets.f_to_device(self.device())?;
                if targets.size() != input.size()[..2] || targets.f_kind()? != Kind::Int64 {
                    return Err(Error::Shape(format!(
                        "targets must be int64 {:?}, got {:?} {:?}",
                        &input.size()[..2],
                        targets.f_kind()?,
                        targets.size()
                    )));
                }
                let v = self.cfg.vocab_size;
                let logp = logits.f_view([-1, v])?.f_log_softmax(-1, Kind::Float)?;
                Ok(logp.f_nll_loss::<Tensor>(
                    &targets.f_view([-1])?,
                    None,
                    tch::Reduction::Mean,
                    -100,
                )?)
            }
        }
    }

    /// Stage 0: token plus position embedding of positions `offset .. offset + T` (then
    /// dropout `p` when `train`); other stages: the input itself.
    fn embed(&self, input: &Tensor, offset: i64, p: f64, train: bool) -> Result<Tensor> {
        let (Some(wte), Some(wpe)) = (&self.wte, &self.wpe) else {
            return Ok(input.shallow_clone());
        };
        let t = input.size()[1];
        let max = input.f_max()?.f_int64_value(&[])?;
        let min = input.f_min()?.f_int64_value(&[])?;
        if min < 0 || max >= self.cfg.vocab_size {
            return Err(Error::Shape(format!(
                "token ids must be in 0..{}, got {min}..={max}",
                self.cfg.vocab_size
            )));
        }
        let tok = Tensor::f_embedding(wte, input, -1, false, false)?;
        let pos = wpe.f_narrow(0, offset, t)?;
        Ok(tok.f_add(&pos)?.f_dropout(p, train)?)
    }

    /// The last stage: `ln_f` then the LM head (logits); other stages: `None`.
    fn head(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let (Some((lw, lb)), Some(head)) = (&self.ln_f, &self.head) else {
            return Ok(None);
        };
        let h = x.f_layer_norm([self.cfg.d_model], Some(lw), Some(lb), 1e-5, true)?;
        Ok(Some(h.f_linear::<Tensor>(head, None)?))
    }

    /// One block. With [`Attention::Cached`] the new positions attend over the past keys and
    /// values too, and the block also returns the keys and values of all positions (past
    /// and new) for the cache.
    fn block(
        &self,
        b: &Block,
        x: &Tensor,
        (p, train): (f64, bool),
        attn: Attention<'_>,
    ) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let d = self.cfg.d_model;
        let nh = self.cfg.n_heads;
        let hd = self.cfg.head_dim();
        let size = x.size();
        let (bsz, t) = (size[0], size[1]);
        let h = x.f_layer_norm([d], Some(&b.ln_1.0), Some(&b.ln_1.1), 1e-5, true)?;
        let qkv = h.f_linear(&b.qkv.0, Some(&b.qkv.1))?;
        let heads = |i: i64| -> Result<Tensor> {
            Ok(qkv
                .f_narrow(2, i * d, d)?
                .f_view([bsz, t, nh, hd])?
                .f_transpose(1, 2)?)
        };
        let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
        let (y, kv) = match attn {
            Attention::Causal => (
                Tensor::f_scaled_dot_product_attention::<Tensor>(
                    &q, &k, &v, None, 0.0, true, None, false,
                )?,
                None,
            ),
            Attention::Cached(None) => (
                // No past: exactly the training attention.
                Tensor::f_scaled_dot_product_attention::<Tensor>(
                    &q, &k, &v, None, 0.0, true, None, false,
                )?,
                // Own copies: views would keep the whole fused `qkv` alive in the cache.
                Some((k.f_contiguous()?, v.f_contiguous()?)),
            ),
            Attention::Cached(Some((pk, pv))) => {
                let k = Tensor::f_cat(&[pk, &k], 2)?;
                let v = Tensor::f_cat(&[pv, &v], 2)?;
                let past = pk.size()[2];
                // New position i (absolute past + i) sees keys 0 ..= past + i. One new
                // position sees every key: no mask. (`is_causal` would align the mask to the
                // top left, which is wrong when there are more keys than queries.)
                let mask = if t == 1 {
                    None
                } else {
                    let opts = (Kind::Int64, q.device());
                    let rows = Tensor::f_arange(t, opts)?.f_unsqueeze(1)?;
                    let cols = Tensor::f_arange(past + t, opts)?.f_unsqueeze(0)?;
                    Some(cols.f_le_tensor(&rows.f_add_scalar(past)?)?)
                };
                let y = Tensor::f_scaled_dot_product_attention(
                    &q,
                    &k,
                    &v,
                    mask.as_ref(),
                    0.0,
                    false,
                    None,
                    false,
                )?;
                (y, Some((k, v)))
            }
        };
        let y = y.f_transpose(1, 2)?.f_contiguous()?.f_view([bsz, t, d])?;
        let y = y
            .f_linear(&b.proj.0, Some(&b.proj.1))?
            .f_dropout(p, train)?;
        let x = x.f_add(&y)?;
        let h = x.f_layer_norm([d], Some(&b.ln_2.0), Some(&b.ln_2.1), 1e-5, true)?;
        let h = h.f_linear(&b.fc.0, Some(&b.fc.1))?.f_gelu("tanh")?;
        let h = h
            .f_linear(&b.mlp_proj.0, Some(&b.mlp_proj.1))?
            .f_dropout(p, train)?;
        Ok((x.f_add(&h)?, kv))
    }

    /// The inference forward of this stage without dropout: positions `offset ..
    /// offset + T`, attending over `past` (per block: keys and values `[B, n_heads, offset,
    /// head_dim]`, or `None` for an empty cache). Returns the output (hidden states, or the
    /// logits on the last stage) and per block the keys and values of all positions.
    /// Input validation and the cache bookkeeping are [`crate::infer`]'s.
    pub(crate) fn forward_kv(
        &self,
        input: &Tensor,
        offset: i64,
        past: &[Option<(Tensor, Tensor)>],
    ) -> Result<(Tensor, Vec<(Tensor, Tensor)>)> {
        if past.len() != self.blocks.len() {
            return Err(Error::Cache(format!(
                "cache has {} blocks, stage {} has {}",
                past.len(),
                self.spec.stage,
                self.blocks.len()
            )));
        }
        let mut x = self.embed(input, offset, 0.0, false)?;
        let mut kvs = Vec::with_capacity(self.blocks.len());
        for (b, past) in self.blocks.iter().zip(past) {
            let (y, kv) = self.block(b, &x, (0.0, false), Attention::Cached(past.as_ref()))?;
            x = y;
            kvs.push(kv.ok_or_else(|| Error::Cache("block returned no keys".into()))?);
        }
        Ok((self.head(&x)?.unwrap_or(x), kvs))
    }

    /// Number of transformer blocks of this stage.
    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Builds stage `spec` of `cfg` on `device` holding the given parameter values (see
    /// [`Stage::load_params`]).
    pub fn from_params(
        cfg: &ModelConfig,
        spec: StageSpec,
        device: Device,
        params: &[(String, Tensor)],
    ) -> Result<Self> {
        let mut stage = Stage::new(cfg, spec, device)?;
        stage.load_params(params)?;
        Ok(stage)
    }

    /// Copies `params` (canonical name, value) into this stage's parameters: every
    /// parameter of the stage must be given exactly once, with its shape, as float32; no
    /// other name is accepted. Nothing is copied unless all of them match
    /// ([`Error::Checkpoint`] otherwise). The values may live on any device.
    pub fn load_params(&mut self, params: &[(String, Tensor)]) -> Result<()> {
        let mut given: Vec<&(String, Tensor)> = params.iter().collect();
        given.sort_by(|a, b| a.0.cmp(&b.0));
        for pair in given.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(Error::Checkpoint(format!(
                    "parameter {} given twice",
                    pair[0].0
                )));
            }
        }
        for (name, _) in &given {
            if !self.params.iter().any(|(n, _)| n == name) {
                return Err(Error::Checkpoint(format!(
                    "stage {} of {} has no parameter {name}",
                    self.spec.stage, self.spec.n_stages
                )));
            }
        }
        for (name, p) in &self.params {
            let Some((_, src)) = given.iter().find(|(n, _)| n == name) else {
                return Err(Error::Checkpoint(format!("parameter {name} missing")));
            };
            if src.size() != p.size() || src.f_kind()? != Kind::Float {
                return Err(Error::Checkpoint(format!(
                    "{name}: given {:?} {:?}, the stage has {:?} {:?}",
                    src.f_kind()?,
                    src.size(),
                    p.f_kind()?,
                    p.size()
                )));
            }
        }
        tch::no_grad(|| -> Result<()> {
            for (name, p) in &self.params {
                if let Some((_, src)) = given.iter().find(|(n, _)| n == name) {
                    let mut p = p.shallow_clone();
                    p.f_copy_(src)?;
                }
            }
            Ok(())
        })
    }
}

/// How a block attends.
#[derive(Clone, Copy)]
enum Attention<'a> {
    /// Training: causal self-attention over the given positions only.
    Causal,
    /// Inference: the new positions attend over these past keys and values (if any) and
    /// over each other causally.
    Cached(Option<&'a (Tensor, Tensor)>),
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn layer_ranges_are_balanced_and_cover() {
        for n_layers in 1..12 {
            for n_stages in 1..=n_layers as usize {
                let mut next = 0;
                for s in 0..n_stages {
                    let r = StageSpec::new(s, n_stages).unwrap().layer_range(n_layers);
                    assert_eq!(r.start, next);
                    let len = r.end - r.start;
                    assert!(
                        len == n_layers / n_stages as i64 || len == n_layers / n_stages as i64 + 1
                    );
                    next = r.end;
                }
                assert_eq!(next, n_layers);
            }
        }
        assert_eq!(StageSpec::new(1, 3).unwrap().layer_range(7), 3..5);
        assert!(StageSpec::new(3, 3).is_err());
    }

    #[test]
    fn init_is_stage_independent_and_normalish() {
        let cfg = ModelConfig::tiny();
        let whole = Stage::new(&cfg, StageSpec::whole(), Device::Cpu).unwrap();
        let s2 = Stage::new(&cfg, StageSpec::new(2, 4).unwrap(), Device::Cpu).unwrap();
        assert_eq!(s2.params().len(), 12);
        for (name, t) in s2.params() {
            let (_, w) = whole.params().iter().find(|(n, _)| n == name).unwrap();
            assert!(t.equal(w), "{name}");
        }
        let names: Vec<&String> = whole.params().iter().map(|(n, _)| n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let v = init_values(&cfg, "h.0.mlp.fc.weight", 100_000);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 3e-4, "{mean}");
        assert!((var.sqrt() - 0.02).abs() < 3e-4, "{}", var.sqrt());
        let other = ModelConfig {
            seed: 1,
            ..cfg.clone()
        };
        assert_ne!(init_values(&other, "h.0.mlp.fc.weight", 8), v[..8].to_vec());
    }

    #[test]
    fn rejects_bad_inputs() {
        let cfg = ModelConfig::tiny();
        let s0 = Stage::new(&cfg, StageSpec::new(0, 2).unwrap(), Device::Cpu).unwrap();
        let s1 = Stage::new(&cfg, StageSpec::new(1, 2).unwrap(), Device::Cpu).unwrap();
        assert!(s0
            .forward(&Tensor::zeros([2, 4, 32], (Kind::Float, Device::Cpu)), None)
            .is_err());
        assert!(s0
            .forward(&Tensor::full([2, 4], 300, (Kind::Int64, Device::Cpu)), None)
            .is_err());
        assert!(s0
            .forward(&Tensor::zeros([2, 17], (Kind::Int64, Device::Cpu)), None)
            .is_err());
        assert!(s1
            .forward(&Tensor::zeros([2, 4, 31], (Kind::Float, Device::Cpu)), None)
            .is_err());
        let x = s0
            .forward(&Tensor::zeros([2, 4], (Kind::Int64, Device::Cpu)), None)
            .unwrap();
        assert_eq!(x.size(), [2, 4, 32]);
        let logits = s1.forward(&x, None).unwrap();
        assert_eq!(logits.size(), [2, 4, 256]);
        let loss = s1
            .forward(&x, Some(&Tensor::zeros([2, 4], (Kind::Int64, Device::Cpu))))
            .unwrap();
        // At initialisation the logits are near zero: loss ≈ ln 256.
        assert!((loss.double_value(&[]) - 256f64.ln()).abs() < 0.1);
    }
}
