//! Settings of the risk service (`BOURSE_RISK_*`): the default limits every account has until
//! a risk officer sets its own.

use contracts::Asset;
use contracts::fees::Fees;
use service_kit::{CommonConfig, Env};

use crate::limits::{Decimal, Limits, LimitsBody};

#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    pub port: u16,
    /// Where tokens come from and what they must say.
    pub auth: access::AuthSettings,
    pub assets: Vec<Asset>,
    /// The fee schedule settlement books (`BOURSE_MAKER_FEE_BPS`, `BOURSE_TAKER_FEE_BPS`):
    /// reservations are computed as settlement computes holds.
    pub fees: Fees,
    pub defaults: Limits,
    /// Base URL of settlement, whose balances the pre-trade stage loads at start (ADR 0023).
    pub settlement_url: String,
    /// Base URL of orders, asked at start for a mark on its stream (ADR 0023).
    pub orders_url: String,
    /// How long a risk check stays good for booking its order; a restart waits it out twice
    /// before asking for its mark (ADR 0023).
    pub check_valid_for: std::time::Duration,
    /// Risk's client secret for service tokens (`BOURSE_SERVICE_SECRET_RISK`).
    pub service_secret: secrecy::SecretString,
    /// How often risk's balances are compared with settlement's ledger
    /// (`BOURSE_RISK_RECONCILIATION_INTERVAL_SECS`, default 60).
    pub reconciliation_interval: std::time::Duration,
}

/// Risk's name as a service-token client.
const SERVICE_CLIENT: &str = "risk";

impl Config {
    pub fn read(env: &mut Env) -> Self {
        let common = CommonConfig::read(env);
        let assets = launch::platform::assets(env);
        let body = LimitsBody {
            max_order_quantity: env.or("BOURSE_RISK_MAX_ORDER_QUANTITY", "1000".to_owned()),
            max_order_notional: env.or("BOURSE_RISK_MAX_ORDER_NOTIONAL", "10000000".to_owned()),
            max_open_orders: env.or("BOURSE_RISK_MAX_OPEN_ORDERS", 1_000u32),
            max_orders_per_second: env.or("BOURSE_RISK_MAX_ORDERS_PER_SECOND", 100u32),
            max_position: env.or("BOURSE_RISK_MAX_POSITION", "10000".to_owned()),
            price_collar_bps: env.or("BOURSE_RISK_PRICE_COLLAR_BPS", 1_000u32),
        };
        let defaults = body.validate().unwrap_or_else(|errors| {
            for (field, message) in errors {
                env.problem(&format!("BOURSE_RISK_{}", field.to_uppercase()), message);
            }
            fallback()
        });
        let interval = env.or("BOURSE_RISK_RECONCILIATION_INTERVAL_SECS", 60u64);
        if interval == 0 {
            env.problem(
                "BOURSE_RISK_RECONCILIATION_INTERVAL_SECS",
                "must be greater than zero",
            );
        }
        let reconciliation_interval = std::time::Duration::from_secs(interval.max(1));
        Self {
            port: env.or(crate::SPEC.port_variable, crate::SPEC.default_port),
            auth: access::AuthSettings::read(env),
            assets,
            fees: launch::platform::fees(env),
            defaults,
            settlement_url: env
                .or("BOURSE_SETTLEMENT_URL", "http://127.0.0.1:8084".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            check_valid_for: launch::platform::check_valid_for(env),
            orders_url: env
                .or("BOURSE_ORDERS_URL", "http://127.0.0.1:8082".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            reconciliation_interval,
            service_secret: access::service::client_secret(
                env,
                SERVICE_CLIENT,
                common.is_production(),
            ),
            common,
        }
    }
}

/// Only used when the configuration is already refused (the problem is reported).
fn fallback() -> Limits {
    Limits {
        max_order_quantity: Decimal::ZERO,
        max_order_notional: Decimal::ZERO,
        max_open_orders: 0,
        max_orders_per_second: 0,
        max_position: Decimal::ZERO,
        price_collar_bps: 1,
    }
}
