//! A stage that sends its neighbour other tensors than it commits is slashed at commit, on the
//! evidence of its own seal, and its honest neighbour is not.
//!
//! Two stages, one replica, every step audited, two validators running `weft-trainer audit`.
//! One trainer is honest; the other is `weft-adversary --cheat forged-messages`: from step
//! [`FROM`] on it sends its neighbour what it committed + 0.1 (activations on stage 0, input
//! gradients on stage 1, whichever it gets), sealed, as the receiver requires. Its own
//! commitments stay honest, so its audits pass; but its neighbour commits the root of what it
//! received with the forger's seal over it, and when the second of the two commitments of
//! that step lands the chain finds the boundary roots differ and the seal by the forger: the
//! forger is reported (`PipelineContradiction`), chilled, removed from its slot and its
//! forged step voided, at exactly its first forged step. The honest trainer keeps its slot,
//! its commitment of that step stands, none of its audits fails and it is never reported.
//! Every commitment on chain carries the seals it must: stage 1's inputs seal by stage 0's
//! trainer, stage 0's output-gradient seal by stage 1's.

use super::processes::{dev_node, dump, forger_run};
use super::*;
use weft_tests::bin;

/// The first forged step.
const FROM: u64 = 3;
/// The trainers: the honest one and the forger.
const HONEST: &str = "//SealHonest";
const FORGER: &str = "//SealForger";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stage_that_sends_other_tensors_than_it_commits_is_slashed_and_its_neighbour_is_not() {
    let _serial = serial().await;
    let _ = bin("weft-adversary");
    let dir = tempfile::tempdir().unwrap();
    let (node, url, c) = dev_node(dir.path()).await;

    let procs = forger_run(&url, dir.path(), (HONEST, FORGER), FROM).await;
    let (honest, forger) = (account(HONEST), account(FORGER));

    // --- the forger is reported for its first forged step ----------------------------------
    let slash = wait_for(Duration::from_secs(300), "the forger's slash", || async {
        let slashes = c.slashes(None).await.ok()?;
        slashes.into_iter().find(|s| s.offender == forger)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(&procs, &node)));
    assert_eq!(slash.kind, staking::OffenceKind::PipelineContradiction);
    assert!(
        c.trainer(forger, None).await.unwrap().is_none(),
        "the forger is chilled"
    );
    let a = c.stage_assignments(0, None).await.unwrap();
    let slot_of = |who: AccountId| {
        a.stages
            .iter()
            .position(|s| s.replicas[0].trainer == Some(who))
    };
    assert_eq!(slot_of(forger), None, "removed from its slot: {a:?}");
    let k = slot_of(honest).expect("the honest trainer keeps its slot") as u16;
    let f = 1 - k;
    // Its forged step is void; the honest trainer's commitment of that step stands, and
    // carries the forger's seal over what it received.
    let forged = c.commitment(0, f, 0, FROM, None).await.unwrap().unwrap();
    assert_eq!(forged.trainer, forger);
    assert_eq!(forged.status, work::CommitStatus::Voided);
    let received = c.commitment(0, k, 0, FROM, None).await.unwrap().unwrap();
    assert_eq!(received.trainer, honest);
    assert_ne!(received.status, work::CommitStatus::Voided);
    let seal_of = |c: &weft_rpc_api::protocol::CommitmentJson| {
        if c.stage == 0 {
            (c.input_seal, c.output_grad_seal)
        } else {
            (c.output_grad_seal, c.input_seal)
        }
    };
    let (none, by) = seal_of(&received);
    assert!(
        none.is_none(),
        "a seal from a neighbour stage {k} does not have"
    );
    assert_eq!(by.map(|s| s.by), Some(forger));
    // Honest steps before: consistent boundaries, each sealed by the other trainer.
    for step in 0..FROM {
        for (stage, neighbour) in [(k, forger), (f, honest)] {
            let c = c
                .commitment(0, stage, 0, step, None)
                .await
                .unwrap()
                .unwrap();
            assert_ne!(c.status, work::CommitStatus::Voided, "step {step}");
            assert_eq!(seal_of(&c).1.map(|s| s.by), Some(neighbour), "step {step}");
        }
    }
    // The honest trainer is never reported and none of its audits fails.
    assert!(c
        .slashes(None)
        .await
        .unwrap()
        .iter()
        .all(|s| s.offender != honest));
    let audits = c.audits(0, None).await.unwrap();
    assert!(
        audits
            .iter()
            .filter(|a| a.trainer == honest)
            .all(|a| a.verdict != Some(work::Verdict::Fail)),
        "{audits:?}"
    );
}
