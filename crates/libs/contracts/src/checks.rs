//! The pre-trade check orders asks risk for before an order reaches its book (TRD-10,
//! ADR 0023): `POST /internal/v1/checks` with one [`CheckRequest`] (204, or the refusal as a
//! problem), and `POST /internal/v1/checks/batch` with a [`CheckBatch`], answered with one
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

/// One order's verdict in a batch, as the one-order call would have answered it alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Verdict {
    /// May proceed; its funds are reserved (204 alone).
    Passed { order_id: Uuid },
    /// Refused for the breached limit `code` (422 alone).
    Refused {
        order_id: Uuid,
        code: Cow<'static, str>,
        detail: String,
    },
    /// Risk cannot decide yet, `funds_loading` (503 alone): the client's to retry.
    Undecided {
        order_id: Uuid,
        code: Cow<'static, str>,
        detail: String,
    },
}

impl Verdict {
    pub fn order_id(&self) -> Uuid {
        match self {
            Self::Passed { order_id }
            | Self::Refused { order_id, .. }
            | Self::Undecided { order_id, .. } => *order_id,
        }
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
                Verdict::Passed { order_id: id },
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
            { "outcome": "passed", "order_id": nil },
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
