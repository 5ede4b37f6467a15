//! Composition of the Bourse services into one process.
//!
//! `bourse serve all` and `bourse serve auth` run the same code: each target is built from its
//! own configuration and served on its own listener, and targets talk to each other over HTTP
//! even when they share a process. Tests use [`plan`] and [`start`] directly, with the
//! environment of `testing` (feature `testing`).

pub mod demo;
pub mod local_datastores;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use service_kit::Server;
use service_kit::{CommonConfig, ConfigError, Env, Shutdown};
use tokio::task::JoinHandle;

/// A service the binary can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Target {
    /// Every service built so far.
    All,
    Gateway,
    Auth,
    Orders,
    Settlement,
    Risk,
    Alerting,
}

/// One service of the platform, described once: everything `bourse` derives about it that is
/// not in its own crate — start order, the variables that place it, whom it calls.
#[derive(Clone, Copy, Debug)]
pub struct ServiceSpec {
    pub target: Target,
    /// As logs, metrics and the health watch name it.
    pub name: &'static str,
    /// The variable of its listening port (tests set it to 0).
    pub port_variable: &'static str,
    /// The variable that points callers at it when it runs elsewhere (none: nobody calls it).
    pub url_variable: Option<&'static str>,
    /// The services it calls, which start before it.
    pub upstreams: &'static [Target],
}

/// Every service, in start order: each after the services it calls.
pub const SERVICES: [ServiceSpec; 6] = [
    ServiceSpec {
        target: Target::Auth,
        name: "auth",
        port_variable: "BOURSE_AUTH_PORT",
        url_variable: Some("BOURSE_AUTH_URL"),
        upstreams: &[],
    },
    ServiceSpec {
        target: Target::Risk,
        name: "risk",
        port_variable: "BOURSE_RISK_PORT",
        url_variable: Some("BOURSE_RISK_URL"),
        upstreams: &[Target::Auth],
    },
    ServiceSpec {
        target: Target::Settlement,
        name: "settlement",
        port_variable: "BOURSE_SETTLEMENT_PORT",
        url_variable: Some("BOURSE_SETTLEMENT_URL"),
        // Orders too, which starts after it (orders calls settlement): `start` gives
        // settlement the address orders will bind.
        upstreams: &[Target::Auth, Target::Orders],
    },
    ServiceSpec {
        target: Target::Orders,
        name: "orders",
        port_variable: "BOURSE_ORDERS_PORT",
        url_variable: Some("BOURSE_ORDERS_URL"),
        upstreams: &[Target::Auth, Target::Settlement, Target::Risk],
    },
    ServiceSpec {
        target: Target::Alerting,
        name: "alerting",
        port_variable: "BOURSE_ALERTING_PORT",
        url_variable: Some("BOURSE_ALERTING_URL"),
        upstreams: &[Target::Auth],
    },
    ServiceSpec {
        target: Target::Gateway,
        name: "gateway",
        port_variable: "BOURSE_GATEWAY_PORT",
        url_variable: None,
        upstreams: &[
            Target::Auth,
            Target::Orders,
            Target::Settlement,
            Target::Risk,
            Target::Alerting,
        ],
    },
];

impl Target {
    /// The concrete services a list of targets stands for, in start order (upstreams first).
    pub fn expand(targets: &[Target]) -> Vec<Target> {
        SERVICES
            .iter()
            .map(|spec| spec.target)
            .filter(|target| targets.contains(&Target::All) || targets.contains(target))
            .collect()
    }

    /// Its description in [`SERVICES`]; none for [`Target::All`].
    pub fn spec(self) -> Option<&'static ServiceSpec> {
        SERVICES.iter().find(|spec| spec.target == self)
    }
}

/// Validated configuration of every requested service.
pub struct Plan {
    pub common: CommonConfig,
    pub auth: Option<auth::Config>,
    pub orders: Option<orders::Config>,
    pub settlement: Option<settlement::Config>,
    pub risk: Option<risk::Config>,
    pub alerting: Option<alerting::Config>,
    pub gateway: Option<gateway::Config>,
    /// The upstreams whose URL was given (`BOURSE_<TARGET>_URL`); the others are wired to the
    /// services started in this process.
    urls_given: BTreeSet<Target>,
}

impl Plan {
    /// Every planned service's database pools follow `changes` of `DATABASE_URL`: a credential
    /// rotated in the secret store is used by new connections without a restart (SEC-11).
    pub fn follow_database_url(
        &mut self,
        changes: tokio::sync::watch::Receiver<secrecy::SecretString>,
    ) {
        let services = [
            self.auth.as_mut().map(|c| &mut c.common),
            self.orders.as_mut().map(|c| &mut c.common),
            self.settlement.as_mut().map(|c| &mut c.common),
            self.risk.as_mut().map(|c| &mut c.common),
            self.alerting.as_mut().map(|c| &mut c.common),
            self.gateway.as_mut().map(|c| &mut c.common),
        ];
        for common in services.into_iter().flatten() {
            common.database_url_changes = Some(changes.clone());
        }
        self.common.database_url_changes = Some(changes);
    }
}

/// Keeps the secret settings given as references fresh until `shutdown`, and points the
/// planned services' pools at `DATABASE_URL` as it rotates. Other secret settings are read at
/// start (a rolling restart picks up their rotation; signing keys rotate through auth's
/// database, SEC-03). The refresher's task is returned, to be awaited after shutdown.
#[must_use = "a dropped handle hides a refresher that died"]
pub async fn keep_secrets_fresh(
    plan: &mut Plan,
    live: &secrets::settings::LiveSettings,
    shutdown: &Shutdown,
) -> JoinHandle<()> {
    if let Some(changes) = live.watch("DATABASE_URL").await {
        plan.follow_database_url(changes);
    }
    let stop = shutdown.clone();
    live.spawn_refresh(async move { stop.triggered().await })
}

/// Reads the configuration of `targets`; every problem is reported at once (OPS-01).
pub fn plan(targets: &[Target], mut env: Env) -> Result<Plan, ConfigError> {
    let services = Target::expand(targets);
    let common = CommonConfig::read(&mut env);
    // Read by `bourse serve` before the plan (it may start datastores); read again here so
    // that their problems are reported with every other.
    let _ = local_datastores::Settings::read(&mut env);
    let urls_given = upstream_urls()
        .filter(|(_, variable)| env.is_set(variable))
        .map(|(target, _)| target)
        .collect();
    let auth = services
        .contains(&Target::Auth)
        .then(|| auth::Config::read(&mut env));
    let orders = services
        .contains(&Target::Orders)
        .then(|| orders::Config::read(&mut env));
    let risk = services
        .contains(&Target::Risk)
        .then(|| risk::Config::read(&mut env));
    let settlement = services
        .contains(&Target::Settlement)
        .then(|| settlement::Config::read(&mut env));
    let alerting = services
        .contains(&Target::Alerting)
        .then(|| alerting::Config::read(&mut env));
    let gateway = services
        .contains(&Target::Gateway)
        .then(|| gateway::Config::read(&mut env));
    if common.tls.required {
        refuse_plaintext_upstreams(&services, &urls_given, &mut env);
    }
    env.finish()?;
    Ok(Plan {
        common,
        auth,
        orders,
        gateway,
        settlement,
        risk,
        alerting,
        urls_given,
    })
}

/// The variable that points callers at each service that runs elsewhere.
fn upstream_urls() -> impl Iterator<Item = (Target, &'static str)> {
    SERVICES
        .iter()
        .filter_map(|spec| spec.url_variable.map(|variable| (spec.target, variable)))
}

/// The upstreams each service calls.
fn upstreams_of(service: Target) -> &'static [Target] {
    service.spec().map_or(&[], |spec| spec.upstreams)
}

/// With `BOURSE_TLS_REQUIRED=true`, every upstream this process calls outside itself must be
/// given as an `https://` URL: the defaults are plaintext loopback addresses (SEC-13).
fn refuse_plaintext_upstreams(services: &[Target], urls_given: &BTreeSet<Target>, env: &mut Env) {
    let needed: BTreeSet<Target> = services
        .iter()
        .flat_map(|service| upstreams_of(*service).iter().copied())
        .filter(|upstream| !services.contains(upstream))
        .collect();
    for (upstream, variable) in upstream_urls() {
        if !needed.contains(&upstream) && !urls_given.contains(&upstream) {
            continue;
        }
        let url: String = env.or(variable, String::new());
        if !url.starts_with("https://") {
            env.problem(
                variable,
                "must be an https:// URL when BOURSE_TLS_REQUIRED=true",
            );
        }
    }
}

/// One started service: its own shutdown token and its task.
struct Stage {
    target: Target,
    shutdown: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Running services and their bound addresses.
pub struct Running {
    pub addresses: BTreeMap<Target, SocketAddr>,
    stages: Vec<Stage>,
    shutdown: Shutdown,
}

impl Running {
    pub fn address(&self, target: Target) -> Option<SocketAddr> {
        self.addresses.get(&target).copied()
    }

    /// Waits for the process shutdown (or for a service to fail, which triggers it), then stops
    /// the services edge-first: the gateway drains its in-flight requests while the services
    /// behind it still answer them, then each upstream stops in turn (REL-02).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.shutdown.triggered().await;
        let mut first_error = None;
        for stage in self.stages.into_iter().rev() {
            stage.shutdown.trigger();
            let result = stage
                .task
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r);
            match result {
                Ok(()) => tracing::info!(service = ?stage.target, "service stopped"),
                Err(err) => {
                    tracing::error!(service = ?stage.target, error = %err, "service failed");
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Serves `server` until its stage token fires; if it ends for any other reason, the whole
/// process is told to stop. The stage token is the one the service's background tasks and
/// readiness watch.
fn spawn_stage_with(
    target: Target,
    server: Server,
    shutdown: Shutdown,
    process: &Shutdown,
) -> Stage {
    let token = shutdown.clone();
    let process = process.clone();
    let task = tokio::spawn(async move {
        let result = server.run(token).await;
        process.trigger();
        Ok(result?)
    });
    Stage {
        target,
        shutdown,
        task,
    }
}

/// Builds and starts every planned service, upstreams first.
pub async fn start(mut plan: Plan, shutdown: &Shutdown) -> anyhow::Result<Running> {
    let migrate_on_start = plan.auth.as_ref().is_some_and(|c| c.migrate_on_start)
        || plan.orders.as_ref().is_some_and(|c| c.migrate_on_start)
        || plan.settlement.as_ref().is_some_and(|c| c.migrate_on_start)
        || plan.risk.as_ref().is_some_and(|c| c.migrate_on_start)
        || plan.alerting.as_ref().is_some_and(|c| c.migrate_on_start);
    if migrate_on_start {
        service_kit::db::ensure_database(&plan.common).await?;
    }
    let mut started = Started {
        scheme: plan.common.tls.scheme(),
        urls_given: plan.urls_given,
        addresses: BTreeMap::new(),
        stages: Vec::new(),
    };
    if let Some(config) = plan.auth {
        let stage = Shutdown::new();
        let server = auth::build(config, &stage).await?;
        started.add(Target::Auth, server, stage, shutdown)?;
    }
    if let Some(mut config) = plan.risk {
        started.wire(Target::Auth, &mut config.auth.url);
        let stage = Shutdown::new();
        let server = risk::build(config, &stage).await?;
        started.add(Target::Risk, server, stage, shutdown)?;
    }
    if let Some(mut config) = plan.settlement {
        started.wire(Target::Auth, &mut config.auth.url);
        // Settlement's reconciliation asks orders, which starts after it (orders calls
        // settlement): orders' address must be known before orders is bound.
        if let Some(orders) = plan.orders.as_mut()
            && !started.urls_given.contains(&Target::Orders)
        {
            config.orders_url = format!("{}://{}", started.scheme, planned_address(orders)?);
        }
        let stage = Shutdown::new();
        let server = settlement::build(config, &stage).await?;
        started.add(Target::Settlement, server, stage, shutdown)?;
    }
    if let Some(mut config) = plan.orders {
        started.wire(Target::Auth, &mut config.auth.url);
        started.wire(Target::Settlement, &mut config.settlement_url);
        started.wire(Target::Risk, &mut config.risk_url);
        let stage = Shutdown::new();
        let server = orders::build(config, &stage).await?;
        started.add(Target::Orders, server, stage, shutdown)?;
    }
    if let Some(mut config) = plan.alerting {
        started.wire(Target::Auth, &mut config.auth.url);
        if config.watch.targets.is_empty() {
            // Unless told what to watch (BOURSE_ALERTING_WATCH), watch what runs here. The
            // gateway starts after alerting (it routes to it), so only a given list names it.
            config.watch.targets = started.watchable();
        }
        let stage = Shutdown::new();
        let server = alerting::build(config, &stage).await?;
        started.add(Target::Alerting, server, stage, shutdown)?;
    }
    if let Some(mut config) = plan.gateway {
        started.wire(Target::Auth, &mut config.auth.url);
        started.wire(Target::Orders, &mut config.orders_url);
        started.wire(Target::Settlement, &mut config.settlement_url);
        started.wire(Target::Risk, &mut config.risk_url);
        started.wire(Target::Alerting, &mut config.alerting_url);
        let stage = Shutdown::new();
        let server = gateway::build(config, &stage).await?;
        started.add(Target::Gateway, server, stage, shutdown)?;
    }
    Ok(Running {
        addresses: started.addresses,
        stages: started.stages,
        shutdown: shutdown.clone(),
    })
}

/// The services started so far, upstreams first.
struct Started {
    /// `https` when the services listen with TLS.
    scheme: &'static str,
    urls_given: BTreeSet<Target>,
    addresses: BTreeMap<Target, SocketAddr>,
    stages: Vec<Stage>,
}

impl Started {
    /// Points `url` at the `upstream` started in this process, unless the operator gave its
    /// URL or it runs elsewhere.
    fn wire(&self, upstream: Target, url: &mut String) {
        if !self.urls_given.contains(&upstream)
            && let Some(address) = self.addresses.get(&upstream)
        {
            *url = format!("{}://{}", self.scheme, reachable(*address));
        }
    }

    /// (name, base URL) of every service started so far, for the health watch.
    fn watchable(&self) -> Vec<(String, String)> {
        self.addresses
            .iter()
            .map(|(target, address)| {
                (
                    target.spec().map_or("?", |spec| spec.name).to_owned(),
                    format!("{}://{}", self.scheme, reachable(*address)),
                )
            })
            .collect()
    }

    fn add(
        &mut self,
        target: Target,
        server: Server,
        stage: Shutdown,
        process: &Shutdown,
    ) -> anyhow::Result<()> {
        self.addresses.insert(target, server.local_addr()?);
        self.stages
            .push(spawn_stage_with(target, server, stage, process));
        Ok(())
    }
}

/// Where orders will listen: its configured port, or — for port 0 (tests) — a free port picked
/// now and written into its configuration.
///
/// Between the pick and the bind another process could take the port. A port the kernel hands
/// out for port 0 would be taken soon by exactly that: the next service or test binding port 0,
/// or an outgoing connection, gets one from the same ephemeral range (a parallel test failed
/// that way, "address already in use"). So the pick is made below that range, at random, where
/// only another such pick could land on it.
fn planned_address(orders: &mut orders::Config) -> anyhow::Result<SocketAddr> {
    let host: IpAddr = orders
        .common
        .bind_host
        .parse()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    if orders.port == 0 {
        orders.port = free_port_below_ephemeral(host)?;
    }
    Ok(reachable(SocketAddr::new(host, orders.port)))
}

/// A port that binds now on `host`, in 20000-32767 (below Linux's default ephemeral range,
/// 32768-60999), falling back to one from the kernel.
fn free_port_below_ephemeral(host: IpAddr) -> std::io::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    // A random start (each RandomState is seeded anew), then a walk through the range.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let start = hasher.finish();
    const LOW: u64 = 20_000;
    const SPAN: u64 = 12_768;
    for step in 0..64 {
        let Ok(port) = u16::try_from(LOW + (start.wrapping_add(step * 7_919)) % SPAN) else {
            continue;
        };
        if std::net::TcpListener::bind(SocketAddr::new(host, port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(std::net::TcpListener::bind(SocketAddr::new(host, 0))?
        .local_addr()?
        .port())
}

/// A wildcard bind address is not something to connect to; use loopback instead.
fn reachable(address: SocketAddr) -> SocketAddr {
    if address.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), address.port())
    } else {
        address
    }
}

/// Creates the database if needed and applies every service's migrations.
pub async fn migrate(common: &CommonConfig) -> anyhow::Result<()> {
    service_kit::db::ensure_database(common).await?;
    let pool = service_kit::db::connect(common, auth::SCHEMA).await?;
    auth::migrate(&pool).await?;
    let pool = service_kit::db::connect(common, orders::SCHEMA).await?;
    orders::migrate(&pool).await?;
    let pool = service_kit::db::connect(common, settlement::SCHEMA).await?;
    settlement::migrate(&pool).await?;
    let pool = service_kit::db::connect(common, risk::SCHEMA).await?;
    risk::migrate(&pool).await?;
    let pool = service_kit::db::connect(common, alerting::SCHEMA).await?;
    alerting::migrate(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn orders_planned_port_is_below_the_kernels_ephemeral_range_and_free() {
        let host = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for _ in 0..20 {
            let port = free_port_below_ephemeral(host).unwrap();
            assert!((20_000..32_768).contains(&port), "{port}");
            // Free when picked: it binds.
            std::net::TcpListener::bind(SocketAddr::new(host, port)).unwrap();
        }
    }
}
