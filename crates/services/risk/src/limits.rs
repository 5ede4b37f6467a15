//! Risk limits: the configured defaults and per-account overrides (TRD-10).
//!
//! Quantities and notionals are decimal strings, applied in each instrument's own assets (a
//! `max_order_quantity` of "5" is 5 BTC on BTC-USD and 5 ETH on ETH-USD), compared exactly.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A non-negative decimal kept exactly: `units / 10^scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal {
    units: i64,
    scale: u32,
}

impl Decimal {
    pub const ZERO: Decimal = Decimal { units: 0, scale: 0 };

    /// `"12.5"` → 125 / 10^1. Plain digits, at most 18 of them (as the API document's
    /// pattern says): every such decimal fits, so a limit is never refused for its size.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > 19 || text.bytes().filter(u8::is_ascii_digit).count() > 18 {
            return Err("has more than 18 digits".to_owned());
        }
        let scale = text.split_once('.').map_or(0, |(_, f)| f.len());
        let scale = u32::try_from(scale).unwrap_or(u32::MAX);
        if scale > contracts::asset::MAX_SCALE {
            return Err("has more than 18 decimals".to_owned());
        }
        let units = contracts::parse_units(text, scale).map_err(|e| e.to_string())?;
        Ok(Self { units, scale })
    }

    /// Whether `minor` minor units at `minor_scale` exceed this decimal.
    pub fn exceeded_by(self, minor: i128, minor_scale: u32) -> bool {
        // minor / 10^ms > units / 10^s  ⇔  minor · 10^s > units · 10^ms (both ≤ 10^38).
        let left = minor.saturating_mul(10i128.pow(self.scale));
        let right = i128::from(self.units).saturating_mul(10i128.pow(minor_scale));
        left > right
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&contracts::format_units(self.units, self.scale))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_order_quantity: Decimal,
    pub max_order_notional: Decimal,
    pub max_open_orders: u32,
    pub max_orders_per_second: u32,
    pub max_position: Decimal,
    pub price_collar_bps: u32,
}

/// Limits as the API reads and writes them (docs/design.md §5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsBody {
    /// Largest order, in the instrument's base asset ("10").
    #[schema(pattern = "^[0-9]{1,18}(\\.[0-9]{1,17})?$", max_length = 19)]
    pub max_order_quantity: String,
    /// Largest price × quantity of one order, in its quote asset ("1000000").
    #[schema(pattern = "^[0-9]{1,18}(\\.[0-9]{1,17})?$", max_length = 19)]
    pub max_order_notional: String,
    #[schema(minimum = 0, maximum = 2147483647)]
    pub max_open_orders: u32,
    #[schema(minimum = 0, maximum = 2147483647)]
    pub max_orders_per_second: u32,
    /// Largest absolute position per instrument, open orders included, in its base asset.
    #[schema(pattern = "^[0-9]{1,18}(\\.[0-9]{1,17})?$", max_length = 19)]
    pub max_position: String,
    /// How far a limit price may stray from the reference price (last trade), in bps.
    #[schema(minimum = 1, maximum = 10000)]
    pub price_collar_bps: u32,
}

impl LimitsBody {
    pub fn validate(&self) -> Result<Limits, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut decimal = |field: &str, text: &str| match Decimal::parse(text) {
            Ok(value) => value,
            Err(message) => {
                errors.push((field.to_owned(), message));
                Decimal::ZERO
            }
        };
        let limits = Limits {
            max_order_quantity: decimal("max_order_quantity", &self.max_order_quantity),
            max_order_notional: decimal("max_order_notional", &self.max_order_notional),
            max_position: decimal("max_position", &self.max_position),
            max_open_orders: self.max_open_orders,
            max_orders_per_second: self.max_orders_per_second,
            price_collar_bps: self.price_collar_bps,
        };
        for (field, count) in [
            ("max_open_orders", self.max_open_orders),
            ("max_orders_per_second", self.max_orders_per_second),
        ] {
            // Stored as PostgreSQL integers: refused beyond, never clamped.
            if i32::try_from(count).is_err() {
                errors.push((field.to_owned(), "at most 2147483647".to_owned()));
            }
        }
        if !(1..=10_000).contains(&self.price_collar_bps) {
            errors.push((
                "price_collar_bps".to_owned(),
                "must be between 1 and 10000".to_owned(),
            ));
        }
        if errors.is_empty() {
            Ok(limits)
        } else {
            Err(errors)
        }
    }
}

/// A partial update (`PATCH`): the fields given replace the account's current ones, the
/// others stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsPatch {
    #[schema(pattern = "^[0-9]{1,18}(\\.[0-9]{1,17})?$", max_length = 19)]
    pub max_order_quantity: Option<String>,
    #[schema(pattern = "^[0-9]{1,18}(\\.[0-9]{1,17})?$", max_length = 19)]
    pub max_order_notional: Option<String>,
    #[schema(minimum = 0, maximum = 2147483647)]
    pub max_open_orders: Option<u32>,
    #[schema(minimum = 0, maximum = 2147483647)]
    pub max_orders_per_second: Option<u32>,
    #[schema(pattern = "^[0-9]{1,18}(\\.[0-9]{1,17})?$", max_length = 19)]
    pub max_position: Option<String>,
    #[schema(minimum = 1, maximum = 10000)]
    pub price_collar_bps: Option<u32>,
}

impl LimitsPatch {
    /// `current` with this patch's fields in place of its own.
    pub fn applied_to(&self, current: &LimitsBody) -> LimitsBody {
        LimitsBody {
            max_order_quantity: self
                .max_order_quantity
                .clone()
                .unwrap_or_else(|| current.max_order_quantity.clone()),
            max_order_notional: self
                .max_order_notional
                .clone()
                .unwrap_or_else(|| current.max_order_notional.clone()),
            max_open_orders: self.max_open_orders.unwrap_or(current.max_open_orders),
            max_orders_per_second: self
                .max_orders_per_second
                .unwrap_or(current.max_orders_per_second),
            max_position: self
                .max_position
                .clone()
                .unwrap_or_else(|| current.max_position.clone()),
            price_collar_bps: self.price_collar_bps.unwrap_or(current.price_collar_bps),
        }
    }
}

impl From<Limits> for LimitsBody {
    fn from(limits: Limits) -> Self {
        Self {
            max_order_quantity: limits.max_order_quantity.to_string(),
            max_order_notional: limits.max_order_notional.to_string(),
            max_open_orders: limits.max_open_orders,
            max_orders_per_second: limits.max_orders_per_second,
            max_position: limits.max_position.to_string(),
            price_collar_bps: limits.price_collar_bps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_compare_exactly_across_scales() {
        let five = Decimal::parse("5").unwrap();
        assert!(
            !five.exceeded_by(500_000_000, 8),
            "5.00000000 is not above 5"
        );
        assert!(five.exceeded_by(500_000_001, 8));
        let small = Decimal::parse("0.0001").unwrap();
        assert!(small.exceeded_by(2, 2), "0.02 > 0.0001");
        assert!(Decimal::parse("-1").is_err());
        assert!(Decimal::parse("1e3").is_err());
        assert_eq!(Decimal::parse("12.50").unwrap().to_string(), "12.50");
    }
}
