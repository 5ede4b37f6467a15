//! What settlement's test binaries share.

use contracts::Asset;
use settlement::store;
use sqlx::PgPool;

/// Settlement's schema, migrated and with the default assets, in the test's fresh database;
/// the pool's connections have it on their search path, as the service's do.
pub async fn settlement_db(test_pool: &PgPool) -> PgPool {
    let options = test_pool.connect_options().as_ref().clone();
    let pool = PgPool::connect_with(options.options([("search_path", settlement::SCHEMA)]))
        .await
        .unwrap();
    settlement::migrate(&pool).await.unwrap();
    store::sync_assets(&pool, &Asset::defaults()).await.unwrap();
    pool
}

/// Settlement's schema as a release before the migration `version` left it (its own migrations
/// only, no outbox): for tests of an upgrade, which then run [`settlement::migrate`].
pub async fn settlement_db_before(test_pool: &PgPool, version: i64) -> PgPool {
    let options = test_pool.connect_options().as_ref().clone();
    let pool = PgPool::connect_with(options.options([("search_path", settlement::SCHEMA)]))
        .await
        .unwrap();
    service_kit::db::migrate(&pool, settlement::SCHEMA, migrations_before(version))
        .await
        .unwrap();
    store::sync_assets(&pool, &Asset::defaults()).await.unwrap();
    pool
}

/// Settlement's own migrations older than `version`.
pub fn migrations_before(version: i64) -> sqlx::migrate::Migrator {
    service_kit::testing::migrations_before(settlement::migrator(), version)
}
