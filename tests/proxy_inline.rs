//! Inline mode as a specification: what the upstream receives, what the client sees,
//! streaming, and upstream failures. Real sockets, the in-process gateway, a Rust upstream.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::gateway::standard_config;
use common::http::{self, get, post_json};
use common::{TestGateway, Upstream, API_KEY};
use http_body_util::BodyExt;

fn bearer() -> String {
    format!("Bearer {API_KEY}")
}

#[tokio::test]
async fn authorized_request_reaches_upstream_with_identity_and_without_token() {
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;

    let answer = post_json(
        gateway.addr,
        "/mcp?x=1",
        &[
            ("authorization", &bearer()),
            ("x-user-id", "mallory"),
            ("X-USER-EMAIL", "mallory@evil.example"),
            ("x-auth-scopes", "admin"),
            ("cookie", "session=stolen"),
            ("mcp-session-id", "abc"),
            ("mcp-protocol-version", "2025-11-25"),
            ("last-event-id", "7"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "drop-me"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-prefix", "/evil"),
            ("x_forwarded_host", "evil.example.com"),
            ("x-original-uri", "/admin"),
        ],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let seen = upstream.last();
    assert_eq!(seen.path_and_query, "/mcp?x=1");
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    assert_eq!(seen.header("x-user-name"), Some("Test User"));
    assert_eq!(seen.headers.get_all("x-user-id").iter().count(), 1);
    assert_eq!(
        seen.header("x-user-email"),
        None,
        "spoofed header must be stripped"
    );
    assert_eq!(seen.header("x-auth-scopes"), Some("mcp:tools"));
    assert_eq!(seen.header("x-auth-method"), Some("api_key"));
    assert_eq!(
        seen.header("authorization"),
        None,
        "the client's token never goes upstream"
    );
    assert_eq!(seen.header("cookie"), None);
    assert_eq!(
        seen.header("x-hop"),
        None,
        "headers named in Connection are hop-by-hop"
    );
    for forged in [
        "x-real-ip",
        "x-forwarded-prefix",
        "x_forwarded_host",
        "x-original-uri",
    ] {
        assert_eq!(
            seen.header(forged),
            None,
            "{forged} is a proxy's claim, not a client's"
        );
    }
    assert_eq!(seen.header("mcp-session-id"), Some("abc"));
    assert_eq!(seen.header("mcp-protocol-version"), Some("2025-11-25"));
    assert_eq!(seen.header("last-event-id"), Some("7"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(gateway.addr.to_string().as_str())
    );
    assert_eq!(
        seen.header("host"),
        Some(upstream.addr.to_string().as_str())
    );
    assert_eq!(
        std::str::from_utf8(&seen.body).unwrap(),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#
    );

    // Response side: session header passes, hop-by-hop and upstream CORS do not.
    assert_eq!(answer.header("mcp-session-id"), Some("upstream-session"));
    assert_eq!(answer.header("x-upstream-hop"), None);
    assert_eq!(answer.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn missing_token_gets_challenge_pointing_at_metadata() {
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;

    let answer = post_json(
        gateway.addr,
        "/mcp",
        &[],
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#,
    )
    .await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.header("www-authenticate"),
        Some(
            r#"Bearer resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource/mcp", scope="mcp:tools""#
        )
    );
    assert_eq!(answer.json()["error"], "unauthorized");
    assert!(upstream.requests().is_empty());

    let metadata = get(
        gateway.addr,
        "/.well-known/oauth-protected-resource/mcp",
        &[],
    )
    .await;
    assert_eq!(metadata.status, 200);
    assert_eq!(metadata.header("content-type"), Some("application/json"));
    let doc = metadata.json();
    assert_eq!(doc["resource"], "http://127.0.0.1/mcp");
    assert_eq!(doc["scopes_supported"], serde_json::json!(["mcp:tools"]));
    assert_eq!(
        doc["bearer_methods_supported"],
        serde_json::json!(["header"])
    );

    // Single route: the root document describes it too (RFC 9728 fallback).
    let root = get(gateway.addr, "/.well-known/oauth-protected-resource", &[]).await;
    assert_eq!(root.status, 200);
    assert_eq!(root.json()["resource"], "http://127.0.0.1/mcp");
    let unknown = get(
        gateway.addr,
        "/.well-known/oauth-protected-resource/other",
        &[],
    )
    .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn wrong_key_and_wrong_scope() {
    let upstream = Upstream::start().await;
    let config = standard_config(&upstream.url("/mcp"), "", "").replace(
        r#"scopes = ["mcp:tools"]
public_paths"#,
        r#"scopes = ["mcp:tools", "mcp:admin"]
public_paths"#,
    );
    let gateway = TestGateway::start(&config).await;

    let bad = get(
        gateway.addr,
        "/mcp",
        &[("authorization", "Bearer not-a-key")],
    )
    .await;
    assert_eq!(bad.status, 401);
    let challenge = bad.header("www-authenticate").unwrap();
    assert!(challenge.starts_with(
        "Bearer resource_metadata=\"http://127.0.0.1/.well-known/oauth-protected-resource/mcp\""
    ));
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");

    let scope = get(gateway.addr, "/mcp", &[("authorization", &bearer())]).await;
    assert_eq!(scope.status, 403);
    let challenge = scope.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"mcp:admin mcp:tools\""),
        "{challenge}"
    );
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn public_sub_path_needs_no_token_and_gets_no_identity() {
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;
    let answer = get(gateway.addr, "/mcp/health", &[("x-user-id", "mallory")]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(upstream.last().header("x-user-id"), None);
    // Not a prefix match on raw strings: /mcp/healthz is not public.
    assert_eq!(get(gateway.addr, "/mcp/healthz", &[]).await.status, 401);
    // A token in the query string is refused even where no token is needed.
    let leaked = get(gateway.addr, "/mcp/health?access_token=abc", &[]).await;
    assert_eq!(leaked.status, 400);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn sse_events_are_streamed_not_buffered() {
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;

    let request = http::request("GET", gateway.addr, "/mcp/sse")
        .header("authorization", bearer())
        .header("accept", "text/event-stream")
        .body(http::empty())
        .unwrap();
    let response = http::send(gateway.addr, request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();

    // The first event arrives while the upstream is still holding the second one back.
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("first event without waiting for the stream to end")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(first, Bytes::from_static(b"id: 1\ndata: first\n\n"));

    upstream.release();
    let second = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("second event")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(second, Bytes::from_static(b"id: 2\ndata: second\n\n"));
}

#[tokio::test]
async fn long_lived_stream_is_not_cut_by_the_response_timeout() {
    let upstream = Upstream::start().await;
    // response_timeout is 2 s in the standard config; the stream must outlive it.
    let gateway = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;
    let request = http::request("GET", gateway.addr, "/mcp/open-stream")
        .header("authorization", bearer())
        .body(http::empty())
        .unwrap();
    let response = http::send(gateway.addr, request).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, Bytes::from_static(b"id: 1\ndata: first\n\n"));
    // Past the response-head deadline, the stream is still open (no end, no error).
    let more = tokio::time::timeout(Duration::from_secs(3), body.frame()).await;
    assert!(more.is_err(), "the stream must stay open, got {more:?}");
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let dead = common::dead_port();
    let down_port = dead.port;
    let gateway = TestGateway::start(&standard_config(
        &format!("http://127.0.0.1:{down_port}/mcp"),
        "",
        "",
    ))
    .await;
    let answer = get(gateway.addr, "/mcp", &[("authorization", &bearer())]).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.json()["error"]["code"], -32000);
    assert_eq!(answer.header("www-authenticate"), None);

    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;
    let answer = get(gateway.addr, "/mcp/slow", &[("authorization", &bearer())]).await;
    assert_eq!(answer.status, 504);
    assert_eq!(answer.json()["jsonrpc"], "2.0");
}

#[tokio::test]
async fn upstream_credential_replaces_client_copy() {
    std::env::set_var("PROXY_INLINE_UPSTREAM_KEY", "gateway-own-secret");
    let upstream = Upstream::start().await;
    let route_extra =
        "[routes.upstream_headers]\n\"X-Api-Key\" = { env = \"PROXY_INLINE_UPSTREAM_KEY\" }\n";
    let gateway =
        TestGateway::start(&standard_config(&upstream.url("/mcp"), route_extra, "")).await;
    let answer = get(
        gateway.addr,
        "/mcp",
        &[("authorization", &bearer()), ("x-api-key", "client-guess")],
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = upstream.last();
    assert_eq!(seen.header("x-api-key"), Some("gateway-own-secret"));
    assert_eq!(seen.headers.get_all("x-api-key").iter().count(), 1);
}

#[tokio::test]
async fn cors_preflight_and_exposed_challenge_for_allowed_origin() {
    let upstream = Upstream::start().await;
    let route_extra = "allowed_origins = [\"https://app.example.com\"]\n";
    let gateway =
        TestGateway::start(&standard_config(&upstream.url("/mcp"), route_extra, "")).await;

    let preflight = http::exchange(
        gateway.addr,
        http::request("OPTIONS", gateway.addr, "/mcp")
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .body(http::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(preflight
        .header("access-control-allow-headers")
        .unwrap()
        .contains("Authorization"));
    assert!(
        upstream.requests().is_empty(),
        "preflights are answered by the gateway"
    );

    let challenge = get(
        gateway.addr,
        "/mcp",
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(challenge.status, 401);
    assert!(challenge
        .header("access-control-expose-headers")
        .unwrap()
        .contains("WWW-Authenticate"));

    let evil = get(
        gateway.addr,
        "/mcp",
        &[
            ("origin", "https://evil.example.com"),
            ("authorization", &bearer()),
        ],
    )
    .await;
    assert_eq!(evil.status, 403);
    assert_eq!(evil.json()["error"]["code"], -32000);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;
    let addr = gateway.addr;
    let request = http::request("GET", addr, "/mcp/sse")
        .header("authorization", bearer())
        .body(http::empty())
        .unwrap();
    let response = http::send(addr, request).await;
    let mut body = response.into_body();
    let _first = body.frame().await.unwrap().unwrap();

    let shutdown = tokio::spawn(gateway.shutdown());
    // New connections are refused once shutdown has begun …
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "listener still accepting after shutdown");
    // … while the in-flight stream still completes.
    upstream.release();
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(second, Bytes::from_static(b"id: 2\ndata: second\n\n"));
    while let Some(frame) = body.frame().await {
        frame.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn forwarded_headers_are_replaced_unless_the_proxy_in_front_is_trusted() {
    let upstream = Upstream::start().await;
    let spoof = [
        ("authorization", bearer()),
        ("x-forwarded-for", "203.0.113.9".to_string()),
        ("x-forwarded-proto", "https".to_string()),
        ("x-forwarded-host", "mcp.example.com".to_string()),
    ];
    let spoof: Vec<(&str, &str)> = spoof.iter().map(|(n, v)| (*n, v.as_str())).collect();

    let untrusted = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;
    assert_eq!(get(untrusted.addr, "/mcp", &spoof).await.status, 200);
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(untrusted.addr.to_string().as_str())
    );

    let config = standard_config(&upstream.url("/mcp"), "", "").replace(
        "public_url = \"http://127.0.0.1\"",
        "public_url = \"http://127.0.0.1\"\ntrust_forwarded_headers = true",
    );
    let trusted = TestGateway::start(&config).await;
    assert_eq!(get(trusted.addr, "/mcp", &spoof).await.status, 200);
    let seen = upstream.last();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("mcp.example.com"));
}

#[tokio::test]
async fn several_routes_longest_prefix_host_routes_and_their_metadata() {
    let (one, two, three) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let extra = format!(
        r#"
[[routes]]
id = "team"
path = "/mcp/team"
upstream = "{}"
verifiers = ["api_keys"]
scopes = ["mcp:tools"]

[[routes]]
id = "tenant-host"
host = "tenant.localhost"
path = "/mcp"
upstream = "{}"
verifiers = ["api_keys"]
allowed_hosts = ["tenant.localhost"]
"#,
        two.url("/team-base"),
        three.url("/"),
    );
    let gateway = TestGateway::start(&standard_config(&one.url("/mcp"), "", &extra)).await;
    let auth = bearer();

    // (request path, upstream that must receive it, path it must see)
    let cases = [
        ("/mcp/x", &one, "/mcp/x"),
        ("/mcp/team/y?q=1", &two, "/team-base/y?q=1"),
        // A segment boundary, not a string prefix: /mcp/teamx belongs to /mcp.
        ("/mcp/teamx", &one, "/mcp/teamx"),
    ];
    for (path, upstream, seen) in cases {
        let answer = get(gateway.addr, path, &[("authorization", &auth)]).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_eq!(upstream.last().path_and_query, seen, "{path}");
    }
    let tenant = http::exchange(
        gateway.addr,
        ::http::Request::get("/mcp/z")
            .header("host", "tenant.localhost:8080")
            .header("authorization", &auth)
            .body(http::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(tenant.status, 200);
    assert_eq!(three.last().path_and_query, "/z");

    let team = get(
        gateway.addr,
        "/.well-known/oauth-protected-resource/mcp/team",
        &[],
    )
    .await;
    assert_eq!(team.json()["resource"], "http://127.0.0.1/mcp/team");
    let challenge = get(gateway.addr, "/mcp/team", &[]).await;
    assert!(challenge.header("www-authenticate").unwrap().contains(
        "resource_metadata=\"http://127.0.0.1/.well-known/oauth-protected-resource/mcp/team\""
    ));
    // A host route's resource and challenge live on its own host.
    let on_tenant = |path: &str| {
        ::http::Request::get(path.to_string())
            .header("host", "tenant.localhost")
            .body(http::empty())
            .unwrap()
    };
    let tenant_doc = http::exchange(
        gateway.addr,
        on_tenant("/.well-known/oauth-protected-resource/mcp"),
    )
    .await;
    assert_eq!(tenant_doc.json()["resource"], "http://tenant.localhost/mcp");
    let tenant_challenge = http::exchange(gateway.addr, on_tenant("/mcp")).await;
    assert!(tenant_challenge
        .header("www-authenticate")
        .unwrap()
        .contains(
        "resource_metadata=\"http://tenant.localhost/.well-known/oauth-protected-resource/mcp\""
    ));

    // Several routes on this host: the root document would have to pick one, so it is 404.
    assert_eq!(
        get(gateway.addr, "/.well-known/oauth-protected-resource", &[])
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn access_rules_refuse_without_a_step_up_challenge() {
    let upstream = Upstream::start().await;
    let cases = [
        ("allowed_subjects = [\"alice\"]", 200),
        ("allowed_subjects = [\"bob\"]", 403),
        ("allowed_groups = [\"ops\"]", 403),
        ("allowed_clients = [\"cli\"]", 403),
    ];
    for (rule, want) in cases {
        let gateway = TestGateway::start(&standard_config(&upstream.url("/mcp"), rule, "")).await;
        let answer = get(gateway.addr, "/mcp", &[("authorization", &bearer())]).await;
        assert_eq!(answer.status, want, "{rule}: {}", answer.body);
        if want == 403 {
            assert_eq!(answer.json()["error"], "access_denied", "{rule}");
            assert_eq!(
                answer.header("www-authenticate"),
                None,
                "{rule}: no step-up challenge"
            );
        }
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn silent_connections_do_not_keep_their_slot() {
    use tokio::io::AsyncReadExt;
    let upstream = Upstream::start().await;
    let config = standard_config(&upstream.url("/mcp"), "", "").replace(
        "[server.limits]",
        "[server.limits]\nheader_read_timeout = \"1s\"",
    );
    let gateway = TestGateway::start(&config).await;
    // Connect and send nothing: the gateway closes the connection (EOF), it does not wait
    // forever. The outer timeout only guards against a hang.
    let mut silent = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf))
        .await
        .expect("the gateway closed the silent connection");
    assert_eq!(read.unwrap(), 0);
}

#[tokio::test]
async fn method_allowlist_names_the_routes_own_methods() {
    let upstream = Upstream::start().await;
    let config = standard_config(
        &upstream.url("/mcp"),
        "methods = [\"POST\"]\nallowed_origins = [\"https://app.example.com\"]",
        "",
    );
    let gateway = TestGateway::start(&config).await;
    let answer = get(gateway.addr, "/mcp", &[("authorization", &bearer())]).await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.header("allow"), Some("POST, OPTIONS"));
    let preflight = http::exchange(
        gateway.addr,
        http::request("OPTIONS", gateway.addr, "/mcp")
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .body(http::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("POST, OPTIONS")
    );
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_silent_upstream_stream_is_cut_after_the_idle_timeout() {
    let upstream = Upstream::start().await;
    let config = standard_config(&upstream.url("/mcp"), "", "").replace(
        "[server.limits]",
        "[server.limits]\nstream_idle_timeout = \"1s\"",
    );
    let gateway = TestGateway::start(&config).await;
    let request = http::request("GET", gateway.addr, "/mcp/open-stream")
        .header("authorization", bearer())
        .body(http::empty())
        .unwrap();
    let response = http::send(gateway.addr, request).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, Bytes::from_static(b"id: 1\ndata: first\n\n"));
    // The upstream stays open but silent: the gateway ends the stream (the outer timeout
    // only guards against a hang).
    let next = tokio::time::timeout(Duration::from_secs(20), body.frame())
        .await
        .expect("the idle stream was cut");
    assert!(
        !matches!(next, Some(Ok(ref frame)) if frame.is_data()),
        "no more data after the idle cut: {next:?}"
    );
}

#[tokio::test]
async fn method_overrides_are_refused_in_both_modes() {
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;
    for name in [
        "X-HTTP-Method-Override",
        "x_http_method",
        "X-Method-Override",
    ] {
        let inline = post_json(
            gateway.addr,
            "/mcp",
            &[("authorization", &bearer()), (name, "DELETE")],
            "{}",
        )
        .await;
        assert_eq!(inline.status, 400, "{name}: {}", inline.body);
        let verify = get(
            gateway.addr,
            "/verify",
            &[
                ("authorization", &bearer()),
                ("x-forwarded-method", "POST"),
                ("x-forwarded-uri", "/mcp"),
                (name, "DELETE"),
            ],
        )
        .await;
        assert_eq!(verify.status, 403, "{name}: {}", verify.body);
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn an_address_in_use_is_an_error_not_a_shared_port() {
    let upstream = Upstream::start().await;
    let first = TestGateway::start(&standard_config(&upstream.url("/mcp"), "", "")).await;
    let config = standard_config(&upstream.url("/mcp"), "", "").replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"{}\"]", first.addr),
    );
    let compiled = mcp_auth_gateway::config::from_toml_str(&config, std::path::Path::new("."))
        .expect("config compiles");
    let second = mcp_auth_gateway::Gateway::start(compiled).await;
    assert!(
        matches!(second, Err(mcp_auth_gateway::StartError::Bind { .. })),
        "a second gateway must not share the first one's port"
    );
}
