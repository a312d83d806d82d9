//! OpenID Connect providers (Keycloak, Okta, Entra ID, Google, Dex, …): discovery, the
//! code exchange, the ID token (OIDC Core §3.1.3.7) and userinfo.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, Request, Uri};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::{get_json, token_request, ClientAuth, LoginError, ProviderIdentity};
use crate::auth::claims::ClaimMapping;
use crate::auth::jwks::{KeySource, RemoteJwks};
use crate::auth::jwt::Issuer;
use crate::authorization_server::store::LoginState;
use crate::body;
use crate::config::identity_providers::{IdentityProvider, ProviderKind};
use crate::outbound::{self, HttpClient};

/// A discovery document is re-read after this long.
const REDISCOVER_AFTER: Duration = Duration::from_secs(3600);
/// Largest discovery document read.
const MAX_DISCOVERY_BYTES: usize = 64 * 1024;
/// An ID token is accepted this long past its `exp` (clock skew).
const LEEWAY_SECS: u64 = 60;

/// What discovery told us, with the provider's keys.
pub(in crate::authorization_server) struct Discovered {
    /// The issuer exactly as the provider spells it (ID tokens must carry this `iss`).
    pub issuer: String,
    pub authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: Option<String>,
    client_auth: ClientAuth,
    verifier: Issuer,
    fetched_at: Instant,
}

impl Discovered {
    pub fn fresh(&self) -> bool {
        self.fetched_at.elapsed() < REDISCOVER_AFTER
    }
}

/// Reads `<issuer>/.well-known/openid-configuration` (OIDC Discovery §4).
pub(super) async fn discover(
    client: &HttpClient,
    provider_id: &str,
    issuer: &str,
    algorithms: &[Algorithm],
) -> Result<Discovered, LoginError> {
    let url = format!("{issuer}/.well-known/openid-configuration");
    let request = Request::get(url.as_str())
        .header(header::ACCEPT, "application/json")
        .body(body::empty())
        .map_err(|e| LoginError::BadAnswer(e.to_string()))?;
    let fetched = outbound::fetch(client, request, MAX_DISCOVERY_BYTES, super::CALL_TIMEOUT)
        .await
        .map_err(|e| LoginError::Unreachable(format!("{url}: {e}")))?;
    if !fetched.status.is_success() {
        return Err(LoginError::Unreachable(format!(
            "{url} answered HTTP {}",
            fetched.status
        )));
    }
    let document: Map<String, Value> = serde_json::from_slice(&fetched.body)
        .map_err(|_| LoginError::BadAnswer(format!("{url} is not a JSON object")))?;
    parse_discovery(&document, client, provider_id, issuer, algorithms)
}

fn parse_discovery(
    document: &Map<String, Value>,
    client: &HttpClient,
    provider_id: &str,
    configured_issuer: &str,
    algorithms: &[Algorithm],
) -> Result<Discovered, LoginError> {
    let text = |name: &str| document.get(name).and_then(Value::as_str);
    // OIDC Discovery §4.3: the document's issuer is the configured one (a trailing slash
    // is the only difference tolerated).
    let issuer = text("issuer")
        .filter(|i| i.trim_end_matches('/') == configured_issuer)
        .ok_or_else(|| {
            LoginError::BadAnswer(format!(
                "the discovery document names another issuer than {configured_issuer}"
            ))
        })?
        .to_string();
    // Endpoints over https; plain http only when the issuer itself is (loopback, or the
    // configuration's dangerous switch allowed it).
    let plain_ok = issuer.starts_with("http://");
    let endpoint = |name: &str| -> Result<String, LoginError> {
        let value = text(name).ok_or_else(|| {
            LoginError::BadAnswer(format!("the discovery document has no {name}"))
        })?;
        let uri: Uri = value
            .parse()
            .map_err(|_| LoginError::BadAnswer(format!("{name} is not a URL")))?;
        match uri.scheme_str() {
            Some("https") => Ok(value.to_string()),
            Some("http") if plain_ok => Ok(value.to_string()),
            _ => Err(LoginError::BadAnswer(format!("{name} is not an https URL"))),
        }
    };
    let authorization_endpoint = endpoint("authorization_endpoint")?;
    let token_endpoint = endpoint("token_endpoint")?;
    let jwks_uri: Uri = endpoint("jwks_uri")?
        .parse()
        .map_err(|_| LoginError::BadAnswer("jwks_uri is not a URL".into()))?;
    let userinfo_endpoint = match text("userinfo_endpoint") {
        Some(_) => Some(endpoint("userinfo_endpoint")?),
        None => None,
    };
    let methods: Vec<&str> = document
        .get("token_endpoint_auth_methods_supported")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // client_secret_basic is the default when the provider lists nothing (§3).
    let client_auth = if methods.is_empty() || methods.contains(&"client_secret_basic") {
        ClientAuth::Basic
    } else {
        ClientAuth::Post
    };
    let keys = RemoteJwks::new(
        format!("identity provider {provider_id}"),
        jwks_uri,
        client.clone(),
        algorithms.to_vec(),
        REDISCOVER_AFTER,
        Duration::from_secs(10),
    );
    let verifier = Issuer::new(
        0,
        provider_id.to_string(),
        issuer.clone(),
        algorithms.to_vec(),
        Vec::new(),
        // ID tokens carry `typ: JWT` or none; an access token (`at+jwt`) is not one.
        vec!["jwt".to_string()],
        LEEWAY_SECS,
        ClaimMapping {
            subject: "sub".into(),
            name: "name".into(),
            email: "email".into(),
            groups: "groups".into(),
            scope: "scope".into(),
            client_id: "client_id".into(),
        },
        KeySource::Remote(Arc::new(keys)),
    );
    Ok(Discovered {
        issuer,
        authorization_endpoint,
        token_endpoint,
        userinfo_endpoint,
        client_auth,
        verifier,
        fetched_at: Instant::now(),
    })
}

/// Code → tokens → a validated ID token (+ userinfo) → who this is, if allowed.
pub(super) async fn identify(
    client: &HttpClient,
    provider: &IdentityProvider,
    discovered: &Discovered,
    login: &LoginState,
    code: &str,
    redirect_uri: &str,
) -> Result<ProviderIdentity, LoginError> {
    let ProviderKind::Oidc { groups_claim, .. } = &provider.kind else {
        return Err(LoginError::BadAnswer(
            "not an OpenID Connect provider".into(),
        ));
    };
    let answer = token_request(
        client,
        &discovered.token_endpoint,
        provider,
        discovered.client_auth,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", &login.code_verifier),
        ],
    )
    .await?;
    let id_token = answer
        .get("id_token")
        .and_then(Value::as_str)
        .ok_or_else(|| LoginError::BadAnswer("the token answer has no id_token".into()))?;
    let mut claims = discovered
        .verifier
        .verify_claims(id_token)
        .await
        .map_err(|e| LoginError::BadAnswer(format!("ID token refused: {e}")))?;
    check_id_token(&claims, &provider.client_id, &login.nonce)?;
    if let (Some(userinfo), Some(access_token)) = (
        &discovered.userinfo_endpoint,
        answer.get("access_token").and_then(Value::as_str),
    ) {
        let info = get_json(client, userinfo, access_token, &[]).await?;
        merge_userinfo(&mut claims, info)?;
    }
    let identity = identity_from_claims(&claims, groups_claim)?;
    allowed(
        provider,
        identity.email.as_deref(),
        email_verified(&claims),
        &identity.groups,
    )?;
    Ok(identity)
}

/// `aud`, `azp` and `nonce` (signature, `iss`, `exp` and `nbf` are checked already).
fn check_id_token(
    claims: &Map<String, Value>,
    client_id: &str,
    nonce: &str,
) -> Result<(), LoginError> {
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&client_id) {
        return Err(LoginError::BadAnswer(
            "the ID token was issued to another client".into(),
        ));
    }
    let azp = claims.get("azp").and_then(Value::as_str);
    if azp.is_some_and(|azp| azp != client_id) || (audiences.len() > 1 && azp.is_none()) {
        return Err(LoginError::BadAnswer(
            "the ID token's authorized party is another client".into(),
        ));
    }
    let presented = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
    if aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_bytes(), nonce.as_bytes())
        .is_err()
    {
        return Err(LoginError::BadAnswer(
            "the ID token's nonce is not this login's".into(),
        ));
    }
    Ok(())
}

/// Userinfo fills in what the ID token left out; it must be about the same person.
fn merge_userinfo(claims: &mut Map<String, Value>, info: Value) -> Result<(), LoginError> {
    let Value::Object(info) = info else {
        return Err(LoginError::BadAnswer(
            "userinfo is not a JSON object".into(),
        ));
    };
    if info.get("sub") != claims.get("sub") {
        return Err(LoginError::BadAnswer(
            "userinfo is about another subject than the ID token".into(),
        ));
    }
    for (name, value) in info {
        claims.entry(name).or_insert(value);
    }
    Ok(())
}

fn identity_from_claims(
    claims: &Map<String, Value>,
    groups_claim: &str,
) -> Result<ProviderIdentity, LoginError> {
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let id = text("sub").ok_or_else(|| LoginError::BadAnswer("the ID token has no sub".into()))?;
    let groups = match claims.get(groups_claim) {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    Ok(ProviderIdentity {
        id,
        username: text("preferred_username"),
        name: text("name"),
        email: text("email"),
        groups,
    })
}

/// Some providers (Cognito) send the boolean as a string.
fn email_verified(claims: &Map<String, Value>) -> bool {
    matches!(claims.get("email_verified"), Some(Value::Bool(true)))
        || claims.get("email_verified").and_then(Value::as_str) == Some("true")
}

/// Every configured condition must hold: a verified email in an allowed domain, and
/// membership of an allowed group. Also asked again of a stored identity (verified at its
/// login) when the configuration may have changed.
pub(super) fn allowed(
    provider: &IdentityProvider,
    email: Option<&str>,
    verified: bool,
    groups: &[String],
) -> Result<(), LoginError> {
    let allow = &provider.allow;
    if allow.all {
        return Ok(());
    }
    if !allow.email_domains.is_empty() {
        let domain = email
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase());
        match domain {
            Some(domain) if verified && allow.email_domains.contains(&domain) => {}
            Some(_) if !verified => {
                return Err(LoginError::NotAllowed(
                    "Your email address is not verified at the provider.".into(),
                ))
            }
            _ => {
                return Err(LoginError::NotAllowed(format!(
                    "Your account ({}) is not in an allowed email domain.",
                    email.unwrap_or("no email")
                )))
            }
        }
    }
    if !allow.groups.is_empty() && !groups.iter().any(|g| allow.groups.contains(g)) {
        return Err(LoginError::NotAllowed(
            "Your account is not in a group allowed here.".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::identity_providers::Allowlist;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn provider(allow: Allowlist) -> IdentityProvider {
        IdentityProvider {
            id: "corp".into(),
            display_name: "Corp".into(),
            client_id: "gw".into(),
            client_secret: None,
            scopes: vec!["openid".into()],
            kind: ProviderKind::Oidc {
                issuer: "https://idp.example".into(),
                groups_claim: "groups".into(),
                algorithms: vec![Algorithm::RS256],
            },
            allow,
        }
    }

    #[test]
    fn id_token_audience_azp_and_nonce() {
        let ok = claims(json!({"aud": "gw", "nonce": "n1", "sub": "a"}));
        assert!(check_id_token(&ok, "gw", "n1").is_ok());
        let cases = [
            json!({"aud": "other", "nonce": "n1"}),
            json!({"aud": ["gw", "other"], "nonce": "n1"}),
            json!({"aud": ["gw", "other"], "azp": "other", "nonce": "n1"}),
            json!({"aud": "gw", "azp": "other", "nonce": "n1"}),
            json!({"aud": "gw", "nonce": "n2"}),
            json!({"aud": "gw"}),
            json!({"nonce": "n1"}),
            json!({"aud": 5, "nonce": "n1"}),
        ];
        for case in cases {
            assert!(
                check_id_token(&claims(case.clone()), "gw", "n1").is_err(),
                "{case}"
            );
        }
        let multi = claims(json!({"aud": ["gw", "other"], "azp": "gw", "nonce": "n1"}));
        assert!(check_id_token(&multi, "gw", "n1").is_ok());
    }

    #[test]
    fn userinfo_must_be_about_the_same_subject_and_never_overrides() {
        let mut c = claims(json!({"sub": "a", "email": "a@x.example"}));
        merge_userinfo(
            &mut c,
            json!({"sub": "a", "email": "evil@y.example", "groups": ["g"]}),
        )
        .unwrap();
        assert_eq!(c["email"], "a@x.example");
        assert_eq!(c["groups"], json!(["g"]));
        let mut c = claims(json!({"sub": "a"}));
        assert!(merge_userinfo(&mut c, json!({"sub": "b"})).is_err());
        assert!(merge_userinfo(&mut c, json!({})).is_err());
        assert!(merge_userinfo(&mut c, json!([1])).is_err());
    }

    #[test]
    fn allowlist_needs_every_configured_condition() {
        let allow = Allowlist {
            email_domains: vec!["example.com".into()],
            groups: vec!["mcp".into()],
            ..Allowlist::default()
        };
        let p = provider(allow);
        let check = |value: Value| {
            let c = claims(value);
            let identity = identity_from_claims(&c, "groups").unwrap();
            allowed(
                &p,
                identity.email.as_deref(),
                email_verified(&c),
                &identity.groups,
            )
            .is_ok()
        };
        assert!(check(
            json!({"sub": "a", "email": "a@Example.com", "email_verified": true, "groups": ["mcp"]})
        ));
        assert!(check(
            json!({"sub": "a", "email": "a@example.com", "email_verified": "true", "groups": "mcp"})
        ));
        assert!(!check(
            json!({"sub": "a", "email": "a@example.com", "email_verified": false, "groups": ["mcp"]})
        ));
        assert!(!check(
            json!({"sub": "a", "email": "a@example.com", "groups": ["mcp"]})
        ));
        assert!(!check(
            json!({"sub": "a", "email": "a@evil.com", "email_verified": true, "groups": ["mcp"]})
        ));
        assert!(!check(
            json!({"sub": "a", "email": "a@example.com.evil.com", "email_verified": true, "groups": ["mcp"]})
        ));
        assert!(!check(
            json!({"sub": "a", "email": "a@example.com", "email_verified": true, "groups": ["other"]})
        ));
        assert!(!check(
            json!({"sub": "a", "email_verified": true, "groups": ["mcp"]})
        ));
    }

    #[test]
    fn identity_needs_a_subject() {
        assert!(identity_from_claims(&claims(json!({"sub": ""})), "groups").is_err());
        assert!(identity_from_claims(&claims(json!({"sub": 5})), "groups").is_err());
        let id = identity_from_claims(
            &claims(json!({"sub": "u1", "preferred_username": "alice", "name": "Alice", "roles": ["a", 1]})),
            "roles",
        )
        .unwrap();
        assert_eq!(id.id, "u1");
        assert_eq!(id.username.as_deref(), Some("alice"));
        assert_eq!(id.groups, vec!["a".to_string()]);
    }
}
