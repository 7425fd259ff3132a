//! `weft gov` and `weft epoch`: proposals, votes, enactment, and the epoch.

use super::*;

/// `weft gov propose …`.
#[derive(Debug, Subcommand)]
pub enum ProposeCommand {
    /// Halt a run (training and inference stop).
    Halt {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        tx: TxArgs,
    },
    /// Resume a halted run.
    Resume {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        tx: TxArgs,
    },
    /// Change a run's parameters (unchanged ones keep their current values).
    SetParams {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        tx: TxArgs,
        #[command(flatten)]
        params: Box<ParamArgs>,
    },
    /// Cancel a deferred slash before it applies.
    CancelSlash {
        /// The slash id (see `weft gov slashes`).
        slash: SlashId,
        #[command(flatten)]
        tx: TxArgs,
    },
}

/// A vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VoteArg {
    /// For.
    Aye,
    /// Against.
    Nay,
}

/// `weft gov …`.
#[derive(Debug, Subcommand)]
pub enum GovCommand {
    /// Open a stake-weighted proposal (reserves the proposal deposit).
    Propose {
        #[command(subcommand)]
        action: ProposeCommand,
    },
    /// Vote on a proposal (again, to change the vote).
    Vote {
        /// The proposal id.
        proposal: ProposalId,
        /// aye or nay.
        #[arg(value_enum)]
        vote: VoteArg,
        #[command(flatten)]
        tx: TxArgs,
    },
    /// As a validator of the current set, call for a run's immediate halt.
    EmergencyHalt {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        tx: TxArgs,
    },
    /// List proposals with their votes and tallies, newest first.
    Proposals(AtArgs),
    /// List deferred slashes.
    Slashes(AtArgs),
}

/// `weft gov …`.
pub async fn gov(url: &str, json: bool, command: GovCommand) -> Result<()> {
    match command {
        GovCommand::Propose { action } => {
            let (tx, action, what) = match action {
                ProposeCommand::Halt { run, tx } => (
                    tx,
                    governance::Action::HaltRun { run },
                    format!("halt run {run}"),
                ),
                ProposeCommand::Resume { run, tx } => (
                    tx,
                    governance::Action::ResumeRun { run },
                    format!("resume run {run}"),
                ),
                ProposeCommand::SetParams { run, tx, params } => {
                    let current = connect(url).await?.run(run, None).await?.params;
                    let params = params.apply(current)?;
                    (
                        tx,
                        governance::Action::SetRunParams { run, params },
                        format!("set the parameters of run {run}"),
                    )
                }
                ProposeCommand::CancelSlash { slash, tx } => (
                    tx,
                    governance::Action::CancelSlash { slash },
                    format!("cancel slash {slash}"),
                ),
            };
            let call = RuntimeCall::Governance(governance::Call::Propose { action });
            submit_then(
                url,
                json,
                &tx,
                call,
                &format!("governance.propose: {what}"),
                |r| {
                    id_fact(
                        "proposalId",
                        find_event(r, |e| match e {
                            RuntimeEvent::Governance(governance::Event::Proposed {
                                proposal,
                                ..
                            }) => Some(*proposal),
                            _ => None,
                        }),
                    )
                },
            )
            .await?;
            Ok(())
        }
        GovCommand::Vote { proposal, vote, tx } => {
            let aye = vote == VoteArg::Aye;
            let call = RuntimeCall::Governance(governance::Call::Vote { proposal, aye });
            let what = format!(
                "governance.vote {} on proposal {proposal}",
                if aye { "aye" } else { "nay" }
            );
            submit_then(url, json, &tx, call, &what, |r| {
                id_fact(
                    "passedEnactAt",
                    find_event(r, |e| match e {
                        RuntimeEvent::Governance(governance::Event::Passed {
                            proposal: p,
                            enact_at,
                        }) if *p == proposal => Some(*enact_at),
                        _ => None,
                    }),
                )
            })
            .await?;
            Ok(())
        }
        GovCommand::EmergencyHalt { run, tx } => {
            let call = RuntimeCall::Governance(governance::Call::EmergencyHalt { run });
            submit_then(
                url,
                json,
                &tx,
                call,
                &format!("governance.emergencyHalt run {run}"),
                |r| {
                    id_fact(
                        "halted",
                        find_event(r, |e| match e {
                            RuntimeEvent::Governance(governance::Event::EmergencyHalted {
                                run: x,
                            }) if *x == run => Some(true),
                            _ => None,
                        }),
                    )
                },
            )
            .await?;
            Ok(())
        }
        GovCommand::Proposals(at) => {
            let list = connect(url).await?.proposals(at.at).await?;
            show(json, &list, |list| {
                if list.is_empty() {
                    println!("no proposals");
                }
                for p in list {
                    let threshold = p
                        .threshold
                        .map(|t| ppb_to_percent(u128::from(t)))
                        .unwrap_or_else(|| "-".into());
                    println!(
                        "proposal {}: {:?} by {} — {:?}; ayes {} of {} (needs > {threshold}), voting ends #{}",
                        p.id,
                        p.action,
                        p.proposer,
                        p.status,
                        weft_str(&p.ayes),
                        weft_str(&p.total_stake),
                        p.end
                    );
                }
            })
        }
        GovCommand::Slashes(at) => {
            let list = connect(url).await?.slashes(at.at).await?;
            show(json, &list, |list| {
                if list.is_empty() {
                    println!("no deferred slashes");
                }
                for x in list {
                    println!(
                        "slash {}: {} pays {} for {:?} at #{} (reporter {})",
                        x.id,
                        x.offender,
                        weft_str(&x.amount),
                        x.kind,
                        x.apply_at,
                        opt(&x.reporter)
                    );
                }
            })
        }
    }
}

/// `weft epoch`.
pub async fn epoch(url: &str, json: bool, at: AtArgs) -> Result<()> {
    let e = connect(url).await?.epoch(at.at).await?;
    show(json, &e, |e| {
        println!("{}", field("Epoch", e.epoch));
        println!("{}", field("Block", format!("#{}", e.block_number)));
        println!(
            "{}",
            field(
                "Epoch length",
                format!(
                    "{} blocks (#{} – #{})",
                    e.epoch_length,
                    e.epoch_start,
                    e.next_epoch_at.saturating_sub(1)
                )
            )
        );
        println!(
            "{}",
            field("Next epoch at", format!("#{}", e.next_epoch_at))
        );
        println!(
            "{}",
            field("Bonding period", format!("{} blocks", e.bonding_period))
        );
        println!(
            "{}",
            field("Slash deferral", format!("{} blocks", e.slash_defer))
        );
        println!("{}", field("Validators", e.validators));
        println!("{}", field("Active stake", weft_str(&e.total_active_stake)));
        println!("{}", field("Total bonded", weft_str(&e.total_bonded)));
    })
}
