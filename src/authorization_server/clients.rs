//! Who the client is: resolved from the configuration, the registrations made through DCR,
//! or its metadata document (CIMD), in the MCP specification's priority order; and how it
//! proves it at the token endpoint.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use http::HeaderMap;

use super::cimd;
use super::error::{ErrorCode, OAuthError};
use super::http::{basic_credentials, Params};
use super::Context;
use crate::auth::api_key::sha256;
use crate::config::authorization_server::ProtectedResource;

/// Client metadata documents resolved at once (cache hits are quick, fetches take up to
/// the configured timeout).
static CIMD_FETCH_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);

/// Where a client's registration comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Configured,
    Registered,
    MetadataDocument,
}

/// A client as every endpoint sees it.
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub name: Option<String>,
    pub redirect_uris: Vec<String>,
    /// SHA-256 of its secret; `None` = a public client (PKCE, no secret).
    pub secret_sha256: Option<[u8; 32]>,
    pub grant_types: Vec<String>,
    /// Scopes it may receive; empty = any offered.
    pub scopes: Vec<String>,
    pub logo_uri: Option<String>,
    pub trusted: bool,
    pub kind: ClientKind,
}

impl Client {
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }

    /// The name to show: its own, else the host of its client_id URL, else the id.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            url::Url::parse(&self.client_id)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| self.client_id.clone())
        })
    }
}

/// Why a client could not be resolved. `Unavailable` is ours (store down), the rest the
/// client's.
#[derive(Debug)]
pub enum ResolveError {
    Unknown,
    MetadataDocument(String),
    Unavailable(OAuthError),
}

pub async fn resolve(context: &Context<'_>, client_id: &str) -> Result<Client, ResolveError> {
    if let Some(configured) = context
        .settings
        .clients
        .iter()
        .find(|c| c.client_id == client_id)
    {
        return Ok(Client {
            client_id: configured.client_id.clone(),
            name: configured.client_name.clone(),
            redirect_uris: configured.redirect_uris.clone(),
            secret_sha256: configured.secret_sha256,
            grant_types: configured.grant_types.clone(),
            scopes: configured.scopes.clone(),
            logo_uri: None,
            trusted: configured.trusted,
            kind: ClientKind::Configured,
        });
    }
    if cimd::is_cimd_client_id(client_id) {
        if !context.settings.cimd.enabled {
            return Err(ResolveError::MetadataDocument(
                "client metadata documents are not accepted here".into(),
            ));
        }
        // Anyone can make us resolve a URL client id (at /authorize, /token, …): a few
        // fetches at a time, process-wide, so they cannot become an outbound flood.
        let permit = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            CIMD_FETCH_SLOTS.acquire(),
        )
        .await;
        let Ok(Ok(_permit)) = permit else {
            return Err(ResolveError::Unavailable(OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "too many client metadata documents are being fetched; retry shortly",
            )));
        };
        let document = context
            .server
            .cimd
            .get(
                client_id,
                &context.settings.cimd,
                std::sync::Arc::new(context.config.outbound_tls.clone()),
            )
            .await
            .map_err(|e| ResolveError::MetadataDocument(e.to_string()))?;
        // Until client assertions are verified, a document asking for private_key_jwt would
        // be a confidential client authenticated by nothing.
        if document.token_endpoint_auth_method != "none" {
            return Err(ResolveError::MetadataDocument(
                "only token_endpoint_auth_method none is supported for metadata documents".into(),
            ));
        }
        return Ok(Client {
            client_id: document.client_id.clone(),
            name: Some(document.client_name.clone()),
            redirect_uris: document.redirect_uris.clone(),
            secret_sha256: None,
            grant_types: document.grant_types.clone(),
            scopes: Vec::new(),
            logo_uri: document.logo_uri.clone(),
            trusted: false,
            kind: ClientKind::MetadataDocument,
        });
    }
    let registered = context
        .store()
        .client(client_id)
        .await
        .map_err(|e| ResolveError::Unavailable(e.into()))?
        .ok_or(ResolveError::Unknown)?;
    let metadata = &registered.metadata;
    let strings = |name: &str| -> Vec<String> {
        metadata[name]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Client {
        client_id: registered.client_id.clone(),
        name: metadata["client_name"].as_str().map(str::to_string),
        redirect_uris: strings("redirect_uris"),
        secret_sha256: registered.secret_sha256,
        grant_types: strings("grant_types"),
        scopes: Vec::new(),
        logo_uri: metadata["logo_uri"].as_str().map(str::to_string),
        trusted: false,
        kind: ClientKind::Registered,
    })
}

/// Client authentication at the token, revocation and introspection endpoints: HTTP Basic
/// (`client_secret_basic`), form fields (`client_secret_post`) or a bare `client_id`
/// (`none`, public clients). Exactly one method may be used.
pub async fn authenticate(
    context: &Context<'_>,
    headers: &HeaderMap,
    params: &Params,
) -> Result<Client, OAuthError> {
    let basic = basic_credentials(headers);
    let used_basic = basic.is_some();
    let (client_id, secret) = match basic {
        Some(Ok((id, secret))) => {
            if params.get("client_secret").is_some() {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not Basic and client_secret together",
                ));
            }
            if params.get("client_id").is_some_and(|form_id| form_id != id) {
                return Err(OAuthError::invalid_client(
                    "client_id differs from the Basic credentials",
                )
                .with_basic_challenge(true));
            }
            (id, Some(secret))
        }
        Some(Err(())) => {
            return Err(OAuthError::invalid_client("malformed Basic credentials")
                .with_basic_challenge(true))
        }
        None => match params.get("client_id") {
            Some(id) => (
                id.to_string(),
                params.get("client_secret").map(str::to_string),
            ),
            None => {
                return Err(OAuthError::invalid_client(
                    "client authentication is required (client_id)",
                ))
            }
        },
    };
    let refused = |why: &str| OAuthError::invalid_client(why).with_basic_challenge(used_basic);
    let client = match resolve(context, &client_id).await {
        Ok(client) => client,
        Err(ResolveError::Unavailable(error)) => return Err(error),
        Err(ResolveError::MetadataDocument(why)) => {
            return Err(refused(&format!("client metadata document: {why}")))
        }
        Err(ResolveError::Unknown) => return Err(refused("unknown client")),
    };
    match (&client.secret_sha256, secret) {
        (Some(expected), Some(presented)) => {
            if verify_slices_are_equal(expected, &sha256(presented.as_bytes())).is_err() {
                return Err(refused("wrong client secret"));
            }
        }
        (Some(_), None) => return Err(refused("this client must authenticate with its secret")),
        (None, Some(_)) => {
            return Err(refused(
                "this is a public client: send client_id without a secret",
            ))
        }
        (None, None) => {}
    }
    Ok(client)
}

/// The scopes to grant: what was asked (or, when nothing was, everything the resource
/// offers), intersected with what the resource offers and the client may have. Scopes the
/// resource does not know are dropped (clients routinely add `openid` or `profile`); a
/// request of which nothing remains is refused with `invalid_scope`.
pub fn grant_scopes(
    requested: Option<&str>,
    resource: &ProtectedResource,
    client: &Client,
) -> Result<Vec<String>, OAuthError> {
    let offered = &resource.scopes;
    let allowed = |scope: &str| {
        (resource.offers(scope) || scope == "offline_access")
            && (client.scopes.is_empty() || client.scopes.iter().any(|s| s == scope))
    };
    let mut granted: Vec<String> = match requested {
        Some(text) => {
            let asked: Vec<&str> = text.split(' ').filter(|s| !s.is_empty()).collect();
            let kept: Vec<String> = asked
                .iter()
                .filter(|s| allowed(s))
                .map(|s| s.to_string())
                .collect();
            if kept.is_empty() && !asked.is_empty() {
                return Err(OAuthError::new(
                    ErrorCode::InvalidScope,
                    "none of the requested scopes is offered to this client for this resource",
                ));
            }
            kept
        }
        None => offered.iter().filter(|s| allowed(s)).cloned().collect(),
    };
    granted.sort();
    granted.dedup();
    Ok(granted)
}
