//! Mounts the built-in endpoints (health, protected-resource metadata, `/verify`) ahead of
//! the MCP routes, and writes the one audit event per request. Built-ins are answered here,
//! never proxied, and need no credential.

use std::time::Instant;

use crate::body::RequestBody;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tracing::Instrument;

use super::{Connection, ListenerRole};
use crate::app::App;
use crate::authorization_server::AuthorizationServer;
use crate::body::{self, Body};
use crate::config::Config;
use crate::metadata::METADATA_PREFIX;
use crate::observability::{self, metrics, request_id, Outcome, RequestContext};
use crate::pipeline::request::request_host;
use crate::upstream::Upstreams;
use crate::{forward_auth, proxy};

pub const HEALTH_PATH: &str = "/healthz";
pub const READY_PATH: &str = "/readyz";
pub const METRICS_PATH: &str = "/metrics";

pub async fn handle(
    app: &App,
    upstream: &Upstreams,
    mut request: Request<RequestBody>,
    connection: Connection,
) -> Response<Body> {
    let started = Instant::now();
    let config = app.config();
    let method = request.method().clone();
    // A clone shares the request head's bytes (no copy of the path).
    let uri = request.uri().clone();
    let path = uri.path();
    // The request id goes upstream (with the request's headers), back to the client, and
    // into the audit event.
    let context = RequestContext::settle(
        request.headers_mut(),
        connection.peer.ip(),
        config.server.trust_forwarded_headers,
    );
    // The span gives lines logged while handling (JWKS, upstream errors) their request, at
    // `debug`: at the default `info` it cost ~4,500 instructions a request (5% of a proxied
    // one: the subscriber's registry, the filter's bookkeeping at every poll under a lock
    // both workers take, its fields formatted), and the audit line already carries every
    // field of the request. Disabled, it costs a callsite check.
    let span = tracing::debug_span!(
        "request",
        %method,
        %path,
        request_id = context.id.to_str().unwrap_or_default()
    );
    // Disabled (the default), the span is not entered: wrapping the future in `Instrumented`
    // would move its kilobytes once more on every request.
    let (mut response, outcome) = if span.is_disabled() {
        dispatch(app, &config, upstream, request, connection, &context).await
    } else {
        dispatch(app, &config, upstream, request, connection, &context)
            .instrument(span)
            .await
    };
    response
        .headers_mut()
        .insert(request_id::REQUEST_ID, context.id.clone());
    // Read once (the clock is a vDSO call, ~25 ns here): metrics and the audit line agree.
    let elapsed = started.elapsed();
    metrics::METRICS.request(
        outcome.route.as_deref(),
        &method,
        response.status().as_u16(),
        outcome.auth_method,
        outcome.decision,
        elapsed,
    );
    // Probes every few seconds would drown the audit log; they are audited on request.
    let is_probe = matches!(outcome.verdict, "health" | "ready" | "metrics");
    if !is_probe || config.log.audit_probes {
        // Outside the span: the event carries method and path itself.
        observability::audit(
            &method,
            path,
            response.status(),
            elapsed,
            &outcome,
            &context,
        );
    }
    response
}

async fn dispatch(
    app: &App,
    config: &Config,
    upstream: &Upstreams,
    request: Request<RequestBody>,
    connection: Connection,
    context: &RequestContext,
) -> (Response<Body>, Outcome) {
    let path = request.uri().path();
    if path == HEALTH_PATH {
        return (
            json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
            Outcome::builtin("health"),
        );
    }
    if path == READY_PATH {
        return (readiness(config), Outcome::builtin("ready"));
    }
    // The built-in authorization server, on the main listeners only.
    if let (Some(server), Some(settings), ListenerRole::Main) = (
        app.authorization_server(),
        &config.authorization_server,
        connection.role,
    ) {
        if AuthorizationServer::serves(settings, path) {
            // Boxed: its future (forms, storage, outbound calls) is far larger than the
            // proxy's, and every request's future would otherwise be sized for it.
            return Box::pin(server.handle(config, settings, request, context.client)).await;
        }
    }
    if is_metadata_path(path) {
        let host = request_host(request.uri(), request.headers())
            .ok()
            .flatten();
        return metadata_response(config, request.method(), host, path);
    }
    let on_admin = connection.role == ListenerRole::Admin;
    if on_admin && path == METRICS_PATH {
        return (metrics::render(), Outcome::builtin("metrics"));
    }
    // With an admin listener, /verify lives there only.
    let verify_here = on_admin || config.admin.listen.is_empty();
    if verify_here && config.forward_auth.path.as_deref() == Some(path) {
        return forward_auth::verify(config, request, app.sessions(), app.limiter()).await;
    }
    if on_admin {
        return (
            json(
                StatusCode::NOT_FOUND,
                r#"{"error":"not_found","error_description":"the admin listener serves health, readiness, metrics, discovery and the forward_auth path"}"#.into(),
            ),
            Outcome::builtin("not_found"),
        );
    }
    proxy::handle(
        config,
        upstream,
        request,
        connection,
        app.sessions(),
        app.limiter(),
        app.authorization_server()
            .map(|server| server as &dyn crate::auth::user_tokens::UserTokens),
    )
    .await
}

/// `/readyz`: 200 once the gateway can decide every kind of request it is configured for —
/// the configuration is loaded and the listeners bound (it is answering), and every JWT
/// issuer's keys have loaded at least once. 503 names what it still waits for.
fn readiness(config: &Config) -> Response<Body> {
    let waiting: Vec<String> = config
        .verifiers
        .issuers
        .iter()
        .filter(|issuer| !issuer.keys.has_loaded())
        .map(|issuer| format!("jwks:{}", issuer.id))
        .collect();
    if waiting.is_empty() {
        return json(StatusCode::OK, r#"{"status":"ready"}"#.into());
    }
    let body = serde_json::json!({"status": "not_ready", "waiting_for": waiting});
    json(StatusCode::SERVICE_UNAVAILABLE, body.to_string().into())
}

pub fn is_metadata_path(path: &str) -> bool {
    path == METADATA_PREFIX
        || path
            .strip_prefix(METADATA_PREFIX)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// RFC 9728 §3.2: 200 `application/json`, public, cacheable, CORS-open (the MCP SDKs fetch it
/// from browsers and send `MCP-Protocol-Version` with it).
fn metadata_response(
    config: &Config,
    method: &Method,
    host: Option<&str>,
    path: &str,
) -> (Response<Body>, Outcome) {
    let suffix = path.strip_prefix(METADATA_PREFIX).unwrap_or("");
    let suffix = if suffix == "/" { "" } else { suffix };
    if *method == Method::OPTIONS {
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("MCP-Protocol-Version, Content-Type"),
        );
        return (response, Outcome::builtin("metadata"));
    }
    if *method != Method::GET && *method != Method::HEAD {
        let mut response = json(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"method_not_allowed"}"#.into(),
        );
        response.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        return (response, Outcome::builtin("metadata"));
    }
    match config.routes.find_metadata(host, suffix) {
        Some(route) => {
            let mut response = json(StatusCode::OK, route.metadata_document.clone());
            let headers = response.headers_mut();
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            (response, Outcome::builtin("metadata").with_route(&route.id))
        }
        None => {
            let mut response = json(
                StatusCode::NOT_FOUND,
                r#"{"error":"not_found","error_description":"no protected resource at this path"}"#
                    .into(),
            );
            response.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            (response, Outcome::builtin("metadata"))
        }
    }
}

fn json(status: StatusCode, body: bytes::Bytes) -> Response<Body> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
