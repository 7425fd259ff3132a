//! `weft ownership` and `weft credentials`: shares of a run, credentials minted, moved and
//! redeemed.

use super::*;

/// `weft ownership …`.
#[derive(Debug, Subcommand)]
pub enum OwnershipCommand {
    /// Show a run's owners: units, shares (summing to exactly 100%) and credentials.
    Show {
        /// The run id.
        run: RunId,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Transfer ownership units of a run.
    Transfer {
        #[command(flatten)]
        tx: TxArgs,
        /// The run id.
        #[arg(long)]
        run: RunId,
        /// The recipient.
        #[arg(long, value_name = "ADDRESS-or-SURI", value_parser = parse_account)]
        to: AccountId,
        /// Units to transfer.
        #[arg(long)]
        units: u128,
    },
}

/// `weft credentials …`.
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Show an account's credentials (and units) in one run or every run.
    Show {
        /// An SS58 address, a 0x public key or a secret URI.
        #[arg(value_name = "ADDRESS-or-SURI", value_parser = parse_account)]
        account: AccountId,
        /// Only this run.
        #[arg(long)]
        run: Option<RunId>,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Transfer credentials of a run.
    Transfer {
        #[command(flatten)]
        tx: TxArgs,
        /// The run id.
        #[arg(long)]
        run: RunId,
        /// The recipient.
        #[arg(long, value_name = "ADDRESS-or-SURI", value_parser = parse_account)]
        to: AccountId,
        /// How many credentials.
        #[arg(long)]
        amount: u128,
    },
    /// Redeem credentials for an inference request: burnt now, re-issued to the owners at
    /// the next epoch boundary.
    Redeem {
        #[command(flatten)]
        tx: TxArgs,
        /// The run id.
        #[arg(long)]
        run: RunId,
        /// How many credentials.
        #[arg(long, default_value_t = 1)]
        amount: u128,
        /// The inference request this pays for (default: a fresh hash).
        #[arg(long, value_name = "0xHASH")]
        request: Option<Hash>,
    },
}

/// `weft ownership …`.
pub async fn ownership(url: &str, json: bool, command: OwnershipCommand) -> Result<()> {
    match command {
        OwnershipCommand::Show { run, at } => {
            let o = connect(url).await?.ownership(run, at.at).await?;
            show(json, &o, |o| {
                println!("{}", field("Run", o.run_id));
                println!("{}", field("Total units", &o.total_units));
                println!(
                    "{}",
                    field(
                        "Credentials",
                        format!(
                            "{} issued, {} waiting for re-issue",
                            o.credential_issuance, o.reissue_pool
                        )
                    )
                );
                if o.owners.is_empty() {
                    println!("no owners yet (no credited work)");
                }
                for x in &o.owners {
                    let pct = x
                        .share
                        .parse::<u128>()
                        .map(ppb_to_percent)
                        .unwrap_or_else(|_| x.share.clone());
                    println!(
                        "  {}  {pct:>12}  {} units  {} credentials",
                        x.account, x.units, x.credentials
                    );
                }
            })
        }
        OwnershipCommand::Transfer { tx, run, to, units } => {
            let call = RuntimeCall::Ownership(ownership::Call::TransferUnits {
                run,
                dest: to,
                amount: units,
            });
            submit(
                url,
                json,
                &tx,
                call,
                &format!("ownership.transferUnits run {run}: {units} units to {to}"),
            )
            .await
        }
    }
}

/// `weft credentials …`.
pub async fn credentials(url: &str, json: bool, command: CredentialsCommand) -> Result<()> {
    match command {
        CredentialsCommand::Show { account, run, at } => {
            let c = connect(url).await?.credentials(account, run, at.at).await?;
            show(json, &c, |c| {
                println!("{}", field("Account", c.account));
                if c.runs.is_empty() {
                    println!("no credentials or units in any run");
                }
                for r in &c.runs {
                    let escrow = if r.escrowed == "0" {
                        String::new()
                    } else {
                        format!(" ({} in escrow)", r.escrowed)
                    };
                    println!(
                        "  run {}: {} credentials{escrow}, {} units",
                        r.run_id, r.credentials, r.units
                    );
                }
            })
        }
        CredentialsCommand::Transfer {
            tx,
            run,
            to,
            amount,
        } => {
            let call = RuntimeCall::Ownership(ownership::Call::TransferCredentials {
                run,
                dest: to,
                amount,
            });
            submit(
                url,
                json,
                &tx,
                call,
                &format!("ownership.transferCredentials run {run}: {amount} to {to}"),
            )
            .await
        }
        CredentialsCommand::Redeem {
            tx,
            run,
            amount,
            request,
        } => {
            let request = request.unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                let mut b = b"weft-cli/request/v1".to_vec();
                b.extend_from_slice(&tx.from.pair.account_id().0);
                b.extend_from_slice(&nanos.to_le_bytes());
                blake3_256(&b)
            });
            let call = RuntimeCall::Ownership(ownership::Call::RedeemCredential {
                run,
                amount,
                request,
            });
            submit_then(
                url,
                json,
                &tx,
                call,
                &format!("ownership.redeemCredential run {run}: {amount}"),
                |_| vec![("request", serde_json::Value::String(request.to_hex()))],
            )
            .await?;
            Ok(())
        }
    }
}
