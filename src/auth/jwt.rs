//! JWT access tokens (RFC 7519 / 7515, profile RFC 9068) from configured issuers.
//!
//! Order of checks: shape → issuer chosen by the unverified `iss` (only to pick whose keys to
//! use; it is verified again with the signature) → `alg` on the issuer's allowlist (HS* and
//! `none` cannot be configured) → `typ` → key by `kid` (unknown `kid` → one debounced JWKS
//! refetch) → signature, `exp`, `nbf`, `iss` with leeway → claims mapped to a `Principal`.
//! The audience is checked per route by the pipeline, because it depends on the route.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::audience;
use super::claims::ClaimMapping;
use super::jwks::KeySource;
use super::{AuthMethod, Principal, VerifierId, VerifyError};

/// A configured, trusted JWT issuer.
pub struct Issuer {
    pub index: usize,
    pub id: String,
    pub issuer: String,
    pub algorithms: Vec<Algorithm>,
    /// Extra accepted audiences (canonical), valid on every route that accepts this issuer.
    pub audiences: Vec<String>,
    /// Accepted `typ` header values, lowercase, without the `application/` prefix. A token
    /// without `typ` is accepted when `jwt` is in the list.
    pub allowed_types: Vec<String>,
    pub claims: ClaimMapping,
    pub keys: KeySource,
    validations: HashMap<Algorithm, Validation>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl Issuer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        id: String,
        issuer: String,
        algorithms: Vec<Algorithm>,
        audiences: Vec<String>,
        allowed_types: Vec<String>,
        leeway_secs: u64,
        claims: ClaimMapping,
        keys: KeySource,
    ) -> Self {
        // One prebuilt validation per algorithm: jsonwebtoken requires every algorithm of a
        // validation to belong to the key's family, and building them per request is waste.
        let validations = algorithms
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = leeway_secs;
                v.validate_exp = true;
                v.validate_nbf = true;
                v.validate_aud = false; // per route, see module docs
                v.set_issuer(&[issuer.as_str()]);
                v.set_required_spec_claims(&["exp", "iss"]);
                (*alg, v)
            })
            .collect();
        Self {
            index,
            id,
            issuer,
            algorithms,
            audiences,
            allowed_types,
            claims,
            keys,
            validations,
        }
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, VerifyError> {
        let claims = self.verify_claims(token).await?;
        self.principal(&claims)
    }

    /// Signature, algorithm, `typ`, `exp`, `nbf` and `iss` checked; the claims as they are
    /// (the authorization server checks an upstream provider's ID tokens with this, then
    /// their `aud` and `nonce` itself).
    pub async fn verify_claims(&self, token: &str) -> Result<Map<String, Value>, VerifyError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| VerifyError::Invalid("malformed token header"))?;
        let Some(validation) = self.validations.get(&header.alg) else {
            return Err(VerifyError::Invalid("token algorithm not allowed"));
        };
        if !self.type_allowed(header.typ.as_deref()) {
            return Err(VerifyError::Invalid("token type not accepted"));
        }
        let kid = header.kid.as_deref();

        let mut outcome = self.check_signature(token, kid, header.alg, validation);
        if matches!(outcome, Err(VerifyError::Invalid(UNKNOWN_KEY))) {
            // Possibly a rotation we have not seen: refetch (debounced), then try once more.
            if self.keys.refresh_for_unknown_key().await {
                outcome = self.check_signature(token, kid, header.alg, validation);
            }
            if matches!(outcome, Err(VerifyError::Invalid(UNKNOWN_KEY))) && !self.keys.has_loaded()
            {
                return Err(VerifyError::Unavailable("signing keys unavailable"));
            }
        }
        outcome
    }

    fn type_allowed(&self, typ: Option<&str>) -> bool {
        self.allowed_types
            .contains(&normalize_type(typ.unwrap_or("JWT")))
    }

    fn check_signature(
        &self,
        token: &str,
        kid: Option<&str>,
        alg: Algorithm,
        validation: &Validation,
    ) -> Result<Map<String, Value>, VerifyError> {
        let keys = self.keys.current();
        let mut saw_key = false;
        let mut error = VerifyError::Invalid(UNKNOWN_KEY);
        // A token without `kid` is tried against a few keys at most: a forged one must not
        // cost a signature check per published key.
        let limit = if kid.is_some() { usize::MAX } else { 4 };
        for key in keys.candidates(kid, alg).take(limit) {
            saw_key = true;
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => error = VerifyError::Invalid(describe(e.kind())),
            }
        }
        if !saw_key {
            return Err(VerifyError::Invalid(UNKNOWN_KEY));
        }
        Err(error)
    }

    pub fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, VerifyError> {
        let extracted = self.claims.extract(claims);
        let subject = extracted
            .subject
            .ok_or(VerifyError::Invalid("token has no subject"))?;
        let audiences: Vec<String> = extracted
            .audiences
            .iter()
            .map(|a| audience::canonical(a))
            .collect();
        let issuer_audience_matched = audience::any_covers(&audiences, &self.audiences);
        Ok(Principal {
            subject,
            name: extracted.name,
            email: extracted.email,
            groups: extracted.groups,
            scopes: extracted.scopes,
            client_id: extracted.client_id,
            token_id: extracted.token_id,
            issuer: Some(self.issuer.clone()),
            method: AuthMethod::Jwt,
            verifier: VerifierId::Issuer(self.index),
            audiences: Some(audiences),
            issuer_audience_matched,
            expires_at: extracted.expires_at,
            tools: None,
            identity_values: Default::default(),
        })
    }
}

const UNKNOWN_KEY: &str = "unknown signing key";

/// `typ` values compare case-insensitively and without the `application/` prefix
/// (RFC 7515 §4.1.9); configured and presented values both go through this.
pub fn normalize_type(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    lower
        .strip_prefix("application/")
        .map(str::to_string)
        .unwrap_or(lower)
}

fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not yet valid",
        ErrorKind::InvalidIssuer => "untrusted issuer",
        ErrorKind::InvalidSignature => "invalid signature",
        ErrorKind::InvalidAlgorithm => "token algorithm not allowed",
        ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
        _ => "malformed token",
    }
}

/// Compact JWS shape: three non-empty base64url segments (the first two decode as JSON).
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let shaped = (0..3).all(|_| {
        parts.next().is_some_and(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    });
    shaped && parts.next().is_none()
}

/// Picks the issuer whose `issuer` equals the token's unverified `iss` claim.
pub fn select_issuer<'a>(
    token: &str,
    issuers: &'a [std::sync::Arc<Issuer>],
) -> Result<&'a Issuer, VerifyError> {
    let iss = unverified_issuer(token).ok_or(VerifyError::Invalid("malformed token"))?;
    issuers
        .iter()
        .find(|issuer| issuer.issuer == iss)
        .map(|issuer| issuer.as_ref())
        .ok_or(VerifyError::Invalid("untrusted issuer"))
}

/// The `iss` claim read without verification — used only to choose which keys to verify with.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    // A JSON object only: serde would also read a struct from an array (`["https://idp"]`).
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape_table() {
        let cases = [
            ("eyJh.eyJz.c2ln", true),
            ("a.b.c", true),
            ("a.b", false),
            ("a.b.c.d", false),
            ("a..c", false),
            ("a.b.c=", false),
            ("a+b.c.d", false),
            ("", false),
        ];
        for (token, want) in cases {
            assert_eq!(looks_like_jwt(token), want, "{token}");
        }
    }

    #[test]
    fn unverified_issuer_reads_only_iss() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"https://idp","sub":"x"}"#);
        assert_eq!(
            unverified_issuer(&format!("e30.{payload}.sig")).as_deref(),
            Some("https://idp")
        );
        assert_eq!(unverified_issuer("e30.!!!.sig"), None);
        let no_iss = URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
        assert_eq!(unverified_issuer(&format!("e30.{no_iss}.sig")), None);
        let array = URL_SAFE_NO_PAD.encode(br#"["https://idp"]"#);
        assert_eq!(unverified_issuer(&format!("e30.{array}.sig")), None);
    }
}
