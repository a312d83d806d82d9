//! Real Traefik, nginx and Caddy in front of the gateway's `/verify`, each started with the
//! very files in deploy/ — only the example addresses are substituted — so the examples
//! cannot rot. One scenario, run against each proxy:
//!
//! - an authorized request reaches the upstream with the gateway's identity headers and
//!   nothing the client forged (identity headers, `_`/`.` spellings, `X-Original-*`,
//!   `X-Forwarded-*`), and without the client's token;
//! - no token / a bad token / a key without the scope get the gateway's own 401/401/403
//!   (one `WWW-Authenticate` pointing at the proxy's metadata URL, JSON body), also when
//!   the client forges the `X-Forwarded-*` / `X-Original-*` headers `/verify` trusts, and
//!   the upstream is never called;
//! - the protected-resource metadata is public through the proxy;
//! - SSE streams unbuffered; `Mcp-Session-Id` passes both ways;
//! - `/mcpfoo` is not routed; with the gateway down the proxy fails closed.
//!
//! Addresses in deploy/: gateway `127.0.0.1:8080`, upstream `127.0.0.1:3001`, proxy
//! `127.0.0.1:8000` (Caddy: `http://:8000` + `bind 127.0.0.1`).

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::external;
use common::gateway::standard_config;
use common::http::{self as client, Answer};
use common::{TestGateway, Upstream, API_KEY};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mcp_auth_gateway::auth::api_key;

/// A valid key whose principal has no scopes (the route requires `mcp:tools`).
const NO_SCOPE_KEY: &str = "test-key-noscope-9876543210";
/// Only a guard against hangs; nothing here waits for time to pass.
const HANG_GUARD: Duration = Duration::from_secs(20);

#[tokio::test]
async fn traefik_in_front_of_verify() {
    scenario(Kind::Traefik).await;
}

#[tokio::test]
async fn nginx_in_front_of_verify() {
    scenario(Kind::Nginx).await;
}

#[tokio::test]
async fn caddy_in_front_of_verify() {
    scenario(Kind::Caddy).await;
}

/// nginx set up the way ingress-nginx sets up an `auth-url`: the subrequest carries only
/// `X-Original-URL` and `X-Original-Method` (no snippet, no `X-Forwarded-*`).
#[tokio::test]
async fn nginx_as_ingress_nginx_sets_up_auth_url_in_front_of_verify() {
    scenario(Kind::IngressNginx).await;
}

async fn scenario(kind: Kind) {
    let Some(stack) = Stack::start(kind).await else {
        return; // program missing on a local run (require() said so loudly)
    };
    authorized_request_carries_only_the_gateway_identity(&stack).await;
    if matches!(kind, Kind::IngressNginx) {
        forged_descriptions_are_refused(&stack).await;
    }
    denials_are_the_gateway_answers_and_never_reach_the_upstream(&stack).await;
    metadata_is_public(&stack).await;
    sse_is_streamed(&stack).await;
    only_mcp_paths_are_routed(&stack).await;
    fails_closed_without_the_gateway(stack).await;
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Forged request headers: identity headers (duplicated, different spellings and cases,
/// including one the principal does not have: the test key has no email) and what only a
/// proxy may set.
const FORGED: &[(&str, &str)] = &[
    ("X-User-Id", "mallory"),
    ("x-user-id", "mallory2"),
    ("X-User-Email", "m@evil.example"),
    ("X-Auth-Method", "forged"),
    ("X-Auth-Scopes", "mallory:admin"),
    ("X_User_Email", "m@evil.example"),
    ("X_User_Id", "mallory_underscore"),
    ("X.User.Id", "mallory.dot"),
    ("X-Original-URI", "/mallory-original"),
    ("X-Original-Method", "MALLORY"),
    ("X-Forwarded-Uri", "/mallory-forwarded"),
    ("X-Forwarded-Method", "MALLORY"),
];

/// The forged headers that describe the original request. ingress-nginx overwrites only
/// `X-Original-Method` (and `X-Original-URL`): a client's copies of the others reach
/// `/verify`, which refuses a description that disagrees with the proxy's
/// ([`forged_descriptions_are_refused`]) — so they are left out of the authorized request.
const FORGED_DESCRIPTIONS: &[&str] = &["X-Original-URI", "X-Forwarded-Uri", "X-Forwarded-Method"];

/// Values that must not appear in any header the upstream receives.
const FORGED_MARKERS: &[&str] = &["mallory", "m@evil", "forged", "MALLORY"];

async fn authorized_request_carries_only_the_gateway_identity(s: &Stack) {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    for method in ["POST", "GET"] {
        let before = s.upstream.requests().len();
        let key = bearer(API_KEY);
        let mut headers = vec![
            ("authorization", key.as_str()),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-session-id", "client-session"),
            ("mcp-protocol-version", "2025-11-25"),
        ];
        headers.extend(FORGED.iter().filter(|(name, _)| {
            !matches!(s.proxy.kind, Kind::IngressNginx) || !FORGED_DESCRIPTIONS.contains(name)
        }));
        let payload = if method == "POST" { body } else { "" };
        let answer = s.call(method, "/mcp?a=1", &headers, payload).await;
        s.check(answer.status == 200, "authorized request → 200", &answer);
        s.check(
            answer.header("mcp-session-id") == Some("upstream-session"),
            "the upstream's Mcp-Session-Id reaches the client",
            &answer,
        );
        let requests = s.upstream.requests();
        s.check(
            requests.len() == before + 1,
            "exactly one request reached the upstream",
            &answer,
        );
        let seen = requests.last().expect("a request").clone();
        let what = format!(
            "{method} as the upstream saw it: {} {}\n{:#?}",
            seen.method, seen.path_and_query, seen.headers
        );
        let expect = |ok: bool, claim: &str| s.check_text(ok, claim, &what);
        expect(seen.method == method, "method passes");
        expect(seen.path_and_query == "/mcp?a=1", "path and query pass");
        if method == "POST" {
            expect(seen.body == body.as_bytes(), "body passes");
        }
        let ids: Vec<_> = seen.headers.get_all("x-user-id").iter().collect();
        expect(
            ids.len() == 1 && ids[0] == "alice",
            "exactly one X-User-Id: alice",
        );
        expect(
            seen.header("x-user-name") == Some("Test User"),
            "X-User-Name from the gateway",
        );
        expect(
            seen.header("x-auth-scopes") == Some("mcp:tools"),
            "X-Auth-Scopes from the gateway",
        );
        expect(
            seen.headers.get_all("x-auth-method").iter().count() == 1
                && seen.header("x-auth-method") == Some("api_key"),
            "exactly one X-Auth-Method: api_key",
        );
        expect(
            !seen.headers.contains_key("x-user-email"),
            "no X-User-Email: the principal has none, the client's copy is dropped",
        );
        expect(
            !seen.headers.contains_key("authorization"),
            "the client's token never reaches the upstream",
        );
        for (name, value) in &seen.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            let normalized = name.as_str().replace(['_', '.'], "-");
            expect(
                !FORGED_MARKERS.iter().any(|m| value.contains(m)),
                &format!("no forged value reaches the upstream (header {name})"),
            );
            expect(
                normalized == name.as_str()
                    || !(normalized.starts_with("x-user-") || normalized.starts_with("x-auth-")),
                &format!("no header aliasing an identity header ({name})"),
            );
        }
        expect(
            seen.header("mcp-session-id") == Some("client-session"),
            "Mcp-Session-Id passes to the upstream",
        );
        expect(
            seen.header("mcp-protocol-version") == Some("2025-11-25"),
            "MCP-Protocol-Version passes to the upstream",
        );
    }
}

/// Behind a proxy that does not overwrite them, a client's own `X-Original-URI` or
/// `X-Forwarded-*` description that differs from the proxy's is refused (fail closed), and
/// nothing reaches the upstream.
async fn forged_descriptions_are_refused(s: &Stack) {
    let key = bearer(API_KEY);
    for forged in FORGED_DESCRIPTIONS {
        let value = FORGED
            .iter()
            .find(|(name, _)| name == forged)
            .map(|(_, value)| *value)
            .expect("a forged value");
        let before = s.upstream.requests().len();
        let answer = s
            .call(
                "GET",
                "/mcp?a=1",
                &[("authorization", key.as_str()), (forged, value)],
                "",
            )
            .await;
        s.check(
            answer.status == 403,
            &format!("a forged {forged} → 403"),
            &answer,
        );
        s.check(
            s.upstream.requests().len() == before,
            "nothing reached the upstream",
            &answer,
        );
    }
}

async fn denials_are_the_gateway_answers_and_never_reach_the_upstream(s: &Stack) {
    let before = s.upstream.requests().len();
    let metadata = format!(
        "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
        s.public_url()
    );
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#;
    let bad = bearer("not-a-key");
    let no_scope = bearer(NO_SCOPE_KEY);
    // The headers `/verify` reads to learn the original request, forged so that a proxy
    // passing them on would make the gateway judge a public path or a preflight.
    let forged_original: &[(&str, &str)] = &[
        ("X-Forwarded-Uri", "/.well-known/oauth-protected-resource"),
        ("X-Forwarded-Method", "OPTIONS"),
        ("X-Original-URI", "/.well-known/oauth-protected-resource"),
        ("X-Original-Method", "OPTIONS"),
        ("Access-Control-Request-Method", "POST"),
    ];
    let bad_token = [("authorization", bad.as_str())];
    let no_scope_key = [("authorization", no_scope.as_str())];
    let cases = [
        ("no token", &[][..], 401, "unauthorized"),
        (
            "no token, forged original request",
            forged_original,
            401,
            "unauthorized",
        ),
        ("bad token", &bad_token, 401, "invalid_token"),
        (
            "key without the scope",
            &no_scope_key,
            403,
            "insufficient_scope",
        ),
    ];
    for (case, headers, status, error) in cases {
        // Behind ingress-nginx a forged description is refused outright (403, see
        // forged_descriptions_are_refused) rather than judged without a token.
        if matches!(s.proxy.kind, Kind::IngressNginx) && headers == forged_original {
            continue;
        }
        for method in ["POST", "GET"] {
            let payload = if method == "POST" { body } else { "" };
            let answer = s.call(method, "/mcp", headers, payload).await;
            let claim = |what: &str| format!("{case}, {method}: {what}");
            s.check(
                answer.status == status,
                &claim(&format!("{status}")),
                &answer,
            );
            let challenges: Vec<_> = answer.headers.get_all("www-authenticate").iter().collect();
            s.check(
                challenges.len() == 1,
                &claim("exactly one WWW-Authenticate"),
                &answer,
            );
            let challenge = answer.header("www-authenticate").unwrap_or_default();
            s.check(
                challenge.starts_with(&metadata),
                &claim(&format!("challenge starts with {metadata}")),
                &answer,
            );
            if error != "unauthorized" {
                s.check(
                    challenge.contains(&format!("error=\"{error}\"")),
                    &claim(&format!("challenge has error=\"{error}\"")),
                    &answer,
                );
            }
            let json: Option<serde_json::Value> = serde_json::from_str(&answer.body).ok();
            s.check(
                json.as_ref().is_some_and(|j| j["error"] == error),
                &claim(&format!("the gateway's JSON body with error {error}")),
                &answer,
            );
            s.check(
                !answer.headers.contains_key("x-user-id"),
                &claim("no identity header in a denial"),
                &answer,
            );
        }
    }
    let after = s.upstream.requests();
    s.check_text(
        after.len() == before,
        "denied requests never reach the upstream",
        &format!("{:#?}", &after[before..]),
    );
}

async fn metadata_is_public(s: &Stack) {
    let public = s.public_url();
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let answer = s.call("GET", path, &[], "").await;
        s.check(answer.status == 200, &format!("GET {path} → 200"), &answer);
        let json: Option<serde_json::Value> = serde_json::from_str(&answer.body).ok();
        s.check(
            json.is_some_and(|j| j["resource"] == format!("{public}/mcp")),
            &format!("GET {path}: resource is {public}/mcp"),
            &answer,
        );
    }
}

async fn sse_is_streamed(s: &Stack) {
    let request = client::request("GET", s.proxy.addr, "/mcp/sse")
        .header("authorization", bearer(API_KEY))
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
    s.check(
        head.header("content-type") == Some("text/event-stream"),
        "text/event-stream",
        &head,
    );
    s.check(
        head.header("mcp-session-id") == Some("upstream-session"),
        "Mcp-Session-Id on the stream",
        &head,
    );
    let mut body = response.into_body();
    let mut received = String::new();
    // The upstream holds `second` back until release(): seeing `first` now proves the
    // proxy does not buffer.
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

async fn only_mcp_paths_are_routed(s: &Stack) {
    let before = s.upstream.requests().len();
    let key = bearer(API_KEY);
    for path in ["/mcpfoo", "/other"] {
        let answer = s.call("GET", path, &[("authorization", &key)], "").await;
        s.check(answer.status == 404, &format!("GET {path} → 404"), &answer);
    }
    s.check_text(
        s.upstream.requests().len() == before,
        "unrouted paths never reach the upstream",
        "",
    );
}

async fn fails_closed_without_the_gateway(mut s: Stack) {
    let gateway = s.gateway.take().expect("gateway running");
    tokio::time::timeout(HANG_GUARD, gateway.shutdown())
        .await
        .unwrap_or_else(|_| panic!("gateway shutdown hangs{}", s.proxy.output()));
    let before = s.upstream.requests().len();
    let key = bearer(API_KEY);
    let answer = s.call("GET", "/mcp", &[("authorization", &key)], "").await;
    s.check(
        answer.status.is_server_error(),
        "gateway down → 5xx",
        &answer,
    );
    s.check_text(
        s.upstream.requests().len() == before,
        "gateway down → the upstream is never called",
        "",
    );
}

// ── the proxies ───────────────────────────────────────────────────────────────────────

#[derive(Clone, Copy, Debug)]
enum Kind {
    Traefik,
    Nginx,
    /// deploy/nginx/nginx.conf with the auth subrequests' headers as ingress-nginx sends
    /// them (see [`as_ingress_nginx`]).
    IngressNginx,
    Caddy,
}

impl Kind {
    fn program(self) -> &'static str {
        match self {
            Kind::Traefik => "traefik",
            Kind::Nginx | Kind::IngressNginx => "nginx",
            Kind::Caddy => "caddy",
        }
    }

    /// The deploy/ files this proxy reads.
    fn files(self) -> &'static [&'static str] {
        match self {
            Kind::Traefik => &["traefik/traefik.yml", "traefik/dynamic.yml"],
            Kind::Nginx | Kind::IngressNginx => &["nginx/nginx.conf"],
            Kind::Caddy => &["caddy/Caddyfile"],
        }
    }
}

/// The auth subrequests of deploy/nginx/nginx.conf reduced to what ingress-nginx's
/// generated `auth-url` location sends about the original request: `X-Original-URL`
/// (`$scheme://$http_host$request_uri`) and `X-Original-Method`, nothing of the Traefik
/// dialect and no `X-Original-URI` or `X-Forwarded-Host`.
fn as_ingress_nginx(text: &str) -> String {
    let dropped = [
        "proxy_set_header X-Original-URI     $request_uri;",
        "proxy_set_header X-Forwarded-Uri    $request_uri;",
        "proxy_set_header X-Forwarded-Method $request_method;",
        "proxy_set_header X-Forwarded-Host   $http_host;",
        "proxy_set_header X-Forwarded-Proto  $scheme;",
    ];
    let mut kept = Vec::new();
    let mut removed = 0;
    for line in text.lines() {
        if dropped.contains(&line.trim()) {
            removed += 1;
        } else {
            kept.push(line);
        }
    }
    // Both auth locations (the check and the repeated one for denials), each header once.
    assert_eq!(
        removed,
        2 * dropped.len(),
        "deploy/nginx/nginx.conf changed shape"
    );
    let text = kept.join("\n");
    assert_eq!(
        text.matches("proxy_set_header X-Original-URL     $scheme://$http_host$request_uri;")
            .count(),
        2
    );
    text
}

/// Replaces the example addresses of deploy/ in one pass (a substituted address is never
/// matched again), whole addresses only: no digit may follow, and the IP forms may not be
/// preceded by a digit or a dot. Returns the text and how often each pattern matched.
fn substitute(text: &str, table: &[(&str, String)]) -> (String, Vec<usize>) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut counts = vec![0; table.len()];
    let mut i = 0;
    'scan: while i < text.len() {
        for (n, (from, to)) in table.iter().enumerate() {
            if !text[i..].starts_with(from) {
                continue;
            }
            let before_ok = from.starts_with(':')
                || i == 0
                || !(bytes[i - 1].is_ascii_digit() || bytes[i - 1] == b'.');
            let after_ok = !bytes
                .get(i + from.len())
                .is_some_and(|b| b.is_ascii_digit());
            if before_ok && after_ok {
                out.push_str(to);
                counts[n] += 1;
                i += from.len();
                continue 'scan;
            }
        }
        let ch = text[i..].chars().next().expect("a char");
        out.push(ch);
        i += ch.len_utf8();
    }
    (out, counts)
}

struct FrontProxy {
    kind: Kind,
    addr: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
    child: Child,
}

impl FrontProxy {
    /// Copies the deploy/ files into a fresh directory with the addresses substituted and
    /// starts the proxy there, its stdout and stderr going to `proxy.log` in it.
    fn spawn(
        kind: Kind,
        program: &Path,
        gateway: SocketAddr,
        upstream: SocketAddr,
        port: u16,
    ) -> FrontProxy {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mcp-front-proxy-{}-{}-{}",
            kind.program(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch directory");

        let table = [
            ("127.0.0.1:8080", gateway.to_string()),
            ("127.0.0.1:3001", upstream.to_string()),
            ("127.0.0.1:8000", format!("127.0.0.1:{port}")),
            (":8000", format!(":{port}")),
        ];
        let mut total = vec![0; table.len()];
        for file in kind.files() {
            let source = external::repo_root().join("deploy").join(file);
            let text =
                fs::read_to_string(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
            let text = match kind {
                Kind::IngressNginx => as_ingress_nginx(&text),
                _ => text,
            };
            let (text, counts) = substitute(&text, &table);
            for (t, c) in total.iter_mut().zip(counts) {
                *t += c;
            }
            let name = Path::new(file).file_name().expect("file name");
            fs::write(dir.join(name), text).expect("write config");
        }
        assert!(
            total[0] > 0 && total[1] > 0 && total[2] + total[3] > 0,
            "deploy/ files of {kind:?} no longer use the example addresses \
             127.0.0.1:8080 / 127.0.0.1:3001 / 127.0.0.1:8000 (matches: {total:?})"
        );

        let log = dir.join("proxy.log");
        let out = fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut command = Command::new(program);
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .current_dir(&dir);
        match kind {
            // The file provider's `filename: dynamic.yml` is relative to the working dir.
            Kind::Traefik => command.arg("--configFile=traefik.yml"),
            Kind::Nginx | Kind::IngressNginx => command
                .arg("-p")
                .arg(format!("{}/", dir.display()))
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .args(["-e", "stderr", "-g", "daemon off;"]),
            Kind::Caddy => command
                .env("HOME", &dir)
                .env("XDG_CONFIG_HOME", dir.join("config"))
                .env("XDG_DATA_HOME", dir.join("data"))
                .arg("run")
                .arg("--config")
                .arg(dir.join("Caddyfile"))
                .args(["--adapter", "caddyfile"]),
        };
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        FrontProxy {
            kind,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            log,
            child,
        }
    }

    /// Ready once the metadata route answers 200 (Traefik says 404 until the file provider
    /// has loaded dynamic.yml).
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
            "\n----- {:?} output ({}) -----\n{text}----- end of {:?} output -----",
            self.kind,
            self.log.display(),
            self.kind
        )
    }
}

impl Drop for FrontProxy {
    fn drop(&mut self) {
        // nginx: SIGKILL would kill only the master and orphan the worker (which keeps the
        // port). SIGTERM is nginx's fast shutdown: the master stops its workers (SIGKILL
        // after a second if they linger), then exits — so waiting for it is bounded.
        // Traefik and Caddy are single processes; SIGKILL skips their grace period.
        if matches!(self.kind, Kind::Nginx | Kind::IngressNginx)
            && Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .is_ok_and(|status| status.success())
        {
            let _ = self.child.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "{:?} scratch directory kept: {}",
                self.kind,
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// ── upstream + gateway + proxy ──────────────────────────────────────────────────────────

struct Stack {
    // Field order = drop order: the proxy stops first.
    proxy: FrontProxy,
    gateway: Option<TestGateway>,
    upstream: Upstream,
}

fn gateway_config(upstream: &Upstream, proxy_port: u16) -> String {
    let no_scope_key = format!(
        "[[api_keys]]\nid = \"noscope\"\nhash = \"{}\"\nsubject = \"bob\"\nscopes = []\n",
        api_key::format_hash(&api_key::sha256(NO_SCOPE_KEY.as_bytes()))
    );
    let extra = format!("{no_scope_key}\n[forward_auth]\nenabled = true\npath = \"/verify\"\n");
    let config = standard_config(&upstream.url("/mcp"), "", &extra);
    let public = "public_url = \"http://127.0.0.1\"";
    assert!(config.contains(public), "{config}");
    config.replace(
        public,
        &format!("public_url = \"http://127.0.0.1:{proxy_port}\""),
    )
}

impl Stack {
    async fn start(kind: Kind) -> Option<Stack> {
        let program = external::require(kind.program())?;
        let attempts = 3;
        for attempt in 1..=attempts {
            let upstream = Upstream::start().await;
            // The proxy must be told its port, and the gateway's public URL names it.
            let port = common::free_port();
            let gateway = TestGateway::start(&gateway_config(&upstream, port)).await;
            let mut proxy = FrontProxy::spawn(kind, &program, gateway.addr, upstream.addr, port);
            match proxy.wait_ready().await {
                Ok(()) => {
                    return Some(Stack {
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
                    eprintln!("{kind:?} on port {port}: {why}; retrying on another port");
                    gateway.shutdown().await;
                }
                Err(why) => panic!("{kind:?} did not start: {why}{}", proxy.output()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn public_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy.addr.port())
    }

    fn check(&self, ok: bool, claim: &str, answer: &Answer) {
        if !ok {
            panic!(
                "{:?}: expected {claim}; got {} {:#?}\n{}{}",
                self.proxy.kind,
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
                "{:?}: expected {claim}\n{detail}{}",
                self.proxy.kind,
                self.proxy.output()
            );
        }
    }

    async fn send(&self, request: http::Request<Full<Bytes>>) -> http::Response<Incoming> {
        let what = format!("{} {}", request.method(), request.uri());
        match tokio::time::timeout(HANG_GUARD, send(self.proxy.addr, request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => panic!("{:?}: {what}: {e}{}", self.proxy.kind, self.proxy.output()),
            Err(_) => panic!(
                "{:?}: {what}: no response within {HANG_GUARD:?}{}",
                self.proxy.kind,
                self.proxy.output()
            ),
        }
    }

    /// One request through the proxy (Host = the proxy's address), whole body read.
    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut builder = client::request(method, self.proxy.addr, path);
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
            Ok(Err(e)) => panic!(
                "{:?}: {method} {path}: body: {e}{}",
                self.proxy.kind,
                self.proxy.output()
            ),
            Err(_) => panic!(
                "{:?}: {method} {path}: body not complete within {HANG_GUARD:?}{}",
                self.proxy.kind,
                self.proxy.output()
            ),
        };
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
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
