//! Gossip through a relay: A — B — C, with B validating what it forwards.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use std::time::Duration;
use weft_node_net::{NetError, NetworkHandle, PeerId, Topic, Verdict};

struct Line {
    a: Node,
    b: NetworkHandle,
    b_id: PeerId,
    c: Node,
}

/// A and C both bootnode to B (discovery off, so A and C never connect directly); returns once
/// B's transaction mesh holds both and theirs hold B.
async fn line(policy: fn(&[u8]) -> Verdict) -> Line {
    let b = start(config()).await;
    let b_id = b.id();
    let mut a_config = config();
    a_config.bootnodes = vec![b.addr.clone()];
    let mut c_config = config();
    c_config.bootnodes = vec![b.addr.clone()];
    let a = start(a_config).await;
    let c = start(c_config).await;
    let b = relay(b, policy);
    let (a_id, c_id) = (a.id(), c.id());
    let meshed = wait_until(WAIT, || async {
        let mesh = b.mesh_peers(Topic::Transactions).await.unwrap();
        mesh.contains(&a_id)
            && mesh.contains(&c_id)
            && a.net.mesh_peers(Topic::Transactions).await.unwrap() == vec![b_id]
            && c.net.mesh_peers(Topic::Transactions).await.unwrap() == vec![b_id]
    })
    .await;
    assert!(meshed, "the gossip mesh did not form");
    assert!(
        !a.has_peer(c_id).await,
        "A and C are not directly connected"
    );
    Line { a, b, b_id, c }
}

fn accept_all(_: &[u8]) -> Verdict {
    Verdict::Accept
}

fn reject_bad(data: &[u8]) -> Verdict {
    if data.starts_with(b"bad") {
        Verdict::Reject
    } else {
        Verdict::Accept
    }
}

#[tokio::test]
async fn gossip_is_forwarded_once_through_the_relay() {
    let mut l = line(accept_all).await;
    l.a.net
        .publish(Topic::Transactions, b"tx-1".to_vec())
        .await
        .unwrap();
    // Published again: the same content id, so it is not sent twice.
    l.a.net
        .publish(Topic::Transactions, b"tx-1".to_vec())
        .await
        .unwrap();
    let (from, data) = next_gossip(&mut l.c, Topic::Transactions)
        .await
        .expect("tx-1 reached C");
    assert_eq!(data, b"tx-1");
    assert_eq!(from, l.b_id, "forwarded by B");

    // The same bytes published by two nodes are one message.
    l.a.net
        .publish(Topic::Transactions, b"tx-2".to_vec())
        .await
        .unwrap();
    l.b.publish(Topic::Transactions, b"tx-2".to_vec())
        .await
        .unwrap();
    // A marker published after both: everything before it has arrived once it does.
    l.a.net
        .publish(Topic::Transactions, b"marker".to_vec())
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let (_, data) = next_gossip(&mut l.c, Topic::Transactions)
            .await
            .expect("marker reached C");
        if data == b"marker" {
            break;
        }
        seen.push(data);
    }
    assert_eq!(seen, vec![b"tx-2".to_vec()], "no duplicate of tx-1 or tx-2");

    // Other topics flow too, and keep to their topic.
    l.a.net
        .publish(Topic::Consensus, b"vote".to_vec())
        .await
        .unwrap();
    let (_, data) = next_gossip(&mut l.c, Topic::Consensus)
        .await
        .expect("vote reached C");
    assert_eq!(data, b"vote");

    // Oversized payloads are refused locally.
    let err =
        l.a.net
            .publish(Topic::Proposals, vec![0; 4 * 1024 * 1024 + 1])
            .await
            .unwrap_err();
    assert!(matches!(err, NetError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn rejected_gossip_is_not_forwarded_and_costs_the_sender() {
    let mut l = line(reject_bad).await;
    l.a.net
        .publish(Topic::Transactions, b"good-1".to_vec())
        .await
        .unwrap();
    let (_, data) = next_gossip(&mut l.c, Topic::Transactions)
        .await
        .expect("good-1 reached C");
    assert_eq!(data, b"good-1");

    l.a.net
        .publish(Topic::Transactions, b"bad-1".to_vec())
        .await
        .unwrap();
    l.a.net
        .publish(Topic::Transactions, b"good-2".to_vec())
        .await
        .unwrap();
    let (_, data) = next_gossip(&mut l.c, Topic::Transactions)
        .await
        .expect("good-2 reached C");
    assert_eq!(data, b"good-2", "bad-1 was not forwarded before good-2");
    // Nor later (it is gone from B's cache, so not even IHAVE gossip announces it).
    let late = l
        .c
        .wait_event(Duration::from_secs(2), |e| {
            matches!(e, weft_node_net::NetworkEvent::Gossip { data, .. } if data.starts_with(b"bad"))
        })
        .await;
    assert!(late.is_none(), "a rejected message reached C: {late:?}");

    // B charged A for the rejected message (InvalidData, 25 points).
    let a_id = l.a.id();
    let score =
        l.b.peers()
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.peer_id == a_id)
            .map(|p| p.score);
    let score = score.expect("A is connected to B");
    assert!(
        (-25..=-20).contains(&score),
        "score {score}, recovering from -25"
    );
}
