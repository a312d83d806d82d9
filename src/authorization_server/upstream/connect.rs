//! Tokens from an upstream MCP server's own authorization server, for routes with
//! `[routes.upstream_token.oauth]`. Towards that server the gateway is an MCP client like
//! any other: it discovers the server from the upstream (RFC 9728, RFC 8414), identifies
//! itself with a client id configured there, with its own client metadata document
//! (`/.well-known/oauth-client-metadata`) or by registering (RFC 7591), and asks for a
//! token for the upstream (PKCE S256, RFC 8707 `resource`). Each user connects once, as
//! the last step of signing in:
//!
//! ```text
//!  consent given at the gateway (or remembered); no token kept for (user, route)
//!  ──303──► upstream's /authorize (the person signs in and allows there)
//!  ──► GET /connect/<route id>/callback?code&state[&iss] ──► state taken once, same
//!      browser, iss checked ──► code exchanged ──► tokens sealed, kept for (user, route)
//!  ──► the code for the MCP client, as after any sign-in
//! ```
//!
//! Consent at the gateway always comes first: a client the user never allowed cannot ride
//! on a consent the user once gave the upstream (the confused deputy of the MCP security
//! best practices).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::body::RequestBody;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::{
    sign_in_expired, take_callback_state, token_request, ClientAuth, ClientCredentials, LoginError,
    ProviderTokens,
};
use crate::auth::audience;
use crate::auth::principal::now_unix;
use crate::authorization_server::authorize::{self, error_page, store_unavailable};
use crate::authorization_server::error::{ErrorCode, OAuthError};
use crate::authorization_server::http::{cookie, json_no_store, json_public, redirect, with_query};
use crate::authorization_server::store::{
    LoginState, PendingAuthorization, ProviderToken, StoreResult, UserIdentity,
};
use crate::authorization_server::{digest, random_token, Context};
use crate::body::{self, Body};
use crate::config::authorization_server::AuthorizationServerSettings;
use crate::config::Config;
use crate::model::route::{UpstreamOAuth, UserTokenSource};
use crate::outbound::{self, HttpClient};

/// Where the gateway's client metadata document is served (under the issuer).
pub const CLIENT_METADATA_PATH: &str = "/.well-known/oauth-client-metadata";
/// Callbacks are `/connect/<route id>/callback`.
pub const CONNECT_PREFIX: &str = "/connect/";
/// What was discovered about an upstream's authorization server is used this long.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// How long a registration made on the fly is used before registering again.
const REGISTRATION_TTL: Duration = Duration::from_secs(24 * 3600);
/// Largest metadata document or registration answer read.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `error_description` from the upstream passed on to the MCP client.
const MAX_PASSED_ERROR: usize = 200;

/// What the gateway knows about an upstream's authorization server.
#[derive(Debug, Clone)]
pub(super) struct UpstreamServer {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub registration_endpoint: Option<String>,
    /// `client_id_metadata_document_supported`.
    pub metadata_documents: bool,
    /// RFC 9207: the callback carries `iss`, which must then be there.
    pub iss_parameter: bool,
    /// What the upstream's protected-resource metadata offers (asked for when the route
    /// names no scopes).
    pub scopes: Vec<String>,
}

/// Discovery results and on-the-fly registrations, per process (a replica that did not
/// register keeps the client id it finds in the state or the token record).
#[derive(Default)]
pub struct Connections {
    discovered: Mutex<HashMap<String, (Arc<UpstreamServer>, Instant)>>,
    /// Registrations made on the fly, renewed daily (servers delete clients unused for a
    /// while, and say nothing to the gateway: their authorization page just refuses).
    registered: Mutex<HashMap<String, (String, Instant)>>,
}

impl Connections {
    fn cached(&self, key: &str) -> Option<(Arc<UpstreamServer>, Instant)> {
        self.discovered.lock().ok()?.get(key).cloned()
    }

    fn remember(&self, key: String, server: Arc<UpstreamServer>) {
        if let Ok(mut map) = self.discovered.lock() {
            map.insert(key, (server, Instant::now()));
        }
    }

    fn registration(&self, key: &str) -> Option<String> {
        let map = self.registered.lock().ok()?;
        let (client_id, at) = map.get(key)?;
        (at.elapsed() < REGISTRATION_TTL).then(|| client_id.clone())
    }

    fn remember_registration(&self, key: String, client_id: String) {
        if let Ok(mut map) = self.registered.lock() {
            map.insert(key, (client_id, Instant::now()));
        }
    }

    /// The upstream's authorization server, discovered once an hour (the last good answer
    /// serves while it cannot be reached).
    pub(super) async fn discover(
        &self,
        client: &HttpClient,
        oauth: &UpstreamOAuth,
    ) -> Result<Arc<UpstreamServer>, LoginError> {
        let key = format!(
            "{} {}",
            oauth.resource,
            oauth.authorization_server.as_deref().unwrap_or("")
        );
        let cached = self.cached(&key);
        if let Some((server, at)) = &cached {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(server.clone());
            }
        }
        match discover(client, oauth).await {
            Ok(server) => {
                let server = Arc::new(server);
                self.remember(key, server.clone());
                Ok(server)
            }
            Err(error) => match cached {
                Some((stale, _)) => {
                    tracing::warn!(route = %oauth.route_id, %error, "rediscovering the upstream's authorization server failed; using the last good answer");
                    Ok(stale)
                }
                None => Err(error),
            },
        }
    }
}

/// RFC 9728, then RFC 8414 (or OpenID discovery) at the server it names.
async fn discover(
    client: &HttpClient,
    oauth: &UpstreamOAuth,
) -> Result<UpstreamServer, LoginError> {
    let mut scopes = Vec::new();
    let issuer = match &oauth.authorization_server {
        Some(issuer) => issuer.clone(),
        None => {
            let mut found = None;
            for url in resource_metadata_urls(&oauth.resource) {
                if let Some(document) = fetch_document(client, &url).await? {
                    found = Some(parse_resource_metadata(&document, &oauth.resource)?);
                    break;
                }
            }
            let (issuer, offered) = found.ok_or_else(|| {
                LoginError::BadAnswer(format!(
                    "the upstream {} serves no protected-resource metadata (RFC 9728): set authorization_server",
                    oauth.resource
                ))
            })?;
            scopes = offered;
            issuer
        }
    };
    for url in server_metadata_urls(&issuer) {
        if let Some(document) = fetch_document(client, &url).await? {
            let mut server = parse_server_metadata(&document, &issuer)?;
            server.scopes = scopes;
            return Ok(server);
        }
    }
    Err(LoginError::BadAnswer(format!(
        "{issuer} serves no authorization server metadata (RFC 8414 or OpenID discovery)"
    )))
}

/// GETs a JSON document; `None` when there is none at that address (404 or 405, try the
/// next one).
async fn fetch_document(client: &HttpClient, url: &str) -> Result<Option<Value>, LoginError> {
    let request = Request::get(url)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "mcp-auth-gateway")
        .body(body::empty())
        .map_err(|e| LoginError::BadAnswer(format!("{url}: {e}")))?;
    let fetched = outbound::fetch(client, request, MAX_DOCUMENT_BYTES, CALL_TIMEOUT)
        .await
        .map_err(|e| LoginError::Unreachable(format!("{url}: {e}")))?;
    if matches!(
        fetched.status,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
    ) {
        return Ok(None);
    }
    if !fetched.status.is_success() {
        return Err(LoginError::BadAnswer(format!(
            "{url} answered HTTP {}",
            fetched.status
        )));
    }
    serde_json::from_slice(&fetched.body)
        .map(Some)
        .map_err(|_| LoginError::BadAnswer(format!("{url} did not answer JSON")))
}

/// Origin and path of an http(s) URL (no trailing `/` on the path).
fn split_url(url: &str) -> Option<(String, String)> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let origin = parsed.origin().ascii_serialization();
    let path = parsed.path().trim_end_matches('/').to_string();
    Some((origin, path))
}

/// RFC 9728 §3.1: the well-known name inserted before the resource's path, then at the
/// root (what MCP clients try).
pub(super) fn resource_metadata_urls(resource: &str) -> Vec<String> {
    let Some((origin, path)) = split_url(resource) else {
        return Vec::new();
    };
    let mut urls = vec![format!(
        "{origin}/.well-known/oauth-protected-resource{path}"
    )];
    if !path.is_empty() {
        urls.push(format!("{origin}/.well-known/oauth-protected-resource"));
    }
    urls
}

/// RFC 8414 §3.1 (path inserted), then OpenID Connect discovery both ways — the MCP
/// specification's order.
pub(super) fn server_metadata_urls(issuer: &str) -> Vec<String> {
    let Some((origin, path)) = split_url(issuer) else {
        return Vec::new();
    };
    let mut urls = vec![format!(
        "{origin}/.well-known/oauth-authorization-server{path}"
    )];
    urls.push(format!("{origin}/.well-known/openid-configuration{path}"));
    if !path.is_empty() {
        urls.push(format!("{origin}{path}/.well-known/openid-configuration"));
    }
    urls
}

/// Where the gateway (and the person's browser) may be sent by what an upstream answered:
/// https, or plain http on a loopback host only — an answer must not point at an internal
/// plain-http service or downgrade the person's sign-in.
fn is_acceptable_endpoint(text: &str) -> bool {
    let Ok(url) = url::Url::parse(text) else {
        return false;
    };
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return false;
    }
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Domain(name))) => name.eq_ignore_ascii_case("localhost"),
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        _ => false,
    }
}

/// An RFC 9728 document: its `resource` must be the one asked about (§3.3: otherwise its
/// data must not be used); returns the first authorization server and the scopes offered.
pub(super) fn parse_resource_metadata(
    document: &Value,
    resource: &str,
) -> Result<(String, Vec<String>), LoginError> {
    let bad = |why: String| LoginError::BadAnswer(format!("protected-resource metadata: {why}"));
    let stated = document
        .get("resource")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no resource".into()))?;
    if audience::canonical(stated) != audience::canonical(resource) {
        return Err(bad(format!(
            "it describes {stated:?}, not {resource:?} (set resource to the upstream's public URL)"
        )));
    }
    let issuer = document
        .get("authorization_servers")
        .and_then(Value::as_array)
        .and_then(|servers| servers.first())
        .and_then(Value::as_str)
        .filter(|issuer| is_acceptable_endpoint(issuer))
        .ok_or_else(|| {
            bad("no authorization_servers entry that is https (or http on loopback)".into())
        })?;
    let scopes = strings(document.get("scopes_supported"))
        .into_iter()
        .filter(|s| !s.is_empty() && !s.contains(' '))
        .collect();
    Ok((issuer.to_string(), scopes))
}

/// An RFC 8414 document for `issuer`: the issuer must be the one asked for (a mix-up
/// otherwise), both endpoints http(s), and PKCE S256 supported (MCP clients must refuse a
/// server that does not say so).
pub(super) fn parse_server_metadata(
    document: &Value,
    issuer: &str,
) -> Result<UpstreamServer, LoginError> {
    let bad = |why: &str| {
        LoginError::BadAnswer(format!("authorization server metadata of {issuer}: {why}"))
    };
    let stated = document.get("issuer").and_then(Value::as_str).unwrap_or("");
    if stated.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(bad("its issuer is another one"));
    }
    let endpoint = |name: &str| {
        document
            .get(name)
            .and_then(Value::as_str)
            .filter(|url| is_acceptable_endpoint(url))
            .map(str::to_string)
    };
    let authorization_endpoint =
        endpoint("authorization_endpoint").ok_or_else(|| bad("no https authorization_endpoint"))?;
    let token_endpoint =
        endpoint("token_endpoint").ok_or_else(|| bad("no https token_endpoint"))?;
    if !strings(document.get("code_challenge_methods_supported"))
        .iter()
        .any(|m| m == "S256")
    {
        return Err(bad("PKCE S256 is not in code_challenge_methods_supported"));
    }
    Ok(UpstreamServer {
        issuer: stated.to_string(),
        authorization_endpoint,
        token_endpoint,
        registration_endpoint: endpoint("registration_endpoint"),
        metadata_documents: document
            .get("client_id_metadata_document_supported")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        iss_parameter: document
            .get("authorization_response_iss_parameter_supported")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        scopes: Vec::new(),
    })
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// How the gateway identifies itself to the upstream's authorization server, in the MCP
/// specification's order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ClientChoice {
    /// `client_id` from the configuration (registered there beforehand).
    Configured(String),
    /// The gateway's client metadata document URL (the server accepts them, and the
    /// gateway is served over https, which a document URL must be).
    MetadataDocument(String),
    /// Register at this endpoint (RFC 7591).
    Register(String),
}

/// `document` is the gateway's client metadata document URL.
pub(super) fn choose_client(
    oauth: &UpstreamOAuth,
    server: &UpstreamServer,
    document: &str,
) -> Result<ClientChoice, LoginError> {
    if let Some(id) = &oauth.client_id {
        return Ok(ClientChoice::Configured(id.clone()));
    }
    if server.metadata_documents && document.starts_with("https://") {
        return Ok(ClientChoice::MetadataDocument(document.to_string()));
    }
    match &server.registration_endpoint {
        Some(endpoint) => Ok(ClientChoice::Register(endpoint.clone())),
        None => Err(LoginError::BadAnswer(format!(
            "{} accepts neither client metadata documents (from an https gateway) nor registration: register the gateway there and set client_id",
            server.issuer
        ))),
    }
}

/// The client metadata document of one route's connections. One per route, each with that
/// route's redirect URI only: an upstream cannot send a code meant for it to another
/// route's callback (a mix-up), since no document the gateway publishes allows that pair.
pub fn client_metadata_url(settings: &AuthorizationServerSettings, route_id: &str) -> String {
    settings.endpoint(&format!("{CLIENT_METADATA_PATH}/{route_id}"))
}

fn callback_uri(settings: &AuthorizationServerSettings, route_id: &str) -> String {
    settings.connect_callback_uri(route_id)
}

/// The routes that get their users' tokens from the upstream's authorization server.
fn connected_routes(config: &Config) -> impl Iterator<Item = (&str, &Arc<UpstreamOAuth>)> {
    config.routes.iter().filter_map(|route| {
        let forwarding = route.user_token.as_ref()?;
        match &forwarding.source {
            UserTokenSource::UpstreamOAuth(oauth) => Some((forwarding.key.as_str(), oauth)),
            UserTokenSource::Provider(_) => None,
        }
    })
}

/// The route with this id, when it connects to its upstream's authorization server.
fn connected_route<'c>(
    config: &'c Config,
    route_id: &str,
) -> Option<(&'c str, &'c Arc<UpstreamOAuth>)> {
    connected_routes(config).find(|(_, oauth)| oauth.route_id == route_id)
}

/// `GET /.well-known/oauth-client-metadata/<route id>`: who the gateway is as a client of
/// that route's upstream authorization server (the CIMD draft); 404 for any other route.
pub fn client_metadata(
    config: &Config,
    settings: &AuthorizationServerSettings,
    route_id: &str,
) -> Response<Body> {
    let Some((_, oauth)) = connected_route(config, route_id) else {
        return json_no_store(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "error_description": "no route with this id connects to an upstream authorization server"}),
        );
    };
    let host = |url: &str| {
        url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default()
    };
    let mut document = client_document(settings, vec![callback_uri(settings, route_id)]);
    document["client_id"] = json!(client_metadata_url(settings, route_id));
    // What the person sees on the upstream's consent page: which gateway, for which server.
    let name = format!(
        "MCP gateway at {} for {}",
        host(&settings.issuer),
        host(&oauth.resource)
    );
    // Within what metadata-document readers accept (ours: 200 characters).
    document["client_name"] = json!(if name.chars().count() <= 200 {
        name
    } else {
        "MCP gateway".to_string()
    });
    json_public(&document)
}

/// Whether this authorization must first connect the user to the upstream's authorization
/// server: the resource's route gets tokens there, and none is kept for this user.
pub(in crate::authorization_server) async fn needed<'c>(
    context: &Context<'c>,
    pending: &PendingAuthorization,
    user: &UserIdentity,
) -> StoreResult<Option<(&'c str, &'c Arc<UpstreamOAuth>)>> {
    let Some((key, oauth)) = connected_routes(context.config)
        .find(|(_, oauth)| route_resource_is(context, oauth, &pending.resource))
    else {
        return Ok(None);
    };
    let now = now_unix();
    let held = context
        .store()
        .provider_token(&user.subject, key, now)
        .await?;
    Ok((!held.is_some_and(|token| usable(&token, now))).then_some((key, oauth)))
}

/// A kept token that can still serve: it can be refreshed, or has not expired.
fn usable(token: &ProviderToken, now: u64) -> bool {
    token.refresh.is_some() || token.expires_at.is_none_or(|at| at > now)
}

/// Whether the route that `oauth` belongs to is the one whose resource is `resource`.
fn route_resource_is(context: &Context<'_>, oauth: &UpstreamOAuth, resource: &str) -> bool {
    context
        .config
        .routes
        .iter()
        .any(|route| *route.id == *oauth.route_id && route.resource == resource)
}

/// Whether the tokens kept for `subject` to use `resource` are gone (never connected, or
/// the upstream refused a refresh): a refresh at the gateway is then refused, so that the
/// MCP client signs in again and the user reconnects.
pub(in crate::authorization_server) async fn lost(
    context: &Context<'_>,
    resource: &str,
    subject: &str,
) -> StoreResult<bool> {
    let Some((key, _)) = connected_routes(context.config)
        .find(|(_, oauth)| route_resource_is(context, oauth, resource))
    else {
        return Ok(false);
    };
    let now = now_unix();
    let held = context.store().provider_token(subject, key, now).await?;
    Ok(!held.is_some_and(|token| usable(&token, now)))
}

/// Sends the browser to the upstream's authorization server.
pub(in crate::authorization_server) async fn start(
    context: &Context<'_>,
    key: &str,
    oauth: &UpstreamOAuth,
    request_id: &str,
    pending: &PendingAuthorization,
    session_id: &str,
) -> Response<Body> {
    let client = &context.config.client;
    let connections = &context.server.connections;
    let prepared = async {
        let server = connections.discover(client, oauth).await?;
        let document = client_metadata_url(context.settings, &oauth.route_id);
        let client_id = match choose_client(oauth, &server, &document)? {
            ClientChoice::Configured(id) | ClientChoice::MetadataDocument(id) => id,
            ClientChoice::Register(endpoint) => {
                let redirect_uri = callback_uri(context.settings, &oauth.route_id);
                let registration_key = format!("{endpoint} {redirect_uri}");
                match connections.registration(&registration_key) {
                    Some(id) => id,
                    None => {
                        let id =
                            register(client, &endpoint, context.settings, &redirect_uri).await?;
                        connections.remember_registration(registration_key, id.clone());
                        id
                    }
                }
            }
        };
        Ok::<_, LoginError>((server, client_id))
    };
    let (server, client_id) = match prepared.await {
        Ok(prepared) => prepared,
        Err(error) => {
            tracing::warn!(route = %oauth.route_id, %error, "cannot connect to the upstream's authorization server");
            return give_up(
                context,
                request_id,
                pending,
                ErrorCode::TemporarilyUnavailable,
                &format!(
                    "the authorization server of {} cannot be used right now",
                    oauth.resource
                ),
            )
            .await;
        }
    };
    let code_verifier = random_token();
    let state = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(crate::auth::api_key::sha256(code_verifier.as_bytes()));
    let redirect_uri = callback_uri(context.settings, &oauth.route_id);
    let scopes = if oauth.scopes.is_empty() {
        server.scopes.join(" ")
    } else {
        oauth.scopes.join(" ")
    };
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", client_id.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("state", state.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("resource", oauth.resource.as_str()),
    ];
    if !scopes.is_empty() {
        params.push(("scope", scopes.as_str()));
    }
    let location = with_query(&server.authorization_endpoint, &params);
    let connection = LoginState {
        provider: key.to_string(),
        request_id: request_id.to_string(),
        session: digest(session_id),
        code_verifier,
        nonce: String::new(),
        client_id: Some(client_id.clone()),
        issuer: Some(server.issuer.clone()),
        expires_at: now_unix() + authorize::PENDING_TTL,
    };
    if context
        .store()
        .put_login_state(digest(&state), connection)
        .await
        .is_err()
    {
        return store_unavailable();
    }
    let mut response = redirect(&location);
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
}

/// What the gateway says of itself as a client (RFC 7591 §2): a public client (PKCE, no
/// secret) using the code and refresh grants; `client_uri` only when https (servers refuse
/// other links).
fn client_document(settings: &AuthorizationServerSettings, redirect_uris: Vec<String>) -> Value {
    let mut document = json!({
        "redirect_uris": redirect_uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    if settings.issuer.starts_with("https://") {
        document["client_uri"] = json!(settings.issuer);
    }
    document
}

/// RFC 7591: the gateway as a public client (PKCE, no secret) with one redirect URI.
async fn register(
    client: &HttpClient,
    endpoint: &str,
    settings: &AuthorizationServerSettings,
    redirect_uri: &str,
) -> Result<String, LoginError> {
    let mut document = client_document(settings, vec![redirect_uri.to_string()]);
    document["client_name"] = json!("MCP gateway");
    let request = Request::post(endpoint)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .body(body::full(Bytes::from(document.to_string())))
        .map_err(|e| LoginError::BadAnswer(e.to_string()))?;
    let fetched = outbound::fetch(client, request, MAX_DOCUMENT_BYTES, CALL_TIMEOUT)
        .await
        .map_err(|e| LoginError::Unreachable(format!("{endpoint}: {e}")))?;
    if !fetched.status.is_success() {
        return Err(LoginError::BadAnswer(format!(
            "registration at {endpoint} answered HTTP {}",
            fetched.status
        )));
    }
    let answer: Value = serde_json::from_slice(&fetched.body)
        .map_err(|_| LoginError::BadAnswer(format!("{endpoint} did not answer JSON")))?;
    registered_client_id(&answer)
}

/// The `client_id` of an RFC 7591 answer.
pub(super) fn registered_client_id(answer: &Value) -> Result<String, LoginError> {
    answer
        .get("client_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.len() <= 2048)
        .map(str::to_string)
        .ok_or_else(|| LoginError::BadAnswer("the registration answer has no client_id".into()))
}

/// Ends the MCP client's pending authorization with an error it is told about (RFC 6749
/// §4.1.2.1), rather than a page it never sees.
async fn give_up(
    context: &Context<'_>,
    request_id: &str,
    pending: &PendingAuthorization,
    code: ErrorCode,
    description: &str,
) -> Response<Body> {
    if context
        .store()
        .delete_pending(digest(request_id))
        .await
        .is_err()
    {
        return store_unavailable();
    }
    authorize::error_redirect(
        context,
        &pending.redirect_uri,
        pending.state.as_deref(),
        &OAuthError::new(code, description),
    )
}

/// `GET /connect/<route id>/callback`: the upstream's authorization server sends the
/// browser back.
pub async fn callback(
    context: &Context<'_>,
    route_id: &str,
    request: Request<RequestBody>,
) -> Response<Body> {
    let Some((key, oauth)) = connected_route(context.config, route_id) else {
        return error_page(
            StatusCode::NOT_FOUND,
            "Unknown connection",
            "No route connects here. Start again from your application.",
        );
    };
    let (connection, params) = match take_callback_state(context, &request, key).await {
        Ok(taken) => taken,
        Err(page) => return page,
    };
    // The answer must come back to the browser that started it, signed in as the same
    // person: otherwise someone could attach their upstream account to a victim.
    let session_id = cookie(request.headers(), authorize::cookie_name(context));
    let same_browser = session_id.is_some_and(|session| digest(session) == connection.session);
    let session = match session_id {
        Some(id) if same_browser => context.store().session(digest(id), now_unix()).await,
        _ => Ok(None),
    };
    let user = match session {
        Ok(Some(session)) => session
            .user
            .filter(|user| authorize::still_valid(context, user)),
        Ok(None) => None,
        Err(_) => return store_unavailable(),
    };
    let Some(user) = user else {
        return error_page(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This sign-in was started in another browser or session. Start again from your application.",
        );
    };
    let pending = match context
        .store()
        .pending(digest(&connection.request_id))
        .await
    {
        Ok(Some(pending)) => pending,
        Ok(None) => return sign_in_expired(),
        Err(_) => return store_unavailable(),
    };
    let request_id = connection.request_id.as_str();
    if let Some(error) = params.get("error") {
        let detail: String = params
            .get("error_description")
            .unwrap_or(error)
            .chars()
            .take(MAX_PASSED_ERROR)
            .collect();
        tracing::info!(route = %oauth.route_id, subject = %user.subject, error, "the upstream's authorization server refused the connection");
        return give_up(
            context,
            request_id,
            &pending,
            ErrorCode::AccessDenied,
            &format!("the upstream's authorization server refused: {detail}"),
        )
        .await;
    }
    let redeemed = match params.get("code") {
        Some(code) => redeem(context, oauth, &connection, code, params.get("iss")).await,
        None => Err(LoginError::BadAnswer("the callback has no code".into())),
    };
    let tokens = match redeemed {
        Ok(tokens) => tokens,
        Err(error) => {
            tracing::warn!(route = %oauth.route_id, %error, client = %context.client_address,
                "connecting to the upstream's authorization server failed");
            return give_up(
                context,
                request_id,
                &pending,
                ErrorCode::ServerError,
                &format!(
                    "connecting to the authorization server of {} failed",
                    oauth.resource
                ),
            )
            .await;
        }
    };
    let issuance = super::tokens::Issuance {
        client_id: connection.client_id.clone(),
        issuer: connection.issuer.clone(),
    };
    if let Err(error) = super::tokens::keep(
        context.store(),
        context.settings,
        &user.subject,
        key,
        &tokens,
        issuance,
    )
    .await
    {
        tracing::warn!(route = %oauth.route_id, %error, "cannot keep the user's upstream token");
        return store_unavailable();
    }
    context
        .server
        .provider_tokens
        .invalidate(&(user.subject.clone(), key.to_string()))
        .await;
    tracing::info!(route = %oauth.route_id, subject = %user.subject, "connected to the upstream's authorization server");
    authorize::issue_code(context, &connection.request_id, &pending, user).await
}

/// Checks the callback's `iss` (RFC 9207) and exchanges the code.
async fn redeem(
    context: &Context<'_>,
    oauth: &UpstreamOAuth,
    connection: &LoginState,
    code: &str,
    iss: Option<&str>,
) -> Result<ProviderTokens, LoginError> {
    let client = &context.config.client;
    let server = context.server.connections.discover(client, oauth).await?;
    // The code goes only to the server the browser was sent to.
    if connection.issuer.as_deref() != Some(server.issuer.as_str()) {
        return Err(LoginError::BadAnswer(
            "the upstream names another authorization server than at the start".into(),
        ));
    }
    match iss {
        Some(iss) if iss != server.issuer => {
            return Err(LoginError::BadAnswer(
                "the callback's iss is another issuer".into(),
            ))
        }
        None if server.iss_parameter => {
            return Err(LoginError::BadAnswer(
                "the callback has no iss, which the server promised".into(),
            ))
        }
        _ => {}
    }
    let client_id = connection
        .client_id
        .as_deref()
        .ok_or_else(|| LoginError::BadAnswer("no client id was kept".into()))?;
    let redirect_uri = callback_uri(context.settings, &oauth.route_id);
    let answer = token_request(
        client,
        &server.token_endpoint,
        credentials(oauth, client_id),
        ClientAuth::Basic,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", &connection.code_verifier),
            ("resource", &oauth.resource),
        ],
    )
    .await?;
    ProviderTokens::from_answer(&answer)
}

/// The configured secret goes only with the configured client id.
fn credentials<'a>(oauth: &'a UpstreamOAuth, client_id: &'a str) -> ClientCredentials<'a> {
    ClientCredentials {
        id: client_id,
        secret: oauth
            .client_secret
            .as_ref()
            .filter(|_| oauth.client_id.as_deref() == Some(client_id))
            .map(|s| s.expose()),
    }
}

/// A refresh-token grant at the upstream's authorization server, as the client the tokens
/// were issued to.
pub(super) async fn refresh(
    connections: &Connections,
    client: &HttpClient,
    oauth: &UpstreamOAuth,
    kept: &ProviderToken,
    refresh_token: &str,
) -> Result<ProviderTokens, LoginError> {
    let server = connections.discover(client, oauth).await?;
    // A refresh token goes only to the server that issued it: when the upstream now names
    // another one, the user connects again there.
    if kept
        .issuer
        .as_deref()
        .is_some_and(|issuer| issuer != server.issuer)
    {
        return Err(LoginError::Refused(
            "the upstream names another authorization server now".into(),
        ));
    }
    let client_id = kept
        .client_id
        .as_deref()
        .or(oauth.client_id.as_deref())
        .ok_or_else(|| LoginError::Refused("no client id was kept".into()))?;
    let answer = token_request(
        client,
        &server.token_endpoint,
        credentials(oauth, client_id),
        ClientAuth::Basic,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("resource", &oauth.resource),
        ],
    )
    .await?;
    ProviderTokens::from_answer(&answer)
}

/// Properties of this module's parsers of upstream answers, run by the fuzz target
/// `provider_answers` and the property tests on every JSON value: the protected-resource
/// metadata for `https://mcp.example/mcp` and for the document's own `resource`, the
/// server metadata for `https://auth.example` and for its own `issuer`, a registration
/// answer, and the well-known URLs built from any string member.
pub(super) fn check_answer(answer: &Value) {
    let member = |name: &str| answer.get(name).and_then(Value::as_str);
    for resource in [Some("https://mcp.example/mcp"), member("resource")]
        .into_iter()
        .flatten()
    {
        if let Ok((issuer, scopes)) = parse_resource_metadata(answer, resource) {
            assert_eq!(
                member("resource").map(audience::canonical),
                Some(audience::canonical(resource))
            );
            let first = answer["authorization_servers"][0].as_str();
            assert_eq!(first, Some(issuer.as_str()));
            assert!(is_acceptable_endpoint(&issuer), "{issuer}");
            let offered = strings(answer.get("scopes_supported"));
            for scope in &scopes {
                assert!(!scope.is_empty() && !scope.contains(' ') && offered.contains(scope));
            }
        }
    }
    for issuer in [Some("https://auth.example"), member("issuer")]
        .into_iter()
        .flatten()
    {
        if let Ok(server) = parse_server_metadata(answer, issuer) {
            assert_eq!(
                server.issuer.trim_end_matches('/'),
                issuer.trim_end_matches('/')
            );
            assert_eq!(
                member("authorization_endpoint"),
                Some(server.authorization_endpoint.as_str())
            );
            assert_eq!(
                member("token_endpoint"),
                Some(server.token_endpoint.as_str())
            );
            for endpoint in [&server.authorization_endpoint, &server.token_endpoint]
                .into_iter()
                .chain(server.registration_endpoint.as_ref())
            {
                assert!(is_acceptable_endpoint(endpoint), "{endpoint}");
            }
            assert!(strings(answer.get("code_challenge_methods_supported"))
                .iter()
                .any(|m| m == "S256"));
            assert_eq!(
                server.metadata_documents,
                answer.get("client_id_metadata_document_supported") == Some(&Value::Bool(true))
            );
        }
    }
    let client_id = member("client_id").filter(|id| !id.is_empty() && id.len() <= 2048);
    assert_eq!(registered_client_id(answer).ok().as_deref(), client_id);
    if let Value::Object(map) = answer {
        for text in map.values().filter_map(Value::as_str) {
            for url in resource_metadata_urls(text)
                .into_iter()
                .chain(server_metadata_urls(text))
            {
                assert!(split_url(&url).is_some(), "{url} from {text:?}");
                assert!(url.contains("/.well-known/"), "{url}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_urls_follow_rfc_9728_and_8414() {
        assert_eq!(
            resource_metadata_urls("https://mcp.example/api/mcp"),
            [
                "https://mcp.example/.well-known/oauth-protected-resource/api/mcp",
                "https://mcp.example/.well-known/oauth-protected-resource"
            ]
        );
        assert_eq!(
            resource_metadata_urls("http://127.0.0.1:8080"),
            ["http://127.0.0.1:8080/.well-known/oauth-protected-resource"]
        );
        assert_eq!(
            server_metadata_urls("https://auth.example/tenant1"),
            [
                "https://auth.example/.well-known/oauth-authorization-server/tenant1",
                "https://auth.example/.well-known/openid-configuration/tenant1",
                "https://auth.example/tenant1/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            server_metadata_urls("https://auth.example"),
            [
                "https://auth.example/.well-known/oauth-authorization-server",
                "https://auth.example/.well-known/openid-configuration"
            ]
        );
        assert!(resource_metadata_urls("ftp://x/y").is_empty());
        assert!(server_metadata_urls("not a url").is_empty());
    }

    #[test]
    fn endpoints_are_https_or_loopback_http() {
        for good in [
            "https://auth.example/token",
            "http://127.0.0.1:8080/token",
            "http://localhost/authorize",
            "http://[::1]:9/x",
        ] {
            assert!(is_acceptable_endpoint(good), "{good}");
        }
        for bad in [
            "http://auth.example/token",
            "http://10.0.0.5/token",
            "https://user@auth.example/",
            "https://auth.example/#f",
            "javascript:alert(1)",
            "/token",
            "ftp://auth.example/",
        ] {
            assert!(!is_acceptable_endpoint(bad), "{bad}");
        }
    }

    #[test]
    fn resource_metadata_must_describe_the_upstream() {
        let document = json!({
            "resource": "https://MCP.example/mcp/",
            "authorization_servers": ["https://auth.example"],
            "scopes_supported": ["read", "write", "bad scope", ""],
        });
        let (issuer, scopes) =
            parse_resource_metadata(&document, "https://mcp.example/mcp").unwrap();
        assert_eq!(issuer, "https://auth.example");
        assert_eq!(scopes, ["read", "write"]);
        for (document, why) in [
            (
                json!({"resource": "https://evil.example/mcp", "authorization_servers": ["https://a"]}),
                "describes",
            ),
            (
                json!({"authorization_servers": ["https://a"]}),
                "no resource",
            ),
            (
                json!({"resource": "https://mcp.example/mcp", "authorization_servers": []}),
                "authorization_servers",
            ),
            (
                json!({"resource": "https://mcp.example/mcp", "authorization_servers": ["javascript:alert(1)"]}),
                "authorization_servers",
            ),
        ] {
            let error = parse_resource_metadata(&document, "https://mcp.example/mcp").unwrap_err();
            assert!(error.to_string().contains(why), "{error}");
        }
    }

    fn server_document() -> Value {
        json!({
            "issuer": "https://auth.example",
            "authorization_endpoint": "https://auth.example/authorize",
            "token_endpoint": "https://auth.example/token",
            "registration_endpoint": "https://auth.example/register",
            "code_challenge_methods_supported": ["S256"],
            "client_id_metadata_document_supported": true,
            "authorization_response_iss_parameter_supported": true,
        })
    }

    #[test]
    fn server_metadata_is_checked() {
        let server = parse_server_metadata(&server_document(), "https://auth.example/").unwrap();
        assert_eq!(server.token_endpoint, "https://auth.example/token");
        assert!(server.metadata_documents && server.iss_parameter);
        for (change, why) in [
            (json!({"issuer": "https://other.example"}), "another"),
            (
                json!({"code_challenge_methods_supported": ["plain"]}),
                "S256",
            ),
            (json!({"token_endpoint": "javascript:x"}), "token_endpoint"),
            (
                json!({"authorization_endpoint": null}),
                "authorization_endpoint",
            ),
        ] {
            let mut document = server_document();
            for (name, value) in change.as_object().unwrap() {
                document[name] = value.clone();
            }
            let error = parse_server_metadata(&document, "https://auth.example").unwrap_err();
            assert!(error.to_string().contains(why), "{error}");
        }
    }

    fn oauth(client_id: Option<&str>) -> UpstreamOAuth {
        UpstreamOAuth {
            route_id: "linear".into(),
            resource: "https://mcp.example/mcp".into(),
            authorization_server: None,
            client_id: client_id.map(str::to_string),
            client_secret: None,
            scopes: Vec::new(),
        }
    }

    #[test]
    fn the_client_is_chosen_in_the_specifications_order() {
        let mut server = parse_server_metadata(&server_document(), "https://auth.example").unwrap();
        let https = "https://gw.example/.well-known/oauth-client-metadata";
        assert_eq!(
            choose_client(&oauth(Some("pre")), &server, https).unwrap(),
            ClientChoice::Configured("pre".into())
        );
        assert_eq!(
            choose_client(&oauth(None), &server, https).unwrap(),
            ClientChoice::MetadataDocument(
                "https://gw.example/.well-known/oauth-client-metadata".into()
            )
        );
        // A document URL must be https: a plain-http gateway registers instead.
        assert_eq!(
            choose_client(
                &oauth(None),
                &server,
                "http://127.0.0.1:1/.well-known/oauth-client-metadata"
            )
            .unwrap(),
            ClientChoice::Register("https://auth.example/register".into())
        );
        server.metadata_documents = false;
        assert_eq!(
            choose_client(&oauth(None), &server, https).unwrap(),
            ClientChoice::Register("https://auth.example/register".into())
        );
        server.registration_endpoint = None;
        assert!(choose_client(&oauth(None), &server, https)
            .unwrap_err()
            .to_string()
            .contains("set client_id"));
    }

    #[test]
    fn registrations_made_on_the_fly_are_renewed_daily() {
        let connections = Connections::default();
        connections.remember_registration("k".into(), "id-1".into());
        assert_eq!(connections.registration("k").as_deref(), Some("id-1"));
        assert_eq!(connections.registration("other"), None);
        let Some(yesterday) = Instant::now().checked_sub(REGISTRATION_TTL) else {
            return; // a machine up for less than a day cannot date an entry that far back
        };
        if let Ok(mut map) = connections.registered.lock() {
            map.insert("k".into(), ("id-1".into(), yesterday));
        }
        assert_eq!(connections.registration("k"), None);
    }

    #[test]
    fn registration_answers_need_a_client_id() {
        assert_eq!(
            registered_client_id(&json!({"client_id": "abc"})).unwrap(),
            "abc"
        );
        for answer in [
            json!({}),
            json!({"client_id": ""}),
            json!({"client_id": 5}),
            json!([]),
        ] {
            assert!(registered_client_id(&answer).is_err(), "{answer}");
        }
    }

    #[test]
    fn the_secret_goes_only_with_the_configured_client() {
        let mut with_secret = oauth(Some("pre"));
        with_secret.client_secret = Some(crate::secret::Secret::new("s3cret".to_string()));
        assert_eq!(credentials(&with_secret, "pre").secret, Some("s3cret"));
        assert_eq!(credentials(&with_secret, "registered").secret, None);
    }
}
