//! `[[routes]]`: paths, upstreams, verifiers, audiences, metadata, allowlists.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Method, Uri};

use super::server::{is_reserved_header, is_set_on_every_request, SET_ON_EVERY_REQUEST_REASON};
use super::verifiers::is_loopback_host;
use super::{check_unique_ids, Collector};
use crate::auth::audience;
use crate::auth::introspection::Introspector;
use crate::auth::jwt::Issuer;
use crate::auth::VerifierSet;
use crate::config::raw::{RawConfig, RawRoute, RawServer};
use crate::config::secret;
use crate::config::settings::{PublicUrl, ServerSettings};
use crate::metadata::{Challenge, ProtectedResourceMetadata, METADATA_PREFIX};
use crate::model::allowlist::{canonical_origin, host_name, HostAllowlist, OriginAllowlist};
use crate::model::header_spelling::reads_as;
use crate::model::identity::IdentityHeaders;
use crate::model::path::check_path;
use crate::model::route::{AccessRules, Route, RouteTable, Upstream};

/// The headers phase 9 sets on an upstream request — identity, a route's `upstream_headers`
/// (each key once) and the user's token — need names of their own in any spelling
/// ([`reads_as`], and case for the table's keys): one would
/// replace the other, or reach a CGI-style upstream as the other, and the upstream request
/// head is written with each of them once, after the client's. (`X-Forwarded-For/Proto/Host`
/// are refused where each name is compiled.)
pub(super) fn check_set_names_apart(
    routes: &[RawRoute],
    identity: &IdentityHeaders,
    c: &mut Collector,
) {
    for (i, route) in routes.iter().enumerate() {
        // Two keys of the table naming one header (`X-Key` and `x_key`) would send it twice.
        let names: Vec<&String> = route.upstream_headers.keys().collect();
        for (at, name) in names.iter().enumerate() {
            let lower = name.to_ascii_lowercase();
            if let Some(first) = names[..at]
                .iter()
                .find(|other| reads_as(&other.to_ascii_lowercase(), &lower))
            {
                c.push(
                    format!("routes[{i}].upstream_headers.{name}"),
                    format!("{name:?} is the same header as {first:?} (case, `_`, `.` and `-` alike): keep one"),
                );
            }
        }
        let credentials = route.upstream_headers.keys().map(|name| {
            (
                name.as_str(),
                format!("routes[{i}].upstream_headers.{name}"),
            )
        });
        // The token goes in `Authorization` unless the route names another header.
        let user_token = route.upstream_token.as_ref().map(|token| {
            (
                token.header.as_deref().unwrap_or("authorization"),
                format!("routes[{i}].upstream_token.header"),
            )
        });
        for (name, key) in credentials.chain(user_token) {
            // An invalid name is reported where it is compiled.
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            let same = identity
                .names()
                .into_iter()
                .zip(IdentityHeaders::KEYS)
                .find(|(identity, _)| reads_as(header.as_str(), identity.as_str()));
            if let Some((_, identity_key)) = same {
                c.push(
                    key,
                    format!("{name:?} is also the identity header identity_headers.{identity_key}: choose another name for one of them"),
                );
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn compile_routes(
    raw: &RawConfig,
    server: &ServerSettings,
    issuers: &[Arc<Issuer>],
    introspectors: &[Arc<Introspector>],
    local_issuer: Option<&Arc<Issuer>>,
    base_dir: &Path,
    dangerous: &mut Vec<String>,
    forward_auth_path: Option<&str>,
    c: &mut Collector,
) -> RouteTable {
    if raw.routes.is_empty() {
        c.push(
            "routes",
            "no route: add a [[routes]] entry with `path` and `upstream`",
        );
    }
    let by_id: HashMap<&str, VerifierRef> = issuers
        .iter()
        .map(|i| (i.id.as_str(), VerifierRef::Issuer(i.clone())))
        .chain(
            introspectors
                .iter()
                .map(|i| (i.id.as_str(), VerifierRef::Introspection(i.clone()))),
        )
        .collect();
    let unauthenticated: HashSet<&str> = raw
        .dangerous
        .unauthenticated_routes
        .iter()
        .map(String::as_str)
        .collect();
    for (i, id) in raw.dangerous.unauthenticated_routes.iter().enumerate() {
        if !raw.routes.iter().any(|r| r.id == *id) {
            c.push(
                format!("dangerous.unauthenticated_routes[{i}]"),
                format!("no route has id {id:?}"),
            );
        } else {
            dangerous.push(format!("unauthenticated route {id:?}"));
        }
    }
    check_unique_ids(
        raw.routes.iter().map(|r| r.id.as_str()),
        "routes",
        &mut HashSet::new(),
        c,
    );

    let mut seen = HashSet::new();
    let routes = raw
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, route)| {
            let path = format!("routes[{i}]");
            let compiled = compile_route(
                route,
                &path,
                server,
                &raw.server,
                &by_id,
                local_issuer,
                unauthenticated.contains(route.id.as_str()),
                base_dir,
                c,
            )?;
            // Paths that differ only in case would make case-folding upstreams ambiguous.
            if !seen.insert((compiled.host.clone(), compiled.path.to_ascii_lowercase())) {
                c.push(
                    format!("{path}.path"),
                    format!("another route already serves {:?}", compiled.path),
                );
            }
            if forward_auth_path.is_some_and(|fa| {
                crate::model::route::path_has_prefix(fa, &compiled.path) && compiled.path != "/"
            }) {
                c.push(
                    format!("{path}.path"),
                    "overlaps the forward_auth path: choose another path",
                );
            }
            if compiled.path.starts_with("/.well-known") {
                c.push(
                    format!("{path}.path"),
                    "/.well-known is reserved for discovery documents",
                );
            }
            Some(Arc::new(compiled))
        })
        .collect();
    RouteTable::new(routes)
}

pub(super) enum VerifierRef {
    Issuer(Arc<Issuer>),
    Introspection(Arc<Introspector>),
}

#[allow(clippy::too_many_arguments)]
pub(super) fn compile_route(
    raw: &RawRoute,
    path: &str,
    server: &ServerSettings,
    server_raw: &RawServer,
    by_id: &HashMap<&str, VerifierRef>,
    local_issuer: Option<&Arc<Issuer>>,
    unauthenticated: bool,
    base_dir: &Path,
    c: &mut Collector,
) -> Option<Route> {
    let route_path = normalize_route_path(&raw.path);
    if let Err(reason) = route_path
        .as_deref()
        .map_err(String::as_str)
        .and_then(|p| check_route_path(p))
    {
        c.push(
            format!("{path}.path"),
            format!("{:?}: {reason}; use e.g. \"/mcp\"", raw.path),
        );
    }
    let upstream = c.ok(&format!("{path}.upstream"), parse_upstream(&raw.upstream));

    let mut verifiers = VerifierSet::default();
    for (j, id) in raw.verifiers.iter().enumerate() {
        match (id.as_str(), by_id.get(id.as_str())) {
            ("api_keys", _) => verifiers.api_keys = true,
            (_, Some(VerifierRef::Issuer(issuer))) => verifiers.issuers.push(issuer.clone()),
            (_, Some(VerifierRef::Introspection(x))) => verifiers.introspectors.push(x.clone()),
            (_, None) => c.push(
                format!("{path}.verifiers[{j}]"),
                format!("{id:?} is not \"api_keys\", \"authorization_server\" (with [authorization_server] on) nor the id of an [[issuers]] or [[introspection]] entry"),
            ),
        }
    }
    // The built-in authorization server's tokens are good on routes that list it, and on
    // routes that list no verifier at all (the one-file setup). A route that names its
    // verifiers without it does not accept them: turning the authorization server on must
    // not open routes that were meant for API keys or another identity provider.
    if let Some(local) = local_issuer.filter(|_| !unauthenticated && raw.verifiers.is_empty()) {
        verifiers.issuers.push(local.clone());
    }
    // Its issuer comes first in the route's metadata (clients use the first one).
    if let Some(position) =
        local_issuer.and_then(|local| verifiers.issuers.iter().position(|i| Arc::ptr_eq(i, local)))
    {
        let local = verifiers.issuers.remove(position);
        verifiers.issuers.insert(0, local);
    }
    if verifiers.is_empty() && !unauthenticated {
        c.push(
            format!("{path}.verifiers"),
            "no verifier: list \"api_keys\" or issuer / introspection ids, or turn on [authorization_server] (routes are closed by default)",
        );
    }

    let route_path = route_path.ok()?;
    let host = raw.host.as_ref().map(|h| host_name(h).to_ascii_lowercase());
    if let Some(h) = &host {
        let valid = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            c.push(
                format!("{path}.host"),
                format!(
                    "{h:?} is not a host name: give the bare name, without scheme, port or path"
                ),
            );
        }
    }
    // A host route lives on its own host: resource, audience and metadata URL follow it.
    let public = &match &host {
        Some(h) => server.public_url.for_host(h),
        None => server.public_url.clone(),
    };
    let resource = public.resource(&route_path);
    let audiences: Vec<String> = raw
        .audiences
        .clone()
        .unwrap_or_else(|| vec![resource.clone()])
        .iter()
        .map(|a| audience::canonical(a))
        .collect();
    let metadata_suffix = public.metadata_suffix(&route_path);
    let mut required_scopes = raw.scopes.clone();
    required_scopes.sort();
    required_scopes.dedup();
    let authorization_servers = raw.authorization_servers.clone().unwrap_or_else(|| {
        verifiers
            .issuers
            .iter()
            .map(|i| i.issuer.clone())
            .chain(
                verifiers
                    .introspectors
                    .iter()
                    .filter_map(|i| i.issuer.clone()),
            )
            .collect()
    });
    if authorization_servers.is_empty() && !unauthenticated {
        c.warn(
            format!("{path}.authorization_servers"),
            "the route's metadata lists no authorization server (API keys only): RFC 9728 clients such as the MCP Python SDK discard such a document; set authorization_servers to the issuer that mints tokens for this route, or ignore this for API-key-only clients",
        );
    }
    let document = ProtectedResourceMetadata {
        resource: resource.clone(),
        authorization_servers,
        scopes_supported: raw
            .scopes_supported
            .clone()
            .unwrap_or_else(|| required_scopes.clone()),
        bearer_methods_supported: ["header"],
        resource_name: raw.resource_name.clone(),
    };
    let metadata_document = Bytes::from(serde_json::to_vec(&document).unwrap_or_default());
    let challenge = Challenge {
        resource_metadata: format!("{}{METADATA_PREFIX}{metadata_suffix}", public.origin).into(),
        scope: (!required_scopes.is_empty()).then(|| required_scopes.join(" ").into()),
    };

    let public_paths = raw
        .public_paths
        .iter()
        .enumerate()
        .filter_map(|(j, sub)| {
            let full = if route_path == "/" {
                sub.clone()
            } else {
                format!("{route_path}{sub}")
            };
            if !sub.starts_with('/') || check_route_path(&full).is_err() {
                c.push(
                    format!("{path}.public_paths[{j}]"),
                    format!("{sub:?} must be a clean sub-path starting with / (no escapes, dot segments or ;)"),
                );
                None
            } else {
                Some(full.trim_end_matches('/').to_string())
            }
        })
        .collect();

    let methods = match &raw.methods {
        None => vec![Method::GET, Method::POST, Method::DELETE],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(j, m)| {
                c.ok(
                    &format!("{path}.methods[{j}]"),
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .map_err(|_| format!("{m:?} is not an HTTP method")),
                )
            })
            .collect(),
    };

    // A route's own allowlists replace the server-wide ones.
    // A host route without its own list answers on its host, not on the server's list.
    let inherited = if host.is_some() {
        None
    } else {
        Some(&server_raw.allowed_hosts)
    };
    let allowed_hosts = host_allowlist(raw.allowed_hosts.as_ref().or(inherited), public);
    let (origins, origins_key) = match &raw.allowed_origins {
        Some(own) => (own, format!("{path}.allowed_origins")),
        None => (
            &server_raw.allowed_origins,
            "server.allowed_origins".to_string(),
        ),
    };
    let allowed_origins = origin_allowlist(Some(origins), public, &origins_key, c);

    let upstream_headers: Vec<(HeaderName, HeaderValue)> = raw
        .upstream_headers
        .iter()
        .filter_map(|(name, source)| {
            let key = format!("{path}.upstream_headers.{name}");
            let header = c.ok(
                &key,
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{name:?} is not a valid header name"))
                    .and_then(|h| {
                        if is_reserved_header(&h) {
                            Err(format!("{name:?} cannot be set as an upstream credential"))
                        } else if is_set_on_every_request(&h) {
                            Err(format!("{name:?} {SET_ON_EVERY_REQUEST_REASON}: remove it here (behind a trusted proxy, server.trust_forwarded_headers passes that proxy's values on)"))
                        } else {
                            Ok(h)
                        }
                    }),
            )?;
            let secret = c.ok(
                &key,
                secret::resolve(
                    source.env.as_deref(),
                    source.file.as_deref(),
                    base_dir,
                    "value",
                ),
            )?;
            let mut value = c.ok(
                &key,
                HeaderValue::from_str(secret.expose())
                    .map_err(|_| "the secret is not a valid header value".to_string()),
            )?;
            value.set_sensitive(true);
            Some((header, value))
        })
        .collect();

    let upstream_headers_names: Vec<HeaderName> = upstream_headers
        .iter()
        .map(|(name, _)| name.clone())
        .collect();
    let user_token = raw.upstream_token.as_ref().and_then(|t| {
        super::user_tokens::compile_user_token(
            t,
            &raw.id,
            upstream.as_ref()?,
            &upstream_headers_names,
            &format!("{path}.upstream_token"),
            base_dir,
            c,
        )
    });
    Some(Route {
        id: raw.id.as_str().into(),
        host,
        path: route_path,
        upstream: upstream?,
        verifiers,
        unauthenticated,
        required_scopes,
        audiences,
        resource,
        metadata_suffix,
        metadata_document,
        challenge,
        public_paths,
        allow: allow_header(&methods),
        methods,
        allowed_hosts,
        allowed_origins,
        upstream_headers,
        access: AccessRules {
            subjects: raw.allowed_subjects.clone(),
            groups: raw.allowed_groups.clone(),
            clients: raw.allowed_clients.clone(),
        },
        mcp: raw
            .mcp
            .as_ref()
            .map(|mcp| Arc::new(super::mcp::compile_mcp(mcp, &format!("{path}.mcp"), c))),
        user_token,
        limits: raw.rate_limits.as_ref().map(|limits| {
            super::mcp::compile_limits(limits, raw.mcp.is_some(), &format!("{path}.rate_limits"), c)
        }),
    })
}

pub(super) fn normalize_route_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err("must start with /".into());
    }
    let trimmed = path.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    })
}

pub(super) fn parse_upstream(text: &str) -> Result<Upstream, String> {
    let uri: Uri = text
        .parse()
        .map_err(|_| format!("{text:?} is not a URL: use e.g. \"http://127.0.0.1:3001/mcp\""))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => return Err(format!("{text:?} must start with http:// or https://")),
    };
    let authority: Authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{text:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{text:?} must not contain user information: use upstream_headers for credentials"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("{text:?} must not have a query string"));
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
    let session_scope = format!(
        "{}:{}",
        authority.host().to_ascii_lowercase(),
        authority.port_u16().unwrap_or(default_port)
    );
    Ok(Upstream {
        scheme,
        authority,
        base_path,
        session_scope,
    })
}

pub(super) fn host_allowlist(raw: Option<&Vec<String>>, public: &PublicUrl) -> HostAllowlist {
    match raw {
        Some(list) if list.iter().any(|h| h == "*") => HostAllowlist::Any,
        Some(list) if !list.is_empty() => {
            HostAllowlist::Only(list.iter().map(|h| h.to_ascii_lowercase()).collect())
        }
        _ => {
            // Default: the public host on any port, plus the loopback names when the public
            // URL is itself local (a local gateway is reached as localhost or 127.0.0.1).
            let mut hosts = vec![public.host.clone()];
            if is_loopback_host(&public.host) {
                hosts.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
            }
            HostAllowlist::Only(hosts)
        }
    }
}

pub(super) fn origin_allowlist(
    raw: Option<&Vec<String>>,
    public: &PublicUrl,
    key: &str,
    c: &mut Collector,
) -> OriginAllowlist {
    match raw {
        Some(list) if list.iter().any(|o| o == "*") => OriginAllowlist::Any,
        Some(list) if !list.is_empty() => OriginAllowlist::Only(
            list.iter()
                .enumerate()
                .filter_map(|(i, o)| {
                    c.ok(
                        &format!("{key}[{i}]"),
                        canonical_origin(o).ok_or_else(|| {
                            format!("{o:?} is not an origin: use scheme://host[:port], e.g. \"https://app.example.com\"")
                        }),
                    )
                })
                .collect(),
        ),
        _ => {
            // Default: the public origin, plus its loopback aliases when it is local (a
            // browser on the same machine may say localhost as well as 127.0.0.1), as for
            // the allowed hosts.
            let mut origins = vec![public.origin.clone()];
            if is_loopback_host(&public.host) {
                let scheme = public.origin.split("://").next().unwrap_or("http");
                let port = public.port.map(|p| format!(":{p}")).unwrap_or_default();
                for alias in ["localhost", "127.0.0.1", "[::1]"] {
                    if let Some(origin) = canonical_origin(&format!("{scheme}://{alias}{port}")) {
                        if !origins.contains(&origin) {
                            origins.push(origin);
                        }
                    }
                }
            }
            OriginAllowlist::Only(origins)
        }
    }
}

/// A configured route or public path: the request path rule, and no percent-escapes (it is
/// compared with folded request paths as plain ASCII).
fn check_route_path(path: &str) -> Result<(), &'static str> {
    check_path(path)?;
    if path.contains('%') {
        return Err("percent-escapes are not allowed in a configured path");
    }
    Ok(())
}

/// The `Allow` value for a route: its methods, then `OPTIONS` (answered for CORS).
fn allow_header(methods: &[Method]) -> HeaderValue {
    let mut names: Vec<&str> = methods.iter().map(Method::as_str).collect();
    if !methods.contains(&Method::OPTIONS) {
        names.push("OPTIONS");
    }
    HeaderValue::from_str(&names.join(", ")).unwrap_or(HeaderValue::from_static("OPTIONS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_is_one_session_scope_however_its_url_is_spelled() {
        let scope = |url: &str| parse_upstream(url).unwrap().session_scope;
        assert_eq!(scope("http://MCP.internal/mcp"), "mcp.internal:80");
        assert_eq!(scope("http://mcp.internal:80/other"), "mcp.internal:80");
        assert_eq!(scope("https://Mcp.Internal"), "mcp.internal:443");
        assert_eq!(scope("http://127.0.0.1:3001/mcp"), "127.0.0.1:3001");
        assert_ne!(
            scope("http://mcp.internal:8080"),
            scope("http://mcp.internal")
        );
    }
}
