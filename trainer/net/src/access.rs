//! Who may fetch a stage's reveals.
//!
//! A trainer serves its committed tensors only to the auditors the chain assigns to its
//! stage. Validators declare no peer id: an auditor proves, per connection, that a libp2p
//! peer speaks for a validator account by sending `AuditorHello` with a BN254 BLS signature
//! by its registered validator key over [`auditor_hello_message`]`(run, stage, peer_id)`.
//! [`RevealAccess::hello`] checks that the account is in the directory of the stage's
//! auditors (kept current from chain state with [`RevealAccess::set_auditors`]), that the
//! signature verifies under that account's key, and binds the noise-authenticated sender to
//! it. The message has its own domain tag, so it can never be replayed as an attestation.
//!
//! The slot's **successor** (the account the chain assigns the slot after this holder) is
//! admitted the same way with `SuccessorHello`: an sr25519 signature by its account over
//! [`successor_hello_message`]`(run, stage, replica, peer_id)`, checked against the account
//! the chain names ([`RevealAccess::set_successor`]), so that it can fetch the slot's last
//! committed weights and optimiser state (the hand-over). Where the run's replicas average,
//! every replica of the stage holds that same state, so the chain's holder of *another*
//! replica slot of the stage is admitted too ([`RevealAccess::set_siblings`]): a spare that
//! takes the slot of a replica that vanished fetches the state from a live replica. A
//! sibling sees nothing of the model it does not hold already (the same stage).

use parity_scale_codec::Encode;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use weft_p2p::PeerId;
use weft_primitives::step::{Replica, RunId, StageIndex};
use weft_primitives::{AccountId, Signature};

/// Domain tag of [`auditor_hello_message`].
pub const AUDITOR_HELLO_DOMAIN: &[u8; 20] = b"weft/reveal-auth/v1\0";
/// Domain tag of [`successor_hello_message`].
pub const SUCCESSOR_HELLO_DOMAIN: &[u8; 20] = b"weft/handover-auth/1";

/// What a slot's successor signs to bind a libp2p peer id to its account:
/// `SCALE((SUCCESSOR_HELLO_DOMAIN, run, stage, replica, peer_id_bytes))`.
pub fn successor_hello_message(
    run: RunId,
    stage: StageIndex,
    replica: Replica,
    peer: &PeerId,
) -> Vec<u8> {
    (SUCCESSOR_HELLO_DOMAIN, run, stage, replica, peer.to_bytes()).encode()
}

/// What an auditor signs to bind a libp2p peer id to its validator account for the reveals
/// of `(run, stage)`: `SCALE((AUDITOR_HELLO_DOMAIN, run, stage, peer_id_bytes))`.
pub fn auditor_hello_message(run: RunId, stage: StageIndex, peer: &PeerId) -> Vec<u8> {
    (AUDITOR_HELLO_DOMAIN, run, stage, peer.to_bytes()).encode()
}

/// Why an auditor's hello was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The account is not in the directory of this stage's auditors.
    #[error("account 0x{} is not an auditor of stage {stage} on chain", hex::encode(.account))]
    NotAuditor {
        /// The account.
        account: [u8; 32],
        /// The stage.
        stage: StageIndex,
    },
    /// The signature does not verify under the account's key.
    #[error("the hello signature does not verify under the auditor's key")]
    BadSignature,
    /// The account is not the slot's holder on chain after this one.
    #[error("account 0x{} is not the successor of this slot on chain", hex::encode(.account))]
    NotSuccessor {
        /// The account.
        account: [u8; 32],
    },
    /// The successor's signature does not verify under its account.
    #[error("the successor's hello signature does not verify under its account")]
    BadSuccessorSignature,
}

/// Who may fetch this stage's reveals: a fixed set of peers (a static peer table), plus
/// peers that proved with `AuditorHello` that they speak for a validator the chain assigns to audit
/// this stage (see the module docs). The
/// chain side keeps the directory of auditor accounts and their BLS keys current with
/// [`RevealAccess::set_auditors`]; a peer whose account leaves the directory loses access.
#[derive(Debug, Default)]
pub struct RevealAccess {
    fixed: HashSet<PeerId>,
    inner: Mutex<AccessInner>,
}

#[derive(Debug, Default)]
struct AccessInner {
    keys: HashMap<[u8; 32], weft_bls::PublicKeyBytes>,
    bound: HashMap<PeerId, [u8; 32]>,
    successor: Option<AccountId>,
    successor_peer: Option<PeerId>,
    siblings: BTreeMap<Replica, AccountId>,
    sibling_peers: BTreeMap<Replica, PeerId>,
}

impl RevealAccess {
    /// Access for exactly `peers` (and whoever proves to be an auditor later).
    pub fn fixed(peers: HashSet<PeerId>) -> Self {
        RevealAccess {
            fixed: peers,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, AccessInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the directory of auditor accounts and their keys; peers bound to an
    /// account no longer in it (or whose key changed) lose access.
    pub fn set_auditors(&self, auditors: &[([u8; 32], weft_bls::PublicKeyBytes)]) {
        let mut g = self.lock();
        let keys: HashMap<_, _> = auditors.iter().copied().collect();
        let old = std::mem::take(&mut g.keys);
        g.bound
            .retain(|_, acc| keys.contains_key(acc) && keys.get(acc) == old.get(acc));
        g.keys = keys;
    }

    /// Whether `peer` may fetch reveals.
    pub fn allows(&self, peer: &PeerId) -> bool {
        let g = self.lock();
        self.fixed.contains(peer)
            || g.bound.contains_key(peer)
            || (g.successor.is_some() && g.successor_peer == Some(*peer))
            || g.sibling_peers.values().any(|p| p == peer)
    }

    /// Names the slot's successor on chain (`None`: there is none, or this holder still
    /// holds it); a peer bound to another account loses access.
    pub fn set_successor(&self, account: Option<AccountId>) {
        let mut g = self.lock();
        if g.successor != account {
            g.successor = account;
            g.successor_peer = None;
        }
    }

    /// Names the chain's holders of the stage's other replica slots (replicas that average;
    /// empty otherwise); a peer bound to a replica whose holder changed loses access.
    pub fn set_siblings(&self, holders: impl IntoIterator<Item = (Replica, AccountId)>) {
        let mut g = self.lock();
        let holders: BTreeMap<_, _> = holders.into_iter().collect();
        let old = std::mem::take(&mut g.siblings);
        g.sibling_peers
            .retain(|r, _| holders.contains_key(r) && holders.get(r) == old.get(r));
        g.siblings = holders;
    }

    /// Checks a hello from `peer` by the chain's holder of `slot` — the successor of this
    /// holder's own replica `own`, or the holder of another replica of the stage (see
    /// [`Self::set_siblings`]) — and, if it holds, lets `peer` fetch the reveals.
    pub fn successor_hello(
        &self,
        own: Replica,
        (run, stage, replica): (RunId, StageIndex, Replica),
        peer: &PeerId,
        account: [u8; 32],
        signature: [u8; 64],
    ) -> Result<(), HelloError> {
        let mut g = self.lock();
        let named = if replica == own {
            g.successor
        } else {
            g.siblings.get(&replica).copied()
        };
        if named != Some(AccountId(account)) {
            return Err(HelloError::NotSuccessor { account });
        }
        let msg = successor_hello_message(run, stage, replica, peer);
        if !weft_primitives::crypto::verify(&Signature(signature), &msg, &AccountId(account)) {
            return Err(HelloError::BadSuccessorSignature);
        }
        if replica == own {
            g.successor_peer = Some(*peer);
        } else {
            g.sibling_peers.insert(replica, *peer);
        }
        Ok(())
    }

    /// Checks an auditor's hello from `peer` and, if it holds, grants `peer` access.
    pub fn hello(
        &self,
        (run, stage): (RunId, StageIndex),
        peer: &PeerId,
        account: [u8; 32],
        signature: [u8; 32],
    ) -> Result<(), HelloError> {
        let mut g = self.lock();
        let Some(key) = g.keys.get(&account).copied() else {
            return Err(HelloError::NotAuditor { account, stage });
        };
        let msg = auditor_hello_message(run, stage, peer);
        if !weft_bls::verify_bytes(&key, &msg, &weft_bls::SignatureBytes(signature)) {
            return Err(HelloError::BadSignature);
        }
        g.bound.insert(*peer, account);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use weft_primitives::Keypair;

    fn peer(seed: u8) -> PeerId {
        weft_p2p::keypair_from_seed([seed; 32])
            .unwrap()
            .public()
            .to_peer_id()
    }

    #[test]
    fn only_the_named_successor_with_its_own_signature_is_admitted() {
        let access = RevealAccess::default();
        let slot = (3, 1, 0);
        let (successor, other) = (
            Keypair::from_suri("//Successor").unwrap(),
            Keypair::from_suri("//Other").unwrap(),
        );
        let p = peer(1);
        let sign = |k: &Keypair, slot: (RunId, StageIndex, Replica), peer: &PeerId| {
            k.sign(&successor_hello_message(slot.0, slot.1, slot.2, peer))
                .0
        };
        // Nobody is named yet.
        assert_eq!(
            access.successor_hello(
                0,
                slot,
                &p,
                successor.account_id().0,
                sign(&successor, slot, &p)
            ),
            Err(HelloError::NotSuccessor {
                account: successor.account_id().0
            })
        );
        access.set_successor(Some(successor.account_id()));
        // Another account, or a signature by another key, over another slot or peer: refused.
        assert!(matches!(
            access.successor_hello(0, slot, &p, other.account_id().0, sign(&other, slot, &p)),
            Err(HelloError::NotSuccessor { .. })
        ));
        for sig in [
            sign(&other, slot, &p),
            sign(&successor, (3, 0, 0), &p),
            sign(&successor, slot, &peer(2)),
        ] {
            assert_eq!(
                access.successor_hello(0, slot, &p, successor.account_id().0, sig),
                Err(HelloError::BadSuccessorSignature)
            );
        }
        assert!(!access.allows(&p));
        // The successor's own signature for this slot and peer: admitted, that peer only.
        access
            .successor_hello(
                0,
                slot,
                &p,
                successor.account_id().0,
                sign(&successor, slot, &p),
            )
            .unwrap();
        assert!(access.allows(&p) && !access.allows(&peer(2)));
        // The chain names someone else (or nobody): access is gone.
        access.set_successor(Some(other.account_id()));
        assert!(!access.allows(&p));
    }

    #[test]
    fn the_holder_of_another_replica_of_the_stage_is_admitted_as_a_sibling() {
        let access = RevealAccess::default();
        let (spare, other) = (
            Keypair::from_suri("//Spare").unwrap(),
            Keypair::from_suri("//Other").unwrap(),
        );
        let p = peer(3);
        // This holder is replica 0; the spare holds replica 1 of the same stage.
        let slot = (3, 1, 1);
        let sig = |k: &Keypair| {
            k.sign(&successor_hello_message(slot.0, slot.1, slot.2, &p))
                .0
        };
        assert!(matches!(
            access.successor_hello(0, slot, &p, spare.account_id().0, sig(&spare)),
            Err(HelloError::NotSuccessor { .. })
        ));
        access.set_siblings([(1, spare.account_id())]);
        // Named for another replica than it claims, or by someone else: refused.
        assert!(matches!(
            access.successor_hello(0, (3, 1, 2), &p, spare.account_id().0, sig(&spare)),
            Err(HelloError::NotSuccessor { .. })
        ));
        assert!(matches!(
            access.successor_hello(0, slot, &p, other.account_id().0, sig(&other)),
            Err(HelloError::NotSuccessor { .. })
        ));
        access
            .successor_hello(0, slot, &p, spare.account_id().0, sig(&spare))
            .unwrap();
        assert!(access.allows(&p));
        // Unchanged holders keep access; a new holder of replica 1 ends it.
        access.set_siblings([(1, spare.account_id())]);
        assert!(access.allows(&p));
        access.set_siblings([(1, other.account_id())]);
        assert!(!access.allows(&p));
    }
}
