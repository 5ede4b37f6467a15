//! What every Bourse service does before it serves, in one place, so a service's `build()`
//! says only what is its own (its state, its tasks, its routes):
//!
//! ```text
//! let mut kit = launch::Kit::start(SERVICE, &config.common, shutdown, describe_metrics).await?;
//! let pool = kit.database(SCHEMA).await?;      // follows DATABASE_URL; readiness checks it
//! if config.common.migrate_on_start {
//!     migrate(&pool).await?;
//! }
//! let verifiers = kit.verifiers(&config.auth); // user and service tokens, keys from auth
//! kit.relay(&pool, SCHEMA);                    // the outbox relay, supervised
//! let consumer = kit.consumer(&pool, "orders", ConsumerSettings::default()).await?;
//! kit.tasks.spawn("orders consumer", move |stop| consumer.clone().run(handler.clone(), stop));
//! kit.serve(config.port, http::router(state)).await
//! ```
//!
//! In order: the metrics recorder (with the descriptions of the kit's crates and the
//! service's own), the [`Supervisor`] that owns every background task, Redis, and the HTTP
//! client for calls to other services (the service certificate and CA under mTLS). Each service
//! adds what it uses; [`Kit::serve`] binds its listener with the standard router (health,
//! metrics, request ids, limits) and readiness over what it connected.
//!
//! [`platform`]: the assets and fees every money-handling service reads alike.
//!
//! [`service`]: how the crate then presents itself to the composing binary — a [`Spec`] and
//! its configuration as a [`Service`].

pub mod platform;
pub mod service;

pub use service::{BoxError, Migrations, Pending, Service, Spec};

use std::time::Duration;

use events::{Consumer, ConsumerSettings, Relay, RelaySettings};
use redis::aio::ConnectionManager;
use service_kit::health::{Check, Readiness};
use service_kit::redis::KeyPrefix;
use service_kit::{CommonConfig, Server, Shutdown, Supervisor};
use sqlx::PgPool;

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database")]
    Database(#[from] sqlx::Error),
    #[error("redis")]
    Redis(#[from] redis::RedisError),
    #[error("events")]
    Events(#[from] events::Error),
    #[error("service client")]
    Client(#[from] service_kit::tls::TlsError),
    #[error("service client")]
    Http(#[from] reqwest::Error),
    #[error("listener")]
    Bind(#[from] service_kit::shutdown::BindError),
    /// An upstream's settings do not make a client (its URL, its policy).
    #[error("upstream {upstream}: {reason}")]
    Upstream {
        upstream: &'static str,
        reason: String,
    },
}

/// A service being started: what it connected so far.
pub struct Kit {
    service: &'static str,
    common: CommonConfig,
    /// Owns every background task; the server stops them when it stops.
    pub tasks: Supervisor,
    pub redis: ConnectionManager,
    /// For calls to other services.
    pub client: reqwest::Client,
    shutdown: Shutdown,
    /// What readiness requires: everything connected so far.
    checks: Vec<Check>,
}

impl Kit {
    /// Installs the metrics recorder and describes the metrics of the kit's crates and the
    /// service's own (`describe`), then connects Redis and builds the service client.
    pub async fn start(
        service: &'static str,
        common: &CommonConfig,
        shutdown: &Shutdown,
        describe: fn(),
    ) -> Result<Self, Error> {
        service_kit::metrics::install();
        events::describe_metrics();
        resilience::describe_metrics();
        describe();
        let tasks = Supervisor::new(service, shutdown);
        let redis = service_kit::redis::connect(common).await?;
        let client = common
            .tls
            .service_client()?
            .connect_timeout(Duration::from_secs(1))
            .build()?;
        Ok(Self {
            service,
            common: common.clone(),
            tasks,
            checks: vec![Check::Redis(redis.clone())],
            redis,
            client,
            shutdown: shutdown.clone(),
        })
    }

    /// The pool of the service's `schema`, following `DATABASE_URL` as it rotates; readiness
    /// checks it from now on. Migrations are the caller's (`sqlx::migrate!` needs its crate).
    pub async fn database(&mut self, schema: &'static str) -> Result<PgPool, Error> {
        let pool = service_kit::db::connect_following(&self.common, schema, &self.tasks).await?;
        self.ready_when(Check::Postgres(pool.clone()));
        Ok(pool)
    }

    /// Adds a check readiness requires.
    pub fn ready_when(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// Verifiers of user and service tokens, with auth's signing keys fetched (and cached)
    /// from its JWKS.
    pub fn verifiers(&self, auth: &access::AuthSettings) -> access::Verifiers {
        access::Verifiers::from_auth(&self.client, auth, self.service)
    }

    /// Another service, called with this service's own service tokens from auth on every call
    /// (SEC-14; `secret` is its client secret) and through `libs/resilience`'s default policy.
    pub fn authenticated_upstream(
        &self,
        auth: &access::AuthSettings,
        secret: secrecy::SecretString,
        upstream: &'static str,
        url: &str,
    ) -> Result<resilience::Upstream, Error> {
        let failed = |reason| Error::Upstream { upstream, reason };
        let tokens =
            resilience::TokenSource::from_auth(&self.client, &auth.url, self.service, secret)
                .map_err(failed)?;
        resilience::Upstream::authenticated(
            upstream,
            url.to_owned(),
            self.client.clone(),
            resilience::Policy::default(),
            std::sync::Arc::new(tokens),
        )
        .map_err(failed)
    }

    /// Runs the outbox relay of `schema` (the service's events to Redis), supervised; it stops
    /// last, so what the service wrote before it stopped is published before the process exits.
    pub fn relay(&self, pool: &PgPool, schema: &'static str) {
        let relay = Relay::new(
            pool.clone(),
            self.redis.clone(),
            self.keys(),
            schema,
            RelaySettings {
                linger: self.common.relay_linger,
                ..RelaySettings::default()
            },
        );
        self.tasks
            .spawn_last("outbox relay", move |stop| relay.clone().run(stop));
    }

    /// A consumer of `stream` in the service's own group, on a Redis connection of its own
    /// (its blocking reads must not hold up the shared one). The caller runs it under
    /// [`Kit::tasks`] with its handler.
    pub async fn consumer(
        &self,
        pool: &PgPool,
        stream: &str,
        settings: ConsumerSettings,
    ) -> Result<Consumer, Error> {
        Ok(Consumer::new(
            pool.clone(),
            events::consumer::own_connection(&self.common).await?,
            self.keys(),
            stream,
            self.service,
            &events::consumer::replica_name(self.service),
            self.service,
            settings,
        ))
    }

    /// The prefix of this deployment's Redis keys.
    pub fn keys(&self) -> KeyPrefix {
        KeyPrefix::new(&self.common.redis_key_prefix)
    }

    /// Binds the service's listener on `port` with the standard router around `routes`
    /// (health and readiness, metrics, request ids, timeouts and body limits), the supervisor's
    /// tasks stopping with it.
    pub async fn serve(self, port: u16, routes: axum::Router) -> Result<Server, Error> {
        let readiness = self
            .checks
            .into_iter()
            .fold(Readiness::new(self.shutdown), Readiness::with);
        let router =
            service_kit::http::service_router(self.service, &self.common.http, readiness, routes);
        Ok(
            Server::for_service(self.service, &self.common, port, router)
                .await?
                .with_tasks(self.tasks),
        )
    }
}
