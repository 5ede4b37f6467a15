//! API keys for programs (SEC-19): made, listed and revoked by their owner, the secret shown
//! once and kept sealed, every change in the audit chain.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, Tokens, assert_problem, spawn_app};

impl TestApp {
    async fn create_api_key(&self, who: &Tokens, body: &Value) -> Response {
        self.client
            .post(self.url("/v1/api-keys"))
            .bearer_auth(&who.access_token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn api_keys(&self, who: &Tokens) -> Vec<Value> {
        let response = self.get_authed("/v1/api-keys", &who.access_token).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn revoke_api_key(&self, who: &Tokens, id: &str) -> Response {
        self.client
            .delete(self.url(&format!("/v1/api-keys/{id}")))
            .bearer_auth(&who.access_token)
            .send()
            .await
            .unwrap()
    }
}

#[sqlx::test(migrations = false)]
async fn a_key_is_shown_once_kept_sealed_listed_without_its_secret_and_revoked_by_its_owner(
    pool: PgPool,
) {
    let app = spawn_app(pool).await;
    let alice = app.signed_up("alice@example.com").await;
    let bob = app.signed_up("bob@example.com").await;

    // Created: the secret is in this answer only.
    let created = app
        .create_api_key(
            &alice,
            &json!({ "name": "market maker", "scopes": ["trade", "read", "read"],
                     "allowed_ips": ["10.1.2.3/24", "192.0.2.7"] }),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 40, "256 bits of secret");
    assert!(created["key_id"].as_str().unwrap().starts_with("bk_"));
    assert_eq!(created["scopes"], json!(["read", "trade"]));
    // Networks as PostgreSQL keeps them: no host bits.
    assert_eq!(
        created["allowed_ips"],
        json!(["10.1.2.0/24", "192.0.2.7/32"])
    );
    let id = created["id"].as_str().unwrap().to_owned();

    // Sealed at rest: the secret is nowhere in the row.
    let stored: String = sqlx::query_scalar("SELECT secret_sealed FROM auth.api_keys")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(
        !stored.contains(&secret) && stored.starts_with("bse1."),
        "{stored}"
    );

    // Listed by its owner without the secret; nobody else sees it.
    let listed = app.api_keys(&alice).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(listed[0].get("secret").is_none(), "{}", listed[0]);
    assert!(!listed[0].to_string().contains(&secret));
    assert!(app.api_keys(&bob).await.is_empty());

    // Bob cannot revoke it; Alice can, once.
    assert_problem(
        app.revoke_api_key(&bob, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(
        app.revoke_api_key(&alice, &id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        app.revoke_api_key(&alice, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let listed = app.api_keys(&alice).await;
    assert!(listed[0]["revoked_at"].is_string(), "{}", listed[0]);

    // Both changes are in the audit chain, with who did them.
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM auth.audit_log WHERE event_type LIKE 'api_key_%' ORDER BY seq",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(audited, ["api_key_created", "api_key_revoked"]);
}

#[sqlx::test(migrations = false)]
async fn hostile_key_requests_are_refused_and_change_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let alice = app.signed_up("alice@example.com").await;

    for (body, status, code) in [
        (
            json!({ "name": "x", "scopes": ["admin"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({ "name": "x", "scopes": [] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({ "name": "   ", "scopes": ["read"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({ "name": "x".repeat(65), "scopes": ["read"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({ "name": "x", "scopes": ["read"], "allowed_ips": ["not-an-ip"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({ "name": "x", "scopes": ["read"], "allowed_ips": [] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({ "name": "x", "scopes": ["read"], "owner": Uuid::now_v7() }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ] {
        let refused = app.create_api_key(&alice, &body).await;
        assert_problem(refused, status, code).await;
    }
    let anonymous = app
        .client
        .post(app.url("/v1/api-keys"))
        .json(&json!({ "name": "x", "scopes": ["read"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_problem(
        app.revoke_api_key(&alice, "not-a-uuid").await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
    )
    .await;
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM auth.api_keys")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(keys, 0);

    // At most ten active keys: the eleventh waits for a revocation.
    for n in 0..10 {
        let made = app
            .create_api_key(
                &alice,
                &json!({ "name": format!("bot {n}"), "scopes": ["read"] }),
            )
            .await;
        assert_eq!(made.status(), StatusCode::CREATED);
    }
    assert_problem(
        app.create_api_key(&alice, &json!({ "name": "one more", "scopes": ["read"] }))
            .await,
        StatusCode::CONFLICT,
        "too_many_api_keys",
    )
    .await;
}
