//! Desks: the parts of a stage that answer requests outside the pipeline protocol (reveals
//! and auditor hellos, inference), whether the stage is training or has finished. The link
//! (and the after-training server) hands each decoded request to its desks in order; the
//! first that takes it answers, and pipeline traffic goes to the stage protocol.

use crate::wire::{Request, Response};
use std::sync::Arc;
use weft_p2p::PeerId;

/// Answers some kinds of [`Request`].
pub trait RequestDesk: Send + Sync {
    /// The answer to `request` from `peer`, or `None` if this desk does not take its kind.
    fn answer(&self, peer: &PeerId, request: &Request) -> Option<Response>;
}

impl std::fmt::Debug for dyn RequestDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestDesk")
    }
}

/// The desks of a stage, asked in order.
pub type Desks = Vec<Arc<dyn RequestDesk>>;

/// The first desk's answer to `request`, if any desk takes it.
pub fn answer(
    desks: &[Arc<dyn RequestDesk>],
    peer: &PeerId,
    request: &Request,
) -> Option<Response> {
    desks.iter().find_map(|d| d.answer(peer, request))
}
