//! Phase 2 — Transport guard: what the request may be before anyone reads its credential.
//! Host and Origin allowlists (DNS-rebinding protection, MCP transport spec "Security
//! Warning"), method allowlist, header and body size limits, and CORS for browser clients.

use http::header::{self, HeaderMap, HeaderValue};
use http::Method;

use super::rejection::Rejection;
use super::request::RequestView;
use crate::config::Limits;
use crate::model::allowlist::HostAllowlist;
use crate::model::header_spelling::reads_as;
use crate::model::route::Route;

/// Phase 2. Order inside: size first (cheap, bounds everything after), then Host and
/// Origin (the rebinding defence must not depend on what the request carries), then method.
pub fn guard(route: &Route, request: &RequestView<'_>, limits: &Limits) -> Result<(), Rejection> {
    let header_bytes: usize = request
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(Rejection::HeadersTooLarge);
    }

    match request.host {
        Some(host) if route.allowed_hosts.allows(host) => {}
        Some(_) => return Err(Rejection::HostNotAllowed),
        None if matches!(route.allowed_hosts, HostAllowlist::Any) => {}
        None => return Err(Rejection::HostNotAllowed),
    }

    if let Some(origin) = single(request.headers, header::ORIGIN)? {
        let allowed = origin
            .to_str()
            .is_ok_and(|origin| route.allowed_origins.allows(origin));
        if !allowed {
            return Err(Rejection::OriginNotAllowed);
        }
    }

    // A method override would let the upstream act on a method this check never saw; in
    // `/verify` mode the front proxy would pass it on, so it is refused, not stripped.
    if request
        .headers
        .keys()
        .any(|name| is_method_override(name.as_str()))
    {
        return Err(Rejection::MalformedHeader("method override"));
    }

    // Preflights are answered by the gateway (or judged by `/verify`) whatever the methods.
    if !route.methods.contains(request.method) && !is_preflight(request) {
        return Err(Rejection::MethodNotAllowed(route.allow.clone()));
    }

    if let Some(length) = single(request.headers, header::CONTENT_LENGTH)? {
        let length: u64 = length
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(Rejection::MalformedHeader("content-length"))?;
        if length > limits.max_body_bytes {
            return Err(Rejection::BodyTooLarge);
        }
    }
    Ok(())
}

/// `X-HTTP-Method-Override` and its relatives, in any spelling with another separator for
/// `-`.
pub fn is_method_override(name: &str) -> bool {
    [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ]
    .iter()
    .any(|override_name| reads_as(name, override_name))
}

/// A header that must appear at most once; a duplicate is refused, never "first wins".
pub fn single(
    headers: &HeaderMap,
    name: header::HeaderName,
) -> Result<Option<&HeaderValue>, Rejection> {
    let mut values = headers.get_all(&name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Rejection::DuplicateHeader(name));
    }
    Ok(first)
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`. It carries
/// no credential by design (Fetch spec), so it is answered without authentication.
pub fn is_preflight(request: &RequestView<'_>) -> bool {
    *request.method == Method::OPTIONS
        && request.headers.contains_key(header::ORIGIN)
        && request
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

const EXPOSED_HEADERS: &str = "WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version";
const ALLOWED_REQUEST_HEADERS: &str =
    "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name";

/// CORS headers for an allowed `Origin` (the guard has already refused the others). For a
/// preflight, `preflight_methods` is the route's `Allow` value.
pub fn add_cors(
    request_headers: &HeaderMap,
    response_headers: &mut HeaderMap,
    preflight_methods: Option<&HeaderValue>,
) {
    let Some(origin) = request_headers.get(header::ORIGIN) else {
        return;
    };
    response_headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    response_headers.append(header::VARY, HeaderValue::from_static("Origin"));
    match preflight_methods {
        Some(methods) => {
            response_headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods.clone());
            response_headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOWED_REQUEST_HEADERS),
            );
            response_headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
        None => {
            response_headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED_HEADERS),
            );
        }
    }
}
