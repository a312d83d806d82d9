//! The verified caller: what every later phase (policy, header injection, audit) reads.

use std::fmt;

/// Which configured verifier vouched for a principal. A cached principal is only reused on a
/// route that accepts the same verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerifierId {
    ApiKeys,
    Issuer(usize),
    Introspection(usize),
}

/// How the caller authenticated; sent upstream as `X-Auth-Method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ApiKey,
    Jwt,
    Introspection,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Introspection => "introspection",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A caller whose credential has been verified. Carries no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    pub client_id: Option<String>,
    pub token_id: Option<String>,
    pub issuer: Option<String>,
    pub method: AuthMethod,
    pub verifier: VerifierId,
    /// Token audiences (RFC 8707 resource identifiers or IdP audience strings). `None` for
    /// API keys, which are not audience-bound.
    pub audiences: Option<Vec<String>>,
    /// The token carried an audience the issuer configuration accepts on every route.
    pub issuer_audience_matched: bool,
    /// Expiry as seconds since the Unix epoch, when the credential has one.
    pub expires_at: Option<u64>,
    /// An API key's own tool list (`[[api_keys]] tools`): a hard limit on `tools/call`.
    pub tools: Option<std::sync::Arc<Vec<crate::glob::Glob>>>,
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it): the unit of `exp`.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
