//! The connections from one worker to the upstream MCP servers.
//!
//! Plain `http://` upstreams — MCP servers next to the gateway, the common case — are
//! spoken to by the gateway's own HTTP/1.1 client ([`exchange`]): the request's task writes
//! the request and reads the answer itself, and an answer's body reads the socket directly
//! as the client's side asks for more. hyper-util's pooled client, used before, ran every
//! upstream connection as a task of its own, handed each request to it over a channel and
//! kept two 8 KB buffers per connection: that hand-off and those buffers were most of the
//! gateway's cost per request beyond nginx's, and most of an idle SSE stream's memory
//! (BENCHMARKS.md). `https://` upstreams keep the hyper-util client (TLS, HTTP/2 by ALPN).
//!
//! Knows nothing of routes or policy: the pipeline's forward phase calls [`Upstreams::send`]
//! with the rewritten request and the fields it sets ([`SetFields`]), and maps its errors.

pub mod chunked;
mod exchange;
pub mod head;
mod pool;

use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, Response};

pub use exchange::{BodyError, ExchangeError};
pub use pool::{IDLE_TIMEOUT, MAX_IDLE_PER_AUTHORITY};

use crate::body::{Body, BoxError};
use crate::outbound::HttpClient;

/// Fields set on a request besides its map's, by reference: the pipeline's identity,
/// credential and `X-Forwarded-*` headers. Their names are distinct and none is in the map,
/// so the HTTP/1.1 client writes them after the map's fields: hashing each into the map only
/// to read it back was ~2,800 instructions per request (BENCHMARKS.md).
pub type SetFields<'a> = [(&'a HeaderName, &'a HeaderValue)];

/// One worker's upstream clients.
pub struct Upstreams {
    plain: pool::Pool,
    connect_timeout: Duration,
    /// `https://` upstreams.
    tls: HttpClient,
}

/// Why an upstream exchange failed before its answer's head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Plain(#[from] ExchangeError),
    #[error(transparent)]
    Tls(#[from] hyper_util::client::legacy::Error),
}

impl Upstreams {
    pub fn new(connect_timeout: Duration, tls: HttpClient) -> Self {
        Self {
            plain: pool::Pool::default(),
            connect_timeout,
            tls,
        }
    }

    /// Sends `request` (absolute URI: the upstream's scheme and authority) with `set`'s
    /// fields besides its own, and returns the answer, its body streaming.
    pub async fn send(
        &self,
        mut request: Request<Body>,
        set: &SetFields<'_>,
    ) -> Result<Response<Body>, SendError> {
        let plain = request.uri().scheme() == Some(&http::uri::Scheme::HTTP);
        match request.uri().authority().cloned() {
            Some(authority) if plain => {
                let upstream = exchange::Upstream {
                    pool: &self.plain,
                    authority: &authority,
                    connect_timeout: self.connect_timeout,
                };
                Ok(exchange::exchange(upstream, request, set).await?)
            }
            _ => {
                // hyper writes the map: the fields go into it.
                let headers = request.headers_mut();
                for (name, value) in set {
                    headers.insert((*name).clone(), (*value).clone());
                }
                let response = self.tls.request(request).await?;
                Ok(response.map(|body| {
                    http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(
                        body,
                        BoxError::from,
                    ))
                }))
            }
        }
    }

    /// Closes idle connections that outlived [`IDLE_TIMEOUT`], every few seconds, for as
    /// long as the worker runs (requests expire them too, but a quiet or removed upstream
    /// gets none).
    pub async fn expire_idle_connections(self: std::sync::Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_secs(10));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.plain.expire_idle();
        }
    }
}
