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

    /// The assets every Bourse has out of the box (DESIGN §5).
    pub fn defaults() -> Vec<Asset> {
        vec![
            Asset::new("USD", 2),
            Asset::new("BTC", 8),
            Asset::new("ETH", 8),
        ]
    }

    /// Upper-case letters and digits, 2–10 characters.
    pub fn is_valid_code(code: &str) -> bool {
        (2..=10).contains(&code.len())
            && code
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    }
}
