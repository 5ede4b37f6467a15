//! What the edge guarantees on every response: request ids, security headers, CORS, no route to
//! internals, and a clean answer when an upstream is down.

use bourse::Target;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{
    PASSWORD, Tokens, assert_problem, shed, spawn_app, spawn_app_with, spawn_app_without,
};

#[sqlx::test(migrations = false)]
async fn a_valid_request_id_is_kept_and_propagated_an_invalid_one_replaced(pool: PgPool) {
    let app = spawn_app(pool).await;

    // The id reaches auth: auth's problem body quotes the id the client sent.
    let response = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("x-request-id", "client-chosen-id-42")
        .json(&serde_json::json!({ "email": "x@example.com", "password": "wrong password!" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-id-42");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["request_id"], "client-chosen-id-42");

    let response = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(id, "bad id with spaces");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "a fresh UUID: {id}");
}

#[sqlx::test(migrations = false)]
async fn every_response_carries_the_security_headers(pool: PgPool) {
    let app = spawn_app_with(pool, &[("BOURSE_GATEWAY_HSTS", "true")]).await;
    for path in [
        "/health/live",
        "/v1/auth/me",
        "/v1/nowhere",
        "/.well-known/jwks.json",
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert!(
            headers["strict-transport-security"]
                .to_str()
                .unwrap()
                .starts_with("max-age="),
            "{path}"
        );
    }
    let docs = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        docs.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
}

#[sqlx::test(migrations = false)]
async fn hsts_is_off_without_tls(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app.get("/health/live").await;
    assert!(
        response
            .headers()
            .get("strict-transport-security")
            .is_none()
    );
}

#[sqlx::test(migrations = false)]
async fn cors_answers_listed_origins_only(pool: PgPool) {
    let app = spawn_app(pool).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/v1/auth/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };

    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        allowed
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );

    let refused = preflight("https://evil.example.com").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let simple = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(
        simple
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[sqlx::test(migrations = false)]
async fn internal_routes_are_never_reachable_through_the_gateway(pool: PgPool) {
    let app = spawn_app(pool).await;
    for path in [
        "/internal/v1/checks/batch",
        "/internal/v1/withdrawals",
        "/internal/anything/at/all",
    ] {
        let response = app.client.post(app.url(path)).send().await.unwrap();
        assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[sqlx::test(migrations = false)]
async fn a_down_upstream_is_a_503_problem_not_a_hang(pool: PgPool) {
    // Point the gateway at a port where nothing listens.
    let url = format!("http://127.0.0.1:{}", service_kit::testing::closed_port());
    let app = spawn_app_with(pool, &[("BOURSE_AUTH_URL", url.as_str())]).await;

    let response = app.login("a@example.com", "whatever password").await;
    let body = assert_problem(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream_unavailable",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("auth"));

    // Only auth's routes are down: the gateway stays in rotation and says what is missing.
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["auth"], "unavailable");
    assert_eq!(ready["checks"]["redis"], "ok");
    assert!(
        app.metrics()
            .await
            .contains(r#"health_dependency_up{service="gateway",dependency="auth"} 0"#)
    );
}

#[sqlx::test(migrations = false)]
async fn with_alerting_down_the_gateway_stays_ready_and_trading_goes_on(pool: PgPool) {
    let nowhere = format!("http://127.0.0.1:{}", service_kit::testing::closed_port());
    let app = spawn_app_without(
        pool,
        &[("BOURSE_ALERTING_URL", nowhere.as_str())],
        &[Target::Alerting],
    )
    .await;

    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), StatusCode::OK, "the pager is not the API");
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["alerting"], "unavailable");
    assert_eq!(ready["checks"]["orders"], "ok");

    // Trading works end to end ...
    let (admin, alice, bob) = app.funded_market().await;
    let order = |side: &str| {
        json!({"symbol": "BTC-USD", "side": side, "type": "limit", "price": "30000.00",
               "quantity": "0.5", "time_in_force": "gtc"})
    };
    app.placed_order(&alice, &order("sell")).await;
    let filled = app.placed_order(&bob, &order("buy")).await;
    assert_eq!(filled["status"], "filled");
    // ... and only alerting's own routes answer 503.
    let alerts = app
        .get_authed("/v1/admin/alerts", &admin.access_token)
        .await;
    assert_problem(
        alerts,
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream_unavailable",
    )
    .await;
}

/// Risk is away: orders cannot check a new order, and refuses it naming risk. That is not
/// orders failing, and the gateway does not take it for that. However many placements were
/// refused, a trader still pulls a resting order and reads the book and their orders — what
/// traders do first when a venue is in trouble, and what a gateway breaker opened by those
/// refusals would refuse too.
#[sqlx::test(migrations = false)]
async fn with_risk_down_orders_are_refused_but_traders_still_cancel_and_read(pool: PgPool) {
    let prefix = format!("test:{}", uuid::Uuid::now_v7());
    let same_broker = ("BOURSE_REDIS_KEY_PREFIX", prefix.as_str());
    let order = |side: &str| {
        json!({"symbol": "BTC-USD", "side": side, "type": "limit", "price": "30000.00",
               "quantity": "0.5", "time_in_force": "gtc"})
    };
    // Alice's ask rests while risk is up.
    let app = spawn_app_with(pool.clone(), &[same_broker]).await;
    let (_admin, alice, _bob) = app.funded_market().await;
    let ask = app.placed_order(&alice, &order("sell")).await;
    let ask = ask["id"].as_str().unwrap().to_owned();
    app.stop().await;

    // Then the platform runs without it.
    let nowhere = format!("http://127.0.0.1:{}", service_kit::testing::closed_port());
    let app = spawn_app_without(
        pool,
        &[same_broker, ("BOURSE_RISK_URL", nowhere.as_str())],
        &[Target::Risk],
    )
    .await;
    let alice: Tokens = app
        .login("alice@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    // Twice the calls the gateway's breaker needs for a verdict, every one refused.
    for _ in 0..20 {
        let refused = app.place_order(&alice, &order("buy")).await;
        assert_eq!(refused.headers()[resilience::FAILED_UPSTREAM], "risk");
        assert_problem(
            refused,
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_unavailable",
        )
        .await;
    }

    let book = app.get("/v1/markets/BTC-USD/book").await;
    assert_eq!(book.status(), StatusCode::OK);
    let book: Value = book.json().await.unwrap();
    assert_eq!(book["asks"][0][0], "30000.00", "{book}");
    let own = app
        .get_authed(&format!("/v1/orders/{ask}"), &alice.access_token)
        .await;
    assert_eq!(own.status(), StatusCode::OK);
    let cancelled = app
        .client
        .delete(app.url(&format!("/v1/orders/{ask}")))
        .bearer_auth(&alice.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::OK);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
}

#[sqlx::test(migrations = false)]
async fn health_and_metrics_are_served_by_every_service(pool: PgPool) {
    let app = spawn_app(pool).await;
    for base in [&app.gateway, &app.auth] {
        assert_eq!(
            app.client
                .get(format!("{base}/health/live"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
        let ready: Value = app
            .client
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ready["status"], "ready", "{base}: {ready}");
    }
    let ready: Value = app
        .client
        .get(format!("{}/health/ready", app.auth))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["postgres"], "ok");

    app.login("nobody@example.com", "some wrong password").await;
    let metrics = app.metrics().await;
    for service in ["gateway", "auth"] {
        let series = format!(
            r#"http_requests_total{{service="{service}",method="POST",route="/v1/auth/login",status="401"}}"#
        );
        assert!(
            metrics.contains(&series),
            "{series} missing from:\n{metrics}"
        );
    }
    assert!(metrics.contains("http_request_duration_seconds_bucket"));
}

#[sqlx::test(migrations = false)]
async fn an_upstream_that_never_answers_is_a_504(pool: PgPool) {
    let (url, _connections) = silent_upstream().await;
    let app = spawn_app_with(
        pool,
        &[
            ("BOURSE_AUTH_URL", url.as_str()),
            ("BOURSE_GATEWAY_UPSTREAM_TIMEOUT_MS", "300"),
        ],
    )
    .await;

    let response = app.login("a@example.com", "whatever password").await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert_problem(response, StatusCode::GATEWAY_TIMEOUT, "upstream_timeout").await;
}

/// ADR 0034: orders may be given a timeout of its own. With the shared one at a minute, a
/// silent orders is answered 504 after orders' 300 ms — not after the minute, which the
/// request's own deadline (10 s) would cut short with another answer.
#[sqlx::test(migrations = false)]
async fn orders_is_waited_for_as_long_as_its_own_timeout_says(pool: PgPool) {
    let (url, _connections) = silent_upstream().await;
    let app = spawn_app_without(
        pool,
        &[
            ("BOURSE_ORDERS_URL", url.as_str()),
            ONLY_THE_TEST_CALLS_THE_STAND_IN,
            ("BOURSE_GATEWAY_UPSTREAM_TIMEOUT_MS", "60000"),
            ("BOURSE_GATEWAY_ORDERS_TIMEOUT_MS", "300"),
        ],
        CALLS_ORDERS_AT_START,
    )
    .await;

    let response = app.get("/v1/instruments").await;
    assert_problem(response, StatusCode::GATEWAY_TIMEOUT, "upstream_timeout").await;
}

/// REL-06: the permits are per upstream. One that sits on its requests (here auth, a silent
/// stand-in) is shed at once beyond its limit, and every other upstream's routes are still
/// admitted — with one pool for all, a stalled orders shed every balance read under load.
#[sqlx::test(migrations = false)]
async fn beyond_its_in_flight_limit_an_upstream_is_shed_at_once_while_the_others_are_admitted(
    pool: PgPool,
) {
    let (url, mut connections) = silent_upstream().await;
    let app = spawn_app_without(
        pool,
        &[
            ("BOURSE_AUTH_URL", url.as_str()),
            ONLY_THE_TEST_CALLS_THE_STAND_IN,
            ("BOURSE_GATEWAY_MAX_IN_FLIGHT", "1"),
            ("BOURSE_GATEWAY_QUEUE_DEADLINE_MS", "20"),
            ("BOURSE_GATEWAY_UPSTREAM_TIMEOUT_MS", "60000"),
        ],
        CALLS_AUTH_AT_START,
    )
    .await;

    // The one permit is taken by a request the upstream sits on.
    let stuck = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/v1/auth/login");
        async move {
            client
                .post(url)
                .json(&json!({ "email": "a@example.com", "password": "whatever password" }))
                .send()
                .await
        }
    });
    let first = connections.recv().await.unwrap();

    // The next is refused at once, saying when to retry, and never reaches the upstream.
    let response = app.login("b@example.com", "whatever password").await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    assert!(
        connections.try_recv().is_err(),
        "a shed request was forwarded"
    );
    // Health is not a forwarded request: an overloaded gateway still reports itself.
    let live = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    // (The recorder is the test binary's, shared by tests running beside this one: at least.)
    let shed = shed(&app.metrics().await, "traffic", "auth");
    assert!(shed >= 1.0, "the refusal counted as shed: {shed}");
    // Another upstream's route has permits of its own: orders answers the public read.
    let instruments = app.get("/v1/instruments").await;
    assert_eq!(instruments.status(), StatusCode::OK);

    // The stuck request ends (its upstream hangs up): its permit is free again.
    drop(first);
    let ended = stuck.await.unwrap().unwrap();
    assert!(ended.status().is_server_error());
    let retried = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/v1/auth/login");
        async move {
            client
                .post(url)
                .json(&json!({ "email": "b@example.com", "password": "whatever password" }))
                .send()
                .await
        }
    });
    let admitted = connections.recv().await;
    assert!(admitted.is_some(), "admitted once a permit was free");
    retried.abort();
}

/// A stand-in upstream that accepts connections and then says nothing, like a hung process:
/// its URL, and each accepted connection (held open until dropped).
/// Alerting watches every service of the process by default, the gateway among them, and the
/// gateway's readiness asks each upstream — the test's stand-in for auth too. Tests that count
/// the calls reaching a stand-in point the watch elsewhere (a closed port).
const ONLY_THE_TEST_CALLS_THE_STAND_IN: (&str, &str) =
    ("BOURSE_ALERTING_WATCH", "elsewhere=http://127.0.0.1:9");

/// Services that ask auth for a service token as soon as they start (risk, for settlement's
/// balances: ADR 0023): left out of tests that count every call reaching a stand-in for auth.
const CALLS_AUTH_AT_START: &[Target] = &[Target::Risk];

/// Services that call orders as soon as they start (risk for its fence and mark, settlement's
/// reconciliation): left out of tests that give a stand-in orders' address.
const CALLS_ORDERS_AT_START: &[Target] = &[Target::Risk, Target::Settlement];

async fn silent_upstream() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<tokio::net::TcpStream>,
) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let (accepted, connections) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = silent.accept().await {
            if accepted.send(socket).is_err() {
                break;
            }
        }
    });
    (url, connections)
}

/// A stand-in upstream that fails every request with 500 and counts them.
async fn failing_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let hits = counted.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

#[sqlx::test(migrations = false)]
async fn a_failing_upstream_trips_its_breaker_and_then_gets_no_more_calls(pool: PgPool) {
    let (auth_url, hits) = failing_upstream().await;
    let app = spawn_app_without(
        pool,
        &[
            ("BOURSE_AUTH_URL", auth_url.as_str()),
            ONLY_THE_TEST_CALLS_THE_STAND_IN,
            ("BOURSE_GATEWAY_UPSTREAM_RETRIES", "0"),
            ("BOURSE_GATEWAY_UPSTREAM_BREAKER_MINIMUM_CALLS", "2"),
            ("BOURSE_GATEWAY_UPSTREAM_BREAKER_OPEN_FOR_MS", "3600000"),
        ],
        CALLS_AUTH_AT_START,
    )
    .await;

    for _ in 0..2 {
        let response = app.login("a@example.com", "whatever password").await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);

    // Open: answered at once with 503 and Retry-After, and auth is not called.
    let response = app.login("a@example.com", "whatever password").await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 60);
    let body = assert_problem(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream_unavailable",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("circuit open"));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);

    // Operators (and alerting) learn of it on the ops stream.
    let (event_type, envelope) = app.first_event("ops").await;
    assert_eq!(event_type, "CircuitBreakerOpened");
    assert_eq!(envelope["producer"], "gateway");
    assert_eq!(envelope["payload"]["upstream"], "auth");
    assert_eq!(envelope["payload"]["to"], "open");

    // The breaker's state is a metric.
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            r#"resilience_breaker_state{service="gateway",upstream="auth",state="open"} 1"#
        ),
        "{metrics}"
    );
}
