//! Passwords (SEC-01): argon2id with OWASP parameters, hashed off the async runtime with a
//! concurrency bound, rehashed transparently when the parameters change.

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use secrecy::{ExposeSecret, SecretString};
use service_kit::Env;
use service_kit::http::FieldError;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::error::{Error, Result};

pub const MIN_PASSWORD_CHARS: usize = 12;
/// Hashing cost grows with input length; beyond this a "password" is an attack.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// argon2id cost parameters. Defaults are OWASP's 2023 recommendation (m=19 MiB, t=2, p=1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Argon2Settings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at the same time, at most. A login flood waits for a permit instead of
    /// occupying every blocking thread and all memory.
    pub max_concurrent: usize,
}

impl Default for Argon2Settings {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            max_concurrent: 4,
        }
    }
}

impl Argon2Settings {
    pub fn read(env: &mut Env) -> Self {
        let defaults = Self::default();
        let settings = Self {
            memory_kib: env.or("BOURSE_AUTH_ARGON2_MEMORY_KIB", defaults.memory_kib),
            iterations: env.or("BOURSE_AUTH_ARGON2_ITERATIONS", defaults.iterations),
            parallelism: env.or("BOURSE_AUTH_ARGON2_PARALLELISM", defaults.parallelism),
            max_concurrent: env.or("BOURSE_AUTH_ARGON2_MAX_CONCURRENT", defaults.max_concurrent),
        };
        if settings.params().is_err() {
            env.problem(
                "BOURSE_AUTH_ARGON2_MEMORY_KIB",
                "argon2 parameters are out of range",
            );
        }
        if settings.max_concurrent == 0 {
            env.problem(
                "BOURSE_AUTH_ARGON2_MAX_CONCURRENT",
                "must be greater than zero",
            );
        }
        settings
    }

    fn params(&self) -> Result<Params, argon2::Error> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
    }
}

/// The outcome of checking a password.
#[derive(Debug, PartialEq, Eq)]
pub enum Verification {
    Mismatch,
    Match,
    /// Correct, but hashed with other parameters: store a fresh hash.
    MatchNeedsRehash,
}

#[derive(Clone)]
pub struct Passwords {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// Verified against when the email is unknown, so a login for a missing account costs the
    /// same as one for a real account (no enumeration by timing).
    dummy_hash: Arc<str>,
}

impl Passwords {
    pub fn new(settings: &Argon2Settings) -> Result<Self> {
        let params = settings
            .params()
            .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = argon2
            .hash_password(b"no account has this password")
            .map_err(|e| Error::Internal(format!("argon2: {e}")))?
            .to_string();
        Ok(Self {
            argon2,
            permits: Arc::new(Semaphore::new(settings.max_concurrent)),
            dummy_hash: Arc::from(dummy_hash),
        })
    }

    /// A PHC string for `password`.
    pub async fn hash(&self, password: &SecretString) -> Result<String> {
        let password = password.clone();
        self.blocking(move |argon2| {
            argon2
                .hash_password(password.expose_secret().as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| Error::Internal(format!("argon2: {e}")))
        })
        .await
    }

    /// Checks `password` against `stored` (or against the dummy hash when there is no account).
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<&str>,
    ) -> Result<Verification> {
        let exists = stored.is_some();
        let stored = stored.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        let password = password.clone();
        let current = self.argon2.params().clone();
        self.blocking(move |argon2| {
            let Ok(parsed) = PasswordHash::new(&stored) else {
                return Ok(Verification::Mismatch);
            };
            let matches = argon2
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok();
            Ok(match (exists && matches, hashed_with(&parsed, &current)) {
                (false, _) => Verification::Mismatch,
                (true, true) => Verification::Match,
                (true, false) => Verification::MatchNeedsRehash,
            })
        })
        .await
    }

    async fn blocking<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Argon2<'static>) -> Result<T> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("password hasher closed".to_owned()))?;
        let argon2 = self.argon2.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            span.in_scope(|| work(&argon2))
        })
        .instrument(tracing::debug_span!("argon2"))
        .await
        .map_err(|e| Error::Internal(format!("hashing task failed: {e}")))?
    }
}

/// Whether `hash` was produced with exactly the current algorithm and parameters.
fn hashed_with(hash: &PasswordHash, current: &Params) -> bool {
    let Ok(params) = Params::try_from(hash) else {
        return false;
    };
    hash.algorithm.as_str() == "argon2id"
        && params.m_cost() == current.m_cost()
        && params.t_cost() == current.t_cost()
        && params.p_cost() == current.p_cost()
}

/// The password policy: 12 characters or more, at most 1 KiB, and not the email address.
pub fn check_policy(email: &str, password: &SecretString) -> Vec<FieldError> {
    let password = password.expose_secret();
    let mut errors = Vec::new();
    let mut fail = |message: &str| {
        errors.push(FieldError {
            field: "password".to_owned(),
            message: message.to_owned(),
        });
    };
    if password.chars().count() < MIN_PASSWORD_CHARS {
        fail("must be at least 12 characters long");
    }
    if password.chars().count() > MAX_PASSWORD_CHARS {
        fail("must be at most 1024 characters long");
    }
    if password.trim().eq_ignore_ascii_case(email.trim()) {
        fail("must not be the email address");
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Settings {
        Argon2Settings {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 2,
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_only_its_own_password() {
        let passwords = Passwords::new(&cheap()).expect("params");
        let secret = SecretString::from("correct horse battery staple");
        let hash = passwords.hash(&secret).await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
        assert_eq!(
            passwords
                .verify(&secret, Some(&hash))
                .await
                .expect("verify"),
            Verification::Match
        );
        let wrong = SecretString::from("correct horse battery stapler");
        assert_eq!(
            passwords.verify(&wrong, Some(&hash)).await.expect("verify"),
            Verification::Mismatch
        );
    }

    #[tokio::test]
    async fn unknown_accounts_never_match_even_the_dummy_password() {
        let passwords = Passwords::new(&cheap()).expect("params");
        let dummy = SecretString::from("no account has this password");
        assert_eq!(
            passwords.verify(&dummy, None).await.expect("verify"),
            Verification::Mismatch
        );
    }

    #[tokio::test]
    async fn a_parameter_change_asks_for_a_rehash() {
        let old = Passwords::new(&cheap()).expect("params");
        let secret = SecretString::from("correct horse battery staple");
        let hash = old.hash(&secret).await.expect("hash");
        let stronger = Passwords::new(&Argon2Settings {
            memory_kib: 2048,
            ..cheap()
        })
        .expect("params");
        assert_eq!(
            stronger.verify(&secret, Some(&hash)).await.expect("verify"),
            Verification::MatchNeedsRehash
        );
    }

    #[test]
    fn the_policy_names_every_broken_rule() {
        let short = check_policy("a@b.co", &SecretString::from("short"));
        assert_eq!(short.len(), 1);
        let email = check_policy(
            "alice@example.com",
            &SecretString::from("Alice@Example.com"),
        );
        assert!(email.iter().any(|e| e.message.contains("email")));
        assert!(check_policy("a@b.co", &SecretString::from("long enough password")).is_empty());
    }
}
