//! Signing keys: generated on first start (or loaded from a PEM file), kept in the store,
//! rotated by `mcp-auth-gateway keys rotate`, published at `jwks_uri` and — in process — to
//! the routes' verifier (`auth::local`).
//!
//! We sign with aws-lc-rs directly rather than through jsonwebtoken's `EncodingKey`: one
//! PKCS#8 form serves all three algorithms (jsonwebtoken's RSA path wants PKCS#1), and the
//! verifying side, jsonwebtoken, checks our output in the tests.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use super::store::StoredKey;
use crate::auth::api_key::sha256;

/// A key able to sign, with its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pair: Pair,
    public_jwk: Value,
}

enum Pair {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate a key: {0}")]
    Generate(&'static str),
    #[error("not a usable {algorithm} private key (PKCS#8): {reason}")]
    Parse {
        algorithm: &'static str,
        reason: String,
    },
    #[error("signing failed")]
    Sign,
}

pub fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RS256 => "RS256",
        Algorithm::EdDSA => "EdDSA",
        _ => "ES256",
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    /// A fresh key pair (PKCS#8 DER) for `algorithm`.
    pub fn generate_der(algorithm: Algorithm) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match algorithm {
            Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
                .map(|d| d.as_ref().to_vec())
                .map_err(|_| KeyError::Generate("Ed25519")),
            Algorithm::RS256 => RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .and_then(|pair| pair.as_der())
                .map(|der| der.as_ref().to_vec())
                .map_err(|_| KeyError::Generate("RSA")),
            _ => EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map(|d| d.as_ref().to_vec())
                .map_err(|_| KeyError::Generate("P-256")),
        }
    }

    /// Parses a PKCS#8 key for `algorithm`; the `kid` is the RFC 7638 thumbprint.
    pub fn from_der(algorithm: Algorithm, der: &[u8]) -> Result<SigningKey, KeyError> {
        let parse_error = |reason: String| KeyError::Parse {
            algorithm: algorithm_name(algorithm),
            reason,
        };
        let (pair, members) = match algorithm {
            Algorithm::EdDSA => {
                let pair =
                    Ed25519KeyPair::from_pkcs8(der).map_err(|e| parse_error(e.to_string()))?;
                let x = b64(pair.public_key().as_ref());
                (
                    Pair::Ed(pair),
                    json!({"crv": "Ed25519", "kty": "OKP", "x": x}),
                )
            }
            Algorithm::RS256 => {
                let pair = RsaKeyPair::from_pkcs8(der).map_err(|e| parse_error(e.to_string()))?;
                let public = pair.public_key();
                let n = b64(public.modulus().big_endian_without_leading_zero());
                let e = b64(public.exponent().big_endian_without_leading_zero());
                (Pair::Rsa(pair), json!({"e": e, "kty": "RSA", "n": n}))
            }
            _ => {
                let pair =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                        .map_err(|e| parse_error(e.to_string()))?;
                let point = pair.public_key().as_ref().to_vec();
                // Uncompressed point: 0x04 ‖ x ‖ y.
                if point.len() != 65 {
                    return Err(parse_error("unexpected public key length".into()));
                }
                let members = json!({"crv": "P-256", "kty": "EC", "x": b64(&point[1..33]), "y": b64(&point[33..])});
                (Pair::Ec(pair), members)
            }
        };
        // RFC 7638: SHA-256 over the required members in lexicographic order, no spaces
        // (serde_json's map keeps keys sorted).
        let kid = b64(&sha256(members.to_string().as_bytes()));
        let mut public_jwk = members;
        if let Some(object) = public_jwk.as_object_mut() {
            object.insert("kid".into(), json!(kid));
            object.insert("use".into(), json!("sig"));
            object.insert("alg".into(), json!(algorithm_name(algorithm)));
        }
        Ok(SigningKey {
            kid,
            algorithm,
            pair,
            public_jwk,
        })
    }

    pub fn from_stored(stored: &StoredKey) -> Result<SigningKey, KeyError> {
        let algorithm = match stored.algorithm.as_str() {
            "RS256" => Algorithm::RS256,
            "EdDSA" => Algorithm::EdDSA,
            _ => Algorithm::ES256,
        };
        SigningKey::from_der(algorithm, &stored.private_der)
    }

    pub fn public_jwk(&self) -> &Value {
        &self.public_jwk
    }

    /// A compact JWS of `claims` with `typ` and our `kid` in the header.
    pub fn sign(&self, typ: &str, claims: &Value) -> Result<String, KeyError> {
        let header = json!({"alg": algorithm_name(self.algorithm), "typ": typ, "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let signature = match &self.pair {
            Pair::Ec(pair) => pair
                .sign(&rng, signing_input.as_bytes())
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Sign)?,
            Pair::Ed(pair) => pair.sign(signing_input.as_bytes()).as_ref().to_vec(),
            Pair::Rsa(pair) => {
                let mut out = vec![0u8; pair.public_modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    signing_input.as_bytes(),
                    &mut out,
                )
                .map_err(|_| KeyError::Sign)?;
                out
            }
        };
        Ok(format!("{signing_input}.{}", b64(&signature)))
    }
}

/// Reads a PEM private key file (PKCS#8) for `algorithm`.
pub fn load_pem(path: &std::path::Path, algorithm: Algorithm) -> Result<SigningKey, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let key = PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))?;
    match key {
        PrivateKeyDer::Pkcs8(der) => {
            SigningKey::from_der(algorithm, der.secret_pkcs8_der()).map_err(|e| e.to_string())
        }
        _ => Err(format!(
            "{} is not a PKCS#8 key (\"BEGIN PRIVATE KEY\"); convert it with `openssl pkcs8 -topk8 -nocrypt`",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn every_algorithm_signs_what_jsonwebtoken_verifies() {
        for algorithm in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
            let der = SigningKey::generate_der(algorithm).unwrap();
            let key = SigningKey::from_der(algorithm, &der).unwrap();
            let claims =
                json!({"iss": "https://as.example", "sub": "alice", "exp": 4_000_000_000u64});
            let token = key.sign("at+jwt", &claims).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(key.public_jwk().clone()).unwrap();
            let decoding = DecodingKey::from_jwk(&jwk).unwrap();
            let mut validation = Validation::new(algorithm);
            validation.validate_aud = false;
            let data = jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap();
            assert_eq!(data.claims["sub"], "alice");
            // The kid is stable for one key.
            assert_eq!(SigningKey::from_der(algorithm, &der).unwrap().kid, key.kid);
        }
    }
}
