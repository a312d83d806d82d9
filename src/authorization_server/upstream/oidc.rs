//! OpenID Connect providers (Keycloak, Okta, Entra ID, Google, Dex, …): discovery, the
//! code exchange, the ID token (OIDC Core §3.1.3.7) and userinfo.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, Request, Uri};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::{
    get_json, token_request, ClientAuth, ClientCredentials, LoginError, ProviderIdentity,
    ProviderTokens,
};
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
    pub token_endpoint: String,
    userinfo_endpoint: Option<String>,
    pub client_auth: ClientAuth,
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

/// What the login needs from a discovery document, checked: the issuer is the configured
/// one, the endpoints are https URLs (http only for an http issuer), and how the client
/// authenticates. Pure, so it can be tested and fuzzed without an HTTP client.
#[derive(Debug, Clone)]
pub(super) struct DiscoveryDocument {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: Uri,
    pub userinfo_endpoint: Option<String>,
    pub client_auth: ClientAuth,
}

pub(super) fn check_discovery(
    document: &Map<String, Value>,
    configured_issuer: &str,
) -> Result<DiscoveryDocument, LoginError> {
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
        // `http::Uri` takes `https://:443/x` (found by the `provider_answers` fuzz target).
        if uri.host().is_none_or(str::is_empty) {
            return Err(LoginError::BadAnswer(format!("{name} has no host")));
        }
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
    Ok(DiscoveryDocument {
        issuer,
        authorization_endpoint,
        token_endpoint,
        jwks_uri,
        userinfo_endpoint,
        client_auth,
    })
}

fn parse_discovery(
    document: &Map<String, Value>,
    client: &HttpClient,
    provider_id: &str,
    configured_issuer: &str,
    algorithms: &[Algorithm],
) -> Result<Discovered, LoginError> {
    let DiscoveryDocument {
        issuer,
        authorization_endpoint,
        token_endpoint,
        jwks_uri,
        userinfo_endpoint,
        client_auth,
    } = check_discovery(document, configured_issuer)?;
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
        ClientCredentials::of(provider),
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
    let tokens = ProviderTokens::from_answer(&answer)?;
    if let Some(userinfo) = &discovered.userinfo_endpoint {
        let info = get_json(client, userinfo, &tokens.access_token, &[]).await?;
        merge_userinfo(&mut claims, info)?;
    }
    let mut identity = identity_from_claims(&claims, groups_claim)?;
    identity.tokens = tokens;
    let verified = email_verified(&claims);
    allowed(
        provider,
        identity.email.as_deref(),
        verified,
        &identity.groups,
    )?;
    // An address the provider does not vouch for is not passed on (tokens, X-User-Email):
    // anyone could have typed it into their profile.
    if !verified {
        identity.email = None;
    }
    Ok(identity)
}

/// `aud`, `azp` and `nonce` (signature, `iss`, `exp` and `nbf` are checked already).
pub(super) fn check_id_token(
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
    // A present `azp` of any other type is not this client either, and every member of an
    // `aud` list counts towards "several audiences" (found by the property tests:
    // `"azp": 5` used to pass as absent, `["gw", 5]` as one audience).
    let azp = claims.get("azp");
    let several = matches!(claims.get("aud"), Some(Value::Array(list)) if list.len() > 1);
    if azp.is_some_and(|azp| azp.as_str() != Some(client_id)) || (several && azp.is_none()) {
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
pub(super) fn merge_userinfo(
    claims: &mut Map<String, Value>,
    info: Value,
) -> Result<(), LoginError> {
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
    // `email` and `email_verified` come as a pair from one source: userinfo must not vouch
    // for an address the ID token named without vouching for it.
    let id_token_has_email = claims.contains_key("email");
    for (name, value) in info {
        if id_token_has_email && name == "email_verified" {
            continue;
        }
        claims.entry(name).or_insert(value);
    }
    Ok(())
}

pub(super) fn identity_from_claims(
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
        tokens: ProviderTokens::default(),
    })
}

/// Some providers (Cognito) send the boolean as a string.
pub(super) fn email_verified(claims: &Map<String, Value>) -> bool {
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
    use super::super::tests::json_value;
    use super::*;
    use crate::config::identity_providers::Allowlist;
    use proptest::prelude::*;
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
            // A present azp that is not a string is not this client; several audiences
            // need an azp even when some of them are not strings.
            json!({"aud": "gw", "azp": 5, "nonce": "n1"}),
            json!({"aud": ["gw"], "azp": [], "nonce": "n1"}),
            json!({"aud": "gw", "azp": null, "nonce": "n1"}),
            json!({"aud": ["gw", 5], "nonce": "n1"}),
            json!({"aud": "gw", "nonce": ["n1"]}),
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
    fn userinfo_cannot_vouch_for_the_id_tokens_email() {
        let mut c = claims(json!({"sub": "a", "email": "ceo@corp.example"}));
        merge_userinfo(
            &mut c,
            json!({"sub": "a", "email": "me@corp.example", "email_verified": true}),
        )
        .unwrap();
        assert_eq!(c["email"], "ceo@corp.example");
        assert!(!email_verified(&c), "{c:?}");
        // Both from userinfo: a pair.
        let mut c = claims(json!({"sub": "a"}));
        merge_userinfo(
            &mut c,
            json!({"sub": "a", "email": "me@corp.example", "email_verified": true}),
        )
        .unwrap();
        assert!(email_verified(&c));
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

    fn discovery(value: Value) -> Result<DiscoveryDocument, LoginError> {
        check_discovery(&claims(value), "https://idp.example")
    }

    #[test]
    fn discovery_documents() {
        let found = discovery(json!({
            "issuer": "https://idp.example/",
            "authorization_endpoint": "https://idp.example/auth",
            "token_endpoint": "https://idp.example/token",
            "userinfo_endpoint": "https://idp.example/userinfo",
            "jwks_uri": "https://keys.idp.example/jwks",
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        }))
        .unwrap();
        assert_eq!(found.issuer, "https://idp.example/");
        assert_eq!(found.authorization_endpoint, "https://idp.example/auth");
        assert_eq!(found.token_endpoint, "https://idp.example/token");
        assert_eq!(
            found.userinfo_endpoint.as_deref(),
            Some("https://idp.example/userinfo")
        );
        assert_eq!(found.jwks_uri, "https://keys.idp.example/jwks");
        assert_eq!(found.client_auth, ClientAuth::Basic);

        let minimal = json!({
            "issuer": "https://idp.example",
            "authorization_endpoint": "https://idp.example/auth",
            "token_endpoint": "https://idp.example/token",
            "jwks_uri": "https://idp.example/jwks",
        });
        let found = discovery(minimal.clone()).unwrap();
        assert_eq!(found.userinfo_endpoint, None);
        assert_eq!(found.client_auth, ClientAuth::Basic);
        let with = |name: &str, value: Value| {
            let mut document = minimal.clone();
            document[name] = value;
            discovery(document)
        };
        let post = with(
            "token_endpoint_auth_methods_supported",
            json!(["client_secret_post"]),
        );
        assert_eq!(post.unwrap().client_auth, ClientAuth::Post);
        let nothing_usable = with("token_endpoint_auth_methods_supported", json!([5]));
        assert_eq!(nothing_usable.unwrap().client_auth, ClientAuth::Basic);
        for (name, value) in [
            ("issuer", json!("https://idp.example.evil")),
            ("issuer", json!("https://evil.example/https://idp.example")),
            ("issuer", json!("HTTPS://IDP.EXAMPLE")),
            ("issuer", json!(null)),
            ("token_endpoint", json!("http://idp.example/token")),
            ("token_endpoint", json!("/token")),
            ("token_endpoint", json!("ftp://idp.example/token")),
            ("token_endpoint", json!("https://idp example/token")),
            ("token_endpoint", json!("https://:443/token")),
            ("token_endpoint", json!("https://@/token")),
            ("token_endpoint", json!(["https://idp.example/token"])),
            ("authorization_endpoint", json!("javascript:alert(1)")),
            ("jwks_uri", json!(null)),
            ("userinfo_endpoint", json!("http://idp.example/userinfo")),
        ] {
            assert!(with(name, value.clone()).is_err(), "{name}: {value}");
        }
        // A userinfo_endpoint that is not a string is as good as none.
        assert_eq!(
            with("userinfo_endpoint", json!(5))
                .unwrap()
                .userinfo_endpoint,
            None
        );
        // Plain http only for an http issuer.
        let loopback = json!({
            "issuer": "http://127.0.0.1:8080",
            "authorization_endpoint": "http://127.0.0.1:8080/auth",
            "token_endpoint": "http://127.0.0.1:8080/token",
            "jwks_uri": "http://127.0.0.1:8080/jwks",
        });
        assert!(check_discovery(&claims(loopback), "http://127.0.0.1:8080").is_ok());
        assert!(check_discovery(&claims(json!({})), "https://idp.example").is_err());
    }

    /// `aud`, `azp` and `nonce` values a generated ID token draws from.
    fn claim_value() -> impl Strategy<Value = Option<Value>> {
        let one = prop_oneof![
            Just(json!("gw")),
            Just(json!("other")),
            Just(json!("GW")),
            Just(json!("gw ")),
            Just(json!("")),
            Just(json!(null)),
            Just(json!(5)),
            Just(json!(["gw"])),
        ];
        prop_oneof![
            Just(None),
            one.clone().prop_map(Some),
            prop::collection::vec(one, 0..4).prop_map(|list| Some(Value::Array(list))),
        ]
    }

    /// A domain that is, or looks like, `example.com`.
    fn domain() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "example.com",
                "EXAMPLE.COM",
                "Example.Com",
                "evil-example.com",
                "example.com.evil",
                "notexample.com",
                "sub.example.com",
                "example.com.",
                "example.co",
                "example.com@evil.com",
                "",
            ])
            .prop_map(str::to_string),
            ("[a-z.-]{0,6}", "[a-z.-]{0,6}").prop_map(|(a, b)| format!("{a}example.com{b}")),
        ]
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_any_json(value in json_value(), info in json_value()) {
            if let Value::Object(document) = &value {
                let _ = check_discovery(document, "https://idp.example");
                let _ = check_id_token(document, "gw", "n1");
                let _ = identity_from_claims(document, "groups");
                let _ = email_verified(document);
                let _ = merge_userinfo(&mut document.clone(), info);
            }
        }

        /// Accepted exactly when `aud` holds the client id, `azp` is the client id when it is
        /// present or `aud` has several values, and the nonce matches.
        #[test]
        fn id_token_accepted_only_for_this_client_and_login(
            aud in claim_value(), azp in claim_value(), nonce in prop_oneof![
                Just(None), Just(Some(json!("n1"))), Just(Some(json!("n2"))),
                Just(Some(json!(""))), Just(Some(json!(["n1"]))),
            ],
        ) {
            let mut c = Map::new();
            for (name, value) in [("aud", &aud), ("azp", &azp), ("nonce", &nonce)] {
                if let Some(value) = value {
                    c.insert(name.to_string(), value.clone());
                }
            }
            let aud_ok = match &aud {
                Some(Value::String(a)) => a == "gw",
                Some(Value::Array(list)) => list.contains(&json!("gw")),
                _ => false,
            };
            let several = matches!(&aud, Some(Value::Array(list)) if list.len() > 1);
            let azp_ok = match &azp {
                None => !several,
                Some(azp) => azp == &json!("gw"),
            };
            let nonce_ok = nonce == Some(json!("n1"));
            prop_assert_eq!(check_id_token(&c, "gw", "n1").is_ok(), aud_ok && azp_ok && nonce_ok);
        }

        /// Never an unverified email, never a domain that only ends or starts like an allowed
        /// one; the domain's ASCII case does not matter.
        #[test]
        fn email_domain_is_exact_and_verified(
            local in "[a-z.+@]{0,8}", domain in domain(), verified in any::<bool>(),
        ) {
            let p = provider(Allowlist {
                email_domains: vec!["example.com".into()],
                ..Allowlist::default()
            });
            let email = format!("{local}@{domain}");
            let ok = allowed(&p, Some(&email), verified, &[]).is_ok();
            prop_assert_eq!(ok, verified && domain.eq_ignore_ascii_case("example.com"));
            if ok {
                prop_assert!(verified);
                prop_assert!(email.to_ascii_lowercase().ends_with("@example.com"));
            }
            prop_assert!(allowed(&p, None, verified, &[]).is_err());
            prop_assert!(allowed(&p, Some(&domain), verified, &[]).is_err());
        }
    }
}
