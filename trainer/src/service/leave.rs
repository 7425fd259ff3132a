//! Leaving a run gracefully: SIGTERM or SIGINT (`systemctl stop`, Ctrl-C) to `weft-trainer
//! train`.
//!
//! A stage holder that simply exits loses what it trained but has not committed, and fails
//! the audits of its last steps (`NoReveal`, slashed 20 %) because nobody answers their
//! reveals. So the first signal starts a leave instead:
//!
//! 1. the stage finishes the step it is in and trains no further (the training gate's
//!    `leaving`, in [`super::train`]);
//! 2. the submitter commits every step trained so far (the chain then has all of it, so a
//!    successor continues from exactly where this holder stopped, and nothing trained is
//!    lost);
//! 3. only then `Stages::leave_run` is submitted: the slot is released at the next epoch
//!    boundary (committing first means no boundary can fall between a trained step and its
//!    commitment);
//! 4. once the chain no longer assigns the slot, the trainer keeps serving its committed
//!    tensors to the auditors until the audit windows of its last steps have closed, and
//!    exits with status 0.
//!
//! A second signal stops the process at once (status 130). A trainer that loses its slot
//! for another reason while not slashed (its operator ran `weft run leave`, or the chain
//! reassigned it) also serves its auditors before exiting; a slashed one exits at once.

use crate::chain::{ChainView, NodeState};
use std::time::Duration;
use tokio::sync::watch;
use weft_primitives::{AccountId, Keypair};
use weft_rpc_client::{Client, SubmitOptions, WaitFor};
use weft_runtime::RuntimeCall;

/// Whether a leave was asked for (SIGTERM or SIGINT).
#[derive(Debug, Clone)]
pub(super) struct LeaveSignal(watch::Receiver<bool>);

impl LeaveSignal {
    /// Installs the signal handlers: the first signal asks for a leave, the second exits
    /// with status 130.
    pub(super) fn install() -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            crate::serve::stopped().await;
            eprintln!(
                "leaving: finishing the current step, committing what was trained, then \
                 leaving the run and serving the auditors until their windows close \
                 (signal again to stop at once)"
            );
            let _ = tx.send(true);
            crate::serve::stopped().await;
            eprintln!("stopping at once");
            std::process::exit(130);
        });
        LeaveSignal(rx)
    }

    /// Resolves once a leave is asked for (never if the handlers are gone).
    pub(super) async fn wait(&mut self) {
        if self.0.wait_for(|v| *v).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Submits `Stages::leave_run(run)` for `key` unless it is no longer a candidate of `run`.
pub(super) async fn submit_leave(client: &Client, key: &Keypair, run: u32) -> anyhow::Result<()> {
    let me: AccountId = key.account_id();
    let view = ChainView::new(NodeState { client, at: None });
    if !view.is_candidate(run, &me).await? {
        return Ok(());
    }
    let opts = SubmitOptions {
        wait: WaitFor::InBlock,
        ..SubmitOptions::default()
    };
    let call = RuntimeCall::Stages(weft_runtime::stages::Call::LeaveRun { run });
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=8 {
        match client.submit(key, call.clone(), &opts).await {
            Ok(r) => {
                let r = r.ensure_success()?;
                println!(
                    "left run {run} (in block #{}); the slot is released at the next epoch \
                     boundary",
                    r.block_number.unwrap_or_default()
                );
                return Ok(());
            }
            Err(e) if attempt < 8 => {
                tracing::warn!(attempt, error = %e, "leave_run failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
