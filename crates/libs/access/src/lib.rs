//! Who is calling, and may they?
//!
//! - [`roles`]: the roles of the platform (SEC-06).
//! - [`api_key`]: the scopes of API keys (SEC-19).
//! - [`claims`]: the access-token claims auth issues and every service checks.
//! - [`jwks`]: a cache of the issuer's public keys, refreshed on an unknown `kid` (rate-limited)
//!   and when stale (PRF-04).
//! - [`verifier`]: EdDSA-only verification with issuer, audience, expiry and not-before checks;
//!   `alg=none`, HMAC/RSA confusion and unknown keys are refused (SEC-03).
//! - [`principal`]: the axum extractor handlers use, and role guards.
//! - [`service`]: service-to-service grants and the extractor of `/internal/*` routes (SEC-14).

pub mod api_key;
pub mod claims;
pub mod jwks;
pub mod principal;
pub mod roles;
pub mod service;
pub mod verifier;

pub use api_key::ApiKeyScope;
pub use claims::{Claims, ServiceClaims};
pub use jwks::{HttpKeySource, JwksCache, KeySource, StaticKeySource};
pub use principal::Principal;
pub use roles::Role;
pub use service::ServicePrincipal;
pub use verifier::{AuthSettings, TokenClaims, TokenVerifier, Verifiers, VerifyError};
