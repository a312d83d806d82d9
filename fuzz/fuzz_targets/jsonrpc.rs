//! `mcp::jsonrpc::peek`: phase 7's reading of request bodies on routes with MCP rules.
//!
//! Input: the bytes of a request body.
//!
//! Properties:
//! - never panics;
//! - whenever it accepts a body, a generic JSON parser (serde_json's `Value`, standing in
//!   for the upstream's) reads the same thing: the same number of messages, the same
//!   `method` each, and the same tool / prompt `name` or resource `uri` (a completion's
//!   `ref` included) — so the gateway
//!   never judges one call while the server executes another;
//! - a `tools/call`, `prompts/get` or `resources/*` message it accepts always has its
//!   target (a named operation is never judged as if it had none);
//! - a resource URI of a special scheme (`file`, `http`, …) called canonical
//!   (`model::rules::is_canonical_resource_uri`) holds no blank, no backslash and no dot
//!   segment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_auth_gateway::mcp::jsonrpc::{peek, Message};
use mcp_auth_gateway::model::rules::{is_canonical_resource_uri, Target};
use serde_json::Value;

fn target_of(value: &Value, method: Option<&str>) -> Option<String> {
    let member = match method? {
        "tools/call" | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
        "completion/complete" => {
            let reference = &value["params"]["ref"];
            let member = match reference["type"].as_str()? {
                "ref/prompt" => "name",
                "ref/resource" => "uri",
                _ => return None,
            };
            return reference[member].as_str().map(str::to_string);
        }
        _ => return None,
    };
    value["params"][member].as_str().map(str::to_string)
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = peek(data) else { return };
    let value: Value = serde_json::from_slice(data).expect("accepted bodies are JSON");
    let values: Vec<&Value> = match &value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let messages: &[Message] = body.messages();
    assert_eq!(values.len(), messages.len());
    for (value, message) in values.iter().zip(messages) {
        assert_eq!(value["method"].as_str(), message.method.as_deref());
        let expected = target_of(value, message.method.as_deref());
        assert_eq!(
            expected.as_deref(),
            message.target.as_ref().map(|t| t.name())
        );
        if matches!(
            message.method.as_deref(),
            Some(
                "tools/call"
                    | "prompts/get"
                    | "resources/read"
                    | "resources/subscribe"
                    | "resources/unsubscribe"
            )
        ) {
            assert!(message.target.is_some());
        }
        // (Special schemes: in another scheme's opaque path `\` and dot segments are plain
        // text to every WHATWG reader, SDKs included.)
        let special = |uri: &str| {
            ["file:", "http:", "https:", "ws:", "wss:", "ftp:"]
                .iter()
                .any(|scheme| uri.starts_with(scheme))
        };
        if let Some(Target::Resource(uri)) = &message.target {
            if is_canonical_resource_uri(uri) && special(uri) {
                assert!(
                    !uri.contains(|c: char| c.is_whitespace() || c == '\\'),
                    "{uri:?}"
                );
                assert!(!uri.contains("/../") && !uri.contains("/./"), "{uri:?}");
            }
        }
    }
});
