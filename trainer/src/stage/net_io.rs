//! A step's I/O over the network: the one step schedule's [`StepIo`] on a stage's
//! [`StageLink`]. What it receives is waited for in the link's inbox (validated there);
//! what it sends is queued on the link's outbox and kept in its resend log. The values
//! exchanged outside the commitment (the other holder's embedding gradient, the global
//! norm) are kept in a [`StepAux`] so that a restart can replay the step.

use std::time::Duration;
use tch::Tensor;
use weft_ml::schedule::{sum_in_stage_order, StepIo};
use weft_ml::tensor::{from_wire, to_wire};
use weft_primitives::step::{RunId, StageIndex, Step};
use weft_stage_net::link::StageLink;
use weft_stage_net::protocol::Slot;
use weft_stage_net::store::StepAux;
use weft_stage_net::wire::Request;

/// One step of one stage over its link.
pub(super) struct NetIo<'a> {
    pub(super) link: &'a StageLink,
    pub(super) run: RunId,
    pub(super) timeout: Duration,
    pub(super) aux: StepAux,
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
}

impl StepIo for NetIo<'_> {
    fn recv_activation(&mut self, step: Step, micro: usize) -> weft_ml::Result<Tensor> {
        self.recv(step, Slot::Forward(micro_id(micro)?))
    }

    fn send_activation(&mut self, step: Step, micro: usize, a: &Tensor) -> weft_ml::Result<()> {
        let req = Request::Forward {
            run: self.run,
            step,
            micro: micro_id(micro)?,
            from_stage: self.link.stage_id(),
            tensor: to_wire(a)?,
        };
        self.link.send(self.stage() + 1, step, &req);
        Ok(())
    }

    fn recv_output_grad(&mut self, step: Step, micro: usize) -> weft_ml::Result<Tensor> {
        self.recv(step, Slot::Backward(micro_id(micro)?))
    }

    fn send_input_grad(&mut self, step: Step, micro: usize, g: &Tensor) -> weft_ml::Result<()> {
        let req = Request::Backward {
            run: self.run,
            step,
            micro: micro_id(micro)?,
            from_stage: self.link.stage_id(),
            tensor: to_wire(g)?,
        };
        let to = self
            .stage()
            .checked_sub(1)
            .ok_or_else(|| weft_ml::Error::StepIo("stage 0 sends no input gradient".into()))?;
        self.link.send(to, step, &req);
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
}
