//! `weft infer`: one completion from a run's model, paid with the signer's credentials.
//!
//! The request is estimated first (`cost: N credentials for T tokens (step S)` on stderr);
//! a run that cannot serve is refused with the node's reason before anything is signed.
//! Then the signer's `inference.open` escrowing `T` tokens is signed and handed to the node
//! with the request, and the completion's text is streamed to stdout as its tokens arrive
//! (or, with `--no-stream`, printed once it is complete). A summary goes to stderr. With
//! `--json` the completion object is printed to stdout instead of the text.

use crate::{connect, print_json};
use anyhow::{bail, Result};
use clap::{ArgGroup, Args};
use futures::StreamExt;
use std::io::Write;
use std::sync::Arc;
use weft_cli::args::{parse_signer_suri, Signer};
use weft_cli::gateway::backend::quote;
use weft_cli::gateway::{Backend, BackendError, RpcBackend};
use weft_cli::render::field;
use weft_cli::SubmitOptions;
use weft_rpc_api::inference::{CompletionJson, GenerateEvent, InferenceParams};
use weft_runtime::support::RunId;

/// `weft infer …`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["prompt", "prompt_tokens"])))]
pub struct InferArgs {
    /// The run whose model answers.
    #[arg(long)]
    run: RunId,
    /// The credential holder who pays: a secret URI such as //Alice or a mnemonic.
    #[arg(long, value_name = "SURI", value_parser = parse_signer_suri)]
    from: Signer,
    /// The prompt as text (its UTF-8 bytes are its tokens).
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// The prompt as token ids, comma-separated.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    prompt_tokens: Option<Vec<u32>>,
    /// Tokens to generate at most.
    #[arg(long, value_name = "M")]
    max_tokens: u32,
    /// Sampling temperature, 0 (greedy, the default) to 10.
    #[arg(long, value_name = "T")]
    temperature: Option<f64>,
    /// Nucleus threshold in (0, 1] (default 1).
    #[arg(long, value_name = "P")]
    top_p: Option<f64>,
    /// Keep the K most likely tokens (default 0 = all).
    #[arg(long, value_name = "K")]
    top_k: Option<u32>,
    /// A stop sequence (repeatable).
    #[arg(long, value_name = "TEXT")]
    stop: Vec<String>,
    /// Seed of the draws (default 0).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Print the text once complete instead of streaming it.
    #[arg(long)]
    no_stream: bool,
}

impl InferArgs {
    /// The request's parameters (no payment yet).
    pub fn params(&self) -> InferenceParams {
        InferenceParams {
            run: self.run,
            prompt: self.prompt.clone(),
            prompt_tokens: self.prompt_tokens.clone(),
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            stop: self.stop.clone(),
            seed: self.seed,
            payment: None,
        }
    }
}

/// Runs `weft infer`.
pub async fn infer(url: &str, json: bool, args: InferArgs) -> Result<()> {
    let client = Arc::new(connect(url).await?);
    let backend = RpcBackend::new(client, args.from.pair.clone(), SubmitOptions::default());
    let params = args.params();
    let estimate = quote(&backend, &params).await?;
    eprintln!(
        "cost: {} credentials for {} tokens (step {})",
        estimate.credentials,
        estimate.total_tokens,
        estimate
            .step
            .map_or_else(|| "-".to_string(), |s| s.to_string())
    );
    let payment = backend.pay(&estimate).await?;
    let completion = if json || args.no_stream {
        let c = backend.generate(params, payment).await?;
        if !json {
            print!("{}", c.text);
            std::io::stdout().flush()?;
        }
        c
    } else {
        stream(&backend, params, payment).await?
    };
    if json {
        return print_json(&completion);
    }
    if !completion.text.ends_with('\n') {
        eprintln!();
    }
    summary(&completion);
    Ok(())
}

/// Streams the text to stdout, one write and flush per event.
async fn stream(
    backend: &RpcBackend,
    params: InferenceParams,
    payment: weft_cli::gateway::Payment,
) -> Result<CompletionJson> {
    let mut events = backend.stream(params, payment).await?;
    let mut out = std::io::stdout();
    let mut printed = String::new();
    while let Some(ev) = events.next().await {
        match ev? {
            GenerateEvent::Token { text, .. } => {
                out.write_all(text.as_bytes())?;
                out.flush()?;
                printed.push_str(&text);
            }
            GenerateEvent::Done(c) => {
                out.write_all(weft_rpc_api::inference::stream_tail(&printed, &c).as_bytes())?;
                out.flush()?;
                return Ok(c);
            }
            GenerateEvent::Error { code, message } => {
                out.flush()?;
                eprintln!();
                return Err(BackendError::from_code(code, &message, None).into());
            }
        }
    }
    bail!("the node ended the stream without a result")
}

fn summary(c: &CompletionJson) {
    eprintln!("{}", field("Request", c.request_id));
    eprintln!("{}", field("Payment", c.payment));
    eprintln!("{}", field("Step", c.step));
    eprintln!("{}", field("Finish", &c.finish_reason));
    eprintln!(
        "{}",
        field(
            "Tokens",
            format!("{} prompt + {} completion", c.prompt_tokens, c.tokens.len())
        )
    );
}
