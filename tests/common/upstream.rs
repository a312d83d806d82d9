//! A small upstream that records what it received. Paths (after any prefix):
//! - `…/sse`: `text/event-stream`; sends `data: first`, then `data: second` only after
//!   [`Upstream::release`] — a test that sees `first` before releasing proves streaming
//!   without timing;
//! - `…/open-stream`: one event, then stays open until the client leaves;
//! - `…/slow`: answers after 30 s (for the response timeout);
//! - anything else: 200 with a JSON echo `{method, path, headers}` and an
//!   `Mcp-Session-Id: upstream-session` header.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Trailers that came after the body, if any.
    pub trailers: Option<HeaderMap>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
struct State {
    requests: Arc<Mutex<Vec<Recorded>>>,
    release: Arc<Notify>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    state: State,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A body fed from a channel: each message is written as soon as it is sent.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let state = State {
            requests: Arc::new(Mutex::new(Vec::new())),
            release: Arc::new(Notify::new()),
        };
        let served = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = served.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(respond(state, request).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("lock").clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the upstream received a request")
    }

    /// Lets the `…/sse` response send its second event.
    pub fn release(&self) {
        self.state.release.notify_waiters();
        self.state.release.notify_one();
    }
}

async fn respond(state: State, request: Request<Incoming>) -> Response<BoxBody> {
    let (parts, body) = request.into_parts();
    let (body, trailers) = match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            (collected.to_bytes(), trailers)
        }
        Err(_) => (Bytes::new(), None),
    };
    let recorded = Recorded {
        trailers,
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body,
    };
    state.requests.lock().expect("lock").push(recorded.clone());
    let path = parts.uri.path();

    if path.ends_with("/sse") || path.ends_with("/open-stream") {
        let (tx, rx) = mpsc::channel(4);
        let release = state.release.clone();
        let forever = path.ends_with("/open-stream");
        tokio::spawn(async move {
            let _ = tx.send(Bytes::from_static(b"id: 1\ndata: first\n\n")).await;
            if forever {
                tx.closed().await;
                return;
            }
            release.notified().await;
            let _ = tx
                .send(Bytes::from_static(b"id: 2\ndata: second\n\n"))
                .await;
        });
        return Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .header("mcp-session-id", "upstream-session")
            .body(ChannelBody(rx).boxed_unsync())
            .expect("response");
    }
    if path.ends_with("/set-cookie") {
        // An upstream that tries to set a cookie and to challenge on its own.
        return Response::builder()
            .header("content-type", "application/json")
            .header("set-cookie", "session=upstream; Path=/")
            .header("set-cookie", "other=1")
            .header("strict-transport-security", "max-age=0")
            .header("clear-site-data", "\"cookies\"")
            .header("alt-svc", "h3=\":443\"; ma=86400")
            .header("x-upstream-own", "kept")
            .header(
                "www-authenticate",
                r#"Bearer resource_metadata="https://evil.example/.well-known/oauth-protected-resource""#,
            )
            .body(http_body_util::Full::new(Bytes::from_static(b"{}")).boxed_unsync())
            .expect("response");
    }
    if path.ends_with("/unauthorized") {
        return Response::builder()
            .status(401)
            .header("content-type", "application/json")
            .header(
                "www-authenticate",
                r#"Bearer resource_metadata="https://evil.example/.well-known/oauth-protected-resource""#,
            )
            .body(http_body_util::Full::new(Bytes::from_static(b"{\"error\":\"x\"}")).boxed_unsync())
            .expect("response");
    }
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let headers: BTreeMap<String, Vec<String>> = parts
        .headers
        .keys()
        .map(|name| {
            let values = parts
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            (name.to_string(), values)
        })
        .collect();
    let echo = serde_json::json!({
        "method": recorded.method,
        "path": recorded.path_and_query,
        "headers": headers,
    });
    Response::builder()
        .header("content-type", "application/json")
        .header("mcp-session-id", "upstream-session")
        .header("access-control-allow-origin", "*")
        .header("connection", "x-upstream-hop")
        .header("x-upstream-hop", "must-not-pass")
        .body(http_body_util::Full::new(Bytes::from(echo.to_string())).boxed_unsync())
        .expect("response")
}
