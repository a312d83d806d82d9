//! Listeners and connections: accept, optional TLS, HTTP/1.1 + HTTP/2 (hyper-util auto),
//! bounded connection count, graceful drain on shutdown.

pub mod router;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::config::Limits;
use crate::outbound::HttpClient;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An accepted connection once it has shown it is worth serving.
enum Stream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

/// What a handler knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    pub peer: SocketAddr,
    pub tls: bool,
}

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper refuses (431) heads that do not fit its read buffer; the exact limit is
        // enforced by the transport guard.
        .max_buf_size((limits.max_header_bytes + 4096).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes + 4096).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        // Dead HTTP/2 peers are found by ping, not left holding a connection slot.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// Accepts on one listener until `shutdown` flips, then drains for up to `grace`.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    upstream: HttpClient,
    slots: Arc<Semaphore>,
) {
    let builder = http_builder(&limits);
    // Shared by reference: cloning the client itself per request clones its pool handles.
    let upstream = Arc::new(upstream);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; closing new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let connection = Connection {
            peer,
            tls: tls.is_some(),
        };
        let upstream = upstream.clone();
        let service = service_fn(move |request| {
            let app = app.clone();
            let upstream = upstream.clone();
            async move {
                Ok::<_, Infallible>(router::handle(&app, &upstream, request, connection).await)
            }
        });
        let watcher = graceful.watcher();
        let first_byte_deadline = limits.header_read_timeout;
        let tls = tls.clone();
        let mut stopping = shutdown.clone();
        tokio::spawn(async move {
            // Until a connection has said something it is not worth draining: shutdown
            // drops it instead of waiting out its deadline.
            let opening = async {
                match tls {
                    None => {
                        // Until the first byte the HTTP version is unknown and hyper's head
                        // timeout has not started: a silent connection must not keep its slot.
                        let mut first = [0u8; 1];
                        let peeked =
                            tokio::time::timeout(first_byte_deadline, stream.peek(&mut first))
                                .await;
                        matches!(peeked, Ok(Ok(n)) if n > 0).then(|| Stream::Plain(stream))
                    }
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                        match handshake.await {
                            Ok(Ok(stream)) => Some(Stream::Tls(Box::new(stream))),
                            _ => None,
                        }
                    }
                }
            };
            let opened = tokio::select! {
                opened = opening => opened,
                _ = stopping.changed() => None,
            };
            match opened {
                Some(Stream::Plain(stream)) => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(Stream::Tls(stream)) => {
                    let conn = builder.serve_connection(TokioIo::new(*stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                None => drop(watcher),
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.shutdown_grace, "shutdown grace period over; closing remaining connections");
    }
}
