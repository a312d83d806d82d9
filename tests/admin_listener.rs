//! The admin listener (`[admin] listen`): `/verify` answers questions about tokens and
//! `/metrics` tells how the gateway is used, so both can live on a listener only the front
//! proxy and the scraper reach. Then the public listener answers neither, and the admin one
//! serves nothing but those, health, readiness and discovery.

mod common;

use common::gateway::standard_config;
use common::http::get;
use common::{TestGateway, Upstream, API_KEY};

fn verify_headers(bearer: &str) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", bearer.to_string()),
        ("x-forwarded-method", "GET".into()),
        ("x-forwarded-uri", "/mcp".into()),
    ]
}

#[tokio::test]
async fn verify_and_metrics_on_the_admin_listener_only() {
    let upstream = Upstream::start().await;
    let config = standard_config(
        &upstream.url("/mcp"),
        "",
        "[admin]\nlisten = [\"127.0.0.1:0\"]\n",
    );
    let gateway = TestGateway::start(&config).await;
    let internal = gateway.admin_addrs[0];
    let bearer = format!("Bearer {API_KEY}");
    let headers = verify_headers(&bearer);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();

    let on_internal = get(internal, "/verify", &headers).await;
    assert_eq!(on_internal.status, 200, "{}", on_internal.body);
    assert_eq!(on_internal.header("x-user-id"), Some("alice"));
    let no_token = get(internal, "/verify", &headers[1..]).await;
    assert_eq!(no_token.status, 401);

    // The public listener does not know /verify (no route serves it).
    let on_public = get(gateway.addr, "/verify", &headers).await;
    assert_eq!(on_public.status, 404, "{}", on_public.body);
    assert_eq!(on_public.header("x-user-id"), None);

    // The internal listener proxies nothing.
    let proxied = get(internal, "/mcp", &[("authorization", &bearer)]).await;
    assert_eq!(proxied.status, 404);
    assert!(upstream.requests().is_empty());
    assert_eq!(get(internal, "/healthz", &[]).await.status, 200);
    // The public listener still proxies.
    assert_eq!(
        get(gateway.addr, "/mcp", &[("authorization", &bearer)])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn metrics_after_every_kind_of_decision_pass_promtool() {
    let upstream = Upstream::start().await;
    let config = standard_config(
        &upstream.url("/mcp"),
        "",
        "[admin]\nlisten = [\"127.0.0.1:0\"]\n",
    );
    let gateway = TestGateway::start(&config).await;
    let admin = gateway.admin_addrs[0];
    let bearer = format!("Bearer {API_KEY}");
    // allowed, public, missing credential, invalid token, refused request, no route
    assert_eq!(
        get(gateway.addr, "/mcp", &[("authorization", &bearer)])
            .await
            .status,
        200
    );
    assert_eq!(get(gateway.addr, "/mcp/health", &[]).await.status, 200);
    assert_eq!(get(gateway.addr, "/mcp", &[]).await.status, 401);
    assert_eq!(
        get(
            gateway.addr,
            "/mcp",
            &[("authorization", "Bearer not-a-key")]
        )
        .await
        .status,
        401
    );
    assert_eq!(get(gateway.addr, "/mcp/..;/x", &[]).await.status, 400);
    assert_eq!(get(gateway.addr, "/nothing", &[]).await.status, 404);

    // /metrics is served on the admin listener only.
    assert_eq!(get(gateway.addr, "/metrics", &[]).await.status, 404);
    let metrics = get(admin, "/metrics", &[]).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/plain; version=0.0.4")));
    let text = metrics.body;
    for expected in [
        "mcp_gateway_requests_total{route=\"mcp\",method=\"GET\",status=\"200\"}",
        "mcp_gateway_decisions_total{auth=\"api_key\",decision=\"allowed\"}",
        "mcp_gateway_decisions_total{auth=\"none\",decision=\"public\"}",
        "mcp_gateway_decisions_total{auth=\"none\",decision=\"missing_credential\"}",
        "mcp_gateway_decisions_total{auth=\"none\",decision=\"invalid_token\"}",
        "mcp_gateway_decisions_total{auth=\"none\",decision=\"refused_request\"}",
        "mcp_gateway_upstream_duration_seconds_count{route=\"mcp\"}",
        "mcp_gateway_open_connections",
        "mcp_gateway_config_info{sha256=",
        "mcp_gateway_log_lines_dropped_total",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    // No label carries a token, a key or a path.
    assert!(!text.contains("not-a-key") && !text.contains(API_KEY) && !text.contains("..;"));

    // The real Prometheus tooling accepts it.
    let Some(promtool) = common::external::require("promtool") else {
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let output = child.wait_with_output().expect("promtool output");
    assert!(
        output.status.success(),
        "promtool check metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
