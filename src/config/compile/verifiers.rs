//! `[[api_keys]]`, `[[issuers]]`, `[[introspection]]`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use jsonwebtoken::Algorithm;

use super::Collector;
use crate::auth::api_key::{self, ApiKey};
use crate::auth::audience;
use crate::auth::claims::ClaimMapping;
use crate::auth::introspection::{IntrospectionGuards, Introspector};
use crate::auth::jwks::{KeySet, KeySource, RemoteJwks};
use crate::auth::jwt::Issuer;
use crate::auth::{AuthMethod, Principal, VerifierId};
use crate::config::raw::{RawApiKey, RawClaims, RawIntrospection, RawIssuer};
use crate::config::secret;
use crate::outbound::HttpClient;

/// The shortest API key accepted from `key_env` / `key_file`.
const MIN_API_KEY_BYTES: usize = 16;

pub(super) fn compile_api_key(
    raw: &RawApiKey,
    path: &str,
    base_dir: &Path,
    c: &mut Collector,
) -> Option<ApiKey> {
    let hash = match (&raw.hash, &raw.key_env, &raw.key_file) {
        (Some(hash), None, None) => c.ok(&format!("{path}.hash"), api_key::parse_hash(hash))?,
        (None, env, file) if env.is_some() || file.is_some() => {
            let key = c.ok(
                path,
                secret::resolve(env.as_deref(), file.as_deref(), base_dir, "key"),
            )?;
            // 16 bytes is 128 bits if random; shorter keys can be guessed or brute-forced.
            if key.expose().len() < MIN_API_KEY_BYTES {
                c.push(
                    path,
                    format!(
                        "the key from key_env / key_file is {} bytes: use at least {MIN_API_KEY_BYTES} (`mcp-auth-gateway keygen` makes a 43-character key)",
                        key.expose().len()
                    ),
                );
            }
            api_key::sha256(key.expose().as_bytes())
        }
        (None, _, _) => {
            c.push(path, "no key: set `hash = \"sha256:…\"` (see `mcp-auth-gateway keygen`), `key_env` or `key_file`");
            return None;
        }
        _ => {
            c.push(path, "give exactly one of `hash`, `key_env`, `key_file`");
            return None;
        }
    };
    if raw.subject.is_empty() {
        c.push(format!("{path}.subject"), "must not be empty");
    }
    let mut scopes = raw.scopes.clone();
    scopes.sort();
    scopes.dedup();
    let tools = raw.tools.as_ref().map(|patterns| {
        std::sync::Arc::new(
            patterns
                .iter()
                .enumerate()
                .filter_map(|(i, pattern)| {
                    c.ok(
                        &format!("{path}.tools[{i}]"),
                        crate::glob::Glob::new(pattern),
                    )
                })
                .collect::<Vec<_>>(),
        )
    });
    Some(ApiKey::new(
        raw.id.clone(),
        hash,
        Principal {
            subject: raw.subject.clone(),
            name: raw.name.clone(),
            email: raw.email.clone(),
            groups: raw.groups.clone(),
            scopes,
            client_id: None,
            token_id: Some(raw.id.clone()),
            issuer: None,
            method: AuthMethod::ApiKey,
            verifier: VerifierId::ApiKeys,
            audiences: None,
            issuer_audience_matched: false,
            expires_at: None,
            tools,
            identity_values: Default::default(),
        },
    ))
}

pub(super) fn claim_mapping(raw: &RawClaims) -> ClaimMapping {
    ClaimMapping {
        subject: raw.subject.clone(),
        name: raw.name.clone(),
        email: raw.email.clone(),
        groups: raw.groups.clone(),
        scope: raw.scope.clone(),
        client_id: raw.client_id.clone(),
    }
}

/// Asymmetric algorithms only. HMAC would let anyone holding the (public) verification key
/// mint tokens, and `none` is no signature at all; neither can be configured.
pub(super) fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "RS384" => Ok(Algorithm::RS384),
        "RS512" => Ok(Algorithm::RS512),
        "PS256" => Ok(Algorithm::PS256),
        "PS384" => Ok(Algorithm::PS384),
        "PS512" => Ok(Algorithm::PS512),
        "ES256" => Ok(Algorithm::ES256),
        "ES384" => Ok(Algorithm::ES384),
        "EdDSA" => Ok(Algorithm::EdDSA),
        "HS256" | "HS384" | "HS512" | "none" => Err(format!(
            "{name:?} is not allowed: only asymmetric algorithms (RS*, PS*, ES256, ES384, EdDSA) can be verified safely with published keys"
        )),
        other => Err(format!(
            "{other:?} is not a supported algorithm: use RS256/384/512, PS256/384/512, ES256, ES384 or EdDSA"
        )),
    }
}

/// An outbound identity URL: https, or http on loopback (tests, sidecars), or http anywhere
/// only with the dangerous switch.
pub(super) fn parse_identity_url(text: &str, allow_http: bool) -> Result<Uri, String> {
    let uri: Uri = text.parse().map_err(|_| format!("{text:?} is not a URL"))?;
    let host = uri.host().ok_or_else(|| format!("{text:?} has no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if allow_http || is_loopback_host(host) => Ok(uri),
        Some("http") => Err(format!(
            "{text:?} uses plain http: use https (or set [dangerous] allow_plain_http_identity_endpoints)"
        )),
        _ => Err(format!("{text:?} must be an https:// URL")),
    }
}

pub(super) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub(super) fn compile_issuer(
    index: usize,
    raw: &RawIssuer,
    base_dir: &Path,
    client: &HttpClient,
    allow_http: bool,
    c: &mut Collector,
) -> Option<Issuer> {
    let path = format!("issuers[{index}]");
    if raw.issuer.is_empty() {
        c.push(format!("{path}.issuer"), "must not be empty");
    }
    if raw.algorithms.is_empty() {
        c.push(
            format!("{path}.algorithms"),
            "list at least one algorithm, e.g. [\"RS256\"]",
        );
    }
    let algorithms: Vec<Algorithm> = raw
        .algorithms
        .iter()
        .enumerate()
        .filter_map(|(i, a)| c.ok(&format!("{path}.algorithms[{i}]"), parse_algorithm(a)))
        .collect();
    let refresh = raw
        .jwks_refresh_interval
        .map_or(Duration::from_secs(300), |d| d.0)
        .max(Duration::from_secs(1));
    let min_refetch = raw
        .jwks_refetch_min_interval
        .map_or(Duration::from_secs(30), |d| d.0);
    // Zero would let every token with an invented `kid` cause a JWKS fetch.
    if min_refetch < Duration::from_secs(1) || min_refetch > Duration::from_secs(3600) {
        c.push(
            format!("{path}.jwks_refetch_min_interval"),
            format!("{min_refetch:?} is out of range: use a duration from \"1s\" to \"1h\""),
        );
    }
    if let Some(interval) = raw.jwks_refresh_interval {
        if interval.0 < Duration::from_secs(1) || interval.0 > Duration::from_secs(86_400) {
            c.push(
                format!("{path}.jwks_refresh_interval"),
                format!(
                    "{:?} is out of range: use a duration from \"1s\" to \"24h\"",
                    interval.0
                ),
            );
        }
    }
    let keys = match (&raw.jwks_uri, &raw.jwks_file, &raw.public_key_file) {
        (Some(uri), None, None) => {
            let uri = c.ok(
                &format!("{path}.jwks_uri"),
                parse_identity_url(uri, allow_http),
            )?;
            KeySource::Remote(Arc::new(RemoteJwks::new(
                raw.id.clone(),
                uri,
                client.clone(),
                algorithms.clone(),
                refresh,
                min_refetch,
            )))
        }
        (None, Some(file), None) => {
            let file_path = base_dir.join(file);
            let set = c.ok(
                &format!("{path}.jwks_file"),
                read_file(&file_path).and_then(|bytes| KeySet::from_jwks(&bytes, &algorithms)),
            )?;
            if set.is_empty() {
                c.push(
                    format!("{path}.jwks_file"),
                    "holds no signature key usable with `algorithms`",
                );
            }
            KeySource::Static(set)
        }
        (None, None, Some(file)) => {
            let file_path = base_dir.join(file);
            KeySource::Static(c.ok(
                &format!("{path}.public_key_file"),
                read_file(&file_path).and_then(|bytes| KeySet::from_pem(&bytes, &algorithms)),
            )?)
        }
        _ => {
            c.push(
                &path,
                "give exactly one of `jwks_uri`, `jwks_file`, `public_key_file`",
            );
            return None;
        }
    };
    let allowed_types = raw
        .allowed_types
        .clone()
        .unwrap_or_else(|| vec!["at+jwt".into(), "JWT".into()])
        .into_iter()
        .map(|t| crate::auth::jwt::normalize_type(&t))
        .collect();
    let leeway = raw.leeway.map_or(60, |d| d.0.as_secs());
    if leeway > 300 {
        c.push(
            format!("{path}.leeway"),
            "more than 5 minutes of clock skew is not accepted",
        );
    }
    Some(Issuer::new(
        index,
        raw.id.clone(),
        raw.issuer.clone(),
        algorithms,
        raw.audiences
            .iter()
            .map(|a| audience::canonical(a))
            .collect(),
        allowed_types,
        leeway,
        claim_mapping(&raw.claims),
        keys,
    ))
}

pub(super) fn read_file(path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

pub(super) fn compile_introspection(
    index: usize,
    raw: &RawIntrospection,
    base_dir: &Path,
    client: &HttpClient,
    allow_http: bool,
    c: &mut Collector,
) -> Option<Introspector> {
    let path = format!("introspection[{index}]");
    let endpoint = c.ok(
        &format!("{path}.endpoint"),
        parse_identity_url(&raw.endpoint, allow_http),
    );
    let secret = c.ok(
        &format!("{path}.client_secret"),
        secret::resolve(
            raw.client_secret_env.as_deref(),
            raw.client_secret_file.as_deref(),
            base_dir,
            "client_secret_env / client_secret_file",
        ),
    );
    let cache_ttl = raw.cache_ttl.map_or(Duration::from_secs(60), |d| d.0);
    let timeout = raw.timeout.map_or(Duration::from_secs(5), |d| d.0);
    let negative_cache_ttl = raw
        .negative_cache_ttl
        .map_or(Duration::from_secs(30), |d| d.0);
    let max_concurrent = raw.max_concurrent.unwrap_or(16);
    for (key, value, max) in [
        ("cache_ttl", cache_ttl, Duration::from_secs(3600)),
        (
            "negative_cache_ttl",
            negative_cache_ttl,
            Duration::from_secs(3600),
        ),
    ] {
        if value > max {
            c.push(
                format!("{path}.{key}"),
                format!("{value:?} is out of range: use a duration from \"0s\" to \"1h\""),
            );
        }
    }
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        c.push(
            format!("{path}.timeout"),
            format!("{timeout:?} is out of range: use a duration from \"1ms\" to \"1m\""),
        );
    }
    if !(1..=1024).contains(&max_concurrent) {
        c.push(
            format!("{path}.max_concurrent"),
            format!("{max_concurrent} is out of range: use 1 to 1024 calls in flight"),
        );
    }
    let (endpoint, secret) = (endpoint?, secret?);
    c.ok(
        &path,
        Introspector::new(
            index,
            raw.id.clone(),
            endpoint,
            &raw.client_id,
            &secret,
            raw.issuer.clone(),
            raw.audiences
                .iter()
                .map(|a| audience::canonical(a))
                .collect(),
            raw.require_audience,
            cache_ttl,
            timeout,
            claim_mapping(&raw.claims),
            client.clone(),
            IntrospectionGuards {
                negative_cache_ttl,
                max_concurrent,
            },
        ),
    )
}
