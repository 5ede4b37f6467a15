//! The `bourse` command: parses the command line and composes the library crates.
// A command-line tool answers on stdout; libraries log through tracing instead.
#![allow(clippy::print_stdout)]

use std::io::BufRead;
use std::process::ExitCode;

use access::Role;
use bourse::Target;
use clap::{Parser, Subcommand};
use secrecy::SecretString;
use service_kit::config::ConfigProblem;
use service_kit::{CommonConfig, ConfigError, Env, Shutdown};

/// Every allocation of the platform's process goes through mimalloc rather than glibc's malloc:
/// the order path allocates per request (headers, JSON, SQL buffers) on every worker thread,
/// where glibc's arenas spent about a fifth of the process's CPU (ADR 0020, docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "bourse",
    version,
    about = "Bourse: a reference trading-platform backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one or more services in this process.
    Serve {
        #[arg(required = true, value_enum)]
        targets: Vec<Target>,
    },
    /// Create the database if needed and apply every service's migrations.
    Migrate,
    /// GET a URL and exit 0 on a 2xx answer: the container healthcheck (the image has no curl).
    /// With `BOURSE_TLS_*` set it presents the service certificate and trusts the service CA.
    /// A path alone (`/health/ready`) probes the service this container runs: the one whose
    /// port variable (`BOURSE_<NAME>_PORT`) is set, on loopback, over https under TLS.
    Probe {
        #[arg(default_value = "http://127.0.0.1:8080/health/live")]
        url: String,
    },
    /// Demo data.
    Demo {
        #[command(subcommand)]
        command: DemoCommand,
    },
    /// Operator tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum DemoCommand {
    /// Create the demo instruments and traders; running it again changes nothing.
    Seed,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a user; the password is read from standard input.
    CreateUser {
        #[arg(long)]
        email: String,
        /// May be repeated.
        #[arg(long = "role", default_value = "trader")]
        roles: Vec<Role>,
    },
    /// Retire the current token-signing key and create a new one.
    RotateSigningKey,
    /// Walk the audit log's hash chain; exits 1 if it is broken.
    VerifyAudit,
    /// Dead-lettered events.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Re-seal every encrypted field under the current master key (`BOURSE_MASTER_KEYS`), so
    /// an older key can be retired. Services also do it for their own fields at start.
    Reencrypt,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Dead letters of a stream (e.g. `orders`).
    List {
        #[arg(long)]
        stream: String,
    },
    /// Put a dead letter back on its stream.
    Replay {
        #[arg(long)]
        stream: String,
        /// The dead letter's id, as listed.
        #[arg(long)]
        id: String,
    },
}

/// Exit code for invalid configuration (OPS-01).
const CONFIG_INVALID: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(Failure::Config(err)) => {
            // Logging may not be set up yet; this is for the operator's terminal.
            eprintln!("{err}");
            ExitCode::from(CONFIG_INVALID)
        }
        Err(Failure::Runtime(err)) => {
            tracing::error!(error = format!("{err:#}"), "bourse failed");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Config(ConfigError),
    Runtime(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(err: E) -> Self {
        Failure::Runtime(err.into())
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Serve { targets } => {
            let (mut vars, live) = resolved_variables().await?;
            // In development, a private PostgreSQL and Redis when none is given or answers.
            let mut local = local_datastores(&mut vars).await?;
            let outcome = serve(&targets, vars, live).await;
            let problems = tokio::task::spawn_blocking(move || local.stop()).await?;
            for problem in problems {
                eprintln!("bourse: {problem}");
            }
            outcome?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let common = common_config().await?;
            bourse::migrate(&common).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin { command } => admin(command).await,
        Command::Demo {
            command: DemoCommand::Seed,
        } => {
            let mut env = environment().await?;
            let auth_config = auth::Config::read(&mut env);
            let orders_config = orders::Config::read(&mut env);
            let settlement_config = settlement::Config::read(&mut env);
            env.finish().map_err(Failure::Config)?;
            let _telemetry = service_kit::telemetry::init(
                auth_config.common.log_format,
                &auth_config.common.log_filter,
                None,
            );
            let summary =
                bourse::demo::seed(&auth_config, &orders_config, &settlement_config).await?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Probe { url } => {
            // Under mTLS the probe calls as the service it runs beside: its certificate, its CA.
            let mut env = Env::from_process();
            let tls = service_kit::tls::TlsSettings::read_files(&mut env);
            let url = match url.strip_prefix('/') {
                Some(path) => own_url(&mut env, tls.scheme(), path),
                None => url,
            };
            env.finish().map_err(Failure::Config)?;
            let client = tls
                .service_client()
                .map_err(|e| anyhow::anyhow!(e))?
                .build()?;
            let response = client
                .get(&url)
                .timeout(std::time::Duration::from_secs(2))
                .send()
                .await?;
            Ok(if response.status().is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The URL of `path` on the service this process runs beside: the one service whose port
/// variable is set. A deployment's probes then need no port of their own, so one probe
/// definition serves every service (deploy/k8s/components/mtls/probes.yaml).
fn own_url(env: &mut Env, scheme: &str, path: &str) -> String {
    let set: Vec<&str> = bourse::SERVICES
        .iter()
        .map(|spec| spec.service.port_variable)
        .filter(|variable| env.is_set(variable))
        .collect();
    let [variable] = set[..] else {
        env.problem(
            "BOURSE_<NAME>_PORT",
            format!(
                "a probe of a path alone needs exactly one service's port variable set ({} are); \
                 give the whole URL instead",
                set.len()
            ),
        );
        return String::new();
    };
    let port: u16 = env.or(variable, 0);
    format!("{scheme}://127.0.0.1:{port}/{path}")
}

/// `bourse serve`: the targets, until a signal or a failure.
async fn serve(
    targets: &[bourse::Target],
    vars: Vec<(String, String)>,
    live: secrets::settings::LiveSettings,
) -> Result<(), Failure> {
    let mut plan = bourse::plan(targets, Env::from_pairs(vars)).map_err(Failure::Config)?;
    let telemetry = service_kit::telemetry::init(
        plan.common.log_format,
        &plan.common.log_filter,
        plan.common.otlp.as_ref(),
    );
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let refresher = bourse::keep_secrets_fresh(&mut plan, &live, &shutdown).await;
    let result = match bourse::start(plan, &shutdown).await {
        Ok(running) => running.wait().await,
        Err(err) => Err(err),
    };
    shutdown.trigger();
    if let Err(err) = refresher.await {
        tracing::error!(error = %err, "the secret refresher failed");
    }
    // Flush traces on every way out, off the async runtime (the exporter blocks).
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(result?)
}

/// Starts the private datastores a development run needs (module docs of
/// `bourse::local_datastores`) and says so on the terminal.
async fn local_datastores(
    vars: &mut Vec<(String, String)>,
) -> Result<bourse::local_datastores::LocalDatastores, Failure> {
    use bourse::local_datastores::{LocalDatastores, Settings};
    let mut env = Env::from_pairs(vars.clone());
    let settings = Settings::read(&mut env);
    if env.finish().is_err() {
        // Nothing is started on settings that do not read; the plan reports every problem of
        // the configuration at once, these among them.
        return Ok(LocalDatastores::default());
    }
    let mut given = std::mem::take(vars);
    let (started, given) = tokio::task::spawn_blocking(move || {
        (
            LocalDatastores::start_if_needed(&settings, &mut given),
            given,
        )
    })
    .await?;
    *vars = given;
    let started = started?;
    for line in &started.announcements {
        eprintln!("bourse: {line}");
    }
    Ok(started)
}

async fn common_config() -> Result<CommonConfig, Failure> {
    let mut env = environment().await?;
    let common = CommonConfig::read(&mut env);
    env.finish().map_err(Failure::Config)?;
    // Short-lived commands log but do not export traces.
    let _telemetry = service_kit::telemetry::init(common.log_format, &common.log_filter, None);
    Ok(common)
}

async fn dead_letters(command: DlqCommand) -> Result<ExitCode, Failure> {
    let common = common_config().await?;
    let redis = service_kit::redis::connect(&common).await?;
    let keys = service_kit::redis::KeyPrefix::new(&common.redis_key_prefix);
    match command {
        DlqCommand::List { stream } => {
            for letter in events::dlq::list(&redis, &keys, &stream).await? {
                println!(
                    "{}  event {}  {}  group {}  reason: {}",
                    letter.id, letter.event_id, letter.event_type, letter.group, letter.reason
                );
            }
        }
        DlqCommand::Replay { stream, id } => {
            let retention = events::consumer::DEFAULT_INBOX_RETENTION;
            match events::dlq::replay(&redis, &keys, &stream, &id, retention).await? {
                events::dlq::Replay::Replayed => println!("replayed {id} onto {stream}"),
                events::dlq::Replay::NotFound => {
                    println!("no dead letter {id} on {stream}");
                    return Ok(ExitCode::FAILURE);
                }
                events::dlq::Replay::TooOld => {
                    println!(
                        "not replayed: the event of {id} is older than the consumers' inbox \
                         retention ({} days), so a group that applied it may apply it again; \
                         see docs/runbooks/dead-letters.md",
                        retention.as_secs() / 86_400
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `bourse admin reencrypt`: auth's signing keys, alerting's channel targets and secrets
/// (SEC-12).
async fn reencrypt() -> Result<ExitCode, Failure> {
    let mut env = environment().await?;
    let auth_config = auth::Config::read(&mut env);
    let config = alerting::Config::read(&mut env);
    env.finish().map_err(Failure::Config)?;
    let _telemetry =
        service_kit::telemetry::init(config.common.log_format, &config.common.log_filter, None);
    service_kit::db::ensure_database(&config.common).await?;
    let pool = service_kit::db::connect(&config.common, alerting::SCHEMA).await?;
    alerting::migrate(&pool).await?;
    let resealed = alerting::store::reseal_channels(&pool, &config.master_keys).await?;
    let auth_pool = auth::connect(&auth_config).await?;
    auth::migrate(&auth_pool).await?;
    let keys = auth::signing_keys::reseal(&auth_pool, &auth_config.master_keys).await?;
    let api_keys = auth::api_keys::reseal(&auth_pool, &auth_config.master_keys).await?;
    println!(
        "re-sealed under master key {}: {keys} signing key(s), {api_keys} API key(s), {resealed} alert channel(s)",
        config.master_keys.current()
    );
    Ok(ExitCode::SUCCESS)
}

/// The process environment, secret settings given as references resolved (SEC-11): every
/// reference that cannot be resolved is reported, by variable and reference, like any other
/// configuration problem.
async fn environment() -> Result<Env, Failure> {
    Ok(live_environment().await?.0)
}

/// [`environment`], and the references kept fresh for a long-running process. In
/// development, unset datastore URLs point where `bourse serve` runs its private ones.
async fn live_environment() -> Result<(Env, secrets::settings::LiveSettings), Failure> {
    let (mut vars, live) = resolved_variables().await?;
    let mut env = Env::from_pairs(vars.clone());
    let settings = bourse::local_datastores::Settings::read(&mut env);
    // Settings that do not read point nowhere; the command's own configuration reports
    // BOURSE_ENV, and `serve` reports these too.
    if env.finish().is_ok() {
        bourse::local_datastores::point_at_local(&settings, &mut vars);
    }
    Ok((Env::from_pairs(vars), live))
}

/// The process's variables, references resolved, and those references kept fresh.
async fn resolved_variables()
-> Result<(Vec<(String, String)>, secrets::settings::LiveSettings), Failure> {
    match secrets::settings::resolve(service_kit::config::process_variables()).await {
        Ok(resolved) => Ok((resolved.vars, resolved.live)),
        Err(problems) => Err(Failure::Config(ConfigError {
            problems: problems
                .into_iter()
                .map(|(variable, message)| ConfigProblem { variable, message })
                .collect(),
        })),
    }
}

async fn admin(command: AdminCommand) -> Result<ExitCode, Failure> {
    // Dead letters live in Redis; they need neither auth's configuration nor its database.
    let command = match command {
        AdminCommand::Dlq { command } => return dead_letters(command).await,
        AdminCommand::Reencrypt => return reencrypt().await,
        other => other,
    };
    let mut env = environment().await?;
    let config = auth::Config::read(&mut env);
    env.finish().map_err(Failure::Config)?;
    let _telemetry =
        service_kit::telemetry::init(config.common.log_format, &config.common.log_filter, None);
    let pool = auth::connect(&config).await?;
    auth::migrate(&pool).await?;
    match command {
        AdminCommand::CreateUser { email, roles } => {
            let password = read_password()?;
            let passwords = auth::password::Passwords::new(&config.argon2)?;
            let user = auth::identity::register(
                &pool,
                &passwords,
                &email,
                &password,
                &roles,
                auth::identity::OnDuplicate::Report,
                None,
            )
            .await?;
            let roles: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
            println!(
                "created user {} <{}> with roles {}",
                user.id,
                user.email,
                roles.join(",")
            );
        }
        AdminCommand::RotateSigningKey => {
            let kid = auth::signing_keys::rotate(&pool, &config.master_keys).await?;
            println!(
                "new signing key {kid}; the previous key stays published until its tokens expire"
            );
        }
        AdminCommand::Dlq { command } => return dead_letters(command).await,
        AdminCommand::Reencrypt => return reencrypt().await,
        AdminCommand::VerifyAudit => {
            let report = auth::audit::verify_chain(&pool).await?;
            match report.broken_at {
                None => println!("audit chain intact ({} rows)", report.rows),
                Some(seq) => {
                    println!("audit chain BROKEN at seq {seq} ({} rows)", report.rows);
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line from standard input, without its line ending. Never echoed or logged.
fn read_password() -> anyhow::Result<SecretString> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    Ok(SecretString::from(password))
}
