//! Listeners and connections: accept, the connection budget (process-wide and per client
//! address), optional TLS, HTTP/1.1 or HTTP/2 (sniffed under a deadline), idle close,
//! graceful drain on shutdown.

pub mod budget;
pub mod connection;
pub mod router;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::config::Limits;
use crate::observability::Throttle;
use crate::outbound::HttpClient;
use budget::ConnectionBudget;
use connection::{Activity, Protocol, Tracked};

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection asked to close when idle may take to do so.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// What a handler knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    pub peer: SocketAddr,
    pub tls: bool,
    pub role: ListenerRole,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerRole {
    /// Routes, discovery, health — and `/verify` unless it has listeners of its own.
    Main,
    /// `[admin] listen`: health, readiness, metrics, discovery and `/verify`.
    Admin,
}

/// One builder per protocol: the protocol is decided before hyper sees the connection.
#[derive(Clone)]
struct Builders {
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
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
        // Each stream can become an upstream exchange: keep the fan-out per connection modest.
        .max_concurrent_streams(100)
        // Dead HTTP/2 peers are found by ping, not left holding a connection slot.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// What every listener of one worker shares.
#[derive(Clone)]
pub struct WorkerContext {
    pub app: Arc<App>,
    pub limits: Limits,
    /// Flips to `true` on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// The worker's own upstream pool.
    pub upstream: HttpClient,
    /// Shared by all workers: `max_connections` bounds the whole process.
    pub budget: Arc<ConnectionBudget>,
}

/// Accepts on one listener until `shutdown` flips, then drains for up to `shutdown_grace`.
pub async fn serve(context: WorkerContext, listener: TcpListener, role: ListenerRole) {
    let WorkerContext {
        app,
        limits,
        shutdown,
        upstream,
        budget,
    } = context;
    let builders = Builders {
        http1: http_builder(&limits).http1_only(),
        http2: http_builder(&limits).http2_only(),
    };
    // Shared by reference: cloning the client itself per request clones its pool handles.
    let upstream = Arc::new(upstream);
    // Every connection task holds a sender; when all are gone, the drain is over.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    let mut stopping = shutdown.clone();
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
            _ = stopping.changed() => break,
        };
        let Some(admitted) = budget.admit(peer.ip()) else {
            continue;
        };
        // Read per connection from the configuration in service, so a reload picks up renewed
        // certificates (ACME, cert-manager). The admin listener is internal plain HTTP.
        let tls = match role {
            ListenerRole::Main => app.config().server.tls.clone().map(TlsAcceptor::from),
            ListenerRole::Admin => None,
        };
        let _ = stream.set_nodelay(true);
        let task = ConnectionTask {
            app: app.clone(),
            upstream: upstream.clone(),
            builders: builders.clone(),
            limits: limits.clone(),
            connection: Connection {
                peer,
                tls: tls.is_some(),
                role,
            },
            stopping: shutdown.clone(),
        };
        let alive = alive.clone();
        tokio::spawn(async move {
            task.run(stream, tls).await;
            drop(admitted);
            drop(alive);
        });
    }
    drop(listener);
    drop(alive);
    if tokio::time::timeout(limits.shutdown_grace, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.shutdown_grace, "shutdown grace period over; closing remaining connections");
    }
}

struct ConnectionTask {
    app: Arc<App>,
    upstream: Arc<HttpClient>,
    builders: Builders,
    limits: Limits,
    connection: Connection,
    stopping: watch::Receiver<bool>,
}

impl ConnectionTask {
    async fn run(self, stream: tokio::net::TcpStream, tls: Option<TlsAcceptor>) {
        let mut stopping = self.stopping.clone();
        match tls {
            None => self.serve(stream).await,
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                let stream = tokio::select! {
                    handshake = handshake => match handshake {
                        Ok(Ok(stream)) => stream,
                        _ => return,
                    },
                    _ = stopping.changed() => return,
                };
                self.serve(stream).await
            }
        }
    }

    /// Reads the protocol under `header_read_timeout`, then serves the connection. Until a
    /// connection has said which protocol it speaks it is not worth draining: shutdown
    /// drops it instead of waiting out its deadline.
    async fn serve<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut stopping = self.stopping.clone();
        let sniffing =
            tokio::time::timeout(self.limits.header_read_timeout, connection::sniff(stream));
        let sniffed = tokio::select! {
            sniffed = sniffing => sniffed,
            _ = stopping.changed() => return,
        };
        let Ok(Ok(Some((io, protocol)))) = sniffed else {
            return;
        };
        let builder = match protocol {
            Protocol::Http1 => &self.builders.http1,
            Protocol::Http2 => &self.builders.http2,
        };
        let activity = Activity::default();
        let service = {
            let app = self.app.clone();
            let upstream = self.upstream.clone();
            let activity = activity.clone();
            let connection = self.connection;
            service_fn(move |request| {
                let app = app.clone();
                let upstream = upstream.clone();
                let in_flight = activity.start();
                let activity = activity.clone();
                async move {
                    let response = router::handle(&app, &upstream, request, connection).await;
                    Ok::<_, Infallible>(
                        response.map(|body| Tracked::new(body, in_flight, &activity)),
                    )
                }
            })
        };
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        // Ask the connection to finish gracefully (in-flight requests complete; HTTP/2 sends
        // GOAWAY) on shutdown, or once no request has been in flight for `idle_timeout`.
        let mut conn = std::pin::pin!(conn);
        let mut stopping = self.stopping.clone();
        // A client that stops taking its responses is dropped after `send_timeout` without
        // progress; a connection asked to close when idle gets CLOSE_GRACE to say goodbye.
        let send_timeout = self.limits.send_timeout;
        let mut stall_check =
            tokio::time::interval((send_timeout / 2).max(Duration::from_millis(100)));
        stall_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let close_deadline = tokio::time::sleep(Duration::MAX);
        tokio::pin!(close_deadline);
        let mut closing = false;
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stopping.changed(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = activity.idle_for(self.limits.idle_timeout), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    close_deadline.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
                }
                _ = stall_check.tick() => {
                    if activity.client_stalled(send_timeout) {
                        static STALLED: Throttle = Throttle::new(Duration::from_secs(10));
                        if let Some(suppressed) = STALLED.allow() {
                            tracing::warn!(peer = %self.connection.peer, suppressed,
                                "client stopped reading its responses; closing the connection (logged at most every 10 s)");
                        }
                        return;
                    }
                }
                _ = &mut close_deadline => return,
            }
        }
    }
}
