//! Phase 6 — Route policy: what a verified caller may do on this route. The only place a
//! [`Grant`] is made, so code that needs one (header injection, `/verify`'s 200) can only run
//! for a request that passed every phase before it.

use std::sync::Arc;

use super::rejection::Rejection;
use crate::auth::Principal;
use crate::model::route::{AccessRules, Route};

/// Evidence that `principal` may use `route`. Fields are private: only `grant` builds one.
#[derive(Debug, Clone)]
pub struct Grant {
    route: Arc<Route>,
    principal: Arc<Principal>,
}

impl Grant {
    pub fn route(&self) -> &Arc<Route> {
        &self.route
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn shared_principal(&self) -> &Arc<Principal> {
        &self.principal
    }
}

/// How a request was let through.
#[derive(Debug, Clone)]
pub enum Admission {
    /// A verified caller with the route's required scopes.
    Granted(Grant),
    /// A public sub-path, or a route configured under `[dangerous] unauthenticated_routes`.
    Public(Arc<Route>),
    /// A CORS preflight from an allowed origin; answered by the gateway, never proxied.
    Preflight(Arc<Route>),
}

impl Admission {
    pub fn route(&self) -> &Arc<Route> {
        match self {
            Admission::Granted(grant) => grant.route(),
            Admission::Public(route) | Admission::Preflight(route) => route,
        }
    }

    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Admission::Granted(grant) => Some(grant.principal()),
            Admission::Public(_) | Admission::Preflight(_) => None,
        }
    }

    pub fn shared_principal(&self) -> Option<&Arc<Principal>> {
        match self {
            Admission::Granted(grant) => Some(grant.shared_principal()),
            Admission::Public(_) | Admission::Preflight(_) => None,
        }
    }
}

/// Required scopes: all of them, or 403 `insufficient_scope` naming what the route needs
/// (MCP authorization "Scope Challenge Handling": the challenge lists the scopes required
/// for the request, so clients that replace their scope set keep what they need).
///
/// Then the route's access rules (allowed subjects, groups, clients). A caller outside them is
/// refused with 403 `access_denied` and *no* challenge: no other token would help, and an
/// `insufficient_scope` challenge would send MCP clients into a pointless step-up.
pub fn grant(route: &Arc<Route>, principal: &Arc<Principal>) -> Result<Grant, Rejection> {
    let missing = route
        .required_scopes
        .iter()
        .any(|scope| !principal.has_scope(scope));
    if missing {
        return Err(Rejection::InsufficientScope(route.challenge.clone()));
    }
    if !access_allowed(&route.access, principal) {
        return Err(Rejection::AccessDenied);
    }
    Ok(Grant {
        route: route.clone(),
        principal: principal.clone(),
    })
}

fn access_allowed(rules: &AccessRules, principal: &Principal) -> bool {
    let subject_ok = rules.subjects.is_empty() || rules.subjects.contains(&principal.subject);
    let group_ok =
        rules.groups.is_empty() || principal.groups.iter().any(|g| rules.groups.contains(g));
    let client_ok = rules.clients.is_empty()
        || principal
            .client_id
            .as_ref()
            .is_some_and(|c| rules.clients.contains(c));
    subject_ok && group_ok && client_ok
}
