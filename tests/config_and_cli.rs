//! Configuration and the command line as a specification: every gateway config shipped in
//! the repository compiles; a bad config is reported with the key path of each problem and
//! how to fix it, all at once; and the binary's subcommands (`check`, `keygen`, `hash-key`,
//! `serve`) behave as documented, run as real processes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::external::repo_root;
use mcp_auth_gateway::config::{self, ConfigError};

const BIN: &str = env!("CARGO_BIN_EXE_mcp-auth-gateway");

// ---------------------------------------------------------------------------------------
// Shipped configurations
// ---------------------------------------------------------------------------------------

/// Directories that hold no shipped configuration (build output, dependencies, test
/// fixtures and fuzz inputs that may be invalid on purpose).
const NOT_SHIPPED: [&str; 5] = ["target", ".git", "node_modules", "tests", "fuzz"];

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !NOT_SHIPPED.contains(&name) {
                toml_files(&path, out);
            }
        } else if name.ends_with(".toml") {
            out.push(path);
        }
    }
}

/// A TOML file is a gateway configuration when it has a `[server]` table (Cargo.toml,
/// clippy.toml, rustfmt.toml … do not).
fn is_gateway_config(path: &Path) -> bool {
    let text = std::fs::read_to_string(path).expect("readable");
    match toml::from_str::<toml::Table>(&text) {
        Ok(table) => table.get("server").is_some_and(toml::Value::is_table),
        // A file that does not even parse but looks like ours must fail the test, not be
        // skipped.
        Err(_) => text.lines().any(|line| line.trim() == "[server]"),
    }
}

/// Shipped configurations read secrets from the environment (`…_env = "NAME"`): give each
/// such variable a stand-in value (32 bytes, base64: usable as a key too) unless it is set.
fn provide_secrets_named_in(path: &Path) {
    let text = std::fs::read_to_string(path).expect("readable");
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim_start().starts_with('#') || !key.trim().ends_with("_env") {
            continue;
        }
        let name = value.trim().trim_matches('"');
        let plausible = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if plausible && std::env::var_os(name).is_none() {
            // Only this test reads these variables.
            std::env::set_var(name, "c3RhbmQtaW4gc2VjcmV0LCBjb25maWcgdGVzdHMhISE=");
        }
    }
}

#[test]
fn every_shipped_gateway_config_compiles() {
    let root = repo_root();
    let mut files = Vec::new();
    toml_files(&root, &mut files);
    files.sort();
    let configs: Vec<&PathBuf> = files.iter().filter(|p| is_gateway_config(p)).collect();
    let names: Vec<String> = configs
        .iter()
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    for expected in ["gateway.toml", "deploy/traefik/gateway.docker.toml"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not found among {names:?}"
        );
    }
    let mut failures = Vec::new();
    for (path, name) in configs.iter().zip(&names) {
        provide_secrets_named_in(path);
        if let Err(error) = config::load(path) {
            failures.push(format!("{name}:\n{error}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        !files
            .iter()
            .any(|p| p.ends_with("Cargo.toml") && is_gateway_config(p)),
        "Cargo.toml is not a gateway config"
    );
}

// ---------------------------------------------------------------------------------------
// Config errors: key path, fix, all at once
// ---------------------------------------------------------------------------------------

/// A valid configuration; the tables below break one thing at a time.
const VALID: &str = r#"
[server]
listen = ["127.0.0.1:0"]
public_url = "http://127.0.0.1"

[[api_keys]]
id = "demo"
hash = "sha256:CQ0VSMnWX0E6GiyCigvuOnrgLSE3yvUeYCnmw8sfH6Q"
subject = "demo-user"
scopes = ["mcp:tools"]

[[issuers]]
id = "corp"
issuer = "https://login.example.com"
jwks_uri = "https://login.example.com/jwks.json"
algorithms = ["RS256"]

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "http://127.0.0.1:3001/mcp"
verifiers = ["api_keys", "corp"]
scopes = ["mcp:tools"]
"#;

fn compile(text: &str) -> Result<mcp_auth_gateway::Config, ConfigError> {
    config::from_toml_str(text, Path::new("."))
}

fn problems(text: &str) -> ConfigError {
    match compile(text) {
        Ok(_) => panic!("configuration compiled but should not have:\n{text}"),
        Err(error) => error,
    }
}

/// `text` with `from` replaced by `to` (which must occur exactly once).
fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
    text.replacen(from, to, 1)
}

fn assert_problem(error: &ConfigError, path: &str, fragment: &str) {
    assert!(
        error
            .problems
            .iter()
            .any(|p| p.path == path && p.message.contains(fragment)),
        "no problem at {path} mentioning {fragment:?} in:\n{error}"
    );
}

#[test]
fn the_valid_base_compiles() {
    let config = compile(VALID).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.routes.len(), 1);
}

#[test]
fn each_problem_names_its_key_path_and_the_fix() {
    std::env::set_var("SHORT_TEST_KEY", "short");
    // (what, from, to, key path, message fragment)
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            "upstream not a URL",
            "upstream = \"http://127.0.0.1:3001/mcp\"",
            "upstream = \"not a url\"",
            "routes[0].upstream",
            "use e.g. \"http://127.0.0.1:3001/mcp\"",
        ),
        (
            "upstream with another scheme",
            "upstream = \"http://127.0.0.1:3001/mcp\"",
            "upstream = \"ftp://127.0.0.1/mcp\"",
            "routes[0].upstream",
            "must start with http:// or https://",
        ),
        (
            "upstream with credentials",
            "upstream = \"http://127.0.0.1:3001/mcp\"",
            "upstream = \"http://user:pw@127.0.0.1:3001/mcp\"",
            "routes[0].upstream",
            "use upstream_headers for credentials",
        ),
        (
            "upstream with a query",
            "upstream = \"http://127.0.0.1:3001/mcp\"",
            "upstream = \"http://127.0.0.1:3001/mcp?x=1\"",
            "routes[0].upstream",
            "must not have a query string",
        ),
        (
            "unknown verifier id",
            "verifiers = [\"api_keys\", \"corp\"]",
            "verifiers = [\"api_keys\", \"crop\"]",
            "routes[0].verifiers[1]",
            "\"crop\" is not \"api_keys\", \"authorization_server\" (with [authorization_server] on) nor the id of an [[issuers]] or [[introspection]] entry",
        ),
        (
            "route without verifiers",
            "verifiers = [\"api_keys\", \"corp\"]",
            "verifiers = []",
            "routes[0].verifiers",
            "no verifier: list \"api_keys\"",
        ),
        (
            "HMAC algorithm",
            "algorithms = [\"RS256\"]",
            "algorithms = [\"HS256\"]",
            "issuers[0].algorithms[0]",
            "only asymmetric algorithms",
        ),
        (
            "alg none",
            "algorithms = [\"RS256\"]",
            "algorithms = [\"RS256\", \"none\"]",
            "issuers[0].algorithms[1]",
            "is not allowed",
        ),
        (
            "unknown algorithm",
            "algorithms = [\"RS256\"]",
            "algorithms = [\"RS257\"]",
            "issuers[0].algorithms[0]",
            "use RS256/384/512",
        ),
        (
            "no algorithm",
            "algorithms = [\"RS256\"]",
            "algorithms = []",
            "issuers[0].algorithms",
            "list at least one algorithm",
        ),
        (
            "JWKS over plain http",
            "jwks_uri = \"https://login.example.com/jwks.json\"",
            "jwks_uri = \"http://login.example.com/jwks.json\"",
            "issuers[0].jwks_uri",
            "use https",
        ),
        (
            "two key sources",
            "jwks_uri = \"https://login.example.com/jwks.json\"",
            "jwks_uri = \"https://login.example.com/jwks.json\"\njwks_file = \"jwks.json\"",
            "issuers[0]",
            "give exactly one of `jwks_uri`, `jwks_file`, `public_key_file`",
        ),
        (
            "too much leeway",
            "algorithms = [\"RS256\"]",
            "algorithms = [\"RS256\"]\nleeway = \"10m\"",
            "issuers[0].leeway",
            "more than 5 minutes",
        ),
        (
            "route path without slash",
            "path = \"/mcp\"",
            "path = \"mcp\"",
            "routes[0].path",
            "use e.g. \"/mcp\"",
        ),
        (
            "route path with a dot segment",
            "path = \"/mcp\"",
            "path = \"/mcp/../x\"",
            "routes[0].path",
            "dot segment",
        ),
        (
            "route under /.well-known",
            "path = \"/mcp\"",
            "path = \"/.well-known/mcp\"",
            "routes[0].path",
            "reserved for discovery documents",
        ),
        (
            "route over the forward_auth path",
            "path = \"/mcp\"",
            "path = \"/verify\"",
            "routes[0].path",
            "overlaps the forward_auth path",
        ),
        (
            "public path not a sub-path",
            "path = \"/mcp\"",
            "path = \"/mcp\"\npublic_paths = [\"health\"]",
            "routes[0].public_paths[0]",
            "must be a clean sub-path starting with /",
        ),
        (
            "bad allowed origin",
            "path = \"/mcp\"",
            "path = \"/mcp\"\nallowed_origins = [\"app.example.com\"]",
            "routes[0].allowed_origins[0]",
            "use scheme://host[:port]",
        ),
        (
            "bad method",
            "path = \"/mcp\"",
            "path = \"/mcp\"\nmethods = [\"G T\"]",
            "routes[0].methods[0]",
            "is not an HTTP method",
        ),
        (
            "bad listen address",
            "listen = [\"127.0.0.1:0\"]",
            "listen = [\"localhost\"]",
            "server.listen[0]",
            "is not ip:port",
        ),
        (
            "public_url with another scheme",
            "public_url = \"http://127.0.0.1\"",
            "public_url = \"ftp://127.0.0.1\"",
            "server.public_url",
            "must start with https://",
        ),
        (
            "key hash in another format",
            "hash = \"sha256:CQ0VSMnWX0E6GiyCigvuOnrgLSE3yvUeYCnmw8sfH6Q\"",
            "hash = \"md5:abc\"",
            "api_keys[0].hash",
            "mcp-auth-gateway hash-key",
        ),
        (
            "identity header that is a standard header",
            "[[api_keys]]",
            "[identity_headers]\nuser_id = \"Host\"\n\n[[api_keys]]",
            "identity_headers.user_id",
            "is a standard header",
        ),
        (
            "identity header spelled like an MCP header",
            "[[api_keys]]",
            "[identity_headers]\nuser_id = \"Mcp_Session_Id\"\n\n[[api_keys]]",
            "identity_headers.user_id",
            "is a standard header",
        ),
        (
            "identity header the gateway sets as X-Forwarded-*",
            "[[api_keys]]",
            "[identity_headers]\nuser_id = \"X_Forwarded_For\"\n\n[[api_keys]]",
            "identity_headers.user_id",
            "is set by the gateway on every request",
        ),
        (
            "upstream credential under an identity header's name",
            "\"corp\"]\nscopes = [\"mcp:tools\"]\n",
            "\"corp\"]\nscopes = [\"mcp:tools\"]\n[routes.upstream_headers]\n\"X_User_Id\" = { env = \"SHORT_TEST_KEY\" }\n",
            "routes[0].upstream_headers.X_User_Id",
            "is also the identity header identity_headers.user_id",
        ),
        (
            "upstream credential the gateway sets as X-Forwarded-*",
            "\"corp\"]\nscopes = [\"mcp:tools\"]\n",
            "\"corp\"]\nscopes = [\"mcp:tools\"]\n[routes.upstream_headers]\n\"X-Forwarded-Proto\" = { env = \"SHORT_TEST_KEY\" }\n",
            "routes[0].upstream_headers.X-Forwarded-Proto",
            "is set by the gateway on every request",
        ),
        (
            "user token under an identity header's name",
            "\"corp\"]\nscopes = [\"mcp:tools\"]\n",
            "\"corp\"]\nscopes = [\"mcp:tools\"]\n[routes.upstream_token]\nprovider = \"github\"\nheader = \"X-User-Email\"\n",
            "routes[0].upstream_token.header",
            "is also the identity header identity_headers.user_email",
        ),
        (
            "user token the gateway sets as X-Forwarded-*",
            "\"corp\"]\nscopes = [\"mcp:tools\"]\n",
            "\"corp\"]\nscopes = [\"mcp:tools\"]\n[routes.upstream_token]\nprovider = \"github\"\nheader = \"X-Forwarded-Host\"\n",
            "routes[0].upstream_token.header",
            "is set by the gateway on every request",
        ),
        (
            "one upstream credential named twice",
            "\"corp\"]\nscopes = [\"mcp:tools\"]\n",
            "\"corp\"]\nscopes = [\"mcp:tools\"]\n[routes.upstream_headers]\n\"X-Key\" = { env = \"SHORT_TEST_KEY\" }\n\"x_key\" = { env = \"SHORT_TEST_KEY\" }\n",
            "routes[0].upstream_headers.x_key",
            "is the same header as \"X-Key\"",
        ),
        (
            "user token in Authorization, an identity header too",
            "\"corp\"]\nscopes = [\"mcp:tools\"]\n",
            "\"corp\"]\nscopes = [\"mcp:tools\"]\n[routes.upstream_token]\nprovider = \"github\"\n\n[identity_headers]\nuser_id = \"Authorization\"\n",
            "routes[0].upstream_token.header",
            "is also the identity header identity_headers.user_id",
        ),
        (
            "identity header named like a hop-by-hop header",
            "[[api_keys]]",
            "[identity_headers]\nuser_id = \"Expect\"\n\n[[api_keys]]",
            "identity_headers.user_id",
            "is a standard header",
        ),
        (
            "identity headers that differ only in _ and -",
            "[[api_keys]]",
            "[identity_headers]\nuser_id = \"X-Who\"\nuser_name = \"X_Who\"\n\n[[api_keys]]",
            "identity_headers",
            "share a name",
        ),
        (
            "log format",
            "[[api_keys]]",
            "[log]\nformat = \"xml\"\n\n[[api_keys]]",
            "log.format",
            "use \"pretty\" or \"json\"",
        ),
        (
            "header limit too small",
            "[[api_keys]]",
            "[server.limits]\nmax_header_bytes = 100\n\n[[api_keys]]",
            "server.limits.max_header_bytes",
            "at least 1024",
        ),
        (
            "no JWKS refetch debounce",
            "algorithms = [\"RS256\"]",
            "algorithms = [\"RS256\"]\njwks_refetch_min_interval = \"0s\"",
            "issuers[0].jwks_refetch_min_interval",
            "use a duration from \"1s\" to \"1h\"",
        ),
        (
            "two entries for one issuer",
            "[[routes]]",
            "[[issuers]]\nid = \"corp2\"\nissuer = \"https://login.example.com\"\njwks_uri = \"https://login.example.com/other.json\"\nalgorithms = [\"RS256\"]\n\n[[routes]]",
            "issuers[1].issuer",
            "already configured by issuers[0]",
        ),
        (
            "huge header_read_timeout",
            "[[api_keys]]",
            "[server.limits]\nheader_read_timeout = \"100000000h\"\n\n[[api_keys]]",
            "server.limits.header_read_timeout",
            "use a duration from \"1ms\" to \"1m\"",
        ),
        (
            "idle_timeout zero",
            "[[api_keys]]",
            "[server.limits]\nidle_timeout = \"0s\"\n\n[[api_keys]]",
            "server.limits.idle_timeout",
            "use a duration from \"1s\" to \"24h\"",
        ),
        (
            "short key from the environment",
            "hash = \"sha256:CQ0VSMnWX0E6GiyCigvuOnrgLSE3yvUeYCnmw8sfH6Q\"",
            "key_env = \"SHORT_TEST_KEY\"",
            "api_keys[0]",
            "use at least 16",
        ),
        (
            "route path with an escape",
            "path = \"/mcp\"",
            "path = \"/m%63p\"",
            "routes[0].path",
            "\"/m%63p\"",
        ),
        (
            "route path with a parameter",
            "path = \"/mcp\"",
            "path = \"/mcp;v=1\"",
            "routes[0].path",
            "path parameter",
        ),
        (
            "routes differing only in case",
            "[[issuers]]",
            "[[routes]]\nid = \"upper\"\npath = \"/MCP\"\nupstream = \"http://127.0.0.1:3001/mcp\"\nverifiers = [\"api_keys\"]\n\n[[issuers]]",
            "routes[1].path",
            "another route already serves",
        ),
        (
            "log level that is not a level",
            "[[api_keys]]",
            "[log]\nlevel = \"verbose\"\n\n[[api_keys]]",
            "log.level",
            "is not a log filter",
        ),
        (
            "dangerous switch naming no route",
            "[[api_keys]]",
            "[dangerous]\nunauthenticated_routes = [\"ghost\"]\n\n[[api_keys]]",
            "dangerous.unauthenticated_routes[0]",
            "no route has id \"ghost\"",
        ),
    ];
    for (what, from, to, path, fragment) in cases {
        let error = problems(&edit(VALID, from, to));
        assert_problem(&error, path, fragment);
        // The rendered report (what `check` prints) carries the same line.
        let rendered = error.to_string();
        assert!(
            rendered.contains(&format!("  {path}: ")),
            "{what}: {rendered}"
        );
    }
}

#[test]
fn the_authorization_servers_lifetimes_default_to_an_hour_thirty_days_and_a_minute() {
    let with_server = format!("{VALID}\n[authorization_server]\ndatabase = \"as.db\"\n");
    let config = compile(&with_server).unwrap_or_else(|e| panic!("{e}"));
    let settings = config
        .authorization_server
        .expect("[authorization_server] is on");
    assert_eq!(settings.access_token_ttl, Duration::from_secs(3600));
    assert_eq!(
        settings.refresh_token_ttl,
        Duration::from_secs(30 * 24 * 3600)
    );
    assert_eq!(settings.code_ttl, Duration::from_secs(60));

    // Each is configurable within bounds; outside them the key path and the range are named.
    let set = |key: &str, value: &str| format!("{with_server}{key} = \"{value}\"\n");
    let config = compile(&set("authorization_code_ttl", "30s")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.authorization_server.unwrap().code_ttl,
        Duration::from_secs(30)
    );
    for (key, value, fragment) in [
        ("authorization_code_ttl", "61s", "use 10s to 60s"),
        ("authorization_code_ttl", "5s", "use 10s to 60s"),
        ("access_token_ttl", "25h", "use 1m to 24h"),
        ("refresh_token_ttl", "30m", "use 1h to 365d"),
    ] {
        let error = problems(&set(key, value));
        assert_problem(&error, &format!("authorization_server.{key}"), fragment);
    }
}

#[test]
fn the_authorization_server_is_on_https_or_on_loopback() {
    let with_server = |public_url: &str, issuer: &str| {
        let text = edit(
            VALID,
            "public_url = \"http://127.0.0.1\"",
            &format!("public_url = \"{public_url}\""),
        );
        format!("{text}\n[authorization_server]\ndatabase = \"as.db\"\n{issuer}")
    };
    for (public_url, issuer) in [
        ("https://mcp.example.com", ""),
        ("http://localhost:8080", ""),
        ("http://[::1]:8080", ""),
        (
            "http://mcp.example.com",
            "issuer = \"https://mcp.example.com\"\n",
        ),
    ] {
        let config = compile(&with_server(public_url, issuer)).unwrap_or_else(|e| panic!("{e}"));
        assert!(config.authorization_server.is_some());
    }
    let error = problems(&with_server("http://mcp.example.com", ""));
    assert_problem(
        &error,
        "authorization_server.issuer",
        "defaults to server.public_url \"http://mcp.example.com\", which is not https",
    );
    let error = problems(&with_server(
        "https://mcp.example.com",
        "issuer = \"http://mcp.example.com\"\n",
    ));
    assert_problem(&error, "authorization_server.issuer", "not a usable issuer");
}

#[test]
fn type_errors_name_their_key_path_and_line_all_at_once() {
    // A misspelt required key, a duration in words, a string where a list belongs, and a
    // bad size: four problems, each at its key path and line, in one report.
    let text = edit(
        &edit(
            VALID,
            "listen = [\"127.0.0.1:0\"]",
            "listn = [\"127.0.0.1:0\"]",
        ),
        "[[api_keys]]",
        "[server.limits]\nheader_read_timeout = \"5 parsecs\"\nmax_body_bytes = \"four\"\n\n[[api_keys]]",
    );
    let error = problems(&text);
    assert_problem(&error, "server.listn", "unknown key");
    assert_problem(&error, "server.listen", "required key is missing");
    assert_problem(
        &error,
        "server.limits.header_read_timeout",
        "invalid duration \"5 parsecs\"",
    );
    assert_problem(
        &error,
        "server.limits.max_body_bytes",
        "invalid size \"four\"",
    );
    let line_of = |path: &str| {
        error
            .problems
            .iter()
            .find(|p| p.path == path)
            .and_then(|p| p.line)
    };
    assert_eq!(line_of("server.listn"), Some(3), "{error}");
    assert_eq!(
        line_of("server.limits.header_read_timeout"),
        Some(7),
        "{error}"
    );
    assert!(error.to_string().contains("(line 7)"), "{error}");

    let error = problems(&edit(
        VALID,
        "listen = [\"127.0.0.1:0\"]",
        "listen = \"127.0.0.1:0\"",
    ));
    assert_problem(&error, "server.listen", "expected a sequence");

    // Durations with fractions and sums, sizes with units.
    let text = edit(
        VALID,
        "[[api_keys]]",
        "[server.limits]\nheader_read_timeout = \"1.5s\"\nidle_timeout = \"1m 30s\"\nmax_body_bytes = \"4MB\"\nmax_header_bytes = \"32KiB\"\n\n[[api_keys]]",
    );
    let config = compile(&text).unwrap_or_else(|e| panic!("{e}"));
    let limits = &config.server.limits;
    assert_eq!(limits.header_read_timeout, Duration::from_millis(1500));
    assert_eq!(limits.idle_timeout, Duration::from_secs(90));
    assert_eq!(limits.max_body_bytes, 4_000_000);
    assert_eq!(limits.max_header_bytes, 32 * 1024);
}

#[test]
fn syntax_errors_are_all_reported_with_their_lines() {
    let error = problems("[server]\nlisten = [\"a\"\npublic_url = \"x\"\n[[routes]\n");
    assert!(error.problems.iter().all(|p| p.path == "(toml)"), "{error}");
    assert!(error.problems.iter().all(|p| p.line.is_some()), "{error}");
}

#[test]
fn all_compile_problems_are_reported_at_once() {
    let text = r#"
[server]
listen = ["127.0.0.1:0", "not-an-address"]
public_url = "http://127.0.0.1"

[[issuers]]
id = "corp"
issuer = "https://login.example.com"
jwks_uri = "https://login.example.com/jwks.json"
algorithms = ["HS256", "RS256"]

[[routes]]
id = "mcp"
path = "/mcp"
upstream = "ftp://127.0.0.1/mcp"
verifiers = ["nobody"]

[[routes]]
id = "mcp"
path = "/other"
upstream = "http://127.0.0.1:3002/other"
"#;
    let error = problems(text);
    let expected = [
        ("server.listen[1]", "is not ip:port"),
        ("issuers[0].algorithms[0]", "\"HS256\" is not allowed"),
        ("routes[0].upstream", "must start with http:// or https://"),
        ("routes[0].verifiers[0]", "\"nobody\" is not \"api_keys\""),
        ("routes[1].verifiers", "no verifier"),
        ("routes", "id \"mcp\" is used more than once"),
    ];
    for (path, fragment) in expected {
        assert_problem(&error, path, fragment);
    }
    let rendered = error.to_string();
    assert!(
        rendered.starts_with(&format!(
            "invalid configuration ({} problems):",
            error.problems.len()
        )),
        "{rendered}"
    );
}

#[test]
fn unknown_keys_are_reported_at_their_key_path() {
    let error = problems(&edit(
        VALID,
        "public_url = \"http://127.0.0.1\"",
        "public_url = \"http://127.0.0.1\"\nlisen = [\"127.0.0.1:8080\"]",
    ));
    assert_problem(&error, "server.lisen", "unknown");
    let error = problems(&edit(
        VALID,
        "path = \"/mcp\"",
        "path = \"/mcp\"\nbogus = 1",
    ));
    assert_problem(&error, "routes[0].bogus", "unknown");
}

#[test]
fn missing_environment_variables_are_all_reported_with_their_key_paths() {
    let text = edit(
        &edit(
            VALID,
            "upstream = \"http://127.0.0.1:3001/mcp\"",
            "upstream = \"http://${CONFIG_TEST_MISSING_HOST}/mcp\"",
        ),
        "public_url = \"http://127.0.0.1\"",
        "public_url = \"${CONFIG_TEST_MISSING_URL}\"",
    );
    let error = problems(&text);
    assert_problem(
        &error,
        "routes[0].upstream",
        "environment variable CONFIG_TEST_MISSING_HOST is not set",
    );
    assert_problem(
        &error,
        "server.public_url",
        "remove ${CONFIG_TEST_MISSING_URL}",
    );
    assert_eq!(error.problems.len(), 2, "{error}");

    // `$${` is a literal `${`, not a variable.
    let literal = edit(
        VALID,
        "path = \"/mcp\"",
        "path = \"/mcp\"\nresource_name = \"costs $${X}\"",
    );
    compile(&literal).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn problems_from_every_stage_are_reported_together() {
    let text = edit(
        &edit(
            &edit(
                VALID,
                "public_url = \"http://127.0.0.1\"",
                "public_url = \"http://127.0.0.1\"\nlisen = [\"127.0.0.1:8080\"]",
            ),
            "upstream = \"http://127.0.0.1:3001/mcp\"",
            "upstream = \"ftp://127.0.0.1/mcp\"",
        ),
        "issuer = \"https://login.example.com\"",
        "issuer = \"${CONFIG_TEST_MISSING_ISSUER}\"",
    );
    let error = problems(&text);
    assert_problem(&error, "server.lisen", "unknown");
    assert_problem(&error, "issuers[0].issuer", "CONFIG_TEST_MISSING_ISSUER");
    assert_problem(&error, "routes[0].upstream", "http://");
}

// ---------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------

/// A configuration file in a fresh temporary directory, removed on drop.
struct TempConfig {
    dir: PathBuf,
    path: PathBuf,
}

impl TempConfig {
    fn new(name: &str, text: &str) -> TempConfig {
        let dir = std::env::temp_dir().join(format!(
            "mcp-gateway-config-test-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("gateway.toml");
        std::fs::write(&path, text).expect("write config");
        TempConfig { dir, path }
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn gateway() -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(repo_root())
        .env_remove("MCP_GATEWAY_CONFIG")
        .env("RUST_LOG", "info");
    command
}

fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .expect("run the binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = gateway()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("output")
}

#[test]
fn check_accepts_the_shipped_config_and_prints_its_routes() {
    let output = run(gateway().args(["check", "--config", "gateway.toml"]));
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("gateway.toml: ok"), "{stdout}");
    assert!(
        stdout.contains("public_url: http://localhost:8080"),
        "{stdout}"
    );
    assert!(stdout.contains("listen: 127.0.0.1:8080"), "{stdout}");
    assert!(stdout.contains("forward_auth: /verify"), "{stdout}");
    assert!(
        stdout.contains(
            "everything /mcp -> http://127.0.0.1:3001/mcp verifiers=[api_keys] scopes=[mcp:tools] resource=http://localhost:8080/mcp"
        ),
        "{stdout}"
    );
    // The demo route takes API keys only, so `check` says its metadata names no
    // authorization server; nothing else is worth a warning.
    let warnings: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("WARNING"))
        .collect();
    assert!(
        warnings.len() == 1 && warnings[0].starts_with("WARNING routes[0].authorization_servers"),
        "{stdout}"
    );
}

#[test]
fn check_warns_when_a_routes_metadata_names_no_authorization_server() {
    let config = TempConfig::new(
        "check-warning",
        &edit(
            VALID,
            "verifiers = [\"api_keys\", \"corp\"]",
            "verifiers = [\"api_keys\"]",
        ),
    );
    let output = run(gateway().arg("check").arg("--config").arg(&config.path));
    assert_eq!(output.status.code(), Some(0), "a warning is not an error");
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("WARNING routes[0].authorization_servers: ")
            && stdout.contains("set authorization_servers"),
        "{stdout}"
    );
    // With an issuer on the route its metadata names it: no warning.
    let config = TempConfig::new("check-no-warning", VALID);
    let stdout = text(&run(gateway().arg("check").arg("--config").arg(&config.path)).stdout);
    assert!(!stdout.contains("authorization_servers"), "{stdout}");
}

#[test]
fn check_reports_every_problem_with_its_key_path_and_exits_1() {
    let bad = TempConfig::new(
        "check-bad",
        &edit(
            &edit(
                VALID,
                "upstream = \"http://127.0.0.1:3001/mcp\"",
                "upstream = \"not a url\"",
            ),
            "algorithms = [\"RS256\"]",
            "algorithms = [\"HS256\"]",
        ),
    );
    let output = run(gateway().arg("check").arg("--config").arg(&bad.path));
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("invalid configuration (2 problems)"),
        "{stderr}"
    );
    assert!(stderr.contains("routes[0].upstream: "), "{stderr}");
    assert!(stderr.contains("issuers[0].algorithms[0]: "), "{stderr}");
    assert!(
        stderr.contains(&bad.path.display().to_string()),
        "names the file: {stderr}"
    );
    assert_eq!(text(&output.stdout), "", "nothing on stdout for a bad file");

    let missing = run(gateway().args(["check", "--config", "/nonexistent/gateway.toml"]));
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("cannot read the configuration file"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn keygen_prints_a_key_and_the_hash_hash_key_reproduces() {
    let output = run(gateway().arg("keygen"));
    assert_eq!(output.status.code(), Some(0));
    let stdout = text(&output.stdout);
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("key:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no key line in {stdout}"));
    let hash = stdout
        .lines()
        .find_map(|l| l.strip_prefix("hash:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no hash line in {stdout}"));
    assert_eq!(
        key.len(),
        43,
        "32 random bytes, base64url without padding: {key}"
    );
    assert!(
        key.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{key}"
    );
    assert!(hash.starts_with("sha256:"), "{hash}");
    assert_eq!(hash.len(), "sha256:".len() + 43, "{hash}");

    // Piped with and without a trailing newline (`echo` vs `printf %s`).
    for input in [format!("{key}\n"), key.to_string(), format!("{key}\r\n")] {
        let output = with_stdin(&["hash-key"], input.as_bytes());
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        assert_eq!(text(&output.stdout).trim_end(), hash, "input {input:?}");
    }

    // The hash goes into a config that then accepts the key.
    let config = edit(
        VALID,
        "hash = \"sha256:CQ0VSMnWX0E6GiyCigvuOnrgLSE3yvUeYCnmw8sfH6Q\"",
        &format!("hash = \"{hash}\""),
    );
    compile(&config).unwrap_or_else(|e| panic!("{e}"));

    // Two runs, two different keys.
    let again = text(&run(gateway().arg("keygen")).stdout);
    assert!(!again.contains(key), "keygen repeated a key");
}

#[test]
fn hash_key_matches_the_shipped_demo_hash_and_refuses_empty_input() {
    let output = with_stdin(&["hash-key"], b"demo-key-change-me\n");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        text(&output.stdout).trim_end(),
        "sha256:CQ0VSMnWX0E6GiyCigvuOnrgLSE3yvUeYCnmw8sfH6Q",
        "the hash in gateway.toml is the documented demo key's"
    );

    for empty in [&b""[..], b"\n", b"\r\n"] {
        let output = with_stdin(&["hash-key"], empty);
        assert_eq!(output.status.code(), Some(1), "input {empty:?}");
        assert_eq!(text(&output.stdout), "", "input {empty:?}");
        assert!(
            text(&output.stderr).contains("no key on stdin"),
            "{}",
            text(&output.stderr)
        );
    }
}

#[test]
fn token_mint_then_inspect_and_verify_with_the_configured_issuer() {
    let Some(openssl) = common::external::require("openssl") else {
        return;
    };
    let dir = common::TempDir::new("token-cli");
    let openssl_ok = |args: &[&str]| {
        let status = Command::new(&openssl)
            .args(args)
            .current_dir(&dir)
            .stderr(Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl_ok(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "key.pem",
    ]);
    openssl_ok(&["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"]);
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        edit(
            VALID,
            "[[routes]]",
            "[[issuers]]\nid = \"demo\"\nissuer = \"https://demo.test\"\npublic_key_file = \"pub.pem\"\nalgorithms = [\"ES256\"]\n\n[[routes]]",
        ),
    )
    .expect("write config");
    let key = dir.join("key.pem");
    let mint = run(gateway()
        .args(["token", "mint", "--issuer", "https://demo.test"])
        .args([
            "--audience",
            "http://127.0.0.1/mcp",
            "--subject",
            "ada",
            "--scope",
            "mcp:tools",
            "--key",
        ])
        .arg(&key));
    assert_eq!(mint.status.code(), Some(0), "{}", text(&mint.stderr));
    let token = text(&mint.stdout).trim().to_string();

    // Decoded only, and said so.
    let inspect = run(gateway().args(["token", "inspect", &token]));
    let stdout = text(&inspect.stdout);
    assert!(stdout.starts_with("UNVERIFIED"), "{stdout}");
    assert!(stdout.contains("\"sub\": \"ada\""), "{stdout}");

    // Verified against the configured issuer.
    let verify = run(gateway()
        .args(["token", "inspect", "--verify", "--config"])
        .arg(&config)
        .arg(&token));
    let stdout = text(&verify.stdout);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{stdout}{}",
        text(&verify.stderr)
    );
    assert!(
        stdout.starts_with("VERIFIED") && stdout.contains("subject: ada"),
        "{stdout}"
    );

    // A changed payload is refused.
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_payload = base64_url(
        r#"{"iss":"https://demo.test","sub":"root","aud":"http://127.0.0.1/mcp","exp":9999999999}"#,
    );
    parts[1] = &forged_payload;
    let forged = parts.join(".");
    let verify = run(gateway()
        .args(["token", "inspect", "--verify", "--config"])
        .arg(&config)
        .arg(&forged));
    assert_eq!(verify.status.code(), Some(1));
    assert!(
        text(&verify.stderr).contains("INVALID"),
        "{}",
        text(&verify.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// A running `serve` process, killed if the test fails before it exits.
struct Served {
    child: Option<Child>,
    /// Lines of stdout (JSON log events), as they come.
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Served {
    fn spawn(config: &Path) -> Served {
        Served::spawn_with(config, &[])
    }

    /// `serve --config <config>` with more arguments.
    fn spawn_with(config: &Path, args: &[&str]) -> Served {
        Served::spawn_env(config, args, None)
    }

    /// `serve --config <config>` with more arguments and, if given, `RUST_LOG`.
    fn spawn_env(config: &Path, args: &[&str], rust_log: Option<&str>) -> Served {
        let mut command = gateway();
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Served {
            child: Some(child),
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the log event whose `message` is `message` and returns it (readiness is
    /// the gateway saying so, not a poll or a sleep). The timeout only bounds a hang.
    fn wait_for(&mut self, message: &str) -> serde_json::Value {
        loop {
            let line = match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => line,
                Err(e) => panic!(
                    "no {message:?} event ({e}); log so far:\n{}",
                    self.seen.join("\n")
                ),
            };
            self.seen.push(line.clone());
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                if event["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
                {
                    return event;
                }
            }
        }
    }

    /// Waits for a raw stdout line (any log format) that `wanted` accepts.
    fn wait_for_line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        loop {
            let line = match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => line,
                Err(e) => panic!("no such line ({e}); log so far:\n{}", self.seen.join("\n")),
            };
            self.seen.push(line.clone());
            if wanted(&line) {
                return line;
            }
        }
    }

    /// Every stdout line up to the end of the output (after the process exits).
    fn rest_of_output(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(30)) {
            self.seen.push(line.clone());
            rest.push(line);
        }
        rest
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send(());
            (child, status)
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            panic!(
                "serve did not exit within 30 s; log:\n{}",
                self.seen.join("\n")
            );
        }
        let (_child, status) = waiter.join().expect("waiter");
        status.expect("wait")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn serve_config(listen: &str) -> String {
    // The issuer's keys come from a closed loopback port: tests reach nothing beyond it.
    let valid = edit(
        VALID,
        "jwks_uri = \"https://login.example.com/jwks.json\"",
        "jwks_uri = \"http://127.0.0.1:9/jwks.json\"",
    );
    edit(
        &edit(&valid, "listen = [\"127.0.0.1:0\"]", &format!("listen = [\"{listen}\"]")),
        "[[api_keys]]",
        "[log]\nformat = \"json\"\nlevel = \"info\"\n\n[server.limits]\nshutdown_grace = \"5s\"\n\n[[api_keys]]",
    )
}

/// The audit line in the `pretty` format (the shipped default), and the log filter deciding
/// whether it is written: `RUST_LOG=warn` and `audit=off` silence it, the rest stays.
#[tokio::test]
async fn audit_lines_follow_the_format_and_the_log_filter() {
    let port = common::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let pretty = TempConfig::new(
        "serve-pretty",
        &edit(
            &serve_config(&format!("127.0.0.1:{port}")),
            "format = \"json\"",
            "format = \"pretty\"",
        ),
    );
    let mut served = Served::spawn_env(&pretty.path, &[], None);
    served.wait_for_line(|line| line.contains(" INFO ") && line.contains("listening"));
    let denied = common::http::get(addr, "/mcp?q=secret", &[("user-agent", "a \"b\"")]).await;
    assert_eq!(denied.status, 401);
    let line = served.wait_for_line(|line| line.contains(" audit: "));
    let (timestamp, rest) = line.split_once(' ').expect("a timestamp first");
    assert!(
        timestamp.len() == 27 && timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
        "{line}"
    );
    assert!(
        rest.starts_with(
            " INFO audit: request method=GET path=\"/mcp\" status=401 verdict=\"deny\" route=\"mcp\""
        ),
        "{line}"
    );
    assert!(rest.contains(" client=127.0.0.1 request_id=\""), "{line}");
    assert!(rest.ends_with(" user_agent=\"a \\\"b\\\"\""), "{line}");
    assert!(!line.contains("secret"), "{line}");
    drop(served);

    // A directive on a field the audit event does not have leaves it alone.
    let mut served = Served::spawn_env(&pretty.path, &[], Some("info,[{peer}]=warn"));
    served.wait_for_line(|line| line.contains("listening"));
    assert_eq!(common::http::get(addr, "/mcp", &[]).await.status, 401);
    served.wait_for_line(|line| line.contains(" audit: request method=GET path=\"/mcp\""));
    drop(served);

    for filter in ["warn", "info,audit=off"] {
        let mut served = Served::spawn_env(&pretty.path, &[], Some(filter));
        let health = loop {
            if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
                drop(stream);
                break common::http::get(addr, "/healthz", &[]).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(health.status, 200);
        assert_eq!(common::http::get(addr, "/mcp", &[]).await.status, 401);
        let status = Command::new("kill")
            .args(["-TERM", &served.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        assert!(served.wait().success());
        let lines = served.rest_of_output();
        assert!(
            lines.iter().all(|line| !line.contains(" audit: ")),
            "RUST_LOG={filter}: {lines:?}"
        );
        if filter != "warn" {
            assert!(
                lines
                    .iter()
                    .any(|line| line.contains("shutting down") || line.contains("stopped")),
                "RUST_LOG={filter} silenced the other info lines too: {lines:?}"
            );
        }
    }
}

#[test]
fn serve_refuses_a_bad_config_without_listening() {
    let port = common::free_port();
    let bad = TempConfig::new(
        "serve-bad",
        &edit(
            &serve_config(&format!("127.0.0.1:{port}")),
            "upstream = \"http://127.0.0.1:3001/mcp\"",
            "upstream = \"not a url\"",
        ),
    );
    let output = run(gateway().arg("serve").arg("--config").arg(&bad.path));
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("routes[0].upstream: "), "{stderr}");
    let stdout = text(&output.stdout);
    assert!(!stdout.contains("listening"), "{stdout}");
}

#[tokio::test]
async fn serve_answers_health_and_exits_cleanly_on_sigterm() {
    // Port 0 and the address from the "listening" event: no free-port race.
    let good = TempConfig::new("serve-good", &serve_config("127.0.0.1:0"));
    let mut served = Served::spawn(&good.path);
    let listening = served.wait_for("listening");
    let addr: std::net::SocketAddr = listening["addr"]
        .as_str()
        .unwrap_or_else(|| panic!("no addr in {listening}"))
        .parse()
        .expect("a socket address");

    let health = common::http::get(addr, "/healthz", &[]).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    // The real process runs the real pipeline: no token, the challenge.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mcp = common::http::get(
        addr,
        "/mcp",
        &[
            ("user-agent", "audit-test/1.0"),
            ("traceparent", traceparent),
            // Not behind a trusted proxy: a client's own id is replaced.
            ("x-request-id", "client-chosen"),
        ],
    )
    .await;
    assert_eq!(mcp.status, 401);
    assert!(mcp.header("www-authenticate").is_some());
    let request_id = mcp
        .header("x-request-id")
        .expect("a request id")
        .to_string();
    assert_ne!(request_id, "client-chosen");
    // One audit event per request (probes are not audited by default); a denial names the
    // route it was refused on, the client, the request id, the trace and the user agent.
    let denial = served.wait_for("request");
    assert_eq!(denial["path"], "/mcp", "{denial}");
    assert_eq!(denial["verdict"], "deny", "{denial}");
    assert_eq!(denial["status"], 401, "{denial}");
    assert!(denial["route"].is_string(), "{denial}");
    assert_eq!(denial["reason"], "no credentials", "{denial}");
    assert_eq!(denial["client"], "127.0.0.1", "{denial}");
    assert_eq!(denial["request_id"], request_id.as_str(), "{denial}");
    assert_eq!(
        denial["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{denial}"
    );
    assert_eq!(denial["user_agent"], "audit-test/1.0", "{denial}");
    // An API key's id (never the key) is recorded.
    let keyed = common::http::get(
        addr,
        "/mcp",
        &[("authorization", "Bearer demo-key-change-me")],
    )
    .await;
    assert_ne!(keyed.status, 401, "{}", keyed.body);
    let keyed_event = served.wait_for("request");
    assert_eq!(keyed_event["key_id"], "demo", "{keyed_event}");
    assert!(
        !keyed_event.to_string().contains("demo-key-change-me"),
        "{keyed_event}"
    );

    // SIGHUP (systemctl reload) with a broken file: reported, and nothing changes.
    let pid = served.pid().to_string();
    let hup = || {
        let status = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("run kill");
        assert!(status.success());
    };
    let original = std::fs::read_to_string(&good.path).expect("config text");
    std::fs::write(
        &good.path,
        original.replace("upstream = \"http", "upstream = \"ftp"),
    )
    .expect("write broken config");
    hup();
    served.wait_for("SIGHUP received");
    let failed = served.wait_for("configuration reload failed");
    assert!(
        failed["problems"]
            .as_str()
            .is_some_and(|p| p.contains("routes[0].upstream")),
        "{failed}"
    );
    assert_eq!(common::http::get(addr, "/mcp", &[]).await.status, 401);
    // A good file with a new route: reloaded, and the route answers.
    let with_route = format!(
        "{original}\n[[routes]]\nid = \"added\"\npath = \"/added\"\nupstream = \"http://127.0.0.1:9/added\"\nverifiers = [\"api_keys\"]\n"
    );
    std::fs::write(&good.path, with_route).expect("write new config");
    hup();
    served.wait_for("configuration reloaded");
    assert_eq!(common::http::get(addr, "/added", &[]).await.status, 401);
    assert_eq!(common::http::get(addr, "/healthz", &[]).await.status, 200);

    let kill = Command::new("kill")
        .args(["-TERM", &served.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = served.wait();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status:?}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after exit"
    );
    served.wait_for("stopped");
}

/// `serve --watch`: a changed file is reloaded without a signal — a broken one is reported
/// and changes nothing, a good one with a new route is swapped in; a touch that changes no
/// content reloads nothing.
#[tokio::test]
async fn serve_watch_reloads_a_changed_file() {
    let good = TempConfig::new("serve-watch", &serve_config("127.0.0.1:0"));
    let mut served = Served::spawn_with(&good.path, &["--watch"]);
    let listening = served.wait_for("listening");
    let addr: std::net::SocketAddr = listening["addr"]
        .as_str()
        .unwrap_or_else(|| panic!("no addr in {listening}"))
        .parse()
        .expect("addr");
    // A change right after the start counts (the watcher compares with the content the
    // configuration was loaded from, not with what it finds when it starts watching).
    let original = std::fs::read_to_string(&good.path).expect("config text");
    std::fs::write(
        &good.path,
        original.replace("upstream = \"http", "upstream = \"ftp"),
    )
    .expect("write broken config");
    served.wait_for("the configuration file changed");
    let failed = served.wait_for("configuration reload failed");
    assert!(
        failed["problems"]
            .as_str()
            .is_some_and(|p| p.contains("routes[0].upstream")),
        "{failed}"
    );
    assert_eq!(common::http::get(addr, "/mcp", &[]).await.status, 401);
    let with_route = format!(
        "{original}\n[[routes]]\nid = \"added\"\npath = \"/added\"\nupstream = \"http://127.0.0.1:9/added\"\nverifiers = [\"api_keys\"]\n"
    );
    std::fs::write(&good.path, &with_route).expect("write new config");
    served.wait_for("the configuration file changed");
    served.wait_for("configuration reloaded");
    assert_eq!(common::http::get(addr, "/added", &[]).await.status, 401);
    // The same content written again: no reload (the next event is the one below).
    std::fs::write(&good.path, &with_route).expect("rewrite");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kill = Command::new("kill")
        .args(["-TERM", &served.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let next = served.wait_for("");
    assert_ne!(
        next["message"], "the configuration file changed: reloading the configuration",
        "{next}"
    );
    served.wait_for("stopped");
}

#[test]
fn the_readme_commands_are_the_ones_that_work() {
    // The README promises: one command runs the gateway with the shipped gateway.toml, one
    // runs the tests (and `.ci/run` runs exactly that one), and the "Try it" block starts the
    // reference server with an npm script that exists.
    let root = common::external::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
    let blocks: Vec<&str> = readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .collect();
    assert!(
        blocks
            .iter()
            .any(|b| b.trim() == "cargo run --release -- serve --config gateway.toml"),
        "the run command"
    );
    assert!(
        blocks.iter().any(|b| b.trim() == "cargo test --locked"),
        "the test command"
    );
    assert_eq!(
        ci.lines()
            .rfind(|l| !l.trim().is_empty() && !l.starts_with('#')),
        Some("cargo test --locked"),
        ".ci/run ends with the README's test command"
    );
    // The run command's configuration compiles (as `check` would).
    let output = run(gateway()
        .args(["check", "--config"])
        .arg(root.join("gateway.toml")));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    // The Try-it block's npm script exists and starts the loopback wrapper.
    assert!(readme.contains("npm run --silent server-everything"));
    let package =
        std::fs::read_to_string(root.join("tests/node/package.json")).expect("package.json");
    let package: serde_json::Value = serde_json::from_str(&package).expect("package.json is JSON");
    assert_eq!(
        package["scripts"]["server-everything"],
        "node loopback.mjs streamableHttp"
    );
}
