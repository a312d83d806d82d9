//! The request pipeline: every request — inline or through `/verify` — goes through the
//! same ordered phases (DESIGN.md "The request pipeline"). Each phase is a function in its
//! own module that either passes the request on or fails with a [`Rejection`]. This file
//! holds the order and nothing else.
//!
//! Phases 7 (MCP policy), 8 (limits) and 11 (response filter) arrive with their own issues;
//! their slots are marked below.

pub mod audit;
pub mod credential;
pub mod forward;
pub mod identity;
pub mod limits;
pub mod mcp_policy;
pub mod policy;
pub mod rejection;
pub mod request;
pub mod rewrite;
pub mod route;
pub mod session;
pub mod transport;
pub mod user_token;
pub mod verify;

use std::sync::Arc;

use crate::auth::Principal;
use crate::config::Config;
use crate::model::route::Route;
use credential::Credential;
use policy::Admission;
use rejection::Rejection;
use request::RequestView;

/// A refusal, with what was known when it was made (for the audit event: who was refused,
/// on which route).
#[derive(Debug)]
pub struct Denial {
    pub rejection: Rejection,
    pub route: Option<Arc<Route>>,
    pub principal: Option<Arc<Principal>>,
}

impl From<Rejection> for Denial {
    fn from(rejection: Rejection) -> Self {
        Denial {
            rejection,
            route: None,
            principal: None,
        }
    }
}

impl Denial {
    fn on(route: &Arc<Route>, principal: Option<&Arc<Principal>>, rejection: Rejection) -> Self {
        Denial {
            rejection,
            route: Some(route.clone()),
            principal: principal.cloned(),
        }
    }
}

/// Phases 1–8: decide whether this request may reach its upstream, and as whom.
/// `/verify` stops here; inline mode goes on to rewrite (9) and forward (10).
pub async fn admit(config: &Config, request: &RequestView<'_>) -> Result<Admission, Denial> {
    // 1. Route — on the raw path, refusing anything ambiguous, so the path we authorize is
    //    byte for byte the path the upstream receives.
    let route = route::resolve(&config.routes, request)?;
    let refused = |rejection| Denial::on(&route, None, rejection);

    // 2. Transport guard — before credentials: a DNS-rebinding page or an oversized request
    //    is refused whatever token it carries, and no token is evaluated for it.
    transport::guard(&route, request, &config.server.limits).map_err(refused)?;
    if transport::is_preflight(request) {
        return Ok(Admission::Preflight(route));
    }

    // A token in the query string is refused even where none is needed: it would reach
    // the upstream's logs.
    credential::refuse_query_token(request, &route).map_err(refused)?;

    // 3. Built-in endpoints (health, metadata, /verify) are mounted by `server::router`
    //    ahead of this function; here only the route's own public sub-paths remain.
    if route.unauthenticated || route.is_public_path(request.path) {
        return Ok(Admission::Public(route));
    }

    // 4. Credential — exactly one bearer token, from the header only.
    let max_token_bytes = config.server.limits.max_token_bytes;
    let token = match credential::extract(request, &route, max_token_bytes).map_err(refused)? {
        Credential::Bearer(token) => token,
        Credential::Missing => {
            return Err(refused(Rejection::MissingCredential(
                route.challenge.clone(),
            )))
        }
    };

    // 5. Verify — who is this, and was the token issued for this resource?
    let principal = verify::principal(&config.verifiers, &route, token)
        .await
        .map_err(refused)?;

    // 6. Route policy — required scopes and access rules; the only producer of a `Grant`.
    let grant = policy::grant(&route, &principal)
        .map_err(|rejection| Denial::on(&route, Some(&principal), rejection))?;

    // 7. MCP policy — (next issue) per tool / prompt / resource rules on the JSON-RPC body.
    // 8. Limits — (next issue) rate limits per principal, route and tool.
    Ok(Admission::Granted(grant))
}
