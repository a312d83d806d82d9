//! "Who is this?" — turns a bearer token into a [`Principal`].
//!
//! Knows API keys, JWT issuers (JWKS) and RFC 7662 introspection; knows nothing of routes,
//! paths or bodies. A route hands over the [`VerifierSet`] it accepts; verified principals are
//! cached by token hash until their expiry so the hot path does one SHA-256 and a map lookup.

pub mod api_key;
pub mod audience;
pub mod claims;
pub mod introspection;
pub mod jwks;
pub mod jwt;
pub mod local;
pub mod principal;
mod token_cache;
pub mod user_tokens;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use principal::{AuthMethod, Principal, VerifierId};

use api_key::ApiKeyStore;
use introspection::Introspector;
use jwt::Issuer;
use token_cache::TokenCache;

use crate::observability::metrics::METRICS;

/// Why a token was not accepted. The reasons are fixed strings: they go into
/// `error_description` (so they hold no `=` and no quotes) and into the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The token is not valid for us (bad signature, expired, unknown, revoked, …).
    #[error("{0}")]
    Invalid(&'static str),
    /// We could not decide right now (introspection endpoint down, no keys ever loaded).
    #[error("{0}")]
    Unavailable(&'static str),
}

/// At or past its expiry (for introspection: its cache horizon).
fn is_stale(principal: &Principal) -> bool {
    principal
        .expires_at
        .is_some_and(|exp| exp <= principal::now_unix())
}

/// The verifiers a route accepts, resolved from its `verifiers = [...]` list.
#[derive(Debug, Clone, Default)]
pub struct VerifierSet {
    pub api_keys: bool,
    pub issuers: Vec<Arc<Issuer>>,
    pub introspectors: Vec<Arc<Introspector>>,
}

impl VerifierSet {
    fn accepts(&self, id: VerifierId) -> bool {
        match id {
            VerifierId::ApiKeys => self.api_keys,
            VerifierId::Issuer(i) => self.issuers.iter().any(|issuer| issuer.index == i),
            VerifierId::Introspection(i) => self.introspectors.iter().any(|x| x.index == i),
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.api_keys && self.issuers.is_empty() && self.introspectors.is_empty()
    }

    /// Names for `check` output and logs.
    pub fn describe(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.api_keys {
            names.push("api_keys".to_string());
        }
        names.extend(self.issuers.iter().map(|i| format!("jwt:{}", i.id)));
        names.extend(
            self.introspectors
                .iter()
                .map(|i| format!("introspection:{}", i.id)),
        );
        names
    }
}

/// All verifiers of a configuration plus the shared verified-token cache.
pub struct Verifiers {
    pub api_keys: ApiKeyStore,
    pub issuers: Vec<Arc<Issuer>>,
    pub introspectors: Vec<Arc<Introspector>>,
    /// Index of the built-in authorization server's issuer, when it is on.
    local_issuer: Option<usize>,
    cache: TokenCache,
}

impl Verifiers {
    pub fn new(
        api_keys: ApiKeyStore,
        issuers: Vec<Arc<Issuer>>,
        introspectors: Vec<Arc<Introspector>>,
        cache_entries: u64,
    ) -> Self {
        let local_issuer = issuers
            .iter()
            .find(|i| matches!(i.keys, jwks::KeySource::Local))
            .map(|i| i.index);
        Self {
            api_keys,
            issuers,
            introspectors,
            local_issuer,
            cache: TokenCache::new(cache_entries),
        }
    }

    /// Whether `principal` holds a token of the built-in authorization server (its users are
    /// the only ones with provider tokens; an API key or another issuer naming the same
    /// subject is someone else).
    pub fn is_local(&self, principal: &Principal) -> bool {
        self.local_issuer
            .is_some_and(|index| principal.verifier == VerifierId::Issuer(index))
    }

    /// Verifies `token` with the verifiers in `set`, trying the one the token's shape points
    /// to: API keys are opaque, JWTs name their issuer, and whatever is left goes to
    /// introspection. Concurrent first uses of one token share a single verification (one
    /// introspection call, one signature check), and the result is cached.
    pub async fn verify(
        &self,
        set: &VerifierSet,
        token: &str,
    ) -> Result<Arc<Principal>, VerifyError> {
        let principal = self.verify_cached(set, token).await?;
        // After the cache: a revocation takes effect on the next request, cached or not.
        if principal.verifier == VerifierId::Issuer(self.local_issuer.unwrap_or(usize::MAX))
            && principal
                .token_id
                .as_deref()
                .is_some_and(|jti| local::LOCAL_AUTHORITY.is_revoked(jti))
        {
            return Err(VerifyError::Invalid("token revoked"));
        }
        Ok(principal)
    }

    async fn verify_cached(
        &self,
        set: &VerifierSet,
        token: &str,
    ) -> Result<Arc<Principal>, VerifyError> {
        let digest = api_key::sha256(token.as_bytes());
        // API keys first: the comparison is as cheap as a cache lookup and never cached.
        if set.api_keys {
            if let Some(principal) = self.api_keys.verify(&digest) {
                return Ok(principal);
            }
        }
        let cached = self.cache.get(&digest).await;
        METRICS.token_cache(cached.is_some());
        match cached {
            Some(principal) if set.accepts(principal.verifier) => Ok(principal),
            // Vouched for by a verifier this route does not accept: verify afresh, uncached.
            // Boxed, like the miss below: the hit path runs on every request, and its future
            // would otherwise be sized (and moved, level by level) for the rare paths.
            Some(_) => Box::pin(self.verify_uncached(set, token))
                .await
                .map(Arc::new),
            None => Box::pin(self.verify_and_cache(set, token, digest)).await,
        }
    }

    /// A cache miss: verify, and cache what verified.
    async fn verify_and_cache(
        &self,
        set: &VerifierSet,
        token: &str,
        digest: [u8; 32],
    ) -> Result<Arc<Principal>, VerifyError> {
        // Concurrent first uses share one verification. Whoever runs it uses its own
        // verifier set; a waiter from another route must not inherit that result blindly.
        let ran_here = AtomicBool::new(false);
        let shared = self
            .cache
            .get_or_verify(digest, async {
                ran_here.store(true, Ordering::Relaxed);
                self.verify_uncached(set, token).await.map(Arc::new)
            })
            .await;
        let ran_here = ran_here.load(Ordering::Relaxed);
        match shared {
            // Just verified with this route's verifiers: trust it, even if it is already
            // at its cache horizon (then it must not stay cached).
            Ok(principal) if ran_here => {
                if is_stale(&principal) {
                    self.cache.invalidate(&digest).await;
                }
                Ok(principal)
            }
            Err(error) if ran_here => Err(error),
            // Someone else's verification: usable only if fresh and acceptable here.
            Ok(principal) if set.accepts(principal.verifier) && !is_stale(&principal) => {
                Ok(principal)
            }
            _ => self.verify_uncached(set, token).await.map(Arc::new),
        }
    }

    async fn verify_uncached(
        &self,
        set: &VerifierSet,
        token: &str,
    ) -> Result<Principal, VerifyError> {
        let mut last_error = VerifyError::Invalid("unknown token");
        // A JWT names its issuer: tokens of a configured JWT issuer belong to that verifier
        // alone and are never sent to an introspection endpoint (each call costs an outbound
        // request carrying the gateway's client secret).
        let jwt_issuer = jwt::looks_like_jwt(token)
            .then(|| jwt::unverified_issuer(token))
            .flatten();
        if let Some(iss) = &jwt_issuer {
            if let Some(issuer) = set.issuers.iter().find(|i| &i.issuer == iss) {
                return issuer.verify(token).await;
            }
            if !set.issuers.is_empty() {
                last_error = VerifyError::Invalid("untrusted issuer");
            }
        } else if jwt::looks_like_jwt(token) && !set.issuers.is_empty() {
            last_error = VerifyError::Invalid("malformed token");
        }
        // A JWT of an issuer configured elsewhere goes only to an introspector explicitly
        // bound to that issuer; one bound to another issuer cannot vouch for it at all.
        let owned_elsewhere = jwt_issuer
            .as_ref()
            .is_some_and(|iss| self.issuers.iter().any(|i| &i.issuer == iss));
        for introspector in &set.introspectors {
            match (&jwt_issuer, &introspector.issuer) {
                (Some(iss), Some(expected)) if iss != expected => continue,
                (Some(_), None) if owned_elsewhere => continue,
                _ => {}
            }
            match introspector.introspect(token).await {
                Ok(principal) => return Ok(principal),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    /// After a reload: issuers whose keys come from the same place with the same algorithms
    /// take over the keys already fetched, so requests do not wait for a first fetch.
    pub fn adopt_keys(&self, old: &Verifiers) {
        for issuer in &self.issuers {
            if let Some(previous) = old
                .issuers
                .iter()
                .find(|o| o.issuer == issuer.issuer && o.algorithms == issuer.algorithms)
            {
                issuer.keys.adopt(&previous.keys);
            }
        }
    }

    /// Starts the background JWKS refreshers; called once the runtime exists.
    pub fn start_background_tasks(&self) {
        for issuer in &self.issuers {
            issuer.keys.start_refresher();
        }
    }
}
