//! The risk service: pre-trade checks from memory, limits, kill switches, positions
//! (TRD-10..12).
//!
//! - [`config`]: `BOURSE_RISK_*` settings: the default limits.
//! - [`limits`]: limits and exact decimal comparisons.
//! - [`book`]: the in-memory state and the checks, reserving what passes.
//! - [`funds`]: what each account owns, from settlement's snapshot and stream, without IO.
//! - [`ledger_feed`]: loading settlement's snapshot, then consuming its stream into [`funds`].
//! - [`reconciliation`]: [`funds`] compared with settlement's ledger, periodically and on
//!   request, while the platform runs.
//! - [`positions`]: positions and realized PnL from fills, without IO.
//! - [`project`]: the orders-stream consumer that keeps tables and memory current, each open
//!   order's reservation and each unsettled trade's debits included; and the mark a start
//!   asks orders for, so funds decide only once what orders committed before it is read.
//! - [`handover`]: a graceful stop that spares the next process its wait before deciding.
//! - [`kill_switches`]: activating and releasing, announced as events.
//! - [`store`]: all SQL.
//! - [`http`]: thin handlers and the OpenAPI description.
//! - [`error`]: the crate's errors as problem+json.

pub mod book;
pub mod config;
pub mod error;
pub mod funds;
pub mod handover;
pub mod http;
pub mod kill_switches;
pub mod ledger_feed;
pub mod limits;
pub mod positions;
pub mod project;
pub mod reconciliation;
pub mod store;

use std::sync::{Arc, Mutex};

use access::Verifiers;
use events::ConsumerSettings;
use service_kit::{Server, Shutdown};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub use config::Config;
pub use error::Error;

pub const SCHEMA: &str = "risk";
pub const SERVICE: &str = "risk";
/// The stream risk writes to (`KillSwitchActivated`/`Released`, `RiskLimitBreached`).
pub const STREAM: &str = "risk";

pub fn migrator() -> Migrator {
    sqlx::migrate!("../../../migrations/risk")
}

pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    let failed =
        |e: sqlx::migrate::MigrateError| Error::Internal(format!("migrating {SCHEMA}: {e}"));
    service_kit::db::migrate(pool, SCHEMA, migrator())
        .await
        .map_err(failed)?;
    events::migrate(pool, SCHEMA).await.map_err(failed)
}

/// Memory as the database has it: limits, active kill switches, open orders with what they
/// reserve, positions, last prices and the trades seen on one stream only. Balances come
/// later, from settlement's snapshot ([`ledger_feed`]).
pub async fn load_book(pool: &PgPool, mut book: book::Book) -> Result<book::Book, Error> {
    let snapshot = store::snapshot(pool).await?;
    for (account, body) in snapshot.limits {
        let limits = body
            .validate()
            .map_err(|e| Error::Internal(format!("stored limits of {account}: {e:?}")))?;
        book.set_limits(account, limits);
    }
    for switch in snapshot.kill_switches {
        book.activate(switch);
    }
    for change in snapshot.changes {
        book.apply(change);
    }
    for (trade, debits) in snapshot.unsettled_trades {
        book.funds_mut().restore(trade, debits);
    }
    for withdrawal in snapshot.withdrawals {
        let held = funds::Held {
            asset: withdrawal.asset,
            amount: withdrawal.amount,
        };
        book.funds_mut()
            .adopt(withdrawal.withdrawal_id, withdrawal.account_id, &held);
    }
    Ok(book)
}

/// How long a withdrawal's reservation waits for settlement to book it or give it up. Both
/// happen within settlement's request; this is for a settlement that crashed in between.
pub const WITHDRAWAL_RESERVATION_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// How long risk remembers that an order ended (`ended_orders`): as long as the inbox, so a
/// copy of an order's acceptance the inbox would not catch cannot open the order again.
const ENDED_ORDERS_RETENTION: std::time::Duration = events::consumer::DEFAULT_INBOX_RETENTION;

/// The most `ended_orders` rows one statement deletes: a backlog is worked off in chunks.
const ENDED_ORDERS_PURGE_CHUNK: i64 = 5_000;

/// Forgets, every hour, the orders that ended longer than [`ENDED_ORDERS_RETENTION`] ago, a
/// chunk per statement, until `shutdown`.
async fn purge_ended_orders(pool: PgPool, shutdown: Shutdown) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            _ = every.tick() => {}
        }
        loop {
            match store::purge_ended(&pool, ENDED_ORDERS_RETENTION, ENDED_ORDERS_PURGE_CHUNK).await
            {
                Ok(deleted) if deleted == ENDED_ORDERS_PURGE_CHUNK.unsigned_abs() => {}
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "ended orders not purged this time");
                    break;
                }
            }
            if shutdown.is_triggered() {
                return;
            }
        }
    }
}

/// How often lapsed reservations are swept when no check comes to sweep them.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Ends, every [`SWEEP_EVERY`], what checks reserved for orders that never reached the book
/// ([`book::Book::sweep`]) and what withdrawals reserved that were neither booked nor given
/// up within [`WITHDRAWAL_RESERVATION_TTL`], until `shutdown`.
async fn sweep_lapsed_reservations(pool: PgPool, book: Arc<Mutex<book::Book>>, shutdown: Shutdown) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            _ = every.tick() => {}
        }
        let lapsed = match store::lapse_withdrawals(&pool, WITHDRAWAL_RESERVATION_TTL).await {
            Ok(lapsed) => lapsed,
            Err(error) => {
                tracing::warn!(%error, "lapsed withdrawal reservations not swept this time");
                Vec::new()
            }
        };
        for withdrawal in &lapsed {
            tracing::warn!(%withdrawal, "a withdrawal's reservation lapsed: settlement neither booked nor gave it up");
        }
        match book.lock() {
            Ok(mut book) => {
                book.sweep(std::time::Instant::now());
                for withdrawal in lapsed {
                    book.funds_mut().release(withdrawal);
                }
            }
            Err(_) => {
                tracing::error!("the book's lock is poisoned; reservations are not swept");
                return;
            }
        }
    }
}

pub async fn build(config: Config, shutdown: &Shutdown) -> Result<Server, Error> {
    let mut kit = launch::Kit::start(SERVICE, &config.common, shutdown, describe_metrics).await?;
    // Not deciding until balances are loaded and this start's mark is read (ADR 0023).
    metrics::gauge!("risk_funds_deciding").set(0.0);
    // Born at zero, as counters of failures are: the dashboard and the page read it before the
    // first comparison.
    metrics::gauge!("risk_ledger_mismatches").set(0.0);
    let pool = kit.database(SCHEMA).await?;
    if config.common.migrate_on_start {
        migrate(&pool).await?;
    }
    let empty = book::Book::new(config.defaults).with_fees(config.fees);
    let book = Arc::new(Mutex::new(load_book(&pool, empty).await?));
    let Verifiers { users, services } = kit.verifiers(&config.auth);
    kit.relay(&pool, SCHEMA);
    let consumer = kit
        .consumer(&pool, "orders", ConsumerSettings::default())
        .await?;
    let projector = Arc::new(project::Projector::new(
        book.clone(),
        &config.assets,
        config.fees,
    ));
    // The orders consumer outlives the listener: while the process hands over, it reads the
    // acceptances of the orders the process passed ([`handover`]), and stops after that.
    let orders_read_until = Shutdown::new();
    let consumer_stop = orders_read_until.clone();
    kit.tasks.spawn("orders consumer", move |_| {
        consumer
            .clone()
            .run(projector.clone(), consumer_stop.clone())
    });
    // Balances: settlement's snapshot, then its stream (ADR 0023), with risk's own token.
    let settlement = kit.authenticated_upstream(
        &config.auth,
        config.service_secret.clone(),
        "settlement",
        &config.settlement_url,
    )?;
    let ledger = kit
        .consumer(&pool, ledger_feed::STREAM, ConsumerSettings::default())
        .await?;
    let purged = pool.clone();
    kit.tasks.spawn("ended orders purge", move |stop| {
        purge_ended_orders(purged.clone(), stop)
    });
    let (swept, sweeping) = (book.clone(), pool.clone());
    kit.tasks.spawn("reservation sweeper", move |stop| {
        sweep_lapsed_reservations(sweeping.clone(), swept.clone(), stop)
    });
    let (positions, positions_seen) = tokio::sync::watch::channel(None);
    let positions = Arc::new(positions);
    let reconciler = Arc::new(reconciliation::Reconciler {
        settlement: settlement.clone(),
        book: book.clone(),
        positions: positions_seen,
    });
    let followed = book.clone();
    kit.tasks.spawn("settlement consumer", move |stop| {
        ledger_feed::load_and_follow(
            settlement.clone(),
            followed.clone(),
            positions.clone(),
            ledger.clone(),
            stop,
        )
    });
    let (periodic, interval) = (reconciler.clone(), config.reconciliation_interval);
    kit.tasks.spawn("ledger reconciliation", move |stop| {
        periodic.clone().every(interval, stop)
    });
    // Funds decide once the orders consumer has read what orders committed before this start
    // (ADR 0023): a mark orders writes on request, with risk's own token.
    let orders = kit.authenticated_upstream(
        &config.auth,
        config.service_secret.clone(),
        "orders",
        &config.orders_url,
    )?;
    // After an earlier start, an order its process checked may still reach the book until the
    // bound on checks has passed. Orders' fence for this start shuts those orders out; where
    // it cannot fence yet, the mark waits the bound out (twice, for the delays it does not
    // see) unless that process handed over ([`handover`]).
    let booked_within = config.check_valid_for * 2;
    let start = store::record_start(&pool).await?;
    tracing::info!(
        start = start.number.0,
        follows_unfinished = start.follows_unfinished,
        follows_unnumbered = start.follows_unnumbered,
        "this start of risk is recorded; its checks carry its number"
    );
    let this_start = start.number;
    // Orders never fences off a check without a number: after a start of an earlier release
    // only the wait covers its checks.
    let fence_suffices = !start.follows_unnumbered;
    let mut unfenced_from = tokio::time::Instant::now();
    if start.follows_unfinished {
        unfenced_from += booked_within;
    }
    let handover = Arc::new(handover::Handover {
        pool: pool.clone(),
        book: book.clone(),
        start,
        booked_within,
        longest: booked_within.min(config.common.shutdown_grace / 2),
        orders_read_until,
    });
    kit.tasks
        .spawn("handover", move |stop| handover.clone().run(stop));
    let caught_up = book.clone();
    kit.tasks.spawn("orders catch-up", move |stop| {
        project::catch_up_with_orders(
            orders.clone(),
            caught_up.clone(),
            this_start,
            fence_suffices,
            unfenced_from,
            stop,
        )
    });

    let state = http::AppState::new(http::Shared {
        pool,
        verifier: users,
        services,
        book,
        start: this_start,
        assets: Arc::new(config.assets.clone()),
        reconciler,
    });
    Ok(kit.serve(config.port, http::router(state)).await?)
}

/// Risk as the composing binary sees it (`bourse::SERVICES`).
pub const SPEC: launch::Spec = launch::Spec {
    name: SERVICE,
    port_variable: "BOURSE_RISK_PORT",
    default_port: 8083,
    url_variable: Some("BOURSE_RISK_URL"),
    upstreams: &["auth", "settlement", "orders"],
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
            ("settlement", &mut self.settlement_url),
            ("orders", &mut self.orders_url),
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
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_gauge!(
        "risk_funds_deciding",
        Unit::Count,
        "1 once checks decide on funds: balances loaded and every order event committed before this start read (ADR 0023); 0 before."
    );
    describe_counter!(
        "risk_checks_refused_total",
        Unit::Count,
        "Orders the pre-trade check refused, by breached limit."
    );
    describe_counter!(
        "risk_late_acceptances_total",
        Unit::Count,
        "Order acceptances that reached risk after the order's end (a redelivery, a replayed dead letter) and opened nothing."
    );
    describe_counter!(
        "risk_limit_breaches_total",
        Unit::Count,
        "Fills that left a position beyond its limit."
    );
    describe_counter!(
        "risk_funds_reservations_total",
        Unit::Count,
        "Checks that passed every limit, by what reserving their funds did: reserved; short (refused insufficient_funds); overflow (refused amount_out_of_range); not_loaded, no_assets (refused funds_loading, 503)."
    );
    describe_counter!(
        "risk_ledger_reconciliations_total",
        Unit::Count,
        "Comparisons of risk's balances with settlement's ledger, by outcome: ok; mismatch (a balance differs); not_compared (settlement away, or risk's balances not loaded or not caught up)."
    );
    describe_gauge!(
        "risk_ledger_mismatches",
        Unit::Count,
        "Balances that differed between risk and the ledger at the last comparison (0 when they all matched)."
    );
    describe_counter!(
        "risk_funds_events_skipped_total",
        Unit::Count,
        "Settlement events the balances already included (at or below the snapshot's position) or that carried no position."
    );
}
