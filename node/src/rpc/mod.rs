//! The JSON-RPC server: HTTP and WebSocket on one port (jsonrpsee).
//!
//! This module owns the server's setup and what every handler shares: [`RpcImpl`] (the
//! node's chain, pool, metrics and properties), the resolution of an `at` block hash to a
//! state view, and the mapping of internal failures to JSON-RPC errors. The methods live in
//! one file per interface of [`weft_rpc_api`], each implementing that interface's server
//! trait on [`RpcImpl`]:
//!
//! * [`chain`]: `chain_*`, `state_*`, `author_*`, `system_*`, `weft_account`, `weft_events`,
//!   `weft_extrinsic` and the head subscriptions ([`weft_rpc_api::ChainApiServer`]).
//! * [`protocol`]: the `weft_*` methods over the protocol pallets
//!   ([`weft_rpc_api::ProtocolApiServer`]), with [`protocol_json`] turning pallet records
//!   into their JSON types.
//!
//! * [`crate::inference`]: the `inference_*` methods ([`weft_rpc_api::inference::InferenceApiServer`]),
//!   with their own state (the router over the node's libp2p client).
//!
//! [`rpc_module`] merges them into the one module the server serves; an interface in a new
//! file is one more `merge` line there.
//!
//! Reads never block block production for long: they go straight to rocksdb through the
//! chain's read methods. Submissions are validated by the runtime before they enter the pool;
//! a rejection is an error with code 1010 and the reason in the message, and nothing is stored.

mod chain;
mod dashboard;
mod frames;
mod protocol;
mod protocol_json;
mod screen;
mod server;

pub use server::{
    Limits, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP,
};

use crate::chain::{Chain, ChainError};
use crate::chain_spec::Properties;
use crate::inference::InferenceRpc;
use crate::metrics::Metrics;
use crate::pool::Pool;
use jsonrpsee::core::{RegisterMethodError, RpcResult};
use jsonrpsee::server::{BatchRequestConfig, PingConfig, ServerConfig, ServerHandle};
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::RpcModule;
use std::net::SocketAddr;
use std::sync::Arc;
use weft_primitives::{BlockNumber, Hash, Header};
use weft_rpc_api::inference::InferenceApiServer;
use weft_rpc_api::{ChainApiServer, ProtocolApiServer, UNKNOWN_BLOCK};
use weft_runtime::{system, EventRecord};

/// Largest accepted request body (HTTP body or WebSocket message).
pub const MAX_REQUEST_BYTES: u32 = 2 * 1024 * 1024;
/// Largest response.
pub const MAX_RESPONSE_BYTES: u32 = 10 * 1024 * 1024;
/// Subscriptions one WebSocket connection may hold.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: u32 = 1024;
/// Calls in one batch request.
pub const MAX_BATCH_LEN: u32 = 1024;

/// The RPC handlers: the node's parts every interface reads (cheap to clone, so each
/// interface's server gets its own handle).
#[derive(Clone)]
pub struct RpcImpl {
    chain: Arc<Chain>,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    properties: Properties,
    is_dev: bool,
    network: Arc<crate::bft::NetworkStatus>,
}

/// A subscription message carrying `value` as JSON.
pub(crate) fn to_message(
    value: &impl serde::Serialize,
) -> Result<jsonrpsee::SubscriptionMessage, serde_json::Error> {
    Ok(jsonrpsee::SubscriptionMessage::from(
        serde_json::value::to_raw_value(value)?,
    ))
}

/// An internal failure as a JSON-RPC error.
pub(crate) fn internal(e: impl std::fmt::Display) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        jsonrpsee::types::error::INTERNAL_ERROR_CODE,
        e.to_string(),
        None::<()>,
    )
}

fn chain_error(e: ChainError) -> ErrorObjectOwned {
    internal(e)
}

impl RpcImpl {
    /// Handlers over the node's parts.
    pub fn new(
        chain: Arc<Chain>,
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        properties: Properties,
        is_dev: bool,
        network: Arc<crate::bft::NetworkStatus>,
    ) -> Self {
        RpcImpl {
            chain,
            pool,
            metrics,
            properties,
            is_dev,
            network,
        }
    }

    /// The header at `at`, or the best; an error for an unknown hash.
    fn resolve(&self, at: Option<Hash>) -> RpcResult<(Hash, Header)> {
        match at {
            None => {
                let heads = self.chain.heads();
                Ok((heads.best_hash, heads.best))
            }
            Some(hash) => match self.chain.header(&hash).map_err(chain_error)? {
                Some(h) => Ok((hash, h)),
                None => Err(ErrorObjectOwned::owned(
                    UNKNOWN_BLOCK,
                    format!("unknown block {hash}"),
                    None::<()>,
                )),
            },
        }
    }

    /// The state at `at` (default: best) and that block's number.
    fn view(&self, at: Option<Hash>) -> RpcResult<(crate::state::StateView<'_>, BlockNumber)> {
        let (_, header) = self.resolve(at)?;
        Ok((self.chain.state_at(header.number), header.number))
    }

    fn events_at(&self, number: BlockNumber) -> RpcResult<Vec<EventRecord>> {
        Ok(system::EVENTS
            .get(&self.chain.state_at(number))
            .map_err(internal)?
            .unwrap_or_default())
    }
}

/// Methods that change the node itself: served only with `--rpc-methods unsafe` (the
/// default on loopback); with `safe` they answer "method not found".
pub const UNSAFE_METHODS: [&str; 1] = ["system_addReservedPeer"];

/// Every interface's methods in one module, ready to serve; without `unsafe_methods`, the
/// [`UNSAFE_METHODS`] are left out.
pub fn rpc_module(
    handlers: RpcImpl,
    inference: InferenceRpc,
    unsafe_methods: bool,
) -> Result<RpcModule<()>, RegisterMethodError> {
    let mut module = RpcModule::new(());
    module.merge(ChainApiServer::into_rpc(handlers.clone()))?;
    module.merge(ProtocolApiServer::into_rpc(handlers))?;
    module.merge(InferenceApiServer::into_rpc(inference))?;
    if !unsafe_methods {
        for name in UNSAFE_METHODS {
            module.remove_method(name);
        }
    }
    Ok(module)
}

/// Starts the server on `addr`, with connections admitted within `limits` (see
/// [`server`]).
pub async fn start(
    addr: SocketAddr,
    handlers: RpcImpl,
    inference: InferenceRpc,
    limits: Limits,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    // WebSocket pings at half the idle timeout: a live client's pongs keep it connected.
    let ping = PingConfig::new()
        .ping_interval(limits.idle_timeout / 2)
        .inactive_limit(limits.idle_timeout);
    let config = ServerConfig::builder()
        .max_request_body_size(MAX_REQUEST_BYTES)
        .max_response_body_size(MAX_RESPONSE_BYTES)
        .max_subscriptions_per_connection(MAX_SUBSCRIPTIONS_PER_CONNECTION)
        .set_batch_request_config(BatchRequestConfig::Limit(MAX_BATCH_LEN))
        .max_connections(limits.max_connections)
        .enable_ws_ping(ping)
        .build();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let module =
        rpc_module(handlers, inference, limits.unsafe_methods).map_err(std::io::Error::other)?;
    let handle = server::serve(listener, config, module, limits);
    Ok((local, handle))
}
