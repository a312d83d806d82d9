//! Phase 7 over real sockets: a route with MCP rules reads each JSON-RPC body, judges every
//! message, forwards the exact bytes it judged, and answers refusals the way MCP clients
//! understand (step-up 403, JSON-RPC errors naming the rule, HTTP errors for notifications).

mod common;

use common::http::{get, post_json, Answer};
use common::{TestGateway, Upstream};
use mcp_auth_gateway::auth::api_key::{format_hash, sha256};

fn key(id: &str, secret: &str, scopes: &[&str], extra: &str) -> String {
    format!(
        "[[api_keys]]\nid = \"{id}\"\nhash = \"{}\"\nsubject = \"{id}\"\nscopes = {scopes:?}\n{extra}\n",
        format_hash(&sha256(secret.as_bytes()))
    )
}

async fn start(upstream: &Upstream) -> TestGateway {
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

{plain}
{admin}
{reader}

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "{upstream}"
verifiers = ["api_keys"]
scopes = ["mcp:tools"]

[routes.mcp]
default = "deny"
max_body_bytes = "4KB"

[[routes.mcp.rules]]
name = "no-deletes"
tools = ["delete_*"]
deny = true

[[routes.mcp.rules]]
name = "deploy-needs-admin"
tools = ["deploy"]
scopes = ["admin"]

[[routes.mcp.rules]]
name = "reads"
tools = ["get_*", "search"]
allow = true

[[routes.mcp.rules]]
name = "reports"
resources = ["file:///reports/*"]
allow = true

[[routes.mcp.rules]]
name = "no-cancel"
methods = ["notifications/cancelled"]
deny = true
"#,
        plain = key("plain", "plain-key-0123456789", &["mcp:tools"], ""),
        admin = key("admin", "admin-key-0123456789", &["mcp:tools", "admin"], ""),
        reader = key(
            "reader",
            "reader-key-0123456789",
            &["mcp:tools"],
            "tools = [\"get_*\"]"
        ),
        upstream = upstream.url("/mcp"),
    );
    TestGateway::start(&toml).await
}

async fn send(gateway: &TestGateway, key: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
    let auth = format!("Bearer {key}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    post_json(gateway.addr, "/mcp", &all, body).await
}

fn call(id: u32, tool: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"q":"x"}}}}}}"#
    )
}

const PLAIN: &str = "plain-key-0123456789";
const ADMIN: &str = "admin-key-0123456789";
const READER: &str = "reader-key-0123456789";

#[tokio::test]
async fn allowed_calls_reach_the_upstream_byte_for_byte() {
    let upstream = Upstream::start().await;
    let gateway = start(&upstream).await;
    // Odd but valid spelling: escapes and whitespace survive untouched.
    let body = "{ \"jsonrpc\":\"2.0\", \"id\":\"a\",\"method\":\"tools\\/call\",\"params\":{\"name\":\"get_\\u0066ile\",\"arguments\":{}} }";
    let answer = send(&gateway, PLAIN, body, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = upstream.requests().pop().expect("forwarded");
    assert_eq!(seen.body.as_ref(), body.as_bytes());
    // Protocol plumbing needs no rule; resources follow theirs.
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///reports/q1.pdf"}}"#,
    ] {
        let answer = send(&gateway, PLAIN, body, &[]).await;
        assert_eq!(answer.status, 200, "{body}: {}", answer.body);
    }
    // GET (the notification stream) is not read.
    let stream = get(
        gateway.addr,
        "/mcp",
        &[("authorization", &format!("Bearer {PLAIN}"))],
    )
    .await;
    assert_eq!(stream.status, 200);
    gateway.shutdown().await;
}

#[tokio::test]
async fn refusals_name_the_rule_and_keep_the_request_id() {
    let upstream = Upstream::start().await;
    let gateway = start(&upstream).await;
    let before = upstream.requests().len();

    let denied = send(&gateway, ADMIN, &call(7, "delete_repo"), &[]).await;
    assert_eq!(denied.status, 200, "a JSON-RPC error is an answer");
    assert_eq!(denied.json()["id"], 7);
    assert_eq!(denied.json()["error"]["code"], -32001);
    let message = denied.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("no-deletes"), "{message}");
    assert!(
        !message.contains("deploy") && !message.contains("get_"),
        "no other tool is named: {message}"
    );

    // Default deny for a tool no rule names.
    let unknown = send(&gateway, ADMIN, &call(8, "format_disk"), &[]).await;
    assert!(unknown.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("rule default"));
    // Resources outside the allowed pattern; prompts with no rule.
    let secret = send(&gateway, ADMIN, r#"{"jsonrpc":"2.0","id":9,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}"#, &[]).await;
    assert_eq!(secret.json()["error"]["code"], -32001);
    // A refused notification: an HTTP error, a JSON-RPC error without id.
    let cancel = send(
        &gateway,
        ADMIN,
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#,
        &[],
    )
    .await;
    assert_eq!(cancel.status, 403, "{}", cancel.body);
    assert_eq!(cancel.json()["id"], serde_json::Value::Null);
    assert!(cancel.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no-cancel"));
    // An API key's own tool list is a hard limit, whatever the rules allow.
    let reader = send(&gateway, READER, &call(10, "search"), &[]).await;
    assert!(
        reader.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("api_key.tools"),
        "{}",
        reader.body
    );
    assert_eq!(
        send(&gateway, READER, &call(11, "get_x"), &[])
            .await
            .json()
            .get("error"),
        None
    );

    assert_eq!(
        upstream.requests().len(),
        before + 1,
        "only the reader's get_x went upstream"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_missing_scope_gets_the_step_up_challenge_for_this_call() {
    let upstream = Upstream::start().await;
    let gateway = start(&upstream).await;
    let answer = send(&gateway, PLAIN, &call(5, "deploy"), &[]).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let challenge = answer.header("www-authenticate").unwrap().to_string();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"mcp:tools admin\""),
        "{challenge}"
    );
    assert!(
        challenge.contains(
            "resource_metadata=\"http://127.0.0.1/.well-known/oauth-protected-resource/mcp\""
        ),
        "{challenge}"
    );
    assert_eq!(answer.json()["id"], 5);
    // With the scope, the same call goes through.
    let answer = send(&gateway, ADMIN, &call(6, "deploy"), &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json().get("error"), None, "{}", answer.body);
    gateway.shutdown().await;
}

/// A body, its extra headers, the expected status and JSON-RPC error code.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, i64);

#[tokio::test]
async fn unreadable_oversized_or_contradicted_bodies_never_pass() {
    let upstream = Upstream::start().await;
    let gateway = start(&upstream).await;
    let cases: [Case; 7] = [
        ("{not json", vec![], 400, -32700),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_a","name":"delete_repo"}}"#,
            vec![],
            400,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list","params":{"name":"delete_repo"}}"#,
            vec![],
            400,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["delete_repo"]}}"#,
            vec![],
            400,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_a"}}"#,
            vec![("mcp-method", "tools/list")],
            400,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repo"}}"#,
            vec![("mcp-method", "tools/call"), ("mcp-name", "get_a")],
            400,
            -32600,
        ),
        (r#"[]"#, vec![], 400, -32600),
    ];
    let before = upstream.requests().len();
    for (body, headers, status, code) in cases {
        let answer = send(&gateway, ADMIN, body, &headers).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert_eq!(answer.json()["error"]["code"], code, "{body}");
        assert_eq!(answer.json()["id"], serde_json::Value::Null);
    }
    // Headers that agree are fine.
    let agreeing = send(
        &gateway,
        ADMIN,
        &call(1, "get_a"),
        &[("mcp-method", "tools/call"), ("mcp-name", "get_a")],
    )
    .await;
    assert_eq!(agreeing.status, 200);
    assert_eq!(upstream.requests().len(), before + 1);
    // Larger than the route reads: 413 with a JSON-RPC error.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"get_a","arguments":{{"x":"{}"}}}}}}"#,
        "a".repeat(5000)
    );
    let answer = send(&gateway, ADMIN, &big, &[]).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["jsonrpc"], "2.0");
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_batch_is_judged_message_by_message() {
    let upstream = Upstream::start().await;
    let gateway = start(&upstream).await;
    let before = upstream.requests().len();
    let batch = format!(
        "[{},{},{}]",
        call(1, "get_a"),
        call(2, "delete_repo"),
        r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#
    );
    let answer = send(&gateway, ADMIN, &batch, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answers = answer.json();
    let answers = answers.as_array().expect("one answer per request");
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0]["id"], 1);
    assert!(answers[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not sent"));
    assert_eq!(answers[1]["id"], 2);
    assert!(answers[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no-deletes"));
    assert_eq!(
        upstream.requests().len(),
        before,
        "nothing of a refused batch is forwarded"
    );
    // An all-allowed batch goes through as it came.
    let fine = format!("[{},{}]", call(3, "get_a"), call(4, "search"));
    let answer = send(&gateway, ADMIN, &fine, &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        upstream.requests().pop().unwrap().body.as_ref(),
        fine.as_bytes()
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_tool_scope_convention_steps_up_per_tool() {
    let upstream = Upstream::start().await;
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

{search}
{all}

[[routes]]
id = "tools"
path = "/mcp"
upstream = "{upstream}"
verifiers = ["api_keys"]

[routes.mcp]
tool_scopes = true
"#,
        search = key("search", "search-key-0123456789", &["mcp:tool:search"], ""),
        all = key("all", "all-key-0123456789", &["mcp:tool:*"], ""),
        upstream = upstream.url("/mcp"),
    );
    let gateway = TestGateway::start(&toml).await;
    let ok = send(&gateway, "search-key-0123456789", &call(1, "search"), &[]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json().get("error"), None, "{}", ok.body);
    let step_up = send(&gateway, "search-key-0123456789", &call(2, "deploy"), &[]).await;
    assert_eq!(step_up.status, 403);
    let challenge = step_up.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("scope=\"mcp:tool:search mcp:tool:deploy\""),
        "what it holds and what this call needs: {challenge}"
    );
    let wildcard = send(&gateway, "all-key-0123456789", &call(3, "deploy"), &[]).await;
    assert_eq!(wildcard.json().get("error"), None, "{}", wildcard.body);
    gateway.shutdown().await;
}

#[test]
fn check_refuses_rules_that_can_never_match() {
    let base = |rules: &str| {
        format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

{key}

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "http://127.0.0.1:9/"
verifiers = ["api_keys"]

[routes.mcp]
{rules}
"#,
            key = key("k", "k-key-0123456789abcd", &[], ""),
        )
    };
    let problems = |rules: &str| match mcp_auth_gateway::config::from_toml_str(
        &base(rules),
        std::path::Path::new("."),
    ) {
        Ok(_) => String::new(),
        Err(error) => error.to_string(),
    };
    let unreachable = problems(
        "[[routes.mcp.rules]]\nname = \"p\"\nmethods = [\"prompts/*\"]\ntools = [\"x\"]\ndeny = true\n",
    );
    assert!(
        unreachable.contains("routes[0].mcp.rules[0]") && unreachable.contains("can never match"),
        "{unreachable}"
    );
    let shadowed = problems(
        "[[routes.mcp.rules]]\nname = \"all\"\nallow = true\n[[routes.mcp.rules]]\nname = \"late\"\ntools = [\"x\"]\ndeny = true\n",
    );
    assert!(
        shadowed.contains("routes[0].mcp.rules[1]") && shadowed.contains("\"all\""),
        "{shadowed}"
    );
    let two_outcomes = problems("[[routes.mcp.rules]]\nname = \"x\"\nallow = true\ndeny = true\n");
    assert!(
        two_outcomes.contains("exactly one outcome"),
        "{two_outcomes}"
    );
    let bad_default = problems("default = \"maybe\"\n");
    assert!(
        bad_default.contains("routes[0].mcp.default"),
        "{bad_default}"
    );
    assert_eq!(problems("default = \"deny\"\n[[routes.mcp.rules]]\nname = \"ok\"\ntools = [\"get_*\"]\nallow = true\n"), "");
}

#[test]
fn check_prints_each_routes_compiled_rules() {
    let dir = common::TempDir::new("rules-check");
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"
{key}
[[routes]]
id = "mcp"
path = "/mcp"
upstream = "http://127.0.0.1:9/"
verifiers = ["api_keys"]
[routes.mcp]
default = "deny"
tool_scopes = true
[[routes.mcp.rules]]
name = "no-deletes"
tools = ["delete_*"]
deny = true
[[routes.mcp.rules]]
name = "admins"
methods = ["prompts/get"]
prompts = ["*"]
groups = ["admins"]
"#,
            key = key("k", "k-key-0123456789abcd", &[], "")
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-auth-gateway"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for line in [
        "mcp: default=deny tool_scopes=true max_body_bytes=1048576",
        "rule no-deletes: tools=[delete_*] -> deny",
        "rule admins: methods=[prompts/get] prompts=[*] -> require groups=[admins]",
        "then tools/call NAME needs scope mcp:tool:NAME or mcp:tool:*",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

/// The audit event of a judged request names the method, the tool and the refusing rule —
/// never the tool's arguments.
#[tokio::test]
async fn the_audit_event_names_method_tool_and_rule_but_not_arguments() {
    use std::io::BufRead;
    let upstream = Upstream::start().await;
    let dir = common::TempDir::new("rules-audit");
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"
[log]
format = "json"
{key}
[[routes]]
id = "mcp"
path = "/mcp"
upstream = "{upstream}"
verifiers = ["api_keys"]
[[routes.mcp.rules]]
name = "no-deletes"
tools = ["delete_*"]
deny = true
"#,
            key = key("k", PLAIN, &[], ""),
            upstream = upstream.url("/mcp"),
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-auth-gateway"))
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(event) = serde_json::from_str(&line) {
                let _ = tx.send(event);
            }
        }
    });
    let next = |message: &str| loop {
        let event = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("log event");
        if event["message"] == message || event["fields"]["message"] == message {
            return event;
        }
    };
    let listening = next("listening");
    let addr: std::net::SocketAddr = listening["addr"]
        .as_str()
        .or(listening["fields"]["addr"].as_str())
        .expect("addr")
        .parse()
        .unwrap();
    let secret_args = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repo","arguments":{"password":"hunter2"}}}"#;
    let answer = post_json(
        addr,
        "/mcp",
        &[("authorization", &format!("Bearer {PLAIN}"))],
        secret_args,
    )
    .await;
    assert!(answer.body.contains("no-deletes"));
    let event = next("request");
    let text = event.to_string();
    let field = |name: &str| {
        event[name]
            .as_str()
            .or(event["fields"][name].as_str())
            .map(str::to_string)
    };
    assert_eq!(field("mcp_method").as_deref(), Some("tools/call"), "{text}");
    assert_eq!(
        field("mcp_target").as_deref(),
        Some("delete_repo"),
        "{text}"
    );
    assert_eq!(field("rule").as_deref(), Some("no-deletes"), "{text}");
    assert!(!text.contains("hunter2"), "arguments never logged: {text}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Only a POST's messages are judged, so only a POST may carry any: a denied call sent as
/// the body of a GET or DELETE is refused, not forwarded unjudged (an upstream routing every
/// method to its JSON-RPC handler would act on it).
#[tokio::test]
async fn a_body_on_another_method_is_refused_not_forwarded_unjudged() {
    let upstream = Upstream::start().await;
    let gateway = start(&upstream).await;
    for method in ["GET", "DELETE"] {
        let request = common::http::request(method, gateway.addr, "/mcp")
            .header("authorization", format!("Bearer {PLAIN}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(call(
                1,
                "delete_city",
            ))))
            .unwrap();
        let answer = common::http::exchange(gateway.addr, request).await;
        assert_eq!(answer.status, 400, "{method}: {}", answer.body);
        let error = &answer.json()["error"];
        assert_eq!(error["code"], -32600, "{method}: {}", answer.body);
        assert!(
            error["message"].as_str().unwrap().contains("only a POST"),
            "{method}: {}",
            answer.body
        );
    }
    assert!(
        upstream.requests().is_empty(),
        "nothing reached the upstream"
    );
    // Without a body they pass as before.
    let answer = get(
        gateway.addr,
        "/mcp",
        &[("authorization", &format!("Bearer {PLAIN}"))],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    gateway.shutdown().await;
}

/// Resource rules match URIs as text, and upstream SDKs resolve a URI before they look it
/// up (`new URL(…)`, pydantic): a URI that resolves to another text is refused, or
/// `file:///reports/../secret` would be judged under `file:///reports/*` and read as
/// `file:///secret`.
#[tokio::test]
async fn resource_uris_not_in_canonical_form_are_refused() {
    let upstream = Upstream::start().await;
    let gateway = start(&upstream).await;
    let read = |uri: &str| {
        serde_json::json!({
            "jsonrpc": "2.0", "id": 9, "method": "resources/read", "params": {"uri": uri}
        })
        .to_string()
    };
    let allowed = send(&gateway, PLAIN, &read("file:///reports/q3.pdf"), &[]).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    for uri in [
        "file:///reports/../secret/b",
        "file:///reports/%2e%2e/secret/b",
        "file:///reports/./../secret/b",
        "FILE:///reports/x",
        "file://localhost/reports/x",
        "file:///reports\\..\\secret",
        " file:///reports/x",
        "file:///reports/..%2Fsecret/b",
        "file:///reports/%2e%2E%5csecret",
        "file:///reports/%2552eport",
    ] {
        let answer = send(&gateway, PLAIN, &read(uri), &[]).await;
        assert_eq!(answer.status, 200, "{uri}: {}", answer.body);
        let error = &answer.json()["error"];
        assert_eq!(error["code"], -32001, "{uri}: {}", answer.body);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("resource.canonical_uri"),
            "{uri}: {}",
            answer.body
        );
    }
    assert_eq!(
        upstream.requests().len(),
        1,
        "only the canonical read went on"
    );
    gateway.shutdown().await;
}

/// Completing an argument of a prompt or resource template is judged as using it: the
/// completions of a refused prompt do not reach the caller.
#[tokio::test]
async fn completions_are_judged_as_the_prompt_or_template_they_complete() {
    let upstream = Upstream::start().await;
    let gateway = start(&upstream).await;
    let complete = |reference: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":4,"method":"completion/complete","params":{{"ref":{reference},"argument":{{"name":"a","value":""}}}}}}"#
        )
    };
    // No rule allows any prompt; `default = "deny"` refuses the one completed.
    let prompt = send(
        &gateway,
        PLAIN,
        &complete(r#"{"type":"ref/prompt","name":"secret_plan"}"#),
        &[],
    )
    .await;
    assert_eq!(prompt.json()["error"]["code"], -32001, "{}", prompt.body);
    assert!(prompt.body.contains("rule default"), "{}", prompt.body);
    // The `reports` rule allows `file:///reports/*`: its templates may be completed.
    let template = send(
        &gateway,
        PLAIN,
        &complete(r#"{"type":"ref/resource","uri":"file:///reports/{quarter}"}"#),
        &[],
    )
    .await;
    assert_eq!(template.status, 200, "{}", template.body);
    assert!(template.json()["error"].is_null(), "{}", template.body);
    assert_eq!(
        upstream.requests().len(),
        1,
        "only the allowed completion went on"
    );
    gateway.shutdown().await;

    // Rules limited to `prompts/get` decide its completions too, both ways.
    let upstream = Upstream::start().await;
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"
{plain}
[[routes]]
id = "mcp"
path = "/mcp"
upstream = "{upstream}"
verifiers = ["api_keys"]
[routes.mcp]
default = "deny"
[[routes.mcp.rules]]
name = "no-secret-prompts"
methods = ["prompts/get"]
prompts = ["secret_*"]
deny = true
[[routes.mcp.rules]]
name = "prompts"
methods = ["prompts/get"]
prompts = ["*"]
allow = true
"#,
        plain = key("plain", "plain-key-0123456789", &["mcp:tools"], ""),
        upstream = upstream.url("/mcp"),
    );
    let gateway = TestGateway::start(&toml).await;
    let secret = send(
        &gateway,
        PLAIN,
        &complete(r#"{"type":"ref/prompt","name":"secret_plan"}"#),
        &[],
    )
    .await;
    assert!(
        secret.body.contains("rule no-secret-prompts"),
        "{}",
        secret.body
    );
    let hello = send(
        &gateway,
        PLAIN,
        &complete(r#"{"type":"ref/prompt","name":"hello"}"#),
        &[],
    )
    .await;
    assert!(hello.json()["error"].is_null(), "{}", hello.body);
    assert_eq!(upstream.requests().len(), 1);
    gateway.shutdown().await;
}
