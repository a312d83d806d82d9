//! Phase 9 — Rewrite: the request the upstream receives.
//!
//! Strip before set: hop-by-hop headers (RFC 9110 §7.6.1, plus those named in
//! `Connection`), the client's `Authorization` (no token passthrough), `Cookie`, `Origin`
//! (already validated; SDK upstreams re-check it against their own host), every header that
//! claims forwarding facts (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`, `X-Original-*`, …)
//! and every header that collides, in any spelling with another separator for `-`, with an
//! identity or upstream-credential header we set, or looks like the session id or request
//! id — in one pass over the names present. Then set identity from the [`Admission`], the
//! route's upstream credential, the user's token and `X-Forwarded-For/Proto/Host`
//! ([`set_fields`]): not into the map but beside it, written after the client's remaining
//! fields (their names are distinct — the configuration is checked so — and none is left
//! in the map). `Host` becomes the upstream's authority.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Uri, Version};

use super::policy::Admission;
use super::session::MCP_SESSION_ID;
use crate::body::Body;
use crate::model::forwarding::{
    SET_ON_EVERY_REQUEST, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
};
use crate::model::header_spelling::{begins_reading_as, reads_as};
use crate::model::identity::IdentityHeaders;
use crate::observability::request_id::REQUEST_ID;
use crate::text::{push_ip, MAX_IP_TEXT};

/// RFC 9110 §7.6.1 connection-specific fields, plus the legacy ones proxies still meet.
pub static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Client headers that never reach the upstream, whatever the route. `Proxy` is no HTTP
/// header at all: CGI-style servers would read it as the `HTTP_PROXY` environment variable
/// that HTTP client libraries obey ("httpoxy").
static NEVER_FORWARDED: [HeaderName; 5] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::HOST,
    header::ORIGIN,
    HeaderName::from_static("proxy"),
];

/// Headers that claim something about the connection or the original request that only a
/// proxy may say: every name beginning with one of these, and each of the names below.
/// (`X-Envoy-*`: Envoy's own, e.g. `X-Envoy-External-Address`, `X-Envoy-Original-Path`.)
const FORWARDING_PREFIXES: [&str; 3] = ["x-forwarded-", "x-original-", "x-envoy-"];
const FORWARDING_CLAIMS: [&str; 10] = [
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    // The original path as some frameworks take it from a front proxy (Symfony's and
    // Zend's `X-Rewrite-Url`, the CGI script name): an upstream routing on them would act
    // on a path the gateway never authorized.
    "x-rewrite-url",
    "x-script-name",
    "script-name",
];

/// Whether a client header claims something about the connection or the original request
/// that only a proxy may say (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`, `X-Original-*`,
/// …), in any spelling with another separator for `-` ([`reads_as`]). (Method overrides
/// never get this far: the transport guard refuses them.) Upstreams use these for
/// client-IP allowlists, rate limits and URL generation (`X-Forwarded-Prefix`).
fn claims_forwarding(name: &str) -> bool {
    begins_like_forwarding(name) || FORWARDING_CLAIMS.iter().any(|claim| reads_as(name, claim))
}

fn begins_like_forwarding(name: &str) -> bool {
    FORWARDING_PREFIXES
        .iter()
        .any(|prefix| begins_reading_as(name, prefix))
}

/// A summary of the names the strip compares with [`reads_as`]: one bit per (length, first
/// byte read as [`reads_as`] reads it). Two names that read alike share both, so a client
/// header whose bit is clear (and that has no forwarding prefix) is none of them, in any
/// spelling, and skips every comparison: most headers of most requests. A set bit may be a
/// collision; the comparisons then decide.
#[derive(Clone, Copy)]
pub(super) struct NameFilter(u128);

impl NameFilter {
    pub(super) fn of<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self(
            names
                .into_iter()
                .fold(0, |bits, name| bits | 1 << Self::bit(name)),
        )
    }

    pub(super) fn with(self, other: NameFilter) -> Self {
        Self(self.0 | other.0)
    }

    pub(super) fn may_match(self, name: &str) -> bool {
        self.0 >> Self::bit(name) & 1 == 1
    }

    fn bit(name: &str) -> u32 {
        let first = match name.as_bytes().first() {
            Some(&byte) if !byte.is_ascii_alphanumeric() => b'-',
            Some(&byte) => byte,
            None => 0,
        };
        ((name.len() as u32).wrapping_mul(31) ^ u32::from(first)) % 128
    }
}

/// The names every strip compares, whatever the route: hop-by-hop, the request id and the
/// forwarding claims.
fn fixed_names() -> NameFilter {
    static FIXED: std::sync::LazyLock<NameFilter> = std::sync::LazyLock::new(|| {
        NameFilter::of(
            HOP_BY_HOP
                .iter()
                .chain([&header::UPGRADE, &REQUEST_ID, &MCP_SESSION_ID])
                .map(HeaderName::as_str)
                .chain(FORWARDING_CLAIMS),
        )
    });
    *FIXED
}

/// Facts about the client connection the rewrite needs.
pub struct ClientSide<'a> {
    pub peer: IpAddr,
    /// `https` when the gateway terminated TLS.
    pub scheme: &'static str,
    pub host: Option<&'a HeaderValue>,
    pub identity: &'a IdentityHeaders,
    /// Keep an inbound `X-Forwarded-Proto/Host` and extend `X-Forwarded-For` (only behind a
    /// trusted proxy).
    pub trust_forwarded: bool,
}

/// The names a `Connection` header lists (RFC 9110 §7.6.1): hop-by-hop for this message.
/// Names that are hop-by-hop anyway ([`is_hop_by_hop`] without a list) are left out: the
/// usual `Connection: keep-alive` lists nothing new, and costs no allocation.
pub fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| {
            !HOP_BY_HOP
                .iter()
                .chain([&header::UPGRADE])
                .any(|known| name.eq_ignore_ascii_case(known.as_str()))
        })
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect()
}

/// Whether `name` is hop-by-hop: RFC 9110's, the legacy ones, `Upgrade` (MCP never
/// upgrades, and a smuggled upgrade must not reach the other side), or listed in
/// `Connection`.
pub fn is_hop_by_hop(name: &HeaderName, listed: &[HeaderName]) -> bool {
    HOP_BY_HOP.contains(name) || name == header::UPGRADE || listed.contains(name)
}

/// Removes every header `doomed` names, in one pass over the names present rather than
/// one lookup per name that might be (most are absent). Returns how many values went for
/// each name `doomed` flagged with `true`.
pub fn remove_where(
    headers: &mut HeaderMap,
    mut doomed: impl FnMut(&HeaderName) -> Option<bool>,
) -> usize {
    // Inline room for the usual one or two (the credential, `Connection`): no allocation.
    let names: smallvec::SmallVec<[(HeaderName, bool); 4]> = headers
        .keys()
        .filter_map(|name| doomed(name).map(|counted| (name.clone(), counted)))
        .collect();
    let mut counted = 0;
    for (name, count) in names {
        if count {
            counted += headers.get_all(&name).iter().count();
        }
        // `remove`, not `entry`: an entry reserves room to insert, which could grow the map
        // (and hyper keeps an answer's map, cleared, for the connection's next answer).
        headers.remove(&name);
    }
    counted
}

/// Whether `name` is one of `names` in any spelling with another separator for `-`
/// ([`reads_as`]): a look-alike of a header we set would reach a CGI-style upstream as that
/// header.
fn names_one_of<'a>(name: &HeaderName, mut names: impl Iterator<Item = &'a HeaderName>) -> bool {
    names.any(|ours| reads_as(name.as_str(), ours.as_str()))
}

/// Phase 9's strip: removes from the client's headers everything the upstream must not
/// receive (see the module documentation), in one pass. Every name the gateway withholds or
/// sets is matched in every spelling a CGI-style server reads alike ([`reads_as`]):
/// `Transfer_Encoding` would reach such a server as `Transfer-Encoding`, `X_Upstream_Token`
/// as the route's token header. The request id is the gateway's own (set before this), and
/// stays whatever `Connection` lists; only its look-alikes go, as the session id's do.
/// Returns how many identity headers the client sent (spoofing), for the debug log.
fn withhold_client_headers(
    headers: &mut HeaderMap,
    identity: &IdentityHeaders,
    credentials: &[(HeaderName, HeaderValue)],
    user_token: Option<&HeaderName>,
) -> usize {
    let listed = connection_listed(headers);
    let candidates = fixed_names().with(NameFilter::of(
        listed
            .iter()
            .chain(identity.names())
            .chain(credentials.iter().map(|(ours, _)| ours))
            .chain(user_token)
            .map(HeaderName::as_str),
    ));
    remove_where(headers, |name| {
        if NEVER_FORWARDED.contains(name) {
            return Some(false);
        }
        // The gateway's own request id (set before this), whatever `Connection` lists.
        if *name == REQUEST_ID {
            return None;
        }
        let spelled = name.as_str();
        if !candidates.may_match(spelled) && !begins_like_forwarding(spelled) {
            return None;
        }
        if reads_like_hop_by_hop(name, &listed) {
            return Some(false);
        }
        if names_one_of(name, identity.names().into_iter()) {
            return Some(true);
        }
        // A look-alike of the request id, or of the session id phase 6 checked (one the
        // upstream might read as that header).
        let lookalike = (reads_as(name.as_str(), REQUEST_ID.as_str())
            || reads_as(name.as_str(), MCP_SESSION_ID.as_str()))
            && *name != MCP_SESSION_ID;
        let withheld = lookalike
            || claims_forwarding(name.as_str())
            || names_one_of(
                name,
                credentials.iter().map(|(ours, _)| ours).chain(user_token),
            );
        withheld.then_some(false)
    })
}

/// [`is_hop_by_hop`] in every spelling a CGI-style server reads alike.
fn reads_like_hop_by_hop(name: &HeaderName, listed: &[HeaderName]) -> bool {
    HOP_BY_HOP
        .iter()
        .chain(std::iter::once(&header::UPGRADE))
        .chain(listed)
        .any(|hop| reads_as(name.as_str(), hop.as_str()))
}

/// The `X-Forwarded-For/Proto/Host` values of one upstream request, kept until its head is
/// written ([`set_fields`]).
pub struct Forwarded {
    for_chain: Option<HeaderValue>,
    proto: HeaderValue,
    host: Option<HeaderValue>,
}

/// Every field phase 9 sets: the identity of a granted request, the route's upstream
/// credential, the user's token and `X-Forwarded-For/Proto/Host`.
pub fn set_fields<'a>(
    admission: &'a Admission,
    identity: &'a IdentityHeaders,
    forwarded: &'a Forwarded,
    user_token: Option<&'a (HeaderName, HeaderValue)>,
) -> smallvec::SmallVec<[(&'a HeaderName, &'a HeaderValue); 12]> {
    // Pushed one by one: iterator adapters chained into `extend` cost ~500 instructions
    // more per request (callgrind).
    let mut set = smallvec::SmallVec::new();
    if let Admission::Granted(grant) = admission {
        identity.each_field(grant, |name, value| set.push((name, value)));
    }
    for (name, value) in &admission.route().upstream_headers {
        set.push((name, value));
    }
    if let Some((name, value)) = user_token {
        set.push((name, value));
    }
    let [for_, proto, host] = &SET_ON_EVERY_REQUEST;
    if let Some(chain) = &forwarded.for_chain {
        set.push((for_, chain));
    }
    set.push((proto, &forwarded.proto));
    if let Some(value) = &forwarded.host {
        set.push((host, value));
    }
    set
}

/// The request the upstream receives, but for the fields [`set_fields`] lists: the strip
/// has removed every one of their names from it.
pub fn upstream_request(
    mut parts: Parts,
    body: Body,
    admission: &Admission,
    client: &ClientSide<'_>,
) -> Result<(Request<Body>, Forwarded), http::Error> {
    let route = admission.route();
    let path = parts.uri.path();
    let rest = route.rest_of(path);
    let mut target = String::with_capacity(route.upstream.base_path.len() + rest.len() + 32);
    target.push_str(&route.upstream.base_path);
    if rest.is_empty() && target.is_empty() {
        target.push('/');
    } else {
        target.push_str(rest);
    }
    if let Some(query) = parts.uri.query() {
        target.push('?');
        target.push_str(query);
    }
    let uri = Uri::builder()
        .scheme(route.upstream.scheme.clone())
        .authority(route.upstream.authority.clone())
        .path_and_query(target)
        .build()?;

    let headers = &mut parts.headers;
    let inbound = |name: &HeaderName| -> Option<HeaderValue> {
        client
            .trust_forwarded
            .then(|| headers.get(name).cloned())
            .flatten()
    };
    // Behind a trusted proxy, what it says about the original request wins.
    let inbound_forwarded_for =
        inbound(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok().map(str::to_string));
    let inbound_proto = inbound(&X_FORWARDED_PROTO);
    let inbound_host = inbound(&X_FORWARDED_HOST);
    let user_token = route
        .user_token
        .as_ref()
        .map(|forwarding| &forwarding.header);
    let spoofed = withhold_client_headers(
        headers,
        client.identity,
        &route.upstream_headers,
        user_token,
    );
    if spoofed > 0 {
        tracing::debug!(route = %route.id, spoofed, "removed client-sent identity headers");
    }

    // Sized for the longest address up front: an address is written a few bytes at a time,
    // and a string grown from nothing reallocated on the way.
    let mut forwarded_for = String::with_capacity(
        inbound_forwarded_for
            .as_ref()
            .map_or(0, |chain| chain.len() + 2)
            + MAX_IP_TEXT,
    );
    if let Some(chain) = inbound_forwarded_for {
        forwarded_for.push_str(&chain);
        forwarded_for.push_str(", ");
    }
    push_ip(client.peer, &mut forwarded_for);
    let forwarded = Forwarded {
        // The string's own buffer becomes the value (`from_str` would copy it).
        for_chain: HeaderValue::from_maybe_shared(bytes::Bytes::from(forwarded_for)).ok(),
        proto: inbound_proto.unwrap_or(HeaderValue::from_static(client.scheme)),
        host: inbound_host.or_else(|| client.host.cloned()),
    };

    parts.uri = uri;
    crate::header_maps::mark_foreign(&mut parts);
    // The pooled client negotiates HTTP/2 itself over TLS (ALPN); ask for HTTP/1.1 semantics.
    parts.version = Version::HTTP_11;
    Ok((Request::from_parts(parts, body), forwarded))
}

#[cfg(test)]
pub(super) mod tests {
    use std::borrow::Cow;

    use proptest::prelude::*;

    use super::*;

    /// A header name with `-` for every byte not a letter or a digit, built: what the
    /// reference compares.
    fn dashed(name: &str) -> Cow<'_, str> {
        if name.contains(|c: char| !c.is_ascii_alphanumeric() && c != '-') {
            Cow::Owned(name.replace(|c: char| !c.is_ascii_alphanumeric(), "-"))
        } else {
            Cow::Borrowed(name)
        }
    }

    /// The forwarding claims as first written, on the built dashed name.
    fn claims_forwarding_reference(name: &str) -> bool {
        let dashed = dashed(name);
        dashed.starts_with("x-forwarded-")
            || dashed.starts_with("x-original-")
            || dashed.starts_with("x-envoy-")
            || matches!(
                dashed.as_ref(),
                "forwarded"
                    | "x-real-ip"
                    | "x-client-ip"
                    | "true-client-ip"
                    | "x-cluster-client-ip"
                    | "cf-connecting-ip"
                    | "fastly-client-ip"
                    | "x-rewrite-url"
                    | "x-script-name"
                    | "script-name"
            )
    }

    fn identity() -> IdentityHeaders {
        let name = HeaderName::from_static;
        IdentityHeaders {
            user_id: name("x-user-id"),
            user_name: name("x-user-name"),
            user_email: name("x-user-email"),
            groups: name("x-user-groups"),
            scopes: name("x-auth-scopes"),
            client_id: name("x-client-id"),
            method: name("x-auth-method"),
            token_id: name("x-token_id"),
        }
    }

    fn credentials() -> Vec<(HeaderName, HeaderValue)> {
        vec![(
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("upstream-secret"),
        )]
    }

    fn user_token() -> HeaderName {
        HeaderName::from_static("x-upstream-token")
    }

    /// The strip written as one removal per candidate name, on built dashed names. The
    /// single pass must remove exactly what this removes.
    fn reference(
        headers: &mut HeaderMap,
        identity: &IdentityHeaders,
        credentials: &[(HeaderName, HeaderValue)],
        user_token: Option<&HeaderName>,
    ) -> usize {
        fn strip_names(headers: &mut HeaderMap, names: &[&HeaderName]) -> usize {
            let lookalikes: Vec<HeaderName> = headers
                .keys()
                .filter(|key| {
                    let key = dashed(key.as_str());
                    names.iter().any(|name| dashed(name.as_str()) == key)
                })
                .cloned()
                .collect();
            let mut removed = 0;
            for name in names.iter().copied().chain(lookalikes.iter()) {
                if let header::Entry::Occupied(entry) = headers.entry(name) {
                    removed += entry.remove_entry_mult().1.count();
                }
            }
            removed
        }
        // The gateway's own request id stays, whatever the client's `Connection` lists.
        let own_request_id: Vec<HeaderValue> =
            headers.get_all(&REQUEST_ID).iter().cloned().collect();
        headers.remove(&REQUEST_ID);
        let mut hop_by_hop = connection_listed(headers);
        hop_by_hop.extend(HOP_BY_HOP.iter().cloned());
        hop_by_hop.push(header::UPGRADE);
        let hop_refs: Vec<&HeaderName> = hop_by_hop.iter().collect();
        strip_names(headers, &hop_refs);
        for name in &NEVER_FORWARDED {
            headers.remove(name);
        }
        let forwarding: Vec<HeaderName> = headers
            .keys()
            .filter(|n| claims_forwarding_reference(n.as_str()))
            .cloned()
            .collect();
        for name in forwarding {
            headers.remove(name);
        }
        let spoofed = strip_names(headers, &identity.names());
        let mut credential_names: Vec<&HeaderName> = credentials.iter().map(|(n, _)| n).collect();
        credential_names.extend(user_token);
        strip_names(headers, &credential_names);
        let lookalikes: Vec<HeaderName> = headers
            .keys()
            .filter(|key| {
                let dashed = dashed(key.as_str());
                (dashed == "x-request-id" || dashed == "mcp-session-id") && **key != MCP_SESSION_ID
            })
            .cloned()
            .collect();
        for name in lookalikes {
            headers.remove(name);
        }
        for own in own_request_id {
            headers.append(REQUEST_ID, own);
        }
        spoofed
    }

    pub(in crate::pipeline) fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    pub(in crate::pipeline) fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn the_upstream_gets_neither_credentials_nor_claims_nor_hop_by_hop_headers() {
        let mut headers = map(&[
            ("host", "gw.example"),
            ("authorization", "Bearer t"),
            ("cookie", "a=b"),
            ("origin", "https://app.example"),
            ("connection", "keep-alive, X-Custom-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-custom-hop", "1"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x_forwarded.prefix", "/admin"),
            ("x-original-url", "/admin"),
            ("x-real-ip", "1.2.3.4"),
            ("X-User-Id", "admin"),
            ("x-user-id", "root"),
            ("x_user_id", "admin"),
            ("x.user.id", "admin"),
            ("x-token-id", "a look-alike of the configured x-token_id"),
            ("x-token_id", "exact"),
            ("x_api_key", "client-chosen"),
            ("transfer_encoding", "chunked"),
            ("keep.alive", "timeout=5"),
            ("x_custom.hop", "listed in Connection, respelled"),
            ("proxy", "http://attacker.example:3128"),
            ("x-request-id", "the gateway's own"),
            ("x_request_id", "client-chosen"),
            ("x_upstream_token", "client-chosen"),
            ("x-user-idx", "kept"),
            ("x_other", "kept"),
            ("content-type", "application/json"),
            ("mcp-session-id", "s"),
        ]);
        let spoofed = withhold_client_headers(
            &mut headers,
            &identity(),
            &credentials(),
            Some(&user_token()),
        );
        assert_eq!(spoofed, 6);
        assert_eq!(
            names(&headers),
            [
                "content-type",
                "mcp-session-id",
                "x-request-id",
                "x-user-idx",
                "x_other"
            ]
        );
    }

    fn header_name() -> impl Strategy<Value = String> {
        let known = prop::sample::select(vec![
            "host",
            "authorization",
            "cookie",
            "origin",
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-original-uri",
            "x-real-ip",
            "true-client-ip",
            "x-user-id",
            "x-user-groups",
            "x-token_id",
            "proxy",
            "x-request-id",
            "x-upstream-token",
            "x-token-id",
            "x-api-key",
            "content-type",
            "accept",
            "mcp-session-id",
            "x-custom",
        ]);
        // Known names respelled with other separators (`_`, `.`, `~`, `+`, `!`, `*`), and
        // arbitrary tokens.
        const SEPARATORS: [char; 6] = ['_', '.', '~', '+', '!', '*'];
        (known, any::<u32>(), any::<u32>(), "[a-z._~+!*-]{1,12}").prop_map(
            |(known, mask, which, free)| {
                if mask % 4 == 3 {
                    return free;
                }
                known
                    .chars()
                    .enumerate()
                    .map(|(i, c)| match (c, mask >> (i % 32) & 1) {
                        ('-', 1) => SEPARATORS[(which >> (i % 8 * 4)) as usize % SEPARATORS.len()],
                        _ => c,
                    })
                    .collect()
            },
        )
    }

    #[test]
    fn connection_lists_only_names_not_already_hop_by_hop() {
        let listed = |values: &[&'static str]| {
            let pairs: Vec<_> = values.iter().map(|v| ("connection", *v)).collect();
            connection_listed(&map(&pairs))
        };
        assert!(listed(&["keep-alive"]).is_empty());
        assert!(listed(&["Keep-Alive, UPGRADE", " te "]).is_empty());
        assert_eq!(
            listed(&["keep-alive, X-Trace", "close"]),
            [
                HeaderName::from_static("x-trace"),
                HeaderName::from_static("close")
            ]
        );
        // A look-alike is not the name it looks like: it is listed, and stripped as listed.
        assert_eq!(
            listed(&["keep_alive"]),
            [HeaderName::from_static("keep_alive")]
        );
    }

    #[test]
    fn the_name_filter_passes_every_look_alike() {
        let filter = NameFilter::of(["te", "x-user-id", "x-forwarded-for"]);
        for name in [
            "te",
            "x-user-id",
            "x_user.id",
            "X-User-Id",
            "x-forwarded-for",
        ] {
            assert!(filter.may_match(&name.to_ascii_lowercase()), "{name}");
        }
        assert!(NameFilter::of(["_a"]).may_match("-a") && NameFilter::of([".a"]).may_match("-a"));
        assert!(!NameFilter::of([]).may_match("te"));
    }

    proptest! {
        /// The in-place comparison reads names as building the dashed names does.
        #[test]
        fn reads_as_compares_the_dashed_names(a in "[a-z._-]{0,8}", b in "[a-z._-]{0,8}") {
            prop_assert_eq!(reads_as(&a, &b), dashed(&a) == dashed(&b));
            prop_assert_eq!(begins_reading_as(&a, &b), dashed(&a).starts_with(dashed(&b).as_ref()));
            prop_assert_eq!(claims_forwarding(&a), claims_forwarding_reference(&a));
        }

        /// Whatever the client sends, the single pass removes exactly what one lookup per
        /// candidate name removed, and counts the same spoofed identity headers.
        #[test]
        fn the_single_pass_strips_what_the_lookups_stripped(
            pairs in prop::collection::vec((header_name(), "[a-z_., -]{0,16}"), 0..24),
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in &pairs {
                if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                    headers.append(name, value);
                }
            }
            let mut expected = headers.clone();
            let token = user_token();
            let spoofed_before = reference(&mut expected, &identity(), &credentials(), Some(&token));
            let spoofed = withhold_client_headers(&mut headers, &identity(), &credentials(), Some(&token));
            prop_assert_eq!(spoofed, spoofed_before);
            prop_assert_eq!(headers, expected);
        }
    }
}
