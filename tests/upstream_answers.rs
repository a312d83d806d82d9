//! What the upstream says that must not reach the client as if the gateway said it, and
//! what the client does wrong that must not be blamed on the upstream:
//! - an upstream `WWW-Authenticate` never reaches the client (it could send MCP clients to
//!   another authorization server), and an upstream 401 — a refusal of the gateway's own
//!   credential, since the client's token is never forwarded — becomes a 502;
//! - `Set-Cookie` is dropped, as `Cookie` is never forwarded;
//! - a malformed chunked request body is the client's 400, not an upstream 502.

mod common;

use common::gateway::standard_config;
use common::http::{get, raw, raw_status};
use common::{TestGateway, Upstream, API_KEY};

async fn stack() -> (Upstream, TestGateway) {
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;
    (upstream, gateway)
}

fn auth() -> (&'static str, String) {
    ("authorization", format!("Bearer {API_KEY}"))
}

#[tokio::test]
async fn upstream_challenges_and_cookies_do_not_reach_the_client() {
    let (upstream, gateway) = stack().await;
    let (name, value) = auth();
    let answer = get(gateway.addr, "/mcp/set-cookie", &[(name, &value)]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("set-cookie"), None, "{:?}", answer.headers);
    assert_eq!(
        answer.header("www-authenticate"),
        None,
        "{:?}",
        answer.headers
    );
    for origin_wide in ["strict-transport-security", "clear-site-data", "alt-svc"] {
        assert_eq!(answer.header(origin_wide), None, "{origin_wide}");
    }
    assert_eq!(answer.header("x-upstream-own"), Some("kept"));
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn upstream_401_is_a_502_without_its_challenge() {
    let (_upstream, gateway) = stack().await;
    let (name, value) = auth();
    let answer = get(gateway.addr, "/mcp/unauthorized", &[(name, &value)]).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.header("www-authenticate"), None);
    let body = answer.json();
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("upstream refused the gateway"),
        "{body}"
    );
}

#[tokio::test]
async fn malformed_chunked_body_is_the_clients_400() {
    let (_upstream, gateway) = stack().await;
    for body in [
        // A chunk size that is not hex.
        "zz\r\n{}\r\n0\r\n\r\n",
        // A chunk longer than announced, then garbage instead of CRLF.
        "2\r\n{}}}\r\n0\r\n\r\n",
    ] {
        let request = format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
        );
        let answer = raw(gateway.addr, request.as_bytes()).await;
        // hyper may refuse the framing itself (400) or the gateway reports the body error
        // (400 with a JSON body); never 502.
        assert_eq!(raw_status(&answer), 400, "{body:?} → {answer}");
        assert!(
            answer.contains("malformed request body"),
            "the gateway's own answer: {answer}"
        );
    }
}
