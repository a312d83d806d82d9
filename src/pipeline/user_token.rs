//! Phase 9 for routes with `[routes.upstream_token]`: the header carrying a token obtained
//! for the caller — at their identity provider, or from the upstream's own authorization
//! server — never the client's token, which is always stripped. Only users of the built-in
//! authorization server have one; anyone else is refused.

use http::{HeaderName, HeaderValue};

use super::rejection::Rejection;
use crate::auth::user_tokens::UserTokens;
use crate::auth::{Principal, Verifiers};
use crate::model::route::{Route, UserTokenSource};

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
        origin: forwarding.key.clone(),
    };
    let (Some(principal), Some(tokens)) = (principal, tokens) else {
        return Err(missing());
    };
    // Only the authorization server's users hold such tokens. A provider's token, only for
    // those who logged in through that provider (their subject is `<provider>:<id>`):
    // anyone else naming the same subject is someone else.
    let entitled = match &forwarding.source {
        UserTokenSource::Provider(provider) => principal
            .subject
            .strip_prefix(provider.as_str())
            .is_some_and(|rest| rest.starts_with(':')),
        // Any user; not a machine client (`client_credentials`: its own id is the subject).
        UserTokenSource::UpstreamOAuth(_) => {
            principal.client_id.as_deref() != Some(principal.subject.as_str())
        }
    };
    if !verifiers.is_local(principal) || !entitled {
        return Err(missing());
    }
    let token = tokens
        .token(&principal.subject, &forwarding.key)
        .await
        .map_err(|error| {
            tracing::warn!(route = %route.id, %error, "a user's upstream token is unavailable");
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
