//! Settings of the gateway (`BOURSE_GATEWAY_*`).

use std::time::Duration;

use contracts::Asset;
use resilience::Policy;
use service_kit::http::TrustedProxies;
use service_kit::{CommonConfig, Env};

use crate::route_table::{UPSTREAMS, Upstream};
use crate::stream::StreamSettings;

#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    pub port: u16,
    /// Where tokens come from and what they must say.
    pub auth: access::AuthSettings,
    /// Base URL of each upstream but auth (whose URL is `auth.url`), from
    /// `BOURSE_<NAME>_URL`, in the route table's order.
    pub upstream_urls: Vec<(Upstream, String)>,
    /// Timeout, retries, breaker and bulkhead of each upstream (`BOURSE_GATEWAY_UPSTREAM_*`).
    pub upstream: Policy,
    /// Orders' own timeout (`BOURSE_GATEWAY_ORDERS_TIMEOUT_MS`), shorter than the shared one.
    pub orders_timeout: Duration,
    /// The bound on a risk check (`BOURSE_RISK_CHECK_VALID_FOR_MS`), read as orders and risk
    /// read it, only to tell whether `orders_timeout` leaves a placement that bound.
    pub check_valid_for: Duration,
    pub cors_origins: Vec<String>,
    /// Who may set `X-Forwarded-For` (a load balancer in front of the gateway).
    pub trusted_proxies: TrustedProxies,
    /// Source networks allowed to call `/v1/admin/*` (SEC-15).
    pub admin_allowlist: TrustedProxies,
    /// Send `Strict-Transport-Security` (when TLS terminates at or before the gateway).
    pub hsts: bool,
    /// The public listener's certificate (`BOURSE_GATEWAY_TLS_CERT`/`_KEY`), usually from a
    /// public CA; the service certificate (`BOURSE_TLS_CERT`) when unset (SEC-13).
    pub public_tls: Option<service_kit::tls::Identity>,
    pub rate_limits: RateLimits,
    /// Floor between two JWKS fetches triggered by unknown `kid`s.
    pub jwks_min_refresh: Duration,
    /// The WebSocket stream (`BOURSE_GATEWAY_STREAM_*`).
    pub stream: StreamSettings,
    /// Scales of the assets, to show the stream's amounts as decimals (`BOURSE_ASSETS`).
    pub assets: Vec<Asset>,
    /// How many forwarded requests at once, and how long the excess may wait (REL-06).
    pub admission: crate::admission::AdmissionSettings,
    /// Signed requests with API keys (`BOURSE_GATEWAY_API_KEY_*`, SEC-19).
    pub api_keys: crate::api_keys::ApiKeySettings,
    /// The gateway's client secret for service tokens (`BOURSE_SERVICE_SECRET_GATEWAY`): it
    /// reads API key credentials from auth.
    pub service_secret: secrecy::SecretString,
}

/// Documented defaults (SEC-07): 500 req/s per IP with bursts of 1,000; per principal 100 req/s
/// with bursts of 200 for traders and auditors, twice that for risk officers and admins; per API
/// key 50 req/s with bursts of 100 (a program's budget, apart from its owner's session).
#[derive(Clone, Debug)]
pub struct RateLimits {
    pub ip_per_second: u32,
    pub ip_burst: u32,
    pub standard: Tier,
    pub privileged: Tier,
    /// Requests signed with an API key: a budget per key, whoever owns it.
    pub api_key: Tier,
    /// The most tokens of one principal's budget a replica takes from Redis at once and
    /// spends in memory (ADR 0033); a quarter of the tier's burst at most. 1 asks Redis on
    /// every request.
    pub lease_max: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tier {
    pub name: &'static str,
    pub per_second: u32,
    pub burst: u32,
}

impl Config {
    /// The bound on a risk check (`BOURSE_RISK_CHECK_VALID_FOR_MS`'s default) and half a
    /// second for the batch that books it.
    const DEFAULT_ORDERS_TIMEOUT: Duration = Duration::from_millis(2_500);

    /// The base URL of `upstream` (its default for one the table gained after this was read).
    pub fn url_of(&self, upstream: Upstream) -> &str {
        if upstream == Upstream::AUTH {
            return &self.auth.url;
        }
        self.upstream_urls
            .iter()
            .find(|(known, _)| *known == upstream)
            .map_or(upstream.default_url, |(_, url)| url.as_str())
    }

    /// Whether orders' timeout cuts placements short: orders may book a placement as late as
    /// the bound on its risk check, so a timeout at or under that bound answers 504 to
    /// placements that are then booked. Nothing is lost (the Idempotency-Key tells the client
    /// the outcome), but every slow placement costs a retry, so the gateway warns at start.
    pub fn orders_timeout_cuts_placements_short(&self) -> bool {
        self.orders_timeout <= self.check_valid_for
    }

    /// The call policy for `upstream`: the shared one, with orders' own timeout.
    pub fn policy_of(&self, upstream: Upstream) -> Policy {
        let mut policy = self.upstream.clone();
        if upstream == Upstream::ORDERS {
            policy.timeout = self.orders_timeout;
        }
        policy
    }

    pub fn read(env: &mut Env) -> Self {
        let common = CommonConfig::read(env);
        let upstream = Policy::read(
            env,
            "BOURSE_GATEWAY_UPSTREAM",
            Policy {
                timeout: Duration::from_secs(5),
                ..Policy::default()
            },
        );
        // Orders books a placement within the bound on its risk check (2 s) or refuses it, so
        // waiting longer only holds permits on a replica that stopped answering; the other
        // upstreams keep the shared timeout. A placement cut short is answered 504, and its
        // Idempotency-Key tells the client what became of it (ADR 0034).
        let orders_timeout = env.millis(
            "BOURSE_GATEWAY_ORDERS_TIMEOUT_MS",
            Self::DEFAULT_ORDERS_TIMEOUT,
        );
        let check_valid_for = launch::platform::check_valid_for(env);
        let cors_origins = env.list("BOURSE_GATEWAY_CORS_ORIGINS");
        for origin in &cors_origins {
            if origin == "*" {
                env.problem(
                    "BOURSE_GATEWAY_CORS_ORIGINS",
                    "`*` is not allowed; list the origins",
                );
            } else if !(origin.starts_with("https://") || origin.starts_with("http://")) {
                env.problem(
                    "BOURSE_GATEWAY_CORS_ORIGINS",
                    format!("{origin:?} is not an origin"),
                );
            }
        }
        let positive = |env: &mut Env, key: &str, default: u32| {
            let value = env.or(key, default);
            if value == 0 {
                env.problem(key, "must be greater than zero");
                return default;
            }
            value
        };
        let rate_limits = RateLimits {
            ip_per_second: positive(env, "BOURSE_GATEWAY_IP_RATE_PER_SEC", 500),
            ip_burst: positive(env, "BOURSE_GATEWAY_IP_BURST", 1000),
            standard: Tier {
                name: "standard",
                per_second: positive(env, "BOURSE_GATEWAY_PRINCIPAL_RATE_PER_SEC", 100),
                burst: positive(env, "BOURSE_GATEWAY_PRINCIPAL_BURST", 200),
            },
            privileged: Tier {
                name: "privileged",
                per_second: positive(env, "BOURSE_GATEWAY_PRIVILEGED_RATE_PER_SEC", 200),
                burst: positive(env, "BOURSE_GATEWAY_PRIVILEGED_BURST", 400),
            },
            api_key: Tier {
                name: "api-key",
                per_second: positive(env, "BOURSE_GATEWAY_API_KEY_RATE_PER_SEC", 50),
                burst: positive(env, "BOURSE_GATEWAY_API_KEY_BURST", 100),
            },
            lease_max: positive(env, "BOURSE_GATEWAY_RATE_LEASE_MAX", 32),
        };
        let api_keys = crate::api_keys::ApiKeySettings {
            recv_window: env.millis(
                "BOURSE_GATEWAY_API_KEY_RECV_WINDOW_MS",
                Duration::from_secs(5),
            ),
            max_recv_window: Duration::from_secs(60),
            credential_ttl: env.millis(
                "BOURSE_GATEWAY_API_KEY_CREDENTIAL_TTL_MS",
                Duration::from_secs(10),
            ),
        };
        if api_keys.recv_window.is_zero() || api_keys.recv_window > api_keys.max_recv_window {
            env.problem(
                "BOURSE_GATEWAY_API_KEY_RECV_WINDOW_MS",
                "must be 1-60000 milliseconds",
            );
        }
        let production = common.is_production();
        let assets = launch::platform::assets(env);
        let stream = StreamSettings {
            buffer: positive(env, "BOURSE_GATEWAY_STREAM_BUFFER", 256) as usize,
            heartbeat: env.millis(
                "BOURSE_GATEWAY_STREAM_HEARTBEAT_MS",
                Duration::from_secs(15),
            ),
            max_per_principal: positive(env, "BOURSE_GATEWAY_STREAM_MAX_PER_PRINCIPAL", 5) as usize,
            auth_timeout: env.millis(
                "BOURSE_GATEWAY_STREAM_AUTH_TIMEOUT_MS",
                Duration::from_secs(5),
            ),
            max_subscriptions: positive(env, "BOURSE_GATEWAY_STREAM_MAX_SUBSCRIPTIONS", 32)
                as usize,
        };
        Self {
            port: env.or(crate::SPEC.port_variable, crate::SPEC.default_port),
            auth: access::AuthSettings::read(env),
            upstream_urls: UPSTREAMS
                .into_iter()
                .filter(|upstream| *upstream != Upstream::AUTH)
                .map(|upstream| {
                    let url: String =
                        env.or(&upstream.url_variable(), upstream.default_url.to_owned());
                    (upstream, url.trim_end_matches('/').to_owned())
                })
                .collect(),
            upstream,
            orders_timeout,
            check_valid_for,
            cors_origins,
            trusted_proxies: env.or("BOURSE_GATEWAY_TRUSTED_PROXIES", TrustedProxies::none()),
            admin_allowlist: env.or(
                "BOURSE_GATEWAY_ADMIN_ALLOWLIST",
                // Loopback and private networks: operators reach admin routes from inside.
                "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
                    .parse()
                    .unwrap_or_default(),
            ),
            hsts: env.or("BOURSE_GATEWAY_HSTS", production),
            public_tls: service_kit::tls::Identity::read(
                env,
                "BOURSE_GATEWAY_TLS_CERT",
                "BOURSE_GATEWAY_TLS_KEY",
            ),
            rate_limits,
            jwks_min_refresh: Duration::from_millis(
                env.or("BOURSE_GATEWAY_JWKS_MIN_REFRESH_MS", 1000u64),
            ),
            stream,
            assets,
            admission: crate::admission::AdmissionSettings {
                max_in_flight: positive(env, "BOURSE_GATEWAY_MAX_IN_FLIGHT", 64) as usize,
                admin_max_in_flight: positive(env, "BOURSE_GATEWAY_ADMIN_MAX_IN_FLIGHT", 8)
                    as usize,
                queue_deadline: env.millis(
                    "BOURSE_GATEWAY_QUEUE_DEADLINE_MS",
                    Duration::from_millis(50),
                ),
            },
            api_keys,
            service_secret: access::service::client_secret(env, "gateway", production),
            common,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Config {
        Config::read(&mut Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn orders_has_a_timeout_of_its_own_and_the_others_keep_the_shared_one() {
        let defaults = read(&[]);
        assert_eq!(
            defaults.policy_of(Upstream::ORDERS).timeout,
            Duration::from_millis(2_500),
            "the bound on a risk check and half a second"
        );
        assert_eq!(
            defaults.policy_of(Upstream::SETTLEMENT).timeout,
            Duration::from_secs(5)
        );

        let shared = read(&[("BOURSE_GATEWAY_UPSTREAM_TIMEOUT_MS", "4000")]);
        assert_eq!(
            shared.policy_of(Upstream::ORDERS).timeout,
            Duration::from_millis(2_500),
            "the shared setting leaves orders' own alone"
        );

        let own = read(&[("BOURSE_GATEWAY_ORDERS_TIMEOUT_MS", "1200")]);
        let orders = own.policy_of(Upstream::ORDERS);
        assert_eq!(orders.timeout, Duration::from_millis(1_200));
        assert_eq!(
            orders.retries, own.upstream.retries,
            "only the timeout differs"
        );
        for other in [Upstream::AUTH, Upstream::SETTLEMENT, Upstream::RISK] {
            assert_eq!(own.policy_of(other).timeout, Duration::from_secs(5));
        }
    }

    #[test]
    fn an_orders_timeout_not_above_the_bound_on_checks_cuts_placements_short() {
        assert!(
            !read(&[]).orders_timeout_cuts_placements_short(),
            "the defaults agree"
        );
        let bound_raised = read(&[("BOURSE_RISK_CHECK_VALID_FOR_MS", "3000")]);
        assert!(bound_raised.orders_timeout_cuts_placements_short());
        let equal = read(&[
            ("BOURSE_RISK_CHECK_VALID_FOR_MS", "3000"),
            ("BOURSE_GATEWAY_ORDERS_TIMEOUT_MS", "3000"),
        ]);
        assert!(
            equal.orders_timeout_cuts_placements_short(),
            "a check may take the whole bound"
        );
        let both_raised = read(&[
            ("BOURSE_RISK_CHECK_VALID_FOR_MS", "3000"),
            ("BOURSE_GATEWAY_ORDERS_TIMEOUT_MS", "3500"),
        ]);
        assert!(!both_raised.orders_timeout_cuts_placements_short());
    }
}
