//! What a secret setting names: where its value lives, never the value.

use std::fmt;

use crate::Error;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    /// An environment variable.
    Env(String),
    /// A file's content, without its trailing newline (Docker and Kubernetes secrets).
    File(String),
    /// A key of a Vault KV v2 secret: `vault:<mount>/<path>#<key>`.
    Vault {
        mount: String,
        path: String,
        key: String,
    },
    /// A key of an AWS Secrets Manager JSON secret: `aws-sm:<name>#<key>`.
    AwsSecretsManager { name: String, key: String },
    /// A value encrypted under an AWS KMS key, as `aws kms encrypt` prints it (base64):
    /// `aws-kms:<ciphertext>`. The setting carries the value; only KMS can open it.
    AwsKms(String),
}

impl Reference {
    pub fn parse(text: &str) -> Result<Self, Error> {
        let malformed = || Error::Malformed(text.to_owned());
        let (scheme, rest) = text.split_once(':').ok_or_else(malformed)?;
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned()).ok_or_else(malformed);
        match scheme {
            "env" => Ok(Reference::Env(nonempty(rest)?)),
            "file" if rest.starts_with('/') => Ok(Reference::File(rest.to_owned())),
            "vault" => {
                let (location, key) = rest.split_once('#').ok_or_else(malformed)?;
                let (mount, path) = location.split_once('/').ok_or_else(malformed)?;
                Ok(Reference::Vault {
                    mount: nonempty(mount)?,
                    path: nonempty(path.trim_matches('/'))?,
                    key: nonempty(key)?,
                })
            }
            "aws-sm" => {
                let (name, key) = rest.split_once('#').ok_or_else(malformed)?;
                Ok(Reference::AwsSecretsManager {
                    name: nonempty(name)?,
                    key: nonempty(key)?,
                })
            }
            "aws-kms" => Ok(Reference::AwsKms(nonempty(rest)?)),
            _ => Err(malformed()),
        }
    }
}

/// The reference as it was written: safe to log, it holds no value.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Env(name) => write!(f, "env:{name}"),
            Reference::File(path) => write!(f, "file:{path}"),
            Reference::Vault { mount, path, key } => write!(f, "vault:{mount}/{path}#{key}"),
            Reference::AwsSecretsManager { name, key } => write!(f, "aws-sm:{name}#{key}"),
            Reference::AwsKms(ciphertext) => write!(f, "aws-kms:{ciphertext}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_scheme_parses_and_prints_back() {
        for text in [
            "env:DATABASE_PASSWORD",
            "file:/run/secrets/db",
            "vault:secret/bourse/db#password",
            "aws-sm:bourse/prod#password",
            "aws-kms:AQICAHg=",
        ] {
            assert_eq!(Reference::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            Reference::parse("vault:kv/a/b/c#k").unwrap(),
            Reference::Vault {
                mount: "kv".into(),
                path: "a/b/c".into(),
                key: "k".into()
            }
        );
    }

    #[test]
    fn malformed_references_are_refused() {
        for text in [
            "hunter2",
            "env:",
            "file:relative/path",
            "vault:secret#key",
            "vault:secret/path",
            "vault:secret/path#",
            "aws-sm:name",
            "aws-kms:",
            "ftp:x",
        ] {
            assert!(Reference::parse(text).is_err(), "{text}");
        }
    }
}
