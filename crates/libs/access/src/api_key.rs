//! What an API key may do (SEC-19): one type for auth, which stores a key's scopes, and the
//! gateway, which checks them on every signed request.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApiKeyScope {
    /// Reads (GET) a trader may make, the WebSocket stream included.
    Read,
    /// Placing and cancelling orders.
    Trade,
    /// Withdrawals.
    Withdraw,
}

impl ApiKeyScope {
    pub const ALL: [ApiKeyScope; 3] =
        [ApiKeyScope::Read, ApiKeyScope::Trade, ApiKeyScope::Withdraw];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiKeyScope::Read => "read",
            ApiKeyScope::Trade => "trade",
            ApiKeyScope::Withdraw => "withdraw",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_reads_back_as_it_is_written() {
        for scope in ApiKeyScope::ALL {
            assert_eq!(ApiKeyScope::parse(scope.as_str()), Some(scope));
            assert_eq!(serde_json::to_value(scope).unwrap(), scope.as_str());
        }
        assert_eq!(ApiKeyScope::parse("admin"), None);
    }
}
