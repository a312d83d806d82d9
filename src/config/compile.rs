//! Raw configuration → runtime types. Every check lives here and every problem is collected
//! with its key path (`routes[1].verifiers[0]`) before reporting, so one run of
//! `mcp-auth-gateway check` lists everything to fix.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Method, Uri};
use jsonwebtoken::Algorithm;

use super::raw::{
    RawApiKey, RawClaims, RawConfig, RawIdentityHeaders, RawIntrospection, RawIssuer, RawRoute,
    RawServer,
};
use super::secret;
use super::{ConfigError, Problem};
use crate::auth::api_key::{self, ApiKey, ApiKeyStore};
use crate::auth::audience;
use crate::auth::claims::ClaimMapping;
use crate::auth::introspection::Introspector;
use crate::auth::jwks::{KeySet, KeySource, RemoteJwks};
use crate::auth::jwt::Issuer;
use crate::auth::{AuthMethod, Principal, VerifierId, VerifierSet, Verifiers};
use crate::metadata::{Challenge, ProtectedResourceMetadata, METADATA_PREFIX};
use crate::outbound::{self, HttpClient};
use crate::pipeline::identity::IdentityHeaders;
use crate::pipeline::route::{check_path, Route, RouteTable, Upstream};
use crate::pipeline::transport::{canonical_origin, HostAllowlist, OriginAllowlist};

/// A compiled, valid configuration: what the gateway runs on.
pub struct Config {
    pub server: ServerSettings,
    pub forward_auth: ForwardAuthSettings,
    pub log: LogSettings,
    pub identity_headers: IdentityHeaders,
    pub verifiers: Verifiers,
    pub routes: RouteTable,
    /// The pooled client for upstreams, JWKS and introspection.
    pub client: HttpClient,
    /// Dangerous switches in effect, for the startup warning.
    pub dangerous: Vec<String>,
}

pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
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
    pub shutdown_grace: Duration,
    pub max_connections: usize,
}

pub struct ForwardAuthSettings {
    pub path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
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

    /// The suffix after `/.well-known/oauth-protected-resource` for a route at `path`.
    pub fn metadata_suffix(&self, path: &str) -> String {
        let path = if path == "/" { "" } else { path };
        format!("{}{}", self.base_path, path)
    }
}

/// Collects problems while compiling.
struct Collector {
    problems: Vec<Problem>,
}

impl Collector {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn ok<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.push(path, message);
                None
            }
        }
    }
}

pub(super) fn compile(raw: RawConfig, base_dir: &Path) -> Result<Config, ConfigError> {
    let mut c = Collector {
        problems: Vec::new(),
    };
    let limits = compile_limits(&raw, &mut c);
    let extra_roots = raw
        .outbound
        .ca_files
        .iter()
        .enumerate()
        .flat_map(|(i, file)| {
            c.ok(
                &format!("outbound.ca_files[{i}]"),
                read_certificates(&base_dir.join(file)),
            )
            .unwrap_or_default()
        })
        .collect();
    let tls = c
        .ok("outbound.ca_files", outbound::tls_config(extra_roots))
        .unwrap_or_else(|| outbound::tls_config(Vec::new()).unwrap_or_else(|_| empty_tls()));
    let client = outbound::client(limits.connect_timeout, tls);
    let server = compile_server(&raw.server, limits, base_dir, &mut c);
    let identity_headers = compile_identity_headers(&raw.identity_headers, &mut c);
    let allow_http = raw.dangerous.allow_plain_http_identity_endpoints;

    let api_keys = ApiKeyStore::new(
        raw.api_keys
            .iter()
            .enumerate()
            .filter_map(|(i, key)| {
                compile_api_key(key, &format!("api_keys[{i}]"), base_dir, &mut c)
            })
            .collect(),
    );
    let mut ids = HashSet::new();
    check_unique_ids(
        raw.api_keys.iter().map(|k| k.id.as_str()),
        "api_keys",
        &mut HashSet::new(),
        &mut c,
    );
    let issuers: Vec<Arc<Issuer>> = raw
        .issuers
        .iter()
        .enumerate()
        .filter_map(|(i, issuer)| {
            compile_issuer(i, issuer, base_dir, &client, allow_http, &mut c).map(Arc::new)
        })
        .collect();
    let introspectors: Vec<Arc<Introspector>> = raw
        .introspection
        .iter()
        .enumerate()
        .filter_map(|(i, x)| {
            compile_introspection(i, x, base_dir, &client, allow_http, &mut c).map(Arc::new)
        })
        .collect();
    ids.insert("api_keys".to_string());
    check_unique_ids(
        raw.issuers
            .iter()
            .map(|i| i.id.as_str())
            .chain(raw.introspection.iter().map(|i| i.id.as_str())),
        "issuers/introspection",
        &mut ids,
        &mut c,
    );

    let forward_auth_path = if raw.forward_auth.enabled {
        let path = raw.forward_auth.path.trim_end_matches('/').to_string();
        if !path.starts_with('/') || check_path(&path).is_err() || path == "/" {
            c.push(
                "forward_auth.path",
                format!(
                    "{:?} is not a usable path: use e.g. \"/verify\"",
                    raw.forward_auth.path
                ),
            );
        }
        Some(path)
    } else {
        None
    };

    let mut dangerous = Vec::new();
    if allow_http {
        dangerous.push("allow_plain_http_identity_endpoints".to_string());
    }
    let routes = match &server {
        Some(server) => compile_routes(
            &raw,
            server,
            &issuers,
            &introspectors,
            base_dir,
            &mut dangerous,
            forward_auth_path.as_deref(),
            &mut c,
        ),
        None => RouteTable::default(),
    };

    let log = LogSettings {
        format: match raw.log.format.as_str() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                c.push(
                    "log.format",
                    format!("{other:?} is not a log format: use \"pretty\" or \"json\""),
                );
                LogFormat::Pretty
            }
        },
        level: raw.log.level.clone(),
    };

    match (server, c.problems.is_empty()) {
        (Some(server), true) => Ok(Config {
            server,
            forward_auth: ForwardAuthSettings {
                path: forward_auth_path,
            },
            log,
            identity_headers,
            verifiers: Verifiers::new(
                api_keys,
                issuers,
                introspectors,
                raw.server.limits.token_cache_entries,
            ),
            routes,
            client,
            dangerous,
        }),
        _ => Err(ConfigError {
            problems: c.problems,
        }),
    }
}

fn read_certificates(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid PEM in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// Only reached when compilation has already failed; the client is never used then.
fn empty_tls() -> rustls::ClientConfig {
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

fn check_unique_ids<'a>(
    ids: impl Iterator<Item = &'a str>,
    what: &str,
    seen: &mut HashSet<String>,
    c: &mut Collector,
) {
    for id in ids {
        if id.is_empty() {
            c.push(what, "an entry has an empty `id`");
        } else if !seen.insert(id.to_string()) {
            c.push(
                what,
                format!("id {id:?} is used more than once: ids must be unique"),
            );
        }
    }
}

fn compile_limits(raw: &RawConfig, c: &mut Collector) -> Limits {
    let l = &raw.server.limits;
    if l.max_header_bytes < 1024 {
        c.push("server.limits.max_header_bytes", "must be at least 1024");
    }
    if l.max_token_bytes < 64 {
        c.push("server.limits.max_token_bytes", "must be at least 64");
    }
    if l.token_cache_entries == 0 {
        c.push("server.limits.token_cache_entries", "must be at least 1");
    }
    for (key, value) in [
        ("connect_timeout", l.connect_timeout),
        ("response_timeout", l.response_timeout),
        ("header_read_timeout", l.header_read_timeout),
    ] {
        if value.0.is_zero() {
            c.push(format!("server.limits.{key}"), "must be greater than zero");
        }
    }
    Limits {
        max_header_bytes: l.max_header_bytes,
        max_body_bytes: l.max_body_bytes,
        max_token_bytes: l.max_token_bytes,
        header_read_timeout: l.header_read_timeout.0,
        connect_timeout: l.connect_timeout.0,
        response_timeout: l.response_timeout.0,
        shutdown_grace: l.shutdown_grace.0,
        max_connections: l.max_connections.max(1),
    }
}

fn compile_server(
    raw: &RawServer,
    limits: Limits,
    base_dir: &Path,
    c: &mut Collector,
) -> Option<ServerSettings> {
    if raw.listen.is_empty() {
        c.push("server.listen", "no address: add e.g. \"127.0.0.1:8080\"");
    }
    let listen: Vec<SocketAddr> = raw
        .listen
        .iter()
        .enumerate()
        .filter_map(|(i, addr)| {
            c.ok(
                &format!("server.listen[{i}]"),
                addr.parse::<SocketAddr>()
                    .map_err(|_| format!("{addr:?} is not ip:port (e.g. \"0.0.0.0:8080\")")),
            )
        })
        .collect();
    let public_url = c.ok("server.public_url", parse_public_url(&raw.public_url))?;
    let tls = raw.tls.as_ref().and_then(|tls| {
        c.ok(
            "server.tls",
            crate::server::tls::load(
                &base_dir.join(&tls.cert_file),
                &base_dir.join(&tls.key_file),
            ),
        )
    });
    Some(ServerSettings {
        listen,
        public_url,
        trust_forwarded_headers: raw.trust_forwarded_headers,
        tls,
        limits,
    })
}

fn parse_public_url(text: &str) -> Result<PublicUrl, String> {
    let uri: Uri = text
        .parse()
        .map_err(|_| format!("{text:?} is not a URL: use e.g. \"https://mcp.example.com\""))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if scheme != "https" && scheme != "http" {
        return Err(format!(
            "{text:?} must start with https:// (or http:// for local use)"
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{text:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("{text:?} must not contain user information"));
    }
    if uri.query().is_some() || text.contains('#') {
        return Err(format!("{text:?} must not have a query or fragment"));
    }
    let origin = canonical_origin(&format!("{scheme}://{authority}"))
        .ok_or_else(|| format!("{text:?} is not a usable origin"))?;
    let base_path = uri.path().trim_end_matches('/').to_string();
    if !base_path.is_empty() && check_path(&base_path).is_err() {
        return Err(format!("{text:?} has an ambiguous path"));
    }
    Ok(PublicUrl {
        origin,
        base_path,
        host: authority.host().to_ascii_lowercase(),
        port: authority.port_u16(),
    })
}

fn compile_identity_headers(raw: &RawIdentityHeaders, c: &mut Collector) -> IdentityHeaders {
    let mut name = |key: &str, value: &str| -> HeaderName {
        match HeaderName::from_bytes(value.as_bytes()) {
            Ok(name) if !is_reserved_header(&name) => name,
            Ok(_) => {
                c.push(
                    format!("identity_headers.{key}"),
                    format!("{value:?} is a standard header: choose e.g. \"X-User-Id\""),
                );
                HeaderName::from_static("x-invalid")
            }
            Err(_) => {
                c.push(
                    format!("identity_headers.{key}"),
                    format!("{value:?} is not a valid header name"),
                );
                HeaderName::from_static("x-invalid")
            }
        }
    };
    let headers = IdentityHeaders {
        user_id: name("user_id", &raw.user_id),
        user_name: name("user_name", &raw.user_name),
        user_email: name("user_email", &raw.user_email),
        groups: name("groups", &raw.groups),
        scopes: name("scopes", &raw.scopes),
        client_id: name("client_id", &raw.client_id),
        method: name("method", &raw.method),
        token_id: name("token_id", &raw.token_id),
    };
    let distinct: HashSet<&HeaderName> = headers.names().into_iter().collect();
    if distinct.len() != headers.names().len() {
        c.push(
            "identity_headers",
            "two identity headers share a name: each needs its own",
        );
    }
    headers
}

/// Headers an identity or upstream-credential header must never replace.
fn is_reserved_header(name: &HeaderName) -> bool {
    use http::header;
    [
        header::HOST,
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::ACCEPT,
        header::COOKIE,
        header::ORIGIN,
    ]
    .contains(name)
        || name.as_str().starts_with("mcp-")
        || name.as_str() == "last-event-id"
}

fn compile_api_key(
    raw: &RawApiKey,
    path: &str,
    base_dir: &Path,
    c: &mut Collector,
) -> Option<ApiKey> {
    let hash = match (&raw.hash, &raw.key_env, &raw.key_file) {
        (Some(hash), None, None) => c.ok(&format!("{path}.hash"), api_key::parse_hash(hash))?,
        (None, env, file) if env.is_some() || file.is_some() => {
            let key = c.ok(
                path,
                secret::resolve(env.as_deref(), file.as_deref(), base_dir, "key"),
            )?;
            api_key::sha256(key.expose().as_bytes())
        }
        (None, _, _) => {
            c.push(path, "no key: set `hash = \"sha256:…\"` (see `mcp-auth-gateway keygen`), `key_env` or `key_file`");
            return None;
        }
        _ => {
            c.push(path, "give exactly one of `hash`, `key_env`, `key_file`");
            return None;
        }
    };
    if raw.subject.is_empty() {
        c.push(format!("{path}.subject"), "must not be empty");
    }
    let mut scopes = raw.scopes.clone();
    scopes.sort();
    scopes.dedup();
    Some(ApiKey::new(
        raw.id.clone(),
        hash,
        Principal {
            subject: raw.subject.clone(),
            name: raw.name.clone(),
            email: raw.email.clone(),
            groups: raw.groups.clone(),
            scopes,
            client_id: None,
            token_id: Some(raw.id.clone()),
            issuer: None,
            method: AuthMethod::ApiKey,
            verifier: VerifierId::ApiKeys,
            audiences: None,
            issuer_audience_matched: false,
            expires_at: None,
        },
    ))
}

fn claim_mapping(raw: &RawClaims) -> ClaimMapping {
    ClaimMapping {
        subject: raw.subject.clone(),
        name: raw.name.clone(),
        email: raw.email.clone(),
        groups: raw.groups.clone(),
        scope: raw.scope.clone(),
        client_id: raw.client_id.clone(),
    }
}

/// Asymmetric algorithms only. HMAC would let anyone holding the (public) verification key
/// mint tokens, and `none` is no signature at all; neither can be configured.
fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "RS384" => Ok(Algorithm::RS384),
        "RS512" => Ok(Algorithm::RS512),
        "PS256" => Ok(Algorithm::PS256),
        "PS384" => Ok(Algorithm::PS384),
        "PS512" => Ok(Algorithm::PS512),
        "ES256" => Ok(Algorithm::ES256),
        "ES384" => Ok(Algorithm::ES384),
        "EdDSA" => Ok(Algorithm::EdDSA),
        "HS256" | "HS384" | "HS512" | "none" => Err(format!(
            "{name:?} is not allowed: only asymmetric algorithms (RS*, PS*, ES256, ES384, EdDSA) can be verified safely with published keys"
        )),
        other => Err(format!(
            "{other:?} is not a supported algorithm: use RS256/384/512, PS256/384/512, ES256, ES384 or EdDSA"
        )),
    }
}

/// An outbound identity URL: https, or http on loopback (tests, sidecars), or http anywhere
/// only with the dangerous switch.
fn parse_identity_url(text: &str, allow_http: bool) -> Result<Uri, String> {
    let uri: Uri = text.parse().map_err(|_| format!("{text:?} is not a URL"))?;
    let host = uri.host().ok_or_else(|| format!("{text:?} has no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if allow_http || is_loopback_host(host) => Ok(uri),
        Some("http") => Err(format!(
            "{text:?} uses plain http: use https (or set [dangerous] allow_plain_http_identity_endpoints)"
        )),
        _ => Err(format!("{text:?} must be an https:// URL")),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn compile_issuer(
    index: usize,
    raw: &RawIssuer,
    base_dir: &Path,
    client: &HttpClient,
    allow_http: bool,
    c: &mut Collector,
) -> Option<Issuer> {
    let path = format!("issuers[{index}]");
    if raw.issuer.is_empty() {
        c.push(format!("{path}.issuer"), "must not be empty");
    }
    if raw.algorithms.is_empty() {
        c.push(
            format!("{path}.algorithms"),
            "list at least one algorithm, e.g. [\"RS256\"]",
        );
    }
    let algorithms: Vec<Algorithm> = raw
        .algorithms
        .iter()
        .enumerate()
        .filter_map(|(i, a)| c.ok(&format!("{path}.algorithms[{i}]"), parse_algorithm(a)))
        .collect();
    let refresh = raw
        .jwks_refresh_interval
        .map_or(Duration::from_secs(300), |d| d.0)
        .max(Duration::from_secs(1));
    let min_refetch = raw
        .jwks_refetch_min_interval
        .map_or(Duration::from_secs(30), |d| d.0);
    let keys = match (&raw.jwks_uri, &raw.jwks_file, &raw.public_key_file) {
        (Some(uri), None, None) => {
            let uri = c.ok(
                &format!("{path}.jwks_uri"),
                parse_identity_url(uri, allow_http),
            )?;
            KeySource::Remote(Arc::new(RemoteJwks::new(
                raw.id.clone(),
                uri,
                client.clone(),
                algorithms.clone(),
                refresh,
                min_refetch,
            )))
        }
        (None, Some(file), None) => {
            let file_path = base_dir.join(file);
            let set = c.ok(
                &format!("{path}.jwks_file"),
                read_file(&file_path).and_then(|bytes| KeySet::from_jwks(&bytes, &algorithms)),
            )?;
            if set.is_empty() {
                c.push(
                    format!("{path}.jwks_file"),
                    "holds no signature key usable with `algorithms`",
                );
            }
            KeySource::Static(set)
        }
        (None, None, Some(file)) => {
            let file_path = base_dir.join(file);
            KeySource::Static(c.ok(
                &format!("{path}.public_key_file"),
                read_file(&file_path).and_then(|bytes| KeySet::from_pem(&bytes, &algorithms)),
            )?)
        }
        _ => {
            c.push(
                &path,
                "give exactly one of `jwks_uri`, `jwks_file`, `public_key_file`",
            );
            return None;
        }
    };
    let allowed_types = raw
        .allowed_types
        .clone()
        .unwrap_or_else(|| vec!["at+jwt".into(), "JWT".into()])
        .into_iter()
        .map(|t| {
            let lower = t.to_ascii_lowercase();
            lower
                .strip_prefix("application/")
                .map(str::to_string)
                .unwrap_or(lower)
        })
        .collect();
    let leeway = raw.leeway.map_or(60, |d| d.0.as_secs());
    if leeway > 300 {
        c.push(
            format!("{path}.leeway"),
            "more than 5 minutes of clock skew is not accepted",
        );
    }
    Some(Issuer::new(
        index,
        raw.id.clone(),
        raw.issuer.clone(),
        algorithms,
        raw.audiences
            .iter()
            .map(|a| audience::canonical(a))
            .collect(),
        allowed_types,
        leeway,
        claim_mapping(&raw.claims),
        keys,
    ))
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn compile_introspection(
    index: usize,
    raw: &RawIntrospection,
    base_dir: &Path,
    client: &HttpClient,
    allow_http: bool,
    c: &mut Collector,
) -> Option<Introspector> {
    let path = format!("introspection[{index}]");
    let endpoint = c.ok(
        &format!("{path}.endpoint"),
        parse_identity_url(&raw.endpoint, allow_http),
    );
    let secret = c.ok(
        &format!("{path}.client_secret"),
        secret::resolve(
            raw.client_secret_env.as_deref(),
            raw.client_secret_file.as_deref(),
            base_dir,
            "client_secret_env / client_secret_file",
        ),
    );
    let (endpoint, secret) = (endpoint?, secret?);
    c.ok(
        &path,
        Introspector::new(
            index,
            raw.id.clone(),
            endpoint,
            &raw.client_id,
            &secret,
            raw.issuer.clone(),
            raw.audiences
                .iter()
                .map(|a| audience::canonical(a))
                .collect(),
            raw.require_audience,
            raw.cache_ttl.map_or(Duration::from_secs(60), |d| d.0),
            raw.timeout.map_or(Duration::from_secs(5), |d| d.0),
            claim_mapping(&raw.claims),
            client.clone(),
        ),
    )
}

#[allow(clippy::too_many_arguments)]
fn compile_routes(
    raw: &RawConfig,
    server: &ServerSettings,
    issuers: &[Arc<Issuer>],
    introspectors: &[Arc<Introspector>],
    base_dir: &Path,
    dangerous: &mut Vec<String>,
    forward_auth_path: Option<&str>,
    c: &mut Collector,
) -> RouteTable {
    if raw.routes.is_empty() {
        c.push(
            "routes",
            "no route: add a [[routes]] entry with `path` and `upstream`",
        );
    }
    let by_id: HashMap<&str, VerifierRef> = issuers
        .iter()
        .map(|i| (i.id.as_str(), VerifierRef::Issuer(i.clone())))
        .chain(
            introspectors
                .iter()
                .map(|i| (i.id.as_str(), VerifierRef::Introspection(i.clone()))),
        )
        .collect();
    let unauthenticated: HashSet<&str> = raw
        .dangerous
        .unauthenticated_routes
        .iter()
        .map(String::as_str)
        .collect();
    for (i, id) in raw.dangerous.unauthenticated_routes.iter().enumerate() {
        if !raw.routes.iter().any(|r| r.id == *id) {
            c.push(
                format!("dangerous.unauthenticated_routes[{i}]"),
                format!("no route has id {id:?}"),
            );
        } else {
            dangerous.push(format!("unauthenticated route {id:?}"));
        }
    }
    check_unique_ids(
        raw.routes.iter().map(|r| r.id.as_str()),
        "routes",
        &mut HashSet::new(),
        c,
    );

    let mut seen = HashSet::new();
    let routes = raw
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, route)| {
            let path = format!("routes[{i}]");
            let compiled = compile_route(
                route,
                &path,
                server,
                &raw.server,
                &by_id,
                unauthenticated.contains(route.id.as_str()),
                base_dir,
                c,
            )?;
            if !seen.insert((compiled.host.clone(), compiled.path.clone())) {
                c.push(
                    format!("{path}.path"),
                    format!("another route already serves {:?}", compiled.path),
                );
            }
            if forward_auth_path.is_some_and(|fa| {
                crate::pipeline::route::path_has_prefix(fa, &compiled.path) && compiled.path != "/"
            }) {
                c.push(
                    format!("{path}.path"),
                    "overlaps the forward_auth path: choose another path",
                );
            }
            if compiled.path.starts_with("/.well-known") {
                c.push(
                    format!("{path}.path"),
                    "/.well-known is reserved for discovery documents",
                );
            }
            Some(Arc::new(compiled))
        })
        .collect();
    RouteTable::new(routes)
}

enum VerifierRef {
    Issuer(Arc<Issuer>),
    Introspection(Arc<Introspector>),
}

#[allow(clippy::too_many_arguments)]
fn compile_route(
    raw: &RawRoute,
    path: &str,
    server: &ServerSettings,
    server_raw: &RawServer,
    by_id: &HashMap<&str, VerifierRef>,
    unauthenticated: bool,
    base_dir: &Path,
    c: &mut Collector,
) -> Option<Route> {
    let route_path = normalize_route_path(&raw.path);
    if let Err(reason) = route_path
        .as_deref()
        .map_err(String::as_str)
        .and_then(|p| check_path(p))
    {
        c.push(
            format!("{path}.path"),
            format!("{:?}: {reason}; use e.g. \"/mcp\"", raw.path),
        );
    }
    let upstream = c.ok(&format!("{path}.upstream"), parse_upstream(&raw.upstream));

    let mut verifiers = VerifierSet::default();
    for (j, id) in raw.verifiers.iter().enumerate() {
        match (id.as_str(), by_id.get(id.as_str())) {
            ("api_keys", _) => verifiers.api_keys = true,
            (_, Some(VerifierRef::Issuer(issuer))) => verifiers.issuers.push(issuer.clone()),
            (_, Some(VerifierRef::Introspection(x))) => verifiers.introspectors.push(x.clone()),
            (_, None) => c.push(
                format!("{path}.verifiers[{j}]"),
                format!("{id:?} is not \"api_keys\" nor the id of an [[issuers]] or [[introspection]] entry"),
            ),
        }
    }
    if verifiers.is_empty() && !unauthenticated {
        c.push(
            format!("{path}.verifiers"),
            "no verifier: list \"api_keys\" or issuer / introspection ids (routes are closed by default)",
        );
    }

    let route_path = route_path.ok()?;
    let public = &server.public_url;
    let resource = public.resource(&route_path);
    let audiences: Vec<String> = raw
        .audiences
        .clone()
        .unwrap_or_else(|| vec![resource.clone()])
        .iter()
        .map(|a| audience::canonical(a))
        .collect();
    let metadata_suffix = public.metadata_suffix(&route_path);
    let mut required_scopes = raw.scopes.clone();
    required_scopes.sort();
    required_scopes.dedup();
    let authorization_servers = raw.authorization_servers.clone().unwrap_or_else(|| {
        verifiers
            .issuers
            .iter()
            .map(|i| i.issuer.clone())
            .chain(
                verifiers
                    .introspectors
                    .iter()
                    .filter_map(|i| i.issuer.clone()),
            )
            .collect()
    });
    let document = ProtectedResourceMetadata {
        resource: resource.clone(),
        authorization_servers,
        scopes_supported: raw
            .scopes_supported
            .clone()
            .unwrap_or_else(|| required_scopes.clone()),
        bearer_methods_supported: ["header"],
        resource_name: raw.resource_name.clone(),
    };
    let metadata_document = Bytes::from(serde_json::to_vec(&document).unwrap_or_default());
    let challenge = Challenge {
        resource_metadata: format!("{}{METADATA_PREFIX}{metadata_suffix}", public.origin).into(),
        scope: (!required_scopes.is_empty()).then(|| required_scopes.join(" ").into()),
    };

    let public_paths = raw
        .public_paths
        .iter()
        .enumerate()
        .filter_map(|(j, sub)| {
            let full = if route_path == "/" {
                sub.clone()
            } else {
                format!("{route_path}{sub}")
            };
            if !sub.starts_with('/') || check_path(&full).is_err() {
                c.push(
                    format!("{path}.public_paths[{j}]"),
                    format!("{sub:?} must be a clean sub-path starting with /"),
                );
                None
            } else {
                Some(full.trim_end_matches('/').to_string())
            }
        })
        .collect();

    let methods = match &raw.methods {
        None => vec![Method::GET, Method::POST, Method::DELETE],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(j, m)| {
                c.ok(
                    &format!("{path}.methods[{j}]"),
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .map_err(|_| format!("{m:?} is not an HTTP method")),
                )
            })
            .collect(),
    };

    // A route's own allowlists replace the server-wide ones.
    let allowed_hosts = host_allowlist(
        raw.allowed_hosts
            .as_ref()
            .or(Some(&server_raw.allowed_hosts)),
        public,
    );
    let allowed_origins = origin_allowlist(
        raw.allowed_origins
            .as_ref()
            .or(Some(&server_raw.allowed_origins)),
        public,
        &format!("{path}.allowed_origins"),
        c,
    );

    let upstream_headers = raw
        .upstream_headers
        .iter()
        .filter_map(|(name, source)| {
            let key = format!("{path}.upstream_headers.{name}");
            let header = c.ok(
                &key,
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{name:?} is not a valid header name"))
                    .and_then(|h| {
                        if is_reserved_header(&h) {
                            Err(format!("{name:?} cannot be set as an upstream credential"))
                        } else {
                            Ok(h)
                        }
                    }),
            )?;
            let secret = c.ok(
                &key,
                secret::resolve(
                    source.env.as_deref(),
                    source.file.as_deref(),
                    base_dir,
                    "value",
                ),
            )?;
            let mut value = c.ok(
                &key,
                HeaderValue::from_str(secret.expose())
                    .map_err(|_| "the secret is not a valid header value".to_string()),
            )?;
            value.set_sensitive(true);
            Some((header, value))
        })
        .collect();

    Some(Route {
        id: raw.id.clone(),
        host: raw.host.as_ref().map(|h| h.to_ascii_lowercase()),
        path: route_path,
        upstream: upstream?,
        verifiers,
        unauthenticated,
        required_scopes,
        audiences,
        resource,
        metadata_suffix,
        metadata_document,
        challenge,
        public_paths,
        methods,
        allowed_hosts,
        allowed_origins,
        upstream_headers,
    })
}

fn normalize_route_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err("must start with /".into());
    }
    let trimmed = path.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    })
}

fn parse_upstream(text: &str) -> Result<Upstream, String> {
    let uri: Uri = text
        .parse()
        .map_err(|_| format!("{text:?} is not a URL: use e.g. \"http://127.0.0.1:3001/mcp\""))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => return Err(format!("{text:?} must start with http:// or https://")),
    };
    let authority: Authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{text:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{text:?} must not contain user information: use upstream_headers for credentials"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("{text:?} must not have a query string"));
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    Ok(Upstream {
        scheme,
        authority,
        base_path,
    })
}

fn host_allowlist(raw: Option<&Vec<String>>, public: &PublicUrl) -> HostAllowlist {
    match raw {
        Some(list) if list.iter().any(|h| h == "*") => HostAllowlist::Any,
        Some(list) if !list.is_empty() => {
            HostAllowlist::Only(list.iter().map(|h| h.to_ascii_lowercase()).collect())
        }
        _ => {
            // Default: the public host on any port, plus the loopback names when the public
            // URL is itself local (a local gateway is reached as localhost or 127.0.0.1).
            let mut hosts = vec![public.host.clone()];
            if is_loopback_host(&public.host) {
                hosts.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
            }
            HostAllowlist::Only(hosts)
        }
    }
}

fn origin_allowlist(
    raw: Option<&Vec<String>>,
    public: &PublicUrl,
    key: &str,
    c: &mut Collector,
) -> OriginAllowlist {
    match raw {
        Some(list) if list.iter().any(|o| o == "*") => OriginAllowlist::Any,
        Some(list) if !list.is_empty() => OriginAllowlist::Only(
            list.iter()
                .enumerate()
                .filter_map(|(i, o)| {
                    c.ok(
                        &format!("{key}[{i}]"),
                        canonical_origin(o).ok_or_else(|| {
                            format!("{o:?} is not an origin: use scheme://host[:port], e.g. \"https://app.example.com\"")
                        }),
                    )
                })
                .collect(),
        ),
        _ => OriginAllowlist::Only(vec![public.origin.clone()]),
    }
}
