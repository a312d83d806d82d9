//! The built-in OAuth 2.1 authorization server: what MCP clients need to log in with nothing
//! else deployed.
//!
//! ```text
//!  discovery ── RFC 8414 / OIDC metadata, JWKS
//!  clients ──── configured · registered (DCR, RFC 7591/7592) · metadata documents (CIMD)
//!  authorize ── validate client + redirect → request → login → consent → code (+ iss)
//!  upstream ─── login through GitHub or an OpenID Connect provider (`/login/<id>`)
//!  token ────── authorization_code (PKCE S256) · refresh_token (rotation) · client_credentials
//!  revoke / introspect (RFC 7009 / 7662)
//!  store ────── one trait; SQLite embedded
//! ```
//!
//! Tokens are RFC 9068 JWTs signed with keys from [`keys`]; the routes verify them like any
//! issuer's, with the keys and revocations shared in process (`auth::local`). This module
//! never imports `pipeline` (nor the reverse): `server::router` mounts both.

mod authorize;
pub mod cimd;
pub mod cli;
mod clients;
mod discovery;
mod error;
mod http;
pub mod keys;
pub mod logo;
mod pages;
mod register;
mod revoke;
pub mod sealing;
pub mod store;
mod token;
mod upstream;

/// Fuzzing entry point (`fuzz/fuzz_targets/provider_answers.rs`), not API.
#[doc(hidden)]
pub use upstream::fuzz_provider_answer;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::body::RequestBody;
use ::http::{Method, Request, Response};
use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

use crate::auth::api_key::sha256;
use crate::auth::jwks::KeySet;
use crate::auth::local::LOCAL_AUTHORITY;
use crate::auth::principal::now_unix;
use crate::body::Body;
use crate::config::authorization_server::AuthorizationServerSettings;
use crate::config::Config;
use crate::observability::Outcome;
use keys::SigningKey;
use store::{Store, StoreError, StoredKey};

/// Paths the authorization server answers (relative to where the gateway is mounted).
pub const AUTHORIZE_PATH: &str = "/authorize";
pub const TOKEN_PATH: &str = "/token";
pub const REGISTER_PATH: &str = "/register";
pub const REVOKE_PATH: &str = "/revoke";
pub const INTROSPECT_PATH: &str = "/introspect";
pub const JWKS_PATH: &str = "/jwks.json";
pub const LOGIN_PATH: &str = "/login";
pub const CONSENT_PATH: &str = "/consent";
pub const AS_METADATA_PREFIX: &str = "/.well-known/oauth-authorization-server";
pub const OIDC_METADATA_SUFFIX: &str = "/.well-known/openid-configuration";

/// How often the keys are re-read from the store (a rotation by the CLI or another
/// replica).
const KEY_REFRESH: Duration = Duration::from_secs(5);
/// How often revocations made by other replicas are picked up with a shared store (with the
/// embedded one, revocations by the command line are picked up every [`KEY_REFRESH`]).
const REVOCATION_SYNC: Duration = Duration::from_secs(1);
const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// When the background upkeep does each of its jobs.
struct Schedule {
    /// How often it wakes and picks up revocations made elsewhere.
    tick: Duration,
    keys: Duration,
    purge: Duration,
}

impl Schedule {
    fn for_settings(settings: &AuthorizationServerSettings) -> Schedule {
        Schedule {
            tick: if settings.redis.is_some() {
                REVOCATION_SYNC
            } else {
                KEY_REFRESH
            },
            keys: KEY_REFRESH,
            purge: PURGE_INTERVAL,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing key: {0}")]
    Key(String),
}

/// The keys in use: the one that signs, and the JWKS that publishes every live public key.
struct KeyRing {
    active: SigningKey,
    jwks: serde_json::Value,
}

pub struct AuthorizationServer {
    store: Arc<dyn Store>,
    keys: ArcSwap<KeyRing>,
    /// HMAC key for CSRF tokens (shared by replicas through the store).
    csrf_key: aws_lc_rs::hmac::Key,
    /// HMAC key deriving a refresh token's successor from it (see `refresh_successor`).
    refresh_key: aws_lc_rs::hmac::Key,
    cimd: cimd::CimdFetcher,
    /// Clients' logos, inlined on the consent page.
    logos: logo::Logos,
    /// Discovery documents and keys of upstream identity providers.
    providers: upstream::Providers,
    /// Upstream MCP servers' authorization servers, as discovered, and the gateway's
    /// registrations there.
    connections: upstream::connect::Connections,
    /// Users' provider and upstream tokens, opened, for routes that forward them.
    provider_tokens: upstream::tokens::TokenCache,
    /// Refreshes of those tokens in progress, each a task of its own (see
    /// `upstream::tokens`): shutdown waits for them.
    refreshes: tokio_util::task::TaskTracker,
    /// The configuration in force, for work outside a request to these endpoints (the
    /// pipeline asking for a user's provider token).
    live: ArcSwap<upstream::tokens::Live>,
}

impl AuthorizationServer {
    /// Opens the store, loads (or creates) the signing key, publishes the keys and the
    /// revocations to the routes' verifier, and starts the background upkeep.
    pub async fn start(
        settings: &AuthorizationServerSettings,
        client: crate::outbound::HttpClient,
    ) -> Result<Arc<AuthorizationServer>, StartError> {
        let store = store::open(settings).await?;
        let server = Self::with_store(settings, client, store).await?;
        for (jti, expires_at) in server.store.revoked_access_tokens(now_unix()).await? {
            LOCAL_AUTHORITY.revoke(&jti, expires_at);
        }
        server.spawn_upkeep(settings.clone(), Schedule::for_settings(settings));
        Ok(server)
    }

    async fn with_store(
        settings: &AuthorizationServerSettings,
        client: crate::outbound::HttpClient,
        store: Arc<dyn Store>,
    ) -> Result<Arc<AuthorizationServer>, StartError> {
        let ring = load_keys(store.as_ref(), settings, now_unix()).await?;
        LOCAL_AUTHORITY.publish_keys(published_key_set(&ring.jwks));
        let secret = store.server_secret("csrf").await?;
        let refresh_secret = store.server_secret("refresh").await?;
        Ok(Arc::new(AuthorizationServer {
            store,
            keys: ArcSwap::from_pointee(ring),
            csrf_key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
            refresh_key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &refresh_secret),
            cimd: cimd::CimdFetcher::new(),
            logos: logo::Logos::new(),
            providers: upstream::Providers::default(),
            provider_tokens: upstream::tokens::new_cache(),
            refreshes: tokio_util::task::TaskTracker::new(),
            connections: upstream::connect::Connections::default(),
            live: ArcSwap::from_pointee(upstream::tokens::Live {
                settings: settings.clone(),
                client,
                connections: Default::default(),
            }),
        }))
    }

    /// Background upkeep: revocations from other replicas or the command line (`clients
    /// remove`), the keys (a rotation elsewhere), and expired rows.
    fn spawn_upkeep(self: &Arc<Self>, settings: AuthorizationServerSettings, schedule: Schedule) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let (mut since_keys, mut since_purge) = (Duration::ZERO, Duration::ZERO);
            loop {
                tokio::time::sleep(schedule.tick).await;
                let Some(server) = weak.upgrade() else { return };
                server.sync_revocations().await;
                since_keys += schedule.tick;
                if since_keys >= schedule.keys {
                    since_keys = Duration::ZERO;
                    server.reload_keys(&settings).await;
                }
                since_purge += schedule.tick;
                if since_purge >= schedule.purge {
                    since_purge = Duration::ZERO;
                    server.purge().await;
                }
            }
        });
    }

    /// Revocations recorded by any replica or the command line take effect here (the
    /// routes check them in memory, never asking the store).
    async fn sync_revocations(&self) {
        match self.store.revoked_access_tokens(now_unix()).await {
            Ok(revoked) => {
                // Known ones are skipped under the read lock: the requests checking
                // revocations meanwhile are not held up by a write per revoked token.
                for (jti, expires_at) in revoked {
                    if !LOCAL_AUTHORITY.is_revoked(&jti) {
                        LOCAL_AUTHORITY.revoke(&jti, expires_at);
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "cannot read revocations from the store"),
        }
    }

    async fn reload_keys(&self, settings: &AuthorizationServerSettings) {
        match load_keys(self.store.as_ref(), settings, now_unix()).await {
            Ok(ring) => {
                let current = self.keys.load();
                if ring.jwks != current.jwks || ring.active.kid != current.active.kid {
                    tracing::info!(kid = %ring.active.kid, "authorization server keys changed");
                    LOCAL_AUTHORITY.publish_keys(published_key_set(&ring.jwks));
                    self.keys.store(Arc::new(ring));
                }
            }
            Err(error) => tracing::warn!(%error, "cannot re-read the signing keys"),
        }
    }

    async fn purge(&self) {
        let now = now_unix();
        LOCAL_AUTHORITY.purge_expired(now);
        match self.store.purge_expired(now).await {
            Ok(removed) => tracing::debug!(removed, "expired authorization state purged"),
            Err(error) => tracing::warn!(%error, "purging expired authorization state failed"),
        }
    }

    /// A reloaded configuration: what the token service works with from now on.
    pub fn reconfigure(&self, config: &Config) {
        if let Some(live) = upstream::tokens::Live::of(config) {
            self.live.store(live);
        }
    }

    /// Whether `path` is one of ours (checked before the routes).
    pub fn serves(settings: &AuthorizationServerSettings, path: &str) -> bool {
        matches!(
            path,
            AUTHORIZE_PATH
                | TOKEN_PATH
                | REGISTER_PATH
                | REVOKE_PATH
                | INTROSPECT_PATH
                | JWKS_PATH
                | LOGIN_PATH
                | CONSENT_PATH
                | OIDC_METADATA_SUFFIX
        ) || path
            .strip_prefix(REGISTER_PATH)
            .is_some_and(|rest| rest.starts_with('/'))
            || upstream_login_path(path).is_some()
            || connect_callback_path(path).is_some()
            || client_metadata_path(path).is_some()
            || discovery::is_metadata_path(settings, path)
    }

    /// Answers one request to an authorization server path.
    pub async fn handle(
        &self,
        config: &Config,
        settings: &AuthorizationServerSettings,
        request: Request<RequestBody>,
        client_address: IpAddr,
    ) -> (Response<Body>, Outcome) {
        let path = request.uri().path().to_string();
        let method = request.method().clone();
        let client_address = if config.server.trust_forwarded_headers {
            forwarded_client(request.headers()).unwrap_or(client_address)
        } else {
            client_address
        };
        let context = Context {
            server: self,
            config,
            settings,
            client_address,
        };
        // Browser clients preflight the endpoints they call with fetch().
        if method == Method::OPTIONS && !is_browser_page(&path) {
            return (http::preflight(), Outcome::builtin("oauth_preflight"));
        }
        if let Some(refused) = context.rate_limited(&path).await {
            return (refused, Outcome::builtin("oauth_rate_limited"));
        }
        let (mut response, verdict) = match path.as_str() {
            AUTHORIZE_PATH => (
                authorize::authorize(&context, request).await,
                "oauth_authorize",
            ),
            LOGIN_PATH => (authorize::login(&context, request).await, "oauth_login"),
            CONSENT_PATH => (authorize::consent(&context, request).await, "oauth_consent"),
            TOKEN_PATH => (token::token(&context, request).await, "oauth_token"),
            REVOKE_PATH => (revoke::revoke(&context, request).await, "oauth_revoke"),
            INTROSPECT_PATH => (
                revoke::introspect(&context, request).await,
                "oauth_introspect",
            ),
            JWKS_PATH => (discovery::jwks(&context, &method), "oauth_jwks"),
            p if p == REGISTER_PATH || p.starts_with("/register/") => {
                (register::handle(&context, request).await, "oauth_register")
            }
            p if client_metadata_path(p).is_some() => (
                upstream::connect::client_metadata(
                    config,
                    settings,
                    client_metadata_path(p).unwrap_or(""),
                ),
                "oauth_client_metadata",
            ),
            p if connect_callback_path(p).is_some() => (
                upstream::connect::callback(
                    &context,
                    connect_callback_path(p).unwrap_or(""),
                    request,
                )
                .await,
                "oauth_connect_callback",
            ),
            p => match upstream_login_path(p) {
                Some(UpstreamLogin::Start(id)) => (
                    upstream::start(&context, id, request).await,
                    "oauth_login_provider",
                ),
                Some(UpstreamLogin::Callback(id)) => (
                    upstream::callback(&context, id, request).await,
                    "oauth_login_callback",
                ),
                None => (
                    discovery::metadata(&context, &method, &path),
                    "oauth_metadata",
                ),
            },
        };
        if !is_browser_page(&path) && path != AUTHORIZE_PATH {
            http::allow_cors(&mut response);
        }
        (response, Outcome::builtin(verdict))
    }
}

/// Pages a browser navigates to (no CORS, no preflight).
fn is_browser_page(path: &str) -> bool {
    matches!(path, LOGIN_PATH | CONSENT_PATH)
        || upstream_login_path(path).is_some()
        || connect_callback_path(path).is_some()
}

/// `/.well-known/oauth-client-metadata/<route id>` → the route id.
fn client_metadata_path(path: &str) -> Option<&str> {
    let id = path
        .strip_prefix(upstream::connect::CLIENT_METADATA_PATH)?
        .strip_prefix('/')?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// `/connect/<route id>/callback` → the route id.
fn connect_callback_path(path: &str) -> Option<&str> {
    let id = path
        .strip_prefix(upstream::connect::CONNECT_PREFIX)?
        .strip_suffix("/callback")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// `/login/<id>` (start) and `/login/<id>/callback`.
enum UpstreamLogin<'a> {
    Start(&'a str),
    Callback(&'a str),
}

fn upstream_login_path(path: &str) -> Option<UpstreamLogin<'_>> {
    let rest = path.strip_prefix(LOGIN_PATH)?.strip_prefix('/')?;
    let (id, callback) = match rest.strip_suffix("/callback") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    if !crate::config::identity_providers::valid_provider_id(id) {
        return None;
    }
    Some(if callback {
        UpstreamLogin::Callback(id)
    } else {
        UpstreamLogin::Start(id)
    })
}

/// What every endpoint handler gets.
pub(crate) struct Context<'a> {
    server: &'a AuthorizationServer,
    config: &'a Config,
    settings: &'a AuthorizationServerSettings,
    client_address: IpAddr,
}

impl Context<'_> {
    fn store(&self) -> &dyn Store {
        self.server.store.as_ref()
    }

    /// Who a per-address limit counts: the address, or for IPv6 its /64 (one subscriber
    /// usually holds a whole /64 and could otherwise rotate through it).
    fn rate_key(&self) -> String {
        match self.client_address {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let s = v6.segments();
                    format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            },
        }
    }

    fn signing_key(&self) -> Arc<KeyRing> {
        self.server.keys.load_full()
    }

    /// Per client address and minute: generous for people and well-behaved clients, a wall
    /// for floods (every `/authorize` stores a pending request). Registration and login
    /// failures have their own, tighter limits.
    async fn rate_limited(&self, path: &str) -> Option<Response<Body>> {
        let (class, limit) = match path {
            AUTHORIZE_PATH => ("authorize", 60),
            TOKEN_PATH | REVOKE_PATH | INTROSPECT_PATH => ("token", 600),
            // Each start stores a login state and each callback calls the provider.
            p if upstream_login_path(p).is_some() => ("login-provider", 60),
            _ => return None,
        };
        let key = format!("{class}:{}", self.rate_key());
        match self.store().hit(&key, now_unix(), 60).await {
            Ok(count) if count > limit => {
                tracing::warn!(client = %self.client_address, endpoint = class, "authorization server rate limit reached");
                Some(if class != "token" {
                    http::html(
                        ::http::StatusCode::TOO_MANY_REQUESTS,
                        pages::error("Too many requests", "Wait a minute and try again."),
                    )
                } else {
                    error::OAuthError::new(
                        error::ErrorCode::SlowDown,
                        "too many requests from this address; retry in a minute",
                    )
                    .response()
                })
            }
            Ok(_) => None,
            Err(error) => Some(error::OAuthError::from(error).response()),
        }
    }
}

/// The client as the trusted front proxy saw it: the last `X-Forwarded-For` entry (the
/// proxy appends the address it accepted the connection from).
fn forwarded_client(headers: &::http::HeaderMap) -> Option<IpAddr> {
    let last = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|v| !v.is_empty())?;
    last.parse().ok()
}

/// A high-entropy random value for codes, tokens and ids (256 bits, base64url).
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // aws-lc's generator does not fail once initialised; an all-zero value would still be
    // unique per use only by chance, so treat failure as fatal for this request's value.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        tracing::error!("the system random generator failed");
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

impl AuthorizationServer {
    /// The refresh token that replaces `presented`: derived, not drawn, so that two requests
    /// racing with one token (within the grace window) get the same successor and a login
    /// stays one chain whose reuse can be detected.
    pub(crate) fn refresh_successor(&self, presented: &str) -> String {
        URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(
            &self.refresh_key,
            presented.as_bytes(),
        ))
    }
}

/// The digest a secret value is stored under.
pub(crate) fn digest(value: &str) -> [u8; 32] {
    sha256(value.as_bytes())
}

/// Loads the signing key: from `signing_key_file`, else the newest unretired key of the
/// configured algorithm in the store, else a new one (stored). Every unexpired public key
/// is published, so tokens signed before a rotation stay valid until they expire.
async fn load_keys(
    store: &dyn Store,
    settings: &AuthorizationServerSettings,
    now: u64,
) -> Result<KeyRing, StartError> {
    let wanted = keys::algorithm_name(settings.signing_algorithm);
    let mut stored = store.signing_keys().await?;
    let active = match &settings.signing_key_file {
        Some(path) => keys::load_pem(path, settings.signing_algorithm).map_err(StartError::Key)?,
        None => {
            let current = stored
                .iter()
                .rev()
                .find(|k| k.retired_at.is_none() && k.algorithm == wanted);
            match current {
                Some(key) => {
                    SigningKey::from_stored(key).map_err(|e| StartError::Key(e.to_string()))?
                }
                None => {
                    let key = new_stored_key(settings.signing_algorithm, now)?;
                    store.put_signing_key(key.clone()).await?;
                    // An algorithm change retires the old keys like a rotation would.
                    store
                        .retire_keys_except(&key.kid, now, now + retire_horizon(settings))
                        .await?;
                    let active = SigningKey::from_stored(&key)
                        .map_err(|e| StartError::Key(e.to_string()))?;
                    stored = store.signing_keys().await?;
                    active
                }
            }
        }
    };
    let mut published = vec![active.public_jwk().clone()];
    for key in &stored {
        let live = key.publish_until.is_none_or(|until| until > now);
        if key.kid != active.kid && live {
            if let Ok(parsed) = SigningKey::from_stored(key) {
                published.push(parsed.public_jwk().clone());
            }
        }
    }
    Ok(KeyRing {
        active,
        jwks: json!({ "keys": published }),
    })
}

fn new_stored_key(algorithm: jsonwebtoken::Algorithm, now: u64) -> Result<StoredKey, StartError> {
    let der = SigningKey::generate_der(algorithm).map_err(|e| StartError::Key(e.to_string()))?;
    let kid = SigningKey::from_der(algorithm, &der)
        .map_err(|e| StartError::Key(e.to_string()))?
        .kid;
    Ok(StoredKey {
        kid,
        algorithm: keys::algorithm_name(algorithm).to_string(),
        private_der: der,
        created_at: now,
        retired_at: None,
        publish_until: None,
    })
}

/// A retired key stays published until every token it signed has expired (plus leeway).
fn retire_horizon(settings: &AuthorizationServerSettings) -> u64 {
    settings.access_token_ttl.as_secs() + 300
}

fn published_key_set(jwks: &serde_json::Value) -> KeySet {
    use jsonwebtoken::Algorithm;
    KeySet::from_jwks(
        jwks.to_string().as_bytes(),
        &[Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA],
    )
    .unwrap_or_default()
}

/// `keys rotate`: a new signing key takes over now; the old ones stay published until the
/// tokens they signed have expired. Running gateways pick it up within `KEY_REFRESH`.
pub async fn rotate_keys(settings: &AuthorizationServerSettings) -> Result<String, StartError> {
    let store = store::open(settings).await?;
    rotate_keys_in(store.as_ref(), settings, now_unix()).await
}

async fn rotate_keys_in(
    store: &dyn Store,
    settings: &AuthorizationServerSettings,
    now: u64,
) -> Result<String, StartError> {
    let key = new_stored_key(settings.signing_algorithm, now)?;
    let kid = key.kid.clone();
    store.put_signing_key(key).await?;
    store
        .retire_keys_except(&kid, now, now + retire_horizon(settings))
        .await?;
    Ok(kid)
}

/// What MCP clients are known to trip on with this configuration (`check` prints it).
pub fn client_pitfalls(settings: &AuthorizationServerSettings) -> Vec<String> {
    let mut warnings = Vec::new();
    if !settings.issuer.starts_with("https://") {
        warnings.push(format!(
            "the issuer {} is not https: MCP clients accept that only on localhost",
            settings.issuer
        ));
    }
    if settings.resources.len() > 1 {
        warnings.push(
            "several routes: clients that send no `resource` (2025-03-26 clients) are refused with invalid_target".into(),
        );
    }
    if !settings.registration.enabled && !settings.cimd.enabled && settings.clients.is_empty() {
        warnings.push(
            "no registration, no metadata documents and no configured client: no MCP client can obtain a client_id".into(),
        );
    }
    if settings.access_token_ttl > Duration::from_secs(3600) {
        warnings.push(
            "access tokens live longer than an hour: a revocation still takes effect at once here, but other resource servers trusting these tokens would honour them until they expire".into(),
        );
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorization_server::store::{CodeGrant, UserIdentity};

    /// A configuration with the authorization server on, its database in a fresh directory.
    fn config(name: &str) -> (Config, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("mcp-gw-as-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let toml = r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"

[authorization_server]
database = "as.db"
access_token_ttl = "10m"
"#;
        let config = crate::config::from_toml_str(toml, &dir).expect("configuration");
        (config, dir)
    }

    fn published_kids(ring: &KeyRing) -> Vec<String> {
        let mut kids: Vec<String> = ring.jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().expect("kid").to_string())
            .collect();
        kids.sort();
        kids
    }

    #[tokio::test]
    async fn a_rotated_out_key_stays_published_until_its_tokens_have_expired() {
        let (config, dir) = config("retire");
        let settings = config.authorization_server.as_ref().expect("settings");
        let store = store::open(settings).await.expect("store");
        let t0 = 1_900_000_000;
        let old = load_keys(store.as_ref(), settings, t0).await.expect("keys");
        let new_kid = rotate_keys_in(store.as_ref(), settings, t0 + 60)
            .await
            .expect("rotate");

        // Tokens signed by the old key live at most access_token_ttl (10 min) after the
        // rotation; a little margin covers clocks and replicas that switch late.
        let last_old_token_expires = t0 + 60 + 600;
        let mut both = vec![old.active.kid.clone(), new_kid.clone()];
        both.sort();
        for now in [
            t0 + 61,
            last_old_token_expires,
            last_old_token_expires + 299,
        ] {
            let ring = load_keys(store.as_ref(), settings, now)
                .await
                .expect("keys");
            assert_eq!(
                ring.active.kid, new_kid,
                "the new key signs from the rotation on"
            );
            assert_eq!(published_kids(&ring), both, "at {now}");
        }
        let ring = load_keys(store.as_ref(), settings, last_old_token_expires + 301)
            .await
            .expect("keys");
        assert_eq!(published_kids(&ring), vec![new_kid]);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn code_grant(expires_at: u64) -> CodeGrant {
        CodeGrant {
            client_id: "c".into(),
            redirect_uri: "https://app.example/cb".into(),
            redirect_uri_given: true,
            code_challenge: "x".into(),
            resource: "http://127.0.0.1/mcp".into(),
            scopes: vec![],
            user: UserIdentity {
                subject: "local:alice".into(),
                provider: None,
                username: None,
                name: None,
                email: None,
                groups: vec![],
            },
            family_id: "f".into(),
            expires_at,
        }
    }

    #[tokio::test]
    async fn expired_rows_are_purged_in_the_background_and_live_ones_kept() {
        let (config, dir) = config("purge");
        let settings = config.authorization_server.clone().expect("settings");
        let server = AuthorizationServer::start(&settings, config.client.clone())
            .await
            .expect("start");
        let now = now_unix();
        server
            .store
            // Spent codes are kept ten minutes past their expiry to recognise replays.
            .put_code([1; 32], code_grant(now - 601))
            .await
            .expect("expired code");
        server
            .store
            .put_code([2; 32], code_grant(now - 300))
            .await
            .expect("recently expired code");
        server
            .store
            .put_code([3; 32], code_grant(now + 3600))
            .await
            .expect("live code");
        let codes = || {
            let db = rusqlite::Connection::open(dir.join("as.db")).expect("open the database");
            db.query_row("SELECT count(*) FROM codes", [], |row| row.get::<_, i64>(0))
                .expect("count")
        };
        assert_eq!(codes(), 3);
        // The same upkeep as in production, on a short schedule.
        server.spawn_upkeep(
            settings,
            Schedule {
                tick: Duration::from_millis(20),
                keys: Duration::from_secs(3600),
                purge: Duration::from_millis(20),
            },
        );
        let mut remaining = codes();
        for _ in 0..500 {
            if remaining == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            remaining = codes();
        }
        assert_eq!(
            remaining, 2,
            "the code expired ten minutes ago is purged; the live one, and the one expired \
             five minutes ago (kept to recognise a replay), are not"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
