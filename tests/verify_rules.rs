//! `/verify` applies the route's MCP rules, session binding and rate limits, from the
//! `Mcp-Method` / `Mcp-Name` headers or from a forwarded body (Traefik `forwardBody`), and
//! answers only what front proxies pass on: 200, 401 or 403.

mod common;

use bytes::Bytes;
use common::http::{exchange, request, Answer};
use common::TestGateway;
use http_body_util::Full;
use mcp_auth_gateway::auth::api_key::{format_hash, sha256};

fn key(id: &str) -> String {
    format!(
        "[[api_keys]]\nid = \"{id}\"\nhash = \"{}\"\nsubject = \"{id}\"\nscopes = [\"mcp:tools\"]\n",
        format_hash(&sha256(format!("{id}-key-0123456789").as_bytes()))
    )
}

async fn start(undetermined: &str) -> TestGateway {
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"
{alice}
{bob}
[[routes]]
id = "mcp"
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"
verifiers = ["api_keys"]
[routes.mcp]
undetermined = "{undetermined}"
[[routes.mcp.rules]]
name = "no-deletes"
tools = ["delete_*"]
deny = true
[[routes.mcp.rules]]
name = "deploy-needs-admin"
tools = ["deploy"]
scopes = ["admin"]
[routes.rate_limits]
tools = {{ search = "2/hour" }}
"#,
        alice = key("alice"),
        bob = key("bob"),
    );
    TestGateway::start(&toml).await
}

async fn verify(
    gateway: &TestGateway,
    who: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut builder = request("GET", gateway.addr, "/verify")
        .header("x-forwarded-method", "POST")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "127.0.0.1")
        .header("x-forwarded-uri", "/mcp")
        .header("authorization", format!("Bearer {who}-key-0123456789"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    exchange(gateway.addr, builder.body(Full::new(body)).unwrap()).await
}

fn call(tool: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}"}}}}"#)
}

#[tokio::test]
async fn rules_apply_from_the_routing_headers() {
    let gateway = start("deny").await;
    let ok = verify(
        &gateway,
        "alice",
        &[("mcp-method", "tools/call"), ("mcp-name", "get_file")],
        None,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.header("x-user-id"), Some("alice"));
    let denied = verify(
        &gateway,
        "alice",
        &[("mcp-method", "tools/call"), ("mcp-name", "delete_repo")],
        None,
    )
    .await;
    assert_eq!(denied.status, 403);
    assert!(denied.body.contains("no-deletes"), "{}", denied.body);
    let step_up = verify(
        &gateway,
        "alice",
        &[("mcp-method", "tools/call"), ("mcp-name", "deploy")],
        None,
    )
    .await;
    assert_eq!(step_up.status, 403);
    let challenge = step_up.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("insufficient_scope") && challenge.contains("admin"),
        "{challenge}"
    );
    // Nothing says what is called: refused by default (fail closed), as 403.
    let blind = verify(&gateway, "alice", &[], None).await;
    assert_eq!(blind.status, 403, "{}", blind.body);
    // A named operation without its name cannot be judged either.
    let nameless = verify(&gateway, "alice", &[("mcp-method", "tools/call")], None).await;
    assert_eq!(nameless.status, 403);
    // Plumbing needs no name.
    let list = verify(&gateway, "alice", &[("mcp-method", "tools/list")], None).await;
    assert_eq!(list.status, 200);
    gateway.shutdown().await;
}

#[tokio::test]
async fn rules_apply_to_a_forwarded_body_and_headers_must_agree_with_it() {
    let gateway = start("deny").await;
    let ok = verify(
        &gateway,
        "alice",
        &[("content-type", "application/json")],
        Some(&call("get_file")),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let denied = verify(&gateway, "alice", &[], Some(&call("delete_repo"))).await;
    assert_eq!(denied.status, 403);
    // A header that names another tool than the body: refused.
    let lying = verify(
        &gateway,
        "alice",
        &[("mcp-method", "tools/call"), ("mcp-name", "get_file")],
        Some(&call("delete_repo")),
    )
    .await;
    assert_eq!(lying.status, 403, "{}", lying.body);
    let garbage = verify(&gateway, "alice", &[], Some("{not json")).await;
    assert_eq!(garbage.status, 403);
    gateway.shutdown().await;
}

#[tokio::test]
async fn undetermined_calls_can_be_let_through_and_limits_and_sessions_apply() {
    let gateway = start("allow").await;
    assert_eq!(verify(&gateway, "alice", &[], None).await.status, 200);
    // Per-tool limit (2/hour): the third search is refused with a 403 front proxies pass on.
    let search = [("mcp-method", "tools/call"), ("mcp-name", "search")];
    assert_eq!(verify(&gateway, "alice", &search, None).await.status, 200);
    assert_eq!(verify(&gateway, "alice", &search, None).await.status, 200);
    let limited = verify(&gateway, "alice", &search, None).await;
    assert_eq!(limited.status, 403, "{}", limited.body);
    assert!(limited.header("retry-after").is_some());
    // Sessions: the first principal to present a session id owns it.
    assert_eq!(
        verify(&gateway, "alice", &[("mcp-session-id", "s-1")], None)
            .await
            .status,
        200
    );
    assert_eq!(
        verify(&gateway, "bob", &[("mcp-session-id", "s-1")], None)
            .await
            .status,
        403
    );
    gateway.shutdown().await;
}

/// What inline mode refuses, `/verify` refuses too: a body forwarded with a GET or DELETE
/// (only a POST's messages are judged), and a completion described by headers alone (what
/// it completes is only in its body).
#[tokio::test]
async fn bodies_on_other_methods_and_header_only_completions_are_refused() {
    let gateway = start("deny").await;
    for method in ["GET", "DELETE"] {
        let request = request("GET", gateway.addr, "/verify")
            .header("x-forwarded-method", method)
            .header("x-forwarded-proto", "http")
            .header("x-forwarded-host", "127.0.0.1")
            .header("x-forwarded-uri", "/mcp")
            .header("authorization", "Bearer alice-key-0123456789")
            .body(Full::new(Bytes::from(call("delete_repo"))))
            .unwrap();
        let answer = exchange(gateway.addr, request).await;
        assert_eq!(answer.status, 403, "{method}: {}", answer.body);
        assert!(
            answer.body.contains("only a POST"),
            "{method}: {}",
            answer.body
        );
    }
    let completion = verify(
        &gateway,
        "alice",
        &[("mcp-method", "completion/complete"), ("mcp-name", "x")],
        None,
    )
    .await;
    assert_eq!(completion.status, 403, "{}", completion.body);
    gateway.shutdown().await;
}
