//! Prometheus metrics, served as text (exposition format 0.0.4) on the admin listener's
//! `/metrics`. Written by hand rather than with a client crate: a few counters and two
//! histograms, atomics on the hot path, and the classic text format that `promtool check
//! metrics` and every Prometheus version read.
//!
//! Every label value is bounded: route ids and issuer / introspection ids come from the
//! configuration, methods outside the standard set are `OTHER`, statuses are three digits,
//! decisions and results are fixed words. No label carries a subject, token, path or tool
//! argument.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use http::Method;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram: one count per bucket (not cumulative; summed when rendered).
#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len() + 1],
    sum_micros: u64,
}

impl Histogram {
    fn observe(&mut self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[index] += 1;
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    fn add(&mut self, other: &Histogram) {
        for (sum, count) in self.buckets.iter_mut().zip(other.buckets) {
            *sum += count;
        }
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i];
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[BUCKETS.len()];
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// What one route has seen.
#[derive(Default)]
struct RouteCounters {
    /// (method, status) → requests.
    requests: BTreeMap<(&'static str, u16), u64>,
    /// Request received → response head sent.
    gateway: Histogram,
    /// Upstream request sent → upstream response head received.
    upstream: Histogram,
}

/// FNV-1a for route ids: they come from the configuration, never from a client, so
/// SipHash's resistance to chosen keys buys nothing, and it cost twice this per lookup
/// (two lookups a proxied request).
#[derive(Default)]
struct RouteIdHasher(u64);

impl Hasher for RouteIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The counters every request or connection moves.
#[derive(Default)]
struct Counters {
    /// Route id (`""` for requests that matched no route) → its place in `route_counters`.
    routes: HashMap<Box<str>, usize, BuildHasherDefault<RouteIdHasher>>,
    route_counters: Vec<RouteCounters>,
    /// (auth method, decision) → requests.
    decisions: BTreeMap<(&'static str, &'static str), u64>,
    token_cache_hits: u64,
    token_cache_misses: u64,
    /// Gauges: one thread may add what another takes away (only their sum means anything).
    open_connections: i64,
    requests_in_flight: i64,
}

impl Counters {
    fn route(&mut self, id: &str) -> &mut RouteCounters {
        // By index: `entry` would want an owned key at every lookup, and the id is new once.
        let index = match self.routes.get(id) {
            Some(&index) => index,
            None => {
                self.route_counters.push(RouteCounters::default());
                let index = self.route_counters.len() - 1;
                self.routes.insert(id.into(), index);
                index
            }
        };
        &mut self.route_counters[index]
    }

    /// Route ids in order, with their counters.
    fn routes(&self) -> Vec<(&str, &RouteCounters)> {
        let mut list: Vec<_> = self
            .routes
            .iter()
            .map(|(id, &index)| (&**id, &self.route_counters[index]))
            .collect();
        list.sort_by_key(|(id, _)| *id);
        list
    }

    fn add(&mut self, other: &Counters) {
        for (id, theirs) in other.routes() {
            let ours = self.route(id);
            for (key, count) in &theirs.requests {
                *ours.requests.entry(*key).or_insert(0) += count;
            }
            ours.gateway.add(&theirs.gateway);
            ours.upstream.add(&theirs.upstream);
        }
        for (key, count) in &other.decisions {
            *self.decisions.entry(*key).or_insert(0) += count;
        }
        self.token_cache_hits += other.token_cache_hits;
        self.token_cache_misses += other.token_cache_misses;
        self.open_connections += other.open_connections;
        self.requests_in_flight += other.requests_in_flight;
    }
}

/// Counter shards: a thread bumps the counters of its own shard (threads are given shards
/// in turn), under a lock no other worker takes, so the per-request counting moves no cache
/// line between cores (each worker bumping the same atomics and locks did, ~20 times a
/// request). `/metrics` locks each shard in turn and sums them. More threads than shards
/// share some, which stays correct.
const SHARDS: usize = 16;

/// A shard on cache lines of its own (128 bytes: adjacent-line prefetch pairs them).
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<Counters>);

/// The process-wide registry.
#[derive(Default)]
pub struct Registry {
    shards: [Shard; SHARDS],
    /// (issuer id, result) → JWKS fetches.
    jwks_fetches: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// (introspection id, result) → introspection outcomes.
    introspections: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Refused connections by limit.
    connections_refused: Mutex<BTreeMap<&'static str, u64>>,
    /// (result) → configuration loads and reloads.
    config_loads: Mutex<BTreeMap<&'static str, u64>>,
    /// SHA-256 of the configuration text in service.
    config_hash: Mutex<String>,
}

/// The registry every part of the gateway reports to.
pub static METRICS: LazyLock<Registry> = LazyLock::new(Registry::default);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *lock(map).entry(key).or_insert(0) += 1;
}

/// The shard of the calling thread, given once per thread.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|index| *index)
}

/// The standard methods by name; anything else is one label value.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

impl Registry {
    /// The calling thread's counters.
    fn local(&self) -> MutexGuard<'_, Counters> {
        lock(&self.shards[shard_index()].0)
    }

    /// Every shard summed.
    fn total(&self) -> Counters {
        let mut total = Counters::default();
        for shard in &self.shards {
            total.add(&lock(&shard.0));
        }
        total
    }

    /// One answered request.
    pub fn request(
        &self,
        route: Option<&str>,
        method: &Method,
        status: u16,
        auth: Option<&'static str>,
        decision: &'static str,
        elapsed: Duration,
    ) {
        let mut counters = self.local();
        if decision != "builtin" {
            *counters
                .decisions
                .entry((auth.unwrap_or("none"), decision))
                .or_insert(0) += 1;
        }
        let route = counters.route(route.unwrap_or(""));
        *route
            .requests
            .entry((method_label(method), status))
            .or_insert(0) += 1;
        route.gateway.observe(elapsed);
    }

    /// Time to the upstream's response head.
    pub fn upstream_latency(&self, route: &str, elapsed: Duration) {
        self.local().route(route).upstream.observe(elapsed);
    }

    pub fn jwks_fetch(&self, issuer: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        bump(&self.jwks_fetches, (issuer.to_string(), result));
    }

    /// `result`: `active`, `inactive`, `cached_inactive`, `unavailable`, `busy`.
    pub fn introspection(&self, introspector: &str, result: &'static str) {
        bump(&self.introspections, (introspector.to_string(), result));
    }

    pub fn token_cache(&self, hit: bool) {
        let mut counters = self.local();
        if hit {
            counters.token_cache_hits += 1;
        } else {
            counters.token_cache_misses += 1;
        }
    }

    pub fn connection_refused(&self, limit: &'static str) {
        bump(&self.connections_refused, limit);
    }

    pub fn connection_opened(&self) {
        self.local().open_connections += 1;
    }

    pub fn connection_closed(&self) {
        self.local().open_connections -= 1;
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> i64 {
        self.shards
            .iter()
            .map(|shard| lock(&shard.0).open_connections)
            .sum()
    }

    pub fn request_started(&self) {
        self.local().requests_in_flight += 1;
    }

    pub fn request_finished(&self) {
        self.local().requests_in_flight -= 1;
    }

    /// A configuration was loaded (`ok`) or refused (`error`); `hash` is the one serving.
    pub fn config_loaded(&self, result: &'static str, hash: Option<&str>) {
        bump(&self.config_loads, result);
        if let Some(hash) = hash {
            *lock(&self.config_hash) = hash.to_string();
        }
    }

    /// The exposition text.
    pub fn render(&self, dropped_log_lines: u64) -> String {
        let mut out = String::with_capacity(8192);
        let total = self.total();
        let routes = total.routes();

        family(
            &mut out,
            "mcp_gateway_requests_total",
            "counter",
            "Requests answered, by route (empty: no route), method and status.",
        );
        for (route, counters) in &routes {
            for ((method, status), count) in &counters.requests {
                let _ = writeln!(
                    out,
                    "mcp_gateway_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {count}",
                    escape(route)
                );
            }
        }
        family(
            &mut out,
            "mcp_gateway_request_duration_seconds",
            "histogram",
            "Time from request to response head in the gateway, by route.",
        );
        for (route, counters) in &routes {
            counters.gateway.render(
                &mut out,
                "mcp_gateway_request_duration_seconds",
                &format!("route=\"{}\"", escape(route)),
            );
        }
        family(
            &mut out,
            "mcp_gateway_upstream_duration_seconds",
            "histogram",
            "Time from upstream request to upstream response head, by route.",
        );
        for (route, counters) in routes.iter().filter(|(route, _)| !route.is_empty()) {
            counters.upstream.render(
                &mut out,
                "mcp_gateway_upstream_duration_seconds",
                &format!("route=\"{}\"", escape(route)),
            );
        }
        family(
            &mut out,
            "mcp_gateway_decisions_total",
            "counter",
            "Authorization decisions, by auth method and outcome.",
        );
        for ((auth, decision), count) in &total.decisions {
            let _ = writeln!(
                out,
                "mcp_gateway_decisions_total{{auth=\"{auth}\",decision=\"{decision}\"}} {count}"
            );
        }
        family(
            &mut out,
            "mcp_gateway_jwks_fetches_total",
            "counter",
            "JWKS fetches, by issuer and result.",
        );
        for ((issuer, result), count) in lock(&self.jwks_fetches).iter() {
            let _ = writeln!(
                out,
                "mcp_gateway_jwks_fetches_total{{issuer=\"{}\",result=\"{result}\"}} {count}",
                escape(issuer)
            );
        }
        family(&mut out, "mcp_gateway_introspections_total", "counter", "Introspection outcomes, by introspector and result (cached_inactive: answered from the negative cache).");
        for ((introspector, result), count) in lock(&self.introspections).iter() {
            let _ = writeln!(out, "mcp_gateway_introspections_total{{introspection=\"{}\",result=\"{result}\"}} {count}", escape(introspector));
        }
        family(
            &mut out,
            "mcp_gateway_token_cache_lookups_total",
            "counter",
            "Verified-token cache lookups, by result.",
        );
        let _ = writeln!(
            out,
            "mcp_gateway_token_cache_lookups_total{{result=\"hit\"}} {}",
            total.token_cache_hits
        );
        let _ = writeln!(
            out,
            "mcp_gateway_token_cache_lookups_total{{result=\"miss\"}} {}",
            total.token_cache_misses
        );
        family(
            &mut out,
            "mcp_gateway_connections_refused_total",
            "counter",
            "Connections closed at accept, by the limit that refused them.",
        );
        for (limit, count) in lock(&self.connections_refused).iter() {
            let _ = writeln!(
                out,
                "mcp_gateway_connections_refused_total{{limit=\"{limit}\"}} {count}"
            );
        }
        family(
            &mut out,
            "mcp_gateway_open_connections",
            "gauge",
            "Client connections open now.",
        );
        let _ = writeln!(
            out,
            "mcp_gateway_open_connections {}",
            total.open_connections.max(0)
        );
        family(
            &mut out,
            "mcp_gateway_requests_in_flight",
            "gauge",
            "Requests (and open streams) being answered now.",
        );
        let _ = writeln!(
            out,
            "mcp_gateway_requests_in_flight {}",
            total.requests_in_flight.max(0)
        );
        family(
            &mut out,
            "mcp_gateway_config_loads_total",
            "counter",
            "Configuration loads and reloads, by result.",
        );
        for (result, count) in lock(&self.config_loads).iter() {
            let _ = writeln!(
                out,
                "mcp_gateway_config_loads_total{{result=\"{result}\"}} {count}"
            );
        }
        family(
            &mut out,
            "mcp_gateway_config_info",
            "gauge",
            "The configuration in service (SHA-256 of its text).",
        );
        let hash = lock(&self.config_hash).clone();
        let _ = writeln!(
            out,
            "mcp_gateway_config_info{{sha256=\"{}\"}} 1",
            escape(&hash)
        );
        family(
            &mut out,
            "mcp_gateway_log_lines_dropped_total",
            "counter",
            "Log lines dropped because stdout could not keep up.",
        );
        let _ = writeln!(
            out,
            "mcp_gateway_log_lines_dropped_total {dropped_log_lines}"
        );
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it (`\`, `"` and newlines escaped).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `/metrics` on the admin listener.
pub fn render() -> http::Response<crate::body::Body> {
    let text = METRICS.render(super::dropped_log_lines());
    let mut response = http::Response::new(crate::body::full(text));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_with_bounded_labels() {
        let registry = Registry::default();
        registry.request(
            Some("mcp"),
            &Method::POST,
            200,
            Some("jwt"),
            "allowed",
            Duration::from_millis(3),
        );
        registry.request(
            None,
            &Method::from_bytes(b"BREW").unwrap(),
            404,
            None,
            "refused_request",
            Duration::from_micros(10),
        );
        registry.upstream_latency("mcp", Duration::from_millis(2));
        let text = registry.render(0);
        assert!(
            text.contains(
                "mcp_gateway_requests_total{route=\"mcp\",method=\"POST\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "mcp_gateway_requests_total{route=\"\",method=\"OTHER\",status=\"404\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("mcp_gateway_decisions_total{auth=\"jwt\",decision=\"allowed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "mcp_gateway_request_duration_seconds_bucket{route=\"mcp\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("mcp_gateway_upstream_duration_seconds_count{route=\"mcp\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn counts_from_every_thread_are_summed() {
        let registry = Registry::default();
        // More threads than shards: some share one, and nothing is lost.
        std::thread::scope(|scope| {
            for _ in 0..SHARDS + 4 {
                scope.spawn(|| {
                    for _ in 0..10 {
                        registry.request(
                            Some("mcp"),
                            &Method::GET,
                            200,
                            Some("api_key"),
                            "allowed",
                            Duration::from_micros(100),
                        );
                        registry.token_cache(true);
                    }
                    registry.connection_opened();
                });
            }
        });
        // A gauge moved down on another thread than the one that moved it up.
        std::thread::scope(|scope| {
            scope.spawn(|| registry.connection_closed());
        });
        let total = (SHARDS + 4) * 10;
        let text = registry.render(0);
        for line in [
            format!(
                "mcp_gateway_requests_total{{route=\"mcp\",method=\"GET\",status=\"200\"}} {total}"
            ),
            format!("mcp_gateway_request_duration_seconds_count{{route=\"mcp\"}} {total}"),
            format!("mcp_gateway_decisions_total{{auth=\"api_key\",decision=\"allowed\"}} {total}"),
            format!("mcp_gateway_token_cache_lookups_total{{result=\"hit\"}} {total}"),
            format!("mcp_gateway_open_connections {}", SHARDS + 3),
        ] {
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert_eq!(registry.open_connections(), (SHARDS + 3) as i64);
    }
}
