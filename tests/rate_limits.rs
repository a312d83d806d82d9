//! Phase 8 over real sockets: token buckets per route, per principal and per tool trip with
//! 429 + `Retry-After` and a JSON-RPC error carrying the request id, and recover.

mod common;

use common::http::{post_json, Answer};
use common::{TestGateway, Upstream};
use mcp_auth_gateway::auth::api_key::{format_hash, sha256};

fn key(id: &str) -> String {
    format!(
        "[[api_keys]]\nid = \"{id}\"\nhash = \"{}\"\nsubject = \"{id}\"\n",
        format_hash(&sha256(format!("{id}-key-0123456789").as_bytes()))
    )
}

async fn start(upstream: &Upstream) -> TestGateway {
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"
{alice}
{bob}
[[routes]]
id = "minute"
path = "/minute"
upstream = "{upstream}"
verifiers = ["api_keys"]
[routes.rate_limits]
route = "5/minute"
per_principal = "3/minute"

[[routes]]
id = "second"
path = "/second"
upstream = "{upstream}"
verifiers = ["api_keys"]
[routes.mcp]
[routes.rate_limits]
per_principal = "2/second"
per_tool = "100/minute"
[routes.rate_limits.tools]
deploy = "1/hour"
"#,
        alice = key("alice"),
        bob = key("bob"),
        upstream = upstream.url("/mcp"),
    );
    TestGateway::start(&toml).await
}

async fn call(gateway: &TestGateway, path: &str, who: &str, tool: &str, id: u32) -> Answer {
    post_json(
        gateway.addr,
        path,
        &[("authorization", &format!("Bearer {who}-key-0123456789"))],
        &format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}"}}}}"#
        ),
    )
    .await
}

#[tokio::test]
async fn per_principal_and_route_buckets_trip_and_name_the_wait() {
    let upstream = Upstream::start().await;
    let gateway = start(&upstream).await;
    for i in 0..3 {
        assert_eq!(call(&gateway, "/minute", "alice", "x", i).await.status, 200);
    }
    let over = call(&gateway, "/minute", "alice", "x", 99).await;
    assert_eq!(over.status, 429, "{}", over.body);
    let wait: u64 = over
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(wait >= 1);
    assert_eq!(over.json()["error"]["code"], -32002);
    // bob has his own bucket, but the route's (5/minute) is shared: 3 + 2 = 5.
    assert_eq!(call(&gateway, "/minute", "bob", "x", 1).await.status, 200);
    assert_eq!(call(&gateway, "/minute", "bob", "x", 2).await.status, 200);
    assert_eq!(call(&gateway, "/minute", "bob", "x", 3).await.status, 429);
    gateway.shutdown().await;
}

#[tokio::test]
async fn buckets_refill_and_tools_have_their_own() {
    let upstream = Upstream::start().await;
    let gateway = start(&upstream).await;
    assert_eq!(
        call(&gateway, "/second", "alice", "search", 1).await.status,
        200
    );
    assert_eq!(
        call(&gateway, "/second", "alice", "search", 2).await.status,
        200
    );
    let over = call(&gateway, "/second", "alice", "search", 3).await;
    assert_eq!(over.status, 429);
    assert_eq!(over.json()["id"], 3, "the answer carries the request id");
    // It recovers once the bucket refills.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        call(&gateway, "/second", "alice", "search", 4).await.status,
        200
    );
    // deploy: once an hour per caller, whatever else is left.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        call(&gateway, "/second", "bob", "deploy", 5).await.status,
        200
    );
    let again = call(&gateway, "/second", "bob", "deploy", 6).await;
    assert_eq!(again.status, 429, "{}", again.body);
    let wait: u64 = again.header("retry-after").unwrap().parse().unwrap();
    assert!(wait > 60, "about an hour: {wait}");
    assert_eq!(
        call(&gateway, "/second", "bob", "search", 7).await.status,
        200
    );
    gateway.shutdown().await;
}

#[test]
fn limits_that_cannot_work_are_refused_with_their_key_path() {
    let toml = |limits: &str, rules: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\npublic_url = \"http://127.0.0.1\"\n{}\n[[routes]]\nid = \"r\"\npath = \"/mcp\"\nupstream = \"http://127.0.0.1:9/\"\nverifiers = [\"api_keys\"]\n{rules}\n[routes.rate_limits]\n{limits}\n",
            key("k")
        )
    };
    let problems = |text: String| match mcp_auth_gateway::config::from_toml_str(
        &text,
        std::path::Path::new("."),
    ) {
        Ok(_) => String::new(),
        Err(error) => error.to_string(),
    };
    let bad = problems(toml("per_principal = \"100/fortnight\"", ""));
    assert!(
        bad.contains("routes[0].rate_limits.per_principal") && bad.contains("100/minute"),
        "{bad}"
    );
    let no_rules = problems(toml("per_tool = \"1/minute\"", ""));
    assert!(no_rules.contains("need [routes.mcp]"), "{no_rules}");
    assert_eq!(
        problems(toml("per_tool = \"1/minute\"", "[routes.mcp]")),
        ""
    );
}
