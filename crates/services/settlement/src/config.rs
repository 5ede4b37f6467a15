//! Settings of the settlement service (`BOURSE_SETTLEMENT_*`).

use std::time::Duration;

use contracts::Asset;
use service_kit::{CommonConfig, Env};

use crate::ledger::Fees;

/// Settlement's name as a service-token client.
const SERVICE_CLIENT: &str = "settlement";

#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    pub port: u16,
    /// Where tokens come from and what they must say.
    pub auth: access::AuthSettings,
    /// Shared with orders (`BOURSE_ASSETS`): both must agree on every scale.
    pub assets: Vec<Asset>,
    pub fees: Fees,
    /// How often the books are reconciled in the background.
    pub reconciliation_interval: Duration,
    /// Trades younger than this are left out of the comparison with orders: still in flight.
    pub reconciliation_grace: Duration,
    /// Base URL of orders, whose executed trades reconciliation counts settled ones against.
    pub orders_url: String,
    /// Base URL of risk, where a withdrawal reserves what it takes before it is booked.
    pub risk_url: String,
    /// Settlement's client secret for service tokens (`BOURSE_SERVICE_SECRET_SETTLEMENT`).
    pub service_secret: secrecy::SecretString,
    /// Entries read from the orders stream at a time.
    pub consumer_batch: usize,
    /// Deliveries of a failing event before it is dead-lettered.
    pub consumer_max_deliveries: usize,
    /// How long a failed event waits before it is retried.
    pub consumer_retry_after: Duration,
    /// After a batch that was not full, how long entries gather before the next read.
    pub consumer_linger: Duration,
}

impl Config {
    pub fn read(env: &mut Env) -> Self {
        let common = CommonConfig::read(env);
        let assets = launch::platform::assets(env);
        let fees = launch::platform::fees(env);
        let interval = env.or("BOURSE_SETTLEMENT_RECONCILIATION_INTERVAL_SECS", 60u64);
        if interval == 0 {
            env.problem(
                "BOURSE_SETTLEMENT_RECONCILIATION_INTERVAL_SECS",
                "must be greater than zero",
            );
        }
        let batch = env.or("BOURSE_SETTLEMENT_CONSUMER_BATCH", 100usize);
        if batch == 0 {
            env.problem(
                "BOURSE_SETTLEMENT_CONSUMER_BATCH",
                "must be greater than zero",
            );
        }
        Self {
            port: env.or(crate::SPEC.port_variable, crate::SPEC.default_port),
            auth: access::AuthSettings::read(env),
            assets,
            fees,
            reconciliation_interval: Duration::from_secs(interval.max(1)),
            reconciliation_grace: Duration::from_secs(
                env.or("BOURSE_SETTLEMENT_RECONCILIATION_GRACE_SECS", 60u64),
            ),
            orders_url: env
                .or("BOURSE_ORDERS_URL", "http://127.0.0.1:8082".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            risk_url: env
                .or("BOURSE_RISK_URL", "http://127.0.0.1:8083".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            service_secret: access::service::client_secret(
                env,
                SERVICE_CLIENT,
                common.is_production(),
            ),
            consumer_batch: batch.max(1),
            consumer_max_deliveries: env
                .or("BOURSE_SETTLEMENT_CONSUMER_MAX_DELIVERIES", 5usize)
                .max(1),
            consumer_retry_after: env.millis(
                "BOURSE_SETTLEMENT_CONSUMER_RETRY_AFTER_MS",
                Duration::from_secs(5),
            ),
            // Zero is allowed here (unlike the other waits): it turns lingering off.
            consumer_linger: Duration::from_millis(
                env.or("BOURSE_SETTLEMENT_CONSUMER_LINGER_MS", 10u64),
            ),
            common,
        }
    }
}
