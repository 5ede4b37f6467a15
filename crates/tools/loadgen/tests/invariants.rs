//! A short load-generator run against a real `serve all` (real PostgreSQL, Redis and HTTP): a
//! correctness test — every invariant holds, no request faults. Speed is measured by long runs
//! (docs/performance.md), never asserted here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bourse::Target;
use service_kit::{Env, Shutdown};
use sqlx::PgPool;

/// The test database's URL: the server of `DATABASE_URL`, the database `sqlx::test` made.
fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set by .cargo/config.toml");
    let (server, query) = base.split_once('?').unwrap_or((&base, ""));
    let server = &server[..server.rfind('/').expect("a database in the URL")];
    let name = pool.connect_options().get_database().unwrap().to_owned();
    format!("{server}/{name}?{query}")
}

#[sqlx::test(migrations = false)]
async fn a_short_run_keeps_every_invariant(pool: PgPool) {
    let vars: Vec<(String, String)> = [
        ("DATABASE_URL", database_url(&pool)),
        (
            "BOURSE_REDIS_KEY_PREFIX",
            format!("test:{}", uuid::Uuid::now_v7()),
        ),
        ("BOURSE_BIND_HOST", "127.0.0.1".to_owned()),
        ("BOURSE_AUTH_PORT", "0".to_owned()),
        ("BOURSE_GATEWAY_PORT", "0".to_owned()),
        ("BOURSE_ORDERS_PORT", "0".to_owned()),
        ("BOURSE_SETTLEMENT_PORT", "0".to_owned()),
        ("BOURSE_RISK_PORT", "0".to_owned()),
        ("BOURSE_ALERTING_PORT", "0".to_owned()),
        ("BOURSE_AUTH_ARGON2_MEMORY_KIB", "4096".to_owned()),
        ("BOURSE_AUTH_ARGON2_ITERATIONS", "1".to_owned()),
        ("BOURSE_DATABASE_MAX_CONNECTIONS", "5".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
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
