//! Instruments and assets through the gateway (TRD-01), and the events they announce.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, assert_problem, spawn_app};

fn btc_usd() -> Value {
    json!({ "symbol": "BTC-USD", "base_asset": "BTC", "quote_asset": "USD", "tick_size": "0.01", "lot_size": "0.0001" })
}

async fn create(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/admin/instruments"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn the_default_assets_are_listed(pool: PgPool) {
    let app = spawn_app(pool).await;
    let assets: Value = app.get("/v1/assets").await.json().await.unwrap();
    assert_eq!(
        assets,
        json!([{ "code": "USD", "scale": 2 }, { "code": "BTC", "scale": 8 }, { "code": "ETH", "scale": 8 }])
    );
}

#[sqlx::test(migrations = false)]
async fn an_admin_creates_halts_and_reopens_an_instrument(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app
        .signed_up_with_roles("market-ops@example.com", &["admin"])
        .await;

    let created = create(&app, &admin.access_token, &btc_usd()).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_eq!(
        created,
        json!({ "symbol": "BTC-USD", "base_asset": "BTC", "quote_asset": "USD", "tick_size": "0.01",
                "lot_size": "0.00010000", "min_quantity": "0.00010000", "max_quantity": "100000.00000000", "status": "open" })
    );

    let listed: Value = app.get("/v1/instruments").await.json().await.unwrap();
    assert_eq!(listed, json!([created]));

    let halt = |status: &'static str| {
        app.client
            .patch(app.url("/v1/admin/instruments/BTC-USD"))
            .bearer_auth(&admin.access_token)
            .json(&json!({ "status": status }))
            .send()
    };
    let halted: Value = halt("halted").await.unwrap().json().await.unwrap();
    assert_eq!(halted["status"], "halted");
    let reopened: Value = halt("open").await.unwrap().json().await.unwrap();
    assert_eq!(reopened["status"], "open");

    let missing = app
        .client
        .patch(app.url("/v1/admin/instruments/DOGE-USD"))
        .bearer_auth(&admin.access_token)
        .json(&json!({ "status": "halted" }))
        .send()
        .await
        .unwrap();
    assert_problem(missing, StatusCode::NOT_FOUND, "not_found").await;
}

#[sqlx::test(migrations = false)]
async fn instrument_changes_are_published_through_the_outbox(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app
        .signed_up_with_roles("events@example.com", &["admin"])
        .await;
    assert_eq!(
        create(&app, &admin.access_token, &btc_usd()).await.status(),
        StatusCode::CREATED
    );

    // The orders service's relay publishes to `<prefix>.orders` (where risk's start also
    // asked for its mark, ADR 0023).
    let envelope = app.first_event_of("orders", "InstrumentCreated").await;
    assert_eq!(envelope["aggregate_id"], "BTC-USD");
    assert_eq!(envelope["producer"], "orders");
    assert_eq!(envelope["payload"]["tick_size"], "0.01");
    // The request that caused it is the correlation id, and its trace continues in the event.
    assert!(
        envelope["correlation_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    assert!(
        envelope["traceparent"]
            .as_str()
            .is_some_and(|t| t.starts_with("00-"))
    );
}

#[sqlx::test(migrations = false)]
async fn bad_instruments_are_refused_field_by_field_and_change_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app
        .signed_up_with_roles("strict@example.com", &["admin"])
        .await;

    let cases = [
        (json!({ "tick_size": "0.001" }), "tick_size"),
        (json!({ "tick_size": "-0.01" }), "tick_size"),
        (json!({ "tick_size": "1e400" }), "tick_size"),
        (json!({ "lot_size": "0" }), "lot_size"),
        (json!({ "lot_size": "0.000000001" }), "lot_size"),
        (json!({ "lot_size": "99999999999999999999" }), "lot_size"),
        (json!({ "min_quantity": "0.00015" }), "min_quantity"),
        (
            json!({ "min_quantity": "1", "max_quantity": "0.5" }),
            "max_quantity",
        ),
        (json!({ "symbol": "BTCUSD" }), "symbol"),
        (
            json!({ "base_asset": "DOGE", "symbol": "DOGE-USD" }),
            "base_asset",
        ),
        (
            json!({ "base_asset": "USD", "symbol": "USD-USD" }),
            "quote_asset",
        ),
    ];
    for (change, field) in cases {
        let mut body = btc_usd();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let problem = assert_problem(
            create(&app, &admin.access_token, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{change}: {problem}");
    }

    let mut unknown_field = btc_usd();
    unknown_field["leverage"] = json!(100);
    assert_problem(
        create(&app, &admin.access_token, &unknown_field).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM orders.instruments")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0);
    // Risk's start writes its mark there (ADR 0023); nothing else may be.
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders.outbox WHERE event_type <> 'StreamMarked'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(events, 0, "no event for what did not happen");

    assert_eq!(
        create(&app, &admin.access_token, &btc_usd()).await.status(),
        StatusCode::CREATED
    );
    assert_problem(
        create(&app, &admin.access_token, &btc_usd()).await,
        StatusCode::CONFLICT,
        "instrument_exists",
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn only_admins_manage_instruments(pool: PgPool) {
    let app = spawn_app(pool).await;
    let trader = app.signed_up("not-an-admin@example.com").await;
    for base in [&app.gateway, &app.orders] {
        let response = app
            .client
            .post(format!("{base}/v1/admin/instruments"))
            .bearer_auth(&trader.access_token)
            .json(&btc_usd())
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
        let anonymous = app
            .client
            .post(format!("{base}/v1/admin/instruments"))
            .json(&btc_usd())
            .send()
            .await
            .unwrap();
        assert_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    }
}
