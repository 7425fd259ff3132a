//! `weft-adversary`: a dishonest trainer, for the end-to-end tests of the audit protocol.
//!
//! It is `weft-trainer train` (same flags, same registration, pipeline, submission and
//! reveal server) with one way of cheating ([`weft_trainer::adversary`], whose docs list the
//! cheats and what catches each), from `--cheat-from` on. It is built only with
//! `--features adversary` (`scripts/test.sh` does; `scripts/setup.sh` does not), so no
//! release trainer can cheat by a flag.

use clap::Parser;
use weft_trainer::adversary::{Cheat, Cheater, Recommitter};
use weft_trainer::ml::worker::StepHook;
use weft_trainer::service::{self, Hooks, TrainArgs};
use weft_trainer::stage::CommitHook;

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
            Box::new(Cheater::new(cheat, from)) as Box<dyn StepHook>
        })),
        commit: Some(Box::new(move || {
            Box::new(Recommitter::new(cheat, from)) as Box<dyn CommitHook>
        })),
        withhold_reveals: cheat == Cheat::NoReveal,
        tamper: (cheat == Cheat::ForgedMessages)
            .then(|| weft_trainer::adversary::forged_messages(from)),
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
