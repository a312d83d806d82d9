//! The compiled configuration: the types the gateway runs on, valid by construction.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Verifiers;
use crate::model::identity::IdentityHeaders;
use crate::model::route::RouteTable;
pub use crate::observability::{LogFormat, LogSettings};
use crate::outbound::HttpClient;

/// A compiled, valid configuration: what the gateway runs on.
pub struct Config {
    pub server: ServerSettings,
    pub forward_auth: ForwardAuthSettings,
    pub admin: AdminSettings,
    pub log: LogSettings,
    pub identity_headers: IdentityHeaders,
    pub verifiers: Verifiers,
    pub routes: RouteTable,
    /// `[authorization_server]`, when the gateway issues tokens itself.
    pub authorization_server: Option<super::authorization_server::AuthorizationServerSettings>,
    /// `[redis]`: state several replicas share — the authorization server's store, MCP
    /// session bindings and rate-limit counters.
    pub redis: Option<super::redis::RedisSettings>,
    /// The pooled client for JWKS and introspection calls.
    pub client: HttpClient,
    /// Trust anchors for outbound TLS; each worker builds its own upstream pool from it.
    pub outbound_tls: rustls::ClientConfig,
    /// The outbound proxies identity calls use, as they may be shown (no credentials).
    pub outbound_proxy: Vec<String>,
    /// Dangerous switches in effect, for the startup warning.
    pub dangerous: Vec<String>,
    /// SHA-256 (hex) of the configuration text, for `mcp_gateway_config_info`.
    pub source_sha256: String,
    /// Likely mistakes that do not stop the gateway (`check` prints them, `serve` logs them).
    pub warnings: Vec<super::Problem>,
}

pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
    /// Worker threads (at least 1).
    pub workers: usize,
    pub public_url: PublicUrl,
    pub trust_forwarded_headers: bool,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub limits: Limits,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub max_token_bytes: usize,
    pub header_read_timeout: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Longest silence inside an upstream response body before it is cut; zero = never.
    pub stream_idle_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_connections: usize,
    /// Open connections from one client address; 0 = no limit.
    pub max_connections_per_ip: usize,
    /// A connection with no request in flight for this long is closed gracefully.
    pub idle_timeout: Duration,
    /// Longest silence while a request body is being received (slow-POST guard).
    pub body_read_timeout: Duration,
    /// Longest time a response may wait for a client that does not read it (slow-read guard).
    pub send_timeout: Duration,
}

pub struct ForwardAuthSettings {
    pub path: Option<String>,
}

/// The internal listener (`[admin]`).
pub struct AdminSettings {
    /// Plain-HTTP addresses serving health, readiness, `/metrics` and `/verify`; empty = no
    /// metrics, and `/verify` on the main listeners.
    pub listen: Vec<SocketAddr>,
}

/// The externally visible base URL, split for building identifiers.
#[derive(Debug, Clone)]
pub struct PublicUrl {
    /// `scheme://host[:port]`, canonical.
    pub origin: String,
    /// Path prefix without trailing slash ("" at the root).
    pub base_path: String,
    pub host: String,
    pub port: Option<u16>,
}

impl PublicUrl {
    /// The resource identifier of a route mounted at `path`.
    pub fn resource(&self, path: &str) -> String {
        let path = if path == "/" { "" } else { path };
        format!("{}{}{}", self.origin, self.base_path, path)
    }

    /// The same public URL for a route bound to another `host` (scheme, port and base path
    /// kept): a host route's resource, audience and metadata URL are on its own host.
    pub fn for_host(&self, host: &str) -> PublicUrl {
        let scheme = self.origin.split("://").next().unwrap_or("https");
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let default_port = if scheme == "https" { ":443" } else { ":80" };
        let port = if port == default_port {
            String::new()
        } else {
            port
        };
        PublicUrl {
            origin: format!("{scheme}://{host}{port}"),
            base_path: self.base_path.clone(),
            host: host.to_string(),
            port: self.port,
        }
    }

    /// The suffix after `/.well-known/oauth-protected-resource` for a route at `path`.
    pub fn metadata_suffix(&self, path: &str) -> String {
        let path = if path == "/" { "" } else { path };
        format!("{}{}", self.base_path, path)
    }
}
