//! Phase 12 — Audit: what the one audit event per request says about the decision (who,
//! which route, why), built from the pipeline's own types so that `observability` stays a
//! leaf the other modules can use.

use super::policy::Admission;
use super::rejection::Rejection;
use super::Denial;
use crate::auth::{AuthMethod, Principal};
use crate::observability::Outcome;

pub fn admitted(admission: &Admission) -> Outcome {
    let principal = admission.principal();
    let (verdict, decision) = match admission {
        Admission::Granted(_) => ("allow", "allowed"),
        Admission::Public(_) => ("public", "public"),
        Admission::Preflight(_) => ("preflight", "preflight"),
    };
    Outcome {
        verdict,
        decision,
        route: Some(admission.route().id.clone()),
        subject: principal.map(|p| p.subject.clone()),
        auth_method: principal.map(|p| p.method.as_str()),
        key_id: principal.and_then(key_id),
        reason: None,
        forwarded: None,
        ..Outcome::default()
    }
}

pub fn rejected(denial: &Denial) -> Outcome {
    Outcome {
        verdict: "deny",
        decision: decision(&denial.rejection),
        route: denial.route.as_ref().map(|r| r.id.clone()),
        subject: denial.principal.as_ref().map(|p| p.subject.clone()),
        auth_method: denial.principal.as_ref().map(|p| p.method.as_str()),
        key_id: denial.principal.as_deref().and_then(key_id),
        reason: Some(denial.rejection.reason()),
        forwarded: None,
        ..Outcome::default()
    }
}

/// An API key's id (never the key): for API keys the principal's token id is the key's
/// configured `id`.
fn key_id(principal: &Principal) -> Option<String> {
    (principal.method == AuthMethod::ApiKey)
        .then(|| principal.token_id.clone())
        .flatten()
}

/// The bounded label of a refusal for the decisions metric.
fn decision(rejection: &Rejection) -> &'static str {
    match rejection {
        Rejection::MissingCredential(_) => "missing_credential",
        Rejection::MalformedCredential(..) | Rejection::InvalidToken(..) => "invalid_token",
        Rejection::InsufficientScope(_) => "insufficient_scope",
        Rejection::AccessDenied | Rejection::McpRefused { .. } => "denied_by_rule",
        Rejection::McpStepUp { .. } => "insufficient_scope",
        Rejection::SessionNotFound => "session_refused",
        Rejection::RateLimited { .. } => "rate_limited",
        Rejection::McpUnreadable(_)
        | Rejection::McpBodyTooLarge
        | Rejection::McpHeaderMismatch(_)
        | Rejection::McpUndetermined
        | Rejection::McpBodyNotOnPost => "refused_request",
        Rejection::VerifierUnavailable(..) => "verifier_unavailable",
        Rejection::SessionStoreUnavailable => "session_store_unavailable",
        Rejection::UserTokenMissing { .. } => "user_token_missing",
        Rejection::UserTokenUnavailable => "user_token_unavailable",
        Rejection::AmbiguousPath(_)
        | Rejection::NoRoute
        | Rejection::DuplicateHeader(_)
        | Rejection::MalformedHeader(_)
        | Rejection::MissingHost
        | Rejection::HostNotAllowed
        | Rejection::OriginNotAllowed
        | Rejection::MethodNotAllowed(_)
        | Rejection::HeadersTooLarge
        | Rejection::BodyTooLarge
        | Rejection::MalformedBody
        | Rejection::MalformedMessage(_)
        | Rejection::BodyTimeout => "refused_request",
        Rejection::UpstreamUnavailable
        | Rejection::UpstreamRefusedGateway
        | Rejection::UpstreamTimeout => "upstream_error",
    }
}
