//! Static API keys. The configuration holds `sha256:<base64url>` hashes; a presented key is
//! hashed once and compared against every stored hash in constant time, without an early
//! exit, so timing reveals neither which key matched nor how much of it.

use std::sync::Arc;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::Principal;

const HASH_PREFIX: &str = "sha256:";

/// One configured key: its id (for logs) and the principal it stands for.
#[derive(Debug)]
pub struct ApiKey {
    pub id: String,
    hash: [u8; 32],
    principal: Arc<Principal>,
}

impl ApiKey {
    pub fn new(id: String, hash: [u8; 32], principal: Principal) -> Self {
        Self {
            id,
            hash,
            principal: Arc::new(principal),
        }
    }
}

#[derive(Debug, Default)]
pub struct ApiKeyStore {
    keys: Vec<ApiKey>,
}

impl ApiKeyStore {
    pub fn new(keys: Vec<ApiKey>) -> Self {
        Self { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Finds the key whose hash equals `digest` (the SHA-256 of the presented token).
    pub fn verify(&self, digest: &[u8; 32]) -> Option<Arc<Principal>> {
        let mut found = None;
        for key in &self.keys {
            if verify_slices_are_equal(&key.hash, digest).is_ok() {
                found = Some(key.principal.clone());
            }
        }
        found
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

/// `sha256:<base64url, no padding>` — the form stored in the configuration.
pub fn format_hash(hash: &[u8; 32]) -> String {
    format!("{HASH_PREFIX}{}", URL_SAFE_NO_PAD.encode(hash))
}

/// Parses a stored hash; accepts base64url (padded or not) or lowercase hex after `sha256:`.
pub fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let body = text.strip_prefix(HASH_PREFIX).ok_or_else(|| {
        format!("{text:?} is not a key hash: expected \"sha256:…\" as printed by `mcp-auth-gateway hash-key`")
    })?;
    let bytes = if body.len() == 64 && body.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&body[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| e.to_string())?
    } else {
        URL_SAFE_NO_PAD
            .decode(body.trim_end_matches('='))
            .map_err(|e| format!("invalid base64url in key hash: {e}"))?
    };
    bytes
        .try_into()
        .map_err(|_| "a sha256 key hash must decode to 32 bytes".to_string())
}

/// A new random API key: 32 bytes from the system CSPRNG, base64url without padding.
pub fn generate_key() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system random number generator failed".to_string())?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthMethod, VerifierId};

    fn principal(subject: &str) -> Principal {
        Principal {
            subject: subject.into(),
            name: None,
            email: None,
            groups: vec![],
            scopes: vec![],
            client_id: None,
            token_id: None,
            issuer: None,
            method: AuthMethod::ApiKey,
            verifier: VerifierId::ApiKeys,
            audiences: None,
            issuer_audience_matched: false,
            expires_at: None,
            tools: None,
            identity_values: Default::default(),
        }
    }

    #[test]
    fn hash_round_trip_and_lookup() {
        let key = generate_key().unwrap();
        assert_eq!(key.len(), 43);
        let hash = sha256(key.as_bytes());
        assert_eq!(parse_hash(&format_hash(&hash)).unwrap(), hash);
        let store = ApiKeyStore::new(vec![
            ApiKey::new("a".into(), sha256(b"other"), principal("other")),
            ApiKey::new("b".into(), hash, principal("me")),
        ]);
        assert_eq!(store.verify(&hash).unwrap().subject, "me");
        assert!(store.verify(&sha256(b"nope")).is_none());
    }

    #[test]
    fn parse_hash_rejects_bad_input() {
        for bad in [
            "",
            "md5:abc",
            "sha256:",
            "sha256:!!!!",
            "sha256:AAAA",
            "CQ0VSMnWX0E6",
        ] {
            assert!(parse_hash(bad).is_err(), "{bad}");
        }
        let hex = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(parse_hash(&hex).unwrap(), [0xab; 32]);
    }
}
