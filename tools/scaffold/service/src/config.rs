//! Settings of {{name}} (`BOURSE_{{NAME}}_*`), read once at start; every problem is reported
//! with the others.

use service_kit::{CommonConfig, Env};

#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    pub port: u16,
    /// Where tokens come from and what they must say.
    pub auth: access::AuthSettings,
}

impl Config {
    pub fn read(env: &mut Env) -> Self {
        let common = CommonConfig::read(env);
        Self {
            port: env.or(crate::SPEC.port_variable, crate::SPEC.default_port),
            auth: access::AuthSettings::read(env),
            common,
        }
    }
}
