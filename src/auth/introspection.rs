//! Opaque tokens, verified by OAuth 2.0 Token Introspection (RFC 7662).
//!
//! The gateway authenticates to the endpoint with its own client credentials
//! (`client_secret_basic`, RFC 6749 §2.3.1). An answer counts only if `active` is true, the
//! `iss` matches when one is configured and, unless disabled, the token carries an audience
//! (checked per route like a JWT's). Positive answers are cached by token hash until the
//! smaller of `exp` and `cache_ttl` — a revoked token keeps working for up to that TTL.
//!
//! Every call is an outbound request with the gateway's secret, so junk tokens must not turn
//! the gateway into an amplifier: tokens the endpoint called inactive are remembered for
//! `negative_cache_ttl` (bounded entries), at most `max_concurrent` calls run at once per
//! endpoint (a caller waits up to `timeout` for a turn, then gets 503), and JWTs of a
//! configured JWT issuer never reach introspection (`auth::Verifiers`).

use std::time::Duration;

use moka::future::Cache;

use crate::observability::metrics::METRICS;
use tokio::sync::Semaphore;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{header, HeaderValue, Request, Uri};
use serde_json::{Map, Value};

use super::audience;
use super::claims::ClaimMapping;
use super::principal::now_unix;
use super::{AuthMethod, Principal, VerifierId, VerifyError};
use crate::body;
use crate::outbound::{self, HttpClient};
use crate::secret::Secret;

const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Tokens remembered as inactive, per endpoint.
const NEGATIVE_CACHE_ENTRIES: u64 = 10_000;
/// Endpoint failures, logged at most every 10 s (a flood of tokens must not become a flood
/// of log lines).
static FAILURES: crate::observability::Throttle =
    crate::observability::Throttle::new(Duration::from_secs(10));

/// How an introspector protects its endpoint (and the gateway) from a flood of junk tokens.
#[derive(Debug, Clone, Copy)]
pub struct IntrospectionGuards {
    /// How long an "inactive" answer is remembered; zero = not at all.
    pub negative_cache_ttl: Duration,
    /// Calls in flight at once.
    pub max_concurrent: usize,
}

pub struct Introspector {
    pub index: usize,
    pub id: String,
    pub endpoint: Uri,
    authorization: HeaderValue,
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub require_audience: bool,
    pub cache_ttl: Duration,
    pub timeout: Duration,
    pub claims: ClaimMapping,
    client: HttpClient,
    /// SHA-256 of tokens the endpoint called inactive (or refused as not ours).
    inactive: Option<Cache<[u8; 32], ()>>,
    turns: Semaphore,
    /// Outbound calls made (for tests and metrics).
    calls: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("id", &self.id)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Introspector {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        id: String,
        endpoint: Uri,
        client_id: &str,
        client_secret: &Secret,
        issuer: Option<String>,
        audiences: Vec<String>,
        require_audience: bool,
        cache_ttl: Duration,
        timeout: Duration,
        claims: ClaimMapping,
        client: HttpClient,
        guards: IntrospectionGuards,
    ) -> Result<Self, String> {
        // RFC 6749 §2.3.1: form-encode each part before joining and base64-encoding.
        let credentials = format!(
            "{}:{}",
            form_encode(client_id),
            form_encode(client_secret.expose())
        );
        let mut authorization =
            HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(credentials)))
                .map_err(|_| "client credentials do not form a valid header".to_string())?;
        authorization.set_sensitive(true);
        Ok(Self {
            index,
            id,
            endpoint,
            authorization,
            issuer,
            audiences,
            require_audience,
            cache_ttl,
            timeout,
            claims,
            client,
            inactive: (!guards.negative_cache_ttl.is_zero()).then(|| {
                Cache::builder()
                    .max_capacity(NEGATIVE_CACHE_ENTRIES)
                    .time_to_live(guards.negative_cache_ttl)
                    .build()
            }),
            turns: Semaphore::new(guards.max_concurrent.max(1)),
            calls: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Outbound introspection calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn introspect(&self, token: &str) -> Result<Principal, VerifyError> {
        let digest = super::api_key::sha256(token.as_bytes());
        if let Some(inactive) = &self.inactive {
            if inactive.contains_key(&digest) {
                METRICS.introspection(&self.id, "cached_inactive");
                return Err(VerifyError::Invalid("token is not active"));
            }
        }
        let Ok(Ok(_turn)) = tokio::time::timeout(self.timeout, self.turns.acquire()).await else {
            static BUSY: crate::observability::Throttle =
                crate::observability::Throttle::new(Duration::from_secs(10));
            if let Some(suppressed) = BUSY.allow() {
                tracing::warn!(introspection = %self.id, suppressed,
                    "introspection calls at their limit; refusing (logged at most every 10 s)");
            }
            METRICS.introspection(&self.id, "busy");
            return Err(VerifyError::Unavailable("introspection endpoint busy"));
        };
        let result = self.call(token).await;
        METRICS.introspection(
            &self.id,
            match &result {
                Ok(_) => "active",
                Err(VerifyError::Invalid(_)) => "inactive",
                Err(VerifyError::Unavailable(_)) => "unavailable",
            },
        );
        if let (Err(VerifyError::Invalid(_)), Some(inactive)) = (&result, &self.inactive) {
            inactive.insert(digest, ()).await;
        }
        result
    }

    async fn call(&self, token: &str) -> Result<Principal, VerifyError> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let form = format!("token={}&token_type_hint=access_token", form_encode(token));
        let request = Request::post(self.endpoint.clone())
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(body::full(form))
            .map_err(|_| VerifyError::Unavailable("introspection request could not be built"))?;
        let fetched = outbound::fetch(&self.client, request, MAX_RESPONSE_BYTES, self.timeout)
            .await
            .map_err(|e| {
                if let Some(suppressed) = FAILURES.allow() {
                    tracing::warn!(introspection = %self.id, error = %e, suppressed,
                        "introspection failed (logged at most every 10 s)");
                }
                VerifyError::Unavailable("introspection endpoint unavailable")
            })?;
        if !fetched.status.is_success() {
            if let Some(suppressed) = FAILURES.allow() {
                tracing::warn!(introspection = %self.id, status = %fetched.status, suppressed,
                    "introspection endpoint refused the request (logged at most every 10 s)");
            }
            return Err(VerifyError::Unavailable(
                "introspection endpoint unavailable",
            ));
        }
        let answer: Map<String, Value> = serde_json::from_slice(&fetched.body)
            .map_err(|_| VerifyError::Unavailable("introspection answer is not JSON"))?;
        self.principal(&answer)
    }

    pub fn principal(&self, answer: &Map<String, Value>) -> Result<Principal, VerifyError> {
        if answer.get("active") != Some(&Value::Bool(true)) {
            return Err(VerifyError::Invalid("token is not active"));
        }
        // An active refresh token is not an access token (`token_type_hint` is only a hint).
        if let Some(kind) = answer.get("token_type").and_then(Value::as_str) {
            let kind = kind.to_ascii_lowercase();
            if !matches!(
                kind.as_str(),
                "access_token" | "bearer" | "urn:ietf:params:oauth:token-type:access_token"
            ) {
                return Err(VerifyError::Invalid("not an access token"));
            }
        }
        let extracted = self.claims.extract(answer);
        if let Some(expected) = &self.issuer {
            if extracted.issuer.as_deref() != Some(expected.as_str()) {
                return Err(VerifyError::Invalid("untrusted issuer"));
            }
        }
        let now = now_unix();
        if extracted.expires_at.is_some_and(|exp| exp <= now) {
            return Err(VerifyError::Invalid("token expired"));
        }
        if self.require_audience && extracted.audiences.is_empty() {
            return Err(VerifyError::Invalid("token has no audience"));
        }
        let subject = extracted
            .subject
            .or_else(|| {
                answer
                    .get("username")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .ok_or(VerifyError::Invalid("token has no subject"))?;
        let audiences: Vec<String> = extracted
            .audiences
            .iter()
            .map(|a| audience::canonical(a))
            .collect();
        let ttl_end = now + self.cache_ttl.as_secs();
        Ok(Principal {
            subject,
            name: extracted.name,
            email: extracted.email,
            groups: extracted.groups,
            scopes: extracted.scopes,
            client_id: extracted.client_id,
            token_id: extracted.token_id,
            issuer: extracted.issuer,
            method: AuthMethod::Introspection,
            verifier: VerifierId::Introspection(self.index),
            issuer_audience_matched: audience::any_covers(&audiences, &self.audiences),
            audiences: (self.require_audience || !audiences.is_empty()).then_some(audiences),
            // Cache horizon: the token's own expiry or the configured TTL, whichever is first.
            expires_at: Some(extracted.expires_at.map_or(ttl_end, |exp| exp.min(ttl_end))),
            tools: None,
            identity_values: Default::default(),
        })
    }
}

/// `application/x-www-form-urlencoded` for one value: unreserved characters stay, the rest
/// is percent-encoded.
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::form_encode;

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("a b+c/d=é"), "a%20b%2Bc%2Fd%3D%C3%A9");
        assert_eq!(form_encode("abc-._~"), "abc-._~");
    }
}
