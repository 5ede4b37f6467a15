//! Backup and restore, drilled (REL-14): a platform with users, an instrument, balances and a
//! settled trade is backed up with `tools/backup/backup.sh`, restored into a new database with
//! `tools/backup/restore.sh`, and a second platform started on the copy serves the same users
//! and balances and reconciles clean. A backup altered after it was taken restores nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};
use service_kit::testing::eventually;
use sqlx::{AssertSqlSafe, PgPool};
use tokio::process::Command;
use uuid::Uuid;

use crate::helpers::{
    PASSWORD, TestApp, Tokens, count, database_url, database_url_named, risk_funds, spawn_app,
};

fn script(name: &str) -> String {
    format!("{}/../../tools/backup/{name}", env!("CARGO_MANIFEST_DIR"))
}

async fn run(script_name: &str, args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(script(script_name))
        .args(args)
        .output()
        .await
        .expect("the script runs")
}

async fn login(app: &TestApp, email: &str) -> Tokens {
    let response = app.login(email, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK, "{email} logs in");
    response.json().await.unwrap()
}

/// `who`'s balances once nothing is held: every order here has filled, so what its check
/// reserved has moved into its trade, and the trade has settled as risk sees it (it follows
/// the ledger a stream hop behind, and loads it after a start).
async fn settled_balances(app: &TestApp, who: &Tokens) -> Value {
    service_kit::testing::eventually_some("balances with nothing held", || async {
        let response = app.get_authed("/v1/balances", &who.access_token).await;
        if response.status() != StatusCode::OK {
            return None;
        }
        let body: Value = response.json().await.unwrap();
        let nothing_held = body.as_array().unwrap().iter().all(|b| {
            b["held"]
                .as_str()
                .unwrap()
                .chars()
                .all(|c| c == '0' || c == '.')
        });
        nothing_held.then_some(body)
    })
    .await
}

#[sqlx::test(migrations = false)]
async fn a_backup_restores_into_a_platform_that_reconciles(pool: PgPool) {
    // A platform with something worth keeping: a settled trade.
    let app = spawn_app(pool.clone()).await;
    let (_admin, alice, bob) = app.funded_market().await;
    let order = |side: &str| {
        json!({ "symbol": "BTC-USD", "side": side, "type": "limit", "price": "30000.00",
                "quantity": "0.25", "time_in_force": "gtc" })
    };
    app.placed_order(&alice, &order("sell")).await;
    app.placed_order(&bob, &order("buy")).await;
    eventually("the trade to settle", || async {
        count(&app.db, "SELECT count(*) FROM settlement.settled_trades").await == 1
    })
    .await;
    let alice_before = settled_balances(&app, &alice).await;
    let bob_before = settled_balances(&app, &bob).await;

    // Backed up while running.
    let dir = std::env::temp_dir().join(format!("bourse-backup-{}", Uuid::now_v7()));
    let dir_text = dir.display().to_string();
    let backup = run("backup.sh", &[&database_url(&pool), &dir_text]).await;
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    let dump = String::from_utf8(backup.stdout).unwrap().trim().to_owned();
    app.stop().await;

    // Restored into a database of its own.
    let restored_name = format!("bourse_restored_{}", Uuid::now_v7().simple());
    let restored_url = database_url_named(&restored_name);
    let restore = run("restore.sh", &[&dump, &restored_url]).await;
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );

    // A platform on the copy: the same people, the same money, books that reconcile.
    let restored_pool = PgPool::connect(&restored_url).await.unwrap();
    let copy = spawn_app(restored_pool.clone()).await;
    let admin_copy = login(&copy, "treasury@example.com").await;
    let alice_copy = login(&copy, "alice@example.com").await;
    let bob_copy = login(&copy, "bob@example.com").await;
    assert_eq!(settled_balances(&copy, &alice_copy).await, alice_before);
    assert_eq!(settled_balances(&copy, &bob_copy).await, bob_before);
    let report = copy.reconciliation(&admin_copy).await;
    assert_eq!(report["ok"], true, "{report}");
    // …and it trades on, once risk decides on funds: the copy remembers the original's risk
    // start, so this start first waits out the checks that one answered (ADR 0023).
    let alice_id = copy.user_id(&alice_copy).await;
    risk_funds(&copy, &admin_copy, alice_id).await;
    copy.placed_order(&alice_copy, &order("sell")).await;
    copy.stop().await;
    restored_pool.close().await;

    // A backup altered after it was taken is refused before anything is created.
    let mut bytes = std::fs::read(&dump).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&dump, bytes).unwrap();
    let refused_name = format!("bourse_refused_{}", Uuid::now_v7().simple());
    let refused_url = database_url_named(&refused_name);
    let refused = run("restore.sh", &[&dump, &refused_url]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("checksum mismatch"));
    let created = count(
        &pool,
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{refused_name}'"),
    )
    .await;
    assert_eq!(created, 0, "nothing created from an altered backup");

    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE {restored_name} WITH (FORCE)"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
