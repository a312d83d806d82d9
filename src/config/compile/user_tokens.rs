//! `[routes.upstream_token]`: which per-user token a route forwards, and in which header.
//! Whether the provider exists, a sealing key is set and the route accepts the
//! authorization server's tokens is checked with the authorization server
//! (`compile::authorization_server`).

use std::path::Path;
use std::sync::Arc;

use http::HeaderName;

use super::server::{is_reserved_header, is_set_on_every_request, SET_ON_EVERY_REQUEST_REASON};
use super::Collector;
use crate::auth::audience;
use crate::config::raw::{RawUpstreamOAuth, RawUpstreamToken};
use crate::config::secret;
use crate::model::header_spelling::reads_as;
use crate::model::route::{Upstream, UpstreamOAuth, UserTokenForwarding, UserTokenSource};

pub(super) fn compile_user_token(
    raw: &RawUpstreamToken,
    route_id: &str,
    upstream: &Upstream,
    upstream_headers: &[HeaderName],
    path: &str,
    base_dir: &Path,
    c: &mut Collector,
) -> Option<UserTokenForwarding> {
    let header = match &raw.header {
        None => http::header::AUTHORIZATION,
        Some(name) => c.ok(
            &format!("{path}.header"),
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not a valid header name"))
                .and_then(|h| {
                    if is_reserved_header(&h) {
                        Err(format!("{name:?} cannot carry a token"))
                    } else if is_set_on_every_request(&h) {
                        Err(format!("{name:?} {SET_ON_EVERY_REQUEST_REASON}: choose e.g. \"X-Upstream-Token\""))
                    } else {
                        Ok(h)
                    }
                }),
        )?,
    };
    if upstream_headers
        .iter()
        .any(|credential| reads_as(credential.as_str(), header.as_str()))
    {
        c.push(
            format!("{path}.header"),
            format!(
                "{header} is also one of upstream_headers: the route can send only one of them"
            ),
        );
    }
    let (source, key) = match (&raw.provider, &raw.oauth) {
        (Some(provider), None) => (
            UserTokenSource::Provider(provider.clone()),
            provider.clone(),
        ),
        (None, Some(oauth)) => {
            let oauth = upstream_oauth(
                oauth,
                route_id,
                upstream,
                &format!("{path}.oauth"),
                base_dir,
                c,
            )?;
            let key = connection_key(&oauth);
            (UserTokenSource::UpstreamOAuth(Arc::new(oauth)), key)
        }
        (Some(_), Some(_)) => {
            c.push(
                path,
                "has both provider and [oauth]: choose where the users' tokens come from (the identity provider they log in with, or the upstream's own authorization server)",
            );
            return None;
        }
        (None, None) => {
            c.push(
                path,
                "needs provider = \"<identity provider id>\" or an [oauth] table (tokens from the upstream's own authorization server)",
            );
            return None;
        }
    };
    Some(UserTokenForwarding {
        source,
        key,
        bearer: header == http::header::AUTHORIZATION,
        header,
    })
}

/// Under which name users' tokens for this route are kept: the route and what they were
/// obtained for, so that tokens for one upstream are never sent to another after a reload
/// points the route elsewhere (they are then simply not found, and users reconnect).
fn connection_key(oauth: &UpstreamOAuth) -> String {
    let target = format!(
        "{}\u{0}{}",
        oauth.resource,
        oauth.authorization_server.as_deref().unwrap_or("")
    );
    let digest = crate::auth::api_key::sha256(target.as_bytes());
    let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("route:{}:{short}", oauth.route_id)
}

/// Route ids appear in the callback path `/connect/<id>/callback`: URL-safe characters only.
fn url_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && id != "."
        && id != ".."
}

fn upstream_oauth(
    raw: &RawUpstreamOAuth,
    route_id: &str,
    upstream: &Upstream,
    path: &str,
    base_dir: &Path,
    c: &mut Collector,
) -> Option<UpstreamOAuth> {
    if !url_safe_id(route_id) {
        c.push(
            path,
            format!("the route id {route_id:?} is part of the callback URL /connect/<id>/callback: use letters, digits, '-', '_' or '.' (at most 64)"),
        );
    }
    let resource = match &raw.resource {
        Some(resource) => c.ok(&format!("{path}.resource"), http_url(resource))?,
        None => format!(
            "{}://{}{}",
            upstream.scheme, upstream.authority, upstream.base_path
        ),
    };
    let authorization_server = match &raw.authorization_server {
        Some(issuer) => Some(c.ok(&format!("{path}.authorization_server"), http_url(issuer))?),
        None => None,
    };
    let client_id = raw.client_id.clone().filter(|id| !id.is_empty());
    let client_secret = c
        .ok(
            &format!("{path}.client_secret"),
            secret::resolve_optional(
                raw.client_secret_env.as_deref(),
                raw.client_secret_file.as_deref(),
                base_dir,
                "client_secret_env / client_secret_file",
            ),
        )
        .flatten();
    let secret_configured = raw.client_secret_env.is_some() || raw.client_secret_file.is_some();
    if secret_configured && client_id.is_none() {
        c.push(
            format!("{path}.client_secret_env"),
            "a client secret needs the client_id it belongs to (client_id = \"…\")",
        );
    }
    if secret_configured && authorization_server.is_none() {
        c.push(
            format!("{path}.client_secret_env"),
            "a client secret goes only to a server named here: set authorization_server (otherwise the upstream's metadata would choose where it is sent)",
        );
    }
    for scope in &raw.scopes {
        if scope.is_empty() || scope.contains(' ') {
            c.push(
                format!("{path}.scopes"),
                format!("{scope:?} is not a scope (no spaces, not empty)"),
            );
        }
    }
    Some(UpstreamOAuth {
        route_id: route_id.to_string(),
        resource: audience::canonical(&resource),
        authorization_server,
        client_id,
        client_secret,
        scopes: raw.scopes.clone(),
    })
}

/// An absolute http(s) URL without fragment, userinfo or query.
fn http_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("{text:?} must be an https URL"));
    }
    if url.fragment().is_some() || url.query().is_some() || !url.username().is_empty() {
        return Err(format!(
            "{text:?} must have no query, fragment or user name"
        ));
    }
    Ok(text.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_ids_in_callback_paths_are_url_safe() {
        assert!(url_safe_id("linear"));
        assert!(url_safe_id("mcp.v2_a-b"));
        for id in ["", ".", "..", "a/b", "a b", "a%2f", "é", &"x".repeat(65)] {
            assert!(!url_safe_id(id), "{id:?}");
        }
    }

    #[test]
    fn tokens_are_kept_per_route_and_upstream() {
        let oauth = |resource: &str, server: Option<&str>| UpstreamOAuth {
            route_id: "linear".into(),
            resource: resource.into(),
            authorization_server: server.map(str::to_string),
            client_id: None,
            client_secret: None,
            scopes: Vec::new(),
        };
        let key = connection_key(&oauth("https://a.example/mcp", None));
        assert!(key.starts_with("route:linear:"), "{key}");
        assert_eq!(key, connection_key(&oauth("https://a.example/mcp", None)));
        assert_ne!(key, connection_key(&oauth("https://b.example/mcp", None)));
        assert_ne!(
            key,
            connection_key(&oauth(
                "https://a.example/mcp",
                Some("https://auth.example")
            ))
        );
    }

    #[test]
    fn urls_are_absolute_http_without_query_or_fragment() {
        assert_eq!(
            http_url("https://auth.example/").as_deref(),
            Ok("https://auth.example")
        );
        assert!(http_url("https://auth.example/t?x=1").is_err());
        assert!(http_url("https://auth.example/#f").is_err());
        assert!(http_url("https://u@auth.example/").is_err());
        assert!(http_url("ftp://auth.example/").is_err());
        assert!(http_url("/relative").is_err());
    }
}
