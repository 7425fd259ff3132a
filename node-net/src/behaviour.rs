//! The composed libp2p behaviour and the settings of each part.
//!
//! * **gossipsub**: signed messages (`MessageAuthenticity::Signed` with the node key) checked
//!   in `ValidationMode::Strict`; `validate_messages()`, so nothing is forwarded until the node
//!   reports `Accept`. Message id = blake3(topic ‖ 0 ‖ data): the same transaction published by
//!   two peers is one message. Heartbeat 500 ms (first after 100 ms) for fast consensus; mesh
//!   D = 6, D_low = 2, D_high = 12, D_lazy = 6, at least 1 outbound mesh peer, so a 4–6 node
//!   network forms full meshes. The message cache keeps 20 heartbeats (10 s: the time the node
//!   has to validate a message before `Accept` can no longer forward it) and gossips IHAVE for
//!   the last 3 (1.5 s). Flood publishing is on (own messages go to every subscribed peer).
//!   `max_transmit_size` = `max_gossip_bytes` + 1 KiB of envelope (signature, key, topic); the
//!   payload limit itself is enforced on publish. Gossipsub scoring is reduced to the
//!   invalid-message counter: 3 invalid messages in a burst (bad signatures, malformed, or
//!   rejected by the node; the counter decays 10% a second) score −9 = [`GOSSIP_SCORE_BAN`]
//!   and the swarm task bans the peer.
//! * **kad**: Kademlia on `/{protocol_id}/kad/1`, server mode, fed with the listen addresses
//!   peers announce through identify. Bootstrap: kad's own (on new routing-table entries, and
//!   every 60 s), plus every 5 s while fewer than 8 peers are connected. With `discovery` off
//!   Kademlia is not run at all (its queries would dial peers): only bootnodes and
//!   `add_peer` connect.
//! * **identify**: protocol version `/{protocol_id}/id/1`, pushes listen-address changes.
//! * **ping**: every 15 s; a failed ping closes the connection (the gate keeps connections
//!   alive, so dead ones must be detected).
//! * **sync**: request-response with [`SyncCodec`], up to 64 concurrent streams per
//!   connection.
//! * **limits**: `connection-limits` caps established connections at `max_peers` (and at 2
//!   per peer: a simultaneous dial in both directions), pending inbound at `max_peers`; the
//!   [`Gate`] adds bans and the per-IP cap.

use crate::config::{NetworkConfig, Protocols};
use crate::gate::Gate;
use crate::sync::SyncCodec;
use crate::{NetError, Topic};
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::gossipsub::{
    self, IdentTopic, MessageAuthenticity, PeerScoreParams, PeerScoreThresholds, TopicHash,
    TopicScoreParams, ValidationMode,
};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{identify, kad, ping};
use std::time::Duration;

/// Gossip envelope overhead allowed on top of `max_gossip_bytes`.
pub const GOSSIP_ENVELOPE_BYTES: usize = 1024;
/// A gossipsub score at or below this means 3 invalid messages in a burst: the peer is banned.
pub const GOSSIP_SCORE_BAN: f64 = -9.0;

/// Gossipsub scoring reduced to its invalid-message counter (P4): every message that fails
/// gossipsub's own checks (bad envelope signature, malformed) or that the node rejects adds 1
/// to the sender's counter, which decays by 10% a second; the score is −counter². Every other
/// component (mesh time, deliveries, IP colocation, behaviour penalties) is off, so honest
/// peers score 0.
fn gossip_scoring(topics: &Topics) -> (PeerScoreParams, PeerScoreThresholds) {
    let topic = TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -1.0,
        invalid_message_deliveries_decay: 0.9,
        ..TopicScoreParams::default()
    };
    let params = PeerScoreParams {
        topics: topics.iter().map(|t| (t.hash(), topic.clone())).collect(),
        app_specific_weight: 0.0,
        ip_colocation_factor_weight: 0.0,
        behaviour_penalty_weight: 0.0,
        slow_peer_weight: 0.0,
        decay_interval: Duration::from_secs(1),
        ..PeerScoreParams::default()
    };
    (params, PeerScoreThresholds::default())
}

/// All protocols of a node.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Bans, per-IP limit, keep-alive.
    pub gate: Gate,
    /// Total connection limits.
    pub limits: connection_limits::Behaviour,
    /// Transactions and consensus gossip.
    pub gossipsub: gossipsub::Behaviour,
    /// Discovery (absent when `discovery` is off).
    pub kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    /// Address exchange.
    pub identify: identify::Behaviour,
    /// Liveness.
    pub ping: ping::Behaviour,
    /// Block sync transport.
    pub sync: request_response::Behaviour<SyncCodec>,
}

/// The three gossip topics of one chain.
#[derive(Debug, Clone)]
pub struct Topics {
    all: [(Topic, IdentTopic); 3],
}

impl Topics {
    /// Topics under `prefix` (`/{protocol_id}`).
    pub fn new(prefix: &str) -> Self {
        let t = |name: &str| IdentTopic::new(format!("{prefix}/{name}/1"));
        Topics {
            all: [
                (Topic::Transactions, t("tx")),
                (Topic::Consensus, t("consensus")),
                (Topic::Proposals, t("proposal")),
            ],
        }
    }

    /// The gossipsub topic of `topic`.
    pub fn ident(&self, topic: Topic) -> &IdentTopic {
        let i = match topic {
            Topic::Transactions => 0,
            Topic::Consensus => 1,
            Topic::Proposals => 2,
        };
        &self.all[i].1
    }

    /// Which of ours `hash` is.
    pub fn topic_of(&self, hash: &TopicHash) -> Option<Topic> {
        self.all
            .iter()
            .find(|(_, t)| t.hash() == *hash)
            .map(|(topic, _)| *topic)
    }

    fn iter(&self) -> impl Iterator<Item = &IdentTopic> {
        self.all.iter().map(|(_, t)| t)
    }
}

fn gossipsub(config: &NetworkConfig, topics: &Topics) -> Result<gossipsub::Behaviour, NetError> {
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| {
            let mut hasher = blake3::Hasher::new();
            hasher.update(m.topic.as_str().as_bytes());
            hasher.update(&[0]);
            hasher.update(&m.data);
            gossipsub::MessageId::from(hasher.finalize().as_bytes().to_vec())
        })
        .max_transmit_size(
            config
                .max_gossip_bytes
                .saturating_add(GOSSIP_ENVELOPE_BYTES),
        )
        .heartbeat_interval(Duration::from_millis(500))
        .heartbeat_initial_delay(Duration::from_millis(100))
        .mesh_n(6)
        .mesh_n_low(2)
        .mesh_n_high(12)
        .mesh_outbound_min(1)
        .gossip_lazy(6)
        .history_length(20)
        .history_gossip(3)
        .flood_publish(true)
        .build()
        .map_err(|e| NetError::Config(format!("gossipsub: {e}")))?;
    let mut behaviour = gossipsub::Behaviour::new(
        MessageAuthenticity::Signed(config.key.clone()),
        gossip_config,
    )
    .map_err(|e| NetError::Config(format!("gossipsub: {e}")))?;
    let (params, thresholds) = gossip_scoring(topics);
    behaviour
        .with_peer_score(params, thresholds)
        .map_err(|e| NetError::Config(format!("gossipsub scoring: {e}")))?;
    for topic in topics.iter() {
        behaviour
            .subscribe(topic)
            .map_err(|e| NetError::Config(format!("subscribing to {topic}: {e}")))?;
    }
    Ok(behaviour)
}

/// Builds the behaviour for `config`.
pub fn build(
    config: &NetworkConfig,
    protocols: &Protocols,
    topics: &Topics,
) -> Result<Behaviour, NetError> {
    let local = config.key.public().to_peer_id();

    let mut kad_config = kad::Config::new(protocols.kad.clone());
    kad_config
        .set_query_timeout(Duration::from_secs(30))
        .set_periodic_bootstrap_interval(Some(Duration::from_secs(60)));
    let kad = config.discovery.then(|| {
        let mut kad =
            kad::Behaviour::with_config(local, kad::store::MemoryStore::new(local), kad_config);
        kad.set_mode(Some(kad::Mode::Server));
        kad
    });

    let identify = identify::Behaviour::new(
        identify::Config::new(protocols.identify.clone(), config.key.public())
            .with_agent_version(format!("weft-node/{}", env!("CARGO_PKG_VERSION")))
            .with_push_listen_addr_updates(true),
    );

    let limits = connection_limits::Behaviour::new(
        ConnectionLimits::default()
            .with_max_established(Some(config.max_peers))
            .with_max_established_per_peer(Some(2))
            .with_max_pending_incoming(Some(config.max_peers)),
    );

    let sync = request_response::Behaviour::with_codec(
        SyncCodec {
            max_request: config.max_request_bytes,
            max_response: config.max_response_bytes,
        },
        [(protocols.sync.clone(), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(64),
    );

    Ok(Behaviour {
        gate: Gate::new(config.max_peers_per_ip),
        limits,
        gossipsub: gossipsub(config, topics)?,
        kad: Toggle::from(kad),
        identify,
        ping: ping::Behaviour::new(ping::Config::new()),
        sync,
    })
}
