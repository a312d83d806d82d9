//! Routes as compiled from `[[routes]]`, and the table that looks them up by host and
//! longest path prefix. Phase 1 (`pipeline::route`) picks a request's route with these
//! lookups.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};

use super::allowlist::{host_name, HostAllowlist, OriginAllowlist};
use super::rate::RouteLimits;
use crate::auth::VerifierSet;
use crate::metadata::Challenge;

/// Where a route sends its traffic.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Path prefix on the upstream that replaces the route's path ("" for none).
    pub base_path: String,
    /// The server as sessions are bound to it: lowercase host and port, the default port
    /// spelled out (`http://MCP` and `http://mcp:80` are one server).
    pub session_scope: String,
}

/// One protected MCP server, compiled from a `[[routes]]` entry.
#[derive(Debug)]
pub struct Route {
    /// Shared with every request's audit event and metrics (a reference count, no copy).
    pub id: Arc<str>,
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
    /// MCP-aware rules: with them, request bodies are read (bounded) and judged per
    /// message; without them, bodies stream untouched.
    pub mcp: Option<Arc<super::rules::McpPolicy>>,
    /// `[routes.rate_limits]`.
    pub limits: Option<RouteLimits>,
    /// `[routes.upstream_token]`: the user's own token at an identity provider.
    pub user_token: Option<UserTokenForwarding>,
}

/// Forward, for each user, a token obtained for them (never the client's token): the one
/// their identity provider issued at login, or one the upstream MCP server's own
/// authorization server issued to the gateway on their behalf.
#[derive(Debug, Clone)]
pub struct UserTokenForwarding {
    pub source: UserTokenSource,
    /// Under which name the authorization server keeps these tokens for each user: the
    /// provider's id, or `route:<route id>` (provider ids cannot contain `:`).
    pub key: String,
    pub header: HeaderName,
    /// The value is `Bearer <token>` (the `Authorization` header) rather than the bare token.
    pub bearer: bool,
}

/// Where a route's per-user upstream tokens come from.
#[derive(Debug, Clone)]
pub enum UserTokenSource {
    /// `provider = "<id>"`: the identity provider the user logged in through.
    Provider(String),
    /// `[routes.upstream_token.oauth]`: the upstream's own authorization server; the
    /// gateway is its OAuth client and each user connects once.
    UpstreamOAuth(Arc<UpstreamOAuth>),
}

/// How the gateway gets tokens from an upstream MCP server's authorization server.
#[derive(Debug)]
pub struct UpstreamOAuth {
    /// The route's id (its callback is `/connect/<id>/callback`).
    pub route_id: String,
    /// The upstream's resource identifier (RFC 8707 `resource`, RFC 9728 `resource`).
    pub resource: String,
    /// The authorization server's issuer; `None` = the first one the upstream's
    /// protected-resource metadata names.
    pub authorization_server: Option<String>,
    /// A client registered there beforehand; `None` = the gateway's client metadata
    /// document when the server accepts it (and the gateway is served over https), else
    /// dynamic registration.
    pub client_id: Option<String>,
    pub client_secret: Option<crate::secret::Secret>,
    /// Scopes to ask for; empty = what the protected-resource metadata lists.
    pub scopes: Vec<String>,
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

    /// [`Self::is_public_path`] for a folded (lowercase, decoded) path.
    pub(crate) fn is_public_folded(&self, folded: &str) -> bool {
        self.public_paths
            .iter()
            .any(|public| folded_has_prefix(folded, public))
    }

    /// A route without `host` serves every host; otherwise the request's host (port and a
    /// trailing dot ignored, case-insensitive) must be that one.
    fn serves_host(&self, request_host: Option<&str>) -> bool {
        // The request's host is parsed only for routes bound to one: most have none.
        match &self.host {
            None => true,
            Some(want) => request_host
                .map(host_name)
                .is_some_and(|have| want.eq_ignore_ascii_case(have)),
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
    /// A configured path has uppercase letters: even a lowercase request path must then be
    /// compared with how a case-folding upstream would route it.
    has_uppercase_paths: bool,
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
        let has_uppercase_paths = routes.iter().any(|route| {
            std::iter::once(&route.path)
                .chain(&route.public_paths)
                .any(|path| path.bytes().any(|b| b.is_ascii_uppercase()))
        });
        Self {
            routes,
            has_uppercase_paths,
        }
    }

    /// Whether a configured path has uppercase letters (see the field).
    pub(crate) fn has_uppercase_paths(&self) -> bool {
        self.has_uppercase_paths
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

    /// The route an upstream that folds case and decodes would pick for `folded`.
    pub(crate) fn find_folded(&self, host: Option<&str>, folded: &str) -> Option<&Arc<Route>> {
        self.routes
            .iter()
            .find(|route| route.serves_host(host) && folded_has_prefix(folded, &route.path))
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

/// `prefix` matches `path` on a segment boundary: `/mcp` matches `/mcp` and `/mcp/x`, not
/// `/mcpx`.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// [`path_has_prefix`] for a folded path against a configured (ASCII) prefix, ignoring case.
fn folded_has_prefix(folded: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return folded.starts_with('/');
    }
    folded
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        && matches!(folded.as_bytes().get(prefix.len()), None | Some(b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn folded_prefix_table() {
        let cases = [
            ("/admin/x", "/admin", true),
            ("/admin/x", "/Admin", true),
            ("/adminx", "/admin", false),
            ("/adm", "/admin", false),
            ("/x", "/", true),
        ];
        for (folded, prefix, want) in cases {
            assert_eq!(folded_has_prefix(folded, prefix), want, "{folded} {prefix}");
        }
    }
}
