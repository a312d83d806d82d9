//! Phase 7's reading of a request body: the JSON-RPC envelope of each MCP message, and only
//! what policy needs — `method`, the tool or prompt `name`, the resource `uri`, the `id`.
//! The body itself is never rewritten: the bytes judged are the bytes forwarded.
//!
//! Hand-written on top of serde rather than a generic JSON-RPC crate because the security
//! property is about *disagreement*: whatever the upstream's parser could read differently
//! from ours must be refused, not guessed. So duplicate members are an error (JavaScript's
//! `JSON.parse` keeps the last one, serde's derive refuses), trailing bytes are an error,
//! a `tools/call` without a string `name` is an error, and any error means "refuse".

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// The most messages one batch may carry.
pub const MAX_BATCH: usize = 64;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has a method and an id: expects an answer.
    Request,
    /// Has a method, no id.
    Notification,
    /// No method: a response to a request the server sent (sampling, elicitation, roots).
    Response,
}

pub use crate::model::rules::Target;

/// What policy reads of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: Kind,
    pub method: Option<String>,
    pub target: Option<Target>,
    /// The request id (string, number or null), echoed in our answers.
    pub id: Option<Value>,
}

/// A body: one message or a batch (2025-03-26 and earlier; later revisions have none).
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Single(Message),
    Batch(Vec<Message>),
}

impl Body {
    pub fn messages(&self) -> &[Message] {
        match self {
            Body::Single(message) => std::slice::from_ref(message),
            Body::Batch(messages) => messages,
        }
    }
}

/// Why a body could not be read. Every one of these refuses the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeekError {
    #[error("the body is not JSON")]
    NotJson,
    #[error("the body is not a JSON-RPC 2.0 message: {0}")]
    NotJsonRpc(&'static str),
    #[error("a batch must hold 1 to 64 messages")]
    BatchSize,
    #[error("{0} needs a string `params.{1}`")]
    MissingTarget(&'static str, &'static str),
}

impl PeekError {
    /// The JSON-RPC error code (JSON-RPC 2.0 §5.1).
    pub fn code(&self) -> i64 {
        match self {
            PeekError::NotJson => -32700,
            PeekError::NotJsonRpc(_) | PeekError::BatchSize => -32600,
            PeekError::MissingTarget(..) => -32602,
        }
    }
}

/// Reads the body. Strict: see the module documentation.
pub fn peek(bytes: &[u8]) -> Result<Body, PeekError> {
    // JSON is UTF-8 (RFC 8259 §8.1). serde skips ignored members without validating them,
    // and the upstream's decoder may read invalid bytes differently: refuse them anywhere.
    // Validated once here, the text is read as `str`: serde then checks no string again.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(PeekError::NotJson);
    };
    let first = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    if first == Some(&b'[') {
        let envelopes: Vec<Envelope> = serde_json::from_str(text).map_err(|e| classify(&e))?;
        if envelopes.is_empty() || envelopes.len() > MAX_BATCH {
            return Err(PeekError::BatchSize);
        }
        let messages = envelopes
            .into_iter()
            .map(Envelope::into_message)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Body::Batch(messages))
    } else {
        let envelope: Envelope = serde_json::from_str(text).map_err(|e| classify(&e))?;
        Ok(Body::Single(envelope.into_message()?))
    }
}

/// Syntax errors are parse errors (-32700); well-formed JSON of the wrong shape (duplicate
/// members, wrong types) is an invalid request.
fn classify(error: &serde_json::Error) -> PeekError {
    match error.classify() {
        serde_json::error::Category::Data => PeekError::NotJsonRpc("unexpected member or type"),
        _ => PeekError::NotJson,
    }
}

/// The envelope as sent. Unknown members are skipped; known ones twice are an error. Read by
/// hand rather than derived: a derived struct also accepts an array of positional fields
/// (`["2.0","tools/list",1,null,null,null]`), which no JSON-RPC peer reads as a message, and
/// skips unknown members with `IgnoredAny` (see [`Skipped`]).
struct Envelope {
    jsonrpc: Option<String>,
    method: Option<String>,
    id: Option<Value>,
    params: Option<Params>,
    result: Option<Skipped>,
    error: Option<Skipped>,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvelopeVisitor;
        impl<'de> Visitor<'de> for EnvelopeVisitor {
            type Value = Envelope;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON-RPC message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
                let mut envelope = Envelope {
                    jsonrpc: None,
                    method: None,
                    id: None,
                    params: None,
                    result: None,
                    error: None,
                };
                let mut seen = [false; ENVELOPE_MEMBERS.len()];
                while let Some(member) = map.next_key_seed(MemberOf(&ENVELOPE_MEMBERS))? {
                    let Some(index) = member else {
                        map.next_value::<Skipped>()?;
                        continue;
                    };
                    if std::mem::replace(&mut seen[index], true) {
                        return Err(de::Error::custom(format!(
                            "duplicate member `{}`",
                            ENVELOPE_MEMBERS[index]
                        )));
                    }
                    match index {
                        0 => envelope.jsonrpc = map.next_value()?,
                        1 => envelope.method = map.next_value()?,
                        2 => envelope.id = Some(map.next_value::<Id>()?.0),
                        3 => envelope.params = map.next_value()?,
                        4 => envelope.result = map.next_value()?,
                        _ => envelope.error = map.next_value()?,
                    }
                }
                Ok(envelope)
            }
        }
        deserializer.deserialize_map(EnvelopeVisitor)
    }
}

/// The envelope members policy reads, by index.
const ENVELOPE_MEMBERS: [&str; 6] = ["jsonrpc", "method", "id", "params", "result", "error"];

/// The `params` members policy reads, by index.
const PARAMS_MEMBERS: [&str; 3] = ["name", "uri", "ref"];

/// Reads a member name as its index among the names given (`None`: a member nobody reads),
/// without building a `String` for it: escaped spellings (`"n\u0061me"`) are decoded by
/// serde_json into its scratch space and compared there.
struct MemberOf<'names>(&'names [&'static str]);

impl<'de> de::DeserializeSeed<'de> for MemberOf<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for MemberOf<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: de::Error>(self, name: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|known| *known == name))
    }
}

/// An `id` as present (even as `null`): a string, a number or null.
struct Id(Value);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            value @ (Value::String(_) | Value::Number(_) | Value::Null) => Ok(Id(value)),
            _ => Err(de::Error::custom("id must be a string, a number or null")),
        }
    }
}

/// A value nobody reads, checked as a generic parser checks it. serde's `IgnoredAny` only
/// checks syntax, so it lets through what `JSON.parse`-like readers refuse or read
/// differently — numbers beyond an f64 (`1e999`, found by the fuzzer) and lone surrogate
/// escapes (`"\ud800"`). Reading each value through `deserialize_any` makes serde_json
/// apply the same checks as when it builds a `Value`, without building one.
struct Skipped;

impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SkipVisitor;
        impl<'de> Visitor<'de> for SkipVisitor {
            type Value = Skipped;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skipped, E> {
                Ok(Skipped)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skipped, E> {
                Ok(Skipped)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skipped, E> {
                Ok(Skipped)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skipped, E> {
                Ok(Skipped)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Skipped, E> {
                Ok(Skipped)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Skipped, E> {
                Ok(Skipped)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skipped, A::Error> {
                while seq.next_element::<Skipped>()?.is_some() {}
                Ok(Skipped)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skipped, A::Error> {
                while map.next_key::<Skipped>()?.is_some() {
                    map.next_value::<Skipped>()?;
                }
                Ok(Skipped)
            }
        }
        deserializer.deserialize_any(SkipVisitor)
    }
}

/// The members of `params` policy reads; the rest (tool arguments) is skipped without
/// being built. Positional (array) params carry no name.
#[derive(Default)]
struct Params {
    name: Option<Value>,
    uri: Option<Value>,
    /// `completion/complete`'s reference to the prompt or resource template completed.
    reference: Option<Value>,
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ParamsVisitor;
        impl<'de> Visitor<'de> for ParamsVisitor {
            type Value = Params;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object or an array")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
                let mut params = Params::default();
                while let Some(member) = map.next_key_seed(MemberOf(&PARAMS_MEMBERS))? {
                    let (slot, index) = match member {
                        Some(0) => (&mut params.name, 0),
                        Some(1) => (&mut params.uri, 1),
                        Some(_) => (&mut params.reference, 2),
                        None => {
                            map.next_value::<Skipped>()?;
                            continue;
                        }
                    };
                    if slot.is_some() {
                        return Err(de::Error::custom(format!(
                            "duplicate member `{}`",
                            PARAMS_MEMBERS[index]
                        )));
                    }
                    *slot = Some(map.next_value::<Value>()?);
                }
                Ok(params)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Params, A::Error> {
                while seq.next_element::<Skipped>()?.is_some() {}
                Ok(Params::default())
            }
        }
        deserializer.deserialize_any(ParamsVisitor)
    }
}

impl Envelope {
    fn into_message(self) -> Result<Message, PeekError> {
        if self.jsonrpc.as_deref() != Some("2.0") {
            return Err(PeekError::NotJsonRpc("jsonrpc must be \"2.0\""));
        }
        let kind = match (&self.method, &self.id) {
            (Some(_), Some(_)) => Kind::Request,
            (Some(_), None) => Kind::Notification,
            (None, Some(_)) if self.result.is_some() != self.error.is_some() => Kind::Response,
            _ => {
                return Err(PeekError::NotJsonRpc(
                    "neither a request, a notification nor a response",
                ))
            }
        };
        if kind != Kind::Response && (self.result.is_some() || self.error.is_some()) {
            return Err(PeekError::NotJsonRpc(
                "a request carries no result or error",
            ));
        }
        let params = self.params.unwrap_or_default();
        let target = match self.method.as_deref() {
            Some("tools/call") => Some(Target::Tool(string(params.name, "tools/call", "name")?)),
            Some("prompts/get") => {
                Some(Target::Prompt(string(params.name, "prompts/get", "name")?))
            }
            Some(method @ ("resources/read" | "resources/subscribe" | "resources/unsubscribe")) => {
                let method: &'static str = match method {
                    "resources/read" => "resources/read",
                    "resources/subscribe" => "resources/subscribe",
                    _ => "resources/unsubscribe",
                };
                Some(Target::Resource(string(params.uri, method, "uri")?))
            }
            // Completing a prompt's or a resource template's argument is judged as using it:
            // a refused prompt's completions are not for this caller either.
            Some("completion/complete") => completed(params.reference)?,
            _ => None,
        };
        Ok(Message {
            kind,
            method: self.method,
            target,
            id: self.id,
        })
    }
}

/// What a `completion/complete` refers to (`params.ref`): the prompt by name, the resource
/// template by URI template; another kind of reference names nothing the rules know.
fn completed(reference: Option<Value>) -> Result<Option<Target>, PeekError> {
    const METHOD: &str = "completion/complete";
    let Some(Value::Object(mut reference)) = reference else {
        return Err(PeekError::MissingTarget(METHOD, "ref"));
    };
    Ok(match reference.get("type").and_then(Value::as_str) {
        Some("ref/prompt") => Some(Target::Prompt(string(
            reference.remove("name"),
            METHOD,
            "ref.name",
        )?)),
        Some("ref/resource") => Some(Target::Resource(string(
            reference.remove("uri"),
            METHOD,
            "ref.uri",
        )?)),
        _ => None,
    })
}

fn string(
    value: Option<Value>,
    method: &'static str,
    member: &'static str,
) -> Result<String, PeekError> {
    match value {
        Some(Value::String(text)) => Ok(text),
        _ => Err(PeekError::MissingTarget(method, member)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> Result<Message, PeekError> {
        match peek(body.as_bytes())? {
            Body::Single(message) => Ok(message),
            Body::Batch(_) => panic!("batch"),
        }
    }

    #[test]
    fn reads_what_policy_needs() {
        let call = one(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"deploy","arguments":{"name":"x","uri":[1,{"a":2}]}}}"#).unwrap();
        assert_eq!(call.kind, Kind::Request);
        assert_eq!(call.method.as_deref(), Some("tools/call"));
        assert_eq!(call.target, Some(Target::Tool("deploy".into())));
        assert_eq!(call.id, Some(Value::from(7)));
        let read = one(r#"{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///r/x"}}"#).unwrap();
        assert_eq!(read.target, Some(Target::Resource("file:///r/x".into())));
        let prompt =
            one(r#"{"jsonrpc":"2.0","id":null,"method":"prompts/get","params":{"name":"p"}}"#)
                .unwrap();
        assert_eq!(prompt.target, Some(Target::Prompt("p".into())));
        assert_eq!(prompt.id, Some(Value::Null));
        let note = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(note.kind, Kind::Notification);
        let response = one(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#).unwrap();
        assert_eq!(response.kind, Kind::Response);
        let list = one(r#" {"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}} "#).unwrap();
        assert_eq!(list.target, None);
        // Escaped spellings are the same names to every JSON parser.
        let escaped = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools\/call","par\u0061ms":{"n\u0061me":"dep\u006coy"}}"#).unwrap();
        assert_eq!(escaped.target, Some(Target::Tool("deploy".into())));
    }

    #[test]
    fn a_completion_targets_the_prompt_or_template_it_completes() {
        let complete = |reference: &str| {
            one(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{{"ref":{reference},"argument":{{"name":"a","value":""}}}}}}"#
            ))
        };
        assert_eq!(
            complete(r#"{"type":"ref/prompt","name":"secret_plan"}"#)
                .unwrap()
                .target,
            Some(Target::Prompt("secret_plan".into()))
        );
        assert_eq!(
            complete(r#"{"type":"ref/resource","uri":"file:///logs/{day}"}"#)
                .unwrap()
                .target,
            Some(Target::Resource("file:///logs/{day}".into()))
        );
        // As JSON.parse reads a repeated member: the last one.
        assert_eq!(
            complete(r#"{"type":"ref/prompt","name":"hello","name":"secret_plan"}"#)
                .unwrap()
                .target,
            Some(Target::Prompt("secret_plan".into()))
        );
        assert_eq!(
            complete(r#"{"type":"ref/other","name":"x"}"#)
                .unwrap()
                .target,
            None
        );
        for broken in [
            r#"{"type":"ref/prompt"}"#,
            r#"{"type":"ref/prompt","name":7}"#,
            r#"{"type":"ref/resource","name":"x"}"#,
            r#""ref/prompt""#,
        ] {
            assert!(
                matches!(complete(broken), Err(PeekError::MissingTarget(..))),
                "{broken}"
            );
        }
        let twice = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a"},"ref":{"type":"ref/prompt","name":"b"}}}"#,
        );
        assert!(twice.is_err());
    }

    #[test]
    fn anything_ambiguous_is_refused() {
        let refused = [
            ("", PeekError::NotJson),
            ("{", PeekError::NotJson),
            ("{}{}", PeekError::NotJson),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"} x"#,
                PeekError::NotJson,
            ),
            ("\u{feff}{}", PeekError::NotJson),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list"}"#,
                PeekError::NotJsonRpc("unexpected member or type"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
                PeekError::NotJsonRpc("unexpected member or type"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
                PeekError::MissingTarget("tools/call", "name"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["deploy"]}"#,
                PeekError::MissingTarget("tools/call", "name"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
                PeekError::MissingTarget("tools/call", "name"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"x"}}"#,
                PeekError::MissingTarget("resources/read", "uri"),
            ),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#,
                PeekError::NotJsonRpc("jsonrpc must be \"2.0\""),
            ),
            (
                r#"{"id":1,"method":"tools/list"}"#,
                PeekError::NotJsonRpc("jsonrpc must be \"2.0\""),
            ),
            (
                r#"{"jsonrpc":"2.0","id":{},"method":"tools/list"}"#,
                PeekError::NotJsonRpc("unexpected member or type"),
            ),
            (
                r#"{"jsonrpc":"2.0","method":5}"#,
                PeekError::NotJsonRpc("unexpected member or type"),
            ),
            (
                r#"{"jsonrpc":"2.0"}"#,
                PeekError::NotJsonRpc("neither a request, a notification nor a response"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"x","result":1}"#,
                PeekError::NotJsonRpc("a request carries no result or error"),
            ),
            ("[]", PeekError::BatchSize),
            ("5", PeekError::NotJsonRpc("unexpected member or type")),
            // Numbers beyond an f64 and lone surrogates, even where nobody reads them:
            // generic parsers refuse them or read them their own way (found by the fuzzer).
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"n":1e999}}}"#,
                PeekError::NotJson,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","x":[-1e400]}"#,
                PeekError::NotJson,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"n":1e999}}"#,
                PeekError::NotJson,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":"\ud800"}}"#,
                PeekError::NotJson,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[{"\udc00":1}]}"#,
                PeekError::NotJson,
            ),
            // A message is an object, never an array of positional fields.
            (
                r#"[["2.0","tools/list",1,null,null,null]]"#,
                PeekError::NotJsonRpc("unexpected member or type"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{},"result":{}}"#,
                PeekError::NotJsonRpc("unexpected member or type"),
            ),
        ];
        for (body, expected) in refused {
            assert_eq!(peek(body.as_bytes()), Err(expected), "{body}");
        }
        // Invalid UTF-8, even inside a member nobody reads (found by the fuzzer).
        let mut invalid =
            br#"{"jsonrpc":"2.0","id":"a","method":"tools/list","params":{"x":"#.to_vec();
        invalid.extend_from_slice(b"\"\x99\x98\"}}");
        assert_eq!(peek(&invalid), Err(PeekError::NotJson));
    }

    #[test]
    fn batches_are_read_message_by_message() {
        let body = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},{"jsonrpc":"2.0","method":"notifications/x"}]"#;
        let Body::Batch(messages) = peek(body.as_bytes()).unwrap() else {
            panic!("batch")
        };
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].target, Some(Target::Tool("a".into())));
        assert_eq!(messages[1].kind, Kind::Notification);
        let big = format!(
            "[{}]",
            vec![r#"{"jsonrpc":"2.0","method":"n"}"#; 65].join(",")
        );
        assert_eq!(peek(big.as_bytes()), Err(PeekError::BatchSize));
        // One bad message refuses the batch.
        let bad = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/call"}]"#;
        assert!(peek(bad.as_bytes()).is_err());
    }

    use proptest::prelude::*;

    /// What a generic JSON parser (the kind an upstream uses) reads from an accepted body
    /// must be what `peek` read: same methods, same names.
    pub(super) fn agrees_with_a_generic_parser(bytes: &[u8]) -> bool {
        let Ok(body) = peek(bytes) else { return true };
        let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
            return false;
        };
        let values: Vec<&Value> = match &value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        values.len() == body.messages().len()
            && values.iter().zip(body.messages()).all(|(v, m)| {
                let name = match m.method.as_deref() {
                    Some("resources/read" | "resources/subscribe" | "resources/unsubscribe") => {
                        v["params"]["uri"].as_str()
                    }
                    Some("tools/call" | "prompts/get") => v["params"]["name"].as_str(),
                    Some("completion/complete") => {
                        let reference = &v["params"]["ref"];
                        match reference["type"].as_str() {
                            Some("ref/prompt") => reference["name"].as_str(),
                            Some("ref/resource") => reference["uri"].as_str(),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                v["method"].as_str() == m.method.as_deref()
                    && name == m.target.as_ref().map(|t| t.name())
            })
    }

    fn escape_some(text: &str, mask: u64) -> String {
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                if mask >> (i % 64) & 1 == 1 {
                    format!("\\u{:04x}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn generated_calls_are_read_as_any_parser_reads_them(
            method in prop::sample::select(vec!["tools/call", "prompts/get", "resources/read", "tools/list", "x/y"]),
            name in "[a-z_:/.*]{1,12}",
            id in 0u32..1000,
            mask in any::<u64>(),
            space in "[ \t\r\n]{0,3}",
            extra in "[a-z]{0,6}",
        ) {
            let member = if method.starts_with("resources/") { "uri" } else { "name" };
            let body = format!(
                r#"{space}{{"jsonrpc":"2.0",{space}"id":{id},"method":"{}","params":{{"{extra}x":[1,{{"name":"decoy"}}],"{}":"{}"}}}}{space}"#,
                escape_some(method, mask),
                escape_some(member, mask >> 7),
                escape_some(&name, mask >> 13),
            );
            let message = match peek(body.as_bytes()) {
                Ok(Body::Single(message)) => message,
                other => return Err(TestCaseError::fail(format!("{other:?} for {body}"))),
            };
            prop_assert_eq!(message.method.as_deref(), Some(method));
            let expected = match method {
                "tools/call" => Some(Target::Tool(name.clone())),
                "prompts/get" => Some(Target::Prompt(name.clone())),
                "resources/read" => Some(Target::Resource(name.clone())),
                _ => None,
            };
            prop_assert_eq!(message.target, expected);
            prop_assert!(agrees_with_a_generic_parser(body.as_bytes()));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_never_disagree(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            prop_assert!(agrees_with_a_generic_parser(&bytes));
        }

        #[test]
        fn raw_bytes_spliced_into_a_call_never_disagree(
            at in 0usize..120,
            spliced in prop::collection::vec(any::<u8>(), 1..4),
        ) {
            let base = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"x":"decoy","name":"deploy"}}"#;
            let at = at.min(base.len());
            let mut body = base[..at].to_vec();
            body.extend_from_slice(&spliced);
            body.extend_from_slice(&base[at..]);
            prop_assert!(agrees_with_a_generic_parser(&body));
        }

        #[test]
        fn mangled_completions_never_disagree(
            cut in 0usize..140,
            insert in "[{}\\[\\],:\"a-z0-9/ ]{0,6}",
        ) {
            let base = r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"secret"},"argument":{"name":"a","value":""}}}"#;
            let cut = cut.min(base.len());
            let mangled = format!("{}{}{}", &base[..cut], insert, &base[cut..]);
            prop_assert!(agrees_with_a_generic_parser(mangled.as_bytes()));
        }

        #[test]
        fn mangled_json_rpc_never_disagrees(
            cut in 0usize..120,
            insert in "[{}\\[\\],:\"a-z0-9 ]{0,6}",
        ) {
            let base = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy","arguments":{"name":"x"}}}"#;
            let cut = cut.min(base.len());
            let mangled = format!("{}{}{}", &base[..cut], insert, &base[cut..]);
            prop_assert!(agrees_with_a_generic_parser(mangled.as_bytes()));
        }
    }
}
