//! Phase 8 — rate limits: token buckets per route, per principal on a route, and per
//! principal and tool (`[routes.rate_limits]`). Over → 429 with `Retry-After`.
//!
//! Every limit that applies to a request is checked first and taken from only if all have
//! room: a refused request costs no bucket anything. The buckets live in one of two places:
//!
//! - **In this process** (no `[redis]`): one bounded cache (least recently used go first),
//!   so a flood of distinct principals costs bounded memory; an evicted bucket comes back
//!   full, which only ever errs on the side of the caller it belonged to.
//! - **In Redis** (`[redis]`): replicas behind a load balancer count together. One script
//!   call per request checks and takes every applicable bucket atomically, as GCRA — each
//!   bucket is one timestamp, the moment it would be full again, on Redis's clock (replicas'
//!   clocks may differ). GCRA with interval `period / tokens` and burst `tokens` is exactly
//!   [`crate::model::rate::Bucket`]: the same limit admits the same requests and names the
//!   same wait with or without Redis. Keys (`{prefix}rate:…`, principals and tools as
//!   SHA-256 digests) expire when their bucket is full again, so idle buckets vanish.
//!
//! When Redis does not answer, requests are **admitted** (fail open) and a warning is logged
//! (at most every 10 s): rate limits protect capacity, and an outage of the counter store
//! should not become an outage of every limited route — the default of Envoy's rate limit
//! filter (`failure_mode_deny: false`). Session binding, a security check, fails closed
//! instead (`mcp::sessions`). Each call is bounded by `[redis] timeout`, and after a failure
//! Redis is not asked again for a second, so an outage adds no latency to most requests.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;
use redis::Script;

use super::rejection::Rejection;
use crate::auth::Principal;
use crate::model::rate::{Bucket, Rate, RouteLimits};
use crate::model::route::Route;
use crate::redis_connection::{sha256_hex, SharedRedis};

const MAX_BUCKETS: u64 = 100_000;

pub struct RateLimiter {
    buckets: Buckets,
}

enum Buckets {
    Local(Cache<String, Arc<Mutex<Bucket>>>),
    Shared(Arc<SharedRedis>),
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self {
            buckets: Buckets::Local(
                Cache::builder()
                    .max_capacity(MAX_BUCKETS)
                    .time_to_idle(Duration::from_secs(86_400))
                    .build(),
            ),
        }
    }
}

/// One bucket a request draws from.
enum Scope<'a> {
    /// All callers of the route together.
    Route,
    /// One caller (issuer and subject) on the route.
    Principal(&'a str),
    /// One caller, one tool.
    Tool(&'a str, &'a str),
}

impl RateLimiter {
    /// Buckets in Redis, shared by every replica configured with the same `[redis]`.
    pub fn shared(redis: Arc<SharedRedis>) -> Self {
        Self {
            buckets: Buckets::Shared(redis),
        }
    }

    /// Phase 8 for one request: nothing to do (and nothing allocated) on a route without
    /// limits; over a limit, the 429 to send (`id`: the request's, for the JSON-RPC error).
    pub async fn admit(
        &self,
        route: &Route,
        principal: Option<&Principal>,
        tools: &[String],
        id: Option<serde_json::Value>,
    ) -> Result<(), Rejection> {
        let Some(limits) = &route.limits else {
            return Ok(());
        };
        // Issuer and subject: a refreshed token keeps its buckets.
        let who =
            principal.map(|p| format!("{}\u{0}{}", p.issuer.as_deref().unwrap_or(""), p.subject));
        let applicable = applicable(limits, who.as_deref(), tools);
        let verdict = match &self.buckets {
            Buckets::Local(buckets) => take_local(buckets, &route.id, &applicable),
            Buckets::Shared(redis) => take_shared(redis, &route.id, &applicable).await,
        };
        verdict.map_err(|wait| Rejection::RateLimited {
            retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
            id,
        })
    }
}

/// The buckets that apply to a request, with their rates.
fn applicable<'a>(
    limits: &RouteLimits,
    who: Option<&'a str>,
    tools: &'a [String],
) -> Vec<(Scope<'a>, Rate)> {
    let mut applicable = Vec::new();
    if let Some(rate) = limits.route {
        applicable.push((Scope::Route, rate));
    }
    if let Some(who) = who {
        if let Some(rate) = limits.per_principal {
            applicable.push((Scope::Principal(who), rate));
        }
        for tool in tools {
            let rate = limits
                .tools
                .iter()
                .find(|(name, _)| name == tool)
                .map(|(_, rate)| *rate)
                .or(limits.per_tool);
            if let Some(rate) = rate {
                applicable.push((Scope::Tool(who, tool), rate));
            }
        }
    }
    applicable
}

/// Checks every bucket and, only if all of them have room, takes from each. `Err` carries
/// how long to wait.
fn take_local(
    buckets: &Cache<String, Arc<Mutex<Bucket>>>,
    route: &str,
    applicable: &[(Scope<'_>, Rate)],
) -> Result<(), Duration> {
    let now = Instant::now();
    let buckets: Vec<(Arc<Mutex<Bucket>>, Rate)> = applicable
        .iter()
        .map(|(scope, rate)| {
            let key = match scope {
                Scope::Route => format!("route\u{0}{route}"),
                Scope::Principal(who) => format!("principal\u{0}{route}\u{0}{who}"),
                Scope::Tool(who, tool) => format!("tool\u{0}{route}\u{0}{who}\u{0}{tool}"),
            };
            let bucket = buckets.get_with(key, || Arc::new(Mutex::new(Bucket::full(*rate, now))));
            (bucket, *rate)
        })
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

/// GCRA over every bucket of one request, atomically. `KEYS[i]`: the bucket's theoretical
/// arrival time (µs, Redis clock: when it is full again; absent = full); `ARGV[2i-1]`: the
/// interval between tokens (µs); `ARGV[2i]`: the burst. The token bucket it stands for holds
/// `burst - (tat - now) / interval` tokens, so it has one when
/// `tat - now <= (burst - 1) * interval`, and taking one adds an interval to `tat`.
/// Returns 0 when admitted (all taken), else the wait in µs (nothing taken). Numbers are
/// written with `%.0f`: Lua's default formatting would round microsecond timestamps.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local function arrival(i)
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then return now end
  return tat
end
local wait = 0
for i = 1, #KEYS do
  local interval, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local over = arrival(i) - now - (burst - 1) * interval
  if over > wait then wait = over end
end
if wait > 0 then return math.ceil(wait) end
for i = 1, #KEYS do
  local interval, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local tat = arrival(i)
  if tat - now <= (burst - 1) * interval then
    tat = tat + interval
    redis.call('SET', KEYS[i], string.format('%.0f', tat),
      'PX', string.format('%.0f', math.ceil((tat - now) / 1000)))
  end
end
return 0
",
    )
});

/// [`take_local`] in Redis (one round trip). Fails open: when Redis does not answer, the
/// request is admitted (see the module docs).
async fn take_shared(
    redis: &SharedRedis,
    route: &str,
    applicable: &[(Scope<'_>, Rate)],
) -> Result<(), Duration> {
    if applicable.is_empty() {
        return Ok(());
    }
    let mut invocation = TAKE.prepare_invoke();
    for (scope, rate) in applicable {
        let key = match scope {
            Scope::Route => redis.key(&format!("rate:route:{route}")),
            Scope::Principal(who) => redis.key(&format!(
                "rate:principal:{route}:{}",
                sha256_hex(who.as_bytes())
            )),
            Scope::Tool(who, tool) => redis.key(&format!(
                "rate:tool:{route}:{}",
                sha256_hex(format!("{who}\u{0}{tool}").as_bytes())
            )),
        };
        let interval = u64::try_from(rate.per_token().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        invocation.key(key).arg(interval).arg(rate.tokens);
    }
    match redis.invoke::<u64>("rate limits", &invocation).await {
        Ok(0) | Err(_) => Ok(()),
        Ok(wait_micros) => Err(Duration::from_micros(wait_micros)),
    }
}
