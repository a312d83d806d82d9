//! The running gateway: shared state, listeners, shutdown.
//!
//! The compiled configuration sits behind an `ArcSwap` so a reload (day-two operations) can
//! replace it atomically while requests in flight finish on the one they started with.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::server;

/// State shared by every connection.
pub struct App {
    config: ArcSwap<Config>,
}

impl App {
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started gateway. Dropping it does not stop it; call [`Gateway::shutdown`].
pub struct Gateway {
    addrs: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    listeners: JoinSet<()>,
}

impl Gateway {
    /// Binds every configured address (port 0 picks a free port, see
    /// [`Gateway::local_addrs`]), starts the JWKS refreshers and serves until shutdown.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        for switch in &config.dangerous {
            tracing::warn!(switch = %switch, "dangerous configuration switch is on");
        }
        config.verifiers.start_background_tasks();
        let limits = config.server.limits.clone();
        let tls = config.server.tls.clone().map(TlsAcceptor::from);
        let mut bound = Vec::new();
        for addr in &config.server.listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    addr: *addr,
                    source,
                })?;
            let local = listener.local_addr().map_err(|source| StartError::Bind {
                addr: *addr,
                source,
            })?;
            bound.push((listener, local));
        }
        let app = Arc::new(App {
            config: ArcSwap::from_pointee(config),
        });
        let (stop, stopped) = watch::channel(false);
        let mut listeners = JoinSet::new();
        let mut addrs = Vec::new();
        for (listener, local) in bound {
            tracing::info!(addr = %local, tls = tls.is_some(), "listening");
            addrs.push(local);
            listeners.spawn(server::serve(
                app.clone(),
                listener,
                tls.clone(),
                limits.clone(),
                stopped.clone(),
            ));
        }
        Ok(Gateway {
            addrs,
            stop,
            listeners,
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting, lets in-flight requests finish (up to `shutdown_grace`), returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.listeners.join_next().await.is_some() {}
    }
}
