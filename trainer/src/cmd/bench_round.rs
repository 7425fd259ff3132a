//! The replica round over libp2p on loopback, for `weft-trainer bench-replicas`: what one
//! round of `R` replicas costs a trainer in time and bytes, next to the step it follows.
//!
//! `R` replicas, each with its own libp2p peer on 127.0.0.1 (noise, yamux, request-response:
//! the trainer's network stack), its own [`ReplicaDesk`] served the way a trainer serves it,
//! and the trainer's own side of the round ([`ReplicaExchange::round`]: publish, ask every
//! other replica with the 5 → 200 ms backoff, verify every seal, decide). Every round the
//! replicas start together (a barrier, as after a backward pass of equal length) with an
//! update shaped like the given stage's parameters (values drawn from a normal distribution
//! ×10⁻³, through the codec). Measured per round and replica: the wall time from the start
//! of its round to its decision, and the bytes its requests and the answers it received
//! carried (application payload; the noise and yamux framing, a few bytes per frame, is not
//! counted). The first rounds (connection set-up) are not measured.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tch::Tensor;
use weft_trainer::ml::aggregate::UpdateCodec;
use weft_trainer::net::desk::Desks;
use weft_trainer::net::replica_desk::ReplicaDesk;
use weft_trainer::net::store::StepAux;
use weft_trainer::net::topology::StagePeer;
use weft_trainer::net::wire::Limits;
use weft_trainer::stage::replicas::{NetworkTransport, ReplicaExchange, Transport};

/// Rounds run before measuring (the peers dial each other in the first).
const WARMUP_ROUNDS: u64 = 3;

/// What a round cost, mean over replicas and measured rounds.
pub struct RoundCost {
    /// Seconds from a replica's publish to its decision.
    pub seconds: f64,
    /// Bytes a replica's requests and the answers it got carried.
    pub bytes: f64,
    /// Whether every replica's every round included all `R`.
    pub complete: bool,
}

/// A [`Transport`] that counts what crosses it.
struct Counted {
    inner: NetworkTransport,
    bytes: AtomicU64,
}

impl Transport for Counted {
    fn request(
        &self,
        peer: &StagePeer,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let sent = bytes.len() as u64;
        let answer = self.inner.request(peer, bytes, timeout)?;
        self.bytes
            .fetch_add(sent + answer.len() as u64, Ordering::Relaxed);
        Ok(answer)
    }
}

/// `r` replicas of one stage with parameters shaped `shapes`, `rounds` measured rounds of
/// `codec` updates over loopback (see the module docs).
pub fn rounds_on_loopback(
    r: usize,
    shapes: &[Vec<i64>],
    codec: UpdateCodec,
    rounds: u64,
) -> anyhow::Result<RoundCost> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let limits = Limits {
        max_bytes: 256 * 1024 * 1024,
        ..Default::default()
    };
    let listen: weft_p2p::Address = "/ip4/127.0.0.1/tcp/0".parse()?;
    let mut nets = Vec::new();
    let mut keys = Vec::new();
    for i in 0..r {
        let key = weft_p2p::keypair_from_seed([u8::try_from(i + 1)?; 32])?;
        let cfg = weft_p2p::Config {
            listen: vec![listen.clone()],
            ..Default::default()
        };
        nets.push(runtime.block_on(weft_p2p::spawn(key.clone(), cfg))?);
        keys.push(key);
    }
    let peers: Vec<StagePeer> = nets
        .iter()
        .map(|(net, _)| StagePeer {
            peer_id: net.local_peer_id(),
            addrs: net.listen_addrs().to_vec(),
        })
        .collect();
    let mut exchanges = Vec::new();
    for (i, ((net, inbound), key)) in nets.into_iter().zip(keys).enumerate() {
        let others: Vec<(u16, StagePeer)> = peers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, p)| Ok((u16::try_from(j)?, p.clone())))
            .collect::<anyhow::Result<_>>()?;
        let desk = Arc::new(ReplicaDesk::new(0, 0, others));
        let desks: Desks = vec![desk.clone()];
        runtime.spawn(weft_trainer::net::reveal_server::serve_reveals(
            inbound,
            desks,
            limits,
            std::future::pending(),
        ));
        let transport = Arc::new(Counted {
            inner: NetworkTransport {
                network: net,
                runtime: runtime.handle().clone(),
            },
            bytes: AtomicU64::new(0),
        });
        exchanges.push((
            ReplicaExchange {
                desk,
                transport: transport.clone(),
                deadline: Duration::from_secs(30),
                codec,
                limits,
                identity: key,
            },
            transport,
        ));
    }
    let barrier = Barrier::new(r);
    let results: Vec<anyhow::Result<(f64, u64, bool)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = exchanges
            .iter()
            .enumerate()
            .map(|(i, (ex, counted))| {
                let barrier = &barrier;
                scope.spawn(move || -> anyhow::Result<(f64, u64, bool)> {
                    let me = u16::try_from(i)?;
                    let (mut seconds, mut bytes, mut complete) = (0.0, 0, true);
                    for step in 0..WARMUP_ROUNDS + rounds {
                        let raw: Vec<Tensor> = shapes
                            .iter()
                            .map(|s| Tensor::randn(s.as_slice(), tch::kind::FLOAT_CPU) * 1e-3)
                            .collect();
                        let sent = codec.round_trip(&raw)?;
                        barrier.wait();
                        let before = counted.bytes.load(Ordering::Relaxed);
                        let t0 = Instant::now();
                        let round = ex.round(0, 0, me, step, &sent, &mut StepAux::default())?;
                        if step >= WARMUP_ROUNDS {
                            seconds += t0.elapsed().as_secs_f64();
                            bytes += counted.bytes.load(Ordering::Relaxed) - before;
                            complete &= round.included.count() as usize == r;
                        }
                    }
                    Ok((seconds, bytes, complete))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a replica's thread panicked")))
            })
            .collect()
    });
    let (mut seconds, mut bytes, mut complete) = (0.0, 0u64, true);
    for res in results {
        let (s, b, c) = res?;
        seconds += s;
        bytes += b;
        complete &= c;
    }
    let n = (r as u64 * rounds.max(1)) as f64;
    Ok(RoundCost {
        seconds: seconds / n,
        bytes: bytes as f64 / n,
        complete,
    })
}
