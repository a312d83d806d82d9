//! Session binding (protocol 2025-06-18 / 2025-11-25): the principal that opened an MCP
//! session owns it. A session id presented by anyone else is answered as if it did not
//! exist (404), so a leaked or guessed `Mcp-Session-Id` is worth nothing without the
//! owner's credentials.
//!
//! The owner is the issuer and subject, not the token: a refreshed token keeps its session.
//! A session is bound when the upstream's answer to a request without a session id carries
//! one (that is `initialize`); a session id the gateway has not seen (after a restart) is
//! bound to the first principal that presents it.
//!
//! Two stores behind [`SessionStore`], both bounded and expiring:
//! - [`MemorySessions`] (no `[redis]`): this process only.
//! - [`RedisSessions`] (`[redis]`): several replicas behind a load balancer share the
//!   bindings, so a session opened at one replica is refused to anyone else at all of them.
//!   Bindings live in Redis (`{prefix}session:{server}:{sha256(session id)}` → owner, expiring
//!   after the idle time) and in a local cache that answers the hot path without a round
//!   trip. An id not known here is asked of Redis; binding is `SET`-if-absent in one script,
//!   so two replicas binding the same new id agree on one owner. Each use re-confirms the
//!   binding (and refreshes its expiry) at most once a minute.
//!
//! When Redis does not answer, a session known here keeps working (its owner was checked
//! before), but an id not known here is refused with a 503: binding is a security check and
//! is never skipped. The session ids themselves never reach Redis, only their digests.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use moka::sync::Cache;
use redis::Script;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::redis_connection::{sha256_hex, SharedRedis, SharedStateUnavailable};

/// Who opened a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// `None` for API keys (no issuer).
    pub issuer: Option<String>,
    pub subject: String,
}

/// How the caller came to hold a session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The upstream just handed it out in answer to this principal's request: it is theirs.
    /// Kept here even when the shared store cannot be told (it is published later).
    Opened,
    /// A client presented an id this process does not know: the first presenter owns it,
    /// unless another replica bound it already. Refused when that cannot be asked.
    Presented,
}

pub type BindFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Owner, SharedStateUnavailable>> + Send + 'a>>;

/// Both stores key a binding by its scope — the upstream server the session lives on
/// (`pipeline::session`) — and the session id.
pub trait SessionStore: Send + Sync {
    /// The owner this process knows already, without asking anyone: the hot path. `None`
    /// means "ask [`SessionStore::bind`]", also when a known binding is due to be
    /// re-confirmed with a shared store.
    fn known_owner(&self, scope: &str, session: &str) -> Option<Owner>;

    /// Binds `session` to `owner` unless it is bound already (here or, for a shared store,
    /// at another replica); returns the owner in effect.
    fn bind<'a>(
        &'a self,
        scope: &'a str,
        session: &'a str,
        owner: Owner,
        claim: Claim,
    ) -> BindFuture<'a>;
}

/// Sessions remembered at most (least recently used go first) and for how long unused.
const MAX_SESSIONS: u64 = 200_000;
const IDLE: Duration = Duration::from_secs(24 * 3600);
/// Longest session id remembered; longer ones are refused by the caller.
pub const MAX_SESSION_ID_BYTES: usize = 512;

pub struct MemorySessions {
    owners: Cache<(String, String), Owner>,
}

impl Default for MemorySessions {
    fn default() -> Self {
        Self {
            owners: Cache::builder()
                .max_capacity(MAX_SESSIONS)
                .time_to_idle(IDLE)
                .build(),
        }
    }
}

impl MemorySessions {
    fn bind_now(&self, scope: &str, session: &str, owner: Owner) -> Owner {
        self.owners
            .entry((scope.to_string(), session.to_string()))
            .or_insert(owner)
            .into_value()
    }
}

impl SessionStore for MemorySessions {
    fn known_owner(&self, scope: &str, session: &str) -> Option<Owner> {
        self.owners.get(&(scope.to_string(), session.to_string()))
    }

    fn bind<'a>(
        &'a self,
        scope: &'a str,
        session: &'a str,
        owner: Owner,
        _claim: Claim,
    ) -> BindFuture<'a> {
        Box::pin(std::future::ready(Ok(self.bind_now(scope, session, owner))))
    }
}

/// How long a binding confirmed with Redis is trusted locally before the next use
/// re-confirms it (and refreshes its expiry there).
const RECONFIRM_AFTER: Duration = Duration::from_secs(60);
/// After Redis failed to confirm a binding known here, when to try again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// A binding as this process knows it.
#[derive(Debug, Clone)]
struct KnownBinding {
    owner: Owner,
    /// Until then the local answer stands without asking Redis.
    reconfirm_at: Instant,
}

/// The owner in effect for `KEYS[1]`, binding it to `ARGV[1]` (for `ARGV[2]` seconds) if it
/// has none; an existing binding gets its expiry refreshed.
static BIND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if current then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return current
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
",
    )
});

/// Session bindings shared by every replica through Redis, with a local cache in front.
pub struct RedisSessions {
    local: Cache<(String, String), KnownBinding>,
    redis: Arc<SharedRedis>,
}

impl RedisSessions {
    pub fn new(redis: Arc<SharedRedis>) -> Self {
        Self {
            local: Cache::builder()
                .max_capacity(MAX_SESSIONS)
                .time_to_idle(IDLE)
                .build(),
            redis,
        }
    }

    async fn bind_shared(
        &self,
        scope: &str,
        session: &str,
        owner: Owner,
        claim: Claim,
    ) -> Result<Owner, SharedStateUnavailable> {
        let local_key = (scope.to_string(), session.to_string());
        let known = self.local.get(&local_key);
        let now = Instant::now();
        if let Some(known) = &known {
            if now < known.reconfirm_at {
                return Ok(known.owner.clone());
            }
        }
        // A binding known here is re-confirmed as it is (and published, had Redis missed
        // it); otherwise the claimant is the candidate.
        let candidate = known.as_ref().map_or(owner, |k| k.owner.clone());
        match self.ask_redis(scope, session, &candidate).await {
            Ok(in_effect) => {
                self.local.insert(
                    local_key,
                    KnownBinding {
                        owner: in_effect.clone(),
                        reconfirm_at: now + RECONFIRM_AFTER,
                    },
                );
                Ok(in_effect)
            }
            Err(unavailable) => {
                let kept = match (known, claim) {
                    (Some(known), _) => known.owner,
                    (None, Claim::Opened) => candidate,
                    (None, Claim::Presented) => return Err(unavailable),
                };
                self.local.insert(
                    local_key,
                    KnownBinding {
                        owner: kept.clone(),
                        reconfirm_at: now + RETRY_AFTER_FAILURE,
                    },
                );
                Ok(kept)
            }
        }
    }

    async fn ask_redis(
        &self,
        scope: &str,
        session: &str,
        candidate: &Owner,
    ) -> Result<Owner, SharedStateUnavailable> {
        let encoded = serde_json::to_string(candidate).map_err(|_| SharedStateUnavailable)?;
        let key = self.redis.key(&format!(
            "session:{scope}:{}",
            sha256_hex(session.as_bytes())
        ));
        let mut invocation = BIND.prepare_invoke();
        invocation.key(key).arg(encoded).arg(IDLE.as_secs());
        let stored: String = self.redis.invoke("session binding", &invocation).await?;
        serde_json::from_str(&stored).map_err(|error| {
            self.redis.report(
                "session binding",
                &format!("unreadable owner in Redis: {error}"),
            );
            SharedStateUnavailable
        })
    }
}

impl SessionStore for RedisSessions {
    fn known_owner(&self, scope: &str, session: &str) -> Option<Owner> {
        self.local
            .get(&(scope.to_string(), session.to_string()))
            .filter(|known| Instant::now() < known.reconfirm_at)
            .map(|known| known.owner)
    }

    fn bind<'a>(
        &'a self,
        scope: &'a str,
        session: &'a str,
        owner: Owner,
        claim: Claim,
    ) -> BindFuture<'a> {
        Box::pin(self.bind_shared(scope, session, owner, claim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(subject: &str) -> Owner {
        Owner {
            issuer: Some("https://as".into()),
            subject: subject.into(),
        }
    }

    #[tokio::test]
    async fn the_first_owner_keeps_the_session() {
        let store = MemorySessions::default();
        let (alice, mallory) = (owner("alice"), owner("mallory"));
        assert_eq!(store.known_owner("r", "s1"), None);
        let bind = |scope, owner| store.bind(scope, "s1", owner, Claim::Presented);
        assert_eq!(bind("r", alice.clone()).await.unwrap(), alice);
        assert_eq!(bind("r", mallory.clone()).await.unwrap(), alice);
        assert_eq!(store.known_owner("r", "s1"), Some(alice.clone()));
        // Per scope (upstream server).
        assert_eq!(bind("other", mallory.clone()).await.unwrap(), mallory);
    }
}
