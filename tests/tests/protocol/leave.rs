//! A stage holder leaves a run gracefully and a spare takes its slot over with its state.
//!
//! Two stages, one replica, every step audited, three trainers: one per stage and a spare.
//! The stage-1 holder gets SIGTERM (what `systemctl stop` sends). It finishes its step,
//! commits every step it trained, only then submits `leave_run`, and loses its slot at the
//! next epoch boundary, where the chain gives it to the spare. The spare fetches the slot's
//! last committed weights and AdamW moments from the leaver over libp2p, each chunk checked
//! against the committed roots, and continues: its first step is exactly the one after the
//! leaver's last (nothing trained is lost, and the chain, which refuses a step that does not
//! start from the slot's last committed state, accepts it), its steps pass their bit-exact
//! audits and its loss continues the curve (far below the loss of a fresh model). The stage-0
//! holder restarts its pipeline with the new neighbour. The leaver keeps answering its
//! auditors and the spare until their windows close, exits with status 0, every audit of its
//! steps settles as a pass, it is never slashed and stays a registered trainer.

use super::processes::{
    audited_tiny_run, dev_node, start_auditors, trainer_args, validators_funding,
};
use super::*;
use weft_tests::{wait_until, Spawned};

/// The trainers of the run.
const TRAINERS: [&str; 3] = ["//Leave0", "//Leave1", "//Leave2"];

/// The largest step `stage` printed in a trainer's log (`stage S step K loss …`).
fn last_printed_step(log: &str, stage: u16) -> Option<u64> {
    let prefix = format!("stage {stage} step ");
    log.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .max()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leaving_trainer_hands_its_slot_over_and_training_goes_on() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, url, c) = dev_node(dir.path()).await;

    in_parallel(&url, validators_funding(&TRAINERS, audited_tiny_run(60, 1))).await;
    let procs = start_auditors(&url, dir.path());
    let mut trainers = Vec::new();
    for who in TRAINERS {
        let mut args = vec!["train".to_string()];
        args.extend(trainer_args(&url, who, 0, dir.path()));
        let name = who.trim_start_matches("//");
        trainers.push(Spawned::start("weft-trainer", &args, dir.path(), name).unwrap());
    }
    let dump = |trainers: &[Spawned]| {
        let mut s: Vec<String> = trainers
            .iter()
            .chain(&procs)
            .map(Spawned::log_tail)
            .collect();
        s.push(format!("--- node ---\n{}", node.log_tail()));
        s.join("\n")
    };

    // --- training is under way: three steps of stage 1 on chain ---------------------------
    let leaver = wait_for(
        Duration::from_secs(240),
        "three steps of stage 1",
        || async {
            let a = c.stage_assignments(0, None).await.ok()?;
            let slot = &a.stages[1].replicas[0];
            (slot.next_step >= 3).then_some(slot.trainer?)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&trainers)));
    let i = TRAINERS
        .iter()
        .position(|t| account(t) == leaver)
        .expect("a trainer of ours holds stage 1");
    let holders = c.stage_assignments(0, None).await.unwrap();
    let spare = TRAINERS
        .iter()
        .map(|t| account(t))
        .find(|a| {
            holders
                .stages
                .iter()
                .all(|s| s.replicas[0].trainer != Some(*a))
        })
        .expect("one trainer is a spare");
    let j = TRAINERS.iter().position(|t| account(t) == spare).unwrap();

    // --- SIGTERM: it commits what it trained, leaves, and the spare gets the slot ---------
    trainers[i].terminate().unwrap();
    wait_until(Duration::from_secs(90), "the leave", || async {
        trainers[i].log().contains("left run 0")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&trainers)));
    wait_for(Duration::from_secs(60), "the spare in stage 1", || async {
        let a = c.stage_assignments(0, None).await.ok()?;
        (a.stages[1].replicas[0].trainer == Some(spare)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&trainers)));
    let printed = last_printed_step(&trainers[i].log(), 1).expect("it printed its steps");
    let first = printed + 1;

    // --- the spare takes the state over and trains on from the next step -----------------
    wait_for(
        Duration::from_secs(180),
        "three steps of the spare",
        || async {
            let a = c.stage_assignments(0, None).await.ok()?;
            (a.stages[1].replicas[0].next_step >= first + 3).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&trainers)));
    assert!(
        trainers[j].log().contains(&format!(
            "took over stage 1 replica 0 of run 0 at step {first}:"
        )),
        "{}",
        trainers[j].log_tail()
    );
    let commitment = |step: u64| {
        let c = &c;
        async move { c.commitment(0, 1, 0, step, None).await.unwrap().unwrap() }
    };
    let (before, after) = (commitment(printed).await, commitment(first).await);
    assert_eq!((before.trainer, after.trainer), (leaver, spare));
    assert_eq!(after.roots.weights_before, before.roots.weights_after);
    assert_eq!(after.roots.optimizer_before, before.roots.optimizer_after);
    // The loss goes on from where the leaver left it, not from a fresh model's.
    let loss = |c: &weft_rpc_api::protocol::CommitmentJson| c.loss.unwrap() as f64 / 1e6;
    let initial = loss(&commitment(0).await);
    let mut theirs = Vec::new();
    for step in [printed - 2, printed - 1, printed] {
        theirs.push(loss(&commitment(step).await));
    }
    let mut ours = Vec::new();
    for step in first..first + 3 {
        ours.push(loss(&commitment(step).await));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    eprintln!(
        "loss: step 0 {initial:.4}, leaver's last three {theirs:?}, spare's first three {ours:?}"
    );
    assert!(
        mean(&ours) < mean(&theirs) + 0.25 * (initial - mean(&theirs)).max(0.1),
        "the loss jumped: step 0 {initial}, before {theirs:?}, after {ours:?}"
    );

    // --- the leaver serves its auditors and the spare, then exits cleanly -----------------
    let status = wait_for(Duration::from_secs(180), "the leaver to exit", || {
        let s = trainers[i].try_exit_status().ok().flatten();
        async move { s }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&trainers)));
    assert!(
        status.success(),
        "exited with {status}\n{}",
        dump(&trainers)
    );
    assert!(
        trainers[i]
            .log()
            .contains("released stage 1 replica 0 of run 0"),
        "{}",
        trainers[i].log_tail()
    );
    let a = c.stage_assignments(0, None).await.unwrap();
    assert!(!a.candidates.contains(&leaver), "{a:?}");
    // Every audit of its steps settles, as a pass; the spare's first steps pass too.
    let audits = wait_for(Duration::from_secs(90), "the audits to settle", || async {
        let audits = c.audits(0, None).await.ok()?;
        let settled = |who: AccountId, steps: std::ops::Range<u64>| {
            let mine: Vec<_> = audits
                .iter()
                .filter(|a| a.trainer == who && a.stage == 1 && steps.contains(&a.step))
                .cloned()
                .collect();
            (mine.len() as u64 == steps.end - steps.start
                && mine.iter().all(|a| a.verdict.is_some()))
            .then_some(mine)
        };
        Some((
            settled(leaver, 0..first)?,
            settled(spare, first..first + 3)?,
        ))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&trainers)));
    for a in audits.0.iter().chain(&audits.1) {
        assert_eq!(
            a.verdict,
            Some(work::Verdict::Pass),
            "{a:?}\n{}",
            dump(&trainers)
        );
    }
    assert!(c
        .slashes(None)
        .await
        .unwrap()
        .iter()
        .all(|s| s.offender != leaver && s.offender != spare));
    assert!(
        c.trainer(leaver, None).await.unwrap().is_some(),
        "still a trainer"
    );
}
