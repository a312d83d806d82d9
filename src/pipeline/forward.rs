//! Phase 10 — Forward: send the rewritten request on the pooled client and stream the answer
//! back. The only deadline is for the response *head*: once the upstream has answered, a
//! long SSE stream is never cut by the gateway. A client that goes away drops the response
//! body, which drops the upstream connection — no synthesized cancel.

use std::error::Error as _;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::BodyExt;

use super::rejection::Rejection;
use super::rewrite::strip_hop_by_hop;
use crate::body::Body;
use crate::outbound::HttpClient;

pub async fn forward(
    client: &HttpClient,
    request: Request<Body>,
    response_timeout: Duration,
) -> Result<Response<Body>, Rejection> {
    let response = match tokio::time::timeout(response_timeout, client.request(request)).await {
        Err(_) => return Err(Rejection::UpstreamTimeout),
        Ok(Err(error)) => {
            if caused_by_body_limit(&error) {
                return Err(Rejection::BodyTooLarge);
            }
            tracing::warn!(error = %error, cause = ?error.source(), "upstream request failed");
            return Err(Rejection::UpstreamUnavailable);
        }
        Ok(Ok(response)) => response,
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // CORS is the gateway's decision (route allowlist), not the upstream's: an upstream's
    // `Access-Control-Allow-Origin: *` must not widen it.
    let upstream_cors: Vec<_> = parts
        .headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in upstream_cors {
        parts.headers.remove(name);
    }
    let is_event_stream = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    if is_event_stream {
        // Tell a buffering proxy in front of us (nginx) to pass events through immediately.
        parts
            .headers
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    Ok(Response::from_parts(
        parts,
        body.map_err(Into::into).boxed_unsync(),
    ))
}

/// The request body was cut by our size limit while streaming (no `Content-Length`).
fn caused_by_body_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}
