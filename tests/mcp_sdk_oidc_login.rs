//! Real MCP SDK clients log in through an upstream OpenID Connect provider: a real
//! `oidc-provider` (npm, `tests/node/oidc_provider.mjs`, auto-approving its test user) is
//! the identity provider, the gateway stays the authorization server the clients talk to.
//! The TypeScript and the Python SDK start from the MCP URL, register, choose the provider
//! on the gateway's login page, pass through the provider (PKCE, state, nonce, ID token),
//! consent at the gateway, and call the `echo` tool of server-everything with a token whose
//! subject is the provider's, prefixed. A user outside the allowed groups is refused with a
//! page, and no token is issued.
//!
//! Needs node (with the packages of tests/node) and python3 with the `mcp` package: a test
//! whose program is missing fails when `CI=true` and skips loudly otherwise.

#[allow(unused_imports)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::oauth;
use common::sdk::{
    node, python_with_sdk, run_client, two_free_ports, ClientOptions, ClientRun, Sdk, Stack,
};
use tokio::io::AsyncBufReadExt;

/// One built-in authorization server per process (its keys are process-wide).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CLIENT_ID: &str = "mcp-gateway";
const CLIENT_SECRET: &str = "provider-secret-with+special/chars%";

/// The OpenID provider on 127.0.0.1, its issuer URL, its log.
struct Provider {
    issuer: String,
    log: PathBuf,
    /// Killed when dropped.
    _child: tokio::process::Child,
}

impl Provider {
    async fn start(node: &Path, name: &str, callback: &str, groups: &str) -> Provider {
        let root = common::external::repo_root();
        let log =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("oidc-provider-{name}.log"));
        let stderr = std::fs::File::create(&log).expect("provider log");
        let mut child = tokio::process::Command::new(node)
            .arg(root.join("tests/node/oidc_provider.mjs"))
            .args(["--port", "0", "--client-id", CLIENT_ID])
            .args(["--client-secret", CLIENT_SECRET])
            .args(["--redirect-uri", callback])
            .args(["--user", "alice", "--email", "alice@example.com"])
            .args(["--name", "Alice Provider", "--groups", groups])
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn oidc_provider.mjs");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the provider is ready within 30 s")
            .expect("provider stdout")
            .unwrap_or_else(|| {
                panic!(
                    "the provider exited:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let ready: serde_json::Value = serde_json::from_str(&ready).expect("ready line is JSON");
        assert_eq!(ready["ready"], true, "{ready}");
        Provider {
            issuer: ready["issuer"].as_str().expect("issuer").to_string(),
            log,
            _child: child,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The gateway (built-in authorization server, local user alice too) with the provider
/// `corp` admitting the group `mcp-users`, in front of server-everything.
async fn stack_with_provider(
    node: &Path,
    name: &str,
    groups: &str,
) -> (Stack, Provider, common::TempDir) {
    let ports = two_free_ports();
    let callback = format!("http://127.0.0.1:{}/login/corp/callback", ports.0);
    let provider = Provider::start(node, name, &callback, groups).await;
    let secrets = oauth::temp_dir(&format!("oidc-secret-{name}"));
    let secret_file = secrets.join("corp-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).expect("secret file");
    let extra = format!(
        r#"
[[authorization_server.identity_providers]]
id = "corp"
type = "oidc"
display_name = "Corp SSO"
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"
scopes = ["openid", "email", "profile", "groups"]
allowed_groups = ["mcp-users"]
"#,
        issuer = provider.issuer,
        secret = secret_file.display(),
    );
    let stack = Stack::start_on(node, name, ports, &extra).await;
    (stack, provider, secrets)
}

fn with_provider() -> ClientOptions<'static> {
    ClientOptions {
        state: None,
        client_metadata_url: None,
        provider: Some("corp"),
    }
}

#[track_caller]
fn assert_logged_in_through_provider(stack: &Stack, run: &ClientRun, provider: &Provider) {
    let ctx = format!("{}\nprovider log:\n{}", run.context(), provider.log());
    assert_eq!(run.json["ok"], true, "{ctx}");
    assert_eq!(
        run.get("/toolResultText"),
        "Echo: hello through the gateway",
        "{ctx}"
    );
    // Through the provider and back, then the gateway's own consent.
    let pages = run.pages();
    assert_eq!(pages.first().map(String::as_str), Some("login"), "{ctx}");
    assert!(pages.iter().any(|p| p == "hop"), "{ctx}");
    assert_eq!(&pages[pages.len() - 2..], ["consent", "redirect"], "{ctx}");
    let provider_host = provider.issuer.trim_start_matches("http://");
    let steps = run.get("/browser").as_array().cloned().unwrap_or_default();
    assert!(
        steps.iter().any(|s| s["host"] == provider_host),
        "the browser never reached the provider: {ctx}"
    );
    // The token is the gateway's, about the provider's user.
    assert_eq!(run.get("/iss"), stack.issuer().as_str(), "{ctx}");
    assert_eq!(
        run.get("/accessTokenClaims/iss"),
        stack.issuer().as_str(),
        "{ctx}"
    );
    assert_eq!(run.get("/accessTokenClaims/sub"), "corp:alice", "{ctx}");
    assert_eq!(
        run.get("/accessTokenClaims/email"),
        "alice@example.com",
        "{ctx}"
    );
    assert_eq!(
        run.get("/accessTokenClaims/name"),
        "Alice Provider",
        "{ctx}"
    );
    assert_eq!(
        run.get("/accessTokenClaims/groups"),
        &serde_json::json!(["mcp-users"]),
        "{ctx}"
    );
}

#[tokio::test]
async fn typescript_sdk_logs_in_through_an_oidc_provider() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node() else {
        return;
    };
    let (stack, provider, secrets) = stack_with_provider(&node, "ts-oidc", "mcp-users").await;
    let run = run_client(&stack, Sdk::TypeScript, &node, with_provider()).await;
    assert_logged_in_through_provider(&stack, &run, &provider);
    stack.shutdown().await;
    drop(secrets);
}

#[tokio::test]
async fn python_sdk_logs_in_through_an_oidc_provider() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node() else {
        return;
    };
    let Some(python) = python_with_sdk() else {
        return;
    };
    let (stack, provider, secrets) = stack_with_provider(&node, "py-oidc", "mcp-users").await;
    let run = run_client(&stack, Sdk::Python, &python, with_provider()).await;
    assert_logged_in_through_provider(&stack, &run, &provider);
    stack.shutdown().await;
    drop(secrets);
}

#[tokio::test]
async fn a_user_outside_the_allowed_groups_is_refused_with_a_page() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node() else {
        return;
    };
    let (stack, provider, secrets) =
        stack_with_provider(&node, "ts-oidc-denied", "contractors").await;
    let run = run_client(&stack, Sdk::TypeScript, &node, with_provider()).await;
    let ctx = format!("{}\nprovider log:\n{}", run.context(), provider.log());
    assert_eq!(run.json["ok"], false, "{ctx}");
    let steps = run.get("/browser").as_array().cloned().unwrap_or_default();
    let last = steps.last().cloned().unwrap_or_default();
    assert_eq!(last["status"], 403, "{ctx}");
    assert!(
        last["path"] == "/login/corp/callback",
        "refused at the gateway's callback: {ctx}"
    );
    assert!(
        run.stderr.contains("not in a group allowed here")
            || run.json.to_string().contains("not in a group allowed here"),
        "the page says why: {ctx}"
    );
    assert!(run.get("/accessTokenClaims").is_null(), "{ctx}");
    stack.shutdown().await;
    drop(secrets);
}
