//! Logging and the per-request audit event.
//!
//! One event per request (target `audit`): method, path (never the query: it is where a
//! misplaced token would be), route, subject, auth method, verdict, reason, status, latency
//! to the response head. Tokens, keys and secrets are never fields of any event.

use std::time::Duration;

use http::{Method, StatusCode};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};
use crate::pipeline::policy::Admission;
use crate::pipeline::Denial;

/// Keeps the log writer thread alive; dropping it flushes what is still queued.
pub type LogGuard = tracing_appender::non_blocking::WorkerGuard;

/// Installs the global subscriber. `RUST_LOG` overrides the configured level. Calling it
/// twice (tests) keeps the first.
///
/// Lines go through a dedicated writer thread: one `write` per audit line on the request
/// path cost about a fifth of the throughput (BENCHMARKS.md). The queue is not lossy — a
/// full queue slows requests down rather than dropping audit events.
pub fn init(settings: &LogSettings) -> LogGuard {
    // An empty RUST_LOG counts as unset: an empty filter would silence even the warnings.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .and_then(|value| EnvFilter::try_new(value).ok())
        .or_else(|| EnvFilter::try_new(&settings.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // Colours only for a terminal: escape codes in a log file are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // The queue is allocated up front; the default (128k lines) alone costs megabytes.
        .buffered_lines_limit(8_192)
        .thread_name("gateway-log")
        .finish(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    guard
}

/// What the gateway decided about one request, for the audit event.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub verdict: &'static str,
    pub route: Option<String>,
    pub subject: Option<String>,
    pub auth_method: Option<&'static str>,
    pub reason: Option<String>,
    pub forwarded: Option<String>,
}

impl Outcome {
    pub fn builtin(name: &'static str) -> Self {
        Self {
            verdict: name,
            ..Self::default()
        }
    }

    pub fn with_route(mut self, route: &str) -> Self {
        self.route = Some(route.to_string());
        self
    }

    pub fn admitted(admission: &Admission) -> Self {
        let principal = admission.principal();
        Self {
            verdict: match admission {
                Admission::Granted(_) => "allow",
                Admission::Public(_) => "public",
                Admission::Preflight(_) => "preflight",
            },
            route: Some(admission.route().id.clone()),
            subject: principal.map(|p| p.subject.clone()),
            auth_method: principal.map(|p| p.method.as_str()),
            reason: None,
            forwarded: None,
        }
    }

    pub fn rejected(denial: &Denial) -> Self {
        Self {
            verdict: "deny",
            route: denial.route.as_ref().map(|r| r.id.clone()),
            subject: denial.principal.as_ref().map(|p| p.subject.clone()),
            auth_method: denial.principal.as_ref().map(|p| p.method.as_str()),
            reason: Some(denial.rejection.reason()),
            forwarded: None,
        }
    }

    /// For `/verify`: the request the front proxy described (`POST /mcp`), never its query.
    pub fn describing(mut self, method: &Method, path: &str) -> Self {
        self.forwarded = Some(format!("{method} {path}"));
        self
    }

    /// Admitted, but the upstream exchange failed.
    pub fn failed(mut self, reason: &str) -> Self {
        self.verdict = "upstream_error";
        self.reason = Some(reason.to_string());
        self
    }
}

pub fn audit(
    method: &Method,
    path: &str,
    status: StatusCode,
    latency: Duration,
    outcome: &Outcome,
) {
    tracing::info!(
        target: "audit",
        %method,
        path,
        status = status.as_u16(),
        verdict = outcome.verdict,
        route = outcome.route.as_deref(),
        subject = outcome.subject.as_deref(),
        auth = outcome.auth_method,
        reason = outcome.reason.as_deref(),
        forwarded = outcome.forwarded.as_deref(),
        latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
}
