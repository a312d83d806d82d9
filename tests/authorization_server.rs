//! The built-in authorization server, end to end over real sockets: discovery, dynamic
//! registration, the browser login and consent, the code and refresh grants, and the
//! tokens it issues working (and stopping working) on the gateway's own route.

mod common;

use common::http::{get, post_json};
use common::oauth::{self, as_toml, browser_login, form, pkce, post_form, query, Browser};
use common::{TestGateway, Upstream};

/// One built-in authorization server per process: its keys are published process-wide, so
/// the tests of this file run their gateways one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const REDIRECT: &str = "http://127.0.0.1:9/callback";

async fn start(dir: &std::path::Path, upstream: &Upstream, extra: &str) -> TestGateway {
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "{upstream}"
scopes_supported = ["mcp:tools", "mcp:admin"]
resource_name = "Test MCP"
{as_section}
"#,
        upstream = upstream.url("/mcp"),
        as_section = as_toml(dir, extra),
    );
    TestGateway::start(&toml).await
}

fn authorize_query(client_id: &str, challenge: &str, state: &str) -> String {
    form(&[
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", state),
        ("scope", "mcp:tools"),
        ("resource", "http://127.0.0.1/mcp"),
    ])
}

async fn redeem(
    gateway: &TestGateway,
    client_id: &str,
    code: &str,
    verifier: &str,
) -> common::http::Answer {
    post_form(
        gateway.addr,
        "/token",
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
            ("client_id", client_id),
            ("resource", "http://127.0.0.1/mcp"),
        ]),
        &[],
    )
    .await
}

async fn call_mcp(gateway: &TestGateway, token: &str) -> common::http::Answer {
    post_json(
        gateway.addr,
        "/mcp",
        &[("authorization", &format!("Bearer {token}"))],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    )
    .await
}

#[tokio::test]
async fn discovery_documents_point_at_the_built_in_server() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("discovery");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;

    let prm = get(
        gateway.addr,
        "/.well-known/oauth-protected-resource/mcp",
        &[],
    )
    .await;
    assert_eq!(prm.json()["authorization_servers"][0], "http://127.0.0.1");

    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let answer = get(gateway.addr, path, &[]).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
        let doc = answer.json();
        assert_eq!(doc["issuer"], "http://127.0.0.1");
        assert_eq!(doc["authorization_endpoint"], "http://127.0.0.1/authorize");
        assert_eq!(doc["token_endpoint"], "http://127.0.0.1/token");
        assert_eq!(doc["registration_endpoint"], "http://127.0.0.1/register");
        assert_eq!(
            doc["code_challenge_methods_supported"],
            serde_json::json!(["S256"])
        );
        assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
        assert_eq!(doc["client_id_metadata_document_supported"], true);
        assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
        assert_eq!(
            doc["scopes_supported"],
            serde_json::json!(["mcp:admin", "mcp:tools"])
        );
    }
    let jwks = get(gateway.addr, "/jwks.json", &[]).await.json();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["alg"], "ES256");
    assert!(key["kid"].is_string());
    assert!(key.get("d").is_none(), "no private part is published");
    gateway.shutdown().await;
}

#[tokio::test]
async fn register_log_in_call_refresh_and_revoke() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("flow");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let addr = gateway.addr;

    let client_id = oauth::register_public(addr, REDIRECT).await;
    assert!(!client_id.starts_with("https://"));
    let (verifier, challenge) = pkce();
    let mut browser = Browser::default();
    let location = browser_login(
        &mut browser,
        addr,
        &authorize_query(&client_id, &challenge, "xyz"),
    )
    .await;
    assert!(location.starts_with(REDIRECT), "{location}");
    let params = query(&location);
    assert_eq!(params["state"], "xyz");
    assert_eq!(params["iss"], "http://127.0.0.1");
    let code = &params["code"];

    let tokens = redeem(&gateway, &client_id, code, &verifier).await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    assert_eq!(tokens.header("cache-control"), Some("no-store"));
    let tokens = tokens.json();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "mcp:tools");
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let header = jsonwebtoken::decode_header(&access).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert!(header.kid.is_some());

    // The token works on the route, with the user's identity sent upstream.
    let answer = call_mcp(&gateway, &access).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = upstream.requests().pop().expect("forwarded");
    assert_eq!(seen.header("x-user-id"), Some("local:alice"));
    assert_eq!(seen.header("x-user-email"), Some("alice@example.com"));
    assert_eq!(seen.header("x-auth-client-id"), Some(client_id.as_str()));
    assert!(seen.header("authorization").is_none());

    // A second authorization by the same (logged-in) user: no login page. This public
    // client answers on loopback, which any local program could claim to be, so consent is
    // asked again (RFC 8252 §8.6) rather than remembered.
    let (_, challenge2) = pkce();
    let again = browser
        .get(
            addr,
            &format!(
                "/authorize?{}",
                authorize_query(&client_id, &challenge2, "s2")
            ),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(again.body.contains("id=\"consent\""), "{}", again.body);
    assert!(!again.body.contains("id=\"login\""));

    // Refresh rotates; the rotated token still works within the grace window once, then
    // reuse after the successor was used revokes the family.
    let refreshed = post_form(
        addr,
        "/token",
        &form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
        ]),
        &[],
    )
    .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let refreshed = refreshed.json();
    let refresh2 = refreshed["refresh_token"].as_str().unwrap().to_string();
    let access2 = refreshed["access_token"].as_str().unwrap().to_string();
    assert_ne!(refresh2, refresh);
    assert_eq!(call_mcp(&gateway, &access2).await.status, 200);
    let third = post_form(
        addr,
        "/token",
        &form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh2),
            ("client_id", &client_id),
        ]),
        &[],
    )
    .await;
    assert_eq!(third.status, 200, "{}", third.body);
    let access3 = third.json()["access_token"].as_str().unwrap().to_string();
    let reuse = post_form(
        addr,
        "/token",
        &form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
        ]),
        &[],
    )
    .await;
    assert_eq!(reuse.status, 400);
    assert_eq!(reuse.json()["error"], "invalid_grant");
    // The family is gone: its access tokens are refused at once, cached or not.
    let refused = call_mcp(&gateway, &access3).await;
    assert_eq!(refused.status, 401, "{}", refused.body);

    // Code replay: refused, and what the code issued is revoked.
    let replay = redeem(&gateway, &client_id, code, &verifier).await;
    assert_eq!(replay.json()["error"], "invalid_grant");
    assert_eq!(call_mcp(&gateway, &access).await.status, 401);

    gateway.shutdown().await;
}

#[tokio::test]
async fn a_refresh_token_survives_a_restart() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("restart");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let client_id = oauth::register_public(gateway.addr, REDIRECT).await;
    let (verifier, challenge) = pkce();
    let location = browser_login(
        &mut Browser::default(),
        gateway.addr,
        &authorize_query(&client_id, &challenge, "s"),
    )
    .await;
    let tokens = redeem(&gateway, &client_id, &query(&location)["code"], &verifier)
        .await
        .json();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    gateway.shutdown().await;

    let gateway = start(&dir, &upstream, "").await;
    assert_eq!(
        call_mcp(&gateway, &access).await.status,
        200,
        "same signing key after restart"
    );
    let refreshed = post_form(
        gateway.addr,
        "/token",
        &form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
        ]),
        &[],
    )
    .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let access2 = refreshed.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(call_mcp(&gateway, &access2).await.status, 200);
    gateway.shutdown().await;
}

/// Two routes: `/mcp` lists no verifier (so it takes the built-in server's tokens), `/keys`
/// names API keys only (so it must not).
async fn start_two_routes(
    dir: &std::path::Path,
    upstream: &Upstream,
    extra: &str,
) -> (TestGateway, String) {
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"
trust_forwarded_headers = true

{keys}

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "{upstream}"
scopes_supported = ["mcp:tools"]

[[routes]]
id = "keys"
path = "/keys"
upstream = "{upstream}"
verifiers = ["api_keys"]
{as_section}
"#,
        keys = common::gateway::api_key_toml("svc", &[]),
        upstream = upstream.url("/mcp"),
        as_section = as_toml(dir, extra),
    );
    (TestGateway::start(&toml).await, toml)
}

#[tokio::test]
async fn only_routes_that_accept_the_server_get_its_tokens() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("opt-in");
    let upstream = Upstream::start().await;
    let (gateway, _) = start_two_routes(&dir, &upstream, "").await;
    let prm = get(
        gateway.addr,
        "/.well-known/oauth-protected-resource/keys",
        &[],
    )
    .await;
    assert!(
        prm.json()["authorization_servers"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{}",
        prm.body
    );
    let metadata = get(gateway.addr, "/.well-known/oauth-authorization-server", &[])
        .await
        .json();
    assert_eq!(
        metadata["protected_resources"],
        serde_json::json!(["http://127.0.0.1/mcp"])
    );

    let client_id = oauth::register_public(gateway.addr, REDIRECT).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let query_for_keys = form(&[
        ("response_type", "code"),
        ("client_id", &client_id),
        ("redirect_uri", REDIRECT),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("resource", "http://127.0.0.1/keys"),
    ]);
    let answer = browser
        .get(gateway.addr, &format!("/authorize?{query_for_keys}"))
        .await;
    assert_eq!(answer.status, 302);
    assert_eq!(
        query(answer.header("location").unwrap())["error"],
        "invalid_target"
    );

    // A token for /mcp does not open /keys.
    let (verifier, challenge) = pkce();
    let location = browser_login(
        &mut browser,
        gateway.addr,
        &authorize_query(&client_id, &challenge, "s"),
    )
    .await;
    let token = redeem(&gateway, &client_id, &query(&location)["code"], &verifier)
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let keys = post_json(
        gateway.addr,
        "/keys",
        &[("authorization", &format!("Bearer {token}"))],
        "{}",
    )
    .await;
    assert_eq!(keys.status, 401, "{}", keys.body);
    assert_eq!(call_mcp(&gateway, &token).await.status, 200);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_removed_user_gets_no_more_tokens() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("removed-user");
    let upstream = Upstream::start().await;
    let (gateway, toml) = start_two_routes(&dir, &upstream, "").await;
    let client_id = oauth::register_public(gateway.addr, REDIRECT).await;
    let (verifier, challenge) = pkce();
    let mut browser = Browser::default();
    let location = browser_login(
        &mut browser,
        gateway.addr,
        &authorize_query(&client_id, &challenge, "s"),
    )
    .await;
    let tokens = redeem(&gateway, &client_id, &query(&location)["code"], &verifier)
        .await
        .json();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();

    // alice leaves the configuration (bob takes her place) and the file is reloaded.
    let without_alice = toml.replace("username = \"alice\"", "username = \"bob\"");
    gateway.reload(&without_alice);
    let refused = post_form(
        gateway.addr,
        "/token",
        &form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
        ]),
        &[],
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.json()["error"], "invalid_grant");
    // Her browser session no longer counts as logged in.
    let (_, challenge) = pkce();
    let page = browser
        .get(
            gateway.addr,
            &format!(
                "/authorize?{}",
                authorize_query(&client_id, &challenge, "s")
            ),
        )
        .await;
    assert!(page.body.contains("id=\"login\""), "{}", page.body);
    gateway.shutdown().await;
}

#[tokio::test]
async fn limits_count_the_client_a_trusted_proxy_names_and_registration_drops_what_it_cannot_use() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("forwarded-limits");
    let upstream = Upstream::start().await;
    let (gateway, _) = start_two_routes(
        &dir,
        &upstream,
        "[authorization_server.registration]\nper_address_per_hour = 2\n",
    )
    .await;
    let register = |from: &'static str| {
        let addr = gateway.addr;
        async move {
            post_json(
                addr,
                "/register",
                &[("x-forwarded-for", from)],
                &serde_json::json!({
                    "redirect_uris": [REDIRECT],
                    "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
                    "scope": "openid mcp:tools",
                    "token_endpoint_auth_method": "none",
                    "client_name": from,
                })
                .to_string(),
            )
            .await
        }
    };
    let first = register("203.0.113.7").await;
    assert_eq!(first.status, 201, "{}", first.body);
    // What cannot be used is dropped, not refused.
    assert_eq!(
        first.json()["grant_types"],
        serde_json::json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(first.json()["scope"], "mcp:tools");
    assert_eq!(register("203.0.113.7").await.status, 201);
    let third = register("203.0.113.7").await;
    assert_eq!(third.status, 429, "{}", third.body);
    // Another client behind the same proxy is not punished for it.
    assert_eq!(register("198.51.100.9").await.status, 201);

    // Introspection is not for self-registered clients, even confidential ones.
    let confidential = post_json(
        gateway.addr,
        "/register",
        &[("x-forwarded-for", "192.0.2.1")],
        &serde_json::json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_post"}).to_string(),
    )
    .await
    .json();
    let answer = post_form(
        gateway.addr,
        "/introspect",
        &form(&[
            ("token", "anything"),
            ("client_id", confidential["client_id"].as_str().unwrap()),
            (
                "client_secret",
                confidential["client_secret"].as_str().unwrap(),
            ),
        ]),
        &[],
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(answer.json()["error"], "invalid_client");
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_issuer_with_a_path_is_discovered_at_the_path_inserted_urls_and_browsers_may_call_it() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("issuer-path");
    let upstream = Upstream::start().await;
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1/t1"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "{}"
{}
"#,
        upstream.url("/mcp"),
        as_toml(&dir, "")
    );
    let gateway = TestGateway::start(&toml).await;
    // RFC 8414 §3.1 inserts the issuer's path after the well-known prefix; OIDC appends it.
    for path in [
        "/.well-known/oauth-authorization-server/t1",
        "/.well-known/openid-configuration/t1",
        "/.well-known/openid-configuration",
    ] {
        let doc = get(gateway.addr, path, &[]).await;
        assert_eq!(doc.status, 200, "{path}");
        assert_eq!(doc.json()["issuer"], "http://127.0.0.1/t1", "{path}");
        assert_eq!(doc.json()["token_endpoint"], "http://127.0.0.1/t1/token");
    }
    let prm = get(
        gateway.addr,
        "/.well-known/oauth-protected-resource/t1/mcp",
        &[],
    )
    .await;
    assert_eq!(
        prm.json()["authorization_servers"][0],
        "http://127.0.0.1/t1",
        "{}",
        prm.body
    );

    // CORS: a browser client may preflight and call the endpoints it uses directly.
    for path in [
        "/token",
        "/register",
        "/revoke",
        "/.well-known/oauth-authorization-server/t1",
    ] {
        let preflight = common::http::exchange(
            gateway.addr,
            common::http::request("OPTIONS", gateway.addr, path)
                .header("origin", "https://app.example")
                .header("access-control-request-method", "POST")
                .body(common::http::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(preflight.status, 204, "{path}");
        assert_eq!(
            preflight.header("access-control-allow-origin"),
            Some("*"),
            "{path}"
        );
        assert!(preflight
            .header("access-control-allow-methods")
            .unwrap_or("")
            .contains("POST"));
    }
    let token_error = post_form(gateway.addr, "/token", "grant_type=nope", &[]).await;
    assert_eq!(token_error.header("access-control-allow-origin"), Some("*"));
    gateway.shutdown().await;
}
