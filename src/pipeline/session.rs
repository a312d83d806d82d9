//! Session binding (protocol 2025-06-18 / 2025-11-25), inline and through `/verify`: an
//! `Mcp-Session-Id` belongs to the principal that opened it (see `mcp::sessions`, which
//! also says how replicas share the bindings through Redis).

use http::{HeaderMap, HeaderName, HeaderValue};

use super::rejection::Rejection;
use crate::auth::Principal;
use crate::mcp::sessions::{Claim, Owner, SessionStore, MAX_SESSION_ID_BYTES};
use crate::model::route::Route;

pub const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");

/// The scope a session id is bound in: the upstream server (its host and port), not the
/// route — a second route to the same server must not take another's session there. (Two
/// names of one server — `localhost` and `127.0.0.1` — are two scopes.)
fn scope(route: &Route) -> &str {
    &route.upstream.session_scope
}

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

/// A presented session id (one at most) must belong to this principal; one the gateway has
/// not seen is bound to it (after a restart, or on `/verify`, which never sees the upstream's answer).
/// Unusable ids and other principals' sessions are unknown sessions. An id this process
/// does not know while a shared store (Redis) cannot be asked is refused with a 503: the
/// binding is a security check and is never skipped.
pub async fn check(
    sessions: &dyn SessionStore,
    route: &Route,
    principal: Option<&Principal>,
    headers: &HeaderMap,
) -> Result<(), Rejection> {
    // Two ids are refused (400), never "first wins": the upstream might read the other.
    let presented = super::transport::single(headers, MCP_SESSION_ID)?;
    let (Some(principal), Some(presented)) = (principal, presented) else {
        return Ok(());
    };
    let Some(id) = usable(presented) else {
        return Err(Rejection::SessionNotFound);
    };
    // The hot path: a binding this process knows, no allocation for the principal.
    let in_effect = match sessions.known_owner(scope(route), id) {
        Some(known) => known,
        None => sessions
            .bind(scope(route), id, owner(principal), Claim::Presented)
            .await
            .map_err(|_| Rejection::SessionStoreUnavailable)?,
    };
    if in_effect.subject == principal.subject && in_effect.issuer == principal.issuer {
        Ok(())
    } else {
        Err(Rejection::SessionNotFound)
    }
}

/// Inline, after the upstream answered a request that carried no session id: the session it
/// hands out (the answer to `initialize`) belongs to the caller. With a shared store this
/// waits for Redis (bounded), so another replica refuses the session to anyone else as soon
/// as the client has the id; when Redis cannot be told, the binding is kept here.
pub async fn remember(
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
        // An opened session is always kept here; the error only says Redis was not told.
        let _ = sessions
            .bind(scope(route), id, owner(principal), Claim::Opened)
            .await;
    }
}
