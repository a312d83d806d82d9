//! The request as the pipeline sees it. Inline mode builds it from the request head;
//! `/verify` builds it from the forwarded headers. Either way the same phases run on it.

use http::{HeaderMap, Method};

#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// The raw path, exactly as the client sent it (not decoded).
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The authority the client addressed (`Host` or `:authority`), if any.
    pub host: Option<&'a str>,
    /// Headers of the original request: `Authorization`, `Origin`, `Content-Length`, ….
    pub headers: &'a HeaderMap,
}

/// The authority the client addressed: `:authority` / absolute-form first, else the single
/// `Host` header. Two `Host` headers are refused (RFC 9112 §3.2: 400).
pub fn request_host<'a>(
    uri: &'a http::Uri,
    headers: &'a HeaderMap,
) -> Result<Option<&'a str>, super::rejection::Rejection> {
    if let Some(authority) = uri.authority() {
        return Ok(Some(authority.as_str()));
    }
    match super::transport::single(headers, http::header::HOST)? {
        Some(value) => value
            .to_str()
            .map(Some)
            .map_err(|_| super::rejection::Rejection::MalformedHeader("host")),
        None => Ok(None),
    }
}
