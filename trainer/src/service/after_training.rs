//! After the last step. A stage holder keeps answering its auditors from the tensor store
//! (reveals and auditor hellos) until the audit windows of its last commitments close, so
//! those steps can still be audited; with `--serve` it keeps serving inference and reveals
//! until it is stopped (SIGTERM or SIGINT) instead. A trainer started with `--serve` after
//! its run has finished goes straight here, serving the stage it still holds.
//!
//! A holder the chain released from its slot (it left) serves here too, and also answers
//! the slot's successor (the account the chain assigns next, admitted by `SuccessorHello`),
//! which fetches the slot's last committed state from it ([`super::handover`]): it stays
//! until the successor has committed a step of its own, at most [`HANDOVER_WAIT`] after the
//! audit windows close. Where the run's replicas average, its replica desk keeps answering
//! the stage's other replicas too, so that one still catching up gets every update it needs.

use super::listen_with_retry;
use crate::chain::{ChainView, NodeState};
use std::sync::Arc;
use std::time::Duration;
use weft_rpc_client::Client;
use weft_stage_net::access::RevealAccess;
use weft_stage_net::desk::{Desks, RequestDesk};
use weft_stage_net::reveal_server::{serve_reveals, RevealDesk};
use weft_stage_net::store::TensorStore;
use weft_stage_net::wire::{Limits, Replica, RunId, StageIndex};

/// What the stage serves after training.
pub(super) struct AfterTraining<'a> {
    /// The node.
    pub client: &'a Arc<Client>,
    /// The slot.
    pub slot: (RunId, StageIndex, Replica),
    /// Who may fetch reveals.
    pub access: Arc<RevealAccess>,
    /// The committed tensors.
    pub store: TensorStore,
    /// The inference desk.
    pub inference: Arc<dyn RequestDesk>,
    /// Replicas that average: the replica desk, which goes on answering the stage's other
    /// replicas (from its store) so that one still behind catches up.
    pub replicas: Option<Arc<dyn RequestDesk>>,
    /// Limits on received tensors.
    pub limits: Limits,
    /// The p2p identity and settings to listen with.
    pub p2p: (&'a weft_p2p::Keypair, &'a weft_p2p::Config),
    /// Serve until stopped rather than until the audit windows close.
    pub serve: bool,
    /// The audit windows of the last commitments close at this block.
    pub until_block: u64,
    /// Set when the chain released this holder from its slot: its account, and the slot's
    /// steps on chain then (the successor has its state once it commits beyond them).
    pub released: Option<(weft_primitives::AccountId, u64)>,
}

/// The longest a released holder waits for its successor after the audit windows closed.
pub(super) const HANDOVER_WAIT: Duration = Duration::from_secs(600);

/// Serves as the module docs say; returns when done.
pub(super) async fn serve_after_training(a: AfterTraining<'_>) -> anyhow::Result<()> {
    if a.serve {
        println!("serving inference and reveals until stopped");
    } else {
        println!(
            "serving reveals to the auditors until block #{}",
            a.until_block
        );
    }
    let (_net, inbound) = listen_with_retry(a.p2p.0, a.p2p.1).await?;
    let (client, until_block, serve) = (a.client, a.until_block, a.serve);
    let (access, (run, stage, replica), released) = (a.access.clone(), a.slot, a.released);
    let until = async move {
        if serve {
            crate::serve::stopped().await;
            return;
        }
        let mut windows_closed: Option<std::time::Instant> = None;
        loop {
            if let Ok(h) = client.best_header().await {
                let view = ChainView::new(NodeState {
                    client: client.as_ref(),
                    at: Some(h.hash()),
                });
                // Whom to hand the slot's state to, and whether it has it yet.
                let handed = match released {
                    None => true,
                    Some((me, steps)) => {
                        let holder = view.slot(run, stage, replica).await.ok().flatten();
                        access.set_successor(holder.filter(|x| *x != me));
                        let next = view.next_step(run, stage, replica).await.unwrap_or(0);
                        holder.is_none() || next > steps
                    }
                };
                if h.number >= until_block {
                    let since = *windows_closed.get_or_insert_with(std::time::Instant::now);
                    if handed || since.elapsed() > HANDOVER_WAIT {
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let desk = RevealDesk {
        store: a.store,
        auditors: a.access,
        slot: a.slot,
    };
    let mut desks: Desks = vec![Arc::new(desk), a.inference];
    desks.extend(a.replicas);
    serve_reveals(inbound, desks, a.limits, until).await;
    Ok(())
}

/// The limits on received tensors and the p2p settings of a stage holder listening on
/// `listen` (256 MiB messages).
pub(super) fn stage_net(listen: weft_p2p::Address) -> (Limits, weft_p2p::Config) {
    let max_bytes = 256 * 1024 * 1024;
    (
        Limits {
            max_bytes,
            ..Default::default()
        },
        weft_p2p::Config {
            listen: vec![listen],
            max_message_bytes: max_bytes + 4096,
            ..Default::default()
        },
    )
}

/// A trainer started with `--serve` after its run finished: serves the stage it holds.
pub(super) async fn serve_finished(
    args: &super::TrainArgs,
    client: &Arc<Client>,
    key: &weft_primitives::Keypair,
    setup: &crate::chain::RunSetup,
    listen: weft_p2p::Address,
    p2p_key: &weft_p2p::Keypair,
) -> anyhow::Result<()> {
    let run = setup.run;
    let view = ChainView::new(NodeState {
        client: client.as_ref(),
        at: None,
    });
    let Some(&(stage, replica)) = view.slots_of(run, &key.account_id()).await?.first() else {
        anyhow::bail!("this account holds no stage of run {run}: nothing to serve");
    };
    let spec = weft_ml::model::StageSpec::new(usize::from(stage), setup.stages())?;
    let retention = args.retention.max(args.checkpoint_every);
    let inference = crate::serve::desk_for(
        setup,
        spec,
        &args.data_dir,
        retention,
        client,
        key,
        args.serve_sessions,
    )?;
    let (limits, net_cfg) = stage_net(listen);
    println!("serving stage {stage} replica {replica} of finished run {run}");
    serve_after_training(AfterTraining {
        client,
        slot: (run, stage, replica),
        access: auditor_access(client, run, stage).await?,
        store: TensorStore::open(&args.data_dir, retention)?,
        inference,
        replicas: None,
        limits,
        p2p: (p2p_key, &net_cfg),
        serve: true,
        until_block: 0,
        released: None,
    })
    .await
}

/// A [`RevealAccess`] for the auditors of `stage` of `run` as chain state has them.
pub(super) async fn auditor_access(
    client: &Client,
    run: RunId,
    stage: StageIndex,
) -> anyhow::Result<Arc<RevealAccess>> {
    let access = Arc::new(RevealAccess::default());
    let view = ChainView::new(NodeState { client, at: None });
    refresh_auditors(&view, &access, run, stage).await?;
    Ok(access)
}

/// Sets `access` to the auditors of `stage` of `run` in `view`.
pub(super) async fn refresh_auditors<S: crate::chain::StateSource>(
    view: &ChainView<S>,
    access: &RevealAccess,
    run: RunId,
    stage: StageIndex,
) -> crate::Result<()> {
    let keys: Vec<([u8; 32], weft_bls::PublicKeyBytes)> = view
        .auditor_keys(run, stage)
        .await?
        .into_iter()
        .map(|(a, k)| (a.0, k))
        .collect();
    access.set_auditors(&keys);
    Ok(())
}
