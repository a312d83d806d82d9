//! `pipeline::identity::{encode_list, decode_list, check_single, representable}` and
//! `model::identity::is_scope_token`: how a verified identity is written into upstream headers.
//!
//! Input: UTF-8 text split on NUL into items (claims taken from a token: group names,
//! scopes, single values). NUL is the separator, so it is the one control character not
//! tried inside an item; the encoder treats every ASCII control character alike.
//!
//! Properties:
//! - groups: for non-empty items, `decode_list(encode_list(items)) == items`; the encoded
//!   value is a plain-ASCII header value without control characters, `"` or `\`, with exactly
//!   `items.len() - 1` commas, and no element of it has whitespace at its ends (list
//!   parsers trim and drop those) nor is empty;
//! - `check_single(v)` Ok implies `v` is a valid header value read back byte for byte,
//!   without control characters and without RFC 9110 whitespace (SP / HTAB) at its ends;
//! - `is_scope_token(s)` implies `s` survives the space-joined scope header exactly;
//! - `representable(principal)` Ok implies subject, client id and token id are ASCII, and
//!   every header value the gateway would write for it is valid and reads back as the
//!   principal's identity.
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use mcp_auth_gateway::auth::{AuthMethod, Principal, VerifierId};
use mcp_auth_gateway::model::identity::is_scope_token;
use mcp_auth_gateway::pipeline::identity::{check_single, decode_list, encode_list, representable};

/// RFC 9110 optional whitespace.
const OWS: [char; 2] = [' ', '\t'];

fn check_groups(items: &[String]) {
    let encoded = encode_list(items);
    assert!(
        HeaderValue::from_bytes(encoded.as_bytes()).is_ok(),
        "encode_list({items:?}) = {encoded:?} is not a header value"
    );
    assert!(
        !encoded.bytes().any(|b| b.is_ascii_control()),
        "encode_list({items:?}) = {encoded:?} has a control character"
    );
    assert!(
        encoded.is_ascii() && !encoded.contains(['"', '\\']),
        "encode_list({items:?}) = {encoded:?}: not plain ASCII, or quotes a list parser reads"
    );
    assert_eq!(
        encoded.matches(',').count(),
        items.len().saturating_sub(1),
        "encode_list({items:?}) = {encoded:?}: commas inside items"
    );
    assert_eq!(
        encoded,
        encoded.trim_matches(OWS),
        "encode_list({items:?}): the header value would be trimmed"
    );
    if items.iter().all(|item| !item.is_empty()) && !items.is_empty() {
        for element in encoded.split(',') {
            assert!(!element.is_empty(), "encode_list({items:?}) = {encoded:?}");
            assert_eq!(
                element,
                element.trim_matches(OWS),
                "encode_list({items:?}) = {encoded:?}: a list parser would trim {element:?}"
            );
        }
    }
    assert_eq!(
        decode_list(&encoded),
        items,
        "groups do not round-trip through {encoded:?}"
    );
}

fn check_value(value: &str) {
    if check_single(value).is_err() {
        return;
    }
    let header = HeaderValue::from_bytes(value.as_bytes())
        .unwrap_or_else(|e| panic!("check_single accepted {value:?}, not a header value: {e}"));
    assert_eq!(header.as_bytes(), value.as_bytes());
    assert!(
        !value.bytes().any(|b| b.is_ascii_control()),
        "check_single accepted a control character: {value:?}"
    );
    assert_eq!(
        value,
        value.trim_matches(OWS),
        "check_single accepted whitespace at the ends: {value:?}"
    );
}

fn check_scope(scope: &str) {
    if !is_scope_token(scope) {
        return;
    }
    assert!(!scope.is_empty());
    assert!(
        scope.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'),
        "is_scope_token accepted {scope:?}"
    );
    let joined = format!("a {scope} b");
    let back: Vec<&str> = joined.split(' ').collect();
    assert_eq!(back, ["a", scope, "b"]);
    assert!(HeaderValue::from_str(&joined).is_ok());
}

fn check_principal(items: &[String]) {
    let get = |i: usize| items.get(i).cloned();
    let principal = Principal {
        subject: get(0).unwrap_or_default(),
        name: get(1),
        email: get(2),
        client_id: get(3),
        token_id: get(4),
        groups: items.iter().skip(5).step_by(2).cloned().collect(),
        scopes: items.iter().skip(6).step_by(2).cloned().collect(),
        issuer: None,
        method: AuthMethod::Jwt,
        verifier: VerifierId::Issuer(0),
        audiences: None,
        issuer_audience_matched: false,
        expires_at: None,
        tools: None,
        identity_values: Default::default(),
    };
    if representable(&principal).is_err() {
        return;
    }
    assert!(!principal.subject.is_empty());
    // Identifiers an upstream authorizes on read the same in any header charset.
    for id in [
        Some(&principal.subject),
        principal.client_id.as_ref(),
        principal.token_id.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(id.is_ascii(), "representable accepted the non-ASCII identifier {id:?}");
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
        check_value(value);
        assert!(check_single(value).is_ok());
    }
    let groups = encode_list(&principal.groups);
    assert!(HeaderValue::from_bytes(groups.as_bytes()).is_ok());
    assert_eq!(decode_list(&groups), principal.groups);
    let scopes = principal.scopes.join(" ");
    assert!(HeaderValue::from_str(&scopes).is_ok());
    let back: Vec<String> = scopes
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    assert_eq!(back, principal.scopes, "scopes do not round-trip");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let items: Vec<String> = text.split('\0').take(32).map(String::from).collect();

    let non_empty: Vec<String> = items.iter().filter(|s| !s.is_empty()).cloned().collect();
    check_groups(&non_empty);
    // Empty items in the middle of a list survive too; only a list of one empty item
    // cannot be told from no list (representable() refuses empty group names).
    if items.len() > 1 {
        check_groups(&items);
    }

    for item in &items {
        check_value(item);
        check_scope(item);
    }
    check_principal(&items);
});
