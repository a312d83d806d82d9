//! The real MCP SDK clients' harness: the reference MCP server (server-everything), a
//! gateway with the built-in authorization server in front of it, and the client scripts
//! (`tests/node/sdk_oauth.mjs`, `tests/python/sdk_oauth.py`) run against it, their JSON
//! report parsed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::external::{self, ChildGuard};
use super::oauth::{self, as_toml, form, post_form, PASSWORD};
use super::{free_port, TestGateway};

/// The pinned Python SDK (also in tests/python/README.md and .ci/run).
pub const PIP_INSTALL: &str = "pip install mcp==2.3.0";

pub const MESSAGE: &str = "hello through the gateway";

// ---------------------------------------------------------------------------------------
// External programs.

/// node, with the packages of tests/node installed; `None` after a loud local skip.
pub fn node() -> Option<PathBuf> {
    let node = external::require("node")?;
    external::node_packages()?;
    Some(node)
}

/// python3 that can import the Python MCP SDK; `None` after a loud local skip.
pub fn python_with_sdk() -> Option<PathBuf> {
    let python = external::require("python3")?;
    let check = Command::new(&python)
        .args([
            "-c",
            "import mcp.client.auth, mcp.client.streamable_http, httpx2",
        ])
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
pub fn two_free_ports() -> (u16, u16) {
    let first = free_port();
    loop {
        let second = free_port();
        if second != first {
            return (first, second);
        }
    }
}

// ---------------------------------------------------------------------------------------
// server-everything, and the gateway in front of it.

/// The reference MCP server on 127.0.0.1.
pub struct Everything {
    pub port: u16,
    pub log: PathBuf,
    _child: ChildGuard,
}

impl Everything {
    pub async fn start(node: &Path, name: &str, port: u16) -> Everything {
        let root = external::repo_root();
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("server-everything-oauth-{name}.log"));
        let stderr = std::fs::File::create(&log).expect("server log file");
        // Its get-env tool dumps the environment: give it nothing.
        let child = Command::new(node)
            .arg(root.join("tests/node/loopback.mjs"))
            .arg("streamableHttp")
            .current_dir(&root)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::var_os("HOME").unwrap_or_default())
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn server-everything");
        let mut child = ChildGuard(child);
        external::wait_for_port(port, "server-everything").await;
        // free_port is only a snapshot: make sure the listener is ours.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(status) = child.0.try_wait().expect("server status") {
            panic!(
                "server-everything exited ({status}) right after start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Everything {
            port,
            log,
            _child: child,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The configuration of the gateway on `gw_port` with the built-in authorization server
/// (database in `dir`) and one route `/mcp` → `upstream_port`; `extra` goes after the
/// authorization server's section (more tables).
pub fn gateway_toml(gw_port: u16, upstream_port: u16, dir: &Path, extra: &str) -> String {
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
scopes_supported = ["mcp:tools"]
resource_name = "Everything"
{as_section}
{extra}
"#,
        as_section = as_toml(dir, ""),
    )
}

/// The gateway (fixed port, so that it can be restarted on it) with the built-in
/// authorization server and one route `/mcp` → server-everything.
pub struct Stack {
    pub gw_port: u16,
    pub dir: super::TempDir,
    pub toml: String,
    pub gateway: Option<TestGateway>,
    pub server: Everything,
}

impl Stack {
    /// `extra` goes after the authorization server's section (more tables).
    pub async fn start(node: &Path, name: &str, extra: &str) -> Stack {
        Stack::start_on(node, name, two_free_ports(), extra).await
    }

    /// On ports chosen before (`two_free_ports`: the gateway's, the server's), for
    /// configurations that must name the gateway's URL before it runs.
    pub async fn start_on(
        node: &Path,
        name: &str,
        (gw_port, server_port): (u16, u16),
        extra: &str,
    ) -> Stack {
        let server = Everything::start(node, name, server_port).await;
        let dir = oauth::temp_dir(&format!("sdk-oauth-{name}"));
        let toml = gateway_toml(gw_port, server.port, &dir, extra);
        let gateway = TestGateway::start(&toml).await;
        assert_eq!(gateway.addr.port(), gw_port);
        Stack {
            gw_port,
            dir,
            toml,
            gateway: Some(gateway),
            server,
        }
    }

    pub fn gateway(&self) -> &TestGateway {
        self.gateway.as_ref().expect("gateway running")
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.gw_port)
    }

    pub fn mcp_url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.gw_port)
    }

    /// A loopback redirect URI for the client; nothing listens there, the clients read the
    /// code from the redirect's Location without following it.
    pub fn redirect_uri(&self) -> String {
        "http://127.0.0.1:33418/callback".to_string()
    }

    /// Shuts the gateway down and starts it again with the same configuration: same port,
    /// same database.
    pub async fn restart(&mut self) {
        self.gateway
            .take()
            .expect("gateway running")
            .shutdown()
            .await;
        let gateway = TestGateway::start(&self.toml).await;
        assert_eq!(gateway.addr.port(), self.gw_port);
        self.gateway = Some(gateway);
    }

    pub async fn shutdown(mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await;
        }
    }

    /// Revokes an access token at the authorization server's revocation endpoint, and
    /// checks that the route refuses it from now on.
    pub async fn revoke(&self, token: &str, client_id: &str) {
        let addr = self.gateway().addr;
        let answer = post_form(
            addr,
            "/revoke",
            &form(&[("token", token), ("client_id", client_id)]),
            &[],
        )
        .await;
        assert_eq!(answer.status, 200, "revoke: {}", answer.body);
        let refused = super::http::post_json(
            addr,
            "/mcp",
            &[("authorization", &format!("Bearer {token}"))],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        )
        .await;
        assert_eq!(refused.status, 401, "revoked token: {}", refused.body);
    }
}

// ---------------------------------------------------------------------------------------
// Running the client scripts.

#[derive(Clone, Copy)]
pub enum Sdk {
    TypeScript,
    Python,
}

pub struct ClientRun {
    pub json: Value,
    pub stderr: String,
    pub server_log: String,
}

impl ClientRun {
    pub fn get(&self, pointer: &str) -> &Value {
        self.json.pointer(pointer).unwrap_or(&Value::Null)
    }

    pub fn context(&self) -> String {
        format!(
            "result: {}\nclient stderr:\n{}\nserver-everything stderr:\n{}",
            serde_json::to_string_pretty(&self.json).unwrap_or_default(),
            self.stderr,
            self.server_log
        )
    }

    #[track_caller]
    pub fn assert_ok(&self) {
        assert_eq!(self.json["ok"], true, "{}", self.context());
        assert_eq!(
            self.get("/toolResultText"),
            format!("Echo: {MESSAGE}").as_str(),
            "{}",
            self.context()
        );
        assert_eq!(
            self.get("/serverName"),
            "mcp-servers/everything",
            "{}",
            self.context()
        );
    }

    /// The grant types the client used at the token endpoint, each answered 200.
    #[track_caller]
    pub fn assert_grants(&self, expected: &[&str]) {
        let grants = self
            .get("/tokenGrants")
            .as_array()
            .cloned()
            .unwrap_or_default();
        let types: Vec<&str> = grants
            .iter()
            .map(|g| g["grantType"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(types, expected, "{}", self.context());
        for grant in &grants {
            assert_eq!(grant["status"], 200, "{}", self.context());
        }
    }

    /// Which pages the browser part went through (`login`, `consent`, `redirect`).
    pub fn pages(&self) -> Vec<String> {
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

    pub fn requested(&self, method: &str, path: &str) -> usize {
        self.get("/http")
            .as_array()
            .map(|log| {
                log.iter()
                    .filter(|e| {
                        e["method"] == method
                            && e["url"]
                                .as_str()
                                .and_then(|u| url::Url::parse(u).ok())
                                .is_some_and(|u| u.path() == path)
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

pub struct ClientOptions<'a> {
    pub state: Option<&'a Path>,
    pub client_metadata_url: Option<&'a str>,
    /// Log in through this upstream identity provider (`--provider`) instead of a password.
    pub provider: Option<&'a str>,
}

pub const NO_OPTIONS: ClientOptions<'static> = ClientOptions {
    state: None,
    client_metadata_url: None,
    provider: None,
};

pub async fn run_client(
    stack: &Stack,
    sdk: Sdk,
    program: &Path,
    options: ClientOptions<'_>,
) -> ClientRun {
    run_client_at(
        &stack.mcp_url(),
        &stack.redirect_uri(),
        &stack.server,
        sdk,
        program,
        options,
    )
    .await
}

/// [`run_client`] against any MCP URL, e.g. a front proxy's in front of the gateway:
/// the client starts from `mcp_url` alone and uses `redirect_uri` (loopback; nothing needs
/// to listen there). `server` is the server-everything the URL leads to; its log goes into
/// the result's context.
pub async fn run_client_at(
    mcp_url: &str,
    redirect_uri: &str,
    server: &Everything,
    sdk: Sdk,
    program: &Path,
    options: ClientOptions<'_>,
) -> ClientRun {
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
        .args(["--url", mcp_url])
        .args(["--redirect-uri", redirect_uri])
        .args(["--message", MESSAGE])
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
    if let Some(state) = options.state {
        command.arg("--state").arg(state);
    }
    if let Some(url) = options.client_metadata_url {
        command.args(["--client-metadata-url", url]);
    }
    if let Some(provider) = options.provider {
        command.args(["--provider", provider]);
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
        server_log: server.log(),
    }
}
