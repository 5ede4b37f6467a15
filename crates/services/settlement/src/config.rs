//! Settings of the settlement service (`BOURSE_SETTLEMENT_*`).

use std::time::Duration;

use contracts::Asset;
use service_kit::{CommonConfig, Env};

use crate::ledger::Fees;

#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    pub port: u16,
    /// Where the JWKS comes from (auth).
    pub auth_url: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    /// Shared with orders (`BOURSE_ASSETS`): both must agree on every scale.
    pub assets: Vec<Asset>,
    pub fees: Fees,
    /// How often the books are reconciled in the background.
    pub reconciliation_interval: Duration,
    /// Entries read from the orders stream at a time.
    pub consumer_batch: usize,
    pub migrate_on_start: bool,
}

/// Fees above 10 % are a typo, not a pricing decision.
const MAX_FEE_BPS: u32 = 1_000;

impl Config {
    pub fn read(env: &mut Env) -> Self {
        let common = CommonConfig::read(env);
        let assets = Asset::configured(&env.list("BOURSE_ASSETS")).unwrap_or_else(|message| {
            env.problem("BOURSE_ASSETS", message);
            Asset::defaults()
        });
        let mut bps = |key: &str, default: u32| {
            let value = env.or(key, default);
            if value > MAX_FEE_BPS {
                env.problem(key, format!("at most {MAX_FEE_BPS} bps (10 %)"));
            }
            value.min(MAX_FEE_BPS)
        };
        let fees = Fees {
            maker_bps: bps("BOURSE_MAKER_FEE_BPS", 10),
            taker_bps: bps("BOURSE_TAKER_FEE_BPS", 20),
        };
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
            auth_url: env
                .or("BOURSE_AUTH_URL", "http://127.0.0.1:8081".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            jwt_issuer: env.or("BOURSE_JWT_ISSUER", "bourse-auth".to_owned()),
            jwt_audience: env.or("BOURSE_JWT_AUDIENCE", "bourse".to_owned()),
            assets,
            fees,
            reconciliation_interval: Duration::from_secs(interval.max(1)),
            consumer_batch: batch.max(1),
            migrate_on_start: env.or("BOURSE_MIGRATE_ON_START", !common.is_production()),
            common,
        }
    }
}
