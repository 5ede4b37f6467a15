//! Exact decimal amounts.
//!
//! Money is integers (docs/design.md §1): an amount is an `i64` count of an asset's minor units, and
//! the API speaks decimal strings. Parsing is strict — plain digits with at most one `.` and no
//! sign, exponent, spaces or leading/trailing dot — and refuses anything that is not exactly
//! representable at the scale (`0.001` USD) or does not fit (`1e400`, 20 digits). Nothing is
//! ever rounded.

use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("must be a decimal number such as \"12.34\"")]
    Malformed,
    #[error("must not be negative")]
    Negative,
    #[error("has more decimals than the asset allows ({0})")]
    TooPrecise(u32),
    #[error("is too large")]
    Overflow,
}

/// Longest accepted text: a 19-digit integer part, a dot, 18 decimals.
const MAX_LEN: usize = 40;

/// `"100.25"` at scale 2 → `10025`.
pub fn parse_units(text: &str, scale: u32) -> Result<i64, AmountError> {
    if text.len() > MAX_LEN {
        return Err(AmountError::Overflow);
    }
    if text.starts_with('-') {
        return Err(AmountError::Negative);
    }
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (text, ""),
    };
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits_only(whole)
        || !digits_only(fraction)
        || (text.contains('.') && fraction.is_empty())
    {
        return Err(AmountError::Malformed);
    }
    // Trailing zeros beyond the scale are exact ("1.500" USD is 150 cents).
    let significant = fraction.trim_end_matches('0');
    if significant.len() > scale as usize {
        return Err(AmountError::TooPrecise(scale));
    }
    let mut units: i64 = 0;
    for b in whole.bytes() {
        units = units
            .checked_mul(10)
            .and_then(|u| u.checked_add(i64::from(b - b'0')))
            .ok_or(AmountError::Overflow)?;
    }
    for i in 0..scale as usize {
        let digit = significant
            .as_bytes()
            .get(i)
            .map_or(0, |b| i64::from(b - b'0'));
        units = units
            .checked_mul(10)
            .and_then(|u| u.checked_add(digit))
            .ok_or(AmountError::Overflow)?;
    }
    Ok(units)
}

/// `10025` at scale 2 → `"100.25"`; always exactly `scale` decimals.
pub fn format_units(units: i64, scale: u32) -> String {
    let magnitude = units.unsigned_abs();
    let divisor = 10u64.pow(scale);
    let mut text = String::new();
    if units < 0 {
        text.push('-');
    }
    let _ = write!(text, "{}", magnitude / divisor);
    if scale > 0 {
        let _ = write!(
            text,
            ".{:0width$}",
            magnitude % divisor,
            width = scale as usize
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_values_parse() {
        assert_eq!(parse_units("100.25", 2), Ok(10025));
        assert_eq!(parse_units("100", 2), Ok(10000));
        assert_eq!(parse_units("0.00000001", 8), Ok(1));
        assert_eq!(parse_units("1.500", 2), Ok(150));
        assert_eq!(parse_units("007.5", 1), Ok(75));
        assert_eq!(parse_units("92233720368547758.07", 2), Ok(i64::MAX));
    }

    #[test]
    fn hostile_values_are_refused() {
        for (text, error) in [
            ("", AmountError::Malformed),
            (".5", AmountError::Malformed),
            ("5.", AmountError::Malformed),
            ("1e400", AmountError::Malformed),
            ("1E2", AmountError::Malformed),
            ("+5", AmountError::Malformed),
            (" 5", AmountError::Malformed),
            ("5 ", AmountError::Malformed),
            ("1.2.3", AmountError::Malformed),
            ("0x10", AmountError::Malformed),
            ("NaN", AmountError::Malformed),
            ("Infinity", AmountError::Malformed),
            ("١٢", AmountError::Malformed),
            ("-1", AmountError::Negative),
            ("-0.01", AmountError::Negative),
            ("0.001", AmountError::TooPrecise(2)),
            ("92233720368547758.08", AmountError::Overflow),
            ("99999999999999999999", AmountError::Overflow),
            ("1".repeat(41).as_str(), AmountError::Overflow),
        ] {
            assert_eq!(parse_units(text, 2), Err(error), "{text:?}");
        }
    }

    #[test]
    fn formatting_is_fixed_scale() {
        assert_eq!(format_units(10025, 2), "100.25");
        assert_eq!(format_units(5, 8), "0.00000005");
        assert_eq!(format_units(7, 0), "7");
        assert_eq!(format_units(-150, 2), "-1.50");
    }

    proptest! {
        #[test]
        fn format_then_parse_is_the_identity(units in 0i64..=i64::MAX, scale in 0u32..=8) {
            prop_assert_eq!(parse_units(&format_units(units, scale), scale), Ok(units));
        }
    }
}
