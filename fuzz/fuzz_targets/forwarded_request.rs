//! `forward_auth::original_request`: the original request as a front proxy (Traefik, Caddy,
//! nginx) describes it to `/verify` in headers — all of them attacker-influenced.
//!
//! Input: lines `name: value` (split at the first `:`), appended to a `HeaderMap` in
//! order; lines whose name or value is not valid are skipped. One-letter names stand for
//! the headers that matter, so the fuzzer need not spell them: `M` x-forwarded-method,
//! `U` x-forwarded-uri, `H` x-forwarded-host, `m` x-original-method, `u` x-original-uri,
//! `l` x-original-url (ingress-nginx: `scheme://host/target`), `h` host.
//!
//! Properties: never panics; on `Ok`:
//! - every dialect header (and `x-forwarded-host`) appeared at most once;
//! - the method and URI come from one dialect, or from both when they agree exactly; the
//!   nginx URI is `x-original-uri`, or the target of `x-original-url` (both: agreeing);
//! - the method is that header's text; the URI had no `#`, is origin-form (no scheme or
//!   authority, path starting with `/`) and is exactly the header's text, query included;
//! - the host is `x-forwarded-host` when present, else the host `x-original-url` names
//!   (both: agreeing), else `host`.
//!
//! On `Err`: there was a reason (a duplicate, a missing method or URI, non-text, dialects
//! that disagree, or a URI that is not a clean origin-form target).
#![no_main]

use http::header::{HeaderName, HeaderValue, HOST};
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use mcp_auth_gateway::forward_auth::original_request;

const FWD_METHOD: &str = "x-forwarded-method";
const FWD_URI: &str = "x-forwarded-uri";
const FWD_HOST: &str = "x-forwarded-host";
const ORIG_METHOD: &str = "x-original-method";
const ORIG_URI: &str = "x-original-uri";
const ORIG_URL: &str = "x-original-url";

fn header_name(raw: &[u8]) -> Option<HeaderName> {
    let alias = match raw {
        b"M" => FWD_METHOD,
        b"U" => FWD_URI,
        b"H" => FWD_HOST,
        b"m" => ORIG_METHOD,
        b"u" => ORIG_URI,
        b"l" => ORIG_URL,
        b"h" => "host",
        _ => return HeaderName::from_bytes(raw).ok(),
    };
    Some(HeaderName::from_static(alias))
}

fn headers_from(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n').take(64) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let (Some(name), Ok(value)) = (header_name(name), HeaderValue::from_bytes(value)) else {
            continue;
        };
        headers.append(name, value);
    }
    headers
}

/// The one value of `name` as text, `Err` if repeated or not text.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ()> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(());
    }
    first.map(|v| v.to_str().map_err(|_| ())).transpose()
}

/// An independent reading of `x-original-url`: `http(s)://`, a host without `@ ? # \\`,
/// then the target from the first `/`.
fn url_parts(url: &str) -> Option<(&str, &str)> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let slash = rest.find('/')?;
    let (host, target) = rest.split_at(slash);
    let clean_host = !host.is_empty() && !host.contains(['@', '?', '#', '\\']);
    clean_host.then_some((target, host))
}

fuzz_target!(|data: &[u8]| {
    let headers = headers_from(data);
    let result = original_request(&headers);

    let url = single(&headers, ORIG_URL);
    let fwd = (single(&headers, FWD_METHOD), single(&headers, FWD_URI));
    let orig = (single(&headers, ORIG_METHOD), single(&headers, ORIG_URI));
    let clean = [&fwd.0, &fwd.1, &orig.0, &orig.1, &url].iter().all(|r| r.is_ok());
    // What the URL says, when it is readable; an unreadable one must be refused.
    let url_parts = match url {
        Ok(Some(text)) => match url_parts(text) {
            Some(parts) => Some(parts),
            None => {
                assert!(result.is_err(), "accepted an unusable x-original-url: {headers:?}");
                return;
            }
        },
        _ => None,
    };
    // The nginx URI: x-original-uri or the URL's target; disagreeing ones must be refused.
    let nginx_uri = match (&orig.1, url_parts) {
        (Ok(Some(uri)), Some((target, _))) if *uri != target => {
            assert!(result.is_err(), "accepted disagreeing nginx URIs: {headers:?}");
            return;
        }
        (Ok(Some(uri)), _) => Ok(Some(*uri)),
        (Ok(None), parts) => Ok(parts.map(|(target, _)| target)),
        (Err(()), _) => Err(()),
    };
    let forwarded_host = single(&headers, FWD_HOST);
    if let (Ok(Some(forwarded)), Some((_, named))) = (&forwarded_host, url_parts) {
        if *forwarded != named {
            assert!(result.is_err(), "accepted disagreeing hosts: {headers:?}");
            return;
        }
    }
    let orig = (orig.0, nginx_uri);

    let original = match result {
        Ok(original) => original,
        Err(_) => {
            // A refusal needs a reason; with clean headers, one of these must hold.
            if clean {
                let (fm, fu) = (fwd.0.unwrap(), fwd.1.unwrap());
                let (om, ou) = (orig.0.unwrap(), orig.1.unwrap());
                let chosen = match ((fm, fu), (om, ou)) {
                    ((None, None), d) | (d, (None, None)) => Some(d),
                    (a, b) if a == b => Some(a),
                    _ => None,
                };
                if let Some((Some(method), Some(uri))) = chosen {
                    let host_ok = forwarded_host.is_ok()
                        && (headers.contains_key(FWD_HOST)
                            || url_parts.is_some()
                            || single(&headers, "host").is_ok());
                    let uri_ok = !uri.contains('#')
                        && uri
                            .parse::<http::Uri>()
                            .is_ok_and(|u| u.authority().is_none() && u.path().starts_with('/'));
                    let method_ok = http::Method::from_bytes(method.as_bytes()).is_ok();
                    assert!(
                        !(host_ok && uri_ok && method_ok),
                        "refused a clean description: {headers:?}"
                    );
                }
            }
            return;
        }
    };

    assert!(clean, "accepted a repeated or non-text dialect header: {headers:?}");
    let (fm, fu) = (fwd.0.unwrap(), fwd.1.unwrap());
    let (om, ou) = (orig.0.unwrap(), orig.1.unwrap());
    let (method, uri) = match ((fm, fu), (om, ou)) {
        ((None, None), described) | (described, (None, None)) => described,
        (a, b) => {
            assert_eq!(a, b, "accepted disagreeing dialects: {headers:?}");
            a
        }
    };
    let method = method.expect("accepted without a method");
    let uri = uri.expect("accepted without a URI");

    assert_eq!(original.method.as_str(), method);
    assert!(!uri.contains('#'), "accepted a fragment: {uri:?}");
    assert!(original.uri.scheme().is_none(), "{uri:?}");
    assert!(original.uri.authority().is_none(), "{uri:?}");
    assert!(original.uri.path().starts_with('/'), "{uri:?}");
    assert_eq!(
        original.uri.path_and_query().map(|pq| pq.as_str()),
        Some(uri),
        "the parsed URI is not the forwarded text"
    );
    let (path, query) = match uri.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (uri, None),
    };
    assert_eq!(original.uri.path(), path);
    assert_eq!(original.uri.query(), query);

    let forwarded_host = forwarded_host.expect("accepted a repeated x-forwarded-host");
    let want_host = match (forwarded_host, url_parts) {
        (Some(host), _) | (None, Some((_, host))) => Some(host),
        (None, None) => single(&headers, HOST.as_str()).expect("accepted a repeated host"),
    };
    assert_eq!(original.host.as_deref(), want_host);
});
