//! `weft run`: registering runs (the JSON surface of the typed run spec), reading runs and
//! their stage assignments, pausing, halting.

use super::*;

/// Overrides of a run's parameters (defaults: the development values, or `--params`).
#[derive(Debug, Args, Default)]
pub struct ParamArgs {
    /// A JSON file (or inline JSON) with all the run parameters, as `weft run show N --json`
    /// prints them under "params"; the flags below override it.
    #[arg(long, value_name = "FILE-or-JSON")]
    params: Option<String>,
    /// Probability that a commitment is audited (10%, 0.1, 1/10).
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    audit_probability: Option<Perbill>,
    /// Stake fraction slashed for a failed or unrevealed step.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    trainer_slash: Option<Perbill>,
    /// Stake fraction slashed from an auditor whose verdict is contradicted.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    auditor_slash: Option<Perbill>,
    /// Stake fraction slashed from an auditor who does not attest.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    missed_attestation_slash: Option<Perbill>,
    /// Share of the auditors' stake that settles an audit (at least 1/2).
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    settle_threshold: Option<Perbill>,
    /// Blocks after a commitment whose randomness selects it for audit.
    #[arg(long, value_name = "BLOCKS")]
    selection_delay: Option<u32>,
    /// Blocks after selection by which the trainer must reveal.
    #[arg(long, value_name = "BLOCKS")]
    reveal_window: Option<u32>,
    /// Blocks after selection by which auditors must attest.
    #[arg(long, value_name = "BLOCKS")]
    attest_window: Option<u32>,
    /// Steps each stage may advance per epoch (0: no limit).
    #[arg(long, value_name = "STEPS")]
    steps_per_epoch: Option<u32>,
    /// Credentials minted to the owners per epoch.
    #[arg(long, value_name = "N")]
    credentials_per_epoch: Option<u128>,
    /// Share of all active stake whose ayes halt the run.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    halt_threshold: Option<Perbill>,
    /// Share of all active stake whose ayes resume the run or change its parameters.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    resume_threshold: Option<Perbill>,
    /// Most stage slots of the run one account may hold (unextractability cap).
    #[arg(long, value_name = "N")]
    max_stages_per_account: Option<StageIndex>,
    /// Auditors assigned per stage.
    #[arg(long, value_name = "N")]
    auditors_per_stage: Option<u16>,
    /// Most stages of the run one validator audits.
    #[arg(long, value_name = "N")]
    max_stages_per_auditor: Option<StageIndex>,
    /// Largest relative L2 error per tensor in recomputation.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    tolerance_rel_l2: Option<Perbill>,
    /// Largest element error in recomputation, as a fraction of the tensor's largest value.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    tolerance_max_abs_rel: Option<Perbill>,
    /// Largest error of a weight update relative to the update's norm.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    tolerance_update_rel_l2: Option<Perbill>,
    /// Units of a plain credited step.
    #[arg(long, value_name = "UNITS")]
    base_units: Option<u64>,
    /// Extra fraction for the earliest step.
    #[arg(long, value_name = "FRACTION", value_parser = parse_perbill)]
    early_bonus: Option<Perbill>,
    /// Steps over which the early bonus decays to zero.
    #[arg(long, value_name = "STEPS")]
    early_horizon: Option<u64>,
}

impl ParamArgs {
    /// `base` (or the `--params` file), with the flags applied.
    pub(super) fn apply(&self, base: runs::RunParams) -> Result<runs::RunParams> {
        let mut p = match &self.params {
            Some(src) => serde_json::from_slice(&read_bytes(src)?)
                .with_context(|| format!("{src}: not valid run parameters JSON"))?,
            None => base,
        };
        macro_rules! set {
            ($($field:ident => $($path:ident).+),* $(,)?) => {
                $(if let Some(v) = self.$field { p.$($path).+ = v; })*
            };
        }
        set! {
            audit_probability => audit_probability,
            trainer_slash => trainer_slash,
            auditor_slash => auditor_slash,
            missed_attestation_slash => missed_attestation_slash,
            settle_threshold => settle_threshold,
            selection_delay => selection_delay,
            reveal_window => reveal_window,
            attest_window => attest_window,
            steps_per_epoch => steps_per_epoch,
            credentials_per_epoch => credentials_per_epoch,
            halt_threshold => halt_threshold,
            resume_threshold => resume_threshold,
            max_stages_per_account => max_stages_per_account,
            auditors_per_stage => auditors_per_stage,
            max_stages_per_auditor => max_stages_per_auditor,
            tolerance_rel_l2 => tolerance.rel_l2,
            tolerance_max_abs_rel => tolerance.max_abs_rel,
            tolerance_update_rel_l2 => tolerance.update_rel_l2,
            base_units => risk.base_units,
            early_bonus => risk.early_bonus,
            early_horizon => risk.early_horizon,
        }
        Ok(p)
    }
}

/// `weft run register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    tx: TxArgs,
    /// The model configuration: a JSON file, or inline JSON.
    #[arg(long, value_name = "FILE-or-JSON")]
    config: String,
    /// Pipeline stages.
    #[arg(long)]
    stages: StageIndex,
    /// Replicas per stage.
    #[arg(long, default_value_t = 1)]
    replicas: u16,
    /// The dataset manifest's blake3 hash.
    #[arg(long, value_name = "0xHASH")]
    dataset_hash: Hash,
    /// Hyper-parameters: a JSON file, or inline JSON (`micro_batch_size`, `lr` and
    /// `total_steps` are required).
    #[arg(long, value_name = "FILE-or-JSON")]
    hyper_params: String,
    /// Steps until the run finishes (0: the schedule's `total_steps`).
    #[arg(long, default_value_t = 0)]
    max_steps: u64,
    /// The designer's bond in WEFT (reserved until the run finishes).
    #[arg(long, value_name = "WEFT", default_value = "100", value_parser = parse_weft)]
    bond: Balance,
    #[command(flatten)]
    params: ParamArgs,
}

/// `weft run …`.
#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Register a training run (as its model designer, with a bond).
    Register(Box<RegisterArgs>),
    /// Show a run: specification, parameters and status.
    Show {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        at: AtArgs,
    },
    /// List every run.
    List(AtArgs),
    /// Show who trains and who audits each stage of a run.
    Assignments {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Join a run as a trainer candidate (assigned at the next epoch boundary).
    Join {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        tx: TxArgs,
    },
    /// Leave a run (slots are released at the next epoch boundary).
    Leave {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        tx: TxArgs,
    },
}

fn print_run(r: &RunJson) {
    println!("{}", field("Run", r.id));
    println!(
        "{}",
        field(
            "Status",
            format!(
                "{:?}{}",
                r.status,
                if r.paused {
                    " (paused: a stage has no trainer)"
                } else {
                    ""
                }
            )
        )
    );
    println!("{}", field("Accepting work", r.accepting_work));
    println!("{}", field("Designer", r.designer));
    println!("{}", field("Bond", weft_str(&r.bond)));
    println!(
        "{}",
        field(
            "Stages",
            format!("{} × {} replica(s)", r.stages, r.replicas)
        )
    );
    println!(
        "{}",
        field("Model", weft_cli::render::model_spec(&r.model_config))
    );
    println!("{}", field("Config hash", r.config_hash));
    println!("{}", field("Dataset hash", r.dataset_hash));
    println!(
        "{}",
        field(
            "Hyper-params",
            weft_cli::render::hyper_params(&r.hyper_params)
        )
    );
    println!(
        "{}",
        field(
            "Max steps",
            if r.max_steps == 0 {
                format!("{} (the schedule's total_steps)", r.final_steps)
            } else {
                r.final_steps.to_string()
            }
        )
    );
    println!(
        "{}",
        field("Registered at", format!("#{}", r.registered_at))
    );
    println!("{}", field("Epochs trained", r.epochs_trained));
    let p = &r.params;
    println!("{}", field("Audit prob.", perbill(p.audit_probability)));
    println!("{}", field("Trainer slash", perbill(p.trainer_slash)));
    println!("{}", field("Settle threshold", perbill(p.settle_threshold)));
    println!(
        "{}",
        field(
            "Windows",
            format!(
                "selection +{}, reveal +{}, attest +{} blocks",
                p.selection_delay, p.reveal_window, p.attest_window
            )
        )
    );
    println!("{}", field("Creds per epoch", p.credentials_per_epoch));
    println!(
        "{}",
        field(
            "Halt / resume",
            format!(
                "{} / {} of active stake",
                perbill(p.halt_threshold),
                perbill(p.resume_threshold)
            )
        )
    );
    println!(
        "{}",
        field(
            "Caps",
            format!(
                "{} stage(s) per trainer, {} per auditor, {} auditor(s) per stage",
                p.max_stages_per_account, p.max_stages_per_auditor, p.auditors_per_stage
            )
        )
    );
}

fn print_assignments(a: &StageAssignmentsJson) {
    println!("{}", field("Run", a.run_id));
    println!(
        "{}",
        field(
            "Status",
            format!("{:?}{}", a.status, if a.paused { " (paused)" } else { "" })
        )
    );
    println!("{}", field("Epoch", a.epoch));
    for st in &a.stages {
        for slot in &st.replicas {
            let who = match &slot.trainer {
                Some(t) => format!("{t} peer {} {}", opt(&slot.peer_id), slot.addrs.join(" ")),
                None => "EMPTY".to_string(),
            };
            println!(
                "  stage {} replica {}: {who} (next step {})",
                st.stage, slot.replica, slot.next_step
            );
        }
        let auditors: Vec<String> = st.auditors.iter().map(|a| a.to_string()).collect();
        println!(
            "  stage {} auditors: {}",
            st.stage,
            if auditors.is_empty() {
                "none".into()
            } else {
                auditors.join(", ")
            }
        );
    }
    println!("{}", field("Candidates", a.candidates.len()));
    for c in &a.candidates {
        println!("  {c}");
    }
}

/// `weft run …`.
pub async fn run(url: &str, json: bool, command: RunCommand) -> Result<()> {
    match command {
        RunCommand::Register(a) => {
            // Converted to the typed values and checked against the pallet's rules here,
            // so a run that cannot train is refused before a fee is paid.
            let (model_config, hyper_params) = weft_cli::run_spec::run_from_json(
                &read_bytes(&a.config)?,
                &read_bytes(&a.hyper_params)?,
                a.stages,
                a.replicas,
                a.max_steps,
            )?;
            let params = a.params.apply(runs::RunParams::default())?;
            runs::check_params(&params, a.stages)?;
            let spec = runs::RunSpec {
                model_config,
                stages: a.stages,
                replicas: a.replicas,
                dataset_hash: a.dataset_hash,
                hyper_params,
                max_steps: a.max_steps,
                bond: a.bond,
                params,
            };
            let what = format!(
                "runs.registerRun {} stages × {} replica(s), bond {}",
                a.stages,
                a.replicas,
                weft(a.bond)
            );
            let call = RuntimeCall::Runs(runs::Call::RegisterRun { spec });
            submit_then(url, json, &a.tx, call, &what, |r| {
                id_fact(
                    "runId",
                    find_event(r, |e| match e {
                        RuntimeEvent::Runs(runs::Event::RunRegistered { run, .. }) => Some(*run),
                        _ => None,
                    }),
                )
            })
            .await?;
            Ok(())
        }
        RunCommand::Show { run, at } => {
            let r = connect(url).await?.run(run, at.at).await?;
            show(json, &r, print_run)
        }
        RunCommand::List(at) => {
            let list = connect(url).await?.runs(at.at).await?;
            show(json, &list, |list| {
                if list.is_empty() {
                    println!("no runs");
                }
                for r in list {
                    println!(
                        "run {}: {:?}{} {} stages × {}, designer {}, audit {}",
                        r.id,
                        r.status,
                        if r.paused { " (paused)" } else { "" },
                        r.stages,
                        r.replicas,
                        r.designer,
                        perbill(r.params.audit_probability)
                    );
                }
            })
        }
        RunCommand::Assignments { run, at } => {
            let a = connect(url).await?.stage_assignments(run, at.at).await?;
            show(json, &a, print_assignments)
        }
        RunCommand::Join { run, tx } => {
            let call = RuntimeCall::Stages(stages::Call::JoinRun { run });
            submit(url, json, &tx, call, &format!("stages.joinRun {run}")).await
        }
        RunCommand::Leave { run, tx } => {
            let call = RuntimeCall::Stages(stages::Call::LeaveRun { run });
            submit(url, json, &tx, call, &format!("stages.leaveRun {run}")).await
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn param_overrides() {
        let a = ParamArgs {
            audit_probability: Some(Perbill::ONE),
            attest_window: Some(60),
            tolerance_rel_l2: Some(Perbill::from_percent(2)),
            early_horizon: Some(5),
            ..Default::default()
        };
        let p = a.apply(runs::RunParams::default()).unwrap();
        assert_eq!(p.audit_probability, Perbill::ONE);
        assert_eq!(p.attest_window, 60);
        assert_eq!(p.tolerance.rel_l2, Perbill::from_percent(2));
        assert_eq!(p.risk.early_horizon, 5);
        assert_eq!(p.reveal_window, runs::RunParams::default().reveal_window);
        // A full parameter set as JSON, then a flag on top.
        let json = serde_json::to_string(&runs::RunParams::default()).unwrap();
        let a = ParamArgs {
            params: Some(json),
            selection_delay: Some(3),
            ..Default::default()
        };
        assert_eq!(a.apply(p).unwrap().selection_delay, 3);
        let a = ParamArgs {
            params: Some("{\"nope\": 1}".into()),
            ..Default::default()
        };
        assert!(a.apply(runs::RunParams::default()).is_err());
    }
}
