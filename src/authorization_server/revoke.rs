//! Revocation (RFC 7009) and introspection (RFC 7662).
//!
//! A revoked access token is refused by our own routes on the next request: the revocation
//! goes into the in-process set the verifier consults after its cache (`auth::local`), and
//! into the store so that it survives a restart.

use crate::body::RequestBody;
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::clients::{self, Client, ClientKind};
use super::error::OAuthError;
use super::http::{is_form, json_no_store, read_body, Params};
use super::{digest, Context};
use crate::auth::local::LOCAL_AUTHORITY;
use crate::auth::principal::now_unix;
use crate::auth::Principal;
use crate::body::Body;
use crate::config::authorization_server::LOCAL_ISSUER_ID;

async fn read_params(
    context: &Context<'_>,
    request: Request<RequestBody>,
) -> Result<(Client, Params), OAuthError> {
    let (parts, body) = request.into_parts();
    if parts.method != Method::POST || !is_form(&parts.headers) {
        return Err(OAuthError::invalid_request(
            "send a POST with application/x-www-form-urlencoded parameters",
        ));
    }
    let params = Params::parse(
        &read_body(body)
            .await
            .map_err(|e| OAuthError::invalid_request(e.to_string()))?,
    );
    let client = clients::authenticate(context, &parts.headers, &params).await?;
    let token = params.get("token");
    if token.is_none() {
        return Err(OAuthError::invalid_request("token is missing"));
    }
    Ok((client, params))
}

/// One of our access tokens, verified (signature, expiry), or `None`.
async fn our_access_token(context: &Context<'_>, token: &str) -> Option<Principal> {
    let issuer = context
        .config
        .verifiers
        .issuers
        .iter()
        .find(|i| i.id == LOCAL_ISSUER_ID)?;
    issuer.verify(token).await.ok()
}

pub async fn revoke(context: &Context<'_>, request: Request<RequestBody>) -> Response<Body> {
    let (client, params) = match read_params(context, request).await {
        Ok(read) => read,
        Err(error) => return error.response(),
    };
    let token = params.get("token").unwrap_or("");
    // RFC 7009 §2.1: the hint only speeds up the lookup; we look everywhere anyway, so an
    // unknown hint changes nothing.
    match revoke_token(context, &client, token).await {
        // RFC 7009 §2.2: unknown, invalid or foreign tokens get the same 200.
        Ok(()) => json_no_store(StatusCode::OK, &json!({})),
        Err(error) => error.response(),
    }
}

async fn revoke_token(
    context: &Context<'_>,
    client: &Client,
    token: &str,
) -> Result<(), OAuthError> {
    let now = now_unix();
    let store = context.store();
    // Rotated out or not: a refresh token that can still be presented ends its family.
    if let Some(found) = store.refresh(digest(token), now).await? {
        let grant = found.grant;
        if grant.client_id == client.client_id {
            // Revoking a refresh token ends its whole grant, access tokens included.
            for (jti, expires_at) in store.revoke_family(&grant.family_id, now).await? {
                LOCAL_AUTHORITY.revoke(&jti, expires_at);
            }
        }
        return Ok(());
    }
    if let Some(principal) = our_access_token(context, token).await {
        if principal.client_id.as_deref() == Some(client.client_id.as_str()) {
            if let (Some(jti), Some(expires_at)) = (&principal.token_id, principal.expires_at) {
                store.revoke_access_token(jti, expires_at).await?;
                LOCAL_AUTHORITY.revoke(jti, expires_at);
            }
        }
    }
    Ok(())
}

pub async fn introspect(context: &Context<'_>, request: Request<RequestBody>) -> Response<Body> {
    let (client, params) = match read_params(context, request).await {
        Ok(read) => read,
        Err(error) => return error.response(),
    };
    // RFC 7662 §2.1: the caller must be authorized; a public client proves nothing.
    // Only clients the operator configured: a self-registered client would otherwise be a
    // free oracle for stolen tokens.
    if client.secret_sha256.is_none() || client.kind != ClientKind::Configured {
        return OAuthError::invalid_client(
            "introspection is for confidential clients of the configuration",
        )
        .response();
    }
    let token = params.get("token").unwrap_or("");
    match describe(context, token).await {
        Ok(answer) => json_no_store(StatusCode::OK, &answer),
        Err(error) => error.response(),
    }
}

async fn describe(context: &Context<'_>, token: &str) -> Result<Value, OAuthError> {
    let inactive = json!({"active": false});
    let now = now_unix();
    if let Some(found) = context.store().refresh(digest(token), now).await? {
        // A rotated-out token is not active: its grace window is for one racing client,
        // not a second life.
        if found.rotated {
            return Ok(inactive);
        }
        let grant = found.grant;
        return Ok(json!({
            "active": true,
            "token_type": "refresh_token",
            "client_id": grant.client_id,
            "sub": grant.user.subject,
            "aud": grant.resource,
            "scope": grant.scopes.join(" "),
            "iss": context.settings.issuer,
            "exp": grant.expires_at,
        }));
    }
    let Some(principal) = our_access_token(context, token).await else {
        return Ok(inactive);
    };
    if principal
        .token_id
        .as_deref()
        .is_some_and(|jti| LOCAL_AUTHORITY.is_revoked(jti))
    {
        return Ok(inactive);
    }
    let mut answer = json!({
        "active": true,
        "token_type": "Bearer",
        "sub": principal.subject,
        "scope": principal.scopes.join(" "),
        "iss": context.settings.issuer,
        "exp": principal.expires_at,
        "aud": principal.audiences.unwrap_or_default(),
    });
    if let Some(client_id) = principal.client_id {
        answer["client_id"] = json!(client_id);
    }
    if let Some(jti) = principal.token_id {
        answer["jti"] = json!(jti);
    }
    Ok(answer)
}
