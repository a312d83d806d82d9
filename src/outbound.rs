//! The one HTTP client type for everything the gateway calls: upstream MCP servers, JWKS
//! endpoints, introspection endpoints, identity providers. Pooled, HTTP/1.1 and HTTP/2
//! (ALPN), rustls with the system's roots (falling back to the Mozilla set), a connect
//! timeout; callers add per-request deadlines and size caps.
//!
//! The identity client (one per configuration) may go through an outbound HTTP proxy
//! (`[outbound] proxy`, or `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY`), as
//! corporate networks require for reaching an IdP: every connection the proxy applies to
//! is a `CONNECT` tunnel through it (TLS stays end to end). Upstream pools never use it:
//! MCP servers are the gateway's neighbours.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::body::Body;

pub type HttpClient = Client<HttpsConnector<Connector>, Body>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which destinations go through which outbound proxy (`None`: all direct).
#[derive(Clone, Default)]
pub struct ProxyRules(Option<Arc<Matcher>>);

impl ProxyRules {
    /// The standard variables: `HTTPS_PROXY` for https destinations, `HTTP_PROXY` for http
    /// ones, `ALL_PROXY` for both when those are unset (each also in lower case), and
    /// `NO_PROXY` (plus `extra_no_proxy`) for those that go direct.
    pub fn from_environment(extra_no_proxy: &[String]) -> ProxyRules {
        let var = |names: [&str; 2]| names.iter().find_map(|n| std::env::var(n).ok());
        let mut no = var(["NO_PROXY", "no_proxy"]).unwrap_or_default();
        for host in extra_no_proxy {
            no = if no.is_empty() {
                host.clone()
            } else {
                format!("{no},{host}")
            };
        }
        let mut builder = Matcher::builder().no(no);
        let mut any = false;
        if let Some(all) = var(["ALL_PROXY", "all_proxy"]) {
            builder = builder.all(all);
            any = true;
        }
        if let Some(http) = var(["HTTP_PROXY", "http_proxy"]) {
            builder = builder.http(http);
            any = true;
        }
        if let Some(https) = var(["HTTPS_PROXY", "https_proxy"]) {
            builder = builder.https(https);
            any = true;
        }
        ProxyRules(any.then(|| Arc::new(builder.build())))
    }

    /// One proxy for every destination but those in `no_proxy` (host names, domain
    /// suffixes `.example.com`, IP addresses and CIDR ranges).
    pub fn fixed(proxy: &str, no_proxy: &[String]) -> ProxyRules {
        let matcher = Matcher::builder()
            .all(proxy.to_string())
            .no(no_proxy.join(","))
            .build();
        ProxyRules(Some(Arc::new(matcher)))
    }

    /// The proxy for `destination`, if it goes through one (for logs and tests).
    pub fn proxy_for(&self, destination: &Uri) -> Option<Uri> {
        Some(self.0.as_ref()?.intercept(destination)?.uri().clone())
    }
}

/// Connects directly, or through a `CONNECT` tunnel when the proxy rules say so.
#[derive(Clone)]
pub struct Connector {
    direct: HttpConnector,
    proxy: ProxyRules,
}

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let intercept = self
            .proxy
            .0
            .as_ref()
            .and_then(|matcher| matcher.intercept(&destination));
        let mut direct = self.direct.clone();
        let Some(intercept) = intercept else {
            return Box::pin(async move { direct.call(destination).await.map_err(Into::into) });
        };
        // Only plain-http proxies speak CONNECT here (the tunnel's TLS is the destination's).
        if intercept.uri().scheme_str() != Some("http") {
            let scheme = intercept.uri().scheme_str().unwrap_or("").to_string();
            return Box::pin(async move {
                Err(format!("the outbound proxy's scheme {scheme:?} is not supported (use an http:// proxy)").into())
            });
        }
        let mut tunnel = Tunnel::new(intercept.uri().clone(), direct);
        if let Some(auth) = intercept.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        Box::pin(async move { tunnel.call(destination).await.map_err(Into::into) })
    }
}

/// Trust anchors for outbound TLS: the system's roots (the Mozilla set when the system has
/// none) plus the configured `[outbound] ca_files` (private CAs of internal upstreams/IdPs).
pub fn tls_config(
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for cert in extra_roots {
        roots
            .add(cert)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Idle connections kept per destination, per pool (each worker has its own upstream pool).
/// Each holds its buffers and a task (~20 KB): after a burst of a thousand connections, 256
/// per worker kept ~10 MB for 90 s. 64 covers a steady load of 64 concurrent requests per
/// worker without reconnecting; above that, connections beyond it are closed after use.
const MAX_IDLE_PER_HOST: usize = 64;

/// A pooled client; `proxy` applies to the connections it opens.
pub fn client(
    connect_timeout: Duration,
    tls: rustls::ClientConfig,
    proxy: ProxyRules,
) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(Connector {
            direct: http,
            proxy,
        });
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// Why a small outbound fetch (JWKS, introspection) failed. Never includes secrets.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Connect(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the response failed: {0}")]
    Body(String),
}

/// A buffered response of bounded size.
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Sends `request` and reads at most `limit` bytes of the answer, all within `timeout`.
pub async fn fetch(
    client: &HttpClient,
    request: Request<Body>,
    limit: usize,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| FetchError::Connect(error_chain(&e)))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge(limit)
                } else {
                    FetchError::Body(e.to_string())
                }
            })?
            .to_bytes();
        Ok(Fetched {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}

/// An error with its causes ("client error (Connect): …: connection refused"): the
/// outermost alone rarely says what went wrong.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
