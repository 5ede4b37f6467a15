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
    let options = test_pool.connect_options().as_ref().clone();
    let pool = PgPool::connect_with(options.options([("search_path", schema)]))
        .await
        .unwrap();
    events::migrate(&pool, schema).await.unwrap();
    sqlx::query(state_table).execute(&pool).await.unwrap();
    pool
}

pub async fn redis() -> ConnectionManager {
    service_kit::redis::connect_url(&secrecy::SecretString::from("redis://127.0.0.1:6379"), None)
        .await
        .unwrap()
}

pub use service_kit::testing::eventually;
