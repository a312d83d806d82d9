//! The running gateway: shared state, worker threads, listeners, shutdown.
//!
//! The compiled configuration sits behind an `ArcSwap` so a reload (day-two operations) can
//! replace it atomically while requests in flight finish on the one they started with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::authorization_server::AuthorizationServer;
use crate::config::Config;
use crate::mcp::sessions::{MemorySessions, RedisSessions, SessionStore};
use crate::pipeline::limits::RateLimiter;
use crate::redis_connection::SharedRedis;
use crate::server::budget::ConnectionBudget;
use crate::server::ListenerRole;
use crate::upstream::Upstreams;
use crate::{observability, outbound, server};

/// State shared by every connection.
pub struct App {
    config: ArcSwap<Config>,
    /// The built-in authorization server, when `[authorization_server]` is configured.
    authorization_server: Option<Arc<AuthorizationServer>>,
    /// Which principal opened each MCP session (survives reloads; shared through Redis when
    /// `[redis]` is set).
    sessions: Arc<dyn SessionStore>,
    /// Rate-limit buckets (survive reloads; the rates come from the current config; in
    /// Redis when `[redis]` is set).
    limiter: RateLimiter,
}

impl App {
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn authorization_server(&self) -> Option<&Arc<AuthorizationServer>> {
        self.authorization_server.as_ref()
    }

    pub fn sessions(&self) -> &dyn SessionStore {
        self.sessions.as_ref()
    }

    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start worker thread: {0}")]
    Worker(std::io::Error),
    #[error("cannot start the authorization server: {0}")]
    AuthorizationServer(#[from] crate::authorization_server::StartError),
    #[error("cannot connect to [redis] (session bindings and rate limits): {0}")]
    Redis(#[from] crate::redis_connection::ConnectError),
}

/// A started gateway. [`Gateway::shutdown`] drains and waits; dropping it starts the same
/// drain without waiting for it.
pub struct Gateway {
    app: Arc<App>,
    addrs: Vec<SocketAddr>,
    admin_addrs: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    workers: Vec<oneshot::Receiver<()>>,
}

impl Gateway {
    /// Binds every configured address (port 0 picks a free port, see
    /// [`Gateway::local_addrs`]), starts the JWKS refreshers on the calling runtime and the
    /// worker threads, and serves until shutdown.
    ///
    /// Thread per core: each worker runs its own single-threaded Tokio runtime with its own
    /// `SO_REUSEPORT` listener per address and its own upstream connection pool, so a request
    /// and the upstream connection serving it never hop threads. Measured on the bench, this
    /// cut CPU per proxied request by about a quarter against one work-stealing runtime
    /// (BENCHMARKS.md).
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        for switch in &config.dangerous {
            tracing::warn!(switch = %switch, "dangerous configuration switch is on");
        }
        crate::observability::metrics::METRICS.config_loaded("ok", Some(&config.source_sha256));
        for proxy in &config.outbound_proxy {
            tracing::info!(proxy = %proxy, "identity calls go through an outbound proxy");
        }
        for warning in &config.warnings {
            tracing::warn!(key = %warning.path, "{}", warning.message);
        }
        config.verifiers.start_background_tasks();
        crate::memory::start_trimming();
        // Before the listeners: its keys must be published before the first request.
        let authorization_server = match &config.authorization_server {
            Some(settings) => {
                let server = AuthorizationServer::start(settings, config.client.clone()).await?;
                // The routes it serves tokens for (reloads update them the same way).
                server.reconfigure(&config);
                match &settings.redis {
                    Some(redis) => tracing::info!(issuer = %settings.issuer, redis = %redis.url,
                        "authorization server started (state in Redis)"),
                    None => tracing::info!(issuer = %settings.issuer,
                        database = %settings.database.display(), "authorization server started"),
                }
                Some(server)
            }
            None => None,
        };
        // Session bindings and rate limits: shared by the replicas through Redis, or local.
        let (sessions, limiter): (Arc<dyn SessionStore>, RateLimiter) = match &config.redis {
            Some(settings) => {
                let connection = crate::redis_connection::connect(settings).await?;
                let shared = Arc::new(SharedRedis::new(connection, settings));
                tracing::info!(redis = %settings.url, "session bindings and rate limits shared through Redis");
                (
                    Arc::new(RedisSessions::new(shared.clone())),
                    RateLimiter::shared(shared),
                )
            }
            None => (Arc::new(MemorySessions::default()), RateLimiter::default()),
        };
        let workers = config.server.workers.max(1);
        let mut per_worker: Vec<Vec<(std::net::TcpListener, ListenerRole)>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        let mut admin_addrs = Vec::new();
        let roles = config
            .server
            .listen
            .iter()
            .map(|addr| (addr, ListenerRole::Main))
            .chain(
                config
                    .admin
                    .listen
                    .iter()
                    .map(|addr| (addr, ListenerRole::Admin)),
            );
        for (addr, role) in roles {
            let bind_error = |source| StartError::Bind {
                addr: *addr,
                source,
            };
            // A plain bind first: it fails if anyone holds the address (SO_REUSEPORT on
            // every socket would quietly share it with another instance) and it resolves
            // port 0. The workers then bind that exact address together.
            let local = {
                let probe = std::net::TcpListener::bind(addr).map_err(bind_error)?;
                probe.local_addr().map_err(bind_error)?
            };
            for listeners in per_worker.iter_mut() {
                listeners.push((bind_shared(local).map_err(bind_error)?, role));
            }
            match role {
                ListenerRole::Main => {
                    tracing::info!(addr = %local, tls = config.server.tls.is_some(), workers, "listening");
                    addrs.push(local);
                }
                ListenerRole::Admin => {
                    tracing::info!(addr = %local, workers, "listening (admin: health, metrics, /verify)");
                    admin_addrs.push(local);
                }
            }
        }

        let connection_budget = ConnectionBudget::new(
            config.server.limits.max_connections,
            config.server.limits.max_connections_per_ip,
        );
        let app = Arc::new(App {
            config: ArcSwap::from_pointee(config),
            authorization_server,
            sessions,
            limiter,
        });
        let (stop, stopped) = watch::channel(false);
        let mut done = Vec::new();
        let mut ready = Vec::new();
        for (index, listeners) in per_worker.into_iter().enumerate() {
            let (finished, finished_rx) = oneshot::channel();
            let (started, started_rx) = oneshot::channel();
            let worker = Worker {
                app: app.clone(),
                listeners,
                stopped: stopped.clone(),
                connection_budget: connection_budget.clone(),
            };
            std::thread::Builder::new()
                .name(format!("gateway-worker-{index}"))
                .spawn(move || worker.run(started, finished))
                .map_err(StartError::Worker)?;
            done.push(finished_rx);
            ready.push(started_rx);
        }
        // Every worker has its listeners registered before `start` returns; if one cannot,
        // the others are stopped (dropping `stop`) and the error is reported.
        for started in ready {
            match started.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(StartError::Worker(error)),
                Err(_) => {
                    return Err(StartError::Worker(std::io::Error::other(
                        "a worker thread ended during start",
                    )))
                }
            }
        }
        Ok(Gateway {
            app,
            addrs,
            admin_addrs,
            stop,
            workers: done,
        })
    }

    /// Swaps in a new configuration, atomically: requests that started keep the one they
    /// started with (their `Arc<Config>`), new ones use the new one. JWT issuers whose key
    /// source is unchanged keep their keys (no cold start), and TLS certificates are read
    /// from the new configuration for new connections. Settings that shape sockets and
    /// threads (`listen`, `[admin] listen`, `workers`, `[server.limits]`, `[outbound]`) apply
    /// at the next restart; the returned list names those that changed.
    pub fn reload(&self, config: Config) -> Vec<&'static str> {
        let old = self.app.config();
        let mut needs_restart = Vec::new();
        if old.server.listen != config.server.listen {
            needs_restart.push("server.listen");
        }
        if old.admin.listen != config.admin.listen {
            needs_restart.push("admin.listen");
        }
        if old.server.workers != config.server.workers {
            needs_restart.push("server.workers");
        }
        if format!("{:?}", old.server.limits) != format!("{:?}", config.server.limits) {
            needs_restart.push("server.limits");
        }
        let store_of = |c: &Config| {
            c.authorization_server.as_ref().map(|s| {
                (
                    s.database.clone(),
                    s.redis
                        .as_ref()
                        .map(|r| (r.url.clone(), r.key_prefix.clone())),
                    s.signing_key_file.clone(),
                    s.signing_algorithm,
                )
            })
        };
        if store_of(&old) != store_of(&config) {
            needs_restart.push("authorization_server (on/off, database or redis, signing key)");
        }
        // The session bindings and rate limits keep the store they started with.
        let redis_of = |c: &Config| {
            c.redis
                .as_ref()
                .map(|r| (r.url.clone(), r.key_prefix.clone()))
        };
        if redis_of(&old) != redis_of(&config) {
            needs_restart.push("redis (session bindings and rate limits)");
        }
        if let Some(server) = self.app.authorization_server() {
            server.reconfigure(&config);
        }
        config.verifiers.adopt_keys(&old.verifiers);
        config.verifiers.start_background_tasks();
        crate::observability::metrics::METRICS.config_loaded("ok", Some(&config.source_sha256));
        for proxy in &config.outbound_proxy {
            tracing::info!(proxy = %proxy, "identity calls go through an outbound proxy");
        }
        for warning in &config.warnings {
            tracing::warn!(key = %warning.path, "{}", warning.message);
        }
        self.app.config.store(Arc::new(config));
        needs_restart
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The addresses of `[admin] listen`.
    pub fn admin_addrs(&self) -> &[SocketAddr] {
        &self.admin_addrs
    }

    /// Stops accepting, lets in-flight requests finish (up to `shutdown_grace`), returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for worker in self.workers {
            let _ = worker.await;
        }
    }
}

/// A listening socket other workers can bind too (`SO_REUSEPORT`: the kernel spreads new
/// connections over them).
fn bind_shared(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    // Small answers and SSE events go out at once. On Linux every accepted connection
    // inherits this, and `server` relies on it.
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// One worker thread: a single-threaded runtime serving its listeners until shutdown.
struct Worker {
    app: Arc<App>,
    listeners: Vec<(std::net::TcpListener, ListenerRole)>,
    stopped: watch::Receiver<bool>,
    /// Shared by all workers: `max_connections` bounds the whole process.
    connection_budget: Arc<ConnectionBudget>,
}

impl Worker {
    fn run(self, started: oneshot::Sender<std::io::Result<()>>, finished: oneshot::Sender<()>) {
        // Audit lines are gathered per worker and handed to the log writer when the worker
        // has nothing left to run, and at the heartbeat (see `observability::log_writer`).
        observability::gather_lines_on_this_thread();
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(observability::hand_over_lines)
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = started.send(Err(error));
                return;
            }
        };
        runtime.block_on(async move {
            let config = self.app.config();
            let limits = config.server.limits.clone();
            // Upstream MCP servers are neighbours: never through the outbound proxy.
            let upstream = Arc::new(Upstreams::new(
                limits.connect_timeout,
                outbound::client(
                    limits.connect_timeout,
                    config.outbound_tls.clone(),
                    outbound::ProxyRules::default(),
                ),
            ));
            drop(config);
            let mut registered = Vec::new();
            for (listener, role) in self.listeners {
                match TcpListener::from_std(listener) {
                    Ok(listener) => registered.push((listener, role)),
                    Err(error) => {
                        let _ = started.send(Err(error));
                        return;
                    }
                }
            }
            let _ = started.send(Ok(()));
            // Connections watch a shutdown signal of their own worker's. Polling a receiver
            // takes its channel's lock; one channel shared by every worker would move that
            // lock between cores on every request.
            let (relay, stopped) = watch::channel(*self.stopped.borrow());
            let mut stopping = self.stopped.clone();
            let stopped_at = Arc::new(std::sync::OnceLock::new());
            let stop_time = stopped_at.clone();
            tokio::spawn(async move {
                // Shutdown asked for, or the gateway dropped: either way, stop.
                let _ = stopping.wait_for(|stop| *stop).await;
                let _ = stop_time.set(std::time::Instant::now());
                let _ = relay.send(true);
            });
            tokio::spawn(keep_the_next_wake_near());
            tokio::spawn(upstream.clone().expire_idle_connections());
            let mut serving = JoinSet::new();
            let context = server::WorkerContext {
                app: self.app.clone(),
                limits,
                shutdown: stopped,
                upstream,
                budget: self.connection_budget.clone(),
            };
            for (listener, role) in registered {
                serving.spawn(server::serve(context.clone(), listener, role));
            }
            while let Some(result) = serving.join_next().await {
                if let Err(error) = result {
                    tracing::error!(%error, "a listener task failed");
                }
            }
            // Users' token refreshes still running get what is left of the same grace.
            if let Some(server) = self.app.authorization_server() {
                let grace_ends = stopped_at
                    .get()
                    .map(|at| *at + context.limits.shutdown_grace);
                let left = grace_ends.map_or(Duration::ZERO, |end| {
                    end.saturating_duration_since(std::time::Instant::now())
                });
                server.finish_refreshes(left).await;
            }
        });
        observability::hand_over_lines();
        let _ = finished.send(());
    }
}

/// How often each worker's timer wheel is woken whatever its connections' deadlines.
const TIMER_HEARTBEAT: Duration = Duration::from_millis(500);

/// Keeps the worker's timer wheel waking at least every [`TIMER_HEARTBEAT`]. Tokio's time
/// driver writes to its runtime's eventfd whenever a timer is set earlier than the next
/// wake it computed when it last parked — with no timer pending, for every timer. A new
/// connection sets three (the protocol sniff's, hyper's header read timeout, the idle
/// check), so on a quiet worker each new connection cost three `write`s and as many extra
/// `epoll_wait` turns (`strace -c`: /verify on a new connection per check, Traefik's way).
/// With the heartbeat pending, the next wake is never more than half a second away and
/// connections' deadlines (a second or more) wake nothing; the price is two wake-ups a
/// second per idle worker. The same beat hands the worker's gathered audit lines to the
/// log writer when the worker is too busy to park.
async fn keep_the_next_wake_near() {
    let mut heartbeat = tokio::time::interval(TIMER_HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        heartbeat.tick().await;
        // A worker that never parks still hands its audit lines over.
        observability::hand_over_lines();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `server` skips setting TCP_NODELAY on each accepted connection because Linux copies
    /// it from the listener; this holds the kernel to that.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_connections_inherit_nodelay_from_the_listener() {
        let listener = bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
