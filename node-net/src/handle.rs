//! The node's handle on the swarm task.
//!
//! Commands travel over an unbounded channel (the node is trusted and its command rate is
//! bounded by its own work), so the fire-and-forget calls ([`NetworkHandle::validation`],
//! [`NetworkHandle::punish`], [`NetworkHandle::respond`]) are synchronous. Calls that need an
//! answer carry a oneshot sender. Size limits are checked here, before anything is queued.

use crate::{BannedPeer, MessageId, NetError, Offence, PeerInfo, Topic, Verdict};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

/// Where the answer to an inbound sync request goes. Dropping it refuses the request.
#[derive(Debug)]
pub struct ReplyHandle {
    pub(crate) tx: oneshot::Sender<Vec<u8>>,
    pub(crate) peer: PeerId,
}

impl ReplyHandle {
    /// The peer that asked.
    pub fn peer(&self) -> PeerId {
        self.peer
    }
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, NetError>>;

#[derive(Debug)]
pub(crate) enum Command {
    Publish {
        topic: Topic,
        data: Vec<u8>,
        reply: Reply<()>,
    },
    Validation {
        id: MessageId,
        from: PeerId,
        verdict: Verdict,
    },
    Request {
        peer: PeerId,
        data: Vec<u8>,
        reply: Reply<Vec<u8>>,
    },
    Punish {
        peer: PeerId,
        offence: Offence,
    },
    Peers(Reply<Vec<PeerInfo>>),
    Banned(Reply<Vec<BannedPeer>>),
    ListenAddrs(Reply<Vec<Multiaddr>>),
    MeshPeers(Topic, Reply<Vec<PeerId>>),
    AddPeer {
        addr: Multiaddr,
        reply: Reply<()>,
    },
}

/// A handle to the running network; cheap to clone.
#[derive(Clone, Debug)]
pub struct NetworkHandle {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) local_peer_id: PeerId,
    pub(crate) max_gossip_bytes: usize,
    pub(crate) max_request_bytes: usize,
    pub(crate) max_response_bytes: usize,
}

impl NetworkHandle {
    fn send(&self, command: Command) -> Result<(), NetError> {
        self.commands.send(command).map_err(|_| NetError::Stopped)
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.send(command(tx))?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// Publishes `data` on `topic`. Larger than `max_gossip_bytes` is [`NetError::TooLarge`];
    /// having no subscribed peers, or having published the same bytes recently, is not an
    /// error.
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), NetError> {
        if data.len() > self.max_gossip_bytes {
            return Err(NetError::TooLarge {
                size: data.len(),
                limit: self.max_gossip_bytes,
            });
        }
        self.ask(|reply| Command::Publish { topic, data, reply })
            .await
    }

    /// Reports the node's verdict on gossip message `id` received from `from`. `Accept`
    /// forwards it; `Reject` also costs `from` [`Offence::InvalidData`].
    pub fn validation(&self, id: MessageId, from: PeerId, verdict: Verdict) {
        if self
            .send(Command::Validation { id, from, verdict })
            .is_err()
        {
            tracing::debug!("validation reported after the network stopped");
        }
    }

    /// Sends a sync request to `peer` (dialing it if needed and its address is known) and
    /// waits for the response.
    pub async fn request(&self, peer: PeerId, data: Vec<u8>) -> Result<Vec<u8>, NetError> {
        if data.len() > self.max_request_bytes {
            return Err(NetError::TooLarge {
                size: data.len(),
                limit: self.max_request_bytes,
            });
        }
        self.ask(|reply| Command::Request { peer, data, reply })
            .await
    }

    /// Answers an inbound request. A response beyond `max_response_bytes` is not sent (the
    /// peer's request fails).
    pub fn respond(&self, reply: ReplyHandle, data: Vec<u8>) {
        if data.len() > self.max_response_bytes {
            tracing::warn!(
                peer = %reply.peer,
                size = data.len(),
                limit = self.max_response_bytes,
                "sync response too large; dropping it"
            );
            return;
        }
        if reply.tx.send(data).is_err() {
            tracing::debug!(peer = %reply.peer, "sync request expired before the response");
        }
    }

    /// Lowers `peer`'s score by the offence's cost; bans it at the threshold.
    pub fn punish(&self, peer: PeerId, offence: Offence) {
        if self.send(Command::Punish { peer, offence }).is_err() {
            tracing::debug!("punishment reported after the network stopped");
        }
    }

    /// The connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetError> {
        self.ask(Command::Peers).await
    }

    /// The peers banned now.
    pub async fn banned_peers(&self) -> Result<Vec<BannedPeer>, NetError> {
        self.ask(Command::Banned).await
    }

    /// Whether `peer` is banned now.
    pub async fn is_banned(&self, peer: PeerId) -> Result<bool, NetError> {
        Ok(self.banned_peers().await?.iter().any(|b| b.peer_id == peer))
    }

    /// The addresses the node listens on (ports resolved).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.ask(Command::ListenAddrs).await
    }

    /// The peers in this node's gossip mesh for `topic` (those it forwards to).
    pub async fn mesh_peers(&self, topic: Topic) -> Result<Vec<PeerId>, NetError> {
        self.ask(|reply| Command::MeshPeers(topic, reply)).await
    }

    /// Dials `addr` (with or without a `/p2p/<peer id>` suffix). Returns once the dial has
    /// started; the connection shows up as [`crate::NetworkEvent::PeerConnected`].
    pub async fn add_peer(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.ask(|reply| Command::AddPeer { addr, reply }).await
    }
}
