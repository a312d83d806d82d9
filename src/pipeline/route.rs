//! Phase 1 — Route: refuse ambiguous paths ([`crate::model::path`]), then pick the route by
//! host and longest path prefix. The path we authorize must be the path the upstream sees, so
//! a path that selects another route (or another public/protected status) once an upstream
//! has case-folded and decoded it is refused too.

use std::borrow::Cow;
use std::sync::Arc;

use super::rejection::Rejection;
use super::request::RequestView;
use crate::model::allowlist::valid_host;
use crate::model::path::{check_path, fold};
use crate::model::route::{Route, RouteTable};

/// Phase 1: a clean path and the route that owns it.
pub fn resolve(table: &RouteTable, request: &RequestView<'_>) -> Result<Arc<Route>, Rejection> {
    check_path(request.path).map_err(Rejection::AmbiguousPath)?;
    if request.host.is_some_and(|host| !valid_host(host)) {
        return Err(Rejection::MalformedHeader("host"));
    }
    let route = table
        .find(request.host, request.path)
        .ok_or(Rejection::NoRoute)?;
    // Most paths are lowercase ASCII without escapes, and most route tables lowercase:
    // folding then borrows and nothing is compared.
    let folded = fold(request.path);
    if matches!(folded, Cow::Owned(_)) || table.has_uppercase_paths() {
        let agrees = table
            .find_folded(request.host, &folded)
            .is_some_and(|other| {
                Arc::ptr_eq(other, route)
                    && other.is_public_folded(&folded) == route.is_public_path(request.path)
            });
        if !agrees {
            return Err(Rejection::AmbiguousPath(
                "the path selects another route or access once case-folded or decoded",
            ));
        }
    }
    Ok(route.clone())
}
