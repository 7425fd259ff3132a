//! One dispatch signature for every pallet.
//!
//! Each pallet exposes `dispatch(storage, events, now, origin, call)` over its own storage and
//! event traits (balances returns its own failure type, since the support crate sits above
//! it; support converts it). [`PalletCall`] gives every pallet's `Call` that signature over
//! the runtime's types — storage overlay, the block's event sink, block number, origin — so
//! the executive dispatches every pallet through one generic path
//! (`BlockBuilder::dispatch_pallet`) that builds the sink and maps failures once.

use crate::executive::PalletEvents;
use crate::{balances, governance, inference, ownership, runs, stages, staking, work};
use weft_pallet_support::Failure;
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

/// `PalletCall` for each pallet's `Call` through its `dispatch`, which every pallet declares
/// alike: `dispatch(storage, events, now, origin, call)`. A pallet's own failure type (only
/// balances has one) becomes a [`Failure`] through `From`.
macro_rules! same_signature {
    ($($pallet:ident),*) => {$(
        impl PalletCall for $pallet::Call {
            // `Failure::from` is the identity for every pallet but balances.
            #[allow(clippy::useless_conversion)]
            fn dispatch(
                &self,
                s: &mut Overlay<'_>,
                ev: &mut PalletEvents<'_>,
                now: BlockNumber,
                origin: &AccountId,
            ) -> Result<(), Failure> {
                $pallet::dispatch(s, ev, now, origin, self).map_err(Failure::from)
            }
        }
    )*};
}

same_signature!(balances, staking, runs, stages, work, ownership, governance, inference);
