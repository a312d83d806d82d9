//! Everything the authorization server remembers, behind one [`Store`] trait: clients
//! registered at run time, pending authorization requests, codes, refresh-token families,
//! consents, revocations, signing keys, browser sessions, logins in flight at upstream identity
//! providers and rate-limit counters.
//!
//! SQLite ([`sqlite::SqliteStore`]) is the embedded default; a Redis implementation (several
//! replicas) implements the same trait. Secrets are never stored: tokens, codes, session ids
//! and registration access tokens are stored as SHA-256 digests of high-entropy values, so a
//! copy of the database cannot be replayed. The hot path (verifying access tokens) never
//! calls the store.

pub mod redis;
pub mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The store the configuration names: Redis when `[redis]` is set (replicas share it),
/// else the SQLite file `database`.
pub async fn open(
    settings: &crate::config::authorization_server::AuthorizationServerSettings,
) -> StoreResult<std::sync::Arc<dyn Store>> {
    Ok(match &settings.redis {
        Some(redis) => std::sync::Arc::new(redis::RedisStore::connect(redis).await?),
        None => std::sync::Arc::new(sqlite::SqliteStore::open(&settings.database)?),
    })
}

/// A store call failed (I/O, corruption, the backend is down). Rendered as 503.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

pub type StoreResult<T> = Result<T, StoreError>;
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'a>>;

/// A SHA-256 digest of a secret value, the key under which it is stored.
pub type Digest = [u8; 32];

/// Who a token is about: the claims copied into access tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIdentity {
    pub subject: String,
    /// Where the user logged in: `None` = a local user of the configuration (federated
    /// providers name themselves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The login name at the provider (GitHub login, OIDC `preferred_username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// A client registered through DCR (RFC 7591).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisteredClient {
    pub client_id: String,
    /// The registered metadata, as echoed to the client (no secrets inside).
    pub metadata: serde_json::Value,
    pub secret_sha256: Option<Digest>,
    pub registration_token_sha256: Digest,
    /// Hash of the metadata and the registering address: identical re-registrations.
    pub fingerprint: String,
    pub issued_at: u64,
    pub expires_at: u64,
    /// Whether any code or token was ever issued to it.
    pub used: bool,
}

/// An authorization request waiting for login and consent (≤ 10 minutes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub client_id: String,
    pub redirect_uri: String,
    /// The request named `redirect_uri` (rather than leaving the only registered one
    /// implied): the token request must then repeat it (RFC 6749 §4.1.3). Records written
    /// before this field existed read as `false`.
    #[serde(default)]
    pub redirect_uri_given: bool,
    pub state: Option<String>,
    pub code_challenge: String,
    pub resource: String,
    pub scopes: Vec<String>,
    pub expires_at: u64,
}

/// An authorization code, bound to everything the token request must repeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    /// See `PendingAuthorization::redirect_uri_given`.
    #[serde(default)]
    pub redirect_uri_given: bool,
    pub code_challenge: String,
    pub resource: String,
    pub scopes: Vec<String>,
    pub user: UserIdentity,
    /// The refresh family tokens issued from this code belong to (revoked on replay).
    pub family_id: String,
    pub expires_at: u64,
}

/// What deleting a client did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientDeletion {
    /// Whether the registration was there.
    pub existed: bool,
    /// The unexpired access tokens of its grants, now revoked (jti, expiry).
    pub revoked_access: Vec<(String, u64)>,
}

/// What a code redemption found.
#[derive(Debug)]
pub enum Redemption {
    Fresh(CodeGrant),
    /// Used before: whatever it issued must be revoked.
    Replayed(CodeGrant),
    Unknown,
}

/// One refresh token of a family (a login's chain of rotations).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshGrant {
    pub family_id: String,
    pub client_id: String,
    pub resource: String,
    pub scopes: Vec<String>,
    pub user: UserIdentity,
    pub expires_at: u64,
    /// The family's absolute end: rotation never extends a login past it (0 = none).
    #[serde(default)]
    pub family_expires_at: u64,
}

/// A refresh token found without being used.
#[derive(Debug)]
pub struct RefreshLookup {
    pub grant: RefreshGrant,
    /// Rotated out: usable only within the grace window (see [`Rotation`]).
    pub rotated: bool,
}

/// What presenting a refresh token found.
#[derive(Debug)]
pub enum Rotation {
    /// Valid: it is now rotated out and `successor` is the live token.
    Rotated(Box<RefreshGrant>),
    /// Rotated out before, outside the grace window (or its successor already used): the
    /// family is now revoked; the access tokens it issued are returned for revocation.
    Reused { revoked_access: Vec<(String, u64)> },
    /// Unknown, expired or of a revoked family.
    Invalid,
}

/// A signing key pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredKey {
    pub kid: String,
    pub algorithm: String,
    /// PKCS#8 DER.
    pub private_der: Vec<u8>,
    pub created_at: u64,
    /// Set when a newer key took over: it no longer signs.
    pub retired_at: Option<u64>,
    /// After this the public key is no longer published (every token it signed expired).
    pub publish_until: Option<u64>,
}

/// A browser session at the authorization server (login cookie).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrowserSession {
    pub user: Option<UserIdentity>,
    pub expires_at: u64,
}

/// A login sent to an upstream identity provider, waiting for its callback (≤ 10 minutes,
/// single use). Stored under the digest of the `state` sent to the provider.
/// `Debug` leaves out the PKCE verifier and the nonce.
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginState {
    pub provider: String,
    /// The pending authorization request this login is for.
    pub request_id: String,
    /// Digest of the browser session that started it: the callback must come back to the
    /// same browser (login CSRF).
    pub session: Digest,
    /// PKCE verifier of our request to the provider.
    pub code_verifier: String,
    /// OIDC `nonce`, echoed in the ID token.
    pub nonce: String,
    /// The client id the gateway used (connections to an upstream's authorization server,
    /// where it may have been registered on the fly); `None` = the configured one.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The authorization server it was sent to (connections): the callback must come from
    /// it, and the code is redeemed there only.
    #[serde(default)]
    pub issuer: Option<String>,
    pub expires_at: u64,
}

impl std::fmt::Debug for LoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginState")
            .field("provider", &self.provider)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A user's tokens at an identity provider or an upstream's authorization server, sealed
/// (`sealing`): forwarded upstream on their behalf by routes with `upstream_token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderToken {
    pub access: String,
    pub refresh: Option<String>,
    /// The client id they were issued to, when not the configured one (a refresh must
    /// name it).
    #[serde(default)]
    pub client_id: Option<String>,
    /// The authorization server that issued them, when it was discovered (a refresh goes
    /// there only).
    #[serde(default)]
    pub issuer: Option<String>,
    /// When the access token expires (`None`: the provider did not say).
    pub expires_at: Option<u64>,
    /// The record is deleted after this.
    pub keep_until: u64,
}

/// A remembered consent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Consent {
    pub scopes: Vec<String>,
    pub resource: String,
    pub granted_at: u64,
}

pub trait Store: Send + Sync {
    // Keys and server secrets.
    fn signing_keys(&self) -> StoreFuture<'_, Vec<StoredKey>>;
    fn put_signing_key(&self, key: StoredKey) -> StoreFuture<'_, ()>;
    /// Marks every key but `active_kid` retired at `now`, published until `publish_until`.
    fn retire_keys_except(
        &self,
        active_kid: &str,
        now: u64,
        publish_until: u64,
    ) -> StoreFuture<'_, ()>;
    /// A random secret created on first use (HMAC key for CSRF tokens), shared by replicas.
    fn server_secret(&self, name: &str) -> StoreFuture<'_, Vec<u8>>;

    // Registered clients.
    fn put_client(&self, client: RegisteredClient) -> StoreFuture<'_, ()>;
    fn client(&self, client_id: &str) -> StoreFuture<'_, Option<RegisteredClient>>;
    /// Deletes a registration and revokes every grant made to it (RFC 7592 §2.3): its
    /// families end as [`Store::revoke_family`] ends one. Nothing is revoked for an id that
    /// is not stored (a client of the configuration file).
    fn delete_client(&self, client_id: &str, now: u64) -> StoreFuture<'_, ClientDeletion>;
    /// Deletes never-used registrations with this fingerprint; returns how many.
    fn delete_unused_clients(&self, fingerprint: &str) -> StoreFuture<'_, u64>;
    /// Records use and pushes the expiry to `expires_at`.
    fn touch_client(&self, client_id: &str, expires_at: u64) -> StoreFuture<'_, ()>;
    fn list_clients(&self) -> StoreFuture<'_, Vec<RegisteredClient>>;

    // Authorization requests and codes.
    fn put_pending(&self, id: Digest, pending: PendingAuthorization) -> StoreFuture<'_, ()>;
    fn pending(&self, id: Digest) -> StoreFuture<'_, Option<PendingAuthorization>>;
    /// Deletes a pending request; `false` when it was already gone (a second submission of
    /// the same consent form must not produce a second code).
    fn delete_pending(&self, id: Digest) -> StoreFuture<'_, bool>;
    fn put_code(&self, code: Digest, grant: CodeGrant) -> StoreFuture<'_, ()>;
    fn put_login_state(&self, state: Digest, login: LoginState) -> StoreFuture<'_, ()>;
    /// Removes and returns an unexpired login state: a callback is honoured once.
    fn take_login_state(&self, state: Digest, now: u64) -> StoreFuture<'_, Option<LoginState>>;
    /// Atomically marks the code used when `client_id` is the one it was issued to; a
    /// second redemption by that client sees `Replayed`. Another client learns nothing and
    /// spends nothing (`Unknown`): holding someone's code must not let you burn it.
    fn redeem_code(&self, code: Digest, client_id: &str, now: u64) -> StoreFuture<'_, Redemption>;

    // Refresh families and access tokens.
    /// Records an issued access token (its `jti`) under its family, for family revocation.
    /// `false` when the family was revoked meanwhile (then the token must not be handed out).
    fn record_access_token(
        &self,
        family_id: &str,
        jti: &str,
        expires_at: u64,
    ) -> StoreFuture<'_, bool>;
    fn put_refresh(&self, token: Digest, grant: RefreshGrant) -> StoreFuture<'_, ()>;
    /// Presents a refresh token: rotation with a grace window (see [`Rotation`]). On
    /// success `successor` is stored as the family's live token. The successor is derived
    /// from the presented token by the caller, so a parallel refresh within the grace window
    /// gets the very same successor: one chain per login, never two.
    fn rotate_refresh(
        &self,
        token: Digest,
        successor: Digest,
        successor_expires_at: u64,
        now: u64,
        grace_secs: u64,
    ) -> StoreFuture<'_, Rotation>;
    /// The grant of a refresh token of a live family, rotated out or not, without rotating
    /// it (checks before a rotation, revocation, introspection).
    fn refresh(&self, token: Digest, now: u64) -> StoreFuture<'_, Option<RefreshLookup>>;
    /// Revokes a family: its refresh tokens die; returns its unexpired access tokens.
    fn revoke_family(&self, family_id: &str, now: u64) -> StoreFuture<'_, Vec<(String, u64)>>;
    /// Remembers a revoked access token until it expires.
    fn revoke_access_token(&self, jti: &str, expires_at: u64) -> StoreFuture<'_, ()>;
    /// The family an access token was issued under.
    fn access_token_family(&self, jti: &str) -> StoreFuture<'_, Option<String>>;
    /// Revoked, unexpired access tokens (loaded at start into memory).
    fn revoked_access_tokens(&self, now: u64) -> StoreFuture<'_, Vec<(String, u64)>>;

    // Consent and browser sessions.
    fn consent(&self, subject: &str, client_id: &str) -> StoreFuture<'_, Option<Consent>>;
    fn put_consent(&self, subject: &str, client_id: &str, consent: Consent) -> StoreFuture<'_, ()>;
    fn put_session(&self, id: Digest, session: BrowserSession) -> StoreFuture<'_, ()>;
    fn session(&self, id: Digest, now: u64) -> StoreFuture<'_, Option<BrowserSession>>;

    // Users' tokens at identity providers (sealed by the caller).
    fn put_provider_token(
        &self,
        subject: &str,
        provider: &str,
        token: ProviderToken,
    ) -> StoreFuture<'_, ()>;
    /// The token record, unless past its `keep_until`.
    fn provider_token(
        &self,
        subject: &str,
        provider: &str,
        now: u64,
    ) -> StoreFuture<'_, Option<ProviderToken>>;

    /// Claims the refresh of a user's token at `provider` for `ttl`, under the caller's
    /// random `claim`: replicas sharing the store refresh a token one at a time (a server
    /// that rotates refresh tokens refuses a second use of one, and may revoke the whole
    /// grant for it). True when the caller holds the claim. The SQLite store (one process)
    /// keeps its claims in memory.
    fn claim_provider_refresh(
        &self,
        subject: &str,
        provider: &str,
        claim: &str,
        ttl: Duration,
    ) -> StoreFuture<'_, bool>;
    /// Gives up `claim` if the caller still holds it (past its `ttl`, another may).
    fn release_provider_refresh(
        &self,
        subject: &str,
        provider: &str,
        claim: &str,
    ) -> StoreFuture<'_, ()>;

    // Rate limiting.
    /// Counts one hit on `key` in the fixed window of `window_secs` containing `now`;
    /// returns the count including this hit.
    fn hit(&self, key: &str, now: u64, window_secs: u64) -> StoreFuture<'_, u64>;

    /// Deletes everything past its lifetime; returns the number of rows removed.
    fn purge_expired(&self, now: u64) -> StoreFuture<'_, u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_written_before_redirect_uri_given_read_as_implied() {
        let pending: PendingAuthorization = serde_json::from_str(
            r#"{"client_id":"c","redirect_uri":"https://app.example/cb","state":null,
                "code_challenge":"x","resource":"https://r.example/mcp","scopes":[],
                "expires_at":1}"#,
        )
        .expect("an old pending authorization");
        assert!(!pending.redirect_uri_given);
        let code: CodeGrant = serde_json::from_str(
            r#"{"client_id":"c","redirect_uri":"https://app.example/cb","code_challenge":"x",
                "resource":"https://r.example/mcp","scopes":[],"user":{"subject":"local:alice",
                "groups":[]},"family_id":"f","expires_at":1}"#,
        )
        .expect("an old code");
        assert!(!code.redirect_uri_given);
        let written = serde_json::to_value(&CodeGrant {
            redirect_uri_given: true,
            ..code
        })
        .unwrap();
        assert_eq!(written["redirect_uri_given"], true);
    }
}
