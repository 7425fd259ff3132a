//! The protocol end to end on a real dev node, driven only through the `weft` CLI and checked
//! only through the `weft_*` JSON-RPC methods:
//!
//! 1. two validators (//Alice, //Bob) bond and register BLS keys; five trainers bond and
//!    declare peer ids and addresses; a designer registers a 4-stage run in which every
//!    step is audited; the trainers join;
//! 2. an epoch boundary elects the validators and assigns four trainers (one per stage) and
//!    an auditor per stage; an unassigned trainer cannot commit;
//! 3. every assigned trainer commits step 0; each audit opens; the auditors pass three and
//!    fail the step of stage 2: its trainer is reported, chilled and removed at once, and
//!    slashed after the deferral (its bond shrinks by exactly the reported amount);
//! 4. the next epoch boundary puts the spare trainer into stage 2 and mints credentials to
//!    the three honest owners, whose shares sum to exactly one;
//! 5. a credential is transferred and redeemed (into the re-issue pool);
//! 6. a halt proposal passes with one third of the stake: a further commit fails with
//!    `RunNotTraining`; a resume needs both validators (two thirds) and re-enables work;
//! 7. an emergency halt by the whole validator set halts the run at once.
//!
//! Needs the binaries: `cargo build --release -p weft-node -p weft-cli -p weft-tests --bins`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use jsonrpsee::core::client::ClientT;
use jsonrpsee::rpc_params;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use weft_cli::Client;
use weft_primitives::units::UNIT;
use weft_primitives::{AccountId, Balance, Keypair};
use weft_rpc_api::protocol::{peer_id_to_string, AuditStatus, StageAssignmentsJson};
use weft_runtime::{governance, runs, staking, work};
use weft_tests::{run_cli, serial, wait_for, Node};

/// Longest wait for one condition (epochs are 10 blocks of 100 ms).
const WAIT: Duration = Duration::from_secs(30);
const VALIDATORS: [&str; 2] = ["//Alice", "//Bob"];
const TRAINERS: [&str; 5] = ["//Charlie", "//Dave", "//Eve", "//Ferdie", "//Trainer5"];
/// The scenario's model and hyper-parameters, as a designer writes them.
const MODEL: &str = r#"{"d_model": 64, "n_layers": 8, "n_heads": 4, "seq_len": 64}"#;
const HYPER: &str = r#"{"micro_batch_size": 4, "lr": 0.0003, "total_steps": 1000}"#;

fn account(suri: &str) -> AccountId {
    Keypair::from_suri(suri).unwrap().account_id()
}

fn bal(s: &str) -> Balance {
    s.parse().unwrap()
}

/// An ed25519-shaped libp2p peer id for trainer `i` (base58).
fn peer_id(i: usize) -> String {
    let bytes = [
        &[0x00u8, 0x24, 0x08, 0x01, 0x12, 0x20][..],
        &[i as u8 + 1; 32][..],
    ]
    .concat();
    peer_id_to_string(&bytes)
}

/// `weft --json <args>`, which must succeed; its JSON output.
async fn cli_json(url: &str, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = run_cli(url, &full).await.unwrap();
    assert!(out.success(), "weft {args:?} failed:\n{out}");
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("weft {args:?} printed no JSON ({e}):\n{out}"))
}

/// `weft <args>` (human output), which must succeed; its stdout.
async fn cli_text(url: &str, args: &[&str]) -> String {
    let out = run_cli(url, args).await.unwrap();
    assert!(out.success(), "weft {args:?} failed:\n{out}");
    out.stdout
}

/// `weft <args>`, which must fail with `needle` in its error output.
async fn cli_fails(url: &str, args: &[&str], needle: &str) {
    let out = run_cli(url, args).await.unwrap();
    assert!(!out.success(), "weft {args:?} should have failed:\n{out}");
    assert!(
        out.stderr.contains(needle),
        "weft {args:?}: expected {needle:?}:\n{out}"
    );
}

/// Runs one command list per signer, the lists in parallel, each list in order (one signer's
/// transactions must not race for its nonce). Returns the JSON outputs per list.
async fn in_parallel(url: &str, scripts: Vec<Vec<Vec<String>>>) -> Vec<Vec<Value>> {
    let handles: Vec<_> = scripts
        .into_iter()
        .map(|script| {
            let url = url.to_string();
            tokio::spawn(async move {
                let mut outs = Vec::new();
                for cmd in script {
                    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
                    outs.push(cli_json(&url, &args).await);
                }
                outs
            })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    results
}

fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The slot holder of each stage (replica 0).
fn holders(a: &StageAssignmentsJson) -> Vec<Option<AccountId>> {
    a.stages.iter().map(|s| s.replicas[0].trainer).collect()
}

async fn wait_status(c: &Client, node: &Node, status: runs::RunStatus) {
    let ok = wait_for(WAIT, &format!("run 0 to be {status:?}"), || async {
        let r = c.run(0, None).await.ok()?;
        (r.status == status).then_some(())
    })
    .await;
    if let Err(e) = ok {
        panic!("{e}\nnode log:\n{}", node.log_tail());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn protocol_scenario_through_the_cli() {
    let _serial = serial().await;
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--block-time", "100ms"])
        .await
        .unwrap();
    let url = node.ws_url();
    let c = node.cli_client().await.unwrap();
    let names: BTreeMap<AccountId, &str> = VALIDATORS
        .iter()
        .chain(TRAINERS.iter())
        .chain(["//Designer", "//Holder"].iter())
        .map(|s| (account(s), *s))
        .collect();
    let suri = |a: &AccountId| *names.get(a).expect("a participant");

    // Timing parameters as the dev chain has them.
    let epoch = c.epoch(None).await.unwrap();
    assert_eq!(
        (epoch.epoch_length, epoch.slash_defer, epoch.validators),
        (10, 30, 0)
    );
    // Unknown runs are a clear error, over RPC and in the CLI.
    match c.run(99, None).await {
        Err(weft_cli::ClientError::Node { code, message, .. }) => {
            assert_eq!(code, weft_rpc_api::UNKNOWN_RUN);
            assert!(message.contains("unknown run 99"), "{message}");
        }
        other => panic!("expected error 4004, got {other:?}"),
    }
    cli_fails(&url, &["run", "show", "99"], "unknown run 99").await;
    // Bad params are the JSON-RPC invalid-params error.
    let raw = node.client().await.unwrap();
    match raw
        .request::<Value, _>("weft_run", rpc_params!["zero"])
        .await
    {
        Err(jsonrpsee::core::ClientError::Call(obj)) => assert_eq!(obj.code(), -32602),
        other => panic!("expected error -32602, got {other:?}"),
    }

    // --- 1. funding, bonds, roles, the run, joins ----------------------------------------
    for who in ["//Trainer5", "//Designer", "//Holder"] {
        cli_json(
            &url,
            &[
                "transfer", "--from", "//Alice", "--to", who, "--amount", "10000",
            ],
        )
        .await;
    }
    let mut scripts = Vec::new();
    for v in VALIDATORS {
        scripts.push(vec![
            cmd(&["stake", "bond", "--from", v, "--amount", "10000"]),
            cmd(&["stake", "validate", "--from", v]),
        ]);
    }
    let trainer_bond = |i: usize| 300 - 20 * i as u128;
    for (i, t) in TRAINERS.iter().enumerate() {
        let amount = trainer_bond(i).to_string();
        let port = format!("/ip4/127.0.0.1/tcp/{}", 41_000 + i);
        scripts.push(vec![
            cmd(&["stake", "bond", "--from", t, "--amount", &amount]),
            cmd(&[
                "stake",
                "train",
                "--from",
                t,
                "--peer-id",
                &peer_id(i),
                "--addr",
                &port,
                "--capacity",
                "1",
            ]),
        ]);
    }
    scripts.push(vec![cmd(&[
        "run",
        "register",
        "--from",
        "//Designer",
        "--config",
        MODEL,
        "--stages",
        "4",
        "--dataset-hash",
        &format!("0x{}", "07".repeat(32)),
        "--hyper-params",
        HYPER,
        "--audit-probability",
        "100%",
        "--auditors-per-stage",
        "1",
        "--max-stages-per-auditor",
        "2",
        "--credentials-per-epoch",
        "1000",
        "--reveal-window",
        "50",
        "--attest-window",
        "100",
    ])]);
    let outs = in_parallel(&url, scripts).await;
    assert_eq!(outs[7][0]["runId"], 0, "{}", outs[7][0]);
    // The BLS key registered is the one `weft key bls` derives from the same SURI.
    let key = cli_json(&url, &["key", "bls", "//Alice"]).await;
    let ledger = c
        .staking_ledger(account("//Alice"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::to_value(ledger.bls_key.unwrap()).unwrap(),
        key["blsKey"]
    );
    assert_eq!(bal(&ledger.active), 10_000 * UNIT);
    assert!(ledger.validator && !ledger.trainer);
    let t = c
        .trainer(account("//Charlie"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((t.peer_id.as_str(), t.capacity), (peer_id(0).as_str(), 1));
    assert_eq!(t.addrs, vec!["/ip4/127.0.0.1/tcp/41000".to_string()]);
    let run = c.run(0, None).await.unwrap();
    assert_eq!((run.stages, run.replicas), (4, 1));
    assert_eq!(run.params.audit_probability.parts(), 1_000_000_000);
    // The JSON became the typed, fixed-point values (weft_pallet_runs::spec).
    let m = &run.model_config;
    assert_eq!(
        (
            m.vocab_size,
            m.d_model,
            m.n_layers,
            m.n_heads,
            m.seq_len,
            m.mlp_ratio
        ),
        (256, 64, 8, 4, 64, 4)
    );
    let h = &run.hyper_params;
    assert_eq!(
        (h.lr_pico, h.eps_atto, h.beta1.parts(), h.total_steps),
        (300_000_000, 10_000_000_000, 900_000_000, 1000)
    );
    assert_eq!((run.max_steps, run.final_steps), (0, 1000));
    assert_eq!(run.config_hash, runs::RunInfo::model_hash(m));

    in_parallel(
        &url,
        TRAINERS
            .iter()
            .map(|t| vec![cmd(&["run", "join", "0", "--from", t])])
            .collect(),
    )
    .await;
    assert_eq!(c.trainers(None).await.unwrap().len(), 5);

    // --- 2. the epoch boundary assigns trainers and auditors ---------------------------
    let assigned = wait_for(WAIT, "all four stages assigned and audited", || async {
        let a = c.stage_assignments(0, None).await.ok()?;
        let full = a
            .stages
            .iter()
            .all(|s| s.replicas[0].trainer.is_some() && s.auditors.len() == 1);
        (full && a.status == runs::RunStatus::Training && !a.paused).then_some(a)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nnode log:\n{}", node.log_tail()));
    let validators = c.validators(None).await.unwrap();
    assert_eq!(validators.active.len(), 2);
    let stage_holders: Vec<AccountId> =
        holders(&assigned).into_iter().map(Option::unwrap).collect();
    let spare = TRAINERS
        .iter()
        .map(|t| account(t))
        .find(|a| !stage_holders.contains(a))
        .expect("one trainer is left over");
    for (st, s) in assigned.stages.iter().enumerate() {
        let slot = &s.replicas[0];
        let i = TRAINERS
            .iter()
            .position(|t| Some(account(t)) == slot.trainer)
            .unwrap();
        assert_eq!(
            slot.peer_id.as_deref(),
            Some(peer_id(i).as_str()),
            "stage {st}"
        );
        assert_eq!(slot.next_step, 0);
        assert!(validators.active.iter().any(|v| v.account == s.auditors[0]));
    }
    // No validator audits the whole model; no trainer holds two stages.
    for v in &validators.active {
        let n = assigned
            .stages
            .iter()
            .filter(|s| s.auditors.contains(&v.account))
            .count();
        assert!(n <= 2, "a validator audits {n} stages");
    }
    let text = cli_text(&url, &["run", "assignments", "0"]).await;
    assert!(text.contains("stage 3 replica 0"), "{text}");
    // An unassigned account cannot commit.
    cli_fails(
        &url,
        &[
            "work",
            "commit",
            "--from",
            suri(&spare),
            "--run",
            "0",
            "--stage",
            "0",
            "--replica",
            "0",
            "--roots-from",
            "x",
        ],
        "NotAssigned",
    )
    .await;

    // --- 3. commitments, audits, a failed audit ----------------------------------------
    let scripts = stage_holders
        .iter()
        .enumerate()
        .map(|(st, who)| {
            let mut c = cmd(&[
                "work",
                "commit",
                "--from",
                suri(who),
                "--run",
                "0",
                "--roots-from",
                "honest",
            ]);
            if st == 3 {
                c.extend(cmd(&["--loss", "3.0"]));
            }
            vec![c]
        })
        .collect();
    let outs = in_parallel(&url, scripts).await;
    for o in &outs {
        assert!(o[0]["commitmentId"].is_u64(), "{}", o[0]);
    }
    let commitment = c.commitment(0, 3, 0, 0, None).await.unwrap().unwrap();
    assert_eq!(commitment.loss, Some(3_000_000));
    assert_eq!(commitment.trainer, stage_holders[3]);
    let audits = wait_for(WAIT, "four audits opened", || async {
        let a = c.audits(0, None).await.ok()?;
        (a.len() == 4).then_some(a)
    })
    .await
    .unwrap();
    let offender = stage_holders[2];
    let offender_bond = c.staking_ledger(offender, None).await.unwrap().unwrap();
    let mut per_auditor: BTreeMap<AccountId, Vec<Vec<String>>> = BTreeMap::new();
    for a in &audits {
        assert_eq!(a.status, AuditStatus::Open);
        assert_eq!(a.auditors.len(), 1);
        let auditor = a.auditors[0].account;
        let mut attest = cmd(&[
            "work",
            "attest",
            "--from",
            suri(&auditor),
            "--audit",
            &a.id.to_string(),
        ]);
        if a.trainer == offender {
            attest.extend(cmd(&["--verdict", "fail", "--reason", "mismatch"]));
        } else {
            attest.extend(cmd(&["--verdict", "pass"]));
        }
        per_auditor.entry(auditor).or_default().push(attest);
    }
    let outs = in_parallel(&url, per_auditor.into_values().collect()).await;
    for o in outs.iter().flatten() {
        assert!(
            o["settled"].is_string(),
            "one auditor settles each audit: {o}"
        );
    }
    let audits = c.audits(0, None).await.unwrap();
    for a in &audits {
        assert_eq!(a.status, AuditStatus::Settled);
        let expect = if a.trainer == offender {
            work::Verdict::Fail
        } else {
            work::Verdict::Pass
        };
        assert_eq!(a.verdict, Some(expect));
        assert!(a.certificate.is_some());
        let one = c.audit(a.id, None).await.unwrap();
        assert_eq!(&one, a);
    }
    // Reported, chilled and removed at once; its slash is deferred.
    let slashes = c.slashes(None).await.unwrap();
    assert_eq!(slashes.len(), 1, "{slashes:?}");
    let slash = &slashes[0];
    assert_eq!(slash.offender, offender);
    assert_eq!(slash.kind, staking::OffenceKind::AuditFailed);
    assert!(slash.reporter.is_some());
    assert!(
        slash.apply_at > c.epoch(None).await.unwrap().block_number,
        "deferred"
    );
    assert_eq!(
        bal(&slash.amount),
        bal(&offender_bond.total) / 5,
        "20% of the bond"
    );
    assert!(
        c.trainer(offender, None).await.unwrap().is_none(),
        "chilled"
    );
    let now = c.stage_assignments(0, None).await.unwrap();
    assert!(
        !holders(&now).contains(&Some(offender)),
        "removed from its stage"
    );
    assert!(!now.candidates.contains(&offender));
    assert_eq!(
        c.staking_ledger(offender, None)
            .await
            .unwrap()
            .unwrap()
            .pending_slashes,
        1
    );
    assert!(cli_text(&url, &["gov", "slashes"])
        .await
        .contains(&offender.to_string()));
    let voided = c.commitment(0, 2, 0, 0, None).await.unwrap().unwrap();
    assert_eq!(voided.status, work::CommitStatus::Voided);

    // --- 4. the spare fills stage 2; credentials are minted to the honest owners -------
    wait_for(
        WAIT,
        "the spare trainer in stage 2 and the run unpaused",
        || async {
            let a = c.stage_assignments(0, None).await.ok()?;
            (a.stages[2].replicas[0].trainer == Some(spare) && !a.paused).then_some(())
        },
    )
    .await
    .unwrap();
    let at = wait_for(WAIT, "credentials minted", || async {
        let head = c.best_header().await.ok()?.hash();
        let o = c.ownership(0, Some(head)).await.ok()?;
        (bal(&o.credential_issuance) > 0).then_some(head)
    })
    .await
    .unwrap();
    let own = c.ownership(0, Some(at)).await.unwrap();
    let honest: Vec<AccountId> = stage_holders
        .iter()
        .copied()
        .filter(|a| *a != offender)
        .collect();
    let owners: Vec<AccountId> = own.owners.iter().map(|o| o.account).collect();
    let mut expect_owners = honest.clone();
    expect_owners.sort();
    assert_eq!(
        owners, expect_owners,
        "the offender's voided step earned nothing"
    );
    let share_sum: u128 = own.owners.iter().map(|o| bal(&o.share)).sum();
    assert_eq!(share_sum, 1_000_000_000, "shares sum to exactly one");
    let held: u128 = own.owners.iter().map(|o| bal(&o.credentials)).sum();
    assert_eq!(held + bal(&own.reissue_pool), bal(&own.credential_issuance));
    assert!(own.owners.iter().all(|o| bal(&o.credentials) > 0));
    let text = cli_text(&url, &["ownership", "show", "0"]).await;
    assert!(text.contains(&honest[0].to_string()), "{text}");

    // --- the deferred slash applies: exactly the reported amount -----------------------
    wait_for(WAIT, "the slash to apply", || async {
        let l = c.staking_ledger(offender, None).await.ok()??;
        (l.pending_slashes == 0).then_some(())
    })
    .await
    .unwrap();
    let after = c.staking_ledger(offender, None).await.unwrap().unwrap();
    assert_eq!(
        bal(&after.total),
        bal(&offender_bond.total) - bal(&slash.amount)
    );
    assert!(c.slashes(None).await.unwrap().is_empty());

    // --- 5. a credential changes hands and is redeemed ---------------------------------
    let giver = honest[0];
    cli_json(
        &url,
        &[
            "credentials",
            "transfer",
            "--from",
            suri(&giver),
            "--run",
            "0",
            "--to",
            "//Holder",
            "--amount",
            "5",
        ],
    )
    .await;
    let redeemed = cli_json(
        &url,
        &[
            "credentials",
            "redeem",
            "--from",
            "//Holder",
            "--run",
            "0",
            "--amount",
            "1",
        ],
    )
    .await;
    let block: weft_primitives::Hash =
        serde_json::from_value(redeemed["blockHash"].clone()).unwrap();
    let held = c
        .credentials(account("//Holder"), Some(0), Some(block))
        .await
        .unwrap();
    assert_eq!(held.runs[0].credentials, "4");
    assert_eq!(c.ownership(0, Some(block)).await.unwrap().reissue_pool, "1");
    let all = c
        .credentials(account("//Holder"), None, None)
        .await
        .unwrap();
    assert_eq!(all.runs.len(), 1);

    // --- 6. a halt vote stops the run; a resume needs two thirds -----------------------
    let p = cli_json(&url, &["gov", "propose", "halt", "0", "--from", "//Alice"]).await;
    let halt_id = p["proposalId"].as_u64().unwrap().to_string();
    let v = cli_json(&url, &["gov", "vote", &halt_id, "aye", "--from", "//Alice"]).await;
    assert!(
        v["passedEnactAt"].is_u64(),
        "Alice holds more than a third: {v}"
    );
    wait_status(&c, &node, runs::RunStatus::Halted).await;
    let stage0 = c.stage_assignments(0, None).await.unwrap().stages[0].replicas[0]
        .trainer
        .unwrap();
    cli_fails(
        &url,
        &[
            "work",
            "commit",
            "--from",
            suri(&stage0),
            "--run",
            "0",
            "--roots-from",
            "honest",
        ],
        "RunNotTraining",
    )
    .await;
    cli_fails(
        &url,
        &["credentials", "redeem", "--from", "//Holder", "--run", "0"],
        "NotServing",
    )
    .await;
    let p = cli_json(&url, &["gov", "propose", "resume", "0", "--from", "//Bob"]).await;
    let resume_id = p["proposalId"].as_u64().unwrap();
    let v = cli_json(
        &url,
        &[
            "gov",
            "vote",
            &resume_id.to_string(),
            "aye",
            "--from",
            "//Alice",
        ],
    )
    .await;
    assert!(
        v.get("passedEnactAt").is_none(),
        "half the stake does not resume: {v}"
    );
    let props = c.proposals(None).await.unwrap();
    let resume = props.iter().find(|p| u64::from(p.id) == resume_id).unwrap();
    assert_eq!(resume.status, governance::ProposalStatus::Voting);
    assert_eq!(resume.action, governance::Action::ResumeRun { run: 0 });
    assert!(resume.threshold.unwrap() > 600_000_000);
    cli_json(
        &url,
        &[
            "gov",
            "vote",
            &resume_id.to_string(),
            "aye",
            "--from",
            "//Bob",
        ],
    )
    .await;
    wait_status(&c, &node, runs::RunStatus::Training).await;
    let out = cli_json(
        &url,
        &[
            "work",
            "commit",
            "--from",
            suri(&stage0),
            "--run",
            "0",
            "--roots-from",
            "honest",
        ],
    )
    .await;
    assert!(out["commitmentId"].is_u64(), "{out}");
    assert_eq!(
        c.stage_assignments(0, None).await.unwrap().stages[0].replicas[0].next_step,
        2
    );

    // --- 7. an emergency halt by the validator set takes effect at once -----------------
    let v = cli_json(&url, &["gov", "emergency-halt", "0", "--from", "//Alice"]).await;
    assert!(
        v.get("halted").is_none(),
        "half the set's stake is not enough: {v}"
    );
    let v = cli_json(&url, &["gov", "emergency-halt", "0", "--from", "//Bob"]).await;
    assert_eq!(v["halted"], true, "{v}");
    assert_eq!(
        c.run(0, None).await.unwrap().status,
        runs::RunStatus::Halted
    );

    // Human-readable views work too.
    for args in [
        &["epoch"][..],
        &["run", "show", "0"],
        &["run", "list"],
        &["stake", "validators"],
        &["stake", "trainers"],
        &["stake", "show", "//Alice"],
        &["gov", "proposals"],
        &["work", "audits", "0"],
        &["credentials", "show", "//Holder"],
    ] {
        cli_text(&url, args).await;
    }
    eprintln!("protocol scenario took {:?}", started.elapsed());
}

/// Configurations that cannot train (or cannot be audited) are refused by `weft run
/// register` with the pallet's named error, before anything is submitted: the designer's
/// balance is unchanged and no run exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_register_refuses_what_cannot_train() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--block-time", "100ms"])
        .await
        .unwrap();
    let url = node.ws_url();
    let c = node.cli_client().await.unwrap();
    let designer = account("//Ferdie");
    let before = c.account(designer, None).await.unwrap();
    let good_hyper = r#"{"micro_batch_size": 2, "lr": 0.001, "total_steps": 10}"#;
    let cases: [(&str, &str, &str, &str); 7] = [
        (
            r#"{"d_model": -5, "n_layers": 0, "n_heads": 3, "seq_len": 8}"#,
            good_hyper,
            "1",
            "ModelSizeNotPositive",
        ),
        (
            r#"{"d_model": 30, "n_layers": 2, "n_heads": 4, "seq_len": 8}"#,
            good_hyper,
            "1",
            "HeadsDoNotDivide",
        ),
        (
            r#"{"d_model": 32, "n_layers": 2, "n_heads": 4, "seq_len": 8}"#,
            good_hyper,
            "9",
            "MoreStagesThanLayers",
        ),
        (
            r#"{"d_model": 32, "n_layers": 2, "n_heads": 4, "seq_len": 8}"#,
            r#"{"micro_batch_size": 2, "lr": -1, "total_steps": 10}"#,
            "1",
            "BadLearningRate",
        ),
        (
            r#"{"d_model": 32, "n_layers": 2, "n_heads": 4, "seq_len": 8}"#,
            r#"{"micro_batch_size": 2, "lr": 0.001, "total_steps": 10, "warmup_steps": 11}"#,
            "1",
            "WarmupBeyondTotal",
        ),
        (
            r#"{"d_model": 32, "n_layers": 2, "n_heads": 4, "seq_len": 8, "tied_embeddings": true}"#,
            good_hyper,
            "2",
            "TiedEmbeddingsAcrossStages",
        ),
        (
            r#"{"d_model": 32, "n_layers": 2, "n_heads": 4, "seq_len": 8}"#,
            r#"{"micro_batch_size": 2, "lr": 0.001, "total_steps": 10, "clip_scope": "global"}"#,
            "2",
            "GlobalClipAcrossStages",
        ),
    ];
    let hash = format!("0x{}", "07".repeat(32));
    for (model, hyper, stages, error) in cases {
        cli_fails(
            &url,
            &[
                "run",
                "register",
                "--from",
                "//Ferdie",
                "--config",
                model,
                "--hyper-params",
                hyper,
                "--stages",
                stages,
                "--dataset-hash",
                &hash,
                "--wait",
                "in-block",
            ],
            error,
        )
        .await;
    }
    let after = c.account(designer, None).await.unwrap();
    assert_eq!(
        (after.free, after.reserved, after.nonce),
        (before.free, before.reserved, before.nonce)
    );
    assert!(c.runs(None).await.unwrap().is_empty());
}

#[path = "protocol/adversaries.rs"]
mod adversaries;
#[path = "protocol/auditor.rs"]
mod auditor;
#[path = "protocol/dashboard.rs"]
mod dashboard;
#[path = "protocol/inference.rs"]
mod inference;
#[path = "protocol/leave.rs"]
mod leave;
#[path = "protocol/processes.rs"]
mod processes;
#[path = "protocol/replicas.rs"]
mod replicas;
#[path = "protocol/seals.rs"]
mod seals;
