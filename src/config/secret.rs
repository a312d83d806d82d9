//! Secrets in the configuration: where they come from (environment or file, never the TOML
//! text itself); the value is held in [`Secret`] (redacted `Debug`, no `Display`).

use std::path::Path;

use serde::Deserialize;

pub use crate::secret::Secret;

/// `{ env = "VAR" }` or `{ file = "/run/secrets/x" }` in the configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct SecretSource {
    pub env: Option<String>,
    pub file: Option<String>,
}

/// [`resolve`] for a secret that may be left out: `None` when neither is set.
pub fn resolve_optional(
    env: Option<&str>,
    file: Option<&str>,
    base_dir: &Path,
    key_path: &str,
) -> Result<Option<Secret>, String> {
    if env.is_none() && file.is_none() {
        return Ok(None);
    }
    resolve(env, file, base_dir, key_path).map(Some)
}

/// Reads a secret from an environment variable or a file (trailing newline trimmed).
pub fn resolve(
    env: Option<&str>,
    file: Option<&str>,
    base_dir: &Path,
    key_path: &str,
) -> Result<Secret, String> {
    match (env, file) {
        (Some(var), None) => match std::env::var(var) {
            Ok(value) if !value.is_empty() => Ok(Secret::new(value)),
            Ok(_) => Err(format!(
                "{key_path}: environment variable {var} is empty: set it to the secret"
            )),
            Err(_) => Err(format!(
                "{key_path}: environment variable {var} is not set: export it before starting"
            )),
        },
        (None, Some(file)) => {
            let path = base_dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "{key_path}: cannot read secret file {}: {e}",
                    path.display()
                )
            })?;
            let value = text.trim_end_matches(['\r', '\n']).to_string();
            if value.is_empty() {
                return Err(format!(
                    "{key_path}: secret file {} is empty",
                    path.display()
                ));
            }
            Ok(Secret::new(value))
        }
        (Some(_), Some(_)) => Err(format!(
            "{key_path}: give either an env variable or a file for this secret, not both"
        )),
        (None, None) => Err(format!(
            "{key_path}: missing secret: set `env = \"VAR\"` or `file = \"/path\"`"
        )),
    }
}

/// The key from its configured text: 32 bytes, base64 (standard or url-safe, padded or
/// not) or 64 hex digits.
pub fn parse_key_32(text: &str) -> Result<Vec<u8>, &'static str> {
    use base64::Engine;
    let text = text.trim();
    let decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .ok()
    } else {
        let unpadded = text.trim_end_matches('=');
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(unpadded)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(unpadded))
            .ok()
    };
    match decoded {
        Some(key) if key.len() == 32 => Ok(key),
        _ => {
            Err("not a 32-byte key: use 32 random bytes, base64 or hex (`openssl rand -base64 32`)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_key_32, Secret};
    use base64::Engine;

    #[test]
    fn debug_is_redacted() {
        let secret = Secret::new("hunter2".into());
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert!(!format!("{:?}", Some(&secret)).contains("hunter2"));
    }

    #[test]
    fn keys_from_text() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 32]);
        assert_eq!(parse_key_32(&b64).unwrap(), vec![9u8; 32]);
        let std = base64::engine::general_purpose::STANDARD.encode([250u8; 32]);
        assert_eq!(parse_key_32(&std).unwrap(), vec![250u8; 32]);
        assert_eq!(parse_key_32(&"ab".repeat(32)).unwrap(), vec![0xab; 32]);
        for bad in [
            "",
            "short",
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([1u8; 31]),
            &"zz".repeat(32),
        ] {
            assert!(parse_key_32(bad).is_err(), "{bad}");
        }
    }
}
