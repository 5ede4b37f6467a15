//! The gateway: the only public port.
//!
//! - [`config`]: `BOURSE_GATEWAY_*` settings.
//! - [`admission`]: shedding by load, a pool of permits per upstream, before anything is
//!   forwarded (REL-06).
//! - [`route_table`]: every public route, its upstream and who may call it (SEC-02, SEC-14).
//! - [`http`]: the router built from the table; the gate (token, role, admin source IP,
//!   per-principal limit) in front of every forwarded request (SEC-06, SEC-15).
//! - [`rate_limit`]: per-IP (memory) and per-principal (Redis GCRA) limits (SEC-07).
//! - [`edge`]: security headers and CORS (SEC-08, SEC-09).
//! - [`proxy`]: forwarding with timeouts, header hygiene and propagation (REL-03, OBS-06).
//! - [`openapi`]: one API document merged from the services (OPS-09).
//! - [`stream`]: the WebSocket stream's hub and its Redis feed (TRD-09); the session itself is
//!   `http::stream`.

pub mod admission;
pub mod api_keys;
pub mod config;
pub mod deprecation;
pub mod edge;
pub mod http;
pub mod openapi;
pub mod proxy;
pub mod rate_limit;
pub mod route_table;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use access::{HttpKeySource, JwksCache, TokenVerifier};
use axum::extract::FromRef;
use axum::middleware::from_fn_with_state;
use service_kit::health::{Check, Readiness};
use service_kit::http::TrustedProxies;
use service_kit::redis::KeyPrefix;
use service_kit::{Server, Shutdown, Supervisor};
use tower_governor::GovernorLayer;

pub use config::Config;

use crate::openapi::ApiDocument;
use crate::proxy::Upstreams;
use crate::rate_limit::PrincipalLimiter;
use crate::route_table::UPSTREAMS;

pub const SERVICE: &str = "gateway";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("http client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("invalid rate limit settings")]
    RateLimits,
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    Tls(String),
    #[error("listener")]
    Bind(#[from] service_kit::shutdown::BindError),
    #[error("serving")]
    Serve(#[source] std::io::Error),
}

service_kit::shared_state! {
    /// Everything a request handler of the gateway needs, behind one `Arc`
    /// (`service_kit::http::shared_state`).
    pub struct Gateway(Shared);
}

pub struct Shared {
    pub verifier: Arc<TokenVerifier>,
    pub principal_limiter: PrincipalLimiter,
    pub upstreams: Upstreams,
    pub admin_allowlist: TrustedProxies,
    pub trusted_proxies: TrustedProxies,
    pub api_document: ApiDocument,
    /// WebSocket streams connected to this replica.
    pub hub: Arc<stream::Hub>,
    /// Sessions close with 1001 when it fires.
    pub shutdown: Shutdown,
    /// Forwarded requests in flight, and the excess shed (REL-06).
    pub admission: admission::Admission,
    /// Verifies requests signed with API keys (SEC-19).
    pub api_keys: api_keys::ApiKeyVerifier,
    /// The largest body a signed request may have (it is read whole to check its signature).
    pub body_limit: usize,
}

impl FromRef<Gateway> for Arc<TokenVerifier> {
    fn from_ref(gw: &Gateway) -> Self {
        gw.verifier.clone()
    }
}

pub async fn build(config: Config, shutdown: &Shutdown) -> Result<Server, Error> {
    service_kit::metrics::install();
    events::describe_metrics();
    resilience::describe_metrics();
    describe_metrics();
    if config.orders_timeout_cuts_placements_short() {
        tracing::warn!(
            orders_timeout_ms = config.orders_timeout.as_millis() as u64,
            check_valid_for_ms = config.check_valid_for.as_millis() as u64,
            "BOURSE_GATEWAY_ORDERS_TIMEOUT_MS is not above BOURSE_RISK_CHECK_VALID_FOR_MS: \
             placements orders still books will be answered 504; raise the timeout above the bound"
        );
    }
    let tasks = Supervisor::new(SERVICE, shutdown);
    let redis = service_kit::redis::connect(&config.common).await?;
    let client = config
        .common
        .tls
        .service_client()
        .map_err(|e| Error::Tls(e.to_string()))?
        .connect_timeout(Duration::from_secs(1))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()?;
    let verifier = TokenVerifier::new(
        JwksCache::with_intervals(
            Arc::new(HttpKeySource::new(client.clone(), config.auth.jwks_url())),
            config.jwks_min_refresh,
            Duration::from_secs(300),
        ),
        &config.auth.issuer,
        &config.auth.audience,
    )
    .into_shared();
    let upstream = |known: route_table::Upstream| {
        resilience::Upstream::new(
            SERVICE,
            known.name,
            config.url_of(known),
            client.clone(),
            config.policy_of(known),
        )
        .map_err(Error::Upstream)
    };
    let mut clients = Vec::with_capacity(UPSTREAMS.len());
    for known in UPSTREAMS {
        clients.push((known, upstream(known)?));
    }
    let upstreams = Upstreams::new(clients, config.common.http.body_limit_bytes);
    let keys = KeyPrefix::new(&config.common.redis_key_prefix);
    // The gateway's own service token: it reads API key credentials from auth.
    let tokens = Arc::new(
        resilience::TokenSource::from_auth(
            &client,
            &config.auth.url,
            SERVICE,
            config.service_secret.clone(),
        )
        .map_err(Error::Upstream)?,
    );
    let api_keys = api_keys::ApiKeyVerifier::new(
        resilience::Upstream::authenticated(
            "auth",
            config.auth.url.clone(),
            client.clone(),
            config.policy_of(route_table::Upstream::AUTH),
            tokens,
        )
        .map_err(Error::Upstream)?,
        redis.clone(),
        keys.clone(),
        config.api_keys.clone(),
    );
    for upstream in upstreams.all() {
        spawn_breaker_notices(upstream, redis.clone(), keys.clone(), &tasks);
    }
    let principal_limiter = PrincipalLimiter::new(
        redis.clone(),
        KeyPrefix::new(&config.common.redis_key_prefix),
        config.rate_limits.clone(),
    )
    .map_err(|_| Error::RateLimits)?;
    let gateway = Gateway::new(Shared {
        verifier,
        principal_limiter,
        upstreams,
        admin_allowlist: config.admin_allowlist.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
        api_document: ApiDocument::default(),
        hub: stream::Hub::new(config.stream.clone()),
        shutdown: shutdown.clone(),
        admission: admission::Admission::new(config.admission),
        api_keys,
        body_limit: config.common.http.body_limit_bytes,
    });
    // Its own connection: a blocking XREAD holds a connection for its whole wait, and the
    // per-principal limiter on every request must not queue behind it.
    stream::feed::spawn(
        service_kit::redis::connect(&config.common).await?,
        keys.clone(),
        gateway.hub.clone(),
        Arc::new(stream::messages::Amounts::new(config.assets.clone())),
        &tasks,
    );

    let ip_limits = rate_limit::ip_limiter(&config.rate_limits, config.trusted_proxies.clone())
        .ok_or(Error::RateLimits)?;
    spawn_ip_limiter_cleanup(&ip_limits, &tasks);
    let limits = config.rate_limits.clone();
    let api = http::router(gateway).layer(
        GovernorLayer::new(ip_limits)
            .error_handler(move |err| rate_limit::ip_limit_response(&limits, err)),
    );

    // Ready when the gateway itself can serve: an upstream that is down takes only its own
    // routes down (503 through its breaker), so it is reported, not required — a pager that is
    // down must not take the trading API out of rotation.
    let readiness = UPSTREAMS.into_iter().fold(
        Readiness::new(shutdown.clone()).with(Check::Redis(redis)),
        |readiness, known| {
            readiness.reporting(Check::Upstream {
                name: known.name,
                base_url: config.url_of(known).to_owned(),
                client: client.clone(),
            })
        },
    );
    // CORS and security headers wrap everything, so preflights are answered before routing and
    // even a 404 or 405 carries the headers.
    let router = service_kit::http::service_router(SERVICE, &config.common.http, readiness, api)
        .layer(edge::cors(&config.cors_origins))
        .layer(from_fn_with_state(config.hsts, edge::security_headers));
    // The public listener: HTTPS for browsers, which are never asked for a certificate.
    let tls = config
        .common
        .tls
        .public_listener(config.public_tls.as_ref())
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(Server::listen(SERVICE, &config.common, config.port, router)
        .await?
        .with_tls(tls)
        .with_tasks(tasks))
}

/// Publishes the breaker's transitions as `CircuitBreakerOpened`/`Closed` on the ops stream,
/// for alerting. The gateway has no database, hence no outbox: these notices are at most once
/// (`events::direct`), and the `resilience_breaker_state` metric remains the source of truth.
fn spawn_breaker_notices(
    upstream: &resilience::Upstream,
    redis: redis::aio::ConnectionManager,
    keys: KeyPrefix,
    tasks: &Supervisor,
) {
    upstream.spawn_announcer(tasks, move |notice| {
        let (redis, keys) = (redis.clone(), keys.clone());
        async move {
            let published =
                events::direct::publish(&redis, &keys, events::consumer::OPS_STREAM, &notice).await;
            if let Err(err) = published {
                let event_type = notice.event_type;
                tracing::warn!(error = %err, %event_type, "could not publish a breaker notice");
            }
        }
    });
}

/// The in-memory limiter keeps a state per client address; forget the idle ones.
fn spawn_ip_limiter_cleanup(config: &Arc<rate_limit::IpLimiterConfig>, tasks: &Supervisor) {
    let limiter = config.limiter().clone();
    tasks.spawn("ip limiter cleanup", move |shutdown| {
        let limiter = limiter.clone();
        async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = ticker.tick() => {
                        limiter.retain_recent();
                        limiter.shrink_to_fit();
                    }
                    () = shutdown.triggered() => break,
                }
            }
        }
    });
}

/// The gateway as the composing binary sees it (`bourse::SERVICES`): it calls every upstream
/// of its route table and is called by nobody inside the platform.
pub const SPEC: launch::Spec = launch::Spec {
    name: SERVICE,
    port_variable: "BOURSE_GATEWAY_PORT",
    default_port: 8080,
    url_variable: None,
    upstreams: &route_table::UPSTREAM_NAMES,
    read: |env| Box::new(Config::read(env)),
    migrations: None,
};

impl launch::Service for Config {
    fn common(&mut self) -> &mut service_kit::CommonConfig {
        &mut self.common
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn upstream_urls(&mut self) -> Vec<(&'static str, &mut String)> {
        let mut slots = vec![("auth", &mut self.auth.url)];
        slots.extend(
            self.upstream_urls
                .iter_mut()
                .map(|(upstream, url)| (upstream.name, url)),
        );
        slots
    }

    fn build(self: Box<Self>, shutdown: Shutdown) -> launch::Pending<Server> {
        Box::pin(async move { Ok(build(*self, &shutdown).await?) })
    }
}

pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let server = build(config, &shutdown).await?;
    server.run(shutdown).await.map_err(Error::Serve)
}

/// Gives each metric this crate records its help text and unit, as `/metrics` shows them
/// (`promtool check metrics` asks for both). Call it once the recorder is installed.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_gauge!(
        "gateway_requests_in_flight",
        Unit::Count,
        "Requests being forwarded now (admission control), by lane (traffic or admin) and upstream."
    );
    describe_counter!(
        "gateway_requests_shed_total",
        Unit::Count,
        "Requests answered 503 at once because their upstream's permits were all taken, by lane (traffic or admin) and upstream."
    );
    describe_counter!(
        "gateway_rate_limit_skipped_total",
        Unit::Count,
        "Requests admitted without asking Redis for the per-principal limit, because the \
         limiter's breaker for Redis was open (Redis failing or stalled; ADR 0004)."
    );
    describe_counter!(
        "gateway_signed_requests_refused_total",
        Unit::Count,
        "Requests signed with an API key that were refused, by code."
    );
    describe_gauge!(
        "gateway_stream_connections",
        Unit::Count,
        "Open WebSocket streams."
    );
    describe_counter!(
        "gateway_stream_disconnects_total",
        Unit::Count,
        "WebSocket streams closed by the gateway, by reason."
    );
    describe_counter!(
        "gateway_stream_entries_total",
        Unit::Count,
        "Entries of the orders and market streams the live feed read, by outcome: forwarded, \
         unheard (no client subscribed, not parsed), unreadable, or repeated (a copy a relay \
         published again, skipped)."
    );
    describe_counter!(
        "gateway_stream_stale_updates_total",
        Unit::Count,
        "Book updates dropped because their sequence was not past the last one sent for that \
         book (an update the symbol's previous owner published late)."
    );
    describe_counter!(
        "gateway_stream_sessions_total",
        Unit::Count,
        "WebSocket streams opened."
    );
}
