//! Settings by reference, resolved at start (SEC-11): a secret setting's value may be a
//! reference — `DATABASE_URL=vault:secret/bourse/db#url`,
//! `BOURSE_MASTER_KEYS=file:/run/secrets/master_keys` — and is replaced by what it names
//! before any service reads its configuration. Every failure is reported together, naming the
//! variable and the reference, never a value. The references stay watched ([`LiveSettings`]):
//! a database credential rotated in the store reaches the running pools (SEC-11).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use service_kit::Env;
use tokio::sync::watch;

use crate::provider::SecretProvider;
use crate::{AwsSettings, Providers, Reference, SecretString, Secrets, VaultSettings};

/// Variables that hold secrets, and prefixes of such families. Only these are resolved: a
/// non-secret setting that happens to start with `file:` stays what it says.
const SECRET_SETTINGS: &[&str] = &[
    "DATABASE_URL",
    "REDIS_URL",
    "BOURSE_MASTER_KEYS",
    "BOURSE_ALERTING_SMTP_PASSWORD",
];
const SECRET_PREFIXES: &[&str] = &["BOURSE_SERVICE_SECRET_"];

fn is_secret(name: &str) -> bool {
    SECRET_SETTINGS.contains(&name) || SECRET_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Vault, when `BOURSE_VAULT_ADDR` is set: its token from `BOURSE_VAULT_TOKEN`, itself a
/// literal or an `env:`/`file:` reference (a Vault token cannot come from Vault).
pub fn vault_settings(env: &mut Env) -> Option<VaultSettings> {
    if !env.is_set("BOURSE_VAULT_ADDR") {
        // Read for the record (documentation checks), unused without an address.
        let _ = env.is_set("BOURSE_VAULT_TOKEN");
        return None;
    }
    let address: String = env.or("BOURSE_VAULT_ADDR", String::new());
    let token = env.secret("BOURSE_VAULT_TOKEN", None);
    Some(VaultSettings {
        address: address.trim_end_matches('/').to_owned(),
        token,
    })
}

/// How often watched references are read again (`BOURSE_SECRETS_REFRESH_MS`, a minute).
pub fn refresh_interval(env: &mut Env) -> Duration {
    env.millis("BOURSE_SECRETS_REFRESH_MS", Duration::from_secs(60))
}

/// AWS, when `AWS_REGION` is set: `BOURSE_AWS_ENDPOINT_URL` for a stand-in (moto, LocalStack),
/// and static credentials when `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` are both given
/// (otherwise the SDK's default chain: web identity, instance role…).
pub fn aws_settings(env: &mut Env) -> Option<AwsSettings> {
    let region: String = env.or("AWS_REGION", String::new());
    let endpoint_url: String = env.or("BOURSE_AWS_ENDPOINT_URL", String::new());
    let access_key_id: String = env.or("AWS_ACCESS_KEY_ID", String::new());
    let secret_access_key = env.secret("AWS_SECRET_ACCESS_KEY", Some(""));
    if region.is_empty() {
        return None;
    }
    let credentials = (!access_key_id.is_empty() && !secret_access_key.expose_secret().is_empty())
        .then_some((access_key_id, secret_access_key));
    Some(AwsSettings {
        region,
        endpoint_url: (!endpoint_url.is_empty()).then_some(endpoint_url),
        credentials,
    })
}

/// The settings with their references resolved, and those references kept fresh.
pub struct Resolved {
    /// Every variable, a reference replaced by its value.
    pub vars: Vec<(String, String)>,
    pub live: LiveSettings,
}

/// The secret settings that were references, kept fresh while the process runs: a rotated
/// value reaches whoever [`LiveSettings::watch`]es it without a restart.
pub struct LiveSettings {
    secrets: Arc<Secrets>,
    references: Vec<(String, Reference)>,
    refresh: Duration,
}

impl LiveSettings {
    /// The value of `variable` now and as it changes; `None` unless it was a reference.
    pub async fn watch(&self, variable: &str) -> Option<watch::Receiver<SecretString>> {
        let (_, reference) = self.references.iter().find(|(name, _)| name == variable)?;
        match self.secrets.watch(reference).await {
            Ok(changes) => Some(changes),
            Err(err) => {
                tracing::warn!(variable, error = %err, "cannot watch a secret setting");
                None
            }
        }
    }

    /// Re-reads every watched reference each `BOURSE_SECRETS_REFRESH_MS` until `stop`; the
    /// caller owns the task and awaits it when stopping.
    #[must_use = "a dropped handle hides a refresher that died"]
    pub fn spawn_refresh(
        &self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(
            self.secrets
                .clone()
                .refresh_watched_every(self.refresh, stop),
        )
    }
}

/// `vars` with every secret setting that holds a reference replaced by its value; or every
/// problem, as (variable, message).
pub async fn resolve(vars: Vec<(String, String)>) -> Result<Resolved, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut env = Env::from_pairs(vars.clone());
    let refresh = refresh_interval(&mut env);
    let mut vault = vault_settings(&mut env);
    // The token may itself be a reference to a file or another variable.
    if let Some(settings) = vault.as_mut()
        && let Ok(reference) = Reference::parse(settings.token.expose_secret())
    {
        match Providers::new(None) {
            Ok(local) => match local.fetch(&reference).await {
                Ok(token) => settings.token = token,
                Err(err) => problems.push(("BOURSE_VAULT_TOKEN".to_owned(), err.to_string())),
            },
            Err(err) => problems.push(("BOURSE_VAULT_TOKEN".to_owned(), err.to_string())),
        }
    }
    let aws = aws_settings(&mut env);
    let providers = match Providers::new(vault) {
        Ok(providers) => providers.with_aws(aws),
        Err(err) => return Err(vec![("BOURSE_VAULT_ADDR".to_owned(), err.to_string())]),
    };
    let secrets = Secrets::new(Arc::new(providers), refresh);
    let mut references = Vec::new();
    let mut resolved = Vec::with_capacity(vars.len());
    for (name, value) in vars {
        let reference = is_secret(&name)
            .then(|| Reference::parse(&value).ok())
            .flatten();
        match reference {
            None => resolved.push((name, value)),
            Some(reference) => match secrets.get(&reference).await {
                Ok(secret) => {
                    resolved.push((name.clone(), secret.expose_secret().to_owned()));
                    references.push((name, reference));
                }
                Err(err) => problems.push((name, err.to_string())),
            },
        }
    }
    if let Err(problem) = env.finish() {
        problems.extend(
            problem
                .problems
                .into_iter()
                .map(|p| (p.variable, p.message)),
        );
    }
    if problems.is_empty() {
        Ok(Resolved {
            vars: resolved,
            live: LiveSettings {
                secrets,
                references,
                refresh,
            },
        })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_secret_settings_are_resolved() {
        assert!(is_secret("DATABASE_URL") && is_secret("BOURSE_SERVICE_SECRET_ORDERS"));
        assert!(!is_secret("BOURSE_LOG") && !is_secret("BOURSE_ALERTING_WATCH"));
    }
}
