//! {{Name}}: a Bourse service. It starts the way every service does (`launch::Kit`) and
//! describes itself to the binary once ([`SPEC`]).
//!
//! - [`config`]: `BOURSE_{{NAME}}_*` settings.
//! - [`error`]: the one error type and its problem+json answers.
//! - [`http`]: thin handlers and the router, with the service's own API document.
//! - [`store`]: all of its SQL, on its own schema (`{{name}}`).

pub mod config;
pub mod error;
pub mod http;
pub mod store;

use service_kit::{Server, Shutdown};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub use config::Config;
pub use error::Error;

/// The database schema {{name}} owns; nothing else reads or writes it.
pub const SCHEMA: &str = "{{name}}";
pub const SERVICE: &str = "{{name}}";

/// Its migrations, embedded in the binary; they live beside the crate.
pub fn migrator() -> Migrator {
    sqlx::migrate!("./migrations")
}

pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    service_kit::db::migrate(pool, SCHEMA, migrator())
        .await
        .map_err(Error::Migrate)
}

/// Connects, migrates (outside production) and binds the listener; background tasks stop
/// with `shutdown`.
pub async fn build(config: Config, shutdown: &Shutdown) -> Result<Server, Error> {
    let mut kit = launch::Kit::start(SERVICE, &config.common, shutdown, || {}).await?;
    let pool = kit.database(SCHEMA).await?;
    if config.common.migrate_on_start {
        migrate(&pool).await?;
    }
    let verifiers = kit.verifiers(&config.auth);
    let state = http::AppState::new(http::Shared {
        pool,
        verifier: verifiers.users,
    });
    Ok(kit.serve(config.port, http::router(state)).await?)
}

/// {{Name}} as the composing binary sees it (`bourse::SERVICES`).
pub const SPEC: launch::Spec = launch::Spec {
    name: SERVICE,
    port_variable: "BOURSE_{{NAME}}_PORT",
    default_port: {{port}},
    url_variable: Some("BOURSE_{{NAME}}_URL"),
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

    fn build(self: Box<Self>, shutdown: Shutdown) -> launch::Pending<Server> {
        Box::pin(async move { Ok(build(*self, &shutdown).await?) })
    }
}
