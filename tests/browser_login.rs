//! The login and consent pages in a real browser: headless Chromium (Debian's `chromium`,
//! driven by playwright-core from `tests/node/browser_login.mjs`) goes through the redirect
//! dance of the built-in authorization server, on a desktop and on a phone-sized viewport.
//! Screenshots of each page are kept under `target/tmp/browser-login/` as test artifacts, listed
//! at the end of the run by `zz_skip_report`.
//! Needs node (with the tests/node packages) and chromium: fails under `CI=true` without
//! them, skips loudly otherwise.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::external;
use common::oauth::{self, form, pkce, post_form, query, PASSWORD};
use common::{TestGateway, Upstream};

/// One built-in authorization server per process (keys are published process-wide).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const REDIRECT: &str = "http://127.0.0.1:9/callback";

struct Tools {
    node: PathBuf,
    chromium: PathBuf,
}

fn tools() -> Option<Tools> {
    let node = external::require("node")?;
    let chromium = external::require("chromium")?;
    external::node_packages()?;
    Some(Tools { node, chromium })
}

/// Runs the browser script; returns its JSON result.
fn drive(
    tools: &Tools,
    url: &str,
    shots: &PathBuf,
    viewport: &str,
    deny: bool,
) -> serde_json::Value {
    let mut command = Command::new(&tools.node);
    command
        .arg(external::repo_root().join("tests/node/browser_login.mjs"))
        .args(["--url", url, "--redirect", REDIRECT, "--username", "alice"])
        .args(["--password", PASSWORD, "--viewport", viewport])
        .arg("--screenshots")
        .arg(shots)
        .env("CHROMIUM", &tools.chromium)
        .stdin(Stdio::null());
    if deny {
        command.arg("--deny");
    }
    let output = command.output().expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "browser script printed no result: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

async fn start(dir: &std::path::Path, upstream: &Upstream) -> TestGateway {
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "{}"
scopes_supported = ["mcp:tools"]
resource_name = "Team tools"
{}
"#,
        upstream.url("/mcp"),
        oauth::as_toml(dir, "")
    );
    TestGateway::start(&toml).await
}

fn authorize_url(gateway: &TestGateway, client_id: &str, challenge: &str) -> String {
    gateway.url(&format!(
        "/authorize?{}",
        form(&[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("state", "browser-state"),
            ("scope", "mcp:tools"),
        ])
    ))
}

#[tokio::test]
async fn chromium_logs_in_consents_and_the_code_buys_a_working_token() {
    let Some(tools) = tools() else { return };
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("browser");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream).await;
    let shots_root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-login");

    for (viewport, label) in [("1280x800", "desktop"), ("390x844", "phone")] {
        // A fresh registration per run: consent is remembered per user and client.
        let client_id = oauth::register_public(gateway.addr, REDIRECT).await;
        let (verifier, challenge) = pkce();
        let shots = shots_root.join(label);
        let url = authorize_url(&gateway, &client_id, &challenge);
        let result = tokio::task::spawn_blocking({
            let shots = shots.clone();
            let tools = Tools {
                node: tools.node.clone(),
                chromium: tools.chromium.clone(),
            };
            move || drive(&tools, &url, &shots, viewport, false)
        })
        .await
        .expect("browser task");
        assert_eq!(result["ok"], true, "{result}");
        for page in ["login.png", "consent.png"] {
            common::external::keep_artifact(&shots.join(page));
        }
        let consent_text = result["pages"][1]["text"].as_str().unwrap_or("");
        assert!(consent_text.contains("Test Client"), "{consent_text}");
        assert!(consent_text.contains("Team tools"), "{consent_text}");
        assert!(consent_text.contains("mcp:tools"), "{consent_text}");
        assert!(consent_text.contains("Alice Example"), "{consent_text}");
        assert_eq!(result["jsErrors"], serde_json::json!([]));

        let location = result["location"].as_str().expect("location");
        let params = query(location);
        assert_eq!(params["state"], "browser-state");
        assert_eq!(params["iss"], "http://127.0.0.1");
        let tokens = post_form(
            gateway.addr,
            "/token",
            &form(&[
                ("grant_type", "authorization_code"),
                ("code", &params["code"]),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
                ("client_id", &client_id),
            ]),
            &[],
        )
        .await;
        assert_eq!(tokens.status, 200, "{label}: {}", tokens.body);
        let token = tokens.json()["access_token"].as_str().unwrap().to_string();
        let answer = common::http::post_json(
            gateway.addr,
            "/mcp",
            &[("authorization", &format!("Bearer {token}"))],
            "{}",
        )
        .await;
        assert_eq!(answer.status, 200, "{label}");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn chromium_deny_sends_access_denied_back() {
    let Some(tools) = tools() else { return };
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("browser-deny");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream).await;
    let client_id = oauth::register_public(gateway.addr, REDIRECT).await;
    let (_, challenge) = pkce();
    let url = authorize_url(&gateway, &client_id, &challenge);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-login/deny");
    let shots_kept = shots.clone();
    let result = tokio::task::spawn_blocking(move || drive(&tools, &url, &shots, "1280x800", true))
        .await
        .expect("browser task");
    assert_eq!(result["ok"], true, "{result}");
    for page in ["login.png", "consent.png"] {
        common::external::keep_artifact(&shots_kept.join(page));
    }
    let params = query(result["location"].as_str().unwrap());
    assert_eq!(params["error"], "access_denied");
    assert_eq!(params["state"], "browser-state");
    assert_eq!(params["iss"], "http://127.0.0.1");
    assert!(!params.contains_key("code"));
    gateway.shutdown().await;
}
