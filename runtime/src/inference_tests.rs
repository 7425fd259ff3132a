//! Paid inference through signed extrinsics in blocks: a holder opens a request, a trainer
//! of the run settles it (the charge reaches the owners at the epoch boundary) or it expires
//! and the hook refunds it; a finished run's pool is re-issued without minting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::executive::execute_block;
use crate::genesis::GenesisBalance;
use crate::*;
use parity_scale_codec::Encode;
use std::collections::BTreeMap;
use weft_pallet_support::index;
use weft_primitives::extrinsic::SigningContext;
use weft_primitives::storage::{MemoryState, Overlay};
use weft_primitives::{header::extrinsics_root, AccountId, Digest, Era, Hash, Header, Keypair};

const UNIT: u128 = weft_primitives::units::UNIT;

fn key(name: &str) -> Keypair {
    Keypair::from_suri(&format!("//{name}")).unwrap()
}

fn id(name: &str) -> AccountId {
    key(name).account_id()
}

struct Chain {
    state: MemoryState,
    number: u64,
    hashes: Vec<Hash>,
    nonces: BTreeMap<AccountId, u64>,
}

impl Chain {
    /// Run 0 (2 stages) in `status`, `Server` holding slot (0, 0), `Owner` its only owner,
    /// `Holder` with 10 000 credentials of it. Default inference parameters: 100 credentials
    /// per token; requests expire 20 blocks after opening; epochs of 10 blocks.
    fn new(status: runs::RunStatus) -> Self {
        let names = ["Alice", "Designer", "Holder", "Server", "Owner"];
        let mut cfg = GenesisConfig {
            existential_deposit: UNIT / 100,
            balances: names
                .iter()
                .map(|n| GenesisBalance {
                    account: id(n),
                    free: 1_000 * UNIT,
                })
                .collect(),
            validators: vec![GenesisValidator {
                account: id("Alice"),
                stake: UNIT,
            }],
            ..Default::default()
        };
        cfg.protocol.genesis_runs = vec![runs::GenesisRun {
            designer: id("Designer"),
            spec: runs::RunSpec {
                model_config: runs::ModelSpec {
                    n_layers: 64,
                    ..runs::ModelSpec::tiny()
                },
                stages: 2,
                replicas: 1,
                dataset_hash: Hash([7; 32]),
                hyper_params: runs::HyperParams::with_defaults(4, 1_000_000_000, 1_000_000),
                max_steps: 0,
                bond: 100 * UNIT,
                params: runs::RunParams {
                    credentials_per_epoch: 1_000,
                    ..runs::RunParams::default()
                },
            },
        }];
        cfg.protocol.inference.request_timeout_blocks = 20;
        let mut state = MemoryState::default();
        state.apply(&build_genesis("infer", &cfg).unwrap());
        // Fixture: what training would have produced (a slot, an owner, a holder).
        let mut o = Overlay::new(&state);
        let mut ev = Vec::new();
        let mut sink = crate::executive::PalletEvents {
            phase: Phase::Block,
            out: &mut ev,
        };
        runs::set_status(&mut o, &mut sink, 0, runs::RunStatus::Training).unwrap();
        if status != runs::RunStatus::Training {
            runs::set_status(&mut o, &mut sink, 0, status).unwrap();
        }
        stages::SLOT.insert(&mut o, &(0, 0, 0), &id("Server"));
        stages::HELD.insert(&mut o, &(0, id("Server")), &vec![(0, 0)]);
        ownership::UNITS.insert(&mut o, &(0, id("Owner")), &5);
        ownership::TOTAL_UNITS.insert(&mut o, &0, &5);
        ownership::OWNERS.insert(&mut o, &0, &vec![id("Owner")]);
        ownership::CREDENTIALS.insert(&mut o, &(0, id("Holder")), &10_000);
        ownership::CREDENTIAL_ISSUANCE.insert(&mut o, &0, &10_000);
        let changes = o.into_changes();
        state.apply(&changes);
        Chain {
            state,
            number: 0,
            hashes: vec![Hash([0xAA; 32])],
            nonces: BTreeMap::new(),
        }
    }

    fn xt(&mut self, who: &str, call: inference::Call) -> Extrinsic {
        let k = key(who);
        let n = self.nonces.entry(k.account_id()).or_insert(0);
        let nonce = *n;
        *n += 1;
        let ctx = SigningContext {
            genesis_hash: self.hashes[0],
            birth_hash: self.hashes[0],
        };
        Extrinsic::new_signed(
            RuntimeCall::Inference(call),
            &k,
            nonce,
            0,
            Era::Immortal,
            ctx,
        )
    }

    fn block(&mut self, xts: Vec<Extrinsic>) -> BlockOutcome {
        let enc: Vec<Vec<u8>> = xts.iter().map(|x| x.encode()).collect();
        let header = Header {
            parent_hash: *self.hashes.last().unwrap(),
            number: self.number + 1,
            state_root: Hash::ZERO,
            extrinsics_root: extrinsics_root(&enc),
            timestamp: 1_000 * (self.number + 1),
            author: id("Alice"),
            digest: Digest::default(),
        };
        let block = Block {
            header,
            extrinsics: xts,
        };
        let out = execute_block(&self.state, &block).unwrap();
        self.state.apply(&out.changes);
        self.number += 1;
        self.hashes.push(block.header.hash());
        out
    }

    fn call(&mut self, who: &str, call: inference::Call) -> BlockOutcome {
        let xt = self.xt(who, call);
        self.block(vec![xt])
    }

    /// Empty blocks up to `n`; the events of the last one.
    fn until(&mut self, n: u64) -> Vec<RuntimeEvent> {
        let mut last = Vec::new();
        while self.number < n {
            last = self.block(vec![]).events;
        }
        last.into_iter().map(|r| r.event).collect()
    }

    fn creds(&self, who: &str) -> u128 {
        ownership::credentials(&self.state, 0, &id(who)).unwrap()
    }

    fn pool(&self) -> u128 {
        ownership::reissue_pool(&self.state, 0).unwrap()
    }
}

/// The dispatch failures of a block: (pallet, error).
fn failures(out: &BlockOutcome) -> Vec<(u8, u8)> {
    out.events
        .iter()
        .filter_map(|e| match &e.event {
            RuntimeEvent::System(system::Event::ExtrinsicFailed { error })
            | RuntimeEvent::System(system::Event::HookFailed { error }) => {
                Some((error.pallet, error.error))
            }
            _ => None,
        })
        .collect()
}

fn inference_events(events: &[RuntimeEvent]) -> Vec<inference::Event> {
    events
        .iter()
        .filter_map(|e| match e {
            RuntimeEvent::Inference(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn open_64(c: &mut Chain) -> BlockOutcome {
    c.call(
        "Holder",
        inference::Call::Open {
            run: 0,
            request_hash: Hash([1; 32]),
            max_tokens: 64,
        },
    )
}

#[test]
fn open_then_settle_pays_the_owners_at_the_boundary() {
    let mut c = Chain::new(runs::RunStatus::Training);
    let out = open_64(&mut c);
    assert_eq!(failures(&out), vec![]);
    // 64 tokens × 100 credentials escrowed.
    assert_eq!(c.creds("Holder"), 10_000 - 6_400);
    assert_eq!(
        ownership::escrowed(&c.state, 0, &id("Holder")).unwrap(),
        6_400
    );
    let req = inference::request(&c.state, 0).unwrap().unwrap();
    assert_eq!((req.opened_at, req.expires_at), (1, 21));

    // Only a slot holder settles.
    let settle = |tokens| inference::Call::Settle {
        id: 0,
        tokens_delivered: tokens,
        output_hash: Hash([2; 32]),
    };
    let out = c.call("Owner", settle(40));
    assert_eq!(failures(&out), vec![(index::INFERENCE, 8)]);
    let out = c.call("Server", settle(40));
    assert_eq!(failures(&out), vec![]);
    assert_eq!(
        inference_events(&out.events.into_iter().map(|r| r.event).collect::<Vec<_>>()),
        vec![inference::Event::RequestSettled {
            id: 0,
            run: 0,
            charged: 4_000,
            refunded: 2_400,
            output_hash: Hash([2; 32]),
            by: id("Server"),
        }]
    );
    assert_eq!(c.creds("Holder"), 10_000 - 4_000);
    assert_eq!(ownership::escrowed(&c.state, 0, &id("Holder")).unwrap(), 0);
    assert_eq!(c.pool(), 4_000);
    // Settled once only.
    let out = c.call("Server", settle(1));
    assert_eq!(failures(&out), vec![(index::INFERENCE, 6)]);

    // Block 10 is an epoch boundary: the owner gets the epoch's 1 000 plus the 4 000 charged.
    c.until(10);
    assert_eq!(c.creds("Owner"), 1_000 + 4_000);
    assert_eq!(c.pool(), 0);
    assert_eq!(ownership::credential_issuance(&c.state, 0).unwrap(), 11_000);
}

#[test]
fn an_unsettled_request_is_refunded_by_the_hook_at_expiry() {
    let mut c = Chain::new(runs::RunStatus::Training);
    assert_eq!(failures(&open_64(&mut c)), vec![]);
    assert_eq!(c.creds("Holder"), 3_600);
    let last = c.until(20);
    assert!(inference_events(&last).is_empty());
    // Block 21 refunds before its extrinsics: a settle in it finds the request closed.
    let xt = c.xt(
        "Server",
        inference::Call::Settle {
            id: 0,
            tokens_delivered: 1,
            output_hash: Hash::ZERO,
        },
    );
    let out = c.block(vec![xt]);
    assert_eq!(failures(&out), vec![(index::INFERENCE, 6)]);
    let refunds: Vec<(Phase, inference::Event)> = out
        .events
        .iter()
        .filter_map(|r| match &r.event {
            RuntimeEvent::Inference(e) => Some((r.phase, e.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        refunds,
        vec![(
            Phase::Block,
            inference::Event::RequestRefunded {
                id: 0,
                holder: id("Holder"),
                amount: 6_400
            }
        )]
    );
    assert_eq!(c.creds("Holder"), 10_000);
    assert_eq!(ownership::escrowed(&c.state, 0, &id("Holder")).unwrap(), 0);
    assert_eq!(c.pool(), 0);
    assert_eq!(
        inference::request(&c.state, 0).unwrap().unwrap().status,
        inference::RequestStatus::Refunded
    );
}

#[test]
fn a_finished_run_is_served_and_its_pool_reissued_without_minting() {
    let mut c = Chain::new(runs::RunStatus::Finished);
    assert!(!runs::active_runs(&c.state).unwrap().contains(&0));
    assert_eq!(failures(&open_64(&mut c)), vec![]);
    let out = c.call(
        "Server",
        inference::Call::Settle {
            id: 0,
            tokens_delivered: 64,
            output_hash: Hash::ZERO,
        },
    );
    assert_eq!(failures(&out), vec![]);
    assert_eq!(c.pool(), 6_400);
    let events = c.until(10);
    assert!(events.contains(&RuntimeEvent::Ownership(
        ownership::Event::CredentialsMinted {
            run: 0,
            minted: 0,
            reissued: 6_400,
            owners: 1
        }
    )));
    assert_eq!(c.creds("Owner"), 6_400);
    assert_eq!(c.pool(), 0);
    assert_eq!(ownership::credential_issuance(&c.state, 0).unwrap(), 10_000);
    // The next boundary has nothing to re-issue.
    let events = c.until(20);
    assert!(!events
        .iter()
        .any(|e| matches!(e, RuntimeEvent::Ownership(_))));
}
