//! The dashboard against a training run (issue 14), in a real headless Chromium: what a user
//! sees while a run trains, checked against the chain.
//!
//! Two stages, one replica, every step audited, two validators auditing; one honest trainer,
//! one `weft-adversary --cheat forged-messages` from step [`FROM`] (see `seals.rs`), which is
//! slashed at its first forged step. After it is removed the run cannot go on (its stage is
//! vacant), so what the chain holds stops changing and the pages must converge to it:
//!
//! * the chain page shows the slash (pending, then applied with what it burnt) without a
//!   reload, and every active validator's finality votes;
//! * the run page's loss chart has one point per loss the last stage committed, at the
//!   committed values; its audit counts are the chain's; its stage map shows the stage cap
//!   and the honest trainer, not the removed forger; its throughput is positive; it is not
//!   halted but takes no work (a stage is vacant), and says so;
//! * the forger's account page lists its commitments (one voided) and no trainer role;
//! * the run page's draw time from navigation is reported.
//!
//! Screenshots go to `CARGO_TARGET_TMPDIR/dashboard/` (`chain-slash.png`, `run.png`,
//! `account-forger.png`).

use super::processes::{dev_node, dump, forger_run, slash_of};
use super::*;
use weft_rpc_api::protocol::StepRecordJson;
use weft_tests::bin;
use weft_tests::browser::Browser;

/// The first forged step.
const FROM: u64 = 8;
const HONEST: &str = "//DashHonest";
const FORGER: &str = "//DashForger";
/// Longest wait for training to reach a state, or for the page to show it.
const LONG: Duration = Duration::from_secs(300);

/// The losses of the run's last stage as the chain holds them, step by step through
/// `weft_commitment` (not the loss-curve method the page uses): `(step, loss × 10⁶)`.
async fn committed_losses(c: &Client, last: u16) -> Vec<(u64, u64)> {
    let next =
        c.stage_assignments(0, None).await.unwrap().stages[last as usize].replicas[0].next_step;
    let mut out = Vec::new();
    for step in 0..next {
        if let Some(x) = c.commitment(0, last, 0, step, None).await.unwrap() {
            out.extend(x.loss.map(|l| (step, l)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_a_training_run_its_losses_audits_and_the_slash_of_a_cheat() {
    let _serial = serial().await;
    let _ = bin("weft-adversary");
    let dir = tempfile::tempdir().unwrap();
    let (node, url, c) = dev_node(dir.path()).await;
    let procs = forger_run(&url, dir.path(), (HONEST, FORGER), FROM).await;
    let (honest, forger) = (account(HONEST), account(FORGER));
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let mut b = Browser::open(&format!("{}/#/chain", node.http_url()), (1280, 1100))
        .await
        .unwrap();
    let fail = |e: anyhow::Error| -> ! { panic!("{e}\n{}", dump(&procs, &node)) };

    // --- the chain page: the slash appears, live ------------------------------------------
    let slash = slash_of(&c, forger, LONG, (&procs, &node)).await;
    let row = format!(
        "[...document.querySelectorAll('#slashes tbody tr')].find((r) => r.cells[0].textContent === '{}' && r.querySelector('a[href=\"#/account/{forger}\"]'))?.textContent ?? null",
        slash.id
    );
    let shown = b
        .until(&row, "the forger's slash on the chain page", LONG, |v| {
            v.as_str().map(str::to_string)
        })
        .await
        .unwrap_or_else(|e| fail(e));
    assert!(shown.contains("pipelineContradiction"), "{shown}");
    // It applies after the deferral; the page then says what it burnt.
    let applied = wait_for(LONG, "the slash to apply", || async {
        let all = c.applied_slashes(None).await.ok()?;
        all.into_iter().find(|a| a.id == slash.id)
    })
    .await
    .unwrap_or_else(|e| fail(e));
    assert_eq!(applied.offender, forger);
    assert_eq!(applied.amount, slash.amount);
    assert!(applied.burnt.parse::<u128>().unwrap() > 0, "{applied:?}");
    let says = format!("applied at #{}", applied.applied_at);
    b.until(&row, "the applied slash on the chain page", LONG, |v| {
        v.as_str().filter(|t| t.contains(&says)).map(|_| ())
    })
    .await
    .unwrap_or_else(|e| fail(e));
    // Every active validator's votes over the last finalized blocks: the dev author signs
    // each one, so its row shows them all.
    let votes = b
        .until(
            "[...document.querySelectorAll('#validators .votes')].map((e) => e.textContent)",
            "the validators' votes",
            LONG,
            |v| {
                let marks: Vec<String> = serde_json::from_value(v.clone()).ok()?;
                (!marks.is_empty()).then_some(marks)
            },
        )
        .await
        .unwrap_or_else(|e| fail(e));
    let active = c.validators(None).await.unwrap().active;
    assert_eq!(votes.len(), active.len(), "{votes:?}");
    b.screenshot(&shots.join("chain-slash.png")).await.unwrap();

    // --- the run page: a point per committed loss, the chain's audits ---------------------
    let run = c.run(0, None).await.unwrap();
    let last = run.stages - 1;
    b.go("#/run/0").await.unwrap();
    let points_on_screen = "[...document.querySelectorAll('#loss circle.point')].map((p) => [Number(p.dataset.x), Number(p.dataset.y)])";
    let deadline = tokio::time::Instant::now() + LONG;
    let expected = loop {
        let chain = committed_losses(&c, last).await;
        let points = b.eval(points_on_screen).await.unwrap_or_default();
        let points: Vec<(u64, f64)> = serde_json::from_value(points).unwrap_or_default();
        let same = chain.len() > FROM as usize
            && points.len() == chain.len()
            && chain
                .iter()
                .zip(&points)
                .all(|((s, l), (x, y))| s == x && (*l as f64 / 1e6 - y).abs() < 1e-9);
        if same {
            break chain;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the loss chart shows {points:?}, the chain holds {chain:?}\n{}",
            dump(&procs, &node)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The page's own method agrees with the steps read one by one.
    let curve = c.loss_curve(0, None, None).await.unwrap();
    let listed: Vec<(u64, u64)> = curve
        .points
        .iter()
        .map(|p: &StepRecordJson| (p.step, p.loss.unwrap()))
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(curve.stage, last);
    assert_eq!(
        curve.tokens_per_step,
        u64::from(run.hyper_params.micro_batch_size)
            * u64::from(run.hyper_params.micro_batches)
            * u64::from(run.model_config.seq_len)
    );
    let audits = c.audits(0, None).await.unwrap();
    let count = |v| audits.iter().filter(|a| a.verdict == v).count();
    let (pass, failed) = (
        count(Some(work::Verdict::Pass)),
        count(Some(work::Verdict::Fail)),
    );
    let counts = format!(
        "{pass} passed, {failed} failed, {} open or inconclusive",
        audits.len() - pass - failed
    );
    b.until(
        "document.getElementById('audit-counts')?.textContent ?? null",
        "the audit counts",
        LONG,
        |v| v.as_str().filter(|t| *t == counts).map(|_| ()),
    )
    .await
    .unwrap_or_else(|e| fail(e));
    // The stage map: the cap, the honest trainer in its slot, the forger gone.
    let cap = b
        .eval("document.getElementById('stage-cap').textContent")
        .await
        .unwrap();
    assert!(
        cap.as_str().unwrap().contains(&format!(
            "at most {} of the {} stages",
            run.params.max_stages_per_account, run.stages
        )),
        "{cap}"
    );
    let in_map = |who: AccountId| {
        format!("document.querySelector('#stages a[href=\"#/account/{who}\"]') !== null")
    };
    assert_eq!(b.eval(&in_map(honest)).await.unwrap(), true);
    assert_eq!(b.eval(&in_map(forger)).await.unwrap(), false);
    let rate = b
        .eval("parseFloat(document.getElementById('tokens-per-second').textContent)")
        .await
        .unwrap();
    assert!(rate.as_f64().is_some_and(|r| r > 0.0), "{rate}");
    assert_eq!(
        b.eval("document.getElementById('halted').textContent")
            .await
            .unwrap(),
        "not halted"
    );
    // With the forger's stage vacant the run takes no work, and says why.
    assert!(c.run(0, None).await.unwrap().paused);
    assert_eq!(
        b.eval("document.getElementById('accepting').textContent")
            .await
            .unwrap(),
        "no: a stage has no trainer"
    );
    b.screenshot(&shots.join("run.png")).await.unwrap();
    // Drawn from a fresh load: how long the run page takes with its data.
    let ms = b
        .load_ms(&format!("{}/#/run/0", node.http_url()), LONG)
        .await
        .unwrap_or_else(|e| fail(e));
    eprintln!(
        "the run page drew {} losses and {} audits {ms} ms after navigation",
        expected.len(),
        audits.len()
    );

    // --- the forger's account: its commitments, one voided; no trainer role any more -------
    let mine = c.commitments_of(forger, None).await.unwrap();
    assert!(mine
        .iter()
        .any(|x| x.status == work::CommitStatus::Voided && x.step == FROM));
    b.go(&format!("#/account/{forger}")).await.unwrap();
    let rows = b
        .until(
            "document.getElementById('commitment-counts') ? document.querySelectorAll('#commitments tbody tr').length : null",
            "the forger's commitments",
            LONG,
            |v| v.as_u64(),
        )
        .await
        .unwrap_or_else(|e| fail(e));
    assert_eq!(rows as usize, mine.len().min(50));
    let roles = b
        .eval("document.getElementById('roles')?.textContent ?? null")
        .await
        .unwrap();
    let ledger = c.staking_ledger(forger, None).await.unwrap().unwrap();
    assert!(!ledger.trainer, "chilled");
    assert!(!roles.as_str().unwrap().contains("trainer"), "{roles}");
    let voided = b
        .eval("[...document.querySelectorAll('#commitments tbody tr')].some((r) => r.textContent.includes('voided'))")
        .await
        .unwrap();
    assert_eq!(voided, true);
    b.screenshot(&shots.join("account-forger.png"))
        .await
        .unwrap();
    eprintln!("screenshots in {}", shots.display());
}
