//! `weft-trainer audit`: a validator's auditor. It recomputes the steps the chain selects
//! for audit (`weft_ml::audit`), after fetching their reveals chunk by chunk
//! (`weft_stage_net::reveal_fetch`), and attests each verdict with a BLS signature.

use super::train::open_batcher;
use super::{derive_p2p_seed, Heads};
use crate::chain::{self, ChainView, NodeState, RunSetup};
use anyhow::{bail, Context};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_ml::audit::{self, AuditJob, Tolerance};
use weft_ml::commit::StepCommitment;
use weft_ml::config::DeviceSpec;
use weft_ml::data::Batcher;
use weft_ml::model::StageSpec;
use weft_primitives::{AccountId, Header, Keypair};
use weft_rpc_client::{Client, SubmitOptions, WaitFor};
use weft_runtime::RuntimeCall;
use weft_stage_net::reveal_fetch::{self, RevealFailure};

/// Arguments of `audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The node's WebSocket RPC.
    #[arg(long, default_value = "ws://127.0.0.1:9944")]
    pub url: String,
    /// The validator account's secret URI.
    #[arg(long)]
    pub key: String,
    /// The validator's BLS seed (0x hex or text) as given to `weft stake validate`; without
    /// it, derived from --key exactly as `weft stake validate` derives it.
    #[arg(long, conflicts_with = "bls_dev")]
    pub bls_seed: Option<String>,
    /// A development BLS key name (`weft_bls::dev_keypair`, e.g. `alice`).
    #[arg(long)]
    pub bls_dev: Option<String>,
    /// Training data (as the trainers of the run use it).
    #[arg(long, default_value = "synthetic")]
    pub data: String,
    /// Working directory (the p2p key, nothing else yet).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Only audits of this run; the auditor exits (status 0) once the run is finished (its
    /// last step settled, every audit of it closed).
    #[arg(long)]
    pub run: Option<u32>,
    /// Device for recomputation: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Address to listen on.
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/0")]
    pub listen: String,
    /// Tolerance TOML (`rel_l2`, `max_abs_rel`, `update_rel_l2`, `abs_floor`).
    #[arg(long)]
    pub tolerance: Option<PathBuf>,
    /// Commitments before the newest to look at on start.
    #[arg(long, default_value_t = 256)]
    pub lookback: u64,
}

/// `weft-trainer audit`.
pub async fn audit_main(args: AuditArgs) -> anyhow::Result<()> {
    let key = Keypair::from_suri(&args.key).map_err(|e| anyhow::anyhow!("--key: {e}"))?;
    let me = key.account_id();
    // The same derivation as `weft stake validate`: an explicit seed (0x hex or text), or
    // one derived from the validator's secret URI.
    let sk = match &args.bls_dev {
        Some(name) => {
            weft_bls::dev_keypair(name)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .0
        }
        None => weft_bls::secret_from_suri(&args.key, args.bls_seed.as_deref())
            .map_err(|e| anyhow::anyhow!("--bls-seed: {e}"))?,
    };
    let tolerance: Option<Tolerance> = match &args.tolerance {
        Some(p) => Some(
            toml::from_str(&std::fs::read_to_string(p)?)
                .with_context(|| format!("parsing {}", p.display()))?,
        ),
        None => None,
    };
    let device = args.device.parse::<DeviceSpec>()?.resolve()?;
    std::fs::create_dir_all(&args.data_dir)?;
    let client = Client::connect(&args.url).await?;
    let view = ChainView::new(NodeState {
        client: &client,
        at: None,
    });
    match view.validator_key(&me).await? {
        Some(k) if k == sk.public_key().to_bytes() => {}
        Some(_) => {
            bail!("the BLS key does not match the one {me} registered with Staking::validate")
        }
        None => bail!("{me} is not a registered validator (Staking::validate)"),
    }
    let p2p_key =
        weft_p2p::keypair_from_seed(derive_p2p_seed("weft-auditor p2p identity v1", &args.key))?;
    let (net, mut inbound) = weft_p2p::spawn(
        p2p_key,
        weft_p2p::Config {
            listen: vec![args.listen.parse()?],
            ..Default::default()
        },
    )
    .await?;
    // An auditor serves nothing.
    tokio::spawn(async move { while inbound.recv().await.is_some() {} });
    match &tolerance {
        Some(t) => println!(
            "auditor {me}, p2p peer {}; tolerance {t:?} (--tolerance, not the runs' own)",
            net.local_peer_id()
        ),
        None => println!(
            "auditor {me}, p2p peer {}; each run's tolerance from the chain",
            net.local_peer_id()
        ),
    }
    let mut cursor = view
        .next_commitment_id()
        .await?
        .saturating_sub(args.lookback);
    let mut client = Arc::new(client);
    let mut pending: BTreeSet<u64> = BTreeSet::new();
    let mut in_flight: BTreeSet<u64> = BTreeSet::new();
    let mut setups: HashMap<u32, (RunSetup, Option<Batcher>)> = HashMap::new();
    let mut heads = Heads::new(client.clone()).await;
    // Runs whose setup failed, with the reason last logged.
    let mut setup_errors: HashMap<u32, String> = HashMap::new();
    let (mut passed, mut failed) = (0u64, 0u64);
    // Each audit is judged on its own task (a trainer that withholds its reveal keeps its
    // audit waiting until the reveal deadline, and must not hold up the others); the
    // verdicts come back here and are signed and submitted one at a time (one nonce).
    let (verdicts_tx, mut verdicts) = tokio::sync::mpsc::unbounded_channel();
    let mut next_nonce = None;
    loop {
        let h = tokio::select! {
            h = heads.next() => match h {
                Ok(h) => h,
                Err(e) => {
                    // The node restarted or went away: judgements in flight on the old
                    // connection fail (and are not attested); the rest is kept.
                    eprintln!("lost the node ({e:#}); reconnecting to {}", args.url);
                    client = Arc::new(reconnect(&args.url).await);
                    heads = Heads::new(client.clone()).await;
                    next_nonce = None;
                    println!("reconnected to {}", args.url);
                    continue;
                }
            },
            Some((id, c, verdict)) = verdicts.recv() => {
                in_flight.remove(&id);
                let c: chain::work::Commitment = c;
                let (v, reason, why) = match verdict {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("audit {id}: cannot judge ({e:#}); not attesting");
                        continue;
                    }
                };
                let sig = sk
                    .sign(&chain::work::attestation_message(id, v))
                    .map_err(|e| anyhow::anyhow!("signing: {e}"))?
                    .to_bytes();
                let call = RuntimeCall::Work(chain::work::Call::Attest {
                    audit: id,
                    verdict: v,
                    reason,
                    signature: sig,
                });
                // Into the pool without waiting for a block (one attestation per block
                // would cap an auditor far below what it can judge), with the nonce kept
                // here; a refusal re-reads it from the chain.
                let opts = SubmitOptions {
                    wait: WaitFor::None,
                    nonce: next_nonce,
                    ..SubmitOptions::default()
                };
                let sent = client.submit(&key, call, &opts).await;
                next_nonce = sent.as_ref().ok().map(|r| r.nonce + 1);
                match sent {
                    Ok(_) => {
                        if v == chain::work::Verdict::Pass {
                            passed += 1;
                        } else {
                            failed += 1;
                        }
                        println!(
                            "audit {id}: run {} stage {} replica {} step {} → {v:?}{} ({why}); passed {passed} failed {failed}",
                            c.run,
                            c.stage,
                            c.replica,
                            c.step,
                            reason.map(|r| format!(" {r:?}")).unwrap_or_default()
                        );
                    }
                    Err(e) => eprintln!("audit {id}: attestation failed: {e:#}"),
                }
                continue;
            }
        };
        let view = ChainView::new(NodeState {
            client: &client,
            at: Some(h.hash()),
        });
        // A finished run's last steps are settled, but audits of earlier steps may still be
        // open: leave only once nothing of the run waits here (pending or being judged), or
        // their seats would be slashed for missed attestations.
        let finished = match args.run {
            Some(run) => view
                .run(run)
                .await
                .is_ok_and(|r| r.status == chain::runs::RunStatus::Finished),
            None => false,
        };
        let next = match view.next_commitment_id().await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("reading the chain failed ({e:#}); trying again at the next block");
                continue;
            }
        };
        pending.extend(cursor..next);
        cursor = next;
        for id in pending.clone() {
            if in_flight.contains(&id) {
                pending.remove(&id);
                continue;
            }
            let c = match view.commitment(id).await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    pending.remove(&id);
                    continue;
                }
                Err(e) => {
                    eprintln!("reading commitment {id} failed ({e:#}); trying again");
                    break;
                }
            };
            if args.run.is_some_and(|r| r != c.run) {
                pending.remove(&id);
                continue;
            }
            match c.status {
                chain::work::CommitStatus::Committed => continue,
                chain::work::CommitStatus::Audited => {}
                _ => {
                    pending.remove(&id);
                    continue;
                }
            }
            let a = match view.audit(id).await {
                Ok(Some(a)) => a,
                Ok(None) => {
                    pending.remove(&id);
                    continue;
                }
                Err(e) => {
                    eprintln!("reading audit {id} failed ({e:#}); trying again");
                    break;
                }
            };
            pending.remove(&id);
            if a.closed
                || !a.seats.iter().any(|s| s.account == me)
                || a.attestations.iter().any(|x| x.auditor == me)
            {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = setups.entry(c.run) {
                let set_up = match view.run_setup(c.run).await {
                    Ok(s) => open_batcher(&s, &args.data).map(|b| (s, b)),
                    Err(err) => Err(err.into()),
                };
                match set_up {
                    Ok((s, b)) => {
                        setup_errors.remove(&c.run);
                        e.insert((s, Some(b)));
                    }
                    Err(err) => {
                        // A run this auditor cannot set up (its data, its model) costs only
                        // that run's audits; it is tried again at the next block.
                        let why = format!("{err:#}");
                        if setup_errors.get(&c.run) != Some(&why) {
                            eprintln!("run {}: cannot audit it ({why}); trying again", c.run);
                            setup_errors.insert(c.run, why);
                        }
                        pending.insert(id);
                        continue;
                    }
                }
            }
            let Some((setup, batcher)) = setups.get(&c.run) else {
                continue;
            };
            in_flight.insert(id);
            let job = Judge {
                client: client.clone(),
                net: net.clone(),
                me,
                sk: sk.clone(),
                setup: setup.clone(),
                batcher: batcher.clone(),
                head: h.clone(),
                tolerance,
                device,
            };
            let tx = verdicts_tx.clone();
            tokio::spawn(async move {
                let verdict = job.judge(&c, &a).await;
                let _ = tx.send((id, c, verdict));
            });
        }
        if finished && pending.is_empty() && in_flight.is_empty() {
            if let Some(run) = args.run {
                println!("run {run} is finished; passed {passed} failed {failed}");
            }
            return Ok(());
        }
    }
}

/// A connection to `url`, retried every second until the node answers.
async fn reconnect(url: &str) -> Client {
    loop {
        match Client::connect(url).await {
            Ok(c) if c.best_header().await.is_ok() => return c,
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "reconnecting"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

type Judgement = (
    chain::work::Verdict,
    Option<chain::work::FailReason>,
    String,
);

/// Everything one audit's judgement needs (owned: it runs on its own task).
struct Judge {
    client: Arc<Client>,
    net: weft_p2p::Network,
    me: AccountId,
    sk: weft_bls::SecretKey,
    setup: RunSetup,
    batcher: Option<Batcher>,
    head: Header,
    tolerance: Option<Tolerance>,
    device: tch::Device,
}

/// Says hello to `peer` as the auditor `account` until it is accepted or `deadline` passes
/// (a trainer may be restarting): the last failure if it never is.
async fn hello_until(
    net: &weft_p2p::Network,
    peer: &weft_stage_net::topology::StagePeer,
    slot: (
        weft_primitives::step::RunId,
        weft_primitives::step::StageIndex,
    ),
    (account, sk): ([u8; 32], &weft_bls::SecretKey),
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        match reveal_fetch::send_hello(net, peer, slot, account, sk).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e.into()),
            Err(e) => {
                tracing::debug!(error = %e, "hello failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The replica round an averaged step `c` committed (`round`): every other included
/// replica's update as the audited trainer received it, fetched from the audited trainer
/// (`peer`, which keeps them for its reveals) chunk by chunk against the root sealed by
/// that replica in `c`'s round (verified by the chain at commit).
async fn fetch_round(
    net: &weft_p2p::Network,
    peer: &weft_stage_net::topology::StagePeer,
    c: &chain::work::Commitment,
    round: &chain::work::VerifiedRound,
    deadline: Instant,
) -> std::result::Result<audit::AuditRound, RevealFailure> {
    use weft_primitives::step::{StepItem, StepRoots};
    let mut others = std::collections::BTreeMap::new();
    for received in &round.received {
        let sealed = StepCommitment {
            step: c.step,
            roots: StepRoots {
                update: received.root,
                ..StepRoots::default()
            },
            loss: None,
        };
        let mut items = reveal_fetch::fetch_reveal(
            net,
            peer,
            (c.run, c.stage, received.replica),
            &[StepItem::Update],
            &sealed,
            deadline,
        )
        .await?;
        others.insert(
            received.replica,
            items.remove(&StepItem::Update).unwrap_or_default(),
        );
    }
    Ok(audit::AuditRound {
        included: round.included,
        others,
    })
}

/// Held while recomputing: libtorch's thread count, set per audit, is process-global.
static RECOMPUTE: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Judge {
    /// Fetches the reveal of `c` and recomputes it: the verdict, the reason and a description.
    async fn judge(
        self,
        c: &chain::work::Commitment,
        a: &chain::work::Audit,
    ) -> anyhow::Result<Judgement> {
        let Judge {
            client,
            net,
            me,
            sk,
            setup,
            batcher,
            head,
            tolerance: tol,
            device,
        } = self;
        let (client, net, me, sk, setup, head) = (&*client, &net, &me, &sk, &setup, &head);
        use chain::work::{FailReason, Verdict};
        let view = ChainView::new(NodeState {
            client,
            at: Some(head.hash()),
        });
        let rec = view
            .trainer(&c.trainer)
            .await?
            .context("the trainer has no trainer record")?;
        let peer = chain::trainer_peer(&rec)?;
        let spec = StageSpec::new(c.stage as usize, setup.stages())?;
        let commitment = StepCommitment {
            step: c.step,
            roots: c.roots,
            loss: c.loss,
        };
        // The reveal deadline in wall time, from the recent block time.
        let block_ms = match client.block_hash(head.number.saturating_sub(10)).await? {
            Some(hh) => match client.header(hh).await? {
                Some(old) if head.number > old.number => {
                    head.timestamp.saturating_sub(old.timestamp) / (head.number - old.number)
                }
                _ => 1000,
            },
            None => 1000,
        }
        .max(100);
        let blocks_left = a.reveal_deadline.saturating_sub(head.number);
        let deadline = Instant::now() + Duration::from_millis(blocks_left * block_ms);
        let ids = (c.run, c.stage, c.replica);
        // Without a hello the fetch below fails, and is judged as such.
        let _ = hello_until(net, &peer, (ids.0, ids.1), (me.0, sk), deadline).await;
        let items = audit::needed_items(spec);
        let revealed =
            reveal_fetch::fetch_reveal(net, &peer, ids, &items, &commitment, deadline).await;
        let revealed = match (revealed, &c.round) {
            (Ok(items), Some(round)) => fetch_round(net, &peer, c, round, deadline)
                .await
                .map(|r| (items, Some(r))),
            (Ok(items), None) => Ok((items, None)),
            (Err(e), _) => Err(e),
        };
        let (reveal, round) = match revealed {
            Ok((items, round)) => (audit::Revealed { items }, round),
            Err(RevealFailure::Mismatch(why)) => {
                return Ok((Verdict::Fail, Some(FailReason::Mismatch), why))
            }
            Err(RevealFailure::Missing(why)) => {
                // NoReveal is accepted only after the reveal deadline.
                loop {
                    let best = client.best_header().await?;
                    if best.number > a.reveal_deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(block_ms)).await;
                }
                return Ok((Verdict::Fail, Some(FailReason::NoReveal), why));
            }
        };
        let data = batcher.filter(|_| spec.is_first() || spec.is_last());
        // The run's parameters as of now (governance may have changed the tolerance).
        let params = view.run(c.run).await?.params;
        // The trainer's own compute class, reproducible here: recompute under it and require
        // equality. Otherwise the run's tolerance (or --tolerance, which overrides both).
        let declared = c.compute;
        let exact = tol.is_none() && weft_ml::compute::reproducible_here(&declared, device);
        let tol = match tol {
            Some(t) => t,
            None if exact => Tolerance::EXACT,
            None => chain::tolerance_of(&params.tolerance),
        };
        // The same slot's previous step, when the same trainer committed it.
        let previous = match c.step.checked_sub(1) {
            Some(p) => view
                .commitment_of(c.run, c.stage, c.replica, p)
                .await?
                .filter(|prev| prev.trainer == c.trainer)
                .map(|prev| audit::Continuity {
                    weights_after: prev.roots.weights_after,
                    optimizer_after: prev.roots.optimizer_after,
                }),
            None => None,
        };
        let replica = c.replica;
        let (model, train) = (setup.model.clone(), setup.train.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            // The thread count is process-global: one recomputation at a time.
            let _one = RECOMPUTE.lock().unwrap_or_else(|e| e.into_inner());
            let threads = exact.then_some(declared.threads);
            weft_ml::compute::with_threads(threads, || {
                audit::recompute(
                    &AuditJob {
                        model: &model,
                        train: &train,
                        spec,
                        data,
                        commitment: &commitment,
                        replica,
                        previous,
                        tolerance: tol,
                        device,
                        round,
                    },
                    &reveal,
                )
            })
        })
        .await??;
        let mode = if exact {
            format!("bit-exact under {}", declared.describe())
        } else {
            format!("within tolerance, {}", declared.describe())
        };
        Ok(if outcome.pass {
            (
                Verdict::Pass,
                None,
                format!("{mode}; worst rel L2 {:.2e}", outcome.worst_rel_l2()),
            )
        } else {
            (
                Verdict::Fail,
                Some(FailReason::Mismatch),
                format!("{} ({mode})", outcome.failure.unwrap_or_default()),
            )
        })
    }
}
