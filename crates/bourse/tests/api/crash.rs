//! Crashes (REL-09): settlement, as its own OS process, is killed with SIGKILL while trades
//! are being settled, and restarted. Whatever it had committed but not acknowledged is
//! delivered again and finds its inbox row; whatever it had not committed is delivered again
//! and applied. Nothing is lost, nothing is booked twice.

use bourse::Target;
use reqwest::StatusCode;
use serde_json::{Value, json};
use service_kit::testing::eventually;
use sqlx::PgPool;
use tokio::process::{Child, Command};

use crate::helpers::{base_env, count, spawn_app_without};

/// `bourse serve settlement` on `port`, sharing the test's database and Redis prefix.
fn settlement_process(env: &[(String, String)], port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_bourse"))
        .args(["serve", "settlement"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("BOURSE_SETTLEMENT_PORT", port.to_string())
        // One event per transaction: as many commit-then-acknowledge windows as trades.
        .env("BOURSE_SETTLEMENT_CONSUMER_BATCH", "1")
        .env("BOURSE_SETTLEMENT_CONSUMER_RETRY_AFTER_MS", "200")
        .env("BOURSE_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn ready(url: &str) -> bool {
    reqwest::get(format!("{url}/health/ready"))
        .await
        .is_ok_and(|r| r.status().is_success())
}

fn limit(side: &str) -> Value {
    json!({ "symbol": "BTC-USD", "side": side, "type": "limit", "price": "30000.00",
            "quantity": "0.01", "time_in_force": "gtc" })
}

#[sqlx::test(migrations = false)]
async fn a_settlement_killed_mid_stream_loses_and_doubles_nothing(pool: PgPool) {
    // Reserved below the ephemeral range: while settlement is down, no other test's listener
    // can be given its port.
    let port = service_kit::testing::free_ports(1)[0];
    let settlement_url = format!("http://127.0.0.1:{port}");
    let mut env = base_env(&pool);
    let prefix = env
        .iter()
        .find(|(k, _)| k == "BOURSE_REDIS_KEY_PREFIX")
        .map(|(_, v)| v.clone())
        .unwrap();
    let app = spawn_app_without(
        pool,
        &[
            ("BOURSE_REDIS_KEY_PREFIX", prefix.as_str()),
            ("BOURSE_SETTLEMENT_URL", settlement_url.as_str()),
        ],
        &[Target::Settlement],
    )
    .await;
    env.push(("BOURSE_AUTH_URL".to_owned(), app.auth.clone()));
    env.push(("BOURSE_ORDERS_URL".to_owned(), app.orders.clone()));
    // Reconciliation may compare trades the moment they are executed.
    env.push((
        "BOURSE_SETTLEMENT_RECONCILIATION_GRACE_SECS".to_owned(),
        "0".to_owned(),
    ));
    let mut settlement = settlement_process(&env, port);
    eventually("settlement to be ready", || ready(&settlement_url)).await;

    let (admin, alice, bob) = app.funded_market().await;

    // Trades flow; settlement is killed once it has settled some and before it can have
    // settled them all.
    let trades = 40;
    let trading = {
        let (gateway, alice, bob) = (
            app.gateway.clone(),
            alice.access_token.clone(),
            bob.access_token.clone(),
        );
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let place = |token: String, side: &'static str| {
                client
                    .post(format!("{gateway}/v1/orders"))
                    .bearer_auth(token)
                    .header("idempotency-key", uuid::Uuid::now_v7().to_string())
                    .json(&limit(side))
                    .send()
            };
            let mut done = 0;
            for _ in 0..trades {
                let sold = place(alice.clone(), "sell").await.unwrap().status();
                let bought = place(bob.clone(), "buy").await.unwrap().status();
                if sold != StatusCode::CREATED || bought != StatusCode::CREATED {
                    break;
                }
                done += 1;
            }
            done
        })
    };
    eventually("some trades settled", || async {
        count(&app.db, "SELECT count(*) FROM settlement.settled_trades").await >= 5
    })
    .await;
    settlement.kill().await.unwrap(); // SIGKILL: no shutdown, no flush, no acknowledgement
    let placed = trading.await.unwrap();
    let executed = count(&app.db, "SELECT count(*) FROM orders.trades").await;
    assert!(
        executed >= 5,
        "trades executed before the crash: {executed}"
    );

    // Back: it re-reads what it had received, claims what is left, and settles the rest.
    let _settlement = settlement_process(&env, port);
    eventually("settlement to be ready again", || ready(&settlement_url)).await;
    eventually("every executed trade settled", || async {
        count(&app.db, "SELECT count(*) FROM settlement.settled_trades").await == executed
    })
    .await;

    // Exactly once: every trade moved its base and quote once (reconciliation's
    // trades_settled_once), the books balance, and each buyer got exactly what was bought.
    let report = app.reconciliation(&admin).await;
    assert_eq!(report["ok"], true, "{report}");
    // In the ledger itself (what traders are shown follows it a stream hop behind, in risk).
    let bob_id = app.user_id(&bob).await;
    let bobs_btc: i64 = sqlx::query_scalar(
        "SELECT available FROM settlement.accounts WHERE owner_id = $1 AND asset = 'BTC'",
    )
    .bind(bob_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    // 100 BTC to start with, 0.01 more per trade; in satoshis to stay exact.
    let satoshis = 100 * 100_000_000 + executed * 1_000_000;
    assert_eq!(bobs_btc, satoshis, "after {placed} pairs");
    // And nothing was dead-lettered on the way.
    assert_eq!(
        count(
            &app.db,
            "SELECT count(*) FROM settlement.outbox WHERE event_type = 'EventDeadLettered'"
        )
        .await,
        0
    );
}
