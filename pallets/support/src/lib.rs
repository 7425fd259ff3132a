//! # Pallet support
//!
//! What the protocol pallets (staking, runs, stages, work, ownership, governance, inference)
//! share:
//!
//! * [`Perbill`]: a fraction in parts per billion, with floor multiplication that never
//!   overflows (`n·p/10⁹` computed as `(n / 10⁹)·p + (n mod 10⁹)·p / 10⁹`).
//! * [`largest_remainder`]: splits an integer amount pro rata to integer weights so that the
//!   parts sum to exactly the amount (Hamilton's method; ties go to the earlier entry). Used
//!   for ownership shares, credential minting and rewards: no dust is ever lost.
//! * [`mul_div`]: `a·b/c` with a 256-bit intermediate, so pro-rata splits of 128-bit amounts
//!   never overflow.
//! * [`Deposit`]: one generic event sink trait, so a pallet that calls another pallet can pass
//!   the same sink along (`S: Deposit<staking::Event> + Deposit<work::Event>`).
//! * [`Failure`]: a pallet failure, either a dispatch error (already carrying the pallet index
//!   of the pallet that raised it) or a storage fault that aborts the block.
//! * [`Transactional`]: storage with nested transactions (the runtime's overlay), so block
//!   hooks can process queue items one at a time, each all-or-nothing.
//! * [`transactional_item`] and [`Rewind`]: how a block hook runs one item of a queue keyed
//!   by block number. The hook takes the whole queue out of storage first and keeps that
//!   removal whatever happens; each item then runs in its own nested transaction, and an item
//!   that fails with a dispatch error has its storage writes *and its events* discarded, the
//!   hook records the failure with its own event and goes on with the next item. Without
//!   this, one failing item would roll back the whole hook, the queue's removal included, and
//!   since the queue is keyed by a block number that never comes again, every item in it
//!   would be skipped for good. A storage fault still aborts the hook (and the block).
//! * [`randomness`]: the per-block randomness recorded in `System` storage.
//! * The protocol's id types.

use parity_scale_codec::{Decode, Encode, MaxEncodedLen};
use serde::{Deserialize, Serialize};
pub use weft_primitives as primitives;
use weft_primitives::storage::{Overlay, Storage, StorageError};
use weft_primitives::{DispatchError, PalletError};

pub use weft_primitives::step::{Replica, RunId, StageIndex, Step};
/// An epoch number.
pub type EpochIndex = u64;
/// A commitment's (and its audit's) id.
pub type CommitmentId = u64;
/// A deferred slash's id.
pub type SlashId = u64;
/// A governance proposal's id.
pub type ProposalId = u32;

/// Pallet indices in the runtime's call and event enums.
pub mod index {
    /// System.
    pub const SYSTEM: u8 = 0;
    /// Balances.
    pub const BALANCES: u8 = 1;
    /// Staking.
    pub const STAKING: u8 = 2;
    /// Runs.
    pub const RUNS: u8 = 3;
    /// Stages.
    pub const STAGES: u8 = 4;
    /// Work.
    pub const WORK: u8 = 5;
    /// Ownership.
    pub const OWNERSHIP: u8 = 6;
    /// Governance.
    pub const GOVERNANCE: u8 = 7;
    /// Inference (request escrow and payment).
    pub const INFERENCE: u8 = 8;
}

/// Parts per billion: a fraction in `[0, 1]`.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Encode,
    Decode,
    MaxEncodedLen,
    Serialize,
    Deserialize,
)]
#[serde(transparent)]
pub struct Perbill(u32);

impl std::fmt::Debug for Perbill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{:09}",
            self.0 / Perbill::ACCURACY,
            self.0 % Perbill::ACCURACY
        )
    }
}

impl Perbill {
    /// 10⁹ parts make one.
    pub const ACCURACY: u32 = 1_000_000_000;
    /// Zero.
    pub const ZERO: Perbill = Perbill(0);
    /// One.
    pub const ONE: Perbill = Perbill(Self::ACCURACY);

    /// From parts per billion, clamped to one.
    pub const fn from_parts(parts: u32) -> Self {
        if parts > Self::ACCURACY {
            Perbill(Self::ACCURACY)
        } else {
            Perbill(parts)
        }
    }

    /// From a percentage, clamped to one.
    pub const fn from_percent(p: u32) -> Self {
        Self::from_parts(p.saturating_mul(10_000_000))
    }

    /// `n / d` rounded down, clamped to one; zero when `d` is zero.
    pub fn from_rational(n: u128, d: u128) -> Self {
        if d == 0 {
            return Perbill::ZERO;
        }
        if n >= d {
            return Perbill::ONE;
        }
        let parts = mul_div(n, Self::ACCURACY as u128, d).unwrap_or(0);
        Perbill::from_parts(u32::try_from(parts).unwrap_or(Self::ACCURACY))
    }

    /// The parts per billion.
    pub const fn parts(&self) -> u32 {
        self.0
    }

    /// Whether this is a valid fraction (always, by construction; kept for decoded values).
    pub fn is_valid(&self) -> bool {
        self.0 <= Self::ACCURACY
    }

    /// `⌊n · self⌋`, never overflowing.
    pub fn mul_floor(&self, n: u128) -> u128 {
        let acc = Self::ACCURACY as u128;
        let p = self.0.min(Self::ACCURACY) as u128;
        (n / acc) * p + (n % acc) * p / acc
    }

    /// `⌈n · self⌉`, never overflowing.
    pub fn mul_ceil(&self, n: u128) -> u128 {
        let acc = Self::ACCURACY as u128;
        let p = self.0.min(Self::ACCURACY) as u128;
        let rem = (n % acc) * p;
        (n / acc) * p + rem / acc + u128::from(!rem.is_multiple_of(acc))
    }

    /// Sum, clamped to one.
    pub fn saturating_add(self, o: Perbill) -> Perbill {
        Perbill::from_parts(self.0.saturating_add(o.0))
    }

    /// Product of two fractions (rounded down).
    pub fn saturating_mul(self, o: Perbill) -> Perbill {
        let p = (self.0 as u64) * (o.0 as u64) / (Self::ACCURACY as u64);
        Perbill::from_parts(u32::try_from(p).unwrap_or(Self::ACCURACY))
    }

    /// Whether `part > self · whole`, exactly (no rounding): the threshold test of votes.
    pub fn is_exceeded_by(&self, part: u128, whole: u128) -> bool {
        // part/whole > p/10⁹  ⇔  part·10⁹ > p·whole, compared in 256 bits.
        let lhs = mul_wide(part, Self::ACCURACY as u128);
        let rhs = mul_wide(self.0 as u128, whole);
        lhs > rhs
    }
}

/// The 256-bit product of two u128 as (high, low).
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    let mask = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & mask);
    let (b1, b0) = (b >> 64, b & mask);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 64) + (p01 & mask) + (p10 & mask);
    let lo = (p00 & mask) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

/// `⌊a·b/c⌋` and the remainder, computed exactly in 256 bits; `None` when `c` is zero or the
/// quotient does not fit in u128.
pub fn mul_div_rem(a: u128, b: u128, c: u128) -> Option<(u128, u128)> {
    if c == 0 {
        return None;
    }
    let (hi, lo) = mul_wide(a, b);
    if hi == 0 {
        return Some((lo / c, lo % c));
    }
    if hi >= c {
        return None;
    }
    // Long division of (hi, lo) by c, one bit at a time; the running remainder stays < c.
    let mut rem = hi;
    let mut q: u128 = 0;
    for i in (0..128).rev() {
        let carry = rem >> 127;
        rem = (rem << 1) | ((lo >> i) & 1);
        q <<= 1;
        if carry == 1 || rem >= c {
            rem = rem.wrapping_sub(c);
            q |= 1;
        }
    }
    Some((q, rem))
}

/// `⌊a·b/c⌋`, exact; `None` when `c` is zero or the result overflows.
pub fn mul_div(a: u128, b: u128, c: u128) -> Option<u128> {
    mul_div_rem(a, b, c).map(|(q, _)| q)
}

/// Splits `amount` pro rata to `weights` with the largest-remainder method.
///
/// Each entry first gets `⌊amount·wᵢ/W⌋`; the `amount − Σ⌊…⌋ < n` units left over go one each
/// to the entries with the largest remainders `amount·wᵢ mod W`, ties to the earlier entry.
/// The result sums to exactly `amount` (or is all zeros when the weights sum to zero) and has
/// the entries in the input order.
pub fn largest_remainder<K: Clone>(amount: u128, weights: &[(K, u128)]) -> Vec<(K, u128)> {
    let total: u128 = weights.iter().fold(0u128, |a, (_, w)| a.saturating_add(*w));
    if total == 0 || weights.is_empty() {
        return weights.iter().map(|(k, _)| (k.clone(), 0)).collect();
    }
    let mut out: Vec<(K, u128)> = Vec::with_capacity(weights.len());
    let mut rems: Vec<(u128, usize)> = Vec::with_capacity(weights.len());
    let mut given: u128 = 0;
    for (i, (k, w)) in weights.iter().enumerate() {
        // w ≤ total, so the quotient ≤ amount and always fits.
        let (q, r) = mul_div_rem(amount, *w, total).unwrap_or((0, 0));
        given = given.saturating_add(q);
        out.push((k.clone(), q));
        rems.push((r, i));
    }
    let mut left = amount.saturating_sub(given);
    // Largest remainder first; equal remainders keep input order.
    rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in rems {
        if left == 0 {
            break;
        }
        if let Some(entry) = out.get_mut(i) {
            entry.1 = entry.1.saturating_add(1);
            left -= 1;
        }
    }
    out
}

/// Fractions (as [`Perbill`]) of `weights`, summing to exactly one when any weight is non-zero.
pub fn shares<K: Clone>(weights: &[(K, u128)]) -> Vec<(K, Perbill)> {
    largest_remainder(Perbill::ACCURACY as u128, weights)
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                Perbill::from_parts(u32::try_from(v).unwrap_or(Perbill::ACCURACY)),
            )
        })
        .collect()
}

/// Where a pallet's events go. The runtime's sink implements it once per pallet event type.
pub trait Deposit<E> {
    /// Records an event.
    fn deposit(&mut self, event: E);
}

impl<E> Deposit<E> for Vec<E> {
    fn deposit(&mut self, event: E) {
        self.push(event);
    }
}

/// Emits `event` into `sink` (avoids method ambiguity when a sink serves several pallets).
pub fn emit<E, S: Deposit<E> + ?Sized>(sink: &mut S, event: E) {
    sink.deposit(event);
}

/// A pallet failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The call is not allowed; the extrinsic fails (carrying the raising pallet's index), the
    /// block goes on.
    #[error("{}", .0.message)]
    Dispatch(DispatchError),
    /// The state is unreadable; the block cannot be executed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Failure {
    /// A dispatch failure from pallet `pallet`'s error `e`.
    pub fn from_pallet<E: PalletError>(pallet: u8, e: &E) -> Self {
        Failure::Dispatch(DispatchError {
            pallet,
            error: e.index(),
            message: e.to_string(),
        })
    }

    /// The dispatch error, if this is one.
    pub fn dispatch_error(&self) -> Option<&DispatchError> {
        match self {
            Failure::Dispatch(e) => Some(e),
            Failure::Storage(_) => None,
        }
    }
}

impl From<weft_pallet_balances::Failure> for Failure {
    fn from(f: weft_pallet_balances::Failure) -> Self {
        match f {
            weft_pallet_balances::Failure::Dispatch(e) => Failure::from_pallet(index::BALANCES, &e),
            weft_pallet_balances::Failure::Storage(e) => Failure::Storage(e),
        }
    }
}

/// Implements `From<Error> for Failure` and `PalletError` for a pallet's `#[repr(u8)]`-like
/// error enum with explicit codec indices.
#[macro_export]
macro_rules! pallet_error {
    ($err:ty, $index:expr) => {
        impl $crate::primitives::PalletError for $err {
            fn index(&self) -> u8 {
                *self as u8
            }
        }
        impl From<$err> for $crate::Failure {
            fn from(e: $err) -> Self {
                $crate::Failure::from_pallet($index, &e)
            }
        }
    };
}

/// Storage with nested transactions.
pub trait Transactional: Storage {
    /// Opens a nested transaction.
    fn begin(&mut self);
    /// Keeps the innermost transaction's writes.
    fn commit(&mut self);
    /// Discards the innermost transaction's writes.
    fn rollback(&mut self);
}

impl Transactional for Overlay<'_> {
    fn begin(&mut self) {
        self.start_transaction();
    }
    fn commit(&mut self) {
        self.commit_transaction();
    }
    fn rollback(&mut self) {
        self.rollback_transaction();
    }
}

/// Runs `f` in a nested transaction: its writes are kept when it succeeds and discarded when
/// it fails with a dispatch error (returned as `Ok(Err(..))`). A storage fault propagates.
pub fn transactional<S: Transactional + ?Sized, R>(
    s: &mut S,
    f: impl FnOnce(&mut S) -> Result<R, Failure>,
) -> Result<Result<R, DispatchError>, StorageError> {
    s.begin();
    match f(s) {
        Ok(r) => {
            s.commit();
            Ok(Ok(r))
        }
        Err(Failure::Dispatch(e)) => {
            s.rollback();
            Ok(Err(e))
        }
        Err(Failure::Storage(e)) => {
            s.rollback();
            Err(e)
        }
    }
}

/// An event sink whose latest events can be taken back, so that an item that fails inside a
/// block hook leaves no events behind (its storage writes are rolled back as well).
pub trait Rewind {
    /// A mark of the events recorded so far.
    fn mark(&self) -> usize;
    /// Drops every event recorded after `mark`.
    fn rewind(&mut self, mark: usize);
}

impl<E> Rewind for Vec<E> {
    fn mark(&self) -> usize {
        self.len()
    }
    fn rewind(&mut self, mark: usize) {
        self.truncate(mark);
    }
}

/// Runs one queue item of a block hook as its own all-or-nothing unit: `f` runs in a nested
/// transaction (see [`transactional`]); when it fails with a dispatch error (returned as
/// `Ok(Err(..))`) its writes are rolled back and the events it deposited into `ev` are
/// dropped. A storage fault propagates.
pub fn transactional_item<S, E, R>(
    s: &mut S,
    ev: &mut E,
    f: impl FnOnce(&mut S, &mut E) -> Result<R, Failure>,
) -> Result<Result<R, DispatchError>, StorageError>
where
    S: Transactional + ?Sized,
    E: Rewind + ?Sized,
{
    let mark = ev.mark();
    let result = transactional(s, |s| f(s, &mut *ev));
    if !matches!(result, Ok(Ok(_))) {
        ev.rewind(mark);
    }
    result
}

/// Hashes of recent blocks and of genesis, recorded by the runtime at the start of each block
/// (`System::BlockHash`). Pallets read the genesis hash from here to check signatures that
/// bind the chain.
pub mod blocks {
    use weft_primitives::storage::{StateReader, StorageError, StorageMap};
    use weft_primitives::{BlockNumber, Hash};

    /// Hashes by block number: the last `BLOCK_HASH_COUNT` blocks, and genesis.
    pub const BLOCK_HASH: StorageMap<BlockNumber, Hash> = StorageMap::new("System", "BlockHash");

    /// The genesis hash, once block 1 has started (the zero hash before).
    pub fn genesis_hash(s: &(impl StateReader + ?Sized)) -> Result<Hash, StorageError> {
        Ok(BLOCK_HASH.get(s, &0)?.unwrap_or_default())
    }
}

/// The per-block randomness.
///
/// At the start of block `n` the runtime records
/// `R(n) = blake3("weft-randomness/v1" ‖ R(n−1) ‖ parent_hash(n))` under
/// `System::Randomness[n]` (and prunes entries older than the block-hash window). Pallets that
/// need randomness for an event committed at height `h` read `R(h + d)` with `d ≥ 1`, a value
/// that did not exist when the commitment was made.
///
/// **Remaining bias.** `parent_hash(n)` is chosen by the author of block `n−1`: by varying its
/// block (timestamp, transaction order) it can try many candidate values of `R(n)` and publish
/// the one it likes, so it controls which of the commitments selected at `n` are audited (at
/// most it can turn an audit of its own accomplice into no audit, or vice versa). The bias is
/// limited to blocks that author produces. This is the rule of `--dev` chains only: on
/// Tendermint chains `R(n) = blake3("weft/beacon/next" ‖ R(n−1) ‖ σ(n))` where `σ(n)` is the
/// proposer's unique BLS signature over `(genesis, n, R(n−1))`, verified by the runtime
/// (`weft_finality::beacon`; the bias left is withholding, see docs/consensus.md).
pub mod randomness {
    use weft_primitives::storage::{StateReader, StorageError, StorageMap};
    use weft_primitives::{BlockNumber, Hash};

    /// `R(n)` by block number.
    pub const RANDOMNESS: StorageMap<BlockNumber, Hash> = StorageMap::new("System", "Randomness");

    /// The randomness of block `n`, or the zero hash if it is unknown (pruned or in the future).
    pub fn at(s: &(impl StateReader + ?Sized), n: BlockNumber) -> Result<Hash, StorageError> {
        Ok(RANDOMNESS.get(s, &n)?.unwrap_or_default())
    }

    /// `R(n)` from `R(n−1)` and the parent hash.
    pub fn next(prev: &Hash, parent_hash: &Hash) -> Hash {
        weft_primitives::blake3_256(&blake3_input(prev, parent_hash))
    }

    fn blake3_input(prev: &Hash, parent: &Hash) -> Vec<u8> {
        let mut v = Vec::with_capacity(18 + 64);
        v.extend_from_slice(b"weft-randomness/v1");
        v.extend_from_slice(&prev.0);
        v.extend_from_slice(&parent.0);
        v
    }

    /// A uniform u64 from `blake3(randomness ‖ subject)`: the first 8 bytes, little endian.
    pub fn draw_u64(randomness: &Hash, subject: &[u8]) -> u64 {
        let mut v = Vec::with_capacity(32 + subject.len());
        v.extend_from_slice(&randomness.0);
        v.extend_from_slice(subject);
        let h = weft_primitives::blake3_256(&v);
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.0[..8]);
        u64::from_le_bytes(b)
    }
}

/// An event sink for tests: records every event of any pallet, in order.
#[derive(Default)]
pub struct Recorder {
    /// The events, type-erased.
    pub events: Vec<Box<dyn std::any::Any>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recorder({} events)", self.events.len())
    }
}

impl Recorder {
    /// The recorded events of type `E`, in order.
    pub fn of<E: Clone + 'static>(&self) -> Vec<E> {
        self.events
            .iter()
            .filter_map(|e| e.downcast_ref::<E>().cloned())
            .collect()
    }

    /// Forgets everything recorded.
    pub fn clear(&mut self) {
        self.events.clear();
    }
}

impl Rewind for Recorder {
    fn mark(&self) -> usize {
        self.events.len()
    }
    fn rewind(&mut self, mark: usize) {
        self.events.truncate(mark);
    }
}

impl<E: 'static> Deposit<E> for Recorder {
    fn deposit(&mut self, event: E) {
        self.events.push(Box::new(event));
    }
}

impl weft_pallet_balances::EventSink for Recorder {
    fn deposit(&mut self, event: weft_pallet_balances::Event) {
        self.events.push(Box::new(event));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn perbill_arithmetic() {
        let half = Perbill::from_percent(50);
        assert_eq!(half.mul_floor(101), 50);
        assert_eq!(half.mul_ceil(101), 51);
        assert_eq!(Perbill::ONE.mul_floor(u128::MAX), u128::MAX);
        assert_eq!(Perbill::from_rational(1, 3).parts(), 333_333_333);
        assert_eq!(Perbill::from_rational(5, 3), Perbill::ONE);
        assert_eq!(Perbill::from_parts(2_000_000_000), Perbill::ONE);
        assert!(Perbill::from_rational(2, 3).is_exceeded_by(67, 100));
        assert!(!Perbill::from_percent(50).is_exceeded_by(50, 100));
        assert_eq!(half.saturating_mul(half), Perbill::from_percent(25));
    }

    #[test]
    fn mul_div_wide() {
        assert_eq!(mul_div(u128::MAX, u128::MAX, u128::MAX), Some(u128::MAX));
        assert_eq!(mul_div(u128::MAX, 3, 6), Some(u128::MAX / 2));
        assert_eq!(mul_div(u128::MAX, 2, 1), None);
        assert_eq!(mul_div(1, 1, 0), None);
    }

    #[test]
    fn largest_remainder_examples() {
        let r = largest_remainder(10, &[("a", 1), ("b", 1), ("c", 1)]);
        assert_eq!(r, vec![("a", 4), ("b", 3), ("c", 3)]);
        let r = largest_remainder(100, &[("a", 0), ("b", 0)]);
        assert_eq!(r, vec![("a", 0), ("b", 0)]);
        let s = shares(&[(1, 2u128), (2, 1)]);
        assert_eq!(s[0].1.parts() + s[1].1.parts(), Perbill::ACCURACY);
    }

    #[test]
    fn a_failed_item_drops_its_writes_and_events() {
        use weft_primitives::storage::{MemoryState, StorageValue};
        const V: StorageValue<u32> = StorageValue::new("Test", "V");
        let base = MemoryState::default();
        let mut o = Overlay::new(&base);
        let mut ev: Vec<u32> = vec![0];
        let ok = transactional_item(&mut o, &mut ev, |o, ev| {
            V.put(o, &1);
            ev.push(1);
            Ok(())
        });
        assert_eq!(ok, Ok(Ok(())));
        let failed = transactional_item(&mut o, &mut ev, |o, ev| {
            V.put(o, &2);
            ev.push(2);
            Err::<(), _>(Failure::from_pallet(index::WORK, &DummyError))
        });
        assert_eq!(
            failed.map(|r| r.map_err(|e| e.pallet)),
            Ok(Err(index::WORK))
        );
        assert_eq!(V.get(&o).unwrap(), Some(1));
        assert_eq!(ev, vec![0, 1]);
        let fault = transactional_item(&mut o, &mut ev, |o, ev| {
            V.put(o, &3);
            ev.push(3);
            Err::<(), _>(Failure::Storage(StorageError::Backend("gone".into())))
        });
        assert!(fault.is_err());
        assert_eq!(V.get(&o).unwrap(), Some(1));
        assert_eq!(ev, vec![0, 1]);
    }

    #[derive(Debug, Clone, Copy, thiserror::Error)]
    #[error("dummy")]
    struct DummyError;

    impl PalletError for DummyError {
        fn index(&self) -> u8 {
            7
        }
    }

    proptest! {
        #[test]
        fn largest_remainder_is_exact(amount in 0u128..u128::MAX / 2, ws in proptest::collection::vec(0u128..u64::MAX as u128, 1..40)) {
            let weights: Vec<(usize, u128)> = ws.iter().copied().enumerate().collect();
            let out = largest_remainder(amount, &weights);
            let total: u128 = ws.iter().sum();
            let sum: u128 = out.iter().map(|(_, v)| *v).sum();
            if total == 0 { prop_assert_eq!(sum, 0); } else { prop_assert_eq!(sum, amount); }
            for ((_, w), (_, v)) in weights.iter().zip(&out) {
                if total > 0 {
                    let exact = mul_div(amount, *w, total).unwrap();
                    prop_assert!(*v == exact || *v == exact + 1);
                }
            }
        }

        #[test]
        fn mul_div_matches_small(a in 0u128..u64::MAX as u128, b in 0u128..u64::MAX as u128, c in 1u128..u64::MAX as u128) {
            prop_assert_eq!(mul_div(a, b, c), Some(a * b / c));
        }

        #[test]
        fn mul_div_wide_identity(a in any::<u128>(), c in 1u128..u128::MAX) {
            // (a·c)/c = a exactly.
            prop_assert_eq!(mul_div(a, c, c), Some(a));
        }
    }
}
