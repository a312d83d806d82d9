//! Phase 9 for routes with `[routes.upstream_token]`: the header carrying the caller's own
//! token at their identity provider (never the client's token, which is always stripped).
//! Only users of the built-in authorization server have one; anyone else is refused.

use http::{HeaderName, HeaderValue};

use super::rejection::Rejection;
use crate::auth::user_tokens::UserTokens;
use crate::auth::{Principal, Verifiers};
use crate::model::route::Route;

/// The header to add upstream, or why the request cannot go on.
pub async fn header(
    route: &Route,
    principal: Option<&Principal>,
    verifiers: &Verifiers,
    tokens: Option<&dyn UserTokens>,
) -> Result<Option<(HeaderName, HeaderValue)>, Rejection> {
    let Some(forwarding) = &route.user_token else {
        return Ok(None);
    };
    let missing = || Rejection::UserTokenMissing {
        challenge: route.challenge.clone(),
        provider: forwarding.provider.clone(),
    };
    let (Some(principal), Some(tokens)) = (principal, tokens) else {
        return Err(missing());
    };
    // Only the authorization server's users, and only those who logged in through this
    // provider (their subject is `<provider>:<id>`): anyone else naming the same subject
    // is someone else.
    let through_provider = principal
        .subject
        .strip_prefix(forwarding.provider.as_str())
        .is_some_and(|rest| rest.starts_with(':'));
    if !verifiers.is_local(principal) || !through_provider {
        return Err(missing());
    }
    let token = tokens
        .token(&principal.subject, &forwarding.provider)
        .await
        .map_err(|error| {
            tracing::warn!(route = %route.id, %error, "a user's provider token is unavailable");
            Rejection::UserTokenUnavailable
        })?
        .ok_or_else(missing)?;
    let text = if forwarding.bearer {
        format!("Bearer {token}")
    } else {
        token
    };
    let mut value = HeaderValue::from_str(&text).map_err(|_| missing())?;
    value.set_sensitive(true);
    Ok(Some((forwarding.header.clone(), value)))
}
