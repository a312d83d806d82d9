//! The authorization endpoint and the pages behind it (OAuth 2.1 §4.1, RFC 7636, 8707,
//! 9207).
//!
//! Order matters: the client and its redirect URI are validated first, and until both are
//! known every error is a page, never a redirect (an unvalidated redirect URI would make us
//! an open redirector). After that, errors go back to the client with `error=`, `state` and
//! `iss`. A valid request is stored (10 minutes, single use) and the browser goes through
//! login and consent; each form carries a CSRF token bound to the browser's session cookie.

use crate::body::RequestBody;
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header;
use http::{Method, Request, Response, StatusCode};

use super::clients::{self, Client, ClientKind, ResolveError};
use super::error::{ErrorCode, OAuthError};
use super::http::{html, is_form, read_body, redirect, session_cookie, with_query, Params};
use super::pages::{self, ConsentView};
use super::store::{BrowserSession, CodeGrant, Consent, PendingAuthorization, UserIdentity};
use super::upstream::connect;
use super::{digest, random_token, Context};
use crate::auth::audience;
use crate::auth::principal::now_unix;
use crate::body::Body;
use crate::config::authorization_server::{redirect_uri_matches, LocalUser, ProtectedResource};

/// A pending authorization request lives this long (login and consent included).
pub(super) const PENDING_TTL: u64 = 600;
/// Failed logins allowed per client address per minute.
const LOGIN_ATTEMPTS_PER_MINUTE: u64 = 10;
/// Sign-in attempts for one username per five minutes, from anywhere.
const LOGIN_ATTEMPTS_PER_ACCOUNT: u64 = 20;
/// Password hashes verified at once (process-wide).
static ARGON2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
/// Longest `state` we echo.
const MAX_STATE_BYTES: usize = 2048;

pub(super) fn cookie_name(context: &Context<'_>) -> &'static str {
    if context.settings.secure_cookies {
        "__Host-mcp-gateway-session"
    } else {
        "mcp-gateway-session"
    }
}

pub(super) fn error_page(status: StatusCode, title: &str, detail: &str) -> Response<Body> {
    html(status, pages::error(title, detail))
}

/// The `error=` redirect of RFC 6749 §4.1.2.1, with `iss` (RFC 9207).
pub(super) fn error_redirect(
    context: &Context<'_>,
    redirect_uri: &str,
    state: Option<&str>,
    error: &OAuthError,
) -> Response<Body> {
    let mut params = vec![
        ("error", error.code.as_str()),
        ("error_description", error.description.as_str()),
    ];
    if let Some(state) = state {
        params.push(("state", state));
    }
    params.push(("iss", context.settings.issuer.as_str()));
    redirect(&with_query(redirect_uri, &params))
}

pub(super) fn store_unavailable() -> Response<Body> {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "The sign-in service cannot reach its storage. Try again in a moment.",
    )
}

/// `GET` (or form `POST`) `/authorize`.
pub async fn authorize(context: &Context<'_>, request: Request<RequestBody>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let params = match parts.method {
        Method::GET | Method::HEAD => Params::parse(parts.uri.query().unwrap_or("").as_bytes()),
        Method::POST if is_form(&parts.headers) => match read_body(body).await {
            Ok(bytes) => Params::parse(&bytes),
            Err(e) => {
                return error_page(StatusCode::BAD_REQUEST, "Invalid request", &e.to_string())
            }
        },
        _ => {
            return error_page(
                StatusCode::METHOD_NOT_ALLOWED,
                "Invalid request",
                "The authorization endpoint takes GET or a form POST.",
            )
        }
    };

    // 1. The client and where to send the answer; until both are known, errors are pages.
    let Some(client_id) = params.get("client_id") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The request names no client (client_id is missing).",
        );
    };
    let client = match clients::resolve(context, client_id).await {
        Ok(client) => client,
        Err(ResolveError::Unknown) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Unknown application",
                "This application is not registered here. It may need to register again.",
            )
        }
        Err(ResolveError::MetadataDocument(why)) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Application not accepted",
                &format!("The application's metadata document was refused: {why}."),
            )
        }
        Err(ResolveError::Unavailable(_)) => return store_unavailable(),
    };
    let redirect_uri = match params.get("redirect_uri") {
        Some(requested) => {
            if !client
                .redirect_uris
                .iter()
                .any(|registered| redirect_uri_matches(registered, requested))
            {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "Invalid redirect",
                    "The application asked to send the answer to an address it did not register.",
                );
            }
            requested.to_string()
        }
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                "The request has no redirect_uri and the application registered several.",
            )
        }
    };
    let state = params.get("state");
    if params.duplicated() == Some("redirect_uri") || params.duplicated() == Some("client_id") {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "A parameter appears more than once.",
        );
    }

    // 2. The rest of the request; errors now go back to the client.
    match validate_request(context, &params, &client) {
        Ok((resource, scopes, code_challenge)) => {
            let pending = PendingAuthorization {
                client_id: client.client_id.clone(),
                redirect_uri,
                redirect_uri_given: params.get("redirect_uri").is_some(),
                state: state.map(str::to_string),
                code_challenge,
                resource: resource.uri.clone(),
                scopes,
                expires_at: now_unix() + PENDING_TTL,
            };
            start_interaction(
                context,
                &parts.headers,
                client,
                pending,
                params.get("prompt"),
            )
            .await
        }
        // RFC 6749 §4.1.2.1: the state goes back, even with the error about its length.
        Err(error) => error_redirect(context, &redirect_uri, state, &error),
    }
}

/// Checks what RFC 6749 §4.1.1, RFC 7636 and RFC 8707 require of the request; returns the
/// resource, the scopes to grant and the PKCE challenge.
fn validate_request<'s>(
    context: &'s Context<'_>,
    params: &Params,
    client: &Client,
) -> Result<(&'s ProtectedResource, Vec<String>, String), OAuthError> {
    if let Some(name) = params.duplicated() {
        return Err(OAuthError::invalid_request(format!(
            "parameter {name} appears more than once"
        )));
    }
    if params
        .get("state")
        .is_some_and(|s| s.len() > MAX_STATE_BYTES)
    {
        return Err(OAuthError::invalid_request(
            "state is longer than 2048 bytes",
        ));
    }
    match params.get("response_type") {
        Some("code") => {}
        Some(_) => {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is supported",
            ))
        }
        None => return Err(OAuthError::invalid_request("response_type is missing")),
    }
    if !client.allows_grant("authorization_code") {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client is not allowed the authorization_code grant",
        ));
    }
    let Some(challenge) = params.get("code_challenge") else {
        return Err(OAuthError::invalid_request(
            "PKCE is required: send code_challenge with code_challenge_method=S256",
        ));
    };
    if params.get("code_challenge_method") != Some("S256") {
        return Err(OAuthError::invalid_request(
            "code_challenge_method must be S256 (plain is not accepted)",
        ));
    }
    // BASE64URL(SHA-256(verifier)): 43 characters of the base64url alphabet.
    let well_formed = challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return Err(OAuthError::invalid_request(
            "code_challenge is not a base64url SHA-256 value",
        ));
    }
    let resource = resolve_resource(context, params.get("resource"))?;
    let scopes = clients::grant_scopes(params.get("scope"), resource, client)?;
    Ok((resource, scopes, challenge.to_string()))
}

/// RFC 8707: the resource must be one of our routes; absent, the only one there is.
pub(super) fn resolve_resource<'s>(
    context: &'s Context<'_>,
    requested: Option<&str>,
) -> Result<&'s ProtectedResource, OAuthError> {
    let resources = &context.settings.resources;
    match requested {
        Some(uri) => {
            if uri.contains('#') || url::Url::parse(uri).is_err() {
                return Err(OAuthError::new(
                    ErrorCode::InvalidTarget,
                    "resource must be an absolute URI without a fragment",
                ));
            }
            let canonical = audience::canonical(uri);
            context.settings.resource(&canonical).ok_or_else(|| {
                OAuthError::new(
                    ErrorCode::InvalidTarget,
                    "resource is not a protected resource of this server",
                )
            })
        }
        None if resources.len() == 1 => Ok(&resources[0]),
        None => Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            "resource is required: this server protects several resources",
        )),
    }
}

/// The browser's session: the one its cookie names, or a new anonymous one.
async fn browser_session(
    context: &Context<'_>,
    headers: &http::HeaderMap,
) -> Result<(String, BrowserSession, bool), OAuthError> {
    let now = now_unix();
    if let Some(id) = super::http::cookie(headers, cookie_name(context)) {
        if let Some(session) = context.store().session(digest(id), now).await? {
            return Ok((id.to_string(), session, false));
        }
    }
    let id = random_token();
    // Anonymous until login: it only has to outlive one pending request, and unauthenticated
    // visitors must not be able to fill the store with long-lived rows.
    let session = BrowserSession {
        user: None,
        expires_at: now + PENDING_TTL,
    };
    context
        .store()
        .put_session(digest(&id), session.clone())
        .await?;
    Ok((id, session, true))
}

fn set_cookie(context: &Context<'_>, response: &mut Response<Body>, session_id: &str) {
    response.headers_mut().append(
        header::SET_COOKIE,
        session_cookie(
            cookie_name(context),
            session_id,
            context.settings.login_session_ttl.as_secs(),
            context.settings.secure_cookies,
        ),
    );
}

/// The CSRF token of a form: an HMAC of the session and the pending request, so a form
/// only works in the browser it was shown in, for the request it was shown for.
fn csrf_token(context: &Context<'_>, session_id: &str, request_id: &str) -> String {
    let tag = hmac::sign(
        &context.server.csrf_key,
        format!("{session_id}|{request_id}").as_bytes(),
    );
    URL_SAFE_NO_PAD.encode(tag.as_ref())
}

pub(super) fn csrf_valid(
    context: &Context<'_>,
    session_id: &str,
    request_id: &str,
    presented: &str,
) -> bool {
    URL_SAFE_NO_PAD.decode(presented).is_ok_and(|tag| {
        hmac::verify(
            &context.server.csrf_key,
            format!("{session_id}|{request_id}").as_bytes(),
            &tag,
        )
        .is_ok()
    })
}

async fn start_interaction(
    context: &Context<'_>,
    headers: &http::HeaderMap,
    client: Client,
    pending: PendingAuthorization,
    prompt: Option<&str>,
) -> Response<Body> {
    let request_id = random_token();
    if context
        .store()
        .put_pending(digest(&request_id), pending.clone())
        .await
        .is_err()
    {
        return store_unavailable();
    }
    let Ok((session_id, session, fresh)) = browser_session(context, headers).await else {
        return store_unavailable();
    };
    let force_login = prompt.is_some_and(|p| p.split(' ').any(|v| v == "login"));
    let force_consent = prompt.is_some_and(|p| p.split(' ').any(|v| v == "consent"));
    let user = session
        .user
        .filter(|_| !force_login)
        .filter(|user| still_valid(context, user));
    let mut response = match user {
        Some(user) => {
            proceed(
                context,
                &client,
                &request_id,
                &pending,
                &user,
                &session_id,
                force_consent,
            )
            .await
        }
        None => login_page(context, &client, &session_id, &request_id, None),
    };
    if fresh {
        set_cookie(context, &mut response, &session_id);
    }
    response
}

/// After login: straight back to the client when consent is remembered (or the client is
/// trusted), else the consent page.
async fn proceed(
    context: &Context<'_>,
    client: &Client,
    request_id: &str,
    pending: &PendingAuthorization,
    user: &UserIdentity,
    session_id: &str,
    force_consent: bool,
) -> Response<Body> {
    let remembered = match context
        .store()
        .consent(&user.subject, &client.client_id)
        .await
    {
        Ok(consent) => consent.is_some_and(|c| {
            c.resource == pending.resource && pending.scopes.iter().all(|s| c.scopes.contains(s))
        }),
        Err(_) => return store_unavailable(),
    };
    // RFC 8252 §8.6: a public client answering on loopback or a custom scheme cannot prove
    // who it is (any local program can claim its client_id), so it always gets the page.
    let provable = client.secret_sha256.is_some() || pending.redirect_uri.starts_with("https://");
    if client.trusted || (remembered && provable && !force_consent) {
        return finish(context, request_id, pending, user.clone(), session_id).await;
    }
    let redirect_host = url::Url::parse(&pending.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| pending.redirect_uri.clone());
    let client_host = url::Url::parse(&client.client_id)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string));
    let redirect_is_loopback =
        matches!(redirect_host.as_str(), "localhost" | "127.0.0.1" | "[::1]");
    let resource_name = context
        .settings
        .resource(&pending.resource)
        .and_then(|r| r.name.clone());
    let csrf = csrf_token(context, session_id, request_id);
    let user_label = user
        .name
        .clone()
        .or(user.email.clone())
        .unwrap_or_else(|| user.subject.clone());
    let logo = match &client.logo_uri {
        Some(logo_uri) => {
            context
                .server
                .logos
                .inlined(logo_uri, &context.settings.cimd, || {
                    std::sync::Arc::new(context.config.outbound_tls.clone())
                })
                .await
        }
        None => None,
    };
    html(
        StatusCode::OK,
        pages::consent(&ConsentView {
            client_name: &client.display_name(),
            client_id: &client.client_id,
            logo: logo.as_deref(),
            redirect_host: &redirect_host,
            redirect_host_differs: client.kind == ClientKind::MetadataDocument
                && client_host.as_deref() != Some(redirect_host.as_str())
                && !redirect_is_loopback,
            redirect_is_loopback,
            resource: &pending.resource,
            resource_name: resource_name.as_deref(),
            scopes: &pending.scopes,
            user: &user_label,
            request: request_id,
            csrf: &csrf,
            base: &context.settings.issuer_path,
        }),
    )
}

/// Consent is given: when the resource's route needs a token from its upstream's
/// authorization server that this user does not hold yet, the browser goes there first
/// (`upstream::connect`, which issues the code when it comes back); else the code now.
async fn finish(
    context: &Context<'_>,
    request_id: &str,
    pending: &PendingAuthorization,
    user: UserIdentity,
    session_id: &str,
) -> Response<Body> {
    match connect::needed(context, pending, &user).await {
        Ok(Some((key, oauth))) => {
            connect::start(context, key, oauth, request_id, pending, session_id).await
        }
        Ok(None) => issue_code(context, request_id, pending, user).await,
        Err(_) => store_unavailable(),
    }
}

/// Issues the code and sends the browser back to the client (RFC 6749 §4.1.2, RFC 9207).
pub(super) async fn issue_code(
    context: &Context<'_>,
    request_id: &str,
    pending: &PendingAuthorization,
    user: UserIdentity,
) -> Response<Body> {
    let code = random_token();
    let now = now_unix();
    let grant = CodeGrant {
        client_id: pending.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        redirect_uri_given: pending.redirect_uri_given,
        code_challenge: pending.code_challenge.clone(),
        resource: pending.resource.clone(),
        scopes: pending.scopes.clone(),
        user,
        family_id: random_token(),
        expires_at: now + context.settings.code_ttl.as_secs(),
    };
    let store = context.store();
    // The pending request goes first, atomically: a consent form submitted twice yields
    // one code.
    match store.delete_pending(digest(request_id)).await {
        Ok(true) => {}
        Ok(false) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Sign-in expired",
                "This sign-in request was already completed. Start again from your application.",
            )
        }
        Err(_) => return store_unavailable(),
    }
    if store.put_code(digest(&code), grant).await.is_err() {
        return store_unavailable();
    }
    let _ = store
        .touch_client(
            &pending.client_id,
            now + context.settings.registration.ttl.as_secs(),
        )
        .await;
    let mut params = vec![("code", code.as_str())];
    if let Some(state) = &pending.state {
        params.push(("state", state));
    }
    params.push(("iss", context.settings.issuer.as_str()));
    redirect(&with_query(&pending.redirect_uri, &params))
}

/// The form fields every page posts back, checked against the session and the request.
pub(super) struct FormContext {
    pub params: Params,
    pub session_id: String,
    pub session: BrowserSession,
    pub request_id: String,
    pub pending: PendingAuthorization,
    pub client: Client,
}

pub(super) async fn read_form(
    context: &Context<'_>,
    request: Request<RequestBody>,
) -> Result<FormContext, Response<Body>> {
    let (parts, body) = request.into_parts();
    if parts.method != Method::POST || !is_form(&parts.headers) {
        return Err(error_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Invalid request",
            "This page only accepts its own form.",
        ));
    }
    let params = match read_body(body).await {
        Ok(bytes) => Params::parse(&bytes),
        Err(e) => {
            return Err(error_page(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                &e.to_string(),
            ))
        }
    };
    let expired = || {
        error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in request is no longer valid. Start again from your application.",
        )
    };
    let now = now_unix();
    let session_id = super::http::cookie(&parts.headers, cookie_name(context))
        .map(str::to_string)
        .ok_or_else(expired)?;
    let session = match context.store().session(digest(&session_id), now).await {
        Ok(Some(session)) => session,
        Ok(None) => return Err(expired()),
        Err(_) => return Err(store_unavailable()),
    };
    let request_id = params.get("request").ok_or_else(expired)?.to_string();
    let csrf = params.get("csrf").unwrap_or("");
    if !csrf_valid(context, &session_id, &request_id, csrf) {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form was not issued to this browser (CSRF check failed). Start again from your application.",
        ));
    }
    let pending = match context.store().pending(digest(&request_id)).await {
        Ok(Some(pending)) => pending,
        Ok(None) => return Err(expired()),
        Err(_) => return Err(store_unavailable()),
    };
    let client = match clients::resolve(context, &pending.client_id).await {
        Ok(client) => client,
        Err(ResolveError::Unavailable(_)) => return Err(store_unavailable()),
        Err(_) => return Err(expired()),
    };
    Ok(FormContext {
        params,
        session_id,
        session,
        request_id,
        pending,
        client,
    })
}

/// `POST /login`: local users (Argon2 hashes from the configuration).
pub async fn login(context: &Context<'_>, request: Request<RequestBody>) -> Response<Body> {
    let form = match read_form(context, request).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let again = |status: StatusCode, message: &str| {
        let mut page = login_page(
            context,
            &form.client,
            &form.session_id,
            &form.request_id,
            Some(message),
        );
        *page.status_mut() = status;
        page
    };
    if context.settings.users.is_empty() {
        return again(
            StatusCode::FORBIDDEN,
            "Local accounts are not enabled here: continue with a provider.",
        );
    }
    let username = form.params.get("username").unwrap_or("");
    // Per address (or IPv6 /64) and per account: spreading guesses over many addresses
    // still meets the account's limit.
    let now = now_unix();
    let by_address = context
        .store()
        .hit(&format!("login:{}", context.rate_key()), now, 60)
        .await;
    let by_account = context
        .store()
        .hit(&format!("login-user:{}", username.to_lowercase()), now, 300)
        .await;
    match (by_address, by_account) {
        (Ok(a), Ok(u)) if a > LOGIN_ATTEMPTS_PER_MINUTE || u > LOGIN_ATTEMPTS_PER_ACCOUNT => {
            return again(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-in attempts. Wait a few minutes and try again.",
            )
        }
        (Ok(_), Ok(_)) => {}
        _ => return store_unavailable(),
    }
    let password = form.params.get("password").unwrap_or("").to_string();
    let user = context
        .settings
        .users
        .iter()
        .find(|u| u.username == username)
        .cloned();
    // Unknown users cost the same hash as known ones: no user enumeration by timing.
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| DUMMY_HASH.to_string());
    // Argon2 costs ~20 MB and tens of milliseconds: at most two at a time, so a login
    // flood cannot take the memory or the blocking pool the store also runs on.
    let Ok(_permit) = ARGON2_SLOTS.acquire().await else {
        return store_unavailable();
    };
    let verified = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| verified) else {
        tracing::info!(client = %context.client_address, "local login failed");
        return again(StatusCode::OK, "Wrong username or password.");
    };
    let identity = identity_of(&user);
    tracing::info!(subject = %identity.subject, "local login");
    signed_in(
        context,
        &form.client,
        &form.request_id,
        &form.pending,
        identity,
    )
    .await
}

/// After a successful login (local or through a provider): a new session for this browser,
/// then consent or straight back to the client.
pub(super) async fn signed_in(
    context: &Context<'_>,
    client: &Client,
    request_id: &str,
    pending: &PendingAuthorization,
    identity: UserIdentity,
) -> Response<Body> {
    // A new session id at login: a session id planted before login is worth nothing.
    let session_id = random_token();
    let session = BrowserSession {
        user: Some(identity.clone()),
        expires_at: now_unix() + context.settings.login_session_ttl.as_secs(),
    };
    if context
        .store()
        .put_session(digest(&session_id), session)
        .await
        .is_err()
    {
        return store_unavailable();
    }
    let mut response = proceed(
        context,
        client,
        request_id,
        pending,
        &identity,
        &session_id,
        false,
    )
    .await;
    set_cookie(context, &mut response, &session_id);
    response
}

/// The login page for a pending request: the providers' buttons and, when local users
/// exist, the password form; every form bound to this browser and this request.
pub(super) fn login_page(
    context: &Context<'_>,
    client: &Client,
    session_id: &str,
    request_id: &str,
    error: Option<&str>,
) -> Response<Body> {
    let csrf = csrf_token(context, session_id, request_id);
    let providers: Vec<(&str, &str)> = context
        .settings
        .identity_providers
        .iter()
        .map(|p| (p.id.as_str(), p.display_name.as_str()))
        .collect();
    html(
        StatusCode::OK,
        pages::login(&pages::LoginView {
            client_name: &client.display_name(),
            base: &context.settings.issuer_path,
            request: request_id,
            csrf: &csrf,
            error,
            local: !context.settings.users.is_empty(),
            providers: &providers,
        }),
    )
}

/// A session's user is still one of ours (a local user removed from the configuration is
/// logged out), with the claims the configuration has now.
pub(super) fn still_valid(context: &Context<'_>, user: &UserIdentity) -> bool {
    match user.provider.as_deref() {
        Some(_) => super::upstream::still_allowed(context.settings, user),
        None => context
            .settings
            .users
            .iter()
            .any(|u| u.subject == user.subject),
    }
}

/// The claims of a local user.
pub(super) fn identity_of(user: &LocalUser) -> UserIdentity {
    UserIdentity {
        subject: user.subject.clone(),
        provider: None,
        username: Some(user.username.clone()),
        name: user.name.clone(),
        email: user.email.clone(),
        groups: user.groups.clone(),
    }
}

/// `POST /consent`: allow or deny; an allowance is remembered per user and client.
pub async fn consent(context: &Context<'_>, request: Request<RequestBody>) -> Response<Body> {
    let form = match read_form(context, request).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let Some(user) = form
        .session
        .user
        .clone()
        .filter(|user| still_valid(context, user))
    else {
        return error_page(
            StatusCode::FORBIDDEN,
            "Not signed in",
            "Sign in first. Start again from your application.",
        );
    };
    match form.params.get("decision") {
        Some("approve") => {
            let consent = Consent {
                scopes: form.pending.scopes.clone(),
                resource: form.pending.resource.clone(),
                granted_at: now_unix(),
            };
            if context
                .store()
                .put_consent(&user.subject, &form.client.client_id, consent)
                .await
                .is_err()
            {
                return store_unavailable();
            }
            finish(
                context,
                &form.request_id,
                &form.pending,
                user,
                &form.session_id,
            )
            .await
        }
        _ => {
            let _ = context
                .store()
                .delete_pending(digest(&form.request_id))
                .await;
            error_redirect(
                context,
                &form.pending.redirect_uri,
                form.pending.state.as_deref(),
                &OAuthError::new(ErrorCode::AccessDenied, "the user denied access"),
            )
        }
    }
}

/// A valid Argon2id hash of a random password nobody knows, verified for unknown users.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3cDtkX5M0SBmvUn9nyyVx6DyBsmYkqJgR8Rj7J1TbjA";

fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::{Argon2, PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// `hash-password`: an Argon2id PHC string with a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::{Argon2, PasswordHasher};
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| "no randomness".to_string())?;
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}
