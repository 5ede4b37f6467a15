//! Settings of the orders service (`BOURSE_ORDERS_*`).

use std::time::Duration;

use contracts::Asset;
use contracts::fees::Fees;
use resilience::Policy;
use secrecy::SecretString;
use service_kit::{CommonConfig, Env};

#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    pub port: u16,
    /// Where tokens come from and what they must say.
    pub auth: access::AuthSettings,
    /// The pre-trade stage: risk checks and reserves each order's funds before it may match.
    pub risk_url: String,
    /// Timeout, retries, breaker and bulkhead of the calls to risk (`BOURSE_ORDERS_RISK_*`).
    pub risk: Policy,
    /// Timeout, breaker and bulkhead of commands forwarded to the replica that owns a symbol's
    /// book (`BOURSE_ORDERS_FORWARD_*`).
    pub forward: Policy,
    /// Where the other orders replicas reach this one (`BOURSE_ORDERS_ADVERTISE_URL`, e.g.
    /// `http://$(POD_IP):8082`); by default the bound address, which only works on one host.
    pub advertise_url: Option<String>,
    /// Orders' client secret for service tokens (`BOURSE_SERVICE_SECRET_ORDERS`).
    pub service_secret: SecretString,
    /// How far from the reference price (last trade, else the best opposite quote) a market
    /// order may execute, in bps; its funds are held at that limit.
    pub market_protection_bps: u32,
    /// The fee schedule settlement books; orders shows each fill's fee by it.
    pub fees: Fees,
    /// How long a risk check stays good for booking its order (ADR 0023).
    pub check_valid_for: std::time::Duration,
    pub assets: Vec<Asset>,
    /// Requests that may wait for one symbol's matching task; beyond, 503 at once.
    pub queue_capacity: usize,
    /// How long a matching batch that found others queued waits for more before it commits
    /// (`engine::Queueing::linger`; zero turns it off).
    pub matching_linger: Duration,
}

impl Config {
    pub fn read(env: &mut Env) -> Self {
        let common = CommonConfig::read(env);
        let assets = launch::platform::assets(env);
        Self {
            port: env.or(crate::SPEC.port_variable, crate::SPEC.default_port),
            auth: access::AuthSettings::read(env),
            risk_url: env
                .or("BOURSE_RISK_URL", "http://127.0.0.1:8083".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            risk: Policy::read(
                env,
                "BOURSE_ORDERS_RISK",
                Policy {
                    timeout: Duration::from_millis(250),
                    ..Policy::default()
                },
            ),
            forward: Policy::read(
                env,
                "BOURSE_ORDERS_FORWARD",
                Policy {
                    timeout: Duration::from_secs(2),
                    ..Policy::default()
                },
            ),
            advertise_url: if env.is_set("BOURSE_ORDERS_ADVERTISE_URL") {
                let url: String = env.or("BOURSE_ORDERS_ADVERTISE_URL", String::new());
                Some(url.trim_end_matches('/').to_owned())
            } else {
                None
            },
            service_secret: access::service::client_secret(env, "orders", common.is_production()),
            market_protection_bps: {
                let bps = env.or("BOURSE_ORDERS_MARKET_PROTECTION_BPS", 1_000u32);
                if bps == 0 || bps >= 10_000 {
                    env.problem(
                        "BOURSE_ORDERS_MARKET_PROTECTION_BPS",
                        "must be between 1 and 9999",
                    );
                }
                bps.clamp(1, 9_999)
            },
            fees: launch::platform::fees(env),
            check_valid_for: launch::platform::check_valid_for(env),
            assets,
            queue_capacity: {
                let capacity = env.or("BOURSE_ORDERS_QUEUE_CAPACITY", 1024usize);
                if capacity == 0 {
                    env.problem("BOURSE_ORDERS_QUEUE_CAPACITY", "must be greater than zero");
                }
                capacity.max(1)
            },
            // Zero is allowed (unlike the other waits): it turns lingering off.
            matching_linger: Duration::from_millis(
                env.or("BOURSE_ORDERS_MATCHING_LINGER_MS", 1u64),
            ),
            common,
        }
    }
}
