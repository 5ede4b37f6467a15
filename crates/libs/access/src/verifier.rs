//! Access-token verification (SEC-03).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use jsonwebtoken::{Algorithm, Validation, decode, decode_header};

use serde::de::DeserializeOwned;

use crate::claims::{Claims, ServiceClaims};
use crate::jwks::{JwksCache, KeyLookupError};

/// Why a token was refused. Clients only ever learn "invalid token"; the variant is for logs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("no bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("token has no kid")]
    MissingKid,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("token rejected: {0}")]
    Rejected(String),
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(String),
}

/// The claims a verifier can check: a user's access token ([`Claims`], the default) or a
/// service token ([`ServiceClaims`]).
pub trait TokenClaims: DeserializeOwned + Clone + Send + Sync + 'static {
    /// The claims that must be present besides the signature.
    const REQUIRED: &'static [&'static str];
    /// Expiry, seconds since the epoch.
    fn expires_at(&self) -> u64;
}

impl TokenClaims for Claims {
    const REQUIRED: &'static [&'static str] = &["exp", "nbf", "iss", "aud", "sub"];
    fn expires_at(&self) -> u64 {
        self.exp
    }
}

impl TokenClaims for ServiceClaims {
    const REQUIRED: &'static [&'static str] = &["exp", "nbf", "iss", "aud", "sub", "scope"];
    fn expires_at(&self) -> u64 {
        self.exp
    }
}

/// Verifies one kind of token for one audience. Users' tokens and service tokens differ in
/// their audience (`bourse` vs the called service's name) and in their claims, so neither
/// ever passes for the other.
pub struct TokenVerifier<C: TokenClaims = Claims> {
    keys: JwksCache,
    validation: Validation,
    verified: Mutex<HashMap<[u8; 32], Verified<C>>>,
}

/// A token that passed every check, remembered so a client's next request with the same
/// token costs a hash instead of a signature verification (PRF-04).
#[derive(Clone)]
struct Verified<C> {
    claims: C,
    until: Instant,
}

/// Verified tokens remembered at most this long, so removing a compromised key from the JWKS
/// takes effect within a minute even for tokens seen before.
const REMEMBER_FOR: Duration = Duration::from_secs(60);
/// Memory bound: beyond it the cache starts over (cheap, and rare with 15-minute tokens).
const REMEMBER_AT_MOST: usize = 100_000;

impl<C: TokenClaims> TokenVerifier<C> {
    pub fn new(keys: JwksCache, issuer: &str, audience: &str) -> Self {
        // EdDSA only: the allowed algorithm is fixed here, never taken from the token, which is
        // what defeats `alg=none` and HS256-with-the-public-key confusion.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(C::REQUIRED);
        validation.validate_nbf = true;
        validation.leeway = 5;
        Self {
            keys,
            validation,
            verified: Mutex::new(HashMap::new()),
        }
    }

    pub fn into_shared(self) -> Arc<Self> {
        Arc::new(self)
    }

    pub async fn verify(&self, token: &str) -> Result<C, VerifyError> {
        let fingerprint: [u8; 32] = digest(&SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        if let Some(claims) = self.remembered(&fingerprint) {
            return Ok(claims);
        }
        let claims = self.verify_uncached(token).await?;
        self.remember(fingerprint, &claims);
        Ok(claims)
    }

    fn remembered(&self, fingerprint: &[u8; 32]) -> Option<C> {
        let verified = self.verified.lock().ok()?;
        let entry = verified.get(fingerprint)?;
        (Instant::now() < entry.until).then(|| entry.claims.clone())
    }

    fn remember(&self, fingerprint: [u8; 32], claims: &C) {
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let until = Instant::now() + remember_for(claims.expires_at(), now_unix);
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= REMEMBER_AT_MOST {
                verified.clear();
            }
            verified.insert(
                fingerprint,
                Verified {
                    claims: claims.clone(),
                    until,
                },
            );
        }
    }

    /// Header, key, signature and claims: the full check, bypassing the memory of verified
    /// tokens (what [`TokenVerifier::verify`] does on a first sight; benchmarks call it too).
    pub async fn verify_uncached(&self, token: &str) -> Result<C, VerifyError> {
        let header = decode_header(token).map_err(|_| VerifyError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(VerifyError::AlgorithmNotAllowed);
        }
        let kid = header.kid.ok_or(VerifyError::MissingKid)?;
        let key = self.keys.key(&kid).await.map_err(|e| match e {
            KeyLookupError::Unknown => VerifyError::UnknownKey,
            KeyLookupError::Unavailable(reason) => VerifyError::KeysUnavailable(reason),
        })?;
        decode::<C>(token, &key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| VerifyError::Rejected(e.to_string()))
    }
}

/// How long a token verified at `now_unix` may be remembered: never past its expiry, never
/// longer than [`REMEMBER_FOR`].
fn remember_for(exp: u64, now_unix: u64) -> Duration {
    Duration::from_secs(exp.saturating_sub(now_unix)).min(REMEMBER_FOR)
}

/// Where tokens come from and what they must say: every service that checks tokens reads the
/// same three settings (`BOURSE_AUTH_URL`, `BOURSE_JWT_ISSUER`, `BOURSE_JWT_AUDIENCE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSettings {
    /// Base URL of auth, without a trailing slash: its JWKS, and service tokens.
    pub url: String,
    pub issuer: String,
    /// The audience of users' access tokens.
    pub audience: String,
}

impl AuthSettings {
    pub fn read(env: &mut service_kit::Env) -> Self {
        let url: String = env.or("BOURSE_AUTH_URL", "http://127.0.0.1:8081".to_owned());
        // The keys are fetched from one address; auth's replicas stand behind one name.
        if url.contains(',') {
            env.problem(
                "BOURSE_AUTH_URL",
                "must be one URL: put auth's replicas behind one name",
            );
        }
        Self {
            url: url.trim_end_matches('/').to_owned(),
            issuer: env.or("BOURSE_JWT_ISSUER", "bourse-auth".to_owned()),
            audience: env.or("BOURSE_JWT_AUDIENCE", "bourse".to_owned()),
        }
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.url)
    }
}

/// What a service behind the gateway checks tokens with: users' access tokens (the audience
/// of [`AuthSettings`]) and service tokens minted for `service` by name, both against auth's
/// JWKS.
pub struct Verifiers {
    pub users: Arc<TokenVerifier>,
    pub services: Arc<TokenVerifier<crate::ServiceClaims>>,
}

impl Verifiers {
    pub fn from_auth(client: &reqwest::Client, auth: &AuthSettings, service: &str) -> Self {
        let keys = || {
            JwksCache::new(Arc::new(crate::HttpKeySource::new(
                client.clone(),
                auth.jwks_url(),
            )))
        };
        Self {
            users: TokenVerifier::new(keys(), &auth.issuer, &auth.audience).into_shared(),
            services: TokenVerifier::new(keys(), &auth.issuer, service).into_shared(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_never_remembered_past_its_expiry_nor_longer_than_a_minute() {
        assert_eq!(remember_for(1_000, 990), Duration::from_secs(10));
        assert_eq!(remember_for(1_000, 1_000), Duration::ZERO);
        assert_eq!(
            remember_for(1_000, 2_000),
            Duration::ZERO,
            "already expired"
        );
        assert_eq!(remember_for(10_000, 1_000), REMEMBER_FOR);
    }

    #[test]
    fn auth_is_given_one_address_not_a_list_of_replicas() {
        let mut env = service_kit::Env::from_pairs([("BOURSE_AUTH_URL", "http://a:1,http://b:1")]);
        AuthSettings::read(&mut env);
        let refused = env
            .finish()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(refused.contains("BOURSE_AUTH_URL"), "{refused}");

        let mut env = service_kit::Env::from_pairs([("BOURSE_AUTH_URL", "http://auth:8081/")]);
        assert_eq!(AuthSettings::read(&mut env).url, "http://auth:8081");
        assert!(env.finish().is_ok());
    }
}
