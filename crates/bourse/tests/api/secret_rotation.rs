//! A database credential rotated in the secret store reaches the running services without a
//! restart (SEC-11): `DATABASE_URL` is a Vault reference (a real OpenBao dev server), the store
//! issues a new login and the old one's sessions are cut off, and every service carries on
//! under the new one.

use serde_json::json;
use service_kit::testing::eventually;
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

use crate::helpers::{count, database_url, spawn_app_with};

const SERVICES: &str = "('auth', 'orders', 'settlement', 'risk', 'alerting')";

/// How many of the five services have a session as `user`.
async fn services_connected_as(db: &PgPool, user: &str) -> i64 {
    count(
        db,
        &format!(
            "SELECT count(DISTINCT application_name) FROM pg_stat_activity
             WHERE datname = current_database() AND usename = '{user}'
               AND application_name IN {SERVICES}"
        ),
    )
    .await
}

#[sqlx::test(migrations = false)]
async fn a_database_credential_rotated_in_vault_is_used_without_a_restart(pool: PgPool) {
    let bao = secrets::testing::OpenBao::start().await;
    let first_url = database_url(&pool);
    assert!(first_url.starts_with("postgres://postgres@"), "{first_url}");
    bao.put("bourse/db", json!({ "url": first_url })).await;
    let app = spawn_app_with(
        pool.clone(),
        &[
            ("DATABASE_URL", "vault:secret/bourse/db#url"),
            ("BOURSE_VAULT_ADDR", &bao.address),
            ("BOURSE_VAULT_TOKEN", &bao.token),
            ("BOURSE_SECRETS_REFRESH_MS", "100"),
        ],
    )
    .await;
    let before = app.signed_up("before@example.com").await;
    assert_eq!(services_connected_as(&app.db, "postgres").await, 5);

    // The store issues a new login, as Vault's database engine does on rotation…
    let rotated = format!("bourse_rotated_{}", Uuid::now_v7().simple());
    sqlx::query(AssertSqlSafe(format!(
        "CREATE ROLE {rotated} LOGIN SUPERUSER"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let rotated_url =
        first_url.replacen("postgres://postgres@", &format!("postgres://{rotated}@"), 1);
    bao.put("bourse/db", json!({ "url": rotated_url })).await;

    // …and the old login's sessions are cut off. The services reconnect with what the store
    // says now; nothing restarts.
    eventually(
        "every service on the rotated login, none on the old",
        || async {
            if services_connected_as(&app.db, &rotated).await == 5
                && services_connected_as(&app.db, "postgres").await == 0
            {
                return true;
            }
            sqlx::query(AssertSqlSafe(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND usename = 'postgres'
               AND application_name IN {SERVICES}"
            )))
            .execute(&app.db)
            .await
            .unwrap();
            false
        },
    )
    .await;

    // The platform works on: old sessions refresh, new users sign up.
    let refreshed = app.refresh(&before.refresh_token).await;
    assert_eq!(refreshed.status(), reqwest::StatusCode::OK);
    app.signed_up("after@example.com").await;

    app.stop().await;
    for statement in [
        format!("REASSIGN OWNED BY {rotated} TO postgres"),
        format!("DROP OWNED BY {rotated}"),
        format!("DROP ROLE {rotated}"),
    ] {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&pool)
            .await
            .unwrap();
    }
}
