//! The claims of a Bourse access token.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::roles::Role;

/// Registered claims (RFC 7519) plus the caller's roles. Tokens are short-lived, so roles in the
/// token are trusted until `exp`; a role change takes effect at the next refresh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: Uuid,
    pub roles: Vec<Role>,
}
