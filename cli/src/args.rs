//! Parsing of user-typed arguments: accounts given as an address or a secret URI, signers
//! (secret URIs only), key-inspection input, token amounts and block selectors.
//!
//! An argument that parses as an SS58 address or a `0x`-prefixed 32-byte public key is an
//! address; anything else is read as a secret URI (`//Alice`, a mnemonic with an optional
//! derivation path). The two forms cannot be confused except for `0x` + 64 hex digits, which
//! is read as a public key (use a mnemonic or a derivation path to name a raw seed).

use std::fmt;
use std::str::FromStr;
use weft_primitives::units::{parse_amount, AmountError};
use weft_primitives::{AccountId, Balance, BlockNumber, Hash, Keypair};

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
