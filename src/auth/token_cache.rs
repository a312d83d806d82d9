//! Verified principals keyed by the SHA-256 of their token, each kept until the token's
//! expiry (capped), so a busy client costs one hash and one lookup per request. Only
//! successes are cached: a failure must never be remembered as a success, and remembering
//! failures would let junk tokens fill the cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;

use super::principal::now_unix;
use super::{Principal, VerifyError};

/// Upper bound on how long any verified token is trusted without re-verification, so a key
/// removed from a JWKS or a revoked opaque token stops working within this time.
const MAX_CACHE_TTL: Duration = Duration::from_secs(300);

pub(super) struct TokenCache {
    entries: Cache<[u8; 32], Arc<Principal>>,
}

struct UntilExpiry;

impl Expiry<[u8; 32], Arc<Principal>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Principal>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(remaining(value).min(MAX_CACHE_TTL))
    }
}

fn remaining(principal: &Principal) -> Duration {
    match principal.expires_at {
        Some(exp) => Duration::from_secs(exp.saturating_sub(now_unix())),
        None => MAX_CACHE_TTL,
    }
}

impl TokenCache {
    pub(super) fn new(max_entries: u64) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(UntilExpiry)
                .build(),
        }
    }

    pub(super) async fn get(&self, digest: &[u8; 32]) -> Option<Arc<Principal>> {
        let principal = self.entries.get(digest).await?;
        // moka's expiry is coarse; the token's own expiry is the rule.
        match principal.expires_at {
            Some(exp) if exp <= now_unix() => None,
            _ => Some(principal),
        }
    }

    pub(super) async fn invalidate(&self, digest: &[u8; 32]) {
        self.entries.invalidate(digest).await;
    }

    /// The cached principal, or the result of `verify` — run once however many requests
    /// ask for the same token at the same time, and cached only when it succeeds.
    pub(super) async fn get_or_verify(
        &self,
        digest: [u8; 32],
        verify: impl std::future::Future<Output = Result<Arc<Principal>, VerifyError>>,
    ) -> Result<Arc<Principal>, VerifyError> {
        self.entries
            .try_get_with(digest, verify)
            .await
            .map_err(|error| *error)
    }
}
