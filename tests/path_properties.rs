//! The path rule as a property (issue: "path check misses what upstream frameworks
//! normalize"): for every normalization a mainstream upstream applies — RFC 3986 dot-segment
//! removal, `;` parameter stripping (Tomcat, Jetty, Spring), percent-decoding, backslash as
//! slash (IIS), ASCII and Unicode case folding (Express, ASP.NET), and their combinations —
//! a path the gateway accepts selects the same route and the same public/protected status
//! after normalization as before; every other path is refused (400). Generated over paths
//! built from the tricky pieces attackers use and over generated route tables.

use std::path::Path;

use http::{HeaderMap, Method};
use mcp_auth_gateway::config::{self, Config};
use mcp_auth_gateway::pipeline::request::RequestView;
use mcp_auth_gateway::pipeline::route;
use proptest::prelude::*;

/// Candidate routes (path, public sub-path); a table is a non-empty subset.
const ROUTES: [(&str, Option<&str>); 5] = [
    ("/", None),
    ("/mcp", Some("/health")),
    ("/admin", None),
    ("/mcp/admin", None),
    ("/Files", Some("/Public")),
];

/// The compiled table for a subset (compiled once per subset: the property runs thousands).
fn table(mask: u8) -> &'static Config {
    static TABLES: std::sync::OnceLock<Vec<Config>> = std::sync::OnceLock::new();
    &TABLES.get_or_init(|| (0..32).map(compile_table).collect())[usize::from(mask)]
}

fn compile_table(mask: u8) -> Config {
    if mask == 0 {
        return compile_table(1);
    }
    let mut toml = String::from(
        "[server]\nlisten = [\"127.0.0.1:0\"]\npublic_url = \"http://127.0.0.1:8080\"\n\
         [[api_keys]]\nid = \"k\"\nhash = \"sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"\nsubject = \"s\"\n",
    );
    for (i, (path, public)) in ROUTES.iter().enumerate() {
        if mask & (1 << i) == 0 {
            continue;
        }
        toml.push_str(&format!(
            "[[routes]]\nid = \"r{i}\"\npath = \"{path}\"\nupstream = \"http://127.0.0.1:9\"\nverifiers = [\"api_keys\"]\n"
        ));
        if let Some(public) = public {
            toml.push_str(&format!("public_paths = [\"{public}\"]\n"));
        }
    }
    config::from_toml_str(&toml, Path::new(".")).expect("generated route table compiles")
}

/// What the gateway decides for a raw path: the route id and whether it is public, or a
/// refusal.
fn decide(config: &Config, path: &str) -> Option<(String, bool)> {
    let headers = HeaderMap::new();
    let view = RequestView {
        method: &Method::POST,
        path,
        query: None,
        host: Some("127.0.0.1:8080"),
        headers: &headers,
    };
    let route = route::resolve(&config.routes, &view).ok()?;
    let public = route.is_public_path(path);
    Some((route.id.to_string(), public))
}

/// How an upstream would route an already-normalized path: longest prefix on segment
/// boundaries, optionally ignoring case (a model independent of the gateway's code).
fn upstream_routes(config: &Config, path: &str, ignore_case: bool) -> Option<(String, bool)> {
    let key = |s: &str| {
        if ignore_case {
            s.to_lowercase()
        } else {
            s.to_string()
        }
    };
    let path = key(path);
    let has_prefix = |prefix: &str| {
        let prefix = key(prefix);
        prefix == "/"
            || path == prefix
            || path.starts_with(&format!("{prefix}/"))
            || (prefix.ends_with('/') && path.starts_with(&prefix))
    };
    let route = config
        .routes
        .iter()
        .filter(|r| has_prefix(&r.path))
        .max_by_key(|r| r.path.len())?;
    let public = route.public_paths.iter().any(|p| has_prefix(p));
    Some((route.id.to_string(), public))
}

// ---- normalizations upstream frameworks apply ----

fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(byte) = path
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn backslash_to_slash(path: &str) -> String {
    path.replace('\\', "/")
}

/// Tomcat/Jetty: each segment loses everything from its first `;`.
fn strip_parameters(path: &str) -> String {
    path.split('/')
        .map(|segment| segment.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/")
}

/// RFC 3986 §5.2.4 remove_dot_segments, plus merging of empty segments (most routers).
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('/').skip(1) {
        match segment {
            "." | "" => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    let mut joined = format!("/{}", out.join("/"));
    if trailing && joined != "/" {
        joined.push('/');
    }
    joined
}

type Normalize = fn(&str) -> String;

const NORMALIZATIONS: [(&str, Normalize, bool); 7] = [
    ("dot segments", |p| remove_dot_segments(p), false),
    ("; parameters", |p| strip_parameters(p), false),
    ("percent-decoding", |p| percent_decode(p), false),
    ("backslash", |p| backslash_to_slash(p), false),
    ("case folding", |p| p.to_string(), true),
    (
        "Tomcat (decode, parameters, dots)",
        |p| remove_dot_segments(&strip_parameters(&percent_decode(p))),
        false,
    ),
    (
        "IIS (decode, backslash, dots, case)",
        |p| remove_dot_segments(&backslash_to_slash(&percent_decode(p))),
        true,
    ),
];

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "mcp", "admin", "ADMIN", "Admin", "MCP", "health", "HEALTH", "files", "public",
            "Public", ".", "..", "..;", ".;", ";x", "x;y", "%61dmin", "%41DMIN", "%2e", "%2E%2e",
            "%2f", "%2F", "%5c", "\\", "..\\", "%c0%af", "%c0%ae", "%e0%80%ae", "%09", "%00",
            "%20", "a%20b", "", "x", "%3b", "..%3b", "%25", "%252e", "~", "%7e", "caf%C3%A9",
            "%E2%84%AAey", "%", "%g0", "#", "?",
        ])
        .prop_map(String::from),
        1 => "[a-zA-Z0-9%;.~_\\\\-]{0,6}",
    ]
}

fn raw_path() -> impl Strategy<Value = String> {
    (prop::collection::vec(segment(), 0..6), any::<bool>()).prop_map(|(segments, trailing)| {
        let mut path = format!("/{}", segments.join("/"));
        if trailing && !path.ends_with('/') {
            path.push('/');
        }
        path
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn accepted_paths_mean_the_same_after_every_upstream_normalization(
        mask in 1u8..32,
        path in raw_path(),
    ) {
        let config = table(mask);
        if let Some(decided) = decide(config, &path) {
            for (name, normalize, ignore_case) in NORMALIZATIONS {
                let normalized = normalize(&path);
                let upstream = upstream_routes(config, &normalized, ignore_case);
                prop_assert_eq!(
                    upstream.as_ref(),
                    Some(&decided),
                    "{:?} accepted as {:?}, but after {} an upstream routes {:?} as {:?}",
                    path, decided, name, normalized, upstream
                );
            }
        }
    }
}

#[test]
fn reported_bypasses_are_refused() {
    let config = table(0b11111);
    for path in [
        "/mcp/health/..;/..;/admin",
        "/%61dmin/x",
        "/admin;x/y",
        "/ADMIN/x",
        "/mcp/..%3b/admin",
        "/mcp/%09",
        "/mcp/%c0%af",
        "/MCP/HEALTH",
        "/files/public",
    ] {
        assert_eq!(decide(config, path), None, "{path} must be refused");
    }
    assert_eq!(decide(config, "/admin/x"), Some(("r2".into(), false)));
    assert_eq!(decide(config, "/mcp/health"), Some(("r1".into(), true)));
    assert_eq!(decide(config, "/Files/Public/x"), Some(("r4".into(), true)));
}
