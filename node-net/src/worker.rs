//! The swarm task: startup ([`spawn`]) and the event loop.
//!
//! Startup probes every fixed listen port (a plain bind without `SO_REUSEPORT`, so a port held
//! by another node is [`NetError::Listen`] instead of a silently shared port), binds the
//! listeners and waits up to 10 s for each to report its address (port 0 resolved), then
//! dials the bootnodes and starts the loop.
//!
//! The loop serves handle commands, sends the node's sync responses (an unanswered request is
//! dropped after `request_timeout`), and ticks once a second: ban expiry and the gossipsub
//! invalid-message check ([`GOSSIP_SCORE_BAN`]) every tick; every 5 s
//! the bootnodes that are not connected are redialed (a restarted bootnode is rejoined) and,
//! with discovery on and below `max_peers`, up to 8 peers from the Kademlia routing table are
//! dialed; every 10 s idle score and rate-limit entries are pruned.
//!
//! Events go to the node through a bounded queue of [`EVENT_QUEUE`] = 4096 entries; the swarm
//! never waits on it. If the node falls that far behind, gossip is reported `Ignore` and
//! requests are refused rather than stalling the network (a warning is logged).

mod commands;
mod events;

use crate::behaviour::{self, Behaviour, Topics, GOSSIP_SCORE_BAN};
use crate::handle::{Command, NetworkHandle, Reply};
use crate::scoring::{RateLimiter, ScoreTable};
use crate::{NetError, NetworkConfig, NetworkEvent, Offence};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Capacity of the event queue to the node.
pub const EVENT_QUEUE: usize = 4096;
/// Connections with no open streams (and no keep-alive) close after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bootnodes are redialed and discovery runs every this many seconds.
const REDIAL_EVERY_TICKS: u64 = 5;
/// Idle score and rate-limit entries are pruned every this many seconds.
const PRUNE_EVERY_TICKS: u64 = 10;
/// Below this many connected peers a Kademlia bootstrap runs every round.
const DISCOVERY_LOW_WATER: usize = 8;
/// Discovered peers dialed per round.
const DIALS_PER_ROUND: usize = 8;

type PendingReply = BoxFuture<'static, (ResponseChannel<Vec<u8>>, Option<Vec<u8>>)>;

struct Connected {
    since: Instant,
    inbound: bool,
    conns: Vec<(ConnectionId, Multiaddr)>,
}

struct Worker {
    swarm: Swarm<Behaviour>,
    events: mpsc::Sender<NetworkEvent>,
    topics: Topics,
    bootnodes: Vec<(PeerId, Multiaddr)>,
    identify_version: String,
    kad_protocol: StreamProtocol,
    max_peers: u32,
    max_gossip_bytes: usize,
    ban_duration: Duration,
    request_timeout: Duration,
    discovery: bool,
    scores: ScoreTable,
    limiter: RateLimiter,
    peers: HashMap<PeerId, Connected>,
    outbound: HashMap<OutboundRequestId, (PeerId, Reply<Vec<u8>>)>,
    replies: FuturesUnordered<PendingReply>,
}

/// Splits `addr` into its address and `/p2p/<peer id>` suffix.
fn split_peer(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut base = addr.clone();
    match base.pop() {
        Some(Protocol::P2p(peer)) => (base, Some(peer)),
        _ => (addr.clone(), None),
    }
}

/// Binds fixed ports without `SO_REUSEPORT` to see whether they are free.
fn probe_port(addr: &Multiaddr) -> Result<(), NetError> {
    let mut parts = addr.iter();
    let ip = match parts.next() {
        Some(Protocol::Ip4(ip)) => IpAddr::V4(ip),
        Some(Protocol::Ip6(ip)) => IpAddr::V6(ip),
        _ => return Ok(()),
    };
    let port = match parts.next() {
        Some(Protocol::Tcp(port)) if port != 0 => port,
        _ => return Ok(()),
    };
    std::net::TcpListener::bind(SocketAddr::new(ip, port))
        .map(drop)
        .map_err(|e| NetError::Listen {
            addr: addr.clone(),
            reason: format!("port {port} is in use or not bindable: {e}"),
        })
}

async fn listen(
    swarm: &mut Swarm<Behaviour>,
    addrs: &[Multiaddr],
) -> Result<Vec<Multiaddr>, NetError> {
    for addr in addrs {
        probe_port(addr)?;
    }
    let mut pending: HashMap<ListenerId, Multiaddr> = HashMap::new();
    for addr in addrs {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        pending.insert(id, addr.clone());
    }
    let mut bound = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    while !pending.is_empty() {
        let event = tokio::select! {
            () = &mut deadline => {
                let addr = pending.into_values().next().unwrap_or_else(Multiaddr::empty);
                return Err(NetError::Listen { addr, reason: "no address reported within 10 s".into() });
            }
            event = swarm.select_next_some() => event,
        };
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                pending.remove(&listener_id);
                bound.push(address);
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                if let Some(addr) = pending.remove(&listener_id) {
                    return Err(NetError::Listen {
                        addr,
                        reason: error.to_string(),
                    });
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(addr) = pending.remove(&listener_id) {
                    let reason = reason
                        .err()
                        .map_or_else(|| "closed".into(), |e| e.to_string());
                    return Err(NetError::Listen { addr, reason });
                }
            }
            _ => {}
        }
    }
    Ok(bound)
}

/// Starts the network. Returns once every listen address is bound (ports resolved), with the
/// bootnodes being dialed.
pub async fn spawn(
    config: NetworkConfig,
) -> Result<(NetworkHandle, mpsc::Receiver<NetworkEvent>), NetError> {
    let protocols = config.protocols()?;
    let topics = Topics::new(&protocols.topic_prefix);
    let local = config.key.public().to_peer_id();
    let mut bootnodes = Vec::new();
    for addr in &config.bootnodes {
        match split_peer(addr) {
            (base, Some(peer)) if peer != local => bootnodes.push((peer, base)),
            (_, Some(_)) => tracing::debug!(%addr, "skipping ourselves among the bootnodes"),
            (_, None) => {
                return Err(NetError::Config(format!(
                    "bootnode {addr} does not end with /p2p/<peer id>"
                )))
            }
        }
    }
    let behaviour = behaviour::build(&config, &protocols, &topics)?;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();

    let bound = listen(&mut swarm, &config.listen).await?;
    for addr in &config.public {
        swarm.add_external_address(addr.clone());
    }
    for (peer, addr) in &bootnodes {
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            kad.add_address(peer, addr.clone());
        }
    }
    tracing::info!(peer = %local, listen = ?bound, public = ?config.public, "node network listening");

    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let handle = NetworkHandle {
        commands: cmd_tx,
        local_peer_id: local,
        max_gossip_bytes: config.max_gossip_bytes,
        max_request_bytes: config.max_request_bytes,
        max_response_bytes: config.max_response_bytes,
    };
    let mut worker = Worker {
        swarm,
        events: ev_tx,
        topics,
        bootnodes,
        identify_version: protocols.identify,
        kad_protocol: protocols.kad,
        max_peers: config.max_peers,
        max_gossip_bytes: config.max_gossip_bytes,
        ban_duration: config.ban_duration,
        request_timeout: config.request_timeout,
        discovery: config.discovery,
        scores: ScoreTable::default(),
        limiter: RateLimiter::new(config.max_requests_per_sec),
        peers: HashMap::new(),
        outbound: HashMap::new(),
        replies: FuturesUnordered::new(),
    };
    worker.redial_bootnodes();
    tokio::spawn(worker.run(cmd_rx));
    Ok((handle, ev_rx))
}

impl Worker {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                Some((channel, response)) = self.replies.next(), if !self.replies.is_empty() => {
                    match response {
                        Some(bytes) => {
                            if self.swarm.behaviour_mut().sync.send_response(channel, bytes).is_err() {
                                tracing::debug!("sync stream closed before the response was sent");
                            }
                        }
                        None => drop(channel),
                    }
                }
                _ = tick.tick() => {
                    ticks += 1;
                    self.tick(ticks);
                }
                event = self.swarm.select_next_some() => self.swarm_event(event),
            }
        }
        tracing::info!("node network stopped: every handle was dropped");
    }

    fn emit(&self, event: NetworkEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(event)) => {
                tracing::warn!(?event, "network event queue full; dropping the event");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn is_banned(&self, peer: &PeerId) -> bool {
        self.swarm.behaviour().gate.is_banned(peer)
    }

    fn punish(&mut self, peer: PeerId, offence: Offence) {
        if peer == *self.swarm.local_peer_id() || self.is_banned(&peer) {
            return;
        }
        let now = Instant::now();
        if self.scores.punish(peer, offence, now) {
            self.ban(peer, &format!("{offence:?}"));
        } else {
            let score = self.scores.score(&peer, now);
            tracing::debug!(%peer, ?offence, score, "peer punished");
        }
    }

    fn ban(&mut self, peer: PeerId, reason: &str) {
        tracing::warn!(%peer, reason, ban = ?self.ban_duration, "banning peer");
        self.swarm
            .behaviour_mut()
            .gate
            .ban(peer, Instant::now() + self.ban_duration);
        let _ = self.swarm.disconnect_peer_id(peer);
        self.emit(NetworkEvent::PeerBanned(peer));
    }

    /// Bans the peers whose gossipsub score shows a burst of invalid messages.
    fn check_gossip_scores(&mut self) {
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let offenders: Vec<PeerId> = self
            .peers
            .keys()
            .filter(|p| {
                gossipsub
                    .peer_score(p)
                    .is_some_and(|s| s <= GOSSIP_SCORE_BAN)
            })
            .copied()
            .collect();
        for peer in offenders {
            if !self.is_banned(&peer) {
                self.ban(peer, "invalid gossip messages");
            }
        }
    }

    fn dial(&mut self, opts: DialOpts) {
        if let Err(e) = self.swarm.dial(opts) {
            if !matches!(e, DialError::DialPeerConditionFalse(_)) {
                tracing::debug!(error = %e, "dial failed");
            }
        }
    }

    fn redial_bootnodes(&mut self) {
        for (peer, addr) in self.bootnodes.clone() {
            if self.swarm.is_connected(&peer) || self.is_banned(&peer) {
                continue;
            }
            tracing::debug!(%peer, %addr, "dialing bootnode");
            self.dial(
                DialOpts::peer_id(peer)
                    .addresses(vec![addr])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
            );
        }
    }

    fn below_peer_limit(&self) -> bool {
        (self.swarm.connected_peers().count() as u64) < u64::from(self.max_peers)
    }

    fn dial_discovered(&mut self, peer: PeerId) {
        if self.discovery
            && self.below_peer_limit()
            && peer != *self.swarm.local_peer_id()
            && !self.swarm.is_connected(&peer)
            && !self.is_banned(&peer)
        {
            tracing::debug!(%peer, "dialing discovered peer");
            self.dial(
                DialOpts::peer_id(peer)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
            );
        }
    }

    fn discover(&mut self) {
        if !self.discovery || !self.below_peer_limit() {
            return;
        }
        let mut known: Vec<PeerId> = Vec::new();
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            for bucket in kad.kbuckets() {
                known.extend(bucket.iter().map(|e| *e.node.key.preimage()));
            }
        }
        let candidates: Vec<PeerId> = known
            .into_iter()
            .filter(|p| !self.swarm.is_connected(p) && !self.is_banned(p))
            .take(DIALS_PER_ROUND)
            .collect();
        for peer in candidates {
            self.dial_discovered(peer);
        }
    }

    fn bootstrap(&mut self) {
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            // Fails only with an empty routing table; the next round retries.
            let _ = kad.bootstrap();
        }
    }

    fn tick(&mut self, ticks: u64) {
        let now = Instant::now();
        for peer in self.swarm.behaviour_mut().gate.expire(now) {
            tracing::info!(%peer, "ban expired");
        }
        self.check_gossip_scores();
        if ticks.checked_rem(REDIAL_EVERY_TICKS) == Some(0) {
            self.redial_bootnodes();
            if self.swarm.connected_peers().count() < DISCOVERY_LOW_WATER {
                self.bootstrap();
            }
            self.discover();
        }
        if ticks.checked_rem(PRUNE_EVERY_TICKS) == Some(0) {
            self.scores.prune(now);
            self.limiter.prune(now);
        }
    }
}
