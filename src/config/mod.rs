//! Configuration: one TOML file, parsed once at the edge and compiled into runtime types.
//!
//! `raw` holds the serde shapes of the file (unknown keys are errors), `interpolate` expands
//! `${ENV}` in string values, `compile` turns the raw shapes into the types the pipeline runs
//! on and reports *every* problem with its key path. Code outside this module never sees an
//! unvalidated value. Reloading (day-two operations) will reuse `load` and swap the result.

pub mod authorization_server;
mod compile;
mod document;
pub mod duration;
pub mod identity_providers;
mod interpolate;
pub mod raw;
pub mod redis;
pub mod secret;
mod settings;
mod tls;

use std::fmt;
use std::path::Path;

pub use settings::{
    AdminSettings, Config, ForwardAuthSettings, Limits, LogFormat, LogSettings, PublicUrl,
    ServerSettings,
};

/// One thing wrong with a configuration file: where (`routes[1].upstream`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
    /// The line where `path` is written, when it is.
    pub line: Option<usize>,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            line: None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

/// Every problem found in a configuration, reported together so one edit fixes them all.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem::new(path, message)],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem{}):",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

/// Reads, interpolates, parses and compiles a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::single(
            path.display().to_string(),
            format!("cannot read the configuration file: {e}"),
        )
    })?;
    let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
    from_toml_str(&text, base_dir)
}

/// Compiles configuration text; relative file paths in it are resolved against `base_dir`.
/// Problems from every stage (syntax, types, unknown keys, `${VAR}`s, compilation) are
/// reported together, each with its key path and, where it is written, its line.
pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    match compile_text(text, base_dir) {
        Ok(mut config) => {
            config.source_sha256 = crate::auth::api_key::sha256(text.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Ok(config)
        }
        Err(mut error) => {
            document::Locator::new(text).locate(&mut error.problems);
            Err(error)
        }
    }
}

fn compile_text(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    let (raw, mut problems) = parse(text, &|name| std::env::var(name).ok())?;
    match compile::compile(raw, base_dir) {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(ConfigError { problems }),
        Err(compiled) => {
            // A value whose variable was missing is compiled as empty; its own complaint
            // would only repeat the real one.
            let unset: Vec<String> = problems.iter().map(|p| p.path.clone()).collect();
            problems.extend(
                compiled
                    .problems
                    .into_iter()
                    .filter(|p| !unset.iter().any(|path| p.path.starts_with(path.as_str()))),
            );
            Err(ConfigError { problems })
        }
    }
}

/// Parses TOML text into the raw shapes, expanding `${VAR}` with `lookup`. Syntax and type
/// errors end here (all of them, each with its key path); unknown keys and unset variables
/// are returned as problems alongside the parsed configuration so the compiler can report its
/// own too.
pub fn parse(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(raw::RawConfig, Vec<Problem>), ConfigError> {
    let syntax = document::syntax_problems(text);
    if !syntax.is_empty() {
        return Err(ConfigError { problems: syntax });
    }
    let mut value: toml::Value = toml::from_str(text)
        .map_err(|error| ConfigError::single("(toml)", error.message().to_string()))?;
    let mut problems = Vec::new();
    interpolate::expand(&mut value, "", lookup, &mut problems);
    match document::deserialize_all(value, &mut problems) {
        Some(raw) => Ok((raw, problems)),
        None => Err(ConfigError { problems }),
    }
}
