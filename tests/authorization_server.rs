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
        assert_eq!(doc["jwks_uri"], "http://127.0.0.1/jwks.json");
        assert_eq!(doc["revocation_endpoint"], "http://127.0.0.1/revoke");
        assert_eq!(doc["introspection_endpoint"], "http://127.0.0.1/introspect");
        // client_credentials is offered only when a configured client may use it.
        assert_eq!(
            doc["grant_types_supported"],
            serde_json::json!(["authorization_code", "refresh_token"])
        );
        assert_eq!(
            doc["token_endpoint_auth_methods_supported"],
            serde_json::json!(["none", "client_secret_basic", "client_secret_post"])
        );
        assert_eq!(
            doc["introspection_endpoint_auth_methods_supported"],
            serde_json::json!(["client_secret_basic", "client_secret_post"])
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
        .authorize(addr, &authorize_query(&client_id, &challenge2, "s2"))
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
    let answer = browser.authorize(gateway.addr, &query_for_keys).await;
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
        .authorize(gateway.addr, &authorize_query(&client_id, &challenge, "s"))
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

/// A redirect URI on https: the client can be told apart from any local program that claims
/// its client_id, so a consent it was given can be remembered (RFC 8252 §8.6).
const WEB_REDIRECT: &str = "https://app.example/callback";

fn web_authorize_query(client_id: &str, challenge: &str, scope: &str) -> String {
    form(&[
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", WEB_REDIRECT),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", "s"),
        ("scope", scope),
        ("resource", "http://127.0.0.1/mcp"),
    ])
}

async fn register(gateway: &TestGateway, metadata: serde_json::Value) -> serde_json::Value {
    let answer = post_json(gateway.addr, "/register", &[], &metadata.to_string()).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.json()
}

/// The client_id of a registration of `metadata`.
async fn register_client_id(gateway: &TestGateway, metadata: serde_json::Value) -> String {
    register(gateway, metadata).await["client_id"]
        .as_str()
        .expect("client_id")
        .to_string()
}

#[tokio::test]
async fn a_confidential_client_authenticates_in_the_body_and_no_secret_is_stored_in_clear() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("stored-form");
    let upstream = Upstream::start().await;
    // A resource server of the configuration, allowed to introspect.
    let rs_secret = "resource-server-secret";
    let rs = format!(
        "[[authorization_server.clients]]\nclient_id = \"rs\"\nsecret_hash = \"{}\"\ngrant_types = [\"client_credentials\"]\n",
        mcp_auth_gateway::auth::api_key::format_hash(&mcp_auth_gateway::auth::api_key::sha256(
            rs_secret.as_bytes()
        ))
    );
    let gateway = start(&dir, &upstream, &rs).await;
    let addr = gateway.addr;
    let registered = register(
        &gateway,
        serde_json::json!({
            "redirect_uris": [WEB_REDIRECT],
            "token_endpoint_auth_method": "client_secret_post",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_name": "Confidential",
        }),
    )
    .await;
    let client_id = registered["client_id"].as_str().unwrap().to_string();
    let secret = registered["client_secret"].as_str().unwrap().to_string();
    let registration_token = registered["registration_access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let (verifier, challenge) = pkce();
    let mut browser = Browser::default();
    let location = browser_login(
        &mut browser,
        addr,
        &web_authorize_query(&client_id, &challenge, "mcp:tools"),
    )
    .await;
    let code = query(&location)["code"].clone();
    let session_cookies = browser.cookie_values();
    assert!(
        !session_cookies.is_empty(),
        "the login sets a session cookie"
    );
    // client_secret_post: the credentials in the form body (RFC 6749 §2.3.1).
    let tokens = post_form(
        addr,
        "/token",
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", WEB_REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", &client_id),
            ("client_secret", &secret),
        ]),
        &[],
    )
    .await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    let tokens = tokens.json();
    // The defaults: an hour for the access token.
    assert_eq!(tokens["expires_in"], 3600);
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let claims = oauth::jwt_claims(&access);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    assert_eq!(call_mcp(&gateway, &access).await.status, 200);

    // The refresh token, with the secret in the body again; a wrong secret is refused.
    let refresh_with = |secret: &str| {
        form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
            ("client_secret", secret),
        ])
    };
    let wrong = post_form(addr, "/token", &refresh_with("not-the-secret"), &[]).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(wrong.json()["error"], "invalid_client");
    let refreshed = post_form(addr, "/token", &refresh_with(&secret), &[]).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let refresh2 = refreshed.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();

    // Introspected, a refresh token shows the default 30 days of life.
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("rs:{rs_secret}")
        )
    );
    let introspected = post_form(
        addr,
        "/introspect",
        &form(&[("token", &refresh2)]),
        &[("authorization", &basic)],
    )
    .await;
    assert_eq!(introspected.status, 200, "{}", introspected.body);
    let introspected = introspected.json();
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["token_type"], "refresh_token");
    let lifetime = introspected["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert!(
        (30 * 86_400 - 60..=30 * 86_400 + 60).contains(&lifetime),
        "{lifetime} s"
    );

    // The database: WAL, and none of the secrets above in any column of any table —
    // secrets, registration tokens, refresh tokens and codes are kept as hashes only.
    let db = rusqlite::Connection::open(dir.join("as.db")).expect("open the database");
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let mut secrets = vec![
        ("client secret", secret.as_str()),
        ("registration access token", registration_token.as_str()),
        ("refresh token", refresh.as_str()),
        ("rotated refresh token", refresh2.as_str()),
        ("authorization code", code.as_str()),
        ("access token", access.as_str()),
    ];
    for cookie in &session_cookies {
        secrets.push(("login session cookie", cookie.as_str()));
    }
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(tables.iter().any(|t| t == "refresh_tokens"), "{tables:?}");
    let mut cells = 0;
    for table in &tables {
        let mut statement = db.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = statement.column_count();
        let mut rows = statement.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                let bytes = match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                        b.to_vec()
                    }
                    _ => continue,
                };
                cells += 1;
                for (what, value) in &secrets {
                    assert!(
                        !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                        "the {what} is stored in clear in {table}"
                    );
                }
            }
        }
    }
    assert!(
        cells > 10,
        "the database holds the flow's state ({cells} cells)"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn consent_is_remembered_per_user_client_and_scopes() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("consent-remembered");
    let upstream = Upstream::start().await;
    // bob, beside alice, with the same password.
    let bob = format!(
        "[[authorization_server.users]]\nusername = \"bob\"\npassword_hash = \"{}\"\n",
        mcp_auth_gateway::authorization_server::cli::hash_password(oauth::PASSWORD).unwrap()
    );
    let gateway = start(&dir, &upstream, &bob).await;
    let addr = gateway.addr;
    // (Two names: an identical registration would replace the first one.)
    let public_client = |name: &str| {
        serde_json::json!({
            "redirect_uris": [WEB_REDIRECT],
            "token_endpoint_auth_method": "none",
            "client_name": name,
        })
    };
    let first = register_client_id(&gateway, public_client("First")).await;
    let second = register_client_id(&gateway, public_client("Second")).await;
    let mut browser = Browser::default();
    let (_, challenge) = pkce();
    browser_login(
        &mut browser,
        addr,
        &web_authorize_query(&first, &challenge, "mcp:tools"),
    )
    .await;

    // The same user, client and scopes: straight back with a code, no page.
    let again = browser
        .authorize(addr, &web_authorize_query(&first, &challenge, "mcp:tools"))
        .await;
    assert_eq!(again.status, 302, "{}", again.body);
    let location = again.header("location").unwrap();
    assert!(location.starts_with(WEB_REDIRECT), "{location}");
    assert!(query(location).contains_key("code"), "{location}");

    // More scopes than were granted, or another client: asked again.
    for (client_id, scope) in [(&first, "mcp:tools mcp:admin"), (&second, "mcp:tools")] {
        let page = browser
            .authorize(addr, &web_authorize_query(client_id, &challenge, scope))
            .await;
        assert_eq!(page.status, 200, "{client_id} {scope}: {}", page.body);
        assert!(page.body.contains("id=\"consent\""), "{}", page.body);
        assert!(!page.body.contains("id=\"login\""), "{}", page.body);
    }

    // Another user, same client and scopes: alice's consent is not bob's.
    let mut bobs_browser = Browser::default();
    let login = bobs_browser
        .authorize(addr, &web_authorize_query(&first, &challenge, "mcp:tools"))
        .await;
    let consent = bobs_browser
        .post_form(
            addr,
            "/login",
            &form(&[
                ("request", &oauth::hidden(&login.body, "request").unwrap()),
                ("csrf", &oauth::hidden(&login.body, "csrf").unwrap()),
                ("username", "bob"),
                ("password", oauth::PASSWORD),
            ]),
        )
        .await;
    assert_eq!(consent.status, 200, "{}", consent.body);
    assert!(consent.body.contains("id=\"consent\""), "{}", consent.body);

    // A confidential client proves who it is with its secret, so its consent is remembered
    // even on a loopback redirect (a public one there is asked every time).
    let confidential = register_client_id(
        &gateway,
        serde_json::json!({
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "client_secret_basic",
            "client_name": "Confidential on loopback",
        }),
    )
    .await;
    browser_login(
        &mut browser,
        addr,
        &authorize_query(&confidential, &challenge, "s"),
    )
    .await;
    let again = browser
        .authorize(addr, &authorize_query(&confidential, &challenge, "s"))
        .await;
    assert_eq!(again.status, 302, "{}", again.body);
    assert!(again.header("location").unwrap().starts_with(REDIRECT));
    gateway.shutdown().await;
}

#[tokio::test]
async fn without_a_resource_the_only_route_is_the_audience_and_with_several_it_is_an_error() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("no-resource");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let client_id = oauth::register_public(gateway.addr, REDIRECT).await;
    let (verifier, challenge) = pkce();
    let without_resource = |challenge: &str| {
        form(&[
            ("response_type", "code"),
            ("client_id", &client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("state", "s"),
        ])
    };
    let location = browser_login(
        &mut Browser::default(),
        gateway.addr,
        &without_resource(&challenge),
    )
    .await;
    let tokens = post_form(
        gateway.addr,
        "/token",
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", &query(&location)["code"]),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", &client_id),
        ]),
        &[],
    )
    .await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    let access = tokens.json()["access_token"].as_str().unwrap().to_string();
    let claims = oauth::jwt_claims(&access);
    assert_eq!(claims["aud"], "http://127.0.0.1/mcp");
    assert_eq!(call_mcp(&gateway, &access).await.status, 200);
    gateway.shutdown().await;

    // Two routes take this server's tokens: which one is meant must be said.
    let dir = oauth::temp_dir("no-resource-two");
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "{upstream}"

[[routes]]
id = "other"
path = "/other"
upstream = "{upstream}"
{as_section}
"#,
        upstream = upstream.url("/mcp"),
        as_section = as_toml(&dir, ""),
    );
    let gateway = TestGateway::start(&toml).await;
    let client_id = oauth::register_public(gateway.addr, REDIRECT).await;
    let (_, challenge) = pkce();
    let query_text = form(&[
        ("response_type", "code"),
        ("client_id", &client_id),
        ("redirect_uri", REDIRECT),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("state", "s"),
    ]);
    let answer = Browser::default()
        .authorize(gateway.addr, &query_text)
        .await;
    assert_eq!(answer.status, 302, "{}", answer.body);
    let params = query(answer.header("location").unwrap());
    assert_eq!(params["error"], "invalid_target");
    assert!(
        params["error_description"].contains("resource is required"),
        "{params:?}"
    );
    assert_eq!(params["state"], "s");

    // Consent is remembered per resource: given for /mcp, asked again for /other.
    let web_client = register_client_id(
        &gateway,
        serde_json::json!({
            "redirect_uris": [WEB_REDIRECT],
            "token_endpoint_auth_method": "none",
            "client_name": "Two resources",
        }),
    )
    .await;
    let for_resource = |resource: &str| {
        form(&[
            ("response_type", "code"),
            ("client_id", &web_client),
            ("redirect_uri", WEB_REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("resource", resource),
        ])
    };
    let mut browser = Browser::default();
    browser_login(
        &mut browser,
        gateway.addr,
        &for_resource("http://127.0.0.1/mcp"),
    )
    .await;
    let again = browser
        .authorize(gateway.addr, &for_resource("http://127.0.0.1/mcp"))
        .await;
    assert_eq!(again.status, 302, "{}", again.body);
    let other = browser
        .authorize(gateway.addr, &for_resource("http://127.0.0.1/other"))
        .await;
    assert_eq!(other.status, 200, "{}", other.body);
    assert!(other.body.contains("id=\"consent\""), "{}", other.body);
    gateway.shutdown().await;
}
