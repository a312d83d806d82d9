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
//! Bounded and expiring, in memory behind [`SessionStore`]; a shared store for several
//! replicas implements the same trait.

use moka::sync::Cache;
use std::time::Duration;

/// Who opened a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// `None` for API keys (no issuer).
    pub issuer: Option<String>,
    pub subject: String,
}

pub trait SessionStore: Send + Sync {
    fn owner(&self, route: &str, session: &str) -> Option<Owner>;
    /// Binds `session` to `owner` unless it is bound already; returns the owner in effect.
    fn bind(&self, route: &str, session: &str, owner: Owner) -> Owner;
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

impl SessionStore for MemorySessions {
    fn owner(&self, route: &str, session: &str) -> Option<Owner> {
        self.owners.get(&(route.to_string(), session.to_string()))
    }

    fn bind(&self, route: &str, session: &str, owner: Owner) -> Owner {
        self.owners
            .entry((route.to_string(), session.to_string()))
            .or_insert(owner)
            .into_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_owner_keeps_the_session() {
        let store = MemorySessions::default();
        let alice = Owner {
            issuer: Some("https://as".into()),
            subject: "alice".into(),
        };
        let mallory = Owner {
            issuer: Some("https://as".into()),
            subject: "mallory".into(),
        };
        assert_eq!(store.owner("r", "s1"), None);
        assert_eq!(store.bind("r", "s1", alice.clone()), alice);
        assert_eq!(store.bind("r", "s1", mallory.clone()), alice);
        assert_eq!(store.owner("r", "s1"), Some(alice.clone()));
        // Per route.
        assert_eq!(store.bind("other", "s1", mallory.clone()), mallory);
    }
}
