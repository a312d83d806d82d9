//! `auth::jwks::KeySet::from_jwks`: a JWKS document as fetched from an issuer's `jwks_uri`
//! (remote, so untrusted: a compromised or spoofed endpoint, a hostile proxy).
//!
//! Input: the first two bytes (little-endian) choose the allowed algorithms, one bit each
//! from the lowest: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA (so
//! `\xff\x01` allows all nine); the rest is the document.
//!
//! Properties: never panics, and
//! - `Ok` only for a JSON document with a `keys` array, `Err` otherwise;
//! - at most 64 keys, never more than the document lists;
//! - no algorithm allowed → no key; only symmetric (`oct`) keys → no key;
//! - a key is offered only for allowed algorithms, and with a `kid` only for tokens with
//!   that `kid` or none.
#![no_main]

use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use mcp_auth_gateway::auth::jwks::KeySet;
use serde_json::Value;

const ALL: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn allowed(mask: u16) -> Vec<Algorithm> {
    (0..ALL.len())
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| ALL[i])
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let [low, high, document @ ..] = data else {
        return;
    };
    let allowed = allowed(u16::from_le_bytes([*low, *high]));
    let result = KeySet::from_jwks(document, &allowed);

    let parsed: Option<Value> = serde_json::from_slice(document).ok();
    let entries = parsed
        .as_ref()
        .and_then(|d| d.get("keys"))
        .and_then(Value::as_array);
    let set = match (result, entries) {
        (Ok(set), Some(entries)) => (set, entries),
        (Err(_), None) => return,
        (Ok(_), None) => panic!("accepted a document without a keys array"),
        (Err(e), Some(_)) => panic!("refused a document with a keys array: {e}"),
    };
    let (set, entries) = set;

    assert!(set.len() <= 64, "{} keys", set.len());
    assert!(set.len() <= entries.len(), "more keys than entries");
    if allowed.is_empty() {
        assert!(set.is_empty(), "keys without any allowed algorithm");
    }
    let all_oct = entries
        .iter()
        .all(|e| e.get("kty").and_then(Value::as_str) == Some("oct"));
    if all_oct {
        assert!(set.is_empty(), "a symmetric key was kept");
    }
    let kids: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.get("kid").and_then(Value::as_str))
        .collect();

    for alg in ALL {
        let offered = set.candidates(None, alg).count();
        if !allowed.contains(&alg) {
            assert_eq!(offered, 0, "{alg:?} is not allowed but has keys");
        }
        assert!(offered <= set.len());
        // With a kid that no entry has, only keys without a kid can be offered.
        let unknown = "\u{0}fuzz-no-such-kid";
        if !kids.contains(&unknown) {
            let keyless = entries
                .iter()
                .filter(|e| e.get("kid").is_none_or(Value::is_null))
                .count();
            assert!(
                set.candidates(Some(unknown), alg).count() <= keyless,
                "a key with another kid was offered"
            );
        }
        for kid in &kids {
            assert!(set.candidates(Some(kid), alg).count() <= offered);
        }
    }
});
