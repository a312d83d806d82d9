//! What MCP clients discover: the RFC 9728 Protected Resource Metadata document and the
//! RFC 6750 §3 `WWW-Authenticate` challenge that points to it.
//!
//! Every URL here comes from the configured `public_url`, never from the request's `Host`
//! (RFC 9728 §3.3: `resource` must equal the identifier the client used, and a header an
//! attacker controls must not choose where clients send their tokens).

use std::sync::Arc;

use http::HeaderValue;
use serde::Serialize;

/// Well-known path prefix (RFC 9728 §3).
pub const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// RFC 9728 §2. Empty members are omitted (§3.2: zero-valued parameters are left out).
#[derive(Debug, Serialize)]
pub struct ProtectedResourceMetadata {
    pub resource: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authorization_servers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
    pub bearer_methods_supported: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
}

/// The parts of a route's challenge that do not depend on the failure.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub resource_metadata: Arc<str>,
    /// Scopes the route requires (space separated), if any.
    pub scope: Option<Arc<str>>,
}

/// RFC 6750 §3.1 error codes used by a protected resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    InvalidRequest,
    InvalidToken,
    InsufficientScope,
}

impl BearerError {
    pub fn code(self) -> &'static str {
        match self {
            BearerError::InvalidRequest => "invalid_request",
            BearerError::InvalidToken => "invalid_token",
            BearerError::InsufficientScope => "insufficient_scope",
        }
    }
}

impl Challenge {
    /// Builds `Bearer resource_metadata="…", scope="…", error="…", error_description="…"`.
    /// Order and quoting follow what the MCP SDKs parse (first match of `name=` wins, so the
    /// description goes last and never contains `=` or quotes; empty values are omitted).
    pub fn header(&self, error: Option<(BearerError, &str)>) -> HeaderValue {
        let mut value = format!("Bearer resource_metadata=\"{}\"", self.resource_metadata);
        if let Some(scope) = &self.scope {
            value.push_str(&format!(", scope=\"{scope}\""));
        }
        if let Some((error, description)) = error {
            value.push_str(&format!(", error=\"{}\"", error.code()));
            let description = sanitize_description(description);
            if !description.is_empty() {
                value.push_str(&format!(", error_description=\"{description}\""));
            }
        }
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }
}

/// RFC 6750 §3: error_description is limited to printable ASCII without `"` and `\`; we also
/// drop `=` so SDK regexes cannot mistake part of it for a parameter.
fn sanitize_description(text: &str) -> String {
    text.chars()
        .filter(|c| (' '..='~').contains(c) && !matches!(c, '"' | '\\' | '='))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_order_and_omissions() {
        let challenge = Challenge {
            resource_metadata: "https://gw/.well-known/oauth-protected-resource/mcp".into(),
            scope: Some("mcp:tools".into()),
        };
        assert_eq!(
            challenge.header(None),
            "Bearer resource_metadata=\"https://gw/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:tools\""
        );
        assert_eq!(
            challenge.header(Some((BearerError::InvalidToken, "bad \"x=y\" token"))),
            "Bearer resource_metadata=\"https://gw/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:tools\", error=\"invalid_token\", error_description=\"bad xy token\""
        );
        let no_scope = Challenge {
            resource_metadata: "https://gw/.well-known/oauth-protected-resource".into(),
            scope: None,
        };
        assert!(!no_scope.header(None).to_str().unwrap().contains("scope"));
    }
}
