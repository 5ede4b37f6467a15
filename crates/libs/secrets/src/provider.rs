//! Where secret values come from. Each provider fetches one reference's current value; the
//! cache ([`crate::Secrets`]) decides how often. AWS lives in `crate::aws` (feature `aws`).

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

/// AWS: the region, and for a stand-in (moto, LocalStack) its endpoint. Credentials: static
/// ones when given, else the SDK's default chain (environment, web identity, instance role).
#[derive(Clone, Debug)]
pub struct AwsSettings {
    pub region: String,
    pub endpoint_url: Option<String>,
    /// (access key id, secret access key).
    pub credentials: Option<(String, SecretString)>,
}

/// Every provider this process is configured for, by scheme.
pub struct Providers {
    vault: Option<Vault>,
    aws_settings: Option<AwsSettings>,
    /// The AWS clients, made on the first `aws-*` reference (loading their config is async).
    #[cfg(feature = "aws")]
    aws: tokio::sync::OnceCell<crate::aws::Aws>,
}

impl Providers {
    /// Environment and files always; Vault when `vault` is given.
    pub fn new(vault: Option<VaultSettings>) -> Result<Self, Error> {
        let vault = vault.map(Vault::new).transpose()?;
        Ok(Self {
            vault,
            aws_settings: None,
            #[cfg(feature = "aws")]
            aws: tokio::sync::OnceCell::new(),
        })
    }

    /// AWS Secrets Manager and KMS too. Without the `aws` feature their references fail with
    /// a message that says so.
    pub fn with_aws(mut self, settings: Option<AwsSettings>) -> Self {
        self.aws_settings = settings;
        self
    }

    #[cfg(feature = "aws")]
    async fn fetch_aws(&self, reference: &Reference) -> Result<SecretString, Error> {
        let Some(settings) = &self.aws_settings else {
            return Err(Error::NotConfigured {
                reference: reference.to_string(),
                provider: "aws (AWS_REGION)",
            });
        };
        let aws = self
            .aws
            .get_or_init(|| crate::aws::Aws::connect(settings))
            .await;
        match reference {
            Reference::AwsSecretsManager { name, key } => aws.secret(reference, name, key).await,
            Reference::AwsKms(ciphertext) => aws.decrypt(reference, ciphertext).await,
            _ => Err(Error::Malformed(reference.to_string())),
        }
    }

    #[cfg(not(feature = "aws"))]
    async fn fetch_aws(&self, reference: &Reference) -> Result<SecretString, Error> {
        Err(Error::NotConfigured {
            reference: reference.to_string(),
            provider: "aws (a build with the `aws` feature)",
        })
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
                Reference::AwsSecretsManager { .. } | Reference::AwsKms(_) => {
                    self.fetch_aws(reference).await
                }
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
