//! Connections: bans, the per-IP limit, listen-port conflicts, discovery, bootnode redial and
//! persistent keys.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use std::time::{Duration, Instant};
use weft_node_net::{key, spawn, NetError, NetworkEvent, Offence};

#[tokio::test]
async fn a_badly_signing_peer_is_banned_then_readmitted() {
    let mut a_config = config();
    a_config.ban_duration = Duration::from_secs(3);
    let mut a = start(a_config).await;
    let b = start(config()).await;
    let (a_id, b_id) = (a.id(), b.id());
    b.net.add_peer(a.addr.clone()).await.unwrap();
    assert!(a
        .wait_event(
            WAIT,
            |e| matches!(e, NetworkEvent::PeerConnected(p) if *p == b_id)
        )
        .await
        .is_some());

    a.net.punish(b_id, Offence::BadSignature);
    let banned_at = Instant::now();
    assert!(a
        .wait_event(
            WAIT,
            |e| matches!(e, NetworkEvent::PeerBanned(p) if *p == b_id)
        )
        .await
        .is_some());
    assert!(a
        .wait_event(
            WAIT,
            |e| matches!(e, NetworkEvent::PeerDisconnected(p) if *p == b_id)
        )
        .await
        .is_some());
    assert!(a.net.is_banned(b_id).await.unwrap());
    let bans = a.net.banned_peers().await.unwrap();
    assert!(bans[0].remaining <= Duration::from_secs(3));
    // A refuses to dial or query it.
    assert!(matches!(
        a.net.add_peer(b.addr.clone()).await,
        Err(NetError::Banned(p)) if p == b_id
    ));
    assert!(matches!(
        a.net.request(b_id, b"x".to_vec()).await,
        Err(NetError::Banned(_))
    ));

    // B keeps redialing during the ban: refused every time.
    let refused = never_during(Duration::from_millis(1500), || async {
        b.net.add_peer(a.addr.clone()).await.unwrap();
        a.has_peer(b_id).await
    })
    .await;
    assert!(refused, "a banned peer got in");
    while let Ok(event) = a.events.try_recv() {
        assert!(
            !matches!(event, NetworkEvent::PeerConnected(p) if p == b_id),
            "no PeerConnected during the ban"
        );
    }

    // After the ban B is accepted again.
    let back = wait_until(WAIT, || async {
        b.net.add_peer(a.addr.clone()).await.unwrap();
        a.has_peer(b_id).await
    })
    .await;
    assert!(back, "B readmitted after the ban");
    assert!(
        banned_at.elapsed() >= Duration::from_millis(2800),
        "not before the ban ended"
    );
    assert!(!a.net.is_banned(b_id).await.unwrap());
    assert_eq!(a.score_of(b_id).await, Some(0), "a fresh start");
    assert!(b.has_peer(a_id).await);
}

#[tokio::test]
async fn undecodable_data_bans_on_the_third_offence() {
    let mut a = start(config()).await;
    let b = start(config()).await;
    let b_id = b.id();
    a.net.add_peer(b.addr.clone()).await.unwrap();
    assert!(a
        .wait_event(
            WAIT,
            |e| matches!(e, NetworkEvent::PeerConnected(p) if *p == b_id)
        )
        .await
        .is_some());
    a.net.punish(b_id, Offence::Undecodable);
    a.net.punish(b_id, Offence::Undecodable);
    let score = a.score_of(b_id).await;
    assert!(matches!(score, Some(-80..=-79)), "{score:?}");
    assert!(!a.net.is_banned(b_id).await.unwrap());
    a.net.punish(b_id, Offence::Undecodable);
    assert!(a
        .wait_event(
            WAIT,
            |e| matches!(e, NetworkEvent::PeerBanned(p) if *p == b_id)
        )
        .await
        .is_some());
}

#[tokio::test]
async fn a_third_connection_from_one_ip_is_refused() {
    let mut x_config = config();
    x_config.max_peers_per_ip = 2;
    let x = start(x_config).await;
    let x_id = x.id();
    let n1 = start(config()).await;
    let n2 = start(config()).await;
    let mut n3 = start(config()).await;
    n1.net.add_peer(x.addr.clone()).await.unwrap();
    n2.net.add_peer(x.addr.clone()).await.unwrap();
    let two = wait_until(WAIT, || async { x.net.peers().await.unwrap().len() == 2 }).await;
    assert!(two, "X accepted the first two");

    let refused = never_during(Duration::from_millis(1500), || async {
        n3.net.add_peer(x.addr.clone()).await.unwrap();
        x.net.peers().await.unwrap().len() > 2 || n3.has_peer(x_id).await
    })
    .await;
    assert!(refused, "the third connection from 127.0.0.1 got in");
    while let Ok(event) = n3.events.try_recv() {
        assert!(
            !matches!(event, NetworkEvent::PeerConnected(_)),
            "n3 never connected"
        );
    }

    // Once a slot frees up, the third gets in.
    drop(n1);
    let admitted = wait_until(WAIT, || async {
        n3.net.add_peer(x.addr.clone()).await.unwrap();
        n3.has_peer(x_id).await
    })
    .await;
    assert!(admitted, "n3 admitted after n1 left");
}

#[tokio::test]
async fn a_taken_port_fails_to_listen() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: weft_node_net::Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let mut first = config();
    first.listen = vec![addr.clone()];
    let (net, _events) = spawn(first).await.unwrap();
    assert_eq!(net.listen_addrs().await.unwrap(), vec![addr.clone()]);
    let mut second = config();
    second.listen = vec![addr.clone()];
    match spawn(second).await {
        Err(NetError::Listen { addr: a, reason }) => {
            assert_eq!(a, addr);
            assert!(reason.contains(&port.to_string()), "{reason}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("two nodes listen on port {port}"),
    }
}

#[tokio::test]
async fn peers_are_discovered_through_a_bootnode() {
    let mut b_config = config();
    b_config.discovery = true;
    let b = start(b_config).await;
    let mut a_config = config();
    a_config.discovery = true;
    a_config.bootnodes = vec![b.addr.clone()];
    let mut c_config = config();
    c_config.discovery = true;
    c_config.bootnodes = vec![b.addr.clone()];
    let a = start(a_config).await;
    let c = start(c_config).await;
    let c_id = c.id();
    let found = wait_until(Duration::from_secs(30), || async { a.has_peer(c_id).await }).await;
    assert!(found, "A found C through B");
}

#[tokio::test]
async fn a_restarted_bootnode_is_rejoined_with_its_persistent_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("node.key");
    let b_id = key::generate_to_file(&key_path).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b_config = || {
        let mut c = config();
        c.key = key::load(&key_path).unwrap();
        c.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()];
        c
    };
    let b = start(b_config()).await;
    assert_eq!(b.id(), b_id);
    let mut a_config = config();
    a_config.bootnodes = vec![b.addr.clone()];
    let a = start(a_config).await;
    assert!(wait_until(WAIT, || async { a.has_peer(b_id).await }).await);

    drop(b);
    assert!(wait_until(WAIT, || async { !a.has_peer(b_id).await }).await);
    // The port is free again once the old node is gone.
    let deadline = Instant::now() + WAIT;
    let restarted = loop {
        match spawn(b_config()).await {
            Ok((net, events)) => break (net, events),
            Err(NetError::Listen { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(restarted.0.local_peer_id(), b_id);
    assert!(
        wait_until(WAIT, || async { a.has_peer(b_id).await }).await,
        "A redialed the restarted bootnode"
    );
}
