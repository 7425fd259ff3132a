//! `weft gateway`: an OpenAI-compatible HTTP server in front of a node's `inference_*`
//! methods, so that any OpenAI client library can use a Weft run's model unchanged
//! (`base_url = "http://127.0.0.1:8080/v1"`, any API key).
//!
//! Every request is paid with the gateway's own key: the gateway estimates it, signs an
//! `inference.open` escrowing its tokens' credentials of the run, and lets the node serve it.
//!
//! * [`backend`]: the [`Backend`] trait (estimate, pay, generate, stream), its errors and
//!   [`RpcBackend`], the implementation over a node (nonces of concurrent payments).
//! * [`openai`]: the OpenAI request and response JSON and its mapping to Weft's parameters
//!   and completions (the chat template).
//! * [`sse`]: the chunks and framing of streamed answers.
//! * [`origins`]: which web pages may call the gateway (`--allow-origin`, CORS).
//! * [`server`]: hyper serving, routing and the HTTP statuses of errors.

pub mod backend;
pub mod openai;
pub mod origins;
pub mod server;
pub mod sse;

pub use backend::{Backend, BackendError, EventStream, Payment, RpcBackend};
pub use origins::AllowedOrigins;
pub use server::{serve, ApiError, MAX_BODY};

use std::sync::Arc;
use tokio::net::{TcpListener, ToSocketAddrs};
use weft_runtime::support::RunId;

/// The model name of `run` when none is given: `weft-run-N`.
pub fn default_model_name(run: RunId) -> String {
    format!("weft-run-{run}")
}

/// A gateway: the backend, the run it serves and the name it gives the run's model.
pub struct Gateway<B> {
    /// Where requests go.
    pub backend: B,
    /// The run.
    pub run: RunId,
    /// The model's name in `/v1/models` and in answers.
    pub model: String,
    /// The web pages that may call it (none unless `--allow-origin`).
    pub origins: AllowedOrigins,
}

impl<B: Backend> Gateway<B> {
    /// A gateway for `run` (model name [`default_model_name`] unless `model` is given) that
    /// no web page may call.
    pub fn new(backend: B, run: RunId, model: Option<String>) -> Arc<Self> {
        Self::with_origins(backend, run, model, AllowedOrigins::default())
    }

    /// A gateway that the pages of `origins` may call too.
    pub fn with_origins(
        backend: B,
        run: RunId,
        model: Option<String>,
        origins: AllowedOrigins,
    ) -> Arc<Self> {
        Arc::new(Gateway {
            backend,
            run,
            model: model.unwrap_or_else(|| default_model_name(run)),
            origins,
        })
    }
}

/// Binds `addr` and serves `gateway` there until the task is dropped; the bound address is
/// logged.
pub async fn listen<B: Backend>(
    addr: impl ToSocketAddrs,
    gateway: Arc<Gateway<B>>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        run = gateway.run,
        model = %gateway.model,
        "the OpenAI-compatible gateway listens (base URL http://{}/v1)",
        listener.local_addr()?
    );
    serve(listener, gateway).await;
    Ok(())
}
