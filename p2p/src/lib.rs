//! # weft-p2p
//!
//! Request-response messaging between Weft processes over libp2p: pipeline neighbours send each
//! other activations and activation gradients, auditors fetch reveals from trainers.
//!
//! * **Transport**: TCP, authenticated and encrypted with noise (XX handshake, ed25519
//!   identities), multiplexed with yamux. A peer is addressed by its `PeerId` (the hash of its
//!   public key, declared on chain) and reached at its multiaddresses.
//! * **Protocol** `/weft/msg/1`: one request and one response per yamux stream. Each is a frame
//!   `u32 little-endian length ‖ bytes`. The length is checked against the configured limit
//!   *before* anything is allocated, so an oversized or lying frame costs the receiver nothing
//!   and fails the stream; the sender sees an error.
//! * **Payloads** are opaque bytes here; callers encode them with SCALE (the trainer's tensor
//!   frames carry dtype and shape and are validated on receipt).
//!
//! [`spawn`] starts the swarm on a tokio task and returns a [`Network`] handle for outbound
//! requests and a stream of [`InboundRequest`]s, each answered through its `reply` sender.

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identity, noise, tcp, yamux, Multiaddr, StreamProtocol, Swarm};
use std::collections::HashMap;
use std::io;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr as Address, PeerId};

/// The protocol name.
pub const PROTOCOL: &str = "/weft/msg/1";

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The network task has stopped.
    #[error("the network task has stopped")]
    Stopped,
    /// The peer could not be reached or the stream failed.
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The peer did not answer (it dropped the request).
    #[error("{0} sent no response")]
    NoResponse(PeerId),
    /// Setting up the transport failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The listen address is not usable.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A message is larger than the limit.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Network settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on, e.g. `/ip4/127.0.0.1/tcp/0`.
    pub listen: Vec<Multiaddr>,
    /// Largest request or response accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// How long a request may take (including transfer).
    pub request_timeout: Duration,
    /// Idle connections are closed after this.
    pub idle_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![],
            max_message_bytes: 256 * 1024 * 1024,
            request_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Length-prefixed frames, size-limited on both read and write.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    limit: usize,
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, limit: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {limit}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    data: &[u8],
    limit: usize,
) -> io::Result<()> {
    if data.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds {limit}", data.len()),
        ));
    }
    io.write_all(&(data.len() as u32).to_le_bytes()).await?;
    io.write_all(data).await?;
    io.close().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_frame(io, self.limit).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_frame(io, self.limit).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        write_frame(io, &req, self.limit).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        write_frame(io, &res, self.limit).await
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    messages: request_response::Behaviour<FrameCodec>,
}

/// A request from a peer, to be answered through `reply`. Dropping `reply` without sending
/// makes the peer's request fail.
#[derive(Debug)]
pub struct InboundRequest {
    /// Who asked (authenticated by the noise handshake).
    pub peer: PeerId,
    /// The request bytes.
    pub request: Vec<u8>,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Vec<u8>>,
}

#[derive(Debug)]
enum Command {
    Request {
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, NetError>>,
    },
}

/// A handle to the running network.
#[derive(Clone, Debug)]
pub struct Network {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
    listen_addrs: Vec<Multiaddr>,
    max_message_bytes: usize,
}

impl Network {
    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The addresses it listens on (with resolved ports).
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// Sends `request` to `peer` (dialing `addresses` if not connected) and waits for the
    /// response.
    pub async fn request(
        &self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        if request.len() > self.max_message_bytes {
            return Err(NetError::TooLarge {
                size: request.len(),
                limit: self.max_message_bytes,
            });
        }
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Request {
                peer,
                addresses,
                request,
                reply,
            })
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }
}

type PendingReply = BoxFuture<'static, (ResponseChannel<Vec<u8>>, Option<Vec<u8>>)>;

/// Starts the network with identity `keypair`. Returns once it listens on every address of
/// `config.listen`.
pub async fn spawn(
    keypair: identity::Keypair,
    config: Config,
) -> Result<(Network, mpsc::Receiver<InboundRequest>), NetError> {
    let local_peer_id = keypair.public().to_peer_id();
    let codec = FrameCodec {
        limit: config.max_message_bytes,
    };
    let rr_config = request_response::Config::default()
        .with_request_timeout(config.request_timeout)
        .with_max_concurrent_streams(256);
    let idle = config.idle_timeout;
    let mut swarm: Swarm<Behaviour> = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_behaviour(|_| Behaviour {
            messages: request_response::Behaviour::with_codec(
                codec,
                [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
                rr_config,
            ),
        })
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();

    let mut listen_addrs = Vec::new();
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    while listen_addrs.len() < config.listen.len() {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => listen_addrs.push(address),
            SwarmEvent::ListenerError { error, .. } => {
                return Err(NetError::Transport(error.to_string()));
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                let addr = addresses
                    .into_iter()
                    .next()
                    .unwrap_or_else(Multiaddr::empty);
                let reason = match reason {
                    Ok(()) => "closed".to_string(),
                    Err(e) => e.to_string(),
                };
                return Err(NetError::Listen { addr, reason });
            }
            _ => {}
        }
    }
    tracing::info!(peer = %local_peer_id, addrs = ?listen_addrs, "p2p listening");

    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let (in_tx, in_rx) = mpsc::channel(256);
    tokio::spawn(run(swarm, cmd_rx, in_tx));
    Ok((
        Network {
            commands: cmd_tx,
            local_peer_id,
            listen_addrs,
            max_message_bytes: config.max_message_bytes,
        },
        in_rx,
    ))
}

type PendingRequests =
    HashMap<OutboundRequestId, (PeerId, oneshot::Sender<Result<Vec<u8>, NetError>>)>;

async fn run(
    mut swarm: Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    inbound: mpsc::Sender<InboundRequest>,
) {
    let mut outbound: PendingRequests = HashMap::new();
    let mut replies: FuturesUnordered<PendingReply> = FuturesUnordered::new();
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(Command::Request { peer, addresses, request, reply }) => {
                    let id = swarm.behaviour_mut().messages.send_request_with_addresses(&peer, request, addresses);
                    outbound.insert(id, (peer, reply));
                }
                None => break,
            },
            Some((channel, response)) = replies.next(), if !replies.is_empty() => {
                match response {
                    Some(bytes) => {
                        if swarm.behaviour_mut().messages.send_response(channel, bytes).is_err() {
                            tracing::debug!("response channel closed before the response was sent");
                        }
                    }
                    // The handler dropped the request: the stream closes and the peer sees a failure.
                    None => drop(channel),
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(BehaviourEvent::Messages(ev)) => match ev {
                    request_response::Event::Message { peer, message, .. } => match message {
                        request_response::Message::Request { request, channel, .. } => {
                            let (reply, rx) = oneshot::channel();
                            if inbound.send(InboundRequest { peer, request, reply }).await.is_err() {
                                break;
                            }
                            replies.push(rx.map(move |r| (channel, r.ok())).boxed());
                        }
                        request_response::Message::Response { request_id, response } => {
                            if let Some((_, reply)) = outbound.remove(&request_id) {
                                let _ = reply.send(Ok(response));
                            }
                        }
                    },
                    request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                        if let Some((_, reply)) = outbound.remove(&request_id) {
                            let _ = reply.send(Err(NetError::Request { peer, reason: error.to_string() }));
                        }
                    }
                    request_response::Event::InboundFailure { peer, error, .. } => {
                        tracing::debug!(%peer, %error, "inbound request failed");
                    }
                    request_response::Event::ResponseSent { .. } => {}
                },
                SwarmEvent::ConnectionEstablished { peer_id, .. } => tracing::debug!(peer = %peer_id, "connected"),
                SwarmEvent::ConnectionClosed { peer_id, .. } => tracing::debug!(peer = %peer_id, "disconnected"),
                _ => {}
            },
        }
    }
}

/// An ed25519 identity derived from 32 secret bytes (e.g. stored in the trainer's data dir).
pub fn keypair_from_seed(seed: [u8; 32]) -> Result<identity::Keypair, NetError> {
    let mut seed = seed;
    identity::Keypair::ed25519_from_bytes(&mut seed).map_err(|e| NetError::Transport(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn node(seed: u8, limit: usize) -> (Network, mpsc::Receiver<InboundRequest>) {
        let config = Config {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            max_message_bytes: limit,
            request_timeout: Duration::from_secs(10),
            ..Config::default()
        };
        spawn(keypair_from_seed([seed; 32]).unwrap(), config)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn request_response_roundtrip_and_identity() {
        let (a, _a_in) = node(1, 1 << 20).await;
        let (b, mut b_in) = node(2, 1 << 20).await;
        let a_id = a.local_peer_id();
        tokio::spawn(async move {
            while let Some(req) = b_in.recv().await {
                assert_eq!(
                    req.peer, a_id,
                    "the noise handshake authenticates the sender"
                );
                let mut out = req.request.clone();
                out.reverse();
                let _ = req.reply.send(out);
            }
        });
        let resp = a
            .request(b.local_peer_id(), b.listen_addrs().to_vec(), vec![1, 2, 3])
            .await
            .unwrap();
        assert_eq!(resp, vec![3, 2, 1]);
        // A large message within the limit.
        let big = vec![7u8; 900_000];
        let resp = a
            .request(b.local_peer_id(), vec![], big.clone())
            .await
            .unwrap();
        assert_eq!(resp.len(), big.len());
    }

    #[tokio::test]
    async fn oversized_and_dropped_requests_fail_cleanly() {
        let (a, _a_in) = node(3, 1 << 20).await;
        // b accepts only 1 KiB.
        let (b, mut b_in) = node(4, 1024).await;
        tokio::spawn(async move {
            while let Some(req) = b_in.recv().await {
                if req.request.first() == Some(&0) {
                    drop(req.reply); // refuse
                } else {
                    let _ = req.reply.send(b"ok".to_vec());
                }
            }
        });
        let addrs = b.listen_addrs().to_vec();
        let err = a
            .request(b.local_peer_id(), addrs.clone(), vec![1u8; 4096])
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::Request { .. }), "{err}");
        let err = a
            .request(b.local_peer_id(), addrs.clone(), vec![0u8; 10])
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::Request { .. }), "{err}");
        // The connection still works afterwards.
        assert_eq!(
            a.request(b.local_peer_id(), addrs, vec![1u8; 10])
                .await
                .unwrap(),
            b"ok".to_vec()
        );
        // The sender refuses to send beyond its own limit.
        let err = b
            .request(
                a.local_peer_id(),
                a.listen_addrs().to_vec(),
                vec![0u8; 2048],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::TooLarge { .. }));
    }

    #[tokio::test]
    async fn unreachable_peer_is_an_error() {
        let (a, _a_in) = node(5, 1024).await;
        let stranger = keypair_from_seed([6; 32]).unwrap().public().to_peer_id();
        let err = a
            .request(
                stranger,
                vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
                vec![1],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::Request { .. }), "{err}");
    }
}
