//! Adversarial requests as a specification of the answers. Each table row is a request a
//! well-behaved client would not send (written as raw bytes, so nothing in a client library
//! "fixes" it first) and the answer the gateway must give: status, `WWW-Authenticate` and
//! body shape. Every rejected row also proves the upstream received nothing.
//!
//! Requests that cannot be read as one HTTP message (malformed heads, ambiguous framing)
//! are refused by the gateway's HTTP/1.1 server before the pipeline sees them, with the same
//! OAuth-shaped JSON body and the connection closed; either way the upstream is untouched.

mod common;

use std::net::SocketAddr;

use common::gateway::standard_config;
use common::http::raw;
use common::{TestGateway, Upstream, API_KEY};
use Challenge::{Absent, Error, Plain};
use Shape::{JsonRpc, OAuth, Proxied};

/// The challenge every rejection on the standard route carries (before any `error=`).
const CHALLENGE: &str = r#"Bearer resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource/mcp", scope="mcp:tools""#;

/// The identity headers of the standard configuration.
const IDENTITY_HEADERS: [&str; 8] = [
    "x-user-id",
    "x-user-name",
    "x-user-email",
    "x-user-groups",
    "x-auth-scopes",
    "x-auth-client-id",
    "x-auth-method",
    "x-auth-token-id",
];

fn bearer() -> String {
    format!("Bearer {API_KEY}")
}

// ---------------------------------------------------------------------------------------
// Raw requests and answers
// ---------------------------------------------------------------------------------------

/// A request written byte for byte: request line, headers in order and case as given,
/// `Host: <gateway>` unless the row says otherwise, and `Connection: close`.
#[derive(Clone)]
struct Raw {
    line: String,
    headers: Vec<(String, String)>,
    auto_host: bool,
    body: Vec<u8>,
}

/// `line` is the request line without the version (`"GET /mcp"`); HTTP/1.1 is added unless
/// the line already ends in a version.
fn req(line: &str) -> Raw {
    Raw {
        line: line.to_string(),
        headers: Vec::new(),
        auto_host: true,
        body: Vec::new(),
    }
}

impl Raw {
    fn h(mut self, name: &str, value: &str) -> Raw {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn auth(self) -> Raw {
        self.h("Authorization", &bearer())
    }

    /// No automatic `Host` (the row sets its own, or none at all).
    fn no_host(mut self) -> Raw {
        self.auto_host = false;
        self
    }

    fn body(mut self, body: &[u8]) -> Raw {
        self.body = body.to_vec();
        self
    }

    fn bytes(&self, addr: SocketAddr) -> Vec<u8> {
        let mut out = self.line.clone();
        if !out.contains(" HTTP/") {
            out.push_str(" HTTP/1.1");
        }
        out.push_str("\r\n");
        if self.auto_host {
            out.push_str(&format!("Host: {addr}\r\n"));
        }
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    async fn send(&self, addr: SocketAddr) -> RawAnswer {
        RawAnswer::parse(&raw(addr, &self.bytes(addr)).await)
    }
}

#[derive(Debug)]
struct RawAnswer {
    status: u16,
    /// Lowercase names, in order, duplicates kept.
    headers: Vec<(String, String)>,
    body: String,
}

impl RawAnswer {
    fn parse(text: &str) -> RawAnswer {
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete response head in {text:?}"));
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        RawAnswer {
            status,
            headers,
            body: body.to_string(),
        }
    }

    /// The value of a header that must appear at most once.
    fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.all(name).into_iter();
        let first = values.next();
        assert!(values.next().is_none(), "{name} repeated in {self:?}");
        first
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }
}

// ---------------------------------------------------------------------------------------
// Expected answers
// ---------------------------------------------------------------------------------------

/// What `WWW-Authenticate` must be.
#[derive(Debug, Clone, Copy)]
enum Challenge {
    /// No challenge at all (transport-level refusals are not about the credential).
    Absent,
    /// Exactly the route's challenge, without `error=` (RFC 6750 §3.1: no error code when
    /// the request carried no authentication information).
    Plain,
    /// The route's challenge followed by `error="<code>"`.
    Error(&'static str),
}

/// What the body must look like, and whether the upstream was reached.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// The gateway's OAuth-shaped JSON error: `{"error": "<code>", "error_description": …}`.
    OAuth(&'static str),
    /// The gateway's JSON-RPC error: `{"jsonrpc": "2.0", "id": null, "error": {"code": -32000}}`.
    JsonRpc,
    /// An empty body (a `/verify` answer).
    Empty,
    /// Forwarded: the upstream received exactly one request (and echoed it).
    Proxied,
}

/// The whole expected answer.
#[derive(Debug, Clone, Copy)]
struct Want {
    status: u16,
    challenge: Challenge,
    shape: Shape,
}

const fn want(status: u16, challenge: Challenge, shape: Shape) -> Want {
    Want {
        status,
        challenge,
        shape,
    }
}

// The answers, named once (RFC 6750 §3.1 codes; JSON-RPC for transport refusals).
const PROXIED: Want = want(200, Absent, Proxied);
const INVALID_REQUEST: Want = want(400, Absent, OAuth("invalid_request"));
const NOT_FOUND: Want = want(404, Absent, OAuth("not_found"));
const UNAUTHORIZED: Want = want(401, Plain, OAuth("unauthorized"));
const MALFORMED_CREDENTIAL: Want = want(400, Error("invalid_request"), OAuth("invalid_request"));
const INVALID_TOKEN: Want = want(401, Error("invalid_token"), OAuth("invalid_token"));
const FORBIDDEN: Want = want(403, Absent, JsonRpc);
const METHOD_NOT_ALLOWED: Want = want(405, Absent, OAuth("method_not_allowed"));
const BODY_TOO_LARGE: Want = want(413, Absent, OAuth("too_large"));
const HEADERS_TOO_LARGE: Want = want(431, Absent, OAuth("too_large"));
/// Not one readable HTTP message: refused by the HTTP/1.1 server, connection closed.
const MALFORMED_MESSAGE: Want = want(400, Absent, OAuth("invalid_request"));
// `/verify` turns every status other than 200/401 into 403, keeping body and challenge.
const VERIFY_ALLOW: Want = want(200, Absent, Shape::Empty);
const VERIFY_INVALID_REQUEST: Want = want(403, Absent, OAuth("invalid_request"));
const VERIFY_MALFORMED_CREDENTIAL: Want =
    want(403, Error("invalid_request"), OAuth("invalid_request"));

struct Row {
    name: &'static str,
    request: Raw,
    want: Want,
}

fn row(name: &'static str, request: Raw, want: Want) -> Row {
    Row {
        name,
        request,
        want,
    }
}

/// The gateway under test with the standard configuration (limits: 8192 header bytes,
/// 65536 body bytes) in front of a recording upstream.
struct Fixture {
    upstream: Upstream,
    gateway: TestGateway,
}

impl Fixture {
    async fn start() -> Fixture {
        Self::with_config(|upstream| standard_config(&upstream.url("/mcp"), "", "")).await
    }

    async fn with_config(config: impl FnOnce(&Upstream) -> String) -> Fixture {
        let upstream = Upstream::start().await;
        let gateway = TestGateway::start(&config(&upstream)).await;
        Fixture { upstream, gateway }
    }

    /// Sends every row and checks its answer; rows that are not `Proxied` must leave the
    /// upstream untouched.
    async fn check(&self, rows: Vec<Row>) {
        for row in rows {
            let before = self.upstream.requests().len();
            let answer = row.request.send(self.gateway.addr).await;
            let after = self.upstream.requests().len();
            let (name, want) = (row.name, row.want);
            assert_eq!(answer.status, want.status, "{name}: {answer:?}");
            match want.shape {
                Shape::Proxied => {
                    assert_eq!(after, before + 1, "{name}: upstream not reached once");
                }
                _ => assert_eq!(after, before, "{name}: the upstream received a request"),
            }
            check_challenge(name, &answer, want.challenge);
            check_shape(name, &answer, want.shape);
        }
    }
}

fn check_challenge(name: &str, answer: &RawAnswer, want: Challenge) {
    let got = answer.header("www-authenticate");
    match want {
        Challenge::Absent => assert_eq!(got, None, "{name}: unexpected challenge"),
        Challenge::Plain => assert_eq!(got, Some(CHALLENGE), "{name}"),
        Challenge::Error(code) => {
            let got = got.unwrap_or_else(|| panic!("{name}: no challenge in {answer:?}"));
            let prefix = format!("{CHALLENGE}, error=\"{code}\"");
            assert!(got.starts_with(&prefix), "{name}: {got}");
        }
    }
}

fn check_shape(name: &str, answer: &RawAnswer, want: Shape) {
    match want {
        Shape::OAuth(code) => {
            assert_eq!(
                answer.header("content-type"),
                Some("application/json"),
                "{name}"
            );
            let body = answer.json();
            assert_eq!(body["error"], code, "{name}: {body}");
            assert!(body["error_description"].is_string(), "{name}: {body}");
        }
        Shape::JsonRpc => {
            assert_eq!(
                answer.header("content-type"),
                Some("application/json"),
                "{name}"
            );
            let body = answer.json();
            assert_eq!(body["jsonrpc"], "2.0", "{name}: {body}");
            assert!(body["id"].is_null(), "{name}: {body}");
            assert!(
                body.as_object().unwrap().contains_key("id"),
                "{name}: JSON-RPC errors carry \"id\": null, {body}"
            );
            assert_eq!(body["error"]["code"], -32000, "{name}: {body}");
        }
        Shape::Empty => {
            assert_eq!(answer.body, "", "{name}: {answer:?}");
        }
        Shape::Proxied => {
            // The upstream's echo: what it received.
            let echo = answer.json();
            assert!(echo["path"].is_string(), "{name}: {echo}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Phase 1 — paths
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn ambiguous_paths_are_refused_before_the_credential_is_read() {
    let fixture = Fixture::start().await;
    // All carry a valid key: the path alone decides. The HTTP/1.1 server accepts every one of these
    // request lines (even the backslashes), so each answer is the gateway's own 400.
    let targets = [
        "/mcp/../admin",
        "/mcp/%2e%2e/x",
        "/mcp/%2E%2E/",
        "/mcp%2fadmin",
        "/mcp%2Fadmin",
        "/mcp/..%2fadmin",
        "/mcp\\..\\admin",
        "/mcp\\x",
        "/mcp/%5c",
        "//mcp",
        "/mcp//x",
        "/mcp/./x",
        "/mcp/.",
        "/mcp/..",
        "/mcp/%00",
        "/mcp/%252e%252e/",
        "/mcp/%25",
    ];
    let rows = targets
        .iter()
        .map(|target| {
            row(
                target,
                req(&format!("GET {target}")).auth(),
                INVALID_REQUEST,
            )
        })
        .collect();
    fixture.check(rows).await;
}

#[tokio::test]
async fn unrouted_paths_are_404_and_matching_is_exact() {
    let fixture = Fixture::start().await;
    fixture
        .check(vec![
            row("no route", req("GET /mcpx").auth(), NOT_FOUND),
            row("case-sensitive", req("GET /MCP").auth(), NOT_FOUND),
            row("case-sensitive below", req("GET /Mcp/x").auth(), NOT_FOUND),
            row("other prefix", req("GET /admin").auth(), NOT_FOUND),
            // Non-origin-form targets have no path to route on.
            row("asterisk-form", req("OPTIONS *"), INVALID_REQUEST),
            row(
                "authority-form",
                req("CONNECT 127.0.0.1:1"),
                INVALID_REQUEST,
            ),
            // Controls: the route itself; a fragment has no place in a request target
            // (`http::Uri` would drop it unseen): refused.
            row("control", req("GET /mcp").auth(), PROXIED),
            row("fragment", req("GET /mcp#frag").auth(), MALFORMED_MESSAGE),
        ])
        .await;
}

#[tokio::test]
async fn absolute_form_request_line_is_routed_like_origin_form() {
    let fixture = Fixture::start().await;
    let answer = req("GET http://127.0.0.1/mcp?x=1")
        .auth()
        .send(fixture.gateway.addr)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = fixture.upstream.last();
    assert_eq!(seen.path_and_query, "/mcp?x=1");
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    assert_eq!(seen.header("authorization"), None);
    // RFC 9112 §3.2.2: the authority in the request line wins over `Host`, so it is the
    // one checked against the allowlist (and reported upstream).
    assert_eq!(seen.header("x-forwarded-host"), Some("127.0.0.1"));

    fixture
        .check(vec![
            row(
                "foreign authority, allowed Host header",
                req("GET http://evil.example.com/mcp").auth(),
                FORBIDDEN,
            ),
            row(
                "dot segment",
                req("GET http://127.0.0.1/mcp/../admin").auth(),
                INVALID_REQUEST,
            ),
            row(
                "no route",
                req("GET http://127.0.0.1/other").auth(),
                NOT_FOUND,
            ),
        ])
        .await;
}

// ---------------------------------------------------------------------------------------
// Phase 4 — credentials
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn credential_table() {
    // A small token limit, so "too large" is reached before the header-size guard.
    let fixture = Fixture::with_config(|upstream| {
        standard_config(&upstream.url("/mcp"), "", "").replace(
            "max_body_bytes = 65536",
            "max_body_bytes = 65536\nmax_token_bytes = 256",
        )
    })
    .await;
    let oversize = format!("Bearer {}", "a".repeat(257));
    let at_limit = format!("Bearer {}", "a".repeat(256));
    let key = bearer();
    let get = || req("GET /mcp");
    fixture
        .check(vec![
            row("no Authorization", get(), UNAUTHORIZED),
            row(
                "Basic scheme",
                get().h("Authorization", "Basic dXNlcjpwYXNz"),
                UNAUTHORIZED,
            ),
            row(
                "two Authorization headers, valid key twice",
                get().auth().auth(),
                MALFORMED_CREDENTIAL,
            ),
            row(
                "two Authorization headers, different case",
                get().h("authorization", &key).h("AUTHORIZATION", &key),
                MALFORMED_CREDENTIAL,
            ),
            row(
                "Bearer without a token",
                get().h("Authorization", "Bearer"),
                MALFORMED_CREDENTIAL,
            ),
            row(
                "two spaces before the token",
                get().h("Authorization", &format!("Bearer  {API_KEY}")),
                INVALID_TOKEN,
            ),
            row(
                "token and garbage",
                get().h("Authorization", &format!("{key} extra")),
                INVALID_TOKEN,
            ),
            row(
                "comma-separated tokens",
                get().h("Authorization", &format!("{key},{API_KEY}")),
                INVALID_TOKEN,
            ),
            row(
                "access_token in the query, valid header too",
                req(&format!("GET /mcp?access_token={API_KEY}")).auth(),
                MALFORMED_CREDENTIAL,
            ),
            row(
                "token in the query, alone, odd case",
                req(&format!("GET /mcp?x=1&ACCESS_TOKEN={API_KEY}")),
                MALFORMED_CREDENTIAL,
            ),
            row(
                "token= in the query",
                req(&format!("GET /mcp?token={API_KEY}")).auth(),
                MALFORMED_CREDENTIAL,
            ),
            row(
                "token over max_token_bytes",
                get().h("Authorization", &oversize),
                INVALID_TOKEN,
            ),
            row(
                "token at max_token_bytes, unknown",
                get().h("Authorization", &at_limit),
                INVALID_TOKEN,
            ),
            row(
                "unknown key",
                get().h("Authorization", "Bearer not-a-key"),
                INVALID_TOKEN,
            ),
            row(
                "lowercase scheme",
                get().h("Authorization", &format!("bearer {API_KEY}")),
                PROXIED,
            ),
            row(
                "uppercase scheme",
                get().h("Authorization", &format!("BEARER {API_KEY}")),
                PROXIED,
            ),
        ])
        .await;

    // The size refusal says why (the key itself would not have matched either).
    let answer = get()
        .h("Authorization", &oversize)
        .send(fixture.gateway.addr)
        .await;
    let description = answer.json()["error_description"].to_string();
    assert!(description.contains("too large"), "{answer:?}");
}

// ---------------------------------------------------------------------------------------
// Phase 2 — transport guard
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn origin_and_host_allowlists() {
    let fixture = Fixture::start().await;
    let addr = fixture.gateway.addr.to_string();
    let get = || req("GET /mcp").auth();
    let host = |host: &str| req("GET /mcp").no_host().h("Host", host).auth();
    fixture
        .check(vec![
            // Origin (browser cross-site / DNS rebinding): decided before the credential.
            row(
                "foreign Origin with a valid key",
                req("POST /mcp")
                    .auth()
                    .h("Origin", "https://evil.example.com")
                    .h("Content-Length", "2")
                    .body(b"{}"),
                FORBIDDEN,
            ),
            row("opaque Origin null", get().h("Origin", "null"), FORBIDDEN),
            row(
                "Origin that extends the allowed one",
                get().h("Origin", "http://127.0.0.1.evil.example.com"),
                FORBIDDEN,
            ),
            row(
                "Origin with another scheme",
                get().h("Origin", "https://127.0.0.1"),
                FORBIDDEN,
            ),
            row(
                "two Origin headers",
                get()
                    .h("Origin", "http://127.0.0.1")
                    .h("Origin", "http://127.0.0.1"),
                INVALID_REQUEST,
            ),
            row(
                "the public origin itself",
                get().h("Origin", "http://127.0.0.1"),
                PROXIED,
            ),
            // Host (DNS rebinding): default allowlist = public_url host + loopback names.
            row("foreign Host", host("evil.example.com"), FORBIDDEN),
            row(
                "Host ending like an allowed one",
                host("evil127.0.0.1"),
                FORBIDDEN,
            ),
            // Not a host at all (RFC 9112 §3.2: 400), rather than a host not allowed.
            row(
                "Host with user info",
                host("127.0.0.1@evil.example.com"),
                INVALID_REQUEST,
            ),
            row(
                "Host with a junk port",
                host("127.0.0.1:x"),
                INVALID_REQUEST,
            ),
            row(
                "two Host headers",
                req("GET /mcp")
                    .no_host()
                    .h("Host", &addr)
                    .h("Host", &addr)
                    .auth(),
                INVALID_REQUEST,
            ),
            // RFC 9112 §3.2: 400 for HTTP/1.1; HTTP/1.0 may omit Host, but no host is on
            // the allowlist then.
            row(
                "HTTP/1.1 without Host",
                req("GET /mcp").no_host().auth(),
                INVALID_REQUEST,
            ),
            row(
                "HTTP/1.0 without Host",
                req("GET /mcp HTTP/1.0").no_host().auth(),
                FORBIDDEN,
            ),
            row("loopback alias, any port", host("localhost:1234"), PROXIED),
            row("IPv6 loopback", host("[::1]:80"), PROXIED),
        ])
        .await;
}

#[tokio::test]
async fn methods_sizes_and_framing() {
    let fixture = Fixture::start().await;
    let over_guard = "a".repeat(9000); // > max_header_bytes (8192), under the server's head limit
    let over_hyper = "a".repeat(20_000); // > the server's head limit (8192 + 4096)
    let long_token = format!("Bearer {}", "a".repeat(8200));
    let post = || req("POST /mcp").auth();
    fixture
        .check(vec![
            // Methods: GET, POST, DELETE (and OPTIONS for CORS).
            row(
                "PUT",
                req("PUT /mcp").auth().h("Content-Length", "0"),
                METHOD_NOT_ALLOWED,
            ),
            row("PATCH", req("PATCH /mcp").auth(), METHOD_NOT_ALLOWED),
            row("TRACE", req("TRACE /mcp").auth(), METHOD_NOT_ALLOWED),
            row("DELETE is allowed", req("DELETE /mcp").auth(), PROXIED),
            // Header sizes: the guard's exact limit, then the server's read limit.
            row(
                "headers over max_header_bytes",
                req("GET /mcp").auth().h("X-Big", &over_guard),
                HEADERS_TOO_LARGE,
            ),
            row(
                "a bearer token alone over max_header_bytes: size is checked first",
                req("GET /mcp").h("Authorization", &long_token),
                HEADERS_TOO_LARGE,
            ),
            row(
                "headers over the server's read limit",
                req("GET /mcp").auth().h("X-Big", &over_hyper),
                HEADERS_TOO_LARGE,
            ),
            // Body size announced up front: refused before a byte of body is read.
            row(
                "Content-Length over max_body_bytes, body not sent",
                post().h("Content-Length", "65537"),
                BODY_TOO_LARGE,
            ),
            row(
                "huge Content-Length, partial body",
                post()
                    .h("Content-Length", "99999999999")
                    .body(b"{\"jsonrpc\":"),
                BODY_TOO_LARGE,
            ),
            // A length of more than 19 digits is not read as a number at all.
            row(
                "Content-Length u64::MAX",
                post().h("Content-Length", "18446744073709551615"),
                MALFORMED_MESSAGE,
            ),
            // Malformed framing never reaches the pipeline: the HTTP/1.1 server says 400.
            row(
                "Content-Length not a number",
                post().h("Content-Length", "abc"),
                MALFORMED_MESSAGE,
            ),
            row(
                "negative Content-Length",
                post().h("Content-Length", "-1"),
                MALFORMED_MESSAGE,
            ),
            row(
                "Content-Length list",
                post().h("Content-Length", "2, 2").body(b"{}"),
                MALFORMED_MESSAGE,
            ),
            row(
                "two different Content-Length headers",
                post()
                    .h("Content-Length", "2")
                    .h("Content-Length", "3")
                    .body(b"{}"),
                MALFORMED_MESSAGE,
            ),
            row(
                "whitespace before the colon",
                req("GET /mcp").auth().h("X-User-Id ", "mallory"),
                MALFORMED_MESSAGE,
            ),
            row(
                "obsolete line folding",
                req("GET /mcp").auth().h("X-Folded", "a\r\n b"),
                MALFORMED_MESSAGE,
            ),
            row(
                "junk after the version",
                req("GET /mcp HTTP/1.1 extra").auth(),
                MALFORMED_MESSAGE,
            ),
            // A tunnel request is refused before any route answers it: a 2xx to CONNECT
            // would make a front proxy treat the connection as a tunnel.
            row("CONNECT", req("CONNECT /healthz").auth(), MALFORMED_MESSAGE),
            row(
                "CONNECT in authority form",
                req("CONNECT 127.0.0.1:443").auth(),
                MALFORMED_MESSAGE,
            ),
        ])
        .await;

    let answer = req("PUT /mcp")
        .auth()
        .h("Content-Length", "0")
        .send(fixture.gateway.addr)
        .await;
    let allow = answer
        .header("allow")
        .expect("405 names the allowed methods");
    for method in ["GET", "POST", "DELETE"] {
        assert!(allow.contains(method), "{allow}");
    }
    assert!(!allow.contains("PUT"), "{allow}");
}

#[tokio::test]
async fn framing_the_server_normalizes_reaches_the_upstream_as_one_clean_message() {
    // Not refusals, but what the HTTP/1.1 server lets through (as hyper did): the upstream always receives a request
    // framed by the gateway's own client, never the client's ambiguous framing.
    let fixture = Fixture::start().await;
    let post = || req("POST /mcp").auth();
    fixture
        .check(vec![
            row(
                "two identical Content-Length headers",
                post()
                    .h("Content-Length", "2")
                    .h("Content-Length", "2")
                    .body(b"{}"),
                PROXIED,
            ),
            row(
                "Content-Length and chunked together: chunked wins",
                post()
                    .h("Content-Length", "100")
                    .h("Transfer-Encoding", "chunked")
                    .body(b"2\r\n{}\r\n0\r\n\r\n"),
                PROXIED,
            ),
            row(
                "bare LF line ending",
                req("GET /mcp HTTP/1.1\nX-Bare-Lf: 1").auth(),
                PROXIED,
            ),
        ])
        .await;
    for seen in fixture.upstream.requests() {
        let lengths = seen.headers.get_all("content-length").iter().count();
        assert!(lengths <= 1, "{seen:?}");
        if seen.method == "POST" {
            assert_eq!(&seen.body[..], b"{}", "{seen:?}");
        }
    }
}

#[tokio::test]
async fn chunked_body_over_the_limit_never_reaches_the_upstream_whole() {
    let fixture = Fixture::start().await;
    let limit = 65_536;
    let chunk = vec![b'x'; 8192];
    let mut body = Vec::new();
    for _ in 0..10 {
        // 81,920 bytes in all, no Content-Length.
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let answer = req("POST /mcp")
        .auth()
        .h("Content-Type", "application/json")
        .h("Transfer-Encoding", "chunked")
        .body(&body)
        .send(fixture.gateway.addr)
        .await;
    // What really happens: the request is admitted (no Content-Length to refuse up front),
    // its body streams to the upstream through a length limit, and when the limit trips
    // the upstream request is aborted and the client gets 413.
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.json()["error"], "too_large");
    // The upstream may have seen the head of an aborted request, never a complete body
    // over the limit (its recorder stores an empty body for an aborted one).
    for seen in fixture.upstream.requests() {
        let got = seen.body.len();
        assert!(got <= limit, "upstream got {got} bytes");
    }
}

// ---------------------------------------------------------------------------------------
// Phase 9 — identity spoofing
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let fixture = Fixture::start().await;
    let spoof = |request: Raw| {
        request
            .h("X-User-Id", "mallory")
            .h("x-user-id", "root")
            .h("X-USER-ID", "admin")
            .h("x-AUTH-method", "jwt")
            .h("X-Auth-Client-Id", "trusted-client")
            .h("x-auth-client-id", "trusted-client-2")
            .h("X-Auth-Token-Id", "forged")
            .h("X-User-Groups", "admins")
            .h("X-User-Groups", "root")
            .h("X-User-Email", "mallory@evil.example")
            .h("X-Auth-Scopes", "admin")
            .h("X-User-Name", "Mallory")
    };

    // Authenticated: exactly the gateway's values, once each; nothing for what the API key
    // principal does not have (client id, groups, email).
    let answer = spoof(req("GET /mcp").auth())
        .send(fixture.gateway.addr)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = fixture.upstream.last();
    let expected = [
        ("x-user-id", Some("alice")),
        ("x-user-name", Some("Test User")),
        ("x-user-email", None),
        ("x-user-groups", None),
        ("x-auth-scopes", Some("mcp:tools")),
        ("x-auth-client-id", None),
        ("x-auth-method", Some("api_key")),
        ("x-auth-token-id", Some("test")),
    ];
    for (name, want) in expected {
        let values: Vec<_> = seen
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(values, want.into_iter().collect::<Vec<_>>(), "{name}");
    }

    // Public sub-path: no identity at all, spoofed or not.
    let answer = spoof(req("GET /mcp/health"))
        .send(fixture.gateway.addr)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = fixture.upstream.last();
    assert_eq!(seen.path_and_query, "/mcp/health");
    for name in IDENTITY_HEADERS {
        assert_eq!(seen.headers.get(name), None, "{name} on a public path");
    }
}

#[tokio::test]
async fn identity_headers_spelled_with_underscores_are_stripped() {
    // Many server stacks map `X_User_Id` and `X-User-Id` to the same variable
    // (HTTP_X_USER_ID). nginx drops underscored names by default; the gateway must not let
    // a look-alike of an identity header through (oauth2-proxy fixed the same class of bug).
    let fixture = Fixture::start().await;
    let answer = req("GET /mcp")
        .auth()
        .h("X_User_Id", "mallory")
        .h("x_auth_method", "jwt")
        .send(fixture.gateway.addr)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = fixture.upstream.last();
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    assert_eq!(seen.header("x_user_id"), None, "{:?}", seen.headers);
    assert_eq!(seen.header("x_auth_method"), None, "{:?}", seen.headers);
}

#[tokio::test]
async fn look_alikes_with_any_separator_path_claims_and_listed_request_ids_are_handled() {
    // lighttpd's CGI, FastCGI and SCGI turn every byte but letters and digits into `_`:
    // `X+User+Email` reaches such an upstream as HTTP_X_USER_EMAIL.
    let fixture = Fixture::start().await;
    let answer = req("GET /mcp")
        .auth()
        .h("X~User~Id", "mallory")
        .h("X+User+Email", "mallory@example.com")
        .h("X!Auth!Method", "jwt")
        .h("X*User*Groups", "admins")
        .h("Mcp_Session_Id", "someone-elses")
        .h("X-Rewrite-Url", "/admin")
        .h("X_Envoy_Original_Path", "/admin")
        .h("Script-Name", "/admin")
        .h("CF-Connecting-IP", "10.0.0.1")
        .h("X-Envoy-External-Address", "10.0.0.1")
        .h("Connection", "x-request-id")
        .send(fixture.gateway.addr)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = fixture.upstream.last();
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    for name in [
        "x~user~id",
        "x+user+email",
        "x!auth!method",
        "x*user*groups",
        "mcp_session_id",
        "x-rewrite-url",
        "x_envoy_original_path",
        "script-name",
        "cf-connecting-ip",
        "x-envoy-external-address",
    ] {
        assert_eq!(seen.header(name), None, "{name}: {:?}", seen.headers);
    }
    // `Connection` cannot list the gateway's own request id away from the upstream.
    assert_eq!(
        seen.header("x-request-id"),
        answer.header("x-request-id"),
        "{:?}",
        seen.headers
    );
    assert!(seen.header("x-request-id").is_some(), "{:?}", seen.headers);
}

#[tokio::test]
async fn two_session_ids_are_refused_never_first_wins() {
    let fixture = Fixture::start().await;
    let answer = req("POST /mcp")
        .auth()
        .h("Mcp-Session-Id", "mine")
        .h("Mcp-Session-Id", "someone-elses")
        .h("Content-Type", "application/json")
        .body(b"{}")
        .send(fixture.gateway.addr)
        .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(fixture.upstream.requests().is_empty(), "nothing forwarded");
}

// ---------------------------------------------------------------------------------------
// /verify — ForwardAuth answers only 200, 401 or 403
// ---------------------------------------------------------------------------------------

fn verify() -> Raw {
    req("GET /verify")
}

#[tokio::test]
async fn verify_adversarial_table() {
    let fixture = Fixture::start().await;
    let addr = fixture.gateway.addr.to_string();
    // Traefik/Caddy describe method and URI together; `bare` leaves the method to the row.
    let bare = |uri: &str| verify().auth().h("X-Forwarded-Uri", uri);
    let uri = |uri: &str| bare(uri).h("X-Forwarded-Method", "GET");
    let rows = vec![
        row(
            "two X-Forwarded-Uri",
            uri("/mcp").h("X-Forwarded-Uri", "/mcp"),
            VERIFY_INVALID_REQUEST,
        ),
        row(
            "two X-Original-URI",
            verify()
                .auth()
                .h("X-Original-Method", "GET")
                .h("X-Original-URI", "/mcp")
                .h("X-Original-URI", "/mcp"),
            VERIFY_INVALID_REQUEST,
        ),
        row(
            "two X-Forwarded-Method",
            bare("/mcp")
                .h("X-Forwarded-Method", "GET")
                .h("X-Forwarded-Method", "POST"),
            VERIFY_INVALID_REQUEST,
        ),
        row(
            "two X-Forwarded-Host",
            uri("/mcp")
                .h("X-Forwarded-Host", &addr)
                .h("X-Forwarded-Host", &addr),
            VERIFY_INVALID_REQUEST,
        ),
        row(
            "dialects disagree (client-added X-Forwarded-Uri next to nginx's X-Original-URI)",
            verify()
                .h("X-Original-Method", "POST")
                .h("X-Original-URI", "/mcp")
                .h("X-Forwarded-Method", "GET")
                .h("X-Forwarded-Uri", "/.well-known/oauth-protected-resource"),
            VERIFY_INVALID_REQUEST,
        ),
        row(
            "no forwarded method (never assumed GET)",
            bare("/mcp"),
            VERIFY_INVALID_REQUEST,
        ),
        row(
            "both dialects, identical (nginx deploy config sends both)",
            uri("/mcp")
                .h("X-Original-Method", "GET")
                .h("X-Original-URI", "/mcp"),
            VERIFY_ALLOW,
        ),
        row(
            "no X-Forwarded-Uri nor X-Original-URI",
            verify().auth().h("X-Forwarded-Method", "POST"),
            VERIFY_INVALID_REQUEST,
        ),
        row("forwarded ..", uri("/mcp/../admin"), VERIFY_INVALID_REQUEST),
        row(
            "original %2e%2e",
            verify()
                .auth()
                .h("X-Original-Method", "GET")
                .h("X-Original-URI", "/mcp/%2e%2e/admin"),
            VERIFY_INVALID_REQUEST,
        ),
        row("forwarded //", uri("//mcp"), VERIFY_INVALID_REQUEST),
        row(
            "forwarded absolute form",
            uri("http://evil.example.com/mcp"),
            VERIFY_INVALID_REQUEST,
        ),
        row(
            "forwarded URI that does not parse",
            uri("/mcp x"),
            VERIFY_INVALID_REQUEST,
        ),
        row(
            "forwarded method that does not parse",
            bare("/mcp").h("X-Forwarded-Method", "G(T"),
            VERIFY_INVALID_REQUEST,
        ),
        row(
            "forwarded method not allowed (405 becomes 403)",
            bare("/mcp").h("X-Forwarded-Method", "PUT"),
            want(403, Absent, OAuth("method_not_allowed")),
        ),
        row(
            "forwarded path without a route (404 becomes 403)",
            uri("/other"),
            want(403, Absent, OAuth("not_found")),
        ),
        row(
            "forwarded Content-Length over the limit (413 becomes 403)",
            uri("/mcp").h("Content-Length", "65537"),
            want(403, Absent, OAuth("too_large")),
        ),
        row(
            "forwarded Host evil.example.com",
            uri("/mcp").h("X-Forwarded-Host", "evil.example.com"),
            FORBIDDEN,
        ),
        row(
            "original Origin evil",
            uri("/mcp").h("Origin", "https://evil.example.com"),
            FORBIDDEN,
        ),
        row(
            "original Origin null",
            uri("/mcp").h("Origin", "null"),
            FORBIDDEN,
        ),
        row(
            "two Authorization headers (400 becomes 403, challenge kept)",
            uri("/mcp").auth(),
            VERIFY_MALFORMED_CREDENTIAL,
        ),
        row(
            "token in the forwarded query (400 becomes 403, challenge kept)",
            uri(&format!("/mcp?access_token={API_KEY}")),
            VERIFY_MALFORMED_CREDENTIAL,
        ),
        row(
            "no token",
            verify()
                .h("X-Forwarded-Method", "GET")
                .h("X-Forwarded-Uri", "/mcp"),
            UNAUTHORIZED,
        ),
        row(
            "unknown token",
            verify()
                .h("Authorization", "Bearer not-a-key")
                .h("X-Forwarded-Method", "GET")
                .h("X-Forwarded-Uri", "/mcp"),
            INVALID_TOKEN,
        ),
        row(
            "good key, Traefik/Caddy style",
            bare("/mcp?x=1")
                .h("X-Forwarded-Method", "POST")
                .h("X-Forwarded-Proto", "http")
                .h("X-Forwarded-Host", &addr),
            VERIFY_ALLOW,
        ),
        row(
            "good key, nginx style",
            verify()
                .auth()
                .h("X-Original-Method", "POST")
                .h("X-Original-URI", "/mcp/sub?x=1"),
            VERIFY_ALLOW,
        ),
        row(
            "metadata document, no token",
            verify().h("X-Forwarded-Method", "GET").h(
                "X-Forwarded-Uri",
                "/.well-known/oauth-protected-resource/mcp",
            ),
            VERIFY_ALLOW,
        ),
        row(
            "root metadata document, no token, nginx style",
            verify()
                .h("X-Original-Method", "GET")
                .h("X-Original-URI", "/.well-known/oauth-protected-resource"),
            VERIFY_ALLOW,
        ),
        row(
            "route's public sub-path, no token",
            verify()
                .h("X-Forwarded-Method", "GET")
                .h("X-Forwarded-Uri", "/mcp/health"),
            VERIFY_ALLOW,
        ),
    ];
    for r in &rows {
        let status = r.want.status;
        assert!(
            [200, 401, 403].contains(&status),
            "{}: /verify may only answer 200, 401 or 403",
            r.name
        );
    }
    fixture.check(rows).await;
}

#[tokio::test]
async fn verify_200_carries_only_the_gateways_identity() {
    let fixture = Fixture::start().await;
    let answer = verify()
        .auth()
        .h("X-Forwarded-Method", "GET")
        .h("X-Forwarded-Uri", "/mcp")
        .h("X-User-Id", "mallory")
        .h("X-Auth-Method", "jwt")
        .send(fixture.gateway.addr)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.all("x-user-id"), ["alice"]);
    assert_eq!(answer.all("x-auth-method"), ["api_key"]);
    assert_eq!(answer.all("x-auth-scopes"), ["mcp:tools"]);
    assert_eq!(answer.header("x-user-email"), None);
    assert_eq!(answer.header("www-authenticate"), None);
    assert_eq!(answer.header("content-length"), Some("0"));
    assert_eq!(answer.body, "");

    // nginx style, and a public answer carries no identity at all.
    let nginx = verify()
        .auth()
        .h("X-Original-Method", "POST")
        .h("X-Original-URI", "/mcp")
        .send(fixture.gateway.addr)
        .await;
    assert_eq!(nginx.status, 200, "{nginx:?}");
    assert_eq!(nginx.header("x-user-id"), Some("alice"));
    let public = verify()
        .h("X-Forwarded-Method", "GET")
        .h(
            "X-Forwarded-Uri",
            "/.well-known/oauth-protected-resource/mcp",
        )
        .h("X-User-Id", "mallory")
        .send(fixture.gateway.addr)
        .await;
    assert_eq!(public.status, 200, "{public:?}");
    for name in IDENTITY_HEADERS {
        assert_eq!(public.header(name), None, "{name}");
    }
    assert!(fixture.upstream.requests().is_empty());
}

#[tokio::test]
async fn verify_metadata_shortcut_does_not_cover_dot_segments() {
    // nginx resolves `..` and `%2e%2e` before matching `location ~ ^/mcp(/|$)` but sends the
    // raw `$request_uri` as X-Original-URI; the gateway then sees a metadata path and allows
    // a request that nginx routes to the protected MCP location.
    let fixture = Fixture::start().await;
    let rows = [
        "/.well-known/oauth-protected-resource/../../mcp",
        "/.well-known/oauth-protected-resource/%2e%2e/%2e%2e/mcp",
        "/.well-known/oauth-protected-resource/..%2f..%2fmcp",
    ]
    .into_iter()
    .map(|uri| {
        row(
            "metadata prefix with dot segments",
            verify()
                .h("X-Original-Method", "GET")
                .h("X-Original-URI", uri),
            VERIFY_INVALID_REQUEST,
        )
    })
    .collect();
    fixture.check(rows).await;
}
