//! Phase 1 — Route: refuse ambiguous paths, then pick the route by host and longest path
//! prefix. The path we authorize must be the path the upstream sees, so anything a server
//! might decode or normalize differently (`..`, `%2e`, `%2f`, `\`, `//`) is rejected rather
//! than "cleaned up".

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};

use super::rejection::Rejection;
use super::request::RequestView;
use super::transport::{strip_port, HostAllowlist, OriginAllowlist};
use crate::auth::VerifierSet;
use crate::metadata::Challenge;

/// Where a route sends its traffic.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Path prefix on the upstream that replaces the route's path ("" for none).
    pub base_path: String,
}

/// One protected MCP server, compiled from a `[[routes]]` entry.
#[derive(Debug)]
pub struct Route {
    pub id: String,
    /// Lowercase host (no port) this route is limited to, if any.
    pub host: Option<String>,
    /// Path prefix without trailing slash ("/" for the root).
    pub path: String,
    pub upstream: Upstream,
    pub verifiers: VerifierSet,
    /// `[dangerous] unauthenticated_routes` lists this route: no credential is checked.
    pub unauthenticated: bool,
    pub required_scopes: Vec<String>,
    /// Canonical audiences a token must cover (RFC 8707).
    pub audiences: Vec<String>,
    /// The resource identifier (public URL of this route).
    pub resource: String,
    /// Path of this route's protected-resource metadata, after
    /// `/.well-known/oauth-protected-resource` ("" for the root document).
    pub metadata_suffix: String,
    /// The RFC 9728 document, serialized once.
    pub metadata_document: Bytes,
    pub challenge: Challenge,
    /// Full paths (route path + sub-path) served without a credential.
    pub public_paths: Vec<String>,
    pub methods: Vec<Method>,
    /// `Allow` / `Access-Control-Allow-Methods`: the methods plus `OPTIONS`.
    pub allow: HeaderValue,
    pub allowed_hosts: HostAllowlist,
    pub allowed_origins: OriginAllowlist,
    /// The gateway's own credentials for the upstream (values are marked sensitive).
    pub upstream_headers: Vec<(HeaderName, HeaderValue)>,
    pub access: AccessRules,
}

/// Who may use a route, beyond holding its scopes. An empty list does not restrict; when
/// several lists are set, the caller must satisfy each of them.
#[derive(Debug, Default)]
pub struct AccessRules {
    pub subjects: Vec<String>,
    pub groups: Vec<String>,
    pub clients: Vec<String>,
}

impl Route {
    /// Whether `path` is one of this route's public sub-paths (exact or below it).
    pub fn is_public_path(&self, path: &str) -> bool {
        self.public_paths
            .iter()
            .any(|public| path_has_prefix(path, public))
    }

    /// A route without `host` serves every host; otherwise the request's host (port ignored,
    /// case-insensitive) must be that one.
    fn serves_host(&self, request_host: Option<&str>) -> bool {
        match (&self.host, request_host.map(strip_port)) {
            (None, _) => true,
            (Some(want), Some(have)) => want.eq_ignore_ascii_case(have),
            (Some(_), None) => false,
        }
    }

    /// The part of `path` after the route prefix, as it is appended to the upstream base.
    pub fn rest_of<'p>(&self, path: &'p str) -> &'p str {
        if self.path == "/" {
            path
        } else {
            &path[self.path.len().min(path.len())..]
        }
    }
}

/// All routes, longest path first so the first match is the longest prefix.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<Arc<Route>>) -> Self {
        // Host-specific routes before host-less ones of the same length.
        routes.sort_by(|a, b| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then(b.host.is_some().cmp(&a.host.is_some()))
        });
        Self { routes }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route for a normalized path and request host.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        self.routes
            .iter()
            .find(|route| route.serves_host(host) && path_has_prefix(path, &route.path))
    }

    /// The route whose protected-resource metadata lives at `suffix`. The root document
    /// (`suffix` empty) describes a route mounted at "/" or, failing that, the only route
    /// serving this host — RFC 9728 §3 clients fall back to the root when the path-suffixed
    /// document is missing.
    pub fn find_metadata(&self, host: Option<&str>, suffix: &str) -> Option<&Arc<Route>> {
        let serves_host = |route: &&Arc<Route>| route.serves_host(host);
        if let Some(route) = self
            .routes
            .iter()
            .filter(serves_host)
            .find(|route| route.metadata_suffix == suffix)
        {
            return Some(route);
        }
        if suffix.is_empty() {
            let mut candidates = self.routes.iter().filter(serves_host);
            if let (Some(only), None) = (candidates.next(), candidates.next()) {
                return Some(only);
            }
        }
        None
    }
}

/// Phase 1: a clean path and the route that owns it.
pub fn resolve(table: &RouteTable, request: &RequestView<'_>) -> Result<Arc<Route>, Rejection> {
    check_path(request.path).map_err(Rejection::AmbiguousPath)?;
    table
        .find(request.host, request.path)
        .cloned()
        .ok_or(Rejection::NoRoute)
}

/// `prefix` matches `path` on a segment boundary: `/mcp` matches `/mcp` and `/mcp/x`, not
/// `/mcpx`.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Rejects paths that two parsers could read differently. Pure; see the table test.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("path must start with /");
    }
    if path.contains('\\') {
        return Err("backslash in path");
    }
    if path.contains("//") {
        return Err("empty path segment");
    }
    if path
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'#')
    {
        return Err("control character in path");
    }
    let lower = path.to_ascii_lowercase();
    for encoded in ["%2e", "%2f", "%5c", "%00", "%25"] {
        if lower.contains(encoded) {
            return Err("encoded dot, slash, backslash, percent or NUL in path");
        }
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err("dot segment in path");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_path_table() {
        let ok = [
            "/", "/mcp", "/mcp/", "/mcp/x.y", "/mcp/..x", "/a%20b", "/mcp?x",
        ];
        for path in ok {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
        let bad = [
            "",
            "mcp",
            "/mcp/../admin",
            "/mcp/./x",
            "/..",
            "/mcp/%2e%2e/admin",
            "/mcp/%2E",
            "/mcp%2fadmin",
            "/mcp%2Fx",
            "/mcp\\..\\x",
            "//mcp",
            "/mcp//x",
            "/mcp/%5c",
            "/mcp/%00",
            "/mcp/%252e",
            "/mcp/\u{0001}",
            "/mcp/.",
            "/mcp/..",
        ];
        for path in bad {
            assert!(check_path(path).is_err(), "{path}");
        }
    }

    #[test]
    fn prefix_table() {
        let cases = [
            ("/mcp", "/mcp", true),
            ("/mcp/", "/mcp", true),
            ("/mcp/x", "/mcp", true),
            ("/mcpx", "/mcp", false),
            ("/mc", "/mcp", false),
            ("/anything", "/", true),
        ];
        for (path, prefix, want) in cases {
            assert_eq!(path_has_prefix(path, prefix), want, "{path} {prefix}");
        }
    }

    #[test]
    fn host_port_stripping() {
        assert_eq!(strip_port("gw.example.com:8443"), "gw.example.com");
        assert_eq!(strip_port("gw.example.com"), "gw.example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
    }
}
