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
    /// Set when the gateway had this token minted for a request signed with an API key (SEC-19):
    /// the key's `key_id`. Services see who acted and through which key (audit), and auth
    /// refuses key management to it — a key cannot create keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// A service token (SEC-14): one service calling another, issued by auth to a registered client
/// for one audience — the called service — with the scopes the client is granted there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceClaims {
    pub iss: String,
    /// The called service, e.g. `risk`.
    pub aud: String,
    /// `service:<client>`, e.g. `service:orders`.
    pub sub: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: Uuid,
    /// Space-separated (RFC 8693 §4.2), e.g. `risk:check`.
    pub scope: String,
}

impl ServiceClaims {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|granted| granted == scope)
    }

    /// The calling service's name.
    pub fn client(&self) -> &str {
        self.sub.strip_prefix("service:").unwrap_or(&self.sub)
    }
}
