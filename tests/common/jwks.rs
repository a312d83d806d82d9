//! A JWKS endpoint whose key set the test can change, count hits on, and take down.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;

pub struct JwksServer {
    pub addr: SocketAddr,
    document: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl JwksServer {
    pub async fn start(document: Value) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind jwks");
        let addr = listener.local_addr().expect("addr");
        let document = Arc::new(Mutex::new(document));
        let hits = Arc::new(AtomicUsize::new(0));
        let (doc, count) = (document.clone(), hits.clone());
        let task = tokio::spawn(async move {
            // Connections live in this task's JoinSet so `stop` really takes everything down.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (doc, count) = (doc.clone(), count.clone());
                connections.spawn(async move {
                    let service = service_fn(move |_request| {
                        count.fetch_add(1, Ordering::SeqCst);
                        let body = doc.lock().expect("lock").to_string();
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        JwksServer {
            addr,
            document,
            hits,
            task: Some(task),
        }
    }

    pub fn uri(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub fn set(&self, document: Value) {
        *self.document.lock().expect("lock") = document;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Closes the listener and every open connection.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
