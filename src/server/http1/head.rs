//! Heads on a client's HTTP/1.1 connection: the request head the gateway reads, how that
//! request's body is delimited (RFC 9112 §6), and the response head it writes.
//!
//! Pure functions over bytes, tested by table, by property and by fuzzing
//! (`fuzz/fuzz_targets/client_request.rs`). Field syntax is `httparse`'s (hyper's parser);
//! the framing decisions are hyper's where the test suite pinned them (identical
//! `Content-Length` headers pass, `chunked` wins over `Content-Length` and the connection
//! then closes) and stricter elsewhere: a `Content-Length` list, two different lengths, a
//! transfer coding other than `chunked` alone, or `Transfer-Encoding` on HTTP/1.0 is a 400
//! — a request two parsers could delimit two ways never reaches the pipeline.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

use crate::text::push_decimal;
use crate::upstream::head::{field_name, lists_token, parse_length, push_fields};

/// Fields the rewrite may add to a request (eight identity headers, three `X-Forwarded-*`,
/// the request id).
const ROOM_FOR_REWRITE: usize = 12;

/// The most header fields in one request head (hyper's limit was 100).
pub const MAX_HEADERS: usize = 128;

/// Why a request head is refused; the connection answers and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed request head: {0}")]
    Malformed(httparse::Error),
    #[error("request head too large")]
    TooLarge,
    #[error("invalid request target")]
    Target,
    #[error("invalid header field {0:?}")]
    Field(String),
    #[error("ambiguous request body length: {0}")]
    Framing(&'static str),
    /// `CONNECT` asks for a tunnel; the gateway opens none (and a 2xx answer to it would
    /// turn the connection into one for a front proxy that reads it so).
    #[error("CONNECT is not served")]
    Connect,
}

impl HeadError {
    /// 431 for a head over the limits, 400 for everything else.
    pub fn status(&self) -> StatusCode {
        match self {
            HeadError::TooLarge | HeadError::Malformed(httparse::Error::TooManyHeaders) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: RequestFraming,
    /// Whether the client allows another request on the connection after this one: HTTP/1.1
    /// unless `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`, and never
    /// after a request that carried both `Transfer-Encoding` and `Content-Length` (RFC 9112
    /// §6.1: the server closes after answering it).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1: the client waits for `100 Continue` before it
    /// sends the body.
    pub expects_continue: bool,
}

/// Parses the request head at the start of `buf`. `Ok(None)` while it is incomplete (and
/// under `max_bytes`); otherwise the head, split off the front of `buf` (the bytes behind it
/// stay: the body, or a pipelined request). Header values share the head's bytes.
pub fn parse_request_head(
    buf: &mut BytesMut,
    max_bytes: usize,
) -> Result<Option<RequestHead>, HeadError> {
    // Uninitialized slots: zeroing 128 of them cost more than parsing a typical head.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let length = match request.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() >= max_bytes => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(HeadError::Malformed(error)),
    };
    if length > max_bytes {
        return Err(HeadError::TooLarge);
    }
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed(httparse::Error::Token))?;
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // One copy of the head, which the target and every value share: one allocation, and
    // the read buffer stays the connection's alone (splitting it would share it, and keep it
    // alive for as long as any value lives).
    let head = Bytes::copy_from_slice(&buf[..length]);
    let start = buf.as_ptr() as usize;
    let shared = |slice: &[u8]| {
        let from = slice.as_ptr() as usize - start;
        head.slice(from..from + slice.len())
    };
    let target = request.path.unwrap_or_default().as_bytes();
    // A request target has no fragment (RFC 9112 §3.2); `http`'s parser would cut it off
    // silently, and the path checks would never see the `#` they refuse.
    if target.contains(&b'#') {
        return Err(HeadError::Target);
    }
    let uri = Uri::from_maybe_shared(shared(target)).map_err(|_| HeadError::Target)?;
    // Room for what the rewrite adds before the request goes upstream (identity headers,
    // `X-Forwarded-*`, the request id): growing the map then would move every entry.
    let mut headers = crate::header_maps::take(request.headers.len() + ROOM_FOR_REWRITE);
    for field in request.headers.iter() {
        let invalid = || HeadError::Field(field.name.to_owned());
        let name = field_name(field.name.as_bytes()).map_err(|_| invalid())?;
        let value = HeaderValue::from_maybe_shared(shared(field.value)).map_err(|_| invalid())?;
        headers.append(name, value);
    }
    buf.advance(length);
    finish(method, uri, version, headers).map(Some)
}

/// The framing, keep-alive and expectation of a parsed head.
fn finish(
    method: Method,
    uri: Uri,
    version: Version,
    mut headers: HeaderMap,
) -> Result<RequestHead, HeadError> {
    let connection_lists = |token: &[u8]| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|value| lists_token(value.as_bytes(), token))
    };
    if method == Method::CONNECT {
        return Err(HeadError::Connect);
    }
    let mut keep_alive = if version == Version::HTTP_11 {
        !connection_lists(b"close")
    } else {
        connection_lists(b"keep-alive")
    };
    let framing = request_framing(version, &headers)?;
    match framing {
        RequestFraming::Chunked if headers.contains_key(header::CONTENT_LENGTH) => {
            headers.remove(header::CONTENT_LENGTH);
            keep_alive = false;
        }
        // Identical lengths (the only repeated ones `request_framing` lets through) become
        // one field, as hyper made them: the pipeline refuses a repeated one.
        RequestFraming::Length(_) => {
            if let Some(length) = headers.get(header::CONTENT_LENGTH).cloned() {
                if headers
                    .get_all(header::CONTENT_LENGTH)
                    .iter()
                    .nth(1)
                    .is_some()
                {
                    headers.insert(header::CONTENT_LENGTH, length);
                }
            }
        }
        RequestFraming::Chunked => {}
    }
    let expects_continue = version == Version::HTTP_11
        && headers
            .get(header::EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    Ok(RequestHead {
        method,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expects_continue,
    })
}

/// How the body of a request with `headers` is delimited (RFC 9112 §6.3), or why that
/// cannot be told without guessing.
pub fn request_framing(version: Version, headers: &HeaderMap) -> Result<RequestFraming, HeadError> {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(coding) = codings.next() {
        if version == Version::HTTP_10 {
            return Err(HeadError::Framing("Transfer-Encoding on HTTP/1.0"));
        }
        if codings.next().is_some()
            || !coding
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
        {
            return Err(HeadError::Framing("a transfer coding other than chunked"));
        }
        return Ok(RequestFraming::Chunked);
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let parsed = parse_length(value.as_bytes())
            .ok_or(HeadError::Framing("an invalid Content-Length"))?;
        if length.is_some_and(|seen| seen != parsed) {
            return Err(HeadError::Framing("two different Content-Length values"));
        }
        length = Some(parsed);
    }
    Ok(RequestFraming::Length(length.unwrap_or(0)))
}

/// How the gateway delimits a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body follows the head (`HEAD`, `204`, `304`); `Content-Length` as given, if any.
    NoBody(Option<u64>),
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client and a body of unknown length).
    UntilClose,
}

/// The framing of an answer with `status` and a body of `exact` length (if known) to a
/// `method` request of `version`.
pub fn response_framing(
    method: &Method,
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    exact: Option<u64>,
) -> ResponseFraming {
    if status.is_informational() || status == StatusCode::NO_CONTENT {
        return ResponseFraming::NoBody(None);
    }
    if method == Method::HEAD || status == StatusCode::NOT_MODIFIED {
        let given = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| parse_length(value.as_bytes()));
        let known = exact.filter(|&length| length > 0 && status != StatusCode::NOT_MODIFIED);
        return ResponseFraming::NoBody(given.or(known));
    }
    // A body of unknown length whose map names one (a proxied answer's own
    // `Content-Length`) is sent with it, as hyper did; the writer holds the body to it.
    let given = || {
        let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
        let first = parse_length(values.next()?.as_bytes())?;
        values.next().is_none().then_some(first)
    };
    match exact.or_else(given) {
        Some(length) => ResponseFraming::Length(length),
        None if version == Version::HTTP_11 => ResponseFraming::Chunked,
        None => ResponseFraming::UntilClose,
    }
}

/// What the `Connection` field says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// HTTP/1.1 kept alive: nothing to say.
    KeepAlive,
    /// An HTTP/1.0 client that asked to keep the connection.
    KeepAlive10,
    Close,
}

/// Response fields the gateway writes itself, whatever the map holds.
fn written_by_gateway(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::CONNECTION
        || name == "keep-alive"
}

/// Writes an HTTP/1.1 response head into `out`; `date` is the `Date` value, written when the
/// map has none. Names and values come from `http` types, which cannot hold CR, LF or NUL.
pub fn encode_response_head(
    status: StatusCode,
    headers: &HeaderMap,
    framing: ResponseFraming,
    persistence: Persistence,
    date: &[u8],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    push_fields(headers, written_by_gateway, out);
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    let length = match framing {
        ResponseFraming::NoBody(length) => length,
        ResponseFraming::Length(length) => Some(length),
        ResponseFraming::Chunked => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            None
        }
        ResponseFraming::UntilClose => None,
    };
    if let Some(length) = length {
        out.extend_from_slice(b"content-length: ");
        push_decimal(length, out);
        out.extend_from_slice(b"\r\n");
    }
    match persistence {
        Persistence::KeepAlive => {}
        Persistence::KeepAlive10 => out.extend_from_slice(b"connection: keep-alive\r\n"),
        Persistence::Close => out.extend_from_slice(b"connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// The size line of a chunk of `length` bytes (`1a2b\r\n`).
pub fn push_chunk_size(length: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut rest = length;
    loop {
        at -= 1;
        digits[at] = HEX[rest & 0xf];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    const MAX: usize = 8192;

    /// `bytes` parsed as one buffer: the outcome and what is left behind the head.
    fn parse_all(
        bytes: &[u8],
        max_bytes: usize,
    ) -> (Result<Option<RequestHead>, HeadError>, Bytes) {
        let mut buf = BytesMut::from(bytes);
        let parsed = parse_request_head(&mut buf, max_bytes);
        (parsed, buf.freeze())
    }

    fn parsed(text: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_all(text.as_bytes(), MAX).0
    }

    fn head(text: &str) -> RequestHead {
        parsed(text).expect("valid").expect("complete")
    }

    #[test]
    fn a_request_head_and_what_follows_it() {
        let (parsed, rest) = parse_all(
            b"POST /mcp?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\n{}GET",
            MAX,
        );
        let head = parsed.unwrap().unwrap();
        assert_eq!(head.method, Method::POST);
        assert_eq!(head.uri, "/mcp?x=1");
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.framing, RequestFraming::Length(2));
        assert!(head.keep_alive);
        assert!(!head.expects_continue);
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(&rest[..], b"{}GET");
    }

    #[test]
    fn incomplete_heads_wait_until_the_limit() {
        assert!(parsed("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        assert!(parsed("").unwrap().is_none());
        let long = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(MAX));
        assert_eq!(parsed(&long).unwrap_err(), HeadError::TooLarge);
        let complete_but_long = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX));
        assert_eq!(parsed(&complete_but_long).unwrap_err(), HeadError::TooLarge);
        assert_eq!(HeadError::TooLarge.status(), 431);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let error = parsed(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err();
        assert_eq!(error.status(), 431, "{error}");
    }

    #[test]
    fn framing_table() {
        let framed = |fields: &str| parsed(&format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n"));
        let ok = |fields: &str| framed(fields).unwrap().unwrap();
        assert_eq!(ok("").framing, RequestFraming::Length(0));
        assert_eq!(
            ok("Content-Length: 5\r\n").framing,
            RequestFraming::Length(5)
        );
        let twice = ok("Content-Length: 5\r\nContent-Length: 5\r\n");
        assert_eq!(twice.framing, RequestFraming::Length(5));
        assert_eq!(twice.headers.get_all("content-length").iter().count(), 1);
        assert_eq!(
            ok("Transfer-Encoding: Chunked\r\n").framing,
            RequestFraming::Chunked
        );
        let both = ok("Content-Length: 100\r\nTransfer-Encoding: chunked\r\n");
        assert_eq!(both.framing, RequestFraming::Chunked);
        assert!(!both.headers.contains_key(header::CONTENT_LENGTH));
        assert!(!both.keep_alive, "closed after answering");
        for refused in [
            "Content-Length: abc\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: +1\r\n",
            "Content-Length: 2, 2\r\n",
            "Content-Length: 2\r\nContent-Length: 3\r\n",
            "Content-Length: 99999999999999999999\r\n",
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ] {
            let error = framed(refused).unwrap_err();
            assert!(matches!(error, HeadError::Framing(_)), "{refused}: {error}");
            assert_eq!(error.status(), 400);
        }
        let old = parsed("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(old, Err(HeadError::Framing(_))));
    }

    #[test]
    fn a_target_with_a_fragment_is_refused_not_cut() {
        for target in ["/mcp#x", "/mcp/health#/../admin", "/mcp?q=1#f", "/#"] {
            let refused = parsed(&format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n"));
            assert!(
                matches!(refused, Err(HeadError::Target)),
                "{target}: {refused:?}"
            );
        }
        assert!(parsed("GET /mcp?q=%23 HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
    }

    #[test]
    fn persistence_and_expectations() {
        assert!(!head("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(head("POST / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n").expects_continue);
        assert!(!head("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expects_continue);
        assert!(!head("POST / HTTP/1.1\r\nExpect: other\r\n\r\n").expects_continue);
    }

    #[test]
    fn malformed_heads_are_400() {
        for bad in [
            "GET /mcp HTTP/1.1 extra\r\n\r\n",
            "GET /mcp HTTP/1.1\r\nX-User-Id : mallory\r\n\r\n",
            "GET /mcp HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n",
            "GET /mcp HTTP/2.0\r\n\r\n",
            "GET  /mcp HTTP/1.1\r\n\r\n",
            "G\x01T / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            "GET http://[::1 HTTP/1.1\r\n\r\n",
        ] {
            let error = parsed(bad).expect_err(bad);
            assert_eq!(error.status(), 400, "{bad:?}: {error}");
        }
        // Bare LF line endings are accepted (as hyper did).
        assert_eq!(head("GET /mcp HTTP/1.1\nX-Bare-Lf: 1\n\n").uri, "/mcp");
        // Absolute form keeps its authority for the router to compare.
        let absolute = head("GET http://a.example/mcp HTTP/1.1\r\n\r\n");
        assert_eq!(absolute.uri.path(), "/mcp");
        assert_eq!(absolute.uri.host(), Some("a.example"));
    }

    fn encoded(
        status: StatusCode,
        headers: &HeaderMap,
        framing: ResponseFraming,
        persistence: Persistence,
    ) -> String {
        let mut out = Vec::new();
        encode_response_head(status, headers, framing, persistence, b"D", &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn response_heads() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        headers.insert("connection", HeaderValue::from_static("upgrade"));
        assert_eq!(
            encoded(
                StatusCode::OK,
                &headers,
                ResponseFraming::Length(12345),
                Persistence::KeepAlive
            ),
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndate: D\r\ncontent-length: 12345\r\n\r\n"
        );
        assert_eq!(
            encoded(
                StatusCode::from_u16(299).unwrap(),
                &HeaderMap::new(),
                ResponseFraming::Chunked,
                Persistence::Close
            ),
            "HTTP/1.1 299 \r\ndate: D\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        let mut dated = HeaderMap::new();
        dated.insert("date", HeaderValue::from_static("then"));
        assert_eq!(
            encoded(
                StatusCode::NO_CONTENT,
                &dated,
                ResponseFraming::NoBody(None),
                Persistence::KeepAlive10
            ),
            "HTTP/1.1 204 No Content\r\ndate: then\r\nconnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn response_framing_table() {
        let none = HeaderMap::new();
        let mut given = HeaderMap::new();
        given.insert("content-length", HeaderValue::from_static("42"));
        let ok = StatusCode::OK;
        let v11 = Version::HTTP_11;
        let framing = |method: &Method, version, status, headers, exact| {
            response_framing(method, version, status, headers, exact)
        };
        assert_eq!(
            framing(&Method::GET, v11, ok, &none, Some(3)),
            ResponseFraming::Length(3)
        );
        assert_eq!(
            framing(&Method::GET, v11, ok, &given, None),
            ResponseFraming::Length(42),
            "a proxied answer's own length"
        );
        assert_eq!(
            framing(&Method::GET, v11, ok, &given, Some(3)),
            ResponseFraming::Length(3),
            "the body's exact length wins"
        );
        assert_eq!(
            framing(&Method::GET, v11, ok, &none, None),
            ResponseFraming::Chunked
        );
        assert_eq!(
            framing(&Method::GET, Version::HTTP_10, ok, &none, None),
            ResponseFraming::UntilClose
        );
        assert_eq!(
            framing(&Method::HEAD, v11, ok, &given, Some(0)),
            ResponseFraming::NoBody(Some(42))
        );
        assert_eq!(
            framing(&Method::HEAD, v11, ok, &none, Some(7)),
            ResponseFraming::NoBody(Some(7))
        );
        assert_eq!(
            framing(&Method::GET, v11, StatusCode::NO_CONTENT, &given, Some(0)),
            ResponseFraming::NoBody(None)
        );
        assert_eq!(
            framing(&Method::GET, v11, StatusCode::NOT_MODIFIED, &given, Some(0)),
            ResponseFraming::NoBody(Some(42))
        );
    }

    #[test]
    fn numbers() {
        for (value, text) in [
            (0u64, "0"),
            (7, "7"),
            (10, "10"),
            (u64::MAX, "18446744073709551615"),
        ] {
            let mut out = Vec::new();
            push_decimal(value, &mut out);
            assert_eq!(out, text.as_bytes());
        }
        for (value, text) in [
            (0usize, "0\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (0xabcdef, "abcdef\r\n"),
        ] {
            let mut out = Vec::new();
            push_chunk_size(value, &mut out);
            assert_eq!(out, text.as_bytes());
        }
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let (parsed, rest) = parse_all(&bytes, 512);
            match parsed {
                Ok(Some(_)) => prop_assert!(rest.len() < bytes.len()),
                Ok(None) => prop_assert_eq!(rest.len(), bytes.len()),
                Err(_) => {}
            }
        }

        #[test]
        fn a_head_is_split_exactly_at_its_end(
            path in "/[a-z0-9/]{0,20}",
            value in "[ -~]{0,40}",
            tail in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let text = format!("GET {path} HTTP/1.1\r\nX-V: {value}\r\n\r\n");
            let mut bytes = text.clone().into_bytes();
            bytes.extend_from_slice(&tail);
            let (parsed, rest) = parse_all(&bytes, MAX);
            let head = parsed.unwrap().unwrap();
            prop_assert_eq!(head.uri.path(), path.as_str());
            prop_assert_eq!(head.headers["x-v"].as_bytes(), value.trim().as_bytes());
            prop_assert_eq!(&rest[..], &tail[..]);
        }

        #[test]
        fn lengths_round_trip(length in 0u64..10_000_000_000_000_000_000) {
            let mut headers = HeaderMap::new();
            headers.insert("content-length", HeaderValue::from(length));
            prop_assert_eq!(
                request_framing(Version::HTTP_11, &headers),
                Ok(RequestFraming::Length(length))
            );
        }
    }
}
