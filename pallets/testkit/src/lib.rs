//! # Pallet test world
//!
//! What the pallets' unit tests share, so that each `tests.rs` says only what is particular
//! to its pallet:
//!
//! * storage: [`genesis`] builds a [`MemoryState`] by running genesis builders on an
//!   [`Overlay`] over empty storage and keeping the writes; a test then opens its own overlay
//!   on it, so every test starts from the same committed state;
//! * events: [`Recorder`], the sink that records every pallet's events in order;
//! * accounts: [`acc`] (account `n` is `[n; 32]`), [`endowed`], and the genesis stakers
//!   [`validator`] (with the dev BLS key of [`validator_key_name`]) and [`trainer`];
//! * genesis: [`endow`] (balances, existential deposit 1), [`stake`] (staking with the low
//!   minimum bonds of [`staking_config`]), [`open_runs`] (runs with the designer bond of
//!   [`runs_config`]) and [`protocol_genesis`] (the three in order), plus [`run_spec`], the
//!   run the protocol pallets' tests register;
//! * blocks: [`run_block`] records a block's randomness and runs hooks for it, and
//!   [`as_executive`] runs a hook in one transaction the way the runtime executive does.
//!
//! ## Why a crate
//!
//! A dev-dependency crate rather than a `testkit` feature of `weft-pallet-support`: the
//! world needs the staking and runs pallets, which depend on support, so a support feature
//! could not name them; and a dev-dependency never reaches a production build. The pallets
//! below staking and runs in the dependency order (balances, staking, runs) use it too: Cargo
//! allows the dev-dependency cycle, and those pallets use only the parts whose types come
//! from `weft-primitives` and `weft-pallet-support` (accounts, [`genesis`], [`Recorder`]),
//! because their own types inside their unit tests are not the ones this crate sees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use weft_pallet_balances as balances;
use weft_pallet_runs as runs;
use weft_pallet_staking as staking;
pub use weft_pallet_support::Recorder;
use weft_pallet_support::{randomness, transactional_item, Failure};
use weft_primitives::storage::{MemoryState, Overlay};
use weft_primitives::{AccountId, Balance, BlockNumber, DispatchError, Hash};

/// The existential deposit of [`endow`].
pub const EXISTENTIAL_DEPOSIT: Balance = 1;

/// Well-known account `n`: `AccountId([n; 32])`.
pub fn acc(n: u8) -> AccountId {
    AccountId([n; 32])
}

/// Accounts `ids`, each with `amount`.
pub fn endowed(ids: impl IntoIterator<Item = u8>, amount: Balance) -> Vec<(AccountId, Balance)> {
    ids.into_iter().map(|i| (acc(i), amount)).collect()
}

/// The state `build` writes on empty storage (its events are dropped).
pub fn genesis(build: impl FnOnce(&mut Overlay<'_>, &mut Recorder)) -> MemoryState {
    let base = MemoryState::default();
    let mut o = Overlay::new(&base);
    build(&mut o, &mut Recorder::default());
    let mut state = MemoryState::default();
    state.apply(&o.into_changes());
    state
}

/// Balances genesis: `accounts` endowed, existential deposit [`EXISTENTIAL_DEPOSIT`].
pub fn endow(o: &mut Overlay<'_>, accounts: &[(AccountId, Balance)]) {
    balances::build_genesis(o, EXISTENTIAL_DEPOSIT, accounts).unwrap();
}

/// The staking configuration of the tests: the defaults with minimum bonds of 1 000
/// (validators) and 100 (trainers).
pub fn staking_config() -> staking::Config {
    staking::Config {
        min_validator_bond: 1_000,
        min_trainer_bond: 100,
        ..staking::Config::default()
    }
}

/// The name of validator `v`'s dev BLS key (`weft_bls::dev_keypair`).
pub fn validator_key_name(v: u8) -> String {
    format!("v{v}")
}

/// Validator `v`'s dev BLS secret key, to sign as it.
pub fn validator_secret_key(v: u8) -> weft_bls::SecretKey {
    weft_bls::dev_keypair(&validator_key_name(v)).unwrap().0
}

/// Account `v` staking `bond` as a validator with its dev BLS key.
pub fn validator(v: u8, bond: Balance) -> staking::GenesisStaker {
    let (_, pk, pop) = weft_bls::dev_keypair(&validator_key_name(v)).unwrap();
    staking::GenesisStaker {
        account: acc(v),
        bond,
        validator: Some((pk, pop)),
        trainer: None,
    }
}

/// Account `t` staking `bond` as a trainer (peer id of [`trainer_p2p_key`]`(t)`, no
/// addresses) of `capacity`.
pub fn trainer(t: u8, bond: Balance, capacity: u32) -> staking::GenesisStaker {
    use sp_core::Pair as _;
    staking::GenesisStaker {
        account: acc(t),
        bond,
        validator: None,
        trainer: Some(staking::TrainerInfo {
            peer_id: weft_primitives::seal::peer_id_of_ed25519_key(&trainer_p2p_key(t).public().0),
            addrs: vec![],
            capacity,
        }),
    }
}

/// The p2p identity of trainer `t` (ed25519 from the seed `[t; 32]`).
pub fn trainer_p2p_key(t: u8) -> sp_core::ed25519::Pair {
    use sp_core::Pair as _;
    sp_core::ed25519::Pair::from_seed(&[t; 32])
}

/// Trainer `t`'s pipeline seal over `root` (see `weft_primitives::seal`).
pub fn seal(
    t: u8,
    (run, step, from_stage, replica): (u32, u64, u16, u16),
    direction: weft_primitives::seal::Direction,
    root: &weft_primitives::Hash,
) -> weft_primitives::seal::SealSignature {
    use sp_core::Pair as _;
    let message =
        weft_primitives::seal::seal_message(run, step, from_stage, replica, direction, root);
    weft_primitives::seal::SealSignature(trainer_p2p_key(t).sign(&message).0)
}

/// Staking genesis with [`staking_config`] and `stakers` (endowed beforehand).
pub fn stake(o: &mut Overlay<'_>, ev: &mut Recorder, stakers: &[staking::GenesisStaker]) {
    staking::build_genesis(o, ev, &staking_config(), stakers).unwrap();
}

/// The runs configuration of the tests: the defaults with a designer bond of 1.
pub fn runs_config() -> runs::Config {
    runs::Config {
        min_designer_bond: 1,
        ..runs::Config::default()
    }
}

/// Runs genesis with [`runs_config`] and no runs.
pub fn open_runs(o: &mut Overlay<'_>, ev: &mut Recorder) {
    runs::build_genesis(o, ev, &runs_config(), &[]).unwrap();
}

/// Balances ([`endow`]), staking ([`stake`]) and runs ([`open_runs`]) genesis, in that order.
pub fn protocol_genesis(
    o: &mut Overlay<'_>,
    ev: &mut Recorder,
    accounts: &[(AccountId, Balance)],
    stakers: &[staking::GenesisStaker],
) {
    endow(o, accounts);
    stake(o, ev, stakers);
    open_runs(o, ev);
}

/// The run the protocol pallets' tests register: a 64-layer tiny model in `stages` ×
/// `replicas`, the default schedule over 10⁶ steps, no step limit, bond 1, and `params`.
pub fn run_spec(stages: u16, replicas: u16, params: runs::RunParams) -> runs::RunSpec {
    runs::RunSpec {
        model_config: runs::ModelSpec {
            n_layers: 64,
            ..runs::ModelSpec::tiny()
        },
        stages,
        replicas,
        dataset_hash: Hash::ZERO,
        hyper_params: runs::HyperParams::with_defaults(4, 1_000_000_000, 1_000_000),
        max_steps: 0,
        bond: 1,
        params,
    }
}

/// Block `n`: records its randomness (`blake3(n as u64 little endian)`) and runs `hooks`.
pub fn run_block(
    o: &mut Overlay<'_>,
    ev: &mut Recorder,
    n: BlockNumber,
    hooks: impl FnOnce(&mut Overlay<'_>, &mut Recorder, BlockNumber),
) {
    randomness::RANDOMNESS.insert(o, &n, &weft_primitives::blake3_256(&n.to_le_bytes()));
    hooks(o, ev, n);
}

/// Runs a hook the way the runtime executive does: in one storage transaction, whose writes
/// and events are dropped when the hook fails with a dispatch error.
pub fn as_executive(
    o: &mut Overlay<'_>,
    ev: &mut Recorder,
    hook: impl FnOnce(&mut Overlay<'_>, &mut Recorder) -> Result<(), Failure>,
) -> Result<(), DispatchError> {
    transactional_item(o, ev, |o, ev| hook(o, ev)).unwrap()
}
