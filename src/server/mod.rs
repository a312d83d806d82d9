//! Listeners and connections: accept, the connection budget (process-wide and per client
//! address), optional TLS, HTTP/1.1 or HTTP/2 (sniffed under a deadline), idle close,
//! graceful drain on shutdown. HTTP/1.x on plain TCP is served by the gateway's own
//! [`http1`] server; TLS clients and HTTP/2 by hyper.

pub mod budget;
pub mod connection;
pub mod http1;
pub mod router;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::{http1 as hyper_http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::body::RequestBody;
use crate::config::Limits;
use crate::observability::Throttle;
use crate::upstream::Upstreams;
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
    http1: hyper_http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: &Limits) -> Self {
        let mut http1 = hyper_http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            // hyper refuses (431) heads that do not fit its read buffer; the exact limit is
            // enforced by the transport guard.
            .max_buf_size((limits.max_header_bytes + 4096).max(8192));
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes + 4096).unwrap_or(u32::MAX))
            // Each stream can become an upstream exchange: keep the fan-out per connection
            // modest.
            .max_concurrent_streams(100)
            // Dead HTTP/2 peers are found by ping, not left holding a connection slot.
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10));
        Self { http1, http2 }
    }
}

/// What every listener of one worker shares.
#[derive(Clone)]
pub struct WorkerContext {
    pub app: Arc<App>,
    pub limits: Limits,
    /// Flips to `true` on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// The worker's own upstream connections (shared by its listeners).
    pub upstream: Arc<Upstreams>,
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
    // One allocation per listener, not a copy in every connection's task (an idle SSE
    // stream's task held two copies of the builders and limits: ~1.2 KB).
    let shared = Arc::new(Shared {
        builders: Builders::new(&limits),
        limits: limits.clone(),
        app: app.clone(),
        upstream,
    });
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
        // Linux copies TCP_NODELAY from the listener (set in `app::bind_shared`) to every
        // connection it accepts: one system call per connection fewer.
        if !cfg!(target_os = "linux") {
            let _ = stream.set_nodelay(true);
        }
        let task = ConnectionTask {
            shared: shared.clone(),
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

/// What every connection of a listener shares.
struct Shared {
    app: Arc<App>,
    upstream: Arc<Upstreams>,
    builders: Builders,
    limits: Limits,
}

struct ConnectionTask {
    shared: Arc<Shared>,
    connection: Connection,
    stopping: watch::Receiver<bool>,
}

impl ConnectionTask {
    async fn run(self, stream: tokio::net::TcpStream, tls: Option<TlsAcceptor>) {
        match tls {
            None => self.serve_plain(stream).await,
            // Boxed: a TLS connection's state (handshake, records) is several times a plain
            // one's, and every connection's task would otherwise be sized for it.
            Some(acceptor) => Box::pin(self.serve_tls(stream, acceptor)).await,
        }
    }

    async fn serve_tls(&self, stream: tokio::net::TcpStream, acceptor: TlsAcceptor) {
        let mut stopping = self.stopping.clone();
        let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
        let stream = tokio::select! {
            handshake = handshake => match handshake {
                Ok(Ok(stream)) => stream,
                _ => return,
            },
            _ = stopping.changed() => return,
        };
        self.serve(stream).await
    }

    /// A plain-TCP connection: HTTP/1.x to the gateway's own server, HTTP/2 to hyper.
    async fn serve_plain(&self, stream: tokio::net::TcpStream) {
        let accepted = Instant::now();
        let Some((sniffed, protocol)) = self.sniff(connection::sniff_plain(&stream)).await else {
            return;
        };
        match protocol {
            Protocol::Http1 => {
                http1::serve(
                    stream,
                    sniffed,
                    &self.shared,
                    self.connection,
                    self.stopping.clone(),
                    accepted,
                )
                .await
            }
            Protocol::Http2 => {
                let io = connection::Prefixed::new(sniffed.freeze(), stream);
                self.serve_hyper(io, protocol).await
            }
        }
    }

    /// Reads the protocol under `header_read_timeout`. Until a connection has said which
    /// protocol it speaks it is not worth draining: shutdown drops it instead of waiting
    /// out its deadline.
    async fn sniff(
        &self,
        sniffing: impl Future<Output = std::io::Result<Option<(bytes::BytesMut, Protocol)>>>,
    ) -> Option<(bytes::BytesMut, Protocol)> {
        let mut stopping = self.stopping.clone();
        let sniffing = tokio::time::timeout(self.shared.limits.header_read_timeout, sniffing);
        let sniffed = tokio::select! {
            sniffed = sniffing => sniffed,
            _ = stopping.changed() => return None,
        };
        match sniffed {
            Ok(Ok(Some(sniffed))) => Some(sniffed),
            _ => None,
        }
    }

    /// A TLS connection, served by hyper in either protocol.
    async fn serve<S>(&self, mut stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some((sniffed, protocol)) = self.sniff(connection::sniff(&mut stream)).await else {
            return;
        };
        let io = connection::Prefixed::new(sniffed.freeze(), stream);
        self.serve_hyper(io, protocol).await
    }

    /// Serves a connection with hyper once its protocol is known.
    async fn serve_hyper<S>(&self, io: connection::Prefixed<S>, protocol: Protocol)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::default();
        let service = {
            let app = self.shared.app.clone();
            let upstream = self.shared.upstream.clone();
            let activity = activity.clone();
            let connection = self.connection;
            service_fn(move |request| {
                let app = app.clone();
                let upstream = upstream.clone();
                let in_flight = activity.start();
                let activity = activity.clone();
                // Boxed: hyper keeps the service future inside the connection's state for as
                // long as the connection lives, and moves it there by value. The pipeline's
                // future is kilobytes; boxed, an idle or streaming connection holds a pointer
                // and the memory is freed as soon as the response head is out.
                Box::pin(async move {
                    let request = request.map(RequestBody::Hyper);
                    let response = router::handle(&app, &upstream, request, connection).await;
                    Ok::<_, Infallible>(
                        response.map(|body| Tracked::new(body, in_flight, &activity)),
                    )
                })
            })
        };
        // Boxed, each protocol's connection state is only as big as it needs to be (HTTP/2's
        // is several times HTTP/1.1's), not the larger of the two for every connection.
        let io = TokioIo::new(io);
        let conn = match protocol {
            Protocol::Http1 => Served::Http1(Box::pin(
                self.shared.builders.http1.serve_connection(io, service),
            )),
            Protocol::Http2 => Served::Http2(Box::pin(
                self.shared.builders.http2.serve_connection(io, service),
            )),
        };
        let mut conn = conn;
        // Serve to the end. Ask the connection to finish gracefully (in-flight requests
        // complete; HTTP/2 sends GOAWAY) on shutdown, or once no request has been in flight
        // for `idle_timeout`; drop it when the client stops taking its responses.
        let mut stopping = self.stopping.clone();
        // One timer per connection: it fires at the idle deadline, or every half
        // `send_timeout` to look for a client that stopped taking its responses (dropped
        // after `send_timeout` without progress). A connection asked to close when idle gets
        // CLOSE_GRACE to say goodbye.
        let idle_timeout = self.shared.limits.idle_timeout;
        let send_timeout = self.shared.limits.send_timeout;
        let stall_period = (send_timeout / 2).max(Duration::from_millis(100));
        let first_check = activity.next_check(Instant::now(), idle_timeout, stall_period);
        let check = tokio::time::sleep_until(first_check.into());
        tokio::pin!(check);
        // Set once the connection is asked to close; until then no timer is registered.
        let mut close_deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut closing = false;
        loop {
            tokio::select! {
                _ = &mut conn => return,
                _ = stopping.changed(), if !closing => {
                    conn.graceful_shutdown();
                    closing = true;
                }
                _ = &mut check => {
                    let now = Instant::now();
                    if activity.client_stalled(send_timeout) {
                        static STALLED: Throttle = Throttle::new(Duration::from_secs(10));
                        if let Some(suppressed) = STALLED.allow() {
                            tracing::warn!(peer = %self.connection.peer, suppressed,
                                "client stopped reading its responses; closing the connection (logged at most every 10 s)");
                        }
                        return;
                    }
                    let idle = activity
                        .idle_deadline(idle_timeout)
                        .is_some_and(|deadline| deadline <= now);
                    if idle && !closing {
                        conn.graceful_shutdown();
                        closing = true;
                        close_deadline = Some(Box::pin(tokio::time::sleep_until(
                            connection::later(now, CLOSE_GRACE).into(),
                        )));
                    }
                    let next = if closing {
                        connection::later(now, stall_period)
                    } else {
                        activity.next_check(now, idle_timeout, stall_period)
                    };
                    check.as_mut().reset(next.into());
                }
                _ = until(&mut close_deadline) => return,
            }
        }
    }
}

/// A served connection of either protocol.
enum Served<H1, H2> {
    Http1(Pin<Box<H1>>),
    Http2(Pin<Box<H2>>),
}

type Http1Connection<I, S> = hyper_http1::Connection<I, S>;
type Http2Connection<I, S> = http2::Connection<I, S, TokioExecutor>;

impl<I, S, B> Served<Http1Connection<I, S>, Http2Connection<I, S>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(&mut self) {
        match self {
            Served::Http1(conn) => conn.as_mut().graceful_shutdown(),
            Served::Http2(conn) => conn.as_mut().graceful_shutdown(),
        }
    }
}

impl<H1, H2, E1, E2> Future for Served<H1, H2>
where
    H1: Future<Output = Result<(), E1>>,
    H2: Future<Output = Result<(), E2>>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        // Connection errors (a reset, a malformed request) end the connection; hyper has
        // answered what could be answered.
        match self.get_mut() {
            Served::Http1(conn) => conn.as_mut().poll(cx).map(|_| ()),
            Served::Http2(conn) => conn.as_mut().poll(cx).map(|_| ()),
        }
    }
}

/// Waits for `deadline`, or forever when there is none.
async fn until(deadline: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.await,
        None => std::future::pending().await,
    }
}
