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

mod github;
mod oidc;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
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
}

impl LoginError {
    fn page(&self, provider: &IdentityProvider) -> Response<Body> {
        match self {
            LoginError::Unreachable(_) | LoginError::BadAnswer(_) => error_page(
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
    request: Request<Incoming>,
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
    request: Request<Incoming>,
) -> Response<Body> {
    let Some(provider) = context.settings.identity_provider(provider_id) else {
        return unknown_provider();
    };
    if request.method() != Method::GET {
        return error_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Invalid request",
            "The provider's answer comes as a GET.",
        );
    }
    let params = Params::parse(request.uri().query().unwrap_or("").as_bytes());
    let expired = || {
        error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in is no longer valid. Start again from your application.",
        )
    };
    let Some(state) = params.get("state") else {
        return expired();
    };
    let login = match context
        .store()
        .take_login_state(digest(state), now_unix())
        .await
    {
        Ok(Some(login)) if login.provider == provider.id => login,
        Ok(_) => return expired(),
        Err(_) => return store_unavailable(),
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
    let user = UserIdentity {
        subject: format!("{}:{}", provider.id, identity.id),
        provider: Some(provider.id.clone()),
        username: identity.username,
        name: identity.name,
        email: identity.email,
        groups: identity.groups,
    };
    let pending = match context.store().pending(digest(&login.request_id)).await {
        Ok(Some(pending)) => pending,
        Ok(None) => return expired(),
        Err(_) => return store_unavailable(),
    };
    let client = match clients::resolve(context, &pending.client_id).await {
        Ok(client) => client,
        Err(ResolveError::Unavailable(_)) => return store_unavailable(),
        Err(_) => return expired(),
    };
    tracing::info!(subject = %user.subject, provider = %provider.id, "login through identity provider");
    authorize::signed_in(context, &client, &login.request_id, &pending, user).await
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
    let ProviderKind::Oidc {
        issuer, algorithms, ..
    } = &provider.kind
    else {
        return Err(LoginError::BadAnswer(
            "not an OpenID Connect provider".into(),
        ));
    };
    let key = format!("{issuer} {algorithms:?}");
    let cached = context.server.providers.cached(&key);
    if let Some(found) = &cached {
        if found.fresh() {
            return Ok(found.clone());
        }
    }
    match oidc::discover(&context.config.client, &provider.id, issuer, algorithms).await {
        Ok(found) => {
            let found = Arc::new(found);
            context.server.providers.remember(key, found.clone());
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

/// POSTs a token request and returns the JSON answer (an OAuth error → `BadAnswer`).
pub(super) async fn token_request(
    client: &HttpClient,
    endpoint: &str,
    provider: &IdentityProvider,
    auth: ClientAuth,
    form: &[(&str, &str)],
) -> Result<serde_json::Map<String, Value>, LoginError> {
    let secret = provider.client_secret.as_ref().map(|s| s.expose());
    // Built in one expression: the serializer is not `Send` and must not live across an await.
    let body = {
        let mut body = form_urlencoded::Serializer::new(String::new());
        for (name, value) in form {
            body.append_pair(name, value);
        }
        match (auth, secret) {
            (ClientAuth::Post, Some(secret)) => {
                body.append_pair("client_id", &provider.client_id);
                body.append_pair("client_secret", secret);
            }
            (_, None) => {
                body.append_pair("client_id", &provider.client_id);
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
        let credentials = format!("{}:{}", encode(&provider.client_id), encode(secret));
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
        return Err(LoginError::BadAnswer(format!(
            "the token endpoint refused the code: {error}"
        )));
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
