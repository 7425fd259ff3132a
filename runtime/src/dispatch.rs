//! One dispatch signature for every pallet.
//!
//! Each pallet exposes `dispatch` over its own storage and event traits, and a few take fewer
//! arguments than others (balances and stages need no block number; balances has its own
//! failure type, since the support crate sits above it). [`PalletCall`] gives every pallet's
//! `Call` the same signature — storage overlay, the block's event sink, block number, origin
//! — so the executive dispatches every pallet through one generic path
//! (`BlockBuilder::dispatch_pallet`) that builds the sink and maps failures once.

use crate::executive::PalletEvents;
use crate::{balances, governance, inference, ownership, runs, stages, staking, work};
use weft_pallet_support::{index, Failure};
use weft_primitives::storage::Overlay;
use weft_primitives::{AccountId, BlockNumber};

/// A pallet call, dispatched in the one signature of the module docs.
pub(crate) trait PalletCall {
    /// Applies the call signed by `origin` in block `now`.
    fn dispatch(
        &self,
        s: &mut Overlay<'_>,
        ev: &mut PalletEvents<'_>,
        now: BlockNumber,
        origin: &AccountId,
    ) -> Result<(), Failure>;
}

impl PalletCall for balances::Call {
    fn dispatch(
        &self,
        s: &mut Overlay<'_>,
        ev: &mut PalletEvents<'_>,
        _now: BlockNumber,
        origin: &AccountId,
    ) -> Result<(), Failure> {
        balances::dispatch(s, ev, origin, self).map_err(|e| match e {
            balances::Failure::Dispatch(e) => Failure::from_pallet(index::BALANCES, &e),
            balances::Failure::Storage(e) => Failure::Storage(e),
        })
    }
}

impl PalletCall for stages::Call {
    fn dispatch(
        &self,
        s: &mut Overlay<'_>,
        ev: &mut PalletEvents<'_>,
        _now: BlockNumber,
        origin: &AccountId,
    ) -> Result<(), Failure> {
        stages::dispatch(s, ev, origin, self)
    }
}

/// The pallets whose `dispatch` already has the one signature.
macro_rules! same_signature {
    ($($pallet:ident),*) => {$(
        impl PalletCall for $pallet::Call {
            fn dispatch(
                &self,
                s: &mut Overlay<'_>,
                ev: &mut PalletEvents<'_>,
                now: BlockNumber,
                origin: &AccountId,
            ) -> Result<(), Failure> {
                $pallet::dispatch(s, ev, now, origin, self)
            }
        }
    )*};
}

same_signature!(staking, runs, work, ownership, governance, inference);
