//! The command lines of a run's processes, shared by the end-to-end tests and the
//! benchmarks: the registration of the tiny model the tests train, and the flags of a
//! `weft-trainer train` on loopback, on the CPU.

use crate::pick_free_port;

/// `weft run register` (by //Alice) of a tiny model (d_model 16, 2 layers, context 8) with
/// hyper-parameters `hyper`, cut into `stages` stages, each step audited with
/// `audit_probability` by one auditor per stage (no validator audits two stages), reveal
/// window 25 and attest window 60 blocks, then `extra` flags.
pub fn tiny_run_of(
    hyper: &str,
    stages: u16,
    audit_probability: &str,
    extra: &[&str],
) -> Vec<String> {
    let stages = stages.to_string();
    let base = [
        "run",
        "register",
        "--from",
        "//Alice",
        "--config",
        r#"{"d_model":16,"n_layers":2,"n_heads":2,"seq_len":8}"#,
        "--hyper-params",
        hyper,
        "--stages",
        &stages,
        "--dataset-hash",
        &format!("0x{}", "05".repeat(32)),
        "--audit-probability",
        audit_probability,
        "--auditors-per-stage",
        "1",
        "--max-stages-per-auditor",
        "1",
        "--reveal-window",
        "25",
        "--attest-window",
        "60",
    ];
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}

/// The flags of a trainer of `run` with key `key`, its data directory under `dir`: it
/// registers itself, trains on one libtorch thread, at most two steps ahead of the chain.
pub fn trainer_args(url: &str, key: &str, run: usize, dir: &std::path::Path) -> Vec<String> {
    let port = pick_free_port();
    [
        "--url",
        url,
        "--key",
        key,
        "--run",
        &run.to_string(),
        "--register",
        "--data-dir",
        &dir.join(key.trim_start_matches("//")).to_string_lossy(),
        "--listen",
        &format!("/ip4/127.0.0.1/tcp/{port}"),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--prometheus-port",
        "0",
        "--max-backlog",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
