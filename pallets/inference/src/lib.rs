//! # Inference
//!
//! Payment for inference with a run's credentials: a holder escrows credentials for a
//! request, the serving side (a trainer of the run) settles it for the tokens it delivered,
//! and the holder gets back what was not used. The credentials stay on the ownership pallet's
//! ledger throughout (`ownership::escrow_credentials`, `charge_escrow`, `release_escrow`):
//! this pallet only records requests and moves credentials between balance, escrow and the
//! run's re-issue pool.
//!
//! ## State machine of a request
//!
//! ```text
//!            open (holder)                 settle (a slot holder of the run, now < expires_at)
//!   ───────────────────────────▶ Open ─────────────────────────────────────▶ Settled
//!    escrow = price × max_tokens   │        charge → re-issue pool, rest → holder
//!                                  │
//!                                  └── block expires_at reached (on_initialize) ──▶ Refunded
//!                                              whole escrow → holder
//! ```
//!
//! * **`open(run, request_hash, max_tokens)`**, signed by the credential holder. The run must
//!   exist and be *servable*: status `Training` (paused or not) or `Finished`; `Pending` and
//!   `Halted` runs serve nothing. A paused run is servable because pausing only says that some
//!   stage lacks a trainer for *training*; if nobody can serve, the escrow comes back at
//!   expiry. `1 ≤ max_tokens ≤ max_tokens_per_request`. The escrow is
//!   [`estimate`]`= credentials_per_token × max_tokens` (checked u128), moved from the
//!   holder's credentials of that run into escrow. The request gets the next sequential
//!   [`RequestId`] and `expires_at = now + request_timeout_blocks`. Two opens with the same
//!   hash are two requests (replays are already stopped by extrinsic nonces).
//! * **`settle(id, tokens_delivered, output_hash)`**, signed by an account that holds a trainer
//!   slot of the request's run now (`stages::held` not empty), while the request is `Open` and
//!   `now < expires_at`, with `1 ≤ tokens_delivered ≤ max_tokens`. The charge is
//!   `escrowed × tokens_delivered / max_tokens` — exactly `credentials_per_token ×
//!   tokens_delivered` at the price the request was opened with — and goes into the run's
//!   re-issue pool, so the owners receive it pro rata at the next epoch boundary exactly like
//!   a `redeem_credential`; the rest of the escrow goes back to the holder. Settling does not
//!   look at the run's status: the request was accepted while servable and may already have
//!   been served when a halt lands.
//! * **Timeout**: at the start of block `expires_at` (before its extrinsics, so no settle can
//!   race it) the hook refunds the whole escrow of each still open request of that block's
//!   queue. Each request is its own all-or-nothing unit (`transactional_item`); one that fails
//!   (only on inconsistent state) has its writes and events rolled back, is recorded as
//!   [`Event::RefundFailed`] and stays `Open` (it is not retried and can no longer be settled);
//!   the others go on. A storage fault aborts the hook.
//! * There is **no cancel**: a holder could be served and then take its escrow back before the
//!   server settles, so the escrow only returns through settlement or expiry.
//!
//! Every error leaves the state unchanged. Requests are kept after they close (their status
//! records the outcome); the index of a holder's *open* requests shrinks as they close.
//!
//! ## Development parameters ([`Config::default`])
//!
//! A run mints `credentials_per_epoch` (1 000 000 by default) per 10-block epoch to its
//! owners. With `credentials_per_token = 100` a 64-token request escrows 6 400 credentials:
//! an owner with a 1 % share (10 000 per epoch) affords one such request per epoch, a sole
//! owner 156. `max_tokens_per_request = 4 096` caps one escrow at 409 600 credentials (less
//! than an epoch's mint), and `request_timeout_blocks = 100` gives the server ten epochs to
//! settle.

use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use weft_pallet_ownership as ownership;
use weft_pallet_runs as runs;
use weft_pallet_stages as stages;
use weft_pallet_support::{
    emit, index, mul_div, transactional_item, Deposit, Failure, Rewind, RunId, Transactional,
};
use weft_primitives::storage::{StateReader, Storage, StorageError, StorageMap, StorageValue};
use weft_primitives::units::balance_string;
use weft_primitives::{AccountId, BlockNumber, DispatchError, Hash};

/// The pallet's name in storage keys.
pub const PALLET: &str = "Inference";
/// The pallet's index in the runtime.
pub const INDEX: u8 = index::INFERENCE;

/// An inference request's id (sequential from 0).
pub type RequestId = u64;

/// Parameters, set at genesis (see the module docs for the development values).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    /// Credentials a request pays per delivered token (and escrows per requested token).
    #[serde(with = "balance_string")]
    pub credentials_per_token: u128,
    /// Most tokens one request may ask for.
    pub max_tokens_per_request: u32,
    /// Blocks after `open` until an unsettled request is refunded.
    pub request_timeout_blocks: BlockNumber,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            credentials_per_token: 100,
            max_tokens_per_request: 4_096,
            request_timeout_blocks: 100,
        }
    }
}

/// Where a request is.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RequestStatus {
    /// Escrow held, waiting for settlement or expiry.
    #[codec(index = 0)]
    Open,
    /// Paid for `tokens` delivered tokens.
    #[codec(index = 1)]
    Settled {
        /// Tokens delivered.
        tokens: u32,
        /// The output's hash, as the server declared it.
        output_hash: Hash,
        /// The serving account.
        by: AccountId,
    },
    /// Expired unsettled; the escrow went back to the holder.
    #[codec(index = 2)]
    Refunded,
}

/// An inference request.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Its id.
    pub id: RequestId,
    /// Who pays.
    pub holder: AccountId,
    /// The run whose model serves it.
    pub run: RunId,
    /// The request's hash (prompt and parameters, off chain).
    pub request_hash: Hash,
    /// Most tokens paid for.
    pub max_tokens: u32,
    /// Credentials put in escrow (`credentials_per_token × max_tokens` at opening).
    #[serde(with = "balance_string")]
    pub escrowed: u128,
    /// Block of `open`.
    pub opened_at: BlockNumber,
    /// First block at which it can no longer be settled (and is refunded).
    pub expires_at: BlockNumber,
    /// Where it is.
    pub status: RequestStatus,
}

/// Parameters.
pub const CONFIG: StorageValue<Config> = StorageValue::new(PALLET, "Config");
/// The next request id.
pub const NEXT_REQUEST_ID: StorageValue<RequestId> = StorageValue::new(PALLET, "NextRequestId");
/// Requests by id (open and closed).
pub const REQUESTS: StorageMap<RequestId, Request> = StorageMap::new(PALLET, "Requests");
/// Requests expiring at a block, in opening order (the refund queue).
pub const EXPIRIES: StorageMap<BlockNumber, Vec<RequestId>> = StorageMap::new(PALLET, "Expiries");
/// Open requests per holder, ascending.
pub const OPEN_BY_HOLDER: StorageMap<AccountId, Vec<RequestId>> =
    StorageMap::new(PALLET, "OpenByHolder");

/// Calls. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Call {
    /// Opens a request on `run`, escrowing `credentials_per_token × max_tokens`.
    #[codec(index = 0)]
    Open {
        /// Run.
        run: RunId,
        /// The request's hash.
        request_hash: Hash,
        /// Most tokens to pay for.
        max_tokens: u32,
    },
    /// Settles request `id` for the tokens delivered (by a slot holder of its run).
    #[codec(index = 1)]
    Settle {
        /// Request.
        id: RequestId,
        /// Tokens delivered.
        tokens_delivered: u32,
        /// The output's hash.
        output_hash: Hash,
    },
}

/// Events. Indices are stable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    /// A request was opened and its escrow taken.
    #[codec(index = 0)]
    RequestOpened {
        /// Request.
        id: RequestId,
        /// Run.
        run: RunId,
        /// Holder.
        holder: AccountId,
        /// Credentials in escrow.
        escrowed: u128,
        /// Block at which it is refunded unless settled before.
        expires_at: BlockNumber,
    },
    /// A request was settled: `charged` went to the run's re-issue pool, `refunded` back to
    /// the holder.
    #[codec(index = 1)]
    RequestSettled {
        /// Request.
        id: RequestId,
        /// Run.
        run: RunId,
        /// Credentials paid to the owners (via the re-issue pool).
        charged: u128,
        /// Credentials returned to the holder.
        refunded: u128,
        /// The output's hash.
        output_hash: Hash,
        /// The serving account.
        by: AccountId,
    },
    /// A request expired unsettled and its whole escrow went back.
    #[codec(index = 2)]
    RequestRefunded {
        /// Request.
        id: RequestId,
        /// Holder.
        holder: AccountId,
        /// Credentials returned.
        amount: u128,
    },
    /// An expired request could not be refunded (inconsistent state); its writes and events
    /// were rolled back and it stays `Open` (not retried).
    #[codec(index = 3)]
    RefundFailed {
        /// Request.
        id: RequestId,
        /// Why.
        error: DispatchError,
    },
}

/// Errors. Indices are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum Error {
    /// No such run.
    #[codec(index = 0)]
    #[error("UnknownRun: no such run")]
    UnknownRun,
    /// The run serves no inference now (pending or halted).
    #[codec(index = 1)]
    #[error("NotServable: the run is pending or halted")]
    NotServable,
    /// More tokens than `max_tokens_per_request`.
    #[codec(index = 2)]
    #[error("TooManyTokens: more tokens than a request may ask for")]
    TooManyTokens,
    /// Zero tokens.
    #[codec(index = 3)]
    #[error("ZeroTokens: the token count must be positive")]
    ZeroTokens,
    /// The holder has fewer credentials of the run than the escrow.
    #[codec(index = 4)]
    #[error("InsufficientCredentials: not enough credentials of the run for the escrow")]
    InsufficientCredentials,
    /// No such request.
    #[codec(index = 5)]
    #[error("UnknownRequest: no such request")]
    UnknownRequest,
    /// The request is settled or refunded.
    #[codec(index = 6)]
    #[error("NotOpen: the request is no longer open")]
    NotOpen,
    /// The request reached its expiry block.
    #[codec(index = 7)]
    #[error("Expired: the request has expired")]
    Expired,
    /// The settler holds no trainer slot of the request's run.
    #[codec(index = 8)]
    #[error("NotServer: the signer holds no slot of the run")]
    NotServer,
    /// More tokens delivered than the request's `max_tokens`.
    #[codec(index = 9)]
    #[error("TooManyDelivered: more tokens delivered than requested")]
    TooManyDelivered,
    /// Arithmetic overflow.
    #[codec(index = 10)]
    #[error("Overflow: arithmetic overflow")]
    Overflow,
    /// A genesis parameter is zero (price, token cap or timeout).
    #[codec(index = 11)]
    #[error("BadConfig: credentials_per_token, max_tokens_per_request and request_timeout_blocks must be positive")]
    BadConfig,
}

weft_pallet_support::pallet_error!(Error, INDEX);

/// What this pallet's functions emit into.
pub trait Sink: Deposit<Event> {}
impl<T: Deposit<Event> + ?Sized> Sink for T {}

/// Parameters.
pub fn config(s: &(impl StateReader + ?Sized)) -> Result<Config, StorageError> {
    Ok(CONFIG.get(s)?.unwrap_or_default())
}

/// Request `id`.
pub fn request(
    s: &(impl StateReader + ?Sized),
    id: RequestId,
) -> Result<Option<Request>, StorageError> {
    REQUESTS.get(s, &id)
}

/// The open requests of `holder`, ascending by id.
pub fn requests_of(
    s: &(impl StateReader + ?Sized),
    holder: &AccountId,
) -> Result<Vec<Request>, StorageError> {
    let mut out = Vec::new();
    for id in OPEN_BY_HOLDER.get(s, holder)?.unwrap_or_default() {
        if let Some(r) = REQUESTS.get(s, &id)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// The id the next request gets.
pub fn next_request_id(s: &(impl StateReader + ?Sized)) -> Result<RequestId, StorageError> {
    Ok(NEXT_REQUEST_ID.get(s)?.unwrap_or(0))
}

/// The escrow of a request for `tokens` tokens (and the charge for `tokens` delivered):
/// `credentials_per_token × tokens`, checking the token bounds.
pub fn estimate(cfg: &Config, tokens: u32) -> Result<u128, Error> {
    if tokens == 0 {
        return Err(Error::ZeroTokens);
    }
    if tokens > cfg.max_tokens_per_request {
        return Err(Error::TooManyTokens);
    }
    cfg.credentials_per_token
        .checked_mul(u128::from(tokens))
        .ok_or(Error::Overflow)
}

/// Whether `run` serves inference now: `Training` (paused or not) or `Finished`.
pub fn is_servable(r: &runs::RunInfo) -> bool {
    matches!(
        r.status,
        runs::RunStatus::Training | runs::RunStatus::Finished
    )
}

/// `open`: returns the new request's id.
pub fn open(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    holder: &AccountId,
    run: RunId,
    request_hash: Hash,
    max_tokens: u32,
) -> Result<RequestId, Failure> {
    let cfg = config(s)?;
    let escrowed = estimate(&cfg, max_tokens)?;
    let r = runs::run(s, run)?.ok_or(Error::UnknownRun)?;
    if !is_servable(&r) {
        return Err(Error::NotServable.into());
    }
    if ownership::credentials(s, run, holder)? < escrowed {
        return Err(Error::InsufficientCredentials.into());
    }
    let expires_at = now
        .checked_add(cfg.request_timeout_blocks)
        .ok_or(Error::Overflow)?;
    let id = next_request_id(s)?;
    let next = id.checked_add(1).ok_or(Error::Overflow)?;
    ownership::escrow_credentials(s, run, holder, escrowed)?;
    NEXT_REQUEST_ID.put(s, &next);
    REQUESTS.insert(
        s,
        &id,
        &Request {
            id,
            holder: *holder,
            run,
            request_hash,
            max_tokens,
            escrowed,
            opened_at: now,
            expires_at,
            status: RequestStatus::Open,
        },
    );
    let mut queue = EXPIRIES.get(s, &expires_at)?.unwrap_or_default();
    queue.push(id);
    EXPIRIES.insert(s, &expires_at, &queue);
    let mut mine = OPEN_BY_HOLDER.get(s, holder)?.unwrap_or_default();
    mine.push(id);
    OPEN_BY_HOLDER.insert(s, holder, &mine);
    emit(
        ev,
        Event::RequestOpened {
            id,
            run,
            holder: *holder,
            escrowed,
            expires_at,
        },
    );
    Ok(id)
}

fn close(
    s: &mut (impl Storage + ?Sized),
    mut req: Request,
    status: RequestStatus,
) -> Result<(), Failure> {
    let mut mine = OPEN_BY_HOLDER.get(s, &req.holder)?.unwrap_or_default();
    if let Ok(i) = mine.binary_search(&req.id) {
        mine.remove(i);
    }
    if mine.is_empty() {
        OPEN_BY_HOLDER.remove(s, &req.holder);
    } else {
        OPEN_BY_HOLDER.insert(s, &req.holder, &mine);
    }
    req.status = status;
    REQUESTS.insert(s, &req.id, &req);
    Ok(())
}

/// `settle`: returns `(charged, refunded)`.
pub fn settle(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    server: &AccountId,
    id: RequestId,
    tokens_delivered: u32,
    output_hash: Hash,
) -> Result<(u128, u128), Failure> {
    let req = REQUESTS.get(s, &id)?.ok_or(Error::UnknownRequest)?;
    if req.status != RequestStatus::Open {
        return Err(Error::NotOpen.into());
    }
    if now >= req.expires_at {
        return Err(Error::Expired.into());
    }
    if stages::held(s, req.run, server)?.is_empty() {
        return Err(Error::NotServer.into());
    }
    if tokens_delivered == 0 {
        return Err(Error::ZeroTokens.into());
    }
    if tokens_delivered > req.max_tokens {
        return Err(Error::TooManyDelivered.into());
    }
    // escrowed = price × max_tokens, so this is price × tokens_delivered exactly.
    let charged = mul_div(
        req.escrowed,
        u128::from(tokens_delivered),
        u128::from(req.max_tokens),
    )
    .ok_or(Error::Overflow)?;
    let refunded = req.escrowed.checked_sub(charged).ok_or(Error::Overflow)?;
    ownership::charge_escrow(s, req.run, &req.holder, charged)?;
    ownership::release_escrow(s, req.run, &req.holder, refunded)?;
    let run = req.run;
    close(
        s,
        req,
        RequestStatus::Settled {
            tokens: tokens_delivered,
            output_hash,
            by: *server,
        },
    )?;
    emit(
        ev,
        Event::RequestSettled {
            id,
            run,
            charged,
            refunded,
            output_hash,
            by: *server,
        },
    );
    Ok((charged, refunded))
}

/// Refunds request `id` if it is still open (one item of the expiry queue).
pub fn refund(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    id: RequestId,
) -> Result<(), Failure> {
    let Some(req) = REQUESTS.get(s, &id)? else {
        return Ok(());
    };
    if req.status != RequestStatus::Open {
        return Ok(());
    }
    ownership::release_escrow(s, req.run, &req.holder, req.escrowed)?;
    let (holder, amount) = (req.holder, req.escrowed);
    close(s, req, RequestStatus::Refunded)?;
    emit(ev, Event::RequestRefunded { id, holder, amount });
    Ok(())
}

/// Block start: refunds the still open requests that expire at `now`, each in its own
/// transaction (a failing one is recorded as [`Event::RefundFailed`]; see the module docs).
pub fn on_initialize(
    s: &mut (impl Transactional + ?Sized),
    ev: &mut (impl Sink + Rewind),
    now: BlockNumber,
) -> Result<(), Failure> {
    let Some(queue) = EXPIRIES.get(s, &now)? else {
        return Ok(());
    };
    EXPIRIES.remove(s, &now);
    for id in queue {
        if let Err(error) = transactional_item(s, ev, |s, ev| refund(s, ev, id))? {
            emit(ev, Event::RefundFailed { id, error });
        }
    }
    Ok(())
}

/// Genesis: parameters (each must be positive).
pub fn build_genesis(s: &mut (impl Storage + ?Sized), cfg: &Config) -> Result<(), Failure> {
    if cfg.credentials_per_token == 0
        || cfg.max_tokens_per_request == 0
        || cfg.request_timeout_blocks == 0
    {
        return Err(Error::BadConfig.into());
    }
    CONFIG.put(s, cfg);
    Ok(())
}

/// Dispatches a call signed by `origin`.
pub fn dispatch(
    s: &mut (impl Storage + ?Sized),
    ev: &mut impl Sink,
    now: BlockNumber,
    origin: &AccountId,
    call: &Call,
) -> Result<(), Failure> {
    match call {
        Call::Open {
            run,
            request_hash,
            max_tokens,
        } => open(s, ev, now, origin, *run, *request_hash, *max_tokens).map(|_| ()),
        Call::Settle {
            id,
            tokens_delivered,
            output_hash,
        } => settle(s, ev, now, origin, *id, *tokens_delivered, *output_hash).map(|_| ()),
    }
}

#[cfg(test)]
mod tests;
