//! Heads on an upstream HTTP/1.1 connection: the request head the gateway writes, the
//! response head it reads, and how that response's body is delimited (RFC 9112 §6.3).
//!
//! Pure functions over bytes, so that what an upstream may send is tested by table, by
//! property and by fuzzing (`fuzz/fuzz_targets/upstream_answer.rs`). Field syntax is
//! `httparse`'s (hyper's own parser); what is decided here is stricter than RFC 9112 allows
//! a recipient to be, on purpose: an answer whose length two parsers could read two ways
//! (`Transfer-Encoding` with `Content-Length`, two lengths, a coding other than `chunked`)
//! is refused with a 502, never guessed at — the same bytes would then be read one way by
//! the gateway and another by whoever shares the connection next.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// The largest response head read from an upstream (hyper's client allowed ~400 KB).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields in one response head (or one chunked trailer section).
pub const MAX_HEADERS: usize = 128;

/// Why an upstream's response head is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed response head: {0}")]
    Malformed(httparse::Error),
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("invalid response header field {0:?}")]
    InvalidField(String),
    #[error("ambiguous response length: {0}")]
    Framing(&'static str),
    #[error("101 Switching Protocols to a request that asked for no upgrade")]
    UnaskedUpgrade,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
}

impl ResponseHead {
    /// An interim answer (`100 Continue`, `103 Early Hints`): skipped, the real one follows.
    pub fn is_interim(&self) -> bool {
        self.status.is_informational()
    }

    /// Whether the connection may carry another request after this answer's body.
    pub fn keeps_alive(&self) -> bool {
        self.version == Version::HTTP_11
            && !self
                .headers
                .get_all(header::CONNECTION)
                .iter()
                .any(|value| lists_token(value.as_bytes(), b"close"))
    }
}

/// Parses the response head at the start of `buf`: `Ok(None)` while it is incomplete,
/// otherwise the head and its length in bytes.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    // Uninitialized slots: zeroing 128 of them cost more than parsing a typical head.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(HeadError::Malformed(error)),
    };
    if length > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(HeadError::Malformed(httparse::Error::Status))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(HeadError::UnaskedUpgrade);
    }
    // One copy of the head, which every value shares, rather than one allocation per value;
    // a copy, not a piece of the connection's read buffer, which it would keep alive.
    let head = Bytes::copy_from_slice(&buf[..length]);
    let headers = fields_into_map(response.headers, |value| {
        let from = value.as_ptr() as usize - buf.as_ptr() as usize;
        head.slice(from..from + value.len())
    })?;
    Ok(Some((
        ResponseHead {
            status,
            version,
            headers,
        },
        length,
    )))
}

/// Header fields as parsed by `httparse` into a map (names lowercased by `http`).
pub fn header_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, HeadError> {
    fields_into_map(fields, Bytes::copy_from_slice)
}

/// `fields` into a map, each value's bytes as `value_bytes` gives them.
fn fields_into_map(
    fields: &[httparse::Header<'_>],
    value_bytes: impl Fn(&[u8]) -> Bytes,
) -> Result<HeaderMap, HeadError> {
    // Room for the two the gateway adds to every streamed answer (request id,
    // `X-Accel-Buffering`) without growing the map, which hyper keeps for the connection's
    // next answer: no larger, for the same reason.
    let mut headers = crate::header_maps::take(fields.len() + 2);
    for field in fields {
        let invalid = || HeadError::InvalidField(field.name.to_owned());
        let name = field_name(field.name.as_bytes()).map_err(|_| invalid())?;
        let value =
            HeaderValue::from_maybe_shared(value_bytes(field.value)).map_err(|_| invalid())?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: an answer to `HEAD`, a `204` or a `304`.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the upstream closes the connection (which then cannot be reused).
    UntilClose,
}

/// How the body of `head`, answering a `method` request, is delimited — or why it cannot be
/// told without guessing.
pub fn response_framing(method: &Method, head: &ResponseHead) -> Result<BodyFraming, HeadError> {
    if method == Method::HEAD
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED
    {
        return Ok(BodyFraming::Empty);
    }
    let mut codings = head.headers.get_all(header::TRANSFER_ENCODING).iter();
    let mut lengths = head.headers.get_all(header::CONTENT_LENGTH).iter();
    match (codings.next(), lengths.next()) {
        (Some(_), Some(_)) => Err(HeadError::Framing(
            "both Transfer-Encoding and Content-Length",
        )),
        (Some(coding), None) => {
            if codings.next().is_some() || !is_chunked(coding.as_bytes()) {
                return Err(HeadError::Framing("a transfer coding other than chunked"));
            }
            Ok(BodyFraming::Chunked)
        }
        (None, Some(length)) => {
            if lengths.next().is_some() {
                return Err(HeadError::Framing("more than one Content-Length"));
            }
            parse_length(length.as_bytes())
                .map(BodyFraming::Length)
                .ok_or(HeadError::Framing("an invalid Content-Length"))
        }
        (None, None) => Ok(BodyFraming::UntilClose),
    }
}

/// `chunked`, alone, in any case, with optional surrounding whitespace.
fn is_chunked(value: &[u8]) -> bool {
    value.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// Names outside the standard set that front proxies and MCP clients send on most requests
/// (and MCP servers on most answers): taken from here rather than allocated for every head
/// (`HeaderName::from_bytes` copies a name it does not know). Lower case, as parsed names
/// are.
static FREQUENT_NAMES: [HeaderName; 17] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("last-event-id"),
    HeaderName::from_static("mcp-session-id"),
    HeaderName::from_static("x-original-uri"),
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-uri"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-original-method"),
    HeaderName::from_static("x-forwarded-method"),
    HeaderName::from_static("mcp-protocol-version"),
    HeaderName::from_static("mcp-method"),
    HeaderName::from_static("mcp-name"),
];

/// A field's name as `HeaderName::from_bytes` reads it, without an allocation for the
/// frequent names above.
pub fn field_name(bytes: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    // Every frequent name starts with one of these letters, most standard names with
    // another: those are parsed without looking through the list.
    let may_be_frequent = bytes
        .first()
        .is_some_and(|first| matches!(first.to_ascii_lowercase(), b'x' | b'm' | b'k' | b'l'));
    if !may_be_frequent {
        return HeaderName::from_bytes(bytes);
    }
    let frequent = FREQUENT_NAMES.iter().find(|known| {
        let known = known.as_str().as_bytes();
        known.len() == bytes.len() && known.eq_ignore_ascii_case(bytes)
    });
    match frequent {
        Some(known) => Ok(known.clone()),
        None => HeaderName::from_bytes(bytes),
    }
}

/// A `Content-Length` value: 1 to 19 ASCII digits (no sign, no list, no whitespace inside).
pub fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |sum, digit| {
        sum.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
pub fn lists_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&byte| byte == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

/// How the gateway delimits the request body it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body and no framing header (`GET`, `HEAD`, `DELETE`, … with nothing to send).
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the length is not known before the end.
    Chunked,
}

/// Request fields the gateway writes itself, whatever the map holds: the framing is the
/// gateway's, and it never waits for a `100 Continue` (the body follows the head at once).
fn written_by_gateway(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::EXPECT
        || name == header::CONNECTION
}

/// Writes an HTTP/1.1 request head into `out`. `target` is the origin-form request target
/// and `host` the upstream's authority, used when `headers` names no `Host`; `set`'s fields
/// follow the map's (see [`SetFields`]). Names and values come from `http` types, which
/// cannot hold CR, LF or NUL.
pub fn encode_request_head(
    method: &Method,
    target: &str,
    host: &str,
    headers: &HeaderMap,
    set: &SetFields<'_>,
    framing: RequestFraming,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    push_fields(headers, written_by_gateway, out);
    for (name, value) in set {
        push_field(name, value, out);
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(length, out);
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes every field of `headers` but those `skip` names, as `name: value` lines. Names
/// and values come from `http` types, which cannot hold CR, LF or NUL.
pub fn push_fields(headers: &HeaderMap, skip: fn(&HeaderName) -> bool, out: &mut Vec<u8>) {
    for (name, value) in headers {
        if !skip(name) {
            push_field(name, value, out);
        }
    }
}

#[inline]
fn push_field(name: &HeaderName, value: &HeaderValue, out: &mut Vec<u8>) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

use super::SetFields;
use crate::text::push_decimal;

/// Methods whose empty body is sent with no framing header at all (as hyper sends them):
/// `Content-Length: 0` on a `GET` is legal but unusual, and some servers refuse it.
pub fn omits_empty_length(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parsed(text: &str) -> Result<Option<(ResponseHead, usize)>, HeadError> {
        parse_response_head(text.as_bytes())
    }

    fn framing(method: Method, text: &str) -> Result<BodyFraming, HeadError> {
        let (head, _) = parsed(text).unwrap().unwrap();
        response_framing(&method, &head)
    }

    #[test]
    fn a_complete_head_is_parsed_with_its_length() {
        let text =
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-A: 1\r\nx-a: 2\r\n\r\nbody";
        let (head, length) = parsed(text).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(length, text.len() - 4);
        assert_eq!(head.headers["content-type"], "text/event-stream");
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
        assert!(head.keeps_alive());
    }

    #[test]
    fn an_incomplete_head_asks_for_more_until_the_limit() {
        assert!(parsed("HTTP/1.1 200 OK\r\nContent-").unwrap().is_none());
        assert!(parsed("").unwrap().is_none());
        let huge = format!("HTTP/1.1 200 OK\r\nx-big: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parsed(&huge).unwrap_err(), HeadError::TooLarge);
        let complete_but_huge = format!("{huge}\r\n\r\n");
        assert_eq!(parsed(&complete_but_huge).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn malformed_heads_are_refused() {
        for text in [
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\r\n folded\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx : a\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\rb\r\n\r\n",
            "ICY 200 OK\r\n\r\n",
        ] {
            assert!(parsed(text).is_err(), "{text:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert!(parsed(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).is_err());
        assert_eq!(
            parsed("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n").unwrap_err(),
            HeadError::UnaskedUpgrade
        );
    }

    #[test]
    fn interim_answers_and_closing_answers_are_recognised() {
        let (head, _) = parsed("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.is_interim());
        for text in [
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, CLOSE\r\n\r\n",
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
        ] {
            let (head, _) = parsed(text).unwrap().unwrap();
            assert!(!head.keeps_alive(), "{text:?}");
        }
    }

    #[test]
    fn bodies_are_delimited_by_rfc_9112_or_refused() {
        use BodyFraming::*;
        let post = || Method::POST;
        assert_eq!(
            framing(post(), "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n"),
            Ok(Length(42))
        );
        assert_eq!(
            framing(post(), "HTTP/1.1 200 OK\r\nContent-Length:  007 \r\n\r\n"),
            Ok(Length(7))
        );
        assert_eq!(
            framing(
                post(),
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"
            ),
            Ok(Chunked)
        );
        assert_eq!(framing(post(), "HTTP/1.1 200 OK\r\n\r\n"), Ok(UntilClose));
        assert_eq!(
            framing(
                Method::HEAD,
                "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n"
            ),
            Ok(Empty)
        );
        assert_eq!(
            framing(
                post(),
                "HTTP/1.1 204 No Content\r\nContent-Length: 42\r\n\r\n"
            ),
            Ok(Empty)
        );
        assert_eq!(
            framing(
                post(),
                "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            Ok(Empty)
        );
        for text in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
        ] {
            assert!(
                matches!(framing(post(), text), Err(HeadError::Framing(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_request_head_carries_the_gateways_framing_only() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("expect", HeaderValue::from_static("100-continue"));
        headers.insert("connection", HeaderValue::from_static("close"));
        let user = (
            HeaderName::from_static("x-user-id"),
            HeaderValue::from_static("alice"),
        );
        let mut out = Vec::new();
        encode_request_head(
            &Method::POST,
            "/mcp?a=1",
            "up:8080",
            &headers,
            &[(&user.0, &user.1)],
            RequestFraming::Length(12),
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /mcp?a=1 HTTP/1.1\r\nhost: up:8080\r\ncontent-type: application/json\r\nx-user-id: alice\r\ncontent-length: 12\r\n\r\n"
        );
        headers.insert("host", HeaderValue::from_static("named"));
        let mut out = Vec::new();
        encode_request_head(
            &Method::GET,
            "/",
            "up",
            &headers,
            &[],
            RequestFraming::Chunked,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET / HTTP/1.1\r\ncontent-type"), "{text}");
        assert!(
            text.contains("host: named\r\n")
                && text.ends_with("transfer-encoding: chunked\r\n\r\n")
        );
    }

    #[test]
    fn frequent_names_are_read_in_any_case_as_any_name_is() {
        for known in &FREQUENT_NAMES {
            assert!(
                matches!(known.as_str().as_bytes()[0], b'x' | b'm' | b'k' | b'l'),
                "{known} starts with a letter field_name looks for"
            );
        }
        for spelled in [
            "Mcp-Session-Id",
            "X-ORIGINAL-URI",
            "x-forwarded-host",
            "Keep-Alive",
        ] {
            let name = field_name(spelled.as_bytes()).unwrap();
            assert_eq!(name, HeaderName::from_bytes(spelled.as_bytes()).unwrap());
            assert_eq!(name.as_str(), spelled.to_ascii_lowercase());
        }
        assert_eq!(field_name(b"Content-Type").unwrap(), header::CONTENT_TYPE);
        assert_eq!(field_name(b"x-custom").unwrap().as_str(), "x-custom");
        // Not a frequent name's look-alike, and no invalid name let through.
        assert_eq!(
            field_name(b"mcp_session_id").unwrap().as_str(),
            "mcp_session_id"
        );
        assert!(field_name(b"mcp-session id").is_err());
        assert!(field_name(b"").is_err());
        for known in &FREQUENT_NAMES {
            let parsed = HeaderName::from_bytes(known.as_str().as_bytes()).unwrap();
            assert_eq!(&parsed, known, "stored as parsed");
        }
    }

    proptest! {
        /// A field's name reads as `HeaderName::from_bytes` reads it, frequent or not.
        #[test]
        fn field_names_read_as_http_reads_them(
            name in prop_oneof![
                prop::sample::select(FREQUENT_NAMES.to_vec())
                    .prop_flat_map(|known| prop::collection::vec(any::<bool>(), known.as_str().len())
                        .prop_map(move |upper| known.as_str().bytes().zip(upper)
                            .map(|(b, up)| if up { b.to_ascii_uppercase() } else { b })
                            .collect::<Vec<u8>>())),
                prop::collection::vec(any::<u8>(), 0..24),
                // Near misses: a frequent name with one byte changed.
                (prop::sample::select(FREQUENT_NAMES.to_vec()), any::<prop::sample::Index>(), any::<u8>())
                    .prop_map(|(known, at, byte)| {
                        let mut bytes = known.as_str().as_bytes().to_vec();
                        let at = at.index(bytes.len());
                        bytes[at] = byte;
                        bytes
                    }),
            ]
        ) {
            let ours = field_name(&name).ok();
            let theirs = HeaderName::from_bytes(&name).ok();
            prop_assert_eq!(ours, theirs);
        }

        /// Whatever the bytes, parsing never panics, and a parsed head's length lies within
        /// them and within the limit.
        #[test]
        fn parsing_arbitrary_bytes_is_total(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(Some((_, length))) = parse_response_head(&bytes) {
                prop_assert!(length <= bytes.len() && length <= MAX_HEAD_BYTES);
            }
        }

        /// A head the gateway writes parses back (as a request) to the same fields, the set
        /// ones included, with the framing header exactly once and no client-supplied framing.
        #[test]
        fn written_heads_read_back(
            fields in prop::collection::vec(("[a-z][a-z0-9-]{0,12}", "[ -~]{0,20}"), 0..12),
            set_values in prop::collection::vec("[ -~]{0,20}", 0..4),
            length in proptest::option::of(0u64..1_000_000),
        ) {
            // Names no map field has (theirs have no `_`).
            let set: Vec<(HeaderName, HeaderValue)> = set_values
                .iter()
                .enumerate()
                .filter_map(|(i, value)| Some((
                    HeaderName::from_bytes(format!("x_set_{i}").as_bytes()).ok()?,
                    HeaderValue::from_str(value.trim()).ok()?,
                )))
                .collect();
            let set_refs: Vec<(&HeaderName, &HeaderValue)> =
                set.iter().map(|(name, value)| (name, value)).collect();
            let mut headers = HeaderMap::new();
            for (name, value) in &fields {
                if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value.trim())) {
                    headers.append(name, value);
                }
            }
            let framing = length.map_or(RequestFraming::Chunked, RequestFraming::Length);
            let mut out = Vec::new();
            encode_request_head(&Method::POST, "/x", "up", &headers, &set_refs, framing, &mut out);
            let mut parsed_fields = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut parsed_fields);
            prop_assert_eq!(request.parse(&out), Ok(httparse::Status::Complete(out.len())));
            let read = header_map(request.headers).unwrap();
            let framing_fields = read.get_all(header::CONTENT_LENGTH).iter().count()
                + read.get_all(header::TRANSFER_ENCODING).iter().count();
            prop_assert_eq!(framing_fields, 1);
            for (name, value) in &set {
                prop_assert_eq!(read.get_all(name).iter().collect::<Vec<_>>(), vec![value]);
            }
            for (name, value) in &headers {
                if !written_by_gateway(name) {
                    prop_assert!(read.get_all(name).iter().any(|v| v == value));
                }
            }
        }

        #[test]
        fn lengths_parse_exactly_the_decimal_numbers(n in any::<u64>(), pad in 0usize..3) {
            let text = format!("{}{n}", "0".repeat(pad));
            let expected = (text.len() <= 19).then_some(n);
            prop_assert_eq!(parse_length(text.as_bytes()), expected);
        }
    }
}
