//! Checkpoints of one stage: weights, AdamW state and step, in one safetensors file.
//!
//! Tensor names: `param.<name>` for each parameter, `adam_m.<name>` / `adam_v.<name>` for
//! its moments, `meta.t` (int64 `[1]`: completed updates = next step), `meta.stage`
//! (int64 `[2]`: stage, number of stages) and `meta.config` (uint8 `[32]`: blake3 of the
//! model config's JSON), so a checkpoint cannot be loaded into another stage or model.
//! Everything is stored in f32 exactly as trained, so resuming continues bit for bit
//! (data assignment is counter-based and carries no state of its own).
//!
//! Writes are atomic: the file is written to `<path>.tmp` in the same directory, synced,
//! then renamed over `path`, so a crash leaves either the old or the new checkpoint.

use crate::error::{Error, Result};
use crate::model::Stage;
use crate::optim::Moments;
use crate::worker::StageWorker;
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn config_hash(worker: &StageWorker) -> Result<[u8; 32]> {
    config_hash_of(worker.stage().config())
}

fn config_hash_of(cfg: &crate::config::ModelConfig) -> Result<[u8; 32]> {
    let json = serde_json::to_vec(cfg)
        .map_err(|e| Error::Checkpoint(format!("cannot serialise the model config: {e}")))?;
    Ok(*blake3::hash(&json).as_bytes())
}

fn cpu(t: &Tensor) -> Result<Tensor> {
    Ok(t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?)
}

/// Saves `worker`'s stage weights, optimiser state and step to `path`, atomically.
pub fn save(worker: &StageWorker, path: &Path) -> Result<()> {
    let spec = worker.stage().spec();
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (name, p) in worker.stage().params() {
        tensors.push((format!("param.{name}"), cpu(p)?));
    }
    for s in worker.optimizer().moments() {
        tensors.push((format!("adam_m.{}", s.name), cpu(&s.m)?));
        tensors.push((format!("adam_v.{}", s.name), cpu(&s.v)?));
    }
    tensors.push((
        "meta.t".into(),
        Tensor::f_from_slice(&[worker.optimizer().t() as i64])?,
    ));
    tensors.push((
        "meta.stage".into(),
        Tensor::f_from_slice(&[spec.stage as i64, spec.n_stages as i64])?,
    ));
    tensors.push((
        "meta.config".into(),
        Tensor::f_from_slice(&config_hash(worker)?)?,
    ));

    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Checkpoint(format!("{} is not a file path", path.display())))?;
    let mut tmp_name = file_name.to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    Tensor::write_safetensors(&tensors, &tmp)?;
    let f = std::fs::File::open(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Persist the rename; not every platform can open a directory, so best effort.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    tracing::info!(path = %path.display(), step = worker.optimizer().t(), "checkpoint saved");
    Ok(())
}

/// The tensors of the checkpoint at `path` written by [`save`] for `stage`, after checking
/// that it is of this stage of this model, with the step it was taken at; the `meta.*`
/// entries are removed.
fn read_checked(path: &Path, stage: &Stage) -> Result<(HashMap<String, Tensor>, u64)> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    let mut map: HashMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
    let mut take = |name: &str| -> Result<Tensor> {
        map.remove(name)
            .ok_or_else(|| Error::Checkpoint(format!("{} lacks tensor {name}", path.display())))
    };
    let spec = stage.spec();
    let meta: Vec<i64> = Vec::try_from(&take("meta.stage")?)?;
    if meta != [spec.stage as i64, spec.n_stages as i64] {
        return Err(Error::Checkpoint(format!(
            "checkpoint is of stage {meta:?}, this is stage {} of {}",
            spec.stage, spec.n_stages
        )));
    }
    let hash: Vec<u8> = Vec::try_from(&take("meta.config")?)?;
    if hash != config_hash_of(stage.config())? {
        return Err(Error::Checkpoint(
            "checkpoint was made for another model config".into(),
        ));
    }
    let t: Vec<i64> = Vec::try_from(&take("meta.t")?)?;
    let t = match t.as_slice() {
        [t] if *t >= 0 => *t as u64,
        _ => return Err(Error::Checkpoint(format!("bad meta.t {t:?}"))),
    };
    Ok((map, t))
}

/// Loads a checkpoint written by [`save`] into `worker` (which must hold the same stage of
/// the same model). Returns the step to continue from.
pub fn load(worker: &mut StageWorker, path: &Path) -> Result<u64> {
    let (mut map, t) = read_checked(path, worker.stage())?;
    let mut take = |name: &str| -> Result<Tensor> {
        map.remove(name)
            .ok_or_else(|| Error::Checkpoint(format!("{} lacks tensor {name}", path.display())))
    };
    let mut weights = Vec::new();
    let mut moments = Vec::new();
    for (name, p) in worker.stage().params() {
        let check = |t: Tensor| -> Result<Tensor> {
            if t.size() != p.size() || t.f_kind()? != Kind::Float {
                return Err(Error::Checkpoint(format!(
                    "{name}: checkpoint has {:?} {:?}, the model {:?} {:?}",
                    t.f_kind()?,
                    t.size(),
                    p.f_kind()?,
                    p.size()
                )));
            }
            Ok(t)
        };
        weights.push((name.clone(), check(take(&format!("param.{name}"))?)?));
        moments.push(Moments {
            name: name.clone(),
            m: check(take(&format!("adam_m.{name}"))?)?,
            v: check(take(&format!("adam_v.{name}"))?)?,
        });
    }
    if let Some(extra) = map.keys().next() {
        return Err(Error::Checkpoint(format!(
            "unexpected tensor {extra} in {}",
            path.display()
        )));
    }
    worker.load_state(&weights, t, moments)?;
    tracing::info!(path = %path.display(), step = t, "checkpoint loaded");
    Ok(t)
}

/// Why canonical state bytes could not be taken as a stage's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateBytesError {
    /// The weights are not exactly the stage's parameters in name order.
    WeightsSize,
    /// The moments are not exactly `m`, `v` of each parameter in name order.
    OptimizerSize,
}

/// A stage's parameters (name, tensor) in name order and their AdamW moments.
pub type StageState = (Vec<(String, Tensor)>, Vec<Moments>);

/// A stage's weights and AdamW moments decoded from canonical bytes (the items
/// `weights_*` and `optimizer_*` of a commitment: f32 LE, parameters in name order, moments
/// `m`, `v` per parameter), on `device`.
pub fn state_from_canonical(
    shapes: &[(String, Vec<i64>)],
    weights: &[u8],
    optimizer: &[u8],
    device: Device,
) -> Result<std::result::Result<StageState, StateBytesError>> {
    let dims: Vec<Vec<i64>> = shapes.iter().map(|(_, s)| s.clone()).collect();
    let Some(w) = crate::tensor::f32_tensors(weights, &dims, device)? else {
        return Ok(Err(StateBytesError::WeightsSize));
    };
    let twice: Vec<Vec<i64>> = dims.iter().flat_map(|s| [s.clone(), s.clone()]).collect();
    let Some(mom) = crate::tensor::f32_tensors(optimizer, &twice, device)? else {
        return Ok(Err(StateBytesError::OptimizerSize));
    };
    let names = shapes.iter().map(|(n, _)| n.clone());
    let params: Vec<(String, Tensor)> = names.clone().zip(w).collect();
    let mut mom = mom.into_iter();
    let mut moments = Vec::with_capacity(shapes.len());
    for name in names {
        match (mom.next(), mom.next()) {
            (Some(m), Some(v)) => moments.push(Moments { name, m, v }),
            _ => return Ok(Err(StateBytesError::OptimizerSize)),
        }
    }
    Ok(Ok((params, moments)))
}

/// Loads a stage's state after `t` completed steps from the canonical bytes of a
/// commitment's `weights_after` and `optimizer_after` into `worker` (a slot's successor,
/// with bytes it verified against the committed roots).
pub fn load_canonical(
    worker: &mut StageWorker,
    weights: &[u8],
    optimizer: &[u8],
    t: u64,
) -> Result<()> {
    let stage = worker.stage();
    let shapes = crate::model::param_shapes(stage.config(), stage.spec());
    let device = stage.device();
    match state_from_canonical(&shapes, weights, optimizer, device)? {
        Ok((params, moments)) => worker.load_state(&params, t, moments),
        Err(e) => Err(Error::Checkpoint(format!(
            "the fetched state is not this stage's: {e:?}"
        ))),
    }
}

/// Loads only the weights of a checkpoint written by [`save`] into `stage` (for serving:
/// no optimiser), after checking that it is of this stage of this model. Returns the step
/// the checkpoint was taken at (completed updates).
pub fn load_weights(stage: &mut Stage, path: &Path) -> Result<u64> {
    let (map, t) = read_checked(path, stage)?;
    let weights: Vec<(String, Tensor)> = map
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("param.").map(|n| (n.to_string(), v)))
        .collect();
    stage.load_params(&weights)?;
    tracing::info!(path = %path.display(), step = t, "weights loaded");
    Ok(t)
}
