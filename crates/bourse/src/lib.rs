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
        target: Target::Settlement,
        service: settlement::SPEC,
    },
    ServiceSpec {
        target: Target::Risk,
        service: risk::SPEC,
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
    /// Where each service is: given URLs, the pattern, or this process.
    layout: Layout,
}

/// Where the services a process calls (or watches) are.
struct Layout {
    /// The upstreams whose URL was given (`BOURSE_<NAME>_URL`), and that URL.
    given: BTreeMap<Target, String>,
    /// `BOURSE_SERVICE_URL_PATTERN`: where every other service is, by its name and default
    /// port — `http://{name}:{port}` on a network where services are reached by name
    /// (compose, Kubernetes). Unset: each service's own default (loopback).
    pattern: Option<String>,
}

impl Layout {
    fn read(common: &CommonConfig, env: &mut Env) -> Self {
        let mut given = BTreeMap::new();
        for (target, variable) in upstream_urls() {
            if env.is_set(variable) {
                let url: String = env.or(variable, String::new());
                given.insert(target, url.trim_end_matches('/').to_owned());
            }
        }
        Self {
            given,
            pattern: common.service_url_pattern.clone(),
        }
    }

    /// Where `service` is when it does not run in this process: its given URL, else where the
    /// pattern puts it.
    fn elsewhere(&self, service: Target) -> Option<String> {
        if let Some(url) = self.given.get(&service) {
            return Some(url.clone());
        }
        let (pattern, spec) = (self.pattern.as_ref()?, service.spec()?);
        Some(
            pattern
                .replace("{name}", spec.name)
                .replace("{port}", &spec.default_port.to_string()),
        )
    }
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
    let layout = Layout::read(&common, &mut env);
    let services = SERVICES
        .iter()
        .filter(|spec| targets.contains(&spec.target))
        .map(|spec| (spec.target, (spec.service.read)(&mut env)))
        .collect();
    if common.tls.required {
        refuse_plaintext_upstreams(&targets, &layout, &mut env);
    }
    env.finish()?;
    Ok(Plan {
        common,
        services,
        layout,
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
/// reached over `https://` — given so, or placed so by the pattern: the defaults are plaintext
/// loopback addresses (SEC-13).
fn refuse_plaintext_upstreams(services: &[Target], layout: &Layout, env: &mut Env) {
    let needed: BTreeSet<Target> = services
        .iter()
        .flat_map(|service| upstreams_of(*service))
        .filter(|upstream| !services.contains(upstream))
        .collect();
    if let Some(pattern) = &layout.pattern
        && !needed.is_empty()
        && !pattern.starts_with("https://")
    {
        env.problem(
            service_kit::config::SERVICE_URL_PATTERN,
            "must be an https:// URL when BOURSE_TLS_REQUIRED=true",
        );
    }
    for (upstream, variable) in upstream_urls() {
        let given = layout.given.get(&upstream);
        if given.is_none() && (!needed.contains(&upstream) || layout.pattern.is_some()) {
            continue;
        }
        if !given.is_some_and(|url| service_kit::http::base_urls::all_https(url)) {
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
        layout,
    } = plan;
    if services
        .iter_mut()
        .any(|(_, service)| service.common().migrate_on_start)
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
    wire(&mut services, &addresses, &layout, scheme);
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

/// Points every service's upstream URLs at where each upstream is — a given URL wins (the
/// service read it itself), then this process, then the pattern, else the service's own
/// default stays — and tells each who its neighbours are.
fn wire(
    services: &mut [(Target, Box<dyn launch::Service>)],
    addresses: &BTreeMap<Target, SocketAddr>,
    layout: &Layout,
    scheme: &str,
) {
    let neighbours = neighbours(addresses, layout, scheme);
    for (_, service) in services.iter_mut() {
        for (upstream, url) in service.upstream_urls() {
            let Some(upstream) = Target::named(upstream) else {
                continue;
            };
            if layout.given.contains_key(&upstream) {
                continue;
            }
            let wired = addresses
                .get(&upstream)
                .map(|address| format!("{scheme}://{address}"))
                .or_else(|| layout.elsewhere(upstream));
            if let Some(wired) = wired {
                *url = wired;
            }
        }
        service.neighbours(&neighbours);
    }
}

/// The health watch's default: the services of this process, and — when the pattern says
/// where the rest are — every other service too.
fn neighbours(
    addresses: &BTreeMap<Target, SocketAddr>,
    layout: &Layout,
    scheme: &str,
) -> Vec<(&'static str, String)> {
    SERVICES
        .iter()
        .filter_map(|spec| {
            let url = match addresses.get(&spec.target) {
                Some(address) => format!("{scheme}://{address}"),
                None => {
                    layout.pattern.as_ref()?;
                    layout.elsewhere(spec.target)?
                }
            };
            Some((spec.service.name, url))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn the_pattern_places_every_upstream_not_given_and_not_in_this_process() {
        let mut plan = plan(
            &[Target::Gateway],
            env(&[
                (
                    "BOURSE_SERVICE_URL_PATTERN",
                    "https://{name}.internal:{port}/",
                ),
                ("BOURSE_ORDERS_URL", "https://orders-canary:9000"),
            ]),
        )
        .unwrap();
        wire(&mut plan.services, &BTreeMap::new(), &plan.layout, "https");
        let (_, gateway) = &mut plan.services[0];
        let urls: BTreeMap<&str, String> = gateway
            .upstream_urls()
            .into_iter()
            .map(|(name, url)| (name, url.clone()))
            .collect();
        assert_eq!(urls["auth"], "https://auth.internal:8081");
        assert_eq!(urls["orders"], "https://orders-canary:9000", "given wins");
        assert_eq!(urls["settlement"], "https://settlement.internal:8084");
        assert_eq!(
            urls.len(),
            SERVICES.len() - 1,
            "every upstream of the route table"
        );
    }

    #[test]
    fn without_a_pattern_the_watch_sees_this_process_and_with_one_every_service() {
        let here = BTreeMap::from([(Target::Auth, "127.0.0.1:4000".parse().unwrap())]);
        let alone = plan(&[Target::Alerting], env(&[])).unwrap();
        assert_eq!(
            neighbours(&here, &alone.layout, "http"),
            [("auth", "http://127.0.0.1:4000".to_owned())]
        );
        let placed = plan(
            &[Target::Alerting],
            env(&[("BOURSE_SERVICE_URL_PATTERN", "http://{name}:{port}")]),
        )
        .unwrap();
        let watched = neighbours(&here, &placed.layout, "http");
        assert_eq!(watched.len(), SERVICES.len());
        assert!(watched.contains(&("auth", "http://127.0.0.1:4000".to_owned())));
        assert!(watched.contains(&("gateway", "http://gateway:8080".to_owned())));
    }

    #[test]
    fn a_pattern_must_name_the_service_and_be_https_when_tls_is_required() {
        let problems = |pairs: &[(&str, &str)]| match plan(&[Target::Orders], env(pairs)) {
            Ok(_) => String::new(),
            Err(err) => err.to_string(),
        };
        assert!(
            problems(&[("BOURSE_SERVICE_URL_PATTERN", "http://gateway:8080")])
                .contains("BOURSE_SERVICE_URL_PATTERN")
        );
        assert!(
            problems(&[
                ("BOURSE_TLS_REQUIRED", "true"),
                ("BOURSE_SERVICE_URL_PATTERN", "http://{name}:{port}"),
            ])
            .contains("BOURSE_SERVICE_URL_PATTERN")
        );
    }
}
