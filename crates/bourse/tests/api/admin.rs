//! Roles and the admin surface (SEC-02, SEC-06, SEC-15).

use gateway::route_table::{Access, ROUTES};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{PASSWORD, Tokens, assert_problem, spawn_app, spawn_app_with};

#[sqlx::test(migrations = false)]
async fn every_protected_route_in_the_table_refuses_anonymous_callers(pool: PgPool) {
    let app = spawn_app(pool).await;
    let id = uuid::Uuid::now_v7().to_string();
    for route in ROUTES {
        let path = route.path.replace("{id}", &id);
        let response = app
            .client
            .request(route.method.clone(), app.url(&path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        if route.access == Access::Public {
            assert_ne!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{} {path} is public",
                route.method
            );
        } else {
            assert_problem(response, StatusCode::UNAUTHORIZED, "unauthenticated").await;
        }
    }
}

#[sqlx::test(migrations = false)]
async fn every_role_reaches_exactly_the_routes_the_table_grants_it(pool: PgPool) {
    let app = spawn_app(pool).await;
    let id = uuid::Uuid::now_v7().to_string();
    for role in access::Role::ALL {
        let name = role.as_str();
        let who = app
            .signed_up_with_roles(&format!("{name}@example.com"), &[name])
            .await;
        for route in ROUTES {
            let Access::Roles(granted) = route.access else {
                continue;
            };
            let path = route
                .path
                .replace("{id}", &id)
                .replace("{account_id}", &id)
                .replace("{symbol}", "BTC-USD");
            let response = app
                .client
                .request(route.method.clone(), app.url(&path))
                .bearer_auth(&who.access_token)
                .header("idempotency-key", uuid::Uuid::now_v7().to_string())
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let what = format!("{name}: {} {}", route.method, route.path);
            if granted.contains(&role) {
                assert!(
                    ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&response.status()),
                    "{what} is granted, got {}",
                    response.status()
                );
            } else {
                assert_eq!(
                    response.status(),
                    StatusCode::FORBIDDEN,
                    "{what} is not granted"
                );
            }
        }
    }
}

#[sqlx::test(migrations = false)]
async fn a_trader_cannot_use_admin_routes(pool: PgPool) {
    let app = spawn_app(pool).await;
    let trader = app.signed_up("trader@example.com").await;
    let me: Value = app.me(&trader.access_token).await.json().await.unwrap();
    let path = format!("/v1/admin/users/{}/roles", me["id"].as_str().unwrap());
    let body = json!({ "roles": ["admin"] });

    for base in [&app.gateway, &app.auth] {
        let response = app
            .client
            .put(format!("{base}{path}"))
            .bearer_auth(&trader.access_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let roles: Vec<String> = sqlx::query_scalar("SELECT roles FROM auth.users")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(roles, ["trader"], "no self-promotion");
}

#[sqlx::test(migrations = false)]
async fn an_admin_grants_roles_which_apply_from_the_next_refresh_and_are_audited(pool: PgPool) {
    let app = spawn_app(pool).await;
    let admin = app
        .signed_up_with_roles("admin@example.com", &["admin"])
        .await;
    let user = app.signed_up("newhire@example.com").await;
    let me: Value = app.me(&user.access_token).await.json().await.unwrap();
    let id = me["id"].as_str().unwrap();

    let granted = app
        .client
        .put(app.url(&format!("/v1/admin/users/{id}/roles")))
        .bearer_auth(&admin.access_token)
        .json(&json!({ "roles": ["risk_officer", "trader"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), StatusCode::OK);
    let granted: Value = granted.json().await.unwrap();
    assert_eq!(granted["roles"], json!(["risk_officer", "trader"]));

    let refreshed: Tokens = app.refresh(&user.refresh_token).await.json().await.unwrap();
    let claims = refreshed.access_token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["roles"], json!(["risk_officer", "trader"]));

    let audited: (String, String) = sqlx::query_as(
        "SELECT actor_id::text, details FROM auth.audit_log WHERE event_type = 'roles_changed'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let admin_me: Value = app.me(&admin.access_token).await.json().await.unwrap();
    assert_eq!(audited.0, admin_me["id"].as_str().unwrap());
    assert!(audited.1.contains("risk_officer"));

    let missing = app
        .client
        .put(app.url(&format!("/v1/admin/users/{}/roles", uuid::Uuid::now_v7())))
        .bearer_auth(&admin.access_token)
        .json(&json!({ "roles": ["trader"] }))
        .send()
        .await
        .unwrap();
    assert_problem(missing, StatusCode::NOT_FOUND, "not_found").await;

    // Not their own: an admin who demoted themselves could leave the platform without one.
    let own = app
        .client
        .put(app.url(&format!(
            "/v1/admin/users/{}/roles",
            admin_me["id"].as_str().unwrap()
        )))
        .bearer_auth(&admin.access_token)
        .json(&json!({ "roles": ["trader"] }))
        .send()
        .await
        .unwrap();
    assert_problem(own, StatusCode::FORBIDDEN, "own_roles").await;
    let still: Value = app.me(&admin.access_token).await.json().await.unwrap();
    assert_eq!(still["roles"], json!(["admin"]));
}

#[sqlx::test(migrations = false)]
async fn admin_routes_are_refused_from_addresses_outside_the_allowlist(pool: PgPool) {
    let app = spawn_app_with(pool, &[("BOURSE_GATEWAY_ADMIN_ALLOWLIST", "10.0.0.0/8")]).await;
    let admin = app
        .signed_up_with_roles("faraway@example.com", &["admin"])
        .await;
    let response = app
        .client
        .put(app.url(&format!("/v1/admin/users/{}/roles", uuid::Uuid::now_v7())))
        .bearer_auth(&admin.access_token)
        .json(&json!({ "roles": ["trader"] }))
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(body["detail"].as_str().unwrap().contains("address"));
    // Non-admin routes are unaffected.
    assert_eq!(
        app.login("faraway@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}
