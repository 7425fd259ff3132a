//! Loading a stage's weights of one committed step from its tensor store into a model of
//! its own: the `weights_after` bytes (canonical order: parameters sorted by name, f32
//! little-endian), checked against the root the stage committed for that step.

use tch::{Device, Tensor};
use weft_ml::config::ModelConfig;
use weft_ml::model::{param_shapes, Stage, StageSpec};
use weft_ml::tensor::f32_tensors;
use weft_primitives::step::StepItem;
use weft_primitives::tensor::root_of_bytes;
use weft_stage_net::store::TensorStore;
use weft_stage_net::wire::Step;

/// Why a snapshot could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The store does not have the step (never trained here, or pruned).
    #[error("not in the store: {0}")]
    Missing(#[from] weft_stage_net::Error),
    /// The bytes are not what the stage committed.
    #[error("the stored weights do not match the committed root")]
    RootMismatch,
    /// The bytes do not fit the model's parameter shapes.
    #[error("{got} bytes of weights, the model has {expected}")]
    Size {
        /// Bytes found.
        got: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// Building the model failed.
    #[error(transparent)]
    Model(#[from] weft_ml::Error),
}

/// The stage `spec` of `cfg` with the weights it committed at `step`, on the CPU.
pub fn load(
    store: &TensorStore,
    step: Step,
    cfg: &ModelConfig,
    spec: StageSpec,
) -> Result<Stage, SnapshotError> {
    let committed = store.commitment(step)?;
    let bytes = store.item(step, StepItem::WeightsAfter)?;
    if root_of_bytes(&bytes) != committed.roots.weights_after {
        return Err(SnapshotError::RootMismatch);
    }
    let (names, shapes): (Vec<String>, Vec<Vec<i64>>) = param_shapes(cfg, spec).into_iter().unzip();
    let tensors =
        f32_tensors(&bytes, &shapes, Device::Cpu)?.ok_or_else(|| SnapshotError::Size {
            got: bytes.len(),
            expected: shapes
                .iter()
                .map(|s| s.iter().product::<i64>() as usize * 4)
                .sum(),
        })?;
    let named: Vec<(String, Tensor)> = names.into_iter().zip(tensors).collect();
    Ok(Stage::from_params(cfg, spec, Device::Cpu, &named)?)
}
