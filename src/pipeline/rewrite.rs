//! Phase 9 — Rewrite: the request the upstream receives.
//!
//! Strip before set: hop-by-hop headers (RFC 9110 §7.6.1, plus those named in
//! `Connection`), the client's `Authorization` (no token passthrough), `Cookie`, `Origin`
//! (already validated; SDK upstreams re-check it against their own host), every header that
//! claims forwarding facts (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`, `X-Original-*`, …)
//! and every header that collides with an identity or upstream-credential header we set. Then set identity from the [`Admission`], the route's upstream credential
//! and `X-Forwarded-For/Proto/Host`. `Host` becomes the upstream's authority.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Uri, Version};

use super::identity::strip_names;
use super::policy::Admission;
use super::transport::dashed;
use crate::body::Body;
use crate::model::identity::IdentityHeaders;

/// RFC 9110 §7.6.1 connection-specific fields, plus the legacy ones proxies still meet.
pub const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Client headers that never reach the upstream, whatever the route.
const NEVER_FORWARDED: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::HOST,
    header::ORIGIN,
];

/// Whether a client header claims something about the connection or the original request
/// that only a proxy may say (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`, `X-Original-*`,
/// …), in any spelling with `_` or `.` for `-`. (Method overrides never get this far: the
/// transport guard refuses them.) Upstreams use these for client-IP
/// allowlists, rate limits and URL generation (`X-Forwarded-Prefix`).
fn claims_forwarding(name: &HeaderName) -> bool {
    let dashed = dashed(name.as_str());
    dashed.starts_with("x-forwarded-")
        || dashed.starts_with("x-original-")
        || matches!(
            dashed.as_ref(),
            "forwarded" | "x-real-ip" | "x-client-ip" | "true-client-ip" | "x-cluster-client-ip"
        )
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Facts about the client connection the rewrite needs.
pub struct ClientSide<'a> {
    pub peer: IpAddr,
    /// `https` when the gateway terminated TLS.
    pub scheme: &'static str,
    pub host: Option<&'a str>,
    pub identity: &'a IdentityHeaders,
    /// Keep an inbound `X-Forwarded-Proto/Host` and extend `X-Forwarded-For` (only behind a
    /// trusted proxy).
    pub trust_forwarded: bool,
}

/// Removes hop-by-hop headers, including those listed in `Connection` (and `Upgrade`:
/// MCP never upgrades, and a smuggled upgrade must not reach the upstream).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

pub fn upstream_request(
    mut parts: Parts,
    body: Body,
    admission: &Admission,
    client: &ClientSide<'_>,
) -> Result<Request<Body>, http::Error> {
    let route = admission.route();
    let path = parts.uri.path();
    let rest = route.rest_of(path);
    let mut target = String::with_capacity(route.upstream.base_path.len() + rest.len() + 32);
    target.push_str(&route.upstream.base_path);
    if rest.is_empty() && target.is_empty() {
        target.push('/');
    } else {
        target.push_str(rest);
    }
    if let Some(query) = parts.uri.query() {
        target.push('?');
        target.push_str(query);
    }
    let uri = Uri::builder()
        .scheme(route.upstream.scheme.clone())
        .authority(route.upstream.authority.clone())
        .path_and_query(target)
        .build()?;

    let headers = &mut parts.headers;
    let inbound = |name: &HeaderName| -> Option<HeaderValue> {
        client
            .trust_forwarded
            .then(|| headers.get(name).cloned())
            .flatten()
    };
    // Behind a trusted proxy, what it says about the original request wins.
    let inbound_forwarded_for =
        inbound(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok().map(str::to_string));
    let inbound_proto = inbound(&X_FORWARDED_PROTO);
    let inbound_host = inbound(&X_FORWARDED_HOST);
    strip_hop_by_hop(headers);
    for name in &NEVER_FORWARDED {
        headers.remove(name);
    }
    let forwarding: Vec<HeaderName> = headers
        .keys()
        .filter(|n| claims_forwarding(n))
        .cloned()
        .collect();
    for name in forwarding {
        headers.remove(name);
    }
    let spoofed = client.identity.strip(headers);
    if spoofed > 0 {
        tracing::debug!(route = %route.id, spoofed, "removed client-sent identity headers");
    }
    let credential_names: Vec<&HeaderName> =
        route.upstream_headers.iter().map(|(n, _)| n).collect();
    strip_names(headers, &credential_names);

    if let Admission::Granted(grant) = admission {
        client.identity.set(grant, headers);
    }
    for (name, value) in &route.upstream_headers {
        headers.insert(name.clone(), value.clone());
    }
    let forwarded_for = match inbound_forwarded_for {
        Some(chain) => format!("{chain}, {}", client.peer),
        None => client.peer.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        inbound_proto.unwrap_or(HeaderValue::from_static(client.scheme)),
    );
    let host = inbound_host.or_else(|| client.host.and_then(|h| HeaderValue::from_str(h).ok()));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }

    parts.uri = uri;
    // The pooled client negotiates HTTP/2 itself over TLS (ALPN); ask for HTTP/1.1 semantics.
    parts.version = Version::HTTP_11;
    Ok(Request::from_parts(parts, body))
}
