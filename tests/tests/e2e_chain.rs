//! End-to-end tests of a dev chain: the real `weft-node` and `weft` binaries on loopback.
//!
//! * `key_commands_need_no_node`: `weft key generate` / `weft key inspect` offline.
//! * `transfers_and_rpc_errors`: CLI transfers (success, fee payer without funds, failing
//!   call), `weft account` / `weft block` / `weft remark`, replay protection and the JSON-RPC
//!   error codes for garbage extrinsics, unknown methods and bad params.
//! * `survives_kill_9`: a node killed with SIGKILL restarts on its database with the same
//!   chain, state root and balances, and keeps producing blocks and accepting transactions.
//!
//! * [`testnet`]: four Tendermint validators on loopback (issue 11): finality, a kill -9 and a
//!   restart, two of four down, a full node syncing from genesis.
//! * [`abuse`]: the node under abuse (issue 10): an unfunded pool flood, eviction in a full
//!   pool, idle WebSocket connections against the connection limits.
//! * [`dashboard`]: the web dashboard on the RPC port, in a headless Chromium (issue 14).
//!
//! Needs the binaries: `cargo build --release --workspace --bins`, then
//! `cargo test --release -p weft-tests -- --test-threads 1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::ClientError;
use jsonrpsee::rpc_params;
use jsonrpsee::ws_client::WsClient;
use parity_scale_codec::Encode;
use std::time::Duration;
use weft_cli::{SubmitOptions, WaitFor};
use weft_primitives::units::{format_amount, UNIT};
use weft_primitives::{AccountId, Balance, BlockNumber, Bytes, Keypair};
use weft_rpc_api::{AccountJson, ChainApiClient, INVALID_TRANSACTION};
use weft_runtime::{system, RuntimeCall, RuntimeEvent};
use weft_tests::{run_cli, serial, wait_for, wait_until, Node};

const CHAIN_TIMEOUT: Duration = Duration::from_secs(60);

fn account(suri: &str) -> AccountId {
    Keypair::from_suri(suri).unwrap().account_id()
}

fn free(a: &AccountJson) -> Balance {
    a.free.parse().unwrap()
}

async fn best_number(rpc: &WsClient) -> Option<BlockNumber> {
    rpc.header(None).await.ok().flatten().map(|h| h.number)
}

async fn wait_for_height(rpc: &WsClient, height: BlockNumber) {
    wait_until(CHAIN_TIMEOUT, &format!("block #{height}"), || async {
        best_number(rpc).await.is_some_and(|n| n >= height)
    })
    .await
    .unwrap();
}

fn call_error(e: ClientError) -> (i32, String) {
    match e {
        ClientError::Call(obj) => (obj.code(), obj.message().to_string()),
        other => panic!("expected a JSON-RPC error answer, got {other:?}"),
    }
}

#[tokio::test]
async fn key_commands_need_no_node() {
    // Nothing listens on this port: key commands must not try to connect.
    let url = format!("ws://127.0.0.1:{}", weft_tests::pick_free_port());

    let out = run_cli(&url, &["key", "generate", "--json"]).await.unwrap();
    assert!(out.success(), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let phrase = v["secretPhrase"].as_str().unwrap();
    assert_eq!(phrase.split_whitespace().count(), 12);
    let address = v["ss58Address"].as_str().unwrap();
    assert_eq!(
        Keypair::from_suri(phrase).unwrap().account_id().to_ss58(),
        address
    );

    let alice = account("//Alice").to_ss58();
    let out = run_cli(&url, &["key", "inspect", "//Alice"]).await.unwrap();
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains(&alice), "{out}");
    assert!(out.stdout.contains("Public key:"), "{out}");

    let out = run_cli(&url, &["key", "inspect", &alice, "--json"])
        .await
        .unwrap();
    assert!(out.success(), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ss58Address"], alice.as_str());
    assert!(v.get("secretPhrase").is_none() && v.get("secretUri").is_none());

    let out = run_cli(&url, &["key", "inspect", "definitely not a key !!"])
        .await
        .unwrap();
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("neither"), "{out}");

    // Commands that need a node fail cleanly without one.
    let out = run_cli(&url, &["account", "//Bob"]).await.unwrap();
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("cannot connect"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_and_rpc_errors() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]).await.unwrap();
    let rpc = node.client().await.unwrap();
    wait_for_height(&rpc, 2).await;

    let (alice, bob, charlie, nobody) = (
        account("//Alice"),
        account("//Bob"),
        account("//Charlie"),
        account("//Nobody"),
    );

    // --- a successful transfer through the CLI -------------------------------------------
    let alice0 = rpc.account(alice, None).await.unwrap();
    let bob0 = rpc.account(bob, None).await.unwrap();
    assert_eq!(alice0.nonce, 0, "fresh dev chain");
    let out = node
        .cli(&[
            "--json", "transfer", "--from", "//Alice", "--to", "//Bob", "--amount", "1.5",
        ])
        .await
        .unwrap();
    assert!(out.success(), "{out}\nnode log:\n{}", node.log_tail());
    let receipt: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(receipt["stage"], "finalized", "{out}");
    assert_eq!(receipt["success"], true, "{out}");
    let fee: Balance = receipt["fee"].as_str().unwrap().parse().unwrap();
    let tip: Balance = receipt["tip"].as_str().unwrap().parse().unwrap();
    assert!(fee > 0);
    assert_eq!(tip, 0);
    let block_hash = receipt["blockHash"].as_str().unwrap().to_string();
    let block_number = receipt["blockNumber"].as_u64().unwrap();

    let alice1 = rpc.account(alice, None).await.unwrap();
    let bob1 = rpc.account(bob, None).await.unwrap();
    assert_eq!(free(&bob1) - free(&bob0), 1_500_000_000_000);
    assert_eq!(alice1.nonce, 1);
    assert_eq!(free(&alice0) - free(&alice1), 1_500_000_000_000 + fee + tip);

    // The same through the human output.
    let out = node
        .cli(&[
            "transfer",
            "--from",
            "//Alice",
            "--to",
            &bob.to_ss58(),
            "--amount",
            "0.25",
            "--wait",
            "in-block",
        ])
        .await
        .unwrap();
    assert!(out.success(), "{out}");
    for label in ["Extrinsic:", "Block:", "Result:", "Fee:"] {
        assert!(out.stdout.contains(label), "missing {label}: {out}");
    }
    assert!(out.stdout.contains("success"), "{out}");
    let bob2 = rpc.account(bob, None).await.unwrap();
    assert_eq!(free(&bob2) - free(&bob1), UNIT / 4);

    // --- weft account ----------------------------------------------------------------------
    let out = node.cli(&["account", "//Bob", "--json"]).await.unwrap();
    assert!(out.success(), "{out}");
    let parsed: AccountJson = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(parsed, rpc.account(bob, None).await.unwrap());
    let out = node
        .cli(&["account", &bob.to_ss58(), "--at", &block_hash])
        .await
        .unwrap();
    assert!(out.success(), "{out}");
    assert!(
        out.stdout
            .contains(&format!("{} WEFT", format_amount(free(&bob1)))),
        "{out}"
    );
    assert!(out.stdout.contains("Nonce:"), "{out}");

    // --- weft block ------------------------------------------------------------------------
    let out = node.cli(&["block", &block_hash, "--json"]).await.unwrap();
    assert!(out.success(), "{out}");
    let block: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(block["hash"], block_hash.as_str());
    assert_eq!(block["number"].as_u64(), Some(block_number));
    assert!(block["extrinsicCount"].as_u64().unwrap() >= 1);
    let out = node
        .cli(&["block", &block_number.to_string()])
        .await
        .unwrap();
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains(&block_hash), "{out}");
    assert!(out.stdout.contains("balances.transfer"), "{out}");
    assert!(out.stdout.contains("State root:"), "{out}");
    for sel in ["best", "finalized", "0"] {
        let out = node.cli(&["block", sel]).await.unwrap();
        assert!(out.success(), "weft block {sel}: {out}");
    }
    let out = node.cli(&["block", "999999999"]).await.unwrap();
    assert!(!out.success(), "{out}");

    // --- weft remark -----------------------------------------------------------------------
    let out = node
        .cli(&[
            "remark",
            "--from",
            "//Bob",
            "hello weft",
            "--wait",
            "in-block",
        ])
        .await
        .unwrap();
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("system.remarked"), "{out}");

    // --- a fee payer without funds: rejected by the node, nothing changes -------------------
    let bob3 = rpc.account(bob, None).await.unwrap();
    let out = node
        .cli(&[
            "transfer", "--from", "//Nobody", "--to", "//Bob", "--amount", "1",
        ])
        .await
        .unwrap();
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("rejected"), "{out}");
    assert!(out.stderr.contains("insufficient balance"), "{out}");
    assert_eq!(rpc.account(bob, None).await.unwrap(), bob3);
    let nobody1 = rpc.account(nobody, None).await.unwrap();
    assert_eq!((free(&nobody1), nobody1.nonce), (0, 0));

    // --- a call that fails: fee paid, transfer rolled back ---------------------------------
    let charlie0 = rpc.account(charlie, None).await.unwrap();
    let too_much = format_amount(free(&charlie0) + UNIT);
    let out = node
        .cli(&[
            "--json",
            "transfer",
            "--from",
            "//Charlie",
            "--to",
            "//Bob",
            "--amount",
            &too_much,
            "--wait",
            "in-block",
        ])
        .await
        .unwrap();
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("InsufficientBalance"), "{out}");
    let failed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(failed["success"], false, "{out}");
    let fee: Balance = failed["fee"].as_str().unwrap().parse().unwrap();
    let charlie1 = rpc.account(charlie, None).await.unwrap();
    assert_eq!(free(&charlie0) - free(&charlie1), fee);
    assert_eq!(charlie1.nonce, charlie0.nonce + 1);
    assert_eq!(rpc.account(bob, None).await.unwrap(), bob3);

    // --- replay: the exact same bytes again are stale --------------------------------------
    let client = node.cli_client().await.unwrap();
    let alice_pair = Keypair::from_suri("//Alice").unwrap();
    let call = RuntimeCall::System(system::Call::Remark {
        remark: b"once".to_vec(),
    });
    let opts = SubmitOptions {
        mortality: None,
        wait: WaitFor::InBlock,
        ..Default::default()
    };
    let xt = client.sign(&alice_pair, call, &opts).await.unwrap();
    let receipt = client
        .submit_extrinsic(&xt, WaitFor::InBlock, CHAIN_TIMEOUT)
        .await
        .unwrap()
        .ensure_success()
        .unwrap();
    assert_eq!(receipt.hash, xt.hash());
    assert!(receipt.events.iter().any(|r| matches!(
        r.event,
        RuntimeEvent::System(system::Event::Remarked { who, .. }) if who == alice
    )));
    let (code, message) = call_error(rpc.submit_extrinsic(Bytes(xt.encode())).await.unwrap_err());
    assert_eq!(code, INVALID_TRANSACTION, "{message}");
    assert!(message.to_lowercase().contains("stale"), "{message}");
    // The library reports the same as a rejection.
    let err = client
        .submit_extrinsic(&xt, WaitFor::InBlock, CHAIN_TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, weft_cli::ClientError::Rejected { code: INVALID_TRANSACTION, message } if message.contains("stale")),
        "{err}"
    );

    // --- garbage and malformed requests ----------------------------------------------------
    let (code, message) = call_error(
        rpc.submit_extrinsic(Bytes(vec![0xde, 0xad, 0xbe, 0xef]))
            .await
            .unwrap_err(),
    );
    assert_ne!(code, -32601, "{message}");
    let (code, _) = call_error(
        rpc.request::<serde_json::Value, _>("weft_noSuchMethod", rpc_params![])
            .await
            .unwrap_err(),
    );
    assert_eq!(code, -32601);
    let (code, _) = call_error(
        rpc.request::<serde_json::Value, _>("chain_getBlockHash", rpc_params!["not a number"])
            .await
            .unwrap_err(),
    );
    assert_eq!(code, -32602);
    let (code, _) = call_error(
        rpc.request::<serde_json::Value, _>("weft_account", rpc_params!["not an address"])
            .await
            .unwrap_err(),
    );
    assert_eq!(code, -32602);

    // The node is still healthy after all that.
    let n = best_number(&rpc).await.unwrap();
    wait_for_height(&rpc, n + 1).await;
    // No balance changed through any of the rejected submissions.
    assert_eq!(rpc.account(nobody, None).await.unwrap(), nobody1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_kill_9() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &[]).await.unwrap();
    let rpc = node.client().await.unwrap();
    wait_for_height(&rpc, 2).await;

    // Change some state so that there is something to lose.
    let out = node
        .cli(&[
            "transfer", "--from", "//Alice", "--to", "//Dave", "--amount", "2",
        ])
        .await
        .unwrap();
    assert!(out.success(), "{out}");
    let n0 = best_number(&rpc).await.unwrap();
    wait_for_height(&rpc, n0 + 2).await;

    let best = rpc.header(None).await.unwrap().unwrap();
    let (number, hash, state_root) = (best.number, best.hash(), best.state_root);
    let accounts = [account("//Alice"), account("//Bob"), account("//Dave")];
    let mut recorded = Vec::new();
    for a in accounts {
        recorded.push(rpc.account(a, Some(hash)).await.unwrap());
    }
    drop(rpc);

    node.kill9().unwrap();
    assert!(!node.is_running());
    drop(node);

    let node = Node::start(dir.path(), &[]).await.unwrap();
    let rpc = node.client().await.unwrap();
    assert_eq!(
        rpc.block_hash(Some(number)).await.unwrap(),
        Some(hash),
        "block #{number} changed after kill -9\nnode log:\n{}",
        node.log_tail()
    );
    let header = rpc.header(Some(hash)).await.unwrap().unwrap();
    assert_eq!(header.hash(), hash);
    assert_eq!(header.state_root, state_root);
    for (a, before) in accounts.iter().zip(&recorded) {
        assert_eq!(&rpc.account(*a, Some(hash)).await.unwrap(), before);
        // Nothing was submitted since: the best state agrees.
        assert_eq!(&rpc.account(*a, None).await.unwrap(), before);
    }

    // The chain goes on, and accepts transactions with the next nonce.
    wait_for_height(&rpc, number + 1).await;
    let out = node
        .cli(&[
            "transfer", "--from", "//Alice", "--to", "//Dave", "--amount", "1",
        ])
        .await
        .unwrap();
    assert!(out.success(), "{out}\nnode log:\n{}", node.log_tail());
    let alice = wait_for(CHAIN_TIMEOUT, "Alice's nonce to move", || async {
        let a = rpc.account(accounts[0], None).await.ok()?;
        (a.nonce == recorded[0].nonce + 1).then_some(a)
    })
    .await
    .unwrap();
    assert!(free(&alice) < free(&recorded[0]));
    let dave = rpc.account(accounts[2], None).await.unwrap();
    assert_eq!(free(&dave) - free(&recorded[2]), UNIT);
}

#[path = "chain/abuse.rs"]
mod abuse;

#[path = "chain/dashboard.rs"]
mod dashboard;

#[path = "chain/testnet.rs"]
mod testnet;
