//! Assets: a code and a fixed number of decimals (its scale).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub code: String,
    /// Decimals of the minor unit: USD 2 (cents), BTC 8 (satoshis).
    pub scale: u32,
}

/// The largest scale an asset may have: 10^18 still fits an i64 unit count of 9.
pub const MAX_SCALE: u32 = 18;

impl Asset {
    pub fn new(code: &str, scale: u32) -> Self {
        Self {
            code: code.to_owned(),
            scale,
        }
    }

    /// The assets every Bourse has out of the box (docs/design.md §5).
    pub fn defaults() -> Vec<Asset> {
        vec![
            Asset::new("USD", 2),
            Asset::new("BTC", 8),
            Asset::new("ETH", 8),
        ]
    }

    /// The `BOURSE_ASSETS` list (`["USD:2", "BTC:8"]`) → assets; the [defaults](Self::defaults)
    /// when empty. Shared by every service that handles amounts, so they agree on scales.
    pub fn configured(entries: &[String]) -> Result<Vec<Asset>, String> {
        if entries.is_empty() {
            return Ok(Asset::defaults());
        }
        entries
            .iter()
            .map(|entry| {
                let (code, scale) = entry
                    .split_once(':')
                    .ok_or_else(|| format!("{entry:?} is not CODE:SCALE"))?;
                let scale: u32 = scale
                    .parse()
                    .map_err(|_| format!("{entry:?} has no valid scale"))?;
                if !Asset::is_valid_code(code) || scale > MAX_SCALE {
                    return Err(format!(
                        "{entry:?}: code must be 2-10 of A-Z0-9, scale at most 18"
                    ));
                }
                Ok(Asset::new(code, scale))
            })
            .collect()
    }

    /// Upper-case letters and digits, 2–10 characters.
    pub fn is_valid_code(code: &str) -> bool {
        (2..=10).contains(&code.len())
            && code
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    }
}
