//! AWS Secrets Manager and KMS (feature `aws`; the SDK is ~2.3 min of build that only builds
//! asking for it pay).
//!
//! - `aws-sm:<name>#<key>`: `GetSecretValue` of `name` (its current version), a JSON object
//!   whose `key` is the value — the shape the console and `aws secretsmanager` write.
//! - `aws-kms:<ciphertext>`: the base64 `CiphertextBlob` of `aws kms encrypt`, opened with
//!   `Decrypt` — a secret that can sit in a plain setting because only KMS opens it (the
//!   pattern of Lambda's encrypted environment variables). Used for the master keys of the
//!   field encryption when KMS holds the key that guards them (SEC-12, ADR 0011).
//!
//! Credentials come from the SDK's default chain (environment, web identity, instance role)
//! unless [`AwsSettings`] carries static ones; `endpoint_url` points at a stand-in such as moto.

use aws_config::BehaviorVersion;
use aws_sdk_kms::primitives::Blob;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::{AwsSettings, Error, Reference};

pub struct Aws {
    secrets: aws_sdk_secretsmanager::Client,
    kms: aws_sdk_kms::Client,
}

impl Aws {
    pub async fn connect(settings: &AwsSettings) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(settings.region.clone()));
        if let Some(endpoint) = &settings.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some((access_key_id, secret_access_key)) = &settings.credentials {
            loader = loader.credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                access_key_id,
                secret_access_key.expose_secret(),
                None,
                None,
                "bourse-settings",
            ));
        }
        let config = loader.load().await;
        Self {
            secrets: aws_sdk_secretsmanager::Client::new(&config),
            kms: aws_sdk_kms::Client::new(&config),
        }
    }

    /// `key` of the JSON secret `name`.
    pub async fn secret(
        &self,
        reference: &Reference,
        name: &str,
        key: &str,
    ) -> Result<SecretString, Error> {
        use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
        let not_found = || Error::NotFound {
            reference: reference.to_string(),
        };
        let unavailable = |reason: String| Error::Unavailable {
            reference: reference.to_string(),
            reason,
        };
        let output = match self.secrets.get_secret_value().secret_id(name).send().await {
            Ok(output) => output,
            Err(err) => {
                return match err.into_service_error() {
                    GetSecretValueError::ResourceNotFoundException(_) => Err(not_found()),
                    other => Err(unavailable(failure(&other))),
                };
            }
        };
        let text = output
            .secret_string()
            .ok_or_else(|| unavailable("a binary secret; expected a JSON object".into()))?;
        // Parse errors would quote the text, which is the secret: say only what was wrong.
        let mut object: Value = serde_json::from_str(text)
            .map_err(|_| unavailable("not a JSON object of keys and values".into()))?;
        match object.get_mut(key).map(Value::take) {
            Some(Value::String(value)) => Ok(SecretString::from(value)),
            None | Some(Value::Null) => Err(not_found()),
            Some(other) => Ok(SecretString::from(other.to_string())),
        }
    }

    /// The plaintext of a KMS ciphertext, which must be UTF-8.
    pub async fn decrypt(
        &self,
        reference: &Reference,
        ciphertext: &str,
    ) -> Result<SecretString, Error> {
        let unavailable = |reason: String| Error::Unavailable {
            reference: reference.to_string(),
            reason,
        };
        let blob = base64::engine::general_purpose::STANDARD
            .decode(ciphertext)
            .map_err(|_| unavailable("the ciphertext is not base64".into()))?;
        let output = self
            .kms
            .decrypt()
            .ciphertext_blob(Blob::new(blob))
            .send()
            .await
            .map_err(|err| unavailable(failure(&err.into_service_error())))?;
        let plaintext = output
            .plaintext()
            .ok_or_else(|| unavailable("KMS returned no plaintext".into()))?;
        String::from_utf8(plaintext.as_ref().to_vec())
            .map(SecretString::from)
            .map_err(|_| unavailable("the plaintext is not UTF-8".into()))
    }
}

/// An SDK error as one line: its code and message (AWS messages name resources, not values).
fn failure(err: &(impl aws_sdk_kms::error::ProvideErrorMetadata + std::fmt::Display)) -> String {
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => err.to_string(),
    }
}
