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
        .max_concurrent_streams(256);
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
) {
    let builder = http_builder(&limits);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
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
        match &tls {
            None => {
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let watched = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = watched.await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let (tls_done_tx, tls_done_rx) = tokio::sync::oneshot::channel();
                // The handshake runs in its own task; the finished connection is handed back so
                // the graceful watcher sees it.
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    if let Ok(Ok(stream)) = handshake.await {
                        let _ = tls_done_tx.send(stream);
                    }
                });
                let builder = builder.clone();
                let graceful_watch = graceful.watcher();
                tokio::spawn(async move {
                    if let Ok(stream) = tls_done_rx.await {
                        let conn = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .into_owned();
                        let _ = graceful_watch.watch(conn).await;
                    }
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.shutdown_grace, "shutdown grace period over; closing remaining connections");
    }
}
