//! Phase 4 — Credential: exactly one `Authorization: Bearer <token>` (RFC 6750 §2.1).
//!
//! - no `Authorization`, or another scheme → "no credentials" (401 without `error`);
//! - two `Authorization` headers, `Bearer` without a token, a token in the query string
//!   (forbidden by the MCP authorization spec) → 400 `invalid_request`;
//! - a token that is not `b64token` syntax or longer than the limit → 401 `invalid_token`.

use http::header;

use super::rejection::Rejection;
use super::request::RequestView;
use crate::model::route::Route;

/// Query parameters that would carry a token (RFC 6750 §2.3, and a common variant).
const QUERY_TOKEN_PARAMS: [&str; 2] = ["access_token", "token"];

/// What the credential phase found.
pub enum Credential<'a> {
    Bearer(&'a str),
    Missing,
}

/// Refuses a token in the query string (MCP authorization: tokens only in the header).
pub fn refuse_query_token(request: &RequestView<'_>, route: &Route) -> Result<(), Rejection> {
    match request.query {
        Some(query) if query_has_token(query) => Err(Rejection::MalformedCredential(
            route.challenge.clone(),
            "access tokens are not accepted in the query string",
        )),
        _ => Ok(()),
    }
}

pub fn extract<'a>(
    request: &RequestView<'a>,
    route: &Route,
    max_token_bytes: usize,
) -> Result<Credential<'a>, Rejection> {
    refuse_query_token(request, route)?;
    let mut values = request.headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(Credential::Missing);
    };
    if values.next().is_some() {
        return Err(Rejection::MalformedCredential(
            route.challenge.clone(),
            "more than one Authorization header",
        ));
    }
    let Ok(value) = value.to_str() else {
        return Err(Rejection::InvalidToken(
            route.challenge.clone(),
            "malformed token",
        ));
    };
    match parse_bearer(value, max_token_bytes) {
        Parsed::Token(token) => Ok(Credential::Bearer(token)),
        Parsed::OtherScheme => Ok(Credential::Missing),
        Parsed::Empty => Err(Rejection::MalformedCredential(
            route.challenge.clone(),
            "Bearer without a token",
        )),
        Parsed::Invalid(reason) => Err(Rejection::InvalidToken(route.challenge.clone(), reason)),
    }
}

/// One `Authorization` value, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    Token(&'a str),
    OtherScheme,
    Empty,
    Invalid(&'static str),
}

/// Parses one `Authorization` value. The scheme is case-insensitive; exactly one space
/// separates it from the token (tolerating more would accept what RFC 6750 does not).
pub fn parse_bearer(value: &str, max_token_bytes: usize) -> Parsed<'_> {
    let (scheme, rest) = match value.split_once(' ') {
        Some(parts) => parts,
        None => (value, ""),
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Parsed::OtherScheme;
    }
    let token = rest;
    if token.trim().is_empty() {
        return Parsed::Empty;
    }
    if token.len() > max_token_bytes {
        return Parsed::Invalid("token too large");
    }
    if !is_b64token(token) {
        return Parsed::Invalid("malformed token");
    }
    Parsed::Token(token)
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    // Every request's token is checked, hundreds of bytes for a JWT: a fold without an early
    // exit over comparisons (no table) lets the compiler check 16 bytes at a time.
    !body.is_empty()
        && body
            .bytes()
            .fold(true, |valid, byte| valid & is_b64token_byte(byte))
}

fn is_b64token_byte(byte: u8) -> bool {
    let letter = (byte | 0x20).wrapping_sub(b'a') < 26;
    let digit = byte.wrapping_sub(b'0') < 10;
    letter
        | digit
        | (byte == b'-')
        | (byte == b'.')
        | (byte == b'_')
        | (byte == b'~')
        | (byte == b'+')
        | (byte == b'/')
}

/// Whether a query string carries a token parameter, as any upstream framework would read
/// it: parameters split on `&` and `;`, names percent-decoded (`acc%65ss_token`), `+` as a
/// space, case ignored, a PHP-style `[]` suffix ignored.
pub fn query_has_token(query: &str) -> bool {
    query.split(['&', ';']).any(|pair| {
        let raw_name = pair.split('=').next().unwrap_or("");
        let spaced = raw_name.replace('+', " ");
        let name = percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy();
        let name = name.trim();
        let name = name.split('[').next().unwrap_or("");
        // PHP reads `.`, ` ` and `[` in a parameter name as `_` (`access.token`).
        let mangled: String = name
            .chars()
            .map(|c| if matches!(c, '.' | ' ' | '[') { '_' } else { c })
            .collect();
        QUERY_TOKEN_PARAMS
            .iter()
            .any(|param| name.eq_ignore_ascii_case(param) || mangled.eq_ignore_ascii_case(param))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64token_bytes_are_exactly_rfc_6750s() {
        for byte in 0..=255u8 {
            let rfc = byte.is_ascii_alphanumeric() || b"-._~+/".contains(&byte);
            assert_eq!(is_b64token_byte(byte), rfc, "byte {byte:#04x}");
        }
    }

    #[test]
    fn bearer_table() {
        let cases = [
            (
                "Bearer abc.def-ghi_~+/==",
                Parsed::Token("abc.def-ghi_~+/=="),
            ),
            ("bearer abc", Parsed::Token("abc")),
            ("BEARER abc", Parsed::Token("abc")),
            ("Basic dXNlcjpwYXNz", Parsed::OtherScheme),
            ("DPoP abc", Parsed::OtherScheme),
            ("Bearerabc", Parsed::OtherScheme),
            ("Bearer", Parsed::Empty),
            ("Bearer ", Parsed::Empty),
            ("Bearer  abc", Parsed::Invalid("malformed token")),
            ("Bearer abc def", Parsed::Invalid("malformed token")),
            ("Bearer abc,def", Parsed::Invalid("malformed token")),
            ("Bearer ===", Parsed::Invalid("malformed token")),
            ("Bearer a=b", Parsed::Invalid("malformed token")),
            ("Bearer \"abc\"", Parsed::Invalid("malformed token")),
        ];
        for (input, want) in cases {
            assert_eq!(parse_bearer(input, 64), want, "{input:?}");
        }
        let long = format!("Bearer {}", "a".repeat(65));
        assert_eq!(parse_bearer(&long, 64), Parsed::Invalid("token too large"));
    }

    #[test]
    fn query_token_table() {
        assert!(query_has_token("access_token=abc"));
        assert!(query_has_token("a=1&ACCESS_TOKEN=abc"));
        assert!(query_has_token("token"));
        assert!(query_has_token("acc%65ss_token=abc"));
        assert!(query_has_token("a=1;access_token=abc"));
        assert!(query_has_token("access%5Ftoken=abc"));
        assert!(query_has_token("access_token[]=abc"));
        assert!(query_has_token("+token=abc"));
        assert!(query_has_token("access.token=abc"));
        assert!(query_has_token("access+token=abc"));
        assert!(!query_has_token("tokens=1&x=access_token"));
        assert!(!query_has_token(""));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Every byte of `name` spelled as a framework may decode it: as is, in another
        /// case, or percent-encoded.
        fn spellings(name: &'static str) -> impl Strategy<Value = String> {
            prop::collection::vec(0u8..3, name.len()).prop_map(move |choices| {
                name.bytes()
                    .zip(choices)
                    .map(|(b, choice)| match choice {
                        0 => (b as char).to_string(),
                        1 => (b as char).to_ascii_uppercase().to_string(),
                        _ => format!("%{b:02X}"),
                    })
                    .collect()
            })
        }

        proptest! {
            /// A token is exactly the bytes after `Bearer `, b64token syntax, within the
            /// limit; the scheme matches in any case.
            #[test]
            fn bearer_tokens_are_exact(value in "\\PC{0,80}", max in 1usize..64) {
                if let Parsed::Token(token) = parse_bearer(&value, max) {
                    prop_assert!(token.len() <= max);
                    prop_assert!(is_b64token(token));
                    prop_assert!(value.len() == token.len() + 7);
                    prop_assert!(value[..7].eq_ignore_ascii_case("bearer "));
                    prop_assert!(value.ends_with(token));
                }
            }

            #[test]
            fn every_b64token_round_trips(token in "[A-Za-z0-9._~+/-]{1,40}={0,2}", scheme in "[bB][eE][aA][rR][eE][rR]") {
                let value = format!("{scheme} {token}");
                prop_assert_eq!(parse_bearer(&value, 64), Parsed::Token(&token));
            }

            /// However the parameter name is spelled, and wherever it stands, it is found.
            #[test]
            fn query_tokens_are_found_in_any_spelling(
                name in prop_oneof![spellings("access_token"), spellings("token")],
                before in "[a-z0-9=&;]{0,12}",
                separator in prop::sample::select(vec!["&", ";"]),
                value in "[A-Za-z0-9]{0,8}",
            ) {
                let query = format!("{before}{separator}{name}={value}");
                prop_assert!(query_has_token(&query), "{}", query);
            }
        }
    }
}
