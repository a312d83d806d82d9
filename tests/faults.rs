//! Fault injection over real loopback sockets: upstreams, JWKS and introspection endpoints
//! that refuse, reset, stall or talk garbage, and a SIGTERM in the middle of traffic. Each
//! test asserts what the client sees and that other traffic carries on meanwhile (most
//! gateways here run one worker, so a fault that blocked the event loop would show).
//!
//! The misbehaving peers are raw byte servers (`common::faulty`). Timeouts are configured
//! small; the only clock assertions are generous deadlines that turn a hang into a failure.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::faulty::{
    self, chunk, event, read_request, response, send, FaultyServer, FullBacklog, LAST_CHUNK,
    SSE_HEAD,
};
use common::gateway::standard_config;
use common::http::{self, get, post_json, Answer};
use common::keys::{jwks, now, TestKey};
use common::{TestGateway, Upstream, API_KEY};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Bounds a hang; never a claim about speed.
const DEADLINE: Duration = Duration::from_secs(30);

async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: no outcome within {DEADLINE:?} (hang)"),
    }
}

fn bearer() -> String {
    format!("Bearer {API_KEY}")
}

/// The standard configuration (route `/mcp` → `upstream_url`) with one worker (a fault that
/// blocked the event loop would stall every other request), the given `[server.limits]`
/// (replacing the standard values of the same keys) and `extra` tables.
fn config(upstream_url: &str, limits: &[(&str, &str)], extra: &str) -> String {
    let mut text = standard_config(upstream_url, "", extra).replace(
        "public_url = \"http://127.0.0.1\"",
        "public_url = \"http://127.0.0.1\"\nworkers = 1",
    );
    for (key, value) in limits {
        let line = format!("{key} = \"{value}\"");
        let existing = text
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .map(str::to_string);
        text = match existing {
            Some(old) => text.replacen(&old, &line, 1),
            None => text.replacen("[server.limits]", &format!("[server.limits]\n{line}"), 1),
        };
    }
    text
}

/// A second route, `/ok` → `upstream_url`, for "other traffic is unaffected".
fn healthy_route(upstream_url: &str) -> String {
    format!(
        "[[routes]]\nid = \"healthy\"\npath = \"/ok\"\nupstream = \"{upstream_url}\"\nverifiers = [\"api_keys\"]\nscopes = [\"mcp:tools\"]\n"
    )
}

/// The gateway's own error for an upstream failure: `status`, a JSON-RPC error with
/// `id: null`, no challenge (a new token would not help).
fn assert_upstream_error(answer: &Answer, status: u16, why: &str) {
    assert_eq!(answer.status, status, "{why}: {}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        Some("application/json"),
        "{why}"
    );
    let body = answer.json();
    assert_eq!(body["jsonrpc"], "2.0", "{why}: {body}");
    assert!(body["id"].is_null(), "{why}: {body}");
    assert!(body["error"]["code"].is_i64(), "{why}: {body}");
    assert!(body["error"]["message"].is_string(), "{why}: {body}");
    assert_eq!(answer.header("www-authenticate"), None, "{why}");
}

/// A verifier outage as an inline client sees it: 503, `Retry-After`, no challenge.
fn assert_verifier_outage(answer: &Answer, why: &str) {
    assert_eq!(answer.status, 503, "{why}: {}", answer.body);
    assert_eq!(answer.header("retry-after"), Some("5"), "{why}");
    assert_eq!(answer.header("www-authenticate"), None, "{why}");
    assert_eq!(answer.json()["error"], "temporarily_unavailable", "{why}");
}

/// The same outage on `/verify`, which may only say 200/401/403: a 401 whose challenge has no
/// `error` (a client must not throw away a good token).
fn assert_verify_outage(answer: &Answer, why: &str) {
    assert_eq!(answer.status, 401, "{why}: {}", answer.body);
    let challenge = answer
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{why}: no challenge"));
    assert!(
        challenge.starts_with("Bearer resource_metadata="),
        "{why}: {challenge}"
    );
    assert!(!challenge.contains("error="), "{why}: {challenge}");
}

async fn call(addr: std::net::SocketAddr, path: &str, token: &str) -> Answer {
    within(
        path,
        get(addr, path, &[("authorization", &format!("Bearer {token}"))]),
    )
    .await
}

async fn verify(addr: std::net::SocketAddr, token: &str) -> Answer {
    within(
        "/verify",
        get(
            addr,
            "/verify",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-forwarded-uri", "/mcp"),
                ("x-forwarded-method", "POST"),
                ("x-forwarded-host", "127.0.0.1"),
            ],
        ),
    )
    .await
}

/// Several API-key requests to `path`, each answered 200.
async fn assert_serving(addr: std::net::SocketAddr, path: &str, why: &str) {
    for _ in 0..3 {
        let answer = call(addr, path, API_KEY).await;
        assert_eq!(answer.status, 200, "{why}: {}", answer.body);
    }
}

/// Opens a GET stream through the gateway; the response head, body unread.
async fn open_stream(addr: std::net::SocketAddr, path: &str) -> hyper::Response<Incoming> {
    let request = http::request("GET", addr, path)
        .header("authorization", bearer())
        .header("accept", "text/event-stream")
        .body(http::empty())
        .expect("request");
    within(path, http::send(addr, request)).await
}

async fn next_frame(body: &mut Incoming, what: &str) -> Option<Result<Frame<Bytes>, hyper::Error>> {
    within(what, body.frame()).await
}

async fn next_data(body: &mut Incoming, what: &str) -> Bytes {
    match next_frame(body, what).await {
        Some(Ok(frame)) => frame
            .into_data()
            .unwrap_or_else(|_| panic!("{what}: a trailers frame")),
        other => panic!("{what}: expected data, got {other:?}"),
    }
}

/// Reads the rest of a body: the data and how it ended (`Ok` = a clean end of message).
async fn drain(body: &mut Incoming, what: &str) -> (Vec<u8>, Result<(), String>) {
    let mut data = Vec::new();
    loop {
        match next_frame(body, what).await {
            None => return (data, Ok(())),
            Some(Err(error)) => return (data, Err(error.to_string())),
            Some(Ok(frame)) => {
                if let Ok(bytes) = frame.into_data() {
                    data.extend_from_slice(&bytes);
                }
            }
        }
    }
}

/// Waits until the peer closes `stream` (EOF or reset).
async fn until_closed(stream: &mut TcpStream) {
    let mut buffer = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buffer).await {
        if n == 0 {
            break;
        }
    }
}

const ECHO_JSON: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"ok":true}}"#;

// ---------------------------------------------------------------------------------------
// 1. Nothing listening
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn upstream_refusing_connections_is_502_while_another_route_answers() {
    let healthy = Upstream::start().await;
    let down = faulty::refused_addr();
    let gateway = TestGateway::start(&config(
        &format!("http://{down}/mcp"),
        &[],
        &healthy_route(&healthy.url("/ok")),
    ))
    .await;
    let addr = gateway.addr;

    // Both routes at the same time, interleaved.
    let mut calls = JoinSet::new();
    for i in 0..8 {
        calls.spawn(async move {
            let auth = bearer();
            let headers = [("authorization", auth.as_str())];
            match i % 4 {
                0 => ("GET /mcp", get(addr, "/mcp", &headers).await),
                1 => (
                    "POST /mcp",
                    post_json(addr, "/mcp", &headers, ECHO_JSON).await,
                ),
                _ => ("GET /ok", get(addr, "/ok", &headers).await),
            }
        });
    }
    while let Some(joined) = within("concurrent calls", calls.join_next()).await {
        let (what, answer) = joined.expect("call task");
        if what.ends_with("/mcp") {
            assert_upstream_error(&answer, 502, what);
        } else {
            assert_eq!(answer.status, 200, "{what}: {}", answer.body);
        }
    }
    assert_eq!(healthy.requests().len(), 4);
}

// ---------------------------------------------------------------------------------------
// 2. Accept, then close or reset before a response head
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn upstream_closing_or_resetting_before_a_response_is_502() {
    let healthy = Upstream::start().await;
    type Fault = fn(TcpStream) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    let faults: [(&str, Fault); 6] = [
        ("close at once, request unread", |stream| {
            Box::pin(async move { drop(stream) })
        }),
        ("reset at once, request unread", |stream| {
            Box::pin(async move { faulty::reset(stream) })
        }),
        ("close after reading the request", |mut stream| {
            Box::pin(async move {
                read_request(&mut stream).await;
                drop(stream);
            })
        }),
        ("reset after reading the request", |mut stream| {
            Box::pin(async move {
                read_request(&mut stream).await;
                faulty::reset(stream);
            })
        }),
        ("garbage instead of a response head", |mut stream| {
            Box::pin(async move {
                read_request(&mut stream).await;
                send(&mut stream, b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
                until_closed(&mut stream).await;
            })
        }),
        ("close in the middle of the response head", |mut stream| {
            Box::pin(async move {
                read_request(&mut stream).await;
                send(&mut stream, b"HTTP/1.1 200 OK\r\ncontent-ty").await;
                drop(stream);
            })
        }),
    ];
    for (what, fault) in faults {
        let upstream = FaultyServer::start(move |stream, _| fault(stream)).await;
        let gateway = TestGateway::start(&config(
            &upstream.url("/mcp"),
            &[],
            &healthy_route(&healthy.url("/ok")),
        ))
        .await;
        let auth = bearer();
        let headers = [("authorization", auth.as_str())];
        let answer = within(what, get(gateway.addr, "/mcp", &headers)).await;
        assert_upstream_error(&answer, 502, &format!("GET, {what}"));
        let answer = within(what, post_json(gateway.addr, "/mcp", &headers, ECHO_JSON)).await;
        assert_upstream_error(&answer, 502, &format!("POST, {what}"));
        assert!(upstream.accepted() >= 2, "{what}: the upstream was reached");
        assert_serving(gateway.addr, "/ok", what).await;
        gateway.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------
// 3. Stalls: at connect, and at the response head
// ---------------------------------------------------------------------------------------

/// A connect that never completes (a listener whose accept queue is full: the kernel drops
/// the SYNs) ends at `connect_timeout` with 502 when that comes first, and at
/// `response_timeout` with 504 when that does; other routes are served meanwhile.
#[tokio::test]
async fn upstream_stalled_at_connect_is_502_at_connect_timeout_or_504_at_response_timeout() {
    let Some(stalled) = FullBacklog::start().await else {
        panic!("loopback completed every connect: a connect stall cannot be made here");
    };
    let healthy = Upstream::start().await;
    let cases = [
        (
            "connect_timeout first",
            [("connect_timeout", "3s"), ("response_timeout", "20s")],
            502,
        ),
        (
            "response_timeout first",
            [("connect_timeout", "20s"), ("response_timeout", "3s")],
            504,
        ),
    ];
    for (what, limits, status) in cases {
        let gateway = TestGateway::start(&config(
            &stalled.url("/mcp"),
            &limits,
            &healthy_route(&healthy.url("/ok")),
        ))
        .await;
        let addr = gateway.addr;
        let stalled_call = tokio::spawn(async move { call(addr, "/mcp", API_KEY).await });
        // Give the gateway a moment to start its connect (a scheduling nicety, not asserted).
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_serving(addr, "/ok", what).await;
        assert!(
            !stalled_call.is_finished(),
            "{what}: the stalled request ended before the others were served"
        );
        let answer = within(what, stalled_call).await.expect("call task");
        assert_upstream_error(&answer, status, what);
        assert_serving(addr, "/ok", what).await;
        gateway.shutdown().await;
    }
}

/// An upstream that reads the request and never answers: 504 at `response_timeout`, other
/// requests served meanwhile, and the gateway lets go of the upstream connection.
#[tokio::test]
async fn upstream_stalled_at_the_response_head_is_504_and_the_connection_is_released() {
    let healthy = Upstream::start().await;
    let (received, mut requests) = mpsc::unbounded_channel();
    let (closed, mut closes) = mpsc::unbounded_channel();
    let upstream = FaultyServer::start(move |mut stream, _| {
        let (received, closed) = (received.clone(), closed.clone());
        async move {
            if let Some(request) = read_request(&mut stream).await {
                let _ = received.send(request);
                until_closed(&mut stream).await;
                let _ = closed.send(());
            }
        }
    })
    .await;
    let gateway = TestGateway::start(&config(
        &upstream.url("/mcp"),
        &[("response_timeout", "3s")],
        &healthy_route(&healthy.url("/ok")),
    ))
    .await;
    let addr = gateway.addr;

    let mut stalled = JoinSet::new();
    stalled.spawn(async move { call(addr, "/mcp", API_KEY).await });
    stalled.spawn(async move {
        let auth = bearer();
        within(
            "POST",
            post_json(addr, "/mcp", &[("authorization", &auth)], ECHO_JSON),
        )
        .await
    });
    // Both requests are at the upstream, waiting for a head that never comes …
    for _ in 0..2 {
        within("request at upstream", requests.recv()).await;
    }
    // … while other requests on other connections are answered.
    assert_serving(addr, "/ok", "during the stall").await;
    assert_eq!(stalled.len(), 2);
    assert!(
        stalled.try_join_next().is_none(),
        "a stalled request ended before the others were served"
    );
    while let Some(joined) = within("stalled calls", stalled.join_next()).await {
        assert_upstream_error(&joined.expect("call task"), 504, "head stall");
    }
    // The gateway closed both upstream connections when it gave up.
    for _ in 0..2 {
        within("upstream connection closed", closes.recv()).await;
    }
    assert_serving(addr, "/ok", "after the stall").await;
}

// ---------------------------------------------------------------------------------------
// 4. A stream that goes silent
// ---------------------------------------------------------------------------------------

/// Head + first event, then silence: the client gets both, then the stream is cut after
/// `stream_idle_timeout` — while a concurrent stream that keeps talking is not.
#[tokio::test]
async fn a_stream_stalled_mid_body_is_cut_while_a_live_stream_keeps_flowing() {
    let (closed, mut closes) = mpsc::unbounded_channel();
    let silent = FaultyServer::start(move |mut stream, _| {
        let closed = closed.clone();
        async move {
            read_request(&mut stream).await;
            send(&mut stream, SSE_HEAD).await;
            send(&mut stream, &chunk(&event(1, "first"))).await;
            until_closed(&mut stream).await;
            let _ = closed.send(());
        }
    })
    .await;
    // The live stream ticks every 100 ms (well inside the 1 s idle limit) until told to
    // finish, then sends two last events and ends.
    let (finish, finishing) = watch::channel(false);
    let live = FaultyServer::start(move |mut stream, _| {
        let mut finishing = finishing.clone();
        async move {
            read_request(&mut stream).await;
            send(&mut stream, SSE_HEAD).await;
            let mut id = 1;
            loop {
                send(&mut stream, &chunk(&event(id, "tick"))).await;
                id += 1;
                let stop = tokio::time::timeout(
                    Duration::from_millis(100),
                    finishing.wait_for(|done| *done),
                )
                .await;
                if stop.is_ok() {
                    break;
                }
            }
            send(&mut stream, &chunk(&event(id, "last-but-one"))).await;
            send(&mut stream, &chunk(&event(id + 1, "last"))).await;
            send(&mut stream, LAST_CHUNK).await;
        }
    })
    .await;
    let gateway = TestGateway::start(&config(
        &silent.url("/mcp"),
        &[("stream_idle_timeout", "1s")],
        &healthy_route(&live.url("/ok")),
    ))
    .await;
    let addr = gateway.addr;

    let response = open_stream(addr, "/mcp/sse").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut silent_body = response.into_body();
    assert_eq!(
        next_data(&mut silent_body, "first event").await,
        event(1, "first").as_bytes()
    );

    let live_response = open_stream(addr, "/ok/sse").await;
    assert_eq!(live_response.status(), 200);
    let mut live_body = live_response.into_body();
    let live_reader = tokio::spawn(async move {
        let (data, end) = drain(&mut live_body, "live stream").await;
        (String::from_utf8_lossy(&data).into_owned(), end)
    });

    // The silent stream ends (not hangs) and carries nothing more.
    let (rest, end) = drain(&mut silent_body, "silent stream").await;
    assert!(rest.is_empty(), "data after the silence: {rest:?}");
    assert!(
        end.is_err(),
        "the cut must be visible to the client as an incomplete body, not a clean end"
    );
    within("upstream connection closed", closes.recv()).await;

    // The live stream was not touched by that: it is still going, and ends normally.
    assert!(!live_reader.is_finished(), "the live stream ended early");
    finish.send(true).expect("live upstream listening");
    let (live_text, live_end) = within("live stream", live_reader).await.expect("reader");
    assert_eq!(live_end, Ok(()), "live stream: {live_text}");
    let events: Vec<&str> = live_text.split_terminator("\n\n").collect();
    assert!(events.len() >= 3, "{live_text}");
    for (index, text) in events.iter().enumerate() {
        let data = match events.len() - index {
            2 => "last-but-one",
            1 => "last",
            _ => "tick",
        };
        assert_eq!(
            *text,
            format!("id: {}\ndata: {data}", index + 1),
            "{live_text}"
        );
    }
    assert_serving(addr, "/ok", "after the cut").await;
}

// ---------------------------------------------------------------------------------------
// 5. A reset in the middle of a body
// ---------------------------------------------------------------------------------------

/// The head and part of the body, then the upstream closes or resets: the client's body
/// ends with an error (the truncation is visible, never a hang, never a clean end), and the
/// next request, on a fresh upstream connection, works.
#[tokio::test]
async fn upstream_reset_mid_body_truncates_the_response_visibly_and_the_next_request_works() {
    struct Case {
        what: &'static str,
        head: &'static [u8],
        first: Vec<u8>,
        /// `first` as the client reads it (chunk framing removed).
        first_decoded: String,
        /// Sent after the client has the first part, just before the fault.
        tail: Vec<u8>,
        tail_decoded: &'static str,
        rst: bool,
    }
    let json_head: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
    let cases = [
        Case {
            what: "SSE, reset after an event",
            head: SSE_HEAD,
            first: chunk(&event(1, "first")),
            first_decoded: event(1, "first"),
            tail_decoded: "",
            tail: Vec::new(),
            rst: true,
        },
        Case {
            what: "SSE, close inside a chunk",
            head: SSE_HEAD,
            first: chunk(&event(1, "first")),
            first_decoded: event(1, "first"),
            tail_decoded: "id: 2\nda",
            tail: b"20\r\nid: 2\nda".to_vec(),
            rst: false,
        },
        Case {
            what: "SSE, close between chunks",
            head: SSE_HEAD,
            first: chunk(&event(1, "first")),
            first_decoded: event(1, "first"),
            tail_decoded: "",
            tail: Vec::new(),
            rst: false,
        },
        Case {
            what: "Content-Length, close short",
            head: json_head,
            first: br#"{"jsonrpc":"#.to_vec(),
            first_decoded: r#"{"jsonrpc":"#.to_string(),
            tail_decoded: "\"2.0\"",
            tail: b"\"2.0\"".to_vec(),
            rst: false,
        },
        Case {
            what: "Content-Length, reset short",
            head: json_head,
            first: br#"{"jsonrpc":"#.to_vec(),
            first_decoded: r#"{"jsonrpc":"#.to_string(),
            tail_decoded: "",
            tail: Vec::new(),
            rst: true,
        },
    ];
    for case in cases {
        let what = case.what;
        let (fault_now, fault_when) = watch::channel(false);
        let (head, first, tail, rst) = (case.head, case.first.clone(), case.tail, case.rst);
        let upstream = FaultyServer::start(move |mut stream, index| {
            let mut fault_when = fault_when.clone();
            let (first, tail) = (first.clone(), tail.clone());
            async move {
                read_request(&mut stream).await;
                if index > 0 {
                    // Later connections are healthy.
                    let ok = [("content-type", "application/json")];
                    send(&mut stream, &response(200, &ok, ECHO_JSON)).await;
                    return;
                }
                send(&mut stream, head).await;
                send(&mut stream, &first).await;
                let _ = fault_when.wait_for(|now| *now).await;
                send(&mut stream, &tail).await;
                if rst {
                    faulty::reset(stream);
                }
            }
        })
        .await;
        let gateway = TestGateway::start(&config(&upstream.url("/mcp"), &[], "")).await;
        let response = open_stream(gateway.addr, "/mcp/stream").await;
        assert_eq!(response.status(), 200, "{what}");
        let mut body = response.into_body();
        let mut received = Vec::new();
        while received.len() < case.first_decoded.len() {
            received.extend_from_slice(&next_data(&mut body, what).await);
        }
        assert_eq!(
            received,
            case.first_decoded.as_bytes(),
            "{what}: the first part arrives"
        );

        fault_now.send(true).expect("upstream waiting");
        let (rest, end) = drain(&mut body, what).await;
        assert!(
            end.is_err(),
            "{what}: the truncated body ended cleanly after {rest:?}; the client cannot tell it was cut"
        );
        // Whatever else arrived is a prefix of what the upstream sent, never invented.
        assert!(
            case.tail_decoded.as_bytes().starts_with(&rest),
            "{what}: {rest:?}"
        );

        // A fresh request afterwards: a new upstream connection, answered normally.
        let answer = call(gateway.addr, "/mcp", API_KEY).await;
        assert_eq!(answer.status, 200, "{what}: {}", answer.body);
        assert_eq!(answer.body, ECHO_JSON, "{what}");
        gateway.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------
// 6. JWKS down, slow, garbage
// ---------------------------------------------------------------------------------------

const ISSUER: &str = "https://idp.test";

fn issuer_toml(jwks_uri: &str, extra: &str) -> String {
    format!(
        "[[issuers]]\nid = \"idp\"\nissuer = \"{ISSUER}\"\njwks_uri = \"{jwks_uri}\"\nalgorithms = [\"ES256\"]\n{extra}\n"
    )
}

fn jwt_config(upstream: &Upstream, issuer: &str) -> String {
    config(&upstream.url("/mcp"), &[], issuer).replace(
        "verifiers = [\"api_keys\"]",
        "verifiers = [\"api_keys\", \"idp\"]",
    )
}

fn token(key: &TestKey, sub: &str) -> String {
    key.sign(&json!({
        "iss": ISSUER, "sub": sub, "aud": "http://127.0.0.1/mcp",
        "exp": now() + 600, "iat": now(), "scope": "mcp:tools",
    }))
}

#[tokio::test]
async fn jwks_down_from_the_start_is_503_for_jwts_while_api_keys_work() {
    let key = TestKey::ec("ec-1");
    let upstream = Upstream::start().await;
    let down = faulty::refused_addr();
    let gateway = TestGateway::start(&jwt_config(
        &upstream,
        &issuer_toml(&format!("http://{down}/jwks.json"), ""),
    ))
    .await;
    let addr = gateway.addr;
    let jwt = token(&key, "u");

    let mut calls = JoinSet::new();
    for i in 0..6 {
        let jwt = jwt.clone();
        calls.spawn(async move {
            let token = if i % 2 == 0 { jwt } else { API_KEY.to_string() };
            (i % 2 == 0, call(addr, "/mcp", &token).await)
        });
    }
    while let Some(joined) = within("calls", calls.join_next()).await {
        let (is_jwt, answer) = joined.expect("call task");
        if is_jwt {
            assert_verifier_outage(&answer, "JWT, JWKS down");
        } else {
            assert_eq!(answer.status, 200, "API key: {}", answer.body);
        }
    }
    assert_verify_outage(&verify(addr, &jwt).await, "/verify, JWKS down");
    assert!(upstream
        .requests()
        .iter()
        .all(|r| r.header("x-auth-method") == Some("api_key")));
}

/// A JWKS endpoint that accepts and never answers: the JWT waits out the gateway's own fetch
/// deadline (10 s, not configurable) and gets 503; API keys are answered meanwhile.
#[tokio::test]
async fn jwks_that_never_answers_is_503_for_jwts_while_api_keys_work() {
    let key = TestKey::ec("ec-1");
    let upstream = Upstream::start().await;
    let jwks = FaultyServer::start(|mut stream, _| async move {
        read_request(&mut stream).await;
        faulty::hold(stream).await;
    })
    .await;
    let gateway = TestGateway::start(&jwt_config(
        &upstream,
        &issuer_toml(&jwks.url("/jwks.json"), ""),
    ))
    .await;
    let addr = gateway.addr;
    let jwt = token(&key, "u");
    let jwt_call = tokio::spawn(async move { call(addr, "/mcp", &jwt).await });
    // The JWT's refetch is under way once the endpoint has two connections (the start-up
    // refresh and this one).
    within("JWKS fetches", async {
        while jwks.accepted() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_serving(addr, "/mcp", "API keys while the JWKS hangs").await;
    assert!(
        !jwt_call.is_finished(),
        "the JWT was decided before the JWKS fetch could time out"
    );
    let answer = within("JWT", jwt_call).await.expect("call task");
    assert_verifier_outage(&answer, "JWT, JWKS never answers");
    assert_serving(addr, "/mcp", "API keys after").await;
}

/// While one slow JWKS fetch is under way, JWTs with other unknown keys arrive; README:
/// "requests arriving during a refetch share it". Each must be decided within about one
/// fetch deadline, not wait for that fetch and then start another.
#[tokio::test]
async fn concurrent_jwts_share_one_slow_jwks_refetch() {
    let key = TestKey::ec("ec-1");
    let upstream = Upstream::start().await;
    let jwks = FaultyServer::start(|mut stream, _| async move {
        read_request(&mut stream).await;
        faulty::hold(stream).await;
    })
    .await;
    let gateway = TestGateway::start(&jwt_config(
        &upstream,
        &issuer_toml(
            &jwks.url("/jwks.json"),
            "jwks_refetch_min_interval = \"1s\"",
        ),
    ))
    .await;
    let addr = gateway.addr;
    let mut calls = JoinSet::new();
    for i in 0..3 {
        // Distinct tokens: one token's concurrent uses share a verification anyway.
        let jwt = token(&key, &format!("user-{i}"));
        calls.spawn(async move {
            let started = Instant::now();
            let answer = call(addr, "/mcp", &jwt).await;
            (answer, started.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut waits = Vec::new();
    while let Some(joined) = tokio::time::timeout(Duration::from_secs(60), calls.join_next())
        .await
        .expect("calls within 60 s")
    {
        let (answer, waited) = joined.expect("call task");
        assert_verifier_outage(&answer, "JWT, JWKS never answers");
        waits.push(waited);
    }
    // One fetch deadline is 10 s; 15 s leaves generous room and still excludes a second
    // fetch in a row.
    assert!(
        waits.iter().all(|w| *w < Duration::from_secs(15)),
        "JWT requests waited {waits:?}: a JWT that arrived during a fetch waited for a second one (JWKS connections: {})",
        jwks.accepted()
    );
}

/// A JWKS endpoint that answers 200 with something that is no key set (or 500): 503 for JWTs,
/// API keys unaffected; once the endpoint serves keys, JWTs work.
#[tokio::test]
async fn jwks_answering_garbage_is_503_for_jwts_and_recovers_when_keys_appear() {
    let key = TestKey::ec("ec-1");
    let good = jwks(&[&key]).to_string();
    let answers: Vec<(&str, Vec<u8>)> = vec![
        (
            "HTML",
            response(200, &[("content-type", "text/html")], "<html>oops</html>"),
        ),
        (
            "JSON without keys",
            response(200, &[("content-type", "application/json")], r#"{"foo":1}"#),
        ),
        (
            "empty key set",
            response(
                200,
                &[("content-type", "application/json")],
                r#"{"keys":[]}"#,
            ),
        ),
        (
            "only a symmetric key",
            response(
                200,
                &[("content-type", "application/json")],
                r#"{"keys":[{"kty":"oct","kid":"ec-1","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ"}]}"#,
            ),
        ),
        (
            "truncated JSON",
            response(200, &[("content-type", "application/json")], &good[..20]),
        ),
        (
            "500",
            response(500, &[("content-type", "application/json")], "{}"),
        ),
        (
            "good keys",
            response(200, &[("content-type", "application/json")], &good),
        ),
    ];
    let answers = Arc::new(answers);
    let mode = Arc::new(AtomicUsize::new(0));
    let jwks_server = {
        let (answers, mode) = (answers.clone(), mode.clone());
        FaultyServer::start(move |mut stream, _| {
            let (answers, mode) = (answers.clone(), mode.clone());
            async move {
                while read_request(&mut stream).await.is_some() {
                    let answer = answers[mode.load(Ordering::SeqCst)].1.clone();
                    send(&mut stream, &answer).await;
                }
            }
        })
        .await
    };
    let upstream = Upstream::start().await;
    let last = answers.len() - 1;
    for (index, (what, _)) in answers.iter().enumerate().take(last) {
        mode.store(index, Ordering::SeqCst);
        // A fresh gateway per answer: its first fetch sees exactly this answer.
        let gateway = TestGateway::start(&jwt_config(
            &upstream,
            &issuer_toml(
                &jwks_server.url("/jwks.json"),
                "jwks_refetch_min_interval = \"1s\"",
            ),
        ))
        .await;
        let answer = call(gateway.addr, "/mcp", &token(&key, "u")).await;
        assert_verifier_outage(&answer, what);
        assert_serving(gateway.addr, "/mcp", what).await;
        if index + 1 < last {
            gateway.shutdown().await;
            continue;
        }
        // The endpoint heals: JWTs work again within a refetch interval or two.
        mode.store(last, Ordering::SeqCst);
        within("recovery", async {
            loop {
                let answer = call(gateway.addr, "/mcp", &token(&key, "u")).await;
                if answer.status == 200 {
                    break;
                }
                assert_verifier_outage(&answer, "before recovery");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        assert_eq!(upstream.last().header("x-auth-method"), Some("jwt"));
        gateway.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------
// 7. Introspection endpoint down, failing, stalled
// ---------------------------------------------------------------------------------------

fn introspection_config(upstream: &Upstream, endpoint: &str, extra: &str) -> String {
    std::env::set_var("FAULTS_INTROSPECTION_SECRET", "faults-secret");
    let table = format!(
        "[[introspection]]\nid = \"as\"\nendpoint = \"{endpoint}\"\nclient_id = \"gateway\"\nclient_secret_env = \"FAULTS_INTROSPECTION_SECRET\"\n{extra}\n"
    );
    config(&upstream.url("/mcp"), &[], &table).replace(
        "verifiers = [\"api_keys\"]",
        "verifiers = [\"api_keys\", \"as\"]",
    )
}

fn active_answer() -> String {
    json!({
        "active": true, "sub": "opaque-user", "scope": "mcp:tools",
        "aud": "http://127.0.0.1/mcp", "exp": now() + 600,
    })
    .to_string()
}

#[tokio::test]
async fn introspection_endpoint_down_is_503_inline_and_401_on_verify() {
    let upstream = Upstream::start().await;
    let down = faulty::refused_addr();
    let gateway = TestGateway::start(&introspection_config(
        &upstream,
        &format!("http://{down}/introspect"),
        "",
    ))
    .await;
    assert_verifier_outage(
        &call(gateway.addr, "/mcp", "opaque-token").await,
        "introspection down",
    );
    assert_verify_outage(
        &verify(gateway.addr, "opaque-token").await,
        "/verify, introspection down",
    );
    assert_serving(gateway.addr, "/mcp", "API keys, introspection down").await;
}

/// 500, a non-JSON 200 and a stall past `timeout` are outages (503), not verdicts on the
/// token: once the endpoint answers again, the same token is accepted.
#[tokio::test]
async fn introspection_endpoint_failing_is_503_and_not_remembered_against_the_token() {
    let upstream = Upstream::start().await;
    const FAIL_500: usize = 0;
    const NOT_JSON: usize = 1;
    const STALL: usize = 2;
    const HEALTHY: usize = 3;
    let mode = Arc::new(AtomicUsize::new(FAIL_500));
    let endpoint = {
        let mode = mode.clone();
        FaultyServer::start(move |mut stream, _| {
            let mode = mode.clone();
            async move {
                while read_request(&mut stream).await.is_some() {
                    let json = [("content-type", "application/json")];
                    let answer = match mode.load(Ordering::SeqCst) {
                        FAIL_500 => response(500, &json, r#"{"error":"server_error"}"#),
                        NOT_JSON => response(200, &[("content-type", "text/html")], "<html>"),
                        STALL => return faulty::hold(stream).await,
                        _ => response(200, &json, &active_answer()),
                    };
                    send(&mut stream, &answer).await;
                }
            }
        })
        .await
    };
    let gateway = TestGateway::start(&introspection_config(
        &upstream,
        &endpoint.url("/introspect"),
        "timeout = \"1s\"",
    ))
    .await;
    let addr = gateway.addr;
    for (what, current) in [
        ("500", FAIL_500),
        ("200 not JSON", NOT_JSON),
        ("stalled", STALL),
    ] {
        mode.store(current, Ordering::SeqCst);
        assert_verifier_outage(&call(addr, "/mcp", "opaque-token").await, what);
        assert_verify_outage(&verify(addr, "opaque-token").await, what);
        assert_serving(addr, "/mcp", what).await;
    }
    mode.store(HEALTHY, Ordering::SeqCst);
    let answer = call(addr, "/mcp", "opaque-token").await;
    assert_eq!(answer.status, 200, "after recovery: {}", answer.body);
    assert_eq!(upstream.last().header("x-user-id"), Some("opaque-user"));
}

// ---------------------------------------------------------------------------------------
// 8. SIGTERM with traffic in flight (the real binary)
// ---------------------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_mcp-auth-gateway");

/// The `serve` process; killed on drop if a test fails before it exits.
struct Served {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Served {
    fn spawn(config: &std::path::Path) -> Served {
        let mut child = tokio::process::Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env_remove("MCP_GATEWAY_CONFIG")
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Served {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next log event whose message starts with `message`.
    async fn wait_for(&mut self, message: &str) -> serde_json::Value {
        loop {
            let line = match tokio::time::timeout(DEADLINE, self.lines.recv()).await {
                Ok(Some(line)) => line,
                other => panic!(
                    "no {message:?} event ({other:?}); log so far:\n{}",
                    self.seen.join("\n")
                ),
            };
            self.seen.push(line.clone());
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                if event["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
                {
                    return event;
                }
            }
        }
    }
}

/// SIGTERM while an SSE stream and a POST are in flight: new connections are refused at
/// once, both in-flight exchanges complete in full, and the process exits 0 well within
/// `shutdown_grace` (5 s).
#[tokio::test]
async fn sigterm_drains_open_streams_and_in_flight_posts_then_exits_0() {
    let (release, released) = watch::channel(false);
    let (arrived, mut arrivals) = mpsc::unbounded_channel::<&'static str>();
    let upstream = FaultyServer::start(move |mut stream, _| {
        let (mut released, arrived) = (released.clone(), arrived.clone());
        async move {
            let Some(request) = read_request(&mut stream).await else {
                return;
            };
            if request.method == "GET" && request.path.ends_with("/sse") {
                send(&mut stream, SSE_HEAD).await;
                send(&mut stream, &chunk(&event(1, "first"))).await;
                let _ = arrived.send("sse");
                let _ = released.wait_for(|go| *go).await;
                send(&mut stream, &chunk(&event(2, "final"))).await;
                send(&mut stream, LAST_CHUNK).await;
            } else {
                let _ = arrived.send("post");
                let _ = released.wait_for(|go| *go).await;
                let json = [("content-type", "application/json")];
                send(&mut stream, &response(200, &json, ECHO_JSON)).await;
            }
            until_closed(&mut stream).await;
        }
    })
    .await;

    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("faults-sigterm-{}.toml", std::process::id()));
    let text = standard_config(
        &upstream.url("/mcp"),
        "",
        "[log]\nformat = \"json\"\nlevel = \"info\"\n",
    );
    assert!(text.contains("shutdown_grace = \"5s\""));
    std::fs::write(&path, text).expect("write config");
    let mut served = Served::spawn(&path);
    let listening = served.wait_for("listening").await;
    let addr: std::net::SocketAddr = listening["addr"]
        .as_str()
        .unwrap_or_else(|| panic!("no addr in {listening}"))
        .parse()
        .expect("a socket address");

    // An open SSE stream with its first event delivered …
    let response = open_stream(addr, "/mcp/sse").await;
    assert_eq!(response.status(), 200);
    let mut sse = response.into_body();
    assert_eq!(
        next_data(&mut sse, "first event").await,
        event(1, "first").as_bytes()
    );
    // … and a POST waiting for its answer at the upstream.
    let post = tokio::spawn(async move {
        let auth = bearer();
        post_json(addr, "/mcp", &[("authorization", &auth)], ECHO_JSON).await
    });
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(within("requests at the upstream", arrivals.recv()).await);
    }
    seen.sort_unstable();
    assert_eq!(seen, [Some("post"), Some("sse")]);

    let pid = served.child.id().expect("running").to_string();
    let term = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("run kill");
    assert!(term.success());
    let signalled = Instant::now();

    // New connections are refused while both exchanges are still open (the upstream holds
    // them until released below). A connect that meets the listener as it closes is reset
    // (the kernel drops what was still in its accept queue): then the next one is refused.
    let refused = within("listener closed", async {
        loop {
            match TcpStream::connect(addr).await {
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(error) => break error,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    assert!(!post.is_finished(), "the POST ended before its answer");

    // About a second after the signal, the upstream finishes both.
    tokio::time::sleep_until((signalled + Duration::from_secs(1)).into()).await;
    release.send(true).expect("upstream waiting");
    assert_eq!(
        next_data(&mut sse, "final event").await,
        event(2, "final").as_bytes()
    );
    let (rest, end) = drain(&mut sse, "end of the SSE stream").await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(end, Ok(()), "the SSE stream ends cleanly");
    let post = within("POST", post).await.expect("post task");
    assert_eq!(post.status, 200, "{}", post.body);
    assert_eq!(post.body, ECHO_JSON);

    // Exit 0 within the grace period plus a margin.
    let status = tokio::time::timeout(Duration::from_secs(5 + 5), served.child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no exit within grace + 5 s; log:\n{}",
                served.seen.join("\n")
            )
        })
        .expect("wait");
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status:?}");
    served.wait_for("stopped").await;
    let _ = std::fs::remove_file(&path);
}
