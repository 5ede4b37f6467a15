//! Settings of the alerting service (`BOURSE_ALERTING_*`): how notifications are retried, how
//! email leaves, and which services the health watch polls.

use std::time::Duration;

use std::sync::Arc;

use resilience::Backoff;
use secrecy::SecretString;
use secrets::MasterKeys;
use service_kit::{CommonConfig, Env};

#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    pub port: u16,
    /// Where tokens come from and what they must say.
    pub auth: access::AuthSettings,
    pub delivery: DeliverySettings,
    pub smtp: SmtpSettings,
    /// A repeat of a firing alert within this window is counted, not notified, when its rule
    /// sets no `suppress_seconds` of its own (ALR-04).
    pub default_suppress: Duration,
    /// How often unacknowledged alerts are checked for escalation.
    pub escalation_interval: Duration,
    pub watch: WatchSettings,
    /// Deliveries of a failing event before it is dead-lettered.
    pub consumer_max_deliveries: usize,
    /// How long a failed event waits before it is retried.
    pub consumer_retry_after: Duration,
    /// The master keys channel targets and secrets are sealed with (`BOURSE_MASTER_KEYS`).
    pub master_keys: Arc<MasterKeys>,
}

#[derive(Clone, Debug)]
pub struct DeliverySettings {
    /// Attempts per notification before it ends `failed`.
    pub max_attempts: u32,
    /// Waits between attempts: exponential with full jitter.
    pub backoff: Backoff,
    /// One attempt's limit (HTTP request or SMTP session).
    pub timeout: Duration,
    /// How often the notifier looks for due retries when nothing wakes it.
    pub poll: Duration,
}

#[derive(Clone, Debug)]
pub struct SmtpSettings {
    /// `smtp://host:port` (STARTTLS when offered; `?tls=required` to insist), `smtps://host`
    /// (TLS from the first byte). None: email channels cannot be created.
    pub url: Option<String>,
    pub from: String,
    pub username: Option<String>,
    pub password: Option<SecretString>,
}

/// The health watch (ALR-07): each service's `/health/ready`, polled.
#[derive(Clone, Debug)]
pub struct WatchSettings {
    /// (service name, base URL).
    pub targets: Vec<(String, String)>,
    pub interval: Duration,
    /// Consecutive failed probes before `ServiceUnhealthy` is raised.
    pub failures: u32,
}

impl Config {
    pub fn read(env: &mut Env) -> Self {
        let common = CommonConfig::read(env);
        let max_attempts = env.or("BOURSE_ALERTING_DELIVERY_MAX_ATTEMPTS", 8u32);
        if max_attempts == 0 {
            env.problem(
                "BOURSE_ALERTING_DELIVERY_MAX_ATTEMPTS",
                "must be greater than zero",
            );
        }
        let backoff = Backoff {
            base: env.millis(
                "BOURSE_ALERTING_DELIVERY_BACKOFF_BASE_MS",
                Duration::from_secs(1),
            ),
            cap: env.millis(
                "BOURSE_ALERTING_DELIVERY_BACKOFF_CAP_MS",
                Duration::from_secs(300),
            ),
        };
        let smtp_url: Option<String> = env
            .is_set("BOURSE_ALERTING_SMTP_URL")
            .then(|| env.or("BOURSE_ALERTING_SMTP_URL", String::new()));
        if let Some(url) = &smtp_url {
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                env.problem(
                    "BOURSE_ALERTING_SMTP_URL",
                    "must start with smtp:// or smtps://",
                );
            } else if common.is_production()
                && url.starts_with("smtp://")
                && !url.contains("tls=required")
            {
                // Alerts carry account ids and the relay's password travels with them.
                env.problem(
                    "BOURSE_ALERTING_SMTP_URL",
                    "production sends mail over TLS: use smtps:// or add ?tls=required",
                );
            }
        }
        let smtp = SmtpSettings {
            url: smtp_url,
            from: env.or(
                "BOURSE_ALERTING_SMTP_FROM",
                "Bourse alerts <alerts@bourse.invalid>".to_owned(),
            ),
            username: env
                .is_set("BOURSE_ALERTING_SMTP_USERNAME")
                .then(|| env.or("BOURSE_ALERTING_SMTP_USERNAME", String::new())),
            password: env
                .is_set("BOURSE_ALERTING_SMTP_PASSWORD")
                .then(|| env.secret("BOURSE_ALERTING_SMTP_PASSWORD", None)),
        };
        let targets = env
            .list("BOURSE_ALERTING_WATCH")
            .into_iter()
            .filter_map(|pair| match pair.split_once('=') {
                Some((name, url)) if !name.is_empty() && url.starts_with("http") => {
                    Some((name.to_owned(), url.trim_end_matches('/').to_owned()))
                }
                _ => {
                    env.problem(
                        "BOURSE_ALERTING_WATCH",
                        format!("{pair:?} is not name=http(s)://url"),
                    );
                    None
                }
            })
            .collect();
        let watch = WatchSettings {
            targets,
            interval: env.millis("BOURSE_ALERTING_WATCH_INTERVAL_MS", Duration::from_secs(5)),
            failures: env.or("BOURSE_ALERTING_WATCH_FAILURES", 2u32).max(1),
        };
        let master_keys = secrets::envelope::read_master_keys(env, common.is_production());
        Self {
            port: env.or(crate::SPEC.port_variable, crate::SPEC.default_port),
            auth: access::AuthSettings::read(env),
            delivery: DeliverySettings {
                max_attempts: max_attempts.max(1),
                backoff,
                timeout: env.millis(
                    "BOURSE_ALERTING_DELIVERY_TIMEOUT_MS",
                    Duration::from_secs(5),
                ),
                poll: env.millis(
                    "BOURSE_ALERTING_DELIVERY_POLL_MS",
                    Duration::from_millis(500),
                ),
            },
            smtp,
            default_suppress: Duration::from_secs(
                env.or("BOURSE_ALERTING_DEFAULT_SUPPRESS_SECS", 300u64),
            ),
            escalation_interval: env.millis(
                "BOURSE_ALERTING_ESCALATION_INTERVAL_MS",
                Duration::from_secs(5),
            ),
            watch,
            consumer_max_deliveries: env
                .or("BOURSE_ALERTING_CONSUMER_MAX_DELIVERIES", 5usize)
                .max(1),
            consumer_retry_after: env.millis(
                "BOURSE_ALERTING_CONSUMER_RETRY_AFTER_MS",
                Duration::from_secs(5),
            ),
            master_keys,
            common,
        }
    }
}
