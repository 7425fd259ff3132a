//! Every kind of cheating trainer is caught and slashed on a real dev chain, and honest
//! trainers never are.
//!
//! Nine runs of a tiny 2-stage model, every step audited (`p = 1`). Runs 0–7 each pair one
//! `weft-adversary` (a different cheat each) with an honest `weft-trainer train`; run 8 has two
//! replicas, three honest trainers and a trainer that trains on the other replica's data
//! shard. Two validators run `weft-trainer audit`. Trainers and auditors share this machine's
//! compute class (CPU, one libtorch thread for the trainers), so every audit is bit-exact: the
//! `nudge` cheat, which steers its weights by half of what the default tolerance admits,
//! is caught like the others. (The `replay` cheat is not among them: the chain refuses its
//! commitment outright, since a replayed step does not start from the slot's last committed
//! state; the work pallet's `every_step_must_start_from_the_slots_last_committed_state`
//! covers it.) Each adversary cheats on every step from
//! `cheat_from` on, so its expected number of audits until caught is `1/p = 1`: the test
//! checks that its first failed audit is exactly its first cheated step, that its honest
//! steps before passed, that it is reported, chilled, removed from its stage, forfeits its
//! contribution units, and that the slash is deducted from its bond after the deferral. No
//! honest trainer and no auditor is ever reported, and every honest trainer passes audits.
//!
//! A tenth run, two honest trainers and no adversary, trains its [`CLEAN_STEPS`] steps: it
//! reaches `Finished` once its last step is settled, and both trainer processes exit with
//! status 0 after their reveal windows close.
//!
//! Needs `weft-adversary`: `cargo build --release --workspace --bins --features
//! weft-trainer/adversary` (what `scripts/test.sh` does).

use super::processes::{
    adversary_args, audited_tiny_run, audited_tiny_run_with, auditor_args, dump, trainer_args,
};
use super::*;
use weft_tests::{bin, wait_until, Spawned};

/// Blocks of 200 ms: audits, reveal windows and the 30-block slash deferral take seconds.
const BLOCK_TIME: &str = "200ms";
/// Steps of each run, at most 3 per 10-block epoch: the runs are still training (not
/// finished) when the adversaries are caught and their slots taken away.
const STEPS: u64 = 30;
/// Steps of the clean run: its schedule's `total_steps`, no `--max-steps` (within its first
/// epoch).
const CLEAN_STEPS: &str = "3";
/// Trainers of the clean run.
const CLEAN: [&str; 2] = ["//Clean0", "//Clean1"];
/// Longest wait for all the adversaries to be caught (22 trainer processes on 2 cores).
const CATCH_WAIT: Duration = Duration::from_secs(300);

/// `(cheat, first cheated step)`; `no-reveal` withholds from the start.
const CHEATS: [(&str, u64); 9] = [
    ("random-outputs", 1),
    ("scaled-gradients", 1),
    ("zero-gradients", 1),
    ("stale-weights", 1),
    ("tampered-weight", 1),
    ("nudge", 1),
    ("bad-reveal", 1),
    ("no-reveal", 0),
    ("copy-replica", 1),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_cheat_is_caught_and_slashed_and_honest_trainers_are_not() {
    let _serial = serial().await;
    // Fail early and clearly when the adversary binary was not built.
    let _ = bin("weft-adversary");
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("node"), &["--block-time", BLOCK_TIME])
        .await
        .unwrap();
    let url = node.ws_url();
    let c = node.cli_client().await.unwrap();

    // Who trains where.
    let cheaters: Vec<String> = (0..CHEATS.len()).map(|i| format!("//Cheat{i}")).collect();
    let mut honest: Vec<(String, usize)> = (0..CHEATS.len())
        .map(|i| (format!("//Honest{i}"), i))
        .collect();
    let copy_run = CHEATS.len() - 1;
    honest.push(("//HonestR1".into(), copy_run));
    honest.push(("//HonestR2".into(), copy_run));

    // --- funds, validators, runs ---------------------------------------------------------
    let mut alice = Vec::new();
    let clean_run = CHEATS.len();
    let clean: Vec<String> = CLEAN.iter().map(|s| s.to_string()).collect();
    for who in cheaters
        .iter()
        .chain(honest.iter().map(|(h, _)| h))
        .chain(clean.iter())
    {
        alice.push(cmd(&[
            "transfer", "--from", "//Alice", "--to", who, "--amount", "1000",
        ]));
    }
    alice.push(cmd(&[
        "stake", "bond", "--from", "//Alice", "--amount", "10000",
    ]));
    alice.push(cmd(&["stake", "validate", "--from", "//Alice"]));
    for run in 0..CHEATS.len() {
        let replicas = if run == copy_run { 2 } else { 1 };
        alice.push(audited_tiny_run(STEPS, replicas));
    }
    // No --max-steps: the run trains its schedule's total_steps.
    alice.push(audited_tiny_run_with(
        &format!(
            r#"{{"micro_batch_size":2,"micro_batches":2,"lr":0.01,"warmup_steps":1,"total_steps":{CLEAN_STEPS}}}"#
        ),
        &[],
    ));
    let bob = vec![
        cmd(&["stake", "bond", "--from", "//Bob", "--amount", "10000"]),
        cmd(&["stake", "validate", "--from", "//Bob"]),
    ];
    in_parallel(&url, vec![alice, bob]).await;
    assert_eq!(c.runs(None).await.unwrap().len(), CHEATS.len() + 1);

    // --- auditors and trainers -----------------------------------------------------------
    let mut procs = Vec::new();
    for v in ["//Alice", "//Bob"] {
        let name = format!("auditor-{}", v.trim_start_matches("//"));
        let args = auditor_args(&url, v, dir.path());
        procs.push(Spawned::start("weft-trainer", &args, dir.path(), &name).unwrap());
    }
    for (who, run) in &honest {
        let mut args = vec!["train".to_string()];
        args.extend(trainer_args(&url, who, *run, dir.path()));
        let name = who.trim_start_matches("//");
        procs.push(Spawned::start("weft-trainer", &args, dir.path(), name).unwrap());
    }
    let mut clean_procs = Vec::new();
    for who in &clean {
        let mut args = vec!["train".to_string()];
        args.extend(trainer_args(&url, who, clean_run, dir.path()));
        let name = who.trim_start_matches("//");
        clean_procs.push(Spawned::start("weft-trainer", &args, dir.path(), name).unwrap());
    }
    for (run, (cheat, from)) in CHEATS.iter().enumerate() {
        let who = &cheaters[run];
        let args = adversary_args(cheat, *from, (&url, who, run, dir.path()));
        procs.push(Spawned::start("weft-adversary", &args, dir.path(), cheat).unwrap());
    }

    // --- every adversary is caught -------------------------------------------------------
    let cheater_accounts: Vec<AccountId> = cheaters.iter().map(|s| account(s)).collect();
    // The first block at which each adversary's failed audit is seen (its slash is pending
    // there; it applies 30 blocks later).
    let seen: std::sync::Mutex<BTreeMap<usize, weft_primitives::Hash>> = Default::default();
    let caught = wait_for(CATCH_WAIT, "every adversary to fail an audit", || async {
        let head = c.best_header().await.ok()?.hash();
        for (run, who) in cheater_accounts.iter().enumerate() {
            if seen.lock().unwrap().contains_key(&run) {
                continue;
            }
            let audits = c.audits(run as u32, Some(head)).await.ok()?;
            let failed = audits
                .iter()
                .any(|a| a.trainer == *who && a.verdict == Some(work::Verdict::Fail));
            if failed {
                seen.lock().unwrap().insert(run, head);
            }
        }
        (seen.lock().unwrap().len() == cheater_accounts.len()).then_some(head)
    })
    .await;
    let seen = seen.into_inner().unwrap();
    let caught = match caught {
        Ok(h) => h,
        Err(e) => panic!("{e}\n{}", dump(&procs, &node)),
    };

    // The first failed audit is the first cheated step; honest steps before it passed.
    let honest_accounts: Vec<AccountId> = honest.iter().map(|(h, _)| account(h)).collect();
    let mut slashes_then = Vec::new();
    for at in seen.values() {
        slashes_then.extend(c.slashes(Some(*at)).await.unwrap());
    }
    for (run, ((cheat, from), who)) in CHEATS.iter().zip(&cheater_accounts).enumerate() {
        let audits = c.audits(run as u32, Some(caught)).await.unwrap();
        let mine: Vec<_> = audits.iter().filter(|a| a.trainer == *who).collect();
        let first_fail = mine
            .iter()
            .filter(|a| a.verdict == Some(work::Verdict::Fail))
            .map(|a| a.step)
            .min();
        assert_eq!(first_fail, Some(*from), "{cheat}: {mine:?}");
        for a in mine.iter().filter(|a| a.step < *from) {
            assert_ne!(
                a.verdict,
                Some(work::Verdict::Fail),
                "{cheat}: honest step failed"
            );
        }
        let fail = mine
            .iter()
            .find(|a| a.step == *from && a.verdict == Some(work::Verdict::Fail))
            .unwrap();
        let reason = fail.attestations.iter().find_map(|x| x.reason);
        let expected = if *cheat == "no-reveal" {
            work::FailReason::NoReveal
        } else {
            work::FailReason::Mismatch
        };
        assert_eq!(reason, Some(expected), "{cheat}");
        assert!(fail.certificate.is_some(), "{cheat}: no BLS certificate");
        // Reported (slash pending), chilled, removed from its stage, contribution forfeited.
        assert!(
            slashes_then
                .iter()
                .any(|s| s.offender == *who && s.kind == staking::OffenceKind::AuditFailed),
            "{cheat}: no slash reported"
        );
        assert!(
            c.trainer(*who, Some(caught)).await.unwrap().is_none(),
            "{cheat}: not chilled"
        );
        let a = c.stage_assignments(run as u32, Some(caught)).await.unwrap();
        assert!(
            a.stages
                .iter()
                .all(|s| s.replicas.iter().all(|r| r.trainer != Some(*who))),
            "{cheat}: still holds a slot at {caught:?}: {a:?}\n{}",
            dump(&procs, &node)
        );
        let o = c.ownership(run as u32, Some(caught)).await.unwrap();
        assert!(
            o.owners.iter().all(|x| x.account != *who),
            "{cheat}: still owns units: {o:?}"
        );
    }

    // --- the slashes are deducted after the deferral ---------------------------------------
    let apply_by = slashes_then.iter().map(|s| s.apply_at).max().unwrap();
    wait_until(Duration::from_secs(60), "the slashes to apply", || async {
        c.best_header().await.is_ok_and(|h| h.number > apply_by)
    })
    .await
    .unwrap();
    for (cheat, who) in CHEATS.iter().map(|(n, _)| n).zip(&cheater_accounts) {
        let amount = slashes_then
            .iter()
            .filter(|s| s.offender == *who)
            .map(|s| bal(&s.amount))
            .max()
            .unwrap();
        let at = seen[&cheater_accounts.iter().position(|a| a == who).unwrap()];
        let before = bal(&c
            .staking_ledger(*who, Some(at))
            .await
            .unwrap()
            .unwrap()
            .total);
        let after = c
            .staking_ledger(*who, None)
            .await
            .unwrap()
            .map_or(0, |l| bal(&l.total));
        assert_eq!(before - after, amount, "{cheat}: bond {before} → {after}");
    }

    // --- honest trainers and auditors are never slashed --------------------------------
    let head = c.best_header().await.unwrap().hash();
    let mut all_slashes = slashes_then.clone();
    all_slashes.extend(c.slashes(Some(head)).await.unwrap());
    for s in &all_slashes {
        assert!(
            cheater_accounts.contains(&s.offender),
            "an honest participant was slashed: {s:?}\n{}",
            dump(&procs, &node)
        );
    }
    for (who, (name, run)) in honest_accounts.iter().zip(&honest) {
        let audits = c.audits(*run as u32, Some(head)).await.unwrap();
        let mine: Vec<_> = audits.iter().filter(|a| a.trainer == *who).collect();
        assert!(
            mine.iter().all(|a| a.verdict != Some(work::Verdict::Fail)),
            "{name} failed an audit: {mine:?}\n{}",
            dump(&procs, &node)
        );
        assert!(
            mine.iter().any(|a| a.verdict == Some(work::Verdict::Pass)),
            "{name} passed no audit: {mine:?}\n{}",
            dump(&procs, &node)
        );
        assert!(
            c.trainer(*who, Some(head)).await.unwrap().is_some(),
            "{name}"
        );
    }

    // --- every pass was bit-exact, under the trainers' own compute class -------------------
    // (procs[0] and procs[1] are the auditors.)
    for auditor in &procs[..2] {
        let log = auditor.log();
        let verdicts: Vec<&str> = log.lines().filter(|l| l.contains("→ Pass")).collect();
        assert!(!verdicts.is_empty(), "{}", auditor.log_tail());
        for v in verdicts {
            assert!(v.contains("bit-exact under cpu/"), "{}: {v}", auditor.name);
        }
    }

    // --- the clean run finished, and its trainers exited cleanly ---------------------------
    let finished = wait_for(
        Duration::from_secs(120),
        "the clean run to finish",
        || async {
            let r = c.run(clean_run as u32, None).await.ok()?;
            (r.status == runs::RunStatus::Finished).then_some(r)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&clean_procs, &node)));
    assert_eq!((finished.max_steps, finished.final_steps), (0, 3));
    // Every step audited (p = 1); the last step's two audits passed.
    let audits = c.audits(clean_run as u32, None).await.unwrap();
    let last: Vec<_> = audits.iter().filter(|a| a.step == 2).collect();
    assert!(
        last.len() == 2 && last.iter().all(|a| a.verdict == Some(work::Verdict::Pass)),
        "{audits:?}"
    );
    for p in &mut clean_procs {
        let status = wait_for(Duration::from_secs(120), "a clean trainer to exit", || {
            let s = p.try_exit_status().ok().flatten();
            async move { s }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log_tail()));
        assert!(
            status.success(),
            "{} exited with {status}\n{}",
            p.name,
            p.log_tail()
        );
    }
}
