//! The instrument catalog against a real PostgreSQL (ADR 0025): instruments, one by one and
//! the whole list, are served from memory while the catalog listens for changes, a change or a
//! creation committed anywhere reaches it, and a catalog that lost its listener reads the
//! database again rather than trust what it kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use orders::catalog::Catalog;
use orders::instruments::{self, Status};
use service_kit::Shutdown;
use service_kit::testing::eventually;
use sqlx::PgPool;

mod database;

use database::{SYMBOL, orders_db};

/// A catalog listening for changes, as the service runs it; stopped with the test.
async fn listening(pool: &PgPool) -> (Catalog, Shutdown) {
    let catalog = Catalog::new(pool.clone());
    let stop = Shutdown::new();
    tokio::spawn(catalog.clone().watch(stop.clone()));
    catalog.until_listening().await;
    (catalog, stop)
}

async fn status(catalog: &Catalog) -> Status {
    catalog.get(SYMBOL).await.unwrap().unwrap().status
}

/// The symbols and statuses of the catalog's list.
async fn listed(catalog: &Catalog) -> Vec<(String, Status)> {
    let listed = catalog.listed().await.unwrap();
    listed
        .iter()
        .map(|i| (i.symbol.clone(), i.status))
        .collect()
}

/// Another replica sets the status (nothing tells `catalog` but the change's notice), and
/// `catalog` comes to show it.
async fn set_elsewhere_and_seen(pool: &PgPool, catalog: &Catalog, to: Status) {
    instruments::set_status(pool, SYMBOL, to).await.unwrap();
    eventually(&format!("the catalog to show {to:?}"), || async {
        status(catalog).await == to
    })
    .await;
}

/// Sets the status with the trigger off: a change nobody announces.
async fn set_unannounced(pool: &PgPool, to: Status) {
    let mut silent = pool.begin().await.unwrap();
    for statement in [
        "ALTER TABLE instruments DISABLE TRIGGER instruments_announce_change",
        &format!(
            "UPDATE instruments SET status = '{}' WHERE symbol = '{SYMBOL}'",
            to.as_str()
        ),
        "ALTER TABLE instruments ENABLE TRIGGER instruments_announce_change",
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&mut *silent)
            .await
            .unwrap();
    }
    silent.commit().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_halt_committed_by_another_replica_reaches_the_cache(pool: PgPool) {
    let pool = orders_db(&pool).await;
    let (catalog, stop) = listening(&pool).await;
    assert_eq!(status(&catalog).await, Status::Open);

    assert_eq!(listed(&catalog).await, [(SYMBOL.to_owned(), Status::Open)]);

    set_elsewhere_and_seen(&pool, &catalog, Status::Halted).await;
    assert_eq!(
        listed(&catalog).await,
        [(SYMBOL.to_owned(), Status::Halted)]
    );

    // A symbol nobody created is not remembered as missing: it is found once created, and the
    // creation's notice takes the cached list away.
    assert!(catalog.get("ETH-USD").await.unwrap().is_none());
    sqlx::query(
        "INSERT INTO instruments (symbol, base_asset, quote_asset, base_scale, quote_scale,
                                  tick_size, lot_size, min_quantity, max_quantity)
         VALUES ('ETH-USD', 'ETH', 'USD', 8, 2, 1, 10000, 10000, 100000000000)",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert!(catalog.get("ETH-USD").await.unwrap().is_some());
    eventually("the list to show the new instrument", || async {
        listed(&catalog).await.len() == 2
    })
    .await;
    assert_eq!(
        listed(&catalog).await,
        [
            (SYMBOL.to_owned(), Status::Halted),
            ("ETH-USD".to_owned(), Status::Open)
        ]
    );
    stop.trigger();
}

#[sqlx::test(migrations = false)]
async fn a_catalog_that_lost_its_listener_reads_the_database_again(pool: PgPool) {
    let pool = orders_db(&pool).await;
    let (catalog, stop) = listening(&pool).await;
    assert_eq!(status(&catalog).await, Status::Open);

    // A change nobody announces (the trigger off) is not seen: the instrument is served from
    // memory, not read per request.
    assert_eq!(listed(&catalog).await, [(SYMBOL.to_owned(), Status::Open)]);
    set_unannounced(&pool, Status::Halted).await;
    assert_eq!(status(&catalog).await, Status::Open);
    assert_eq!(listed(&catalog).await, [(SYMBOL.to_owned(), Status::Open)]);

    // The listening connection dies (a database restart, a network cut): notices sent
    // meanwhile would be lost, so the catalog forgets what it kept and reads the row.
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND query LIKE 'LISTEN%orders_instruments%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(terminated, [true]);
    eventually("the catalog to read the unannounced halt", || async {
        status(&catalog).await == Status::Halted
    })
    .await;
    assert_eq!(
        listed(&catalog).await,
        [(SYMBOL.to_owned(), Status::Halted)]
    );

    // Listening again (its supervisor starts it over), it caches again: an unannounced
    // change is not seen, an announced one is.
    tokio::spawn(catalog.clone().watch(stop.clone()));
    catalog.until_listening().await;
    assert_eq!(status(&catalog).await, Status::Halted);
    set_unannounced(&pool, Status::Open).await;
    assert_eq!(status(&catalog).await, Status::Halted);
    set_elsewhere_and_seen(&pool, &catalog, Status::Open).await;
    stop.trigger();
}
