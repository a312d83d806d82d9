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
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use http::Method;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram: one counter per bucket (not cumulative; summed when rendered).
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// What one route has seen.
#[derive(Default)]
pub struct RouteMetrics {
    /// (method, status) → requests.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Request received → response head sent.
    gateway: Histogram,
    /// Upstream request sent → upstream response head received.
    upstream: Histogram,
}

/// The process-wide registry.
#[derive(Default)]
pub struct Registry {
    /// By route id; `""` for requests that matched no route.
    routes: RwLock<HashMap<String, Arc<RouteMetrics>>>,
    /// (auth method, decision) → requests.
    decisions: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// (issuer id, result) → JWKS fetches.
    jwks_fetches: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// (introspection id, result) → introspection outcomes.
    introspections: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Verified-token cache lookups.
    token_cache_hits: AtomicU64,
    token_cache_misses: AtomicU64,
    /// Refused connections by limit.
    connections_refused: Mutex<BTreeMap<&'static str, u64>>,
    open_connections: AtomicI64,
    requests_in_flight: AtomicI64,
    /// (result) → configuration loads and reloads.
    config_loads: Mutex<BTreeMap<&'static str, u64>>,
    /// SHA-256 of the configuration text in service.
    config_hash: Mutex<String>,
}

/// The registry every part of the gateway reports to.
pub static METRICS: LazyLock<Registry> = LazyLock::new(Registry::default);

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    *map.entry(key).or_insert(0) += 1;
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
    fn route(&self, id: &str) -> Arc<RouteMetrics> {
        if let Some(found) = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return found.clone();
        }
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.entry(id.to_string()).or_default().clone()
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
        let metrics = self.route(route.unwrap_or(""));
        bump(&metrics.requests, (method_label(method), status));
        metrics.gateway.observe(elapsed);
        if decision != "builtin" {
            bump(&self.decisions, (auth.unwrap_or("none"), decision));
        }
    }

    /// Time to the upstream's response head.
    pub fn upstream_latency(&self, route: &str, elapsed: Duration) {
        self.route(route).upstream.observe(elapsed);
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
        let counter = if hit {
            &self.token_cache_hits
        } else {
            &self.token_cache_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_refused(&self, limit: &'static str) {
        bump(&self.connections_refused, limit);
    }

    pub fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> i64 {
        self.open_connections.load(Ordering::Relaxed)
    }

    pub fn request_started(&self) {
        self.requests_in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self) {
        self.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// A configuration was loaded (`ok`) or refused (`error`); `hash` is the one serving.
    pub fn config_loaded(&self, result: &'static str, hash: Option<&str>) {
        bump(&self.config_loads, result);
        if let Some(hash) = hash {
            *self.config_hash.lock().unwrap_or_else(|p| p.into_inner()) = hash.to_string();
        }
    }

    /// The exposition text.
    pub fn render(&self, dropped_log_lines: u64) -> String {
        let mut out = String::with_capacity(8192);
        let routes: Vec<(String, Arc<RouteMetrics>)> = {
            let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
            let mut list: Vec<_> = routes.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            list.sort_by(|a, b| a.0.cmp(&b.0));
            list
        };

        family(
            &mut out,
            "mcp_gateway_requests_total",
            "counter",
            "Requests answered, by route (empty: no route), method and status.",
        );
        for (route, metrics) in &routes {
            let requests = metrics.requests.lock().unwrap_or_else(|p| p.into_inner());
            for ((method, status), count) in requests.iter() {
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
        for (route, metrics) in &routes {
            metrics.gateway.render(
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
        for (route, metrics) in routes.iter().filter(|(route, _)| !route.is_empty()) {
            metrics.upstream.render(
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
        for ((auth, decision), count) in self
            .decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
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
        for ((issuer, result), count) in self
            .jwks_fetches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "mcp_gateway_jwks_fetches_total{{issuer=\"{}\",result=\"{result}\"}} {count}",
                escape(issuer)
            );
        }
        family(&mut out, "mcp_gateway_introspections_total", "counter", "Introspection outcomes, by introspector and result (cached_inactive: answered from the negative cache).");
        for ((introspector, result), count) in self
            .introspections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
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
            self.token_cache_hits.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "mcp_gateway_token_cache_lookups_total{{result=\"miss\"}} {}",
            self.token_cache_misses.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "mcp_gateway_connections_refused_total",
            "counter",
            "Connections closed at accept, by the limit that refused them.",
        );
        for (limit, count) in self
            .connections_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
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
            self.open_connections.load(Ordering::Relaxed).max(0)
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
            self.requests_in_flight.load(Ordering::Relaxed).max(0)
        );
        family(
            &mut out,
            "mcp_gateway_config_loads_total",
            "counter",
            "Configuration loads and reloads, by result.",
        );
        for (result, count) in self
            .config_loads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
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
        let hash = self
            .config_hash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
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
}
