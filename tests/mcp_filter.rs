//! Phase 11 over real sockets: list answers show only what the caller may use — from a JSON
//! answer and from an event stream (only the response event is rewritten; the others pass
//! as they came) — with pagination cursors kept; whatever id the upstream echoes, whatever
//! JSON media type it names, and in a stream replayed on `GET` (`Last-Event-ID`); a list
//! answer it cannot read (compressed, or `NaN` that Python reads) is not passed on.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::http::{post_json, Answer};
use common::TestGateway;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mcp_auth_gateway::auth::api_key::{format_hash, sha256};

const TOOLS: &str = r#"[{"name":"search","description":"find"},{"name":"admin_reset"},{"name":"deploy"},{"name":"get_file"}]"#;

/// A small MCP-ish upstream: answers list requests from `/json` as JSON, from `/odd` as
/// `application/json-rpc`, and from `/sse` as an event stream (a progress notification
/// first, then the response), echoing the id as JavaScript would (`1.0` → `1`, `-0` → `0`);
/// a `GET` of `/sse` replays an earlier `tools/list` answer (resumption).
async fn upstream(seen: Arc<Mutex<Vec<http::HeaderMap>>>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push(request.headers().clone());
                        let sse = request.uri().path().ends_with("/sse");
                        let gzip = request.uri().path().ends_with("/gzip");
                        let odd = request.uri().path().ends_with("/odd");
                        let nan = request.uri().path().ends_with("/nan");
                        if request.method() == http::Method::GET {
                            let replay = format!(
                                "id: 7\ndata: {{\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{{\"tools\":{TOOLS}}}}}\n\n"
                            );
                            // `/odd` mislabels its stream; the TypeScript SDK reads a GET
                            // answer as one all the same.
                            let kind = if odd {
                                "text/plain"
                            } else {
                                "text/event-stream"
                            };
                            return Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", kind)
                                    .body(Full::new(Bytes::from(replay)))
                                    .unwrap(),
                            );
                        }
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let message: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let id = match message["id"].as_f64() {
                            Some(number) if number.fract() == 0.0 => {
                                serde_json::Value::from(number as i64)
                            }
                            _ => message["id"].clone(),
                        };
                        let (member, items) = match message["method"].as_str().unwrap() {
                            "tools/list" => ("tools", TOOLS.to_string()),
                            "prompts/list" => (
                                "prompts",
                                r#"[{"name":"secret"},{"name":"hello"}]"#.to_string(),
                            ),
                            "resources/list" => (
                                "resources",
                                r#"[{"uri":"file:///private/a"},{"uri":"file:///public/b"}]"#
                                    .to_string(),
                            ),
                            _ => ("other", "[]".to_string()),
                        };
                        let answer = format!(
                            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"{member}":{items},"nextCursor":"page-2"}}}}"#
                        );
                        let response = if sse {
                            let stream = format!(
                                "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"note\":\"admin_reset\"}}}}\n\nevent: message\ndata: {answer}\n\n"
                            );
                            Response::builder()
                                .header("content-type", "text/event-stream")
                                .body(Full::new(Bytes::from(stream)))
                                .unwrap()
                        } else if nan {
                            // What Python's json.dumps writes for float("nan"), and its
                            // json.loads reads back.
                            let answer = answer
                                .replace(r#""name":"search""#, r#""name":"search","default":NaN"#);
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(answer)))
                                .unwrap()
                        } else if odd {
                            Response::builder()
                                .header("content-type", "application/json-rpc")
                                .body(Full::new(Bytes::from(answer)))
                                .unwrap()
                        } else if gzip {
                            // Claims an encoding the filter cannot read.
                            Response::builder()
                                .header("content-type", "application/json")
                                .header("content-encoding", "gzip")
                                .body(Full::new(Bytes::from(answer)))
                                .unwrap()
                        } else {
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(answer)))
                                .unwrap()
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn key(id: &str, secret: &str, scopes: &[&str], groups: &[&str]) -> String {
    format!(
        "[[api_keys]]\nid = \"{id}\"\nhash = \"{}\"\nsubject = \"{id}\"\nscopes = {scopes:?}\ngroups = {groups:?}\n",
        format_hash(&sha256(secret.as_bytes()))
    )
}

async fn start(addr: std::net::SocketAddr) -> TestGateway {
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"
{contractor}
{admin}
[[routes]]
id = "json"
path = "/json"
upstream = "http://{addr}/json"
verifiers = ["api_keys"]
[routes.mcp]
tool_scopes = false
[[routes.mcp.rules]]
name = "admins-only"
tools = ["admin_*"]
prompts = ["secret"]
resources = ["file:///private/*"]
groups = ["admins"]
[[routes.mcp.rules]]
name = "deploy-needs-scope"
tools = ["deploy"]
scopes = ["deploy"]

[[routes]]
id = "odd"
path = "/odd"
upstream = "http://{addr}/odd"
verifiers = ["api_keys"]
[routes.mcp]
[[routes.mcp.rules]]
name = "admins-only"
tools = ["admin_*"]
groups = ["admins"]

[[routes]]
id = "nan"
path = "/nan"
upstream = "http://{addr}/nan"
verifiers = ["api_keys"]
[routes.mcp]
[[routes.mcp.rules]]
name = "admins-only"
tools = ["admin_*"]
groups = ["admins"]

[[routes]]
id = "gzip"
path = "/gzip"
upstream = "http://{addr}/gzip"
verifiers = ["api_keys"]
[routes.mcp]

[[routes]]
id = "sse"
path = "/sse"
upstream = "http://{addr}/sse"
verifiers = ["api_keys"]
[routes.mcp]
[[routes.mcp.rules]]
name = "admins-only"
tools = ["admin_*"]
groups = ["admins"]
"#,
        contractor = key(
            "contractor",
            "contractor-key-0123456789",
            &[],
            &["contractors"]
        ),
        admin = key("admin", "admin-key-0123456789", &[], &["admins"]),
    );
    TestGateway::start(&toml).await
}

async fn list(gateway: &TestGateway, path: &str, key: &str, method: &str) -> Answer {
    list_with_id(gateway, path, key, method, "41").await
}

async fn list_with_id(
    gateway: &TestGateway,
    path: &str,
    key: &str,
    method: &str,
    id: &str,
) -> Answer {
    post_json(
        gateway.addr,
        path,
        &[
            ("authorization", &format!("Bearer {key}")),
            ("accept-encoding", "gzip, br"),
        ],
        &format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{{}}}}"#),
    )
    .await
}

fn names(answer: &serde_json::Value, member: &str, key: &str) -> Vec<String> {
    answer["result"][member]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[key].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn json_list_answers_show_only_what_the_caller_may_use() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gateway = start(upstream(seen.clone()).await).await;
    let contractor = list(&gateway, "/json", "contractor-key-0123456789", "tools/list").await;
    assert_eq!(contractor.status, 200, "{}", contractor.body);
    let answer = contractor.json();
    // admin_* is refused to contractors: hidden. deploy needs a scope they could step up
    // to: listed. Descriptions and the cursor are kept.
    assert_eq!(
        names(&answer, "tools", "name"),
        ["search", "deploy", "get_file"]
    );
    assert_eq!(answer["result"]["tools"][0]["description"], "find");
    assert_eq!(answer["result"]["nextCursor"], "page-2");
    assert_eq!(answer["id"], 41);
    let admin = list(&gateway, "/json", "admin-key-0123456789", "tools/list")
        .await
        .json();
    assert_eq!(
        names(&admin, "tools", "name"),
        ["search", "admin_reset", "deploy", "get_file"]
    );
    // Prompts and resources follow the same rules.
    let prompts = list(
        &gateway,
        "/json",
        "contractor-key-0123456789",
        "prompts/list",
    )
    .await
    .json();
    assert_eq!(names(&prompts, "prompts", "name"), ["hello"]);
    let resources = list(
        &gateway,
        "/json",
        "contractor-key-0123456789",
        "resources/list",
    )
    .await
    .json();
    assert_eq!(names(&resources, "resources", "uri"), ["file:///public/b"]);
    // The upstream was asked for an uncompressed answer (it has to be read).
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .all(|h| h.get("accept-encoding").is_none()));
    gateway.shutdown().await;
}

#[tokio::test]
async fn event_stream_list_answers_are_filtered_event_by_event() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gateway = start(upstream(seen).await).await;
    let answer = list(&gateway, "/sse", "contractor-key-0123456789", "tools/list").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    let events: Vec<&str> = answer
        .body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .collect();
    assert_eq!(events.len(), 2, "{}", answer.body);
    // The notification passes byte for byte (even though it mentions admin_reset).
    assert_eq!(
        events[0],
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"note\":\"admin_reset\"}}"
    );
    let data = events[1]
        .strip_prefix("event: message\ndata: ")
        .expect("the response event");
    let response: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        names(&response, "tools", "name"),
        ["search", "deploy", "get_file"]
    );
    assert_eq!(response["result"]["nextCursor"], "page-2");
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_list_answer_the_filter_cannot_read_is_not_passed_on() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gateway = start(upstream(seen).await).await;
    let answer = list(&gateway, "/gzip", "contractor-key-0123456789", "tools/list").await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert!(!answer.body.contains("admin_reset"));
    // `NaN` is no JSON to the gateway's parser, but Python's reads it: not passed on either.
    let answer = list(&gateway, "/nan", "contractor-key-0123456789", "tools/list").await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert!(!answer.body.contains("admin_reset"));
    gateway.shutdown().await;
}

/// The upstream echoes `1.0`, `1e0` and `-0` as JavaScript does (`1`, `1`, `0`): the
/// client matches that answer to its request; so does the filter, whose test is the
/// answer's shape, not its id. Also under a JSON media type other than `application/json`.
#[tokio::test]
async fn a_list_is_filtered_whatever_id_the_upstream_echoes_and_whatever_json_type_it_names() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gateway = start(upstream(seen).await).await;
    for path in ["/json", "/odd", "/sse"] {
        for id in ["1.0", "1e0", "-0", "\"a\""] {
            let answer = list_with_id(
                &gateway,
                path,
                "contractor-key-0123456789",
                "tools/list",
                id,
            )
            .await;
            assert_eq!(answer.status, 200, "{path} {id}: {}", answer.body);
            // The response (the stream's last event; its notification names admin_reset).
            let response = answer.body.rsplit("data: ").next().unwrap_or_default();
            assert!(
                !response.contains("admin_reset"),
                "{path} {id}: {}",
                answer.body
            );
            assert!(response.contains("search"), "{path} {id}: {}", answer.body);
        }
    }
    gateway.shutdown().await;
}

/// A stream resumed with `GET` + `Last-Event-ID` replays answers to earlier requests: a list
/// among them is filtered like the answer it replays.
#[tokio::test]
async fn a_list_replayed_on_a_resumed_get_stream_is_filtered() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gateway = start(upstream(seen).await).await;
    // Also when the stream is not labelled as one (`/odd` says text/plain).
    for path in ["/sse", "/odd"] {
        let answer = common::http::get(
            gateway.addr,
            path,
            &[
                ("authorization", "Bearer contractor-key-0123456789"),
                ("accept", "text/event-stream"),
                ("last-event-id", "3"),
            ],
        )
        .await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert!(
            answer.body.starts_with("id: 7\ndata: "),
            "{path}: {}",
            answer.body
        );
        assert!(
            !answer.body.contains("admin_reset"),
            "{path}: {}",
            answer.body
        );
        assert!(
            answer.body.contains("\"search\""),
            "{path}: {}",
            answer.body
        );
    }
    gateway.shutdown().await;
}
