//! Encryption at rest for what must be stored readable again: users' tokens at upstream
//! identity providers (forwarded to upstreams on their behalf). AES-256-GCM with a random
//! 96-bit nonce per value and the record's identity as associated data, so a sealed value
//! copied onto another user's record does not open.
//!
//! Layout: `v1:` + base64url(nonce ‖ ciphertext ‖ tag). The key comes from the
//! configuration (environment or file), never from the store it protects.

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

const PREFIX: &str = "v1:";

/// Seals and opens values with one key.
pub struct Sealer {
    key: RandomizedNonceKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    /// `key`: 32 bytes.
    pub fn new(key: &[u8]) -> Result<Sealer, &'static str> {
        if key.len() != 32 {
            return Err("the key must be 32 bytes");
        }
        RandomizedNonceKey::new(&AES_256_GCM, key)
            .map(|key| Sealer { key })
            .map_err(|_| "unusable key")
    }

    /// Encrypts `plaintext`, bound to `context` (who and what it belongs to).
    pub fn seal(&self, plaintext: &str, context: &str) -> Option<String> {
        let mut data = plaintext.as_bytes().to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(context.as_bytes()), &mut data)
            .ok()?;
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&data);
        Some(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    /// Decrypts what [`Sealer::seal`] produced with the same key and context; `None` for
    /// anything else (tampered, another key, another context, not sealed at all).
    pub fn open(&self, sealed: &str, context: &str) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed.strip_prefix(PREFIX)?).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = ciphertext.to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut in_out)
            .ok()?;
        String::from_utf8(plaintext.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(&[byte; 32]).expect("key")
    }

    #[test]
    fn round_trip_and_refusals() {
        let s = sealer(7);
        let sealed = s.seal("gho_secret", "github:1").expect("sealed");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("gho_secret"));
        assert_eq!(s.open(&sealed, "github:1").as_deref(), Some("gho_secret"));
        // Another record's context, another key, tampering, garbage.
        assert_eq!(s.open(&sealed, "github:2"), None);
        assert_eq!(sealer(8).open(&sealed, "github:1"), None);
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            s.open(&String::from_utf8(tampered).unwrap(), "github:1"),
            None
        );
        for junk in ["", "v1:", "v1:AAAA", "v2:AAAA", "gho_secret", "v1:!!!"] {
            assert_eq!(s.open(junk, "github:1"), None, "{junk}");
        }
        // A fresh nonce every time.
        assert_ne!(s.seal("x", "c"), s.seal("x", "c"));
        assert!(Sealer::new(&[0; 16]).is_err());
    }

    #[test]
    fn opens_the_documented_layout() {
        // `v1:` + base64url(nonce ‖ ciphertext ‖ tag), AES-256-GCM with the context as
        // associated data, sealed by another implementation (Python `cryptography`) with
        // nonce 00..0b; also `fuzz/seeds/provider_answers/sealed-token`.
        let sealed = "v1:AAECAwQFBgcICQoLf-mGLyw_mn4Shtfa0GFemdcFh7xdVUAAJq1bibbkWTKfCnfVr40FnBzPKZMnbVEeAQJxD_SJ_Cw";
        assert_eq!(
            sealer(7).open(sealed, "github:1").as_deref(),
            Some("gho_16C7e42F292c6912E7710c838347Ae178B4a")
        );
        for tampered in [
            &sealed[..sealed.len() - 1],
            &sealed[..3 + 16],
            sealed.trim_start_matches("v1:"),
        ] {
            assert_eq!(sealer(7).open(tampered, "github:1"), None, "{tampered}");
        }
        // Padded base64, or a standard-alphabet spelling, is not the layout.
        assert_eq!(sealer(7).open(&format!("{sealed}=="), "github:1"), None);
        assert_eq!(
            sealer(7).open(&sealed.replace('-', "+").replace('_', "/"), "github:1"),
            None
        );
    }

    proptest! {
        /// Without the key nothing opens, however well-formed: any bytes in the layout.
        #[test]
        fn forged_values_never_open(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
            let forged = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes));
            prop_assert_eq!(sealer(3).open(&forged, "c"), None);
        }

        #[test]
        fn anything_sealed_opens_only_in_its_context(
            plaintext in ".{0,200}", context in "[a-z:0-9]{1,20}", other in "[a-z:0-9]{1,20}"
        ) {
            let s = sealer(3);
            let sealed = s.seal(&plaintext, &context).unwrap();
            prop_assert_eq!(s.open(&sealed, &context), Some(plaintext));
            if other != context {
                prop_assert_eq!(s.open(&sealed, &other), None);
            }
        }

        #[test]
        fn opening_junk_never_panics(junk in ".{0,300}") {
            let _ = sealer(3).open(&junk, "c");
            let _ = sealer(3).open(&format!("v1:{junk}"), "c");
        }
    }
}
