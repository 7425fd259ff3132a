//! Dishonest trainers, as library mocks: the cheats of `weft-adversary` (the end-to-end
//! tests' dishonest `weft-trainer train`) and of the in-process simulation
//! ([`crate::stage::sim`]), installed through the trainer's seams: [`StepHook`] on the worker
//! (what it sends, how it updates), [`CommitHook`] on the stage (what it commits and keeps
//! for its reveals).
//!
//! | [`Cheat`]          | what it does from step `s₀` on                                  | caught by            |
//! |--------------------|-----------------------------------------------------------------|----------------------|
//! | `random-outputs`   | sends and commits random activations (random losses on the last stage) | outputs       |
//! | `scaled-gradients` | scales its gradients ×4 after clipping, and the input gradients it sends | moments, input grads |
//! | `zero-gradients`   | skips the backward pass's effect: zero gradients into AdamW     | weights, moments     |
//! | `stale-weights`    | skips the update (weights and moments unchanged)                | weight update        |
//! | `tampered-weight`  | adds 0.05 to one element of one weight after the update         | largest element      |
//! | `replay`           | commits and reveals step `t − 1` again as step `t`              | the chain, at commit (continuity) |
//! | `bad-reveal`       | commits honestly, reveals other bytes                           | Merkle proofs        |
//! | `no-reveal`        | admits no auditor to its reveals (from the start)              | reveal deadline      |
//! | `copy-replica`     | trains on the other replica's shard (`r xor 1`), not its own    | data assignment      |
//! | `nudge`            | after each update moves every weight tensor half the default tolerance along a fixed direction of its choosing | exact audits only (same compute class) |
//! | `forged-messages`  | commits its honest outputs and input gradients but sends its neighbour other ones (sealed, as a receiver requires) | the chain, at commit (the neighbour's seal) |
//! | `poisoned-update`  | replicas that average: sends (sealed) and commits its update ×(−1000); the trimmed mean of 3 or more outvotes it | update (its audit) |
//! | `selfish-aggregate` | replicas that average: applies its own update alone instead of the round's trimmed mean, committing the round as aggregated | the chain at once (replicas diverge, forced audits), then the aggregate (its audit) |

use crate::net::store::StepBytes;
use crate::stage::{CommitHook, SendTamper};
use crate::Result;
use rand::{Rng, SeedableRng};
use tch::Tensor;
use weft_ml::commit::{StepCommitment, StepItem};
use weft_ml::worker::{ForwardOutput, StepHook};
use weft_ml::Result as MlResult;
use weft_primitives::step::Replica;

/// The ways to cheat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cheat {
    /// Random activations (random losses on the last stage).
    RandomOutputs,
    /// Gradients ×4 after clipping, and ×4 input gradients sent back.
    ScaledGradients,
    /// Zero gradients into AdamW.
    ZeroGradients,
    /// No update.
    StaleWeights,
    /// One weight element moved by 0.05 after the update.
    TamperedWeight,
    /// Step `t − 1` committed and revealed again as step `t`.
    Replay,
    /// An honest commitment, other bytes revealed.
    BadReveal,
    /// No auditor admitted to the reveals.
    NoReveal,
    /// Trains on the other replica's shard.
    CopyReplica,
    /// Steers every weight tensor along a fixed direction by half of what the default
    /// tolerance admits ([`nudge_budget`]).
    Nudge,
    /// Honest outputs committed, other tensors sent ([`forged_messages`]).
    ForgedMessages,
    /// Replicas that average: its update ×(−1000) sent to the other replicas (and committed,
    /// sealed), everything else honest.
    PoisonedUpdate,
    /// Replicas that average: sends and commits its honest update and the round it got, but
    /// applies its own update alone instead of the round's trimmed mean.
    SelfishAggregate,
}

/// The `forged-messages` cheat from step `from` on: what leaves for a neighbour (the
/// activations of a stage before the last, the input gradients of a stage after the first)
/// is what the worker committed plus 0.1 in every element. Its own commitment stays honest,
/// so its audits pass; its neighbour trains on something else.
pub fn forged_messages(from: u64) -> SendTamper {
    SendTamper(std::sync::Arc::new(
        move |step, _direction, _micro, t: &mut Tensor| {
            if step >= from {
                *t = t.f_add_scalar(0.1)?;
            }
            Ok(())
        },
    ))
}

/// The largest L2 displacement of one weight tensor that the default tolerance
/// (`weft_ml::audit::Tolerance::default()`) admits after an update `update` to weights
/// `after`: the update bound (`1e-2 · ‖Δ‖`), the relative L2 bound (`1e-4 · ‖w‖`) and, spread
/// evenly over `n` elements, the element bound (`1e-3 · max |w|`), whichever is least.
pub fn nudge_budget(update_norm: f64, weights_norm: f64, weights_max: f64, n: usize) -> f64 {
    let t = weft_ml::audit::Tolerance::default();
    (t.update_rel_l2 * update_norm)
        .min(t.rel_l2 * weights_norm)
        .min(t.max_abs_rel * weights_max * (n as f64).sqrt())
}

/// The fixed direction the `nudge` cheat steers a tensor of `n` elements along: ±1 per
/// element from a seeded generator, of unit L2 norm.
pub fn nudge_direction(name: &str, like: &Tensor) -> MlResult<Tensor> {
    let seed = blake3::hash(name.as_bytes());
    let mut rng = rand::rngs::StdRng::from_seed(*seed.as_bytes());
    let n = like.numel();
    let signs: Vec<f32> = (0..n)
        .map(|_| if rng.gen_bool(0.5) { 1.0 } else { -1.0 })
        .collect();
    Ok(Tensor::f_from_slice(&signs)?
        .f_reshape(like.size())?
        .f_to(like.device())?
        .f_div_scalar((n as f64).sqrt())?)
}

/// The worker-level cheats (a [`StepHook`]).
pub struct Cheater {
    cheat: Cheat,
    from: u64,
    rng: rand::rngs::StdRng,
    /// `nudge`: the weights before the update; `selfish-aggregate`: its own update.
    before: Vec<Tensor>,
}

impl StepHook for Cheater {
    fn forward_output(
        &mut self,
        step: u64,
        _micro: usize,
        out: &mut ForwardOutput,
    ) -> MlResult<()> {
        if self.cheat != Cheat::RandomOutputs || step < self.from {
            return Ok(());
        }
        match out {
            ForwardOutput::Activations(a) => *a = a.f_randn_like()?,
            ForwardOutput::Loss(l) => *l = self.rng.gen_range(0.0..10.0),
        }
        Ok(())
    }

    fn input_grad(&mut self, step: u64, _micro: usize, grad: &mut Tensor) -> MlResult<()> {
        if self.cheat == Cheat::ScaledGradients && step >= self.from {
            *grad = grad.f_mul_scalar(4.0)?;
        }
        Ok(())
    }

    fn before_update(&mut self, step: u64, params: &[(String, Tensor)]) -> MlResult<bool> {
        if step < self.from {
            return Ok(true);
        }
        match self.cheat {
            Cheat::StaleWeights => return Ok(false),
            Cheat::SelfishAggregate => {
                // Its own update (kept by `update`) in place of the aggregate.
                let own = std::mem::take(&mut self.before);
                tch::no_grad(|| -> MlResult<()> {
                    for ((_, p), u) in params.iter().zip(&own) {
                        let mut g = p.f_grad()?;
                        if g.defined() && g.size() == u.size() {
                            g.f_copy_(u)?;
                        }
                    }
                    Ok(())
                })?;
            }
            Cheat::Nudge => {
                self.before = params
                    .iter()
                    .map(|(_, p)| p.f_detach_copy())
                    .collect::<Result<_, _>>()?;
            }
            Cheat::ScaledGradients | Cheat::ZeroGradients => {
                let factor = if self.cheat == Cheat::ZeroGradients {
                    0.0
                } else {
                    4.0
                };
                tch::no_grad(|| -> MlResult<()> {
                    for (_, p) in params {
                        let mut g = p.f_grad()?;
                        if g.defined() {
                            let _ = g.f_mul_scalar_(factor)?;
                        }
                    }
                    Ok(())
                })?;
            }
            _ => {}
        }
        Ok(true)
    }

    fn update(&mut self, step: u64, update: &mut Vec<Tensor>) -> MlResult<()> {
        if self.cheat == Cheat::PoisonedUpdate && step >= self.from {
            for u in update.iter_mut() {
                *u = u.f_mul_scalar(-1000.0)?;
            }
        }
        if self.cheat == Cheat::SelfishAggregate && step >= self.from {
            self.before = update
                .iter()
                .map(Tensor::f_detach_copy)
                .collect::<Result<_, _>>()?;
        }
        Ok(())
    }

    fn after_update(&mut self, step: u64, params: &[(String, Tensor)]) -> MlResult<()> {
        if self.cheat == Cheat::Nudge && step >= self.from {
            let before = std::mem::take(&mut self.before);
            return tch::no_grad(|| -> MlResult<()> {
                for ((name, p), b) in params.iter().zip(&before) {
                    let update = p.f_sub(b)?.f_norm()?.f_double_value(&[])?;
                    let norm = p.f_norm()?.f_double_value(&[])?;
                    let max = p.f_abs()?.f_max()?.f_double_value(&[])?;
                    let budget = 0.5 * nudge_budget(update, norm, max, p.numel());
                    let d = nudge_direction(name, p)?.f_mul_scalar(budget)?;
                    let mut p = p.shallow_clone();
                    let _ = p.f_add_(&d)?;
                }
                Ok(())
            });
        }
        if self.cheat != Cheat::TamperedWeight || step < self.from {
            return Ok(());
        }
        if let Some((_, p)) = params.iter().max_by_key(|(_, p)| p.numel()) {
            tch::no_grad(|| -> MlResult<()> {
                let flat = p.f_view([-1])?;
                let mut first = flat.f_narrow(0, 0, 1)?;
                let _ = first.f_add_scalar_(0.05)?;
                Ok(())
            })?;
        }
        Ok(())
    }

    fn data_replica(&self, step: u64, replica: Replica) -> Replica {
        if self.cheat == Cheat::CopyReplica && step >= self.from {
            // The neighbouring replica's shard (runs with two replicas).
            replica ^ 1
        } else {
            replica
        }
    }
}

/// The commitment-level cheats (a [`CommitHook`]).
pub struct Recommitter {
    cheat: Cheat,
    from: u64,
    /// The honest previous step with every item's bytes explicit.
    previous: Option<(StepCommitment, StepBytes)>,
    /// The previous step's `weights_after` and `optimizer_after` bytes.
    last_after: Option<(Vec<u8>, Vec<u8>)>,
}

fn item(bytes: &StepBytes, which: StepItem) -> Option<Vec<u8>> {
    bytes
        .items
        .iter()
        .find(|(i, _)| *i == which)
        .and_then(|(_, b)| b.clone())
}

impl CommitHook for Recommitter {
    fn commit(&mut self, c: &mut StepCommitment, bytes: &mut StepBytes) -> Result<()> {
        match self.cheat {
            Cheat::BadReveal if c.step >= self.from => {
                // The commitment stays honest; what is kept for the reveal is not.
                for (i, b) in &mut bytes.items {
                    if *i == StepItem::WeightsAfter {
                        if let Some(first) = b.as_mut().and_then(|v| v.first_mut()) {
                            *first ^= 0x01;
                        }
                    }
                }
            }
            Cheat::Replay => {
                let mut full = bytes.clone();
                for (i, b) in &mut full.items {
                    if b.is_none() {
                        *b = match (i, &self.last_after) {
                            (StepItem::WeightsBefore, Some((w, _))) => Some(w.clone()),
                            (StepItem::OptimizerBefore, Some((_, o))) => Some(o.clone()),
                            _ => None,
                        };
                    }
                }
                if let (Some(w), Some(o)) = (
                    item(&full, StepItem::WeightsAfter),
                    item(&full, StepItem::OptimizerAfter),
                ) {
                    self.last_after = Some((w, o));
                }
                let honest = (*c, full);
                if c.step >= self.from {
                    if let Some((old, old_bytes)) = self.previous.take() {
                        *c = StepCommitment {
                            step: c.step,
                            ..old
                        };
                        *bytes = old_bytes;
                    }
                }
                self.previous = Some(honest);
            }
            _ => {}
        }
        Ok(())
    }
}

impl Cheater {
    /// The worker hook of `cheat` from step `from` on.
    pub fn new(cheat: Cheat, from: u64) -> Self {
        Cheater {
            cheat,
            from,
            rng: rand::rngs::StdRng::seed_from_u64(from),
            before: Vec::new(),
        }
    }
}

impl Recommitter {
    /// The commit hook of `cheat` from step `from` on.
    pub fn new(cheat: Cheat, from: u64) -> Self {
        Recommitter {
            cheat,
            from,
            previous: None,
            last_after: None,
        }
    }
}
