//! The built-in authorization server, as a verifier sees it: the public keys it signs with
//! and the access tokens it has revoked, shared in memory instead of fetched over HTTP.
//!
//! One process runs at most one built-in authorization server, and its keys and revocations
//! must outlive every configuration reload (a reload replaces all compiled verifiers), so
//! they live in one process-wide place: the authorization server writes, the verifier of
//! the issuer `authorization_server` reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use arc_swap::ArcSwap;

use super::jwks::KeySet;

/// Revoked access tokens kept at most; past it the oldest expiries go first. Access tokens
/// are short-lived, so the set stays small in practice.
const MAX_REVOKED: usize = 1_000_000;

#[derive(Default)]
pub struct LocalAuthority {
    keys: ArcSwap<KeySet>,
    published: AtomicBool,
    /// `jti` → expiry (Unix seconds).
    revoked: RwLock<HashMap<String, u64>>,
    revoked_count: AtomicUsize,
}

/// The process's built-in authorization server.
pub static LOCAL_AUTHORITY: LazyLock<LocalAuthority> = LazyLock::new(LocalAuthority::default);

impl LocalAuthority {
    /// Replaces the published verification keys (start, rotation).
    pub fn publish_keys(&self, keys: KeySet) {
        self.keys.store(Arc::new(keys));
        self.published.store(true, Ordering::Release);
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    pub fn has_published(&self) -> bool {
        self.published.load(Ordering::Acquire)
    }

    /// Refuses the access token `jti` until `expires_at`.
    pub fn revoke(&self, jti: &str, expires_at: u64) {
        let Ok(mut revoked) = self.revoked.write() else {
            return;
        };
        if revoked.len() >= MAX_REVOKED {
            let now = super::principal::now_unix();
            revoked.retain(|_, exp| *exp > now);
        }
        if revoked.len() < MAX_REVOKED {
            revoked.insert(jti.to_string(), expires_at);
        }
        self.revoked_count.store(revoked.len(), Ordering::Release);
    }

    /// Checked on every request carrying one of our tokens, cached or not: one atomic load
    /// while nothing is revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        if self.revoked_count.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.revoked
            .read()
            .map(|revoked| revoked.contains_key(jti))
            .unwrap_or(true)
    }

    /// Forgets revocations of tokens that have expired anyway.
    pub fn purge_expired(&self, now: u64) {
        if let Ok(mut revoked) = self.revoked.write() {
            revoked.retain(|_, exp| *exp > now);
            self.revoked_count.store(revoked.len(), Ordering::Release);
        }
    }
}
