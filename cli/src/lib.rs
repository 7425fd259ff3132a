//! # weft-cli
//!
//! The library behind the `weft` command-line client, reusable by other tools (the trainer,
//! the end-to-end tests):
//!
//! * [`client`]: [`Client`], a typed connection to a node that signs, submits and follows
//!   extrinsics ([`Client::submit`]) and returns a [`Receipt`].
//! * [`args`]: parsing of user input: address-or-secret-URI accounts, signers, amounts and
//!   block selectors.
//! * [`render`]: human-readable output: aligned fields, WEFT amounts, timestamps, events.
//! * [`run_spec`]: the JSON of a run's model configuration and hyper-parameters, converted
//!   to the runs pallet's typed values and checked against its rules.
//! * [`inference`]: the inference pallet's calls and the signed `open` extrinsic's bytes.
//! * [`gateway`]: the OpenAI-compatible HTTP gateway of `weft gateway` and the inference
//!   backend `weft infer` uses too.
//!
//! ```no_run
//! # async fn demo() -> Result<(), weft_cli::ClientError> {
//! use weft_cli::{Client, SubmitOptions};
//! use weft_primitives::Keypair;
//! use weft_runtime::RuntimeCall;
//!
//! let client = Client::connect("ws://127.0.0.1:9944").await?;
//! let alice = Keypair::from_suri("//Alice").expect("valid SURI");
//! let call = RuntimeCall::System(weft_runtime::system::Call::Remark { remark: b"hi".to_vec() });
//! let receipt = client.submit(&alice, call, &SubmitOptions::default()).await?.ensure_success()?;
//! println!("in block {:?}", receipt.block_hash);
//! # Ok(()) }
//! ```

pub mod args;
pub mod gateway;
pub mod inference;
pub mod render;
pub mod run_spec;

pub use weft_rpc_client::{
    Client, ClientError, Receipt, Stage, SubmitOptions, WaitFor, DEFAULT_MORTALITY, DEFAULT_TIMEOUT,
};
