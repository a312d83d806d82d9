//! Raw configuration → runtime types. Every check lives under this module and every problem
//! is collected with its key path (`routes[1].verifiers[0]`) before reporting, so one run of
//! `mcp-auth-gateway check` lists everything to fix. `server` compiles `[server]` and the
//! identity headers, `verifiers` the credentials, `routes` the routes.

mod authorization_server;
mod identity_providers;
mod mcp;
mod redis;
mod routes;
mod server;
mod user_tokens;
mod verifiers;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::auth::api_key::ApiKeyStore;
use crate::auth::introspection::Introspector;
use crate::auth::jwt::Issuer;
use crate::auth::Verifiers;
use crate::config::raw::RawConfig;
use crate::config::settings::{AdminSettings, Config, ForwardAuthSettings, LogFormat, LogSettings};
use crate::config::{ConfigError, Problem};
use crate::model::path::check_path;
use crate::model::route::RouteTable;
use crate::outbound::{self};
use routes::compile_routes;
use server::{compile_identity_headers, compile_limits, compile_server};
use verifiers::{compile_api_key, compile_introspection, compile_issuer};

/// Collects problems while compiling.
pub(super) struct Collector {
    problems: Vec<Problem>,
    /// Not errors, but likely mistakes: `check` prints them, `serve` logs them.
    warnings: Vec<Problem>,
}

impl Collector {
    /// Records a problem once (server-wide settings are compiled for every route).
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let problem = Problem::new(path, message);
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    pub(super) fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem::new(path, message));
    }

    pub(super) fn ok<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
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
        warnings: Vec::new(),
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
    let (proxy, outbound_proxy) = outbound_proxy(&raw.outbound, &mut c);
    let client = outbound::client(limits.connect_timeout, tls.clone(), proxy);
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
    let mut issuers: Vec<Arc<Issuer>> = raw
        .issuers
        .iter()
        .enumerate()
        .filter_map(|(i, issuer)| {
            compile_issuer(i, issuer, base_dir, &client, allow_http, &mut c).map(Arc::new)
        })
        .collect();
    // The built-in authorization server is one more issuer, accepted by every route.
    let local_issuer = match (&raw.authorization_server, &server) {
        (Some(section), Some(server)) => {
            let identifier = authorization_server::issuer_identifier(section, server, &mut c);
            if raw.issuers.iter().any(|i| i.issuer == identifier) {
                c.push(
                    "authorization_server.issuer",
                    format!("{identifier:?} is also an [[issuers]] entry: the built-in authorization server is trusted automatically, remove that entry"),
                );
            }
            let issuer = Arc::new(authorization_server::local_issuer(
                raw.issuers.len(),
                &identifier,
            ));
            issuers.push(issuer.clone());
            Some(issuer)
        }
        _ => None,
    };
    // Two entries for one `iss` would make the first one win silently.
    let mut seen_issuers: HashMap<&str, usize> = HashMap::new();
    for (i, issuer) in raw.issuers.iter().enumerate() {
        if let Some(first) = seen_issuers.insert(issuer.issuer.as_str(), i) {
            c.push(
                format!("issuers[{i}].issuer"),
                format!(
                    "{:?} is already configured by issuers[{first}]: merge the two entries",
                    issuer.issuer
                ),
            );
        }
    }
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
            .chain(raw.introspection.iter().map(|i| i.id.as_str()))
            .chain(local_issuer.iter().map(|i| i.id.as_str())),
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
    let admin_listen: Vec<SocketAddr> = raw
        .admin
        .listen
        .iter()
        .enumerate()
        .filter_map(|(i, addr)| {
            c.ok(
                &format!("admin.listen[{i}]"),
                addr.parse::<SocketAddr>()
                    .map_err(|_| format!("{addr:?} is not ip:port (e.g. \"127.0.0.1:9090\")")),
            )
        })
        .collect();

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
            local_issuer.as_ref(),
            base_dir,
            &mut dangerous,
            forward_auth_path.as_deref(),
            &mut c,
        ),
        None => RouteTable::default(),
    };
    routes::check_set_names_apart(&raw.routes, &identity_headers, &mut c);

    if raw.dangerous.cimd_allow_private_addresses {
        dangerous.push("cimd_allow_private_addresses".to_string());
    }
    if local_issuer.is_some() {
        authorization_server::check_route_paths(&routes, &mut c);
    } else {
        for route in routes.iter().filter(|r| r.user_token.is_some()) {
            c.push(
                format!("routes (id {:?}).upstream_token", route.id),
                "needs [authorization_server]: users' upstream tokens are obtained when they sign in there (through the identity provider, or by connecting to the upstream's authorization server)",
            );
        }
    }
    let redis = raw
        .redis
        .as_ref()
        .and_then(|section| redis::compile_redis(section, base_dir, &mut c));
    let authorization_server = local_issuer.as_ref().and_then(|issuer| {
        authorization_server::compile_authorization_server(
            &raw,
            issuer.issuer.clone(),
            redis.clone(),
            &routes,
            base_dir,
            &mut c,
        )
    });

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
        audit_probes: raw.log.audit_probes,
    };
    if let Err(message) = check_log_level(&raw.log.level) {
        c.push("log.level", message);
    }

    match (server, c.problems.is_empty()) {
        (Some(server), true) => Ok(Config {
            server,
            forward_auth: ForwardAuthSettings {
                path: forward_auth_path,
            },
            admin: AdminSettings {
                listen: admin_listen,
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
            authorization_server,
            redis,
            client,
            outbound_tls: tls,
            outbound_proxy,
            dangerous,
            warnings: c.warnings,
            source_sha256: String::new(),
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

/// A tracing filter whose every directive ends in a level: a bare word such as `verbose`
/// parses as a target name and would silence every line, the audit events included.
fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let fix = "use a level (trace, debug, info, warn, error, off) or target=level directives, e.g. \"info,mcp_auth_gateway=debug\"";
    for directive in level.split(',').map(str::trim) {
        let wanted = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.contains(&wanted.to_ascii_lowercase().as_str()) {
            return Err(format!("{level:?} is not a log filter: {fix}"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| format!("{level:?} is not a log filter ({e}): {fix}"))
}

/// `[outbound] proxy` / `no_proxy` / `proxy_from_environment`: the rules for identity calls,
/// and what to say of them (proxy addresses without credentials).
fn outbound_proxy(
    raw: &crate::config::raw::RawOutbound,
    c: &mut Collector,
) -> (outbound::ProxyRules, Vec<String>) {
    if let Some(proxy) = &raw.proxy {
        return match proxy_address(proxy) {
            Ok(shown) => (
                outbound::ProxyRules::fixed(proxy, &raw.no_proxy),
                vec![format!(
                    "{shown} (no_proxy: {})",
                    list_or_none(&raw.no_proxy)
                )],
            ),
            Err(why) => {
                c.push("outbound.proxy", why);
                (outbound::ProxyRules::default(), Vec::new())
            }
        };
    }
    if !raw.proxy_from_environment {
        return (outbound::ProxyRules::default(), Vec::new());
    }
    let mut shown = Vec::new();
    for name in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        let Ok(value) = std::env::var(name) else {
            continue;
        };
        match proxy_address(&value) {
            Ok(address) => shown.push(format!("{name}={address}")),
            Err(why) => c.warn(
                "outbound.proxy_from_environment",
                format!("{name}: {why}; identity calls it applies to will fail (set proxy_from_environment = false to ignore the environment)"),
            ),
        }
    }
    (outbound::ProxyRules::from_environment(&raw.no_proxy), shown)
}

/// An outbound proxy as it may be shown: `http://host:port`, credentials left out.
fn proxy_address(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "{}:// proxies are not supported: use an http:// proxy (the tunnel inside it carries TLS)",
            url.scheme()
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| "the proxy URL has no host".to_string())?;
    Ok(match url.port() {
        Some(port) => format!("http://{host}:{port}"),
        None => format!("http://{host}"),
    })
}

fn list_or_none(list: &[String]) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}
