//! Configuration from the environment, validated all at once.
//!
//! A service reads its settings through [`Env`], which records every missing or malformed
//! variable instead of stopping at the first. [`Env::finish`] then fails with the complete list,
//! so an operator fixes a deployment in one pass instead of one restart per typo (OPS-01).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

/// Where the process runs. Production refuses the conveniences development allows
/// (default connection strings, generated signing keys, human-readable logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "development" => Ok(Self::Development),
            "production" => Ok(Self::Production),
            other => Err(format!("expected development or production, got {other:?}")),
        }
    }
}

/// Names the test suite's database URL. `.cargo/config.toml` sets `DATABASE_URL` for the tests
/// (`#[sqlx::test]` reads nothing else), and cargo hands that `[env]` to `cargo run` as well:
/// there it would point `bourse` at the suite's database, and a development run would never
/// pick its own (`bourse` database) or start a private one when nothing runs. So the file also
/// sets this variable to the same URL, and a `DATABASE_URL` equal to it counts as not given.
pub const SUITE_DATABASE_URL: &str = "BOURSE_SUITE_DATABASE_URL";

/// The process environment, after loading `.env` if one exists (development convenience;
/// real variables always win over the file), without the suite's `DATABASE_URL`
/// ([`SUITE_DATABASE_URL`]).
pub fn process_variables() -> Vec<(String, String)> {
    // A missing .env file is the normal case in production.
    let _ = dotenvy::dotenv();
    as_the_operator_set_them(std::env::vars().collect(), || {
        // The suite's URL kept dotenv() from setting the file's own; read it from the file.
        dotenvy::dotenv_iter()
            .ok()?
            .filter_map(Result::ok)
            .find(|(key, _)| key == "DATABASE_URL")
            .map(|(_, url)| url)
    })
}

/// `vars` without a `DATABASE_URL` that is the suite's ([`SUITE_DATABASE_URL`]); the one in
/// `.env` (`from_dotenv`), if any, takes its place, as it would have with no suite.
fn as_the_operator_set_them(
    mut vars: Vec<(String, String)>,
    from_dotenv: impl FnOnce() -> Option<String>,
) -> Vec<(String, String)> {
    let value = |vars: &[(String, String)], name: &str| {
        vars.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let suites = value(&vars, SUITE_DATABASE_URL);
    if suites.is_some() && value(&vars, "DATABASE_URL") == suites {
        vars.retain(|(key, _)| key != "DATABASE_URL");
        if let Some(url) = from_dotenv() {
            vars.push(("DATABASE_URL".to_owned(), url));
        }
    }
    vars
}

/// One problem with one variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    pub variable: String,
    pub message: String,
}

/// Every problem found while reading the configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problems):",
            self.problems.len()
        )?;
        for problem in &self.problems {
            writeln!(f, "  {}: {}", problem.variable, problem.message)?;
        }
        Ok(())
    }
}

/// A snapshot of the environment that records problems as settings are read.
#[derive(Debug)]
pub struct Env {
    vars: HashMap<String, String>,
    problems: Vec<ConfigProblem>,
    /// Every variable asked for, so the documentation can be checked against the code.
    read: BTreeSet<String>,
}

impl Env {
    /// The process environment, after loading `.env` if one exists (development convenience;
    /// real variables always win over the file).
    pub fn from_process() -> Self {
        Self::from_pairs(process_variables())
    }

    /// An explicit set of variables: what tests use instead of mutating the process environment.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            problems: Vec::new(),
            read: BTreeSet::new(),
        }
    }

    /// The variables read so far, sorted.
    pub fn variables_read(&self) -> impl Iterator<Item = &str> {
        self.read.iter().map(String::as_str)
    }

    fn raw(&mut self, key: &str) -> Option<&str> {
        self.read.insert(key.to_owned());
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Records a problem that is not about parsing one value (a rule across settings). Several
    /// services in one process read the shared variables each; a problem is reported once.
    pub fn problem(&mut self, variable: &str, message: impl Into<String>) {
        let problem = ConfigProblem {
            variable: variable.to_owned(),
            message: message.into(),
        };
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    /// Whether the variable is set to a non-empty value.
    pub fn is_set(&mut self, key: &str) -> bool {
        self.raw(key).is_some()
    }

    /// A value that has a sensible default.
    pub fn or<T>(&mut self, key: &str, default: T) -> T
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(key).map(str::parse::<T>) {
            None => default,
            Some(Ok(value)) => value,
            Some(Err(err)) => {
                self.problem(key, err.to_string());
                default
            }
        }
    }

    /// A value that must be present. Returns `None` (and records the problem) otherwise.
    pub fn required<T>(&mut self, key: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(key).map(str::parse::<T>) {
            None => {
                self.problem(key, "is required");
                None
            }
            Some(Ok(value)) => Some(value),
            Some(Err(err)) => {
                self.problem(key, err.to_string());
                None
            }
        }
    }

    /// A duration in milliseconds, which must be positive.
    pub fn millis(&mut self, key: &str, default: Duration) -> Duration {
        let millis: u64 = self.or(key, u64::try_from(default.as_millis()).unwrap_or(u64::MAX));
        if millis == 0 {
            self.problem(key, "must be greater than zero");
            return default;
        }
        Duration::from_millis(millis)
    }

    /// A comma-separated list; empty entries are dropped.
    pub fn list(&mut self, key: &str) -> Vec<String> {
        self.raw(key)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A secret value. It never appears in `Debug` output or logs.
    pub fn secret(&mut self, key: &str, default: Option<&str>) -> SecretString {
        match (self.raw(key), default) {
            (Some(value), _) => SecretString::from(value.to_owned()),
            (None, Some(default)) => SecretString::from(default.to_owned()),
            (None, None) => {
                self.problem(key, "is required");
                SecretString::from(String::new())
            }
        }
    }

    /// Ends reading: `Ok` only when no problem was recorded.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!("expected json or pretty, got {other:?}")),
        }
    }
}

/// Settings every service shares.
#[derive(Clone, Debug)]
pub struct CommonConfig {
    pub environment: Environment,
    pub database_url: SecretString,
    /// `DATABASE_URL` as it changes, when it was a secret reference: pools follow a rotated
    /// credential without a restart (SEC-11). Set by the binary, never read from a variable.
    pub database_url_changes: Option<tokio::sync::watch::Receiver<SecretString>>,
    pub database_max_connections: u32,
    pub database_acquire_timeout: Duration,
    pub redis_url: SecretString,
    /// Prefix for every Redis key this deployment writes; tests use a unique one each.
    pub redis_key_prefix: String,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub http: HttpSettings,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Whether a service applies its migrations as it starts (`BOURSE_MIGRATE_ON_START`; not
    /// in production, where `bourse migrate` runs before a rollout).
    pub migrate_on_start: bool,
    /// Bind address for listeners (ports are per service).
    pub bind_host: String,
    /// Trace export, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    pub otlp: Option<crate::telemetry::OtlpSettings>,
    /// Certificates, mTLS and whether plaintext is refused (SEC-13).
    pub tls: crate::tls::TlsSettings,
    /// A listener bound before the service was built, which it serves on instead of binding
    /// `bind_host:port` itself. Set by the binary, never read from a variable: `serve all`
    /// binds every service's socket first, so each knows the others' addresses before any is
    /// built, with no window in which another process could take a port.
    pub listener: Option<crate::shutdown::PreBound>,
    /// `BOURSE_SERVICE_URL_PATTERN` ([`SERVICE_URL_PATTERN`]): where the other services are, by name and default port
    /// (`http://{name}:{port}`); the composing binary applies it.
    pub service_url_pattern: Option<String>,
    /// `BOURSE_RELAY_LINGER_MS`: after a batch that was not full, how long the outbox relay lets
    /// rows gather before it reads again (`events::RelaySettings::linger`; zero turns it off).
    pub relay_linger: Duration,
}

/// Limits applied to every inbound request.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            body_limit_bytes: 64 * 1024,
        }
    }
}

/// The variable that places every other service by name and default port.
pub const SERVICE_URL_PATTERN: &str = "BOURSE_SERVICE_URL_PATTERN";

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/bourse";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

impl CommonConfig {
    pub fn read(env: &mut Env) -> Self {
        let environment = env.or("BOURSE_ENV", Environment::Development);
        let production = environment == Environment::Production;
        if production {
            // In production a default pointing at localhost is a misconfiguration, not a convenience.
            for key in ["DATABASE_URL", "REDIS_URL"] {
                if !env.is_set(key) {
                    env.problem(key, "is required when BOURSE_ENV=production");
                }
            }
        }
        let log_format = env.or(
            "BOURSE_LOG_FORMAT",
            LogFormat::Json, // machine-readable by default, also in development
        );
        let body_limit_bytes = env.or("BOURSE_HTTP_BODY_LIMIT_BYTES", 64 * 1024usize);
        if body_limit_bytes == 0 {
            env.problem("BOURSE_HTTP_BODY_LIMIT_BYTES", "must be greater than zero");
        }
        let database_max_connections = env.or("BOURSE_DATABASE_MAX_CONNECTIONS", 10u32);
        if database_max_connections == 0 {
            env.problem(
                "BOURSE_DATABASE_MAX_CONNECTIONS",
                "must be greater than zero",
            );
        }
        let database_url = env.secret("DATABASE_URL", Some(DEFAULT_DATABASE_URL));
        let redis_url = env.secret("REDIS_URL", Some(DEFAULT_REDIS_URL));
        let tls = crate::tls::TlsSettings::read(env, &database_url, &redis_url);
        Self {
            environment,
            database_url,
            database_url_changes: None,
            database_max_connections,
            database_acquire_timeout: env
                .millis("BOURSE_DATABASE_ACQUIRE_TIMEOUT_MS", Duration::from_secs(3)),
            redis_url,
            redis_key_prefix: env.or("BOURSE_REDIS_KEY_PREFIX", "bourse".to_owned()),
            log_format,
            log_filter: env.or("BOURSE_LOG", "info".to_owned()),
            http: HttpSettings {
                request_timeout: env
                    .millis("BOURSE_HTTP_REQUEST_TIMEOUT_MS", Duration::from_secs(10)),
                body_limit_bytes,
            },
            shutdown_grace: env.millis("BOURSE_SHUTDOWN_GRACE_MS", Duration::from_secs(20)),
            migrate_on_start: env.or("BOURSE_MIGRATE_ON_START", !production),
            bind_host: env.or("BOURSE_BIND_HOST", "0.0.0.0".to_owned()),
            otlp: {
                let endpoint: String = env.or("OTEL_EXPORTER_OTLP_ENDPOINT", String::new());
                let service_name = env.or("OTEL_SERVICE_NAME", "bourse".to_owned());
                if !endpoint.is_empty() && !endpoint.starts_with("http") {
                    env.problem("OTEL_EXPORTER_OTLP_ENDPOINT", "must be an http(s) URL");
                } else if !endpoint.is_empty() && !tls.allows_url(&endpoint) {
                    env.problem(
                        "OTEL_EXPORTER_OTLP_ENDPOINT",
                        "must be https when BOURSE_TLS_REQUIRED=true",
                    );
                }
                (!endpoint.is_empty()).then_some(crate::telemetry::OtlpSettings {
                    endpoint,
                    service_name,
                })
            },
            service_url_pattern: env.is_set(SERVICE_URL_PATTERN).then(|| {
                let pattern: String = env.or(SERVICE_URL_PATTERN, String::new());
                if !(pattern.starts_with("http://") || pattern.starts_with("https://"))
                    || !pattern.contains("{name}")
                {
                    env.problem(
                        SERVICE_URL_PATTERN,
                        "must be an http(s) URL naming {name} (and usually {port})",
                    );
                }
                pattern.trim_end_matches('/').to_owned()
            }),
            // Zero is allowed here (unlike the other waits): it turns lingering off.
            relay_linger: Duration::from_millis(env.or("BOURSE_RELAY_LINGER_MS", 5u64)),
            tls,
            listener: None,
        }
    }

    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn the_suites_database_url_is_not_taken_for_the_operators() {
        let suite = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=prefer";
        let pairs = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let database_url = |vars: Vec<(String, String)>| {
            vars.into_iter()
                .find(|(key, _)| key == "DATABASE_URL")
                .map(|(_, url)| url)
        };
        let no_dotenv = || None;

        // `cargo run`: both from `.cargo/config.toml`, so none was given.
        let under_cargo = pairs(&[("DATABASE_URL", suite), (SUITE_DATABASE_URL, suite)]);
        assert_eq!(
            database_url(as_the_operator_set_them(under_cargo.clone(), no_dotenv)),
            None
        );
        // ... and `.env`'s own, which the suite's hid from dotenv(), is used.
        assert_eq!(
            database_url(as_the_operator_set_them(under_cargo, || Some(
                "postgres://db.internal/bourse".to_owned()
            ))),
            Some("postgres://db.internal/bourse".to_owned())
        );
        // An operator's own URL wins over cargo's `[env]` and is kept.
        let own = pairs(&[
            ("DATABASE_URL", "postgres://db.internal/bourse"),
            (SUITE_DATABASE_URL, suite),
        ]);
        assert_eq!(
            database_url(as_the_operator_set_them(own, no_dotenv)),
            Some("postgres://db.internal/bourse".to_owned())
        );
        // Outside cargo there is no suite: the URL is whatever was given.
        let deployed = pairs(&[("DATABASE_URL", suite)]);
        assert_eq!(
            database_url(as_the_operator_set_them(deployed, no_dotenv)),
            Some(suite.to_owned())
        );
    }

    #[test]
    fn the_relays_linger_is_read_in_milliseconds_and_zero_turns_it_off() {
        let linger = |value: Option<&str>| {
            let mut env = Env::from_pairs(value.map(|v| ("BOURSE_RELAY_LINGER_MS", v)));
            let common = CommonConfig::read(&mut env);
            env.finish().map(|()| common.relay_linger)
        };
        assert_eq!(linger(None).unwrap(), Duration::from_millis(5));
        assert_eq!(linger(Some("20")).unwrap(), Duration::from_millis(20));
        assert_eq!(linger(Some("0")).unwrap(), Duration::ZERO);
        assert!(linger(Some("-1")).is_err());
    }

    #[test]
    fn every_invalid_variable_is_reported_at_once() {
        let mut env = Env::from_pairs([
            ("BOURSE_ENV", "staging"),
            ("BOURSE_HTTP_REQUEST_TIMEOUT_MS", "soon"),
            ("BOURSE_DATABASE_MAX_CONNECTIONS", "0"),
            ("BOURSE_LOG_FORMAT", "xml"),
        ]);
        let _ = CommonConfig::read(&mut env);
        let err = env.finish().expect_err("four problems");
        let variables: Vec<_> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            variables,
            [
                "BOURSE_ENV",
                "BOURSE_LOG_FORMAT",
                "BOURSE_DATABASE_MAX_CONNECTIONS",
                "BOURSE_HTTP_REQUEST_TIMEOUT_MS"
            ]
        );
        let text = err.to_string();
        assert!(text.contains("4 problems"), "{text}");
    }

    #[test]
    fn production_refuses_default_connection_strings() {
        let mut env = Env::from_pairs([("BOURSE_ENV", "production")]);
        let _ = CommonConfig::read(&mut env);
        let err = env.finish().expect_err("production without urls");
        let variables: Vec<_> = err.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(variables, ["DATABASE_URL", "REDIS_URL"]);
    }

    #[test]
    fn development_defaults_to_local_servers() {
        let mut env = Env::from_pairs(Vec::<(String, String)>::new());
        let config = CommonConfig::read(&mut env);
        env.finish().expect("defaults are valid");
        assert_eq!(config.database_url.expose_secret(), DEFAULT_DATABASE_URL);
        assert_eq!(config.environment, Environment::Development);
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let mut env = Env::from_pairs([("DATABASE_URL", "postgres://u:hunter2@db/x")]);
        let config = CommonConfig::read(&mut env);
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
