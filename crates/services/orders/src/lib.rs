//! The orders service: instruments, orders and matching, market data. Every state change is
//! announced through the transactional outbox and published by the relay this service runs.
//!
//! - [`config`]: `BOURSE_ORDERS_*` settings, including the asset list.
//! - [`instruments`]: validation in exact units, create, halt/resume (TRD-01); [`catalog`]
//!   keeps them in memory until a change is announced.
//! - [`order_entry`]: an order request checked in exact units; market-order protection.
//! - [`funds`]: the risk check, which reserves the funds every order needs before matching;
//!   checks that arrive together go to risk in one call.
//! - [`engine`]: one matching task per symbol; [`group_commit`] the writes of each batch.
//! - [`ownership`]: which replica keeps each symbol's book (leases and fencing epochs);
//!   [`forwarding`] sends a command to the replica that does.
//! - [`book_feed`]: each batch's top of book, published for the WebSocket stream.
//! - [`kill_switches`]: mass cancels when risk pulls a kill switch.
//! - [`view`]: orders and fills as the API shows them.
//! - [`store`]: all SQL.
//! - [`http`]: thin handlers and the OpenAPI description.
//! - [`error`]: the crate's errors as problem+json.

pub mod book_feed;
pub mod catalog;
pub mod config;
pub mod engine;
pub mod error;
pub mod forwarding;
pub mod funds;
pub mod group_commit;
pub mod http;
pub mod instruments;
pub mod kill_switches;
pub mod order_entry;
pub mod ownership;
pub mod store;
pub mod view;

use std::sync::Arc;

use events::ConsumerSettings;
use service_kit::{Server, Shutdown, Supervisor};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub use config::Config;
pub use error::Error;

pub const SCHEMA: &str = "orders";
pub const SERVICE: &str = "orders";

pub fn migrator() -> Migrator {
    sqlx::migrate!("../../../migrations/orders")
}

/// The service's own tables and its outbox.
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
    let (tasks, client) = (kit.tasks.clone(), kit.client.clone());
    let access::Verifiers {
        users: verifier,
        services,
    } = kit.verifiers(&config.auth);
    kit.relay(&pool, SCHEMA);
    let feed = book_feed::BookFeed::spawn(kit.redis.clone(), kit.keys(), &tasks);
    // Service tokens come from auth; risk's checks are called with them (SEC-14), and so are
    // the commands forwarded to the replica that keeps a symbol's book.
    let tokens = Arc::new(
        resilience::TokenSource::from_auth(
            &client,
            &config.auth.url,
            SERVICE,
            config.service_secret.clone(),
        )
        .map_err(Error::Internal)?,
    );
    let ownership = ownership::Ownership::new(pool.clone());
    let engines = engine::Engines::new(
        pool.clone(),
        engine::Queueing {
            capacity: config.queue_capacity,
            linger: config.matching_linger,
        },
        config.fees,
        feed,
        ownership.clone(),
        forwarding::Forwarder::new(client.clone(), config.forward.clone(), tokens.clone()),
        tasks.clone(),
    );
    // Kill switches from risk cancel what is open in their scope (TRD-11).
    let kill_switches = kit
        .consumer(&pool, "risk", ConsumerSettings::default())
        .await?;
    let mass_cancel = Arc::new(kill_switches::MassCancel::new(engines.clone()));
    tasks.spawn("risk consumer", move |stop| {
        kill_switches.clone().run(mass_cancel.clone(), stop)
    });

    let risk = resilience::Upstream::authenticated(
        "risk",
        config.risk_url.clone(),
        client.clone(),
        config.risk.clone(),
        tokens,
    )
    .map_err(Error::Internal)?;
    spawn_breaker_notices(&risk, pool.clone(), &tasks);

    // Instruments are read once and kept until a change to them is announced (ADR 0025).
    let catalog = catalog::Catalog::new(pool.clone());
    let watched = catalog.clone();
    tasks.spawn("instrument changes", move |stop| {
        watched.clone().watch(stop)
    });

    let state = http::AppState::new(http::Shared {
        pool: pool.clone(),
        catalog,
        verifier,
        services,
        assets: Arc::new(config.assets.clone()),
        engines,
        funds: funds::Funds::new(risk, tasks.clone()),
        market_protection_bps: config.market_protection_bps,
        check_valid_for: config.check_valid_for,
        fees: config.fees,
        tasks: tasks.clone(),
        placing: Default::default(),
        look_ups: service_kit::idempotency::LookUps::new(pool.clone(), tasks.clone()),
    });
    let purged = pool.clone();
    tasks.spawn("idempotency purge", move |stop| {
        service_kit::idempotency::purge_every_hour(purged.clone(), stop)
    });
    let books = state.engines.clone();
    let server = kit.serve(config.port, http::router(state)).await?;
    // Only now is this replica's address known (port 0 binds anywhere): it joins the others
    // and takes its share of the books (TRD-08).
    let address = match &config.advertise_url {
        Some(url) => url.clone(),
        None => reachable_url(&config.common, &server).await?,
    };
    ownership.advertise(address);
    ownership.renew().await?;
    tasks.spawn("symbol ownership", move |stop| {
        books.clone().keep_books(stop)
    });
    Ok(server)
}

/// This replica as the others can reach it without `BOURSE_ORDERS_ADVERTISE_URL`: the bound
/// port, on the bound address — or, when bound to every interface, on the address of the
/// interface this host reaches the database through: a container's address on its compose
/// network, a pod's IP, loopback on a laptop. `https` when the service serves TLS.
async fn reachable_url(
    common: &service_kit::CommonConfig,
    server: &Server,
) -> Result<String, Error> {
    let bound = server
        .local_addr()
        .map_err(|e| Error::Internal(format!("the bound address: {e}")))?;
    let ip = if bound.ip().is_unspecified() {
        route_to_database(common)
            .await
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into())
    } else {
        bound.ip()
    };
    let address = std::net::SocketAddr::new(ip, bound.port());
    Ok(format!("{}://{address}", common.tls.scheme()))
}

/// The local address of a UDP socket "connected" to the database's host (nothing is sent):
/// the kernel picks the interface that routes there.
async fn route_to_database(common: &service_kit::CommonConfig) -> Option<std::net::IpAddr> {
    use secrecy::ExposeSecret;
    let url = reqwest::Url::parse(common.database_url.expose_secret()).ok()?;
    let host = url.host_str()?;
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.ok()?;
    socket
        .connect((host, url.port().unwrap_or(5432)))
        .await
        .ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// Each transition of the breaker in front of settlement becomes `CircuitBreakerOpened` /
/// `CircuitBreakerClosed` on the ops stream, through the outbox (alerting pages on it).
fn spawn_breaker_notices(upstream: &resilience::Upstream, pool: PgPool, tasks: &Supervisor) {
    upstream.spawn_announcer(tasks, move |event| {
        let pool = pool.clone();
        async move {
            let written = async {
                let mut tx = pool.begin().await?;
                events::outbox::append(&mut tx, events::consumer::OPS_STREAM, &event).await?;
                tx.commit().await?;
                Ok::<_, Error>(())
            }
            .await;
            if let Err(err) = written {
                tracing::warn!(error = %err, "could not record a breaker transition");
            }
        }
    });
}

/// Orders as the composing binary sees it (`bourse::SERVICES`).
pub const SPEC: launch::Spec = launch::Spec {
    name: SERVICE,
    port_variable: "BOURSE_ORDERS_PORT",
    default_port: 8082,
    url_variable: Some("BOURSE_ORDERS_URL"),
    upstreams: &["auth", "risk"],
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
        vec![("auth", &mut self.auth.url), ("risk", &mut self.risk_url)]
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
    describe_counter!(
        "orders_book_feed_dropped_total",
        Unit::Count,
        "Book updates dropped because the feed's queue was full (clients resync from a snapshot)."
    );
    describe_counter!(
        "orders_forwarded_commands_total",
        Unit::Count,
        "Book commands forwarded to the replica that owns the symbol."
    );
    describe_histogram!(
        "orders_matching_batch_seconds",
        Unit::Seconds,
        "Time a matching task took to apply and commit one batch."
    );
    describe_histogram!(
        "orders_matching_batch_size",
        Unit::Count,
        "Commands in one matching batch (group commit)."
    );
    describe_histogram!(
        "orders_matching_phase_seconds",
        Unit::Seconds,
        "Time one step of a matching batch took, by phase: apply (matching in memory), begin, flush (the fence and the writes), answers, commit."
    );
    describe_histogram!(
        "orders_risk_checks_per_call",
        Unit::Count,
        "Orders' pre-trade checks one call to risk carried (those that arrived together, ADR 0029)."
    );
    describe_counter!(
        "orders_check_expired_total",
        Unit::Count,
        "Placements refused before the book because their risk check began longer ago than BOURSE_RISK_CHECK_VALID_FOR_MS."
    );
    describe_counter!(
        "orders_checks_fenced_total",
        Unit::Count,
        "Placements refused before the book (503 check_expired) because a later start of risk than the one that checked them has raised its fence (ADR 0023)."
    );
    describe_gauge!(
        "orders_instrument_cache_listening",
        Unit::Count,
        "1 while this replica listens for instrument changes and so serves instruments from memory; 0 while it reads each from the database (ADR 0025)."
    );
    describe_gauge!(
        "orders_owned_symbols",
        Unit::Count,
        "Symbols whose book this replica keeps."
    );
    describe_counter!(
        "orders_symbol_owner_changes_total",
        Unit::Count,
        "Symbols this replica took over or handed over."
    );
    describe_counter!(
        "orders_symbols_lost_total",
        Unit::Count,
        "Symbols a matching task lost to another replica while it held them (fenced off)."
    );
}
