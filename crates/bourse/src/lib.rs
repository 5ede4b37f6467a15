//! Composition of the Bourse services into one process.
//!
//! `bourse serve all` and `bourse serve auth` run the same code: each target is built from its
//! own configuration and served on its own listener, and targets talk to each other over HTTP
//! even when they share a process. Tests use [`plan`] and [`start`] directly.

pub mod demo;

use std::collections::BTreeMap;
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
}

impl Target {
    /// The concrete services a list of targets stands for, in start order (upstreams first).
    pub fn expand(targets: &[Target]) -> Vec<Target> {
        let mut services: Vec<Target> = if targets.contains(&Target::All) {
            vec![
                Target::Auth,
                Target::Risk,
                Target::Settlement,
                Target::Orders,
                Target::Gateway,
            ]
        } else {
            targets.to_vec()
        };
        services.sort();
        services.dedup();
        // Upstreams first, so the services calling them can be pointed at them.
        services.sort_by_key(|t| match t {
            Target::Auth => 0,
            Target::Risk => 1,
            Target::Settlement => 2,
            Target::Orders => 3,
            Target::Gateway => 4,
            Target::All => 5,
        });
        services
    }
}

/// Validated configuration of every requested service.
pub struct Plan {
    pub common: CommonConfig,
    pub auth: Option<auth::Config>,
    pub orders: Option<orders::Config>,
    pub settlement: Option<settlement::Config>,
    pub risk: Option<risk::Config>,
    pub gateway: Option<gateway::Config>,
    /// Whether upstream URLs were given; those not given are wired to the services started
    /// in this process.
    auth_url_given: bool,
    orders_url_given: bool,
    settlement_url_given: bool,
    risk_url_given: bool,
}

/// Reads the configuration of `targets`; every problem is reported at once (OPS-01).
pub fn plan(targets: &[Target], mut env: Env) -> Result<Plan, ConfigError> {
    let services = Target::expand(targets);
    let common = CommonConfig::read(&mut env);
    let auth_url_given = env.is_set("BOURSE_AUTH_URL");
    let orders_url_given = env.is_set("BOURSE_ORDERS_URL");
    let settlement_url_given = env.is_set("BOURSE_SETTLEMENT_URL");
    let risk_url_given = env.is_set("BOURSE_RISK_URL");
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
    let gateway = services
        .contains(&Target::Gateway)
        .then(|| gateway::Config::read(&mut env));
    env.finish()?;
    Ok(Plan {
        common,
        auth,
        orders,
        gateway,
        auth_url_given,
        orders_url_given,
        settlement_url_given,
        settlement,
        risk_url_given,
        risk,
    })
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
pub async fn start(plan: Plan, shutdown: &Shutdown) -> anyhow::Result<Running> {
    let mut addresses = BTreeMap::new();
    let mut stages = Vec::new();
    let migrate_on_start = plan.auth.as_ref().is_some_and(|c| c.migrate_on_start)
        || plan.orders.as_ref().is_some_and(|c| c.migrate_on_start)
        || plan.settlement.as_ref().is_some_and(|c| c.migrate_on_start)
        || plan.risk.as_ref().is_some_and(|c| c.migrate_on_start);
    if migrate_on_start {
        service_kit::db::ensure_database(&plan.common).await?;
    }
    if let Some(config) = plan.auth {
        let stage_shutdown = Shutdown::new();
        let server = auth::build(config, &stage_shutdown).await?;
        addresses.insert(Target::Auth, server.local_addr()?);
        stages.push(spawn_stage_with(
            Target::Auth,
            server,
            stage_shutdown,
            shutdown,
        ));
    }
    let local_url = |target: Target, addresses: &BTreeMap<Target, SocketAddr>| {
        addresses
            .get(&target)
            .map(|address| format!("http://{}", reachable(*address)))
    };
    if let Some(mut config) = plan.risk {
        if !plan.auth_url_given
            && let Some(url) = local_url(Target::Auth, &addresses)
        {
            config.auth_url = url;
        }
        let stage_shutdown = Shutdown::new();
        let server = risk::build(config, &stage_shutdown).await?;
        addresses.insert(Target::Risk, server.local_addr()?);
        stages.push(spawn_stage_with(
            Target::Risk,
            server,
            stage_shutdown,
            shutdown,
        ));
    }
    if let Some(mut config) = plan.settlement {
        if !plan.auth_url_given
            && let Some(url) = local_url(Target::Auth, &addresses)
        {
            config.auth_url = url;
        }
        let stage_shutdown = Shutdown::new();
        let server = settlement::build(config, &stage_shutdown).await?;
        addresses.insert(Target::Settlement, server.local_addr()?);
        stages.push(spawn_stage_with(
            Target::Settlement,
            server,
            stage_shutdown,
            shutdown,
        ));
    }
    if let Some(mut config) = plan.orders {
        if !plan.auth_url_given
            && let Some(url) = local_url(Target::Auth, &addresses)
        {
            config.auth_url = url;
        }
        if !plan.settlement_url_given
            && let Some(url) = local_url(Target::Settlement, &addresses)
        {
            config.settlement_url = url;
        }
        if !plan.risk_url_given
            && let Some(url) = local_url(Target::Risk, &addresses)
        {
            config.risk_url = url;
        }
        let stage_shutdown = Shutdown::new();
        let server = orders::build(config, &stage_shutdown).await?;
        addresses.insert(Target::Orders, server.local_addr()?);
        stages.push(spawn_stage_with(
            Target::Orders,
            server,
            stage_shutdown,
            shutdown,
        ));
    }
    if let Some(mut config) = plan.gateway {
        if !plan.auth_url_given
            && let Some(url) = local_url(Target::Auth, &addresses)
        {
            config.auth_url = url;
        }
        if !plan.orders_url_given
            && let Some(url) = local_url(Target::Orders, &addresses)
        {
            config.orders_url = url;
        }
        if !plan.settlement_url_given
            && let Some(url) = local_url(Target::Settlement, &addresses)
        {
            config.settlement_url = url;
        }
        if !plan.risk_url_given
            && let Some(url) = local_url(Target::Risk, &addresses)
        {
            config.risk_url = url;
        }
        let stage_shutdown = Shutdown::new();
        let server = gateway::build(config, &stage_shutdown).await?;
        addresses.insert(Target::Gateway, server.local_addr()?);
        stages.push(spawn_stage_with(
            Target::Gateway,
            server,
            stage_shutdown,
            shutdown,
        ));
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
    let pool = service_kit::db::connect(common, auth::SCHEMA).await?;
    auth::migrate(&pool).await?;
    let pool = service_kit::db::connect(common, orders::SCHEMA).await?;
    orders::migrate(&pool).await?;
    let pool = service_kit::db::connect(common, settlement::SCHEMA).await?;
    settlement::migrate(&pool).await?;
    let pool = service_kit::db::connect(common, risk::SCHEMA).await?;
    risk::migrate(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}
