//! Settings of the orders service (`BOURSE_ORDERS_*`).

use contracts::Asset;
use service_kit::{CommonConfig, Env};

#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    pub port: u16,
    /// Where the JWKS comes from (auth).
    pub auth_url: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub assets: Vec<Asset>,
    /// Requests that may wait for one symbol's matching task; beyond, 503 at once.
    pub queue_capacity: usize,
    pub migrate_on_start: bool,
}

impl Config {
    pub fn read(env: &mut Env) -> Self {
        let common = CommonConfig::read(env);
        let assets = Asset::configured(&env.list("BOURSE_ASSETS")).unwrap_or_else(|message| {
            env.problem("BOURSE_ASSETS", message);
            Asset::defaults()
        });
        Self {
            port: env.or("BOURSE_ORDERS_PORT", 8082u16),
            auth_url: env
                .or("BOURSE_AUTH_URL", "http://127.0.0.1:8081".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            jwt_issuer: env.or("BOURSE_JWT_ISSUER", "bourse-auth".to_owned()),
            jwt_audience: env.or("BOURSE_JWT_AUDIENCE", "bourse".to_owned()),
            assets,
            queue_capacity: {
                let capacity = env.or("BOURSE_ORDERS_QUEUE_CAPACITY", 1024usize);
                if capacity == 0 {
                    env.problem("BOURSE_ORDERS_QUEUE_CAPACITY", "must be greater than zero");
                }
                capacity.max(1)
            },
            migrate_on_start: env.or("BOURSE_MIGRATE_ON_START", !common.is_production()),
            common,
        }
    }
}
