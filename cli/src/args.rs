//! Parsing of user-typed arguments: accounts given as an address or a secret URI, signers
//! (secret URIs only), key-inspection input, token amounts and block selectors.
//!
//! An argument that parses as an SS58 address or a `0x`-prefixed 32-byte public key is an
//! address; anything else is read as a secret URI (`//Alice`, a mnemonic with an optional
//! derivation path). The two forms cannot be confused except for `0x` + 64 hex digits, which
//! is read as a public key (use a mnemonic or a derivation path to name a raw seed).
//!
//! The protocol commands add: fractions ([`parse_perbill`]: `10%`, `0.1`, `1/3`), fixed-point
//! losses ([`parse_loss`]: `2.75` → 2 750 000), libp2p peer ids and multiaddrs, and the
//! validator's BN254 BLS key ([`bls_secret`]), which is either given as a seed or derived
//! from the signer's secret URI.

use std::fmt;
use std::str::FromStr;
use weft_primitives::units::{parse_amount, AmountError};
use weft_primitives::{AccountId, Balance, BlockNumber, Hash, Keypair};
use weft_runtime::bls::SecretKey;
use weft_runtime::support::Perbill;

/// Why an argument could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    /// Neither an address nor a secret URI.
    #[error("{0:?} is neither an SS58 address, a 0x public key nor a valid secret URI")]
    NotAnAccount(String),
    /// An address where a secret is needed.
    #[error("{0:?} is an address; signing needs a secret URI such as //Alice or a mnemonic")]
    AddressNotSigner(String),
    /// Not a valid secret URI.
    #[error("invalid secret URI {0:?}")]
    BadSuri(String),
    /// Not a valid block selector.
    #[error("{0:?} is not a block: use best, finalized, a block number or a 0x block hash")]
    BadBlock(String),
    /// Not a valid amount.
    #[error(transparent)]
    Amount(#[from] AmountError),
    /// Not a valid fraction.
    #[error("{0:?} is not a fraction: use a percentage (10%), a decimal (0.1) or a ratio (1/3), at most one")]
    BadFraction(String),
    /// Not a valid fixed-point decimal.
    #[error("{0:?} is not a non-negative decimal with at most 6 decimal places")]
    BadDecimal(String),
    /// Not a valid peer id.
    #[error(transparent)]
    PeerId(#[from] weft_rpc_api::protocol::PeerIdError),
    /// Not a valid multiaddr.
    #[error("{0:?} is not a multiaddr: it must start with '/' (e.g. /ip4/1.2.3.4/tcp/4001) and be at most {max} bytes", max = weft_runtime::staking::MAX_ADDR_LEN)]
    BadAddr(String),
    /// Not a valid BLS seed.
    #[error("invalid BLS seed: {0}")]
    BadBlsSeed(String),
}

/// A signer with the secret URI it was read from (the BLS key of a validator can be
/// derived from the URI).
#[derive(Clone)]
pub struct Signer {
    /// The sr25519 key pair.
    pub pair: Keypair,
    /// The secret URI as typed.
    pub suri: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(f, "Signer({})", self.pair.account_id())
    }
}

/// A signer (see [`parse_signer`]) keeping its secret URI.
pub fn parse_signer_suri(s: &str) -> Result<Signer, ArgError> {
    Ok(Signer {
        pair: parse_signer(s)?,
        suri: s.trim().to_string(),
    })
}

pub use weft_runtime::bls::derive::BLS_FROM_SURI_DOMAIN;

/// The validator's BN254 BLS secret key from a secret URI or an explicit seed
/// ([`weft_bls::derive`] says how).
pub fn bls_secret(suri: &str, seed: Option<&str>) -> Result<SecretKey, ArgError> {
    weft_runtime::bls::secret_from_suri(suri, seed).map_err(|e| ArgError::BadBlsSeed(e.to_string()))
}

/// A non-negative decimal scaled by `10^decimals` (`"2.75"`, 6 → 2 750 000); more decimal
/// places than `decimals` are refused rather than rounded.
fn parse_scaled(s: &str, decimals: u32) -> Option<u128> {
    let t = s.trim();
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
        || frac.len() > decimals as usize
    {
        return None;
    }
    let scale = 10u128.checked_pow(decimals)?;
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut f: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..decimals as usize {
        f = f.checked_mul(10)?;
    }
    int.checked_mul(scale)?.checked_add(f)
}

/// A fraction of one: `10%`, `33.3%`, `0.25`, `1`, `1/3` (rounded down to parts per billion).
pub fn parse_perbill(s: &str) -> Result<Perbill, ArgError> {
    let t = s.trim();
    let bad = || ArgError::BadFraction(s.to_string());
    let parts = if let Some(p) = t.strip_suffix('%') {
        // Percent with up to 7 decimals = parts per billion.
        parse_scaled(p, 7).ok_or_else(bad)?
    } else if let Some((n, d)) = t.split_once('/') {
        let n: u128 = n.trim().parse().map_err(|_| bad())?;
        let d: u128 = d.trim().parse().map_err(|_| bad())?;
        if d == 0 || n > d {
            return Err(bad());
        }
        return Ok(Perbill::from_rational(n, d));
    } else {
        parse_scaled(t, 9).ok_or_else(bad)?
    };
    if parts > u128::from(Perbill::ACCURACY) {
        return Err(bad());
    }
    Ok(Perbill::from_parts(parts as u32))
}

/// A loss as the chain stores it: fixed point × 10⁶ (`2.75` → 2 750 000).
pub fn parse_loss(s: &str) -> Result<u64, ArgError> {
    parse_scaled(s, 6)
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| ArgError::BadDecimal(s.to_string()))
}

/// A libp2p peer id (base58 or `0x` hex) as the bytes stored on chain.
pub fn parse_peer_id(s: &str) -> Result<Vec<u8>, ArgError> {
    Ok(weft_rpc_api::protocol::parse_peer_id(s)?)
}

/// A multiaddr as the text bytes stored on chain (checked for shape, not resolved).
pub fn parse_multiaddr(s: &str) -> Result<Vec<u8>, ArgError> {
    let t = s.trim();
    let ok = t.starts_with('/')
        && t.len() > 1
        && t.len() <= weft_runtime::staking::MAX_ADDR_LEN
        && !t.chars().any(char::is_whitespace);
    if ok {
        Ok(t.as_bytes().to_vec())
    } else {
        Err(ArgError::BadAddr(s.to_string()))
    }
}

/// What `weft key inspect` was given.
#[derive(Debug, Clone)]
pub enum KeyInput {
    /// Only public information: an address or a public key.
    Public(AccountId),
    /// A key pair from a secret URI.
    Secret {
        /// The key pair.
        pair: Box<Keypair>,
        /// The secret URI as typed.
        suri: String,
    },
}

impl KeyInput {
    /// The account either way.
    pub fn account_id(&self) -> AccountId {
        match self {
            KeyInput::Public(a) => *a,
            KeyInput::Secret { pair, .. } => pair.account_id(),
        }
    }
}

/// Reads `s` as an address / public key, else as a secret URI.
pub fn parse_key_input(s: &str) -> Result<KeyInput, ArgError> {
    let s = s.trim();
    if let Ok(account) = s.parse::<AccountId>() {
        return Ok(KeyInput::Public(account));
    }
    match Keypair::from_suri(s) {
        Ok(pair) => Ok(KeyInput::Secret {
            pair: Box::new(pair),
            suri: s.to_string(),
        }),
        Err(_) => Err(ArgError::NotAnAccount(s.to_string())),
    }
}

/// An account given as an address or a secret URI (the URI's account).
pub fn parse_account(s: &str) -> Result<AccountId, ArgError> {
    parse_key_input(s).map(|k| k.account_id())
}

/// A signer: a secret URI. An address is refused with a message saying why.
pub fn parse_signer(s: &str) -> Result<Keypair, ArgError> {
    let s = s.trim();
    if s.parse::<AccountId>().is_ok() {
        return Err(ArgError::AddressNotSigner(s.to_string()));
    }
    Keypair::from_suri(s).map_err(|_| ArgError::BadSuri(s.to_string()))
}

/// A decimal WEFT amount (`1.5`) in plancks.
pub fn parse_weft(s: &str) -> Result<Balance, ArgError> {
    Ok(parse_amount(s.trim())?)
}

/// Which block `weft block` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockSelector {
    /// The best block.
    #[default]
    Best,
    /// The last finalized block.
    Finalized,
    /// The block at this height on the best chain.
    Number(BlockNumber),
    /// The block with this hash.
    Hash(Hash),
}

impl FromStr for BlockSelector {
    type Err = ArgError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let bad = || ArgError::BadBlock(s.to_string());
        match t.to_ascii_lowercase().as_str() {
            "best" | "latest" | "head" => return Ok(BlockSelector::Best),
            "finalized" | "final" => return Ok(BlockSelector::Finalized),
            _ => {}
        }
        if t.starts_with("0x") {
            return t
                .parse::<Hash>()
                .map(BlockSelector::Hash)
                .map_err(|_| bad());
        }
        let digits = t.strip_prefix('#').unwrap_or(t);
        if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
            return digits
                .parse::<BlockNumber>()
                .map(BlockSelector::Number)
                .map_err(|_| bad());
        }
        Err(bad())
    }
}

impl fmt::Display for BlockSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockSelector::Best => f.write_str("best"),
            BlockSelector::Finalized => f.write_str("finalized"),
            BlockSelector::Number(n) => write!(f, "#{n}"),
            BlockSelector::Hash(h) => write!(f, "{h}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const ALICE: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";

    #[test]
    fn accounts_from_address_or_suri() {
        let alice = Keypair::from_suri("//Alice").unwrap().account_id();
        assert_eq!(parse_account(ALICE).unwrap(), alice);
        assert_eq!(parse_account("//Alice").unwrap(), alice);
        assert_eq!(parse_account(&format!(" {ALICE} ")).unwrap(), alice);
        let hex = format!("0x{}", hex::encode(alice.0));
        assert_eq!(parse_account(&hex).unwrap(), alice);
        assert!(matches!(
            parse_key_input(&hex).unwrap(),
            KeyInput::Public(a) if a == alice
        ));
        assert!(matches!(
            parse_key_input("//Alice").unwrap(),
            KeyInput::Secret { ref suri, .. } if suri == "//Alice"
        ));
        let bob = Keypair::from_suri("//Bob").unwrap().account_id();
        assert_ne!(parse_account("//Bob").unwrap(), alice);
        assert_eq!(parse_account("//Bob").unwrap(), bob);
        assert!(matches!(
            parse_account("not an account !!"),
            Err(ArgError::NotAnAccount(_))
        ));
        // A mistyped address (bad checksum) is not silently read as something else.
        let mut typo = ALICE.to_string();
        typo.replace_range(5..6, "X");
        assert!(parse_account(&typo).is_err());
    }

    #[test]
    fn mnemonics_are_suris() {
        let (pair, phrase) = Keypair::generate();
        assert_eq!(parse_account(&phrase).unwrap(), pair.account_id());
        assert_eq!(
            parse_signer(&phrase).unwrap().account_id(),
            pair.account_id()
        );
    }

    #[test]
    fn signers_need_secrets() {
        assert!(parse_signer("//Alice").is_ok());
        assert!(matches!(
            parse_signer(ALICE),
            Err(ArgError::AddressNotSigner(_))
        ));
        assert!(matches!(
            parse_signer("hello world !!"),
            Err(ArgError::BadSuri(_))
        ));
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_weft("1.5").unwrap(), 1_500_000_000_000);
        assert!(parse_weft("-1").is_err());
        assert!(parse_weft("abc").is_err());
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_perbill("10%").unwrap(), Perbill::from_percent(10));
        assert_eq!(parse_perbill("100%").unwrap(), Perbill::ONE);
        assert_eq!(parse_perbill("0.25").unwrap(), Perbill::from_percent(25));
        assert_eq!(parse_perbill("1").unwrap(), Perbill::ONE);
        assert_eq!(
            parse_perbill("33.5%").unwrap(),
            Perbill::from_parts(335_000_000)
        );
        assert_eq!(parse_perbill("1/3").unwrap(), Perbill::from_rational(1, 3));
        assert_eq!(
            parse_perbill("0.000000001").unwrap(),
            Perbill::from_parts(1)
        );
        for bad in [
            "",
            "%",
            "101%",
            "1.5",
            "2/1",
            "1/0",
            "-1",
            "abc",
            "0.0000000001",
        ] {
            assert!(parse_perbill(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn losses() {
        assert_eq!(parse_loss("2.75").unwrap(), 2_750_000);
        assert_eq!(parse_loss("3").unwrap(), 3_000_000);
        assert_eq!(parse_loss(".5").unwrap(), 500_000);
        for bad in ["", ".", "-1", "1.0000001", "x"] {
            assert!(parse_loss(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn bls_keys_register() {
        // Derivation itself is tested in weft_bls::derive; the key registers: its proof of
        // possession verifies under the runtime's check.
        let sk = bls_secret("//Alice", None).unwrap();
        let a = sk.public_key().to_bytes();
        let pop = sk.proof_of_possession().unwrap().to_bytes();
        assert!(weft_runtime::bls::check_registration(&a, &pop).is_ok());
        assert!(bls_secret("//Alice", Some("")).is_err());
    }

    #[test]
    fn peers_and_addrs() {
        let peer = [&[0x00u8, 0x24, 0x08, 0x01, 0x12, 0x20][..], &[9u8; 32][..]].concat();
        let text = weft_rpc_api::protocol::peer_id_to_string(&peer);
        assert_eq!(parse_peer_id(&text).unwrap(), peer);
        assert!(parse_peer_id("hello").is_err());
        assert_eq!(
            parse_multiaddr("/ip4/127.0.0.1/tcp/4001").unwrap(),
            b"/ip4/127.0.0.1/tcp/4001".to_vec()
        );
        for bad in [
            "",
            "/",
            "ip4/1.2.3.4",
            "/ip4/1 2",
            &format!("/{}", "a".repeat(300)),
        ] {
            assert!(parse_multiaddr(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn block_selectors() {
        assert_eq!(
            "best".parse::<BlockSelector>().unwrap(),
            BlockSelector::Best
        );
        assert_eq!(
            "Best".parse::<BlockSelector>().unwrap(),
            BlockSelector::Best
        );
        assert_eq!(
            "finalized".parse::<BlockSelector>().unwrap(),
            BlockSelector::Finalized
        );
        assert_eq!(
            "0".parse::<BlockSelector>().unwrap(),
            BlockSelector::Number(0)
        );
        assert_eq!(
            "#42".parse::<BlockSelector>().unwrap(),
            BlockSelector::Number(42)
        );
        let h = weft_primitives::blake3_256(b"x");
        assert_eq!(
            h.to_hex().parse::<BlockSelector>().unwrap(),
            BlockSelector::Hash(h)
        );
        for bad in [
            "",
            "-1",
            "0x12",
            "0xzz",
            "12a",
            "bestest",
            "99999999999999999999999",
        ] {
            assert!(bad.parse::<BlockSelector>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(BlockSelector::Number(7).to_string(), "#7");
    }
}
