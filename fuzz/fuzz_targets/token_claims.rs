//! Claims → principal: the two pure functions that turn untrusted claims into a `Principal`:
//! - `auth::jwt::Issuer::principal` (verified JWT claims → principal);
//! - `auth::introspection::Introspector::principal` (RFC 7662 answer → principal; the answer
//!   comes from the network).
//!
//! Input: UTF-8 text that is a JSON object (claims, or an introspection answer).
//!
//! Properties: never panics, and on `Ok(principal)`:
//! - JWT: the subject is the mapped claim, non-empty; the issuer is the configured one;
//!   method `jwt`; audiences are the canonical forms of `aud`; `issuer_audience_matched`
//!   is exactly "a token audience equals a configured one";
//! - introspection: `active` was `true`; `token_type`, when a string, names an access
//!   token; a configured issuer matched `iss`; the cache horizon is in the future, never
//!   past `exp` nor `now + cache_ttl`; a required audience is present;
//! - either way, if `representable` accepts the principal its identity headers are valid.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use mcp_auth_gateway::auth::audience;
use mcp_auth_gateway::auth::claims::ClaimMapping;
use mcp_auth_gateway::auth::introspection::{IntrospectionGuards, Introspector};
use mcp_auth_gateway::auth::jwks::{KeySet, KeySource};
use mcp_auth_gateway::auth::jwt::Issuer;
use mcp_auth_gateway::auth::principal::now_unix;
use mcp_auth_gateway::auth::{AuthMethod, Principal};
use mcp_auth_gateway::config::secret::Secret;
use mcp_auth_gateway::pipeline::identity::{encode_list, representable};
use serde_json::{Map, Value};

const CACHE_TTL: Duration = Duration::from_secs(60);

fn mapping() -> ClaimMapping {
    ClaimMapping {
        subject: "sub".into(),
        name: "name".into(),
        email: "email".into(),
        groups: "realm_access.roles".into(),
        scope: "scope".into(),
        client_id: "client_id".into(),
    }
}

fn issuer() -> Issuer {
    Issuer::new(
        0,
        "fuzz".into(),
        "https://idp.example".into(),
        vec![Algorithm::ES256],
        vec![audience::canonical("https://GW.example.com/mcp/")],
        vec!["jwt".into()],
        60,
        mapping(),
        KeySource::Static(KeySet::default()),
    )
}

fn introspector(require_audience: bool) -> Introspector {
    let tls = mcp_auth_gateway::outbound::tls_config(Vec::new()).expect("tls");
    Introspector::new(
        0,
        "fuzz".into(),
        "https://idp.example/introspect".parse().expect("uri"),
        "gateway",
        &Secret::new("secret".into()),
        Some("https://idp.example".into()),
        vec![audience::canonical("https://gw.example.com/mcp")],
        require_audience,
        CACHE_TTL,
        Duration::from_secs(5),
        mapping(),
        mcp_auth_gateway::outbound::client(
            Duration::from_secs(1),
            tls,
            mcp_auth_gateway::outbound::ProxyRules::default(),
        ),
        IntrospectionGuards {
            negative_cache_ttl: Duration::ZERO,
            max_concurrent: 1,
        },
    )
    .expect("introspector")
}

fn check_headers(principal: &Principal) {
    if representable(principal).is_err() {
        return;
    }
    for value in [
        Some(&principal.subject),
        principal.name.as_ref(),
        principal.email.as_ref(),
        principal.client_id.as_ref(),
        principal.token_id.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(http::HeaderValue::from_bytes(value.as_bytes()).is_ok(), "{value:?}");
    }
    assert!(http::HeaderValue::from_bytes(encode_list(&principal.groups).as_bytes()).is_ok());
    assert!(http::HeaderValue::from_str(&principal.scopes.join(" ")).is_ok());
}

/// Built once: an introspector carries an HTTP client and TLS roots.
fn verifiers() -> &'static (Issuer, [Introspector; 2]) {
    static VERIFIERS: OnceLock<(Issuer, [Introspector; 2])> = OnceLock::new();
    VERIFIERS.get_or_init(|| (issuer(), [introspector(true), introspector(false)]))
}

fn check_jwt(claims: &Map<String, Value>) {
    let issuer = &verifiers().0;
    let Ok(principal) = issuer.principal(claims) else {
        return;
    };
    let extracted = issuer.claims.extract(claims);
    assert_eq!(Some(&principal.subject), extracted.subject.as_ref());
    assert!(!principal.subject.is_empty());
    assert_eq!(principal.issuer.as_deref(), Some("https://idp.example"));
    assert_eq!(principal.method, AuthMethod::Jwt);
    let audiences: Vec<String> = extracted
        .audiences
        .iter()
        .map(|a| audience::canonical(a))
        .collect();
    assert_eq!(principal.audiences.as_ref(), Some(&audiences));
    assert_eq!(
        principal.issuer_audience_matched,
        audiences.iter().any(|a| issuer.audiences.contains(a))
    );
    check_headers(&principal);
}

fn check_introspection(answer: &Map<String, Value>) {
    for introspector in &verifiers().1 {
        let require_audience = introspector.require_audience;
        let before = now_unix();
        let Ok(principal) = introspector.principal(answer) else {
            continue;
        };
        let after = now_unix();
        assert_eq!(answer.get("active"), Some(&Value::Bool(true)), "inactive accepted");
        if let Some(kind) = answer.get("token_type").and_then(Value::as_str) {
            assert!(
                matches!(
                    kind.to_ascii_lowercase().as_str(),
                    "access_token" | "bearer" | "urn:ietf:params:oauth:token-type:access_token"
                ),
                "token_type {kind:?} accepted"
            );
        }
        assert_eq!(principal.issuer.as_deref(), Some("https://idp.example"));
        assert_eq!(principal.method, AuthMethod::Introspection);
        let horizon = principal.expires_at.expect("an introspected principal has a horizon");
        assert!(horizon > before, "accepted at or past its expiry: {horizon} <= {before}");
        assert!(horizon <= after + CACHE_TTL.as_secs(), "horizon past cache_ttl");
        let extracted = introspector.claims.extract(answer);
        if let Some(exp) = extracted.expires_at {
            assert!(horizon <= exp, "horizon past exp");
        }
        if require_audience {
            assert!(
                principal.audiences.as_ref().is_some_and(|a| !a.is_empty()),
                "no audience but required"
            );
        }
        check_headers(&principal);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(claims) = serde_json::from_slice::<Map<String, Value>>(data) else {
        return;
    };
    check_jwt(&claims);
    check_introspection(&claims);
});
