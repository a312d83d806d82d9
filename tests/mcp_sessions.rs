//! Session binding over real sockets: the principal that opened an MCP session owns it; its
//! `Mcp-Session-Id` from anyone else is answered as an unknown session (404) and never
//! reaches the upstream.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::http::{exchange, request, Answer};
use common::TestGateway;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mcp_auth_gateway::auth::api_key::{format_hash, sha256};

/// An upstream that opens a session for any request without one, and records which
/// session ids reached it.
async fn upstream(seen: Arc<Mutex<Vec<String>>>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (seen, counter) = (seen.clone(), counter.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (seen, counter) = (seen.clone(), counter.clone());
                    async move {
                        let mut response =
                            http::Response::builder().header("content-type", "application/json");
                        match request.headers().get("mcp-session-id") {
                            Some(id) => seen.lock().unwrap().push(id.to_str().unwrap().to_string()),
                            None => {
                                let n = counter.fetch_add(1, Ordering::SeqCst);
                                response =
                                    response.header("mcp-session-id", format!("session-{n}"));
                            }
                        }
                        Ok::<_, Infallible>(
                            response
                                .body(Full::new(Bytes::from_static(
                                    br#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
                                )))
                                .unwrap(),
                        )
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

fn key(id: &str) -> String {
    format!(
        "[[api_keys]]\nid = \"{id}\"\nhash = \"{}\"\nsubject = \"{id}\"\n",
        format_hash(&sha256(format!("{id}-key-0123456789").as_bytes()))
    )
}

/// A gateway with alice's and mallory's API keys and one route per id (`/<id>`), each to
/// the upstream at `addr`.
async fn start(addr: std::net::SocketAddr, routes: &[&str]) -> TestGateway {
    let mut toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\npublic_url = \"http://127.0.0.1\"\n{}{}",
        key("alice"),
        key("mallory")
    );
    for id in routes {
        toml.push_str(&format!(
            "[[routes]]\nid = \"{id}\"\npath = \"/{id}\"\nupstream = \"http://{addr}/mcp\"\nverifiers = [\"api_keys\"]\n"
        ));
    }
    TestGateway::start(&toml).await
}

async fn send(gateway: &TestGateway, method: &str, who: &str, session: Option<&str>) -> Answer {
    let mut builder = request(method, gateway.addr, "/mcp")
        .header("authorization", format!("Bearer {who}-key-0123456789"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(session) = session {
        builder = builder.header("mcp-session-id", session);
    }
    let body = if method == "POST" {
        Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
    } else {
        Bytes::new()
    };
    exchange(gateway.addr, builder.body(Full::new(body)).unwrap()).await
}

#[tokio::test]
async fn a_session_belongs_to_the_principal_that_opened_it() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let addr = upstream(seen.clone()).await;
    let gateway = start(addr, &["mcp"]).await;

    // alice opens a session (initialize has no session id; the answer carries one).
    let opened = send(&gateway, "POST", "alice", None).await;
    let session = opened
        .header("mcp-session-id")
        .expect("a session")
        .to_string();
    assert_eq!(
        send(&gateway, "POST", "alice", Some(&session)).await.status,
        200
    );

    // mallory presenting it: an unknown session, whatever the method; never forwarded.
    for method in ["POST", "GET", "DELETE"] {
        let refused = send(&gateway, method, "mallory", Some(&session)).await;
        assert_eq!(refused.status, 404, "{method}: {}", refused.body);
        assert_eq!(refused.json()["error"]["message"], "Session not found");
    }
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![session.clone()],
        "only alice's use reached the upstream"
    );

    // A session id the gateway never saw (after a restart) goes to the first who uses it.
    assert_eq!(
        send(&gateway, "POST", "mallory", Some("from-before"))
            .await
            .status,
        200
    );
    assert_eq!(
        send(&gateway, "POST", "alice", Some("from-before"))
            .await
            .status,
        404
    );
    // Unusable ids are unknown sessions too.
    let long = "x".repeat(600);
    assert_eq!(
        send(&gateway, "POST", "alice", Some(&long)).await.status,
        404
    );
    gateway.shutdown().await;
}

/// A session lives on the upstream server, not on the route: with two routes to the same
/// server, the one alice did not use is no way for mallory into her session.
#[tokio::test]
async fn a_second_route_to_the_same_server_does_not_open_anothers_session() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let addr = upstream(seen.clone()).await;
    let gateway = start(addr, &["mcp", "mcp-b"]).await;
    let opened = send(&gateway, "POST", "alice", None).await;
    let session = opened
        .header("mcp-session-id")
        .expect("a session")
        .to_string();
    let other_route = request("POST", gateway.addr, "/mcp-b")
        .header("authorization", "Bearer mallory-key-0123456789")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .body(Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        )))
        .unwrap();
    let refused = exchange(gateway.addr, other_route).await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    assert!(seen.lock().unwrap().is_empty(), "never forwarded");
    gateway.shutdown().await;
}
