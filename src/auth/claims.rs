//! Mapping token claims (JWT payload or introspection response) to a [`Principal`](super::Principal).
//! Claim names are configurable and may be dotted paths (`realm_access.roles`).

use serde_json::{Map, Value};

/// Configured claim names.
#[derive(Debug, Clone)]
pub struct ClaimMapping {
    pub subject: String,
    pub name: String,
    pub email: String,
    pub groups: String,
    /// The scope claim: a space-separated string (`scope`, RFC 9068) or an array (`scp`).
    /// `scp` is also read when the configured claim is absent.
    pub scope: String,
    /// Client id claim; `azp` is read when it is absent.
    pub client_id: String,
}

/// Claims common to JWTs and introspection, extracted once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StandardClaims {
    pub subject: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    pub client_id: Option<String>,
    pub token_id: Option<String>,
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub expires_at: Option<u64>,
}

/// A claim by name; a name that is not a top-level claim is read as a dotted path into
/// nested objects (`realm_access.roles`). The literal name wins, so namespaced claims that
/// contain dots (Auth0's `https://example.com/roles`) work as they are.
fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// A claim as text: a non-empty string, or an integer (numeric ids). Other numbers are not
/// identities: past 64 bits serde_json reads them as floats, and `1e+22` would name every
/// user whose id rounds to it.
fn string(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// A string list from an array of strings or one space-separated string.
fn list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        // Numbers count as their decimal text (numeric group ids); empty strings name
        // nothing and are skipped.
        Some(Value::Array(items)) => items.iter().filter_map(|item| string(Some(item))).collect(),
        _ => Vec::new(),
    }
}

impl ClaimMapping {
    pub fn extract(&self, claims: &Map<String, Value>) -> StandardClaims {
        let mut scopes = list(lookup(claims, &self.scope));
        if scopes.is_empty() {
            scopes = list(claims.get("scp"));
        }
        scopes.sort();
        scopes.dedup();
        let client_id =
            string(lookup(claims, &self.client_id)).or_else(|| string(claims.get("azp")));
        StandardClaims {
            subject: string(lookup(claims, &self.subject)),
            name: string(lookup(claims, &self.name)),
            email: string(lookup(claims, &self.email)),
            groups: list(lookup(claims, &self.groups)),
            scopes,
            client_id,
            token_id: string(claims.get("jti")),
            issuer: string(claims.get("iss")),
            audiences: match claims.get("aud") {
                Some(Value::String(s)) => vec![s.clone()],
                other => list(other),
            },
            // NumericDate may carry a fraction (RFC 7519 §2); it is never rounded up.
            expires_at: claims.get("exp").and_then(|exp| {
                exp.as_u64()
                    .or_else(|| exp.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping() -> ClaimMapping {
        ClaimMapping {
            subject: "sub".into(),
            name: "name".into(),
            email: "email".into(),
            groups: "realm_access.roles".into(),
            scope: "scope".into(),
            client_id: "client_id".into(),
        }
    }

    #[test]
    fn extracts_scope_string_scp_array_and_nested_groups() {
        let claims = json!({
            "sub": "u1", "scope": "b a  a", "aud": "https://gw/mcp",
            "realm_access": {"roles": ["admin", "dev"]}, "azp": "client-1", "exp": 10
        });
        let got = mapping().extract(claims.as_object().unwrap());
        assert_eq!(got.scopes, vec!["a", "b"]);
        assert_eq!(got.groups, vec!["admin", "dev"]);
        assert_eq!(got.client_id.as_deref(), Some("client-1"));
        assert_eq!(got.audiences, vec!["https://gw/mcp"]);
        assert_eq!(got.expires_at, Some(10));

        let claims = json!({
            "sub": 7, "scp": ["x", "y"], "aud": ["a", "b"],
            "realm_access.roles": ["literal", 42, ""],
        });
        let got = mapping().extract(claims.as_object().unwrap());
        assert_eq!(got.subject.as_deref(), Some("7"));
        assert_eq!(got.scopes, vec!["x", "y"]);
        assert_eq!(got.audiences, vec!["a", "b"]);
        assert_eq!(
            got.groups,
            vec!["literal", "42"],
            "a literal dotted name wins"
        );

        // Numbers beyond 64 bits are floats to serde_json: not an identity.
        let claims: Map<String, Value> =
            serde_json::from_str(r#"{"sub": 10000000000000000000001}"#).unwrap();
        assert_eq!(mapping().extract(&claims).subject, None);
    }
}
