//! Model and training configuration, read from JSON and validated before use.
//!
//! A run's [`ModelConfig`] is registered on chain (its JSON and hash), so every replica and
//! every auditor builds the same architecture from it; [`TrainConfig`] holds the
//! hyper-parameters of the optimiser and the batch shape. Both reject unknown fields so a
//! typo is an error rather than a silently ignored setting, and [`ModelConfig::validate`] /
//! [`TrainConfig::validate`] explain what is wrong in words.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::str::FromStr;
pub use weft_primitives::replicas::ReplicaSync;

fn default_vocab() -> i64 {
    256
}
fn default_mlp_ratio() -> i64 {
    4
}

/// The architecture of a decoder-only GPT-style transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Vocabulary size; 256 is the byte-level vocabulary.
    #[serde(default = "default_vocab")]
    pub vocab_size: i64,
    /// Width of the residual stream.
    pub d_model: i64,
    /// Number of transformer blocks.
    pub n_layers: i64,
    /// Attention heads per block; must divide `d_model`.
    pub n_heads: i64,
    /// Context length (also the size of the learned position embedding).
    pub seq_len: i64,
    /// Hidden width of the MLP as a multiple of `d_model`.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: i64,
    /// Dropout probability on embeddings and residual branches (0 = none).
    #[serde(default)]
    pub dropout: f64,
    /// Whether the LM head reuses the token embedding matrix.
    #[serde(default)]
    pub tied_embeddings: bool,
    /// The run seed: parameter initialisation and data assignment derive from it.
    #[serde(default)]
    pub seed: u64,
}

impl ModelConfig {
    /// A tiny model for tests and CPU experiments.
    pub fn tiny() -> Self {
        ModelConfig {
            vocab_size: 256,
            d_model: 32,
            n_layers: 4,
            n_heads: 2,
            seq_len: 16,
            mlp_ratio: 4,
            dropout: 0.0,
            tied_embeddings: false,
            seed: 0,
        }
    }

    /// A named preset: `tiny` (tests), `small` (CPU experiments: d 128, 4 layers, context
    /// 128), `medium` (d 512, 8 layers, context 256) or `gpt2` (GPT-2 small shape with a
    /// byte vocabulary: d 768, 12 layers, 12 heads, context 1024, tied embeddings).
    pub fn preset(name: &str) -> Result<Self> {
        let base = ModelConfig::tiny();
        match name {
            "tiny" => Ok(base),
            "small" => Ok(ModelConfig {
                d_model: 128,
                n_layers: 4,
                n_heads: 4,
                seq_len: 128,
                ..base
            }),
            "medium" => Ok(ModelConfig {
                d_model: 512,
                n_layers: 8,
                n_heads: 8,
                seq_len: 256,
                ..base
            }),
            "gpt2" => Ok(ModelConfig {
                d_model: 768,
                n_layers: 12,
                n_heads: 12,
                seq_len: 1024,
                tied_embeddings: true,
                ..base
            }),
            other => Err(Error::Config(format!(
                "unknown preset {other:?}: expected tiny, small, medium or gpt2"
            ))),
        }
    }

    /// Reads and validates a config from a JSON file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|error| Error::ConfigParse {
            path: path.to_owned(),
            error,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the architecture is well formed.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.vocab_size < 2 {
            return bad(format!(
                "vocab_size must be at least 2, got {}",
                self.vocab_size
            ));
        }
        if self.d_model < 1 || self.n_layers < 1 || self.n_heads < 1 || self.seq_len < 1 {
            return bad(format!(
                "d_model, n_layers, n_heads and seq_len must be positive, got {}, {}, {}, {}",
                self.d_model, self.n_layers, self.n_heads, self.seq_len
            ));
        }
        if self.d_model % self.n_heads != 0 {
            return bad(format!(
                "d_model ({}) must be a multiple of n_heads ({})",
                self.d_model, self.n_heads
            ));
        }
        if self.mlp_ratio < 1 {
            return bad(format!(
                "mlp_ratio must be at least 1, got {}",
                self.mlp_ratio
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        Ok(())
    }

    /// Checks that the model can be cut into `n_stages` pipeline stages.
    pub fn validate_stages(&self, n_stages: usize) -> Result<()> {
        self.validate()?;
        if n_stages == 0 {
            return Err(Error::Config(
                "the number of stages must be at least 1".into(),
            ));
        }
        if n_stages as i64 > self.n_layers {
            return Err(Error::Config(format!(
                "{n_stages} stages need at least {n_stages} layers, the model has {}",
                self.n_layers
            )));
        }
        Ok(())
    }

    /// Width of the attention heads.
    pub fn head_dim(&self) -> i64 {
        self.d_model / self.n_heads
    }
}

/// Over which parameters the gradient norm for clipping is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClipScope {
    /// Each stage clips by the norm of its own gradients. Every stage's update can then be
    /// recomputed by an auditor from that stage's data alone; this is the default.
    #[default]
    Stage,
    /// All stages clip by the norm over the whole model (each stage shares one scalar, its
    /// sum of squares). Identical to single-process training, but the norm is a value the
    /// auditor of one stage has to take from the others.
    Global,
}

fn default_micro_batches() -> usize {
    1
}
fn default_min_lr_ratio() -> f64 {
    0.1
}
fn default_weight_decay() -> f64 {
    0.1
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.95]
}
fn default_eps() -> f64 {
    1e-8
}
fn default_grad_clip() -> f64 {
    1.0
}

/// Hyper-parameters of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Sequences per micro-batch.
    pub micro_batch_size: i64,
    /// Micro-batches per optimiser step (gradient accumulation).
    #[serde(default = "default_micro_batches")]
    pub micro_batches: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Steps of linear warm-up from 0 to `lr`.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Length of the schedule: cosine decay ends here.
    pub total_steps: u64,
    /// Final learning rate as a fraction of `lr`.
    #[serde(default = "default_min_lr_ratio")]
    pub min_lr_ratio: f64,
    /// Decoupled weight decay (applied to matrices, not to biases, norms or embeddings).
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Adam's (β1, β2).
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    /// Adam's ε.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Maximum gradient norm; 0 disables clipping.
    #[serde(default = "default_grad_clip")]
    pub grad_clip: f64,
    /// Whether the clipping norm is per stage or over the whole model.
    #[serde(default)]
    pub clip_scope: ClipScope,
    /// Whether the replicas of a stage average their updates every step (and how the
    /// updates cross), or train apart (`"apart"`, `"average"`, `"average-int8"`).
    #[serde(default)]
    pub replica_sync: ReplicaSync,
}

impl TrainConfig {
    /// Settings for the tiny test model.
    pub fn tiny() -> Self {
        TrainConfig {
            micro_batch_size: 4,
            micro_batches: 2,
            lr: 3e-3,
            warmup_steps: 10,
            total_steps: 1000,
            min_lr_ratio: 0.1,
            weight_decay: 0.0,
            betas: default_betas(),
            eps: default_eps(),
            grad_clip: 1.0,
            clip_scope: ClipScope::Stage,
            replica_sync: ReplicaSync::Apart,
        }
    }

    /// How this run's replicas send their updates to each other, if they average.
    pub fn update_codec(&self) -> Option<crate::aggregate::UpdateCodec> {
        match self.replica_sync {
            ReplicaSync::Apart => None,
            ReplicaSync::Average => Some(crate::aggregate::UpdateCodec::Fp32),
            ReplicaSync::AverageInt8 => Some(crate::aggregate::UpdateCodec::Int8),
        }
    }

    /// Reads and validates a config from a JSON file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|error| Error::ConfigParse {
            path: path.to_owned(),
            error,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the hyper-parameters are usable.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.micro_batch_size < 1 || self.micro_batches < 1 {
            return bad("micro_batch_size and micro_batches must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr must be positive, got {}", self.lr));
        }
        if self.total_steps == 0 {
            return bad("total_steps must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(format!(
                "min_lr_ratio must be in [0, 1], got {}",
                self.min_lr_ratio
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(format!(
                "weight_decay must be non-negative, got {}",
                self.weight_decay
            ));
        }
        for b in self.betas {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("betas must be in [0, 1), got {:?}", self.betas));
            }
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            return bad(format!("eps must be positive, got {}", self.eps));
        }
        if !(self.grad_clip >= 0.0 && self.grad_clip.is_finite()) {
            return bad(format!(
                "grad_clip must be non-negative, got {}",
                self.grad_clip
            ));
        }
        Ok(())
    }

    /// Tokens processed per optimiser step for sequences of `seq_len`.
    pub fn tokens_per_step(&self, seq_len: i64) -> i64 {
        self.micro_batch_size * self.micro_batches as i64 * seq_len
    }
}

/// Where tensors live: `auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// CUDA device 0 when available, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// A CUDA device by index.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(DeviceSpec::Cuda)
                    .map_err(|_| Error::Config(format!("bad CUDA device index in {s:?}"))),
                None => Err(Error::Config(format!(
                    "unknown device {s:?}: expected auto, cpu, cuda or cuda:N"
                ))),
            },
        }
    }
}

impl DeviceSpec {
    /// The libtorch device, checking that a requested CUDA device exists.
    pub fn resolve(self) -> Result<tch::Device> {
        match self {
            DeviceSpec::Auto => Ok(tch::Device::cuda_if_available()),
            DeviceSpec::Cpu => Ok(tch::Device::Cpu),
            DeviceSpec::Cuda(i) => {
                let n = tch::Cuda::device_count().max(0) as usize;
                if i < n {
                    Ok(tch::Device::Cuda(i))
                } else {
                    Err(Error::Config(format!(
                        "cuda:{i} requested but {n} CUDA devices found"
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let cfg: ModelConfig =
            serde_json::from_str(r#"{"d_model":32,"n_layers":4,"n_heads":2,"seq_len":16}"#)
                .unwrap();
        assert_eq!(cfg.vocab_size, 256);
        assert_eq!(cfg.mlp_ratio, 4);
        cfg.validate_stages(4).unwrap();
        let err = cfg.validate_stages(5).unwrap_err().to_string();
        assert!(err.contains("5 stages need at least 5 layers"), "{err}");
        let bad = ModelConfig {
            n_heads: 3,
            ..cfg.clone()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("multiple of n_heads"));
        assert!(serde_json::from_str::<ModelConfig>(r#"{"d_model":32,"n_layer":4}"#).is_err());
        TrainConfig::tiny().validate().unwrap();
        let t = TrainConfig {
            betas: [0.9, 1.0],
            ..TrainConfig::tiny()
        };
        assert!(t.validate().is_err());
    }

    #[test]
    fn device_specs() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("CPU".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cpu.resolve().unwrap(), tch::Device::Cpu);
    }
}
