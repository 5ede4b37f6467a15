//! Pre-trade risk (TRD-10..12, REL-05): limits set by risk officers, kill switches with mass
//! cancel, positions, and orders refusing fast when risk — its own OS process here — is down.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use service_kit::testing::eventually;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

use bourse::Target;

use crate::helpers::{
    TestApp, Tokens, assert_problem, base_env, count, risk_funds, spawn_app, spawn_app_without,
};

/// BTC-USD, an admin, a risk officer and two funded traders.
struct Desk {
    app: TestApp,
    officer: Tokens,
    alice: Tokens,
    bob: Tokens,
    bob_id: Uuid,
}

async fn desk_on(app: TestApp) -> Desk {
    let admin = app
        .signed_up_with_roles("ops@example.com", &["admin"])
        .await;
    app.btc_usd(&admin).await;
    let officer = app
        .signed_up_with_roles("risk@example.com", &["risk_officer"])
        .await;
    let alice = app.signed_up("alice@example.com").await;
    let bob = app.signed_up("bob@example.com").await;
    for trader in [&alice, &bob] {
        let account = app.user_id(trader).await;
        app.deposit(&admin, account, "USD", "1000000").await;
        app.deposit(&admin, account, "BTC", "100").await;
    }
    let bob_id = app.user_id(&bob).await;
    Desk {
        app,
        officer,
        alice,
        bob,
        bob_id,
    }
}

fn limit(side: &str, price: &str, quantity: &str) -> Value {
    json!({ "symbol": "BTC-USD", "side": side, "type": "limit", "price": price, "quantity": quantity, "time_in_force": "gtc" })
}

fn limits(max_order_quantity: &str) -> Value {
    json!({
        "max_order_quantity": max_order_quantity, "max_order_notional": "1000000",
        "max_open_orders": 10, "max_orders_per_second": 50, "max_position": "20",
        "price_collar_bps": 1000,
    })
}

impl Desk {
    async fn place(&self, who: &Tokens, order: &Value) -> Response {
        self.app.place_order(who, order).await
    }

    async fn placed(&self, who: &Tokens, order: &Value) -> Value {
        self.app.placed_order(who, order).await
    }

    async fn put_limits(&self, who: &Tokens, account: Uuid, body: &Value) -> Response {
        self.app
            .client
            .put(self.app.url(&format!("/v1/admin/risk-limits/{account}")))
            .bearer_auth(&who.access_token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn patch_limits(&self, who: &Tokens, account: Uuid, body: &Value) -> Response {
        self.app
            .client
            .patch(self.app.url(&format!("/v1/admin/risk-limits/{account}")))
            .bearer_auth(&who.access_token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn limits_of(&self, account: Uuid) -> Value {
        self.app
            .get_authed(
                &format!("/v1/admin/risk-limits/{account}"),
                &self.officer.access_token,
            )
            .await
            .json()
            .await
            .unwrap()
    }

    async fn kill(&self, body: &Value) -> Response {
        self.app
            .client
            .post(self.app.url("/v1/admin/kill-switches"))
            .bearer_auth(&self.officer.access_token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn release(&self, id: &str) -> Response {
        self.app
            .client
            .delete(self.app.url(&format!("/v1/admin/kill-switches/{id}")))
            .bearer_auth(&self.officer.access_token)
            .send()
            .await
            .unwrap()
    }

    async fn order_status(&self, who: &Tokens, id: &str) -> String {
        let order: Value = self
            .app
            .get_authed(&format!("/v1/orders/{id}"), &who.access_token)
            .await
            .json()
            .await
            .unwrap();
        order["status"].as_str().unwrap().to_owned()
    }
}

#[sqlx::test(migrations = false)]
async fn risk_officers_set_limits_that_apply_to_the_next_order_and_are_logged(pool: PgPool) {
    let d = desk_on(spawn_app(pool).await).await;

    let set = d.put_limits(&d.officer, d.bob_id, &limits("0.5")).await;
    assert_eq!(set.status(), StatusCode::OK);
    let read: Value = d
        .app
        .get_authed(
            &format!("/v1/admin/risk-limits/{}", d.bob_id),
            &d.officer.access_token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["max_order_quantity"], "0.5");

    assert_problem(
        d.place(&d.bob, &limit("buy", "30000.00", "1")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "max_order_quantity",
    )
    .await;
    d.placed(&d.bob, &limit("buy", "30000.00", "0.5")).await;
    // Alice keeps the defaults.
    d.placed(&d.alice, &limit("buy", "30000.00", "1")).await;

    // Who changed what is on record; traders cannot change limits; nonsense is refused.
    let changed_by: Uuid =
        sqlx::query_scalar("SELECT changed_by FROM risk.limit_changes WHERE account_id = $1")
            .bind(d.bob_id)
            .fetch_one(&d.app.db)
            .await
            .unwrap();
    assert_eq!(changed_by, d.app.user_id(&d.officer).await);
    assert_eq!(
        d.put_limits(&d.bob, d.bob_id, &limits("1000"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let mut nonsense = limits("lots");
    nonsense["price_collar_bps"] = json!(0);
    let refused = d.put_limits(&d.officer, d.bob_id, &nonsense).await;
    let problem = assert_problem(
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2, "{problem}");
}

#[sqlx::test(migrations = false)]
async fn a_partial_update_changes_only_the_limits_it_names_even_when_two_arrive_at_once(
    pool: PgPool,
) {
    let d = desk_on(spawn_app(pool).await).await;
    let defaults = d.limits_of(d.bob_id).await;

    // Two officers each change one of Bob's limits at the same moment: both changes stand.
    // The test holds the account's lock first, so both partial updates are seen waiting for it
    // — read-merge-write happens under the lock, one after the other, never interleaved.
    let (smaller_orders, tighter_collar) = (
        json!({ "max_order_quantity": "0.5" }),
        json!({ "price_collar_bps": 200 }),
    );
    let mut held = d.app.db.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('risk.limits'), hashtext($1::text))")
        .bind(d.bob_id)
        .execute(&mut *held)
        .await
        .unwrap();
    let (quantity, collar, ()) = tokio::join!(
        d.patch_limits(&d.officer, d.bob_id, &smaller_orders),
        d.patch_limits(&d.officer, d.bob_id, &tighter_collar),
        async {
            service_kit::testing::until_waiting_for_a_lock(&d.app.db, "hashtext('risk.limits')")
                .await;
            held.commit().await.unwrap();
        },
    );
    assert_eq!(quantity.status(), StatusCode::OK);
    assert_eq!(collar.status(), StatusCode::OK);
    let now = d.limits_of(d.bob_id).await;
    assert_eq!(now["max_order_quantity"], "0.5");
    assert_eq!(now["price_collar_bps"], 200);
    for kept in [
        "max_order_notional",
        "max_open_orders",
        "max_orders_per_second",
        "max_position",
    ] {
        assert_eq!(now[kept], defaults[kept], "{kept} keeps its value");
    }
    assert_problem(
        d.place(&d.bob, &limit("buy", "30000.00", "1")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "max_order_quantity",
    )
    .await;
    assert_eq!(
        count(
            &d.app.db,
            &format!(
                "SELECT count(*) FROM risk.limit_changes WHERE account_id = '{}'",
                d.bob_id
            )
        )
        .await,
        2,
        "each change is on record"
    );

    // Hostile patches change nothing: an unknown field, a bad value, a trader.
    let unknown = d
        .patch_limits(&d.officer, d.bob_id, &json!({ "max_leverage": 100 }))
        .await;
    assert!(unknown.status().is_client_error(), "{}", unknown.status());
    let bad = d
        .patch_limits(&d.officer, d.bob_id, &json!({ "price_collar_bps": 0 }))
        .await;
    assert_problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let negative = d
        .patch_limits(&d.officer, d.bob_id, &json!({ "max_position": "-1" }))
        .await;
    assert_problem(
        negative,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let by_trader = d
        .patch_limits(&d.bob, d.bob_id, &json!({ "max_order_quantity": "1000" }))
        .await;
    assert_eq!(by_trader.status(), StatusCode::FORBIDDEN);
    assert_eq!(d.limits_of(d.bob_id).await, now);
}

#[sqlx::test(migrations = false)]
async fn a_kill_switch_blocks_new_orders_and_cancels_open_ones_until_released(pool: PgPool) {
    let d = desk_on(spawn_app(pool).await).await;
    let resting = d.placed(&d.bob, &limit("buy", "29000.00", "0.1")).await;
    let alices = d.placed(&d.alice, &limit("buy", "29000.00", "0.1")).await;

    let activated = d
        .kill(&json!({ "scope": "account", "target": d.bob_id, "reason": "runaway algo" }))
        .await;
    assert_eq!(activated.status(), StatusCode::CREATED);
    let switch: Value = activated.json().await.unwrap();

    assert_problem(
        d.place(&d.bob, &limit("buy", "29000.00", "0.1")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "kill_switch",
    )
    .await;
    let (event_type, event) = d.app.first_event("risk").await;
    assert_eq!(event_type, "KillSwitchActivated");
    assert_eq!(event["payload"]["reason"], "runaway algo");
    // Orders mass-cancels what Bob had open; Alice's order is untouched.
    let bobs = resting["id"].as_str().unwrap();
    eventually("Bob's open order to be cancelled", || async {
        d.order_status(&d.bob, bobs).await == "cancelled"
    })
    .await;
    assert_eq!(
        d.order_status(&d.alice, alices["id"].as_str().unwrap())
            .await,
        "open"
    );

    // Released: Bob trades again. Releasing twice finds nothing.
    let id = switch["id"].as_str().unwrap();
    assert_eq!(d.release(id).await.status(), StatusCode::NO_CONTENT);
    d.placed(&d.bob, &limit("buy", "29000.00", "0.1")).await;
    assert_eq!(d.release(id).await.status(), StatusCode::NOT_FOUND);
    // A trader cannot pull one; a malformed one is refused.
    let by_trader = d
        .app
        .client
        .post(d.app.url("/v1/admin/kill-switches"))
        .bearer_auth(&d.alice.access_token)
        .json(&json!({ "scope": "global", "reason": "mine" }))
        .send()
        .await
        .unwrap();
    assert_eq!(by_trader.status(), StatusCode::FORBIDDEN);
    assert_problem(
        d.kill(&json!({ "scope": "account", "target": "not-an-id", "reason": "x" }))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn trades_build_positions_and_set_the_collar_reference(pool: PgPool) {
    let d = desk_on(spawn_app(pool).await).await;
    d.placed(&d.alice, &limit("sell", "30000.00", "1")).await;
    d.placed(&d.bob, &limit("buy", "30000.00", "1")).await;

    eventually("Bob's position to appear", || async {
        let positions: Vec<Value> = d
            .app
            .get_authed("/v1/positions", &d.bob.access_token)
            .await
            .json()
            .await
            .unwrap();
        positions
            .first()
            .is_some_and(|p| p["net_quantity"] == "1.00000000")
    })
    .await;
    let alice: Vec<Value> = d
        .app
        .get_authed("/v1/positions", &d.alice.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(alice[0]["net_quantity"], "-1.00000000");
    assert_eq!(alice[0]["average_price"], "30000.00");

    // The trade at 30,000 is the reference now: 10 % away is as far as a price may go. Risk
    // learns it from the orders stream; Carol, who has no funds, probes without side effects
    // (before the collar applies, settlement refuses her hold instead).
    let carol = d.app.signed_up("carol@example.com").await;
    eventually("the collar to apply", || async {
        let refused = d.place(&carol, &limit("buy", "33000.01", "0.1")).await;
        let problem: Value = refused.json().await.unwrap();
        problem["code"] == "price_collar"
    })
    .await;
    assert_problem(
        d.place(&d.bob, &limit("sell", "26999.99", "0.1")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "price_collar",
    )
    .await;
    d.placed(&d.bob, &limit("buy", "33000.00", "0.1")).await;
}

#[sqlx::test(migrations = false)]
async fn before_the_first_trade_the_collar_centres_on_the_books_mid(pool: PgPool) {
    let d = desk_on(spawn_app(pool).await).await;
    // Nothing has traded; the book quotes 29,000 / 31,000: the mid is 30,000.
    d.placed(&d.alice, &limit("sell", "31000.00", "0.1")).await;
    d.placed(&d.bob, &limit("buy", "29000.00", "0.1")).await;

    // The matching task publishes its quotes before it answers, so the next check sees them.
    assert_problem(
        d.place(&d.alice, &limit("sell", "33000.01", "0.1")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "price_collar",
    )
    .await;
    assert_problem(
        d.place(&d.bob, &limit("buy", "26999.99", "0.1")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "price_collar",
    )
    .await;
    d.placed(&d.bob, &limit("buy", "27000.00", "0.1")).await;
}

#[sqlx::test(migrations = false)]
async fn a_fill_beyond_a_lowered_position_limit_is_reported(pool: PgPool) {
    let d = desk_on(spawn_app(pool).await).await;
    d.placed(&d.bob, &limit("buy", "30000.00", "1")).await;
    // The limit is lowered under what Bob's resting order could reach; then it fills.
    let mut lowered = limits("10");
    lowered["max_position"] = json!("0.5");
    assert_eq!(
        d.put_limits(&d.officer, d.bob_id, &lowered).await.status(),
        StatusCode::OK
    );
    d.placed(&d.alice, &limit("sell", "30000.00", "1")).await;

    let (event_type, event) = d.app.first_event("risk").await;
    assert_eq!(event_type, "RiskLimitBreached");
    assert_eq!(event["payload"]["account_id"], d.bob_id.to_string());
    assert_eq!(event["payload"]["limit"], "max_position");
    assert_eq!(event["payload"]["net_quantity"], "1.00000000");
    // Risk officers hear of it (ALR-07).
    let alert = d.app.alert_of(&d.officer, "RiskLimitBreached").await;
    assert_eq!(
        alert["scope"],
        format!("account:{}/symbol:BTC-USD", d.bob_id)
    );
    // And any order that would grow the position is refused now.
    assert_problem(
        d.place(&d.bob, &limit("buy", "30000.00", "0.1")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "max_position",
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn the_internal_check_is_for_services_only(pool: PgPool) {
    let app = spawn_app(pool).await;
    let trader = app.signed_up("mallory@example.com").await;
    for token in [None, Some(trader.access_token.as_str())] {
        let mut request = app
            .client
            .post(format!("{}/internal/v1/checks/batch", app.risk))
            .json(&json!({}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        assert_eq!(
            request.send().await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let via_gateway = app.post_json("/internal/v1/checks/batch", &json!({})).await;
    assert_eq!(via_gateway.status(), StatusCode::NOT_FOUND);
}

/// One order's check as orders sends it: a buy of `quantity` BTC minor units at 30,000.00 USD.
pub(crate) fn check_of(account: Uuid, quantity: i64) -> Value {
    json!({
        "order_id": Uuid::now_v7(), "account_id": account, "symbol": "BTC-USD", "side": "buy",
        "type": "limit", "price": 3_000_000, "quantity": quantity, "base_scale": 8,
        "quote_scale": 2, "base_asset": "BTC", "quote_asset": "USD", "mid": null,
    })
}

#[sqlx::test(migrations = false)]
async fn a_batch_of_checks_answers_each_order_as_alone_and_a_malformed_batch_checks_nothing(
    pool: PgPool,
) {
    let app = spawn_app(pool).await;
    let (admin, alice, _) = app.funded_market().await;
    let alice_id = app.user_id(&alice).await;
    let token = app.service_token("orders", "risk").await;
    let send = |body: Value| {
        let request = app
            .client
            .post(format!("{}/internal/v1/checks/batch", app.risk))
            .bearer_auth(&token)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    // 0.1 BTC at 30,000.00: 3,000 USD and its fee, well within Alice's 1,000,000.
    let funded = check_of(alice_id, 10_000_000);
    let unfunded = check_of(Uuid::now_v7(), 10_000_000);
    let committed = || async {
        risk_funds(&app, &admin, alice_id).await.unwrap()["USD"]
            .committed
            .clone()
    };

    // The same order twice, as a retried call sends it: reserved once, passed both times.
    let answer = send(json!({ "orders": [funded, unfunded, funded] })).await;

    assert_eq!(answer.status(), StatusCode::OK);
    let answer: Value = answer.json().await.unwrap();
    let verdicts = answer["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), 3);
    assert_eq!(
        verdicts[0],
        json!({ "outcome": "passed", "order_id": funded["order_id"], "start": 1 }),
        "passed by the first start of risk on this database"
    );
    assert_eq!(verdicts[1]["outcome"], "refused");
    assert_eq!(verdicts[1]["order_id"], unfunded["order_id"]);
    assert_eq!(verdicts[1]["code"], "insufficient_funds");
    assert_eq!(verdicts[2], verdicts[0], "sent again, answered as before");
    let reserved_once = committed().await;
    assert_ne!(reserved_once, "0.00");

    // Hostile batches: a clear 4xx, and nothing in them is checked or reserved.
    let too_many: Vec<Value> = (0..129).map(|_| check_of(alice_id, 1)).collect();
    for (batch, code) in [
        (json!({ "orders": [] }), "batch_size"),
        (json!({ "orders": too_many }), "batch_size"),
        (
            json!({ "orders": [check_of(alice_id, 1)], "priority": "high" }),
            "invalid_body",
        ),
        (
            json!({ "orders": [check_of(alice_id, 1), { "order_id": "not an id" }] }),
            "invalid_body",
        ),
    ] {
        assert_problem(send(batch).await, StatusCode::UNPROCESSABLE_ENTITY, code).await;
    }
    assert_eq!(committed().await, reserved_once);
    // Only services check orders.
    let as_trader = app
        .client
        .post(format!("{}/internal/v1/checks/batch", app.risk))
        .bearer_auth(&alice.access_token)
        .json(&json!({ "orders": [check_of(alice_id, 1)] }))
        .send()
        .await
        .unwrap();
    assert_eq!(as_trader.status(), StatusCode::UNAUTHORIZED);
}

/// Risk as its own OS process, `bourse serve risk`: one replica (ADR 0018), on a port
/// reserved below the ephemeral range, so that while it is down no other test's listener can
/// be given it.
struct SeparateRisk {
    env: Vec<(String, String)>,
    port: u16,
    url: String,
}

/// An app without a risk of its own, and the risk it uses instead (not started yet). `shared`
/// settings go to both, `app_only` to the app.
async fn with_separate_risk(
    pool: PgPool,
    shared: &[(&str, &str)],
    app_only: &[(&str, &str)],
) -> (TestApp, SeparateRisk) {
    let port = service_kit::testing::free_ports(1)[0];
    let url = format!("http://127.0.0.1:{port}");
    let mut env = base_env(&pool);
    env.extend(
        shared
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let prefix = env
        .iter()
        .find(|(k, _)| k == "BOURSE_REDIS_KEY_PREFIX")
        .map(|(_, v)| v.clone())
        .unwrap();
    let app_env: Vec<(&str, &str)> = [
        ("BOURSE_REDIS_KEY_PREFIX", prefix.as_str()),
        ("BOURSE_RISK_URL", url.as_str()),
    ]
    .into_iter()
    .chain(shared.iter().chain(app_only).copied())
    .collect();
    let mut app = spawn_app_without(pool, &app_env, &[Target::Risk]).await;
    // Risk verifies orders' service tokens against this app's auth, loads its balances from
    // this app's settlement (ADR 0023), and asks this app's orders for its mark.
    env.push(("BOURSE_AUTH_URL".to_owned(), app.auth.clone()));
    env.push(("BOURSE_SETTLEMENT_URL".to_owned(), app.settlement.clone()));
    env.push(("BOURSE_ORDERS_URL".to_owned(), app.orders.clone()));
    // Known to the app, so each deposit waits until this risk has credited it, as it would
    // for the app's own risk: a first order must not race the ledger's stream.
    app.risk = url.clone();
    (app, SeparateRisk { env, port, url })
}

impl SeparateRisk {
    /// Starts the process and waits until it is ready.
    async fn start(&self) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bourse"));
        command
            .args(["serve", "risk"])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("BOURSE_RISK_PORT", self.port.to_string())
            .env("BOURSE_LOG", "warn")
            .kill_on_drop(true);
        let child = command.spawn().unwrap();
        eventually("risk to be ready", || ready(&self.url)).await;
        child
    }
}

/// Asks risk at `risk_url` to check `order` as orders does, and asserts that it passed.
pub(crate) async fn pass_check(app: &TestApp, risk_url: &str, order: &Value) {
    let token = app.service_token("orders", "risk").await;
    let answer: Value = app
        .client
        .post(format!("{risk_url}/internal/v1/checks/batch"))
        .bearer_auth(&token)
        .json(&json!({ "orders": [order] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["verdicts"][0]["outcome"], "passed", "{answer}");
}

/// Whether the last risk process to stop handed over: `risk.starts` as it left it (ADR 0023).
pub(crate) async fn handed_over(pool: &PgPool) -> bool {
    sqlx::query_scalar("SELECT handed_over_at > started_at FROM risk.starts")
        .fetch_one(pool)
        .await
        .map(|handed: Option<bool>| handed.unwrap_or(false))
        .unwrap()
}

async fn ready(url: &str) -> bool {
    reqwest::get(format!("{url}/health/ready"))
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[sqlx::test(migrations = false)]
async fn with_risk_down_orders_are_refused_fast_and_flow_again_when_it_returns(pool: PgPool) {
    let (app, risk) = with_separate_risk(
        pool,
        &[],
        &[
            ("BOURSE_ORDERS_RISK_RETRIES", "0"),
            ("BOURSE_ORDERS_RISK_BREAKER_MINIMUM_CALLS", "2"),
            ("BOURSE_ORDERS_RISK_BREAKER_OPEN_FOR_MS", "300"),
            ("BOURSE_ORDERS_RISK_BREAKER_HALF_OPEN_CALLS", "1"),
        ],
    )
    .await;
    let mut process = risk.start().await;
    let d = desk_on(app).await;
    d.placed(&d.bob, &limit("buy", "29000.00", "0.1")).await;

    // Risk dies: orders are refused with 503 — never placed unchecked — and the breaker opens.
    process.kill().await.unwrap();
    for _ in 0..2 {
        assert_problem(
            d.place(&d.bob, &limit("buy", "29000.00", "0.1")).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_unavailable",
        )
        .await;
    }
    let (event_type, event) = d.app.first_event("ops").await;
    assert_eq!(event_type, "CircuitBreakerOpened");
    assert_eq!(event["payload"]["upstream"], "risk");
    assert_eq!(
        count(&d.app.db, "SELECT count(*) FROM orders.orders").await,
        1,
        "nothing placed while risk was down"
    );

    // Risk is back: after the open period a probe succeeds and orders flow again.
    let _process = risk.start().await;
    eventually("orders to flow again", || async {
        d.place(&d.bob, &limit("buy", "29000.00", "0.1"))
            .await
            .status()
            == StatusCode::CREATED
    })
    .await;
}

/// Risk in its own process with an hour's bound on checks, and a check it passed for Bob whose
/// order has not reached the book: the desk, the process and the check.
async fn a_check_passed_by_a_separate_risk(pool: PgPool) -> (Desk, SeparateRisk, Child, Value) {
    let bound = [("BOURSE_RISK_CHECK_VALID_FOR_MS", "3600000")];
    let (app, risk) = with_separate_risk(pool, &bound, &[]).await;
    let process = risk.start().await;
    let d = desk_on(app).await;
    let check = check_of(d.bob_id, 100_000);
    pass_check(&d.app, &risk.url, &check).await;
    (d, risk, process, check)
}

/// ADR 0023, "A fence instead of the wait", as a crash happens: risk in its own process is
/// SIGKILLed after passing a check whose order has not reached the book. The next process
/// raises its fence and decides on funds at once, an hour's bound on checks notwithstanding;
/// and the dead process's check can no longer be booked: the order, forwarded to the symbol's
/// owner as another orders replica forwards it, is refused `check_expired` and not stored.
#[sqlx::test(migrations = false)]
async fn a_killed_risks_checks_are_fenced_off_and_the_next_process_decides_at_once(pool: PgPool) {
    let (d, risk, mut process, check) = a_check_passed_by_a_separate_risk(pool).await;
    process.kill().await.unwrap();
    assert!(!handed_over(&d.app.db).await);

    // The next process decides (`risk_funds` waits for that) and books.
    let _process = risk.start().await;
    let admin = d.app.logged_in_again("ops@example.com").await;
    assert!(risk_funds(&d.app, &admin, d.bob_id).await.is_some());
    d.placed(&d.bob, &limit("buy", "29000.00", "0.1")).await;

    // The order the killed process passed reaches the book only now.
    let owner: Uuid =
        sqlx::query_scalar("SELECT replica FROM orders.symbol_owners WHERE symbol = 'BTC-USD'")
            .fetch_one(&d.app.db)
            .await
            .unwrap();
    let order_id = check["order_id"].clone();
    let late: orders::forwarding::Forwarded = serde_json::from_value(json!({
        "owner": owner,
        "command": {
            "command": "place",
            "order": {
                "id": order_id, "account": d.bob_id, "client_order_id": null,
                "symbol": "BTC-USD", "side": "buy", "order_type": "limit",
                "price": 3_000_000, "quantity": 100_000, "time_in_force": "gtc",
                "post_only": false, "protection": null,
            },
            "claim": {
                "principal": d.bob_id, "key": Uuid::now_v7().to_string(),
                "token": Uuid::now_v7(), "unwritten": true,
            },
            "check_valid_for_ms": 3_600_000,
            "risk_start": 1,
        },
    }))
    .unwrap();
    let token = d.app.service_token("orders", "orders").await;
    let refused = d
        .app
        .client
        .post(format!("{}/internal/v1/matching/BTC-USD", d.app.orders))
        .bearer_auth(&token)
        .json(&late)
        .send()
        .await
        .unwrap();
    assert_problem(refused, StatusCode::SERVICE_UNAVAILABLE, "check_expired").await;
    assert_eq!(
        count(
            &d.app.db,
            &format!(
                "SELECT count(*) FROM orders.orders WHERE id = '{}'",
                order_id.as_str().unwrap()
            ),
        )
        .await,
        0
    );
}

/// ADR 0023, "A handover", as a deploy replaces risk: SIGTERM to its own process. It refuses
/// new checks at once, but its orders consumer reads on, so an order it passed that orders
/// books during the drain is read, and the process records its handover; the next risk
/// decides on funds at once, an hour's bound on checks notwithstanding.
#[sqlx::test(migrations = false)]
async fn a_risk_told_to_stop_reads_the_orders_it_passed_then_hands_over(pool: PgPool) {
    let (d, risk, mut process, check) = a_check_passed_by_a_separate_risk(pool).await;

    // Told to stop, risk stops listening; the order it passed has not been read yet.
    let pid = process.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(sent.unwrap().success());
    eventually("risk to stop listening", || async {
        !ready(&risk.url).await
    })
    .await;
    // Orders books it now: its acceptance, as orders' batch commit writes it.
    let order_id: Uuid = serde_json::from_value(check["order_id"].clone()).unwrap();
    let accepted = events::Envelope::of(
        "orders",
        order_id.to_string(),
        1,
        &contracts::events::OrderAccepted {
            order_id,
            account_id: d.bob_id,
            symbol: "BTC-USD".to_owned(),
            base_asset: "BTC".to_owned(),
            quote_asset: "USD".to_owned(),
            side: contracts::Side::Buy,
            price: Some(3_000_000),
            quantity: 100_000,
            protection_price: None,
        },
    )
    .unwrap();
    let mut tx = d.app.db.begin().await.unwrap();
    sqlx::query("SET LOCAL search_path TO orders")
        .execute(&mut *tx)
        .await
        .unwrap();
    events::outbox::append(&mut tx, "orders", &accepted)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let exited = process.wait().await.unwrap();
    assert!(exited.success(), "{exited}");
    assert_eq!(
        count(
            &d.app.db,
            &format!("SELECT count(*) FROM risk.open_orders WHERE order_id = '{order_id}' AND reserved > 0"),
        )
        .await,
        1,
        "read during the drain, its reservation stored"
    );
    assert!(handed_over(&d.app.db).await);

    // The next risk decides at once (`risk_funds` waits for that), with the order's
    // reservation committed.
    let _process = risk.start().await;
    let admin = d.app.logged_in_again("ops@example.com").await;
    let usd = risk_funds(&d.app, &admin, d.bob_id).await.unwrap()["USD"]
        .committed
        .clone();
    assert_ne!(usd, "0.00");
}
