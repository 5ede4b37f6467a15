//! The orders schema on a test's own database, for the tests that drive orders' modules
//! against a real PostgreSQL without the rest of the service.

use sqlx::PgPool;

pub const SYMBOL: &str = "BTC-USD";

/// The orders schema, migrated, with one instrument ([`SYMBOL`]).
#[allow(dead_code)] // not every test binary that shares this module uses both
pub async fn orders_db(test_pool: &PgPool) -> PgPool {
    let pool = connect(test_pool).await;
    orders::migrate(&pool).await.unwrap();
    with_instrument(pool).await
}

/// The orders schema as a release before the migration `version` left it, with one
/// instrument: for tests of an upgrade, which then run [`orders::migrate`].
#[allow(dead_code)]
pub async fn orders_db_before(test_pool: &PgPool, version: i64) -> PgPool {
    let pool = connect(test_pool).await;
    let before = service_kit::testing::migrations_before(orders::migrator(), version);
    service_kit::db::migrate(&pool, orders::SCHEMA, before)
        .await
        .unwrap();
    with_instrument(pool).await
}

async fn connect(test_pool: &PgPool) -> PgPool {
    let options = test_pool.connect_options().as_ref().clone();
    PgPool::connect_with(options.options([("search_path", orders::SCHEMA)]))
        .await
        .unwrap()
}

async fn with_instrument(pool: PgPool) -> PgPool {
    insert_instrument(&pool, SYMBOL).await;
    pool
}

/// The instrument `symbol` (`BASE-QUOTE`), priced and sized as [`SYMBOL`] is.
pub async fn insert_instrument(pool: &PgPool, symbol: &str) {
    let (base, quote) = symbol.split_once('-').unwrap();
    sqlx::query(
        "INSERT INTO instruments (symbol, base_asset, quote_asset, base_scale, quote_scale,
                                  tick_size, lot_size, min_quantity, max_quantity)
         VALUES ($1, $2, $3, 8, 2, 1, 10000, 10000, 100000000000)",
    )
    .bind(symbol)
    .bind(base)
    .bind(quote)
    .execute(pool)
    .await
    .unwrap();
}

/// An open buy order of one BTC at 30,000.00 on `symbol`, inserted the way any release's
/// batch writes one — resting at `book_sequence` when given — with no matching task involved:
/// for trades to hang on, and for rows a replica of an older release wrote.
#[allow(dead_code)]
pub async fn insert_order(pool: &PgPool, symbol: &str, book_sequence: Option<i64>) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO orders (id, account_id, symbol, side, type, price, quantity, status,
                             time_in_force, post_only, book_sequence)
         VALUES ($1, $2, $3, 'buy', 'limit', 3000000, 100000000, 'open', 'gtc', false, $4)",
    )
    .bind(id)
    .bind(uuid::Uuid::now_v7())
    .bind(symbol)
    .bind(book_sequence)
    .execute(pool)
    .await
    .unwrap();
    id
}
