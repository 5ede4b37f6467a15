//! A short load-generator run against a real `serve all` (real PostgreSQL, Redis and HTTP): a
//! correctness test — every invariant holds, no request faults. Speed is measured by long runs
//! (docs/performance.md), never asserted here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::PgPool;

mod platform;
use platform::Platform;

#[sqlx::test(migrations = false)]
async fn a_short_run_keeps_every_invariant(pool: PgPool) {
    let platform = Platform::with_operator(&pool).await;
    let report = loadgen::run(&platform.load(40, 5, 4, 7)).await.unwrap();
    eprintln!("{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.faults(), 0, "{report}");
    assert!(report.orders_placed > 50, "{report}");
    platform.stop().await;
}
