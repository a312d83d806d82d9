//! The built-in authorization server as documented and operated: the README's minimal
//! configuration works verbatim, the shipped example compiles, and the `hash-password`,
//! `clients` and `keys rotate` commands do what the README says, on a real database.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::external::repo_root;
use common::http::get;
use common::oauth::{self, browser_login, form, pkce, post_form, query, Browser};
use common::{TestGateway, Upstream};

const BIN: &str = env!("CARGO_BIN_EXE_mcp-auth-gateway");

/// One built-in authorization server per process (keys are published process-wide).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(repo_root())
        .env_remove("MCP_GATEWAY_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("stdin");
    child.wait_with_output().expect("output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The README's `[authorization_server]` block.
fn readme_block() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README");
    let section = readme
        .split("## Be the authorization server")
        .nth(1)
        .expect("the README section");
    section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block")
        .to_string()
}

fn base(upstream: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "{upstream}"
scopes_supported = ["mcp:tools"]
"#
    )
}

#[tokio::test]
async fn the_readme_configuration_works_verbatim() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("readme");
    let upstream = Upstream::start().await;
    // Verbatim, with the database resolved against a scratch directory.
    let toml = format!("{}\n{}", base(&upstream.url("/mcp")), readme_block());
    let gateway = TestGateway::start_in(&toml, &dir).await;
    assert!(dir.join("mcp-auth-gateway.db").is_file());

    let client_id = oauth::register_public(gateway.addr, "http://127.0.0.1:7/cb").await;
    let (verifier, challenge) = pkce();
    let mut browser = Browser::default();
    let login = browser
        .get(
            gateway.addr,
            &format!(
                "/authorize?{}",
                form(&[
                    ("response_type", "code"),
                    ("client_id", &client_id),
                    ("redirect_uri", "http://127.0.0.1:7/cb"),
                    ("code_challenge", &challenge),
                    ("code_challenge_method", "S256"),
                ])
            ),
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let consent = browser
        .post_form(
            gateway.addr,
            "/login",
            &form(&[
                ("request", &oauth::hidden(&login.body, "request").unwrap()),
                ("csrf", &oauth::hidden(&login.body, "csrf").unwrap()),
                ("username", "demo"),
                ("password", "demo-password-change-me"),
            ]),
        )
        .await;
    assert!(consent.body.contains("id=\"consent\""), "{}", consent.body);
    assert!(consent.body.contains("Demo User"));
    let done = browser
        .post_form(
            gateway.addr,
            "/consent",
            &form(&[
                ("request", &oauth::hidden(&consent.body, "request").unwrap()),
                ("csrf", &oauth::hidden(&consent.body, "csrf").unwrap()),
                ("decision", "approve"),
            ]),
        )
        .await;
    let code = query(done.header("location").expect("redirect"))["code"].clone();
    let tokens = post_form(
        gateway.addr,
        "/token",
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:7/cb"),
            ("code_verifier", &verifier),
            ("client_id", &client_id),
        ]),
        &[],
    )
    .await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    gateway.shutdown().await;
}

#[test]
fn the_shipped_example_compiles_when_uncommented() {
    let shipped = std::fs::read_to_string(repo_root().join("gateway.toml")).expect("gateway.toml");
    let start = shipped
        .find("# [authorization_server]")
        .expect("the commented section");
    let mut uncommented = String::new();
    for (i, line) in shipped.lines().enumerate() {
        let offset: usize = shipped.lines().take(i).map(|l| l.len() + 1).sum();
        let in_section = offset >= start && line.starts_with("# ") && {
            let rest = &shipped[start..offset + line.len()];
            !rest.contains("\n\n")
        };
        if in_section {
            uncommented.push_str(&line[2..]);
        } else {
            uncommented.push_str(line);
        }
        uncommented.push('\n');
    }
    // As the comment says: the route that should accept its tokens names it.
    let uncommented = uncommented.replace(
        "verifiers = [\"api_keys\"]",
        "verifiers = [\"api_keys\", \"authorization_server\"]",
    );
    let dir = oauth::temp_dir("shipped");
    let config = mcp_auth_gateway::config::from_toml_str(&uncommented, &dir)
        .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    let settings = config.authorization_server.expect("the section is on");
    assert_eq!(settings.users.len(), 1);
    assert!(settings.registration.enabled);
    assert_eq!(settings.resources.len(), 1, "the route accepts its tokens");
}

#[test]
fn hash_password_output_logs_in_and_empty_input_is_refused() {
    let output = run(&["hash-password"], b"s3cret pass");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let hash = text(&output.stdout).trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    use argon2::{Argon2, PasswordHash, PasswordVerifier};
    let parsed = PasswordHash::new(&hash).expect("a PHC string");
    assert!(Argon2::default()
        .verify_password(b"s3cret pass", &parsed)
        .is_ok());
    assert!(Argon2::default()
        .verify_password(b"other", &parsed)
        .is_err());
    let empty = run(&["hash-password"], b"");
    assert_eq!(empty.status.code(), Some(1));
}

#[tokio::test]
async fn clients_and_key_rotation_from_the_command_line() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("cli");
    let upstream = Upstream::start().await;
    let toml = format!(
        "{}\n{}",
        base(&upstream.url("/mcp")),
        oauth::as_toml(&dir, "")
    );
    let config_path = dir.join("gateway.toml");
    std::fs::write(&config_path, &toml).expect("write config");
    let config = config_path.to_str().unwrap();

    // clients add → list → usable → remove.
    let added = run(
        &[
            "clients",
            "add",
            "--config",
            config,
            "--name",
            "CLI App",
            "--redirect-uri",
            "http://127.0.0.1:7/cb",
        ],
        b"",
    );
    assert_eq!(added.status.code(), Some(0), "{}", text(&added.stderr));
    let stdout = text(&added.stdout);
    let client_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client_id:"))
        .expect("client_id line")
        .trim()
        .to_string();
    let listed = run(&["clients", "list", "--config", config], b"");
    assert!(
        text(&listed.stdout).contains(&client_id),
        "{}",
        text(&listed.stdout)
    );
    assert!(text(&listed.stdout).contains("CLI App"));

    let gateway = TestGateway::start(&toml).await;
    let (verifier, challenge) = pkce();
    let location = browser_login(
        &mut Browser::default(),
        gateway.addr,
        &form(&[
            ("response_type", "code"),
            ("client_id", &client_id),
            ("redirect_uri", "http://127.0.0.1:7/cb"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]),
    )
    .await;
    let tokens = post_form(
        gateway.addr,
        "/token",
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", &query(&location)["code"]),
            ("redirect_uri", "http://127.0.0.1:7/cb"),
            ("code_verifier", &verifier),
            ("client_id", &client_id),
        ]),
        &[],
    )
    .await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    let old_token = tokens.json()["access_token"].as_str().unwrap().to_string();
    let old_kid = jsonwebtoken::decode_header(&old_token)
        .unwrap()
        .kid
        .unwrap();

    // keys rotate: the running gateway publishes the new key beside the old one within
    // half a minute, signs with the new one, and the old token stays valid.
    let rotated = run(&["keys", "rotate", "--config", config], b"");
    assert_eq!(rotated.status.code(), Some(0), "{}", text(&rotated.stderr));
    let new_kid = text(&rotated.stdout)
        .trim()
        .strip_prefix("new signing key: ")
        .expect("kid line")
        .to_string();
    assert_ne!(new_kid, old_kid);
    let mut published = Vec::new();
    for _ in 0..45 {
        let jwks = get(gateway.addr, "/jwks.json", &[]).await.json();
        published = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect();
        if published.contains(&new_kid) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        published.contains(&new_kid),
        "new key published: {published:?}"
    );
    assert!(
        published.contains(&old_kid),
        "old key still published: {published:?}"
    );
    let answer = common::http::post_json(
        gateway.addr,
        "/mcp",
        &[("authorization", &format!("Bearer {old_token}"))],
        "{}",
    )
    .await;
    assert_eq!(answer.status, 200, "a token of the old key still works");

    // clients remove revokes the client's grants: the running gateway refuses its token
    // within seconds (it reads the store's revocations as often as its keys).
    let removed = run(&["clients", "remove", "--config", config, &client_id], b"");
    assert_eq!(removed.status.code(), Some(0), "{}", text(&removed.stderr));
    assert!(
        text(&removed.stdout).contains("(1 access tokens still unexpired"),
        "{}",
        text(&removed.stdout)
    );
    let mut status = 200;
    for _ in 0..30 {
        status = common::http::post_json(
            gateway.addr,
            "/mcp",
            &[("authorization", &format!("Bearer {old_token}"))],
            "{}",
        )
        .await
        .status
        .as_u16();
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(status, 401, "the removed client's token is refused");
    let gone = run(&["clients", "remove", "--config", config, &client_id], b"");
    assert_eq!(gone.status.code(), Some(1));
    gateway.shutdown().await;
}

#[test]
fn check_prints_the_authorization_server_and_what_clients_trip_on() {
    let dir = oauth::temp_dir("check");
    let toml = format!(
        "{}\n[[routes]]\nid = \"second\"\npath = \"/other\"\nupstream = \"http://127.0.0.1:9/\"\n{}",
        base("http://127.0.0.1:9/mcp"),
        oauth::as_toml(
            &dir,
            "[[authorization_server.identity_providers]]\nid = \"corp\"\ntype = \"oidc\"\ndisplay_name = \"Corp SSO\"\nissuer = \"http://127.0.0.1:9/realms/corp\"\nclient_id = \"gw\"\nallowed_groups = [\"mcp\"]\n"
        )
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml).expect("write");
    let output = run(&["check", "--config", path.to_str().unwrap()], b"");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("authorization_server: issuer=http://127.0.0.1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("resource: http://127.0.0.1/mcp scopes=[mcp:tools]"),
        "{stdout}"
    );
    assert!(stdout.contains("jwt:authorization_server"), "{stdout}");
    assert!(stdout.contains("is not https"), "{stdout}");
    assert!(stdout.contains("several routes"), "{stdout}");
    // The callback to register at the provider.
    assert!(
        stdout.contains(
            "identity provider corp: Corp SSO (oidc), callback http://127.0.0.1/login/corp/callback"
        ),
        "{stdout}"
    );

    // A route on an authorization server path is refused, naming the route.
    let clash = format!(
        "{}\n[[routes]]\nid = \"tok\"\npath = \"/token\"\nupstream = \"http://127.0.0.1:9/\"\n{}",
        base("http://127.0.0.1:9/mcp"),
        oauth::as_toml(&dir, "")
    );
    std::fs::write(&path, clash).expect("write");
    let output = run(&["check", "--config", path.to_str().unwrap()], b"");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("served by the built-in authorization server"),
        "{}",
        text(&output.stderr)
    );
}

/// A configured confidential machine client: `client_credentials` with secret "machine-secret".
fn machine_client() -> String {
    use mcp_auth_gateway::auth::api_key::{format_hash, sha256};
    format!(
        "[[authorization_server.clients]]\nclient_id = \"machine\"\nsecret_hash = \"{}\"\ngrant_types = [\"client_credentials\"]\n",
        format_hash(&sha256(b"machine-secret"))
    )
}

async fn machine_token(gateway: &TestGateway) -> String {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("machine:machine-secret");
    let answer = post_form(
        gateway.addr,
        "/token",
        "grant_type=client_credentials",
        &[("authorization", &format!("Basic {basic}"))],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.json().get("refresh_token").is_none());
    answer.json()["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn signing_key_from_a_file_and_other_algorithms() {
    use base64::Engine;
    use mcp_auth_gateway::authorization_server::keys::SigningKey;
    let _serial = ONE_AT_A_TIME.lock().await;
    let upstream = Upstream::start().await;
    for (algorithm, name, from_file) in [
        (jsonwebtoken::Algorithm::ES256, "ES256", true),
        (jsonwebtoken::Algorithm::EdDSA, "EdDSA", false),
        (jsonwebtoken::Algorithm::RS256, "RS256", false),
    ] {
        let dir = oauth::temp_dir(&format!("alg-{name}"));
        let mut extra = format!("signing_algorithm = \"{name}\"\n");
        let mut expected_kid = None;
        if from_file {
            let der = SigningKey::generate_der(algorithm).unwrap();
            expected_kid = Some(SigningKey::from_der(algorithm, &der).unwrap().kid);
            let body = base64::engine::general_purpose::STANDARD.encode(&der);
            let lines: Vec<&str> = body
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                lines.join("\n")
            );
            std::fs::write(dir.join("signing.pem"), pem).unwrap();
            extra.push_str("signing_key_file = \"signing.pem\"\n");
        }
        let toml = format!(
            "{}\n{}\n{}",
            base(&upstream.url("/mcp")),
            oauth::as_toml(&dir, &extra),
            machine_client()
        );
        let gateway = TestGateway::start_in(&toml, &dir).await;
        let token = machine_token(&gateway).await;
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, algorithm, "{name}");
        if let Some(kid) = &expected_kid {
            assert_eq!(header.kid.as_ref(), Some(kid), "the file's key signs");
        }
        let jwks = get(gateway.addr, "/jwks.json", &[]).await.json();
        assert_eq!(jwks["keys"][0]["alg"], name);
        assert_eq!(jwks["keys"][0]["kid"].as_str(), header.kid.as_deref());
        let answer = common::http::post_json(
            gateway.addr,
            "/mcp",
            &[("authorization", &format!("Bearer {token}"))],
            "{}",
        )
        .await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.body);
        let seen = upstream.requests().pop().unwrap();
        assert_eq!(seen.header("x-user-id"), Some("machine"));
        gateway.shutdown().await;
    }
}
