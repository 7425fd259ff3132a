//! The sync request-response transport: limits, refusals and the rate limit.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use weft_node_net::{NetError, NetworkEvent, NetworkHandle};

/// Answers requests in the background: `big` → 4096 bytes, `drop` → no answer, else reversed.
fn responder(mut node: Node) -> NetworkHandle {
    let net = node.net.clone();
    tokio::spawn(async move {
        while let Some(event) = node.events.recv().await {
            if let NetworkEvent::Request { data, reply, .. } = event {
                match data.as_slice() {
                    b"big" => node.net.respond(reply, vec![7; 4096]),
                    b"drop" => drop(reply),
                    _ => {
                        let mut out = data;
                        out.reverse();
                        node.net.respond(reply, out);
                    }
                }
            }
        }
    });
    net
}

async fn connect(a: &mut Node, b_addr: weft_node_net::Multiaddr, b_id: weft_node_net::PeerId) {
    a.net.add_peer(b_addr).await.unwrap();
    let connected = a
        .wait_event(
            WAIT,
            |e| matches!(e, NetworkEvent::PeerConnected(p) if *p == b_id),
        )
        .await;
    assert!(connected.is_some(), "A connected to B");
}

#[tokio::test]
async fn requests_roundtrip_and_limits_fail_cleanly() {
    let mut a_config = config();
    a_config.max_response_bytes = 1024;
    let mut b_config = config();
    b_config.max_request_bytes = 1024;
    let mut a = start(a_config).await;
    let b = start(b_config).await;
    let (b_id, b_addr) = (b.id(), b.addr.clone());
    let b = responder(b);
    connect(&mut a, b_addr, b_id).await;

    assert_eq!(a.net.request(b_id, b"abc".to_vec()).await.unwrap(), b"cba");

    // A response beyond the requester's limit: a clean error, and the responder is charged.
    let err = a.net.request(b_id, b"big".to_vec()).await.unwrap_err();
    assert!(
        matches!(
            err,
            NetError::TooLarge {
                size: 4096,
                limit: 1024
            }
        ),
        "{err}"
    );
    assert_eq!(a.score_of(b_id).await, Some(-40), "B charged for Oversized");

    // A request beyond the responder's limit is refused there; the sender is charged.
    let err = a.net.request(b_id, vec![1; 2048]).await.unwrap_err();
    assert!(matches!(err, NetError::Request { .. }), "{err}");
    let a_id = a.id();
    let charged = wait_until(WAIT, || async {
        b.peers()
            .await
            .unwrap()
            .iter()
            .any(|p| p.peer_id == a_id && p.score <= -39)
    })
    .await;
    assert!(charged, "A charged for Oversized at B");

    // Beyond the requester's own limit: refused before sending.
    let err = a
        .net
        .request(b_id, vec![0; 64 * 1024 + 1])
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetError::TooLarge { limit: 65536, .. }),
        "{err}"
    );

    // A request the node drops fails; the connection keeps working.
    let err = a.net.request(b_id, b"drop".to_vec()).await.unwrap_err();
    assert!(matches!(err, NetError::Request { .. }), "{err}");
    assert_eq!(a.net.request(b_id, b"xyz".to_vec()).await.unwrap(), b"zyx");
}

#[tokio::test]
async fn request_floods_are_dropped_and_charged_as_spam() {
    let mut a = start(config()).await;
    let mut b_config = config();
    b_config.max_requests_per_sec = 5;
    let b = start(b_config).await;
    let (b_id, b_addr) = (b.id(), b.addr.clone());
    let b = responder(b);
    connect(&mut a, b_addr, b_id).await;

    let requests = (0..12u8).map(|i| {
        let net = a.net.clone();
        async move { net.request(b_id, vec![i]).await }
    });
    let results = futures::future::join_all(requests).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(
        (5..12).contains(&ok),
        "{ok} of 12 answered with a burst of 5"
    );
    let a_id = a.id();
    let score = b
        .peers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.peer_id == a_id)
        .map(|p| p.score)
        .expect("A still connected");
    assert!(score < 0, "spam charged: {score}");
}
