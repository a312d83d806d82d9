//! The built-in authorization server under attack, over real sockets: every request an
//! attacker (or a broken client) could send is refused with the error the specifications
//! name — OAuth 2.1, RFC 6749 §4.1.2.1/§5.2, RFC 7636 (PKCE), RFC 8707 (resource),
//! RFC 9207 (iss), RFC 8252 §7.3 (loopback redirects), RFC 7591/7592 (registration),
//! RFC 7009 (revocation), RFC 7662 (introspection) — and what it refuses never works later.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};

use common::http::{exchange, get, post_json, request, Answer};
use common::oauth::{
    self, browser_login, form, hidden, jwt_claims as claims, pkce, post_form, query, Browser,
    PASSWORD,
};
use common::{TestGateway, Upstream};

/// One built-in authorization server per process: its keys and revocations are published
/// process-wide, so the tests of this file run their gateways one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ISSUER: &str = "http://127.0.0.1";
const RESOURCE: &str = "http://127.0.0.1/mcp";
const REDIRECT: &str = "http://127.0.0.1:9/callback";
/// The confidential client configured in TOML (introspection, client_credentials).
const RS_ID: &str = "rs";
const RS_SECRET: &str = "rs-secret-0123456789abcdefghijklmnop";

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// alice's password as an Argon2id hash with the smallest parameters: the same verification
/// path as a production hash, without a second of hashing per login in a debug build.
fn cheap_password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
        let params = Params::new(Params::MIN_M_COST, 1, 1, None).expect("argon2 params");
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_with_salt(PASSWORD.as_bytes(), b"attack-tests-salt")
            .expect("argon2 hash")
            .to_string()
    })
}

/// The gateway: one route, the built-in authorization server (as `oauth::as_toml` writes
/// it, with alice and a database in `dir`). `settings` goes inside `[authorization_server]`
/// (keys first, then any sub-tables); the confidential client `rs` is always configured.
async fn start(dir: &std::path::Path, upstream: &Upstream, settings: &str) -> TestGateway {
    let secret_hash = mcp_auth_gateway::auth::api_key::format_hash(
        &mcp_auth_gateway::auth::api_key::sha256(RS_SECRET.as_bytes()),
    );
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

[authorization_server]
database = "{db}"
{settings}

[[authorization_server.clients]]
client_id = "{RS_ID}"
client_name = "Resource server"
secret_hash = "{secret_hash}"
grant_types = ["client_credentials"]

[[authorization_server.users]]
username = "alice"
password_hash = "{password_hash}"
name = "Alice Example"
email = "alice@example.com"
groups = ["staff"]
"#,
        upstream = upstream.url("/mcp"),
        db = dir.join("as.db").display(),
        password_hash = cheap_password_hash(),
    );
    TestGateway::start(&toml).await
}

/// A complete, valid authorization request's parameters.
fn base_params<'a>(client_id: &'a str, challenge: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", "st-123"),
        ("scope", "mcp:tools"),
        ("resource", RESOURCE),
    ]
}

/// The valid request with some parameters replaced (`Some`) or removed (`None`).
fn authorize_query_with(
    client_id: &str,
    challenge: &str,
    changes: &[(&str, Option<&str>)],
) -> String {
    let mut params = base_params(client_id, challenge);
    for (name, value) in changes {
        match (params.iter().position(|(n, _)| n == name), value) {
            (Some(i), Some(v)) => params[i].1 = v,
            (Some(i), None) => {
                params.remove(i);
            }
            (None, Some(v)) => params.push((name, v)),
            (None, None) => {}
        }
    }
    form(&params)
}

fn authorize_query(client_id: &str, challenge: &str) -> String {
    authorize_query_with(client_id, challenge, &[])
}

/// A code for `client_id` (logs the browser in the first time, consents when asked).
async fn code_for(
    browser: &mut Browser,
    gateway: &TestGateway,
    client_id: &str,
    challenge: &str,
) -> String {
    let location = browser_login(
        browser,
        gateway.addr,
        &authorize_query(client_id, challenge),
    )
    .await;
    assert!(location.starts_with(REDIRECT), "{location}");
    query(&location)["code"].clone()
}

async fn redeem_with(gateway: &TestGateway, pairs: &[(&str, &str)]) -> Answer {
    post_form(gateway.addr, "/token", &form(pairs), &[]).await
}

async fn redeem(gateway: &TestGateway, client_id: &str, code: &str, verifier: &str) -> Answer {
    redeem_with(
        gateway,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
            ("client_id", client_id),
            ("resource", RESOURCE),
        ],
    )
    .await
}

/// Access and refresh token of a fresh grant for `client_id`.
async fn tokens_for(
    browser: &mut Browser,
    gateway: &TestGateway,
    client_id: &str,
) -> (String, String) {
    let (verifier, challenge) = pkce();
    let code = code_for(browser, gateway, client_id, &challenge).await;
    let answer = redeem(gateway, client_id, &code, &verifier).await;
    assert_token_answer(&answer);
    let body = answer.json();
    (
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string(),
        body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_string(),
    )
}

async fn refresh_with(
    gateway: &TestGateway,
    client_id: &str,
    token: &str,
    extra: &[(&str, &str)],
) -> Answer {
    let mut pairs = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", token),
        ("client_id", client_id),
    ];
    pairs.extend_from_slice(extra);
    redeem_with(gateway, &pairs).await
}

async fn refresh(gateway: &TestGateway, client_id: &str, token: &str) -> Answer {
    refresh_with(gateway, client_id, token, &[]).await
}

/// A successful refresh: the new access and refresh tokens.
fn rotated(answer: &Answer) -> (String, String) {
    assert_token_answer(answer);
    let body = answer.json();
    (
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string(),
        body["refresh_token"]
            .as_str()
            .expect("a rotated refresh token")
            .to_string(),
    )
}

async fn call_mcp(gateway: &TestGateway, token: &str) -> Answer {
    post_json(
        gateway.addr,
        "/mcp",
        &[("authorization", &format!("Bearer {token}"))],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    )
    .await
}

fn basic(id: &str, secret: &str) -> String {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", encode(id), encode(secret)))
    )
}

fn aud_is(value: &Value, resource: &str) -> bool {
    value == resource
        || value
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0] == resource)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Rate limits count in fixed windows: start a counting test far from a window's end.
async fn away_from_window_end(window: u64, margin: u64) {
    let left = window - unix_now() % window;
    if left < margin {
        tokio::time::sleep(Duration::from_secs(left) + Duration::from_millis(500)).await;
    }
}

async fn register(addr: std::net::SocketAddr, metadata: &Value) -> Answer {
    post_json(addr, "/register", &[], &metadata.to_string()).await
}

fn public_metadata(redirect_uri: &str) -> Value {
    json!({
        "client_name": "Test Client",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
    })
}

/// RFC 7592 requests to a registration_client_uri, with a bearer registration token.
async fn manage(
    addr: std::net::SocketAddr,
    method: &str,
    registration_client_uri: &str,
    token: &str,
    body: Option<&Value>,
) -> Answer {
    let path = registration_client_uri
        .strip_prefix(ISSUER)
        .unwrap_or_else(|| panic!("{registration_client_uri} is not under the issuer"));
    let mut builder =
        request(method, addr, path).header("authorization", format!("Bearer {token}"));
    let payload = match body {
        Some(value) => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(value.to_string())
        }
        None => Bytes::new(),
    };
    exchange(addr, builder.body(Full::new(payload)).expect("request")).await
}

// ---------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------

/// RFC 6749 §5.1: 200, JSON, `Cache-Control: no-store`.
#[track_caller]
fn assert_token_answer(answer: &Answer) {
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        answer.header("content-type")
    );
    assert_eq!(answer.json()["token_type"], "Bearer", "{}", answer.body);
}

/// RFC 6749 §5.2 (and RFC 7009/7591/7662, which reuse it): the status, a JSON body with
/// `error` and a human `error_description`.
#[track_caller]
fn assert_oauth_error(answer: &Answer, status: u16, error: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "error bodies are JSON: {:?}",
        answer.header("content-type")
    );
    let body = answer.json();
    assert_eq!(body["error"], error, "{}", answer.body);
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "error_description: {}",
        answer.body
    );
}

/// RFC 6749 §4.1.2.1 + RFC 9207: a redirect to the registered URI with `error`, `iss`
/// and (when given) `state`; never a code. Returns the redirect's parameters.
#[track_caller]
fn assert_error_redirect(
    answer: &Answer,
    redirect: &str,
    error: &str,
    state: Option<&str>,
) -> std::collections::HashMap<String, String> {
    assert!(
        matches!(answer.status.as_u16(), 302 | 303),
        "expected a redirect with error={error}, got {}: {}",
        answer.status,
        answer.body
    );
    let location = answer.header("location").expect("location");
    assert!(
        location.starts_with(&format!("{redirect}?")),
        "{location} is not the registered {redirect}"
    );
    let params = query(location);
    assert_eq!(
        params.get("error").map(String::as_str),
        Some(error),
        "{location}"
    );
    assert_eq!(
        params.get("iss").map(String::as_str),
        Some(ISSUER),
        "{location}"
    );
    if let Some(state) = state {
        assert_eq!(
            params.get("state").map(String::as_str),
            Some(state),
            "{location}"
        );
    }
    assert!(!params.contains_key("code"), "{location}");
    params
}

/// An error the browser sees and stays on: an HTML page, no `Location`.
#[track_caller]
fn assert_error_page(answer: &Answer, status: u16) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        answer.header("content-type")
    );
    assert!(
        answer.header("location").is_none(),
        "never redirect on this error: {:?}",
        answer.header("location")
    );
}

#[track_caller]
fn assert_login_page(answer: &Answer) {
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("id=\"login\""), "{}", answer.body);
    assert!(answer.header("location").is_none());
}

// ---------------------------------------------------------------------------------------
// PKCE (RFC 7636, OAuth 2.1 §4.1.1: S256 required)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn pkce_is_required_s256_and_checked() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-pkce");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let addr = gateway.addr;
    let client_id = oauth::register_public(addr, REDIRECT).await;
    let (verifier, challenge) = pkce();

    // No code_challenge at all.
    let answer = get(
        addr,
        &format!(
            "/authorize?{}",
            authorize_query_with(
                &client_id,
                &challenge,
                &[("code_challenge", None), ("code_challenge_method", None)]
            )
        ),
        &[],
    )
    .await;
    assert_error_redirect(&answer, REDIRECT, "invalid_request", Some("st-123"));

    // plain is not allowed (the challenge is then the verifier itself).
    let answer = get(
        addr,
        &format!(
            "/authorize?{}",
            authorize_query_with(
                &client_id,
                &verifier,
                &[("code_challenge_method", Some("plain"))]
            )
        ),
        &[],
    )
    .await;
    assert_error_redirect(&answer, REDIRECT, "invalid_request", Some("st-123"));

    // No method: RFC 7636 would default to plain, which is not allowed.
    let answer = get(
        addr,
        &format!(
            "/authorize?{}",
            authorize_query_with(&client_id, &challenge, &[("code_challenge_method", None)])
        ),
        &[],
    )
    .await;
    assert_error_redirect(&answer, REDIRECT, "invalid_request", Some("st-123"));

    // The token request without code_verifier.
    let mut browser = Browser::default();
    let code = code_for(&mut browser, &gateway, &client_id, &challenge).await;
    let answer = redeem_with(
        &gateway,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
            ("resource", RESOURCE),
        ],
    )
    .await;
    assert_oauth_error(&answer, 400, "invalid_request");

    // A wrong (well-formed) verifier: invalid_grant, and the code is spent.
    let (verifier, challenge) = pkce();
    let code = code_for(&mut browser, &gateway, &client_id, &challenge).await;
    let (wrong_verifier, _) = pkce();
    let answer = redeem(&gateway, &client_id, &code, &wrong_verifier).await;
    assert_oauth_error(&answer, 400, "invalid_grant");
    let answer = redeem(&gateway, &client_id, &code, &verifier).await;
    assert_oauth_error(&answer, 400, "invalid_grant");

    // Downgrade: the challenge (which travelled through the browser) as the verifier.
    let (_, challenge) = pkce();
    let code = code_for(&mut browser, &gateway, &client_id, &challenge).await;
    let answer = redeem(&gateway, &client_id, &code, &challenge).await;
    assert_oauth_error(&answer, 400, "invalid_grant");

    // A challenge that is no S256 value.
    let answer = get(
        addr,
        &format!(
            "/authorize?{}",
            authorize_query_with(&client_id, &challenge, &[("code_challenge", Some("abc"))])
        ),
        &[],
    )
    .await;
    assert_error_redirect(&answer, REDIRECT, "invalid_request", Some("st-123"));

    // Control: the same client with the right verifier on a fresh code gets tokens.
    let (verifier, challenge) = pkce();
    let code = code_for(&mut browser, &gateway, &client_id, &challenge).await;
    assert_token_answer(&redeem(&gateway, &client_id, &code, &verifier).await);
    gateway.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Authorization codes (OAuth 2.1 §4.1.3, RFC 6749 §4.1.2 / §10.5)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn codes_are_single_use_and_bound_to_client_and_redirect() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-code");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let addr = gateway.addr;
    let client_id = oauth::register_public(addr, REDIRECT).await;
    let other_client = oauth::register_public(addr, "http://127.0.0.1/callback").await;
    let mut browser = Browser::default();

    // Replay: refused, and everything the code issued is revoked.
    let (verifier, challenge) = pkce();
    let code = code_for(&mut browser, &gateway, &client_id, &challenge).await;
    let first = redeem(&gateway, &client_id, &code, &verifier).await;
    let (access, refresh_token) = rotated(&first);
    assert_eq!(call_mcp(&gateway, &access).await.status, 200);
    let replay = redeem(&gateway, &client_id, &code, &verifier).await;
    assert_oauth_error(&replay, 400, "invalid_grant");
    let refused = call_mcp(&gateway, &access).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let dead = refresh(&gateway, &client_id, &refresh_token).await;
    assert_oauth_error(&dead, 400, "invalid_grant");

    // A code redeemed by another client (with the right verifier).
    let (verifier, challenge) = pkce();
    let code = code_for(&mut browser, &gateway, &client_id, &challenge).await;
    let stolen = redeem(&gateway, &other_client, &code, &verifier).await;
    assert_oauth_error(&stolen, 400, "invalid_grant");

    // redirect_uri differing from the authorization request (another loopback port is
    // another string: the comparison at the token endpoint is exact).
    let (verifier, challenge) = pkce();
    let code = code_for(&mut browser, &gateway, &client_id, &challenge).await;
    for redirect_uri in ["http://127.0.0.1:10/callback", "http://127.0.0.1:9/other"] {
        let answer = redeem_with(
            &gateway,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", &verifier),
                ("client_id", &client_id),
            ],
        )
        .await;
        assert_oauth_error(&answer, 400, "invalid_grant");
    }

    // Left out, when the authorization request named it (RFC 6749 §4.1.3)...
    let redeem_without_redirect_uri = |code: String, verifier: String| {
        let client_id = client_id.clone();
        let gateway = &gateway;
        async move {
            redeem_with(
                gateway,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("code_verifier", &verifier),
                    ("client_id", &client_id),
                ],
            )
            .await
        }
    };
    let (verifier, challenge) = pkce();
    let code = code_for(&mut browser, &gateway, &client_id, &challenge).await;
    let answer = redeem_without_redirect_uri(code, verifier).await;
    assert_oauth_error(&answer, 400, "invalid_grant");
    assert!(
        answer.body.contains("redirect_uri is required"),
        "{}",
        answer.body
    );
    // ... but not when it left the only registered one implied.
    let (verifier, challenge) = pkce();
    let implied = form(&[
        ("response_type", "code"),
        ("client_id", &client_id),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("resource", RESOURCE),
    ]);
    let location = browser_login(&mut browser, gateway.addr, &implied).await;
    assert!(location.starts_with(REDIRECT), "{location}");
    let answer =
        redeem_without_redirect_uri(query(&location)["code"].clone(), verifier.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // A code nobody issued.
    let answer = redeem(&gateway, &client_id, "not-a-code", &verifier).await;
    assert_oauth_error(&answer, 400, "invalid_grant");

    // RFC 8707 §2.2: a token for another resource than the one authorized.
    let (verifier, challenge) = pkce();
    let code = code_for(&mut browser, &gateway, &client_id, &challenge).await;
    let answer = redeem_with(
        &gateway,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", &client_id),
            ("resource", "https://evil.example/mcp"),
        ],
    )
    .await;
    assert_oauth_error(&answer, 400, "invalid_target");

    // RFC 6749 §3.2: a parameter sent twice; §5.2: a grant type nobody offers.
    let (verifier, challenge) = pkce();
    let code = code_for(&mut browser, &gateway, &client_id, &challenge).await;
    let body = format!(
        "{}&code=other",
        form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", &client_id),
        ])
    );
    let answer = post_form(addr, "/token", &body, &[]).await;
    assert_oauth_error(&answer, 400, "invalid_request");
    for grant_type in [
        "password",
        "implicit",
        "urn:ietf:params:oauth:grant-type:device_code",
    ] {
        let answer = redeem_with(
            &gateway,
            &[
                ("grant_type", grant_type),
                ("username", "alice"),
                ("password", PASSWORD),
                ("client_id", &client_id),
            ],
        )
        .await;
        assert_oauth_error(&answer, 400, "unsupported_grant_type");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-expiry");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, r#"authorization_code_ttl = "10s""#).await;
    let client_id = oauth::register_public(gateway.addr, REDIRECT).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&mut Browser::default(), &gateway, &client_id, &challenge).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    let answer = redeem(&gateway, &client_id, &code, &verifier).await;
    assert_oauth_error(&answer, 400, "invalid_grant");
    gateway.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Refresh tokens (OAuth 2.1 §4.3, RFC 6749 §6, RFC 9700 §4.14.2)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn refresh_rotation_reuse_grace_scope_and_resource() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-refresh");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let client_id = oauth::register_public(gateway.addr, REDIRECT).await;
    let mut browser = Browser::default();

    // Reuse of a rotated token once its successor was used: the family dies.
    let (access1, t1) = tokens_for(&mut browser, &gateway, &client_id).await;
    let (access2, t2) = rotated(&refresh(&gateway, &client_id, &t1).await);
    let (access3, t3) = rotated(&refresh(&gateway, &client_id, &t2).await);
    assert_eq!(call_mcp(&gateway, &access3).await.status, 200);
    let reuse = refresh(&gateway, &client_id, &t1).await;
    assert_oauth_error(&reuse, 400, "invalid_grant");
    let successor = refresh(&gateway, &client_id, &t3).await;
    assert_oauth_error(&successor, 400, "invalid_grant");
    for access in [&access1, &access2, &access3] {
        let answer = call_mcp(&gateway, access).await;
        assert_eq!(answer.status, 401, "{}", answer.body);
    }

    // Grace window: two refreshes racing with one token both succeed and get the same
    // successor, so the login stays one chain whose reuse is still detected.
    let (_, t) = tokens_for(&mut browser, &gateway, &client_id).await;
    let (a, b) = tokio::join!(
        refresh(&gateway, &client_id, &t),
        refresh(&gateway, &client_id, &t)
    );
    let (access_a, next_a) = rotated(&a);
    let (access_b, next_b) = rotated(&b);
    assert_eq!(next_a, next_b, "one successor per presented token");
    let (access_a2, next_a2) = rotated(&refresh(&gateway, &client_id, &next_a).await);
    for access in [&access_a, &access_b, &access_a2] {
        let answer = call_mcp(&gateway, access).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    // Once the successor has been used, the first token is a reuse: the family dies.
    let late = refresh(&gateway, &client_id, &t).await;
    assert_oauth_error(&late, 400, "invalid_grant");
    assert_oauth_error(
        &refresh(&gateway, &client_id, &next_a2).await,
        400,
        "invalid_grant",
    );
    assert_eq!(call_mcp(&gateway, &access_a2).await.status, 401);

    // Scope widening on refresh (the grant was for mcp:tools only).
    let (_, t) = tokens_for(&mut browser, &gateway, &client_id).await;
    let wider = refresh_with(
        &gateway,
        &client_id,
        &t,
        &[("scope", "mcp:tools mcp:admin")],
    )
    .await;
    assert_oauth_error(&wider, 400, "invalid_scope");
    // Narrowing (or the same scope) is fine.
    let same = refresh_with(&gateway, &client_id, &t, &[("scope", "mcp:tools")]).await;
    assert_token_answer(&same);
    assert_eq!(same.json()["scope"], "mcp:tools");

    // Another resource on refresh.
    let (_, t) = tokens_for(&mut browser, &gateway, &client_id).await;
    for resource in ["https://evil.example/mcp", "http://127.0.0.1/other"] {
        let answer = refresh_with(&gateway, &client_id, &t, &[("resource", resource)]).await;
        assert_oauth_error(&answer, 400, "invalid_target");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn strict_rotation_and_refresh_tokens_bound_to_their_client() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-strict");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, r#"refresh_reuse_grace = "0s""#).await;
    let client_id = oauth::register_public(gateway.addr, REDIRECT).await;
    let other_client = oauth::register_public(gateway.addr, "http://127.0.0.1/callback").await;
    let mut browser = Browser::default();

    // Without grace, any second use of a token revokes the family, even if its successor
    // was never used.
    let (access1, t1) = tokens_for(&mut browser, &gateway, &client_id).await;
    let (access2, t2) = rotated(&refresh(&gateway, &client_id, &t1).await);
    let second = refresh(&gateway, &client_id, &t1).await;
    assert_oauth_error(&second, 400, "invalid_grant");
    let successor = refresh(&gateway, &client_id, &t2).await;
    assert_oauth_error(&successor, 400, "invalid_grant");
    for access in [&access1, &access2] {
        let answer = call_mcp(&gateway, access).await;
        assert_eq!(answer.status, 401, "{}", answer.body);
    }

    // Another client presenting the token: refused, and (even with strict rotation) the
    // token is not burnt for its owner.
    let (_, t) = tokens_for(&mut browser, &gateway, &client_id).await;
    let foreign = refresh(&gateway, &other_client, &t).await;
    assert_oauth_error(&foreign, 400, "invalid_grant");
    let (access, _) = rotated(&refresh(&gateway, &client_id, &t).await);
    assert_eq!(call_mcp(&gateway, &access).await.status, 200);
    gateway.shutdown().await;
}

/// RFC 6749 §6: the old refresh token may be revoked "after issuing a new refresh token to
/// the client". A refused refresh issues nothing, so it must not cost the client its token.
#[tokio::test]

async fn a_refresh_refused_for_its_scope_does_not_burn_the_token() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-burn-scope");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, r#"refresh_reuse_grace = "0s""#).await;
    let client_id = oauth::register_public(gateway.addr, REDIRECT).await;
    let (_, t) = tokens_for(&mut Browser::default(), &gateway, &client_id).await;
    let wider = refresh_with(&gateway, &client_id, &t, &[("scope", "mcp:admin")]).await;
    assert_oauth_error(&wider, 400, "invalid_scope");
    let retry = refresh(&gateway, &client_id, &t).await;
    assert_token_answer(&retry);
    gateway.shutdown().await;
}

#[tokio::test]

async fn a_refresh_refused_for_its_resource_does_not_burn_the_token() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-burn-resource");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, r#"refresh_reuse_grace = "0s""#).await;
    let client_id = oauth::register_public(gateway.addr, REDIRECT).await;
    let (_, t) = tokens_for(&mut Browser::default(), &gateway, &client_id).await;
    let other = refresh_with(
        &gateway,
        &client_id,
        &t,
        &[("resource", "https://evil.example/mcp")],
    )
    .await;
    assert_oauth_error(&other, 400, "invalid_target");
    let retry = refresh(&gateway, &client_id, &t).await;
    assert_token_answer(&retry);
    gateway.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Redirect URIs at /authorize (OAuth 2.1 §4.1.1 exact matching, RFC 8252 §7.3, RFC 6749
// §4.1.2.1: never redirect to an unverified URI)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unregistered_redirect_uris_get_a_page_never_a_redirect() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-redirect");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let addr = gateway.addr;
    let web_client = oauth::register_public(addr, "https://app.example.com/cb").await;
    let loopback_client = oauth::register_public(addr, "http://127.0.0.1/callback").await;
    let (_, challenge) = pkce();
    let try_redirect = |client_id: String, redirect_uri: &'static str| {
        let challenge = challenge.clone();
        async move {
            get(
                addr,
                &format!(
                    "/authorize?{}",
                    authorize_query_with(
                        &client_id,
                        &challenge,
                        &[("redirect_uri", Some(redirect_uri))]
                    )
                ),
                &[],
            )
            .await
        }
    };

    // Control: the registered URI itself is accepted (the login page).
    assert_login_page(&try_redirect(web_client.clone(), "https://app.example.com/cb").await);

    for trick in [
        "https://app.example.com/cb/extra",
        "https://app.example.com/c",
        "https://app.example.com/cb/",
        "https://app.example.com/CB",
        "https://APP.example.com/cb",
        "https://app.example.com/%63b",
        "https://app.example.com/cb/../cb",
        "https://app.example.com:8443/cb",
        "https://app.example.com:443/cb",
        "http://app.example.com/cb",
        "https://evil@app.example.com/cb",
        "https://app.example.com/cb#x",
        "https://app.example.com.evil.com/cb",
        "https://app.example.com/cb?x=1",
        "https://evil.example/cb",
    ] {
        let answer = try_redirect(web_client.clone(), trick).await;
        assert_error_page(&answer, 400);
    }

    // Loopback: any port (RFC 8252 §7.3), nothing else may change.
    let accepted = try_redirect(loopback_client.clone(), "http://127.0.0.1:54321/callback").await;
    assert_login_page(&accepted);
    let location = browser_login(
        &mut Browser::default(),
        addr,
        &authorize_query_with(
            &loopback_client,
            &challenge,
            &[("redirect_uri", Some("http://127.0.0.1:54321/callback"))],
        ),
    )
    .await;
    assert!(
        location.starts_with("http://127.0.0.1:54321/callback?"),
        "{location}"
    );
    assert!(query(&location).contains_key("code"), "{location}");
    for trick in [
        "http://127.0.0.1:54321/other",
        "http://127.0.0.1:54321/callback/extra",
        "http://127.0.0.1:54321/callback?x=1",
        "http://127.0.0.1:54321/callback#x",
        "http://evil@127.0.0.1:54321/callback",
        "http://localhost:54321/callback",
        "http://[::1]:54321/callback",
        "https://127.0.0.1:54321/callback",
        "http://127.0.0.1.evil.example:54321/callback",
    ] {
        let answer = try_redirect(loopback_client.clone(), trick).await;
        assert_error_page(&answer, 400);
    }

    // Open redirect through the error path: no client, or an unknown one.
    let answer = get(
        addr,
        &format!(
            "/authorize?{}",
            authorize_query_with(
                "mcp_nobody",
                &challenge,
                &[("redirect_uri", Some("https://evil.example"))]
            )
        ),
        &[],
    )
    .await;
    assert_error_page(&answer, 400);
    let answer = get(
        addr,
        &format!(
            "/authorize?{}",
            authorize_query_with(
                "x",
                &challenge,
                &[
                    ("client_id", None),
                    ("redirect_uri", Some("https://evil.example"))
                ]
            )
        ),
        &[],
    )
    .await;
    assert_error_page(&answer, 400);
    // An unregistered redirect_uri with an otherwise invalid request: still the page (the
    // redirect URI is checked before anything is sent back to it).
    let answer = get(
        addr,
        &format!(
            "/authorize?{}",
            authorize_query_with(
                &web_client,
                &challenge,
                &[
                    ("redirect_uri", Some("https://evil.example/cb")),
                    ("response_type", Some("token")),
                    ("code_challenge", None)
                ]
            )
        ),
        &[],
    )
    .await;
    assert_error_page(&answer, 400);
    gateway.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Other authorization request errors: back to the client with error=, state and iss
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn authorization_request_errors_go_back_to_the_client() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-request");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let addr = gateway.addr;
    let client_id = oauth::register_public(addr, REDIRECT).await;
    let (verifier, challenge) = pkce();
    let authorize = |changes: Vec<(&'static str, Option<&'static str>)>| {
        let (client_id, challenge) = (client_id.clone(), challenge.clone());
        async move {
            get(
                addr,
                &format!(
                    "/authorize?{}",
                    authorize_query_with(&client_id, &challenge, &changes)
                ),
                &[],
            )
            .await
        }
    };

    // RFC 8707 §2: not one of ours, or with a fragment.
    for resource in [
        "https://evil.example/mcp",
        "http://127.0.0.1/mcp#frag",
        "http://127.0.0.1/other",
        "not a uri",
    ] {
        let answer = authorize(vec![("resource", Some(resource))]).await;
        assert_error_redirect(&answer, REDIRECT, "invalid_target", Some("st-123"));
    }
    // A scope the resource does not offer.
    let answer = authorize(vec![("scope", Some("mcp:root"))]).await;
    assert_error_redirect(&answer, REDIRECT, "invalid_scope", Some("st-123"));
    // The implicit grant does not exist in OAuth 2.1.
    let answer = authorize(vec![("response_type", Some("token"))]).await;
    assert_error_redirect(
        &answer,
        REDIRECT,
        "unsupported_response_type",
        Some("st-123"),
    );
    // RFC 6749 §3.1: parameters must not be sent twice.
    let duplicated = format!(
        "/authorize?{}&state=second",
        authorize_query(&client_id, &challenge)
    );
    let answer = get(addr, &duplicated, &[]).await;
    assert_error_redirect(&answer, REDIRECT, "invalid_request", None);
    let duplicated = format!(
        "/authorize?{}&scope=mcp%3Aadmin",
        authorize_query(&client_id, &challenge)
    );
    let answer = get(addr, &duplicated, &[]).await;
    assert_error_redirect(&answer, REDIRECT, "invalid_request", None);

    // No resource with a single route: that route is the audience.
    let mut browser = Browser::default();
    let location = browser_login(
        &mut browser,
        addr,
        &authorize_query_with(&client_id, &challenge, &[("resource", None)]),
    )
    .await;
    let code = query(&location)["code"].clone();
    let answer = redeem_with(
        &gateway,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_token_answer(&answer);
    let access = answer.json()["access_token"].as_str().unwrap().to_string();
    assert!(
        aud_is(&claims(&access)["aud"], RESOURCE),
        "{}",
        claims(&access)
    );
    assert_eq!(call_mcp(&gateway, &access).await.status, 200);

    // Offered and unoffered scopes mixed: RFC 6749 §3.3 allows refusing (invalid_scope) or
    // narrowing; narrowed, the unoffered scope is in neither the answer nor the token.
    let (verifier, challenge) = pkce();
    let mixed = authorize_query_with(
        &client_id,
        &challenge,
        &[("scope", Some("mcp:tools mcp:root"))],
    );
    // (This public loopback client is asked for consent every time: browser_login answers.)
    let location = browser_login(&mut browser, addr, &mixed).await;
    if query(&location).contains_key("error") {
        assert_eq!(query(&location)["error"], "invalid_scope", "{location}");
    } else {
        let code = query(&location)["code"].clone();
        let answer = redeem(&gateway, &client_id, &code, &verifier).await;
        assert_token_answer(&answer);
        let body = answer.json();
        assert_eq!(body["scope"], "mcp:tools", "{body}");
        let access = body["access_token"].as_str().unwrap();
        assert_eq!(claims(access)["scope"], "mcp:tools");
    }
    gateway.shutdown().await;
}

/// RFC 6749 §4.1.2.1: `state` is REQUIRED in the error response whenever the request had
/// one, "the exact value received from the client". Refusing an over-long state is fine;
/// dropping it from the answer leaves the client unable to match the error to its request.
#[tokio::test]

async fn an_over_long_state_is_still_echoed_in_the_error() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-long-state");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let client_id = oauth::register_public(gateway.addr, REDIRECT).await;
    let (_, challenge) = pkce();
    let state = "s".repeat(2049);
    let answer = get(
        gateway.addr,
        &format!(
            "/authorize?{}",
            authorize_query_with(&client_id, &challenge, &[("state", Some(&state))])
        ),
        &[],
    )
    .await;
    assert_error_redirect(&answer, REDIRECT, "invalid_request", Some(&state));
    gateway.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// CSRF on the login and consent forms; password guessing
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn forms_only_work_in_the_browser_they_were_shown_in() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-csrf");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let addr = gateway.addr;
    let client_id = oauth::register_public(addr, REDIRECT).await;

    // The attacker starts a flow and signs in: he now holds a consent form of his own.
    let mut attacker = Browser::default();
    let (_, challenge) = pkce();
    let page = attacker
        .get(
            addr,
            &format!("/authorize?{}", authorize_query(&client_id, &challenge)),
        )
        .await;
    assert_login_page(&page);
    let page = attacker
        .post_form(
            addr,
            "/login",
            &form(&[
                ("request", &hidden(&page.body, "request").unwrap()),
                ("csrf", &hidden(&page.body, "csrf").unwrap()),
                ("username", "alice"),
                ("password", PASSWORD),
            ]),
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"consent\""), "{}", page.body);
    let attack_fields = form(&[
        ("request", &hidden(&page.body, "request").unwrap()),
        ("csrf", &hidden(&page.body, "csrf").unwrap()),
        ("decision", "approve"),
    ]);

    // The victim is signed in in her own browser.
    let mut victim = Browser::default();
    let (_, victim_challenge) = pkce();
    browser_login(
        &mut victim,
        addr,
        &authorize_query(&client_id, &victim_challenge),
    )
    .await;

    // The attacker's form submitted from the victim's browser: refused, no code.
    let answer = victim.post_form(addr, "/consent", &attack_fields).await;
    assert_error_page(&answer, 403);
    assert!(!answer.body.contains("code="), "{}", answer.body);

    // Without any session cookie: an error page, no redirect.
    let answer = Browser::default()
        .post_form(addr, "/consent", &attack_fields)
        .await;
    assert!(answer.status.is_client_error(), "{}", answer.status);
    assert_error_page(&answer, answer.status.as_u16());

    // Control: the same fields do work in the browser they were issued to.
    let answer = attacker.post_form(addr, "/consent", &attack_fields).await;
    assert_eq!(answer.status, 302, "{}", answer.body);
    assert!(query(answer.header("location").unwrap()).contains_key("code"));

    // Session fixation: a session id planted before login is not the signed-in one.
    let mut fixated = Browser::default();
    let page = fixated
        .get(
            addr,
            &format!("/authorize?{}", authorize_query(&client_id, &challenge)),
        )
        .await;
    assert_login_page(&page);
    let planted = page
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let signed_in = fixated
        .post_form(
            addr,
            "/login",
            &form(&[
                ("request", &hidden(&page.body, "request").unwrap()),
                ("csrf", &hidden(&page.body, "csrf").unwrap()),
                ("username", "alice"),
                ("password", PASSWORD),
            ]),
        )
        .await;
    assert!(
        matches!(signed_in.status.as_u16(), 200 | 302),
        "{}",
        signed_in.body
    );
    assert!(
        !signed_in.body.contains("id=\"login\""),
        "{}",
        signed_in.body
    );
    let answer = get(
        addr,
        &format!("/authorize?{}", authorize_query(&client_id, &challenge)),
        &[("cookie", &planted)],
    )
    .await;
    assert_login_page(&answer);

    // /login with a forged csrf, or another browser's: 403, and nobody is signed in.
    let mut one = Browser::default();
    let mut two = Browser::default();
    let page_one = one
        .get(
            addr,
            &format!("/authorize?{}", authorize_query(&client_id, &challenge)),
        )
        .await;
    let page_two = two
        .get(
            addr,
            &format!("/authorize?{}", authorize_query(&client_id, &challenge)),
        )
        .await;
    assert_login_page(&page_one);
    assert_login_page(&page_two);
    let request_one = hidden(&page_one.body, "request").unwrap();
    let csrf_one = hidden(&page_one.body, "csrf").unwrap();
    let request_two = hidden(&page_two.body, "request").unwrap();
    for (request, csrf) in [
        (
            request_two.as_str(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ),
        (request_two.as_str(), ""),
        (request_two.as_str(), csrf_one.as_str()),
        (request_one.as_str(), csrf_one.as_str()),
    ] {
        let answer = two
            .post_form(
                addr,
                "/login",
                &form(&[
                    ("request", request),
                    ("csrf", csrf),
                    ("username", "alice"),
                    ("password", PASSWORD),
                ]),
            )
            .await;
        assert_error_page(&answer, 403);
    }
    let again = two
        .get(
            addr,
            &format!("/authorize?{}", authorize_query(&client_id, &challenge)),
        )
        .await;
    assert_login_page(&again);
    gateway.shutdown().await;
}

#[tokio::test]
async fn wrong_passwords_are_refused_then_rate_limited() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // The limit counts per fixed minute: a run that crosses a minute boundary proves
    // nothing, so it is repeated on a fresh gateway (at most twice more).
    for attempt in 0..3 {
        let dir = oauth::temp_dir(&format!("atk-login-{attempt}"));
        let upstream = Upstream::start().await;
        let gateway = start(&dir, &upstream, "").await;
        let addr = gateway.addr;
        let client_id = oauth::register_public(addr, REDIRECT).await;
        let (_, challenge) = pkce();
        let authorize = format!("/authorize?{}", authorize_query(&client_id, &challenge));
        let mut browser = Browser::default();
        let mut page = browser.get(addr, &authorize).await;
        assert_login_page(&page);

        away_from_window_end(60, 10).await;
        let window = unix_now() / 60;
        let mut statuses = Vec::new();
        for _ in 0..11 {
            let answer = browser
                .post_form(
                    addr,
                    "/login",
                    &form(&[
                        ("request", &hidden(&page.body, "request").unwrap()),
                        ("csrf", &hidden(&page.body, "csrf").unwrap()),
                        ("username", "alice"),
                        ("password", "wrong password"),
                    ]),
                )
                .await;
            statuses.push(answer.status.as_u16());
            if answer.status == 200 {
                // The login page again, with an error, and still nobody signed in.
                assert_login_page(&answer);
                assert!(answer.body.contains("role=\"alert\""), "{}", answer.body);
                page = answer;
            } else {
                assert!(answer.header("location").is_none());
            }
        }
        // Even the right password is refused while the limit holds.
        let right = browser
            .post_form(
                addr,
                "/login",
                &form(&[
                    ("request", &hidden(&page.body, "request").unwrap()),
                    ("csrf", &hidden(&page.body, "csrf").unwrap()),
                    ("username", "alice"),
                    ("password", PASSWORD),
                ]),
            )
            .await;
        if unix_now() / 60 != window {
            gateway.shutdown().await;
            continue;
        }
        assert_eq!(statuses[..10], [200; 10], "{statuses:?}");
        assert_eq!(statuses[10], 429, "{statuses:?}");
        assert_eq!(right.status, 429, "{}", right.body);
        assert!(right.header("location").is_none());
        let after = browser.get(addr, &authorize).await;
        assert_login_page(&after);
        gateway.shutdown().await;
        return;
    }
    panic!("three runs in a row crossed a minute boundary");
}

// ---------------------------------------------------------------------------------------
// Dynamic client registration (RFC 7591, RFC 7592)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn registration_refuses_dangerous_metadata() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-dcr");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let addr = gateway.addr;

    for uri in [
        "http://evil.example/cb",
        "javascript:alert(1)",
        "data:text/html,hi",
        "https://app.example.com/cb#frag",
        "https://user@app.example.com/cb",
        "/relative/cb",
    ] {
        let answer = register(addr, &public_metadata(uri)).await;
        assert_oauth_error(&answer, 400, "invalid_redirect_uri");
    }
    let mut metadata = public_metadata("https://app.example.com/cb");
    metadata["token_endpoint_auth_method"] = json!("private_key_jwt");
    assert_oauth_error(
        &register(addr, &metadata).await,
        400,
        "invalid_client_metadata",
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn registration_is_rate_limited_deduplicated_and_managed_by_its_token() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-dcr-flood");
    let upstream = Upstream::start().await;
    let gateway = start(
        &dir,
        &upstream,
        "[authorization_server.registration]\nper_address_per_hour = 3",
    )
    .await;
    let addr = gateway.addr;
    away_from_window_end(3600, 20).await;

    // An identical re-registration of an unused client replaces it.
    let metadata = public_metadata("https://app.example.com/cb");
    let first = register(addr, &metadata).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.header("cache-control"), Some("no-store"));
    let first = first.json();
    let second = register(addr, &metadata).await;
    assert_eq!(second.status, 201, "{}", second.body);
    let second = second.json();
    assert_ne!(first["client_id"], second["client_id"]);
    let (uri1, token1) = (
        first["registration_client_uri"].as_str().unwrap(),
        first["registration_access_token"].as_str().unwrap(),
    );
    let (uri2, token2) = (
        second["registration_client_uri"].as_str().unwrap(),
        second["registration_access_token"].as_str().unwrap(),
    );
    let gone = manage(addr, "GET", uri1, token1, None).await;
    assert_eq!(gone.status, 401, "{}", gone.body);
    let (_, challenge) = pkce();
    let replaced_client = first["client_id"].as_str().unwrap();
    let page = get(
        addr,
        &format!(
            "/authorize?{}",
            authorize_query_with(
                replaced_client,
                &challenge,
                &[("redirect_uri", Some("https://app.example.com/cb"))]
            )
        ),
        &[],
    )
    .await;
    assert_error_page(&page, 400);

    // A third registration, then the flood is stopped.
    let third = register(addr, &public_metadata("https://other.example.com/cb")).await;
    assert_eq!(third.status, 201, "{}", third.body);
    let fourth = register(addr, &public_metadata("https://third.example.com/cb")).await;
    assert_eq!(fourth.status, 429, "{}", fourth.body);
    let body = fourth.json();
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        fourth.body
    );
    eprintln!(
        "registration flood answer: {} {} (Retry-After: {:?})",
        fourth.status,
        fourth.body,
        fourth.header("retry-after")
    );

    // RFC 7592 with the registration access token: read, update, delete.
    let read = manage(addr, "GET", uri2, token2, None).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.header("cache-control"), Some("no-store"));
    assert_eq!(read.json()["client_id"], second["client_id"]);
    assert!(read.json().get("client_secret").is_none());
    let mut update = metadata.clone();
    update["client_id"] = second["client_id"].clone();
    update["client_name"] = json!("Renamed Client");
    let updated = manage(addr, "PUT", uri2, token2, Some(&update)).await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.json()["client_name"], "Renamed Client");
    // An update is validated like a registration.
    let mut evil = update.clone();
    evil["redirect_uris"] = json!(["http://evil.example/cb"]);
    let answer = manage(addr, "PUT", uri2, token2, Some(&evil)).await;
    assert_oauth_error(&answer, 400, "invalid_redirect_uri");

    // A wrong token: 401 for every method, and nothing changes.
    let wrong = "not-the-registration-token";
    for (method, body) in [("GET", None), ("PUT", Some(&update)), ("DELETE", None)] {
        let answer = manage(addr, method, uri2, wrong, body).await;
        assert_eq!(answer.status, 401, "{method}: {}", answer.body);
        assert!(
            answer
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{method}: {:?}",
            answer.header("www-authenticate")
        );
    }
    // Another registration's token does not open this one.
    let third = third.json();
    let third_token = third["registration_access_token"].as_str().unwrap();
    let answer = manage(addr, "GET", uri2, third_token, None).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    let still = manage(addr, "GET", uri2, token2, None).await;
    assert_eq!(still.json()["client_name"], "Renamed Client");

    let deleted = manage(addr, "DELETE", uri2, token2, None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let after = manage(addr, "GET", uri2, token2, None).await;
    assert_eq!(after.status, 401, "{}", after.body);
    // RFC 7592 §2.3: a deleted client_id is no longer usable.
    let answer = redeem_with(
        &gateway,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_id", second["client_id"].as_str().unwrap()),
        ],
    )
    .await;
    assert_oauth_error(&answer, 401, "invalid_client");
    gateway.shutdown().await;
}

/// RFC 7592 §2.3: deleting a registration ends every grant made to it — access tokens of
/// every login, before and after a refresh, are refused at once and after a restart — and
/// leaves other clients' grants alone.
#[tokio::test]
async fn deleting_a_registration_revokes_its_tokens() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-dcr-delete");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let addr = gateway.addr;
    let registered = register(addr, &public_metadata(REDIRECT)).await;
    assert_eq!(registered.status, 201, "{}", registered.body);
    let registered = registered.json();
    let client_id = registered["client_id"].as_str().unwrap();
    let uri = registered["registration_client_uri"].as_str().unwrap();
    let token = registered["registration_access_token"].as_str().unwrap();
    let mut browser = Browser::default();

    let (first, refresh_token) = tokens_for(&mut browser, &gateway, client_id).await;
    // Registered once the first is in use (an unused twin would be replaced by it).
    let bystander = oauth::register_public(addr, REDIRECT).await;
    let (refreshed, _) = rotated(&refresh(&gateway, client_id, &refresh_token).await);
    let (second, _) = tokens_for(&mut browser, &gateway, client_id).await;
    let (other, _) = tokens_for(&mut browser, &gateway, &bystander).await;
    for access in [&first, &refreshed, &second, &other] {
        assert_eq!(call_mcp(&gateway, access).await.status, 200);
    }

    let deleted = manage(addr, "DELETE", uri, token, None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    for access in [&first, &refreshed, &second] {
        let refused = call_mcp(&gateway, access).await;
        assert_eq!(refused.status, 401, "{}", refused.body);
        assert!(
            refused
                .header("www-authenticate")
                .is_some_and(|v| v.contains("invalid_token")),
            "{:?}",
            refused.header("www-authenticate")
        );
    }
    assert_eq!(call_mcp(&gateway, &other).await.status, 200);
    gateway.shutdown().await;

    // The revocations are stored: a restarted gateway refuses the tokens too.
    let gateway = start(&dir, &upstream, "").await;
    for access in [&first, &refreshed, &second] {
        assert_eq!(call_mcp(&gateway, access).await.status, 401);
    }
    assert_eq!(call_mcp(&gateway, &other).await.status, 200);
    gateway.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Client authentication at the token endpoint (RFC 6749 §2.3, §5.2)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn client_authentication_failures() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-client-auth");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let addr = gateway.addr;

    let mut metadata = public_metadata("https://app.example.com/cb");
    metadata["token_endpoint_auth_method"] = json!("client_secret_basic");
    let registered = register(addr, &metadata).await;
    assert_eq!(registered.status, 201, "{}", registered.body);
    let registered = registered.json();
    let confidential = registered["client_id"].as_str().unwrap().to_string();
    let secret = registered["client_secret"]
        .as_str()
        .expect("a confidential client gets a secret")
        .to_string();
    let public = oauth::register_public(addr, REDIRECT).await;
    let (verifier, _) = pkce();
    let code_grant = [
        ("grant_type", "authorization_code"),
        ("code", "not-a-code"),
        ("code_verifier", verifier.as_str()),
    ];
    let grant = form(&code_grant);
    let grant_with = |extra: &[(&str, &str)]| {
        let mut pairs = code_grant.to_vec();
        pairs.extend_from_slice(extra);
        form(&pairs)
    };

    // Wrong secret over Basic: 401 with a Basic challenge.
    let answer = post_form(
        addr,
        "/token",
        &grant,
        &[("authorization", &basic(&confidential, "wrong-secret"))],
    )
    .await;
    assert_oauth_error(&answer, 401, "invalid_client");
    assert!(
        answer
            .header("www-authenticate")
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("basic")),
        "{:?}",
        answer.header("www-authenticate")
    );
    // Unknown client over Basic: the same.
    let answer = post_form(
        addr,
        "/token",
        &grant,
        &[("authorization", &basic("mcp_nobody", "x"))],
    )
    .await;
    assert_oauth_error(&answer, 401, "invalid_client");
    assert!(answer.header("www-authenticate").is_some());
    // A confidential client that does not authenticate.
    let answer = post_form(
        addr,
        "/token",
        &grant_with(&[("client_id", &confidential)]),
        &[],
    )
    .await;
    assert!(matches!(answer.status.as_u16(), 400 | 401));
    assert_oauth_error(&answer, answer.status.as_u16(), "invalid_client");
    // Control: the right secret gets past authentication (to the unknown code).
    let answer = post_form(
        addr,
        "/token",
        &grant,
        &[("authorization", &basic(&confidential, &secret))],
    )
    .await;
    assert_oauth_error(&answer, 400, "invalid_grant");

    // A public client sending a secret.
    let answer = post_form(
        addr,
        "/token",
        &grant_with(&[("client_id", &public), ("client_secret", "guess")]),
        &[],
    )
    .await;
    assert!(matches!(answer.status.as_u16(), 400 | 401));
    assert_oauth_error(&answer, answer.status.as_u16(), "invalid_client");

    // Two authentication methods at once (RFC 6749 §2.3: MUST NOT).
    let answer = post_form(
        addr,
        "/token",
        &grant_with(&[("client_secret", &secret)]),
        &[("authorization", &basic(&confidential, &secret))],
    )
    .await;
    assert_oauth_error(&answer, 400, "invalid_request");

    // No client at all.
    let answer = post_form(addr, "/token", &grant, &[]).await;
    assert!(matches!(answer.status.as_u16(), 400 | 401));
    assert_oauth_error(&answer, answer.status.as_u16(), "invalid_client");
    gateway.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Revocation (RFC 7009)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn revocation_by_the_owner_only() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-revoke");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let addr = gateway.addr;
    let client_id = oauth::register_public(addr, REDIRECT).await;
    let other_client = oauth::register_public(addr, "http://127.0.0.1/callback").await;
    let mut browser = Browser::default();
    let revoke = |client: &str, token: &str, hint: Option<&str>| {
        let mut pairs = vec![
            ("token", token.to_string()),
            ("client_id", client.to_string()),
        ];
        if let Some(hint) = hint {
            pairs.push(("token_type_hint", hint.to_string()));
        }
        async move {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(addr, "/revoke", &form(&pairs), &[]).await
        }
    };

    // The owner revokes a refresh token: the grant ends, its access tokens with it.
    let (access1, t1) = tokens_for(&mut browser, &gateway, &client_id).await;
    let (access2, t2) = rotated(&refresh(&gateway, &client_id, &t1).await);
    let answer = revoke(&client_id, &t2, Some("refresh_token")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_oauth_error(
        &refresh(&gateway, &client_id, &t2).await,
        400,
        "invalid_grant",
    );
    for access in [&access1, &access2] {
        let answer = call_mcp(&gateway, access).await;
        assert_eq!(answer.status, 401, "{}", answer.body);
    }

    // Another client "revokes" it: 200 (nothing to learn), and it goes on working.
    let (access, t) = tokens_for(&mut browser, &gateway, &client_id).await;
    let answer = revoke(&other_client, &t, None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = revoke(&other_client, &access, Some("access_token")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(call_mcp(&gateway, &access).await.status, 200);
    let (access, _) = rotated(&refresh(&gateway, &client_id, &t).await);

    // The owner revokes an access token: refused on the route at once.
    let answer = revoke(&client_id, &access, Some("access_token")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let refused = call_mcp(&gateway, &access).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    // RFC 7009 §2.1: a wrong hint does not save the token (the search extends to all types).
    let (access, _) = tokens_for(&mut browser, &gateway, &client_id).await;
    let answer = revoke(&client_id, &access, Some("refresh_token")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let refused = call_mcp(&gateway, &access).await;
    assert_eq!(refused.status, 401, "{}", refused.body);

    // Unknown tokens: 200.
    for hint in [None, Some("refresh_token"), Some("access_token")] {
        let answer = revoke(&client_id, "no-such-token", hint).await;
        assert_eq!(answer.status, 200, "{hint:?}: {}", answer.body);
    }
    // A hint that is no token type is ignored (RFC 7009 §2.1: it only helps the lookup).
    let answer = revoke(&client_id, "no-such-token", Some("foo")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Revocation needs client authentication too.
    let answer = post_form(addr, "/revoke", &form(&[("token", &t)]), &[]).await;
    assert!(matches!(answer.status.as_u16(), 400 | 401));
    assert_oauth_error(&answer, answer.status.as_u16(), "invalid_client");
    gateway.shutdown().await;
}

/// RFC 7009 §2.2: a 200 means the token "has been revoked". A refresh token that was just
/// rotated (its successor not used yet) is still accepted inside the reuse grace window, so
/// revoking it must end it too.
#[tokio::test]

async fn a_revoked_rotated_refresh_token_stops_working() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-revoke-rotated");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let addr = gateway.addr;
    let client_id = oauth::register_public(addr, REDIRECT).await;
    let (_, t1) = tokens_for(&mut Browser::default(), &gateway, &client_id).await;
    let (access2, _t2) = rotated(&refresh(&gateway, &client_id, &t1).await);
    let answer = post_form(
        addr,
        "/revoke",
        &form(&[
            ("token", &t1),
            ("token_type_hint", "refresh_token"),
            ("client_id", &client_id),
        ]),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let after = refresh(&gateway, &client_id, &t1).await;
    assert_oauth_error(&after, 400, "invalid_grant");
    // RFC 7009 §2.1: the access tokens of the same grant SHOULD go with it.
    assert_eq!(call_mcp(&gateway, &access2).await.status, 401);
    gateway.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Introspection (RFC 7662) and client_credentials (RFC 6749 §4.4)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn introspection_needs_a_confidential_client_and_tells_nothing_about_dead_tokens() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-introspect");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let addr = gateway.addr;
    let client_id = oauth::register_public(addr, REDIRECT).await;
    let mut browser = Browser::default();
    let rs = basic(RS_ID, RS_SECRET);
    let introspect = |token: &str, auth: Option<String>, client: Option<String>| {
        let token = token.to_string();
        async move {
            let mut pairs = vec![("token", token.as_str())];
            if let Some(client) = &client {
                pairs.push(("client_id", client.as_str()));
            }
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            post_form(addr, "/introspect", &form(&pairs), &headers).await
        }
    };

    let (access, t) = tokens_for(&mut browser, &gateway, &client_id).await;

    // A public client proves nothing: refused.
    let answer = introspect(&access, None, Some(client_id.clone())).await;
    assert_oauth_error(&answer, 401, "invalid_client");
    // No authentication, or a wrong secret.
    let answer = introspect(&access, None, None).await;
    assert_oauth_error(&answer, 401, "invalid_client");
    let answer = introspect(&access, Some(basic(RS_ID, "wrong")), None).await;
    assert_oauth_error(&answer, 401, "invalid_client");
    assert!(answer.header("www-authenticate").is_some());

    // The resource server asks about a live access token.
    let answer = introspect(&access, Some(rs.clone()), None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let body = answer.json();
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["sub"], "local:alice", "{body}");
    assert_eq!(body["client_id"], client_id.as_str(), "{body}");
    assert_eq!(body["scope"], "mcp:tools", "{body}");
    assert!(aud_is(&body["aud"], RESOURCE), "{body}");
    assert!(
        body["exp"].as_u64().is_some_and(|exp| exp > unix_now()),
        "{body}"
    );

    // Garbage and dead tokens: exactly {"active":false}, nothing else.
    let inactive = json!({"active": false});
    for garbage in ["garbage", "a.b.c", &format!("{access}x")] {
        let answer = introspect(garbage, Some(rs.clone()), None).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json(), inactive, "{garbage}");
    }
    let revoked = post_form(
        addr,
        "/revoke",
        &form(&[("token", &t), ("client_id", &client_id)]),
        &[],
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    for dead in [&access, &t] {
        let answer = introspect(dead, Some(rs.clone()), None).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json(), inactive, "{}", answer.body);
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn client_credentials_issue_machine_tokens_without_refresh() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("atk-cc");
    let upstream = Upstream::start().await;
    let gateway = start(&dir, &upstream, "").await;
    let addr = gateway.addr;
    let rs = basic(RS_ID, RS_SECRET);

    let answer = post_form(
        addr,
        "/token",
        &form(&[
            ("grant_type", "client_credentials"),
            ("resource", RESOURCE),
            ("scope", "mcp:tools"),
        ]),
        &[("authorization", &rs)],
    )
    .await;
    assert_token_answer(&answer);
    let body = answer.json();
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(body["scope"], "mcp:tools");
    let access = body["access_token"].as_str().unwrap().to_string();
    let claims = claims(&access);
    assert_eq!(claims["sub"], RS_ID, "{claims}");
    assert_eq!(claims["client_id"], RS_ID, "{claims}");
    assert!(aud_is(&claims["aud"], RESOURCE), "{claims}");
    let answer = call_mcp(&gateway, &access).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(upstream.last().header("x-user-id"), Some(RS_ID));

    // The same grant with a wrong secret, or for a resource that is not ours.
    let answer = post_form(
        addr,
        "/token",
        &form(&[("grant_type", "client_credentials")]),
        &[("authorization", &basic(RS_ID, "wrong"))],
    )
    .await;
    assert_oauth_error(&answer, 401, "invalid_client");
    let answer = post_form(
        addr,
        "/token",
        &form(&[
            ("grant_type", "client_credentials"),
            ("resource", "https://evil.example/mcp"),
        ]),
        &[("authorization", &rs)],
    )
    .await;
    assert_oauth_error(&answer, 400, "invalid_target");
    let answer = post_form(
        addr,
        "/token",
        &form(&[("grant_type", "client_credentials"), ("scope", "mcp:root")]),
        &[("authorization", &rs)],
    )
    .await;
    assert_oauth_error(&answer, 400, "invalid_scope");
    // A public client cannot use it (RFC 6749 §4.4: confidential clients only).
    let public = oauth::register_public(addr, REDIRECT).await;
    let answer = post_form(
        addr,
        "/token",
        &form(&[("grant_type", "client_credentials"), ("client_id", &public)]),
        &[],
    )
    .await;
    assert_oauth_error(&answer, 400, "unauthorized_client");
    // And rs, registered for client_credentials only, cannot redeem codes.
    let answer = post_form(
        addr,
        "/token",
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("code_verifier", "y"),
        ]),
        &[("authorization", &rs)],
    )
    .await;
    assert_oauth_error(&answer, 400, "unauthorized_client");
    gateway.shutdown().await;
}
