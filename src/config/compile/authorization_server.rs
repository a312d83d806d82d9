//! `[authorization_server]` → [`AuthorizationServerSettings`], and the JWT issuer through
//! which every route accepts the tokens it issues (keys shared in process, see
//! `auth::local`).

use std::collections::BTreeSet;
use std::path::Path;

use jsonwebtoken::Algorithm;

use super::verifiers::{claim_mapping, is_loopback_host, parse_algorithm};
use super::Collector;
use crate::auth::api_key::parse_hash;
use crate::auth::jwks::KeySource;
use crate::auth::jwt::Issuer;
use crate::config::authorization_server::{
    AuthorizationServerSettings, CimdSettings, LocalUser, ProtectedResource, RegistrationSettings,
    StaticClient, LOCAL_ISSUER_ID,
};
use crate::config::raw::{RawAuthorizationServer, RawClaims, RawConfig};
use crate::config::settings::ServerSettings;
use crate::model::route::{RouteTable, UserTokenSource};

/// Grants a client may be configured with.
const GRANT_TYPES: [&str; 3] = ["authorization_code", "refresh_token", "client_credentials"];

/// The issuer identifier: configured, or the public URL.
pub(super) fn issuer_identifier(
    raw: &RawAuthorizationServer,
    server: &ServerSettings,
    c: &mut Collector,
) -> String {
    if raw.issuer.is_empty() {
        // The MCP specification wants every authorization server endpoint on https; clients
        // make an exception for loopback only. Refused here rather than at the first login.
        let public_url = &server.public_url;
        if !public_url.origin.starts_with("https://") && !is_loopback_host(&public_url.host) {
            c.push(
                "authorization_server.issuer",
                format!(
                    "defaults to server.public_url {:?}, which is not https: MCP clients accept an http authorization server on loopback only; make public_url the https URL clients use (TLS here or at the front proxy), e.g. \"https://mcp.example.com\"",
                    public_url.origin
                ),
            );
        }
        return format!("{}{}", public_url.origin, public_url.base_path);
    }
    match url::Url::parse(&raw.issuer) {
        Ok(url)
            if (url.scheme() == "https"
                || (url.scheme() == "http" && url.host_str().is_some_and(is_loopback_host)))
                && url.query().is_none()
                && url.fragment().is_none()
                && url.username().is_empty()
                && url.password().is_none() =>
        {
            url.as_str().trim_end_matches('/').to_string()
        }
        _ => {
            c.push(
                "authorization_server.issuer",
                format!(
                    "{:?} is not a usable issuer: an https URL (http only on loopback) without query, fragment or userinfo, e.g. \"https://mcp.example.com\"",
                    raw.issuer
                ),
            );
            String::new()
        }
    }
}

/// The issuer every route accepts besides its own verifiers. Its keys are whatever the
/// authorization server publishes; only `at+jwt` tokens (RFC 9068) are accepted.
pub(super) fn local_issuer(index: usize, issuer: &str) -> Issuer {
    Issuer::new(
        index,
        LOCAL_ISSUER_ID.to_string(),
        issuer.to_string(),
        vec![Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA],
        Vec::new(),
        vec!["at+jwt".to_string()],
        30,
        claim_mapping(&RawClaims::default()),
        KeySource::Local,
    )
}

pub(super) fn compile_authorization_server(
    raw: &RawConfig,
    issuer: String,
    redis: Option<crate::config::redis::RedisSettings>,
    routes: &RouteTable,
    base_dir: &Path,
    c: &mut Collector,
) -> Option<AuthorizationServerSettings> {
    let section = raw.authorization_server.as_ref()?;
    let key = |name: &str| format!("authorization_server.{name}");

    let signing_algorithm = match parse_algorithm(&section.signing_algorithm) {
        Ok(alg @ (Algorithm::ES256 | Algorithm::RS256 | Algorithm::EdDSA)) => alg,
        _ => {
            c.push(
                key("signing_algorithm"),
                format!(
                    "{:?} cannot sign our tokens: use \"ES256\" (default), \"RS256\" or \"EdDSA\"",
                    section.signing_algorithm
                ),
            );
            Algorithm::ES256
        }
    };
    let in_range = |c: &mut Collector,
                    name: &str,
                    value: std::time::Duration,
                    min: u64,
                    max: u64,
                    fix: &str| {
        let secs = value.as_secs();
        if secs < min || secs > max {
            c.push(key(name), format!("{value:?} is out of range: {fix}"));
        }
    };
    in_range(
        c,
        "access_token_ttl",
        section.access_token_ttl.0,
        60,
        24 * 3600,
        "use 1m to 24h (short-lived access tokens, e.g. \"1h\")",
    );
    in_range(
        c,
        "refresh_token_ttl",
        section.refresh_token_ttl.0,
        3600,
        365 * 24 * 3600,
        "use 1h to 365d, e.g. \"30d\"",
    );
    in_range(
        c,
        "authorization_code_ttl",
        section.authorization_code_ttl.0,
        10,
        60,
        "use 10s to 60s: a code is spent within seconds of its redirect, and a short life narrows what a leaked one is worth (OAuth 2.1 §4.1.2 allows at most 10m)",
    );
    in_range(
        c,
        "refresh_reuse_grace",
        section.refresh_reuse_grace.0,
        0,
        300,
        "use 0s (strict) to 5m",
    );
    in_range(
        c,
        "login_session_ttl",
        section.login_session_ttl.0,
        60,
        30 * 24 * 3600,
        "use 1m to 30d",
    );

    // The routes that accept our tokens are the resources tokens can be issued for.
    let resources: Vec<ProtectedResource> = routes
        .iter()
        .filter(|route| {
            route
                .verifiers
                .issuers
                .iter()
                .any(|i| i.id == LOCAL_ISSUER_ID)
        })
        .map(|route| {
            let raw_route = raw.routes.iter().find(|r| *r.id == *route.id);
            let mut scopes: Vec<String> = raw_route
                .and_then(|r| r.scopes_supported.clone())
                .unwrap_or_else(|| route.required_scopes.clone());
            scopes.sort();
            scopes.dedup();
            ProtectedResource {
                uri: route.resource.clone(),
                name: raw_route.and_then(|r| r.resource_name.clone()),
                scopes,
                tool_scopes: route.mcp.as_ref().is_some_and(|m| m.tool_scopes),
            }
        })
        .collect();
    let mut scopes_supported: BTreeSet<String> = resources
        .iter()
        .flat_map(|r| r.scopes.iter().cloned())
        .collect();
    for (i, scope) in section.scopes.iter().enumerate() {
        if !crate::model::identity::is_scope_token(scope) {
            c.push(
                format!("{}[{i}]", key("scopes")),
                format!("{scope:?} is not a scope token (RFC 6749 §3.3: printable ASCII without spaces, quotes or backslashes)"),
            );
        }
        scopes_supported.insert(scope.clone());
    }

    if resources.is_empty() {
        c.warn(
            "authorization_server",
            "no route accepts its tokens: leave a route's `verifiers` empty, or add \"authorization_server\" to it",
        );
    }
    let clients = compile_clients(section, c);
    let users = compile_users(section, c);
    let identity_providers = super::identity_providers::compile_identity_providers(
        &section.identity_providers,
        raw.dangerous.allow_plain_http_identity_endpoints,
        base_dir,
        c,
    );
    check_subject_namespaces(&users, &clients, &identity_providers, c);
    let token_encryption_key = token_encryption_key(section, base_dir, c);
    check_user_tokens(
        routes,
        &identity_providers,
        token_encryption_key.is_some(),
        c,
    );
    if users.is_empty() && identity_providers.is_empty() {
        c.warn(
            key("users"),
            "no local user and no identity provider: nobody can log in, so only client_credentials clients get tokens; add [[authorization_server.users]] (password hash from `mcp-auth-gateway hash-password`) or [[authorization_server.identity_providers]]",
        );
    }
    let cimd = &section.client_id_metadata_documents;
    let allowed_domains = cimd
        .allowed_domains
        .iter()
        .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
        .collect();
    if cimd.min_cache.0 > cimd.max_cache.0 {
        c.push(
            key("client_id_metadata_documents.min_cache"),
            "is longer than max_cache: make min_cache ≤ max_cache",
        );
    }
    if cimd.max_bytes.0 == 0 || cimd.max_bytes.0 > 256 * 1024 {
        c.push(
            key("client_id_metadata_documents.max_bytes"),
            format!(
                "{} is out of range: use 1 to 256KB (5KB recommended)",
                cimd.max_bytes.0
            ),
        );
    }
    if section.registration.enabled && section.registration.per_address_per_hour == 0 {
        c.push(
            key("registration.per_address_per_hour"),
            "0 would refuse every registration: set e.g. 20, or registration.enabled = false",
        );
    }

    Some(AuthorizationServerSettings {
        issuer_path: url::Url::parse(&issuer)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default(),
        secure_cookies: issuer.starts_with("https://"),
        issuer,
        database: base_dir.join(&section.database),
        redis,
        signing_algorithm,
        signing_key_file: section
            .signing_key_file
            .as_ref()
            .map(|file| base_dir.join(file)),
        access_token_ttl: section.access_token_ttl.0,
        refresh_token_ttl: section.refresh_token_ttl.0,
        code_ttl: section.authorization_code_ttl.0,
        refresh_reuse_grace: section.refresh_reuse_grace.0,
        login_session_ttl: section.login_session_ttl.0,
        scopes_supported: scopes_supported.into_iter().collect(),
        resources,
        clients,
        users,
        identity_providers,
        token_encryption_key,
        registration: RegistrationSettings {
            enabled: section.registration.enabled,
            ttl: section.registration.ttl.0,
            per_address_per_hour: section.registration.per_address_per_hour,
        },
        cimd: CimdSettings {
            enabled: cimd.enabled,
            allowed_domains,
            min_cache: cimd.min_cache.0,
            max_cache: cimd.max_cache.0,
            timeout: cimd.timeout.0,
            max_bytes: cimd.max_bytes.as_usize(),
            allow_private_addresses: raw.dangerous.cimd_allow_private_addresses,
        },
    })
}

/// Subjects `<provider id>:…` belong to that provider's users: a local user or a client
/// (whose `client_credentials` tokens carry its id as subject) named so would share their
/// consents, grants and forwarded provider tokens. Likewise a machine client named like a
/// local user's subject.
fn check_subject_namespaces(
    users: &[LocalUser],
    clients: &[StaticClient],
    providers: &[crate::config::identity_providers::IdentityProvider],
    c: &mut Collector,
) {
    let claimed = |subject: &str| {
        providers
            .iter()
            .find(|p| {
                subject
                    .strip_prefix(p.id.as_str())
                    .is_some_and(|rest| rest.starts_with(':'))
            })
            .map(|p| p.id.clone())
    };
    for (i, user) in users.iter().enumerate() {
        if let Some(provider) = claimed(&user.subject) {
            c.push(
                format!("authorization_server.users[{i}].subject"),
                format!(
                    "{:?} is in the namespace of identity provider {provider:?} ({provider}:…): choose another subject",
                    user.subject
                ),
            );
        }
    }
    for (i, client) in clients.iter().enumerate() {
        let machine = client.grant_types.iter().any(|g| g == "client_credentials");
        if machine && users.iter().any(|u| u.subject == client.client_id) {
            c.push(
                format!("authorization_server.clients[{i}].client_id"),
                format!(
                    "{:?} is also a local user's subject: its client_credentials tokens would speak for that user (and use their upstream tokens); choose another client id",
                    client.client_id
                ),
            );
        }
        if let Some(provider) = claimed(&client.client_id) {
            c.push(
                format!("authorization_server.clients[{i}].client_id"),
                format!(
                    "{:?} is in the namespace of identity provider {provider:?}: choose another client id",
                    client.client_id
                ),
            );
        }
    }
}

/// The key sealing providers' tokens at rest: from the environment or a file, never the
/// configuration text.
fn token_encryption_key(
    section: &RawAuthorizationServer,
    base_dir: &Path,
    c: &mut Collector,
) -> Option<crate::config::secret::Secret> {
    if section.token_encryption_key_env.is_none() && section.token_encryption_key_file.is_none() {
        return None;
    }
    let path = "authorization_server.token_encryption_key";
    let secret = c.ok(
        path,
        crate::config::secret::resolve(
            section.token_encryption_key_env.as_deref(),
            section.token_encryption_key_file.as_deref(),
            base_dir,
            "token_encryption_key_env / token_encryption_key_file",
        ),
    )?;
    c.ok(
        path,
        crate::config::secret::parse_key_32(secret.expose()).map_err(str::to_string),
    )?;
    Some(secret)
}

/// A route forwarding users' provider tokens needs the provider, a key to keep the tokens
/// sealed, and to accept the authorization server's tokens (others' users have none).
fn check_user_tokens(
    routes: &RouteTable,
    providers: &[crate::config::identity_providers::IdentityProvider],
    have_key: bool,
    c: &mut Collector,
) {
    for route in routes.iter() {
        let Some(forwarding) = &route.user_token else {
            continue;
        };
        let path = format!("routes (id {:?}).upstream_token", route.id);
        if let UserTokenSource::Provider(provider) = &forwarding.source {
            if !providers.iter().any(|p| &p.id == provider) {
                c.push(
                    format!("{path}.provider"),
                    format!(
                        "{provider:?} is not an [[authorization_server.identity_providers]] id"
                    ),
                );
            }
        }
        if !have_key {
            c.push(
                path.clone(),
                "needs authorization_server.token_encryption_key_env (or _file): users' upstream tokens are kept sealed with it (32 random bytes, e.g. `openssl rand -base64 32`)",
            );
        }
        if !route
            .verifiers
            .issuers
            .iter()
            .any(|i| i.id == LOCAL_ISSUER_ID)
        {
            c.push(
                path,
                "the route does not accept the authorization server's tokens: only its users have upstream tokens (add \"authorization_server\" to verifiers)",
            );
        }
    }
}

fn compile_clients(section: &RawAuthorizationServer, c: &mut Collector) -> Vec<StaticClient> {
    let mut seen = BTreeSet::new();
    section
        .clients
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let path = format!("authorization_server.clients[{i}]");
            if raw.client_id.is_empty() || raw.client_id.len() > 255 {
                c.push(format!("{path}.client_id"), "must be 1 to 255 characters");
            } else if raw.client_id.starts_with("https://") || raw.client_id.starts_with("http://")
            {
                c.push(
                    format!("{path}.client_id"),
                    "must not be a URL: URL client ids are client metadata documents, fetched at login",
                );
            } else if !seen.insert(raw.client_id.clone()) {
                c.push(
                    format!("{path}.client_id"),
                    format!("{:?} is configured twice", raw.client_id),
                );
            }
            let secret_sha256 = raw.secret_hash.as_ref().and_then(|hash| {
                c.ok(
                    &format!("{path}.secret_hash"),
                    parse_hash(hash).map_err(|e| {
                        format!("{e} (`mcp-auth-gateway keygen` prints a secret and its hash)")
                    }),
                )
            });
            let grant_types = raw.grant_types.clone().unwrap_or_else(|| {
                vec!["authorization_code".to_string(), "refresh_token".to_string()]
            });
            for (j, grant) in grant_types.iter().enumerate() {
                if !GRANT_TYPES.contains(&grant.as_str()) {
                    c.push(
                        format!("{path}.grant_types[{j}]"),
                        format!("{grant:?} is not supported: use authorization_code, refresh_token or client_credentials"),
                    );
                }
            }
            if grant_types.iter().any(|g| g == "client_credentials") && secret_sha256.is_none() {
                c.push(
                    format!("{path}.grant_types"),
                    "client_credentials needs a confidential client: set secret_hash",
                );
            }
            let redirects = grant_types.iter().any(|g| g == "authorization_code");
            if redirects && raw.redirect_uris.is_empty() {
                c.push(
                    format!("{path}.redirect_uris"),
                    "an authorization_code client needs at least one redirect URI",
                );
            }
            for (j, uri) in raw.redirect_uris.iter().enumerate() {
                if let Err(reason) = crate::config::authorization_server::check_redirect_uri(uri) {
                    c.push(format!("{path}.redirect_uris[{j}]"), format!("{uri:?}: {reason}"));
                }
            }
            StaticClient {
                client_id: raw.client_id.clone(),
                client_name: raw.client_name.clone(),
                redirect_uris: raw.redirect_uris.clone(),
                secret_sha256,
                grant_types,
                scopes: raw.scopes.clone(),
                trusted: raw.trusted,
            }
        })
        .collect()
}

fn compile_users(section: &RawAuthorizationServer, c: &mut Collector) -> Vec<LocalUser> {
    let mut seen = BTreeSet::new();
    section
        .users
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let path = format!("authorization_server.users[{i}]");
            if raw.username.is_empty() || raw.username.len() > 128 {
                c.push(format!("{path}.username"), "must be 1 to 128 characters");
            } else if !seen.insert(raw.username.clone()) {
                c.push(
                    format!("{path}.username"),
                    format!("{:?} is configured twice", raw.username),
                );
            }
            if argon2::PasswordHash::new(&raw.password_hash).is_err()
                || !raw.password_hash.starts_with("$argon2")
            {
                c.push(
                    format!("{path}.password_hash"),
                    "is not an Argon2 PHC string: create one with `mcp-auth-gateway hash-password`",
                );
            }
            LocalUser {
                username: raw.username.clone(),
                password_hash: raw.password_hash.clone(),
                subject: raw
                    .subject
                    .clone()
                    .unwrap_or_else(|| format!("local:{}", raw.username)),
                name: raw.name.clone(),
                email: raw.email.clone(),
                groups: raw.groups.clone(),
            }
        })
        .collect()
}

/// The authorization server answers these paths ahead of the routes: a route there would
/// never see a request.
const RESERVED_PATHS: [&str; 8] = [
    "/authorize",
    "/token",
    "/register",
    "/revoke",
    "/introspect",
    "/jwks.json",
    "/login",
    "/consent",
];

pub(super) fn check_route_paths(routes: &RouteTable, c: &mut Collector) {
    for route in routes.iter() {
        let path = route.path.to_ascii_lowercase();
        if let Some(reserved) = RESERVED_PATHS
            .iter()
            .find(|r| path == **r || path.starts_with(&format!("{r}/")))
        {
            c.push(
                format!("routes (id {:?}).path", route.id),
                format!("{:?} is served by the built-in authorization server ({reserved}): choose another path", route.path),
            );
        }
    }
}
