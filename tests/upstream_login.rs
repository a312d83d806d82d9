//! Login through GitHub at the built-in authorization server, end to end over real sockets.
//!
//! A GitHub stand-in on loopback plays github.com: the OAuth web flow's token endpoint and
//! the REST API. It is honest: it checks the client id and secret, the PKCE verifier against
//! the challenge it was shown at authorize time, the redirect URI, that codes are used once,
//! the Bearer token on every API call and the User-Agent GitHub insists on. The test plays
//! the person's browser (cookies included), GitHub's authorization page, and the MCP client.
//!
//! What it proves:
//! - an organisation member, a listed user and a team member get a code, then an access
//!   token whose subject is `github:<numeric id>` with the login, name, private email and
//!   groups; that token works on the gateway's route with that identity sent upstream;
//! - anyone else gets a 403 page naming the account, no code, and no signed-in session;
//! - the callback refuses another browser, a replayed, unknown or other provider's state,
//!   shows a provider's refusal escaped, and turns a refused code into a 502 page that
//!   (like the log) never shows the client secret; the start refuses a forged CSRF token;
//!   unknown providers are 404;
//! - the login page offers GitHub, and the password form only when local users exist;
//! - configuration mistakes are reported at their key path.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use common::http::{get, post_json, Answer};
use common::oauth::{self, form, hidden, pkce, post_form, query, Browser, PASSWORD};
use common::{TestGateway, Upstream};
use mcp_auth_gateway::config::{self, ConfigError};

/// One built-in authorization server per process: its keys are published process-wide, so
/// the tests of this file run their gateways one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ISSUER: &str = "http://127.0.0.1";
const RESOURCE: &str = "http://127.0.0.1/mcp";
/// The MCP client's redirect URI (never called: the test reads the `Location`).
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const GITHUB_CALLBACK: &str = "http://127.0.0.1/login/github/callback";
const CLIENT_ID: &str = "gh-client";
const CLIENT_SECRET: &str = "gh-secret-7c1e9d0a-must-never-be-shown";

// ---------------------------------------------------------------------------------------
// The GitHub stand-in.

/// A GitHub account as the REST API describes it.
#[derive(Clone, Debug)]
struct GitHubUser {
    id: u64,
    login: &'static str,
    name: Option<&'static str>,
    /// The public email on `/user`; `None` when private (then only in `/user/emails`).
    email: Option<&'static str>,
    emails: Vec<Value>,
    orgs: Vec<&'static str>,
    /// `(organisation, team slug)`.
    teams: Vec<(&'static str, &'static str)>,
}

impl GitHubUser {
    fn new(id: u64, login: &'static str) -> Self {
        GitHubUser {
            id,
            login,
            name: None,
            email: None,
            emails: Vec::new(),
            orgs: Vec::new(),
            teams: Vec::new(),
        }
    }
}

/// A member of `Acme` and its `Platform` team, with a private email.
fn mona() -> GitHubUser {
    GitHubUser {
        name: Some("Mona Lisa Octocat"),
        emails: vec![
            json!({"email": "mona@old.example", "primary": false, "verified": true}),
            json!({"email": "mona@acme.example", "primary": true, "verified": true}),
        ],
        orgs: vec!["Acme"],
        teams: vec![("Acme", "Platform")],
        ..GitHubUser::new(12345, "mona")
    }
}

/// What a code was issued for at authorize time.
struct Grant {
    user: GitHubUser,
    redirect_uri: String,
    code_challenge: String,
}

#[derive(Default)]
struct GitHubState {
    codes: HashMap<String, Grant>,
    tokens: HashMap<String, GitHubUser>,
    issued: u64,
    /// `METHOD path?query` of every request received.
    requests: Vec<String>,
    /// Token requests refused, by GitHub's error code.
    refusals: Vec<String>,
    /// Issue expiring user tokens with refresh tokens (as GitHub Apps do), this short-lived.
    expires_in: Option<u64>,
    refresh_tokens: HashMap<String, GitHubUser>,
}

struct FakeGitHub {
    addr: SocketAddr,
    state: Arc<Mutex<GitHubState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What GitHub's authorization page did: the code and where it sends the browser.
struct Authorized {
    /// Path and query of the gateway's callback (`code` and `state`).
    callback: String,
    state: String,
    code: String,
}

impl FakeGitHub {
    async fn start() -> FakeGitHub {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind github");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(GitHubState::default()));
        let served = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let state = served.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(serve(state, request).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeGitHub { addr, state, task }
    }

    fn web_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn api_url(&self) -> String {
        format!("http://{}/api/v3", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.state.lock().expect("lock").requests.clone()
    }

    fn token_requests(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with("POST /login/oauth/access_token"))
            .count()
    }

    /// From now on, user tokens expire after `secs` and come with a refresh token.
    fn issue_expiring_tokens(&self, secs: u64) {
        self.state.lock().expect("lock").expires_in = Some(secs);
    }

    /// The user a GitHub token belongs to.
    fn owner_of(&self, token: &str) -> Option<&'static str> {
        self.state
            .lock()
            .expect("lock")
            .tokens
            .get(token)
            .map(|u| u.login)
    }

    fn refusals(&self) -> Vec<String> {
        self.state.lock().expect("lock").refusals.clone()
    }

    /// Plays GitHub's authorization page: checks the request the gateway sent the browser
    /// with, "logs in" `user` and issues a code bound to the PKCE challenge and redirect URI.
    fn authorize(&self, location: &str, user: GitHubUser) -> Authorized {
        let endpoint = format!("{}/login/oauth/authorize?", self.web_url());
        assert!(location.starts_with(&endpoint), "{location}");
        let params = query(location);
        assert_eq!(params["response_type"], "code");
        assert_eq!(params["client_id"], CLIENT_ID);
        assert_eq!(params["redirect_uri"], GITHUB_CALLBACK);
        assert_eq!(params["scope"], "read:user user:email read:org");
        assert_eq!(params["code_challenge_method"], "S256");
        assert_eq!(params["code_challenge"].len(), 43, "{location}");
        assert!(params["state"].len() >= 22, "{location}");
        assert!(!params.contains_key("client_secret"));
        let mut state = self.state.lock().expect("lock");
        state.issued += 1;
        let code = format!("gh-code-{}-{}", state.issued, random());
        state.codes.insert(
            code.clone(),
            Grant {
                user,
                redirect_uri: params["redirect_uri"].clone(),
                code_challenge: params["code_challenge"].clone(),
            },
        );
        Authorized {
            callback: callback_path(&[("code", &code), ("state", &params["state"])]),
            state: params["state"].clone(),
            code,
        }
    }
}

fn random() -> String {
    let mut bytes = [0u8; 12];
    aws_lc_rs::rand::fill(&mut bytes).expect("random");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `/login/github/callback?…` with these parameters.
fn callback_path(params: &[(&str, &str)]) -> String {
    let path = GITHUB_CALLBACK
        .strip_prefix(ISSUER)
        .expect("under the issuer");
    format!("{path}?{}", form(params))
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, content_type: &str, body: String) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

fn json_reply(status: u16, body: Value) -> Reply {
    reply(status, "application/json; charset=utf-8", body.to_string())
}

async fn serve(state: Arc<Mutex<GitHubState>>, request: Request<Incoming>) -> Reply {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut state = state.lock().expect("lock");
    state
        .requests
        .push(format!("{} {}", parts.method, parts.uri));
    match (parts.method.as_str(), parts.uri.path()) {
        ("POST", "/login/oauth/access_token") => token_endpoint(&mut state, &parts.headers, &body),
        ("GET", path) if path.starts_with("/api/v3/") => {
            api(&state, &parts.headers, &path["/api/v3".len()..])
        }
        _ => json_reply(404, json!({"message": "Not Found"})),
    }
}

/// `POST /login/oauth/access_token`. Errors come as 200 with an `error` member, as GitHub
/// sends them.
fn token_endpoint(state: &mut GitHubState, headers: &HeaderMap, body: &[u8]) -> Reply {
    let accepts_json = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let fields: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or("");
    let mut exchange = || -> Result<String, &'static str> {
        if field("client_id") != CLIENT_ID || field("client_secret") != CLIENT_SECRET {
            return Err("incorrect_client_credentials");
        }
        if field("grant_type") == "refresh_token" {
            // Rotated: a refresh token works once.
            let user = state
                .refresh_tokens
                .remove(field("refresh_token"))
                .ok_or("bad_refresh_token")?;
            state.issued += 1;
            let token = format!("ghu_{}_{}", state.issued, random());
            state.tokens.insert(token.clone(), user);
            return Ok(token);
        }
        // Single use: the code is gone whatever happens next.
        let grant = state
            .codes
            .remove(field("code"))
            .ok_or("bad_verification_code")?;
        if field("redirect_uri") != grant.redirect_uri {
            return Err("redirect_uri_mismatch");
        }
        let challenge = URL_SAFE_NO_PAD.encode(mcp_auth_gateway::auth::api_key::sha256(
            field("code_verifier").as_bytes(),
        ));
        if challenge != grant.code_challenge {
            return Err("bad_verification_code");
        }
        state.issued += 1;
        let token = format!("gho_{}_{}", state.issued, random());
        state.tokens.insert(token.clone(), grant.user);
        Ok(token)
    };
    let outcome = exchange();
    if let Err(error) = outcome {
        state.refusals.push(error.to_string());
    }
    if !accepts_json {
        // Without `Accept: application/json` GitHub answers form-encoded.
        let body = match &outcome {
            Ok(token) => form(&[("access_token", token.as_str()), ("token_type", "bearer")]),
            Err(error) => form(&[("error", error)]),
        };
        return reply(200, "application/x-www-form-urlencoded", body);
    }
    match outcome {
        Ok(token) => {
            let mut answer = json!({"access_token": token, "token_type": "bearer", "scope": "read:org,read:user,user:email"});
            if let Some(expires_in) = state.expires_in {
                let refresh = format!("ghr_{}", random());
                let user = state.tokens[&token].clone();
                state.refresh_tokens.insert(refresh.clone(), user);
                answer["expires_in"] = json!(expires_in);
                answer["refresh_token"] = json!(refresh);
            }
            json_reply(200, answer)
        }
        Err(error) => json_reply(
            200,
            json!({"error": error, "error_description": "The code passed is incorrect or expired."}),
        ),
    }
}

/// The REST API, under `/api/v3`.
fn api(state: &GitHubState, headers: &HeaderMap, endpoint: &str) -> Reply {
    if headers.get("user-agent").is_none() {
        return json_reply(
            403,
            json!({"message": "Request forbidden by administrative rules. Please make sure your request has a User-Agent header"}),
        );
    }
    let user = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| state.tokens.get(token));
    let Some(user) = user else {
        return json_reply(401, json!({"message": "Bad credentials"}));
    };
    let body = match endpoint {
        "/user" => json!({
            "id": user.id, "login": user.login, "name": user.name, "email": user.email,
            "type": "User",
        }),
        "/user/emails" => Value::Array(user.emails.clone()),
        "/user/orgs" => user
            .orgs
            .iter()
            .map(|org| json!({"login": org, "id": 1000}))
            .collect(),
        "/user/teams" => user
            .teams
            .iter()
            .map(|(org, slug)| json!({"slug": slug, "name": slug, "organization": {"login": org}}))
            .collect(),
        _ => return json_reply(404, json!({"message": "Not Found"})),
    };
    json_reply(200, body)
}

// ---------------------------------------------------------------------------------------
// The gateway, its upstream and an MCP client, and the browser steps.

/// Everything a login test needs: the stand-in, the MCP upstream, the gateway and a
/// registered public client.
struct Stack {
    github: FakeGitHub,
    upstream: Upstream,
    gateway: TestGateway,
    client_id: String,
    /// The configuration it runs (for reloads).
    toml: String,
    dir: common::TempDir,
}

/// `[[authorization_server.identity_providers]]` for the stand-in, with `allow` lines.
fn github_provider(id: &str, github: &FakeGitHub, dir: &Path, allow: &str) -> String {
    let secret_file = dir.join("github-client-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).expect("write secret");
    format!(
        r#"
[[authorization_server.identity_providers]]
id = "{id}"
type = "github"
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"
github_url = "{web}"
github_api_url = "{api}"
{allow}
"#,
        secret = secret_file.display(),
        web = github.web_url(),
        api = github.api_url(),
    )
}

/// Starts a stack whose `[authorization_server]` has `providers` and, when `local_users`,
/// the local user alice.
async fn start_stack(
    name: &str,
    local_users: bool,
    providers: impl FnOnce(&FakeGitHub, &Path) -> String,
) -> Stack {
    capture_logs();
    let dir = oauth::temp_dir(name);
    let github = FakeGitHub::start().await;
    let upstream = Upstream::start().await;
    let providers = providers(&github, &dir);
    let as_section = if local_users {
        oauth::as_toml(&dir, &providers)
    } else {
        format!(
            "[authorization_server]\ndatabase = \"{}\"\n{providers}",
            dir.join("as.db").display()
        )
    };
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "{ISSUER}"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "{upstream}"
scopes_supported = ["mcp:tools"]
resource_name = "Team tools"

{as_section}
"#,
        upstream = upstream.url("/mcp"),
    );
    let gateway = TestGateway::start(&toml).await;
    let client_id = oauth::register_public(gateway.addr, REDIRECT).await;
    Stack {
        github,
        upstream,
        gateway,
        client_id,
        toml,
        dir,
    }
}

/// A browser part-way through a login: GitHub has issued a code for it.
struct Attempt {
    browser: Browser,
    /// The MCP client's PKCE verifier.
    verifier: String,
    /// The session cookie the login page set (`name=value`).
    session_before_login: String,
    github: Authorized,
}

impl Stack {
    fn addr(&self) -> SocketAddr {
        self.gateway.addr
    }

    fn db_path(&self) -> std::path::PathBuf {
        self.dir.join("as.db")
    }

    /// The MCP client sends `browser` to `/authorize`; returns the login page and the
    /// client's PKCE verifier.
    async fn login_page(&self, browser: &mut Browser) -> (Answer, String) {
        let (verifier, challenge) = pkce();
        let authorize = form(&[
            ("response_type", "code"),
            ("client_id", &self.client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "client-state"),
            ("scope", "mcp:tools"),
            ("resource", RESOURCE),
        ]);
        let page = browser
            .get(self.addr(), &format!("/authorize?{authorize}"))
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        (page, verifier)
    }

    /// Login page → "Continue with GitHub" (303 to GitHub) → GitHub logs in `user`.
    async fn start_login(&self, user: GitHubUser) -> Attempt {
        let mut browser = Browser::default();
        let (page, verifier) = self.login_page(&mut browser).await;
        let session_before_login = cookie_pair(&page).expect("the login page sets a session");
        let answer = browser
            .post_form(self.addr(), "/login/github", &provider_form(&page))
            .await;
        assert_eq!(answer.status, 303, "{}", answer.body);
        assert_eq!(answer.header("cache-control"), Some("no-store"));
        let location = answer.header("location").expect("location to GitHub");
        Attempt {
            github: self.github.authorize(location, user),
            browser,
            verifier,
            session_before_login,
        }
    }

    /// Approves the consent page; returns the redirect back to the MCP client.
    async fn approve(&self, browser: &mut Browser, consent: &Answer) -> String {
        assert_eq!(consent.status, 200, "{}", consent.body);
        assert!(consent.body.contains("id=\"consent\""), "{}", consent.body);
        let body = form(&[
            (
                "request",
                &hidden(&consent.body, "request").expect("request"),
            ),
            ("csrf", &hidden(&consent.body, "csrf").expect("csrf")),
            ("decision", "approve"),
        ]);
        let answer = browser.post_form(self.addr(), "/consent", &body).await;
        assert_eq!(answer.status, 302, "{}", answer.body);
        let location = answer.header("location").expect("location").to_string();
        assert!(location.starts_with(REDIRECT), "{location}");
        location
    }

    /// The MCP client's token request; returns the access token.
    async fn redeem(&self, location: &str, verifier: &str) -> String {
        self.redeem_answer(location, verifier).await["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// The MCP client's token request; returns the token answer.
    async fn redeem_answer(&self, location: &str, verifier: &str) -> Value {
        let params = query(location);
        assert_eq!(params["state"], "client-state");
        assert_eq!(params["iss"], ISSUER);
        let answer = post_form(
            self.addr(),
            "/token",
            &form(&[
                ("grant_type", "authorization_code"),
                ("code", &params["code"]),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
                ("client_id", &self.client_id),
                ("resource", RESOURCE),
            ]),
            &[],
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()
    }

    /// The whole login of `user`, allowed: returns the verified access token claims.
    async fn log_in(&self, user: GitHubUser) -> (String, Value) {
        let mut attempt = self.start_login(user).await;
        let consent = attempt
            .browser
            .get(self.addr(), &attempt.github.callback)
            .await;
        let location = self.approve(&mut attempt.browser, &consent).await;
        let token = self.redeem(&location, &attempt.verifier).await;
        let claims = verified_claims(&self.gateway, &token).await;
        (token, claims)
    }

    async fn shutdown(self) {
        self.gateway.shutdown().await;
    }
}

/// `name=value` of the cookie an answer sets.
fn cookie_pair(answer: &Answer) -> Option<String> {
    let cookie = answer.header("set-cookie")?;
    Some(cookie.split(';').next()?.to_string())
}

/// The hidden fields of the GitHub button's form.
fn provider_form(page: &Answer) -> String {
    provider_form_for(page, "github")
}

/// The hidden fields of the provider `id`'s button on the login page.
fn provider_form_for(page: &Answer, id: &str) -> String {
    assert!(
        page.body
            .contains(&format!("action=\"/login/{id}\" id=\"provider-{id}\"")),
        "{}",
        page.body
    );
    form(&[
        ("request", &hidden(&page.body, "request").expect("request")),
        ("csrf", &hidden(&page.body, "csrf").expect("csrf")),
    ])
}

/// The access token's claims, its signature checked against the gateway's `/jwks.json`.
async fn verified_claims(gateway: &TestGateway, token: &str) -> Value {
    use jsonwebtoken::{decode, decode_header, jwk::JwkSet, DecodingKey, Validation};
    let jwks: JwkSet =
        serde_json::from_str(&get(gateway.addr, "/jwks.json", &[]).await.body).expect("jwks");
    let header = decode_header(token).expect("JWT header");
    let jwk = jwks
        .find(header.kid.as_deref().expect("kid"))
        .expect("published key");
    let key = DecodingKey::from_jwk(jwk).expect("key");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[RESOURCE]);
    validation.set_issuer(&[ISSUER]);
    decode::<Value>(token, &key, &validation)
        .expect("a valid access token")
        .claims
}

fn assert_page(answer: &Answer, status: u16, fragments: &[&str]) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/html")),
        "{:?}",
        answer.headers
    );
    assert!(
        answer.header("location").is_none(),
        "a page, not a redirect"
    );
    for fragment in fragments {
        assert!(
            answer.body.contains(fragment),
            "{fragment:?} not in {}",
            answer.body
        );
    }
}

// ---------------------------------------------------------------------------------------
// The gateway's log, captured in this process (the gateway logs through `tracing`).

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| LogSink)
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    });
}

fn log_text() -> String {
    String::from_utf8_lossy(&LOG.lock().expect("log")).into_owned()
}

// ---------------------------------------------------------------------------------------
// Allowed logins.

#[tokio::test]
async fn an_organisation_member_gets_a_token_with_the_github_identity() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stack = start_stack("gh-org", true, |github, dir| {
        github_provider("github", github, dir, "allowed_organizations = [\"ACME\"]")
    })
    .await;

    let mut attempt = stack.start_login(mona()).await;
    let consent = attempt
        .browser
        .get(stack.addr(), &attempt.github.callback)
        .await;
    // Signed in as GitHub's mona: consent names her, and a new session replaced the one
    // from before the login (no session fixation).
    assert!(
        consent.body.contains("Mona Lisa Octocat"),
        "{}",
        consent.body
    );
    assert!(consent
        .header("set-cookie")
        .is_some_and(|c| c.contains("HttpOnly") && c.contains("SameSite=Lax")));
    let session_after_login = cookie_pair(&consent).expect("a new session");
    assert_ne!(session_after_login, attempt.session_before_login);
    let requests = stack.github.requests();
    for expected in [
        "GET /api/v3/user",
        "GET /api/v3/user/emails",
        "GET /api/v3/user/orgs?per_page=100",
        "GET /api/v3/user/teams?per_page=100",
    ] {
        assert!(
            requests.iter().any(|r| r == expected),
            "{expected} in {requests:?}"
        );
    }
    assert_eq!(stack.github.token_requests(), 1);
    assert!(
        stack.github.refusals().is_empty(),
        "{:?}",
        stack.github.refusals()
    );

    let location = stack.approve(&mut attempt.browser, &consent).await;
    let token = stack.redeem(&location, &attempt.verifier).await;
    let claims = verified_claims(&stack.gateway, &token).await;
    assert_eq!(claims["sub"], "github:12345");
    assert_eq!(claims["preferred_username"], "mona");
    assert_eq!(claims["name"], "Mona Lisa Octocat");
    // /user had no email: the primary verified one from /user/emails.
    assert_eq!(claims["email"], "mona@acme.example");
    assert_eq!(claims["groups"], json!(["acme", "acme/platform"]));
    assert_eq!(claims["scope"], "mcp:tools");
    assert_eq!(claims["client_id"], stack.client_id.as_str());

    // The token works on the route; the upstream sees the GitHub identity, not the token.
    let answer = post_json(
        stack.addr(),
        "/mcp",
        &[("authorization", &format!("Bearer {token}"))],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = stack.upstream.last();
    assert_eq!(seen.header("x-user-id"), Some("github:12345"));
    assert_eq!(seen.header("x-user-name"), Some("Mona Lisa Octocat"));
    assert_eq!(seen.header("x-user-email"), Some("mona@acme.example"));
    let groups = mcp_auth_gateway::pipeline::identity::decode_list(
        seen.header("x-user-groups").unwrap_or(""),
    );
    assert_eq!(groups, vec!["acme", "acme/platform"]);
    assert!(seen.header("authorization").is_none());
    stack.shutdown().await;
}

#[tokio::test]
async fn a_listed_user_and_a_team_member_are_let_in_and_other_org_members_are_not() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stack = start_stack("gh-users-teams", false, |github, dir| {
        github_provider(
            "github",
            github,
            dir,
            "allowed_users = [\"OctoCat\"]\nallowed_teams = [\"acme/platform\"]",
        )
    })
    .await;

    // In no organisation, but listed (case-insensitively); a public email on /user.
    let octocat = GitHubUser {
        email: Some("octocat@github.example"),
        ..GitHubUser::new(1, "octocat")
    };
    let (_, claims) = stack.log_in(octocat).await;
    assert_eq!(claims["sub"], "github:1");
    assert_eq!(claims["preferred_username"], "octocat");
    assert_eq!(claims["email"], "octocat@github.example");
    assert!(claims.get("groups").is_none(), "{claims}");
    assert!(
        !stack
            .github
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v3/user/emails")),
        "a public email needs no /user/emails"
    );

    // In the listed team (GitHub spells it in its own case).
    let (_, claims) = stack.log_in(mona()).await;
    assert_eq!(claims["sub"], "github:12345");
    assert_eq!(claims["groups"], json!(["acme", "acme/platform"]));

    // The same organisation, another team: the organisation is not on the list.
    let sales = GitHubUser {
        orgs: vec!["acme"],
        teams: vec![("acme", "sales")],
        ..GitHubUser::new(7, "salesperson")
    };
    let mut attempt = stack.start_login(sales).await;
    let refused = attempt
        .browser
        .get(stack.addr(), &attempt.github.callback)
        .await;
    assert_page(&refused, 403, &["salesperson", "not a member"]);
    stack.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Refused logins.

#[tokio::test]
async fn an_outsider_gets_a_403_page_no_code_and_no_session() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stack = start_stack("gh-outsider", true, |github, dir| {
        github_provider("github", github, dir, "allowed_organizations = [\"acme\"]")
    })
    .await;
    let outsider = GitHubUser {
        name: Some("Eve"),
        email: Some("eve@elsewhere.example"),
        orgs: vec!["other"],
        teams: vec![("other", "platform")],
        ..GitHubUser::new(666, "eve-outside")
    };
    let mut attempt = stack.start_login(outsider).await;
    let refused = attempt
        .browser
        .get(stack.addr(), &attempt.github.callback)
        .await;
    assert_page(
        &refused,
        403,
        &["Access not allowed", "eve-outside", "not a member"],
    );
    assert!(!refused.body.contains(REDIRECT), "no way back with a code");
    assert!(
        refused.header("set-cookie").is_none(),
        "no session for a refused account"
    );

    // The browser is not signed in: a new authorization shows the login page again.
    let (page, _) = stack.login_page(&mut attempt.browser).await;
    assert!(
        page.body.contains("id=\"provider-github\""),
        "{}",
        page.body
    );
    assert!(!page.body.contains("id=\"consent\""), "{}", page.body);
    stack.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// The callback's and the start's defences.

#[tokio::test]
async fn the_callback_refuses_other_browsers_replays_unknown_states_and_bad_codes() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stack = start_stack("gh-defences", true, |github, dir| {
        github_provider("github", github, dir, "allowed_users = [\"mona\"]")
            + &github_provider("github-ent", github, dir, "allowed_users = [\"mona\"]")
    })
    .await;
    let addr = stack.addr();

    // (a) The answer arrives in another browser (login CSRF): refused before the code is
    // exchanged; the state is spent, so the right browser cannot use it afterwards either.
    let mut attempt = stack.start_login(mona()).await;
    let elsewhere = Browser::default().get(addr, &attempt.github.callback).await;
    assert_page(&elsewhere, 403, &["started in another browser"]);
    assert_eq!(stack.github.token_requests(), 0);
    let late = attempt.browser.get(addr, &attempt.github.callback).await;
    assert_page(&late, 400, &["Sign-in expired"]);
    assert_eq!(stack.github.token_requests(), 0);

    // (b) A state works once: the replay of a successful callback is refused, and the code
    // is not sent to GitHub again.
    let mut attempt = stack.start_login(mona()).await;
    let consent = attempt.browser.get(addr, &attempt.github.callback).await;
    assert!(consent.body.contains("id=\"consent\""), "{}", consent.body);
    let replay = attempt.browser.get(addr, &attempt.github.callback).await;
    assert_page(&replay, 400, &["Sign-in expired"]);
    assert_eq!(stack.github.token_requests(), 1);

    // (c) No state, an unknown one, or another provider's.
    let mut browser = attempt.browser;
    for path in [
        callback_path(&[("code", "x")]),
        callback_path(&[("code", "x"), ("state", "never-issued")]),
    ] {
        assert_page(&browser.get(addr, &path).await, 400, &["Sign-in expired"]);
    }
    let mut attempt = stack.start_login(mona()).await;
    let foreign = attempt
        .browser
        .get(
            addr,
            &attempt
                .github
                .callback
                .replace("/login/github/", "/login/github-ent/"),
        )
        .await;
    assert_page(&foreign, 400, &["Sign-in expired"]);

    // (d) GitHub's refusal is shown, escaped.
    let mut attempt = stack.start_login(mona()).await;
    let denied = attempt
        .browser
        .get(
            addr,
            &callback_path(&[
                ("error", "access_denied"),
                (
                    "error_description",
                    "The user has denied <script>alert(1)</script> your application",
                ),
                ("state", &attempt.github.state),
            ]),
        )
        .await;
    assert_page(
        &denied,
        403,
        &[
            "Sign-in cancelled",
            "The user has denied &lt;script&gt;alert(1)&lt;/script&gt; your application",
        ],
    );
    assert!(!denied.body.contains("<script>"), "{}", denied.body);

    // (e) GitHub refuses the code: a 502 page, and neither it nor the log shows the secret.
    let mut attempt = stack.start_login(mona()).await;
    let wrong_code = attempt.github.callback.replace(
        &format!("code={}", attempt.github.code),
        "code=not-the-code",
    );
    assert_ne!(wrong_code, attempt.github.callback);
    let failed = attempt.browser.get(addr, &wrong_code).await;
    assert_page(&failed, 502, &["Sign-in failed", "GitHub"]);
    assert!(!failed.body.contains(CLIENT_SECRET));
    assert!(!failed.body.contains("not-the-code"));
    assert_eq!(
        stack.github.refusals().last().map(String::as_str),
        Some("bad_verification_code")
    );
    let log = log_text();
    assert!(
        log.contains("login through identity provider failed")
            && log.contains("bad_verification_code"),
        "the failure is logged with GitHub's reason:\n{log}"
    );
    assert!(
        !log.contains(CLIENT_SECRET),
        "the client secret is logged:\n{log}"
    );
    // The code GitHub did issue was never redeemed: the stand-in still holds it.
    assert!(stack
        .github
        .state
        .lock()
        .expect("lock")
        .codes
        .contains_key(&attempt.github.code));

    // (f) The start needs this browser's CSRF token for this request.
    let mut browser_a = Browser::default();
    let (page_a, _) = stack.login_page(&mut browser_a).await;
    let request_a = hidden(&page_a.body, "request").expect("request");
    let forged = form(&[("request", &request_a), ("csrf", "Zm9yZ2Vk")]);
    let refused = browser_a.post_form(addr, "/login/github", &forged).await;
    assert_page(&refused, 403, &["CSRF"]);
    let missing = form(&[("request", &request_a)]);
    let refused = browser_a.post_form(addr, "/login/github", &missing).await;
    assert_page(&refused, 403, &["CSRF"]);
    // Another browser's valid token, for its own request, with this browser's cookie.
    let mut browser_b = Browser::default();
    let (page_b, _) = stack.login_page(&mut browser_b).await;
    let stolen = provider_form(&page_b);
    let refused = browser_a.post_form(addr, "/login/github", &stolen).await;
    assert_page(&refused, 403, &["CSRF"]);
    // Without any session cookie.
    let refused = Browser::default()
        .post_form(addr, "/login/github", &provider_form(&page_a))
        .await;
    assert!(refused.header("location").is_none());
    assert!(
        refused.status == 400 || refused.status == 403,
        "{}",
        refused.status
    );
    // A GET is not the form.
    let wrong_method = browser_a.get(addr, "/login/github").await;
    assert_page(&wrong_method, 405, &[]);

    // (g) Unknown providers.
    let unknown = browser_a
        .post_form(addr, "/login/nope", &provider_form(&page_a))
        .await;
    assert_page(&unknown, 404, &["Unknown sign-in provider"]);
    let unknown = browser_a
        .get(addr, "/login/nope/callback?code=x&state=y")
        .await;
    assert_page(&unknown, 404, &["Unknown sign-in provider"]);
    // The untouched form still works: none of the above spent browser A's request.
    let started = browser_a
        .post_form(addr, "/login/github", &provider_form(&page_a))
        .await;
    assert_eq!(started.status, 303, "{}", started.body);
    stack.shutdown().await;
}

/// An OpenID provider nobody answers for: the gateway starts anyway (discovery happens at
/// the first login through it), shows its button, and a login through it ends on a 502 page.
/// Starting logins through providers is limited per address.
#[tokio::test]
async fn an_unreachable_provider_fails_at_login_not_at_start_and_logins_are_rate_limited() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dead = common::dead_port();
    let dead_port = dead.port;
    let stack = start_stack("oidc-unreachable", false, |github, dir| {
        format!(
            "{}\n[[authorization_server.identity_providers]]\nid = \"corp\"\ntype = \"oidc\"\ndisplay_name = \"Corp SSO\"\nissuer = \"http://127.0.0.1:{dead_port}/realms/corp\"\nclient_id = \"gw\"\nallow_all_users = true\n",
            github_provider("github", github, dir, "allowed_organizations = [\"acme\"]")
        )
    })
    .await;
    let mut browser = Browser::default();
    let (page, _) = stack.login_page(&mut browser).await;
    assert!(
        page.body.contains("Continue with Corp SSO"),
        "{}",
        page.body
    );
    let failed = browser
        .post_form(
            stack.addr(),
            "/login/corp",
            &provider_form_for(&page, "corp"),
        )
        .await;
    assert_page(&failed, 502, &["Sign-in failed", "Corp SSO"]);

    // 60 starts a minute per address; the 61st and later are refused with a page.
    let mut statuses = Vec::new();
    for _ in 0..62 {
        let answer = browser
            .post_form(stack.addr(), "/login/github", "request=x&csrf=y")
            .await;
        statuses.push(answer.status.as_u16());
    }
    // (The start through corp counted too.)
    assert!(!statuses[..59].contains(&429), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    stack.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// The login page.

#[tokio::test]
async fn the_login_page_offers_github_and_the_password_form_only_with_local_users() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let with_users = start_stack("gh-page-users", true, |github, dir| {
        github_provider("github", github, dir, "allowed_organizations = [\"acme\"]")
    })
    .await;
    let (page, _) = with_users.login_page(&mut Browser::default()).await;
    assert!(page.body.contains("Continue with GitHub"), "{}", page.body);
    assert!(page.body.contains("id=\"provider-github\""));
    assert!(page.body.contains("id=\"login\""), "{}", page.body);
    assert!(page.body.contains("name=\"password\""));
    with_users.shutdown().await;

    let providers_only = start_stack("gh-page-no-users", false, |github, dir| {
        github_provider("github", github, dir, "allowed_organizations = [\"acme\"]")
    })
    .await;
    let mut browser = Browser::default();
    let (page, _) = providers_only.login_page(&mut browser).await;
    assert!(page.body.contains("Continue with GitHub"), "{}", page.body);
    assert!(!page.body.contains("id=\"login\""), "{}", page.body);
    assert!(!page.body.contains("name=\"password\""), "{}", page.body);
    // A password post anyway (alice exists nowhere here, but try her credentials).
    let body = form(&[
        ("request", &hidden(&page.body, "request").expect("request")),
        ("csrf", &hidden(&page.body, "csrf").expect("csrf")),
        ("username", "alice"),
        ("password", PASSWORD),
    ]);
    let refused = browser
        .post_form(providers_only.addr(), "/login", &body)
        .await;
    assert_page(&refused, 403, &["Local accounts are not enabled"]);
    assert!(!refused.body.contains("id=\"consent\""));
    providers_only.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Configuration errors.

/// A configuration with a route and an `[authorization_server]` holding `providers`.
fn config_with(dir: &Path, providers: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "{ISSUER}"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"

[authorization_server]
database = "{db}"
{providers}
"#,
        db = dir.join("as.db").display(),
    )
}

fn compile(dir: &Path, providers: &str) -> Result<mcp_auth_gateway::Config, ConfigError> {
    config::from_toml_str(&config_with(dir, providers), dir)
}

fn assert_problem(dir: &Path, providers: &str, path: &str, fragment: &str) {
    let error = match compile(dir, providers) {
        Ok(_) => panic!("compiled but should not have:\n{providers}"),
        Err(error) => error,
    };
    assert!(
        error
            .problems
            .iter()
            .any(|p| p.path == path && p.message.contains(fragment)),
        "no problem at {path} mentioning {fragment:?} in:\n{error}\nfor:\n{providers}"
    );
}

#[test]
fn configuration_mistakes_are_reported_at_their_key_path() {
    let dir = oauth::temp_dir("gh-config");
    std::fs::write(dir.join("secret"), "s3cret\n").expect("secret file");
    let github = |extra: &str| {
        format!(
            "[[authorization_server.identity_providers]]\nid = \"github\"\ntype = \"github\"\nclient_id = \"gh\"\n{extra}\n"
        )
    };
    let secret = "client_secret_file = \"secret\"";
    let valid = github(&format!("{secret}\nallowed_organizations = [\"acme\"]"));
    if let Err(error) = compile(&dir, &valid) {
        panic!("the valid provider does not compile:\n{error}");
    }
    let p = "authorization_server.identity_providers[0]";

    assert_problem(
        &dir,
        &github("allowed_organizations = [\"acme\"]"),
        &format!("{p}.client_secret_env"),
        "client secret",
    );
    assert_problem(
        &dir,
        &github("client_secret_file = \"missing\"\nallowed_users = [\"x\"]"),
        &format!("{p}.client_secret"),
        "cannot read secret file",
    );
    assert_problem(&dir, &github(secret), p, "allow_all_users");
    // The provider's subject namespace is its own, and two ids are reserved.
    let hash = mcp_auth_gateway::authorization_server::cli::hash_password("pw").expect("hash");
    assert_problem(
        &dir,
        &format!(
            "{valid}\n[[authorization_server.users]]\nusername = \"mona\"\npassword_hash = \"{hash}\"\nsubject = \"github:12345\"\n"
        ),
        "authorization_server.users[0].subject",
        "namespace of identity provider \"github\"",
    );
    assert_problem(
        &dir,
        &format!(
            "{valid}\n[[authorization_server.clients]]\nclient_id = \"github:12345\"\nredirect_uris = [\"https://app.example/cb\"]\n"
        ),
        "authorization_server.clients[0].client_id",
        "namespace of identity provider",
    );
    for reserved in ["local", "client_credentials"] {
        assert_problem(
            &dir,
            &github(&format!("{secret}\nallowed_users = [\"x\"]"))
                .replace("id = \"github\"", &format!("id = \"{reserved}\"")),
            &format!("{p}.id"),
            "cannot name a provider",
        );
    }
    assert_problem(
        &dir,
        &github(&format!(
            "{secret}\nallow_all_users = true\nallowed_users = [\"x\"]"
        )),
        &format!("{p}.allow_all_users"),
        "contradicts",
    );
    assert_problem(
        &dir,
        "[[authorization_server.identity_providers]]\nid = \"corp\"\ntype = \"oidc\"\nclient_id = \"c\"\nallowed_email_domains = [\"example.com\"]\n",
        &format!("{p}.issuer"),
        "is missing",
    );
    assert_problem(
        &dir,
        &valid.replace("id = \"github\"", "id = \"GitHub\""),
        &format!("{p}.id"),
        "cannot name a provider",
    );
    assert_problem(
        &dir,
        &format!("{valid}\n{valid}"),
        "authorization_server.identity_providers[1].id",
        "configured twice",
    );
    assert_problem(
        &dir,
        &format!("{valid}allowed_email_domains = [\"acme.example\"]\n"),
        &format!("{p}.allowed_email_domains"),
        "does not apply to GitHub",
    );
    assert_problem(
        &dir,
        &github(&format!("{secret}\nallowed_teams = [\"platform\"]")),
        &format!("{p}.allowed_teams[0]"),
        "organisation/team-slug",
    );
    assert_problem(
        &dir,
        &format!("{valid}github_url = \"http://github.example.com\"\n"),
        &format!("{p}.github_url"),
        "plain http",
    );
    assert_problem(
        &dir,
        &valid.replace("type = \"github\"", "type = \"gitlab\""),
        &format!("{p}.type"),
        "not a provider type",
    );
}

/// The MCP client's refresh-token request.
async fn refresh(stack: &Stack, token: &str) -> Answer {
    post_form(
        stack.addr(),
        "/token",
        &form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", &stack.client_id),
        ]),
        &[],
    )
    .await
}

/// Tightening a provider's allowlist (configuration reload) ends what it no longer admits:
/// the refresh token of someone who logged in before is refused, and their browser session
/// no longer skips the login page.
#[tokio::test]
async fn a_tightened_allowlist_ends_refreshes_and_sessions_it_no_longer_admits() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stack = start_stack("gh-tightened", false, |github, dir| {
        github_provider("github", github, dir, "allowed_organizations = [\"acme\"]")
    })
    .await;
    let mut attempt = stack.start_login(mona()).await;
    let consent = attempt
        .browser
        .get(stack.addr(), &attempt.github.callback)
        .await;
    let location = stack.approve(&mut attempt.browser, &consent).await;
    let answer = stack.redeem_answer(&location, &attempt.verifier).await;
    let refresh_token = answer["refresh_token"].as_str().expect("refresh_token");
    // Still admitted: a refresh works, and the session goes straight to consent.
    let refreshed = refresh(&stack, refresh_token).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let next = refreshed.json()["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_string();
    let (page, _) = stack.login_page(&mut attempt.browser).await;
    assert!(page.body.contains("id=\"consent\""), "{}", page.body);

    let tightened = stack.toml.replace(
        "allowed_organizations = [\"acme\"]",
        "allowed_organizations = [\"other\"]",
    );
    assert_ne!(tightened, stack.toml);
    stack.gateway.reload(&tightened);

    let refused = refresh(&stack, &next).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.json()["error"], "invalid_grant", "{}", refused.body);
    let (page, _) = stack.login_page(&mut attempt.browser).await;
    assert!(
        page.body.contains("id=\"provider-github\""),
        "{}",
        page.body
    );
    assert!(!page.body.contains("id=\"consent\""), "{}", page.body);
    stack.shutdown().await;
}

/// The example in docs/identity-providers.md compiles as written (its secrets from the
/// environment variables it names).
#[test]
fn the_documented_example_compiles() {
    let doc =
        std::fs::read_to_string(common::external::repo_root().join("docs/identity-providers.md"))
            .expect("docs/identity-providers.md");
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + doc[start..].find("```").expect("its end");
    let example = &doc[start..end];
    // Only this test reads these two variables.
    std::env::set_var("GITHUB_CLIENT_SECRET", "documented-example-secret");
    std::env::set_var("CORP_CLIENT_SECRET", "documented-example-secret");
    let dir = oauth::temp_dir("documented-providers");
    let config = compile(&dir, example).unwrap_or_else(|e| panic!("{e}\n{example}"));
    let settings = config.authorization_server.expect("authorization server");
    let ids: Vec<&str> = settings
        .identity_providers
        .iter()
        .map(|p| p.id.as_str())
        .collect();
    assert_eq!(ids, ["github", "corp"]);
    drop(dir);
}

// ---------------------------------------------------------------------------------------
// Per-user upstream tokens.

/// A route forwarding each user's own GitHub token: two users, two tokens, each reaching
/// the upstream only for its user; the client's token never does; the tokens are sealed in
/// the database; an expiring token is refreshed at GitHub before it is used.
#[tokio::test]
async fn a_route_forwards_each_users_own_github_token_sealed_at_rest_and_refreshed() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stack = start_stack("gh-user-tokens", false, |github, dir| {
        let key_file = dir.join("token-key");
        std::fs::write(
            &key_file,
            format!("{}\n", URL_SAFE_NO_PAD.encode([42u8; 32])),
        )
        .expect("key file");
        format!(
            "token_encryption_key_file = \"{}\"\n{}",
            key_file.display(),
            github_provider("github", github, dir, "allowed_organizations = [\"acme\"]")
        )
    })
    .await;
    assert!(stack.toml.contains("token_encryption_key_file"));
    let toml = stack.toml.replace(
        "resource_name = \"Team tools\"",
        "resource_name = \"Team tools\"\n\n[routes.upstream_token]\nprovider = \"github\"",
    );
    stack.gateway.reload(&toml);

    let bob = GitHubUser {
        orgs: vec!["acme"],
        email: Some("bob@acme.example"),
        ..GitHubUser::new(777, "bob")
    };
    let (mona_token, _) = stack.log_in(mona()).await;
    let (bob_token, _) = stack.log_in(bob).await;
    for (token, login) in [(&mona_token, "mona"), (&bob_token, "bob")] {
        let answer = post_json(
            stack.addr(),
            "/mcp",
            &[("authorization", &format!("Bearer {token}"))],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let seen = stack.upstream.last();
        let forwarded = seen
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .expect("a GitHub token upstream");
        assert!(forwarded.starts_with("gho_"), "{forwarded}");
        assert_ne!(forwarded, token.as_str(), "never the client's token");
        assert_eq!(stack.github.owner_of(forwarded), Some(login));
    }

    // Sealed at rest: the database never holds a GitHub token in the clear.
    let db = std::fs::read(stack.db_path()).expect("database");
    let db = String::from_utf8_lossy(&db);
    assert!(
        !db.contains("gho_"),
        "a GitHub token in the clear in the database"
    );

    // An expiring token (GitHub App user tokens): refreshed before it is forwarded.
    stack.github.issue_expiring_tokens(10);
    let (token, _) = stack.log_in(mona()).await;
    let answer = post_json(
        stack.addr(),
        "/mcp",
        &[("authorization", &format!("Bearer {token}"))],
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let forwarded = stack
        .upstream
        .last()
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .expect("a token upstream");
    assert!(
        forwarded.starts_with("ghu_"),
        "the refreshed token: {forwarded}"
    );
    assert_eq!(stack.github.owner_of(&forwarded), Some("mona"));
    stack.shutdown().await;
}

/// Someone who holds no GitHub token here (an API key whose subject names a GitHub user,
/// or a user who never logged in through GitHub) is refused: 401 saying how to get one.
#[tokio::test]
async fn a_caller_without_a_provider_token_is_refused_with_401() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stack = start_stack("gh-no-user-token", true, |github, dir| {
        let key_file = dir.join("token-key");
        std::fs::write(&key_file, "ab".repeat(32)).expect("key file");
        format!(
            "token_encryption_key_file = \"{}\"\n{}",
            key_file.display(),
            github_provider("github", github, dir, "allowed_organizations = [\"acme\"]")
        )
    })
    .await;
    let toml = stack.toml.replace(
        "resource_name = \"Team tools\"",
        "resource_name = \"Team tools\"\nverifiers = [\"authorization_server\", \"api_keys\"]\n\n[routes.upstream_token]\nprovider = \"github\"",
    ) + &common::gateway::api_key_toml("github:12345", &["mcp:tools"]);
    stack.gateway.reload(&toml);
    // An API key claiming mona's subject gets nothing of hers.
    let answer = post_json(
        stack.addr(),
        "/mcp",
        &[("authorization", &format!("Bearer {}", common::API_KEY))],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(
        answer
            .header("www-authenticate")
            .is_some_and(|c| c.contains("invalid_token") && c.contains("resource_metadata")),
        "{:?}",
        answer.header("www-authenticate")
    );
    assert_eq!(answer.json()["error"], "invalid_token");
    assert!(
        answer.json()["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("log in through github")),
        "{}",
        answer.body
    );
    // Alice logged in with a password: she holds no GitHub token either.
    let (verifier, challenge) = pkce();
    let authorize = form(&[
        ("response_type", "code"),
        ("client_id", &stack.client_id),
        ("redirect_uri", REDIRECT),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("state", "client-state"),
        ("scope", "mcp:tools"),
        ("resource", RESOURCE),
    ]);
    let location = oauth::browser_login(&mut Browser::default(), stack.addr(), &authorize).await;
    let token = stack.redeem(&location, &verifier).await;
    let answer = post_json(
        stack.addr(),
        "/mcp",
        &[("authorization", &format!("Bearer {token}"))],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(stack.upstream.requests().is_empty());
    stack.shutdown().await;
}
