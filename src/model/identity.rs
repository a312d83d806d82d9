//! Identity header names, as configured in `[identity_headers]`, and the RFC 6749 scope-token
//! grammar that decides which scopes the scopes header can carry. The values and how they
//! are written are the pipeline's (`pipeline::identity`).

use http::HeaderName;

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
    /// The `[identity_headers]` keys of [`Self::names`], in the same order.
    pub const KEYS: [&'static str; 8] = [
        "user_id",
        "user_name",
        "user_email",
        "groups",
        "scopes",
        "client_id",
        "method",
        "token_id",
    ];

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
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
pub fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scope_tokens() {
        assert!(is_scope_token("mcp:tools"));
        assert!(!is_scope_token("two words"));
        assert!(!is_scope_token("quote\""));
        assert!(!is_scope_token(""));
    }

    proptest! {
        /// Scopes that are scope-tokens round-trip through the space-joined header.
        #[test]
        fn scopes_round_trip(items in prop::collection::vec("[!#-\\[\\]-~]{1,10}", 0..5)) {
            prop_assert!(items.iter().all(|s| is_scope_token(s)));
            let joined = items.join(" ");
            let back: Vec<String> = joined.split(' ').filter(|s| !s.is_empty()).map(String::from).collect();
            prop_assert_eq!(back, items);
        }
    }
}
