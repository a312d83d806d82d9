//! Identity headers: the names (configurable) and the values taken from a [`Grant`].
//! Used by the rewrite phase towards the upstream and by `/verify`'s 200 answer, so both
//! modes send exactly the same identity.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::policy::Grant;

#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub user_id: HeaderName,
    pub user_name: HeaderName,
    pub user_email: HeaderName,
    pub groups: HeaderName,
    pub scopes: HeaderName,
    pub client_id: HeaderName,
    pub method: HeaderName,
    pub token_id: HeaderName,
}

impl IdentityHeaders {
    pub fn names(&self) -> [&HeaderName; 8] {
        [
            &self.user_id,
            &self.user_name,
            &self.user_email,
            &self.groups,
            &self.scopes,
            &self.client_id,
            &self.method,
            &self.token_id,
        ]
    }

    /// Removes every header carrying one of our names (spoofing), whatever its case or count.
    /// Returns how many were removed, for the debug log.
    pub fn strip(&self, headers: &mut HeaderMap) -> usize {
        let mut removed = 0;
        for name in self.names() {
            if let http::header::Entry::Occupied(entry) = headers.entry(name) {
                removed += entry.remove_entry_mult().1.count();
            }
        }
        removed
    }

    /// Sets the identity of `grant`. Values that cannot be a header value (control
    /// characters in a claim) are left out rather than mangled.
    pub fn set(&self, grant: &Grant, headers: &mut HeaderMap) {
        let principal = grant.principal();
        let mut put = |name: &HeaderName, value: Option<&str>| {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
                    headers.insert(name.clone(), value);
                }
            }
        };
        put(&self.user_id, Some(&principal.subject));
        put(&self.user_name, principal.name.as_deref());
        put(&self.user_email, principal.email.as_deref());
        put(&self.groups, Some(&principal.groups.join(",")));
        put(&self.scopes, Some(&principal.scopes.join(" ")));
        put(&self.client_id, principal.client_id.as_deref());
        put(&self.method, Some(principal.method.as_str()));
        put(&self.token_id, principal.token_id.as_deref());
    }
}
