//! The optimiser: AdamW written out on tensors, a warm-up + cosine learning-rate schedule,
//! and gradient clipping by global norm.
//!
//! The update is spelled out (rather than using libtorch's optimiser objects) so that its
//! whole state — the first and second moments `m`, `v` of every parameter and the update
//! count `t` — is plain named tensors that are checkpointed, committed and recomputed by an
//! auditor in exactly this order of operations. For a parameter `p` with gradient `g`,
//! clipping coefficient `c`, learning rate `η`, step `t` (counting from 1):
//!
//! ```text
//! g ← c·g
//! m ← β1·m + (1−β1)·g
//! v ← β2·v + (1−β2)·g²
//! p ← p·(1 − η·λ)              (decoupled weight decay, only for matrices; not for
//!                               biases, LayerNorm gains or embeddings)
//! p ← p − (η / (1−β1ᵗ)) · m / (√(v / (1−β2ᵗ)) + ε)
//! ```
//!
//! Clipping: with `N = √(Σ‖g‖²)` over the clipping scope (one stage, or every stage of the
//! model when the pipeline shares per-stage sums of squares), `c = max_norm / (N + 1e-6)`
//! when `N > max_norm`, else 1. Sums of squares are accumulated in f64.
//!
//! Schedule: linear warm-up `η = lr·(s+1)/warmup` for steps `s < warmup`, then cosine decay
//! from `lr` to `min_lr_ratio·lr` at `total_steps`, constant after.

use crate::config::TrainConfig;
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// The learning rate of step `step` (counting from 0).
pub fn lr_at(cfg: &TrainConfig, step: u64) -> f64 {
    let min_lr = cfg.lr * cfg.min_lr_ratio;
    if step < cfg.warmup_steps {
        return cfg.lr * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    let span = cfg.total_steps.saturating_sub(cfg.warmup_steps).max(1);
    let progress = ((step - cfg.warmup_steps) as f64 / span as f64).min(1.0);
    min_lr + 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()) * (cfg.lr - min_lr)
}

/// The multiplier applied to gradients whose norm is `norm` when clipping at `max_norm`
/// (0 disables clipping).
pub fn clip_coefficient(norm: f64, max_norm: f64) -> f64 {
    if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}

/// Σ‖g‖² over the gradients of `params` (undefined gradients count as zero), in f64.
pub fn grad_sq_sum<'a>(params: impl IntoIterator<Item = &'a Tensor>) -> Result<f64> {
    let mut total = 0.0;
    for p in params {
        let g = p.f_grad()?;
        if g.defined() {
            total += g.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
        }
    }
    Ok(total)
}

/// Whether AdamW's decoupled weight decay applies to parameter `name` of rank `dim`.
pub fn decays(name: &str, dim: usize) -> bool {
    dim >= 2 && name != "wte.weight" && name != "wpe.weight"
}

/// The moments of one parameter.
#[derive(Debug)]
pub struct Moments {
    /// Canonical parameter name.
    pub name: String,
    /// First moment (EMA of gradients).
    pub m: Tensor,
    /// Second moment (EMA of squared gradients).
    pub v: Tensor,
}

/// AdamW with explicit, checkpointable state.
#[derive(Debug)]
pub struct AdamW {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    state: Vec<Moments>,
    t: u64,
}

impl AdamW {
    /// Fresh state (zero moments, `t = 0`) for `params`, in their order.
    pub fn new(params: &[(String, Tensor)], cfg: &TrainConfig) -> Result<Self> {
        let state = params
            .iter()
            .map(|(name, p)| {
                Ok(Moments {
                    name: name.clone(),
                    m: p.f_zeros_like()?,
                    v: p.f_zeros_like()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            beta1: cfg.betas[0],
            beta2: cfg.betas[1],
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            state,
            t: 0,
        })
    }

    /// Number of updates applied so far.
    pub fn t(&self) -> u64 {
        self.t
    }

    /// The moments, in parameter order.
    pub fn moments(&self) -> &[Moments] {
        &self.state
    }

    /// Replaces the state (from a checkpoint), checking names and shapes.
    pub fn load(&mut self, t: u64, moments: Vec<Moments>) -> Result<()> {
        if moments.len() != self.state.len() {
            return Err(Error::Checkpoint(format!(
                "{} optimiser moments given, {} parameters",
                moments.len(),
                self.state.len()
            )));
        }
        for (old, new) in self.state.iter().zip(&moments) {
            if old.name != new.name || old.m.size() != new.m.size() || old.v.size() != new.v.size()
            {
                return Err(Error::Checkpoint(format!(
                    "optimiser state for {} does not match parameter {}",
                    new.name, old.name
                )));
            }
        }
        let device = self.state.first().map(|s| s.m.device());
        self.state = moments
            .into_iter()
            .map(|s| match device {
                Some(d) => Ok(Moments {
                    name: s.name,
                    m: s.m.f_to_device(d)?,
                    v: s.v.f_to_device(d)?,
                }),
                None => Ok(s),
            })
            .collect::<Result<_>>()?;
        self.t = t;
        Ok(())
    }

    /// Applies one update to `params` (same order as at construction) with learning rate
    /// `lr`, multiplying gradients by `clip_coef` first. Undefined gradients count as zero.
    pub fn step(&mut self, params: &[(String, Tensor)], lr: f64, clip_coef: f64) -> Result<()> {
        if params.len() != self.state.len() {
            return Err(Error::Pipeline(
                "parameter list changed since the optimiser was built".into(),
            ));
        }
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        tch::no_grad(|| -> Result<()> {
            for ((name, p), s) in params.iter().zip(self.state.iter_mut()) {
                if *name != s.name {
                    return Err(Error::Pipeline(format!(
                        "parameter {name} where {} expected",
                        s.name
                    )));
                }
                let mut g = p.f_grad()?;
                if !g.defined() {
                    g = p.f_zeros_like()?;
                }
                if clip_coef != 1.0 {
                    g = g.f_mul_scalar(clip_coef)?;
                }
                let _ = s.m.f_mul_scalar_(self.beta1)?;
                let _ = s.m.f_add_(&g.f_mul_scalar(1.0 - self.beta1)?)?;
                let _ = s.v.f_mul_scalar_(self.beta2)?;
                let _ = s.v.f_add_(&g.f_square()?.f_mul_scalar(1.0 - self.beta2)?)?;
                let mut p = p.shallow_clone();
                if self.weight_decay != 0.0 && decays(name, p.dim()) {
                    let _ = p.f_mul_scalar_(1.0 - lr * self.weight_decay)?;
                }
                let denom = s.v.f_div_scalar(bc2)?.f_sqrt()?.f_add_scalar(self.eps)?;
                let upd = s.m.f_div(&denom)?.f_mul_scalar(lr / bc1)?;
                let _ = p.f_sub_(&upd)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn schedule_shape() {
        let cfg = TrainConfig {
            lr: 1.0,
            warmup_steps: 10,
            total_steps: 110,
            min_lr_ratio: 0.1,
            ..TrainConfig::tiny()
        };
        assert!((lr_at(&cfg, 0) - 0.1).abs() < 1e-12);
        assert!((lr_at(&cfg, 9) - 1.0).abs() < 1e-12);
        assert!((lr_at(&cfg, 10) - 1.0).abs() < 1e-12);
        assert!((lr_at(&cfg, 60) - 0.55).abs() < 1e-12);
        assert!((lr_at(&cfg, 110) - 0.1).abs() < 1e-12);
        assert!((lr_at(&cfg, 500) - 0.1).abs() < 1e-12);
        assert_eq!(clip_coefficient(0.5, 1.0), 1.0);
        assert!((clip_coefficient(2.0, 1.0) - 0.5).abs() < 1e-6);
        assert_eq!(clip_coefficient(2.0, 0.0), 1.0);
    }

    #[test]
    fn adamw_matches_reference_formula() {
        let cfg = TrainConfig {
            weight_decay: 0.1,
            ..TrainConfig::tiny()
        };
        let w = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5])
            .view([2, 2])
            .set_requires_grad(true);
        let params = vec![("h.0.mlp.fc.weight".to_string(), w.shallow_clone())];
        let mut opt = AdamW::new(&params, &cfg).unwrap();
        let (b1, b2, eps, lr, wd) = (0.9f64, 0.95f64, 1e-8f64, 0.01f64, 0.1f64);
        let mut p = [1.0f64, -2.0, 3.0, 0.5];
        let (mut m, mut v) = ([0.0f64; 4], [0.0f64; 4]);
        for t in 1..=3 {
            let mut w2 = w.shallow_clone();
            w2.zero_grad();
            (&w * &w).sum(Kind::Float).backward(); // g = 2w
            opt.step(&params, lr, 0.5).unwrap();
            for i in 0..4 {
                let g = 2.0 * p[i] * 0.5;
                m[i] = b1 * m[i] + (1.0 - b1) * g;
                v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                p[i] *= 1.0 - lr * wd;
                p[i] -= lr / (1.0 - b1.powi(t)) * m[i] / ((v[i] / (1.0 - b2.powi(t))).sqrt() + eps);
            }
        }
        let got: Vec<f32> = Vec::try_from(&w.flatten(0, -1)).unwrap();
        for i in 0..4 {
            assert!((got[i] as f64 - p[i]).abs() < 1e-5, "{got:?} vs {p:?}");
        }
        assert_eq!(opt.t(), 3);
    }
}
