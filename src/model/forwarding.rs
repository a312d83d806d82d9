//! The `X-Forwarded-*` names the gateway sets on every upstream request (phase 9) and reads
//! from a trusted front proxy (`/verify`): one definition for the rewrite, `/verify`, and the
//! configuration check that keeps configured header names apart from them.

use http::HeaderName;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What phase 9 sets on every upstream request besides identity and credentials, in this
/// order.
pub static SET_ON_EVERY_REQUEST: [HeaderName; 3] =
    [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST];
