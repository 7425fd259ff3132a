//! Peer reputation: a score per peer, offences that lower it, bans, and the inbound request
//! rate limit.
//!
//! Every peer starts at 0. Each [`Offence`] subtracts its [`Offence::cost`]; the score recovers
//! linearly by [`RECOVERY_PER_MINUTE`] = 10 points per minute back towards 0 (never above).
//! When it reaches [`BAN_THRESHOLD`] = −100 the peer is banned: disconnected, every connection
//! to or from it refused for `ban_duration` (5 min by default), and its score reset to 0 so it
//! starts afresh when the ban expires.
//!
//! | offence | cost | bans after |
//! |---|---|---|
//! | `BadSignature` | 100 | 1 |
//! | `Undecodable` | 40 | 3 (within ~2 min) |
//! | `Oversized` | 40 | 3 |
//! | `InvalidData` (also every gossip `Reject`) | 25 | 4 |
//! | `BadResponse` | 20 | 5 |
//! | `Spam` (a request beyond the rate limit) | 5 | 20 |
//!
//! Gossip also feeds gossipsub's invalid-message counter: 3 invalid gossip messages in a burst
//! (rejected by the node, or failing gossipsub's signature checks, which never reach the node)
//! ban the sender as well; see `behaviour.rs`.
//!
//! Rate limit: a token bucket per peer holding `max_requests_per_sec` tokens (20 by default),
//! refilled at that many per second; an inbound sync request without a token is dropped and
//! costs `Spam`.

use libp2p::PeerId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A peer at or below this score is banned.
pub const BAN_THRESHOLD: f64 = -100.0;
/// Points a negative score regains per minute.
pub const RECOVERY_PER_MINUTE: f64 = 10.0;

/// Misbehaviour the node (or the network layer itself) reports about a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Offence {
    /// Sent bytes that do not decode.
    Undecodable,
    /// Sent a frame or message beyond the limits.
    Oversized,
    /// Sent data with an invalid signature (a forged transaction, vote or block).
    BadSignature,
    /// Sent well-formed but invalid data (e.g. a transaction that fails checks).
    InvalidData,
    /// Made too many requests.
    Spam,
    /// Answered a sync request with a useless or wrong response.
    BadResponse,
}

impl Offence {
    /// Points the offence costs.
    pub fn cost(self) -> f64 {
        match self {
            Offence::BadSignature => 100.0,
            Offence::Undecodable | Offence::Oversized => 40.0,
            Offence::InvalidData => 25.0,
            Offence::BadResponse => 20.0,
            Offence::Spam => 5.0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    score: f64,
    updated: Instant,
}

impl Entry {
    fn current(&self, now: Instant) -> f64 {
        let minutes = now.saturating_duration_since(self.updated).as_secs_f64() / 60.0;
        (self.score + minutes * RECOVERY_PER_MINUTE).min(0.0)
    }
}

/// Scores of the peers that have offended recently.
#[derive(Debug, Default)]
pub struct ScoreTable {
    entries: HashMap<PeerId, Entry>,
}

impl ScoreTable {
    /// The peer's score now (0 for peers with no recent offences).
    pub fn score(&self, peer: &PeerId, now: Instant) -> f64 {
        self.entries.get(peer).map_or(0.0, |e| e.current(now))
    }

    /// Applies `offence`; returns true if the peer must now be banned (its score is then reset).
    pub fn punish(&mut self, peer: PeerId, offence: Offence, now: Instant) -> bool {
        let score = self.score(&peer, now) - offence.cost();
        if score <= BAN_THRESHOLD {
            self.entries.remove(&peer);
            return true;
        }
        self.entries.insert(
            peer,
            Entry {
                score,
                updated: now,
            },
        );
        false
    }

    /// Forgets peers whose score has recovered to 0.
    pub fn prune(&mut self, now: Instant) {
        self.entries.retain(|_, e| e.current(now) < 0.0);
    }
}

/// Per-peer token buckets for inbound requests.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    buckets: HashMap<PeerId, (f64, Instant)>,
}

impl RateLimiter {
    /// `per_sec` requests per second, bursts of `per_sec`.
    pub fn new(per_sec: u32) -> Self {
        RateLimiter {
            per_sec: f64::from(per_sec.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `peer`; false if it has none left.
    pub fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        let per_sec = self.per_sec;
        let (tokens, last) = self.buckets.entry(peer).or_insert((per_sec, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * per_sec).min(per_sec);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets buckets that have been full for a while.
    pub fn prune(&mut self, now: Instant) {
        self.buckets
            .retain(|_, (_, last)| now.saturating_duration_since(*last) < Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offences_ban_at_the_documented_counts() {
        let now = Instant::now();
        let mut table = ScoreTable::default();
        let p = PeerId::random();
        assert!(table.punish(p, Offence::BadSignature, now));
        assert_eq!(table.score(&p, now), 0.0, "reset after the ban");
        for (offence, count) in [
            (Offence::Undecodable, 3),
            (Offence::Oversized, 3),
            (Offence::InvalidData, 4),
            (Offence::BadResponse, 5),
            (Offence::Spam, 20),
        ] {
            let p = PeerId::random();
            for i in 1..count {
                assert!(!table.punish(p, offence, now), "{offence:?} #{i}");
            }
            assert!(table.punish(p, offence, now), "{offence:?} #{count}");
        }
    }

    #[test]
    fn scores_recover_over_time() {
        let start = Instant::now();
        let mut table = ScoreTable::default();
        let p = PeerId::random();
        assert!(!table.punish(p, Offence::Undecodable, start));
        assert!(!table.punish(p, Offence::Undecodable, start));
        assert_eq!(table.score(&p, start), -80.0);
        let later = start + Duration::from_secs(180);
        assert_eq!(table.score(&p, later), -50.0);
        // A third offence three minutes later no longer bans.
        assert!(!table.punish(p, Offence::Undecodable, later));
        table.prune(later + Duration::from_secs(600));
        assert_eq!(table.score(&p, later + Duration::from_secs(600)), 0.0);
    }

    #[test]
    fn rate_limiter_allows_a_burst_then_refills() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(20);
        let p = PeerId::random();
        assert!((0..20).all(|_| limiter.allow(p, start)));
        assert!(!limiter.allow(p, start));
        assert!(limiter.allow(p, start + Duration::from_millis(100)));
        assert!(limiter.allow(PeerId::random(), start), "per peer");
    }
}
