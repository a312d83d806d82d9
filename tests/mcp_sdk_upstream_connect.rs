//! Real MCP SDK clients through a route whose upstream MCP server has an authorization
//! server of its own (`[routes.upstream_token.oauth]`).
//!
//! The chain: the SDK client → the gateway under test (in process, its own authorization
//! server) → another gateway (the real binary, with its own authorization server and local
//! users) → server-everything. The TypeScript and the Python SDK start from the MCP URL,
//! register at the gateway, sign in and consent there; the gateway then sends the browser to
//! the upstream's authorization server (which it discovered and registered at), where the
//! person signs in and allows the gateway; back at the gateway the client gets its code, and
//! its `echo` call reaches server-everything with the upstream's token for that user (the
//! upstream gateway checks it and names the user it belongs to).
//!
//! The upstream answers on `localhost`, the gateway on `127.0.0.1`: two host names, as two
//! servers have in real life (a browser keeps cookies per host name, not per port, and both
//! name their session cookie alike).
//!
//! Needs node (with the packages of tests/node) and python3 with the `mcp` package: a test
//! whose program is missing fails when `CI=true` and skips loudly otherwise.

#[allow(unused_imports)]
mod common;

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use common::oauth;
use common::process::GatewayProcess;
use common::sdk::{
    node, python_with_sdk, run_client_at, two_free_ports, ClientRun, Everything, Sdk, NO_OPTIONS,
};
use common::{free_port, TestGateway};

/// One built-in authorization server per process (its keys are process-wide).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const REDIRECT: &str = "http://127.0.0.1:33418/callback";

/// server-everything, the upstream gateway in front of it, the gateway under test.
struct Chain {
    server: Everything,
    upstream: GatewayProcess,
    gateway: TestGateway,
    /// Both gateways' databases, the upstream's config and log; removed after they stop.
    _dir: common::TempDir,
}

impl Chain {
    async fn start(node: &Path, name: &str) -> Chain {
        let (gw_port, server_port) = two_free_ports();
        let server = Everything::start(node, name, server_port).await;
        let dir = oauth::temp_dir(&format!("sdk-connect-{name}"));
        let upstream_port = free_port();
        // Its own database.
        let upstream_dir = dir.join("upstream");
        std::fs::create_dir_all(&upstream_dir).expect("upstream dir");
        let upstream_toml = format!(
            r#"
[server]
listen = ["127.0.0.1:{upstream_port}"]
public_url = "http://localhost:{upstream_port}"

[log]
level = "info"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "http://127.0.0.1:{server_port}/mcp"
scopes_supported = ["mcp:tools"]
resource_name = "Everything upstream"

{}
"#,
            oauth::as_toml(&upstream_dir, ""),
        );
        let config = dir.join("upstream.toml");
        std::fs::write(&config, upstream_toml).expect("write config");
        let upstream =
            GatewayProcess::start(&config, upstream_port, &dir.join("upstream.log"), &[]).await;
        let key = dir.join("token-key");
        std::fs::write(&key, URL_SAFE_NO_PAD.encode([5u8; 32])).expect("key");
        let gateway = TestGateway::start(&format!(
            r#"
[server]
listen = ["127.0.0.1:{gw_port}"]
public_url = "http://127.0.0.1:{gw_port}"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "http://localhost:{upstream_port}/mcp"
scopes_supported = ["mcp:tools"]

[routes.upstream_token.oauth]

{}
"#,
            oauth::as_toml(
                &dir,
                &format!("token_encryption_key_file = \"{}\"", key.display())
            ),
        ))
        .await;
        Chain {
            server,
            upstream,
            gateway,
            _dir: dir,
        }
    }

    async fn run(&self, sdk: Sdk, program: &Path) -> ClientRun {
        run_client_at(
            &self.gateway.url("/mcp"),
            REDIRECT,
            &self.server,
            sdk,
            program,
            NO_OPTIONS,
        )
        .await
    }
}

fn assert_connected_through_both(chain: &Chain, run: &ClientRun) {
    let ctx = format!(
        "{}\nupstream gateway log:\n{}",
        run.context(),
        chain.upstream.log()
    );
    run.assert_ok();
    // The gateway's sign-in, then the upstream's: both sign-in pages and both consents.
    assert_eq!(
        run.pages(),
        ["login", "consent", "hop", "login", "consent", "hop", "redirect"],
        "{ctx}"
    );
    let steps = run.get("/browser").as_array().cloned().unwrap_or_default();
    let paths: Vec<&str> = steps.iter().filter_map(|s| s["path"].as_str()).collect();
    assert_eq!(
        paths[3], "/authorize",
        "the upstream's authorization endpoint: {ctx}"
    );
    assert_eq!(paths[6], "/connect/mcp/callback", "{ctx}");
    // The upstream gateway verified its own token for alice on the tool calls.
    let log = chain.upstream.log();
    assert!(
        log.lines()
            .any(|l| l.contains("local:alice") && l.contains("/mcp") && l.contains("allow")),
        "{ctx}"
    );
}

#[tokio::test]
async fn typescript_sdk_through_a_route_that_connects_to_the_upstreams_authorization_server() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node() else {
        return;
    };
    let chain = Chain::start(&node, "ts-connect").await;
    let run = chain.run(Sdk::TypeScript, &node).await;
    assert_connected_through_both(&chain, &run);
    chain.gateway.shutdown().await;
}

#[tokio::test]
async fn python_sdk_through_a_route_that_connects_to_the_upstreams_authorization_server() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node() else {
        return;
    };
    let Some(python) = python_with_sdk() else {
        return;
    };
    let chain = Chain::start(&node, "py-connect").await;
    let run = chain.run(Sdk::Python, &python).await;
    assert_connected_through_both(&chain, &run);
    chain.gateway.shutdown().await;
}
