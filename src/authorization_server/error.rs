//! OAuth error answers, rendered in one place: RFC 6749 §5.2 bodies for the token,
//! revocation and introspection endpoints, RFC 7591 §3.2.2 for registration, and the
//! `error=` redirect of §4.1.2.1 for the authorization endpoint.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde_json::json;

use super::http::json_no_store;
use super::store::StoreError;
use crate::body::Body;

/// The error codes we answer with (RFC 6749, 7009, 7591, 8707).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    InvalidTarget,
    AccessDenied,
    UnsupportedResponseType,
    InvalidRedirectUri,
    InvalidClientMetadata,
    TemporarilyUnavailable,
    ServerError,
    SlowDown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
            ErrorCode::InvalidClientMetadata => "invalid_client_metadata",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::ServerError => "server_error",
            ErrorCode::SlowDown => "slow_down",
        }
    }
}

/// An OAuth error with its human description (printable ASCII, no quotes: it may end up in
/// a header or a redirect).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
    /// The client authenticated with HTTP Basic: a 401 then carries `WWW-Authenticate`.
    pub basic_challenge: bool,
    /// Seconds until a rate limit lets the client in again (`slow_down`).
    pub retry_after: u64,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: sanitize(&description.into()),
            basic_challenge: false,
            retry_after: 60,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }

    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidClient, description)
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = seconds.max(1);
        self
    }

    pub fn with_basic_challenge(mut self, basic: bool) -> Self {
        self.basic_challenge = basic;
        self
    }

    pub fn status(&self) -> StatusCode {
        match self.code {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::SlowDown => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub fn response(&self) -> Response<Body> {
        let mut response = json_no_store(
            self.status(),
            &json!({"error": self.code.as_str(), "error_description": self.description}),
        );
        if self.code == ErrorCode::InvalidClient && self.basic_challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"token\", charset=\"UTF-8\""),
            );
        }
        if self.code == ErrorCode::SlowDown {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after));
        }
        response
    }
}

/// A store failure becomes a retryable 503; the detail goes to the log, not the client.
impl From<StoreError> for OAuthError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "authorization server store failed");
        OAuthError::new(
            ErrorCode::TemporarilyUnavailable,
            "the authorization server cannot reach its store; retry shortly",
        )
    }
}

/// RFC 6749 §5.2: `error_description` is printable ASCII without `"` and backslash. Client-supplied
/// text that ends up in a description is filtered, not trusted.
fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| (' '..='~').contains(c) && !matches!(c, '"' | '\\'))
        .take(300)
        .collect()
}
