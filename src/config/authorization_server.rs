//! The compiled `[authorization_server]` section: what the built-in authorization server
//! runs on. Valid by construction (see `compile::authorization_server`).

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::identity_providers::IdentityProvider;

/// The verifier id of the built-in authorization server's issuer (reserved).
pub const LOCAL_ISSUER_ID: &str = "authorization_server";

/// Everything the authorization server needs from the configuration.
#[derive(Debug, Clone)]
pub struct AuthorizationServerSettings {
    /// The issuer identifier (RFC 8414 §2): https (or http on loopback), no trailing slash,
    /// no query or fragment. Every endpoint URL is built from it.
    pub issuer: String,
    /// The issuer's path ("" or "/tenant"), for the path-inserted well-known URLs.
    pub issuer_path: String,
    pub database: PathBuf,
    /// `[redis]`: the state lives there instead of `database` (several replicas).
    pub redis: Option<super::redis::RedisSettings>,
    pub signing_algorithm: Algorithm,
    pub signing_key_file: Option<PathBuf>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub code_ttl: Duration,
    /// Zero = strict refresh rotation.
    pub refresh_reuse_grace: Duration,
    pub login_session_ttl: Duration,
    /// Every scope a client may ask for (the routes' and the extra ones), sorted.
    pub scopes_supported: Vec<String>,
    /// The routes tokens can be issued for (RFC 8707 resources).
    pub resources: Vec<ProtectedResource>,
    pub clients: Vec<StaticClient>,
    pub users: Vec<LocalUser>,
    /// GitHub and OpenID Connect providers on the login page.
    pub identity_providers: Vec<IdentityProvider>,
    /// Seals the providers' tokens kept for routes that forward them; `None` = such
    /// tokens are not kept.
    pub token_encryption_key: Option<super::secret::Secret>,
    pub registration: RegistrationSettings,
    pub cimd: CimdSettings,
    /// Cookies get `Secure` and the `__Host-` prefix (the issuer is https).
    pub secure_cookies: bool,
}

/// A route as the authorization server sees it: where tokens may be used.
#[derive(Debug, Clone)]
pub struct ProtectedResource {
    /// Canonical resource identifier (the token's `aud`).
    pub uri: String,
    pub name: Option<String>,
    /// Scopes this route offers.
    pub scopes: Vec<String>,
    /// The route follows the `mcp:tool:NAME` convention: any such scope can be granted
    /// (clients step up to the tool scope a 403 names).
    pub tool_scopes: bool,
}

impl ProtectedResource {
    pub fn offers(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
            || (self.tool_scopes
                && scope
                    .strip_prefix(crate::model::rules::TOOL_SCOPE_PREFIX)
                    .is_some_and(|tool| !tool.is_empty()))
    }
}

/// A client from the configuration file.
#[derive(Debug, Clone)]
pub struct StaticClient {
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    /// SHA-256 of the secret; `None` = a public client.
    pub secret_sha256: Option<[u8; 32]>,
    pub grant_types: Vec<String>,
    /// Empty = any offered scope.
    pub scopes: Vec<String>,
    pub trusted: bool,
}

/// A local account.
#[derive(Debug, Clone)]
pub struct LocalUser {
    pub username: String,
    /// Argon2 PHC string.
    pub password_hash: String,
    pub subject: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RegistrationSettings {
    pub enabled: bool,
    pub ttl: Duration,
    pub per_address_per_hour: u32,
}

#[derive(Debug, Clone)]
pub struct CimdSettings {
    pub enabled: bool,
    /// Lowercase hosts; `*.example.com` allows subdomains. Empty = any.
    pub allowed_domains: Vec<String>,
    pub min_cache: Duration,
    pub max_cache: Duration,
    pub timeout: Duration,
    pub max_bytes: usize,
    /// `[dangerous] cimd_allow_private_addresses`: tests only.
    pub allow_private_addresses: bool,
}

impl AuthorizationServerSettings {
    /// `issuer` + `path`: every endpoint lives under the issuer.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// Where a provider sends the browser back (registered at the provider).
    pub fn callback_uri(&self, provider_id: &str) -> String {
        self.endpoint(&format!("/login/{provider_id}/callback"))
    }

    /// Where an upstream MCP server's authorization server sends the browser back after a
    /// user connected to it for this route (`[routes.upstream_token.oauth]`).
    pub fn connect_callback_uri(&self, route_id: &str) -> String {
        self.endpoint(&format!("/connect/{route_id}/callback"))
    }

    pub fn identity_provider(&self, id: &str) -> Option<&IdentityProvider> {
        self.identity_providers.iter().find(|p| p.id == id)
    }

    pub fn resource(&self, uri: &str) -> Option<&ProtectedResource> {
        self.resources.iter().find(|r| r.uri == uri)
    }
}

/// Hosts whose redirect URIs match on any port (RFC 8252 §7.3).
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Schemes that must never be a redirect target (script execution, local files).
const FORBIDDEN_SCHEMES: [&str; 5] = ["javascript", "data", "vbscript", "file", "blob"];

/// What a registered redirect URI may be (OAuth 2.1 §2.3.1, RFC 8252 §7): absolute, no
/// fragment, no userinfo; https, http on a loopback host, or a private-use scheme for native
/// apps.
pub fn check_redirect_uri(uri: &str) -> Result<(), &'static str> {
    let url = url::Url::parse(uri).map_err(|_| "not an absolute URI")?;
    if url.fragment().is_some() || uri.contains('#') {
        return Err("a redirect URI must not have a fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a redirect URI must not carry userinfo");
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_redirect(&url) => Ok(()),
        "http" => {
            Err("http redirect URIs are only allowed on loopback (localhost, 127.0.0.1, [::1])")
        }
        scheme if FORBIDDEN_SCHEMES.contains(&scheme) => {
            Err("this scheme cannot be a redirect URI")
        }
        _ => Ok(()), // a native app's private-use scheme (RFC 8252 §7.1)
    }
}

fn is_loopback_redirect(url: &url::Url) -> bool {
    url.scheme() == "http"
        && url
            .host_str()
            .is_some_and(|host| LOOPBACK_HOSTS.contains(&host))
}

/// Whether `requested` may be used with a client that registered `registered`: the exact
/// string (RFC 9700 §4.1.3), except that loopback http redirects match on any port (RFC 8252
/// §7.3: native apps listen on an ephemeral port).
pub fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(a), Ok(b)) = (url::Url::parse(registered), url::Url::parse(requested)) else {
        return false;
    };
    is_loopback_redirect(&a)
        && is_loopback_redirect(&b)
        && a.host_str() == b.host_str()
        && a.path() == b.path()
        && a.query() == b.query()
        && b.fragment().is_none()
        && b.username().is_empty()
        && b.password().is_none()
        && !requested.contains('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        for good in [
            "https://app.example.com/cb",
            "http://localhost/callback",
            "http://127.0.0.1:33418/cb",
            "http://[::1]/cb",
            "com.example.app:/oauth",
            "cursor://anysphere.cursor-retrieval/oauth/callback",
        ] {
            assert!(check_redirect_uri(good).is_ok(), "{good}");
        }
        for bad in [
            "/relative",
            "https://app.example.com/cb#frag",
            "https://user@app.example.com/cb",
            "http://app.example.com/cb",
            "javascript:alert(1)",
            "data:text/html,hi",
            "file:///etc/passwd",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirect_matching_is_exact_except_loopback_port() {
        let cases = [
            ("https://a.example/cb", "https://a.example/cb", true),
            ("https://a.example/cb", "https://a.example/cb/extra", false),
            ("https://a.example/cb", "https://a.example/c", false),
            ("https://a.example/cb", "https://a.example:8443/cb", false),
            ("https://a.example/cb", "https://a.example/cb?x=1", false),
            ("https://a.example/cb", "https://a.example/cb#f", false),
            ("https://a.example/cb", "https://evil@a.example/cb", false),
            (
                "https://a.example/cb",
                "https://a.example.evil.com/cb",
                false,
            ),
            (
                "http://localhost/callback",
                "http://localhost:53211/callback",
                true,
            ),
            ("http://127.0.0.1:1/cb", "http://127.0.0.1:9999/cb", true),
            ("http://127.0.0.1/cb", "http://localhost:9999/cb", false),
            (
                "http://localhost/callback",
                "http://localhost:1/other",
                false,
            ),
            (
                "http://localhost/callback",
                "http://localhost:1/callback#x",
                false,
            ),
            (
                "http://localhost/callback",
                "http://u@localhost:1/callback",
                false,
            ),
            (
                "http://localhost/callback",
                "https://localhost:1/callback",
                false,
            ),
        ];
        for (registered, requested, expected) in cases {
            assert_eq!(
                redirect_uri_matches(registered, requested),
                expected,
                "{registered} vs {requested}"
            );
        }
    }
}
