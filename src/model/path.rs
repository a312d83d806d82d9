//! The path rule (phase 1): the path we authorize must be the path every upstream acts on.
//!
//! Upstream frameworks normalize paths before they route them: RFC 3986 dot-segment removal,
//! `;` path-parameter stripping (Tomcat, Jetty, Spring: `/a/..;/b` is `/b`), percent-decoding,
//! backslash as slash (IIS, some Windows stacks), case folding (Express, ASP.NET). A path on
//! which any of those could change what the gateway decided is refused with 400, never
//! "cleaned up": rewriting would make us a second normalizer that can disagree with the first.
//!
//! Two checks, both pure:
//! - [`check_path`] — syntax: only RFC 3986 `pchar`s and `/`; no `;`, no `.`/`..` or empty
//!   segments; a `%XX` escape only where decoding it cannot change the path's structure or
//!   spelling (never an unreserved character, `/`, `\`, `;`, `%`, `?`, `#`, a control
//!   character or a non-ASCII byte — non-ASCII case-folds or normalizes to ASCII in some
//!   frameworks). After it, decoding, dot removal, parameter stripping and backslash
//!   conversion are the identity on structure.
//! - [`fold`] — what a case-insensitive, percent-decoding upstream would route on (ASCII
//!   only, since nothing else is admitted). The route
//!   phase selects on the raw path and on the folded one; if they disagree (another route,
//!   or public vs protected) the request is refused.

use std::borrow::Cow;

/// Why a path is refused (the audit event's reason).
pub type PathError = &'static str;

/// Bytes allowed raw in a path: RFC 3986 `pchar` (unreserved, sub-delims but `;`, `:`,
/// `@`), `/`, and `%` (checked separately).
fn allowed_raw(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
                | b'/'
                | b'%'
        )
}

/// A decoded byte that must not be written as `%XX`: an upstream that decodes would see
/// another path (a letter for routing, a separator, a dot for dot segments, a control).
fn forbidden_escaped(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || byte.is_ascii_control()
        || matches!(
            byte,
            b'-' | b'.' | b'_' | b'~' | b'/' | b'\\' | b';' | b'%' | b'?' | b'#'
        )
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The byte a `%XX` escape at `bytes[i]` stands for.
fn escaped_at(bytes: &[u8], i: usize) -> Option<u8> {
    let high = hex(*bytes.get(i + 1)?)?;
    let low = hex(*bytes.get(i + 2)?)?;
    Some(high << 4 | low)
}

/// Refuses every path that two parsers could read differently. See the module docs.
pub fn check_path(path: &str) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err("path must start with /");
    }
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let decoded = escaped_at(bytes, i).ok_or("malformed percent-escape in path")?;
            if forbidden_escaped(decoded) {
                return Err("percent-encoded letter, digit, -._~, separator, dot, percent or control character in path");
            }
            // Non-ASCII folds to ASCII in some frameworks: `İ` lowercases to `i` in Java,
            // `ſ` matches `s` case-insensitively in Go, full-width `．` normalizes to `.`,
            // and overlong forms (`%c0%af`) decode to `/` in lenient decoders.
            if decoded >= 0x80 {
                return Err("percent-encoded non-ASCII in path");
            }
            i += 3;
            continue;
        }
        if byte == b';' {
            return Err("path parameter (;) in path");
        }
        if byte == b'\\' {
            return Err("backslash in path");
        }
        if !allowed_raw(byte) {
            return Err(
                "character not allowed in a path (control, space, #, ?, quote, non-ASCII, …)",
            );
        }
        i += 1;
    }
    for segment in path[1..].split('/') {
        match segment {
            "." | ".." => return Err("dot segment in path"),
            _ => {}
        }
    }
    if path[1..].split('/').rev().skip(1).any(str::is_empty) {
        return Err("empty path segment");
    }
    Ok(())
}

/// The path as a case-insensitive, percent-decoding upstream routes it: decoded, then
/// ASCII-lowercased ([`check_path`] admits only ASCII). Borrowed when nothing changes (the
/// usual lowercase path without escapes). Only for paths [`check_path`] accepted.
pub fn fold(path: &str) -> Cow<'_, str> {
    if !path.bytes().any(|b| b.is_ascii_uppercase() || b == b'%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], escaped_at(bytes, i)) {
            (b'%', Some(byte)) => {
                decoded.push(byte.to_ascii_lowercase());
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte.to_ascii_lowercase());
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&decoded).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_paths() {
        for path in [
            "/",
            "/mcp",
            "/mcp/",
            "/mcp/x.y",
            "/mcp/..x",
            "/mcp/x..",
            "/.well-known/oauth-protected-resource/mcp",
            "/a%20b",
            "/MCP",
            "/a:b@c!$&'()*+,=",
        ] {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn refused_paths() {
        for path in [
            "",
            "mcp",
            "/mcp/../admin",
            "/mcp/./x",
            "/..",
            "/mcp/.",
            "/mcp/..",
            "/mcp/health/..;/..;/admin",
            "/mcp/.;/admin",
            "/admin;x/y",
            "/mcp;jsessionid=1",
            "/mcp/..%3b/admin",
            "/mcp/%3B",
            "/a%3Fb",
            "/a%23b",
            "/%61dmin/x",
            "/mcp/%2e%2e/admin",
            "/mcp/%2E",
            "/mcp%2fadmin",
            "/mcp%2Fx",
            "/mcp/%5c",
            "/mcp\\..\\x",
            "/mcp/%00",
            "/mcp/%09",
            "/mcp/%7f",
            "/mcp/%252e",
            "/mcp/%c0%af",
            "/mcp/%c0",
            "/mcp/%80",
            "/mcp/%e2%82",
            "/mcp/%",
            "/mcp/%4",
            "/mcp/%zz",
            "//mcp",
            "/mcp//x",
            "/mcp/\u{0001}",
            "/mcp/ x",
            "/mcp/#/../admin",
            "/mcp?x",
            "/mcp/é",
            "/caf%C3%A9",
            "/adm%C4%B0n",
            "/%C5%BFecret",
            "/%E2%84%AAey",
            "/mcp/health/%EF%BC%8E%EF%BC%8E%EF%BC%8Fadmin",
            "/mcp/a|b",
        ] {
            assert!(check_path(path).is_err(), "{path}");
        }
    }

    #[test]
    fn folding() {
        assert_eq!(fold("/mcp/x"), "/mcp/x");
        assert!(matches!(fold("/mcp/x"), Cow::Borrowed(_)));
        assert_eq!(fold("/ADMIN/x"), "/admin/x");
        assert_eq!(fold("/a%20B"), "/a b");
    }
}
