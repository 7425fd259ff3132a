//! Block building, block execution and transaction validation. See the crate docs for the
//! order of checks.

use crate::dispatch::PalletCall;
use crate::{
    balances, fees, governance, inference, limits, ownership, runs, stages, staking, system, work,
    EventRecord, Extrinsic, Phase, RuntimeCall, RuntimeEvent,
};
use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_pallet_support::{randomness, transactional, Deposit, Failure, Rewind};
use weft_primitives::extrinsic::{SigningContext, EXTRINSIC_FORMAT_VERSION};
use weft_primitives::storage::{Changes, Overlay, StateReader, StorageError};
use weft_primitives::{
    blake3_256, AccountId, Balance, BlockNumber, DispatchError, Era, Hash, Header, Moment, Nonce,
    PalletError, MAX_EXTRINSIC_SIZE,
};

/// Why a transaction can never go into the next block (or can't yet).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize, thiserror::Error,
)]
#[serde(rename_all = "camelCase")]
pub enum InvalidTransaction {
    /// Unknown extrinsic format version.
    #[codec(index = 0)]
    #[error("unsupported extrinsic format version")]
    BadVersion,
    /// Larger than [`MAX_EXTRINSIC_SIZE`].
    #[codec(index = 1)]
    #[error("extrinsic too large")]
    TooLarge,
    /// The signature does not verify for this chain.
    #[codec(index = 2)]
    #[error("bad signature")]
    BadSignature,
    /// The nonce was already used (a replay, or a stale transaction).
    #[codec(index = 3)]
    #[error("stale nonce: already used")]
    Stale,
    /// The nonce is ahead of the account's nonce.
    #[codec(index = 4)]
    #[error("future nonce: earlier transactions of this account are missing")]
    Future,
    /// The nonce is too far ahead of the account's nonce.
    #[codec(index = 5)]
    #[error("nonce too far in the future")]
    TooFarInFuture,
    /// Outside its validity window.
    #[codec(index = 6)]
    #[error("transaction outside its validity window (expired or not yet valid)")]
    Expired,
    /// The era's birth block is unknown or its period too long.
    #[codec(index = 7)]
    #[error("bad era: unknown birth block or period too long")]
    BadEra,
    /// The signer cannot pay fee and tip while keeping the existential deposit.
    #[codec(index = 8)]
    #[error("insufficient balance to pay the fee")]
    CannotPayFees,
    /// The block is full.
    #[codec(index = 9)]
    #[error("block is full")]
    ExhaustsResources,
}

/// A transaction the pool may keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidTransaction {
    /// Higher goes first among ready transactions (the tip).
    pub priority: Balance,
    /// The signer.
    pub sender: AccountId,
    /// Its nonce.
    pub nonce: Nonce,
    /// The nonce the account has now; the transaction is ready when `nonce == account_nonce`.
    pub account_nonce: Nonce,
    /// The last block height it may be included at.
    pub valid_until: BlockNumber,
    /// What it costs its sender before dispatch: the length fee plus the tip.
    pub fee: Balance,
    /// What the sender can pay in fees now ([`balances::fee_budget`]); the pool admits a
    /// sender's queued transactions only while their fees together stay within it.
    pub fee_budget: Balance,
}

/// Why a block cannot be executed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The header's number does not follow the state's.
    #[error("block number {got} does not follow the state's block {expected_parent}")]
    BadNumber {
        /// Height of the state.
        expected_parent: BlockNumber,
        /// Height of the header.
        got: BlockNumber,
    },
    /// The timestamp goes back in time.
    #[error("timestamp {got} is before the parent's {parent}")]
    TimestampBackwards {
        /// Parent's.
        parent: Moment,
        /// Header's.
        got: Moment,
    },
    /// An extrinsic in the block is invalid.
    #[error("extrinsic {index} is invalid: {reason}")]
    InvalidExtrinsic {
        /// Its position.
        index: usize,
        /// Why.
        reason: InvalidTransaction,
    },
    /// The header's beacon signature is not its author's (or the author is not a validator).
    #[error("the block's randomness beacon is not a valid signature of its author {0}")]
    BadBeacon(AccountId),
    /// The state could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why an extrinsic could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// It is invalid; nothing was written.
    #[error(transparent)]
    Invalid(#[from] InvalidTransaction),
    /// The state could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The result of executing a block.
#[derive(Debug, Clone)]
pub struct BlockOutcome {
    /// The state changes, to be written into the state tree.
    pub changes: Changes,
    /// The block's events.
    pub events: Vec<EventRecord>,
}

/// What block the builder works on.
#[derive(Debug, Clone, Copy)]
pub struct BlockContext {
    /// Its height.
    pub number: BlockNumber,
    /// Its parent's hash.
    pub parent_hash: Hash,
    /// Its timestamp.
    pub timestamp: Moment,
    /// Its author (receives tips).
    pub author: AccountId,
    /// The author's randomness-beacon signature, on BFT chains (see `weft_finality::beacon`).
    pub beacon: Option<weft_bls::SignatureBytes>,
}

impl BlockContext {
    /// The context of an existing header.
    pub fn of(header: &Header) -> Self {
        BlockContext {
            number: header.number,
            parent_hash: header.parent_hash,
            timestamp: header.timestamp,
            author: header.author,
            beacon: weft_finality::beacon::PreDigest::of(header).map(|d| d.beacon),
        }
    }
}

/// Applies extrinsics one by one on top of the parent state.
pub struct BlockBuilder<'a> {
    overlay: Overlay<'a>,
    ctx: BlockContext,
    genesis_hash: Hash,
    events: Vec<EventRecord>,
    applied: u32,
    /// Validation mode: future nonces are accepted (the pool queues them); no hooks run.
    validation_only: bool,
    /// The `on_finalize` hook has run.
    finalized: bool,
}

/// The event sink the pallets write into: wraps each pallet event in its [`RuntimeEvent`]
/// variant with the current phase.
pub(crate) struct PalletEvents<'e> {
    pub(crate) phase: Phase,
    pub(crate) out: &'e mut Vec<EventRecord>,
}

impl balances::EventSink for PalletEvents<'_> {
    fn deposit(&mut self, event: balances::Event) {
        self.out.push(EventRecord {
            phase: self.phase,
            event: RuntimeEvent::Balances(event),
        });
    }
}

macro_rules! sink_for {
    ($($pallet:ident => $variant:ident),*) => {$(
        impl Deposit<$pallet::Event> for PalletEvents<'_> {
            fn deposit(&mut self, event: $pallet::Event) {
                self.out.push(EventRecord { phase: self.phase, event: RuntimeEvent::$variant(event) });
            }
        }
    )*};
}
sink_for!(staking => Staking, runs => Runs, stages => Stages, work => Work, ownership => Ownership, governance => Governance, inference => Inference);

/// Lets a hook drop the events of one queue item that failed (see
/// [`weft_pallet_support::transactional_item`]).
impl Rewind for PalletEvents<'_> {
    fn mark(&self) -> usize {
        self.out.len()
    }
    fn rewind(&mut self, mark: usize) {
        self.out.truncate(mark);
    }
}

fn outcome(f: Failure) -> DispatchOutcome {
    match f {
        Failure::Dispatch(e) => DispatchOutcome::Failed(e),
        Failure::Storage(e) => DispatchOutcome::Storage(e),
    }
}

fn dispatch_error<E: PalletError>(pallet: u8, e: &E) -> DispatchError {
    DispatchError {
        pallet,
        error: e.index(),
        message: e.to_string(),
    }
}

impl<'a> BlockBuilder<'a> {
    /// Starts block `ctx.number` on top of `parent_state`, checking that it follows.
    pub fn new(parent_state: &'a dyn StateReader, ctx: BlockContext) -> Result<Self, BlockError> {
        Self::start(parent_state, ctx, false)
    }

    /// A builder only for checking transactions against the next block after `parent_state`.
    pub fn for_validation(
        parent_state: &'a dyn StateReader,
        parent_number: BlockNumber,
        parent_hash: Hash,
    ) -> Result<Self, BlockError> {
        let ctx = BlockContext {
            number: parent_number.saturating_add(1),
            parent_hash,
            timestamp: 0,
            author: AccountId::default(),
            beacon: None,
        };
        Self::start(parent_state, ctx, true)
    }

    fn start(
        parent_state: &'a dyn StateReader,
        ctx: BlockContext,
        validation_only: bool,
    ) -> Result<Self, BlockError> {
        let mut overlay = Overlay::new(parent_state);
        let parent_number = system::NUMBER.get(&overlay)?.unwrap_or(0);
        if ctx.number != parent_number.saturating_add(1) {
            return Err(BlockError::BadNumber {
                expected_parent: parent_number,
                got: ctx.number,
            });
        }
        if !validation_only {
            let parent_ts = system::TIMESTAMP.get(&overlay)?.unwrap_or(0);
            if ctx.timestamp < parent_ts {
                return Err(BlockError::TimestampBackwards {
                    parent: parent_ts,
                    got: ctx.timestamp,
                });
            }
            system::TIMESTAMP.put(&mut overlay, &ctx.timestamp);
            system::AUTHOR.put(&mut overlay, &ctx.author);
        }
        system::NUMBER.put(&mut overlay, &ctx.number);
        system::BLOCK_HASH.insert(&mut overlay, &parent_number, &ctx.parent_hash);
        let genesis_hash = system::BLOCK_HASH
            .get(&overlay, &0)?
            .unwrap_or(ctx.parent_hash);
        let mut builder = BlockBuilder {
            overlay,
            ctx,
            genesis_hash,
            events: Vec::new(),
            applied: 0,
            validation_only,
            finalized: false,
        };
        if !validation_only {
            builder.on_initialize()?;
        }
        Ok(builder)
    }

    /// Runs one pallet hook in a storage transaction; a dispatch failure rolls back its writes
    /// and events and is recorded as `System::HookFailed`.
    fn hook<F>(&mut self, f: F) -> Result<(), StorageError>
    where
        F: FnOnce(&mut Overlay<'a>, &mut PalletEvents<'_>) -> Result<(), Failure>,
    {
        let before = self.events.len();
        let mut sink = PalletEvents {
            phase: Phase::Block,
            out: &mut self.events,
        };
        let result = transactional(&mut self.overlay, |o| f(o, &mut sink))?;
        if let Err(error) = result {
            self.events.truncate(before);
            self.events.push(EventRecord {
                phase: Phase::Block,
                event: RuntimeEvent::System(system::Event::HookFailed { error }),
            });
        }
        Ok(())
    }

    /// Block-start hooks (see the crate docs for the order).
    fn on_initialize(&mut self) -> Result<(), BlockError> {
        let n = self.ctx.number;
        let prev = randomness::at(&self.overlay, n.saturating_sub(1))?;
        let r = match self.ctx.beacon {
            // BFT chains: the hash chain of the authors' unique signatures.
            Some(sig) => {
                let author = self.ctx.author;
                let key = staking::active_set(&self.overlay)?
                    .into_iter()
                    .find(|v| v.account == author)
                    .and_then(|v| weft_bls::PublicKey::from_bytes(&v.bls_key).ok())
                    .ok_or(BlockError::BadBeacon(author))?;
                if !weft_finality::beacon::verify(&key, &self.genesis_hash, n, &prev, &sig) {
                    return Err(BlockError::BadBeacon(author));
                }
                weft_finality::beacon::next(&prev, &sig)
            }
            // The dev engine: the parent hash (grindable by its one author).
            None => randomness::next(&prev, &self.ctx.parent_hash),
        };
        randomness::RANDOMNESS.insert(&mut self.overlay, &n, &r);
        let author = self.ctx.author;
        self.hook(|o, ev| staking::on_initialize(o, ev, n, &author).map(|_| ()))?;
        if staking::is_epoch_start(&self.overlay, n)? {
            self.hook(|o, ev| staking::new_epoch(o, ev).map(|_| ()))?;
            for run in runs::active_runs(&self.overlay)? {
                self.hook(|o, ev| {
                    ownership::mint_epoch(o, ev, run)?;
                    runs::on_epoch(o, run)?;
                    stages::assign_run(o, ev, run, &r)
                })?;
            }
            // Finished runs mint nothing, but paid inference fills their pools.
            for run in ownership::finished_pooled_runs(&self.overlay)? {
                self.hook(|o, ev| ownership::mint_epoch(o, ev, run))?;
            }
        }
        self.hook(|o, ev| work::on_initialize(o, ev, n))?;
        self.hook(|o, ev| governance::on_initialize(o, ev, n))?;
        self.hook(|o, ev| inference::on_initialize(o, ev, n))?;
        Ok(())
    }

    /// The block's context.
    pub fn context(&self) -> &BlockContext {
        &self.ctx
    }

    /// Read access to the state as it is now inside the block.
    pub fn state(&self) -> &dyn StateReader {
        &self.overlay
    }

    /// Checks a transaction without applying it.
    pub fn check(
        &self,
        xt: &Extrinsic,
        encoded_len: usize,
    ) -> Result<ValidTransaction, ApplyError> {
        if xt.version != EXTRINSIC_FORMAT_VERSION {
            return Err(InvalidTransaction::BadVersion.into());
        }
        if encoded_len > MAX_EXTRINSIC_SIZE {
            return Err(InvalidTransaction::TooLarge.into());
        }
        let number = self.ctx.number;
        let (birth_hash, valid_until) = match xt.era {
            Era::Immortal => (self.genesis_hash, BlockNumber::MAX),
            Era::Mortal { birth, period } => {
                if period == 0 || period > limits::MAX_ERA_PERIOD {
                    return Err(InvalidTransaction::BadEra.into());
                }
                if !xt.era.is_valid_at(number) {
                    return Err(InvalidTransaction::Expired.into());
                }
                let hash = system::BLOCK_HASH
                    .get(&self.overlay, &birth)?
                    .ok_or(InvalidTransaction::BadEra)?;
                (hash, birth.saturating_add(period))
            }
        };
        let ctx = SigningContext {
            genesis_hash: self.genesis_hash,
            birth_hash,
        };
        if !xt.signature_is_valid(ctx) {
            return Err(InvalidTransaction::BadSignature.into());
        }
        let account = balances::account(&self.overlay, &xt.signer)?;
        if xt.nonce < account.nonce {
            return Err(InvalidTransaction::Stale.into());
        }
        if xt.nonce > account.nonce {
            if !self.validation_only {
                return Err(InvalidTransaction::Future.into());
            }
            if xt.nonce - account.nonce > limits::MAX_FUTURE_NONCES {
                return Err(InvalidTransaction::TooFarInFuture.into());
            }
        }
        // A future transaction must be payable now too: otherwise an account that never had
        // funds could queue transactions for free (the pool then also sums the fees of
        // everything the sender has queued against `fee_budget`).
        let length_fee = fees::fee_for_length(encoded_len);
        if !balances::can_pay_fee(&self.overlay, &xt.signer, length_fee, xt.tip)? {
            return Err(InvalidTransaction::CannotPayFees.into());
        }
        Ok(ValidTransaction {
            priority: xt.tip,
            sender: xt.signer,
            nonce: xt.nonce,
            account_nonce: account.nonce,
            valid_until,
            fee: length_fee.saturating_add(xt.tip),
            fee_budget: balances::fee_budget(&self.overlay, &xt.signer)?,
        })
    }

    /// Applies one extrinsic. An invalid one changes nothing; a valid one pays its fee, bumps
    /// the nonce and runs its call, whose failure is recorded as an event.
    pub fn apply(&mut self, xt: &Extrinsic, encoded_len: usize) -> Result<bool, ApplyError> {
        if self.applied as usize >= limits::MAX_EXTRINSICS_PER_BLOCK {
            return Err(InvalidTransaction::ExhaustsResources.into());
        }
        let valid = self.check(xt, encoded_len)?;
        if valid.nonce != valid.account_nonce {
            return Err(InvalidTransaction::Future.into());
        }
        let phase = Phase::ApplyExtrinsic(self.applied);
        let fee = fees::fee_for_length(encoded_len);
        {
            let mut sink = PalletEvents {
                phase,
                out: &mut self.events,
            };
            balances::charge_fee(
                &mut self.overlay,
                &mut sink,
                &xt.signer,
                fee,
                xt.tip,
                &self.ctx.author,
            )
            .map_err(|e| match e {
                balances::Failure::Dispatch(_) => {
                    ApplyError::Invalid(InvalidTransaction::CannotPayFees)
                }
                balances::Failure::Storage(s) => ApplyError::Storage(s),
            })?;
        }
        balances::inc_nonce(&mut self.overlay, &xt.signer)?;

        let events_before = self.events.len();
        self.overlay.start_transaction();
        let result = self.dispatch(&xt.signer, &xt.call, phase);
        let ok = match result {
            Ok(()) => {
                self.overlay.commit_transaction();
                self.events.push(EventRecord {
                    phase,
                    event: RuntimeEvent::System(system::Event::ExtrinsicSuccess),
                });
                true
            }
            Err(DispatchOutcome::Failed(error)) => {
                self.overlay.rollback_transaction();
                self.events.truncate(events_before);
                self.events.push(EventRecord {
                    phase,
                    event: RuntimeEvent::System(system::Event::ExtrinsicFailed { error }),
                });
                false
            }
            Err(DispatchOutcome::Storage(e)) => {
                self.overlay.rollback_transaction();
                return Err(ApplyError::Storage(e));
            }
        };
        self.applied += 1;
        Ok(ok)
    }

    fn dispatch(
        &mut self,
        origin: &AccountId,
        call: &RuntimeCall,
        phase: Phase,
    ) -> Result<(), DispatchOutcome> {
        let pallet = call.pallet_index();
        match call {
            RuntimeCall::System(system::Call::Remark { remark }) => {
                if remark.len() > system::MAX_REMARK_LEN {
                    return Err(DispatchOutcome::Failed(dispatch_error(
                        pallet,
                        &system::Error::RemarkTooLong,
                    )));
                }
                self.events.push(EventRecord {
                    phase,
                    event: RuntimeEvent::System(system::Event::Remarked {
                        who: *origin,
                        hash: blake3_256(remark),
                    }),
                });
                Ok(())
            }
            RuntimeCall::Balances(c) => self.dispatch_pallet(phase, origin, c),
            RuntimeCall::Staking(c) => self.dispatch_pallet(phase, origin, c),
            RuntimeCall::Runs(c) => self.dispatch_pallet(phase, origin, c),
            RuntimeCall::Stages(c) => self.dispatch_pallet(phase, origin, c),
            RuntimeCall::Work(c) => self.dispatch_pallet(phase, origin, c),
            RuntimeCall::Ownership(c) => self.dispatch_pallet(phase, origin, c),
            RuntimeCall::Governance(c) => self.dispatch_pallet(phase, origin, c),
            RuntimeCall::Inference(c) => self.dispatch_pallet(phase, origin, c),
        }
    }

    /// Dispatches a pallet's call in the one signature ([`crate::dispatch`]): its events go to
    /// the block's log under `phase`, its failure becomes the extrinsic's outcome.
    fn dispatch_pallet(
        &mut self,
        phase: Phase,
        origin: &AccountId,
        call: &impl PalletCall,
    ) -> Result<(), DispatchOutcome> {
        let mut sink = PalletEvents {
            phase,
            out: &mut self.events,
        };
        call.dispatch(&mut self.overlay, &mut sink, self.ctx.number, origin)
            .map_err(outcome)
    }

    /// Number of extrinsics applied so far.
    pub fn applied(&self) -> u32 {
        self.applied
    }

    /// Runs the `on_finalize` hook (audit deadlines) once; [`Self::finish`] calls it too.
    pub fn finalize(&mut self) -> Result<(), StorageError> {
        if self.finalized || self.validation_only {
            return Ok(());
        }
        self.finalized = true;
        let n = self.ctx.number;
        self.hook(|o, ev| work::on_finalize(o, ev, n))
    }

    /// Finalises the block: runs the `on_finalize` hook (if [`Self::finalize`] did not),
    /// stores the block's events and prunes old block hashes and randomness. A storage fault
    /// in the hook (impossible with a state `new` could read) is recorded as an event;
    /// [`execute_block`] calls [`Self::finalize`] first and rejects the block instead.
    pub fn finish(mut self) -> BlockOutcome {
        if let Err(e) = self.finalize() {
            self.events.push(EventRecord {
                phase: Phase::Block,
                event: RuntimeEvent::System(system::Event::HookFailed {
                    error: DispatchError {
                        pallet: 0,
                        error: u8::MAX,
                        message: e.to_string(),
                    },
                }),
            });
        }
        self.store_events_and_prune()
    }

    fn store_events_and_prune(mut self) -> BlockOutcome {
        let number = self.ctx.number;
        if number > limits::BLOCK_HASH_COUNT + 1 {
            // Genesis (0) is kept forever: immortal transactions sign it.
            let old = number - limits::BLOCK_HASH_COUNT - 1;
            if old > 0 {
                system::BLOCK_HASH.remove(&mut self.overlay, &old);
                randomness::RANDOMNESS.remove(&mut self.overlay, &old);
            }
        }
        system::EVENTS.put(&mut self.overlay, &self.events);
        BlockOutcome {
            changes: self.overlay.into_changes(),
            events: self.events,
        }
    }
}

enum DispatchOutcome {
    Failed(DispatchError),
    Storage(StorageError),
}

/// Executes an imported block on top of its parent's state. Every extrinsic must be valid.
pub fn execute_block(
    parent_state: &dyn StateReader,
    block: &crate::Block,
) -> Result<BlockOutcome, BlockError> {
    let mut builder = BlockBuilder::new(parent_state, BlockContext::of(&block.header))?;
    for (index, xt) in block.extrinsics.iter().enumerate() {
        match builder.apply(xt, xt.encoded_size()) {
            Ok(_) => {}
            Err(ApplyError::Invalid(reason)) => {
                return Err(BlockError::InvalidExtrinsic { index, reason })
            }
            Err(ApplyError::Storage(e)) => return Err(BlockError::Storage(e)),
        }
    }
    builder.finalize()?;
    Ok(builder.finish())
}

/// Checks a transaction for the pool against the state of the best block.
pub fn validate_transaction(
    best_state: &dyn StateReader,
    best_number: BlockNumber,
    best_hash: Hash,
    xt: &Extrinsic,
    encoded_len: usize,
) -> Result<ValidTransaction, ApplyError> {
    let builder =
        BlockBuilder::for_validation(best_state, best_number, best_hash).map_err(|e| match e {
            BlockError::Storage(s) => ApplyError::Storage(s),
            other => ApplyError::Storage(StorageError::Backend(other.to_string())),
        })?;
    builder.check(xt, encoded_len)
}
