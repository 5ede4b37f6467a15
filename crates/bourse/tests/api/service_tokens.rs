//! Service-to-service authentication (SEC-14): client-credential tokens with audience and
//! scope, fetched from the real auth service, verified against its real JWKS.

use std::sync::Arc;

use access::service::{RISK_CHECK, client_secret};
use access::{HttpKeySource, JwksCache, ServiceClaims, TokenVerifier};
use reqwest::StatusCode;
use resilience::{Call, Policy, TokenError, TokenSource, Upstream};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use service_kit::Env;
use sqlx::PgPool;

use crate::helpers::{TestApp, assert_problem, spawn_app};

/// The secret the test app's auth knows for `orders` (the development default).
fn orders_secret() -> SecretString {
    client_secret(
        &mut Env::from_pairs(Vec::<(String, String)>::new()),
        "orders",
        false,
    )
}

fn token_source(app: &TestApp, secret: SecretString) -> TokenSource {
    let auth = Upstream::new(
        "orders",
        "auth",
        &app.auth,
        reqwest::Client::new(),
        Policy::default(),
    )
    .unwrap();
    TokenSource::new(auth, "orders", secret)
}

/// What a called service (`audience`) uses to check service tokens.
fn verifier_for(app: &TestApp, audience: &str) -> TokenVerifier<ServiceClaims> {
    let keys = HttpKeySource::new(
        reqwest::Client::new(),
        format!("{}/.well-known/jwks.json", app.auth),
    );
    TokenVerifier::new(JwksCache::new(Arc::new(keys)), "bourse-auth", audience)
}

#[sqlx::test(migrations = false)]
async fn a_service_gets_a_token_for_what_it_may_call_and_nothing_else(pool: PgPool) {
    let app = spawn_app(pool).await;
    let tokens = token_source(&app, orders_secret());

    let token = tokens.token("risk").await.unwrap();
    let claims = verifier_for(&app, "risk")
        .verify(token.expose_secret())
        .await
        .unwrap();
    assert_eq!(claims.client(), "orders");
    assert!(claims.has_scope(RISK_CHECK));
    assert!(!claims.has_scope(access::service::RISK_WITHDRAWAL));

    // The audience binds it: settlement would refuse a token minted for risk.
    assert!(
        verifier_for(&app, "settlement")
            .verify(token.expose_secret())
            .await
            .is_err()
    );
    // Orders holds no grant at auth, nor at settlement since risk reserves what orders need
    // (ADR 0023 slice 3b): no token for either.
    for audience in ["auth", "settlement"] {
        match tokens.token(audience).await {
            Err(TokenError::Refused { status, detail }) => {
                assert_eq!(status, 403);
                assert!(detail.contains("audience_not_granted"), "{detail}");
            }
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
    }
    // Reused while fresh: one token per audience, not one per call.
    let again = tokens.token("risk").await.unwrap();
    assert_eq!(again.expose_secret(), token.expose_secret());
}

#[sqlx::test(migrations = false)]
async fn wrong_credentials_get_401_and_the_route_is_not_public(pool: PgPool) {
    let app = spawn_app(pool).await;
    for (client, secret) in [
        ("orders", "not the secret"),
        ("mallory", "development-only-secret-of-orders"),
    ] {
        let response = app
            .client
            .post(format!("{}/internal/v1/service-tokens", app.auth))
            .json(&json!({ "client_id": client, "client_secret": secret, "audience": "risk" }))
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    }
    // The same request through the gateway finds nothing there.
    let response = app
        .client
        .post(app.url("/internal/v1/service-tokens"))
        .json(&json!({ "client_id": "orders", "client_secret": "development-only-secret-of-orders", "audience": "risk" }))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[sqlx::test(migrations = false)]
async fn user_tokens_and_service_tokens_never_pass_for_each_other(pool: PgPool) {
    let app = spawn_app(pool).await;
    let user = app.signed_up("trader@example.com").await;
    assert!(
        verifier_for(&app, "risk")
            .verify(&user.access_token)
            .await
            .is_err(),
        "a user's token is not a service token"
    );

    let service = token_source(&app, orders_secret())
        .token("risk")
        .await
        .unwrap();
    assert_eq!(
        app.me(service.expose_secret()).await.status(),
        StatusCode::UNAUTHORIZED,
        "a service token is not a user's token"
    );
}

#[sqlx::test(migrations = false)]
async fn an_authenticated_upstream_carries_a_valid_token_on_every_call(pool: PgPool) {
    let app = spawn_app(pool).await;
    // A stand-in "risk" that records the Authorization header it receives.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<String>();
    let risk = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let seen_tx = seen_tx.clone();
        async move {
            let authorization = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let _ = seen_tx.send(authorization);
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let risk_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, risk).await.unwrap() });

    let tokens = Arc::new(token_source(&app, orders_secret()));
    let upstream = Upstream::authenticated(
        "risk",
        risk_url,
        reqwest::Client::new(),
        Policy::default(),
        tokens,
    )
    .unwrap();
    let response = upstream
        .send(Call::post_json("/internal/v1/checks/batch", "{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let authorization = seen.recv().await.unwrap();
    let token = authorization.strip_prefix("Bearer ").unwrap();
    let claims = verifier_for(&app, "risk").verify(token).await.unwrap();
    assert!(claims.has_scope(RISK_CHECK));
}

#[sqlx::test(migrations = false)]
async fn without_a_token_an_authenticated_upstream_is_not_called(pool: PgPool) {
    let app = spawn_app(pool).await;
    let tokens = Arc::new(token_source(&app, SecretString::from("wrong".to_owned())));
    // Nothing listens there; the call must fail before trying.
    let upstream = Upstream::authenticated(
        "risk",
        "http://127.0.0.1:9",
        reqwest::Client::new(),
        Policy::default(),
        tokens,
    )
    .unwrap();
    let error = upstream.send(Call::get("/")).await.unwrap_err();
    assert!(
        matches!(error, resilience::CallError::NoServiceToken { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.problem().details().status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}
