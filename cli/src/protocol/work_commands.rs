//! `weft work`: committing steps, listing and attesting audits.

use super::*;

/// An auditor's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerdictArg {
    /// Recomputation matched within tolerance.
    Pass,
    /// It did not (or nothing was revealed).
    Fail,
}

/// Why an auditor fails a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReasonArg {
    /// Recomputation outside tolerance, or the reveal does not match the roots.
    Mismatch,
    /// Nothing revealed by the reveal deadline.
    NoReveal,
    /// Revealed after the reveal deadline.
    Late,
}

/// `weft work commit`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("root-source").required(true).args(["roots", "roots_from"])))]
pub struct CommitArgs {
    #[command(flatten)]
    tx: TxArgs,
    /// The run id.
    #[arg(long)]
    run: RunId,
    /// The stage; default: the one slot the signer holds in the run.
    #[arg(long)]
    stage: Option<StageIndex>,
    /// The replica; default: the one slot the signer holds in the run.
    #[arg(long)]
    replica: Option<Replica>,
    /// The step; default: the slot's next step.
    #[arg(long)]
    step: Option<Step>,
    /// The step's Merkle roots: a JSON file or inline JSON with weightsBefore, inputs,
    /// outputs, outputGrads, inputGrads, weightsAfter, optimizerBefore, optimizerAfter and
    /// optionally update (default: zero, or --update-root).
    #[arg(long, value_name = "FILE-or-JSON")]
    roots: Option<String>,
    /// Derive every root from this text and the slot and step (tests and debugging). With
    /// --included the weights and optimizer roots are those of replica 0's slot, as the
    /// replicas of a stage that average all hold the same weights.
    #[arg(long, value_name = "TEXT")]
    roots_from: Option<String>,
    /// The replicas whose updates the step aggregated, e.g. 0,1,2: required where the run's
    /// replicas average, refused where they train apart.
    #[arg(long, value_name = "R,R,…", value_parser = parse_included)]
    included: Option<work::Included>,
    /// Another included replica's update as this replica received it: its replica number,
    /// the root of the update and the sender's seal over it (`Direction::Update`), e.g.
    /// `1:0xROOT:0xSIG`. Once per included replica other than this one (the chain refuses a
    /// round that misses one); in any order, sent ascending by replica. Only with
    /// --included.
    #[arg(
        long = "received",
        value_name = "R:0xROOT:0xSIG",
        value_parser = parse_received,
        requires = "included"
    )]
    received: Vec<work::ReceivedUpdate>,
    /// The root of the update this replica sent to the other replicas of its stage (0x
    /// hash); default: the `update` of --roots, else zero (as where replicas train apart).
    #[arg(long, value_name = "0xHASH")]
    update_root: Option<Hash>,
    /// The step's loss (last stage only), e.g. 2.75 (stored × 10⁶).
    #[arg(long, value_parser = parse_loss)]
    loss: Option<u64>,
    /// The previous stage's seal over the step's `inputs` root (0x + 128 hex digits).
    #[arg(long)]
    input_seal: Option<work::SealSignature>,
    /// The next stage's seal over the step's `outputGrads` root.
    #[arg(long)]
    grad_seal: Option<work::SealSignature>,
}

/// `weft work …`.
#[derive(Debug, Subcommand)]
pub enum WorkCommand {
    /// Commit the Merkle roots of one step of a slot (what the trainer does after each step).
    Commit(Box<CommitArgs>),
    /// Attest an audit as one of its auditors, signed with the validator's BLS key.
    Attest {
        #[command(flatten)]
        tx: TxArgs,
        /// The audit id (= the commitment id).
        #[arg(long)]
        audit: CommitmentId,
        /// pass or fail.
        #[arg(long, value_enum)]
        verdict: VerdictArg,
        /// Why it fails (default with fail: mismatch).
        #[arg(long, value_enum)]
        reason: Option<ReasonArg>,
        /// BLS seed (0x hex or text); default: derived from the --from secret URI.
        #[arg(long, value_name = "SEED")]
        bls_seed: Option<String>,
    },
    /// List the audits of a run, newest first.
    Audits {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Show one audit.
    Audit {
        /// The audit id.
        id: CommitmentId,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Show the commitment of one step of one slot.
    Commitment {
        /// The run id.
        #[arg(long)]
        run: RunId,
        /// The stage.
        #[arg(long)]
        stage: StageIndex,
        /// The replica.
        #[arg(long, default_value_t = 0)]
        replica: Replica,
        /// The step.
        #[arg(long)]
        step: Step,
        #[command(flatten)]
        at: AtArgs,
    },
}

/// A list of replica numbers (`0,1,3`) as the bitmap a commitment carries.
pub fn parse_included(text: &str) -> std::result::Result<work::Included, String> {
    let mut replicas = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let r: Replica = part
            .parse()
            .map_err(|_| format!("{part:?} is not a replica number"))?;
        replicas.push(r);
    }
    let max = work::Included::MAX_REPLICAS;
    work::Included::of(replicas).ok_or_else(|| format!("replicas are numbered below {max}"))
}

/// One `--received` entry, `REPLICA:0xROOT:0xSIG`: another replica's update root and its
/// seal over it.
pub fn parse_received(text: &str) -> std::result::Result<work::ReceivedUpdate, String> {
    let mut parts = text.trim().splitn(3, ':');
    let (Some(replica), Some(root), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("{text:?} is not REPLICA:0xROOT:0xSIG"));
    };
    let replica: Replica = replica
        .trim()
        .parse()
        .map_err(|_| format!("{replica:?} is not a replica number"))?;
    let root: Hash = root
        .trim()
        .parse()
        .map_err(|e| format!("update root {root:?}: {e}"))?;
    let signature: work::SealSignature = signature.trim().parse()?;
    Ok(work::ReceivedUpdate {
        replica,
        root,
        signature,
    })
}

/// The round of a commitment from `--included` and `--received` (sorted by replica, as the
/// chain requires); `None` without `--included`.
fn round_of(
    included: Option<work::Included>,
    mut received: Vec<work::ReceivedUpdate>,
) -> Option<work::Round> {
    received.sort_by_key(|e| e.replica);
    included.map(|included| work::Round { included, received })
}

/// Step roots from `--roots` JSON: `update` may be absent (zero).
fn roots_from_json(src: &str, bytes: &[u8]) -> Result<work::StepRoots> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes)
        .with_context(|| format!("{src}: not a JSON object of step roots"))?;
    if let Some(map) = v.as_object_mut() {
        map.entry("update")
            .or_insert_with(|| serde_json::json!(Hash::ZERO));
    }
    serde_json::from_value(v).with_context(|| format!("{src}: not a JSON object of step roots"))
}

/// Roots derived from `text` and the slot and step: `blake3("weft-cli/roots/v1" ‖ text ‖
/// run ‖ stage ‖ replica ‖ step ‖ name)` per root. The weights and optimizer states are a
/// chain the chain accepts (it requires each step to start where the slot's last one
/// ended): the state before step `s` is derived from `s` and the slot alone, whatever the
/// text, `before = state(s)`, `after = state(s + 1)`.
pub fn derived_roots(
    text: &str,
    run: RunId,
    stage: StageIndex,
    replica: Replica,
    step: Step,
) -> work::StepRoots {
    // `place` is the stage for what is the stage's own, and the boundary `b` (between
    // stages b and b + 1) for what crosses one, so that neighbours derive the same root for
    // what one sends and the other receives, as honest trainers commit.
    let derive = |text: &str, place: u32, step: Step, name: &str| {
        let mut b = b"weft-cli/roots/v2".to_vec();
        b.extend_from_slice(text.as_bytes());
        b.extend_from_slice(&run.to_le_bytes());
        b.extend_from_slice(&place.to_le_bytes());
        b.extend_from_slice(&replica.to_le_bytes());
        b.extend_from_slice(&step.to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        blake3_256(&b)
    };
    let own = u32::from(stage);
    let stage_root = |name: &str| derive(text, own, step, name);
    let boundary_root = |boundary: u32, name: &str| derive(text, boundary, step, name);
    let state = |step: Step, name: &str| derive("", own, step, name);
    let (inputs, input_grads) = match own.checked_sub(1) {
        Some(b) => (
            boundary_root(b, "activations"),
            boundary_root(b, "gradients"),
        ),
        None => (stage_root("tokens"), Hash::ZERO),
    };
    work::StepRoots {
        weights_before: state(step, "weights"),
        inputs,
        outputs: boundary_root(own, "activations"),
        output_grads: boundary_root(own, "gradients"),
        input_grads,
        weights_after: state(step.saturating_add(1), "weights"),
        optimizer_before: state(step, "optimizer"),
        optimizer_after: state(step.saturating_add(1), "optimizer"),
        update: Hash::ZERO,
    }
}

/// `roots` with the weights and optimizer roots of replica 0's derivation (`derive(0)`): the
/// replicas of a stage that average hold the same state before and after every step.
fn shared_state(
    roots: work::StepRoots,
    derive: impl FnOnce(Replica) -> work::StepRoots,
) -> work::StepRoots {
    let shared = derive(0);
    work::StepRoots {
        weights_before: shared.weights_before,
        weights_after: shared.weights_after,
        optimizer_before: shared.optimizer_before,
        optimizer_after: shared.optimizer_after,
        ..roots
    }
}

/// The signer's slot and its next step, from `weft_stageAssignments`, filling in what the
/// user did not give.
async fn resolve_slot(client: &Client, a: &CommitArgs) -> Result<(StageIndex, Replica, Step)> {
    let me = a.tx.from.pair.account_id();
    let asg = client.stage_assignments(a.run, None).await?;
    let mine: Vec<(StageIndex, Replica, Step)> = asg
        .stages
        .iter()
        .flat_map(|st| st.replicas.iter().map(move |r| (st.stage, r)))
        .filter(|(st, r)| {
            a.stage.is_none_or(|s| s == *st) && a.replica.is_none_or(|x| x == r.replica)
        })
        .filter(|(_, r)| r.trainer == Some(me) || (a.stage.is_some() && a.replica.is_some()))
        .map(|(st, r)| (st, r.replica, r.next_step))
        .collect();
    match mine.as_slice() {
        [(st, rep, next)] => Ok((*st, *rep, a.step.unwrap_or(*next))),
        [] if a.stage.is_some() && a.replica.is_some() => bail!(
            "run {} has no stage {} replica {}",
            a.run,
            a.stage.unwrap_or_default(),
            a.replica.unwrap_or_default()
        ),
        [] => bail!("{me} holds no slot of run {} (see `weft run assignments {}`); give --stage and --replica", a.run, a.run),
        _ => bail!("{me} holds several slots of run {}: give --stage and --replica", a.run),
    }
}

fn print_audit(a: &AuditJson) {
    let status = match (a.status, a.verdict) {
        (AuditStatus::Settled, Some(v)) => format!("settled: {v:?}"),
        (s, _) => format!("{s:?}"),
    };
    println!("{}", field("Audit", a.id));
    println!(
        "{}",
        field(
            "Step",
            format!(
                "run {} stage {} replica {} step {}",
                a.run_id, a.stage, a.replica, a.step
            )
        )
    );
    println!("{}", field("Trainer", a.trainer));
    println!("{}", field("Status", status));
    println!("{}", field("Opened at", format!("#{}", a.opened_at)));
    println!("{}", field("Reveal by", format!("#{}", a.reveal_deadline)));
    println!("{}", field("Attest by", format!("#{}", a.attest_deadline)));
    println!(
        "{}",
        field("Threshold", ppb_to_percent(u128::from(a.threshold)))
    );
    for s in &a.auditors {
        let att = a.attestations.iter().find(|x| x.auditor == s.account);
        let said = match att {
            Some(x) => match x.reason {
                Some(r) => format!("{:?} ({r:?})", x.verdict),
                None => format!("{:?}", x.verdict),
            },
            None => "not yet".to_string(),
        };
        println!("  auditor {} {}: {said}", s.account, weft_str(&s.stake));
    }
}

/// `weft work …`.
pub async fn work(url: &str, json: bool, command: WorkCommand) -> Result<()> {
    match command {
        WorkCommand::Commit(a) => {
            let client = connect(url).await?;
            let (stage, replica, step) = resolve_slot(&client, &a).await?;
            let mut roots = match (&a.roots, &a.roots_from) {
                (Some(src), _) => roots_from_json(src, &read_bytes(src)?)?,
                (None, Some(text)) if a.included.is_some() => {
                    shared_state(derived_roots(text, a.run, stage, replica, step), |r| {
                        derived_roots(text, a.run, stage, r, step)
                    })
                }
                (None, Some(text)) => derived_roots(text, a.run, stage, replica, step),
                (None, None) => bail!("give --roots or --roots-from"),
            };
            if let Some(update) = a.update_root {
                roots.update = update;
            }
            let what = format!(
                "work.commitStep run {} stage {stage} replica {replica} step {step}{}",
                a.run,
                a.loss
                    .map(|l| format!(" loss {}.{:06}", l / 1_000_000, l % 1_000_000))
                    .unwrap_or_default()
            );
            let call = RuntimeCall::Work(work::Call::CommitStep {
                run: a.run,
                stage,
                replica,
                step,
                roots,
                loss: a.loss,
                compute: weft_primitives::compute::ComputeClass::UNDECLARED,
                seals: work::StepSeals {
                    inputs: a.input_seal,
                    output_grads: a.grad_seal,
                },
                round: round_of(a.included, a.received.clone()),
            });
            drop(client);
            submit_then(url, json, &a.tx, call, &what, |r| {
                id_fact(
                    "commitmentId",
                    find_event(r, |e| match e {
                        RuntimeEvent::Work(work::Event::StepCommitted { id, .. }) => Some(*id),
                        _ => None,
                    }),
                )
            })
            .await?;
            Ok(())
        }
        WorkCommand::Attest {
            tx,
            audit,
            verdict,
            reason,
            bls_seed,
        } => {
            let (verdict, reason) = match (verdict, reason) {
                (VerdictArg::Pass, None) => (work::Verdict::Pass, None),
                (VerdictArg::Pass, Some(_)) => bail!("--reason goes with --verdict fail only"),
                (VerdictArg::Fail, r) => (
                    work::Verdict::Fail,
                    Some(match r.unwrap_or(ReasonArg::Mismatch) {
                        ReasonArg::Mismatch => work::FailReason::Mismatch,
                        ReasonArg::NoReveal => work::FailReason::NoReveal,
                        ReasonArg::Late => work::FailReason::Late,
                    }),
                ),
            };
            let sk = bls_secret(&tx.from.suri, bls_seed.as_deref())?;
            let signature = sk
                .sign(&work::attestation_message(audit, verdict))
                .context("signing the attestation")?
                .to_bytes();
            let what = format!(
                "work.attest audit {audit} {verdict:?}{}",
                reason.map(|r| format!(" ({r:?})")).unwrap_or_default()
            );
            let call = RuntimeCall::Work(work::Call::Attest {
                audit,
                verdict,
                reason,
                signature,
            });
            submit_then(url, json, &tx, call, &what, |r| {
                id_fact(
                    "settled",
                    find_event(r, |e| match e {
                        RuntimeEvent::Work(work::Event::AuditSettled {
                            audit: id,
                            verdict,
                            ..
                        }) if *id == audit => Some(format!("{verdict:?}")),
                        _ => None,
                    }),
                )
            })
            .await?;
            Ok(())
        }
        WorkCommand::Audits { run, at } => {
            let list = connect(url).await?.audits(run, at.at).await?;
            show(json, &list, |list| {
                if list.is_empty() {
                    println!("run {run} has no audits");
                }
                for a in list {
                    let status = match (a.status, a.verdict) {
                        (AuditStatus::Settled, Some(v)) => format!("settled {v:?}"),
                        (s, _) => format!("{s:?}"),
                    };
                    println!(
                        "audit {}: stage {} replica {} step {} trainer {} — {status}, {}/{} attested, attest by #{}",
                        a.id,
                        a.stage,
                        a.replica,
                        a.step,
                        a.trainer,
                        a.attestations.len(),
                        a.auditors.len(),
                        a.attest_deadline
                    );
                }
            })
        }
        WorkCommand::Audit { id, at } => {
            let a = connect(url).await?.audit(id, at.at).await?;
            show(json, &a, print_audit)
        }
        WorkCommand::Commitment {
            run,
            stage,
            replica,
            step,
            at,
        } => {
            let c = connect(url)
                .await?
                .commitment(run, stage, replica, step, at.at)
                .await?;
            let Some(c) = c else {
                if json {
                    return print_json(&serde_json::Value::Null);
                }
                println!(
                    "run {run} stage {stage} replica {replica} has no commitment of step {step}"
                );
                return Ok(());
            };
            show(json, &c, |c| {
                println!("{}", field("Commitment", c.id));
                println!(
                    "{}",
                    field(
                        "Step",
                        format!(
                            "run {} stage {} replica {} step {}",
                            c.run_id, c.stage, c.replica, c.step
                        )
                    )
                );
                println!("{}", field("Trainer", c.trainer));
                println!("{}", field("Block", format!("#{}", c.block)));
                println!("{}", field("Status", format!("{:?}", c.status)));
                println!(
                    "{}",
                    field(
                        "Loss",
                        c.loss
                            .map(|l| format!("{}.{:06}", l / 1_000_000, l % 1_000_000))
                            .unwrap_or_else(|| "-".into())
                    )
                );
                println!("{}", field("Computed on", c.compute.describe()));
                println!("{}", field("Weights before", c.roots.weights_before));
                println!("{}", field("Weights after", c.roots.weights_after));
                if let Some(included) = &c.included {
                    let list: Vec<String> = included.iter().map(|r| r.to_string()).collect();
                    println!("{}", field("Included", list.join(",")));
                    println!("{}", field("Update", c.roots.update));
                }
                for e in &c.received {
                    println!(
                        "{}",
                        field(
                            &format!("Received from {}", e.replica),
                            match e.by {
                                Some(by) => format!("{} (sealed by {by})", e.root),
                                None => format!("{} (unverified: its sender had left)", e.root),
                            }
                        )
                    );
                }
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn derived_roots_differ_per_step_and_text() {
        let a = derived_roots("honest", 0, 1, 0, 0);
        assert_eq!(a, derived_roots("honest", 0, 1, 0, 0));
        assert_ne!(a, derived_roots("honest", 0, 1, 0, 1));
        assert_ne!(a, derived_roots("cheat", 0, 1, 0, 0));
        assert_ne!(a.inputs, a.outputs);
        // Consecutive steps chain, whatever the text.
        let b = derived_roots("cheat", 0, 1, 0, 1);
        assert_eq!(a.weights_after, b.weights_before);
        assert_eq!(a.optimizer_after, b.optimizer_before);
    }

    #[test]
    fn included_lists_and_roots_without_update() {
        let set = parse_included("0, 2,5").unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 2, 5]);
        assert_eq!(parse_included("63").unwrap(), work::Included(1 << 63));
        assert!(parse_included("64").unwrap_err().contains("below 64"));
        assert!(parse_included("").is_err());
        assert!(parse_included("1,x").unwrap_err().contains("\"x\""));
        // `--roots` JSON written before the update root existed: zero.
        let derived = derived_roots("honest", 0, 1, 0, 0);
        let mut json = serde_json::to_value(derived).unwrap();
        json.as_object_mut().unwrap().remove("update");
        let parsed = roots_from_json("inline", json.to_string().as_bytes()).unwrap();
        assert_eq!(parsed, derived);
        assert_eq!(parsed.update, Hash::ZERO);
        let mut with_update = derived;
        with_update.update = Hash([3; 32]);
        let text = serde_json::to_string(&with_update).unwrap();
        assert_eq!(
            roots_from_json("inline", text.as_bytes()).unwrap(),
            with_update
        );
        // Averaging replicas derive the same state, and still their own boundaries.
        let r1 = derived_roots("honest", 0, 1, 1, 4);
        let shared = shared_state(r1, |r| derived_roots("honest", 0, 1, r, 4));
        let r0 = derived_roots("honest", 0, 1, 0, 4);
        assert_eq!(shared.weights_after, r0.weights_after);
        assert_eq!(shared.optimizer_before, r0.optimizer_before);
        assert_ne!(r1.weights_after, r0.weights_after);
        assert_eq!(shared.inputs, r1.inputs);
    }

    #[test]
    fn received_updates_parse_and_are_sent_ascending() {
        let root = Hash([3; 32]);
        let sig = work::SealSignature([4; 64]);
        let e = parse_received(&format!("2:{root}:{}", sig.to_hex())).unwrap();
        assert_eq!(
            e,
            work::ReceivedUpdate {
                replica: 2,
                root,
                signature: sig
            }
        );
        assert!(parse_received("2:0x00")
            .unwrap_err()
            .contains("REPLICA:0xROOT:0xSIG"));
        assert!(parse_received(&format!("x:{root}:{}", sig.to_hex()))
            .unwrap_err()
            .contains("replica number"));
        assert!(parse_received(&format!("1:{root}:0x1234"))
            .unwrap_err()
            .contains("not 64"));
        let other = work::ReceivedUpdate { replica: 0, ..e };
        let round = round_of(work::Included::of([0, 1, 2]), vec![e, other]).unwrap();
        assert_eq!(round.received, vec![other, e]);
        assert_eq!(round.included, work::Included(0b111));
        assert_eq!(round_of(None, vec![]), None);
    }

    #[test]
    fn derived_roots_agree_across_each_boundary_as_honest_neighbours_do() {
        for step in 0..3 {
            let (a, b) = (
                derived_roots("honest", 0, 1, 0, step),
                derived_roots("honest", 0, 2, 0, step),
            );
            assert_eq!(a.outputs, b.inputs);
            assert_eq!(b.input_grads, a.output_grads);
            assert_ne!(a.inputs, b.inputs);
            // Another replica's pipeline, or another text, crosses other tensors.
            assert_ne!(derived_roots("honest", 0, 2, 1, step).inputs, b.inputs);
            assert_ne!(derived_roots("cheat", 0, 2, 0, step).inputs, b.inputs);
        }
    }
}
