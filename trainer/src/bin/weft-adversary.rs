//! `weft-adversary`: a dishonest trainer, for the end-to-end tests of the audit protocol.
//!
//! It is `weft-trainer train` (same flags, same registration, pipeline, submission and
//! reveal server) with one way of cheating, from `--cheat-from` on, installed through the
//! library's seams ([`StepHook`], [`CommitHook`], [`Hooks::withhold_reveals`]). It is built
//! only with `--features adversary` (`scripts/test.sh` does; `scripts/setup.sh` does not), so
//! no release trainer can cheat by a flag.
//!
//! | `--cheat`          | what it does from step `s₀` on                                  | caught by            |
//! |--------------------|-----------------------------------------------------------------|----------------------|
//! | `random-outputs`   | sends and commits random activations (random losses on the last stage) | outputs       |
//! | `scaled-gradients` | scales its gradients ×4 after clipping, and the input gradients it sends | moments, input grads |
//! | `zero-gradients`   | skips the backward pass's effect: zero gradients into AdamW     | weights, moments     |
//! | `stale-weights`    | skips the update (weights and moments unchanged)                | weight update        |
//! | `tampered-weight`  | adds 0.05 to one element of one weight after the update         | largest element      |
//! | `replay`           | commits and reveals step `t − 1` again as step `t`              | continuity, data     |
//! | `bad-reveal`       | commits honestly, reveals other bytes                           | Merkle proofs        |
//! | `no-reveal`        | admits no auditor to its reveals (from the start)              | reveal deadline      |
//! | `copy-replica`     | trains on the other replica's shard (`r xor 1`), not its own    | data assignment      |

use clap::Parser;
use rand::{Rng, SeedableRng};
use tch::Tensor;
use weft_primitives::step::Replica;
use weft_trainer::ml::commit::StepCommitment;
use weft_trainer::ml::commit::StepItem;
use weft_trainer::ml::worker::{ForwardOutput, StepHook};
use weft_trainer::ml::Result as MlResult;
use weft_trainer::net::store::StepBytes;
use weft_trainer::service::{self, Hooks, TrainArgs};
use weft_trainer::stage::CommitHook;
use weft_trainer::Result;

/// The ways to cheat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Cheat {
    RandomOutputs,
    ScaledGradients,
    ZeroGradients,
    StaleWeights,
    TamperedWeight,
    Replay,
    BadReveal,
    NoReveal,
    CopyReplica,
}

/// A dishonest `weft-trainer train` (tests only).
#[derive(Debug, Parser)]
#[command(name = "weft-adversary", version)]
struct Cli {
    /// How to cheat.
    #[arg(long, value_enum)]
    cheat: Cheat,
    /// First step to cheat on (earlier steps are honest).
    #[arg(long, default_value_t = 1)]
    cheat_from: u64,
    #[command(flatten)]
    train: TrainArgs,
}

/// The worker-level cheats.
struct Cheater {
    cheat: Cheat,
    from: u64,
    rng: rand::rngs::StdRng,
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

    fn after_update(&mut self, step: u64, params: &[(String, Tensor)]) -> MlResult<()> {
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

/// The commitment-level cheats.
struct Recommitter {
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
                let honest = (c.clone(), full);
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

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (cheat, from) = (cli.cheat, cli.cheat_from);
    println!("adversary: {cheat:?} from step {from}");
    let hooks = Hooks {
        step: Some(Box::new(move || {
            Box::new(Cheater {
                cheat,
                from,
                rng: rand::rngs::StdRng::seed_from_u64(from),
            }) as Box<dyn StepHook>
        })),
        commit: Some(Box::new(move || {
            Box::new(Recommitter {
                cheat,
                from,
                previous: None,
                last_after: None,
            }) as Box<dyn CommitHook>
        })),
        withhold_reveals: cheat == Cheat::NoReveal,
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(service::train_with(cli.train, hooks)));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
