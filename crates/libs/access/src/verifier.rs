//! Access-token verification (SEC-03).

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation, decode, decode_header};

use crate::claims::Claims;
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

pub struct TokenVerifier {
    keys: JwksCache,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(keys: JwksCache, issuer: &str, audience: &str) -> Self {
        // EdDSA only: the allowed algorithm is fixed here, never taken from the token, which is
        // what defeats `alg=none` and HS256-with-the-public-key confusion.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        Self { keys, validation }
    }

    pub fn into_shared(self) -> Arc<Self> {
        Arc::new(self)
    }

    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let header = decode_header(token).map_err(|_| VerifyError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(VerifyError::AlgorithmNotAllowed);
        }
        let kid = header.kid.ok_or(VerifyError::MissingKid)?;
        let key = self.keys.key(&kid).await.map_err(|e| match e {
            KeyLookupError::Unknown => VerifyError::UnknownKey,
            KeyLookupError::Unavailable(reason) => VerifyError::KeysUnavailable(reason),
        })?;
        decode::<Claims>(token, &key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| VerifyError::Rejected(e.to_string()))
    }
}
