//! One least-privilege database role per service (SEC-17).

use sqlx::PgPool;

use crate::helpers::spawn_app;

/// Runs `sql` as `role` and says whether PostgreSQL allowed it.
async fn allowed(pool: &PgPool, role: &str, sql: &str) -> bool {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL ROLE {role}")))
        .execute(&mut *tx)
        .await
        .unwrap();
    let result = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut *tx)
        .await;
    tx.rollback().await.unwrap();
    match result {
        Ok(_) => true,
        Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("42501") => false,
        Err(other) => panic!("{sql} as {role}: {other}"),
    }
}

#[sqlx::test(migrations = false)]
async fn each_service_role_reaches_only_its_own_schema(pool: PgPool) {
    let app = spawn_app(pool).await;

    assert!(allowed(&app.db, "bourse_auth", "SELECT count(*) FROM auth.users").await);
    assert!(
        allowed(
            &app.db,
            "bourse_orders",
            "SELECT count(*) FROM orders.orders"
        )
        .await
    );
    assert!(
        allowed(
            &app.db,
            "bourse_orders",
            "SELECT count(*) FROM orders.outbox"
        )
        .await
    );

    assert!(
        !allowed(&app.db, "bourse_auth", "SELECT count(*) FROM orders.orders").await,
        "auth reads orders"
    );
    assert!(
        !allowed(&app.db, "bourse_orders", "SELECT count(*) FROM auth.users").await,
        "orders reads users"
    );
    assert!(
        !allowed(
            &app.db,
            "bourse_orders",
            "SELECT count(*) FROM auth.refresh_tokens"
        )
        .await
    );
    assert!(
        !allowed(
            &app.db,
            "bourse_auth",
            "CREATE TABLE auth.intruder (id int)"
        )
        .await,
        "no DDL"
    );
}

#[sqlx::test(migrations = false)]
async fn the_auth_role_cannot_rewrite_the_audit_log_even_without_triggers(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.signed_up("audited@example.com").await;
    assert!(
        allowed(
            &app.db,
            "bourse_auth",
            "SELECT count(*) FROM auth.audit_log"
        )
        .await
    );
    sqlx::query("ALTER TABLE auth.audit_log DISABLE TRIGGER USER")
        .execute(&app.db)
        .await
        .unwrap();
    assert!(
        !allowed(
            &app.db,
            "bourse_auth",
            "UPDATE auth.audit_log SET details = '{}'"
        )
        .await
    );
    assert!(!allowed(&app.db, "bourse_auth", "DELETE FROM auth.audit_log").await);
    sqlx::query("ALTER TABLE auth.audit_log ENABLE TRIGGER USER")
        .execute(&app.db)
        .await
        .unwrap();
}
