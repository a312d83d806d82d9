//! Discovery: the RFC 8414 metadata document (also as OpenID Provider metadata, for clients
//! that try that first) and the JWKS.
//!
//! Clients build the well-known URL from the issuer: `/.well-known/oauth-authorization-server`
//! followed by the issuer's path (RFC 8414 §3.1), or for OIDC also the issuer followed by
//! `/.well-known/openid-configuration`. All of them get the same document; `issuer` is
//! byte-identical to the routes' `authorization_servers` entry and to the `iss` of our
//! redirects.

use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::http::{json_no_store, json_public};
use super::{
    Context, AS_METADATA_PREFIX, AUTHORIZE_PATH, INTROSPECT_PATH, JWKS_PATH, OIDC_METADATA_SUFFIX,
    REGISTER_PATH, REVOKE_PATH, TOKEN_PATH,
};
use crate::body::Body;
use crate::config::authorization_server::AuthorizationServerSettings;

pub fn is_metadata_path(settings: &AuthorizationServerSettings, path: &str) -> bool {
    let issuer_path = settings.issuer_path.as_str();
    path == AS_METADATA_PREFIX
        || path == OIDC_METADATA_SUFFIX
        || (!issuer_path.is_empty()
            && (path == format!("{AS_METADATA_PREFIX}{issuer_path}")
                || path == format!("{OIDC_METADATA_SUFFIX}{issuer_path}")))
}

fn method_not_allowed() -> Response<Body> {
    let mut response = json_no_store(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error": "invalid_request", "error_description": "use GET"}),
    );
    response.headers_mut().insert(
        http::header::ALLOW,
        http::HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    response
}

pub fn metadata(context: &Context<'_>, method: &Method, _path: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed();
    }
    json_public(&document(context.settings))
}

pub fn jwks(context: &Context<'_>, method: &Method) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed();
    }
    let mut response = json_public(&context.signing_key().jwks);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/jwk-set+json"),
    );
    response
}

/// RFC 8414 §2 metadata, with the OpenID Provider members the MCP TypeScript SDK's schema
/// requires when it reads this as OIDC discovery.
pub fn document(settings: &AuthorizationServerSettings) -> Value {
    let url = |path: &str| settings.endpoint(path);
    let mut grant_types = vec!["authorization_code", "refresh_token"];
    if settings
        .clients
        .iter()
        .any(|c| c.grant_types.iter().any(|g| g == "client_credentials"))
    {
        grant_types.push("client_credentials");
    }
    let mut document = json!({
        "issuer": settings.issuer,
        "authorization_endpoint": url(AUTHORIZE_PATH),
        "token_endpoint": url(TOKEN_PATH),
        "jwks_uri": url(JWKS_PATH),
        "revocation_endpoint": url(REVOKE_PATH),
        "introspection_endpoint": url(INTROSPECT_PATH),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grant_types,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": settings.scopes_supported,
        "client_id_metadata_document_supported": settings.cimd.enabled,
        "authorization_response_iss_parameter_supported": true,
        "protected_resources": settings.resources.iter().map(|r| r.uri.as_str()).collect::<Vec<_>>(),
        // OpenID Provider metadata members (the TS SDK validates them on the OIDC URL).
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [super::keys::algorithm_name(settings.signing_algorithm)],
    });
    if settings.registration.enabled {
        document["registration_endpoint"] = json!(url(REGISTER_PATH));
    }
    document
}
