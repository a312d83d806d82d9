//! HTTP plumbing shared by the endpoints: bounded bodies, form and query parsing (the
//! `form_urlencoded` crate), cookies, client credentials, and the response shapes
//! (JSON with `no-store`, HTML pages with a strict CSP, redirects, CORS).

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::body::{self, Body};

/// Largest form or JSON body an endpoint reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a client may take to send it.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than 64 KB")]
    TooLarge,
    #[error("the request body could not be read")]
    Unreadable,
}

pub async fn read_body<B>(body: B) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let collect = Limited::new(body, MAX_BODY_BYTES).collect();
    match tokio::time::timeout(BODY_TIMEOUT, collect).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(BodyError::TooLarge)
        }
        _ => Err(BodyError::Unreadable),
    }
}

/// Parameters of a form body or query string. RFC 6749 §3.1: a parameter sent twice is an
/// error, so duplicates are reported rather than silently resolved.
#[derive(Debug, Default)]
pub struct Params {
    values: HashMap<String, String>,
    duplicated: Option<String>,
}

impl Params {
    pub fn parse(input: &[u8]) -> Params {
        let mut params = Params::default();
        for (name, value) in form_urlencoded::parse(input) {
            if params.values.contains_key(name.as_ref()) {
                params.duplicated.get_or_insert_with(|| name.to_string());
            } else {
                params.values.insert(name.into_owned(), value.into_owned());
            }
        }
        params
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The first parameter that appeared more than once.
    pub fn duplicated(&self) -> Option<&str> {
        self.duplicated.as_deref()
    }
}

/// `Content-Type` is `application/x-www-form-urlencoded` (parameters allowed).
pub fn is_form(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|m| m == "application/x-www-form-urlencoded")
}

pub fn is_json(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|m| m == "application/json")
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// A cookie's value by name.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// `Authorization: Basic` credentials, each part form-decoded (RFC 6749 §2.3.1).
pub fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decode = || -> Option<(String, String)> {
        let raw = STANDARD.decode(encoded.trim()).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (id, secret) = text.split_once(':')?;
        let unescape = |s: &str| -> Option<String> {
            let plus_safe = s.replace('+', "%20");
            percent_encoding::percent_decode_str(&plus_safe)
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned())
        };
        Some((unescape(id)?, unescape(secret)?))
    };
    Some(decode().ok_or(()))
}

/// JSON answer that must never be cached (tokens, registrations, errors).
pub fn json_no_store(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(body::full(value.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// A public JSON document (metadata, keys): cacheable for a short while.
pub fn json_public(value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(body::full(value.to_string()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// Browser-facing HTML: no framing (clickjacking on the consent button), no scripts, no
/// external anything, never cached.
pub fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut response = Response::new(body::full(page));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `302 Found` to `location` (never cached: it may carry a code).
pub fn redirect(location: &str) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `url` with `params` appended to its query (keeping any query it has).
pub fn with_query(url: &str, params: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        serializer.append_pair(name, value);
    }
    let query = serializer.finish();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

/// CORS for browser-based MCP clients on the endpoints they call directly (metadata, keys,
/// token, registration, revocation). No credentials: these endpoints take none from cookies.
pub fn allow_cors(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("WWW-Authenticate"),
    );
}

/// The answer to a CORS preflight.
pub fn preflight() -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    allow_cors(&mut response);
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, MCP-Protocol-Version"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

/// `Set-Cookie` for the browser session: HttpOnly, SameSite=Lax (the redirect back from
/// an identity provider is a top-level GET), `__Host-` and `Secure` behind https.
pub fn session_cookie(name: &str, value: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_report_duplicates_and_decode() {
        let p = Params::parse(b"a=1&b=x+y%21&a=2&empty=");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), Some("x y!"));
        assert_eq!(p.get("empty"), None);
        assert_eq!(p.duplicated(), Some("a"));
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut headers = HeaderMap::new();
        let encoded = STANDARD.encode("my%3Aclient:s%2Bcret+x");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        assert_eq!(
            basic_credentials(&headers),
            Some(Ok(("my:client".to_string(), "s+cret x".to_string())))
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert_eq!(basic_credentials(&headers), Some(Err(())));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_credentials(&headers), None);
    }

    #[test]
    fn query_is_appended() {
        assert_eq!(
            with_query("https://a/cb", &[("code", "x y"), ("state", "&")]),
            "https://a/cb?code=x+y&state=%26"
        );
        assert_eq!(
            with_query("https://a/cb?k=1", &[("code", "c")]),
            "https://a/cb?k=1&code=c"
        );
    }
}
