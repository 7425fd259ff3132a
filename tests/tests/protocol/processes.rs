//! Command lines of the processes the protocol tests start (`weft-trainer train` or
//! `weft-adversary`, `weft-trainer audit`, on loopback, on the CPU) and of the tiny fully
//! audited run they train.

use super::{cmd, in_parallel};
pub use weft_tests::runs::{tiny_run_of, trainer_args};
use weft_tests::{Node, Spawned};

/// The last lines of every process's log and of the node's, for a failing test's message.
pub fn dump(procs: &[Spawned], node: &Node) -> String {
    let mut s: Vec<String> = procs.iter().map(Spawned::log_tail).collect();
    s.push(format!("--- node ---\n{}", node.log_tail()));
    s.join("\n")
}

/// The two command scripts (for `in_parallel`) that fund `trainers` with 1,000 WEFT each and
/// make //Alice (then registering `run`) and //Bob validators with 10,000 bonded.
pub fn validators_funding(trainers: &[&str], run: Vec<String>) -> Vec<Vec<Vec<String>>> {
    let mut alice: Vec<Vec<String>> = trainers
        .iter()
        .map(|who| {
            cmd(&[
                "transfer", "--from", "//Alice", "--to", who, "--amount", "1000",
            ])
        })
        .collect();
    alice.push(cmd(&[
        "stake", "bond", "--from", "//Alice", "--amount", "10000",
    ]));
    alice.push(cmd(&["stake", "validate", "--from", "//Alice"]));
    alice.push(run);
    let bob = vec![
        cmd(&["stake", "bond", "--from", "//Bob", "--amount", "10000"]),
        cmd(&["stake", "validate", "--from", "//Bob"]),
    ];
    vec![alice, bob]
}

/// `weft-trainer audit` for //Alice and //Bob, working under `dir`.
pub fn start_auditors(url: &str, dir: &std::path::Path) -> Vec<Spawned> {
    ["//Alice", "//Bob"]
        .iter()
        .map(|v| {
            let name = format!("auditor-{}", v.trim_start_matches("//"));
            let args = auditor_args(url, v, dir);
            Spawned::start("weft-trainer", &args, dir, &name).expect("an auditor starts")
        })
        .collect()
}

/// The command line of `weft-trainer audit` for validator `key`, working in
/// `<dir>/auditor-<name>`.
pub fn auditor_args(url: &str, key: &str, dir: &std::path::Path) -> Vec<String> {
    let name = key.trim_start_matches("//");
    [
        "audit",
        "--url",
        url,
        "--key",
        key,
        "--data-dir",
        &dir.join(format!("auditor-{name}")).to_string_lossy(),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--device",
        "cpu",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `weft run register` (by //Alice) of a tiny 2-stage model with hyper-parameters `hyper`,
/// every step audited by one auditor per stage (no validator audits both stages), reveal
/// window 25 and attest window 60 blocks, then `extra` flags.
pub fn audited_tiny_run_with(hyper: &str, extra: &[&str]) -> Vec<String> {
    tiny_run_of(hyper, 2, "100%", extra)
}

/// [`audited_tiny_run_with`] of a run with `replicas` replicas that trains `steps` steps, 3
/// steps per 10-block epoch.
pub fn audited_tiny_run(steps: u64, replicas: u16) -> Vec<String> {
    let hyper = format!(
        r#"{{"micro_batch_size":2,"micro_batches":2,"lr":0.01,"warmup_steps":2,"total_steps":{steps}}}"#
    );
    audited_tiny_run_with(
        &hyper,
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

/// A dev node under `<dir>/node` with 200 ms blocks, its WebSocket URL and a client.
pub async fn dev_node(dir: &std::path::Path) -> (Node, String, weft_cli::Client) {
    let node = Node::start(&dir.join("node"), &["--block-time", "200ms"])
        .await
        .expect("the dev node starts");
    let url = node.ws_url();
    let client = node.cli_client().await.expect("a client of the node");
    (node, url, client)
}

/// The command line of `weft-adversary` cheating with `cheat` from step `from`, otherwise
/// [`trainer_args`].
pub fn adversary_args(
    cheat: &str,
    from: u64,
    (url, key, run, dir): (&str, &str, usize, &std::path::Path),
) -> Vec<String> {
    let mut args = vec![
        "--cheat".to_string(),
        cheat.to_string(),
        "--cheat-from".to_string(),
        from.to_string(),
    ];
    args.extend(trainer_args(url, key, run, dir));
    args
}

/// The slash of `who`, waited for up to `timeout`; panics with the processes' logs when it
/// does not come.
pub async fn slash_of(
    c: &weft_cli::Client,
    who: weft_primitives::AccountId,
    timeout: std::time::Duration,
    (procs, node): (&[Spawned], &Node),
) -> weft_rpc_api::protocol::SlashJson {
    weft_tests::wait_for(timeout, "the slash", || async {
        let slashes = c.slashes(None).await.ok()?;
        slashes.into_iter().find(|s| s.offender == who)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dump(procs, node)))
}

/// The run of `seals.rs` and `dashboard.rs`: //Alice and //Bob validating and auditing, the
/// audited tiny 2-stage run of 30 steps, `honest` training and `forger` running
/// `weft-adversary --cheat forged-messages` from step `from`. Returns the auditors and the
/// two trainers, in that order.
pub async fn forger_run(
    url: &str,
    dir: &std::path::Path,
    (honest, forger): (&str, &str),
    from: u64,
) -> Vec<Spawned> {
    in_parallel(
        url,
        validators_funding(&[honest, forger], audited_tiny_run(30, 1)),
    )
    .await;
    let mut procs = start_auditors(url, dir);
    let mut args = vec!["train".to_string()];
    args.extend(trainer_args(url, honest, 0, dir));
    procs.push(Spawned::start("weft-trainer", &args, dir, "honest").expect("the trainer starts"));
    let args = adversary_args("forged-messages", from, (url, forger, 0, dir));
    procs.push(Spawned::start("weft-adversary", &args, dir, "forger").expect("the forger starts"));
    procs
}
