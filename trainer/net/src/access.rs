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

use parity_scale_codec::Encode;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use weft_p2p::PeerId;
use weft_primitives::step::{RunId, StageIndex};

/// Domain tag of [`auditor_hello_message`].
pub const AUDITOR_HELLO_DOMAIN: &[u8; 20] = b"weft/reveal-auth/v1\0";

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
        self.fixed.contains(peer) || self.lock().bound.contains_key(peer)
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
