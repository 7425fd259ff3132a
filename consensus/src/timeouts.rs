//! Step timeouts and their identities.
//!
//! Tendermint waits a bounded time at each step before giving up on the round:
//!
//! | kind          | base | started when                                  | on expiry          |
//! |---------------|------|-----------------------------------------------|--------------------|
//! | `Propose`     | 3 s  | a round starts                                | prevote nil        |
//! | `Prevote`     | 1 s  | prevotes from > 2/3 for *anything* (no polka) | precommit nil      |
//! | `Precommit`   | 1 s  | precommits from > 2/3 for *anything*          | next round         |
//! | `Rebroadcast` | 5 s  | a round starts, and after each of our votes   | re-send our votes  |
//!
//! Each grows by `delta` (500 ms) per round, so after the network stabilises the timeouts
//! eventually exceed the real message delay and a round succeeds (partial synchrony). The
//! rebroadcast timeout grows by three deltas per round (one per step), like Malachite's own
//! linear timeouts; every kind is capped at `max` (60 s).
//!
//! On the happy path no timeout fires: a proposal, a polka and a commit quorum arrive in a
//! few message delays, and the engine cancels the propose timeout as soon as it prevotes.
//!
//! A [`TimeoutId`] names one timer: `(height, round, kind)`. The node schedules a timer for
//! every [`crate::Output::ScheduleTimeout`], replacing an earlier one with the same id, and
//! calls [`crate::Engine::on_timeout`] with that id when it fires (unless cancelled first).
//! Timeouts of another height or round than the engine's current one are ignored, so a late
//! firing is harmless.

use crate::context::WeftContext;
use arc_malachitebft_core_types::{self as mt, Round, Timeout};
use parity_scale_codec::{Decode, Encode};
use std::time::Duration;

/// How long the engine waits at each step (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Wait for the round's proposal (block and proposal message) before prevoting nil.
    pub propose: Duration,
    /// Wait after > 2/3 mixed prevotes before precommitting nil.
    pub prevote: Duration,
    /// Wait after > 2/3 mixed precommits before moving to the next round.
    pub precommit: Duration,
    /// Re-send our latest votes this often while a round makes no progress.
    pub rebroadcast: Duration,
    /// Added to `propose`, `prevote` and `precommit` per round (three times to `rebroadcast`).
    pub delta: Duration,
    /// No timeout exceeds this.
    pub max: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            propose: Duration::from_secs(3),
            prevote: Duration::from_secs(1),
            precommit: Duration::from_secs(1),
            rebroadcast: Duration::from_secs(5),
            delta: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    /// The duration of a timer of `kind` at `round`.
    pub fn duration(&self, kind: TimeoutKind, round: u32) -> Duration {
        let grow = |base: Duration, steps: u32| {
            base.saturating_add(self.delta.saturating_mul(round.saturating_mul(steps)))
                .min(self.max)
        };
        match kind {
            TimeoutKind::Propose => grow(self.propose, 1),
            TimeoutKind::Prevote => grow(self.prevote, 1),
            TimeoutKind::Precommit => grow(self.precommit, 1),
            TimeoutKind::Rebroadcast => grow(self.rebroadcast, 3),
            TimeoutKind::FinalizeHeight => Duration::ZERO,
        }
    }
}

impl mt::Timeouts<WeftContext> for Timeouts {
    fn duration_for(&self, timeout: Timeout) -> Duration {
        match timeout.kind {
            mt::TimeoutKind::FinalizeHeight(d) => d,
            _ => self.duration(
                TimeoutKind::from_malachite(timeout.kind),
                timeout.round.as_u32().unwrap_or(0),
            ),
        }
    }
}

/// The kind of a timer. SCALE indices are stable (they appear in WAL entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub enum TimeoutKind {
    /// Waiting for a proposal.
    #[codec(index = 0)]
    Propose,
    /// Waiting after mixed prevotes.
    #[codec(index = 1)]
    Prevote,
    /// Waiting after mixed precommits.
    #[codec(index = 2)]
    Precommit,
    /// Re-sending our votes.
    #[codec(index = 3)]
    Rebroadcast,
    /// End of a finalization window. Never scheduled: the engine finalizes at once.
    #[codec(index = 4)]
    FinalizeHeight,
}

impl TimeoutKind {
    pub(crate) fn from_malachite(kind: mt::TimeoutKind) -> Self {
        match kind {
            mt::TimeoutKind::Propose => TimeoutKind::Propose,
            mt::TimeoutKind::Prevote => TimeoutKind::Prevote,
            mt::TimeoutKind::Precommit => TimeoutKind::Precommit,
            mt::TimeoutKind::Rebroadcast => TimeoutKind::Rebroadcast,
            mt::TimeoutKind::FinalizeHeight(_) => TimeoutKind::FinalizeHeight,
        }
    }

    pub(crate) fn to_malachite(self) -> mt::TimeoutKind {
        match self {
            TimeoutKind::Propose => mt::TimeoutKind::Propose,
            TimeoutKind::Prevote => mt::TimeoutKind::Prevote,
            TimeoutKind::Precommit => mt::TimeoutKind::Precommit,
            TimeoutKind::Rebroadcast => mt::TimeoutKind::Rebroadcast,
            TimeoutKind::FinalizeHeight => mt::TimeoutKind::FinalizeHeight(Duration::ZERO),
        }
    }
}

/// One timer: the height and round it belongs to, and its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeoutId {
    /// The height.
    pub height: u64,
    /// The round (the round the timer was started in).
    pub round: u32,
    /// What it waits for.
    pub kind: TimeoutKind,
}

impl TimeoutId {
    pub(crate) fn from_malachite(height: u64, timeout: Timeout) -> Self {
        TimeoutId {
            height,
            round: timeout.round.as_u32().unwrap_or(0),
            kind: TimeoutKind::from_malachite(timeout.kind),
        }
    }

    pub(crate) fn to_malachite(self) -> Timeout {
        Timeout::new(Round::new(self.round), self.kind.to_malachite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_grow_per_round_and_cap() {
        let t = Timeouts::default();
        assert_eq!(t.duration(TimeoutKind::Propose, 0), Duration::from_secs(3));
        assert_eq!(
            t.duration(TimeoutKind::Propose, 2),
            Duration::from_secs(4),
            "+500 ms per round"
        );
        assert_eq!(
            t.duration(TimeoutKind::Prevote, 1),
            Duration::from_millis(1500)
        );
        assert_eq!(
            t.duration(TimeoutKind::Rebroadcast, 1),
            Duration::from_millis(6500)
        );
        assert_eq!(
            t.duration(TimeoutKind::Precommit, u32::MAX),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn ids_round_trip_through_malachite() {
        for kind in [
            TimeoutKind::Propose,
            TimeoutKind::Prevote,
            TimeoutKind::Precommit,
            TimeoutKind::Rebroadcast,
        ] {
            let id = TimeoutId {
                height: 9,
                round: 4,
                kind,
            };
            assert_eq!(TimeoutId::from_malachite(9, id.to_malachite()), id);
        }
    }
}
