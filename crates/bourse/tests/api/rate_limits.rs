//! Rate limits (SEC-07): per principal in Redis, per IP in memory, failed logins per account.

use reqwest::{Response, StatusCode};
use service_kit::testing::eventually;
use sqlx::PgPool;

use crate::helpers::{PASSWORD, assert_problem, spawn_app_with};

fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_str()
        .unwrap()
        .to_owned()
}

#[sqlx::test(migrations = false)]
async fn a_principal_over_its_budget_gets_429_with_headers_then_recovers(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("BOURSE_GATEWAY_PRINCIPAL_RATE_PER_SEC", "1"),
            ("BOURSE_GATEWAY_PRINCIPAL_BURST", "3"),
        ],
    )
    .await;
    let tokens = app.signed_up("busy@example.com").await;

    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = app.me(&tokens.access_token).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "ratelimit-policy"),
            r#""standard";q=3;w=3"#
        );
        remaining.push(header(&response, "ratelimit"));
    }
    assert!(
        remaining[0].starts_with(r#""standard";r=2;"#),
        "{remaining:?}"
    );
    assert!(
        remaining[2].starts_with(r#""standard";r=0;"#),
        "{remaining:?}"
    );

    let limited = app.me(&tokens.access_token).await;
    let retry_after: u64 = header(&limited, "retry-after").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "retry after {retry_after}s");
    assert_eq!(
        header(&limited, "ratelimit-policy"),
        r#""standard";q=3;w=3"#
    );
    assert!(header(&limited, "ratelimit").starts_with(r#""standard";r=0;"#));
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;

    // The budget refills with time; poll until it does (bounded), as a client honouring
    // Retry-After would.
    eventually("the budget to refill", || async {
        app.me(&tokens.access_token).await.status() == StatusCode::OK
    })
    .await;

    // The budget is per principal: another user is unaffected.
    let other = app.signed_up("calm@example.com").await;
    assert_eq!(app.me(&other.access_token).await.status(), StatusCode::OK);
}

#[sqlx::test(migrations = false)]
async fn the_per_principal_budget_is_shared_by_every_gateway_replica(pool: PgPool) {
    let limits = [
        ("BOURSE_GATEWAY_PRINCIPAL_RATE_PER_SEC", "1"),
        ("BOURSE_GATEWAY_PRINCIPAL_BURST", "2"),
    ];
    let first = spawn_app_with(pool.clone(), &limits).await;
    let prefix = first.redis_prefix.clone();
    let mut second_overrides = limits.to_vec();
    second_overrides.push(("BOURSE_REDIS_KEY_PREFIX", prefix.as_str()));
    let second = spawn_app_with(pool, &second_overrides).await;
    let tokens = first.signed_up("twice@example.com").await;

    assert_eq!(
        first.me(&tokens.access_token).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        second.me(&tokens.access_token).await.status(),
        StatusCode::OK
    );
    let limited = second.me(&tokens.access_token).await;
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[sqlx::test(migrations = false)]
async fn one_address_over_its_budget_gets_429_before_any_token_is_read(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("BOURSE_GATEWAY_IP_RATE_PER_SEC", "1"),
            ("BOURSE_GATEWAY_IP_BURST", "2"),
        ],
    )
    .await;
    let jwks = || app.client.get(app.url("/.well-known/jwks.json")).send();
    assert_eq!(jwks().await.unwrap().status(), StatusCode::OK);
    assert_eq!(jwks().await.unwrap().status(), StatusCode::OK);
    let limited = jwks().await.unwrap();
    assert!(header(&limited, "retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(header(&limited, "ratelimit-policy"), r#""ip";q=2;w=2"#);
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;

    // A forged X-Forwarded-For from an untrusted peer does not buy a new budget.
    let spoofed = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .header("x-forwarded-for", "198.51.100.23")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[sqlx::test(migrations = false)]
async fn repeated_failed_logins_lock_the_account_for_a_window(pool: PgPool) {
    let app = spawn_app_with(pool, &[("BOURSE_AUTH_MAX_FAILED_LOGINS_PER_ACCOUNT", "5")]).await;
    app.signed_up("target@example.com").await;

    for _ in 0..5 {
        let response = app.login("target@example.com", "guessing wrong pw").await;
        assert_problem(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    // Even the right password is refused now: the attacker cannot tell it was right.
    let locked = app.login("target@example.com", PASSWORD).await;
    let retry_after: u64 = header(&locked, "retry-after").parse().unwrap();
    assert!(retry_after > 60 && retry_after <= 900, "{retry_after}");
    assert_problem(
        locked,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failed_logins",
    )
    .await;

    // Other accounts from the same address are not locked out by it.
    app.signed_up("bystander@example.com").await;
}

#[sqlx::test(migrations = false)]
async fn failed_logins_from_one_address_are_throttled_across_accounts(pool: PgPool) {
    let app = spawn_app_with(pool, &[("BOURSE_AUTH_MAX_FAILED_LOGINS_PER_IP", "3")]).await;
    for i in 0..3 {
        let response = app
            .login(&format!("spray{i}@example.com"), "password spraying")
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let throttled = app.login("spray9@example.com", "password spraying").await;
    assert_problem(
        throttled,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failed_logins",
    )
    .await;
}
