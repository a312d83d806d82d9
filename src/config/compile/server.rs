//! `[server]`, its limits and public URL, and the identity header names.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, Uri};

use super::Collector;
use crate::config::raw::{RawConfig, RawIdentityHeaders, RawServer};
use crate::config::settings::{Limits, PublicUrl, ServerSettings};
use crate::model::allowlist::canonical_origin;
use crate::model::forwarding::SET_ON_EVERY_REQUEST;
use crate::model::header_spelling::{begins_reading_as, reads_as};
use crate::model::identity::IdentityHeaders;
use crate::model::path::check_path;

const MILLISECOND: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// A bound as the configuration spells it ("0s", "1ms", "1m", "1h", "24h").
pub(super) fn human(d: Duration) -> String {
    match d.as_millis() {
        0 => "\"0s\"".into(),
        ms if ms % 3_600_000 == 0 => format!("\"{}h\"", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("\"{}m\"", ms / 60_000),
        ms if ms % 1000 == 0 => format!("\"{}s\"", ms / 1000),
        ms => format!("\"{ms}ms\""),
    }
}

pub(super) fn compile_limits(raw: &RawConfig, c: &mut Collector) -> Limits {
    let l = &raw.server.limits;
    for (key, value, min, max) in [
        ("max_header_bytes", l.max_header_bytes, 1024, 1 << 20),
        ("max_token_bytes", l.max_token_bytes, 64, 1 << 20),
        ("max_body_bytes", l.max_body_bytes, 0, 1 << 40),
    ] {
        if value.0 < min || value.0 > max {
            c.push(
                format!("server.limits.{key}"),
                format!(
                    "{} bytes is out of range: must be at least {min} and at most {max}",
                    value.0
                ),
            );
        }
    }
    if l.token_cache_entries == 0 {
        c.push("server.limits.token_cache_entries", "must be at least 1");
    }
    // Every duration has a floor (zero would disable a defence or spin) and a ceiling (a
    // deadline past it protects nothing, and huge values overflow timers).
    for (key, value, min, max) in [
        ("connect_timeout", l.connect_timeout, MILLISECOND, MINUTE),
        ("response_timeout", l.response_timeout, MILLISECOND, HOUR),
        (
            "header_read_timeout",
            l.header_read_timeout,
            MILLISECOND,
            MINUTE,
        ),
        ("idle_timeout", l.idle_timeout, SECOND, DAY),
        ("body_read_timeout", l.body_read_timeout, MILLISECOND, HOUR),
        ("send_timeout", l.send_timeout, SECOND, HOUR),
        (
            "stream_idle_timeout",
            l.stream_idle_timeout,
            Duration::ZERO,
            DAY,
        ),
        ("shutdown_grace", l.shutdown_grace, Duration::ZERO, HOUR),
    ] {
        if value.0 < min || value.0 > max {
            c.push(
                format!("server.limits.{key}"),
                format!(
                    "{:?} is out of range: use a duration from {} to {}",
                    value.0,
                    human(min),
                    human(max)
                ),
            );
        }
    }
    Limits {
        max_header_bytes: l.max_header_bytes.as_usize(),
        max_body_bytes: l.max_body_bytes.0,
        max_token_bytes: l.max_token_bytes.as_usize(),
        header_read_timeout: l.header_read_timeout.0,
        connect_timeout: l.connect_timeout.0,
        response_timeout: l.response_timeout.0,
        stream_idle_timeout: l.stream_idle_timeout.0,
        shutdown_grace: l.shutdown_grace.0,
        max_connections: l.max_connections.max(1),
        max_connections_per_ip: l.max_connections_per_ip,
        idle_timeout: l.idle_timeout.0,
        body_read_timeout: l.body_read_timeout.0,
        send_timeout: l.send_timeout.0,
    }
}

pub(super) fn compile_server(
    raw: &RawServer,
    limits: Limits,
    base_dir: &Path,
    c: &mut Collector,
) -> Option<ServerSettings> {
    if raw.listen.is_empty() {
        c.push("server.listen", "no address: add e.g. \"127.0.0.1:8080\"");
    }
    let listen: Vec<SocketAddr> = raw
        .listen
        .iter()
        .enumerate()
        .filter_map(|(i, addr)| {
            c.ok(
                &format!("server.listen[{i}]"),
                addr.parse::<SocketAddr>()
                    .map_err(|_| format!("{addr:?} is not ip:port (e.g. \"0.0.0.0:8080\")")),
            )
        })
        .collect();
    let public_url = c.ok("server.public_url", parse_public_url(&raw.public_url))?;
    let tls = raw.tls.as_ref().and_then(|tls| {
        c.ok(
            "server.tls",
            crate::config::tls::load(
                &base_dir.join(&tls.cert_file),
                &base_dir.join(&tls.key_file),
            ),
        )
    });
    let workers = match raw.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n if n > 1024 => {
            c.push(
                "server.workers",
                format!("{n} is too many: use 0 (one per core) or a small number"),
            );
            1
        }
        n => n,
    };
    Some(ServerSettings {
        listen,
        workers,
        public_url,
        trust_forwarded_headers: raw.trust_forwarded_headers,
        tls,
        limits,
    })
}

pub(super) fn parse_public_url(text: &str) -> Result<PublicUrl, String> {
    let uri: Uri = text
        .parse()
        .map_err(|_| format!("{text:?} is not a URL: use e.g. \"https://mcp.example.com\""))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if scheme != "https" && scheme != "http" {
        return Err(format!(
            "{text:?} must start with https:// (or http:// for local use)"
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{text:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("{text:?} must not contain user information"));
    }
    if uri.query().is_some() || text.contains('#') {
        return Err(format!("{text:?} must not have a query or fragment"));
    }
    let origin = canonical_origin(&format!("{scheme}://{authority}"))
        .ok_or_else(|| format!("{text:?} is not a usable origin"))?;
    let base_path = uri.path().trim_end_matches('/').to_string();
    if !base_path.is_empty() && check_path(&base_path).is_err() {
        return Err(format!("{text:?} has an ambiguous path"));
    }
    Ok(PublicUrl {
        origin,
        base_path,
        host: authority.host().to_ascii_lowercase(),
        port: authority.port_u16(),
    })
}

pub(super) fn compile_identity_headers(
    raw: &RawIdentityHeaders,
    c: &mut Collector,
) -> IdentityHeaders {
    let mut name = |key: &str, value: &str| -> HeaderName {
        match HeaderName::from_bytes(value.as_bytes()) {
            Ok(name) if is_set_on_every_request(&name) => {
                c.push(
                    format!("identity_headers.{key}"),
                    format!("{value:?} {SET_ON_EVERY_REQUEST_REASON}: choose e.g. \"X-User-Id\""),
                );
                HeaderName::from_static("x-invalid")
            }
            Ok(name) if !is_reserved_header(&name) => name,
            Ok(_) => {
                c.push(
                    format!("identity_headers.{key}"),
                    format!("{value:?} is a standard header: choose e.g. \"X-User-Id\""),
                );
                HeaderName::from_static("x-invalid")
            }
            Err(_) => {
                c.push(
                    format!("identity_headers.{key}"),
                    format!("{value:?} is not a valid header name"),
                );
                HeaderName::from_static("x-invalid")
            }
        }
    };
    let headers = IdentityHeaders {
        user_id: name("user_id", &raw.user_id),
        user_name: name("user_name", &raw.user_name),
        user_email: name("user_email", &raw.user_email),
        groups: name("groups", &raw.groups),
        scopes: name("scopes", &raw.scopes),
        client_id: name("client_id", &raw.client_id),
        method: name("method", &raw.method),
        token_id: name("token_id", &raw.token_id),
    };
    // Names that differ only in `_`, `.` and `-` are one header to a CGI-style upstream
    // (and to the strip, which removes every spelling of each).
    let names = headers.names();
    let shared = names.iter().enumerate().any(|(i, name)| {
        names[i + 1..]
            .iter()
            .any(|other| reads_as(name.as_str(), other.as_str()))
    });
    if shared {
        c.push(
            "identity_headers",
            "two identity headers share a name (`_`, `.` and `-` count as one): each needs its own",
        );
    }
    headers
}

/// Why a configured header cannot be named as one [`is_set_on_every_request`] finds: the
/// start of each such message.
pub(super) const SET_ON_EVERY_REQUEST_REASON: &str =
    "is set by the gateway on every request (X-Forwarded-For/Proto/Host)";

/// Whether `name` reads as one of the `X-Forwarded-*` headers phase 9 sets on every upstream
/// request ([`reads_as`]): a configured header under that name would be replaced by it.
pub(super) fn is_set_on_every_request(name: &HeaderName) -> bool {
    SET_ON_EVERY_REQUEST
        .iter()
        .any(|set| reads_as(name.as_str(), set.as_str()))
}

/// Headers an identity or upstream-credential header must never replace, in any spelling
/// with another separator for `-`: the strip removes every spelling of the names the gateway sets,
/// so `mcp_session_id` would take every client's `Mcp-Session-Id` away.
pub(super) fn is_reserved_header(name: &HeaderName) -> bool {
    use http::header;
    let name = name.as_str();
    [
        header::HOST,
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        // Hop-by-hop or framing: the gateway's to say, never a configured header's.
        header::EXPECT,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::ACCEPT,
        header::COOKIE,
        header::ORIGIN,
        crate::observability::request_id::REQUEST_ID,
        HeaderName::from_static("last-event-id"),
    ]
    .iter()
    .any(|reserved| reads_as(name, reserved.as_str()))
        || begins_reading_as(name, "mcp-")
}
