//! The auth service: identity for Bourse.
//!
//! - [`config`]: `BOURSE_AUTH_*` settings.
//! - [`identity`]: the use cases (register, login, refresh, logout, revoke, roles).
//! - [`password`]: argon2id hashing, rehash on parameter change, the password policy (SEC-01).
//! - [`tokens`]: signing access tokens, minting and hashing refresh tokens (SEC-03, SEC-04).
//! - [`signing_keys`]: Ed25519 keys, rotation with overlap, the JWKS (SEC-03).
//! - [`service_tokens`]: client-credential tokens for service-to-service calls (SEC-14).
//! - [`throttle`]: failed-login throttling in Redis (SEC-07).
//! - [`audit`]: the hash-chained audit log and its verification (SEC-16).
//! - [`store`]: all SQL.
//! - [`http`]: thin handlers and the OpenAPI description.
//! - [`error`]: the crate's errors as problem+json.

pub mod api_keys;
pub mod audit;
pub mod config;
pub mod error;
pub mod http;
pub mod identity;
pub mod password;
pub mod service_tokens;
pub mod signing_keys;
pub mod store;
pub mod throttle;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use access::{JwksCache, TokenVerifier};
use service_kit::{Server, Shutdown};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub use config::Config;
pub use error::Error;

use crate::identity::Identity;
use crate::password::Passwords;
use crate::service_tokens::ServiceTokens;
use crate::signing_keys::Keyring;
use crate::throttle::LoginThrottle;

/// The database schema auth owns.
pub const SCHEMA: &str = "auth";
pub const SERVICE: &str = "auth";

/// Auth's migrations, embedded in the binary.
pub fn migrator() -> Migrator {
    sqlx::migrate!("../../../migrations/auth")
}

/// Connects auth's pool (search path = its schema).
pub async fn connect(config: &Config) -> Result<PgPool, Error> {
    Ok(service_kit::db::connect(&config.common, SCHEMA).await?)
}

pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    service_kit::db::migrate(pool, SCHEMA, migrator())
        .await
        .map_err(|e| Error::Internal(format!("migrating {SCHEMA}: {e}")))?;
    // The audit log is append-only for the service's own role too, by privilege as well as
    // by trigger (SEC-16).
    sqlx::query("REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM bourse_auth")
        .execute(pool)
        .await?;
    Ok(())
}

/// Connects, prepares keys and binds the listener; background tasks stop with `shutdown`.
pub async fn build(config: Config, shutdown: &Shutdown) -> Result<Server, Error> {
    let mut kit = launch::Kit::start(SERVICE, &config.common, shutdown, || {}).await?;
    let pool = kit.database(SCHEMA).await?;
    if config.common.migrate_on_start {
        migrate(&pool).await?;
    }
    let redis = kit.redis.clone();

    // Retired keys stay published for the token lifetime plus a minute of clock skew.
    let overlap = config.tokens.access_ttl + Duration::from_secs(60);
    // Keys stored before encryption, or under a retired master key, are re-sealed first.
    let resealed = signing_keys::reseal(&pool, &config.master_keys).await?
        + api_keys::reseal(&pool, &config.master_keys).await?;
    if resealed > 0 {
        tracing::info!(
            resealed,
            "signing keys re-sealed under the current master key"
        );
    }
    let keyring = Arc::new(Keyring::new(
        pool.clone(),
        overlap,
        config.master_keys.clone(),
    ));
    keyring.ensure_active(config.generate_signing_key).await?;
    let (refreshed, reload) = (keyring.clone(), config.signing_key_reload);
    kit.tasks.spawn("signing key reload", move |stop| {
        refreshed.clone().refresh_until(reload, stop)
    });

    let verifier = TokenVerifier::new(
        JwksCache::new(keyring.clone()),
        &config.tokens.issuer,
        &config.tokens.audience,
    )
    .into_shared();
    let identity = Identity::new(
        pool.clone(),
        Passwords::new(&config.argon2)?,
        keyring.clone(),
        LoginThrottle::new(redis.clone(), kit.keys(), config.throttle.clone()),
        config.tokens.clone(),
    );
    let service_tokens = ServiceTokens::new(
        &config.service_clients,
        keyring.clone(),
        config.tokens.issuer.clone(),
        config.service_token_ttl,
    );
    let api_keys = api_keys::ApiKeys::new(
        pool.clone(),
        config.master_keys.clone(),
        keyring.clone(),
        config.tokens.clone(),
        redis.clone(),
        kit.keys(),
    );
    // Service tokens auth itself is called with (the gateway asking for API key credentials).
    let services = TokenVerifier::<access::ServiceClaims>::new(
        JwksCache::new(keyring.clone()),
        &config.tokens.issuer,
        SERVICE,
    )
    .into_shared();
    let state = http::AppState::new(http::Shared {
        identity,
        service_tokens,
        keyring,
        verifier,
        services,
        api_keys,
    });
    let routes = http::router(state, config.trusted_proxies.clone());
    Ok(kit.serve(config.port, routes).await?)
}

/// Auth as the composing binary sees it (`bourse::SERVICES`).
pub const SPEC: launch::Spec = launch::Spec {
    name: SERVICE,
    port_variable: "BOURSE_AUTH_PORT",
    default_port: 8081,
    url_variable: Some("BOURSE_AUTH_URL"),
    upstreams: &[],
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
        vec![]
    }

    fn build(self: Box<Self>, shutdown: Shutdown) -> launch::Pending<Server> {
        Box::pin(async move { Ok(build(*self, &shutdown).await?) })
    }
}

/// Builds and serves until `shutdown`.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let server = build(config, &shutdown).await?;
    server
        .run(shutdown)
        .await
        .map_err(|e| Error::Internal(e.to_string()))
}
