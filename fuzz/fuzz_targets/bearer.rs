//! `pipeline::credential::{parse_bearer, query_has_token}`: the credential phase (4).
//!
//! Input: the first byte picks the token size limit, the rest (UTF-8) is both an
//! `Authorization` value and a query string.
//!
//! Properties:
//! - `parse_bearer` never panics and its verdict matches the grammar: `Token(t)` exactly
//!   when the value is `Bearer` (any case) + one space + a non-empty RFC 6750 `b64token`
//!   of at most the limit, `t` being that suffix of the input; `OtherScheme` exactly when
//!   the scheme is not `Bearer`; `Empty` when only whitespace follows; the scheme's case
//!   never matters;
//! - `query_has_token`: finds `access_token` / `token` however a framework would spell it
//!   (percent-encoded, `+`, case, `[]`, PHP's `.`/space for `_`), is unaffected by ASCII
//!   case, and adding parameters before or after never hides a token.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_auth_gateway::pipeline::credential::{parse_bearer, query_has_token, Parsed};

fn b64token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

/// RFC 6750 §2.1 `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`,
/// written independently of the gateway's version.
fn is_b64token(token: &[u8]) -> bool {
    let body_len = token.iter().take_while(|&&b| b64token_char(b)).count();
    body_len > 0 && token[body_len..].iter().all(|&b| b == b'=')
}

fn check_bearer(value: &str, max: usize) {
    let parsed = parse_bearer(value, max);
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let is_bearer = scheme.eq_ignore_ascii_case("bearer");
    match &parsed {
        Parsed::Token(token) => {
            assert!(is_bearer, "{value:?}: token without the Bearer scheme");
            assert_eq!(*token, rest, "{value:?}: token is not the rest of the value");
            assert!(value.ends_with(token), "{value:?}: token is not a suffix");
            assert_eq!(value.len(), token.len() + "bearer ".len());
            assert!(!token.is_empty() && token.len() <= max, "{value:?}: size {max}");
            assert!(is_b64token(token.as_bytes()), "{value:?}: not a b64token");
        }
        Parsed::OtherScheme => assert!(!is_bearer, "{value:?} is Bearer"),
        Parsed::Empty => {
            assert!(is_bearer && rest.trim().is_empty(), "{value:?} is not empty")
        }
        Parsed::Invalid(_) => {
            assert!(is_bearer && !rest.trim().is_empty(), "{value:?}");
            // Refused only for a reason: too long or not a b64token.
            assert!(
                rest.len() > max || !is_b64token(rest.as_bytes()),
                "{value:?} (limit {max}) refused but valid"
            );
        }
    }

    // The scheme is case-insensitive; nothing else changes with its spelling.
    if is_bearer {
        for spelling in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let respelled = format!("{spelling}{}", &value[scheme.len()..]);
            let again = parse_bearer(&respelled, max);
            match (&parsed, &again) {
                (Parsed::Token(a), Parsed::Token(b)) => assert_eq!(a, b),
                (a, b) => assert_eq!(
                    std::mem::discriminant(a),
                    std::mem::discriminant(b),
                    "{value:?} vs {respelled:?}"
                ),
            }
        }
    }
}

fn check_query(query: &str) {
    let has = query_has_token(query);
    assert_eq!(
        has,
        query_has_token(&query.to_ascii_uppercase()),
        "{query:?}: case matters"
    );
    assert_eq!(
        has,
        query_has_token(&query.to_ascii_lowercase()),
        "{query:?}: case matters"
    );
    if has {
        for wider in [
            format!("a=1&{query}"),
            format!("{query}&a=1"),
            format!("a=1;{query}"),
            format!("{query};b"),
        ] {
            assert!(query_has_token(&wider), "{query:?} found, {wider:?} not");
        }
    }
    // However it is spelled, an added token parameter is found.
    for param in [
        "access_token=x",
        "token",
        "ACCESS_TOKEN=x",
        "acc%65ss_token=x",
        "access%5Ftoken=x",
        "%61%63%63%65%73%73%5f%74%6f%6b%65%6e=x",
        "access_token[]=x",
        "+token+=x",
        "%20token=x",
        "Token[a]=x",
        "access.token=x",
        "access+token=x",
    ] {
        for joined in [format!("{query}&{param}"), format!("{param}&{query}"), format!("{query};{param}")] {
            assert!(query_has_token(&joined), "token missed in {joined:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // Small limits reach the size check; the real floor is 64.
    let max = match first % 4 {
        0 => usize::from(first / 4),
        1 => 64,
        2 => 4096,
        _ => usize::MAX,
    };
    check_bearer(text, max);
    check_query(text);
});
