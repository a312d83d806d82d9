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
    /// The identity header values, encoded from the fields above the first time a request
    /// needs them, or why they cannot be sent exactly (`pipeline::identity`): a principal
    /// reused from the token cache is not checked and re-encoded on every request.
    pub identity_values: Derived<Result<[Option<http::HeaderValue>; 8], &'static str>>,
}

/// A value computed once from a principal's fields and kept with it. Not part of the
/// principal: a clone starts empty (a changed copy cannot carry values of the original),
/// and comparisons ignore it.
pub struct Derived<T>(std::sync::OnceLock<T>);

impl<T> Derived<T> {
    pub fn get_or_init(&self, compute: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(compute)
    }
}

impl<T> Default for Derived<T> {
    fn default() -> Self {
        Self(std::sync::OnceLock::new())
    }
}

impl<T> Clone for Derived<T> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Derived<T> {}

impl<T> fmt::Debug for Derived<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Derived")
    }
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

#[cfg(test)]
mod derived_tests {
    use super::Derived;

    #[test]
    fn a_derived_value_is_computed_once_and_a_clone_starts_empty() {
        let derived = Derived::default();
        assert_eq!(*derived.get_or_init(|| 1), 1);
        assert_eq!(*derived.get_or_init(|| 2), 1);
        let copy = derived.clone();
        assert_eq!(*copy.get_or_init(|| 3), 3);
        assert!(derived == copy);
    }
}
