//! The orders schema on a test's own database, for the tests that drive orders' modules
//! against a real PostgreSQL without the rest of the service.

use sqlx::PgPool;

pub const SYMBOL: &str = "BTC-USD";

/// The orders schema, migrated, with one instrument ([`SYMBOL`]).
pub async fn orders_db(test_pool: &PgPool) -> PgPool {
    let options = test_pool.connect_options().as_ref().clone();
    let pool = PgPool::connect_with(options.options([("search_path", orders::SCHEMA)]))
        .await
        .unwrap();
    orders::migrate(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO instruments (symbol, base_asset, quote_asset, base_scale, quote_scale,
                                  tick_size, lot_size, min_quantity, max_quantity)
         VALUES ($1, 'BTC', 'USD', 8, 2, 1, 10000, 10000, 100000000000)",
    )
    .bind(SYMBOL)
    .execute(&pool)
    .await
    .unwrap();
    pool
}
