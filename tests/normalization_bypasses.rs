//! The bypasses the outside review reproduced, over real sockets, inline and through
//! `/verify`: paths that upstream frameworks normalize differently from the raw path
//! (`..;`, `;params`, `%61`, `..%3b`, `%09`, overlong UTF-8, case), a `#` inside
//! `X-Forwarded-Uri`, and fully qualified hosts with a trailing dot. Each must be refused
//! (inline 400, `/verify` 403) and reach no upstream. The general rule is a property in
//! `tests/path_properties.rs`; this file proves the wiring.

mod common;

use common::http::{raw, raw_status};
use common::{TestGateway, Upstream, API_KEY};

/// A lax `/` route (any valid key, no scope), a strict `/admin` route (scope the key lacks)
/// and an MCP route with a public health path; a host route for `tenant.example.com` that
/// wants a scope the key lacks.
fn config(upstream: &Upstream) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"
allowed_hosts = ["*"]

{keys}

[[routes]]
id = "lax"
path = "/"
upstream = "{url}"
verifiers = ["api_keys"]

[[routes]]
id = "admin"
path = "/admin"
upstream = "{url}"
verifiers = ["api_keys"]
scopes = ["admin"]

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "{url}"
verifiers = ["api_keys"]
public_paths = ["/health"]

[[routes]]
id = "tenant"
host = "tenant.example.com"
path = "/"
upstream = "{url}"
verifiers = ["api_keys"]
scopes = ["tenant"]
"#,
        keys = common::gateway::api_key_toml("alice", &["mcp:tools"]),
        url = upstream.url(""),
    )
}

async fn status(gateway: &TestGateway, request: &str) -> u16 {
    raw_status(&raw(gateway.addr, request.as_bytes()).await)
}

fn inline(target: &str, host: &str, with_key: bool) -> String {
    let auth = if with_key {
        format!("Authorization: Bearer {API_KEY}\r\n")
    } else {
        String::new()
    };
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n")
}

fn verify(uri: &str, host: &str, with_key: bool) -> String {
    let auth = if with_key {
        format!("Authorization: Bearer {API_KEY}\r\n")
    } else {
        String::new()
    };
    format!(
        "GET /verify HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Method: GET\r\n\
         X-Forwarded-Uri: {uri}\r\nX-Forwarded-Host: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
}

#[tokio::test]
async fn normalized_paths_cannot_reach_another_route_or_a_public_path() {
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&config(&upstream)).await;
    // (target, sent with the key?) — without the key these would pass only as public paths;
    // with it, only by skipping /admin's scope.
    let cases = [
        ("/mcp/health/..;/..;/admin", false),
        ("/mcp/health/..;/x", false),
        ("/mcp/health;x", false),
        ("/mcp/health/.;/x", false),
        ("/mcp/health/..%3b/x", false),
        ("/%61dmin/x", true),
        ("/%41DMIN/x", true),
        ("/admin;x/y", true),
        ("/ADMIN/x", true),
        ("/Admin", true),
        ("/x/..%3b/admin", true),
        ("/x/%09/admin", true),
        ("/x/%c0%af../admin", true),
        ("/x/%c0%ae%c0%ae/admin", true),
        // Non-ASCII that folds to ASCII: Java lowercases `İ` to `i`, Go matches `ſ` as `s`.
        ("/adm%C4%B0n/x", true),
        ("/%C5%BFecret", true),
        ("/mcp/health/%EF%BC%8E%EF%BC%8E%EF%BC%8Fx", false),
    ];
    for (target, with_key) in cases {
        let inline_status = status(&gateway, &inline(target, "127.0.0.1", with_key)).await;
        assert_eq!(inline_status, 400, "inline {target}");
        let verify_status = status(&gateway, &verify(target, "127.0.0.1", with_key)).await;
        assert_eq!(verify_status, 403, "/verify {target}");
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    // Controls: the same routes, spelled plainly.
    assert_eq!(
        status(&gateway, &inline("/mcp/health", "127.0.0.1", false)).await,
        200
    );
    assert_eq!(
        status(&gateway, &inline("/admin/x", "127.0.0.1", true)).await,
        403
    );
    assert_eq!(
        status(&gateway, &inline("/other/x", "127.0.0.1", true)).await,
        200
    );
    assert_eq!(
        status(&gateway, &verify("/mcp/health", "127.0.0.1", false)).await,
        200
    );
}

#[tokio::test]
async fn verify_refuses_a_fragment_and_dot_segments_behind_public_shortcuts() {
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&config(&upstream)).await;
    for uri in [
        "/mcp/health#/../../admin/x",
        "/mcp/health#x",
        "/.well-known/oauth-protected-resource/..;/mcp/x",
        "/.well-known/oauth-protected-resource/..;/admin",
        "/healthz/..;/admin",
    ] {
        let got = status(&gateway, &verify(uri, "127.0.0.1", false)).await;
        assert_eq!(got, 403, "{uri}");
    }
    // The shortcut itself still answers for the documents.
    let metadata = verify(
        "/.well-known/oauth-protected-resource/mcp",
        "127.0.0.1",
        false,
    );
    assert_eq!(status(&gateway, &metadata).await, 200);
}

#[tokio::test]
async fn a_trailing_dot_host_is_the_same_host() {
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&config(&upstream)).await;
    for host in [
        "tenant.example.com",
        "tenant.example.com.",
        "TENANT.example.com.",
        "tenant.example.com.:8080",
    ] {
        // The tenant route wants a scope the key lacks: 403 in both modes, never the lax
        // route's 200.
        let inline_status = status(&gateway, &inline("/x", host, true)).await;
        assert_eq!(inline_status, 403, "inline Host: {host}");
        let verify_status = status(&gateway, &verify("/x", host, true)).await;
        assert_eq!(verify_status, 403, "/verify X-Forwarded-Host: {host}");
    }
    assert!(upstream.requests().is_empty());
    assert_eq!(
        status(&gateway, &inline("/x", "other.example.com.", true)).await,
        200
    );
}

#[tokio::test]
async fn a_host_with_a_junk_port_is_refused_not_read_whole() {
    // Front proxies read `tenant.example.com:x` as tenant.example.com (Go's SplitHostPort
    // does not validate the port); read whole it would miss the tenant's host route.
    let upstream = Upstream::start().await;
    let gateway = TestGateway::start(&config(&upstream)).await;
    for host in [
        "tenant.example.com:x",
        "tenant.example.com:",
        "tenant.example.com:99999",
        "[::1]junk",
    ] {
        let inline_status = status(&gateway, &inline("/x", host, true)).await;
        assert_eq!(inline_status, 400, "inline Host: {host}");
        let verify_status = status(&gateway, &verify("/x", host, true)).await;
        assert_eq!(verify_status, 403, "/verify X-Forwarded-Host: {host}");
    }
    assert!(upstream.requests().is_empty());
}
