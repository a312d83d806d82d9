//! Phase 5 — Verify: the route's verifiers turn the token into a `Principal`, and the token
//! must have been issued for this resource (RFC 8707 audience, MCP authorization
//! "Token Audience Binding and Validation").

use std::sync::Arc;

use super::rejection::Rejection;
use crate::auth::audience;
use crate::auth::{Principal, Verifiers, VerifyError};
use crate::model::route::Route;

pub async fn principal(
    verifiers: &Verifiers,
    route: &Route,
    token: &str,
) -> Result<Arc<Principal>, Rejection> {
    let principal =
        verifiers
            .verify(&route.verifiers, token)
            .await
            .map_err(|error| match error {
                VerifyError::Invalid(reason) => {
                    Rejection::InvalidToken(route.challenge.clone(), reason)
                }
                VerifyError::Unavailable(reason) => {
                    Rejection::VerifierUnavailable(route.challenge.clone(), reason)
                }
            })?;
    // An identity the upstream cannot receive exactly is refused, never sent in part.
    super::identity::encoded(&principal)
        .map_err(|reason| Rejection::InvalidToken(route.challenge.clone(), reason))?;
    if !audience_accepted(&principal, route) {
        return Err(Rejection::InvalidToken(
            route.challenge.clone(),
            "token was not issued for this resource",
        ));
    }
    Ok(principal)
}

/// API keys are not audience-bound; tokens must name this route's resource (or a parent
/// resource on a path boundary) or an audience the issuer configuration accepts.
fn audience_accepted(principal: &Principal, route: &Route) -> bool {
    match &principal.audiences {
        None => true,
        Some(audiences) => {
            principal.issuer_audience_matched || audience::any_covers(audiences, &route.audiences)
        }
    }
}
