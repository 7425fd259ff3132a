//! The cross-process pipeline: real `weft-trainer pipeline` processes on loopback against the
//! in-process pipeline, a crash and restart, a misbehaving neighbour, and reveals.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use parity_scale_codec::Encode;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::Device;
use weft_trainer::ml::checkpoint;
use weft_trainer::ml::commit::verify_chunk;
use weft_trainer::ml::config::{ClipScope, ModelConfig, TrainConfig};
use weft_trainer::ml::data::{Batcher, Synthetic};
use weft_trainer::ml::schedule::{
    build_workers, run_step_in_process, run_step_in_process_detailed,
};
use weft_trainer::ml::worker::{ForwardOutput, StageWorker, WorkerOptions};
use weft_trainer::net::link::RetryPolicy;
use weft_trainer::net::topology::{PeerTable, StagePeer};
use weft_trainer::net::wire::{
    decode_response, ErrorCode, Limits, Request, Response, RevealRequest, StepItem, WireTensor,
};
use weft_trainer::stage::{run_stage, NodeConfig};

const BIN: &str = env!("CARGO_BIN_EXE_weft-trainer");
const DEADLINE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn seed_hex(i: usize) -> String {
    hex::encode([i as u8 + 1; 32])
}

fn peer_id(i: usize) -> weft_p2p::PeerId {
    weft_p2p::keypair_from_seed([i as u8 + 1; 32])
        .unwrap()
        .public()
        .to_peer_id()
}

struct Cluster {
    dir: tempfile::TempDir,
    stages: usize,
    steps: u64,
    ports: Vec<u16>,
    model: ModelConfig,
    train: TrainConfig,
    checkpoint_every: u64,
}

/// A stage process whose stdout lines arrive on a channel; the channel closes at exit.
struct Proc {
    child: Child,
    lines: std_mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    /// Waits (up to `deadline`) for a line containing `pat`.
    fn wait_line(&mut self, pat: &str, deadline: Instant) -> String {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(pat) {
                        return l;
                    }
                }
                Err(e) => panic!("no line with {pat:?} ({e}); saw {:#?}", self.seen),
            }
        }
    }

    /// Waits for the process to exit (its stdout to close), returning all its lines.
    fn finish(mut self, deadline: Instant) -> (std::process::ExitStatus, Vec<String>) {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("stage did not finish in time; saw {:#?}", self.seen);
                }
            }
        }
        (self.child.wait().unwrap(), self.seen)
    }
}

impl Cluster {
    fn new(stages: usize, steps: u64, model: ModelConfig, train: TrainConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..stages).map(|_| free_port()).collect();
        let mut table = String::new();
        for (s, port) in ports.iter().enumerate() {
            table.push_str(&format!(
                "[[stage]]\nstage = {s}\npeer_id = \"{}\"\naddrs = [\"/ip4/127.0.0.1/tcp/{port}\"]\n",
                peer_id(s)
            ));
        }
        std::fs::write(dir.path().join("peers.toml"), table).unwrap();
        std::fs::write(
            dir.path().join("model.json"),
            serde_json::to_vec(&model).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("train.json"),
            serde_json::to_vec(&train).unwrap(),
        )
        .unwrap();
        Cluster {
            dir,
            stages,
            steps,
            ports,
            model,
            train,
            checkpoint_every: 2,
        }
    }

    fn data_dir(&self, s: usize) -> PathBuf {
        self.dir.path().join(format!("stage-{s}"))
    }

    fn start(&self, s: usize) -> Proc {
        let p = self.dir.path();
        let mut child = Command::new(BIN)
            .args(["pipeline", "--stage", &s.to_string()])
            .args(["--stages", &self.stages.to_string()])
            .arg("--peers")
            .arg(p.join("peers.toml"))
            .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{}", self.ports[s])])
            .arg("--data-dir")
            .arg(self.data_dir(s))
            .args(["--data", "synthetic", "--steps", &self.steps.to_string()])
            .args(["--key-seed", &seed_hex(s)])
            .args(["--checkpoint-every", &self.checkpoint_every.to_string()])
            .args(["--retention", &self.checkpoint_every.to_string()])
            .args(["--peer-timeout", "60", "--threads", "1", "--device", "cpu"])
            .arg("--config")
            .arg(p.join("model.json"))
            .arg("--train-config")
            .arg(p.join("train.json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn batcher(&self) -> Batcher {
        Batcher::new(
            Arc::new(Synthetic::standard(self.model.seed)),
            self.train.micro_batch_size,
            self.model.seq_len,
            self.model.vocab_size,
        )
        .unwrap()
    }

    /// The in-process pipeline over the same stages: losses per step and final workers.
    fn reference(&self) -> (Vec<f64>, Vec<StageWorker>) {
        // Like the processes: one thread, so reductions run in the same order.
        tch::set_num_threads(1);
        let mut w = build_workers(
            &self.model,
            &self.train,
            self.stages,
            &self.batcher(),
            Device::Cpu,
            WorkerOptions::default(),
        )
        .unwrap();
        let losses = (0..self.steps)
            .map(|s| run_step_in_process(&mut w, s).unwrap())
            .collect();
        (losses, w)
    }

    /// The stages as their processes left them in their final checkpoints.
    fn checkpointed_workers(&self) -> Vec<StageWorker> {
        let mut w = build_workers(
            &self.model,
            &self.train,
            self.stages,
            &self.batcher(),
            Device::Cpu,
            WorkerOptions::default(),
        )
        .unwrap();
        for (s, wk) in w.iter_mut().enumerate() {
            let next =
                checkpoint::load(wk, &self.data_dir(s).join("checkpoint.safetensors")).unwrap();
            assert_eq!(next, self.steps, "stage {s} checkpoint");
        }
        w
    }
}

/// The steps in a stage's progress lines.
fn steps_of(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.first() != Some(&"stage") || w.get(2) != Some(&"step") {
                return None;
            }
            w[3].parse().ok()
        })
        .collect()
}

/// `(step, loss)` from the last stage's progress lines.
fn losses_of(lines: &[String]) -> Vec<(u64, f64)> {
    lines
        .iter()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.first() != Some(&"stage") || w.get(2) != Some(&"step") {
                return None;
            }
            Some((w[3].parse().ok()?, w[5].parse().ok()?))
        })
        .collect()
}

fn compare(cluster: &Cluster, losses: &[(u64, f64)]) -> (f64, f64) {
    let (ref_losses, ref_workers) = cluster.reference();
    let steps: Vec<u64> = losses.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        steps,
        (0..cluster.steps).collect::<Vec<_>>(),
        "every step once"
    );
    let mut worst_loss = 0.0f64;
    for ((s, l), r) in losses.iter().zip(&ref_losses) {
        let rel = ((l - r) / r).abs();
        worst_loss = worst_loss.max(rel);
        assert!(rel < 1e-5, "step {s}: {l} across processes, {r} in process");
    }
    let got = cluster.checkpointed_workers();
    let mut worst_weight = 0.0f64;
    for (g, r) in got.iter().zip(&ref_workers) {
        for ((n, a), (_, b)) in g.stage().params().iter().zip(r.stage().params()) {
            let d = (a - b).abs().max().double_value(&[]);
            worst_weight = worst_weight.max(d);
            assert!(
                a.equal(b),
                "stage {} {n} differs by {d}",
                g.stage().spec().stage
            );
        }
    }
    (worst_loss, worst_weight)
}

#[test]
fn pipeline_processes_match_in_process_pipeline() {
    let deadline = Instant::now() + DEADLINE;
    // Four processes, the peer table written from `peer-id` output like a launcher would.
    let out = Command::new(BIN)
        .args(["peer-id", "--key-seed", &seed_hex(0)])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        peer_id(0).to_string()
    );
    let cluster = Cluster::new(4, 4, ModelConfig::tiny(), TrainConfig::tiny());
    let procs: Vec<Proc> = (0..4).map(|s| cluster.start(s)).collect();
    let mut last = Vec::new();
    for (s, p) in procs.into_iter().enumerate() {
        let (status, lines) = p.finish(deadline);
        assert!(status.success(), "stage {s}: {status}; {lines:#?}");
        if s == 3 {
            last = lines;
        }
    }
    let (wl, ww) = compare(&cluster, &losses_of(&last));
    println!("4 processes vs in-process: worst loss rel diff {wl:.3e}, worst weight diff {ww:.3e}");
}

#[test]
fn killed_stage_restarts_and_the_run_is_unchanged() {
    let deadline = Instant::now() + DEADLINE;
    // Tied embeddings and global clipping: the first and last stage exchange gradients and
    // every stage its norm, so the restart must recover those messages too.
    let model = ModelConfig {
        tied_embeddings: true,
        seed: 3,
        ..ModelConfig::tiny()
    };
    let train = TrainConfig {
        clip_scope: ClipScope::Global,
        grad_clip: 0.5,
        ..TrainConfig::tiny()
    };
    let mut cluster = Cluster::new(3, 12, model, train);
    cluster.checkpoint_every = 3;
    let p0 = cluster.start(0);
    let p2 = cluster.start(2);
    let mut p1 = cluster.start(1);
    // Kill stage 1 once it has committed step 4 (its checkpoint is at 3: one step to replay).
    p1.wait_line("stage 1 step 4 ", deadline);
    p1.child.kill().unwrap();
    let (status, before) = p1.finish(deadline);
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status}");
    }
    let done_before = steps_of(&before).len() as u64;
    assert_eq!(steps_of(&before), (0..done_before).collect::<Vec<_>>());
    assert!(
        done_before < cluster.steps,
        "killed before the end ({done_before} steps)"
    );
    let p1 = cluster.start(1);
    let (status, after) = p1.finish(deadline);
    assert!(status.success(), "{after:#?}");
    let resumed = after.iter().find(|l| l.contains("resumed at")).unwrap();
    println!("restarted stage 1: {resumed}");
    assert_eq!(
        steps_of(&after),
        (done_before..cluster.steps).collect::<Vec<_>>(),
        "resumes right after the last committed step, never skipping or repeating one"
    );
    let mut last = Vec::new();
    for (s, p) in [(0, p0), (2, p2)] {
        let (status, lines) = p.finish(deadline);
        assert!(status.success(), "stage {s}: {lines:#?}");
        if s == 2 {
            last = lines;
        }
    }
    let (wl, ww) = compare(&cluster, &losses_of(&last));
    println!("kill -9 and restart vs uninterrupted: worst loss rel diff {wl:.3e}, worst weight diff {ww:.3e}");
}

async fn net(
    i: usize,
) -> (
    weft_p2p::Network,
    tokio::sync::mpsc::Receiver<weft_p2p::InboundRequest>,
) {
    let cfg = weft_p2p::Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        request_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    weft_p2p::spawn(weft_p2p::keypair_from_seed([i as u8 + 1; 32]).unwrap(), cfg)
        .await
        .unwrap()
}

async fn ask(from: &weft_p2p::Network, to: &weft_p2p::Network, bytes: Vec<u8>) -> Response {
    let r = from
        .request(to.local_peer_id(), to.listen_addrs().to_vec(), bytes)
        .await
        .unwrap();
    decode_response(&r).unwrap()
}

fn code(r: &Response) -> ErrorCode {
    match r {
        Response::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A 2-stage run whose stage 1 is a real [`run_stage`] and whose stage 0 is the test: it
/// sends garbage before the real activations, and an intruder and an auditor ask things.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_neighbours_are_refused_and_reveals_go_to_auditors_only() {
    tch::set_num_threads(1);
    let model = ModelConfig::tiny();
    let train = TrainConfig::tiny();
    let data = Batcher::new(
        Arc::new(Synthetic::standard(model.seed)),
        train.micro_batch_size,
        model.seq_len,
        model.vocab_size,
    )
    .unwrap();
    // Reference: the in-process pipeline, committing.
    let mut reference = build_workers(
        &model,
        &train,
        2,
        &data,
        Device::Cpu,
        WorkerOptions { commit: true },
    )
    .unwrap();
    let ref_reports = run_step_in_process_detailed(&mut reference, 0).unwrap();
    let ref_commitment = ref_reports[1].commitment.unwrap();
    // The activations a correct stage 0 sends.
    let mut stage0 = build_workers(
        &model,
        &train,
        2,
        &data,
        Device::Cpu,
        WorkerOptions::default(),
    )
    .unwrap()
    .remove(0);
    stage0.begin_step(0).unwrap();
    let acts: Vec<WireTensor> = (0..train.micro_batches)
        .map(|m| match stage0.forward(m, None).unwrap() {
            ForwardOutput::Activations(a) => weft_trainer::ml::tensor::to_wire(&a).unwrap(),
            ForwardOutput::Loss(_) => unreachable!(),
        })
        .collect();

    // Node 1 is stage 1; the test is stage 0 (key 0); key 2 is an intruder, key 3 an auditor.
    let (fake0, mut fake0_in) = net(0).await;
    let (node_net, node_in) = net(1).await;
    let (intruder, _i_in) = net(2).await;
    let (auditor, _a_in) = net(3).await;
    let (validator, _v_in) = net(4).await;
    let (bls_sk, bls_pk, _) = weft_bls::dev_keypair("validator").unwrap();
    let validator_account = [42u8; 32];
    let dir = tempfile::tempdir().unwrap();
    let peers = PeerTable {
        run: Some(7),
        stages: vec![
            StagePeer {
                peer_id: fake0.local_peer_id(),
                addrs: fake0.listen_addrs().to_vec(),
            },
            StagePeer {
                peer_id: node_net.local_peer_id(),
                addrs: node_net.listen_addrs().to_vec(),
            },
        ],
        auditors: vec![(1, auditor.local_peer_id())],
        replicas: vec![],
    };
    let access = Arc::new(weft_trainer::net::access::RevealAccess::fixed(
        peers.auditors_of(1),
    ));
    // The chain says: account 42 (with this BLS key) audits stage 1.
    access.set_auditors(&[(validator_account, bls_pk)]);
    let cfg = NodeConfig {
        run: 7,
        replica: 0,
        steps: 1,
        data_dir: dir.path().to_path_buf(),
        checkpoint_every: 1,
        retention: 4,
        auditors: access.clone(),
        peers,
        limits: Limits::default(),
        peer_timeout: Duration::from_secs(30),
        retry: RetryPolicy::default(),
        desks: Vec::new(),
        identity: weft_p2p::keypair_from_seed([2; 32]).unwrap(),
        tamper: None,
        replica_deadline: std::time::Duration::from_secs(20),
        replica_desk: None,
    };
    let worker = build_workers(
        &model,
        &train,
        2,
        &data,
        Device::Cpu,
        WorkerOptions { commit: true },
    )
    .unwrap()
    .remove(1);
    let (prog_tx, mut prog_rx) = tokio::sync::mpsc::unbounded_channel();
    let node_addr = node_net.clone();
    let node = tokio::spawn(run_stage(
        cfg,
        worker,
        node_net,
        node_in,
        Box::new(move |p| {
            let _ = prog_tx.send(p.step);
        }),
    ));
    // Stage 0's side: acknowledge the node's gradients and its Done.
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(req) = fake0_in.recv().await {
            let r =
                weft_trainer::net::wire::decode_request(&req.request, &Limits::default()).unwrap();
            let _ = got_tx.send(r);
            let _ = req.reply.send(Response::Ack.encode());
        }
    });

    let fwd = |run: u32, step: u64, micro: u32, from_stage: u16, tensor: WireTensor| {
        Request::Forward {
            run,
            step,
            micro,
            from_stage,
            tensor,
        }
        .encode()
    };
    let good = acts[0].clone();
    let mut nan = good.clone();
    nan.data[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    let mut short = good.clone();
    short.data.truncate(short.data.len() - 4);
    let mut wrong_shape = good.clone();
    wrong_shape.shape = vec![good.shape[0], good.shape[1] * 2, good.shape[2] / 2];
    let mut trailing = fwd(7, 0, 0, 0, good.clone());
    trailing.push(0);
    let mut garbage = good.clone();
    for b in garbage.data.chunks_mut(4) {
        b.copy_from_slice(&7.0f32.to_le_bytes());
    }
    let cases: Vec<(&str, &weft_p2p::Network, Vec<u8>, ErrorCode)> = vec![
        ("NaN", &fake0, fwd(7, 0, 0, 0, nan), ErrorCode::Malformed),
        (
            "short data",
            &fake0,
            fwd(7, 0, 0, 0, short),
            ErrorCode::Malformed,
        ),
        (
            "wrong shape",
            &fake0,
            fwd(7, 0, 0, 0, wrong_shape),
            ErrorCode::Malformed,
        ),
        ("trailing bytes", &fake0, trailing, ErrorCode::Malformed),
        (
            "wrong run",
            &fake0,
            fwd(8, 0, 0, 0, good.clone()),
            ErrorCode::WrongRun,
        ),
        (
            "future step",
            &fake0,
            fwd(7, 5, 0, 0, good.clone()),
            ErrorCode::FutureStep,
        ),
        (
            "micro out of range",
            &fake0,
            fwd(7, 0, 9, 0, good.clone()),
            ErrorCode::WrongStage,
        ),
        (
            "claims stage 1",
            &fake0,
            fwd(7, 0, 0, 1, good.clone()),
            ErrorCode::NotNeighbour,
        ),
        (
            "intruder",
            &intruder,
            fwd(7, 0, 0, 0, garbage.clone()),
            ErrorCode::NotNeighbour,
        ),
        (
            "reveal before commit",
            &auditor,
            Request::Reveal(RevealRequest {
                run: 7,
                step: 0,
                stage: 1,
                replica: 0,
                item: StepItem::Inputs,
                chunk: 0,
            })
            .encode(),
            ErrorCode::NotFound,
        ),
    ];
    for (what, from, bytes, expected) in cases {
        let r = ask(from, &node_addr, bytes).await;
        assert_eq!(code(&r), expected, "{what}: {r:?}");
        println!("{what}: refused with {r:?}");
    }
    // Nothing was buffered or trained on: the node is still waiting for step 0.
    assert!(prog_rx.try_recv().is_err());
    // The real activations, a retry (accepted) and a conflicting copy (refused).
    for (m, a) in acts.iter().enumerate() {
        let r = ask(&fake0, &node_addr, fwd(7, 0, m as u32, 0, a.clone())).await;
        assert_eq!(r, Response::Ack);
    }
    assert_eq!(
        ask(&fake0, &node_addr, fwd(7, 0, 0, 0, acts[0].clone())).await,
        Response::Ack
    );
    let r = ask(&fake0, &node_addr, fwd(7, 0, 0, 0, garbage)).await;
    assert_eq!(code(&r), ErrorCode::Conflict);
    // The seal over the activations: from the intruder, or claiming the other direction,
    // refused; stage 0's own (key 0 signs) accepted.
    let sent: Vec<tch::Tensor> = acts
        .iter()
        .map(|a| weft_trainer::ml::tensor::from_wire(a).unwrap())
        .collect();
    let root = weft_trainer::ml::commit::root_of(&sent).unwrap();
    let message = weft_primitives::seal::seal_message(
        7,
        0,
        0,
        0,
        weft_primitives::seal::Direction::Activations,
        &root,
    );
    let seal = |direction, signer: u8| Request::Seal {
        run: 7,
        step: 0,
        from_stage: 0,
        direction,
        root: root.0,
        signature: weft_p2p::keypair_from_seed([signer; 32])
            .unwrap()
            .sign(&message)
            .unwrap()
            .try_into()
            .unwrap(),
    };
    use weft_primitives::seal::Direction;
    let r = ask(
        &intruder,
        &node_addr,
        seal(Direction::Activations, 3).encode(),
    )
    .await;
    assert_eq!(code(&r), ErrorCode::NotNeighbour);
    let r = ask(&fake0, &node_addr, seal(Direction::Gradients, 1).encode()).await;
    assert_eq!(code(&r), ErrorCode::WrongStage);
    let r = ask(&fake0, &node_addr, seal(Direction::Activations, 1).encode()).await;
    assert_eq!(r, Response::Ack);
    // The step completes: the gradients come back, micro-batch M-1 first, and the node's
    // seal over them, signed by its identity (sent after the last gradient; deliveries run
    // in parallel, so it may arrive before it).
    let mut micros = Vec::new();
    let mut grads = Vec::new();
    let mut node_seal = None;
    while micros.len() < train.micro_batches || node_seal.is_none() {
        match got_rx.recv().await.unwrap() {
            Request::Backward {
                step,
                micro,
                tensor,
                ..
            } => {
                assert_eq!(step, 0);
                micros.push(micro);
                grads.push((micro, weft_trainer::ml::tensor::from_wire(&tensor).unwrap()));
            }
            Request::Seal {
                step,
                from_stage,
                direction,
                root,
                signature,
                ..
            } => node_seal = Some((step, from_stage, direction, root, signature)),
            other => panic!("unexpected {other:?}"),
        }
    }
    let node_seal = node_seal.unwrap();
    // The seal covers the gradients in the order sent: micro-batch M-1 down to 0.
    grads.sort_by_key(|(micro, _)| std::cmp::Reverse(*micro));
    let grads: Vec<tch::Tensor> = grads.into_iter().map(|(_, g)| g).collect();
    assert_eq!(micros.len(), train.micro_batches);
    let grads_root = weft_trainer::ml::commit::root_of(&grads).unwrap();
    assert_eq!(node_seal.0, 0);
    assert_eq!((node_seal.1, node_seal.2), (1, Direction::Gradients));
    assert_eq!(node_seal.3, grads_root.0);
    let message =
        weft_primitives::seal::seal_message(7, 0, 1, 0, Direction::Gradients, &grads_root);
    assert!(weft_primitives::seal::verify_by_peer_id(
        &node_addr.local_peer_id().to_bytes(),
        &message,
        &weft_primitives::seal::SealSignature(node_seal.4),
    ));
    assert_eq!(prog_rx.recv().await, Some(0));

    // Reveals: every chunk of every item verifies against the in-process commitment; the
    // intruder is refused.
    let mut chunks = 0;
    for item in StepItem::ALL {
        let root = ref_commitment.roots.get(item);
        let mut i = 0u32;
        loop {
            let req = Request::Reveal(RevealRequest {
                run: 7,
                step: 0,
                stage: 1,
                replica: 0,
                item,
                chunk: i,
            })
            .encode();
            match ask(&auditor, &node_addr, req).await {
                Response::RevealChunk {
                    data,
                    proof,
                    total_chunks,
                } => {
                    assert!(verify_chunk(&root, &data, &proof), "{item:?} chunk {i}");
                    chunks += 1;
                    i += 1;
                    if i == total_chunks {
                        break;
                    }
                }
                Response::Error {
                    code: ErrorCode::NotFound,
                    ..
                } if root == weft_primitives::Hash::ZERO => break,
                other => panic!("{item:?} chunk {i}: {other:?}"),
            }
        }
    }
    println!("{chunks} chunks revealed and verified");
    let req = Request::Reveal(RevealRequest {
        run: 7,
        step: 0,
        stage: 1,
        replica: 0,
        item: StepItem::WeightsAfter,
        chunk: 0,
    });
    let r = ask(&intruder, &node_addr, req.encode()).await;
    assert_eq!(code(&r), ErrorCode::Forbidden);
    let r = ask(&fake0, &node_addr, req.encode()).await;
    assert_eq!(
        code(&r),
        ErrorCode::Forbidden,
        "a neighbour is not an auditor"
    );

    // A validator that is not in the static table: refused until it proves with its BLS
    // key that it speaks for an auditor of stage 1, then it fetches and verifies the whole
    // reveal and recomputes the step: it passes.
    let r = ask(&validator, &node_addr, req.encode()).await;
    assert_eq!(code(&r), ErrorCode::Forbidden);
    let node_peer = StagePeer {
        peer_id: node_addr.local_peer_id(),
        addrs: node_addr.listen_addrs().to_vec(),
    };
    let (wrong_sk, _, _) = weft_bls::dev_keypair("mallory").unwrap();
    assert!(weft_trainer::net::reveal_fetch::send_hello(
        &validator,
        &node_peer,
        (7, 1),
        validator_account,
        &wrong_sk
    )
    .await
    .is_err());
    weft_trainer::net::reveal_fetch::send_hello(
        &validator,
        &node_peer,
        (7, 1),
        validator_account,
        &bls_sk,
    )
    .await
    .unwrap();
    let spec = weft_trainer::ml::model::StageSpec::new(1, 2).unwrap();
    let items = weft_trainer::ml::audit::needed_items(spec);
    let reveal = weft_trainer::ml::audit::Revealed {
        items: weft_trainer::net::reveal_fetch::fetch_reveal(
            &validator,
            &node_peer,
            (7, 1, 0),
            &items,
            &ref_commitment,
            Instant::now() + Duration::from_secs(30),
        )
        .await
        .unwrap(),
    };
    let job = weft_trainer::ml::audit::AuditJob {
        model: &model,
        train: &train,
        spec,
        data: Some(data.clone()),
        commitment: &ref_commitment,
        replica: 0,
        previous: None,
        tolerance: weft_trainer::ml::audit::Tolerance::default(),
        device: Device::Cpu,
        round: None,
    };
    let outcome = weft_trainer::ml::audit::recompute(&job, &reveal).unwrap();
    assert!(outcome.pass, "{:?}", outcome.failure);
    // A reveal checked against other roots fails at the first chunk.
    let mut other = ref_commitment;
    other.roots.weights_after = weft_primitives::Hash([9; 32]);
    let bad = weft_trainer::net::reveal_fetch::fetch_reveal(
        &validator,
        &node_peer,
        (7, 1, 0),
        &items,
        &other,
        Instant::now() + Duration::from_secs(30),
    )
    .await;
    assert!(
        matches!(
            bad,
            Err(weft_trainer::net::reveal_fetch::RevealFailure::Mismatch(_))
        ),
        "{bad:?}"
    );

    // Let the node finish.
    let done = Request::Done {
        run: 7,
        from_stage: 0,
        steps: 1,
    };
    assert_eq!(ask(&fake0, &node_addr, done.encode()).await, Response::Ack);
    let summary = tokio::time::timeout(DEADLINE, node)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Exactly the in-process loss and update: the refused tensors were not trained on.
    let ref_loss = ref_reports[1].loss.unwrap();
    assert_eq!(summary.losses, vec![(0, ref_loss)]);
    let store = weft_trainer::net::store::TensorStore::open(dir.path(), 4).unwrap();
    assert_eq!(store.commitment(0).unwrap(), ref_commitment);
    let mut w = build_workers(
        &model,
        &train,
        2,
        &data,
        Device::Cpu,
        WorkerOptions::default(),
    )
    .unwrap()
    .remove(1);
    checkpoint::load(&mut w, &dir.path().join("checkpoint.safetensors")).unwrap();
    for ((n, a), (_, b)) in w.stage().params().iter().zip(reference[1].stage().params()) {
        assert!(a.equal(b), "{n}");
    }
}
