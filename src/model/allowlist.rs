//! Host and Origin allowlists (DNS-rebinding protection, MCP transport spec "Security
//! Warning") and the pure parsers and canonicalizers of `Host` and `Origin` values they
//! compare with. Config builds the lists with them; the transport guard (phase 2,
//! `pipeline::transport`) enforces them.

/// Hosts a route answers to. Entries without a port match any port.
#[derive(Debug, Clone)]
pub enum HostAllowlist {
    Any,
    Only(Vec<String>),
}

/// Browser origins allowed to call a route (`scheme://host[:port]`, canonical).
#[derive(Debug, Clone)]
pub enum OriginAllowlist {
    Any,
    Only(Vec<String>),
}

impl HostAllowlist {
    pub fn allows(&self, host: &str) -> bool {
        match self {
            HostAllowlist::Any => true,
            HostAllowlist::Only(entries) => {
                let (name, port) = split_host(host);
                entries.iter().any(|entry| {
                    let (entry_name, entry_port) = split_host(entry);
                    entry_name.eq_ignore_ascii_case(name)
                        && (entry_port.is_none() || entry_port == port)
                })
            }
        }
    }
}

impl OriginAllowlist {
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            OriginAllowlist::Any => true,
            OriginAllowlist::Only(entries) => match canonical_origin(origin) {
                Some(origin) => entries.contains(&origin),
                None => false,
            },
        }
    }
}

/// `host[:port]` → (`host`, `port`), `[v6]:port` → (`[v6]`, `port`); a non-numeric suffix
/// is not a port. A fully qualified name's trailing dot is dropped (`name.` is `name` to DNS,
/// to Traefik's `Host()` and to virtual hosting): the one place hosts are normalized.
pub fn split_host(host: &str) -> (&str, Option<&str>) {
    // Byte scans rather than `find`/`rsplit_once`: this runs several times per request, on
    // short strings, where the generic searchers cost more than the search.
    let bytes = host.as_bytes();
    let is_port = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let (name, port) = match bytes.iter().position(|&b| b == b']') {
        // `[v6]` or `[v6]:port`; anything else after `]` is not a host and stays whole.
        Some(end) => match &host[end + 1..] {
            "" => (host, None),
            rest => match rest.strip_prefix(':') {
                Some(port) if is_port(port) => (&host[..=end], Some(port)),
                _ => (host, None),
            },
        },
        None => match bytes.iter().rposition(|&b| b == b':') {
            Some(colon) if is_port(&host[colon + 1..]) => {
                (&host[..colon], Some(&host[colon + 1..]))
            }
            _ => (host, None),
        },
    };
    (name.strip_suffix('.').unwrap_or(name), port)
}

/// Whether a `Host` (or `X-Forwarded-Host`) value is a host: a DNS name or IPv4 address
/// (letters, digits, `-`, `.`, `_`), or a bracketed IPv6 literal, then optionally `:` and a
/// port of 1–5 digits. Anything else is refused rather than guessed at: front proxies read
/// `tenant.example.com:x` as `tenant.example.com` (Go's `SplitHostPort` does not validate the
/// port), and a gateway reading it whole would pick another route.
pub fn valid_host(host: &str) -> bool {
    let port_ok = |port: &str| {
        (1..=5).contains(&port.len())
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| p <= 65_535)
    };
    if let Some(v6) = host.strip_prefix('[') {
        let Some((address, rest)) = v6.split_once(']') else {
            return false;
        };
        let address_ok = !address.is_empty()
            && address
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        return address_ok && (rest.is_empty() || rest.strip_prefix(':').is_some_and(port_ok));
    }
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    // Labels are non-empty; one trailing dot (a fully qualified name) is allowed.
    let labels = name.strip_suffix('.').unwrap_or(name);
    dns_labels(labels.as_bytes()) && port.is_none_or(port_ok)
}

/// Whether `name` is one or more non-empty labels of letters, digits, `-` and `_`, joined by
/// single dots. One pass over the bytes: every request's `Host` is checked.
fn dns_labels(name: &[u8]) -> bool {
    let mut previous = b'.';
    for &byte in name {
        let ok = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_')
            || (byte == b'.' && previous != b'.');
        if !ok {
            return false;
        }
        previous = byte;
    }
    previous != b'.'
}

/// The host name of a `Host` value: no port, no trailing dot.
pub fn host_name(host: &str) -> &str {
    split_host(host).0
}

/// `Scheme://Host:443` → `scheme://host`; `None` for anything that is not an http(s) origin
/// (including the opaque origin `null`).
pub fn canonical_origin(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if (scheme != "http" && scheme != "https")
        || rest.is_empty()
        || rest.contains(['/', '?', '#', '@'])
    {
        return None;
    }
    let authority = rest.to_ascii_lowercase();
    if !valid_host(&authority) {
        return None;
    }
    let (name, port) = split_host(&authority);
    let default_port = if scheme == "https" { "443" } else { "80" };
    match port {
        Some(port) if port != default_port => Some(format!("{scheme}://{name}:{port}")),
        _ => Some(format!("{scheme}://{name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_table() {
        let cases = [
            ("https://App.example.com", Some("https://app.example.com")),
            (
                "https://app.example.com:443",
                Some("https://app.example.com"),
            ),
            ("http://localhost:3000", Some("http://localhost:3000")),
            ("null", None),
            ("file://", None),
            ("https://a.com/path", None),
            ("https://user@a.com", None),
            ("https://", None),
            ("chrome-extension://abc", None),
            ("https://app.example.com.", Some("https://app.example.com")),
            ("http://localhost.:3000", Some("http://localhost:3000")),
            ("https://a..", None),
            ("http://:80", None),
            ("https://a:443.", None),
            ("https://.a", None),
        ];
        for (input, want) in cases {
            assert_eq!(canonical_origin(input).as_deref(), want, "{input}");
        }
        let list = OriginAllowlist::Only(vec!["https://app.example.com".into()]);
        assert!(list.allows("https://APP.example.com:443"));
        assert!(!list.allows("https://app.example.com.evil.com"));
        assert!(!list.allows("http://app.example.com"));
    }

    #[test]
    fn host_splitting() {
        assert_eq!(
            split_host("gw.example.com:8443"),
            ("gw.example.com", Some("8443"))
        );
        assert_eq!(split_host("gw.example.com"), ("gw.example.com", None));
        assert_eq!(split_host("gw.example.com."), ("gw.example.com", None));
        assert_eq!(split_host("[::1]:8080"), ("[::1]", Some("8080")));
        assert_eq!(split_host("[::1]"), ("[::1]", None));
    }

    #[test]
    fn host_validity_table() {
        for ok in [
            "gw.example.com",
            "gw.example.com:8443",
            "gw.example.com.",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[::ffff:127.0.0.1]",
            "my_host",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "",
            "tenant.example.com:",
            "tenant.example.com:abc",
            "tenant.example.com:99999",
            "tenant.example.com:123456",
            "a:1:2",
            "[::1]x",
            "[::1]:",
            "[::1]:x",
            "[zz]",
            "[]",
            "a..",
            ".a",
            "a..b",
            "user@host",
            "host/path",
            "ho st",
            ":8080",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn host_table() {
        let list = HostAllowlist::Only(vec!["gw.example.com".into(), "localhost:8080".into()]);
        let cases = [
            ("gw.example.com", true),
            ("GW.example.com:443", true),
            ("localhost:8080", true),
            ("localhost:9090", false),
            ("localhost", false),
            ("evil.example.com", false),
            ("gw.example.com.evil.com", false),
            ("gw.example.com.", true),
            ("GW.example.com.:443", true),
            ("localhost.:8080", true),
            ("gw.example.com..", false),
        ];
        for (host, want) in cases {
            assert_eq!(list.allows(host), want, "{host}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn host_name() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z][a-z0-9-]{0,8}(\\.[a-z][a-z0-9-]{0,8}){0,3}",
                Just("localhost".to_string()),
                Just("127.0.0.1".to_string()),
                Just("[::1]".to_string()),
            ]
        }

        proptest! {
            /// A trailing dot, letter case and the port's presence (for port-less entries)
            /// never change a Host decision.
            #[test]
            fn host_decisions_ignore_spelling(
                entry in host_name(),
                asked in host_name(),
                port in prop::option::of(1u16..),
                entry_port in prop::option::of(1u16..),
            ) {
                let entry_text = match entry_port {
                    Some(p) => format!("{entry}:{p}"),
                    None => entry.clone(),
                };
                let list = HostAllowlist::Only(vec![entry_text]);
                let with_port = |name: &str| match port {
                    Some(p) => format!("{name}:{p}"),
                    None => name.to_string(),
                };
                let plain = list.allows(&with_port(&asked));
                // A trailing dot belongs to DNS names, not to bracketed IPv6 literals.
                let dotted_name = if asked.starts_with('[') { asked.clone() } else { format!("{asked}.") };
                let dotted = list.allows(&with_port(&dotted_name));
                let upper = list.allows(&with_port(&asked.to_ascii_uppercase()));
                prop_assert_eq!(plain, dotted);
                prop_assert_eq!(plain, upper);
                let same_name = asked == entry;
                let port_ok = entry_port.is_none() || entry_port == port;
                prop_assert_eq!(plain, same_name && port_ok);
            }

            /// The byte scans split hosts as `find` and `rsplit_once` did.
            #[test]
            fn split_host_agrees_with_the_searchers(host in "[a-z0-9.:\\[\\]]{0,14}") {
                let is_port = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
                let (name, port) = match host.find(']') {
                    Some(end) => match &host[end + 1..] {
                        "" => (host.as_str(), None),
                        rest => match rest.strip_prefix(':') {
                            Some(port) if is_port(port) => (&host[..=end], Some(port)),
                            _ => (host.as_str(), None),
                        },
                    },
                    None => match host.rsplit_once(':') {
                        Some((name, port)) if is_port(port) => (name, Some(port)),
                        _ => (host.as_str(), None),
                    },
                };
                prop_assert_eq!(split_host(&host), (name.strip_suffix('.').unwrap_or(name), port));
            }

            /// The one-pass label check reads names as splitting them on dots does.
            #[test]
            fn dns_labels_agree_with_splitting(name in "[a-z0-9._:-]{0,12}") {
                let split = !name.is_empty()
                    && name.split('.').all(|label| {
                        !label.is_empty()
                            && label.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
                    });
                prop_assert_eq!(dns_labels(name.as_bytes()), split);
            }

            /// Canonical origins are fixed points and keep scheme, name and non-default port.
            #[test]
            fn origins_canonicalize_once(
                scheme in prop::sample::select(vec!["http", "https", "HTTP", "Https"]),
                name in host_name(),
                port in prop::option::of(1u16..),
                dot in any::<bool>(),
            ) {
                // A trailing dot belongs to DNS names, not to bracketed IPv6 literals.
                let dot = if dot && !name.starts_with('[') { "." } else { "" };
                let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
                let origin = format!("{scheme}://{name}{dot}{port_text}");
                let canonical = canonical_origin(&origin);
                prop_assert!(canonical.is_some(), "{}", origin);
                let canonical = canonical.unwrap_or_default();
                prop_assert_eq!(canonical_origin(&canonical), Some(canonical.clone()));
                let scheme = scheme.to_ascii_lowercase();
                let default = if scheme == "https" { 443 } else { 80 };
                let want = match port {
                    Some(p) if p != default => format!("{scheme}://{name}:{p}"),
                    _ => format!("{scheme}://{name}"),
                };
                prop_assert_eq!(canonical, want);
            }

            #[test]
            fn split_host_never_panics_and_ports_are_digits(host in "\\PC{0,30}") {
                let (_, port) = split_host(&host);
                prop_assert!(port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit())));
            }
        }
    }
}
