//! Settings of the settlement service (`BOURSE_SETTLEMENT_*`).

use std::time::Duration;

use contracts::Asset;
use service_kit::{CommonConfig, Env};

use crate::ledger::Fees;

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
    /// Entries read from the orders stream at a time.
    pub consumer_batch: usize,
    /// Deliveries of a failing event before it is dead-lettered.
    pub consumer_max_deliveries: usize,
    /// How long a failed event waits before it is retried.
    pub consumer_retry_after: Duration,
    pub migrate_on_start: bool,
}

impl Config {
    pub fn read(env: &mut Env) -> Self {
        let common = CommonConfig::read(env);
        let assets = Asset::configured(&env.list("BOURSE_ASSETS")).unwrap_or_else(|message| {
            env.problem("BOURSE_ASSETS", message);
            Asset::defaults()
        });
        let fees = Fees::new(
            env.or("BOURSE_MAKER_FEE_BPS", Fees::DEFAULT.maker_bps),
            env.or("BOURSE_TAKER_FEE_BPS", Fees::DEFAULT.taker_bps),
        )
        .unwrap_or_else(|(variable, message)| {
            env.problem(variable, message);
            Fees::DEFAULT
        });
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
            port: env.or("BOURSE_SETTLEMENT_PORT", 8084u16),
            auth: access::AuthSettings::read(env),
            assets,
            fees,
            reconciliation_interval: Duration::from_secs(interval.max(1)),
            consumer_batch: batch.max(1),
            consumer_max_deliveries: env
                .or("BOURSE_SETTLEMENT_CONSUMER_MAX_DELIVERIES", 5usize)
                .max(1),
            consumer_retry_after: env.millis(
                "BOURSE_SETTLEMENT_CONSUMER_RETRY_AFTER_MS",
                Duration::from_secs(5),
            ),
            migrate_on_start: env.or("BOURSE_MIGRATE_ON_START", !common.is_production()),
            common,
        }
    }
}
