//! Durations and byte sizes in the configuration, parsed by well-kept crates rather than by
//! hand: durations with `humantime` (`"250ms"`, `"30s"`, `"1.5m"`, `"1h 30m"`, or an integer
//! of seconds), sizes with `bytesize` (`"16KiB"`, `"4MB"`, `"4 MiB"`, or an integer of
//! bytes). Ranges are checked where each value is compiled, with its key path.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration as written in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match NumberOrText::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "expected a duration: a string such as \"30s\" or a number of seconds",
            )
        })? {
            NumberOrText::Number(s) => Ok(ConfigDuration(Duration::from_secs(s))),
            NumberOrText::Text(text) => parse(&text)
                .map(ConfigDuration)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parses a duration (`humantime` grammar: units ns, us, ms, s, m, h, d; fractions; sums);
/// a bare integer is seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).map_err(|error| {
        format!("invalid duration {text:?} ({error}): write e.g. \"500ms\", \"30s\", \"1.5m\", \"1h 30m\"")
    })
}

/// A byte size as written in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigBytes(pub u64);

impl<'de> Deserialize<'de> for ConfigBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match NumberOrText::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "expected a size: a string such as \"16KiB\" or \"4MB\", or a number of bytes",
            )
        })? {
            NumberOrText::Number(bytes) => Ok(ConfigBytes(bytes)),
            NumberOrText::Text(text) => parse_bytes(&text)
                .map(ConfigBytes)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parses a size: `"16KiB"`, `"4MB"`, `"4 MiB"`, `"512"` (bytes).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|error| {
            format!("invalid size {text:?} ({error}): write e.g. \"16KiB\", \"4MB\" or a number of bytes")
        })
}

impl ConfigBytes {
    /// As a `usize`, saturating (sizes beyond memory are limits nothing reaches).
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("7"), Ok(Duration::from_secs(7)));
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
        assert!(parse("-5s").is_err());
        assert!(parse("5 parsecs").is_err());
        assert!(parse("99999999999999999999h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_bytes("4MB"), Ok(4_000_000));
        assert_eq!(parse_bytes("4 MiB"), Ok(4 * 1024 * 1024));
        assert!(parse_bytes("four").is_err());
        assert!(parse_bytes("-1").is_err());
    }
}
