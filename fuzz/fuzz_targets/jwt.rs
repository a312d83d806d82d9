//! JWT parts read before and after the signature check: `auth::jwt::{looks_like_jwt,
//! select_issuer, normalize_type}` (the unverified `iss` that picks whose keys to use),
//! `jsonwebtoken::decode_header`, and `auth::claims::ClaimMapping::extract` (claims →
//! identity, also used for introspection answers).
//!
//! Input: UTF-8 text, used both as a compact token and, when it is a JSON object, as a
//! claims set (so the fuzzer can mutate claims without base64 in the way).
//!
//! Properties:
//! - `looks_like_jwt` is exactly "three non-empty base64url segments", and such a token is
//!   always a valid bearer token;
//! - `decode_header` never panics;
//! - `select_issuer` picks an issuer only if the payload's `iss` (decoded independently)
//!   is that issuer's, and always picks it for a clean re-encoding of that payload;
//! - `extract` never panics; its strings are non-empty, scopes sorted and unique, groups
//!   without empty names, `exp` never rounded up, `aud` string kept whole; it depends only
//!   on the claims' JSON value (re-serialising them changes nothing, where serde_json
//!   gives the same value back).
//!
//! With `--features strict`, also the properties that fail on known findings: a payload
//! that is not a JSON object never selects an issuer (the unverified `iss` is also read
//! from a JSON array payload); an identity claim is never taken from a number that is not
//! an exact integer (floats are printed rounded: distinct subjects can collide).
#![no_main]

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use mcp_auth_gateway::auth::claims::ClaimMapping;
use mcp_auth_gateway::auth::jwks::{KeySet, KeySource};
use mcp_auth_gateway::auth::jwt::{looks_like_jwt, normalize_type, select_issuer, Issuer};
use mcp_auth_gateway::pipeline::credential::{parse_bearer, Parsed};
use serde_json::{Map, Value};

// The findings this gated are fixed (docs/fuzzing.md, "Fixed findings"): always checked.
const STRICT: bool = true;

fn mapping(dotted: bool) -> ClaimMapping {
    if dotted {
        ClaimMapping {
            subject: "user.id".into(),
            name: "profile.name".into(),
            email: "email".into(),
            groups: "realm_access.roles".into(),
            scope: "scp".into(),
            client_id: "client.id".into(),
        }
    } else {
        ClaimMapping {
            subject: "sub".into(),
            name: "name".into(),
            email: "email".into(),
            groups: "groups".into(),
            scope: "scope".into(),
            client_id: "client_id".into(),
        }
    }
}

fn issuer(iss: &str) -> Arc<Issuer> {
    Arc::new(Issuer::new(
        0,
        "fuzz".into(),
        iss.into(),
        vec![Algorithm::ES256],
        Vec::new(),
        vec!["jwt".into(), "at+jwt".into()],
        60,
        mapping(false),
        KeySource::Static(KeySet::default()),
    ))
}

fn b64url_segment(s: &str) -> bool {
    !s.is_empty()
        && s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_shape(token: &str) {
    let parts: Vec<&str> = token.split('.').collect();
    let shaped = parts.len() == 3 && parts.iter().all(|p| b64url_segment(p));
    assert_eq!(looks_like_jwt(token), shaped, "looks_like_jwt({token:?})");
    if shaped {
        assert_eq!(
            parse_bearer(&format!("Bearer {token}"), usize::MAX),
            Parsed::Token(token),
            "a JWT-shaped token is not a bearer token: {token:?}"
        );
    }
}

/// The payload segment as JSON, decoded without the gateway's code.
fn payload(token: &str) -> Option<Value> {
    let segment = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn check_issuer_selection(token: &str) {
    let payload = payload(token);
    let iss = payload
        .as_ref()
        .and_then(|p| p.get("iss"))
        .and_then(Value::as_str);
    let candidate = iss.unwrap_or("https://idp.example");
    let issuers = [issuer("https://other.example"), issuer(candidate)];
    if let Ok(selected) = select_issuer(token, &issuers) {
        let object = payload.as_ref().is_some_and(Value::is_object);
        if object || STRICT {
            assert!(object, "{token:?}: an issuer selected by a non-object payload");
            assert_eq!(
                Some(selected.issuer.as_str()),
                iss,
                "{token:?}: selected an issuer the payload does not name"
            );
        }
    }
    // A clean encoding of an object payload naming an issuer always selects it.
    if let (Some(Value::Object(claims)), Some(iss)) = (&payload, iss) {
        let clean = format!(
            "e30.{}.c2ln",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("serialise"))
        );
        let selected = select_issuer(&clean, &issuers)
            .unwrap_or_else(|e| panic!("{clean:?}: no issuer selected for iss {iss:?}: {e:?}"));
        assert_eq!(selected.issuer, iss);
    }
}

fn check_extract(claims: &Map<String, Value>) {
    for dotted in [false, true] {
        let mapping = mapping(dotted);
        let got = mapping.extract(claims);
        for (what, value) in [
            ("subject", &got.subject),
            ("name", &got.name),
            ("email", &got.email),
            ("client_id", &got.client_id),
            ("token_id", &got.token_id),
            ("issuer", &got.issuer),
        ] {
            if let Some(value) = value {
                assert!(!value.is_empty(), "empty {what} from {claims:?}");
            }
        }
        assert!(
            got.scopes.windows(2).all(|w| w[0] < w[1]),
            "scopes not sorted and unique: {:?}",
            got.scopes
        );
        assert!(got.scopes.iter().all(|s| !s.is_empty()), "empty scope");
        assert!(got.groups.iter().all(|g| !g.is_empty()), "empty group");
        if let Some(Value::String(aud)) = claims.get("aud") {
            assert_eq!(got.audiences, [aud.clone()], "aud string not kept whole");
        }
        match claims.get("exp") {
            Some(exp) if exp.as_u64().is_some() => assert_eq!(got.expires_at, exp.as_u64()),
            Some(exp) => match (exp.as_f64(), got.expires_at) {
                (Some(f), Some(at)) => assert!(f >= 0.0 && (at as f64) <= f, "exp {f} -> {at}"),
                (Some(f), None) => assert!(f < 0.0 || f.is_nan(), "exp {f} dropped"),
                (None, at) => assert_eq!(at, None, "exp {exp:?} -> {at:?}"),
            },
            None => assert_eq!(got.expires_at, None),
        }
        // Only the JSON value matters, not how it was written. (serde_json parses floats
        // without exact round-trip, so a re-serialised float may come back as another
        // value; only compare when it came back equal.)
        let text = serde_json::to_string(claims).expect("serialise claims");
        let again: Map<String, Value> = serde_json::from_str(&text).expect("reparse claims");
        if again == *claims {
            assert_eq!(mapping.extract(&again), got, "extract is not a function of the value");
        }
        // Known finding: a numeric identity claim outside the integer range is read as a
        // float and printed rounded, so distinct subjects can collide
        // (10000000000000000000001 and 10000000000000000000000 both become "1e+22").
        if STRICT && !dotted {
            for (claim, value) in [
                ("sub", &got.subject),
                ("name", &got.name),
                ("email", &got.email),
                ("client_id", &got.client_id),
                ("jti", &got.token_id),
            ] {
                if let (Some(Value::Number(n)), Some(_)) = (claims.get(claim), value) {
                    assert!(
                        n.is_u64() || n.is_i64(),
                        "{claim} {n} taken from an inexact number as {value:?}"
                    );
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_shape(text);
    let _ = jsonwebtoken::decode_header(text);
    check_issuer_selection(text);
    if let Some(Value::Object(claims)) = payload(text) {
        check_extract(&claims);
    }
    if let Ok(claims) = serde_json::from_str::<Map<String, Value>>(text) {
        check_extract(&claims);
    }

    let normalized = normalize_type(text);
    assert_eq!(normalized, normalized.to_ascii_lowercase());
    assert!(text.len() >= normalized.len());
});
