//! Swarm events: gossip to validate, sync requests and responses, connections, identify and
//! Kademlia discovery, ping failures.
//!
//! * Gossip is handed to the node as [`NetworkEvent::Gossip`]; if the event queue is full it is
//!   reported `Ignore` (not forwarded, no penalty).
//! * Inbound sync requests pass the per-peer rate limit (else `Spam`, 5 points, and dropped) and
//!   the size limit (else `Oversized`, 40 points, and refused); the node's answer is awaited for
//!   at most `request_timeout`.
//! * An oversized response costs the responder `Oversized` and fails the request with
//!   [`NetError::TooLarge`].
//! * identify: a peer announcing another protocol version (another chain) is disconnected;
//!   otherwise its listen addresses (except unspecified ones) go into Kademlia.
//! * A failed ping closes that connection.

use super::{split_peer, Connected, Worker};
use crate::behaviour::BehaviourEvent;
use crate::handle::ReplyHandle;
use crate::sync::{too_large, SyncRequest};
use crate::{NetError, NetworkEvent, Offence};
use futures::FutureExt;
use libp2p::core::ConnectedPoint;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::request_response::{self, OutboundFailure};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{identify, kad, ping, PeerId};
use std::time::Instant;

impl Worker {
    pub(super) fn swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.gossip_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.sync_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.identified(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, ..
            })) => self.dial_discovered(peer),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(error),
            })) => {
                tracing::debug!(%peer, %error, "ping failed; closing the connection");
                self.swarm.close_connection(connection);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => self.connected(peer_id, connection_id, &endpoint, num_established.get()),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, cause = ?cause, "connection closed");
                if let Some(c) = self.peers.get_mut(&peer_id) {
                    c.conns.retain(|(id, _)| *id != connection_id);
                }
                if num_established == 0 && self.peers.remove(&peer_id).is_some() {
                    tracing::info!(peer = %peer_id, "peer disconnected");
                    self.emit(NetworkEvent::PeerDisconnected(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, %error, "outgoing connection failed");
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(from = %send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                tracing::warn!(?addresses, ?reason, "listener closed");
            }
            _ => {}
        }
    }

    pub(super) fn connected(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        endpoint: &ConnectedPoint,
        n: u32,
    ) {
        let addr = endpoint.get_remote_address().clone();
        let entry = self.peers.entry(peer).or_insert_with(|| Connected {
            since: Instant::now(),
            inbound: endpoint.is_listener(),
            conns: Vec::new(),
        });
        entry.conns.push((id, addr.clone()));
        if n == 1 {
            tracing::info!(%peer, %addr, "peer connected");
            self.emit(NetworkEvent::PeerConnected(peer));
            if self.bootnodes.iter().any(|(p, _)| *p == peer) {
                // Learn the network from the bootnode at once rather than at the next round.
                self.bootstrap();
            }
        }
    }

    pub(super) fn identified(&mut self, peer: PeerId, info: identify::Info) {
        if info.protocol_version != self.identify_version {
            tracing::info!(%peer, theirs = %info.protocol_version, ours = %self.identify_version, "peer of another chain; disconnecting");
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        if !info.protocols.contains(&self.kad_protocol) {
            return;
        }
        for addr in info.listen_addrs {
            let (base, _) = split_peer(&addr);
            if crate::gate::ip_of(&base).is_some_and(|ip| ip.is_unspecified()) {
                continue;
            }
            if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                kad.add_address(&peer, base);
            }
        }
    }

    pub(super) fn gossip_event(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let verdict = match self.topics.topic_of(&message.topic) {
                    None => Some(MessageAcceptance::Ignore),
                    Some(topic) => {
                        let event = NetworkEvent::Gossip {
                            topic,
                            from: propagation_source,
                            id: message_id.clone(),
                            data: message.data,
                        };
                        (!self.emit(event)).then_some(MessageAcceptance::Ignore)
                    }
                };
                if let Some(acceptance) = verdict {
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            acceptance,
                        );
                }
            }
            gossipsub::Event::GossipsubNotSupported { peer_id } => {
                tracing::debug!(peer = %peer_id, "peer does not speak gossipsub; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer_id);
            }
            _ => {}
        }
    }

    pub(super) fn sync_event(&mut self, event: request_response::Event<SyncRequest, Vec<u8>>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let request = match request {
                        SyncRequest::Data(data) => data,
                        SyncRequest::TooLarge(t) => {
                            tracing::debug!(%peer, size = t.size, limit = t.limit, "oversized sync request refused");
                            self.punish(peer, Offence::Oversized);
                            return;
                        }
                    };
                    if !self.limiter.allow(peer, Instant::now()) {
                        tracing::debug!(%peer, "sync request over the rate limit; dropped");
                        self.punish(peer, Offence::Spam);
                        return;
                    }
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let event = NetworkEvent::Request {
                        peer,
                        data: request,
                        reply: ReplyHandle { tx, peer },
                    };
                    if self.emit(event) {
                        let timeout = self.request_timeout;
                        self.replies.push(
                            tokio::time::timeout(timeout, rx)
                                .map(move |r| (channel, r.ok().and_then(Result::ok)))
                                .boxed(),
                        );
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some((_, reply)) = self.outbound.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let result = match &error {
                    OutboundFailure::Io(e) => too_large(e).map(|t| {
                        self.punish(peer, Offence::Oversized);
                        NetError::TooLarge {
                            size: t.size,
                            limit: t.limit,
                        }
                    }),
                    _ => None,
                };
                let err = result.unwrap_or_else(|| NetError::Request {
                    peer,
                    reason: error.to_string(),
                });
                tracing::debug!(%peer, error = %err, "sync request failed");
                if let Some((_, reply)) = self.outbound.remove(&request_id) {
                    let _ = reply.send(Err(err));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound sync request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}
