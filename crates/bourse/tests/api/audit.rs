//! The audit chain (SEC-16): written with the actions, verifiable, tamper-evident.

use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{auth_pool, spawn_app};

#[sqlx::test(migrations = false)]
async fn security_events_are_chained_and_the_chain_verifies(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.signed_up("ivan@example.com").await;
    assert_eq!(
        app.login("ivan@example.com", "wrong password!!")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    let events: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM auth.audit_log ORDER BY seq")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(
        events,
        [
            "signing_key_rotated",
            "user_registered",
            "login_succeeded",
            "login_failed"
        ]
    );

    let report = auth::audit::verify_chain(&auth_pool(&app).await)
        .await
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows, 4);
}

#[sqlx::test(migrations = false)]
async fn audited_actions_at_the_same_moment_each_get_their_own_link(pool: PgPool) {
    let app = spawn_app(pool).await;
    // Failed logins (for unknown emails, so no account is throttled) racing sign-ups: every one
    // is audited, and each append must wait for the one before it.
    let failed = (0..12).map(|i| {
        let app = &app;
        async move {
            app.login(&format!("nobody-{i}@example.com"), "wrong password!!")
                .await
                .status()
        }
    });
    let registered = (0..6).map(|i| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/v1/auth/register"))
                .json(&serde_json::json!({
                    "email": format!("racer-{i}@example.com"),
                    "password": "correct horse battery staple",
                }))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let (failed, registered) = tokio::join!(
        futures_util::future::join_all(failed),
        futures_util::future::join_all(registered)
    );
    assert!(
        failed.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{failed:?}"
    );
    assert!(registered.iter().all(|s| s.is_success()), "{registered:?}");

    let report = auth::audit::verify_chain(&auth_pool(&app).await)
        .await
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
    // The key rotation at start, 6 sign-ups, 12 failed logins.
    assert_eq!(report.rows, 19);
}

#[sqlx::test(migrations = false)]
async fn the_table_refuses_changes_and_the_chain_exposes_a_superuser_who_forces_one(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.signed_up("judy@example.com").await;

    let update = sqlx::query("UPDATE auth.audit_log SET details = '{}' WHERE seq = 2")
        .execute(&app.db)
        .await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("DELETE FROM auth.audit_log WHERE seq = 3")
        .execute(&app.db)
        .await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));

    // A superuser can switch the guard off; the hash chain still tells.
    as_superuser_past_the_triggers(
        &app.db,
        r#"UPDATE auth.audit_log SET details = '{"email":"someone-else@example.com"}' WHERE seq = 2"#,
    )
    .await;

    let report = auth::audit::verify_chain(&auth_pool(&app).await)
        .await
        .unwrap();
    assert_eq!(report.broken_at, Some(2));
}

#[sqlx::test(migrations = false)]
async fn a_removed_row_breaks_the_chain(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.signed_up("ken@example.com").await;
    as_superuser_past_the_triggers(&app.db, "DELETE FROM auth.audit_log WHERE seq = 2").await;

    let report = auth::audit::verify_chain(&auth_pool(&app).await)
        .await
        .unwrap();
    assert_eq!(report.broken_at, Some(3));
}

/// What only a superuser can do: switch the append-only triggers off, run `sql`, switch them
/// back on — the tampering the hash chain exists to expose.
async fn as_superuser_past_the_triggers(pool: &PgPool, sql: &'static str) {
    let mut tx = pool.begin().await.unwrap();
    for statement in [
        "ALTER TABLE auth.audit_log DISABLE TRIGGER USER",
        sql,
        "ALTER TABLE auth.audit_log ENABLE TRIGGER USER",
    ] {
        sqlx::query(statement).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}
