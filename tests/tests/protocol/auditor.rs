//! An auditor outlives its node: the node is killed with SIGKILL and started again under a
//! running `weft-trainer audit`, which reconnects and keeps following the chain instead of
//! exiting (a stopped auditor would be slashed for the attestations it then misses).

use super::processes::auditor_args;
use super::*;
use weft_tests::{wait_until, Spawned};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_survives_a_node_restart() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(&dir.path().join("node"), &[]).await.unwrap();
    let url = node.ws_url();
    cli_json(
        &url,
        &["stake", "bond", "--from", "//Alice", "--amount", "10000"],
    )
    .await;
    cli_json(&url, &["stake", "validate", "--from", "//Alice"]).await;
    let args = auditor_args(&url, "//Alice", dir.path());
    let mut auditor = Spawned::start("weft-trainer", &args, dir.path(), "auditor").unwrap();
    wait_until(WAIT, "the auditor to start", || async {
        auditor.log().contains("p2p peer")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", auditor.log_tail()));

    node.kill9().unwrap();
    node.restart(&[]).await.unwrap();
    wait_until(WAIT, "the auditor to reconnect", || async {
        auditor.log().contains("reconnected to")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", auditor.log_tail()));
    // Still running, and the restarted node goes on producing blocks under it.
    let c = node.cli_client().await.unwrap();
    let at = c.best_header().await.unwrap().number;
    wait_until(WAIT, "five more blocks", || async {
        c.best_header().await.is_ok_and(|h| h.number >= at + 5)
    })
    .await
    .unwrap();
    assert_eq!(
        auditor.try_exit_status().unwrap(),
        None,
        "the auditor exited:\n{}",
        auditor.log_tail()
    );
}
