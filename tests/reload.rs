//! Configuration reload (SIGHUP, `Gateway::reload`): the new configuration is swapped in
//! atomically while traffic flows — no request fails, an open SSE stream lives on, the new
//! route answers right after, and JWT issuers whose key source did not change keep their keys.
//! The signal itself, and a broken file that changes nothing, are tested on the real binary
//! in `tests/config_and_cli.rs`.

mod common;

use std::time::Duration;

use common::gateway::standard_config;
use common::http::get;
use common::jwks::JwksServer;
use common::keys::{jwks, now, TestKey};
use common::{TestGateway, Upstream, API_KEY};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn reload_under_traffic_keeps_streams_and_requests_and_adds_the_new_route() {
    let upstream = Upstream::start().await;
    let before = standard_config(&upstream.url("/mcp"), "", "");
    let after = format!(
        "{before}\n[[routes]]\nid = \"other\"\npath = \"/other\"\nupstream = \"{}\"\nverifiers = [\"api_keys\"]\n",
        upstream.url("/other")
    );
    let gateway = TestGateway::start(&before).await;
    assert_eq!(get(gateway.addr, "/other", &[]).await.status, 404);

    // An open SSE stream (the upstream holds it after the first event).
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "GET /mcp/sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: first") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }

    // A bounded loop of requests across the swap.
    let addr = gateway.addr;
    let traffic = tokio::spawn(async move {
        let bearer = format!("Bearer {API_KEY}");
        let mut statuses = Vec::new();
        for _ in 0..300 {
            statuses.push(
                get(addr, "/mcp", &[("authorization", &bearer)])
                    .await
                    .status,
            );
        }
        statuses
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let needs_restart = gateway.reload(&after);
    assert!(needs_restart.is_empty(), "{needs_restart:?}");
    let statuses = traffic.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "requests failed across the reload: {statuses:?}"
    );

    // The new route answers; the old stream gets its next event.
    let bearer = format!("Bearer {API_KEY}");
    assert_eq!(
        get(gateway.addr, "/other", &[("authorization", &bearer)])
            .await
            .status,
        200
    );
    upstream.release();
    while !String::from_utf8_lossy(&seen).contains("data: second") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the stream was cut by the reload");
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn unchanged_issuers_keep_their_keys_across_a_reload() {
    let key = TestKey::ec("ec-1");
    let mut server = JwksServer::start(jwks(&[&key])).await;
    let upstream = Upstream::start().await;
    let issuer = format!(
        "[[issuers]]\nid = \"idp\"\nissuer = \"https://idp.test\"\njwks_uri = \"{}\"\nalgorithms = [\"ES256\"]\n",
        server.uri()
    );
    let config = standard_config(&upstream.url("/mcp"), "", &issuer).replace(
        "verifiers = [\"api_keys\"]",
        "verifiers = [\"api_keys\", \"idp\"]",
    );
    let gateway = TestGateway::start(&config).await;
    let token = |sub: &str| {
        key.sign(&json!({
            "iss": "https://idp.test", "sub": sub, "aud": "http://127.0.0.1/mcp",
            "exp": now() + 600, "scope": "mcp:tools",
        }))
    };
    let call = |token: String| {
        let addr = gateway.addr;
        async move {
            get(
                addr,
                "/mcp",
                &[("authorization", &format!("Bearer {token}"))],
            )
            .await
            .status
        }
    };
    assert_eq!(call(token("before")).await, 200);
    // The IdP goes away, then the configuration is reloaded (compiled anew: new issuer
    // objects): a new token still verifies with the keys fetched before.
    server.stop().await;
    gateway.reload(&config);
    assert_eq!(call(token("after-reload")).await, 200);
}
