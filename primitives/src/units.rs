//! Token amounts: balances are integers of plancks; users read and type decimals.

use crate::Balance;

/// Decimal places of the WEFT token (1 WEFT = 10^12 plancks).
pub const TOKEN_DECIMALS: u32 = 12;
/// The token symbol.
pub const TOKEN_SYMBOL: &str = "WEFT";
/// Plancks in one WEFT.
pub const UNIT: Balance = 1_000_000_000_000;

/// Serde helper for balances as JSON decimal strings: they exceed the 2^53 that JSON numbers
/// carry exactly. Reads a string or a small JSON number. Use with
/// `#[serde(with = "weft_primitives::units::balance_string")]`.
pub mod balance_string {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the balance as a decimal string.
    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    /// Reads a decimal string (or a small JSON number).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            S(String),
            N(u64),
        }
        match Either::deserialize(d)? {
            Either::S(s) => s.parse().map_err(serde::de::Error::custom),
            Either::N(n) => Ok(u128::from(n)),
        }
    }
}

/// Why an amount string could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AmountError {
    /// Not a decimal number.
    #[error("not a decimal amount: {0:?}")]
    Malformed(String),
    /// More fractional digits than the token has.
    #[error("at most {TOKEN_DECIMALS} decimal places: {0:?}")]
    TooPrecise(String),
    /// Does not fit in a balance.
    #[error("amount too large: {0:?}")]
    Overflow(String),
}

/// Parses `"1.5"` (WEFT) into plancks.
pub fn parse_amount(s: &str) -> Result<Balance, AmountError> {
    let malformed = || AmountError::Malformed(s.to_string());
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(malformed());
    }
    if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return Err(malformed());
    }
    if frac.len() > TOKEN_DECIMALS as usize {
        return Err(AmountError::TooPrecise(s.to_string()));
    }
    let overflow = || AmountError::Overflow(s.to_string());
    let whole: Balance = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| overflow())?
    };
    let mut frac_padded = frac.to_string();
    while frac_padded.len() < TOKEN_DECIMALS as usize {
        frac_padded.push('0');
    }
    let frac: Balance = frac_padded.parse().map_err(|_| malformed())?;
    whole
        .checked_mul(UNIT)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(overflow)
}

/// Formats plancks as WEFT with trailing zeros trimmed: `1500000000000` → `"1.5"`.
pub fn format_amount(amount: Balance) -> String {
    let whole = amount / UNIT;
    let frac = amount % UNIT;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0width$}", width = TOKEN_DECIMALS as usize);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        assert_eq!(parse_amount("1.5"), Ok(1_500_000_000_000));
        assert_eq!(parse_amount("0.000000000001"), Ok(1));
        assert_eq!(parse_amount("7"), Ok(7 * UNIT));
        assert!(matches!(
            parse_amount("1.0000000000001"),
            Err(AmountError::TooPrecise(_))
        ));
        assert!(matches!(parse_amount("-1"), Err(AmountError::Malformed(_))));
        assert!(matches!(parse_amount("."), Err(AmountError::Malformed(_))));
        assert!(matches!(
            parse_amount("1e5"),
            Err(AmountError::Malformed(_))
        ));
        assert!(matches!(
            parse_amount("999999999999999999999999999999999"),
            Err(AmountError::Overflow(_))
        ));
        assert_eq!(format_amount(1_500_000_000_000), "1.5");
        assert_eq!(format_amount(3 * UNIT), "3");
        assert_eq!(format_amount(1), "0.000000000001");
    }
}
