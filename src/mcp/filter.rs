//! Phase 11 — response filter: the tools, prompts, resources and resource templates an
//! answer lists keep only what the caller may use, whether the upstream answered
//! `application/json` or `text/event-stream`.
//!
//! "May use" is the route's rules asked about the corresponding operation (`tools/call`
//! of the tool, `prompts/get` of the prompt, `resources/read` of the resource or
//! template): refused → hidden. A tool that needs a scope the caller can step up to stays
//! listed, or the client could never learn to ask for it.
//!
//! A response is recognised by its shape, not by its id: any JSON-RPC message whose
//! `result` holds `tools`, `prompts`, `resources` or `resourceTemplates` is filtered. Ids
//! would not do: an upstream may echo `1.0` as `1` or `-0` as `0` (clients then match
//! the answer, the gateway would not), and a stream resumed with `GET` + `Last-Event-ID`
//! replays answers to requests this connection never saw.
//!
//! Which answers go through here is phase 11's call in `proxy` (a list request's answer,
//! and `GET` streams). In a stream every complete event is looked at; one whose data
//! cannot hold a list (none of the member names, no escape) passes as it is, byte for byte,
//! and so does every event that is not a list's response. What could be a list and cannot
//! be read fails the answer ([`ListUnreadable`], [`ListTooLarge`]): it is never passed on
//! unfiltered. Everything else of the answer — `nextCursor` included — is kept.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame};
use serde_json::Value;

use crate::body::BoxError;
use crate::glob::Glob;
use crate::model::rules::{Caller, McpPolicy, Target, Verdict};

/// The largest list answer (JSON body or one SSE event) the filter reads. A bigger one is
/// not passed through unfiltered: the answer fails instead.
pub const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;

/// The lists an answer can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListKind {
    const ALL: [ListKind; 4] = [
        ListKind::Tools,
        ListKind::Prompts,
        ListKind::Resources,
        ListKind::ResourceTemplates,
    ];

    /// The methods asking for a list.
    pub const METHODS: [&'static str; 4] = [
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
    ];

    /// The result member holding the items, and the item member naming each.
    fn members(self) -> (&'static str, &'static str) {
        match self {
            ListKind::Tools => ("tools", "name"),
            ListKind::Prompts => ("prompts", "name"),
            ListKind::Resources => ("resources", "uri"),
            ListKind::ResourceTemplates => ("resourceTemplates", "uriTemplate"),
        }
    }

    fn operation(self, name: &str) -> (&'static str, Target) {
        match self {
            ListKind::Tools => ("tools/call", Target::Tool(name.to_string())),
            ListKind::Prompts => ("prompts/get", Target::Prompt(name.to_string())),
            ListKind::Resources | ListKind::ResourceTemplates => {
                ("resources/read", Target::Resource(name.to_string()))
            }
        }
    }
}

/// Whether the text of a message could hold a list: one of the result members' names
/// (`resource` is in both resource members), or an escape that could spell one.
fn may_hold_a_list(data: &[u8]) -> bool {
    const NEEDLES: [&[u8]; 4] = [b"tools", b"prompts", b"resource", b"\\u"];
    NEEDLES
        .iter()
        .any(|needle| data.windows(needle.len()).any(|window| window == *needle))
}

/// The caller, owned (the filter outlives the request's borrow of the principal).
#[derive(Debug, Clone)]
pub struct OwnedCaller {
    pub subject: String,
    pub scopes: Vec<String>,
    pub groups: Vec<String>,
    pub client_id: Option<String>,
    pub tools: Option<Arc<Vec<Glob>>>,
}

/// What to filter, for whom.
#[derive(Debug, Clone)]
pub struct ListFilter {
    pub policy: Arc<McpPolicy>,
    pub caller: Option<OwnedCaller>,
}

impl ListFilter {
    fn visible(&self, kind: ListKind, name: &str) -> bool {
        let caller = self.caller.as_ref().map(|c| Caller {
            subject: &c.subject,
            scopes: &c.scopes,
            groups: &c.groups,
            client_id: c.client_id.as_deref(),
            tools: c.tools.as_deref().map(Vec::as_slice),
        });
        let (method, target) = kind.operation(name);
        !matches!(
            self.policy
                .evaluate(caller.as_ref(), Some(method), Some(&target)),
            Verdict::Deny { .. }
        )
    }

    /// Filters one JSON-RPC message in place; `true` if it is a response holding a list.
    fn filter_message(&self, message: &mut Value) -> bool {
        let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
            return false;
        };
        let mut found = false;
        for kind in ListKind::ALL {
            let (list, key) = kind.members();
            if let Some(items) = result.get_mut(list).and_then(Value::as_array_mut) {
                // An item without a readable name is not shown: it could not be judged.
                items.retain(|item| {
                    item.get(key)
                        .and_then(Value::as_str)
                        .is_some_and(|n| self.visible(kind, n))
                });
                found = true;
            }
        }
        found
    }

    /// A whole JSON body: a response, or (batch) an array of them. `Ok(None)`: it holds no
    /// list (it stays as it is). Invalid UTF-8 is read as clients decode it (replaced, not
    /// refused). `Err`: not JSON to this parser — a client's may still read it (Python's
    /// reads `NaN`), so it must not pass unfiltered.
    pub fn filter_json(&self, body: &[u8]) -> Result<Option<Bytes>, ListUnreadable> {
        let text = String::from_utf8_lossy(body);
        let mut value: Value = serde_json::from_str(&text).map_err(|_| ListUnreadable)?;
        let changed = match &mut value {
            Value::Array(messages) => {
                // Every message is looked at (no short circuit): a batch may hold several.
                let mut found = false;
                for message in messages.iter_mut() {
                    found |= self.filter_message(message);
                }
                found
            }
            message => self.filter_message(message),
        };
        Ok(changed.then(|| Bytes::from(value.to_string())))
    }

    /// One complete SSE event (without its terminating blank line): rewritten if its data
    /// is a response holding a list, `Ok(None)` if it passes as it was (it cannot hold one,
    /// or does not), `Err` if it could and cannot be read.
    fn filter_event(&self, event: &[u8]) -> Result<Option<Vec<u8>>, ListUnreadable> {
        if !may_hold_a_list(event) {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(event);
        let mut data = String::new();
        let mut others = Vec::new();
        for line in sse_lines(&text) {
            if let Some(rest) = line.strip_prefix("data") {
                if rest.is_empty() || rest.starts_with(':') {
                    let value = rest.strip_prefix(':').unwrap_or(rest);
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value);
                    continue;
                }
            }
            // (An event holds no blank line; the one its end leaves is not part of it.)
            if !line.is_empty() {
                others.push(line);
            }
        }
        // The needle was in a comment or another field: no message to read.
        if data.is_empty() {
            return Ok(None);
        }
        let filtered = match self.filter_json(data.as_bytes()) {
            Ok(Some(filtered)) => filtered,
            Ok(None) => return Ok(None),
            // What this parser cannot read whole (a lone surrogate escape, which
            // `JSON.stringify` writes; a number past f64) is refused only if it is a list's
            // response: any other message passes as it came.
            Err(unreadable) => {
                return match list_response_shape(&data) {
                    Some(false) => Ok(None),
                    None if !data.contains("\"result\"") => Ok(None),
                    _ => Err(unreadable),
                }
            }
        };
        let mut out = Vec::with_capacity(filtered.len() + 64);
        for line in others {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&filtered);
        out.push(b'\n');
        Ok(Some(out))
    }
}

/// Whether a message is a response (or a batch with one) whose `result` holds a list,
/// read with every other value skipped unchecked, as lenient readers take it. `None`: not
/// even that can be read.
fn list_response_shape(data: &str) -> Option<bool> {
    use serde::de::IgnoredAny;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Message {
        result: Option<ListMembers>,
    }
    #[derive(Deserialize)]
    struct ListMembers {
        tools: Option<IgnoredAny>,
        prompts: Option<IgnoredAny>,
        resources: Option<IgnoredAny>,
        #[serde(rename = "resourceTemplates")]
        resource_templates: Option<IgnoredAny>,
    }
    let holds_a_list = |message: &Message| {
        message.result.as_ref().is_some_and(|result| {
            result.tools.is_some()
                || result.prompts.is_some()
                || result.resources.is_some()
                || result.resource_templates.is_some()
        })
    };
    if data.trim_start().starts_with('[') {
        let messages: Vec<Message> = serde_json::from_str(data).ok()?;
        Some(messages.iter().any(holds_a_list))
    } else {
        let message: Message = serde_json::from_str(data).ok()?;
        Some(holds_a_list(&message))
    }
}

/// A message that could hold a list and cannot be read: not passed on.
#[derive(Debug, thiserror::Error)]
#[error("an answer that may hold a list cannot be read, so it cannot be filtered")]
pub struct ListUnreadable;

/// The lines of an event: SSE ends a line with CRLF, LF or a lone CR.
fn sse_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .flat_map(|l| l.split('\r'))
}

/// The end of the first complete event in `buffer`: (event end, separator end). `from`:
/// where to start looking — the bytes before it hold no event end (resuming a search
/// three bytes before where the last one stopped finds a blank line split across reads).
fn event_boundary(buffer: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i < buffer.len() {
        // A blank line: a line terminator right after another (or at the very start).
        let terminator = |at: usize| -> Option<usize> {
            match buffer.get(at) {
                Some(b'\n') => Some(1),
                Some(b'\r') if buffer.get(at + 1) == Some(&b'\n') => Some(2),
                Some(b'\r') if at + 1 < buffer.len() => Some(1),
                _ => None,
            }
        };
        if let Some(first) = terminator(i) {
            if let Some(second) = terminator(i + first) {
                return Some((i + first, i + first + second));
            }
            i += first;
        } else {
            i += 1;
        }
    }
    None
}

/// A `text/event-stream` body with every list response rewritten.
pub struct SseFilter<B> {
    inner: B,
    filter: ListFilter,
    pending: BytesMut,
    /// How much of `pending` was searched for an event end without finding one: a large
    /// event arriving in many reads is searched once, not from its start at every read.
    searched: usize,
    /// Whether the stream's start was looked at for a byte order mark (clients skip one
    /// there, and the first event's `data` line would otherwise not read as one here).
    start_seen: bool,
    ended: bool,
}

impl<B> SseFilter<B> {
    pub fn new(inner: B, filter: ListFilter) -> Self {
        Self {
            inner,
            filter,
            pending: BytesMut::new(),
            searched: 0,
            start_seen: false,
            ended: false,
        }
    }

    /// Complete events out of `pending`, filtered; `Err` at an event that could hold a list
    /// and cannot be read (the events before it are dropped with the stream).
    fn drain_events(&mut self) -> Result<Bytes, ListUnreadable> {
        let mut out = BytesMut::new();
        if !self.start_seen {
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            let seen = self.pending.len().min(BOM.len());
            if self.pending[..seen] != BOM[..seen] {
                self.start_seen = true;
            } else if seen == BOM.len() {
                // Passed on as it came; only the reading here skips it.
                out.extend_from_slice(&self.pending.split_to(BOM.len()));
                self.start_seen = true;
            } else {
                return Ok(out.freeze());
            }
        }
        loop {
            let from = self.searched.saturating_sub(3);
            let Some((event_end, separator_end)) = event_boundary(&self.pending, from) else {
                self.searched = self.pending.len();
                break;
            };
            self.searched = 0;
            let chunk = self.pending.split_to(separator_end);
            match self.filter.filter_event(&chunk[..event_end])? {
                Some(rewritten) => {
                    out.extend_from_slice(&rewritten);
                    out.extend_from_slice(b"\n");
                }
                None => out.extend_from_slice(&chunk),
            }
        }
        Ok(out.freeze())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a list answer event is larger than the filter reads ({MAX_LIST_BYTES} bytes)")]
pub struct ListTooLarge;

impl<B> HttpBody for SseFilter<B>
where
    B: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(Some(Ok(frame))) => {
                    let frame = match frame.into_data() {
                        Ok(data) => data,
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    };
                    this.pending.extend_from_slice(&frame);
                    let out = match this.drain_events() {
                        Ok(out) => out,
                        Err(unreadable) => {
                            this.ended = true;
                            return Poll::Ready(Some(Err(Box::new(unreadable))));
                        }
                    };
                    if this.pending.len() > MAX_LIST_BYTES {
                        this.ended = true;
                        return Poll::Ready(Some(Err(Box::new(ListTooLarge))));
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    // An unterminated last event: judged as complete.
                    let rest = this.pending.split().freeze();
                    if rest.is_empty() {
                        return Poll::Ready(None);
                    }
                    let out = match this.filter.filter_event(&rest) {
                        Ok(Some(rewritten)) => Bytes::from(rewritten),
                        Ok(None) => rest,
                        Err(unreadable) => return Poll::Ready(Some(Err(Box::new(unreadable)))),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rules::{Action, DefaultEffect, Rule};
    use http_body_util::BodyExt;

    fn filter() -> ListFilter {
        let policy = McpPolicy {
            rules: vec![Rule {
                name: "no-admin".into(),
                methods: vec![],
                tools: Some(vec![Glob::new("admin_*").unwrap()]),
                prompts: Some(vec![Glob::new("secret").unwrap()]),
                resources: Some(vec![Glob::new("file:///private/*").unwrap()]),
                action: Action::Deny,
            }],
            default: DefaultEffect::Allow,
            tool_scopes: false,
            max_body_bytes: 1 << 20,
            undetermined_allowed: false,
        };
        ListFilter {
            policy: Arc::new(policy),
            caller: None,
        }
    }

    #[test]
    fn json_lists_keep_only_usable_items_and_everything_else() {
        let body = br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"search","description":"d"},{"name":"admin_reset"},{"title":"no name"}],"nextCursor":"abc"}}"#;
        let out: Value =
            serde_json::from_slice(&filter().filter_json(body).unwrap().unwrap()).unwrap();
        assert_eq!(
            out["result"]["tools"],
            serde_json::json!([{"name":"search","description":"d"}])
        );
        assert_eq!(out["result"]["nextCursor"], "abc");
        // Not a response holding a list: left alone.
        for other in [
            &br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#[..],
            br#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"tools"}]}}"#,
            br#"{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"tools"}}"#,
        ] {
            assert!(filter().filter_json(other).unwrap().is_none(), "{other:?}");
        }
        // What this parser cannot read, a client's might (Python's `json` reads `NaN`).
        for unreadable in [
            &b"not json"[..],
            br#"{"result":{"tools":[{"name":"admin_x","x":NaN}]}}"#,
        ] {
            assert!(filter().filter_json(unreadable).is_err(), "{unreadable:?}");
        }
        // Invalid UTF-8 is read as a client decodes it: replaced, and the list filtered.
        let mut invalid =
            br#"{"id":1,"result":{"tools":[{"name":"admin_x","description":""#.to_vec();
        invalid.extend_from_slice(b"\xff\"}]}}");
        let out: Value =
            serde_json::from_slice(&filter().filter_json(&invalid).unwrap().unwrap()).unwrap();
        assert_eq!(out["result"]["tools"], serde_json::json!([]));
        let resources = br#"{"jsonrpc":"2.0","id":3,"result":{"resources":[{"uri":"file:///private/x"},{"uri":"file:///public/y"}]}}"#;
        let out: Value =
            serde_json::from_slice(&filter().filter_json(resources).unwrap().unwrap()).unwrap();
        assert_eq!(
            out["result"]["resources"],
            serde_json::json!([{"uri":"file:///public/y"}])
        );
    }

    /// Whatever id the answer carries — the request's in another spelling (`1.0` echoed as
    /// `1`, `-0` as `0`), another request's (a replayed stream), none — and in a batch.
    #[test]
    fn every_response_holding_a_list_is_filtered_whatever_its_id() {
        for id in ["1", "1.0", "0", "-0", "1e0", "\"x\"", "null"] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[{{"name":"admin_x"}},{{"name":"ok"}}],"prompts":[{{"name":"secret"}}]}}}}"#
            );
            let out: Value =
                serde_json::from_slice(&filter().filter_json(body.as_bytes()).unwrap().unwrap())
                    .unwrap();
            assert_eq!(
                out["result"]["tools"],
                serde_json::json!([{"name":"ok"}]),
                "{id}"
            );
            assert_eq!(out["result"]["prompts"], serde_json::json!([]), "{id}");
        }
        let batch = br#"[{"jsonrpc":"2.0","id":7,"result":{"resourceTemplates":[{"uriTemplate":"file:///private/{x}"},{"uriTemplate":"file:///public/{x}"}]}},{"id":8,"result":{"tools":[{"name":"admin_y"}]}}]"#;
        let out: Value =
            serde_json::from_slice(&filter().filter_json(batch).unwrap().unwrap()).unwrap();
        assert_eq!(
            out[0]["result"]["resourceTemplates"],
            serde_json::json!([{"uriTemplate":"file:///public/{x}"}])
        );
        assert_eq!(out[1]["result"]["tools"], serde_json::json!([]));
    }

    #[test]
    fn only_text_that_could_spell_a_list_member_is_parsed() {
        for (data, could) in [
            (&b"{\"result\":{\"tools\":[]}}"[..], true),
            (b"{\"result\":{\"resourceTemplates\":[]}}", true),
            (b"{\"result\":{\"\\u0074ools\":[]}}", true),
            (b"{\"result\":{\"content\":[]}}", false),
            (b": keep-alive", false),
        ] {
            assert_eq!(
                may_hold_a_list(data),
                could,
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
        // An escaped member name is still a list (serde_json reads the escape).
        let escaped = br#"{"jsonrpc":"2.0","id":1,"result":{"\u0074ools":[{"name":"admin_x"}]}}"#;
        let out: Value =
            serde_json::from_slice(&filter().filter_json(escaped).unwrap().unwrap()).unwrap();
        assert_eq!(out["result"]["tools"], serde_json::json!([]));
    }

    /// A body delivering fixed chunks, one per poll.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl HttpBody for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn only_the_list_response_events_of_a_stream_are_rewritten() {
        // The second list response stands for an answer replayed after `Last-Event-ID`.
        let stream = "event: message\nid: 1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"admin_x\":1}}\n\n: keepalive\n\nid: 2\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\r\ndata: \"result\":{\"tools\":[{\"name\":\"admin_reset\"},{\"name\":\"ok\"}]}}\r\n\r\nid: 3\ndata: after\n\nid: 4\ndata: {\"jsonrpc\":\"2.0\",\"id\":1.0,\"result\":{\"tools\":[{\"name\":\"admin_again\"}]}}\n\nid: 5\ndata: end\n\n";
        // Split into awkward chunks: every size gives the same answer.
        let whole = {
            let chunks = std::iter::once(Bytes::from(stream)).collect();
            SseFilter::new(Chunks(chunks), filter())
                .collect()
                .await
                .unwrap()
                .to_bytes()
        };
        for size in 1..=9 {
            let chunks = stream
                .as_bytes()
                .chunks(size)
                .map(Bytes::copy_from_slice)
                .collect();
            let body = SseFilter::new(Chunks(chunks), filter());
            let out = body.collect().await.unwrap().to_bytes();
            assert_eq!(out, whole, "chunks of {size}");
        }
        let text = String::from_utf8(whole.to_vec()).unwrap();
        assert!(text.starts_with("event: message\nid: 1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"admin_x\":1}}\n\n: keepalive\n\n"), "{text}");
        assert!(text.contains("id: 2\ndata: {"), "{text}");
        assert!(!text.contains("admin_reset"), "{text}");
        assert!(text.contains("\"name\":\"ok\""), "{text}");
        assert!(text.contains("id: 3\ndata: after\n\nid: 4\n"), "{text}");
        assert!(!text.contains("admin_again"), "{text}");
        assert!(text.ends_with("id: 5\ndata: end\n\n"), "{text}");
    }

    #[tokio::test]
    async fn an_unreadable_event_is_refused_only_if_it_is_a_list_response() {
        // A tool's answer with a lone surrogate (JSON.stringify writes them) that mentions
        // a resource: not a list, passed as it came.
        let call = "data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"content\":[{\"type\":\"resource_link\",\"uri\":\"file:///a\",\"name\":\"\\ud83d\"}]}}\n\n";
        let chunks = std::iter::once(Bytes::from(call)).collect();
        let out = SseFilter::new(Chunks(chunks), filter())
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(out, call.as_bytes());
        // The same escape inside a list: refused.
        let list = "data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[{\"name\":\"admin_x\",\"description\":\"\\ud83d\"}]}}\n\n";
        let chunks = std::iter::once(Bytes::from(list)).collect();
        assert!(SseFilter::new(Chunks(chunks), filter())
            .collect()
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_byte_order_mark_at_the_start_does_not_hide_the_first_event() {
        let stream = "\u{feff}data: {\"id\":1,\"result\":{\"tools\":[{\"name\":\"admin_x\"}]}}\n\n";
        for size in [1, 2, 3, 4, 100] {
            let chunks = stream
                .as_bytes()
                .chunks(size)
                .map(Bytes::copy_from_slice)
                .collect();
            let out = SseFilter::new(Chunks(chunks), filter())
                .collect()
                .await
                .unwrap()
                .to_bytes();
            let text = String::from_utf8(out.to_vec()).unwrap();
            assert!(text.starts_with('\u{feff}'), "{size}: {text}");
            assert!(!text.contains("admin_x"), "{size}: {text}");
        }
    }

    #[tokio::test]
    async fn a_stream_event_that_could_hold_a_list_and_cannot_be_read_ends_the_stream() {
        let stream = "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\ndata: {\"id\":1,\"result\":{\"tools\":[{\"name\":\"admin_x\",\"x\":NaN}]}}\n\n";
        let chunks = std::iter::once(Bytes::from(stream)).collect();
        let result = SseFilter::new(Chunks(chunks), filter()).collect().await;
        assert!(result.is_err(), "the list event is not passed on");
    }
}
