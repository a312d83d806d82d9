//! RFC 8707 resource identifiers as audiences: canonical comparison.
//!
//! Canonical form (MCP authorization, "Canonical Server URI"): lowercase scheme and host,
//! default port dropped, a single trailing `/` ignored, no fragment. Strings that are not
//! http(s) URLs (IdP API identifiers like `api://corp-mcp`) are compared exactly.

/// Canonicalizes an audience or resource identifier.
pub fn canonical(identifier: &str) -> String {
    let Some((scheme, rest)) = identifier.split_once("://") else {
        return identifier.to_string();
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return identifier.to_string();
    }
    let rest = rest.split('#').next().unwrap_or("");
    let (authority, path_and_query) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let mut authority = authority.to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    if authority.ends_with(default_port) {
        authority.truncate(authority.len() - default_port.len());
    }
    let path_and_query = match path_and_query.strip_suffix('/') {
        Some(stripped) if !stripped.contains('?') => stripped,
        _ => path_and_query,
    };
    format!("{scheme}://{authority}{path_and_query}")
}

/// Whether a token audience (canonical) grants access to the required resource (canonical):
/// exactly equal. A parent resource does *not* cover its children: a token for
/// `https://gw` must not open `https://gw/admin` (MCP authorization: a server accepts only
/// tokens issued for itself). Routes that should accept more list them in `audiences`.
pub fn covers(token_audience: &str, required: &str) -> bool {
    token_audience == required
}

/// Any of the token's audiences covers any of the required ones.
pub fn any_covers(token_audiences: &[String], required: &[String]) -> bool {
    token_audiences
        .iter()
        .any(|aud| required.iter().any(|req| covers(aud, req)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_table() {
        let cases = [
            ("https://GW.example.com/mcp", "https://gw.example.com/mcp"),
            (
                "HTTPS://gw.example.com:443/mcp/",
                "https://gw.example.com/mcp",
            ),
            ("http://gw:80", "http://gw"),
            ("http://gw:8080/", "http://gw:8080"),
            ("https://gw/mcp#frag", "https://gw/mcp"),
            ("https://gw/Mcp", "https://gw/Mcp"),
            ("api://corp-mcp", "api://corp-mcp"),
            ("my-audience", "my-audience"),
        ];
        for (input, want) in cases {
            assert_eq!(canonical(input), want, "{input}");
        }
    }

    #[test]
    fn covers_table() {
        let cases = [
            ("https://gw/mcp", "https://gw/mcp", true),
            ("https://gw", "https://gw/mcp", false),
            ("https://gw/mcp", "https://gw/mcpx", false),
            ("https://gw/mc", "https://gw/mcp", false),
            ("https://gw/mcp/a", "https://gw/mcp", false),
            ("https://evil", "https://evil.gw/mcp", false),
            ("api://x", "api://x/y", false),
            ("http://gw", "https://gw/mcp", false),
        ];
        for (aud, required, want) in cases {
            assert_eq!(covers(aud, required), want, "{aud} vs {required}");
        }
    }
}
