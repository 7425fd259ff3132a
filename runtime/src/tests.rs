//! Runtime tests over in-memory state: block execution, validation, layouts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::executive::{execute_block, BlockContext};
use crate::genesis::GenesisBalance;
use crate::*;
use parity_scale_codec::Encode;
use weft_primitives::extrinsic::SigningContext;
use weft_primitives::storage::MemoryState;
use weft_primitives::{header::extrinsics_root, AccountId, Digest, Era, Hash, Header, Keypair};

const UNIT: u128 = weft_primitives::units::UNIT;

struct Chain {
    state: MemoryState,
    number: u64,
    hashes: Vec<Hash>,
}

fn alice() -> Keypair {
    Keypair::from_suri("//Alice").unwrap()
}
fn bob() -> Keypair {
    Keypair::from_suri("//Bob").unwrap()
}

/// The test chain's genesis: //Alice (1,000 UNIT, the validator) and //Bob (10 UNIT).
fn genesis_config() -> GenesisConfig {
    GenesisConfig {
        existential_deposit: UNIT / 100,
        balances: vec![
            GenesisBalance {
                account: alice().account_id(),
                free: 1_000 * UNIT,
            },
            GenesisBalance {
                account: bob().account_id(),
                free: 10 * UNIT,
            },
        ],
        validators: vec![GenesisValidator {
            account: alice().account_id(),
            stake: UNIT,
        }],
        ..Default::default()
    }
}

impl Chain {
    fn new() -> Self {
        let cfg = genesis_config();
        let mut state = MemoryState::default();
        state.apply(&build_genesis("test", &cfg).unwrap());
        Chain {
            state,
            number: 0,
            hashes: vec![Hash([0xAA; 32])],
        }
    }

    fn ctx(&self, era: Era) -> SigningContext {
        SigningContext {
            genesis_hash: self.hashes[0],
            birth_hash: self.hashes[era.birth() as usize],
        }
    }

    fn header(&self, xts: &[Extrinsic]) -> Header {
        let enc: Vec<Vec<u8>> = xts.iter().map(|x| x.encode()).collect();
        Header {
            parent_hash: *self.hashes.last().unwrap(),
            number: self.number + 1,
            state_root: Hash::ZERO,
            extrinsics_root: extrinsics_root(&enc),
            timestamp: 1_000 * (self.number + 1),
            author: alice().account_id(),
            digest: Digest::default(),
        }
    }

    fn execute(&mut self, xts: Vec<Extrinsic>) -> Result<BlockOutcome, BlockError> {
        let block = Block {
            header: self.header(&xts),
            extrinsics: xts,
        };
        let out = execute_block(&self.state, &block)?;
        self.state.apply(&out.changes);
        self.number += 1;
        self.hashes.push(block.header.hash());
        Ok(out)
    }

    fn transfer(&self, from: &Keypair, to: AccountId, value: u128, nonce: u64) -> Extrinsic {
        let era = Era::Immortal;
        Extrinsic::new_signed(
            RuntimeCall::Balances(balances::Call::Transfer { dest: to, value }),
            from,
            nonce,
            0,
            era,
            self.ctx(era),
        )
    }

    fn free(&self, who: &Keypair) -> u128 {
        balances::account(&self.state, &who.account_id())
            .unwrap()
            .free
    }
}

#[test]
fn transfers_execute_and_pay_fees() {
    let mut c = Chain::new();
    let xt = c.transfer(&alice(), bob().account_id(), 5 * UNIT, 0);
    let fee = fees::fee_for_length(xt.encoded_size());
    let out = c.execute(vec![xt]).unwrap();
    assert_eq!(c.free(&bob()), 15 * UNIT);
    assert_eq!(c.free(&alice()), 995 * UNIT - fee);
    assert!(out
        .events
        .iter()
        .any(|e| e.event == RuntimeEvent::System(system::Event::ExtrinsicSuccess)));
    assert_eq!(
        balances::total_issuance(&c.state).unwrap(),
        1_010 * UNIT - fee
    );
    let stored = system::EVENTS.get(&c.state).unwrap().unwrap();
    assert_eq!(stored, out.events);
}

#[test]
fn replay_and_bad_signature_are_rejected_and_change_nothing() {
    let mut c = Chain::new();
    let xt = c.transfer(&alice(), bob().account_id(), UNIT, 0);
    c.execute(vec![xt.clone()]).unwrap();
    let before = c.state.clone();
    assert_eq!(
        c.execute(vec![xt]).unwrap_err(),
        BlockError::InvalidExtrinsic {
            index: 0,
            reason: InvalidTransaction::Stale
        }
    );
    let mut forged = c.transfer(&alice(), bob().account_id(), UNIT, 1);
    forged.call = RuntimeCall::Balances(balances::Call::Transfer {
        dest: bob().account_id(),
        value: 100 * UNIT,
    });
    assert_eq!(
        c.execute(vec![forged]).unwrap_err(),
        BlockError::InvalidExtrinsic {
            index: 0,
            reason: InvalidTransaction::BadSignature
        }
    );
    assert_eq!(c.state, before);
}

#[test]
fn failed_call_rolls_back_but_pays_fee() {
    let mut c = Chain::new();
    let xt = c.transfer(&bob(), alice().account_id(), 50 * UNIT, 0);
    let fee = fees::fee_for_length(xt.encoded_size());
    let out = c.execute(vec![xt]).unwrap();
    assert_eq!(c.free(&bob()), 10 * UNIT - fee);
    let failed = out.events.iter().find_map(|e| match &e.event {
        RuntimeEvent::System(system::Event::ExtrinsicFailed { error }) => Some(error.clone()),
        _ => None,
    });
    let error = failed.expect("an ExtrinsicFailed event");
    assert_eq!((error.pallet, error.error), (1, 0));
    assert!(error.message.contains("InsufficientBalance"));
    assert_eq!(
        balances::account(&c.state, &bob().account_id())
            .unwrap()
            .nonce,
        1
    );
}

#[test]
fn pool_validation_checks_nonce_fee_and_era() {
    let mut c = Chain::new();
    c.execute(vec![]).unwrap();
    let best = *c.hashes.last().unwrap();
    let future = c.transfer(&alice(), bob().account_id(), UNIT, 3);
    let v = validate_transaction(&c.state, c.number, best, &future, future.encoded_size()).unwrap();
    assert_eq!((v.nonce, v.account_nonce), (3, 0));
    let far = c.transfer(&alice(), bob().account_id(), UNIT, 1_000);
    assert!(matches!(
        validate_transaction(&c.state, c.number, best, &far, far.encoded_size()),
        Err(executive::ApplyError::Invalid(
            InvalidTransaction::TooFarInFuture
        ))
    ));
    let poor = Keypair::from_suri("//Nobody").unwrap();
    let xt = c.transfer(&poor, bob().account_id(), 1, 0);
    assert!(matches!(
        validate_transaction(&c.state, c.number, best, &xt, xt.encoded_size()),
        Err(executive::ApplyError::Invalid(
            InvalidTransaction::CannotPayFees
        ))
    ));
    // A future nonce from an account that cannot pay is refused too (issue 10: otherwise
    // never-funded keys fill the pool for free).
    let xt = c.transfer(&poor, bob().account_id(), 1, 5);
    assert!(matches!(
        validate_transaction(&c.state, c.number, best, &xt, xt.encoded_size()),
        Err(executive::ApplyError::Invalid(
            InvalidTransaction::CannotPayFees
        ))
    ));
    // The fee and the sender's budget come with a valid one, for the pool's sum.
    assert_eq!(
        v.fee,
        fees::fee_for_length(future.encoded_size()) + future.tip
    );
    assert!(v.fee_budget > v.fee);
    // Mortal: born at block 1, period 2 → valid in blocks 2 and 3 only.
    let era = Era::Mortal {
        birth: 1,
        period: 2,
    };
    let call = RuntimeCall::System(system::Call::Remark {
        remark: b"hi".to_vec(),
    });
    let mortal = Extrinsic::new_signed(call, &alice(), 0, 0, era, c.ctx(era));
    assert!(validate_transaction(&c.state, c.number, best, &mortal, mortal.encoded_size()).is_ok());
    c.execute(vec![]).unwrap();
    c.execute(vec![]).unwrap();
    let best = *c.hashes.last().unwrap();
    assert!(matches!(
        validate_transaction(&c.state, c.number, best, &mortal, mortal.encoded_size()),
        Err(executive::ApplyError::Invalid(InvalidTransaction::Expired))
    ));
}

#[test]
fn block_must_follow_and_time_must_not_go_back() {
    let mut c = Chain::new();
    c.execute(vec![]).unwrap();
    let mut h = c.header(&[]);
    h.number = 5;
    assert!(matches!(
        BlockBuilder::new(&c.state, BlockContext::of(&h)),
        Err(BlockError::BadNumber { .. })
    ));
    let mut h = c.header(&[]);
    h.timestamp = 1;
    assert!(matches!(
        BlockBuilder::new(&c.state, BlockContext::of(&h)),
        Err(BlockError::TimestampBackwards { .. })
    ));
}

/// The SCALE layout of calls and extrinsics is part of the protocol: this test fails when it
/// changes, so a change is deliberate (and bumps the format version).
#[test]
fn layouts_are_stable() {
    let dest = AccountId([2; 32]);
    let call = RuntimeCall::Balances(balances::Call::TransferKeepAlive { dest, value: 7 });
    let mut expected = vec![1u8, 1];
    expected.extend_from_slice(&[2; 32]);
    expected.push(7 << 2);
    assert_eq!(call.encode(), expected);
    let remark = RuntimeCall::System(system::Call::Remark { remark: vec![9] });
    assert_eq!(remark.encode(), vec![0, 0, 4, 9]);
    let era = Era::Mortal {
        birth: 1,
        period: 2,
    };
    assert_eq!(
        era.encode(),
        vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]
    );
    let ev = RuntimeEvent::Balances(balances::Event::DustLost {
        account: dest,
        amount: 1,
    });
    assert_eq!(&ev.encode()[..2], &[1, 2]);

    // The protocol pallets: pallet index, call index, fields.
    let bond = RuntimeCall::Staking(staking::Call::Bond { value: 7 });
    assert_eq!(bond.encode(), vec![2, 0, 7 << 2]);
    assert_eq!(
        RuntimeCall::Staking(staking::Call::WithdrawUnbonded).encode(),
        vec![2, 3]
    );
    assert_eq!(
        RuntimeCall::Staking(staking::Call::Chill).encode(),
        vec![2, 5]
    );
    let validate = RuntimeCall::Staking(staking::Call::Validate {
        bls_key: bls::PublicKeyBytes([1; 64]),
        proof_of_possession: bls::SignatureBytes([2; 32]),
    });
    let enc = validate.encode();
    assert_eq!((enc.len(), &enc[..3], enc[66]), (98, &[2u8, 6, 1][..], 2));
    let train = RuntimeCall::Staking(staking::Call::Train {
        peer_id: vec![5],
        addrs: vec![vec![6]],
        capacity: 3,
    });
    assert_eq!(train.encode(), vec![2, 7, 4, 5, 4, 4, 6, 3, 0, 0, 0]);
    let join = RuntimeCall::Stages(stages::Call::JoinRun { run: 9 });
    assert_eq!(join.encode(), vec![4, 0, 9, 0, 0, 0]);
    assert_eq!(
        RuntimeCall::Stages(stages::Call::LeaveRun { run: 9 }).encode(),
        vec![4, 1, 9, 0, 0, 0]
    );
    let commit = RuntimeCall::Work(work::Call::CommitStep {
        run: 1,
        stage: 2,
        replica: 3,
        step: 4,
        roots: work::StepRoots::default(),
        loss: Some(5),
        compute: weft_primitives::compute::ComputeClass::UNDECLARED,
        seals: work::StepSeals {
            inputs: None,
            output_grads: Some(work::SealSignature([7; 64])),
        },
        round: Some(work::Round {
            included: work::Included(0b101),
            received: vec![work::ReceivedUpdate {
                replica: 2,
                root: Hash([8; 32]),
                signature: work::SealSignature([9; 64]),
            }],
        }),
    });
    let enc = commit.encode();
    assert_eq!(
        &enc[..18],
        &[5, 0, 1, 0, 0, 0, 2, 0, 3, 0, 4, 0, 0, 0, 0, 0, 0, 0]
    );
    // Nine 32-byte roots (weights, activations, gradients, optimizer state, the replica's
    // update), the loss, the 10-byte compute class, the two optional 64-byte seals, then the
    // optional round: the bitmap of included replicas (u64 little-endian) and the received
    // updates (compact length, then replica u16 ‖ root ‖ seal, 98 bytes each).
    assert_eq!(enc.len(), 18 + 9 * 32 + 9 + 10 + 1 + 65 + 1 + 8 + 1 + 98);
    assert_eq!(&enc[18 + 288..18 + 288 + 9], &[1, 5, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&enc[18 + 288 + 9..18 + 288 + 19], &[0; 10]);
    assert_eq!(enc[18 + 288 + 19..18 + 288 + 21], [0, 1]);
    assert_eq!(&enc[18 + 288 + 21..18 + 288 + 85], &[7; 64]);
    let round = &enc[18 + 288 + 85..];
    assert_eq!(&round[..10], &[1, 5, 0, 0, 0, 0, 0, 0, 0, 4]);
    assert_eq!(&round[10..12], &[2, 0]);
    assert_eq!(&round[12..44], &[8; 32]);
    assert_eq!(&round[44..], &[9; 64]);
    let attest = RuntimeCall::Work(work::Call::Attest {
        audit: 1,
        verdict: work::Verdict::Fail,
        reason: Some(work::FailReason::NoReveal),
        signature: bls::SignatureBytes([0; 32]),
    });
    assert_eq!(
        &attest.encode()[..13],
        &[5, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    );
    assert_eq!(
        work::attestation_message(1, work::Verdict::Pass)[..13],
        *b"weft/audit/v1"
    );
    let redeem = RuntimeCall::Ownership(ownership::Call::RedeemCredential {
        run: 1,
        amount: 2,
        request: Hash([3; 32]),
    });
    assert_eq!(&redeem.encode()[..7], &[6, 1, 1, 0, 0, 0, 2 << 2]);
    let transfer = RuntimeCall::Ownership(ownership::Call::TransferCredentials {
        run: 1,
        dest,
        amount: 1,
    });
    assert_eq!(&transfer.encode()[..6], &[6, 0, 1, 0, 0, 0]);
    let units = RuntimeCall::Ownership(ownership::Call::TransferUnits {
        run: 1,
        dest,
        amount: 1,
    });
    assert_eq!(&units.encode()[..2], &[6, 2]);
    let halt = RuntimeCall::Governance(governance::Call::Propose {
        action: governance::Action::HaltRun { run: 1 },
    });
    assert_eq!(halt.encode(), vec![7, 0, 0, 1, 0, 0, 0]);
    let cancel = RuntimeCall::Governance(governance::Call::Propose {
        action: governance::Action::CancelSlash { slash: 2 },
    });
    assert_eq!(cancel.encode(), vec![7, 0, 3, 2, 0, 0, 0, 0, 0, 0, 0]);
    let vote = RuntimeCall::Governance(governance::Call::Vote {
        proposal: 1,
        aye: true,
    });
    assert_eq!(vote.encode(), vec![7, 1, 1, 0, 0, 0, 1]);
    assert_eq!(
        RuntimeCall::Governance(governance::Call::EmergencyHalt { run: 1 }).encode(),
        vec![7, 2, 1, 0, 0, 0]
    );
    let spec = runs::RunSpec {
        model_config: runs::ModelSpec {
            n_layers: 64,
            ..runs::ModelSpec::tiny()
        },
        stages: 4,
        replicas: 1,
        dataset_hash: Hash::ZERO,
        hyper_params: runs::HyperParams::with_defaults(4, 1_000_000_000, 1_000_000),
        max_steps: 0,
        bond: 0,
        params: runs::RunParams::default(),
    };
    assert_eq!(
        &RuntimeCall::Runs(runs::Call::RegisterRun { spec }).encode()[..14],
        // The typed model spec first: vocab_size, d_model, n_layers as u32 LE.
        &[3, 0, 0, 1, 0, 0, 32, 0, 0, 0, 64, 0, 0, 0]
    );
    assert_eq!(runs::ClipScope::Global.encode(), vec![1]);
    assert_eq!(runs::Error::ModelSizeNotPositive.encode(), vec![8]);
    assert_eq!(runs::Error::GlobalClipAcrossStages.encode(), vec![23]);
    // Event indices.
    let ev = RuntimeEvent::Work(work::Event::AuditInconclusive { audit: 1 });
    assert_eq!(&ev.encode()[..2], &[5, 4]);
    let ev = RuntimeEvent::Governance(governance::Event::EmergencyHalted { run: 1 });
    assert_eq!(&ev.encode()[..2], &[7, 7]);
    let ev = RuntimeEvent::Staking(staking::Event::SlashCancelled { slash: 1 });
    assert_eq!(&ev.encode()[..2], &[2, 9]);
    // Inference: pallet 8.
    let open = RuntimeCall::Inference(inference::Call::Open {
        run: 1,
        request_hash: Hash([9; 32]),
        max_tokens: 64,
    });
    let mut want = vec![8, 0, 1, 0, 0, 0];
    want.extend([9u8; 32]);
    want.extend([64, 0, 0, 0]);
    assert_eq!(open.encode(), want);
    let settle = RuntimeCall::Inference(inference::Call::Settle {
        id: 2,
        tokens_delivered: 5,
        output_hash: Hash::ZERO,
    });
    assert_eq!(
        &settle.encode()[..14],
        &[8, 1, 2, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0]
    );
    let ev = RuntimeEvent::Inference(inference::Event::RequestRefunded {
        id: 1,
        holder: AccountId([0; 32]),
        amount: 3,
    });
    assert_eq!(&ev.encode()[..2], &[8, 2]);
    assert_eq!(inference::Error::NotServer.encode(), vec![8]);
}

#[test]
fn genesis_json_without_protocol_still_parses_and_round_trips() {
    let json = r#"{"existentialDeposit":"10","balances":[],"validators":[]}"#;
    let cfg: GenesisConfig = serde_json::from_str(json).unwrap();
    assert!(cfg.protocol.is_default());
    assert_eq!(serde_json::to_string(&cfg).unwrap(), json);
    let mut with = cfg.clone();
    with.protocol.staking.epoch_length = 5;
    let text = serde_json::to_string(&with).unwrap();
    assert!(text.contains(r#""protocol":{"staking":{"epochLength":5"#));
    assert_eq!(serde_json::from_str::<GenesisConfig>(&text).unwrap(), with);
}

/// On Tendermint chains a block's randomness is the hash chain of its proposer's unique BLS
/// signatures: a signature of the right key over the right (genesis, height, previous
/// randomness) is required, and it alone decides `R(n)`.
#[test]
fn bft_blocks_take_their_randomness_from_the_proposer_beacon() {
    use weft_finality::beacon::{self, PreDigest};
    let (sk, pk, pop) = bls::dev_keypair("alice").unwrap();
    let mut cfg = genesis_config();
    cfg.balances[0].free = 1_000_000 * UNIT;
    cfg.protocol = ProtocolGenesis {
        stakers: vec![staking::GenesisStaker {
            account: alice().account_id(),
            bond: 10_000 * UNIT,
            validator: Some((pk, pop)),
            trainer: None,
        }],
        ..Default::default()
    };
    let mut state = MemoryState::default();
    state.apply(&build_genesis("test", &cfg).unwrap());
    // Block 1's parent is genesis, so its hash is the genesis hash the beacon binds.
    let genesis = Hash([0xAA; 32]);
    let previous = support::randomness::at(&state, 0).unwrap();
    let header = |author: AccountId, signature| Header {
        parent_hash: genesis,
        number: 1,
        state_root: Hash::ZERO,
        extrinsics_root: extrinsics_root::<Vec<u8>>(&[]),
        timestamp: 1_000,
        author,
        digest: Digest {
            logs: vec![PreDigest {
                round: 0,
                beacon: signature,
            }
            .to_item()],
        },
    };
    let alice_id = alice().account_id();
    let wrong_height = beacon::sign(&sk, &genesis, 2, &previous).unwrap();
    assert!(matches!(
        BlockBuilder::new(&state, BlockContext::of(&header(alice_id, wrong_height))),
        Err(BlockError::BadBeacon(a)) if a == alice_id
    ));
    let good = beacon::sign(&sk, &genesis, 1, &previous).unwrap();
    // The same signature under an author who is not a validator: refused.
    assert!(matches!(
        BlockBuilder::new(&state, BlockContext::of(&header(bob().account_id(), good))),
        Err(BlockError::BadBeacon(_))
    ));
    let builder = BlockBuilder::new(&state, BlockContext::of(&header(alice_id, good))).unwrap();
    let outcome = builder.finish();
    state.apply(&outcome.changes);
    let r1 = support::randomness::at(&state, 1).unwrap();
    assert_eq!(r1, beacon::next(&previous, &good));
    assert_ne!(
        r1,
        support::randomness::next(&previous, &genesis),
        "not the parent-hash rule"
    );
}
