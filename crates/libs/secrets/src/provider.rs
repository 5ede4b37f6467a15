//! Where secret values come from. Each provider fetches one reference's current value; the
//! cache ([`crate::Secrets`]) decides how often.

use std::time::Duration;

use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::{Error, Reference};

/// Fetches the current value of a reference.
pub trait SecretProvider: Send + Sync {
    fn fetch<'a>(&'a self, reference: &'a Reference) -> BoxFuture<'a, Result<SecretString, Error>>;
}

/// Vault (or OpenBao, which speaks the same API): its address and the token to read with.
#[derive(Clone, Debug)]
pub struct VaultSettings {
    /// `https://vault.internal:8200`, without a trailing slash.
    pub address: String,
    pub token: SecretString,
}

/// Every provider this process is configured for, by scheme.
pub struct Providers {
    vault: Option<Vault>,
}

impl Providers {
    /// Environment and files always; Vault when `vault` is given.
    pub fn new(vault: Option<VaultSettings>) -> Result<Self, Error> {
        let vault = vault.map(Vault::new).transpose()?;
        Ok(Self { vault })
    }
}

impl SecretProvider for Providers {
    fn fetch<'a>(&'a self, reference: &'a Reference) -> BoxFuture<'a, Result<SecretString, Error>> {
        Box::pin(async move {
            match reference {
                Reference::Env(name) => {
                    std::env::var(name)
                        .map(SecretString::from)
                        .map_err(|_| Error::NotFound {
                            reference: reference.to_string(),
                        })
                }
                Reference::File(path) => match tokio::fs::read_to_string(path).await {
                    // Secrets files usually end with a newline the value does not have.
                    Ok(text) => Ok(SecretString::from(
                        text.strip_suffix('\n').unwrap_or(&text).to_owned(),
                    )),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                        Err(Error::NotFound {
                            reference: reference.to_string(),
                        })
                    }
                    Err(err) => Err(Error::Unavailable {
                        reference: reference.to_string(),
                        reason: err.kind().to_string(),
                    }),
                },
                Reference::Vault { mount, path, key } => match &self.vault {
                    Some(vault) => vault.read(reference, mount, path, key).await,
                    None => Err(Error::NotConfigured {
                        reference: reference.to_string(),
                        provider: "vault",
                    }),
                },
                Reference::AwsSecretsManager { .. } => Err(Error::NotConfigured {
                    reference: reference.to_string(),
                    provider: "aws-sm",
                }),
            }
        })
    }
}

/// Vault's KV version 2 API over HTTP.
struct Vault {
    settings: VaultSettings,
    http: reqwest::Client,
}

impl Vault {
    fn new(settings: VaultSettings) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Unavailable {
                reference: "vault".to_owned(),
                reason: e.without_url().to_string(),
            })?;
        Ok(Self { settings, http })
    }

    /// `GET /v1/<mount>/data/<path>` → `data.data.<key>`, the latest version.
    async fn read(
        &self,
        reference: &Reference,
        mount: &str,
        path: &str,
        key: &str,
    ) -> Result<SecretString, Error> {
        let unavailable = |reason: String| Error::Unavailable {
            reference: reference.to_string(),
            reason,
        };
        let not_found = || Error::NotFound {
            reference: reference.to_string(),
        };
        let url = format!("{}/v1/{mount}/data/{path}", self.settings.address);
        let response = self
            .http
            .get(url)
            .header("x-vault-token", self.settings.token.expose_secret())
            .send()
            .await
            .map_err(|e| unavailable(e.without_url().to_string()))?;
        match response.status() {
            status if status.is_success() => {}
            reqwest::StatusCode::NOT_FOUND => return Err(not_found()),
            status => return Err(unavailable(format!("vault answered {}", status.as_u16()))),
        }
        let mut body: Value = response
            .json()
            .await
            .map_err(|e| unavailable(format!("unreadable answer: {}", e.without_url())))?;
        match body["data"]["data"][key].take() {
            Value::String(value) => Ok(SecretString::from(value)),
            Value::Null => Err(not_found()),
            // A number or a structure: its JSON is the value.
            other => Ok(SecretString::from(other.to_string())),
        }
    }
}
