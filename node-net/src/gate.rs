//! The connection gate: bans and the per-IP connection limit, enforced inside the swarm.
//!
//! * **Bans**: a banned peer's connections are denied at every stage the swarm asks about
//!   (outbound dials to it, and established inbound and outbound connections once the noise
//!   handshake has revealed its `PeerId`) until the ban expires (`ban_duration`, 5 min by
//!   default). The swarm task disconnects it when it bans it.
//! * **Per-IP limit**: established connections are counted by remote IP (inbound and
//!   outbound); a pending inbound connection from an IP already at `max_peers_per_ip` (8 by
//!   default) is refused before the handshake, and established ones beyond it are denied.
//! * **Keep-alive**: every connection's handler keeps it open. Gossipsub only keeps its mesh
//!   peers alive, so without this non-mesh peers would be dropped after the 60 s idle timeout
//!   and redialed by discovery in a loop. Dead connections are closed by ping failures.

use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::Instant;

/// Why the gate refused a connection.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// The peer is banned.
    #[error("peer {0} is banned")]
    Banned(PeerId),
    /// Too many connections from one IP address.
    #[error("{ip} already has {limit} connections")]
    IpLimit {
        /// The address.
        ip: IpAddr,
        /// The limit.
        limit: u32,
    },
}

/// The IP address at the start of `addr`, if any.
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// See the module documentation.
#[derive(Debug)]
pub struct Gate {
    max_per_ip: u32,
    by_ip: HashMap<IpAddr, u32>,
    conn_ip: HashMap<ConnectionId, IpAddr>,
    bans: HashMap<PeerId, Instant>,
}

impl Gate {
    /// A gate allowing `max_per_ip` connections per IP.
    pub fn new(max_per_ip: u32) -> Self {
        Gate {
            max_per_ip,
            by_ip: HashMap::new(),
            conn_ip: HashMap::new(),
            bans: HashMap::new(),
        }
    }

    /// Bans `peer` until `until`.
    pub fn ban(&mut self, peer: PeerId, until: Instant) {
        self.bans.insert(peer, until);
    }

    /// Whether `peer` is banned now.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.bans
            .get(peer)
            .is_some_and(|until| *until > Instant::now())
    }

    /// The current bans and when they end.
    pub fn bans(&self) -> impl Iterator<Item = (&PeerId, &Instant)> {
        let now = Instant::now();
        self.bans.iter().filter(move |(_, until)| **until > now)
    }

    /// Drops expired bans and returns the peers that may come back.
    pub fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let expired: Vec<PeerId> = self
            .bans
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in &expired {
            self.bans.remove(p);
        }
        expired
    }

    /// Established connections with `ip`.
    pub fn connections_from(&self, ip: &IpAddr) -> u32 {
        self.by_ip.get(ip).copied().unwrap_or(0)
    }

    fn check_peer(&self, peer: &PeerId) -> Result<(), ConnectionDenied> {
        if self.is_banned(peer) {
            tracing::debug!(%peer, "refusing a connection with a banned peer");
            return Err(ConnectionDenied::new(Denied::Banned(*peer)));
        }
        Ok(())
    }

    fn check_ip(&self, addr: &Multiaddr) -> Result<(), ConnectionDenied> {
        if let Some(ip) = ip_of(addr) {
            if self.connections_from(&ip) >= self.max_per_ip {
                tracing::debug!(%ip, limit = self.max_per_ip, "refusing a connection: per-IP limit");
                return Err(ConnectionDenied::new(Denied::IpLimit {
                    ip,
                    limit: self.max_per_ip,
                }));
            }
        }
        Ok(())
    }
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = KeepAlive;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.check_ip(remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check_peer(&peer)?;
        self.check_ip(remote_addr)?;
        Ok(KeepAlive)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        maybe_peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(peer) = maybe_peer {
            self.check_peer(&peer)?;
        }
        Ok(vec![])
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check_peer(&peer)?;
        self.check_ip(addr)?;
        Ok(KeepAlive)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                if let Some(ip) = ip_of(e.endpoint.get_remote_address()) {
                    *self.by_ip.entry(ip).or_insert(0) += 1;
                    self.conn_ip.insert(e.connection_id, ip);
                }
            }
            FromSwarm::ConnectionClosed(e) => {
                if let Some(ip) = self.conn_ip.remove(&e.connection_id) {
                    if let Some(n) = self.by_ip.get_mut(&ip) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            self.by_ip.remove(&ip);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        e: THandlerOutEvent<Self>,
    ) {
        match e {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// A handler that speaks no protocol and keeps its connection open.
#[derive(Debug, Clone, Copy)]
pub struct KeepAlive;

impl ConnectionHandler for KeepAlive {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        true
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), Infallible>> {
        Poll::Pending
    }

    fn on_connection_event(&mut self, _: ConnectionEvent<DeniedUpgrade, DeniedUpgrade>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bans_expire_and_ips_are_parsed() {
        let mut gate = Gate::new(2);
        let p = PeerId::random();
        let now = Instant::now();
        gate.ban(p, now + Duration::from_secs(60));
        assert!(gate.is_banned(&p));
        assert!(gate.check_peer(&p).is_err());
        assert!(gate.expire(now).is_empty());
        assert_eq!(gate.expire(now + Duration::from_secs(61)), vec![p]);
        assert!(!gate.is_banned(&p));
        let addr: Multiaddr = "/ip4/10.1.2.3/tcp/5".parse().unwrap();
        assert_eq!(ip_of(&addr), Some("10.1.2.3".parse().unwrap()));
        assert!(gate.check_ip(&addr).is_ok());
    }
}
