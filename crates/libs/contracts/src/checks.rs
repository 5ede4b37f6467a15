//! The pre-trade check orders asks risk for before an order reaches its book (TRD-10,
//! ADR 0023): `POST /internal/v1/checks/batch` with a [`CheckBatch`], answered with one
//! [`Verdict`] per order in the order sent ([`Verdicts`], ADR 0029). Both sides build and read
//! these same types, so the two services cannot drift apart on a field.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Side;

/// The order as orders is about to place it. Prices and quantities are integer minor units,
/// as in events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub order_id: Uuid,
    pub account_id: Uuid,
    pub symbol: String,
    pub side: Side,
    #[serde(rename = "type")]
    pub order_type: CheckedOrderType,
    /// The limit price, or a market order's protection price; quote minor units.
    pub price: i64,
    /// Base minor units.
    pub quantity: i64,
    pub base_scale: u32,
    pub quote_scale: u32,
    /// The instrument's assets: what the order's funds are reserved in. Optional while
    /// orders replicas that do not send them may still be running (ADR 0023).
    #[serde(default)]
    pub base_asset: Option<String>,
    #[serde(default)]
    pub quote_asset: Option<String>,
    /// Halfway between the book's best bid and ask, as orders last saw it: the collar's
    /// reference while the instrument has not traded.
    #[serde(default)]
    pub mid: Option<i64>,
}

impl CheckRequest {
    /// The scale of one of the order's two assets.
    pub fn scale_of(&self, asset: &str) -> u32 {
        if self.base_asset.as_deref() == Some(asset) {
            self.base_scale
        } else {
            self.quote_scale
        }
    }
}

/// What kind of order is checked: a limit order is collared around the reference price; a
/// market order carries its protection price instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckedOrderType {
    Limit,
    Market,
}

/// `POST /internal/v1/checks/batch`: 1 to 128 orders, checked with risk's book locked once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckBatch {
    pub orders: Vec<CheckRequest>,
}

/// Which start of risk's process passed a check (ADR 0023, "A fence instead of the wait"):
/// every start takes the number after the last one's. Orders books a check only while no
/// later start has raised its fence, so a crashed process's checks cannot reach the book once
/// its successor counts from its mark. 0 is a risk from before the numbers: no fence shuts its
/// checks out, so a risk rolled back to such a release keeps trading, and a start after it
/// waits out the bound on checks instead.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct RiskStart(pub i64);

impl From<i64> for RiskStart {
    fn from(number: i64) -> Self {
        Self(number)
    }
}

impl RiskStart {
    /// A risk from before the numbers: nothing to put on the wire.
    pub fn is_unnumbered(&self) -> bool {
        self.0 == 0
    }
}

/// One order's verdict in a batch: each order is decided as if it had been checked alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Verdict {
    /// May proceed; its funds are reserved by the start of risk that passed it, which orders
    /// carries to the book's fence.
    Passed {
        order_id: Uuid,
        #[serde(default, skip_serializing_if = "RiskStart::is_unnumbered")]
        start: RiskStart,
    },
    /// Refused for the breached limit `code` (orders answers 422).
    Refused {
        order_id: Uuid,
        code: Cow<'static, str>,
        detail: String,
    },
    /// Risk cannot decide yet, `funds_loading` (orders answers 503): the client's to retry.
    Undecided {
        order_id: Uuid,
        code: Cow<'static, str>,
        detail: String,
    },
}

impl Verdict {
    pub fn order_id(&self) -> Uuid {
        match self {
            Self::Passed { order_id, .. }
            | Self::Refused { order_id, .. }
            | Self::Undecided { order_id, .. } => *order_id,
        }
    }
}

/// Why risk refuses an order (422) or cannot decide on it yet (503). Risk can refuse only with
/// one of these, and orders passes every one of them on to the client: one list, where there
/// were two that had drifted (risk's `risk_unconfigured` and `invalid_order` reached clients as
/// orders' catch-all `risk_refused`). On the wire a verdict carries the code as a string, so a
/// newer risk's code still reaches an older orders replica, as `risk_refused`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskCode {
    /// No limits apply to the account (neither its own nor the defaults).
    RiskUnconfigured,
    KillSwitch,
    /// A price or quantity that is not positive.
    InvalidOrder,
    MaxOrderQuantity,
    MaxOrderNotional,
    PriceCollar,
    MaxOpenOrders,
    MaxOrdersPerSecond,
    MaxPosition,
    InsufficientFunds,
    /// What the order could cost does not fit the ledger's amounts.
    AmountOutOfRange,
    /// Undecided: risk's view of the account's funds is not complete yet (503, retry).
    FundsLoading,
}

impl RiskCode {
    /// Every code, for tests and documentation.
    pub const ALL: [Self; 12] = [
        Self::RiskUnconfigured,
        Self::KillSwitch,
        Self::InvalidOrder,
        Self::MaxOrderQuantity,
        Self::MaxOrderNotional,
        Self::PriceCollar,
        Self::MaxOpenOrders,
        Self::MaxOrdersPerSecond,
        Self::MaxPosition,
        Self::InsufficientFunds,
        Self::AmountOutOfRange,
        Self::FundsLoading,
    ];

    /// The code as problems and verdicts carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RiskUnconfigured => "risk_unconfigured",
            Self::KillSwitch => "kill_switch",
            Self::InvalidOrder => "invalid_order",
            Self::MaxOrderQuantity => "max_order_quantity",
            Self::MaxOrderNotional => "max_order_notional",
            Self::PriceCollar => "price_collar",
            Self::MaxOpenOrders => "max_open_orders",
            Self::MaxOrdersPerSecond => "max_orders_per_second",
            Self::MaxPosition => "max_position",
            Self::InsufficientFunds => "insufficient_funds",
            Self::AmountOutOfRange => "amount_out_of_range",
            Self::FundsLoading => "funds_loading",
        }
    }

    /// The code a verdict carries, if this release knows it (read as serde reads the enum, so
    /// no variant can be left out).
    pub fn parse(code: &str) -> Option<Self> {
        use serde::de::IntoDeserializer as _;
        let code: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            code.into_deserializer();
        Self::deserialize(code).ok()
    }
}

impl std::fmt::Display for RiskCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The batch's answer: one verdict per order, in the order sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdicts {
    pub verdicts: Vec<Verdict>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code reads back as itself, as serde writes it, and a code from a newer release
    /// is not mistaken for one of these.
    #[test]
    fn every_risk_code_reads_back_as_itself() {
        for code in RiskCode::ALL {
            assert_eq!(RiskCode::parse(code.as_str()), Some(code));
            assert_eq!(
                serde_json::to_value(code).ok(),
                Some(serde_json::Value::from(code.as_str()))
            );
        }
        let distinct: std::collections::HashSet<_> =
            RiskCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(distinct.len(), RiskCode::ALL.len());
        assert_eq!(RiskCode::parse("max_leverage"), None);
    }

    /// The whole body, field by field: orders and risk replicas of different releases run side
    /// by side during a rollout, so a renamed field here would refuse every check between them.
    #[test]
    fn a_check_and_its_verdicts_keep_their_wire_form() {
        let id = Uuid::nil();
        let check = CheckRequest {
            order_id: id,
            account_id: id,
            symbol: "BTC-USD".into(),
            side: Side::Buy,
            order_type: CheckedOrderType::Market,
            price: 3_000_000,
            quantity: 1,
            base_scale: 8,
            quote_scale: 2,
            base_asset: Some("BTC".into()),
            quote_asset: Some("USD".into()),
            mid: Some(2_999_950),
        };
        let batch = CheckBatch {
            orders: vec![check],
        };
        let nil = id.to_string();
        let wire = serde_json::json!({ "orders": [{
            "order_id": nil, "account_id": nil, "symbol": "BTC-USD", "side": "buy",
            "type": "market", "price": 3_000_000, "quantity": 1, "base_scale": 8,
            "quote_scale": 2, "base_asset": "BTC", "quote_asset": "USD", "mid": 2_999_950,
        }]});
        assert_eq!(serde_json::to_value(&batch).unwrap(), wire);
        assert_eq!(serde_json::from_value::<CheckBatch>(wire).unwrap(), batch);

        let verdicts = Verdicts {
            verdicts: vec![
                Verdict::Passed {
                    order_id: id,
                    start: RiskStart(3),
                },
                Verdict::Refused {
                    order_id: id,
                    code: "max_order_quantity".into(),
                    detail: "at most 1".into(),
                },
                Verdict::Undecided {
                    order_id: id,
                    code: "funds_loading".into(),
                    detail: "loading".into(),
                },
            ],
        };
        let wire = serde_json::json!({ "verdicts": [
            { "outcome": "passed", "order_id": nil, "start": 3 },
            { "outcome": "refused", "order_id": nil, "code": "max_order_quantity", "detail": "at most 1" },
            { "outcome": "undecided", "order_id": nil, "code": "funds_loading", "detail": "loading" },
        ]});
        assert_eq!(serde_json::to_value(&verdicts).unwrap(), wire);
        assert_eq!(serde_json::from_value::<Verdicts>(wire).unwrap(), verdicts);
    }

    #[test]
    fn a_field_risk_does_not_know_is_refused() {
        let mut wire = serde_json::json!({
            "order_id": Uuid::nil(), "account_id": Uuid::nil(), "symbol": "BTC-USD",
            "side": "sell", "type": "limit", "price": 1, "quantity": 1,
            "base_scale": 8, "quote_scale": 2,
        });
        wire["stop_price"] = serde_json::json!(1);
        assert!(serde_json::from_value::<CheckRequest>(wire).is_err());
    }

    /// A risk from before start numbers passes checks without one: start 0, which orders never
    /// fences off.
    #[test]
    fn an_older_risks_pass_reads_as_start_zero() {
        let verdict: Verdict = serde_json::from_value(serde_json::json!({
            "outcome": "passed", "order_id": Uuid::nil(),
        }))
        .unwrap();
        assert_eq!(
            verdict,
            Verdict::Passed {
                order_id: Uuid::nil(),
                start: RiskStart(0),
            }
        );
        assert_eq!(
            serde_json::to_value(&verdict).unwrap(),
            serde_json::json!({ "outcome": "passed", "order_id": Uuid::nil() })
        );
    }

    #[test]
    fn an_older_orders_replicas_check_without_assets_or_mid_is_read() {
        let check: CheckRequest = serde_json::from_value(serde_json::json!({
            "order_id": Uuid::nil(), "account_id": Uuid::nil(), "symbol": "BTC-USD",
            "side": "sell", "type": "limit", "price": 1, "quantity": 1,
            "base_scale": 8, "quote_scale": 2,
        }))
        .unwrap();
        assert_eq!(check.order_type, CheckedOrderType::Limit);
        assert_eq!((check.base_asset, check.mid), (None, None));
    }
}
