//! The event contracts (`contracts::events`) through the envelope, as a relay writes and a
//! consumer reads them: every type round-trips exactly, keeps the field names its readers
//! (and the WebSocket stream, which reads payloads by name) rely on, and an event of an
//! unknown version or of another type is refused, never guessed at.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contracts::Side;
use contracts::events::{
    BookUpdated, BreakerTransition, CircuitBreakerClosed, CircuitBreakerOpened, Event,
    EventDeadLettered, FailedCheck, FundsDeposited, FundsWithdrawn, KillSwitch,
    KillSwitchActivated, KillSwitchReleased, OrderAccepted, OrderCancelled, OrderCompleted,
    OrderRejected, ReconciliationFailed, RiskLimitBreached, ServiceHealth, ServiceRecovered,
    ServiceUnhealthy, StreamMarked, TradeExecuted, TradeSettled,
};
use events::Envelope;
use events::envelope::PayloadError;
use uuid::Uuid;

/// Through the envelope's JSON and back, as between a relay and a consumer; returns the
/// payload's field names.
fn round_trip<E: Event + PartialEq + std::fmt::Debug>(event: &E) -> Vec<String> {
    let envelope = Envelope::of("test", "aggregate", 1, event).unwrap();
    assert_eq!(envelope.event_type, E::TYPE);
    assert_eq!(envelope.version, E::VERSION);
    let wire = serde_json::to_string(&envelope).unwrap();
    let read: Envelope = serde_json::from_str(&wire).unwrap();
    assert_eq!(
        &read.decode::<E>().unwrap(),
        event,
        "{} round-trips",
        E::TYPE
    );
    let mut fields: Vec<String> = payload(&read)
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    fields.sort();
    fields
}

/// The envelope's payload as a JSON value, to look into.
fn payload(envelope: &Envelope) -> serde_json::Value {
    serde_json::from_str(envelope.payload.get()).unwrap()
}

/// Rewrites the envelope's payload, as a producer of another version might have written it.
fn edit_payload(envelope: &mut Envelope, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value = payload(envelope);
    edit(&mut value);
    envelope.payload = serde_json::value::to_raw_value(&value).unwrap();
}

fn sorted(fields: &[&str]) -> Vec<String> {
    let mut fields: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
    fields.sort();
    fields
}

fn accepted() -> OrderAccepted {
    OrderAccepted {
        order_id: Uuid::now_v7(),
        account_id: Uuid::now_v7(),
        symbol: "BTC-USD".to_owned(),
        base_asset: "BTC".to_owned(),
        quote_asset: "USD".to_owned(),
        side: Side::Sell,
        price: None,
        quantity: 1_000_000,
        protection_price: Some(2_700_000),
    }
}

#[test]
fn every_event_type_round_trips_with_the_field_names_its_readers_use() {
    assert_eq!(
        round_trip(&accepted()),
        sorted(&[
            "order_id",
            "account_id",
            "symbol",
            "base_asset",
            "quote_asset",
            "side",
            "price",
            "quantity",
            "protection_price"
        ])
    );
    let trade = TradeExecuted {
        trade_id: Uuid::now_v7(),
        symbol: "BTC-USD".to_owned(),
        base_asset: "BTC".to_owned(),
        quote_asset: "USD".to_owned(),
        price: 3_000_000,
        quantity: 1_000_000,
        maker_order_id: Uuid::now_v7(),
        taker_order_id: Uuid::now_v7(),
        maker_account_id: Uuid::now_v7(),
        taker_account_id: Uuid::now_v7(),
        taker_side: Side::Buy,
    };
    assert_eq!(
        round_trip(&trade),
        sorted(&[
            "trade_id",
            "symbol",
            "base_asset",
            "quote_asset",
            "price",
            "quantity",
            "maker_order_id",
            "taker_order_id",
            "maker_account_id",
            "taker_account_id",
            "taker_side"
        ])
    );
    assert_eq!(
        round_trip(&OrderCompleted {
            order_id: Uuid::now_v7(),
            account_id: Uuid::now_v7(),
            symbol: "BTC-USD".to_owned(),
        }),
        sorted(&["order_id", "account_id", "symbol"])
    );
    assert_eq!(
        round_trip(&OrderCancelled {
            order_id: Uuid::now_v7(),
            account_id: Uuid::now_v7(),
            symbol: "BTC-USD".to_owned(),
            base_asset: "BTC".to_owned(),
            remaining: 600_000,
            reason: "user".to_owned(),
        }),
        sorted(&[
            "order_id",
            "account_id",
            "symbol",
            "base_asset",
            "remaining",
            "reason"
        ])
    );
    for order_id in [Some(Uuid::now_v7()), None] {
        assert_eq!(
            round_trip(&OrderRejected {
                order_id,
                account_id: Uuid::now_v7(),
                symbol: "BTC-USD".to_owned(),
                reason: "insufficient_funds".to_owned(),
            }),
            sorted(&["order_id", "account_id", "symbol", "reason"])
        );
    }
    assert_eq!(
        round_trip(&TradeSettled {
            trade_id: Uuid::now_v7(),
            symbol: "BTC-USD".to_owned(),
            buyer_account_id: Uuid::now_v7(),
            seller_account_id: Uuid::now_v7(),
            base_asset: "BTC".to_owned(),
            quote_asset: "USD".to_owned(),
            price: 3_000_000,
            quantity: 1_000_000,
            notional: 30_000,
            buyer_fee: 60,
            seller_fee: 30,
            fee_asset: "USD".to_owned(),
        }),
        sorted(&[
            "trade_id",
            "symbol",
            "buyer_account_id",
            "seller_account_id",
            "base_asset",
            "quote_asset",
            "price",
            "quantity",
            "notional",
            "buyer_fee",
            "seller_fee",
            "fee_asset"
        ])
    );
    let funding_fields = sorted(&["transfer_id", "account_id", "asset", "amount"]);
    assert_eq!(
        round_trip(&FundsDeposited {
            transfer_id: Uuid::now_v7(),
            account_id: Uuid::now_v7(),
            asset: "USD".to_owned(),
            amount: 4_000_000,
        }),
        funding_fields
    );
    assert_eq!(
        round_trip(&FundsWithdrawn {
            transfer_id: Uuid::now_v7(),
            account_id: Uuid::now_v7(),
            asset: "BTC".to_owned(),
            amount: 1,
        }),
        funding_fields
    );
    assert_eq!(
        round_trip(&StreamMarked {
            mark_id: Uuid::now_v7(),
            requested_by: "risk".to_owned(),
        }),
        sorted(&["mark_id", "requested_by"])
    );
}

#[test]
fn every_risk_ops_and_market_event_type_round_trips() {
    let switch = KillSwitch {
        kill_switch_id: Uuid::now_v7(),
        scope: "symbol".to_owned(),
        target: Some("BTC-USD".to_owned()),
        reason: "runaway algo".to_owned(),
        by: Uuid::now_v7(),
    };
    let switch_fields = sorted(&["kill_switch_id", "scope", "target", "reason", "by"]);
    assert_eq!(
        round_trip(&KillSwitchActivated(switch.clone())),
        switch_fields
    );
    assert_eq!(round_trip(&KillSwitchReleased(switch)), switch_fields);
    round_trip(&RiskLimitBreached {
        account_id: Uuid::now_v7(),
        symbol: "BTC-USD".to_owned(),
        limit: "max_position".to_owned(),
        max_position: "1.00000000".to_owned(),
        net_quantity: "1.50000000".to_owned(),
        trade_id: Uuid::now_v7(),
    });
    let transition = BreakerTransition {
        service: "orders".to_owned(),
        upstream: "risk".to_owned(),
        from: "closed".to_owned(),
        to: "open".to_owned(),
    };
    let breaker_fields = sorted(&["service", "upstream", "from", "to"]);
    assert_eq!(
        round_trip(&CircuitBreakerOpened(transition.clone())),
        breaker_fields
    );
    assert_eq!(
        round_trip(&CircuitBreakerClosed(transition)),
        breaker_fields
    );
    round_trip(&EventDeadLettered {
        stream: "orders".to_owned(),
        group: "settlement".to_owned(),
        entry_id: "1-0".to_owned(),
        event_id: Some(Uuid::now_v7().to_string()),
        event_type: None,
        reason: "unknown asset DOGE".to_owned(),
        deliveries: 5,
    });
    round_trip(&ReconciliationFailed {
        checks: vec![FailedCheck {
            name: "ledger_balances".to_owned(),
            detail: "USD sums to 1".to_owned(),
        }],
    });
    let health = ServiceHealth {
        service: "risk".to_owned(),
        detail: "/health/ready answered 503".to_owned(),
    };
    round_trip(&ServiceUnhealthy(health.clone()));
    round_trip(&ServiceRecovered(health));
    assert_eq!(
        round_trip(&BookUpdated {
            symbol: "BTC-USD".to_owned(),
            sequence: 7,
            previous_sequence: 5,
            bids: vec![["30000.00".to_owned(), "0.50000000".to_owned()]],
            asks: Vec::new(),
        }),
        sorted(&["symbol", "sequence", "previous_sequence", "bids", "asks"])
    );
}

#[test]
fn sides_travel_as_buy_and_sell_and_nothing_else_reads_as_one() {
    let envelope = Envelope::of("test", "a", 1, &accepted()).unwrap();
    assert_eq!(payload(&envelope)["side"], "sell");
    // Once, anything that was not "buy" became a sell somewhere; now it is refused.
    for side in ["SELL", "short", ""] {
        let mut bad = envelope.clone();
        edit_payload(&mut bad, |p| p["side"] = side.into());
        assert!(
            matches!(
                bad.decode::<OrderAccepted>(),
                Err(PayloadError::Malformed { .. })
            ),
            "{side:?}"
        );
    }
}

#[test]
fn an_unknown_version_or_another_type_is_refused_not_guessed_at() {
    let mut envelope = Envelope::of("test", "a", 1, &accepted()).unwrap();
    envelope.version = OrderAccepted::VERSION + 1;
    let refused = envelope.decode::<OrderAccepted>().unwrap_err();
    assert!(
        matches!(
            refused,
            PayloadError::UnknownVersion {
                version: 2,
                known: 1,
                ..
            }
        ),
        "{refused}"
    );
    // Refused as permanent: the consumer dead-letters it instead of retrying for ever.
    assert!(!events::HandlerError::from(refused).is_transient());

    let envelope = Envelope::of("test", "a", 1, &accepted()).unwrap();
    assert!(matches!(
        envelope.decode::<OrderCompleted>(),
        Err(PayloadError::OtherType {
            expected: "OrderCompleted",
            ..
        })
    ));
}

#[test]
fn a_field_added_later_does_not_break_an_older_reader() {
    let mut envelope = Envelope::of("test", "a", 1, &accepted()).unwrap();
    edit_payload(&mut envelope, |p| p["client_order_id"] = "abc".into());
    assert_eq!(
        envelope.decode::<OrderAccepted>().unwrap().quantity,
        1_000_000
    );
    // And a newer reader of an event written before its field existed reads the default.
    let mut envelope = Envelope::of("test", "a", 1, &accepted()).unwrap();
    edit_payload(&mut envelope, |p| {
        p.as_object_mut().unwrap().remove("protection_price");
    });
    assert_eq!(
        envelope.decode::<OrderAccepted>().unwrap().protection_price,
        None
    );
}
