//! Scenarios on the deterministic simulator (`common/mod.rs`): liveness and agreement with
//! and without faults, partitions, crashes with WAL replay, stake-weighted proposers,
//! equivocation evidence and happy-path latency.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{block_hash, Net, Sim};

const EQUAL: [u128; 4] = [1_000, 1_000, 1_000, 1_000];

/// Scenario 1: four equal validators decide 20 heights, all the same blocks, every
/// certificate valid (checked by the harness at each `Decided`), each decided block built by
/// the round's proposer, nobody synced, nobody double-signed.
#[test]
fn four_validators_decide_twenty_heights() {
    let mut sim = Sim::new(&EQUAL, 1, Net::default());
    sim.start();
    assert!(
        sim.run_to_height(20, 600_000),
        "stalled at {}",
        sim.common_height()
    );
    sim.assert_agreement();
    sim.assert_no_double_votes(&[]);
    sim.assert_no_errors();
    for n in &sim.nodes {
        for (h, d) in n.decided.range(1..=20) {
            assert!(!d.synced, "height {h} was synced on a fault-free network");
            let proposer = sim.set.proposer(*h, d.round).account;
            assert_eq!(d.block, block_hash(*h, d.round, &proposer));
        }
    }
}

/// Scenario 2: Drops (20 %) and random delays (so reordering): still live, still in agreement.
#[test]
fn drops_and_reordering_keep_liveness_and_agreement() {
    let mut later_rounds = 0;
    for seed in [7, 8, 9] {
        let net = Net {
            min_delay: 5,
            max_delay: 200,
            drop: 0.2,
            build_delay: 20,
        };
        let mut sim = Sim::new(&EQUAL, seed, net);
        sim.start();
        assert!(
            sim.run_to_height(6, 1_200_000),
            "seed {seed}: stalled at {}",
            sim.common_height()
        );
        sim.assert_agreement();
        sim.assert_no_double_votes(&[]);
        sim.assert_no_errors();
        later_rounds += sim.rounds.iter().filter(|r| r.2 > 0).count();
    }
    assert!(
        later_rounds > 0,
        "the faults never cost a round: a weak test"
    );
}

/// Scenario 3: A 2|2 partition: no quorum on either side, so nothing is decided above what was
/// decided before it; after healing, decisions resume; nothing conflicting ever.
#[test]
fn partition_halts_then_heals() {
    let mut sim = Sim::new(&EQUAL, 3, Net::default());
    sim.start();
    assert!(sim.run_to_height(3, 300_000));
    let before = sim
        .nodes
        .iter()
        .filter_map(|n| n.decided.keys().next_back().copied())
        .max()
        .unwrap();
    sim.partition = Some(vec![0, 0, 1, 1]);
    let start = sim.now;
    sim.run_until(start + 60_000, |_| false);
    for (i, n) in sim.nodes.iter().enumerate() {
        for (h, d) in &n.decided {
            assert!(
                *h <= before && d.at <= start + 1_000,
                "node {i} decided height {h} at {} during the partition",
                d.at
            );
        }
    }
    // Without a quorum for anything no prevote or precommit timeout even starts: the nodes
    // wait in their round, re-sending their votes.
    let rebroadcasts = sim
        .fired
        .iter()
        .filter(|(_, id)| id.kind == weft_consensus::TimeoutKind::Rebroadcast)
        .count();
    assert!(
        rebroadcasts >= 8,
        "{rebroadcasts} rebroadcasts during the partition"
    );
    sim.partition = None;
    assert!(
        sim.run_to_height(before + 3, sim.now + 600_000),
        "no progress after healing: {}",
        sim.common_height()
    );
    sim.assert_agreement();
    sim.assert_no_double_votes(&[]);
}

/// Scenario 4: One node crashes (in the middle of a batch of outputs), the others keep deciding; it
/// restarts from its WAL (start_height + replay), catches up, and no validator ever signed
/// two different votes of one kind at one (height, round).
#[test]
fn crash_and_restart_from_the_wal_never_double_signs() {
    let mut replayed = 0;
    for (seed, cut) in [(11u64, 0usize), (12, 1), (13, 2), (14, 3)] {
        let mut sim = Sim::new(&EQUAL, seed, Net::default());
        sim.start();
        assert!(sim.run_to_height(2, 300_000));
        // Crash node 1 at its next batch, keeping only the first `cut` outputs.
        sim.nodes[1].crash_after = Some(cut);
        let crash_at = sim.now;
        sim.run_until(crash_at + 20_000, |s| !s.nodes[1].up);
        assert!(!sim.nodes[1].up, "seed {seed}: node 1 never crashed");
        let down_at = sim.now;
        let target = sim.common_height() + 3;
        assert!(
            sim.run_to_height(target, down_at + 300_000),
            "seed {seed}: the other three stalled"
        );
        sim.restart(1);
        let restarted_at = sim.now;
        replayed += sim.restarts[0].2;
        let target = sim.max_height() + 3;
        assert!(
            sim.run_to_height(target, sim.now + 600_000),
            "seed {seed}: no progress after the restart"
        );
        let own = sim.nodes[1]
            .decided
            .values()
            .filter(|d| d.at > restarted_at && !d.synced)
            .count();
        assert!(own > 0, "seed {seed}: the restarted node only synced");
        sim.assert_agreement();
        sim.assert_no_double_votes(&[]);
        sim.assert_no_errors();
    }
    assert!(replayed > 0, "no restart replayed anything: a weak test");
}

/// Scenario 4b: a crash right after the node voted (its vote logged and sent), restarted at
/// once: the replay re-derives the same votes and reuses the recorded signatures.
#[test]
fn immediate_restart_after_voting_reuses_recorded_votes() {
    let mut sim = Sim::new(&EQUAL, 21, Net::default());
    sim.start();
    assert!(sim.run_to_height(1, 300_000));
    let wal_len = |s: &Sim| {
        let h = s.nodes[2].engine.height();
        s.nodes[2].wal.get(&h).map_or(0, Vec::len)
    };
    // Run until node 2 logged a few entries of its current height, then crash and restart.
    sim.run_until(sim.now + 10_000, |s| wal_len(s) >= 3);
    let own = |s: &Sim| {
        let me = s.keys[2].0;
        let mut v: Vec<_> = s
            .votes
            .iter()
            .filter(|(_, v)| v.vote.validator == me)
            .map(|(_, v)| v.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let before = own(&sim);
    assert!(!before.is_empty(), "node 2 had not voted yet");
    sim.crash(2);
    sim.restart(2);
    assert!(sim.restarts[0].2 >= 3);
    // Right after the replay its votes were sent again with the recorded signatures.
    assert_eq!(own(&sim), before, "the replay signed something new");
    let target = sim.common_height() + 3;
    assert!(sim.run_to_height(target, sim.now + 300_000));
    sim.assert_agreement();
    sim.assert_no_double_votes(&[]);
    sim.assert_no_errors();
}

/// Scenario 5: Unequal stakes: how often a validator proposes follows its stake.
#[test]
fn proposer_frequency_follows_stake() {
    let stakes = [1_000, 2_000, 3_000, 14_000];
    let mut sim = Sim::new(&stakes, 5, Net::default());
    sim.start();
    assert!(
        sim.run_to_height(40, 2_000_000),
        "stalled at {}",
        sim.common_height()
    );
    sim.assert_agreement();
    let mut count = [0usize; 4];
    let decisions = &sim.nodes[0].decided;
    for (h, d) in decisions.range(1..=40) {
        let proposer = sim.set.proposer(*h, d.round).account;
        let i = sim.keys.iter().position(|(a, _)| *a == proposer).unwrap();
        count[i] += 1;
        assert_eq!(d.block, block_hash(*h, d.round, &proposer));
    }
    // The heavy validator holds 70 % of the stake, the light one 5 %.
    assert!(count[3] >= 20, "heavy proposed {count:?}");
    assert!(count[3] > count[0] + count[1] + count[2], "{count:?}");
    assert!(count[0] <= 8, "light proposed {count:?}");
}

/// Scenario 6: an equivocating validator (double-signs every vote): honest nodes report it as
/// soon as they see it, the evidence verifies against its key, and the decisions carry it.
#[test]
fn equivocation_is_reported_and_verifies() {
    let mut sim = Sim::new(&EQUAL, 6, Net::default());
    sim.nodes[3].equivocator = true;
    sim.start();
    assert!(sim.run_to_height(4, 600_000));
    sim.assert_agreement();
    let offender = sim.keys[3].0;
    sim.assert_no_double_votes(&[offender]);
    let key = sim.set.get(&offender).unwrap().bls_key;
    for i in 0..3 {
        let n = &sim.nodes[i];
        assert!(!n.evidence.is_empty(), "node {i} reported nothing");
        for e in n.evidence.iter().chain(&n.decided_evidence) {
            assert_eq!(e.offender(), offender);
            assert_eq!(e.verify(&sim.genesis, &key), Ok(()));
        }
        let keys: Vec<_> = n.evidence.iter().map(|e| e.key()).collect();
        let unique: std::collections::BTreeSet<_> = keys.iter().collect();
        assert_eq!(keys.len(), unique.len(), "node {i} reported duplicates");
        assert!(
            !n.decided_evidence.is_empty(),
            "node {i}: no evidence at Decided"
        );
    }
}

/// Scenario 6b: The same with the engine's own test-only equivocation.
#[cfg(feature = "equivocate")]
#[test]
fn engine_equivocation_feature_is_caught() {
    let mut sim = Sim::new(&EQUAL, 16, Net::default());
    sim.replace_engine(0, weft_consensus::Engine::new_equivocating);
    sim.start();
    assert!(sim.run_to_height(3, 600_000));
    sim.assert_agreement();
    let offender = sim.keys[0].0;
    sim.assert_no_double_votes(&[offender]);
    let key = sim.set.get(&offender).unwrap().bls_key;
    for n in &sim.nodes[1..] {
        assert!(!n.evidence.is_empty());
        for e in &n.evidence {
            assert_eq!(e.offender(), offender);
            assert_eq!(e.verify(&sim.genesis, &key), Ok(()));
        }
    }
}

/// Scenario 6c: A proposer whose blocks every node judges invalid never gets one decided: its
/// rounds fail and the next round's proposer's block is decided instead.
#[test]
fn invalid_blocks_are_never_decided() {
    let mut sim = Sim::new(&EQUAL, 17, Net::default());
    let bad = sim.keys[2].0;
    sim.invalid_proposers.insert(bad);
    sim.start();
    assert!(
        sim.run_to_height(8, 1_200_000),
        "stalled at {}",
        sim.common_height()
    );
    sim.assert_agreement();
    for n in &sim.nodes {
        for d in n.decided.values() {
            let (_, _, proposer) = sim.blocks[&d.block];
            assert_ne!(proposer, bad, "an invalid block was decided");
        }
    }
}

/// Scenario 8: Without faults a height takes about one block build plus three message delays
/// (proposal, prevotes, precommits): far below the 3 s propose timeout, in round 0.
#[test]
fn happy_path_latency_is_a_few_message_delays() {
    let mut sim = Sim::new(&EQUAL, 8, Net::default());
    sim.start();
    assert!(sim.run_to_height(10, 300_000));
    let n = &sim.nodes[0];
    let mut previous = 0;
    for (h, d) in n.decided.range(1..=10) {
        let latency = d.at - previous;
        // build 20 ms + body/proposal ≤ 50 ms (+ a fetch ≤ 100 ms) + prevotes ≤ 50 ms +
        // precommits ≤ 50 ms.
        assert!(latency <= 300, "height {h} took {latency} ms");
        assert_eq!(d.round, 0, "height {h} needed a second round");
        previous = d.at;
    }
    assert!(
        n.decided[&10].at < 3_000,
        "10 heights in {} ms",
        n.decided[&10].at
    );
    assert!(sim.fired.is_empty(), "timeouts fired: {:?}", sim.fired);
}
