//! Per-user tokens from an upstream MCP server's own authorization server
//! (`[routes.upstream_token.oauth]`), end to end over real sockets.
//!
//! Two setups:
//! - **Gateway in front of a gateway.** The upstream MCP server is another gateway (the real
//!   binary, its own process) with its own built-in authorization server and local users,
//!   in front of a recording upstream. The gateway under test (in process) discovers that
//!   server from the upstream (RFC 9728, RFC 8414), registers itself there (RFC 7591; it is
//!   served over plain http, so no client metadata document) or uses a client registered
//!   beforehand, and each user connects once while signing in.
//! - **A stand-in authorization server** on loopback, for what needs control over the
//!   upstream's answers: short-lived tokens refreshed on every request, a refused refresh,
//!   a wrong `iss`. It is honest: it checks the client id and secret, PKCE, the redirect
//!   URI, `resource` and single-use codes.
//!
//! The test plays the browsers (one per server: both gateways name their cookie the same)
//! and the MCP client.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use common::http::{get, post_json, Answer};
use common::oauth::{self, form, hidden, pkce, post_form, query, Browser, PASSWORD};
use common::process::{GatewayProcess, BIN};
use common::{free_port, TestGateway, Upstream};
use mcp_auth_gateway::authorization_server::cli::hash_password;
use mcp_auth_gateway::config;

/// One built-in authorization server per process (its keys are published process-wide):
/// the tests of this file run their gateways one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The MCP client's redirect URI (never called: the test reads the `Location`).
const REDIRECT: &str = "http://127.0.0.1:9/callback";
/// The stand-in's client registered for the gateway, and its secret.
const STAND_IN_CLIENT: &str = "gw-client";
const STAND_IN_SECRET: &str = "stand-in-secret-9f2c-never-shown";

fn password_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(PASSWORD).expect("hash"))
}

/// `[[authorization_server.users]]` entries with the test password.
fn users(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| {
            format!(
                "[[authorization_server.users]]\nusername = \"{name}\"\npassword_hash = \"{}\"\n",
                password_hash()
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The upstream gateway: the real binary with its own authorization server.

/// The upstream gateway: `/mcp` → `echo` behind its own authorization server (users alice
/// and bob, the pre-registered public client `gateway-a`).
async fn start_upstream_gateway(dir: &Path, echo: &Upstream) -> GatewayProcess {
    let port = free_port();
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
public_url = "http://127.0.0.1:{port}"

[log]
level = "info"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "{echo}"
scopes_supported = ["mcp:tools"]
resource_name = "Upstream tools"

[authorization_server]
database = "{db}"

{users}

[[authorization_server.clients]]
client_id = "gateway-a"
client_name = "Gateway A"
redirect_uris = ["http://127.0.0.1/connect/pre/callback"]
"#,
        echo = echo.url("/mcp"),
        db = dir.join("upstream.db").display(),
        users = users(&["alice", "bob"]),
    );
    let config = dir.join("upstream.toml");
    std::fs::write(&config, toml).expect("write config");
    GatewayProcess::start(&config, port, &dir.join("upstream.log"), &[]).await
}

// ---------------------------------------------------------------------------------------
// The stand-in authorization server.

struct Issued {
    challenge: String,
    redirect_uri: String,
    resource: String,
}

#[derive(Default)]
struct StandInState {
    codes: HashMap<String, Issued>,
    /// Refresh token → resource.
    refresh_tokens: HashMap<String, String>,
    issued: u64,
    /// `grant_type` of every token request that was answered with tokens.
    grants: Vec<String>,
    /// Token requests refused, by error code.
    refusals: Vec<String>,
    refuse_refresh: bool,
    /// Answer refresh requests with 500 (an outage, which says nothing about the grant).
    fail_refresh: bool,
    /// Send another issuer's `iss` back with the code.
    wrong_iss: bool,
    /// Lifetime of the access tokens it issues.
    expires_in: u64,
    /// Also accept the client as a public one (its id in the form, no secret).
    public_client: bool,
    /// Issue access tokens without a refresh token.
    no_refresh_tokens: bool,
    /// How long a refresh request waits before it is answered.
    refresh_delay: std::time::Duration,
    /// As an MCP server too (`/tools`): the authorization server its protected-resource
    /// metadata names (default: itself), and the `Authorization` of each call.
    names_issuer: Option<String>,
    calls: Vec<String>,
}

struct StandIn {
    addr: SocketAddr,
    state: Arc<Mutex<StandInState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Reply = Response<Full<Bytes>>;

fn json_reply(status: u16, body: Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

impl StandIn {
    async fn start() -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(StandInState {
            expires_in: 3600,
            ..StandInState::default()
        }));
        let served = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let state = served.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(stand_in(addr, state, request).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        StandIn { addr, state, task }
    }

    fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<T>(&self, f: impl FnOnce(&mut StandInState) -> T) -> T {
        f(&mut self.state.lock().expect("lock"))
    }
}

async fn stand_in(
    addr: SocketAddr,
    state: Arc<Mutex<StandInState>>,
    request: Request<Incoming>,
) -> Reply {
    let issuer = format!("http://{addr}");
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path();
    if path == "/.well-known/oauth-protected-resource/tools" {
        let named = state.lock().expect("lock").names_issuer.clone();
        return json_reply(
            200,
            json!({
                "resource": format!("{issuer}/tools"),
                "authorization_servers": [named.unwrap_or_else(|| issuer.clone())],
                "scopes_supported": ["tools:read"],
            }),
        );
    }
    if path == "/tools" {
        let authorization = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        state.lock().expect("lock").calls.push(authorization);
        return json_reply(
            200,
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}),
        );
    }
    if path == "/.well-known/oauth-authorization-server" {
        return json_reply(
            200,
            json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "code_challenge_methods_supported": ["S256"],
                "authorization_response_iss_parameter_supported": true,
                "response_types_supported": ["code"],
            }),
        );
    }
    let delay = state.lock().expect("lock").refresh_delay;
    let refreshing = form_urlencoded::parse(&body)
        .any(|(name, value)| name == "grant_type" && value == "refresh_token");
    if path == "/token" && refreshing {
        tokio::time::sleep(delay).await;
    }
    let mut state = state.lock().expect("lock");
    if path == "/authorize" {
        // Auto-approving: the person is signed in and allows at once.
        let params = query(&parts.uri.to_string());
        assert_eq!(params["response_type"], "code");
        assert_eq!(params["client_id"], STAND_IN_CLIENT);
        assert_eq!(params["code_challenge_method"], "S256");
        assert_eq!(params["scope"], "tools:read");
        assert!(!params.contains_key("client_secret"));
        state.issued += 1;
        let code = format!("code-{}", state.issued);
        state.codes.insert(
            code.clone(),
            Issued {
                challenge: params["code_challenge"].clone(),
                redirect_uri: params["redirect_uri"].clone(),
                resource: params["resource"].clone(),
            },
        );
        let iss = if state.wrong_iss {
            "http://127.0.0.1:1".to_string()
        } else {
            issuer
        };
        let location = format!(
            "{}?{}",
            params["redirect_uri"],
            form(&[("code", &code), ("state", &params["state"]), ("iss", &iss)])
        );
        return Response::builder()
            .status(302)
            .header("location", location)
            .body(Full::new(Bytes::new()))
            .expect("response");
    }
    if path != "/token" || parts.method != "POST" {
        return json_reply(404, json!({"error": "not_found"}));
    }
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{STAND_IN_CLIENT}:{STAND_IN_SECRET}"))
    );
    let refuse = |state: &mut StandInState, status: u16, error: &str| {
        state.refusals.push(error.to_string());
        json_reply(status, json!({"error": error}))
    };
    let params: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let basic = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let public = basic.is_none()
        && state.public_client
        && params.get("client_id").map(String::as_str) == Some(STAND_IN_CLIENT);
    if basic != Some(expected.as_str()) && !public {
        return refuse(&mut state, 401, "invalid_client");
    }
    let resource = match params.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some(issued) = params.get("code").and_then(|c| state.codes.remove(c)) else {
                return refuse(&mut state, 400, "invalid_grant");
            };
            let verifier = params.get("code_verifier").cloned().unwrap_or_default();
            let challenge = URL_SAFE_NO_PAD
                .encode(mcp_auth_gateway::auth::api_key::sha256(verifier.as_bytes()));
            if challenge != issued.challenge
                || params.get("redirect_uri") != Some(&issued.redirect_uri)
                || params.get("resource") != Some(&issued.resource)
            {
                return refuse(&mut state, 400, "invalid_grant");
            }
            issued.resource
        }
        Some("refresh_token") => {
            if state.refuse_refresh {
                return refuse(&mut state, 400, "invalid_grant");
            }
            if state.fail_refresh {
                return refuse(&mut state, 500, "server_error");
            }
            let Some(resource) = params
                .get("refresh_token")
                .and_then(|t| state.refresh_tokens.remove(t))
            else {
                return refuse(&mut state, 400, "invalid_grant");
            };
            if params.get("resource") != Some(&resource) {
                return refuse(&mut state, 400, "invalid_target");
            }
            resource
        }
        _ => return refuse(&mut state, 400, "unsupported_grant_type"),
    };
    state.grants.push(params["grant_type"].clone());
    let n = state.grants.len();
    let mut answer = json!({
        "access_token": format!("at-{n}"),
        "token_type": "Bearer",
        "expires_in": state.expires_in,
    });
    if !state.no_refresh_tokens {
        let refresh = format!("rt-{n}");
        state.refresh_tokens.insert(refresh.clone(), resource);
        answer["refresh_token"] = json!(refresh);
    }
    json_reply(200, answer)
}

// ---------------------------------------------------------------------------------------
// The gateway under test, the browsers and the MCP client.

/// `[authorization_server]` of the gateway under test: users alice, carol and dave, and
/// the key that seals users' upstream tokens.
fn authorization_server_toml(dir: &Path) -> String {
    let key = dir.join("token-key");
    std::fs::write(&key, format!("{}\n", URL_SAFE_NO_PAD.encode([7u8; 32]))).expect("key");
    let machine = mcp_auth_gateway::auth::api_key::format_hash(
        &mcp_auth_gateway::auth::api_key::sha256(MACHINE_SECRET.as_bytes()),
    );
    format!(
        "[authorization_server]\ndatabase = \"{}\"\ntoken_encryption_key_file = \"{}\"\n\n{}\n\
         [[authorization_server.clients]]\nclient_id = \"{MACHINE}\"\nsecret_hash = \"{machine}\"\n\
         grant_types = [\"client_credentials\"]\n",
        dir.join("gateway.db").display(),
        key.display(),
        users(&["alice", "carol", "dave"]),
    )
}

/// A machine client of the gateway (`client_credentials`).
const MACHINE: &str = "robot";
const MACHINE_SECRET: &str = "robot-secret-4b1d";

/// The gateway under test, its registered MCP client, and the browsers.
struct Stack {
    gateway: TestGateway,
    client_id: String,
    /// The upstream authorization server's address (the upstream gateway or the stand-in).
    upstream_as: SocketAddr,
    /// One per person and server: both servers name their cookie the same.
    browsers: HashMap<String, Browser>,
    /// The database's directory when the stack owns it; removed after the gateway stops.
    dir: Option<common::TempDir>,
}

/// What a sign-in did: the steps (`gateway login`, `upstream /authorize`, …) and where it
/// ended: the redirect to the MCP client, or the last page.
struct SignIn {
    steps: Vec<String>,
    location: Option<String>,
    last: Answer,
}

impl SignIn {
    fn code(&self) -> String {
        let location = self.location.as_deref().unwrap_or_else(|| {
            panic!(
                "no redirect to the client; steps {:?}, last {}: {}",
                self.steps, self.last.status, self.last.body
            )
        });
        let params = query(location);
        assert_eq!(
            params.get("state").map(String::as_str),
            Some("xyz"),
            "{location}"
        );
        params
            .get("code")
            .unwrap_or_else(|| panic!("no code: {location}"))
            .clone()
    }
}

impl Stack {
    async fn start(toml: &str, upstream_as: SocketAddr) -> Stack {
        let gateway = TestGateway::start(toml).await;
        let client_id = oauth::register_public(gateway.addr, REDIRECT).await;
        Stack {
            gateway,
            client_id,
            upstream_as,
            browsers: HashMap::new(),
            dir: None,
        }
    }

    /// Which server a URL is on: the MCP client, the upstream's authorization server, or
    /// the gateway (its public URL `http://127.0.0.1` has no port).
    fn host_of(&self, url: &url::Url) -> (&'static str, SocketAddr) {
        match url.port() {
            Some(port) if port == self.upstream_as.port() => ("upstream", self.upstream_as),
            None => ("gateway", self.gateway.addr),
            Some(port) if port == self.gateway.addr.port() => ("gateway", self.gateway.addr),
            _ => panic!("a redirect to an unknown server: {url}"),
        }
    }

    fn browser(&mut self, host: &str, person: &str) -> &mut Browser {
        self.browsers.entry(format!("{host} {person}")).or_default()
    }

    /// Plays the browser of `person` from the gateway's authorize endpoint until the
    /// redirect to the MCP client: signs in as `person` at the gateway and as
    /// `upstream_user` at the upstream gateway, approves at the gateway and answers
    /// `upstream_decision` there.
    async fn sign_in(
        &mut self,
        route: &str,
        person: &str,
        upstream_user: &str,
        upstream_decision: &str,
        challenge: &str,
    ) -> SignIn {
        let authorize = format!(
            "/authorize?{}",
            form(&[
                ("response_type", "code"),
                ("client_id", &self.client_id),
                ("redirect_uri", REDIRECT),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
                ("state", "xyz"),
                ("resource", &format!("http://127.0.0.1{route}")),
            ])
        );
        let mut steps = Vec::new();
        let (mut host, mut addr) = ("gateway", self.gateway.addr);
        let mut answer = self.browser(host, person).get(addr, &authorize).await;
        for _ in 0..20 {
            let page =
                |id: &str| answer.status == 200 && answer.body.contains(&format!("id=\"{id}\""));
            let fields = |answer: &Answer| {
                (
                    hidden(&answer.body, "request").expect("request field"),
                    hidden(&answer.body, "csrf").expect("csrf field"),
                )
            };
            if page("login") {
                steps.push(format!("{host} login"));
                let username = if host == "gateway" {
                    person
                } else {
                    upstream_user
                };
                let (request, csrf) = fields(&answer);
                let body = form(&[
                    ("request", &request),
                    ("csrf", &csrf),
                    ("username", username),
                    ("password", PASSWORD),
                ]);
                answer = self
                    .browser(host, person)
                    .post_form(addr, "/login", &body)
                    .await;
            } else if page("consent") {
                steps.push(format!("{host} consent"));
                let decision = if host == "gateway" {
                    "approve"
                } else {
                    upstream_decision
                };
                let (request, csrf) = fields(&answer);
                let body = form(&[
                    ("request", &request),
                    ("csrf", &csrf),
                    ("decision", decision),
                ]);
                answer = self
                    .browser(host, person)
                    .post_form(addr, "/consent", &body)
                    .await;
            } else if matches!(answer.status.as_u16(), 302 | 303) {
                let location = answer.header("location").expect("location").to_string();
                if location.starts_with(REDIRECT) {
                    return SignIn {
                        steps,
                        location: Some(location),
                        last: answer,
                    };
                }
                let url = url::Url::parse(&location).expect("absolute location");
                (host, addr) = self.host_of(&url);
                steps.push(format!("{host} {}", url.path()));
                let path = match url.query() {
                    Some(q) => format!("{}?{q}", url.path()),
                    None => url.path().to_string(),
                };
                answer = self.browser(host, person).get(addr, &path).await;
            } else {
                return SignIn {
                    steps,
                    location: None,
                    last: answer,
                };
            }
        }
        panic!("no end after 20 steps: {steps:?}");
    }

    /// The code → tokens at the gateway.
    async fn redeem(&self, code: &str, verifier: &str, route: &str) -> Value {
        let answer = post_form(
            self.gateway.addr,
            "/token",
            &form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
                ("client_id", &self.client_id),
                ("resource", &format!("http://127.0.0.1{route}")),
            ]),
            &[],
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()
    }

    /// Signs in, redeems the code: the gateway's tokens.
    async fn tokens(
        &mut self,
        route: &str,
        person: &str,
        upstream_user: &str,
    ) -> (Value, Vec<String>) {
        let (verifier, challenge) = pkce();
        let signed_in = self
            .sign_in(route, person, upstream_user, "approve", &challenge)
            .await;
        let code = signed_in.code();
        (self.redeem(&code, &verifier, route).await, signed_in.steps)
    }

    /// A `tools/list` through the gateway with its access token.
    async fn call(&self, route: &str, tokens: &Value) -> Answer {
        let token = tokens["access_token"].as_str().expect("access token");
        post_json(
            self.gateway.addr,
            route,
            &[("authorization", &format!("Bearer {token}"))],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        )
        .await
    }

    async fn refresh(&self, tokens: &Value) -> Answer {
        post_form(
            self.gateway.addr,
            "/token",
            &form(&[
                ("grant_type", "refresh_token"),
                (
                    "refresh_token",
                    tokens["refresh_token"].as_str().expect("refresh token"),
                ),
                ("client_id", &self.client_id),
            ]),
            &[],
        )
        .await
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// Gateway in front of a gateway.

/// The gateway under test in front of the upstream gateway: `/mcp` discovers everything
/// and registers; `/pre` uses the client registered there beforehand.
fn chained_toml(dir: &Path, upstream: &GatewayProcess) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "{mcp}"
scopes_supported = ["mcp:tools"]

[routes.upstream_token.oauth]

[[routes]]
id = "pre"
path = "/pre"
upstream = "{mcp}"
scopes_supported = ["mcp:tools"]

[routes.upstream_token.oauth]
client_id = "gateway-a"

{as_section}
"#,
        mcp = upstream.url("/mcp"),
        as_section = authorization_server_toml(dir),
    )
}

#[tokio::test]
async fn each_user_connects_once_to_the_upstreams_authorization_server_and_is_themselves_there() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("connect-chained");
    let echo = Upstream::start().await;
    let upstream = start_upstream_gateway(&dir, &echo).await;
    let mut stack = Stack::start(&chained_toml(&dir, &upstream), upstream.addr).await;

    // Alice: signs in at the gateway, allows the client, then is sent to the upstream's
    // authorization server (discovered, registered there), signs in as alice there and
    // allows the gateway; back at the gateway, the client gets its code.
    let (alice, steps) = stack.tokens("/mcp", "alice", "alice").await;
    assert_eq!(
        steps,
        strings(&[
            "gateway login",
            "gateway consent",
            "upstream /authorize",
            "upstream login",
            "upstream consent",
            "gateway /connect/mcp/callback",
        ])
    );
    let answer = stack.call("/mcp", &alice).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = echo.last();
    assert_eq!(seen.header("x-user-id"), Some("local:alice"));
    // The upstream gateway passed on neither its token nor the gateway's.
    assert_eq!(seen.header("authorization"), None);

    // Carol connects as bob: the upstream sees bob for carol's requests, alice for alice's.
    let (carol, _) = stack.tokens("/mcp", "carol", "bob").await;
    assert_eq!(stack.call("/mcp", &carol).await.status, 200);
    assert_eq!(echo.last().header("x-user-id"), Some("local:bob"));
    assert_eq!(stack.call("/mcp", &alice).await.status, 200);
    assert_eq!(echo.last().header("x-user-id"), Some("local:alice"));

    // Alice again (another authorization by the same browser): already signed in and
    // connected, so no trip to the upstream.
    let (again, steps) = stack.tokens("/mcp", "alice", "alice").await;
    assert_eq!(steps, strings(&["gateway consent"]));
    assert_eq!(stack.call("/mcp", &again).await.status, 200);
    assert_eq!(echo.last().header("x-user-id"), Some("local:alice"));
    // The gateway's refresh works while the connection holds.
    assert_eq!(stack.refresh(&again).await.status, 200);

    // The route with a client registered beforehand: a connection of its own. The upstream
    // already knows alice's browser, so only its consent page shows.
    let (pre, steps) = stack.tokens("/pre", "alice", "alice").await;
    assert_eq!(
        steps,
        strings(&[
            "gateway consent",
            "upstream /authorize",
            "upstream consent",
            "gateway /connect/pre/callback",
        ])
    );
    assert_eq!(stack.call("/pre", &pre).await.status, 200);
    assert_eq!(echo.last().header("x-user-id"), Some("local:alice"));

    // Dave refuses at the upstream: the client gets access_denied, not a code.
    let (_, challenge) = pkce();
    let refused = stack
        .sign_in("/mcp", "dave", "bob", "deny", &challenge)
        .await;
    let location = refused.location.expect("redirected to the client");
    let params = query(&location);
    assert_eq!(params["error"], "access_denied", "{location}");
    assert_eq!(params["state"], "xyz");
    assert!(!params.contains_key("code"));
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn the_gateway_publishes_its_client_metadata_document() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("connect-cimd");
    let echo = Upstream::start().await;
    let upstream = start_upstream_gateway(&dir, &echo).await;
    let stack = Stack::start(&chained_toml(&dir, &upstream), upstream.addr).await;
    // One document per route, naming that route's callback only: no document allows an
    // upstream to send a code to another route's callback.
    for route in ["mcp", "pre"] {
        let path = format!("/.well-known/oauth-client-metadata/{route}");
        let answer = get(stack.gateway.addr, &path, &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer
            .header("cache-control")
            .is_some_and(|v| v.starts_with("public")));
        let document = answer.json();
        let client_id = format!("http://127.0.0.1{path}");
        assert_eq!(document["client_id"], client_id.as_str());
        assert_eq!(
            document["redirect_uris"],
            json!([format!("http://127.0.0.1/connect/{route}/callback")])
        );
        assert_eq!(
            document["client_name"],
            "MCP gateway at 127.0.0.1 for 127.0.0.1"
        );
        assert_eq!(document["token_endpoint_auth_method"], "none");
        assert_eq!(
            document["grant_types"],
            json!(["authorization_code", "refresh_token"])
        );
        // What the built-in authorization server itself demands of such documents.
        let parsed = mcp_auth_gateway::authorization_server::cimd::parse_document(
            answer.body.as_bytes(),
            &client_id,
        );
        assert!(parsed.is_ok(), "{parsed:?}");
    }
    for path in [
        "/.well-known/oauth-client-metadata",
        "/.well-known/oauth-client-metadata/nope",
    ] {
        let answer = get(stack.gateway.addr, path, &[]).await;
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
    }
    stack.gateway.shutdown().await;

    // Without a route that connects, there is no document.
    let echo = Upstream::start().await;
    let plain = TestGateway::start(&format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "{}"

{}
"#,
        echo.url("/mcp"),
        authorization_server_toml(&dir),
    ))
    .await;
    let answer = get(plain.addr, "/.well-known/oauth-client-metadata/mcp", &[]).await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    plain.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// The stand-in: refreshes, refusals, callback defences.

fn stand_in_toml(dir: &Path, stand_in: &StandIn, echo: &Upstream) -> String {
    let secret = dir.join("client-secret");
    std::fs::write(&secret, format!("{STAND_IN_SECRET}\n")).expect("secret");
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

{api_key}

[[routes]]
id = "tools"
path = "/tools"
upstream = "{tools}"
scopes_supported = ["mcp:tools"]
verifiers = ["authorization_server", "api_keys"]

[routes.upstream_token.oauth]
authorization_server = "{issuer}"
client_id = "{STAND_IN_CLIENT}"
client_secret_file = "{secret}"
scopes = ["tools:read"]

{as_section}
"#,
        api_key = common::gateway::api_key_toml("robot", &[]),
        tools = echo.url("/tools"),
        issuer = stand_in.issuer(),
        secret = secret.display(),
        as_section = authorization_server_toml(dir),
    )
}

/// The stand-in, the recording upstream behind `/tools`, and the gateway between them.
async fn stand_in_stack(name: &str) -> (StandIn, Upstream, Stack) {
    let dir = oauth::temp_dir(name);
    let stand_in = StandIn::start().await;
    let echo = Upstream::start().await;
    let mut stack = Stack::start(&stand_in_toml(&dir, &stand_in, &echo), stand_in.addr).await;
    stack.dir = Some(dir);
    (stand_in, echo, stack)
}

#[tokio::test]
async fn upstream_tokens_are_refreshed_and_a_refused_refresh_makes_the_user_connect_again() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (stand_in, echo, mut stack) = stand_in_stack("connect-refresh").await;

    // Tokens that expire within the refresh margin: refreshed before every request.
    stand_in.with(|s| s.expires_in = 20);
    let (tokens, steps) = stack.tokens("/tools", "alice", "-").await;
    assert_eq!(
        steps,
        strings(&[
            "gateway login",
            "gateway consent",
            "upstream /authorize",
            "gateway /connect/tools/callback",
        ])
    );
    assert_eq!(stand_in.with(|s| s.grants.clone()), ["authorization_code"]);
    let answer = stack.call("/tools", &tokens).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(echo.last().header("authorization"), Some("Bearer at-2"));
    assert_eq!(stack.call("/tools", &tokens).await.status, 200);
    assert_eq!(echo.last().header("authorization"), Some("Bearer at-3"));
    assert_eq!(
        stand_in.with(|s| s.grants.clone()),
        ["authorization_code", "refresh_token", "refresh_token"]
    );

    // An outage at the upstream's server: 503 for now, and the connection is kept.
    stand_in.with(|s| s.fail_refresh = true);
    let outage = stack.call("/tools", &tokens).await;
    assert_eq!(outage.status, 503, "{}", outage.body);
    stand_in.with(|s| s.fail_refresh = false);
    assert_eq!(stack.call("/tools", &tokens).await.status, 200);
    assert_eq!(echo.last().header("authorization"), Some("Bearer at-4"));

    // The upstream's server refuses to refresh (the user revoked the gateway there): the
    // token is forgotten, the request gets 401 invalid_token, and the gateway's own refresh
    // is refused, so that the client signs in again — and the user reconnects on the way.
    stand_in.with(|s| s.refuse_refresh = true);
    let refused = stack.call("/tools", &tokens).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused
        .header("www-authenticate")
        .is_some_and(|v| v.contains("invalid_token")));
    assert!(refused.json()["error_description"]
        .as_str()
        .is_some_and(|d| d.contains("has not connected")));
    let refresh = stack.refresh(&tokens).await;
    assert_eq!(refresh.status, 400, "{}", refresh.body);
    assert_eq!(refresh.json()["error"], "invalid_grant");
    stand_in.with(|s| {
        s.refuse_refresh = false;
        s.expires_in = 3600;
    });
    let (tokens, steps) = stack.tokens("/tools", "alice", "-").await;
    assert_eq!(
        steps,
        strings(&[
            "gateway consent",
            "upstream /authorize",
            "gateway /connect/tools/callback",
        ])
    );
    assert_eq!(stack.call("/tools", &tokens).await.status, 200);
    let token = echo.last().header("authorization").map(str::to_string);
    assert!(token.is_some_and(|t| t.starts_with("Bearer at-")));
    // A long-lived token is used as it is, not refreshed.
    let grants = stand_in.with(|s| s.grants.len());
    assert_eq!(stack.call("/tools", &tokens).await.status, 200);
    assert_eq!(stand_in.with(|s| s.grants.len()), grants);
    // An API key holds no connection: 401, and nothing reaches the upstream.
    let before = echo.requests().len();
    let robot = post_json(
        stack.gateway.addr,
        "/tools",
        &[("authorization", &format!("Bearer {}", common::API_KEY))],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(robot.status, 401, "{}", robot.body);
    // Nor does a machine client of the gateway: its token speaks for no user.
    let machine = post_form(
        stack.gateway.addr,
        "/token",
        &form(&[
            ("grant_type", "client_credentials"),
            ("resource", "http://127.0.0.1/tools"),
        ]),
        &[(
            "authorization",
            &format!(
                "Basic {}",
                STANDARD.encode(format!("{MACHINE}:{MACHINE_SECRET}"))
            ),
        )],
    )
    .await;
    assert_eq!(machine.status, 200, "{}", machine.body);
    let answer = stack.call("/tools", &machine.json()).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(answer.json()["error_description"]
        .as_str()
        .is_some_and(|d| d.contains("has not connected")));
    assert_eq!(echo.requests().len(), before);
    // The stand-in refused only what the test made it refuse.
    assert_eq!(
        stand_in.with(|s| s.refusals.clone()),
        ["server_error", "invalid_grant"]
    );
    stack.gateway.shutdown().await;
}

/// Two replicas sharing Redis refresh a user's upstream token one at a time. The stand-in
/// rotates refresh tokens (each works once) and its tokens expire within the refresh margin,
/// so every request refreshes: requests arriving together at both replicas would otherwise
/// both spend the same refresh token, and the replica refused would forget the user's
/// connection. A claim left by a stopped replica delays requests (503 after 10 s); a
/// client going away mid-refresh does not cut the refresh off.
#[tokio::test]
async fn replicas_refresh_a_users_upstream_token_one_at_a_time() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(redis) = common::redis::RedisServer::start("connect-replicas").await else {
        return;
    };
    let dir = oauth::temp_dir("connect-replicas");
    let stand_in = StandIn::start().await;
    let echo = Upstream::start().await;
    let toml = format!(
        "{}\n[redis]\nurl = \"{}\"\nkey_prefix = \"replicas:\"\n",
        stand_in_toml(&dir, &stand_in, &echo),
        redis.url()
    );
    // Replica A in this process, replica B a process of its own: the same configuration
    // but for its port.
    let mut stack = Stack::start(&toml, stand_in.addr).await;
    let port_b = free_port();
    let config_b = dir.join("replica-b.toml");
    std::fs::write(
        &config_b,
        toml.replace("127.0.0.1:0", &format!("127.0.0.1:{port_b}")),
    )
    .expect("write config");
    let b = GatewayProcess::start(&config_b, port_b, &dir.join("b.log"), &[]).await;

    // Short-lived tokens (refreshed for every request), each refresh slow enough that
    // requests sent together at both replicas meet.
    stand_in.with(|s| s.expires_in = 20);
    let (tokens, _) = stack.tokens("/tools", "alice", "-").await;
    stand_in.with(|s| s.refresh_delay = std::time::Duration::from_millis(500));
    let bearer = format!(
        "Bearer {}",
        tokens["access_token"].as_str().expect("access token")
    );
    let call = |addr: SocketAddr| {
        let bearer = bearer.clone();
        async move {
            post_json(
                addr,
                "/tools",
                &[("authorization", &bearer)],
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            )
            .await
        }
    };
    const ROUNDS: usize = 8;
    for round in 0..ROUNDS {
        let (at_a, at_b) = tokio::join!(call(stack.gateway.addr), call(b.addr));
        for (replica, answer) in [("A", &at_a), ("B", &at_b)] {
            assert_eq!(
                answer.status,
                200,
                "round {round}, replica {replica}: {}\nB's log:\n{}",
                answer.body,
                std::fs::read_to_string(&b.log).unwrap_or_default()
            );
        }
    }
    // Every refresh spent a live refresh token: none was refused, none used twice. (Most
    // rounds refresh once, the other replica using the result; one that came late to its
    // round refreshes again — the cut-off case below shows the waiting deterministically.)
    assert_eq!(stand_in.with(|s| s.refusals.clone()), Vec::<String>::new());
    let refreshes = stand_in.with(|s| {
        s.grants
            .iter()
            .filter(|grant| *grant == "refresh_token")
            .count()
    });
    assert!((ROUNDS..=2 * ROUNDS).contains(&refreshes), "{refreshes}");
    stand_in.with(|s| s.refresh_delay = std::time::Duration::ZERO);

    // A replica that stopped mid-refresh leaves its claim behind: a request waits for the
    // refreshed token up to 10 s, then is answered 503; once the claim is gone, the next
    // request refreshes.
    let mut raw = redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let kept: Vec<String> = redis::cmd("KEYS")
        .arg("replicas:provider_token:*")
        .query_async(&mut raw)
        .await
        .expect("KEYS");
    assert_eq!(kept.len(), 1, "{kept:?}");
    let claim = kept[0].replace(":provider_token:", ":provider_refresh:");
    let _: () = redis::cmd("SET")
        .arg(&claim)
        .arg("a-stopped-replica")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut raw)
        .await
        .expect("SET");
    let waited = std::time::Instant::now();
    let stuck = call(stack.gateway.addr).await;
    assert_eq!(stuck.status, 503, "{}", stuck.body);
    assert_eq!(stuck.json()["error"], "temporarily_unavailable");
    assert!(waited.elapsed() >= std::time::Duration::from_secs(9));
    let _: () = redis::cmd("DEL")
        .arg(&claim)
        .query_async(&mut raw)
        .await
        .expect("DEL");
    assert_eq!(call(b.addr).await.status, 200);

    // A client that goes away while its request waits on a slow refresh: the refresh runs
    // to its end, its rotated refresh token is kept and its claim released; a request at
    // the other replica meanwhile waits for it and uses its result.
    stand_in.with(|s| s.refresh_delay = std::time::Duration::from_millis(1500));
    let before = stand_in.with(|s| s.grants.len());
    cut_off(stack.gateway.addr, &bearer).await;
    stand_in.with(|s| s.refresh_delay = std::time::Duration::ZERO);
    let after_cut = call(b.addr).await;
    assert_eq!(after_cut.status, 200, "{}", after_cut.body);
    assert_eq!(stand_in.with(|s| s.grants.len()), before + 1);
    assert_eq!(stand_in.with(|s| s.refusals.clone()), Vec::<String>::new());
    drop(b);
    stack.gateway.shutdown().await;
}

/// Alice's tokens, her upstream tokens short-lived (refreshed before every request), and
/// her `Authorization` value.
async fn short_lived_tokens(stand_in: &StandIn, stack: &mut Stack) -> (Value, String) {
    stand_in.with(|s| s.expires_in = 20);
    let (tokens, _) = stack.tokens("/tools", "alice", "-").await;
    let bearer = format!(
        "Bearer {}",
        tokens["access_token"].as_str().expect("access token")
    );
    (tokens, bearer)
}

/// A request whose client goes away after 300 ms, while the gateway still waits on a slow
/// refresh. A GET (an SSE stream being opened): nothing is left to read, so the gateway
/// sees the client go at once.
async fn cut_off(gateway: SocketAddr, bearer: &str) {
    let cut = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        get(
            gateway,
            "/tools",
            &[("authorization", bearer), ("accept", "text/event-stream")],
        ),
    )
    .await;
    assert!(cut.is_err(), "the request was meant to be cut off");
}

/// One gateway (SQLite): a refresh whose only request went away still runs to its end, and
/// a request arriving meanwhile waits for it instead of spending the same refresh token.
#[tokio::test]
async fn a_refresh_left_by_its_request_ends_and_serves_the_next_one() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (stand_in, echo, mut stack) = stand_in_stack("connect-cut-refresh").await;
    let (tokens, bearer) = short_lived_tokens(&stand_in, &mut stack).await;
    stand_in.with(|s| s.refresh_delay = std::time::Duration::from_millis(1500));
    let before = stand_in.with(|s| s.grants.len());
    cut_off(stack.gateway.addr, &bearer).await;
    let next = stack.call("/tools", &tokens).await;
    assert_eq!(next.status, 200, "{}", next.body);
    assert_eq!(stand_in.with(|s| s.grants.len()), before + 1);
    assert_eq!(stand_in.with(|s| s.refusals.clone()), Vec::<String>::new());
    let sent = echo.last().header("authorization").map(str::to_string);
    assert_eq!(sent, Some(format!("Bearer at-{}", before + 1)));
    stack.gateway.shutdown().await;
}

/// Shutdown waits for a refresh still running: its new refresh token is stored, and the
/// next gateway on the same database refreshes with it.
#[tokio::test]
async fn shutdown_lets_a_running_refresh_finish_and_store_its_token() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (stand_in, echo, mut stack) = stand_in_stack("connect-shutdown-refresh").await;
    let (_, bearer) = short_lived_tokens(&stand_in, &mut stack).await;
    stand_in.with(|s| s.refresh_delay = std::time::Duration::from_millis(1500));
    let before = stand_in.with(|s| s.grants.len());
    cut_off(stack.gateway.addr, &bearer).await;
    let dir = stack.dir.take().expect("the stack's directory");
    stack.gateway.shutdown().await;
    stand_in.with(|s| s.refresh_delay = std::time::Duration::ZERO);

    let again = TestGateway::start(&stand_in_toml(&dir, &stand_in, &echo)).await;
    let answer = post_json(
        again.addr,
        "/tools",
        &[("authorization", &bearer)],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(stand_in.with(|s| s.refusals.clone()), Vec::<String>::new());
    let sent = echo.last().header("authorization").map(str::to_string);
    assert_eq!(sent, Some(format!("Bearer at-{}", before + 2)));
    again.shutdown().await;
}

/// The upstream is the stand-in itself (its `/tools`), whose protected-resource metadata
/// names the authorization server; the gateway is a public client there.
fn discovered_toml(dir: &Path, stand_in: &StandIn) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

[[routes]]
id = "tools"
path = "/tools"
upstream = "{}/tools"

[routes.upstream_token.oauth]
client_id = "{STAND_IN_CLIENT}"

{}
"#,
        stand_in.issuer(),
        authorization_server_toml(dir),
    )
}

#[tokio::test]
async fn a_refresh_token_goes_only_to_the_server_that_issued_it() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("connect-pinned");
    let first = StandIn::start().await;
    let second = StandIn::start().await;
    for stand_in in [&first, &second] {
        stand_in.with(|s| {
            s.public_client = true;
            s.expires_in = 20;
        });
    }
    let toml = discovered_toml(&dir, &first);
    let mut stack = Stack::start(&toml, first.addr).await;
    // Discovered from the upstream's metadata: its scopes asked for, the token used there.
    let (tokens, steps) = stack.tokens("/tools", "alice", "-").await;
    assert!(
        steps.contains(&"upstream /authorize".to_string()),
        "{steps:?}"
    );
    assert_eq!(stack.call("/tools", &tokens).await.status, 200);
    assert_eq!(first.with(|s| s.calls.clone()), ["Bearer at-2"]);

    // The upstream now names another server (seen after a restart: discovery is cached).
    first.with(|s| s.names_issuer = Some(second.issuer()));
    stack.gateway.shutdown().await;
    stack.gateway = TestGateway::start(&toml).await;
    let refused = stack.call("/tools", &tokens).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    // The refresh token went nowhere: neither to the new server nor to the old one.
    assert!(second.with(|s| s.grants.is_empty() && s.refusals.is_empty()));
    assert_eq!(first.with(|s| s.grants.len()), 2);
    assert_eq!(first.with(|s| s.calls.len()), 1);
    assert_eq!(
        stack.refresh(&tokens).await.json()["error"],
        "invalid_grant"
    );
    stack.gateway.shutdown().await;
}

/// An access token about to expire with no refresh token is of no more use: forgotten, and
/// the user reconnects at their next sign-in.
#[tokio::test]
async fn a_token_that_cannot_be_renewed_is_forgotten() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (stand_in, echo, mut stack) = stand_in_stack("connect-no-refresh").await;
    stand_in.with(|s| {
        s.no_refresh_tokens = true;
        s.expires_in = 20;
    });
    let (tokens, _) = stack.tokens("/tools", "alice", "-").await;
    let answer = stack.call("/tools", &tokens).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(echo.requests().is_empty());
    assert_eq!(
        stack.refresh(&tokens).await.json()["error"],
        "invalid_grant"
    );
    stand_in.with(|s| s.expires_in = 3600);
    let (tokens, steps) = stack.tokens("/tools", "alice", "-").await;
    assert!(
        steps.contains(&"upstream /authorize".to_string()),
        "{steps:?}"
    );
    assert_eq!(stack.call("/tools", &tokens).await.status, 200);
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn the_connect_callback_refuses_replays_other_browsers_and_a_mixed_up_issuer() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (stand_in, echo, mut stack) = stand_in_stack("connect-callback").await;

    // A wrong iss (RFC 9207 mix-up): no token; the client is told (server_error).
    stand_in.with(|s| s.wrong_iss = true);
    let (_, challenge) = pkce();
    let mixed = stack
        .sign_in("/tools", "alice", "-", "approve", &challenge)
        .await;
    let location = mixed.location.expect("the client is told");
    let params = query(&location);
    assert_eq!(params["error"], "server_error", "{location}");
    assert_eq!(params["state"], "xyz");
    assert!(!params.contains_key("code"));
    assert_eq!(
        stand_in.with(|s| s.grants.len()),
        0,
        "the code was not redeemed"
    );
    stand_in.with(|s| s.wrong_iss = false);

    // Capture a genuine callback without following it.
    let (_, challenge) = pkce();
    let authorize = format!(
        "/authorize?{}",
        form(&[
            ("response_type", "code"),
            ("client_id", &stack.client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "xyz"),
            ("resource", "http://127.0.0.1/tools"),
        ])
    );
    let gateway = stack.gateway.addr;
    let browser = stack.browser("gateway", "alice");
    let consent = browser.get(gateway, &authorize).await;
    assert!(consent.body.contains("id=\"consent\""), "{}", consent.body);
    let body = form(&[
        (
            "request",
            &hidden(&consent.body, "request").expect("request"),
        ),
        ("csrf", &hidden(&consent.body, "csrf").expect("csrf")),
        ("decision", "approve"),
    ]);
    let to_upstream = browser.post_form(gateway, "/consent", &body).await;
    assert_eq!(to_upstream.status, 303, "{}", to_upstream.body);
    let location = to_upstream
        .header("location")
        .expect("location")
        .to_string();
    let sent = query(&location);
    assert_eq!(sent["resource"], echo.url("/tools"));
    assert_eq!(
        sent["redirect_uri"],
        "http://127.0.0.1/connect/tools/callback"
    );
    let upstream_path = location
        .strip_prefix(&stand_in.issuer())
        .expect("to the stand-in");
    let back = get(stand_in.addr, upstream_path, &[]).await;
    let callback = back.header("location").expect("callback").to_string();
    let callback_path = callback
        .strip_prefix("http://127.0.0.1")
        .expect("to the gateway");

    // Another browser (no session, or another person's): refused, and the state is spent.
    let mut stranger = Browser::default();
    let refused = stranger.get(gateway, callback_path).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("another browser"));
    let replay = stack
        .browser("gateway", "alice")
        .get(gateway, callback_path)
        .await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(replay.body.contains("Sign-in expired"));

    // Unknown route, or a state for another route: nothing happens.
    let unknown = get(gateway, "/connect/nope/callback?state=x&code=y", &[]).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let no_state = get(gateway, "/connect/tools/callback?code=y", &[]).await;
    assert_eq!(no_state.status, 400, "{}", no_state.body);
    assert_eq!(stand_in.with(|s| s.grants.len()), 0);
    stack.gateway.shutdown().await;
}

#[tokio::test]
async fn an_unusable_upstream_authorization_server_is_an_error_for_the_client_not_a_code() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = oauth::temp_dir("connect-unreachable");
    let echo = Upstream::start().await;
    // The upstream serves no protected-resource metadata and none is configured.
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

[[routes]]
id = "tools"
path = "/tools"
upstream = "{}"

[routes.upstream_token.oauth]

{}
"#,
        echo.url("/tools"),
        authorization_server_toml(&dir),
    );
    let mut stack = Stack::start(&toml, echo.addr).await;
    let (_, challenge) = pkce();
    let signed_in = stack
        .sign_in("/tools", "alice", "-", "approve", &challenge)
        .await;
    let location = signed_in.location.expect("the client is told");
    let params = query(&location);
    assert_eq!(params["error"], "temporarily_unavailable", "{location}");
    assert!(
        params["error_description"].contains(&echo.url("/tools")),
        "{location}"
    );
    assert!(!params.contains_key("code"));
    stack.gateway.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Configuration.

/// `check` names the redirect URI to register at the upstream's authorization server.
#[test]
fn check_prints_the_redirect_uri_of_each_connecting_route() {
    let dir = oauth::temp_dir("connect-check");
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "https://gw.example"

[[routes]]
id = "linear"
path = "/linear"
upstream = "https://mcp.linear.example/mcp"

[routes.upstream_token.oauth]
client_id = "registered-there"

{}
"#,
            authorization_server_toml(&dir)
        ),
    )
    .expect("write config");
    let output = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("route linear: users connect to the upstream's authorization server (discovered), redirect URI https://gw.example/connect/linear/callback"),
        "{stdout}"
    );
}

/// The example in docs/identity-providers.md ("Tokens from the upstream MCP server's own
/// authorization server") compiles as written, with the key from the variable it names.
#[test]
fn the_documented_example_compiles() {
    let doc =
        std::fs::read_to_string(common::external::repo_root().join("docs/identity-providers.md"))
            .expect("docs/identity-providers.md");
    let section = doc
        .find("### Tokens from the upstream MCP server's own authorization server")
        .expect("the section");
    let start =
        section + doc[section..].find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + doc[start..].find("```").expect("its end");
    let example = &doc[start..end];
    // Only this test reads this variable.
    std::env::set_var("TOKEN_ENCRYPTION_KEY", URL_SAFE_NO_PAD.encode([9u8; 32]));
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\npublic_url = \"https://gw.example\"\n\n{example}"
    );
    let config =
        config::from_toml_str(&toml, Path::new(".")).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let route = config.routes.iter().next().expect("a route");
    assert!(route.user_token.is_some());
}

fn config_error(toml: &str) -> String {
    let dir = PathBuf::from(".");
    match config::from_toml_str(toml, &dir) {
        Ok(_) => panic!("accepted:\n{toml}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn configuration_mistakes_are_reported_at_their_key_path() {
    let dir = oauth::temp_dir("connect-config");
    let with_route = |route_id: &str, token: &str| {
        format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

[[routes]]
id = "{route_id}"
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"

{token}

{}
"#,
            authorization_server_toml(&dir)
        )
    };
    let p = "routes[0].upstream_token";
    for (token, path, says) in [
        (
            "[routes.upstream_token]\nprovider = \"github\"\n[routes.upstream_token.oauth]\n",
            p.to_string(),
            "has both provider and [oauth]",
        ),
        (
            "[routes.upstream_token]\nheader = \"x-token\"\n",
            p.to_string(),
            "needs provider",
        ),
        (
            "[routes.upstream_token.oauth]\nclient_secret_env = \"X\"\n",
            format!("{p}.oauth.client_secret_env"),
            "needs the client_id",
        ),
        (
            "[routes.upstream_token.oauth]\nclient_id = \"gw\"\nclient_secret_file = \"s\"\n",
            format!("{p}.oauth.client_secret_env"),
            "set authorization_server",
        ),
        (
            "[routes.upstream_token.oauth]\nauthorization_server = \"ftp://auth.example\"\n",
            format!("{p}.oauth.authorization_server"),
            "https URL",
        ),
        (
            "[routes.upstream_token.oauth]\nresource = \"https://mcp.example/mcp#x\"\n",
            format!("{p}.oauth.resource"),
            "no query, fragment",
        ),
        (
            "[routes.upstream_token.oauth]\nscopes = [\"a b\"]\n",
            format!("{p}.oauth.scopes"),
            "not a scope",
        ),
    ] {
        let error = config_error(&with_route("mcp", token));
        assert!(error.contains(&path), "{path} not in: {error}");
        assert!(error.contains(says), "{says:?} not in: {error}");
    }
    let error = config_error(&with_route("a/b", "[routes.upstream_token.oauth]\n"));
    assert!(error.contains("callback URL"), "{error}");

    // Without [authorization_server], or without the sealing key.
    let bare = r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"

[routes.upstream_token.oauth]
"#;
    let error = config_error(bare);
    assert!(error.contains("needs [authorization_server]"), "{error}");
    let no_key = with_route("mcp", "[routes.upstream_token.oauth]\n")
        .replace("token_encryption_key_file", "# token_encryption_key_file");
    let error = config_error(&no_key);
    assert!(error.contains("token_encryption_key"), "{error}");

    // A machine client named like a local user would speak for them (and use their
    // upstream tokens).
    let hash = mcp_auth_gateway::auth::api_key::format_hash(
        &mcp_auth_gateway::auth::api_key::sha256(b"machine-secret"),
    );
    let machine = with_route("mcp", "[routes.upstream_token.oauth]\n").replace(
        "[[authorization_server.users]]",
        &format!(
            "[[authorization_server.clients]]\nclient_id = \"local:alice\"\nsecret_hash = \"{hash}\"\ngrant_types = [\"client_credentials\"]\n\n[[authorization_server.users]]"
        ),
    );
    let error = config_error(&machine);
    assert!(
        error.contains("authorization_server.clients[0].client_id")
            && error.contains("also a local user's subject"),
        "{error}"
    );

    // The shortest configuration compiles.
    let fine = with_route("mcp", "[routes.upstream_token.oauth]\n");
    config::from_toml_str(&fine, &dir).expect("compiles");
}
