//! The chain reader over an in-memory state built with the pallets' own storage items and
//! types: run configs, a trainer's state from unregistered to ready, the peer table, and
//! the auditor handshake that admits validators to reveals.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use parity_scale_codec::Encode;
use std::collections::HashSet;
use weft_cli::run_spec::{hyper_from_json, hyper_from_value, model_from_json, model_from_value};
use weft_ml::config::{ClipScope, ModelConfig, TrainConfig};
use weft_ml::schedule::Coupling;
use weft_primitives::storage::MemoryState;
use weft_primitives::{AccountId, Hash};
use weft_trainer::chain::{
    model_config_of, parse_run, run_seed_u64, runs, stages, staking, train_config_of, work,
    ChainView, TrainerState,
};
use weft_trainer::net::access::RevealAccess;

const RUN: u32 = 4;
const MODEL: &str = r#"{"d_model":32,"n_layers":4,"n_heads":2,"seq_len":16}"#;
const HYPER: &str = r#"{"micro_batch_size":4,"micro_batches":2,"lr":0.003,"total_steps":100}"#;

fn put<V: Encode>(s: &mut MemoryState, key: Vec<u8>, v: &V) {
    s.entries.insert(key, v.encode());
}

fn acct(i: u8) -> AccountId {
    AccountId([i; 32])
}

fn peer(i: u8) -> weft_p2p::PeerId {
    weft_p2p::keypair_from_seed([i; 32])
        .unwrap()
        .public()
        .to_peer_id()
}

fn run_info(model: &str, hyper: &str) -> runs::RunInfo {
    let model = model_from_json(model.as_bytes()).unwrap();
    runs::RunInfo {
        designer: acct(99),
        bond: 0,
        model_config: model,
        config_hash: runs::RunInfo::model_hash(&model),
        stages: 2,
        replicas: 1,
        dataset_hash: Hash::ZERO,
        hyper_params: hyper_from_json(hyper.as_bytes()).unwrap(),
        max_steps: 0,
        seed: Hash([0x11; 32]),
        registered_at: 1,
        status: runs::RunStatus::Pending,
        paused: true,
        epochs_trained: 0,
        params: runs::RunParams::default(),
    }
}

fn trainer_record(i: u8, text: bool) -> staking::TrainerInfo {
    let addr = format!("/ip4/127.0.0.1/tcp/{}", 40000 + i as u16);
    staking::TrainerInfo {
        // The chain holds the peer id as bytes; addresses as text (as `weft` writes them) or
        // binary multiaddrs — both are read.
        peer_id: peer(i).to_bytes(),
        addrs: vec![if text {
            addr.into_bytes()
        } else {
            addr.parse::<weft_p2p::Address>().unwrap().to_vec()
        }],
        capacity: 1,
    }
}

#[test]
fn run_configs_parse_and_mismatches_are_refused() {
    let info = run_info(MODEL, HYPER);
    let s = parse_run(RUN, &info).unwrap();
    assert_eq!(s.model.seed, run_seed_u64(&Hash([0x11; 32])));
    assert_eq!(s.model.seed, u64::from_le_bytes([0x11; 8]));
    assert_eq!(s.train.micro_batches, 2);
    let err = |i: runs::RunInfo| parse_run(RUN, &i).unwrap_err().to_string();
    let mut bad = info.clone();
    bad.config_hash = Hash::ZERO;
    assert!(err(bad).contains("config_hash"));
    // State the pallet would have refused is refused again by the trainer.
    let mut three = run_info(
        r#"{"d_model":32,"n_layers":1,"n_heads":2,"seq_len":16}"#,
        HYPER,
    );
    three.config_hash = runs::RunInfo::model_hash(&three.model_config);
    three.stages = 2;
    assert!(err(three).contains("2 stages need at least 2 layers"));
    let mut short = info;
    short.max_steps = 50;
    assert!(err(short).contains("stops at 50"));
}

#[tokio::test]
async fn trainer_state_from_unregistered_to_ready() {
    let mut s = MemoryState::default();
    put(&mut s, runs::RUNS.key(&RUN), &run_info(MODEL, HYPER));
    let me = acct(1);
    let state = |s: MemoryState| async move {
        ChainView::new(s)
            .trainer_state(RUN, &me, &peer(1))
            .await
            .unwrap()
    };
    assert_eq!(state(s.clone()).await, TrainerState::NotTrainer);
    put(&mut s, staking::TRAINERS.key(&me), &trainer_record(7, true));
    assert_eq!(
        state(s.clone()).await,
        TrainerState::WrongPeer {
            declared: peer(7).to_string()
        }
    );
    put(&mut s, staking::TRAINERS.key(&me), &trainer_record(1, true));
    assert_eq!(state(s.clone()).await, TrainerState::NotCandidate);
    put(&mut s, stages::CANDIDATES.key(&RUN), &vec![me]);
    assert_eq!(state(s.clone()).await, TrainerState::Unassigned);
    // Assigned stage 1; the run is still pending.
    put(&mut s, stages::HELD.key(&(RUN, me)), &vec![(1u16, 0u16)]);
    put(&mut s, stages::SLOT.key(&(RUN, 1, 0)), &me);
    assert!(matches!(
        state(s.clone()).await,
        TrainerState::Waiting { stage: 1, replica: 0, ref why } if why.contains("pending")
    ));
    // Training, but stage 0 has no trainer yet.
    let mut info = run_info(MODEL, HYPER);
    info.status = runs::RunStatus::Training;
    info.paused = false;
    put(&mut s, runs::RUNS.key(&RUN), &info);
    assert!(matches!(
        state(s.clone()).await,
        TrainerState::Waiting { ref why, .. } if why.contains("stage 0")
    ));
    let other = acct(2);
    put(&mut s, stages::SLOT.key(&(RUN, 0, 0)), &other);
    assert!(matches!(
        state(s.clone()).await,
        TrainerState::Waiting { ref why, .. } if why.contains("no trainer record")
    ));
    put(
        &mut s,
        staking::TRAINERS.key(&other),
        &trainer_record(2, false),
    );
    let TrainerState::Ready {
        stage,
        replica,
        table,
    } = state(s.clone()).await
    else {
        panic!("not ready");
    };
    assert_eq!((stage, replica), (1, 0));
    assert_eq!(table.run, Some(RUN));
    assert_eq!(table.stages.len(), 2);
    assert_eq!(table.stages[0].peer_id, peer(2));
    assert_eq!(table.stages[1].peer_id, peer(1));
    assert_eq!(
        table.stages[0].addrs,
        vec!["/ip4/127.0.0.1/tcp/40002"
            .parse::<weft_p2p::Address>()
            .unwrap()]
    );
    // Halted by governance: wait again.
    info.status = runs::RunStatus::Halted;
    put(&mut s, runs::RUNS.key(&RUN), &info);
    assert!(matches!(
        state(s.clone()).await,
        TrainerState::Waiting { ref why, .. } if why.contains("halted")
    ));
    info.status = runs::RunStatus::Finished;
    put(&mut s, runs::RUNS.key(&RUN), &info);
    assert_eq!(state(s.clone()).await, TrainerState::Finished);
    // Next step and commitments.
    let view = ChainView::new(s.clone());
    assert_eq!(view.next_step(RUN, 1, 0).await.unwrap(), 0);
    put(&mut s, work::NEXT_STEP.key(&(RUN, 1, 0)), &17u64);
    let view = ChainView::new(s.clone());
    assert_eq!(view.next_step(RUN, 1, 0).await.unwrap(), 17);
    assert!(ChainView::new(MemoryState::default())
        .run(RUN)
        .await
        .is_err());
}

#[tokio::test]
async fn auditors_prove_their_peer_with_their_bls_key() {
    let mut s = MemoryState::default();
    let (alice_sk, alice_pk, _) = weft_bls::dev_keypair("alice").unwrap();
    let (bob_sk, bob_pk, _) = weft_bls::dev_keypair("bob").unwrap();
    let (alice, bob) = (acct(10), acct(11));
    put(
        &mut s,
        staking::VALIDATORS.key(&alice),
        &staking::ValidatorInfo { bls_key: alice_pk },
    );
    put(
        &mut s,
        staking::VALIDATORS.key(&bob),
        &staking::ValidatorInfo { bls_key: bob_pk },
    );
    put(&mut s, stages::AUDITORS.key(&(RUN, 1)), &vec![alice]);
    let keys = ChainView::new(s.clone())
        .auditor_keys(RUN, 1)
        .await
        .unwrap();
    assert_eq!(keys, vec![(alice, alice_pk)]);

    let access = RevealAccess::fixed(HashSet::new());
    access.set_auditors(&keys.iter().map(|(a, k)| (a.0, *k)).collect::<Vec<_>>());
    let p = peer(50);
    let sign = |sk: &weft_bls::SecretKey, run: u32, stage: u16, peer: &weft_p2p::PeerId| {
        sk.sign(&weft_trainer::chain::auditor_hello_message(
            run, stage, peer,
        ))
        .unwrap()
        .to_bytes()
        .0
    };
    assert!(!access.allows(&p));
    // Bob is a validator but not an auditor of stage 1.
    assert!(access
        .hello((RUN, 1), &p, bob.0, sign(&bob_sk, RUN, 1, &p))
        .is_err());
    // Alice's signature for another peer, stage or run does not admit this peer.
    assert!(access
        .hello((RUN, 1), &p, alice.0, sign(&alice_sk, RUN, 1, &peer(51)))
        .is_err());
    assert!(access
        .hello((RUN, 1), &p, alice.0, sign(&alice_sk, RUN, 2, &p))
        .is_err());
    assert!(access
        .hello((RUN, 1), &p, alice.0, sign(&alice_sk, RUN + 1, 1, &p))
        .is_err());
    assert!(!access.allows(&p));
    access
        .hello((RUN, 1), &p, alice.0, sign(&alice_sk, RUN, 1, &p))
        .unwrap();
    assert!(access.allows(&p));
    // Alice is rotated out on chain: her peer loses access.
    access.set_auditors(&[(bob.0, bob_pk)]);
    assert!(!access.allows(&p));
}

/// The JSON of a trainer config, as a user writes it (the model without `seed`).
fn json_of(v: &impl serde::Serialize) -> serde_json::Value {
    let mut v = serde_json::to_value(v).unwrap();
    if let Some(m) = v.as_object_mut() {
        m.remove("seed");
    }
    v
}

#[test]
fn every_preset_registers_and_reads_back_exactly() {
    let train = TrainConfig::tiny();
    let hyper = hyper_from_value(&json_of(&train)).unwrap();
    // The trainer's defaults and the tiny settings survive the fixed point exactly.
    assert_eq!(train_config_of(&hyper), train);
    let defaults: TrainConfig =
        serde_json::from_str(r#"{"micro_batch_size": 8, "lr": 0.0003, "total_steps": 100}"#)
            .unwrap();
    assert_eq!(
        train_config_of(&hyper_from_value(&json_of(&defaults)).unwrap()),
        defaults
    );
    for name in ["tiny", "small", "medium", "gpt2"] {
        let preset = ModelConfig::preset(name).unwrap();
        let spec = model_from_value(&json_of(&preset)).unwrap();
        assert_eq!(model_config_of(&spec), preset, "{name}");
        // Registers on every stage count the trainer can run and the auditors can audit.
        for stages in 1..=preset.n_layers as u16 {
            let auditable = !Coupling::any_stage(&preset, &train, stages as usize);
            assert_eq!(
                runs::check_run(&spec, &hyper, stages, 0).is_ok(),
                auditable,
                "{name} × {stages}"
            );
        }
    }
    // The pallet's auditability check agrees with the trainer's coupling.
    let global = TrainConfig {
        clip_scope: ClipScope::Global,
        ..TrainConfig::tiny()
    };
    let global_hyper = hyper_from_value(&json_of(&global)).unwrap();
    let tiny = ModelConfig::tiny();
    let tiny_spec = model_from_value(&json_of(&tiny)).unwrap();
    for stages in 1..=4u16 {
        assert_eq!(
            runs::check_run(&tiny_spec, &global_hyper, stages, 0).is_ok(),
            !Coupling::any_stage(&tiny, &global, stages as usize)
        );
    }
}
