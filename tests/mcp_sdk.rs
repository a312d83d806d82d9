//! End to end with real components: the official TypeScript MCP SDK client
//! (`tests/node/sdk_client.mjs`) talks through the in-process gateway to the official reference
//! server `@modelcontextprotocol/server-everything` (streamable HTTP). Needs `node` and the
//! packages of `tests/node` (installed with `npm ci` on first use); without node or npm the
//! tests fail when `CI=true` and skip loudly otherwise.

// `common` re-exports `Upstream`, which this file does not use.
#[allow(unused_imports)]
mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::external::{self, ChildGuard};
use common::http::post_json;
use common::{free_port, TestGateway, API_KEY};
use mcp_auth_gateway::auth::api_key;
use serde_json::Value;

/// A valid key whose principal has no scopes at all (the route requires `mcp:tools`).
const NO_SCOPE_KEY: &str = "no-scope-key-9876543210";

/// server-everything on a free port plus the gateway in front of it on another one.
struct Stack {
    node: PathBuf,
    gateway: TestGateway,
    gw_port: u16,
    _server: ChildGuard,
    server_log: PathBuf,
}

impl Stack {
    /// `None` when node is missing and this is not CI (the skip has been announced).
    async fn start(name: &str) -> Option<Stack> {
        let node = external::require("node")?;
        let root = external::repo_root();
        let server_entry = external::node_packages()?
            .join("@modelcontextprotocol/server-everything/dist/index.js");
        assert!(
            server_entry.is_file(),
            "{} is missing after `npm ci` in tests/node",
            server_entry.display()
        );
        // The server bound to 127.0.0.1 only (it would listen on every interface).
        let entry = root.join("tests/node/loopback.mjs");

        let server_port = free_port();
        let gw_port = loop {
            let port = free_port();
            if port != server_port {
                break port;
            }
        };

        // The server has a tool that dumps its environment: give it nothing secret.
        // Its stdout logs every request (an unread pipe would block it); stderr goes to a
        // file that failure messages quote.
        let server_log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("server-everything-{name}.log"));
        let stderr = std::fs::File::create(&server_log).expect("server log file");
        let child = std::process::Command::new(&node)
            .arg(&entry)
            .arg("streamableHttp")
            .current_dir(&root)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::var_os("HOME").unwrap_or_default())
            .env("PORT", server_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn server-everything");
        let mut server = ChildGuard(child);
        external::wait_for_port(server_port, "server-everything").await;
        // Something else could own the port (free_port is only a snapshot): make sure the
        // listener is ours.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(status) = server.0.try_wait().expect("server status") {
            panic!(
                "server-everything exited ({status}) right after start:\n{}",
                std::fs::read_to_string(&server_log).unwrap_or_default()
            );
        }

        let no_scope_hash = api_key::format_hash(&api_key::sha256(NO_SCOPE_KEY.as_bytes()));
        let config = format!(
            r#"
[server]
listen = ["127.0.0.1:{gw_port}"]
public_url = "http://127.0.0.1:{gw_port}"

[server.limits]
shutdown_grace = "1s"

{keys}

[[api_keys]]
id = "no-scope"
hash = "{no_scope_hash}"
subject = "bob"
scopes = []

[[routes]]
id = "everything"
path = "/mcp"
upstream = "http://127.0.0.1:{server_port}/mcp"
verifiers = ["api_keys"]
scopes = ["mcp:tools"]
"#,
            keys = common::gateway::api_key_toml("alice", &["mcp:tools"]),
        );
        let gateway = TestGateway::start(&config).await;
        assert_eq!(gateway.addr.port(), gw_port);
        Some(Stack {
            node,
            gateway,
            gw_port,
            _server: server,
            server_log,
        })
    }

    fn mcp_url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.gw_port)
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(&self.server_log).unwrap_or_default()
    }

    /// Runs `sdk_client.mjs` and returns its exit success and its one JSON line.
    async fn sdk_client(&self, scenario: &str, token: Option<&str>) -> SdkRun {
        let root = external::repo_root();
        let mut command = tokio::process::Command::new(&self.node);
        command
            .arg(root.join("tests/node/sdk_client.mjs"))
            .args(["--url", &self.mcp_url(), "--scenario", scenario])
            .args(["--timeout-ms", "30000"])
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        let child = command.spawn().expect("spawn node sdk_client.mjs");
        let output = tokio::time::timeout(Duration::from_secs(45), child.wait_with_output())
            .await
            .expect("sdk_client.mjs finishes within 45 s (it has its own 30 s timeout)")
            .expect("sdk_client.mjs output");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let line = stdout
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_else(|| {
                panic!("sdk_client.mjs printed nothing on stdout\nstderr:\n{stderr}")
            });
        let json: Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("sdk_client.mjs output is not JSON ({e}): {line}\nstderr:\n{stderr}")
        });
        assert_eq!(
            output.status.success(),
            json["ok"] == true,
            "exit status and \"ok\" disagree: {json}"
        );
        SdkRun {
            json,
            stderr,
            server_log: self.server_log(),
        }
    }
}

struct SdkRun {
    json: Value,
    stderr: String,
    server_log: String,
}

impl SdkRun {
    fn get(&self, pointer: &str) -> &Value {
        self.json.pointer(pointer).unwrap_or(&Value::Null)
    }

    /// Everything needed to understand a failed assertion.
    fn context(&self) -> String {
        format!(
            "result: {}\nsdk_client stderr:\n{}\nserver-everything stderr:\n{}",
            serde_json::to_string_pretty(&self.json).unwrap_or_default(),
            self.stderr,
            self.server_log
        )
    }

    #[track_caller]
    fn assert_ok(&self) {
        assert_eq!(self.json["ok"], true, "{}", self.context());
    }
}

#[tokio::test]
async fn sdk_client_full_session_through_gateway() {
    let Some(stack) = Stack::start("full").await else {
        return;
    };
    let run = stack.sdk_client("full", Some(API_KEY)).await;
    run.assert_ok();
    let ctx = run.context();

    assert_eq!(
        run.get("/serverName"),
        "mcp-servers/everything",
        "the real server answered: {ctx}"
    );
    assert!(
        run.get("/protocolVersion")
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{ctx}"
    );
    assert!(
        run.get("/sessionId")
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "Mcp-Session-Id passes back to the client: {ctx}"
    );
    assert!(run.get("/toolCount").as_u64().unwrap_or(0) > 0, "{ctx}");

    // Progress notifications travel on the POST's SSE response, streamed as they happen:
    // the first one arrived in an earlier body read than the tool result (the script checks
    // that ordering; no clock involved).
    assert!(
        run.get("/progressNotifications").as_u64().unwrap_or(0) >= 2,
        "{ctx}"
    );
    assert_eq!(
        run.get("/progressNotifications"),
        run.get("/progressOnPostStream"),
        "{ctx}"
    );
    assert_eq!(run.get("/progressStreamedIncrementally"), true, "{ctx}");

    // The SDK's standalone GET stream opened through the gateway and carried a
    // server-initiated notification.
    assert_eq!(run.get("/getStream/status"), 200, "{ctx}");
    let content_type = run.get("/getStream/contentType").as_str().unwrap_or("");
    assert!(
        content_type.starts_with("text/event-stream"),
        "GET stream content type {content_type:?}: {ctx}"
    );
    assert!(
        run.get("/getStreamNotifications/resourceUpdated")
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{ctx}"
    );
    assert!(
        run.get("/getStreamNotifications/resourceUpdatedHandled")
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "the SDK dispatched it to its handler: {ctx}"
    );

    // DELETE ends the session at the server (the SDK would also accept 405).
    assert_eq!(run.get("/deleteStatus"), 200, "{ctx}");
    // The SDK sent the key on every POST, GET and DELETE, and each was accepted.
    assert_eq!(run.get("/authorizationSentOnAll"), true, "{ctx}");
    let http = run.get("/http").as_array().expect("http log");
    for method in ["POST", "GET", "DELETE"] {
        assert!(
            http.iter().any(|e| e["method"] == method),
            "no {method} in the log: {ctx}"
        );
    }
    for entry in http {
        let status = entry["status"].as_u64().unwrap_or(0);
        assert!(
            (200..300).contains(&status),
            "request not accepted: {entry}\n{ctx}"
        );
    }
    drop(stack);
}

#[tokio::test]
async fn sdk_discovers_metadata_from_gateway_challenge() {
    let Some(stack) = Stack::start("unauthorized").await else {
        return;
    };
    let gw = stack.gw_port;
    let metadata_url = format!("http://127.0.0.1:{gw}/.well-known/oauth-protected-resource/mcp");

    // No credentials at all.
    let run = stack.sdk_client("unauthorized", None).await;
    run.assert_ok();
    let ctx = run.context();
    assert_eq!(run.get("/status"), 401, "{ctx}");
    let challenge = run.get("/wwwAuthenticate").as_str().unwrap_or("");
    assert!(
        challenge.starts_with(&format!("Bearer resource_metadata=\"{metadata_url}\"")),
        "{ctx}"
    );
    assert_eq!(run.get("/challenge/params/scope"), "mcp:tools", "{ctx}");
    assert_eq!(run.get("/challenge/params/error"), &Value::Null, "{ctx}");
    // The SDK's own parsers read the same challenge.
    assert_eq!(
        run.get("/sdkWwwAuthenticateParams/resourceMetadataUrl"),
        metadata_url.as_str(),
        "{ctx}"
    );
    assert_eq!(
        run.get("/sdkWwwAuthenticateParams/scope"),
        "mcp:tools",
        "{ctx}"
    );
    assert_eq!(
        run.get("/sdkResourceMetadataUrl"),
        metadata_url.as_str(),
        "{ctx}"
    );

    // The metadata document names exactly the URL the client connects to.
    let resource = format!("http://127.0.0.1:{gw}/mcp");
    assert_eq!(run.get("/metadataStatus"), 200, "{ctx}");
    assert_eq!(run.get("/metadata/resource"), resource.as_str(), "{ctx}");
    assert_eq!(
        run.get("/metadata/scopes_supported"),
        &serde_json::json!(["mcp:tools"]),
        "{ctx}"
    );

    // The SDK's discovery (as auth() runs it after a 401) found and accepted it, and so does
    // its path-aware well-known probing without the hint.
    assert_eq!(
        run.get("/sdkDiscovered/viaChallenge/resource"),
        resource.as_str(),
        "{ctx}"
    );
    assert_eq!(
        run.get("/sdkDiscovered/resourceAcceptedBySdk"),
        true,
        "{ctx}"
    );
    assert_eq!(
        run.get("/sdkDiscovered/selectedResource"),
        resource.as_str(),
        "{ctx}"
    );
    assert_eq!(
        run.get("/sdkDiscovered/viaWellKnown/resource"),
        resource.as_str(),
        "{ctx}"
    );

    // The SDK client itself fails to connect with 401.
    assert_eq!(run.get("/sdkConnectErrorCode"), 401, "{ctx}");
    // GET and DELETE are challenged the same way.
    for method in ["GET", "DELETE"] {
        assert_eq!(
            run.get(&format!("/otherMethods/{method}/status")),
            401,
            "{ctx}"
        );
    }

    // A key the gateway does not know: still 401, now with error="invalid_token".
    let run = stack.sdk_client("unauthorized", Some("wrong")).await;
    run.assert_ok();
    let ctx = run.context();
    assert_eq!(run.get("/status"), 401, "{ctx}");
    let challenge = run.get("/wwwAuthenticate").as_str().unwrap_or("");
    assert!(
        challenge.starts_with(&format!("Bearer resource_metadata=\"{metadata_url}\"")),
        "{ctx}"
    );
    assert!(challenge.contains("error=\"invalid_token\""), "{ctx}");
    assert_eq!(
        run.get("/sdkWwwAuthenticateParams/error"),
        "invalid_token",
        "{ctx}"
    );
    assert_eq!(run.get("/sdkConnectErrorCode"), 401, "{ctx}");
    drop(stack);
}

#[tokio::test]
async fn key_without_required_scope_is_refused() {
    let Some(stack) = Stack::start("scope").await else {
        return;
    };

    // The real SDK client cannot connect with it: initialize is refused with 403.
    let run = stack.sdk_client("full", Some(NO_SCOPE_KEY)).await;
    let ctx = run.context();
    assert_eq!(run.get("/ok"), false, "{ctx}");
    assert_eq!(run.get("/phase"), "initialize", "{ctx}");
    assert_eq!(run.get("/errorCode"), 403, "{ctx}");
    let first = run.get("/http/0");
    assert_eq!(first["rpc"], "initialize", "{ctx}");
    assert!(
        first["wwwAuthenticate"]
            .as_str()
            .is_some_and(|c| c.contains("error=\"insufficient_scope\"")),
        "{ctx}"
    );

    // The same on the wire, without the SDK.
    let answer = post_json(
        stack.gateway.addr,
        "/mcp",
        &[("authorization", &format!("Bearer {NO_SCOPE_KEY}"))],
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#,
    )
    .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let challenge = answer.header("www-authenticate").unwrap_or("");
    assert!(
        challenge.starts_with(&format!(
            "Bearer resource_metadata=\"http://127.0.0.1:{}/.well-known/oauth-protected-resource/mcp\"",
            stack.gw_port
        )),
        "{challenge}"
    );
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"mcp:tools\""), "{challenge}");
    drop(stack);
}
