//! Operating signals: `/healthz` (alive) and `/readyz` (able to decide every request it is
//! configured for), never proxied, never authenticated; and the request id every request
//! carries to the upstream and back.

mod common;

use std::time::Duration;

use common::gateway::standard_config;
use common::http::get;
use common::jwks::JwksServer;
use common::keys::{jwks, TestKey};
use common::{TestGateway, Upstream, API_KEY};

fn issuer(jwks_uri: &str) -> String {
    format!(
        "[[issuers]]\nid = \"idp\"\nissuer = \"https://idp.test\"\njwks_uri = \"{jwks_uri}\"\nalgorithms = [\"ES256\"]\njwks_refetch_min_interval = \"1s\"\n"
    )
}

#[tokio::test]
async fn readyz_waits_for_every_issuers_keys() {
    let upstream = Upstream::start().await;
    // Keys from a port where nothing listens: alive, not ready.
    let dead_port = common::dead_port();
    let dead = format!("http://127.0.0.1:{}/jwks.json", dead_port.port);
    let gateway =
        TestGateway::start(&standard_config(&upstream.url("/mcp"), "", &issuer(&dead))).await;
    assert_eq!(get(gateway.addr, "/healthz", &[]).await.status, 200);
    let not_ready = get(gateway.addr, "/readyz", &[]).await;
    assert_eq!(not_ready.status, 503, "{}", not_ready.body);
    assert_eq!(not_ready.json()["waiting_for"][0], "jwks:idp");

    // Keys that load: ready (the first fetch runs in the background; wait for it, bounded).
    let key = TestKey::ec("ec-1");
    let server = JwksServer::start(jwks(&[&key])).await;
    let gateway = TestGateway::start(&standard_config(
        &upstream.url("/mcp"),
        "",
        &issuer(&server.uri()),
    ))
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = get(gateway.addr, "/readyz", &[]).await;
        if ready.status == 200 {
            assert_eq!(ready.json()["status"], "ready");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {}",
            ready.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(upstream.requests().is_empty(), "probes are never proxied");
}

#[tokio::test]
async fn every_request_has_an_id_the_upstream_and_the_client_see() {
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;
    let bearer = format!("Bearer {API_KEY}");
    let answer = get(
        gateway.addr,
        "/mcp",
        &[
            ("authorization", &bearer),
            ("x-request-id", "spoofed"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);
    let id = answer
        .header("x-request-id")
        .expect("request id")
        .to_string();
    assert_eq!(id.len(), 32, "{id}");
    let seen = upstream.last();
    assert_eq!(
        seen.header("x-request-id"),
        Some(id.as_str()),
        "the client's own id is not trusted"
    );
    assert_eq!(
        seen.header("traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );

    // A malformed traceparent (and its tracestate) does not reach the upstream.
    get(
        gateway.addr,
        "/mcp",
        &[
            ("authorization", &bearer),
            ("traceparent", "junk"),
            ("tracestate", "a=b"),
        ],
    )
    .await;
    let seen = upstream.last();
    assert_eq!(seen.header("traceparent"), None);
    assert_eq!(seen.header("tracestate"), None);

    // Rejections and /verify answers carry an id too.
    let denied = get(gateway.addr, "/mcp", &[]).await;
    assert!(denied.header("x-request-id").is_some());
    let verified = get(
        gateway.addr,
        "/verify",
        &[
            ("authorization", &bearer),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/mcp"),
        ],
    )
    .await;
    assert_eq!(verified.status, 200);
    assert!(verified.header("x-request-id").is_some());
}

#[tokio::test]
async fn behind_a_trusted_proxy_its_request_id_is_kept() {
    let upstream = Upstream::start().await;
    let config = standard_config(&upstream.url("/mcp"), "", "").replace(
        "[server.limits]",
        "trust_forwarded_headers = true\n\n[server.limits]",
    );
    let gateway = TestGateway::start(&config).await;
    let bearer = format!("Bearer {API_KEY}");
    let answer = get(
        gateway.addr,
        "/mcp",
        &[("authorization", &bearer), ("x-request-id", "edge-1234")],
    )
    .await;
    assert_eq!(answer.header("x-request-id"), Some("edge-1234"));
    assert_eq!(upstream.last().header("x-request-id"), Some("edge-1234"));
    // Not a plain id: replaced even from a trusted proxy.
    let answer = get(
        gateway.addr,
        "/mcp",
        &[("authorization", &bearer), ("x-request-id", "a b\"c")],
    )
    .await;
    assert_ne!(answer.header("x-request-id"), Some("a b\"c"));
}
