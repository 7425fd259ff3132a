//! Helpers for the network tests: nodes on 127.0.0.1 with port 0, and waiting on conditions
//! with timeouts (never a bare sleep as an assertion).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use weft_node_net::{
    spawn, Keypair, Multiaddr, NetworkConfig, NetworkEvent, NetworkHandle, PeerId, Topic, Verdict,
};

pub const PROTOCOL_ID: &str = "weft/test0001";
pub const WAIT: Duration = Duration::from_secs(20);

/// A config listening on a free loopback port, discovery off (tests choose the topology).
pub fn config() -> NetworkConfig {
    let mut config = NetworkConfig::new(Keypair::generate_ed25519(), PROTOCOL_ID.into());
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.discovery = false;
    config
}

pub struct Node {
    pub net: NetworkHandle,
    pub events: mpsc::Receiver<NetworkEvent>,
    /// The listen address with `/p2p/<peer id>`.
    pub addr: Multiaddr,
}

impl Node {
    pub fn id(&self) -> PeerId {
        self.net.local_peer_id()
    }

    /// The next event satisfying `pred` within `timeout`; other events are dropped.
    pub async fn wait_event(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&NetworkEvent) -> bool,
    ) -> Option<NetworkEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(event)) if pred(&event) => return Some(event),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Whether `peer` is connected now.
    pub async fn has_peer(&self, peer: PeerId) -> bool {
        self.net
            .peers()
            .await
            .unwrap()
            .iter()
            .any(|p| p.peer_id == peer)
    }

    pub async fn score_of(&self, peer: PeerId) -> Option<i32> {
        self.net
            .peers()
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.peer_id == peer)
            .map(|p| p.score)
    }
}

pub async fn start(config: NetworkConfig) -> Node {
    let (net, events) = spawn(config).await.unwrap();
    let listen = net.listen_addrs().await.unwrap();
    let addr: Multiaddr = format!("{}/p2p/{}", listen[0], net.local_peer_id())
        .parse()
        .unwrap();
    Node { net, events, addr }
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// True if `cond` holds at no poll during `window` (polled every 100 ms).
pub async fn never_during<F, Fut>(window: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + window;
    while Instant::now() < deadline {
        if cond().await {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// Runs `node`'s events in the background, judging gossip with `policy` and answering
/// requests by reversing the bytes.
pub fn relay(mut node: Node, policy: fn(&[u8]) -> Verdict) -> NetworkHandle {
    let net = node.net.clone();
    tokio::spawn(async move {
        while let Some(event) = node.events.recv().await {
            if let NetworkEvent::Gossip { from, id, data, .. } = event {
                node.net.validation(id, from, policy(&data));
            }
        }
    });
    net
}

/// The next gossip payload on `topic` at `node`, accepted.
pub async fn next_gossip(node: &mut Node, topic: Topic) -> Option<(PeerId, Vec<u8>)> {
    let event = node
        .wait_event(
            WAIT,
            |e| matches!(e, NetworkEvent::Gossip { topic: t, .. } if *t == topic),
        )
        .await?;
    match event {
        NetworkEvent::Gossip { from, id, data, .. } => {
            node.net.validation(id, from, Verdict::Accept);
            Some((from, data))
        }
        _ => None,
    }
}
