//! Composition of the Bourse services into one process.
//!
//! `bourse serve all` and `bourse serve auth` run the same code: each target is built from its
//! own configuration and served on its own listener, and targets talk to each other over HTTP
//! even when they share a process. What the binary knows of a service is its crate's
//! `launch::Spec`, listed once in [`SERVICES`]: start order, configuration, wiring,
//! migrations and the tests' ports are derived from that list. Tests use [`plan`] and
//! [`start`] directly, with the environment of `testing` (feature `testing`).

pub mod demo;
pub mod local_datastores;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;

use service_kit::{CommonConfig, ConfigError, Env, PreBound, Server, Shutdown};
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

/// One service of the platform: the target that names it on the command line and what its
/// crate says about itself.
#[derive(Clone, Copy, Debug)]
pub struct ServiceSpec {
    pub target: Target,
    pub service: launch::Spec,
}

/// Every service, in start order: each after the services it calls (settlement's calls to
/// orders excepted — every listener is bound before any service is built, so it can be wired
/// to a service that starts after it).
pub const SERVICES: [ServiceSpec; 6] = [
    ServiceSpec {
        target: Target::Auth,
        service: auth::SPEC,
    },
    ServiceSpec {
        target: Target::Risk,
        service: risk::SPEC,
    },
    ServiceSpec {
        target: Target::Settlement,
        service: settlement::SPEC,
    },
    ServiceSpec {
        target: Target::Orders,
        service: orders::SPEC,
    },
    ServiceSpec {
        target: Target::Alerting,
        service: alerting::SPEC,
    },
    ServiceSpec {
        target: Target::Gateway,
        service: gateway::SPEC,
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
    pub fn spec(self) -> Option<&'static launch::Spec> {
        SERVICES
            .iter()
            .find(|spec| spec.target == self)
            .map(|spec| &spec.service)
    }

    /// The service a spec names, by its name.
    fn named(name: &str) -> Option<Target> {
        SERVICES
            .iter()
            .find(|spec| spec.service.name == name)
            .map(|spec| spec.target)
    }

    fn name(self) -> &'static str {
        self.spec().map_or("all", |spec| spec.name)
    }
}

/// Validated configuration of every requested service.
pub struct Plan {
    pub common: CommonConfig,
    /// Each requested service's configuration, in start order.
    services: Vec<(Target, Box<dyn launch::Service>)>,
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
        for (_, service) in &mut self.services {
            service.common().database_url_changes = Some(changes.clone());
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
    let targets = Target::expand(targets);
    let common = CommonConfig::read(&mut env);
    // Read by `bourse serve` before the plan (it may start datastores); read again here so
    // that their problems are reported with every other.
    let _ = local_datastores::Settings::read(&mut env);
    let urls_given = upstream_urls()
        .filter(|(_, variable)| env.is_set(variable))
        .map(|(target, _)| target)
        .collect();
    let services = SERVICES
        .iter()
        .filter(|spec| targets.contains(&spec.target))
        .map(|spec| (spec.target, (spec.service.read)(&mut env)))
        .collect();
    if common.tls.required {
        refuse_plaintext_upstreams(&targets, &urls_given, &mut env);
    }
    env.finish()?;
    Ok(Plan {
        common,
        services,
        urls_given,
    })
}

/// The variable that points callers at each service that runs elsewhere.
fn upstream_urls() -> impl Iterator<Item = (Target, &'static str)> {
    SERVICES.iter().filter_map(|spec| {
        spec.service
            .url_variable
            .map(|variable| (spec.target, variable))
    })
}

/// The upstreams each service calls.
fn upstreams_of(service: Target) -> impl Iterator<Item = Target> {
    service
        .spec()
        .map_or(&[][..], |spec| spec.upstreams)
        .iter()
        .filter_map(|name| Target::named(name))
}

/// With `BOURSE_TLS_REQUIRED=true`, every upstream this process calls outside itself must be
/// given as an `https://` URL: the defaults are plaintext loopback addresses (SEC-13).
fn refuse_plaintext_upstreams(services: &[Target], urls_given: &BTreeSet<Target>, env: &mut Env) {
    let needed: BTreeSet<Target> = services
        .iter()
        .flat_map(|service| upstreams_of(*service))
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
///
/// Every listener is bound before any service is built, so each service is wired to where
/// the others listen — port 0 included (tests) — with no window between choosing a port and
/// binding it in which a parallel test could take it.
pub async fn start(plan: Plan, shutdown: &Shutdown) -> anyhow::Result<Running> {
    let Plan {
        common,
        mut services,
        urls_given,
    } = plan;
    if services
        .iter()
        .any(|(_, service)| service.migrate_on_start())
    {
        service_kit::db::ensure_database(&common).await?;
    }
    let scheme = common.tls.scheme();
    let mut addresses = BTreeMap::new();
    for (target, service) in &mut services {
        let (host, port) = (service.common().bind_host.clone(), service.port());
        let listener = PreBound::bind(&host, port)
            .with_context(|| format!("binding {host}:{port} for {}", target.name()))?;
        addresses.insert(*target, reachable(listener.local_addr()?));
        service.common().listener = Some(listener);
    }
    let neighbours: Vec<(&'static str, String)> = addresses
        .iter()
        .map(|(target, address)| (target.name(), format!("{scheme}://{address}")))
        .collect();
    for (_, service) in &mut services {
        for (upstream, url) in service.upstream_urls() {
            let local = Target::named(upstream)
                .filter(|target| !urls_given.contains(target))
                .and_then(|target| addresses.get(&target));
            if let Some(address) = local {
                *url = format!("{scheme}://{address}");
            }
        }
        service.neighbours(&neighbours);
    }
    let mut stages = Vec::with_capacity(services.len());
    for (target, service) in services {
        let stage = Shutdown::new();
        let server = service
            .build(stage.clone())
            .await
            .map_err(anyhow::Error::from_boxed)?;
        stages.push(spawn_stage_with(target, server, stage, shutdown));
    }
    Ok(Running {
        addresses,
        stages,
        shutdown: shutdown.clone(),
    })
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
    for spec in &SERVICES {
        if let Some(migrations) = spec.service.migrations {
            let pool = service_kit::db::connect(common, migrations.schema).await?;
            (migrations.apply)(pool)
                .await
                .map_err(anyhow::Error::from_boxed)
                .with_context(|| format!("migrating {}", migrations.schema))?;
        }
    }
    tracing::info!("migrations applied");
    Ok(())
}
