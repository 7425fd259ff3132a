//! # weft-node-net
//!
//! The validator/full-node network of the Weft chain: gossip of transactions, consensus
//! messages and block proposals, the block-sync transport, peer discovery, and peer
//! punishment. It carries opaque bytes: the node decodes and validates them and reports
//! verdicts ([`Verdict`]) and misbehaviour ([`Offence`]) back.
//!
//! * **Transport**: TCP (nodelay) + noise (XX, ed25519 identities) + yamux; connections idle
//!   for 60 s are closed (the gate keeps peer connections alive while they answer pings).
//!   libp2p-tcp binds listeners with `SO_REUSEPORT`, which would let a second node silently
//!   share a fixed port; [`spawn`] first binds each fixed port without it and fails with
//!   [`NetError::Listen`] if that is refused.
//! * **Gossip** ([`behaviour`]): gossipsub topics `/{protocol_id}/tx/1`,
//!   `/{protocol_id}/consensus/1`, `/{protocol_id}/proposal/1`; signed, strictly validated,
//!   content-addressed, forwarded only after the node accepts ([`NetworkHandle::validation`]).
//! * **Sync** ([`sync`]): one request, one response per stream on `/{protocol_id}/sync/1`,
//!   length-prefixed and size-limited before allocation; inbound requests are rate-limited per
//!   peer.
//! * **Discovery**: identify + Kademlia (`/{protocol_id}/kad/1`); bootnodes are redialed every
//!   5 s while disconnected, discovered peers dialed while below `max_peers`.
//! * **Reputation** ([`scoring`], [`gate`]): a score per peer; at −100 the peer is banned
//!   (disconnected and refused) for `ban_duration`.
//!
//! [`spawn`] starts the swarm on a tokio task and returns a [`NetworkHandle`] (cheap to clone)
//! and the stream of [`NetworkEvent`]s. The task stops when every handle is dropped.

mod behaviour;
mod config;
mod gate;
mod handle;
pub mod key;
pub mod scoring;
pub mod sync;
mod worker;

pub use config::NetworkConfig;
pub use gate::Denied;
pub use handle::{NetworkHandle, ReplyHandle};
pub use libp2p::gossipsub::MessageId;
pub use libp2p::{identity::Keypair, Multiaddr, PeerId};
pub use scoring::{Offence, BAN_THRESHOLD};
pub use worker::spawn;

use std::time::Duration;

/// The gossip topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Pending transactions.
    Transactions,
    /// Consensus votes and other consensus messages.
    Consensus,
    /// Block proposals.
    Proposals,
}

/// The node's verdict on a gossip message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: deliver and forward it.
    Accept,
    /// Not forwarded, no penalty (e.g. a duplicate or a stale but honest message).
    Ignore,
    /// Invalid: not forwarded, and the peer that sent it is punished (`InvalidData`).
    Reject,
}

/// Something that happened on the network.
#[derive(Debug)]
pub enum NetworkEvent {
    /// A gossip message awaiting the node's [`Verdict`] (report it with
    /// [`NetworkHandle::validation`] using `id` and `from`).
    Gossip {
        /// Its topic.
        topic: Topic,
        /// The peer that forwarded it (who is punished for a `Reject`).
        from: PeerId,
        /// Its content id.
        id: MessageId,
        /// The payload.
        data: Vec<u8>,
    },
    /// A sync request; answer with [`NetworkHandle::respond`] within the request timeout.
    /// Dropping `reply` makes the peer's request fail.
    Request {
        /// Who asked.
        peer: PeerId,
        /// The request bytes.
        data: Vec<u8>,
        /// Where the answer goes.
        reply: ReplyHandle,
    },
    /// The first connection with a peer was established.
    PeerConnected(PeerId),
    /// The last connection with a peer closed.
    PeerDisconnected(PeerId),
    /// A peer's score reached the ban threshold; it is disconnected and refused for
    /// `ban_duration`.
    PeerBanned(PeerId),
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInfo {
    /// Its identity.
    pub peer_id: PeerId,
    /// The remote address of each connection.
    pub addresses: Vec<Multiaddr>,
    /// Whether the first connection was opened by the peer.
    pub inbound: bool,
    /// How long it has been connected.
    pub connected_for: Duration,
    /// Its reputation (0 = clean, the ban threshold is −100).
    pub score: i32,
}

/// A banned peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BannedPeer {
    /// Its identity.
    pub peer_id: PeerId,
    /// How long the ban still lasts.
    pub remaining: Duration,
}

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The network task has stopped.
    #[error("the network task has stopped")]
    Stopped,
    /// The settings are invalid.
    #[error("invalid network config: {0}")]
    Config(String),
    /// Setting up the transport failed.
    #[error("transport: {0}")]
    Transport(String),
    /// A listen address could not be bound (e.g. the port is taken).
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A dial could not be started.
    #[error("cannot dial {addr}: {reason}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A message is larger than the limit (on publish or request, or a response received).
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Publishing failed for another reason than size (no subscribed peers is not an error).
    #[error("publish failed: {0}")]
    Publish(String),
    /// The peer is banned.
    #[error("peer {0} is banned")]
    Banned(PeerId),
    /// A sync request failed (unreachable peer, timeout, stream failure, refused request).
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
}
