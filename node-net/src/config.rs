//! Network settings and the protocol names derived from the chain's protocol id.
//!
//! Defaults (see [`NetworkConfig::new`]):
//!
//! | setting | default | why |
//! |---|---|---|
//! | `max_peers` | 50 | total established connections (libp2p `connection-limits`) |
//! | `max_peers_per_ip` | 8 | established connections from/to one IP address; local testnets with more than 8 nodes on one host must raise it |
//! | `max_gossip_bytes` | 4 MiB | largest gossip payload published or accepted (a block proposal fits) |
//! | `max_request_bytes` | 64 KiB | largest sync request read (requests name what they want; they are small) |
//! | `max_response_bytes` | 16 MiB | largest sync response read (a batch of blocks) |
//! | `request_timeout` | 10 s | whole request, transfer included |
//! | `ban_duration` | 5 min | how long a peer whose score fell to the ban threshold is refused |
//! | `max_requests_per_sec` | 20 | inbound sync requests per peer per second (token bucket, burst 20) |
//! | `discovery` | on | dial peers discovered through Kademlia while below `max_peers` |
//!
//! Every protocol is namespaced by `protocol_id` (e.g. `weft/1a2b3c4d`, the chain id and a
//! genesis-hash prefix), so nodes of different chains never mix: gossip topics
//! `/{id}/tx/1`, `/{id}/consensus/1`, `/{id}/proposal/1`; sync `/{id}/sync/1`; Kademlia
//! `/{id}/kad/1`; identify's protocol version `/{id}/id/1` (peers announcing another one are
//! disconnected).

use crate::NetError;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, StreamProtocol};
use std::fmt;
use std::time::Duration;

/// Network settings. Build with [`NetworkConfig::new`] and override fields.
#[derive(Clone)]
pub struct NetworkConfig {
    /// The node's identity (see [`crate::key`] for a persistent one).
    pub key: Keypair,
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/30333` (port 0 picks a free port).
    pub listen: Vec<Multiaddr>,
    /// Externally reachable addresses advertised to peers (`--public-addr`).
    pub public: Vec<Multiaddr>,
    /// Peers dialed at start and redialed while disconnected; each ends with `/p2p/<peer id>`.
    pub bootnodes: Vec<Multiaddr>,
    /// Namespace of every topic and protocol, e.g. `weft/1a2b3c4d`.
    pub protocol_id: String,
    /// Total established connections.
    pub max_peers: u32,
    /// Established connections per remote IP address.
    pub max_peers_per_ip: u32,
    /// Largest gossip payload.
    pub max_gossip_bytes: usize,
    /// Largest sync request.
    pub max_request_bytes: usize,
    /// Largest sync response.
    pub max_response_bytes: usize,
    /// Outbound and inbound request timeout.
    pub request_timeout: Duration,
    /// How long a banned peer is refused.
    pub ban_duration: Duration,
    /// Inbound sync requests a peer may make per second (burst of the same size).
    pub max_requests_per_sec: u32,
    /// Dial peers discovered through Kademlia while below `max_peers`.
    pub discovery: bool,
}

impl fmt::Debug for NetworkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkConfig")
            .field("peer_id", &self.key.public().to_peer_id())
            .field("listen", &self.listen)
            .field("public", &self.public)
            .field("bootnodes", &self.bootnodes)
            .field("protocol_id", &self.protocol_id)
            .field("max_peers", &self.max_peers)
            .field("max_peers_per_ip", &self.max_peers_per_ip)
            .field("max_gossip_bytes", &self.max_gossip_bytes)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("ban_duration", &self.ban_duration)
            .field("max_requests_per_sec", &self.max_requests_per_sec)
            .field("discovery", &self.discovery)
            .finish()
    }
}

impl NetworkConfig {
    /// Defaults for `key` on chain `protocol_id`, listening nowhere and with no bootnodes.
    pub fn new(key: Keypair, protocol_id: String) -> Self {
        NetworkConfig {
            key,
            listen: Vec::new(),
            public: Vec::new(),
            bootnodes: Vec::new(),
            protocol_id,
            max_peers: 50,
            max_peers_per_ip: 8,
            max_gossip_bytes: 4 * 1024 * 1024,
            max_request_bytes: 64 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            ban_duration: Duration::from_secs(5 * 60),
            max_requests_per_sec: 20,
            discovery: true,
        }
    }

    /// Checks the settings and derives the protocol names.
    pub(crate) fn protocols(&self) -> Result<Protocols, NetError> {
        let id = self.protocol_id.trim_matches('/');
        if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(NetError::Config(format!(
                "protocol id {:?} must be non-empty without whitespace",
                self.protocol_id
            )));
        }
        if self.max_peers == 0 || self.max_peers_per_ip == 0 {
            return Err(NetError::Config(
                "max_peers and max_peers_per_ip must be at least 1".into(),
            ));
        }
        if self.max_requests_per_sec == 0 {
            return Err(NetError::Config(
                "max_requests_per_sec must be at least 1".into(),
            ));
        }
        if self.max_request_bytes > u32::MAX as usize || self.max_response_bytes > u32::MAX as usize
        {
            return Err(NetError::Config(
                "request and response limits must fit in a u32 length prefix".into(),
            ));
        }
        let protocol = |suffix: &str| {
            StreamProtocol::try_from_owned(format!("/{id}/{suffix}"))
                .map_err(|e| NetError::Config(format!("protocol id {id:?}: {e}")))
        };
        Ok(Protocols {
            sync: protocol("sync/1")?,
            kad: protocol("kad/1")?,
            identify: format!("/{id}/id/1"),
            topic_prefix: format!("/{id}"),
        })
    }
}

/// The protocol names of one chain.
#[derive(Debug, Clone)]
pub(crate) struct Protocols {
    pub sync: StreamProtocol,
    pub kad: StreamProtocol,
    /// identify's `protocol_version`.
    pub identify: String,
    /// Gossip topics are `{topic_prefix}/tx/1` etc.
    pub topic_prefix: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_are_namespaced() {
        let config = NetworkConfig::new(Keypair::generate_ed25519(), "weft/1a2b".into());
        let p = config.protocols().unwrap();
        assert_eq!(p.sync.as_ref(), "/weft/1a2b/sync/1");
        assert_eq!(p.kad.as_ref(), "/weft/1a2b/kad/1");
        assert_eq!(p.identify, "/weft/1a2b/id/1");
        let bad = NetworkConfig::new(Keypair::generate_ed25519(), "a b".into());
        assert!(matches!(bad.protocols(), Err(NetError::Config(_))));
    }
}
