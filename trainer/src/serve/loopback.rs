//! A serving pipeline on loopback, off chain: one [`InferenceDesk`] per stage holder, each
//! on its own libp2p peer with only its stage's weights (stored and loaded through a real
//! tensor store as a committed step), and a [`Router`] driving them. The inference benchmark
//! (`weft-trainer bench-infer`) and the trainer's inference tests run on it; payments are
//! [`LocalEscrows`] kept in memory instead of the chain.

use super::{Escrow, EscrowError, Escrows, InferenceDesk, ServeLimits};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tch::Device;
use weft_ml::commit::canonical_bytes;
use weft_ml::config::ModelConfig;
use weft_ml::model::{Stage, StageSpec};
use weft_primitives::step::{StepCommitment, StepItem, StepRoots};
use weft_primitives::tensor::root_of_bytes;
use weft_stage_net::desk::Desks;
use weft_stage_net::inference::router::{Holder, Plan, Router};
use weft_stage_net::inference::{RequestBody, RequestId};
use weft_stage_net::store::{StepAux, StepBytes, TensorStore};
use weft_stage_net::wire::{Limits, Step};

/// The step the loopback holders serve.
pub const SERVED_STEP: Step = 5;

/// Escrows in memory: every registered request is open and covers `max_tokens`; the
/// settlements are recorded.
#[derive(Debug)]
pub struct LocalEscrows {
    max_tokens: u32,
    bodies: Mutex<BTreeMap<RequestId, [u8; 32]>>,
    closed: Mutex<BTreeSet<RequestId>>,
    settled: Mutex<Vec<(RequestId, u32, [u8; 32])>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LocalEscrows {
    /// Escrows covering `max_tokens` each.
    pub fn new(max_tokens: u32) -> Self {
        LocalEscrows {
            max_tokens,
            bodies: Mutex::default(),
            closed: Mutex::default(),
            settled: Mutex::default(),
        }
    }

    /// Opens request `id` for a body of hash `hash`.
    pub fn open(&self, id: RequestId, hash: [u8; 32]) {
        lock(&self.bodies).insert(id, hash);
    }

    /// Closes request `id` (it is then refused).
    pub fn close(&self, id: RequestId) {
        lock(&self.closed).insert(id);
    }

    /// `(request, tokens, output hash)` of every settlement so far, in order.
    pub fn settled(&self) -> Vec<(RequestId, u32, [u8; 32])> {
        lock(&self.settled).clone()
    }
}

impl Escrows for LocalEscrows {
    fn open_escrow(&self, id: RequestId, _run: u32) -> Result<Escrow, EscrowError> {
        if lock(&self.closed).contains(&id) {
            return Err(EscrowError::NotOpen(id));
        }
        let request_hash = *lock(&self.bodies)
            .get(&id)
            .ok_or(EscrowError::Unknown(id))?;
        Ok(Escrow {
            request_hash,
            max_tokens: self.max_tokens,
        })
    }

    fn settle(&self, id: RequestId, tokens: u32, output_hash: [u8; 32]) {
        lock(&self.settled).push((id, tokens, output_hash));
    }
}

/// Writes `stage`'s weights into a tensor store under `dir` as committed at
/// [`SERVED_STEP`] (the other items of the step are empty).
pub fn store_weights(stage: &Stage, dir: &std::path::Path) -> Result<TensorStore> {
    let store = TensorStore::open(dir, 8)?;
    let weights = canonical_bytes(stage.params().iter().map(|(_, t)| t))?;
    let commitment = StepCommitment {
        step: SERVED_STEP,
        roots: StepRoots {
            weights_after: root_of_bytes(&weights),
            ..StepRoots::default()
        },
        loss: None,
    };
    let items = StepItem::ALL
        .iter()
        .map(|&i| {
            let bytes = if i == StepItem::WeightsAfter {
                weights.clone()
            } else {
                Vec::new()
            };
            (i, Some(bytes))
        })
        .collect();
    store.write_step(&commitment, &StepBytes { items }, &StepAux::default())?;
    Ok(store)
}

/// One stage holder on loopback.
pub struct LoopbackHolder {
    /// How the router reaches it.
    pub holder: Holder,
    /// Its inference desk (when it serves one).
    pub desk: Option<Arc<InferenceDesk>>,
    /// Its serving task; aborting it takes the holder down.
    pub task: tokio::task::JoinHandle<()>,
}

/// Serves `desks` on a fresh libp2p peer at 127.0.0.1.
pub async fn serve_on_loopback(desks: Desks, replica: u16) -> Result<LoopbackHolder> {
    let listen = "/ip4/127.0.0.1/tcp/0"
        .parse()
        .map_err(|e| Error::Config(format!("{e}")))?;
    let (net, inbound) = weft_p2p::spawn(
        weft_p2p::Keypair::generate_ed25519(),
        weft_p2p::Config {
            listen: vec![listen],
            ..Default::default()
        },
    )
    .await
    .map_err(|e| Error::Config(format!("loopback network: {e}")))?;
    let holder = Holder {
        replica,
        peer: net.local_peer_id(),
        addrs: net.listen_addrs().to_vec(),
    };
    let task = tokio::spawn(async move {
        let _net = net;
        weft_stage_net::reveal_server::serve_reveals(
            inbound,
            desks,
            Limits::default(),
            std::future::pending(),
        )
        .await;
    });
    Ok(LoopbackHolder {
        holder,
        desk: None,
        task,
    })
}

/// A whole model cut in stages and served on loopback.
pub struct LoopbackPipeline {
    /// The stages, for single-process reference generation.
    pub stages: Vec<Stage>,
    /// The payments.
    pub escrows: Arc<LocalEscrows>,
    /// The holders of each stage.
    pub holders: Vec<Vec<LoopbackHolder>>,
    /// The router, on its own peer.
    pub router: Router,
    _inbound: tokio::sync::mpsc::Receiver<weft_p2p::InboundRequest>,
    _dirs: Vec<tempfile::TempDir>,
}

impl LoopbackPipeline {
    /// `cfg` cut in `replicas.len()` stages, `replicas[k]` holders of stage `k`.
    pub async fn start(cfg: &ModelConfig, replicas: &[u16], limits: ServeLimits) -> Result<Self> {
        let n = replicas.len();
        let stages = (0..n)
            .map(|k| Stage::new(cfg, StageSpec::new(k, n)?, Device::Cpu))
            .collect::<weft_ml::Result<Vec<_>>>()?;
        let escrows = Arc::new(LocalEscrows::new(cfg.seq_len as u32));
        let mut holders = Vec::with_capacity(n);
        let mut dirs = Vec::new();
        for (k, stage) in stages.iter().enumerate() {
            let mut of_stage = Vec::new();
            for r in 0..replicas[k] {
                let dir = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
                let store = store_weights(stage, dir.path())?;
                dirs.push(dir);
                let desk = Arc::new(InferenceDesk::new(
                    0,
                    StageSpec::new(k, n)?,
                    cfg.clone(),
                    store,
                    escrows.clone(),
                    limits,
                ));
                let mut holder = serve_on_loopback(vec![desk.clone()], r).await?;
                holder.desk = Some(desk);
                of_stage.push(holder);
            }
            holders.push(of_stage);
        }
        let (client, inbound) = weft_p2p::spawn(
            weft_p2p::Keypair::generate_ed25519(),
            weft_p2p::Config::default(),
        )
        .await
        .map_err(|e| Error::Config(format!("loopback network: {e}")))?;
        Ok(LoopbackPipeline {
            stages,
            escrows,
            holders,
            router: Router::new(client, Limits::default()),
            _inbound: inbound,
            _dirs: dirs,
        })
    }

    /// Opens request `id` for `body` and plans it over every holder.
    pub fn plan(&self, id: RequestId, body: RequestBody) -> Plan {
        self.escrows.open(id, body.hash());
        Plan {
            request: id,
            body,
            step: SERVED_STEP,
            stages: self
                .holders
                .iter()
                .map(|h| h.iter().map(|s| s.holder.clone()).collect())
                .collect(),
        }
    }
}
