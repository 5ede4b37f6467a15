//! Settings of the auth service (`BOURSE_AUTH_*`), on top of the common ones.

use std::time::Duration;

use secrecy::SecretString;
use service_kit::http::TrustedProxies;
use service_kit::{CommonConfig, Env};

use crate::password::Argon2Settings;

#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    pub port: u16,
    pub tokens: TokenSettings,
    pub argon2: Argon2Settings,
    pub throttle: ThrottleSettings,
    pub trusted_proxies: TrustedProxies,
    /// Generate a signing key when none exists (development only).
    pub generate_signing_key: bool,
    /// Services that may obtain service tokens (SEC-14), with their client secrets.
    pub service_clients: Vec<(&'static str, SecretString)>,
    /// Lifetime of a service token.
    pub service_token_ttl: Duration,
    /// How often each replica re-reads the signing keys (a rotation reaches it within this).
    pub signing_key_reload: Duration,
    /// The master keys the signing keys' private halves are sealed with (SEC-12).
    pub master_keys: std::sync::Arc<secrets::MasterKeys>,
}

#[derive(Clone, Debug)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

/// Failed-login throttling (SEC-07): fixed windows counted in Redis, so every replica sees the
/// same counts.
#[derive(Clone, Debug)]
pub struct ThrottleSettings {
    pub window: Duration,
    pub max_failures_per_account: u32,
    pub max_failures_per_ip: u32,
}

pub const DEFAULT_ISSUER: &str = "bourse-auth";
pub const DEFAULT_AUDIENCE: &str = "bourse";
/// Access tokens live at most this long (SEC-04): revocation is only as fast as their expiry.
pub const MAX_ACCESS_TTL: Duration = Duration::from_secs(15 * 60);

impl Config {
    pub fn read(env: &mut Env) -> Self {
        let common = CommonConfig::read(env);
        let access_ttl = Duration::from_secs(env.or("BOURSE_AUTH_ACCESS_TTL_SECS", 900u64));
        if access_ttl.is_zero() || access_ttl > MAX_ACCESS_TTL {
            env.problem(
                "BOURSE_AUTH_ACCESS_TTL_SECS",
                "must be between 1 and 900 seconds",
            );
        }
        let refresh_ttl =
            Duration::from_secs(env.or("BOURSE_AUTH_REFRESH_TTL_SECS", 30 * 24 * 3600u64));
        if refresh_ttl <= access_ttl {
            env.problem(
                "BOURSE_AUTH_REFRESH_TTL_SECS",
                "must be longer than the access-token lifetime",
            );
        }
        let generate_signing_key =
            env.or("BOURSE_AUTH_GENERATE_SIGNING_KEY", !common.is_production());
        if generate_signing_key && common.is_production() {
            env.problem(
                "BOURSE_AUTH_GENERATE_SIGNING_KEY",
                "must not be true in production: create keys with `bourse admin rotate-signing-key`",
            );
        }
        let service_token_ttl =
            Duration::from_secs(env.or("BOURSE_AUTH_SERVICE_TOKEN_TTL_SECS", 300u64));
        if service_token_ttl.is_zero() || service_token_ttl > MAX_ACCESS_TTL {
            env.problem(
                "BOURSE_AUTH_SERVICE_TOKEN_TTL_SECS",
                "must be between 1 and 900 seconds",
            );
        }
        let production = common.is_production();
        let service_clients = access::service::clients()
            .map(|client| {
                (
                    client,
                    access::service::client_secret(env, client, production),
                )
            })
            .collect();
        Self {
            port: env.or(crate::SPEC.port_variable, crate::SPEC.default_port),
            service_clients,
            service_token_ttl,
            tokens: TokenSettings {
                issuer: env.or("BOURSE_JWT_ISSUER", DEFAULT_ISSUER.to_owned()),
                audience: env.or("BOURSE_JWT_AUDIENCE", DEFAULT_AUDIENCE.to_owned()),
                access_ttl,
                refresh_ttl,
            },
            argon2: Argon2Settings::read(env),
            throttle: ThrottleSettings {
                window: Duration::from_secs(env.or("BOURSE_AUTH_LOGIN_WINDOW_SECS", 900u64)),
                max_failures_per_account: env.or("BOURSE_AUTH_MAX_FAILED_LOGINS_PER_ACCOUNT", 5u32),
                max_failures_per_ip: env.or("BOURSE_AUTH_MAX_FAILED_LOGINS_PER_IP", 50u32),
            },
            // Loopback by default: `serve all` puts the gateway in the same process. In a
            // deployment, set it to the gateway's network.
            trusted_proxies: env.or(
                "BOURSE_TRUSTED_PROXIES",
                "127.0.0.1,::1"
                    .parse()
                    .unwrap_or_else(|_| TrustedProxies::none()),
            ),
            generate_signing_key,
            signing_key_reload: env
                .millis("BOURSE_AUTH_SIGNING_KEY_RELOAD_MS", Duration::from_secs(30)),
            master_keys: secrets::envelope::read_master_keys(env, common.is_production()),
            common,
        }
    }
}
