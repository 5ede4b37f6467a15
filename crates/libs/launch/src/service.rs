//! How a service crate presents itself to the binary that composes the platform: a [`Spec`]
//! (its name, the variables that place it, whom it calls, its migrations) and its configuration
//! as a [`Service`] (read and validated, it knows how to build the service). `bourse` derives
//! start order, wiring, migrations and test ports from the specs alone, so adding a service
//! to the platform is one line there.

use std::future::Future;
use std::pin::Pin;

use service_kit::{CommonConfig, Env, Server, Shutdown};
use sqlx::PgPool;

/// Any failure of a service's start, with its cause kept.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A future a service hands back to the composer.
pub type Pending<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 'static>>;

/// A service, described once by its crate (`pub const SPEC: launch::Spec`).
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// As logs, metrics, the health watch and the composer name it.
    pub name: &'static str,
    /// The variable of its listening port (tests set it to 0).
    pub port_variable: &'static str,
    /// Its port unless that variable says otherwise; also where the others find it
    /// (`BOURSE_SERVICE_URL_PATTERN`).
    pub default_port: u16,
    /// The variable that points callers at it when it runs elsewhere (none: nobody calls it).
    pub url_variable: Option<&'static str>,
    /// The names of the services it calls.
    pub upstreams: &'static [&'static str],
    /// Reads and validates its configuration; problems go to `env`, reported all at once.
    pub read: fn(&mut Env) -> Box<dyn Service>,
    /// Applies its migrations to a pool on its schema (none: it keeps no tables).
    pub migrations: Option<Migrations>,
}

/// A service's schema and how to bring it up to date.
#[derive(Clone, Copy, Debug)]
pub struct Migrations {
    pub schema: &'static str,
    pub apply: fn(PgPool) -> Pending<()>,
}

/// A service's validated configuration, ready to be built (implemented by each `Config`).
pub trait Service: Send + 'static {
    /// The settings every service shares (the composer reads migrate-on-start there, points
    /// pools at a rotated URL and hands over a pre-bound listener through it).
    fn common(&mut self) -> &mut CommonConfig;

    /// Its listening port (0: any).
    fn port(&self) -> u16;

    /// The base URLs of the services it calls, by their names: the composer points them at
    /// the ones running in the same process, unless the operator gave them.
    fn upstream_urls(&mut self) -> Vec<(&'static str, &mut String)>;

    /// The name and base URL of every service the process runs, told before it is built.
    fn neighbours(&mut self, _services: &[(&'static str, String)]) {}

    /// Builds the service, bound and ready to serve.
    fn build(self: Box<Self>, shutdown: Shutdown) -> Pending<Server>;
}
