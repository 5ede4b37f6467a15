//! A short load-generator run against a real `serve all` (real PostgreSQL, Redis and HTTP): a
//! correctness test — every invariant holds, no request faults. Speed is measured by long runs
//! (docs/performance.md), never asserted here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bourse::Target;
use service_kit::{Env, Shutdown};
use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn a_short_run_keeps_every_invariant(pool: PgPool) {
    let vars = bourse::testing::test_env(&pool);
    let plan = bourse::plan(&[Target::All], Env::from_pairs(vars)).unwrap();
    let shutdown = Shutdown::new();
    let running = bourse::start(plan, &shutdown).await.unwrap();
    let gateway = format!("http://{}", running.address(Target::Gateway).unwrap());

    // An operator, made as `bourse admin create-user --role admin` would.
    let client = loadgen::client::Gateway::new(&gateway).unwrap();
    client.sign_up("operator@example.com").await.unwrap();
    sqlx::query("UPDATE auth.users SET roles = '{admin}' WHERE email = 'operator@example.com'")
        .execute(&pool)
        .await
        .unwrap();

    let config = loadgen::Config {
        gateway,
        rate: 40,
        duration_secs: 5,
        accounts: 4,
        subscribers: 2,
        symbol: "BTC-USD".to_owned(),
        admin_email: "operator@example.com".to_owned(),
        admin_password: loadgen::client::PASSWORD.to_owned(),
        seed: 7,
        max_in_flight: 1_000,
        settle_timeout_secs: 30,
    };
    let report = loadgen::run(&config).await.unwrap();
    eprintln!("{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.faults(), 0, "{report}");
    assert!(report.orders_placed > 50, "{report}");
    shutdown.trigger();
    running.wait().await.unwrap();
}
