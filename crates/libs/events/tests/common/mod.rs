//! Fixtures shared by the events tests.

use redis::aio::ConnectionManager;
use sqlx::PgPool;

/// A service's pool on its own `schema` of the test database, with the events tables and
/// whatever table of "state" the test changes (`state_table` DDL).
pub async fn service_db(
    test_pool: &PgPool,
    schema: &'static str,
    state_table: &'static str,
) -> PgPool {
    let pool = schema_pool(test_pool, schema).await;
    events::migrate(&pool, schema).await.unwrap();
    sqlx::query(state_table).execute(&pool).await.unwrap();
    pool
}

/// A pool on `test_pool`'s database whose connections work in `schema`.
pub async fn schema_pool(test_pool: &PgPool, schema: &str) -> PgPool {
    let options = test_pool.connect_options().as_ref().clone();
    PgPool::connect_with(options.options([("search_path", schema)]))
        .await
        .unwrap()
}

pub async fn redis() -> ConnectionManager {
    service_kit::redis::connect_url(&secrecy::SecretString::from("redis://127.0.0.1:6379"), None)
        .await
        .unwrap()
}

pub use service_kit::testing::eventually;
