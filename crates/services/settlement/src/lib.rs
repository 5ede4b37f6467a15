//! The settlement service: the double-entry ledger every unit of money lives in (TRD-05..08,
//! TRD-13, REL-15).
//!
//! - [`config`]: `BOURSE_SETTLEMENT_*` settings: fees, reconciliation interval.
//! - [`ledger`]: the money rules with no IO — hold sizes, the transfers that settle a trade,
//!   rounding — and the property tests that prove every asset is conserved.
//! - [`funding`]: admin deposits and withdrawals, idempotent by `Idempotency-Key`.
//! - [`holds`]: the holds orders places before matching (idempotent by order id).
//! - [`settle`]: the `orders` stream consumer: trades settle by delivery versus payment, ended
//!   orders release what is left of their hold.
//! - [`reconciliation`]: checks that prove the books (and find orphaned holds), periodic and
//!   on demand.
//! - [`store`]: all SQL.
//! - [`http`]: thin handlers and the OpenAPI description.
//! - [`error`]: the crate's errors as problem+json.

pub mod config;
pub mod error;
pub mod funding;
pub mod holds;
pub mod http;
pub mod ledger;
pub mod reconciliation;
pub mod settle;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use access::Verifiers;
use events::{Consumer, ConsumerSettings, Relay, RelaySettings};
use service_kit::health::{Check, Readiness};
use service_kit::redis::KeyPrefix;
use service_kit::{Server, Shutdown, Supervisor};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub use config::Config;
pub use error::Error;

pub const SCHEMA: &str = "settlement";
pub const SERVICE: &str = "settlement";
/// The stream settlement writes to (`TradeSettled`, `ReconciliationFailed`).
pub const STREAM: &str = "settlement";
/// The stream it consumes.
pub const ORDERS_STREAM: &str = "orders";

pub fn migrator() -> Migrator {
    sqlx::migrate!("../../../migrations/settlement")
}

/// The ledger, the outbox and inbox, and the idempotency keys.
pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    let failed =
        |e: sqlx::migrate::MigrateError| Error::Internal(format!("migrating {SCHEMA}: {e}"));
    service_kit::db::migrate(pool, SCHEMA, migrator())
        .await
        .map_err(failed)?;
    events::migrate(pool, SCHEMA).await.map_err(failed)?;
    service_kit::idempotency::migrate(pool, SCHEMA)
        .await
        .map_err(failed)
}

pub async fn build(config: Config, shutdown: &Shutdown) -> Result<Server, Error> {
    service_kit::metrics::install();
    events::describe_metrics();
    resilience::describe_metrics();
    describe_metrics();
    let tasks = Supervisor::new(SERVICE, shutdown);
    let pool = service_kit::db::connect_following(&config.common, SCHEMA, &tasks).await?;
    if config.migrate_on_start {
        migrate(&pool).await?;
    }
    store::sync_assets(&pool, &config.assets).await?;
    let redis = service_kit::redis::connect(&config.common)
        .await
        .map_err(|e| Error::Internal(format!("redis: {e}")))?;
    let client = config
        .common
        .tls
        .service_client()
        .map_err(|e| Error::Internal(e.to_string()))?
        .connect_timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let Verifiers { users, services } = Verifiers::from_auth(&client, &config.auth, SERVICE);

    let prefix = KeyPrefix::new(&config.common.redis_key_prefix);
    let relay = Relay::new(
        pool.clone(),
        redis.clone(),
        prefix.clone(),
        SCHEMA,
        RelaySettings::default(),
    );
    tasks.spawn("outbox relay", move |stop| relay.clone().run(stop));
    let consumer = Consumer::new(
        pool.clone(),
        events::consumer::own_connection(&config.common).await?,
        prefix,
        ORDERS_STREAM,
        SERVICE,
        &events::consumer::replica_name(SERVICE),
        SERVICE,
        ConsumerSettings {
            batch: config.consumer_batch,
            max_deliveries: config.consumer_max_deliveries,
            retry_after: config.consumer_retry_after,
            ..ConsumerSettings::default()
        },
    );
    let settler = Arc::new(settle::Settler::new(config.fees, &config.assets));
    tasks.spawn("orders consumer", move |stop| {
        consumer.clone().run(settler.clone(), stop)
    });
    // Reconciliation asks orders for its executed trades, with a service token from auth.
    let tokens = Arc::new(
        resilience::TokenSource::from_auth(
            &client,
            &config.auth.url,
            SERVICE,
            config.service_secret.clone(),
        )
        .map_err(Error::Internal)?,
    );
    let orders = resilience::Upstream::authenticated(
        "orders",
        config.orders_url.clone(),
        client.clone(),
        resilience::Policy::default(),
        tokens,
    )
    .map_err(Error::Internal)?;
    let reconciler = Arc::new(reconciliation::Reconciler {
        pool: pool.clone(),
        orders,
        grace: config.reconciliation_grace,
    });
    let (periodic, interval) = (reconciler.clone(), config.reconciliation_interval);
    tasks.spawn("reconciliation", move |stop| {
        periodic.clone().every(interval, stop)
    });
    let purged = pool.clone();
    tasks.spawn("idempotency purge", move |stop| {
        service_kit::idempotency::purge_every_hour(purged.clone(), stop)
    });

    let state = http::AppState {
        pool: pool.clone(),
        verifier: users,
        services,
        assets: Arc::new(config.assets.clone()),
        fees: config.fees,
        holds: holds::Holds::start(pool.clone(), &tasks),
        reconciler,
    };
    let readiness = Readiness::new(shutdown.clone())
        .with(Check::Postgres(pool))
        .with(Check::Redis(redis));
    let router = service_kit::http::service_router(
        SERVICE,
        &config.common.http,
        readiness,
        http::router(state),
    );
    Ok(
        Server::for_service(SERVICE, &config.common, config.port, router)
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .with_tasks(tasks),
    )
}

pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let server = build(config, &shutdown).await?;
    server
        .run(shutdown)
        .await
        .map_err(|e| Error::Internal(e.to_string()))
}

/// Gives each metric this crate records its help text and unit, as `/metrics` shows them
/// (`promtool check metrics` asks for both). Call it once the recorder is installed.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        "settlement_finality_seconds",
        Unit::Seconds,
        "Time from a trade's execution to its settlement."
    );
    describe_counter!(
        "settlement_funding_total",
        Unit::Count,
        "Deposits and withdrawals booked, by kind."
    );
    describe_histogram!(
        "settlement_hold_batch_size",
        Unit::Count,
        "Holds placed together in one transaction (group commit)."
    );
    describe_counter!(
        "settlement_holds_placed_total",
        Unit::Count,
        "Holds placed."
    );
    describe_counter!(
        "settlement_holds_resolved_total",
        Unit::Count,
        "Holds posted, released or voided, by outcome."
    );
    describe_gauge!(
        "settlement_reconciliation_ok",
        Unit::Count,
        "1 when the last reconciliation found the books consistent, else 0."
    );
    describe_counter!(
        "settlement_reconciliations_total",
        Unit::Count,
        "Reconciliations run, by outcome."
    );
    describe_counter!(
        "settlement_trades_settled_total",
        Unit::Count,
        "Trades settled."
    );
}
