//! Login through an upstream identity provider: GitHub or any OpenID Connect provider.
//!
//! ```text
//!  login page ── POST /login/<id> (CSRF-checked form) ──► login state stored: PKCE verifier,
//!      nonce, this browser's session, the pending request; `state` = its key
//!  ──303──► provider's authorization endpoint (the person logs in there)
//!  ──► GET /login/<id>/callback?code&state ──► state taken once, same browser checked
//!  ──► code exchanged (PKCE + client secret) ──► identity: OIDC ID token (+ userinfo),
//!      GitHub REST API ──► allowlist ──► signed in: consent, then a code for the MCP client
//! ```
//!
//! The gateway stays the authorization server its MCP clients talk to; towards the
//! provider it is an ordinary confidential client. The provider's identity becomes the
//! subject `<provider id>:<the provider's stable id>`, so rules and identity headers work
//! unchanged.

pub(super) mod connect;
mod github;
mod oidc;
pub(super) mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::body::RequestBody;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::Value;

use super::authorize::{self, error_page, store_unavailable};
use super::clients::{self, ResolveError};
use super::http::{cookie, redirect, with_query, Params};
use super::store::{LoginState, UserIdentity};
use super::{digest, random_token, Context};
use crate::auth::principal::now_unix;
use crate::body::{self, Body};
use crate::config::authorization_server::AuthorizationServerSettings;
use crate::config::identity_providers::{IdentityProvider, ProviderKind};
use crate::outbound::{self, HttpClient};

/// Largest answer we read from a provider (token, userinfo, API pages).
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// Each call to a provider gets this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `error_description` from a provider we show on a page.
const MAX_SHOWN_ERROR: usize = 300;

/// Why a login through a provider failed. Rendered as a page (the browser is ours, not
/// the MCP client's), logged without secrets.
#[derive(Debug, thiserror::Error)]
pub(super) enum LoginError {
    #[error("the provider could not be reached: {0}")]
    Unreachable(String),
    #[error("the provider's answer was not acceptable: {0}")]
    BadAnswer(String),
    #[error("{0}")]
    NotAllowed(String),
    /// The token endpoint refused the grant itself (`invalid_grant`; GitHub's
    /// `bad_refresh_token`): the code or refresh token is no good any more — unlike an
    /// outage or a malformed answer, which say nothing about the grant.
    #[error("the token endpoint refused the grant: {0}")]
    Refused(String),
}

impl LoginError {
    fn page(&self, provider: &IdentityProvider) -> Response<Body> {
        match self {
            LoginError::Unreachable(_) | LoginError::BadAnswer(_) | LoginError::Refused(_) => error_page(
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                &format!(
                    "Signing in with {} did not work. Try again in a moment; if it keeps failing, tell the administrator.",
                    provider.display_name
                ),
            ),
            LoginError::NotAllowed(why) => error_page(
                StatusCode::FORBIDDEN,
                "Access not allowed",
                &format!("{why} Ask the administrator for access, or sign in with another account."),
            ),
        }
    }
}

/// What a provider told us about the person, before the allowlist.
#[derive(Debug, Clone)]
pub(super) struct ProviderIdentity {
    /// The provider's stable id for the person (OIDC `sub`, GitHub's numeric id).
    pub id: String,
    pub username: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub groups: Vec<String>,
    /// What the provider issued us for this person (kept, sealed, for routes that forward
    /// it).
    pub tokens: ProviderTokens,
}

/// A provider's token answer (RFC 6749 §5.1).
/// `Debug` shows whether each token is there, never the token.
#[derive(Clone, Default)]
pub(super) struct ProviderTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Seconds; `None` = the provider did not say (GitHub OAuth app tokens do not expire).
    pub expires_in: Option<u64>,
}

impl std::fmt::Debug for ProviderTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderTokens")
            .field("access_token", &"***")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "***"))
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

impl ProviderTokens {
    pub fn from_answer(answer: &serde_json::Map<String, Value>) -> Result<Self, LoginError> {
        let access_token = answer
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| LoginError::BadAnswer("the token answer has no access_token".into()))?
            .to_string();
        Ok(ProviderTokens {
            access_token,
            refresh_token: answer
                .get("refresh_token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            expires_in: answer.get("expires_in").and_then(Value::as_u64),
        })
    }
}

/// Fuzzing entry point (`fuzz/fuzz_targets/provider_answers.rs`), not API: reads `data` as
/// one JSON value, the way a provider's answer arrives, runs every parser of provider
/// answers on it and panics when one of their properties breaks (see [`fuzzing`]).
#[doc(hidden)]
pub fn fuzz_provider_answer(data: &[u8]) {
    if let Ok(answer) = serde_json::from_slice::<Value>(data) {
        fuzzing::check_answer(&answer);
    }
}

/// State kept across logins: each OIDC provider's discovery document and keys.
#[derive(Default)]
pub struct Providers {
    discovered: Mutex<HashMap<String, Arc<oidc::Discovered>>>,
}

impl Providers {
    fn cached(&self, key: &str) -> Option<Arc<oidc::Discovered>> {
        self.discovered
            .lock()
            .ok()
            .and_then(|map| map.get(key).cloned())
    }

    fn remember(&self, key: String, discovered: Arc<oidc::Discovered>) {
        if let Ok(mut map) = self.discovered.lock() {
            map.insert(key, discovered);
        }
    }
}

/// `POST /login/<id>`: the person chose this provider on the login page.
pub async fn start(
    context: &Context<'_>,
    provider_id: &str,
    request: Request<RequestBody>,
) -> Response<Body> {
    let Some(provider) = context.settings.identity_provider(provider_id) else {
        return unknown_provider();
    };
    let form = match authorize::read_form(context, request).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let code_verifier = random_token();
    let state = random_token();
    let login = LoginState {
        provider: provider.id.clone(),
        request_id: form.request_id.clone(),
        session: digest(&form.session_id),
        code_verifier: code_verifier.clone(),
        nonce: random_token(),
        client_id: None,
        issuer: None,
        expires_at: now_unix() + authorize::PENDING_TTL,
    };
    let challenge = URL_SAFE_NO_PAD.encode(crate::auth::api_key::sha256(code_verifier.as_bytes()));
    let redirect_uri = context.settings.callback_uri(&provider.id);
    let scope = provider.scopes.join(" ");
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", provider.client_id.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("scope", scope.as_str()),
        ("state", state.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let authorization_endpoint = match &provider.kind {
        ProviderKind::Oidc { .. } => match discover(context, provider).await {
            Ok(discovered) => {
                params.push(("nonce", login.nonce.as_str()));
                discovered.authorization_endpoint.clone()
            }
            Err(error) => {
                tracing::warn!(provider = %provider.id, %error, "identity provider discovery failed");
                return error.page(provider);
            }
        },
        ProviderKind::GitHub { web_url, .. } => github::authorization_endpoint(web_url),
    };
    let location = with_query(&authorization_endpoint, &params);
    if context
        .store()
        .put_login_state(digest(&state), login)
        .await
        .is_err()
    {
        return store_unavailable();
    }
    let mut response = redirect(&location);
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
}

/// `GET /login/<id>/callback`: the provider sends the browser back.
pub async fn callback(
    context: &Context<'_>,
    provider_id: &str,
    request: Request<RequestBody>,
) -> Response<Body> {
    let Some(provider) = context.settings.identity_provider(provider_id) else {
        return unknown_provider();
    };
    let (login, params) = match take_callback_state(context, &request, &provider.id).await {
        Ok(taken) => taken,
        Err(page) => return page,
    };
    // Login CSRF: the answer must come back to the browser that asked, or an attacker could
    // sign a victim into the attacker's account.
    let same_browser = cookie(request.headers(), authorize::cookie_name(context))
        .is_some_and(|session| digest(session) == login.session);
    if !same_browser {
        return error_page(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This sign-in was started in another browser. Start again from your application.",
        );
    }
    if let Some(error) = params.get("error") {
        let detail: String = params
            .get("error_description")
            .unwrap_or(error)
            .chars()
            .take(MAX_SHOWN_ERROR)
            .collect();
        tracing::info!(provider = %provider.id, error, "the identity provider refused the login");
        return error_page(
            StatusCode::FORBIDDEN,
            "Sign-in cancelled",
            &format!("{} answered: {detail}", provider.display_name),
        );
    }
    let Some(code) = params.get("code") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The provider sent no authorization code.",
        );
    };
    let identity = match identify(context, provider, &login, code, params.get("iss")).await {
        Ok(identity) => identity,
        Err(error) => {
            tracing::warn!(provider = %provider.id, %error, client = %context.client_address,
                "login through identity provider failed");
            return error.page(provider);
        }
    };
    let subject = format!("{}:{}", provider.id, identity.id);
    if tokens::wanted(context.config, &provider.id) {
        if let Err(error) = tokens::keep(
            context.store(),
            context.settings,
            &subject,
            &provider.id,
            &identity.tokens,
            tokens::Issuance::default(),
        )
        .await
        {
            tracing::warn!(provider = %provider.id, %error, "cannot keep the user's provider token");
            return store_unavailable();
        }
        // A new login replaces what was cached from the previous one.
        context
            .server
            .provider_tokens
            .invalidate(&(subject.clone(), provider.id.clone()))
            .await;
    }
    let user = UserIdentity {
        subject,
        provider: Some(provider.id.clone()),
        username: identity.username,
        name: identity.name,
        email: identity.email,
        groups: identity.groups,
    };
    let pending = match context.store().pending(digest(&login.request_id)).await {
        Ok(Some(pending)) => pending,
        Ok(None) => return sign_in_expired(),
        Err(_) => return store_unavailable(),
    };
    let client = match clients::resolve(context, &pending.client_id).await {
        Ok(client) => client,
        Err(ResolveError::Unavailable(_)) => return store_unavailable(),
        Err(_) => return sign_in_expired(),
    };
    tracing::info!(subject = %user.subject, provider = %provider.id, "login through identity provider");
    authorize::signed_in(context, &client, &login.request_id, &pending, user).await
}

/// The first steps of every callback from an upstream server (an identity provider, an
/// upstream MCP server's authorization server): a GET whose `state` names a pending login
/// of this `key`, taken once. Anything else is a page to show.
pub(super) async fn take_callback_state(
    context: &Context<'_>,
    request: &Request<RequestBody>,
    key: &str,
) -> Result<(LoginState, Params), Response<Body>> {
    if request.method() != Method::GET {
        return Err(error_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Invalid request",
            "The answer comes as a GET.",
        ));
    }
    let params = Params::parse(request.uri().query().unwrap_or("").as_bytes());
    let Some(state) = params.get("state") else {
        return Err(sign_in_expired());
    };
    match context
        .store()
        .take_login_state(digest(state), now_unix())
        .await
    {
        Ok(Some(login)) if login.provider == key => Ok((login, params)),
        Ok(_) => Err(sign_in_expired()),
        Err(_) => Err(store_unavailable()),
    }
}

pub(super) fn sign_in_expired() -> Response<Body> {
    error_page(
        StatusCode::BAD_REQUEST,
        "Sign-in expired",
        "This sign-in is no longer valid. Start again from your application.",
    )
}

/// Exchanges the code and learns who logged in; the allowlist decides whether they may.
async fn identify(
    context: &Context<'_>,
    provider: &IdentityProvider,
    login: &LoginState,
    code: &str,
    iss: Option<&str>,
) -> Result<ProviderIdentity, LoginError> {
    let redirect_uri = context.settings.callback_uri(&provider.id);
    let client = &context.config.client;
    let identity = match &provider.kind {
        ProviderKind::Oidc { .. } => {
            let discovered = discover(context, provider).await?;
            // RFC 9207: an `iss` that is not this provider's is a mix-up attack.
            if iss.is_some_and(|iss| iss != discovered.issuer) {
                return Err(LoginError::BadAnswer(
                    "the callback's iss is another issuer".into(),
                ));
            }
            oidc::identify(client, provider, &discovered, login, code, &redirect_uri).await?
        }
        ProviderKind::GitHub { web_url, api_url } => {
            github::identify(
                client,
                provider,
                web_url,
                api_url,
                login,
                code,
                &redirect_uri,
            )
            .await?
        }
    };
    Ok(identity)
}

/// The provider's discovery document and keys, fetched once and re-fetched hourly (the
/// last good copy serves while the provider is unreachable).
async fn discover(
    context: &Context<'_>,
    provider: &IdentityProvider,
) -> Result<Arc<oidc::Discovered>, LoginError> {
    context
        .server
        .providers
        .discover(&context.config.client, provider)
        .await
}

impl Providers {
    pub(super) async fn discover(
        &self,
        client: &HttpClient,
        provider: &IdentityProvider,
    ) -> Result<Arc<oidc::Discovered>, LoginError> {
        let ProviderKind::Oidc {
            issuer, algorithms, ..
        } = &provider.kind
        else {
            return Err(LoginError::BadAnswer(
                "not an OpenID Connect provider".into(),
            ));
        };
        let key = format!("{issuer} {algorithms:?}");
        let cached = self.cached(&key);
        if let Some(found) = &cached {
            if found.fresh() {
                return Ok(found.clone());
            }
        }
        match oidc::discover(client, &provider.id, issuer, algorithms).await {
            Ok(found) => {
                let found = Arc::new(found);
                self.remember(key, found.clone());
                Ok(found)
            }
            Err(error) => match cached {
                Some(stale) => {
                    tracing::warn!(provider = %provider.id, %error, "rediscovery failed; using the last good discovery document");
                    Ok(stale)
                }
                None => Err(error),
            },
        }
    }
}

/// Whether someone who logged in through a provider before is still let in: the provider
/// is still configured and its allowlist, as configured now, admits the identity stored at
/// login. (Membership changed at the provider itself is seen at the next login.)
pub(super) fn still_allowed(settings: &AuthorizationServerSettings, user: &UserIdentity) -> bool {
    let Some(provider) = user
        .provider
        .as_deref()
        .and_then(|id| settings.identity_provider(id))
    else {
        return false;
    };
    match provider.kind {
        ProviderKind::GitHub { .. } => {
            github::allowed(provider, user.username.as_deref(), &user.groups)
        }
        ProviderKind::Oidc { .. } => {
            oidc::allowed(provider, user.email.as_deref(), true, &user.groups).is_ok()
        }
    }
}

fn unknown_provider() -> Response<Body> {
    error_page(
        StatusCode::NOT_FOUND,
        "Unknown sign-in provider",
        "This sign-in provider is not configured here. Start again from your application.",
    )
}

/// How the client secret travels to a token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientAuth {
    /// HTTP Basic, id and secret form-encoded first (the default).
    Basic,
    /// In the form body (GitHub; providers that support nothing else).
    Post,
}

/// Who the gateway is at a token endpoint. `Debug` leaves the secret out.
#[derive(Clone, Copy)]
pub(super) struct ClientCredentials<'a> {
    pub id: &'a str,
    pub secret: Option<&'a str>,
}

impl std::fmt::Debug for ClientCredentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("id", &self.id)
            .field("secret", &self.secret.map(|_| "***"))
            .finish()
    }
}

impl<'a> ClientCredentials<'a> {
    pub fn of(provider: &'a IdentityProvider) -> Self {
        ClientCredentials {
            id: &provider.client_id,
            secret: provider.client_secret.as_ref().map(|s| s.expose()),
        }
    }
}

/// POSTs a token request and returns the JSON answer (an OAuth error → `BadAnswer`).
pub(super) async fn token_request(
    client: &HttpClient,
    endpoint: &str,
    credentials: ClientCredentials<'_>,
    auth: ClientAuth,
    form: &[(&str, &str)],
) -> Result<serde_json::Map<String, Value>, LoginError> {
    let (client_id, secret) = (credentials.id, credentials.secret);
    // Built in one expression: the serializer is not `Send` and must not live across an await.
    let body = {
        let mut body = form_urlencoded::Serializer::new(String::new());
        for (name, value) in form {
            body.append_pair(name, value);
        }
        match (auth, secret) {
            (ClientAuth::Post, Some(secret)) => {
                body.append_pair("client_id", client_id);
                body.append_pair("client_secret", secret);
            }
            (_, None) => {
                body.append_pair("client_id", client_id);
            }
            (ClientAuth::Basic, Some(_)) => {}
        }
        body.finish()
    };
    let mut request = Request::post(endpoint)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json");
    if let (ClientAuth::Basic, Some(secret)) = (auth, secret) {
        let encode = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        let credentials = format!("{}:{}", encode(client_id), encode(secret));
        request = request.header(
            header::AUTHORIZATION,
            format!("Basic {}", STANDARD.encode(credentials)),
        );
    }
    let request = request
        .body(body::full(Bytes::from(body)))
        .map_err(|e| LoginError::BadAnswer(e.to_string()))?;
    let fetched = outbound::fetch(client, request, MAX_ANSWER_BYTES, CALL_TIMEOUT)
        .await
        .map_err(|e| LoginError::Unreachable(e.to_string()))?;
    let answer: serde_json::Map<String, Value> =
        serde_json::from_slice(&fetched.body).map_err(|_| {
            LoginError::BadAnswer(format!(
                "the token endpoint answered HTTP {} without a JSON object",
                fetched.status
            ))
        })?;
    // GitHub answers errors with 200 and an `error` member.
    if let Some(error) = answer.get("error").and_then(Value::as_str) {
        return Err(match error {
            "invalid_grant" | "bad_refresh_token" | "bad_verification_code" => {
                LoginError::Refused(error.to_string())
            }
            _ => LoginError::BadAnswer(format!("the token endpoint answered {error}")),
        });
    }
    if !fetched.status.is_success() {
        return Err(LoginError::BadAnswer(format!(
            "the token endpoint answered HTTP {}",
            fetched.status
        )));
    }
    Ok(answer)
}

/// GETs a JSON document with the person's access token.
pub(super) async fn get_json(
    client: &HttpClient,
    url: &str,
    access_token: &str,
    extra: &[(&'static str, &'static str)],
) -> Result<Value, LoginError> {
    let mut request = Request::get(url)
        .header(header::ACCEPT, "application/json")
        .header(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {access_token}"))
                .map_err(|_| LoginError::BadAnswer("unusable access token".into()))?,
        )
        .header(header::USER_AGENT, "mcp-auth-gateway");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let request = request
        .body(body::empty())
        .map_err(|e| LoginError::BadAnswer(e.to_string()))?;
    let fetched = outbound::fetch(client, request, MAX_ANSWER_BYTES, CALL_TIMEOUT)
        .await
        .map_err(|e| LoginError::Unreachable(e.to_string()))?;
    if !fetched.status.is_success() {
        return Err(LoginError::BadAnswer(format!(
            "{url} answered HTTP {}",
            fetched.status
        )));
    }
    serde_json::from_slice(&fetched.body)
        .map_err(|_| LoginError::BadAnswer(format!("{url} did not answer JSON")))
}

/// The properties behind [`fuzz_provider_answer`] (and the property tests): every parser of
/// provider answers runs on one JSON value, and each verdict is compared with an
/// independent reading of the same JSON. Fixed settings: client id [`CLIENT_ID`], nonce
/// [`NONCE`], OIDC issuers [`ISSUER`] / [`PLAIN_ISSUER`], and allowlists that name
/// `example.com` + group `mcp` (OIDC) or user `octocat`, organisation `acme` and team
/// `acme/platform` (GitHub).
mod fuzzing {
    use http::Uri;
    use jsonwebtoken::Algorithm;
    use serde_json::{Map, Value};

    use super::{github, oidc, ClientAuth, ProviderTokens};
    use crate::config::identity_providers::{Allowlist, IdentityProvider, ProviderKind};

    pub(super) const CLIENT_ID: &str = "gw";
    pub(super) const NONCE: &str = "n-0S6_WzA2Mj";
    pub(super) const ISSUER: &str = "https://idp.example";
    pub(super) const PLAIN_ISSUER: &str = "http://127.0.0.1:8080";
    /// The `sub` of the ID token a whole answer is merged into as userinfo.
    pub(super) const SUBJECT: &str = "248289761001";

    pub(super) fn check_answer(answer: &Value) {
        if let Value::Object(map) = answer {
            check_tokens(map);
            check_discovery(map);
            check_id_token(map);
            check_identity(map);
            // The answer as userinfo for a fixed ID token, and as ID token claims with a
            // `userinfo` member.
            let mut id_token = Map::new();
            id_token.insert("sub".into(), SUBJECT.into());
            id_token.insert("email".into(), "jane@example.com".into());
            check_merge(id_token, answer);
            let mut claims = map.clone();
            if let Some(info) = claims.remove("userinfo") {
                check_merge(claims, &info);
            }
        }
        check_github(answer);
        super::connect::check_answer(answer);
    }

    /// A non-empty string member.
    fn text<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
        map.get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    }

    fn check_tokens(answer: &Map<String, Value>) {
        match ProviderTokens::from_answer(answer) {
            Ok(tokens) => {
                assert_eq!(
                    Some(tokens.access_token.as_str()),
                    text(answer, "access_token")
                );
                assert_eq!(
                    tokens.refresh_token.as_deref(),
                    text(answer, "refresh_token")
                );
                assert_eq!(
                    tokens.expires_in,
                    answer.get("expires_in").and_then(Value::as_u64)
                );
            }
            Err(_) => assert!(text(answer, "access_token").is_none()),
        }
    }

    fn check_discovery(document: &Map<String, Value>) {
        let own = document
            .get("issuer")
            .and_then(Value::as_str)
            .map(|i| i.trim_end_matches('/'));
        for configured in [Some(ISSUER), Some(PLAIN_ISSUER), own]
            .into_iter()
            .flatten()
        {
            let Ok(found) = oidc::check_discovery(document, configured) else {
                continue;
            };
            let member = |name: &str| document.get(name).and_then(Value::as_str);
            assert_eq!(member("issuer"), Some(found.issuer.as_str()));
            assert_eq!(found.issuer.trim_end_matches('/'), configured);
            let plain_ok = found.issuer.starts_with("http://");
            for (name, value) in [
                (
                    "authorization_endpoint",
                    Some(&found.authorization_endpoint),
                ),
                ("token_endpoint", Some(&found.token_endpoint)),
                ("userinfo_endpoint", found.userinfo_endpoint.as_ref()),
            ] {
                assert_eq!(member(name), value.map(String::as_str), "{name}");
                if let Some(value) = value {
                    check_endpoint(name, value, plain_ok, configured);
                }
            }
            let jwks_uri = member("jwks_uri").expect("accepted without jwks_uri");
            check_endpoint("jwks_uri", jwks_uri, plain_ok, configured);
            assert_eq!(jwks_uri.parse::<Uri>().ok().as_ref(), Some(&found.jwks_uri));
            let methods: Vec<&str> = document
                .get("token_endpoint_auth_methods_supported")
                .and_then(Value::as_array)
                .map(|list| list.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let post = !methods.is_empty() && !methods.contains(&"client_secret_basic");
            assert_eq!(found.client_auth == ClientAuth::Post, post, "{methods:?}");
        }
    }

    /// An accepted endpoint is an absolute URL with a host, over https, or over http only
    /// when the issuer is.
    fn check_endpoint(name: &str, value: &str, plain_ok: bool, configured: &str) {
        let uri: Uri = value.parse().expect("accepted an endpoint that is no URL");
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") => assert!(
                plain_ok && !configured.starts_with("https://"),
                "{name} {value:?} is plain http for the issuer {configured}"
            ),
            other => panic!("{name} {value:?} has the scheme {other:?}"),
        }
        assert!(
            uri.host().is_some_and(|host| !host.is_empty()),
            "{name} {value:?} has no host"
        );
    }

    fn check_id_token(claims: &Map<String, Value>) {
        let accepted = oidc::check_id_token(claims, CLIENT_ID, NONCE).is_ok();
        let aud = claims.get("aud");
        let aud_ok = match aud {
            Some(Value::String(aud)) => aud == CLIENT_ID,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(CLIENT_ID)),
            _ => false,
        };
        let several = matches!(aud, Some(Value::Array(list)) if list.len() > 1);
        // azp, when present or when there are several audiences, is this client.
        let azp_ok = match claims.get("azp") {
            None => !several,
            Some(azp) => azp.as_str() == Some(CLIENT_ID),
        };
        let nonce_ok = claims.get("nonce").and_then(Value::as_str) == Some(NONCE);
        assert_eq!(
            accepted,
            aud_ok && azp_ok && nonce_ok,
            "aud ok {aud_ok}, azp ok {azp_ok}, nonce ok {nonce_ok}: {claims:?}"
        );
    }

    /// Userinfo is merged only when it is an object about the same `sub`, and never
    /// overrides a claim; it cannot vouch (`email_verified`) for an email the ID token
    /// named; a refused userinfo changes nothing.
    fn check_merge(mut claims: Map<String, Value>, info: &Value) {
        let before = claims.clone();
        match oidc::merge_userinfo(&mut claims, info.clone()) {
            Ok(()) => {
                let info = info
                    .as_object()
                    .expect("merged a userinfo that is no object");
                assert_eq!(info.get("sub"), before.get("sub"), "merged another subject");
                for (name, value) in &before {
                    assert_eq!(claims.get(name), Some(value), "userinfo overrode {name}");
                }
                for (name, value) in info {
                    if name == "email_verified" && before.contains_key("email") {
                        assert_eq!(
                            claims.get(name),
                            before.get(name),
                            "userinfo vouched for the ID token's email"
                        );
                        continue;
                    }
                    let kept = before.get(name).unwrap_or(value);
                    assert_eq!(claims.get(name), Some(kept), "{name} lost");
                }
                assert!(claims
                    .keys()
                    .all(|k| before.contains_key(k) || info.contains_key(k)));
                check_identity(&claims);
            }
            Err(_) => assert_eq!(claims, before, "a refused userinfo changed the claims"),
        }
    }

    fn check_identity(claims: &Map<String, Value>) {
        let verified = oidc::email_verified(claims);
        assert_eq!(
            verified,
            matches!(claims.get("email_verified"), Some(Value::Bool(true)))
                || claims.get("email_verified") == Some(&Value::from("true"))
        );
        for groups_claim in ["groups", "roles"] {
            let identity = match oidc::identity_from_claims(claims, groups_claim) {
                Ok(identity) => identity,
                Err(_) => {
                    assert!(text(claims, "sub").is_none(), "refused a subject");
                    continue;
                }
            };
            assert_eq!(Some(identity.id.as_str()), text(claims, "sub"));
            assert_eq!(
                identity.username.as_deref(),
                text(claims, "preferred_username")
            );
            assert_eq!(identity.name.as_deref(), text(claims, "name"));
            assert_eq!(identity.email.as_deref(), text(claims, "email"));
            let groups: Vec<&str> = match claims.get(groups_claim) {
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
                Some(Value::String(one)) => vec![one.as_str()],
                _ => Vec::new(),
            };
            assert_eq!(identity.groups, groups);
            assert!(identity.tokens.access_token.is_empty());
            check_oidc_allowed(identity.email.as_deref(), verified, &identity.groups);
        }
    }

    fn oidc_provider(email_domains: &[&str], groups: &[&str], all: bool) -> IdentityProvider {
        IdentityProvider {
            id: "corp".into(),
            display_name: "Corp".into(),
            client_id: CLIENT_ID.into(),
            client_secret: None,
            scopes: vec!["openid".into()],
            kind: ProviderKind::Oidc {
                issuer: ISSUER.into(),
                groups_claim: "groups".into(),
                algorithms: vec![Algorithm::RS256],
            },
            allow: Allowlist {
                all,
                email_domains: email_domains.iter().map(|d| d.to_string()).collect(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                ..Allowlist::default()
            },
        }
    }

    /// Exactly: a verified email whose domain (after the last `@`, ignoring ASCII case) is
    /// a listed one — never one that merely ends or starts with it — and a listed group.
    pub(super) fn check_oidc_allowed(email: Option<&str>, verified: bool, groups: &[String]) {
        let domain_ok = email
            .and_then(|e| e.rsplit_once('@'))
            .is_some_and(|(_, domain)| domain.eq_ignore_ascii_case("example.com"));
        let group_ok = groups.iter().any(|g| g == "mcp");
        let cases = [
            (
                oidc_provider(&["example.com"], &["mcp"], false),
                verified && domain_ok && group_ok,
            ),
            (
                oidc_provider(&["example.com"], &[], false),
                verified && domain_ok,
            ),
            (oidc_provider(&[], &["mcp"], false), group_ok),
            (oidc_provider(&["example.com"], &["mcp"], true), true),
        ];
        for (provider, expected) in cases {
            let allowed = oidc::allowed(&provider, email, verified, groups);
            assert_eq!(
                allowed.is_ok(),
                expected,
                "{:?}: email {email:?} (verified {verified}), groups {groups:?}",
                provider.allow
            );
            if let Err(error) = allowed {
                assert!(matches!(error, super::LoginError::NotAllowed(_)));
            }
        }
    }

    fn check_github(answer: &Value) {
        let entries = answer.as_array().map(Vec::as_slice).unwrap_or_default();
        let organizations = github::organization_logins(answer);
        let with_login = entries
            .iter()
            .filter(|e| e.get("login").is_some_and(Value::is_string))
            .count();
        assert_eq!(organizations.len(), with_login);
        assert!(organizations
            .iter()
            .all(|o| !o.bytes().any(|b| b.is_ascii_uppercase())));
        let teams = github::team_names(answer);
        assert!(teams.len() <= entries.len());
        for (org, team) in &teams {
            assert!(!format!("{org}{team}")
                .bytes()
                .any(|b| b.is_ascii_uppercase()));
            assert!(entries.iter().any(|e| {
                e.get("slug")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.eq_ignore_ascii_case(team))
                    && e.get("organization")
                        .and_then(|o| o.get("login"))
                        .and_then(Value::as_str)
                        .is_some_and(|o| o.eq_ignore_ascii_case(org))
            }));
        }
        // The first primary, verified address, and only when it is a non-empty string.
        let first = entries.iter().find(|e| {
            e.get("primary") == Some(&Value::Bool(true))
                && e.get("verified") == Some(&Value::Bool(true))
        });
        let expected = first
            .and_then(|e| e.get("email"))
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty());
        assert_eq!(github::primary_verified_email(entries).as_deref(), expected);

        let profile = github::user_profile(answer);
        let object = answer.as_object();
        let member = |name: &str| object.and_then(|o| text(o, name));
        match &profile {
            Ok(profile) => {
                let id = answer.get("id").and_then(Value::as_u64).expect("a u64 id");
                assert_eq!(profile.id, id.to_string());
                assert_eq!(Some(profile.login.as_str()), member("login"));
                assert_eq!(profile.name.as_deref(), member("name"));
                assert_eq!(profile.email.as_deref(), member("email"));
            }
            Err(_) => assert!(
                answer.get("id").and_then(Value::as_u64).is_none() || member("login").is_none()
            ),
        }

        let raw_groups = answer
            .get("groups")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let groups: Vec<String> = organizations
            .iter()
            .cloned()
            .chain(teams.iter().map(|(org, team)| format!("{org}/{team}")))
            .chain(
                raw_groups
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string),
            )
            .collect();
        let login = answer.get("login").and_then(Value::as_str);
        check_github_allowed(login, &groups);
    }

    fn github_provider(allow: Allowlist) -> IdentityProvider {
        IdentityProvider {
            id: "github".into(),
            display_name: "GitHub".into(),
            client_id: "gh".into(),
            client_secret: None,
            scopes: Vec::new(),
            kind: ProviderKind::GitHub {
                web_url: "https://github.com".into(),
                api_url: "https://api.github.com".into(),
            },
            allow,
        }
    }

    /// Exactly: the user `octocat`, or a group that is `acme` or `acme/platform`, ignoring
    /// ASCII case; so never an `org/` or `/team` shape.
    pub(super) fn check_github_allowed(login: Option<&str>, groups: &[String]) {
        let provider = github_provider(Allowlist {
            users: vec!["octocat".into()],
            organizations: vec!["acme".into()],
            teams: vec![("acme".into(), "platform".into())],
            ..Allowlist::default()
        });
        let expected = login.is_some_and(|l| l.eq_ignore_ascii_case("octocat"))
            || groups
                .iter()
                .any(|g| g.eq_ignore_ascii_case("acme") || g.eq_ignore_ascii_case("acme/platform"));
        let allowed = github::allowed(&provider, login, groups);
        assert_eq!(allowed, expected, "login {login:?}, groups {groups:?}");
        let upper = login.map(str::to_ascii_uppercase);
        let upper_groups: Vec<String> = groups.iter().map(|g| g.to_ascii_uppercase()).collect();
        assert_eq!(
            github::allowed(&provider, upper.as_deref(), &upper_groups),
            allowed
        );
        for group in groups {
            let shapes = [format!("{group}/"), format!("/{group}")];
            assert!(!github::allowed(&provider, None, &shapes), "{shapes:?}");
        }
        let everyone = github_provider(Allowlist {
            all: true,
            ..Allowlist::default()
        });
        assert!(github::allowed(&everyone, login, groups));
        let nobody = github_provider(Allowlist::default());
        assert!(!github::allowed(&nobody, login, groups));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_tokens_or_the_pkce_verifier() {
        let tokens = ProviderTokens {
            access_token: "gho_secret".into(),
            refresh_token: Some("ghr_secret".into()),
            expires_in: Some(60),
        };
        let login = LoginState {
            provider: "github".into(),
            request_id: "r".into(),
            session: [0; 32],
            code_verifier: "verifier-secret".into(),
            nonce: "nonce-secret".into(),
            client_id: None,
            issuer: None,
            expires_at: 1,
        };
        let shown = format!("{tokens:?} {login:?}");
        for secret in [
            "gho_secret",
            "ghr_secret",
            "verifier-secret",
            "nonce-secret",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
    use proptest::prelude::*;
    use serde_json::json;

    /// JSON values shaped like provider answers: members and strings are often the names
    /// and values the parsers look for, so the generated answers reach past the first check.
    pub(super) fn json_value() -> impl Strategy<Value = Value> {
        let names = prop_oneof![
            3 => prop::sample::select(vec![
                "access_token", "refresh_token", "expires_in", "issuer",
                "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
                "token_endpoint_auth_methods_supported", "sub", "aud", "azp", "nonce", "email",
                "email_verified", "preferred_username", "name", "groups", "roles", "userinfo",
                "id", "login", "slug", "organization", "primary", "verified",
                "resource", "authorization_servers", "scopes_supported",
                "registration_endpoint", "code_challenge_methods_supported",
                "client_id_metadata_document_supported", "client_id",
            ])
            .prop_map(str::to_string),
            1 => "[a-z_]{0,12}",
        ];
        let strings = prop_oneof![
            3 => prop::sample::select(vec![
                "", "gw", "other", fuzzing::NONCE, fuzzing::SUBJECT, fuzzing::ISSUER,
                "https://idp.example/", fuzzing::PLAIN_ISSUER, "https://idp.example/token",
                "http://idp.example/token", "https:///token", "/token", "client_secret_basic",
                "client_secret_post", "true", "a@example.com", "a@EXAMPLE.COM",
                "a@evil-example.com", "a@example.com.evil", "a@b@example.com", "mcp",
                "octocat", "OctoCat", "acme", "ACME", "acme/", "/platform", "acme/platform",
                "platform", "S256", "https://mcp.example/mcp", "https://MCP.example/mcp/",
                "https://auth.example", "https://auth.example/token", "read write",
            ])
            .prop_map(str::to_string),
            1 => ".{0,16}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            strings.prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((names.clone(), inner), 0..10)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    fn answer(value: Value) -> serde_json::Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn token_answers() {
        let tokens = ProviderTokens::from_answer(&answer(json!({
            "access_token": "at", "refresh_token": "rt", "expires_in": 3600, "token_type": "Bearer"
        })))
        .unwrap();
        assert_eq!(tokens.access_token, "at");
        assert_eq!(tokens.refresh_token.as_deref(), Some("rt"));
        assert_eq!(tokens.expires_in, Some(3600));
        // GitHub OAuth app tokens: no refresh token, no expiry.
        let tokens = ProviderTokens::from_answer(&answer(
            json!({"access_token": "gho_x", "refresh_token": ""}),
        ))
        .unwrap();
        assert_eq!(tokens.refresh_token, None);
        assert_eq!(tokens.expires_in, None);
        let odd = ProviderTokens::from_answer(&answer(
            json!({"access_token": "at", "refresh_token": 5, "expires_in": -1}),
        ))
        .unwrap();
        assert_eq!((odd.refresh_token, odd.expires_in), (None, None));
        assert_eq!(
            ProviderTokens::from_answer(&answer(json!({"access_token": "at", "expires_in": "60"})))
                .unwrap()
                .expires_in,
            None
        );
        for refused in [
            json!({}),
            json!({"access_token": ""}),
            json!({"access_token": 5}),
            json!({"access_token": ["at"]}),
            json!({"error": "bad_verification_code"}),
        ] {
            assert!(
                ProviderTokens::from_answer(&answer(refused.clone())).is_err(),
                "{refused}"
            );
        }
    }

    #[test]
    fn fuzz_entry_point_takes_any_bytes() {
        for data in [
            &b""[..],
            b"null",
            b"[]",
            b"{}",
            b"\xff\xfe",
            b"{\"sub\": \"248289761001\", \"aud\": \"gw\", \"nonce\": \"n-0S6_WzA2Mj\"}",
            b"[{\"login\": \"Acme\"}, {\"slug\": \"x\", \"organization\": {\"login\": \"A\"}}]",
        ] {
            fuzz_provider_answer(data);
        }
    }

    proptest! {
        /// Arbitrary JSON never panics any parser, and every property of the fuzz target
        /// holds (`fuzzing::check_answer`).
        #[test]
        fn any_answer_keeps_every_property(value in json_value()) {
            fuzzing::check_answer(&value);
        }

        #[test]
        fn any_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
            fuzz_provider_answer(&data);
        }
    }
}
