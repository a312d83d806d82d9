//! `/verify`: ForwardAuth for Traefik (`forwardAuth`), nginx (`auth_request`) and Caddy
//! (`forward_auth`). The front proxy describes the original request in headers; we rebuild
//! the request view from them and run the very same `pipeline::admit` as inline mode.
//!
//! Answers are only 200 (with the identity headers, for `authResponseHeaders` /
//! `auth_request_set` / `copy_headers`), 401 or 403 (with the challenge): nginx turns any
//! other status from an auth subrequest into a 500.
//!
//! Original request, by proxy:
//! - Traefik, Caddy: `X-Forwarded-Method`, `X-Forwarded-Proto`, `X-Forwarded-Host`,
//!   `X-Forwarded-Uri` (path and query);
//! - nginx: `X-Original-Method`, `X-Original-URI` (`$request_uri`), plus the
//!   `X-Forwarded-Host` the deploy/ config sets (else the subrequest's `Host`);
//! - ingress-nginx, as it comes: `X-Original-Method` and `X-Original-URL`
//!   (`$scheme://$http_host$request_uri`: the target and the host in one).
//!
//! The original `Authorization` and `Origin` arrive as ordinary headers. Each forwarded header
//! must appear at most once.

use crate::body::RequestBody;
use http::header::{self, HeaderName};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};

use crate::body::{self, Body};
use crate::config::Config;
use crate::mcp::sessions::SessionStore;
use crate::model::forwarding::X_FORWARDED_HOST;
use crate::model::path::check_path;
use crate::observability::Outcome;
use crate::pipeline::limits::RateLimiter;
use crate::pipeline::mcp_policy::{self, Judged};
use crate::pipeline::policy::Admission;
use crate::pipeline::rejection::Rejection;
use crate::pipeline::request::RequestView;
use crate::pipeline::{admit, session, transport, Denial};
use crate::server::router::{is_metadata_path, HEALTH_PATH, READY_PATH};

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");

/// The original request as the front proxy described it.
#[derive(Debug)]
pub struct Original {
    pub method: Method,
    pub uri: Uri,
    pub host: Option<String>,
}

pub async fn verify(
    config: &Config,
    request: Request<RequestBody>,
    sessions: &dyn SessionStore,
    limiter: &RateLimiter,
) -> (Response<Body>, Outcome) {
    let (parts, body) = request.into_parts();
    let answer = decide(config, &parts.headers, body, sessions, limiter).await;
    // The check is made: the front proxy's head map serves the next head on this worker.
    crate::header_maps::give_back(parts.headers);
    answer
}

/// The check itself, on the front proxy's head.
async fn decide(
    config: &Config,
    headers: &HeaderMap,
    body: RequestBody,
    sessions: &dyn SessionStore,
    limiter: &RateLimiter,
) -> (Response<Body>, Outcome) {
    let original = match original_request(headers) {
        Ok(original) => original,
        Err(rejection) => return deny(rejection.into()),
    };
    let path = original.uri.path();
    // Discovery documents and health are public wherever they are routed — for reads of
    // exactly those paths: the shortcut must not let `/.well-known/…/../../mcp` through.
    let is_read = matches!(
        original.method,
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let is_probe = path == HEALTH_PATH || path == READY_PATH;
    if is_read && (is_metadata_path(path) || is_probe) && check_path(path).is_ok() {
        return (
            allow(),
            Outcome::builtin("verify-public").describing(&original.method, path),
        );
    }
    let view = RequestView {
        method: &original.method,
        path,
        query: original.uri.query(),
        host: original.host.as_deref(),
        headers,
    };
    match admit(config, &view).await {
        Ok(admission) => {
            // A preflight passed on by the front proxy reaches the upstream without any
            // credential: only where the route lets OPTIONS through at all.
            if let Admission::Preflight(route) = &admission {
                if !route.methods.contains(&Method::OPTIONS) {
                    let (response, outcome) =
                        deny(Rejection::MethodNotAllowed(route.allow.clone()).into());
                    return (response, outcome.describing(&original.method, path));
                }
            }
            let mut outcome =
                crate::pipeline::audit::admitted(&admission).describing(&original.method, path);
            // Phases 7 and 8 and the session binding, as inline, from what the front proxy
            // passes on: the body (Traefik `forwardBody`) or the `Mcp-Method` / `Mcp-Name`
            // headers.
            let (judged, refusal) = calls_and_limits(
                &admission,
                &original.method,
                headers,
                body,
                sessions,
                limiter,
                config.server.limits.body_read_timeout,
            )
            .await;
            outcome.mcp_method = judged.method.clone();
            outcome.mcp_target = judged.target.clone();
            if let Some(rejection) = refusal {
                let denial = Denial {
                    rejection,
                    route: Some(admission.route().clone()),
                    principal: admission.shared_principal().cloned(),
                };
                let (response, mut denied) = deny(denial);
                denied.mcp_method = judged.method;
                denied.mcp_target = judged.target;
                denied.rule = judged.rule;
                return (response, denied.describing(&original.method, path));
            }
            let mut response = allow();
            if let Admission::Granted(grant) = &admission {
                config.identity_headers.set(grant, response.headers_mut());
            }
            (response, outcome)
        }
        Err(denial) => {
            let (response, outcome) = deny(denial);
            (response, outcome.describing(&original.method, path))
        }
    }
}

/// What inline mode decides after phase 6, for `/verify`: session ownership (first
/// presenter owns an unseen session id: `/verify` never sees the upstream's answer), the
/// route's MCP rules and its rate limits.
async fn calls_and_limits(
    admission: &Admission,
    method: &Method,
    headers: &HeaderMap,
    body: RequestBody,
    sessions: &dyn SessionStore,
    limiter: &RateLimiter,
    body_read_timeout: std::time::Duration,
) -> (Judged, Option<Rejection>) {
    let route = admission.route();
    let principal = admission.principal();
    if let Err(rejection) = session::check(sessions, route, principal, headers).await {
        return (Judged::default(), Some(rejection));
    }
    let mut judged = Judged::default();
    // As inline: a body forwarded with another method than POST is refused, not approved
    // unjudged.
    if route.mcp.is_some() && *method != Method::POST && mcp_policy::carries_a_body(headers) {
        let refusal = Rejection::McpBodyNotOnPost;
        return (judged, Some(refusal));
    }
    if let (Some(policy), true) = (&route.mcp, *method == Method::POST) {
        let forwarded_body = mcp_policy::carries_a_body(headers);
        let (found, refusal) = if forwarded_body {
            match mcp_policy::read_body(body, policy.max_body_bytes, body_read_timeout).await {
                Ok(bytes) => mcp_policy::judge(route, policy, principal, &bytes, headers),
                Err(rejection) => (Judged::default(), Some(rejection)),
            }
        } else {
            match mcp_policy::judge_headers(route, policy, principal, headers) {
                Some(result) => result,
                // Nothing says what is called: refused unless the route lets it pass.
                None if policy.undetermined_allowed => (Judged::default(), None),
                None => (Judged::default(), Some(Rejection::McpUndetermined)),
            }
        };
        if refusal.is_some() {
            return (found, refusal);
        }
        judged = found;
    }
    if let Err(rejection) = limiter.admit(route, principal, &judged.tools, None).await {
        return (judged, Some(rejection));
    }
    (judged, None)
}

fn allow() -> Response<Body> {
    let mut response = Response::new(body::empty());
    // Sized for what follows (the identity headers, the request id): growing the map on
    // the way would move every entry.
    *response.headers_mut() = crate::header_maps::take(12);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

/// 401 when a (new) credential could fix it, 403 otherwise. A verifier outage maps to 401:
/// it is the only non-final status nginx passes through, and the client may retry.
fn deny(denial: Denial) -> (Response<Body>, Outcome) {
    let status = match denial.rejection.status() {
        StatusCode::UNAUTHORIZED | StatusCode::SERVICE_UNAVAILABLE => StatusCode::UNAUTHORIZED,
        _ => StatusCode::FORBIDDEN,
    };
    let outcome = crate::pipeline::audit::rejected(&denial);
    (denial.rejection.respond_with(status), outcome)
}

fn single_str(headers: &HeaderMap, name: HeaderName) -> Result<Option<&str>, Rejection> {
    match transport::single(headers, name)? {
        Some(value) => value
            .to_str()
            .map(Some)
            .map_err(|_| Rejection::MalformedHeader("forwarded request")),
        None => Ok(None),
    }
}

/// ingress-nginx's `X-Original-URL` split into the request target and the host it names:
/// `http(s)://` + a host without user info + the target, which starts with `/`.
pub fn split_original_url(url: &str) -> Result<(&str, &str), Rejection> {
    let bad = || Rejection::AmbiguousPath("x-original-url is not scheme://host/target");
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let slash = rest.find('/').ok_or_else(bad)?;
    let (host, target) = rest.split_at(slash);
    if host.is_empty() || host.contains(['@', '?', '#', '\\']) {
        return Err(bad());
    }
    Ok((target, host))
}

/// The original request, from one dialect only: Traefik/Caddy `X-Forwarded-Method` +
/// `X-Forwarded-Uri`, or nginx `X-Original-Method` + `X-Original-URI` (or ingress-nginx's
/// `X-Original-URL`; both must agree when both are there). A front proxy only overwrites
/// its own dialect, so a client may have added the other one: if both are present they
/// must agree exactly, or the request is refused. A missing method is refused too (never
/// assumed to be GET). The host is `X-Forwarded-Host`, else the one `X-Original-URL` names
/// (both must agree), else `Host`.
pub fn original_request(headers: &HeaderMap) -> Result<Original, Rejection> {
    let forwarded = (
        single_str(headers, X_FORWARDED_METHOD)?,
        single_str(headers, X_FORWARDED_URI)?,
    );
    let url = single_str(headers, X_ORIGINAL_URL)?
        .map(split_original_url)
        .transpose()?;
    let nginx_target = match (single_str(headers, X_ORIGINAL_URI)?, url) {
        (Some(uri), Some((target, _))) if uri != target => {
            return Err(Rejection::MalformedHeader(
                "forwarded request (x-original-uri and x-original-url disagree)",
            ))
        }
        (Some(uri), _) => Some(uri),
        (None, url) => url.map(|(target, _)| target),
    };
    let original = (single_str(headers, X_ORIGINAL_METHOD)?, nginx_target);
    let (method, uri) = match (forwarded, original) {
        ((None, None), described) | (described, (None, None)) => described,
        (a, b) if a == b => a,
        _ => {
            return Err(Rejection::MalformedHeader(
                "forwarded request (dialects disagree)",
            ))
        }
    };
    let method = method.ok_or(Rejection::MalformedHeader("x-forwarded-method"))?;
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| Rejection::MalformedHeader("x-forwarded-method"))?;
    let uri = uri.ok_or(Rejection::MalformedHeader("x-forwarded-uri"))?;
    // A request target never carries a fragment; the URI parser would drop it (and what
    // follows `#`) before the path check, while an upstream may not.
    if uri.contains('#') {
        return Err(Rejection::AmbiguousPath("fragment in forwarded URI"));
    }
    let uri: Uri = uri
        .parse()
        .map_err(|_| Rejection::AmbiguousPath("unparsable forwarded URI"))?;
    if uri.authority().is_some() || !uri.path().starts_with('/') {
        return Err(Rejection::AmbiguousPath(
            "forwarded URI must be origin-form",
        ));
    }
    let host = match (single_str(headers, X_FORWARDED_HOST)?, url) {
        (Some(forwarded), Some((_, named))) if forwarded != named => {
            return Err(Rejection::MalformedHeader(
                "forwarded request (x-forwarded-host and x-original-url disagree)",
            ))
        }
        (Some(host), _) | (None, Some((_, host))) => Some(host.to_string()),
        (None, None) => single_str(headers, header::HOST)?.map(str::to_string),
    };
    Ok(Original { method, uri, host })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn method() -> impl Strategy<Value = Option<String>> {
        prop::option::of(
            prop::sample::select(vec!["GET", "POST", "get", "DELETE"]).prop_map(String::from),
        )
    }

    fn uri() -> impl Strategy<Value = Option<String>> {
        prop::option::of(
            prop::sample::select(vec![
                "/mcp",
                "/mcp?x=1",
                "/mcp/health",
                "/mcp#frag",
                "/mcp/health#/../admin",
                "http://evil/mcp",
                "mcp",
                "/a b",
                "/%2e%2e/x",
                "*",
            ])
            .prop_map(String::from),
        )
    }

    fn url() -> impl Strategy<Value = Option<String>> {
        prop::option::of(
            prop::sample::select(vec![
                "https://mcp.example/mcp",
                "http://mcp.example:8080/mcp?x=1",
                "https://mcp.example/mcp#frag",
                "https://evil@mcp.example/mcp",
                "https://mcp.example",
                "ftp://mcp.example/mcp",
                "/mcp",
            ])
            .prop_map(String::from),
        )
    }

    #[test]
    fn ingress_nginx_original_urls() {
        assert_eq!(
            split_original_url("https://mcp.example.com/mcp?x=1").ok(),
            Some(("/mcp?x=1", "mcp.example.com"))
        );
        assert_eq!(
            split_original_url("http://127.0.0.1:8080/").ok(),
            Some(("/", "127.0.0.1:8080"))
        );
        for bad in [
            "/mcp",
            "https://mcp.example.com",
            "ftp://mcp.example.com/mcp",
            "https:///mcp",
            "https://user@mcp.example.com/mcp",
            "https://mcp.example.com?x=/mcp",
            "HTTPS://mcp.example.com/mcp",
        ] {
            assert!(split_original_url(bad).is_err(), "{bad}");
        }
        // As ingress-nginx sends it: method and URL, the host from the URL.
        let mut headers = HeaderMap::new();
        headers.insert(X_ORIGINAL_METHOD, http::HeaderValue::from_static("POST"));
        headers.insert(
            X_ORIGINAL_URL,
            http::HeaderValue::from_static("https://mcp.example.com/mcp?x=1"),
        );
        headers.insert(header::HOST, http::HeaderValue::from_static("gateway:9090"));
        let original = original_request(&headers).expect("accepted");
        assert_eq!(original.method, Method::POST);
        assert_eq!(original.uri, "/mcp?x=1");
        assert_eq!(original.host.as_deref(), Some("mcp.example.com"));
        // A disagreeing X-Original-URI or X-Forwarded-Host is refused.
        let mut other = headers.clone();
        other.insert(X_ORIGINAL_URI, http::HeaderValue::from_static("/other"));
        assert!(original_request(&other).is_err());
        let mut other = headers.clone();
        other.insert(
            X_FORWARDED_HOST,
            http::HeaderValue::from_static("evil.example"),
        );
        assert!(original_request(&other).is_err());
    }

    proptest! {
        /// The described request comes from exactly one dialect (or both, agreeing); it
        /// never carries a fragment, is always origin-form, and always has a method.
        #[test]
        fn forwarded_request_is_unambiguous(
            fwd_method in method(), fwd_uri in uri(), orig_method in method(), orig_uri in uri(),
            orig_url in url(),
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in [
                (X_FORWARDED_METHOD, &fwd_method),
                (X_FORWARDED_URI, &fwd_uri),
                (X_ORIGINAL_METHOD, &orig_method),
                (X_ORIGINAL_URI, &orig_uri),
                (X_ORIGINAL_URL, &orig_url),
            ] {
                if let Some(value) = value {
                    if let Ok(value) = http::HeaderValue::from_str(value) {
                        headers.insert(name, value);
                    }
                }
            }
            // The URL's target, when it is one (an unusable URL is refused outright).
            let url_target = orig_url.as_deref().map(|u| split_original_url(u).map(|(t, _)| t.to_string()));
            if matches!(url_target, Some(Err(_))) {
                prop_assert!(original_request(&headers).is_err());
                return Ok(());
            }
            let url_target = url_target.and_then(Result::ok);
            if let (Some(uri), Some(target)) = (&orig_uri, &url_target) {
                if uri != target {
                    prop_assert!(original_request(&headers).is_err());
                    return Ok(());
                }
            }
            let forwarded = (fwd_method.clone(), fwd_uri.clone());
            let original = (orig_method.clone(), orig_uri.clone().or(url_target));
            if let Ok(request) = original_request(&headers) {
                let described = match (forwarded.0.is_some() || forwarded.1.is_some(), original.0.is_some() || original.1.is_some()) {
                    (true, true) => {
                        prop_assert_eq!(&forwarded, &original);
                        forwarded
                    }
                    (true, false) => forwarded,
                    (false, true) => original,
                    (false, false) => unreachable!("nothing described, yet accepted"),
                };
                let (method, uri) = (described.0.unwrap_or_default(), described.1.unwrap_or_default());
                prop_assert_eq!(request.method.as_str(), method.as_str());
                prop_assert!(!uri.contains('#'));
                prop_assert!(request.uri.authority().is_none());
                prop_assert!(request.uri.path().starts_with('/'));
            }
        }
    }
}
