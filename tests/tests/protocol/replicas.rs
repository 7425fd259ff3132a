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

use super::processes::{
    adversary_args, dev_node, dump, slash_of, start_auditors, tiny_run_of, trainer_args,
    validators_funding,
};
use super::*;
use weft_primitives::Hash;
use weft_tests::Spawned;

const STEPS: u64 = 5;

/// `weft run register` of a tiny run of `stages` stages and `replicas` replicas that
/// average, `steps` steps long, 3 steps per 10-block epoch, each step audited with
/// `audit_probability`.
fn averaged_run(stages: u16, replicas: u16, steps: u64, audit_probability: &str) -> Vec<String> {
    let hyper = format!(
        r#"{{"micro_batch_size":2,"micro_batches":2,"lr":0.01,"warmup_steps":2,"total_steps":{steps},"replica_sync":"average"}}"#
    );
    tiny_run_of(
        &hyper,
        stages,
        audit_probability,
        &[
            "--replicas",
            &replicas.to_string(),
            "--max-steps",
            &steps.to_string(),
            "--steps-per-epoch",
            "3",
        ],
    )
}
/// `weft-trainer train` for each of `keys` in run 0, working under `dir`, the replica
/// deadline 3 s.
fn deadline_trainers(url: &str, keys: &[&str], dir: &std::path::Path) -> Vec<Vec<String>> {
    keys.iter()
        .map(|key| {
            let mut a = vec!["train".to_string()];
            a.extend(trainer_args(url, key, 0, dir));
            a.extend(["--replica-deadline".to_string(), "3".to_string()]);
            a
        })
        .collect()
}

/// The replica of stage 0 of run 0 that `who` holds.
async fn replica_of(c: &Client, who: AccountId) -> Option<u16> {
    let a = c.stage_assignments(0, None).await.ok()?;
    a.stages[0]
        .replicas
        .iter()
        .position(|r| r.trainer == Some(who))
        .and_then(|r| u16::try_from(r).ok())
}

/// The commitment of step `step` of stage 0, replica `replica`, of run 0.
async fn committed(
    c: &Client,
    replica: u16,
    step: u64,
) -> Option<weft_rpc_api::protocol::CommitmentJson> {
    c.commitment(0, 0, replica, step, None).await.ok().flatten()
}

/// Starts `args[0]` and `args[1]` (the trainers of `keys`), waits until the second has
/// committed step 2 and kills it with SIGKILL. Returns the first's process and the two
/// trainers' replicas, `(first's, killed's)`.
async fn kill_second_after_step_2(
    c: &Client,
    node: &Node,
    args: &[Vec<String>],
    keys: [&str; 2],
    dir: &std::path::Path,
) -> (Vec<Spawned>, u16, u16) {
    let mut procs: Vec<Spawned> = keys
        .iter()
        .zip(args)
        .map(|(key, a)| Spawned::start("weft-trainer", a, dir, key.trim_start_matches("//")))
        .collect::<anyhow::Result<_>>()
        .unwrap();
    let killed = account(keys[1]);
    let k = wait_for(
        Duration::from_secs(300),
        "step 2 of the trainer to kill",
        || async {
            let k = replica_of(c, killed).await?;
            committed(c, k, 2).await.map(|_| k)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&procs, node)));
    let s = 1 - k;
    assert_eq!(replica_of(c, account(keys[0])).await, Some(s));
    drop(procs.pop());
    (procs, s, k)
}

const TRAINERS: [&str; 4] = ["//Avg0", "//Avg1", "//Avg2", "//Avg3"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn averaged_replicas_hold_the_same_weights_after_every_step_and_pass_their_audits() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, url, c) = dev_node(dir.path()).await;
    let register = averaged_run(2, 2, STEPS, "100%");
    in_parallel(&url, validators_funding(&TRAINERS, register)).await;
    let mut procs = start_auditors(&url, dir.path());
    for (i, key) in TRAINERS.iter().enumerate() {
        let mut args = vec!["train".to_string()];
        args.extend(trainer_args(&url, key, 0, dir.path()));
        procs.push(Spawned::start("weft-trainer", &args, dir.path(), &format!("avg{i}")).unwrap());
    }

    // Every slot commits every step, and every audit settles.
    let audits = wait_for(Duration::from_secs(600), "every audit settled", || async {
        let audits = c.audits(0, None).await.ok()?;
        (audits.len() as u64 == 4 * STEPS && audits.iter().all(|a| a.verdict.is_some()))
            .then_some(audits)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&procs, &node)));

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
        dump(&procs, &node)
    );
}

/// The poisoner's first poisoned step.
const POISON_FROM: u64 = 2;

/// One stage, three replicas that average, every step audited; the third trainer is
/// `weft-adversary --cheat poisoned-update`: from step [`POISON_FROM`] on it sends (sealed)
/// and commits its update ×(−1000). The trimmed mean (t = 1 of 3) outvotes it: all three
/// replicas keep the same weights, the loss goes on as before, the honest replicas' audits
/// (which recompute the aggregate over the poisoned update, fetched and checked against the
/// poisoner's seal) pass, and the poisoner's own audit fails — its update is not what its
/// inputs give — and it is slashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poisoned_update_is_outvoted_and_its_sender_fails_its_audit() {
    let _serial = serial().await;
    let _ = weft_tests::bin("weft-adversary");
    let dir = tempfile::tempdir().unwrap();
    let (node, url, c) = dev_node(dir.path()).await;
    let steps = 8u64;
    let register = averaged_run(1, 3, steps, "100%");
    let (honest, poisoner) = (["//Hon0", "//Hon1"], "//Poisoner");
    in_parallel(
        &url,
        validators_funding(&[honest[0], honest[1], poisoner], register),
    )
    .await;
    let mut procs = start_auditors(&url, dir.path());
    for (i, key) in honest.iter().enumerate() {
        let mut args = vec!["train".to_string()];
        args.extend(trainer_args(&url, key, 0, dir.path()));
        procs.push(Spawned::start("weft-trainer", &args, dir.path(), &format!("hon{i}")).unwrap());
    }
    let args = adversary_args(
        "poisoned-update",
        POISON_FROM,
        (&url, poisoner, 0, dir.path()),
    );
    procs.push(Spawned::start("weft-adversary", &args, dir.path(), "poisoner").unwrap());
    let poisoner = account(poisoner);
    let honest = honest.map(account);

    // The poisoner is slashed for a failed audit of its first poisoned step.
    let slash = slash_of(&c, poisoner, Duration::from_secs(400), (&procs, &node)).await;
    assert_eq!(slash.kind, staking::OffenceKind::AuditFailed, "{slash:?}");
    let audits = c.audits(0, None).await.unwrap();
    let failed: Vec<_> = audits
        .iter()
        .filter(|a| a.verdict == Some(work::Verdict::Fail))
        .collect();
    assert!(
        failed
            .iter()
            .all(|a| a.trainer == poisoner && a.step >= POISON_FROM),
        "{failed:#?}"
    );

    // The honest replicas' audits of the steps around the poisoning all settle and pass.
    let last = POISON_FROM + 1;
    let audits = wait_for(Duration::from_secs(300), "the honest audits", || async {
        let audits = c.audits(0, None).await.ok()?;
        let honest_settled = audits
            .iter()
            .filter(|a| honest.contains(&a.trainer) && a.step <= last && a.verdict.is_some())
            .count() as u64;
        (honest_settled == 2 * (last + 1)).then_some(audits)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&procs, &node)));
    for a in audits.iter().filter(|a| honest.contains(&a.trainer)) {
        assert_ne!(
            a.verdict,
            Some(work::Verdict::Fail),
            "{a:#?}\n{}",
            dump(&procs, &node)
        );
    }

    // Every replica committed the same weights at every step up to the poisoning and one
    // after; the poisoned step aggregated all three updates; the loss did not jump.
    let mut losses = Vec::new();
    for step in 0..=last {
        let mut weights = Vec::new();
        for r in 0..3u16 {
            let Some(cm) = c.commitment(0, 0, r, step, None).await.unwrap() else {
                continue;
            };
            if cm.trainer == poisoner && cm.status == work::CommitStatus::Voided {
                continue;
            }
            weights.push(cm.roots.weights_after);
            if step == POISON_FROM {
                assert_eq!(cm.included.as_deref(), Some(&[0u16, 1, 2][..]), "{cm:?}");
            }
            if honest.contains(&cm.trainer) {
                losses.push((step, cm.loss.expect("one stage commits its loss")));
            }
        }
        assert!(weights.len() >= 2, "step {step}: {weights:?}");
        assert!(
            weights.windows(2).all(|w| w[0] == w[1]),
            "step {step}: the replicas differ"
        );
    }
    let first = losses
        .iter()
        .find(|(s, _)| *s == 0)
        .map(|(_, l)| *l)
        .unwrap();
    for (step, loss) in &losses {
        assert!(
            *loss <= first + 100_000,
            "step {step}: loss {loss} jumped above the first step's {first} (×10⁻⁶)"
        );
    }
}

/// One stage, two replicas that average, the replica deadline 3 s, no audits. One replica's
/// trainer is killed with SIGKILL after it committed step 2: the other goes on alone,
/// leaving it out of its rounds after the deadline (bitmap of itself only). Restarted on the same data
/// directory, the killed replica replays its store and rejoins: for the steps the other
/// decided without it, it adopts that decision, so both replicas hold the same weights after
/// every step of the run, before, during and after the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_run_is_left_out_then_rejoins_bit_identical() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, url, c) = dev_node(dir.path()).await;
    let steps = 12u64;
    // No audits: a trainer dead for longer than the reveal window fails its audits with
    // `NoReveal` (and is slashed) by design; this test is about the round.
    let register = averaged_run(1, 2, steps, "0%");
    let keys = ["//Stay", "//Killed"];
    in_parallel(&url, validators_funding(&keys, register)).await;
    let args = deadline_trainers(&url, &keys, dir.path());
    let (mut procs, s, k) = kill_second_after_step_2(&c, &node, &args, keys, dir.path()).await;
    let committed = |replica: u16, step: u64| committed(&c, replica, step);
    // The other replica goes on alone, leaving it out after the deadline.
    let alone = wait_for(
        Duration::from_secs(120),
        "a round without the killed",
        || async {
            for step in 3..steps {
                let cm = committed(s, step).await?;
                if cm.included.as_deref() == Some(&[s][..]) {
                    return Some(step);
                }
            }
            None
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&procs, &node)));
    procs.push(Spawned::start("weft-trainer", &args[1], dir.path(), "restarted").unwrap());
    // Both replicas commit every step.
    wait_for(
        Duration::from_secs(300),
        "both replicas' last step",
        || async {
            (committed(s, steps - 1).await.is_some() && committed(k, steps - 1).await.is_some())
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&procs, &node)));
    let mut both = 0;
    for step in 0..steps {
        let (a, b) = (
            committed(s, step).await.unwrap(),
            committed(k, step).await.unwrap(),
        );
        assert_eq!(
            a.roots.weights_after,
            b.roots.weights_after,
            "step {step}: {:?} / {:?}\n{}",
            a.included,
            b.included,
            dump(&procs, &node)
        );
        assert_eq!(a.included, b.included, "step {step}: one decision");
        if a.included.as_ref().is_some_and(|i| i.len() == 2) {
            both += 1;
        }
    }
    assert_eq!(
        committed(s, alone).await.unwrap().included.as_deref(),
        Some(&[s][..])
    );
    // Before the kill and after the rejoin, rounds include both.
    assert!(both >= 4, "{both} rounds with both replicas");
    assert_eq!(
        committed(s, steps - 1)
            .await
            .unwrap()
            .included
            .map(|i| i.len()),
        Some(2),
        "the last round includes both"
    );
}

/// One stage, two replicas that average, the replica deadline 3 s, no audits. One replica's
/// trainer is killed with SIGKILL after it committed step 2 and never comes back; its
/// operator tells the chain (`weft run leave`). A spare trainer joins the run and takes the
/// slot at the next epoch boundary. The dead holder cannot hand the state over, so the
/// spare fetches it from the live replica (whose commitment of the same step ends with the
/// same roots), each chunk checked against the slot's committed roots; it catches up through
/// the rounds the live replica decided without it and then averages with it again. Its first
/// step is the one after the dead holder's last (the chain accepts it: the state is the
/// slot's), and both replicas commit the same weights and optimiser state at every step of
/// the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spare_takes_the_slot_of_a_killed_replica_with_the_state_of_a_live_one() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, url, c) = dev_node(dir.path()).await;
    let steps = 16u64;
    let register = averaged_run(1, 2, steps, "0%");
    let keys = ["//Live", "//Dead", "//Spare"];
    in_parallel(&url, validators_funding(&keys, register)).await;
    let args = deadline_trainers(&url, &keys, dir.path());
    let (live, dead, spare) = (account(keys[0]), account(keys[1]), account(keys[2]));
    // kill -9, for good; its operator tells the chain, and a spare joins.
    let (mut procs, s, k) =
        kill_second_after_step_2(&c, &node, &args, [keys[0], keys[1]], dir.path()).await;
    let replica_of = |who: AccountId| replica_of(&c, who);
    let committed = |replica: u16, step: u64| committed(&c, replica, step);
    // (Until the dead trainer's last commit, still in the pool with the nonce the chain
    // reports, is in a block, the node refuses another extrinsic with that nonce.)
    wait_for(Duration::from_secs(60), "the leave accepted", || async {
        let out = run_cli(&url, &["run", "leave", "0", "--from", keys[1]])
            .await
            .ok()?;
        out.success().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&procs, &node)));
    procs.push(Spawned::start("weft-trainer", &args[2], dir.path(), "spare").unwrap());
    wait_for(
        Duration::from_secs(120),
        "the spare in the slot",
        || async { (replica_of(spare).await == Some(k)).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&procs, &node)));
    wait_for(
        Duration::from_secs(300),
        "both replicas' last step",
        || async {
            (committed(s, steps - 1).await.is_some() && committed(k, steps - 1).await.is_some())
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&procs, &node)));

    // The slot's steps: the dead holder's up to some step, the spare's from the next one on.
    let mut holders = Vec::new();
    for step in 0..steps {
        let (a, b) = (
            committed(s, step).await.unwrap(),
            committed(k, step).await.unwrap(),
        );
        assert_eq!(a.trainer, live);
        holders.push(b.trainer);
        assert_eq!(
            (a.roots.weights_after, a.roots.optimizer_after),
            (b.roots.weights_after, b.roots.optimizer_after),
            "step {step}: {:?} / {:?}\n{}",
            a.included,
            b.included,
            dump(&procs, &node)
        );
        assert_eq!(a.included, b.included, "step {step}: one decision");
    }
    let taken = holders.iter().position(|h| *h == spare).unwrap();
    assert!(taken >= 3, "the dead holder committed steps 0..=2");
    assert!(
        holders[..taken].iter().all(|h| *h == dead) && holders[taken..].iter().all(|h| *h == spare),
        "{holders:?}"
    );
    // It fetched the state from the live replica, not the dead holder.
    let log = procs[1].log();
    assert!(
        log.contains(&format!(
            "fetched the state of step {} from {live} (replica {s})",
            taken - 1
        )),
        "{log}"
    );
    // The last rounds include both again.
    assert_eq!(
        committed(s, steps - 1)
            .await
            .unwrap()
            .included
            .map(|i| i.len()),
        Some(2),
        "the last round includes both"
    );
    let losses: Vec<(u64, u64, u64)> = {
        let mut v = Vec::new();
        for step in 0..steps {
            let (a, b) = (
                committed(s, step).await.unwrap(),
                committed(k, step).await.unwrap(),
            );
            v.push((step, a.loss.unwrap(), b.loss.unwrap()));
        }
        v
    };
    eprintln!("losses (step, live, slot) ×10⁻⁶: {losses:?}");
    // The loss curve goes on: at the step the spare took over, the slot's loss does not jump
    // above the curve (a fresh model would be back at step 0's), and from then on it stays
    // within the noise between the two replicas' micro-batches (same weights, other data).
    let (_, live_before, _) = losses[taken - 1];
    let (_, _, first_spare) = losses[taken];
    assert!(
        first_spare <= live_before + 100_000,
        "the spare's first loss {first_spare} jumped above {live_before} (×10⁻⁶): {losses:?}"
    );
    for &(step, a, b) in &losses[taken..] {
        assert!(a.abs_diff(b) <= 200_000, "step {step}: {a} / {b} (×10⁻⁶)");
    }
}

/// The selfish replica's first selfish step.
const SELFISH_FROM: u64 = 2;

/// One stage, two replicas that average, audit probability 0 %: no step is audited by
/// chance. The second trainer is `weft-adversary --cheat selfish-aggregate` from step
/// [`SELFISH_FROM`]: it sends and commits its honest update and the round it got, but
/// applies its own update alone instead of their trimmed mean. At that step the replicas'
/// `weights_after` roots differ, which the chain sees at commit (`ReplicasDiverged`), and it
/// forces the audit of both commitments of the step: the honest replica's — the trimmed mean
/// of the two committed updates and the step from it, recomputed bit for bit — passes, the
/// selfish one's fails, and it is slashed. Nothing before the divergence is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_applies_another_aggregate_is_caught_at_once_and_slashed() {
    let _serial = serial().await;
    let _ = weft_tests::bin("weft-adversary");
    let dir = tempfile::tempdir().unwrap();
    let (node, url, c) = dev_node(dir.path()).await;
    let register = averaged_run(1, 2, 8, "0%");
    let (fair, selfish) = ("//Fair", "//Selfish");
    in_parallel(&url, validators_funding(&[fair, selfish], register)).await;
    let mut procs = start_auditors(&url, dir.path());
    let deadline = ["--replica-deadline".to_string(), "3".to_string()];
    let mut args = vec!["train".to_string()];
    args.extend(trainer_args(&url, fair, 0, dir.path()));
    args.extend(deadline.clone());
    procs.push(Spawned::start("weft-trainer", &args, dir.path(), "fair").unwrap());
    let mut args = adversary_args(
        "selfish-aggregate",
        SELFISH_FROM,
        (&url, selfish, 0, dir.path()),
    );
    args.extend(deadline);
    procs.push(Spawned::start("weft-adversary", &args, dir.path(), "selfish").unwrap());
    let (fair, selfish) = (account(fair), account(selfish));

    let slash = slash_of(&c, selfish, Duration::from_secs(300), (&procs, &node)).await;
    assert_eq!(slash.kind, staking::OffenceKind::AuditFailed, "{slash:?}");
    // The honest replica's audit of the diverging step settles, and passes.
    let audits = wait_for(Duration::from_secs(300), "the honest audit", || async {
        let audits = c.audits(0, None).await.ok()?;
        audits
            .iter()
            .any(|a| a.trainer == fair && a.step == SELFISH_FROM && a.verdict.is_some())
            .then_some(audits)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&procs, &node)));
    let verdict = |who: AccountId, step: u64| {
        audits
            .iter()
            .find(|a| a.trainer == who && a.step == step)
            .and_then(|a| a.verdict)
    };
    assert_eq!(
        verdict(fair, SELFISH_FROM),
        Some(work::Verdict::Pass),
        "{audits:#?}"
    );
    assert_eq!(
        verdict(selfish, SELFISH_FROM),
        Some(work::Verdict::Fail),
        "{audits:#?}"
    );
    // Only the diverging steps were audited (the audit probability is zero).
    assert!(audits.iter().all(|a| a.step >= SELFISH_FROM), "{audits:#?}");
    // The same weights up to the selfish step, other weights at it.
    let roots = |step: u64| {
        let c = &c;
        async move {
            let mut v = Vec::new();
            for r in 0..2u16 {
                v.push(
                    c.commitment(0, 0, r, step, None)
                        .await
                        .unwrap()
                        .unwrap()
                        .roots
                        .weights_after,
                );
            }
            v
        }
    };
    for step in 0..SELFISH_FROM {
        let r = roots(step).await;
        assert_eq!(r[0], r[1], "step {step}");
    }
    let r = roots(SELFISH_FROM).await;
    assert_ne!(r[0], r[1], "the selfish step");
}
