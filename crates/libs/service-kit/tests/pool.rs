//! The services' database pool (`service_kit::db::pool_options`) against a real PostgreSQL: a
//! connection that has been idle a while is pinged before it is handed out, and replaced if its
//! server end is gone; one used moments ago is handed out without that extra round trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use service_kit::{CommonConfig, Env};
use sqlx::PgPool;

/// A pool of one connection to the test's database, pinging it on the way out when it has been
/// idle at least `ping_if_idle_for`; and the backend process id of that connection, once it is
/// back in the pool.
async fn one_connection(test_pool: &PgPool, ping_if_idle_for: Duration) -> (PgPool, i32) {
    let config = CommonConfig::read(&mut Env::from_pairs(Vec::<(String, String)>::new()));
    let options = test_pool.connect_options().as_ref().clone();
    let pool = service_kit::db::pool_options(&config, ping_if_idle_for)
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    // Released in a task of sqlx's (with its own ping): wait until it is idle in the pool.
    until(|| pool.num_idle() == 1).await;
    (pool, pid)
}

/// Ends that backend from another session, and waits until the server has let it go.
async fn terminate(test_pool: &PgPool, pid: i32) {
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(test_pool)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                .bind(pid)
                .fetch_one(test_pool)
                .await
                .unwrap();
        if !alive {
            return;
        }
        assert!(Instant::now() < deadline, "backend {pid} still alive");
        tokio::task::yield_now().await;
    }
}

async fn until(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "condition never held");
        tokio::task::yield_now().await;
    }
}

#[sqlx::test(migrations = false)]
async fn an_idle_connection_whose_server_end_is_gone_is_replaced_before_use(test_pool: PgPool) {
    // Every connection counts as idle long enough to be checked.
    let (pool, pid) = one_connection(&test_pool, Duration::ZERO).await;
    terminate(&test_pool, pid).await;

    // The check on the way out finds it dead; the pool opens another and the query runs there.
    let now_serving: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_ne!(now_serving, pid);
}

#[sqlx::test(migrations = false)]
async fn a_connection_used_moments_ago_is_handed_out_without_a_ping(test_pool: PgPool) {
    // No connection has been idle an hour: none is checked on the way out.
    let (pool, pid) = one_connection(&test_pool, Duration::from_secs(3600)).await;
    terminate(&test_pool, pid).await;

    // Handed out unchecked, the dead connection fails the query: proof that no ping preceded it
    // (with one, as above, the pool would have replaced it).
    let answer = sqlx::query("SELECT 1").execute(&pool).await;
    assert!(answer.is_err(), "{answer:?}");
}

/// The session's `plan_cache_mode` as the connection sees it now.
async fn plan_cache_mode(conn: &mut sqlx::PgConnection) -> String {
    sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_batch_transaction_plans_generically_and_leaves_the_connection_as_it_was(
    test_pool: PgPool,
) {
    let (pool, _) = one_connection(&test_pool, Duration::from_secs(60)).await;

    let mut tx = service_kit::db::begin_batch(&pool).await.unwrap();
    assert_eq!(plan_cache_mode(&mut tx).await, "force_generic_plan");
    tx.commit().await.unwrap();

    // The same (only) connection, back in the pool: every other statement plans as before.
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(plan_cache_mode(&mut conn).await, "auto");
    drop(conn);
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(plan_cache_mode(&mut tx).await, "auto");
}

/// A rollback starts the previous image against a schema the newer one migrated: its
/// migrations all applied, plus one it has never heard of. It must start, not refuse.
#[sqlx::test(migrations = false)]
async fn an_older_image_migrates_a_schema_a_newer_one_already_migrated(pool: PgPool) {
    // The newer image: every migration of the idempotency keys.
    service_kit::idempotency::migrate(&pool, "rollback")
        .await
        .unwrap();
    // The older one knows all but the last.
    let all = sqlx::migrate!("./migrations/idempotency");
    let newest = all.migrations.iter().map(|m| m.version).max().unwrap();
    let older = service_kit::testing::migrations_before(all, newest);

    service_kit::db::migrate_with_history(&pool, "rollback", "_idempotency_migrations", older)
        .await
        .expect("the previous image starts against the newer schema");
    let applied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rollback._idempotency_migrations WHERE version = $1",
    )
    .bind(newest)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(applied, 1, "and leaves the newer migration as it was");
}
