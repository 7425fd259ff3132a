//! Helpers shared by the audit test binaries: run a step in process and build, per stage,
//! the commitment and the reveal an honest trainer would serve.
#![allow(clippy::unwrap_used, dead_code)]

use weft_ml::audit::Revealed;
use weft_ml::commit::StepItem;
use weft_ml::commit::{canonical_bytes, StepCommitment};
use weft_ml::schedule::run_step_in_process_detailed;
use weft_ml::worker::StageWorker;

/// The canonical bytes of a stage's parameters.
pub fn weights(w: &StageWorker) -> Vec<u8> {
    canonical_bytes(w.stage().params().iter().map(|(_, t)| t)).unwrap()
}

/// The canonical bytes of a stage's AdamW moments.
pub fn moments(w: &StageWorker) -> Vec<u8> {
    canonical_bytes(w.optimizer().moments().iter().flat_map(|m| [&m.m, &m.v])).unwrap()
}

/// Runs step `s` over `workers` and returns, per stage, the commitment and the reveal.
pub fn step_with_reveals(workers: &mut [StageWorker], s: u64) -> Vec<(StepCommitment, Revealed)> {
    let before: Vec<(Vec<u8>, Vec<u8>)> =
        workers.iter().map(|w| (weights(w), moments(w))).collect();
    let reports = run_step_in_process_detailed(workers, s).unwrap();
    reports
        .into_iter()
        .zip(before)
        .zip(workers.iter())
        .map(|((r, (wb, ob)), w)| {
            let rec = r.record.unwrap();
            let mut rev = Revealed::default();
            rev.items.insert(StepItem::WeightsBefore, wb);
            rev.items.insert(StepItem::OptimizerBefore, ob);
            rev.items
                .insert(StepItem::Inputs, canonical_bytes(&rec.inputs).unwrap());
            rev.items
                .insert(StepItem::Outputs, canonical_bytes(&rec.outputs).unwrap());
            rev.items.insert(
                StepItem::OutputGrads,
                canonical_bytes(&rec.output_grads).unwrap(),
            );
            rev.items.insert(
                StepItem::InputGrads,
                canonical_bytes(&rec.input_grads).unwrap(),
            );
            rev.items.insert(StepItem::WeightsAfter, weights(w));
            rev.items.insert(StepItem::OptimizerAfter, moments(w));
            (r.commitment.unwrap(), rev)
        })
        .collect()
}
