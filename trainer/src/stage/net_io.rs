//! A step's I/O over the network: the one step schedule's [`StepIo`] on a stage's
//! [`StageLink`]. What it receives is waited for in the link's inbox (validated there);
//! what it sends is queued on the link's outbox and kept in its resend log. The values
//! exchanged outside the commitment (the other holder's embedding gradient, the global
//! norm) are kept in a [`StepAux`] so that a restart can replay the step.
//!
//! Replicas that average exchange their updates through [`ReplicaExchange`] (see
//! `super::replicas`), which keeps the set and the others' updates in the same [`StepAux`].
//!
//! # Seals
//!
//! After its last activation of a step (micro-batch `M − 1`) a stage sends the next stage
//! its seal over the root of every activation it sent, and after its last input gradient
//! (micro-batch 0, backwards) the previous stage its seal over those
//! (`weft_primitives::seal`): an ed25519 signature by its p2p identity. A receiver, after
//! the last tensor of a direction, waits for the seal, checks that it is by the peer the
//! table assigns to that neighbour and that its root is the root of the tensors it received,
//! and only then goes on; a seal that fails either check stops the step (nothing is trained
//! or committed on tensors their sender would not sign for). The seals received go into the
//! step's [`StepAux`] and from there into its commitment; the seals sent too, so a restarted
//! stage can send them again.

use super::replicas::ReplicaExchange;
use super::SendTamper;
use std::time::Duration;
use tch::Tensor;
use weft_ml::commit::root_of;
use weft_ml::schedule::{sum_in_stage_order, ReplicaRound, StepIo};
use weft_ml::tensor::{from_wire, to_wire};
use weft_primitives::seal::{seal_message, verify_by_peer_id, Direction, SealSignature};
use weft_primitives::step::{Replica, RunId, StageIndex, Step};
use weft_stage_net::link::StageLink;
use weft_stage_net::protocol::Slot;
use weft_stage_net::store::StepAux;
use weft_stage_net::wire::Request;

/// One step of one stage over its link.
pub(super) struct NetIo<'a> {
    pub(super) link: &'a StageLink,
    pub(super) run: RunId,
    pub(super) replica: Replica,
    /// The stage's p2p identity, which signs its seals.
    pub(super) identity: &'a weft_p2p::Keypair,
    pub(super) timeout: Duration,
    pub(super) aux: StepAux,
    /// Test seam: rewrites what is sent after it is committed, before it is sent.
    pub(super) tamper: Option<&'a SendTamper>,
    /// Replicas that average: this replica's part in its stage's rounds.
    pub(super) replicas: Option<&'a ReplicaExchange>,
    /// What was sent and received this step, per direction, in order (for the seals).
    pub(super) sent: [Vec<Tensor>; 2],
    pub(super) received: [Vec<Tensor>; 2],
}

/// The lanes of `sent` / `received`: what crossed each way along the pipeline.
const ACTIVATIONS: usize = 0;
const GRADIENTS: usize = 1;

/// The lane a pipeline seal of `direction` covers; updates cross between replicas, not along
/// the pipeline (`super::replicas`), and have none.
fn lane(direction: Direction) -> weft_ml::Result<usize> {
    match direction {
        Direction::Activations => Ok(ACTIVATIONS),
        Direction::Gradients => Ok(GRADIENTS),
        Direction::Update => Err(weft_ml::Error::StepIo(
            "updates are not sealed along the pipeline".into(),
        )),
    }
}

fn net(e: weft_stage_net::Error) -> weft_ml::Error {
    weft_ml::Error::StepIo(e.to_string())
}

fn micro_id(micro: usize) -> weft_ml::Result<u32> {
    u32::try_from(micro).map_err(|_| weft_ml::Error::StepIo(format!("micro-batch {micro}")))
}

impl NetIo<'_> {
    fn stage(&self) -> usize {
        self.link.shape().stage
    }

    fn recv(&self, step: Step, slot: Slot) -> weft_ml::Result<Tensor> {
        let t = self
            .link
            .wait_tensor(step, slot, self.timeout)
            .map_err(net)?;
        from_wire(&t)
    }

    /// What leaves for the neighbour: `t` itself, or, with a tamper installed, a private
    /// copy rewritten by it (the worker's committed tensor stays as it was).
    fn outgoing(
        &self,
        step: Step,
        direction: Direction,
        micro: usize,
        t: &Tensor,
    ) -> weft_ml::Result<Tensor> {
        let Some(tamper) = self.tamper else {
            return Ok(t.shallow_clone());
        };
        let mut sent = t.f_detach_copy()?;
        (tamper.0)(step, direction, micro, &mut sent)?;
        Ok(sent)
    }

    /// Sends `to` this stage's seal over what it sent in `direction` during `step`.
    fn send_seal(&mut self, to: usize, step: Step, direction: Direction) -> weft_ml::Result<()> {
        let root = root_of(&self.sent[lane(direction)?])?;
        let message = seal_message(
            self.run,
            step,
            self.link.stage_id(),
            self.replica,
            direction,
            &root,
        );
        let signed = self
            .identity
            .sign(&message)
            .map_err(|e| weft_ml::Error::StepIo(format!("sealing step {step}: {e}")))?;
        let signature: [u8; 64] = signed
            .try_into()
            .map_err(|_| weft_ml::Error::StepIo("the p2p identity is not an ed25519 key".into()))?;
        self.aux.seals_sent.push((direction, root.0, signature));
        let req = Request::Seal {
            run: self.run,
            step,
            from_stage: self.link.stage_id(),
            direction,
            root: root.0,
            signature,
        };
        self.link.send(to, step, &req);
        Ok(())
    }

    /// Waits for stage `from`'s seal over what it sent in `direction` during `step` and
    /// checks it against its peer id and what was received (see the module docs).
    fn take_seal(&mut self, from: usize, step: Step, direction: Direction) -> weft_ml::Result<()> {
        let (root, signature) = self
            .link
            .wait_seal(step, direction, self.timeout)
            .map_err(net)?;
        let refused = |why: String| {
            weft_ml::Error::StepIo(format!(
                "stage {from}'s seal over its {direction:?} of step {step} {why}; nothing \
                 received from it this step is trained on"
            ))
        };
        let received = root_of(&self.received[lane(direction)?])?;
        if received.0 != root {
            return Err(refused(format!(
                "covers root {}, but what it sent has root {received}",
                weft_primitives::Hash(root)
            )));
        }
        let peer = self
            .link
            .peer_of(from)
            .ok_or_else(|| refused("comes from a stage with no peer".into()))?;
        let from_stage = StageIndex::try_from(from)
            .map_err(|_| refused("comes from a stage out of range".into()))?;
        let message = seal_message(
            self.run,
            step,
            from_stage,
            self.replica,
            direction,
            &received,
        );
        let signature = SealSignature(signature);
        if !verify_by_peer_id(&peer.to_bytes(), &message, &signature) {
            return Err(refused(format!("is not signed by its peer {peer}")));
        }
        match direction {
            Direction::Activations => self.aux.seals_received.inputs = Some(signature),
            Direction::Gradients => self.aux.seals_received.output_grads = Some(signature),
            Direction::Update => {}
        }
        Ok(())
    }
}

impl StepIo for NetIo<'_> {
    fn recv_activation(&mut self, step: Step, micro: usize) -> weft_ml::Result<Tensor> {
        let t = self.recv(step, Slot::Forward(micro_id(micro)?))?;
        self.received[ACTIVATIONS].push(t.shallow_clone());
        if micro + 1 == self.link.shape().micro_batches {
            let from = self
                .stage()
                .checked_sub(1)
                .ok_or_else(|| weft_ml::Error::StepIo("stage 0 receives no activations".into()))?;
            self.take_seal(from, step, Direction::Activations)?;
        }
        Ok(t)
    }

    fn send_activation(&mut self, step: Step, micro: usize, a: &Tensor) -> weft_ml::Result<()> {
        let sent = self.outgoing(step, Direction::Activations, micro, a)?;
        let req = Request::Forward {
            run: self.run,
            step,
            micro: micro_id(micro)?,
            from_stage: self.link.stage_id(),
            tensor: to_wire(&sent)?,
        };
        let to = self.stage() + 1;
        self.link.send(to, step, &req);
        self.sent[ACTIVATIONS].push(sent);
        if micro + 1 == self.link.shape().micro_batches {
            self.send_seal(to, step, Direction::Activations)?;
        }
        Ok(())
    }

    fn recv_output_grad(&mut self, step: Step, micro: usize) -> weft_ml::Result<Tensor> {
        let t = self.recv(step, Slot::Backward(micro_id(micro)?))?;
        self.received[GRADIENTS].push(t.shallow_clone());
        // Backwards, micro-batch 0 is the last.
        if micro == 0 {
            self.take_seal(self.stage() + 1, step, Direction::Gradients)?;
        }
        Ok(t)
    }

    fn send_input_grad(&mut self, step: Step, micro: usize, g: &Tensor) -> weft_ml::Result<()> {
        let sent = self.outgoing(step, Direction::Gradients, micro, g)?;
        let req = Request::Backward {
            run: self.run,
            step,
            micro: micro_id(micro)?,
            from_stage: self.link.stage_id(),
            tensor: to_wire(&sent)?,
        };
        let to = self
            .stage()
            .checked_sub(1)
            .ok_or_else(|| weft_ml::Error::StepIo("stage 0 sends no input gradient".into()))?;
        self.link.send(to, step, &req);
        self.sent[GRADIENTS].push(sent);
        if micro == 0 {
            self.send_seal(to, step, Direction::Gradients)?;
        }
        Ok(())
    }

    fn exchange_shared_grad(&mut self, step: Step, own: &Tensor) -> weft_ml::Result<Tensor> {
        let n = self.link.shape().n_stages;
        let other = if self.stage() == 0 { n - 1 } else { 0 };
        let req = Request::SharedGrad {
            run: self.run,
            step,
            from_stage: self.link.stage_id(),
            tensor: to_wire(own)?,
        };
        if let Request::SharedGrad { tensor, .. } = &req {
            self.aux.shared_grad_own = Some(tensor.clone());
        }
        self.link.send(other, step, &req);
        let theirs = self
            .link
            .wait_tensor(step, Slot::SharedGrad, self.timeout)
            .map_err(net)?;
        let t = from_wire(&theirs)?;
        self.aux.shared_grad_other = Some(theirs);
        Ok(t)
    }

    fn global_sq_sum(&mut self, step: Step, own: f64) -> weft_ml::Result<f64> {
        let (k, n) = (self.stage(), self.link.shape().n_stages);
        self.aux.own_sq_sum_bits = Some(own.to_bits());
        for s in (0..n).filter(|&s| s != k) {
            let req = Request::GradSqSum {
                run: self.run,
                step,
                from_stage: self.link.stage_id(),
                bits: own.to_bits(),
            };
            self.link.send(s, step, &req);
        }
        let mut sums = Vec::with_capacity(n);
        for s in 0..n {
            sums.push(if s == k {
                own
            } else {
                let from = StageIndex::try_from(s)
                    .map_err(|_| weft_ml::Error::StepIo(format!("stage {s} out of range")))?;
                let bits = self
                    .link
                    .wait_scalar(step, Slot::GradSq(from), self.timeout)
                    .map_err(net)?;
                f64::from_bits(bits)
            });
        }
        let total = sum_in_stage_order(&sums);
        self.aux.global_sq_sum_bits = Some(total.to_bits());
        Ok(total)
    }

    fn replica_updates(
        &mut self,
        step: Step,
        sent: &[Tensor],
    ) -> weft_ml::Result<Option<ReplicaRound>> {
        let Some(exchange) = self.replicas else {
            return Ok(None);
        };
        exchange
            .round(
                self.run,
                self.link.stage_id(),
                self.replica,
                step,
                sent,
                &mut self.aux,
            )
            .map(Some)
    }
}
