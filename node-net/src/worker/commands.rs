//! Handle commands: publishing, verdicts, sync requests, punishments, queries and dials.
//!
//! Publishing with no subscribed peers, or the same bytes again (same content id), is `Ok`: the
//! message simply has nowhere new to go. A `Reject` verdict also charges the forwarding peer
//! `InvalidData` (25 points). Requests to and dials of banned peers fail with
//! [`NetError::Banned`] without touching the network.

use super::{split_peer, Worker};
use crate::handle::Command;
use crate::sync::SyncRequest;
use crate::{BannedPeer, Denied, NetError, Offence, PeerInfo, Verdict};
use libp2p::gossipsub::{MessageAcceptance, PublishError};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::DialError;
use libp2p::Multiaddr;
use std::time::Instant;

impl Worker {
    pub(super) fn command(&mut self, command: Command) {
        match command {
            Command::Publish { topic, data, reply } => {
                let size = data.len();
                let hash = self.topics.ident(topic).clone();
                let result = match self.swarm.behaviour_mut().gossipsub.publish(hash, data) {
                    Ok(_) => Ok(()),
                    Err(PublishError::NoPeersSubscribedToTopic) => {
                        tracing::debug!(?topic, "published with no subscribed peers");
                        Ok(())
                    }
                    Err(PublishError::Duplicate) => {
                        tracing::debug!(?topic, "message already published");
                        Ok(())
                    }
                    Err(PublishError::MessageTooLarge) => Err(NetError::TooLarge {
                        size,
                        limit: self.max_gossip_bytes,
                    }),
                    Err(e) => Err(NetError::Publish(e.to_string())),
                };
                let _ = reply.send(result);
            }
            Command::Validation { id, from, verdict } => {
                let acceptance = match verdict {
                    Verdict::Accept => MessageAcceptance::Accept,
                    Verdict::Ignore => MessageAcceptance::Ignore,
                    Verdict::Reject => MessageAcceptance::Reject,
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &from, acceptance);
                if verdict == Verdict::Reject {
                    self.punish(from, Offence::InvalidData);
                }
            }
            Command::Request { peer, data, reply } => {
                if self.is_banned(&peer) {
                    let _ = reply.send(Err(NetError::Banned(peer)));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_request(&peer, SyncRequest::Data(data));
                self.outbound.insert(id, (peer, reply));
            }
            Command::Punish { peer, offence } => self.punish(peer, offence),
            Command::Peers(reply) => {
                let now = Instant::now();
                let peers = self
                    .peers
                    .iter()
                    .map(|(id, c)| PeerInfo {
                        peer_id: *id,
                        addresses: c.conns.iter().map(|(_, a)| a.clone()).collect(),
                        inbound: c.inbound,
                        connected_for: now.saturating_duration_since(c.since),
                        score: self.scores.score(id, now).round() as i32,
                    })
                    .collect();
                let _ = reply.send(Ok(peers));
            }
            Command::Banned(reply) => {
                let now = Instant::now();
                let bans = self
                    .swarm
                    .behaviour()
                    .gate
                    .bans()
                    .map(|(peer, until)| BannedPeer {
                        peer_id: *peer,
                        remaining: until.saturating_duration_since(now),
                    })
                    .collect();
                let _ = reply.send(Ok(bans));
            }
            Command::ListenAddrs(reply) => {
                let _ = reply.send(Ok(self.swarm.listeners().cloned().collect()));
            }
            Command::MeshPeers(topic, reply) => {
                let hash = self.topics.ident(topic).hash();
                let mesh = self
                    .swarm
                    .behaviour()
                    .gossipsub
                    .mesh_peers(&hash)
                    .copied()
                    .collect();
                let _ = reply.send(Ok(mesh));
            }
            Command::AddPeer { addr, reply } => {
                let _ = reply.send(self.add_peer(addr));
            }
        }
    }

    pub(super) fn add_peer(&mut self, addr: Multiaddr) -> Result<(), NetError> {
        let (base, peer) = split_peer(&addr);
        let opts = match peer {
            Some(peer) => {
                if self.is_banned(&peer) {
                    return Err(NetError::Banned(peer));
                }
                if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                    kad.add_address(&peer, base.clone());
                }
                DialOpts::peer_id(peer)
                    .addresses(vec![base])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build()
            }
            None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        match self.swarm.dial(opts) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => Ok(()),
            Err(DialError::Denied { cause }) => match cause.downcast_ref::<Denied>() {
                Some(Denied::Banned(peer)) => Err(NetError::Banned(*peer)),
                _ => Err(NetError::Dial {
                    addr,
                    reason: cause.to_string(),
                }),
            },
            Err(e) => Err(NetError::Dial {
                addr,
                reason: e.to_string(),
            }),
        }
    }
}
