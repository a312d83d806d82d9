//! The one mapping from "why not" to the HTTP answer. Every phase fails with a
//! [`Rejection`]; [`Rejection::into_response`] is the single exhaustive `match` that picks
//! status, `WWW-Authenticate` and body (RFC 6750 / RFC 6749 §5.2 shapes for auth failures,
//! JSON-RPC errors where an MCP client reads the body). Converting never logs: the request's
//! audit event records the reason once.

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use serde_json::json;

use crate::body::{self, Body};
use crate::metadata::{BearerError, Challenge};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Rejection {
    #[error("ambiguous path: {0}")]
    AmbiguousPath(&'static str),
    #[error("no route")]
    NoRoute,
    #[error("duplicate {0} header")]
    DuplicateHeader(HeaderName),
    #[error("malformed {0} header")]
    MalformedHeader(&'static str),
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    #[error("host not allowed")]
    HostNotAllowed,
    #[error("origin not allowed")]
    OriginNotAllowed,
    #[error("method not allowed")]
    /// With the route's `Allow` value (RFC 9110 §15.5.6).
    MethodNotAllowed(HeaderValue),
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("malformed request body (framing)")]
    MalformedBody,
    /// The HTTP/1.1 request itself (head or framing) cannot be read as one message.
    #[error("malformed HTTP request: {0}")]
    MalformedMessage(&'static str),
    /// The client stopped sending its request body (slow-POST).
    #[error("request body timed out")]
    BodyTimeout,
    #[error("no credentials")]
    MissingCredential(Challenge),
    #[error("{1}")]
    MalformedCredential(Challenge, &'static str),
    #[error("{1}")]
    InvalidToken(Challenge, &'static str),
    #[error("insufficient scope")]
    InsufficientScope(Challenge),
    #[error("the route's access rules do not admit this caller")]
    AccessDenied,
    #[error("{1}")]
    VerifierUnavailable(Challenge, &'static str),
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    /// The upstream answered 401: it refused the gateway's own request (its upstream
    /// credential), not the client's token — a new token would not help.
    #[error("the upstream refused the gateway's credentials (401)")]
    UpstreamRefusedGateway,
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// Phase 7: the body could not be read as MCP messages; never forwarded.
    #[error("unreadable MCP message: {0}")]
    McpUnreadable(crate::mcp::jsonrpc::PeekError),
    /// Phase 7: the body is larger than the route reads to decide.
    #[error("request body larger than the route's MCP rules read")]
    McpBodyTooLarge,
    /// Phase 7 on `/verify`: neither a forwarded body nor `Mcp-Method` / `Mcp-Name` say
    /// what is called, and the route does not let undetermined calls pass.
    #[error("the call cannot be determined: forward the body or send Mcp-Method / Mcp-Name")]
    McpUndetermined,
    /// Phase 7: a body on another method than POST to a route with rules: only a POST's
    /// messages are judged, and an upstream handling every method as JSON-RPC would act on
    /// it.
    #[error("only a POST carries MCP messages: a body on another method is refused")]
    McpBodyNotOnPost,
    /// Phase 7: `Mcp-Method` / `Mcp-Name` disagree with the body.
    #[error("{0}")]
    McpHeaderMismatch(&'static str),
    /// Phase 7: a call needs scopes the token lacks (step-up); `answer` is the JSON-RPC error.
    #[error("insufficient scope for this call")]
    McpStepUp {
        challenge: Challenge,
        answer: serde_json::Value,
    },
    /// Phase 8: a rate limit; retry after this many seconds. `id`: the request's, if single.
    #[error("rate limit exceeded")]
    RateLimited {
        retry_after: u64,
        id: Option<serde_json::Value>,
    },
    /// The `Mcp-Session-Id` belongs to another principal (or is unusable): answered as an
    /// unknown session, so the client starts a new one.
    #[error("session not found")]
    SessionNotFound,
    /// The `Mcp-Session-Id` is not known here and the shared session store (Redis) does not
    /// answer: whose it is cannot be checked, so it is refused for now (never let through).
    #[error("session store unavailable")]
    SessionStoreUnavailable,
    /// Phase 9: the route forwards a token obtained for the caller (`origin`: an identity
    /// provider's id, or `route:<id>` for the upstream's own authorization server), and
    /// none is held for them (not a user of the built-in authorization server, never logged
    /// in or connected there, or a refresh was refused): signing in again helps.
    #[error("{}", missing_user_token(origin))]
    UserTokenMissing {
        challenge: Challenge,
        origin: String,
    },
    /// Phase 9: the store, the identity provider or the upstream's authorization server did
    /// not answer for the user's token.
    #[error("the user's upstream token cannot be had right now")]
    UserTokenUnavailable,
    /// Phase 7: refused by a rule; `answer` holds the JSON-RPC error(s) to send.
    #[error("refused by an MCP rule")]
    McpRefused {
        answer: serde_json::Value,
        notifications_only: bool,
    },
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::AmbiguousPath(_)
            | Rejection::DuplicateHeader(_)
            | Rejection::MalformedHeader(_)
            | Rejection::MissingHost
            | Rejection::MalformedBody
            | Rejection::MalformedMessage(_)
            | Rejection::McpUnreadable(_)
            | Rejection::McpHeaderMismatch(_)
            | Rejection::McpUndetermined
            | Rejection::McpBodyNotOnPost
            | Rejection::MalformedCredential(..) => StatusCode::BAD_REQUEST,
            Rejection::NoRoute | Rejection::SessionNotFound => StatusCode::NOT_FOUND,
            Rejection::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Rejection::HostNotAllowed
            | Rejection::OriginNotAllowed
            | Rejection::InsufficientScope(_)
            | Rejection::McpStepUp { .. }
            | Rejection::AccessDenied => StatusCode::FORBIDDEN,
            // The transport specification: a refused notification gets an HTTP error; a
            // refused request is answered (a JSON-RPC error is an answer).
            Rejection::McpRefused {
                notifications_only, ..
            } => {
                if *notifications_only {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::OK
                }
            }
            Rejection::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Rejection::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::BodyTooLarge | Rejection::McpBodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::MissingCredential(_)
            | Rejection::InvalidToken(..)
            | Rejection::UserTokenMissing { .. } => StatusCode::UNAUTHORIZED,
            Rejection::VerifierUnavailable(..)
            | Rejection::SessionStoreUnavailable
            | Rejection::UserTokenUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::UpstreamUnavailable | Rejection::UpstreamRefusedGateway => {
                StatusCode::BAD_GATEWAY
            }
            Rejection::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The challenge to send, if this rejection is about the credential.
    pub fn challenge(&self) -> Option<HeaderValue> {
        match self {
            Rejection::MissingCredential(challenge) => Some(challenge.header(None)),
            Rejection::MalformedCredential(challenge, reason) => {
                Some(challenge.header(Some((BearerError::InvalidRequest, reason))))
            }
            Rejection::InvalidToken(challenge, reason) => {
                Some(challenge.header(Some((BearerError::InvalidToken, reason))))
            }
            Rejection::InsufficientScope(challenge) => Some(challenge.header(Some((
                BearerError::InsufficientScope,
                "the token lacks a required scope",
            )))),
            Rejection::McpStepUp { challenge, .. } => Some(challenge.header(Some((
                BearerError::InsufficientScope,
                "this call needs another scope",
            )))),
            Rejection::UserTokenMissing { challenge, .. } => Some(challenge.header(Some((
                BearerError::InvalidToken,
                "this route needs a token obtained at sign-in: sign in again",
            )))),
            Rejection::VerifierUnavailable(..)
            | Rejection::UserTokenUnavailable
            | Rejection::AccessDenied
            | Rejection::AmbiguousPath(_)
            | Rejection::NoRoute
            | Rejection::DuplicateHeader(_)
            | Rejection::MalformedHeader(_)
            | Rejection::MissingHost
            | Rejection::HostNotAllowed
            | Rejection::OriginNotAllowed
            | Rejection::MethodNotAllowed(_)
            | Rejection::HeadersTooLarge
            | Rejection::BodyTooLarge
            | Rejection::MalformedBody
            | Rejection::MalformedMessage(_)
            | Rejection::BodyTimeout
            | Rejection::UpstreamUnavailable
            | Rejection::UpstreamRefusedGateway
            | Rejection::UpstreamTimeout
            | Rejection::McpUnreadable(_)
            | Rejection::McpBodyTooLarge
            | Rejection::McpHeaderMismatch(_)
            | Rejection::SessionNotFound
            | Rejection::SessionStoreUnavailable
            | Rejection::McpUndetermined
            | Rejection::McpBodyNotOnPost
            | Rejection::RateLimited { .. }
            | Rejection::McpRefused { .. } => None,
        }
    }

    /// The JSON body. OAuth-shaped (`error`, `error_description`) for credential problems,
    /// JSON-RPC-shaped (`id: null`) where an MCP client expects a JSON-RPC message.
    fn body(&self) -> serde_json::Value {
        let description = self.to_string();
        match self {
            Rejection::MissingCredential(_) => {
                json!({"error": "unauthorized", "error_description": "a bearer token is required"})
            }
            Rejection::MalformedCredential(..) => {
                json!({"error": "invalid_request", "error_description": description})
            }
            Rejection::InvalidToken(..) | Rejection::UserTokenMissing { .. } => {
                json!({"error": "invalid_token", "error_description": description})
            }
            Rejection::InsufficientScope(challenge) => json!({
                "error": "insufficient_scope",
                "error_description": "the token lacks a required scope",
                "scope": challenge.scope.as_deref(),
            }),
            Rejection::VerifierUnavailable(..) | Rejection::UserTokenUnavailable => {
                json!({"error": "temporarily_unavailable", "error_description": description})
            }
            Rejection::AccessDenied => {
                json!({"error": "access_denied", "error_description": description})
            }
            Rejection::AmbiguousPath(_)
            | Rejection::DuplicateHeader(_)
            | Rejection::MalformedHeader(_)
            | Rejection::MalformedBody
            | Rejection::MalformedMessage(_)
            | Rejection::BodyTimeout
            | Rejection::MissingHost => {
                json!({"error": "invalid_request", "error_description": description})
            }
            Rejection::NoRoute => json!({"error": "not_found", "error_description": description}),
            Rejection::MethodNotAllowed(_) => {
                json!({"error": "method_not_allowed", "error_description": description})
            }
            Rejection::HeadersTooLarge | Rejection::BodyTooLarge => {
                json!({"error": "too_large", "error_description": description})
            }
            Rejection::HostNotAllowed
            | Rejection::OriginNotAllowed
            | Rejection::UpstreamUnavailable
            | Rejection::UpstreamRefusedGateway
            | Rejection::UpstreamTimeout => json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": {"code": -32000, "message": description},
            }),
            Rejection::McpUnreadable(error) => json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": {"code": error.code(), "message": description},
            }),
            Rejection::RateLimited { retry_after, id } => json!({
                "jsonrpc": "2.0",
                "id": id.clone().unwrap_or(serde_json::Value::Null),
                "error": {"code": -32002, "message": format!("rate limit exceeded; retry in {retry_after} s")},
            }),
            Rejection::SessionNotFound => json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": {"code": -32001, "message": "Session not found"},
            }),
            Rejection::SessionStoreUnavailable => json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": {"code": -32000, "message": "session store unavailable: the session cannot be checked now; retry shortly"},
            }),
            Rejection::McpBodyTooLarge
            | Rejection::McpHeaderMismatch(_)
            | Rejection::McpUndetermined
            | Rejection::McpBodyNotOnPost => json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": {"code": -32600, "message": description},
            }),
            Rejection::McpStepUp { answer, .. } | Rejection::McpRefused { answer, .. } => {
                answer.clone()
            }
        }
    }

    /// A short stable reason for the audit log.
    pub fn reason(&self) -> String {
        self.to_string()
    }

    pub fn into_response(self) -> Response<Body> {
        self.respond_with(self.status())
    }

    /// The same answer with another status (`/verify` may only say 401 or 403).
    pub fn respond_with(&self, status: StatusCode) -> Response<Body> {
        let mut response = Response::new(body::full(self.body().to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let challenge = match (self, status) {
            // `/verify` reports a verifier outage as 401; a 401 always carries a challenge —
            // without `error="invalid_token"`, so clients do not throw away a good token.
            (Rejection::VerifierUnavailable(challenge, _), StatusCode::UNAUTHORIZED) => {
                Some(challenge.header(None))
            }
            _ => self.challenge(),
        };
        if let Some(challenge) = challenge {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if matches!(
            self,
            Rejection::VerifierUnavailable(..) | Rejection::SessionStoreUnavailable
        ) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if let Rejection::RateLimited { retry_after, .. } = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if let Rejection::MethodNotAllowed(allow) = self {
            headers.insert(header::ALLOW, allow.clone());
        }
        response
    }
}

/// What a caller without the route's per-user upstream token is told to do.
fn missing_user_token(origin: &str) -> String {
    match origin.strip_prefix("route:") {
        Some(_) => "this user has not connected to the upstream's authorization server (or the connection ended): sign in again".to_string(),
        None => format!("no {origin} token is held for this user: log in through {origin}"),
    }
}
