//! Replicas that average, end to end: a 2-stage run with 2 replicas per stage whose replicas
//! average their updates every step (`"replica_sync": "average"`), four honest
//! `weft-trainer train` processes and two validators running `weft-trainer audit`, every
//! step audited.
//!
//! After every step both replicas of each stage hold the same weights and optimiser state,
//! asserted on chain: their commitments of that step carry equal `weights_after` and
//! `optimizer_after` roots and the same included set, and each carries the root of its own
//! (different) update. Every audit of an averaged step passes: the auditor fetches the other
//! included replica's update from its holder, verifies it against that replica's committed
//! update root, and recomputes the trimmed mean and the step from it.

use super::processes::{audited_tiny_run_with, start_auditors, trainer_args, validators_funding};
use super::*;
use weft_primitives::Hash;
use weft_tests::Spawned;

const STEPS: u64 = 5;
const TRAINERS: [&str; 4] = ["//Avg0", "//Avg1", "//Avg2", "//Avg3"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn averaged_replicas_hold_the_same_weights_after_every_step_and_pass_their_audits() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("node"), &["--block-time", "200ms"])
        .await
        .unwrap();
    let url = node.ws_url();
    let c = node.cli_client().await.unwrap();
    let hyper = format!(
        r#"{{"micro_batch_size":2,"micro_batches":2,"lr":0.01,"warmup_steps":2,"total_steps":{STEPS},"replica_sync":"average"}}"#
    );
    let register = audited_tiny_run_with(
        &hyper,
        &[
            "--replicas",
            "2",
            "--max-steps",
            &STEPS.to_string(),
            "--steps-per-epoch",
            "3",
        ],
    );
    in_parallel(&url, validators_funding(&TRAINERS, register)).await;
    let mut procs = start_auditors(&url, dir.path());
    for (i, key) in TRAINERS.iter().enumerate() {
        let mut args = vec!["train".to_string()];
        args.extend(trainer_args(&url, key, 0, dir.path()));
        procs.push(Spawned::start("weft-trainer", &args, dir.path(), &format!("avg{i}")).unwrap());
    }
    let dump = |procs: &[Spawned]| {
        let mut s: Vec<String> = procs.iter().map(Spawned::log_tail).collect();
        s.push(format!("--- node ---\n{}", node.log_tail()));
        s.join("\n")
    };

    // Every slot commits every step, and every audit settles.
    let audits = wait_for(Duration::from_secs(600), "every audit settled", || async {
        let audits = c.audits(0, None).await.ok()?;
        (audits.len() as u64 == 4 * STEPS && audits.iter().all(|a| a.verdict.is_some()))
            .then_some(audits)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&procs)));

    let mut full_rounds = 0;
    for stage in 0..2u16 {
        for step in 0..STEPS {
            let [a, b] = [0u16, 1].map(|r| {
                let c = &c;
                async move {
                    c.commitment(0, stage, r, step, None)
                        .await
                        .unwrap()
                        .unwrap()
                }
            });
            let (a, b) = (a.await, b.await);
            let at = format!("stage {stage} step {step}");
            assert_eq!(
                a.roots.weights_after, b.roots.weights_after,
                "{at}: weights"
            );
            assert_eq!(
                a.roots.optimizer_after, b.roots.optimizer_after,
                "{at}: moments"
            );
            assert_ne!(a.trainer, b.trainer, "{at}");
            let included = a
                .included
                .clone()
                .expect("an averaged step commits its set");
            assert!(!included.is_empty(), "{at}");
            assert_eq!(Some(&included), b.included.as_ref(), "{at}: the same set");
            if included == [0, 1] {
                full_rounds += 1;
            }
            assert_ne!(a.roots.update, Hash::ZERO, "{at}: the update is committed");
            assert_ne!(
                a.roots.update, b.roots.update,
                "{at}: the replicas read different data"
            );
        }
    }
    assert!(
        full_rounds >= STEPS,
        "most rounds include both replicas: {full_rounds} of {}",
        2 * STEPS
    );
    // Every audit, of every averaged step, passed.
    assert!(
        audits
            .iter()
            .all(|a| a.verdict == Some(work::Verdict::Pass)),
        "{audits:#?}\n{}",
        dump(&procs)
    );
}
