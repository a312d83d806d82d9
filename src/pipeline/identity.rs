//! Identity headers: the values taken from a [`Grant`], under the configured names
//! ([`IdentityHeaders`]). Used by the rewrite phase towards the upstream and by `/verify`'s
//! 200 answer, so both modes send exactly the same identity.
//!
//! The upstream must read exactly the identity that was verified, or nothing: a principal
//! whose identity cannot be written exactly ([`representable`]) is refused at the verify
//! phase (401 `invalid_token`), never forwarded with a header left out. The encoding:
//! - single values as they are: the identifiers an upstream authorizes on (user id, client
//!   id, token id) must be ASCII; name and email are sent in UTF-8. One with a control
//!   character or leading/trailing whitespace (which RFC 9110 field parsing trims: `" admin"`
//!   would read as `admin`) cannot be represented;
//! - scopes space-separated; each must be an RFC 6749 §3.3 `scope-token` (no space, `"` or
//!   `\`), so splitting on spaces gives them back;
//! - groups comma-separated, each item percent-encoded (UTF-8) for `%`, `,`, `"`, `\`,
//!   control characters, non-ASCII and whitespace at its ends ([`encode_list`]), so the header
//!   is plain ASCII and no list parser sees quotes: split on `,` and percent-decode each item
//!   ([`decode_list`]) to get the exact names back. An empty group name cannot be
//!   represented (list parsers drop empty items).

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::policy::Grant;
use crate::auth::Principal;
use crate::model::identity::{is_scope_token, IdentityHeaders};

// The request-time half of the compiled names (`model::identity`): setting them. Removing
// what a client sent under them is phase 9's strip (`rewrite`).
impl IdentityHeaders {
    /// Sets the identity of `grant`, which [`encoded`] accepted at the verify phase.
    pub fn set(&self, grant: &Grant, headers: &mut HeaderMap) {
        self.each_field(grant, |name, value| {
            // A clone shares the encoded bytes.
            headers.insert(name.clone(), value.clone());
        });
    }

    /// Calls `field` with each identity field of `grant` (the names with a value), as
    /// [`Self::set`] sets them.
    pub fn each_field<'a>(
        &'a self,
        grant: &'a Grant,
        mut field: impl FnMut(&'a HeaderName, &'a HeaderValue),
    ) {
        let Ok(values) = encoded(grant.principal()) else {
            return;
        };
        for (name, value) in self.names().into_iter().zip(values) {
            if let Some(value) = value {
                field(name, value);
            }
        }
    }
}

/// The identity header values of `principal` in the order of [`IdentityHeaders::names`]
/// (`None` where there is nothing to send), or why its identity cannot be sent exactly
/// ([`representable`]). Checked and encoded once per principal, kept with it.
pub fn encoded(principal: &Principal) -> Result<&[Option<HeaderValue>; 8], &'static str> {
    principal
        .identity_values
        .get_or_init(|| representable(principal).map(|()| identity_values(principal)))
        .as_ref()
        .map_err(|reason| *reason)
}

/// The values of the identity headers, in the order of [`IdentityHeaders::names`].
fn identity_values(principal: &Principal) -> [Option<HeaderValue>; 8] {
    let value = |value: Option<&str>| {
        value
            .filter(|v| !v.is_empty())
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
    };
    [
        value(Some(&principal.subject)),
        value(principal.name.as_deref()),
        value(principal.email.as_deref()),
        value(Some(&encode_list(&principal.groups))),
        value(Some(&principal.scopes.join(" "))),
        value(principal.client_id.as_deref()),
        value(Some(principal.method.as_str())),
        value(principal.token_id.as_deref()),
    ]
}

/// Whether every part of `principal`'s identity can be sent exactly (see the module docs);
/// the reason it cannot, for the audit event and the `error_description`.
pub fn representable(principal: &Principal) -> Result<(), &'static str> {
    if principal.subject.is_empty() {
        return Err("the token has an empty subject");
    }
    for value in [
        Some(principal.subject.as_str()),
        principal.name.as_deref(),
        principal.email.as_deref(),
        principal.client_id.as_deref(),
        principal.token_id.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        check_single(value)?;
    }
    // Identifiers an upstream authorizes on must read the same whatever charset it decodes
    // header bytes with (Node, Starlette and servlets use Latin-1): ASCII only.
    for id in [
        Some(principal.subject.as_str()),
        principal.client_id.as_deref(),
        principal.token_id.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        if !id.is_ascii() {
            return Err("a subject, client id or token id is not ASCII and cannot be sent to the upstream exactly");
        }
    }
    if !principal.scopes.iter().all(|scope| is_scope_token(scope)) {
        return Err("a scope is not an RFC 6749 scope-token and cannot be sent to the upstream");
    }
    if principal.groups.iter().any(String::is_empty) {
        return Err("an empty group name cannot be sent to the upstream");
    }
    Ok(())
}

/// A single identity value as a header value: no control characters, no whitespace at its
/// ends.
pub fn check_single(value: &str) -> Result<(), &'static str> {
    if value.bytes().any(|b| b.is_ascii_control()) {
        return Err(
            "an identity claim contains a control character and cannot be sent to the upstream",
        );
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Err("an identity claim has leading or trailing whitespace and cannot be sent to the upstream");
    }
    Ok(())
}

/// Groups as one header value: items joined with `,`, each percent-encoded (UTF-8) for `%`,
/// `,`, `"`, `\`, control characters, non-ASCII, and a space or tab at its start or end.
pub fn encode_list(items: &[String]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let last = item.len().saturating_sub(1);
        for (at, ch) in item.char_indices() {
            let edge_space = (at == 0 || at == last) && (ch == ' ' || ch == '\t');
            let special = matches!(ch, '%' | ',' | '"' | '\\') || ch.is_ascii_control();
            if special || edge_space || !ch.is_ascii() {
                let mut utf8 = [0u8; 4];
                for byte in ch.encode_utf8(&mut utf8).bytes() {
                    let _ = write!(out, "%{byte:02X}");
                }
            } else {
                out.push(ch);
            }
        }
    }
    out
}

/// The inverse of [`encode_list`] (what an upstream does to read the groups).
pub fn decode_list(value: &str) -> Vec<String> {
    if value.is_empty() {
        return Vec::new();
    }
    value
        .split(',')
        .map(|item| {
            percent_encoding::percent_decode_str(item)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn list_encoding_table() {
        let cases: [(&[&str], &str); 7] = [
            (&["admins", "dev ops"], "admins,dev ops"),
            (&["a,b"], "a%2Cb"),
            (&[" admin"], "%20admin"),
            (&["admin "], "admin%20"),
            (&["100%"], "100%25"),
            (&["é"], "%C3%A9"),
            (&["\"admin\""], "%22admin%22"),
        ];
        for (items, want) in cases {
            let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
            assert_eq!(encode_list(&items), want);
            assert_eq!(decode_list(want), items);
        }
    }

    #[test]
    fn single_values() {
        assert!(check_single("alice").is_ok());
        assert!(check_single("José Núñez").is_ok());
        assert!(check_single("alice\u{7}").is_err());
        assert!(check_single("alice\r\nX-Admin: 1").is_err());
        assert!(check_single(" admin").is_err());
        assert!(check_single("admin\t").is_err());
    }

    proptest! {
        /// Groups round-trip exactly through the header: encode, make a header value, split
        /// and decode as the upstream would.
        #[test]
        fn groups_round_trip(items in prop::collection::vec("\\PC{1,12}|[ ,%\t\u{1}a-z]{1,6}", 0..5)) {
            let encoded = encode_list(&items);
            prop_assert!(HeaderValue::from_str(&encoded).is_ok(), "{encoded:?}");
            prop_assert!(!encoded.contains('"') && !encoded.contains('\\'));
            prop_assert_eq!(decode_list(&encoded), items);
        }
    }
}
