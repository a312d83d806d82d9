//! Session binding (protocol 2025-06-18 / 2025-11-25), inline and through `/verify`: an
//! `Mcp-Session-Id` belongs to the principal that opened it (see `mcp::sessions`).

use http::{HeaderMap, HeaderName, HeaderValue};

use super::rejection::Rejection;
use crate::auth::Principal;
use crate::mcp::sessions::{Owner, SessionStore, MAX_SESSION_ID_BYTES};
use crate::model::route::Route;

pub const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");

fn owner(principal: &Principal) -> Owner {
    Owner {
        issuer: principal.issuer.clone(),
        subject: principal.subject.clone(),
    }
}

/// A session id the gateway can remember (text, not empty, bounded).
fn usable(value: &HeaderValue) -> Option<&str> {
    value
        .to_str()
        .ok()
        .filter(|id| !id.is_empty() && id.len() <= MAX_SESSION_ID_BYTES)
}

/// A presented session id must belong to this principal; one the gateway has not seen is
/// bound to it (after a restart, or on `/verify`, which never sees the upstream's answer).
/// Unusable ids and other principals' sessions are unknown sessions.
pub fn check(
    sessions: &dyn SessionStore,
    route: &Route,
    principal: Option<&Principal>,
    headers: &HeaderMap,
) -> Result<(), Rejection> {
    let (Some(principal), Some(presented)) = (principal, headers.get(MCP_SESSION_ID)) else {
        return Ok(());
    };
    let me = owner(principal);
    match usable(presented) {
        Some(id) if sessions.bind(&route.id, id, me.clone()) == me => Ok(()),
        _ => Err(Rejection::SessionNotFound),
    }
}

/// Inline, after the upstream answered a request that carried no session id: the session it
/// hands out (the answer to `initialize`) belongs to the caller.
pub fn remember(
    sessions: &dyn SessionStore,
    route: &Route,
    principal: Option<&Principal>,
    request_had_session: bool,
    response: &HeaderMap,
) {
    if request_had_session {
        return;
    }
    if let (Some(principal), Some(id)) = (principal, response.get(MCP_SESSION_ID).and_then(usable))
    {
        sessions.bind(&route.id, id, owner(principal));
    }
}
