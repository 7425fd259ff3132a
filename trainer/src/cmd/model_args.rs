//! The model and training flags shared by `local-train`, `pipeline` and `bench`.

use clap::Args;
use std::path::PathBuf;
use tch::Device;
use weft_trainer::ml::config::{DeviceSpec, ModelConfig, TrainConfig};

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// CPU threads for libtorch (0 = its default). On a shared machine, 1 avoids the
    /// large slow-downs of OpenMP threads waiting for a busy core.
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
    /// Model config JSON (overrides --preset).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Model preset when no --config: tiny, small, medium, gpt2.
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Training config JSON (batch shape, optimiser); flags below override it.
    #[arg(long)]
    pub train_config: Option<PathBuf>,
    /// Sequences per micro-batch.
    #[arg(long)]
    pub micro_batch_size: Option<i64>,
    /// Micro-batches per step.
    #[arg(long)]
    pub micro_batches: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Run forward passes under bf16 autocast (CUDA only).
    #[arg(long)]
    pub bf16: bool,
}

impl ModelArgs {
    pub fn load(&self, steps: u64) -> anyhow::Result<(ModelConfig, TrainConfig, Device)> {
        let model = match &self.config {
            Some(p) => ModelConfig::from_file(p)?,
            None => ModelConfig::preset(&self.preset)?,
        };
        let mut train = match &self.train_config {
            Some(p) => TrainConfig::from_file(p)?,
            None => TrainConfig {
                micro_batch_size: 8,
                micro_batches: 4,
                lr: 1e-3,
                warmup_steps: (steps / 20).max(1),
                total_steps: steps.max(1),
                weight_decay: 0.1,
                ..TrainConfig::tiny()
            },
        };
        if let Some(b) = self.micro_batch_size {
            train.micro_batch_size = b;
        }
        if let Some(m) = self.micro_batches {
            train.micro_batches = m;
        }
        if let Some(lr) = self.lr {
            train.lr = lr;
        }
        train.validate()?;
        let device = self.device.parse::<DeviceSpec>()?.resolve()?;
        if self.threads > 0 {
            tch::set_num_threads(self.threads);
        }
        Ok((model, train, device))
    }
}
