//! `model::allowlist::{split_host, host_name, canonical_origin, HostAllowlist,
//! OriginAllowlist}`: the Host / Origin allowlists (DNS-rebinding defence, phase 2).
//!
//! Input: UTF-8 text; the first line is the request's `Host` (and is also tried as an
//! `Origin`), the other lines are allowlist entries.
//!
//! Properties:
//! - `split_host` never panics; `host_name` is its first half; a port is all digits;
//!   nothing but the port and one trailing dot is split off (junk after `]` stays);
//! - `valid_host`: ignores case; a valid host has no whitespace, control, `@`, `/`, `?`,
//!   `#` or `,`; its port (if any) is a `u16`; its name has no `:` outside brackets;
//! - `HostAllowlist::Only`: a host is allowed by a list of itself, and by a list of its bare
//!   name (any port); the verdict ignores ASCII case; a host with a trailing dot is allowed
//!   iff the same host without it is;
//! - `canonical_origin`: `Some(o)` is lowercase `http://` or `https://` + authority with no
//!   path, query, fragment or userinfo, never with the scheme's default port; canonical
//!   origins are fixed points; `OriginAllowlist` ignores ASCII case.
//!
//! With `--features strict`, also the properties that fail on a known finding
//! (docs/fuzzing.md): for malformed authorities (`https://a..`, `http://:80`,
//! `https://a:443.`) canonicalisation is idempotent, drops the default port and never
//! yields an empty host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_auth_gateway::model::allowlist::{
    canonical_origin, host_name, split_host, valid_host, HostAllowlist, OriginAllowlist,
};

// The findings this gated are fixed (docs/fuzzing.md, "Fixed findings"): always checked.
const STRICT: bool = true;

fn with_port(name: &str, port: Option<&str>) -> String {
    match port {
        Some(port) => format!("{name}:{port}"),
        None => name.to_string(),
    }
}

/// `name[:digits]` with a plain DNS name or IPv4 address that does not end with a dot.
fn well_formed(authority: &str) -> bool {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    !host.is_empty()
        && !host.ends_with('.')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn check_split(host: &str) {
    let (name, port) = split_host(host);
    assert_eq!(host_name(host), name);
    if let Some(port) = port {
        assert!(
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
            "split_host({host:?}) gives a non-numeric port {port:?}"
        );
    }
    // Reassembling gives the input back, up to the one trailing dot that is dropped:
    // nothing else (junk after `]`, a second colon) is silently cut off.
    let back = with_port(name, port);
    let dotted = with_port(&format!("{name}."), port);
    assert!(
        back == host || dotted == host,
        "split_host({host:?}) = ({name:?}, {port:?}) drops part of the host"
    );
}

fn check_valid(host: &str) {
    let valid = valid_host(host);
    assert_eq!(
        valid,
        valid_host(&host.to_ascii_uppercase()),
        "valid_host depends on case for {host:?}"
    );
    if !valid {
        return;
    }
    assert!(
        !host.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()),
        "valid_host({host:?})"
    );
    assert!(!host.contains(['@', '/', '?', '#', ',']), "valid_host({host:?})");
    let (name, port) = split_host(host);
    if let Some(port) = port {
        assert!(port.parse::<u16>().is_ok(), "valid_host({host:?}) with port {port:?}");
    }
    if !name.starts_with('[') {
        assert!(!name.contains([':', '[', ']']), "valid_host({host:?}): name {name:?}");
    } else {
        assert!(name.ends_with(']'), "valid_host({host:?}): name {name:?}");
    }
}

fn check_hosts(host: &str, entries: &[String]) {
    // Reflexive: a host is on a list made of itself.
    assert!(
        HostAllowlist::Only(vec![host.to_string()]).allows(host),
        "{host:?} is not allowed by [{host:?}]"
    );
    let (name, port) = split_host(host);
    if !name.contains(':') && !name.ends_with('.') {
        // A bare name allows every port.
        assert!(
            HostAllowlist::Only(vec![name.to_string()]).allows(host),
            "{host:?} is not allowed by its bare name {name:?}"
        );
    }

    let list = HostAllowlist::Only(entries.to_vec());
    let allowed = list.allows(host);
    assert!(HostAllowlist::Any.allows(host));
    assert_eq!(
        allowed,
        list.allows(&host.to_ascii_uppercase()),
        "host allowlist depends on case for {host:?} / {entries:?}"
    );
    assert_eq!(
        allowed,
        list.allows(&host.to_ascii_lowercase()),
        "host allowlist depends on case for {host:?} / {entries:?}"
    );

    // The trailing dot of a fully qualified name: `name.` is `name`, on any port.
    if !name.ends_with('.') && !name.contains([':', '[', ']']) {
        let plain = with_port(name, port);
        let dotted = with_port(&format!("{name}."), port);
        assert_eq!(
            list.allows(&plain),
            list.allows(&dotted),
            "{plain:?} and {dotted:?} disagree on {entries:?}"
        );
        // …and on the list's side too.
        let dotted_entries: Vec<String> = entries
            .iter()
            .map(|entry| {
                let (entry_name, entry_port) = split_host(entry);
                if entry_name.ends_with('.') || entry_name.contains([':', '[', ']']) {
                    entry.clone()
                } else {
                    with_port(&format!("{entry_name}."), entry_port)
                }
            })
            .collect();
        assert_eq!(
            list.allows(&plain),
            HostAllowlist::Only(dotted_entries.clone()).allows(&plain),
            "{plain:?}: {entries:?} and {dotted_entries:?} disagree"
        );
    }
}

fn check_origin(input: &str) {
    let Some(origin) = canonical_origin(input) else {
        assert!(!OriginAllowlist::Only(vec![input.to_string()]).allows(input));
        return;
    };
    let (scheme, authority) = origin
        .split_once("://")
        .unwrap_or_else(|| panic!("canonical_origin({input:?}) = {origin:?} has no scheme"));
    assert!(
        scheme == "http" || scheme == "https",
        "canonical_origin({input:?}) = {origin:?}"
    );
    assert_eq!(
        origin,
        origin.to_ascii_lowercase(),
        "canonical_origin({input:?}) is not lowercase"
    );
    assert!(
        !authority.contains(['/', '?', '#', '@']),
        "canonical_origin({input:?}) = {origin:?} is not an origin"
    );
    // Known finding: an authority that is not `host[:port]` (empty host, more than one
    // trailing dot, a `:` in the name as in `a:443.`, text after `]`) is "canonicalised"
    // into something that is not canonical. Checked only with `--features strict`.
    let (name, _) = split_host(authority);
    let rest = input.split_once("://").map_or("", |(_, r)| r).to_ascii_lowercase();
    let (input_name, _) = split_host(&rest);
    let malformed = !well_formed(authority)
        || input_name.ends_with('.')
        || input_name.contains(':')
        || rest.contains(['[', ']']);
    if !malformed || STRICT {
        assert!(!name.is_empty(), "canonical_origin({input:?}) = {origin:?}: no host");
        let default_port = if scheme == "https" { ":443" } else { ":80" };
        assert!(
            !authority.ends_with(default_port),
            "canonical_origin({input:?}) = {origin:?} keeps the default port"
        );
        assert_eq!(
            canonical_origin(&origin).as_deref(),
            Some(origin.as_str()),
            "canonical_origin is not idempotent on {input:?} -> {origin:?}"
        );
    }

    // An allowlist holding the canonical origin allows every spelling of it.
    let list = OriginAllowlist::Only(vec![origin.clone()]);
    assert!(list.allows(input), "{input:?} not allowed by [{origin:?}]");
    assert!(
        list.allows(&input.to_ascii_uppercase()),
        "origin allowlist depends on case for {input:?}"
    );
    assert!(OriginAllowlist::Any.allows(input));
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let host = lines.next().unwrap_or("");
    let entries: Vec<String> = lines.take(16).map(str::to_string).collect();

    check_split(host);
    check_valid(host);
    for entry in &entries {
        check_split(entry);
        check_valid(entry);
    }
    check_hosts(host, &entries);
    check_origin(host);
    for entry in &entries {
        check_origin(entry);
    }
});
