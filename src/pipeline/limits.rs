//! Phase 8 — rate limits: token buckets per route, per principal on a route, and per
//! principal and tool (`[routes.rate_limits]`). Over → 429 with `Retry-After`.
//!
//! Buckets live in one bounded cache (least recently used go first), so a flood of
//! distinct principals costs bounded memory; an evicted bucket comes back full, which only
//! ever errs on the side of the caller it belonged to.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;

use super::rejection::Rejection;
use crate::auth::Principal;
use crate::model::rate::{Bucket, Rate};
use crate::model::route::Route;

const MAX_BUCKETS: u64 = 100_000;

pub struct RateLimiter {
    buckets: Cache<String, Arc<Mutex<Bucket>>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self {
            buckets: Cache::builder()
                .max_capacity(MAX_BUCKETS)
                .time_to_idle(Duration::from_secs(86_400))
                .build(),
        }
    }
}

impl RateLimiter {
    fn bucket(&self, key: String, rate: Rate, now: Instant) -> Arc<Mutex<Bucket>> {
        self.buckets
            .get_with(key, || Arc::new(Mutex::new(Bucket::full(rate, now))))
    }

    /// Phase 8 for one request: nothing to do (and nothing allocated) on a route without
    /// limits; over a limit, the 429 to send (`id`: the request's, for the JSON-RPC error).
    pub fn admit(
        &self,
        route: &Route,
        principal: Option<&Principal>,
        tools: &[String],
        id: Option<serde_json::Value>,
    ) -> Result<(), Rejection> {
        if route.limits.is_none() {
            return Ok(());
        }
        // Issuer and subject: a refreshed token keeps its buckets.
        let key =
            principal.map(|p| format!("{}\u{0}{}", p.issuer.as_deref().unwrap_or(""), p.subject));
        self.check(route, key.as_deref(), tools)
            .map_err(|wait| Rejection::RateLimited {
                retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
                id,
            })
    }

    /// Checks every limit that applies and, only if all of them have room, takes from each:
    /// a refused request costs no bucket anything. `Err` carries how long to wait.
    fn check(
        &self,
        route: &Route,
        principal: Option<&str>,
        tools: &[String],
    ) -> Result<(), Duration> {
        let Some(limits) = &route.limits else {
            return Ok(());
        };
        let mut applicable: Vec<(String, Rate)> = Vec::new();
        if let Some(rate) = limits.route {
            applicable.push((format!("route\u{0}{}", route.id), rate));
        }
        if let Some(who) = principal {
            if let Some(rate) = limits.per_principal {
                applicable.push((format!("principal\u{0}{}\u{0}{who}", route.id), rate));
            }
            for tool in tools {
                let rate = limits
                    .tools
                    .iter()
                    .find(|(name, _)| name == tool)
                    .map(|(_, rate)| *rate)
                    .or(limits.per_tool);
                if let Some(rate) = rate {
                    applicable.push((format!("tool\u{0}{}\u{0}{who}\u{0}{tool}", route.id), rate));
                }
            }
        }
        let now = Instant::now();
        let buckets: Vec<(Arc<Mutex<Bucket>>, Rate)> = applicable
            .into_iter()
            .map(|(key, rate)| (self.bucket(key, rate, now), rate))
            .collect();
        let mut wait = Duration::ZERO;
        for (bucket, rate) in &buckets {
            let mut bucket = bucket.lock().map_err(|_| Duration::from_secs(1))?;
            if let Err(w) = bucket.check(*rate, now) {
                wait = wait.max(w);
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for (bucket, rate) in &buckets {
            let mut bucket = bucket.lock().map_err(|_| Duration::from_secs(1))?;
            // Another request may have taken the last token since the check; this one was
            // admitted on that check and is not refused after the fact (at most one over).
            let _ = bucket.take(*rate, now);
        }
        Ok(())
    }
}
