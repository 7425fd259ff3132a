//! Many validators (issue 11): four `weft-node --chain local` validator processes on
//! loopback, finalizing with Tendermint over libp2p.
//!
//! `four_validators_finalize_and_survive_faults` walks through the faults a staker's network
//! must survive, checking safety (one block per height on every node) at the end:
//! 1. all four finalize and agree; the finality proof is a BN254 aggregate of ≥ 3 signers;
//! 2. a transfer sent to the fourth node lands once and is finalized there;
//! 3. the fourth is killed with SIGKILL: the other three keep finalizing; node 0's dashboard
//!    (headless Chromium) shows the four validators and who signed each recent finalized
//!    block, as the certificates say (the dead one, none);
//! 4. it restarts, catches up (sync) and votes again (its precommit is in a later
//!    certificate);
//! 5. with two of four down, finality stops; it resumes when one returns;
//! 6. a fifth node, a full node started from genesis, syncs to the same blocks and state
//!    root.
//!
//! `an_equivocating_validator_is_reported_and_slashed`: //Dave runs `weft-equivocator`; the
//! others see its double votes, report them on chain and it loses 10% of its bond.
//!
//! `validators_join_and_leave_at_epoch_boundaries`: //Eve bonds and validates and, once
//! elected at an epoch boundary, its node's precommits appear in certificates; //Dave chills
//! and unbonds and certificates stop counting it after the next boundary.
//!
//! `a_wiped_validator_never_signs_below_its_signing_record`: //Dave's database is purged
//! while its signing state (beside its keys, outside the database) says it signed up to a
//! height the chain has not reached; it re-syncs, refuses every vote up to that height (the
//! guard's counter rises, no certificate below it carries //Dave, nor one at it decided in
//! the recorded round) and votes again after it.
//!
//! `peers_sending_garbage_are_banned_and_finality_goes_on` speaks libp2p to the validators
//! directly: undecodable gossip, a forged vote, oversized sync requests and a badly signed
//! transaction each get their sender disconnected and refused for the ban, while finality
//! goes on.

use std::collections::BTreeMap;
use std::time::Duration;
use weft_primitives::{AccountId, Hash, Keypair};
use weft_rpc_api::ChainApiClient;
use weft_tests::browser::Browser;
use weft_tests::testnet::Testnet;
use weft_tests::{serial, wait_for, wait_until};

const FINALITY_TIMEOUT: Duration = Duration::from_secs(90);

async fn hash_at(net: &Testnet, i: usize, n: u64) -> Option<Hash> {
    let client = net.nodes[i].client().await.ok()?;
    client.block_hash(Some(n)).await.ok()?
}

async fn signers_of(net: &Testnet, i: usize, n: u64) -> Vec<weft_primitives::AccountId> {
    proof_of(net, i, n).await.signers
}

/// The finality proof of block `n` as node `i` serves it, checked for a quorum.
async fn proof_of(net: &Testnet, i: usize, n: u64) -> weft_rpc_api::FinalityProof {
    let client = net.nodes[i].client().await.unwrap();
    let hash = client.block_hash(Some(n)).await.unwrap().unwrap();
    let proof = client.finality_proof(Some(hash)).await.unwrap().unwrap();
    assert_eq!(proof.engine, "tmbf");
    assert!(
        proof.signed_power_ppb > 666_666_666,
        "a certificate without a two-thirds quorum: {proof:?}"
    );
    proof
}

/// Node 0's dashboard chain page in a headless Chromium, once every block of its votes
/// table is at least `from`: per validator, each block shown and whether it signed it.
async fn dashboard_votes(net: &Testnet, from: u64) -> BTreeMap<AccountId, Vec<(u64, bool)>> {
    let mut b = Browser::open(&format!("{}/#/chain", net.nodes[0].http_url()), (1280, 900))
        .await
        .unwrap();
    let table = b
        .until(
            "(() => { const t = document.querySelector('#validators table'); if (!t) return null; \
              const blocks = [...t.querySelectorAll('thead th')].map((h) => h.textContent).filter((h) => h.startsWith('#')).map((h) => Number(h.slice(1))); \
              const rows = [...t.querySelectorAll('tbody tr')].map((r) => [r.cells[0].textContent, [...r.cells].slice(2, 2 + blocks.length).map((c) => c.textContent)]); \
              return { blocks, rows }; })()",
            "the validators' votes on the dashboard",
            FINALITY_TIMEOUT,
            |v| {
                let blocks: Vec<u64> = serde_json::from_value(v["blocks"].clone()).ok()?;
                (!blocks.is_empty() && blocks.iter().all(|n| *n >= from)).then(|| v.clone())
            },
        )
        .await
        .unwrap();
    let blocks: Vec<u64> = serde_json::from_value(table["blocks"].clone()).unwrap();
    let rows: Vec<(String, Vec<String>)> = serde_json::from_value(table["rows"].clone()).unwrap();
    rows.into_iter()
        .map(|(who, marks)| {
            let who: AccountId = who.parse().unwrap();
            let marks = blocks
                .iter()
                .zip(&marks)
                .map(|(n, m)| (*n, m == "✓"))
                .collect();
            (who, marks)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_finalize_and_survive_faults() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::start(dir.path()).await.unwrap();

    // 1. Everyone finalizes, the same blocks.
    for i in 0..4 {
        net.wait_finalized(i, 3, FINALITY_TIMEOUT).await.unwrap();
    }
    let h3 = hash_at(&net, 0, 3).await.unwrap();
    for i in 1..4 {
        assert_eq!(
            hash_at(&net, i, 3).await,
            Some(h3),
            "node {i} differs at #3"
        );
    }
    assert!(signers_of(&net, 0, 3).await.len() >= 3);
    let health = net.nodes[0]
        .client()
        .await
        .unwrap()
        .system_health()
        .await
        .unwrap();
    assert!(
        health.peers >= 3,
        "node 0 should see the other three: {health:?}"
    );

    // 2. A transfer sent to node 3 lands once.
    let ferdie = Keypair::from_suri("//Ferdie").unwrap().account_id();
    let before = net.nodes[0]
        .client()
        .await
        .unwrap()
        .account(ferdie, None)
        .await
        .unwrap();
    let out = net.nodes[3]
        .cli(&[
            "--json", "transfer", "--from", "//Eve", "--to", "//Ferdie", "--amount", "2",
        ])
        .await
        .unwrap();
    assert!(out.success(), "{out}\n{}", net.nodes[3].log_tail());
    let receipt: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(receipt["stage"], "finalized", "{out}");
    let expected: u128 = before.free.parse::<u128>().unwrap() + 2 * weft_primitives::units::UNIT;
    wait_until(FINALITY_TIMEOUT, "node 0 to see the transfer", || async {
        let c = net.nodes[0].client().await.unwrap();
        let a = c.account(ferdie, None).await.unwrap();
        a.free.parse::<u128>().unwrap() == expected
    })
    .await
    .unwrap();

    // 3. Node 3 dies; the other three carry on.
    net.nodes[3].kill9().unwrap();
    let (at_kill, _) = net.finalized(0).await.unwrap();
    for i in 0..3 {
        net.wait_finalized(i, at_kill.number + 3, FINALITY_TIMEOUT)
            .await
            .unwrap();
    }
    // The dashboard of node 0 shows the four validators and, per finalized block, who
    // signed it, as the certificates say: //Dave signs none after its death.
    let votes = dashboard_votes(&net, at_kill.number + 2).await;
    assert_eq!(votes.len(), 4, "{votes:?}");
    for (who, marks) in &votes {
        for (n, signed) in marks {
            let signers = signers_of(&net, 0, *n).await;
            assert_eq!(*signed, signers.contains(who), "{who} at #{n}: {votes:?}");
        }
    }
    let dave = Keypair::from_suri("//Dave").unwrap().account_id();
    assert!(votes[&dave].iter().all(|(_, signed)| !signed), "{votes:?}");

    // 4. It comes back, catches up and votes again.
    net.restart(3).await.unwrap();
    let (head, _) = net.finalized(0).await.unwrap();
    net.wait_finalized(3, head.number, FINALITY_TIMEOUT)
        .await
        .unwrap();
    let back_from = head.number + 1;
    wait_for(
        FINALITY_TIMEOUT,
        "//Dave's precommit in a certificate",
        || async {
            let (now, _) = net.finalized(0).await.ok()?;
            for n in back_from..=now.number {
                if signers_of(&net, 0, n).await.contains(&dave) {
                    return Some(n);
                }
            }
            None
        },
    )
    .await
    .unwrap();

    // 5. Two of four down: no quorum, no finality; one returns and finality resumes.
    net.nodes[2].kill9().unwrap();
    net.nodes[3].kill9().unwrap();
    // Whatever was in flight settles within a round; after that the head must stand still.
    let (settled, _) = net.finalized(0).await.unwrap();
    let stalled = wait_until(
        Duration::from_secs(8),
        "finality beyond the settled head without a quorum",
        || async {
            net.finalized(0)
                .await
                .is_ok_and(|(h, _)| h.number > settled.number + 1)
        },
    )
    .await;
    assert!(
        stalled.is_err(),
        "two of four validators finalized alone\n{}",
        net.nodes[0].log_tail()
    );
    let (stalled_at, _) = net.finalized(0).await.unwrap();
    net.restart(2).await.unwrap();
    net.wait_finalized(0, stalled_at.number + 2, FINALITY_TIMEOUT)
        .await
        .unwrap();
    net.restart(3).await.unwrap();

    // 6. A new full node syncs from genesis to the same chain.
    let fifth = net.add_node(Vec::new()).unwrap();
    net.nodes[fifth].wait_ready().await.unwrap();
    let (target, target_hash) = net.finalized(0).await.unwrap();
    net.wait_finalized(fifth, target.number, FINALITY_TIMEOUT)
        .await
        .unwrap();
    let synced = hash_at(&net, fifth, target.number).await;
    assert_eq!(synced, Some(target_hash));
    let header = net.nodes[fifth]
        .client()
        .await
        .unwrap()
        .header(Some(target_hash))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(header.state_root, target.state_root);

    // Safety: one block per height, on every node that has it.
    for n in 1..=target.number {
        let reference = hash_at(&net, 0, n).await;
        for i in 1..net.nodes.len() {
            if let Some(h) = hash_at(&net, i, n).await {
                assert_eq!(
                    Some(h),
                    reference,
                    "node {i} finalized another block at #{n}"
                );
            }
        }
    }
}

/// A raw libp2p peer (the node's own network crate, driven by hand) on the testnet's
/// protocol, bootstrapped from node `i`.
async fn raw_peer(
    net: &Testnet,
    i: usize,
) -> (
    weft_node_net::NetworkHandle,
    tokio::sync::mpsc::Receiver<weft_node_net::NetworkEvent>,
    weft_node_net::PeerId,
) {
    let genesis = hash_at(net, 0, 0).await.unwrap();
    let protocol = format!("weft/{}", &hex::encode(genesis.as_bytes())[..8]);
    let mut config =
        weft_node_net::NetworkConfig::new(weft_node_net::Keypair::generate_ed25519(), protocol);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.bootnodes = vec![net.addr(i).parse().unwrap()];
    config.discovery = false;
    // It may send what the nodes refuse.
    config.max_request_bytes = 1 << 20;
    let (handle, mut events) = weft_node_net::spawn(config).await.unwrap();
    let target: weft_node_net::PeerId = net.peer_ids[i].parse().unwrap();
    wait_until(FINALITY_TIMEOUT, "the raw peer to connect", || {
        let h = handle.clone();
        async move {
            h.peers()
                .await
                .is_ok_and(|p| p.iter().any(|p| p.peer_id == target))
        }
    })
    .await
    .unwrap();
    // Drain events in the background: the raw peer answers nothing.
    let (keep_tx, keep_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if keep_tx.try_send(ev).is_err() {}
        }
    });
    (handle, keep_rx, target)
}

/// Waits until the raw peer `handle` has a mesh peer on `topic`.
async fn in_mesh(handle: &weft_node_net::NetworkHandle, topic: weft_node_net::Topic, what: &str) {
    wait_until(FINALITY_TIMEOUT, what, || {
        let h = handle.clone();
        async move { h.mesh_peers(topic).await.is_ok_and(|m| !m.is_empty()) }
    })
    .await
    .unwrap();
}

async fn node_lists_peer(net: &Testnet, i: usize, peer: &str) -> bool {
    let peers = net.nodes[i]
        .client()
        .await
        .unwrap()
        .system_peers()
        .await
        .unwrap();
    peers.iter().any(|p| p["peerId"] == peer)
}

async fn assert_banned(net: &Testnet, i: usize, raw: &weft_node_net::NetworkHandle, what: &str) {
    let me = raw.local_peer_id().to_string();
    let target: weft_node_net::PeerId = net.peer_ids[i].parse().unwrap();
    wait_until(
        FINALITY_TIMEOUT,
        &format!("node {i} to drop the peer that sent {what}"),
        || async {
            !node_lists_peer(net, i, &me).await
                && raw
                    .peers()
                    .await
                    .is_ok_and(|p| p.iter().all(|p| p.peer_id != target))
        },
    )
    .await
    .unwrap();
    // Banned, not just disconnected: dialing again gets nowhere while the ban lasts.
    let _ = raw.add_peer(net.addr(i).parse().unwrap()).await;
    let back = wait_until(
        Duration::from_secs(3),
        "the banned peer to get back in",
        || async { node_lists_peer(net, i, &me).await },
    )
    .await;
    assert!(
        back.is_err(),
        "node {i} let the peer that sent {what} back in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_sending_garbage_are_banned_and_finality_goes_on() {
    use parity_scale_codec::Encode;
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::start(dir.path()).await.unwrap();
    net.wait_finalized(0, 2, FINALITY_TIMEOUT).await.unwrap();

    // Garbage on the consensus topic.
    let (garbage, _ev1, _) = raw_peer(&net, 0).await;
    in_mesh(
        &garbage,
        weft_node_net::Topic::Consensus,
        "the raw peer to join the consensus mesh",
    )
    .await;
    for k in 0u8..4 {
        let _ = garbage
            .publish(weft_node_net::Topic::Consensus, vec![0xff, k, 0x13, 0x37])
            .await;
    }
    assert_banned(&net, 0, &garbage, "undecodable consensus messages").await;

    // A well-formed vote with a forged signature.
    let (forger, _ev2, _) = raw_peer(&net, 1).await;
    in_mesh(
        &forger,
        weft_node_net::Topic::Consensus,
        "the forger to join the consensus mesh",
    )
    .await;
    let (head, _) = net.finalized(1).await.unwrap();
    let forged = weft_consensus::ConsensusMessage::Vote(weft_finality::SignedVote {
        vote: weft_finality::Vote {
            kind: weft_finality::VoteKind::Prevote,
            height: head.number + 1,
            round: 0,
            block: None,
            validator: Keypair::from_suri("//Alice").unwrap().account_id(),
        },
        signature: weft_runtime::bls::SignatureBytes([7; 32]),
    });
    // The gossip envelope: (attempt, message bytes).
    let _ = forger
        .publish(
            weft_node_net::Topic::Consensus,
            (0u32, forged.to_bytes()).encode(),
        )
        .await;
    assert_banned(&net, 1, &forger, "a badly signed vote").await;

    // Oversized sync requests.
    let (flooder, _ev3, target) = raw_peer(&net, 2).await;
    for _ in 0..3 {
        let _ = flooder.request(target, vec![0u8; 100 * 1024]).await;
    }
    assert_banned(&net, 2, &flooder, "oversized requests").await;

    // A transaction whose signature does not cover it: no honest relay forwards one.
    let (relay, _ev4, _) = raw_peer(&net, 3).await;
    in_mesh(
        &relay,
        weft_node_net::Topic::Transactions,
        "the relay to join the transaction mesh",
    )
    .await;
    let genesis = hash_at(&net, 0, 0).await.unwrap();
    let mut xt = weft_runtime::Extrinsic::new_signed(
        weft_runtime::RuntimeCall::Balances(weft_runtime::balances::Call::Transfer {
            dest: account_of("//Bob"),
            value: 1,
        }),
        &Keypair::from_suri("//Alice").unwrap(),
        0,
        0,
        weft_primitives::Era::Immortal,
        weft_primitives::SigningContext {
            genesis_hash: genesis,
            birth_hash: genesis,
        },
    );
    xt.tip = 1; // after signing
    let _ = relay
        .publish(weft_node_net::Topic::Transactions, xt.encode())
        .await;
    assert_banned(&net, 3, &relay, "a badly signed transaction").await;

    // The validators never stopped.
    let (now, _) = net.finalized(0).await.unwrap();
    for i in 0..4 {
        net.wait_finalized(i, now.number + 2, FINALITY_TIMEOUT)
            .await
            .unwrap();
    }
}

fn account_of(suri: &str) -> weft_primitives::AccountId {
    Keypair::from_suri(suri).unwrap().account_id()
}

async fn reserved(net: &Testnet, i: usize, who: weft_primitives::AccountId) -> u128 {
    let c = net.nodes[i].client().await.unwrap();
    c.account(who, None)
        .await
        .unwrap()
        .reserved
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocating_validator_is_reported_and_slashed() {
    use weft_rpc_api::ProtocolApiClient;
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    // //Dave runs the test-only weft-equivocator: a second, conflicting vote for each vote.
    let net = Testnet::start_with(
        dir.path(),
        &["weft-node", "weft-node", "weft-node", "weft-equivocator"],
    )
    .await
    .unwrap();
    let dave = account_of("//Dave");
    let bonded = reserved(&net, 0, dave).await;
    let slash = wait_for(
        FINALITY_TIMEOUT,
        "an equivocation slash of //Dave",
        || async {
            let c = net.nodes[0].client().await.ok()?;
            let slashes = c.slashes(None).await.ok()?;
            slashes.into_iter().find(|s| {
                s.offender == dave && s.kind == weft_runtime::staking::OffenceKind::Equivocation
            })
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nnode 0 log:\n{}", net.nodes[0].log_tail()));
    let reporter = slash.reporter.expect("a reporter gets its share");
    assert_ne!(reporter, dave);
    let amount: u128 = slash.amount.parse().unwrap();
    assert_eq!(amount, bonded / 10, "10% of the bond");
    // The deferred slash applies; the chain kept finalizing all along.
    wait_until(FINALITY_TIMEOUT, "the slash to apply", || async {
        reserved(&net, 0, dave).await == bonded - amount
    })
    .await
    .unwrap();
    let (head, _) = net.finalized(1).await.unwrap();
    net.wait_finalized(2, head.number + 2, FINALITY_TIMEOUT)
        .await
        .unwrap();
    for n in 1..=head.number {
        let a = hash_at(&net, 0, n).await;
        for i in 1..3 {
            assert_eq!(
                hash_at(&net, i, n).await,
                a,
                "honest nodes disagree at #{n}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_join_and_leave_at_epoch_boundaries() {
    use weft_rpc_api::ProtocolApiClient;
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::start(dir.path()).await.unwrap();
    net.wait_finalized(0, 1, FINALITY_TIMEOUT).await.unwrap();
    let eve = account_of("//Eve");
    let dave = account_of("//Dave");
    // //Eve starts a validator node, then bonds and registers its BLS key.
    let fifth = net
        .add_node(vec!["--validator".into(), "--key".into(), "//Eve".into()])
        .unwrap();
    net.nodes[fifth].wait_ready().await.unwrap();
    for args in [
        vec!["stake", "bond", "--from", "//Eve", "--amount", "100000"],
        vec!["stake", "validate", "--from", "//Eve"],
    ] {
        let out = net.nodes[0].cli(&args).await.unwrap();
        assert!(out.success(), "{out}");
    }
    let in_set = |who| {
        let net = &net;
        async move {
            let c = net.nodes[0].client().await.ok()?;
            let v = c.validators(None).await.ok()?;
            Some(v.active.iter().any(|a| a.account == who))
        }
    };
    wait_until(
        FINALITY_TIMEOUT,
        "//Eve elected at an epoch boundary",
        || async { in_set(eve).await == Some(true) },
    )
    .await
    .unwrap();
    let (elected, _) = net.finalized(0).await.unwrap();
    wait_for(
        FINALITY_TIMEOUT,
        "//Eve's precommit in a certificate",
        || async {
            let (now, _) = net.finalized(0).await.ok()?;
            for n in elected.number + 1..=now.number {
                if signers_of(&net, 0, n).await.contains(&eve) {
                    return Some(n);
                }
            }
            None
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n//Eve's node:\n{}", net.nodes[fifth].log_tail()));

    // //Dave leaves: chill and unbond; out of the set at the next boundary, and no
    // certificate after that counts it.
    for args in [
        vec!["stake", "chill", "--from", "//Dave"],
        vec!["stake", "unbond", "--from", "//Dave", "--amount", "100000"],
    ] {
        let out = net.nodes[1].cli(&args).await.unwrap();
        assert!(out.success(), "{out}");
    }
    wait_until(FINALITY_TIMEOUT, "//Dave out of the set", || async {
        in_set(dave).await == Some(false)
    })
    .await
    .unwrap();
    let (left, _) = net.finalized(0).await.unwrap();
    net.wait_finalized(0, left.number + 3, FINALITY_TIMEOUT)
        .await
        .unwrap();
    for n in left.number + 1..=left.number + 3 {
        let signers = signers_of(&net, 0, n).await;
        assert!(!signers.contains(&dave), "#{n} counts //Dave: {signers:?}");
    }
}

/// The signing-state file of node `i` (`<base>/chains/<id>/signing-state.json`).
fn signing_state_file(net: &Testnet, i: usize) -> std::path::PathBuf {
    std::fs::read_dir(net.nodes[i].base_path.join("chains"))
        .unwrap()
        .map(|e| e.unwrap().path().join("signing-state.json"))
        .find(|p| p.is_file())
        .expect("a signing-state.json beside the validator's keys")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_validator_never_signs_below_its_signing_record() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::start(dir.path()).await.unwrap();
    for i in 0..4 {
        net.wait_finalized(i, 3, FINALITY_TIMEOUT).await.unwrap();
    }
    let dave = Keypair::from_suri("//Dave").unwrap().account_id();
    net.nodes[3].kill9().unwrap();
    // The record is real: //Dave signed up to about the head.
    let file = signing_state_file(&net, 3);
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(record["height"].as_u64().unwrap() >= 3, "{record}");
    assert!(!record["signed"].as_array().unwrap().is_empty(), "{record}");

    // Its database is wiped; its record says it signed a precommit at a height ahead.
    weft_tests::purge_chain("local", &net.nodes[3].base_path).unwrap();
    assert!(file.is_file(), "purge-chain must keep the signing state");
    let (head, _) = net.finalized(0).await.unwrap();
    let recorded = head.number + 20;
    let forged = serde_json::json!({
        "height": recorded,
        "signed": [{"round": 0, "kind": "precommit", "block": Hash([7; 32])}],
    });
    std::fs::write(&file, forged.to_string()).unwrap();

    net.restart(3).await.unwrap();
    let back = wait_for(FINALITY_TIMEOUT, "//Dave to sync back", || async {
        let c = net.nodes[3].client().await.ok()?;
        let h = c.finalized_head().await.ok()?;
        let n = c.header(Some(h)).await.ok()??.number;
        (n > head.number).then_some(n)
    })
    .await
    .unwrap();
    wait_until(
        FINALITY_TIMEOUT,
        "the guard to refuse a signature",
        || async {
            net.nodes[3]
                .metric("weft_consensus_signatures_refused_total")
                .await
                .ok()
                .flatten()
                .is_some_and(|v| v > 0.0)
        },
    )
    .await
    .unwrap();
    // It votes again after the recorded height...
    let voted = wait_for(
        FINALITY_TIMEOUT,
        "//Dave's precommit above its record",
        || async {
            let (now, _) = net.finalized(0).await.ok()?;
            for n in recorded + 1..=now.number {
                if signers_of(&net, 0, n).await.contains(&dave) {
                    return Some(n);
                }
            }
            None
        },
    )
    .await
    .unwrap();
    // ...and never below it, nor at it in the round it had recorded (a later round of that
    // height is a new vote, not a second one).
    for n in back..=recorded {
        let proof = proof_of(&net, 0, n).await;
        let allowed = n == recorded && proof.round.is_some_and(|r| r > 0);
        assert!(
            allowed || !proof.signers.contains(&dave),
            "#{n} (recorded {recorded}, round 0) carries //Dave's precommit: {proof:?}"
        );
    }
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(
        record["height"].as_u64().unwrap() > recorded,
        "the record moves on once //Dave signs again (precommit at #{voted}): {record}"
    );
}
