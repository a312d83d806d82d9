//! Dynamic client registration (RFC 7591) at `/register` and its management protocol
//! (RFC 7592) at `/register/{client_id}`.
//!
//! Open registration is an abuse magnet, so: registrations are rate limited per client
//! address, expire when unused (`registration.ttl`, extended on every use), an identical
//! registration from the same address replaces the previous one if that one was never used,
//! and client ids never start with `https://` (those are metadata documents).

use crate::body::RequestBody;
use aws_lc_rs::constant_time::verify_slices_are_equal;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::error::{ErrorCode, OAuthError};
use super::http::{is_json, json_no_store, read_body};
use super::store::RegisteredClient;
use super::{digest, random_token, Context, REGISTER_PATH};
use crate::auth::api_key::sha256;
use crate::auth::local::LOCAL_AUTHORITY;
use crate::auth::principal::now_unix;
use crate::body::Body;
use crate::config::authorization_server::check_redirect_uri;

const MAX_REDIRECT_URIS: usize = 20;
const MAX_TEXT: usize = 2048;
const MAX_CONTACTS: usize = 5;
const MAX_REGISTRATION_BYTES: usize = 8 * 1024;
/// A registration never used for a grant lives this long (used ones: `registration.ttl`).
const UNUSED_REGISTRATION_SECS: u64 = 24 * 3600;
const AUTH_METHODS: [&str; 3] = ["none", "client_secret_basic", "client_secret_post"];
const GRANTS: [&str; 2] = ["authorization_code", "refresh_token"];

pub async fn handle(context: &Context<'_>, request: Request<RequestBody>) -> Response<Body> {
    if !context.settings.registration.enabled {
        return json_no_store(
            StatusCode::NOT_FOUND,
            &json!({"error": "invalid_request", "error_description": "dynamic client registration is turned off here"}),
        );
    }
    let path = request.uri().path().to_string();
    let result = match path.strip_prefix(REGISTER_PATH).unwrap_or("") {
        "" if request.method() == Method::POST => register(context, request).await,
        "" => Err(OAuthError::invalid_request("register with POST")),
        rest => manage(context, request, rest.trim_start_matches('/')).await,
    };
    result.unwrap_or_else(|error| error.response())
}

fn invalid_metadata(description: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClientMetadata, description)
}

async fn read_metadata(request: Request<RequestBody>) -> Result<Map<String, Value>, OAuthError> {
    let (parts, body) = request.into_parts();
    if !is_json(&parts.headers) {
        return Err(OAuthError::invalid_request(
            "send the metadata as application/json",
        ));
    }
    let bytes = read_body(body)
        .await
        .map_err(|e| OAuthError::invalid_request(e.to_string()))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(invalid_metadata("the body is not a JSON object")),
    }
}

/// Validates client metadata and returns what is registered: the known members, with
/// RFC 7591 §2 defaults filled in. Unknown members are ignored (SEP-837 `application_type`
/// and friends are kept as informational strings).
fn validate(
    context: &Context<'_>,
    metadata: &Map<String, Value>,
) -> Result<Map<String, Value>, OAuthError> {
    let text = |name: &str| -> Result<Option<String>, OAuthError> {
        match metadata.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= MAX_TEXT => Ok(Some(s.clone())),
            _ => Err(invalid_metadata(format!(
                "{name} must be a string of at most 2048 bytes"
            ))),
        }
    };
    let list = |name: &str, default: &[&str]| -> Result<Vec<String>, OAuthError> {
        match metadata.get(name) {
            None | Some(Value::Null) => Ok(default.iter().map(|s| s.to_string()).collect()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) if s.len() <= MAX_TEXT => Ok(s.clone()),
                    _ => Err(invalid_metadata(format!(
                        "{name} must be an array of strings"
                    ))),
                })
                .collect(),
            _ => Err(invalid_metadata(format!(
                "{name} must be an array of strings"
            ))),
        }
    };
    let auth_method =
        text("token_endpoint_auth_method")?.unwrap_or_else(|| "client_secret_basic".to_string());
    if !AUTH_METHODS.contains(&auth_method.as_str()) {
        return Err(invalid_metadata(
            "token_endpoint_auth_method must be none, client_secret_basic or client_secret_post",
        ));
    }
    // Grant types we do not offer are dropped, not refused (clients list what they can do,
    // e.g. the device flow); what is registered is echoed back.
    let grant_types: Vec<String> = list("grant_types", &["authorization_code"])?
        .into_iter()
        .filter(|g| GRANTS.contains(&g.as_str()))
        .collect();
    if grant_types.is_empty() {
        return Err(invalid_metadata(
            "no usable grant type: register authorization_code (and refresh_token)",
        ));
    }
    let response_types = list("response_types", &["code"])?;
    if response_types.iter().any(|r| r != "code") {
        return Err(invalid_metadata("only the code response type is supported"));
    }
    let redirect_uris = list("redirect_uris", &[])?;
    if redirect_uris.is_empty() && grant_types.iter().any(|g| g == "authorization_code") {
        return Err(OAuthError::new(
            ErrorCode::InvalidRedirectUri,
            "redirect_uris is required for the authorization_code grant",
        ));
    }
    if redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(OAuthError::new(
            ErrorCode::InvalidRedirectUri,
            "at most 20 redirect URIs can be registered",
        ));
    }
    for uri in &redirect_uris {
        check_redirect_uri(uri).map_err(|why| {
            OAuthError::new(ErrorCode::InvalidRedirectUri, format!("{uri}: {why}"))
        })?;
    }
    for name in ["logo_uri", "client_uri", "policy_uri", "tos_uri"] {
        if let Some(uri) = text(name)? {
            if !uri.starts_with("https://") || url::Url::parse(&uri).is_err() {
                return Err(invalid_metadata(format!("{name} must be an https URL")));
            }
        }
    }
    let mut registered = Map::new();
    registered.insert("redirect_uris".into(), json!(redirect_uris));
    registered.insert("token_endpoint_auth_method".into(), json!(auth_method));
    registered.insert("grant_types".into(), json!(grant_types));
    registered.insert("response_types".into(), json!(response_types));
    for name in [
        "client_name",
        "client_uri",
        "logo_uri",
        "scope",
        "tos_uri",
        "policy_uri",
        "software_id",
        "software_version",
        "application_type",
    ] {
        if let Some(value) = text(name)? {
            registered.insert(name.into(), json!(value));
        }
    }
    // Scopes we do not offer are dropped (clients add `openid`, `profile`, …).
    if let Some(scope) = text("scope")? {
        let kept: Vec<&str> = scope
            .split(' ')
            .filter(|s| {
                context.settings.scopes_supported.iter().any(|o| o == s) || *s == "offline_access"
            })
            .collect();
        if kept.is_empty() {
            registered.remove("scope");
        } else {
            registered.insert("scope".into(), json!(kept.join(" ")));
        }
    }
    if let Some(contacts) = metadata.get("contacts") {
        if contacts.is_array() {
            let contacts = list("contacts", &[])?;
            if contacts.len() > MAX_CONTACTS {
                return Err(invalid_metadata("at most 5 contacts"));
            }
            registered.insert("contacts".into(), json!(contacts));
        }
    }
    // Every registration is a stored row an anonymous caller creates: keep each small.
    if Value::Object(registered.clone()).to_string().len() > MAX_REGISTRATION_BYTES {
        return Err(invalid_metadata(
            "the registered metadata is larger than 8 KB",
        ));
    }
    Ok(registered)
}

async fn register(
    context: &Context<'_>,
    request: Request<RequestBody>,
) -> Result<Response<Body>, OAuthError> {
    let now = now_unix();
    let address_key = format!("register:{}", context.rate_key());
    let count = context.store().hit(&address_key, now, 3600).await?;
    if count > u64::from(context.settings.registration.per_address_per_hour) {
        tracing::warn!(client = %context.client_address, "client registration rate limit reached");
        return Err(OAuthError::new(
            ErrorCode::SlowDown,
            "too many registrations from this address; retry later",
        )
        .with_retry_after(3600 - now % 3600));
    }
    let metadata = validate(context, &read_metadata(request).await?)?;
    let fingerprint = {
        let canonical = format!(
            "{}|{}",
            Value::Object(metadata.clone()),
            context.client_address
        );
        hex(&sha256(canonical.as_bytes()))
    };
    let replaced = context.store().delete_unused_clients(&fingerprint).await?;
    let client_id = format!("mcp_{}", random_token());
    let public = metadata["token_endpoint_auth_method"] == "none";
    let secret = (!public).then(random_token);
    let registration_token = random_token();
    let client = RegisteredClient {
        client_id: client_id.clone(),
        metadata: Value::Object(metadata),
        secret_sha256: secret.as_deref().map(|s| sha256(s.as_bytes())),
        registration_token_sha256: digest(&registration_token),
        fingerprint,
        issued_at: now,
        expires_at: now
            + context
                .settings
                .registration
                .ttl
                .as_secs()
                .min(UNUSED_REGISTRATION_SECS),
        used: false,
    };
    context.store().put_client(client.clone()).await?;
    tracing::info!(%client_id, replaced, client = %context.client_address, "client registered");
    let mut answer = describe(context, &client);
    answer["registration_access_token"] = json!(registration_token);
    if let Some(secret) = secret {
        answer["client_secret"] = json!(secret);
        answer["client_secret_expires_at"] = json!(0);
    }
    let mut response = json_no_store(StatusCode::CREATED, &answer);
    if let Ok(location) =
        HeaderValue::from_str(answer["registration_client_uri"].as_str().unwrap_or(""))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// The registration as RFC 7591 §3.2.1 / RFC 7592 §3 return it (never the secret again).
fn describe(context: &Context<'_>, client: &RegisteredClient) -> Value {
    let mut answer = client.metadata.clone();
    answer["client_id"] = json!(client.client_id);
    answer["client_id_issued_at"] = json!(client.issued_at);
    answer["registration_client_uri"] = json!(format!(
        "{}/{}",
        context.settings.endpoint(REGISTER_PATH),
        client.client_id
    ));
    answer
}

/// RFC 7592: read, update or delete a registration with its registration access token.
async fn manage(
    context: &Context<'_>,
    request: Request<RequestBody>,
    client_id: &str,
) -> Result<Response<Body>, OAuthError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string());
    let client = context.store().client(client_id).await?;
    let authorized = match (&client, &presented) {
        (Some(client), Some(token)) => {
            verify_slices_are_equal(&client.registration_token_sha256, &digest(token)).is_ok()
        }
        _ => false,
    };
    let (Some(client), true) = (client, authorized) else {
        // RFC 7592 §2: an unknown client and a wrong token look the same.
        let mut response = json_no_store(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_token", "error_description": "unknown client or wrong registration access token"}),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        return Ok(response);
    };
    match *request.method() {
        Method::GET => Ok(json_no_store(StatusCode::OK, &describe(context, &client))),
        Method::DELETE => {
            // RFC 7592 §2.3: the client's grants end with it; its access tokens are refused
            // here at once (other replicas load the revocations on their next poll).
            let deletion = context
                .store()
                .delete_client(&client.client_id, now_unix())
                .await?;
            for (jti, expires_at) in &deletion.revoked_access {
                LOCAL_AUTHORITY.revoke(jti, *expires_at);
            }
            tracing::info!(
                client_id = %client.client_id,
                revoked_access_tokens = deletion.revoked_access.len(),
                "client registration deleted, its grants revoked"
            );
            let mut response = json_no_store(StatusCode::NO_CONTENT, &json!({}));
            *response.body_mut() = crate::body::empty();
            Ok(response)
        }
        Method::PUT => {
            let submitted = read_metadata(request).await?;
            if submitted.get("client_id").and_then(Value::as_str) != Some(client.client_id.as_str())
            {
                return Err(OAuthError::invalid_request(
                    "client_id in the body must be the registration's",
                ));
            }
            if submitted.contains_key("client_secret")
                || submitted.contains_key("registration_access_token")
            {
                return Err(invalid_metadata(
                    "client_secret and registration_access_token cannot be set",
                ));
            }
            let metadata = validate(context, &submitted)?;
            let public_now = metadata["token_endpoint_auth_method"] == "none";
            if public_now != client.secret_sha256.is_none() {
                return Err(invalid_metadata(
                    "token_endpoint_auth_method cannot switch between public and confidential: register a new client",
                ));
            }
            let updated = RegisteredClient {
                metadata: Value::Object(metadata),
                ..client
            };
            context.store().put_client(updated.clone()).await?;
            Ok(json_no_store(StatusCode::OK, &describe(context, &updated)))
        }
        _ => Err(OAuthError::invalid_request("use GET, PUT or DELETE")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
