//! The protocol end to end, through signed extrinsics in blocks: validators and trainers bond,
//! a designer registers a 4-stage run, trainers join and are assigned at the epoch boundary,
//! commitments flow and are audited, a failed audit slashes and removes its trainer, shares
//! and credentials accrue, a credential is transferred and redeemed, and a governance halt
//! stops the run until a resume restarts it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::executive::{execute_block, BlockContext};
use crate::genesis::GenesisBalance;
use crate::*;
use parity_scale_codec::Encode;
use std::collections::BTreeMap;
use weft_primitives::extrinsic::SigningContext;
use weft_primitives::storage::MemoryState;
use weft_primitives::{header::extrinsics_root, AccountId, Digest, Era, Hash, Header, Keypair};

const UNIT: u128 = weft_primitives::units::UNIT;

struct Chain {
    state: MemoryState,
    number: u64,
    hashes: Vec<Hash>,
    nonces: BTreeMap<AccountId, u64>,
}

fn key(name: &str) -> Keypair {
    Keypair::from_suri(&format!("//{name}")).unwrap()
}

fn id(name: &str) -> AccountId {
    key(name).account_id()
}

const VALIDATORS: [&str; 4] = ["V1", "V2", "V3", "V4"];
const TRAINERS: [&str; 5] = ["T1", "T2", "T3", "T4", "T5"];

impl Chain {
    fn new() -> Self {
        let mut names: Vec<&str> = VALIDATORS.iter().chain(TRAINERS.iter()).copied().collect();
        names.extend(["Designer", "Holder", "Alice"]);
        let mut cfg = GenesisConfig {
            existential_deposit: UNIT / 100,
            balances: names
                .iter()
                .map(|n| GenesisBalance {
                    account: id(n),
                    free: 10_000 * UNIT,
                })
                .collect(),
            validators: vec![GenesisValidator {
                account: id("Alice"),
                stake: UNIT,
            }],
            ..Default::default()
        };
        cfg.protocol.staking.slash_defer = 20;
        cfg.protocol.staking.bonding_period = 40;
        let mut state = MemoryState::default();
        state.apply(&build_genesis("flow", &cfg).unwrap());
        Chain {
            state,
            number: 0,
            hashes: vec![Hash([0xAA; 32])],
            nonces: BTreeMap::new(),
        }
    }

    fn xt(&mut self, who: &str, call: RuntimeCall) -> Extrinsic {
        let k = key(who);
        let n = self.nonces.entry(k.account_id()).or_insert(0);
        let nonce = *n;
        *n += 1;
        let ctx = SigningContext {
            genesis_hash: self.hashes[0],
            birth_hash: self.hashes[0],
        };
        Extrinsic::new_signed(call, &k, nonce, 0, Era::Immortal, ctx)
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
        // Building (author) and executing (importer) agree.
        let mut builder = BlockBuilder::new(&self.state, BlockContext::of(&block.header)).unwrap();
        for xt in &block.extrinsics {
            builder.apply(xt, xt.encoded_size()).unwrap();
        }
        let built = builder.finish();
        let out = execute_block(&self.state, &block).unwrap();
        assert_eq!(built.changes, out.changes);
        self.state.apply(&out.changes);
        self.number += 1;
        self.hashes.push(block.header.hash());
        out
    }

    fn until(&mut self, n: u64) -> Vec<BlockOutcome> {
        let mut outs = Vec::new();
        while self.number < n {
            outs.push(self.block(vec![]));
        }
        outs
    }

    fn call(&mut self, who: &str, call: RuntimeCall) -> BlockOutcome {
        let xt = self.xt(who, call);
        self.block(vec![xt])
    }
}

fn failures(out: &BlockOutcome) -> Vec<(u8, u8, String)> {
    out.events
        .iter()
        .filter_map(|e| match &e.event {
            RuntimeEvent::System(system::Event::ExtrinsicFailed { error }) => {
                Some((error.pallet, error.error, error.message.clone()))
            }
            RuntimeEvent::System(system::Event::HookFailed { error }) => Some((
                error.pallet,
                error.error,
                format!("hook: {}", error.message),
            )),
            _ => None,
        })
        .collect()
}

fn assert_ok(out: &BlockOutcome) {
    assert_eq!(failures(out), vec![], "unexpected failures");
}

fn stage_of(c: &Chain, who: &str) -> Option<u16> {
    (0..4).find(|st| stages::slot(&c.state, 0, *st, 0).unwrap() == Some(id(who)))
}

fn holder(c: &Chain, stage: u16) -> &'static str {
    let who = stages::slot(&c.state, 0, stage, 0)
        .unwrap()
        .expect("stage filled");
    TRAINERS
        .iter()
        .copied()
        .find(|t| id(t) == who)
        .expect("a trainer")
}

fn commit(c: &mut Chain, stage: u16, step: u64, cheating_stage: Option<u16>) -> Extrinsic {
    let honest = cheating_stage != Some(stage);
    // What the cheater sent is what its neighbour received: the pipeline boundary agrees.
    let sent_by_cheater = cheating_stage.is_some_and(|k| k + 1 == stage);
    let t = holder(c, stage);
    // A continuous chain of states (the chain checks it at commit); a cheater's outputs
    // differ, which only an audit sees.
    let roots = work::StepRoots {
        weights_before: Hash([step as u8; 32]),
        weights_after: Hash([step as u8 + 1; 32]),
        outputs: Hash([if honest { 0 } else { 0xEE }; 32]),
        inputs: Hash([if sent_by_cheater { 0xEE } else { 0 }; 32]),
        ..Default::default()
    };
    let loss = (stage == 3).then_some(3_000_000 - step * 100_000);
    c.xt(
        t,
        RuntimeCall::Work(work::Call::CommitStep {
            run: 0,
            stage,
            replica: 0,
            step,
            roots,
            loss,
            compute: weft_primitives::compute::ComputeClass::UNDECLARED,
            seals: Default::default(),
            round: None,
        }),
    )
}

/// The validator attestations for every audit opened in `outs`: `Fail` (mismatch) for the
/// commitments of `cheater`, `Pass` otherwise.
fn attestations(
    c: &mut Chain,
    outs: &[BlockOutcome],
    cheater: Option<AccountId>,
) -> Vec<Extrinsic> {
    let mut xts = Vec::new();
    for out in outs {
        for e in &out.events {
            let RuntimeEvent::Work(work::Event::AuditOpened {
                audit,
                trainer,
                auditors,
                ..
            }) = &e.event
            else {
                continue;
            };
            for a in auditors {
                let name = VALIDATORS.iter().copied().find(|v| id(v) == *a).unwrap();
                let (verdict, reason) = if Some(*trainer) == cheater {
                    (work::Verdict::Fail, Some(work::FailReason::Mismatch))
                } else {
                    (work::Verdict::Pass, None)
                };
                let sk = bls::dev_keypair(name).unwrap().0;
                let signature = sk
                    .sign(&work::attestation_message(*audit, verdict))
                    .unwrap()
                    .to_bytes();
                xts.push(c.xt(
                    name,
                    RuntimeCall::Work(work::Call::Attest {
                        audit: *audit,
                        verdict,
                        reason,
                        signature,
                    }),
                ));
            }
        }
    }
    xts
}

fn run_spec() -> runs::RunSpec {
    runs::RunSpec {
        model_config: runs::ModelSpec {
            n_layers: 64,
            ..runs::ModelSpec::tiny()
        },
        stages: 4,
        replicas: 1,
        dataset_hash: Hash([7; 32]),
        hyper_params: runs::HyperParams::with_defaults(4, 1_000_000_000, 1_000_000),
        max_steps: 0,
        bond: 100 * UNIT,
        params: runs::RunParams {
            audit_probability: support::Perbill::ONE,
            auditors_per_stage: 1,
            max_stages_per_auditor: 1,
            max_stages_per_account: 1,
            credentials_per_epoch: 1_000,
            ..runs::RunParams::default()
        },
    }
}

#[test]
fn the_protocol_end_to_end() {
    let mut c = Chain::new();

    // Block 1: validators and trainers bond and take their roles; the designer registers.
    let mut xts = Vec::new();
    for v in VALIDATORS {
        xts.push(c.xt(
            v,
            RuntimeCall::Staking(staking::Call::Bond {
                value: 1_000 * UNIT,
            }),
        ));
        let (_, bls_key, proof_of_possession) = bls::dev_keypair(v).unwrap();
        xts.push(c.xt(
            v,
            RuntimeCall::Staking(staking::Call::Validate {
                bls_key,
                proof_of_possession,
            }),
        ));
    }
    for (i, t) in TRAINERS.iter().enumerate() {
        // T1 has the most stake … T5 the least: T5 is left over at the first assignment.
        let value = (300 - 20 * i as u128) * UNIT;
        xts.push(c.xt(t, RuntimeCall::Staking(staking::Call::Bond { value })));
        let train = staking::Call::Train {
            peer_id: t.as_bytes().to_vec(),
            addrs: vec![b"/ip4/127.0.0.1/tcp/4001".to_vec()],
            capacity: 1,
        };
        xts.push(c.xt(t, RuntimeCall::Staking(train)));
    }
    xts.push(c.xt(
        "Designer",
        RuntimeCall::Runs(runs::Call::RegisterRun { spec: run_spec() }),
    ));
    assert_ok(&c.block(xts));
    assert_eq!(
        staking::total_active(&c.state).unwrap(),
        4_000 * UNIT + 1_300 * UNIT
    );
    assert_eq!(
        runs::run(&c.state, 0).unwrap().unwrap().status,
        runs::RunStatus::Pending
    );

    // Block 2: trainers join; a commitment before assignment is refused.
    let mut xts: Vec<Extrinsic> = TRAINERS
        .iter()
        .map(|t| c.xt(t, RuntimeCall::Stages(stages::Call::JoinRun { run: 0 })))
        .collect();
    let roots = work::StepRoots::default();
    xts.push(c.xt(
        "T1",
        RuntimeCall::Work(work::Call::CommitStep {
            run: 0,
            stage: 0,
            replica: 0,
            step: 0,
            roots,
            loss: None,
            compute: weft_primitives::compute::ComputeClass::UNDECLARED,
            seals: Default::default(),
            round: None,
        }),
    ));
    let out = c.block(xts);
    assert_eq!(
        failures(&out),
        vec![(
            5,
            0,
            "RunNotTraining: the run does not accept work now".into()
        )]
    );

    // Block 10: the epoch boundary elects the validators and assigns the four stages.
    c.until(10);
    assert_eq!(staking::active_set(&c.state).unwrap().len(), 4);
    let r = runs::run(&c.state, 0).unwrap().unwrap();
    assert_eq!((r.status, r.paused), (runs::RunStatus::Training, false));
    for (i, t) in TRAINERS.iter().take(4).enumerate() {
        assert_eq!(stage_of(&c, t), Some(i as u16), "{t}");
    }
    assert_eq!(stage_of(&c, "T5"), None);
    for st in 0..4 {
        assert_eq!(stages::auditors(&c.state, 0, st).unwrap().len(), 1);
    }

    // Block 11: step 0 on every stage. An unassigned account cannot commit.
    let mut xts: Vec<Extrinsic> = (0..4).map(|st| commit(&mut c, st, 0, None)).collect();
    xts.push(c.xt(
        "T5",
        RuntimeCall::Work(work::Call::CommitStep {
            run: 0,
            stage: 0,
            replica: 0,
            step: 0,
            roots,
            loss: None,
            compute: weft_primitives::compute::ComputeClass::UNDECLARED,
            seals: Default::default(),
            round: None,
        }),
    ));
    let out = c.block(xts);
    assert_eq!(
        failures(&out)
            .iter()
            .map(|f| (f.0, f.1))
            .collect::<Vec<_>>(),
        vec![(5, 2)]
    );
    // Block 12, 13: selected (p = 1) in block 13; block 14: the auditors pass them.
    let outs = c.until(13);
    let xts = attestations(&mut c, &outs, None);
    assert_eq!(xts.len(), 4);
    assert_ok(&c.block(xts));
    for t in &TRAINERS[..4] {
        assert!(
            ownership::units(&c.state, 0, &id(t)).unwrap() > 0,
            "{t} credited"
        );
    }

    // Block 15: step 1; the trainer of stage 2 cheats.
    let cheater = holder(&c, 2);
    let xts: Vec<Extrinsic> = (0..4).map(|st| commit(&mut c, st, 1, Some(2))).collect();
    let cheat_block = c.number + 1;
    assert_ok(&c.block(xts));
    let outs = c.until(cheat_block + 2);
    let xts = attestations(&mut c, &outs, Some(id(cheater)));
    let out = c.block(xts);
    assert_ok(&out);
    let offence = out.events.iter().find_map(|e| match &e.event {
        RuntimeEvent::Staking(staking::Event::OffenceReported {
            offender,
            amount,
            apply_at,
            ..
        }) => Some((*offender, *amount, *apply_at)),
        _ => None,
    });
    let (offender, amount, apply_at) = offence.expect("the cheater is reported");
    assert_eq!(offender, id(cheater));
    assert_eq!(
        amount,
        support::Perbill::from_percent(20).mul_floor(260 * UNIT)
    );
    // Removed and chilled at once; the run pauses; its work this step is void.
    assert_eq!(stages::slot(&c.state, 0, 2, 0).unwrap(), None);
    assert!(staking::trainer(&c.state, &id(cheater)).unwrap().is_none());
    assert!(runs::run(&c.state, 0).unwrap().unwrap().paused);
    // Its whole contribution is forfeited, not only the failed step.
    assert_eq!(ownership::units(&c.state, 0, &id(cheater)).unwrap(), 0);
    // It cannot escape by unbonding: withdrawing is refused while the slash is pending.
    let unbond = c.xt(
        cheater,
        RuntimeCall::Staking(staking::Call::Unbond { value: 260 * UNIT }),
    );
    assert_ok(&c.block(vec![unbond]));

    // Block 20: the epoch boundary mints credentials to the owners and T5 fills stage 2.
    c.until(20);
    assert_eq!(stage_of(&c, "T5"), Some(2));
    assert!(!runs::run(&c.state, 0).unwrap().unwrap().paused);
    assert_eq!(ownership::units(&c.state, 0, &id(cheater)).unwrap(), 0);
    let shares = ownership::shares_of(&c.state, 0).unwrap();
    assert_eq!(shares.len(), 3);
    assert!(shares.iter().all(|(a, _)| *a != id(cheater)));
    assert_eq!(
        shares.iter().map(|(_, p)| p.parts() as u64).sum::<u64>(),
        1_000_000_000
    );
    let held: u128 = TRAINERS
        .iter()
        .map(|t| ownership::credentials(&c.state, 0, &id(t)).unwrap())
        .sum();
    assert_eq!(held, 1_000);
    assert_eq!(ownership::credential_issuance(&c.state, 0).unwrap(), 1_000);

    // Block 21: a credential changes hands and is redeemed for an inference request.
    let honest = holder(&c, 0);
    let t = c.xt(
        honest,
        RuntimeCall::Ownership(ownership::Call::TransferCredentials {
            run: 0,
            dest: id("Holder"),
            amount: 5,
        }),
    );
    let r = c.xt(
        "Holder",
        RuntimeCall::Ownership(ownership::Call::RedeemCredential {
            run: 0,
            amount: 1,
            request: Hash([1; 32]),
        }),
    );
    assert_ok(&c.block(vec![t, r]));
    assert_eq!(
        ownership::credentials(&c.state, 0, &id("Holder")).unwrap(),
        4
    );
    assert_eq!(ownership::reissue_pool(&c.state, 0).unwrap(), 1);

    // The deferred slash applies; the unbonded funds were still there.
    let reserved_before = balances::account(&c.state, &id(cheater)).unwrap().reserved;
    let withdraw = c.xt(
        cheater,
        RuntimeCall::Staking(staking::Call::WithdrawUnbonded),
    );
    let out = c.block(vec![withdraw]);
    assert_eq!(
        failures(&out)
            .iter()
            .map(|f| (f.0, f.1))
            .collect::<Vec<_>>(),
        vec![(2, 5)]
    );
    c.until(apply_at);
    let reserved_after = balances::account(&c.state, &id(cheater)).unwrap().reserved;
    assert_eq!(reserved_before - reserved_after, amount);
    let issuance = balances::total_issuance(&c.state).unwrap();

    // Governance: V1 proposes a halt; V1 + V2 hold 2000 of 5040 active: above one third.
    let n = c.number;
    assert_ok(&c.call(
        "V1",
        RuntimeCall::Governance(governance::Call::Propose {
            action: governance::Action::HaltRun { run: 0 },
        }),
    ));
    let v1 = c.xt(
        "V1",
        RuntimeCall::Governance(governance::Call::Vote {
            proposal: 0,
            aye: true,
        }),
    );
    let v2 = c.xt(
        "V2",
        RuntimeCall::Governance(governance::Call::Vote {
            proposal: 0,
            aye: true,
        }),
    );
    assert_ok(&c.block(vec![v1, v2]));
    let enact_at = n + 2 + 5;
    c.until(enact_at);
    assert_eq!(
        runs::run(&c.state, 0).unwrap().unwrap().status,
        runs::RunStatus::Halted
    );
    // A halted run accepts no work and serves no inference.
    let step = work::next_step(&c.state, 0, 0, 0).unwrap();
    let x = commit(&mut c, 0, step, None);
    let r = c.xt(
        "Holder",
        RuntimeCall::Ownership(ownership::Call::RedeemCredential {
            run: 0,
            amount: 1,
            request: Hash([2; 32]),
        }),
    );
    let out = c.block(vec![x, r]);
    assert_eq!(
        failures(&out)
            .iter()
            .map(|f| (f.0, f.1))
            .collect::<Vec<_>>(),
        vec![(5, 0), (6, 2)]
    );

    // Resuming needs more than two thirds: V1..V4 = 4000 of 5040.
    assert_ok(&c.call(
        "V2",
        RuntimeCall::Governance(governance::Call::Propose {
            action: governance::Action::ResumeRun { run: 0 },
        }),
    ));
    let votes: Vec<Extrinsic> = ["V1", "V2", "V3"]
        .iter()
        .map(|v| {
            c.xt(
                v,
                RuntimeCall::Governance(governance::Call::Vote {
                    proposal: 1,
                    aye: true,
                }),
            )
        })
        .collect();
    assert_ok(&c.block(votes));
    assert_eq!(
        governance::proposal(&c.state, 1).unwrap().unwrap().status,
        governance::ProposalStatus::Voting,
        "3000 of 5040 is not enough"
    );
    assert_ok(&c.call(
        "V4",
        RuntimeCall::Governance(governance::Call::Vote {
            proposal: 1,
            aye: true,
        }),
    ));
    c.until(c.number + 5);
    assert_eq!(
        runs::run(&c.state, 0).unwrap().unwrap().status,
        runs::RunStatus::Training
    );
    let x = commit(&mut c, 0, step, None);
    assert_ok(&c.block(vec![x]));
    assert_eq!(work::next_step(&c.state, 0, 0, 0).unwrap(), step + 1);

    // Tokens: issuance equals the sum of all balances throughout (slashes burnt, rewards minted).
    let mut names: Vec<&str> = VALIDATORS.iter().chain(TRAINERS.iter()).copied().collect();
    names.extend(["Designer", "Holder", "Alice"]);
    let sum: u128 = names
        .iter()
        .map(|n| balances::account(&c.state, &id(n)).unwrap().total())
        .sum();
    assert_eq!(balances::total_issuance(&c.state).unwrap(), sum);
    assert!(balances::total_issuance(&c.state).unwrap() >= issuance - UNIT);
}

#[test]
fn hooks_are_bounded_to_their_queues_and_empty_blocks_are_cheap() {
    let mut c = Chain::new();
    // Empty blocks across several epochs: randomness chains, epochs advance, nothing fails.
    let outs = c.until(35);
    for o in &outs {
        assert_ok(o);
    }
    assert_eq!(staking::current_epoch(&c.state).unwrap(), 3);
    let r34 = support::randomness::at(&c.state, 34).unwrap();
    let r35 = support::randomness::at(&c.state, 35).unwrap();
    assert_eq!(r35, support::randomness::next(&r34, &c.hashes[34]));
    assert_ne!(r34, r35);
}
