//! The inference backend: the four things a client of a node does for a completion
//! ([`Backend`]: estimate, pay, generate, stream), its errors ([`BackendError`], from the
//! `inference_*` error codes) and the implementation over a node's JSON-RPC
//! ([`RpcBackend`]).
//!
//! # Nonces
//!
//! Every request is paid by a signed `inference.open` of one account, and requests may run
//! concurrently, so [`RpcBackend::pay`] signs under one lock and tracks nonces itself
//! ([`NonceTracker`]): a payment takes the larger of the account's nonce at the node's best
//! block and the next nonce this process has not handed out yet. A payment the node refused
//! before it reached the pool (bad parameters, busy, unavailable, a refused or mismatched
//! payment) gives its nonce back: the next payment reuses it, so no gap holds later payments
//! in the pool's future queue. A nonce given back that the chain has meanwhile used is
//! forgotten at the next signing.
//!
//! # Reconnection
//!
//! A backend made with [`RpcBackend::connect`] opens a new connection to the node when the
//! old one has closed (a node restart), at the start of the next call; calls in flight on
//! the old connection fail.

use futures::{Stream, StreamExt};
use jsonrpsee::core::client::Error as RpcError;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use tokio::sync::Mutex;
use weft_primitives::{Bytes, Keypair, Nonce};
use weft_rpc_api::inference::{
    CompletionJson, EstimateJson, GenerateEvent, InferenceApiClient, InferenceParams,
    INFERENCE_BAD_PARAMS, INFERENCE_BUSY, INFERENCE_UNAVAILABLE, INFERENCE_UNPAID,
};
use weft_rpc_api::UNKNOWN_RUN;

use crate::inference::signed_open;
use crate::{Client, ClientError, SubmitOptions};

/// Why a request failed, by the node's error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The parameters cannot be served (4010).
    #[error("bad parameters: {0}")]
    BadParams(String),
    /// The payment is missing, forged, mismatched or refused, e.g. too few credentials, before
    /// it reached the pool (4011).
    #[error("not paid: {0}")]
    Unpaid(String),
    /// The payment reached the pool but opened no request: not included in time, or the
    /// chain refused it (4011 with `data.submitted`); its nonce may be used.
    #[error("not paid: {0}")]
    PaymentLost(String),
    /// The run cannot serve now; nothing was paid (4012).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Every serving slot is taken (4013).
    #[error("busy; retry after {retry_after_ms} ms ({message})")]
    Busy {
        /// The node's `data.retryAfterMs`.
        retry_after_ms: u64,
        /// The node's message.
        message: String,
    },
    /// The run was never registered (4004).
    #[error("unknown run: {0}")]
    UnknownRun(String),
    /// Any other failure: the connection, an internal error of the node, signing.
    #[error("{0}")]
    Node(String),
}

impl BackendError {
    /// The error of a JSON-RPC error code, message and data.
    pub fn from_code(code: i32, message: &str, data: Option<&serde_json::Value>) -> Self {
        let m = message.to_string();
        match code {
            INFERENCE_BAD_PARAMS => BackendError::BadParams(m),
            INFERENCE_UNPAID
                if data
                    .and_then(|d| d.get("submitted"))
                    .and_then(serde_json::Value::as_bool)
                    == Some(true) =>
            {
                BackendError::PaymentLost(m)
            }
            INFERENCE_UNPAID => BackendError::Unpaid(m),
            INFERENCE_UNAVAILABLE => BackendError::Unavailable(m),
            INFERENCE_BUSY => BackendError::Busy {
                retry_after_ms: data
                    .and_then(|d| d.get("retryAfterMs"))
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(1000),
                message: m,
            },
            UNKNOWN_RUN => BackendError::UnknownRun(m),
            _ => BackendError::Node(format!("{m} (code {code})")),
        }
    }

    /// The error of a failed JSON-RPC call.
    pub fn from_rpc(method: &str, e: RpcError) -> Self {
        match e {
            RpcError::Call(obj) => {
                let data = obj
                    .data()
                    .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).ok());
                BackendError::from_code(obj.code(), obj.message(), data.as_ref())
            }
            other => BackendError::Node(format!("{method}: {other}")),
        }
    }

    /// Whether the node refused the request before its payment could reach the pool (so the
    /// payment's nonce is still free).
    pub fn before_payment(&self) -> bool {
        !matches!(self, BackendError::PaymentLost(_) | BackendError::Node(_))
    }
}

impl From<ClientError> for BackendError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Node { code, message, .. } => {
                BackendError::from_code(code, &message, None)
            }
            other => BackendError::Node(other.to_string()),
        }
    }
}

/// A signed `inference.open` extrinsic and the nonce it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// The extrinsic's SCALE bytes (`InferenceParams::payment`).
    pub extrinsic: Bytes,
    /// Its nonce.
    pub nonce: Nonce,
}

/// The events of a streamed completion.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<GenerateEvent, BackendError>> + Send>>;

/// What the `weft infer` command and the gateway need of a node.
pub trait Backend: Send + Sync + 'static {
    /// The cost of a request and whether the run can serve it.
    fn estimate(
        &self,
        params: &InferenceParams,
    ) -> impl Future<Output = Result<EstimateJson, BackendError>> + Send;
    /// A payment for the estimated request (`total_tokens` escrowed).
    fn pay(
        &self,
        estimate: &EstimateJson,
    ) -> impl Future<Output = Result<Payment, BackendError>> + Send;
    /// The completion of `params`, paid by `payment`.
    fn generate(
        &self,
        params: InferenceParams,
        payment: Payment,
    ) -> impl Future<Output = Result<CompletionJson, BackendError>> + Send;
    /// The completion of `params` as a stream of events, paid by `payment`.
    fn stream(
        &self,
        params: InferenceParams,
        payment: Payment,
    ) -> impl Future<Output = Result<EventStream, BackendError>> + Send;
}

/// The estimate of `params`, or [`BackendError::Unavailable`] with its reason when the run
/// cannot serve now (before anything is signed).
pub async fn quote<B: Backend>(
    backend: &B,
    params: &InferenceParams,
) -> Result<EstimateJson, BackendError> {
    let estimate = backend.estimate(params).await?;
    if let Some(why) = &estimate.unavailable {
        return Err(BackendError::Unavailable(why.clone()));
    }
    Ok(estimate)
}

/// The nonces handed out by one process for one account.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NonceTracker {
    next: Option<Nonce>,
    free: BTreeSet<Nonce>,
}

impl NonceTracker {
    /// The nonce for the next payment, given the account's nonce at the best block.
    pub fn take(&mut self, chain: Nonce) -> Nonce {
        self.free.retain(|&n| n >= chain);
        if let Some(n) = self.free.pop_first() {
            return n;
        }
        let n = self.next.map_or(chain, |next| next.max(chain));
        self.next = Some(n + 1);
        n
    }

    /// Gives back `nonce`, which was handed out but not used.
    pub fn give_back(&mut self, nonce: Nonce) {
        if self.next == Some(nonce + 1) {
            let mut next = nonce;
            while next > 0 && self.free.remove(&(next - 1)) {
                next -= 1;
            }
            self.next = Some(next);
        } else if self.next.is_some_and(|next| nonce < next) {
            self.free.insert(nonce);
        }
    }
}

/// [`Backend`] over a node's `inference_*` methods, paying with one key.
pub struct RpcBackend {
    client: RwLock<Arc<Client>>,
    url: Option<String>,
    reconnecting: Mutex<()>,
    key: Keypair,
    opts: SubmitOptions,
    nonces: Mutex<NonceTracker>,
}

impl RpcBackend {
    /// A backend over `client` paying with `key` (tip and mortality from `opts`); it does
    /// not reconnect.
    pub fn new(client: Arc<Client>, key: Keypair, opts: SubmitOptions) -> Self {
        RpcBackend {
            client: RwLock::new(client),
            url: None,
            reconnecting: Mutex::new(()),
            key,
            opts,
            nonces: Mutex::new(NonceTracker::default()),
        }
    }

    /// A backend connected to the node at `url`, reconnecting when the connection closes.
    pub async fn connect(
        url: &str,
        key: Keypair,
        opts: SubmitOptions,
    ) -> Result<Self, ClientError> {
        let client = Arc::new(Client::connect(url).await?);
        Ok(RpcBackend {
            url: Some(url.to_string()),
            ..RpcBackend::new(client, key, opts)
        })
    }

    fn current(&self) -> Arc<Client> {
        self.client
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The connection to the node, a new one if the last one closed.
    pub async fn client(&self) -> Result<Arc<Client>, BackendError> {
        let c = self.current();
        let Some(url) = &self.url else {
            return Ok(c);
        };
        if c.rpc().is_connected() {
            return Ok(c);
        }
        let _one_at_a_time = self.reconnecting.lock().await;
        let c = self.current();
        if c.rpc().is_connected() {
            return Ok(c);
        }
        tracing::warn!(url, "the connection to the node closed; reconnecting");
        let fresh = Arc::new(Client::connect(url).await?);
        *self
            .client
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    async fn give_back_if_unused(&self, e: &BackendError, payment: &Payment) {
        if e.before_payment() {
            self.nonces.lock().await.give_back(payment.nonce);
        }
    }
}

fn with_payment(mut params: InferenceParams, payment: &Payment) -> InferenceParams {
    params.payment = Some(payment.extrinsic.clone());
    params
}

impl Backend for RpcBackend {
    async fn estimate(&self, params: &InferenceParams) -> Result<EstimateJson, BackendError> {
        let params = InferenceParams {
            payment: None,
            ..params.clone()
        };
        self.client()
            .await?
            .rpc()
            .estimate(params)
            .await
            .map_err(|e| BackendError::from_rpc("inference_estimate", e))
    }

    async fn pay(&self, estimate: &EstimateJson) -> Result<Payment, BackendError> {
        let client = self.client().await?;
        let mut nonces = self.nonces.lock().await;
        let chain = client.account(self.key.account_id(), None).await?.nonce;
        let nonce = nonces.take(chain);
        let signed = signed_open(
            &client,
            &self.key,
            estimate.run,
            estimate.request_hash,
            estimate.total_tokens,
            Some(nonce),
            &self.opts,
        )
        .await;
        match signed {
            Ok(bytes) => Ok(Payment {
                extrinsic: Bytes(bytes),
                nonce,
            }),
            Err(e) => {
                nonces.give_back(nonce);
                Err(e.into())
            }
        }
    }

    async fn generate(
        &self,
        params: InferenceParams,
        payment: Payment,
    ) -> Result<CompletionJson, BackendError> {
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                // Not sent: the nonce is free.
                self.nonces.lock().await.give_back(payment.nonce);
                return Err(e);
            }
        };
        let r = client
            .rpc()
            .generate(with_payment(params, &payment))
            .await
            .map_err(|e| BackendError::from_rpc("inference_generate", e));
        if let Err(e) = &r {
            self.give_back_if_unused(e, &payment).await;
        }
        r
    }

    async fn stream(
        &self,
        params: InferenceParams,
        payment: Payment,
    ) -> Result<EventStream, BackendError> {
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                self.nonces.lock().await.give_back(payment.nonce);
                return Err(e);
            }
        };
        let sub = client
            .rpc()
            .subscribe_generate(with_payment(params, &payment))
            .await
            .map_err(|e| BackendError::from_rpc("inference_subscribeGenerate", e));
        match sub {
            Ok(sub) => Ok(sub
                .map(|item| item.map_err(|e| BackendError::Node(format!("undecodable event: {e}"))))
                .boxed()),
            Err(e) => {
                self.give_back_if_unused(&e, &payment).await;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_tracked_and_reused() {
        let mut t = NonceTracker::default();
        assert_eq!(t.take(5), 5);
        assert_eq!(t.take(5), 6, "the chain has not seen 5 yet");
        assert_eq!(t.take(5), 7);
        t.give_back(6);
        assert_eq!(t.take(6), 6, "a gap is filled first");
        assert_eq!(t.take(6), 8);
        t.give_back(8);
        assert_eq!(t.take(6), 8, "the last one rolls back");
        t.give_back(7);
        t.give_back(8);
        assert_eq!(t.take(7), 7, "7 and 8 rolled back together");
        assert_eq!(t.take(20), 20, "the chain moved on");
        t.give_back(3);
        assert_eq!(t.take(20), 21);
    }

    #[test]
    fn error_codes_map_to_words() {
        let busy = BackendError::from_code(
            INFERENCE_BUSY,
            "full",
            Some(&serde_json::json!({"retryAfterMs": 250})),
        );
        assert_eq!(busy.to_string(), "busy; retry after 250 ms (full)");
        assert!(matches!(
            BackendError::from_code(INFERENCE_UNPAID, "x", None),
            BackendError::Unpaid(_)
        ));
        assert!(matches!(
            BackendError::from_code(UNKNOWN_RUN, "x", None),
            BackendError::UnknownRun(_)
        ));
        let lost = BackendError::from_code(
            INFERENCE_UNPAID,
            "the payment was not included in time",
            Some(&serde_json::json!({"submitted": true})),
        );
        assert!(matches!(lost, BackendError::PaymentLost(_)));
        assert!(!lost.before_payment());
        assert!(BackendError::Unpaid("the payment was refused: stale".into()).before_payment());
        assert!(!BackendError::Node("gone".into()).before_payment());
    }
}
