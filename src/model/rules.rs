//! A route's MCP rules, compiled: which caller may do what to which tool, prompt or
//! resource. Pure data and one pure decision function; `config` builds it, the pipeline
//! (inline and `/verify`) asks it.
//!
//! Order of decision for one message:
//! 1. an API key's own tool list (`[[api_keys]] tools`) is a hard limit;
//! 2. the route's rules, in order, first match wins;
//! 3. with `tool_scopes`, the OAuth convention: `tools/call NAME` needs `mcp:tool:NAME` or
//!    `mcp:tool:*`;
//! 4. the route's default — for operations on a named thing (`tools/call`, `prompts/get`,
//!    `resources/read|subscribe|unsubscribe`; phase 7 judges `completion/complete` of a
//!    prompt or a resource template as `prompts/get` / `resources/read` of it). Protocol
//!    plumbing (`initialize`, `ping`, lists, notifications, responses) is allowed unless a
//!    rule says otherwise: lists are filtered instead, and refusing `initialize` would only
//!    break clients.

use crate::glob::Glob;

/// The named thing a message acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tool(String),
    Prompt(String),
    Resource(String),
}

impl Target {
    pub fn name(&self) -> &str {
        match self {
            Target::Tool(name) | Target::Prompt(name) | Target::Resource(name) => name,
        }
    }
}

/// The scope prefix of the `tool_scopes` convention.
pub const TOOL_SCOPE_PREFIX: &str = "mcp:tool:";
/// The rule name reported when an API key's tool list refuses a call.
pub const API_KEY_TOOLS_RULE: &str = "api_key.tools";
/// The rule name reported for the route's default.
pub const DEFAULT_RULE: &str = "default";
/// The rule name reported when a resource URI is refused for not being in canonical form.
pub const CANONICAL_URI_RULE: &str = "resource.canonical_uri";

/// Whether a client's resource URI is already in the form an upstream resolves it to: the
/// WHATWG URL serialization, which the TypeScript SDK (`new URL`) and the Python SDK
/// (pydantic's URL type) both apply before they look a resource up. Rules match URIs as
/// text, so `file:///reports/../secret/b`, `FILE:///secret/b`, `file://localhost/secret/b`,
/// `file:///secret\b` or a URI with blanks around it would be judged as one URI and read
/// as another; none of them is in canonical form. (`https://host` without its `/` is not
/// either: the upstream reads `https://host/`.) Nor is a URI with an escape that a server
/// decoding it (Node's `fileURLToPath`, Python's `unquote`) reads as something a rule could
/// have matched as text: a letter, a digit, `-._~`, `/`, `\`, `%`, `;`, `?`, `#`, a control
/// character, or the overlong lead bytes `%C0` / `%C1` (`file:///%70rivate`,
/// `file:///reports/..%2Fsecret`).
pub fn is_canonical_resource_uri(uri: &str) -> bool {
    url::Url::parse(uri).is_ok_and(|parsed| parsed.as_str() == uri) && !has_ambiguous_escape(uri)
}

fn has_ambiguous_escape(uri: &str) -> bool {
    let hex = |byte: u8| char::from(byte).to_digit(16);
    uri.as_bytes().windows(3).any(|window| {
        let (Some(high), Some(low)) = (hex(window[1]), hex(window[2])) else {
            return false;
        };
        let decoded = (high * 16 + low) as u8;
        window[0] == b'%'
            && (decoded.is_ascii_alphanumeric()
                || b"-._~/\\%;?#".contains(&decoded)
                || decoded.is_ascii_control()
                || decoded == 0xC0
                || decoded == 0xC1)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultEffect {
    Allow,
    Deny,
}

/// A route's rules (`[routes.mcp]`).
#[derive(Debug, Clone)]
pub struct McpPolicy {
    pub rules: Vec<Rule>,
    pub default: DefaultEffect,
    pub tool_scopes: bool,
    /// Largest body read to decide (over it: 413).
    pub max_body_bytes: usize,
    /// `/verify` without a forwarded body or `Mcp-Method`: pass (`true`) or refuse.
    pub undetermined_allowed: bool,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// Empty = any method.
    pub methods: Vec<Glob>,
    /// Set = only `tools/call` of a matching tool.
    pub tools: Option<Vec<Glob>>,
    pub prompts: Option<Vec<Glob>>,
    pub resources: Option<Vec<Glob>>,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub enum Action {
    Allow,
    Deny,
    /// All scopes; and, for each list that is set, one of its entries.
    Require(Requirement),
}

#[derive(Debug, Clone, Default)]
pub struct Requirement {
    pub scopes: Vec<String>,
    pub groups: Vec<String>,
    pub subjects: Vec<String>,
    pub clients: Vec<String>,
}

/// The caller, as rules see it (borrowed from the verified principal).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub subject: &'a str,
    pub scopes: &'a [String],
    pub groups: &'a [String],
    pub client_id: Option<&'a str>,
    /// An API key's tool list.
    pub tools: Option<&'a [Glob]>,
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused by `rule`; no token would change that.
    Deny {
        rule: String,
    },
    /// A token with these scopes would be allowed (step-up).
    NeedScopes {
        scopes: Vec<String>,
        rule: String,
    },
}

impl Rule {
    fn matches(&self, method: &str, target: Option<&Target>) -> bool {
        if !self.methods.is_empty() && !self.methods.iter().any(|g| g.matches(method)) {
            return false;
        }
        let restricted = self.tools.is_some() || self.prompts.is_some() || self.resources.is_some();
        if !restricted {
            return true;
        }
        let (list, name) = match target {
            Some(Target::Tool(name)) => (&self.tools, name),
            Some(Target::Prompt(name)) => (&self.prompts, name),
            Some(Target::Resource(uri)) => (&self.resources, uri),
            None => return false,
        };
        list.as_ref()
            .is_some_and(|globs| globs.iter().any(|g| g.matches(name)))
    }

    /// Whether a message with this method could ever have a target this rule names (for
    /// `check`: a rule that can never match is refused).
    pub fn can_match(&self) -> bool {
        let method_ok = |method: &str| {
            self.methods.is_empty() || self.methods.iter().any(|g| g.matches(method))
        };
        let restricted = self.tools.is_some() || self.prompts.is_some() || self.resources.is_some();
        !restricted
            || (self.tools.is_some() && method_ok("tools/call"))
            || (self.prompts.is_some() && method_ok("prompts/get"))
            || (self.resources.is_some()
                && [
                    "resources/read",
                    "resources/subscribe",
                    "resources/unsubscribe",
                ]
                .iter()
                .any(|m| method_ok(m)))
    }

    /// Matches every message: rules after it can never match.
    pub fn is_catch_all(&self) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|g| g.as_str() == "*"))
            && self.tools.is_none()
            && self.prompts.is_none()
            && self.resources.is_none()
    }
}

fn decide(rule: &Rule, caller: Option<&Caller<'_>>) -> Verdict {
    let deny = || Verdict::Deny {
        rule: rule.name.clone(),
    };
    match &rule.action {
        Action::Allow => Verdict::Allow,
        Action::Deny => deny(),
        Action::Require(requirement) => {
            let Some(caller) = caller else { return deny() };
            let one_of = |list: &[String], value: Option<&str>| {
                list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v))
            };
            let identity_ok = one_of(&requirement.subjects, Some(caller.subject))
                && one_of(&requirement.clients, caller.client_id)
                && (requirement.groups.is_empty()
                    || caller.groups.iter().any(|g| requirement.groups.contains(g)));
            if !identity_ok {
                return deny();
            }
            let missing: Vec<String> = requirement
                .scopes
                .iter()
                .filter(|s| !caller.scopes.contains(s))
                .cloned()
                .collect();
            if missing.is_empty() {
                Verdict::Allow
            } else {
                Verdict::NeedScopes {
                    scopes: missing,
                    rule: rule.name.clone(),
                }
            }
        }
    }
}

impl McpPolicy {
    /// Whether any rule names resources (their URIs then decide, and must be canonical).
    pub fn names_resources(&self) -> bool {
        self.rules.iter().any(|rule| rule.resources.is_some())
    }

    /// The decision for one message (`method` absent: a response, always allowed).
    pub fn evaluate(
        &self,
        caller: Option<&Caller<'_>>,
        method: Option<&str>,
        target: Option<&Target>,
    ) -> Verdict {
        let Some(method) = method else {
            return Verdict::Allow;
        };
        if let (Some(Target::Tool(name)), Some(tools)) = (target, caller.and_then(|c| c.tools)) {
            if !tools.iter().any(|g| g.matches(name)) {
                return Verdict::Deny {
                    rule: API_KEY_TOOLS_RULE.into(),
                };
            }
        }
        if let Some(rule) = self.rules.iter().find(|r| r.matches(method, target)) {
            return decide(rule, caller);
        }
        if let (true, Some(Target::Tool(name))) = (self.tool_scopes, target) {
            let wildcard = format!("{TOOL_SCOPE_PREFIX}*");
            let specific = format!("{TOOL_SCOPE_PREFIX}{name}");
            let held =
                caller.is_some_and(|c| c.scopes.iter().any(|s| *s == specific || *s == wildcard));
            return if held {
                Verdict::Allow
            } else {
                Verdict::NeedScopes {
                    scopes: vec![specific],
                    rule: "tool_scopes".into(),
                }
            };
        }
        match (target, self.default) {
            (Some(_), DefaultEffect::Deny) => Verdict::Deny {
                rule: DEFAULT_RULE.into(),
            },
            _ => Verdict::Allow,
        }
    }
}

/// The compiled rules as `check` prints them, one line each, in evaluation order.
pub fn describe(policy: &McpPolicy) -> Vec<String> {
    let list = |globs: &[Glob]| globs.iter().map(Glob::as_str).collect::<Vec<_>>().join(" ");
    let mut lines = vec![format!(
        "mcp: default={} tool_scopes={} max_body_bytes={}",
        match policy.default {
            DefaultEffect::Allow => "allow",
            DefaultEffect::Deny => "deny",
        },
        policy.tool_scopes,
        policy.max_body_bytes
    )];
    for rule in &policy.rules {
        let mut matches = Vec::new();
        if !rule.methods.is_empty() {
            matches.push(format!("methods=[{}]", list(&rule.methods)));
        }
        for (label, globs) in [
            ("tools", &rule.tools),
            ("prompts", &rule.prompts),
            ("resources", &rule.resources),
        ] {
            if let Some(globs) = globs {
                matches.push(format!("{label}=[{}]", list(globs)));
            }
        }
        let action = match &rule.action {
            Action::Allow => "allow".to_string(),
            Action::Deny => "deny".to_string(),
            Action::Require(r) => {
                let mut parts = vec!["require".to_string()];
                for (label, values) in [
                    ("scopes", &r.scopes),
                    ("groups", &r.groups),
                    ("subjects", &r.subjects),
                    ("clients", &r.clients),
                ] {
                    if !values.is_empty() {
                        parts.push(format!("{label}=[{}]", values.join(" ")));
                    }
                }
                parts.join(" ")
            }
        };
        let matches = if matches.is_empty() {
            "every message".to_string()
        } else {
            matches.join(" ")
        };
        lines.push(format!("rule {}: {matches} -> {action}", rule.name));
    }
    if policy.tool_scopes {
        lines.push("then tools/call NAME needs scope mcp:tool:NAME or mcp:tool:*".into());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(list: &[&str]) -> Vec<Glob> {
        list.iter().map(|g| Glob::new(g).unwrap()).collect()
    }

    fn rule(name: &str, tools: &[&str], action: Action) -> Rule {
        Rule {
            name: name.into(),
            methods: Vec::new(),
            tools: Some(globs(tools)),
            prompts: None,
            resources: None,
            action,
        }
    }

    fn caller<'a>(
        scopes: &'a [String],
        groups: &'a [String],
        tools: Option<&'a [Glob]>,
    ) -> Caller<'a> {
        Caller {
            subject: "alice",
            scopes,
            groups,
            client_id: Some("app"),
            tools,
        }
    }

    fn tool(name: &str) -> Target {
        Target::Tool(name.into())
    }

    #[test]
    fn first_match_wins_then_convention_then_default() {
        let policy = McpPolicy {
            rules: vec![
                rule("no-deletes", &["delete_*"], Action::Deny),
                rule(
                    "deploy-needs-admin",
                    &["deploy"],
                    Action::Require(Requirement {
                        scopes: vec!["admin".into()],
                        ..Requirement::default()
                    }),
                ),
                rule(
                    "staff-only",
                    &["payroll"],
                    Action::Require(Requirement {
                        groups: vec!["staff".into()],
                        ..Requirement::default()
                    }),
                ),
                rule("reads", &["get_*"], Action::Allow),
            ],
            default: DefaultEffect::Deny,
            tool_scopes: true,
            max_body_bytes: 1 << 20,
            undetermined_allowed: false,
        };
        let none: Vec<String> = vec![];
        let admin = vec!["admin".to_string()];
        let search_scope = vec!["mcp:tool:search".to_string()];
        let staff = vec!["staff".to_string()];
        let who = caller(&none, &none, None);
        let call = |c: &Caller<'_>, name: &str| {
            policy.evaluate(Some(c), Some("tools/call"), Some(&tool(name)))
        };

        assert_eq!(
            call(&who, "delete_repo"),
            Verdict::Deny {
                rule: "no-deletes".into()
            }
        );
        assert_eq!(
            call(&who, "deploy"),
            Verdict::NeedScopes {
                scopes: vec!["admin".into()],
                rule: "deploy-needs-admin".into()
            }
        );
        assert_eq!(call(&caller(&admin, &none, None), "deploy"), Verdict::Allow);
        assert_eq!(
            call(&who, "payroll"),
            Verdict::Deny {
                rule: "staff-only".into()
            }
        );
        assert_eq!(
            call(&caller(&none, &staff, None), "payroll"),
            Verdict::Allow
        );
        assert_eq!(call(&who, "get_file"), Verdict::Allow);
        // No rule: the mcp:tool: convention.
        assert_eq!(
            call(&who, "search"),
            Verdict::NeedScopes {
                scopes: vec!["mcp:tool:search".into()],
                rule: "tool_scopes".into()
            }
        );
        assert_eq!(
            call(&caller(&search_scope, &none, None), "search"),
            Verdict::Allow
        );
        let everything = vec!["mcp:tool:*".to_string()];
        assert_eq!(
            call(&caller(&everything, &none, None), "anything"),
            Verdict::Allow
        );
        // Plumbing is allowed; named operations without a rule follow the default.
        assert_eq!(
            policy.evaluate(Some(&who), Some("tools/list"), None),
            Verdict::Allow
        );
        assert_eq!(
            policy.evaluate(Some(&who), Some("initialize"), None),
            Verdict::Allow
        );
        assert_eq!(policy.evaluate(Some(&who), None, None), Verdict::Allow);
        assert_eq!(
            policy.evaluate(
                Some(&who),
                Some("prompts/get"),
                Some(&Target::Prompt("p".into()))
            ),
            Verdict::Deny {
                rule: DEFAULT_RULE.into()
            }
        );
        // No caller (public route): requirements cannot be met.
        assert_eq!(
            policy.evaluate(None, Some("tools/call"), Some(&tool("payroll"))),
            Verdict::Deny {
                rule: "staff-only".into()
            }
        );
    }

    #[test]
    fn an_api_keys_tool_list_is_a_hard_limit() {
        let policy = McpPolicy {
            rules: vec![rule("all", &["*"], Action::Allow)],
            default: DefaultEffect::Allow,
            tool_scopes: false,
            max_body_bytes: 1 << 20,
            undetermined_allowed: false,
        };
        let none: Vec<String> = vec![];
        let key_tools = globs(&["get_*", "list_*"]);
        let key = caller(&none, &none, Some(&key_tools));
        assert_eq!(
            policy.evaluate(Some(&key), Some("tools/call"), Some(&tool("get_x"))),
            Verdict::Allow
        );
        assert_eq!(
            policy.evaluate(Some(&key), Some("tools/call"), Some(&tool("delete_repo"))),
            Verdict::Deny {
                rule: API_KEY_TOOLS_RULE.into()
            }
        );
    }

    #[test]
    fn rules_that_can_never_match_are_recognised() {
        let mut r = rule("x", &["a"], Action::Deny);
        assert!(r.can_match());
        r.methods = globs(&["prompts/*"]);
        assert!(!r.can_match(), "tools listed, but only prompt methods");
        r.methods = globs(&["tools/*"]);
        assert!(r.can_match());
    }

    #[test]
    fn resource_uris_are_canonical_only_as_an_upstream_resolves_them() {
        for uri in [
            "file:///secret/b",
            "file:///C:/reports/x.pdf",
            "file:///reports/a%20b",
            "file:///reports/r%C3%A9sum%C3%A9.pdf",
            "file:///reports/%zz",
            "https://example.com/",
            "https://example.com/a/b?q=1#f",
            "mcp-notes:1",
            "custom://Host/Path",
            "ui://widget/1",
        ] {
            assert!(is_canonical_resource_uri(uri), "{uri} is canonical");
        }
        for uri in [
            "file:///x/../secret/b",
            "file:///./secret/b",
            "file:///reports/%2e%2e/secret/b",
            "file:///reports/.%2E/secret/b",
            "file:///%70rivate/x",
            "file:///reports/..%2Fsecret/b",
            "file:///reports/%2e%2e%5csecret",
            "file:///reports/%252e%252e/secret",
            "file:///reports/%00x",
            "file:///reports/%c0%ae%c0%ae/secret",
            "FILE:///secret/b",
            "file://localhost/secret/b",
            "file:///secret\\b",
            " file:///secret/b",
            "file:///secret/b ",
            "file:///sec\tret/b",
            "file:///sec\nret/b",
            "https://example.com",
            "https://EXAMPLE.com/",
            "https://example.com:443/",
            "https://example.com/a b",
            "notes/1",
            "/secret/b",
            "",
        ] {
            assert!(!is_canonical_resource_uri(uri), "{uri:?} is not canonical");
        }
    }

    proptest::proptest! {
        /// What the URL parser serializes is canonical unless it holds an ambiguous escape
        /// (an upstream's own form passes), and a canonical URI holds no dot segment an
        /// upstream would resolve away.
        #[test]
        fn canonical_resource_uris_are_fixed_points(text in "[a-zA-Z][a-zA-Z+.-]{0,6}:[ -~]{0,40}") {
            if let Ok(parsed) = url::Url::parse(&text) {
                proptest::prop_assert_eq!(
                    is_canonical_resource_uri(parsed.as_str()),
                    !has_ambiguous_escape(parsed.as_str())
                );
            }
            if is_canonical_resource_uri(&text) && text.starts_with("file:") {
                proptest::prop_assert!(!text.contains("/../") && !text.contains("/./"));
            }
        }
    }
}
