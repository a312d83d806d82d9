//! The client's logo on the consent page, without an external asset. A `logo_uri` is
//! chosen by whoever registered or published the client: letting the user's browser load it
//! would tell that host who is looking at the page and when, and would let the page depend
//! on a server we do not control. So the gateway fetches the logo itself — under the same
//! SSRF guards as client metadata documents (`cimd::guarded_get`) — accepts only a small
//! raster image recognised by its first bytes, and inlines it as a `data:` URI; the pages'
//! CSP allows no other image source.
//!
//! Logos follow the metadata-document settings (`fetchable_url`): no fetch while those are
//! off, only hosts their allowlist admits.
//!
//! A logo is decoration: any failure (refused URL, slow or absent host, not an image) shows
//! the page without it, and is remembered for a while so that the next page does not wait
//! for the same failure again.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::CONTENT_TYPE;
use http::HeaderMap;
use moka::future::Cache;
use url::Url;

use super::cimd::{self, CimdSettings, Wanted};

/// The largest logo inlined (its `data:` URI is a third larger).
pub const MAX_LOGO_BYTES: usize = 64 * 1024;
/// The consent page waits at most this long for a logo it has not seen before.
const FETCH_DEADLINE: Duration = Duration::from_secs(2);
/// How long a logo, or the failure to get one, is remembered.
const REMEMBERED_FOR: Duration = Duration::from_secs(15 * 60);
/// The cache is bounded by bytes: URIs are chosen by registrants.
const CACHE_CAPACITY_BYTES: u64 = 8 * 1024 * 1024;
const MAX_LOGO_URI_LEN: usize = 2048;
/// Logo fetches at a time, process-wide; when all are busy the page goes without.
const FETCH_SLOTS: usize = 4;

/// The media types inlined. SVG is not among them: it is a document that can carry scripts
/// and references of its own.
pub const INLINED_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];
/// The `Accept` header of a logo fetch: the types above.
const ACCEPT_INLINED: &str = "image/png, image/jpeg, image/gif, image/webp";
/// A cache entry's bookkeeping beyond its key and value, for the byte bound.
const ENTRY_OVERHEAD: usize = 64;

/// The media type of `bytes` when they start with the signature of an inlined format.
pub fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(INLINED_TYPES[0])
    } else if bytes.starts_with(b"\xff\xd8\xff") {
        Some(INLINED_TYPES[1])
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(INLINED_TYPES[2])
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(INLINED_TYPES[3])
    } else {
        None
    }
}

/// Whether `uri` is a `data:` URI as [`data_uri`] makes them (what the consent page shows).
pub fn is_inlined(uri: &str) -> bool {
    uri.strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
        .is_some_and(|(media_type, _)| INLINED_TYPES.contains(&media_type))
}

/// The `data:` URI of `bytes` when they are an image of an inlined format.
pub fn data_uri(bytes: &[u8]) -> Option<String> {
    let media_type = sniff_image(bytes)?;
    Some(format!(
        "data:{media_type};base64,{}",
        STANDARD.encode(bytes)
    ))
}

/// `logo_uri` as a URL the gateway may fetch. Logos go by the metadata-document settings,
/// the operator's word on fetching URLs that clients chose: none while metadata documents
/// are off, only hosts `allowed_domains` admits; https (http only under the dangerous test
/// override), no userinfo.
pub fn fetchable_url(logo_uri: &str, settings: &CimdSettings) -> Option<Url> {
    if !settings.enabled
        || logo_uri.len() > MAX_LOGO_URI_LEN
        || !logo_uri.bytes().all(|b| b.is_ascii_graphic())
    {
        return None;
    }
    let mut url = Url::parse(logo_uri).ok()?;
    let scheme_ok =
        url.scheme() == "https" || (url.scheme() == "http" && settings.allow_private_addresses);
    if !scheme_ok || !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    if !cimd::host_allowed(url.host_str()?, &settings.allowed_domains) {
        return None;
    }
    url.set_fragment(None);
    Some(url)
}

/// A `Content-Type` that could hold an inlined format (the bytes decide which).
fn is_image_content_type(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    value
        .to_str()
        .is_ok_and(|v| v.trim_start().to_ascii_lowercase().starts_with("image/"))
}

/// Logos as `data:` URIs (or the failure to get one), by `logo_uri`.
pub struct Logos {
    cache: Cache<String, Option<Arc<str>>>,
    slots: tokio::sync::Semaphore,
}

impl Default for Logos {
    fn default() -> Self {
        Self::new()
    }
}

impl Logos {
    pub fn new() -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(CACHE_CAPACITY_BYTES)
                .weigher(|key: &String, value: &Option<Arc<str>>| {
                    let size = ENTRY_OVERHEAD + key.len() + value.as_ref().map_or(0, |v| v.len());
                    u32::try_from(size).unwrap_or(u32::MAX)
                })
                .time_to_live(REMEMBERED_FOR)
                .build(),
            slots: tokio::sync::Semaphore::new(FETCH_SLOTS),
        }
    }

    /// The logo of `logo_uri` as a `data:` URI, or `None` (not fetchable, failed, busy).
    /// `tls` is asked for only when the logo must be fetched.
    pub async fn inlined(
        &self,
        logo_uri: &str,
        settings: &CimdSettings,
        tls: impl FnOnce() -> Arc<rustls::ClientConfig>,
    ) -> Option<Arc<str>> {
        let url = fetchable_url(logo_uri, settings)?;
        // What was fetched under the dangerous override (from anywhere) is not shown once
        // it is off: the override is part of the key.
        let key = format!(
            "{}{logo_uri}",
            if settings.allow_private_addresses {
                "private "
            } else {
                ""
            }
        );
        if let Some(known) = self.cache.get(&key).await {
            return known;
        }
        // Busy: no logo this time, and nothing remembered.
        let _slot = self.slots.try_acquire().ok()?;
        self.cache
            .get_with_by_ref(&key, async {
                let wanted = Wanted {
                    accept: ACCEPT_INLINED,
                    content_type: is_image_content_type,
                    max_bytes: MAX_LOGO_BYTES,
                };
                let deadline = FETCH_DEADLINE.min(settings.timeout);
                match cimd::guarded_get(&url, settings, tls(), &wanted, deadline).await {
                    Ok((body, _)) => {
                        let inlined = data_uri(&body).map(Arc::from);
                        if inlined.is_none() {
                            tracing::debug!(%logo_uri, "client logo not shown: not a PNG, JPEG, GIF or WebP image");
                        }
                        inlined
                    }
                    Err(error) => {
                        tracing::debug!(%logo_uri, %error, "client logo not shown: fetching it failed");
                        None
                    }
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings(allowed: &[&str]) -> CimdSettings {
        CimdSettings {
            enabled: true,
            allowed_domains: allowed.iter().map(|d| d.to_string()).collect(),
            min_cache: Duration::from_secs(60),
            max_cache: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
            max_bytes: 5 * 1024,
            allow_private_addresses: false,
        }
    }

    #[test]
    fn images_are_recognised_by_their_signatures() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", Some("image/png")),
            (b"\xff\xd8\xff\xe0\0\x10JFIF", Some("image/jpeg")),
            (b"GIF89a\x01\0\x01\0", Some("image/gif")),
            (b"GIF87a", Some("image/gif")),
            (b"RIFF\x10\0\0\0WEBPVP8 ", Some("image/webp")),
            (b"RIFF\x10\0\0\0WAVEfmt ", None),
            (b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>", None),
            (b"<?xml version=\"1.0\"?><svg/>", None),
            (b"<html><script>alert(1)</script>", None),
            (b"\x89PNG", None),
            (b"", None),
        ];
        for (bytes, expected) in cases {
            assert_eq!(sniff_image(bytes), *expected, "{bytes:?}");
        }
        assert_eq!(
            data_uri(b"GIF89a!").as_deref(),
            Some("data:image/gif;base64,R0lGODlhIQ==")
        );
        assert!(is_inlined("data:image/gif;base64,R0lGODlhIQ=="));
        assert!(!is_inlined("data:image/svg+xml;base64,PHN2Zy8+"));
        assert!(!is_inlined("https://cdn.example/logo.png"));
    }

    #[test]
    fn only_https_urls_on_allowed_hosts_are_fetched() {
        let any = settings(&[]);
        let listed = settings(&["*.example.com"]);
        let cases = [
            ("https://cdn.example.com/logo.png", &any, true),
            ("https://cdn.example.com/logo.png?v=2#top", &listed, true),
            ("https://example.com/logo.png", &listed, false),
            ("http://cdn.example.com/logo.png", &any, false),
            ("data:image/png;base64,AAAA", &any, false),
            ("javascript:alert(1)", &any, false),
            ("https://user:pw@cdn.example.com/logo.png", &any, false),
            ("https://cdn.example.com/a logo.png", &any, false),
            ("not a url", &any, false),
        ];
        for (uri, settings, fetchable) in cases {
            assert_eq!(fetchable_url(uri, settings).is_some(), fetchable, "{uri}");
        }
        let url = fetchable_url("https://cdn.example.com/l.png?v=2#top", &any).unwrap();
        assert_eq!(url.as_str(), "https://cdn.example.com/l.png?v=2");
        let mut tests_only = settings(&[]);
        tests_only.allow_private_addresses = true;
        assert!(fetchable_url("http://127.0.0.1:8080/logo.png", &tests_only).is_some());
        let mut off = settings(&[]);
        off.enabled = false;
        assert!(fetchable_url("https://cdn.example.com/logo.png", &off).is_none());
    }

    /// A client configuration that trusts nothing (the test server speaks plain http).
    fn no_tls() -> Arc<rustls::ClientConfig> {
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
    }

    #[tokio::test]
    async fn at_most_four_logos_are_fetched_at_a_time_and_a_busy_page_goes_without() {
        // A host that accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, mut accepts) = tokio::sync::mpsc::unbounded_channel();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
                let _ = accepted.send(());
            }
        });
        let mut settings = settings(&[]);
        settings.allow_private_addresses = true;
        let settings = Arc::new(settings);
        let logos = Arc::new(Logos::new());
        let mut waiting = Vec::new();
        for i in 0..FETCH_SLOTS {
            let (logos, settings) = (logos.clone(), settings.clone());
            waiting.push(tokio::spawn(async move {
                let uri = format!("http://{addr}/logo-{i}.png");
                logos.inlined(&uri, &settings, no_tls).await
            }));
        }
        for _ in 0..FETCH_SLOTS {
            accepts.recv().await.expect("a fetch connects");
        }
        // Every slot is taken: the next page gets no logo at once, and nothing is fetched.
        let busy = logos
            .inlined(&format!("http://{addr}/logo-more.png"), &settings, no_tls)
            .await;
        assert!(busy.is_none());
        // The waiting fetches give up at their deadline, without a logo.
        for fetch in waiting {
            assert!(fetch.await.unwrap().is_none());
        }
        assert!(accepts.try_recv().is_err(), "the busy page fetched nothing");
        silent.abort();
    }

    proptest! {
        #[test]
        fn whatever_is_inlined_is_a_base64_data_uri_of_a_recognised_image(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            signature in prop_oneof![
                Just(&b""[..]),
                Just(&b"\x89PNG\r\n\x1a\n"[..]),
                Just(&b"\xff\xd8\xff"[..]),
                Just(&b"GIF89a"[..]),
            ],
        ) {
            let bytes = [signature, &bytes[..]].concat();
            match data_uri(&bytes) {
                Some(uri) => {
                    let (head, payload) = uri.split_once(";base64,").unwrap();
                    prop_assert_eq!(Some(head.trim_start_matches("data:")), sniff_image(&bytes));
                    prop_assert_eq!(STANDARD.decode(payload).unwrap(), bytes);
                    prop_assert!(is_inlined(&uri));
                }
                None => prop_assert!(sniff_image(&bytes).is_none()),
            }
        }

        #[test]
        fn fetchable_urls_are_https_without_userinfo_or_fragment(
            prefix in prop_oneof![
                Just(""), Just("https://"), Just("https://cdn.example.com/"),
                Just("http://cdn.example.com/"), Just("https://u:p@"),
            ],
            rest in "\\PC{0,60}",
        ) {
            let uri = format!("{prefix}{rest}");
            if let Some(url) = fetchable_url(&uri, &settings(&[])) {
                prop_assert_eq!(url.scheme(), "https");
                prop_assert!(url.username().is_empty() && url.password().is_none());
                prop_assert!(url.fragment().is_none());
            }
        }
    }
}
