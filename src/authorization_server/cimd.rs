//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, the way MCP
//! 2025-11-25 registers clients): a `client_id` that is an https URL names a JSON document
//! the client publishes there; the authorization server fetches it, checks that it names
//! itself, and uses its redirect URIs instead of a registration.
//!
//! Fetching a URL that anyone can hand us is server-side request forgery by design, so the
//! fetch is written by hand rather than through the shared pooled client (`outbound`):
//!
//! - the host is resolved once and *every* address must be public (`is_public_address`);
//!   the connection goes to one of those checked addresses, so a second DNS answer (DNS
//!   rebinding) can never reach an internal one;
//! - no redirects are followed (a 3xx could point anywhere), the whole exchange runs under
//!   one deadline and the body under a hard size cap;
//! - only a document whose `client_id` is exactly the URL is accepted, and documents that
//!   claim a shared secret are refused: anyone can read a published document.
//!
//! Validated documents are cached for their `Cache-Control` lifetime, clamped to the
//! configured bounds; failures are never cached (a transient outage must not stick, and
//! junk client ids must not fill the cache).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, Request, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use moka::future::Cache;
use moka::Expiry;
use rustls::pki_types::ServerName;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use url::{Host, Position, Url};

pub use crate::config::authorization_server::CimdSettings;

/// The longest `client_id` URL accepted (and fetched).
pub const MAX_CLIENT_ID_LEN: usize = 2048;
const MAX_REDIRECT_URIS: usize = 20;
const MAX_URI_LEN: usize = 2048;
const MAX_CLIENT_NAME_CHARS: usize = 200;
const MAX_GRANT_TYPES: usize = 10;
const MAX_GRANT_TYPE_LEN: usize = 200;
const MAX_SCOPE_LEN: usize = 2048;
/// A host may resolve to many addresses; all are checked, this many are tried.
const MAX_CONNECT_ATTEMPTS: usize = 4;
/// The cache is bounded by (approximate) bytes, not entries: documents differ a lot in size
/// and an attacker chooses which ones get fetched.
const CACHE_CAPACITY_BYTES: u64 = 32 * 1024 * 1024;
const USER_AGENT_VALUE: &str = "mcp-auth-gateway";

/// The validated document (only what the authorization server uses).
#[derive(Debug, Clone)]
pub struct CimdDocument {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    /// `["authorization_code"]` when the document has none.
    pub grant_types: Vec<String>,
    /// `none` (the default) or `private_key_jwt`.
    pub token_endpoint_auth_method: String,
    pub scope: Option<String>,
    pub logo_uri: Option<String>,
    pub client_uri: Option<String>,
}

/// Why a client ID metadata document was not accepted. Every message is a short sentence of
/// printable ASCII without `"` or `\`, so it can go out as an OAuth `error_description`
/// as is; details from elsewhere (I/O, TLS, HTTP errors) are filtered through `clean`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CimdError {
    #[error("client ID metadata documents are disabled")]
    Disabled,
    #[error("the client_id URL is not acceptable: {}", clean(.0))]
    InvalidUrl(&'static str),
    #[error("the client_id host is not in the allowed domains")]
    DomainNotAllowed,
    #[error("the client_id host could not be resolved: {}", clean(.0))]
    Resolve(String),
    #[error("the client_id host is not a public internet address")]
    NonPublicAddress,
    #[error("could not connect to the client_id host: {}", clean(.0))]
    Connect(String),
    #[error("the TLS handshake with the client_id host failed: {}", clean(.0))]
    Tls(String),
    #[error("the client_id host did not answer proper HTTP: {}", clean(.0))]
    Http(String),
    #[error("fetching the client metadata document timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("the client_id URL answered with a redirect (HTTP {0}); redirects are not followed")]
    Redirect(u16),
    #[error("the client_id URL answered HTTP {0} instead of 200")]
    Status(u16),
    #[error("the client metadata document is not served as application/json")]
    ContentType,
    #[error("the client metadata document is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the client metadata document is not valid JSON")]
    NotJson,
    #[error("the client metadata document is not a JSON object")]
    NotObject,
    #[error("the client_id in the metadata document is not the URL it was fetched from")]
    ClientIdMismatch,
    #[error("a client metadata document cannot use a shared-secret token_endpoint_auth_method")]
    SharedSecretMethod,
    #[error("a client metadata document must not contain a client_secret")]
    ClientSecret,
    #[error("the client metadata document has an unacceptable redirect URI: {}", clean(.0))]
    RedirectUri(&'static str),
    #[error("the client metadata document is invalid: {}", clean(.0))]
    Invalid(&'static str),
}

/// `detail` reduced to what an `error_description` may carry (RFC 6749 §5.2: %x20-21,
/// %x23-5B, %x5D-7E) and to a readable length. Other code's messages may change; this keeps
/// the promise made by `CimdError` whatever they say.
fn clean(detail: &str) -> String {
    detail
        .chars()
        .filter(|c| matches!(c, ' '..='~') && *c != '"' && *c != '\\')
        .take(200)
        .collect()
}

/// Whether `client_id` is meant as a metadata document URL. The spec's test is the exact,
/// case-sensitive prefix: anything else is an ordinary client id.
pub fn is_cimd_client_id(client_id: &str) -> bool {
    client_id.starts_with("https://")
}

/// Checks `client_id` as a document URL: https (also http when the dangerous
/// `allow_private_addresses` is on, for tests), a path other than `/`, no dot segments,
/// fragment, query or userinfo, a host the allowlist admits, and no normalization needed —
/// the URL fetched is byte for byte the client id the document must repeat.
pub fn validate_client_id_url(client_id: &str, settings: &CimdSettings) -> Result<Url, CimdError> {
    if client_id.len() > MAX_CLIENT_ID_LEN {
        return Err(CimdError::InvalidUrl("longer than 2048 characters"));
    }
    // The URL parser silently drops tabs and newlines and reads `\` as `/`: refuse those
    // before it gets to "repair" them.
    if !client_id
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'\\')
    {
        return Err(CimdError::InvalidUrl(
            "only printable ASCII without spaces or backslashes is allowed",
        ));
    }
    let rest = match client_id.strip_prefix("https://") {
        Some(rest) => rest,
        None => match client_id.strip_prefix("http://") {
            Some(rest) if settings.allow_private_addresses => rest,
            _ => return Err(CimdError::InvalidUrl("not an https URL")),
        },
    };
    if client_id.contains('#') {
        return Err(CimdError::InvalidUrl("a fragment is not allowed"));
    }
    if client_id.contains('?') {
        return Err(CimdError::InvalidUrl("a query is not allowed"));
    }
    let Some((authority, path)) = rest.split_once('/') else {
        return Err(CimdError::InvalidUrl("a path is required"));
    };
    if authority.contains('@') {
        return Err(CimdError::InvalidUrl("userinfo is not allowed"));
    }
    if path.is_empty() {
        return Err(CimdError::InvalidUrl("a path other than / is required"));
    }
    // Checked on the raw text: the parser removes dot segments (also `%2e` spellings).
    if path.split('/').any(is_dot_segment) {
        return Err(CimdError::InvalidUrl("dot path segments are not allowed"));
    }
    let url = Url::parse(client_id).map_err(|_| CimdError::InvalidUrl("not a valid URL"))?;
    // Anything the parser rewrote (host case, default port, IPv4 shorthands like 127.1 or
    // 0x7f.1, empty authority) would make the fetched URL differ from the client id.
    if url.as_str() != client_id {
        return Err(CimdError::InvalidUrl(
            "not in canonical form (lowercase host, no default port)",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CimdError::InvalidUrl("userinfo is not allowed"));
    }
    let host = match url.host() {
        Some(host) => host,
        None => return Err(CimdError::InvalidUrl("a host is required")),
    };
    if let Some(domain) = url.host_str() {
        if !host_allowed(domain, &settings.allowed_domains) {
            return Err(CimdError::DomainNotAllowed);
        }
    }
    // IP literals need no lookup to be judged: refuse them here already.
    let literal = match host {
        Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        Host::Domain(_) => None,
    };
    if let Some(ip) = literal {
        if !settings.allow_private_addresses && !is_public_address(ip) {
            return Err(CimdError::NonPublicAddress);
        }
    }
    Ok(url)
}

/// `.` or `..`, also percent-encoded (`%2e`, `.%2E`, …), which URL parsers treat the same.
fn is_dot_segment(segment: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
    decoded == b"." || decoded == b".."
}

/// `host` (lowercase, as the URL parser gives it) against the configured list: exact names,
/// or `*.suffix` for any name below `suffix` (not `suffix` itself). Empty list = any host.
pub(crate) fn host_allowed(host: &str, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let host = host.trim_end_matches('.');
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    allowed.iter().any(|entry| match entry.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .and_then(|label| label.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !suffix.is_empty()),
        None => entry == host || entry == bare,
    })
}

/// IPv4 blocks that are not the public internet (IANA IPv4 Special-Purpose Address Registry,
/// RFC 6890 and successors, plus multicast and the reserved 240/4). A few of them are
/// globally reachable anycast services; no client publishes its metadata there, so all are
/// refused.
const V4_SPECIAL: [(Ipv4Addr, u8); 18] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network"
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // shared address space (CGNAT)
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local, cloud metadata at .169.254
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation (TEST-NET-1)
    (Ipv4Addr::new(192, 31, 196, 0), 24), // AS112
    (Ipv4Addr::new(192, 52, 193, 0), 24), // AMT
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // deprecated 6to4 relay anycast
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
    (Ipv4Addr::new(192, 175, 48, 0), 24), // AS112 direct delegation
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation (TEST-NET-2)
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation (TEST-NET-3)
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, including 255.255.255.255
];

/// Special-purpose IPv6 blocks inside global unicast 2000::/3 (everything outside 2000::/3
/// is refused anyway, see `is_public_v6`).
const V6_SPECIAL: [(Ipv6Addr, u8); 4] = [
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23), // IETF protocol assignments, Teredo
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0), 48), // AS112-v6
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20), // documentation (RFC 9637)
];

/// Whether `ip` is an ordinary address on the public internet: false for loopback,
/// private, link-local, CGNAT, documentation, benchmarking, multicast, reserved and every
/// other special-use block, and for IPv6 forms that embed an IPv4 address (mapped, NAT64,
/// 6to4) when the embedded address is not public. When in doubt, false.
pub fn is_public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    !V4_SPECIAL
        .iter()
        .any(|&(network, prefix)| in_v4(ip, network, prefix))
}

fn in_v4(ip: Ipv4Addr, network: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    u32::from(ip) & mask == u32::from(network) & mask
}

fn in_v6(ip: Ipv6Addr, network: Ipv6Addr, prefix: u8) -> bool {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0);
    u128::from(ip) & mask == u128::from(network) & mask
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    // ::ffff:a.b.c.d reaches a.b.c.d on a dual-stack socket: judge the IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // NAT64 well-known prefix (RFC 6052): the gateway's NAT64 connects to the embedded
    // address. (The local-use 64:ff9b:1::/48 falls outside 2000::/3 and is refused below.)
    if in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return is_public_v4(Ipv4Addr::from((bits & 0xffff_ffff) as u32));
    }
    // 6to4 (RFC 3056): 2002:AABB:CCDD::/48 is tunnelled to AA.BB.CC.DD.
    if in_v6(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        return is_public_v4(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    // Only global unicast is allocated for the public internet; this refuses ::, ::1, the
    // IPv4-compatible ::/96, ::ffff:0:0:0/96, 64:ff9b:1::/48, 100::/64, 5f00::/16, ULA
    // fc00::/7, link-local fe80::/10, site-local fec0::/10 and multicast ff00::/8.
    if !in_v6(ip, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
        return false;
    }
    !V6_SPECIAL
        .iter()
        .any(|&(network, prefix)| in_v6(ip, network, prefix))
}

/// How long a fetched document is reused: `s-maxage` (we are a shared cache) or `max-age`,
/// clamped to `[min_cache, max_cache]`. `no-store`/`no-cache`, no header or nothing usable
/// in it → `min_cache`: a document that asks not to be cached is still not refetched for
/// every authorization request.
pub fn cache_lifetime(cache_control: Option<&str>, settings: &CimdSettings) -> Duration {
    let min = settings.min_cache;
    let Some(value) = cache_control else {
        return min;
    };
    let mut max_age: Option<u64> = None;
    let mut s_maxage: Option<u64> = None;
    for directive in value.split(',') {
        let (name, argument) = match directive.split_once('=') {
            Some((name, argument)) => (name.trim(), Some(argument.trim())),
            None => (directive.trim(), None),
        };
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return min;
        }
        let slot = if name.eq_ignore_ascii_case("s-maxage") {
            &mut s_maxage
        } else if name.eq_ignore_ascii_case("max-age") {
            &mut max_age
        } else {
            continue;
        };
        // Repeated directives are an error upstream; the shortest is the safe reading.
        if let Some(seconds) = argument.and_then(delta_seconds) {
            *slot = Some(slot.map_or(seconds, |old| old.min(seconds)));
        }
    }
    match s_maxage.or(max_age) {
        Some(seconds) => Duration::from_secs(seconds)
            .min(settings.max_cache)
            .max(min),
        None => min,
    }
}

/// RFC 9111 §1.2.2 delta-seconds (quotes tolerated); too large saturates.
fn delta_seconds(argument: &str) -> Option<u64> {
    let digits = argument
        .strip_prefix('"')
        .and_then(|a| a.strip_suffix('"'))
        .unwrap_or(argument);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse::<u64>().unwrap_or(u64::MAX))
}

/// Parses and validates a fetched document for `client_id` (the URL it came from).
pub fn parse_document(body: &[u8], client_id: &str) -> Result<CimdDocument, CimdError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| CimdError::NotJson)?;
    let Value::Object(map) = value else {
        return Err(CimdError::NotObject);
    };
    // The document is public: a secret in it is no secret. Refused outright, so nobody
    // believes it protects anything.
    if map.contains_key("client_secret") || map.contains_key("client_secret_expires_at") {
        return Err(CimdError::ClientSecret);
    }
    match map.get("client_id") {
        Some(Value::String(id)) if id == client_id => {}
        Some(Value::String(_)) => return Err(CimdError::ClientIdMismatch),
        _ => return Err(CimdError::Invalid("client_id must be a string")),
    }
    let token_endpoint_auth_method = auth_method(&map)?;
    let redirect_uris = redirect_uris(&map)?;
    let grant_types = match optional(&map, "grant_types") {
        None => vec!["authorization_code".to_string()],
        Some(value) => grant_types(value)?,
    };
    // MCP (2025-11-25, "Client ID Metadata Documents") requires a name: it is what the
    // consent page shows the user.
    let client_name = match optional(&map, "client_name") {
        Some(Value::String(name)) if name.chars().any(char::is_alphanumeric) => name.clone(),
        _ => {
            return Err(CimdError::Invalid(
                "client_name must be a string with at least one letter or digit",
            ))
        }
    };
    if client_name.chars().count() > MAX_CLIENT_NAME_CHARS
        || client_name
            .chars()
            .any(|c| c.is_control() || is_invisible_format(c))
    {
        return Err(CimdError::Invalid(
            "client_name must be at most 200 characters without control, bidi or invisible formatting characters",
        ));
    }
    let scope = optional_string(&map, "scope", "scope must be a string")?;
    if let Some(scope) = &scope {
        if !is_scope_list(scope) {
            return Err(CimdError::Invalid(
                "scope must be space-separated scope tokens",
            ));
        }
    }
    let logo_uri = https_uri(&map, "logo_uri", "logo_uri must be an https URL")?;
    let client_uri = https_uri(&map, "client_uri", "client_uri must be an https URL")?;
    Ok(CimdDocument {
        client_id: client_id.to_string(),
        client_name,
        redirect_uris,
        grant_types,
        token_endpoint_auth_method,
        scope,
        logo_uri,
        client_uri,
    })
}

/// Formatting characters that change how a name reads without being seen: bidi overrides
/// and isolates (a name can be made to read as another), zero-width characters, the soft
/// hyphen and the byte order mark.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}')
}

/// A member that is present and not `null`.
fn optional<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).filter(|value| !value.is_null())
}

fn optional_string(
    map: &Map<String, Value>,
    name: &str,
    wrong_type: &'static str,
) -> Result<Option<String>, CimdError> {
    match optional(map, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(CimdError::Invalid(wrong_type)),
    }
}

fn auth_method(map: &Map<String, Value>) -> Result<String, CimdError> {
    let method = match optional(map, "token_endpoint_auth_method") {
        None => "none",
        Some(Value::String(method)) => method.as_str(),
        Some(_) => {
            return Err(CimdError::Invalid(
                "token_endpoint_auth_method must be a string",
            ))
        }
    };
    match method {
        "none" => {}
        "private_key_jwt" => {
            // The keys must come with the document: there is nothing else to verify the
            // client's assertions against.
            let jwks = optional(map, "jwks");
            let jwks_uri = optional(map, "jwks_uri");
            match (jwks, jwks_uri) {
                (Some(Value::Object(keys)), None)
                    if keys.get("keys").is_some_and(Value::is_array) => {}
                (None, Some(Value::String(uri))) if is_https_url(uri) => {}
                (Some(_), Some(_)) => {
                    return Err(CimdError::Invalid(
                        "jwks and jwks_uri must not both be present",
                    ))
                }
                _ => {
                    return Err(CimdError::Invalid(
                        "private_key_jwt needs a jwks object or an https jwks_uri",
                    ))
                }
            }
        }
        "client_secret_basic" | "client_secret_post" | "client_secret_jwt" => {
            return Err(CimdError::SharedSecretMethod)
        }
        _ => {
            return Err(CimdError::Invalid(
                "token_endpoint_auth_method must be none or private_key_jwt",
            ))
        }
    }
    Ok(method.to_string())
}

fn redirect_uris(map: &Map<String, Value>) -> Result<Vec<String>, CimdError> {
    let Some(Value::Array(entries)) = map.get("redirect_uris") else {
        return Err(CimdError::Invalid("redirect_uris must be an array"));
    };
    if entries.is_empty() || entries.len() > MAX_REDIRECT_URIS {
        return Err(CimdError::Invalid("redirect_uris must list 1 to 20 URIs"));
    }
    entries
        .iter()
        .map(|entry| {
            let Value::String(uri) = entry else {
                return Err(CimdError::Invalid("redirect_uris entries must be strings"));
            };
            if uri.len() > MAX_URI_LEN {
                return Err(CimdError::RedirectUri("longer than 2048 bytes"));
            }
            crate::config::authorization_server::check_redirect_uri(uri)
                .map_err(CimdError::RedirectUri)?;
            Ok(uri.clone())
        })
        .collect()
}

fn grant_types(value: &Value) -> Result<Vec<String>, CimdError> {
    const SHAPE: &str = "grant_types must be a non-empty array of at most 10 short strings";
    let Value::Array(entries) = value else {
        return Err(CimdError::Invalid(SHAPE));
    };
    if entries.is_empty() || entries.len() > MAX_GRANT_TYPES {
        return Err(CimdError::Invalid(SHAPE));
    }
    entries
        .iter()
        .map(|entry| match entry {
            Value::String(grant) if !grant.is_empty() && grant.len() <= MAX_GRANT_TYPE_LEN => {
                Ok(grant.clone())
            }
            _ => Err(CimdError::Invalid(SHAPE)),
        })
        .collect()
}

/// RFC 6749 §3.3: scope tokens of %x21 / %x23-5B / %x5D-7E separated by single spaces.
fn is_scope_list(scope: &str) -> bool {
    scope.len() <= MAX_SCOPE_LEN
        && scope.split(' ').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
        })
}

fn is_https_url(uri: &str) -> bool {
    uri.len() <= MAX_URI_LEN
        && Url::parse(uri).is_ok_and(|url| {
            url.scheme() == "https" && url.username().is_empty() && url.password().is_none()
        })
}

/// Display-only links (the consent page shows them): https or nothing, never `javascript:`.
fn https_uri(
    map: &Map<String, Value>,
    name: &str,
    problem: &'static str,
) -> Result<Option<String>, CimdError> {
    match optional(map, name) {
        None => Ok(None),
        Some(Value::String(uri)) if is_https_url(uri) => Ok(Some(uri.clone())),
        Some(_) => Err(CimdError::Invalid(problem)),
    }
}

impl CimdDocument {
    /// Approximate heap size, for the byte-bounded cache.
    fn weight(&self) -> usize {
        let optional = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        256 + self.client_id.len()
            + self.client_name.len()
            + self
                .redirect_uris
                .iter()
                .map(|u| u.len() + 24)
                .sum::<usize>()
            + self.grant_types.iter().map(|g| g.len() + 24).sum::<usize>()
            + self.token_endpoint_auth_method.len()
            + optional(&self.scope)
            + optional(&self.logo_uri)
            + optional(&self.client_uri)
    }
}

/// A cached document and when it stops being used (checked on every read: moka's own
/// expiry is coarse).
#[derive(Clone)]
struct Cached {
    document: Arc<CimdDocument>,
    lifetime: Duration,
    expires_at: Instant,
    /// Fetched while `allow_private_addresses` was on: its address was never checked, so it
    /// is not served once the override is off.
    unchecked_address: bool,
}

impl Cached {
    fn usable(&self, settings: &CimdSettings) -> bool {
        self.expires_at > Instant::now()
            && (settings.allow_private_addresses || !self.unchecked_address)
    }
}

struct UntilLifetime;

impl Expiry<String, Cached> for UntilLifetime {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Cached,
        _created: Instant,
    ) -> Option<Duration> {
        Some(value.lifetime)
    }
}

/// Fetches, validates and caches client ID metadata documents.
pub struct CimdFetcher {
    cache: Cache<String, Cached>,
}

impl Default for CimdFetcher {
    fn default() -> Self {
        Self::new()
    }
}

impl CimdFetcher {
    pub fn new() -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(CACHE_CAPACITY_BYTES)
                .weigher(|key: &String, value: &Cached| {
                    u32::try_from(key.len() + value.document.weight()).unwrap_or(u32::MAX)
                })
                .expire_after(UntilLifetime)
                .build(),
        }
    }

    /// The validated document for `client_id`, from the cache or fetched now (once, however
    /// many requests ask at the same time). Errors are never cached. The URL is checked
    /// against `settings` on every call, so a tightened allowlist applies to cached
    /// documents too; so does turning `allow_private_addresses` off.
    pub async fn get(
        &self,
        client_id: &str,
        settings: &CimdSettings,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Arc<CimdDocument>, CimdError> {
        if !settings.enabled {
            return Err(CimdError::Disabled);
        }
        let url = validate_client_id_url(client_id, settings)?;
        if let Some(cached) = self.cache.get(client_id).await {
            if cached.usable(settings) {
                return Ok(cached.document);
            }
            self.cache.invalidate(client_id).await;
        }
        let fetch = async {
            let (document, lifetime) = fetch(&url, client_id, settings, tls).await?;
            Ok::<_, CimdError>(Cached {
                document: Arc::new(document),
                lifetime,
                expires_at: Instant::now() + lifetime,
                unchecked_address: settings.allow_private_addresses,
            })
        };
        let cached = self
            .cache
            .try_get_with_by_ref(client_id, fetch)
            .await
            .map_err(Arc::unwrap_or_clone)?;
        Ok(cached.document)
    }
}

/// One fetch of `url`, everything — lookup, connect, TLS, headers, body — under
/// `settings.timeout`. Returns the document and how long to cache it.
async fn fetch(
    url: &Url,
    client_id: &str,
    settings: &CimdSettings,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(CimdDocument, Duration), CimdError> {
    let wanted = Wanted {
        accept: "application/json",
        content_type: is_json_content_type,
        max_bytes: settings.max_bytes,
    };
    let (body, cache_control) = guarded_get(url, settings, tls, &wanted, settings.timeout).await?;
    let document = parse_document(&body, client_id)?;
    Ok((document, cache_lifetime(cache_control.as_deref(), settings)))
}

/// What one guarded `GET` asks for and accepts.
pub(crate) struct Wanted {
    /// The `Accept` header sent.
    pub accept: &'static str,
    /// Whether the answer's headers name an acceptable `Content-Type`.
    pub content_type: fn(&HeaderMap) -> bool,
    /// The largest body read.
    pub max_bytes: usize,
}

/// One `GET` of a URL anyone may have handed us, under every guard of this module: all
/// resolved addresses public (unless the dangerous override is on), a connection to one of
/// them by address, https only, no redirect followed, the body capped, and the whole
/// exchange — lookup, connect, TLS, headers, body — under `deadline`. The caller has
/// checked the URL's form. Returns the body and the answer's `Cache-Control`.
pub(crate) async fn guarded_get(
    url: &Url,
    settings: &CimdSettings,
    tls: Arc<rustls::ClientConfig>,
    wanted: &Wanted,
    deadline: Duration,
) -> Result<(Bytes, Option<String>), CimdError> {
    let exchange = async {
        let addresses = resolve(url, settings).await?;
        let tcp = connect(&addresses).await?;
        match url.scheme() {
            "https" => {
                let stream = tokio_rustls::TlsConnector::from(http1_only(tls))
                    .connect(server_name(url)?, tcp)
                    .await
                    .map_err(|e| CimdError::Tls(e.to_string()))?;
                request(stream, url, wanted).await
            }
            // Plain http exists for tests only (the URL checks admit it only then).
            "http" if settings.allow_private_addresses => request(tcp, url, wanted).await,
            _ => Err(CimdError::InvalidUrl("not an https URL")),
        }
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| CimdError::Timeout(deadline))?
}

/// The host's addresses, all of which must be public: a name that resolves to one public
/// and one internal address is refused, not raced.
async fn resolve(url: &Url, settings: &CimdSettings) -> Result<Vec<SocketAddr>, CimdError> {
    let port = url
        .port_or_known_default()
        .ok_or(CimdError::InvalidUrl("no port"))?;
    let addresses: Vec<SocketAddr> = match url.host() {
        Some(Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| CimdError::Resolve(e.to_string()))?
            .collect(),
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        None => return Err(CimdError::InvalidUrl("a host is required")),
    };
    if addresses.is_empty() {
        return Err(CimdError::Resolve("no addresses".to_string()));
    }
    if !settings.allow_private_addresses && !addresses.iter().all(|a| is_public_address(a.ip())) {
        return Err(CimdError::NonPublicAddress);
    }
    Ok(addresses)
}

/// Connects to one of the checked addresses — by address, so no second lookup can
/// substitute another.
async fn connect(addresses: &[SocketAddr]) -> Result<TcpStream, CimdError> {
    let mut last_error = String::from("no address to try");
    for address in addresses.iter().take(MAX_CONNECT_ATTEMPTS) {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(CimdError::Connect(last_error))
}

fn server_name(url: &Url) -> Result<ServerName<'static>, CimdError> {
    match url.host() {
        Some(Host::Domain(name)) => ServerName::try_from(name.to_string())
            .map_err(|_| CimdError::InvalidUrl("the host is not a valid TLS server name")),
        Some(Host::Ipv4(ip)) => Ok(ServerName::from(IpAddr::V4(ip))),
        Some(Host::Ipv6(ip)) => Ok(ServerName::from(IpAddr::V6(ip))),
        None => Err(CimdError::InvalidUrl("a host is required")),
    }
}

/// The exchange below speaks HTTP/1.1 only: a shared configuration that offers h2 in ALPN
/// would let the server pick a protocol we then do not speak.
fn http1_only(tls: Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
    if tls.alpn_protocols.is_empty() || tls.alpn_protocols == [b"http/1.1".to_vec()] {
        return tls;
    }
    let mut config = (*tls).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Ends the connection task when the exchange ends, however it ends (including the
/// deadline dropping it midway).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One `GET` on a fresh HTTP/1.1 connection: the body (at most `wanted.max_bytes`) of a 200
/// answer of the wanted type, and its `Cache-Control`.
async fn request<S>(io: S, url: &Url, wanted: &Wanted) -> Result<(Bytes, Option<String>), CimdError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| CimdError::Http(e.to_string()))?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let max_bytes = wanted.max_bytes;
    let request = Request::get(&url[Position::BeforePath..Position::AfterQuery])
        .header(HOST, &url[Position::BeforeHost..Position::AfterPort])
        .header(ACCEPT, wanted.accept)
        .header(USER_AGENT, USER_AGENT_VALUE)
        .body(Empty::<Bytes>::new())
        .map_err(|_| CimdError::InvalidUrl("cannot be sent as an HTTP request"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| CimdError::Http(e.to_string()))?;
    check_status(response.status())?;
    if !(wanted.content_type)(response.headers()) {
        return Err(CimdError::ContentType);
    }
    let cache_control = joined(response.headers(), CACHE_CONTROL);
    let body = response.into_body();
    // hyper derives the size hint from Content-Length: refuse before reading anything.
    if body.size_hint().lower() > max_bytes as u64 {
        return Err(CimdError::TooLarge(max_bytes));
    }
    let body = Limited::new(body, max_bytes)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                CimdError::TooLarge(max_bytes)
            } else {
                CimdError::Http(e.to_string())
            }
        })?
        .to_bytes();
    Ok((body, cache_control))
}

/// Exactly 200: a redirect is not followed (it could lead anywhere, including inside), and
/// no other success code delivers a document.
fn check_status(status: StatusCode) -> Result<(), CimdError> {
    if status == StatusCode::OK {
        Ok(())
    } else if status.is_redirection() {
        Err(CimdError::Redirect(status.as_u16()))
    } else {
        Err(CimdError::Status(status.as_u16()))
    }
}

/// One `Content-Type` of `application/json` or `application/<something>+json`,
/// parameters allowed.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let Some(subtype) = essence.strip_prefix("application/") else {
        return false;
    };
    subtype == "json"
        || subtype.strip_suffix("+json").is_some_and(|prefix| {
            !prefix.is_empty()
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.".contains(&b))
        })
}

/// All values of `name` joined with `, ` (how a list header split over lines reads), or
/// `None` when absent or not text.
fn joined(headers: &HeaderMap, name: http::header::HeaderName) -> Option<String> {
    let values: Option<Vec<&str>> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().ok())
        .collect();
    values.filter(|v| !v.is_empty()).map(|v| v.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "https://client.example/meta.json";

    fn settings() -> CimdSettings {
        CimdSettings {
            enabled: true,
            allowed_domains: Vec::new(),
            min_cache: Duration::from_secs(60),
            max_cache: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
            max_bytes: 5 * 1024,
            allow_private_addresses: false,
        }
    }

    fn is_clean_message(error: &CimdError) -> bool {
        let message = error.to_string();
        !message.is_empty()
            && message
                .chars()
                .all(|c| matches!(c, ' '..='~') && c != '"' && c != '\\')
    }

    #[test]
    fn cimd_client_id_prefix_is_exact() {
        assert!(is_cimd_client_id("https://a.example/c"));
        assert!(!is_cimd_client_id("HTTPS://a.example/c"));
        assert!(!is_cimd_client_id("http://a.example/c"));
        assert!(!is_cimd_client_id("my-client"));
    }

    #[test]
    fn client_id_url_rules() {
        let open = settings();
        for good in [
            ID,
            "https://client.example/a/b/c.json",
            "https://client.example:8443/meta",
            "https://8.8.8.8/meta",
            "https://[2606:4700::1111]/meta",
            "https://client.example/%7Euser/meta",
        ] {
            let result = validate_client_id_url(good, &open).map(String::from);
            assert_eq!(result.as_deref().ok(), Some(good), "{good}");
        }
        let long = format!("https://client.example/{}", "a".repeat(2048));
        for bad in [
            "http://client.example/meta",
            "HTTPS://client.example/meta",
            "https://client.example",
            "https://client.example/",
            "https://client.example/#",
            "https://client.example/meta#x",
            "https://client.example/meta?x=1",
            "https://client.example/meta?",
            "https://user@client.example/meta",
            "https://user:pw@client.example/meta",
            "https://client.example/a/../meta",
            "https://client.example/a/./meta",
            "https://client.example/./",
            "https://client.example/..",
            "https://client.example/a/%2e%2E/meta",
            "https://client.example/a/.%2e/meta",
            "https://client.example/%2e/meta",
            "https://Client.example/meta",
            "https://client.example:443/meta",
            "https://client.example/a b",
            "https://client.example/a\tb",
            "https://client.example\\meta",
            " https://client.example/meta",
            "https:///client.example/meta",
            "https://127.0.0.1/meta",
            "https://127.1/meta",
            "https://0x7f.0.0.1/meta",
            "https://[::1]/meta",
            "https://[::ffff:127.0.0.1]/meta",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/meta",
            "https://client.example/métadata",
            "file:///etc/passwd",
            "https:/client.example/meta",
            "",
            &long,
        ] {
            let result = validate_client_id_url(bad, &open);
            assert!(result.is_err(), "{bad:?} was accepted");
            assert!(is_clean_message(&result.unwrap_err()));
        }

        // The dangerous test override admits http and loopback, nothing else.
        let lax = CimdSettings {
            allow_private_addresses: true,
            ..settings()
        };
        assert!(validate_client_id_url("http://127.0.0.1:8080/meta", &lax).is_ok());
        assert!(validate_client_id_url("https://[::1]:8443/meta", &lax).is_ok());
        assert!(validate_client_id_url("http://127.0.0.1:8080/", &lax).is_err());
        assert!(validate_client_id_url("ftp://127.0.0.1/meta", &lax).is_err());
    }

    #[test]
    fn allowed_domains() {
        let limited = CimdSettings {
            allowed_domains: vec!["client.example".into(), "*.apps.example".into()],
            ..settings()
        };
        for (url, ok) in [
            ("https://client.example/m", true),
            ("https://client.example./m", true),
            ("https://x.apps.example/m", true),
            ("https://a.b.apps.example/m", true),
            ("https://apps.example/m", false),
            ("https://evilapps.example/m", false),
            ("https://client.example.evil.com/m", false),
            ("https://sub.client.example/m", false),
            ("https://other.example/m", false),
        ] {
            assert_eq!(validate_client_id_url(url, &limited).is_ok(), ok, "{url}");
        }
        let result = validate_client_id_url("https://other.example/m", &limited);
        assert!(matches!(result, Err(CimdError::DomainNotAllowed)));
    }

    #[test]
    fn public_addresses() {
        let cases: [(&str, bool); 41] = [
            ("8.8.8.8", true),
            ("1.1.1.1", true),
            ("93.184.215.14", true),
            ("2606:4700::1111", true),
            ("2a00:1450:4001::200e", true),
            ("::ffff:8.8.8.8", true),
            ("64:ff9b::808:808", true),
            ("2002:808:808::1", true),
            ("0.0.0.0", false),
            ("0.1.2.3", false),
            ("127.0.0.1", false),
            ("127.255.255.254", false),
            ("10.0.0.1", false),
            ("172.16.0.1", false),
            ("172.31.255.255", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("100.127.255.255", false),
            ("192.0.0.8", false),
            ("192.0.2.1", false),
            ("198.18.0.1", false),
            ("198.19.255.1", false),
            ("198.51.100.7", false),
            ("203.0.113.9", false),
            ("224.0.0.1", false),
            ("240.0.0.1", false),
            ("255.255.255.255", false),
            ("::", false),
            ("::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:10.0.0.1", false),
            ("::127.0.0.1", false),
            ("64:ff9b::a00:1", false),
            ("64:ff9b:1::808:808", false),
            ("2002:7f00:1::", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("ff02::1", false),
            ("2001:db8::1", false),
            ("2001::1", false),
        ];
        for (ip, public) in cases {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(is_public_address(parsed), public, "{ip}");
        }
        for ip in ["100::1", "fec0::1", "3fff::1", "5f00::1", "::ffff:0:7f00:1"] {
            assert!(!is_public_address(ip.parse().unwrap()), "{ip}");
        }
        // Just outside the blocks.
        for ip in [
            "172.32.0.1",
            "100.128.0.1",
            "198.20.0.1",
            "11.0.0.1",
            "2001:200::1",
        ] {
            assert!(is_public_address(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn cache_lifetimes() {
        let s = settings();
        let secs = Duration::from_secs;
        for (header, expected) in [
            (None, secs(60)),
            (Some(""), secs(60)),
            (Some("max-age=600"), secs(600)),
            (Some("public, max-age=600"), secs(600)),
            (Some("MAX-AGE = 600"), secs(600)),
            (Some("max-age=\"600\""), secs(600)),
            (Some("max-age=5"), secs(60)),
            (Some("max-age=0"), secs(60)),
            (Some("max-age=999999"), secs(3600)),
            (Some("max-age=99999999999999999999999999"), secs(3600)),
            (Some("max-age=600, s-maxage=900"), secs(900)),
            (Some("s-maxage=120, max-age=900"), secs(120)),
            (Some("max-age=900, max-age=300"), secs(300)),
            (Some("max-age=600, no-store"), secs(60)),
            (Some("no-cache"), secs(60)),
            (Some("No-Cache=\"set-cookie\", max-age=600"), secs(60)),
            (Some("max-age=-1"), secs(60)),
            (Some("max-age=1e3"), secs(60)),
            (Some("max-age="), secs(60)),
            (Some("max-age"), secs(60)),
            (Some(",,,=,"), secs(60)),
        ] {
            assert_eq!(cache_lifetime(header, &s), expected, "{header:?}");
        }
    }

    fn document(extra: &str) -> String {
        // A name unless `extra` brings its own.
        let name = if extra.contains("\"client_name\"") {
            ""
        } else {
            r#","client_name":"App""#
        };
        format!(
            r#"{{"client_id":"{ID}","redirect_uris":["https://client.example/cb"]{name}{extra}}}"#
        )
    }

    #[test]
    fn parses_a_minimal_document_with_defaults() {
        let doc = parse_document(document("").as_bytes(), ID).unwrap();
        assert_eq!(doc.client_id, ID);
        assert_eq!(doc.redirect_uris, ["https://client.example/cb"]);
        assert_eq!(doc.grant_types, ["authorization_code"]);
        assert_eq!(doc.token_endpoint_auth_method, "none");
        assert_eq!(doc.client_name, "App");
        assert!(doc.scope.is_none());

        let full = document(
            r#","client_name":"Example","grant_types":["authorization_code","refresh_token"],
               "scope":"mcp:read mcp:write","logo_uri":"https://client.example/logo.png",
               "client_uri":"https://client.example","software_id":"x","contacts":["a@b"],
               "response_types":["code"],"token_endpoint_auth_method":"none","tos_uri":null"#,
        );
        let doc = parse_document(full.as_bytes(), ID).unwrap();
        assert_eq!(doc.client_name, "Example");
        assert_eq!(doc.grant_types, ["authorization_code", "refresh_token"]);
        assert_eq!(doc.scope.as_deref(), Some("mcp:read mcp:write"));
        assert_eq!(
            doc.logo_uri.as_deref(),
            Some("https://client.example/logo.png")
        );

        let jwks_uri = r#""jwks_uri":"https://client.example/jwks""#;
        let jwt = document(&format!(
            r#","token_endpoint_auth_method":"private_key_jwt",{jwks_uri}"#
        ));
        let doc = parse_document(jwt.as_bytes(), ID).unwrap();
        assert_eq!(doc.token_endpoint_auth_method, "private_key_jwt");
        let jwt = document(r#","token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[]}"#);
        assert!(parse_document(jwt.as_bytes(), ID).is_ok());
    }

    /// The variant name of `error` (its `Debug` form up to the first parenthesis).
    fn variant(error: &CimdError) -> String {
        let debug = format!("{error:?}");
        debug.split('(').next().unwrap_or_default().to_string()
    }

    #[test]
    fn refuses_bad_documents() {
        let with_uris = |uris: &str| format!(r#"{{"client_id":"{ID}","redirect_uris":{uris}}}"#);
        let with_id =
            |id: &str| format!(r#"{{"client_id":{id},"redirect_uris":["https://a/cb"]}}"#);
        let method = |m: &str| document(&format!(r#","token_endpoint_auth_method":{m}"#));
        let many = format!("[{}]", vec![r#""https://a.example/cb""#; 21].join(","));
        let cases: Vec<(String, &str)> = vec![
            (
                with_id(r#""https://client.example/other.json""#),
                "ClientIdMismatch",
            ),
            (
                with_id(r#""https://client.example/meta.json/""#),
                "ClientIdMismatch",
            ),
            (
                with_id(r#""https://client.example/META.json""#),
                "ClientIdMismatch",
            ),
            (with_id("42"), "Invalid"),
            (with_id("null"), "Invalid"),
            (method(r#""client_secret_basic""#), "SharedSecretMethod"),
            (method(r#""client_secret_post""#), "SharedSecretMethod"),
            (method(r#""client_secret_jwt""#), "SharedSecretMethod"),
            (method(r#""private_key_jwt""#), "Invalid"),
            (
                method(r#""private_key_jwt","jwks_uri":"http://client.example/jwks""#),
                "Invalid",
            ),
            (method(r#""tls_client_auth""#), "Invalid"),
            (method("7"), "Invalid"),
            (document(r#","client_secret":"s3cret""#), "ClientSecret"),
            (document(r#","client_secret_expires_at":0"#), "ClientSecret"),
            (with_uris("[]"), "Invalid"),
            (with_uris(r#""https://client.example/cb""#), "Invalid"),
            (with_uris("[42]"), "Invalid"),
            (with_uris(&many), "Invalid"),
            (with_uris(r#"["javascript:alert(1)"]"#), "RedirectUri"),
            (with_uris(r#"["https://a.example/cb#f"]"#), "RedirectUri"),
            (format!(r#"{{"client_id":"{ID}"}}"#), "Invalid"),
            (
                r#"{"redirect_uris":["https://a.example/cb"]}"#.into(),
                "Invalid",
            ),
            ("not json".into(), "NotJson"),
            ("".into(), "NotJson"),
            (format!("{} trailing", document("")), "NotJson"),
            (format!("[{}]", document("")), "NotObject"),
            (format!("\"{ID}\""), "NotObject"),
            ("null".into(), "NotObject"),
            (document(r#","grant_types":[]"#), "Invalid"),
            (
                document(r#","grant_types":"authorization_code""#),
                "Invalid",
            ),
            (
                document(&format!(r#","client_name":"{:201}""#, "")),
                "Invalid",
            ),
            (document(r#","client_name":"a\u0000b""#), "Invalid"),
            (
                format!(r#"{{"client_id":"{ID}","redirect_uris":["https://a.example/cb"]}}"#),
                "Invalid",
            ),
            (document(r#","client_name":"  ""#), "Invalid"),
            (document(r#","client_name":"\u200b\u200b""#), "Invalid"),
            (document(r#","client_name":"Good\u202eevil""#), "Invalid"),
            (document(r#","client_name":null"#), "Invalid"),
            (document(r#","client_name":7"#), "Invalid"),
            (document(r#","scope":"a  b""#), "Invalid"),
            (document(r#","scope":"a\"b""#), "Invalid"),
            (document(r#","logo_uri":"javascript:alert(1)""#), "Invalid"),
            (
                document(r#","client_uri":"http://client.example""#),
                "Invalid",
            ),
        ];
        for (body, expected) in cases {
            let error = parse_document(body.as_bytes(), ID).expect_err(&body);
            assert_eq!(variant(&error), expected, "{body}: {error:?}");
            assert!(is_clean_message(&error), "{error}");
        }
    }

    #[test]
    fn error_messages_are_clean_even_with_dirty_details() {
        for error in [
            CimdError::Connect("say \"hi\" \\ \u{1}é\n".into()),
            CimdError::Tls(String::new()),
            CimdError::Timeout(Duration::from_micros(1500)),
            CimdError::Redirect(302),
            CimdError::TooLarge(5120),
            CimdError::RedirectUri("quoted \"reason\""),
        ] {
            assert!(is_clean_message(&error), "{error}");
        }
    }

    #[test]
    fn json_content_types() {
        let check = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(CONTENT_TYPE, v.parse().unwrap());
            }
            is_json_content_type(&headers)
        };
        assert!(check(&["application/json"]));
        assert!(check(&["Application/JSON; charset=utf-8"]));
        assert!(check(&["application/oauth-client+json"]));
        assert!(!check(&[]));
        assert!(!check(&["text/json"]));
        assert!(!check(&["application/+json"]));
        assert!(!check(&["application/jsonp"]));
        assert!(!check(&["text/html"]));
        assert!(!check(&["application/json", "text/html"]));
        assert!(!check(&["application/json, text/html"]));
    }

    #[test]
    fn statuses() {
        assert!(check_status(StatusCode::OK).is_ok());
        assert!(matches!(
            check_status(StatusCode::FOUND),
            Err(CimdError::Redirect(302))
        ));
        assert!(matches!(
            check_status(StatusCode::PERMANENT_REDIRECT),
            Err(CimdError::Redirect(308))
        ));
        assert!(matches!(
            check_status(StatusCode::NO_CONTENT),
            Err(CimdError::Status(204))
        ));
        assert!(matches!(
            check_status(StatusCode::NOT_FOUND),
            Err(CimdError::Status(404))
        ));
    }

    fn special_v4() -> impl Strategy<Value = Ipv4Addr> {
        prop_oneof![
            any::<u32>().prop_map(|n| Ipv4Addr::from(0x7f00_0000 | (n & 0x00ff_ffff))),
            any::<u32>().prop_map(|n| Ipv4Addr::from(0x0a00_0000 | (n & 0x00ff_ffff))),
            any::<u32>().prop_map(|n| Ipv4Addr::from(0xac10_0000 | (n & 0x000f_ffff))),
            any::<u32>().prop_map(|n| Ipv4Addr::from(0xc0a8_0000 | (n & 0x0000_ffff))),
            any::<u32>().prop_map(|n| Ipv4Addr::from(0xa9fe_0000 | (n & 0x0000_ffff))),
            any::<u32>().prop_map(|n| Ipv4Addr::from(0x6440_0000 | (n & 0x003f_ffff))),
            any::<u32>().prop_map(|n| Ipv4Addr::from(n & 0x00ff_ffff)),
            any::<u32>().prop_map(|n| Ipv4Addr::from(0xe000_0000 | (n & 0x1fff_ffff))),
        ]
    }

    proptest! {
        #[test]
        fn parse_document_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Err(error) = parse_document(&body, ID) {
                prop_assert!(is_clean_message(&error), "{}", error);
            }
        }

        #[test]
        fn parse_document_on_json_shapes(
            id in prop_oneof![Just(ID.to_string()), "[ -~]{0,40}"],
            uris in proptest::collection::vec("[ -~]{0,40}", 0..4),
            method in prop_oneof![
                Just("none"), Just("private_key_jwt"), Just("client_secret_post"), Just("x"),
            ],
        ) {
            let body = serde_json::json!({
                "client_id": id, "redirect_uris": uris, "token_endpoint_auth_method": method,
                "client_name": "App",
            });
            match parse_document(body.to_string().as_bytes(), ID) {
                Ok(doc) => {
                    prop_assert_eq!(&doc.client_id, ID);
                    prop_assert_eq!(&id, ID);
                    prop_assert!(!doc.redirect_uris.is_empty());
                    prop_assert_eq!(doc.token_endpoint_auth_method.as_str(), "none");
                }
                Err(error) => prop_assert!(is_clean_message(&error), "{}", error),
            }
        }

        #[test]
        fn special_ipv4_is_never_public_in_any_spelling(v4 in special_v4()) {
            prop_assert!(!is_public_address(IpAddr::V4(v4)));
            prop_assert!(!is_public_address(IpAddr::V6(v4.to_ipv6_mapped())));
            prop_assert!(!is_public_address(IpAddr::V6(v4.to_ipv6_compatible())));
            let n = u128::from(u32::from(v4));
            let nat64 = Ipv6Addr::from((0x0064_ff9bu128 << 96) | n);
            prop_assert!(!is_public_address(IpAddr::V6(nat64)));
            let six_to_four = Ipv6Addr::from((0x2002u128 << 112) | (n << 80) | 1);
            prop_assert!(!is_public_address(IpAddr::V6(six_to_four)));
        }

        #[test]
        fn validate_never_panics_and_accepts_only_clean_https(
            prefix in prop_oneof![Just(""), Just("https://"), Just("https://client.example/")],
            text in "[ -~]{0,80}",
        ) {
            let candidate = format!("{prefix}{text}");
            match validate_client_id_url(&candidate, &settings()) {
                Ok(url) => {
                    prop_assert_eq!(url.as_str(), candidate.as_str());
                    prop_assert!(candidate.starts_with("https://"));
                    prop_assert!(!candidate.contains(['#', '?', ' ']));
                    prop_assert!(url.path() != "/");
                }
                Err(error) => prop_assert!(is_clean_message(&error), "{}", error),
            }
        }

        #[test]
        fn cache_lifetime_stays_in_bounds(header in "[ -~]{0,60}") {
            let s = settings();
            let lifetime = cache_lifetime(Some(&header), &s);
            prop_assert!(lifetime >= s.min_cache && lifetime <= s.max_cache);
        }
    }
}
