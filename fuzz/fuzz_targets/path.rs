//! `model::path::{check_path, fold}`: the request-path rule (phase 1).
//!
//! Properties:
//! - an accepted path has none of the spellings that two normalizers could read apart
//!   (`;`, `\`, `//`, `.`/`..` segments, `?`, `#`, raw non-ASCII, bare `%`);
//! - percent-decoding an accepted path changes nothing structural: same `/` count, no
//!   `;`, `\`, `%`, `?`, `#`, control characters or dot segments appear, and the result is
//!   ASCII (escaped non-ASCII such as `%c0%af`, `İ`, `ſ` or full-width forms can decode or
//!   fold to ASCII in some frameworks);
//! - an accepted path parses as an `http::Uri` whose path is exactly the input;
//! - acceptance does not depend on ASCII case;
//! - `fold` never panics, is ASCII-lowercase, borrows only when nothing changes, and on an
//!   accepted path is exactly "decode, then lowercase".
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_auth_gateway::model::path::{check_path, fold};
use std::borrow::Cow;

/// Strict percent-decoding of an accepted path: every `%` must start a valid escape.
fn decode(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path
                .get(i + 1..i + 3)
                .unwrap_or_else(|| panic!("accepted path {path:?} has a truncated escape"));
            let byte = u8::from_str_radix(hex, 16)
                .unwrap_or_else(|_| panic!("accepted path {path:?} has a malformed escape"));
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn assert_no_dot_segments(what: &str, path: &str) {
    for segment in path[1..].split('/') {
        assert!(
            segment != "." && segment != "..",
            "{what} {path:?} has a dot segment"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };

    // fold lowercases ASCII only: check_path admits nothing else, escaped or raw.
    let folded = fold(path);
    assert_eq!(
        folded.as_ref(),
        folded.to_ascii_lowercase(),
        "fold({path:?}) is not lowercase"
    );
    if let Cow::Borrowed(same) = &folded {
        assert_eq!(*same, path, "fold borrowed something else");
    }

    let accepted = check_path(path).is_ok();
    assert_eq!(
        accepted,
        check_path(&path.to_ascii_lowercase()).is_ok(),
        "check_path depends on ASCII case for {path:?}"
    );
    assert_eq!(
        accepted,
        check_path(&path.to_ascii_uppercase()).is_ok(),
        "check_path depends on ASCII case for {path:?}"
    );
    if !accepted {
        return;
    }

    // The raw spelling.
    assert!(path.starts_with('/'), "{path:?}");
    assert!(path.is_ascii(), "accepted raw non-ASCII: {path:?}");
    for bad in [";", "\\", "//", "?", "#", " "] {
        assert!(!path.contains(bad), "accepted {path:?} contains {bad:?}");
    }
    assert!(
        !path.bytes().any(|b| b.is_ascii_control()),
        "accepted a control character: {path:?}"
    );
    assert_no_dot_segments("accepted path", path);
    // Only the last segment may be empty (a trailing slash).
    let segments: Vec<&str> = path[1..].split('/').collect();
    assert!(
        segments[..segments.len() - 1].iter().all(|s| !s.is_empty()),
        "empty segment in accepted {path:?}"
    );

    // What a decoding upstream sees.
    let decoded = String::from_utf8(decode(path))
        .unwrap_or_else(|_| panic!("accepted {path:?} decodes to invalid UTF-8"));
    assert_eq!(
        decoded.matches('/').count(),
        path.matches('/').count(),
        "decoding {path:?} changes the segments: {decoded:?}"
    );
    for bad in [";", "\\", "%", "?", "#", "//"] {
        assert!(
            !decoded.contains(bad),
            "decoding accepted {path:?} introduces {bad:?}: {decoded:?}"
        );
    }
    assert!(
        !decoded.bytes().any(|b| b.is_ascii_control()),
        "decoding accepted {path:?} introduces a control character: {decoded:?}"
    );
    assert!(
        decoded.is_ascii(),
        "accepted {path:?} decodes to non-ASCII {decoded:?} (it can fold to ASCII upstream)"
    );
    assert_no_dot_segments("decoded path", &decoded);
    assert_eq!(
        fold(path),
        decoded.to_ascii_lowercase(),
        "fold({path:?}) is not decode-then-lowercase"
    );

    // What the HTTP layer parses: the very same path, nothing dropped or re-encoded.
    let uri: http::Uri = path
        .parse()
        .unwrap_or_else(|e| panic!("accepted {path:?} is not a valid request target: {e}"));
    assert_eq!(uri.path(), path);
    assert_eq!(uri.query(), None);
});
