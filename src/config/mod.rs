//! Configuration: one TOML file, parsed once at the edge and compiled into runtime types.
//!
//! `raw` holds the serde shapes of the file (unknown keys are errors), `interpolate` expands
//! `${ENV}` in string values, `compile` turns the raw shapes into the types the pipeline runs
//! on and reports *every* problem with its key path. Code outside this module never sees an
//! unvalidated value. Reloading (day-two operations) will reuse `load` and swap the result.

mod compile;
pub mod duration;
mod interpolate;
pub mod raw;
pub mod secret;
mod settings;

use std::fmt;
use std::path::Path;

pub use settings::{
    Config, ForwardAuthSettings, Limits, LogFormat, LogSettings, PublicUrl, ServerSettings,
};

/// One thing wrong with a configuration file: where (`routes[1].upstream`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
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
            writeln!(f, "  {}: {}", problem.path, problem.message)?;
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
pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    let raw = parse(text, &|name| std::env::var(name).ok())?;
    compile::compile(raw, base_dir)
}

/// Parses TOML text into the raw shapes, expanding `${VAR}` with `lookup`.
pub fn parse(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<raw::RawConfig, ConfigError> {
    let mut value: toml::Value = toml::from_str(text)
        .map_err(|e| ConfigError::single("(toml)", e.to_string().trim_end().to_string()))?;
    let mut problems = Vec::new();
    interpolate::expand(&mut value, "", lookup, &mut problems);
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    raw::RawConfig::deserialize_value(value)
        .map_err(|e| ConfigError::single("(toml)", e.to_string().trim_end().to_string()))
}
