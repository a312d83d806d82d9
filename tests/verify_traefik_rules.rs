//! Per-tool MCP rules through ForwardAuth, with a real Traefik in front of `/verify`, both
//! ways Traefik can describe a call to the gateway:
//!
//! - `forwardBody: true` (+ `maxBodySize`): `/verify` judges the JSON-RPC body itself;
//! - without it: the `Mcp-Method` / `Mcp-Name` headers of protocol 2026-07-28, and a POST
//!   that has neither is refused (the route's default `undetermined = "deny"`).
//!
//! Traefik runs with the very files of `deploy/traefik-mcp-rules/` (only the example
//! addresses substituted; the header-mode variant deletes the `forwardBody` and
//! `maxBodySize` lines, as that README says), and the gateway with its `gateway.toml`, plus
//! one test key holding the `admin` scope. In each mode: an allowed call reaches the
//! upstream with exactly its body and the gateway's `X-User-Id`; a call a rule denies, or
//! that lacks the scope (403 + `insufficient_scope` challenge), never does.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::external;
use common::http::{self as client, Answer};
use common::{TestGateway, Upstream};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mcp_auth_gateway::auth::api_key;

/// The example directory under test.
const EXAMPLE: &str = "deploy/traefik-mcp-rules";
/// The demo key of the example's gateway.toml (scope `mcp:tools`, subject `demo-user`).
const DEMO_KEY: &str = "demo-key-change-me";
/// Added by the test: scopes `mcp:tools admin`, subject `admin-user`.
const ADMIN_KEY: &str = "test-admin-key-0123456789";
/// The example's `maxBodySize` (Traefik) and `max_body_bytes` (gateway).
const MAX_BODY: usize = 1024 * 1024;
/// Only a guard against hangs; nothing here waits for time to pass.
const HANG_GUARD: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// The example as shipped: `forwardBody: true`.
    Body,
    /// The example without `forwardBody` / `maxBodySize`: only the headers describe a call.
    Headers,
}

#[test]
fn the_example_gateway_config_compiles() {
    let dir = external::repo_root().join(EXAMPLE);
    let toml = fs::read_to_string(dir.join("gateway.toml")).expect("gateway.toml");
    if let Err(error) = mcp_auth_gateway::config::from_toml_str(&toml, &dir) {
        panic!("{EXAMPLE}/gateway.toml:\n{error}");
    }
    let dynamic = fs::read_to_string(dir.join("dynamic.yml")).expect("dynamic.yml");
    for setting in [
        "forwardBody: true",
        &format!("maxBodySize: {MAX_BODY}"),
        "authRequestHeaders:",
        "authResponseHeaders:",
    ] {
        assert!(dynamic.contains(setting), "dynamic.yml lacks {setting:?}");
    }
    assert!(
        toml.contains("max_body_bytes = \"1MiB\""),
        "gateway.toml: [routes.mcp] max_body_bytes must equal maxBodySize"
    );
}

#[tokio::test]
async fn rules_apply_to_the_body_traefik_forwards() {
    let Some(s) = Stack::start(Mode::Body).await else {
        return; // traefik missing on a local run (require() said so loudly)
    };
    allowed_call_reaches_the_upstream_exactly(&s, &[]).await;
    denied_tool_never_reaches_the_upstream(&s, &[]).await;
    missing_scope_is_a_step_up(&s, &[]).await;
    plumbing_and_sessions(&s).await;
    foreign_origin_is_refused(&s).await;

    // Headers that agree with the body are fine; headers that name another tool than the
    // body are refused (the upstream would otherwise run what the gateway did not judge).
    let agreeing = [("mcp-method", "tools/call"), ("mcp-name", "get_file")];
    allowed_call_reaches_the_upstream_exactly(&s, &agreeing).await;
    s.refused(
        "Mcp-Name get_file, body delete_repo",
        DEMO_KEY,
        &agreeing,
        &call(3, "delete_repo", ""),
        403,
    )
    .await;

    // A POST without a body says nothing: refused.
    s.refused("POST without body or headers", DEMO_KEY, &[], "", 403)
        .await;

    // maxBodySize: a body of exactly the limit is read and judged by both; one byte more
    // and Traefik answers 401 itself (no challenge), never the upstream.
    let at_limit = call_of_size(4, "get_file", MAX_BODY);
    let answer = s.post(DEMO_KEY, &[], &at_limit).await;
    s.check(answer.status == 200, "a body of maxBodySize → 200", &answer);
    s.check_text(
        s.upstream.last().body == at_limit.as_bytes(),
        "the upstream got the whole body of maxBodySize",
        "",
    );
    let over = call_of_size(5, "get_file", MAX_BODY + 1);
    s.refused("body over maxBodySize", DEMO_KEY, &[], &over, 401)
        .await;

    sse_streams(&s).await;
    s.stop().await;
}

#[tokio::test]
async fn rules_apply_to_the_mcp_headers_without_the_body() {
    let Some(s) = Stack::start(Mode::Headers).await else {
        return;
    };
    let get_file = [("mcp-method", "tools/call"), ("mcp-name", "get_file")];
    allowed_call_reaches_the_upstream_exactly(&s, &get_file).await;
    denied_tool_never_reaches_the_upstream(
        &s,
        &[("mcp-method", "tools/call"), ("mcp-name", "delete_repo")],
    )
    .await;
    missing_scope_is_a_step_up(&s, &[("mcp-method", "tools/call"), ("mcp-name", "deploy")]).await;
    plumbing_and_sessions(&s).await;
    foreign_origin_is_refused(&s).await;

    // Fail closed: Traefik does not pass the body on, so a call without the headers
    // cannot be judged, whatever its body says; nor can a named call without its name.
    s.refused(
        "a call described by its body only",
        DEMO_KEY,
        &[],
        &call(6, "get_file", ""),
        403,
    )
    .await;
    s.refused("POST without body or headers", DEMO_KEY, &[], "", 403)
        .await;
    s.refused(
        "Mcp-Method tools/call without Mcp-Name",
        DEMO_KEY,
        &[("mcp-method", "tools/call")],
        &call(7, "get_file", ""),
        403,
    )
    .await;

    sse_streams(&s).await;
    s.stop().await;
}

// ── the checks ────────────────────────────────────────────────────────────────────────

fn call(id: u32, tool: &str, argument: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"path":"{argument}"}}}}}}"#
    )
}

/// A `tools/call` body of exactly `size` bytes.
fn call_of_size(id: u32, tool: &str, size: usize) -> String {
    let empty = call(id, tool, "").len();
    let body = call(id, tool, &"x".repeat(size - empty));
    assert_eq!(body.len(), size);
    body
}

async fn allowed_call_reaches_the_upstream_exactly(s: &Stack, headers: &[(&str, &str)]) {
    // Odd spacing and non-ASCII: the upstream must get these very bytes.
    let body = "{ \"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"tools/call\",\n  \"params\": {\"name\": \"get_file\", \"arguments\": {\"path\": \"/reports/q3 ✓.txt\"}} }";
    let before = s.upstream.requests().len();
    let answer = s.post(DEMO_KEY, headers, body).await;
    s.check(
        answer.status == 200,
        "allowed tools/call get_file → 200",
        &answer,
    );
    let requests = s.upstream.requests();
    s.check(
        requests.len() == before + 1,
        "the allowed call reached the upstream once",
        &answer,
    );
    let seen = requests.last().expect("a request");
    let what = format!(
        "as the upstream saw it: {} {}\n{:#?}\n{}",
        seen.method,
        seen.path_and_query,
        seen.headers,
        String::from_utf8_lossy(&seen.body)
    );
    s.check_text(
        seen.method == "POST" && seen.path_and_query == "/mcp",
        "POST /mcp",
        &what,
    );
    s.check_text(
        seen.body == body.as_bytes(),
        "exactly the client's body",
        &what,
    );
    let ids: Vec<_> = seen.headers.get_all("x-user-id").iter().collect();
    s.check_text(
        ids.len() == 1 && ids[0] == "demo-user",
        "exactly one X-User-Id: demo-user (authResponseHeaders)",
        &what,
    );
    s.check_text(
        seen.header("x-auth-method") == Some("api_key"),
        "X-Auth-Method: api_key",
        &what,
    );
    s.check_text(
        !seen.headers.contains_key("authorization"),
        "the client's token never reaches the upstream",
        &what,
    );
}

async fn denied_tool_never_reaches_the_upstream(s: &Stack, headers: &[(&str, &str)]) {
    let answer = s
        .refused(
            "tools/call delete_repo (rule no-deletes)",
            DEMO_KEY,
            headers,
            &call(2, "delete_repo", "/"),
            403,
        )
        .await;
    s.check(
        answer.body.contains("no-deletes"),
        "the refusal names the rule",
        &answer,
    );
    // Even the key that may deploy may not delete.
    s.refused(
        "tools/call delete_repo with the admin key",
        ADMIN_KEY,
        headers,
        &call(2, "delete_repo", "/"),
        403,
    )
    .await;
}

async fn missing_scope_is_a_step_up(s: &Stack, headers: &[(&str, &str)]) {
    let body = call(3, "deploy", "prod");
    let answer = s
        .refused(
            "tools/call deploy without scope admin",
            DEMO_KEY,
            headers,
            &body,
            403,
        )
        .await;
    let challenges: Vec<_> = answer.headers.get_all("www-authenticate").iter().collect();
    s.check(
        challenges.len() == 1,
        "exactly one WWW-Authenticate (Traefik passes the gateway's on)",
        &answer,
    );
    let challenge = answer.header("www-authenticate").unwrap_or_default();
    s.check(
        challenge.starts_with("Bearer ")
            && challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains("admin"),
        "an insufficient_scope challenge naming admin",
        &answer,
    );
    let metadata = format!(
        "resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
        s.public_url()
    );
    s.check(
        challenge.contains(&metadata),
        &format!("the challenge points at {metadata}"),
        &answer,
    );
    // With the scope, the same call goes through as the admin.
    let before = s.upstream.requests().len();
    let answer = s.post(ADMIN_KEY, headers, &body).await;
    s.check(
        answer.status == 200,
        "deploy with scope admin → 200",
        &answer,
    );
    let requests = s.upstream.requests();
    s.check(
        requests.len() == before + 1,
        "deploy reached the upstream",
        &answer,
    );
    let seen = requests.last().expect("a request");
    s.check_text(
        seen.header("x-user-id") == Some("admin-user")
            && seen.body == body.as_bytes()
            && seen
                .header("x-auth-scopes")
                .is_some_and(|scopes| scopes.split(' ').any(|s| s == "admin")),
        "the admin's identity and scopes, and the body",
        &format!("{:#?}", seen.headers),
    );
}

/// `tools/list` needs no rule; `Mcp-Session-Id` reaches `/verify` (authRequestHeaders) and
/// binds the session to its first caller.
async fn plumbing_and_sessions(s: &Stack) {
    let list = r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#;
    let describe: &[(&str, &str)] = match s.mode {
        Mode::Body => &[],
        Mode::Headers => &[("mcp-method", "tools/list")],
    };
    let mut headers = describe.to_vec();
    headers.push(("mcp-session-id", "traefik-session-1"));
    let answer = s.post(DEMO_KEY, &headers, list).await;
    s.check(
        answer.status == 200,
        "tools/list in a new session → 200",
        &answer,
    );
    s.check_text(
        s.upstream.last().header("mcp-session-id") == Some("traefik-session-1"),
        "Mcp-Session-Id passes to the upstream",
        "",
    );
    s.refused(
        "another principal presenting the session id",
        ADMIN_KEY,
        &headers,
        list,
        403,
    )
    .await;
}

/// `Origin` reaches `/verify` (authRequestHeaders): a foreign one is refused.
async fn foreign_origin_is_refused(s: &Stack) {
    let mut headers = vec![("origin", "http://evil.example")];
    if s.mode == Mode::Headers {
        headers.extend([("mcp-method", "tools/call"), ("mcp-name", "get_file")]);
    }
    s.refused(
        "a foreign Origin",
        DEMO_KEY,
        &headers,
        &call(8, "get_file", ""),
        403,
    )
    .await;
}

/// A GET stream is not judged by the rules, and the response still streams (forwardBody
/// buffers request bodies only).
async fn sse_streams(s: &Stack) {
    let request = client::request("GET", s.proxy.addr, "/mcp/sse")
        .header("authorization", format!("Bearer {DEMO_KEY}"))
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = s.send(request).await;
    let head = Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: String::new(),
    };
    s.check(head.status == 200, "GET /mcp/sse → 200", &head);
    let mut body = response.into_body();
    let mut received = String::new();
    // The upstream holds `second` back until release(): `first` now proves streaming.
    s.read_until(&mut body, &mut received, "data: first\n\n")
        .await;
    s.check_text(
        !received.contains("second"),
        "second event only after release",
        &received,
    );
    s.upstream.release();
    s.read_until(&mut body, &mut received, "data: second\n\n")
        .await;
}

// ── Traefik, the gateway and the upstream ─────────────────────────────────────────────

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

fn example_file(name: &str) -> String {
    let path = external::repo_root().join(EXAMPLE).join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
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

/// The example's gateway.toml for this test: listen anywhere, Traefik's public URL, the
/// recording upstream, plus the admin key.
fn gateway_config(upstream: &Upstream, proxy_port: u16) -> String {
    let table = [
        ("127.0.0.1:8080", "127.0.0.1:0".to_string()),
        (
            "http://localhost:8000",
            format!("http://127.0.0.1:{proxy_port}"),
        ),
        ("http://127.0.0.1:3001", format!("http://{}", upstream.addr)),
    ];
    let toml = substitute_all("gateway.toml", &example_file("gateway.toml"), &table);
    let admin = format!(
        "\n[[api_keys]]\nid = \"admin\"\nhash = \"{}\"\nsubject = \"admin-user\"\nscopes = [\"mcp:tools\", \"admin\"]\n",
        api_key::format_hash(&api_key::sha256(ADMIN_KEY.as_bytes()))
    );
    toml + &admin
}

struct Traefik {
    addr: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Traefik {
    /// The example's traefik.yml and dynamic.yml, addresses substituted (and in header mode
    /// without forwardBody / maxBodySize), in a fresh directory; Traefik's output goes to
    /// traefik.log there.
    fn spawn(
        program: &Path,
        mode: Mode,
        gateway: SocketAddr,
        upstream: SocketAddr,
        port: u16,
    ) -> Traefik {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mcp-traefik-rules-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch directory");

        let static_table = [("127.0.0.1:8000", format!("127.0.0.1:{port}"))];
        let text = substitute_all("traefik.yml", &example_file("traefik.yml"), &static_table);
        fs::write(dir.join("traefik.yml"), text).expect("write traefik.yml");

        let dynamic_table = [
            ("127.0.0.1:8080", gateway.to_string()),
            ("127.0.0.1:3001", upstream.to_string()),
        ];
        let mut text = substitute_all("dynamic.yml", &example_file("dynamic.yml"), &dynamic_table);
        if mode == Mode::Headers {
            let body_settings = |line: &str| {
                let line = line.trim_start();
                line.starts_with("forwardBody:") || line.starts_with("maxBodySize:")
            };
            assert_eq!(
                text.lines().filter(|l| body_settings(l)).count(),
                2,
                "{EXAMPLE}/dynamic.yml: one forwardBody and one maxBodySize line"
            );
            text = text
                .lines()
                .filter(|l| !body_settings(l))
                .map(|l| format!("{l}\n"))
                .collect();
        }
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

    /// Ready once the metadata route answers 200 (404 until dynamic.yml is loaded).
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
                client::request("GET", self.addr, "/.well-known/oauth-protected-resource")
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

struct Stack {
    mode: Mode,
    // Field order = drop order: Traefik stops first.
    proxy: Traefik,
    gateway: Option<TestGateway>,
    upstream: Upstream,
}

impl Stack {
    async fn start(mode: Mode) -> Option<Stack> {
        let program = external::require("traefik")?;
        let base_dir = external::repo_root().join(EXAMPLE);
        let attempts = 3;
        for attempt in 1..=attempts {
            let upstream = Upstream::start().await;
            // Traefik must be told its port, and the gateway's public URL names it.
            let port = common::free_port();
            let gateway = TestGateway::start_in(&gateway_config(&upstream, port), &base_dir).await;
            let mut proxy = Traefik::spawn(&program, mode, gateway.addr, upstream.addr, port);
            match proxy.wait_ready().await {
                Ok(()) => {
                    return Some(Stack {
                        mode,
                        proxy,
                        gateway: Some(gateway),
                        upstream,
                    })
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
    }

    fn public_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy.addr.port())
    }

    fn check(&self, ok: bool, claim: &str, answer: &Answer) {
        if !ok {
            panic!(
                "{:?} mode: expected {claim}; got {} {:#?}\n{}{}",
                self.mode,
                answer.status,
                answer.headers,
                answer.body,
                self.proxy.output()
            );
        }
    }

    fn check_text(&self, ok: bool, claim: &str, detail: &str) {
        if !ok {
            panic!(
                "{:?} mode: expected {claim}\n{detail}{}",
                self.mode,
                self.proxy.output()
            );
        }
    }

    async fn send(&self, request: http::Request<Full<Bytes>>) -> http::Response<Incoming> {
        let what = format!("{} {}", request.method(), request.uri());
        match tokio::time::timeout(HANG_GUARD, send(self.proxy.addr, request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => panic!("{what}: {e}{}", self.proxy.output()),
            Err(_) => panic!(
                "{what}: no response within {HANG_GUARD:?}{}",
                self.proxy.output()
            ),
        }
    }

    /// POST /mcp through Traefik with `key`, JSON-RPC content type, `headers` and `body`.
    async fn post(&self, key: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut builder = client::request("POST", self.proxy.addr, "/mcp")
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        let response = self.send(request).await;
        let (parts, body) = response.into_parts();
        let body = match tokio::time::timeout(HANG_GUARD, body.collect()).await {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(e)) => panic!("POST /mcp: body: {e}{}", self.proxy.output()),
            Err(_) => panic!(
                "POST /mcp: body not complete within {HANG_GUARD:?}{}",
                self.proxy.output()
            ),
        };
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// A POST that must be answered `status` without reaching the upstream, and without
    /// an identity header in the answer.
    async fn refused(
        &self,
        case: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: &str,
        status: u16,
    ) -> Answer {
        let before = self.upstream.requests().len();
        let answer = self.post(key, headers, body).await;
        self.check(
            answer.status == status,
            &format!("{case} → {status}"),
            &answer,
        );
        self.check(
            !answer.headers.contains_key("x-user-id"),
            &format!("{case}: no identity header in the answer"),
            &answer,
        );
        let after = self.upstream.requests();
        self.check_text(
            after.len() == before,
            &format!("{case}: never reaches the upstream"),
            &format!("{:#?}", &after[before..]),
        );
        answer
    }

    /// Reads body frames into `received` until it contains `wanted`.
    async fn read_until(&self, body: &mut Incoming, received: &mut String, wanted: &str) {
        while !received.contains(wanted) {
            match tokio::time::timeout(HANG_GUARD, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        received.push_str(&String::from_utf8_lossy(data));
                    }
                }
                Ok(other) => self.check_text(
                    false,
                    &format!("{wanted:?} on the stream"),
                    &format!("stream ended ({other:?}) after {received:?}"),
                ),
                Err(_) => self.check_text(
                    false,
                    &format!("{wanted:?} on the stream within {HANG_GUARD:?}"),
                    &format!("received so far: {received:?}"),
                ),
            }
        }
    }
}

/// One request on a fresh connection; errors as text instead of panics.
async fn send(
    addr: SocketAddr,
    request: http::Request<Full<Bytes>>,
) -> Result<http::Response<Incoming>, String> {
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

/// How long a proxy may take to start and load its configuration.
const STARTUP_WAIT_SECS: u64 = 60;
