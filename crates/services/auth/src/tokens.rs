//! Access and refresh tokens (SEC-03, SEC-04).

use std::time::{SystemTime, UNIX_EPOCH};

use access::{Claims, Role, ServiceClaims};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header, encode};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::config::TokenSettings;
use crate::error::{Error, Result};
use crate::signing_keys::ActiveKey;

/// A signed, short-lived access token; `api_key` when the gateway has it minted for a request
/// signed with that key.
pub fn sign_access_token(
    key: &ActiveKey,
    settings: &TokenSettings,
    user_id: Uuid,
    roles: Vec<Role>,
    api_key: Option<String>,
) -> Result<SecretString> {
    let now = now()?;
    let claims = Claims {
        iss: settings.issuer.clone(),
        aud: settings.audience.clone(),
        sub: user_id,
        exp: now + settings.access_ttl.as_secs(),
        nbf: now,
        iat: now,
        jti: Uuid::now_v7(),
        roles,
        api_key,
    };
    sign(key, &claims)
}

/// A signed service token: `client` calling `audience` with `scope` (SEC-14).
pub fn sign_service_token(
    key: &ActiveKey,
    issuer: &str,
    client: &str,
    audience: &str,
    scope: String,
    ttl: std::time::Duration,
) -> Result<SecretString> {
    let now = now()?;
    let claims = ServiceClaims {
        iss: issuer.to_owned(),
        aud: audience.to_owned(),
        sub: format!("service:{client}"),
        exp: now + ttl.as_secs(),
        nbf: now,
        iat: now,
        jti: Uuid::now_v7(),
        scope,
    };
    sign(key, &claims)
}

fn now() -> Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::Internal("clock before 1970".to_owned()))?
        .as_secs())
}

fn sign(key: &ActiveKey, claims: &impl serde::Serialize) -> Result<SecretString> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    encode(&header, claims, &key.encoding)
        .map(SecretString::from)
        .map_err(|e| Error::Internal(format!("signing a token: {e}")))
}

/// A new opaque refresh token: 256 random bits, URL-safe.
pub fn new_refresh_token() -> Result<SecretString> {
    random_url_safe(32).map(SecretString::from)
}

/// `bytes` random bytes from the system RNG, as URL-safe base64 without padding (refresh
/// tokens, API key ids and secrets).
pub fn random_url_safe(bytes: usize) -> Result<String> {
    let mut buffer = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buffer)
        .map_err(|_| Error::Internal("system RNG failed".to_owned()))?;
    Ok(URL_SAFE_NO_PAD.encode(buffer))
}

/// What is stored in place of a refresh token. A fast hash is right here: the token has 256
/// bits of entropy, so there is nothing to brute-force.
pub fn refresh_token_hash(token: &SecretString) -> Vec<u8> {
    digest(&SHA256, token.expose_secret().as_bytes())
        .as_ref()
        .to_vec()
}
