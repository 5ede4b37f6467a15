//! Orders are funded before they match (TRD-07, TRD-10 buying power, REL-05): risk reserves
//! what each could cost out of the balance it follows from settlement's ledger, which posts the
//! trades (ADR 0023). Through the gateway, orders, risk, settlement and both streams, all real.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use service_kit::testing::eventually;
use sqlx::PgPool;

use std::collections::BTreeMap;

use bourse::Target;

use crate::helpers::{
    Figures, FundsView, TestApp, Tokens, assert_problem, count, risk_funds, sent_as, spawn_app,
    spawn_app_with, spawn_app_without,
};

/// BTC-USD (tick 0.01, lot 0.0001), an admin and two traders with nothing yet.
struct Exchange {
    app: TestApp,
    admin: Tokens,
    alice: Tokens,
    bob: Tokens,
}

async fn exchange_on(app: TestApp) -> Exchange {
    let admin = app
        .signed_up_with_roles("treasury@example.com", &["admin"])
        .await;
    app.btc_usd(&admin).await;
    let alice = app.signed_up("alice@example.com").await;
    let bob = app.signed_up("bob@example.com").await;
    Exchange {
        app,
        admin,
        alice,
        bob,
    }
}

fn limit(side: &str, price: &str, quantity: &str) -> Value {
    json!({ "symbol": "BTC-USD", "side": side, "type": "limit", "price": price, "quantity": quantity, "time_in_force": "gtc" })
}

impl Exchange {
    async fn fund(&self, who: &Tokens, asset: &str, amount: &str) {
        let account = self.app.user_id(who).await;
        self.app.deposit(&self.admin, account, asset, amount).await;
    }

    async fn place(&self, who: &Tokens, order: &Value) -> Response {
        self.app.place_order(who, order).await
    }

    async fn placed(&self, who: &Tokens, order: &Value) -> Value {
        self.app.placed_order(who, order).await
    }

    /// (available, held) of `asset`; zeros for an asset never held.
    async fn balance(&self, who: &Tokens, asset: &str) -> (String, String) {
        let balances: Vec<Value> = self
            .app
            .get_authed("/v1/balances", &who.access_token)
            .await
            .json()
            .await
            .unwrap();
        balances
            .iter()
            .find(|b| b["asset"] == asset)
            .map(|b| {
                (
                    b["available"].as_str().unwrap().to_owned(),
                    b["held"].as_str().unwrap().to_owned(),
                )
            })
            .unwrap_or_default()
    }

    async fn settled_trades(&self) -> i64 {
        count(
            &self.app.db,
            "SELECT count(*) FROM settlement.settled_trades",
        )
        .await
    }
}

#[sqlx::test(migrations = false)]
async fn an_order_beyond_the_available_balance_is_refused_and_holds_nothing(pool: PgPool) {
    let x = exchange_on(spawn_app(pool).await).await;
    x.fund(&x.bob, "USD", "100").await;

    assert_problem(
        x.place(&x.bob, &limit("buy", "30000.00", "1")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "insufficient_funds",
    )
    .await;
    // Alice has no BTC to sell.
    assert_problem(
        x.place(&x.alice, &limit("sell", "30000.00", "0.1")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "insufficient_funds",
    )
    .await;
    assert_eq!(
        x.balance(&x.bob, "USD").await,
        ("100.00".to_owned(), "0.00".to_owned())
    );
    assert_eq!(
        count(&x.app.db, "SELECT count(*) FROM orders.orders").await,
        0
    );
}

#[sqlx::test(migrations = false)]
async fn deposit_trade_and_settlement_are_exact_to_the_minor_unit_including_fees(pool: PgPool) {
    let x = exchange_on(spawn_app(pool).await).await;
    x.fund(&x.alice, "BTC", "1").await;
    x.fund(&x.bob, "USD", "40000").await;

    let ask = x.placed(&x.alice, &limit("sell", "30000.00", "1")).await;
    assert_eq!(
        x.balance(&x.alice, "BTC").await,
        ("0.00000000".to_owned(), "1.00000000".to_owned()),
        "the resting sell holds its BTC"
    );
    // Bob pays up to 30,100 for 0.4 and trades at Alice's 30,000: 12,000.00, taker fee 24.00.
    let bid = x.placed(&x.bob, &limit("buy", "30100.00", "0.4")).await;
    assert_eq!(bid["status"], "filled");
    // The fill shows the fee settlement books: taker 20 bps of 12,000.00.
    assert_eq!(bid["fills"][0]["fee"], "24.00");
    assert_eq!(bid["fills"][0]["fee_asset"], "USD");
    let ask_now: Value = x
        .app
        .get_authed(
            &format!("/v1/orders/{}", ask["id"].as_str().unwrap()),
            &x.alice.access_token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ask_now["fills"][0]["liquidity"], "maker");
    assert_eq!(ask_now["fills"][0]["fee"], "12.00");

    eventually(
        "the trade to settle and Bob's hold to be released",
        || async { x.settled_trades().await == 1 && x.balance(&x.bob, "USD").await.1 == "0.00" },
    )
    .await;
    assert_eq!(
        x.balance(&x.bob, "USD").await,
        ("27976.00".to_owned(), "0.00".to_owned()),
        "40,000 − 12,000 − 24; the 40.00 of price improvement and the unused fee came back"
    );
    assert_eq!(x.balance(&x.bob, "BTC").await.0, "0.40000000");
    assert_eq!(
        x.balance(&x.alice, "USD").await,
        ("11988.00".to_owned(), "0.00".to_owned()),
        "12,000 − 12 maker fee"
    );
    assert_eq!(
        x.balance(&x.alice, "BTC").await,
        ("0.00000000".to_owned(), "0.60000000".to_owned())
    );

    // Alice cancels the rest; her 0.6 BTC comes back.
    let cancelled = x
        .app
        .client
        .delete(
            x.app
                .url(&format!("/v1/orders/{}", ask["id"].as_str().unwrap())),
        )
        .bearer_auth(&x.alice.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::OK);
    eventually("Alice's hold to be released", || async {
        x.balance(&x.alice, "BTC").await.1 == "0.00000000"
    })
    .await;
    assert_eq!(x.balance(&x.alice, "BTC").await.0, "0.60000000");
    let report = x.app.reconciliation(&x.admin).await;
    assert_eq!(report["ok"], true, "{report}");
}

#[sqlx::test(migrations = false)]
async fn a_market_buy_holds_at_its_protection_price_and_gets_the_rest_back(pool: PgPool) {
    let x = exchange_on(spawn_app(pool).await).await;
    x.fund(&x.alice, "BTC", "1").await;
    x.fund(&x.bob, "USD", "5000").await;
    // Nothing to price against yet: refused.
    let market_buy = json!({ "symbol": "BTC-USD", "side": "buy", "type": "market", "quantity": "0.1", "time_in_force": "ioc" });
    assert_problem(
        x.place(&x.bob, &market_buy).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no_reference_price",
    )
    .await;

    x.placed(&x.alice, &limit("sell", "30000.00", "1")).await;
    // Priced at most 10 % above the best ask: 0.1 × 33,000 + 20 bps = 3,306.60 held, then
    // 3,000.00 + 6.00 paid.
    let filled = x.placed(&x.bob, &market_buy).await;
    assert_eq!(filled["status"], "filled");
    assert_eq!(filled["average_fill_price"], "30000.00");
    eventually("Bob's market buy to settle", || async {
        x.balance(&x.bob, "USD").await == ("1994.00".to_owned(), "0.00".to_owned())
    })
    .await;

    // More than Bob could pay at the protection price: refused before it reaches the book.
    let too_big = json!({ "symbol": "BTC-USD", "side": "buy", "type": "market", "quantity": "0.9", "time_in_force": "ioc" });
    assert_problem(
        x.place(&x.bob, &too_big).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "insufficient_funds",
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn thirty_racing_orders_against_one_balance_never_overdraw(pool: PgPool) {
    let x = exchange_on(spawn_app(pool).await).await;
    x.fund(&x.bob, "USD", "100").await;
    // Each holds 0.01 × 1,000.00 + 20 bps = 10.02: nine fit in 100.00.
    let x = &x;
    let orders = (0..30).map(|_| async move {
        x.place(&x.bob, &limit("buy", "1000.00", "0.01"))
            .await
            .status()
    });
    let statuses = futures_util::future::join_all(orders).await;

    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNPROCESSABLE_ENTITY)
        .count();
    assert_eq!((created, refused), (9, 21), "{statuses:?}");
    assert_eq!(
        x.balance(&x.bob, "USD").await,
        ("9.82".to_owned(), "90.18".to_owned())
    );
    assert_eq!(
        count(
            &x.app.db,
            "SELECT count(*) FROM orders.orders WHERE status = 'open'"
        )
        .await,
        9
    );
}

#[sqlx::test(migrations = false)]
async fn without_settlements_balances_risk_refuses_orders_for_now_and_books_none(pool: PgPool) {
    // Settlement is not there (a closed port): risk cannot load the balances it reserves from.
    let nowhere = format!("http://127.0.0.1:{}", service_kit::testing::closed_port());
    let app = spawn_app_with(pool, &[("BOURSE_SETTLEMENT_URL", nowhere.as_str())]).await;
    let x = exchange_on(app).await;

    // Not the trader's fault, and not for long: 503 with Retry-After, risk's code passed on.
    let refused = x.place(&x.bob, &limit("buy", "1000.00", "0.01")).await;
    assert!(refused.headers().contains_key("retry-after"));
    let problem = assert_problem(refused, StatusCode::SERVICE_UNAVAILABLE, "funds_loading").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("not_loaded"),
        "{problem}"
    );
    // Never matched unfunded: no order exists.
    assert_eq!(
        count(&x.app.db, "SELECT count(*) FROM orders.orders").await,
        0
    );
}

/// The figures risk should show for `account`: each balance as settlement's ledger books it,
/// and out of it what risk should have committed for the account's open orders (`committed`,
/// minor units by asset; nothing where not named). The ledger itself holds nothing since ADR
/// 0023 slice 3b, so what is committed is the test's to know.
async fn ledger_funds(db: &PgPool, account: uuid::Uuid, committed: &[(&str, i64)]) -> FundsView {
    let rows: Vec<(String, i64, i16)> = sqlx::query_as(
        "SELECT a.asset, a.available, s.scale
           FROM settlement.accounts a JOIN settlement.assets s ON s.code = a.asset
          WHERE a.owner_id = $1 AND a.available <> 0",
    )
    .bind(account)
    .fetch_all(db)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(asset, available, scale)| {
            let format = |units| contracts::format_units(units, u32::try_from(scale).unwrap());
            let reserved = committed
                .iter()
                .find(|(a, _)| *a == asset)
                .map_or(0, |(_, units)| *units);
            let figures = Figures {
                balance: format(available),
                committed: format(reserved),
                free: format(available - reserved),
            };
            (asset, figures)
        })
        .collect()
}

/// Nothing committed: each asset's balance is all free.
fn all_free(balances: &[(&str, &str)]) -> FundsView {
    balances
        .iter()
        .map(|(asset, amount)| {
            let figures = Figures {
                balance: (*amount).to_owned(),
                committed: "0.00".to_owned(),
                free: (*amount).to_owned(),
            };
            ((*asset).to_owned(), figures)
        })
        .collect()
}

/// The admin `exchange_on` signed up, logged in again on a platform started anew.
async fn treasury(app: &TestApp) -> Tokens {
    app.logged_in_again("treasury@example.com").await
}

/// Waits until risk's view of `account` is `expected`.
async fn risk_sees(app: &TestApp, reader: &Tokens, account: uuid::Uuid, expected: &FundsView) {
    eventually(
        &format!("risk to see {expected:?} for {account}"),
        || async { risk_funds(app, reader, account).await.as_ref() == Some(expected) },
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn risk_follows_every_balance_settlement_books_through_deposits_trades_fees_and_withdrawals(
    pool: PgPool,
) {
    let x = exchange_on(spawn_app(pool).await).await;
    let (alice, bob) = (x.app.user_id(&x.alice).await, x.app.user_id(&x.bob).await);
    x.fund(&x.alice, "BTC", "1").await;
    x.fund(&x.bob, "USD", "40000").await;

    // Alice's ask is filled in two trades and rests with the rest; Bob's limit buy gets a
    // better price than its limit, his market buy is held at its protection price and gets
    // the difference back, and his low bid rests.
    x.placed(&x.alice, &limit("sell", "30000.00", "0.5")).await;
    x.placed(&x.bob, &limit("buy", "30100.00", "0.3")).await;
    let market_buy = json!({ "symbol": "BTC-USD", "side": "buy", "type": "market", "quantity": "0.1", "time_in_force": "ioc" });
    x.placed(&x.bob, &market_buy).await;
    x.placed(&x.bob, &limit("buy", "29000.00", "0.1")).await;
    eventually("both trades settled", || async {
        x.settled_trades().await == 2
    })
    .await;
    let withdrawal = x
        .app
        .client
        .post(x.app.url("/v1/admin/withdrawals"))
        .bearer_auth(&x.admin.access_token)
        .header("idempotency-key", uuid::Uuid::now_v7().to_string())
        .json(&json!({ "account_id": bob, "asset": "USD", "amount": "100.01" }))
        .send()
        .await
        .unwrap();
    assert_eq!(withdrawal.status(), StatusCode::CREATED);

    // Every balance, both fees, the withdrawal — and what risk reserved for the resting orders:
    // Alice's 0.1 BTC left of her ask, Bob's 0.1 at 29,000.00 and the highest fee (2,905.80).
    let resting = [(alice, [("BTC", 10_000_000)]), (bob, [("USD", 290_580)])];
    for (account, committed) in resting {
        let ledger = ledger_funds(&x.app.db, account, &committed).await;
        assert_eq!(
            ledger.len(),
            2,
            "{account} holds both assets after the trades"
        );
        risk_sees(&x.app, &x.admin, account, &ledger).await;
    }
    let bob_usd = &ledger_funds(&x.app.db, bob, &[]).await["USD"];
    assert_eq!(
        bob_usd.balance, "27875.99",
        "40,000 less 0.4 BTC at 30,000.00, the taker's 20 bps on it and the withdrawal"
    );

    // Risk officers and admins may look; a trader may not, not even at their own.
    let officer = x
        .app
        .signed_up_with_roles("officer@example.com", &["risk_officer"])
        .await;
    assert!(risk_funds(&x.app, &officer, alice).await.is_some());
    let own = x
        .app
        .get_authed(
            &format!("/v1/admin/risk-funds/{alice}"),
            &x.alice.access_token,
        )
        .await;
    assert_problem(own, StatusCode::FORBIDDEN, "forbidden").await;
    let malformed = x
        .app
        .get_authed("/v1/admin/risk-funds/not-a-uuid", &x.admin.access_token)
        .await;
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
}

impl Exchange {
    /// `POST /v1/admin/risk-reconciliation` as `who`.
    async fn reconcile_risk(&self, who: &Tokens) -> Response {
        self.app
            .client
            .post(self.app.url("/v1/admin/risk-reconciliation"))
            .bearer_auth(&who.access_token)
            .send()
            .await
            .unwrap()
    }
}

/// Risk funds orders from its own copy of the ledger's balances (ADR 0023); the copy is
/// compared with the ledger while the platform runs, and a balance edited behind the ledger's
/// back — which risk never hears of — is found, named and counted for the page.
#[sqlx::test(migrations = false)]
async fn risks_balances_are_reconciled_with_the_ledger_and_a_drift_is_found(pool: PgPool) {
    let x = exchange_on(spawn_app(pool).await).await;
    let alice = x.app.user_id(&x.alice).await;
    x.fund(&x.alice, "BTC", "1").await;
    x.fund(&x.bob, "USD", "40000").await;
    x.placed(&x.alice, &limit("sell", "30000.00", "0.5")).await;
    x.placed(&x.bob, &limit("buy", "30000.00", "0.2")).await;
    eventually("the trade settled", || async {
        x.settled_trades().await == 1
    })
    .await;

    // Both sides agree: every balance the trade and the fees touched, compared at a position
    // risk had reached (it waits for its feed to reach the snapshot's).
    let auditor = x
        .app
        .signed_up_with_roles("auditor@example.com", &["auditor"])
        .await;
    let clean = x.reconcile_risk(&auditor).await;
    assert_eq!(clean.status(), StatusCode::OK);
    let clean: Value = clean.json().await.unwrap();
    assert_eq!(clean["ok"], true, "{clean}");
    assert_eq!(clean["mismatches"], json!([]));
    assert_eq!(
        clean["balances_compared"], 4,
        "alice's and bob's BTC and USD: {clean}"
    );
    assert!(clean["risk_position"].as_i64() >= clean["ledger_position"].as_i64());
    let own = x.reconcile_risk(&x.alice).await;
    assert_problem(own, StatusCode::FORBIDDEN, "forbidden").await;

    // Someone adds a cent to Alice's USD behind the ledger's back: no transfer, no event.
    sqlx::query(
        "UPDATE settlement.accounts SET available = available + 1
          WHERE owner_id = $1 AND asset = 'USD'",
    )
    .bind(alice)
    .execute(&x.app.db)
    .await
    .unwrap();
    let ledger = &ledger_funds(&x.app.db, alice, &[]).await["USD"];
    // Settlement's own reconciliation finds it first, and its `ReconciliationFailed` becomes
    // the newest event of settlement's outbox — one that moves no balance. Risk's balances
    // still include its position (every event of the stream moves the feed's position), so
    // risk compares rather than waiting for an event that would never come.
    let settlements = x.app.reconciliation(&x.admin).await;
    assert_eq!(settlements["ok"], false, "{settlements}");
    let drifted: Value = x.reconcile_risk(&x.admin).await.json().await.unwrap();

    assert_eq!(drifted["ok"], false, "{drifted}");
    assert_eq!(
        drifted["mismatches"],
        json!([{
            "account_id": alice,
            "asset": "USD",
            "ledger": ledger.balance,
            "risk": "5994.00",
        }]),
        "0.2 BTC sold at 30,000.00 less the maker's 10 bps; the ledger a cent more"
    );
    assert_eq!(ledger.balance, "5994.01");
    let metrics = x.app.metrics().await;
    assert!(
        metrics.lines().any(|l| l == "risk_ledger_mismatches 1"),
        "the gauge the page watches: {}",
        metrics
            .lines()
            .filter(|l| l.starts_with("risk_ledger"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A restarted risk loads a new snapshot and must not count again what the snapshot already
/// holds, even when those events are still waiting in the stream for its consumer group.
#[sqlx::test(migrations = false)]
async fn a_restarted_risk_counts_what_its_snapshot_holds_once_and_what_follows_it(pool: PgPool) {
    let prefix = format!("test:{}", uuid::Uuid::now_v7());
    let same_broker = [("BOURSE_REDIS_KEY_PREFIX", prefix.as_str())];

    // The first run: risk follows a deposit.
    let first = exchange_on(spawn_app_with(pool.clone(), &same_broker).await).await;
    let alice = first.app.user_id(&first.alice).await;
    first.fund(&first.alice, "USD", "100").await;
    let expected = all_free(&[("USD", "100.00")]);
    risk_sees(&first.app, &first.admin, alice, &expected).await;
    first.app.stop().await;

    // Risk is away: a deposit is booked and published, and waits in the stream for risk.
    let without_risk = spawn_app_without(pool.clone(), &same_broker, &[Target::Risk]).await;
    let admin = treasury(&without_risk).await;
    without_risk.deposit(&admin, alice, "USD", "5").await;
    eventually("the deposit published", || async {
        count(
            &without_risk.db,
            "SELECT count(*) FROM settlement.outbox_unpublished",
        )
        .await
            == 0
    })
    .await;
    without_risk.stop().await;

    // Risk is back: its snapshot holds the deposit, which its group is then given again.
    let back = spawn_app_with(pool, &same_broker).await;
    let admin = treasury(&back).await;
    let expected = all_free(&[("USD", "105.00")]);
    risk_sees(&back, &admin, alice, &expected).await;
    eventually(
        "risk's group to have been given the waiting deposit",
        || async {
            count(
                &back.db,
                "SELECT count(*) FROM risk.inbox WHERE stream = 'settlement'",
            )
            .await
                == 2
        },
    )
    .await;
    assert_eq!(
        risk_funds(&back, &admin, alice).await,
        Some(expected.clone())
    );

    back.deposit(&admin, alice, "USD", "1").await;
    risk_sees(&back, &admin, alice, &all_free(&[("USD", "106.00")])).await;
}

/// ADR 0023 slice 2c: a restarted risk still commits what resting orders have reserved — the
/// rest of a partly filled bid, an ask untouched — as settlement still holds it. Memory alone
/// would start with nothing committed, every balance free, until those orders end.
#[sqlx::test(migrations = false)]
async fn a_restarted_risk_still_commits_what_resting_orders_reserved(pool: PgPool) {
    let prefix = format!("test:{}", uuid::Uuid::now_v7());
    let same_broker = [("BOURSE_REDIS_KEY_PREFIX", prefix.as_str())];
    let x = exchange_on(spawn_app_with(pool.clone(), &same_broker).await).await;
    let (alice, bob) = (x.app.user_id(&x.alice).await, x.app.user_id(&x.bob).await);
    x.fund(&x.alice, "USD", "1000").await;
    x.fund(&x.bob, "BTC", "1").await;
    x.placed(&x.alice, &limit("buy", "30000.00", "0.03")).await;
    x.placed(&x.bob, &limit("sell", "30000.00", "0.01")).await;
    x.placed(&x.bob, &limit("sell", "31000.00", "0.02")).await;
    eventually("the trade settled", || async {
        x.settled_trades().await == 1
    })
    .await;
    // Alice: 0.03 at 30,000.00 with the highest fee (901.80) less the fill, which paid the
    // maker's (601.50); Bob: the untouched ask's 0.02 BTC.
    let resting = [(alice, [("USD", 60_150)]), (bob, [("BTC", 2_000_000)])];
    for (account, committed) in resting {
        let expected = ledger_funds(&x.app.db, account, &committed).await;
        risk_sees(&x.app, &x.admin, account, &expected).await;
    }
    let alice_usd = ledger_funds(&x.app.db, alice, &resting[0].1).await["USD"].clone();
    x.app.stop().await;

    let back = spawn_app_with(pool, &same_broker).await;
    let admin = treasury(&back).await;
    for (account, committed) in resting {
        let expected = ledger_funds(&back.db, account, &committed).await;
        risk_sees(&back, &admin, account, &expected).await;
    }
    assert_eq!(
        risk_funds(&back, &admin, alice).await.unwrap()["USD"],
        alice_usd
    );
    // Each start asked orders for its mark, and decided once it had read it (ADR 0023).
    let marks: Vec<(String, bool)> = sqlx::query_as(
        "SELECT o.envelope::jsonb->'payload'->>'requested_by',
                EXISTS (SELECT 1 FROM risk.inbox i WHERE i.event_id = o.event_id)
           FROM orders.outbox o WHERE o.event_type = 'StreamMarked' ORDER BY o.position",
    )
    .fetch_all(&back.db)
    .await
    .unwrap();
    assert_eq!(
        marks,
        [("risk".to_owned(), true), ("risk".to_owned(), true)],
        "one mark per start, each read by risk's orders consumer"
    );
}

/// ADR 0023: a risk check is good for booking its order for a bounded time. An order whose
/// check began longer ago is not booked; its reservation goes back.
#[sqlx::test(migrations = false)]
async fn an_order_whose_risk_check_began_too_long_ago_is_not_booked(pool: PgPool) {
    let no_time = [("BOURSE_RISK_CHECK_VALID_FOR_MS", "0")];
    let x = exchange_on(spawn_app_with(pool, &no_time).await).await;
    let alice = x.app.user_id(&x.alice).await;
    x.fund(&x.alice, "USD", "1000").await;

    assert_problem(
        x.place(&x.alice, &limit("buy", "30000.00", "0.01")).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "check_expired",
    )
    .await;
    assert_eq!(
        count(&x.app.db, "SELECT count(*) FROM orders.orders").await,
        0
    );
    // Its reservation goes back (through the outbox, as for any order that never reached
    // the book); the ledger was never touched.
    let untouched = all_free(&[("USD", "1000.00")]);
    risk_sees(&x.app, &x.admin, alice, &untouched).await;
    assert_eq!(ledger_funds(&x.app.db, alice, &[]).await, untouched);
}

/// ADR 0023, "A fence instead of the wait": a restart after a crash shuts the previous
/// process's checks out of every book before it asks for its mark, so it decides on funds as
/// soon as it has read the mark, without waiting out the bound on checks. A process that
/// passed a check whose order it has not seen cannot hand over.
#[sqlx::test(migrations = false)]
async fn a_restart_after_a_crash_fences_off_the_previous_processes_checks_and_decides_at_once(
    pool: PgPool,
) {
    let prefix = format!("test:{}", uuid::Uuid::now_v7());
    let env = env_of_a_crash(&prefix);
    let alice = crashed_with_a_check_passed(&pool, &env).await;

    let back = spawn_app_with(pool, &env).await;
    let admin = treasury(&back).await;
    // `risk_funds` waits until funds decide: with an hour's bound, only the fence lets them.
    assert_eq!(
        risk_funds(&back, &admin, alice).await.unwrap()["USD"].committed,
        "0.00"
    );
    let tokens = back.logged_in_again("alice@example.com").await;
    back.placed_order(&tokens, &limit("buy", "1000.00", "0.01"))
        .await;
    // The second start's fence is up on every book: a check the first passed is refused
    // there (`orders` `ownership::a_matching_task_refuses_the_orders_an_earlier_start_of_risk_checked`).
    assert_eq!(count(&back.db, "SELECT number FROM risk.starts").await, 2);
    assert_eq!(
        count(&back.db, "SELECT min(risk_start) FROM orders.symbol_owners").await,
        2
    );
}

/// ADR 0023: while an orders replica of a release before the fence may still book, orders
/// refuses to raise it, and a restart waits out the checks its previous process answered —
/// orders books none older than the bound — before it asks for its mark, unless that process
/// handed over; until then its funds do not decide.
#[sqlx::test(migrations = false)]
async fn a_restart_waits_out_the_bound_while_an_orders_replica_cannot_fence(pool: PgPool) {
    let prefix = format!("test:{}", uuid::Uuid::now_v7());
    let env = env_of_a_crash(&prefix);
    let alice = crashed_with_a_check_passed(&pool, &env).await;
    let fence_before = count(&pool, FENCE).await;
    // An orders replica of an earlier release is live: it registers without the fence's column.
    sqlx::query(
        "INSERT INTO orders.replicas (id, address, lease_until)
         VALUES ($1, 'http://127.0.0.1:9', now() + interval '1 hour')",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(&pool)
    .await
    .unwrap();

    restarts_and_waits_out_the_bound(pool, &env, alice, fence_before).await;
}

/// ADR 0023, "A fence instead of the wait": a check without a number, passed by a risk of a
/// release before the numbers, is never fenced off (a risk rolled back alone keeps trading).
/// So a start after such a release's start, which did not hand over, waits out the bound.
#[sqlx::test(migrations = false)]
async fn a_restart_after_a_release_without_start_numbers_waits_out_the_bound(pool: PgPool) {
    let prefix = format!("test:{}", uuid::Uuid::now_v7());
    let env = env_of_a_crash(&prefix);
    let alice = crashed_with_a_check_passed(&pool, &env).await;
    let fence_before = count(&pool, FENCE).await;
    // A risk of a release before the numbers started (and crashed): it moves `started_at` and
    // leaves the number and `numbered_at` as they were.
    sqlx::query("UPDATE risk.starts SET started_at = now()")
        .execute(&pool)
        .await
        .unwrap();
    restarts_and_waits_out_the_bound(pool, &env, alice, fence_before).await;
}

/// The highest risk fence on any symbol.
const FENCE: &str = "SELECT coalesce(max(risk_start), 0) FROM orders.symbol_owners";

/// Restarts the platform with `env` and checks that risk waits out the bound on checks: its
/// balances are in but funds do not decide, orders are refused `funds_loading` and none booked,
/// and no mark or fence was written since the first start's.
async fn restarts_and_waits_out_the_bound(
    pool: PgPool,
    env: &[(&str, &str)],
    alice: uuid::Uuid,
    fence_before: i64,
) {
    let back = spawn_app_with(pool, env).await;
    let admin = treasury(&back).await;
    let view: Value =
        service_kit::testing::eventually_some("risk's balances after the restart", || async {
            let response = back
                .get_authed(
                    &format!("/v1/admin/risk-funds/{alice}"),
                    &admin.access_token,
                )
                .await;
            match response.status() {
                StatusCode::OK => Some(response.json().await.unwrap()),
                _ => None,
            }
        })
        .await;
    assert_eq!(view["balances"][0]["balance"], "100.00", "balances are in");
    assert_eq!(view["deciding"], false, "but funds wait out the bound");
    // Meanwhile orders are refused for now, never booked unfunded (ADR 0023 slice 3b).
    let tokens = back.logged_in_again("alice@example.com").await;
    let refused = back
        .place_order(&tokens, &limit("buy", "1000.00", "0.01"))
        .await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(refused, StatusCode::SERVICE_UNAVAILABLE, "funds_loading").await;
    assert_eq!(
        count(&back.db, "SELECT count(*) FROM orders.orders").await,
        0
    );
    assert_eq!(
        count(
            &back.db,
            "SELECT count(*) FROM orders.outbox WHERE event_type = 'StreamMarked'"
        )
        .await,
        1,
        "the first start's mark; the second has no fence and its mark is not asked for yet"
    );
    assert_eq!(
        count(&back.db, FENCE).await,
        fence_before,
        "the second start raised no fence"
    );
}

/// Risk's bound on checks an hour long, so that only a fence or a handover lets a restart
/// decide on funds within a test.
fn env_of_a_crash(prefix: &str) -> [(&'static str, &str); 3] {
    [
        ("BOURSE_REDIS_KEY_PREFIX", prefix),
        ("BOURSE_RISK_CHECK_VALID_FOR_MS", "3600000"),
        // The drain gives up after half of it: the order whose check passed never comes.
        ("BOURSE_SHUTDOWN_GRACE_MS", "2000"),
    ]
}

/// Alice funded with 100.00 USD, and a check risk passed whose order is never placed (orders
/// stopped in between): for all that process knows it may still reach the book within the
/// bound, so it cannot hand over when the platform stops. Alice's account id.
async fn crashed_with_a_check_passed(pool: &PgPool, env: &[(&str, &str)]) -> uuid::Uuid {
    let x = exchange_on(spawn_app_with(pool.clone(), env).await).await;
    let alice = x.app.user_id(&x.alice).await;
    x.fund(&x.alice, "USD", "100").await;
    risk_sees(&x.app, &x.admin, alice, &all_free(&[("USD", "100.00")])).await;
    crate::risk::pass_check(&x.app, &x.app.risk, &crate::risk::check_of(alice, 100_000)).await;
    x.app.stop().await;
    assert!(
        !crate::risk::handed_over(pool).await,
        "an order it passed may still come"
    );
    alice
}

/// ADR 0023, "A handover": a risk stopped once every order it passed has been read back from
/// the orders stream records a handover, and the next start decides on funds as soon as it
/// has read its own mark, without waiting out the bound on checks.
#[sqlx::test(migrations = false)]
async fn a_restart_after_a_handover_decides_on_funds_at_once(pool: PgPool) {
    let prefix = format!("test:{}", uuid::Uuid::now_v7());
    let env = [
        ("BOURSE_REDIS_KEY_PREFIX", prefix.as_str()),
        ("BOURSE_RISK_CHECK_VALID_FOR_MS", "3600000"),
    ];
    let x = exchange_on(spawn_app_with(pool.clone(), &env).await).await;
    let alice = x.app.user_id(&x.alice).await;
    x.fund(&x.alice, "USD", "100").await;
    risk_sees(&x.app, &x.admin, alice, &all_free(&[("USD", "100.00")])).await;
    // An order passes and rests. Its check reserved at once; its acceptance, once read, puts
    // the reservation in the table. (Here orders stops with risk, so an acceptance not read
    // by then never arrives: the drain would run out and record nothing.)
    x.placed(&x.alice, &limit("buy", "1000.00", "0.01")).await;
    eventually("risk to read the acceptance", || async {
        count(&x.app.db, "SELECT count(*) FROM risk.open_orders").await == 1
    })
    .await;
    let reserved = risk_funds(&x.app, &x.admin, alice)
        .await
        .unwrap()
        .remove("USD")
        .unwrap();
    assert_ne!(reserved.committed, "0.00");
    x.app.stop().await;
    assert!(crate::risk::handed_over(&pool).await);

    let back = spawn_app_with(pool, &env).await;
    let admin = treasury(&back).await;
    // `risk_funds` waits until funds decide: with an hour's bound, only the handover lets them.
    assert_eq!(
        risk_funds(&back, &admin, alice).await.unwrap()["USD"],
        reserved,
        "what the resting order reserved is committed still"
    );
    let tokens = back.logged_in_again("alice@example.com").await;
    back.placed_order(&tokens, &limit("buy", "1000.00", "0.01"))
        .await;
}

/// Orders writes a mark on its stream, plain or behind risk's fence, for risk's service token
/// alone (ADR 0023); a fence names a start numbered from 1.
#[sqlx::test(migrations = false)]
async fn orders_writes_a_stream_mark_for_risk_alone(pool: PgPool) {
    let x = exchange_on(spawn_app(pool).await).await;
    let app = &x.app;
    let marks_of = |mark: uuid::Uuid| {
        let db = app.db.clone();
        async move {
            count(
                &db,
                &format!(
                    "SELECT count(*) FROM orders.outbox WHERE event_type = 'StreamMarked'
                        AND envelope::jsonb->'payload'->>'mark_id' = '{mark}'"
                ),
            )
            .await
        }
    };
    for path in ["stream-marks", "risk-fences"] {
        let mark_id = uuid::Uuid::now_v7();
        let ask = |token: Option<String>, body: Value| {
            let request = app
                .client
                .post(format!("{}/internal/v1/{path}", app.orders))
                .json(&body);
            sent_as(request, token)
        };
        let body = match path {
            "stream-marks" => json!({ "mark_id": mark_id }),
            _ => json!({ "mark_id": mark_id, "start": 5 }),
        };
        assert_eq!(
            ask(None, body.clone()).await.status(),
            StatusCode::UNAUTHORIZED
        );
        let settlement = app.service_token("settlement", "orders").await;
        assert_problem(
            ask(Some(settlement), body.clone()).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        let risk = app.service_token("risk", "orders").await;
        let mut extra = body.clone();
        extra["position"] = json!(1);
        assert_problem(
            ask(Some(risk.clone()), extra).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        )
        .await;
        if path == "risk-fences" {
            for start in [json!(0), json!(-5), json!(i64::MAX as f64 * 4.0)] {
                let mut wrong = body.clone();
                wrong["start"] = start;
                let refused = ask(Some(risk.clone()), wrong).await;
                assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
            }
        }
        assert_eq!(marks_of(mark_id).await, 0, "refused requests wrote nothing");
        assert_eq!(ask(Some(risk), body).await.status(), StatusCode::CREATED);
        assert_eq!(marks_of(mark_id).await, 1);
    }
    // The fence is up on the exchange's instrument.
    assert_eq!(
        count(&app.db, "SELECT min(risk_start) FROM orders.symbol_owners").await,
        5
    );
}

/// ADR 0023 slice 4: a withdrawal reserves with risk before settlement books it, so it cannot
/// take what an open order has reserved — risk refuses it before settlement looks. Risk's
/// reservation endpoint answers settlement's service token alone.
#[sqlx::test(migrations = false)]
async fn a_withdrawal_cannot_take_what_open_orders_have_reserved(pool: PgPool) {
    let x = exchange_on(spawn_app(pool).await).await;
    let bob = x.app.user_id(&x.bob).await;
    x.fund(&x.bob, "USD", "1000").await;
    // 0.02 at 30,000.00 and the highest fee: 601.20 reserved, 398.80 free.
    x.placed(&x.bob, &limit("buy", "30000.00", "0.02")).await;
    let withdraw = |amount: &'static str| {
        x.app
            .client
            .post(x.app.url("/v1/admin/withdrawals"))
            .bearer_auth(&x.admin.access_token)
            .header("idempotency-key", uuid::Uuid::now_v7().to_string())
            .json(&json!({ "account_id": bob, "asset": "USD", "amount": amount }))
            .send()
    };

    let refused = withdraw("500.00").await.unwrap();
    let problem = assert_problem(
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "insufficient_funds",
    )
    .await;
    assert_eq!(
        problem["detail"], "not enough free USD: 398.80 free",
        "risk's refusal (settlement's own would say what is available)"
    );
    assert_eq!(
        withdraw("398.80").await.unwrap().status(),
        StatusCode::CREATED
    );
    let nothing_free = BTreeMap::from([(
        "USD".to_owned(),
        Figures {
            balance: "601.20".to_owned(),
            committed: "601.20".to_owned(),
            free: "0.00".to_owned(),
        },
    )]);
    risk_sees(&x.app, &x.admin, bob, &nothing_free).await;
    assert_eq!(
        ledger_funds(&x.app.db, bob, &[("USD", 60_120)]).await,
        nothing_free
    );
    eventually(
        "the booked withdrawal's reservation gone from risk's table",
        || async {
            count(
                &x.app.db,
                "SELECT count(*) FROM risk.withdrawal_reservations",
            )
            .await
                == 0
        },
    )
    .await;

    // The internal endpoint: settlement's token only.
    let reserve_as = |token: Option<String>, withdrawal: uuid::Uuid, amount: i64| {
        let request = x
            .app
            .client
            .post(format!("{}/internal/v1/withdrawals", x.app.risk))
            .json(&json!({ "withdrawal_id": withdrawal, "account_id": bob,
                           "asset": "USD", "amount": amount }));
        sent_as(request, token)
    };
    let reserve = |token, amount| reserve_as(token, uuid::Uuid::now_v7(), amount);
    assert_eq!(reserve(None, 1).await.status(), StatusCode::UNAUTHORIZED);
    let orders = x.app.service_token("orders", "risk").await;
    assert_problem(
        reserve(Some(orders), 1).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let settlement = x.app.service_token("settlement", "risk").await;
    assert_eq!(
        reserve(Some(settlement.clone()), 1).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "nothing is free"
    );
    let nothing = reserve(Some(settlement.clone()), 0).await;
    assert_problem(
        nothing,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    // A withdrawal settlement gives up is given back: reserved, then released.
    x.fund(&x.bob, "USD", "100").await;
    let given_up = uuid::Uuid::now_v7();
    let reserved = reserve_as(Some(settlement.clone()), given_up, 10_000).await;
    assert_eq!(reserved.status(), StatusCode::NO_CONTENT);
    let committed = |committed: &str, free: &str| {
        BTreeMap::from([(
            "USD".to_owned(),
            Figures {
                balance: "701.20".to_owned(),
                committed: committed.to_owned(),
                free: free.to_owned(),
            },
        )])
    };
    risk_sees(&x.app, &x.admin, bob, &committed("701.20", "0.00")).await;
    let release = |token: Option<String>| {
        let request = x
            .app
            .client
            .delete(format!("{}/internal/v1/withdrawals/{given_up}", x.app.risk));
        sent_as(request, token)
    };
    let orders = x.app.service_token("orders", "risk").await;
    assert_problem(
        release(Some(orders)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(
        release(Some(settlement)).await.status(),
        StatusCode::NO_CONTENT
    );
    risk_sees(&x.app, &x.admin, bob, &committed("601.20", "100.00")).await;
    assert_eq!(
        count(
            &x.app.db,
            "SELECT count(*) FROM risk.withdrawal_reservations"
        )
        .await,
        0
    );
}
