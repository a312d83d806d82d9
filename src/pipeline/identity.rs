//! Identity headers: the names (configurable) and the values taken from a [`Grant`].
//! Used by the rewrite phase towards the upstream and by `/verify`'s 200 answer, so both
//! modes send exactly the same identity.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::policy::Grant;
use super::transport::dashed;

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

    /// Removes every header carrying one of our names (spoofing), whatever its case or count,
    /// and look-alikes spelled with `_` or `.` for `-` (`X_User_Id`): CGI-style servers
    /// (WSGI, Rack) read `X_User_Id` and `X-User-Id` as the same variable. Returns how many
    /// were removed, for the debug log.
    pub fn strip(&self, headers: &mut HeaderMap) -> usize {
        strip_names(headers, &self.names())
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

/// Removes `names` and their `_` / `.` look-alikes from `headers`; returns the count removed.
pub fn strip_names(headers: &mut HeaderMap, names: &[&HeaderName]) -> usize {
    let lookalikes: Vec<HeaderName> = headers
        .keys()
        .filter(|key| key.as_str().contains(['_', '.']))
        .filter(|key| {
            let dashed = dashed(key.as_str());
            names.iter().any(|name| name.as_str() == dashed)
        })
        .cloned()
        .collect();
    let mut removed = 0;
    for name in names.iter().copied().chain(lookalikes.iter()) {
        if let http::header::Entry::Occupied(entry) = headers.entry(name) {
            removed += entry.remove_entry_mult().1.count();
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_names_and_lookalikes_only() {
        let mut headers = HeaderMap::new();
        for name in [
            "x-user-id",
            "X-User-Id",
            "x_user_id",
            "x.user.id",
            "x-user-idx",
            "x_other",
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        let user_id = HeaderName::from_static("x-user-id");
        assert_eq!(strip_names(&mut headers, &[&user_id]), 4);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["x-user-idx", "x_other"]);
    }
}
