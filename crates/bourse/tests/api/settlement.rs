//! The settlement ledger (TRD-05..08, TRD-13, REL-07, REL-09, REL-15): deposits and
//! withdrawals through the gateway, trades settled from real events on the real orders stream
//! (from `available`: risk reserves for open orders, the ledger holds nothing — ADR 0023
//! slice 3b), reconciliation. Balances are read as traders read them, from risk, which follows
//! the ledger a stream hop behind; so the tests wait for the figure they expect.

use contracts::Side;
use contracts::events::{Event, OrderCompleted, TradeExecuted};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use service_kit::testing::eventually;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, Tokens, assert_problem, count, sent_as, spawn_app, spawn_app_with};

/// An exchange with an admin and two traders.
struct Ledger {
    app: TestApp,
    admin: Tokens,
    alice: Tokens,
    bob: Tokens,
    alice_id: Uuid,
    bob_id: Uuid,
}

async fn ledger(pool: PgPool) -> Ledger {
    ledger_on(spawn_app(pool).await).await
}

async fn ledger_on(app: TestApp) -> Ledger {
    let admin = app
        .signed_up_with_roles("treasury@example.com", &["admin"])
        .await;
    let alice = app.signed_up("alice@example.com").await;
    let bob = app.signed_up("bob@example.com").await;
    let (alice_id, bob_id) = (app.user_id(&alice).await, app.user_id(&bob).await);
    Ledger {
        app,
        admin,
        alice,
        bob,
        alice_id,
        bob_id,
    }
}

impl Ledger {
    async fn fund_with_key(&self, kind: &str, key: &str, body: &Value) -> Response {
        self.app
            .client
            .post(self.app.url(&format!("/v1/admin/{kind}")))
            .bearer_auth(&self.admin.access_token)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn deposit(&self, account: Uuid, asset: &str, amount: &str) {
        self.app.deposit(&self.admin, account, asset, amount).await;
    }

    /// `(asset, available, held)` of `who`, as `GET /v1/balances` shows them (once risk has
    /// loaded balances after its start).
    async fn balances(&self, who: &Tokens) -> Vec<(String, String, String)> {
        let body: Vec<Value> =
            service_kit::testing::eventually_some("risk to answer balances", || async {
                let response = self.app.get_authed("/v1/balances", &who.access_token).await;
                if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                    return None;
                }
                assert_eq!(response.status(), StatusCode::OK);
                Some(response.json().await.unwrap())
            })
            .await;
        body.iter()
            .map(|b| {
                (
                    b["asset"].as_str().unwrap().to_owned(),
                    b["available"].as_str().unwrap().to_owned(),
                    b["held"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Waits until `who` is shown `available` and `held` of `asset`: risk follows the ledger
    /// a stream hop behind.
    async fn shows(&self, who: &Tokens, asset: &str, available: &str, held: &str) {
        let expected = (asset.to_owned(), available.to_owned(), held.to_owned());
        let what = format!("{asset} to show {available} available and {held} held");
        eventually(&what, || async {
            self.balances(who).await.contains(&expected)
        })
        .await;
    }

    async fn reconcile(&self, who: &Tokens) -> Response {
        self.app
            .client
            .post(self.app.url("/v1/admin/reconciliation"))
            .bearer_auth(&who.access_token)
            .send()
            .await
            .unwrap()
    }

    /// Puts an event on this app's orders stream, as the orders relay would.
    async fn publish<E: Event>(&self, payload: &E) -> events::Envelope {
        let envelope = events::Envelope::of("orders", "test", 0, payload).unwrap();
        self.republish(&envelope).await;
        envelope
    }

    async fn republish(&self, envelope: &events::Envelope) {
        let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
        let mut redis = client.get_multiplexed_async_connection().await.unwrap();
        let _: String = events::envelope::xadd(
            &format!("{}.orders", self.app.redis_prefix),
            None,
            &envelope.id.to_string(),
            &envelope.event_type,
            &serde_json::to_string(envelope).unwrap(),
        )
        .query_async(&mut redis)
        .await
        .unwrap();
    }
}

#[sqlx::test(migrations = false)]
async fn a_deposit_credits_the_account_once_per_idempotency_key(pool: PgPool) {
    let l = ledger(pool).await;
    let body = json!({ "account_id": l.alice_id, "asset": "USD", "amount": "1000.5" });

    let first = l.fund_with_key("deposits", "deposit-1", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["amount"], "1000.50");
    assert_eq!(first["kind"], "deposit");

    // A retry replays the first answer and moves nothing.
    let retry = l.fund_with_key("deposits", "deposit-1", &body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    // The same key for another amount is refused.
    let other = json!({ "account_id": l.alice_id, "asset": "USD", "amount": "5" });
    assert_problem(
        l.fund_with_key("deposits", "deposit-1", &other).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;

    l.shows(&l.alice, "USD", "1000.50", "0.00").await;
    // Bob sees his own balances only: none.
    assert!(l.balances(&l.bob).await.is_empty());
}

#[sqlx::test(migrations = false)]
async fn bad_funding_requests_are_refused_and_change_nothing(pool: PgPool) {
    let l = ledger(pool).await;
    let alice = l.alice_id;
    let refused = [
        (
            json!({ "account_id": alice, "asset": "USD", "amount": "0.001" }),
            "amount",
        ),
        (
            json!({ "account_id": alice, "asset": "USD", "amount": "-5" }),
            "amount",
        ),
        (
            json!({ "account_id": alice, "asset": "USD", "amount": "0" }),
            "amount",
        ),
        (
            json!({ "account_id": alice, "asset": "USD", "amount": "99999999999999999999" }),
            "amount",
        ),
        (
            json!({ "account_id": alice, "asset": "USD", "amount": 5 }),
            "",
        ),
        (
            json!({ "account_id": alice, "asset": "DOGE", "amount": "5" }),
            "asset",
        ),
        (
            json!({ "account_id": Uuid::nil(), "asset": "USD", "amount": "5" }),
            "account_id",
        ),
        (
            json!({ "account_id": alice, "asset": "USD", "amount": "5", "memo": "x" }),
            "",
        ),
    ];
    for (body, field) in refused {
        let response = l
            .fund_with_key("deposits", &Uuid::now_v7().to_string(), &body)
            .await;
        let problem = response.json::<Value>().await.unwrap();
        assert_eq!(problem["status"], 422, "{body}: {problem}");
        if !field.is_empty() {
            assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
        }
    }
    let valid = json!({ "account_id": alice, "asset": "USD", "amount": "5" });
    // No key: 400. A trader is not an admin: 403.
    let no_key = l
        .app
        .client
        .post(l.app.url("/v1/admin/deposits"))
        .bearer_auth(&l.admin.access_token)
        .json(&valid)
        .send()
        .await
        .unwrap();
    assert_problem(no_key, StatusCode::BAD_REQUEST, "idempotency_key_missing").await;
    let by_trader = l
        .app
        .client
        .post(l.app.url("/v1/admin/deposits"))
        .bearer_auth(&l.alice.access_token)
        .header("idempotency-key", "mine")
        .json(&valid)
        .send()
        .await
        .unwrap();
    assert_eq!(by_trader.status(), StatusCode::FORBIDDEN);

    assert!(l.balances(&l.alice).await.is_empty());
    assert_eq!(
        count(&l.app.db, "SELECT count(*) FROM settlement.transfers").await,
        0
    );
}

#[sqlx::test(migrations = false)]
async fn a_withdrawal_beyond_the_available_balance_is_refused_the_same_way_every_time(
    pool: PgPool,
) {
    let l = ledger(pool).await;
    l.deposit(l.alice_id, "USD", "100").await;
    let too_much = json!({ "account_id": l.alice_id, "asset": "USD", "amount": "150" });

    assert_problem(
        l.fund_with_key("withdrawals", "w-1", &too_much).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "insufficient_funds",
    )
    .await;
    // The replay is the first answer byte for byte (its request id included).
    let replay = l.fund_with_key("withdrawals", "w-1", &too_much).await;
    assert_eq!(replay.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(
        replay.json::<Value>().await.unwrap()["code"],
        "insufficient_funds"
    );

    // An asset the account never held is no balance at all, not a fault (found by
    // schemathesis: it was a 500).
    let never_held = json!({ "account_id": l.alice_id, "asset": "ETH", "amount": "1" });
    assert_problem(
        l.fund_with_key("withdrawals", "w-eth", &never_held).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "insufficient_funds",
    )
    .await;

    let fine = json!({ "account_id": l.alice_id, "asset": "USD", "amount": "40" });
    assert_eq!(
        l.fund_with_key("withdrawals", "w-2", &fine).await.status(),
        StatusCode::CREATED
    );
    l.shows(&l.alice, "USD", "60.00", "0.00").await;
    // Who moved the money is on record (SEC-16).
    let by_admin = count(
        &l.app.db,
        "SELECT count(*) FROM settlement.transfers WHERE created_by IS NOT NULL",
    )
    .await;
    assert_eq!(by_admin, 2);
}

#[sqlx::test(migrations = false)]
async fn racing_withdrawals_never_take_a_balance_below_zero(pool: PgPool) {
    // Room for all sixteen at once in the gateway's operators' lane (8 by default), so none is
    // shed with a 503 and every one takes part in the race.
    let l = ledger_on(spawn_app_with(pool, &[("BOURSE_GATEWAY_ADMIN_MAX_IN_FLIGHT", "16")]).await)
        .await;
    l.deposit(l.alice_id, "USD", "100").await;
    // Sixteen withdrawals of 30.00 race for 100.00: three fit, whatever the interleaving —
    // risk reserves each before settlement books it, and the ledger's constraint is behind it.
    let withdrawals = (0..16).map(|i| {
        let body = json!({ "account_id": l.alice_id, "asset": "USD", "amount": "30" });
        let l = &l;
        async move {
            l.fund_with_key("withdrawals", &format!("race-{i}"), &body)
                .await
                .status()
        }
    });
    let withdrawn = futures_util::future::join_all(withdrawals).await;
    assert!(
        withdrawn
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::UNPROCESSABLE_ENTITY),
        "{withdrawn:?}"
    );
    let granted = withdrawn
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count() as i64;
    assert_eq!(granted, 3, "{withdrawn:?}");
    // What was granted is exactly what left the balance.
    let available: i64 = sqlx::query_scalar(
        "SELECT available FROM settlement.accounts WHERE owner_id = $1 AND asset = 'USD'",
    )
    .bind(l.alice_id)
    .fetch_one(&l.app.db)
    .await
    .unwrap();
    assert_eq!(available, 10_000 - 3_000 * granted);
    l.shows(&l.alice, "USD", "10.00", "0.00").await;
    let reconciled = l.reconcile(&l.admin).await;
    assert_eq!(reconciled.status(), StatusCode::OK);
    assert_eq!(reconciled.json::<Value>().await.unwrap()["ok"], true);
}

/// A ledger whose consumer dead-letters an event on its second failed delivery, soon.
async fn quick_to_dead_letter(pool: PgPool) -> Ledger {
    let app = spawn_app_with(
        pool,
        &[
            ("BOURSE_SETTLEMENT_CONSUMER_MAX_DELIVERIES", "2"),
            ("BOURSE_SETTLEMENT_CONSUMER_RETRY_AFTER_MS", "100"),
        ],
    )
    .await;
    ledger_on(app).await
}

/// What the orders service announces for one trade of BTC-USD.
fn trade_executed(
    trade: Uuid,
    (maker_order, maker): (Uuid, Uuid),
    (taker_order, taker): (Uuid, Uuid),
    taker_side: Side,
    price: i64,
    quantity: i64,
) -> TradeExecuted {
    TradeExecuted {
        trade_id: trade,
        symbol: "BTC-USD".to_owned(),
        base_asset: "BTC".to_owned(),
        quote_asset: "USD".to_owned(),
        price,
        quantity,
        maker_order_id: maker_order,
        taker_order_id: taker_order,
        maker_account_id: maker,
        taker_account_id: taker,
        taker_side,
    }
}

#[sqlx::test(migrations = false)]
async fn a_trade_settles_by_delivery_versus_payment_exactly_once_with_fees(pool: PgPool) {
    let l = ledger(pool).await;
    l.deposit(l.alice_id, "BTC", "1").await;
    l.deposit(l.bob_id, "USD", "40000").await;
    // Alice's sell of 1 BTC at 30,000 rests; Bob's buy of 0.4 BTC takes from it.
    let (sell, buy) = (Uuid::now_v7(), Uuid::now_v7());

    // The trade executes at the maker's price: 0.4 × 30,000 = 12,000.00. Bob took liquidity
    // (20 bps = 24.00); Alice made it (10 bps = 12.00).
    let trade = Uuid::now_v7();
    let executed = l
        .publish(&trade_executed(
            trade,
            (sell, l.alice_id),
            (buy, l.bob_id),
            Side::Buy,
            3_000_000,
            40_000_000,
        ))
        .await;
    // Bob's order is complete: nothing of it is the ledger's to release (risk reserved it).
    l.publish(&OrderCompleted {
        order_id: buy,
        account_id: l.bob_id,
        symbol: "BTC-USD".to_owned(),
    })
    .await;
    // Redelivered (a relay retry): no second effect.
    l.republish(&executed).await;

    let settled = l.app.first_event_of("settlement", "TradeSettled").await;
    // The deposits before it were announced, for the pre-trade stage (ADR 0023).
    let deposited = l.app.first_event_of("settlement", "FundsDeposited").await;
    assert_eq!(deposited["payload"]["account_id"], l.alice_id.to_string());
    assert_eq!(deposited["payload"]["asset"], "BTC");
    assert_eq!(deposited["payload"]["amount"], 100_000_000);
    assert_eq!(settled["payload"]["trade_id"], trade.to_string());
    assert_eq!(settled["payload"]["notional"], 1_200_000);
    assert_eq!(settled["causation_id"], executed.id.to_string());

    // Paid from available; nothing shown held, as the ledger holds nothing for open orders.
    l.shows(&l.bob, "USD", "27976.00", "0.00").await; // 40,000 − 12,000 − 24 fee
    l.shows(&l.bob, "BTC", "0.40000000", "0.00000000").await;
    l.shows(&l.alice, "USD", "11988.00", "0.00").await; // 12,000 − 12 fee
    l.shows(&l.alice, "BTC", "0.60000000", "0.00000000").await;
    assert_eq!(
        count(&l.app.db, "SELECT count(*) FROM settlement.settled_trades").await,
        1
    );
    // The fee account holds both fees; every check of the books passes.
    assert_eq!(
        count(
            &l.app.db,
            "SELECT available FROM settlement.accounts
              WHERE owner_id = '00000000-0000-0000-0000-000000000001' AND asset = 'USD'"
        )
        .await,
        3_600
    );
    let report: Value = l.reconcile(&l.admin).await.json().await.unwrap();
    assert_eq!(report["ok"], true, "{report}");
}

#[sqlx::test(migrations = false)]
async fn a_trade_that_cannot_settle_is_dead_lettered_and_announced(pool: PgPool) {
    let l = quick_to_dead_letter(pool).await;
    // A trade in an asset the ledger does not know: every delivery fails.
    let mut doge = trade_executed(
        Uuid::now_v7(),
        (Uuid::now_v7(), l.alice_id),
        (Uuid::now_v7(), l.bob_id),
        Side::Buy,
        10,
        100,
    );
    doge.symbol = "DOGE-USD".to_owned();
    doge.base_asset = "DOGE".to_owned();
    let poison = l.publish(&doge).await;

    let (event_type, notice) = l.app.first_event("ops").await;
    assert_eq!(event_type, "EventDeadLettered");
    assert_eq!(notice["payload"]["event_id"], poison.id.to_string());
    assert_eq!(notice["payload"]["group"], "settlement");
    let (redis, keys) = l.app.redis().await;
    let letters = events::dlq::list(&redis, &keys, "orders").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, poison.id.to_string());
    // And operators are alerted (ALR-07): a settlement failure is a dead-lettered trade.
    let alert = l.app.alert_of(&l.admin, "EventDeadLettered").await;
    assert_eq!(alert["scope"], "orders/settlement");
    assert!(
        alert["summary"]
            .as_str()
            .unwrap()
            .contains(&poison.id.to_string())
    );
    // Nothing of it reached the books.
    assert_eq!(
        count(
            &l.app.db,
            "SELECT count(*) FROM settlement.transfers WHERE kind = 'trade'"
        )
        .await,
        0
    );
}

/// A version of an event settlement does not know is refused, not guessed at: dead-lettered
/// (to be replayed once settlement reads it), with nothing written — and the consumer goes
/// on with the next event.
#[sqlx::test(migrations = false)]
async fn an_event_version_settlement_does_not_read_is_dead_lettered_not_guessed_at(pool: PgPool) {
    let l = quick_to_dead_letter(pool).await;
    l.deposit(l.alice_id, "BTC", "1").await;
    l.deposit(l.bob_id, "USD", "1000").await;
    let trade = |id| {
        trade_executed(
            id,
            (Uuid::now_v7(), l.alice_id),
            (Uuid::now_v7(), l.bob_id),
            Side::Buy,
            3_000_000,
            1_000_000,
        )
    };
    // A trade in a version 2 that this settlement has never heard of.
    let mut future = events::Envelope::of("orders", "test", 0, &trade(Uuid::now_v7())).unwrap();
    future.version = TradeExecuted::VERSION + 1;
    l.republish(&future).await;

    let (event_type, notice) = l.app.first_event("ops").await;
    assert_eq!(event_type, "EventDeadLettered");
    assert_eq!(notice["payload"]["event_id"], future.id.to_string());
    assert!(
        notice["payload"]["reason"]
            .as_str()
            .unwrap()
            .contains("version 2 is not one this consumer reads"),
        "{notice}"
    );
    let settled = "SELECT count(*) FROM settlement.settled_trades";
    assert_eq!(
        count(&l.app.db, settled).await,
        0,
        "nothing of it was applied"
    );
    // The next event, in the version settlement reads, is applied as usual.
    l.publish(&trade(Uuid::now_v7())).await;
    eventually("the next trade to settle", || async {
        count(&l.app.db, settled).await == 1
    })
    .await;
}

#[sqlx::test(migrations = false)]
async fn reconciliation_proves_the_books_and_finds_a_planted_mismatch(pool: PgPool) {
    let l = ledger(pool).await;
    l.deposit(l.alice_id, "USD", "250").await;
    let auditor = l
        .app
        .signed_up_with_roles("auditor@example.com", &["auditor"])
        .await;

    let clean = l.reconcile(&auditor).await;
    assert_eq!(clean.status(), StatusCode::OK);
    let clean: Value = clean.json().await.unwrap();
    assert_eq!(clean["ok"], true, "{clean}");
    let names: Vec<&str> = clean["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "ledger_balanced",
            "balances_match_transfers",
            "trades_settled_once",
            "trades_match_orders"
        ]
    );
    assert_eq!(l.reconcile(&l.alice).await.status(), StatusCode::FORBIDDEN);

    // Someone edits a balance behind the ledger's back.
    sqlx::query("UPDATE settlement.accounts SET available = available + 1 WHERE owner_id = $1")
        .bind(l.alice_id)
        .execute(&l.app.db)
        .await
        .unwrap();
    let report: Value = l.reconcile(&l.admin).await.json().await.unwrap();
    assert_eq!(report["ok"], false);
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["ledger_balanced", "balances_match_transfers"]);
    assert!(
        report["checks"][1]["detail"]
            .as_str()
            .unwrap()
            .contains(&l.alice_id.to_string())
    );
    // And it is announced, for alerting.
    let event = l
        .app
        .first_event_of("settlement", "ReconciliationFailed")
        .await;
    assert_eq!(event["payload"]["checks"][0]["name"], "ledger_balanced");
    let alert = l.app.alert_of(&auditor, "ReconciliationFailed").await;
    assert_eq!(alert["severity"], "critical");
    assert!(
        alert["summary"]
            .as_str()
            .unwrap()
            .contains("ledger_balanced")
    );

    // A customer's balance taken below zero behind the ledger's back is refused by the table
    // itself (`accounts_non_negative`).
    let overdrawn = sqlx::query(
        "UPDATE settlement.accounts SET available = -1 WHERE owner_id = $1 AND asset = 'USD'",
    )
    .bind(l.alice_id)
    .execute(&l.app.db)
    .await;
    let refused = overdrawn.expect_err("a customer cannot go below zero");
    assert_eq!(
        refused
            .as_database_error()
            .and_then(|e| e.constraint().map(str::to_owned)),
        Some("accounts_non_negative".to_owned())
    );

    // Transfers cannot be edited to hide it.
    let edited = sqlx::query("UPDATE settlement.transfers SET amount = amount + 1")
        .execute(&l.app.db)
        .await;
    assert!(edited.is_err(), "transfers are immutable");
}

#[sqlx::test(migrations = false)]
async fn reconciliation_counts_every_executed_trade_against_what_settled(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[("BOURSE_SETTLEMENT_RECONCILIATION_GRACE_SECS", "0")],
    )
    .await;
    let l = ledger_on(app).await;
    l.app.btc_usd(&l.admin).await;
    l.deposit(l.alice_id, "BTC", "1").await;
    l.deposit(l.bob_id, "USD", "20000").await;
    let order = |side: &str| {
        json!({ "symbol": "BTC-USD", "side": side, "type": "limit", "price": "30000.00",
                "quantity": "0.5", "time_in_force": "gtc" })
    };
    l.app.placed_order(&l.alice, &order("sell")).await;
    l.app.placed_order(&l.bob, &order("buy")).await;
    eventually("the trade settled", || async {
        count(&l.app.db, "SELECT count(*) FROM settlement.settled_trades").await == 1
    })
    .await;
    let report: Value = l.reconcile(&l.admin).await.json().await.unwrap();
    assert_eq!(report["ok"], true, "{report}");

    // Orders' own record of the trade disagrees with what settled: found, from orders' side.
    sqlx::query("UPDATE orders.trades SET quantity = quantity * 2")
        .execute(&l.app.db)
        .await
        .unwrap();
    let report: Value = l.reconcile(&l.admin).await.json().await.unwrap();
    assert_eq!(report["ok"], false);
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "trades_match_orders")
        .unwrap();
    assert_eq!(check["ok"], false);
    assert_eq!(
        check["detail"],
        "BTC-USD: orders executed 1 trades (100000000 base units) but 1 settled (50000000 base units)"
    );
}

/// Every balance at once is for risk alone (ADR 0023): not with a token minted for another
/// service, not for a user, not without a token; and what risk gets includes the position of the newest event it holds.
#[sqlx::test(migrations = false)]
async fn the_balance_snapshot_is_for_risk_alone_and_names_its_position(pool: PgPool) {
    let l = ledger(pool).await;
    l.deposit(l.alice_id, "USD", "100").await;
    let snapshot = |token: Option<String>| {
        let request = l
            .app
            .client
            .get(format!("{}/internal/v1/balances", l.app.settlement));
        sent_as(request, token)
    };

    assert_eq!(snapshot(None).await.status(), StatusCode::UNAUTHORIZED);
    let user = Some(l.alice.access_token.clone());
    assert_eq!(snapshot(user).await.status(), StatusCode::UNAUTHORIZED);
    let for_risk = Some(l.app.service_token("settlement", "risk").await);
    assert_eq!(snapshot(for_risk).await.status(), StatusCode::UNAUTHORIZED);

    let risk = Some(l.app.service_token("risk", "settlement").await);
    let answer = snapshot(risk).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.unwrap();
    let newest: i64 = sqlx::query_scalar("SELECT max(position) FROM settlement.outbox")
        .fetch_one(&l.app.db)
        .await
        .unwrap();
    assert_eq!(
        body["position"], newest,
        "the deposit's event is the newest"
    );
    assert_eq!(
        body["balances"],
        json!([{ "account_id": l.alice_id, "asset": "USD", "balance": 10_000 }])
    );
}
