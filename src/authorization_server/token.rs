//! The token endpoint (RFC 6749 §3.2): `authorization_code` with PKCE, `refresh_token` with
//! rotation, `client_credentials` for machine clients. Access tokens are RFC 9068 JWTs;
//! refresh tokens are opaque and stored as digests.

use crate::body::RequestBody;
use aws_lc_rs::constant_time::verify_slices_are_equal;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::authorize::resolve_resource;
use super::clients::{self, Client};
use super::error::{ErrorCode, OAuthError};
use super::http::{is_form, json_no_store, read_body, Params};
use super::store::{CodeGrant, Redemption, RefreshGrant, Rotation, UserIdentity};
use super::{digest, random_token, Context};
use crate::auth::api_key::sha256;
use crate::auth::audience;
use crate::auth::local::LOCAL_AUTHORITY;
use crate::auth::principal::now_unix;
use crate::body::Body;

/// A refresh-token family lives at most this many `refresh_token_ttl`s, however often it
/// is refreshed (30 days sliding → 90 days absolute by default).
const FAMILY_LIFETIME_FACTOR: u64 = 3;

pub async fn token(context: &Context<'_>, request: Request<RequestBody>) -> Response<Body> {
    match exchange(context, request).await {
        Ok(body) => json_no_store(StatusCode::OK, &body),
        Err(error) => error.response(),
    }
}

async fn exchange(
    context: &Context<'_>,
    request: Request<RequestBody>,
) -> Result<Value, OAuthError> {
    let (parts, body) = request.into_parts();
    if parts.method != Method::POST {
        return Err(OAuthError::invalid_request("the token endpoint takes POST"));
    }
    if !is_form(&parts.headers) {
        return Err(OAuthError::invalid_request(
            "send application/x-www-form-urlencoded parameters",
        ));
    }
    let params = Params::parse(
        &read_body(body)
            .await
            .map_err(|e| OAuthError::invalid_request(e.to_string()))?,
    );
    if let Some(name) = params.duplicated() {
        return Err(OAuthError::invalid_request(format!(
            "parameter {name} appears more than once"
        )));
    }
    let client = clients::authenticate(context, &parts.headers, &params).await?;
    let grant_type = params
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
    if !client.allows_grant(grant_type) && grant_type != "refresh_token" {
        return Err(match grant_type {
            "authorization_code" | "client_credentials" => OAuthError::new(
                ErrorCode::UnauthorizedClient,
                format!("this client is not allowed the {grant_type} grant"),
            ),
            _ => OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "use authorization_code, refresh_token or client_credentials",
            ),
        });
    }
    match grant_type {
        "authorization_code" => authorization_code(context, &client, &params).await,
        "refresh_token" => refresh_token(context, &client, &params).await,
        "client_credentials" => client_credentials(context, &client, &params).await,
        _ => Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "use authorization_code, refresh_token or client_credentials",
        )),
    }
}

/// RFC 7636 §4.1: 43–128 characters of `[A-Za-z0-9-._~]`.
fn verifier_well_formed(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let computed = URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()));
    verify_slices_are_equal(computed.as_bytes(), challenge.as_bytes()).is_ok()
}

async fn authorization_code(
    context: &Context<'_>,
    client: &Client,
    params: &Params,
) -> Result<Value, OAuthError> {
    let code = params
        .get("code")
        .ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
    let verifier = params.get("code_verifier").ok_or_else(|| {
        OAuthError::invalid_request("code_verifier is missing (PKCE is required)")
    })?;
    let now = now_unix();
    let grant: CodeGrant = match context
        .store()
        .redeem_code(digest(code), &client.client_id, now)
        .await?
    {
        Redemption::Fresh(grant) => grant,
        Redemption::Replayed(grant) => {
            // OAuth 2.1 §4.1.3: a code used twice was stolen or leaked; what it issued dies.
            let revoked = context.store().revoke_family(&grant.family_id, now).await?;
            for (jti, expires_at) in &revoked {
                LOCAL_AUTHORITY.revoke(jti, *expires_at);
            }
            tracing::warn!(client_id = %grant.client_id, revoked = revoked.len(),
                "authorization code replayed: the tokens it issued are revoked");
            return Err(OAuthError::invalid_grant(
                "the authorization code was already used",
            ));
        }
        Redemption::Unknown => {
            return Err(OAuthError::invalid_grant(
                "the authorization code is unknown or expired",
            ))
        }
    };
    if grant.client_id != client.client_id {
        return Err(OAuthError::invalid_grant(
            "the authorization code was issued to another client",
        ));
    }
    // RFC 6749 §4.1.3: repeated, and identical, when the authorization request named it.
    match params.get("redirect_uri") {
        Some(uri) if uri != grant.redirect_uri => {
            return Err(OAuthError::invalid_grant(
                "redirect_uri differs from the authorization request",
            ))
        }
        None if grant.redirect_uri_given => {
            return Err(OAuthError::invalid_grant(
                "redirect_uri is required: the authorization request named one",
            ))
        }
        _ => {}
    }
    if !verifier_well_formed(verifier) || !pkce_matches(verifier, &grant.code_challenge) {
        return Err(OAuthError::invalid_grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    if let Some(resource) = params.get("resource") {
        if audience::canonical(resource) != grant.resource {
            return Err(OAuthError::new(
                ErrorCode::InvalidTarget,
                "resource differs from the one authorized",
            ));
        }
    }
    issue(
        context,
        client,
        &grant.user,
        &grant.resource,
        &grant.scopes,
        Some(&grant.family_id),
    )
    .await
}

async fn refresh_token(
    context: &Context<'_>,
    client: &Client,
    params: &Params,
) -> Result<Value, OAuthError> {
    let presented = params
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
    let now = now_unix();
    // Everything that can be checked is checked before rotating (RFC 6749 §6): a request
    // that cannot succeed — another client's token, a wider scope, another resource — must
    // not spend the token. A token already rotated out goes to the rotation first, whose
    // reuse detection must not be sidestepped by a bad parameter.
    let found = context
        .store()
        .refresh(digest(presented), now)
        .await?
        .ok_or_else(|| {
            OAuthError::invalid_grant("the refresh token is unknown, expired or revoked")
        })?;
    if found.grant.client_id != client.client_id {
        return Err(OAuthError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if !found.rotated {
        refresh_parameters(params, &found.grant)?;
    }
    let user = current_user(context, &found.grant.user)?;
    // The upstream's authorization server no longer honours this user's connection (or it
    // was never made): a new access token would only meet 401s. Refused, so that the
    // client signs in again and the user reconnects on the way.
    if !found.rotated
        && super::upstream::connect::lost(context, &found.grant.resource, &user.subject).await?
    {
        return Err(OAuthError::invalid_grant(
            "the connection to the upstream's authorization server is gone: sign in again",
        ));
    }
    let successor = context.server.refresh_successor(presented);
    let mut successor_expires = now + context.settings.refresh_token_ttl.as_secs();
    if found.grant.family_expires_at > 0 {
        successor_expires = successor_expires.min(found.grant.family_expires_at);
    }
    let grant: RefreshGrant = match context
        .store()
        .rotate_refresh(
            digest(presented),
            digest(&successor),
            successor_expires,
            now,
            context.settings.refresh_reuse_grace.as_secs(),
        )
        .await?
    {
        Rotation::Rotated(grant) => *grant,
        Rotation::Reused { revoked_access } => {
            for (jti, expires_at) in &revoked_access {
                LOCAL_AUTHORITY.revoke(jti, *expires_at);
            }
            tracing::warn!(client_id = %client.client_id,
                "rotated refresh token reused: the whole family is revoked");
            return Err(OAuthError::invalid_grant(
                "the refresh token was already used; the session is revoked",
            ));
        }
        Rotation::Invalid => {
            return Err(OAuthError::invalid_grant(
                "the refresh token is unknown, expired or revoked",
            ))
        }
    };
    let scopes = refresh_parameters(params, &grant)?;
    let mut answer = access_token_answer(
        context,
        client,
        &user,
        &grant.resource,
        &scopes,
        Some(&grant.family_id),
    )
    .await?;
    answer["refresh_token"] = json!(successor);
    Ok(answer)
}

/// The user a refresh token speaks for, as the configuration has them now: a local user
/// who was removed gets no more tokens, and changed names or groups show at the next
/// refresh.
fn current_user(context: &Context<'_>, stored: &UserIdentity) -> Result<UserIdentity, OAuthError> {
    match stored.provider.as_deref() {
        Some("client_credentials") => return Ok(stored.clone()),
        Some(_) if super::upstream::still_allowed(context.settings, stored) => {
            return Ok(stored.clone())
        }
        Some(_) => return Err(OAuthError::invalid_grant(
            "the user of this grant is no longer allowed by its identity provider's configuration",
        )),
        None => {}
    }
    context
        .settings
        .users
        .iter()
        .find(|u| u.subject == stored.subject)
        .map(super::authorize::identity_of)
        .ok_or_else(|| OAuthError::invalid_grant("the user of this grant no longer exists"))
}

/// The scopes of a refresh: RFC 6749 §6 allows a narrower scope, never a wider one, and
/// RFC 8707 the same resource only.
fn refresh_parameters(params: &Params, grant: &RefreshGrant) -> Result<Vec<String>, OAuthError> {
    if let Some(resource) = params.get("resource") {
        if audience::canonical(resource) != grant.resource {
            return Err(OAuthError::new(
                ErrorCode::InvalidTarget,
                "resource differs from the original grant",
            ));
        }
    }
    match params.get("scope") {
        Some(requested) => {
            let asked: Vec<String> = requested
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if let Some(extra) = asked.iter().find(|s| !grant.scopes.contains(s)) {
                return Err(OAuthError::new(
                    ErrorCode::InvalidScope,
                    format!("scope {extra} was not part of the original grant"),
                ));
            }
            Ok(asked)
        }
        None => Ok(grant.scopes.clone()),
    }
}

async fn client_credentials(
    context: &Context<'_>,
    client: &Client,
    params: &Params,
) -> Result<Value, OAuthError> {
    if client.secret_sha256.is_none() {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "client_credentials needs a confidential client",
        ));
    }
    let resource = resolve_resource(context, params.get("resource"))?;
    let scopes = clients::grant_scopes(params.get("scope"), resource, client)?;
    let user = UserIdentity {
        subject: client.client_id.clone(),
        provider: Some("client_credentials".into()),
        username: None,
        name: client.name.clone(),
        email: None,
        groups: Vec::new(),
    };
    access_token_answer(context, client, &user, &resource.uri, &scopes, None).await
}

/// Access token plus, for clients allowed to refresh, a new refresh-token family member.
async fn issue(
    context: &Context<'_>,
    client: &Client,
    user: &UserIdentity,
    resource: &str,
    scopes: &[String],
    family_id: Option<&str>,
) -> Result<Value, OAuthError> {
    let mut answer =
        access_token_answer(context, client, user, resource, scopes, family_id).await?;
    if let (true, Some(family_id)) = (client.allows_grant("refresh_token"), family_id) {
        let refresh = random_token();
        let now = now_unix();
        let ttl = context.settings.refresh_token_ttl.as_secs();
        let grant = RefreshGrant {
            family_id: family_id.to_string(),
            client_id: client.client_id.clone(),
            resource: resource.to_string(),
            scopes: scopes.to_vec(),
            user: user.clone(),
            expires_at: now + ttl,
            // Sliding by `refresh_token_ttl`, but a login ends after three of them.
            family_expires_at: now + ttl.saturating_mul(FAMILY_LIFETIME_FACTOR),
        };
        context.store().put_refresh(digest(&refresh), grant).await?;
        answer["refresh_token"] = json!(refresh);
    }
    Ok(answer)
}

/// Signs an RFC 9068 access token and builds the RFC 6749 §5.1 answer.
async fn access_token_answer(
    context: &Context<'_>,
    client: &Client,
    user: &UserIdentity,
    resource: &str,
    scopes: &[String],
    family_id: Option<&str>,
) -> Result<Value, OAuthError> {
    let now = now_unix();
    let ttl = context.settings.access_token_ttl.as_secs();
    let jti = random_token();
    let mut claims = json!({
        "iss": context.settings.issuer,
        "sub": user.subject,
        "aud": resource,
        "exp": now + ttl,
        "iat": now,
        "nbf": now,
        "jti": jti,
        "client_id": client.client_id,
        "scope": scopes.join(" "),
    });
    if let Some(username) = &user.username {
        claims["preferred_username"] = json!(username);
    }
    if let Some(name) = &user.name {
        claims["name"] = json!(name);
    }
    if let Some(email) = &user.email {
        claims["email"] = json!(email);
    }
    if !user.groups.is_empty() {
        claims["groups"] = json!(user.groups);
    }
    let token = context
        .signing_key()
        .active
        .sign("at+jwt", &claims)
        .map_err(|e| OAuthError::new(ErrorCode::ServerError, e.to_string()))?;
    if let Some(family_id) = family_id {
        let live = context
            .store()
            .record_access_token(family_id, &jti, now + ttl)
            .await?;
        if !live {
            LOCAL_AUTHORITY.revoke(&jti, now + ttl);
            return Err(OAuthError::invalid_grant("this grant was revoked"));
        }
    }
    // Only a grant that succeeded counts as use of a registration.
    if client.kind == super::clients::ClientKind::Registered {
        context
            .store()
            .touch_client(
                &client.client_id,
                now + context.settings.registration.ttl.as_secs(),
            )
            .await?;
    }
    tracing::info!(client_id = %client.client_id, subject = %user.subject, %resource,
        "access token issued");
    Ok(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": scopes.join(" "),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(verifier_well_formed(verifier));
        assert!(pkce_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        assert!(!verifier_well_formed("short"));
        assert!(!verifier_well_formed(&"a".repeat(129)));
        assert!(!verifier_well_formed(&format!("{}!", "a".repeat(50))));
    }
}
