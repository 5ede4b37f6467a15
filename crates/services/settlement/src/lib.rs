//! The settlement service: the double-entry ledger every unit of money lives in (TRD-05..08,
//! TRD-13, REL-15).
//!
//! - [`config`]: `BOURSE_SETTLEMENT_*` settings: fees, reconciliation interval.
//! - [`ledger`]: the money rules with no IO — the transfers that settle a trade, rounding —
//!   and the property tests that prove every asset is conserved.
//! - [`funding`]: admin deposits and withdrawals, idempotent by `Idempotency-Key`;
//!   withdrawals reserve through risk first.
//! - [`settle`]: the `orders` stream consumer: trades settle by delivery versus payment. What
//!   an open order may spend is risk's to reserve (ADR 0023); the ledger holds nothing.
//! - [`reconciliation`]: checks that prove the books, periodic and on demand.
//! - [`store`]: all SQL.
//! - [`http`]: thin handlers and the OpenAPI description.
//! - [`error`]: the crate's errors as problem+json.

pub mod config;
pub mod error;
pub mod funding;
pub mod http;
pub mod ledger;
pub mod reconciliation;
pub mod settle;
pub mod store;

use std::sync::Arc;

use access::Verifiers;
use events::ConsumerSettings;
use service_kit::{Server, Shutdown};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub use config::Config;
pub use error::Error;

pub const SCHEMA: &str = "settlement";
pub const SERVICE: &str = "settlement";
/// The stream settlement writes to (`TradeSettled`, `FundsDeposited`, `FundsWithdrawn`,
/// `ReconciliationFailed`).
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
    let mut kit = launch::Kit::start(SERVICE, &config.common, shutdown, describe_metrics).await?;
    let pool = kit.database(SCHEMA).await?;
    if config.common.migrate_on_start {
        migrate(&pool).await?;
    }
    store::sync_assets(&pool, &config.assets).await?;
    let Verifiers { users, services } = kit.verifiers(&config.auth);
    kit.relay(&pool, SCHEMA);
    let settings = ConsumerSettings {
        batch: config.consumer_batch,
        max_deliveries: config.consumer_max_deliveries,
        retry_after: config.consumer_retry_after,
        linger: config.consumer_linger,
        ..ConsumerSettings::default()
    };
    let consumer = kit.consumer(&pool, ORDERS_STREAM, settings).await?;
    let settler = Arc::new(settle::Settler::new(config.fees, &config.assets));
    kit.tasks.spawn("orders consumer", move |stop| {
        consumer.clone().run(settler.clone(), stop)
    });
    // Reconciliation asks orders for its executed trades, with a service token from auth.
    let orders = kit.authenticated_upstream(
        &config.auth,
        config.service_secret.clone(),
        "orders",
        &config.orders_url,
    )?;
    let reconciler = Arc::new(reconciliation::Reconciler {
        pool: pool.clone(),
        orders,
        grace: config.reconciliation_grace,
    });
    let (periodic, interval) = (reconciler.clone(), config.reconciliation_interval);
    kit.tasks.spawn("reconciliation", move |stop| {
        periodic.clone().every(interval, stop)
    });
    // Withdrawals reserve with risk's pre-trade stage first (ADR 0023 slice 4).
    let risk = kit.authenticated_upstream(
        &config.auth,
        config.service_secret.clone(),
        "risk",
        &config.risk_url,
    )?;
    let purged = pool.clone();
    kit.tasks.spawn("idempotency purge", move |stop| {
        service_kit::idempotency::purge_every_hour(purged.clone(), stop)
    });

    let state = http::AppState::new(http::Shared {
        pool: pool.clone(),
        verifier: users,
        services,
        assets: Arc::new(config.assets.clone()),
        fees: config.fees,
        reconciler,
        pre_trade: funding::PreTrade::new(risk),
    });
    Ok(kit.serve(config.port, http::router(state)).await?)
}

/// Settlement as the composing binary sees it (`bourse::SERVICES`).
pub const SPEC: launch::Spec = launch::Spec {
    name: SERVICE,
    port_variable: "BOURSE_SETTLEMENT_PORT",
    default_port: 8084,
    url_variable: Some("BOURSE_SETTLEMENT_URL"),
    upstreams: &["auth", "orders", "risk"],
    read: |env| Box::new(Config::read(env)),
    migrations: Some(launch::Migrations {
        schema: SCHEMA,
        apply: |pool| Box::pin(async move { Ok(migrate(&pool).await?) }),
    }),
};

impl launch::Service for Config {
    fn common(&mut self) -> &mut service_kit::CommonConfig {
        &mut self.common
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn upstream_urls(&mut self) -> Vec<(&'static str, &mut String)> {
        vec![
            ("auth", &mut self.auth.url),
            ("orders", &mut self.orders_url),
            ("risk", &mut self.risk_url),
        ]
    }

    fn build(self: Box<Self>, shutdown: Shutdown) -> launch::Pending<Server> {
        Box::pin(async move { Ok(build(*self, &shutdown).await?) })
    }
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
