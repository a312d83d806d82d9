//! The configuration text as a document: where each key path is written (for the line in
//! every problem), and deserialization into the raw shapes that reports every type error
//! with its key path, not only the first.
//!
//! serde stops at the first error. To report them all, the value that failed is taken out of
//! the document and deserialization runs again (at most [`MAX_ROUNDS`] times); a missing
//! required key takes its whole table out. The raw configuration is used only when nothing
//! failed: a configuration with holes cut into it would only produce misleading follow-ups.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::Problem;

const MAX_ROUNDS: usize = 64;

/// One step of a key path: `routes[1].upstream` is `routes`, `[1]`, `upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

fn steps(path: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            if open > 0 {
                steps.push(Step::Key(rest[..open].to_string()));
            }
            rest = &rest[open..];
            while let Some(inner) = rest.strip_prefix('[') {
                let Some(close) = inner.find(']') else { break };
                if let Ok(index) = inner[..close].parse() {
                    steps.push(Step::Index(index));
                }
                rest = &inner[close + 1..];
            }
        } else {
            steps.push(Step::Key(rest.to_string()));
        }
    }
    steps
}

/// Where key paths are written in the text.
pub struct Locator<'t> {
    text: &'t str,
    root: Option<Spanned<DeTable<'t>>>,
}

impl<'t> Locator<'t> {
    pub fn new(text: &'t str) -> Self {
        let (root, errors) = DeTable::parse_recoverable(text);
        Self {
            text,
            root: errors.is_empty().then_some(root),
        }
    }

    /// The 1-based line of `path`, or of the closest enclosing key that is written (a
    /// missing key is reported where its table is).
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let root = self.root.as_ref()?;
        let mut span = None;
        let mut table: Option<&DeTable<'t>> = Some(root.get_ref());
        let mut array: Option<&[Spanned<DeValue<'t>>]> = None;
        for step in steps(path) {
            let value = match (&step, table, array) {
                (Step::Key(name), Some(t), _) => t
                    .iter()
                    .find(|(key, _)| key.get_ref().as_ref() == name)
                    .map(|(key, value)| {
                        span = Some(key.span());
                        value
                    }),
                (Step::Index(i), _, Some(items)) => items.get(*i).inspect(|value| {
                    span = Some(value.span());
                }),
                _ => None,
            };
            let Some(value) = value else { break };
            (table, array) = match value.get_ref() {
                DeValue::Table(t) => (Some(t), None),
                DeValue::Array(items) => (None, Some(items.as_ref())),
                _ => (None, None),
            };
        }
        let start = span?.start.min(self.text.len());
        Some(self.text[..start].matches('\n').count() + 1)
    }

    /// Adds the line to every problem whose key path is written in the text.
    pub fn locate(&self, problems: &mut [Problem]) {
        for problem in problems.iter_mut().filter(|p| p.line.is_none()) {
            problem.line = self.line_of(&problem.path);
        }
    }
}

/// Every TOML syntax error, with its line and column.
pub fn syntax_problems(text: &str) -> Vec<Problem> {
    let (_, errors) = DeTable::parse_recoverable(text);
    errors
        .iter()
        .map(|error| {
            let mut problem = Problem::new("(toml)", error.message().to_string());
            if let Some(span) = error.span() {
                let before = &text[..span.start.min(text.len())];
                problem.line = Some(before.matches('\n').count() + 1);
                problem.message = format!(
                    "{} (column {})",
                    problem.message,
                    before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1
                );
            }
            problem
        })
        .collect()
}

/// Deserializes `value` into `T`, reporting unknown keys and every type error with its key
/// path. `Some` only when nothing failed (unknown keys are reported either way).
pub fn deserialize_all<T: DeserializeOwned>(
    mut value: toml::Value,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let mut unknown = BTreeSet::new();
    let mut failed = false;
    for _ in 0..MAX_ROUNDS {
        let mut ignored = |path: serde_ignored::Path<'_>| {
            unknown.insert(key_path(&path));
        };
        let deserializer = serde_ignored::Deserializer::new(value.clone(), &mut ignored);
        match serde_path_to_error::deserialize::<_, T>(deserializer) {
            Ok(parsed) => {
                report_unknown(unknown, problems);
                return (!failed).then_some(parsed);
            }
            Err(error) => {
                failed = true;
                let at = error.path().to_string();
                let at = if at == "." { String::new() } else { at };
                let message = error.inner().message().to_string();
                // "missing field `listen`" is about `server.listen`, not about `server`.
                let (path, message, cut) = match missing_field(&message) {
                    Some(field) => (
                        join(&at, field),
                        "required key is missing: add it (see README.md, Configuration reference)"
                            .to_string(),
                        at.clone(),
                    ),
                    None => (at.clone(), message, at),
                };
                problems.push(Problem::new(
                    if path.is_empty() {
                        "(root)".into()
                    } else {
                        path
                    },
                    message,
                ));
                if cut.is_empty() || !remove(&mut value, &steps(&cut)) {
                    break;
                }
            }
        }
    }
    report_unknown(unknown, problems);
    None
}

fn report_unknown(unknown: BTreeSet<String>, problems: &mut Vec<Problem>) {
    for path in unknown {
        let problem = Problem::new(
            path,
            "unknown key: check its spelling against README.md (Configuration reference)",
        );
        if !problems.contains(&problem) {
            problems.push(problem);
        }
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Takes the value at `steps` out of `value`; false if there is none.
fn remove(value: &mut toml::Value, steps: &[Step]) -> bool {
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut current = value;
    for step in parents {
        let next = match (step, current) {
            (Step::Key(name), toml::Value::Table(table)) => table.get_mut(name),
            (Step::Index(i), toml::Value::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else { return false };
        current = next;
    }
    match (last, current) {
        (Step::Key(name), toml::Value::Table(table)) => table.remove(name).is_some(),
        // Replacing keeps the other items' indexes (and so their key paths) stable.
        (Step::Index(i), toml::Value::Array(items)) if *i < items.len() => {
            items[*i] = toml::Value::Table(toml::map::Map::new());
            true
        }
        _ => false,
    }
}

/// `routes[0].upstream_headers.X-Key` — the same form the compiler uses.
pub fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => join(&key_path(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[server]\nlisten = [\"x\"]\n\n[[routes]]\nid = \"a\"\n\n[[routes]]\nid = \"b\"\nupstream = \"u\"\n";

    #[test]
    fn key_paths_are_found_on_their_lines() {
        let locator = Locator::new(TEXT);
        assert_eq!(locator.line_of("server.listen"), Some(2));
        assert_eq!(locator.line_of("server.listen[0]"), Some(2));
        assert_eq!(locator.line_of("routes[1].upstream"), Some(9));
        assert_eq!(
            locator.line_of("routes[1].missing"),
            Some(7).or(locator.line_of("routes[1]"))
        );
        assert_eq!(locator.line_of("(toml)"), None);
    }

    #[test]
    fn steps_of_paths() {
        assert_eq!(
            steps("routes[2].upstream_headers.X-Key"),
            vec![
                Step::Key("routes".into()),
                Step::Index(2),
                Step::Key("upstream_headers".into()),
                Step::Key("X-Key".into()),
            ]
        );
    }
}
