//! `[routes.mcp]` → [`McpPolicy`]: rules checked for what they can match, so that `check`
//! refuses a rule that never could (a tool list under prompt-only methods, a rule behind a
//! catch-all).

use super::Collector;
use crate::config::raw::{RawMcp, RawRateLimits, RawRule};
use crate::glob::Glob;
use crate::model::rate::{Rate, RouteLimits};
use crate::model::rules::{Action, DefaultEffect, McpPolicy, Requirement, Rule};

pub(super) fn compile_mcp(raw: &RawMcp, path: &str, c: &mut Collector) -> McpPolicy {
    let default = match raw.default.as_str() {
        "allow" => DefaultEffect::Allow,
        "deny" => DefaultEffect::Deny,
        other => {
            c.push(
                format!("{path}.default"),
                format!("{other:?} is not a default: use \"allow\" or \"deny\""),
            );
            DefaultEffect::Deny
        }
    };
    let max_body_bytes = raw.max_body_bytes.as_usize();
    if max_body_bytes == 0 || max_body_bytes > 64 * 1024 * 1024 {
        c.push(
            format!("{path}.max_body_bytes"),
            format!("{max_body_bytes} is out of range: use 1 byte to 64MB (e.g. \"1MB\")"),
        );
    }
    let mut rules: Vec<Rule> = Vec::new();
    for (i, raw_rule) in raw.rules.iter().enumerate() {
        let rule_path = format!("{path}.rules[{i}]");
        let Some(rule) = compile_rule(raw_rule, i, &rule_path, c) else {
            continue;
        };
        if !rule.can_match() {
            c.push(
                rule_path.clone(),
                format!("rule {:?} can never match: its tools / prompts / resources need methods that include tools/call, prompts/get or resources/read|subscribe|unsubscribe", rule.name),
            );
        }
        if let Some(earlier) = rules.iter().find(|r| r.is_catch_all()) {
            c.push(
                rule_path.clone(),
                format!("rule {:?} can never match: rule {:?} before it matches every message (first match wins)", rule.name, earlier.name),
            );
        }
        if rules.iter().any(|r| r.name == rule.name) {
            c.push(
                format!("{rule_path}.name"),
                format!(
                    "{:?} is used twice: rule names must be unique (answers name the rule)",
                    rule.name
                ),
            );
        }
        rules.push(rule);
    }
    let undetermined_allowed = match raw.undetermined.as_str() {
        "deny" => false,
        "allow" => true,
        other => {
            c.push(
                format!("{path}.undetermined"),
                format!("{other:?}: use \"deny\" (refuse a /verify call nothing describes) or \"allow\""),
            );
            false
        }
    };
    McpPolicy {
        rules,
        default,
        tool_scopes: raw.tool_scopes,
        max_body_bytes,
        undetermined_allowed,
    }
}

fn globs(list: &[String], path: &str, c: &mut Collector) -> Vec<Glob> {
    list.iter()
        .enumerate()
        .filter_map(|(i, pattern)| c.ok(&format!("{path}[{i}]"), Glob::new(pattern)))
        .collect()
}

fn compile_rule(raw: &RawRule, index: usize, path: &str, c: &mut Collector) -> Option<Rule> {
    let name = if raw.name.is_empty() {
        format!("rule{index}")
    } else {
        raw.name.clone()
    };
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        c.push(
            format!("{path}.name"),
            format!("{name:?}: use letters, digits and - _ . : (it appears in answers and logs)"),
        );
    }
    let requires = !raw.scopes.is_empty()
        || !raw.groups.is_empty()
        || !raw.subjects.is_empty()
        || !raw.clients.is_empty();
    let action = match (raw.allow, raw.deny, requires) {
        (true, false, false) => Action::Allow,
        (false, true, false) => Action::Deny,
        (false, false, true) => Action::Require(Requirement {
            scopes: raw.scopes.clone(),
            groups: raw.groups.clone(),
            subjects: raw.subjects.clone(),
            clients: raw.clients.clone(),
        }),
        _ => {
            c.push(
                path,
                "give a rule exactly one outcome: allow = true, deny = true, or requirements (scopes, groups, subjects, clients)",
            );
            return None;
        }
    };
    for (field, list) in [
        ("tools", &raw.tools),
        ("prompts", &raw.prompts),
        ("resources", &raw.resources),
    ] {
        if list.as_ref().is_some_and(|l| l.is_empty()) {
            c.push(
                format!("{path}.{field}"),
                "an empty list matches nothing: remove it, or use [\"*\"]",
            );
        }
    }
    Some(Rule {
        name,
        methods: globs(&raw.methods, &format!("{path}.methods"), c),
        tools: raw
            .tools
            .as_ref()
            .map(|l| globs(l, &format!("{path}.tools"), c)),
        prompts: raw
            .prompts
            .as_ref()
            .map(|l| globs(l, &format!("{path}.prompts"), c)),
        resources: raw
            .resources
            .as_ref()
            .map(|l| globs(l, &format!("{path}.resources"), c)),
        action,
    })
}

pub(super) fn compile_limits(
    raw: &RawRateLimits,
    has_rules: bool,
    path: &str,
    c: &mut Collector,
) -> RouteLimits {
    let mut rate = |key: &str, text: &Option<String>| {
        text.as_ref()
            .and_then(|text| c.ok(&format!("{path}.{key}"), Rate::parse(text)))
    };
    let limits = RouteLimits {
        route: rate("route", &raw.route),
        per_principal: rate("per_principal", &raw.per_principal),
        per_tool: rate("per_tool", &raw.per_tool),
        tools: raw
            .tools
            .iter()
            .filter_map(|(tool, text)| {
                c.ok(&format!("{path}.tools.{tool}"), Rate::parse(text))
                    .map(|rate| (tool.clone(), rate))
            })
            .collect(),
    };
    if (limits.per_tool.is_some() || !limits.tools.is_empty()) && !has_rules {
        c.push(
            format!("{path}.per_tool"),
            "per-tool limits need [routes.mcp] on the route (the body is read to know the tool)",
        );
    }
    limits
}
