//! `authorization_server::cimd::{parse_document, validate_client_id_url, cache_lifetime}`:
//! a client ID metadata document fetched from a URL the client chose (so fully
//! attacker-controlled), the `client_id` URL itself, and the document's `Cache-Control`.
//!
//! Input: the whole input is the document for `https://client.example/meta.json`; when it
//! is UTF-8 it is also tried as a `client_id` URL and as a `Cache-Control` value.
//!
//! Properties: never panics, every error message is printable ASCII without `"` or `\`
//! (it goes out as an OAuth `error_description`), and
//! - `parse_document` accepts only a JSON object whose `client_id` is exactly the URL,
//!   without `client_secret`/`client_secret_expires_at`, with a `client_name` of at most
//!   200 characters holding a letter or digit and no control character, 1 to 20 redirect URIs of at
//!   most 2048 bytes, a non-shared-secret auth method and at least one grant type;
//! - `validate_client_id_url` accepts only https URLs of at most 2048 bytes that are
//!   exactly their own serialization, with a path other than `/`, no query, fragment,
//!   userinfo or dot segment, and a public address when the host is an IP literal; with an
//!   allowlist, only hosts on it; the dangerous override additionally admits only http;
//! - `cache_lifetime` stays within `[min_cache, max_cache]`.
//!
//! The same client-chosen input as a logo (`authorization_server::logo`): the body is
//! inlined only when it starts with a recognised raster signature, as a `data:` URI that
//! decodes back to it; the text is fetched only as an https URL without userinfo or
//! fragment.
#![no_main]

use std::net::IpAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mcp_auth_gateway::authorization_server::cimd::{
    cache_lifetime, is_public_address, parse_document, validate_client_id_url, CimdError,
    CimdSettings,
};
use mcp_auth_gateway::authorization_server::logo::{
    data_uri, fetchable_url, is_inlined, sniff_image,
};
use serde_json::Value;

const ID: &str = "https://client.example/meta.json";

fn settings(allowed_domains: &[&str], allow_private_addresses: bool) -> CimdSettings {
    CimdSettings {
        enabled: true,
        allowed_domains: allowed_domains.iter().map(|d| d.to_string()).collect(),
        min_cache: Duration::from_secs(60),
        max_cache: Duration::from_secs(3600),
        timeout: Duration::from_secs(5),
        max_bytes: 5 * 1024,
        allow_private_addresses,
    }
}

fn assert_clean(error: &CimdError) {
    let message = error.to_string();
    assert!(!message.is_empty(), "{error:?} has an empty message");
    assert!(
        message
            .chars()
            .all(|c| matches!(c, ' '..='~') && c != '"' && c != '\\'),
        "{error:?} has an unusable message: {message:?}"
    );
}

fn check_document(data: &[u8]) {
    let document = match parse_document(data, ID) {
        Ok(document) => document,
        Err(error) => return assert_clean(&error),
    };
    let value: Value = serde_json::from_slice(data).expect("accepted a document that is not JSON");
    let object = value.as_object().expect("accepted a non-object");
    assert_eq!(object.get("client_id").and_then(Value::as_str), Some(ID));
    assert!(!object.contains_key("client_secret"));
    assert!(!object.contains_key("client_secret_expires_at"));
    assert_eq!(document.client_id, ID);
    assert!((1..=20).contains(&document.redirect_uris.len()));
    assert!(document.redirect_uris.iter().all(|u| u.len() <= 2048));
    assert!(!document.grant_types.is_empty());
    assert!(
        ["none", "private_key_jwt"].contains(&document.token_endpoint_auth_method.as_str()),
        "auth method {}",
        document.token_endpoint_auth_method
    );
    let name = object.get("client_name").and_then(Value::as_str);
    assert_eq!(name, Some(document.client_name.as_str()));
    assert!(document.client_name.chars().any(char::is_alphanumeric));
    assert!(!document.client_name.chars().any(char::is_control));
    assert!(document.client_name.chars().count() <= 200);
}

/// The host's IP address when it is an IP literal (`[…]` for IPv6).
fn literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn check_url(text: &str) {
    let strict = settings(&[], false);
    match validate_client_id_url(text, &strict) {
        Ok(url) => {
            assert_eq!(url.as_str(), text, "accepted a URL that needs normalizing");
            assert!(text.starts_with("https://"));
            assert!(text.len() <= 2048);
            assert!(!text.contains(['#', '?', '\\']));
            assert!(text.bytes().all(|b| b.is_ascii_graphic()));
            assert!(url.username().is_empty() && url.password().is_none());
            assert!(url.path() != "/" && !url.path().is_empty());
            assert!(url
                .path()
                .split('/')
                .all(|segment| segment != "." && segment != ".."));
            let host = url.host_str().expect("accepted a URL without a host");
            if let Some(ip) = literal(host) {
                assert!(is_public_address(ip), "accepted the non-public {ip}");
            }
        }
        Err(error) => assert_clean(&error),
    }

    let limited = settings(&["client.example", "*.apps.example"], false);
    if let Ok(url) = validate_client_id_url(text, &limited) {
        let host = url.host_str().unwrap_or_default().trim_end_matches('.');
        assert!(
            host == "client.example" || host.ends_with(".apps.example"),
            "{host} is not on the allowlist"
        );
        assert!(validate_client_id_url(text, &strict).is_ok());
    }

    let lax = settings(&[], true);
    match validate_client_id_url(text, &lax) {
        Ok(url) => {
            assert_eq!(url.as_str(), text);
            assert!(text.starts_with("https://") || text.starts_with("http://"));
        }
        Err(error) => {
            assert_clean(&error);
            assert!(validate_client_id_url(text, &strict).is_err());
        }
    }
}

fn check_cache_control(text: &str) {
    let s = settings(&[], false);
    let lifetime = cache_lifetime(Some(text), &s);
    assert!(
        lifetime >= s.min_cache && lifetime <= s.max_cache,
        "{lifetime:?} for {text:?}"
    );
}

fn check_logo(data: &[u8]) {
    match data_uri(data) {
        Some(uri) => {
            let media_type = sniff_image(data).expect("inlined an unrecognised image");
            let payload = uri
                .strip_prefix(&format!("data:{media_type};base64,"))
                .expect("a base64 data URI of the sniffed type");
            let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, payload)
                .expect("valid base64");
            assert_eq!(decoded, data);
            assert!(is_inlined(&uri), "the consent page would not show it");
        }
        None => assert!(sniff_image(data).is_none()),
    }
}

fn check_logo_url(text: &str) {
    if let Some(url) = fetchable_url(text, &settings(&[], false)) {
        assert_eq!(url.scheme(), "https");
        assert!(url.username().is_empty() && url.password().is_none());
        assert!(url.fragment().is_none());
        assert!(url.host_str().is_some());
    }
}

fuzz_target!(|data: &[u8]| {
    check_document(data);
    check_logo(data);
    if let Ok(text) = std::str::from_utf8(data) {
        check_url(text);
        check_cache_control(text);
        check_logo_url(text);
    }
});
