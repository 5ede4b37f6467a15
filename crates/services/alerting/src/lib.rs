//! The alerting service (ALR-01..07): operators learn within seconds when a kill switch
//! fires, a breaker opens, a limit is breached, an event is dead-lettered, the ledger does not
//! reconcile or a service is not ready.
//!
//! - [`config`]: `BOURSE_ALERTING_*` settings: retries, SMTP, the health watch.
//! - [`signals`]: which events raise or resolve alerts, and their fingerprints — no IO.
//! - [`rules`], [`channels`], [`silences`]: what routes where, validated — no IO.
//! - [`alerts`]: raising (dedup, silences, routing), acknowledging, resolving; the consumer.
//! - [`notify`]: the notifier working off the delivery log, with retries and backoff.
//! - [`escalation`]: unacknowledged alerts sent on to `escalate_to`.
//! - [`health_watch`]: every service's readiness, polled, announced on the ops stream.
//! - [`store`]: all SQL.
//! - [`http`]: thin handlers and the OpenAPI description.
//! - [`error`]: the crate's errors as problem+json.

pub mod alerts;
pub mod channels;
pub mod config;
pub mod error;
pub mod escalation;
pub mod health_watch;
pub mod http;
pub mod notify;
pub mod rules;
pub mod signals;
pub mod silences;
pub mod store;

use std::sync::Arc;

use events::ConsumerSettings;
use service_kit::{Server, Shutdown};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::sync::Notify;

pub use config::Config;
pub use error::Error;

pub const SCHEMA: &str = "alerting";
pub const SERVICE: &str = "alerting";
/// The streams alerts come from (the ops stream carries dead-letter and breaker notices and
/// the health watch's own announcements).
pub const SOURCES: &[&str] = &["risk", "settlement", events::consumer::OPS_STREAM];

pub fn migrator() -> Migrator {
    sqlx::migrate!("../../../migrations/alerting")
}

pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    let failed =
        |e: sqlx::migrate::MigrateError| Error::Internal(format!("migrating {SCHEMA}: {e}"));
    service_kit::db::migrate(pool, SCHEMA, migrator())
        .await
        .map_err(failed)?;
    events::migrate(pool, SCHEMA).await.map_err(failed)
}

pub async fn build(config: Config, shutdown: &Shutdown) -> Result<Server, Error> {
    let mut kit = launch::Kit::start(SERVICE, &config.common, shutdown, describe_metrics).await?;
    let pool = kit.database(SCHEMA).await?;
    if config.common.migrate_on_start {
        migrate(&pool).await?;
    }
    let verifier = kit.verifiers(&config.auth).users;
    let wake = Arc::new(Notify::new());
    kit.relay(&pool, SCHEMA);
    let alerter = Arc::new(alerts::Alerter {
        default_suppress: config.default_suppress,
        wake: wake.clone(),
    });
    let settings = ConsumerSettings {
        max_deliveries: config.consumer_max_deliveries,
        retry_after: config.consumer_retry_after,
        ..ConsumerSettings::default()
    };
    for stream in SOURCES {
        let consumer = kit.consumer(&pool, stream, settings.clone()).await?;
        let alerter = alerter.clone();
        kit.tasks.spawn(format!("{stream} consumer"), move |stop| {
            consumer.clone().run(alerter.clone(), stop)
        });
    }
    // Channels stored before encryption, or under a retired master key, are re-sealed now.
    let resealed = store::reseal_channels(&pool, &config.master_keys).await?;
    if resealed > 0 {
        tracing::info!(
            resealed,
            "alert channels re-sealed under the current master key"
        );
    }
    let notifier = notify::Notifier::new(
        pool.clone(),
        config.delivery.clone(),
        &config.smtp,
        config.master_keys.clone(),
        wake.clone(),
    )?;
    let email_enabled = notifier.email_enabled();
    kit.tasks
        .spawn("notifier", move |stop| notifier.clone().run(stop));
    let (escalating, interval, woken) = (pool.clone(), config.escalation_interval, wake.clone());
    kit.tasks.spawn("escalation", move |stop| {
        escalation::every(escalating.clone(), interval, woken.clone(), stop)
    });
    let watch = health_watch::Watch::new(pool.clone(), config.watch.clone(), &config.common.tls)?;
    kit.tasks
        .spawn("health watch", move |stop| watch.clone().run(stop));

    let state = http::AppState::new(http::Shared {
        pool,
        verifier,
        wake,
        email_enabled,
        master_keys: config.master_keys.clone(),
    });
    Ok(kit.serve(config.port, http::router(state)).await?)
}

/// Alerting as the composing binary sees it (`bourse::SERVICES`).
pub const SPEC: launch::Spec = launch::Spec {
    name: SERVICE,
    port_variable: "BOURSE_ALERTING_PORT",
    default_port: 8085,
    url_variable: Some("BOURSE_ALERTING_URL"),
    upstreams: &["auth"],
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
        vec![("auth", &mut self.auth.url)]
    }

    /// Unless told what to watch (`BOURSE_ALERTING_WATCH`), it watches what runs beside it.
    fn neighbours(&mut self, services: &[(&'static str, String)]) {
        if self.watch.targets.is_empty() {
            self.watch.targets = services
                .iter()
                .filter(|(name, _)| *name != SERVICE)
                .flat_map(|(name, url)| watched(name, url))
                .collect();
        }
    }

    fn build(self: Box<Self>, shutdown: Shutdown) -> launch::Pending<Server> {
        Box::pin(async move { Ok(build(*self, &shutdown).await?) })
    }
}

/// What the health watch probes of a service given at `url`: the service, or each of its
/// replicas when the URL lists them (ADR 0034), named `orders@orders-a:8082` so that one
/// replica down is its own alert and says which.
fn watched(name: &str, url: &str) -> Vec<(String, String)> {
    let replicas: Vec<&str> = service_kit::http::base_urls::split(url).collect();
    match replicas.as_slice() {
        [one] => vec![(name.to_owned(), (*one).to_owned())],
        several => several
            .iter()
            .map(|base| {
                let host = base.split_once("://").map_or(*base, |(_, host)| host);
                (format!("{name}@{host}"), (*base).to_owned())
            })
            .collect(),
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
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        "alerting_deliveries_total",
        Unit::Count,
        "Notification attempts, by channel kind and outcome."
    );
    describe_histogram!(
        "alerting_notification_seconds",
        Unit::Seconds,
        "Time from an alert being raised to its notification being delivered."
    );
    describe_counter!(
        "alerts_escalated_total",
        Unit::Count,
        "Alerts escalated because nobody acknowledged them."
    );
    describe_counter!(
        "alerts_raised_total",
        Unit::Count,
        "Alerts raised (new, or firing again)."
    );
    describe_counter!(
        "alerts_silenced_total",
        Unit::Count,
        "Alerts a silence kept from notifying."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_given_as_a_list_of_replicas_is_watched_replica_by_replica() {
        let mut config = Config::read(&mut service_kit::Env::from_pairs(
            Vec::<(String, String)>::new(),
        ));
        launch::Service::neighbours(
            &mut config,
            &[
                ("alerting", "http://alerting:8085".to_owned()),
                ("auth", "http://auth:8081/".to_owned()),
                (
                    "orders",
                    "http://orders-a:8082, https://orders-b:8082".to_owned(),
                ),
            ],
        );
        let watched: Vec<(&str, &str)> = config
            .watch
            .targets
            .iter()
            .map(|(name, url)| (name.as_str(), url.as_str()))
            .collect();
        assert_eq!(
            watched,
            [
                ("auth", "http://auth:8081"),
                ("orders@orders-a:8082", "http://orders-a:8082"),
                ("orders@orders-b:8082", "https://orders-b:8082"),
            ]
        );
    }
}
