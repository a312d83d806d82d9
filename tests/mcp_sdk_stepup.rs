//! Per-tool step-up and refused tools with the real MCP SDK clients, through a route with MCP
//! rules (`[routes.mcp] tool_scopes = true` and a deny rule `no-env` for `get-env`) in front
//! of a real MCP server, the gateway being the authorization server too. The route offers only
//! `mcp:tool:echo`, so the first login asks for that; a call of another tool is answered 403
//! `insufficient_scope` naming `mcp:tool:<tool>` together with the scopes the token holds
//! (`mcp:tool:echo mcp:tool:<tool>`), and the client has to authorize again for it.
//!
//! What the clients do with that 403 (checked in their sources and on the wire):
//! - Python SDK (`mcp` 2.3.0): authorizes again inside its httpx auth flow with the union of
//!   the scope it had and the challenged one (SEP-2350), through the same redirect and
//!   callback handlers (login and consent again), and retries the call, which succeeds.
//! - TypeScript SDK (1.32.2): re-runs its `auth()` with the challenged scope. Holding a refresh
//!   token, it refreshes instead of authorizing (a refresh cannot widen the scope, RFC 6749
//!   §6), gets the same 403 and gives up with "Server returned 403 after trying upscoping"
//!   (typescript-sdk issue #2255; fixed by SEP-2350 work after 1.32.2). Without a refresh
//!   token it sends the user to authorize with the challenged scope (it would drop the scope
//!   it had, typescript-sdk issue #1582, but the challenge names both); the script finishes
//!   that authorization as it does the first one, and the retried call succeeds.
//!
//! A tool the rule refuses comes back as a JSON-RPC error (-32001) naming `no-env`, whatever the
//! token holds. `tools/list` works through the route.
//!
//! The Python SDK speaks protocol 2026-07-28: it probes `server/discover` first (with
//! `Mcp-Method`), and with a server that answers it — the Python SDK's own `MCPServer`, started
//! here — every request carries `Mcp-Method` (and `Mcp-Name` for a tool call); the gateway
//! checks them against the body, passes a call whose headers agree and refuses a denied tool
//! by its rule. server-everything (2025-11-25) refuses the probe, so against it the SDK falls
//! back to `initialize` and sends no routing headers.
//!
//! Needs node (with the packages of tests/node) and python3 with `mcp` 2.3.0 (see
//! tests/python/README.md): a test whose program is missing fails when `CI=true` and skips
//! loudly otherwise.

// `common` re-exports helpers this file does not use.
#[allow(unused_imports)]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::external::{self, ChildGuard};
use common::oauth::{self, as_toml, PASSWORD};
use common::{free_port, TestGateway};
use serde_json::Value;

/// One built-in authorization server per process: its keys are published process-wide, so
/// the tests of this file run their gateways one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The pinned Python SDK (also in tests/python/README.md and .ci/run).
const PIP_INSTALL: &str = "pip install mcp==2.3.0";

const MESSAGE: &str = "hello through the gateway";
/// The tool beyond the first login's scope, its arguments and its answer (server-everything's
/// and the Python server's alike).
const STEP_UP_TOOL: &str = "get-sum";
const STEP_UP_CALL: &str = r#"get-sum={"a":2,"b":3}"#;
const STEP_UP_RESULT: &str = "The sum of 2 and 3 is 5.";
/// server-everything's environment-dumping tool, refused by the rule `no-env`.
const DENIED_TOOL: &str = "get-env";

// ---------------------------------------------------------------------------------------
// External programs.

/// node, with the packages of tests/node installed; `None` after a loud local skip.
fn node() -> Option<PathBuf> {
    let node = external::require("node")?;
    external::node_packages()?;
    Some(node)
}

/// python3 that can import the Python MCP SDK (client and server); `None` after a loud
/// local skip.
fn python_with_sdk() -> Option<PathBuf> {
    let python = external::require("python3")?;
    let check = Command::new(&python)
        .args([
            "-c",
            "import mcp.client.auth, mcp.client.streamable_http, httpx2, mcp.server.mcpserver, uvicorn",
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    if !check.status.success() {
        external::skip(
            "python3 -m mcp",
            &format!(
                "{} cannot import the Python MCP SDK ({}); install it with `{PIP_INSTALL}`",
                python.display(),
                String::from_utf8_lossy(&check.stderr)
                    .lines()
                    .last()
                    .unwrap_or("no error output")
            ),
        );
        return None;
    }
    Some(python)
}

/// Two ports that were free a moment ago, different from each other.
fn two_free_ports() -> (u16, u16) {
    let first = free_port();
    loop {
        let second = free_port();
        if second != first {
            return (first, second);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The MCP servers, and the gateway in front of them.

/// A Python SDK (2.3.0) `MCPServer` over streamable HTTP on 127.0.0.1:PORT/mcp, which speaks
/// protocol 2026-07-28 (`server/discover`, routing headers) besides the older ones. Its tools
/// mirror server-everything's `echo` and `get-sum`; its `get-env` must never run.
const MODERN_SERVER_PY: &str = r#"
import sys
from mcp.server.mcpserver import MCPServer

server = MCPServer("gateway-e2e-modern")

@server.tool()
def echo(message: str) -> str:
    """Echoes the message back."""
    return f"Echo: {message}"

@server.tool(name="get-sum")
def get_sum(a: float, b: float) -> str:
    """Adds two numbers."""
    return f"The sum of {a:g} and {b:g} is {a + b:g}."

@server.tool(name="get-env")
def get_env() -> str:
    """Refused by the gateway's rule: never reached."""
    return "get-env ran"

server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
"#;

#[derive(Clone, Copy)]
enum Server {
    /// `@modelcontextprotocol/server-everything` (TypeScript SDK, protocol 2025-11-25).
    Everything,
    /// [`MODERN_SERVER_PY`].
    PythonModern,
}

/// An MCP server on 127.0.0.1, killed when dropped.
struct McpServer {
    port: u16,
    log: PathBuf,
    _child: ChildGuard,
}

impl McpServer {
    async fn start(kind: Server, program: &Path, name: &str, port: u16) -> McpServer {
        let root = external::repo_root();
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("mcp-server-stepup-{name}.log"));
        let stderr = std::fs::File::create(&log).expect("server log file");
        let mut command = Command::new(program);
        // server-everything's get-env tool dumps the environment: give it nothing.
        command
            .current_dir(&root)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::var_os("HOME").unwrap_or_default());
        match kind {
            Server::Everything => {
                command
                    .arg(root.join("tests/node/loopback.mjs"))
                    .arg("streamableHttp")
                    .env("PORT", port.to_string());
            }
            Server::PythonModern => {
                command
                    .args(["-c", MODERN_SERVER_PY])
                    .arg(port.to_string())
                    .env("PYTHONDONTWRITEBYTECODE", "1");
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn the MCP server");
        let mut child = ChildGuard(child);
        external::wait_for_port(port, "the MCP server").await;
        // free_port is only a snapshot: make sure the listener is ours.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(status) = child.0.try_wait().expect("server status") {
            panic!(
                "the MCP server exited ({status}) right after start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        McpServer {
            port,
            log,
            _child: child,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The gateway on `gw_port`: the built-in authorization server (database in `dir`) and one
/// route `/mcp` → `upstream_port` that offers only `mcp:tool:echo`, asks `mcp:tool:NAME` for
/// each tool and refuses `get-env` by a rule.
fn gateway_toml(gw_port: u16, upstream_port: u16, dir: &Path) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{gw_port}"]
public_url = "http://127.0.0.1:{gw_port}"

[server.limits]
shutdown_grace = "1s"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "http://127.0.0.1:{upstream_port}/mcp"
scopes_supported = ["mcp:tool:echo"]
resource_name = "Everything"

[routes.mcp]
tool_scopes = true

[[routes.mcp.rules]]
name = "no-env"
tools = ["{DENIED_TOOL}"]
deny = true
{as_section}
"#,
        as_section = as_toml(dir, ""),
    )
}

struct Stack {
    gw_port: u16,
    /// Removed with the stack.
    _dir: common::TempDir,
    gateway: Option<TestGateway>,
    server: McpServer,
}

impl Stack {
    async fn start(kind: Server, program: &Path, name: &str) -> Stack {
        let (gw_port, server_port) = two_free_ports();
        let server = McpServer::start(kind, program, name, server_port).await;
        let dir = oauth::temp_dir(&format!("sdk-stepup-{name}"));
        let gateway = TestGateway::start(&gateway_toml(gw_port, server.port, &dir)).await;
        assert_eq!(gateway.addr.port(), gw_port);
        Stack {
            gw_port,
            _dir: dir,
            gateway: Some(gateway),
            server,
        }
    }

    fn mcp_url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.gw_port)
    }

    fn resource_metadata(&self) -> String {
        format!(
            "http://127.0.0.1:{}/.well-known/oauth-protected-resource/mcp",
            self.gw_port
        )
    }

    async fn shutdown(mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Running the client scripts.

#[derive(Clone, Copy)]
enum Sdk {
    TypeScript,
    Python,
}

struct ClientRun {
    json: Value,
    stderr: String,
    server_log: String,
    mcp_path: String,
}

impl ClientRun {
    fn get(&self, pointer: &str) -> &Value {
        self.json.pointer(pointer).unwrap_or(&Value::Null)
    }

    fn context(&self) -> String {
        format!(
            "result: {}\nclient stderr:\n{}\nMCP server stderr:\n{}",
            serde_json::to_string_pretty(&self.json).unwrap_or_default(),
            self.stderr,
            self.server_log
        )
    }

    /// The outcome of the script's `--call` of `tool`.
    fn call(&self, tool: &str) -> &Value {
        self.get("/calls")
            .as_array()
            .and_then(|calls| calls.iter().find(|c| c["name"] == tool))
            .unwrap_or_else(|| panic!("no outcome for the call of {tool}: {}", self.context()))
    }

    /// The requests on the MCP URL, in order.
    fn mcp_requests(&self) -> Vec<&Value> {
        self.get("/http")
            .as_array()
            .map(|log| {
                log.iter()
                    .filter(|e| {
                        e["url"]
                            .as_str()
                            .and_then(|u| url::Url::parse(u).ok())
                            .is_some_and(|u| u.path() == self.mcp_path)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `tools/call` POSTs of `tool`, in order.
    fn tool_calls(&self, tool: &str) -> Vec<&Value> {
        self.mcp_requests()
            .into_iter()
            .filter(|e| e["rpc"] == "tools/call" && e["rpcName"] == tool)
            .collect()
    }

    fn mcp_status_count(&self, status: u16) -> usize {
        self.mcp_requests()
            .iter()
            .filter(|e| e["status"] == status)
            .count()
    }

    fn grant_types(&self) -> Vec<String> {
        self.get("/tokenGrants")
            .as_array()
            .map(|grants| {
                grants
                    .iter()
                    .map(|g| {
                        assert_eq!(g["status"], 200, "{}", self.context());
                        g["grantType"].as_str().unwrap_or("?").to_string()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Which pages the browser part went through (`login`, `consent`, `redirect`).
    fn pages(&self) -> Vec<String> {
        self.get("/browser")
            .as_array()
            .map(|steps| {
                steps
                    .iter()
                    .map(|s| s["page"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The scopes of the access token the client holds at the end.
    fn final_scopes(&self) -> Vec<String> {
        self.get("/accessTokenClaims/scope")
            .as_str()
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The `scope` parameter of each authorization request, in order.
    fn requested_scopes(&self) -> Vec<String> {
        self.get("/authorizationRequests")
            .as_array()
            .map(|requests| {
                requests
                    .iter()
                    .map(|r| r["scope"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[track_caller]
    fn assert_first_login_and_echo(&self, stack: &Stack, server_name: &str) {
        let ctx = self.context();
        assert_eq!(self.json["ok"], true, "{ctx}");
        assert_eq!(
            self.get("/toolResultText"),
            format!("Echo: {MESSAGE}").as_str(),
            "{ctx}"
        );
        assert_eq!(self.get("/serverName"), server_name, "{ctx}");
        // The first login asked for what the route offers: echo's scope only.
        let first = self.get("/authorizationRequests/0");
        assert_eq!(first["scope"], "mcp:tool:echo", "{ctx}");
        assert_eq!(first["resource"], stack.mcp_url().as_str(), "{ctx}");
        assert_eq!(
            self.get("/savedTokens/0/claimsScope"),
            "mcp:tool:echo",
            "{ctx}"
        );
        let echo = self.tool_calls("echo");
        assert_eq!(
            echo.first().map(|e| &e["status"]),
            Some(&Value::from(200)),
            "{ctx}"
        );
    }

    /// The one step-up challenge of this run: the call of `tool` refused with 403, a
    /// `WWW-Authenticate` naming the tool's scope and the metadata URL.
    #[track_caller]
    fn assert_one_step_up_challenge(&self, stack: &Stack, tool: &str) {
        let ctx = self.context();
        assert_eq!(self.mcp_status_count(403), 1, "{ctx}");
        let calls = self.tool_calls(tool);
        let first = calls
            .first()
            .unwrap_or_else(|| panic!("no call of {tool}: {ctx}"));
        assert_eq!(first["status"], 403, "{ctx}");
        assert_eq!(first["authorization"], true, "{ctx}");
        let challenge = first["wwwAuthenticate"].as_str().unwrap_or("");
        assert!(challenge.starts_with("Bearer "), "{challenge}\n{ctx}");
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{challenge}\n{ctx}"
        );
        // The challenge names what this call needs together with what the caller holds.
        assert!(
            challenge.contains(&format!("scope=\"mcp:tool:echo mcp:tool:{tool}\"")),
            "{challenge}\n{ctx}"
        );
        assert!(
            challenge.contains(&format!(
                "resource_metadata=\"{}\"",
                stack.resource_metadata()
            )),
            "{challenge}\n{ctx}"
        );
    }

    /// The step-up went through: a second authorization (login and consent again) asking for
    /// the tool's scope, a second code grant, and the retried call answered by the server.
    #[track_caller]
    fn assert_stepped_up(&self, tool: &str, result: &str) {
        let ctx = self.context();
        assert_eq!(self.get("/authorizations"), 2, "{ctx}");
        assert_eq!(
            self.pages(),
            ["login", "consent", "redirect", "login", "consent", "redirect"],
            "{ctx}"
        );
        let scope = format!("mcp:tool:{tool}");
        let requested = self.requested_scopes();
        assert_eq!(requested.len(), 2, "{ctx}");
        assert!(
            requested[1].split(' ').any(|s| s == scope),
            "the second authorization asks for {scope}: {ctx}"
        );
        assert_eq!(
            self.grant_types(),
            ["authorization_code", "authorization_code"],
            "{ctx}"
        );
        assert!(
            self.final_scopes().contains(&scope),
            "the final token carries {scope}: {ctx}"
        );
        let outcome = self.call(tool);
        assert_eq!(outcome["ok"], true, "{ctx}");
        assert_eq!(outcome["text"], result, "{ctx}");
        assert_eq!(outcome["authorizations"], 1, "{ctx}");
        // The retry, with the new token, reached the server.
        let calls = self.tool_calls(tool);
        assert_eq!(calls.len(), 2, "{ctx}");
        assert_eq!(calls[1]["status"], 200, "{ctx}");
    }

    /// The call of the denied tool: a JSON-RPC error -32001 naming the rule, in a 200, and no
    /// step-up attempted for it.
    #[track_caller]
    fn assert_refused_by_rule(&self) {
        let ctx = self.context();
        let outcome = self.call(DENIED_TOOL);
        assert_eq!(outcome["ok"], false, "{ctx}");
        assert_eq!(outcome["errorCode"], -32001, "{ctx}");
        let error = outcome["error"].as_str().unwrap_or("");
        assert!(error.contains("no-env"), "{error}\n{ctx}");
        assert_eq!(outcome["authorizations"], 0, "{ctx}");
        let calls = self.tool_calls(DENIED_TOOL);
        assert_eq!(calls.len(), 1, "{ctx}");
        assert_eq!(calls[0]["status"], 200, "{ctx}");
    }

    /// `tools/list` works through the route and lists the tools the caller can call or step
    /// up to (whether refused tools are listed is not asserted).
    #[track_caller]
    fn assert_tools_listed(&self) {
        let ctx = self.context();
        let names: Vec<&str> = self
            .get("/toolNames")
            .as_array()
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert!(names.contains(&"echo"), "{ctx}");
        assert!(names.contains(&STEP_UP_TOOL), "{ctx}");
    }
}

async fn run_client(stack: &Stack, sdk: Sdk, program: &Path, extra: &[&str]) -> ClientRun {
    let root = external::repo_root();
    let mut command = tokio::process::Command::new(program);
    let name = match sdk {
        Sdk::TypeScript => {
            command
                .arg(root.join("tests/node/sdk_oauth.mjs"))
                .args(["--timeout-ms", "30000"]);
            "sdk_oauth.mjs"
        }
        Sdk::Python => {
            command
                .arg(root.join("tests/python/sdk_oauth.py"))
                .args(["--timeout", "30"]);
            "sdk_oauth.py"
        }
    };
    command
        .args(["--url", &stack.mcp_url()])
        .args(["--redirect-uri", "http://127.0.0.1:33418/callback"])
        .args(["--message", MESSAGE])
        .args(extra)
        .current_dir(&root)
        // The password on the environment, not on the command line.
        .env("SDK_OAUTH_PASSWORD", PASSWORD)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Loopback only: no proxy in between.
    for proxy in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ] {
        command.env_remove(proxy);
    }
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{name} finishes within 60 s (it has its own 30 s timeout)"))
        .unwrap_or_else(|e| panic!("{name} output: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let line = stdout
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("{name} printed nothing on stdout\nstderr:\n{stderr}"));
    let json: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{name} output is not JSON ({e}): {line}\nstderr:\n{stderr}"));
    assert_eq!(
        output.status.success(),
        json["ok"] == true,
        "{name}: exit status and \"ok\" disagree: {json}\nstderr:\n{stderr}"
    );
    ClientRun {
        json,
        stderr,
        server_log: stack.server.log(),
        mcp_path: "/mcp".into(),
    }
}

// ---------------------------------------------------------------------------------------
// TypeScript SDK.

/// The TypeScript SDK 1.32.2 holding a refresh token does not step up: on the 403 it
/// refreshes (no `scope` on a refresh, RFC 6749 §6: the same scope comes back), retries, gets
/// the identical challenge and gives up. No second authorization. This is the SDK's
/// behaviour (typescript-sdk issue #2255), asserted so that a change shows; the gateway's
/// side is the one challenge, which the no-refresh-token test below and the Python SDK show
/// working.
#[tokio::test]
async fn typescript_sdk_holding_a_refresh_token_refreshes_instead_of_stepping_up() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node() else {
        return;
    };
    let stack = Stack::start(Server::Everything, &node, "ts-refresh").await;
    let run = run_client(
        &stack,
        Sdk::TypeScript,
        &node,
        &[
            "--list-tools",
            "--call",
            STEP_UP_CALL,
            "--call",
            DENIED_TOOL,
        ],
    )
    .await;
    let ctx = run.context();
    run.assert_first_login_and_echo(&stack, "mcp-servers/everything");
    run.assert_tools_listed();

    // The challenge, twice: before and after the refresh, identical.
    let calls = run.tool_calls(STEP_UP_TOOL);
    assert_eq!(calls.len(), 2, "{ctx}");
    assert_eq!(calls[0]["status"], 403, "{ctx}");
    assert_eq!(calls[1]["status"], 403, "{ctx}");
    assert_eq!(
        calls[0]["wwwAuthenticate"], calls[1]["wwwAuthenticate"],
        "{ctx}"
    );
    let challenge = calls[0]["wwwAuthenticate"].as_str().unwrap_or("");
    assert!(
        challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains(&format!("scope=\"mcp:tool:echo mcp:tool:{STEP_UP_TOOL}\""))
            && challenge.contains(&format!(
                "resource_metadata=\"{}\"",
                stack.resource_metadata()
            )),
        "{challenge}\n{ctx}"
    );
    assert_eq!(run.mcp_status_count(403), 2, "{ctx}");
    // Between them a refresh, not an authorization; the token keeps echo's scope only.
    assert_eq!(
        run.grant_types(),
        ["authorization_code", "refresh_token"],
        "{ctx}"
    );
    assert_eq!(run.get("/authorizations"), 1, "{ctx}");
    assert_eq!(run.pages(), ["login", "consent", "redirect"], "{ctx}");
    assert_eq!(run.final_scopes(), ["mcp:tool:echo"], "{ctx}");
    let outcome = run.call(STEP_UP_TOOL);
    assert_eq!(outcome["ok"], false, "{ctx}");
    assert_eq!(outcome["errorCode"], 403, "{ctx}");
    assert!(
        outcome["error"]
            .as_str()
            .is_some_and(|e| e.contains("Server returned 403 after trying upscoping")),
        "{ctx}"
    );
    assert_eq!(outcome["authorizations"], 0, "{ctx}");

    run.assert_refused_by_rule();
    stack.shutdown().await;
}

/// A TypeScript SDK client that registered without the refresh_token grant holds no refresh
/// token, so on the 403 the SDK sends the user to authorize with the challenged scope; the
/// script finishes that authorization as it finishes the first one (the SDK's interactive
/// flow: `UnauthorizedError`, then `finishAuth(code)`), and the retried call succeeds with a
/// token carrying the tool's scope. A refused tool stays refused by its rule afterwards.
#[tokio::test]
async fn typescript_sdk_without_a_refresh_token_steps_up_per_tool() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node() else {
        return;
    };
    let stack = Stack::start(Server::Everything, &node, "ts-stepup").await;
    let run = run_client(
        &stack,
        Sdk::TypeScript,
        &node,
        &[
            "--grant-types",
            "authorization_code",
            "--list-tools",
            "--call",
            STEP_UP_CALL,
            "--call",
            DENIED_TOOL,
        ],
    )
    .await;
    let ctx = run.context();
    run.assert_first_login_and_echo(&stack, "mcp-servers/everything");
    assert_eq!(run.get("/hasRefreshToken"), false, "{ctx}");
    run.assert_tools_listed();
    run.assert_one_step_up_challenge(&stack, STEP_UP_TOOL);
    run.assert_stepped_up(STEP_UP_TOOL, STEP_UP_RESULT);
    // The SDK raised UnauthorizedError after sending the user to authorize; the script
    // finished the authorization and retried.
    assert_eq!(
        run.call(STEP_UP_TOOL)["finishedAuthorization"],
        true,
        "{ctx}"
    );
    run.assert_refused_by_rule();
    stack.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Python SDK.

/// The Python SDK steps up by itself: on the 403 it authorizes again (login and consent
/// through its redirect handler) asking for the union of echo's scope and the tool's, and
/// retries; echo keeps working on the new token without another login. Against
/// server-everything its `server/discover` probe (with `Mcp-Method`) is refused by the
/// server, and it falls back to the 2025-11-25 handshake.
#[tokio::test]
async fn python_sdk_steps_up_per_tool_and_keeps_the_scopes_it_had() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node() else {
        return;
    };
    let Some(python) = python_with_sdk() else {
        return;
    };
    let stack = Stack::start(Server::Everything, &node, "py-stepup").await;
    let run = run_client(
        &stack,
        Sdk::Python,
        &python,
        &[
            "--list-tools",
            "--call",
            STEP_UP_CALL,
            "--call",
            r#"echo={"message":"again"}"#,
            "--call",
            DENIED_TOOL,
        ],
    )
    .await;
    let ctx = run.context();
    run.assert_first_login_and_echo(&stack, "mcp-servers/everything");
    run.assert_tools_listed();
    run.assert_one_step_up_challenge(&stack, STEP_UP_TOOL);
    run.assert_stepped_up(STEP_UP_TOOL, STEP_UP_RESULT);
    // SEP-2350: the second authorization asked for both scopes, and got them.
    assert_eq!(
        run.requested_scopes()[1],
        format!("mcp:tool:echo mcp:tool:{STEP_UP_TOOL}"),
        "{ctx}"
    );
    assert_eq!(
        run.final_scopes(),
        ["mcp:tool:echo", &format!("mcp:tool:{STEP_UP_TOOL}")],
        "{ctx}"
    );
    let again = run.call("echo");
    assert_eq!(again["ok"], true, "{ctx}");
    assert_eq!(again["text"], "Echo: again", "{ctx}");
    assert_eq!(again["authorizations"], 0, "{ctx}");
    run.assert_refused_by_rule();

    // The era: the probe went out with the 2026-07-28 headers and through the gateway; the
    // server refused it (its own JSON-RPC error, not the gateway's header check); then the
    // handshake, and no routing headers on the calls.
    let requests = run.mcp_requests();
    let probes: Vec<&&Value> = requests
        .iter()
        .filter(|e| e["rpc"] == "server/discover")
        .collect();
    let authorized_probe = probes
        .iter()
        .find(|e| e["authorization"] == true)
        .unwrap_or_else(|| panic!("no authorized server/discover: {ctx}"));
    assert_eq!(authorized_probe["mcpMethod"], "server/discover", "{ctx}");
    assert_eq!(authorized_probe["protocolVersion"], "2026-07-28", "{ctx}");
    assert_eq!(authorized_probe["status"], 400, "{ctx}");
    let body = authorized_probe["errorBody"].as_str().unwrap_or("");
    assert!(
        !body.contains("Mcp-Method") && !body.contains("-32600"),
        "the gateway refused the probe: {body}\n{ctx}"
    );
    assert!(requests.iter().any(|e| e["rpc"] == "initialize"), "{ctx}");
    for call in requests.iter().filter(|e| e["rpc"] == "tools/call") {
        assert!(call.get("mcpMethod").is_none(), "{call}\n{ctx}");
        assert!(call.get("mcpName").is_none(), "{call}\n{ctx}");
    }
    stack.shutdown().await;
}

/// Protocol 2026-07-28 end to end: the Python SDK against the Python SDK's own server, which
/// answers `server/discover`. No `initialize`; every MCP request carries `Mcp-Method`, each
/// tool call `Mcp-Name`; the gateway compares them with the body and lets the agreeing ones
/// through (echo, the step-up challenge and the retried call), and refuses the denied tool by
/// its rule with the headers present.
#[tokio::test]
async fn python_sdk_on_protocol_2026_07_28_passes_agreeing_routing_headers_and_is_refused_by_rule()
{
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(python) = python_with_sdk() else {
        return;
    };
    let stack = Stack::start(Server::PythonModern, &python, "py-modern").await;
    let run = run_client(
        &stack,
        Sdk::Python,
        &python,
        &[
            "--list-tools",
            "--call",
            STEP_UP_CALL,
            "--call",
            DENIED_TOOL,
        ],
    )
    .await;
    let ctx = run.context();
    run.assert_first_login_and_echo(&stack, "gateway-e2e-modern");
    run.assert_tools_listed();
    run.assert_one_step_up_challenge(&stack, STEP_UP_TOOL);
    run.assert_stepped_up(STEP_UP_TOOL, STEP_UP_RESULT);
    run.assert_refused_by_rule();

    let requests = run.mcp_requests();
    assert!(
        !requests.iter().any(|e| e["rpc"] == "initialize"),
        "no handshake on 2026-07-28: {ctx}"
    );
    let probe = requests
        .iter()
        .find(|e| e["rpc"] == "server/discover" && e["authorization"] == true)
        .unwrap_or_else(|| panic!("no authorized server/discover: {ctx}"));
    assert_eq!(probe["status"], 200, "{ctx}");
    // Every authorized POST carries the headers of its body.
    for request in requests
        .iter()
        .filter(|e| e["method"] == "POST" && e["authorization"] == true)
    {
        assert_eq!(request["protocolVersion"], "2026-07-28", "{request}\n{ctx}");
        assert_eq!(request["mcpMethod"], request["rpc"], "{request}\n{ctx}");
        if request["rpc"] == "tools/call" {
            assert_eq!(request["mcpName"], request["rpcName"], "{request}\n{ctx}");
        }
    }
    // The calls of each kind, with their headers: echo through, get-sum challenged then
    // through, get-env refused by the rule (a JSON-RPC error, not a 400 for the headers).
    for (tool, statuses) in [
        ("echo", &[200][..]),
        (STEP_UP_TOOL, &[403, 200][..]),
        (DENIED_TOOL, &[200][..]),
    ] {
        let calls = run.tool_calls(tool);
        let seen: Vec<u64> = calls.iter().filter_map(|c| c["status"].as_u64()).collect();
        assert_eq!(seen, statuses, "{tool}: {ctx}");
        for call in calls {
            assert_eq!(call["mcpMethod"], "tools/call", "{ctx}");
            assert_eq!(call["mcpName"], tool, "{ctx}");
        }
    }
    assert_eq!(run.mcp_status_count(400), 0, "{ctx}");
    stack.shutdown().await;
}
