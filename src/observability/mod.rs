//! Logging and the per-request audit event.
//!
//! One event per request (target `audit`): method, path (never the query: it is where a
//! misplaced token would be), route, subject, auth method, API key id, verdict, reason,
//! status, latency to the response head, client address, request id, trace id, user agent.
//! Tokens, keys and secrets are never fields of any event.

mod audit;
mod log_writer;
pub mod metrics;
pub mod request_id;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

pub use log_writer::{gather_lines_on_this_thread, hand_over_lines, LogGuard};

/// `[log]`, as compiled by `config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
    /// Audit `/healthz` and `/readyz` too (off: probes would drown the audit log).
    pub audit_probes: bool,
}

/// How many log lines were dropped since start (stdout could not keep up).
pub fn dropped_log_lines() -> u64 {
    log_writer::dropped_lines()
}

/// Installs the global subscriber. `RUST_LOG` overrides the configured level. Calling it
/// twice (tests) keeps the first.
///
/// Lines go through a dedicated writer thread ([`log_writer`]): one `write` per audit line
/// on the request path cost about a fifth of the throughput (BENCHMARKS.md). Its queue is
/// lossy: a stuck stdout must not stall the single-threaded workers. Dropped lines are
/// counted and reported on stderr, at most every 10 s.
pub fn init(settings: &LogSettings) -> Option<LogGuard> {
    // An empty RUST_LOG counts as unset: an empty filter would silence even the warnings.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .and_then(|value| EnvFilter::try_new(value).ok())
        .or_else(|| EnvFilter::try_new(&settings.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // Colours only for a terminal: escape codes in a log file are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let guard = log_writer::start();
    // Without the writer thread (it could not be started), lines go to stdout directly.
    let writer = match guard {
        Some(_) => BoxMakeWriter::new(log_writer::QueueWriter),
        None => BoxMakeWriter::new(std::io::stdout),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let installed = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    // Audit lines skip tracing-subscriber's formatting (see `audit`), except in colour.
    if installed.is_ok() && guard.is_some() && (settings.format == LogFormat::Json || !ansi) {
        audit::install(audit::Sink {
            format: settings.format,
        });
    }
    guard
}

/// A warning that may repeat once per request (an upstream down, a connection limit hit):
/// logged at most once per interval, saying how many were suppressed in between.
pub struct Throttle {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last line)` when this occurrence should be logged.
    pub fn allow(&self) -> Option<u64> {
        let Ok(mut last) = self.last.try_lock() else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.interval) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// What the gateway decided about one request, for the audit event.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub verdict: &'static str,
    /// The route's id, shared with the configuration (no copy per request).
    pub route: Option<std::sync::Arc<str>>,
    pub subject: Option<String>,
    pub auth_method: Option<&'static str>,
    pub reason: Option<String>,
    pub forwarded: Option<String>,
    /// The API key's configured id, when an API key authenticated the request.
    pub key_id: Option<String>,
    /// The decision as a bounded metrics label (`allowed`, `invalid_token`, …).
    pub decision: &'static str,
    /// Phase 7 (routes with MCP rules): the JSON-RPC method, the tool / prompt / resource
    /// it acts on (never its arguments), and the rule that refused it.
    pub mcp_method: Option<String>,
    pub mcp_target: Option<String>,
    pub rule: Option<String>,
}

/// What is known about a request before it is decided, for its audit event.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub id: http::HeaderValue,
    pub client: std::net::IpAddr,
    pub trace_id: Option<String>,
    /// As received: shortened and made text only for an audit line that is written.
    pub user_agent: Option<http::HeaderValue>,
}

/// The longest user agent an audit event carries.
const MAX_USER_AGENT_CHARS: usize = 200;

impl RequestContext {
    /// Reads the context off an inbound request and settles its headers: `X-Request-Id` is
    /// ours unless a trusted front proxy sent a plain one, and a malformed `traceparent` is
    /// dropped with its `tracestate`.
    pub fn settle(
        headers: &mut http::HeaderMap,
        client: std::net::IpAddr,
        trust_forwarded: bool,
    ) -> Self {
        use request_id::{REQUEST_ID, TRACEPARENT, TRACESTATE};
        let inbound = headers
            .get(&REQUEST_ID)
            .filter(|value| trust_forwarded && request_id::accept(value))
            .cloned();
        let id = inbound.unwrap_or_else(request_id::generate);
        headers.insert(REQUEST_ID, id.clone());
        let trace_id = match headers.get(&TRACEPARENT) {
            Some(value) if request_id::valid_traceparent(value) => {
                request_id::trace_id(value).map(str::to_string)
            }
            Some(_) => {
                headers.remove(&TRACEPARENT);
                headers.remove(&TRACESTATE);
                None
            }
            None => None,
        };
        let user_agent = headers.get(http::header::USER_AGENT).cloned();
        Self {
            id,
            client,
            trace_id,
            user_agent,
        }
    }

    /// The user agent for the audit event: text, at most [`MAX_USER_AGENT_CHARS`].
    fn user_agent_text(&self) -> Option<String> {
        self.user_agent.as_ref().map(|value| {
            String::from_utf8_lossy(value.as_bytes())
                .chars()
                .take(MAX_USER_AGENT_CHARS)
                .collect()
        })
    }
}

impl Outcome {
    pub fn builtin(name: &'static str) -> Self {
        Self {
            verdict: name,
            decision: "builtin",
            ..Self::default()
        }
    }

    pub fn with_route(mut self, route: &std::sync::Arc<str>) -> Self {
        self.route = Some(route.clone());
        self
    }

    /// For `/verify`: the request the front proxy described (`POST /mcp`), never its query.
    pub fn describing(mut self, method: &Method, path: &str) -> Self {
        self.forwarded = Some(format!("{method} {path}"));
        self
    }

    /// Admitted, but the upstream exchange failed.
    pub fn failed(mut self, reason: &str) -> Self {
        self.verdict = "upstream_error";
        self.decision = "upstream_error";
        self.reason = Some(reason.to_string());
        self
    }
}

/// The request's audit event: one line, target `audit`, level `info`.
pub fn audit(
    method: &Method,
    path: &str,
    status: StatusCode,
    latency: Duration,
    outcome: &Outcome,
    context: &RequestContext,
) {
    // Asked as the event itself, fields included: a filter directive on a field name
    // (`[{peer}]=warn`) must judge this line as it judged the `info!` it replaces. The
    // field list is `audit_through_tracing`'s and `audit::Record::fields`'s: a field added
    // to one goes into all three (the byte-for-byte tests catch the other two, not this).
    let enabled = tracing::event_enabled!(
        target: "audit",
        tracing::Level::INFO,
        { message, method, path, status, verdict, route, subject, auth, key_id, reason,
          forwarded, mcp_method, mcp_target, rule, latency_us, client, request_id, trace_id,
          user_agent }
    );
    if !enabled {
        return;
    }
    let user_agent = context.user_agent_text();
    let record = audit::Record {
        method,
        path,
        status: status.as_u16(),
        verdict: outcome.verdict,
        route: outcome.route.as_deref(),
        subject: outcome.subject.as_deref(),
        auth: outcome.auth_method,
        key_id: outcome.key_id.as_deref(),
        reason: outcome.reason.as_deref(),
        forwarded: outcome.forwarded.as_deref(),
        mcp_method: outcome.mcp_method.as_deref(),
        mcp_target: outcome.mcp_target.as_deref(),
        rule: outcome.rule.as_deref(),
        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        client: context.client,
        request_id: context.id.to_str().unwrap_or_default(),
        trace_id: context.trace_id.as_deref(),
        user_agent: user_agent.as_deref(),
    };
    if !audit::write(&record) {
        audit_through_tracing(&record);
    }
}

/// The same event through tracing: in colour, under another subscriber, and as the
/// reference the hand-written line is tested against.
fn audit_through_tracing(record: &audit::Record<'_>) {
    tracing::info!(
        target: "audit",
        method = %record.method,
        path = record.path,
        status = record.status,
        verdict = record.verdict,
        route = record.route,
        subject = record.subject,
        auth = record.auth,
        key_id = record.key_id,
        reason = record.reason,
        forwarded = record.forwarded,
        mcp_method = record.mcp_method,
        mcp_target = record.mcp_target,
        rule = record.rule,
        latency_us = record.latency_us,
        client = %record.client,
        request_id = record.request_id,
        trace_id = record.trace_id,
        user_agent = record.user_agent,
        "{}",
        audit::MESSAGE
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_logs_once_per_interval_and_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        *throttle.last.lock().unwrap() = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(throttle.allow(), Some(2));
    }
}
