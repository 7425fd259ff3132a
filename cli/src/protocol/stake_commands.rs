//! `weft stake`: bonding, validator and trainer roles, unbonding and withdrawal.

use super::*;

/// `weft stake …`.
#[derive(Debug, Subcommand)]
pub enum StakeCommand {
    /// Bond (reserve) WEFT: opens the account's staking ledger.
    Bond(AmountTx),
    /// Add WEFT to an existing bond.
    BondExtra(AmountTx),
    /// Start unbonding WEFT (withdrawable after the bonding period; still slashable).
    Unbond(AmountTx),
    /// Withdraw every unbonded chunk whose bonding period is over.
    Withdraw(PlainTx),
    /// Move unbonding WEFT back into the active bond.
    Rebond(AmountTx),
    /// Drop the validator and trainer roles.
    Chill(PlainTx),
    /// Become a validator candidate with a BN254 BLS key and its proof of possession.
    Validate {
        #[command(flatten)]
        tx: TxArgs,
        /// BLS seed (0x hex or text); default: derived from the --from secret URI.
        #[arg(long, value_name = "SEED")]
        bls_seed: Option<String>,
    },
    /// Become a trainer: declare the libp2p peer id, addresses and stage capacity.
    Train {
        #[command(flatten)]
        tx: TxArgs,
        /// The trainer's libp2p peer id (12D3KooW… or 0x hex of its bytes).
        #[arg(long, value_name = "PEER_ID", value_parser = peer_id_arg)]
        peer_id: PeerIdArg,
        /// A multiaddr where the trainer listens (repeat for several, at most 8).
        #[arg(long = "addr", value_name = "MULTIADDR", value_parser = addr_arg)]
        addrs: Vec<AddrArg>,
        /// How many stage slots (over all runs) it can serve at once.
        #[arg(long, default_value_t = 1)]
        capacity: u32,
    },
    /// Show an account's ledger, roles and pending slashes.
    Show {
        /// An SS58 address, a 0x public key or a secret URI.
        #[arg(value_name = "ADDRESS-or-SURI", value_parser = parse_account)]
        account: AccountId,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Show the epoch's validator set and the candidates.
    Validators(AtArgs),
    /// Show the trainers that joined or serve a run (or one trainer with --account).
    Trainers {
        /// Only this trainer (also when it joined no run).
        #[arg(long, value_name = "ADDRESS-or-SURI", value_parser = parse_account)]
        account: Option<AccountId>,
        #[command(flatten)]
        at: AtArgs,
    },
}

/// `weft stake …`.
pub async fn stake(url: &str, json: bool, command: StakeCommand) -> Result<()> {
    use staking::Call;
    let (tx, call, what) = match command {
        StakeCommand::Bond(a) => (
            a.tx,
            Call::Bond { value: a.amount },
            format!("staking.bond {}", weft(a.amount)),
        ),
        StakeCommand::BondExtra(a) => (
            a.tx,
            Call::BondExtra { value: a.amount },
            format!("staking.bondExtra {}", weft(a.amount)),
        ),
        StakeCommand::Unbond(a) => (
            a.tx,
            Call::Unbond { value: a.amount },
            format!("staking.unbond {}", weft(a.amount)),
        ),
        StakeCommand::Rebond(a) => (
            a.tx,
            Call::Rebond { value: a.amount },
            format!("staking.rebond {}", weft(a.amount)),
        ),
        StakeCommand::Withdraw(a) => (
            a.tx,
            Call::WithdrawUnbonded,
            "staking.withdrawUnbonded".to_string(),
        ),
        StakeCommand::Chill(a) => (a.tx, Call::Chill, "staking.chill".to_string()),
        StakeCommand::Validate { tx, bls_seed } => {
            let sk = bls_secret(&tx.from.suri, bls_seed.as_deref())?;
            let key = BlsKeyOut::of(&sk, tx.from.pair.account_id())?;
            let what = format!("staking.validate blsKey={}", key.bls_key);
            let call = Call::Validate {
                bls_key: key.bls_key,
                proof_of_possession: key.proof_of_possession,
            };
            (tx, call, what)
        }
        StakeCommand::Train {
            tx,
            peer_id,
            addrs,
            capacity,
        } => {
            if addrs.len() > staking::MAX_ADDRS {
                bail!(
                    "at most {} addresses, got {}",
                    staking::MAX_ADDRS,
                    addrs.len()
                );
            }
            let what = format!(
                "staking.train peerId={} addrs={} capacity={capacity}",
                weft_rpc_api::protocol::peer_id_to_string(&peer_id.0),
                addrs.len()
            );
            let call = Call::Train {
                peer_id: peer_id.0,
                addrs: addrs.into_iter().map(|a| a.0).collect(),
                capacity,
            };
            (tx, call, what)
        }
        StakeCommand::Show { account, at } => {
            let client = connect(url).await?;
            let ledger = client.staking_ledger(account, at.at).await?;
            let Some(l) = ledger else {
                if json {
                    return print_json(&serde_json::Value::Null);
                }
                println!("{account} has no staking ledger (not bonded)");
                return Ok(());
            };
            return show(json, &l, |l| {
                println!("{}", field("Account", l.account));
                println!("{}", field("Active", weft_str(&l.active)));
                println!("{}", field("Total", weft_str(&l.total)));
                for c in &l.unlocking {
                    println!(
                        "{}",
                        field(
                            "Unlocking",
                            format!("{} at #{}", weft_str(&c.value), c.unlock_at)
                        )
                    );
                }
                let mut roles = Vec::new();
                if l.validator {
                    roles.push("validator");
                }
                if l.trainer {
                    roles.push("trainer");
                }
                println!(
                    "{}",
                    field(
                        "Roles",
                        if roles.is_empty() {
                            "none".into()
                        } else {
                            roles.join(", ")
                        }
                    )
                );
                if let Some(k) = &l.bls_key {
                    println!("{}", field("BLS key", k));
                }
                println!("{}", field("Pending slashes", l.pending_slashes));
            });
        }
        StakeCommand::Validators(at) => {
            let v = connect(url).await?.validators(at.at).await?;
            return show(json, &v, |v| {
                println!("{}", field("Epoch", v.epoch));
                println!("{}", field("Active stake", weft_str(&v.active_stake)));
                println!("Active set ({}):", v.active.len());
                for x in &v.active {
                    println!("  {}  {}  bls {}", x.account, weft_str(&x.stake), x.bls_key);
                }
                println!("Candidates ({}):", v.candidates.len());
                for c in &v.candidates {
                    let mark = if c.in_active_set { "active" } else { "waiting" };
                    println!("  {}  {}  {mark}", c.account, weft_str(&c.stake));
                }
            });
        }
        StakeCommand::Trainers { account, at } => {
            let client = connect(url).await?;
            let list = match account {
                Some(a) => match client.trainer(a, at.at).await? {
                    Some(t) => vec![t],
                    None => bail!("{a} is not a registered trainer"),
                },
                None => client.trainers(at.at).await?,
            };
            return show(json, &list, |list| {
                if list.is_empty() {
                    println!("no trainer has joined a run");
                }
                for t in list {
                    println!("{}", field("Trainer", t.account));
                    println!("{}", field("  Peer id", &t.peer_id));
                    println!("{}", field("  Addresses", t.addrs.join(" ")));
                    println!(
                        "{}",
                        field("  Capacity", format!("{} (serving {})", t.capacity, t.load))
                    );
                    println!("{}", field("  Stake", weft_str(&t.stake)));
                    println!("{}", field("  Runs", format!("{:?}", t.runs)));
                }
            });
        }
    };
    submit(url, json, &tx, RuntimeCall::Staking(call), &what).await
}
