//! One engine against hand-made messages: what it refuses and why (scenario 7), the order of
//! its WAL appends and broadcasts, and restarts from a WAL.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::keys;
use parity_scale_codec::{Decode, Encode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft_bls::{SecretKey, SignatureBytes};
use weft_consensus::{
    ConsensusMessage, Engine, EngineConfig, EngineError, Output, Timeouts, WalEntry,
};
use weft_finality::{Proposal, SignedProposal, SignedVote, ValidatorSet, Vote, VoteKind};
use weft_primitives::{AccountId, Hash};

const GENESIS: Hash = Hash([0x6e; 32]);

struct Fixture {
    keys: Vec<(AccountId, SecretKey)>,
    set: ValidatorSet,
}

fn fixture() -> Fixture {
    let keys = keys(4);
    let set = ValidatorSet::from_stakes(
        keys.iter()
            .map(|(a, k)| (*a, k.public_key().to_bytes(), 1_000)),
    )
    .unwrap();
    Fixture { keys, set }
}

impl Fixture {
    fn engine(&self, i: usize) -> Engine {
        Engine::new(EngineConfig {
            genesis: GENESIS,
            key: Some(self.keys[i].clone()),
            timeouts: Timeouts::default(),
        })
    }

    /// An engine of a validator that is not the proposer of (1, 0), started at height 1.
    fn follower(&self) -> (usize, Engine) {
        let proposer = self.proposer_index(1, 0);
        let i = (proposer + 1) % 4;
        let mut e = self.engine(i);
        e.start_height(1, self.set.clone()).unwrap();
        (i, e)
    }

    fn proposer_index(&self, height: u64, round: u32) -> usize {
        let p = self.set.proposer(height, round).account;
        self.keys.iter().position(|(a, _)| *a == p).unwrap()
    }

    fn vote(&self, signer: usize, voter: usize, height: u64, block: Option<Hash>) -> SignedVote {
        let vote = Vote {
            kind: VoteKind::Prevote,
            height,
            round: 0,
            block,
            validator: self.keys[voter].0,
        };
        SignedVote::sign(vote, &GENESIS, &self.keys[signer].1).unwrap()
    }

    fn proposal(&self, signer: usize, proposer: usize, block: Hash) -> SignedProposal {
        let proposal = Proposal {
            height: 1,
            round: 0,
            block,
            pol_round: None,
            proposer: self.keys[proposer].0,
        };
        SignedProposal::sign(proposal, &GENESIS, &self.keys[signer].1).unwrap()
    }
}

/// Scenario 7: bad signatures, non-members, non-proposers and weak certificates are refused
/// with errors the node can punish; garbage never decodes.
#[test]
fn refuses_what_it_cannot_verify() {
    let f = fixture();
    let (me, mut e) = f.follower();
    let other = (me + 2) % 4;
    let hash = Hash([1; 32]);
    let block = Some(hash);

    let forged = f.vote(me, other, 1, block);
    assert_eq!(
        e.on_message(ConsensusMessage::Vote(forged)),
        Err(EngineError::BadSignature)
    );

    let stranger = SecretKey::from_seed(b"stranger").unwrap();
    let vote = Vote {
        kind: VoteKind::Prevote,
        height: 1,
        round: 0,
        block,
        validator: AccountId([99; 32]),
    };
    let outsider = SignedVote::sign(vote, &GENESIS, &stranger).unwrap();
    assert_eq!(
        e.on_message(ConsensusMessage::Vote(outsider)),
        Err(EngineError::UnknownValidator(AccountId([99; 32])))
    );

    let proposer = f.proposer_index(1, 0);
    let not_proposer = (proposer + 3) % 4;
    let p = f.proposal(not_proposer, not_proposer, Hash([2; 32]));
    assert!(matches!(
        e.on_message(ConsensusMessage::Proposal(p)),
        Err(EngineError::NotProposer { .. })
    ));
    let p = f.proposal(not_proposer, proposer, Hash([2; 32]));
    assert_eq!(
        e.on_message(ConsensusMessage::Proposal(p)),
        Err(EngineError::BadSignature)
    );

    // A polka certificate with one signature (too little power), then with a forged one.
    let good = f.vote(other, other, 1, block);
    let weak = ConsensusMessage::PolkaCertificate {
        height: 1,
        round: 0,
        block: hash,
        signatures: vec![(good.vote.validator, good.signature)],
    };
    assert!(matches!(
        e.on_message(weak),
        Err(EngineError::InvalidCertificate(_))
    ));
    let forged = ConsensusMessage::PolkaCertificate {
        height: 1,
        round: 0,
        block: hash,
        signatures: (0..3)
            .map(|i| (f.keys[i].0, SignatureBytes([7; 32])))
            .collect(),
    };
    assert_eq!(e.on_message(forged), Err(EngineError::BadSignature));

    // A valid vote is accepted and logged.
    let out = e.on_message(ConsensusMessage::Vote(good)).unwrap();
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::WalAppend { height: 1, .. })));

    // Garbage.
    assert!(ConsensusMessage::decode(&mut &[0xff, 0, 1][..]).is_err());
    assert!(ConsensusMessage::from_bytes(&[]).is_err());
    let mut rng = StdRng::seed_from_u64(7);
    for len in 0..200usize {
        let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if let Ok(m) = ConsensusMessage::from_bytes(&bytes) {
            assert_eq!(
                m.encode(),
                bytes,
                "a decoded message re-encodes to its bytes"
            );
        }
    }
    let valid = ConsensusMessage::Vote(f.vote(other, other, 1, None)).encode();
    for cut in 0..valid.len() {
        assert!(ConsensusMessage::from_bytes(&valid[..cut]).is_err());
    }
}

#[test]
fn other_heights_are_dropped_buffered_or_reported() {
    let f = fixture();
    let (me, mut e) = f.follower();
    let other = (me + 1) % 4;
    assert_eq!(
        e.on_message(ConsensusMessage::Vote(f.vote(other, other, 3, None))),
        Ok(vec![Output::AheadOfUs { height: 3 }])
    );
    // Height 2 is buffered, but not reported again (3 was).
    assert_eq!(
        e.on_message(ConsensusMessage::Vote(f.vote(other, other, 2, None))),
        Ok(vec![])
    );
    assert_eq!(
        e.start_height(1, f.set.clone()),
        Err(EngineError::HeightNotIncreasing {
            requested: 1,
            current: 1
        })
    );
    // The buffered vote is processed (and logged) when height 2 starts.
    let out = e.start_height(2, f.set.clone()).unwrap();
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::WalAppend { height: 2, .. })));
    let past = ConsensusMessage::Vote(f.vote(other, other, 1, None));
    assert_eq!(e.on_message(past), Ok(vec![]));
}

/// Every vote or proposal the engine broadcasts was logged earlier in the same batch.
fn assert_logged_before_broadcast(me: AccountId, out: &[Output]) {
    let mut logged = Vec::new();
    for o in out {
        match o {
            Output::WalAppend { entry, .. } => logged.push(WalEntry::from_bytes(entry).unwrap()),
            Output::Broadcast(ConsensusMessage::Vote(v)) if v.vote.validator == me => {
                assert!(
                    logged.contains(&WalEntry::Vote(v.clone())),
                    "{v:?} not logged first"
                );
            }
            Output::Broadcast(ConsensusMessage::Proposal(p)) => {
                assert!(
                    logged.contains(&WalEntry::Proposal(p.clone())),
                    "{p:?} not logged first"
                );
            }
            _ => {}
        }
    }
}

fn own_broadcasts(out: &[Output]) -> Vec<ConsensusMessage> {
    out.iter()
        .filter_map(|o| match o {
            Output::Broadcast(m @ (ConsensusMessage::Vote(_) | ConsensusMessage::Proposal(_))) => {
                Some(m.clone())
            }
            _ => None,
        })
        .collect()
}

fn wal_of(out: &[Output]) -> Vec<Vec<u8>> {
    out.iter()
        .filter_map(|o| match o {
            Output::WalAppend { entry, .. } => Some(entry.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn proposer_logs_before_broadcasting_and_replays_the_same_messages() {
    let f = fixture();
    let p = f.proposer_index(1, 0);
    let me = f.keys[p].0;
    let mut e = f.engine(p);
    let out = e.start_height(1, f.set.clone()).unwrap();
    assert!(out.iter().any(|o| matches!(
        o,
        Output::BuildBlock {
            height: 1,
            round: 0,
            ..
        }
    )));
    let block = Hash([5; 32]);
    let out = e.propose(1, 0, block).unwrap();
    assert_logged_before_broadcast(me, &out);
    let sent = own_broadcasts(&out);
    assert_eq!(sent.len(), 2, "a proposal and a prevote: {sent:?}");
    let wal = wal_of(&out);

    // Restart from the full WAL: the same proposal and prevote go out again, byte for byte,
    // and nothing new is logged.
    let mut again = f.engine(p);
    again.start_height(1, f.set.clone()).unwrap();
    let out = again.replay(&wal).unwrap();
    let mut resent = own_broadcasts(&out);
    let mut sorted = sent.clone();
    resent.sort_by_key(|m| m.encode());
    sorted.sort_by_key(|m| m.encode());
    assert_eq!(resent, sorted);
    assert!(
        wal_of(&out).is_empty(),
        "replayed entries are not logged twice"
    );
    assert_eq!(again.replay(&wal), Err(EngineError::ReplayTooLate));

    // Restart with only the proposed block logged (a crash before the proposal was signed):
    // the engine proposes that block again rather than a new one.
    let mut third = f.engine(p);
    third.start_height(1, f.set.clone()).unwrap();
    let out = third.replay(&wal[..1]).unwrap();
    assert_logged_before_broadcast(me, &out);
    assert_eq!(own_broadcasts(&out), sent);
    assert!(!out.iter().any(|o| matches!(o, Output::BuildBlock { .. })));
}

#[test]
fn corrupt_wal_entries_are_refused() {
    let f = fixture();
    let (_, mut e) = f.follower();
    let good = WalEntry::Timeout {
        round: 0,
        kind: weft_consensus::TimeoutKind::Propose,
    }
    .to_bytes();
    assert!(matches!(
        e.replay(&[good, vec![1, 0xff, 0xff]]),
        Err(EngineError::CorruptWal { index: 1, .. })
    ));
    let mut fresh = Engine::new(EngineConfig {
        genesis: GENESIS,
        key: None,
        timeouts: Timeouts::default(),
    });
    assert_eq!(fresh.replay(&[]), Err(EngineError::NotStarted));
    assert_eq!(
        fresh.on_timeout(weft_consensus::TimeoutId {
            height: 1,
            round: 0,
            kind: weft_consensus::TimeoutKind::Propose,
        }),
        Err(EngineError::NotStarted)
    );
}

#[test]
fn a_node_without_a_key_follows_but_never_votes() {
    let f = fixture();
    let mut e = Engine::new(EngineConfig {
        genesis: GENESIS,
        key: None,
        timeouts: Timeouts::default(),
    });
    let out = e.start_height(1, f.set.clone()).unwrap();
    assert!(!out.iter().any(|o| matches!(o, Output::BuildBlock { .. })));
    let proposer = f.proposer_index(1, 0);
    let block = Hash([3; 32]);
    let out = e
        .on_message(ConsensusMessage::Proposal(
            f.proposal(proposer, proposer, block),
        ))
        .unwrap();
    let out2 = e.on_block(1, 0, block, f.keys[proposer].0, true).unwrap();
    assert!(own_broadcasts(&out).is_empty() && own_broadcasts(&out2).is_empty());
    assert_eq!(e.account(), None);
}

fn own_prevotes(me: AccountId, out: &[Output]) -> Vec<Option<Hash>> {
    out.iter()
        .filter_map(|o| match o {
            Output::Broadcast(ConsensusMessage::Vote(v))
                if v.vote.validator == me && v.vote.kind == VoteKind::Prevote =>
            {
                Some(v.vote.block)
            }
            _ => None,
        })
        .collect()
}

/// Why the WAL matters: a follower prevoted a block; restarted *without* its WAL, the
/// propose timeout makes it prevote nil at the same round (an equivocation); restarted with
/// its WAL, it re-sends its recorded prevote and the timeout changes nothing.
#[test]
fn without_the_wal_a_restart_would_equivocate() {
    let f = fixture();
    let (me_i, mut e) = f.follower();
    let me = f.keys[me_i].0;
    let proposer = f.proposer_index(1, 0);
    let block = Hash([8; 32]);
    let mut out = e
        .on_message(ConsensusMessage::Proposal(
            f.proposal(proposer, proposer, block),
        ))
        .unwrap();
    out.extend(e.on_block(1, 0, block, f.keys[proposer].0, true).unwrap());
    assert_eq!(own_prevotes(me, &out), vec![Some(block)]);
    let wal = wal_of(&out);
    let propose_timeout = weft_consensus::TimeoutId {
        height: 1,
        round: 0,
        kind: weft_consensus::TimeoutKind::Propose,
    };

    let mut amnesiac = f.engine(me_i);
    amnesiac.start_height(1, f.set.clone()).unwrap();
    let out = amnesiac.on_timeout(propose_timeout).unwrap();
    assert_eq!(own_prevotes(me, &out), vec![None], "the negative control");

    let mut recovered = f.engine(me_i);
    recovered.start_height(1, f.set.clone()).unwrap();
    let out = recovered.replay(&wal).unwrap();
    assert_eq!(own_prevotes(me, &out), vec![Some(block)]);
    let out = recovered.on_timeout(propose_timeout).unwrap();
    assert!(own_prevotes(me, &out).is_empty());
}

/// Two proposals of one proposer for one (height, round) are reported as evidence at once.
#[test]
fn double_proposals_are_evidence() {
    let f = fixture();
    let (_, mut e) = f.follower();
    let proposer = f.proposer_index(1, 0);
    let first = f.proposal(proposer, proposer, Hash([1; 32]));
    let second = f.proposal(proposer, proposer, Hash([2; 32]));
    assert!(!e
        .on_message(ConsensusMessage::Proposal(first))
        .unwrap()
        .iter()
        .any(|o| matches!(o, Output::Evidence(_))));
    let out = e.on_message(ConsensusMessage::Proposal(second)).unwrap();
    let evidence: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Evidence(ev) => Some(ev.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(evidence.len(), 1, "{out:?}");
    let key = f.set.validators()[f.set.index_of(&f.keys[proposer].0).unwrap()].bls_key;
    assert_eq!(evidence[0].verify(&GENESIS, &key), Ok(()));
    assert!(matches!(
        evidence[0],
        weft_finality::Equivocation::Proposals { .. }
    ));
}
