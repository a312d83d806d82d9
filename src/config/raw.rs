//! The configuration file's shapes, exactly as written. Defaults live here; meaning and
//! validation live in `compile`. Unknown keys are errors: instead of serde's
//! `deny_unknown_fields` (which stops at the first one and cannot say where it was),
//! `config::parse` collects every ignored key with its full path (`routes[0].bogus`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::duration::{ConfigBytes, ConfigDuration};
use super::secret::SecretSource;

#[derive(Debug, Deserialize)]
pub struct RawConfig {
    pub server: RawServer,
    #[serde(default)]
    pub forward_auth: RawForwardAuth,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub identity_headers: RawIdentityHeaders,
    #[serde(default)]
    pub api_keys: Vec<RawApiKey>,
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    #[serde(default)]
    pub introspection: Vec<RawIntrospection>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub outbound: RawOutbound,
    #[serde(default)]
    pub dangerous: RawDangerous,
    /// The built-in OAuth 2.1 authorization server; absent = off.
    pub authorization_server: Option<RawAuthorizationServer>,
    /// Shared state for several replicas; absent = SQLite, one replica.
    pub redis: Option<RawRedis>,
}

/// `[redis]`: where replicas share the authorization server's state.
#[derive(Debug, Deserialize)]
pub struct RawRedis {
    pub url: String,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub ca_file: Option<String>,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    pub timeout: Option<ConfigDuration>,
}

fn default_key_prefix() -> String {
    "mcp-gateway:".into()
}

/// `[authorization_server]`: the gateway issues the tokens its routes accept.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawAuthorizationServer {
    /// The issuer identifier; empty = `server.public_url`.
    pub issuer: String,
    /// SQLite database file (created on first start).
    pub database: String,
    /// ES256 (default), RS256 or EdDSA.
    pub signing_algorithm: String,
    /// A PEM private key to sign with instead of a generated one.
    pub signing_key_file: Option<String>,
    pub access_token_ttl: ConfigDuration,
    pub refresh_token_ttl: ConfigDuration,
    pub authorization_code_ttl: ConfigDuration,
    /// How long a just-rotated refresh token is still accepted (parallel refreshes by one
    /// client); "0s" = strict: any reuse revokes the family.
    pub refresh_reuse_grace: ConfigDuration,
    pub login_session_ttl: ConfigDuration,
    /// Scopes offered besides those of the routes.
    pub scopes: Vec<String>,
    pub registration: RawRegistration,
    pub client_id_metadata_documents: RawCimd,
    pub clients: Vec<RawClient>,
    pub users: Vec<RawUser>,
    /// Where people log in besides the local users: GitHub or OpenID Connect providers.
    pub identity_providers: Vec<RawIdentityProvider>,
    /// Key (32 bytes, base64 or hex) sealing the providers' tokens kept for
    /// `[routes.upstream_token]`.
    pub token_encryption_key_env: Option<String>,
    pub token_encryption_key_file: Option<String>,
}

impl Default for RawAuthorizationServer {
    fn default() -> Self {
        use std::time::Duration;
        Self {
            issuer: String::new(),
            database: "mcp-auth-gateway.db".into(),
            signing_algorithm: "ES256".into(),
            signing_key_file: None,
            access_token_ttl: ConfigDuration(Duration::from_secs(3600)),
            refresh_token_ttl: ConfigDuration(Duration::from_secs(30 * 24 * 3600)),
            authorization_code_ttl: ConfigDuration(Duration::from_secs(60)),
            refresh_reuse_grace: ConfigDuration(Duration::from_secs(30)),
            login_session_ttl: ConfigDuration(Duration::from_secs(12 * 3600)),
            scopes: Vec::new(),
            registration: RawRegistration::default(),
            client_id_metadata_documents: RawCimd::default(),
            clients: Vec::new(),
            users: Vec::new(),
            identity_providers: Vec::new(),
            token_encryption_key_env: None,
            token_encryption_key_file: None,
        }
    }
}

/// Dynamic client registration (RFC 7591 / 7592).
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawRegistration {
    pub enabled: bool,
    /// A registration unused for this long is deleted.
    pub ttl: ConfigDuration,
    /// Registrations accepted from one client address per hour.
    pub per_address_per_hour: u32,
}

impl Default for RawRegistration {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: ConfigDuration(std::time::Duration::from_secs(30 * 24 * 3600)),
            per_address_per_hour: 20,
        }
    }
}

/// Client ID Metadata Documents: `client_id` is an https URL the gateway fetches.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawCimd {
    pub enabled: bool,
    /// Hosts (or `*.suffix`) whose documents are accepted; empty = any public host.
    pub allowed_domains: Vec<String>,
    pub min_cache: ConfigDuration,
    pub max_cache: ConfigDuration,
    pub timeout: ConfigDuration,
    pub max_bytes: ConfigBytes,
}

impl Default for RawCimd {
    fn default() -> Self {
        use std::time::Duration;
        Self {
            enabled: true,
            allowed_domains: Vec::new(),
            min_cache: ConfigDuration(Duration::from_secs(60)),
            max_cache: ConfigDuration(Duration::from_secs(24 * 3600)),
            timeout: ConfigDuration(Duration::from_secs(5)),
            max_bytes: ConfigBytes(5 * 1024),
        }
    }
}

/// A pre-registered OAuth client.
#[derive(Debug, Deserialize)]
pub struct RawClient {
    pub client_id: String,
    pub client_name: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// `sha256:…` of the client secret (`mcp-auth-gateway keygen`); absent = public client.
    pub secret_hash: Option<String>,
    /// Default: authorization_code + refresh_token.
    pub grant_types: Option<Vec<String>>,
    /// Scopes this client may receive; empty = any offered scope.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Skip the consent page for this client (first-party clients).
    #[serde(default)]
    pub trusted: bool,
}

/// A local user who can log in.
#[derive(Debug, Deserialize)]
pub struct RawUser {
    pub username: String,
    /// Argon2id PHC string (`mcp-auth-gateway hash-password`).
    pub password_hash: String,
    /// Token subject; default `local:<username>`.
    pub subject: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// An upstream identity provider people log in through (the gateway is its OAuth client).
#[derive(Debug, Deserialize)]
pub struct RawIdentityProvider {
    /// Short name: the login path (`/login/<id>`), the callback
    /// (`/login/<id>/callback`) and the subject prefix (`<id>:<subject>`).
    pub id: String,
    /// "oidc" or "github".
    #[serde(rename = "type")]
    pub kind: String,
    /// The login button's label; default from the type.
    pub display_name: Option<String>,
    pub client_id: String,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<String>,
    /// Scopes asked of the provider; default per type.
    pub scopes: Option<Vec<String>>,
    /// OIDC: the issuer identifier (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer: Option<String>,
    /// OIDC: the claim holding the user's groups.
    pub groups_claim: Option<String>,
    /// OIDC: ID token algorithms accepted; default RS256 and ES256.
    pub algorithms: Option<Vec<String>>,
    /// GitHub: the web origin (GitHub Enterprise Server: `https://github.example.com`).
    pub github_url: Option<String>,
    /// GitHub: the REST API base (GitHub Enterprise Server: `https://github.example.com/api/v3`).
    pub github_api_url: Option<String>,
    /// GitHub logins allowed (any organisation).
    #[serde(default)]
    pub allowed_users: Vec<String>,
    /// GitHub organisations whose members are allowed.
    #[serde(default)]
    pub allowed_organizations: Vec<String>,
    /// GitHub teams (`org/team-slug`) whose members are allowed.
    #[serde(default)]
    pub allowed_teams: Vec<String>,
    /// OIDC: verified email domains allowed.
    #[serde(default)]
    pub allowed_email_domains: Vec<String>,
    /// OIDC: groups (from `groups_claim`) whose members are allowed.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// Let anyone the provider authenticates in (no allowlist): must be said explicitly.
    #[serde(default)]
    pub allow_all_users: bool,
}

/// Calls the gateway makes: upstreams, JWKS, introspection.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawOutbound {
    /// Extra trusted CA certificates (PEM), added to the system roots.
    pub ca_files: Vec<String>,
    /// An http:// proxy for identity calls (JWKS, introspection, identity providers,
    /// upstreams' authorization servers); absent = the environment's.
    pub proxy: Option<String>,
    /// Destinations that bypass the proxy (added to `NO_PROXY` when that is used).
    pub no_proxy: Vec<String>,
    /// Read `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY` when `proxy` is unset.
    pub proxy_from_environment: bool,
}

impl Default for RawOutbound {
    fn default() -> Self {
        Self {
            ca_files: Vec::new(),
            proxy: None,
            no_proxy: Vec::new(),
            proxy_from_environment: true,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct RawServer {
    pub listen: Vec<String>,
    pub public_url: String,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub trust_forwarded_headers: bool,
    /// Worker threads, each with its own event loop, listeners and upstream pool;
    /// 0 = one per CPU core.
    #[serde(default)]
    pub workers: usize,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub limits: RawLimits,
}

#[derive(Debug, Deserialize)]
pub struct RawTls {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawLimits {
    pub max_header_bytes: ConfigBytes,
    pub max_body_bytes: ConfigBytes,
    pub max_token_bytes: ConfigBytes,
    pub header_read_timeout: ConfigDuration,
    pub connect_timeout: ConfigDuration,
    pub response_timeout: ConfigDuration,
    pub stream_idle_timeout: ConfigDuration,
    pub shutdown_grace: ConfigDuration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub idle_timeout: ConfigDuration,
    pub body_read_timeout: ConfigDuration,
    pub send_timeout: ConfigDuration,
    pub token_cache_entries: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        use std::time::Duration;
        Self {
            max_header_bytes: ConfigBytes(16 * 1024),
            max_body_bytes: ConfigBytes(4 * 1024 * 1024),
            max_token_bytes: ConfigBytes(8 * 1024),
            header_read_timeout: ConfigDuration(Duration::from_secs(10)),
            connect_timeout: ConfigDuration(Duration::from_secs(5)),
            response_timeout: ConfigDuration(Duration::from_secs(60)),
            stream_idle_timeout: ConfigDuration(Duration::from_secs(300)),
            shutdown_grace: ConfigDuration(Duration::from_secs(30)),
            max_connections: 10_000,
            max_connections_per_ip: 512,
            idle_timeout: ConfigDuration(Duration::from_secs(60)),
            body_read_timeout: ConfigDuration(Duration::from_secs(30)),
            send_timeout: ConfigDuration(Duration::from_secs(60)),
            token_cache_entries: 100_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawForwardAuth {
    pub enabled: bool,
    pub path: String,
}

/// The internal listener: health, readiness, metrics and `/verify`, for probes, scrapers and
/// the front proxy only.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAdmin {
    /// When set, the main listeners no longer answer `/verify`; `/metrics` is served only
    /// here.
    pub listen: Vec<String>,
}

impl Default for RawForwardAuth {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/verify".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawLog {
    pub format: String,
    pub level: String,
    pub audit_probes: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "pretty".into(),
            level: "info".into(),
            audit_probes: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawIdentityHeaders {
    pub user_id: String,
    pub user_name: String,
    pub user_email: String,
    pub groups: String,
    pub scopes: String,
    pub client_id: String,
    pub method: String,
    pub token_id: String,
}

impl Default for RawIdentityHeaders {
    fn default() -> Self {
        Self {
            user_id: "X-User-Id".into(),
            user_name: "X-User-Name".into(),
            user_email: "X-User-Email".into(),
            groups: "X-User-Groups".into(),
            scopes: "X-Auth-Scopes".into(),
            client_id: "X-Auth-Client-Id".into(),
            method: "X-Auth-Method".into(),
            token_id: "X-Auth-Token-Id".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct RawApiKey {
    pub id: String,
    pub hash: Option<String>,
    pub key_env: Option<String>,
    pub key_file: Option<String>,
    pub subject: String,
    pub name: Option<String>,
    pub email: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Tool name patterns this key may call (`tools/call`); absent = no limit of its own.
    pub tools: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RawIssuer {
    pub id: String,
    pub issuer: String,
    pub jwks_uri: Option<String>,
    pub jwks_file: Option<String>,
    pub public_key_file: Option<String>,
    pub algorithms: Vec<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub leeway: Option<ConfigDuration>,
    pub allowed_types: Option<Vec<String>>,
    pub jwks_refresh_interval: Option<ConfigDuration>,
    pub jwks_refetch_min_interval: Option<ConfigDuration>,
    #[serde(default)]
    pub claims: RawClaims,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawClaims {
    pub subject: String,
    pub name: String,
    pub email: String,
    pub groups: String,
    pub scope: String,
    pub client_id: String,
}

impl Default for RawClaims {
    fn default() -> Self {
        Self {
            subject: "sub".into(),
            name: "name".into(),
            email: "email".into(),
            groups: "groups".into(),
            scope: "scope".into(),
            client_id: "client_id".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct RawIntrospection {
    pub id: String,
    pub endpoint: String,
    pub client_id: String,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<String>,
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub cache_ttl: Option<ConfigDuration>,
    pub timeout: Option<ConfigDuration>,
    pub negative_cache_ttl: Option<ConfigDuration>,
    pub max_concurrent: Option<usize>,
    #[serde(default = "yes")]
    pub require_audience: bool,
    #[serde(default)]
    pub claims: RawClaims,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
pub struct RawRoute {
    pub id: String,
    pub host: Option<String>,
    pub path: String,
    pub upstream: String,
    #[serde(default)]
    pub verifiers: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub audiences: Option<Vec<String>>,
    pub scopes_supported: Option<Vec<String>>,
    pub authorization_servers: Option<Vec<String>>,
    pub resource_name: Option<String>,
    #[serde(default)]
    pub public_paths: Vec<String>,
    pub methods: Option<Vec<String>>,
    pub allowed_hosts: Option<Vec<String>>,
    pub allowed_origins: Option<Vec<String>>,
    /// Who may use the route beyond holding the scopes (empty = anyone verified).
    #[serde(default)]
    pub allowed_subjects: Vec<String>,
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    #[serde(default)]
    pub upstream_headers: BTreeMap<String, SecretSource>,
    /// MCP-aware rules (per tool / prompt / resource); absent = the route decides per
    /// request only and streams bodies untouched.
    pub mcp: Option<RawMcp>,
    pub rate_limits: Option<RawRateLimits>,
    /// Forward the caller's own token at an identity provider they logged in through.
    pub upstream_token: Option<RawUpstreamToken>,
}

/// `[routes.upstream_token]`: the upstream gets, for each user, a token obtained for them
/// (never the client's token): from the identity provider they logged in through
/// (`provider`), or from the upstream's own authorization server (`[…oauth]`).
#[derive(Debug, Deserialize)]
pub struct RawUpstreamToken {
    /// The `id` of an `[[authorization_server.identity_providers]]` entry.
    pub provider: Option<String>,
    /// The gateway as the upstream authorization server's OAuth client.
    pub oauth: Option<RawUpstreamOAuth>,
    /// Header to carry it; default `authorization` (as `Bearer <token>`).
    pub header: Option<String>,
}

/// `[routes.upstream_token.oauth]`: every key optional; by default everything is discovered
/// from the upstream (RFC 9728, RFC 8414) and the gateway identifies itself with its client
/// metadata document, or registers (RFC 7591).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawUpstreamOAuth {
    pub authorization_server: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<String>,
    pub scopes: Vec<String>,
    pub resource: Option<String>,
}

/// `[routes.rate_limits]`: token buckets, `"N/second|minute|hour|day"`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRateLimits {
    pub route: Option<String>,
    pub per_principal: Option<String>,
    pub per_tool: Option<String>,
    /// Per tool name, for each caller (overrides `per_tool`).
    pub tools: BTreeMap<String, String>,
}

/// `[routes.mcp]`.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawMcp {
    /// "allow" or "deny": for tool calls, prompt reads and resource reads no rule matched.
    pub default: String,
    /// The OAuth convention: `tools/call NAME` needs scope `mcp:tool:NAME` or `mcp:tool:*`.
    pub tool_scopes: bool,
    /// Largest request body read to decide; more → 413.
    pub max_body_bytes: ConfigBytes,
    /// `/verify` when neither a forwarded body nor `Mcp-Method` says what is called:
    /// "deny" (default) or "allow".
    pub undetermined: String,
    pub rules: Vec<RawRule>,
}

impl Default for RawMcp {
    fn default() -> Self {
        Self {
            default: "allow".into(),
            tool_scopes: false,
            max_body_bytes: ConfigBytes(1024 * 1024),
            undetermined: "deny".into(),
            rules: Vec::new(),
        }
    }
}

/// `[[routes.mcp.rules]]`: what it matches, then what it does (allow, deny, or require).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRule {
    pub name: String,
    pub methods: Vec<String>,
    pub tools: Option<Vec<String>>,
    pub prompts: Option<Vec<String>>,
    pub resources: Option<Vec<String>>,
    pub allow: bool,
    pub deny: bool,
    pub scopes: Vec<String>,
    pub groups: Vec<String>,
    pub subjects: Vec<String>,
    pub clients: Vec<String>,
}

/// Switches that weaken security. Off by default; each one is logged at WARN when set.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawDangerous {
    /// Route ids proxied without any credential check (benchmarks, trusted networks).
    pub unauthenticated_routes: Vec<String>,
    /// Allow `http://` JWKS and introspection endpoints on non-loopback hosts.
    pub allow_plain_http_identity_endpoints: bool,
    /// Let client metadata documents be fetched from loopback and private addresses, and
    /// over plain http (tests only: it opens the authorization server to SSRF).
    pub cimd_allow_private_addresses: bool,
}
