//! Secrets by reference (SEC-11): a setting names where its secret lives, and the value is
//! fetched, cached, refreshed and handed out as a [`SecretString`] that no log line or `Debug`
//! print can show.
//!
//! - [`reference`](mod@reference): `env:NAME`, `file:/run/secrets/NAME`,
//!   `vault:<mount>/<path>#<key>`, `aws-sm:<name>#<key>`, `aws-kms:<ciphertext>` — parsed,
//!   never the value.
//! - [`provider`]: where values come from: the environment, files, Vault's KV v2 API, and —
//!   with the `aws` feature — AWS Secrets Manager and KMS (`aws`).
//! - [`cache`]: [`Secrets`], values cached for a TTL, refreshed in the background, and
//!   watchers told when a value changed (a rotated password picked up without a restart).
//! - [`settings`]: secret settings given as references, resolved before services read them.
//! - [`envelope`]: field encryption at rest — AES-256-GCM with a data key per value, wrapped
//!   by a versioned master key (SEC-12).
//!
//! Errors name the reference that failed, never a value.

#[cfg(feature = "aws")]
pub mod aws;
pub mod cache;
pub mod envelope;
pub mod provider;
pub mod reference;
pub mod settings;
#[cfg(feature = "testing")]
pub mod testing;

pub use cache::Secrets;
pub use envelope::{EnvelopeError, MasterKeys};
pub use provider::{AwsSettings, Providers, VaultSettings};
pub use reference::Reference;
pub use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{0:?} is not a secret reference (env:NAME, file:/path, vault:mount/path#key, aws-sm:name#key, aws-kms:ciphertext)"
    )]
    Malformed(String),
    #[error("{reference}: {reason}")]
    Unavailable { reference: String, reason: String },
    #[error("{reference}: not found")]
    NotFound { reference: String },
    #[error("{reference}: the {provider} provider is not configured")]
    NotConfigured {
        reference: String,
        provider: &'static str,
    },
}
