//! Inline mode: the pipeline's decision (phases 1–8), then rewrite (9) and forward (10),
//! streaming both ways. The request body is never buffered; its size is bounded while it
//! streams (and up front when `Content-Length` says it is too big).

use crate::body::RequestBody;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::auth::user_tokens::UserTokens;
use crate::body::{self, Body, BoxError};
use crate::config::Config;
use crate::mcp::sessions::SessionStore;
use crate::mcp::{
    self,
    filter::{ListFilter, OwnedCaller, SseFilter},
};
use crate::observability::metrics::METRICS;
use crate::observability::Outcome;
use crate::pipeline::limits::RateLimiter;
use crate::pipeline::policy::Admission;
use crate::pipeline::rejection::Rejection;
use crate::pipeline::request::{request_host, RequestView};
use crate::pipeline::rewrite::{self, ClientSide};
use crate::pipeline::{admit, forward, mcp_policy, session, transport, user_token, Denial};
use crate::server::Connection;
use crate::upstream::Upstreams;

/// The request's host as a header value: the client's own `Host` value when that is where
/// it came from (a clone shares its bytes), else a copy of the target's authority.
fn host_value(host: &str, headers: &HeaderMap) -> Option<http::HeaderValue> {
    match headers.get(http::header::HOST) {
        Some(value) if value.as_bytes() == host.as_bytes() => Some(value.clone()),
        _ => http::HeaderValue::from_str(host).ok(),
    }
}

pub async fn handle(
    config: &Config,
    upstream: &Upstreams,
    request: Request<RequestBody>,
    connection: Connection,
    sessions: &dyn SessionStore,
    limiter: &RateLimiter,
    user_tokens: Option<&dyn UserTokens>,
) -> (Response<Body>, Outcome) {
    let (mut parts, incoming) = request.into_parts();
    // Kept as a header value: the rewrite sends it on as `X-Forwarded-Host`, and a clone of
    // the client's `Host` shares its bytes.
    let host = match request_host(&parts.uri, &parts.headers) {
        Ok(host) => host.and_then(|host| host_value(host, &parts.headers)),
        Err(rejection) => return rejected(rejection.into(), &parts.headers),
    };
    let host_text = host.as_ref().and_then(|value| value.to_str().ok());
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400.
    if host.is_none() && parts.version == http::Version::HTTP_11 {
        return rejected(Rejection::MissingHost.into(), &parts.headers);
    }
    let view = RequestView {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        host: host_text,
        headers: &parts.headers,
    };
    let admission = match admit(config, &view).await {
        Ok(admission) => admission,
        Err(denial) => return rejected(denial, &parts.headers),
    };
    let mut outcome = crate::pipeline::audit::admitted(&admission);

    if let Admission::Preflight(route) = &admission {
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        transport::add_cors(&parts.headers, response.headers_mut(), Some(&route.allow));
        return (response, outcome);
    }

    // Sessions (2025 protocol): a session belongs to whoever opened it.
    if let Err(rejection) = session::check(
        sessions,
        admission.route(),
        admission.principal(),
        &parts.headers,
    )
    .await
    {
        let denial = Denial {
            rejection,
            route: Some(admission.route().clone()),
            principal: admission.shared_principal().cloned(),
        };
        return rejected(denial, &parts.headers);
    }

    let request_had_session = parts.headers.contains_key(session::MCP_SESSION_ID);

    // 7. MCP policy — routes with rules read a POST's body (bounded), judge each message
    //    and forward the very bytes they judged, and refuse a body on any other method;
    //    other routes stream it untouched.
    // Phase 11 on routes with rules: which answers are filtered.
    let mut filtered_answer: Option<Filtered> = None;
    let mut called_tools: Vec<String> = Vec::new();
    let mut single_id: Option<serde_json::Value> = None;
    let judged_body = match (&admission.route().mcp, parts.method == http::Method::POST) {
        (Some(policy), true) => {
            let limits = &config.server.limits;
            let limit = policy.max_body_bytes.min(clamp(limits.max_body_bytes));
            let deny = |rejection: Rejection, judged: mcp_policy::Judged| {
                let denial = Denial {
                    rejection,
                    route: Some(admission.route().clone()),
                    principal: admission.shared_principal().cloned(),
                };
                let (response, outcome) = rejected(denial, &parts.headers);
                (response, with_mcp(outcome, judged))
            };
            let bytes = match mcp_policy::read_body(incoming, limit, limits.body_read_timeout).await
            {
                Ok(bytes) => bytes,
                Err(rejection) => return deny(rejection, mcp_policy::Judged::default()),
            };
            match mcp_policy::judge(
                admission.route(),
                policy,
                admission.principal(),
                &bytes,
                &parts.headers,
            ) {
                (mut judged, None) => {
                    // Taken, not copied: the audit event keeps only method, target and rule.
                    called_tools = std::mem::take(&mut judged.tools);
                    single_id = judged.id.take();
                    if judged.asks_for_list {
                        filtered_answer = Some(Filtered::ListAnswer);
                    }
                    outcome = with_mcp(outcome, judged);
                    UpstreamBody::Judged(bytes)
                }
                (judged, Some(rejection)) => return deny(rejection, judged),
            }
        }
        (Some(_), false) => {
            // Only a POST carries MCP messages, and only a POST's are judged: a body on any
            // other method (an upstream routing every method to its JSON-RPC handler would
            // act on it) is refused, not forwarded unjudged.
            if mcp_policy::carries_a_body(&parts.headers)
                || !http_body::Body::is_end_stream(&incoming)
            {
                let denial = Denial {
                    rejection: Rejection::McpBodyNotOnPost,
                    route: Some(admission.route().clone()),
                    principal: admission.shared_principal().cloned(),
                };
                return rejected(denial, &parts.headers);
            }
            // A `GET` stream may replay answers (`Last-Event-ID`): lists in it are filtered
            // all the same.
            if parts.method == http::Method::GET {
                filtered_answer = Some(Filtered::Stream);
            }
            UpstreamBody::Streaming(incoming)
        }
        (None, _) => UpstreamBody::Streaming(incoming),
    };
    // 8. Limits — per route, per principal, per principal and tool.
    if let Err(rejection) = limiter
        .admit(
            admission.route(),
            admission.principal(),
            &called_tools,
            single_id,
        )
        .await
    {
        let denial = Denial {
            rejection,
            route: Some(admission.route().clone()),
            principal: admission.shared_principal().cloned(),
        };
        let (response, mut denied) = rejected(denial, &parts.headers);
        denied.mcp_method = outcome.mcp_method.clone();
        denied.mcp_target = outcome.mcp_target.clone();
        return (response, denied);
    }
    // An answer that is filtered (phase 11) must come uncompressed.
    if filtered_answer.is_some() {
        parts.headers.remove(http::header::ACCEPT_ENCODING);
    }
    let origin = parts.headers.get(http::header::ORIGIN).cloned();
    // Request trailers (HTTP/2, or chunked HTTP/1.1) are dropped: they would reach the
    // upstream after the identity headers were set and could carry spoofed ones; MCP sends
    // none.
    // The body is bounded in size and in silence (slow-POST: a client that stops sending
    // must not hold its connection and an upstream connection).
    let limits = &config.server.limits;
    let body_progress = forward::BodyProgress::default();
    let limited = match judged_body {
        UpstreamBody::Judged(bytes) => {
            forward::Completing::new(body::full(bytes), &body_progress).boxed_unsync()
        }
        UpstreamBody::Streaming(incoming) => {
            let limited =
                Limited::new(incoming, clamp(limits.max_body_bytes)).map_err(BoxError::from);
            let limited = forward::Completing::new(limited, &body_progress);
            forward::IdleTimeout::new(limited, limits.body_read_timeout)
                .map_err(|error| BoxError::from(forward::ClientBodyError(error)))
                .map_frame(|frame| {
                    if frame.is_trailers() {
                        http_body::Frame::data(bytes::Bytes::new())
                    } else {
                        frame
                    }
                })
                .boxed_unsync()
        }
    };
    let client = ClientSide {
        peer: connection.peer.ip(),
        scheme: if connection.tls { "https" } else { "http" },
        host: host.as_ref(),
        identity: &config.identity_headers,
        trust_forwarded: config.server.trust_forwarded_headers,
    };
    // Phase 9, for routes forwarding the user's own provider token.
    let user_token = match user_token::header(
        admission.route(),
        admission.principal(),
        &config.verifiers,
        user_tokens,
    )
    .await
    {
        Ok(header) => header,
        Err(rejection) => {
            let denial = Denial {
                rejection,
                route: Some(admission.route().clone()),
                principal: admission.shared_principal().cloned(),
            };
            return rejected(denial, &parts.headers);
        }
    };
    let (upstream_request, forwarded) =
        match rewrite::upstream_request(parts, limited, &admission, &client) {
            Ok(built) => built,
            Err(error) => {
                tracing::error!(%error, "could not build the upstream request");
                outcome = outcome.failed("invalid upstream request");
                return (Rejection::UpstreamUnavailable.into_response(), outcome);
            }
        };
    let set = rewrite::set_fields(
        &admission,
        &config.identity_headers,
        &forwarded,
        user_token.as_ref(),
    );
    let sent = std::time::Instant::now();
    match forward::forward(
        upstream,
        upstream_request,
        &set,
        config.server.limits.response_timeout,
        config.server.limits.stream_idle_timeout,
        &body_progress,
    )
    .await
    {
        Ok(mut response) => {
            METRICS.upstream_latency(&admission.route().id, sent.elapsed());
            // A session opened by this request belongs to its principal.
            session::remember(
                sessions,
                admission.route(),
                admission.principal(),
                request_had_session,
                response.headers(),
            )
            .await;
            // 11. Response filter — lists show only what the caller may use.
            if let (Some(filtered), Some(policy)) = (filtered_answer, &admission.route().mcp) {
                let filter = || ListFilter {
                    policy: policy.clone(),
                    caller: admission.principal().map(owned_caller),
                };
                response = filter_lists(response, filtered, filter).await;
            }
            if let Some(origin) = origin {
                let mut request_headers = HeaderMap::new();
                request_headers.insert(http::header::ORIGIN, origin);
                transport::add_cors(&request_headers, response.headers_mut(), None);
            }
            (response, outcome)
        }
        Err(rejection) => {
            outcome = outcome.failed(&rejection.reason());
            (rejection.into_response(), outcome)
        }
    }
}

/// The request body on its way upstream.
enum UpstreamBody {
    /// Read whole and judged by the route's MCP rules: these exact bytes are forwarded.
    Judged(bytes::Bytes),
    /// Streamed through untouched (bounded in size and silence).
    Streaming(RequestBody),
}

fn owned_caller(principal: &crate::auth::Principal) -> OwnedCaller {
    OwnedCaller {
        subject: principal.subject.clone(),
        scopes: principal.scopes.clone(),
        groups: principal.groups.clone(),
        client_id: principal.client_id.clone(),
        tools: principal.tools.clone(),
    }
}

/// Which answers phase 11 filters (routes with rules).
#[derive(Clone, Copy)]
enum Filtered {
    /// The answer to a POST asking for a list: a stream event by event, anything else read
    /// whole (bounded) as JSON. (Other POSTs' answers are not filtered: they may be large,
    /// and lists are not what they carry.)
    ListAnswer,
    /// A GET stream, which may replay earlier answers (`Last-Event-ID`): read as a stream
    /// whatever its media type says, as the TypeScript SDK reads it.
    Stream,
}

/// Phase 11 on an upstream answer (errors are left alone). An answer the filter cannot
/// read is not passed on unfiltered.
async fn filter_lists(
    response: Response<Body>,
    filtered: Filtered,
    filter: impl FnOnce() -> ListFilter,
) -> Response<Body> {
    if !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let encoded = parts
        .headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
    // Clients take any type naming an event stream for one (httpx-sse: "contains").
    let names_a_stream = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes()
                .to_ascii_lowercase()
                .windows(b"event-stream".len())
                .any(|w| w == b"event-stream")
        });
    let unfilterable = || {
        tracing::warn!("a list answer could not be filtered; it is not passed on");
        Rejection::UpstreamUnavailable.into_response()
    };
    if encoded {
        return unfilterable();
    }
    let filter = filter();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    if names_a_stream || matches!(filtered, Filtered::Stream) {
        return Response::from_parts(parts, SseFilter::new(body, filter).boxed_unsync());
    }
    // Whatever its media type says (`application/json-rpc`, none, …): clients read JSON
    // where they find it.
    let Some(bytes) = read_list(body).await else {
        return unfilterable();
    };
    let bytes = match filter.filter_json(&bytes) {
        Ok(filtered) => filtered.unwrap_or(bytes),
        // Nothing to read (a 202): nothing to filter.
        Err(_) if bytes.iter().all(u8::is_ascii_whitespace) => bytes,
        Err(_) => return unfilterable(),
    };
    Response::from_parts(parts, body::full(bytes))
}

/// A JSON list answer, whole, if it is within `MAX_LIST_BYTES` and arrives intact.
async fn read_list(mut body: Body) -> Option<bytes::Bytes> {
    let mut buffer = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            if buffer.len() + data.len() > mcp::filter::MAX_LIST_BYTES {
                return None;
            }
            buffer.extend_from_slice(&data);
        }
    }
    Some(buffer.freeze())
}

fn with_mcp(mut outcome: Outcome, judged: mcp_policy::Judged) -> Outcome {
    outcome.mcp_method = judged.method;
    outcome.mcp_target = judged.target;
    outcome.rule = judged.rule;
    outcome
}

fn clamp(limit: u64) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// A rejection as the client sees it. Challenges are exposed to allowed browser origins
/// (the guard already refused the others), so web clients can read `WWW-Authenticate`.
fn rejected(denial: Denial, request_headers: &HeaderMap) -> (Response<Body>, Outcome) {
    let outcome = crate::pipeline::audit::rejected(&denial);
    let rejection = denial.rejection;
    let passed_origin_check = !matches!(
        rejection,
        Rejection::OriginNotAllowed
            | Rejection::HostNotAllowed
            | Rejection::NoRoute
            | Rejection::AmbiguousPath(_)
            | Rejection::HeadersTooLarge
            | Rejection::DuplicateHeader(_)
            | Rejection::MalformedHeader(_)
            | Rejection::MissingHost
    );
    let mut response = rejection.into_response();
    if passed_origin_check {
        transport::add_cors(request_headers, response.headers_mut(), None);
    }
    (response, outcome)
}
