//! Phase 7 — MCP policy: the route's rules applied to each JSON-RPC message of the body
//! (read by `mcp::jsonrpc::peek`, never rewritten), after the `Mcp-Method` / `Mcp-Name`
//! headers of protocol 2026-07-28 were checked against it.
//!
//! Answers, per the MCP transport and authorization specifications:
//! - a call refused for want of a scope: 403 with an `insufficient_scope` challenge naming
//!   the scopes this call needs (the client steps up and retries);
//! - any other refused request: a JSON-RPC error with the request's `id` that names the rule
//!   (and nothing about other tools);
//! - refused notifications (no `id`): an HTTP error status with a JSON-RPC error without id;
//! - a batch with any refused message is not forwarded: every request in it is answered,
//!   refused ones with their rule, the others saying they were not sent.

use std::sync::Arc;

use http::header::HeaderName;
use http::HeaderMap;
use serde_json::{json, Value};

use super::rejection::Rejection;
use crate::auth::Principal;
use crate::mcp::filter::ListKind;
use crate::mcp::jsonrpc::{self, Body, Kind, Message};
use crate::model::route::Route;
use crate::model::rules::{
    is_canonical_resource_uri, Caller, McpPolicy, Target, Verdict, CANONICAL_URI_RULE,
};

/// JSON-RPC code of a refusal by the gateway (implementation-defined server error range).
pub const REFUSED_CODE: i64 = -32001;

/// What the policy learned, for the audit event.
#[derive(Debug, Clone, Default)]
pub struct Judged {
    pub method: Option<String>,
    pub target: Option<String>,
    pub rule: Option<String>,
    /// Whether a request asks for a list (phase 11 then reads a JSON answer whole to
    /// filter it).
    pub asks_for_list: bool,
    /// The tools called (phase 8 counts them).
    pub tools: Vec<String>,
    /// The id of a single request (answers carry it).
    pub id: Option<Value>,
}

impl Judged {
    /// What a body asks, copied: for a refusal, which still reads the body to answer.
    fn describing(parsed: &Body) -> Judged {
        let messages = parsed.messages();
        Judged {
            method: messages.first().and_then(|m| m.method.clone()),
            target: messages
                .first()
                .and_then(|m| m.target.as_ref())
                .map(|t| t.name().to_string()),
            rule: None,
            asks_for_list: asks_for_list(messages),
            tools: messages
                .iter()
                .filter_map(|m| match &m.target {
                    Some(Target::Tool(name)) => Some(name.clone()),
                    _ => None,
                })
                .collect(),
            id: match parsed {
                Body::Single(message) => message.id.clone(),
                Body::Batch(_) => None,
            },
        }
    }

    /// What an allowed body asks: a single message's method and target are moved, not
    /// copied (the common case: one allocation per string fewer on every judged request).
    fn taken_from(parsed: Body) -> Judged {
        let message = match parsed {
            Body::Single(message) => message,
            batch @ Body::Batch(_) => return Judged::describing(&batch),
        };
        let asks_for_list = asks_for_list(std::slice::from_ref(&message));
        let (target, tools) = match message.target {
            Some(Target::Tool(name)) => (Some(name.clone()), vec![name]),
            Some(Target::Prompt(name) | Target::Resource(name)) => (Some(name), Vec::new()),
            None => (None, Vec::new()),
        };
        Judged {
            method: message.method,
            target,
            rule: None,
            asks_for_list,
            tools,
            id: message.id,
        }
    }
}

/// Whether a request among `messages` asks for a list — also in a spelling an upstream
/// might read alike (case, surrounding blanks): its answer is then read and filtered.
fn asks_for_list(messages: &[Message]) -> bool {
    messages.iter().any(|m| {
        m.kind == Kind::Request
            && m.method.as_deref().is_some_and(|method| {
                let method = method.trim();
                ListKind::METHODS
                    .iter()
                    .any(|list| method.eq_ignore_ascii_case(list))
            })
    })
}

/// Whether a request says it has a body: a `Content-Length` other than 0, or any
/// `Transfer-Encoding` (an HTTP/2 body without a length shows in the body itself).
pub fn carries_a_body(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .any(|length| length.as_bytes() != b"0")
}

/// Judges a body for `route`: what it asks (for the audit event) and, if refused, why.
/// No refusal = forward the body as received.
pub fn judge(
    route: &Arc<Route>,
    policy: &McpPolicy,
    principal: Option<&Principal>,
    body: &[u8],
    headers: &HeaderMap,
) -> (Judged, Option<Rejection>) {
    match judge_body(route, policy, principal, body, headers) {
        Ok(judged) => (judged, None),
        Err(refused) => {
            let (rejection, judged) = *refused;
            (judged, Some(rejection))
        }
    }
}

type Refused = Box<(Rejection, Judged)>;

/// The request headers that describe an MCP call (protocol 2026-07-28); names made once,
/// not parsed from text at every lookup.
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// `/verify` without a body: the call as the `Mcp-Method` / `Mcp-Name` headers describe it
/// (protocol 2026-07-28). `None` when they do not say what is called.
pub fn judge_headers(
    route: &Arc<Route>,
    policy: &McpPolicy,
    principal: Option<&Principal>,
    headers: &HeaderMap,
) -> Option<(Judged, Option<Rejection>)> {
    let text = |name: HeaderName| -> Option<Option<String>> {
        let mut values = headers.get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return None;
        }
        match first {
            None => Some(None),
            Some(value) => value.to_str().ok().map(|v| Some(v.to_string())),
        }
    };
    let method = text(MCP_METHOD)??;
    let name = text(MCP_NAME)?;
    let target = match (method.as_str(), name) {
        ("tools/call", Some(name)) => Some(Target::Tool(name)),
        ("prompts/get", Some(name)) => Some(Target::Prompt(name)),
        ("resources/read" | "resources/subscribe" | "resources/unsubscribe", Some(uri)) => {
            Some(Target::Resource(uri))
        }
        // A completion names what it completes only in its body.
        ("completion/complete", _) => return None,
        // A named operation without its name cannot be judged.
        (
            "tools/call"
            | "prompts/get"
            | "resources/read"
            | "resources/subscribe"
            | "resources/unsubscribe",
            None,
        ) => return None,
        _ => None,
    };
    let body = Body::Single(Message {
        kind: Kind::Request,
        method: Some(method),
        target,
        id: None,
    });
    Some(match judge_parsed(route, policy, principal, body, None) {
        Ok(judged) => (judged, None),
        Err(refused) => {
            let (rejection, judged) = *refused;
            (judged, Some(rejection))
        }
    })
}

fn judge_body(
    route: &Arc<Route>,
    policy: &McpPolicy,
    principal: Option<&Principal>,
    body: &[u8],
    headers: &HeaderMap,
) -> Result<Judged, Refused> {
    let parsed = jsonrpc::peek(body)
        .map_err(|e| Box::new((Rejection::McpUnreadable(e), Judged::default())))?;
    judge_parsed(route, policy, principal, parsed, Some(headers))
}

/// Judges messages already read; `headers` (inline) are checked against them.
fn judge_parsed(
    route: &Arc<Route>,
    policy: &McpPolicy,
    principal: Option<&Principal>,
    parsed: Body,
    headers: Option<&HeaderMap>,
) -> Result<Judged, Refused> {
    if let Some(headers) = headers {
        check_headers(&parsed, headers).map_err(|r| Box::new((r, Judged::describing(&parsed))))?;
    }
    let messages = parsed.messages();
    let caller = principal.map(|p| Caller {
        subject: &p.subject,
        scopes: &p.scopes,
        groups: &p.groups,
        client_id: p.client_id.as_deref(),
        tools: p.tools.as_deref().map(Vec::as_slice),
    });
    // Resource rules match URIs as text: a URI the upstream would resolve to another text
    // is refused where rules name resources, so that what is judged is what is read.
    let names_resources = policy.names_resources();
    // A completion is judged as the use of what it completes (the same rules, also those
    // limited to `prompts/get` or `resources/read`); it refers to a URI template, not a URI.
    let verdict = |m: &Message| {
        let (method, completes) = match (m.method.as_deref(), &m.target) {
            (Some("completion/complete"), Some(Target::Prompt(_))) => (Some("prompts/get"), true),
            (Some("completion/complete"), Some(Target::Resource(_))) => {
                (Some("resources/read"), true)
            }
            (method, _) => (method, false),
        };
        match &m.target {
            Some(Target::Resource(uri))
                if names_resources && !completes && !is_canonical_resource_uri(uri) =>
            {
                Verdict::Deny {
                    rule: CANONICAL_URI_RULE.to_string(),
                }
            }
            target => policy.evaluate(caller.as_ref(), method, target.as_ref()),
        }
    };
    // Most bodies are allowed whole, and need no list of verdicts (a refused one is judged
    // twice, the second time to say why).
    if messages.iter().all(|m| verdict(m) == Verdict::Allow) {
        return Ok(Judged::taken_from(parsed));
    }
    let judged = Judged::describing(&parsed);
    let verdicts: Vec<Verdict> = messages.iter().map(verdict).collect();
    let refused_rule = verdicts.iter().find_map(|v| match v {
        Verdict::Deny { rule } | Verdict::NeedScopes { rule, .. } => Some(rule.clone()),
        Verdict::Allow => None,
    });
    let judged = Judged {
        rule: refused_rule,
        ..judged
    };
    // One call short of scopes: the step-up challenge (a batch is answered message by
    // message instead; a client cannot step up half a batch).
    if let (Body::Single(message), [Verdict::NeedScopes { scopes, rule }]) =
        (&parsed, verdicts.as_slice())
    {
        // What this call needs, plus what the caller holds already: clients that replace
        // their scope set on a step-up (the TypeScript SDK does) keep the others.
        let mut needed: Vec<String> = route.required_scopes.clone();
        let held = principal.map(|p| p.scopes.as_slice()).unwrap_or_default();
        for scope in held.iter().chain(scopes) {
            if !needed.contains(scope) {
                needed.push(scope.clone());
            }
        }
        let mut challenge = route.challenge.clone();
        challenge.scope = Some(needed.join(" ").into());
        return Err(Box::new((
            Rejection::McpStepUp {
                challenge,
                answer: error_object(
                    message.id.clone(),
                    &format!(
                        "insufficient_scope: this call needs scope {} (rule {rule})",
                        scopes.join(" ")
                    ),
                ),
            },
            judged,
        )));
    }
    let answers: Vec<Value> = messages
        .iter()
        .zip(&verdicts)
        .filter(|(m, _)| m.kind == Kind::Request)
        .map(|(m, v)| error_object(m.id.clone(), &describe(v)))
        .collect();
    let notifications_only = answers.is_empty();
    let answer = match (&parsed, notifications_only) {
        (_, true) => error_object(None, &describe(first_refusal(&verdicts))),
        (Body::Single(_), false) => answers.into_iter().next().unwrap_or(Value::Null),
        (Body::Batch(_), false) => Value::Array(answers),
    };
    Err(Box::new((
        Rejection::McpRefused {
            answer,
            notifications_only,
        },
        judged,
    )))
}

fn first_refusal(verdicts: &[Verdict]) -> &Verdict {
    verdicts
        .iter()
        .find(|v| **v != Verdict::Allow)
        .unwrap_or(&Verdict::Allow)
}

fn describe(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Allow => "not sent: another message of this batch was refused".into(),
        Verdict::Deny { rule } => format!("refused by the gateway (rule {rule})"),
        Verdict::NeedScopes { scopes, rule } => format!(
            "insufficient_scope: this call needs scope {} (rule {rule})",
            scopes.join(" ")
        ),
    }
}

fn error_object(id: Option<Value>, message: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(Value::Null),
        "error": {"code": REFUSED_CODE, "message": message},
    })
}

/// Protocol 2026-07-28 carries `Mcp-Method` (and `Mcp-Name` for named operations) in
/// headers so that proxies can route without the body; inline, they must agree with it, or
/// the gateway and the server could be judging different calls.
fn check_headers(body: &Body, headers: &HeaderMap) -> Result<(), Rejection> {
    let header = |name: HeaderName| -> Result<Option<&str>, Rejection> {
        let mut values = headers.get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(Rejection::McpHeaderMismatch(
                "the header appears more than once",
            ));
        }
        first
            .map(|v| {
                v.to_str()
                    .map_err(|_| Rejection::McpHeaderMismatch("the header is not text"))
            })
            .transpose()
    };
    let method = header(MCP_METHOD)?;
    let name = header(MCP_NAME)?;
    if method.is_none() && name.is_none() {
        return Ok(());
    }
    let Body::Single(message) = body else {
        return Err(Rejection::McpHeaderMismatch(
            "Mcp-Method / Mcp-Name with a batch",
        ));
    };
    if method != message.method.as_deref() {
        return Err(Rejection::McpHeaderMismatch(
            "Mcp-Method differs from the body's method",
        ));
    }
    if name.is_some() && name != message.target.as_ref().map(|t| t.name()) {
        return Err(Rejection::McpHeaderMismatch(
            "Mcp-Name differs from the body",
        ));
    }
    Ok(())
}

/// Reads the body a route's MCP rules judge (inline, and forwarded to `/verify`): at most
/// `limit` bytes, with the slow-POST guard between chunks. A body that arrives in one piece
/// (the usual case) is that piece, with no list of pieces allocated to collect it.
pub async fn read_body(
    incoming: crate::body::RequestBody,
    limit: usize,
    idle: std::time::Duration,
) -> Result<bytes::Bytes, Rejection> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(incoming, limit);
    let mut body = std::pin::pin!(super::forward::IdleTimeout::new(limited, idle));
    let mut whole = bytes::Bytes::new();
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|error| body_refusal(&*error))?.into_data() else {
            continue; // trailers say nothing of the call
        };
        match &mut joined {
            Some(joined) => joined.extend_from_slice(&data),
            None if whole.is_empty() => whole = data,
            None if data.is_empty() => {}
            None => {
                let mut both = bytes::BytesMut::with_capacity(whole.len() + data.len());
                both.extend_from_slice(&whole);
                both.extend_from_slice(&data);
                joined = Some(both);
            }
        }
    }
    Ok(joined.map_or(whole, bytes::BytesMut::freeze))
}

/// Why a body the rules judge could not be read.
fn body_refusal(error: &(dyn std::error::Error + Send + Sync + 'static)) -> Rejection {
    if error.is::<http_body_util::LengthLimitError>() {
        Rejection::McpBodyTooLarge
    } else if error.is::<super::forward::StreamIdle>() {
        Rejection::BodyTimeout
    } else {
        Rejection::MalformedBody
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn message() -> impl Strategy<Value = Message> {
        let kind = prop_oneof![
            Just(Kind::Request),
            Just(Kind::Notification),
            Just(Kind::Response)
        ];
        let method = proptest::option::of(prop_oneof![
            Just("tools/call".to_string()),
            Just("tools/list".to_string()),
            Just("prompts/list".to_string()),
            Just("resources/read".to_string()),
            "[a-z/]{0,12}",
        ]);
        let target = proptest::option::of(prop_oneof![
            "[a-z_]{0,8}".prop_map(Target::Tool),
            "[a-z_]{0,8}".prop_map(Target::Prompt),
            "[a-z:/]{0,8}".prop_map(Target::Resource),
        ]);
        let id = proptest::option::of(prop_oneof![
            any::<i64>().prop_map(Value::from),
            "[a-z0-9]{0,6}".prop_map(Value::from),
            Just(Value::Null),
        ]);
        (kind, method, target, id).prop_map(|(kind, method, target, id)| Message {
            kind,
            method,
            target,
            id,
        })
    }

    fn body() -> impl Strategy<Value = Body> {
        prop_oneof![
            message().prop_map(Body::Single),
            proptest::collection::vec(message(), 0..4).prop_map(Body::Batch),
        ]
    }

    /// A client's body arriving in the given pieces.
    struct Pieces(std::collections::VecDeque<bytes::Bytes>);

    impl http_body::Body for Pieces {
        type Data = bytes::Bytes;
        type Error = crate::body::BoxError;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            std::task::Poll::Ready(
                self.0
                    .pop_front()
                    .map(|piece| Ok(http_body::Frame::data(piece))),
            )
        }
    }

    fn arriving(pieces: &[&'static [u8]]) -> crate::body::RequestBody {
        let pieces = pieces.iter().map(|piece| bytes::Bytes::from_static(piece));
        crate::body::RequestBody::Stream(Box::pin(Pieces(pieces.collect())))
    }

    #[tokio::test]
    async fn a_body_is_read_whole_whatever_its_pieces_and_within_its_limit() {
        let idle = std::time::Duration::from_secs(5);
        let call: &'static [u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let read = read_body(arriving(&[call]), 1024, idle).await.unwrap();
        assert_eq!(
            read.as_ptr(),
            call.as_ptr(),
            "one piece is taken, not copied"
        );
        let read = read_body(arriving(&[b"", b"{\"id\":", b"", b"1}", b""]), 1024, idle)
            .await
            .unwrap();
        assert_eq!(&read[..], b"{\"id\":1}");
        assert!(read_body(arriving(&[]), 1024, idle)
            .await
            .unwrap()
            .is_empty());
        let over = read_body(arriving(&[b"0123456789", b"0123456789"]), 15, idle).await;
        assert!(matches!(over, Err(Rejection::McpBodyTooLarge)));
    }

    proptest! {
        /// The allowed path moves what it can out of the body; what it reports must be what
        /// the copying description (used by refusals) says.
        #[test]
        fn taking_and_describing_say_the_same(body in body()) {
            let described = format!("{:?}", Judged::describing(&body));
            prop_assert_eq!(format!("{:?}", Judged::taken_from(body)), described);
        }
    }
}
